//! Demucs-family separators through ONNX Runtime, on the random-weight graphs in
//! `models/htdemucs-tiny` and `models/denoiser-tiny` and their reference vectors (written by
//! `cargo xtask export-model ... --random-init`; see docs/models.md). Needs the runtime:
//! `cargo xtask test` fetches it.
//!
//! Run with `--nocapture` to see the measured numbers (inference time per window, latency,
//! windowed-vs-full SNR).

mod common;

use common::{noise, repo, run_blocks, unity};
use num_complex::Complex32;
use std::fs;
use std::path::{Path, PathBuf};
use voxsift_engine::{Engine, EngineConfig, RunMode};
use voxsift_models::runtime::SessionOptions;
use voxsift_models::separator::graph::{MonoRunner, SeparatorGraph};
use voxsift_models::separator::spectral::{HybridStft, MaskFrames};
use voxsift_models::separator::window::{Schedule, Scheduler, WindowModel};
use voxsift_models::separator::{
    describe, schedule, schedule_frames, ScheduleOverrides, Separator,
};
use voxsift_models::worker::{resampler_lag, Worker};
use voxsift_models::{MaskModel, ModelError};

fn model_dir(name: &str) -> PathBuf {
    repo().join("models").join(name)
}

/// A raw little-endian f32 reference file.
fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn reference(model: &str, file: &str) -> Vec<f32> {
    read_f32(&model_dir(model).join("reference").join(file))
}

/// Max |a - b| over max |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let peak = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let err = a
        .iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    err / peak
}

/// 10 log10(|b|^2 / |a - b|^2) in dB.
fn snr_db(a: &[f32], b: &[f32]) -> f64 {
    let s: f64 = b.iter().map(|v| (*v as f64).powi(2)).sum();
    let e: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    10.0 * (s / e.max(1e-30)).log10()
}

/// Channel `c` of a planar `[C, n]` buffer.
fn channel(x: &[f32], channels: usize, c: usize) -> &[f32] {
    let n = x.len() / channels;
    &x[c * n..(c + 1) * n]
}

/// A scratch copy of a model folder (the ONNX file and model.toml).
fn scratch_copy(model: &str, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "voxsift-separator-{}-{model}-{tag}",
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch dir");
    for f in ["model.toml", "model.onnx"] {
        fs::copy(model_dir(model).join(f), dir.join(f)).expect("copy model");
    }
    dir
}

fn cpu() -> SessionOptions {
    SessionOptions::default()
}

/// Stereo windows for the mono scheduler: samples interleaved, every duration doubled, the
/// graph fed planar. With no crossfade this is exactly the exporter's `streamed` recipe.
struct Interleaved {
    graph: SeparatorGraph,
    planar: Vec<f32>,
}

impl WindowModel for Interleaved {
    fn run(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), ModelError> {
        let n = input.len() / 2;
        self.planar.clear();
        self.planar.extend(input.iter().step_by(2));
        self.planar.extend(input.iter().skip(1).step_by(2));
        let speech = self.graph.speech(&self.planar, n)?;
        for (i, o) in output.iter_mut().enumerate() {
            *o = speech[(i % 2) * n + i / 2];
        }
        Ok(())
    }
}

fn interleave(planar: &[f32]) -> Vec<f32> {
    let n = planar.len() / 2;
    (0..2 * n).map(|i| planar[(i % 2) * n + i / 2]).collect()
}

fn deinterleave(x: &[f32]) -> Vec<f32> {
    x.iter()
        .step_by(2)
        .chain(x.iter().skip(1).step_by(2))
        .copied()
        .collect()
}

fn doubled(s: Schedule) -> Schedule {
    Schedule {
        window: 2 * s.window,
        step: 2 * s.step,
        lookahead: 2 * s.lookahead,
        crossfade: 2 * s.crossfade,
    }
}

