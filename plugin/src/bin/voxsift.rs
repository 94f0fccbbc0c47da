//! `voxsift`: the command-line renderer, a thin shell over the library.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use voxsift::engine::{ChannelMode, EngineParams, RunMode};
use voxsift::io::{read_audio, write_wav, Audio, SampleFormat};
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
    /// Overwrite the output if it exists.
    #[arg(short, long)]
    force: bool,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Render(a) => cmd_render(a),
        Command::Info => cmd_info(),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn cmd_render(a: RenderArgs) -> Result<()> {
    if a.output.exists() && !a.force {
        bail!(
            "{} exists; pass --force to overwrite it",
            a.output.display()
        );
    }
    if !(0.0..=1.0).contains(&a.wet) {
        bail!("--wet must be between 0 and 1");
    }
    if !(0.1..=10.0).contains(&a.beta) {
        bail!("--beta must be between 0.1 and 10");
    }
    if a.block == 0 || a.block > 65536 {
        bail!("--block must be between 1 and 65536");
    }
    if ![16, 24, 32].contains(&a.bits) {
        bail!("--bits must be 16, 24 or 32, not {}", a.bits);
    }
    let input = read_audio(&a.input).with_context(|| format!("reading {}", a.input.display()))?;
    if input.frames() == 0 {
        bail!("{} holds no audio", a.input.display());
    }
    let opts = RenderOptions {
        params: EngineParams {
            wet: a.wet,
            beta: a.beta,
            floor_db: a.floor_db,
            output_gain_db: a.gain_db,
            bypass: false,
        },
        channel_mode: match a.channels {
            Channels::Linked => ChannelMode::Linked,
            Channels::Independent => ChannelMode::Independent,
        },
        run_mode: match a.mode {
            Mode::Offline => RunMode::Offline,
            Mode::RealtimeSim => RunMode::Realtime,
        },
        pace: matches!(a.mode, Mode::RealtimeSim),
        blocks: vec![a.block],
        model: a
            .model_dir
            .clone()
            .map_or(ModelChoice::Dfn3, ModelChoice::Dfn3Dir),
        threads: a.threads.max(1),
        provider: a.provider,
        ..RenderOptions::default()
    };
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
    let fmt = match a.bits {
        16 => SampleFormat::I16,
        24 => SampleFormat::I24,
        32 => SampleFormat::F32,
        b => bail!("--bits must be 16, 24 or 32, not {b}"),
    };
    let out = Audio::new(input.sample_rate, rendered.channels);
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
    Ok(())
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
