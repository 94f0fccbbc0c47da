//! Several models at once, fused: the fused masks equal the fusion of each model's own masks
//! exactly; the latency covers the slowest model and an impulse comes out there; fused
//! offline renders are deterministic; a one-model set and a model whose spec is known only
//! after loading render exactly as the plain model; Studio without a separator says how to get
//! one. The synthetic models need no ONNX Runtime; the end-to-end separator tests run when the
//! exported test models (`models/denoiser-tiny`, `models/htdemucs-tiny`) are there.

mod common;

use common::{assert_block_size_invariant, noise, repo, unity};
use num_complex::Complex32;
use std::path::{Path, PathBuf};
use std::process::Command;
use voxsift_app::render::{
    render, start, ModelChoice, Preset, RenderError, RenderOptions, SyntheticSettings,
};
use voxsift_engine::{Engine, EngineConfig, RunMode};
use voxsift_models::fusion::{fuse_bin, Fusion};

/// A synthetic model at `sample_rate` with `lookahead` frames, attenuating from `cutoff_hz`.
fn synthetic(lookahead: usize, sample_rate: u32, cutoff_hz: f32) -> ModelChoice {
    ModelChoice::SyntheticWith(SyntheticSettings {
        lookahead,
        sample_rate,
        cutoff_hz,
        deferred: false,
    })
}

/// Two synthetic models whose masks differ: another lookahead, rate (so another resampler)
/// and cutoff.
fn pair() -> (ModelChoice, ModelChoice) {
    (synthetic(2, 48_000, 2_000.0), synthetic(5, 16_000, 1_000.0))
}

/// A signal whose level changes, so the synthetic masks vary from frame to frame.
fn signal(rate: u32, seconds: f64, seed: u64) -> Vec<f32> {
    let n = (rate as f64 * seconds) as usize;
    noise(n, seed, 0.6)
        .iter()
        .enumerate()
        .map(|(i, v)| v * (0.2 + 0.8 * (i as f32 / 4_000.0).sin().abs()))
        .collect()
}

/// Runs `x` (mono) through an engine for `model` at `rate` with the model's own mask (beta
/// 1, no floor) and returns the magnitude of the gains applied to every frame, in order
/// (blocks of 64 samples: at most one frame per call), and the engine's latency.
fn applied_columns(model: &ModelChoice, rate: u32, x: &[f32]) -> (Vec<Vec<f32>>, usize) {
    let cfg = EngineConfig::new(rate, 64, 1, RunMode::Offline);
    let (mut e, _w) = start(cfg, model, 1).expect("the model starts");
    e.set_params_immediate(unity());
    let mut cols = Vec::new();
    for chunk in x.chunks(64) {
        let mut buf = chunk.to_vec();
        let before = e.frames_synthesized();
        e.process(&mut [&mut buf[..]]);
        let after = e.frames_synthesized();
        assert!(after - before <= 1, "more than one frame in a block");
        if after > before {
            cols.push(e.applied_gains().to_vec());
        }
    }
    (cols, e.latency_samples())
}

