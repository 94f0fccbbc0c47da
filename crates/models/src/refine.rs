//! A DeepFilterNet3 refiner as one [`MaskModel`]: DeepFilterNet3 in front, and a separator
//! graph (`architecture = "dfn3-refiner"`) that sees the mix and DeepFilterNet3's speech
//! estimate of it and outputs a refined speech waveform.
//!
//! Per stream, [`Refined`] keeps the mix's analysis frames on the engine's grid at 48 kHz
//! (DeepFilterNet3's own 960/480 grid, the engine's window), applies DeepFilterNet3's mask of
//! frame `f` to them when it arrives, exactly as the engine's identity path does (beta 1, no
//! floor: `Y = X·G`), and overlap-adds with the engine's synthesis: that is DeepFilterNet3's
//! estimate, sample for sample what the engine would output with DeepFilterNet3 alone. Hop
//! `f - 1` of it is final once frame `f` is added, so the estimate is
//! `D = front lookahead + 1` hops (3 for DeepFilterNet3) behind the input; the mix is delayed
//! by as many hops, and both go into the refiner's windows aligned
//! ([`Separator::push_hop_with_reference`]).
//!
//! The masks returned are the refiner's: with `mask = "ratio"` they are `V / X` on the
//! engine's grid, so the engine's output is the refiner's waveform. Frame indices are the
//! stream's own (the separator counts the delayed hops from the stream's first hop), and the
//! lookahead is `D` plus the separator's, constant for a configuration.
//!
//! Memory: every buffer is allocated in [`Refined::new`]; [`MaskModel::push_hop`] allocates
//! only what the separator does to hand a hop to its inference thread.

use super::dfn3::Dfn3;
use super::separator::{self, ScheduleOverrides, Separator};
use super::{MaskModel, ModelError, ModelSpec};
use crate::runtime::SessionOptions;
use num_complex::Complex32;
use std::path::Path;
use voxsift_engine::stft::{Grid, Stft};

/// Hops DeepFilterNet3's estimate is behind the input in a [`Refined`] with DeepFilterNet3 in
/// front: its lookahead + 1.
pub const DFN3_DELAY: usize = super::dfn3::CONV_LOOKAHEAD + 1;

/// One stream's state.
struct Stream {
    /// The last `win` mix samples, oldest first (the engine's analysis frame).
    frame: Vec<f32>,
    /// Spectra of the last frames, by frame index modulo their count.
    spectra: Vec<Vec<Complex32>>,
    /// The last mix hops, by hop index modulo their count.
    mixes: Vec<Vec<f32>>,
    /// Overlap-add of the estimate for samples `[(f - 1) H, (f + 1) H)`, `f` the next front
    /// frame.
    ola: Vec<f32>,
    /// Hops pushed since reset.
    hops: u64,
    /// The next front frame expected.
    next_front: u64,
}

impl Stream {
    /// Empty buffers for `grid` keeping `ring` frames and hops.
    fn new(grid: Grid, ring: usize) -> Self {
        Self {
            frame: vec![0.0; grid.win],
            spectra: vec![vec![Complex32::default(); grid.bins]; ring],
            mixes: vec![vec![0.0; grid.hop]; ring],
            ola: vec![0.0; grid.win],
            hops: 0,
            next_front: 0,
        }
    }

    /// Starts again at frame 0 (zeros before it).
    fn reset(&mut self) {
        self.frame.fill(0.0);
        self.ola.fill(0.0);
        self.hops = 0;
        self.next_front = 0;
    }
}

/// DeepFilterNet3 followed by a refiner (see the module documentation).
pub struct Refined {
    /// The model in front (DeepFilterNet3; any model on the refiner's grid in tests).
    front: Box<dyn MaskModel>,
    /// The refiner on its inference thread.
    separator: Separator,
    /// What it reports.
    spec: ModelSpec,
    /// Hops the estimate is behind the input.
    delay: usize,
    /// The engine's STFT at the model rate.
    stft: Stft,
    /// Per-stream state.
    streams: Vec<Stream>,
    /// The front's mask.
    front_mask: Vec<Complex32>,
    /// Spectrum scratch.
    spectrum: Vec<Complex32>,
    /// The estimate's final hop.
    estimate: Vec<f32>,
}

