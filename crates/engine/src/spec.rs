//! What the engine, the worker and the editor need to know about a model before it runs.
//!
//! [`ModelSpec`] is plain data: it lives here, below the models crate, so that the status
//! block ([`crate::status::Shared`]) can list the running models' specs without the engine
//! depending on any model code.

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