#[test]
fn fused_masks_equal_the_fusion_of_each_models_own_masks_exactly() {
    let (a, b) = pair();
    for rate in [48_000, 44_100] {
        let x = signal(rate, 1.5, 7);
        let (ca, _) = applied_columns(&a, rate, &x);
        let (cb, _) = applied_columns(&b, rate, &x);
        // The two models do give different masks, so the fusion has something to decide.
        assert!(
            ca.iter().zip(&cb).any(|(p, q)| p != q),
            "{rate}: same masks"
        );
        for rule in [Fusion::Max, Fusion::Mean, Fusion::Min] {
            for weights in [[1.0f32, 1.0], [1.0, 0.75], [0.5, 2.0]] {
                let fused = ModelChoice::Fused {
                    members: vec![(a.clone(), weights[0]), (b.clone(), weights[1])],
                    rule,
                };
                let (cf, _) = applied_columns(&fused, rate, &x);
                let frames = cf.len().min(ca.len()).min(cb.len());
                assert!(frames > 100, "{rate}: only {frames} frames");
                for f in 0..frames {
                    // The synthetic masks are real and non-negative, so a mask is its
                    // applied magnitude, exactly.
                    let want: Vec<f32> = ca[f]
                        .iter()
                        .zip(&cb[f])
                        .map(|(&ga, &gb)| {
                            let g = [Complex32::new(ga, 0.0), Complex32::new(gb, 0.0)];
                            fuse_bin(rule, &g, &weights).norm()
                        })
                        .collect();
                    assert!(
                        cf[f] == want,
                        "{rate} Hz, {rule}, weights {weights:?}: frame {f} differs"
                    );
                }
            }
        }
    }
}

#[test]
fn max_and_min_pick_per_bin_between_the_members() {
    // With weights 1 each fused bin is one of the members' bins, and both members win
    // somewhere (so the result is neither model alone).
    let (a, b) = pair();
    let rate = 48_000;
    let x = signal(rate, 1.0, 8);
    let (ca, _) = applied_columns(&a, rate, &x);
    let (cb, _) = applied_columns(&b, rate, &x);
    let fused = ModelChoice::Fused {
        members: vec![(a, 1.0), (b, 1.0)],
        rule: Fusion::Max,
    };
    let (cf, _) = applied_columns(&fused, rate, &x);
    let (mut from_a, mut from_b) = (0usize, 0usize);
    for f in 0..cf.len().min(ca.len()).min(cb.len()) {
        for k in 0..cf[f].len() {
            let (g, ga, gb) = (cf[f][k], ca[f][k], cb[f][k]);
            assert_eq!(g, ga.max(gb), "frame {f} bin {k}");
            from_a += usize::from(ga > gb);
            from_b += usize::from(gb > ga);
        }
    }
    assert!(from_a > 0 && from_b > 0, "{from_a} {from_b}");
}

#[test]
fn fused_latency_covers_the_slowest_model_and_an_impulse_comes_out_there() {
    let (a, b) = pair();
    let fused = ModelChoice::Fused {
        members: vec![(a.clone(), 1.0), (b.clone(), 1.0)],
        rule: Fusion::Max,
    };
    for (rate, block) in [(48_000, 128), (44_100, 512), (96_000, 64)] {
        let cfg = EngineConfig::new(rate, block, 1, RunMode::Offline);
        let latency = |m: &ModelChoice| {
            let (e, _w) = start(cfg, m, 1).expect("starts");
            e.latency_samples()
        };
        let (la, lb, lf) = (latency(&a), latency(&b), latency(&fused));
        assert!(lb > la, "{rate}: the slow model is not slower ({la}, {lb})");
        assert_eq!(lf, la.max(lb), "{rate} Hz, block {block}");
        // The order of the members does not change it, and it is the same every time.
        let swapped = ModelChoice::Fused {
            members: vec![(b.clone(), 1.0), (a.clone(), 1.0)],
            rule: Fusion::Max,
        };
        assert_eq!(latency(&swapped), lf);
        assert_eq!(latency(&fused), lf);

        let (mut e, _w) = start(cfg, &fused, 1).expect("starts");
        e.set_params_immediate(unity());
        let at = 3_000;
        let mut x = vec![0.0; at + e.latency_samples() + 4_000];
        x[at] = 1.0;
        let y = run(&mut e, &x, block);
        let peak = (0..y.len())
            .max_by(|p, q| y[*p].abs().total_cmp(&y[*q].abs()))
            .unwrap_or(0);
        assert_eq!(peak - at, e.latency_samples(), "{rate} Hz, block {block}");
    }
}

