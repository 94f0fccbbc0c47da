//! Which models to run and how to start them: [`ModelChoice`] (one model, a separator
//! directory, several fused), the [`Preset`]s, where Studio finds its separator, and
//! [`start_plan`], which spawns the worker and builds the engine for the specs it reports.
//! The CLI's renders and the plugin both start their models here.

use crate::dfn3::{self, Dfn3};
use crate::fusion::{self, Fusion};
use crate::refine::{self, Refined};
use crate::runtime::SessionOptions;
use crate::separator::{self, Separator};
use crate::synthetic::SyntheticModel;
use crate::worker::{engine_timing, Member, ModelFactory, Plan, Worker};
use crate::{MaskModel, ModelError, ModelSpec};
use std::path::{Path, PathBuf};
use std::time::Duration;
use voxsift_engine::status::WorkerState;
use voxsift_engine::{Engine, EngineConfig};

/// Which model to run.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelChoice {
    /// DeepFilterNet3, the graphs embedded in the binary.
    Dfn3,
    /// DeepFilterNet3 from a directory of stateful graphs.
    Dfn3Dir(PathBuf),
    /// DeepFilterNet3, the embedded graphs, run this many frames per graph call (offline;
    /// see [`Dfn3::batched`]): cheaper, not bit-identical to [`ModelChoice::Dfn3`].
    Dfn3Batched(usize),
    /// The synthetic test model with this many frames of lookahead.
    Synthetic(usize),
    /// The synthetic test model with more settings (rate, cutoff), so that two of them give
    /// different masks (fusion tests).
    SyntheticWith(SyntheticSettings),
    /// A separator (Demucs, HTDemucs) from a model directory with a `model.toml`. Its spec is
    /// known only once it is loaded (its lookahead includes a measured margin). A
    /// DeepFilterNet3 refiner (`architecture = "dfn3-refiner"`) runs with DeepFilterNet3's
    /// embedded graphs in front of it ([`Refined`]).
    Separator(PathBuf),
    /// Several models run on the same hops, their masks fused per bin.
    Fused {
        /// The models (none of them fused itself) and their weights (finite, above 0).
        members: Vec<(ModelChoice, f32)>,
        /// How the masks are combined.
        rule: Fusion,
    },
}

/// Settings of [`ModelChoice::SyntheticWith`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyntheticSettings {
    /// Frames of lookahead.
    pub lookahead: usize,
    /// The model's rate in Hz (its hop is 10 ms).
    pub sample_rate: u32,
    /// Bins from this frequency up are attenuated when the level is high.
    pub cutoff_hz: f32,
    /// Report the spec only once loaded, as a separator does (exercises that path without
    /// ONNX Runtime).
    pub deferred: bool,
}

/// Window schedule overrides for separators (`None`: the model's own, from its
/// `model.toml`); other models ignore them.
pub use crate::separator::ScheduleOverrides as Schedule;

/// The model presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preset {
    /// DeepFilterNet3 alone: the lowest latency.
    #[default]
    Live,
    /// DeepFilterNet3 fused by max with a separator (more latency, better on music).
    Studio,
}

impl Preset {
    /// The preset's name as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Studio => "studio",
        }
    }

    /// The models of the preset: `live` (DeepFilterNet3, or what replaces it) alone, or fused
    /// by max with `separator` (weights 1) for Studio. A DeepFilterNet3 refiner already holds
    /// DeepFilterNet3, so Studio with one is the refiner alone (fuse it with DeepFilterNet3
    /// through `--model dfn3 --model DIR --fuse RULE` if wanted). The CLI and the plugin both
    /// choose Studio's models here.
    pub fn models(self, live: ModelChoice, separator: ModelChoice) -> ModelChoice {
        match self {
            Self::Live => live,
            Self::Studio if separator.is_refiner() => separator,
            Self::Studio => ModelChoice::Fused {
                members: vec![(live, 1.0), (separator, 1.0)],
                rule: Fusion::Max,
            },
        }
    }
}

impl std::str::FromStr for Preset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "live" => Ok(Self::Live),
            "studio" => Ok(Self::Studio),
            _ => Err(format!("unknown preset `{s}` (live or studio)")),
        }
    }
}

