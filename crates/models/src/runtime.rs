//! Finding and loading ONNX Runtime (dynamically), and building sessions with our options.
//!
//! Lookup order for the library: `VOXSIFT_ORT_LIB` (or ort's `ORT_DYLIB_PATH`), beside the
//! running binary or plugin, then the folder `cargo xtask fetch-runtime` fills (for this
//! platform, or for it as another machine's cross target). The library is loaded once per
//! process; the environment lives for the rest of the process.

use crate::error::ModelError;
use std::ffi::{c_char, CStr};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// File name of the library on this platform.
#[cfg(target_os = "linux")]
pub const LIB_NAME: &str = "libonnxruntime.so";
/// File name of the library on this platform.
#[cfg(target_os = "macos")]
pub const LIB_NAME: &str = "libonnxruntime.dylib";
/// File name of the library on this platform.
#[cfg(target_os = "windows")]
pub const LIB_NAME: &str = "onnxruntime.dll";

pub use crate::error::{RuntimeError, FIX, ORT_MIN_MINOR, ORT_VERSION};

/// Where the runtime was found, and its version.
#[derive(Debug, Clone)]
pub struct RuntimeInfo {
    /// The library file.
    pub path: PathBuf,
    /// Its version string.
    pub version: String,
}

/// Extra directories to search (e.g. the plugin bundle's own folder), set before first use.
static EXTRA_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// The loaded runtime, once loaded.
static LOADED: OnceLock<RuntimeInfo> = OnceLock::new();
/// The process's ONNX Runtime environment (ort holds it weakly, so it is kept here).
static ENV: OnceLock<ort::environment::Environment> = OnceLock::new();

/// Adds a directory to search after the environment variables (for plugins: their bundle).
pub fn add_search_dir(dir: impl Into<PathBuf>) {
    if let Ok(mut d) = EXTRA_DIRS.lock() {
        d.push(dir.into());
    }
}

/// The folder `cargo xtask fetch-runtime` writes to, as seen from this build.
pub fn fetched_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join("runtime")
        .join(format!("onnxruntime-{ORT_VERSION}"))
}

/// The folder `cargo xtask fetch-runtime --target <this platform>` writes to when this
/// platform is not the build machine's (a cross build: `onnxruntime-<version>-<os>-<arch>`).
pub fn fetched_cross_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join("runtime")
        .join(format!(
            "onnxruntime-{ORT_VERSION}-{}-{}",
            std::env::consts::OS,
            std::env::consts::ARCH
        ))
}

/// Candidate library paths in lookup order.
pub fn candidates() -> Vec<PathBuf> {
    let mut c = Vec::new();
    for var in ["VOXSIFT_ORT_LIB", "ORT_DYLIB_PATH"] {
        if let Some(p) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            c.push(PathBuf::from(p));
        }
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            c.push(dir.join(LIB_NAME));
        }
    }
    if let Ok(d) = EXTRA_DIRS.lock() {
        c.extend(d.iter().map(|d| d.join(LIB_NAME)));
    }
    c.push(fetched_dir().join(LIB_NAME));
    c.push(fetched_cross_dir().join(LIB_NAME));
    c
}