/// Runs `x` through `e` in blocks of `block`.
fn run(e: &mut Engine, x: &[f32], block: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for chunk in x.chunks(block) {
        let mut buf = chunk.to_vec();
        e.process(&mut [&mut buf[..]]);
        out.extend_from_slice(&buf);
    }
    out
}

#[test]
fn fused_offline_renders_are_deterministic_and_block_size_invariant() {
    let (a, b) = pair();
    let opts = RenderOptions {
        model: ModelChoice::Fused {
            members: vec![(a, 1.0), (b, 0.8)],
            rule: Fusion::Mean,
        },
        ..RenderOptions::default()
    };
    for (rate, channels) in [(48_000, 1usize), (44_100, 2)] {
        let x: Vec<Vec<f32>> = (0..channels)
            .map(|c| signal(rate, 1.0, 20 + c as u64))
            .collect();
        let first = render(&x, rate, &opts, |_, _| {}).expect("renders");
        let second = render(&x, rate, &opts, |_, _| {}).expect("renders");
        assert!(
            first.channels == second.channels,
            "{rate}: two renders differ"
        );
        let invariant = assert_block_size_invariant(&x, rate, &opts);
        assert!(invariant == first.channels, "{rate}: blocks of 512 differ");
        // The masks do something.
        assert!(first.channels[0] != x[0]);
    }
}

#[test]
fn a_one_model_set_and_a_spec_known_only_after_loading_render_as_the_model_alone() {
    let x = vec![signal(44_100, 1.0, 30)];
    let plain = RenderOptions {
        model: synthetic(3, 16_000, 1_500.0),
        ..RenderOptions::default()
    };
    let want = render(&x, 44_100, &plain, |_, _| {}).expect("renders");
    let variants = [
        // One member: passed through whatever its weight and the rule.
        ModelChoice::Fused {
            members: vec![(synthetic(3, 16_000, 1_500.0), 0.3)],
            rule: Fusion::Mean,
        },
        // The spec is published by the worker once the model is loaded (as a separator's),
        // and the engine is built from it.
        ModelChoice::SyntheticWith(SyntheticSettings {
            lookahead: 3,
            sample_rate: 16_000,
            cutoff_hz: 1_500.0,
            deferred: true,
        }),
    ];
    for model in variants {
        assert_eq!(
            model.known_specs().is_none(),
            !matches!(model, ModelChoice::Fused { .. })
        );
        let opts = RenderOptions {
            model: model.clone(),
            ..plain.clone()
        };
        let got = render(&x, 44_100, &opts, |_, _| {}).expect("renders");
        assert_eq!(got.latency, want.latency, "{model:?}");
        assert!(got.channels == want.channels, "{model:?}: output differs");
    }
}

#[test]
fn fused_sets_are_checked_before_they_run() {
    let (a, b) = pair();
    let bad = [
        ModelChoice::Fused {
            members: vec![],
            rule: Fusion::Max,
        },
        ModelChoice::Fused {
            members: vec![(a.clone(), 1.0), (b.clone(), 0.0)],
            rule: Fusion::Max,
        },
        ModelChoice::Fused {
            members: vec![(a.clone(), f32::NAN), (b.clone(), 1.0)],
            rule: Fusion::Max,
        },
        ModelChoice::Fused {
            members: vec![(
                ModelChoice::Fused {
                    members: vec![(a, 1.0)],
                    rule: Fusion::Max,
                },
                1.0,
            )],
            rule: Fusion::Max,
        },
    ];
    for model in bad {
        let opts = RenderOptions {
            model: model.clone(),
            ..RenderOptions::default()
        };
        let err = render(&[vec![0.0; 4_800]], 48_000, &opts, |_, _| {});
        assert!(
            matches!(err, Err(RenderError::Invalid(_))),
            "{model:?}: {err:?}"
        );
    }
}

