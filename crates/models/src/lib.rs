//! Models that turn audio into mask frames, and what the worker needs to know about them.

#![deny(missing_docs)]

pub mod choice;
pub mod dfn3;
pub mod error;
pub mod fusion;
pub mod refine;
pub mod runtime;
pub mod separator;
pub mod synthetic;
pub mod worker;

pub use error::{ModelError, RuntimeError};
pub use voxsift_engine::ModelSpec;

use num_complex::Complex32;

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
    /// buffers, but a model may keep its recurrent state and normalisation as the silence left
    /// them (the worker runs the model on every silent hop before the restart). The default
    /// is a reset.
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
