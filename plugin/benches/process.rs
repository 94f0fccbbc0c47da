//! Audio-thread cost of `Engine::process`, against its floor: a plain realfft forward and
//! inverse transform of the same frames.
//!
//! Every measurement processes one second of 48 kHz stereo noise (48 000 sample frames), so
//! criterion's throughput is in sample frames and the per-sample costs compare directly:
//! - `engine/B`: blocks of B samples, realtime mode, connected to a running worker with the
//!   synthetic model (hop and mask rings, mask shaping, STFT, overlap-add, dry delay, mix);
//! - `engine_no_worker/B`: the same DSP with no worker connected (unity masks);
//! - `floor`: per channel and 10 ms hop, one forward and one inverse real FFT of the 20 ms
//!   frame (100 frames × 2 channels), with preallocated scratch and nothing else.
//!
//! Run: `cargo bench -p voxsift --bench process`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use realfft::RealFftPlanner;
use std::hint::black_box;
use std::time::Duration;
use voxsift::engine::{Engine, EngineConfig, Grid, RunMode};
use voxsift::render::{start, ModelChoice};

/// Sample rate of every measurement.
const RATE: u32 = 48_000;
/// Sample frames per iteration (one second).
const SECOND: usize = RATE as usize;

/// Deterministic noise in [-a, a).
fn noise(n: usize, seed: u64, a: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
        })
        .collect()
}

/// Runs one second of stereo input through `engine` in blocks of `block` (no allocation).
fn run_second(engine: &mut Engine, input: &[Vec<f32>; 2], buf: &mut [Vec<f32>; 2], block: usize) {
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

fn bench_process(c: &mut Criterion) {
    let input = [noise(SECOND, 1, 0.5), noise(SECOND, 2, 0.5)];
    let mut group = c.benchmark_group("process");
    group.throughput(Throughput::Elements(SECOND as u64));
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
    group.bench_function("floor", |b| {
        b.iter(|| {
            for f in 0..frames {
                for ch in &input {
                    let start = (f * grid.hop).min(SECOND - grid.win);
                    time.copy_from_slice(&ch[start..start + grid.win]);
                    let _ = fwd.process_with_scratch(&mut time, &mut spec, &mut scratch);
                    let _ = inv.process_with_scratch(&mut spec, &mut time, &mut scratch);
                }
            }
            black_box(&time[0]);
        })
    });

    for block in [64usize, 512, 4096] {
        let cfg = EngineConfig::new(RATE, block, 2, RunMode::Realtime);
        let mut buf = [vec![0.0f32; block], vec![0.0f32; block]];

        let mut bare = Engine::new(cfg, 2, 0);
        group.bench_with_input(
            BenchmarkId::new("engine_no_worker", block),
            &block,
            |b, &n| b.iter(|| run_second(&mut bare, &input, &mut buf, n)),
        );

        let Ok((mut engine, _worker)) = start(cfg, &ModelChoice::Synthetic(2), 1) else {
            panic!("the synthetic model did not start");
        };
        group.bench_with_input(BenchmarkId::new("engine", block), &block, |b, &n| {
            b.iter(|| run_second(&mut engine, &input, &mut buf, n))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_process);
criterion_main!(benches);
