//! Batch rendering of a folder tree with the synthetic model (no ONNX Runtime needed):
//! mirroring, skipping non-audio, failing corrupt files without stopping, resuming, forcing,
//! parallel jobs, temporary files, and the CLI's exit code and summary.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;
use voxsift_app::batch::{
    self, BatchOptions, FileReport, FileStatus, IgnoreReason, Job, Observer, Silent,
};
use voxsift_app::io::{read_audio, write_wav, Audio, SampleFormat};
use voxsift_app::post::PostChain;
use voxsift_app::render::{render, ModelChoice, RenderOptions};

/// A fresh, empty scratch folder for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("voxsift-batch-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create scratch folder");
    dir
}

/// Noise plus a sine, `channels` channels of `seconds` at `rate`.
fn signal(rate: u32, channels: usize, seconds: f64, seed: u64) -> Audio {
    let n = (seconds * f64::from(rate)) as usize;
    Audio::new(
        rate,
        (0..channels)
            .map(|c| {
                let noise = common::noise(n, seed + c as u64, 0.1);
                noise
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v + 0.2
                            * (2.0 * std::f32::consts::PI * 300.0 * i as f32 / rate as f32).sin()
                    })
                    .collect()
            })
            .collect(),
    )
}

fn put_wav(path: &Path, audio: &Audio) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).expect("mkdir");
    }
    write_wav(path, audio, SampleFormat::I16).expect("write input");
}

