//! The audio-thread side: analysis, mask application, synthesis, dry delay and mixing.
//!
//! [`Engine`] is a plain struct with no plugin-framework types, shared by the CLI, the plugin
//! and the tests. Everything is allocated in [`Engine::new`]; [`Engine::process`] never
//! allocates, locks or makes a syscall, and in realtime mode never waits.
//!
//! Timeline (frame `f` covers input samples `[(f+1)H - N, (f+1)H)`, `N = 2H`):
//! - at input sample `(f+1)H - 1` frame `f` is analysed and its newest hop is sent to the worker;
//! - the worker can produce the mask of frame `f` once it has frame `f + lookahead`;
//! - at input sample `(f+1+lookahead)H - 1 + margin` frame `f` is masked and overlap-added;
//! - output sample `t` is the overlap-add result for input sample `t - latency`, where
//!   `latency = (2 + lookahead) H - 1 + margin`, and the dry path is delayed by the same amount.

#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)]
#![deny(clippy::print_stdout, clippy::print_stderr, clippy::dbg_macro)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod delay;
mod kernels;
pub mod mask;
pub mod ring;
pub mod smooth;
pub mod spec;
pub mod status;
pub mod stft;

pub use spec::ModelSpec;

use crate::ring::{FrameConsumer, FrameProducer};
use crate::status::{Shared, WorkerState};
use delay::DelayLine;
use num_complex::Complex32;
use smooth::Smoother;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
pub use stft::Grid;
use stft::Stft;

/// Whether `process` may wait for masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// Never wait: a late mask is replaced by the last good one and counted.
    Realtime,
    /// Wait for every mask: output is deterministic and independent of block sizes.
    Offline,
}

/// How masks relate to channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelMode {
    /// One mask from the channel mean, applied to every channel (keeps the stereo image).
    #[default]
    Linked,
    /// One mask per channel.
    Independent,
}

/// A fixed configuration: latency and buffers depend on it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineConfig {
    /// Host sample rate in Hz.
    pub sample_rate: u32,
    /// Largest block `process` will be given.
    pub max_block: usize,
    /// Number of audio channels.
    pub channels: usize,
    /// Linked or independent masks at the start; [`Engine::set_channel_mode`] switches it.
    pub channel_mode: ChannelMode,
    /// Realtime or offline.
    pub run_mode: RunMode,
    /// Time the worker is given per hand-off beyond one host block, in ms.
    pub handoff_ms: f32,
}

impl EngineConfig {
    /// A configuration with the defaults: linked channels, 2.5 ms hand-off budget.
    pub fn new(sample_rate: u32, max_block: usize, channels: usize, run_mode: RunMode) -> Self {
        Self {
            sample_rate,
            max_block,
            channels,
            channel_mode: ChannelMode::Linked,
            run_mode,
            handoff_ms: 2.5,
        }
    }

    /// Number of mask (and model) streams the rings and the model are built for: one per
    /// channel, so the channel mode can change while running. When linked only stream 0 is
    /// computed and its mask is copied to the others.
    pub fn mask_streams(&self) -> usize {
        self.channels.max(1)
    }
}

/// User settings, applied smoothly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineParams {
    /// Wet/dry mix, 0..=1.
    pub wet: f32,
    /// Mask sharpness on the power ratio; 1 leaves the model's mask as it is.
    pub beta: f32,
    /// Attenuation floor in dB (`None` = off).
    pub floor_db: Option<f32>,
    /// Output gain in dB.
    pub output_gain_db: f32,
    /// Bypass: output the delayed dry signal (click-free, latency kept).
    pub bypass: bool,
}

impl Default for EngineParams {
    fn default() -> Self {
        Self {
            wet: 1.0,
            // The model's own mask: chosen by the beta/floor sweep over the eval set
            // (BENCHMARKS.md, "Default beta and floor").
            beta: 1.0,
            floor_db: None,
            output_gain_db: 0.0,
            bypass: false,
        }
    }
}

/// How the reported latency is made up, in host samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    /// STFT: `2H - 1` (a hop to fill, plus the overlap).
    pub stft: usize,
    /// The model's lookahead, `lookahead * H`.
    pub lookahead: usize,
    /// Time given to the worker: one host block or the hand-off budget, whichever is larger.
    pub handoff: usize,
    /// Extra input the worker's resampler needs before a model frame is complete.
    pub resampler: usize,
}

impl Latency {
    /// Total latency in samples, as reported to the host.
    pub fn total(&self) -> usize {
        self.stft + self.lookahead + self.handoff + self.resampler
    }

    /// The margin between a frame's mask being computable and it being needed.
    pub fn margin(&self) -> usize {
        self.handoff + self.resampler
    }
}

