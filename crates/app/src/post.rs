//! The speech-only post chain: optional, offline processing applied to a rendered file after
//! the engine, in this order:
//!
//! 1. **High-pass** (default 70 Hz): 4th-order Butterworth (24 dB/octave), two cascaded
//!    biquads (Q 0.5412 and 1.3066) by the bilinear transform with the corner prewarped, so
//!    the response is exactly `-3 dB` at the corner and
//!    `|H(f)|^2 = 1 / (1 + (tan(pi fc/fs) / tan(pi f/fs))^8)`. Causal (minimum phase).
//! 2. **High shelf** (default 12 kHz, -3 dB): the RBJ cookbook shelf with slope `S = 1`; the
//!    frequency is the shelf's midpoint (half the gain in dB there), the full gain is reached
//!    towards Nyquist (at 48 kHz: -2.7 dB at 16 kHz, -3.0 dB at 20 kHz for a -3 dB shelf).
//!    The default gentle cut tames the hiss and "air" that mask-based isolation leaves above
//!    the speech band.
//! 3. **Loudness normalisation** (default -16 LUFS integrated, true-peak ceiling -1 dBTP):
//!    the integrated loudness (ITU-R BS.1770 / EBU R128, gated) and the true peak (4x
//!    oversampled below 96 kHz) are measured with the `ebur128` crate, and one static gain is
//!    applied: `min(target - loudness, ceiling - true peak)`. When the ceiling is the smaller
//!    the file ends up quieter than the target ([`LoudnessOutcome::TruePeakLimited`]); there
//!    is no limiter. Channels are weighted as `ebur128` does by default (mono counts as one
//!    channel, as ffmpeg's `loudnorm` measures it; stereo L/R; 5.1 with the LFE ignored).
//!
//! Filters run in `f64`. A filter whose frequency is at or above 95 % of Nyquist for the
//! file's rate is skipped (and reported as such).
//!
//! A [`PostChain`] is also a preset: a TOML file with the same field names, every key
//! optional (missing keys take the defaults), unknown keys rejected:
//!
//! ```toml
//! highpass = true
//! highpass_hz = 70.0
//! shelf = true
//! shelf_hz = 12000.0
//! shelf_db = -3.0
//! loudness = true
//! lufs = -16.0
//! true_peak_db = -1.0
//! ```

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// Which stages run, and their settings. Serialised as a TOML preset (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostChain {
    /// Run the high-pass filter.
    pub highpass: bool,
    /// High-pass corner (-3 dB) in Hz.
    pub highpass_hz: f32,
    /// Run the high shelf.
    pub shelf: bool,
    /// High-shelf midpoint frequency in Hz (half the gain there).
    pub shelf_hz: f32,
    /// High-shelf gain in dB (negative cuts).
    pub shelf_db: f32,
    /// Run loudness normalisation.
    pub loudness: bool,
    /// Target integrated loudness in LUFS.
    pub lufs: f64,
    /// True-peak ceiling in dBTP.
    pub true_peak_db: f64,
}

/// Default high-pass corner in Hz.
pub const DEFAULT_HIGHPASS_HZ: f32 = 70.0;
/// Default high-shelf frequency in Hz.
pub const DEFAULT_SHELF_HZ: f32 = 12_000.0;
/// Default high-shelf gain in dB.
pub const DEFAULT_SHELF_DB: f32 = -3.0;
/// Default loudness target in LUFS.
pub const DEFAULT_LUFS: f64 = -16.0;
/// Default true-peak ceiling in dBTP.
pub const DEFAULT_TRUE_PEAK_DB: f64 = -1.0;

impl Default for PostChain {
    fn default() -> Self {
        Self {
            highpass: true,
            highpass_hz: DEFAULT_HIGHPASS_HZ,
            shelf: true,
            shelf_hz: DEFAULT_SHELF_HZ,
            shelf_db: DEFAULT_SHELF_DB,
            loudness: true,
            lufs: DEFAULT_LUFS,
            true_peak_db: DEFAULT_TRUE_PEAK_DB,
        }
    }
}