/// The test tree:
///
/// ```text
/// in/a.wav                 48 kHz mono 0.5 s
/// in/notes.txt             not audio
/// in/.hidden.wav           hidden
/// in/sub/b.WAV             48 kHz stereo 0.3 s (upper-case extension)
/// in/sub/broken.wav        corrupt: a RIFF header followed by junk
/// in/sub/deeper/c.wav      44.1 kHz mono 0.4 s
/// ```
fn make_tree(root: &Path) -> PathBuf {
    let input = root.join("in");
    put_wav(&input.join("a.wav"), &signal(48_000, 1, 0.5, 1));
    put_wav(&input.join("sub/b.WAV"), &signal(48_000, 2, 0.3, 2));
    put_wav(&input.join("sub/deeper/c.wav"), &signal(44_100, 1, 0.4, 3));
    put_wav(&input.join(".hidden.wav"), &signal(48_000, 1, 0.1, 4));
    fs::write(input.join("notes.txt"), "not audio\n").expect("write text");
    let mut junk = b"RIFF\x24\x10\x00\x00WAVEfmt ".to_vec();
    junk.extend((0..4000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    fs::write(input.join("sub/broken.wav"), junk).expect("write corrupt");
    input
}

fn options(jobs: usize) -> BatchOptions {
    BatchOptions {
        render: RenderOptions {
            model: ModelChoice::Synthetic(2),
            ..RenderOptions::default()
        },
        jobs,
        ..BatchOptions::default()
    }
}

/// Every file under `dir`, relative, sorted.
fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        for e in fs::read_dir(dir).expect("list").map(|e| e.expect("entry")) {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(p.strip_prefix(base).expect("under base").to_path_buf());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

fn set(paths: &[&str]) -> BTreeSet<PathBuf> {
    paths.iter().map(PathBuf::from).collect()
}

fn status_of(files: &[FileReport]) -> Vec<(String, FileStatus)> {
    files
        .iter()
        .map(|f| (f.relative.display().to_string(), f.status))
        .collect()
}

fn mtimes(dir: &Path, files: &[&str]) -> Vec<SystemTime> {
    files
        .iter()
        .map(|f| {
            fs::metadata(dir.join(f))
                .and_then(|m| m.modified())
                .expect("mtime")
        })
        .collect()
}

const OUTPUTS: [&str; 3] = ["a.wav", "sub/b.wav", "sub/deeper/c.wav"];

#[test]
fn mirrors_the_tree_skips_non_audio_and_reports_the_corrupt_file() {
    let root = scratch("mirror");
    let input = make_tree(&root);
    let out = root.join("out");
    let report = batch::run(&input, &out, &options(1), &Silent).expect("batch runs");

    assert_eq!(
        status_of(&report.files),
        vec![
            ("a.wav".into(), FileStatus::Ok),
            ("sub/b.WAV".into(), FileStatus::Ok),
            ("sub/broken.wav".into(), FileStatus::Failed),
            ("sub/deeper/c.wav".into(), FileStatus::Ok),
        ]
    );
    assert!(!report.success());
    let broken = &report.files[2];
    let err = broken.error.as_deref().expect("an error");
    assert!(err.contains("unsupported audio format"), "{err}");
    assert_eq!(broken.output, out.join("sub/broken.wav"));
    println!("corrupt file: {err}");

    let ignored: Vec<(String, IgnoreReason)> = report
        .ignored
        .iter()
        .map(|i| (i.relative.display().to_string(), i.reason))
        .collect();
    assert_eq!(
        ignored,
        vec![
            (".hidden.wav".into(), IgnoreReason::Hidden),
            ("notes.txt".into(), IgnoreReason::NotAudio),
        ]
    );

    // Exactly the mirrored outputs: no output for the corrupt file, no temporary files.
    assert_eq!(tree(&out), set(&OUTPUTS));

    // Each output is the render of its input: same rate, channels and length, bit-identical
    // to rendering the file directly.
    for (src, dst) in [
        ("a.wav", "a.wav"),
        ("sub/b.WAV", "sub/b.wav"),
        ("sub/deeper/c.wav", "sub/deeper/c.wav"),
    ] {
        let a = read_audio(&input.join(src)).expect("input");
        let b = read_audio(&out.join(dst)).expect("output");
        assert_eq!(b.sample_rate, a.sample_rate);
        assert_eq!(b.num_channels(), a.num_channels());
        assert_eq!(b.frames(), a.frames());
        let direct = render(&a.channels, a.sample_rate, &options(1).render, |_, _| {})
            .expect("direct render");
        assert!(direct.channels == b.channels, "{src} differs from render()");
        let rep = report
            .files
            .iter()
            .find(|f| f.relative == Path::new(src))
            .expect("reported");
        assert!((rep.audio_seconds.expect("duration") - a.duration_secs()).abs() < 1e-9);
    }
    fs::remove_dir_all(&root).ok();
}

#[test]
fn second_run_resumes_and_force_rerenders() {
    let root = scratch("resume");
    let input = make_tree(&root);
    let out = root.join("out");
    let first = batch::run(&input, &out, &options(1), &Silent).expect("first run");
    assert_eq!(first.count(FileStatus::Ok), 3);
    let before = mtimes(&out, &OUTPUTS);
    let bytes: Vec<Vec<u8>> = OUTPUTS
        .iter()
        .map(|f| fs::read(out.join(f)).expect("read"))
        .collect();

    std::thread::sleep(std::time::Duration::from_millis(50));
    let second = batch::run(&input, &out, &options(1), &Silent).expect("second run");
    assert_eq!(
        status_of(&second.files),
        vec![
            ("a.wav".into(), FileStatus::Skipped),
            ("sub/b.WAV".into(), FileStatus::Skipped),
            // No output was written for it, so it is tried (and fails) again.
            ("sub/broken.wav".into(), FileStatus::Failed),
            ("sub/deeper/c.wav".into(), FileStatus::Skipped),
        ]
    );
    assert_eq!(mtimes(&out, &OUTPUTS), before, "skipped outputs untouched");

    let forced = batch::run(
        &input,
        &out,
        &BatchOptions {
            force: true,
            ..options(1)
        },
        &Silent,
    )
    .expect("forced run");
    assert_eq!(forced.count(FileStatus::Ok), 3);
    assert_eq!(forced.count(FileStatus::Failed), 1);
    let after = mtimes(&out, &OUTPUTS);
    for (b, a) in before.iter().zip(&after) {
        assert!(a > b, "re-rendered: {a:?} after {b:?}");
    }
    for (f, old) in OUTPUTS.iter().zip(&bytes) {
        assert_eq!(
            &fs::read(out.join(f)).expect("read"),
            old,
            "{f} deterministic"
        );
    }
    assert_eq!(tree(&out), set(&OUTPUTS));
    fs::remove_dir_all(&root).ok();
}

#[test]
fn two_jobs_give_the_same_outputs_as_one() {
    let root = scratch("jobs");
    let input = make_tree(&root);
    for i in 0..3 {
        put_wav(
            &input.join(format!("more/m{i}.wav")),
            &signal(48_000, 1 + i % 2, 0.35, 10 + i as u64),
        );
    }
    let one = root.join("one");
    let two = root.join("two");
    let r1 = batch::run(&input, &one, &options(1), &Silent).expect("jobs 1");
    let r2 = batch::run(&input, &two, &options(2), &Silent).expect("jobs 2");
    assert_eq!(status_of(&r1.files), status_of(&r2.files));
    assert_eq!(r2.count(FileStatus::Ok), 6);
    println!(
        "6 files + 1 corrupt: {:.2} s with 1 job, {:.2} s with 2",
        r1.seconds, r2.seconds
    );
    let files = tree(&one);
    assert_eq!(files, tree(&two));
    assert_eq!(files.len(), 6);
    for f in &files {
        assert_eq!(
            fs::read(one.join(f)).expect("one"),
            fs::read(two.join(f)).expect("two"),
            "{} differs between 1 and 2 jobs",
            f.display()
        );
    }
    fs::remove_dir_all(&root).ok();
}

#[test]
fn the_default_jobs_fill_the_cores_without_oversubscribing_them() {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    // One inference thread per job: one job per core.
    assert_eq!(batch::default_jobs(1), cores);
    // 0 threads is taken as 1, as the CLI does.
    assert_eq!(batch::default_jobs(0), cores);
    // More threads per job than cores: still one job.
    assert_eq!(batch::default_jobs(cores + 1), 1);
    // Never more inference threads than cores in all, and never fewer than one job.
    for t in 1..=cores + 2 {
        let jobs = batch::default_jobs(t);
        assert!(jobs >= 1);
        assert!(
            jobs == 1 || jobs * t <= cores,
            "{jobs} jobs x {t} threads on {cores} cores"
        );
    }
}

#[test]
fn a_killed_runs_temporary_file_is_not_taken_as_done_and_is_removed() {
    let root = scratch("stale");
    let input = make_tree(&root);
    let out = root.join("out");
    fs::create_dir_all(&out).expect("mkdir");
    // What io::write_wav leaves behind when its process is killed mid-write (no process has
    // this id: Linux pids stay below 2^22).
    let stale = out.join(".a.wav.999999999.0.tmp");
    fs::write(&stale, b"RIFF half a file").expect("stale temp");
    // Not ours to touch: another name.
    let other = out.join(".notes.wav.999999999.0.tmp.keep");
    fs::write(&other, b"x").expect("other");
    let report = batch::run(&input, &out, &options(1), &Silent).expect("runs");
    assert_eq!(report.files[0].status, FileStatus::Ok, "a.wav rendered");
    assert!(!stale.exists(), "stale temporary file removed");
    assert!(other.exists());
    fs::remove_file(&other).expect("rm");
    assert_eq!(tree(&out), set(&OUTPUTS));
    fs::remove_dir_all(&root).ok();
}

#[test]
fn post_chain_runs_on_every_file() {
    let root = scratch("post");
    let input = root.join("in");
    put_wav(&input.join("x.wav"), &signal(48_000, 1, 1.5, 5));
    put_wav(&input.join("y/z.wav"), &signal(48_000, 2, 1.5, 6));
    let out = root.join("out");
    let opts = BatchOptions {
        post: Some(PostChain::default()),
        ..options(2)
    };
    let report = batch::run(&input, &out, &opts, &Silent).expect("runs");
    assert!(report.success());
    for f in &report.files {
        let post = f.post.expect("post report");
        let l = post.loudness.expect("loudness ran");
        let audio = read_audio(&f.output).expect("output");
        let m = voxsift_app::post::measure(&audio.channels, audio.sample_rate).expect("measure");
        println!("{}: {post}; file {:.3} LUFS", f.relative.display(), m.lufs);
        assert!((m.lufs + 16.0).abs() < 0.1, "{}", m.lufs);
        assert!((l.output_lufs - m.lufs).abs() < 0.01);
        assert!(m.true_peak_db <= -1.0 + 0.01);
    }
    fs::remove_dir_all(&root).ok();
}

#[test]
fn colliding_outputs_fail_and_output_inside_input_is_not_rendered_again() {
    let root = scratch("collide");
    let input = root.join("in");
    // Both map to x.wav: neither may overwrite the other. (A WAV named .flac: decoding
    // probes the content.)
    put_wav(&input.join("x.wav"), &signal(48_000, 1, 0.2, 7));
    put_wav(&input.join("x.flac"), &signal(48_000, 1, 0.2, 8));
    put_wav(&input.join("y.wav"), &signal(48_000, 1, 0.2, 9));
    let out = input.join("rendered");
    let report = batch::run(&input, &out, &options(1), &Silent).expect("runs");
    assert_eq!(
        status_of(&report.files),
        vec![
            ("x.flac".into(), FileStatus::Failed),
            ("x.wav".into(), FileStatus::Failed),
            ("y.wav".into(), FileStatus::Ok),
        ]
    );
    assert!(report.files[0]
        .error
        .as_deref()
        .is_some_and(|e| e.contains("x.wav")));
    // The output folder inside the input folder is not walked as input.
    let again = batch::run(&input, &out, &options(1), &Silent).expect("runs again");
    assert_eq!(again.files.len(), 3);
    assert!(again
        .ignored
        .iter()
        .any(|i| i.relative == Path::new("rendered") && i.reason == IgnoreReason::OutputFolder));
    assert_eq!(tree(&out), set(&["y.wav"]));
    fs::remove_dir_all(&root).ok();
}

#[test]
fn bad_folders_and_settings_are_errors() {
    let root = scratch("errors");
    let input = make_tree(&root);
    let err = batch::run(&root.join("nope"), &root.join("o"), &options(1), &Silent).unwrap_err();
    assert!(matches!(err, batch::BatchError::NotAFolder { .. }), "{err}");
    let err = batch::run(&input, &input, &options(1), &Silent).unwrap_err();
    assert!(matches!(err, batch::BatchError::SameFolder { .. }), "{err}");
    let err = batch::run(&input, &root.join("o"), &options(0), &Silent).unwrap_err();
    assert!(matches!(err, batch::BatchError::NoJobs), "{err}");
    let bad_post = BatchOptions {
        post: Some(PostChain {
            lufs: 3.0,
            ..PostChain::default()
        }),
        ..options(1)
    };
    let err = batch::run(&input, &root.join("o"), &bad_post, &Silent).unwrap_err();
    assert!(matches!(err, batch::BatchError::Post(_)), "{err}");
    assert!(!root.join("o").exists(), "nothing written on a setup error");
    fs::remove_dir_all(&root).ok();
}

/// Counts observer calls.
#[derive(Default)]
struct Counter {
    planned: AtomicUsize,
    started: AtomicUsize,
    finished: AtomicUsize,
    last: Mutex<Vec<usize>>,
}

impl Observer for Counter {
    fn planned(&self, jobs: &[Job]) {
        self.planned.store(jobs.len(), Ordering::SeqCst);
        if let Ok(mut l) = self.last.lock() {
            *l = vec![0; jobs.len()];
        }
    }
    fn started(&self, _: usize, _: &Job) {
        self.started.fetch_add(1, Ordering::SeqCst);
    }
    fn progress(&self, index: usize, done: usize, total: usize) {
        assert!(done <= total);
        let mut l = self.last.lock().expect("lock");
        assert!(done > l[index], "progress moves forward");
        l[index] = done;
    }
    fn finished(&self, _: usize, _: &FileReport) {
        self.finished.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn observer_sees_every_file() {
    let root = scratch("observer");
    let input = make_tree(&root);
    let c = Counter::default();
    let report = batch::run(&input, &root.join("out"), &options(2), &c).expect("runs");
    assert_eq!(c.planned.load(Ordering::SeqCst), 4);
    assert_eq!(c.started.load(Ordering::SeqCst), 4);
    assert_eq!(c.finished.load(Ordering::SeqCst), 4);
    // Rendered files reached 100 %.
    let last = c.last.lock().expect("lock").clone();
    for (f, done) in report.files.iter().zip(last) {
        assert_eq!(
            done > 0,
            f.status == FileStatus::Ok,
            "{}",
            f.relative.display()
        );
    }
    fs::remove_dir_all(&root).ok();
}

#[test]
fn cli_prints_a_summary_and_fails_when_a_file_failed() {
    let root = scratch("cli");
    let input = make_tree(&root);
    let out = root.join("out");
    let run = |extra: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_voxsift"))
            .arg("batch")
            .arg(&input)
            .arg(&out)
            .args([
                "--synthetic-model",
                "2",
                "--quiet",
                "--jobs",
                "2",
                "--no-mask-cache",
            ])
            .args(extra)
            .output()
            .expect("run voxsift");
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run(&["--post", "--lufs", "-20"]);
    println!("{stdout}{stderr}");
    assert_eq!(code, Some(1), "a failed file makes the exit code non-zero");
    let header = stdout.lines().next().expect("a table");
    for col in ["file", "status", "duration", "seconds", "notes"] {
        assert!(header.contains(col), "{header}");
    }
    let broken = stdout
        .lines()
        .find(|l| l.starts_with("sub/broken.wav "))
        .expect("a row for the corrupt file");
    assert!(broken.contains(" failed "), "{broken}");
    assert!(broken.contains("unsupported audio format"), "{broken}");
    assert!(stdout.contains("-20.0 LUFS"), "{stdout}");
    assert!(stdout.contains("3 ok, 0 skipped, 1 failed"), "{stdout}");
    assert!(stdout.contains("notes.txt (not audio)"), "{stdout}");
    assert!(stderr.contains("1 of 4 files failed"), "{stderr}");

    // Without the corrupt file: resumes (all skipped) and exits 0.
    fs::remove_file(input.join("sub/broken.wav")).expect("rm");
    let (code, stdout, _) = run(&[]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("0 ok, 3 skipped, 0 failed"), "{stdout}");

    // Post-chain flags without --post are refused.
    let (code, _, stderr) = run(&["--lufs", "-20"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("--post"), "{stderr}");
    fs::remove_dir_all(&root).ok();
}
