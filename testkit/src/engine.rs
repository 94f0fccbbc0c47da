//! Driving an [`Engine`] in tests: the block-size patterns offline renders must be invariant
//! to, the unity settings and a block-by-block runner (shared by the models' and the app's
//! integration tests).

use voxsift_engine::{Engine, EngineParams};

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
