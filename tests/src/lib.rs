//! Shared helpers for the host-level tests in `tests/tests/`: a small CLAP host built on
//! `clack-host` that loads the built Voxsift plugin, and signal and process utilities.
//!
//! The host does what a DAW does, through the plugin's real C ABI:
//! - loads the `.clap` file ([`plugin_path`]) and instantiates `org.voxsift.voxsift`;
//! - finds parameters by name through the `params` extension, sets them (flush while inactive,
//!   or sample-accurate `CLAP_EVENT_PARAM_VALUE` events while processing), and saves, edits
//!   and loads state through the `state` extension;
//! - selects the mono or stereo layout (`audio-ports-config`), sets the render mode
//!   (`render`), activates at a rate and maximum block size and reads the latency (`latency`);
//! - processes planar buffers in blocks that follow a pattern, on a separate audio thread,
//!   with `start_processing`/`stop_processing` around each run and optional `reset` calls.
//!
//! `VOXSIFT_MODEL` is read by the plugin in `activate` and the environment is process-global,
//! so every test takes [`lock_model`] first and holds the guard while it uses plugins.

#![warn(missing_docs)]

use anyhow::{anyhow, bail, ensure, Context, Result};
use clack_extensions::audio_ports_config::{AudioPortsConfigBuffer, PluginAudioPortsConfig};
use clack_extensions::latency::{HostLatency, HostLatencyImpl, PluginLatency};
use clack_extensions::log::{HostLog, HostLogImpl, LogSeverity};
use clack_extensions::params::{
    HostParams, HostParamsImplMainThread, HostParamsImplShared, ParamClearFlags, ParamInfoBuffer,
    ParamInfoFlags, ParamRescanFlags, PluginParams,
};
use clack_extensions::render::{PluginRender, RenderMode};
use clack_extensions::state::{HostState, HostStateImpl, PluginState};
use clack_host::events::event_types::ParamValueEvent;
use clack_host::prelude::*;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// The plugin's CLAP id.
pub const CLAP_ID: &str = "org.voxsift.voxsift";

/// Name of the plugin's worker threads (`/proc/self/task/*/comm`).
pub const WORKER_THREAD_NAME: &str = "voxsift-worker";

/// Name the harness gives its audio thread.
pub const AUDIO_THREAD_NAME: &str = "vx-test-audio";

/// The cargo workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// A path from the environment variable `var`, or `default` when it is unset or empty.
fn env_path(var: &str, default: PathBuf) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or(default)
}

/// The plugin under test: `$VOXSIFT_CLAP`, by default `<workspace>/target/bundled/Voxsift.clap`.
/// Fails with instructions when the file does not exist.
pub fn plugin_path() -> Result<PathBuf> {
    let p = env_path(
        "VOXSIFT_CLAP",
        workspace_root().join("target/bundled/Voxsift.clap"),
    );
    ensure!(
        p.is_file(),
        "the Voxsift CLAP plugin was not found at {} (set VOXSIFT_CLAP to the .clap file); \
         run `cargo xtask test`, which bundles the plugin (debug, with assert_process_allocs) \
         and runs these tests",
        p.display()
    );
    Ok(p)
}

/// The `voxsift` CLI: `$VOXSIFT_CLI`, by default `<workspace>/target/debug/voxsift`, or the
/// copy `cargo xtask test` bundles as `<workspace>/target/bundled/Voxsift` when that is the
/// only one. Fails with instructions when no file exists.
pub fn cli_path() -> Result<PathBuf> {
    let target = workspace_root().join("target");
    let mut default = target.join("debug/voxsift");
    let bundled = target.join("bundled/Voxsift");
    if !default.is_file() && bundled.is_file() {
        default = bundled;
    }
    let p = env_path("VOXSIFT_CLI", default);
    ensure!(
        p.is_file(),
        "the voxsift CLI was not found at {} (set VOXSIFT_CLI to it); run `cargo xtask test`, \
         which builds it and runs these tests",
        p.display()
    );
    Ok(p)
}

// ---------------------------------------------------------------------------------------------
// The model environment variable
// ---------------------------------------------------------------------------------------------

/// Which model the plugin loads in `activate` (through `VOXSIFT_MODEL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Model {
    /// DeepFilterNet3, embedded in the plugin (`VOXSIFT_MODEL` unset). Needs ONNX Runtime.
    Dfn3,
    /// The deterministic synthetic test model with DFN3's latency (`VOXSIFT_MODEL=synthetic`).
    Synthetic,
    /// A directory of DFN3 graphs (`VOXSIFT_MODEL=<dir>`); a missing one makes the model fail.
    Dir(PathBuf),
}

/// Serialises everything that depends on the process environment.
static ENV_LOCK: Mutex<()> = Mutex::new(());

/// Holds the environment lock; `VOXSIFT_MODEL` keeps the value set by [`lock_model`] until it
/// is dropped or [`ModelGuard::set`] changes it.
pub struct ModelGuard {
    /// The lock, released on drop.
    _lock: MutexGuard<'static, ()>,
}

