//! The worker thread: takes hops from the audio thread, resamples them to each model's rate,
//! runs the models, maps their masks onto the engine's grid, fuses them and hands them back,
//! each tagged with its frame index. It owns the models; sessions are built here, off the
//! audio thread.
//!
//! It never blocks the audio thread. When its input ring is empty it waits as [`Waiter`] says:
//! in realtime it sleeps until the next hop can first arrive and only then naps briefly until
//! it does; offline the engine wakes it when it hands it a hop. When the mask ring is full it
//! waits itself.
//!
//! # Several models
//!
//! A worker runs a [`Plan`]: one or more [`Member`]s, each a model with a weight. Every member
//! gets every hop through its own resampler (host rate to its rate; none when they are equal),
//! keeps its own queue of masks by model frame and its own map of its bins onto the engine's
//! grid. Host frame `f` is emitted once every member has produced its model frame for `f`
//! ([`model_frame`]) in every active stream; the mapped masks are then fused per bin by the
//! plan's [`Fusion`] rule (see [`crate::fusion`] for the math). A single member is not
//! fused at all: its mapped mask is sent as it is, so a one-model plan is what a worker ran
//! before fusion existed, bit for bit.
//!
//! # Specs after loading
//!
//! Some models (separators) know their lookahead only once loaded (it includes a margin
//! measured from a warm-up run). The worker therefore loads every member first, checks each
//! against the spec it was expected to have (when one was given), publishes the specs through
//! [`Shared::specs`] and only then reports [`WorkerState::Running`]. Whoever builds the engine
//! either knew the specs beforehand or waits for that state and builds it from
//! [`engine_timing`] of the published specs.

pub mod resample;

use crate::fusion::{self, Fusion};
use crate::{MaskModel, ModelError, ModelSpec};
use num_complex::Complex32;
use resample::StreamResampler;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use voxsift_engine::ring::{framed, FrameConsumer, FrameProducer};
use voxsift_engine::status::{Shared, WorkerState};
use voxsift_engine::{EngineConfig, Grid, WorkerLink};

/// Builds the model on the worker thread.
pub type ModelFactory = Box<dyn FnOnce() -> Result<Box<dyn MaskModel>, ModelError> + Send>;

/// How long the worker naps while the mask ring is full.
const POLL: Duration = Duration::from_micros(200);

/// How the worker waits for its next hop.
///
/// Realtime: hops come from host blocks, so after one arrives the next cannot come before
/// the next host call, nor (for blocks shorter than a hop) before enough calls to fill a hop:
/// not before `max(B, P - B)` with `P` the hop and `B` the last block's duration (published by
/// the engine). The worker sleeps once until just before then, naps for [`Waiter::FINE`]
/// until the hop is there, and after `max(B, P) + B` plus a margin without one (the host has
/// stopped calling) naps for [`Waiter::COARSE`]. A fixed 200 µs poll added up to a poll
/// period plus timer slack to every hand-off; fine naps add at most one [`Waiter::FINE`]. On
/// cx01 at 128-sample blocks the worker now wakes about 26 times per hop instead of 33
/// (voluntary context switches of the whole render, less the pacing thread's; BENCHMARKS.md).
///
/// A host may call faster than real time although it is not offline (a test feeding blocks
/// every 3 ms, a host rendering ahead). When a hop is already waiting as the long sleep ends,
/// the worker overslept: for the next [`Waiter::DISTRUST_HOPS`] hops it then polls every
/// 200 µs, as it always did before.
///
/// Offline: the engine wakes it ([`Shared::wake_worker`]) after every hop it hands over, so
/// it parks with a [`Waiter::COARSE`] timeout as a fallback only.
struct Waiter {
    /// Whether the engine runs in realtime.
    realtime: bool,
    /// Host sample rate.
    sample_rate: f64,
    /// One hop of audio.
    period: Duration,
    /// When the last hop the worker had waited for was seen.
    last: Option<Instant>,
    /// Whether the worker has waited since it took its last hop.
    waited: bool,
    /// Whether its last nap was the long sleep up to the expected arrival.
    long_nap: bool,
    /// Hops left during which it does not sleep long (after it overslept).
    distrust: u32,
}

