//! `voxsift`: the command-line renderer, a thin shell over the library.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use voxsift_app::batch::{self, BatchOptions, BatchReport, FileReport, FileStatus, Job, Observer};
use voxsift_app::cache::MaskCache;
use voxsift_app::io::{read_audio, write_wav, Audio, SampleFormat};
use voxsift_app::post::PostChain;
use voxsift_app::render::{render, ModelChoice, Preset, RenderOptions, Schedule};
use voxsift_engine::{ChannelMode, EngineParams, RunMode};
use voxsift_models::fusion::Fusion;

#[derive(Parser)]
#[command(
    name = "voxsift",
    version,
    about = "Pull speech out of a mix with neural models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render a file through the speech isolator.
    Render(RenderArgs),
    /// Render every audio file under a folder to WAV files under another, mirroring the tree.
    Batch(BatchArgs),
    /// Score an estimate against reference stems: SI-SDR(i), SDR/SIR/SAR, STOI, music
    /// residual, SI-SDR per band and per time; optional JSON and PNG plots.
    Eval(EvalArgs),
    /// Render (or read) and score every file of an evaluation folder; writes report.json,
    /// report.md and PNG plots.
    EvalSet(EvalSetArgs),
    /// Show version, models, ONNX Runtime and latencies.
    Info,
}

#[derive(Clone, Copy, ValueEnum)]
enum Channels {
    /// One mask from the channel mean, applied to all channels.
    Linked,
    /// One mask per channel.
    Independent,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// Wait for every mask: deterministic, the reference render.
    Offline,
    /// Behave like a live host: blocks at the pace of real time, late masks counted.
    RealtimeSim,
}

#[derive(clap::Args)]
struct RenderArgs {
    /// Input audio (WAV, FLAC, OGG, MP3; any rate and channel count).
    input: PathBuf,
    /// Output WAV file.
    #[arg(short, long)]
    output: PathBuf,
    #[command(flatten)]
    settings: Settings,
    /// Overwrite the output if it exists.
    #[arg(short, long)]
    force: bool,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    post: PostArgs,
}

#[derive(clap::Args)]
struct BatchArgs {
    /// Input folder: audio files (wav, flac, mp3, ogg, m4a, aac, aiff, caf) anywhere under it.
    in_dir: PathBuf,
    /// Output folder (created if missing): one WAV per input, at the same relative path.
    out_dir: PathBuf,
    #[command(flatten)]
    settings: Settings,
    /// Files rendered at once, each with its own model worker [default: the cores this process
    /// may use, divided by --threads].
    #[arg(short, long, value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
    /// Re-render files whose output exists (by default they are skipped, so a stopped batch
    /// resumes where it was).
    #[arg(short, long)]
    force: bool,
    /// No progress bars (the summary is still printed).
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    post: PostArgs,
}

