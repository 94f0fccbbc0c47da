//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use voxsift_engine::{Engine, EngineParams};

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

/// Block-size patterns every offline render must be invariant to: fixed sizes from 1 to
/// 4096 (including DFN3's hop), then sizes that change on every call.
pub const BLOCK_PATTERNS: [&[usize]; 8] = [
    &[1],
    &[7],
    &[64],
    &[480],
    &[512],
    &[4096],
    &[1, 7, 4096, 64],
    &[3, 1000, 17],
];

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

/// Wet 1, beta 1, no floor, 0 dB: the model's own mask.
pub fn unity() -> EngineParams {
    EngineParams {
        wet: 1.0,
        beta: 1.0,
        floor_db: None,
        output_gain_db: 0.0,
        bypass: false,
    }
}

/// Runs planar `input` through `engine` in blocks cycling through `blocks`; a 0 entry is a
/// zero-length `process` call.
pub fn run_blocks(engine: &mut Engine, input: &[Vec<f32>], blocks: &[usize]) -> Vec<Vec<f32>> {
    assert!(
        blocks.iter().any(|&b| b > 0),
        "a pattern of only empty blocks"
    );
    let len = input.first().map_or(0, Vec::len);
    let max = blocks.iter().copied().max().unwrap_or(1);
    let mut buf = vec![vec![0.0f32; max]; input.len()];
    let mut out = vec![Vec::with_capacity(len); input.len()];
    let (mut pos, mut b) = (0, 0);
    while pos < len {
        let n = blocks[b % blocks.len()].min(len - pos);
        b += 1;
        for (dst, src) in buf.iter_mut().zip(input) {
            dst[..n].copy_from_slice(&src[pos..pos + n]);
        }
        let mut refs: Vec<&mut [f32]> = buf.iter_mut().map(|c| &mut c[..n]).collect();
        engine.process(&mut refs);
        for (o, c) in out.iter_mut().zip(&buf) {
            o.extend_from_slice(&c[..n]);
        }
        pos += n;
    }
    out
}

/// `x` delayed by `d` samples, same length.
pub fn delayed(x: &[f32], d: usize) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    if d < x.len() {
        y[d..].copy_from_slice(&x[..x.len() - d]);
    }
    y
}
