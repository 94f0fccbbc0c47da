//! Turning a model's gain into the gain that is applied: beta sharpening on the power ratio,
//! then the attenuation floor, keeping the gain's phase.

use num_complex::Complex32;

/// Sharpens a power ratio `p` in [0, 1]: `p^b / (p^b + (1 - p)^b)`. `b = 1` is the identity,
/// `b > 1` pushes ratios towards 0 or 1, `b < 1` softens them.
#[inline]
pub fn sharpen_power(p: f32, beta: f32) -> f32 {
    if p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    // p^b / (p^b + (1-p)^b) = 1 / (1 + ((1-p)/p)^b): one power instead of two. A huge
    // ratio gives inf, and 1 / inf = 0, the right limit.
    let r = (1.0 - p) / p;
    1.0 / (1.0 + r.powf(beta))
}

/// Shapes one complex gain: its magnitude `|g|` is sharpened by `beta` on `p = |g|^2`
/// (magnitudes at or above 1 are left alone), raised to at least `floor` (linear), and the
/// phase of `g` is kept. `beta == 1` and `floor == 0` return `g` unchanged.
#[inline]
pub fn shape_gain(g: Complex32, beta: f32, floor: f32) -> Complex32 {
    let p = g.norm_sqr();
    if !p.is_finite() {
        return Complex32::new(floor.max(0.0), 0.0);
    }
    let mag = p.sqrt();
    let mut target = mag;
    if beta != 1.0 && p < 1.0 {
        target = sharpen_power(p, beta).sqrt();
    }
    if target < floor {
        target = floor;
    }
    if target == mag {
        return g;
    }
    if mag > 1e-20 {
        g * (target / mag)
    } else {
        Complex32::new(target, 0.0)
    }
}

/// Converts a floor in dB to a linear gain; `None` (off) is 0.
pub fn floor_linear(floor_db: Option<f32>) -> f32 {
    floor_db.map_or(0.0, |db| 10f32.powf(db / 20.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_one_is_identity_and_beta_sharpens() {
        for &p in &[0.0f32, 0.01, 0.2, 0.5, 0.8, 1.0] {
            assert!((sharpen_power(p, 1.0) - p).abs() < 1e-6);
        }
        assert!(sharpen_power(0.2, 2.0) < 0.2);
        assert!(sharpen_power(0.8, 2.0) > 0.8);
        assert!((sharpen_power(0.5, 3.0) - 0.5).abs() < 1e-6);
        assert!(sharpen_power(0.2, 0.5) > 0.2);
    }

    #[test]
    fn shaping_keeps_phase_and_applies_floor() {
        let g = Complex32::from_polar(0.3, 1.0);
        let s = shape_gain(g, 2.0, 0.0);
        assert!((s.arg() - 1.0).abs() < 1e-5);
        let p = 0.09f32;
        let want = (p * p / (p * p + (1.0 - p) * (1.0 - p))).sqrt();
        assert!((s.norm() - want).abs() < 1e-6);
        let f = shape_gain(Complex32::new(0.01, 0.0), 1.0, 0.1);
        assert!((f.re - 0.1).abs() < 1e-7);
        assert_eq!(shape_gain(g, 1.0, 0.0), g);
        let big = Complex32::new(1.5, 0.2);
        assert_eq!(shape_gain(big, 2.0, 0.1), big);
        assert!(shape_gain(Complex32::new(f32::NAN, 0.0), 1.5, 0.0).re == 0.0);
        assert!((floor_linear(Some(-20.0)) - 0.1).abs() < 1e-6);
        assert_eq!(floor_linear(None), 0.0);
    }
}