impl ModelGuard {
    /// Points `VOXSIFT_MODEL` at another model (read by the next `activate`).
    pub fn set(&mut self, model: &Model) {
        match model {
            Model::Dfn3 => std::env::remove_var("VOXSIFT_MODEL"),
            Model::Synthetic => std::env::set_var("VOXSIFT_MODEL", "synthetic"),
            Model::Dir(d) => std::env::set_var("VOXSIFT_MODEL", d),
        }
    }

    /// Sets `VOXSIFT_SEPARATOR`, the separator of the Studio preset (read by the next
    /// `activate`): a model directory or `synthetic[:LOOKAHEAD[:RATE[:CUTOFF_HZ]]]`; `None`
    /// unsets it (the plugin then looks for `models/local/htdemucs`). Unset again on drop.
    pub fn set_separator(&mut self, separator: Option<&std::ffi::OsStr>) {
        match separator {
            Some(v) => std::env::set_var("VOXSIFT_SEPARATOR", v),
            None => std::env::remove_var("VOXSIFT_SEPARATOR"),
        }
    }
}

impl Drop for ModelGuard {
    fn drop(&mut self) {
        std::env::remove_var("VOXSIFT_MODEL");
        std::env::remove_var("VOXSIFT_SEPARATOR");
    }
}

/// Takes the process-wide environment lock and sets `VOXSIFT_MODEL` for `model`. Hold the
/// guard while any plugin of the test is activated (the plugin reads the variable in
/// `activate`); this also serialises the plugin tests of one test binary, so thread counts
/// and timings are not disturbed by other tests. A poisoned lock (a failed test) is taken over.
///
/// ONNX Runtime is left to the plugin's own lookup: `VOXSIFT_ORT_LIB` if set, else beside
/// the plugin file, else the folder `cargo xtask fetch-runtime` fills.
pub fn lock_model(model: &Model) -> ModelGuard {
    let lock = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut g = ModelGuard { _lock: lock };
    g.set(model);
    g
}

// ---------------------------------------------------------------------------------------------
// Host callbacks
// ---------------------------------------------------------------------------------------------

/// The host's type bundle for `clack-host`.
pub struct TestHost;

/// Host state any thread may touch: requests from the plugin, recorded as flags.
#[derive(Default)]
pub struct HostShared {
    /// `request_callback`: the host must call `on_main_thread` soon.
    callback_requested: AtomicBool,
    /// `request_restart`: the plugin wants to be deactivated and reactivated.
    restart_requested: AtomicBool,
    /// `params.request_flush`.
    flush_requested: AtomicBool,
}

impl SharedHandler<'_> for HostShared {
    fn request_restart(&self) {
        self.restart_requested.store(true, Ordering::SeqCst);
    }
    fn request_process(&self) {}
    fn request_callback(&self) {
        self.callback_requested.store(true, Ordering::SeqCst);
    }
}

impl HostLogImpl for HostShared {
    fn log(&self, severity: LogSeverity, message: &str) {
        eprintln!("[plugin {severity}] {message}");
    }
}

impl HostParamsImplShared for HostShared {
    fn request_flush(&self) {
        self.flush_requested.store(true, Ordering::SeqCst);
    }
}

/// Main-thread host state (nothing to keep: the harness queries what it needs).
pub struct HostMainThread;

impl MainThreadHandler<'_> for HostMainThread {}

impl HostLatencyImpl for HostMainThread {
    fn changed(&self) {}
}

impl HostParamsImplMainThread for HostMainThread {
    fn rescan(&self, _flags: ParamRescanFlags) {}
    fn clear(&self, _param_id: ClapId, _flags: ParamClearFlags) {}
}

impl HostStateImpl for HostMainThread {
    fn mark_dirty(&self) {}
}

impl HostHandlers for TestHost {
    type Shared<'a> = HostShared;
    type MainThread<'a> = HostMainThread;
    type AudioProcessor<'a> = ();

    fn declare_extensions(builder: &mut HostExtensions<Self>, _shared: &Self::Shared<'_>) {
        builder
            .register::<HostLog>()
            .register::<HostLatency>()
            .register::<HostParams>()
            .register::<HostState>();
    }
}

/// The plugin entry, loaded once per process (the library stays loaded, as in a host).
fn entry() -> Result<PluginEntry> {
    static ENTRY: OnceLock<std::result::Result<PluginEntry, String>> = OnceLock::new();
    let e = ENTRY.get_or_init(|| {
        let path = plugin_path().map_err(|e| format!("{e:#}"))?;
        // SAFETY: loading a CLAP plugin runs its initialisers; it is the code under test.
        unsafe { PluginEntry::load(&path) }
            .map_err(|e| format!("loading the CLAP entry from {}: {e}", path.display()))
    });
    e.clone().map_err(|e| anyhow!(e))
}

// ---------------------------------------------------------------------------------------------
// The plugin instance
// ---------------------------------------------------------------------------------------------

