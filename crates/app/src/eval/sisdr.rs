//! Scale-invariant SDR (Le Roux et al., "SDR – half-baked or well done?", ICASSP 2019), whole
//! signal, per octave band and per time segment.
//!
//! `SI-SDR = 10·log10(‖α·r‖² / ‖e − α·r‖²)` with `α = ⟨e, r⟩ / ‖r‖²`, no mean removal (the
//! convention of [`crate::metrics::si_sdr`] and `tools/bench/sisdr.py`).

use num_complex::Complex;
use realfft::RealFftPlanner;
use serde::Serialize;

/// SI-SDR in dB from the three inner products `⟨e, r⟩`, `‖r‖²` and `‖e‖²`.
///
/// `None` when the reference has no energy; `+∞` when the estimate is an exact multiple of the
/// reference; `−∞` when it is orthogonal to it.
pub fn si_sdr_from_products(er: f64, rr: f64, ee: f64) -> Option<f64> {
    if rr <= 0.0 || !rr.is_finite() {
        return None;
    }
    let target = er * er / rr;
    let noise = (ee - target).max(0.0);
    Some(if noise == 0.0 {
        f64::INFINITY
    } else if target == 0.0 {
        f64::NEG_INFINITY
    } else {
        10.0 * (target / noise).log10()
    })
}

/// SI-SDR in dB of `estimate` against `reference` over their common length.
///
/// `None` when the reference is silent over that length (all zeros or empty).
pub fn si_sdr(estimate: &[f64], reference: &[f64]) -> Option<f64> {
    let n = estimate.len().min(reference.len());
    let (e, r) = (&estimate[..n], &reference[..n]);
    let (mut er, mut rr, mut ee) = (0.0f64, 0.0f64, 0.0f64);
    for (a, b) in e.iter().zip(r) {
        er += a * b;
        rr += b * b;
        ee += a * a;
    }
    si_sdr_from_products(er, rr, ee)
}

/// An octave band: its nominal centre and its edges in Hz.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Band {
    /// Nominal centre frequency (63, 125, … 16000 Hz).
    pub center_hz: f64,
    /// Lower edge, `1000·2^(k − 1/2)` Hz.
    pub low_hz: f64,
    /// Upper edge, `1000·2^(k + 1/2)` Hz, or the Nyquist frequency if that is lower.
    pub high_hz: f64,
}

/// The octave bands (centres `1000·2^k` Hz, k = −4 … 4, i.e. 63 Hz to 16 kHz) whose lower
/// edge is below the Nyquist frequency of `sample_rate`.
pub fn octave_bands(sample_rate: u32) -> Vec<Band> {
    const NOMINAL: [f64; 9] = [
        63.0, 125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0,
    ];
    let nyquist = f64::from(sample_rate) / 2.0;
    NOMINAL
        .iter()
        .enumerate()
        .map(|(i, &center_hz)| {
            let exact = 1000.0 * 2f64.powi(i as i32 - 4);
            Band {
                center_hz,
                low_hz: exact / std::f64::consts::SQRT_2,
                high_hz: (exact * std::f64::consts::SQRT_2).min(nyquist),
            }
        })
        .filter(|b| b.low_hz < nyquist)
        .collect()
}

/// SI-SDR of one band (see [`per_band`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BandScore {
    /// The band.
    #[serde(flatten)]
    pub band: Band,
    /// The reference's energy in this band relative to its total energy, in dB.
    pub reference_share_db: f64,
    /// SI-SDR of the estimate in this band, dB; `None` where the reference has less than
    /// [`MIN_BAND_SHARE_DB`] of its energy in the band (the score would be meaningless).
    pub si_sdr: Option<f64>,
}

/// Below this share of the reference's energy (dB) a band is not scored.
pub const MIN_BAND_SHARE_DB: f64 = -50.0;

/// Per-band inner products of two signals from their spectra (Parseval).
struct Spectra {
    len: usize,
    est: Vec<Complex<f64>>,
    reference: Vec<Complex<f64>>,
}