/// Where Studio looks for its separator by default: what `cargo xtask export-model htdemucs`
/// writes (the pretrained HTDemucs), relative to the working directory, then to the source
/// tree this was built from.
pub const DEFAULT_SEPARATOR: &str = "models/local/htdemucs";

/// Also looked at, after [`DEFAULT_SEPARATOR`]: a separator placed at `models/htdemucs`.
pub const OTHER_SEPARATOR: &str = "models/htdemucs";

/// Looked at last, after [`OTHER_SEPARATOR`]: the DeepFilterNet3 refiner shipped in the source
/// tree.
pub const SHIPPED_SEPARATOR: &str = "models/dfn3-refiner";

/// The separator directories Studio looks at, in order, relative to a base folder.
pub const SEPARATOR_CANDIDATES: [&str; 3] = [DEFAULT_SEPARATOR, OTHER_SEPARATOR, SHIPPED_SEPARATOR];

/// The default separator directory: the first of [`DEFAULT_SEPARATOR`] and
/// [`OTHER_SEPARATOR`], under the working directory and then under the source tree this binary
/// was built from, then [`SHIPPED_SEPARATOR`] under the same two, that holds a model; else
/// [`DEFAULT_SEPARATOR`] under the working directory (for the message that it is missing).
pub fn default_separator_dir() -> PathBuf {
    let tree = source_tree();
    let candidates = [
        PathBuf::from(DEFAULT_SEPARATOR),
        PathBuf::from(OTHER_SEPARATOR),
        tree.join(DEFAULT_SEPARATOR),
        tree.join(OTHER_SEPARATOR),
        PathBuf::from(SHIPPED_SEPARATOR),
        tree.join(SHIPPED_SEPARATOR),
    ];
    candidates
        .into_iter()
        .find(|d| is_separator_dir(d))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SEPARATOR))
}

/// The source tree this binary was built from (the folder holding `models/`).
fn source_tree() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What `voxsift info` says about a separator model directory.
#[derive(Debug, Clone)]
pub struct SeparatorInfo {
    /// The directory.
    pub dir: PathBuf,
    /// Its description, or why it could not be read.
    pub description: Result<separator::desc::ModelDescription, String>,
    /// Frames of lookahead before the inference margin measured at load (for a refiner, with
    /// DeepFilterNet3's estimate delay), if the schedule is valid.
    pub lookahead: Option<usize>,
    /// Whether the graph has the description's sha256 (`None`: none given).
    pub sha256: Option<bool>,
}

impl SeparatorInfo {
    /// Reads `dir/model.toml` and checks the graph's sha256.
    pub fn read(dir: &Path) -> Self {
        let description = separator::describe(dir).map_err(|e| e.to_string());
        let (lookahead, sha256) = match &description {
            Ok(d) => (
                separator::planned_spec(d, &Schedule::default(), 0)
                    .ok()
                    .map(|s| {
                        s.lookahead
                            + if d.is_refiner() {
                                refine::DFN3_DELAY
                            } else {
                                0
                            }
                    }),
                d.sha256_status(),
            ),
            Err(_) => (None, None),
        };
        Self {
            dir: dir.to_path_buf(),
            description,
            lookahead,
            sha256,
        }
    }
}

/// The separator models (directories with a `model.toml`) in `models/` under the working
/// directory, else under the source tree this binary was built from, sorted by path.
pub fn list_separators() -> Vec<SeparatorInfo> {
    let roots = [PathBuf::from("models"), source_tree().join("models")];
    let Some(root) = roots.iter().find(|r| r.is_dir()) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|d| is_separator_dir(d))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.iter().map(|d| SeparatorInfo::read(d)).collect()
}

/// True when `dir` holds a separator model (a `model.toml`).
pub fn is_separator_dir(dir: &Path) -> bool {
    dir.join("model.toml").is_file()
}

/// Checks that `dir` holds a separator model; the error says how to get one.
pub fn check_separator_dir(dir: &Path) -> Result<(), RenderError> {
    if is_separator_dir(dir) {
        Ok(())
    } else {
        Err(RenderError::MissingSeparator(dir.to_path_buf()))
    }
}

