//! Demucs-family separators (HTDemucs, the Demucs speech denoiser) as a [`MaskModel`].
//!
//! A separator model directory holds a `model.toml` ([`desc`]) and an ONNX graph that maps a
//! window of audio to source waveforms ([`graph`]; HTDemucs's STFT and inverse are computed
//! in Rust, [`spectral`]). The graph sees windows of a few seconds that advance by a step,
//! with some future context, and the used parts of consecutive windows are crossfaded
//! ([`window`]). The speech estimate `V` and the rest `A = mix - V` become a real mask per
//! bin, `M = |V|^2 / (|V|^2 + |A|^2 + eps)`, on the engine's 10 ms grid at the model rate, so
//! mask frame `g` covers the same samples as the engine's frame `g`.
//!
//! Windows run on an inference thread the [`Separator`] owns (spawned in [`Separator::load`],
//! joined on drop). [`MaskModel::push_hop`] (on the worker thread) only hands the hop over and
//! returns the mask of frame `t - lookahead`, waiting for it only if inference has not
//! finished it yet. The lookahead is constant: the schedule's `(S + X + L) / hop - 1` frames
//! plus a margin for the inference itself, measured at load (see [`MARGIN_FACTOR`]), so that
//! in real time the masks are ready before they are asked for whenever the machine keeps up.
//! Because the spec depends on that measurement, read it from [`MaskModel::spec`] after
//! loading.
//!
//! A description with `mask = "ratio"` gives complex ratio masks `V / X` instead
//! ([`spectral::MaskFrames`]). A refiner (`architecture = "dfn3-refiner"`) also takes
//! DeepFilterNet3's estimate of every hop, aligned with it, through
//! [`Separator::push_hop_with_reference`]; [`crate::refine::Refined`] runs it.

pub mod desc;
pub mod graph;
pub mod spectral;
pub mod window;

use crate::runtime::{Provider, SessionOptions};
use crate::{MaskModel, ModelError, ModelSpec};
use desc::{MaskMode, ModelDescription};
use graph::{MonoRunner, SeparatorGraph};
use num_complex::Complex32;
use spectral::MaskFrames;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;
use window::{Schedule, Scheduler, WindowModel};

/// The margin for inference is `ceil(MARGIN_FACTOR * t * streams / hop duration)` frames,
/// `t` the time one window took at load: 50 % headroom over the measured time, for the
/// variation between runs and for the other threads sharing the machine.
pub const MARGIN_FACTOR: f64 = 1.5;

/// Changes to a model's default schedule (`[schedule]` in `model.toml`); `None` keeps the
/// default. Durations are rounded to whole samples at the model rate.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ScheduleOverrides {
    /// Samples the model sees per run, in ms (at most the graph's window).
    pub window_ms: Option<f64>,
    /// How far consecutive windows advance, in ms.
    pub step_ms: Option<f64>,
    /// Future context after the used part, in ms.
    pub lookahead_ms: Option<f64>,
    /// Crossfade between consecutive used parts, in ms (at most the step).
    pub crossfade_ms: Option<f64>,
    /// A fixed inference margin in ms instead of the one measured at load (gives a latency
    /// that does not depend on the machine).
    pub margin_ms: Option<f64>,
}

/// Reads and validates `dir/model.toml` without building a session: name, version, model
/// rate, hop ([`ModelDescription::hop`]) and mask bins ([`ModelDescription::bins`]).
pub fn describe(dir: &Path) -> Result<ModelDescription, ModelError> {
    desc::read(dir)
}

/// The longest window, step, lookahead, crossfade or margin a schedule may have, in ms.
pub const MAX_SCHEDULE_MS: f64 = 600_000.0;

