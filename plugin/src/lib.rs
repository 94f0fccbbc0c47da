//! Voxsift: speech isolation with neural models, as a library shared by the CLI and the
//! plugin.
//!
//! - [`engine`]: the audio-thread side (STFT, masks, dry delay, mixing); no allocation, lock
//!   or wait in realtime mode.
//! - [`worker`]: the thread that runs the models and hands masks back through SPSC rings.
//! - [`model`]: mask models (DeepFilterNet3, a synthetic test model).
//! - [`runtime`]: finding and loading ONNX Runtime.
//! - [`render`]: whole-file rendering, as the CLI does it.
//! - [`io`]: reading and writing audio files.
//! - [`batch`]: rendering a folder tree, several files at once, resumable.
//! - [`cache`]: the mask cache of offline renders (re-render with other settings without
//!   running the model again).
//! - [`eval`]: the evaluation suite (SI-SDR, SDR/SIR/SAR, STOI, music residual; reports
//!   and plots).
//! - [`post`]: the offline post chain (high-pass, high shelf, loudness normalisation).
//! - [`plugin`]: the CLAP and VST3 plugin (nice-plug).

pub mod batch;
pub mod cache;
pub mod engine;
pub mod eval;
pub mod io;
pub mod metrics;
pub mod model;
pub mod plugin;
pub mod post;
pub mod render;
pub mod ring;
pub mod runtime;
pub mod status;
pub mod worker;
