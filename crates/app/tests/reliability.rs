//! Reliability (the table is in `RELIABILITY.md` at the repository root): bad audio, odd
//! hosts, starvation and faults. The synthetic model is used wherever the model does not
//! matter; the DFN3 tests need ONNX Runtime, like `dfn3.rs` (`VOXSIFT_ORT_LIB`, or the folder
//! `cargo xtask fetch-runtime` fills).
//!
//! What `engine.rs` already checks is not repeated here (reconstruction at five rates, one
//! impulse test, wet 0/bypass, block invariance at 48 kHz, no allocation, the basic
//! starvation test, NaN/Inf/denormal finite output, a missing model directory, channel-mode
//! switches, reset, a failed worker).

mod common;

use common::{delayed, noise, repo, run_blocks as run, unity};
use num_complex::Complex32;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use voxsift_app::render::{render, start, ModelChoice, RenderOptions};
use voxsift_engine::status::WorkerState;
use voxsift_engine::{ChannelMode, Engine, EngineConfig, EngineParams, RunMode, MAX_INPUT};
use voxsift_models::synthetic::SyntheticModel;
use voxsift_models::worker::{resampler_lag, ModelFactory, Worker};
use voxsift_models::{MaskModel, ModelError, ModelSpec};
use voxsift_testkit::truncate;

/// Every host rate the issue lists, 8 kHz to 192 kHz.
const RATES: [u32; 11] = [
    8_000, 11_025, 16_000, 22_050, 32_000, 44_100, 48_000, 88_200, 96_000, 176_400, 192_000,
];

/// The engine's 20 ms wet/gain ramp in samples at `rate`.
fn ramp(rate: u32) -> usize {
    (0.02 * rate as f32) as usize
}

/// [`run`] for one channel.
fn run_mono(engine: &mut Engine, x: &[f32], blocks: &[usize]) -> Vec<f32> {
    run(engine, &[x.to_vec()], blocks).swap_remove(0)
}

/// A signal the synthetic model reacts to: 220 Hz and 3.1 kHz tones and noise, amplitude
/// modulated at 3 Hz, so its mask (which attenuates above 2 kHz by level) moves every frame.
fn speechy(n: usize, rate: u32, seed: u64) -> Vec<f32> {
    let nz = noise(n, seed, 0.1);
    (0..n)
        .map(|i| {
            let t = i as f64 / rate as f64;
            let tau = 2.0 * std::f64::consts::PI;
            let env = 0.6 + 0.4 * (tau * 3.0 * t).sin();
            let s = 0.3 * (tau * 220.0 * t).sin() + 0.15 * (tau * 3100.0 * t).sin();
            (env * s) as f32 + nz[i]
        })
        .collect()
}

/// Largest sample-to-sample step of `x`.
fn max_step(x: &[f32]) -> f32 {
    x.windows(2)
        .map(|w| (w[1] - w[0]).abs())
        .fold(0.0, f32::max)
}

/// Index of the largest magnitude.
fn peak(x: &[f32]) -> usize {
    (0..x.len())
        .max_by(|a, b| x[*a].abs().total_cmp(&x[*b].abs()))
        .unwrap_or(0)
}

/// Index after the last sample where `a` and `b` differ bitwise (0 when identical).
fn differs_until(a: &[f32], b: &[f32]) -> usize {
    a.iter()
        .zip(b)
        .rposition(|(x, y)| x.to_bits() != y.to_bits())
        .map_or(0, |i| i + 1)
}

/// Energy ratio of `a - b` to `b` in dB.
fn diff_db(a: &[f32], b: &[f32]) -> f64 {
    let e: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let s: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    10.0 * (e.max(1e-30) / s.max(1e-30)).log10()
}

/// A synthetic-model engine (lookahead 2, like DFN3) with its worker running.
fn synthetic(cfg: EngineConfig) -> (Engine, Worker) {
    start(cfg, &ModelChoice::Synthetic(2), 1).expect("the synthetic model starts")
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    /// `<tmp>/voxsift-reliability-<pid>/<name>`, empty. Names must differ between tests (they
    /// run in parallel).
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir()
            .join(format!("voxsift-reliability-{}", std::process::id()))
            .join(name);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("creating a scratch directory");
        Self(d)
    }

    /// A path inside it.
    fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        // The per-process parent, once the last test's directory is gone (fails otherwise).
        if let Some(parent) = self.0.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// The first `seconds` of `demo/demo_mix.flac`, mono, 48 kHz.
