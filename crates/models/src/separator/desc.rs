//! `model.toml`: what a separator model directory says about its graph, checked on its own
//! ([`ModelDescription::validate`]) and against the graph ONNX Runtime actually loaded
//! ([`ModelDescription::check_graph`]).
//!
//! Format 1 (written by `cargo xtask export-model`, documented in `docs/models.md`):
//!
//! ```toml
//! format = 1
//! name = "htdemucs-tiny"
//! version = "0.1.0"
//! architecture = "htdemucs"      # or "demucs-denoiser", "dfn3-refiner"
//! kind = "hybrid"                # or "waveform"
//! file = "model.onnx"
//! sample_rate = 44100
//! channels = 2
//! sources = ["drums", "bass", "other", "vocals"]
//! speech = "vocals"
//! window = 132300                # samples per run, the graph's time axis; 0 = any
//! mask = "wiener"                # optional: "wiener" (default) or "ratio"
//!
//! [stft]                         # hybrid only
//! n_fft = 4096
//! hop = 1024
//!
//! [schedule]
//! window_ms = 3000
//! lookahead_ms = 500
//! step_ms = 500
//! crossfade_ms = 250             # optional
//!
//! [[input]]
//! name = "mix"
//! kind = "waveform"
//! shape = [1, 2, 132300]         # -1 = dynamic
//! # ... more [[input]] and [[output]] tables
//! # a dfn3-refiner also takes an input of kind "reference": DeepFilterNet3's speech
//! # estimate of the same samples as the waveform input
//!
//! [provenance]                   # free-form
//! ```

use crate::ModelError;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The only `format` this code reads.
pub const FORMAT: u32 = 1;

/// The file name of a description inside a model directory.
pub const FILE_NAME: &str = "model.toml";

/// Which network family the graph is (decides nothing in the runtime beyond messages; the
/// `kind` decides how it is fed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Architecture {
    /// Hybrid Transformer Demucs (Rouard et al., 2023).
    Htdemucs,
    /// Demucs speech denoiser (Défossez et al., 2020).
    DemucsDenoiser,
    /// A refiner of DeepFilterNet3's output: takes the mix and DeepFilterNet3's speech
    /// estimate of it (an input of kind `reference`) and outputs a refined speech waveform.
    /// Run with DeepFilterNet3 in front of it ([`crate::refine::Refined`]).
    Dfn3Refiner,
}

impl Architecture {
    /// The name used in `model.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Htdemucs => "htdemucs",
            Self::DemucsDenoiser => "demucs-denoiser",
            Self::Dfn3Refiner => "dfn3-refiner",
        }
    }
}

/// How a speech estimate `V` of a mix `X` becomes a mask frame (`mask` in `model.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaskMode {
    /// `|V|^2 / (|V|^2 + |X - V|^2)`, a real gain in `[0, 1]` (the default).
    #[default]
    Wiener,
    /// The complex gain `V / X`, at most [`super::spectral::MAX_RATIO`] in magnitude, which
    /// reproduces the estimate's waveform through the engine's overlap-add.
    Ratio,
}

impl MaskMode {
    /// The name used in `model.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Wiener => "wiener",
            Self::Ratio => "ratio",
        }
    }
}

/// How the graph is fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Waveform in, waveform out.
    Waveform,
    /// Waveform and its spectrogram in (the STFT computed in Rust), spectrogram and waveform
    /// out (HTDemucs); a source is `ispec(spectrum) + waveform`.
    Hybrid,
}

/// What a graph input or output carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TensorKind {
    /// Audio samples, time last.
    Waveform,
    /// A complex-as-channels spectrogram (real, imaginary interleaved on the channel axis).
    Spectrum,
    /// A mask (not run by this version of the separator).
    Mask,
    /// DeepFilterNet3's speech estimate of the same samples as the waveform input, `[1, C, T]`
    /// (a second input of a `dfn3-refiner` only).
    Reference,
}

impl TensorKind {
    /// The name used in `model.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Waveform => "waveform",
            Self::Spectrum => "spectrum",
            Self::Mask => "mask",
            Self::Reference => "reference",
        }
    }
}

/// One `[[input]]` or `[[output]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TensorDesc {
    /// The graph's name for it.
    pub name: String,
    /// What it carries.
    pub kind: TensorKind,
    /// Its shape; `-1` marks a dynamic dimension.
    pub shape: Vec<i64>,
    /// What each axis is, in words (informative).
    #[serde(default)]
    pub layout: Option<String>,
}

