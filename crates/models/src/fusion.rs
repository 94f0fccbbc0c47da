//! Fusing the masks of several models into one mask, bin by bin.
//!
//! The worker maps every member's mask onto the engine's grid first, so fusion sees, for one
//! host frame and one bin, a complex gain `g_i` per member `i` (DeepFilterNet3 gives complex
//! gains, separators real ones, i.e. zero phase) and a weight `w_i > 0` per member. With
//! `a_i = |w_i g_i|` (computed as `(w_i g_i).norm_sqr()`, which orders the same way):
//!
//! - [`Fusion::Max`] (the default): the member with the largest `a_i` wins and the fused gain is
//!   its weighted gain `w_i g_i` (its phase kept). A bin is kept as much as the most confident
//!   member keeps it.
//! - [`Fusion::Min`]: the same with the smallest `a_i`: a bin is removed when any member
//!   removes it.
//! - [`Fusion::Mean`]: `Σ w_i g_i / Σ w_i`, summed in member order (complex, so gains of opposite
//!   phase partly cancel, as their outputs would).
//!
//! Ties in `Max` and `Min` go to the earlier member, and a comparison with NaN is false, so a
//! NaN magnitude never wins against an earlier member (the engine replaces a non-finite gain
//! by the floor anyway). With weights of exactly 1, `w_i g_i` is `g_i` bit for bit. A single
//! member is never fused at all: the worker passes its mask through unchanged, whatever the
//! rule and weight, so a one-model set is bit-identical to running that model alone.

use num_complex::Complex32;
use std::fmt;
use std::str::FromStr;

/// How the masks of several models are combined per bin (see the module documentation for the
/// exact math).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fusion {
    /// The weighted gain of largest magnitude.
    #[default]
    Max,
    /// The weighted mean of the gains.
    Mean,
    /// The weighted gain of smallest magnitude.
    Min,
}

impl Fusion {
    /// The rule's name as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Max => "max",
            Self::Mean => "mean",
            Self::Min => "min",
        }
    }
}

impl fmt::Display for Fusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fusion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "max" => Ok(Self::Max),
            "mean" => Ok(Self::Mean),
            "min" => Ok(Self::Min),
            _ => Err(format!("unknown fusion rule `{s}` (max, mean or min)")),
        }
    }
}

/// Checks fusion weights: each must be finite and greater than 0.
pub fn check_weights(weights: &[f32]) -> Result<(), String> {
    match weights.iter().find(|w| !(w.is_finite() && **w > 0.0)) {
        Some(w) => Err(format!(
            "a fusion weight must be finite and above 0, not {w}"
        )),
        None => Ok(()),
    }
}

/// Fuses one bin: `gains[i]` is member `i`'s gain and `weights[i]` its weight (same length,
/// at least one).
pub fn fuse_bin(rule: Fusion, gains: &[Complex32], weights: &[f32]) -> Complex32 {
    let weighted = gains.iter().zip(weights).map(|(g, w)| g * *w);
    match rule {
        Fusion::Mean => {
            let sum = weighted.fold(Complex32::new(0.0, 0.0), |a, b| a + b);
            sum / weights.iter().sum::<f32>()
        }
        Fusion::Max | Fusion::Min => {
            let mut best: Option<(Complex32, f32)> = None;
            for g in weighted {
                let a = g.norm_sqr();
                let better = match best {
                    None => true,
                    Some((_, b)) if rule == Fusion::Max => a > b,
                    Some((_, b)) => a < b,
                };
                if better {
                    best = Some((g, a));
                }
            }
            best.map_or(Complex32::new(0.0, 0.0), |(g, _)| g)
        }
    }
}

