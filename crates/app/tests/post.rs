//! The offline post chain: filter responses, loudness normalisation with its true-peak
//! ceiling, presets, and switching each stage.

mod common;

use std::f64::consts::PI;
use voxsift_app::post::{FilterOutcome, LoudnessOutcome, PostChain, PostError};

const FS: u32 = 48_000;

fn sine(freq: f64, amp: f64, seconds: f64, fs: u32) -> Vec<f32> {
    let n = (seconds * f64::from(fs)) as usize;
    (0..n)
        .map(|i| (amp * (2.0 * PI * freq * i as f64 / f64::from(fs)).sin()) as f32)
        .collect()
}

/// Amplitude of the `freq` component over the last `seconds` of `x` (a whole number of
/// periods of every frequency used here), by correlation with a complex exponential.
fn component(x: &[f32], freq: f64, seconds: f64, fs: u32) -> f64 {
    let n = (seconds * f64::from(fs)) as usize;
    let start = x.len() - n;
    let (mut re, mut im) = (0.0, 0.0);
    for (i, &v) in x[start..].iter().enumerate() {
        let ph = 2.0 * PI * freq * (start + i) as f64 / f64::from(fs);
        re += f64::from(v) * ph.cos();
        im += f64::from(v) * ph.sin();
    }
    2.0 * (re * re + im * im).sqrt() / n as f64
}

fn db(x: f64) -> f64 {
    20.0 * x.log10()
}

/// Gain in dB of `chain` at `freq`: a 4 s sine, measured over its last 2 s.
fn response_db(chain: &PostChain, freq: f64, fs: u32) -> f64 {
    let mut ch = vec![sine(freq, 0.25, 4.0, fs)];
    let report = chain.apply(&mut ch, fs).expect("post chain runs");
    assert!(report.loudness.is_none());
    db(component(&ch[0], freq, 2.0, fs) / 0.25)
}

/// 4th-order Butterworth by the bilinear transform, corner prewarped.
fn butterworth4_db(fc: f64, f: f64, fs: f64) -> f64 {
    let r = (PI * fc / fs).tan() / (PI * f / fs).tan();
    -10.0 * (1.0 + r.powi(8)).log10()
}

/// The RBJ high shelf (S = 1) evaluated on the unit circle.
fn rbj_shelf_db(f0: f64, gain_db: f64, f: f64, fs: f64) -> f64 {
    let a = 10f64.powf(gain_db / 40.0);
    let w0 = 2.0 * PI * f0 / fs;
    let (sin, cos) = w0.sin_cos();
    let k = 2.0 * a.sqrt() * sin / 2.0 * 2f64.sqrt();
    let b = [
        a * ((a + 1.0) + (a - 1.0) * cos + k),
        -2.0 * a * ((a - 1.0) + (a + 1.0) * cos),
        a * ((a + 1.0) + (a - 1.0) * cos - k),
    ];
    let den = [
        (a + 1.0) - (a - 1.0) * cos + k,
        2.0 * ((a - 1.0) - (a + 1.0) * cos),
        (a + 1.0) - (a - 1.0) * cos - k,
    ];
    let w = 2.0 * PI * f / fs;
    let eval = |c: [f64; 3]| {
        let re = c[0] + c[1] * w.cos() + c[2] * (2.0 * w).cos();
        let im = -c[1] * w.sin() - c[2] * (2.0 * w).sin();
        (re * re + im * im).sqrt()
    };
    db(eval(b) / eval(den))
}

fn highpass_only() -> PostChain {
    PostChain {
        highpass: true,
        ..PostChain::off()
    }
}

fn shelf_only(db: f32) -> PostChain {
    PostChain {
        shelf: true,
        shelf_db: db,
        ..PostChain::off()
    }
}

/// Integrated loudness and highest true peak (dBTP), measured directly with ebur128.
fn loudness(ch: &[Vec<f32>], fs: u32) -> (f64, f64) {
    let mut m = ebur128::EbuR128::new(
        ch.len() as u32,
        fs,
        ebur128::Mode::I | ebur128::Mode::TRUE_PEAK,
    )
    .expect("meter");
    let refs: Vec<&[f32]> = ch.iter().map(Vec::as_slice).collect();
    m.add_frames_planar_f32(&refs).expect("frames");
    let tp = (0..ch.len() as u32)
        .map(|c| m.true_peak(c).expect("tp"))
        .fold(0.0, f64::max);
    (m.loudness_global().expect("lufs"), db(tp))
}