/// `[stft]`: the hybrid model's spectrogram (HTDemucs `_spec`). Only HTDemucs's own
/// convention is implemented; the optional fields, when present, must say so.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StftDesc {
    /// FFT size.
    pub n_fft: usize,
    /// Hop; HTDemucs requires `n_fft / 4`.
    pub hop: usize,
    /// Bins the graph sees (`n_fft / 2`).
    #[serde(default)]
    pub bins: Option<usize>,
    /// Frames of a `window` (`ceil(window / hop)`).
    #[serde(default)]
    pub frames: Option<usize>,
    /// Window function: `hann-periodic`.
    #[serde(default)]
    pub window_fn: Option<String>,
    /// Scaled by `1 / sqrt(n_fft)`: `true`.
    #[serde(default)]
    pub normalized: Option<bool>,
    /// Frame placement and padding: `htdemucs`.
    #[serde(default)]
    pub framing: Option<String>,
    /// Complex values as channels: `cac`.
    #[serde(default)]
    pub layout: Option<String>,
}

impl StftDesc {
    /// Bins the graph sees: `n_fft / 2` (HTDemucs drops the Nyquist bin).
    pub fn n_fft_bins(&self) -> usize {
        self.n_fft / 2
    }

    /// Frames for `len` samples: `ceil(len / hop)`.
    pub fn frames(&self, len: usize) -> usize {
        len.div_ceil(self.hop)
    }
}

/// `[schedule]`: the default windowed scheduling (see [`super::window`]).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct ScheduleDesc {
    /// Samples the model sees per run, in ms.
    pub window_ms: f64,
    /// Future context after the part whose output is used, in ms.
    pub lookahead_ms: f64,
    /// How far consecutive windows advance, in ms.
    pub step_ms: f64,
    /// Raised-cosine crossfade between consecutive used parts, in ms (default: half the step).
    #[serde(default)]
    pub crossfade_ms: Option<f64>,
}

/// A parsed `model.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModelDescription {
    /// Format version; only [`FORMAT`] is read.
    pub format: u32,
    /// Short name, e.g. "htdemucs-tiny".
    pub name: String,
    /// The model's version.
    pub version: String,
    /// Network family.
    pub architecture: Architecture,
    /// How the graph is fed.
    pub kind: Kind,
    /// The ONNX file, relative to the directory.
    pub file: PathBuf,
    /// Sample rate the graph runs at.
    pub sample_rate: u32,
    /// Audio channels the graph takes.
    pub channels: usize,
    /// Sources the graph separates, in output order.
    pub sources: Vec<String>,
    /// Which of `sources` is speech.
    pub speech: String,
    /// Samples per run (the graph's fixed time axis); 0 = any length.
    pub window: usize,
    /// Shortest run a graph of any length (`window = 0`) accepts.
    #[serde(default)]
    pub min_window: Option<usize>,
    /// SHA-256 of the ONNX file, hex; when given, the graph is refused at load if its bytes do
    /// not have it ([`ModelDescription::check_sha256`]).
    #[serde(default)]
    pub sha256: Option<String>,
    /// How the speech estimate becomes mask frames (default: Wiener).
    #[serde(default)]
    pub mask: MaskMode,
    /// The spectrogram (hybrid models only).
    #[serde(default)]
    pub stft: Option<StftDesc>,
    /// Default schedule.
    pub schedule: ScheduleDesc,
    /// Graph inputs.
    #[serde(rename = "input", default)]
    pub inputs: Vec<TensorDesc>,
    /// Graph outputs.
    #[serde(rename = "output", default)]
    pub outputs: Vec<TensorDesc>,
    /// Where the model comes from (free-form).
    #[serde(default)]
    pub provenance: toml::Table,
    /// The directory it was read from (not in the file).
    #[serde(skip)]
    pub dir: PathBuf,
}

/// What the graph reports for one of its inputs or outputs (taken from the ONNX Runtime
/// session; a plain struct so that the checks can be tested without a runtime).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphPort {
    /// Name.
    pub name: String,
    /// Element type as ONNX Runtime names it (`f32`, `i64`, ...), or what it is if not a tensor.
    pub element: String,
    /// Shape with `-1` for dynamic dimensions; `None` if it is not a tensor.
    pub shape: Option<Vec<i64>>,
}

impl GraphPort {
    /// The ports of a loaded session: (inputs, outputs).
    pub fn of_session(session: &ort::session::Session) -> (Vec<GraphPort>, Vec<GraphPort>) {
        let port = |o: &ort::value::Outlet| {
            let dt = o.dtype();
            GraphPort {
                name: o.name().to_string(),
                element: dt
                    .tensor_type()
                    .map_or_else(|| dt.to_string(), |t| t.to_string()),
                shape: dt.tensor_shape().map(|s| s.iter().copied().collect()),
            }
        };
        (
            session.inputs().iter().map(port).collect(),
            session.outputs().iter().map(port).collect(),
        )
    }
}

