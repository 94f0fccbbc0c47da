//! Quality measures used by tests, the CLI and the benchmarks.

/// Scale-invariant signal-to-distortion ratio in dB (Le Roux et al., 2019) of `estimate`
/// against `reference`, over their common length, without mean removal.
pub fn si_sdr(estimate: &[f32], reference: &[f32]) -> f64 {
    let n = estimate.len().min(reference.len());
    let (e, r) = (&estimate[..n], &reference[..n]);
    let dot: f64 = e.iter().zip(r).map(|(a, b)| *a as f64 * *b as f64).sum();
    let rr: f64 = r.iter().map(|b| (*b as f64).powi(2)).sum();
    if rr == 0.0 {
        return f64::NEG_INFINITY;
    }
    let alpha = dot / rr;
    let (mut target, mut noise) = (0.0f64, 0.0f64);
    for (a, b) in e.iter().zip(r) {
        let t = alpha * *b as f64;
        target += t * t;
        noise += (*a as f64 - t).powi(2);
    }
    10.0 * (target / noise.max(1e-30)).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn si_sdr_is_scale_invariant_and_drops_with_noise() {
        let r: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.1).sin()).collect();
        let noisy: Vec<f32> = r
            .iter()
            .enumerate()
            .map(|(i, x)| x + 0.1 * ((i * 7919 % 13) as f32 / 13.0 - 0.5))
            .collect();
        let scaled: Vec<f32> = noisy.iter().map(|x| 3.0 * x).collect();
        let a = si_sdr(&noisy, &r);
        assert!((a - si_sdr(&scaled, &r)).abs() < 1e-4);
        assert!(a > 20.0 && a < 40.0, "{a}");
        assert!(si_sdr(&r, &r) > 100.0);
    }
}
