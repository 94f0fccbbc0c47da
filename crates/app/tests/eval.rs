//! The evaluation suite on the real recordings of `../shared/eval-audio`: the `eval` and
//! `eval-set` commands, reproducibility, and agreement with the reference Python
//! implementations (`pystoi` for STOI; `mir_eval` for SDR/SIR/SAR where it is installed).
//!
//! The Python comparisons run with `$VOXSIFT_PYTHON` (set by `cargo xtask test`, which
//! installs the pinned packages into `.venv-xtask/`), else `.venv-xtask/bin/python`, else
//! `python3`; when none of them has the package, they are skipped with a printed reason (but
//! fail if `$VOXSIFT_PYTHON` was given and lacks it).

mod common;

use common::{eval_audio, python_with, run_python};
use serde_json::Value;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use voxsift_app::eval::set::{self, Estimates, EvalSet, Folders, ScanOptions, SetOptions};
use voxsift_app::eval::{bss, stoi, Mono, ScoreOptions};

const CX04: &str = "cx04_ljspeech_over_taiko_+3dB";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("voxsift-eval-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn mono(rel: &str) -> Mono {
    let path = eval_audio().join(rel);
    let m = Mono::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(m.sample_rate, 48_000);
    m
}

/// Mixture, speech stem and other stem of a constructed mixture, mono.
fn stems(id: &str) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    (
        mono(&format!("mixtures/{id}.flac")).samples,
        mono(&format!("mixtures/stems/{id}__speech.flac")).samples,
        mono(&format!("mixtures/stems/{id}__other.flac")).samples,
    )
}

/// Writes `x` as raw little-endian f64 (what `numpy.fromfile(path, '<f8')` reads).
fn write_f64(path: &Path, x: &[f64]) {
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).expect("write raw samples");
}

/// Runs a Python snippet with arguments and returns the numbers it prints, one per line.
fn python_numbers(py: &Path, script: &str, args: &[PathBuf]) -> Vec<f64> {
    let head = [OsStr::new("-c"), OsStr::new(script)];
    run_python(
        py,
        head.into_iter().chain(args.iter().map(|a| a.as_os_str())),
    )
    .lines()
    .map(|l| l.trim().parse::<f64>().expect("a number per line"))
    .collect()
}

const PYSTOI: &str = "\
import sys, numpy as np
from pystoi import stoi
sr = int(sys.argv[1])
a = sys.argv[2:]
for i in range(0, len(a), 2):
    x = np.fromfile(a[i], '<f8'); y = np.fromfile(a[i + 1], '<f8')
    print(repr(float(stoi(x, y, sr))))
";