/// The roles of the graph's tensors, found by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports {
    /// The waveform input, `[1, C, T]`.
    pub mix: String,
    /// The spectrogram input, `[1, 2C, F, N]` (hybrid).
    pub spec: Option<String>,
    /// The waveform output, `[1, S, C, T]` or `[1, C, T]` (the speech source only).
    pub wave_out: String,
    /// Whether `wave_out` has a source axis.
    pub wave_out_has_sources: bool,
    /// The spectrogram output, `[1, S, 2C, F, N]` (hybrid).
    pub spec_out: Option<String>,
    /// DeepFilterNet3's estimate of the mix, `[1, C, T]` (dfn3-refiner).
    pub reference: Option<String>,
}

/// SHA-256 of `bytes` as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads `dir/model.toml` and validates it (no graph is loaded).
pub fn read(dir: &Path) -> Result<ModelDescription, ModelError> {
    let path = dir.join(FILE_NAME);
    let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Read {
        path: path.clone(),
        source,
    })?;
    let mut d = parse(&text).map_err(|message| ModelError::Description {
        path: path.clone(),
        message,
    })?;
    d.dir = dir.to_path_buf();
    d.validate()
        .map_err(|message| ModelError::Description { path, message })?;
    Ok(d)
}

/// Parses the text of a `model.toml` (without validating it).
pub fn parse(text: &str) -> Result<ModelDescription, String> {
    // Read `format` first, so that a future format gets a clear message rather than a
    // complaint about a field it renamed.
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    match table.get("format") {
        Some(toml::Value::Integer(f)) if *f == i64::from(FORMAT) => {}
        Some(v) => {
            return Err(format!(
                "format: this Voxsift reads format {FORMAT}, the file is format {v}"
            ))
        }
        None => return Err("format: missing (expected `format = 1`)".into()),
    }
    toml::from_str(text).map_err(|e| e.to_string())
}

impl ModelDescription {
    /// The ONNX file.
    pub fn graph_path(&self) -> PathBuf {
        self.dir.join(&self.file)
    }

    /// True for a DeepFilterNet3 refiner (`architecture = "dfn3-refiner"`).
    pub fn is_refiner(&self) -> bool {
        self.architecture == Architecture::Dfn3Refiner
    }

    /// Checks `bytes` (the ONNX file) against `sha256`, when the description gives one.
    pub fn check_sha256(&self, bytes: &[u8]) -> Result<(), ModelError> {
        let Some(want) = &self.sha256 else {
            return Ok(());
        };
        let got = sha256_hex(bytes);
        if got.eq_ignore_ascii_case(want.trim()) {
            Ok(())
        } else {
            Err(ModelError::Description {
                path: self.dir.join(FILE_NAME),
                message: format!(
                    "sha256: the description says {want}, but {} has {got} (a different or \
                     damaged graph)",
                    self.graph_path().display()
                ),
            })
        }
    }

    /// Whether `sha256` matches the graph file: `None` when the description gives none,
    /// else whether the file could be read and has it.
    pub fn sha256_status(&self) -> Option<bool> {
        self.sha256.as_ref()?;
        Some(
            std::fs::read(self.graph_path())
                .map(|b| self.check_sha256(&b).is_ok())
                .unwrap_or(false),
        )
    }

    /// Index of the speech source in `sources`.
    pub fn speech_index(&self) -> Option<usize> {
        self.sources.iter().position(|s| *s == self.speech)
    }

    /// Hop of the mask frames: 10 ms at the model rate.
    pub fn hop(&self) -> usize {
        voxsift_engine::stft::Grid::for_rate(self.sample_rate).hop
    }

    /// Bins of the mask frames (the engine's grid at the model rate).
    pub fn bins(&self) -> usize {
        voxsift_engine::stft::Grid::for_rate(self.sample_rate).bins
    }

    /// Milliseconds to samples at the model rate, rounded.
    pub fn ms_to_samples(&self, ms: f64) -> usize {
        (ms * self.sample_rate as f64 / 1000.0).round().max(0.0) as usize
    }