/// The schedule of `desc` with `overrides`, in samples at the model rate.
pub fn schedule(
    desc: &ModelDescription,
    overrides: &ScheduleOverrides,
) -> Result<Schedule, ModelError> {
    let d = desc.schedule;
    let settings = |message: String| ModelError::Settings {
        model: desc.name.clone(),
        message,
    };
    // Every duration, from the description or the caller, is finite, non-negative and at most
    // MAX_SCHEDULE_MS (found by the `model_desc` fuzz target: 1e308 ms overflowed).
    for v in [
        Some(d.window_ms),
        Some(d.step_ms),
        Some(d.lookahead_ms),
        d.crossfade_ms,
        overrides.window_ms,
        overrides.step_ms,
        overrides.lookahead_ms,
        overrides.crossfade_ms,
        overrides.margin_ms,
    ]
    .into_iter()
    .flatten()
    {
        if !v.is_finite() || !(0.0..=MAX_SCHEDULE_MS).contains(&v) {
            return Err(settings(format!(
                "{v} ms is not a duration between 0 and {MAX_SCHEDULE_MS} ms"
            )));
        }
    }
    let step = desc.ms_to_samples(overrides.step_ms.unwrap_or(d.step_ms));
    let crossfade_ms = overrides
        .crossfade_ms
        .or(d.crossfade_ms)
        .unwrap_or(0.5 * overrides.step_ms.unwrap_or(d.step_ms));
    let s = Schedule {
        window: desc.ms_to_samples(overrides.window_ms.unwrap_or(d.window_ms)),
        step,
        lookahead: desc.ms_to_samples(overrides.lookahead_ms.unwrap_or(d.lookahead_ms)),
        crossfade: desc.ms_to_samples(crossfade_ms),
    };
    s.validate(desc.window).map_err(|m| {
        settings(format!(
            "schedule {s:?} (samples at {} Hz): {m}",
            desc.sample_rate
        ))
    })?;
    let min = desc.min_window.unwrap_or(0);
    if desc.window == 0 && s.window < min {
        return Err(settings(format!(
            "the window ({} samples) is shorter than the graph's minimum ({min})",
            s.window
        )));
    }
    Ok(s)
}

/// Frames between a hop going in and the mask of its frame being computable with
/// `schedule` on a grid of `hop` samples: the most, over frames `g`, of the hops after hop `g`
/// until the run that makes `g`'s samples final has its input (`(S + X + L) / hop - 1` when
/// all three are whole hops).
pub fn schedule_frames(schedule: &Schedule, hop: usize) -> usize {
    let (s, hop) = (schedule.step.max(1), hop.max(1));
    let (mut d, mut b) = (s, hop);
    while b != 0 {
        (d, b) = (b, d % b);
    }
    // Frame g ends at e = (g + 1)·hop; the run that makes it final has its input at
    // ceil(e / S)·S + X + L, i.e. r + X + L samples after e, where r = (−e) mod S runs through
    // every multiple of d = gcd(S, hop) below S. So the most hops to wait is
    // ceil((S − d + X + L) / hop), without looping over the (possibly huge) period.
    (s - d)
        .saturating_add(schedule.crossfade)
        .saturating_add(schedule.lookahead)
        .div_ceil(hop)
}

/// The spec of `desc` with `overrides` and an inference margin of `margin_frames` (what
/// [`Separator::load`] reports when it measures that margin).
pub fn planned_spec(
    desc: &ModelDescription,
    overrides: &ScheduleOverrides,
    margin_frames: usize,
) -> Result<ModelSpec, ModelError> {
    let s = schedule(desc, overrides)?;
    Ok(ModelSpec {
        name: intern(&desc.name),
        sample_rate: desc.sample_rate,
        hop: desc.hop(),
        bins: desc.bins(),
        lookahead: schedule_frames(&s, desc.hop()) + margin_frames,
    })
}

/// A `'static` copy of a model name (each distinct name is stored once per process).
fn intern(name: &str) -> &'static str {
    static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = names.iter().find(|n| **n == name) {
        return n;
    }
    let n: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.push(n);
    n
}

/// What was measured when the model was loaded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Seconds one window took (the second run, after a warm-up run).
    pub window_seconds: f64,
    /// Frames of lookahead added for inference.
    pub margin_frames: usize,
    /// Frames of lookahead the schedule itself needs.
    pub schedule_frames: usize,
}

/// Work for the inference thread.
enum Job {
    /// The next hop of a stream (allocated by `push_hop` on the worker thread).
    Hop {
        /// Which stream.
        stream: usize,
        /// Its samples.
        samples: Vec<f32>,
        /// The reference of the same samples (refiners only).
        reference: Option<Vec<f32>>,
    },
    /// Start every stream again (after [`MaskModel::reset`]).
    Reset,
}