/// Realtime or offline rendering (the CLAP `render` extension), set before activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `CLAP_RENDER_REALTIME`: the plugin never waits for its worker.
    Realtime,
    /// `CLAP_RENDER_OFFLINE`: the plugin waits for every mask (deterministic output).
    Offline,
}

/// An activation: sample rate, largest block, channel count (1 or 2) and render mode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setup {
    /// Sample rate in Hz.
    pub sample_rate: f64,
    /// Largest block `process` is given (`max_frames_count`).
    pub max_block: u32,
    /// 1 (mono layout) or 2 (stereo layout).
    pub channels: usize,
    /// Render mode.
    pub mode: Mode,
}

impl Setup {
    /// A setup with these values.
    pub fn new(sample_rate: f64, max_block: u32, channels: usize, mode: Mode) -> Self {
        Self {
            sample_rate,
            max_block,
            channels,
            mode,
        }
    }
}

/// One parameter as the plugin describes it through the `params` extension.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamDesc {
    /// CLAP parameter id (nice-plug: a hash of the string id).
    pub id: u32,
    /// Display name ("Wet", "Beta", …).
    pub name: String,
    /// Smallest CLAP value (nice-plug: 0, values are normalized).
    pub min: f64,
    /// Largest CLAP value (nice-plug: 1, or the step count of stepped parameters).
    pub max: f64,
    /// Default CLAP value.
    pub default: f64,
    /// Marked as the bypass parameter (`CLAP_PARAM_IS_BYPASS`).
    pub is_bypass: bool,
    /// Marked as stepped (`CLAP_PARAM_IS_STEPPED`).
    pub is_stepped: bool,
}

/// A parameter change to send at an absolute sample position of a [`Run`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamChange {
    /// Sample index from the start of the run's input.
    pub sample: usize,
    /// CLAP parameter id.
    pub id: u32,
    /// CLAP value (for nice-plug plugins: the normalized value).
    pub value: f64,
}

/// How to feed a signal through the plugin in one `start_processing`..`stop_processing` run.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// Block sizes, used in turn (one entry: fixed blocks). A block is also cut short at a
    /// reset position and at the end of the signal.
    pub blocks: Vec<usize>,
    /// Parameter changes, sent as events in the block holding their sample, at its offset.
    pub events: Vec<ParamChange>,
    /// Sample positions before which `clap_plugin.reset` is called (on the audio thread).
    pub resets: Vec<usize>,
    /// Call `process` no faster than real time, like a live host (lets the worker keep up).
    pub pace: bool,
}

impl Run {
    /// A run with this block pattern.
    pub fn blocks(blocks: &[usize]) -> Self {
        Self {
            blocks: blocks.to_vec(),
            ..Self::default()
        }
    }

    /// Adds parameter change events.
    pub fn with_events(mut self, events: &[ParamChange]) -> Self {
        self.events.extend_from_slice(events);
        self
    }

    /// Adds reset positions.
    pub fn with_resets(mut self, resets: &[usize]) -> Self {
        self.resets.extend_from_slice(resets);
        self
    }

    /// Paces the run at real time.
    pub fn paced(mut self) -> Self {
        self.pace = true;
        self
    }
}

/// A Voxsift instance in the test host.
pub struct Plugin {
    /// The instance.
    instance: PluginInstance<TestHost>,
    /// Its parameters, in the plugin's order.
    params: Vec<ParamDesc>,
    /// The params extension.
    params_ext: PluginParams,
    /// The state extension.
    state_ext: PluginState,
    /// The latency extension.
    latency_ext: PluginLatency,
    /// The render extension.
    render_ext: PluginRender,
    /// The audio-ports-config extension.
    ports_ext: PluginAudioPortsConfig,
    /// The audio processor while active.
    processor: Option<StoppedPluginAudioProcessor<TestHost>>,
    /// The current activation.
    setup: Option<Setup>,
}

