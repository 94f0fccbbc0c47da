//! The per-sample and per-bin loops of the audio thread, as free functions over slices so
//! that they vectorize, each compiled for AVX2 as well as the baseline and picked at run time
//! ([`multiversion`]: the CPU is asked once, then the choice is one atomic load per call; no
//! allocation, no system call). The AVX2 and baseline versions run the same IEEE operations in
//! the same order (no fused multiply-add), so they give the same bits.

use multiversion::multiversion;
use num_complex::Complex32;

/// Largest input magnitude passed on (see [`crate::MAX_INPUT`]).
use crate::MAX_INPUT;

/// Replaces NaN and infinities by 0, flushes denormals and clamps to [`MAX_INPUT`], so none
/// of them ever reaches the model.
#[inline(always)]
pub(crate) fn sanitize(x: f32) -> f32 {
    // Written without branches, so that loops over samples vectorize: the comparisons are
    // false for NaN, so NaN is not kept either.
    let a = x.abs();
    let keep = (f32::MIN_POSITIVE..=f32::MAX).contains(&a) | (a == 0.0);
    let clamped = x.clamp(-MAX_INPUT, MAX_INPUT);
    if keep {
        clamped
    } else {
        0.0
    }
}

/// Stores `src` sanitized into `dst` (same length) and returns the index of the last sample
/// that is not zero, if any.
#[multiversion(targets("x86_64+avx+avx2", "aarch64+neon"))]
pub(crate) fn store_sanitized(dst: &mut [f32], src: &[f32]) -> Option<usize> {
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = sanitize(x);
    }
    dst.iter().rposition(|&x| x != 0.0)
}

/// One output sample: the wet/dry mix of the delayed dry sample and the synthesized one, then
/// the output gain; adds both signals' energy to `energy` (dry, output) for the meters.
#[inline(always)]
pub(crate) fn mix(dry: f32, y: f32, wet: f32, gain: f32, energy: &mut (f32, f32)) -> f32 {
    let mixed = if wet == 0.0 {
        dry
    } else {
        wet * y + (1.0 - wet) * dry
    };
    energy.0 += dry * dry;
    energy.1 += mixed * mixed;
    if gain == 1.0 {
        mixed
    } else {
        mixed * gain
    }
}

/// Lanes of the meters' energy sums in [`mix_run`]: independent partial sums, so that the
/// loop vectorizes (a single running sum would chain every sample's addition to the last).
const LANES: usize = 8;

/// [`mix`] over a run of samples: `out` holds the delayed dry signal on entry and the output
/// on return; with `READ`, `ola` holds the synthesized samples, which are taken (the ring is
/// zeroed behind the read), else y = 0 and `ola` is left alone. `wet` and `gain` give the
/// smoothers' value per sample. Every output sample is computed by the same operations as in
/// [`mix`]; only the energy sums are added in another order. All slices have the same length.
#[inline(always)]
fn mix_run<const READ: bool>(
    out: &mut [f32],
    ola: &mut [f32],
    wet: &[f32],
    gain: &[f32],
    energy: &mut (f32, f32),
) {
    let mut dry_e = [0.0f32; LANES];
    let mut out_e = [0.0f32; LANES];
    let n = out.len();
    let whole = n - n % LANES;
    let one = |o: &mut f32, l: &mut f32, w: f32, g: f32, e: &mut (f32, f32)| {
        let dry = *o;
        let y = if READ { std::mem::replace(l, 0.0) } else { 0.0 };
        *o = mix(dry, y, w, g, e);
    };
    for (((o, l), w), g) in out[..whole]
        .chunks_exact_mut(LANES)
        .zip(ola[..whole].chunks_exact_mut(LANES))
        .zip(wet[..whole].chunks_exact(LANES))
        .zip(gain[..whole].chunks_exact(LANES))
    {
        for j in 0..LANES {
            let mut e = (dry_e[j], out_e[j]);
            one(&mut o[j], &mut l[j], w[j], g[j], &mut e);
            (dry_e[j], out_e[j]) = e;
        }
    }
    let mut tail = (0.0f32, 0.0f32);
    for k in whole..n {
        one(&mut out[k], &mut ola[k], wet[k], gain[k], &mut tail);
    }
    energy.0 += dry_e.iter().sum::<f32>() + tail.0;
    energy.1 += out_e.iter().sum::<f32>() + tail.1;
}