/// Pushes `mix` and enough silence after it through `sep` (stream 0) and returns the masks
/// of the frames of `mix`, by frame.
fn masks_of(sep: &mut Separator, mix: &[f32]) -> Vec<Vec<Complex32>> {
    let spec = sep.spec();
    let frames = mix.len() / spec.hop;
    let mut mask = vec![Complex32::default(); spec.bins];
    let mut out = Vec::new();
    let silence = vec![0.0f32; spec.hop];
    let hops = mix.chunks_exact(spec.hop);
    for (n, hop) in hops
        .chain(std::iter::repeat_n(&silence[..], spec.lookahead))
        .enumerate()
    {
        let got = sep.push_hop(0, hop, &mut mask).expect("push_hop");
        assert_eq!(got, (n as u64).checked_sub(spec.lookahead as u64));
        if got.is_some() && out.len() < frames {
            out.push(mask.clone());
        }
    }
    assert_eq!(out.len(), frames);
    out
}

#[test]
fn descriptions_of_both_models_give_the_static_facts() {
    let h = describe(&model_dir("htdemucs-tiny")).expect("htdemucs-tiny describes");
    assert_eq!(h.name, "htdemucs-tiny");
    assert!(h.version.starts_with("random-init"));
    assert_eq!(
        (h.sample_rate, h.hop(), h.bins(), h.channels),
        (44_100, 441, 442, 2)
    );
    assert_eq!(h.speech_index(), Some(3));
    let d = describe(&model_dir("denoiser-tiny")).expect("denoiser-tiny describes");
    assert_eq!(
        (d.sample_rate, d.hop(), d.bins(), d.channels),
        (16_000, 160, 161, 1)
    );
    assert_eq!(d.window, 0);
    // The default schedules in samples.
    let s = schedule(&h, &ScheduleOverrides::default()).expect("schedule");
    assert_eq!((s.window, s.step, s.lookahead), (44_100, 11_025, 11_025));
    let s = schedule(&d, &ScheduleOverrides::default()).expect("schedule");
    assert_eq!((s.window, s.step, s.lookahead), (16_000, 4_000, 1_024));
}

#[test]
fn hybrid_stft_and_inverse_match_the_exporters_reference() {
    let d = describe(&model_dir("htdemucs-tiny")).expect("describes");
    let w = d.window;
    let mix = reference("htdemucs-tiny", "mix.f32");
    let total = mix.len() / 2;
    let window0: Vec<f32> = (0..2)
        .flat_map(|c| mix[c * total..c * total + w].iter().copied())
        .collect();
    let mut st = HybridStft::new(4096);
    let mut spec = vec![0.0; st.spec_len(2, w)];
    st.spec(&window0, 2, &mut spec);
    let want = reference("htdemucs-tiny", "window0_spec.f32");
    let e = rel_err(&spec, &want);
    eprintln!("htdemucs-tiny STFT vs reference: {e:.2e} of the peak");
    assert!(e <= 1e-4, "spec: {e}");
    // iSTFT of the graph's spectral branch + its waveform branch = torch's forward.
    let spec_out = reference("htdemucs-tiny", "window0_spec_out_speech.f32");
    let wave_out = reference("htdemucs-tiny", "window0_wave_out_speech.f32");
    let mut branch = vec![0.0; 2 * w];
    st.ispec(&spec_out, 2, w, &mut branch);
    let y: Vec<f32> = branch.iter().zip(&wave_out).map(|(a, b)| a + b).collect();
    let want = reference("htdemucs-tiny", "window0_forward_speech.f32");
    let e = rel_err(&y, &want);
    eprintln!("htdemucs-tiny iSTFT(spec_out) + wave_out vs torch forward: {e:.2e}");
    assert!(e <= 1e-4, "ispec: {e}");
}

