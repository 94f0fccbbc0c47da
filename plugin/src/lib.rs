//! The CLAP and VST3 plugin (nice-plug) on the engine.
//!
//! - `activate` (main thread) builds the [`Engine`] for the host's rate, block size, channel
//!   count and process mode, reports its latency and starts the [`Worker`], which loads the
//!   models on its own thread. All allocation happens there.
//! - The Preset parameter chooses the models: Live (DeepFilterNet3 alone) or Studio
//!   (DeepFilterNet3 fused by max with a separator from `VOXSIFT_SEPARATOR`, by default
//!   `models/local/htdemucs`). When every model's spec is known beforehand (Live), the engine is
//!   built at once and the model loads in the background; a separator's lookahead is only
//!   known once it is loaded and warmed up, so for Studio `activate` waits for the worker to
//!   publish the specs and builds the engine for them, and the latency it reports covers the
//!   slowest model. A missing separator, or one that fails to load, falls back to Live and
//!   the status says why. Changing the preset (or the device) asks the host for a restart.
//! - `process` (audio thread) hands the parameters to the engine and runs it in place; in
//!   realtime it never waits, in offline rendering (`ProcessMode::Offline`) it waits for every
//!   mask, so a bounce equals `voxsift render` with the same settings.
//! - If the runtime or the model fails to load, the engine passes audio through, delayed by
//!   the reported latency, and [`PluginStatus`] says why.

#![deny(missing_docs)]

pub mod editor;
pub mod editor_state;
pub mod meters;
pub mod params;

use editor::VoxsiftEditor;
use meters::{MeterWriter, Meters};
use nice_plug::prelude::*;
use params::VoxsiftParams;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;
use voxsift_engine::status::{Shared, WorkerState};
use voxsift_engine::{Engine, EngineConfig, RunMode};
use voxsift_models::choice::{
    self as render_mod, ModelChoice, RenderError, Schedule, SyntheticSettings,
};
use voxsift_models::runtime::{self, Provider, SessionOptions};
use voxsift_models::worker::{engine_timing, Worker};
use voxsift_models::{dfn3, separator, ModelSpec};

/// Inference threads per plugin instance (the CLI's default, so bounces match it).
const THREADS: usize = 1;

/// How long `activate` waits for models whose latency is known only once they are loaded.
const LOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// What the editor and tests can read about the running instance. The audio thread never
/// touches the mutex; it is written by `activate`/`deactivate` on the main thread.
#[derive(Default)]
pub struct PluginStatus {
    /// Latency reported to the host, in samples.
    pub latency: AtomicU32,
    /// Sample rate of the current activation, in Hz (0 when inactive).
    pub sample_rate: AtomicU32,
    /// The running worker's shared status (state, message, counters), if active.
    pub worker: Mutex<Option<Arc<Shared>>>,
    /// Name of the model of the current activation.
    pub model: Mutex<String>,
    /// Execution provider in use ("CPU", …).
    pub provider: Mutex<String>,
}

impl PluginStatus {
    /// A line for the user: what the worker is doing, or why audio passes through.
    pub fn describe(&self) -> String {
        let shared = self.worker.lock().ok().and_then(|w| w.clone());
        match shared {
            None => "inactive".into(),
            Some(s) => match s.state() {
                WorkerState::Starting => "loading the model".into(),
                WorkerState::Running => match s.message() {
                    m if m.is_empty() => "running".into(),
                    m => format!("running ({m})"),
                },
                WorkerState::Failed => format!("passing audio through: {}", s.message()),
                WorkerState::Stopped => "stopped".into(),
            },
        }
    }
}

/// The plugin instance.
pub struct Voxsift {
    /// Parameters, shared with the host wrapper and the editor.
    params: Arc<VoxsiftParams>,
    /// Status for the editor.
    status: Arc<PluginStatus>,
    /// Live levels and mask columns for the editor.
    meters: Arc<Meters>,
    /// The audio thread's meter publisher, built in `activate`.
    meter_writer: Option<MeterWriter>,
    /// The engine, built in `activate`; `process` runs it.
    engine: Option<Engine>,
    /// The worker thread of the current activation.
    worker: Option<Worker>,
    /// The device (execution provider) the current activation asked for.
    device: params::Device,
    /// The preset the current activation asked for.
    preset: params::Preset,
    /// Set once a restart was requested for a device or preset change (audio thread).
    restart_requested: bool,
}