#[test]
fn studio_without_a_separator_says_how_to_get_one() {
    let missing = PathBuf::from("/nonexistent/voxsift-separator");
    let model = Preset::Studio.models(ModelChoice::Dfn3, ModelChoice::Separator(missing.clone()));
    let opts = RenderOptions {
        model,
        ..RenderOptions::default()
    };
    let err = render(&[vec![0.0; 4_800]], 48_000, &opts, |_, _| {})
        .expect_err("no separator")
        .to_string();
    for want in [
        "/nonexistent/voxsift-separator",
        "model.toml",
        "cargo xtask export-model htdemucs",
        "--separator",
        "VOXSIFT_SEPARATOR",
    ] {
        assert!(err.contains(want), "{err:?} does not say {want:?}");
    }
    // The CLI says the same before reading the input, and writes nothing.
    let dir = scratch("studio-missing");
    let input = wav(&dir, &signal(48_000, 0.2, 40));
    let out = dir.join("out.wav");
    let (code, stderr) = cli(
        &input,
        &out,
        [
            "--preset".as_ref(),
            "studio".as_ref(),
            "--separator".as_ref(),
            missing.as_os_str(),
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("cargo xtask export-model htdemucs"),
        "{stderr}"
    );
    assert!(!out.exists());
}

/// A fresh scratch folder under the target directory.
fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("fusion-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch folder");
    d
}

/// Writes `x` as a mono 48 kHz float WAV in `dir`.
fn wav(dir: &Path, x: &[f32]) -> PathBuf {
    let p = dir.join("in.wav");
    let audio = voxsift_app::io::Audio::new(48_000, vec![x.to_vec()]);
    voxsift_app::io::write_wav(&p, &audio, voxsift_app::io::SampleFormat::F32)
        .expect("writing a WAV");
    p
}