/// Finds the library without loading it. An explicit environment variable that points
/// nowhere is an error, not a fallthrough to the other places (which would hide the mistake).
pub fn find() -> Result<PathBuf, RuntimeError> {
    for var in ["VOXSIFT_ORT_LIB", "ORT_DYLIB_PATH"] {
        if let Some(p) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            let p = PathBuf::from(p);
            if p.is_file() {
                return Ok(p);
            }
            return Err(RuntimeError::NotFound {
                searched: format!("{var}={} (no such file)", p.display()),
            });
        }
    }
    let cands = candidates();
    cands
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| RuntimeError::NotFound {
            searched: cands
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Reads the version string of the library at `path` without initialising it for ort.
pub fn probe_version(path: &Path) -> Result<String, RuntimeError> {
    #[repr(C)]
    struct OrtApiBase {
        get_api: unsafe extern "C" fn(u32) -> *const std::ffi::c_void,
        get_version_string: unsafe extern "C" fn() -> *const c_char,
    }
    let load_err = |message: String| RuntimeError::Load {
        path: path.to_path_buf(),
        message,
    };
    // SAFETY: loading a library runs its initialisers; this is the library the user pointed us
    // at (or the one we fetched), which is what we are about to use anyway. `OrtGetApiBase`
    // has this signature in every ONNX Runtime release, and the struct's first two members are
    // stable C ABI.
    unsafe {
        let lib = libloading::Library::new(path).map_err(|e| load_err(e.to_string()))?;
        let get: libloading::Symbol<unsafe extern "C" fn() -> *const OrtApiBase> = lib
            .get(b"OrtGetApiBase")
            .map_err(|_| load_err("it does not export OrtGetApiBase".into()))?;
        let base = get();
        if base.is_null() {
            return Err(load_err("OrtGetApiBase returned null".into()));
        }
        let v = ((*base).get_version_string)();
        if v.is_null() {
            return Err(load_err("no version string".into()));
        }
        let s = CStr::from_ptr(v).to_string_lossy().into_owned();
        // Keep the library loaded: ort will load the same file next, and unloading ONNX
        // Runtime is not supported.
        std::mem::forget(lib);
        Ok(s)
    }
}

/// Loads ONNX Runtime (once per process) and builds the environment.
pub fn init() -> Result<&'static RuntimeInfo, RuntimeError> {
    if let Some(info) = LOADED.get() {
        return Ok(info);
    }
    static INIT: Mutex<()> = Mutex::new(());
    let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(info) = LOADED.get() {
        return Ok(info);
    }
    let path = find()?;
    let version = probe_version(&path)?;
    let minor = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    if !version.starts_with("1.") || minor < ORT_MIN_MINOR {
        return Err(RuntimeError::Version {
            path,
            found: version,
        });
    }
    let load_err = |message: String| RuntimeError::Load {
        path: path.clone(),
        message,
    };
    // ONNX Runtime starts a process-wide thread of its own here; a thread inherits its
    // parent's name on Linux, so build the environment on a thread named for it rather than
    // on whichever worker happens to load first.
    let build = || -> Result<ort::environment::Environment, RuntimeError> {
        let builder = ort::init_from(&path).map_err(|e| load_err(e.to_string()))?;
        builder
            .with_name("voxsift")
            .build()
            .map_err(|e| load_err(e.to_string()))
    };
    let env = std::thread::scope(|scope| {
        match std::thread::Builder::new()
            .name("voxsift-ort".into())
            .spawn_scoped(scope, build)
        {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|_| Err(load_err("panicked while loading".into()))),
            Err(_) => build(),
        }
    })?;
    let _ = ENV.set(env);
    Ok(LOADED.get_or_init(|| RuntimeInfo { path, version }))
}

/// The runtime if it is already loaded.
pub fn loaded() -> Option<&'static RuntimeInfo> {
    LOADED.get()
}

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Provider {
    /// ONNX Runtime's CPU provider (always there).
    #[default]
    Cpu,
    /// NVIDIA CUDA (needs the `onnxruntime-gpu` runtime: `cargo xtask fetch-runtime --gpu`).
    Cuda,
    /// Apple CoreML.
    CoreMl,
    /// DirectML on Windows.
    DirectMl,
}

impl Provider {
    /// Every provider, in menu order.
    pub const ALL: [Provider; 4] = [Self::Cpu, Self::Cuda, Self::CoreMl, Self::DirectMl];

    /// The name shown to users.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "CPU",
            Self::Cuda => "CUDA",
            Self::CoreMl => "CoreML",
            Self::DirectMl => "DirectML",
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Provider {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda),
            "coreml" => Ok(Self::CoreMl),
            "directml" | "dml" => Ok(Self::DirectMl),
            other => Err(format!(
                "unknown execution provider '{other}' (cpu, cuda, coreml, directml)"
            )),
        }
    }
}