impl Waiter {
    /// Nap near the expected arrival (and before the first hop).
    const FINE: Duration = Duration::from_micros(50);
    /// Nap when no hop is expected soon; the offline fallback.
    const COARSE: Duration = Duration::from_millis(1);
    /// Woken this long before the earliest expected arrival (host call jitter).
    const EARLY: Duration = Duration::from_micros(500);
    /// Kept napping finely this long after the latest expected arrival.
    const LATE: Duration = Duration::from_millis(2);
    /// Hops without long sleeps after the worker overslept one (0.5 s at 10 ms hops).
    const DISTRUST_HOPS: u32 = 50;

    /// For an engine with `cfg`.
    fn new(cfg: &EngineConfig, grid: &Grid) -> Self {
        Self {
            realtime: cfg.run_mode == voxsift_engine::RunMode::Realtime,
            sample_rate: cfg.sample_rate as f64,
            period: Duration::from_secs_f64(grid.hop as f64 / cfg.sample_rate as f64),
            last: None,
            waited: false,
            long_nap: false,
            distrust: 0,
        }
    }

    /// A hop was taken from the ring.
    fn took(&mut self) {
        if self.waited {
            self.last = Some(Instant::now());
        }
        if self.waited && self.long_nap {
            // It was there as soon as the long sleep ended: the host calls faster than that.
            self.distrust = Self::DISTRUST_HOPS;
        } else {
            self.distrust = self.distrust.saturating_sub(1);
        }
        self.waited = false;
        self.long_nap = false;
    }

    /// The ring is empty: waits a while (see the type's documentation).
    fn wait(&mut self, shared: &Shared) {
        self.waited = true;
        if !self.realtime {
            std::thread::park_timeout(Self::COARSE);
            return;
        }
        let block = shared.last_block.load(Ordering::Relaxed).max(1) as f64;
        let block = Duration::from_secs_f64(block / self.sample_rate);
        let nap = self.plan(self.last.map(|l| l.elapsed()), block);
        std::thread::park_timeout(nap);
    }

    /// The nap to take `since` the last awaited hop arrived (none yet: `None`), with host
    /// blocks of `block`; remembers whether it is the long sleep.
    fn plan(&mut self, since: Option<Duration>, block: Duration) -> Duration {
        self.waited = true;
        let (nap, long) = match since {
            Some(since) => Self::nap(since, block, self.period),
            None => (Self::FINE, false),
        };
        self.long_nap = long && self.distrust == 0;
        if self.distrust > 0 && nap < POLL {
            // Not sure of the pace: poll as before, at most one poll period late.
            POLL
        } else if long && !self.long_nap {
            POLL
        } else {
            nap
        }
    }

    /// How long to nap `since` the last awaited hop arrived, with host blocks of `block` and
    /// hops of `period`, and whether that is the long sleep up to the earliest arrival.
    fn nap(since: Duration, block: Duration, period: Duration) -> (Duration, bool) {
        let earliest = block.max(period.saturating_sub(block));
        let latest = block.max(period) + block + Self::LATE;
        if since + Self::EARLY < earliest {
            (earliest - Self::EARLY - since, true)
        } else if since < latest {
            (Self::FINE, false)
        } else {
            (Self::COARSE, false)
        }
    }
}

/// Frames the rings hold.
const RING_FRAMES: usize = 64;

/// Model masks each member queues beyond what the slowest member needs.
const PENDING_SLACK: usize = 16;

/// Host frame `f` is masked with model frame `model_frame(f)`: the model frame nearest in time.
/// On grids with an exact 10 ms hop they are the same frame.
pub fn model_frame(grid: &Grid, spec: &ModelSpec, f: u64) -> u64 {
    if grid.is_exact_10ms() && spec.hop as u64 * 100 == spec.sample_rate as u64 {
        return f;
    }
    let t = f as f64 * grid.hop as f64 / grid.sample_rate as f64;
    (t * spec.sample_rate as f64 / spec.hop as f64).round() as u64
}

