//! `voxsift`: the command-line renderer, a thin shell over the library.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use voxsift::batch::{self, BatchOptions, BatchReport, FileReport, FileStatus, Job, Observer};
use voxsift::engine::{ChannelMode, EngineParams, RunMode};
use voxsift::io::{read_audio, write_wav, Audio, SampleFormat};
use voxsift::post::PostChain;
use voxsift::render::{render, ModelChoice, RenderOptions};

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
    /// Files rendered at once, each with its own model worker.
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    jobs: u16,
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
    /// Mask sharpness (1 = the model's own mask).
    #[arg(long, default_value_t = 1.5)]
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
    /// Execution provider: cpu, cuda, coreml or directml. One that cannot start falls back to
    /// the CPU, and the reason is printed.
    #[arg(long, default_value = "cpu")]
    provider: voxsift::runtime::Provider,
    /// The synthetic test model with this lookahead instead of DFN3 (no ONNX Runtime needed).
    #[arg(long, hide = true, conflicts_with = "model_dir")]
    synthetic_model: Option<usize>,
}

/// The post chain flags shared by `render` and `batch`.
#[derive(clap::Args)]
#[command(next_help_heading = "Post chain (offline, after the engine)")]
struct PostArgs {
    /// Run the post chain: high-pass 70 Hz (4th-order Butterworth), high shelf 12 kHz -3 dB,
    /// loudness normalisation to -16 LUFS with a -1 dBTP true-peak ceiling.
    #[arg(long)]
    post: bool,
    /// Post-chain settings from a TOML preset (implies --post); the flags below override it.
    #[arg(long, value_name = "FILE")]
    preset: Option<PathBuf>,
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
    let model = match (&s.synthetic_model, &s.model_dir) {
        (Some(la), _) => ModelChoice::Synthetic(*la),
        (None, Some(dir)) => ModelChoice::Dfn3Dir(dir.clone()),
        (None, None) => ModelChoice::Dfn3,
    };
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
        threads: s.threads.max(1),
        provider: s.provider,
        ..RenderOptions::default()
    };
    Ok((opts, fmt))
}

/// The post chain asked for, if any: the preset (or the defaults), then the flags.
fn post_chain(p: &PostArgs) -> Result<Option<PostChain>> {
    if !p.post && p.preset.is_none() {
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
    let mut c = match &p.preset {
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

fn cmd_render(a: RenderArgs) -> Result<()> {
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
            String::new()
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

fn cmd_batch(a: BatchArgs) -> Result<()> {
    let (render, format) = render_options(&a.settings)?;
    let post = post_chain(&a.post)?;
    let opts = BatchOptions {
        render,
        post,
        format,
        jobs: usize::from(a.jobs),
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
    match voxsift::runtime::init() {
        Ok(info) => println!("onnx runtime: {} at {}", info.version, info.path.display()),
        Err(e) => println!("onnx runtime: not available: {e}"),
    }
    println!("latency (linked, 512-sample blocks, DFN3):");
    for sr in [44_100u32, 48_000, 96_000] {
        let opts = RenderOptions::default();
        let cfg = voxsift::render::engine_config(sr, 2, &opts);
        let spec = opts.model.spec();
        let lag = voxsift::worker::resampler_lag(sr, &spec);
        let e = voxsift::engine::Engine::new(cfg, spec.lookahead, lag);
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
