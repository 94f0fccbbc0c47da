//! The built Voxsift VST3 plugin, driven through its real VST3 entry points.
//!
//! Loads the plugin's shared object with `libloading`, calls `ModuleEntry`, `GetPluginFactory`,
//! checks what the factory says about the plugin, creates an `IComponent`, sets it up like a
//! host does (stereo, 48 kHz, 512-sample blocks, 32-bit) and processes audio through
//! `IAudioProcessor::process`, then tears everything down again and calls `ModuleExit`.
//!
//! Which plugin: `VOXSIFT_VST3`, either a `Voxsift.vst3` bundle directory or the shared object
//! itself (e.g. `target/debug/libvoxsift.so` after `cargo build -p voxsift`); by default the
//! bundle `cargo xtask test` builds, `target/bundled/Voxsift.vst3`.
//!
//! Models: the main test runs the deterministic synthetic model (`VOXSIFT_MODEL=synthetic`,
//! set once by this test binary before any plugin code runs), so an impulse must come out at
//! exactly the reported latency. DeepFilterNet3 runs in child processes of this test binary
//! (started with `VOXSIFT_MODEL=dfn3` in their environment, so no process ever changes its
//! environment while plugin code runs) and must remove most of a white noise.
//!
//! Linux and Windows: the module entry points (`ModuleEntry(handle)`/`ModuleExit` on Linux,
//! `InitDll`/`ExitDll` on Windows) and the bundle folder (`Contents/<arch>-linux/Voxsift.so`,
//! `Contents/x86_64-win/Voxsift.vst3`) are each platform's. On Windows these tests run under
//! Wine from Linux (`tools/windows/test.sh`).
#![cfg(any(target_os = "linux", windows))]
// The vst3 crate's C enum constants are u32 on Linux and i32 on Windows (the C ABI's enum
// type differs), so the `as i32` casts that Linux needs are no-ops on Windows.
#![cfg_attr(windows, allow(clippy::unnecessary_cast))]

use std::ffi::{c_char, c_void};
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Once;
use std::time::Duration;

#[cfg(target_os = "linux")]
use libloading::os::unix::Library;
#[cfg(windows)]
use libloading::os::windows::Library;
use vst3::Steinberg::Vst::{
    AudioBusBuffers, AudioBusBuffers__type0, BusDirections_, BusInfo, BusTypes_, IAudioProcessor,
    IAudioProcessorTrait, IComponent, IComponentHandler, IComponentHandlerTrait, IComponentTrait,
    IEditController, IEditControllerTrait, IHostApplication, IHostApplicationTrait, MediaTypes_,
    ParamID, ParamValue, ProcessData, ProcessModes_, ProcessSetup, RestartFlags_, SpeakerArr,
    SpeakerArrangement, String128, SymbolicSampleSizes_,
};
use vst3::Steinberg::{
    kInvalidArgument, kNotImplemented, kResultFalse, kResultOk, FUnknown, IPluginBaseTrait,
    IPluginFactory, IPluginFactory2, IPluginFactory2Trait, IPluginFactory3, IPluginFactory3Trait,
    IPluginFactoryTrait, PClassInfo, PClassInfo2, PClassInfoW, PFactoryInfo, TUID,
};
use vst3::{Class, ComPtr, ComWrapper, Interface};

/// Sample rate the tests run at.
const SAMPLE_RATE: f64 = 48_000.0;
/// Largest block given to `process` (and announced in `setupProcessing`).
const MAX_BLOCK: usize = 512;
/// Block sizes the realtime test cycles through (a host may give any size up to the maximum).
const BLOCKS: [usize; 5] = [512, 256, 100, 512, 37];
/// The VST3 category of audio effects and instruments (`kVstAudioEffectClass`).
const AUDIO_MODULE_CLASS: &str = "Audio Module Class";
/// Name of the ignored test that runs a scenario in a child process.
const CHILD_TEST: &str = "vst3_child_scenario";
/// Names the scenario in the child's environment; the child test does nothing without it.
const CHILD_SCENARIO: &str = "VOXSIFT_VST3_TEST_SCENARIO";