impl Default for Voxsift {
    fn default() -> Self {
        register_bundle_dir();
        Self {
            params: Arc::new(VoxsiftParams::default()),
            status: Arc::new(PluginStatus::default()),
            meters: Arc::new(Meters::default()),
            meter_writer: None,
            engine: None,
            worker: None,
            device: params::Device::Cpu,
            preset: params::Preset::Live,
            restart_requested: false,
        }
    }
}

/// Adds the folder holding this plugin's shared object to the runtime search path, once, so
/// the ONNX Runtime library placed beside the `.clap` or inside the `.vst3` is found.
fn register_bundle_dir() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Some(dir) = module_dir() {
            runtime::add_search_dir(dir);
        }
    });
}

/// The folder of the shared object this code was loaded from.
#[cfg(unix)]
fn module_dir() -> Option<PathBuf> {
    use std::ffi::CStr;
    use std::os::unix::ffi::OsStrExt;
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let addr = module_dir as *const libc::c_void;
    // SAFETY: dladdr only reads the address and fills `info`.
    if unsafe { libc::dladdr(addr, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dladdr returned a NUL-terminated path owned by the loader.
    let path = unsafe { CStr::from_ptr(info.dli_fname) };
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(path.to_bytes()));
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    path.parent().map(PathBuf::from)
}

/// The folder of the DLL this code was loaded from.
#[cfg(windows)]
fn module_dir() -> Option<PathBuf> {
    use std::os::windows::ffi::OsStringExt;
    use windows_sys::Win32::System::LibraryLoader::{
        GetModuleFileNameW, GetModuleHandleExW, GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS,
        GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
    };
    let mut module = std::ptr::null_mut();
    let addr = module_dir as *const u16;
    // SAFETY: with FROM_ADDRESS the "name" is an address inside this DLL; UNCHANGED_REFCOUNT
    // takes no reference, so there is nothing to release.
    let ok = unsafe {
        GetModuleHandleExW(
            GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
            addr,
            &mut module,
        )
    };
    if ok == 0 {
        return None;
    }
    // Allocates the path buffer once, at first activation (not on the audio thread).
    let mut buf = vec![0u16; 32_768];
    // SAFETY: `buf` holds `buf.len()` u16s; the call writes at most that many.
    let n = unsafe { GetModuleFileNameW(module, buf.as_mut_ptr(), buf.len() as u32) } as usize;
    if n == 0 || n >= buf.len() {
        return None;
    }
    let path = PathBuf::from(std::ffi::OsString::from_wide(&buf[..n]));
    path.parent().map(PathBuf::from)
}

/// The folder of the shared object this code was loaded from (not looked up on this platform).
#[cfg(not(any(unix, windows)))]
fn module_dir() -> Option<PathBuf> {
    None
}

/// The model to run: DeepFilterNet3 (embedded) unless `VOXSIFT_MODEL` says otherwise: a
/// directory of DFN3 stateful graphs, or `synthetic` (the deterministic test model with DFN3's
/// lookahead, so the latency is the same; used by the host tests).
fn model_choice() -> ModelChoice {
    match std::env::var_os("VOXSIFT_MODEL") {
        Some(v) if v == "synthetic" => ModelChoice::Synthetic(dfn3::SPEC.lookahead),
        Some(v) if !v.is_empty() && v != "dfn3" => ModelChoice::Dfn3Dir(PathBuf::from(v)),
        _ => ModelChoice::Dfn3,
    }
}

/// The separator for the Studio preset, or why there is none: `VOXSIFT_SEPARATOR` (read at
/// activation) when set — a separator model directory, or
/// `synthetic[:LOOKAHEAD[:RATE[:CUTOFF_HZ]]]` (the synthetic test model standing in for a
/// separator: it reports its spec only once loaded, as a separator does; used by the host
/// tests) — else
/// [`render_mod::DEFAULT_SEPARATOR`] (`models/local/htdemucs`, where `cargo xtask export-model
/// htdemucs` writes it) or `models/htdemucs` under the working directory, the source tree, or
/// the folder of this plugin's binary.
fn separator_choice() -> Result<ModelChoice, String> {
    if let Some(v) = std::env::var_os("VOXSIFT_SEPARATOR").filter(|v| !v.is_empty()) {
        let text = v.to_string_lossy();
        if text.starts_with("synthetic") {
            let deferred = |lookahead, sample_rate, cutoff_hz| {
                ModelChoice::SyntheticWith(SyntheticSettings {
                    lookahead,
                    sample_rate,
                    cutoff_hz,
                    deferred: true,
                })
            };
            return match ModelChoice::parse(&text).map_err(|e| e.to_string())? {
                ModelChoice::Synthetic(la) => Ok(deferred(la, 48_000, 2_000.0)),
                ModelChoice::SyntheticWith(s) => {
                    Ok(deferred(s.lookahead, s.sample_rate, s.cutoff_hz))
                }
                other => Err(format!("VOXSIFT_SEPARATOR: {other:?} is not a separator")),
            };
        }
        let dir = PathBuf::from(v);
        return render_mod::check_separator_dir(&dir)
            .map(|()| ModelChoice::Separator(dir))
            .map_err(|e| e.to_string());
    }
    let default = render_mod::default_separator_dir();
    let beside = module_dir()
        .into_iter()
        .flat_map(|d| render_mod::SEPARATOR_CANDIDATES.map(|s| d.join(s)));
    std::iter::once(default.clone())
        .chain(beside)
        .find(|d| render_mod::is_separator_dir(d))
        .map(ModelChoice::Separator)
        .ok_or_else(|| RenderError::MissingSeparator(default).to_string())
}

/// Inference margins (ms) that separators loaded in this process measured, by directory,
/// stream count and device. Later activations load the separator with the same margin, so
/// the latency of a configuration stays the same however long the warm-up run took then.
static MARGINS: Mutex<Vec<(PathBuf, usize, Provider, f64)>> = Mutex::new(Vec::new());

/// The margin pinned for the separator in `dir` with `streams` streams on `provider`.
fn pinned_margin(dir: &Path, streams: usize, provider: Provider) -> Option<f64> {
    let margins = MARGINS.lock().ok()?;
    margins
        .iter()
        .find(|(d, s, p, _)| d == dir && *s == streams && *p == provider)
        .map(|m| m.3)
}

/// Pins the margin the separator in `dir` measured: its reported lookahead `spec` less what
/// its schedule needs, in 10 ms hops.
fn pin_margin(dir: &Path, streams: usize, provider: Provider, spec: &ModelSpec) {
    let Ok(planned) =
        separator::describe(dir).and_then(|d| separator::planned_spec(&d, &Schedule::default(), 0))
    else {
        return;
    };
    // A refiner's lookahead also holds DeepFilterNet3's estimate delay.
    let delay = if separator::describe(dir).is_ok_and(|d| d.is_refiner()) {
        voxsift_models::refine::DFN3_DELAY
    } else {
        0
    };
    let ms = spec.lookahead.saturating_sub(planned.lookahead + delay) as f64 * 10.0;
    if let Ok(mut margins) = MARGINS.lock() {
        if !margins
            .iter()
            .any(|(d, s, p, _)| d == dir && *s == streams && *p == provider)
        {
            margins.push((dir.to_path_buf(), streams, provider, ms));
        }
    }
}

/// Starts a worker for `model` and builds its engine for `config`. When every model's spec
/// is known beforehand the engine is built at once and the models load in the background
/// (audio passes through, delayed, until they are ready; a failure keeps it so). Otherwise
/// this waits, off the audio thread, until the models are loaded and warmed up and builds
/// the engine for the specs they report; if they fail or time out, returns why.
fn launch(
    config: EngineConfig,
    model: &ModelChoice,
    opts: SessionOptions,
    schedule: Schedule,
    notice: Option<String>,
) -> Result<(Engine, Worker), String> {
    let mut plan = model.plan(config.mask_streams(), opts, schedule);
    plan.notice = notice;
    if let Some(specs) = model.known_specs() {
        let (lookahead, lag) = engine_timing(config.sample_rate, &specs);
        let mut engine = Engine::new(config, lookahead, lag);
        let (worker, link) = Worker::spawn_plan(&config, plan);
        engine.connect(link);
        return Ok((engine, worker));
    }
    model.check().map_err(|e| e.to_string())?;
    let (mut worker, link) = Worker::spawn_plan(&config, plan);
    match worker.wait_ready(LOAD_TIMEOUT) {
        WorkerState::Running => {
            let (lookahead, lag) = engine_timing(config.sample_rate, &worker.shared().specs());
            let mut engine = Engine::new(config, lookahead, lag);
            engine.connect(link);
            Ok((engine, worker))
        }
        state => {
            let why = match state {
                WorkerState::Starting => format!(
                    "{} did not load within {} s",
                    model.name(),
                    LOAD_TIMEOUT.as_secs()
                ),
                _ => worker.shared().message(),
            };
            worker.stop();
            Err(why)
        }
    }
}

impl Voxsift {
    /// Stops the worker of the previous activation, if any (main thread).
    fn shut_down(&mut self) {
        if let Some(mut w) = self.worker.take() {
            w.stop();
        }
        self.engine = None;
        self.meter_writer = None;
        if let Ok(mut w) = self.status.worker.lock() {
            *w = None;
        }
        self.status.sample_rate.store(0, Ordering::Relaxed);
    }

    /// Status shared with the editor.
    pub fn status(&self) -> Arc<PluginStatus> {
        self.status.clone()
    }

    /// Meters shared with the editor.
    pub fn meters(&self) -> Arc<Meters> {
        self.meters.clone()
    }

    /// The editor on this instance's parameters, status and meters (what [`Plugin::editor`]
    /// returns; also used by the standalone binary).
    pub fn create_editor(&self) -> VoxsiftEditor {
        VoxsiftEditor::new(
            self.params.clone(),
            self.status.clone(),
            self.meters.clone(),
        )
    }
}

impl Plugin for Voxsift {
    const NAME: &'static str = "Voxsift";
    const VENDOR: &'static str = "Voxsift";
    const URL: &'static str = "";
    const EMAIL: &'static str = "";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    const AUDIO_IO_LAYOUTS: &'static [AudioIOLayout] = &[
        AudioIOLayout {
            main_input_channels: NonZeroU32::new(2),
            main_output_channels: NonZeroU32::new(2),
            ..AudioIOLayout::const_default()
        },
        AudioIOLayout {
            main_input_channels: NonZeroU32::new(1),
            main_output_channels: NonZeroU32::new(1),
            ..AudioIOLayout::const_default()
        },
    ];

    const SAMPLE_ACCURATE_AUTOMATION: bool = true;

    type SysExMessage = ();
    type BackgroundTask = ();
    type Editor = VoxsiftEditor;

    fn params(&self) -> Arc<dyn Params> {
        self.params.clone()
    }

    fn editor(&mut self, _async_executor: AsyncExecutor<Self>) -> Option<Self::Editor> {
        Some(self.create_editor())
    }

    fn activate(
        &mut self,
        layout: &AudioIOLayout,
        buffer_config: &BufferConfig,
        context: &mut impl ActivateContext<Self>,
    ) -> bool {
        self.shut_down();
        let channels = layout
            .main_output_channels
            .map_or(2, |c| c.get() as usize)
            .max(1);
        let sample_rate = buffer_config.sample_rate.round().max(1.0) as u32;
        let run_mode = if buffer_config.process_mode == ProcessMode::Offline {
            RunMode::Offline
        } else {
            RunMode::Realtime
        };
        let config = EngineConfig {
            channel_mode: self.params.channel_mode(),
            ..EngineConfig::new(
                sample_rate,
                (buffer_config.max_buffer_size as usize).max(1),
                channels,
                run_mode,
            )
        };
        let device = self.params.device.value();
        self.device = device;
        let preset = self.params.preset.value();
        self.preset = preset;
        self.restart_requested = false;
        let opts = SessionOptions {
            threads: THREADS,
            provider: device.provider(),
        };
        let live = model_choice();
        let (model, notice) = match preset {
            params::Preset::Live => (live.clone(), None),
            params::Preset::Studio => match separator_choice() {
                Ok(separator) => (preset.preset().models(live.clone(), separator), None),
                Err(why) => (
                    live.clone(),
                    Some(format!("Studio is not available: {why}; running Live")),
                ),
            },
        };
        // A separator loaded before in this process keeps the margin it measured then. Studio
        // is the live model fused with the separator (member 1), or a DeepFilterNet3 refiner
        // alone (member 0; [`Preset::models`]).
        let (separator_dir, member) = match &model {
            ModelChoice::Fused { members, .. } => (
                members.iter().find_map(|(m, _)| match m {
                    ModelChoice::Separator(dir) => Some(dir.clone()),
                    _ => None,
                }),
                1,
            ),
            ModelChoice::Separator(dir) => (Some(dir.clone()), 0),
            _ => (None, 0),
        };
        let streams = config.mask_streams();
        let schedule = Schedule {
            margin_ms: separator_dir
                .as_deref()
                .and_then(|d| pinned_margin(d, streams, opts.provider)),
            ..Schedule::default()
        };
        let (mut engine, worker, model) = match launch(config, &model, opts, schedule, notice) {
            Ok((e, w)) => {
                if let (Some(dir), None) = (&separator_dir, schedule.margin_ms) {
                    if let Some(spec) = w.shared().specs().get(member) {
                        pin_margin(dir, streams, opts.provider, spec);
                    }
                }
                (e, w, model)
            }
            Err(why) => {
                let notice = format!("Studio could not start: {why}; running Live");
                match launch(config, &live, opts, Schedule::default(), Some(notice)) {
                    Ok((e, w)) => (e, w, live),
                    // Only models known beforehand are left, and those never wait.
                    Err(_) => return false,
                }
            }
        };
        engine.set_params_immediate(self.params.engine_params());
        if let Ok(mut w) = self.status.worker.lock() {
            *w = Some(worker.shared().clone());
        }
        if let Ok(mut m) = self.status.model.lock() {
            *m = model.name();
        }
        if let Ok(mut p) = self.status.provider.lock() {
            *p = device.provider().name().to_string();
        }
        let latency = engine.latency_samples() as u32;
        context.set_latency_samples(latency);
        self.status.latency.store(latency, Ordering::Relaxed);
        self.status
            .sample_rate
            .store(sample_rate, Ordering::Relaxed);
        self.meter_writer = Some(MeterWriter::new(engine.grid(), &self.meters));
        self.engine = Some(engine);
        self.worker = Some(worker);
        true
    }

    fn reset(&mut self) {
        if let Some(e) = self.engine.as_mut() {
            e.set_params_immediate(self.params.engine_params());
            e.reset();
        }
        if let Some(m) = self.meter_writer.as_mut() {
            m.reset();
        }
    }

    fn process(
        &mut self,
        buffer: &mut Buffer,
        _aux: &mut AuxiliaryBuffers,
        context: &mut impl ProcessContext<Self>,
    ) -> ProcessStatus {
        let Some(engine) = self.engine.as_mut() else {
            return ProcessStatus::Normal;
        };
        let changed =
            self.params.device.value() != self.device || self.params.preset.value() != self.preset;
        if changed && !self.restart_requested {
            // New sessions (and, for a preset, a new latency) are built off this thread, in the
            // next `activate`.
            self.restart_requested = true;
            context.request_restart();
        }
        engine.set_params(self.params.engine_params());
        engine.set_channel_mode(self.params.channel_mode());
        let n = buffer.samples();
        let io = buffer.as_slice();
        let in_peak = meters::peak(io);
        engine.process(io);
        if let Some(m) = self.meter_writer.as_mut() {
            m.update(n, in_peak, meters::peak(io), engine, &self.meters);
        }
        // Keep running while the delayed signal is still coming out.
        ProcessStatus::Tail(engine.latency_samples() as u32)
    }

    fn deactivate(&mut self) {
        self.shut_down();
    }
}

impl ClapPlugin for Voxsift {
    const CLAP_ID: &'static str = "org.voxsift.voxsift";
    const CLAP_DESCRIPTION: Option<&'static str> =
        Some("Isolates speech from music, noise and room with neural models");
    const CLAP_MANUAL_URL: Option<&'static str> = None;
    const CLAP_SUPPORT_URL: Option<&'static str> = None;
    const CLAP_FEATURES: &'static [ClapFeature] = &[
        ClapFeature::AudioEffect,
        ClapFeature::Restoration,
        ClapFeature::Custom("voxsift:denoiser"),
        ClapFeature::Stereo,
        ClapFeature::Mono,
    ];
}

impl Vst3Plugin for Voxsift {
    const VST3_CLASS_ID: [u8; 16] = *b"VoxsiftSpeechIso";
    const VST3_SUBCATEGORIES: &'static [Vst3SubCategory] =
        &[Vst3SubCategory::Fx, Vst3SubCategory::Restoration];
}

nice_export_clap!(Voxsift);
nice_export_vst3!(Voxsift);