impl Plugin {
    /// Loads the plugin file (once per process) and creates an instance.
    pub fn new() -> Result<Self> {
        let entry = entry()?;
        let host_info = HostInfo::new(
            "Voxsift host tests",
            "Voxsift",
            "https://example.invalid",
            "0.1.0",
        )
        .map_err(|e| anyhow!("host info: {e}"))?;
        let id = CString::new(CLAP_ID)?;
        let factory = entry
            .get_plugin_factory()
            .context("the entry has no plugin factory")?;
        let found = factory
            .plugin_descriptors()
            .any(|d| d.id().is_some_and(|i| i == id.as_c_str()));
        ensure!(found, "the plugin file exposes no plugin with id {CLAP_ID}");
        let mut instance = PluginInstance::<TestHost>::new(
            |_| HostShared::default(),
            |_| HostMainThread,
            &entry,
            &id,
            &host_info,
        )
        .map_err(|e| anyhow!("instantiating {CLAP_ID}: {e}"))?;
        let handle = instance.plugin_handle();
        let params_ext: PluginParams = handle
            .get_extension()
            .context("the plugin has no params extension")?;
        let state_ext: PluginState = handle
            .get_extension()
            .context("the plugin has no state extension")?;
        let latency_ext: PluginLatency = handle
            .get_extension()
            .context("the plugin has no latency extension")?;
        let render_ext: PluginRender = handle
            .get_extension()
            .context("the plugin has no render extension")?;
        let ports_ext: PluginAudioPortsConfig = handle
            .get_extension()
            .context("the plugin has no audio-ports-config extension")?;
        let mut params = Vec::new();
        for i in 0..params_ext.count(&handle) {
            let mut buf = ParamInfoBuffer::new();
            let info = params_ext
                .get_info(&handle, i, &mut buf)
                .with_context(|| format!("params.get_info({i}) failed"))?;
            params.push(ParamDesc {
                id: info.id.get(),
                name: String::from_utf8_lossy(info.name).into_owned(),
                min: info.min_value,
                max: info.max_value,
                default: info.default_value,
                is_bypass: info.flags.contains(ParamInfoFlags::IS_BYPASS),
                is_stepped: info.flags.contains(ParamInfoFlags::IS_STEPPED),
            });
        }
        let mut p = Self {
            instance,
            params,
            params_ext,
            state_ext,
            latency_ext,
            render_ext,
            ports_ext,
            processor: None,
            setup: None,
        };
        p.service_main_thread();
        Ok(p)
    }

    /// Runs the main-thread callback if the plugin asked for one (`request_callback`).
    fn service_main_thread(&mut self) {
        let requested = self
            .instance
            .access_shared_handler(|h| h.callback_requested.swap(false, Ordering::SeqCst));
        if requested {
            self.instance.call_on_main_thread_callback();
        }
    }

    /// True (once) if the plugin called `request_restart` since the last call.
    pub fn take_restart_request(&self) -> bool {
        self.instance
            .access_shared_handler(|h| h.restart_requested.swap(false, Ordering::SeqCst))
    }

    /// The parameters, as listed by the `params` extension.
    pub fn params(&self) -> &[ParamDesc] {
        &self.params
    }

    /// The parameter called `name`.
    pub fn param(&self, name: &str) -> Result<&ParamDesc> {
        self.params
            .iter()
            .find(|p| p.name == name)
            .with_context(|| {
                let names: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
                format!("no parameter named {name:?} (the plugin has {names:?})")
            })
    }

    /// The CLAP id of the parameter called `name`.
    pub fn param_id(&self, name: &str) -> Result<u32> {
        Ok(self.param(name)?.id)
    }

    /// A change of the parameter called `name` to the CLAP `value` at `sample` of a run.
    pub fn change(&self, name: &str, sample: usize, value: f64) -> Result<ParamChange> {
        Ok(ParamChange {
            sample,
            id: self.param_id(name)?,
            value,
        })
    }

    /// The current CLAP value of the parameter called `name` (`params.get_value`).
    pub fn param_value(&mut self, name: &str) -> Result<f64> {
        let id = self.param_id(name)?;
        let handle = self.instance.plugin_handle();
        self.params_ext
            .get_value(&handle, ClapId::new(id))
            .with_context(|| format!("params.get_value({name}) failed"))
    }

    /// The plugin's text for the CLAP `value` of the parameter called `name`.
    pub fn param_text(&mut self, name: &str, value: f64) -> Result<String> {
        let id = self.param_id(name)?;
        let handle = self.instance.plugin_handle();
        let mut buf = [0u8; 256];
        let text = self
            .params_ext
            .value_to_text(&handle, ClapId::new(id), value, &mut buf)
            .map_err(|_| anyhow!("params.value_to_text({name}, {value}) failed"))?;
        Ok(String::from_utf8_lossy(text).into_owned())
    }

    /// The CLAP value the plugin parses from `text` for the parameter called `name`.
    pub fn param_from_text(&mut self, name: &str, text: &str) -> Result<f64> {
        let id = self.param_id(name)?;
        let c = CString::new(text)?;
        let handle = self.instance.plugin_handle();
        self.params_ext
            .text_to_value(&handle, ClapId::new(id), &c)
            .with_context(|| format!("params.text_to_value({name}, {text:?}) failed"))
    }

    /// Sets parameters (name, CLAP value) through `params.flush` while inactive.
    pub fn set_params(&mut self, values: &[(&str, f64)]) -> Result<()> {
        let mut events = EventBuffer::new();
        for (name, v) in values {
            let id = self.param_id(name)?;
            events.push(&ParamValueEvent::new(
                0,
                ClapId::new(id),
                Pckn::match_all(),
                *v,
            ));
        }
        let params_ext = self.params_ext;
        let mut handle = self
            .instance
            .inactive_plugin_handle()
            .context("set_params needs an inactive plugin; use events while active")?;
        params_ext.flush(&mut handle, &events.as_input(), &mut OutputEvents::void());
        self.service_main_thread();
        Ok(())
    }

