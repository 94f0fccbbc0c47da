//! Evaluation reports: JSON (every number rounded to 4 decimals, keys sorted, so the same
//! inputs give byte-identical files) and Markdown tables.
//!
//! In JSON, `null` marks a score that is undefined (a silent reference, too little speech
//! for STOI) or infinite (an estimate exactly proportional to its reference).

use super::bss::BssScores;
use super::residual::{MusicLeak, SpeechDamage};
use super::sisdr::octave_bands;
use super::{EvalError, MixtureScores, ScoreOptions};
use crate::render::RenderOptions;
use serde::Serialize;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;
use voxsift_engine::{ChannelMode, RunMode};

/// Decimal places kept in JSON.
pub const JSON_DECIMALS: i32 = 4;

/// The render settings of a report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RenderSettings {
    /// The model.
    pub model: String,
    /// Wet/dry mix.
    pub wet: f32,
    /// Mask sharpness.
    pub beta: f32,
    /// Attenuation floor, dB (`None`: off).
    pub floor_db: Option<f32>,
    /// Output gain, dB.
    pub gain_db: f32,
    /// `linked` or `independent`.
    pub channels: String,
    /// `offline` or `realtime`.
    pub mode: String,
    /// Host block sizes.
    pub blocks: Vec<usize>,
    /// Inference threads.
    pub threads: usize,
}

impl RenderSettings {
    /// The settings of `opts`, with the model described as `model`.
    pub fn new(opts: &RenderOptions, model: &str) -> Self {
        Self {
            model: model.to_string(),
            wet: opts.params.wet,
            beta: opts.params.beta,
            floor_db: opts.params.floor_db,
            gain_db: opts.params.output_gain_db,
            channels: match opts.channel_mode {
                ChannelMode::Linked => "linked",
                ChannelMode::Independent => "independent",
            }
            .into(),
            mode: match opts.run_mode {
                RunMode::Offline => "offline",
                RunMode::Realtime => "realtime",
            }
            .into(),
            blocks: opts.blocks.clone(),
            threads: opts.threads,
        }
    }
}

/// Where a report's estimates came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EstimatesInfo {
    /// `render` (rendered by the evaluation) or `files` (read from a folder).
    pub source: String,
    /// The folder they were read from.
    pub dir: Option<String>,
    /// The render settings.
    pub settings: Option<RenderSettings>,
}

/// An input that was not scored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    /// Its path relative to the evaluation folder.
    pub file: String,
    /// Why.
    pub reason: String,
}

/// A scored mixture.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MixtureItem {
    /// File name without extension.
    pub id: String,
    /// Path relative to the evaluation folder.
    pub file: String,
    /// The other stem is a second talker (reported apart, not in the means).
    pub talker_mix: bool,
    /// The scores.
    #[serde(flatten)]
    pub scores: MixtureScores,
}

/// A scored speech-only input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpeechItem {
    /// File name without extension.
    pub id: String,
    /// Path relative to the evaluation folder.
    pub file: String,
    /// Length scored, seconds.
    pub seconds: f64,
    /// The scores.
    #[serde(flatten)]
    pub scores: SpeechDamage,
}

/// A scored music-only input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MusicItem {
    /// File name without extension.
    pub id: String,
    /// Path relative to the evaluation folder.
    pub file: String,
    /// Length scored, seconds.
    pub seconds: f64,
    /// The scores.
    #[serde(flatten)]
    pub scores: MusicLeak,
}

/// The mean of the finite values, `None` if there are none.
pub fn mean(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let (sum, n) = values
        .into_iter()
        .flatten()
        .filter(|v| v.is_finite())
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// Means over a group of mixtures.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct MixtureMeans {
    /// Number of mixtures.
    pub count: usize,
    /// Mean SI-SDR of the estimates, dB.
    pub si_sdr: Option<f64>,
    /// Mean SI-SDR of the mixtures, dB.
    pub si_sdr_mixture: Option<f64>,
    /// Mean SI-SDR improvement, dB.
    pub si_sdr_improvement: Option<f64>,
    /// Mean SDR, dB.
    pub sdr: Option<f64>,
    /// Mean SIR, dB.
    pub sir: Option<f64>,
    /// Mean SAR, dB.
    pub sar: Option<f64>,
    /// Mean STOI of the estimates.
    pub stoi: Option<f64>,
    /// Mean STOI of the mixtures.
    pub stoi_mixture: Option<f64>,
    /// Mean music residual of the estimates, dB.
    pub residual_db: Option<f64>,
    /// Mean music residual of the mixtures, dB.
    pub residual_mixture_db: Option<f64>,
}