impl Refined {
    /// Loads the refiner in `dir` (its `model.toml` must say `architecture = "dfn3-refiner"`)
    /// with DeepFilterNet3's embedded graphs in front, both for `streams` streams with `opts`,
    /// and the refiner's schedule with `overrides` (see [`Separator::load`]).
    pub fn load(
        dir: &Path,
        streams: usize,
        opts: &SessionOptions,
        overrides: &ScheduleOverrides,
    ) -> Result<Self, ModelError> {
        let desc = separator::describe(dir)?;
        if !desc.is_refiner() {
            return Err(ModelError::Description {
                path: dir.join(separator::desc::FILE_NAME),
                message: format!(
                    "architecture: `{}` is not a DeepFilterNet3 refiner (dfn3-refiner)",
                    desc.architecture.name()
                ),
            });
        }
        let front = Dfn3::embedded_with(streams, opts)?;
        let separator = Separator::load(dir, streams, opts, overrides)?;
        Self::new(Box::new(front), separator)
    }

    /// A refiner around `front` (its masks are applied to the mix to make the reference) and
    /// `separator` (a refiner: [`Separator::needs_reference`]); both must be on the same grid
    /// and serve the same streams.
    pub fn new(front: Box<dyn MaskModel>, separator: Separator) -> Result<Self, ModelError> {
        let (f, s) = (front.spec(), separator.spec());
        let settings = |message: String| ModelError::Settings {
            model: s.name.into(),
            message,
        };
        if (f.sample_rate, f.hop, f.bins) != (s.sample_rate, s.hop, s.bins) {
            return Err(settings(format!(
                "the front model `{}` runs at {} Hz with {}-sample hops and {} bins, the \
                 refiner at {} Hz with {} and {}",
                f.name, f.sample_rate, f.hop, f.bins, s.sample_rate, s.hop, s.bins
            )));
        }
        if !separator.needs_reference() {
            return Err(settings(
                "the separator takes no reference: it is not a dfn3-refiner".into(),
            ));
        }
        let grid = Grid::for_rate(s.sample_rate);
        if (grid.hop, grid.bins) != (s.hop, s.bins) {
            return Err(settings(format!(
                "the refiner's grid ({} / {}) is not the engine's at {} Hz",
                s.hop, s.bins, s.sample_rate
            )));
        }
        let delay = f.lookahead + 1;
        let ring = delay + 2;
        let streams = separator.streams();
        Ok(Self {
            front,
            separator,
            spec: ModelSpec {
                lookahead: delay + s.lookahead,
                ..s
            },
            delay,
            stft: Stft::new(grid),
            streams: (0..streams).map(|_| Stream::new(grid, ring)).collect(),
            front_mask: vec![Complex32::default(); grid.bins],
            spectrum: vec![Complex32::default(); grid.bins],
            estimate: vec![0.0; grid.hop],
        })
    }

    /// Hops DeepFilterNet3's estimate is behind the input (its lookahead + 1).
    pub fn delay_frames(&self) -> usize {
        self.delay
    }

    /// The refiner (its schedule, timing and description).
    pub fn separator(&self) -> &Separator {
        &self.separator
    }

    /// Resets this side's buffers.
    fn restart_streams(&mut self) {
        self.streams.iter_mut().for_each(Stream::reset);
    }
}

impl MaskModel for Refined {
    fn spec(&self) -> ModelSpec {
        self.spec
    }

    fn reset(&mut self) {
        self.front.reset();
        self.separator.reset();
        self.restart_streams();
    }

    /// DeepFilterNet3 carries on from its state as the silence left it (its own
    /// [`MaskModel::resume`]); the refiner and the buffers here start again.
    fn resume(&mut self) {
        self.front.resume();
        self.separator.resume();
        self.restart_streams();
    }