    /// Saves the state (`state.save`): nice-plug writes an 8-byte little-endian length and
    /// the state as JSON.
    pub fn save_state(&mut self) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        let handle = self.instance.plugin_handle();
        self.state_ext
            .save(&handle, &mut bytes)
            .map_err(|e| anyhow!("state.save: {e}"))?;
        Ok(bytes)
    }

    /// Loads a state (`state.load`).
    pub fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        let handle = self.instance.plugin_handle();
        let mut reader = bytes;
        self.state_ext
            .load(&handle, &mut reader)
            .map_err(|e| anyhow!("state.load: {e}"))?;
        self.service_main_thread();
        Ok(())
    }

    /// The saved state as JSON (`{"version", "params": {id: {"f32"|"bool": plain}}, "fields"}`).
    pub fn state_json(&mut self) -> Result<serde_json::Value> {
        decode_state(&self.save_state()?)
    }

    /// Sets parameters to exact plain values by editing the saved state and loading it back:
    /// `(string id, value)`, e.g. `("beta", json!({"f32": 2.0}))`. This is how a host recalls
    /// a project; unlike events it involves no normalization round trip.
    pub fn set_plain(&mut self, values: &[(&str, serde_json::Value)]) -> Result<()> {
        let mut state = self.state_json()?;
        let params = state
            .get_mut("params")
            .and_then(|p| p.as_object_mut())
            .context("the state has no \"params\" object")?;
        for (id, v) in values {
            ensure!(
                params.contains_key(*id),
                "the state has no parameter {id:?} (it has {:?})",
                params.keys().collect::<Vec<_>>()
            );
            params.insert((*id).to_string(), v.clone());
        }
        self.load_state(&encode_state(&state)?)
    }

    /// Selects the audio-ports configuration whose main input and output have `channels`.
    fn select_channels(&mut self, channels: usize) -> Result<()> {
        let handle = self.instance.plugin_handle();
        let mut chosen = None;
        for i in 0..self.ports_ext.count(&handle) {
            let mut buf = AudioPortsConfigBuffer::new();
            if let Some(c) = self.ports_ext.get(&handle, i, &mut buf) {
                let ins = c.main_input.as_ref().map(|p| p.channel_count as usize);
                let outs = c.main_output.as_ref().map(|p| p.channel_count as usize);
                if ins == Some(channels) && outs == Some(channels) {
                    chosen = Some(c.id);
                    break;
                }
            }
        }
        let id = chosen.with_context(|| {
            format!("no audio port configuration with {channels} in/out channels")
        })?;
        self.ports_ext
            .select(&handle, id)
            .map_err(|_| anyhow!("audio_ports_config.select({channels} channels) failed"))
    }

    /// Selects the layout and render mode and activates; returns the reported latency.
    pub fn activate(&mut self, setup: Setup) -> Result<u32> {
        ensure!(self.processor.is_none(), "the plugin is already active");
        ensure!(
            setup.max_block >= 1,
            "the maximum block size must be at least 1"
        );
        self.select_channels(setup.channels)?;
        let mode = match setup.mode {
            Mode::Realtime => RenderMode::Realtime,
            Mode::Offline => RenderMode::Offline,
        };
        {
            let handle = self.instance.plugin_handle();
            self.render_ext
                .set(&handle, mode)
                .map_err(|_| anyhow!("render.set({:?}) failed", setup.mode))?;
        }
        let config = PluginAudioConfiguration {
            sample_rate: setup.sample_rate,
            min_frames_count: 1,
            max_frames_count: setup.max_block,
        };
        let processor = self
            .instance
            .activate(|_, _| (), config)
            .map_err(|e| anyhow!("activate({setup:?}): {e}"))?;
        self.processor = Some(processor);
        self.setup = Some(setup);
        self.service_main_thread();
        // A restart request from activation itself (e.g. for the latency) is not one to act on.
        self.take_restart_request();
        self.latency()
    }

    /// The latency the plugin reports now (`latency.get`), in samples.
    pub fn latency(&mut self) -> Result<u32> {
        let handle = self.instance.plugin_handle();
        Ok(self.latency_ext.get(&handle))
    }

    /// The current activation, if active.
    pub fn setup(&self) -> Option<Setup> {
        self.setup
    }

    /// Deactivates (no-op when inactive).
    pub fn deactivate(&mut self) {
        if let Some(p) = self.processor.take() {
            self.instance.deactivate(p);
        }
        self.setup = None;
        self.service_main_thread();
    }

    /// Processes planar `input` (one `Vec` per channel, all the same length) as one run on
    /// an audio thread: `start_processing` (nice-plug resets the plugin there), the blocks,
    /// `stop_processing`. Returns the output, as long as the input.
    pub fn process(&mut self, input: &[Vec<f32>], run: &Run) -> Result<Vec<Vec<f32>>> {
        let setup = self.setup.context("process needs an active plugin")?;
        ensure!(
            input.len() == setup.channels,
            "{} input channels for a {}-channel activation",
            input.len(),
            setup.channels
        );
        let len = input.first().map_or(0, Vec::len);
        ensure!(
            input.iter().all(|c| c.len() == len),
            "input channels differ in length"
        );
        ensure!(!run.blocks.is_empty(), "no block sizes given");
        ensure!(
            run.blocks
                .iter()
                .all(|&b| b >= 1 && b <= setup.max_block as usize),
            "block sizes must be in 1..={}",
            setup.max_block
        );
        let mut events = run.events.clone();
        events.sort_by_key(|e| e.sample);
        ensure!(
            events.iter().all(|e| e.sample < len.max(1)),
            "a parameter change lies beyond the input"
        );
        let mut resets = run.resets.clone();
        resets.sort_unstable();
        let processor = self.processor.take().context("no audio processor")?;
        let sample_rate = setup.sample_rate;
        let pace = run.pace;
        let blocks = run.blocks.clone();
        let max_block = setup.max_block as usize;
        let channels = setup.channels;

        let (processor, result) = std::thread::scope(|s| {
            let audio = std::thread::Builder::new()
                .name(AUDIO_THREAD_NAME.into())
                .spawn_scoped(s, move || {
                    audio_thread(
                        processor,
                        AudioJob {
                            input,
                            len,
                            channels,
                            max_block,
                            blocks: &blocks,
                            events: &events,
                            resets: &resets,
                            pace,
                            sample_rate,
                        },
                    )
                });
            match audio {
                Ok(handle) => handle
                    .join()
                    .map_err(|_| anyhow!("the audio thread panicked")),
                Err(e) => Err(anyhow!("spawning the audio thread: {e}")),
            }
        })?;
        self.processor = Some(processor);
        self.service_main_thread();
        result
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        self.deactivate();
    }
}