/// `bool ModuleEntry(void*)` (Linux).
#[cfg(target_os = "linux")]
type ModuleEntryFn = unsafe extern "C" fn(*mut c_void) -> bool;
/// `bool ModuleExit()` (Linux).
#[cfg(target_os = "linux")]
type ModuleExitFn = unsafe extern "C" fn() -> bool;
/// `bool InitDll()` (Windows).
#[cfg(windows)]
type ModuleEntryFn = unsafe extern "system" fn() -> bool;
/// `bool ExitDll()` (Windows).
#[cfg(windows)]
type ModuleExitFn = unsafe extern "system" fn() -> bool;
/// The module entry and exit symbols of this platform.
#[cfg(target_os = "linux")]
const ENTRY_EXIT: (&[u8], &[u8]) = (b"ModuleEntry\0", b"ModuleExit\0");
/// The module entry and exit symbols of this platform.
#[cfg(windows)]
const ENTRY_EXIT: (&[u8], &[u8]) = (b"InitDll\0", b"ExitDll\0");
type GetPluginFactoryFn = unsafe extern "system" fn() -> *mut c_void;

/// Sets this process's environment for the in-process tests, once, before any plugin code
/// runs: the plugin reads `VOXSIFT_MODEL` when it is activated. The other tests of this binary
/// only start child processes (with their own environment, built under std's environment
/// lock), so nothing else reads the environment outside that lock meanwhile.
fn init_env() {
    static ENV: Once = Once::new();
    ENV.call_once(|| std::env::set_var("VOXSIFT_MODEL", "synthetic"));
}

/// The plugin's shared object: `VOXSIFT_VST3` (bundle directory or `.so`), or the bundle
/// `cargo xtask test` builds.
fn plugin_library() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let given = std::env::var_os("VOXSIFT_VST3").filter(|v| !v.is_empty());
    let path = given
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target/bundled/Voxsift.vst3"));
    let so = if path.is_dir() {
        if cfg!(windows) {
            path.join("Contents/x86_64-win/Voxsift.vst3")
        } else {
            path.join(format!(
                "Contents/{}-linux/Voxsift.so",
                std::env::consts::ARCH
            ))
        }
    } else {
        path.clone()
    };
    assert!(
        so.is_file(),
        "the VST3 plugin was not found: {} is not a file. Run `cargo xtask test`, which builds \
         target/bundled/Voxsift.vst3 and runs the tests, or build the plugin with \
         `cargo build -p voxsift` and set VOXSIFT_VST3 to target/debug/libvoxsift.so (or to a \
         Voxsift.vst3 bundle directory)",
        so.display()
    );
    so
}

/// Fails the test unless a COM call returned `kResultOk`.
#[track_caller]
fn check(call: &str, result: i32) {
    assert_eq!(
        result, kResultOk,
        "{call} returned {result}, expected kResultOk (0)"
    );
}

