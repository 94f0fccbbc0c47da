//! `cargo xtask train-refiner`: the DFN3 refiner's training, from the dataset to the shipped
//! model, in one command (docs/separator-training.md).
//!
//! 1. `.venv-train/` with the pinned packages of `tools/train/requirements.txt` (torch runs on
//!    the CPU with two threads);
//! 2. `tools/train/refiner_data.py`: seeded mixtures of the training and validation packages
//!    of `cargo xtask dataset` (which must have run) under `DATA/refiner/`;
//! 3. `voxsift batch --beta 1` (release build) over the mixtures: DFN3's estimates, the
//!    refiner's second input;
//! 4. `tools/train/train_refiner.py` for `--minutes` (checkpoints every epoch; run it again to
//!    resume);
//! 5. `tools/train/export_refiner.py`: the best checkpoint to `--out` (default
//!    `models/local/dfn3-refiner/`; ONNX checked against
//!    torch, model.toml with sha256, reference vectors).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// The Python of `.venv-train/` with the pinned training packages installed.
pub fn train_python(root: &Path) -> Result<PathBuf> {
    let python = crate::venv_python(root, ".venv-train")?;
    let mut pip = Command::new(&python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "-r",
    ])
    .arg(root.join("tools/train/requirements.txt"));
    if std::env::var_os("PIP_INDEX_URL").is_none()
        && std::env::var_os("PIP_EXTRA_INDEX_URL").is_none()
    {
        // The CPU-only torch wheel where that index is reachable; PyPI's otherwise (same
        // version, runs on the CPU as well).
        pip.env("PIP_INDEX_URL", "https://download.pytorch.org/whl/cpu")
            .env("PIP_EXTRA_INDEX_URL", "https://pypi.org/simple");
    }
    run(&mut pip).context("cannot install tools/train/requirements.txt into .venv-train")?;
    Ok(python)
}

/// `cargo xtask train-refiner [--data DIR] [--run DIR] [--out DIR] [--minutes M] [--seed N]
/// [--variant mix|gate] [--threads N]`.
/// `ort_lib` is the ONNX Runtime library for `voxsift batch`.
pub fn run_refiner(root: &Path, ort_lib: &Path, args: &[String]) -> Result<()> {
    let cwd = std::env::current_dir()?;
    let mut data = root.join("data");
    let mut run_dir: Option<PathBuf> = None;
    // Not models/dfn3-refiner (where Studio would pick it up): a model ships only once it
    // beats DFN3 on the eval set, measured side by side (see models/README.md).
    let mut out = root.join("models/local/dfn3-refiner");
    let mut minutes = "60".to_string();
    let mut seed = "0".to_string();
    let mut variant = "mix".to_string();
    let mut threads = "2".to_string();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("train-refiner: {flag} needs a value"))
        };
        match a.as_str() {
            "--data" => data = cwd.join(value("--data")?),
            "--run" => run_dir = Some(cwd.join(value("--run")?)),
            "--out" => out = cwd.join(value("--out")?),
            "--minutes" => minutes = value("--minutes")?,
            "--seed" => seed = value("--seed")?,
            "--variant" => variant = value("--variant")?,
            "--threads" => threads = value("--threads")?,
            _ => bail!("train-refiner: unexpected argument {a}"),
        }
    }
    minutes
        .parse::<f64>()
        .ok()
        .filter(|m| m.is_finite() && *m > 0.0)
        .with_context(|| {
            format!("train-refiner: --minutes wants a positive number, got {minutes}")
        })?;
    seed.parse::<u64>()
        .with_context(|| format!("train-refiner: --seed wants a whole number, got {seed}"))?;
    if !["mix", "gate"].contains(&variant.as_str()) {
        bail!("train-refiner: --variant is mix or gate, got {variant}");
    }
    threads
        .parse::<u32>()
        .ok()
        .filter(|t| *t > 0)
        .with_context(|| {
            format!("train-refiner: --threads wants a positive number, got {threads}")
        })?;
    let manifest = root.join("tools/train/manifest.tsv");
    if !data.join("audio").is_dir() {
        bail!(
            "train-refiner: {} holds no dataset; run `cargo xtask dataset` first",
            data.display()
        );
    }
    let run_dir = run_dir.unwrap_or_else(|| data.join("runs/dfn3-refiner"));
    let mixtures = data.join("refiner");
    let python = train_python(root)?;
    let train = root.join("tools/train");
    if !mixtures.join("valid.tsv").is_file() {
        run(Command::new(&python)
            .arg(train.join("refiner_data.py"))
            .arg("--data")
            .arg(&data)
            .arg("--manifest")
            .arg(&manifest)
            .arg("--out")
            .arg(&mixtures)
            .args(["--seed", &seed]))?;
    }
    run(Command::new("cargo").current_dir(root).args([
        "build",
        "--release",
        "-p",
        "voxsift-app",
        "--bin",
        "voxsift",
    ]))?;
    let exe = root
        .join("target/release")
        .join(format!("voxsift{}", std::env::consts::EXE_SUFFIX));
    // Skips the estimates that exist, so a stopped run resumes.
    run(Command::new(&exe)
        .env("VOXSIFT_ORT_LIB", ort_lib)
        .arg("batch")
        .arg(mixtures.join("mix"))
        .arg(mixtures.join("dfn3"))
        .args(["--beta", "1", "--quiet"]))?;
    run(Command::new(&python)
        .arg(train.join("train_refiner.py"))
        .arg("--data")
        .arg(&mixtures)
        .arg("--run")
        .arg(&run_dir)
        .args(["--minutes", &minutes, "--seed", &seed])
        .args(["--variant", &variant, "--threads", &threads]))?;
    run(Command::new(&python)
        .arg(train.join("export_refiner.py"))
        .arg("--checkpoint")
        .arg(run_dir.join("best.pt"))
        .arg("--out")
        .arg(&out))?;
    for f in ["log.csv", "curves.png"] {
        std::fs::copy(run_dir.join(f), out.join(f))
            .with_context(|| format!("cannot copy {f} to {}", out.display()))?;
    }
    Ok(())
}
