//! PNG plots: spectrograms of mixture, estimate and reference, SI-SDR per octave band and per
//! time segment, and a summary of an evaluation set.
//!
//! Drawn with `plotters` into memory and encoded with `png`; the text uses the Ubuntu Light
//! font that egui already ships (`epaint_default_fonts`), so no system font library is
//! involved and the same inputs give byte-identical files.

use super::report::MixtureItem;
use super::sisdr::{BandScore, SegmentScore};
use super::{EvalError, MixtureScores};
use plotters::coord::Shift;
use plotters::prelude::*;
use realfft::RealFftPlanner;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The font family name the plots use.
const FONT: &str = "sans-serif";
/// Colour of the estimate in the plots.
const ESTIMATE: RGBColor = RGBColor(31, 119, 180);
/// Colour of the mixture in the plots.
const MIXTURE: RGBColor = RGBColor(160, 160, 160);
/// Spectrogram window (42.7 ms at 48 kHz).
const SPEC_WINDOW: usize = 2048;
/// Spectrogram dynamic range, dB below the loudest bin of all panels.
const SPEC_RANGE_DB: f64 = 80.0;
/// Lowest frequency shown in spectrograms, Hz.
const SPEC_LOW_HZ: f64 = 50.0;

fn ensure_font() -> Result<(), String> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT)
            .is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err("the embedded plot font cannot be loaded".into())
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Draws a `w × h` picture with `draw` and writes it to `path` as an 8-bit RGB PNG.
fn png(
    path: &Path,
    (w, h): (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<(), EvalError> {
    let fail = |detail: String| EvalError::Plot {
        path: path.to_path_buf(),
        detail,
    };
    ensure_font().map_err(fail)?;
    let mut buf = vec![255u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(err(e)))?;
        draw(&root).map_err(fail)?;
        root.present().map_err(|e| fail(err(e)))?;
    }
    let mut bytes = Vec::new();
    {
        let mut enc = ::png::Encoder::new(&mut bytes, w, h);
        enc.set_color(::png::ColorType::Rgb);
        enc.set_depth(::png::BitDepth::Eight);
        enc.set_compression(::png::Compression::Best);
        let mut writer = enc.write_header().map_err(|e| fail(err(e)))?;
        writer.write_image_data(&buf).map_err(|e| fail(err(e)))?;
        writer.finish().map_err(|e| fail(err(e)))?;
    }
    super::report::write_file(path, &bytes)
}

/// A perceptual dark-to-light colour map (black, purple, red, orange, pale yellow), `v` in
/// `[0, 1]`.
fn colormap(v: f64) -> RGBColor {
    const STOPS: [(f64, [f64; 3]); 5] = [
        (0.0, [0.0, 0.0, 4.0]),
        (0.25, [81.0, 18.0, 124.0]),
        (0.5, [183.0, 55.0, 121.0]),
        (0.75, [252.0, 137.0, 97.0]),
        (1.0, [252.0, 253.0, 191.0]),
    ];
    let v = v.clamp(0.0, 1.0);
    let i = STOPS
        .windows(2)
        .position(|w| v <= w[1].0)
        .unwrap_or(STOPS.len() - 2);
    let ((a, ca), (b, cb)) = (STOPS[i], STOPS[i + 1]);
    let t = (v - a) / (b - a);
    let c = |k: usize| (ca[k] + t * (cb[k] - ca[k])).round() as u8;
    RGBColor(c(0), c(1), c(2))
}

/// Power spectrogram in dB on a `cols × rows` grid: one Hann-windowed frame centred on each
/// column, and for each row (log frequency from [`SPEC_LOW_HZ`] to Nyquist, top row highest)
/// the loudest bin it covers.
fn spectrogram_grid(x: &[f64], sample_rate: u32, cols: usize, rows: usize) -> Vec<Vec<f64>> {
    let n = SPEC_WINDOW;
    let sr = f64::from(sample_rate);
    let window: Vec<f64> = (0..n)
        .map(|i| 0.5 - 0.5 * (std::f64::consts::TAU * i as f64 / n as f64).cos())
        .collect();
    let mut planner = RealFftPlanner::<f64>::new();
    let fft = planner.plan_fft_forward(n);
    let mut buf = vec![0.0; n];
    let mut spec = fft.make_output_vec();
    let high = sr / 2.0;
    let freq = |r: f64| SPEC_LOW_HZ * (high / SPEC_LOW_HZ).powf(r / rows as f64);
    let bins: Vec<(usize, usize)> = (0..rows)
        .map(|row| {
            // Row 0 is the top: the highest frequencies.
            let r = (rows - 1 - row) as f64;
            let lo = (freq(r) / sr * n as f64).round() as usize;
            let hi = (freq(r + 1.0) / sr * n as f64).round() as usize;
            (lo.min(n / 2), hi.clamp(lo + 1, n / 2 + 1))
        })
        .collect();
    (0..cols)
        .map(|c| {
            let centre = ((c as f64 + 0.5) / cols as f64 * x.len() as f64) as isize;
            for (i, (b, w)) in buf.iter_mut().zip(&window).enumerate() {
                let t = centre - (n / 2) as isize + i as isize;
                *b = if t >= 0 && (t as usize) < x.len() {
                    x[t as usize] * w
                } else {
                    0.0
                };
            }
            // The buffers have the plan's lengths, so this cannot fail.
            let _ = fft.process(&mut buf, &mut spec);
            bins.iter()
                .map(|&(lo, hi)| {
                    let p = spec[lo..hi]
                        .iter()
                        .map(|z| z.norm_sqr())
                        .fold(0.0f64, f64::max);
                    10.0 * (p + 1e-20).log10()
                })
                .collect()
        })
        .collect()
}

/// Spectrograms of several signals, one panel each, stacked, on one shared dB scale.
pub fn spectrograms(
    path: &Path,
    panels: &[(&str, &[f64])],
    sample_rate: u32,
) -> Result<(), EvalError> {
    const W: u32 = 960;
    const PANEL_H: u32 = 230;
    let h = PANEL_H * panels.len().max(1) as u32;
    let duration = panels.iter().map(|p| p.1.len()).max().unwrap_or(0).max(1) as f64
        / f64::from(sample_rate.max(1));
    let nyquist = f64::from(sample_rate) / 2.0;
    png(path, (W, h), |root| {
        let areas = root.split_evenly((panels.len().max(1), 1));
        // Plot areas are the same size in every panel; find it from a first layout.
        let mut grids: Vec<Vec<Vec<f64>>> = Vec::new();
        let mut charts = Vec::new();
        for (area, (title, _)) in areas.iter().zip(panels) {
            let chart = ChartBuilder::on(area)
                .caption(*title, (FONT, 17))
                .margin(6)
                .x_label_area_size(36)
                .y_label_area_size(52)
                .build_cartesian_2d(0f64..duration, (SPEC_LOW_HZ..nyquist).log_scale())
                .map_err(err)?;
            charts.push(chart);
        }
        for (chart, (_, x)) in charts.iter().zip(panels) {
            let (cols, rows) = chart.plotting_area().dim_in_pixel();
            grids.push(spectrogram_grid(
                x,
                sample_rate,
                cols as usize,
                rows as usize,
            ));
        }
        let top = grids
            .iter()
            .flatten()
            .flatten()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        for (chart, grid) in charts.iter_mut().zip(&grids) {
            chart
                .configure_mesh()
                .disable_mesh()
                .x_desc("time (s)")
                .y_desc("Hz")
                .label_style((FONT, 13))
                .y_label_formatter(&|v| format!("{v:.0}"))
                .draw()
                .map_err(err)?;
            let plain = chart.plotting_area().strip_coord_spec();
            for (c, col) in grid.iter().enumerate() {
                for (r, db) in col.iter().enumerate() {
                    // 48 levels: the colour steps are invisible and the PNG stays small.
                    let v = ((db - (top - SPEC_RANGE_DB)) / SPEC_RANGE_DB).clamp(0.0, 1.0);
                    let v = (v * 47.0).round() / 47.0;
                    plain
                        .draw_pixel((c as i32, r as i32), &colormap(v))
                        .map_err(err)?;
                }
            }
        }
        Ok(())
    })
}

/// Grouped bars: one group per category, one bar per series (`None`: no bar).
fn bars(
    path: &Path,
    title: &str,
    y_desc: &str,
    categories: &[String],
    series: &[(&str, RGBColor, Vec<Option<f64>>)],
) -> Result<(), EvalError> {
    const W: u32 = 900;
    const H: u32 = 420;
    let values = series.iter().flat_map(|s| s.2.iter().flatten().copied());
    let finite: Vec<f64> = values.filter(|v| v.is_finite()).collect();
    let lo = finite.iter().copied().fold(0.0f64, f64::min);
    let hi = finite.iter().copied().fold(0.0f64, f64::max);
    let pad = ((hi - lo) * 0.08).max(1.0);
    // Room at the top for the legend.
    let (lo, hi) = (lo - if lo < 0.0 { pad } else { 0.0 }, hi + 3.0 * pad);
    let n = categories.len().max(1);
    png(path, (W, H), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 19))
            .margin(10)
            .x_label_area_size(34)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..n as f64, lo..hi)
            .map_err(err)?;
        let label = |x: &f64| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 1e-9 {
                categories.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(2 * n + 1)
            .x_label_formatter(&label)
            .y_desc(y_desc)
            .label_style((FONT, 13))
            .draw()
            .map_err(err)?;
        let k = series.len().max(1) as f64;
        let width = 0.8 / k;
        for (j, (name, color, vals)) in series.iter().enumerate() {
            let rects = vals.iter().enumerate().filter_map(|(i, v)| {
                let v = v.filter(|v| v.is_finite())?;
                let x0 = i as f64 + 0.1 + j as f64 * width;
                Some(Rectangle::new(
                    [
                        (x0, 0.0f64.clamp(lo, hi)),
                        (x0 + width * 0.92, v.clamp(lo, hi)),
                    ],
                    color.filled(),
                ))
            });
            let color = *color;
            chart
                .draw_series(rects)
                .map_err(err)?
                .label(*name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 14))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(err)?;
        Ok(())
    })
}