impl Spectra {
    fn new(estimate: &[f64], reference: &[f64]) -> Self {
        let n = estimate.len().min(reference.len());
        let mut planner = RealFftPlanner::<f64>::new();
        let fft = planner.plan_fft_forward(n.max(2));
        let spectrum = |x: &[f64]| {
            let mut buf = vec![0.0; n.max(2)];
            buf[..n].copy_from_slice(&x[..n]);
            let mut out = fft.make_output_vec();
            // Lengths match the plan, so this cannot fail.
            let _ = fft.process(&mut buf, &mut out);
            out
        };
        Self {
            len: n.max(2),
            est: spectrum(estimate),
            reference: spectrum(reference),
        }
    }

    /// `(⟨e, r⟩, ‖r‖², ‖e‖²)` of the two signals restricted to bins `[lo, hi)`.
    fn products(&self, lo: usize, hi: usize) -> (f64, f64, f64) {
        let (mut er, mut rr, mut ee) = (0.0, 0.0, 0.0);
        let last = self.est.len() - 1;
        for k in lo..hi.min(self.est.len()) {
            // Bins other than DC and (for even lengths) Nyquist stand for two conjugate bins.
            let w = if k == 0 || (k == last && self.len.is_multiple_of(2)) {
                1.0
            } else {
                2.0
            };
            let (e, r) = (self.est[k], self.reference[k]);
            er += w * (e.re * r.re + e.im * r.im);
            rr += w * r.norm_sqr();
            ee += w * e.norm_sqr();
        }
        let n = self.len as f64;
        (er / n, rr / n, ee / n)
    }
}

/// SI-SDR per octave band ([`octave_bands`]).
///
/// Both signals are band-limited by an ideal (brick-wall) filter over the whole signal: one
/// DFT of the common length, the bins with `low ≤ f < high` kept. The inner products are
/// taken in the frequency domain (Parseval), so no inverse transform is needed.
pub fn per_band(estimate: &[f64], reference: &[f64], sample_rate: u32) -> Vec<BandScore> {
    let spectra = Spectra::new(estimate, reference);
    let (_, total, _) = spectra.products(0, spectra.est.len());
    let hz_per_bin = f64::from(sample_rate) / spectra.len as f64;
    octave_bands(sample_rate)
        .into_iter()
        .map(|band| {
            let lo = (band.low_hz / hz_per_bin).ceil() as usize;
            let hi = (band.high_hz / hz_per_bin).ceil() as usize;
            let (er, rr, ee) = spectra.products(lo, hi);
            let share = if total > 0.0 && rr > 0.0 {
                10.0 * (rr / total).log10()
            } else {
                f64::NEG_INFINITY
            };
            BandScore {
                band,
                reference_share_db: share,
                si_sdr: if share >= MIN_BAND_SHARE_DB {
                    si_sdr_from_products(er, rr, ee)
                } else {
                    None
                },
            }
        })
        .collect()
}

/// SI-SDR of one time segment (see [`per_segment`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentScore {
    /// Start of the segment, seconds.
    pub start_s: f64,
    /// End of the segment, seconds.
    pub end_s: f64,
    /// The reference's level in this segment relative to its loudest segment, dB.
    pub reference_db: f64,
    /// SI-SDR of the estimate in this segment, dB; `None` where the reference is more than
    /// [`SILENT_SEGMENT_DB`] below its loudest segment.
    pub si_sdr: Option<f64>,
}

/// Segments whose reference is this far (dB) below the loudest one are not scored.
pub const SILENT_SEGMENT_DB: f64 = -40.0;