/// Render settings shared by `render` and `batch`.
#[derive(clap::Args)]
struct Settings {
    /// Wet/dry mix, 0..1.
    #[arg(long, default_value_t = 1.0)]
    wet: f32,
    /// Mask sharpness (1 = the model's own mask; above 1 removes more, below 1 less).
    #[arg(long, default_value_t = EngineParams::default().beta)]
    beta: f32,
    /// Attenuation floor in dB (e.g. -30); off when not given.
    #[arg(long, allow_hyphen_values = true)]
    floor_db: Option<f32>,
    /// Output gain in dB.
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    gain_db: f32,
    /// Channel handling.
    #[arg(long, value_enum, default_value_t = Channels::Linked)]
    channels: Channels,
    /// Offline (default) or a realtime simulation.
    #[arg(long, value_enum, default_value_t = Mode::Offline)]
    mode: Mode,
    /// Host block size in samples.
    #[arg(long, default_value_t = 512)]
    block: usize,
    /// Output sample format: 32 (float), 24 or 16 bits.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(16..=32))]
    bits: u16,
    /// A directory of stateful DFN3 graphs to use instead of the embedded ones.
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Inference threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// DeepFilterNet3 graph calls over N frames at once (offline, Live only). From 8 frames
    /// on inference costs about 2.5 times less, the latency grows by N - 1 frames of 10 ms,
    /// and the output is no longer bit-identical to the default of 1, which is what the plugin
    /// runs (it stays deterministic; the model's outputs differ by about 1e-6).
    #[arg(long, default_value_t = 1)]
    frames_per_call: usize,
    /// Execution provider: cpu, cuda, coreml or directml. One that cannot start falls back to
    /// the CPU, and the reason is printed.
    #[arg(long, default_value = "cpu")]
    provider: voxsift_models::runtime::Provider,
    /// Keep the models' masks in DIR, and reuse them (no inference) when the same input is
    /// rendered again with the same models and inference settings; offline mode only
    /// [default: $XDG_CACHE_HOME/voxsift/masks, else ~/.cache/voxsift/masks].
    #[arg(long, value_name = "DIR")]
    mask_cache: Option<PathBuf>,
    /// Neither read nor write the mask cache.
    #[arg(long, conflicts_with = "mask_cache")]
    no_mask_cache: bool,
    /// The synthetic test model with this lookahead instead of DFN3 (no ONNX Runtime needed).
    #[arg(long, hide = true, conflicts_with = "model_dir")]
    synthetic_model: Option<usize>,
    /// A model to run; repeat it to run several at once, their masks fused per bin: dfn3,
    /// synthetic[:LOOKAHEAD[:RATE[:CUTOFF_HZ]]] (test model), or a model directory (a
    /// separator's, with model.toml, or DFN3 graphs).
    #[arg(
        long = "model",
        value_name = "MODEL",
        conflicts_with_all = ["model_dir", "synthetic_model"]
    )]
    models: Vec<String>,
    /// How the masks of several --model are fused per bin: max (the largest weighted gain),
    /// mean (weighted) or min [default: max].
    #[arg(long, value_name = "RULE")]
    fuse: Option<Fusion>,
    /// The weight of each --model in the fusion, in the same order (default 1 each).
    #[arg(long = "weight", value_name = "W")]
    weights: Vec<f32>,
    /// The separator model directory of `--preset studio` [default: models/local/htdemucs, where
    /// `cargo xtask export-model htdemucs` writes it, or models/htdemucs].
    #[arg(long, value_name = "DIR")]
    separator: Option<PathBuf>,
    /// Separator window: audio per run in ms (default: the model's own).
    #[arg(long, value_name = "MS")]
    window_ms: Option<f64>,
    /// Separator step: how far consecutive runs advance, in ms (default: the model's own).
    #[arg(long, value_name = "MS")]
    step_ms: Option<f64>,
    /// Separator lookahead: future context after the part used, in ms (default: the model's
    /// own).
    #[arg(long, value_name = "MS")]
    lookahead_ms: Option<f64>,
    /// The model preset, from `--preset live|studio` (parsed with the post chain flags).
    #[arg(skip)]
    preset: Option<Preset>,
}

