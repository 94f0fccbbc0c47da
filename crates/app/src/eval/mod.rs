//! The evaluation suite: scores of a speech estimate against reference stems, and whole
//! evaluation sets rendered and scored in one go (`voxsift eval`, `voxsift eval-set`).
//!
//! - [`sisdr`]: SI-SDR (and its improvement over the mixture), per octave band and per time
//!   segment, so a user sees where it fails;
//! - [`bss`]: SDR, SIR and SAR (BSS Eval v3, 512-tap distortion filters, as
//!   `bss_eval_sources`);
//! - [`stoi`]: STOI, the published algorithm as `pystoi` computes it;
//! - [`residual`]: the music residual, speech damage (speech-only inputs) and music leak
//!   (music-only inputs);
//! - [`set`]: the layout of an evaluation folder, rendering and scoring every file;
//! - [`report`]: the JSON and Markdown reports;
//! - [`plot`]: PNG spectrograms and per-band / per-time plots.
//!
//! **Conventions.** Every signal is scored as its mono downmix (the mean of its channels, as
//! `tools/bench/sisdr.py` does by default), in `f64`, over the common length of the signals
//! compared, sample-aligned (no lag search; `voxsift render` output is sample-aligned with
//! its input). Undefined scores (a silent reference, too little speech for STOI) are `None`,
//! `null` in JSON. Everything is deterministic: the same inputs give the same numbers.

pub mod bss;
pub mod plot;
pub mod report;
pub mod residual;
pub mod set;
pub mod sisdr;
pub mod stoi;

use crate::io::{read_audio, IoError};
use crate::render::RenderError;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Errors from the evaluation suite.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// An audio file could not be read.
    #[error(transparent)]
    Read(#[from] IoError),
    /// Two signals that are compared have different sample rates.
    #[error("{}: {got} Hz, but the reference is at {want} Hz", path.display())]
    RateMismatch {
        /// The file whose rate differs.
        path: PathBuf,
        /// Its rate.
        got: u32,
        /// The reference's rate.
        want: u32,
    },
    /// A signal is too short for a metric.
    #[error("too short for {metric}: {detail}")]
    TooShort {
        /// The metric.
        metric: &'static str,
        /// Why.
        detail: String,
    },
    /// Invalid input or settings.
    #[error("{0}")]
    Invalid(String),
    /// A folder does not have the layout of an evaluation set.
    #[error("{}: {detail}", path.display())]
    Layout {
        /// The folder (or file) concerned.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Rendering an input failed.
    #[error("rendering {}: {source}", path.display())]
    Render {
        /// The input.
        path: PathBuf,
        /// Why.
        #[source]
        source: RenderError,
    },
    /// Writing a report or a plot failed.
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Drawing a plot failed.
    #[error("{}: cannot draw the plot: {detail}", path.display())]
    Plot {
        /// The PNG file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
}

/// Settings of the scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ScoreOptions {
    /// Length of the BSS Eval distortion filters ([`bss::DEFAULT_TAPS`]).
    pub bss_taps: usize,
    /// Length of the per-time segments, seconds.
    pub segment_seconds: f64,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        Self {
            bss_taps: bss::DEFAULT_TAPS,
            segment_seconds: 1.0,
        }
    }
}

impl ScoreOptions {
    /// The segment length in samples at `sample_rate` (at least 1).
    pub fn segment_samples(&self, sample_rate: u32) -> usize {
        ((self.segment_seconds * f64::from(sample_rate)).round() as usize).max(1)
    }
}

/// The mean of the channels of planar audio, in `f64` (empty without channels).
pub fn downmix(channels: &[Vec<f32>]) -> Vec<f64> {
    let n = channels.iter().map(Vec::len).min().unwrap_or(0);
    let k = channels.len().max(1) as f64;
    (0..n)
        .map(|i| channels.iter().map(|c| f64::from(c[i])).sum::<f64>() / k)
        .collect()
}

/// A mono signal: the downmix of an audio file, with its rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Mono {
    /// Samples.
    pub samples: Vec<f64>,
    /// Sample rate in Hz.
    pub sample_rate: u32,
}

impl Mono {
    /// Reads `path` and downmixes it.
    pub fn read(path: &Path) -> Result<Self, EvalError> {
        let audio = read_audio(path)?;
        Ok(Self {
            samples: downmix(&audio.channels),
            sample_rate: audio.sample_rate,
        })
    }

