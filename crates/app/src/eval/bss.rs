//! SDR, SIR and SAR: BSS Eval version 3 (Vincent, Gribonval and Févotte, "Performance
//! measurement in blind audio source separation", IEEE TASLP 2006), the variant of the MATLAB
//! `bss_eval_sources` 3.0 and of `mir_eval.separation.bss_eval_sources`: time-invariant
//! distortion filters of [`DEFAULT_TAPS`] (512) taps, one decomposition over the whole signal
//! (not the framewise v4 of `museval`), no mean removal, single channel.
//!
//! The estimate `e` of source `j` is decomposed by least-squares projections onto delayed
//! copies (delays `0 … taps − 1`) of the reference sources, with every signal taken as zero
//! outside its length:
//!
//! - `P_j e`, the projection onto the delays of the target `s_j` alone, is the target
//!   (`s_target = s_true + e_spat` in the paper's notation);
//! - `e_interf = P_all e − P_j e`, where `P_all` projects onto the delays of all the sources;
//! - `e_artif = e − P_all e`;
//!
//! and `SDR = 10·log10(‖P_j e‖² / ‖e − P_j e‖²)`,
//! `SIR = 10·log10(‖P_j e‖² / ‖e_interf‖²)`, `SAR = 10·log10(‖P_all e‖² / ‖e_artif‖²)`.
//! Since the projections are orthogonal, all the energies follow from the normal equations
//! `G·c = d` (`G` the Gram matrix of the delayed sources, `d` their correlations with `e`):
//! `‖P e‖² = cᵀd`, and `‖e − P e‖² = ‖e‖² − cᵀd`. The correlations are taken with FFTs.

use super::EvalError;
use num_complex::Complex;
use realfft::RealFftPlanner;
use serde::Serialize;

/// Filter length of `bss_eval_sources` (512 taps, 10.7 ms at 48 kHz).
pub const DEFAULT_TAPS: usize = 512;

/// SDR, SIR and SAR of one estimate, dB.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BssScores {
    /// Source-to-distortion ratio: target against everything else.
    pub sdr: f64,
    /// Source-to-interference ratio: target against the other sources' part; `None` with a
    /// single reference source.
    pub sir: Option<f64>,
    /// Source-to-artifacts ratio: all sources' part against what no source explains; `None`
    /// with a single reference source (it would equal SDR).
    pub sar: Option<f64>,
}

/// BSS Eval set up for a set of reference sources, the target first; several estimates can be
/// scored against it, the matrix factorisations being shared.
pub struct BssEval {
    taps: usize,
    len: usize,
    fft_len: usize,
    /// Spectra of the zero-padded references.
    spectra: Vec<Vec<Complex<f64>>>,
    /// Cholesky factor of the Gram matrix of the target's delays.
    target: Cholesky,
    /// Cholesky factor of the Gram matrix of all the sources' delays.
    all: Option<Cholesky>,
}

impl BssEval {
    /// Prepares the decomposition onto `references` (`references[0]` the target source, the
    /// others the interferers) over their common length, with `taps`-tap filters.
    pub fn new(references: &[&[f64]], taps: usize) -> Result<Self, EvalError> {
        if references.is_empty() {
            return Err(EvalError::Invalid("BSS Eval needs a reference".into()));
        }
        if taps == 0 {
            return Err(EvalError::Invalid("BSS Eval needs at least one tap".into()));
        }
        let len = references.iter().map(|r| r.len()).min().unwrap_or(0);
        if len == 0 {
            return Err(EvalError::TooShort {
                metric: "BSS Eval",
                detail: "the references are empty".into(),
            });
        }
        let fft_len = (len + taps - 1).next_power_of_two().max(2);
        let mut planner = RealFftPlanner::<f64>::new();
        let forward = planner.plan_fft_forward(fft_len);
        let inverse = planner.plan_fft_inverse(fft_len);
        let spectra: Vec<Vec<Complex<f64>>> = references
            .iter()
            .map(|r| spectrum(&forward, &r[..len], fft_len))
            .collect();
        // Cross-correlations c_ij(k) = Σ_u s_i(u)·s_j(u + k) for |k| < taps; the Gram block
        // (i, j) is G[a][b] = Σ_t s_i(t − a)·s_j(t − b) = c_ij(a − b).
        let n = references.len();
        let size = n * taps;
        let mut gram = vec![0.0; size * size];
        for i in 0..n {
            for j in i..n {
                let c = correlate(&inverse, &spectra[i], &spectra[j], fft_len);
                for a in 0..taps {
                    for b in 0..taps {
                        let lag = a as isize - b as isize;
                        let v = c[lag.rem_euclid(fft_len as isize) as usize];
                        gram[(i * taps + a) * size + j * taps + b] = v;
                        gram[(j * taps + b) * size + i * taps + a] = v;
                    }
                }
            }
        }
        let target_gram: Vec<f64> = (0..taps)
            .flat_map(|a| gram[a * size..a * size + taps].to_vec())
            .collect();
        let target = Cholesky::new(target_gram, taps)?;
        let all = if n > 1 {
            Some(Cholesky::new(gram, size)?)
        } else {
            None
        };
        Ok(Self {
            taps,
            len,
            fft_len,
            spectra,
            target,
            all,
        })
    }