/// A result from the inference thread, tagged with the reset epoch it belongs to.
enum Done {
    /// The mask of a frame (allocated on the inference thread).
    Mask {
        /// Reset epoch.
        epoch: u64,
        /// Frame index since reset.
        frame: u64,
        /// `bins` gains.
        mask: Vec<Complex32>,
    },
    /// The model failed on this stream; it stays failed until a reset.
    Failed {
        /// Reset epoch.
        epoch: u64,
        /// Why.
        error: ModelError,
    },
}

/// A windowed separator model on its own inference thread.
pub struct Separator {
    /// What it reports, with the measured lookahead.
    spec: ModelSpec,
    /// The schedule in samples.
    schedule: Schedule,
    /// What load measured.
    timing: Timing,
    /// Where the graph runs.
    provider: Provider,
    /// Something to tell the user, if anything.
    notice: Option<String>,
    /// Jobs to the inference thread (`None` once dropping).
    jobs: Option<Sender<Job>>,
    /// Per stream: masks from the inference thread.
    results: Vec<Receiver<Done>>,
    /// Per stream: hops pushed since reset.
    pushed: Vec<u64>,
    /// Reset epoch.
    epoch: u64,
    /// The inference thread.
    thread: Option<JoinHandle<()>>,
    /// Tells the inference thread to drop the jobs still queued and end.
    stop: Arc<AtomicBool>,
    /// The description it was loaded from (none for [`Separator::with_model`]).
    description: Option<ModelDescription>,
    /// Whether every hop needs its reference ([`Separator::push_hop_with_reference`]).
    needs_reference: bool,
}

/// How a [`Separator`] around a [`WindowModel`] makes its masks and what it is fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowOptions {
    /// Wiener or ratio masks.
    pub mask: MaskMode,
    /// Every hop comes with a reference signal aligned with it (a refiner's DeepFilterNet3
    /// estimate), passed to [`WindowModel::run_with_reference`].
    pub reference: bool,
}

impl Separator {
    /// Loads the model in `dir` for `streams` mono streams: reads and checks `model.toml`,
    /// builds the session with `opts` (CPU fallback with a notice), checks the graph against
    /// the description, warms it up and times one window to size the inference margin
    /// (unless `overrides.margin_ms` fixes it), and starts the inference thread.
    pub fn load(
        dir: &Path,
        streams: usize,
        opts: &SessionOptions,
        overrides: &ScheduleOverrides,
    ) -> Result<Self, ModelError> {
        let desc = describe(dir)?;
        let graph = SeparatorGraph::load(&desc, opts)?;
        let sched = schedule(&desc, overrides)?;
        let provider = graph.provider();
        let mut notice = graph.fallback().map(str::to_string);
        let mut runner = MonoRunner::new(graph);
        let options = WindowOptions {
            mask: desc.mask,
            reference: desc.is_refiner(),
        };
        // Warm-up run (first-run allocations and kernel selection), then a timed one.
        let zeros = vec![0.0f32; sched.window];
        let mut out = vec![0.0f32; sched.window];
        let mut once = |runner: &mut MonoRunner| {
            if options.reference {
                runner.run_with_reference(&zeros, &zeros, &mut out)
            } else {
                runner.run(&zeros, &mut out)
            }
        };
        once(&mut runner)?;
        let start = Instant::now();
        once(&mut runner)?;
        let window_seconds = start.elapsed().as_secs_f64();
        let hop_seconds = desc.hop() as f64 / desc.sample_rate as f64;
        let streams = streams.max(1);
        let margin_frames = match overrides.margin_ms {
            Some(ms) => desc.ms_to_samples(ms) / desc.hop(),
            None => (MARGIN_FACTOR * window_seconds * streams as f64 / hop_seconds).ceil() as usize,
        };
        let step_seconds = sched.step as f64 / desc.sample_rate as f64;
        if window_seconds * streams as f64 > step_seconds {
            let slow = format!(
                "{} cannot keep up in real time here: a window takes {:.0} ms per stream \
                 ({streams} streams), the step is {:.0} ms",
                desc.name,
                1000.0 * window_seconds,
                1000.0 * step_seconds
            );
            notice = Some(match notice {
                Some(n) => format!("{n}; {slow}"),
                None => slow,
            });
        }
        let mut sep = Self::with_window_model(
            &desc.name,
            desc.sample_rate,
            streams,
            sched,
            margin_frames,
            Box::new(runner),
            options,
        )?;
        sep.timing.window_seconds = window_seconds;
        sep.provider = provider;
        sep.notice = notice;
        sep.description = Some(desc);
        Ok(sep)
    }

