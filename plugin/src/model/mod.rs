//! Models that turn audio into mask frames, and what the worker needs to know about them.

pub mod dfn3;
pub mod fusion;
pub mod refine;
pub mod separator;
pub mod synthetic;

use num_complex::Complex32;

/// What the worker and engine need to know about a model before it is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSpec {
    /// Short name, e.g. "dfn3".
    pub name: &'static str,
    /// Sample rate the model runs at.
    pub sample_rate: u32,
    /// Hop in samples at that rate (10 ms for every model here).
    pub hop: usize,
    /// Bins of the mask frames it produces (`fft / 2 + 1`), spaced `sample_rate / fft` Hz.
    pub bins: usize,
    /// Frames of lookahead: the mask of frame `t` is ready once frame `t + lookahead` is in.
    pub lookahead: usize,
}

impl ModelSpec {
    /// Bin spacing of the model's masks in Hz.
    pub fn bin_hz(&self) -> f64 {
        self.sample_rate as f64 / (2 * (self.bins - 1)) as f64
    }
}

/// Errors from loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// ONNX Runtime could not be found or loaded.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// A model file is missing or unreadable.
    #[error("cannot read model file {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// ONNX Runtime refused the graph (corrupt, truncated, unsupported).
    #[error("model graph `{graph}` could not be loaded: {message}")]
    Load {
        /// Which graph.
        graph: String,
        /// ONNX Runtime's message.
        message: String,
    },
    /// The graph's inputs or outputs are not what this model expects.
    #[error("model graph `{graph}` does not match: {message}")]
    Mismatch {
        /// Which graph.
        graph: String,
        /// What differs.
        message: String,
    },
    /// A model description (`model.toml`) is malformed or inconsistent.
    #[error("invalid model description {path}: {message}")]
    Description {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong, naming the field.
        message: String,
    },
    /// Settings asked of a model (e.g. a separator's schedule) that it cannot use.
    #[error("invalid settings for model `{model}`: {message}")]
    Settings {
        /// Which model.
        model: String,
        /// What is wrong.
        message: String,
    },
    /// Inference failed.
    #[error("inference failed in `{graph}`: {message}")]
    Inference {
        /// Which graph.
        graph: String,
        /// ONNX Runtime's message.
        message: String,
    },
}

/// Checks the arguments of a [`MaskModel::push_hop`] call on a model of `kind` ("separator",
/// "refiner") with `streams` streams: the stream exists, the hop has `spec.hop` samples and the
/// mask `spec.bins` bins.
pub fn check_push_hop(
    spec: &ModelSpec,
    kind: &str,
    streams: usize,
    stream: usize,
    hop: &[f32],
    mask: &[Complex32],
) -> Result<(), ModelError> {
    if stream >= streams || hop.len() != spec.hop || mask.len() != spec.bins {
        return Err(ModelError::Mismatch {
            graph: spec.name.into(),
            message: format!(
                "push_hop(stream {stream}, {} samples, {} bins) on a {kind} for {streams} \
                 streams, {} samples, {} bins",
                hop.len(),
                mask.len(),
                spec.hop,
                spec.bins
            ),
        });
    }
    Ok(())
}

/// A streaming mask model. One instance serves `streams` independent audio streams (one per
/// channel, or one for a linked channel mix); it runs on the worker thread only.
pub trait MaskModel: Send {
    /// What the model is.
    fn spec(&self) -> ModelSpec;

    /// Forgets all streaming state: the next hop starts a new stream at frame 0.
    fn reset(&mut self);

    /// Starts a new stream at frame 0 after digital silence, as [`Self::reset`] does for its
    /// buffers, but a model may keep what it knew of the signal before the silence (recurrent
    /// state, normalisation), as if the silence had not been there. The default is a reset.
    /// Called on the worker thread only.
    fn resume(&mut self) {
        self.reset();
    }

    /// Takes the next hop (`spec().hop` samples at `spec().sample_rate`) of `stream`. When the
    /// mask of a frame becomes ready, writes its `spec().bins` complex gains into `mask` and
    /// returns that frame's index (counted from the first hop after a reset, frame `f` ending
    /// with hop `f`).
    fn push_hop(
        &mut self,
        stream: usize,
        hop: &[f32],
        mask: &mut [Complex32],
    ) -> Result<Option<u64>, ModelError>;

    /// Where the model runs (execution provider name).
    fn provider(&self) -> String {
        "CPU".into()
    }

    /// Something the user should know about how the model was loaded (e.g. a GPU provider
    /// that could not start, so it runs on the CPU).
    fn notice(&self) -> Option<String> {
        None
    }
}
