//! The built Voxsift CLAP plugin driven through `clack-host` (see `tests/README.md`).
//!
//! Every test takes [`lock_model`] first: `VOXSIFT_MODEL` is read by the plugin in `activate`
//! and the environment is process-wide, so the tests of this file run one after another.

use serde_json::json;
use std::path::{Path, PathBuf};
use voxsift_host_tests::*;

mod common;
use common::{read_wav, write_wav};

/// The synthetic model's 20 ms wet/gain ramp at 48 kHz, in samples.
const RAMP_48K: usize = 960;

/// A fresh instance (the plugin file must exist; see `plugin_path`).
fn plugin() -> Plugin {
    Plugin::new().expect("loading and instantiating the Voxsift CLAP plugin")
}

/// Two different channels from one seed.
fn stereo_signal(n: usize, sample_rate: f64, seed: u64) -> Vec<Vec<f32>> {
    let r: Vec<f32> = test_signal(n, sample_rate, seed + 1)
        .iter()
        .map(|v| v * 0.7)
        .collect();
    vec![test_signal(n, sample_rate, seed), r]
}

/// `channels` channels of test signal.
fn signal(channels: usize, n: usize, sample_rate: f64, seed: u64) -> Vec<Vec<f32>> {
    match channels {
        1 => vec![test_signal(n, sample_rate, seed)],
        _ => stereo_signal(n, sample_rate, seed),
    }
}

/// `demo/demo_mix.flac`, decoded: (sample rate, planar channels).
fn demo_mix() -> (u32, Vec<Vec<f32>>) {
    let path = workspace_root().join("demo/demo_mix.flac");
    assert!(path.is_file(), "{} is missing", path.display());
    read_flac(&path).expect("decoding demo/demo_mix.flac")
}

/// Decodes a FLAC file to planar f32.
fn read_flac(path: &Path) -> anyhow::Result<(u32, Vec<Vec<f32>>)> {
    use symphonia::core::audio::SampleBuffer;
    use symphonia::core::codecs::DecoderOptions;
    use symphonia::core::errors::Error;
    use symphonia::core::formats::FormatOptions;
    use symphonia::core::io::MediaSourceStream;
    use symphonia::core::meta::MetadataOptions;
    use symphonia::core::probe::Hint;
    let file = std::fs::File::open(path)?;
    let mss = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    hint.with_extension("flac");
    let mut format = symphonia::default::get_probe()
        .format(
            &hint,
            mss,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )?
        .format;
    let track = format
        .default_track()
        .ok_or_else(|| anyhow::anyhow!("no track"))?;
    let track_id = track.id;
    let rate = track
        .codec_params
        .sample_rate
        .ok_or_else(|| anyhow::anyhow!("no sample rate"))?;
    let mut decoder =
        symphonia::default::get_codecs().make(&track.codec_params, &DecoderOptions::default())?;
    let mut chans: Vec<Vec<f32>> = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(Error::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = decoder.decode(&packet)?;
        let spec = *decoded.spec();
        let n = spec.channels.count();
        let mut sb = SampleBuffer::<f32>::new(decoded.capacity() as u64, spec);
        sb.copy_interleaved_ref(decoded);
        if chans.is_empty() {
            chans = vec![Vec::new(); n];
        }
        for frame in sb.samples().chunks(n) {
            for (c, v) in frame.iter().enumerate() {
                chans[c].push(*v);
            }
        }
    }
    Ok((rate, chans))
}

/// A scratch directory for this test process.
fn scratch_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("voxsift-host-tests-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("creating a scratch directory");
    d
}

/// Appends `n` zeros to every channel.
fn padded(x: &[Vec<f32>], n: usize) -> Vec<Vec<f32>> {
    x.iter()
        .map(|c| {
            let mut c = c.clone();
            c.resize(c.len() + n, 0.0);
            c
        })
        .collect()
}

