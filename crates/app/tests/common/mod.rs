//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Deterministic uniform noise in ±`a` (one generator for all tests: `voxsift-testkit`).
#[allow(unused_imports)] // not every test binary uses it
pub use voxsift_testkit::noise;

/// `../shared/eval-audio` beside the repository.
pub fn eval_audio() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/eval-audio")
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Mixture and speech stem of an eval-audio mixture, mono (channel mean), 48 kHz, first
/// `seconds`.
pub fn mixture(id_prefix: &str, seconds: f64) -> (Vec<f32>, Vec<f32>) {
    let dir = eval_audio().join("mixtures");
    let name = std::fs::read_dir(&dir)
        .expect("eval-audio/mixtures must be beside the repository")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with(id_prefix) && n.ends_with(".flac"))
        .expect("mixture exists");
    let stem = name.trim_end_matches(".flac").to_string() + "__speech.flac";
    let mono = |p: PathBuf| {
        let a = voxsift_app::io::read_audio(&p).expect("readable");
        assert_eq!(a.sample_rate, 48_000);
        let n = ((seconds * 48_000.0) as usize).min(a.frames());
        (0..n)
            .map(|i| a.channels.iter().map(|c| c[i]).sum::<f32>() / a.num_channels() as f32)
            .collect::<Vec<f32>>()
    };
    (mono(dir.join(&name)), mono(dir.join("stems").join(stem)))
}

/// Renders `input` offline once per entry of [`BLOCK_PATTERNS`] (other settings from `opts`),
/// asserts that every render is bit-identical to the first, and returns that output.
pub fn assert_block_size_invariant(
    input: &[Vec<f32>],
    sample_rate: u32,
    opts: &voxsift_app::render::RenderOptions,
) -> Vec<Vec<f32>> {
    let mut reference: Option<Vec<Vec<f32>>> = None;
    for blocks in BLOCK_PATTERNS {
        let o = voxsift_app::render::RenderOptions {
            blocks: blocks.to_vec(),
            ..opts.clone()
        };
        let r = voxsift_app::render::render(input, sample_rate, &o, |_, _| {}).expect("renders");
        match &reference {
            None => reference = Some(r.channels),
            Some(want) => assert!(r.channels == *want, "blocks {blocks:?} differ"),
        }
    }
    reference.unwrap_or_default()
}

/// Block patterns, unity settings and the block runner (one copy: `voxsift-testkit`).
#[allow(unused_imports)] // not every test binary uses each
pub use voxsift_testkit::engine::{delayed, run_blocks, unity, BLOCK_PATTERNS};

/// A Python that can import `module`, or why there is none (an error when `$VOXSIFT_PYTHON`
/// was set: then the module must be there).
pub fn python_with(module: &str) -> Result<PathBuf, String> {
    let explicit = std::env::var_os("VOXSIFT_PYTHON").map(PathBuf::from);
    let venv = repo().join(".venv-xtask").join("bin").join("python");
    let candidates: Vec<PathBuf> = match &explicit {
        Some(p) => vec![p.clone()],
        None => vec![venv, PathBuf::from("python3")],
    };
    for py in &candidates {
        let ok = Command::new(py)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Ok(py.clone());
        }
    }
    let reason = format!(
        "no Python with `{module}` ({}); `cargo xtask test` installs the pinned packages",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if explicit.is_some() {
        panic!("VOXSIFT_PYTHON is set, but {reason}");
    }
    Err(reason)
}

/// Runs `py` with `args`, asserts it succeeded (its stderr in the message) and returns what it
/// printed.
pub fn run_python<I, S>(py: &Path, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let o = Command::new(py).args(args).output().expect("python runs");
    assert!(
        o.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}