/// The post chain flags shared by `render` and `batch`.
#[derive(clap::Args)]
#[command(next_help_heading = "Post chain (offline, after the engine)")]
struct PostArgs {
    /// Run the post chain: high-pass 70 Hz (4th-order Butterworth), high shelf 12 kHz -3 dB,
    /// loudness normalisation to -16 LUFS with a -1 dBTP true-peak ceiling.
    #[arg(long)]
    post: bool,
    /// `live` or `studio`: the model preset (Live: DeepFilterNet3 alone, lowest latency;
    /// Studio: DeepFilterNet3 fused by max with the --separator model). Or a TOML file of
    /// post-chain settings (implies --post; the flags below override it). May be given twice,
    /// once for each.
    #[arg(long, value_name = "live|studio|FILE")]
    preset: Vec<PathBuf>,
    /// No high-pass.
    #[arg(long, conflicts_with = "highpass_hz")]
    no_highpass: bool,
    /// High-pass corner (-3 dB) in Hz [default: 70].
    #[arg(long, value_name = "HZ")]
    highpass_hz: Option<f32>,
    /// No high shelf.
    #[arg(long, conflicts_with_all = ["shelf_hz", "shelf_db"])]
    no_shelf: bool,
    /// High-shelf midpoint in Hz [default: 12000].
    #[arg(long, value_name = "HZ")]
    shelf_hz: Option<f32>,
    /// High-shelf gain in dB [default: -3].
    #[arg(long, value_name = "DB", allow_hyphen_values = true)]
    shelf_db: Option<f32>,
    /// No loudness normalisation.
    #[arg(long, conflicts_with_all = ["lufs", "true_peak_db"])]
    no_loudness: bool,
    /// Target integrated loudness in LUFS [default: -16].
    #[arg(long, value_name = "LUFS", allow_hyphen_values = true)]
    lufs: Option<f64>,
    /// True-peak ceiling in dBTP [default: -1]; when it would be exceeded, the gain stops
    /// there (no limiter) and the summary says so.
    #[arg(long, value_name = "DBTP", allow_hyphen_values = true)]
    true_peak_db: Option<f64>,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Render(a) => cmd_render(a),
        Command::Batch(a) => cmd_batch(a),
        Command::Eval(a) => cmd_eval(a),
        Command::EvalSet(a) => cmd_eval_set(a),
        Command::Info => cmd_info(),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Checks the shared settings and turns them into render options and an output format.
fn render_options(s: &Settings) -> Result<(RenderOptions, SampleFormat)> {
    if !(0.0..=1.0).contains(&s.wet) {
        bail!("--wet must be between 0 and 1");
    }
    if !(0.1..=10.0).contains(&s.beta) {
        bail!("--beta must be between 0.1 and 10");
    }
    if s.block == 0 || s.block > 65536 {
        bail!("--block must be between 1 and 65536");
    }
    let fmt = match s.bits {
        16 => SampleFormat::I16,
        24 => SampleFormat::I24,
        32 => SampleFormat::F32,
        b => bail!("--bits must be 16, 24 or 32, not {b}"),
    };
    let model = model_choice(s)?;
    let opts = RenderOptions {
        params: EngineParams {
            wet: s.wet,
            beta: s.beta,
            floor_db: s.floor_db,
            output_gain_db: s.gain_db,
            bypass: false,
        },
        channel_mode: match s.channels {
            Channels::Linked => ChannelMode::Linked,
            Channels::Independent => ChannelMode::Independent,
        },
        run_mode: match s.mode {
            Mode::Offline => RunMode::Offline,
            Mode::RealtimeSim => RunMode::Realtime,
        },
        pace: matches!(s.mode, Mode::RealtimeSim),
        blocks: vec![s.block],
        model,
        schedule: Schedule {
            window_ms: s.window_ms,
            step_ms: s.step_ms,
            lookahead_ms: s.lookahead_ms,
            ..Schedule::default()
        },
        threads: s.threads.max(1),
        provider: s.provider,
        mask_cache: if s.no_mask_cache {
            None
        } else {
            s.mask_cache
                .clone()
                .map(MaskCache::new)
                .or_else(MaskCache::at_default_dir)
        },
        ..RenderOptions::default()
    };
    Ok((opts, fmt))
}

/// Splits `--preset` values into the model preset (`live`, `studio`) and the post-chain
/// preset file; at most one of each.
fn presets(p: &PostArgs) -> Result<(Option<Preset>, Option<&PathBuf>)> {
    let mut model = None;
    let mut file = None;
    for v in &p.preset {
        let name = v.to_str().and_then(|t| t.parse::<Preset>().ok());
        match name {
            Some(preset) if !v.is_file() => {
                if model.replace(preset).is_some() {
                    bail!("--preset live|studio was given twice");
                }
            }
            _ => {
                if file.replace(v).is_some() {
                    bail!("--preset FILE (post-chain settings) was given twice");
                }
            }
        }
    }
    Ok((model, file))
}

/// The models the settings ask for: `--preset`, `--model` (fused when repeated), or the
/// legacy `--model-dir`/`--synthetic-model`; DFN3 by default.
fn model_choice(s: &Settings) -> Result<ModelChoice> {
    if s.frames_per_call != 1 {
        let max = voxsift_models::dfn3::MAX_FRAMES_PER_CALL;
        if !(1..=max).contains(&s.frames_per_call) {
            bail!("--frames-per-call must be from 1 to {max}");
        }
        if !matches!(s.mode, Mode::Offline) {
            bail!("--frames-per-call is for offline renders: it adds latency");
        }
        let live = s.preset != Some(Preset::Studio)
            && s.models.is_empty()
            && s.model_dir.is_none()
            && s.synthetic_model.is_none();
        if !live {
            bail!(
                "--frames-per-call runs the embedded DeepFilterNet3 alone (Live): not with \
                 --preset studio, --model, --model-dir or --synthetic-model"
            );
        }
    }
    let live = match (&s.synthetic_model, &s.model_dir) {
        (Some(la), _) => ModelChoice::Synthetic(*la),
        (None, Some(dir)) => ModelChoice::Dfn3Dir(dir.clone()),
        (None, None) => ModelChoice::Dfn3,
    };
    if s.preset.is_some() && !s.models.is_empty() {
        bail!("--preset live|studio and --model both choose the models: give one of them");
    }
    if s.separator.is_some() && s.preset != Some(Preset::Studio) {
        bail!("--separator is the separator of --preset studio; to run it alone, use --model DIR");
    }
    if s.models.len() < 2 && s.fuse.is_some() {
        bail!("--fuse combines several models: give --model at least twice");
    }
    if !s.weights.is_empty() && s.weights.len() != s.models.len() {
        bail!(
            "give one --weight per --model ({} models, {} weights)",
            s.models.len(),
            s.weights.len()
        );
    }
    let model = match (s.preset, s.models.as_slice()) {
        (Some(Preset::Studio), _) => {
            let dir = s
                .separator
                .clone()
                .unwrap_or_else(voxsift_app::render::default_separator_dir);
            voxsift_app::render::check_separator_dir(&dir)?;
            Preset::Studio.models(live, ModelChoice::Separator(dir))
        }
        (Some(Preset::Live), _) | (None, []) => live,
        (None, [one]) => ModelChoice::parse(one)?,
        (None, many) => ModelChoice::Fused {
            members: many
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    Ok((
                        ModelChoice::parse(m)?,
                        s.weights.get(i).copied().unwrap_or(1.0),
                    ))
                })
                .collect::<Result<_>>()?,
            rule: s.fuse.unwrap_or_default(),
        },
    };
    let model = match model {
        ModelChoice::Dfn3 if s.frames_per_call > 1 => ModelChoice::Dfn3Batched(s.frames_per_call),
        m => m,
    };
    model.check()?;
    let schedule = [
        ("--window-ms", s.window_ms),
        ("--step-ms", s.step_ms),
        ("--lookahead-ms", s.lookahead_ms),
    ];
    for (flag, v) in schedule {
        if v.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
            bail!("{flag} must be a duration in ms, 0 or more");
        }
    }
    Ok(model)
}