    /// SDR, SIR and SAR of `estimate` (over the references' length; a shorter estimate is
    /// taken as zero past its end).
    pub fn score(&self, estimate: &[f64]) -> BssScores {
        let n = estimate.len().min(self.len);
        let e = &estimate[..n];
        let mut planner = RealFftPlanner::<f64>::new();
        let forward = planner.plan_fft_forward(self.fft_len);
        let inverse = planner.plan_fft_inverse(self.fft_len);
        let es = spectrum(&forward, e, self.fft_len);
        // d_i[a] = Σ_t s_i(t − a)·e(t) = c_ie(a).
        let d: Vec<f64> = self
            .spectra
            .iter()
            .flat_map(|s| {
                let c = correlate(&inverse, s, &es, self.fft_len);
                c[..self.taps].to_vec()
            })
            .collect();
        let energy: f64 = e.iter().map(|v| v * v).sum();
        let target = self.target.projected_energy(&d[..self.taps]);
        let db = |num: f64, den: f64| {
            if den <= 0.0 {
                f64::INFINITY
            } else if num <= 0.0 {
                f64::NEG_INFINITY
            } else {
                10.0 * (num / den).log10()
            }
        };
        let sdr = db(target, energy - target);
        match &self.all {
            None => BssScores {
                sdr,
                sir: None,
                sar: None,
            },
            Some(all) => {
                // Rounding can put the nested projection a hair above the outer one.
                let total = all.projected_energy(&d).max(target);
                BssScores {
                    sdr,
                    sir: Some(db(target, total - target)),
                    sar: Some(db(total, energy - total)),
                }
            }
        }
    }
}

/// The spectrum of `x` zero-padded to `fft_len`.
fn spectrum(
    fft: &std::sync::Arc<dyn realfft::RealToComplex<f64>>,
    x: &[f64],
    fft_len: usize,
) -> Vec<Complex<f64>> {
    let mut buf = vec![0.0; fft_len];
    buf[..x.len()].copy_from_slice(x);
    let mut out = fft.make_output_vec();
    // The buffers have the plan's lengths, so this cannot fail.
    let _ = fft.process(&mut buf, &mut out);
    out
}

/// `c(k) = Σ_u a(u)·b(u + k)` for all `k` modulo `fft_len` (negative lags at the end).
fn correlate(
    ifft: &std::sync::Arc<dyn realfft::ComplexToReal<f64>>,
    a: &[Complex<f64>],
    b: &[Complex<f64>],
    fft_len: usize,
) -> Vec<f64> {
    let mut prod: Vec<Complex<f64>> = a.iter().zip(b).map(|(x, y)| x.conj() * y).collect();
    // A real signal's DC and Nyquist bins are real; drop the rounding residue the inverse
    // transform would reject.
    prod[0].im = 0.0;
    if let Some(last) = prod.last_mut() {
        last.im = 0.0;
    }
    let mut out = ifft.make_output_vec();
    // The buffers have the plan's lengths, so this cannot fail.
    let _ = ifft.process(&mut prod, &mut out);
    let scale = 1.0 / fft_len as f64;
    for v in &mut out {
        *v *= scale;
    }
    out
}

/// A Cholesky factorisation `G = L·Lᵀ` of a symmetric positive (semi-)definite matrix.
struct Cholesky {
    n: usize,
    /// Lower triangle, row-major.
    l: Vec<f64>,
}