/// Per-band SI-SDR of the estimate and of the mixture.
pub fn band_plot(
    path: &Path,
    title: &str,
    estimate: &[BandScore],
    mixture: &[BandScore],
) -> Result<(), EvalError> {
    let categories: Vec<String> = estimate
        .iter()
        .map(|b| {
            let c = b.band.center_hz;
            if c >= 1000.0 {
                format!("{}k", c / 1000.0)
            } else {
                format!("{c}")
            }
        })
        .collect();
    let mut series = vec![(
        "estimate",
        ESTIMATE,
        estimate.iter().map(|b| b.si_sdr).collect::<Vec<_>>(),
    )];
    if !mixture.is_empty() {
        series.insert(
            0,
            (
                "mixture",
                MIXTURE,
                mixture.iter().map(|b| b.si_sdr).collect(),
            ),
        );
    }
    bars(path, title, "SI-SDR (dB)", &categories, &series)
}

/// Per-segment SI-SDR of the estimate and of the mixture over time (gaps where the
/// reference is silent).
pub fn time_plot(
    path: &Path,
    title: &str,
    estimate: &[SegmentScore],
    mixture: &[SegmentScore],
) -> Result<(), EvalError> {
    const W: u32 = 900;
    const H: u32 = 380;
    let all = estimate.iter().chain(mixture);
    let finite: Vec<f64> = all
        .clone()
        .filter_map(|s| s.si_sdr)
        .filter(|v| v.is_finite())
        .collect();
    let lo = finite.iter().copied().fold(0.0f64, f64::min) - 2.0;
    let hi = finite.iter().copied().fold(0.0f64, f64::max) + 2.0;
    // Room at the bottom for the legend.
    let lo = lo - (hi - lo) * 0.15;
    let end = all.map(|s| s.end_s).fold(1e-3, f64::max);
    png(path, (W, H), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 19))
            .margin(10)
            .x_label_area_size(34)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..end, lo..hi)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("time (s)")
            .y_desc("SI-SDR (dB)")
            .label_style((FONT, 13))
            .draw()
            .map_err(err)?;
        for (name, color, segs) in [
            ("mixture", MIXTURE, mixture),
            ("estimate", ESTIMATE, estimate),
        ] {
            if segs.is_empty() {
                continue;
            }
            // Runs of consecutive scored segments, each drawn as one line through the
            // segment midpoints.
            let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
            for s in segs {
                match s.si_sdr.filter(|v| v.is_finite()) {
                    Some(v) => {
                        if let Some(run) = runs.last_mut() {
                            run.push(((s.start_s + s.end_s) / 2.0, v.clamp(lo, hi)));
                        }
                    }
                    None => runs.push(Vec::new()),
                }
            }
            let style = color.stroke_width(2);
            let mut first = true;
            for run in runs.into_iter().filter(|r| !r.is_empty()) {
                chart
                    .draw_series(run.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(err)?;
                let line = chart
                    .draw_series(LineSeries::new(run, style))
                    .map_err(err)?;
                if first {
                    line.label(name).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
                    });
                    first = false;
                }
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 14))
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(err)?;
        Ok(())
    })
}