/// Errors from the post chain and its presets.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// A setting is out of range.
    #[error("post chain: {field} = {value} is out of range ({range})")]
    Invalid {
        /// The field (the preset key).
        field: &'static str,
        /// The value given.
        value: f64,
        /// The allowed range, in words.
        range: &'static str,
    },
    /// The preset file could not be read.
    #[error("{}: cannot read the preset: {source}", path.display())]
    ReadPreset {
        /// The preset path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The preset is not valid TOML or has unknown keys or wrong types.
    #[error("{}: invalid preset: {message}", path.display())]
    ParsePreset {
        /// The preset path (empty when parsed from a string).
        path: PathBuf,
        /// What the TOML parser said.
        message: String,
    },
    /// The chain could not be written as TOML.
    #[error("cannot write the preset: {0}")]
    WritePreset(String),
    /// There is no audio to process (no channels, or channels of different lengths).
    #[error("post chain: {0}")]
    BadAudio(String),
    /// The loudness meter refused the audio (sample rate or channel count out of its range).
    #[error("loudness meter: {0}")]
    Meter(String),
}

impl PostChain {
    /// The chain with every stage off (a base for switching single stages on).
    pub fn off() -> Self {
        Self {
            highpass: false,
            shelf: false,
            loudness: false,
            ..Self::default()
        }
    }

    /// Checks every setting (also the settings of stages that are off).
    pub fn validate(&self) -> Result<(), PostError> {
        let check = |field, value: f64, lo: f64, hi: f64, range| {
            if value.is_finite() && (lo..=hi).contains(&value) {
                Ok(())
            } else {
                Err(PostError::Invalid {
                    field,
                    value,
                    range,
                })
            }
        };
        check(
            "highpass_hz",
            f64::from(self.highpass_hz),
            1.0,
            20_000.0,
            "1 to 20000 Hz",
        )?;
        check(
            "shelf_hz",
            f64::from(self.shelf_hz),
            100.0,
            96_000.0,
            "100 to 96000 Hz",
        )?;
        check(
            "shelf_db",
            f64::from(self.shelf_db),
            -24.0,
            24.0,
            "-24 to +24 dB",
        )?;
        check("lufs", self.lufs, -70.0, 0.0, "-70 to 0 LUFS")?;
        check(
            "true_peak_db",
            self.true_peak_db,
            -30.0,
            0.0,
            "-30 to 0 dBTP",
        )?;
        Ok(())
    }

    /// Parses a TOML preset (missing keys take the defaults) and validates it.
    pub fn from_toml_str(text: &str) -> Result<Self, PostError> {
        Self::parse(text, Path::new(""))
    }