/// Hop and mask tags: the frame index, the engine's reset epoch and the channel mode.
///
/// A reset starts a new epoch so masks still in flight from before it are never applied to
/// the new stream; a change of channel mode restarts the model's stream on the worker.
pub mod tag {
    /// Bits of the frame index.
    const FRAME_BITS: u32 = 40;
    /// Mask of the frame index.
    const FRAME_MASK: u64 = (1 << FRAME_BITS) - 1;
    /// Mask of the epoch after shifting.
    const EPOCH_MASK: u64 = (1 << 22) - 1;
    /// Set when the hop is the linked (channel-mean) signal.
    const LINKED: u64 = 1 << 62;
    /// Set on the first hop after the engine restarted its stream at a sound that followed
    /// long digital silence: the model may carry on from its state rather than start cold.
    const RESUME: u64 = 1 << 63;

    /// Builds a tag.
    pub fn make(epoch: u64, linked: bool, frame: u64) -> u64 {
        ((epoch & EPOCH_MASK) << FRAME_BITS)
            | (frame & FRAME_MASK)
            | if linked { LINKED } else { 0 }
    }

    /// The frame index.
    pub fn frame(tag: u64) -> u64 {
        tag & FRAME_MASK
    }

    /// The epoch.
    pub fn epoch(tag: u64) -> u64 {
        (tag >> FRAME_BITS) & EPOCH_MASK
    }

    /// True for a linked hop.
    pub fn linked(tag: u64) -> bool {
        tag & LINKED != 0
    }

    /// The next epoch after `e`.
    pub fn next_epoch(e: u64) -> u64 {
        (e + 1) & EPOCH_MASK
    }

    /// `tag` marked as the first hop after digital silence (see [`resumes`]).
    pub fn with_resume(tag: u64) -> u64 {
        tag | RESUME
    }

    /// Splits off the resume mark: (tag without it, whether it was set). A stream that starts
    /// with a marked hop carries on from the model's state as the silence left it (see
    /// `MaskModel::resume` in `voxsift-models`); any other new stream starts cold.
    pub fn resumes(tag: u64) -> (u64, bool) {
        (tag & !RESUME, tag & RESUME != 0)
    }
}

/// The audio-thread half of the connection to a worker.
pub struct WorkerLink {
    /// Hops of analysis input, one frame per hop, tagged (see [`tag`]).
    pub hops: FrameProducer<f32>,
    /// Mask frames back, tagged like the hop they answer.
    pub masks: FrameConsumer<Complex32>,
    /// Status and counters shared with the worker.
    pub shared: Arc<Shared>,
}

/// Longest an offline `process` waits for one mask before it gives up and passes audio through.
const OFFLINE_TIMEOUT: Duration = Duration::from_secs(30);

/// How an offline engine waits for its worker (a free hop slot or a mask): a few spins, a few
/// yields, then naps of [`Backoff::NAP`]. Offline only: the realtime path never waits. A pure
/// `yield_now` loop kept a whole core busy for the length of every render (191 % CPU for one
/// file on two cores, most of it in `sched_yield`), so two files at once ran little faster
/// than one; napping leaves that core to the other jobs' workers. A nap is much shorter than
/// one model step (about 0.8 ms for DFN3), and the worker has hops queued ahead for the
/// latency, so it does not starve while the engine sleeps. Output does not depend on it.
struct Backoff {
    /// Waits so far.
    n: u32,
}

impl Backoff {
    /// How long one nap asks to sleep.
    const NAP: Duration = Duration::from_micros(50);

    fn new() -> Self {
        Self { n: 0 }
    }

    /// Waits a little, longer the longer it has waited.
    fn wait(&mut self) {
        if self.n < 16 {
            std::hint::spin_loop();
        } else if self.n < 32 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Self::NAP);
        }
        self.n = self.n.saturating_add(1);
    }
}

/// Parameter ramp length (wet, output gain) in seconds.
const RAMP_SECONDS: f32 = 0.02;

