//! Whole-file rendering through the same engine and worker the plugin uses: the input is
//! followed by `latency` samples of silence and the first `latency` output samples are
//! dropped, so the result is sample-aligned with the input and of the same length.

use crate::engine::{ChannelMode, Engine, EngineConfig, EngineParams, RunMode};
use crate::model::dfn3::{self, Dfn3};
use crate::model::synthetic::SyntheticModel;
use crate::model::{MaskModel, ModelError, ModelSpec};
use crate::runtime::{Provider, SessionOptions};
use crate::status::WorkerState;
use crate::worker::{resampler_lag, ModelFactory, Worker};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Which model to run.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelChoice {
    /// DeepFilterNet3, the graphs embedded in the binary.
    Dfn3,
    /// DeepFilterNet3 from a directory of stateful graphs.
    Dfn3Dir(PathBuf),
    /// The synthetic test model with this many frames of lookahead.
    Synthetic(usize),
}

impl ModelChoice {
    /// The model's spec (known without loading it).
    pub fn spec(&self) -> ModelSpec {
        match self {
            Self::Dfn3 | Self::Dfn3Dir(_) => dfn3::SPEC,
            Self::Synthetic(la) => SyntheticModel::new(1, *la).spec(),
        }
    }

    /// A factory that builds the model on the worker thread for `streams` streams, on the CPU.
    pub fn factory(&self, streams: usize, threads: usize) -> ModelFactory {
        self.factory_with(
            streams,
            SessionOptions {
                threads,
                ..SessionOptions::default()
            },
        )
    }

    /// A factory that builds the model on the worker thread for `streams` streams with the
    /// given session options (execution provider, threads).
    pub fn factory_with(&self, streams: usize, opts: SessionOptions) -> ModelFactory {
        match self.clone() {
            Self::Dfn3 => Box::new(move || {
                Ok(Box::new(Dfn3::embedded_with(streams, &opts)?) as Box<dyn MaskModel>)
            }),
            Self::Dfn3Dir(dir) => Box::new(move || {
                let [enc, erb_dec, df_dec] = dfn3::read_graphs(&dir)?;
                let g = dfn3::Graphs {
                    enc: &enc,
                    erb_dec: &erb_dec,
                    df_dec: &df_dec,
                };
                Ok(Box::new(Dfn3::from_graphs_with(&g, streams, &opts)?) as Box<dyn MaskModel>)
            }),
            Self::Synthetic(la) => Box::new(move || {
                Ok(Box::new(SyntheticModel::new(streams, la)) as Box<dyn MaskModel>)
            }),
        }
    }
}

/// How to render.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// User settings.
    pub params: EngineParams,
    /// Linked or independent channels.
    pub channel_mode: ChannelMode,
    /// Offline (wait for every mask) or realtime (never wait).
    pub run_mode: RunMode,
    /// In realtime mode, call `process` at the pace of real time, as a host would.
    pub pace: bool,
    /// Block sizes, used in turn (one entry: fixed blocks).
    pub blocks: Vec<usize>,
    /// The model.
    pub model: ModelChoice,
    /// Intra-op threads for inference.
    pub threads: usize,
    /// Execution provider asked for (CPU if it cannot start; see [`Rendered::notice`]).
    pub provider: Provider,
    /// Worker hand-off budget in ms (see [`EngineConfig::handoff_ms`]).
    pub handoff_ms: f32,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            params: EngineParams::default(),
            channel_mode: ChannelMode::Linked,
            run_mode: RunMode::Offline,
            pace: false,
            blocks: vec![512],
            model: ModelChoice::Dfn3,
            threads: 1,
            provider: Provider::Cpu,
            handoff_ms: 2.5,
        }
    }
}

/// What a render produced.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Output, planar, same length as the input.
    pub channels: Vec<Vec<f32>>,
    /// Latency of the configuration in samples.
    pub latency: usize,
    /// Masks that were late (realtime only).
    pub late_masks: u64,
    /// Hops the worker could not take (realtime only).
    pub dropped_hops: u64,
    /// What the model ran on.
    pub provider: String,
    /// A notice from loading the model (e.g. a provider fallback), if any.
    pub notice: Option<String>,
    /// Time spent, in seconds.
    pub seconds: f64,
    /// Time the worker spent processing (resampling, inference, mask mapping), in seconds.
    pub worker_seconds: f64,
}

/// Errors from rendering.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The model could not be loaded or failed while running.
    #[error("model `{model}` failed: {message}")]
    Model {
        /// Which model.
        model: String,
        /// Why.
        message: String,
    },
    /// Bad arguments.
    #[error("invalid render settings: {0}")]
    Invalid(String),
}