    /// Fails with [`EvalError::RateMismatch`] unless this signal (read from `path`) is at
    /// `want` Hz.
    pub fn expect_rate(&self, path: &Path, want: u32) -> Result<(), EvalError> {
        if self.sample_rate == want {
            Ok(())
        } else {
            Err(EvalError::RateMismatch {
                path: path.to_path_buf(),
                got: self.sample_rate,
                want,
            })
        }
    }
}

/// The signals of one scored estimate, mono, at one sample rate.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The estimate of the speech (e.g. a render of the mixture).
    pub estimate: &'a [f64],
    /// The reference speech.
    pub speech: &'a [f64],
    /// The reference of everything else (music, noise); when `None` and the mixture is given,
    /// it is taken as `mixture − speech`.
    pub other: Option<&'a [f64]>,
    /// The mixture the estimate was made from (for the improvements).
    pub mixture: Option<&'a [f64]>,
    /// Sample rate of all of them, Hz.
    pub sample_rate: u32,
}

/// The scores of an estimate against the reference stems (`None`: undefined or not
/// computable from the inputs given; see [`score_mixture`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MixtureScores {
    /// Length scored (the common length of the signals), seconds.
    pub seconds: f64,
    /// SI-SDR of the estimate, dB.
    pub si_sdr: Option<f64>,
    /// SI-SDR of the mixture, dB.
    pub si_sdr_mixture: Option<f64>,
    /// SI-SDR improvement: estimate minus mixture, dB.
    pub si_sdr_improvement: Option<f64>,
    /// SDR, SIR, SAR of the estimate (BSS Eval v3).
    pub bss: Option<bss::BssScores>,
    /// SDR, SIR, SAR of the mixture.
    pub bss_mixture: Option<bss::BssScores>,
    /// STOI of the estimate.
    pub stoi: Option<f64>,
    /// STOI of the mixture.
    pub stoi_mixture: Option<f64>,
    /// Music residual of the estimate, dB.
    pub residual_db: Option<f64>,
    /// Music residual of the mixture (`−SNR`), dB.
    pub residual_mixture_db: Option<f64>,
    /// True when the "other" reference was derived as `mixture − speech`.
    pub other_derived: bool,
    /// SI-SDR of the estimate per octave band.
    pub bands: Vec<sisdr::BandScore>,
    /// SI-SDR of the mixture per octave band (empty without the mixture).
    pub bands_mixture: Vec<sisdr::BandScore>,
    /// SI-SDR of the estimate per time segment.
    pub segments: Vec<sisdr::SegmentScore>,
    /// SI-SDR of the mixture per time segment (empty without the mixture).
    pub segments_mixture: Vec<sisdr::SegmentScore>,
}

/// Scores an estimate against the reference speech, and against the other stem and the
/// mixture where given (all over their common length).
///
/// SIR, SAR and the music residual need the other stem (given, or derived from the mixture);
/// the improvements and the mixture's own scores need the mixture. A metric that cannot be
/// computed (a silent reference, too little speech for STOI) is `None`.
pub fn score_mixture(inputs: &Inputs<'_>, opts: &ScoreOptions) -> MixtureScores {
    let mut n = inputs.estimate.len().min(inputs.speech.len());
    if let Some(o) = inputs.other {
        n = n.min(o.len());
    }
    if let Some(m) = inputs.mixture {
        n = n.min(m.len());
    }
    let est = &inputs.estimate[..n];
    let speech = &inputs.speech[..n];
    let mixture = inputs.mixture.map(|m| &m[..n]);
    let derived: Option<Vec<f64>> = match (inputs.other, mixture) {
        (None, Some(m)) => Some(m.iter().zip(speech).map(|(a, b)| a - b).collect()),
        _ => None,
    };
    let other: Option<&[f64]> = inputs.other.map(|o| &o[..n]).or(derived.as_deref());
    let sr = inputs.sample_rate;
    let seg = opts.segment_samples(sr);

    let si = sisdr::si_sdr(est, speech);
    let si_mix = mixture.and_then(|m| sisdr::si_sdr(m, speech));
    let bss_eval = {
        let refs: Vec<&[f64]> = std::iter::once(speech).chain(other).collect();
        bss::BssEval::new(&refs, opts.bss_taps).ok()
    };
    let stoi_of = |x: &[f64]| stoi::stoi(speech, x, sr).ok();
    let residual_of = |x: &[f64]| other.and_then(|o| residual::music_residual(x, speech, o));
    MixtureScores {
        seconds: n as f64 / f64::from(sr.max(1)),
        si_sdr: si,
        si_sdr_mixture: si_mix,
        si_sdr_improvement: si.zip(si_mix).map(|(a, b)| a - b),
        bss: bss_eval.as_ref().map(|b| b.score(est)),
        bss_mixture: bss_eval.as_ref().zip(mixture).map(|(b, m)| b.score(m)),
        stoi: stoi_of(est),
        stoi_mixture: mixture.and_then(stoi_of),
        residual_db: residual_of(est),
        residual_mixture_db: mixture.and_then(residual_of),
        other_derived: derived.is_some(),
        bands: sisdr::per_band(est, speech, sr),
        bands_mixture: mixture
            .map(|m| sisdr::per_band(m, speech, sr))
            .unwrap_or_default(),
        segments: sisdr::per_segment(est, speech, sr, seg),
        segments_mixture: mixture
            .map(|m| sisdr::per_segment(m, speech, sr, seg))
            .unwrap_or_default(),
    }
}