/// SI-SDR of mixture and estimate for every mixture of an evaluation set.
pub fn summary_plot(path: &Path, items: &[MixtureItem]) -> Result<(), EvalError> {
    let categories: Vec<String> = items
        .iter()
        .map(|m| m.id.split('_').next().unwrap_or(&m.id).to_string())
        .collect();
    bars(
        path,
        "SI-SDR of each mixture and of its estimate",
        "SI-SDR (dB)",
        &categories,
        &[
            (
                "mixture",
                MIXTURE,
                items.iter().map(|m| m.scores.si_sdr_mixture).collect(),
            ),
            (
                "estimate",
                ESTIMATE,
                items.iter().map(|m| m.scores.si_sdr).collect(),
            ),
        ],
    )
}

/// The plots of one scored mixture, in `dir`: `<id>_spectrogram.png` (mixture, estimate,
/// reference speech), `<id>_bands.png` and `<id>_time.png`. Returns their paths.
pub fn mixture_plots(
    dir: &Path,
    id: &str,
    mixture: &[f64],
    estimate: &[f64],
    speech: &[f64],
    sample_rate: u32,
    scores: &MixtureScores,
) -> Result<Vec<PathBuf>, EvalError> {
    let spec = dir.join(format!("{id}_spectrogram.png"));
    let mut panels: Vec<(&str, &[f64])> = Vec::new();
    if !mixture.is_empty() {
        panels.push(("mixture", mixture));
    }
    panels.push(("estimate", estimate));
    panels.push(("reference speech", speech));
    spectrograms(&spec, &panels, sample_rate)?;
    let bands = dir.join(format!("{id}_bands.png"));
    band_plot(
        &bands,
        &format!("{id}: SI-SDR per octave band"),
        &scores.bands,
        &scores.bands_mixture,
    )?;
    let time = dir.join(format!("{id}_time.png"));
    time_plot(
        &time,
        &format!("{id}: SI-SDR per segment"),
        &scores.segments,
        &scores.segments_mixture,
    )?;
    Ok(vec![spec, bands, time])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colormap_runs_dark_to_light() {
        let lum =
            |c: RGBColor| 0.3 * f64::from(c.0) + 0.59 * f64::from(c.1) + 0.11 * f64::from(c.2);
        let mut last = -1.0;
        for i in 0..=20 {
            let l = lum(colormap(f64::from(i) / 20.0));
            assert!(l > last, "{i}");
            last = l;
        }
        assert_eq!(colormap(-1.0), colormap(0.0));
        assert_eq!(colormap(2.0), RGBColor(252, 253, 191));
    }

    #[test]
    fn spectrogram_puts_a_tone_in_its_row() {
        // A 1 kHz tone: in every column the loudest row is the one covering 1 kHz.
        let sr = 48_000;
        let x: Vec<f64> = (0..24_000)
            .map(|i| (std::f64::consts::TAU * 1000.0 * f64::from(i) / 48_000.0).sin())
            .collect();
        let rows = 200;
        let grid = spectrogram_grid(&x, sr, 10, rows);
        let freq = |r: f64| SPEC_LOW_HZ * (24_000.0 / SPEC_LOW_HZ).powf(r / rows as f64);
        for col in &grid[1..9] {
            let (best, _) = col
                .iter()
                .enumerate()
                .fold(
                    (0, f64::NEG_INFINITY),
                    |b, (i, v)| if *v > b.1 { (i, *v) } else { b },
                );
            let r = (rows - 1 - best) as f64;
            assert!(freq(r) <= 1030.0 && freq(r + 1.0) >= 970.0, "row {best}");
        }
    }

    #[test]
    fn plots_are_written_and_deterministic() {
        let dir = std::env::temp_dir().join(format!("voxsift-plot-{}", std::process::id()));
        let sr = 16_000;
        let s: Vec<f64> = (0..32_000)
            .map(|i| (f64::from(i) * 0.05).sin() * (f64::from(i) * 0.0004).sin())
            .collect();
        let mix: Vec<f64> = s
            .iter()
            .enumerate()
            .map(|(i, v)| v + 0.3 * (i as f64 * 0.9).sin())
            .collect();
        let scores = super::super::score_mixture(
            &super::super::Inputs {
                estimate: &s,
                speech: &s,
                other: None,
                mixture: Some(&mix),
                sample_rate: sr,
            },
            &super::super::ScoreOptions {
                bss_taps: 8,
                segment_seconds: 0.5,
            },
        );
        let a = mixture_plots(&dir.join("a"), "x", &mix, &s, &s, sr, &scores).expect("plots");
        let b = mixture_plots(&dir.join("b"), "x", &mix, &s, &s, sr, &scores).expect("plots");
        for (pa, pb) in a.iter().zip(&b) {
            let (da, db) = (
                std::fs::read(pa).expect("written"),
                std::fs::read(pb).expect("written"),
            );
            assert!(da.starts_with(b"\x89PNG\r\n\x1a\n"), "{}", pa.display());
            assert_eq!(da, db, "{}", pa.display());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