    /// Reads and validates a TOML preset file.
    pub fn load(path: &Path) -> Result<Self, PostError> {
        let text = std::fs::read_to_string(path).map_err(|source| PostError::ReadPreset {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Self, PostError> {
        let chain: Self = toml::from_str(text).map_err(|e| PostError::ParsePreset {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        chain.validate()?;
        Ok(chain)
    }

    /// The chain as a TOML preset (every key written).
    pub fn to_toml_string(&self) -> Result<String, PostError> {
        toml::to_string(self).map_err(|e| PostError::WritePreset(e.to_string()))
    }

    /// Runs the enabled stages over `channels` (planar, all of the same length) in place.
    pub fn apply(
        &self,
        channels: &mut [Vec<f32>],
        sample_rate: u32,
    ) -> Result<PostReport, PostError> {
        self.validate()?;
        if channels.is_empty() {
            return Err(PostError::BadAudio("no channels".into()));
        }
        let frames = channels[0].len();
        if channels.iter().any(|c| c.len() != frames) {
            return Err(PostError::BadAudio("channels of different lengths".into()));
        }
        if sample_rate == 0 {
            return Err(PostError::BadAudio("sample rate is 0".into()));
        }
        let fs = f64::from(sample_rate);
        let usable = |hz: f32| f64::from(hz) < 0.95 * fs / 2.0;

        let highpass = if !self.highpass {
            FilterOutcome::Off
        } else if !usable(self.highpass_hz) {
            FilterOutcome::SkippedAboveNyquist
        } else {
            let hz = f64::from(self.highpass_hz);
            for ch in channels.iter_mut() {
                let mut sections = butterworth_highpass4(hz, fs);
                run_cascade(&mut sections, ch);
            }
            FilterOutcome::Applied
        };

        let shelf = if !self.shelf {
            FilterOutcome::Off
        } else if !usable(self.shelf_hz) {
            FilterOutcome::SkippedAboveNyquist
        } else {
            let (hz, db) = (f64::from(self.shelf_hz), f64::from(self.shelf_db));
            for ch in channels.iter_mut() {
                let mut sections = [Biquad::high_shelf(hz, db, fs)];
                run_cascade(&mut sections, ch);
            }
            FilterOutcome::Applied
        };

        let loudness = if self.loudness {
            Some(self.normalise(channels, sample_rate)?)
        } else {
            None
        };

        Ok(PostReport {
            highpass,
            highpass_hz: self.highpass_hz,
            shelf,
            shelf_hz: self.shelf_hz,
            shelf_db: self.shelf_db,
            loudness,
        })
    }

    /// Measures, picks the gain, applies it and measures again.
    fn normalise(
        &self,
        channels: &mut [Vec<f32>],
        sample_rate: u32,
    ) -> Result<LoudnessReport, PostError> {
        let before = measure(channels, sample_rate)?;
        let target_gain = self.lufs - before.lufs;
        let ceiling_gain = self.true_peak_db - before.true_peak_db;
        let (gain_db, outcome) = if !before.lufs.is_finite() || !before.true_peak_db.is_finite() {
            (0.0, LoudnessOutcome::Unmeasurable)
        } else if ceiling_gain < target_gain {
            (ceiling_gain, LoudnessOutcome::TruePeakLimited)
        } else {
            (target_gain, LoudnessOutcome::OnTarget)
        };
        let after = if gain_db == 0.0 {
            before
        } else {
            let g = 10f64.powf(gain_db / 20.0);
            for ch in channels.iter_mut() {
                for x in ch.iter_mut() {
                    *x = (f64::from(*x) * g) as f32;
                }
            }
            measure(channels, sample_rate)?
        };
        Ok(LoudnessReport {
            input_lufs: before.lufs,
            input_true_peak_db: before.true_peak_db,
            gain_db,
            output_lufs: after.lufs,
            output_true_peak_db: after.true_peak_db,
            outcome,
        })
    }
}

/// What a filter stage did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterOutcome {
    /// Switched off.
    Off,
    /// Applied.
    Applied,
    /// Skipped: its frequency is at or above 95 % of Nyquist for this file.
    SkippedAboveNyquist,
}

/// How the loudness gain was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoudnessOutcome {
    /// The target loudness was reached.
    OnTarget,
    /// The true-peak ceiling set the gain: the output is quieter than the target.
    TruePeakLimited,
    /// Nothing above the loudness gate (silence, or shorter than one 400 ms block): no gain.
    Unmeasurable,
}

/// Loudness before and after normalisation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoudnessReport {
    /// Integrated loudness before the gain, in LUFS (`-inf` when unmeasurable).
    pub input_lufs: f64,
    /// True peak before the gain (highest over channels), in dBTP.
    pub input_true_peak_db: f64,
    /// The gain applied, in dB.
    pub gain_db: f64,
    /// Integrated loudness after the gain, measured, in LUFS.
    pub output_lufs: f64,
    /// True peak after the gain, measured, in dBTP.
    pub output_true_peak_db: f64,
    /// How the gain was chosen.
    pub outcome: LoudnessOutcome,
}

/// What the chain did to one file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PostReport {
    /// The high-pass stage.
    pub highpass: FilterOutcome,
    /// Its corner in Hz.
    pub highpass_hz: f32,
    /// The high-shelf stage.
    pub shelf: FilterOutcome,
    /// Its frequency in Hz.
    pub shelf_hz: f32,
    /// Its gain in dB.
    pub shelf_db: f32,
    /// Loudness normalisation, when it ran.
    pub loudness: Option<LoudnessReport>,
}

impl PostReport {
    /// True when the true-peak ceiling, not the loudness target, set the gain.
    pub fn true_peak_limited(&self) -> bool {
        self.loudness
            .is_some_and(|l| l.outcome == LoudnessOutcome::TruePeakLimited)
    }
}

impl fmt::Display for PostReport {
    /// One line, e.g. `hp 70 Hz, shelf 12000 Hz -3.0 dB, -16.0 LUFS (+4.2 dB), -3.1 dBTP`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        match self.highpass {
            FilterOutcome::Off => {}
            FilterOutcome::Applied => parts.push(format!("hp {} Hz", self.highpass_hz)),
            FilterOutcome::SkippedAboveNyquist => parts.push(format!(
                "hp {} Hz skipped (above Nyquist)",
                self.highpass_hz
            )),
        }
        match self.shelf {
            FilterOutcome::Off => {}
            FilterOutcome::Applied => parts.push(format!(
                "shelf {} Hz {:+.1} dB",
                self.shelf_hz, self.shelf_db
            )),
            FilterOutcome::SkippedAboveNyquist => parts.push(format!(
                "shelf {} Hz skipped (above Nyquist)",
                self.shelf_hz
            )),
        }
        if let Some(l) = self.loudness {
            parts.push(match l.outcome {
                LoudnessOutcome::OnTarget => format!(
                    "{:.1} LUFS ({:+.1} dB), {:.1} dBTP",
                    l.output_lufs, l.gain_db, l.output_true_peak_db
                ),
                LoudnessOutcome::TruePeakLimited => format!(
                    "true-peak limited: {:.1} LUFS ({:+.1} dB), {:.1} dBTP",
                    l.output_lufs, l.gain_db, l.output_true_peak_db
                ),
                LoudnessOutcome::Unmeasurable => {
                    "loudness unmeasurable (silent or under 400 ms): no gain".to_string()
                }
            });
        }
        if parts.is_empty() {
            f.write_str("post chain: every stage off")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// Integrated loudness and true peak of planar audio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// Integrated (gated) loudness in LUFS; `-inf` when nothing passes the gate.
    pub lufs: f64,
    /// Highest true peak over the channels in dBTP (`-inf` for digital silence).
    pub true_peak_db: f64,
}

/// Measures integrated loudness and true peak with `ebur128` (default channel map).
pub fn measure(channels: &[Vec<f32>], sample_rate: u32) -> Result<Measurement, PostError> {
    use ebur128::{EbuR128, Mode};
    let meter_err = |e: ebur128::Error| PostError::Meter(e.to_string());
    let n = u32::try_from(channels.len())
        .map_err(|_| PostError::Meter(format!("{} channels", channels.len())))?;
    let mut meter = EbuR128::new(n, sample_rate, Mode::I | Mode::TRUE_PEAK).map_err(meter_err)?;
    let frames = channels.iter().map(Vec::len).min().unwrap_or(0);
    // Chunks keep the meter's internal buffers small.
    const CHUNK: usize = 1 << 16;
    let mut pos = 0;
    while pos < frames {
        let end = (pos + CHUNK).min(frames);
        let refs: Vec<&[f32]> = channels.iter().map(|c| &c[pos..end]).collect();
        meter.add_frames_planar_f32(&refs).map_err(meter_err)?;
        pos = end;
    }
    let lufs = meter.loudness_global().map_err(meter_err)?;
    let mut peak = 0.0f64;
    for c in 0..n {
        peak = peak.max(meter.true_peak(c).map_err(meter_err)?);
    }
    Ok(Measurement {
        lufs,
        true_peak_db: 20.0 * peak.log10(),
    })
}

/// A biquad section (transposed direct form II, `f64`), coefficients normalised by `a0`.
#[derive(Debug, Clone, Copy)]
struct Biquad {
    b0: f64,
    b1: f64,
    b2: f64,
    a1: f64,
    a2: f64,
    s1: f64,
    s2: f64,
}

impl Biquad {
    fn new(b: [f64; 3], a: [f64; 3]) -> Self {
        Self {
            b0: b[0] / a[0],
            b1: b[1] / a[0],
            b2: b[2] / a[0],
            a1: a[1] / a[0],
            a2: a[2] / a[0],
            s1: 0.0,
            s2: 0.0,
        }
    }