/// How sessions are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionOptions {
    /// Intra-op threads.
    pub threads: usize,
    /// The provider asked for; CPU is used if it cannot start.
    pub provider: Provider,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            threads: 1,
            provider: Provider::Cpu,
        }
    }
}

/// A session and where it really runs.
pub struct BuiltSession {
    /// The session.
    pub session: ort::session::Session,
    /// The provider it runs on.
    pub provider: Provider,
    /// Why it does not run on the provider asked for, if it does not.
    pub fallback: Option<String>,
}

/// A session on the provider in `opts`, falling back to the CPU (with the reason) when that
/// provider cannot start: not in this runtime build, its libraries missing, no device.
pub fn session_with(
    graph: &str,
    bytes: &[u8],
    opts: &SessionOptions,
) -> Result<BuiltSession, ModelError> {
    if opts.provider == Provider::Cpu {
        return Ok(BuiltSession {
            session: session(graph, bytes, opts.threads)?,
            provider: Provider::Cpu,
            fallback: None,
        });
    }
    init()?;
    let env = ENV.get().ok_or_else(|| ModelError::Load {
        graph: graph.into(),
        message: "ONNX Runtime environment missing".into(),
    })?;
    use ort::ep::ExecutionProvider as _;
    let (available, ep) = match opts.provider {
        Provider::Cuda => (
            ort::ep::CUDA::is_available(),
            ort::ep::CUDA::default().build(),
        ),
        Provider::CoreMl => (
            ort::ep::CoreML::is_available(),
            ort::ep::CoreML::default().build(),
        ),
        Provider::DirectMl => (
            ort::ep::DirectML::is_available(),
            ort::ep::DirectML::default().build(),
        ),
        Provider::Cpu => unreachable!("handled above"),
    };
    let attempt = || -> Result<ort::session::Session, String> {
        match available {
            Ok(true) => {}
            Ok(false) => {
                return Err(format!(
                    "this ONNX Runtime build has no {} provider{}",
                    opts.provider,
                    if opts.provider == Provider::Cuda {
                        " (get the GPU runtime with `cargo xtask fetch-runtime --gpu`)"
                    } else {
                        ""
                    }
                ))
            }
            Err(e) => return Err(e.to_string()),
        }
        use ort::session::builder::GraphOptimizationLevel;
        ort::session::Session::builder(env)
            .map_err(|e| e.to_string())?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| e.to_string())?
            .with_intra_threads(opts.threads.max(1))
            .map_err(|e| e.to_string())?
            .with_execution_providers([ep.error_on_failure()])
            .map_err(|e| e.to_string())?
            .commit_from_memory(bytes)
            .map_err(|e| e.to_string())
    };
    match attempt() {
        Ok(session) => Ok(BuiltSession {
            session,
            provider: opts.provider,
            fallback: None,
        }),
        Err(why) => Ok(BuiltSession {
            session: session(graph, bytes, opts.threads)?,
            provider: Provider::Cpu,
            fallback: Some(format!(
                "{} could not start, running on the CPU: {why}",
                opts.provider
            )),
        }),
    }
}

/// A session from `bytes` with Voxsift's options: `threads` intra-op threads (1 by default),
/// no spinning, full graph optimisation.
pub fn session(
    graph: &str,
    bytes: &[u8],
    threads: usize,
) -> Result<ort::session::Session, ModelError> {
    init()?;
    let env = ENV.get().ok_or_else(|| ModelError::Load {
        graph: graph.into(),
        message: "ONNX Runtime environment missing".into(),
    })?;
    let load = |e: String| ModelError::Load {
        graph: graph.into(),
        message: e,
    };
    use ort::session::builder::GraphOptimizationLevel;
    ort::session::Session::builder(env)
        .map_err(|e| load(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| load(e.to_string()))?
        .with_intra_threads(threads.max(1))
        .map_err(|e| load(e.to_string()))?
        .with_inter_threads(1)
        .map_err(|e| load(e.to_string()))?
        .with_intra_op_spinning(false)
        .map_err(|e| load(e.to_string()))?
        .commit_from_memory(bytes)
        .map_err(|e| load(e.to_string()))
}