#[test]
fn graph_with_rust_stft_matches_the_torch_forward() {
    let d = describe(&model_dir("htdemucs-tiny")).expect("describes");
    let mut g = SeparatorGraph::load(&d, &cpu()).expect("loads");
    let mix = reference("htdemucs-tiny", "mix.f32");
    let total = mix.len() / 2;
    for (len, file) in [
        (44_100, "window0_forward_speech.f32"),
        // Shorter than the graph's window: zero-padded at the end, output cropped.
        (13_230, "short_forward_speech.f32"),
    ] {
        let x: Vec<f32> = (0..2)
            .flat_map(|c| mix[c * total..c * total + len].iter().copied())
            .collect();
        let y = g.speech(&x, len).expect("runs").to_vec();
        let e = rel_err(&y, &reference("htdemucs-tiny", file));
        eprintln!("htdemucs-tiny graph + Rust STFT vs torch, {len} samples: {e:.2e}");
        assert!(e <= 1e-4, "{file}: {e}");
    }
    // Every source comes out, the speech one is where the description says.
    let x: Vec<f32> = (0..2)
        .flat_map(|c| mix[c * total..c * total + 1000].iter().copied())
        .collect();
    let all = g.forward(&x, 1000).expect("runs").to_vec();
    assert_eq!(all.len(), 4 * 2 * 1000);
    let speech = g.speech(&x, 1000).expect("runs").to_vec();
    assert_eq!(&all[3 * 2000..], &speech[..]);

    let dn = describe(&model_dir("denoiser-tiny")).expect("describes");
    let mut g = SeparatorGraph::load(&dn, &cpu()).expect("loads");
    let mix = reference("denoiser-tiny", "mix.f32");
    let y = g.speech(&mix[..16_000], 16_000).expect("runs").to_vec();
    let e = rel_err(&y, &reference("denoiser-tiny", "window0_forward.f32"));
    eprintln!("denoiser-tiny graph vs torch, one window: {e:.2e}");
    assert!(e <= 1e-4, "{e}");
    let y = g.speech(&mix, mix.len()).expect("runs").to_vec();
    let e = rel_err(&y, &reference("denoiser-tiny", "full_file.f32"));
    assert!(e <= 1e-4, "full file: {e}");
}

#[test]
fn scheduled_windows_reproduce_the_exporters_streamed_reference() {
    // Hard cuts (no crossfade): the exporter's `streamed_how`, which the scheduler must
    // reproduce to float precision.
    let hard = ScheduleOverrides {
        crossfade_ms: Some(0.0),
        ..Default::default()
    };
    let d = describe(&model_dir("htdemucs-tiny")).expect("describes");
    let s = schedule(&d, &hard).expect("schedule");
    let mut m = Interleaved {
        graph: SeparatorGraph::load(&d, &cpu()).expect("loads"),
        planar: Vec::new(),
    };
    let mix = reference("htdemucs-tiny", "mix.f32");
    let y = Scheduler::run_offline(doubled(s), &mut m, &interleave(&mix)).expect("runs");
    let e = rel_err(
        &deinterleave(&y),
        &reference("htdemucs-tiny", "streamed_speech.f32"),
    );
    eprintln!("htdemucs-tiny scheduled vs streamed reference: {e:.2e}");
    assert!(e <= 1e-4, "htdemucs streamed: {e}");

    let d = describe(&model_dir("denoiser-tiny")).expect("describes");
    let s = schedule(&d, &hard).expect("schedule");
    let mut m = MonoRunner::new(SeparatorGraph::load(&d, &cpu()).expect("loads"));
    let mix = reference("denoiser-tiny", "mix.f32");
    let y = Scheduler::run_offline(s, &mut m, &mix).expect("runs");
    let e = rel_err(&y, &reference("denoiser-tiny", "streamed.f32"));
    eprintln!("denoiser-tiny scheduled vs streamed reference: {e:.2e}");
    assert!(e <= 1e-4, "denoiser streamed: {e}");
}