/// The speech-isolation engine for one configuration.
pub struct Engine {
    /// The configuration it was built for.
    config: EngineConfig,
    /// The STFT grid.
    grid: Grid,
    /// Model lookahead in frames.
    lookahead: usize,
    /// Latency breakdown.
    latency: Latency,
    /// Analysis/synthesis.
    stft: Stft,
    /// Number of frames kept in `spectra` and `masks`.
    slots: usize,
    /// Per channel: the last `win` input samples, circular.
    input: Vec<Vec<f32>>,
    /// Write position in `input`.
    input_pos: usize,
    /// Samples of the current hop received so far.
    hop_fill: usize,
    /// Per channel: overlap-add accumulator, circular, `2 * win` long.
    ola: Vec<Vec<f32>>,
    /// Per channel: dry path delayed by the latency.
    dry: Vec<DelayLine>,
    /// Spectra waiting for their mask: `slots * channels * bins`.
    spectra: Vec<Complex32>,
    /// Mask slots received from the worker: `slots * streams * bins`.
    masks: Vec<Complex32>,
    /// Frame index held by each mask slot (`u64::MAX` = empty).
    mask_tags: Vec<u64>,
    /// The last mask applied, per stream: the fallback for a late mask.
    last_mask: Vec<Complex32>,
    /// True once a real mask has been applied (before that a late mask means unity).
    have_mask: bool,
    /// Scratch: one spectrum (`bins`).
    spec: Vec<Complex32>,
    /// Scratch: shaped gains (`bins`).
    gains: Vec<Complex32>,
    /// Scratch: one hop for the worker (`streams * hop`).
    hop_out: Vec<f32>,
    /// Scratch: the wet smoother's value per sample of a segment (`hop`).
    wet_steps: Vec<f32>,
    /// Scratch: the output gain smoother's value per sample of a segment (`hop`).
    gain_steps: Vec<f32>,
    /// Magnitude of the gain applied to channel 0 in the last synthesized frame (`bins`),
    /// for displays. Written per frame on the audio thread.
    applied: Vec<f32>,
    /// Energy of the delayed dry signal and of the output in the last `process` call.
    block_energy: (f32, f32),
    /// Samples processed since the last reset.
    clock: u64,
    /// Frames analysed since the last reset.
    analysed: u64,
    /// Frames synthesized since the last reset.
    synthesized: u64,
    /// Clock value at which the next frame is synthesized.
    next_synth: u64,
    /// Connection to the worker, if any.
    link: Option<WorkerLink>,
    /// Reset epoch carried in every tag.
    epoch: u64,
    /// Set when the stream restarted at a sound after long digital silence, until the first
    /// hop of the new stream is sent (marked with [`tag::with_resume`]).
    resume_next: bool,
    /// Current channel mode: true when one mask is computed from the channel mean.
    linked: bool,
    /// Channel mode of the last hop sent.
    hop_linked: bool,
    /// Frames `[start, end)` around a channel-mode switch, whose masks may never come because
    /// the model's stream restarted after them: the last mask is held for them, without
    /// waiting, so the result does not depend on timing.
    gap: (u64, u64),
    /// Set when the worker failed or a wait timed out: output is the delayed dry signal.
    failed: bool,
    /// Input samples in a row that were exactly zero on every channel, up to the current one
    /// (saturating; a new or reset engine counts as having heard silence forever).
    silent_run: u64,
    /// Digital silence after which the next sound restarts the stream (see
    /// [`Engine::resync_silence`]).
    resync_after: u64,
    /// Current settings.
    params: EngineParams,
    /// `params`' output gain and floor as linear factors, computed when they are set (not per
    /// block or frame: each is a `powf`).
    params_linear: (f32, f32),
    /// Wet amount ramp.
    wet: Smoother,
    /// Output gain ramp (linear).
    gain: Smoother,
    /// Beta, smoothed per frame.
    beta: Smoother,
    /// Floor (linear), smoothed per frame.
    floor: Smoother,
}

/// Largest input magnitude passed on: 2^20 (about +120 dBFS). Larger finite samples are
/// clamped to it, so that no sum or square in the STFT, the masks or a model's features can
/// overflow to infinity (a block of `f32::MAX` samples did, and gave NaN output).
pub const MAX_INPUT: f32 = 1_048_576.0;

