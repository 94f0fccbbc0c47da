//! Helpers shared by the models' integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// Deterministic uniform noise in ±`a` (one generator for all tests: `voxsift-testkit`).
#[allow(unused_imports)] // not every test binary uses it
pub use voxsift_testkit::noise;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Block patterns, unity settings and the block runner (one copy: `voxsift-testkit`).
#[allow(unused_imports)] // not every test binary uses each
pub use voxsift_testkit::engine::{delayed, run_blocks, unity, BLOCK_PATTERNS};