fn demo(seconds: f64) -> Vec<f32> {
    let a = voxsift_app::io::read_audio(&repo().join("demo/demo_mix.flac")).expect("demo mix");
    assert_eq!(a.sample_rate, 48_000);
    let n = ((seconds * 48_000.0) as usize).min(a.frames());
    (0..n)
        .map(|i| a.channels.iter().map(|c| c[i]).sum::<f32>() / a.num_channels() as f32)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Bad audio
// ---------------------------------------------------------------------------------------------

/// Positive and negative denormals with varied mantissas.
fn denormal(i: usize) -> f32 {
    let v = f32::from_bits(1 + (i as u32).wrapping_mul(2_654_435_761) % 0x007f_fffe);
    if i.is_multiple_of(2) {
        v
    } else {
        -v
    }
}

#[test]
fn nan_inf_and_denormal_samples_are_exactly_silence_to_the_engine() {
    // NaN, ±Inf and denormals in one or both channels give output bit-identical to a run in
    // which those samples were 0: nothing of them reaches the STFT, the dry path or the model.
    let rate = 44_100; // through the worker's resampler
    let n = rate as usize;
    let clean = vec![speechy(n, rate, 1), speechy(n, rate, 2)];
    let mut bad = clean.clone();
    let mut zeroed = clean.clone();
    let mut poke = |c: usize, range: std::ops::Range<usize>, f: &dyn Fn(usize) -> f32| {
        for i in range {
            bad[c][i] = f(i);
            zeroed[c][i] = 0.0;
        }
    };
    poke(0, 10_000..12_000, &|_| f32::NAN);
    poke(1, 15_000..15_500, &|i| {
        if i % 2 == 0 {
            f32::INFINITY
        } else {
            f32::NEG_INFINITY
        }
    });
    poke(0, 20_000..20_300, &denormal);
    poke(1, 20_000..20_300, &denormal);
    poke(0, 30_000..30_001, &|_| -f32::NAN);
    for (mode, params) in [
        (ChannelMode::Linked, EngineParams::default()),
        (
            ChannelMode::Independent,
            EngineParams {
                wet: 0.7,
                floor_db: Some(-20.0),
                ..EngineParams::default()
            },
        ),
    ] {
        let out = |x: &[Vec<f32>]| {
            let mut cfg = EngineConfig::new(rate, 512, 2, RunMode::Offline);
            cfg.channel_mode = mode;
            let (mut e, _w) = synthetic(cfg);
            e.set_params_immediate(params);
            run(&mut e, x, &[512, 100, 7])
        };
        let (y_bad, y_zero) = (out(&bad), out(&zeroed));
        for c in 0..2 {
            assert!(y_bad[c].iter().all(|v| v.is_finite()), "{mode:?} ch {c}");
            assert_eq!(
                differs_until(&y_bad[c], &y_zero[c]),
                0,
                "{mode:?} channel {c}: bad samples are not exactly zeros to the engine"
            );
        }
    }
}

/// Sample `i` of a test segment at `rate`.
type Segment = Box<dyn Fn(usize, u32) -> f32>;

/// Extreme test segments, most of them finite: (name, segment).
fn extreme_segments() -> Vec<(&'static str, Segment)> {
    let sine = |f: f64, i: usize, rate: u32| {
        (2.0 * std::f64::consts::PI * f * i as f64 / rate as f64).sin() as f32
    };
    let square = |f: f64, a: f32| {
        move |i: usize, rate: u32| {
            if (i as f64 * f / rate as f64).fract() < 0.5 {
                a
            } else {
                -a
            }
        }
    };
    vec![
        ("silence", Box::new(|_, _| 0.0)),
        ("dc +1", Box::new(|_, _| 1.0)),
        ("dc -4", Box::new(|_, _| -4.0)),
        ("square 1 kHz full scale", Box::new(square(1000.0, 1.0))),
        ("square 100 Hz full scale", Box::new(square(100.0, 1.0))),
        (
            "nyquist full scale",
            Box::new(|i, _| if i % 2 == 0 { 1.0 } else { -1.0 }),
        ),
        (
            "clipped sine (4x, hard clip)",
            Box::new(move |i, r| (4.0 * sine(300.0, i, r)).clamp(-1.0, 1.0)),
        ),
        (
            "sine 8x full scale, unclipped",
            Box::new(move |i, r| 8.0 * sine(300.0, i, r)),
        ),
        ("square 1e30", Box::new(square(200.0, 1e30))),
        ("square f32::MAX", Box::new(square(200.0, f32::MAX))),
        (
            "garbage (NaN, MAX, -MAX, denormal, Inf, 1e20)",
            Box::new(|i, _| {
                [
                    f32::NAN,
                    f32::MAX,
                    -f32::MAX,
                    1e-40,
                    f32::INFINITY,
                    1e20,
                    0.5,
                ][i % 7]
            }),
        ),
    ]
}

#[test]
fn extreme_signals_give_finite_bounded_output_and_the_stream_recovers() {
    // 1.5 s of signal with a 0.5 s extreme segment from 0.25 s. Output finite and at most
    // twice the largest (clamped) input; from 4 windows after the segment has passed
    // through the latency, output bit-identical to a run whose segment was silence.
    let rate = 48_000;
    let n = 3 * rate as usize / 2;
    let (s0, s1) = (rate as usize / 4, 3 * rate as usize / 4);
    let base = speechy(n, rate, 3);
    let out = |x: &[f32]| {
        let cfg = EngineConfig::new(rate, 512, 1, RunMode::Offline);
        let (mut e, _w) = synthetic(cfg);
        e.set_params_immediate(EngineParams::default());
        let y = run_mono(&mut e, x, &[512, 31]);
        (y, e.latency_samples(), e.grid().win)
    };
    let mut quiet = base.clone();
    quiet[s0..s1].fill(0.0);
    let (y_quiet, latency, win) = out(&quiet);
    let settled = s1 + latency + 4 * win;
    for (name, f) in extreme_segments() {
        let mut x = base.clone();
        for (k, v) in x[s0..s1].iter_mut().enumerate() {
            *v = f(k, rate);
        }
        let (y, _, _) = out(&x);
        assert!(y.iter().all(|v| v.is_finite()), "{name}: non-finite output");
        let in_peak = x
            .iter()
            .filter(|v| v.is_finite())
            .fold(0.0f32, |a, v| a.max(v.abs().min(MAX_INPUT)));
        let out_peak = y.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        println!(
            "{name}: output peak {out_peak:.3e} for input peak {in_peak:.3e} ({:.2}x); \
             identical to the silent-segment run from sample {} (segment ends {s1}, \
             latency {latency})",
            out_peak / in_peak,
            differs_until(&y, &y_quiet)
        );
        assert!(out_peak <= 2.0 * in_peak, "{name}: output peak {out_peak}");
        assert_eq!(
            differs_until(&y[settled..], &y_quiet[settled..]),
            0,
            "{name}: the stream did not recover"
        );
    }
}

#[test]
fn denormal_input_is_flushed_at_the_input_and_its_process_time_is_reported() {
    // Denormal input comes out as exact zeros (nothing of it reaches the dry path, the STFT,
    // the overlap-add or the model). Process times for normal noise, denormal noise and tiny
    // normal noise (1e-37, whose FFT products are denormal) are printed as ratios; nothing
    // is asserted about time.
    let rate = 48_000;
    let n = 2 * rate as usize;
    let cfg = EngineConfig::new(rate, 512, 2, RunMode::Realtime);
    let (mut e, _w) = synthetic(cfg);
    let den: Vec<f32> = (0..n).map(denormal).collect();
    let y = run(&mut e, &[den.clone(), den.clone()], &[512]);
    assert!(
        y.iter().flatten().all(|v| v.to_bits() == 0),
        "denormal input must give exact +0.0 output"
    );
    // Timing: the engine alone (no worker: unity masks), so only the audio thread is timed.
    let signals: [(&str, Vec<f32>); 3] = [
        ("normal noise (0.5)", noise(n, 5, 0.5)),
        ("denormal noise", den),
        ("tiny normal noise (1e-37)", noise(n, 6, 1e-37)),
    ];
    let mut times = Vec::new();
    for (name, x) in &signals {
        let input = [x.clone(), x.clone()];
        let mut best = f64::MAX;
        for _ in 0..3 {
            let mut e = Engine::new(EngineConfig::new(rate, 512, 2, RunMode::Realtime), 2, 0);
            let t = Instant::now();
            let y = run(&mut e, &input, &[512]);
            best = best.min(t.elapsed().as_secs_f64());
            assert!(y.iter().flatten().all(|v| v.is_finite()));
        }
        times.push(best);
        println!(
            "process time, {name}: {:.1} ms for {} s of stereo = {:.4} x real time, ratio to \
             normal {:.2}",
            best * 1e3,
            n / rate as usize,
            best / (n as f64 / rate as f64),
            best / times[0]
        );
    }
}

#[test]
fn process_flushes_denormals_inside_and_restores_the_callers_float_mode() {
    // Input just above the smallest normal float, output gain −6 dB: without flush-to-zero
    // most output samples (≈ 0.5 × a normal near f32::MIN_POSITIVE) and many STFT products are
    // subnormal. `Engine::process` runs with FTZ/DAZ, so no output sample may be subnormal; and
    // the caller's float mode must be untouched afterwards (a subnormal product still comes out
    // subnormal on this thread).
    let rate = 48_000;
    let n = rate as usize;
    let cfg = EngineConfig::new(rate, 512, 2, RunMode::Realtime);
    let mut e = Engine::new(cfg, 2, 0);
    let mut p = e.params();
    p.wet = 0.5;
    p.output_gain_db = -6.0;
    e.set_params_immediate(p);
    let tiny: Vec<f32> = noise(n, 7, 1.0)
        .iter()
        .map(|v| v.signum() * f32::MIN_POSITIVE * (1.0 + v.abs()))
        .collect();
    assert!(
        tiny.iter().all(|v| v.is_normal()),
        "the input itself is normal"
    );
    let y = run(&mut e, &[tiny.clone(), tiny], &[512]);
    let subnormal = y.iter().flatten().filter(|v| v.is_subnormal()).count();
    let nonzero = y.iter().flatten().filter(|v| **v != 0.0).count();
    println!(
        "output: {subnormal} subnormal, {nonzero} non-zero of {}",
        2 * n
    );
    assert_eq!(subnormal, 0, "subnormal samples came out of process");
    let half = std::hint::black_box(f32::MIN_POSITIVE) * std::hint::black_box(0.5f32);
    assert!(
        half.is_subnormal(),
        "process left flush-to-zero set on the caller's thread"
    );
}

#[cfg(target_arch = "x86_64")]
/// Sets (or clears) FTZ and DAZ in MXCSR on this thread; returns the previous MXCSR.
fn set_flush_to_zero(on: bool, restore: Option<u32>) -> u32 {
    let mut csr: u32 = 0;
    // SAFETY: reading and writing MXCSR only changes this thread's float rounding/flush flags.
    unsafe {
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr);
        let new = match restore {
            Some(r) => r,
            None if on => csr | (1 << 15) | (1 << 6),
            None => csr & !((1 << 15) | (1 << 6)),
        };
        std::arch::asm!("ldmxcsr [{}]", in(reg) &new);
    }
    csr
}

