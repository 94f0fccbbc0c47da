//! Batch rendering of a folder tree: every audio file under an input folder is rendered to a
//! WAV file at the same relative path under an output folder.
//!
//! - **Which files**: by extension, case-insensitive ([`AUDIO_EXTENSIONS`]). Other files,
//!   hidden entries (names starting with `.`), symbolic links to folders and the output folder
//!   itself (when it lies inside the input folder) are not rendered and are listed in
//!   [`BatchReport::ignored`].
//! - **Resuming**: an output that already exists is skipped unless [`BatchOptions::force`].
//!   Outputs are written by [`crate::io::write_wav`] to a hidden temporary name in the same
//!   folder and renamed into place once complete, so an interrupted run never leaves a partial
//!   file under the final name. Temporary files left by a run that was killed (their process
//!   is gone) are removed before the file is rendered again (Unix only).
//! - **Parallelism**: [`BatchOptions::jobs`] threads take files from a shared queue; each runs
//!   its own [`render`] with its own model worker. Offline renders are deterministic, so the
//!   outputs do not depend on the number of jobs.
//! - **Failures**: a file that cannot be read, decoded, rendered or written is reported as
//!   [`FileStatus::Failed`] and the batch goes on. Two inputs that would write the same output
//!   (`a.flac` and `a.mp3`) both fail rather than overwrite each other, and an output that
//!   would replace one of the inputs fails.

use crate::io::{read_audio, write_wav, Audio, SampleFormat};
use crate::post::{PostChain, PostReport};
use crate::render::{render, RenderOptions};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// File extensions (lower case) taken as audio; symphonia decodes all of them.
pub const AUDIO_EXTENSIONS: &[&str] = &[
    "wav", "wave", "flac", "mp3", "ogg", "oga", "m4a", "aac", "aif", "aiff", "aifc", "caf",
];

/// True when `path` has one of the [`AUDIO_EXTENSIONS`] (any case).
pub fn is_audio_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// How to run a batch.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Render settings, the same for every file.
    pub render: RenderOptions,
    /// The post chain, when asked for.
    pub post: Option<PostChain>,
    /// Output sample format.
    pub format: SampleFormat,
    /// Files rendered at once (at least 1).
    pub jobs: usize,
    /// Re-render files whose output exists.
    pub force: bool,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            render: RenderOptions::default(),
            post: None,
            format: SampleFormat::F32,
            jobs: 1,
            force: false,
        }
    }
}

/// Errors that stop a batch before any file is rendered (per-file errors are reported in
/// [`FileReport::error`] instead).
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The input folder does not exist or is not a folder.
    #[error("{}: not a folder", path.display())]
    NotAFolder {
        /// The input path.
        path: PathBuf,
    },
    /// The output folder is the input folder.
    #[error("{}: the output folder must differ from the input folder", path.display())]
    SameFolder {
        /// The folder.
        path: PathBuf,
    },
    /// A folder could not be listed or created.
    #[error("{}: {source}", path.display())]
    Io {
        /// The folder concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `jobs` is 0.
    #[error("jobs must be at least 1")]
    NoJobs,
    /// The post chain settings are invalid.
    #[error(transparent)]
    Post(#[from] crate::post::PostError),
}

/// One file to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The input path relative to the input folder.
    pub relative: PathBuf,
    /// The input file.
    pub input: PathBuf,
    /// The output file (`relative` with a `.wav` extension, under the output folder).
    pub output: PathBuf,
    /// Set when this job cannot run: another input maps to the same output, or the output
    /// would replace an input.
    pub conflict: Option<String>,
}

/// An entry of the input tree that is not rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// Path relative to the input folder.
    pub relative: PathBuf,
    /// Why it is not rendered.
    pub reason: IgnoreReason,
}

/// Why an entry is not rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoreReason {
    /// Not an audio extension.
    NotAudio,
    /// A hidden file or folder (name starting with `.`).
    Hidden,
    /// A symbolic link to a folder (not followed).
    FolderLink,
    /// The output folder, inside the input folder.
    OutputFolder,
    /// Neither a file nor a folder (socket, device, dangling link).
    Special,
}

impl std::fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NotAudio => "not audio",
            Self::Hidden => "hidden",
            Self::FolderLink => "link to a folder, not followed",
            Self::OutputFolder => "the output folder",
            Self::Special => "not a regular file",
        })
    }
}

/// The files a batch would render, in path order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Audio files, sorted by relative path.
    pub jobs: Vec<Job>,
    /// Everything else, sorted by relative path.
    pub ignored: Vec<Ignored>,
}

