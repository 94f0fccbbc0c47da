//! Music residual, speech damage and music leak.
//!
//! - **Music residual**: the estimate is fitted by least squares (no delays) as
//!   `a·speech + b·other + e`, and the residual is `20·log10(|b|·‖other‖ / (|a|·‖speech‖))`:
//!   how loud the music left in the estimate is relative to the speech in it. The mixture
//!   itself scores `−SNR`; lower is better. The same definition as `tools/bench/sisdr.py`.
//! - **Speech damage** (speech-only inputs): SI-SDR of the output against the input, and the
//!   level change; clean speech should come through unharmed.
//! - **Music leak** (music-only inputs): the output's level relative to the input's, dB;
//!   for the whole file and for the worst segment.

use super::sisdr;
use serde::Serialize;

/// The least-squares fit `estimate ≈ a·speech + b·other`: `(a, b)`, or `None` when the two
/// references are silent or collinear.
pub fn fit(estimate: &[f64], speech: &[f64], other: &[f64]) -> Option<(f64, f64)> {
    let n = estimate.len().min(speech.len()).min(other.len());
    let (mut ss, mut so, mut oo, mut se, mut oe) = (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for t in 0..n {
        let (e, s, o) = (estimate[t], speech[t], other[t]);
        ss += s * s;
        so += s * o;
        oo += o * o;
        se += s * e;
        oe += o * e;
    }
    let det = ss * oo - so * so;
    // Also catches NaN (non-finite input).
    let well_posed = det > 1e-12 * ss * oo;
    if !well_posed {
        return None;
    }
    Some(((se * oo - oe * so) / det, (oe * ss - se * so) / det))
}

/// The music residual in dB (see the module documentation).
///
/// `None` when the fit is undefined ([`fit`]) or the estimate holds no speech (`a = 0`);
/// `−∞` when it holds no music (`b = 0`).
pub fn music_residual(estimate: &[f64], speech: &[f64], other: &[f64]) -> Option<f64> {
    let (a, b) = fit(estimate, speech, other)?;
    let n = estimate.len().min(speech.len()).min(other.len());
    let norm = |x: &[f64]| x[..n].iter().map(|v| v * v).sum::<f64>().sqrt();
    let den = a.abs() * norm(speech);
    let num = b.abs() * norm(other);
    if den == 0.0 {
        None
    } else if num == 0.0 {
        Some(f64::NEG_INFINITY)
    } else {
        Some(20.0 * (num / den).log10())
    }
}

/// The level of `output` relative to `input` over their common length, dB (energy ratio).
/// `None` when the input is silent.
pub fn level_change_db(output: &[f64], input: &[f64]) -> Option<f64> {
    let n = output.len().min(input.len());
    let energy = |x: &[f64]| x[..n].iter().map(|v| v * v).sum::<f64>();
    let (o, i) = (energy(output), energy(input));
    if i <= 0.0 {
        None
    } else if o <= 0.0 {
        Some(f64::NEG_INFINITY)
    } else {
        Some(10.0 * (o / i).log10())
    }
}

/// Scores of a speech-only input (how much the isolator harms clean speech).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpeechDamage {
    /// SI-SDR of the output against the input, dB (higher is better).
    pub si_sdr: Option<f64>,
    /// Output level relative to input, dB.
    pub level_change_db: Option<f64>,
    /// STOI of the output with the input as the clean reference.
    pub stoi: Option<f64>,
}

/// Speech damage of `output` given the speech-only `input` (both mono, same rate).
pub fn speech_damage(output: &[f64], input: &[f64], sample_rate: u32) -> SpeechDamage {
    SpeechDamage {
        si_sdr: sisdr::si_sdr(output, input),
        level_change_db: level_change_db(output, input),
        stoi: super::stoi::stoi(input, output, sample_rate).ok(),
    }
}

/// Scores of a music-only input (how much music gets through).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MusicLeak {
    /// Output level relative to input over the whole file, dB (lower is better).
    pub leak_db: Option<f64>,
    /// The largest leak over segments of [`super::ScoreOptions::segment_seconds`] whose
    /// input is within 40 dB of the input's loudest segment, dB.
    pub worst_segment_leak_db: Option<f64>,
}

