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

/// Shapes a frame of gains, `out[k] = shape_gain(mask[k], beta, floor)`. With `beta == 1` and
/// no floor (the defaults) the shaping is the identity, and the gains are only checked to be
/// finite (a non-finite gain becomes 0, as in [`shape_gain`]), which skips the square root and
/// the division of every bin. Allocation-free (audio thread).
#[inline]
pub fn shape_gains(out: &mut [Complex32], mask: &[Complex32], beta: f32, floor: f32) {
    if beta == 1.0 && floor <= 0.0 {
        for (o, m) in out.iter_mut().zip(mask) {
            *o = if m.norm_sqr().is_finite() {
                *m
            } else {
                Complex32::new(0.0, 0.0)
            };
        }
    } else {
        for (o, m) in out.iter_mut().zip(mask) {
            *o = shape_gain(*m, beta, floor);
        }
    }
}

/// Converts a floor in dB to a linear gain; `None` (off) is 0.
pub fn floor_linear(floor_db: Option<f32>) -> f32 {
    floor_db.map_or(0.0, |db| 10f32.powf(db / 20.0))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_identity_fast_path_equals_shape_gain() {
        let mask: Vec<Complex32> = (0..200)
            .map(|i| {
                let a = i as f32 * 0.37;
                Complex32::from_polar(i as f32 / 120.0, a)
            })
            .chain([
                Complex32::new(f32::NAN, 0.0),
                Complex32::new(0.0, f32::INFINITY),
                Complex32::new(f32::NEG_INFINITY, 1.0),
                Complex32::new(0.0, 0.0),
                Complex32::new(3.0, -4.0),
            ])
            .collect();
        for (beta, floor) in [(1.0, 0.0), (1.0, 0.03), (1.5, 0.0), (0.75, 0.1)] {
            let mut out = vec![Complex32::new(9.0, 9.0); mask.len()];
            shape_gains(&mut out, &mask, beta, floor);
            for (k, (o, m)) in out.iter().zip(&mask).enumerate() {
                let want = shape_gain(*m, beta, floor);
                assert_eq!(
                    (o.re.to_bits(), o.im.to_bits()),
                    (want.re.to_bits(), want.im.to_bits()),
                    "bin {k}, beta {beta}, floor {floor}: {o} vs {want}"
                );
            }
        }
    }

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