#[test]
fn crossfaded_windows_stay_close_to_a_full_file_run() {
    // The default schedule (crossfade half a step) against one run over the whole file
    // (denoiser, away from the file's edges; measured 30.8 dB with hard cuts, 32.0 dB with
    // the default crossfade, 34.9 dB with crossfade = step) and against demucs's own
    // long-file processing (htdemucs). The bound leaves about 3 dB of margin.
    let d = describe(&model_dir("denoiser-tiny")).expect("describes");
    let mix = reference("denoiser-tiny", "mix.f32");
    let full = reference("denoiser-tiny", "full_file.f32");
    let edge = 16_000 / 2;
    let inner = edge..mix.len() - edge;
    let mut rows = Vec::new();
    for (what, o) in [
        ("hard cuts", Some(0.0)),
        ("default crossfade", None),
        ("crossfade = step", Some(250.0)),
    ] {
        let ov = ScheduleOverrides {
            crossfade_ms: o,
            ..Default::default()
        };
        let s = schedule(&d, &ov).expect("schedule");
        let mut m = MonoRunner::new(SeparatorGraph::load(&d, &cpu()).expect("loads"));
        let y = Scheduler::run_offline(s, &mut m, &mix).expect("runs");
        let snr = snr_db(&y[inner.clone()], &full[inner.clone()]);
        eprintln!("denoiser-tiny windowed ({what}, {s:?}) vs full file: SNR {snr:.2} dB");
        rows.push(snr);
    }
    assert!(rows.iter().all(|&r| r >= 28.0), "{rows:?}");

    let d = describe(&model_dir("htdemucs-tiny")).expect("describes");
    let mix = reference("htdemucs-tiny", "mix.f32");
    let full = reference("htdemucs-tiny", "full_file_speech.f32");
    let n = mix.len() / 2;
    let edge = 44_100 / 2;
    let mut rows = Vec::new();
    for (what, o) in [("hard cuts", Some(0.0)), ("default crossfade", None)] {
        let ov = ScheduleOverrides {
            crossfade_ms: o,
            ..Default::default()
        };
        let s = schedule(&d, &ov).expect("schedule");
        let mut m = Interleaved {
            graph: SeparatorGraph::load(&d, &cpu()).expect("loads"),
            planar: Vec::new(),
        };
        let y = deinterleave(
            &Scheduler::run_offline(doubled(s), &mut m, &interleave(&mix)).expect("runs"),
        );
        let mut snr = f64::INFINITY;
        for c in 0..2 {
            let (a, b) = (channel(&y, 2, c), channel(&full, 2, c));
            snr = snr.min(snr_db(&a[edge..n - edge], &b[edge..n - edge]));
        }
        let whole = snr_db(&y, &full);
        eprintln!(
            "htdemucs-tiny windowed ({what}, {s:?}) vs apply_model: SNR {snr:.2} dB inside, \
             {whole:.2} dB whole file"
        );
        rows.push(whole);
    }
    // Hard cuts are the exporter's `streamed` recipe, whose whole-file SNR it measured as
    // 10.57 dB; the crossfade may not cost more than 3 dB of that (measured: 9.65 dB). Inside
    // the file the random-weight HTDemucs is erratic (about 0 dB for both: demucs's own
    // segments and ours see different context there), so no tighter claim is made for it.
    assert!((rows[0] - 10.57).abs() < 0.05, "{rows:?}");
    assert!(rows[1] >= rows[0] - 3.0, "{rows:?}");
}