/// What the audio thread is asked to do.
struct AudioJob<'a> {
    /// Planar input.
    input: &'a [Vec<f32>],
    /// Frames of input.
    len: usize,
    /// Channels.
    channels: usize,
    /// Largest block.
    max_block: usize,
    /// Block pattern.
    blocks: &'a [usize],
    /// Sorted parameter changes.
    events: &'a [ParamChange],
    /// Sorted reset positions.
    resets: &'a [usize],
    /// Pace at real time.
    pace: bool,
    /// Sample rate (for pacing).
    sample_rate: f64,
}

/// The audio thread: start, process every block, stop. Always hands the processor back.
fn audio_thread(
    processor: StoppedPluginAudioProcessor<TestHost>,
    job: AudioJob<'_>,
) -> (StoppedPluginAudioProcessor<TestHost>, Result<Vec<Vec<f32>>>) {
    let mut started = match processor.start_processing() {
        Ok(p) => p,
        Err(e) => {
            let msg = format!("start_processing: {e}");
            return (e.into_stopped_processor(), Err(anyhow!(msg)));
        }
    };
    let result = process_blocks(&mut started, &job);
    (started.stop_processing(), result)
}

/// The block loop of [`audio_thread`].
fn process_blocks(
    proc: &mut StartedPluginAudioProcessor<TestHost>,
    job: &AudioJob<'_>,
) -> Result<Vec<Vec<f32>>> {
    let ch = job.channels;
    let mut out: Vec<Vec<f32>> = (0..ch).map(|_| Vec::with_capacity(job.len)).collect();
    let mut in_buf = vec![vec![0.0f32; job.max_block]; ch];
    let mut out_buf = vec![vec![0.0f32; job.max_block]; ch];
    let mut in_ports = AudioPorts::with_capacity(ch, 1);
    let mut out_ports = AudioPorts::with_capacity(ch, 1);
    let mut events = EventBuffer::with_capacity(job.events.len().max(1));
    let mut out_events = EventBuffer::new();
    let start = Instant::now();
    let (mut pos, mut b, mut next_event, mut next_reset) = (0usize, 0usize, 0usize, 0usize);
    while pos < job.len {
        while job.resets.get(next_reset).is_some_and(|&r| r <= pos) {
            if job.resets[next_reset] == pos {
                proc.reset();
            }
            next_reset += 1;
        }
        let mut n = job.blocks[b % job.blocks.len()].min(job.len - pos);
        b += 1;
        if let Some(&r) = job.resets.get(next_reset) {
            n = n.min(r - pos);
        }
        for c in 0..ch {
            in_buf[c][..n].copy_from_slice(&job.input[c][pos..pos + n]);
            // Garbage in the output buffer: the plugin must overwrite all of it.
            out_buf[c][..n].fill(f32::NAN);
        }
        events.clear();
        while let Some(e) = job.events.get(next_event).filter(|e| e.sample < pos + n) {
            events.push(&ParamValueEvent::new(
                (e.sample - pos) as u32,
                ClapId::new(e.id),
                Pckn::match_all(),
                e.value,
            ));
            next_event += 1;
        }
        out_events.clear();
        {
            let inputs = in_ports.with_input_buffers([AudioPortBuffer {
                latency: 0,
                channels: AudioPortBufferType::f32_input_only(
                    in_buf
                        .iter_mut()
                        .map(|c| InputChannel::variable(&mut c[..n])),
                ),
            }]);
            let mut outputs = out_ports.with_output_buffers([AudioPortBuffer {
                latency: 0,
                channels: AudioPortBufferType::f32_output_only(
                    out_buf.iter_mut().map(|c| &mut c[..n]),
                ),
            }]);
            proc.process(
                &inputs,
                &mut outputs,
                &events.as_input(),
                &mut out_events.as_output(),
                Some(pos as u64),
                None,
            )
            .map_err(|e| anyhow!("process (block at sample {pos}, {n} frames): {e}"))?;
        }
        for c in 0..ch {
            out[c].extend_from_slice(&out_buf[c][..n]);
        }
        pos += n;
        if job.pace {
            let due = Duration::from_secs_f64(pos as f64 / job.sample_rate);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    Ok(out)
}

/// Parses a nice-plug state blob (8-byte little-endian length, then JSON).
pub fn decode_state(bytes: &[u8]) -> Result<serde_json::Value> {
    ensure!(
        bytes.len() >= 8,
        "state of {} bytes is too short",
        bytes.len()
    );
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[..8]);
    let len = u64::from_le_bytes(len) as usize;
    let body = bytes
        .get(8..8 + len)
        .with_context(|| format!("state says {len} bytes of JSON but has {}", bytes.len() - 8))?;
    serde_json::from_slice(body).context("the state is not JSON")
}

/// Builds a nice-plug state blob from JSON.
pub fn encode_state(state: &serde_json::Value) -> Result<Vec<u8>> {
    let body = serde_json::to_vec(state)?;
    let mut bytes = (body.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&body);
    Ok(bytes)
}

// ---------------------------------------------------------------------------------------------
// Signals and comparisons
// ---------------------------------------------------------------------------------------------

/// Deterministic uniform noise in ±`a` (one generator for all tests: `voxsift-testkit`).
pub use voxsift_testkit::noise;

/// A test signal with speech-band and high-frequency content: a 220 Hz tone, a 3.1 kHz tone
/// and noise, amplitude-modulated at 3 Hz so the synthetic model's mask moves.
pub fn test_signal(n: usize, sample_rate: f64, seed: u64) -> Vec<f32> {
    let nz = noise(n, seed, 0.1);
    (0..n)
        .map(|i| {
            let t = i as f64 / sample_rate;
            let env = 0.6 + 0.4 * (2.0 * std::f64::consts::PI * 3.0 * t).sin();
            let s = 0.3 * (2.0 * std::f64::consts::PI * 220.0 * t).sin()
                + 0.15 * (2.0 * std::f64::consts::PI * 3100.0 * t).sin();
            (env * s) as f32 + nz[i]
        })
        .collect()
}

/// `x` delayed by `d` samples (zeros first), same length.
pub fn delayed(x: &[f32], d: usize) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    if d < x.len() {
        y[d..].copy_from_slice(&x[..x.len() - d]);
    }
    y
}

