//! The spectral parts of the separator, both computed in Rust outside the graph:
//!
//! - [`HybridStft`]: HTDemucs's own spectrogram and its inverse (`HTDemucs._spec` and
//!   `_ispec` in demucs/htdemucs.py), bit-close to torch: periodic Hann, hop `n_fft / 4`,
//!   `normalized=True` (`1 / sqrt(n_fft)`), centre frames with reflect padding after the
//!   model's own reflect padding of `3 hop / 2` on the left (more on the right up to a whole
//!   number of hops), the Nyquist bin and the two frames at each end dropped.
//! - [`MaskFrames`]: turns a mix and its speech estimate into mask frames on the engine's
//!   own grid at the model rate (see [`voxsift_engine::stft`]), so that mask frame `g` covers
//!   the same samples as the engine's frame `g`: `[(g - 1) hop, (g + 1) hop)`.

use super::desc::MaskMode;
use num_complex::Complex32;
use realfft::{ComplexToReal, RealToComplex};
use std::f64::consts::PI;
use std::sync::Arc;
use voxsift_engine::stft::{Grid, Stft};

/// Index into a signal of length `n` after torch's reflect padding (`x[-1] = x[1]`),
/// for an index `i` relative to the signal's first sample (a signal of one sample repeats).
fn reflect(i: isize, n: usize) -> usize {
    if n < 2 {
        return 0;
    }
    let n = n as isize;
    let period = 2 * (n - 1);
    let mut j = i.rem_euclid(period);
    if j >= n {
        j = period - j;
    }
    j as usize
}

/// HTDemucs's spectrogram and inverse for one `n_fft`. Complex-as-channels layout as
/// HTDemucs's `_magnitude` (`cac=True`) builds it: channel `2c` is the real part of audio
/// channel `c`, `2c + 1` its imaginary part; then `n_fft / 2` bins, then frames.
///
/// Memory: plans and scratch are allocated in [`HybridStft::new`]; [`HybridStft::spec`] and
/// [`HybridStft::ispec`] allocate only when a longer signal than before comes in.
pub struct HybridStft {
    /// FFT size.
    n_fft: usize,
    /// Hop, `n_fft / 4`.
    hop: usize,
    /// Periodic Hann window.
    window: Vec<f32>,
    /// Forward plan.
    fwd: Arc<dyn RealToComplex<f32>>,
    /// Inverse plan.
    inv: Arc<dyn ComplexToReal<f32>>,
    /// Time-domain frame.
    time: Vec<f32>,
    /// One spectrum (`n_fft / 2 + 1`).
    bins: Vec<Complex32>,
    /// FFT scratch.
    scratch: Vec<Complex32>,
    /// Overlap-add buffer of the inverse.
    ola: Vec<f32>,
    /// Window-square envelope of the inverse.
    env: Vec<f32>,
}