/// The post chain asked for, if any: the preset (or the defaults), then the flags.
fn post_chain(p: &PostArgs) -> Result<Option<PostChain>> {
    let file = presets(p)?.1;
    if !p.post && file.is_none() {
        let given = [
            (p.no_highpass, "--no-highpass"),
            (p.highpass_hz.is_some(), "--highpass-hz"),
            (p.no_shelf, "--no-shelf"),
            (p.shelf_hz.is_some(), "--shelf-hz"),
            (p.shelf_db.is_some(), "--shelf-db"),
            (p.no_loudness, "--no-loudness"),
            (p.lufs.is_some(), "--lufs"),
            (p.true_peak_db.is_some(), "--true-peak-db"),
        ];
        if let Some((_, flag)) = given.iter().find(|(on, _)| *on) {
            bail!("{flag} sets up the post chain: add --post (or --preset FILE) to run it");
        }
        return Ok(None);
    }
    let mut c = match file {
        Some(path) => PostChain::load(path)?,
        None => PostChain::default(),
    };
    if p.no_highpass {
        c.highpass = false;
    }
    if let Some(hz) = p.highpass_hz {
        c.highpass = true;
        c.highpass_hz = hz;
    }
    if p.no_shelf {
        c.shelf = false;
    }
    if let Some(hz) = p.shelf_hz {
        c.shelf = true;
        c.shelf_hz = hz;
    }
    if let Some(db) = p.shelf_db {
        c.shelf = true;
        c.shelf_db = db;
    }
    if p.no_loudness {
        c.loudness = false;
    }
    if let Some(lufs) = p.lufs {
        c.loudness = true;
        c.lufs = lufs;
    }
    if let Some(tp) = p.true_peak_db {
        c.loudness = true;
        c.true_peak_db = tp;
    }
    c.validate()?;
    Ok(Some(c))
}