/// Speech-like test signal: noise shaped by a 4 Hz syllable envelope, with pauses, plus a
/// voiced 150 Hz harmonic series, at about -39 LUFS.
fn speech_like(seconds: f64, seed: u64) -> Vec<f32> {
    let n = (seconds * f64::from(FS)) as usize;
    let noise = common::noise(n, seed, 1.0);
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(FS);
            let syllable = (PI * 4.0 * t).sin().abs().powi(2);
            let pause = if (t % 2.0) > 1.6 { 0.0 } else { 1.0 };
            let voiced: f64 = (1..=8)
                .map(|h| (2.0 * PI * 150.0 * h as f64 * t).sin() / h as f64)
                .sum();
            (0.02 * pause * syllable * (f64::from(noise[i]) + 0.8 * voiced)) as f32
        })
        .collect()
}

#[test]
fn highpass_attenuates_20_hz_as_designed() {
    for fs in [44_100u32, 48_000] {
        let got = response_db(&highpass_only(), 20.0, fs);
        let want = butterworth4_db(70.0, 20.0, f64::from(fs));
        println!("high-pass 70 Hz at {fs} Hz: 20 Hz -> {got:.3} dB (design {want:.3} dB)");
        assert!(
            (want + 43.5).abs() < 0.2,
            "a 24 dB/octave Butterworth is ~-43.5 dB at 20 Hz"
        );
        assert!((got - want).abs() < 0.1, "{got} vs {want}");
    }
}

#[test]
fn highpass_corner_and_passband() {
    let corner = response_db(&highpass_only(), 70.0, FS);
    assert!((corner + 3.01).abs() < 0.05, "corner {corner} dB");
    let pass = response_db(&highpass_only(), 1000.0, FS);
    println!("high-pass 70 Hz: 70 Hz -> {corner:.3} dB, 1 kHz -> {pass:.4} dB");
    assert!(pass.abs() < 0.1, "1 kHz {pass} dB");
    // Another corner.
    let c = PostChain {
        highpass_hz: 120.0,
        ..highpass_only()
    };
    let at_120 = response_db(&c, 120.0, FS);
    assert!((at_120 + 3.01).abs() < 0.05, "{at_120}");
}

#[test]
fn shelf_gain_at_16_khz_is_near_the_set_gain() {
    for (fs, set) in [(48_000u32, -3.0f32), (48_000, 6.0), (44_100, -3.0)] {
        let chain = shelf_only(set);
        let g16 = response_db(&chain, 16_000.0, fs);
        let g12 = response_db(&chain, 12_000.0, fs);
        let g1 = response_db(&chain, 1_000.0, fs);
        let g20 = response_db(&chain, 20_000.0, fs);
        println!(
            "shelf 12 kHz {set:+} dB at {fs} Hz: 1 kHz {g1:+.3}, 12 kHz {g12:+.3}, 16 kHz {g16:+.3}, 20 kHz {g20:+.3} dB"
        );
        let set = f64::from(set);
        // The shelf's own design, exactly.
        let want16 = rbj_shelf_db(12_000.0, set, 16_000.0, f64::from(fs));
        assert!((g16 - want16).abs() < 0.01, "{g16} vs {want16}");
        // Near the full gain at 16 kHz (within 12 %), the full gain by 20 kHz.
        assert!((g16 - set).abs() <= 0.12 * set.abs(), "16 kHz {g16} dB");
        assert!((g20 - set).abs() < 0.1, "20 kHz {g20} dB");
        // Half the gain at the shelf frequency, none in the speech band.
        assert!((g12 - set / 2.0).abs() < 0.05, "12 kHz {g12} dB");
        assert!(g1.abs() < 0.05, "1 kHz {g1} dB");
    }
}

#[test]
fn loudness_hits_the_target_on_noise_and_speech_like_input() {
    let loud = |ch: &mut Vec<Vec<f32>>, target: f64| {
        let chain = PostChain {
            loudness: true,
            lufs: target,
            ..PostChain::off()
        };
        let r = chain.apply(ch, FS).expect("runs");
        r.loudness.expect("loudness ran")
    };
    // Stereo noise at about -35 LUFS.
    let mut noise = vec![
        common::noise(5 * FS as usize, 1, 0.02),
        common::noise(5 * FS as usize, 2, 0.02),
    ];
    let (before, _) = loudness(&noise, FS);
    let r = loud(&mut noise, -16.0);
    let (after, tp) = loudness(&noise, FS);
    println!(
        "noise: {before:.2} LUFS -> {after:.3} LUFS, {tp:.2} dBTP, gain {:+.2} dB",
        r.gain_db
    );
    assert_eq!(r.outcome, LoudnessOutcome::OnTarget);
    assert!((after + 16.0).abs() < 0.1, "{after}");
    assert!((r.output_lufs - after).abs() < 1e-6);
    assert!((r.input_lufs - before).abs() < 1e-6);

    // Mono speech-like at about -39 LUFS, to -16 and to -23.
    for target in [-16.0, -23.0] {
        let mut speech = vec![speech_like(8.0, 7)];
        let (before, tp_before) = loudness(&speech, FS);
        let r = loud(&mut speech, target);
        let (after, tp) = loudness(&speech, FS);
        println!(
            "speech-like: {before:.2} LUFS ({tp_before:.2} dBTP) -> {after:.3} LUFS ({tp:.2} dBTP), target {target}"
        );
        assert_eq!(r.outcome, LoudnessOutcome::OnTarget);
        assert!((after - target).abs() < 0.1, "{after} vs {target}");
        assert!(tp <= -1.0);
    }
}