    /// RBJ cookbook high-pass with quality `q`, corner `hz` (prewarped bilinear transform).
    fn high_pass(hz: f64, q: f64, fs: f64) -> Self {
        let w0 = 2.0 * std::f64::consts::PI * hz / fs;
        let (sin, cos) = w0.sin_cos();
        let alpha = sin / (2.0 * q);
        Self::new(
            [(1.0 + cos) / 2.0, -(1.0 + cos), (1.0 + cos) / 2.0],
            [1.0 + alpha, -2.0 * cos, 1.0 - alpha],
        )
    }

    /// RBJ cookbook high shelf, slope 1, midpoint `hz`, gain `db`.
    fn high_shelf(hz: f64, db: f64, fs: f64) -> Self {
        let a = 10f64.powf(db / 40.0);
        let w0 = 2.0 * std::f64::consts::PI * hz / fs;
        let (sin, cos) = w0.sin_cos();
        // alpha = sin/2 * sqrt((A + 1/A)(1/S - 1) + 2) with S = 1.
        let alpha = sin / 2.0 * std::f64::consts::SQRT_2;
        let k = 2.0 * a.sqrt() * alpha;
        Self::new(
            [
                a * ((a + 1.0) + (a - 1.0) * cos + k),
                -2.0 * a * ((a - 1.0) + (a + 1.0) * cos),
                a * ((a + 1.0) + (a - 1.0) * cos - k),
            ],
            [
                (a + 1.0) - (a - 1.0) * cos + k,
                2.0 * ((a - 1.0) - (a + 1.0) * cos),
                (a + 1.0) - (a - 1.0) * cos - k,
            ],
        )
    }