/// Asserts that `out` is bit-identical to `x` delayed by `latency`, from sample `from` on.
fn assert_delayed_dry(out: &[Vec<f32>], x: &[Vec<f32>], latency: usize, from: usize, what: &str) {
    for (c, (o, i)) in out.iter().zip(x).enumerate() {
        let want = delayed(i, latency);
        if let Some(k) = first_difference(&o[from..], &want[from..]) {
            panic!(
                "{what}: channel {c} differs from the input delayed by {latency} at sample {} \
                 ({} vs {}), max abs diff {:e}",
                from + k,
                o[from + k],
                want[from + k],
                max_abs_diff(&o[from..], &want[from..])
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Activation matrix
// ---------------------------------------------------------------------------------------------

/// Block patterns of the matrix: (name, pattern, max block).
const PATTERNS: &[(&str, &[usize], u32)] = &[
    ("1", &[1], 1),
    ("64", &[64], 64),
    ("512", &[512], 512),
    ("4096", &[4096], 4096),
    (
        "varying",
        &[1, 7, 64, 480, 513, 4096, 31, 2048, 100, 1000, 3],
        4096,
    ),
];

/// The latency the engine documents for 48 kHz (no resampler): STFT `2H - 1`, DFN3's two
/// frames of lookahead, and one host block or 2.5 ms, whichever is larger.
fn expected_latency_48k(max_block: u32) -> u32 {
    959 + 2 * 480 + max_block.max(120)
}

#[test]
fn activates_and_processes_at_every_rate_block_pattern_and_layout() {
    let _env = lock_model(&Model::Synthetic);
    for rate in [44_100.0, 48_000.0, 96_000.0] {
        for channels in [1usize, 2] {
            let mut offline_aligned: Vec<(&str, Vec<Vec<f32>>)> = Vec::new();
            let mut latencies = Vec::new();
            for &(name, pattern, max_block) in PATTERNS {
                // Block 1 costs a process call per sample: keep its signal short.
                let secs = if max_block == 1 { 0.12 } else { 0.5 };
                let n = (rate * secs) as usize;
                let x = signal(channels, n, rate, 7);
                for mode in [Mode::Realtime, Mode::Offline] {
                    let what = format!("{rate} Hz, {channels} ch, blocks {name}, {mode:?}");
                    let mut p = plugin();
                    let setup = Setup::new(rate, max_block, channels, mode);
                    let latency = p.activate(setup).expect("activate") as usize;
                    assert!(latency > 0, "{what}: latency 0");
                    assert!(latency < n, "{what}: latency {latency} >= signal length");
                    let y = p.process(&x, &Run::blocks(pattern)).expect("process");
                    ensure_finite(&y).unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert_eq!(
                        p.latency().expect("latency") as usize,
                        latency,
                        "{what}: latency changed while processing"
                    );
                    assert!(!p.take_restart_request(), "{what}: restart requested");
                    for (c, ch) in y.iter().enumerate() {
                        // Nothing comes out before the latency (the dry path is delayed by it
                        // and the first synthesized sample lands there).
                        assert!(
                            ch[..latency].iter().all(|v| *v == 0.0),
                            "{what}: channel {c} has output before the latency {latency}"
                        );
                        let (o, i) = (rms(&ch[latency..]), rms(&x[c][..n - latency]));
                        assert!(
                            o > 0.2 * i,
                            "{what}: channel {c} output rms {o} vs input rms {i}"
                        );
                    }
                    // The same configuration again reports the same latency.
                    p.deactivate();
                    assert_eq!(
                        p.activate(setup).expect("reactivate") as usize,
                        latency,
                        "{what}: latency differs on reactivation"
                    );
                    p.deactivate();
                    if mode == Mode::Offline {
                        let aligned = y.iter().map(|c| c[latency..].to_vec()).collect();
                        offline_aligned.push((name, aligned));
                    } else {
                        latencies.push((name, max_block, latency));
                    }
                }
            }
            // Latency: constant per configuration, grows with the max block beyond 2.5 ms.
            let lat = |name: &str| {
                latencies
                    .iter()
                    .find(|l| l.0 == name)
                    .map(|l| l.2)
                    .expect("latency recorded")
            };
            assert_eq!(lat("1"), lat("64"), "{rate} Hz: blocks under 2.5 ms");
            assert_eq!(lat("4096") - lat("512"), 4096 - 512, "{rate} Hz");
            assert_eq!(lat("varying"), lat("4096"), "{rate} Hz");
            if rate == 48_000.0 {
                for &(name, max_block, l) in &latencies {
                    assert_eq!(
                        l as u32,
                        expected_latency_48k(max_block),
                        "48 kHz, blocks {name}"
                    );
                }
            }
            println!(
                "{rate} Hz {channels} ch latencies: {:?}",
                latencies.iter().map(|l| (l.0, l.2)).collect::<Vec<_>>()
            );
            // Offline, the aligned output does not depend on the block pattern.
            let (ref_name, reference) = &offline_aligned[2];
            for (name, y) in &offline_aligned {
                for c in 0..channels {
                    let m = y[c].len().min(reference[c].len());
                    assert_eq!(
                        first_difference(&y[c][..m], &reference[c][..m]),
                        None,
                        "{rate} Hz {channels} ch offline: blocks {name} vs {ref_name}, \
                         max abs diff {:e}",
                        max_abs_diff(&y[c][..m], &reference[c][..m])
                    );
                }
            }
        }
    }
}

#[test]
fn activates_and_processes_with_dfn3() {
    let _env = lock_model(&Model::Dfn3);
    let (rate, mix) = demo_mix();
    let n = rate as usize; // 1 s
    let x = vec![mix[0][..n].to_vec(), mix[0][n..2 * n].to_vec()];
    let (_, pattern, max_block) = PATTERNS[4];
    let mut latencies = Vec::new();
    for (rate, mode) in [(48_000.0, Mode::Offline), (44_100.0, Mode::Realtime)] {
        // At 44.1 kHz the same samples stand for a slightly different signal: fine here.
        let mut p = plugin();
        let latency = p
            .activate(Setup::new(rate, max_block, 2, mode))
            .expect("activate") as usize;
        let y = p.process(&x, &Run::blocks(pattern)).expect("process");
        ensure_finite(&y).expect("finite output");
        assert_eq!(p.latency().expect("latency") as usize, latency);
        for c in 0..2 {
            assert!(y[c][..latency].iter().all(|v| *v == 0.0));
            assert!(
                rms(&y[c][latency..]) > 0.05 * rms(&x[c]),
                "DFN3 output is silent"
            );
        }
        latencies.push(latency);
        println!("DFN3 {rate} Hz {mode:?}: latency {latency}");
    }
    // DFN3 and the synthetic model have the same latency (same grid and lookahead).
    assert_eq!(latencies[0] as u32, expected_latency_48k(max_block));
}

// ---------------------------------------------------------------------------------------------
// 2. Impulse alignment
// ---------------------------------------------------------------------------------------------

#[test]
fn impulse_peak_comes_out_exactly_latency_samples_later() {
    let _env = lock_model(&Model::Synthetic);
    for rate in [48_000.0, 44_100.0] {
        for channels in [1usize, 2] {
            for mode in [Mode::Realtime, Mode::Offline] {
                let n = (rate * 0.6) as usize;
                let t0 = 12_345;
                let mut imp = vec![0.0f32; n];
                imp[t0] = 0.5;
                let x = vec![imp; channels];
                let mut p = plugin();
                let latency = p
                    .activate(Setup::new(rate, 256, channels, mode))
                    .expect("activate") as usize;
                let y = p.process(&x, &Run::blocks(&[256])).expect("process");
                for (c, ch) in y.iter().enumerate() {
                    let k = peak_index(ch);
                    assert_eq!(
                        k,
                        t0 + latency,
                        "{rate} Hz {channels} ch {mode:?} channel {c}: impulse at {t0}, \
                         latency {latency}, peak at {k} ({})",
                        ch[k]
                    );
                    assert!(ch[k] > 0.25, "{rate} Hz {mode:?}: peak only {}", ch[k]);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Wet 0 and bypass are the delayed dry signal, bit for bit
// ---------------------------------------------------------------------------------------------

#[test]
fn wet_zero_and_bypass_are_bit_exact_delayed_dry() {
    let _env = lock_model(&Model::Synthetic);
    let rate = 48_000.0;
    let x = stereo_signal(24_000, rate, 3);
    let pattern = [1, 7, 64, 480, 513, 1024, 100];
    /// How the setting reaches the plugin.
    #[derive(Debug, Clone, Copy)]
    enum Via {
        State,
        Flush,
        EventAtZero,
    }
    for (setting, via) in [
        ("wet 0", Via::State),
        ("wet 0", Via::EventAtZero),
        ("bypass", Via::Flush),
        ("bypass", Via::EventAtZero),
        ("bypass with +6 dB gain", Via::State),
    ] {
        for mode in [Mode::Realtime, Mode::Offline] {
            let what = format!("{setting} via {via:?}, {mode:?}");
            let mut p = plugin();
            let mut events = Vec::new();
            match (setting, via) {
                ("wet 0", Via::State) => p.set_plain(&[("wet", json!({"f32": 0.0}))]).unwrap(),
                ("bypass with +6 dB gain", Via::State) => p
                    .set_plain(&[
                        ("bypass", json!({"bool": true})),
                        ("gain", json!({"f32": 6.0})),
                    ])
                    .unwrap(),
                ("bypass", Via::Flush) => p.set_params(&[("Bypass", 1.0)]).unwrap(),
                ("wet 0", Via::EventAtZero) => events.push(p.change("Wet", 0, 0.0).unwrap()),
                ("bypass", Via::EventAtZero) => events.push(p.change("Bypass", 0, 1.0).unwrap()),
                _ => unreachable!(),
            }
            if !events.is_empty() {
                // The 20 ms ramp from the default wet 1 ends before the dry signal arrives.
                assert_eq!(p.param_value("Wet").unwrap(), 1.0);
            }
            let latency = p
                .activate(Setup::new(rate, 1024, 2, mode))
                .expect("activate") as usize;
            assert!(latency > RAMP_48K);
            let y = p
                .process(&x, &Run::blocks(&pattern).with_events(&events))
                .expect("process");
            assert_delayed_dry(&y, &x, latency, 0, &what);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Offline render through the host equals `voxsift render`
// ---------------------------------------------------------------------------------------------

#[test]
fn offline_host_render_equals_the_cli_render() {
    let _env = lock_model(&Model::Dfn3);
    let cli = cli_path().expect("the voxsift CLI");
    let (rate, mix) = demo_mix();
    assert_eq!(rate, 48_000);
    let mono = vec![mix[0].clone()];
    // A stereo version whose channels differ: the right one is quieter and 25 ms late.
    let right: Vec<f32> = delayed(&mix[0], 1200).iter().map(|v| v * 0.6).collect();
    let stereo = vec![mix[0].clone(), right];
    let dir = scratch_dir();
    for (name, x) in [("mono", mono), ("stereo", stereo)] {
        let input = dir.join(format!("cli-in-{name}.wav"));
        let output = dir.join(format!("cli-out-{name}.wav"));
        write_wav(&input, rate, &x);
        let status = std::process::Command::new(&cli)
            .arg("render")
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .args([
                "--no-mask-cache",
                "--wet",
                "0.8",
                "--beta",
                "2",
                "--floor-db",
                "-30",
                "--gain-db",
                "0",
                "--bits",
                "32",
                "--force",
                "--quiet",
            ])
            .status()
            .expect("running voxsift render");
        assert!(status.success(), "voxsift render failed: {status}");
        let (out_rate, cli_out) = read_wav(&output);
        assert_eq!(out_rate, rate);
        assert_eq!(cli_out.len(), x.len());
        assert_eq!(cli_out[0].len(), x[0].len());

        // The host: the same settings as exact plain values (what a project recall does),
        // offline, with blocks unlike the CLI's 512.
        let mut p = plugin();
        p.set_plain(&[
            ("wet", json!({"f32": 0.8})),
            ("beta", json!({"f32": 2.0})),
            ("floor", json!({"f32": -30.0})),
            ("gain", json!({"f32": 0.0})),
            ("link", json!({"bool": true})),
        ])
        .unwrap();
        let latency = p
            .activate(Setup::new(rate as f64, 1024, x.len(), Mode::Offline))
            .expect("activate") as usize;
        let y = p
            .process(
                &padded(&x, latency),
                &Run::blocks(&[1000, 17, 333, 1024, 5, 700]),
            )
            .expect("process");
        let mut worst = 0.0f32;
        for c in 0..x.len() {
            let host = &y[c][latency..];
            let diff = max_abs_diff(host, &cli_out[c]);
            worst = worst.max(diff);
            println!(
                "{name} channel {c}: host (latency {latency}) vs CLI: max abs diff {diff:e}, \
                 first difference {:?}, output rms {}",
                first_difference(host, &cli_out[c]),
                rms(host)
            );
            assert_eq!(
                first_difference(host, &cli_out[c]),
                None,
                "{name} channel {c}: host render differs from the CLI's (max abs diff {diff:e})"
            );
            // The settings did something: the render is not the input.
            assert!(max_abs_diff(host, &x[c]) > 1e-2);
        }
        println!("{name}: max abs diff {worst:e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// 5. No allocation on the audio thread
// ---------------------------------------------------------------------------------------------

/// The plugin must be built with nice-plug's `assert_process_allocs` in a debug build: then
/// nice-plug installs `nice_assert_no_alloc::AllocDisabler` as the plugin's global allocator
/// (`nice-plug/src/wrapper/util.rs`) and runs the CLAP `process`, `start_processing`,
/// `stop_processing` and `reset` inside `assert_no_alloc` (`process_wrapper` in
/// `nice-plug/src/wrapper/clap/wrapper.rs`), which logs "Memory allocation of N bytes failed"
/// and aborts on any (de)allocation. That message is only linked in with the checker, so its
/// presence in the binary shows the protection is compiled in.
#[test]
fn plugin_is_built_with_the_allocation_checker() {
    let path = plugin_path().expect("plugin");
    let bytes = std::fs::read(&path).expect("reading the plugin binary");
    let needle = b"Memory allocation of ";
    assert!(
        bytes.windows(needle.len()).any(|w| w == needle),
        "{} was not built with nice-plug's assert_process_allocs in a debug build, so \
         no_allocation_on_the_audio_thread_* prove nothing; build it with \
         `cargo build -p voxsift --features assert_process_allocs` (or `cargo xtask test`)",
        path.display()
    );
}

/// Every parameter automated at sample offsets inside blocks, including link and bypass
/// toggles, then steady at wet 1 from 2.3 s.
fn automation(p: &Plugin, rate: f64) -> Vec<ParamChange> {
    let at = |s: f64, off: usize| (s * rate) as usize + off;
    let mut ev = vec![
        p.change("Wet", at(0.2, 13), 0.5).unwrap(),
        p.change("Beta", at(0.4, 101), 0.9).unwrap(),
        p.change("Floor", at(0.6, 7), 0.5).unwrap(),
        p.change("Output gain", at(0.8, 250), 0.6).unwrap(),
        p.change("Link channels", at(1.0, 3), 0.0).unwrap(),
        p.change("Bypass", at(1.3, 77), 1.0).unwrap(),
        p.change("Bypass", at(1.5, 11), 0.0).unwrap(),
        p.change("Link channels", at(1.7, 5), 1.0).unwrap(),
        p.change("Floor", at(1.9, 0), 0.0).unwrap(),
        p.change("Output gain", at(1.9, 1), 0.5).unwrap(),
        p.change("Beta", at(1.9, 2), 0.5).unwrap(),
    ];
    // Dense wet automation, one event every 64 samples, ending at 1.
    for i in 0..150 {
        ev.push(
            p.change("Wet", at(2.0, 64 * i), (i as f64 / 149.0).clamp(0.0, 1.0))
                .unwrap(),
        );
    }
    ev
}

/// Realtime, paced, stereo 48 kHz with automation; the worker must have delivered masks.
fn realtime_run_without_allocation(x: &[Vec<f32>], settle: std::time::Duration) {
    let rate = 48_000.0;
    let mut p = plugin();
    let latency = p
        .activate(Setup::new(rate, 1024, 2, Mode::Realtime))
        .expect("activate") as usize;
    // A host idles between activation and play; the model loads meanwhile.
    std::thread::sleep(settle);
    let events = automation(&p, rate);
    let run = Run::blocks(&[256, 512, 37, 1024, 480, 1])
        .with_events(&events)
        .paced();
    // With assert_process_allocs, an allocation inside process aborts the whole test binary.
    let y = p.process(x, &run).expect("process");
    ensure_finite(&y).expect("finite output");
    // From 2.5 s, wet is 1 and bypass off: the output is masked, not the delayed dry signal.
    let from = (2.5 * rate) as usize;
    for c in 0..2 {
        let dry = delayed(&x[c], latency);
        let diff: Vec<f32> = y[c][from..]
            .iter()
            .zip(&dry[from..])
            .map(|(a, b)| a - b)
            .collect();
        let (d, r) = (rms(&diff), rms(&dry[from..]));
        println!("channel {c}: rms(output - delayed dry) {d} vs rms(dry) {r}");
        assert!(
            d > 0.05 * r,
            "channel {c}: no masks were applied ({d} vs {r})"
        );
    }
}

#[test]
fn no_allocation_on_the_audio_thread_with_dfn3() {
    let _env = lock_model(&Model::Dfn3);
    let (_, mix) = demo_mix();
    let n = 3 * 48_000;
    let x = vec![
        mix[0][..n].to_vec(),
        delayed(&mix[0][..n], 480).iter().map(|v| v * 0.8).collect(),
    ];
    realtime_run_without_allocation(&x, std::time::Duration::from_millis(1500));
}

#[test]
fn no_allocation_on_the_audio_thread_with_the_synthetic_model() {
    let _env = lock_model(&Model::Synthetic);
    let x = stereo_signal(3 * 48_000, 48_000.0, 11);
    realtime_run_without_allocation(&x, std::time::Duration::from_millis(100));
}

// ---------------------------------------------------------------------------------------------
// 6. Sample-accurate automation
// ---------------------------------------------------------------------------------------------

#[test]
fn wet_automation_takes_effect_at_its_sample_offset_inside_a_block() {
    let _env = lock_model(&Model::Synthetic);
    let rate = 48_000.0;
    let x = stereo_signal(48_000, rate, 5);
    let block = 512;
    let k = 20_000 + 123; // inside a block
    assert_ne!(k % block, 0);
    let render = |events: &[ParamChange]| {
        let mut p = plugin();
        let latency = p
            .activate(Setup::new(rate, block as u32, 2, Mode::Offline))
            .expect("activate") as usize;
        let y = p
            .process(&x, &Run::blocks(&[block]).with_events(events))
            .expect("process");
        (latency, y)
    };
    let (latency, plain) = render(&[]);
    let wet_off = Plugin::new().unwrap().change("Wet", k, 0.0).unwrap();
    let (l2, automated) = render(&[wet_off]);
    assert_eq!(latency, l2);
    assert!(
        k > latency + 4 * RAMP_48K,
        "the change must fall in the wet output"
    );
    for c in 0..2 {
        assert_eq!(
            first_difference(&plain[c], &automated[c]),
            Some(k),
            "channel {c}: the change at {k} must alter the output from sample {k} on, not \
             before or later"
        );
    }
    // After the 20 ms ramp the output is exactly the delayed dry signal.
    assert_delayed_dry(&automated, &x, latency, k + RAMP_48K, "after the wet ramp");
    // And during the ramp it is not yet.
    let dry = delayed(&x[0], latency);
    assert_ne!(
        first_difference(
            &automated[0][k..k + RAMP_48K - 1],
            &dry[k..k + RAMP_48K - 1]
        ),
        None
    );
}

// ---------------------------------------------------------------------------------------------
// 7. State round trip
// ---------------------------------------------------------------------------------------------

#[test]
fn state_round_trips_every_parameter_into_a_fresh_instance() {
    let _env = lock_model(&Model::Synthetic);
    let mut a = plugin();
    let targets = [
        ("Wet", 0.35),
        ("Beta", 0.8),
        ("Floor", 0.25),
        ("Link channels", 0.0),
        ("Output gain", 0.3),
        ("Bypass", 1.0),
        ("Device", 1.0),
        ("Preset", 1.0),
    ];
    let names: Vec<String> = a.params().iter().map(|p| p.name.clone()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    let mut want: Vec<String> = targets.iter().map(|t| t.0.to_string()).collect();
    want.sort();
    assert_eq!(sorted, want, "the test must cover every parameter");
    a.set_params(&targets).unwrap();
    for (name, v) in targets {
        let got = a.param_value(name).unwrap();
        let default = a.param(name).unwrap().default;
        assert!((got - v).abs() < 1e-6, "{name}: set {v}, reads {got}");
        assert_ne!(got, default, "{name} must differ from its default");
    }
    let saved = a.save_state().unwrap();
    let json_a = decode_state(&saved).unwrap();
    assert_eq!(json_a["params"]["link"], json!({"bool": false}));
    assert_eq!(json_a["params"]["bypass"], json!({"bool": true}));
    assert_eq!(json_a["params"]["floor"], json!({"f32": -60.0}));

    let mut b = plugin();
    for name in &names {
        let d = b.param(name).unwrap().default;
        assert_eq!(
            b.param_value(name).unwrap(),
            d,
            "{name}: a fresh instance is at default"
        );
    }
    b.load_state(&saved).unwrap();
    for name in &names {
        let (vb, va) = (b.param_value(name).unwrap(), a.param_value(name).unwrap());
        assert_eq!(vb, va, "{name} after the state round trip");
        assert_eq!(
            b.param_text(name, vb).unwrap(),
            a.param_text(name, va).unwrap()
        );
    }
    assert_eq!(b.state_json().unwrap()["params"], json_a["params"]);
    // The loaded state also drives the audio: bypass is on, so B passes the dry signal.
    let x = stereo_signal(12_000, 48_000.0, 9);
    let latency = b
        .activate(Setup::new(48_000.0, 512, 2, Mode::Offline))
        .unwrap() as usize;
    let y = b.process(&x, &Run::blocks(&[512])).unwrap();
    assert_delayed_dry(&y, &x, latency, 0, "bypass loaded from state");
}

// ---------------------------------------------------------------------------------------------
// 9. Reset determinism
// ---------------------------------------------------------------------------------------------

#[test]
fn reset_makes_offline_output_repeat_exactly() {
    let _env = lock_model(&Model::Dfn3);
    let (_, mix) = demo_mix();
    let n = 2 * 48_000;
    for (rate, channels) in [(48_000.0, 1usize), (44_100.0, 2)] {
        let what = format!("DFN3 {rate} Hz {channels} ch");
        let s: Vec<Vec<f32>> = (0..channels)
            .map(|c| delayed(&mix[0][..n], 300 * c))
            .collect();
        let mut p = plugin();
        p.activate(Setup::new(rate, 1024, channels, Mode::Offline))
            .expect("activate");
        let pattern = [512, 100, 1024, 7];
        // clap_plugin.reset in the middle of a run, with masks in flight.
        let twice: Vec<Vec<f32>> = s.iter().map(|c| [c.clone(), c.clone()].concat()).collect();
        let y = p
            .process(&twice, &Run::blocks(&pattern).with_resets(&[n]))
            .expect("process");
        for (c, yc) in y.iter().enumerate() {
            assert_eq!(
                first_difference(&yc[..n], &yc[n..]),
                None,
                "{what} channel {c}: the output after reset differs (max abs diff {:e})",
                max_abs_diff(&yc[..n], &yc[n..])
            );
            assert!(rms(&yc[..n]) > 0.01);
        }
        // stop_processing/start_processing (nice-plug resets there) between two runs.
        let first = p.process(&s, &Run::blocks(&pattern)).expect("process");
        let second = p.process(&s, &Run::blocks(&pattern)).expect("process");
        for c in 0..channels {
            assert_eq!(
                first_difference(&first[c], &second[c]),
                None,
                "{what} channel {c}"
            );
            assert_eq!(
                first_difference(&first[c], &y[c][..n]),
                None,
                "{what} channel {c}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 10. A model that fails to load
// ---------------------------------------------------------------------------------------------

#[test]
fn a_failing_model_passes_audio_through_delayed_by_the_latency() {
    let _env = lock_model(&Model::Dir(PathBuf::from("/nonexistent/voxsift-model-dir")));
    let rate = 48_000.0;
    let x = stereo_signal(48_000, rate, 13);
    for mode in [Mode::Offline, Mode::Realtime] {
        let mut p = plugin();
        let before = threads().unwrap();
        let latency = p
            .activate(Setup::new(rate, 512, 2, mode))
            .expect("activate must succeed even though the model cannot load")
            as usize;
        assert_eq!(latency as u32, expected_latency_48k(512), "{mode:?}");
        let run = match mode {
            Mode::Realtime => {
                // As a host between activation and play; the worker reports the failure.
                std::thread::sleep(std::time::Duration::from_millis(50));
                Run::blocks(&[512]).paced()
            }
            Mode::Offline => Run::blocks(&[512]),
        };
        let y = p.process(&x, &run).expect("process");
        ensure_finite(&y).expect("finite output");
        let exact_from = (0..2)
            .map(|c| {
                let dry = delayed(&x[c], latency);
                // Last differing sample + 1.
                y[c].iter()
                    .zip(&dry)
                    .rposition(|(a, b)| a.to_bits() != b.to_bits())
                    .map_or(0, |i| i + 1)
            })
            .max()
            .unwrap_or(0);
        println!(
            "failing model, {mode:?}: latency {latency}, bit-exact delayed dry from sample \
             {exact_from} ({} samples = {:.1} ms after the output starts)",
            exact_from.saturating_sub(latency),
            exact_from.saturating_sub(latency) as f64 * 1000.0 / rate
        );
        // Silence before the latency, then (after at most a 20 ms ramp and the time the
        // worker takes to report the failure) the input delayed by the latency.
        let from = latency + (0.05 * rate) as usize;
        assert_delayed_dry(&y, &x, latency, from, &format!("failing model, {mode:?}"));
        for yc in &y {
            assert!(yc[..latency].iter().all(|v| *v == 0.0));
        }
        p.deactivate();
        // The failed worker is joined too: no thread is left (a joined thread may stay
        // listed for a moment). Threads the plugin starts are named `voxsift-*` or inherit
        // the name of the thread that started them (this test's); the test harness may start
        // the thread of another test meanwhile (named after that test), which is not ours.
        let me = std::fs::read_to_string("/proc/thread-self/comm")
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default();
        let ours = |now: &std::collections::BTreeMap<u32, String>| -> Vec<(u32, String)> {
            new_threads(&before, now)
                .into_iter()
                .filter(|(_, n)| n.starts_with("voxsift") || *n == me)
                .collect()
        };
        let (clean, _) = wait_until(std::time::Duration::from_millis(500), || {
            threads().is_ok_and(|now| ours(&now).is_empty())
        });
        assert!(
            clean,
            "{mode:?}: threads left after deactivate: {:?} (all new: {:?})",
            ours(&threads().unwrap_or_default()),
            new_threads(&before, &threads().unwrap_or_default())
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Device parameter: a provider that cannot start falls back to the CPU
// ---------------------------------------------------------------------------------------------

#[test]
fn a_device_that_cannot_start_falls_back_to_the_cpu_with_the_same_output() {
    let _env = lock_model(&Model::Dfn3);
    let (rate, mix) = demo_mix();
    let n = rate as usize;
    let x = vec![mix[0][..n].to_vec(), mix[0][n..2 * n].to_vec()];
    let render = |device: f64| {
        let mut p = plugin();
        // The test machines have no usable CUDA (CPU runtime, no GPU).
        p.set_params(&[("Device", device)]).expect("set Device");
        assert!((p.param_value("Device").expect("Device") - device).abs() < 1e-6);
        let latency = p
            .activate(Setup::new(48_000.0, 512, 2, Mode::Offline))
            .expect("activate") as usize;
        let y = p.process(&x, &Run::blocks(&[512])).expect("process");
        ensure_finite(&y).expect("finite output");
        (latency, y)
    };
    let (l_cpu, cpu) = render(0.0);
    let (l_cuda, cuda) = render(1.0);
    assert_eq!(l_cpu, l_cuda, "the device changed the latency");
    // Not pass-through: the model ran (on the CPU).
    assert!(max_abs_diff(&cuda[0], &delayed(&x[0], l_cuda)) > 1e-3);
    for c in 0..2 {
        assert_eq!(first_difference(&cpu[c], &cuda[c]), None, "channel {c}");
    }
}