    /// A separator around any [`WindowModel`] (for tests and other back ends): `margin_frames`
    /// are added to the schedule's lookahead ([`schedule_frames`]). Spawns the inference
    /// thread.
    pub fn with_model(
        name: &str,
        sample_rate: u32,
        streams: usize,
        schedule: Schedule,
        margin_frames: usize,
        model: Box<dyn WindowModel>,
    ) -> Result<Self, ModelError> {
        Self::with_window_model(
            name,
            sample_rate,
            streams,
            schedule,
            margin_frames,
            model,
            WindowOptions::default(),
        )
    }

    /// [`Self::with_model`] with ratio masks and/or a reference signal (a refiner).
    pub fn with_window_model(
        name: &str,
        sample_rate: u32,
        streams: usize,
        schedule: Schedule,
        margin_frames: usize,
        model: Box<dyn WindowModel>,
        options: WindowOptions,
    ) -> Result<Self, ModelError> {
        let grid = voxsift_engine::stft::Grid::for_rate(sample_rate);
        let settings = |message: String| ModelError::Settings {
            model: name.into(),
            message,
        };
        schedule.validate(0).map_err(settings)?;
        let streams = streams.max(1);
        let (jobs_tx, jobs_rx) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let (txs, results): (Vec<Sender<Done>>, Vec<Receiver<Done>>) =
            (0..streams).map(|_| channel()).unzip();
        let thread = std::thread::Builder::new()
            .name("voxsift-separator".into())
            .spawn({
                let stop = stop.clone();
                move || inference_thread(model, schedule, sample_rate, options, jobs_rx, txs, &stop)
            })
            .map_err(|e| ModelError::Inference {
                graph: name.into(),
                message: format!("could not start the inference thread: {e}"),
            })?;
        let schedule_frames = schedule_frames(&schedule, grid.hop);
        Ok(Self {
            spec: ModelSpec {
                name: intern(name),
                sample_rate,
                hop: grid.hop,
                bins: grid.bins,
                lookahead: schedule_frames + margin_frames,
            },
            schedule,
            timing: Timing {
                window_seconds: 0.0,
                margin_frames,
                schedule_frames,
            },
            provider: Provider::Cpu,
            notice: None,
            jobs: Some(jobs_tx),
            results,
            pushed: vec![0; streams],
            epoch: 0,
            thread: Some(thread),
            stop,
            description: None,
            needs_reference: options.reference,
        })
    }

    /// Streams it serves.
    pub fn streams(&self) -> usize {
        self.pushed.len()
    }

    /// Whether every hop needs its reference (a refiner).
    pub fn needs_reference(&self) -> bool {
        self.needs_reference
    }

    /// The schedule in samples at the model rate.
    pub fn schedule(&self) -> Schedule {
        self.schedule
    }

    /// What was measured at load.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// The `model.toml` it was loaded from (name, version, provenance, ...).
    pub fn description(&self) -> Option<&ModelDescription> {
        self.description.as_ref()
    }

    /// The inference thread has stopped.
    fn stopped(&self) -> ModelError {
        ModelError::Inference {
            graph: self.spec.name.into(),
            message: "the separator's inference thread stopped".into(),
        }
    }
}

