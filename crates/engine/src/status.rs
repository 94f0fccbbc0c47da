//! State shared between the audio thread, the worker and whoever shows status (CLI, editor).
//!
//! The audio thread only touches atomics here. The human-readable message sits behind a mutex
//! that only the worker and the UI/CLI side use, never the audio thread.

use crate::spec::ModelSpec;
use atomic_float::AtomicF32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

/// Where the worker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum WorkerState {
    /// Building its model sessions.
    Starting = 0,
    /// Producing masks.
    Running = 1,
    /// Failed; the engine passes audio through (delayed). The message says why.
    Failed = 2,
    /// Stopped on request.
    Stopped = 3,
}

/// Counters and flags shared by the engine, its worker and the UI.
#[derive(Debug)]
pub struct Shared {
    /// [`WorkerState`] as a byte. Read by the audio thread.
    state: AtomicU8,
    /// Asks the worker to stop.
    pub stop: AtomicBool,
    /// Masks that were not there when the audio thread needed them (realtime only).
    pub late_masks: AtomicU64,
    /// Hops the audio thread could not hand to the worker because its ring was full.
    pub dropped_hops: AtomicU64,
    /// Mask frames the worker has produced.
    pub masks_produced: AtomicU64,
    /// Total time the worker spent processing hops (resampling, inference, mapping), in ns.
    pub busy_ns: AtomicU64,
    /// Worker compute time as a fraction of real time (smoothed).
    pub worker_load: AtomicF32,
    /// Test hook: the worker sleeps this many microseconds per hop (0 = off).
    pub throttle_us: AtomicU32,
    /// Length of the host block the engine processed last, in samples. Written by the audio
    /// thread (one relaxed store per `process`); the worker reads it to estimate when the
    /// next hop can arrive.
    pub last_block: AtomicU32,
    /// The worker thread, so that an offline engine can wake it when it hands it a hop. Set
    /// once by the worker; a realtime engine never touches it.
    worker_thread: OnceLock<std::thread::Thread>,
    /// Why the worker failed, or what it fell back to. Never touched by the audio thread.
    message: Mutex<String>,
    /// The execution provider the model runs on. Never touched by the audio thread.
    provider: Mutex<String>,
    /// The specs the loaded models report, in member order; empty until every model is
    /// loaded. Published by the worker before it goes to [`WorkerState::Running`], so whoever
    /// sees that state can build the engine for them. Never touched by the audio thread.
    specs: Mutex<Vec<ModelSpec>>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            state: AtomicU8::new(WorkerState::Starting as u8),
            stop: AtomicBool::new(false),
            late_masks: AtomicU64::new(0),
            dropped_hops: AtomicU64::new(0),
            masks_produced: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            worker_load: AtomicF32::new(0.0),
            throttle_us: AtomicU32::new(0),
            last_block: AtomicU32::new(0),
            worker_thread: OnceLock::new(),
            message: Mutex::new(String::new()),
            provider: Mutex::new(String::new()),
            specs: Mutex::new(Vec::new()),
        }
    }
}

impl Shared {
    /// The worker's state.
    pub fn state(&self) -> WorkerState {
        match self.state.load(Ordering::Acquire) {
            0 => WorkerState::Starting,
            1 => WorkerState::Running,
            2 => WorkerState::Failed,
            _ => WorkerState::Stopped,
        }
    }

    /// Registers the calling thread as the worker (worker side, once).
    pub fn register_worker(&self) {
        let _ = self.worker_thread.set(std::thread::current());
    }

    /// Wakes the worker if it is parked waiting for a hop. A system call when it was parked:
    /// offline only, never on the realtime path. Does not allocate.
    pub fn wake_worker(&self) {
        if let Some(t) = self.worker_thread.get() {
            t.unpark();
        }
    }

    /// Sets the state (worker side).
    pub fn set_state(&self, s: WorkerState) {
        self.state.store(s as u8, Ordering::Release);
    }

    /// Marks the worker failed with a message (worker side; never call on the audio thread).
    pub fn fail(&self, message: impl Into<String>) {
        self.set_message(message);
        self.set_state(WorkerState::Failed);
    }

    /// Sets the status message (never on the audio thread).
    pub fn set_message(&self, message: impl Into<String>) {
        if let Ok(mut m) = self.message.lock() {
            *m = message.into();
        }
    }

    /// Adds a line to the status message, after what is there ("; " between them). Never on
    /// the audio thread.
    pub fn add_message(&self, message: impl AsRef<str>) {
        if let Ok(mut m) = self.message.lock() {
            if !m.is_empty() {
                m.push_str("; ");
            }
            m.push_str(message.as_ref());
        }
    }

    /// The status message (never on the audio thread).
    pub fn message(&self) -> String {
        self.message.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Records the execution provider the model runs on (worker side).
    pub fn set_provider(&self, provider: impl Into<String>) {
        if let Ok(mut p) = self.provider.lock() {
            *p = provider.into();
        }
    }

    /// The execution provider the model runs on ("" until it is loaded; never on the audio
    /// thread).
    pub fn provider(&self) -> String {
        self.provider.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Records the specs of the loaded models (worker side, before it reports running).
    pub fn set_specs(&self, specs: Vec<ModelSpec>) {
        if let Ok(mut s) = self.specs.lock() {
            *s = specs;
        }
    }

    /// The specs the loaded models report, in member order (empty until they are loaded;
    /// never on the audio thread).
    pub fn specs(&self) -> Vec<ModelSpec> {
        self.specs.lock().map(|s| s.clone()).unwrap_or_default()
    }
}