/// SI-SDR per segment of `segment` samples (the last, shorter segment is kept if it is at
/// least half as long), each with its own scale factor.
pub fn per_segment(
    estimate: &[f64],
    reference: &[f64],
    sample_rate: u32,
    segment: usize,
) -> Vec<SegmentScore> {
    let n = estimate.len().min(reference.len());
    let segment = segment.max(1);
    let mut bounds = Vec::new();
    let mut start = 0;
    while start < n {
        let end = (start + segment).min(n);
        if end - start >= segment.div_ceil(2) || bounds.is_empty() {
            bounds.push((start, end));
        }
        start = end;
    }
    let energy = |x: &[f64]| x.iter().map(|v| v * v).sum::<f64>();
    let levels: Vec<f64> = bounds
        .iter()
        .map(|&(a, b)| energy(&reference[a..b]) / (b - a) as f64)
        .collect();
    let loudest = levels.iter().copied().fold(0.0f64, f64::max);
    let sr = f64::from(sample_rate);
    bounds
        .iter()
        .zip(&levels)
        .map(|(&(a, b), &level)| {
            let rel = if loudest > 0.0 && level > 0.0 {
                10.0 * (level / loudest).log10()
            } else {
                f64::NEG_INFINITY
            };
            SegmentScore {
                start_s: a as f64 / sr,
                end_s: b as f64 / sr,
                reference_db: rel,
                si_sdr: if rel >= SILENT_SEGMENT_DB {
                    si_sdr(&estimate[a..b], &reference[a..b])
                } else {
                    None
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn sine(n: usize, f: f64, sr: f64, a: f64) -> Vec<f64> {
        (0..n)
            .map(|i| a * (2.0 * PI * f * i as f64 / sr).sin())
            .collect()
    }

    use crate::eval::test_noise as noise;

    /// Removes from `e` its projection on `r`, then scales it to energy `energy`.
    fn orthogonal(e: &[f64], r: &[f64], energy: f64) -> Vec<f64> {
        let er: f64 = e.iter().zip(r).map(|(a, b)| a * b).sum();
        let rr: f64 = r.iter().map(|b| b * b).sum();
        let o: Vec<f64> = e.iter().zip(r).map(|(a, b)| a - er / rr * b).collect();
        let oo: f64 = o.iter().map(|v| v * v).sum();
        o.iter().map(|v| v * (energy / oo).sqrt()).collect()
    }

    #[test]
    fn known_energies_give_the_known_ratio() {
        // s + e with e ⟂ s and ‖s‖² / ‖e‖² = 100: exactly 20 dB, at any scale.
        let s = noise(4000, 1);
        let ss: f64 = s.iter().map(|v| v * v).sum();
        let e = orthogonal(&noise(4000, 2), &s, ss / 100.0);
        let est: Vec<f64> = s.iter().zip(&e).map(|(a, b)| a + b).collect();
        let v = si_sdr(&est, &s).expect("reference has energy");
        assert!((v - 20.0).abs() < 1e-9, "{v}");
        for scale in [1e-3, 0.5, -2.0, 1e4] {
            let scaled: Vec<f64> = est.iter().map(|v| v * scale).collect();
            let w = si_sdr(&scaled, &s).expect("reference has energy");
            assert!((w - 20.0).abs() < 1e-9, "scale {scale}: {w}");
        }
        // A scaled reference is also scale invariant on the reference side.
        let s3: Vec<f64> = s.iter().map(|v| 3.0 * v).collect();
        assert!((si_sdr(&est, &s3).unwrap_or(0.0) - 20.0).abs() < 1e-9);
    }

    #[test]
    fn edge_cases() {
        let s = noise(100, 3);
        assert_eq!(si_sdr(&s, &[0.0; 100]), None);
        assert_eq!(si_sdr(&s, &[]), None);
        assert_eq!(si_sdr(&s, &s), Some(f64::INFINITY));
        // Orthogonal up to rounding: hundreds of dB below zero.
        let o = orthogonal(&noise(100, 4), &s, 1.0);
        assert!(si_sdr(&o, &s).expect("reference has energy") < -200.0);
        assert_eq!(si_sdr_from_products(0.0, 1.0, 1.0), Some(f64::NEG_INFINITY));
    }

    #[test]
    fn octave_bands_cover_63_hz_to_nyquist() {
        let b = octave_bands(48_000);
        assert_eq!(b.len(), 9);
        assert!((b[4].low_hz - 707.106_781).abs() < 1e-5);
        assert!((b[4].high_hz - 1_414.213_562).abs() < 1e-5);
        assert_eq!(b[8].high_hz, 22_627.416_997_969_52);
        // At 16 kHz the top band (11.3 kHz up) starts above Nyquist and is left out, and the
        // 8 kHz band stops at Nyquist.
        let b = octave_bands(16_000);
        assert_eq!(b.len(), 8);
        assert_eq!(b[7].high_hz, 8000.0);
    }

    #[test]
    fn per_band_isolates_the_damaged_band() {
        // The reference is three tones (250 Hz, 1 kHz, 4 kHz) on exact DFT bins. The estimate
        // has an error tone at 1.1 kHz, 30 dB below the 1 kHz tone: the 1 kHz band scores
        // 30 dB, the other two are exact, and bands with no reference energy are not scored.
        let sr = 48_000;
        let n = 48_000;
        let f = f64::from(sr);
        let tones = [(250.0, 1.0), (1000.0, 0.5), (4000.0, 0.25)];
        let mut r = vec![0.0; n];
        for (hz, a) in tones {
            for (v, t) in r.iter_mut().zip(sine(n, hz, f, a)) {
                *v += t;
            }
        }
        let err = sine(n, 1100.0, f, 0.5 * 10f64.powf(-30.0 / 20.0));
        let est: Vec<f64> = r.iter().zip(&err).map(|(a, b)| a + b).collect();
        let bands = per_band(&est, &r, sr);
        let by_center = |c: f64| {
            bands
                .iter()
                .find(|b| b.band.center_hz == c)
                .expect("band exists")
        };
        let one_k = by_center(1000.0).si_sdr.expect("scored");
        assert!((one_k - 30.0).abs() < 1e-6, "{one_k}");
        assert!(by_center(250.0).si_sdr.expect("scored") > 100.0);
        assert!(by_center(4000.0).si_sdr.expect("scored") > 100.0);
        assert_eq!(by_center(63.0).si_sdr, None);
        assert_eq!(by_center(16000.0).si_sdr, None);
        // Shares: 1 : 0.25 : 0.0625 of the energy.
        let total = 1.0 + 0.25 + 0.0625;
        let share = by_center(250.0).reference_share_db;
        assert!(
            (share - 10.0 * (1.0f64 / total).log10()).abs() < 1e-9,
            "{share}"
        );
    }

    #[test]
    fn per_band_equals_whole_signal_on_a_band_limited_pair() {
        // All the energy of both signals in one band: that band's score is the plain SI-SDR.
        let sr = 48_000;
        let n = 9600;
        let r = sine(n, 1000.0, f64::from(sr), 1.0);
        let est: Vec<f64> = r
            .iter()
            .zip(sine(n, 1200.0, f64::from(sr), 0.1))
            .map(|(a, b)| a + b)
            .collect();
        let whole = si_sdr(&est, &r).expect("scored");
        let band = per_band(&est, &r, sr)
            .into_iter()
            .find(|b| b.band.center_hz == 1000.0)
            .and_then(|b| b.si_sdr)
            .expect("scored");
        assert!((whole - band).abs() < 1e-9, "{whole} vs {band}");
        assert!((whole - 20.0).abs() < 1e-9, "{whole}");
    }

    #[test]
    fn per_segment_finds_the_bad_second() {
        // 3 s; the error is only in the second second (10 dB there), the last second is silent
        // in the reference, and a trailing 0.3 s remainder is dropped.
        let sr = 8000;
        let seg = 8000;
        let n = 3 * seg + 2400;
        let mut r = noise(n, 5);
        for v in &mut r[2 * seg..] {
            *v = 0.0;
        }
        let mut est = r.clone();
        let e = orthogonal(&noise(seg, 6), &r[seg..2 * seg], {
            let rr: f64 = r[seg..2 * seg].iter().map(|v| v * v).sum();
            rr / 10.0
        });
        for (v, x) in est[seg..2 * seg].iter_mut().zip(&e) {
            *v += x;
        }
        let s = per_segment(&est, &r, sr, seg);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].si_sdr, Some(f64::INFINITY));
        let mid = s[1].si_sdr.expect("scored");
        assert!((mid - 10.0).abs() < 1e-9, "{mid}");
        assert_eq!(s[2].si_sdr, None);
        assert_eq!((s[1].start_s, s[1].end_s), (1.0, 2.0));
        // A remainder of at least half a segment is kept.
        let s = per_segment(&est[..2 * seg + 4000], &r[..2 * seg + 4000], sr, seg);
        assert_eq!(s.len(), 3);
        assert_eq!(s[2].end_s, 2.5);
    }
}