impl HybridStft {
    /// Plans an STFT of `n_fft` points (a multiple of 8, so that `3 hop / 2` is whole).
    pub fn new(n_fft: usize) -> Self {
        // The engine's planner: one copy of the FFT code in the plugin.
        let (fwd, inv) = voxsift_engine::stft::plan_real_fft(n_fft);
        let scratch = fwd.get_scratch_len().max(inv.get_scratch_len());
        // torch.hann_window(n_fft) (periodic): 0.5 - 0.5 cos(2 pi n / N).
        let window = (0..n_fft)
            .map(|i| (0.5 - 0.5 * (2.0 * PI * i as f64 / n_fft as f64).cos()) as f32)
            .collect();
        Self {
            n_fft,
            hop: n_fft / 4,
            window,
            fwd,
            inv,
            time: vec![0.0; n_fft],
            bins: vec![Complex32::default(); n_fft / 2 + 1],
            scratch: vec![Complex32::default(); scratch],
            ola: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Bins per frame in the graph's layout: `n_fft / 2`.
    pub fn bins(&self) -> usize {
        self.n_fft / 2
    }

    /// Frames for `len` samples: `ceil(len / hop)`.
    pub fn frames(&self, len: usize) -> usize {
        len.div_ceil(self.hop)
    }

    /// Values of [`HybridStft::spec`] for `channels` channels of `len` samples.
    pub fn spec_len(&self, channels: usize, len: usize) -> usize {
        2 * channels * self.bins() * self.frames(len)
    }

    /// The spectrogram of `x` (`channels` planar channels of `len = x.len() / channels`
    /// samples, `len > 3 hop / 2`) into `out` (`[2C, n_fft/2, ceil(len/hop)]`).
    pub fn spec(&mut self, x: &[f32], channels: usize, out: &mut [f32]) {
        let len = x.len() / channels;
        let (hl, nb) = (self.hop, self.bins());
        let le = self.frames(len);
        let pad = hl / 2 * 3;
        let norm = 1.0 / (self.n_fft as f32).sqrt();
        // HTDemucs pads x by `pad` on the left (and `pad + le*hl - len` on the right) by
        // reflection; torch.stft's centre padding of n_fft/2 = 2 hl is never reached by the
        // frames kept (2..2+le), so kept frame j starts at padded index j*hl, i.e. at
        // x[j*hl - pad].
        for c in 0..channels {
            let xc = &x[c * len..(c + 1) * len];
            for j in 0..le {
                let start = (j * hl) as isize - pad as isize;
                for (i, (t, w)) in self.time.iter_mut().zip(&self.window).enumerate() {
                    let k = start + i as isize;
                    let v = if (0..len as isize).contains(&k) {
                        xc[k as usize]
                    } else {
                        xc[reflect(k, len)]
                    };
                    *t = v * w;
                }
                let _ = self.fwd.process_with_scratch(
                    &mut self.time,
                    &mut self.bins,
                    &mut self.scratch,
                );
                for (f, b) in self.bins[..nb].iter().enumerate() {
                    out[((2 * c) * nb + f) * le + j] = b.re * norm;
                    out[((2 * c + 1) * nb + f) * le + j] = b.im * norm;
                }
            }
        }
    }

    /// The inverse of [`HybridStft::spec`] (`_ispec`): `z` is `[2C, n_fft/2, frames]`, `out`
    /// gets `channels` planar channels of `len` samples (`frames = ceil(len / hop)`).
    pub fn ispec(&mut self, z: &[f32], channels: usize, len: usize, out: &mut [f32]) {
        let (hl, nb, n) = (self.hop, self.bins(), self.n_fft);
        let le = self.frames(len);
        let pad = hl / 2 * 3;
        // _ispec adds a zero Nyquist bin and two zero frames at each end, then
        // torch.istft(center=True, normalized=True): frame j of le + 4 sits at j*hl in a
        // buffer whose first n/2 samples are dropped, divided by the window-square envelope
        // of all le + 4 frames; then `pad` samples are dropped.
        let total = n + hl * (le + 3);
        self.ola.clear();
        self.ola.resize(total, 0.0);
        self.env.clear();
        self.env.resize(total, 0.0);
        for j in 0..le + 4 {
            for (e, w) in self.env[j * hl..j * hl + n].iter_mut().zip(&self.window) {
                *e += w * w;
            }
        }
        // sqrt(n) undoes the normalisation, 1/n is irfft's own scale.
        let scale = 1.0 / (n as f32).sqrt();
        for c in 0..channels {
            self.ola.fill(0.0);
            for j in 0..le {
                for (f, b) in self.bins[..nb].iter_mut().enumerate() {
                    *b = Complex32::new(
                        z[((2 * c) * nb + f) * le + j],
                        z[((2 * c + 1) * nb + f) * le + j],
                    );
                }
                // irfft ignores the imaginary parts of DC and Nyquist, as torch does.
                self.bins[0].im = 0.0;
                self.bins[nb] = Complex32::default();
                let _ = self.inv.process_with_scratch(
                    &mut self.bins,
                    &mut self.time,
                    &mut self.scratch,
                );
                let at = (j + 2) * hl;
                for ((o, t), w) in self.ola[at..at + n]
                    .iter_mut()
                    .zip(&self.time)
                    .zip(&self.window)
                {
                    *o += t * scale * w;
                }
            }
            let first = n / 2 + pad;
            for (t, o) in out[c * len..(c + 1) * len].iter_mut().enumerate() {
                let e = self.env[first + t];
                *o = if e > 1e-11 {
                    self.ola[first + t] / e
                } else {
                    0.0
                };
            }
        }
    }
}

/// Added to the mask's denominator, on the scale of the un-normalised FFT.
pub const MASK_EPS: f32 = 1e-12;

/// The largest magnitude of a ratio mask's gain (as DeepFilterNet3's own gains).
pub const MAX_RATIO: f32 = 2.0;

/// A bin of the mix whose power is at most this fraction of the frame's mean bin power is
/// negligible for a ratio mask, which is 0 there: an f32 FFT's rounding error is about 1e-7
/// of the frame's level per bin (1e-14 in power), so such bins hold little but rounding noise,
/// and what the estimate has there (at most [`MAX_RATIO`] times as much) is as small.
pub const RATIO_NEGLIGIBLE: f32 = 1e-12;

/// Turns a stream's mix `X` and speech estimate `V` into mask frames on the engine's grid at
/// the model rate. [`MaskMode::Wiener`]: `M = |V|^2 / (|V|^2 + |X - V|^2 + eps)` per bin, a
/// real gain in `[0, 1]`. [`MaskMode::Ratio`]: the complex gain `G = V / X`, its magnitude
/// clamped to [`MAX_RATIO`] keeping the phase, and 0 where `|X|^2` is negligible
/// ([`RATIO_NEGLIGIBLE`]): applied to `X` by the engine and overlap-added, it reproduces the
/// estimate's waveform wherever the clamp does not act.
///
/// Memory: allocated in [`MaskFrames::new`]; `push` does not allocate.
pub struct MaskFrames {
    /// The engine's STFT at the model rate.
    stft: Stft,
    /// The grid.
    grid: Grid,
    /// The last `win` mix samples, oldest first.
    mix: Vec<f32>,
    /// The last `win` estimate samples, oldest first.
    est: Vec<f32>,
    /// Samples of the current hop already in (at the end of `mix` / `est`).
    fill: usize,
    /// Spectrum of the mix frame.
    xs: Vec<Complex32>,
    /// Spectrum of the estimate frame.
    vs: Vec<Complex32>,
    /// Frame scratch.
    frame: Vec<f32>,
    /// Mask scratch.
    mask: Vec<Complex32>,
    /// Frames emitted since reset.
    frames: u64,
    /// How masks are made from the spectra.
    mode: MaskMode,
}

impl MaskFrames {
    /// Wiener mask frames at `sample_rate` (hop 10 ms, window 2 hops, the engine's window).
    pub fn new(sample_rate: u32) -> Self {
        Self::with_mode(sample_rate, MaskMode::Wiener)
    }

    /// Mask frames of `mode` at `sample_rate`.
    pub fn with_mode(sample_rate: u32, mode: MaskMode) -> Self {
        let grid = Grid::for_rate(sample_rate);
        Self {
            stft: Stft::new(grid),
            grid,
            mix: vec![0.0; grid.win],
            est: vec![0.0; grid.win],
            fill: 0,
            xs: vec![Complex32::default(); grid.bins],
            vs: vec![Complex32::default(); grid.bins],
            frame: vec![0.0; grid.win],
            mask: vec![Complex32::default(); grid.bins],
            frames: 0,
            mode,
        }
    }

    /// How it makes masks.
    pub fn mode(&self) -> MaskMode {
        self.mode
    }

    /// The grid.
    pub fn grid(&self) -> Grid {
        self.grid
    }

    /// Starts a new stream (zeros before it).
    pub fn reset(&mut self) {
        self.mix.fill(0.0);
        self.est.fill(0.0);
        self.fill = 0;
        self.frames = 0;
    }

    /// Takes the next `mix` samples and their estimate `est` (same length); calls
    /// `emit(g, mask)` for every frame `g` completed, in order.
    pub fn push(&mut self, mix: &[f32], est: &[f32], mut emit: impl FnMut(u64, &[Complex32])) {
        let (hop, win) = (self.grid.hop, self.grid.win);
        for (&x, &v) in mix.iter().zip(est) {
            // The current hop fills the last `hop` samples of the frame.
            self.mix[win - hop + self.fill] = x;
            self.est[win - hop + self.fill] = v;
            self.fill += 1;
            if self.fill < hop {
                continue;
            }
            self.frame.copy_from_slice(&self.mix);
            self.stft.analyze(&self.frame, &mut self.xs);
            self.frame.copy_from_slice(&self.est);
            self.stft.analyze(&self.frame, &mut self.vs);
            match self.mode {
                MaskMode::Wiener => {
                    for ((m, x), v) in self.mask.iter_mut().zip(&self.xs).zip(&self.vs) {
                        let pv = v.norm_sqr();
                        let pa = (x - v).norm_sqr();
                        *m = Complex32::new(pv / (pv + pa + MASK_EPS), 0.0);
                    }
                }
                MaskMode::Ratio => ratio_masks(&self.xs, &self.vs, &mut self.mask),
            }
            emit(self.frames, &self.mask);
            self.frames += 1;
            self.mix.copy_within(hop.., 0);
            self.est.copy_within(hop.., 0);
            self.fill = 0;
        }
    }
}

/// `mask = V / X` per bin, clamped to [`MAX_RATIO`] in magnitude (phase kept), 0 where `|X|^2`
/// is negligible ([`RATIO_NEGLIGIBLE`] of the frame's mean bin power, or not a normal f32).
pub fn ratio_masks(xs: &[Complex32], vs: &[Complex32], mask: &mut [Complex32]) {
    let mean = xs.iter().map(|x| x.norm_sqr()).sum::<f32>() / xs.len().max(1) as f32;
    let negligible = (RATIO_NEGLIGIBLE * mean).max(f32::MIN_POSITIVE);
    for ((m, x), v) in mask.iter_mut().zip(xs).zip(vs) {
        let px = x.norm_sqr();
        *m = if px > negligible && px.is_finite() {
            let g = v * x.conj() / px;
            let mag = g.norm();
            if !mag.is_finite() {
                Complex32::default()
            } else if mag > MAX_RATIO {
                g * (MAX_RATIO / mag)
            } else {
                g
            }
        } else {
            Complex32::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                0.3 * (i as f32 * 0.05).sin() + (s as f32 / u32::MAX as f32 - 0.5) * 0.5
            })
            .collect()
    }

    #[test]
    fn reflect_matches_torch_reflect_padding() {
        // torch: F.pad([0,1,2,3], (3, 3), "reflect") = [3,2,1,0,1,2,3,2,1,0].
        let got: Vec<usize> = (-3..7).map(|i| reflect(i, 4)).collect();
        assert_eq!(got, [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
    }

    #[test]
    fn spec_frame_is_the_normalised_dft_of_the_reflect_padded_signal() {
        let n_fft = 64;
        let hl = 16;
        let len = 100;
        let x = signal(len, 3);
        let mut st = HybridStft::new(n_fft);
        let frames = st.frames(len);
        assert_eq!(frames, 7);
        let mut z = vec![0.0; st.spec_len(1, len)];
        st.spec(&x, 1, &mut z);
        // Naive: pad by 24 left and 24 + 112 - 100 right by reflection, centre-pad by 32,
        // frames j = 2..9 of the torch.stft output.
        let pad = hl / 2 * 3;
        let right = pad + frames * hl - len;
        let p1: Vec<f32> = (-(pad as isize)..(len + right) as isize)
            .map(|i| x[reflect(i, len)])
            .collect();
        let h = n_fft as isize / 2;
        let p2: Vec<f32> = (-h..p1.len() as isize + h)
            .map(|i| p1[reflect(i, p1.len())])
            .collect();
        for j in 0..frames {
            for f in [0usize, 1, 5, 31] {
                let (mut re, mut im) = (0.0f64, 0.0f64);
                for i in 0..n_fft {
                    let w = 0.5 - 0.5 * (2.0 * PI * i as f64 / n_fft as f64).cos();
                    let v = p2[(j + 2) * hl + i] as f64 * w;
                    let a = -2.0 * PI * (f * i) as f64 / n_fft as f64;
                    re += v * a.cos();
                    im += v * a.sin();
                }
                let s = 1.0 / (n_fft as f64).sqrt();
                let (gr, gi) = (z[f * frames + j], z[(32 + f) * frames + j]);
                assert!((gr as f64 - re * s).abs() < 1e-4, "j={j} f={f} re");
                assert!((gi as f64 - im * s).abs() < 1e-4, "j={j} f={f} im");
            }
        }
    }

    #[test]
    fn ispec_inverts_spec_away_from_the_edges() {
        // HTDemucs drops the Nyquist bin and the first and last two frames, so the round trip
        // is exact only for content below Nyquist, away from the ends (the frames there see
        // the reflection's kink, which has content at Nyquist).
        for (n_fft, len, ch) in [(64, 300, 1), (256, 1000, 2), (4096, 44_100, 2)] {
            let hl = n_fft / 4;
            let x: Vec<f32> = (0..len * ch)
                .map(|i| {
                    let t = i as f32;
                    0.5 * (t * 0.031).sin() + 0.3 * (t * 0.57 + 1.0).sin() + 0.1 * (t * 1.2).cos()
                })
                .collect();
            let mut st = HybridStft::new(n_fft);
            let mut z = vec![0.0; st.spec_len(ch, len)];
            st.spec(&x, ch, &mut z);
            let mut y = vec![0.0; len * ch];
            st.ispec(&z, ch, len, &mut y);
            let mut err = 0.0f32;
            for c in 0..ch {
                for t in 4 * hl..len - 4 * hl {
                    err = err.max((x[c * len + t] - y[c * len + t]).abs());
                }
            }
            assert!(err < 1e-4, "n_fft={n_fft} len={len}: max error {err}");
        }
    }

    #[test]
    fn masks_are_in_unit_range_and_one_or_zero_for_all_or_nothing() {
        let sr = 16_000;
        let x = signal(1600, 9);
        let mut mf = MaskFrames::new(sr);
        let mut n = 0;
        // V = X: mask 1 wherever there is energy.
        mf.push(&x, &x, |_, m| {
            n += 1;
            assert!(m.iter().all(|g| g.im == 0.0 && (g.re - 1.0).abs() < 1e-4));
        });
        assert_eq!(n, 10);
        mf.reset();
        let zero = vec![0.0; x.len()];
        mf.push(&x, &zero, |_, m| assert!(m.iter().all(|g| g.re == 0.0)));
        mf.reset();
        let half: Vec<f32> = x.iter().map(|v| 0.5 * v).collect();
        mf.push(&x, &half, |_, m| {
            // |V|^2 / (|V|^2 + |X - V|^2) = 1/2 for V = X/2.
            assert!(m.iter().all(|g| (0.0..=1.0).contains(&g.re)));
            assert!(m.iter().all(|g| (g.re - 0.5).abs() < 1e-3));
        });
    }

    #[test]
    fn ratio_masks_applied_to_the_mix_by_the_engine_synthesis_give_the_estimate() {
        // The estimate: the mix through a short filter (|H| between 0.4 and 1.0, with a
        // phase), so that V / X is close to H per bin, with a phase, and stays below 2: the
        // smooth window leaks little of the filter's edge into any bin.
        let sr = 48_000;
        let grid = Grid::for_rate(sr);
        let (h, n) = (grid.hop, 200 * grid.hop);
        let x = signal(n, 11);
        let v: Vec<f32> = (0..n)
            .map(|i| {
                let past = |d: usize| i.checked_sub(d).map_or(0.0, |j| x[j]);
                0.8 * x[i] + 0.3 * past(1) - 0.1 * past(2)
            })
            .collect();
        let mut mf = MaskFrames::with_mode(sr, MaskMode::Ratio);
        assert_eq!(mf.mode(), MaskMode::Ratio);
        let mut masks = Vec::new();
        for (a, b) in x.chunks(333).zip(v.chunks(333)) {
            mf.push(a, b, |g, m| {
                assert_eq!(g as usize, masks.len());
                masks.push(m.to_vec());
            });
        }
        assert_eq!(masks.len(), n / h);
        let largest = masks.iter().flatten().fold(0.0f32, |m, g| m.max(g.norm()));
        assert!(largest < MAX_RATIO, "the clamp acted: {largest}");
        // The engine: frame g covers [(g - 1) h, (g + 1) h), X[g] * G[g] overlap-added.
        let mut stft = Stft::new(grid);
        let mut ola = vec![0.0f32; n + 2 * h];
        let mut frame = vec![0.0f32; grid.win];
        let mut spec = vec![Complex32::default(); grid.bins];
        for (g, m) in masks.iter().enumerate() {
            for (k, f) in frame.iter_mut().enumerate() {
                let t = (g * h + k) as isize - h as isize;
                *f = if t >= 0 { x[t as usize] } else { 0.0 };
            }
            stft.analyze(&frame, &mut spec);
            for (s, g) in spec.iter_mut().zip(m) {
                *s *= g;
            }
            stft.synthesize_add(&mut spec, &mut ola[g * h..g * h + grid.win]);
        }
        // Output sample t is ola[t + h]; the last hop waits for a frame not pushed.
        let peak = v.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        let mut err = 0.0f32;
        for t in 0..n - h {
            err = err.max((ola[t + h] - v[t]).abs());
        }
        assert!(err < 1e-5 * peak, "max error {err} (peak {peak})");
        // Silence in the mix: no gain at all, whatever the estimate.
        mf.reset();
        let zero = vec![0.0; 4 * h];
        mf.push(&zero, &x[..4 * h], |_, m| {
            assert!(m.iter().all(|g| *g == Complex32::default()));
        });
    }

    #[test]
    fn ratio_masks_clamp_the_magnitude_keep_the_phase_and_skip_negligible_bins() {
        let xs = [
            Complex32::new(1.0, 0.0),
            Complex32::new(0.0, 2.0),
            Complex32::new(1.0, 1.0),
            Complex32::new(1e-9, 0.0),
        ];
        let vs = [
            Complex32::new(0.5, 0.0),
            Complex32::new(-20.0, 0.0),
            Complex32::new(f32::NAN, 0.0),
            Complex32::new(1e-9, 0.0),
        ];
        let mut m = [Complex32::default(); 4];
        ratio_masks(&xs, &vs, &mut m);
        assert!((m[0] - Complex32::new(0.5, 0.0)).norm() < 1e-7);
        // -20 / 2i = 10i: clamped to 2i, the phase kept.
        assert!(
            (m[1] - Complex32::new(0.0, MAX_RATIO)).norm() < 1e-6,
            "{:?}",
            m[1]
        );
        assert_eq!(m[2], Complex32::default(), "not finite");
        assert_eq!(m[3], Complex32::default(), "negligible");
    }

    #[test]
    fn a_transient_in_hop_h_lands_in_frames_h_and_h_plus_1() {
        // The estimate holds the mix only during hop 7: frames 7 ([6h, 8h)) and 8 ([7h, 9h))
        // see it, every other frame has an empty estimate and a zero mask.
        let sr = 16_000;
        let h = 160;
        let x = signal(20 * h, 5);
        let v: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, &s)| if i / h == 7 { s } else { 0.0 })
            .collect();
        let mut mf = MaskFrames::new(sr);
        let mut seen = Vec::new();
        // Arbitrary chunking must not matter.
        for (a, b) in x.chunks(37).zip(v.chunks(37)) {
            mf.push(a, b, |g, m| {
                let energy: f32 = m.iter().map(|g| g.re).sum();
                seen.push((g, energy));
            });
        }
        assert_eq!(seen.len(), 20);
        for (g, e) in seen {
            assert_eq!(e > 1.0, g == 7 || g == 8, "frame {g}: mask sum {e}");
        }
    }
}