    fn push_hop(
        &mut self,
        stream: usize,
        hop: &[f32],
        mask: &mut [Complex32],
    ) -> Result<Option<u64>, ModelError> {
        let spec = self.spec;
        crate::check_push_hop(&spec, "refiner", self.streams.len(), stream, hop, mask)?;
        let h = spec.hop;
        // The engine's analysis of this hop's frame, kept for the front's mask.
        let st = &mut self.streams[stream];
        let ring = st.spectra.len() as u64;
        let n = st.hops;
        st.frame.copy_within(h.., 0);
        let win = st.frame.len();
        st.frame[win - h..].copy_from_slice(hop);
        self.stft
            .analyze(&st.frame, &mut st.spectra[(n % ring) as usize]);
        st.mixes[(n % ring) as usize].copy_from_slice(hop);
        st.hops += 1;
        let Some(f) = self.front.push_hop(stream, hop, &mut self.front_mask)? else {
            return Ok(None);
        };
        let st = &mut self.streams[stream];
        if f != st.next_front || f + self.delay as u64 != n + 1 {
            return Err(ModelError::Inference {
                graph: spec.name.into(),
                message: format!(
                    "the front model gave frame {f} after hop {n}, expected frame {} (its \
                     lookahead is {})",
                    st.next_front,
                    self.delay - 1
                ),
            });
        }
        st.next_front += 1;
        // The engine's identity path (beta 1, no floor): Y = X·G, a non-finite gain is 0.
        for ((y, x), g) in self
            .spectrum
            .iter_mut()
            .zip(&st.spectra[(f % ring) as usize])
            .zip(&self.front_mask)
        {
            let g = if g.norm_sqr().is_finite() {
                *g
            } else {
                Complex32::default()
            };
            *y = x * g;
        }
        self.stft.synthesize_add(&mut self.spectrum, &mut st.ola);
        // Samples [(f - 1) H, f H) are final: hop f - 1 of the estimate (none before frame 1).
        self.estimate.copy_from_slice(&st.ola[..h]);
        st.ola.copy_within(h.., 0);
        st.ola[win - h..].fill(0.0);
        let Some(e) = f.checked_sub(1) else {
            return Ok(None);
        };
        let mix = &st.mixes[(e % ring) as usize];
        self.separator
            .push_hop_with_reference(stream, mix, &self.estimate, mask)
    }

    fn provider(&self) -> String {
        let (a, b) = (self.front.provider(), self.separator.provider());
        if a == b {
            a
        } else {
            format!("{a} + {b}")
        }
    }

