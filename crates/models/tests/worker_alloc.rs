//! The worker's steady state allocates nothing, and neither does the audio thread.
//!
//! A counting global allocator counts every allocation, reallocation and free made on the
//! worker thread (marked by the model factory, which runs there) and on the thread calling
//! `Engine::process`, but only while a measured phase is on. DeepFilterNet3 runs through the
//! real worker, after a warm-up, over sound and over a stretch of digital silence long enough
//! to restart (and resume) the model's stream. Memory ONNX Runtime allocates inside its own
//! C++ code does not go through Rust's allocator and is not counted here.
//!
//! Needs the runtime: `cargo xtask test` fetches it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use voxsift_engine::status::WorkerState;
use voxsift_engine::{ChannelMode, Engine, EngineConfig, RunMode};
use voxsift_models::dfn3::{self, Dfn3};
use voxsift_models::worker::{resampler_lag, Worker};
use voxsift_models::MaskModel;
use voxsift_testkit::engine::unity;
use voxsift_testkit::noise;

// Which thread this is: 0 untracked, 1 the worker, 2 the audio thread.
thread_local! {
    static ROLE: Cell<u8> = const { Cell::new(0) };
}

/// Whether allocations are counted now.
static MEASURING: AtomicBool = AtomicBool::new(false);
/// Allocator calls on the worker thread while measuring.
static WORKER: AtomicU64 = AtomicU64::new(0);
/// Allocator calls on the audio thread while measuring.
static AUDIO: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counting.
struct Counting;

fn count() {
    if !MEASURING.load(Ordering::Relaxed) {
        return;
    }
    match ROLE.try_with(Cell::get).unwrap_or(0) {
        1 => WORKER.fetch_add(1, Ordering::Relaxed),
        2 => AUDIO.fetch_add(1, Ordering::Relaxed),
        _ => 0,
    };
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count();
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Speech-like test input: noise bursts with gaps, `seconds` long, then `silence` seconds of
/// exact zeros, then more bursts.
fn input(sample_rate: u32, channels: usize, seconds: f32, silence: f32) -> Vec<Vec<f32>> {
    let n = (seconds * sample_rate as f32) as usize;
    let gap = (silence * sample_rate as f32) as usize;
    (0..channels)
        .map(|c| {
            let a = noise(n, 7 + c as u64, 0.3);
            let b = noise(n, 11 + c as u64, 0.3);
            let burst = |i: usize, x: f32| {
                let t = i as f32 / sample_rate as f32;
                x * (0.5 + 0.5 * (t * 3.0 * std::f32::consts::TAU).sin())
            };
            let mut v: Vec<f32> = a.iter().enumerate().map(|(i, &x)| burst(i, x)).collect();
            v.extend(std::iter::repeat_n(0.0, gap));
            v.extend(b.iter().enumerate().map(|(i, &x)| burst(i, x)));
            v
        })
        .collect()
}

/// Runs DFN3 through the worker over a warm-up and a measured part; returns the allocator
/// calls counted on the worker and on the audio thread during the measured part, and the
/// masks the worker produced in it.
fn measure(sample_rate: u32, channels: usize, mode: ChannelMode, block: usize) -> (u64, u64, u64) {
    let mut config = EngineConfig::new(sample_rate, block, channels, RunMode::Offline);
    config.channel_mode = mode;
    let streams = config.mask_streams();
    let spec = dfn3::SPEC;
    let mut engine = Engine::new(config, spec.lookahead, resampler_lag(sample_rate, &spec));
    let (worker, link) = Worker::spawn(
        &config,
        spec,
        Box::new(move || {
            ROLE.with(|r| r.set(1));
            Ok(Box::new(Dfn3::embedded(streams, 1)?) as Box<dyn MaskModel>)
        }),
    );
    assert_eq!(
        worker.wait_ready(Duration::from_secs(60)),
        WorkerState::Running
    );
    engine.connect(link);
    engine.set_params_immediate(unity());
    let warm = input(sample_rate, channels, 1.0, 0.0);
    // Long enough a silence for the engine to restart the stream (latency + two windows).
    let measured = input(sample_rate, channels, 2.0, 0.5);
    let mut buf = vec![vec![0.0f32; block]; channels];
    let mut run = |x: &[Vec<f32>], engine: &mut Engine| {
        let len = x[0].len();
        let mut pos = 0;
        while pos < len {
            let n = block.min(len - pos);
            for (b, c) in buf.iter_mut().zip(x) {
                b[..n].copy_from_slice(&c[pos..pos + n]);
            }
            let mut refs: [&mut [f32]; 2] = {
                let (l, r) = buf.split_at_mut(1);
                [
                    &mut l[0][..n],
                    r.first_mut().map_or(&mut [][..], |c| &mut c[..n]),
                ]
            };
            engine.process(&mut refs[..channels]);
            pos += n;
        }
    };
    run(&warm, &mut engine);
    let produced = worker.shared().masks_produced.load(Ordering::Relaxed);
    ROLE.with(|r| r.set(2));
    WORKER.store(0, Ordering::Relaxed);
    AUDIO.store(0, Ordering::Relaxed);
    MEASURING.store(true, Ordering::Relaxed);
    run(&measured, &mut engine);
    MEASURING.store(false, Ordering::Relaxed);
    ROLE.with(|r| r.set(0));
    let produced = worker.shared().masks_produced.load(Ordering::Relaxed) - produced;
    (
        WORKER.load(Ordering::Relaxed),
        AUDIO.load(Ordering::Relaxed),
        produced,
    )
}

// One test, so the counters are not shared by tests running at once.
#[test]
fn dfn3_worker_and_audio_thread_allocate_nothing_in_steady_state() {
    for (sr, channels, mode, block) in [
        (48_000, 2, ChannelMode::Linked, 128),
        (48_000, 2, ChannelMode::Independent, 480),
        (44_100, 1, ChannelMode::Linked, 64),
    ] {
        let (worker, audio, masks) = measure(sr, channels, mode, block);
        println!(
            "{sr} Hz, {channels} ch {mode:?}, block {block}: {masks} masks, {worker} worker \
             and {audio} audio-thread allocator calls"
        );
        assert!(masks > 200, "{masks} masks produced while measuring");
        assert_eq!(worker, 0, "the worker allocated ({sr} Hz, {mode:?})");
        assert_eq!(audio, 0, "the audio thread allocated ({sr} Hz, {mode:?})");
    }
}