/// Walks `in_dir` and maps its audio files to outputs under `out_dir` (nothing is written).
pub fn plan(in_dir: &Path, out_dir: &Path) -> Result<Plan, BatchError> {
    if !in_dir.is_dir() {
        return Err(BatchError::NotAFolder {
            path: in_dir.to_path_buf(),
        });
    }
    let in_canon = fs::canonicalize(in_dir).map_err(|source| BatchError::Io {
        path: in_dir.to_path_buf(),
        source,
    })?;
    let out_canon = canonical_lenient(out_dir);
    if out_canon == in_canon {
        return Err(BatchError::SameFolder {
            path: in_dir.to_path_buf(),
        });
    }
    let mut plan = Plan::default();
    walk(in_dir, Path::new(""), &out_canon, &mut plan)?;
    plan.jobs.sort_by(|a, b| a.relative.cmp(&b.relative));
    plan.ignored.sort_by(|a, b| a.relative.cmp(&b.relative));

    // Outputs must be distinct and must not be inputs.
    let mut by_output: HashMap<PathBuf, Vec<usize>> = HashMap::new();
    for (i, j) in plan.jobs.iter_mut().enumerate() {
        j.output = out_dir.join(wav_name(&j.relative));
        by_output.entry(j.output.clone()).or_default().push(i);
    }
    let inputs: HashSet<PathBuf> = plan
        .jobs
        .iter()
        .filter_map(|j| fs::canonicalize(&j.input).ok())
        .collect();
    let names: Vec<PathBuf> = plan.jobs.iter().map(|j| j.relative.clone()).collect();
    for (i, j) in plan.jobs.iter_mut().enumerate() {
        let same = &by_output[&j.output];
        if same.len() > 1 {
            let others: Vec<String> = same
                .iter()
                .filter(|&&k| k != i)
                .map(|&k| names[k].display().to_string())
                .collect();
            j.conflict = Some(format!(
                "{} would also be written by {}",
                j.output.display(),
                others.join(", ")
            ));
        } else if fs::canonicalize(&j.output).is_ok_and(|o| inputs.contains(&o)) {
            j.conflict = Some(format!(
                "{} is one of the inputs; it would be overwritten",
                j.output.display()
            ));
        }
    }
    Ok(plan)
}

/// `path` canonicalised, or, when it does not exist yet, its longest existing ancestor
/// canonicalised with the rest appended.
fn canonical_lenient(path: &Path) -> PathBuf {
    if let Ok(p) = fs::canonicalize(path) {
        return p;
    }
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut tail = Vec::new();
    let mut cur = abs.as_path();
    loop {
        if let Ok(p) = fs::canonicalize(cur) {
            return tail.iter().rev().fold(p, |acc, t| acc.join(t));
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                tail.push(name.to_os_string());
                cur = parent;
            }
            _ => return abs,
        }
    }
}

/// `relative` with its extension replaced by `wav`.
fn wav_name(relative: &Path) -> PathBuf {
    relative.with_extension("wav")
}

fn walk(dir: &Path, rel: &Path, out_canon: &Path, plan: &mut Plan) -> Result<(), BatchError> {
    let io_err = |source| BatchError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(io_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_err)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let path = entry.path();
        let relative = rel.join(&name);
        let ignore = |reason| Ignored {
            relative: relative.clone(),
            reason,
        };
        if name.to_string_lossy().starts_with('.') {
            plan.ignored.push(ignore(IgnoreReason::Hidden));
            continue;
        }
        let link = entry.file_type().map_err(io_err)?.is_symlink();
        // Follows links to files; a dangling link has no metadata.
        let Ok(meta) = fs::metadata(&path) else {
            plan.ignored.push(ignore(IgnoreReason::Special));
            continue;
        };
        if meta.is_dir() {
            if link {
                plan.ignored.push(ignore(IgnoreReason::FolderLink));
            } else if fs::canonicalize(&path).is_ok_and(|p| p == out_canon) {
                plan.ignored.push(ignore(IgnoreReason::OutputFolder));
            } else {
                walk(&path, &relative, out_canon, plan)?;
            }
        } else if !meta.is_file() {
            plan.ignored.push(ignore(IgnoreReason::Special));
        } else if is_audio_path(&path) {
            plan.jobs.push(Job {
                relative,
                input: path,
                output: PathBuf::new(),
                conflict: None,
            });
        } else {
            plan.ignored.push(ignore(IgnoreReason::NotAudio));
        }
    }
    Ok(())
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileStatus {
    /// Rendered and written.
    Ok,
    /// The output existed and `force` was off.
    Skipped,
    /// Reading, rendering, the post chain or writing failed (see [`FileReport::error`]).
    Failed,
}