#[cfg(target_arch = "x86_64")]
#[test]
fn dfn3_features_stay_finite_through_long_silence_with_flush_to_zero() {
    // A host that sets FTZ/DAZ on the thread that activates the plugin passes it on to the
    // worker thread (POSIX threads inherit the float environment). DFN3's unit-norm running
    // mean then decayed to exactly 0 after ~78 s of digital silence and the features became
    // 0/0 = NaN, which would poison the GRU states for good (fixed in features.rs).
    use voxsift_models::dfn3::{erb, features::Features, FFT_SIZE, HOP, NB_DF, NB_ERB};
    let widths = erb::band_widths(48_000, FFT_SIZE, NB_ERB, 2);
    let alpha = (-(HOP as f64) / 48_000.0).exp() as f32;
    let mut erb_f = vec![0.0; NB_ERB];
    let mut spec_f = vec![0.0; 2 * NB_DF];
    let silence = vec![Complex32::default(); FFT_SIZE / 2 + 1];
    let tone: Vec<Complex32> = (0..FFT_SIZE / 2 + 1)
        .map(|k| Complex32::new(0.01 / (1 + k) as f32, 0.0))
        .collect();
    for ftz in [true, false] {
        let old = set_flush_to_zero(ftz, None);
        let mut f = Features::new(&widths, NB_DF, alpha);
        let mut first_bad = None;
        // 200 s of silence, then a signal again.
        for i in 0..20_000 + 100 {
            let x = if i < 20_000 { &silence } else { &tone };
            f.compute(x, &mut erb_f, &mut spec_f);
            if first_bad.is_none() && erb_f.iter().chain(&spec_f).any(|v| !v.is_finite()) {
                first_bad = Some(i);
            }
        }
        set_flush_to_zero(false, Some(old));
        assert_eq!(first_bad, None, "FTZ {ftz}: non-finite features at frame");
        assert!(spec_f.iter().any(|v| *v != 0.0), "the signal after silence");
    }
}