/// A NUL-terminated 8-bit string from a fixed-size VST3 buffer.
fn string8(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A NUL-terminated UTF-16 string from a fixed-size VST3 buffer.
fn string16(buf: &[u16]) -> String {
    let units: Vec<u16> = buf.iter().take_while(|&&c| c != 0).copied().collect();
    String::from_utf16_lossy(&units)
}

/// Releases the last reference to a COM object and returns the count the object reports
/// afterwards (0 when it was destroyed).
fn release_last<I: Interface>(ptr: ComPtr<I>) -> u32 {
    let raw = ptr.into_raw() as *mut FUnknown;
    // SAFETY: `raw` is a live COM object we own one reference to (from `into_raw`); every VST3
    // interface starts with the FUnknown vtable, and we give that reference back exactly once.
    unsafe { ((*(*raw).vtbl).release)(raw) }
}

/// A minimal host context for `IPluginBase::initialize`: a name and no objects to create.
struct TestHost;

impl Class for TestHost {
    type Interfaces = (IHostApplication,);
}

impl IHostApplicationTrait for TestHost {
    unsafe fn getName(&self, name: *mut String128) -> i32 {
        if name.is_null() {
            return kInvalidArgument;
        }
        let units: Vec<u16> = "voxsift-host-tests".encode_utf16().collect();
        // SAFETY: the caller passes a valid, writable String128 (checked non-null above).
        let out = unsafe { &mut *name };
        out.fill(0);
        out[..units.len()].copy_from_slice(&units);
        kResultOk
    }

    unsafe fn createInstance(
        &self,
        _cid: *mut TUID,
        _iid: *mut TUID,
        obj: *mut *mut c_void,
    ) -> i32 {
        if !obj.is_null() {
            // SAFETY: the caller passes a valid out-pointer (checked non-null).
            unsafe { *obj = std::ptr::null_mut() };
        }
        kNotImplemented
    }
}

/// The host's `IComponentHandler`: records the restart flags the plugin requests.
#[derive(Default)]
struct TestHandler {
    /// Bitwise OR of every `restartComponent` flag set received.
    restarts: AtomicI32,
}

impl Class for TestHandler {
    type Interfaces = (IComponentHandler,);
}

impl IComponentHandlerTrait for TestHandler {
    unsafe fn beginEdit(&self, _id: ParamID) -> i32 {
        kResultOk
    }

    unsafe fn performEdit(&self, _id: ParamID, _value: ParamValue) -> i32 {
        kResultOk
    }

    unsafe fn endEdit(&self, _id: ParamID) -> i32 {
        kResultOk
    }

    unsafe fn restartComponent(&self, flags: i32) -> i32 {
        self.restarts.fetch_or(flags, Ordering::SeqCst);
        kResultOk
    }
}

/// The loaded module: the library and its factory, after `ModuleEntry`.
///
/// The library is only unloaded by [`Module::unload`]; if a test fails before, it stays loaded
/// (never `dlclose` code that may still have objects or threads alive).
struct Module {
    lib: ManuallyDrop<Library>,
    factory: ComPtr<IPluginFactory>,
}

impl Module {
    /// `dlopen` (`LoadLibrary`), the module entry point and `GetPluginFactory()`.
    fn load(path: &Path) -> Module {
        // SAFETY: loading the plugin runs its initialisers; that is what a host does and what
        // this test is about. The handle round-trip keeps the library owned by `lib`.
        let lib = unsafe { Library::new(path) }
            .unwrap_or_else(|e| panic!("loading {} failed: {e}", path.display()));
        let handle = lib.into_raw();
        // SAFETY: `handle` came from `into_raw` just above and is used once.
        let lib = unsafe { Library::from_raw(handle) };

        // SAFETY: these are the VST3 entry points with the SDK's signatures (linuxmain.cpp:
        // `bool ModuleEntry(void*)`, `bool ModuleExit()`; dllmain.cpp: `bool InitDll()`,
        // `bool ExitDll()`; both: `IPluginFactory* GetPluginFactory()`).
        unsafe {
            let entry = lib
                .get::<ModuleEntryFn>(ENTRY_EXIT.0)
                .expect("the plugin does not export its module entry point");
            lib.get::<ModuleExitFn>(ENTRY_EXIT.1)
                .expect("the plugin does not export its module exit point");
            let get_factory = lib
                .get::<GetPluginFactoryFn>(b"GetPluginFactory\0")
                .expect("the plugin does not export GetPluginFactory");

            #[cfg(target_os = "linux")]
            let entered = entry(handle);
            #[cfg(windows)]
            let entered = {
                // `InitDll` takes no module handle.
                let _ = handle;
                entry()
            };
            assert!(entered, "the module entry point returned false");
            let raw = get_factory();
            // The factory comes with one reference, which the ComPtr now owns.
            let factory = ComPtr::from_raw(raw as *mut IPluginFactory)
                .expect("GetPluginFactory returned a null pointer");
            Module {
                lib: ManuallyDrop::new(lib),
                factory,
            }
        }
    }

    /// Releases the factory (it must be destroyed), calls `ModuleExit` and unloads.
    fn unload(self) {
        let Module { lib, factory } = self;
        let lib = ManuallyDrop::into_inner(lib);
        assert_eq!(
            release_last(factory),
            0,
            "the factory still has references after the host released its last one"
        );
        // SAFETY: same signature as in `load`; every object of the module has been released.
        let exit = unsafe { lib.get::<ModuleExitFn>(ENTRY_EXIT.1) }.expect("module exit");
        // SAFETY: called once, after ModuleEntry, with no plugin objects alive.
        assert!(unsafe { exit() }, "ModuleExit returned false");
        lib.close().expect("unloading the plugin failed");
    }

    /// Checks the factory and class info and returns the class ID of the Voxsift effect.
    fn voxsift_class(&self) -> TUID {
        let factory = &self.factory;
        // SAFETY (this block): plain VST3 factory queries, each into a zeroed struct of the
        // type the interface declares; the factory pointer is valid while `self` lives.
        unsafe {
            let mut info: PFactoryInfo = std::mem::zeroed();
            check(
                "IPluginFactory::getFactoryInfo",
                factory.getFactoryInfo(&mut info),
            );
            assert_eq!(string8(&info.vendor), "Voxsift", "factory vendor");

            let count = factory.countClasses();
            assert_eq!(count, 1, "IPluginFactory::countClasses");

            let f2 = factory
                .cast::<IPluginFactory2>()
                .expect("queryInterface(IPluginFactory2) failed");
            let f3 = factory
                .cast::<IPluginFactory3>()
                .expect("queryInterface(IPluginFactory3) failed");
            let mut found = None;
            for i in 0..count {
                let mut c: PClassInfo = std::mem::zeroed();
                check(
                    "IPluginFactory::getClassInfo",
                    factory.getClassInfo(i, &mut c),
                );
                if string8(&c.category) != AUDIO_MODULE_CLASS || string8(&c.name) != "Voxsift" {
                    continue;
                }

                let mut c2: PClassInfo2 = std::mem::zeroed();
                check(
                    "IPluginFactory2::getClassInfo2",
                    f2.getClassInfo2(i, &mut c2),
                );
                assert_eq!(c2.cid, c.cid, "getClassInfo2 class ID");
                assert_eq!(
                    string8(&c2.category),
                    AUDIO_MODULE_CLASS,
                    "getClassInfo2 category"
                );
                assert_eq!(string8(&c2.name), "Voxsift", "getClassInfo2 name");
                assert_eq!(string8(&c2.vendor), "Voxsift", "getClassInfo2 vendor");
                let subcategories = string8(&c2.subCategories);
                let parts: Vec<&str> = subcategories.split('|').collect();
                for want in ["Fx", "Restoration"] {
                    assert!(
                        parts.contains(&want),
                        "subcategories {subcategories:?} lack {want:?}"
                    );
                }
                assert!(
                    !string8(&c2.version).is_empty(),
                    "getClassInfo2 gives no version"
                );

                let mut cw: PClassInfoW = std::mem::zeroed();
                check(
                    "IPluginFactory3::getClassInfoUnicode",
                    f3.getClassInfoUnicode(i, &mut cw),
                );
                assert_eq!(string16(&cw.name), "Voxsift", "getClassInfoUnicode name");
                assert_eq!(
                    string16(&cw.vendor),
                    "Voxsift",
                    "getClassInfoUnicode vendor"
                );

                assert!(found.is_none(), "two Voxsift audio module classes");
                found = Some(c.cid);
            }
            found.expect("no \"Audio Module Class\" named \"Voxsift\" in the factory")
        }
    }

    /// `createInstance(cid, IComponent)`.
    fn create_component(&self, cid: &TUID) -> ComPtr<IComponent> {
        let mut obj: *mut c_void = std::ptr::null_mut();
        // SAFETY: `cid` and the IID are 16-byte IDs that outlive the call; `obj` is a valid
        // out-pointer. On success the object comes with one reference, which the ComPtr owns.
        unsafe {
            check(
                "IPluginFactory::createInstance(IComponent)",
                self.factory.createInstance(
                    cid.as_ptr(),
                    IComponent::IID.as_ptr() as *const c_char,
                    &mut obj,
                ),
            );
            ComPtr::from_raw(obj as *mut IComponent)
                .expect("createInstance returned kResultOk and a null object")
        }
    }
}

/// How the plugin is set up.
#[derive(Clone, Copy)]
struct Setup {
    /// Host sample rate in Hz.
    sample_rate: f64,
    /// `ProcessModes_::kRealtime` or `kOffline`, given to `setupProcessing`.
    mode: i32,
    /// `ProcessData::processMode` of every `process` call (a well-behaved host: `mode`; Ardour
    /// before 8.7 exporting: `kOffline` while `mode` stays `kRealtime`).
    block_mode: i32,
    /// Whether to pace the calls like a realtime host (sleeping for each block's duration).
    paced: bool,
}

/// An initialised, active, processing plugin instance.
struct Instance {
    component: ComPtr<IComponent>,
    processor: ComPtr<IAudioProcessor>,
    controller: ComPtr<IEditController>,
    host: ComWrapper<TestHost>,
    handler: ComWrapper<TestHandler>,
    setup: Setup,
    latency: usize,
}

impl Instance {
    /// `initialize`, the edit controller's component handler, bus checks,
    /// `setBusArrangements` (stereo), then [`Instance::activate`].
    fn start(component: ComPtr<IComponent>, setup: Setup) -> Instance {
        let host = ComWrapper::new(TestHost);
        let context = host
            .as_com_ref::<FUnknown>()
            .expect("host context as FUnknown")
            .as_ptr();
        let handler = ComWrapper::new(TestHandler::default());
        let handler_ptr = handler
            .as_com_ref::<IComponentHandler>()
            .expect("component handler")
            .as_ptr();
        let audio = MediaTypes_::kAudio as i32;
        let input = BusDirections_::kInput as i32;
        let output = BusDirections_::kOutput as i32;
        // SAFETY (this block): VST3 calls in the order a host makes them, on one thread, with
        // pointers to live, correctly typed values; `context` stays alive in `host`.
        unsafe {
            check("IComponent::initialize", component.initialize(context));

            // A single-component plugin: the component is also its edit controller. The
            // handler is how it tells the host that the latency changed.
            let controller = component
                .cast::<IEditController>()
                .expect("queryInterface(IEditController) failed");
            check(
                "IEditController::setComponentHandler",
                controller.setComponentHandler(handler_ptr),
            );

            assert_eq!(component.getBusCount(audio, input), 1, "audio input buses");
            assert_eq!(
                component.getBusCount(audio, output),
                1,
                "audio output buses"
            );
            for (dir, what) in [(input, "input"), (output, "output")] {
                let mut bus: BusInfo = std::mem::zeroed();
                check(
                    "IComponent::getBusInfo",
                    component.getBusInfo(audio, dir, 0, &mut bus),
                );
                assert_eq!(bus.busType, BusTypes_::kMain as i32, "{what} bus type");
                assert_eq!(bus.channelCount, 2, "{what} bus default channel count");
            }

            let processor = component
                .cast::<IAudioProcessor>()
                .expect("queryInterface(IAudioProcessor) failed");

            check(
                "IAudioProcessor::canProcessSampleSize(kSample32)",
                processor.canProcessSampleSize(SymbolicSampleSizes_::kSample32 as i32),
            );

            // A layout the plugin does not have must be refused, and the stereo one accepted.
            let mut ins: [SpeakerArrangement; 1] = [SpeakerArr::k51];
            let mut outs: [SpeakerArrangement; 1] = [SpeakerArr::k51];
            assert_eq!(
                processor.setBusArrangements(ins.as_mut_ptr(), 1, outs.as_mut_ptr(), 1),
                kResultFalse,
                "IAudioProcessor::setBusArrangements(5.1) should be refused"
            );
            let mut ins: [SpeakerArrangement; 1] = [SpeakerArr::kStereo];
            let mut outs: [SpeakerArrangement; 1] = [SpeakerArr::kStereo];
            check(
                "IAudioProcessor::setBusArrangements(stereo, stereo)",
                processor.setBusArrangements(ins.as_mut_ptr(), 1, outs.as_mut_ptr(), 1),
            );
            for (dir, what) in [(input, "input"), (output, "output")] {
                let mut arr: SpeakerArrangement = 0;
                check(
                    "IAudioProcessor::getBusArrangement",
                    processor.getBusArrangement(dir, 0, &mut arr),
                );
                assert_eq!(
                    arr,
                    SpeakerArr::kStereo,
                    "{what} arrangement after setting stereo"
                );
            }

            let mut inst = Instance {
                component,
                processor,
                controller,
                host,
                handler,
                setup,
                latency: 0,
            };
            inst.activate(setup);
            inst
        }
    }

    /// `setupProcessing`, `setActive(true)`, `setProcessing(true)`; reads the latency, which
    /// the plugin must have announced with `restartComponent(kLatencyChanged)` if it changed.
    fn activate(&mut self, setup: Setup) {
        let previous = self.latency;
        self.handler.restarts.store(0, Ordering::SeqCst);
        let (component, processor) = (&self.component, &self.processor);
        // SAFETY (this block): VST3 calls in the order a host makes them, on one thread, with
        // pointers to live, correctly typed values; the component is initialised and inactive.
        unsafe {
            let mut process_setup = ProcessSetup {
                processMode: setup.mode,
                symbolicSampleSize: SymbolicSampleSizes_::kSample32 as i32,
                maxSamplesPerBlock: MAX_BLOCK as i32,
                sampleRate: setup.sample_rate,
            };
            check(
                "IAudioProcessor::setupProcessing",
                processor.setupProcessing(&mut process_setup),
            );
            check("IComponent::setActive(true)", component.setActive(1));
            check(
                "IAudioProcessor::setProcessing(true)",
                processor.setProcessing(1),
            );
            self.latency = processor.getLatencySamples() as usize;
        }
        let latency = self.latency;
        assert!(latency > 0, "getLatencySamples() is 0 after activation");
        let restarts = self.handler.restarts.load(Ordering::SeqCst);
        assert!(
            latency == previous || restarts & RestartFlags_::kLatencyChanged != 0,
            "activation changed the latency from {previous} to {latency} but did not call \
             restartComponent(kLatencyChanged) (flags seen: {restarts:#x})"
        );
        self.setup = setup;
    }

    /// `setProcessing(false)`, `setActive(false)`.
    fn deactivate(&mut self) {
        // SAFETY: the reverse of `activate`, on the same thread, no process call in flight.
        unsafe {
            check(
                "IAudioProcessor::setProcessing(false)",
                self.processor.setProcessing(0),
            );
            check("IComponent::setActive(false)", self.component.setActive(0));
        }
    }

    /// Runs `input` (one Vec per channel) through `process` in blocks cycling through `sizes`
    /// and returns the output. Output buffers are filled with NaN before each call, so a
    /// sample the plugin does not write shows up as non-finite.
    fn run(&self, input: &[Vec<f32>; 2], sizes: &[usize]) -> [Vec<f32>; 2] {
        let total = input[0].len();
        let mut out = [vec![0.0f32; total], vec![0.0f32; total]];
        let mut ins = [vec![0.0f32; MAX_BLOCK], vec![0.0f32; MAX_BLOCK]];
        let mut outs = [vec![0.0f32; MAX_BLOCK], vec![0.0f32; MAX_BLOCK]];
        let mut pos = 0;
        for &size in sizes.iter().cycle() {
            if pos >= total {
                break;
            }
            let n = size.min(total - pos).min(MAX_BLOCK);
            for c in 0..2 {
                ins[c][..n].copy_from_slice(&input[c][pos..pos + n]);
                outs[c][..n].fill(f32::NAN);
            }
            let mut in_ptrs = [ins[0].as_mut_ptr(), ins[1].as_mut_ptr()];
            let mut out_ptrs = [outs[0].as_mut_ptr(), outs[1].as_mut_ptr()];
            let mut in_bus = AudioBusBuffers {
                numChannels: 2,
                silenceFlags: 0,
                __field0: AudioBusBuffers__type0 {
                    channelBuffers32: in_ptrs.as_mut_ptr(),
                },
            };
            let mut out_bus = AudioBusBuffers {
                numChannels: 2,
                silenceFlags: 0,
                __field0: AudioBusBuffers__type0 {
                    channelBuffers32: out_ptrs.as_mut_ptr(),
                },
            };
            let mut data = ProcessData {
                processMode: self.setup.block_mode,
                symbolicSampleSize: SymbolicSampleSizes_::kSample32 as i32,
                numSamples: n as i32,
                numInputs: 1,
                numOutputs: 1,
                inputs: &mut in_bus,
                outputs: &mut out_bus,
                inputParameterChanges: std::ptr::null_mut(),
                outputParameterChanges: std::ptr::null_mut(),
                inputEvents: std::ptr::null_mut(),
                outputEvents: std::ptr::null_mut(),
                processContext: std::ptr::null_mut(),
            };
            // SAFETY: `data` describes one stereo input and one stereo output bus whose channel
            // pointers point at `n` (<= MAX_BLOCK, as announced) valid f32s each; all of them
            // outlive the call. No parameter changes, events or process context (null is
            // allowed by the VST3 API).
            check("IAudioProcessor::process", unsafe {
                self.processor.process(&mut data)
            });
            for c in 0..2 {
                out[c][pos..pos + n].copy_from_slice(&outs[c][..n]);
            }
            pos += n;
            if self.setup.paced {
                std::thread::sleep(Duration::from_secs_f64(n as f64 / self.setup.sample_rate));
            }
        }
        out
    }

    /// [`Instance::deactivate`], `terminate`, and releases the component, which must then be
    /// destroyed.
    fn stop(mut self) {
        self.deactivate();
        let Instance {
            component,
            processor,
            controller,
            host,
            handler,
            ..
        } = self;
        // SAFETY: the reverse of `start`, on the same thread, the component is inactive.
        unsafe {
            check(
                "IEditController::setComponentHandler(null)",
                controller.setComponentHandler(std::ptr::null_mut()),
            );
            check("IComponent::terminate", component.terminate());
        }
        drop(controller);
        drop(processor);
        assert_eq!(
            release_last(component),
            0,
            "the component still has references after the host released its last one"
        );
        drop((host, handler));
    }
}

/// Index and absolute value of the largest-magnitude sample.
fn peak(x: &[f32]) -> (usize, f32) {
    x.iter()
        .enumerate()
        .map(|(i, v)| (i, v.abs()))
        .fold((0, 0.0), |a, b| if b.1 > a.1 { b } else { a })
}

/// Root mean square.
fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt()
}

