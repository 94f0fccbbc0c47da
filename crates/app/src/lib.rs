//! Voxsift's application layer, as a library shared by the `voxsift` CLI, the tests and
//! xtask: everything that works on whole files. The audio-thread engine is in
//! `voxsift-engine`, the models and their worker in `voxsift-models`; the plugin
//! (`plugin/`) links neither this crate nor its dependencies.
//!
//! - [`render`]: whole-file rendering, as the CLI does it.
//! - [`options`]: what a render takes and what it gives back.
//! - [`cache`]: the mask cache of offline renders (re-render with other settings without
//!   running the model again); [`cache_session`]: its part in one render.
//! - [`io`]: reading and writing audio files.
//! - [`batch`]: rendering a folder tree, several files at once, resumable.
//! - [`eval`]: the evaluation suite (SI-SDR, SDR/SIR/SAR, STOI, music residual; reports
//!   and plots).
//! - [`post`]: the offline post chain (high-pass, high shelf, loudness normalisation).
//! - [`metrics`]: quality measures used by the tests, the CLI and the benchmarks.

#![deny(missing_docs)]

pub mod batch;
pub mod cache;
pub mod cache_session;
pub mod eval;
pub mod io;
pub mod metrics;
pub mod options;
pub mod post;
pub mod render;