#[test]
fn stoi_agrees_with_pystoi_on_the_eval_set() {
    let py = match python_with("pystoi") {
        Ok(p) => p,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let dir = scratch("pystoi");
    // (name, clean, processed): every constructed mixture against its speech stem, the same
    // with the music 10 dB down, and the two noisy VCTK files against their clean takes.
    let mut cases: Vec<(String, Vec<f64>, Vec<f64>)> = Vec::new();
    for id in [
        "cx01_libriM_over_brahms_0dB",
        "cx02_libriF_over_fishin_+5dB",
        "cx03_smsM_smsF_overlap_0dB",
        CX04,
    ] {
        let (mix, speech, other) = stems(id);
        let softer: Vec<f64> = speech
            .iter()
            .zip(&other)
            .map(|(s, o)| s + o * 10f64.powf(-10.0 / 20.0))
            .collect();
        cases.push((format!("{id} mixture"), speech.clone(), mix));
        cases.push((format!("{id} music -10 dB"), speech, softer));
    }
    for (mx, sp) in [
        ("mx01_vctk_p287_003_noisy", "sp04_vctk_p287_003_clean"),
        ("mx02_vctk_p287_005_noisy", "sp05_vctk_p287_005_clean"),
    ] {
        cases.push((
            mx.to_string(),
            mono(&format!("speech/{sp}.flac")).samples,
            mono(&format!("mixtures/{mx}.flac")).samples,
        ));
    }
    let mut args = vec![PathBuf::from("48000")];
    for (i, (_, x, y)) in cases.iter_mut().enumerate() {
        let n = x.len().min(y.len());
        x.truncate(n);
        y.truncate(n);
        let (px, pyf) = (dir.join(format!("{i}x.f64")), dir.join(format!("{i}y.f64")));
        write_f64(&px, x);
        write_f64(&pyf, y);
        args.extend([px, pyf]);
    }
    let want = python_numbers(&py, PYSTOI, &args);
    assert_eq!(want.len(), cases.len());
    let mut worst = 0.0f64;
    for ((name, x, y), w) in cases.iter().zip(&want) {
        let got = stoi::stoi(x, y, 48_000).expect("long enough");
        let diff = (got - w).abs();
        println!("{name:40} voxsift {got:.6}  pystoi {w:.6}  |diff| {diff:.2e}");
        worst = worst.max(diff);
    }
    println!("largest difference: {worst:.2e}");
    // The brief is 0.01; the implementation follows pystoi step by step, so it is far closer.
    assert!(worst < 1e-4, "STOI differs from pystoi by {worst}");
    let _ = std::fs::remove_dir_all(&dir);
}

const MIR_EVAL: &str = "\
import sys, numpy as np
from mir_eval.separation import bss_eval_sources
s, o, e = (np.fromfile(p, '<f8') for p in sys.argv[1:4])
ref = np.stack([s, o]); est = np.stack([e, s + o - e])
sdr, sir, sar, _ = bss_eval_sources(ref, est, compute_permutation=False)
print(repr(float(sdr[0]))); print(repr(float(sir[0]))); print(repr(float(sar[0])))
";

#[test]
fn sdr_sir_sar_agree_with_mir_eval() {
    let py = match python_with("mir_eval") {
        Ok(p) => p,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    // 3 s of cx04; the estimate has the speech through a short filter, the music 12 dB down
    // and a small artifact (the music's square, which no delay of either source explains).
    let (_, speech, other) = stems(CX04);
    let n = 3 * 48_000;
    let (s, o) = (&speech[..n], &other[..n]);
    let e: Vec<f64> = (0..n)
        .map(|t| {
            let prev = if t >= 3 { s[t - 3] } else { 0.0 };
            0.9 * s[t] + 0.2 * prev + 0.25 * o[t] + 0.5 * o[t] * o[t].abs()
        })
        .collect();
    let dir = scratch("mir-eval");
    let paths: Vec<PathBuf> = [("s", s), ("o", o), ("e", &e[..])]
        .iter()
        .map(|(name, x)| {
            let p = dir.join(format!("{name}.f64"));
            write_f64(&p, x);
            p
        })
        .collect();
    let want = python_numbers(&py, MIR_EVAL, &paths);
    let got = bss::BssEval::new(&[s, o], bss::DEFAULT_TAPS)
        .expect("valid references")
        .score(&e);
    let got = [
        got.sdr,
        got.sir.expect("two sources"),
        got.sar.expect("two sources"),
    ];
    println!("voxsift SDR/SIR/SAR {got:?}\nmir_eval            {want:?}");
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 0.01, "{got:?} vs {want:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs the CLI and returns (exit code, stdout, stderr).
fn voxsift(args: &[&str]) -> (Option<i32>, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_voxsift"))
        .args(args)
        .output()
        .expect("run voxsift");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

#[test]
fn eval_cli_scores_the_mixture_like_the_benchmarks() {
    // The mixture scored as its own estimate: SI-SDR 2.84 dB and residual −3.00 dB, the
    // mixture row of cx04 in BENCHMARKS.md (tools/bench/sisdr.py), and no improvement.
    let m = eval_audio().join("mixtures");
    let mix = m.join(format!("{CX04}.flac"));
    let dir = scratch("cli");
    let json = dir.join("cx04.json");
    let plots = dir.join("plots");
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let (code, stdout, stderr) = voxsift(&[
        "eval",
        "--estimate",
        &path(&mix),
        "--speech",
        &path(&m.join(format!("stems/{CX04}__speech.flac"))),
        "--other",
        &path(&m.join(format!("stems/{CX04}__other.flac"))),
        "--mixture",
        &path(&mix),
        "--json",
        &path(&json),
        "--plots",
        &path(&plots),
    ]);
    println!("{stdout}{stderr}");
    assert_eq!(code, Some(0));
    assert!(stdout.contains("SI-SDR          2.84 dB"), "{stdout}");
    let v: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json written")).expect("valid JSON");
    assert!((num(&v, "si_sdr") - 2.84).abs() < 0.005, "{v}");
    assert_eq!(num(&v, "si_sdr_improvement"), 0.0);
    assert!((num(&v, "residual_db") + 3.00).abs() < 0.005, "{v}");
    assert_eq!(num(&v, "stoi"), num(&v, "stoi_mixture"));
    // The mixture is exactly speech + music up to 16-bit rounding: no artifacts to speak of.
    assert!(num(&v["bss"], "sar") > 60.0, "{v}");
    assert!(
        (num(&v["bss"], "sdr") - num(&v["bss"], "sir")).abs() < 0.01,
        "{v}"
    );
    assert_eq!(v["bands"].as_array().map(Vec::len), Some(9));
    assert_eq!(v["segments"].as_array().map(Vec::len), Some(8));
    for suffix in ["spectrogram", "bands", "time"] {
        let p = plots.join(format!("{CX04}_{suffix}.png"));
        let bytes = std::fs::read(&p).expect("plot written");
        assert!(bytes.starts_with(b"\x89PNG"), "{}", p.display());
    }
    // A rate mismatch and a missing file are errors with the file named.
    let (code, _, stderr) = voxsift(&[
        "eval",
        "--estimate",
        &path(&dir.join("missing.wav")),
        "--speech",
        &path(&mix),
    ]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("missing.wav"), "{stderr}");
    let (code, _, stderr) = voxsift(&["eval-set", &path(&dir)]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("not an evaluation set"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn eval_set_scores_estimates_from_a_folder() {
    // The mixture itself as the estimate, read from an estimates folder laid out as
    // `voxsift batch` writes it: the improvement is exactly 0 and the residual is −SNR.
    let est = scratch("estimates");
    let mix = voxsift_app::io::read_audio(&eval_audio().join(format!("mixtures/{CX04}.flac")))
        .expect("readable");
    std::fs::create_dir_all(est.join("mixtures")).expect("mkdir");
    voxsift_app::io::write_wav(
        &est.join("mixtures").join(format!("{CX04}.wav")),
        &mix,
        voxsift_app::io::SampleFormat::F32,
    )
    .expect("written");
    let folders = Folders::detect(&eval_audio()).expect("eval-audio layout");
    let eval_set = EvalSet::scan(
        &folders,
        &ScanOptions {
            talker_mixes: vec![],
            only: vec!["cx04".into()],
        },
    )
    .expect("scans");
    assert_eq!(eval_set.items.len(), 1);
    let opts = SetOptions {
        estimates: Estimates::Dir(est.clone()),
        score: ScoreOptions::default(),
        max_seconds: Some(3.0),
        plots: None,
        keep_renders: None,
        model_name: String::new(),
    };
    let mut events = 0;
    let report = set::run(&eval_set, &opts, |_| events += 1).expect("scores");
    assert!(events >= 2);
    let m = &report.mixtures[0];
    assert_eq!(m.scores.seconds, 3.0);
    assert_eq!(m.scores.si_sdr_improvement, Some(0.0));
    assert_eq!(m.scores.residual_db, m.scores.residual_mixture_db);
    assert_eq!(report.summary.mixtures.count, 1);
    // A missing estimate is an error that says where it was looked for.
    let empty = scratch("no-estimates");
    let opts = SetOptions {
        estimates: Estimates::Dir(empty.clone()),
        ..opts
    };
    let e = set::run(&eval_set, &opts, |_| {}).expect_err("no estimate");
    assert!(e.to_string().contains(&format!("{CX04}.wav")), "{e}");
    let _ = std::fs::remove_dir_all(&est);
    let _ = std::fs::remove_dir_all(&empty);
}

/// Runs `eval-set` with DFN3 on short excerpts of one file of each kind into `out`.
fn eval_set_excerpts(out: &Path) -> (Option<i32>, String, String) {
    voxsift(&[
        "eval-set",
        &eval_audio().to_string_lossy(),
        "--out",
        &out.to_string_lossy(),
        "--only",
        "cx04",
        "--only",
        "sp06",
        "--only",
        "mu19",
        "--max-seconds",
        "2.5",
        "--no-mask-cache",
        "--quiet",
    ])
}

#[test]
fn eval_set_is_reproducible_to_the_last_digit() {
    // Needs ONNX Runtime (DFN3), like tests/dfn3.rs. 2.5 s of three files, twice.
    let dir = scratch("repro");
    let (a, b) = (dir.join("a"), dir.join("b"));
    for out in [&a, &b] {
        let (code, stdout, stderr) = eval_set_excerpts(out);
        println!("{stdout}{stderr}");
        assert_eq!(code, Some(0));
    }
    let read = |p: PathBuf| std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    for f in [
        "report.json",
        "report.md",
        &format!("plots/{CX04}_spectrogram.png"),
        &format!("plots/{CX04}_bands.png"),
        &format!("plots/{CX04}_time.png"),
        "plots/summary.png",
    ] {
        assert!(
            read(a.join(f)) == read(b.join(f)),
            "{f} differs between runs"
        );
    }
    let v: Value = serde_json::from_slice(&read(a.join("report.json"))).expect("valid JSON");
    let mixture = &v["mixtures"][0];
    assert_eq!(mixture["id"], CX04);
    assert_eq!(mixture["file"], format!("mixtures/{CX04}.flac"));
    // DFN3 does its job on the excerpt: speech up, music down, clean speech kept, music
    // only attenuated.
    assert!(num(mixture, "si_sdr_improvement") > 4.0, "{mixture}");
    assert!(
        num(mixture, "residual_db") < num(mixture, "residual_mixture_db") - 10.0,
        "{mixture}"
    );
    assert!(
        num(mixture, "stoi") > num(mixture, "stoi_mixture"),
        "{mixture}"
    );
    let speech = &v["speech"][0];
    assert!(num(speech, "si_sdr") > 10.0, "{speech}");
    let music = &v["music"][0];
    assert!(num(music, "leak_db") < -6.0, "{music}");
    assert_eq!(v["estimates"]["settings"]["model"], "dfn3");
    assert_eq!(v["max_seconds"], 2.5);
    // An existing report is kept unless --force.
    let (code, _, stderr) = eval_set_excerpts(&a);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("--force"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