/// The inference thread: per stream a scheduler and a mask builder; one model for all.
fn inference_thread(
    mut model: Box<dyn WindowModel>,
    schedule: Schedule,
    sample_rate: u32,
    options: WindowOptions,
    jobs: Receiver<Job>,
    results: Vec<Sender<Done>>,
    stop: &AtomicBool,
) {
    let streams = results.len();
    let mut scheds: Vec<Scheduler> = (0..streams)
        .map(|_| {
            if options.reference {
                Scheduler::with_reference(schedule)
            } else {
                Scheduler::new(schedule)
            }
        })
        .collect();
    let mut masks: Vec<MaskFrames> = (0..streams)
        .map(|_| MaskFrames::with_mode(sample_rate, options.mask))
        .collect();
    let mut failed = vec![false; streams];
    let mut epoch = 0u64;
    while let Ok(job) = jobs.recv() {
        if stop.load(Ordering::Acquire) {
            break;
        }
        match job {
            Job::Reset => {
                epoch += 1;
                scheds.iter_mut().for_each(Scheduler::reset);
                masks.iter_mut().for_each(MaskFrames::reset);
                failed.fill(false);
            }
            Job::Hop {
                stream,
                samples,
                reference,
            } => {
                let (Some(tx), Some(sc), Some(mf)) = (
                    results.get(stream),
                    scheds.get_mut(stream),
                    masks.get_mut(stream),
                ) else {
                    continue;
                };
                if failed[stream] {
                    continue;
                }
                let mut emit = |x: &[f32], v: &[f32]| {
                    mf.push(x, v, |frame, m| {
                        // The receiver only goes away when the separator is dropped.
                        let _ = tx.send(Done::Mask {
                            epoch,
                            frame,
                            mask: m.to_vec(),
                        });
                    });
                };
                let pushed = match &reference {
                    Some(r) => {
                        sc.push_with_reference(&samples, r, model.as_mut(), |x, _, v| emit(x, v))
                    }
                    None => sc.push(&samples, model.as_mut(), emit),
                };
                if let Err(error) = pushed {
                    failed[stream] = true;
                    let _ = tx.send(Done::Failed { epoch, error });
                }
            }
        }
    }
}

impl MaskModel for Separator {
    fn spec(&self) -> ModelSpec {
        self.spec
    }

    fn provider(&self) -> String {
        self.provider.name().into()
    }

    fn notice(&self) -> Option<String> {
        self.notice.clone()
    }

    fn reset(&mut self) {
        if let Some(jobs) = &self.jobs {
            // If the thread is gone, the next push_hop reports it.
            let _ = jobs.send(Job::Reset);
        }
        self.epoch += 1;
        self.pushed.fill(0);
    }

    fn push_hop(
        &mut self,
        stream: usize,
        hop: &[f32],
        mask: &mut [Complex32],
    ) -> Result<Option<u64>, ModelError> {
        if self.needs_reference {
            return Err(ModelError::Mismatch {
                graph: self.spec.name.into(),
                message: "a dfn3-refiner needs DeepFilterNet3's estimate with every hop: run \
                          it as a refiner (model::refine::Refined)"
                    .into(),
            });
        }
        self.push(stream, hop, None, mask)
    }
}

impl Separator {
    /// [`MaskModel::push_hop`] for a refiner: `reference` is DeepFilterNet3's estimate of the
    /// same samples as `hop` (same length). A separator that takes no reference ignores it.
    pub fn push_hop_with_reference(
        &mut self,
        stream: usize,
        hop: &[f32],
        reference: &[f32],
        mask: &mut [Complex32],
    ) -> Result<Option<u64>, ModelError> {
        if reference.len() != hop.len() {
            return Err(ModelError::Mismatch {
                graph: self.spec.name.into(),
                message: format!(
                    "push_hop_with_reference: {} samples with {} of reference",
                    hop.len(),
                    reference.len()
                ),
            });
        }
        let reference = self.needs_reference.then_some(reference);
        self.push(stream, hop, reference, mask)
    }

