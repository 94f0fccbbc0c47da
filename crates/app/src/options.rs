//! The options and the result of a render ([`crate::render::render`]), apart from the
//! renderer so that the mask cache ([`crate::cache`]), which keys its entries on them, and
//! the renderer, which drives the cache, do not import each other.

use crate::cache::{MaskCache, MaskSource};
use voxsift_engine::{ChannelMode, EngineConfig, EngineParams, RunMode};
use voxsift_models::choice::{ModelChoice, Schedule};
use voxsift_models::runtime::Provider;

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
    /// The model, or several fused.
    pub model: ModelChoice,
    /// Window schedule overrides for separators.
    pub schedule: Schedule,
    /// Intra-op threads for inference.
    pub threads: usize,
    /// Execution provider asked for (CPU if it cannot start; see [`Rendered::notice`]).
    pub provider: Provider,
    /// Worker hand-off budget in ms (see [`EngineConfig::handoff_ms`]).
    pub handoff_ms: f32,
    /// Offline only: keep the models' masks here, and replay them instead of running the
    /// models when the same input is rendered again with the same models and inference
    /// settings ([`crate::cache`]). `None`: the models always run.
    pub mask_cache: Option<MaskCache>,
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
            schedule: Schedule::default(),
            threads: 1,
            provider: Provider::Cpu,
            handoff_ms: 2.5,
            mask_cache: None,
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
    /// Whether the masks were computed or replayed from [`RenderOptions::mask_cache`].
    pub masks: MaskSource,
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