/// Index of the first sample where `a` and `b` differ (bitwise), if any.
pub fn first_difference(a: &[f32], b: &[f32]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x.to_bits() != y.to_bits())
        .or((a.len() != b.len()).then(|| a.len().min(b.len())))
}

/// Largest absolute difference between `a` and `b` over their common length.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Index of the sample with the largest magnitude.
pub fn peak_index(x: &[f32]) -> usize {
    x.iter()
        .enumerate()
        .fold((0, -1.0f32), |(bi, bv), (i, v)| {
            if v.abs() > bv {
                (i, v.abs())
            } else {
                (bi, bv)
            }
        })
        .0
}

/// Root mean square of `x`.
pub fn rms(x: &[f32]) -> f32 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt()
}

// ---------------------------------------------------------------------------------------------
// The process (Linux /proc; Windows Tool Help and PSAPI)
// ---------------------------------------------------------------------------------------------

/// This process's threads: thread id to name (Linux: `/proc/self/task/*/comm`; Windows: a
/// Tool Help snapshot and each thread's description, which `std::thread::Builder::name` sets).
///
/// A thread started with a name (`std::thread::Builder::name`) names itself once it runs, so
/// for a moment it shows its creator's name (Windows: no name); and on Linux a thread a named
/// thread starts inherits its name (ONNX Runtime starts one on first use, from the worker,
/// which stays for the process).
#[cfg(not(windows))]
pub fn threads() -> Result<BTreeMap<u32, String>> {
    let mut map = BTreeMap::new();
    for e in std::fs::read_dir("/proc/self/task").context("reading /proc/self/task")? {
        let Ok(e) = e else { continue };
        let Some(tid) = e.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        // A thread may end between listing and reading: skip it.
        if let Ok(c) = std::fs::read_to_string(e.path().join("comm")) {
            map.insert(tid, c.trim_end().to_string());
        }
    }
    Ok(map)
}