#[test]
fn separator_masks_are_the_offline_masks_deterministic_and_in_unit_range() {
    let dir = model_dir("denoiser-tiny");
    let d = describe(&dir).expect("describes");
    let fixed = ScheduleOverrides {
        margin_ms: Some(50.0),
        ..Default::default()
    };
    let mix = reference("denoiser-tiny", "mix.f32");
    let mut a = Separator::load(&dir, 1, &cpu(), &fixed).expect("loads");
    let spec = a.spec();
    let s = a.schedule();
    assert_eq!(spec.lookahead, schedule_frames(&s, 160) + 5);
    let ma = masks_of(&mut a, &mix);
    // A second instance gives bit-identical masks; so does the first after a reset.
    let mut b = Separator::load(&dir, 1, &cpu(), &fixed).expect("loads");
    assert_eq!(masks_of(&mut b, &mix), ma);
    a.reset();
    assert_eq!(masks_of(&mut a, &mix), ma);
    // Masks are real gains in [0, 1] and not all alike.
    assert!(ma
        .iter()
        .flatten()
        .all(|m| m.im == 0.0 && (0.0..=1.0).contains(&m.re)));
    let max = ma.iter().flatten().fold(0.0f32, |a, m| a.max(m.re));
    let mean: f32 = ma.iter().flatten().map(|m| m.re).sum::<f32>() / (ma.len() * 161) as f32;
    eprintln!("denoiser-tiny masks: mean {mean:.4}, max {max:.4}");
    assert!(max > 0.1 && mean > 0.0, "masks: mean {mean}, max {max}");
    // Frame g of the streamed masks is the mask of the engine's frame g computed offline:
    // the scheduled speech estimate over the whole file, analysed on [(g-1)h, (g+1)h).
    let mut m = MonoRunner::new(SeparatorGraph::load(&d, &cpu()).expect("loads"));
    let v = Scheduler::run_offline(s, &mut m, &mix).expect("runs");
    let mut mf = MaskFrames::new(16_000);
    let mut offline = Vec::new();
    mf.push(&mix, &v, |g, m| {
        assert_eq!(g as usize, offline.len());
        offline.push(m.to_vec());
    });
    assert_eq!(offline, ma);
}

#[test]
fn a_transient_lands_in_the_engine_frames_that_cover_it() {
    // A fake window model (speech = samples above 0.5) through the separator's thread and
    // bookkeeping: a burst in hop 50 gives a non-zero mask in frames 50 and 51 only, the two
    // engine frames ([49h, 51h) and [50h, 52h)) that contain it.
    let gate: Box<dyn WindowModel> = Box::new(|i: &[f32], o: &mut [f32]| {
        for (o, &x) in o.iter_mut().zip(i) {
            *o = if x.abs() > 0.5 { x } else { 0.0 };
        }
        Ok(())
    });
    let s = Schedule {
        window: 16_000,
        step: 4_000,
        lookahead: 1_024,
        crossfade: 2_000,
    };
    let mut sep = Separator::with_model("gate", 16_000, 1, s, 2, gate).expect("starts");
    let h = 160;
    let mut mix = noise(200 * h, 7, 0.2);
    for v in &mut mix[50 * h..51 * h] {
        *v = if *v >= 0.0 { 0.9 } else { -0.9 };
    }
    let masks = masks_of(&mut sep, &mix);
    for (g, m) in masks.iter().enumerate() {
        let sum: f32 = m.iter().map(|v| v.re).sum();
        assert_eq!(sum > 1.0, g == 50 || g == 51, "frame {g}: {sum}");
    }
}

#[test]
fn load_measures_the_margin_and_reports_the_latency() {
    for (model, streams) in [
        ("denoiser-tiny", 1),
        ("htdemucs-tiny", 1),
        ("htdemucs-tiny", 2),
    ] {
        let dir = model_dir(model);
        let sep =
            Separator::load(&dir, streams, &cpu(), &ScheduleOverrides::default()).expect("loads");
        let spec = sep.spec();
        let t = sep.timing();
        let s = sep.schedule();
        assert!(t.window_seconds > 0.0);
        assert_eq!(sep.description().map(|d| d.name.as_str()), Some(model));
        assert_eq!(spec.name, model);
        assert_eq!(t.schedule_frames, schedule_frames(&s, spec.hop));
        assert_eq!(spec.lookahead, t.schedule_frames + t.margin_frames);
        let hop_s = spec.hop as f64 / spec.sample_rate as f64;
        let want = (1.5 * t.window_seconds * streams as f64 / hop_s).ceil() as usize;
        assert_eq!(t.margin_frames, want);
        eprintln!(
            "{model}, {streams} stream(s): window {} ms, step {} ms, lookahead {} ms, \
             crossfade {} ms; one window takes {:.1} ms; margin {} frames; model lookahead \
             {} frames = {:.0} ms; provider {}; notice {:?}",
            1000 * s.window / spec.sample_rate as usize,
            1000.0 * s.step as f64 / spec.sample_rate as f64,
            1000.0 * s.lookahead as f64 / spec.sample_rate as f64,
            1000.0 * s.crossfade as f64 / spec.sample_rate as f64,
            1000.0 * t.window_seconds,
            t.margin_frames,
            spec.lookahead,
            1000.0 * spec.lookahead as f64 * hop_s,
            sep.provider(),
            sep.notice()
        );
    }
}

