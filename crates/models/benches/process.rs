//! Audio-thread cost of `Engine::process`, against its floor: a plain realfft forward and
//! inverse transform of the same frames.
//!
//! Every iteration processes one second of 48 kHz stereo noise (48 000 sample frames, 96 000
//! samples). Criterion's throughput is in **samples** (frames × channels), so the per-sample
//! costs of all the benchmarks compare directly:
//! - `engine/B`: blocks of B samples, realtime mode, connected to a running worker with the
//!   synthetic model (hop and mask rings, mask shaping, STFT, overlap-add, dry delay, mix);
//! - `engine_no_worker/B`: the same DSP with no worker connected (unity masks);
//! - `floor/B`: per channel and 10 ms hop, one forward and one inverse real FFT of the 20 ms
//!   frame (100 frames × 2 channels), with preallocated scratch and nothing else. The work does
//!   not depend on B: it is measured once per block size, just before that size's engines, so
//!   that each ratio compares figures taken close together on a noisy machine.
//!
//! The input is one continuous noise signal: each iteration feeds the next second to the same
//! engine, block after block, so the engine never restarts between iterations.
//!
//! Every measured iteration runs under a counting allocator; the bench fails if any of them
//! allocated or freed memory on the measuring thread.
//!
//! Run: `cargo bench -p voxsift-models --bench process`. After criterion's own report it prints a
//! table of ns per sample and the ratios to the floor, from criterion's medians of this run.

use criterion::{BenchmarkId, Criterion, Throughput};
use realfft::RealFftPlanner;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use voxsift_engine::{Engine, EngineConfig, Grid, RunMode};
use voxsift_models::choice::{start, ModelChoice};

/// Sample rate of every measurement.
const RATE: u32 = 48_000;
/// Channels of every measurement (stereo).
const CHANNELS: usize = 2;
/// Sample frames per iteration (one second).
const SECOND: usize = RATE as usize;
/// Samples per iteration, the unit of criterion's throughput: frames × channels.
const SAMPLES: u64 = (SECOND * CHANNELS) as u64;
/// Host block sizes measured.
const BLOCKS: [usize; 3] = [64, 512, 4096];
/// Criterion group name (also the folder under `target/criterion`).
const GROUP: &str = "process";

/// The system allocator, counting allocations and frees made on a thread inside [`counted`].
struct CountingAlloc;

thread_local! {
    /// True while the current thread is inside [`counted`].
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

/// Allocations and frees seen inside [`counted`], on any thread.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// Counts one allocator call if the current thread is inside [`counted`].
#[inline]
fn note_allocation() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `System`; counting neither allocates nor
// touches the memory.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_allocation();
        System.dealloc(ptr, layout)
    }
}

/// Runs `f` with allocator calls on this thread counted in [`ALLOCATIONS`].
#[inline]
fn counted<T>(f: impl FnOnce() -> T) -> T {
    COUNTING.set(true);
    let out = f();
    COUNTING.set(false);
    out
}

// Deterministic uniform noise in ±`a` (one generator for all tests: `voxsift-testkit`).
use voxsift_testkit::noise;

/// Runs one second of stereo input through `engine` in blocks of `block` (no allocation).
fn run_second(
    engine: &mut Engine,
    input: &[Vec<f32>; CHANNELS],
    buf: &mut [Vec<f32>; CHANNELS],
    block: usize,
) {
    let mut pos = 0;
    while pos < SECOND {
        let n = block.min(SECOND - pos);
        let [l, r] = buf;
        l[..n].copy_from_slice(&input[0][pos..pos + n]);
        r[..n].copy_from_slice(&input[1][pos..pos + n]);
        engine.process(&mut [&mut l[..n], &mut r[..n]]);
        pos += n;
    }
    black_box(&buf[0][0]);
}

/// What the worker saw during one `engine/B` benchmark (warm-up included).
struct WorkerStats {
    /// Host block size.
    block: usize,
    /// Frames the engine synthesized.
    frames: u64,
    /// Of those, frames whose mask was late (the previous mask was held).
    late: u64,
    /// Hops not handed to the worker because its ring was full.
    dropped: u64,
}