    /// Hands a hop (and its reference) to the inference thread and returns the mask that is
    /// due, if any.
    fn push(
        &mut self,
        stream: usize,
        hop: &[f32],
        reference: Option<&[f32]>,
        mask: &mut [Complex32],
    ) -> Result<Option<u64>, ModelError> {
        let spec = self.spec;
        crate::check_push_hop(&spec, "separator", self.pushed.len(), stream, hop, mask)?;
        let sent = self.jobs.as_ref().is_some_and(|jobs| {
            jobs.send(Job::Hop {
                stream,
                samples: hop.to_vec(),
                reference: reference.map(<[f32]>::to_vec),
            })
            .is_ok()
        });
        if !sent {
            return Err(self.stopped());
        }
        self.pushed[stream] += 1;
        let n = self.pushed[stream];
        let la = spec.lookahead as u64;
        if n <= la {
            return Ok(None);
        }
        let t = n - 1 - la;
        loop {
            match self.results[stream].recv() {
                Ok(Done::Mask {
                    epoch,
                    frame,
                    mask: m,
                }) => {
                    if epoch != self.epoch || frame < t {
                        continue;
                    }
                    if frame > t {
                        return Err(ModelError::Inference {
                            graph: spec.name.into(),
                            message: format!("mask of frame {frame} came before frame {t}"),
                        });
                    }
                    mask.copy_from_slice(&m);
                    return Ok(Some(t));
                }
                Ok(Done::Failed { epoch, error }) => {
                    if epoch == self.epoch {
                        return Err(error);
                    }
                }
                Err(_) => return Err(self.stopped()),
            }
        }
    }
}

