//! DeepFilterNet3's input features for one stream, computed frame by frame with state:
//! ERB band energies in dB with exponential mean normalisation, and the unit-normalised
//! complex spectrum of the lowest `nb_df` bins. All buffers are allocated in `new`.

use num_complex::Complex32;

/// Normalisation state and band layout for one stream.
pub struct Features {
    /// ERB band edges (bin indices), `nb_erb + 1` long.
    edges: Vec<usize>,
    /// Smoothing factor of the running means, `exp(-hop / (sr * tau))`.
    alpha: f32,
    /// Running mean of band energies in dB.
    erb_mean: Vec<f32>,
    /// Running mean of magnitudes of the low bins.
    unit_mean: Vec<f32>,
    /// Number of deep-filter bins.
    nb_df: usize,
}

impl Features {
    /// Feature state for bands of `widths` bins, `nb_df` deep-filter bins and smoothing `alpha`.
    pub fn new(widths: &[usize], nb_df: usize, alpha: f32) -> Self {
        let mut edges = vec![0];
        for w in widths {
            edges.push(edges.last().copied().unwrap_or(0) + w);
        }
        let mut f = Self {
            edges,
            alpha,
            erb_mean: vec![0.0; widths.len()],
            unit_mean: vec![0.0; nb_df],
            nb_df,
        };
        f.reset();
        f
    }

    /// Restores the initial normalisation state (-60..-90 dB, 1e-3..1e-4).
    pub fn reset(&mut self) {
        let linspace = |a: f32, b: f32, n: usize, out: &mut [f32]| {
            for (i, v) in out.iter_mut().enumerate() {
                *v = a + (b - a) * i as f32 / (n - 1).max(1) as f32;
            }
        };
        let n = self.erb_mean.len();
        linspace(-60.0, -90.0, n, &mut self.erb_mean);
        linspace(1e-3, 1e-4, self.nb_df, &mut self.unit_mean);
    }

    /// Computes the features of spectrum `x` (normalised as DeepFilterNet expects) into
    /// `erb` (`nb_erb`) and `spec` (`2 * nb_df`: real parts, then imaginary parts), and
    /// advances the running means.
    pub fn compute(&mut self, x: &[Complex32], erb: &mut [f32], spec: &mut [f32]) {
        let a = self.alpha;
        for (b, (out, mean)) in erb.iter_mut().zip(&mut self.erb_mean).enumerate() {
            let band = &x[self.edges[b]..self.edges[b + 1]];
            let p = band.iter().map(|c| c.norm_sqr()).sum::<f32>() / band.len() as f32;
            let db = 10.0 * (p + 1e-10).log10();
            *mean = db * (1.0 - a) + *mean * a;
            *out = (db - *mean) / 40.0;
        }
        let (re, im) = spec.split_at_mut(self.nb_df);
        for (k, mean) in self.unit_mean.iter_mut().enumerate() {
            // Held at the smallest normal float: after a minute or so of digital silence the
            // mean would otherwise decay into denormals (slow), and where the thread flushes
            // denormals to zero (a host's FTZ/DAZ setting, inherited by the worker) to exactly
            // 0, making the features 0 / 0 = NaN and poisoning the model's state for good.
            *mean = (x[k].norm() * (1.0 - a) + *mean * a).max(f32::MIN_POSITIVE);
            let s = mean.sqrt();
            re[k] = x[k].re / s;
            im[k] = x[k].im / s;
        }
    }
}
