//! Short-Time Objective Intelligibility (STOI), as published by Taal, Hendriks, Heusdens and
//! Jensen ("An Algorithm for Intelligibility Prediction of Time–Frequency Weighted Noisy
//! Speech", IEEE TASLP 2011) and as the reference Python implementation `pystoi` computes it:
//!
//! 1. both signals are resampled to 10 kHz with an Octave-compatible polyphase resampler
//!    ([`resample_octave`]: Kaiser-windowed sinc, 60 dB rejection);
//! 2. silent frames are removed: 256-sample Hann frames with a hop of 128 whose clean-signal
//!    energy is more than 40 dB below the loudest clean frame are dropped from both signals,
//!    which are then overlap-added back;
//! 3. a 512-point STFT of 256-sample Hann frames (hop 128) is grouped into 15 one-third-octave
//!    bands from 150 Hz ([`band_bins`]);
//! 4. for every band and every run of 30 frames (384 ms), the processed envelope is scaled to
//!    the clean envelope's energy, clipped to at most `1 + 10^(15/20)` times the clean one
//!    (a signal-to-distortion floor of −15 dB), and correlated with the clean envelope;
//! 5. STOI is the mean of those correlations.

use super::EvalError;
use realfft::RealFftPlanner;

/// Internal sample rate of STOI, Hz.
pub const STOI_RATE: u32 = 10_000;
/// Frame length (and window) in samples at [`STOI_RATE`].
const FRAME: usize = 256;
/// Hop between frames.
const HOP: usize = FRAME / 2;
/// FFT size (frames are zero-padded).
const NFFT: usize = 512;
/// Number of one-third-octave bands.
const BANDS: usize = 15;
/// Centre frequency of the lowest band, Hz.
const MIN_FREQ: f64 = 150.0;
/// Frames per intermediate-intelligibility segment (30 × 12.8 ms = 384 ms).
const SEGMENT: usize = 30;
/// Lower bound of the signal-to-distortion ratio, dB.
const BETA_DB: f64 = -15.0;
/// Frames more than this far (dB) below the loudest clean frame are silent.
const DYN_RANGE_DB: f64 = 40.0;
/// The machine epsilon `pystoi` adds to norms (NumPy's `finfo(float).eps`).
const EPS: f64 = f64::EPSILON;

/// STOI of `processed` against `clean` (both at `sample_rate`, over their common length).
///
/// Returns a value in about `[0, 1]`; higher is more intelligible. Fails with
/// [`EvalError::TooShort`] when fewer than 30 non-silent frames (about 0.4 s of speech)
/// remain, where `pystoi` warns and returns `1e-5`.
pub fn stoi(clean: &[f64], processed: &[f64], sample_rate: u32) -> Result<f64, EvalError> {
    if sample_rate == 0 {
        return Err(EvalError::Invalid("STOI: the sample rate is 0".into()));
    }
    let n = clean.len().min(processed.len());
    let (x, y) = if sample_rate == STOI_RATE {
        (clean[..n].to_vec(), processed[..n].to_vec())
    } else {
        (
            resample_octave(&clean[..n], STOI_RATE, sample_rate),
            resample_octave(&processed[..n], STOI_RATE, sample_rate),
        )
    };
    let (x, y) = remove_silent_frames(&x, &y);
    let bins = band_bins();
    let x_bands = band_envelopes(&x, &bins);
    let y_bands = band_envelopes(&y, &bins);
    let frames = x_bands.len();
    if frames < SEGMENT {
        return Err(EvalError::TooShort {
            metric: "STOI",
            detail: format!(
                "{frames} non-silent frames after silence removal, at least {SEGMENT} needed"
            ),
        });
    }
    let clip = 1.0 + 10f64.powf(-BETA_DB / 20.0);
    let segments = frames - SEGMENT + 1;
    let mut sum = 0.0;
    let (mut xs, mut ys) = ([0.0; SEGMENT], [0.0; SEGMENT]);
    for m in 0..segments {
        for band in 0..BANDS {
            for k in 0..SEGMENT {
                xs[k] = x_bands[m + k][band];
                ys[k] = y_bands[m + k][band];
            }
            let scale = norm(&xs) / (norm(&ys) + EPS);
            for (yv, xv) in ys.iter_mut().zip(&xs) {
                *yv = (*yv * scale).min(xv * clip);
            }
            center(&mut xs);
            center(&mut ys);
            let (nx, ny) = (norm(&xs) + EPS, norm(&ys) + EPS);
            sum += xs
                .iter()
                .zip(&ys)
                .map(|(a, b)| (a / nx) * (b / ny))
                .sum::<f64>();
        }
    }
    Ok(sum / (segments * BANDS) as f64)
}