/// Extra host samples the worker needs, beyond frame `f + lookahead`, before the model has
/// produced the mask of frame `f` (0 when the host runs at the model's rate). Measured by
/// running the same resampler on silence, so it is exact for this configuration.
pub fn resampler_lag(sample_rate: u32, spec: &ModelSpec) -> usize {
    let grid = Grid::for_rate(sample_rate);
    if sample_rate == spec.sample_rate && grid.hop == spec.hop {
        return 0;
    }
    let Ok(mut rs) = StreamResampler::new(sample_rate, spec.sample_rate, grid.hop, 1) else {
        return 0;
    };
    let zeros = vec![0.0f32; grid.hop];
    let mut produced = 0usize;
    let mut need_frame = 0u64; // next host frame to account for
    let mut lag = 0i64;
    let frames = 400u64;
    // Host hops the lookahead spans: a long lookahead (a separator's) needs that many more
    // hops before the first frames complete.
    let ahead = (spec.lookahead as f64 * spec.hop as f64 / spec.sample_rate as f64
        * sample_rate as f64
        / grid.hop as f64)
        .ceil() as u64;
    for h in 0..frames + 50 + ahead {
        if rs.push(&zeros).is_err() {
            return grid.hop;
        }
        produced += rs.available(0);
        let mut sink = vec![0.0; rs.available(0)];
        rs.pop(0, &mut sink);
        // Model frames complete so far: frame g needs (g + 1) * hop samples.
        let complete = (produced / spec.hop) as u64; // frames 0..complete are done
        while need_frame < frames {
            let g = model_frame(&grid, spec, need_frame) + spec.lookahead as u64;
            if g >= complete {
                break;
            }
            // Host hop h completes the mask of host frame need_frame.
            lag =
                lag.max((h as i64 - (need_frame as i64 + spec.lookahead as i64)) * grid.hop as i64);
            need_frame += 1;
        }
    }
    lag.max(0) as usize
}

/// Host samples model `spec` needs beyond frame `f` before the mask of frame `f` is ready:
/// its lookahead in host hops plus its resampler's lag.
fn member_delay(sample_rate: u32, spec: &ModelSpec) -> usize {
    spec.lookahead * Grid::for_rate(sample_rate).hop + resampler_lag(sample_rate, spec)
}

/// The `(lookahead, resampler_lag)` to build an [`voxsift_engine::Engine`] with, at host
/// `sample_rate`, for models reporting `specs`: the engine must wait for the slowest member.
/// With `H` the host hop and `d_i = lookahead_i * H + resampler_lag_i` (host samples member
/// `i` needs beyond a frame), it is `L = max lookahead_i` and `max d_i - L * H`, so the
/// engine's `L * H + lag` is `max d_i`. For one model it is `(lookahead, resampler_lag)`
/// exactly; for none, `(0, 0)`.
pub fn engine_timing(sample_rate: u32, specs: &[ModelSpec]) -> (usize, usize) {
    let hop = Grid::for_rate(sample_rate).hop;
    if let [spec] = specs {
        return (spec.lookahead, resampler_lag(sample_rate, spec));
    }
    let lookahead = specs.iter().map(|s| s.lookahead).max().unwrap_or(0);
    let delay = specs
        .iter()
        .map(|s| member_delay(sample_rate, s))
        .max()
        .unwrap_or(0);
    (lookahead, delay.saturating_sub(lookahead * hop))
}

/// One model of a worker's [`Plan`].
pub struct Member {
    /// Builds the model on the worker thread.
    pub factory: ModelFactory,
    /// Its weight in the fusion (finite, above 0; irrelevant for a single member).
    pub weight: f32,
    /// The spec the engine was built for, when it was known before loading: the loaded model
    /// must report exactly this, or the worker fails. `None` for models whose spec is only
    /// known once loaded (the engine is then built from [`Shared::specs`]).
    pub expect: Option<ModelSpec>,
}

/// What a worker runs: its models and how their masks are fused.
pub struct Plan {
    /// The models, at least one; their masks are fused in this order.
    pub members: Vec<Member>,
    /// How their masks are combined per bin.
    pub fusion: Fusion,
    /// A line for the status before anything is loaded (e.g. why a preset fell back); the
    /// models' own notices are added after it.
    pub notice: Option<String>,
}

impl Plan {
    /// A plan of one model whose spec is known beforehand.
    pub fn single(spec: ModelSpec, factory: ModelFactory) -> Self {
        Self {
            members: vec![Member {
                factory,
                weight: 1.0,
                expect: Some(spec),
            }],
            fusion: Fusion::Max,
            notice: None,
        }
    }
}

/// A running worker thread. Dropping it stops and joins the thread.
pub struct Worker {
    /// The thread.
    thread: Option<JoinHandle<()>>,
    /// Status shared with the engine.
    shared: Arc<Shared>,
}