#[test]
fn true_peak_ceiling_holds_when_the_target_would_exceed_it() {
    // Quiet noise with sparse full-scale-ish clicks: -16 LUFS would put the clicks far above
    // 0 dBTP.
    let n = 6 * FS as usize;
    let mut x = common::noise(n, 3, 0.01);
    for i in (FS as usize / 2..n).step_by(FS as usize) {
        x[i] = 0.5;
        x[i + 1] = -0.45;
    }
    for ceiling in [-1.0, -3.0] {
        let mut ch = vec![x.clone()];
        let chain = PostChain {
            loudness: true,
            true_peak_db: ceiling,
            ..PostChain::off()
        };
        let r = chain.apply(&mut ch, FS).expect("runs");
        let l = r.loudness.expect("ran");
        let (lufs, tp) = loudness(&ch, FS);
        println!(
            "clicks, ceiling {ceiling} dBTP: {:.2} -> {lufs:.2} LUFS, {tp:.3} dBTP, gain {:+.2} dB: {r}",
            l.input_lufs, l.gain_db
        );
        assert_eq!(l.outcome, LoudnessOutcome::TruePeakLimited);
        assert!(r.true_peak_limited());
        assert!(r.to_string().contains("true-peak limited"), "{r}");
        assert!(tp <= ceiling + 0.01, "true peak {tp} over {ceiling}");
        assert!(tp >= ceiling - 0.05, "the ceiling sets the gain: {tp}");
        assert!(lufs < -16.0 - 1.0, "quieter than the target: {lufs}");
        assert!((l.output_true_peak_db - tp).abs() < 1e-6);
    }
}

#[test]
fn silence_is_unmeasurable_and_left_alone() {
    let mut ch = vec![vec![0.0f32; FS as usize]];
    let r = PostChain::default().apply(&mut ch, FS).expect("runs");
    let l = r.loudness.expect("ran");
    assert_eq!(l.outcome, LoudnessOutcome::Unmeasurable);
    assert_eq!(l.gain_db, 0.0);
    assert!(ch[0].iter().all(|&v| v == 0.0));
    // Under one 400 ms gating block: also unmeasurable.
    let mut short = vec![sine(440.0, 0.1, 0.3, FS)];
    let before = short.clone();
    let r = PostChain {
        loudness: true,
        ..PostChain::off()
    }
    .apply(&mut short, FS)
    .expect("runs");
    assert_eq!(
        r.loudness.map(|l| l.outcome),
        Some(LoudnessOutcome::Unmeasurable)
    );
    assert_eq!(short, before);
}

