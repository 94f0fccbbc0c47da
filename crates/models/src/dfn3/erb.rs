//! DeepFilterNet's ERB band layout: `nb_erb` bands of equal width on the ERB scale
//! (Glasberg & Moore), each at least `min_nb_freqs` FFT bins wide, covering all bins.

/// Hz to ERB-rate.
fn freq2erb(hz: f64) -> f64 {
    9.265 * (hz / (24.7 * 9.265)).ln_1p()
}

/// ERB-rate to Hz.
fn erb2freq(erb: f64) -> f64 {
    24.7 * 9.265 * ((erb / 9.265).exp() - 1.0)
}

/// Band widths in bins for a `fft_size`-point FFT at `sr`; they sum to `fft_size / 2 + 1`.
pub fn band_widths(sr: u32, fft_size: usize, nb_erb: usize, min_nb_freqs: usize) -> Vec<usize> {
    let nyq = sr as f64 / 2.0;
    let (lo, hi) = (freq2erb(0.0), freq2erb(nyq));
    let step = (hi - lo) / nb_erb as f64;
    let bin_hz = sr as f64 / fft_size as f64;
    let mut widths = Vec::with_capacity(nb_erb);
    let (mut prev, mut over) = (0i64, 0i64);
    for i in 1..=nb_erb {
        let edge = (erb2freq(lo + i as f64 * step) / bin_hz).round() as i64;
        let mut nb = edge - prev - over;
        if nb < min_nb_freqs as i64 {
            over = min_nb_freqs as i64 - nb;
            nb = min_nb_freqs as i64;
        } else {
            over = 0;
        }
        widths.push(nb);
        prev = edge;
    }
    let total: i64 = widths.iter().sum();
    if let Some(last) = widths.last_mut() {
        *last += 1 - (total + 1 - (fft_size / 2 + 1) as i64);
    }
    widths.into_iter().map(|w| w.max(1) as usize).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dfn3_bands_cover_all_bins_and_respect_minimum() {
        let w = band_widths(48_000, 960, 32, 2);
        assert_eq!(w.len(), 32);
        assert_eq!(w.iter().sum::<usize>(), 481);
        assert!(w.iter().all(|&b| b >= 2));
        // Narrow at the bottom, wide at the top.
        assert_eq!(w[0], 2);
        assert!(w[31] > 30);
    }
}