/// Mixes one channel of a segment: `out` holds the delayed dry signal on entry, the output on
/// return; samples before `reading` precede the first output of the overlap-add (y = 0), the
/// rest take theirs from `ola`. See [`mix_run`].
#[multiversion(targets("x86_64+avx+avx2", "aarch64+neon"))]
pub(crate) fn mix_segment(
    out: &mut [f32],
    ola: &mut [f32],
    wet: &[f32],
    gain: &[f32],
    reading: usize,
    energy: &mut (f32, f32),
) {
    let (out_a, out_b) = out.split_at_mut(reading);
    let (ola_a, ola_b) = ola.split_at_mut(reading);
    let (wet_a, wet_b) = wet.split_at(reading);
    let (gain_a, gain_b) = gain.split_at(reading);
    mix_run::<false>(out_a, ola_a, wet_a, gain_a, energy);
    mix_run::<true>(out_b, ola_b, wet_b, gain_b, energy);
}

/// `out[k] = spectrum[k] * gains[k]` (complex).
#[multiversion(targets("x86_64+avx+avx2", "aarch64+neon"))]
pub(crate) fn apply_gains(out: &mut [Complex32], spectrum: &[Complex32], gains: &[Complex32]) {
    for ((o, x), g) in out.iter_mut().zip(spectrum).zip(gains) {
        *o = x * g;
    }
}

/// True when `a` and `b` hold the same bits (so shaping them gives the same gains, the sign
/// of zero included). Compares every element without stopping early, so that it vectorizes:
/// the slices are equal in the common case (linked channels) and read to the end anyway.
#[multiversion(targets("x86_64+avx+avx2", "aarch64+neon"))]
pub(crate) fn same_bits(a: &[Complex32], b: &[Complex32]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).fold(0u32, |d, (x, y)| {
            d | (x.re.to_bits() ^ y.re.to_bits()) | (x.im.to_bits() ^ y.im.to_bits())
        }) == 0
}

/// `dst[k] += src[k]` (same length).
#[multiversion(targets("x86_64+avx+avx2", "aarch64+neon"))]
pub(crate) fn add_into(dst: &mut [f32], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The branch-free `sanitize` against its definition, on every class of float.
    #[test]
    fn sanitize_matches_its_definition_bit_for_bit() {
        let reference = |x: f32| {
            if x.is_finite() && (x == 0.0 || x.abs() >= f32::MIN_POSITIVE) {
                x.clamp(-MAX_INPUT, MAX_INPUT)
            } else {
                0.0
            }
        };
        let mut values = vec![
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            f32::MIN_POSITIVE / 2.0,
            -1e-40,
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            MAX_INPUT,
            -MAX_INPUT,
            MAX_INPUT * 1.0001,
            0.5,
            -0.25,
        ];
        // A sweep over exponents and signs.
        values.extend((0..2000u32).map(|i| f32::from_bits(i.wrapping_mul(2_147_483) ^ (i << 31))));
        for x in values {
            assert_eq!(
                sanitize(x).to_bits(),
                reference(x).to_bits(),
                "{x:e} ({:#x})",
                x.to_bits()
            );
        }
    }

    #[test]
    fn same_bits_tells_signed_zeros_and_nans_apart() {
        let a = vec![Complex32::new(0.0, 1.0); 40];
        let mut b = a.clone();
        assert!(same_bits(&a, &b));
        b[39].re = -0.0;
        assert!(!same_bits(&a, &b));
        let n = vec![Complex32::new(f32::NAN, 0.0); 3];
        assert!(same_bits(&n, &n.clone()));
        assert!(!same_bits(&a[..3], &a));
    }
}