/// Sends an impulse through the active instance and checks it comes out exactly
/// `getLatencySamples()` later, on both channels alike, with nothing before it.
fn check_impulse(inst: &Instance, label: &str) {
    let latency = inst.latency;
    println!("{label}: VST3 latency {latency} samples");
    // Silence first (the worker starts the model meanwhile), then an impulse on both channels,
    // then enough to see it come out with the latency and its overlap-add tail.
    let at = 5000;
    let total = at + latency + 3 * MAX_BLOCK + 2000;
    let mut input = [vec![0.0f32; total], vec![0.0f32; total]];
    input[0][at] = 1.0;
    input[1][at] = 1.0;
    let out = inst.run(&input, &BLOCKS);

    for (c, ch) in out.iter().enumerate() {
        if let Some(i) = ch.iter().position(|v| !v.is_finite()) {
            panic!(
                "{label}, channel {c}: output sample {i} is {} (not written or not finite)",
                ch[i]
            );
        }
        let early = ch[..at].iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(
            early == 0.0,
            "{label}, channel {c}: output before the impulse went in (peak {early}); silence \
             must stay silent"
        );
        let (i, p) = peak(ch);
        println!("{label}, channel {c}: impulse at {at} came out at {i} (peak {p:.4})");
        assert_eq!(
            i,
            at + latency,
            "{label}, channel {c}: the impulse must come out exactly getLatencySamples() = \
             {latency} samples later"
        );
        assert!(
            (0.5..=1.5).contains(&p),
            "{label}, channel {c}: impulse peak {p} (wet 1, synthetic mask near 1 for an impulse)"
        );
    }
    let diff = out[0]
        .iter()
        .zip(&out[1])
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        diff <= 1e-6,
        "{label}: identical stereo input, linked mask: channels differ by up to {diff}"
    );
    // SAFETY: a plain query on the live, active processor, between process calls.
    let tail = unsafe { inst.processor.getTailSamples() } as usize;
    assert_eq!(
        tail, latency,
        "{label}: getTailSamples() after processing (the delayed signal is still coming out)"
    );
}