    /// Checks the description on its own: rates, window, STFT, sources, and that the
    /// inputs and outputs have the shapes its kind needs. Returns what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("name: empty".into());
        }
        if !(8_000..=192_000).contains(&self.sample_rate) {
            return Err(format!(
                "sample_rate: {} Hz is outside 8000..=192000",
                self.sample_rate
            ));
        }
        if !(1..=8).contains(&self.channels) {
            return Err(format!("channels: {} is outside 1..=8", self.channels));
        }
        if self.sources.is_empty() {
            return Err("sources: empty".into());
        }
        if self.is_refiner() {
            let rate = crate::dfn3::SAMPLE_RATE;
            if self.sample_rate != rate {
                return Err(format!(
                    "sample_rate: a dfn3-refiner runs at DeepFilterNet3's rate, {rate} Hz, not \
                     {} Hz",
                    self.sample_rate
                ));
            }
            if self.kind != Kind::Waveform {
                return Err(format!(
                    "kind: a dfn3-refiner is a waveform model, not `{}`",
                    match self.kind {
                        Kind::Waveform => "waveform",
                        Kind::Hybrid => "hybrid",
                    }
                ));
            }
        }
        if self.speech_index().is_none() {
            return Err(format!(
                "speech: `{}` is not one of the sources {:?}",
                self.speech, self.sources
            ));
        }
        let min_window = self.sample_rate as usize / 10;
        if self.window != 0 && self.window < min_window {
            return Err(format!(
                "window: {} samples is shorter than 100 ms ({min_window} samples)",
                self.window
            ));
        }
        let s = &self.schedule;
        for (field, v) in [
            ("schedule.window_ms", s.window_ms),
            ("schedule.lookahead_ms", s.lookahead_ms),
            ("schedule.step_ms", s.step_ms),
            ("schedule.crossfade_ms", s.crossfade_ms.unwrap_or(0.0)),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("{field}: {v} is not a duration"));
            }
        }
        match (self.kind, &self.stft) {
            (Kind::Hybrid, None) => return Err("stft: missing (a hybrid model needs it)".into()),
            (Kind::Hybrid, Some(st)) => {
                let expect = |field: &str, got: Option<String>, want: String| match got {
                    Some(g) if g != want => Err(format!(
                        "stft.{field}: {g}, but only HTDemucs's spectrogram ({field} = {want}) \
                         is implemented"
                    )),
                    _ => Ok(()),
                };
                expect(
                    "bins",
                    st.bins.map(|b| b.to_string()),
                    st.n_fft_bins().to_string(),
                )?;
                if self.window != 0 {
                    expect(
                        "frames",
                        st.frames.map(|f| f.to_string()),
                        st.frames(self.window).to_string(),
                    )?;
                }
                expect("window_fn", st.window_fn.clone(), "hann-periodic".into())?;
                expect(
                    "normalized",
                    st.normalized.map(|n| n.to_string()),
                    "true".into(),
                )?;
                expect("framing", st.framing.clone(), "htdemucs".into())?;
                expect("layout", st.layout.clone(), "cac".into())?;
                if st.n_fft < 16 || st.n_fft % 16 != 0 {
                    return Err(format!(
                        "stft.n_fft: {} is not a multiple of 16 of at least 16",
                        st.n_fft
                    ));
                }
                if st.hop * 4 != st.n_fft {
                    return Err(format!(
                        "stft.hop: {} is not n_fft / 4 = {} (HTDemucs's spectrogram needs it)",
                        st.hop,
                        st.n_fft / 4
                    ));
                }
                if self.window != 0 && self.window < st.n_fft {
                    return Err(format!(
                        "window: {} samples is shorter than stft.n_fft = {}",
                        self.window, st.n_fft
                    ));
                }
            }
            (Kind::Waveform, Some(_)) => {
                return Err("stft: a waveform model has no [stft] table".into())
            }
            (Kind::Waveform, None) => {}
        }
        self.ports().map(|_| ())
    }

    /// The shape a tensor of this model must have, `-1` where dynamic: `[1, C, T]` etc.
    fn expected(&self, role: &str, sources: bool) -> Vec<i64> {
        let c = self.channels as i64;
        let s = self.sources.len() as i64;
        let t = if self.window == 0 {
            -1
        } else {
            self.window as i64
        };
        let (f, n) = match &self.stft {
            Some(st) if self.window != 0 => (st.n_fft_bins() as i64, st.frames(self.window) as i64),
            Some(st) => (st.n_fft_bins() as i64, -1),
            None => (-1, -1),
        };
        match (role, sources) {
            ("wave", false) => vec![1, c, t],
            ("wave", true) => vec![1, s, c, t],
            ("spec", false) => vec![1, 2 * c, f, n],
            _ => vec![1, s, 2 * c, f, n],
        }
    }

    /// Finds the tensors by kind and checks their shapes against the rest of the
    /// description.
    pub fn ports(&self) -> Result<Ports, String> {
        let one = |list: &[TensorDesc], what: &str, kind: TensorKind| {
            let found: Vec<&TensorDesc> = list.iter().filter(|t| t.kind == kind).collect();
            match found.as_slice() {
                [t] => Ok(Some((*t).clone())),
                [] => Ok(None),
                _ => Err(format!(
                    "{what}: {} tensors of kind `{}`, expected one",
                    found.len(),
                    kind.name()
                )),
            }
        };
        for (what, list) in [("input", &self.inputs), ("output", &self.outputs)] {
            if let Some(t) = list.iter().find(|t| t.kind == TensorKind::Mask) {
                return Err(format!(
                    "{what} `{}`: kind `mask` is not supported by this version of the separator",
                    t.name
                ));
            }
            if let Some(t) = list.iter().find(|t| t.kind == TensorKind::Reference) {
                if what == "output" {
                    return Err(format!(
                        "output `{}`: kind `reference` is an input kind",
                        t.name
                    ));
                }
                if !self.is_refiner() {
                    return Err(format!(
                        "input `{}`: kind `reference` is only for architecture = \
                         \"dfn3-refiner\" (this is `{}`)",
                        t.name,
                        self.architecture.name()
                    ));
                }
            }
            let mut names: Vec<&str> = list.iter().map(|t| t.name.as_str()).collect();
            names.sort_unstable();
            if names.windows(2).any(|w| w[0] == w[1]) {
                return Err(format!("{what}: two tensors have the same name"));
            }
        }
        let check = |t: &TensorDesc, what: &str, want: &[i64]| -> Result<(), String> {
            let ok = t.shape.len() == want.len()
                && t.shape.iter().zip(want).enumerate().all(|(i, (&d, &w))| {
                    // The batch axis may be dynamic; every other one must agree.
                    d == w || (i == 0 && d == -1)
                });
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "{what} `{}`: shape {:?} does not match the description's channels, \
                     sources, window and stft, which give {:?}",
                    t.name, t.shape, want
                ))
            }
        };
        let mix = one(&self.inputs, "input", TensorKind::Waveform)?
            .ok_or("input: no tensor of kind `waveform`")?;
        check(&mix, "input", &self.expected("wave", false))?;
        let wave_out = one(&self.outputs, "output", TensorKind::Waveform)?
            .ok_or("output: no tensor of kind `waveform`")?;
        let wave_out_has_sources = wave_out.shape.len() == 4;
        check(
            &wave_out,
            "output",
            &self.expected("wave", wave_out_has_sources),
        )?;
        let reference = one(&self.inputs, "input", TensorKind::Reference)?;
        if let Some(r) = &reference {
            check(r, "input", &self.expected("wave", false))?;
        }
        let spec_in = one(&self.inputs, "input", TensorKind::Spectrum)?;
        let spec_out = one(&self.outputs, "output", TensorKind::Spectrum)?;
        match self.kind {
            Kind::Hybrid => {
                let spec_in = spec_in.ok_or("input: no tensor of kind `spectrum`")?;
                check(&spec_in, "input", &self.expected("spec", false))?;
                let spec_out = spec_out.ok_or("output: no tensor of kind `spectrum`")?;
                check(&spec_out, "output", &self.expected("spec", true))?;
                if !wave_out_has_sources {
                    return Err(format!(
                        "output `{}`: a hybrid model's waveform output needs a source axis \
                         [1, S, C, T]",
                        wave_out.name
                    ));
                }
                if self.inputs.len() != 2 {
                    return Err(format!(
                        "input: a hybrid model takes 2 inputs, the description lists {}",
                        self.inputs.len()
                    ));
                }
                Ok(Ports {
                    mix: mix.name,
                    spec: Some(spec_in.name),
                    wave_out: wave_out.name,
                    wave_out_has_sources,
                    spec_out: Some(spec_out.name),
                    reference: None,
                })
            }
            Kind::Waveform => {
                if let Some(t) = spec_in.or(spec_out) {
                    return Err(format!(
                        "`{}`: a waveform model has no spectrum tensors",
                        t.name
                    ));
                }
                let want = if self.is_refiner() {
                    if reference.is_none() {
                        return Err("input: a dfn3-refiner needs an input of kind `reference` \
                             (DeepFilterNet3's estimate)"
                            .into());
                    }
                    2
                } else {
                    1
                };
                if self.inputs.len() != want {
                    return Err(format!(
                        "input: a {} model takes {want} input{}, the description lists {}",
                        self.architecture.name(),
                        if want == 1 { "" } else { "s" },
                        self.inputs.len()
                    ));
                }
                Ok(Ports {
                    mix: mix.name,
                    spec: None,
                    wave_out: wave_out.name,
                    wave_out_has_sources,
                    spec_out: None,
                    reference: reference.map(|r| r.name),
                })
            }
        }
    }

    /// Checks the description against the graph's real inputs and outputs: every described
    /// tensor must exist with element type f32, the same rank and the same fixed dimensions,
    /// and the graph must need no input the description does not list. The error names the
    /// field, the description's value and the graph's.
    pub fn check_graph(
        &self,
        inputs: &[GraphPort],
        outputs: &[GraphPort],
    ) -> Result<(), ModelError> {
        let graph = self.file.display().to_string();
        let mismatch = |message: String| ModelError::Mismatch {
            graph: graph.clone(),
            message: format!(
                "{message} (description: {})",
                self.dir.join(FILE_NAME).display()
            ),
        };
        let names = |ports: &[GraphPort]| {
            ports
                .iter()
                .map(|p| format!("`{}`", p.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        for (what, described, ports) in [
            ("input", &self.inputs, inputs),
            ("output", &self.outputs, outputs),
        ] {
            for t in described {
                let Some(p) = ports.iter().find(|p| p.name == t.name) else {
                    return Err(mismatch(format!(
                        "{what} `{}`: the description names it, the graph has no such {what} \
                         (its {what}s: {})",
                        t.name,
                        names(ports)
                    )));
                };
                if p.element != "f32" {
                    return Err(mismatch(format!(
                        "{what} `{}` element type: description f32, graph {}",
                        t.name, p.element
                    )));
                }
                let Some(shape) = &p.shape else {
                    return Err(mismatch(format!(
                        "{what} `{}`: description a tensor, graph {}",
                        t.name, p.element
                    )));
                };
                if shape.len() != t.shape.len() {
                    return Err(mismatch(format!(
                        "{what} `{}` rank: description {} {:?}, graph {} {:?}",
                        t.name,
                        t.shape.len(),
                        t.shape,
                        shape.len(),
                        shape
                    )));
                }
                for (i, (&d, &g)) in t.shape.iter().zip(shape).enumerate() {
                    // A dynamic graph dimension accepts the described size; a fixed one must
                    // be the described size, and a described dynamic one must be dynamic.
                    if g >= 0 && d != g {
                        let said = if d < 0 {
                            "dynamic (-1)".to_string()
                        } else {
                            d.to_string()
                        };
                        return Err(mismatch(format!(
                            "{what} `{}` shape[{i}]: description {said}, graph {g} \
                             (description {:?}, graph {:?})",
                            t.name, t.shape, shape
                        )));
                    }
                }
            }
        }
        if let Some(p) = inputs
            .iter()
            .find(|p| !self.inputs.iter().any(|t| t.name == p.name))
        {
            return Err(mismatch(format!(
                "input `{}`: the graph needs it, the description does not list it",
                p.name
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid hybrid description (HTDemucs-like, small).
    pub(crate) const HYBRID: &str = r#"
format = 1
name = "htdemucs-test"
version = "0"
architecture = "htdemucs"
kind = "hybrid"
file = "model.onnx"
sample_rate = 44100
channels = 2
sources = ["drums", "bass", "other", "vocals"]
speech = "vocals"
window = 44100

[stft]
n_fft = 4096
hop = 1024

[schedule]
window_ms = 1000
lookahead_ms = 200
step_ms = 200

[[input]]
name = "mix"
kind = "waveform"
shape = [1, 2, 44100]

[[input]]
name = "spec"
kind = "spectrum"
shape = [1, 4, 2048, 44]

[[output]]
name = "spec_out"
kind = "spectrum"
shape = [1, 4, 4, 2048, 44]

[[output]]
name = "wave_out"
kind = "waveform"
shape = [1, 4, 2, 44100]

[provenance]
source = "random init"
"#;

    /// A valid waveform description (denoiser-like), dynamic length.
    pub(crate) const WAVEFORM: &str = r#"
format = 1
name = "denoiser-test"
version = "0"
architecture = "demucs-denoiser"
kind = "waveform"
file = "model.onnx"
sample_rate = 16000
channels = 1
sources = ["speech"]
speech = "speech"
window = 0

[schedule]
window_ms = 1000
lookahead_ms = 100
step_ms = 200

[[input]]
name = "mix"
kind = "waveform"
shape = [1, 1, -1]

[[output]]
name = "speech"
kind = "waveform"
shape = [1, 1, -1]
"#;

    /// A valid DeepFilterNet3 refiner description (the fixed refiner interface).
    pub(crate) const REFINER: &str = r#"
format = 1
name = "refiner-test"
version = "0"
architecture = "dfn3-refiner"
kind = "waveform"
file = "model.onnx"
sample_rate = 48000
channels = 1
sources = ["speech"]
speech = "speech"
window = 0
min_window = 4096
mask = "ratio"

[schedule]
window_ms = 2000
lookahead_ms = 300
step_ms = 400
crossfade_ms = 200

[[input]]
name = "mix"
kind = "waveform"
shape = [1, 1, -1]

[[input]]
name = "dfn3"
kind = "reference"
shape = [1, 1, -1]

[[output]]
name = "speech"
kind = "waveform"
shape = [1, 1, -1]
"#;

    #[test]
    fn a_refiner_names_its_reference_and_masks_by_ratio() {
        let r = parse(REFINER).expect("parses");
        r.validate().expect("valid");
        assert!(r.is_refiner());
        assert_eq!(r.mask, MaskMode::Ratio);
        let p = r.ports().expect("ports");
        assert_eq!(p.reference.as_deref(), Some("dfn3"));
        assert_eq!((p.mix.as_str(), p.wave_out.as_str()), ("mix", "speech"));
        // Existing descriptions keep the Wiener mask and have no reference.
        let w = parse(WAVEFORM).expect("parses");
        assert_eq!(w.mask, MaskMode::Wiener);
        assert!(!w.is_refiner());
        assert_eq!(w.ports().expect("ports").reference, None);
        let wr =
            parse(&WAVEFORM.replace("window = 0", "window = 0\nmask = \"ratio\"")).expect("parses");
        assert_eq!(wr.mask, MaskMode::Ratio);
    }

    #[test]
    fn refiner_descriptions_that_break_the_interface_are_refused() {
        let reference_input =
            "[[input]]\nname = \"dfn3\"\nkind = \"reference\"\nshape = [1, 1, -1]\n";
        assert!(REFINER.contains(reference_input));
        let cases = [
            (
                REFINER.replace("sample_rate = 48000", "sample_rate = 44100"),
                "sample_rate",
            ),
            (REFINER.replace(reference_input, ""), "kind `reference`"),
            (
                REFINER.replace("mask = \"ratio\"", "mask = \"binary\""),
                "binary",
            ),
            (
                REFINER.replace("kind = \"reference\"\nshape = [1, 1, -1]", "kind = \"reference\"\nshape = [1, 2, -1]"),
                "input `dfn3`",
            ),
            (
                REFINER.replace(
                    "architecture = \"dfn3-refiner\"",
                    "architecture = \"demucs-denoiser\"",
                ),
                "input `dfn3`: kind `reference` is only for architecture",
            ),
            (
                format!("{REFINER}\n[[input]]\nname = \"extra\"\nkind = \"reference\"\nshape = [1, 1, -1]\n"),
                "input: 2 tensors of kind `reference`",
            ),
            (
                REFINER.replace(
                    "[[output]]\nname = \"speech\"\nkind = \"waveform\"",
                    "[[output]]\nname = \"speech\"\nkind = \"reference\"",
                ),
                "output `speech`: kind `reference`",
            ),
            (
                WAVEFORM.replace(
                    "[[output]]",
                    "[[input]]\nname = \"dfn3\"\nkind = \"reference\"\nshape = [1, 1, -1]\n\n[[output]]",
                ),
                "architecture = \"dfn3-refiner\"",
            ),
        ];
        for (text, field) in cases {
            let e = invalid(&text);
            assert!(e.contains(field), "expected `{field}` in: {e}");
        }
    }

    #[test]
    fn a_wrong_sha256_is_refused_naming_the_field() {
        let mut d = parse(REFINER).expect("parses");
        d.check_sha256(b"graph")
            .expect("no sha256 given: nothing to check");
        d.sha256 = Some(sha256_hex(b"graph").to_uppercase());
        d.check_sha256(b"graph").expect("matches, case aside");
        let e = d.check_sha256(b"other graph").expect_err("mismatch");
        assert!(matches!(e, ModelError::Description { .. }), "{e}");
        let m = e.to_string();
        assert!(
            m.contains("sha256") && m.contains(&sha256_hex(b"other graph")),
            "{m}"
        );
    }

    fn port(name: &str, shape: &[i64]) -> GraphPort {
        GraphPort {
            name: name.into(),
            element: "f32".into(),
            shape: Some(shape.to_vec()),
        }
    }

    #[test]
    fn valid_descriptions_parse_and_name_their_ports() {
        let h = parse(HYBRID).expect("parses");
        h.validate().expect("valid");
        let p = h.ports().expect("ports");
        assert_eq!(p.mix, "mix");
        assert_eq!(p.spec.as_deref(), Some("spec"));
        assert_eq!(p.spec_out.as_deref(), Some("spec_out"));
        assert!(p.wave_out_has_sources);
        assert_eq!(h.speech_index(), Some(3));
        assert_eq!((h.hop(), h.bins()), (441, 442));
        let w = parse(WAVEFORM).expect("parses");
        w.validate().expect("valid");
        let p = w.ports().expect("ports");
        assert_eq!((p.mix.as_str(), p.wave_out.as_str()), ("mix", "speech"));
        assert!(!p.wave_out_has_sources);
        assert_eq!((w.hop(), w.bins()), (160, 161));
        assert_eq!(w.ms_to_samples(64.0), 1024);
    }

    fn invalid(text: &str) -> String {
        match parse(text) {
            Err(e) => e,
            Ok(d) => d.validate().expect_err("should be invalid"),
        }
    }

    #[test]
    fn invalid_descriptions_say_which_field_is_wrong() {
        let cases = [
            (HYBRID.replace("format = 1", "format = 2"), "format"),
            (HYBRID.replace("format = 1", ""), "format"),
            (
                HYBRID.replace("sample_rate = 44100", "sample_rate = 100"),
                "sample_rate",
            ),
            (
                HYBRID.replace("speech = \"vocals\"", "speech = \"voice\""),
                "speech",
            ),
            (HYBRID.replace("hop = 1024", "hop = 1000"), "stft.hop"),
            (
                HYBRID.replace("hop = 1024", "hop = 1024\nframing = \"torch\""),
                "stft.framing",
            ),
            (
                HYBRID.replace("hop = 1024", "hop = 1024\nframes = 43"),
                "stft.frames",
            ),
            (
                HYBRID.replace("window = 44100", "window = 44000"),
                "input `mix`",
            ),
            (
                HYBRID.replace("[1, 4, 2048, 44]", "[1, 4, 2049, 44]"),
                "input `spec`",
            ),
            (
                HYBRID.replace("kind = \"hybrid\"", "kind = \"waveform\""),
                "stft",
            ),
            (
                HYBRID.replace("kind = \"hybrid\"", "kind = \"magic\""),
                "magic",
            ),
            (
                WAVEFORM.replace("step_ms = 200", "step_ms = -1"),
                "schedule.step_ms",
            ),
            (
                WAVEFORM.replace("[1, 1, -1]\n\n[[output]]", "[1, 2, -1]\n\n[[output]]"),
                "input `mix`",
            ),
            ("not toml at all = = =".to_string(), ""),
        ];
        for (text, field) in cases {
            let e = invalid(&text);
            assert!(e.contains(field), "expected `{field}` in: {e}");
        }
    }

    #[test]
    fn graph_check_names_field_and_both_values() {
        let d = parse(HYBRID).expect("parses");
        let inputs = vec![port("mix", &[1, 2, 44100]), port("spec", &[1, 4, 2048, 44])];
        let outputs = vec![
            port("spec_out", &[1, 4, 4, 2048, 44]),
            port("wave_out", &[1, 4, 2, 44100]),
        ];
        d.check_graph(&inputs, &outputs).expect("matches");
        // Dynamic graph axes accept the described sizes.
        let dynamic = vec![port("mix", &[-1, 2, -1]), port("spec", &[1, 4, 2048, -1])];
        d.check_graph(&dynamic, &outputs).expect("matches");

        let msg = |i: &[GraphPort], o: &[GraphPort]| {
            d.check_graph(i, o).expect_err("mismatch").to_string()
        };
        let m = msg(&[port("mix", &[1, 2, 88200]), inputs[1].clone()], &outputs);
        assert!(
            m.contains("input `mix` shape[2]") && m.contains("44100") && m.contains("88200"),
            "{m}"
        );
        let m = msg(
            &[port("audio", &[1, 2, 44100]), inputs[1].clone()],
            &outputs,
        );
        assert!(m.contains("input `mix`") && m.contains("`audio`"), "{m}");
        let m = msg(&inputs, &[outputs[0].clone(), port("wave_out", &[1, 4, 2])]);
        assert!(
            m.contains("output `wave_out` rank") && m.contains("4") && m.contains("3"),
            "{m}"
        );
        let mut typed = inputs.clone();
        typed[0].element = "i64".into();
        let m = msg(&typed, &outputs);
        assert!(m.contains("element type") && m.contains("i64"), "{m}");
        let mut extra = inputs.clone();
        extra.push(port("state", &[1, 8]));
        let m = msg(&extra, &outputs);
        assert!(
            m.contains("input `state`") && m.contains("does not list"),
            "{m}"
        );

        let w = parse(WAVEFORM).expect("parses");
        let m = w
            .check_graph(
                &[port("mix", &[1, 1, 16000])],
                &[port("speech", &[1, 1, -1])],
            )
            .expect_err("fixed graph, dynamic description")
            .to_string();
        assert!(m.contains("dynamic (-1)") && m.contains("16000"), "{m}");
    }
}
