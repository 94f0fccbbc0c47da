//! Evaluation sets: the folder layout, and rendering and scoring every file in it.
//!
//! The layout is that of `../shared/eval-audio` (see its README):
//!
//! - a **mixtures** folder of audio files `<id>.<ext>`, each with its references in
//!   `stems/<id>__speech.<ext>` and, optionally, `stems/<id>__other.<ext>` (the mixture is the
//!   sum of the two). Without an other stem it is taken as `mixture − speech`. A mixture
//!   without a speech stem cannot be scored and is listed in [`EvalSet::skipped`];
//! - optionally a **speech-only** folder (scored for speech damage: the output against the
//!   input) and a **music-only** folder (scored for music leak: the output level against the
//!   input's).
//!
//! [`Folders::detect`] takes either the mixtures folder itself (it has a `stems/` folder) or a
//! root folder holding `mixtures/` and, if present, `speech/` and `music/`.
//!
//! The estimates are either rendered here ([`Estimates::Render`], offline: the same as
//! `voxsift render`) or read from a folder ([`Estimates::Dir`]) where the estimate of an input
//! at relative path `a/b.flac` is `a/b.wav` (the layout `voxsift batch` writes) or, failing
//! that, `b.wav` at the top of the folder.

use super::report::{
    EstimatesInfo, MixtureItem, MusicItem, RenderSettings, SetReport, Skipped, SpeechItem, Summary,
};
use super::{downmix, plot, residual, score_mixture, EvalError, Inputs, Mono, ScoreOptions};
use crate::batch::is_audio_path;
use crate::io::{read_audio, write_wav, Audio, SampleFormat};
use crate::render::{render, RenderOptions};
use serde::Serialize;
use std::fs;
use std::path::{Path, PathBuf};

/// What kind of input an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// Speech plus something else, with reference stems.
    Mixture,
    /// Clean speech alone.
    Speech,
    /// Music alone.
    Music,
}

/// One input of an evaluation set.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The file name without its extension.
    pub id: String,
    /// What it is.
    pub category: Category,
    /// Its path relative to the folder given to [`Folders::detect`] (`/`-separated).
    pub relative: String,
    /// The input file.
    pub input: PathBuf,
    /// The speech stem (mixtures only).
    pub speech: Option<PathBuf>,
    /// The other stem, if there is one (mixtures only).
    pub other: Option<PathBuf>,
    /// The other stem is a second talker, not music (see [`ScanOptions::talker_mixes`]).
    pub talker_mix: bool,
}

/// Where the three kinds of input are.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Folders {
    /// The folder relative paths are taken from.
    pub base: PathBuf,
    /// Mixtures with a `stems/` folder.
    pub mixtures: Option<PathBuf>,
    /// Speech-only files.
    pub speech: Option<PathBuf>,
    /// Music-only files.
    pub music: Option<PathBuf>,
}

impl Folders {
    /// The layout of `dir`: a mixtures folder (it holds `stems/`) or a root holding
    /// `mixtures/` (with `stems/`) and optionally `speech/` and `music/`.
    pub fn detect(dir: &Path) -> Result<Self, EvalError> {
        if !dir.is_dir() {
            return Err(EvalError::Layout {
                path: dir.to_path_buf(),
                detail: "not a folder".into(),
            });
        }
        if dir.join("stems").is_dir() {
            return Ok(Self {
                base: dir.to_path_buf(),
                mixtures: Some(dir.to_path_buf()),
                speech: None,
                music: None,
            });
        }
        let sub = |name: &str| Some(dir.join(name)).filter(|p| p.is_dir());
        let found = Self {
            base: dir.to_path_buf(),
            mixtures: sub("mixtures").filter(|p| p.join("stems").is_dir()),
            speech: sub("speech"),
            music: sub("music"),
        };
        if found.mixtures.is_none() && found.speech.is_none() && found.music.is_none() {
            return Err(EvalError::Layout {
                path: dir.to_path_buf(),
                detail: "no stems/ folder, and no mixtures/ (with stems/), speech/ or music/ \
                         folder: not an evaluation set"
                    .into(),
            });
        }
        Ok(found)
    }
}

/// Which inputs to take.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScanOptions {
    /// Ids (or id prefixes) of mixtures whose other stem is a second talker: scored, but
    /// reported apart and left out of the means (speech isolation is not expected to remove a
    /// voice).
    pub talker_mixes: Vec<String>,
    /// Only inputs whose id starts with one of these (all when empty).
    pub only: Vec<String>,
}

