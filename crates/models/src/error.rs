//! The models crate's error types, in a module of their own so that [`crate::runtime`] (which
//! reports [`ModelError`] when it builds a session) and the models (which wrap
//! [`RuntimeError`]) both depend on it instead of on each other.

use std::path::PathBuf;

/// The ONNX Runtime release Voxsift is built and tested against.
pub const ORT_VERSION: &str = "1.31.1";
/// Oldest minor version of ONNX Runtime 1.x that is accepted.
pub const ORT_MIN_MINOR: u32 = 22;

/// The command that installs the runtime.
#[cfg(not(windows))]
pub const FIX: &str = "run `cargo xtask fetch-runtime` in the Voxsift source tree, or set VOXSIFT_ORT_LIB to the path of libonnxruntime from the onnxruntime 1.31.1 wheel";
/// The command that installs the runtime.
#[cfg(windows)]
pub const FIX: &str = "put onnxruntime.dll from the onnxruntime 1.31.1 wheel (win_amd64) beside voxsift.exe or the plugin, run `cargo xtask fetch-runtime` in the Voxsift source tree, or set VOXSIFT_ORT_LIB to the path of onnxruntime.dll";

/// Errors from finding or loading ONNX Runtime.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    /// No library file was found anywhere.
    #[error("ONNX Runtime library not found (looked in: {searched}); to fix: {FIX}")]
    NotFound {
        /// Places that were searched.
        searched: String,
    },
    /// The file exists but could not be loaded.
    #[error("ONNX Runtime at {path} could not be loaded: {message}; to fix: {FIX}")]
    Load {
        /// The library.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The library is too old.
    #[error("ONNX Runtime at {path} is version {found}, Voxsift needs 1.{ORT_MIN_MINOR} or newer (tested with {ORT_VERSION}); to fix: {FIX}")]
    Version {
        /// The library.
        path: PathBuf,
        /// Its version.
        found: String,
    },
}

/// Errors from loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// ONNX Runtime could not be found or loaded.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
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
