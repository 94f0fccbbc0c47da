//! Engine behaviour with the synthetic model (no ONNX Runtime needed): reconstruction,
//! latency, null test, block-size invariance, realtime fallback, no allocation in process.

mod common;

use assert_no_alloc::{assert_no_alloc, AllocDisabler};
use common::{assert_block_size_invariant, noise, unity};
use voxsift_app::render::{render, start, ModelChoice, RenderOptions};
use voxsift_engine::{ChannelMode, Engine, EngineConfig, EngineParams, RunMode};

#[global_allocator]
static ALLOC: AllocDisabler = AllocDisabler;

/// Runs `input` (mono) through `engine` in blocks cycling through `blocks`.
fn run(engine: &mut Engine, input: &[f32], blocks: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(input.len());
    let mut pos = 0;
    let mut b = 0;
    while pos < input.len() {
        let n = blocks[b % blocks.len()].min(input.len() - pos);
        b += 1;
        let mut buf = input[pos..pos + n].to_vec();
        engine.process(&mut [&mut buf[..]]);
        out.extend_from_slice(&buf);
        pos += n;
    }
    out
}

#[test]
fn unit_mask_reconstructs_input_after_latency_at_many_rates() {
    for sr in [8_000, 22_050, 44_100, 48_000, 96_000] {
        let cfg = EngineConfig::new(sr, 512, 1, RunMode::Offline);
        let mut e = Engine::new(cfg, 2, 0);
        e.set_params_immediate(unity());
        let x = noise(sr as usize / 2, sr as u64, 0.5);
        let y = run(&mut e, &x, &[512, 1, 333, 64]);
        let l = e.latency_samples();
        let err = (l..x.len())
            .map(|t| (y[t] - x[t - l]).abs())
            .fold(0.0f32, f32::max);
        assert!(err <= 1e-5, "sr {sr}: max error {err}");
        assert!(
            y[..l].iter().all(|v| v.abs() < 1e-6),
            "sr {sr}: output before latency"
        );
    }
}

#[test]
fn impulse_peaks_exactly_at_reported_latency() {
    for (sr, block) in [(48_000, 128), (44_100, 512), (96_000, 64)] {
        let cfg = EngineConfig::new(sr, block, 1, RunMode::Offline);
        let (mut e, _w) = start(cfg, &ModelChoice::Synthetic(2), 1).expect("synthetic starts");
        e.set_params_immediate(unity());
        let at = 3_000;
        let mut x = vec![0.0; at + e.latency_samples() + 4_000];
        x[at] = 1.0;
        let y = run(&mut e, &x, &[block]);
        let peak = (0..y.len())
            .max_by(|a, b| y[*a].abs().total_cmp(&y[*b].abs()))
            .unwrap_or(0);
        assert_eq!(peak - at, e.latency_samples(), "sr {sr} block {block}");
    }
}

#[test]
fn wet_zero_and_bypass_are_bit_exact_delayed_dry() {
    let x = noise(48_000, 7, 0.9);
    for p in [
        EngineParams {
            wet: 0.0,
            ..unity()
        },
        EngineParams {
            bypass: true,
            ..EngineParams::default()
        },
    ] {
        let opts = RenderOptions {
            params: p,
            model: ModelChoice::Synthetic(2),
            blocks: vec![100, 7, 512],
            ..RenderOptions::default()
        };
        let r = render(std::slice::from_ref(&x), 48_000, &opts, |_, _| {}).expect("renders");
        assert_eq!(
            r.channels[0], x,
            "{p:?} must be the dry signal, bit for bit"
        );
    }
}

#[test]
fn offline_render_is_identical_for_every_block_size() {
    let x = noise(48_000 + 123, 11, 0.5);
    let x2 = noise(48_000 + 123, 12, 0.5);
    let opts = RenderOptions {
        params: EngineParams::default(),
        channel_mode: ChannelMode::Independent,
        model: ModelChoice::Synthetic(2),
        ..RenderOptions::default()
    };
    let reference = assert_block_size_invariant(&[x.clone(), x2], 48_000, &opts);
    // The synthetic model really changed the signal (the test would be empty otherwise).
    assert!(reference[0]
        .iter()
        .zip(&x)
        .any(|(a, b)| (a - b).abs() > 1e-3));
}

