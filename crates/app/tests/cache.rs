//! The mask cache of offline renders (`voxsift_app::cache`): a second render of the same input with
//! other mix settings replays the masks without running the model and equals an uncached
//! render bit for bit; a changed input, model or inference setting misses; a corrupt,
//! truncated or mismatching entry falls back to computing the masks.
//!
//! Most tests use the synthetic model (no ONNX Runtime); the `dfn3_*` tests need the runtime
//! (`VOXSIFT_ORT_LIB`, as `cargo xtask test` sets it).

mod common;

use common::{mixture, noise, repo};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use voxsift_app::cache::{model_version, MaskCache, MaskSource};
use voxsift_app::cache_session::Session;
use voxsift_app::render::{render, ModelChoice, RenderOptions, Rendered, SyntheticSettings};
use voxsift_engine::{ChannelMode, EngineParams, RunMode};
use voxsift_models::fusion::Fusion;
use voxsift_models::synthetic::SyntheticModel;
use voxsift_models::MaskModel;

/// A scratch folder, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let p =
            std::env::temp_dir().join(format!("voxsift-cache-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch folder");
        Self(p)
    }

    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Stereo test input at `rate`: noise whose level changes every 100 ms (so the synthetic
/// model's masks vary), `seconds` long.
fn input(rate: u32, seconds: f64, seed: u64) -> Vec<Vec<f32>> {
    let n = (seconds * rate as f64) as usize;
    (0..2)
        .map(|c| {
            noise(n, seed + c, 0.5)
                .into_iter()
                .enumerate()
                .map(|(i, x)| x * (0.05 + 0.9 * ((i / (rate as usize / 10)) % 4) as f32 / 3.0))
                .collect()
        })
        .collect()
}

/// Mix settings A (the first render) and B (the re-render).
fn params_a() -> EngineParams {
    EngineParams {
        wet: 1.0,
        beta: 1.5,
        floor_db: None,
        output_gain_db: 0.0,
        bypass: false,
    }
}

fn params_b() -> EngineParams {
    EngineParams {
        wet: 0.6,
        beta: 2.5,
        floor_db: Some(-20.0),
        output_gain_db: -3.0,
        bypass: false,
    }
}

/// Offline synthetic-model options with the cache in `dir` (or none).
fn opts(dir: Option<&Path>, params: EngineParams) -> RenderOptions {
    RenderOptions {
        params,
        model: ModelChoice::Synthetic(2),
        mask_cache: dir.map(MaskCache::new),
        ..RenderOptions::default()
    }
}

fn run(input: &[Vec<f32>], rate: u32, o: &RenderOptions) -> Rendered {
    render(input, rate, o, |_, _| {}).expect("renders")
}

/// The entries (`*.masks`) and other files in `dir`.
fn files(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut entries = Vec::new();
    let mut other = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "masks") {
                entries.push(p);
            } else {
                other.push(p);
            }
        }
    }
    entries.sort();
    other.sort();
    (entries, other)
}

#[test]
fn a_second_render_with_other_mix_settings_replays_and_equals_an_uncached_render() {
    let dir = Scratch::new("replay");
    let cache = dir.join("masks");
    let x = input(48_000, 3.0, 1);
    let first = run(&x, 48_000, &opts(Some(&cache), params_a()));
    assert_eq!(first.masks, MaskSource::Computed);
    let (entries, other) = files(&cache);
    assert_eq!(entries.len(), 1, "one entry stored");
    assert!(other.is_empty(), "no temporary file left: {other:?}");
    // The first render itself is what an uncached render gives.
    let plain_a = run(&x, 48_000, &opts(None, params_a()));
    assert!(first.channels == plain_a.channels);

    let second = run(&x, 48_000, &opts(Some(&cache), params_b()));
    assert_eq!(second.masks, MaskSource::Cached);
    assert_eq!(second.notice, None);
    let plain_b = run(&x, 48_000, &opts(None, params_b()));
    assert_eq!(plain_b.masks, MaskSource::Computed);
    assert!(
        second.channels == plain_b.channels,
        "the replayed render differs from an uncached one"
    );
    assert!(
        second.channels != first.channels,
        "settings B must change the output, or this test proves nothing"
    );
    assert_eq!(second.latency, plain_b.latency);
    assert_eq!(files(&cache).0, entries, "a hit stores nothing new");
}