/// The whole host sequence with the synthetic model: module, factory, component, realtime
/// processing at 48 kHz, then reactivation at 44.1 kHz (as on a host sample rate change, which
/// also exercises the worker's resampler), then teardown.
#[test]
fn vst3_synthetic_impulse_comes_out_at_the_reported_latency() {
    init_env();
    let path = plugin_library();
    let module = Module::load(&path);
    let cid = module.voxsift_class();
    let component = module.create_component(&cid);
    let realtime = |sample_rate| Setup {
        sample_rate,
        mode: ProcessModes_::kRealtime as i32,
        block_mode: ProcessModes_::kRealtime as i32,
        paced: true,
    };
    let mut inst = Instance::start(component, realtime(48_000.0));
    check_impulse(&inst, "48 kHz");
    let at_48k = inst.latency;

    inst.deactivate();
    inst.activate(realtime(44_100.0));
    check_impulse(&inst, "44.1 kHz");
    assert_ne!(
        inst.latency, at_48k,
        "the latency in samples should follow the sample rate"
    );

    inst.stop();
    module.unload();
}

/// Runs [`vst3_child_scenario`] in a child process of this test binary with `VOXSIFT_MODEL=dfn3`
/// and the scenario named in its environment, and fails if the child fails.
fn run_child(scenario: &str) {
    plugin_library(); // the same clear message here if the plugin is missing
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe)
        .args([
            "--exact",
            CHILD_TEST,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("VOXSIFT_MODEL", "dfn3")
        .env(CHILD_SCENARIO, scenario)
        .output()
        .expect("could not start this test binary as a child process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "--- {scenario}: child stdout ---\n{stdout}--- {scenario}: child stderr ---\n{stderr}"
    );
    assert!(
        out.status.success(),
        "VST3 scenario {scenario} failed in its child process ({}); its output is above",
        out.status
    );
    assert!(
        stdout.contains("1 passed"),
        "the child process did not run {CHILD_TEST}"
    );
}

/// DeepFilterNet3 in realtime, paced like a host: three seconds of white noise; over the last
/// second (the model has loaded by then) most of it must be gone.
#[test]
fn vst3_dfn3_realtime_reduces_white_noise() {
    run_child("dfn3-realtime");
}

/// An offline bounce: `setupProcessing(kOffline)` once, then activation, as hosts do it. The
/// engine must then wait for every mask, so the noise is removed from the very first frames
/// even though the calls come much faster than real time while the model is still loading.
#[test]
// nice-plug 0.4.2's VST3 setupProcessing handed activate() the process mode of the previous
// setupProcessing call (Realtime on the first); this test found it, vendor/nice-plug fixes it.
fn vst3_dfn3_offline_bounce_waits_for_every_mask() {
    run_child("dfn3-offline");
}

/// An export from a host that sets the process up for realtime and then marks each `process`
/// call offline (`ProcessData::processMode`), as Ardour before 8.7 does in a freewheel export:
/// the plugin must switch to offline rendering at the first such call, and the bounce must be
/// bit-identical to a bounce set up offline from the start.
#[test]
// nice-plug 0.4.2 ignores `ProcessData::processMode`; vendor/nice-plug re-activates the
// plugin when it differs from the mode it runs in.
fn vst3_dfn3_offline_per_block_equals_an_offline_bounce() {
    run_child("dfn3-offline-per-block");
}

/// The DFN3 scenarios; each runs only in the child process [`run_child`] starts.
#[test]
#[ignore = "run in a child process by the vst3_dfn3_* tests"]
fn vst3_child_scenario() {
    let Some(scenario) = std::env::var_os(CHILD_SCENARIO) else {
        println!("skipped: only runs as the child process of a vst3_dfn3_* test");
        return;
    };
    let (setup, seconds) = match scenario.to_str() {
        Some("dfn3-realtime") => (
            Setup {
                sample_rate: SAMPLE_RATE,
                mode: ProcessModes_::kRealtime as i32,
                block_mode: ProcessModes_::kRealtime as i32,
                paced: true,
            },
            3,
        ),
        Some("dfn3-offline") => (
            Setup {
                sample_rate: SAMPLE_RATE,
                mode: ProcessModes_::kOffline as i32,
                block_mode: ProcessModes_::kOffline as i32,
                paced: false,
            },
            3,
        ),
        Some("dfn3-offline-per-block") => (
            Setup {
                sample_rate: SAMPLE_RATE,
                mode: ProcessModes_::kRealtime as i32,
                block_mode: ProcessModes_::kOffline as i32,
                paced: false,
            },
            3,
        ),
        _ => panic!("unknown scenario {scenario:?}"),
    };
    let path = plugin_library();
    let module = Module::load(&path);
    let cid = module.voxsift_class();
    let component = module.create_component(&cid);
    let inst = Instance::start(component, setup);
    let latency = inst.latency;
    println!("VST3 latency reported (DFN3, 48 kHz, 512 max block): {latency} samples");

    // White noise, the same on both channels (deterministic xorshift, uniform in ±0.1).
    let total = seconds * SAMPLE_RATE as usize;
    let mut state = 0x2545_f491u32;
    let noise: Vec<f32> = (0..total)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32 - 0.5) * 0.2
        })
        .collect();
    let input = [noise.clone(), noise];
    let out = inst.run(&input, &BLOCKS);
    inst.stop();
    if setup.mode != setup.block_mode {
        // The same bounce set up offline from the start, in a fresh instance.
        let reference = Setup {
            mode: setup.block_mode,
            ..setup
        };
        let inst = Instance::start(module.create_component(&cid), reference);
        assert_eq!(
            inst.latency, latency,
            "the latency must not depend on the mode"
        );
        let expected = inst.run(&input, &BLOCKS);
        inst.stop();
        for c in 0..2 {
            let diff = out[c]
                .iter()
                .zip(&expected[c])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            println!("channel {c}: max |per-block offline - offline bounce| = {diff:e}");
            assert!(
                out[c]
                    .iter()
                    .zip(&expected[c])
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "channel {c}: the bounce marked offline per block differs from an offline \
                 bounce (max diff {diff:e})"
            );
        }
    }
    module.unload();

    // Realtime: the last second (the model loads meanwhile and realtime never waits for it).
    // Offline: everything from a quarter second in (every mask is waited for).
    let from = if setup.block_mode == ProcessModes_::kOffline as i32 {
        latency + SAMPLE_RATE as usize / 4
    } else {
        total - SAMPLE_RATE as usize
    };
    for (c, ch) in out.iter().enumerate() {
        if let Some(i) = ch.iter().position(|v| !v.is_finite()) {
            panic!(
                "channel {c}: output sample {i} is {} (not written or not finite)",
                ch[i]
            );
        }
        let ratio = rms(&ch[from..]) / rms(&input[c][from - latency..total - latency]);
        println!(
            "channel {c}: output/input RMS from sample {from}: {ratio:.4} ({:.1} dB)",
            20.0 * ratio.log10()
        );
        assert!(
            ratio < 0.25,
            "channel {c}: DFN3 should remove most of a white noise (output/input RMS {ratio} \
             from sample {from}); near 1 means audio passed through unmasked"
        );
    }
}