#[test]
fn a_description_that_does_not_match_its_graph_is_a_clear_error() {
    // The input renamed in the description only.
    let dir = scratch_copy("denoiser-tiny", "renamed");
    let toml = fs::read_to_string(dir.join("model.toml")).expect("read");
    fs::write(
        dir.join("model.toml"),
        toml.replacen("name = \"mix\"", "name = \"audio\"", 1),
    )
    .expect("write");
    let e = Separator::load(&dir, 1, &cpu(), &ScheduleOverrides::default())
        .err()
        .expect("mismatch");
    let m = e.to_string();
    assert!(matches!(e, ModelError::Mismatch { .. }), "{m}");
    assert!(m.contains("input `audio`") && m.contains("`mix`"), "{m}");

    // A consistent description of a half-second window, for a graph fixed at one second.
    let dir = scratch_copy("htdemucs-tiny", "window");
    let toml = fs::read_to_string(dir.join("model.toml")).expect("read");
    let toml = toml
        .replace("window = 44100", "window = 22050")
        .replace("min_window = 44100", "min_window = 22050")
        .replace("frames = 44", "frames = 22")
        .replace("2, 44100]", "2, 22050]")
        .replace("2048, 44]", "2048, 22]")
        .replace("window_ms = 1000", "window_ms = 500");
    fs::write(dir.join("model.toml"), toml).expect("write");
    describe(&dir).expect("the description itself is consistent");
    let e = Separator::load(&dir, 1, &cpu(), &ScheduleOverrides::default())
        .err()
        .expect("mismatch");
    let m = e.to_string();
    assert!(matches!(e, ModelError::Mismatch { .. }), "{m}");
    assert!(
        m.contains("input `mix` shape[2]") && m.contains("22050") && m.contains("44100"),
        "{m}"
    );
}

#[test]
fn missing_or_corrupt_files_are_clear_errors() {
    let dir = scratch_copy("denoiser-tiny", "broken");
    // Corrupt model.toml.
    fs::write(dir.join("model.toml"), "format = 1\nname = [unclosed").expect("write");
    let e = describe(&dir).expect_err("corrupt");
    assert!(matches!(e, ModelError::Description { .. }), "{e}");
    assert!(e.to_string().contains("model.toml"), "{e}");
    // A field missing.
    let good = fs::read_to_string(model_dir("denoiser-tiny").join("model.toml")).expect("read");
    fs::write(
        dir.join("model.toml"),
        good.replace("sample_rate = 16000\n", ""),
    )
    .expect("write");
    let e = describe(&dir).expect_err("missing field");
    assert!(e.to_string().contains("sample_rate"), "{e}");
    // No model.toml.
    fs::remove_file(dir.join("model.toml")).expect("rm");
    let e = Separator::load(&dir, 1, &cpu(), &ScheduleOverrides::default())
        .err()
        .expect("missing");
    assert!(matches!(e, ModelError::Read { .. }), "{e}");
    // A corrupt graph.
    fs::write(dir.join("model.toml"), &good).expect("write");
    fs::write(dir.join("model.onnx"), b"not an onnx graph").expect("write");
    let e = Separator::load(&dir, 1, &cpu(), &ScheduleOverrides::default())
        .err()
        .expect("corrupt graph");
    // Caught by the sha256 check before ONNX Runtime sees it.
    assert!(
        matches!(e, ModelError::Description { .. }) && e.to_string().contains("sha256"),
        "{e}"
    );
    // No graph.
    fs::remove_file(dir.join("model.onnx")).expect("rm");
    let e = Separator::load(&dir, 1, &cpu(), &ScheduleOverrides::default())
        .err()
        .expect("missing graph");
    assert!(
        matches!(e, ModelError::Read { .. }) && e.to_string().contains("model.onnx"),
        "{e}"
    );
    // A schedule the graph cannot run.
    fs::copy(
        model_dir("denoiser-tiny").join("model.onnx"),
        dir.join("model.onnx"),
    )
    .expect("copy");
    let e = Separator::load(
        &dir,
        1,
        &cpu(),
        &ScheduleOverrides {
            window_ms: Some(10.0),
            ..Default::default()
        },
    )
    .err()
    .expect("bad schedule");
    assert!(matches!(e, ModelError::Settings { .. }), "{e}");
}