impl Cholesky {
    /// Factorises `g` (`n × n`, row-major). A rank-deficient `G` (e.g. a band-limited or
    /// partly silent reference, whose delayed copies are nearly collinear) gets a diagonal
    /// load of `1e-10` of its mean diagonal, which changes the projected energies by far less
    /// than the printed precision.
    fn new(g: Vec<f64>, n: usize) -> Result<Self, EvalError> {
        let mean_diag = (0..n).map(|i| g[i * n + i]).sum::<f64>() / n as f64;
        if mean_diag <= 0.0 || !mean_diag.is_finite() {
            return Err(EvalError::Invalid(
                "BSS Eval: a reference source is silent".into(),
            ));
        }
        for load in [0.0, 1e-10, 1e-7] {
            if let Some(l) = Self::factor(&g, n, load * mean_diag) {
                return Ok(Self { n, l });
            }
        }
        Err(EvalError::Invalid(
            "BSS Eval: the reference sources are linearly dependent".into(),
        ))
    }

    fn factor(g: &[f64], n: usize, load: f64) -> Option<Vec<f64>> {
        let mut l = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                let mut sum = g[i * n + j];
                if i == j {
                    sum += load;
                }
                let (ri, rj) = (&l[i * n..i * n + j], &l[j * n..j * n + j]);
                sum -= ri.iter().zip(rj).map(|(a, b)| a * b).sum::<f64>();
                if i == j {
                    if sum <= 0.0 || !sum.is_finite() {
                        return None;
                    }
                    l[i * n + i] = sum.sqrt();
                } else {
                    l[i * n + j] = sum / l[j * n + j];
                }
            }
        }
        Some(l)
    }

    /// `dᵀ·G⁻¹·d`, the energy of the projection whose correlations are `d`: `‖L⁻¹·d‖²`.
    fn projected_energy(&self, d: &[f64]) -> f64 {
        let n = self.n;
        let mut y = vec![0.0; n];
        for i in 0..n {
            let s: f64 = self.l[i * n..i * n + i]
                .iter()
                .zip(&y[..i])
                .map(|(a, b)| a * b)
                .sum();
            y[i] = (d[i] - s) / self.l[i * n + i];
        }
        y.iter().map(|v| v * v).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::eval::test_noise as noise;

    fn energy(x: &[f64]) -> f64 {
        x.iter().map(|v| v * v).sum()
    }

    /// `x` filtered by the causal FIR `h`, same length.
    fn fir(x: &[f64], h: &[f64]) -> Vec<f64> {
        (0..x.len())
            .map(|t| {
                h.iter()
                    .enumerate()
                    .filter(|(k, _)| *k <= t)
                    .map(|(k, c)| c * x[t - k])
                    .sum()
            })
            .collect()
    }

    /// Adds `parts` (each `(gain, signal)`) together.
    fn mix(parts: &[(f64, &[f64])]) -> Vec<f64> {
        let n = parts.iter().map(|p| p.1.len()).min().unwrap_or(0);
        (0..n)
            .map(|t| parts.iter().map(|(g, s)| g * s[t]).sum())
            .collect()
    }

    #[test]
    fn filtered_target_is_not_distortion() {
        // A short FIR of the target (within the taps) is entirely "target": SDR and SAR are
        // (near) infinite, and a pure interferer mix gives SIR = the energy ratio.
        let n = 8000;
        let (mut s, o) = (noise(n, 1), noise(n, 2));
        // The estimate is cut at the references' length: end the target with silence so the
        // filter's tail is not cut off.
        s[n - 8..].fill(0.0);
        let bss = BssEval::new(&[&s, &o], 32).expect("valid");
        let filtered = fir(&s, &[0.5, 0.3, -0.2, 0.1]);
        let r = bss.score(&filtered);
        assert!(r.sdr > 80.0, "{r:?}");
        assert!(r.sar.expect("two sources") > 80.0, "{r:?}");
        // e = s + g·o with ‖s‖²/‖g·o‖² = 10 (10 dB): SIR = SDR ≈ 10 dB, no artifacts. The
        // sources are white but not exactly orthogonal at every lag, so allow 0.05 dB.
        let g = (energy(&s) / energy(&o) / 10.0).sqrt();
        let r = bss.score(&mix(&[(1.0, &s), (g, &o)]));
        let sir = r.sir.expect("two sources");
        assert!((sir - 10.0).abs() < 0.05, "{r:?}");
        assert!((r.sdr - 10.0).abs() < 0.05, "{r:?}");
        assert!(r.sar.expect("two sources") > 80.0, "{r:?}");
    }

    #[test]
    fn artifacts_are_what_no_source_explains() {
        // e = s + a with `a` a third, independent signal at −20 dB: SAR ≈ 20 dB, SDR ≈ 20 dB,
        // and no interference (SIR very high up to the chance correlation of white noise).
        let n = 16_000;
        let (s, o, a) = (noise(n, 3), noise(n, 4), noise(n, 5));
        let bss = BssEval::new(&[&s, &o], 16).expect("valid");
        let g = (energy(&s) / energy(&a) / 100.0).sqrt();
        let r = bss.score(&mix(&[(1.0, &s), (g, &a)]));
        assert!((r.sar.expect("two sources") - 20.0).abs() < 0.1, "{r:?}");
        assert!((r.sdr - 20.0).abs() < 0.1, "{r:?}");
        assert!(r.sir.expect("two sources") > 35.0, "{r:?}");
        // Interference and artifacts together: 1/SDR = 1/SIR + 1/SAR in linear terms when
        // both are much smaller than the target (here −10 dB and −20 dB).
        let gi = (energy(&s) / energy(&o) / 10.0).sqrt();
        let r = bss.score(&mix(&[(1.0, &s), (gi, &o), (g, &a)]));
        let lin = |db: f64| 10f64.powf(-db / 10.0);
        let want = -10.0 * (0.1 + 0.01f64).log10();
        assert!((r.sdr - want).abs() < 0.1, "{r:?} vs {want}");
        assert!((lin(r.sir.expect("two")) - 0.1).abs() < 0.005, "{r:?}");
    }

    #[test]
    fn exact_decomposition_with_orthogonal_sources() {
        // Sources that are orthogonal at every delay (disjoint supports, separated by more than
        // the filter length) make the decomposition exact: with e = s + 0.1·o + 0.05·a, a
        // supported apart from both, SIR is exactly 20 dB and SAR is
        // 10·log10((‖s‖² + 0.01‖o‖²) / (0.0025‖a‖²)).
        let n = 3000;
        let taps = 8;
        let mut s = vec![0.0; n];
        let mut o = vec![0.0; n];
        let mut a = vec![0.0; n];
        s[..900].copy_from_slice(&noise(900, 6));
        o[1000..1900].copy_from_slice(&noise(900, 7));
        a[2000..2900].copy_from_slice(&noise(900, 8));
        let (es, eo, ea) = (energy(&s), energy(&o), energy(&a));
        let bss = BssEval::new(&[&s, &o], taps).expect("valid");
        let r = bss.score(&mix(&[(1.0, &s), (0.1, &o), (0.05, &a)]));
        let sir = 10.0 * (es / (0.01 * eo)).log10();
        let sar = 10.0 * ((es + 0.01 * eo) / (0.0025 * ea)).log10();
        let sdr = 10.0 * (es / (0.01 * eo + 0.0025 * ea)).log10();
        assert!((r.sir.expect("two") - sir).abs() < 1e-6, "{r:?} vs {sir}");
        assert!((r.sar.expect("two") - sar).abs() < 1e-6, "{r:?} vs {sar}");
        assert!((r.sdr - sdr).abs() < 1e-6, "{r:?} vs {sdr}");
    }

    #[test]
    fn single_source_has_only_sdr_and_scale_does_not_matter() {
        let n = 4000;
        let (s, a) = (noise(n, 9), noise(n, 10));
        let bss = BssEval::new(&[&s], 8).expect("valid");
        let e = mix(&[(1.0, &s), (0.1, &a)]);
        let r = bss.score(&e);
        assert_eq!((r.sir, r.sar), (None, None));
        let scaled: Vec<f64> = e.iter().map(|v| -7.0 * v).collect();
        assert!((bss.score(&scaled).sdr - r.sdr).abs() < 1e-9);
        let want = 10.0 * (energy(&s) / (0.01 * energy(&a))).log10();
        assert!((r.sdr - want).abs() < 0.1, "{r:?} vs {want}");
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(BssEval::new(&[], 8).is_err());
        assert!(BssEval::new(&[&[1.0, 2.0]], 0).is_err());
        assert!(BssEval::new(&[&[]], 8).is_err());
        assert!(BssEval::new(&[&[0.0; 100]], 8).is_err());
    }
}