    fn notice(&self) -> Option<String> {
        match (self.front.notice(), self.separator.notice()) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::Fusion;
    use crate::separator::desc::MaskMode;
    use crate::separator::window::{Schedule, WindowModel};
    use crate::separator::WindowOptions;
    use crate::synthetic::SyntheticModel;
    use crate::worker::{Member, Plan};
    use voxsift_engine::{EngineConfig, EngineParams, RunMode};

    /// A refiner window model whose output is its reference (an identity on `dfn3`).
    struct IdentityOnReference;

    impl WindowModel for IdentityOnReference {
        fn run(&mut self, _: &[f32], _: &mut [f32]) -> Result<(), ModelError> {
            Err(ModelError::Inference {
                graph: "identity".into(),
                message: "a refiner needs its reference".into(),
            })
        }

        fn run_with_reference(
            &mut self,
            _: &[f32],
            reference: &[f32],
            output: &mut [f32],
        ) -> Result<(), ModelError> {
            output.copy_from_slice(reference);
            Ok(())
        }
    }

    const SR: u32 = 48_000;
    const H: usize = 480;

    fn schedule() -> Schedule {
        Schedule {
            window: 100 * H,
            step: 20 * H,
            lookahead: 10 * H,
            crossfade: 10 * H,
        }
    }

    fn front() -> Box<dyn MaskModel> {
        Box::new(SyntheticModel::with_rate(1, 2, SR).with_cutoff_hz(1_500.0))
    }

    fn refined(margin: usize) -> Refined {
        let sep = Separator::with_window_model(
            "identity-refiner",
            SR,
            1,
            schedule(),
            margin,
            Box::new(IdentityOnReference),
            WindowOptions {
                mask: MaskMode::Ratio,
                reference: true,
            },
        )
        .expect("starts");
        Refined::new(front(), sep).expect("fits")
    }

    fn signal(n: usize) -> Vec<f32> {
        let mut s = 0x1234_5678u32;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                let burst = if (i / 7_000) % 3 == 0 { 0.6 } else { 0.1 };
                burst * (s as f32 / u32::MAX as f32 - 0.5) + 0.2 * (i as f32 * 0.013).sin()
            })
            .collect()
    }

    /// Renders mono `x` offline through an engine whose worker runs `model`, in `block`s.
    fn render(model: Box<dyn MaskModel>, x: &[f32], block: usize) -> (Vec<f32>, usize) {
        let config = EngineConfig {
            sample_rate: SR,
            max_block: block,
            channels: 1,
            channel_mode: voxsift_engine::ChannelMode::Linked,
            run_mode: RunMode::Offline,
            handoff_ms: 2.5,
        };
        let plan = Plan {
            members: vec![Member {
                factory: Box::new(move || Ok(model)),
                weight: 1.0,
                expect: None,
            }],
            fusion: Fusion::Max,
            notice: None,
        };
        let (mut engine, mut worker) =
            crate::choice::start_plan(config, "test", plan).expect("starts");
        engine.set_params_immediate(EngineParams {
            wet: 1.0,
            beta: 1.0,
            floor_db: None,
            output_gain_db: 0.0,
            bypass: false,
        });
        let latency = engine.latency_samples();
        let total = x.len() + latency;
        let mut out = Vec::with_capacity(total);
        let mut buf = vec![0.0f32; block];
        let mut pos = 0;
        while pos < total {
            let n = block.min(total - pos);
            for (i, v) in buf[..n].iter_mut().enumerate() {
                *v = x.get(pos + i).copied().unwrap_or(0.0);
            }
            engine.process(&mut [&mut buf[..n]]);
            out.extend_from_slice(&buf[..n]);
            pos += n;
        }
        worker.stop();
        assert!(!engine.is_failed());
        (out[latency..].to_vec(), latency)
    }

    #[test]
    fn lookahead_is_the_estimate_delay_plus_the_separator_and_frames_are_the_streams() {
        let mut r = refined(2);
        let spec = r.spec();
        assert_eq!(r.delay_frames(), 3);
        let sep_la = r.separator().spec().lookahead;
        assert_eq!(spec.lookahead, 3 + sep_la);
        assert_eq!((spec.sample_rate, spec.hop, spec.bins), (SR, H, 481));
        let x = signal(300 * H);
        let mut mask = vec![Complex32::default(); spec.bins];
        for round in 0..2 {
            for (n, hop) in x.chunks(H).enumerate() {
                let got = r.push_hop(0, hop, &mut mask).expect("runs");
                assert_eq!(
                    got,
                    (n as u64).checked_sub(spec.lookahead as u64),
                    "round {round} hop {n}"
                );
            }
            if round == 0 {
                r.reset();
            } else {
                r.resume();
            }
        }
        assert!(r.push_hop(1, &x[..H], &mut mask).is_err());
        assert!(r.push_hop(0, &x[..10], &mut mask).is_err());
    }

    #[test]
    fn an_identity_refiner_renders_what_the_front_model_renders_alone() {
        let x = signal(400 * H + 123);
        let (alone, la_alone) = render(front(), &x, 512);
        let r = refined(1);
        let want_la = r.spec().lookahead;
        let (with, la_with) = render(Box::new(r), &x, 512);
        assert_eq!(
            la_with - la_alone,
            (want_la - 2) * H,
            "latency grows by the delay"
        );
        let peak = alone.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let err = alone
            .iter()
            .zip(&with)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        let power = |v: &[f32]| v.iter().map(|s| (*s as f64).powi(2)).sum::<f64>();
        let diff: Vec<f32> = alone.iter().zip(&with).map(|(a, b)| a - b).collect();
        let snr = 10.0 * (power(&alone) / power(&diff).max(1e-30)).log10();
        println!("identity refiner vs front alone: max error {err:.3e} of peak {peak:.3}, SNR {snr:.1} dB");
        assert!(peak > 0.05, "the front model passes something: {peak}");
        // Exact but for the ratio masks' clamp at |G| = 2 (DeepFilterNet3's own limit): the
        // estimate's spectrum is not the masked mix's where the front's mask jumps between
        // frames. A misalignment by one sample costs far more.
        assert!(snr > 60.0, "SNR {snr} dB");
        assert!(err < 5e-3 * peak, "max error {err} (peak {peak})");
        // Whole file, the other block size: the same.
        let (other, _) = render(Box::new(refined(1)), &x, 97);
        assert_eq!(other, with, "independent of the block size");
    }

    #[test]
    fn a_separator_without_reference_or_on_another_grid_is_refused() {
        let plain = Separator::with_model(
            "plain",
            SR,
            1,
            schedule(),
            0,
            Box::new(|i: &[f32], o: &mut [f32]| {
                o.copy_from_slice(i);
                Ok(())
            }),
        )
        .expect("starts");
        assert!(matches!(
            Refined::new(front(), plain),
            Err(ModelError::Settings { .. })
        ));
        let other_rate = Separator::with_window_model(
            "r",
            16_000,
            1,
            Schedule {
                window: 100 * 160,
                step: 20 * 160,
                lookahead: 0,
                crossfade: 0,
            },
            0,
            Box::new(IdentityOnReference),
            WindowOptions {
                mask: MaskMode::Ratio,
                reference: true,
            },
        )
        .expect("starts");
        assert!(matches!(
            Refined::new(front(), other_rate),
            Err(ModelError::Settings { .. })
        ));
    }
}
