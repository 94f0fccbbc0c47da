//! Faults and bad audio through the built CLAP plugin (see `RELIABILITY.md`): a model
//! directory whose graphs are truncated or swapped makes the plugin pass audio through delayed
//! by its latency, without crashing and without leaving a thread behind; graphs with NaN
//! weights and NaN/Inf/huge input give finite output.
//!
//! Every test takes [`lock_model`] first (`VOXSIFT_MODEL` is process-wide).

use std::path::{Path, PathBuf};
use std::time::Duration;
use voxsift_host_tests::*;
use voxsift_testkit::truncate;

/// The latency at 48 kHz with 512-sample blocks: STFT 959, DFN3's two frames 960, one block.
const LATENCY_48K_512: usize = 959 + 960 + 512;

/// The tests of this file (the names of their threads, cut to 15 characters, are not the
/// plugin's).
const TESTS: [&str; 3] = [
    "broken_model_files_pass_audio_through_delayed_by_the_latency",
    "graphs_with_nan_weights_give_finite_output",
    "nan_inf_and_huge_input_gives_finite_output_through_the_plugin",
];

/// A scratch directory for this test process, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    /// `<tmp>/voxsift-faults-<pid>/<name>`, empty.
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir()
            .join(format!("voxsift-faults-{}", std::process::id()))
            .join(name);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("creating a scratch directory");
        Self(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        // The per-process parent, once the last test's directory is gone (fails otherwise).
        if let Some(parent) = self.0.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// A copy (never a link: the edits change files in place) of the stateful DFN3 graphs in
/// `root/name`, changed by `edit`.
fn model_dir(root: &Scratch, name: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    voxsift_testkit::dfn3_model_dir(&root.0, name, edit)
}

/// Two different channels.
fn stereo(n: usize, seed: u64) -> Vec<Vec<f32>> {
    vec![
        test_signal(n, 48_000.0, seed),
        test_signal(n, 48_000.0, seed + 1)
            .iter()
            .map(|v| v * 0.7)
            .collect(),
    ]
}

#[test]
fn broken_model_files_pass_audio_through_delayed_by_the_latency() {
    // enc.onnx truncated to half, an empty erb_dec.onnx, and enc.onnx copied over
    // erb_dec.onnx (a graph with the wrong inputs): activation succeeds with DFN3's latency,
    // the output is finite, silent before the latency and the input delayed by the latency,
    // bit for bit, from 50 ms after the output starts (offline, and realtime paced like a
    // live host); no thread is left after deactivation (but ONNX Runtime's own, see below).
    let root = Scratch::new("broken");
    let half = |f: &Path| std::fs::metadata(f).map(|m| m.len() / 2).unwrap_or(0);
    let dirs = [
        (
            "truncated enc.onnx",
            model_dir(&root, "truncated", |d| {
                truncate(&d.join("enc.onnx"), half(&d.join("enc.onnx")))
            }),
        ),
        (
            "empty erb_dec.onnx",
            model_dir(&root, "empty", |d| truncate(&d.join("erb_dec.onnx"), 0)),
        ),
        (
            "enc.onnx as erb_dec.onnx",
            model_dir(&root, "swapped", |d| {
                std::fs::copy(d.join("enc.onnx"), d.join("erb_dec.onnx")).expect("cp");
            }),
        ),
    ];
    let x = stereo(24_000, 3);
    // One guard for the whole test: no other test of this binary starts (and no test thread
    // appears) while the threads are compared.
    let mut env = lock_model(&Model::Synthetic);
    for (name, dir) in dirs {
        env.set(&Model::Dir(dir));
        for mode in [Mode::Offline, Mode::Realtime] {
            let mut p = Plugin::new().expect("loading the plugin");
            let before = threads().expect("threads");
            let latency = p
                .activate(Setup::new(48_000.0, 512, 2, mode))
                .expect("activation succeeds although the model cannot load")
                as usize;
            assert_eq!(latency, LATENCY_48K_512, "{name} {mode:?}");
            let run = match mode {
                Mode::Offline => Run::blocks(&[512]),
                Mode::Realtime => {
                    // As a host between activation and play: the worker reports the failure
                    // (loading ONNX Runtime the first time takes a moment).
                    std::thread::sleep(Duration::from_millis(300));
                    Run::blocks(&[512]).paced()
                }
            };
            let y = p.process(&x, &run).expect("process");
            ensure_finite(&y).expect("finite output");
            let mut exact_from = 0;
            for (yc, xc) in y.iter().zip(&x) {
                assert!(yc[..latency].iter().all(|v| *v == 0.0), "{name} {mode:?}");
                let dry = delayed(xc, latency);
                let from = latency + 2_400;
                assert_eq!(
                    first_difference(&yc[from..], &dry[from..]),
                    None,
                    "{name} {mode:?}: not the input delayed by {latency}"
                );
                exact_from = exact_from.max(
                    yc.iter()
                        .zip(&dry)
                        .rposition(|(a, b)| a.to_bits() != b.to_bits())
                        .map_or(0, |i| i + 1),
                );
            }
            println!(
                "{name}, {mode:?}: latency {latency}, delayed dry bit-exact from sample \
                 {exact_from} ({:.1} ms after the output starts)",
                exact_from.saturating_sub(latency) as f64 / 48.0
            );
            p.deactivate();
            // The one thread ONNX Runtime starts when it is first loaded (here, by the first
            // broken graph) lives as long as the process: it is not left behind by us.
            // Nor are the test harness's threads for the other tests of this file, which it
            // may start at any time (named after the test, cut to 15 characters).
            let ours = |n: &str| n != "voxsift-ort" && !TESTS.iter().any(|t| t.starts_with(n));
            let (clean, _) = wait_until(Duration::from_millis(500), || {
                threads().is_ok_and(|now| new_threads(&before, &now).iter().all(|(_, n)| !ours(n)))
            });
            assert!(
                clean,
                "{name} {mode:?}: threads left behind: {:?}",
                new_threads(&before, &threads().unwrap_or_default())
            );
        }
    }
}

#[test]
fn graphs_with_nan_weights_give_finite_output() {
    // 64 KiB of 0xFF (NaN as float32) in the middle of erb_dec.onnx: ONNX Runtime loads it and
    // the model produces NaN gains, which the engine replaces; the plugin's output is finite.
    let root = Scratch::new("nan");
    let dir = model_dir(&root, "nan-erb-dec", |d| {
        let f = d.join("erb_dec.onnx");
        let mut bytes = std::fs::read(&f).expect("read");
        let mid = bytes.len() / 2;
        bytes[mid..mid + 65_536].fill(0xFF);
        std::fs::write(&f, bytes).expect("write");
    });
    let _env = lock_model(&Model::Dir(dir));
    let x = stereo(48_000, 5);
    let mut p = Plugin::new().expect("loading the plugin");
    p.activate(Setup::new(48_000.0, 512, 2, Mode::Offline))
        .expect("activate");
    let y = p.process(&x, &Run::blocks(&[512, 100])).expect("process");
    ensure_finite(&y).expect("finite output");
}

#[test]
fn nan_inf_and_huge_input_gives_finite_output_through_the_plugin() {
    // Blocks of NaN, ±Inf, f32::MAX and denormals in a stereo signal, through the synthetic
    // model (realtime and offline) and DFN3 (offline): the output is finite, and bit-identical
    // to a run whose bad samples were zeros (NaN, Inf and denormals are silence to the
    // engine; f32::MAX is clamped, so it is compared only for finiteness).
    let mut x = stereo(48_000, 7);
    let mut zeroed = x.clone();
    for i in 10_000..12_000 {
        x[0][i] = f32::NAN;
        x[1][i + 3_000] = if i % 2 == 0 {
            f32::INFINITY
        } else {
            f32::NEG_INFINITY
        };
        x[i % 2][i + 8_000] = f32::from_bits(1 + i as u32);
        zeroed[0][i] = 0.0;
        zeroed[1][i + 3_000] = 0.0;
        zeroed[i % 2][i + 8_000] = 0.0;
    }
    let mut huge = x.clone();
    for c in &mut huge {
        c[30_000..30_500].fill(f32::MAX);
    }
    let mut env = lock_model(&Model::Synthetic);
    for (model, modes) in [
        (Model::Synthetic, &[Mode::Offline, Mode::Realtime][..]),
        (Model::Dfn3, &[Mode::Offline][..]),
    ] {
        env.set(&model);
        for &mode in modes {
            let render = |input: &[Vec<f32>]| {
                let mut p = Plugin::new().expect("loading the plugin");
                p.activate(Setup::new(48_000.0, 512, 2, mode))
                    .expect("activate");
                let y = p
                    .process(input, &Run::blocks(&[512, 64, 333]))
                    .expect("process");
                ensure_finite(&y).expect("finite output");
                y
            };
            let y = render(&x);
            if mode == Mode::Offline {
                let z = render(&zeroed);
                for c in 0..2 {
                    assert_eq!(
                        first_difference(&y[c], &z[c]),
                        None,
                        "{model:?}: bad samples are not silence to the plugin"
                    );
                }
            }
            render(&huge);
        }
    }
}