impl Engine {
    /// Builds an engine for `config` and a model with `lookahead` frames of lookahead at a
    /// model whose resampler needs `resampler_lag` extra host samples. Allocates everything.
    pub fn new(config: EngineConfig, lookahead: usize, resampler_lag: usize) -> Self {
        let grid = Grid::for_rate(config.sample_rate);
        let channels = config.channels.max(1);
        let handoff_budget =
            (config.handoff_ms.max(0.0) * config.sample_rate as f32 / 1000.0).ceil() as usize;
        let latency = Latency {
            stft: 2 * grid.hop - 1,
            lookahead: lookahead * grid.hop,
            handoff: config.max_block.max(handoff_budget),
            resampler: resampler_lag,
        };
        let slots = lookahead + 4 + latency.margin().div_ceil(grid.hop);
        let streams = config.mask_streams();
        let ramp = ((RAMP_SECONDS * config.sample_rate as f32) as u32).max(1);
        let p = EngineParams::default();
        let mut e = Self {
            config: EngineConfig { channels, ..config },
            grid,
            lookahead,
            latency,
            stft: Stft::new(grid),
            slots,
            input: vec![vec![0.0; grid.win]; channels],
            input_pos: 0,
            hop_fill: 0,
            ola: vec![vec![0.0; 2 * grid.win]; channels],
            dry: (0..channels)
                .map(|_| DelayLine::new(latency.total()))
                .collect(),
            spectra: vec![Complex32::default(); slots * channels * grid.bins],
            masks: vec![Complex32::default(); slots * streams * grid.bins],
            mask_tags: vec![u64::MAX; slots],
            last_mask: vec![Complex32::new(1.0, 0.0); streams * grid.bins],
            have_mask: false,
            spec: vec![Complex32::default(); grid.bins],
            gains: vec![Complex32::default(); grid.bins],
            hop_out: vec![0.0; streams * grid.hop],
            wet_steps: vec![0.0; grid.hop],
            gain_steps: vec![0.0; grid.hop],
            applied: vec![1.0; grid.bins],
            block_energy: (0.0, 0.0),
            clock: 0,
            analysed: 0,
            synthesized: 0,
            next_synth: 0,
            link: None,
            epoch: 0,
            resume_next: false,
            linked: config.channel_mode == ChannelMode::Linked,
            hop_linked: config.channel_mode == ChannelMode::Linked,
            gap: (0, 0),
            failed: false,
            silent_run: u64::MAX,
            resync_after: (latency.total() + 2 * grid.win) as u64,
            params: p,
            params_linear: Self::linear(&p),
            wet: Smoother::new(p.wet, ramp),
            gain: Smoother::new(1.0, ramp),
            beta: Smoother::new(p.beta, 4),
            floor: Smoother::new(0.0, 4),
        };
        e.reset();
        e
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The STFT grid.
    pub fn grid(&self) -> Grid {
        self.grid
    }

    /// Latency in samples, constant for this configuration; the dry path is delayed by it.
    pub fn latency_samples(&self) -> usize {
        self.latency.total()
    }

    /// Samples of digital silence (exact zeros on every channel) after which the next non-zero
    /// sample restarts the stream as [`Engine::reset`] does: the latency plus two windows, by
    /// when every sample inside the engine is zero, so the restart is silent. From there the
    /// output is bit-identical to a fresh engine's fed from that sample on, whatever came
    /// before: a host's export pre-roll, the position of a region, or leading silence in a
    /// file. The model's stream restarts too (new epoch). A new engine counts as having heard
    /// silence, so its stream starts at the first sound as well.
    pub fn resync_silence(&self) -> usize {
        self.resync_after as usize
    }

    /// How the latency is made up.
    pub fn latency(&self) -> Latency {
        self.latency
    }

    /// Connects a worker (see `Worker::spawn` in `voxsift-models`).
    pub fn connect(&mut self, link: WorkerLink) {
        self.link = Some(link);
        self.failed = false;
    }

    /// Disconnects the worker, if any, and returns its link.
    pub fn disconnect(&mut self) -> Option<WorkerLink> {
        self.link.take()
    }

    /// Shared status of the connected worker.
    pub fn shared(&self) -> Option<&Arc<Shared>> {
        self.link.as_ref().map(|l| &l.shared)
    }

    /// Magnitudes of the gains applied to channel 0 in the most recent frame, one per bin
    /// (what the mask keeps, 1, and removes, 0), after beta and the floor; wet is not in it.
    pub fn applied_gains(&self) -> &[f32] {
        &self.applied
    }

    /// Frames synthesized since the last reset: a new [`Self::applied_gains`] column each.
    pub fn frames_synthesized(&self) -> u64 {
        self.synthesized
    }

    /// Sums of squares over the last `process` call, all channels: (delayed dry, output
    /// before the output gain). Their ratio is the reduction being applied.
    pub fn block_energy(&self) -> (f32, f32) {
        self.block_energy
    }

    /// True when the engine passes audio through because its worker failed or timed out.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// Sets the switch to pass-through (used when no model could be loaded).
    pub fn set_failed(&mut self) {
        self.failed = true;
    }

    /// Sets new settings; they ramp in over 20 ms (wet, gain) or a few frames (beta, floor).
    pub fn set_params(&mut self, p: EngineParams) {
        if p.output_gain_db.to_bits() != self.params.output_gain_db.to_bits()
            || p.floor_db.map(f32::to_bits) != self.params.floor_db.map(f32::to_bits)
        {
            self.params_linear = Self::linear(&p);
        }
        self.params = p;
    }

    /// The output gain and the floor of `p` as linear factors.
    fn linear(p: &EngineParams) -> (f32, f32) {
        (
            10f32.powf(p.output_gain_db / 20.0),
            mask::floor_linear(p.floor_db),
        )
    }

    /// The current settings.
    pub fn params(&self) -> EngineParams {
        self.params
    }

    /// Sets the settings with no ramp (for the start of a render).
    pub fn set_params_immediate(&mut self, p: EngineParams) {
        self.params = p;
        self.params_linear = Self::linear(&p);
        let (w, g) = self.targets();
        self.wet.reset(w);
        self.gain.reset(g);
        self.beta.reset(p.beta);
        self.floor.reset(self.params_linear.1);
    }

    /// Switches between linked and independent masks; takes effect at the next hop (the
    /// worker restarts the model's stream there, so there is no gap in the masks).
    pub fn set_channel_mode(&mut self, mode: ChannelMode) {
        self.linked = mode == ChannelMode::Linked;
        self.config.channel_mode = mode;
    }

    /// Clears all audio state and starts a new epoch: masks computed before the reset are
    /// discarded and the worker restarts the model's stream at the next hop, so the same
    /// input after a reset gives the same output (offline).
    pub fn reset(&mut self) {
        self.epoch = tag::next_epoch(self.epoch);
        self.resume_next = false;
        self.hop_linked = self.linked;
        self.gap = (0, 0);
        self.applied.fill(1.0);
        self.block_energy = (0.0, 0.0);
        for c in &mut self.input {
            c.fill(0.0);
        }
        for c in &mut self.ola {
            c.fill(0.0);
        }
        for d in &mut self.dry {
            d.reset();
        }
        self.mask_tags.fill(u64::MAX);
        self.last_mask.fill(Complex32::new(1.0, 0.0));
        self.have_mask = false;
        self.input_pos = 0;
        self.hop_fill = 0;
        self.clock = 0;
        self.analysed = 0;
        self.synthesized = 0;
        self.next_synth = ((1 + self.lookahead) * self.grid.hop - 1 + self.latency.margin()) as u64;
        self.silent_run = u64::MAX;
        let p = self.params;
        self.set_params_immediate(p);
    }

    /// Ramp targets for wet and linear output gain.
    fn targets(&self) -> (f32, f32) {
        let wet = if self.params.bypass || self.failed {
            0.0
        } else {
            self.params.wet.clamp(0.0, 1.0)
        };
        let gain = if self.params.bypass {
            1.0
        } else {
            self.params_linear.0
        };
        (wet, gain)
    }

    /// Processes one block in place: `io[c]` is channel `c`, all the same length
    /// (1..=max_block). Never allocates; in realtime mode never waits. Runs with the CPU's
    /// flush-to-zero and denormals-are-zero modes set (the caller's modes are restored on
    /// return), so that sums and products near the bottom of the float range cost nothing extra;
    /// the CLI and the plugin both come through here, so their output stays identical.
    pub fn process(&mut self, io: &mut [&mut [f32]]) {
        // SAFETY: the closure only does float arithmetic on this engine's own buffers; the modes
        // are thread-local, set for the duration of the call and restored by the guard.
        unsafe { no_denormals::no_denormals(|| self.process_flushed(io)) }
    }

    /// [`Engine::process`] with flush-to-zero set.
    ///
    /// The block is cut into segments at every sample where something happens besides the
    /// per-sample work: the last sample of a hop (analysis, hand-off), a synthesis sample, the
    /// wrap of the input and overlap-add rings. Those samples, and every sample while a long
    /// digital silence may end in a stream restart, take [`Engine::one_sample`]; the samples
    /// between them take [`Engine::segment`], channel by channel. Both compute every output
    /// sample with the same operations in the same order, so the output does not depend on
    /// the cut (only the meters' energy sums are added in another order).
    fn process_flushed(&mut self, io: &mut [&mut [f32]]) {
        let channels = self.config.channels.min(io.len());
        let n = io.iter().map(|c| c.len()).min().unwrap_or(0);
        if let Some(link) = &self.link {
            link.shared.last_block.store(n as u32, Ordering::Relaxed);
        }
        let (wet_t, gain_t) = self.targets();
        self.wet.set_target(wet_t);
        self.gain.set_target(gain_t);
        let win = self.grid.win;
        let ola_len = self.ola[0].len();
        let latency = self.latency.total() as u64;
        let mut energy = (0.0f32, 0.0f32);
        // Read position in the overlap-add ring: `(clock + win - latency) mod ola_len`, kept
        // incrementally (no division per sample). The offset keeps the sum from wrapping.
        let lift = (latency / ola_len as u64 + 1) * ola_len as u64;
        let mut pos = ((self.clock + win as u64 + lift - latency) % ola_len as u64) as usize;
        let mut i = 0;
        while i < n {
            let before_hop_end = self.grid.hop - 1 - self.hop_fill;
            let before_synth = self.next_synth.saturating_sub(self.clock);
            let seg = (n - i)
                .min(before_hop_end)
                .min(usize::try_from(before_synth).unwrap_or(usize::MAX))
                .min(win - self.input_pos)
                .min(ola_len - pos);
            let restart_possible = self.silent_run.saturating_add(seg as u64) >= self.resync_after;
            if seg == 0 || restart_possible {
                self.one_sample(io, i, channels, &mut pos, lift, &mut energy);
                i += 1;
            } else {
                self.segment(io, i, seg, channels, pos, &mut energy);
                i += seg;
                pos += seg;
                if pos == ola_len {
                    pos = 0;
                }
            }
        }
        self.block_energy = energy;
        // Channels the engine was not configured for are silenced rather than left unprocessed.
        for ch in io.iter_mut().skip(channels) {
            ch.fill(0.0);
        }
    }

    /// Processes sample `i` of `io` with everything that may happen at a sample: the stream
    /// restart after a long digital silence, analysis at the end of a hop, synthesis. `pos` is
    /// the overlap-add read position (advanced here), `lift` its offset (see `process_flushed`).
    #[inline]
    fn one_sample(
        &mut self,
        io: &mut [&mut [f32]],
        i: usize,
        channels: usize,
        pos: &mut usize,
        lift: u64,
        energy: &mut (f32, f32),
    ) {
        let win = self.grid.win;
        let ola_len = self.ola[0].len();
        let latency = self.latency.total() as u64;
        let mut wpos = self.input_pos;
        let mut silent = true;
        for (c, ch) in io.iter().enumerate().take(channels) {
            let x = kernels::sanitize(ch[i]);
            self.input[c][wpos] = x;
            silent &= x == 0.0;
        }
        if silent {
            self.silent_run = self.silent_run.saturating_add(1);
        } else {
            if self.silent_run >= self.resync_after && self.clock > 0 {
                // Everything inside is zero: restart the stream at this sound. The reset
                // clears the input ring, so this sample is stored again at its new start.
                // The model carries on from the state the silence left.
                self.reset();
                self.resume_next = true;
                *pos = ((win as u64 + lift - latency) % ola_len as u64) as usize;
                wpos = self.input_pos;
                for (c, ch) in io.iter().enumerate().take(channels) {
                    self.input[c][wpos] = kernels::sanitize(ch[i]);
                }
            }
            self.silent_run = 0;
        }
        self.input_pos += 1;
        if self.input_pos == win {
            self.input_pos = 0;
        }
        self.hop_fill += 1;
        if self.hop_fill == self.grid.hop {
            self.hop_fill = 0;
            self.analyse_frame(channels);
        }
        if self.clock == self.next_synth {
            self.synthesize_frame(channels);
            self.next_synth += self.grid.hop as u64;
        }
        let wet = self.wet.next_value();
        let gain = self.gain.next_value();
        let reading = self.clock >= latency;
        for (c, ch) in io.iter_mut().enumerate().take(channels) {
            // The sanitized input sample, stored above.
            let x = self.input[c][wpos];
            let dry = self.dry[c].tick(x);
            let y = if reading {
                std::mem::replace(&mut self.ola[c][*pos], 0.0)
            } else {
                0.0
            };
            ch[i] = kernels::mix(dry, y, wet, gain, energy);
        }
        self.clock += 1;
        *pos += 1;
        if *pos == ola_len {
            *pos = 0;
        }
    }

    /// Processes samples `i..i + len` of `io`, which hold no hop end, no synthesis, no ring
    /// wrap and no possible stream restart (see `process_flushed`), channel by channel.
    /// `pos` is the overlap-add read position of sample `i`.
    #[inline]
    fn segment(
        &mut self,
        io: &mut [&mut [f32]],
        i: usize,
        len: usize,
        channels: usize,
        pos: usize,
        energy: &mut (f32, f32),
    ) {
        let wpos = self.input_pos;
        // The last sample that is not silent in every channel, if any.
        let mut last_sound = None;
        for (c, ch) in io.iter().enumerate().take(channels) {
            let src = &ch[i..i + len];
            let dst = &mut self.input[c][wpos..wpos + len];
            if let Some(k) = kernels::store_sanitized(dst, src) {
                last_sound = Some(last_sound.map_or(k, |l: usize| l.max(k)));
            }
        }
        self.silent_run = match last_sound {
            // No restart is possible here: the run before this segment was too short.
            Some(k) => (len - 1 - k) as u64,
            None => self.silent_run.saturating_add(len as u64),
        };
        self.input_pos += len;
        self.hop_fill += len;
        let latency = self.latency.total() as u64;
        // The smoothers step once per sample, as in `one_sample`; nothing changes their
        // targets inside a segment. Their values go into scratch either way, so that the mix
        // below is one loop without branches on them.
        if self.wet.is_ramping() || self.gain.is_ramping() {
            for k in 0..len {
                self.wet_steps[k] = self.wet.next_value();
                self.gain_steps[k] = self.gain.next_value();
            }
        } else {
            self.wet_steps[..len].fill(self.wet.value());
            self.gain_steps[..len].fill(self.gain.value());
        }
        // Samples before `reading` come before the first output of the overlap-add (y = 0).
        let reading = usize::try_from(latency.saturating_sub(self.clock))
            .unwrap_or(usize::MAX)
            .min(len);
        let (wet, gain) = (&self.wet_steps[..len], &self.gain_steps[..len]);
        for (c, ch) in io.iter_mut().enumerate().take(channels) {
            let out = &mut ch[i..i + len];
            // The delayed dry signal, mixed in place below.
            self.dry[c].process(&self.input[c][wpos..wpos + len], out);
            let ola = &mut self.ola[c][pos..pos + len];
            kernels::mix_segment(out, ola, wet, gain, reading, energy);
        }
        self.clock += len as u64;
    }

    /// Analyses the frame that just completed and hands its newest hop to the worker.
    fn analyse_frame(&mut self, channels: usize) {
        let f = self.analysed;
        let win = self.grid.win;
        let hop = self.grid.hop;
        let bins = self.grid.bins;
        let slot = (f % self.slots as u64) as usize;
        for c in 0..channels {
            // Oldest sample first: the input ring's write position is the oldest.
            let (newer, older) = self.input[c].split_at(self.input_pos);
            let base = (slot * self.config.channels + c) * bins;
            self.stft
                .analyze_parts(older, newer, &mut self.spectra[base..base + bins]);
        }
        // The newest hop: per channel, or the channel mean in stream 0 when linked. It lies in
        // the input ring at `start..start + hop`, in at most two contiguous pieces.
        let streams = self.config.mask_streams();
        let start = (self.input_pos + win - hop) % win;
        let first = hop.min(win - start);
        for s in 0..streams {
            let out = &mut self.hop_out[s * hop..(s + 1) * hop];
            let (out_a, out_b) = out.split_at_mut(first);
            if !self.linked {
                match self.input.get(s) {
                    Some(ch) => {
                        out_a.copy_from_slice(&ch[start..start + first]);
                        out_b.copy_from_slice(&ch[..hop - first]);
                    }
                    None => out.fill(0.0),
                }
            } else if s == 0 {
                // The same sum, in the same order, as `iter().sum()` per sample: std's float
                // sum starts at -0.0, which leaves the first term unchanged, sign of zero too.
                out_a.copy_from_slice(&self.input[0][start..start + first]);
                out_b.copy_from_slice(&self.input[0][..hop - first]);
                for ch in &self.input[1..channels] {
                    kernels::add_into(out_a, &ch[start..start + first]);
                    kernels::add_into(out_b, &ch[..hop - first]);
                }
                let n = channels.max(1) as f32;
                for o in out.iter_mut() {
                    *o /= n;
                }
            } else {
                out.fill(0.0);
            }
        }
        if self.linked != self.hop_linked {
            // The worker restarts the model here; earlier frames still waiting for lookahead
            // from this hop on will never get their mask.
            self.hop_linked = self.linked;
            let back = self.lookahead + self.latency.resampler.div_ceil(self.grid.hop) + 1;
            self.gap = (f.saturating_sub(back as u64), f);
        }
        self.send_hop(f);
        self.analysed += 1;
    }

    /// True while the connected worker is still loading its model.
    fn worker_starting(&self) -> bool {
        self.link
            .as_ref()
            .is_some_and(|l| l.shared.state() == WorkerState::Starting)
    }

    /// Sends a hop to the worker: in realtime a full ring drops the hop (counted) and nothing
    /// is sent while the model is still loading; offline waits for room.
    fn send_hop(&mut self, f: u64) {
        let offline = self.config.run_mode == RunMode::Offline;
        if !offline && self.worker_starting() {
            return;
        }
        let mut t = tag::make(self.epoch, self.linked, f);
        if std::mem::take(&mut self.resume_next) {
            t = tag::with_resume(t);
        }
        let Some(link) = self.link.as_mut() else {
            return;
        };
        if self.failed {
            return;
        }
        if link.hops.try_push(t, &self.hop_out) {
            if offline {
                link.shared.wake_worker();
            }
            return;
        }
        if !offline {
            link.shared.dropped_hops.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let start = Instant::now();
        let mut backoff = Backoff::new();
        loop {
            if link.hops.try_push(t, &self.hop_out) {
                link.shared.wake_worker();
                return;
            }
            if Self::worker_gone(&link.shared) || start.elapsed() > OFFLINE_TIMEOUT {
                self.fail_over();
                return;
            }
            backoff.wait();
        }
    }

    /// True when the worker can no longer deliver.
    fn worker_gone(shared: &Shared) -> bool {
        matches!(shared.state(), WorkerState::Failed | WorkerState::Stopped)
    }

    /// Switches to delayed dry pass-through (smoothly, via the wet ramp).
    fn fail_over(&mut self) {
        self.failed = true;
        let (w, g) = self.targets();
        if self.clock < self.latency.total() as u64 {
            // Nothing has come out yet: no ramp needed, the output is delayed dry from the
            // first sample.
            self.wet.reset(w);
            self.gain.reset(g);
        } else {
            self.wet.set_target(w);
            self.gain.set_target(g);
        }
    }

    /// Moves every mask waiting in the ring into its slot; drops masks for past frames.
    fn drain_masks(&mut self) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let per = self.masks.len() / self.slots;
        while let Some(t) = link.masks.peek_tag() {
            let f = tag::frame(t);
            if tag::epoch(t) != self.epoch
                || f < self.synthesized
                || f >= self.synthesized + self.slots as u64
            {
                link.masks.skip();
                continue;
            }
            let slot = (f % self.slots as u64) as usize;
            link.masks
                .try_pop(&mut self.masks[slot * per..(slot + 1) * per]);
            self.mask_tags[slot] = f;
        }
    }

    /// True when the mask of frame `f` is in its slot.
    fn has_mask(&self, f: u64) -> bool {
        self.mask_tags[(f % self.slots as u64) as usize] == f
    }

    /// Gets the mask of frame `f` into `last_mask`: from its slot, by waiting (offline), or by
    /// keeping the last good one (realtime, counted as late).
    fn fetch_mask(&mut self, f: u64) {
        if self.link.is_none() || self.failed {
            return;
        }
        let offline = self.config.run_mode == RunMode::Offline;
        if !offline && self.worker_starting() {
            // Realtime while the model loads: unity mask, not counted as late.
            return;
        }
        if self
            .link
            .as_ref()
            .is_some_and(|l| Self::worker_gone(&l.shared) && l.masks.peek_tag().is_none())
        {
            // The model failed to load or the worker died: delayed dry from here on.
            self.fail_over();
            return;
        }
        self.drain_masks();
        if (self.gap.0..self.gap.1).contains(&f) {
            // Always the held mask here, whether or not one arrived: deterministic offline.
            return;
        }
        if !self.has_mask(f) && self.config.run_mode == RunMode::Offline {
            let start = Instant::now();
            let mut backoff = Backoff::new();
            while !self.has_mask(f) {
                let gone = self
                    .link
                    .as_ref()
                    .is_none_or(|l| Self::worker_gone(&l.shared));
                if gone || start.elapsed() > OFFLINE_TIMEOUT {
                    self.drain_masks();
                    if !self.has_mask(f) {
                        self.fail_over();
                        return;
                    }
                    break;
                }
                backoff.wait();
                self.drain_masks();
            }
        }
        if self.has_mask(f) {
            let per = self.last_mask.len();
            let slot = (f % self.slots as u64) as usize;
            self.last_mask
                .copy_from_slice(&self.masks[slot * per..(slot + 1) * per]);
            self.mask_tags[slot] = u64::MAX;
            self.have_mask = true;
        } else if let Some(link) = &self.link {
            // Realtime: keep the last good mask; overlap-add crossfades it over one hop.
            link.shared.late_masks.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Masks frame `synthesized` and overlap-adds it.
    fn synthesize_frame(&mut self, channels: usize) {
        let f = self.synthesized;
        let bins = self.grid.bins;
        let win = self.grid.win;
        let hop = self.grid.hop;
        self.fetch_mask(f);
        let beta = self
            .beta
            .next_value_target(self.params.beta.clamp(0.1, 10.0));
        let floor = self.floor.next_value_target(self.params_linear.1);
        let slot = (f % self.slots as u64) as usize;
        let ola_len = self.ola[0].len();
        // Frame f covers absolute samples [(f+1)H - N, (f+1)H); positions are offset by N.
        let first = (f + 1) * hop as u64; // absolute start + N
                                          // True while `gains` hold the shaped mask of stream 0.
        let mut gains_are_stream0 = false;
        for c in 0..channels {
            // Linked masks arrive copied into every stream: shape them once.
            let s = c;
            let same_as_0 = c > 0
                && gains_are_stream0
                && kernels::same_bits(
                    &self.last_mask[s * bins..(s + 1) * bins],
                    &self.last_mask[..bins],
                );
            if !same_as_0 {
                mask::shape_gains(
                    &mut self.gains[..bins],
                    &self.last_mask[s * bins..(s + 1) * bins],
                    beta,
                    floor,
                );
                gains_are_stream0 = c == 0;
            }
            if c == 0 {
                // For displays only: sqrt of the squared norm, not `norm` (libm's `hypotf`,
                // which guards against overflow that gains do not reach, cost 8 % of `process`).
                for (a, g) in self.applied.iter_mut().zip(&self.gains) {
                    *a = g.norm_sqr().sqrt();
                }
            }
            let base = (slot * self.config.channels + c) * bins;
            kernels::apply_gains(
                &mut self.spec,
                &self.spectra[base..base + bins],
                &self.gains,
            );
            let synth = self.stft.synthesize(&mut self.spec);
            // Skip the part of frame 0 that lies before the first sample.
            let skip = (win as u64).saturating_sub(first) as usize;
            let pos = ((first + skip as u64) % ola_len as u64) as usize;
            // Added in two contiguous pieces: up to the end of the ring, then from its start.
            let src = &synth[skip.min(win)..];
            let (head, wrapped) = src.split_at(src.len().min(ola_len - pos));
            let ola = &mut self.ola[c];
            kernels::add_into(&mut ola[pos..pos + head.len()], head);
            kernels::add_into(&mut ola[..wrapped.len()], wrapped);
        }
        self.synthesized += 1;
    }
}