impl MixtureMeans {
    fn of<'a>(items: impl Iterator<Item = &'a MixtureItem> + Clone) -> Self {
        let m = |f: fn(&MixtureScores) -> Option<f64>| mean(items.clone().map(|i| f(&i.scores)));
        Self {
            count: items.clone().count(),
            si_sdr: m(|s| s.si_sdr),
            si_sdr_mixture: m(|s| s.si_sdr_mixture),
            si_sdr_improvement: m(|s| s.si_sdr_improvement),
            sdr: m(|s| s.bss.map(|b| b.sdr)),
            sir: m(|s| s.bss.and_then(|b| b.sir)),
            sar: m(|s| s.bss.and_then(|b| b.sar)),
            stoi: m(|s| s.stoi),
            stoi_mixture: m(|s| s.stoi_mixture),
            residual_db: m(|s| s.residual_db),
            residual_mixture_db: m(|s| s.residual_mixture_db),
        }
    }
}

/// Means over the speech-only inputs.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct SpeechMeans {
    /// Number of files.
    pub count: usize,
    /// Mean SI-SDR of output against input, dB.
    pub si_sdr: Option<f64>,
    /// Mean level change, dB.
    pub level_change_db: Option<f64>,
    /// Mean STOI.
    pub stoi: Option<f64>,
}

/// Means over the music-only inputs.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct MusicMeans {
    /// Number of files.
    pub count: usize,
    /// Mean whole-file leak, dB.
    pub leak_db: Option<f64>,
    /// Mean worst-segment leak, dB.
    pub worst_segment_leak_db: Option<f64>,
}

/// Means per group.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Summary {
    /// Mixtures whose other stem is music or noise.
    pub mixtures: MixtureMeans,
    /// Mixtures whose other stem is a second talker.
    pub talker_mixes: MixtureMeans,
    /// Speech-only inputs.
    pub speech: SpeechMeans,
    /// Music-only inputs.
    pub music: MusicMeans,
}

impl Summary {
    /// The means of `report`'s items.
    pub fn of(report: &SetReport) -> Self {
        let sp = &report.speech;
        let mu = &report.music;
        Self {
            mixtures: MixtureMeans::of(report.mixtures.iter().filter(|m| !m.talker_mix)),
            talker_mixes: MixtureMeans::of(report.mixtures.iter().filter(|m| m.talker_mix)),
            speech: SpeechMeans {
                count: sp.len(),
                si_sdr: mean(sp.iter().map(|s| s.scores.si_sdr)),
                level_change_db: mean(sp.iter().map(|s| s.scores.level_change_db)),
                stoi: mean(sp.iter().map(|s| s.scores.stoi)),
            },
            music: MusicMeans {
                count: mu.len(),
                leak_db: mean(mu.iter().map(|m| m.scores.leak_db)),
                worst_segment_leak_db: mean(mu.iter().map(|m| m.scores.worst_segment_leak_db)),
            },
        }
    }
}

/// The result of an evaluation-set run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SetReport {
    /// The program and version that made it.
    pub tool: String,
    /// Where the estimates came from.
    pub estimates: EstimatesInfo,
    /// Score settings.
    pub score: ScoreOptions,
    /// Only the first this many seconds of each input were scored.
    pub max_seconds: Option<f64>,
    /// Scored mixtures.
    pub mixtures: Vec<MixtureItem>,
    /// Scored speech-only inputs.
    pub speech: Vec<SpeechItem>,
    /// Scored music-only inputs.
    pub music: Vec<MusicItem>,
    /// Inputs not scored.
    pub skipped: Vec<Skipped>,
    /// Means.
    pub summary: Summary,
}