impl std::fmt::Display for FileStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
        })
    }
}

/// The outcome for one file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileReport {
    /// The input path relative to the input folder.
    pub relative: PathBuf,
    /// The output file.
    pub output: PathBuf,
    /// What happened.
    pub status: FileStatus,
    /// Duration of the audio in seconds, when it was read.
    pub audio_seconds: Option<f64>,
    /// Wall-clock time spent on the file (read, render, post, write), in seconds.
    pub seconds: f64,
    /// Why it failed.
    pub error: Option<String>,
    /// A notice from the render (for example an execution-provider fallback).
    pub notice: Option<String>,
    /// What the post chain did, when it ran.
    pub post: Option<PostReport>,
    /// Whether its masks were computed or replayed from the mask cache, when the file was
    /// rendered with the cache on.
    pub masks: Option<crate::cache::MaskSource>,
}

/// The outcome of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchReport {
    /// One report per audio file, in path order.
    pub files: Vec<FileReport>,
    /// Entries that were not rendered.
    pub ignored: Vec<Ignored>,
    /// Wall-clock time of the whole batch, in seconds.
    pub seconds: f64,
}

impl BatchReport {
    /// Number of files with this status.
    pub fn count(&self, status: FileStatus) -> usize {
        self.files.iter().filter(|f| f.status == status).count()
    }

    /// True when no file failed.
    pub fn success(&self) -> bool {
        self.count(FileStatus::Failed) == 0
    }
}

/// Receives progress from a running batch; called from the job threads.
pub trait Observer: Sync {
    /// The plan is known; `jobs` will be processed.
    fn planned(&self, _jobs: &[Job]) {}
    /// Job `index` starts (after the skip check: skipped files are only `finished`).
    fn started(&self, _index: usize, _job: &Job) {}
    /// Job `index` has rendered `done` of `total` samples (called when the percentage changes).
    fn progress(&self, _index: usize, _done: usize, _total: usize) {}
    /// Job `index` is over.
    fn finished(&self, _index: usize, _report: &FileReport) {}
}

/// An [`Observer`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Observer for Silent {}

/// The number of files to render at once when the user does not say: the cores this process
/// may use (`std::thread::available_parallelism`, which follows CPU affinity and cgroup
/// quotas) divided by the inference threads each job's worker runs, at least 1. Each job is
/// one render thread, which mostly waits for its mask frames offline, and one worker thread
/// per model stream, so this keeps the machine busy without running more inference threads
/// than cores: oversubscribed, ONNX Runtime's per-node thread wake-ups make DFN3 several times
/// slower (BENCHMARKS.md).
pub fn default_jobs(threads_per_job: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    (cores / threads_per_job.max(1)).max(1)
}