#[test]
fn process_never_allocates_in_realtime_mode() {
    for mode in [ChannelMode::Linked, ChannelMode::Independent] {
        let mut cfg = EngineConfig::new(44_100, 256, 2, RunMode::Realtime);
        cfg.channel_mode = mode;
        let (mut e, _w) = start(cfg, &ModelChoice::Synthetic(2), 1).expect("starts");
        let mut l = noise(256, 1, 0.5);
        let mut r = noise(256, 2, 0.5);
        for i in 0..400 {
            let n = [256, 1, 77, 128][i % 4];
            e.set_params(EngineParams {
                wet: (i % 10) as f32 / 10.0,
                beta: 1.0 + (i % 3) as f32,
                floor_db: if i % 2 == 0 { Some(-20.0) } else { None },
                ..EngineParams::default()
            });
            assert_no_alloc(|| e.process(&mut [&mut l[..n], &mut r[..n]]));
        }
    }
}

#[test]
fn realtime_starvation_holds_last_mask_counts_it_and_recovers() {
    let cfg = EngineConfig::new(48_000, 480, 1, RunMode::Realtime);
    let (mut e, w) = start(cfg, &ModelChoice::Synthetic(2), 1).expect("starts");
    let x = noise(48_000 * 3, 5, 0.3);
    // Slow the worker down far below real time for the first half.
    w.shared()
        .throttle_us
        .store(30_000, std::sync::atomic::Ordering::Relaxed);
    let y1 = run(&mut e, &x[..x.len() / 2], &[480]);
    let late = w
        .shared()
        .late_masks
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(late > 0, "a throttled worker must produce late masks");
    assert!(y1.iter().all(|v| v.is_finite()));
    w.shared()
        .throttle_us
        .store(0, std::sync::atomic::Ordering::Relaxed);
    // Pace the rest so the recovered worker keeps up.
    let mut out = Vec::new();
    for chunk in x[x.len() / 2..].chunks(480) {
        std::thread::sleep(std::time::Duration::from_millis(2));
        let mut b = chunk.to_vec();
        e.process(&mut [&mut b[..]]);
        out.extend(b);
    }
    let late_after = w
        .shared()
        .late_masks
        .load(std::sync::atomic::Ordering::Relaxed);
    std::thread::sleep(std::time::Duration::from_millis(50));
    let mut tail = noise(480 * 50, 9, 0.3);
    for chunk in tail.chunks_mut(480) {
        std::thread::sleep(std::time::Duration::from_millis(3));
        e.process(&mut [chunk]);
    }
    let late_end = w
        .shared()
        .late_masks
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        late_end - late_after < 10,
        "masks must come back in sync ({late_after} -> {late_end})"
    );
    assert!(out.iter().all(|v| v.is_finite()));
}

#[test]
fn bad_samples_give_finite_output() {
    let cfg = EngineConfig::new(48_000, 64, 1, RunMode::Offline);
    let (mut e, _w) = start(cfg, &ModelChoice::Synthetic(2), 1).expect("starts");
    let mut x = noise(48_000, 3, 0.5);
    for (i, v) in x.iter_mut().enumerate().take(2000) {
        *v = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e-40][i % 4];
    }
    let y = run(&mut e, &x, &[64]);
    assert!(y.iter().all(|v| v.is_finite()));
    assert!(
        y[20_000..].iter().any(|v| v.abs() > 1e-3),
        "the stream recovers"
    );
}

#[test]
fn a_model_that_fails_to_load_is_a_clear_error() {
    let opts = RenderOptions {
        model: ModelChoice::Dfn3Dir("does/not/exist".into()),
        ..RenderOptions::default()
    };
    let err = render(&[vec![0.0; 4800]], 48_000, &opts, |_, _| {}).expect_err("must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("enc.onnx") || msg.contains("ONNX Runtime"),
        "{msg}"
    );
}