/// Rounds every float in `v` to [`JSON_DECIMALS`] places (and `-0` to `0`).
fn round_numbers(v: &mut Value) {
    match v {
        Value::Number(n) if !(n.is_i64() || n.is_u64()) => {
            if let Some(x) = n.as_f64() {
                let scale = 10f64.powi(JSON_DECIMALS);
                let r = (x * scale).round() / scale;
                let r = if r == 0.0 { 0.0 } else { r };
                *v = serde_json::Number::from_f64(r).map_or(Value::Null, Value::Number);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(round_numbers),
        Value::Object(o) => o.values_mut().for_each(round_numbers),
        _ => {}
    }
}

/// `value` as pretty JSON with every float rounded to [`JSON_DECIMALS`] places, keys sorted,
/// and a final newline.
pub fn to_json(value: &impl Serialize) -> Result<String, EvalError> {
    let mut v =
        serde_json::to_value(value).map_err(|e| EvalError::Invalid(format!("JSON: {e}")))?;
    round_numbers(&mut v);
    let mut s =
        serde_json::to_string_pretty(&v).map_err(|e| EvalError::Invalid(format!("JSON: {e}")))?;
    s.push('\n');
    Ok(s)
}

/// Writes `contents` to `path`, creating its folder.
pub fn write_file(path: &Path, contents: &[u8]) -> Result<(), EvalError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| EvalError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(path, contents).map_err(|source| EvalError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// A number with `decimals` places, `inf` / `-inf`, or `–` when undefined.
pub fn fmt_num(v: Option<f64>, decimals: usize) -> String {
    match v {
        None => "–".into(),
        Some(x) if x == f64::INFINITY => "inf".into(),
        Some(x) if x == f64::NEG_INFINITY => "-inf".into(),
        Some(x) => {
            let s = format!("{x:.decimals$}");
            // No "-0.00".
            if s.trim_start_matches('-')
                .chars()
                .all(|c| c == '0' || c == '.')
            {
                s.trim_start_matches('-').to_string()
            } else {
                s
            }
        }
    }
}

fn arrow(from: Option<f64>, to: Option<f64>, decimals: usize) -> String {
    format!("{} → {}", fmt_num(from, decimals), fmt_num(to, decimals))
}

fn mixture_table(out: &mut String, items: &[&MixtureItem], means: Option<&MixtureMeans>) {
    out.push_str(
        "| file | SI-SDR | SI-SDRi | SDR | SIR | SAR | STOI (mix → out) | residual (mix → out) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let bss = |b: Option<BssScores>| {
        (
            b.map(|b| b.sdr),
            b.and_then(|b| b.sir),
            b.and_then(|b| b.sar),
        )
    };
    for i in items {
        let s = &i.scores;
        let (sdr, sir, sar) = bss(s.bss);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            i.id,
            fmt_num(s.si_sdr, 2),
            fmt_num(s.si_sdr_improvement, 2),
            fmt_num(sdr, 2),
            fmt_num(sir, 2),
            fmt_num(sar, 2),
            arrow(s.stoi_mixture, s.stoi, 3),
            arrow(s.residual_mixture_db, s.residual_db, 2),
        );
    }
    if let Some(m) = means {
        let _ = writeln!(
            out,
            "| **mean** | **{}** | **{}** | {} | {} | {} | {} | {} |",
            fmt_num(m.si_sdr, 2),
            fmt_num(m.si_sdr_improvement, 2),
            fmt_num(m.sdr, 2),
            fmt_num(m.sir, 2),
            fmt_num(m.sar, 2),
            arrow(m.stoi_mixture, m.stoi, 3),
            arrow(m.residual_mixture_db, m.residual_db, 2),
        );
    }
}

/// The report as Markdown: one table per kind of input, the per-band SI-SDR, and the
/// skipped inputs. Numbers have fixed decimals (dB: 2, STOI: 3).
pub fn to_markdown(report: &SetReport) -> String {
    let mut out = String::new();
    match &report.estimates.settings {
        Some(r) => {
            let _ = writeln!(
                out,
                "Estimates rendered by {}: model {}, wet {}, beta {}, floor {}, gain {} dB, {} \
                 channels, {}, blocks {:?}, {} thread(s).",
                report.tool,
                r.model,
                r.wet,
                r.beta,
                r.floor_db
                    .map_or_else(|| "off".into(), |f| format!("{f} dB")),
                r.gain_db,
                r.channels,
                r.mode,
                r.blocks,
                r.threads
            );
        }
        None => {
            let _ = writeln!(
                out,
                "Estimates read from `{}`.",
                report.estimates.dir.as_deref().unwrap_or("?")
            );
        }
    }
    if let Some(s) = report.max_seconds {
        let _ = writeln!(out, "Only the first {s} s of each input were scored.");
    }
    out.push('\n');
    let music: Vec<&MixtureItem> = report.mixtures.iter().filter(|m| !m.talker_mix).collect();
    let talkers: Vec<&MixtureItem> = report.mixtures.iter().filter(|m| m.talker_mix).collect();
    if !music.is_empty() {
        out.push_str("**Mixtures** (speech + music or noise; dB except STOI):\n\n");
        mixture_table(&mut out, &music, Some(&report.summary.mixtures));
        out.push('\n');
    }
    if !talkers.is_empty() {
        out.push_str(
            "**Second talker** (the other stem is a voice: not expected to be removed; not in \
             the means):\n\n",
        );
        mixture_table(&mut out, &talkers, None);
        out.push('\n');
    }
    if !report.mixtures.is_empty() {
        let sr_bands = octave_bands(48_000);
        let centers: Vec<f64> = report
            .mixtures
            .first()
            .map(|m| m.scores.bands.iter().map(|b| b.band.center_hz).collect())
            .unwrap_or_else(|| sr_bands.iter().map(|b| b.center_hz).collect());
        out.push_str(
            "**SI-SDR per octave band** (dB, estimate; – where the reference has under −50 dB \
             of its energy):\n\n| file |",
        );
        for c in &centers {
            let label = if *c >= 1000.0 {
                format!(" {}k |", c / 1000.0)
            } else {
                format!(" {c} |")
            };
            out.push_str(&label);
        }
        out.push_str("\n|---|");
        out.push_str(&"---:|".repeat(centers.len()));
        out.push('\n');
        for m in &report.mixtures {
            let _ = write!(out, "| {} |", m.id);
            for b in &m.scores.bands {
                let _ = write!(out, " {} |", fmt_num(b.si_sdr, 1));
            }
            out.push('\n');
        }
        out.push('\n');
    }
    if !report.speech.is_empty() {
        out.push_str(
            "**Speech only** (damage: output against input):\n\n\
             | file | SI-SDR | level change | STOI |\n|---|---:|---:|---:|\n",
        );
        for s in &report.speech {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                s.id,
                fmt_num(s.scores.si_sdr, 2),
                fmt_num(s.scores.level_change_db, 2),
                fmt_num(s.scores.stoi, 3)
            );
        }
        let m = &report.summary.speech;
        let _ = writeln!(
            out,
            "| **mean** | **{}** | {} | {} |\n",
            fmt_num(m.si_sdr, 2),
            fmt_num(m.level_change_db, 2),
            fmt_num(m.stoi, 3)
        );
    }
    if !report.music.is_empty() {
        let seg = report.score.segment_seconds;
        let _ = write!(
            out,
            "**Music only** (leak: output level against input, dB):\n\n\
             | file | leak | worst {seg} s |\n|---|---:|---:|\n"
        );
        for m in &report.music {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                m.id,
                fmt_num(m.scores.leak_db, 2),
                fmt_num(m.scores.worst_segment_leak_db, 2)
            );
        }
        let m = &report.summary.music;
        let _ = writeln!(
            out,
            "| **mean** | **{}** | {} |\n",
            fmt_num(m.leak_db, 2),
            fmt_num(m.worst_segment_leak_db, 2)
        );
    }
    if !report.skipped.is_empty() {
        out.push_str("Not scored:\n\n");
        for s in &report.skipped {
            let _ = writeln!(out, "- `{}`: {}", s.file, s.reason);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_rounds_and_is_stable() {
        #[derive(Serialize)]
        struct T {
            b: f64,
            a: Option<f64>,
            c: Vec<f64>,
            n: usize,
        }
        let t = T {
            b: 1.234_567_89,
            a: None,
            c: vec![f64::INFINITY, -0.000_01, 2.5],
            n: 7,
        };
        let s = to_json(&t).expect("serialises");
        assert_eq!(
            s,
            "{\n  \"a\": null,\n  \"b\": 1.2346,\n  \"c\": [\n    null,\n    0.0,\n    2.5\n  ],\n  \"n\": 7\n}\n"
        );
    }

    #[test]
    fn numbers_are_formatted_fixed() {
        assert_eq!(fmt_num(Some(1.0), 2), "1.00");
        assert_eq!(fmt_num(Some(-0.001), 2), "0.00");
        assert_eq!(fmt_num(Some(-1.005), 1), "-1.0");
        assert_eq!(fmt_num(None, 2), "–");
        assert_eq!(fmt_num(Some(f64::INFINITY), 2), "inf");
        assert_eq!(
            mean([Some(1.0), None, Some(f64::INFINITY), Some(3.0)]),
            Some(2.0)
        );
        assert_eq!(mean([None]), None);
    }
}