/// Plans and runs a batch from `in_dir` to `out_dir` (created if missing).
pub fn run(
    in_dir: &Path,
    out_dir: &Path,
    opts: &BatchOptions,
    observer: &dyn Observer,
) -> Result<BatchReport, BatchError> {
    if opts.jobs == 0 {
        return Err(BatchError::NoJobs);
    }
    if let Some(post) = &opts.post {
        post.validate()?;
    }
    let plan = plan(in_dir, out_dir)?;
    fs::create_dir_all(out_dir).map_err(|source| BatchError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    Ok(run_plan(plan, opts, observer))
}

/// Runs the jobs of `plan` on `opts.jobs` threads (at least 1).
pub fn run_plan(plan: Plan, opts: &BatchOptions, observer: &dyn Observer) -> BatchReport {
    let start = Instant::now();
    observer.planned(&plan.jobs);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<FileReport>>> = Mutex::new(vec![None; plan.jobs.len()]);
    let threads = opts.jobs.clamp(1, plan.jobs.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = plan.jobs.get(i) else { break };
                let report = run_job(i, job, opts, observer);
                observer.finished(i, &report);
                if let Ok(mut r) = results.lock() {
                    r[i] = Some(report);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let files = results
        .into_iter()
        .zip(&plan.jobs)
        .map(|(r, job)| {
            r.unwrap_or_else(|| FileReport {
                relative: job.relative.clone(),
                output: job.output.clone(),
                status: FileStatus::Failed,
                audio_seconds: None,
                seconds: 0.0,
                error: Some("internal error: no result".into()),
                notice: None,
                post: None,
                masks: None,
            })
        })
        .collect();
    BatchReport {
        files,
        ignored: plan.ignored,
        seconds: start.elapsed().as_secs_f64(),
    }
}

/// Renders one file; never panics out (a panic becomes a failure).
fn run_job(index: usize, job: &Job, opts: &BatchOptions, observer: &dyn Observer) -> FileReport {
    let start = Instant::now();
    let mut report = FileReport {
        relative: job.relative.clone(),
        output: job.output.clone(),
        status: FileStatus::Failed,
        audio_seconds: None,
        seconds: 0.0,
        error: None,
        notice: None,
        post: None,
        masks: None,
    };
    if let Some(c) = &job.conflict {
        report.error = Some(c.clone());
        return report;
    }
    if !opts.force && job.output.exists() {
        report.status = FileStatus::Skipped;
        return report;
    }
    observer.started(index, job);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        process(index, job, opts, observer, &mut report)
    }));
    match outcome {
        Ok(Ok(())) => report.status = FileStatus::Ok,
        Ok(Err(e)) => report.error = Some(e),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            report.error = Some(format!("internal error (panic): {msg}"));
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    report
}

fn process(
    index: usize,
    job: &Job,
    opts: &BatchOptions,
    observer: &dyn Observer,
    report: &mut FileReport,
) -> Result<(), String> {
    // The table names the file already: drop the path that io errors start with.
    let prefix = format!("{}: ", job.input.display());
    let input = read_audio(&job.input).map_err(|e| {
        let msg = e.to_string();
        msg.strip_prefix(&prefix)
            .map_or(msg.clone(), str::to_string)
    })?;
    report.audio_seconds = Some(input.duration_secs());
    if input.frames() == 0 {
        return Err("the file holds no audio".into());
    }
    let mut last = usize::MAX;
    let rendered = render(
        &input.channels,
        input.sample_rate,
        &opts.render,
        |done, total| {
            let pct = done * 100 / total.max(1);
            if pct != last {
                last = pct;
                observer.progress(index, done, total);
            }
        },
    )
    .map_err(|e| e.to_string())?;
    report.notice = rendered.notice.clone();
    if opts.render.mask_cache.is_some() {
        report.masks = Some(rendered.masks);
    }
    let mut channels = rendered.channels;
    if let Some(post) = &opts.post {
        report.post = Some(
            post.apply(&mut channels, input.sample_rate)
                .map_err(|e| e.to_string())?,
        );
    }
    if let Some(parent) = job.output.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        remove_stale_temps(parent, &job.output);
    }
    write_wav(
        &job.output,
        &Audio::new(input.sample_rate, channels),
        opts.format,
    )
    .map_err(|e| e.to_string())
}

/// Removes temporary files of `output` left by a killed process: [`write_wav`] names them
/// `.{name}.{pid}.{n}.tmp`; only those whose process no longer exists are removed.
fn remove_stale_temps(dir: &Path, output: &Path) {
    let Some(name) = output.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let prefix = format!(".{name}.");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|f| f.strip_suffix(".tmp"))
        else {
            continue;
        };
        let Some((pid, n)) = rest.split_once('.') else {
            continue;
        };
        let (Ok(pid), true) = (pid.parse::<u32>(), n.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        if !process_alive(pid) {
            // Best effort: a file we cannot remove is only clutter.
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Whether a process with this id exists (Unix); elsewhere assumed alive, so nothing is
/// removed.
fn process_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        if pid == std::process::id() {
            return true;
        }
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        if pid <= 0 {
            return true;
        }
        // SAFETY: kill with signal 0 only checks that the process exists.
        let r = unsafe { libc::kill(pid, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_extensions() {
        assert!(is_audio_path(Path::new("a/b.WAV")));
        assert!(is_audio_path(Path::new("x.Flac")));
        assert!(is_audio_path(Path::new("x.aiff")));
        assert!(!is_audio_path(Path::new("x.txt")));
        assert!(!is_audio_path(Path::new("wav")));
    }

    #[test]
    fn wav_names() {
        assert_eq!(wav_name(Path::new("a/b.flac")), PathBuf::from("a/b.wav"));
        assert_eq!(wav_name(Path::new("a/b.c.mp3")), PathBuf::from("a/b.c.wav"));
        assert_eq!(wav_name(Path::new("B.WAV")), PathBuf::from("B.wav"));
    }

    #[test]
    fn own_process_is_alive() {
        assert!(process_alive(std::process::id()));
    }
}