/// Runs stereo `input` offline in blocks of `block`, switching the channel mode at sample
/// `switch_at` (a multiple of `block`).
fn run_with_switch(
    cfg: EngineConfig,
    input: &[Vec<f32>; 2],
    block: usize,
    switch_at: usize,
) -> (Vec<f32>, Vec<f32>, bool) {
    let (mut e, _w) = start(cfg, &ModelChoice::Synthetic(2), 1).expect("starts");
    e.set_params_immediate(EngineParams::default());
    let (mut l, mut r) = (Vec::new(), Vec::new());
    let mut pos = 0;
    while pos < input[0].len() {
        if pos == switch_at {
            e.set_channel_mode(ChannelMode::Independent);
        }
        let n = block.min(input[0].len() - pos);
        let mut a = input[0][pos..pos + n].to_vec();
        let mut b = input[1][pos..pos + n].to_vec();
        e.process(&mut [&mut a[..], &mut b[..]]);
        l.extend_from_slice(&a);
        r.extend_from_slice(&b);
        pos += n;
    }
    (l, r, e.is_failed())
}

#[test]
fn channel_mode_switch_while_running_is_deterministic_offline() {
    let x = [noise(96_000, 21, 0.5), noise(96_000, 22, 0.2)];
    let cfg = EngineConfig::new(48_000, 480, 2, RunMode::Offline);
    let started = std::time::Instant::now();
    let (l1, r1, failed1) = run_with_switch(cfg, &x, 64, 48_000);
    let (l2, r2, failed2) = run_with_switch(cfg, &x, 480, 48_000);
    // An offline wait for a mask that never comes would end in the 30 s fail-over.
    assert!(!failed1 && !failed2, "the switch made the engine fail over");
    assert!(
        started.elapsed().as_secs() < 25,
        "the switch waited for masks"
    );
    assert_eq!(l1, l2, "left differs between block sizes");
    assert_eq!(r1, r2, "right differs between block sizes");
    // Independent masks really differ from the linked ones after the switch: the channels
    // have different levels, so the synthetic model attenuates them differently.
    let (l3, _, _) = run_with_switch(cfg, &x, 480, usize::MAX);
    let lat = 3 * 480 + 4 * 480; // well past the switch plus the latency
    assert_eq!(
        l1[..48_000],
        l3[..48_000],
        "output before the switch changed"
    );
    assert!(
        l1[48_000 + lat..]
            .iter()
            .zip(&l3[48_000 + lat..])
            .any(|(a, b)| a != b),
        "switching to independent masks changed nothing"
    );
}

#[test]
fn reset_gives_the_same_output_for_the_same_input() {
    let x = noise(30_000, 31, 0.5);
    for block in [64, 512] {
        let cfg = EngineConfig::new(48_000, 512, 1, RunMode::Offline);
        let (mut e, w) = start(cfg, &ModelChoice::Synthetic(2), 1).expect("starts");
        // A slow worker leaves masks of the old stream in flight across the reset.
        w.shared()
            .throttle_us
            .store(300, std::sync::atomic::Ordering::Relaxed);
        e.set_params_immediate(EngineParams::default());
        let a = run(&mut e, &x, &[block]);
        // Reset mid-stream too: masks in flight from before must not leak into the new run.
        e.reset();
        let other = noise(5_000, 32, 0.9);
        let _ = run(&mut e, &other, &[block]);
        e.reset();
        let b = run(&mut e, &x, &[block]);
        e.reset();
        let c = run(&mut e, &x, &[block]);
        assert_eq!(a, b, "block {block}: output after reset differs");
        assert_eq!(a, c, "block {block}: output after a second reset differs");
    }
}

