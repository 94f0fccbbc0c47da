//! The CLAP and VST3 plugin (nice-plug) on the engine.
//!
//! - `activate` (main thread) builds the [`Engine`] for the host's rate, block size, channel
//!   count and process mode, reports its latency and starts the [`Worker`], which loads the
//!   model on its own thread. All allocation happens there.
//! - `process` (audio thread) hands the parameters to the engine and runs it in place; in
//!   realtime it never waits, in offline rendering (`ProcessMode::Offline`) it waits for every
//!   mask, so a bounce equals `voxsift render` with the same settings.
//! - If the runtime or the model fails to load, the engine passes audio through, delayed by
//!   the reported latency, and [`PluginStatus`] says why.

pub mod editor;
pub mod meters;
pub mod params;

use crate::engine::{Engine, EngineConfig, RunMode};
use crate::model::dfn3;
use crate::render::ModelChoice;
use crate::runtime::{self, SessionOptions};
use crate::status::{Shared, WorkerState};
use crate::worker::{resampler_lag, Worker};
use editor::VoxsiftEditor;
use meters::{MeterWriter, Meters};
use nice_plug::prelude::*;
use params::VoxsiftParams;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Once};

/// Inference threads per plugin instance (the CLI's default, so bounces match it).
const THREADS: usize = 1;

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
                WorkerState::Running => "running".into(),
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
    /// Set once a restart was requested for a device change (audio thread).
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

/// The folder of the shared object this code was loaded from (not looked up on this platform).
#[cfg(not(unix))]
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
        let model = model_choice();
        let device = self.params.device.value();
        self.device = device;
        self.restart_requested = false;
        let spec = model.spec();
        let mut engine = Engine::new(config, spec.lookahead, resampler_lag(sample_rate, &spec));
        engine.set_params_immediate(self.params.engine_params());
        let (worker, link) = Worker::spawn(
            &config,
            spec,
            model.factory_with(
                config.mask_streams(),
                SessionOptions {
                    threads: THREADS,
                    provider: device.provider(),
                },
            ),
        );
        if let Ok(mut w) = self.status.worker.lock() {
            *w = Some(worker.shared().clone());
        }
        if let Ok(mut m) = self.status.model.lock() {
            *m = spec.name.to_string();
        }
        if let Ok(mut p) = self.status.provider.lock() {
            *p = device.provider().name().to_string();
        }
        engine.connect(link);
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
        if self.params.device.value() != self.device && !self.restart_requested {
            // A new session is built off this thread, in the next `activate`.
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