#[test]
fn dfn3_recovers_from_bad_input_bursts() {
    // DFN3, offline, the 7.7 s demo mix with a 300 ms burst at 1 s. A burst of 100 ms NaN,
    // 100 ms ±Inf and 100 ms denormals gives output bit-identical to a zero burst, so nothing
    // non-finite reaches the model's state. Loud bursts give finite output and the model
    // comes back by itself: the difference to the zero-burst output (printed per second from
    // the burst's end) fades. A full-scale square wave is below -35 dB in the last second;
    // garbage clamped to +120 dBFS takes longer (the model's running magnitude mean, time
    // constant 1 s, has to fall by ~9 orders of magnitude), so it is only asserted to be
    // 6 dB lower in the last second than one second after the burst.
    let rate = 48_000usize;
    let x = demo(7.7);
    let (b0, b1) = (rate, rate + rate * 3 / 10);
    let opts = RenderOptions {
        model: ModelChoice::Dfn3,
        blocks: vec![512],
        ..RenderOptions::default()
    };
    let render_with = |f: &dyn Fn(usize) -> f32| {
        let mut y = x.clone();
        for (i, v) in y[b0..b1].iter_mut().enumerate() {
            *v = f(i);
        }
        render(&[y], rate as u32, &opts, |_, _| {})
            .expect("DFN3 renders (needs ONNX Runtime)")
            .channels
            .swap_remove(0)
    };
    let reference = render_with(&|_| 0.0);
    let tenth = rate / 10;
    let y = render_with(&|i| match i / tenth {
        0 => f32::NAN,
        1 if i % 2 == 0 => f32::INFINITY,
        1 => f32::NEG_INFINITY,
        _ => denormal(i),
    });
    assert_eq!(
        differs_until(&y, &reference),
        0,
        "a NaN/Inf/denormal burst: DFN3 output differs from a zero burst"
    );
    let per_second = |y: &[f32]| -> Vec<f64> {
        (b1..x.len())
            .step_by(rate)
            .map(|s| {
                let e = (s + rate).min(x.len());
                diff_db(&y[s..e], &reference[s..e])
            })
            .collect()
    };
    // (name, burst sample i, bound on the last second in dB)
    type Loud<'a> = (&'a str, &'a dyn Fn(usize) -> f32, f64);
    let loud: [Loud; 2] = [
        (
            "full-scale 100 Hz square",
            &|i| if (i / 240) % 2 == 0 { 1.0 } else { -1.0 },
            -35.0,
        ),
        (
            "garbage (MAX, -MAX, 1e30, NaN)",
            &|i| [f32::MAX, -f32::MAX, 1e30, f32::NAN][i % 4],
            f64::MAX,
        ),
    ];
    for (name, f, bound) in loud {
        let y = render_with(f);
        assert!(y.iter().all(|v| v.is_finite()), "{name}: non-finite output");
        let d = per_second(&y);
        let last = diff_db(&y[x.len() - rate..], &reference[x.len() - rate..]);
        let shown: Vec<String> = d.iter().map(|v| format!("{v:.1}")).collect();
        println!(
            "DFN3 after a {name} burst: difference to the zero-burst output per second from \
             the burst's end, dB: {}; last second {last:.1} dB",
            shown.join(", ")
        );
        assert!(last < bound, "{name}: {last:.1} dB in the last second");
        assert!(
            last < d[1] - 6.0,
            "{name}: not recovering ({d:?}, last {last:.1})"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Odd hosts
// ---------------------------------------------------------------------------------------------

#[test]
fn impulse_comes_out_at_the_reported_latency_at_every_rate_and_layout() {
    for rate in RATES {
        for channels in [1usize, 2] {
            let cfg = EngineConfig::new(rate, 256, channels, RunMode::Offline);
            let (mut e, _w) = synthetic(cfg);
            e.set_params_immediate(unity());
            let latency = e.latency_samples();
            let at = [1_234 + rate as usize / 10, 777 + rate as usize / 7];
            let len = at[1] + latency + rate as usize / 10;
            let x: Vec<Vec<f32>> = (0..channels)
                .map(|c| {
                    let mut v = vec![0.0; len];
                    v[at[c]] = 1.0;
                    v
                })
                .collect();
            let y = run(&mut e, &x, &[256, 1, 0, 100, 37]);
            for c in 0..channels {
                assert_eq!(
                    peak(&y[c]) as i64 - at[c] as i64,
                    latency as i64,
                    "{rate} Hz, {channels} ch, channel {c}"
                );
            }
        }
    }
}

#[test]
fn every_rate_block_pattern_and_layout_runs_and_offline_is_block_invariant() {
    // Rates 8-192 kHz, mono and stereo, max block 8192, fixed blocks of 1 and 8192, blocks
    // that change size every call, zero-length calls: no panic, finite output, silence before
    // the latency; offline every pattern gives bit-identical output; realtime (unpaced) runs.
    let patterns: [&[usize]; 4] = [
        &[8192],
        &[1, 0, 7, 0],
        &[3, 8192, 0, 480, 17, 1000],
        &[441, 1, 2048],
    ];
    for rate in RATES {
        for channels in [1usize, 2] {
            let n = rate as usize / 4;
            let x: Vec<Vec<f32>> = (0..channels)
                .map(|c| speechy(n, rate, 10 + c as u64))
                .collect();
            let mut reference: Option<Vec<Vec<f32>>> = None;
            for p in patterns {
                let cfg = EngineConfig::new(rate, 8192, channels, RunMode::Offline);
                let (mut e, _w) = synthetic(cfg);
                let l = e.latency_samples();
                let y = run(&mut e, &x, p);
                assert!(y.iter().flatten().all(|v| v.is_finite()));
                assert!(y.iter().all(|c| c[..l.min(n)].iter().all(|v| *v == 0.0)));
                match &reference {
                    None => reference = Some(y),
                    Some(r) => assert!(
                        y == *r,
                        "{rate} Hz {channels} ch: blocks {p:?} differ from {:?}",
                        patterns[0]
                    ),
                }
            }
            let cfg = EngineConfig::new(rate, 8192, channels, RunMode::Realtime);
            let (mut e, _w) = synthetic(cfg);
            let y = run(&mut e, &x, &[1, 8192, 0, 64]);
            assert!(y.iter().flatten().all(|v| v.is_finite()));
        }
    }
}

#[test]
fn empty_calls_extra_channels_and_oversized_blocks_are_harmless() {
    let rate = 48_000;
    let x = vec![speechy(24_000, rate, 21), speechy(24_000, rate, 22)];
    let cfg = EngineConfig::new(rate, 256, 2, RunMode::Offline);
    let reference = {
        let (mut e, _w) = synthetic(cfg);
        run(&mut e, &x, &[256])
    };
    // Zero-length blocks and calls with no channels at all between the real ones.
    let (mut e, _w) = synthetic(cfg);
    let mut out = vec![Vec::new(), Vec::new()];
    for (k, (l, r)) in x[0].chunks(256).zip(x[1].chunks(256)).enumerate() {
        e.process(&mut []);
        e.process(&mut [&mut [][..], &mut [][..]]);
        let (mut a, mut b) = (l.to_vec(), r.to_vec());
        if k % 2 == 0 {
            e.process(&mut [&mut a[..], &mut b[..]]);
        } else {
            // A third channel the engine was not configured for is silenced.
            let mut extra = vec![1.0f32; a.len()];
            e.process(&mut [&mut a[..], &mut b[..], &mut extra[..]]);
            assert!(extra.iter().all(|v| *v == 0.0));
        }
        out[0].extend(a);
        out[1].extend(b);
    }
    assert!(
        out == reference,
        "empty calls or an extra channel changed the output"
    );
    // Fewer channels than configured, and blocks far beyond max_block (a host breaking its
    // promise) in realtime: no panic, finite output, the same latency.
    let cfg = EngineConfig::new(rate, 256, 2, RunMode::Realtime);
    let (mut e, _w) = synthetic(cfg);
    let l = e.latency_samples();
    let mut mono = x[0].clone();
    e.process(&mut [&mut mono[..1000]]);
    let y = run(&mut e, &x, &[4096, 8192, 1]);
    assert!(mono.iter().chain(y.iter().flatten()).all(|v| v.is_finite()));
    assert_eq!(e.latency_samples(), l);
}

/// Deterministic test signal by absolute sample index (cheap, for an hour of audio): noise
/// with a triangular envelope of period 0.37 s, plus an impulse at `impulse`.
fn hour_sample(i: u64, impulse: u64) -> f32 {
    if i == impulse {
        return 1.0;
    }
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i >> 7);
    let nz = ((h >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
    let period = 17_760u64; // 0.37 s at 48 kHz
    let ph = (i % period) as f32 / period as f32;
    let env = 0.02 + 0.1 * (1.0 - (2.0 * ph - 1.0).abs());
    nz * env
}

#[test]
fn an_hour_of_audio_has_no_drift() {
    // One hour at 48 kHz through the synthetic model, offline, 8192-sample blocks. Late masks
    // stay 0; an impulse 5 s before the end comes out exactly `latency` later; and the last
    // 5 s are bit-identical to a fresh engine fed only the last 10 s, so after 172.8 million
    // samples (360 000 frames) the frame grid, masks and overlap-add are exactly where a
    // fresh start puts them.
    let rate = 48_000u64;
    let total = 3_600 * rate;
    let tail_from = total - 10 * rate; // a multiple of the hop
    let impulse = total - 5 * rate + 123;
    let block = 8192usize;
    let cfg = EngineConfig::new(rate as u32, block, 1, RunMode::Offline);
    let started = Instant::now();
    let tail = |from: u64| -> (Vec<f32>, usize, u64) {
        let (mut e, w) = synthetic(cfg);
        e.set_params_immediate(unity());
        let l = e.latency_samples();
        let mut buf = vec![0.0f32; block];
        let mut kept = Vec::with_capacity(((total - tail_from) as usize) + l);
        let mut pos = from;
        // Run `latency` samples past the end so the tail's output is complete.
        while pos < total + l as u64 {
            let n = (block as u64).min(total + l as u64 - pos) as usize;
            for (k, v) in buf[..n].iter_mut().enumerate() {
                let i = pos + k as u64;
                *v = if i < total {
                    hour_sample(i, impulse)
                } else {
                    0.0
                };
            }
            e.process(&mut [&mut buf[..n]]);
            // Keep output for input samples >= tail_from.
            for (k, v) in buf[..n].iter().enumerate() {
                if pos + k as u64 >= tail_from + l as u64 {
                    kept.push(*v);
                }
            }
            pos += n as u64;
        }
        let late = w.shared().late_masks.load(Ordering::Relaxed) + e.is_failed() as u64;
        (kept, l, late)
    };
    let (long, l, late) = tail(0);
    let long_secs = started.elapsed().as_secs_f64();
    let (fresh, _, late_fresh) = tail(tail_from);
    assert_eq!(late + late_fresh, 0, "late masks or a failure offline");
    let imp = (impulse - tail_from) as usize;
    assert_eq!(
        peak(&long),
        imp,
        "the impulse after an hour is not at the latency {l}"
    );
    let from = 5 * rate as usize - 1000;
    assert_eq!(
        differs_until(&long[from..], &fresh[from..]),
        0,
        "the last 5 s after an hour differ from a fresh run"
    );
    println!(
        "one hour at 48 kHz offline, blocks of 8192: {long_secs:.1} s ({:.0}x real time), \
         latency {l}, impulse exact, tail bit-identical to a fresh run",
        3600.0 / long_secs
    );
}

// ---------------------------------------------------------------------------------------------
// Starvation
// ---------------------------------------------------------------------------------------------

#[test]
fn a_starved_worker_never_holds_up_the_audio_thread_and_output_stays_continuous() {
    // 1. The worker sleeps 20 ms per 10 ms hop; process is called as fast as it returns. The
    //    counters show process never waited: it synthesized every frame while the worker had
    //    produced few or none of their masks, and each missing mask was counted late.
    // 2. Starved on and off: process is called every 3 ms (10 ms blocks) and the worker
    //    sleeps 20 ms per hop during every other 100 ms of audio, so fresh masks and held
    //    stale ones alternate. The output's largest sample step stays within 1.2x the
    //    input's (no clicks at the switches); the offline render's is printed beside it.
    // 3. Impulses while starved still come out exactly at the (unchanged) latency.
    let rate = 48_000;
    let cfg = EngineConfig::new(rate, 480, 1, RunMode::Realtime);
    let x = speechy(2 * rate as usize, rate, 31);
    let (mut e, w) = synthetic(cfg);
    let l = e.latency_samples();
    let counters = |w: &Worker| {
        let s = w.shared();
        (
            s.masks_produced.load(Ordering::Relaxed),
            s.late_masks.load(Ordering::Relaxed),
            s.dropped_hops.load(Ordering::Relaxed),
        )
    };
    w.shared().throttle_us.store(20_000, Ordering::Relaxed);
    let y = run_mono(&mut e, &x, &[480]);
    let (produced, late, dropped) = counters(&w);
    let synthesized = e.frames_synthesized();
    println!(
        "starved, unpaced: {synthesized} frames synthesized, {produced} masks produced, \
         {late} late, {dropped} hops dropped"
    );
    assert!(produced < synthesized / 2, "the worker was not starved");
    assert!(
        late + produced >= synthesized,
        "frames without a mask were not counted late"
    );
    assert!(y.iter().all(|v| v.is_finite()));
    drop(w);
    // 2. Half starved, paced.
    let offline = {
        let (mut e, _w) = synthetic(EngineConfig::new(rate, 480, 1, RunMode::Offline));
        run_mono(&mut e, &x, &[480])
    };
    let (mut e, w) = synthetic(cfg);
    let mut y = Vec::new();
    for (k, b) in x.chunks(480).enumerate() {
        let throttle = if (k / 10) % 2 == 0 { 0 } else { 20_000 };
        w.shared().throttle_us.store(throttle, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(3));
        let mut buf = b.to_vec();
        e.process(&mut [&mut buf[..]]);
        y.extend(buf);
    }
    let (produced, late, dropped) = counters(&w);
    println!(
        "starved on and off, paced: {} frames, {produced} masks produced, {late} late, {dropped} hops \
         dropped; largest sample step: output {:.4}, offline output {:.4}, input {:.4}",
        e.frames_synthesized(),
        max_step(&y),
        max_step(&offline),
        max_step(&x)
    );
    assert!(
        late > 0 && produced > 0,
        "not a mix of fresh and held masks"
    );
    assert!(y.iter().all(|v| v.is_finite()));
    assert!(max_step(&y) <= 1.2 * max_step(&x), "a click in the output");
    assert_eq!(e.latency_samples(), l);
    // 3. Impulses every 0.25 s while starved.
    w.shared().throttle_us.store(20_000, Ordering::Relaxed);
    let mut imp = vec![0.0f32; rate as usize];
    let at: Vec<usize> = (1..4).map(|k| k * rate as usize / 4).collect();
    for &a in &at {
        imp[a] = 1.0;
    }
    e.reset();
    let yi = run_mono(&mut e, &imp, &[480]);
    for (k, &a) in at.iter().enumerate() {
        let end = at.get(k + 1).map_or(yi.len(), |n| n + l).min(yi.len());
        assert_eq!(peak(&yi[a..end]), l, "impulse at {a} while starved");
    }
}

#[test]
fn after_starvation_the_realtime_output_is_the_offline_output_again() {
    // Starve the worker (30 ms per hop, unpaced) for 1 s, then let it run and process at a
    // pace it can follow. Once the late-mask counter stops moving, the realtime output is
    // bit-identical to the offline render of the same input: masks are back on their frames.
    // max_block 4800 (10 blocks of 480) gives the worker 100 ms of audio, 20 ms at this pace,
    // to deliver each mask, so a loaded machine does not make masks late after the release.
    let rate = 48_000;
    let x = speechy(8 * rate as usize, rate, 41);
    let offline = {
        let (mut e, _w) = synthetic(EngineConfig::new(rate, 4800, 1, RunMode::Offline));
        e.set_params_immediate(EngineParams::default());
        run_mono(&mut e, &x, &[480])
    };
    let (mut e, w) = synthetic(EngineConfig::new(rate, 4800, 1, RunMode::Realtime));
    e.set_params_immediate(EngineParams::default());
    let late = || w.shared().late_masks.load(Ordering::Relaxed);
    w.shared().throttle_us.store(30_000, Ordering::Relaxed);
    let second = rate as usize;
    let mut y = run_mono(&mut e, &x[..second], &[480]);
    let starved = late();
    assert!(starved > 0, "no late masks while starved");
    w.shared().throttle_us.store(0, Ordering::Relaxed);
    // Half-second chunks, 2 ms between 10 ms blocks (5x real time).
    let chunk = second / 2;
    let mut history = vec![late()];
    let mut synced_at = None;
    for c in (second..x.len()).step_by(chunk) {
        for b in x[c..c + chunk].chunks(480) {
            std::thread::sleep(Duration::from_millis(2));
            let mut buf = b.to_vec();
            e.process(&mut [&mut buf[..]]);
            y.extend(buf);
        }
        history.push(late());
        let k = history.len() - 1;
        // No late mask in this chunk nor the one before (a late frame's samples spill over).
        if k >= 2 && history[k] == history[k - 2] {
            assert_eq!(
                differs_until(&y[c..c + chunk], &offline[c..c + chunk]),
                0,
                "chunk at {c}: realtime differs from offline although no mask was late"
            );
            synced_at = Some(c);
            break;
        }
    }
    println!(
        "starved: {starved} late masks; late-mask counter per 0.5 s chunk after recovery: \
         {history:?}; bit-identical to offline in the chunk from {:?} s",
        synced_at.map(|c| c as f64 / rate as f64)
    );
    assert!(
        synced_at.is_some(),
        "late masks kept coming after recovery: {history:?}"
    );
}

#[test]
fn a_throttled_offline_render_is_only_slower() {
    // Offline, the same throttle only makes the render slower: output bit-identical with the
    // worker at full speed, slowed by 500 us per hop, and toggling every block.
    let rate = 44_100;
    let x = [
        speechy(rate as usize, rate, 51),
        speechy(rate as usize, rate, 52),
    ];
    let mut cfg = EngineConfig::new(rate, 512, 2, RunMode::Offline);
    cfg.channel_mode = ChannelMode::Independent;
    let mut outs = Vec::new();
    for throttle in [0u32, 500, u32::MAX] {
        let (mut e, w) = synthetic(cfg);
        let mut out = vec![Vec::new(), Vec::new()];
        for (k, (a, b)) in x[0].chunks(512).zip(x[1].chunks(512)).enumerate() {
            let t = if throttle == u32::MAX {
                [0, 2_000][k % 2]
            } else {
                throttle
            };
            w.shared().throttle_us.store(t, Ordering::Relaxed);
            let (mut a, mut b) = (a.to_vec(), b.to_vec());
            e.process(&mut [&mut a[..], &mut b[..]]);
            out[0].extend(a);
            out[1].extend(b);
        }
        assert!(!e.is_failed());
        assert_eq!(w.shared().late_masks.load(Ordering::Relaxed), 0);
        outs.push(out);
    }
    assert!(outs[1] == outs[0], "a throttled offline render differs");
    assert!(
        outs[2] == outs[0],
        "a variably throttled offline render differs"
    );
}

// ---------------------------------------------------------------------------------------------
// Faults: model files
// ---------------------------------------------------------------------------------------------

/// A copy of the stateful DFN3 graphs in `root/name`, changed by `edit`. (Copies, never
/// links: the edits truncate and overwrite files.)
fn model_dir(root: &Scratch, name: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    voxsift_testkit::dfn3_model_dir(&root.0, name, edit)
}

/// The broken model directories, in `root`: (what is wrong, directory, texts the error must
/// contain).
fn broken_model_dirs(root: &Scratch) -> Vec<(&'static str, PathBuf, [&'static str; 2])> {
    let half = |f: &Path| std::fs::metadata(f).map(|m| m.len() / 2).unwrap_or(0);
    vec![
        (
            "erb_dec.onnx missing",
            model_dir(root, "missing", |d| {
                std::fs::remove_file(d.join("erb_dec.onnx")).expect("rm")
            }),
            ["cannot read model file", "erb_dec.onnx"],
        ),
        (
            "enc.onnx truncated to half",
            model_dir(root, "trunc-enc", |d| {
                truncate(&d.join("enc.onnx"), half(&d.join("enc.onnx")))
            }),
            ["`enc` could not be loaded", "enc"],
        ),
        (
            "df_dec.onnx truncated to 1000 bytes",
            model_dir(root, "trunc-df", |d| truncate(&d.join("df_dec.onnx"), 1000)),
            ["`df_dec` could not be loaded", "df_dec"],
        ),
        (
            "erb_dec.onnx empty",
            model_dir(root, "empty", |d| truncate(&d.join("erb_dec.onnx"), 0)),
            ["`erb_dec` could not be loaded", "erb_dec"],
        ),
        (
            "enc.onnx is random bytes",
            model_dir(root, "garbage", |d| {
                let bytes: Vec<u8> = noise(4096, 9, 1.0)
                    .iter()
                    .map(|v| (v.to_bits() >> 7) as u8)
                    .collect();
                std::fs::write(d.join("enc.onnx"), bytes).expect("write")
            }),
            ["`enc` could not be loaded", "enc"],
        ),
        (
            "enc.onnx in place of erb_dec.onnx",
            model_dir(root, "swapped", |d| {
                std::fs::copy(d.join("enc.onnx"), d.join("erb_dec.onnx")).expect("cp");
            }),
            ["`erb_dec` does not match", "input"],
        ),
        (
            "df_dec.onnx in place of enc.onnx",
            model_dir(root, "swapped-enc", |d| {
                std::fs::copy(d.join("df_dec.onnx"), d.join("enc.onnx")).expect("cp");
            }),
            ["`enc` does not match", "input"],
        ),
    ]
}

#[test]
fn broken_model_files_fail_with_a_clear_message_and_the_engine_passes_audio_through() {
    let root = Scratch::new("broken-models");
    let x = speechy(4_800, 48_000, 61);
    for (name, dir, want) in broken_model_dirs(&root) {
        let opts = RenderOptions {
            model: ModelChoice::Dfn3Dir(dir.clone()),
            ..RenderOptions::default()
        };
        let err = render(std::slice::from_ref(&x), 48_000, &opts, |_, _| {})
            .expect_err(name)
            .to_string();
        println!("{name}: {err}");
        for w in want {
            assert!(err.contains(w), "{name}: {err:?} does not say {w:?}");
        }
        assert!(!err.contains("ONNX Runtime library"), "{name}: {err}");
    }
    // In a live engine such a model means delayed pass-through (shown for the swapped graph;
    // engine.rs shows it for a missing directory).
    let dir = model_dir(&root, "swapped-live", |d| {
        std::fs::copy(d.join("enc.onnx"), d.join("erb_dec.onnx")).expect("cp");
    });
    let rate = 48_000;
    let cfg = EngineConfig::new(rate, 256, 1, RunMode::Realtime);
    let model = ModelChoice::Dfn3Dir(dir);
    let spec = model.spec();
    let mut e = Engine::new(cfg, spec.lookahead, resampler_lag(rate, &spec));
    let (w, link) = Worker::spawn(&cfg, spec, model.factory(1, 1));
    e.connect(link);
    assert_eq!(w.wait_ready(Duration::from_secs(30)), WorkerState::Failed);
    assert!(w.shared().message().contains("does not match"));
    let x = noise(rate as usize / 2, 62, 0.5);
    let y = run_mono(&mut e, &x, &[256]);
    assert!(e.is_failed());
    let l = e.latency_samples();
    assert_eq!(
        differs_until(&y, &delayed(&x, l)),
        0,
        "not exact delayed dry"
    );
}

#[test]
fn corrupt_weights_give_finite_output_or_a_clear_error() {
    // 64 KiB of 0xFF (NaN as float32) written into the middle of each graph, where the weights
    // are: ONNX Runtime may refuse the file, or run it and produce NaN; either way the output
    // is finite (a non-finite gain is replaced by the floor) or the error says which graph.
    let root = Scratch::new("nan-weights");
    let x = demo(1.0);
    for g in ["enc", "erb_dec", "df_dec"] {
        let dir = model_dir(&root, g, |d| {
            let f = d.join(format!("{g}.onnx"));
            let mut bytes = std::fs::read(&f).expect("read");
            let mid = bytes.len() / 2;
            bytes[mid..mid + 65_536].fill(0xFF);
            std::fs::write(&f, bytes).expect("write");
        });
        let opts = RenderOptions {
            model: ModelChoice::Dfn3Dir(dir),
            ..RenderOptions::default()
        };
        match render(std::slice::from_ref(&x), 48_000, &opts, |_, _| {}) {
            Ok(r) => {
                let y = &r.channels[0];
                assert!(y.iter().all(|v| v.is_finite()), "{g}: non-finite output");
                println!(
                    "{g} with NaN weights: loads and runs; output finite, rms {:.2e} (input \
                     {:.2e}); notice: {:?}",
                    (y.iter().map(|v| v * v).sum::<f32>() / y.len() as f32).sqrt(),
                    (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt(),
                    r.notice
                );
            }
            Err(e) => {
                let e = e.to_string();
                println!("{g} with NaN weights: {e}");
                assert!(e.contains(&format!("`{g}`")), "{e}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Faults: the runtime library and the CLI (child processes: runtime init is process-global)
// ---------------------------------------------------------------------------------------------

/// A short WAV to render.
fn short_wav(dir: &Path) -> PathBuf {
    let p = dir.join("in.wav");
    let audio = voxsift_app::io::Audio::new(48_000, vec![speechy(4_800, 48_000, 71)]);
    voxsift_app::io::write_wav(&p, &audio, voxsift_app::io::SampleFormat::F32)
        .expect("writing a WAV");
    p
}

/// Runs `voxsift render` on `input` with extra arguments and environment; returns (exit code,
/// stderr).
fn cli_render(input: &Path, args: &[&str], env: &[(&str, &Path)]) -> (Option<i32>, String) {
    let out = input.with_file_name("out.wav");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxsift"));
    cmd.arg("render")
        .arg(input)
        .arg("-o")
        .arg(&out)
        // No mask cache: a cached entry would let a render succeed without the model or the
        // runtime these tests take away.
        .args(["--force", "--quiet", "--no-mask-cache"])
        .args(args)
        .env_remove("ORT_DYLIB_PATH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("running the voxsift CLI");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A shared library that looks like ONNX Runtime 1.16.3 (too old), built with the system C
/// compiler; `None` when there is none.
fn fake_old_runtime(dir: &Path) -> Option<PathBuf> {
    let src = dir.join("fake_ort.c");
    std::fs::write(
        &src,
        "typedef struct { const void *(*get_api)(unsigned); const char *(*version)(void); } B;\n\
         static const void *api(unsigned v) { (void)v; return 0; }\n\
         static const char *ver(void) { return \"1.16.3\"; }\n\
         static const B base = { api, ver };\n\
         const B *OrtGetApiBase(void) { return &base; }\n",
    )
    .ok()?;
    let lib = dir.join("libonnxruntime.so");
    let ok = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(lib)
}

#[test]
fn the_cli_fails_clearly_without_a_usable_runtime_library() {
    let dir = Scratch::new("runtime");
    let input = short_wav(&dir.0);
    let text = dir.join("not-a-library.so");
    std::fs::write(&text, "this is not a shared library\n").expect("write");
    let mut cases: Vec<(&str, PathBuf, &str)> = vec![
        (
            "missing path",
            dir.join("nowhere/libonnxruntime.so"),
            "not found",
        ),
        ("a text file", text, "could not be loaded"),
    ];
    // A real shared library that is not ONNX Runtime.
    if let Some(libm) = ["/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/libm.so.6"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
    {
        cases.push(("libm", libm, "does not export OrtGetApiBase"));
    }
    match fake_old_runtime(&dir.0) {
        Some(lib) => cases.push(("version 1.16.3", lib, "is version 1.16.3")),
        None => println!("no C compiler: the wrong-version case is not run"),
    }
    for (name, lib, want) in cases {
        let (code, err) = cli_render(&input, &[], &[("VOXSIFT_ORT_LIB", &lib)]);
        println!("VOXSIFT_ORT_LIB = {name}: exit {code:?}: {}", err.trim());
        assert_eq!(code, Some(1), "{name}: {err}");
        for w in [want, "ONNX Runtime", "fetch-runtime"] {
            assert!(err.contains(w), "{name}: {err:?} does not say {w:?}");
        }
    }
    // The synthetic model needs no runtime: a bad VOXSIFT_ORT_LIB does not matter to it.
    let (code, err) = cli_render(
        &input,
        &["--synthetic-model", "2"],
        &[("VOXSIFT_ORT_LIB", &dir.join("nowhere.so"))],
    );
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn the_cli_fails_clearly_with_a_broken_model_dir() {
    let dir = Scratch::new("cli-model");
    let input = short_wav(&dir.0);
    for (name, model, want) in broken_model_dirs(&dir).into_iter().step_by(3) {
        let (code, err) = cli_render(&input, &["--model-dir", &model.to_string_lossy()], &[]);
        println!("--model-dir with {name}: exit {code:?}: {}", err.trim());
        assert_eq!(code, Some(1), "{name}: {err}");
        assert!(err.contains(want[0]), "{name}: {err}");
    }
}

// ---------------------------------------------------------------------------------------------
// Faults: the worker and the model while running
// ---------------------------------------------------------------------------------------------

/// How [`FaultyModel`] misbehaves.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Panics in `push_hop` from this hop on.
    Panic(u64),
    /// Returns an inference error from this hop on.
    Error(u64),
    /// Every third mask is NaN, ±Inf or 1e30.
    BadMasks,
    /// Reports a 44.1 kHz spec to an engine built for 48 kHz.
    WrongSpec,
}

/// The synthetic model with a fault.
struct FaultyModel {
    /// The model it wraps.
    inner: SyntheticModel,
    /// Hops seen.
    hops: u64,
    /// What goes wrong.
    fault: Fault,
}

impl MaskModel for FaultyModel {
    fn spec(&self) -> ModelSpec {
        match self.fault {
            Fault::WrongSpec => SyntheticModel::with_rate(1, 2, 44_100).spec(),
            _ => self.inner.spec(),
        }
    }

    fn reset(&mut self) {
        self.inner.reset();
    }

    fn push_hop(
        &mut self,
        stream: usize,
        hop: &[f32],
        mask: &mut [Complex32],
    ) -> Result<Option<u64>, ModelError> {
        self.hops += 1;
        match self.fault {
            Fault::Panic(at) if self.hops >= at => panic!("test fault at hop {}", self.hops),
            Fault::Error(at) if self.hops >= at => {
                return Err(ModelError::Inference {
                    graph: "faulty".into(),
                    message: format!("test fault at hop {}", self.hops),
                })
            }
            _ => {}
        }
        let r = self.inner.push_hop(stream, hop, mask)?;
        if let (Fault::BadMasks, Some(f)) = (self.fault, r) {
            let bad = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30][(f / 3 % 4) as usize];
            if f % 3 == 0 {
                for (k, m) in mask.iter_mut().enumerate() {
                    *m = if k % 2 == 0 {
                        Complex32::new(bad, 0.0)
                    } else {
                        Complex32::new(0.5, bad)
                    };
                }
            }
        }
        Ok(r)
    }
}

/// An engine at 48 kHz mono connected to a worker running a [`FaultyModel`].
fn faulty_engine(fault: Fault, mode: RunMode) -> (Engine, Worker) {
    let cfg = EngineConfig::new(48_000, 480, 1, mode);
    let spec = SyntheticModel::new(1, 2).spec();
    let factory: ModelFactory = Box::new(move || {
        Ok(Box::new(FaultyModel {
            inner: SyntheticModel::new(1, 2),
            hops: 0,
            fault,
        }) as Box<dyn MaskModel>)
    });
    let mut e = Engine::new(cfg, spec.lookahead, resampler_lag(48_000, &spec));
    let (w, link) = Worker::spawn(&cfg, spec, factory);
    e.connect(link);
    let _ = w.wait_ready(Duration::from_secs(10));
    (e, w)
}

#[test]
fn a_worker_that_panics_or_errors_fails_over_to_delayed_dry() {
    // The model panics (or returns an error) at hop 30. process never panics; the engine
    // notices, the message says why, and the output becomes the input delayed by the latency,
    // bit for bit, once the 20 ms ramp is over (asserted on the last 0.3 s; the point where
    // it became exact is printed).
    let rate = 48_000;
    let x = speechy(rate as usize, rate, 81);
    for fault in [Fault::Panic(30), Fault::Error(30)] {
        for mode in [RunMode::Offline, RunMode::Realtime] {
            let (mut e, w) = faulty_engine(fault, mode);
            e.set_params_immediate(EngineParams::default());
            let l = e.latency_samples();
            // The input, repeated as long as needed.
            let fed = |i: usize| x[i % x.len()];
            let mut y: Vec<f32> = Vec::new();
            let mut failed_at = None;
            let settle = ramp(rate) + 3 * rate as usize / 10;
            while failed_at.is_none_or(|f| y.len() < f + settle) {
                assert!(
                    y.len() < 30 * rate as usize,
                    "{fault:?} {mode:?}: no fail-over"
                );
                if mode == RunMode::Realtime {
                    std::thread::sleep(Duration::from_micros(500));
                }
                let mut buf: Vec<f32> = (y.len()..y.len() + 480).map(fed).collect();
                e.process(&mut [&mut buf[..]]);
                y.extend(buf);
                if failed_at.is_none() && e.is_failed() {
                    failed_at = Some(y.len());
                }
            }
            let fed: Vec<f32> = (0..y.len()).map(fed).collect();
            assert!(
                e.is_failed(),
                "{fault:?} {mode:?}: the engine did not fail over"
            );
            let msg = w.shared().message();
            let want = match fault {
                Fault::Panic(_) => "worker thread panicked: test fault at hop 30",
                _ => "inference failed in `faulty`: test fault at hop 30",
            };
            assert!(msg.contains(want), "{fault:?}: message {msg:?}");
            let dry = delayed(&fed, l);
            let exact_from = differs_until(&y, &dry);
            println!(
                "{fault:?} {mode:?}: \"{msg}\"; delayed dry exact from {:.1} ms after the \
                 fault hop entered",
                (exact_from as f64 - 30.0 * 480.0) * 1000.0 / rate as f64
            );
            let tail = y.len() - 3 * rate as usize / 10;
            assert_eq!(
                differs_until(&y[tail..], &dry[tail..]),
                0,
                "{fault:?} {mode:?}"
            );
            assert!(y.iter().all(|v| v.is_finite()));
        }
    }
}

#[test]
fn non_finite_and_huge_masks_give_finite_output() {
    // A model that returns NaN, ±Inf or 1e30 gains every third frame: the output stays
    // finite (non-finite gains become the floor; 1e30 passes through the arithmetic
    // without overflowing) in both modes.
    let x = speechy(48_000, 48_000, 91);
    for mode in [RunMode::Offline, RunMode::Realtime] {
        let (mut e, w) = faulty_engine(Fault::BadMasks, mode);
        // Realtime is paced (2 ms per 10 ms block) so that masks arrive and are applied.
        let mut y = Vec::new();
        for b in x.chunks(480) {
            if mode == RunMode::Realtime {
                std::thread::sleep(Duration::from_millis(2));
            }
            let mut buf = b.to_vec();
            e.process(&mut [&mut buf[..]]);
            y.extend(buf);
        }
        assert!(!e.is_failed());
        let late = w.shared().late_masks.load(Ordering::Relaxed);
        assert!(late < e.frames_synthesized(), "no mask was applied");
        let bad = y.iter().filter(|v| !v.is_finite()).count();
        let peak = y
            .iter()
            .filter(|v| v.is_finite())
            .fold(0.0f32, |a, v| a.max(v.abs()));
        println!(
            "bad masks, {mode:?}: {} frames, {late} late; {bad} non-finite samples, peak \
             {peak:.3e}",
            e.frames_synthesized()
        );
        assert_eq!(bad, 0, "{mode:?}: non-finite output from bad masks");
        // And the user is told that the model is broken (once).
        let msg = w.shared().message();
        println!("status: {msg}");
        assert_eq!(
            msg.matches("NaN or infinite gains").count(),
            1,
            "{mode:?}: a model returning non-finite masks must be reported once: {msg:?}"
        );
    }
}

#[test]
fn a_model_with_the_wrong_spec_is_refused_and_audio_passes_through() {
    let (mut e, w) = faulty_engine(Fault::WrongSpec, RunMode::Offline);
    assert_eq!(w.shared().state(), WorkerState::Failed);
    let msg = w.shared().message();
    assert!(
        msg.contains("does not match") && msg.contains("44100"),
        "{msg}"
    );
    let x = noise(24_000, 92, 0.5);
    let y = run_mono(&mut e, &x, &[480]);
    assert!(e.is_failed());
    assert_eq!(differs_until(&y, &delayed(&x, e.latency_samples())), 0);
}