impl Worker {
    /// Starts a worker for an engine with `config` running a model described by `spec`; the
    /// model itself is built by `factory` on the worker thread. Returns the worker and the
    /// link to hand to [`voxsift_engine::Engine::connect`]. Allocates the rings here.
    pub fn spawn(
        config: &EngineConfig,
        spec: ModelSpec,
        factory: ModelFactory,
    ) -> (Worker, WorkerLink) {
        Self::spawn_plan(config, Plan::single(spec, factory))
    }

    /// Starts a worker for an engine with `config` running the models of `plan`, fused. The
    /// models are built on the worker thread; their specs appear in [`Shared::specs`] when
    /// the state becomes [`WorkerState::Running`]. Returns the worker and the link to hand to
    /// [`voxsift_engine::Engine::connect`]. Allocates the rings here.
    pub fn spawn_plan(config: &EngineConfig, plan: Plan) -> (Worker, WorkerLink) {
        let grid = Grid::for_rate(config.sample_rate);
        let streams = config.mask_streams();
        let (hop_tx, hop_rx) = framed::<f32>(streams * grid.hop, RING_FRAMES);
        let (mask_tx, mask_rx) = framed::<Complex32>(streams * grid.bins, RING_FRAMES);
        let shared = Arc::new(Shared::default());
        if let Some(n) = &plan.notice {
            shared.set_message(n.clone());
        }
        let sh = shared.clone();
        let cfg = *config;
        let thread = std::thread::Builder::new()
            .name("voxsift-worker".into())
            .spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run(cfg, plan, hop_rx, mask_tx, &sh)
                }));
                match result {
                    Ok(Ok(())) => sh.set_state(WorkerState::Stopped),
                    Ok(Err(e)) => sh.fail(e.to_string()),
                    Err(p) => {
                        let msg = p
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| p.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "unknown panic".into());
                        sh.fail(format!("worker thread panicked: {msg}"));
                    }
                }
            });
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                shared.fail(format!("could not start the worker thread: {e}"));
                None
            }
        };
        (
            Worker {
                thread,
                shared: shared.clone(),
            },
            WorkerLink {
                hops: hop_tx,
                masks: mask_rx,
                shared,
            },
        )
    }

    /// Shared status.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Waits until the models are loaded (or failed), up to `timeout`. Returns the state.
    pub fn wait_ready(&self, timeout: Duration) -> WorkerState {
        let start = Instant::now();
        loop {
            let s = self.shared.state();
            if s != WorkerState::Starting || start.elapsed() > timeout {
                return s;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Per-stream model masks not yet turned into host mask frames, by model frame.
struct Pending {
    /// Ring of masks, `depth * bins`.
    masks: Vec<Complex32>,
    /// Model frame held by each slot.
    tags: Vec<u64>,
    /// Bins per mask.
    bins: usize,
}

impl Pending {
    /// Room for `depth` masks of `bins` bins.
    fn new(depth: usize, bins: usize) -> Self {
        Self {
            masks: vec![Complex32::default(); depth * bins],
            tags: vec![u64::MAX; depth],
            bins,
        }
    }

    /// The slot for model frame `g`.
    fn slot(&mut self, g: u64) -> &mut [Complex32] {
        let i = (g % self.tags.len() as u64) as usize;
        self.tags[i] = g;
        &mut self.masks[i * self.bins..(i + 1) * self.bins]
    }

    /// The mask of model frame `g`, if held.
    fn get(&self, g: u64) -> Option<&[Complex32]> {
        let i = (g % self.tags.len() as u64) as usize;
        (self.tags[i] == g).then(|| &self.masks[i * self.bins..(i + 1) * self.bins])
    }

    /// Forgets everything.
    fn clear(&mut self) {
        self.tags.fill(u64::MAX);
    }
}

/// For each engine bin: the model bin below it and the weight of the one above.
fn bin_map(grid: &Grid, spec: &ModelSpec) -> Vec<(usize, f32)> {
    (0..grid.bins)
        .map(|k| {
            let j = grid.bin_hz(k) / spec.bin_hz();
            let last = spec.bins - 1;
            if j >= last as f64 {
                (last, 0.0)
            } else {
                let j0 = j.floor() as usize;
                (j0, (j - j0 as f64) as f32)
            }
        })
        .collect()
}

/// Maps model mask `m` onto the engine grid through `map` (linear in frequency).
fn map_mask(m: &[Complex32], map: &[(usize, f32)], out: &mut [Complex32]) {
    for (o, &(j, w)) in out.iter_mut().zip(map) {
        *o = if w == 0.0 {
            m[j]
        } else {
            m[j] * (1.0 - w) + m[j + 1] * w
        };
    }
}

/// One loaded member: its model and everything that turns host hops into its masks on the
/// engine grid.
struct Lane {
    /// The model.
    model: Box<dyn MaskModel>,
    /// What it reported when loaded.
    spec: ModelSpec,
    /// Host rate to model rate, when they differ.
    resampler: Option<StreamResampler>,
    /// Its bins onto the engine grid.
    map: Vec<(usize, f32)>,
    /// Per stream: its masks by model frame.
    pending: Vec<Pending>,
    /// Scratch: one hop at the model rate.
    model_hop: Vec<f32>,
    /// Scratch: one model mask.
    model_mask: Vec<Complex32>,
    /// Mask frames the model returned with a NaN or infinite gain in them (the engine floors
    /// those bins; a broken graph is told to the user once, through the status message).
    nonfinite_frames: u64,
    /// Whether that has been reported.
    nonfinite_reported: bool,
}

impl Lane {
    /// Builds the lane of a loaded model.
    fn new(
        model: Box<dyn MaskModel>,
        cfg: &EngineConfig,
        depth: usize,
    ) -> Result<Self, ModelError> {
        let grid = Grid::for_rate(cfg.sample_rate);
        let streams = cfg.mask_streams();
        let spec = model.spec();
        let direct = cfg.sample_rate == spec.sample_rate && grid.hop == spec.hop;
        let resampler = if direct {
            None
        } else {
            Some(
                StreamResampler::new(cfg.sample_rate, spec.sample_rate, grid.hop, streams)
                    .map_err(|message| ModelError::Mismatch {
                        graph: "resampler".into(),
                        message,
                    })?,
            )
        };
        Ok(Self {
            map: bin_map(&grid, &spec),
            pending: (0..streams)
                .map(|_| Pending::new(depth, spec.bins))
                .collect(),
            model_hop: vec![0.0f32; spec.hop],
            model_mask: vec![Complex32::default(); spec.bins],
            nonfinite_frames: 0,
            nonfinite_reported: false,
            resampler,
            spec,
            model,
        })
    }

    /// Restarts the model's stream: cold, or resuming after digital silence.
    fn reset(&mut self, resume: bool) {
        if resume {
            self.model.resume();
        } else {
            self.model.reset();
        }
        if let Some(r) = self.resampler.as_mut() {
            r.reset();
        }
        self.pending.iter_mut().for_each(Pending::clear);
    }

    /// Feeds one host hop per stream (`hop_buf`, `streams * host_hop`) to the model, computing
    /// the first `active` streams, and queues the masks it returns.
    fn feed(&mut self, hop_buf: &[f32], host_hop: usize, active: usize) -> Result<(), ModelError> {
        let streams = self.pending.len();
        match self.resampler.as_mut() {
            None => {
                for (s, p) in self.pending.iter_mut().enumerate().take(active) {
                    let hop = &hop_buf[s * host_hop..(s + 1) * host_hop];
                    if let Some(g) = self.model.push_hop(s, hop, &mut self.model_mask)? {
                        p.slot(g).copy_from_slice(&self.model_mask);
                        self.nonfinite_frames += u64::from(!all_finite(&self.model_mask));
                    }
                }
            }
            Some(r) => {
                r.push(&hop_buf[..streams * host_hop]).map_err(|message| {
                    ModelError::Inference {
                        graph: "resampler".into(),
                        message,
                    }
                })?;
                for (s, p) in self.pending.iter_mut().enumerate() {
                    while r.pop(s, &mut self.model_hop) {
                        if s >= active {
                            continue;
                        }
                        if let Some(g) =
                            self.model
                                .push_hop(s, &self.model_hop, &mut self.model_mask)?
                        {
                            p.slot(g).copy_from_slice(&self.model_mask);
                            self.nonfinite_frames += u64::from(!all_finite(&self.model_mask));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// True when the mask for host frame `f` (relative to the stream start) is queued in the
    /// first `active` streams.
    fn has(&self, grid: &Grid, f: u64, active: usize) -> bool {
        let g = model_frame(grid, &self.spec, f);
        self.pending[..active].iter().all(|p| p.get(g).is_some())
    }

    /// Writes the mask of host frame `f` for `stream`, mapped onto the engine grid, to `out`.
    /// False when it is not queued.
    fn mapped(&self, grid: &Grid, f: u64, stream: usize, out: &mut [Complex32]) -> bool {
        let g = model_frame(grid, &self.spec, f);
        match self.pending[stream].get(g) {
            Some(m) => {
                map_mask(m, &self.map, out);
                true
            }
            None => false,
        }
    }
}

/// Loaded models with their weights, in member order.
type Loaded = Vec<(Box<dyn MaskModel>, f32)>;

/// Loads the models of `plan` in order (stopping early when asked to stop), checks each
/// against the spec it was expected to have, and records their providers and notices.
fn load(plan: Vec<Member>, shared: &Shared) -> Result<Option<Loaded>, ModelError> {
    let mut models = Vec::with_capacity(plan.len());
    let mut providers: Vec<String> = Vec::new();
    for m in plan {
        if shared.stop.load(Ordering::Acquire) {
            return Ok(None);
        }
        let model = (m.factory)()?;
        let provider = model.provider();
        if !providers.contains(&provider) {
            providers.push(provider);
        }
        shared.set_provider(providers.join(", "));
        if let Some(notice) = model.notice() {
            shared.add_message(notice);
        }
        let mspec = model.spec();
        if let Some(spec) = m.expect.filter(|s| *s != mspec) {
            return Err(ModelError::Mismatch {
                graph: mspec.name.into(),
                message: format!("model reports {mspec:?}, engine was built for {spec:?}"),
            });
        }
        models.push((model, m.weight));
    }
    Ok(Some(models))
}

/// True when every gain of `mask` is finite.
fn all_finite(mask: &[Complex32]) -> bool {
    mask.iter().all(|m| m.re.is_finite() && m.im.is_finite())
}

/// The worker's main loop.
fn run(
    cfg: EngineConfig,
    plan: Plan,
    mut hops: FrameConsumer<f32>,
    mut masks: FrameProducer<Complex32>,
    shared: &Shared,
) -> Result<(), ModelError> {
    let grid = Grid::for_rate(cfg.sample_rate);
    let streams = cfg.mask_streams();
    let fusion = plan.fusion;
    if plan.members.is_empty() {
        return Err(ModelError::Mismatch {
            graph: "plan".into(),
            message: "no model to run".into(),
        });
    }
    let Some(models) = load(plan.members, shared)? else {
        return Ok(());
    };
    let specs: Vec<ModelSpec> = models.iter().map(|(m, _)| m.spec()).collect();
    let weights: Vec<f32> = models.iter().map(|(_, w)| *w).collect();
    if models.len() > 1 {
        fusion::check_weights(&weights).map_err(|message| ModelError::Mismatch {
            graph: "fusion".into(),
            message,
        })?;
    }
    // Each member queues what it produces while the slowest one catches up.
    let delays: Vec<usize> = if specs.len() > 1 {
        specs
            .iter()
            .map(|s| member_delay(cfg.sample_rate, s))
            .collect()
    } else {
        vec![0]
    };
    let slowest = delays.iter().copied().max().unwrap_or(0);
    let mut lanes = Vec::with_capacity(models.len());
    for ((model, _), d) in models.into_iter().zip(&delays) {
        let spec = model.spec();
        let ahead = (slowest - d) as f64 / cfg.sample_rate as f64 * spec.sample_rate as f64
            / spec.hop as f64;
        lanes.push(Lane::new(
            model,
            &cfg,
            PENDING_SLACK + ahead.ceil() as usize,
        )?);
    }
    shared.set_specs(specs);
    let members = lanes.len();
    let mut hop_buf = vec![0.0f32; streams * grid.hop];
    let mut out = vec![Complex32::default(); streams * grid.bins];
    // Fusion scratch: every member's mapped mask for one stream, one gain per member.
    let mut mapped = vec![Complex32::default(); members * grid.bins];
    let mut scratch = vec![Complex32::default(); members];
    let mut expected: Option<u64> = None; // next host frame expected
    let mut origin = 0u64; // host frame index of the first hop after the last reset
    let mut next_emit = 0u64; // next host frame (relative to origin) to send
    let mut load = 0.0f32;
    let mut waiter = Waiter::new(&cfg, &grid);
    shared.register_worker();
    shared.set_state(WorkerState::Running);

    while !shared.stop.load(Ordering::Acquire) {
        let Some(marked) = hops.try_pop(&mut hop_buf) else {
            if hops.is_abandoned() {
                break;
            }
            waiter.wait(shared);
            continue;
        };
        waiter.took();
        let started = Instant::now();
        let throttle = shared.throttle_us.load(Ordering::Relaxed);
        if throttle > 0 {
            std::thread::sleep(Duration::from_micros(throttle as u64));
        }
        let (tag, resume) = voxsift_engine::tag::resumes(marked);
        if expected != Some(tag) {
            // First hop, hops were dropped, the engine was reset (new epoch) or the channel
            // mode changed: start the streams again from here. After digital silence (a
            // marked hop) the models carry on from their state as the silence left it.
            lanes.iter_mut().for_each(|l| l.reset(resume));
            origin = tag;
            next_emit = 0;
        }
        expected = Some(tag + 1);
        // Linked: stream 0 holds the channel mean and is the only one computed.
        let linked = voxsift_engine::tag::linked(tag);
        let active = if linked { 1 } else { streams };
        // Feed every model, collecting its masks by model frame.
        for lane in &mut lanes {
            lane.feed(&hop_buf, grid.hop, active)?;
            if lane.nonfinite_frames > 0 && !lane.nonfinite_reported {
                lane.nonfinite_reported = true;
                shared.add_message(format!(
                    "model `{}` returned a mask with NaN or infinite gains: its graph may be \
                     broken (those bins are floored)",
                    lane.spec.name
                ));
            }
        }
        // Emit every host frame whose model frames are ready in every member and stream.
        while lanes.iter().all(|l| l.has(&grid, next_emit, active)) {
            for s in 0..streams {
                let src = if linked { 0 } else { s };
                let o = &mut out[s * grid.bins..(s + 1) * grid.bins];
                if let [lane] = lanes.as_slice() {
                    if !lane.mapped(&grid, next_emit, src, o) {
                        break;
                    }
                    continue;
                }
                for (lane, m) in lanes.iter().zip(mapped.chunks_exact_mut(grid.bins)) {
                    lane.mapped(&grid, next_emit, src, m);
                }
                fusion::fuse_masks(fusion, &mapped, &weights, &mut scratch, o);
            }
            let host_frame = origin + next_emit;
            while !masks.try_push(host_frame, &out) {
                if shared.stop.load(Ordering::Acquire) || masks.is_abandoned() {
                    return Ok(());
                }
                std::thread::sleep(POLL);
            }
            shared.masks_produced.fetch_add(1, Ordering::Relaxed);
            next_emit += 1;
        }
        let busy = started.elapsed();
        shared
            .busy_ns
            .fetch_add(busy.as_nanos() as u64, Ordering::Relaxed);
        let used = busy.as_secs_f32() / (grid.hop as f32 / grid.sample_rate as f32);
        load = 0.95 * load + 0.05 * used;
        shared.worker_load.store(load, Ordering::Relaxed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::SyntheticModel;

    #[test]
    fn the_worker_sleeps_until_the_next_hop_can_arrive_then_naps_finely() {
        let ms = |x: f64| Duration::from_secs_f64(x / 1000.0);
        let hop = ms(10.0);
        let nap = |since, block| Waiter::nap(since, block, hop).0;
        // 128-sample blocks at 48 kHz (2.67 ms): the next hop needs 3 or 4 more blocks, so it
        // cannot come before 7.33 ms; one sleep until 0.5 ms before that.
        let b128 = ms(128.0 / 48.0);
        let (first, long) = Waiter::nap(Duration::ZERO, b128, hop);
        assert!(long);
        assert!((first.as_secs_f64() - 0.006_833).abs() < 1e-5, "{first:?}");
        // Woken a little later (spuriously): the rest of that sleep.
        assert!((nap(ms(5.0), b128).as_secs_f64() - 0.001_833).abs() < 1e-5);
        // From then on until the latest arrival (10 + 2.67 + 2 ms): fine naps.
        for t in [6.9, 9.0, 12.0, 14.6] {
            assert_eq!(
                Waiter::nap(ms(t), b128, hop),
                (Waiter::FINE, false),
                "{t} ms"
            );
        }
        // The host has stopped calling: coarse naps.
        assert_eq!(nap(ms(14.8), b128), Waiter::COARSE);
        // 2048-sample blocks (42.7 ms) bring several hops per call: the next ones come with the
        // next call.
        let b2048 = ms(2048.0 / 48.0);
        let first = nap(Duration::ZERO, b2048);
        assert!((first.as_secs_f64() - (2048.0 / 48_000.0 - 0.0005)).abs() < 1e-5);
        assert_eq!(nap(ms(43.0), b2048), Waiter::FINE);
        assert_eq!(nap(ms(90.0), b2048), Waiter::COARSE);
        // A hop per block (480 samples): every 10 ms.
        let b480 = ms(10.0);
        assert!((nap(Duration::ZERO, b480).as_secs_f64() - 0.0095).abs() < 1e-5);
        // Tiny blocks: no long sleep at all once it is due.
        assert_eq!(nap(ms(100.0), ms(0.02)), Waiter::COARSE);
        assert_eq!(nap(ms(9.7), ms(0.02)), Waiter::FINE);
    }

    #[test]
    fn a_worker_that_overslept_polls_for_a_while() {
        let cfg = EngineConfig::new(48_000, 480, 1, voxsift_engine::RunMode::Realtime);
        let mut w = Waiter::new(&cfg, &Grid::for_rate(48_000));
        let block = Duration::from_millis(10);
        // Before the first hop: fine naps.
        assert_eq!(w.plan(None, block), Waiter::FINE);
        w.took();
        // A hop found only after fine naps: the next wait is the long sleep.
        assert!(w.plan(Some(Duration::ZERO), block) > Duration::from_millis(9));
        // A hop already there when it ended: the host is faster than real time.
        w.took();
        for _ in 0..Waiter::DISTRUST_HOPS {
            assert_eq!(w.plan(Some(Duration::ZERO), block), POLL);
            w.took();
        }
        // After that many hops it trusts the pace again.
        assert!(w.plan(Some(Duration::ZERO), block) > Duration::from_millis(9));
        // Offline it never plans: the engine wakes it.
        let off = EngineConfig::new(48_000, 480, 1, voxsift_engine::RunMode::Offline);
        assert!(!Waiter::new(&off, &Grid::for_rate(48_000)).realtime);
    }

    #[test]
    fn one_spec_gives_its_own_lookahead_and_lag() {
        for sr in [16_000, 44_100, 48_000, 96_000] {
            let spec = SyntheticModel::new(1, 2).spec();
            assert_eq!(
                engine_timing(sr, &[spec]),
                (2, resampler_lag(sr, &spec)),
                "{sr}"
            );
        }
        assert_eq!(engine_timing(48_000, &[]), (0, 0));
    }

    #[test]
    fn several_specs_wait_for_the_slowest_member() {
        let fast = SyntheticModel::new(1, 2).spec();
        let slow = SyntheticModel::with_rate(1, 7, 16_000).spec();
        for sr in [44_100, 48_000] {
            let hop = Grid::for_rate(sr).hop;
            let (la, lag) = engine_timing(sr, &[fast, slow]);
            assert_eq!(la, 7);
            let want = [fast, slow]
                .iter()
                .map(|s| s.lookahead * hop + resampler_lag(sr, s))
                .max()
                .unwrap_or(0);
            assert_eq!(la * hop + lag, want, "{sr}");
            // The order of the members does not matter.
            assert_eq!(engine_timing(sr, &[slow, fast]), (la, lag));
        }
    }

    #[test]
    fn a_long_lookahead_still_measures_the_resampler_lag() {
        // 500 frames of lookahead: more than the 450 hops the measurement used to run.
        let short = SyntheticModel::with_rate(1, 2, 16_000).spec();
        let long = SyntheticModel::with_rate(1, 500, 16_000).spec();
        let lag = resampler_lag(44_100, &short);
        assert!(lag > 0);
        assert_eq!(resampler_lag(44_100, &long), lag);
    }
}