/// Runs `voxsift render INPUT -o OUT --force ARGS`; returns (exit code, stderr).
fn cli<S: AsRef<std::ffi::OsStr>>(
    input: &Path,
    out: &Path,
    args: impl IntoIterator<Item = S>,
) -> (Option<i32>, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_voxsift"))
        .arg("render")
        .arg(input)
        .arg("-o")
        .arg(out)
        .arg("--force")
        .args(args)
        // The models run (no masks replayed from an earlier render).
        .args(["--quiet", "--no-mask-cache"])
        .output()
        .expect("running the voxsift CLI");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Reads a WAV back (mono).
fn read(p: &Path) -> Vec<f32> {
    let a = voxsift_app::io::read_audio(p).expect("readable output");
    a.channels.into_iter().next().unwrap_or_default()
}

#[test]
fn the_cli_fuses_repeated_models_with_weights_as_the_library_does() {
    let dir = scratch("cli-fused");
    let x = signal(48_000, 0.8, 50);
    let input = wav(&dir, &x);
    let out = dir.join("out.wav");
    let (code, stderr) = cli(
        &input,
        &out,
        [
            "--model",
            "synthetic",
            "--model",
            "synthetic:5:16000:1000",
            "--fuse",
            "mean",
            "--weight",
            "1",
            "--weight",
            "2",
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let opts = RenderOptions {
        model: ModelChoice::Fused {
            members: vec![
                (ModelChoice::Synthetic(2), 1.0),
                (synthetic(5, 16_000, 1_000.0), 2.0),
            ],
            rule: Fusion::Mean,
        },
        ..RenderOptions::default()
    };
    let want = render(&[x], 48_000, &opts, |_, _| {}).expect("renders");
    assert!(read(&out) == want.channels[0], "the CLI render differs");
    // Flags that do not fit together are refused with a reason.
    for (args, says) in [
        (vec!["--model", "synthetic", "--fuse", "max"], "--fuse"),
        (
            vec![
                "--model",
                "synthetic",
                "--model",
                "synthetic:3",
                "--weight",
                "1",
            ],
            "--weight",
        ),
        (
            vec!["--model", "synthetic", "--preset", "live"],
            "--preset live|studio and --model",
        ),
        (vec!["--separator", "x"], "--separator"),
        (
            vec![
                "--model",
                "synthetic",
                "--model",
                "synthetic:3",
                "--weight",
                "1",
                "--weight",
                "0",
            ],
            "weight",
        ),
        (
            vec!["--model", "/nonexistent/model-dir"],
            "no such directory",
        ),
    ] {
        let (code, stderr) = cli(&input, &out, &args);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(says),
            "{args:?}: {stderr:?} does not say {says:?}"
        );
    }
}

/// `models/<name>` in the repository, when it has been exported.
fn exported(name: &str) -> Option<PathBuf> {
    let d = repo().join("models").join(name);
    if d.join("model.toml").is_file() {
        Some(d)
    } else {
        eprintln!(
            "skipped: {} is not there (the random-init test model: cargo xtask export-model)",
            d.display()
        );
        None
    }
}

/// Renders `input` with the CLI and extra `args` into `out`; asserts success.
fn cli_render(input: &Path, out: &Path, args: &[&str]) -> Vec<f32> {
    let (code, stderr) = cli(input, out, args);
    assert_eq!(code, Some(0), "{args:?}: {stderr}");
    read(out)
}

#[test]
fn the_cli_renders_with_an_exported_separator_alone_and_in_studio() {
    let dir = scratch("cli-separator");
    let x = signal(48_000, 2.0, 60);
    let input = wav(&dir, &x);
    let out = dir.join("out.wav");
    let mut cases: Vec<Vec<String>> = Vec::new();
    if let Some(d) = exported("denoiser-tiny") {
        cases.push(vec!["--model".into(), d.to_string_lossy().into_owned()]);
    }
    if let Some(h) = exported("htdemucs-tiny") {
        let h = h.to_string_lossy().into_owned();
        cases.push(vec!["--model".into(), h.clone()]);
        cases.push(vec![
            "--preset".into(),
            "studio".into(),
            "--separator".into(),
            h,
        ]);
    }
    for args in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let y = cli_render(&input, &out, &args);
        assert_eq!(y.len(), x.len(), "{args:?}");
        assert!(y.iter().all(|v| v.is_finite()), "{args:?}");
        assert!(y != x, "{args:?}: the output is the input");
        // Offline renders are deterministic.
        let again = cli_render(&input, &out, &args);
        assert!(again == y, "{args:?}: two renders differ");
    }
}

#[test]
fn frames_per_call_renders_as_the_library_does_and_is_refused_where_it_cannot_apply() {
    let dir = scratch("cli-frames-per-call");
    let x = signal(48_000, 1.5, 51);
    let input = wav(&dir, &x);
    let out = dir.join("out.wav");
    let (code, stderr) = cli(&input, &out, ["--frames-per-call", "8"]);
    assert_eq!(code, Some(0), "{stderr}");
    let opts = RenderOptions {
        model: ModelChoice::Dfn3Batched(8),
        ..RenderOptions::default()
    };
    let want = render(&[x], 48_000, &opts, |_, _| {}).expect("renders");
    assert!(read(&out) == want.channels[0], "the CLI render differs");
    for (args, says) in [
        (vec!["--frames-per-call", "0"], "from 1 to"),
        (vec!["--frames-per-call", "1001"], "from 1 to"),
        (
            vec!["--frames-per-call", "8", "--mode", "realtime-sim"],
            "offline",
        ),
        (
            vec!["--frames-per-call", "8", "--model", "synthetic"],
            "DeepFilterNet3 alone",
        ),
        (
            vec!["--frames-per-call", "8", "--preset", "studio"],
            "DeepFilterNet3 alone",
        ),
    ] {
        let refused = dir.join("refused.wav");
        let (code, stderr) = cli(&input, &refused, &args);
        assert_ne!(code, Some(0), "{args:?} was accepted");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!refused.exists(), "{args:?} wrote an output");
    }
}