fn cmd_render(mut a: RenderArgs) -> Result<()> {
    a.settings.preset = presets(&a.post)?.0;
    if a.output.exists() && !a.force {
        bail!(
            "{} exists; pass --force to overwrite it",
            a.output.display()
        );
    }
    let (opts, fmt) = render_options(&a.settings)?;
    let post = post_chain(&a.post)?;
    let input = read_audio(&a.input).with_context(|| format!("reading {}", a.input.display()))?;
    if input.frames() == 0 {
        bail!("{} holds no audio", a.input.display());
    }
    let bar = if a.quiet || input.duration_secs() < 5.0 {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(100).with_style(
            ProgressStyle::with_template("{spinner} [{bar:40}] {percent}% {elapsed} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
    };
    let rendered = render(&input.channels, input.sample_rate, &opts, |done, total| {
        bar.set_position((done * 100 / total.max(1)) as u64)
    })
    .context("rendering")?;
    bar.finish_and_clear();
    if let Some(notice) = &rendered.notice {
        eprintln!("note: {notice}");
    }
    let mut channels = rendered.channels;
    let post_report = match &post {
        Some(chain) => Some(
            chain
                .apply(&mut channels, input.sample_rate)
                .context("post chain")?,
        ),
        None => None,
    };
    let out = Audio::new(input.sample_rate, channels);
    write_wav(&a.output, &out, fmt).with_context(|| format!("writing {}", a.output.display()))?;
    let secs = input.duration_secs();
    eprintln!(
        "{} -> {}: {:.1} s of audio in {:.2} s ({:.1}x real time; worker real-time factor {:.4} on {}), latency {} samples ({:.1} ms){}",
        a.input.display(),
        a.output.display(),
        secs,
        rendered.seconds,
        secs / rendered.seconds.max(1e-9),
        rendered.worker_seconds / secs.max(1e-9),
        rendered.provider,
        rendered.latency,
        rendered.latency as f64 * 1000.0 / input.sample_rate as f64,
        if opts.run_mode == RunMode::Realtime {
            format!(
                ", late masks {}, dropped hops {}",
                rendered.late_masks, rendered.dropped_hops
            )
        } else {
            format!(", masks: {}", rendered.masks)
        }
    );
    if let Some(r) = post_report {
        eprintln!("post: {r}");
    }
    Ok(())
}

/// Progress bars for a batch: one overall bar and one per file being rendered.
struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    files: Mutex<HashMap<usize, ProgressBar>>,
    file_style: ProgressStyle,
}

impl Bars {
    fn new() -> Self {
        let multi = MultiProgress::new();
        let overall = multi.add(
            ProgressBar::new(0).with_style(
                ProgressStyle::with_template(
                    "{spinner} [{bar:40}] {pos}/{len} files, {elapsed}, eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
        );
        let file_style = ProgressStyle::with_template("  [{bar:30}] {percent:>3}% {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        Self {
            multi,
            overall,
            files: Mutex::new(HashMap::new()),
            file_style,
        }
    }
}

impl Observer for Bars {
    fn planned(&self, jobs: &[Job]) {
        self.overall.set_length(jobs.len() as u64);
    }

    fn started(&self, index: usize, job: &Job) {
        let bar = self.multi.insert_before(
            &self.overall,
            ProgressBar::new(100)
                .with_style(self.file_style.clone())
                .with_message(job.relative.display().to_string()),
        );
        if let Ok(mut files) = self.files.lock() {
            files.insert(index, bar);
        }
    }

    fn progress(&self, index: usize, done: usize, total: usize) {
        if let Ok(files) = self.files.lock() {
            if let Some(bar) = files.get(&index) {
                bar.set_position((done * 100 / total.max(1)) as u64);
            }
        }
    }

    fn finished(&self, index: usize, report: &FileReport) {
        if let Ok(mut files) = self.files.lock() {
            if let Some(bar) = files.remove(&index) {
                bar.finish_and_clear();
                self.multi.remove(&bar);
            }
        }
        if report.status == FileStatus::Failed {
            // Printed above the bars as it happens; the summary repeats it.
            let _ = self.multi.println(format!(
                "failed: {}: {}",
                report.relative.display(),
                report.error.as_deref().unwrap_or("?")
            ));
        }
        self.overall.inc(1);
    }
}

fn cmd_batch(mut a: BatchArgs) -> Result<()> {
    a.settings.preset = presets(&a.post)?.0;
    let (render, format) = render_options(&a.settings)?;
    let post = post_chain(&a.post)?;
    let opts = BatchOptions {
        render,
        post,
        format,
        jobs: a
            .jobs
            .map_or_else(|| batch::default_jobs(a.settings.threads), usize::from),
        force: a.force,
    };
    let report = if a.quiet {
        batch::run(&a.in_dir, &a.out_dir, &opts, &batch::Silent)?
    } else {
        let bars = Bars::new();
        let report = batch::run(&a.in_dir, &a.out_dir, &opts, &bars);
        bars.overall.finish_and_clear();
        report?
    };
    print_summary(&report);
    let failed = report.count(FileStatus::Failed);
    if failed > 0 {
        bail!("{failed} of {} files failed", report.files.len());
    }
    Ok(())
}

/// The summary table (stdout), then the entries that were not rendered.
fn print_summary(report: &BatchReport) {
    let rows: Vec<[String; 5]> = report
        .files
        .iter()
        .map(|f| {
            let mut notes = Vec::new();
            match f.status {
                FileStatus::Failed => notes.push(f.error.clone().unwrap_or_default()),
                FileStatus::Skipped => notes.push("output exists (--force renders it)".into()),
                FileStatus::Ok => {
                    if let Some(p) = &f.post {
                        notes.push(p.to_string());
                    }
                    if let Some(m) = f.masks {
                        notes.push(format!("masks: {m}"));
                    }
                    if let Some(n) = &f.notice {
                        notes.push(n.clone());
                    }
                }
            }
            [
                f.relative.display().to_string(),
                f.status.to_string(),
                f.audio_seconds
                    .map_or_else(|| "-".into(), |s| format!("{s:.1} s")),
                if f.status == FileStatus::Skipped {
                    "-".into()
                } else {
                    format!("{:.2}", f.seconds)
                },
                notes.join("; "),
            ]
        })
        .collect();
    let header = ["file", "status", "duration", "seconds", "notes"];
    let mut width = header.map(str::len);
    for r in &rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        format!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
            w3 = width[3],
        )
        .trim_end()
        .to_string()
    };
    println!("{}", line(header));
    for r in &rows {
        println!("{}", line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
    }
    let limited = report
        .files
        .iter()
        .filter(|f| f.post.is_some_and(|p| p.true_peak_limited()))
        .count();
    println!(
        "{} ok, {} skipped, {} failed{} in {:.1} s",
        report.count(FileStatus::Ok),
        report.count(FileStatus::Skipped),
        report.count(FileStatus::Failed),
        if limited > 0 {
            format!(" ({limited} held below the loudness target by the true-peak ceiling)")
        } else {
            String::new()
        },
        report.seconds
    );
    if !report.ignored.is_empty() {
        println!("not rendered:");
        for i in &report.ignored {
            println!("  {} ({})", i.relative.display(), i.reason);
        }
    }
}

fn cmd_info() -> Result<()> {
    println!("voxsift {}", env!("CARGO_PKG_VERSION"));
    println!("models:");
    println!("  dfn3  DeepFilterNet3 (embedded, 48 kHz, 2 frames lookahead), default");
    for m in voxsift_app::render::list_separators() {
        match &m.description {
            Ok(d) => {
                let latency = match m.lookahead {
                    Some(frames) => {
                        format!("lookahead {} ms + the margin measured at load", frames * 10)
                    }
                    None => "invalid schedule".into(),
                };
                let sha = match m.sha256 {
                    Some(true) => "sha256 ok",
                    Some(false) => "sha256 MISMATCH (refused at load)",
                    None => "no sha256",
                };
                println!(
                    "  {}  {} {} ({}, {} Hz, {latency}, {sha}){}",
                    m.dir.display(),
                    d.name,
                    d.version,
                    d.architecture.name(),
                    d.sample_rate,
                    if d.is_refiner() { ", refines dfn3" } else { "" }
                );
            }
            Err(e) => println!("  {}  unreadable: {e}", m.dir.display()),
        }
    }
    let separator = voxsift_app::render::default_separator_dir();
    let studio = if ModelChoice::Separator(separator.clone()).is_refiner() {
        "the dfn3 refiner"
    } else {
        "dfn3 fused by max with the separator"
    };
    println!(
        "presets: live (dfn3 alone), studio ({studio} in {}: {})",
        separator.display(),
        if voxsift_app::render::is_separator_dir(&separator) {
            "found"
        } else {
            "missing; `cargo xtask export-model htdemucs` writes it"
        }
    );
    match voxsift_models::runtime::init() {
        Ok(info) => println!("onnx runtime: {} at {}", info.version, info.path.display()),
        Err(e) => println!("onnx runtime: not available: {e}"),
    }
    println!("latency (linked, 512-sample blocks, DFN3):");
    for sr in [44_100u32, 48_000, 96_000] {
        let opts = RenderOptions::default();
        let cfg = voxsift_app::render::engine_config(sr, 2, &opts);
        let spec = opts.model.spec();
        let lag = voxsift_models::worker::resampler_lag(sr, &spec);
        let e = voxsift_engine::Engine::new(cfg, spec.lookahead, lag);
        let l = e.latency_samples();
        println!(
            "  {:>6} Hz: {} samples ({:.1} ms)",
            sr,
            l,
            l as f64 * 1000.0 / sr as f64
        );
    }
    Ok(())
}

// ---- Evaluation: `voxsift eval` and `voxsift eval-set` (the library's `voxsift_app::eval`). ----

/// Score settings shared by `eval` and `eval-set`.
#[derive(clap::Args)]
#[command(next_help_heading = "Scores")]
struct ScoreArgs {
    /// Length of the BSS Eval (SDR/SIR/SAR) distortion filters, in taps.
    #[arg(long, default_value_t = voxsift_app::eval::bss::DEFAULT_TAPS)]
    bss_taps: usize,
    /// Length of the per-time SI-SDR segments, in seconds.
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
    segment_s: f64,
}

impl ScoreArgs {
    fn options(&self) -> Result<voxsift_app::eval::ScoreOptions> {
        if !(1..=4096).contains(&self.bss_taps) {
            bail!("--bss-taps must be between 1 and 4096");
        }
        if !(self.segment_s.is_finite() && self.segment_s >= 0.01) {
            bail!("--segment-s must be at least 0.01 s");
        }
        Ok(voxsift_app::eval::ScoreOptions {
            bss_taps: self.bss_taps,
            segment_seconds: self.segment_s,
        })
    }
}

#[derive(clap::Args)]
struct EvalArgs {
    /// The estimate of the speech (e.g. `voxsift render` of the mixture).
    #[arg(long, value_name = "FILE")]
    estimate: PathBuf,
    /// The reference speech.
    #[arg(long, value_name = "FILE")]
    speech: PathBuf,
    /// The reference of everything else (music, noise) [default with --mixture: mixture minus
    /// speech].
    #[arg(long, value_name = "FILE")]
    other: Option<PathBuf>,
    /// The mixture the estimate was made from (for SI-SDRi and the mixture's own scores).
    #[arg(long, value_name = "FILE")]
    mixture: Option<PathBuf>,
    /// Write the scores as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write PNG plots (spectrograms, SI-SDR per band and per time) into DIR.
    #[arg(long, value_name = "DIR")]
    plots: Option<PathBuf>,
    #[command(flatten)]
    score: ScoreArgs,
}

#[derive(clap::Args)]
struct EvalSetArgs {
    /// The evaluation folder: mixtures with their stems in stems/<id>__speech and
    /// stems/<id>__other (like ../shared/eval-audio/mixtures), or a folder holding mixtures/
    /// and optionally speech/ and music/ (like ../shared/eval-audio).
    dir: PathBuf,
    /// Report folder: report.json, report.md and plots/.
    #[arg(long, value_name = "REPORT_DIR", default_value = "out/eval")]
    out: PathBuf,
    /// Score the estimates in DIR instead of rendering: for an input at relative path a/b.flac,
    /// DIR/a/b.wav (what `voxsift batch` writes) or DIR/b.wav. The render settings are then
    /// unused.
    #[arg(long, value_name = "DIR")]
    estimates: Option<PathBuf>,
    /// Also score the speech-only files in DIR (speech damage: output against input).
    #[arg(long, value_name = "DIR")]
    speech_dir: Option<PathBuf>,
    /// Also score the music-only files in DIR (music leak: output level against input).
    #[arg(long, value_name = "DIR")]
    music_dir: Option<PathBuf>,
    /// A mixture (id or id prefix) whose other stem is a second talker: reported apart and left
    /// out of the means. Repeat for several.
    #[arg(long, value_name = "ID")]
    talker_mix: Vec<String>,
    /// Only the inputs whose id starts with ID. Repeat for several.
    #[arg(long, value_name = "ID")]
    only: Vec<String>,
    /// Score only the first SECONDS of each input (quick runs).
    #[arg(long, value_name = "SECONDS")]
    max_seconds: Option<f64>,
    /// No PNG plots.
    #[arg(long)]
    no_plots: bool,
    /// Keep the rendered estimates as 32-bit float WAV files under REPORT_DIR/renders/.
    #[arg(long, conflicts_with = "estimates")]
    keep_renders: bool,
    /// Replace an existing report in REPORT_DIR.
    #[arg(short, long)]
    force: bool,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    score: ScoreArgs,
    #[command(flatten)]
    settings: Settings,
}

/// A short line of the main scores of one estimate.
fn print_scores(s: &voxsift_app::eval::MixtureScores) {
    use voxsift_app::eval::report::fmt_num;
    let with_mix = |v: Option<f64>, m: Option<f64>, d: usize, unit: &str| {
        if m.is_some() {
            format!("{}{unit}  (mixture {})", fmt_num(v, d), fmt_num(m, d))
        } else {
            format!("{}{unit}", fmt_num(v, d))
        }
    };
    println!("length          {:.2} s", s.seconds);
    println!(
        "SI-SDR          {}",
        with_mix(s.si_sdr, s.si_sdr_mixture, 2, " dB")
    );
    if s.si_sdr_improvement.is_some() {
        println!("SI-SDRi         {} dB", fmt_num(s.si_sdr_improvement, 2));
    }
    if let Some(b) = s.bss {
        println!(
            "SDR / SIR / SAR {} / {} / {} dB",
            fmt_num(Some(b.sdr), 2),
            fmt_num(b.sir, 2),
            fmt_num(b.sar, 2)
        );
    }
    println!(
        "STOI            {}",
        with_mix(s.stoi, s.stoi_mixture, 3, "")
    );
    if s.residual_db.is_some() {
        println!(
            "music residual  {}{}",
            with_mix(s.residual_db, s.residual_mixture_db, 2, " dB"),
            if s.other_derived {
                "  [other = mixture - speech]"
            } else {
                ""
            }
        );
    }
    let bands: Vec<String> = s
        .bands
        .iter()
        .map(|b| format!("{}: {}", b.band.center_hz, fmt_num(b.si_sdr, 1)))
        .collect();
    println!("SI-SDR per band {}", bands.join(", "));
    let segs: Vec<String> = s.segments.iter().map(|g| fmt_num(g.si_sdr, 1)).collect();
    println!("SI-SDR per segment {}", segs.join(" "));
}

fn cmd_eval(a: EvalArgs) -> Result<()> {
    use voxsift_app::eval::{self, Mono};
    let opts = a.score.options()?;
    let read = |p: &PathBuf| Mono::read(p).with_context(|| format!("reading {}", p.display()));
    let speech = read(&a.speech)?;
    let sr = speech.sample_rate;
    let estimate = read(&a.estimate)?;
    estimate.expect_rate(&a.estimate, sr)?;
    let other = match &a.other {
        Some(p) => {
            let o = read(p)?;
            o.expect_rate(p, sr)?;
            Some(o)
        }
        None => None,
    };
    let mixture = match &a.mixture {
        Some(p) => {
            let m = read(p)?;
            m.expect_rate(p, sr)?;
            Some(m)
        }
        None => None,
    };
    let scores = eval::score_mixture(
        &eval::Inputs {
            estimate: &estimate.samples,
            speech: &speech.samples,
            other: other.as_ref().map(|o| o.samples.as_slice()),
            mixture: mixture.as_ref().map(|m| m.samples.as_slice()),
            sample_rate: sr,
        },
        &opts,
    );
    print_scores(&scores);
    if let Some(path) = &a.json {
        eval::report::write_file(path, eval::report::to_json(&scores)?.as_bytes())?;
        eprintln!("scores: {}", path.display());
    }
    if let Some(dir) = &a.plots {
        let id = a
            .estimate
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "estimate".into());
        let mix = mixture.as_ref().map_or(&[][..], |m| m.samples.as_slice());
        let written = eval::plot::mixture_plots(
            dir,
            &id,
            mix,
            &estimate.samples,
            &speech.samples,
            sr,
            &scores,
        )?;
        for p in written {
            eprintln!("plot: {}", p.display());
        }
    }
    Ok(())
}

fn cmd_eval_set(a: EvalSetArgs) -> Result<()> {
    use voxsift_app::eval::report::{to_json, to_markdown, write_file};
    use voxsift_app::eval::set::{self, Estimates, EvalSet, Folders, Progress, ScanOptions};
    let json_path = a.out.join("report.json");
    if json_path.exists() && !a.force {
        bail!(
            "{} exists; pass --force to replace the report",
            json_path.display()
        );
    }
    if a.max_seconds.is_some_and(|s| !(s.is_finite() && s > 0.0)) {
        bail!("--max-seconds must be above 0");
    }
    let score = a.score.options()?;
    let (estimates, model_name) = match &a.estimates {
        Some(dir) => {
            if !dir.is_dir() {
                bail!("--estimates {}: not a folder", dir.display());
            }
            (Estimates::Dir(dir.clone()), String::new())
        }
        None => {
            let (opts, _) = render_options(&a.settings)?;
            let name = opts.model.name();
            (Estimates::Render(opts), name)
        }
    };
    let mut folders = Folders::detect(&a.dir)?;
    if let Some(d) = &a.speech_dir {
        folders.speech = Some(d.clone());
    }
    if let Some(d) = &a.music_dir {
        folders.music = Some(d.clone());
    }
    for d in [&folders.speech, &folders.music].into_iter().flatten() {
        if !d.is_dir() {
            bail!("{}: not a folder", d.display());
        }
    }
    let eval_set = EvalSet::scan(
        &folders,
        &ScanOptions {
            talker_mixes: a.talker_mix.clone(),
            only: a.only.clone(),
        },
    )?;
    if eval_set.items.is_empty() {
        bail!("{}: nothing to score", a.dir.display());
    }
    let opts = set::SetOptions {
        estimates,
        score,
        max_seconds: a.max_seconds,
        plots: (!a.no_plots).then(|| a.out.join("plots")),
        keep_renders: a.keep_renders.then(|| a.out.join("renders")),
        model_name,
    };
    let count = eval_set.items.len() as u64;
    let bar = if a.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(count * 100).with_style(
            ProgressStyle::with_template("{spinner} [{bar:40}] {msg} {elapsed}, eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
    };
    let mut notices: Vec<String> = Vec::new();
    let mut current = 0u64;
    let started = std::time::Instant::now();
    let report = set::run(&eval_set, &opts, |p| match p {
        Progress::Started { index, item, .. } => {
            current = index as u64;
            bar.set_position(current * 100);
            bar.set_message(format!("{}/{count} {}", index + 1, item.id));
        }
        Progress::Rendering { done, total, .. } => {
            bar.set_position(current * 100 + (done * 90 / total.max(1)) as u64);
        }
        Progress::Notice(n) => {
            if !notices.contains(&n) {
                bar.println(format!("note: {n}"));
                notices.push(n);
            }
        }
        Progress::Finished { index } => bar.set_position((index as u64 + 1) * 100),
    });
    bar.finish_and_clear();
    let report = report.context("evaluation")?;
    write_file(&json_path, to_json(&report)?.as_bytes())?;
    let md = to_markdown(&report);
    write_file(&a.out.join("report.md"), md.as_bytes())?;
    print!("{md}");
    eprintln!(
        "{} files scored in {:.1} s; report: {}, {}{}",
        eval_set.items.len(),
        started.elapsed().as_secs_f64(),
        json_path.display(),
        a.out.join("report.md").display(),
        if a.no_plots {
            String::new()
        } else {
            format!(", plots in {}", a.out.join("plots").display())
        }
    );
    Ok(())
}
