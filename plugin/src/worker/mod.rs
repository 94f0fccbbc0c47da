//! The worker thread: takes hops from the audio thread, resamples them to the model's rate,
//! runs the model, maps its masks onto the engine's grid and hands them back, each tagged
//! with its frame index. It owns the model; sessions are built here, off the audio thread.
//!
//! It never blocks the audio thread: it polls its input ring (sleeping briefly when there is
//! nothing to do) and, when the mask ring is full, waits itself.

pub mod resample;

use crate::engine::{EngineConfig, Grid, WorkerLink};
use crate::model::{MaskModel, ModelError, ModelSpec};
use crate::ring::{framed, FrameConsumer, FrameProducer};
use crate::status::{Shared, WorkerState};
use num_complex::Complex32;
use resample::StreamResampler;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Builds the model on the worker thread.
pub type ModelFactory = Box<dyn FnOnce() -> Result<Box<dyn MaskModel>, ModelError> + Send>;

/// How long the worker sleeps when it has nothing to do.
const POLL: Duration = Duration::from_micros(200);

/// Frames the rings hold.
const RING_FRAMES: usize = 64;

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
    for h in 0..frames + 50 {
        if rs.push(&[&zeros]).is_err() {
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
    /// link to hand to [`crate::engine::Engine::connect`]. Allocates the rings here.
    pub fn spawn(
        config: &EngineConfig,
        spec: ModelSpec,
        factory: ModelFactory,
    ) -> (Worker, WorkerLink) {
        let grid = Grid::for_rate(config.sample_rate);
        let streams = config.mask_streams();
        let (hop_tx, hop_rx) = framed::<f32>(streams * grid.hop, RING_FRAMES);
        let (mask_tx, mask_rx) = framed::<Complex32>(streams * grid.bins, RING_FRAMES);
        let shared = Arc::new(Shared::default());
        let sh = shared.clone();
        let cfg = *config;
        let thread = std::thread::Builder::new()
            .name("voxsift-worker".into())
            .spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run(cfg, spec, factory, hop_rx, mask_tx, &sh)
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

    /// Waits until the model is loaded (or failed), up to `timeout`. Returns the state.
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

/// The worker's main loop.
fn run(
    cfg: EngineConfig,
    spec: ModelSpec,
    factory: ModelFactory,
    mut hops: FrameConsumer<f32>,
    mut masks: FrameProducer<Complex32>,
    shared: &Shared,
) -> Result<(), ModelError> {
    let grid = Grid::for_rate(cfg.sample_rate);
    let streams = cfg.mask_streams();
    let mut model = factory()?;
    shared.set_provider(model.provider());
    if let Some(notice) = model.notice() {
        shared.set_message(notice);
    }
    let mspec = model.spec();
    if mspec != spec {
        return Err(ModelError::Mismatch {
            graph: mspec.name.into(),
            message: format!("model reports {mspec:?}, engine was built for {spec:?}"),
        });
    }
    let direct = cfg.sample_rate == spec.sample_rate && grid.hop == spec.hop;
    let mut resampler = if direct {
        None
    } else {
        Some(
            StreamResampler::new(cfg.sample_rate, spec.sample_rate, grid.hop, streams).map_err(
                |message| ModelError::Mismatch {
                    graph: "resampler".into(),
                    message,
                },
            )?,
        )
    };
    let map = bin_map(&grid, &spec);
    let mut pending: Vec<Pending> = (0..streams).map(|_| Pending::new(16, spec.bins)).collect();
    let mut hop_buf = vec![0.0f32; streams * grid.hop];
    let mut model_hop = vec![0.0f32; spec.hop];
    let mut model_mask = vec![Complex32::default(); spec.bins];
    let mut out = vec![Complex32::default(); streams * grid.bins];
    let mut expected: Option<u64> = None; // next host frame expected
    let mut origin = 0u64; // host frame index of the first hop after the last reset
    let mut next_emit = 0u64; // next host frame (relative to origin) to send
    let mut load = 0.0f32;
    shared.set_state(WorkerState::Running);

    while !shared.stop.load(Ordering::Acquire) {
        let Some(tag) = hops.try_pop(&mut hop_buf) else {
            if hops.is_abandoned() {
                break;
            }
            std::thread::sleep(POLL);
            continue;
        };
        let started = Instant::now();
        let throttle = shared.throttle_us.load(Ordering::Relaxed);
        if throttle > 0 {
            std::thread::sleep(Duration::from_micros(throttle as u64));
        }
        if expected != Some(tag) {
            // First hop, hops were dropped, the engine was reset (new epoch) or the channel
            // mode changed: start the stream again from here.
            model.reset();
            if let Some(r) = resampler.as_mut() {
                r.reset();
            }
            pending.iter_mut().for_each(Pending::clear);
            origin = tag;
            next_emit = 0;
        }
        expected = Some(tag + 1);
        // Linked: stream 0 holds the channel mean and is the only one computed.
        let linked = crate::engine::tag::linked(tag);
        let active = if linked { 1 } else { streams };
        // Feed the model, collecting its masks by model frame.
        if resampler.is_none() {
            for (s, p) in pending.iter_mut().enumerate().take(active) {
                let hop = &hop_buf[s * grid.hop..(s + 1) * grid.hop];
                if let Some(g) = model.push_hop(s, hop, &mut model_mask)? {
                    p.slot(g).copy_from_slice(&model_mask);
                }
            }
        } else if let Some(r) = resampler.as_mut() {
            let inputs: Vec<&[f32]> = (0..streams)
                .map(|s| &hop_buf[s * grid.hop..(s + 1) * grid.hop])
                .collect();
            r.push(&inputs).map_err(|message| ModelError::Inference {
                graph: "resampler".into(),
                message,
            })?;
            for (s, p) in pending.iter_mut().enumerate() {
                while r.pop(s, &mut model_hop) {
                    if s >= active {
                        continue;
                    }
                    if let Some(g) = model.push_hop(s, &model_hop, &mut model_mask)? {
                        p.slot(g).copy_from_slice(&model_mask);
                    }
                }
            }
        }
        // Emit every host frame whose model frame is ready in all streams.
        loop {
            let g = model_frame(&grid, &spec, next_emit);
            if !pending[..active].iter().all(|p| p.get(g).is_some()) {
                break;
            }
            for s in 0..streams {
                let Some(m) = pending[if linked { 0 } else { s }].get(g) else {
                    break;
                };
                for ((o, &(j, w)), _) in out[s * grid.bins..(s + 1) * grid.bins]
                    .iter_mut()
                    .zip(&map)
                    .zip(0..)
                {
                    *o = if w == 0.0 {
                        m[j]
                    } else {
                        m[j] * (1.0 - w) + m[j + 1] * w
                    };
                }
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