/// A deterministic pseudo-random sequence in [-1, 1] (xorshift), for the metric unit tests.
#[cfg(test)]
pub(crate) fn test_noise(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`test_noise`] in bursts at 3 Hz, so STOI finds speech-like modulation.
    fn noise(n: usize, seed: u64) -> Vec<f64> {
        test_noise(n, seed)
            .into_iter()
            .enumerate()
            .map(|(i, w)| {
                w * (i as f64 * 3.0 * std::f64::consts::TAU / 16_000.0)
                    .sin()
                    .abs()
            })
            .collect()
    }

    #[test]
    fn downmix_is_the_channel_mean() {
        let d = downmix(&[vec![1.0, 0.5, 0.25], vec![0.0, -0.5]]);
        assert_eq!(d, vec![0.5, 0.0]);
        assert!(downmix(&[]).is_empty());
    }

    #[test]
    fn mixture_scores_fit_together() {
        // mixture = s + o; estimate = s + 0.1·o: the improvement is the SI-SDR difference,
        // the residual drops by 20 dB, and a derived "other" gives the same numbers.
        let sr = 16_000;
        let n = 3 * 16_000;
        let s = noise(n, 1);
        let o = noise(n, 2);
        let mix: Vec<f64> = s.iter().zip(&o).map(|(a, b)| a + b).collect();
        let est: Vec<f64> = s.iter().zip(&o).map(|(a, b)| a + 0.1 * b).collect();
        let opts = ScoreOptions {
            bss_taps: 16,
            segment_seconds: 1.0,
        };
        let given = score_mixture(
            &Inputs {
                estimate: &est,
                speech: &s,
                other: Some(&o),
                mixture: Some(&mix),
                sample_rate: sr,
            },
            &opts,
        );
        let si = given.si_sdr.expect("defined");
        let si_mix = given.si_sdr_mixture.expect("defined");
        assert_eq!(given.si_sdr_improvement, Some(si - si_mix));
        let (r, r_mix) = (
            given.residual_db.expect("defined"),
            given.residual_mixture_db.expect("defined"),
        );
        assert!((r - r_mix + 20.0).abs() < 1e-9, "{r} {r_mix}");
        assert!(given.stoi.expect("defined") > given.stoi_mixture.expect("defined"));
        let bss = given.bss.expect("two references");
        assert!(bss.sdr > given.bss_mixture.expect("two references").sdr);
        assert_eq!(given.segments.len(), 3);
        assert_eq!(given.bands.len(), 8);
        assert!(!given.other_derived);
        let derived = score_mixture(
            &Inputs {
                estimate: &est,
                speech: &s,
                other: None,
                mixture: Some(&mix),
                sample_rate: sr,
            },
            &opts,
        );
        assert!(derived.other_derived);
        let close =
            |a: Option<f64>, b: Option<f64>| (a.unwrap_or(0.0) - b.unwrap_or(1.0)).abs() < 1e-9;
        assert!(close(derived.residual_db, given.residual_db));
        assert!(close(derived.bss.map(|b| b.sdr), given.bss.map(|b| b.sdr)));
        assert!(close(
            derived.bss.and_then(|b| b.sir),
            given.bss.and_then(|b| b.sir)
        ));
        // Without mixture or other: the plain SI-SDR, no residual, SDR only.
        let plain = score_mixture(
            &Inputs {
                estimate: &est,
                speech: &s,
                other: None,
                mixture: None,
                sample_rate: sr,
            },
            &opts,
        );
        assert_eq!(plain.si_sdr, given.si_sdr);
        assert_eq!((plain.residual_db, plain.si_sdr_improvement), (None, None));
        assert_eq!(plain.bss.and_then(|b| b.sir), None);
        assert!(plain.bands_mixture.is_empty() && plain.segments_mixture.is_empty());
    }
}