/// Loads the separator in `dir` for `streams` streams with the schedule overrides (on the
/// worker thread: it warms the graph up and measures its margin); a DeepFilterNet3 refiner
/// with DeepFilterNet3's embedded graphs in front of it.
fn load_separator(
    dir: &Path,
    streams: usize,
    opts: &SessionOptions,
    schedule: &Schedule,
) -> Result<Box<dyn MaskModel>, ModelError> {
    if separator::describe(dir)?.is_refiner() {
        return Ok(Box::new(Refined::load(dir, streams, opts, schedule)?));
    }
    Ok(Box::new(Separator::load(dir, streams, opts, schedule)?))
}

impl ModelChoice {
    /// Parses a model as the CLI's `--model` takes it: `dfn3`, `synthetic` (2 frames of
    /// lookahead), `synthetic:LOOKAHEAD[:RATE[:CUTOFF_HZ]]`, or a directory: a separator when
    /// it holds a `model.toml`, DFN3 graphs when it holds `enc.onnx`.
    pub fn parse(s: &str) -> Result<Self, RenderError> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("dfn3") {
            return Ok(Self::Dfn3);
        }
        if t.eq_ignore_ascii_case("synthetic") {
            return Ok(Self::Synthetic(2));
        }
        if let Some(rest) = t.strip_prefix("synthetic:") {
            let bad = || {
                RenderError::Invalid(format!(
                    "`{s}`: expected synthetic:LOOKAHEAD[:RATE[:CUTOFF_HZ]]"
                ))
            };
            let parts: Vec<&str> = rest.split(':').collect();
            if parts.len() > 3 {
                return Err(bad());
            }
            let lookahead: usize = parts[0].parse().map_err(|_| bad())?;
            if parts.len() == 1 {
                return Ok(Self::Synthetic(lookahead));
            }
            let sample_rate: u32 = parts[1].parse().map_err(|_| bad())?;
            if !(1_000..=384_000).contains(&sample_rate) || !sample_rate.is_multiple_of(100) {
                return Err(RenderError::Invalid(format!(
                    "`{s}`: the rate must be a multiple of 100 Hz from 1 to 384 kHz"
                )));
            }
            let cutoff_hz = match parts.get(2) {
                Some(c) => c.parse::<f32>().ok().filter(|c| c.is_finite() && *c >= 0.0),
                None => Some(2_000.0),
            }
            .ok_or_else(bad)?;
            return Ok(Self::SyntheticWith(SyntheticSettings {
                lookahead,
                sample_rate,
                cutoff_hz,
                deferred: false,
            }));
        }
        let dir = PathBuf::from(t);
        if is_separator_dir(&dir) {
            Ok(Self::Separator(dir))
        } else if dir.join("enc.onnx").is_file() {
            Ok(Self::Dfn3Dir(dir))
        } else if dir.is_dir() {
            Err(RenderError::Invalid(format!(
                "{}: not a model directory (no model.toml for a separator, no enc.onnx for \
                 DeepFilterNet3 graphs)",
                dir.display()
            )))
        } else {
            Err(RenderError::Invalid(format!(
                "unknown model `{s}`: give dfn3, synthetic or a model directory (no such \
                 directory)"
            )))
        }
    }

    /// A short name: `dfn3`, `synthetic`, the separator directory's name, or the members
    /// joined with `+` and the rule, e.g. `dfn3+htdemucs (max)`.
    pub fn name(&self) -> String {
        match self {
            Self::Dfn3 | Self::Dfn3Dir(_) | Self::Dfn3Batched(_) => "dfn3".into(),
            Self::Synthetic(_) | Self::SyntheticWith(_) => "synthetic".into(),
            Self::Separator(dir) => dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "separator".into()),
            Self::Fused { members, rule } => {
                let names: Vec<String> = members.iter().map(|(m, _)| m.name()).collect();
                format!("{} ({rule})", names.join("+"))
            }
        }
    }

    /// True for a separator directory whose `model.toml` describes a DeepFilterNet3 refiner
    /// (one that cannot be read is not).
    pub fn is_refiner(&self) -> bool {
        match self {
            Self::Separator(dir) => separator::describe(dir).is_ok_and(|d| d.is_refiner()),
            _ => false,
        }
    }

    /// The models it runs with their weights, and how they are fused (a single model: itself,
    /// weight 1, max).
    pub fn members(&self) -> (Vec<(ModelChoice, f32)>, Fusion) {
        match self {
            Self::Fused { members, rule } => (members.clone(), *rule),
            m => (vec![(m.clone(), 1.0)], Fusion::Max),
        }
    }

    /// Checks what can be checked before loading: a fused set has members, none of them fused,
    /// with valid weights; separator directories hold a `model.toml` (the error says how to get
    /// one).
    pub fn check(&self) -> Result<(), RenderError> {
        match self {
            Self::Separator(dir) => check_separator_dir(dir),
            Self::Fused { members, .. } => {
                if members.is_empty() {
                    return Err(RenderError::Invalid("a fused set needs models".into()));
                }
                let weights: Vec<f32> = members.iter().map(|(_, w)| *w).collect();
                fusion::check_weights(&weights).map_err(RenderError::Invalid)?;
                for (m, _) in members {
                    if matches!(m, Self::Fused { .. }) {
                        return Err(RenderError::Invalid(
                            "a fused set cannot hold another fused set".into(),
                        ));
                    }
                    m.check()?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The spec of a model whose spec is known before loading, `None` for a separator (and a
    /// fused set: see [`Self::known_specs`]).
    pub fn known_spec(&self) -> Option<ModelSpec> {
        match self {
            Self::Dfn3 | Self::Dfn3Dir(_) => Some(dfn3::SPEC),
            Self::Dfn3Batched(n) => Some(dfn3::batched_spec(*n)),
            Self::Synthetic(la) => Some(SyntheticModel::new(1, *la).spec()),
            Self::SyntheticWith(s) if !s.deferred => {
                Some(SyntheticModel::with_rate(1, s.lookahead, s.sample_rate).spec())
            }
            Self::SyntheticWith(_) | Self::Separator(_) | Self::Fused { .. } => None,
        }
    }

    /// The specs of every member when all are known before loading (then the engine can be
    /// built before the models are loaded), else `None`.
    pub fn known_specs(&self) -> Option<Vec<ModelSpec>> {
        self.members()
            .0
            .iter()
            .map(|(m, _)| m.known_spec())
            .collect()
    }

    /// The model's spec (known without loading it). Meaningful for the models whose spec is
    /// known beforehand ([`Self::known_specs`]); for a fused set it is the first member's, and
    /// for a separator, whose spec is only known once loaded, DeepFilterNet3's: build engines
    /// for those from the specs their worker publishes (see [`start_with`]).
    pub fn spec(&self) -> ModelSpec {
        match self {
            Self::Fused { members, .. } => members.first().map_or(dfn3::SPEC, |(m, _)| m.spec()),
            m => m.known_spec().unwrap_or(dfn3::SPEC),
        }
    }

    /// A factory that builds the model on the worker thread for `streams` streams, on the CPU.
    pub fn factory(&self, streams: usize, threads: usize) -> ModelFactory {
        self.factory_with(
            streams,
            SessionOptions {
                threads,
                ..SessionOptions::default()
            },
        )
    }

    /// A factory that builds the model on the worker thread for `streams` streams with the
    /// given session options (execution provider, threads). A fused set is not one model:
    /// its factory fails (run it through [`Self::plan`]).
    pub fn factory_with(&self, streams: usize, opts: SessionOptions) -> ModelFactory {
        self.factory_scheduled(streams, opts, Schedule::default())
    }

    /// [`Self::factory_with`] with window schedule overrides for a separator.
    pub fn factory_scheduled(
        &self,
        streams: usize,
        opts: SessionOptions,
        schedule: Schedule,
    ) -> ModelFactory {
        match self.clone() {
            Self::Dfn3 => Box::new(move || {
                Ok(Box::new(Dfn3::embedded_with(streams, &opts)?) as Box<dyn MaskModel>)
            }),
            Self::Dfn3Batched(n) => Box::new(move || {
                Ok(Box::new(Dfn3::batched(&dfn3::EMBEDDED, streams, &opts, n)?)
                    as Box<dyn MaskModel>)
            }),
            Self::Dfn3Dir(dir) => Box::new(move || {
                let [enc, erb_dec, df_dec] = dfn3::read_graphs(&dir)?;
                let g = dfn3::Graphs {
                    enc: &enc,
                    erb_dec: &erb_dec,
                    df_dec: &df_dec,
                };
                Ok(Box::new(Dfn3::from_graphs_with(&g, streams, &opts)?) as Box<dyn MaskModel>)
            }),
            Self::Synthetic(la) => Box::new(move || {
                Ok(Box::new(SyntheticModel::new(streams, la)) as Box<dyn MaskModel>)
            }),
            Self::SyntheticWith(s) => Box::new(move || {
                Ok(Box::new(
                    SyntheticModel::with_rate(streams, s.lookahead, s.sample_rate)
                        .with_cutoff_hz(s.cutoff_hz),
                ) as Box<dyn MaskModel>)
            }),
            Self::Separator(dir) => {
                Box::new(move || load_separator(&dir, streams, &opts, &schedule))
            }
            Self::Fused { .. } => Box::new(|| {
                Err(ModelError::Mismatch {
                    graph: "fusion".into(),
                    message: "a fused set is several models: run it through a plan".into(),
                })
            }),
        }
    }

    /// The worker plan for this model or fused set: one member per model, each built on the
    /// worker thread for `streams` streams with `opts` (and `schedule` for separators), and
    /// expected to report the spec known beforehand, if any.
    pub fn plan(&self, streams: usize, opts: SessionOptions, schedule: Schedule) -> Plan {
        let (members, fusion) = self.members();
        Plan {
            members: members
                .into_iter()
                .map(|(m, weight)| Member {
                    factory: m.factory_scheduled(streams, opts, schedule),
                    weight,
                    expect: m.known_spec(),
                })
                .collect(),
            fusion,
            notice: None,
        }
    }
}

/// Errors from choosing or starting models, and from rendering with them.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The model could not be loaded or failed while running.
    #[error("model `{model}` failed: {message}")]
    Model {
        /// Which model.
        model: String,
        /// Why.
        message: String,
    },
    /// Bad arguments.
    #[error("invalid render settings: {0}")]
    Invalid(String),
    /// A separator model directory (Studio's, or one asked for) holds no model.
    #[error(
        "no separator model in {} (model.toml not found): export one with `cargo xtask \
         export-model htdemucs` (it writes {DEFAULT_SEPARATOR}), or point --separator DIR \
         (VOXSIFT_SEPARATOR for the plugin) at a separator model directory",
        .0.display()
    )]
    MissingSeparator(PathBuf),
}

impl From<ModelError> for RenderError {
    fn from(e: ModelError) -> Self {
        Self::Model {
            model: "?".into(),
            message: e.to_string(),
        }
    }
}

/// Builds an engine with a running worker for `config` (waits until the model is loaded).
pub fn start(
    config: EngineConfig,
    model: &ModelChoice,
    threads: usize,
) -> Result<(Engine, Worker), RenderError> {
    start_with(
        config,
        model,
        SessionOptions {
            threads,
            ..SessionOptions::default()
        },
    )
}

/// [`start`] with session options (execution provider, threads).
pub fn start_with(
    config: EngineConfig,
    model: &ModelChoice,
    opts: SessionOptions,
) -> Result<(Engine, Worker), RenderError> {
    start_scheduled(config, model, opts, Schedule::default())
}

/// [`start_with`] with window schedule overrides for separators.
pub fn start_scheduled(
    config: EngineConfig,
    model: &ModelChoice,
    opts: SessionOptions,
    schedule: Schedule,
) -> Result<(Engine, Worker), RenderError> {
    model.check()?;
    start_plan(
        config,
        &model.name(),
        model.plan(config.mask_streams(), opts, schedule),
    )
}

/// Starts a worker running `plan` (`name` for messages), waits until every model is loaded
/// and warmed up, then builds the engine for the specs the models report (its latency covers
/// the slowest member: [`engine_timing`]) and connects it.
pub fn start_plan(
    config: EngineConfig,
    name: &str,
    plan: Plan,
) -> Result<(Engine, Worker), RenderError> {
    let (worker, link) = Worker::spawn_plan(&config, plan);
    if worker.wait_ready(Duration::from_secs(120)) != WorkerState::Running {
        return Err(RenderError::Model {
            model: name.into(),
            message: worker.shared().message(),
        });
    }
    let (lookahead, lag) = engine_timing(config.sample_rate, &worker.shared().specs());
    let mut engine = Engine::new(config, lookahead, lag);
    engine.connect(link);
    Ok((engine, worker))
}