    #[inline]
    fn tick(&mut self, x: f64) -> f64 {
        let y = self.b0 * x + self.s1;
        self.s1 = self.b1 * x - self.a1 * y + self.s2;
        self.s2 = self.b2 * x - self.a2 * y;
        y
    }
}

/// The two sections of a 4th-order Butterworth high-pass: Q = 1 / (2 cos(k pi / 8)), k = 1, 3.
fn butterworth_highpass4(hz: f64, fs: f64) -> [Biquad; 2] {
    use std::f64::consts::PI;
    let q1 = 1.0 / (2.0 * (PI / 8.0).cos());
    let q2 = 1.0 / (2.0 * (3.0 * PI / 8.0).cos());
    [Biquad::high_pass(hz, q1, fs), Biquad::high_pass(hz, q2, fs)]
}

fn run_cascade(sections: &mut [Biquad], samples: &mut [f32]) {
    for x in samples.iter_mut() {
        let mut v = f64::from(*x);
        for s in sections.iter_mut() {
            v = s.tick(v);
        }
        *x = v as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn butterworth_qs() {
        let q1 = 1.0 / (2.0 * (std::f64::consts::PI / 8.0).cos());
        let q2 = 1.0 / (2.0 * (3.0 * std::f64::consts::PI / 8.0).cos());
        assert!((q1 - 0.541_196).abs() < 1e-5);
        assert!((q2 - 1.306_563).abs() < 1e-5);
    }

    #[test]
    fn zero_gain_shelf_is_identity() {
        let mut s = Biquad::high_shelf(12_000.0, 0.0, 48_000.0);
        for i in 0..100 {
            let x = (i as f64 * 0.37).sin();
            assert!((s.tick(x) - x).abs() < 1e-12);
        }
    }
}