#[test]
fn realtime_with_a_failed_worker_is_delayed_dry() {
    let cfg = EngineConfig::new(48_000, 256, 1, RunMode::Realtime);
    let model = ModelChoice::Dfn3Dir("/nonexistent/voxsift-model".into());
    let spec = model.spec();
    let mut e = Engine::new(
        cfg,
        spec.lookahead,
        voxsift_models::worker::resampler_lag(48_000, &spec),
    );
    let (w, link) = voxsift_models::worker::Worker::spawn(&cfg, spec, model.factory(1, 1));
    e.connect(link);
    let _ = w.wait_ready(std::time::Duration::from_secs(10));
    e.set_params_immediate(EngineParams::default());
    let x = noise(48_000, 41, 0.5);
    let y = run(&mut e, &x, &[256]);
    assert!(e.is_failed(), "the engine did not notice the failed worker");
    let l = e.latency_samples();
    // After the 20 ms wet ramp the output is the input delayed by the latency, bit for bit.
    let from = l + 4_800;
    assert_eq!(y[from..], x[from - l..x.len() - l]);
}

/// Offline output of `input` (mono) from a fresh engine and synthetic worker.
fn fresh_offline(rate: u32, input: &[f32], blocks: &[usize]) -> Vec<f32> {
    let cfg = EngineConfig::new(rate, 512, 1, RunMode::Offline);
    let (mut e, _w) = start(cfg, &ModelChoice::Synthetic(2), 1).expect("starts");
    e.set_params_immediate(EngineParams::default());
    run(&mut e, input, blocks)
}

#[test]
fn silence_before_the_first_sound_does_not_change_the_output() {
    // A host's export pre-roll (Ardour 7.3 fed 100 225 samples of silence before the region),
    // or a region that starts later on the timeline: from the first sound on, the offline
    // output is bit-identical to a render that starts at that sound, whatever the amount of
    // silence before it (shorter than the restart threshold too: a new engine counts as having
    // heard silence). 44.1 kHz takes the resampled path.
    let x = noise(20_000, 41, 0.5);
    for rate in [48_000, 44_100] {
        let expected = fresh_offline(rate, &x, &[512]);
        for pre in [1usize, 100, 480, 5_000, 100_225] {
            let mut input = vec![0.0f32; pre];
            input.extend_from_slice(&x);
            let out = fresh_offline(rate, &input, &[512, 97]);
            assert!(
                out[..pre].iter().all(|v| *v == 0.0),
                "{rate} Hz, {pre} samples of silence first: the silence must come out silent"
            );
            assert!(
                out[pre..] == expected[..],
                "{rate} Hz, {pre} samples of silence first: output differs from a render that \
                 starts at the sound"
            );
        }
    }
}

#[test]
fn a_sound_after_long_digital_silence_restarts_the_stream() {
    // Sound A, then exactly `resync_silence()` samples of digital silence, then sound B: the
    // output from B on equals a fresh render of B (the stream restarted silently). One sample
    // less of silence and it does not restart (B then sits on another STFT phase).
    let a = noise(15_001, 42, 0.5);
    let b = noise(12_000, 43, 0.7);
    let cfg = EngineConfig::new(48_000, 512, 1, RunMode::Offline);
    let (probe, _w) = start(cfg, &ModelChoice::Synthetic(2), 1).expect("starts");
    let gap = probe.resync_silence();
    let latency = probe.latency_samples();
    assert_eq!(gap, latency + 2 * probe.grid().win);
    let mut tail_b = b.clone();
    tail_b.extend(std::iter::repeat_n(0.0, latency));
    let expected_b = fresh_offline(48_000, &tail_b, &[512]);
    for silence in [gap, gap - 1] {
        let mut input = a.clone();
        input.extend(std::iter::repeat_n(0.0, silence));
        let head = input.len();
        input.extend_from_slice(&tail_b);
        let out = fresh_offline(48_000, &input, &[256, 512, 33]);
        let expected_a = fresh_offline(48_000, &input[..head], &[512]);
        assert!(
            out[..head] == expected_a[..],
            "silence {silence}: A changed"
        );
        let restarted = out[head..] == expected_b[..];
        assert_eq!(
            restarted,
            silence >= gap,
            "silence {silence} (threshold {gap}): restarted = {restarted}"
        );
    }
}