#[test]
fn preset_round_trip() {
    // Defaults, written and read back.
    let text = PostChain::default().to_toml_string().expect("toml");
    println!("{text}");
    assert_eq!(
        PostChain::from_toml_str(&text).expect("parse"),
        PostChain::default()
    );
    // Custom values through a file.
    let custom = PostChain {
        highpass: false,
        highpass_hz: 90.0,
        shelf: true,
        shelf_hz: 10_000.0,
        shelf_db: -4.5,
        loudness: true,
        lufs: -23.0,
        true_peak_db: -2.0,
    };
    let dir = std::env::temp_dir().join(format!("voxsift-post-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("preset.toml");
    std::fs::write(&path, custom.to_toml_string().expect("toml")).expect("write");
    assert_eq!(PostChain::load(&path).expect("load"), custom);
    // Missing keys take the defaults.
    let partial = PostChain::from_toml_str("lufs = -23.0\nshelf = false\n").expect("partial");
    assert_eq!(
        partial,
        PostChain {
            lufs: -23.0,
            shelf: false,
            ..PostChain::default()
        }
    );
    // Unknown keys, wrong types and out-of-range values are errors naming the problem.
    let err = PostChain::from_toml_str("lufz = -23.0").unwrap_err();
    assert!(matches!(err, PostError::ParsePreset { .. }), "{err}");
    assert!(err.to_string().contains("lufz"), "{err}");
    let err = PostChain::from_toml_str("highpass = \"yes\"").unwrap_err();
    assert!(matches!(err, PostError::ParsePreset { .. }), "{err}");
    let err = PostChain::from_toml_str("lufs = 5.0").unwrap_err();
    assert!(
        matches!(err, PostError::Invalid { field: "lufs", .. }),
        "{err}"
    );
    let err = PostChain::load(&dir.join("missing.toml")).unwrap_err();
    assert!(matches!(err, PostError::ReadPreset { .. }), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn each_stage_switches_independently() {
    // 20 Hz + 1 kHz + 16 kHz, 4 s, mono.
    let (f_lo, f_mid, f_hi) = (20.0, 1000.0, 16_000.0);
    let base: Vec<f32> = sine(f_lo, 0.05, 4.0, FS)
        .iter()
        .zip(sine(f_mid, 0.05, 4.0, FS))
        .zip(sine(f_hi, 0.05, 4.0, FS))
        .map(|((a, b), c)| a + b + c)
        .collect();
    let (lufs_in, _) = loudness(std::slice::from_ref(&base), FS);
    for bits in 0..8u32 {
        let chain = PostChain {
            highpass: bits & 1 != 0,
            shelf: bits & 2 != 0,
            loudness: bits & 4 != 0,
            ..PostChain::default()
        };
        let mut ch = vec![base.clone()];
        let r = chain.apply(&mut ch, FS).expect("runs");
        let at = |f| component(&ch[0], f, 2.0, FS);
        let lo = db(at(f_lo) / at(f_mid));
        let hi = db(at(f_hi) / at(f_mid));
        let (lufs, _) = loudness(&ch, FS);
        println!(
            "hp {} shelf {} loud {}: 20 Hz {lo:+.2} dB, 16 kHz {hi:+.2} dB re 1 kHz, {lufs:.2} LUFS",
            chain.highpass, chain.shelf, chain.loudness
        );
        let applied = |on| {
            if on {
                FilterOutcome::Applied
            } else {
                FilterOutcome::Off
            }
        };
        assert_eq!(r.highpass, applied(chain.highpass));
        assert_eq!(r.shelf, applied(chain.shelf));
        assert_eq!(r.loudness.is_some(), chain.loudness);
        if chain.highpass {
            assert!(lo < -40.0, "{lo}");
        } else {
            assert!(lo.abs() < 0.01, "{lo}");
        }
        if chain.shelf {
            assert!((hi + 2.7).abs() < 0.05, "{hi}");
        } else {
            assert!(hi.abs() < 0.01, "{hi}");
        }
        if chain.loudness {
            assert!((lufs + 16.0).abs() < 0.1, "{lufs}");
        } else if bits == 0 {
            assert_eq!(ch[0], base, "every stage off: untouched");
            assert!((lufs - lufs_in).abs() < 1e-9);
        }
    }
}

#[test]
fn filters_above_nyquist_are_skipped() {
    // 16 kHz audio: Nyquist 8 kHz, the 12 kHz shelf has nothing to act on.
    let fs = 16_000;
    let x = sine(1000.0, 0.1, 1.0, fs);
    let mut ch = vec![x.clone()];
    let r = shelf_only(-6.0).apply(&mut ch, fs).expect("runs");
    assert_eq!(r.shelf, FilterOutcome::SkippedAboveNyquist);
    assert_eq!(ch[0], x);
    assert!(r.to_string().contains("skipped"), "{r}");
}

#[test]
fn invalid_settings_and_audio_are_errors() {
    let mut ch = vec![vec![0.0f32; 100]];
    for bad in [
        PostChain {
            highpass_hz: 0.0,
            ..PostChain::default()
        },
        PostChain {
            lufs: f64::NAN,
            ..PostChain::default()
        },
        PostChain {
            true_peak_db: 1.0,
            ..PostChain::default()
        },
        PostChain {
            shelf_db: 40.0,
            ..PostChain::default()
        },
    ] {
        assert!(matches!(
            bad.apply(&mut ch, FS),
            Err(PostError::Invalid { .. })
        ));
    }
    let mut ragged = vec![vec![0.0f32; 10], vec![0.0; 9]];
    assert!(matches!(
        PostChain::default().apply(&mut ragged, FS),
        Err(PostError::BadAudio(_))
    ));
    assert!(matches!(
        PostChain::default().apply(&mut [], FS),
        Err(PostError::BadAudio(_))
    ));
}