#[test]
fn a_hit_never_calls_the_model_factory() {
    let dir = Scratch::new("factory");
    let cache = dir.join("masks");
    let x = input(48_000, 1.0, 2);
    let o = opts(Some(&cache), params_a());
    run(&x, 48_000, &o);

    let calls = Arc::new(AtomicUsize::new(0));
    let counting = |calls: &Arc<AtomicUsize>| -> voxsift_models::worker::ModelFactory {
        let calls = calls.clone();
        Box::new(move || {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(SyntheticModel::new(2, 2)) as Box<dyn MaskModel>)
        })
    };
    // The same input and settings: the wrapped factory replays, the real one is dropped.
    let mut hit = Session::open(&x, 48_000, &o);
    assert!(hit.is_active());
    let factory = hit.wrap(&o.model, counting(&calls));
    let model = factory().expect("the replay model opens");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the model factory was called"
    );
    assert_eq!(model.spec(), SyntheticModel::new(1, 2).spec());
    drop(model);
    hit.finish(true);
    assert_eq!(hit.source(), MaskSource::Cached);

    // Another input: the real factory runs (and its recording is discarded when the session
    // ends without success).
    let y = input(48_000, 1.0, 3);
    let mut miss = Session::open(&y, 48_000, &o);
    let factory = miss.wrap(&o.model, counting(&calls));
    drop(factory().expect("the real model loads"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    drop(miss);
    let (entries, other) = files(&cache);
    assert_eq!(entries.len(), 1);
    assert!(
        other.is_empty(),
        "the unfinished recording was removed: {other:?}"
    );

    // No cache, or a realtime render: the factory is left as it is.
    for o in [
        opts(None, params_a()),
        RenderOptions {
            run_mode: RunMode::Realtime,
            ..opts(Some(&cache), params_a())
        },
    ] {
        let mut s = Session::open(&x, 48_000, &o);
        assert!(!s.is_active());
        drop(s.wrap(&o.model, counting(&calls))().expect("loads"));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[test]
fn replays_are_bit_identical_whatever_the_block_size_and_rate() {
    let dir = Scratch::new("blocks");
    let cache = dir.join("masks");
    // 44.1 kHz goes through the worker's resampler; 48 kHz does not.
    for rate in [48_000u32, 44_100] {
        let x = input(rate, 2.0, 4);
        let first = run(&x, rate, &opts(Some(&cache), params_a()));
        assert_eq!(first.masks, MaskSource::Computed);
        for blocks in [vec![4096], vec![1, 7, 4096, 64], vec![64]] {
            let o = RenderOptions {
                blocks: blocks.clone(),
                ..opts(Some(&cache), params_b())
            };
            let cached = run(&x, rate, &o);
            assert_eq!(
                cached.masks,
                MaskSource::Cached,
                "{rate} Hz, blocks {blocks:?}"
            );
            let plain = run(
                &x,
                rate,
                &RenderOptions {
                    mask_cache: None,
                    ..o
                },
            );
            assert!(
                cached.channels == plain.channels,
                "{rate} Hz, blocks {blocks:?}: the replay differs"
            );
        }
    }
}

#[test]
fn a_changed_input_misses() {
    let dir = Scratch::new("input");
    let cache = dir.join("masks");
    let x = input(48_000, 1.5, 5);
    assert_eq!(
        run(&x, 48_000, &opts(Some(&cache), params_a())).masks,
        MaskSource::Computed
    );
    let mut y = x.clone();
    y[1][12_345] += 1e-3;
    let r = run(&y, 48_000, &opts(Some(&cache), params_b()));
    assert_eq!(
        r.masks,
        MaskSource::Computed,
        "one changed sample must miss"
    );
    assert!(r.channels == run(&y, 48_000, &opts(None, params_b())).channels);
    // A shorter input is another input too.
    let z: Vec<Vec<f32>> = x.iter().map(|c| c[..c.len() - 1].to_vec()).collect();
    assert_eq!(
        run(&z, 48_000, &opts(Some(&cache), params_b())).masks,
        MaskSource::Computed
    );
    assert_eq!(files(&cache).0.len(), 3);
    // The original is still there.
    assert_eq!(
        run(&x, 48_000, &opts(Some(&cache), params_b())).masks,
        MaskSource::Cached
    );
}

#[test]
fn a_changed_model_or_inference_setting_misses() {
    let dir = Scratch::new("settings");
    let cache = dir.join("masks");
    let x = input(48_000, 1.0, 6);
    let base = opts(Some(&cache), params_a());
    assert_eq!(run(&x, 48_000, &base).masks, MaskSource::Computed);
    let variants = [
        RenderOptions {
            model: ModelChoice::Synthetic(3),
            ..base.clone()
        },
        RenderOptions {
            channel_mode: ChannelMode::Independent,
            ..base.clone()
        },
        RenderOptions {
            threads: 2,
            ..base.clone()
        },
    ];
    for o in &variants {
        let r = run(&x, 48_000, o);
        assert_eq!(r.masks, MaskSource::Computed, "{o:?}");
        assert!(
            r.channels
                == run(
                    &x,
                    48_000,
                    &RenderOptions {
                        mask_cache: None,
                        ..o.clone()
                    }
                )
                .channels
        );
    }
    // Another host rate is another input.
    assert_eq!(run(&x, 44_100, &base).masks, MaskSource::Computed);
    assert_eq!(files(&cache).0.len(), 5);
    // Each of them now hits.
    for o in &variants {
        assert_eq!(run(&x, 48_000, o).masks, MaskSource::Cached, "{o:?}");
    }
}

#[test]
fn the_model_version_is_a_hash_of_the_graphs() {
    let dir = Scratch::new("version");
    let a = dir.join("a");
    let b = dir.join("b");
    for d in [&a, &b] {
        std::fs::create_dir_all(d).expect("mkdir");
        for g in ["enc.onnx", "erb_dec.onnx", "df_dec.onnx"] {
            std::fs::write(d.join(g), format!("graph {g}")).expect("write");
        }
    }
    let v = |d: &Path| model_version(&ModelChoice::Dfn3Dir(d.to_path_buf())).expect("hashes");
    assert_eq!(v(&a), v(&b), "same bytes, same version");
    std::fs::write(b.join("df_dec.onnx"), "graph df_dec.onnx, retrained").expect("write");
    assert_ne!(v(&a), v(&b), "changed bytes, another version");
    let embedded = model_version(&ModelChoice::Dfn3).expect("hashes");
    assert_ne!(embedded, v(&a));
    assert_ne!(
        model_version(&ModelChoice::Synthetic(1)).expect("hashes"),
        model_version(&ModelChoice::Synthetic(2)).expect("hashes")
    );
    // The embedded graphs hash like the same files read from a folder.
    let stateful = repo().join("models/dfn3/stateful");
    assert_eq!(embedded, v(&stateful));
    // A folder without the graphs has no version (its model fails to load on its own).
    assert!(model_version(&ModelChoice::Dfn3Dir(dir.join("nowhere"))).is_err());
}

#[test]
fn a_corrupt_or_truncated_entry_falls_back_to_computing() {
    let dir = Scratch::new("corrupt");
    let cache = dir.join("masks");
    let x = input(48_000, 1.5, 7);
    let plain_b = run(&x, 48_000, &opts(None, params_b()));
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 5] = [
        ("truncated to half", |b| b.truncate(b.len() / 2)),
        ("tail cut", |b| b.truncate(b.len() - 1)),
        ("a flipped mask byte", |b| {
            let i = b.len() / 2;
            b[i] ^= 0x40
        }),
        ("empty", |b| b.clear()),
        ("another format version", |b| b[8] = 99),
    ];
    for (name, damage) in damages {
        let first = run(&x, 48_000, &opts(Some(&cache), params_a()));
        assert_eq!(first.masks, MaskSource::Computed, "{name}");
        let (entries, _) = files(&cache);
        assert_eq!(entries.len(), 1);
        let mut bytes = std::fs::read(&entries[0]).expect("read entry");
        damage(&mut bytes);
        std::fs::write(&entries[0], &bytes).expect("write entry");

        let r = run(&x, 48_000, &opts(Some(&cache), params_b()));
        assert_eq!(r.masks, MaskSource::Computed, "{name}");
        let notice = r.notice.clone().unwrap_or_default();
        assert!(
            notice.contains("mask cache entry unusable"),
            "{name}: {notice}"
        );
        assert!(r.channels == plain_b.channels, "{name}: wrong audio");
        // The damaged entry was replaced by a good one.
        let again = run(&x, 48_000, &opts(Some(&cache), params_b()));
        assert_eq!(again.masks, MaskSource::Cached, "{name}");
        assert!(again.channels == plain_b.channels, "{name}");
        std::fs::remove_file(&entries[0]).expect("remove");
    }
}

/// Rewrites the key of the entry `from` to that of the entry `to` and fixes its checksum, so
/// that it verifies but holds another input's recording (the layout is in `voxsift_app::cache`).
fn forge(from: &Path, to: &Path) {
    let mut bytes = std::fs::read(from).expect("read");
    let target = std::fs::read(to).expect("read");
    bytes[12..44].copy_from_slice(&target[12..44]);
    let n = bytes.len();
    let digest = Sha256::digest(&bytes[..n - 40]);
    bytes[n - 40..n - 8].copy_from_slice(&digest);
    std::fs::write(to, bytes).expect("write");
}

#[test]
fn an_entry_that_does_not_match_the_hops_renders_again() {
    let dir = Scratch::new("mismatch");
    let cache = dir.join("masks");
    let x = input(48_000, 3.0, 8);
    // The same input for its first 1.5 s, then different: the replay goes well at first.
    let mut y = x.clone();
    for ch in &mut y {
        for v in &mut ch[72_000..] {
            *v *= 0.5;
        }
    }
    let o = opts(Some(&cache), params_a());
    run(&x, 48_000, &o);
    let from = Session::open(&x, 48_000, &o)
        .entry_path(&o.model)
        .expect("path");
    run(&y, 48_000, &o);
    let to = Session::open(&y, 48_000, &o)
        .entry_path(&o.model)
        .expect("path");
    assert_ne!(from, to);
    forge(&from, &to);

    let r = run(&y, 48_000, &opts(Some(&cache), params_b()));
    assert_eq!(r.masks, MaskSource::Computed);
    let notice = r.notice.clone().unwrap_or_default();
    assert!(
        notice.contains("differ from the recording") && notice.contains("masks computed"),
        "{notice}"
    );
    assert!(
        r.channels == run(&y, 48_000, &opts(None, params_b())).channels,
        "the fallback render is wrong"
    );
    // The forged entry was replaced by the real one.
    assert_eq!(
        run(&y, 48_000, &opts(Some(&cache), params_b())).masks,
        MaskSource::Cached
    );
}

#[test]
fn each_model_of_a_fused_set_has_its_own_entry() {
    let dir = Scratch::new("fused");
    let cache = dir.join("masks");
    let x = input(48_000, 2.0, 11);
    // Two synthetic models that give different masks, one of them at 32 kHz (resampled).
    let model = ModelChoice::Fused {
        members: vec![
            (ModelChoice::Synthetic(2), 1.0),
            (
                ModelChoice::SyntheticWith(SyntheticSettings {
                    lookahead: 3,
                    sample_rate: 32_000,
                    cutoff_hz: 4_000.0,
                    deferred: false,
                }),
                0.8,
            ),
        ],
        rule: Fusion::Max,
    };
    let with = |params| RenderOptions {
        model: model.clone(),
        ..opts(Some(&cache), params)
    };
    assert_eq!(
        run(&x, 48_000, &with(params_a())).masks,
        MaskSource::Computed
    );
    let (entries, _) = files(&cache);
    assert_eq!(entries.len(), 2, "one entry per member");
    let plain_b = run(
        &x,
        48_000,
        &RenderOptions {
            mask_cache: None,
            ..with(params_b())
        },
    );
    let cached = run(&x, 48_000, &with(params_b()));
    assert_eq!(cached.masks, MaskSource::Cached);
    assert!(cached.channels == plain_b.channels);
    // One member missing: it is computed, the other replayed, and the output is the same.
    std::fs::remove_file(&entries[1]).expect("remove");
    let partly = run(&x, 48_000, &with(params_b()));
    assert_eq!(partly.masks, MaskSource::Computed);
    assert!(partly.channels == plain_b.channels);
    assert_eq!(
        files(&cache).0,
        entries,
        "the missing entry was stored again"
    );
}

#[test]
fn realtime_renders_never_use_the_cache() {
    let dir = Scratch::new("realtime");
    let cache = dir.join("masks");
    let x = input(48_000, 1.0, 9);
    let o = RenderOptions {
        run_mode: RunMode::Realtime,
        ..opts(Some(&cache), params_a())
    };
    for _ in 0..2 {
        assert_eq!(run(&x, 48_000, &o).masks, MaskSource::Computed);
    }
    assert!(!cache.exists(), "nothing was written");
}

#[test]
fn pruning_keeps_the_folder_under_its_bound() {
    let dir = Scratch::new("prune");
    let cache = dir.join("masks");
    let mut sizes = Vec::new();
    for seed in 0..3 {
        let x = input(48_000, 1.0, 100 + seed);
        let o = RenderOptions {
            mask_cache: Some(MaskCache {
                dir: cache.clone(),
                max_bytes: 1,
            }),
            ..opts(None, params_a())
        };
        assert_eq!(run(&x, 48_000, &o).masks, MaskSource::Computed);
        let (entries, _) = files(&cache);
        // Only the newest entry survives a bound smaller than one entry.
        assert_eq!(entries.len(), 1);
        sizes.push(std::fs::metadata(&entries[0]).expect("meta").len());
    }
    // About 390 kB per second of audio and computed stream (a linked stereo render has one).
    let per_second = sizes[0] as f64;
    assert!((350_000.0..450_000.0).contains(&per_second), "{sizes:?}");
}

/// Runs the CLI; returns (exit code, stdout + stderr).
fn cli(args: &[&std::ffi::OsStr], env: &[(&str, &Path)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxsift"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("running the voxsift CLI");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
    )
}

fn write_input(path: &Path, channels: Vec<Vec<f32>>, rate: u32) {
    let audio = voxsift_app::io::Audio::new(rate, channels);
    voxsift_app::io::write_wav(path, &audio, voxsift_app::io::SampleFormat::F32)
        .expect("write input");
}

#[test]
fn the_cli_says_whether_masks_were_computed_or_cached() {
    let dir = Scratch::new("cli");
    let cache = dir.join("masks");
    let inp = dir.join("in");
    std::fs::create_dir_all(&inp).expect("mkdir");
    write_input(&inp.join("a.wav"), input(48_000, 1.0, 10), 48_000);
    let os = |s: &str| std::ffi::OsString::from(s);
    let render_args = |extra: &[&str]| {
        let mut v = vec![
            os("render"),
            inp.join("a.wav").into_os_string(),
            os("-o"),
            dir.join("out.wav").into_os_string(),
            os("--force"),
            os("--quiet"),
            os("--synthetic-model"),
            os("2"),
        ];
        v.extend(extra.iter().map(|s| os(s)));
        v
    };
    let cache_arg = cache.to_string_lossy().into_owned();
    for (extra, want) in [
        (vec!["--mask-cache", &cache_arg], "masks: computed"),
        (
            vec!["--mask-cache", &cache_arg, "--wet", "0.5"],
            "masks: cached",
        ),
        (vec!["--no-mask-cache", "--wet", "0.5"], "masks: computed"),
    ] {
        let args = render_args(&extra);
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let (code, text) = cli(&refs, &[]);
        assert_eq!(code, Some(0), "{text}");
        assert!(text.contains(want), "{extra:?}: {text}");
    }
    // The default folder is under XDG_CACHE_HOME.
    let xdg = dir.join("xdg");
    let args = render_args(&[]);
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let (code, text) = cli(&refs, &[("XDG_CACHE_HOME", &xdg)]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(files(&xdg.join("voxsift/masks")).0.len(), 1, "{text}");

    // Batch (with a new cache folder): the notes say it per file.
    let batch_cache = dir.join("batch-masks").to_string_lossy().into_owned();
    let out = dir.join("out");
    for (force, want) in [(false, "masks: computed"), (true, "masks: cached")] {
        let mut args = vec![
            os("batch"),
            inp.clone().into_os_string(),
            out.clone().into_os_string(),
            os("--quiet"),
            os("--synthetic-model"),
            os("2"),
            os("--mask-cache"),
            os(&batch_cache),
        ];
        if force {
            args.push(os("--force"));
            args.push(os("--beta"));
            args.push(os("3"));
        }
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let (code, text) = cli(&refs, &[]);
        assert_eq!(code, Some(0), "{text}");
        let row = text
            .lines()
            .find(|l| l.starts_with("a.wav "))
            .unwrap_or_default();
        assert!(row.contains(want), "{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// DeepFilterNet3 (needs ONNX Runtime)
// ---------------------------------------------------------------------------------------------

#[test]
fn dfn3_a_cached_render_needs_no_runtime_and_equals_an_uncached_one() {
    let dir = Scratch::new("dfn3-cli");
    let cache = dir.join("masks");
    let (mix, _) = mixture("cx04", 3.0);
    let stereo = vec![mix.clone(), mix.iter().map(|v| v * 0.5).collect()];
    let inp = dir.join("in.wav");
    write_input(&inp, stereo.clone(), 48_000);
    let os = |s: &str| std::ffi::OsString::from(s);
    let args = |out: &str, cached: bool, extra: &[&str]| {
        let mut v = vec![
            os("render"),
            inp.clone().into_os_string(),
            os("-o"),
            dir.join(out).into_os_string(),
            os("--quiet"),
        ];
        if cached {
            v.push(os("--mask-cache"));
            v.push(cache.clone().into_os_string());
        } else {
            v.push(os("--no-mask-cache"));
        }
        v.extend(extra.iter().map(|s| os(s)));
        v
    };
    let first = args("a.wav", true, &["--beta", "1"]);
    let refs: Vec<&std::ffi::OsStr> = first.iter().map(|a| a.as_os_str()).collect();
    let (code, text) = cli(&refs, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("masks: computed"), "{text}");

    // With no usable ONNX Runtime at all: only a replay can succeed.
    let settings = ["--wet", "0.7", "--beta", "2", "--floor-db", "-25"];
    let second = args("b.wav", true, &settings);
    let refs: Vec<&std::ffi::OsStr> = second.iter().map(|a| a.as_os_str()).collect();
    let nowhere = dir.join("nowhere/libonnxruntime.so");
    let (code, text) = cli(&refs, &[("VOXSIFT_ORT_LIB", &nowhere)]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("masks: cached"), "{text}");
    // And a missing runtime does fail a render that is not cached (the same bad path).
    let third = args("c.wav", false, &settings);
    let refs: Vec<&std::ffi::OsStr> = third.iter().map(|a| a.as_os_str()).collect();
    let (code, text) = cli(&refs, &[("VOXSIFT_ORT_LIB", &nowhere)]);
    assert_eq!(code, Some(1), "{text}");

    let cached = voxsift_app::io::read_audio(&dir.join("b.wav")).expect("read output");
    let plain = run(
        &stereo,
        48_000,
        &RenderOptions {
            params: EngineParams {
                wet: 0.7,
                beta: 2.0,
                floor_db: Some(-25.0),
                output_gain_db: 0.0,
                bypass: false,
            },
            ..RenderOptions::default()
        },
    );
    assert!(
        cached.channels == plain.channels,
        "the cached DFN3 render differs from an uncached one"
    );
}

/// Appends a `doc_string` (field 6) to an ONNX `ModelProto`: a valid graph with the same
/// weights but other bytes, i.e. a new model version.
fn add_doc_string(path: &Path) {
    let mut bytes = std::fs::read(path).expect("read graph");
    let doc = b"voxsift cache test";
    bytes.push(0x32);
    bytes.push(doc.len() as u8);
    bytes.extend_from_slice(doc);
    std::fs::write(path, bytes).expect("write graph");
}

#[test]
fn dfn3_a_new_graph_version_misses() {
    let dir = Scratch::new("dfn3-version");
    let cache = dir.join("masks");
    let graphs = dir.join("graphs");
    std::fs::create_dir_all(&graphs).expect("mkdir");
    for g in ["enc.onnx", "erb_dec.onnx", "df_dec.onnx"] {
        std::fs::copy(repo().join("models/dfn3/stateful").join(g), graphs.join(g)).expect("copy");
    }
    let (mix, _) = mixture("cx04", 2.0);
    let x = vec![mix];
    let o = RenderOptions {
        model: ModelChoice::Dfn3Dir(graphs.clone()),
        mask_cache: Some(MaskCache::new(&cache)),
        ..RenderOptions::default()
    };
    let first = run(&x, 48_000, &o);
    assert_eq!(first.masks, MaskSource::Computed);
    let hit = run(&x, 48_000, &o);
    assert_eq!(hit.masks, MaskSource::Cached);
    assert!(hit.channels == first.channels);
    add_doc_string(&graphs.join("enc.onnx"));
    let new_version = run(&x, 48_000, &o);
    assert_eq!(
        new_version.masks,
        MaskSource::Computed,
        "a new graph must miss"
    );
    // Same weights: the same masks.
    assert!(new_version.channels == first.channels);
    assert_eq!(files(&cache).0.len(), 2);
}