/// Renders `input` offline through the engine and worker with a separator loaded first (its
/// spec, with the measured margin, sizes the engine), the way render.rs can wire it; returns
/// the output aligned with the input, and the latency.
fn render_separator(
    model: &str,
    input: &[Vec<f32>],
    sample_rate: u32,
    overrides: &ScheduleOverrides,
    blocks: &[usize],
) -> (Vec<Vec<f32>>, usize) {
    let config = EngineConfig::new(sample_rate, 4096, input.len(), RunMode::Offline);
    let sep = Separator::load(&model_dir(model), config.mask_streams(), &cpu(), overrides)
        .expect("loads");
    let spec = sep.spec();
    let mut engine = Engine::new(config, spec.lookahead, resampler_lag(sample_rate, &spec));
    let (worker, link) = Worker::spawn(
        &config,
        spec,
        Box::new(move || Ok(Box::new(sep) as Box<dyn MaskModel>)),
    );
    assert_eq!(
        worker.wait_ready(std::time::Duration::from_secs(60)),
        voxsift_engine::status::WorkerState::Running
    );
    engine.connect(link);
    engine.set_params_immediate(unity());
    let latency = engine.latency_samples();
    let padded: Vec<Vec<f32>> = input
        .iter()
        .map(|c| {
            let mut c = c.clone();
            c.resize(c.len() + latency, 0.0);
            c
        })
        .collect();
    let out = run_blocks(&mut engine, &padded, blocks)
        .into_iter()
        .map(|c| c[latency..].to_vec())
        .collect();
    assert!(!engine.is_failed(), "{}", worker.shared().message());
    (out, latency)
}

#[test]
fn through_the_engine_offline_output_depends_on_neither_blocks_nor_margin() {
    // The denoiser (16 kHz) under a 48 kHz stereo host: resampled, linked channels.
    let n = 48_000;
    let input = vec![noise(n, 3, 0.3), noise(n, 4, 0.3)];
    let small = ScheduleOverrides {
        margin_ms: Some(0.0),
        ..Default::default()
    };
    let large = ScheduleOverrides {
        margin_ms: Some(300.0),
        ..Default::default()
    };
    let (a, la) = render_separator("denoiser-tiny", &input, 48_000, &small, &[512]);
    let (b, lb) = render_separator("denoiser-tiny", &input, 48_000, &large, &[1, 7, 4096, 64]);
    // 30 more frames of lookahead: 30 more hops of latency, and the same output.
    assert_eq!(lb - la, 30 * 480);
    assert!(
        a == b,
        "offline output changed with the margin or the blocks"
    );
    assert!(a.iter().flatten().all(|v| v.is_finite()));
    let energy = |x: &[f32]| x.iter().map(|v| v * v).sum::<f32>();
    // The random-weight model passes some of the input and not all of it.
    let (ein, eout) = (energy(&input[0]), energy(&a[0]));
    assert!(eout > 0.0 && eout < ein, "in {ein}, out {eout}");
}