impl Drop for Separator {
    fn drop(&mut self) {
        // The thread ends after the job in hand: queued hops are dropped, and closing the job
        // channel wakes it if it is waiting.
        self.stop.store(true, Ordering::Release);
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake model whose speech estimate is the input where its magnitude is above 0.5.
    fn gate() -> Box<dyn WindowModel> {
        Box::new(|i: &[f32], o: &mut [f32]| {
            for (o, &x) in o.iter_mut().zip(i) {
                *o = if x.abs() > 0.5 { x } else { 0.0 };
            }
            Ok(())
        })
    }

    fn sched(hop: usize) -> Schedule {
        Schedule {
            window: 40 * hop,
            step: 10 * hop,
            lookahead: 5 * hop,
            crossfade: 4 * hop,
        }
    }

    #[test]
    fn lookahead_is_schedule_plus_margin_and_masks_come_in_order() {
        let sr = 16_000;
        let h = 160;
        let mut sep = Separator::with_model("fake", sr, 2, sched(h), 3, gate()).expect("starts");
        let spec = sep.spec();
        assert_eq!((spec.hop, spec.bins), (160, 161));
        assert_eq!(spec.lookahead, (10 + 5 + 4) - 1 + 3);
        let mut mask = vec![Complex32::default(); spec.bins];
        for round in 0..2 {
            for n in 0..100u64 {
                for s in 0..2 {
                    let hop = vec![if n % 7 == 0 { 0.9 } else { 0.1 }; h];
                    let got = sep.push_hop(s, &hop, &mut mask).expect("runs");
                    let want = n.checked_sub(spec.lookahead as u64);
                    assert_eq!(got, want, "round {round} hop {n}");
                    assert!(mask
                        .iter()
                        .all(|m| (0.0..=1.0).contains(&m.re) && m.im == 0.0));
                }
            }
            sep.reset();
        }
    }

    #[test]
    fn a_transient_lands_in_the_engine_frames_that_cover_it() {
        // Loud only in hop 30: the gate passes it and nothing else, so exactly frames 30
        // ([29h, 31h)) and 31 ([30h, 32h)) get a non-zero mask.
        let sr = 16_000;
        let h = 160;
        let mut sep = Separator::with_model("fake", sr, 1, sched(h), 0, gate()).expect("starts");
        let la = sep.spec().lookahead as u64;
        let mut mask = vec![Complex32::default(); 161];
        for n in 0..80u64 {
            let hop: Vec<f32> = (0..h)
                .map(|i| {
                    let v = if n == 30 { 0.9 } else { 0.2 };
                    if i % 2 == 0 {
                        v
                    } else {
                        -v
                    }
                })
                .collect();
            if let Some(g) = sep.push_hop(0, &hop, &mut mask).expect("runs") {
                assert_eq!(g, n - la);
                let sum: f32 = mask.iter().map(|m| m.re).sum();
                assert_eq!(sum > 0.5, g == 30 || g == 31, "frame {g}: {sum}");
            }
        }
    }

    #[test]
    fn model_errors_and_bad_calls_are_errors_not_panics() {
        let failing: Box<dyn WindowModel> = Box::new(|_: &[f32], _: &mut [f32]| {
            Err(ModelError::Inference {
                graph: "fake".into(),
                message: "boom".into(),
            })
        });
        let h = 160;
        let mut sep = Separator::with_model("fake", 16_000, 1, sched(h), 0, failing).expect("ok");
        let mut mask = vec![Complex32::default(); 161];
        let hop = vec![0.0; h];
        let mut err = None;
        for _ in 0..100 {
            match sep.push_hop(0, &hop, &mut mask) {
                Ok(_) => {}
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        assert!(matches!(err, Some(ModelError::Inference { .. })), "{err:?}");
        assert!(sep.push_hop(1, &hop, &mut mask).is_err());
        assert!(sep.push_hop(0, &hop[..10], &mut mask).is_err());
        let bad = Schedule {
            window: 40 * h,
            step: 10 * h,
            lookahead: 0,
            crossfade: 11 * h,
        };
        assert!(matches!(
            Separator::with_model("fake", 16_000, 1, bad, 0, gate()),
            Err(ModelError::Settings { .. })
        ));
    }

    #[test]
    fn schedule_frames_is_when_a_frame_really_becomes_computable() {
        // Simulate the scheduler and the mask builder hop by hop and record, for every
        // frame, the hop after which its mask came out.
        let cases = [
            (160, sched(160)),
            (
                160,
                Schedule {
                    window: 16_000,
                    step: 4_000,
                    lookahead: 1_024,
                    crossfade: 0,
                },
            ),
            (
                160,
                Schedule {
                    window: 16_000,
                    step: 4_000,
                    lookahead: 1_024,
                    crossfade: 2_000,
                },
            ),
            (
                441,
                Schedule {
                    window: 44_100,
                    step: 11_025,
                    lookahead: 11_025,
                    crossfade: 5_513,
                },
            ),
            (
                441,
                Schedule {
                    window: 44_100,
                    step: 11_025,
                    lookahead: 0,
                    crossfade: 0,
                },
            ),
        ];
        for (hop, s) in cases {
            let mut sc = Scheduler::new(s);
            let mut mf = MaskFrames::new(hop as u32 * 100);
            let mut id = |i: &[f32], o: &mut [f32]| {
                o.copy_from_slice(i);
                Ok(())
            };
            let mut worst = 0u64;
            let x = vec![0.25f32; hop];
            for n in 0..(4 * s.window / hop) as u64 {
                sc.push(&x, &mut id, |a, b| {
                    mf.push(a, b, |g, _| worst = worst.max(n - g));
                })
                .expect("runs");
            }
            assert_eq!(worst as usize, schedule_frames(&s, hop), "{s:?}");
        }
    }

    #[test]
    fn schedules_come_from_the_description_and_overrides() {
        let d = desc::parse(desc::tests::WAVEFORM).expect("parses");
        let s = schedule(&d, &ScheduleOverrides::default()).expect("valid");
        // 1000 / 200 / 100 ms at 16 kHz, crossfade half the step.
        assert_eq!(
            (s.window, s.step, s.lookahead, s.crossfade),
            (16_000, 3_200, 1_600, 1_600)
        );
        let o = ScheduleOverrides {
            window_ms: Some(2000.0),
            crossfade_ms: Some(50.0),
            ..Default::default()
        };
        let s = schedule(&d, &o).expect("valid");
        assert_eq!((s.window, s.crossfade), (32_000, 800));
        let spec = planned_spec(&d, &o, 4).expect("valid");
        assert_eq!(spec.lookahead, (3_200 + 1_600 + 800) / 160 - 1 + 4);
        for bad in [
            ScheduleOverrides {
                step_ms: Some(0.0),
                ..Default::default()
            },
            ScheduleOverrides {
                window_ms: Some(100.0),
                ..Default::default()
            },
            ScheduleOverrides {
                lookahead_ms: Some(f64::NAN),
                ..Default::default()
            },
        ] {
            let e = schedule(&d, &bad).expect_err("invalid");
            assert!(matches!(e, ModelError::Settings { .. }), "{e}");
        }
        // A fixed graph window caps the schedule's window.
        let h = desc::parse(desc::tests::HYBRID).expect("parses");
        let e = schedule(
            &h,
            &ScheduleOverrides {
                window_ms: Some(2000.0),
                ..Default::default()
            },
        )
        .expect_err("longer than the graph");
        assert!(e.to_string().contains("graph's window"), "{e}");
    }
}