/// Fuses whole masks: `masks` holds `weights.len()` masks of `out.len()` bins one after the
/// other (member `i`'s bin `k` at `i * out.len() + k`); writes the fused mask to `out`.
/// Allocation-free; `scratch` must hold `weights.len()` gains.
pub fn fuse_masks(
    rule: Fusion,
    masks: &[Complex32],
    weights: &[f32],
    scratch: &mut [Complex32],
    out: &mut [Complex32],
) {
    let bins = out.len();
    for (k, o) in out.iter_mut().enumerate() {
        for (i, s) in scratch.iter_mut().enumerate().take(weights.len()) {
            *s = masks[i * bins + k];
        }
        *o = fuse_bin(rule, &scratch[..weights.len()], weights);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(re: f32, im: f32) -> Complex32 {
        Complex32::new(re, im)
    }

    #[test]
    fn max_keeps_the_member_with_the_largest_weighted_magnitude_and_its_phase() {
        // |0.6i| = 0.6 beats 0.5; its phase (90°) is kept.
        assert_eq!(
            fuse_bin(Fusion::Max, &[c(0.5, 0.0), c(0.0, 0.6)], &[1.0, 1.0]),
            c(0.0, 0.6)
        );
        // Weights scale before comparing, and the weighted gain is the result:
        // 2 * 0.5 = 1.0 beats 1 * 0.6.
        assert_eq!(
            fuse_bin(Fusion::Max, &[c(0.5, 0.0), c(0.0, 0.6)], &[2.0, 1.0]),
            c(1.0, 0.0)
        );
        // A complex DFN3-like gain (|0.3+0.4i| = 0.5) against a real one of 0.45.
        assert_eq!(
            fuse_bin(Fusion::Max, &[c(0.3, 0.4), c(0.45, 0.0)], &[1.0, 1.0]),
            c(0.3, 0.4)
        );
        // Ties go to the first member: same magnitude, different phase.
        assert_eq!(
            fuse_bin(Fusion::Max, &[c(0.0, -0.5), c(0.5, 0.0)], &[1.0, 1.0]),
            c(0.0, -0.5)
        );
    }

    #[test]
    fn min_keeps_the_member_with_the_smallest_weighted_magnitude() {
        assert_eq!(
            fuse_bin(
                Fusion::Min,
                &[c(0.3, 0.4), c(0.45, 0.0), c(0.9, 0.0)],
                &[1.0; 3]
            ),
            c(0.45, 0.0)
        );
        // 0.5 * 0.8 = 0.4 is below 0.45.
        assert_eq!(
            fuse_bin(
                Fusion::Min,
                &[c(0.3, 0.4), c(0.45, 0.0), c(0.8, 0.0)],
                &[1.0, 1.0, 0.5]
            ),
            c(0.4, 0.0)
        );
        assert_eq!(
            fuse_bin(Fusion::Min, &[c(0.2, 0.0), c(0.0, 0.2)], &[1.0, 1.0]),
            c(0.2, 0.0)
        );
    }

    #[test]
    fn mean_is_the_weighted_complex_mean() {
        // (1 * (0.5 + 0i) + 3 * (0.25 + 0.5i)) / 4 = (1.25 + 1.5i) / 4, exact in binary.
        assert_eq!(
            fuse_bin(Fusion::Mean, &[c(0.5, 0.0), c(0.25, 0.5)], &[1.0, 3.0]),
            c(0.3125, 0.375)
        );
        // Opposite phases cancel.
        assert_eq!(
            fuse_bin(Fusion::Mean, &[c(0.5, 0.0), c(-0.5, 0.0)], &[1.0, 1.0]),
            c(0.0, 0.0)
        );
    }

    #[test]
    fn one_member_with_weight_one_is_unchanged_bit_for_bit() {
        for g in [c(0.123_456_7, -0.765_432_1), c(1e-30, 2.0), c(0.0, 0.0)] {
            for rule in [Fusion::Max, Fusion::Mean, Fusion::Min] {
                let f = fuse_bin(rule, &[g], &[1.0]);
                assert_eq!(
                    (f.re.to_bits(), f.im.to_bits()),
                    (g.re.to_bits(), g.im.to_bits())
                );
            }
        }
    }

    #[test]
    fn nan_never_wins_against_an_earlier_member() {
        let f = fuse_bin(Fusion::Max, &[c(0.1, 0.0), c(f32::NAN, 0.0)], &[1.0, 1.0]);
        assert_eq!(f, c(0.1, 0.0));
        let f = fuse_bin(Fusion::Min, &[c(0.1, 0.0), c(f32::NAN, 0.0)], &[1.0, 1.0]);
        assert_eq!(f, c(0.1, 0.0));
    }

    #[test]
    fn whole_masks_fuse_bin_by_bin() {
        // Values exact in binary; the last bin ties in magnitude (the first member wins).
        let a = [c(0.125, 0.0), c(0.75, 0.0), c(0.0, 0.5)];
        let b = [c(0.25, 0.0), c(0.25, 0.0), c(0.5, 0.0)];
        let flat: Vec<Complex32> = a.iter().chain(&b).copied().collect();
        let mut scratch = [Complex32::default(); 2];
        let mut out = [Complex32::default(); 3];
        fuse_masks(Fusion::Max, &flat, &[1.0, 1.0], &mut scratch, &mut out);
        assert_eq!(out, [c(0.25, 0.0), c(0.75, 0.0), c(0.0, 0.5)]);
        fuse_masks(Fusion::Min, &flat, &[1.0, 1.0], &mut scratch, &mut out);
        assert_eq!(out, [c(0.125, 0.0), c(0.25, 0.0), c(0.0, 0.5)]);
        fuse_masks(Fusion::Mean, &flat, &[1.0, 1.0], &mut scratch, &mut out);
        assert_eq!(out, [c(0.1875, 0.0), c(0.5, 0.0), c(0.25, 0.25)]);
    }

    #[test]
    fn rules_parse_and_weights_are_checked() {
        assert_eq!("MAX".parse::<Fusion>(), Ok(Fusion::Max));
        assert_eq!("mean".parse::<Fusion>(), Ok(Fusion::Mean));
        assert_eq!(" min ".parse::<Fusion>(), Ok(Fusion::Min));
        assert!("median".parse::<Fusion>().is_err());
        assert!(check_weights(&[1.0, 0.5]).is_ok());
        for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert!(check_weights(&[1.0, bad]).is_err(), "{bad}");
        }
    }
}