fn norm(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

fn center(x: &mut [f64]) {
    let mean = x.iter().sum::<f64>() / x.len() as f64;
    for v in x {
        *v -= mean;
    }
}

/// `n` points of a Hann window without its zero end points (MATLAB's `hanning(n)`).
fn hann(n: usize) -> Vec<f64> {
    (1..=n)
        .map(|k| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * k as f64 / (n + 1) as f64).cos())
        .collect()
}

/// Frame start positions: every `hop` samples while a whole frame fits, the last possible
/// frame excepted (the framing of `pystoi`: `range(0, len - frame, hop)`).
fn frame_starts(len: usize) -> impl Iterator<Item = usize> {
    (0..len.saturating_sub(FRAME)).step_by(HOP)
}

/// Drops the frames where `x` is silent from both signals and overlap-adds the rest.
fn remove_silent_frames(x: &[f64], y: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let w = hann(FRAME);
    let starts: Vec<usize> = frame_starts(x.len()).collect();
    let energy_db: Vec<f64> = starts
        .iter()
        .map(|&i| {
            let e: f64 = x[i..i + FRAME]
                .iter()
                .zip(&w)
                .map(|(v, w)| (v * w) * (v * w))
                .sum();
            20.0 * (e.sqrt() + EPS).log10()
        })
        .collect();
    let loudest = energy_db.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let kept: Vec<usize> = starts
        .iter()
        .zip(&energy_db)
        .filter(|(_, &e)| loudest - DYN_RANGE_DB - e < 0.0)
        .map(|(&i, _)| i)
        .collect();
    let out_len = if kept.is_empty() {
        0
    } else {
        (kept.len() - 1) * HOP + FRAME
    };
    let ola = |s: &[f64]| {
        let mut out = vec![0.0; out_len];
        for (j, &i) in kept.iter().enumerate() {
            for (k, (v, w)) in s[i..i + FRAME].iter().zip(&w).enumerate() {
                out[j * HOP + k] += v * w;
            }
        }
        out
    };
    (ola(x), ola(y))
}

/// The FFT bins `[low, high)` of each one-third-octave band: the band edges
/// `150·2^((2k ∓ 1)/6)` Hz rounded to the nearest bin of the 512-point FFT at 10 kHz.
pub fn band_bins() -> [(usize, usize); BANDS] {
    let hz_per_bin = f64::from(STOI_RATE) / NFFT as f64;
    let nearest = |hz: f64| {
        // The first bin at the smallest distance, as an argmin over the bins would give.
        let mut best = 0;
        for k in 0..=NFFT / 2 {
            if (k as f64 * hz_per_bin - hz).powi(2) < (best as f64 * hz_per_bin - hz).powi(2) {
                best = k;
            }
        }
        best
    };
    let mut out = [(0, 0); BANDS];
    for (k, b) in out.iter_mut().enumerate() {
        let k = k as f64;
        *b = (
            nearest(MIN_FREQ * 2f64.powf((2.0 * k - 1.0) / 6.0)),
            nearest(MIN_FREQ * 2f64.powf((2.0 * k + 1.0) / 6.0)),
        );
    }
    out
}

/// One-third-octave band magnitudes (square root of the summed bin powers), one row per
/// STFT frame.
fn band_envelopes(x: &[f64], bins: &[(usize, usize); BANDS]) -> Vec<[f64; BANDS]> {
    let w = hann(FRAME);
    let mut planner = RealFftPlanner::<f64>::new();
    let fft = planner.plan_fft_forward(NFFT);
    let mut buf = vec![0.0; NFFT];
    let mut spec = fft.make_output_vec();
    frame_starts(x.len())
        .map(|i| {
            buf.fill(0.0);
            for ((b, v), w) in buf.iter_mut().zip(&x[i..i + FRAME]).zip(&w) {
                *b = v * w;
            }
            // The buffers have the plan's lengths, so this cannot fail.
            let _ = fft.process(&mut buf, &mut spec);
            let mut row = [0.0; BANDS];
            for (r, &(lo, hi)) in row.iter_mut().zip(bins) {
                *r = spec[lo..hi]
                    .iter()
                    .map(|c| c.norm_sqr())
                    .sum::<f64>()
                    .sqrt();
            }
            row
        })
        .collect()
}