/// Measures the floor and the engine with and without a worker at every block size.
fn bench_process(c: &mut Criterion) -> Vec<WorkerStats> {
    let input = [noise(SECOND, 1, 0.5), noise(SECOND, 2, 0.5)];
    let mut group = c.benchmark_group(GROUP);
    group.throughput(Throughput::Elements(SAMPLES));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));

    // The floor: what any STFT engine on this grid must do per second of stereo audio.
    let grid = Grid::for_rate(RATE);
    let mut planner = RealFftPlanner::<f32>::new();
    let fwd = planner.plan_fft_forward(grid.win);
    let inv = planner.plan_fft_inverse(grid.win);
    let mut time = vec![0.0f32; grid.win];
    let mut spec = fwd.make_output_vec();
    let mut scratch = vec![Default::default(); fwd.get_scratch_len().max(inv.get_scratch_len())];
    let frames = SECOND / grid.hop;
    let mut transform = |time: &mut [f32]| {
        fwd.process_with_scratch(time, &mut spec, &mut scratch)
            .expect("forward FFT");
        inv.process_with_scratch(&mut spec, time, &mut scratch)
            .expect("inverse FFT");
    };
    let mut stats = Vec::new();
    for block in BLOCKS {
        let cfg = EngineConfig::new(RATE, block, CHANNELS, RunMode::Realtime);
        let mut buf = [vec![0.0f32; block], vec![0.0f32; block]];

        // Measured next to this block size's engines, so that each ratio compares figures
        // taken under the same load (the work does not depend on the block size).
        group.bench_with_input(BenchmarkId::new("floor", block), &block, |b, _| {
            b.iter(|| {
                counted(|| {
                    for f in 0..frames {
                        for ch in &input {
                            let start = (f * grid.hop).min(SECOND - grid.win);
                            time.copy_from_slice(&ch[start..start + grid.win]);
                            transform(&mut time);
                        }
                    }
                    black_box(&time[0]);
                })
            })
        });

        let mut bare = Engine::new(cfg, 2, 0);
        group.bench_with_input(
            BenchmarkId::new("engine_no_worker", block),
            &block,
            |b, &n| b.iter(|| counted(|| run_second(&mut bare, &input, &mut buf, n))),
        );

        let Ok((mut engine, _worker)) = start(cfg, &ModelChoice::Synthetic(2), 1) else {
            panic!("the synthetic model did not start");
        };
        group.bench_with_input(BenchmarkId::new("engine", block), &block, |b, &n| {
            b.iter(|| counted(|| run_second(&mut engine, &input, &mut buf, n)))
        });
        let shared = engine.shared().expect("the engine is connected");
        stats.push(WorkerStats {
            block,
            frames: engine.frames_synthesized(),
            late: shared.late_masks.load(Ordering::Relaxed),
            dropped: shared.dropped_hops.load(Ordering::Relaxed),
        });
    }
    group.finish();
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    assert_eq!(
        allocations, 0,
        "the measured loops called the allocator {allocations} times"
    );
    stats
}

/// Where criterion writes its results: `$CRITERION_HOME`, else the `criterion` folder of the
/// target directory this bench was built in.
fn criterion_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(home.into());
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .map(|a| a.join("criterion"))
        .find(|d| d.join(GROUP).is_dir())
}

/// Criterion's median time per iteration of benchmark `id` in ns, if it was measured in this
/// run (its estimates were written after `since`).
fn median_ns(dir: &Path, id: &str, since: SystemTime) -> Option<f64> {
    let path = dir.join(GROUP).join(id).join("new").join("estimates.json");
    if std::fs::metadata(&path).ok()?.modified().ok()? < since {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let median = &text[text.find("\"median\"")?..];
    let key = "\"point_estimate\":";
    let value = &median[median.find(key)? + key.len()..];
    value[..value.find([',', '}'])?].trim().parse().ok()
}

/// Prints ns per sample and the ratios to the floor, from criterion's medians of this run
/// (nothing when criterion measured nothing, e.g. with `--test`).
fn print_ratios(since: SystemTime, stats: &[WorkerStats]) {
    let Some(dir) = criterion_dir() else {
        return;
    };
    let per_sample = |id: &str| median_ns(&dir, id, since).map(|ns| ns / SAMPLES as f64);
    let cell = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.2}"));
    let rows: Vec<String> = BLOCKS
        .iter()
        .filter_map(|block| {
            let floor = per_sample(&format!("floor/{block}"))?;
            let engine = per_sample(&format!("engine/{block}"));
            let bare = per_sample(&format!("engine_no_worker/{block}"));
            Some(format!(
                "| {block} | {} | {floor:.2} | {} | {} | {} |",
                cell(engine),
                cell(engine.map(|e| e / floor)),
                cell(bare),
                cell(bare.map(|e| e / floor)),
            ))
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    println!();
    println!("Audio-thread cost per sample (one channel), criterion medians of this run:");
    println!(
        "| block | engine ns/sample | floor ns/sample | ratio | no worker ns/sample | no worker / floor |"
    );
    println!("|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    for s in stats.iter().filter(|s| s.frames > 0) {
        println!(
            "engine/{}: {} frames, {} late masks ({:.1} %), {} dropped hops",
            s.block,
            s.frames,
            s.late,
            100.0 * s.late as f64 / s.frames as f64,
            s.dropped
        );
    }
}

fn main() {
    let since = SystemTime::now();
    let mut criterion = Criterion::default().configure_from_args();
    let stats = bench_process(&mut criterion);
    criterion.final_summary();
    print_ratios(since, &stats);
}