impl From<ModelError> for RenderError {
    fn from(e: ModelError) -> Self {
        Self::Model {
            model: "?".into(),
            message: e.to_string(),
        }
    }
}

/// The engine configuration a render with `opts` uses.
pub fn engine_config(sample_rate: u32, channels: usize, opts: &RenderOptions) -> EngineConfig {
    EngineConfig {
        sample_rate,
        max_block: opts.blocks.iter().copied().max().unwrap_or(512).max(1),
        channels,
        channel_mode: opts.channel_mode,
        run_mode: opts.run_mode,
        handoff_ms: opts.handoff_ms,
    }
}

/// Builds an engine with a running worker for `config` (waits until the model is loaded).
pub fn start(
    config: EngineConfig,
    model: &ModelChoice,
    threads: usize,
) -> Result<(Engine, Worker), RenderError> {
    start_with(
        config,
        model,
        SessionOptions {
            threads,
            ..SessionOptions::default()
        },
    )
}

/// [`start`] with session options (execution provider, threads).
pub fn start_with(
    config: EngineConfig,
    model: &ModelChoice,
    opts: SessionOptions,
) -> Result<(Engine, Worker), RenderError> {
    let spec = model.spec();
    let lag = resampler_lag(config.sample_rate, &spec);
    let mut engine = Engine::new(config, spec.lookahead, lag);
    let (worker, link) = Worker::spawn(
        &config,
        spec,
        model.factory_with(config.mask_streams(), opts),
    );
    if worker.wait_ready(Duration::from_secs(120)) != WorkerState::Running {
        return Err(RenderError::Model {
            model: spec.name.into(),
            message: worker.shared().message(),
        });
    }
    engine.connect(link);
    Ok((engine, worker))
}

/// Renders `input` (planar channels at `sample_rate`); `progress(done, total)` is called
/// after each block.
pub fn render(
    input: &[Vec<f32>],
    sample_rate: u32,
    opts: &RenderOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<Rendered, RenderError> {
    if input.is_empty() {
        return Err(RenderError::Invalid("no channels".into()));
    }
    if opts.blocks.is_empty() || opts.blocks.contains(&0) {
        return Err(RenderError::Invalid(
            "block sizes must be at least 1".into(),
        ));
    }
    let channels = input.len();
    let len = input.iter().map(Vec::len).min().unwrap_or(0);
    let config = engine_config(sample_rate, channels, opts);
    let (mut engine, mut worker) = start_with(
        config,
        &opts.model,
        SessionOptions {
            threads: opts.threads,
            provider: opts.provider,
        },
    )?;
    engine.set_params_immediate(opts.params);
    let latency = engine.latency_samples();
    let total = len + latency;
    let mut out = vec![Vec::with_capacity(len); channels];
    let mut buf = vec![vec![0.0f32; config.max_block]; channels];
    let start = Instant::now();
    let mut pos = 0usize;
    let mut b = 0usize;
    while pos < total {
        let n = opts.blocks[b % opts.blocks.len()].min(total - pos);
        b += 1;
        for (c, ch) in buf.iter_mut().enumerate() {
            for (i, v) in ch[..n].iter_mut().enumerate() {
                *v = input[c]
                    .get(pos + i)
                    .copied()
                    .filter(|_| pos + i < len)
                    .unwrap_or(0.0);
            }
        }
        if opts.pace && opts.run_mode == RunMode::Realtime {
            // A host calls process once a block's input has arrived.
            let due = Duration::from_secs_f64((pos + n) as f64 / sample_rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let mut refs: Vec<&mut [f32]> = buf.iter_mut().map(|c| &mut c[..n]).collect();
        engine.process(&mut refs);
        for (c, ch) in buf.iter().enumerate() {
            for (i, v) in ch[..n].iter().enumerate() {
                if pos + i >= latency {
                    out[c].push(*v);
                }
            }
        }
        pos += n;
        progress(pos.min(total), total);
    }
    let shared = worker.shared().clone();
    let failed = engine.is_failed();
    worker.stop();
    if failed {
        return Err(RenderError::Model {
            model: opts.model.spec().name.into(),
            message: format!("the worker stopped delivering masks: {}", shared.message()),
        });
    }
    Ok(Rendered {
        channels: out,
        latency,
        late_masks: shared.late_masks.load(std::sync::atomic::Ordering::Relaxed),
        dropped_hops: shared
            .dropped_hops
            .load(std::sync::atomic::Ordering::Relaxed),
        provider: shared.provider(),
        notice: Some(shared.message()).filter(|m| !m.is_empty()),
        seconds: start.elapsed().as_secs_f64(),
        worker_seconds: shared.busy_ns.load(std::sync::atomic::Ordering::Relaxed) as f64 * 1e-9,
    })
}