/// Resamples `x` from rate `q` to rate `p` the way GNU Octave's `resample` (and `pystoi`)
/// does: with `p/q` reduced to `up/down`, a Kaiser-windowed sinc low-pass with its cut-off at
/// `1/(2·max(up, down))` of the upsampled rate, 60 dB stop-band rejection and a transition a
/// tenth of the cut-off wide, normalised to unit sum and scaled by `up`, applied as a
/// zero-phase polyphase filter. The output has `ceil(len·up/down)` samples; the signal is
/// taken as zero outside.
pub fn resample_octave(x: &[f64], p: u32, q: u32) -> Vec<f64> {
    let g = gcd(p.max(1), q.max(1));
    let (up, down) = ((p.max(1) / g) as usize, (q.max(1) / g) as usize);
    if up == 1 && down == 1 {
        return x.to_vec();
    }
    let h = octave_filter(up, down);
    let half = (h.len() - 1) / 2;
    let n_out = (x.len() * up).div_ceil(down);
    let mut out = Vec::with_capacity(n_out);
    for m in 0..n_out {
        // Output m sits at m·down on the upsampled grid; input i sits at i·up, and contributes
        // h[half + m·down − i·up] when that index is inside the filter.
        let pos = m * down;
        let first = (pos.saturating_sub(half)).div_ceil(up);
        let last = ((pos + half) / up).min(x.len().saturating_sub(1));
        let mut acc = 0.0;
        if !x.is_empty() {
            for (i, xi) in x.iter().enumerate().take(last + 1).skip(first) {
                acc += xi * h[half + pos - i * up];
            }
        }
        out.push(acc);
    }
    out
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The anti-aliasing filter of [`resample_octave`], already scaled by `up`.
fn octave_filter(up: usize, down: usize) -> Vec<f64> {
    const REJECTION_DB: f64 = 60.0;
    let cutoff = 1.0 / (2.0 * up.max(down) as f64);
    let roll_off = cutoff / 10.0;
    let l = ((REJECTION_DB - 8.0) / (28.714 * roll_off)).ceil() as i64;
    // Kaiser's formula for the window parameter at a rejection above 50 dB.
    let beta = 0.1102 * (REJECTION_DB - 8.7);
    let len = 2 * l + 1;
    let i0_beta = bessel_i0(beta);
    let mut h: Vec<f64> = (-l..=l)
        .map(|t| {
            let arg = 2.0 * cutoff * t as f64;
            let sinc = if t == 0 {
                1.0
            } else {
                (std::f64::consts::PI * arg).sin() / (std::f64::consts::PI * arg)
            };
            let ideal = 2.0 * up as f64 * cutoff * sinc;
            let r = 2.0 * (t + l) as f64 / (len - 1) as f64 - 1.0;
            let window = bessel_i0(beta * (1.0 - r * r).max(0.0).sqrt()) / i0_beta;
            ideal * window
        })
        .collect();
    let sum: f64 = h.iter().sum();
    for v in &mut h {
        *v = *v / sum * up as f64;
    }
    h
}

/// The modified Bessel function of the first kind, order 0 (power series).
fn bessel_i0(x: f64) -> f64 {
    let q = x * x / 4.0;
    let (mut term, mut sum) = (1.0f64, 1.0f64);
    let mut k = 1.0;
    while term > sum * 1e-17 {
        term *= q / (k * k);
        sum += term;
        k += 1.0;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    /// Speech-like test signal: noise in syllable-rate bursts with pauses.
    fn babble(n: usize, sr: f64, seed: u64) -> Vec<f64> {
        crate::eval::test_noise(n, seed)
            .into_iter()
            .enumerate()
            .map(|(i, white)| {
                let t = i as f64 / sr;
                let envelope = (2.0 * PI * 4.0 * t).sin().max(0.0) * (0.6 + 0.4 * (PI * t).sin());
                white * envelope
            })
            .collect()
    }

    #[test]
    fn band_bins_match_the_published_table() {
        // The one-third-octave bins of pystoi's `thirdoct(10000, 512, 15, 150)`.
        let want = [
            (7, 9),
            (9, 11),
            (11, 14),
            (14, 17),
            (17, 22),
            (22, 27),
            (27, 34),
            (34, 43),
            (43, 55),
            (55, 69),
            (69, 87),
            (87, 109),
            (109, 138),
            (138, 174),
            (174, 219),
        ];
        assert_eq!(band_bins(), want);
    }

    #[test]
    fn filter_matches_octave_design() {
        // 48 kHz -> 10 kHz is up 5, down 24: L = ceil(52 / (28.714 / 480)) = 870 taps each
        // side, the centre tap is 2·5·(1/48) / sum · 5 with the sum of the unscaled filter
        // 4.999568553951379 (value from the reference implementation).
        let h = octave_filter(5, 24);
        assert_eq!(h.len(), 1741);
        let centre = 2.0 * 5.0 / 48.0 / 4.999_568_553_951_379 * 5.0;
        assert!((h[870] - centre).abs() < 1e-12, "{} vs {centre}", h[870]);
        assert!((h.iter().sum::<f64>() - 5.0).abs() < 1e-12);
    }

    #[test]
    fn resampler_keeps_a_passband_tone() {
        // A 1 kHz tone at 48 kHz becomes the same tone at 10 kHz (away from the edges, where
        // the signal is taken as zero outside), to within the 60 dB design's ripple.
        let x: Vec<f64> = (0..48_000)
            .map(|i| (2.0 * PI * 1000.0 * i as f64 / 48_000.0).sin())
            .collect();
        let y = resample_octave(&x, 10_000, 48_000);
        assert_eq!(y.len(), 10_000);
        for (m, v) in y.iter().enumerate().take(9_000).skip(1_000) {
            let want = (2.0 * PI * 1000.0 * m as f64 / 10_000.0).sin();
            assert!((v - want).abs() < 2e-3, "{m}: {v} vs {want}");
        }
        // A tone above the new Nyquist frequency is removed (60 dB design).
        let x: Vec<f64> = (0..48_000)
            .map(|i| (2.0 * PI * 7000.0 * i as f64 / 48_000.0).sin())
            .collect();
        let y = resample_octave(&x, 10_000, 48_000);
        let peak = y[1000..9000].iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(peak < 2e-3, "{peak}");
        // Equal rates: a copy; an odd length rounds the output up.
        assert_eq!(resample_octave(&[1.0, 2.0], 7, 7), vec![1.0, 2.0]);
        assert_eq!(resample_octave(&[0.0; 25], 10_000, 48_000).len(), 6);
    }

    #[test]
    fn identical_signals_score_one_at_any_scale() {
        let x = babble(3 * 16_000, 16_000.0, 1);
        let v = stoi(&x, &x, 16_000).expect("long enough");
        assert!((v - 1.0).abs() < 1e-9, "{v}");
        let scaled: Vec<f64> = x.iter().map(|v| 0.01 * v).collect();
        let w = stoi(&x, &scaled, 16_000).expect("long enough");
        assert!((w - 1.0).abs() < 1e-9, "{w}");
        // At the internal rate there is no resampling at all.
        let x10 = babble(20_000, 10_000.0, 2);
        assert!((stoi(&x10, &x10, 10_000).expect("long enough") - 1.0).abs() < 1e-9);
    }

    #[test]
    fn more_noise_scores_lower() {
        let sr = 16_000;
        let x = babble(4 * 16_000, f64::from(sr), 3);
        let noise = babble(4 * 16_000, f64::from(sr), 99);
        let noisy = |g: f64| -> Vec<f64> { x.iter().zip(&noise).map(|(a, b)| a + g * b).collect() };
        let scores: Vec<f64> = [0.1, 0.5, 1.0, 3.0]
            .iter()
            .map(|&g| stoi(&x, &noisy(g), sr).expect("long enough"))
            .collect();
        for w in scores.windows(2) {
            assert!(w[0] > w[1], "{scores:?}");
        }
        assert!(scores[0] > 0.99 && scores[3] < 0.85, "{scores:?}");
    }

    #[test]
    fn silence_removal_ignores_the_pauses() {
        // Long digital silence in the clean signal (and garbage in the processed one during
        // it) does not change the score: those frames are removed before anything else.
        let sr = 10_000;
        let x = babble(20_000, f64::from(sr), 4);
        let y: Vec<f64> = x.iter().map(|v| 0.5 * v).collect();
        let mut xp = x.clone();
        let mut yp = y.clone();
        xp.extend(std::iter::repeat_n(0.0, 10_000));
        yp.extend((0..10_000).map(|i| ((i * 7919) % 101) as f64 / 50.0 - 1.0));
        let a = stoi(&x, &y, sr).expect("long enough");
        let b = stoi(&xp, &yp, sr).expect("long enough");
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }

    #[test]
    fn too_short_is_an_error() {
        let x = babble(3000, 10_000.0, 5);
        assert!(matches!(
            stoi(&x, &x, 10_000),
            Err(EvalError::TooShort { .. })
        ));
        assert!(stoi(&[], &[], 48_000).is_err());
        assert!(stoi(&x, &x, 0).is_err());
    }
}
