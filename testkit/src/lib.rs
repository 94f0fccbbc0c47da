//! Helpers shared by Voxsift's tests and benches (a dev-only crate, never shipped): one
//! deterministic noise generator and the broken-model-folder tools the fault tests use, so that
//! the crates' tests (`crates/*/tests`), the bench (`crates/models/benches`) and the host tests in
//! `tests/` do not each keep a copy.

use std::path::{Path, PathBuf};

pub mod engine;

/// Deterministic uniform noise in ±`a` (a 64-bit LCG, top 24 bits), the same for the same
/// `seed` on every machine.
pub fn noise(n: usize, seed: u64, a: f32) -> Vec<f32> {
    let step = |s: u64| {
        s.wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
    };
    let mut s = step(seed);
    (0..n)
        .map(|_| {
            s = step(s);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
        })
        .collect()
}

/// The workspace root (the folder holding `models/`), from this crate's location.
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// The stateful DFN3 graphs every broken-model folder starts from.
pub const DFN3_GRAPHS: [&str; 3] = ["enc.onnx", "erb_dec.onnx", "df_dec.onnx"];

/// A copy of the stateful DFN3 graphs (`models/dfn3/stateful`) in `root/name`, then changed by
/// `edit`. Copies, never links: the edits truncate and overwrite files. Panics (it is a test
/// helper) if the folder cannot be made.
pub fn dfn3_model_dir(root: &Path, name: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).expect("creating a model directory");
    for g in DFN3_GRAPHS {
        std::fs::copy(
            workspace_root().join("models/dfn3/stateful").join(g),
            d.join(g),
        )
        .expect("copying a graph");
    }
    edit(&d);
    d
}

/// Truncates `file` to `len` bytes. Panics if it cannot.
pub fn truncate(file: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .and_then(|f| f.set_len(len))
        .expect("truncating a file");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_deterministic_bounded_and_seed_dependent() {
        let a = noise(10_000, 3, 0.5);
        assert_eq!(a, noise(10_000, 3, 0.5));
        assert_ne!(a, noise(10_000, 4, 0.5));
        assert!(a.iter().all(|v| v.abs() <= 0.5));
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        assert!(mean.abs() < 0.02, "mean {mean}");
    }

    #[test]
    fn a_model_dir_is_a_copy_that_edits_do_not_reach_the_originals() {
        let root = std::env::temp_dir().join(format!("voxsift-testkit-{}", std::process::id()));
        let d = dfn3_model_dir(&root, "t", |d| truncate(&d.join("enc.onnx"), 10));
        assert_eq!(
            std::fs::metadata(d.join("enc.onnx")).map(|m| m.len()).ok(),
            Some(10)
        );
        let orig = workspace_root().join("models/dfn3/stateful/enc.onnx");
        assert!(std::fs::metadata(orig).map(|m| m.len()).unwrap_or(0) > 10);
        let _ = std::fs::remove_dir_all(root);
    }
}
