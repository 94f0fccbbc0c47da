//! Overlap-add STFT on a fixed time grid (20 ms window, 10 ms hop) with a power-complementary
//! periodic window, so that analysis followed by synthesis reconstructs the input exactly.
//!
//! All buffers and FFT plans are allocated in [`Stft::new`]; `analyze` and `synthesize` never
//! allocate.

use num_complex::Complex32;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use std::f64::consts::PI;
use std::sync::Arc;

/// The STFT grid at one sample rate: hop, window length and bin count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    /// Hop in samples (10 ms, rounded).
    pub hop: usize,
    /// Window (FFT) length in samples, always `2 * hop`.
    pub win: usize,
    /// Number of bins, `win / 2 + 1`.
    pub bins: usize,
    /// Sample rate in Hz.
    pub sample_rate: u32,
}

impl Grid {
    /// The grid at `sample_rate`: hop = round(10 ms), window = 2 hops. At 48 kHz this is
    /// DeepFilterNet3's own 960/480 grid; at every rate that is a multiple of 100 Hz the bins are
    /// exactly 50 Hz apart.
    pub fn for_rate(sample_rate: u32) -> Self {
        let hop = ((sample_rate as f64 / 100.0).round() as usize).max(2);
        let win = 2 * hop;
        Self {
            hop,
            win,
            bins: win / 2 + 1,
            sample_rate,
        }
    }

    /// Centre frequency of `bin` in Hz.
    pub fn bin_hz(&self, bin: usize) -> f64 {
        bin as f64 * self.sample_rate as f64 / self.win as f64
    }

    /// True when the hop is exactly 10 ms (the rate is a multiple of 100 Hz).
    pub fn is_exact_10ms(&self) -> bool {
        self.sample_rate.is_multiple_of(100)
    }
}

/// The periodic Vorbis window `sin(pi/2 * sin^2(pi (n + 1/2) / N))`: power complementary at
/// 50 % overlap (`w[n]^2 + w[n + N/2]^2 = 1`), the window DeepFilterNet3 was trained with.
pub fn vorbis_window(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let s = (PI * (i as f64 + 0.5) / n as f64).sin();
            (0.5 * PI * s * s).sin() as f32
        })
        .collect()
}

/// Analysis/synthesis pair for one grid. One instance serves every channel.
pub struct Stft {
    /// The grid.
    grid: Grid,
    /// Analysis and synthesis window.
    window: Vec<f32>,
    /// Forward real FFT plan.
    fwd: Arc<dyn RealToComplex<f32>>,
    /// Inverse real FFT plan.
    inv: Arc<dyn ComplexToReal<f32>>,
    /// Time-domain scratch, `win` long.
    time: Vec<f32>,
    /// FFT scratch.
    scratch: Vec<Complex32>,
}

/// Plans a forward and an inverse real FFT of `n` points (allocates: not for the audio thread).
///
/// The one place where realfft's generic planner is instantiated for `f32`: the models plan
/// their FFTs here too, so that the plugin holds one copy of the FFT code, not one per crate.
pub fn plan_real_fft(n: usize) -> (Arc<dyn RealToComplex<f32>>, Arc<dyn ComplexToReal<f32>>) {
    let mut planner = RealFftPlanner::<f32>::new();
    (planner.plan_fft_forward(n), planner.plan_fft_inverse(n))
}

impl Stft {
    /// Plans the FFTs and allocates scratch for `grid`.
    pub fn new(grid: Grid) -> Self {
        let (fwd, inv) = plan_real_fft(grid.win);
        let scratch_len = fwd.get_scratch_len().max(inv.get_scratch_len());
        Self {
            grid,
            window: vorbis_window(grid.win),
            fwd,
            inv,
            time: vec![0.0; grid.win],
            scratch: vec![Complex32::default(); scratch_len],
        }
    }

    /// The grid.
    pub fn grid(&self) -> Grid {
        self.grid
    }

    /// Windows `frame` (oldest sample first, `win` long) and writes its spectrum (`bins` long).
    pub fn analyze(&mut self, frame: &[f32], spectrum: &mut [Complex32]) {
        self.analyze_parts(frame, &[], spectrum);
    }

    /// [`Stft::analyze`] of the frame `older` followed by `newer` (together `win` long), as a
    /// circular buffer holds it: windowed straight from the two pieces, with no copy into one
    /// frame first.
    pub fn analyze_parts(&mut self, older: &[f32], newer: &[f32], spectrum: &mut [Complex32]) {
        let (t_old, t_new) = self.time.split_at_mut(older.len().min(self.grid.win));
        let (w_old, w_new) = self.window.split_at(t_old.len());
        for ((t, x), w) in t_old.iter_mut().zip(older).zip(w_old) {
            *t = x * w;
        }
        for ((t, x), w) in t_new.iter_mut().zip(newer).zip(w_new) {
            *t = x * w;
        }
        // Lengths are fixed at construction, so this cannot fail.
        let _ = self
            .fwd
            .process_with_scratch(&mut self.time, spectrum, &mut self.scratch);
    }

    /// Inverse transform of `spectrum` (consumed as scratch), windowed and scaled so that
    /// overlap-adding consecutive frames reconstructs the analysed signal; returns the frame
    /// (`win` long, oldest sample first), which lives in this `Stft` until the next call.
    pub fn synthesize(&mut self, spectrum: &mut [Complex32]) -> &[f32] {
        // A real signal's DC and Nyquist bins are real; masks may have given them a phase.
        spectrum[0].im = 0.0;
        let last = spectrum.len() - 1;
        spectrum[last].im = 0.0;
        let _ = self
            .inv
            .process_with_scratch(spectrum, &mut self.time, &mut self.scratch);
        let scale = 1.0 / self.grid.win as f32;
        for (t, w) in self.time.iter_mut().zip(&self.window) {
            *t = *t * w * scale;
        }
        &self.time
    }

    /// [`Stft::synthesize`], adding the frame into `out` (`win` long, oldest sample first).
    pub fn synthesize_add(&mut self, spectrum: &mut [Complex32], out: &mut [f32]) {
        crate::kernels::add_into(out, self.synthesize(spectrum));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_is_dfn3_at_48k_and_50hz_bins_at_common_rates() {
        let g = Grid::for_rate(48_000);
        assert_eq!((g.hop, g.win, g.bins), (480, 960, 481));
        for sr in [8_000, 16_000, 44_100, 88_200, 96_000, 192_000] {
            let g = Grid::for_rate(sr);
            assert!((g.bin_hz(1) - 50.0).abs() < 1e-9, "{sr}");
        }
    }

    #[test]
    fn window_is_power_complementary() {
        for n in [160, 882, 960, 1920] {
            let w = vorbis_window(n);
            for i in 0..n / 2 {
                let s = w[i] * w[i] + w[i + n / 2] * w[i + n / 2];
                assert!((s - 1.0).abs() < 1e-6, "n={n} i={i} s={s}");
            }
        }
    }
}