/// Music leak of `output` given the music-only `input`, with segments of `segment` samples.
pub fn music_leak(output: &[f64], input: &[f64], segment: usize) -> MusicLeak {
    let n = output.len().min(input.len());
    let segment = segment.max(1);
    let mut levels = Vec::new();
    let mut start = 0;
    while start < n {
        let end = (start + segment).min(n);
        let e_in: f64 = input[start..end].iter().map(|v| v * v).sum();
        levels.push((start, end, e_in / (end - start) as f64));
        start = end;
    }
    let loudest = levels.iter().map(|l| l.2).fold(0.0f64, f64::max);
    let worst = levels
        .iter()
        .filter(|l| l.2 > 0.0 && 10.0 * (l.2 / loudest).log10() >= sisdr::SILENT_SEGMENT_DB)
        .filter_map(|&(a, b, _)| level_change_db(&output[a..b], &input[a..b]))
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    MusicLeak {
        leak_db: level_change_db(output, input),
        worst_segment_leak_db: worst,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::eval::test_noise as noise;

    #[test]
    fn fit_recovers_the_gains_and_the_residual_is_their_ratio() {
        // est = 0.8·s + 0.05·o + e with e orthogonal to both: a = 0.8, b = 0.05 exactly, and
        // the residual is 20·log10(0.05‖o‖ / (0.8‖s‖)).
        let n = 5000;
        let (s, o) = (noise(n, 1), noise(n, 2));
        let mut e = noise(n, 3);
        // Make e orthogonal to span{s, o} (Gram–Schmidt through the fit itself).
        if let Some((a, b)) = fit(&e, &s, &o) {
            for t in 0..n {
                e[t] -= a * s[t] + b * o[t];
            }
        }
        let est: Vec<f64> = (0..n).map(|t| 0.8 * s[t] + 0.05 * o[t] + e[t]).collect();
        let (a, b) = fit(&est, &s, &o).expect("well posed");
        assert!(
            (a - 0.8).abs() < 1e-12 && (b - 0.05).abs() < 1e-12,
            "{a} {b}"
        );
        let norm = |x: &[f64]| x.iter().map(|v| v * v).sum::<f64>().sqrt();
        let want = 20.0 * (0.05 * norm(&o) / (0.8 * norm(&s))).log10();
        let got = music_residual(&est, &s, &o).expect("defined");
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
        // The mixture itself scores −SNR.
        let mixture: Vec<f64> = (0..n).map(|t| s[t] + o[t]).collect();
        let snr = 20.0 * (norm(&s) / norm(&o)).log10();
        let r = music_residual(&mixture, &s, &o).expect("defined");
        assert!((r + snr).abs() < 1e-9, "{r} vs {snr}");
        // Scale does not matter; pure speech has no residual.
        let scaled: Vec<f64> = est.iter().map(|v| 3.0 * v).collect();
        assert!((music_residual(&scaled, &s, &o).expect("defined") - want).abs() < 1e-9);
        assert_eq!(music_residual(&s, &s, &o), Some(f64::NEG_INFINITY));
    }

    #[test]
    fn degenerate_fits_are_none() {
        let s = noise(100, 4);
        assert_eq!(fit(&s, &s, &s), None);
        assert_eq!(fit(&s, &[0.0; 100], &s), None);
        let o = noise(100, 5);
        assert_eq!(
            music_residual(&o.iter().map(|_| 0.0).collect::<Vec<_>>(), &s, &o),
            None
        );
    }

    #[test]
    fn speech_damage_and_music_leak() {
        let sr = 10_000;
        let x: Vec<f64> = noise(20_000, 6)
            .iter()
            .enumerate()
            .map(|(i, v)| v * (i as f64 * 0.002).sin().abs())
            .collect();
        // Half the amplitude: −6.02 dB, and SI-SDR / STOI are untouched.
        let half: Vec<f64> = x.iter().map(|v| 0.5 * v).collect();
        let d = speech_damage(&half, &x, sr);
        assert_eq!(d.si_sdr, Some(f64::INFINITY));
        assert!((d.level_change_db.expect("defined") + 20.0 * 2f64.log10()).abs() < 1e-9);
        assert!((d.stoi.expect("long enough") - 1.0).abs() < 1e-9);
        // Music at −20 dB in the first half and −40 dB in the second: the whole-file leak is
        // the energy mean, the worst segment is −20 dB.
        let mut out = x.clone();
        for (i, v) in out.iter_mut().enumerate() {
            *v *= if i < 10_000 { 0.1 } else { 0.01 };
        }
        let leak = music_leak(&out, &x, 10_000);
        let (e1, e2): (f64, f64) = (
            x[..10_000].iter().map(|v| v * v).sum(),
            x[10_000..].iter().map(|v| v * v).sum(),
        );
        let want = 10.0 * ((0.01 * e1 + 0.0001 * e2) / (e1 + e2)).log10();
        assert!((leak.leak_db.expect("defined") - want).abs() < 1e-9);
        assert!((leak.worst_segment_leak_db.expect("defined") + 20.0).abs() < 1e-9);
        assert_eq!(level_change_db(&x, &[0.0; 10]), None);
    }
}