/// This process's threads: thread id to name (see the Linux version above).
#[cfg(windows)]
pub fn threads() -> Result<BTreeMap<u32, String>> {
    use windows_sys::Win32::Foundation::{CloseHandle, LocalFree, INVALID_HANDLE_VALUE};
    use windows_sys::Win32::System::Diagnostics::ToolHelp::{
        CreateToolhelp32Snapshot, Thread32First, Thread32Next, TH32CS_SNAPTHREAD, THREADENTRY32,
    };
    use windows_sys::Win32::System::Threading::{
        GetCurrentProcessId, GetThreadDescription, OpenThread, THREAD_QUERY_LIMITED_INFORMATION,
    };
    let mut map = BTreeMap::new();
    // SAFETY: plain Win32 calls on handles this function opens and closes; the entry's size
    // field is set as Thread32First requires; a description is freed with LocalFree.
    unsafe {
        let pid = GetCurrentProcessId();
        let snap = CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0);
        ensure!(
            snap != INVALID_HANDLE_VALUE,
            "CreateToolhelp32Snapshot failed"
        );
        let mut e: THREADENTRY32 = std::mem::zeroed();
        e.dwSize = std::mem::size_of::<THREADENTRY32>() as u32;
        let mut more = Thread32First(snap, &mut e) != 0;
        while more {
            if e.th32OwnerProcessID == pid {
                let mut name = String::new();
                let h = OpenThread(THREAD_QUERY_LIMITED_INFORMATION, 0, e.th32ThreadID);
                // A thread may end between listing and opening: skip it.
                if !h.is_null() {
                    let mut desc: windows_sys::core::PWSTR = std::ptr::null_mut();
                    if GetThreadDescription(h, &mut desc) >= 0 && !desc.is_null() {
                        let len = (0..).take_while(|&i| *desc.add(i) != 0).count();
                        name = String::from_utf16_lossy(std::slice::from_raw_parts(desc, len));
                        LocalFree(desc.cast());
                    }
                    CloseHandle(h);
                    map.insert(e.th32ThreadID, name);
                }
            }
            more = Thread32Next(snap, &mut e) != 0;
        }
        CloseHandle(snap);
    }
    Ok(map)
}

/// Number of this process's threads named `name`.
pub fn threads_named(name: &str) -> Result<usize> {
    Ok(threads()?.values().filter(|n| *n == name).count())
}

/// Threads in `now` that are not in `before`.
pub fn new_threads(
    before: &BTreeMap<u32, String>,
    now: &BTreeMap<u32, String>,
) -> Vec<(u32, String)> {
    now.iter()
        .filter(|(t, _)| !before.contains_key(t))
        .map(|(t, n)| (*t, n.clone()))
        .collect()
}

/// Polls `f` every 200 µs until it returns true or `timeout` passes; returns whether it did
/// and how long that took. (A joined thread can stay listed in `/proc/self/task` for a moment:
/// `pthread_join` returns when the thread has released its stack, a little before the kernel
/// removes the task.)
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> (bool, Duration) {
    let start = Instant::now();
    loop {
        if f() {
            return (true, start.elapsed());
        }
        if start.elapsed() >= timeout {
            return (false, start.elapsed());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Returns freed heap memory to the system (glibc `malloc_trim(0)`; a no-op elsewhere), so
/// that [`vm_rss_kib`] measures what is still allocated rather than what the allocator keeps
/// cached. The plugin's Rust code and ONNX Runtime allocate through the same `malloc`.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim only releases free memory held by the allocator.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Resident set size of this process in KiB (Linux: `VmRSS` in `/proc/self/status`; Windows:
/// the working set, from `GetProcessMemoryInfo`).
#[cfg(not(windows))]
pub fn vm_rss_kib() -> Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    line.split_whitespace()
        .nth(1)
        .context("malformed VmRSS line")?
        .parse()
        .context("malformed VmRSS value")
}

/// Resident set size of this process in KiB (see the Linux version above).
#[cfg(windows)]
pub fn vm_rss_kib() -> Result<u64> {
    use windows_sys::Win32::System::ProcessStatus::{
        GetProcessMemoryInfo, PROCESS_MEMORY_COUNTERS,
    };
    use windows_sys::Win32::System::Threading::GetCurrentProcess;
    // SAFETY: the counters struct is plain data, sized as the call requires.
    unsafe {
        let mut c: PROCESS_MEMORY_COUNTERS = std::mem::zeroed();
        c.cb = std::mem::size_of::<PROCESS_MEMORY_COUNTERS>() as u32;
        ensure!(
            GetProcessMemoryInfo(GetCurrentProcess(), &mut c, c.cb) != 0,
            "GetProcessMemoryInfo failed"
        );
        Ok(c.WorkingSetSize as u64 / 1024)
    }
}

/// Fails unless every sample of every channel is finite.
pub fn ensure_finite(out: &[Vec<f32>]) -> Result<()> {
    for (c, ch) in out.iter().enumerate() {
        if let Some(i) = ch.iter().position(|v| !v.is_finite()) {
            bail!("channel {c} sample {i} is {}", ch[i]);
        }
    }
    Ok(())
}