/// The inputs of an evaluation set, sorted (mixtures, then speech, then music; by name).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EvalSet {
    /// What will be scored.
    pub items: Vec<Item>,
    /// Inputs that cannot be scored, with the reason.
    pub skipped: Vec<Skipped>,
}

/// The audio files directly in `dir`, sorted by name.
fn audio_files(dir: &Path) -> Result<Vec<PathBuf>, EvalError> {
    let entries = fs::read_dir(dir).map_err(|e| EvalError::Layout {
        path: dir.to_path_buf(),
        detail: format!("cannot list: {e}"),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && is_audio_path(p)
                && !p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn file_stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `path` relative to `base` with `/` separators (the file name if it is not under `base`).
fn relative(path: &Path, base: &Path) -> String {
    let rel = path
        .strip_prefix(base)
        .ok()
        .filter(|r| !r.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| {
            // A folder given on its own: keep its name, e.g. `speech/sp01.flac`.
            let parent = path.parent().and_then(Path::file_name);
            match (parent, path.file_name()) {
                (Some(p), Some(f)) => Path::new(p).join(f),
                _ => path.to_path_buf(),
            }
        });
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// The stem `stems/<id>__<kind>.<any audio extension>`, if there is one.
fn find_stem(stems: &[PathBuf], id: &str, kind: &str) -> Option<PathBuf> {
    let want = format!("{id}__{kind}");
    stems.iter().find(|p| file_stem(p) == want).cloned()
}

impl EvalSet {
    /// Lists the inputs of `folders`.
    pub fn scan(folders: &Folders, opts: &ScanOptions) -> Result<Self, EvalError> {
        let wanted =
            |id: &str| opts.only.is_empty() || opts.only.iter().any(|p| id.starts_with(p.as_str()));
        let mut set = Self::default();
        if let Some(dir) = &folders.mixtures {
            let stems = audio_files(&dir.join("stems"))?;
            for input in audio_files(dir)? {
                let id = file_stem(&input);
                if !wanted(&id) {
                    continue;
                }
                let rel = relative(&input, &folders.base);
                match find_stem(&stems, &id, "speech") {
                    Some(speech) => set.items.push(Item {
                        talker_mix: opts.talker_mixes.iter().any(|p| id.starts_with(p.as_str())),
                        other: find_stem(&stems, &id, "other"),
                        speech: Some(speech),
                        category: Category::Mixture,
                        relative: rel,
                        input,
                        id,
                    }),
                    None => set.skipped.push(Skipped {
                        file: rel,
                        reason: format!("no reference: stems/{id}__speech.* is missing"),
                    }),
                }
            }
        }
        for (dir, category) in [
            (&folders.speech, Category::Speech),
            (&folders.music, Category::Music),
        ] {
            let Some(dir) = dir else { continue };
            for input in audio_files(dir)? {
                let id = file_stem(&input);
                if wanted(&id) {
                    set.items.push(Item {
                        relative: relative(&input, &folders.base),
                        id,
                        category,
                        input,
                        speech: None,
                        other: None,
                        talker_mix: false,
                    });
                }
            }
        }
        Ok(set)
    }
}

/// Where the estimates come from.
#[derive(Debug, Clone)]
pub enum Estimates {
    /// Render every input with these options (as `voxsift render` does).
    Render(RenderOptions),
    /// Read them from this folder (see the module documentation).
    Dir(PathBuf),
}

/// How to run an evaluation set.
#[derive(Debug, Clone)]
pub struct SetOptions {
    /// Where the estimates come from.
    pub estimates: Estimates,
    /// Score settings.
    pub score: ScoreOptions,
    /// Score only the first this many seconds of every input (quick runs).
    pub max_seconds: Option<f64>,
    /// Write the plots of every mixture into this folder.
    pub plots: Option<PathBuf>,
    /// Write the rendered estimates (32-bit float WAV) into this folder, at the inputs'
    /// relative paths.
    pub keep_renders: Option<PathBuf>,
    /// A description of the model for the report (e.g. "dfn3 (embedded)").
    pub model_name: String,
}

/// Progress of [`run`].
#[derive(Debug)]
pub enum Progress<'a> {
    /// Item `index` (of `count`) starts; it is `frames` samples long.
    Started {
        /// Position in [`EvalSet::items`].
        index: usize,
        /// Number of items.
        count: usize,
        /// The item.
        item: &'a Item,
        /// Its length in samples (what [`Progress::Rendering`] counts).
        frames: usize,
    },
    /// Rendering item `index`: `done` of `total` samples.
    Rendering {
        /// Position in [`EvalSet::items`].
        index: usize,
        /// Samples done.
        done: usize,
        /// Samples in all (input plus latency).
        total: usize,
    },
    /// A notice from rendering (e.g. an execution provider that fell back to the CPU).
    Notice(String),
    /// Item `index` is scored.
    Finished {
        /// Position in [`EvalSet::items`].
        index: usize,
    },
}

/// The estimate file for `item` in `dir`, if there is one.
pub fn estimate_path(dir: &Path, item: &Item) -> Option<PathBuf> {
    let nested = dir.join(Path::new(&item.relative).with_extension("wav"));
    let flat = dir.join(format!("{}.wav", item.id));
    [nested, flat].into_iter().find(|p| p.is_file())
}

/// Reads `path` as mono at `rate`, cut to `max` samples.
fn read_reference(path: &Path, rate: u32, max: usize) -> Result<Vec<f64>, EvalError> {
    let mono = Mono::read(path)?;
    mono.expect_rate(path, rate)?;
    let mut s = mono.samples;
    s.truncate(max);
    Ok(s)
}

/// Renders or reads the estimate of `item`, as mono.
fn estimate(
    item: &Item,
    index: usize,
    input: &Audio,
    opts: &SetOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Vec<f64>, EvalError> {
    match &opts.estimates {
        Estimates::Render(render_opts) => {
            let rendered = render(
                &input.channels,
                input.sample_rate,
                render_opts,
                |done, total| progress(Progress::Rendering { index, done, total }),
            )
            .map_err(|source| EvalError::Render {
                path: item.input.clone(),
                source,
            })?;
            if let Some(n) = &rendered.notice {
                progress(Progress::Notice(n.clone()));
            }
            if let Some(dir) = &opts.keep_renders {
                let path = dir.join(Path::new(&item.relative).with_extension("wav"));
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(|source| EvalError::Write {
                        path: parent.to_path_buf(),
                        source,
                    })?;
                }
                let audio = Audio::new(input.sample_rate, rendered.channels.clone());
                write_wav(&path, &audio, SampleFormat::F32)?;
            }
            Ok(downmix(&rendered.channels))
        }
        Estimates::Dir(dir) => {
            let path = estimate_path(dir, item).ok_or_else(|| EvalError::Layout {
                path: dir.clone(),
                detail: format!(
                    "no estimate for {}: expected {} or {}.wav",
                    item.relative,
                    Path::new(&item.relative).with_extension("wav").display(),
                    item.id
                ),
            })?;
            read_reference(&path, input.sample_rate, input.frames())
        }
    }
}

/// Renders (or reads) and scores every item of `set`, in order, and writes the plots if
/// asked; `progress` is told what happens. Fails on the first item that cannot be read,
/// rendered or scored (a partial evaluation would not be comparable).
pub fn run(
    set: &EvalSet,
    opts: &SetOptions,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<SetReport, EvalError> {
    let mut report = SetReport {
        tool: format!("voxsift {}", env!("CARGO_PKG_VERSION")),
        estimates: match &opts.estimates {
            Estimates::Render(r) => EstimatesInfo {
                source: "render".into(),
                dir: None,
                settings: Some(RenderSettings::new(r, &opts.model_name)),
            },
            Estimates::Dir(d) => EstimatesInfo {
                source: "files".into(),
                dir: Some(d.display().to_string()),
                settings: None,
            },
        },
        score: opts.score,
        max_seconds: opts.max_seconds,
        mixtures: Vec::new(),
        speech: Vec::new(),
        music: Vec::new(),
        skipped: set.skipped.clone(),
        summary: Summary::default(),
    };
    if let Some(dir) = &opts.plots {
        fs::create_dir_all(dir).map_err(|source| EvalError::Write {
            path: dir.clone(),
            source,
        })?;
    }
    let count = set.items.len();
    for (index, item) in set.items.iter().enumerate() {
        let mut input = read_audio(&item.input)?;
        let sr = input.sample_rate;
        if let Some(s) = opts.max_seconds {
            let max = (s.max(0.0) * f64::from(sr)).round() as usize;
            for c in &mut input.channels {
                c.truncate(max);
            }
        }
        let frames = input.frames();
        progress(Progress::Started {
            index,
            count,
            item,
            frames,
        });
        let est = estimate(item, index, &input, opts, &mut progress)?;
        let mix = downmix(&input.channels);
        let seconds = frames as f64 / f64::from(sr.max(1));
        match item.category {
            Category::Mixture => {
                let speech_path = item.speech.as_ref().ok_or_else(|| EvalError::Layout {
                    path: item.input.clone(),
                    detail: "a mixture without a speech stem".into(),
                })?;
                let speech = read_reference(speech_path, sr, frames)?;
                let other = match &item.other {
                    Some(p) => Some(read_reference(p, sr, frames)?),
                    None => None,
                };
                let scores = score_mixture(
                    &Inputs {
                        estimate: &est,
                        speech: &speech,
                        other: other.as_deref(),
                        mixture: Some(&mix),
                        sample_rate: sr,
                    },
                    &opts.score,
                );
                if let Some(dir) = &opts.plots {
                    plot::mixture_plots(dir, &item.id, &mix, &est, &speech, sr, &scores)?;
                }
                report.mixtures.push(MixtureItem {
                    id: item.id.clone(),
                    file: item.relative.clone(),
                    talker_mix: item.talker_mix,
                    scores,
                });
            }
            Category::Speech => report.speech.push(SpeechItem {
                id: item.id.clone(),
                file: item.relative.clone(),
                seconds,
                scores: residual::speech_damage(&est, &mix, sr),
            }),
            Category::Music => report.music.push(MusicItem {
                id: item.id.clone(),
                file: item.relative.clone(),
                seconds,
                scores: residual::music_leak(&est, &mix, opts.score.segment_samples(sr)),
            }),
        }
        progress(Progress::Finished { index });
    }
    report.summary = Summary::of(&report);
    if let Some(dir) = &opts.plots {
        if !report.mixtures.is_empty() {
            plot::summary_plot(&dir.join("summary.png"), &report.mixtures)?;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        if let Some(d) = p.parent() {
            fs::create_dir_all(d).expect("mkdir");
        }
        fs::write(p, b"").expect("write");
    }

    #[test]
    fn scans_the_eval_audio_layout() {
        let root = std::env::temp_dir().join(format!("voxsift-eval-scan-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for f in [
            "mixtures/b_mix.flac",
            "mixtures/a_mix.wav",
            "mixtures/noref.flac",
            "mixtures/notes.txt",
            "mixtures/stems/a_mix__speech.flac",
            "mixtures/stems/a_mix__other.flac",
            "mixtures/stems/b_mix__speech.wav",
            "speech/sp1.flac",
            "music/mu1.flac",
            "music/.hidden.flac",
        ] {
            touch(&root.join(f));
        }
        let folders = Folders::detect(&root).expect("layout");
        assert_eq!(folders.mixtures, Some(root.join("mixtures")));
        let set = EvalSet::scan(
            &folders,
            &ScanOptions {
                talker_mixes: vec!["b_".into()],
                only: vec![],
            },
        )
        .expect("scans");
        let ids: Vec<(&str, Category, &str)> = set
            .items
            .iter()
            .map(|i| (i.id.as_str(), i.category, i.relative.as_str()))
            .collect();
        assert_eq!(
            ids,
            [
                ("a_mix", Category::Mixture, "mixtures/a_mix.wav"),
                ("b_mix", Category::Mixture, "mixtures/b_mix.flac"),
                ("sp1", Category::Speech, "speech/sp1.flac"),
                ("mu1", Category::Music, "music/mu1.flac"),
            ]
        );
        assert!(set.items[0].other.is_some() && set.items[1].other.is_none());
        assert!(!set.items[0].talker_mix && set.items[1].talker_mix);
        assert_eq!(set.skipped.len(), 1);
        assert_eq!(set.skipped[0].file, "mixtures/noref.flac");
        // The mixtures folder on its own: relative paths are file names.
        let only_mix = Folders::detect(&root.join("mixtures")).expect("layout");
        let set = EvalSet::scan(
            &only_mix,
            &ScanOptions {
                talker_mixes: vec![],
                only: vec!["a_".into()],
            },
        )
        .expect("scans");
        assert_eq!(set.items.len(), 1);
        assert_eq!(set.items[0].relative, "a_mix.wav");
        // Estimates: nested path first, then flat.
        let est = root.join("est");
        touch(&est.join("a_mix.wav"));
        assert_eq!(
            estimate_path(&est, &set.items[0]),
            Some(est.join("a_mix.wav"))
        );
        assert!(Folders::detect(&root.join("speech/sp1.flac")).is_err());
        assert!(Folders::detect(&root.join("music")).is_err());
        let _ = fs::remove_dir_all(&root);
    }
}
