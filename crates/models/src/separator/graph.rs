//! A separator graph on ONNX Runtime: feeds it a window (zero-padded to the graph's fixed
//! window), computes HTDemucs's spectrogram around it in Rust for hybrid models, and adds
//! the inverse spectrogram of the spectral branch to the waveform branch. A refiner's graph
//! also gets its reference (DeepFilterNet3's estimate of the same samples) as a second input.
//!
//! Memory: buffers grow to the largest window seen and are reused; ONNX Runtime allocates
//! its outputs per run. Runs on the separator's inference thread (never the audio thread).

use super::desc::{GraphPort, Kind, ModelDescription, Ports};
use super::spectral::HybridStft;
use super::window::WindowModel;
use crate::runtime::{Provider, SessionOptions};
use crate::ModelError;
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;
use std::borrow::Cow;

/// A loaded separator graph.
pub struct SeparatorGraph {
    /// Name for messages (the ONNX file).
    name: String,
    /// The session.
    session: Session,
    /// Where it runs.
    provider: Provider,
    /// Why not where asked, if so.
    fallback: Option<String>,
    /// The tensors by role.
    ports: Ports,
    /// Audio channels of the graph.
    channels: usize,
    /// Sources of the graph.
    sources: usize,
    /// Index of speech in the sources.
    speech: usize,
    /// The graph's fixed time axis (0 = any).
    window: usize,
    /// HTDemucs's spectrogram (hybrid models).
    stft: Option<HybridStft>,
    /// Waveform input, `[C, T]`.
    mix: Vec<f32>,
    /// Reference input, `[C, T]` (refiners).
    reference: Vec<f32>,
    /// Spectrogram input, `[2C, F, N]`.
    spec: Vec<f32>,
    /// Output of [`SeparatorGraph::forward`], `[S, C, T]`.
    sources_out: Vec<f32>,
    /// One source's spectral branch in the time domain, `[C, T]`.
    branch: Vec<f32>,
}

impl SeparatorGraph {
    /// Reads the graph `desc` names, builds a session with `opts` (falling back to the CPU with
    /// a reason if the provider cannot start) and checks it against the description.
    pub fn load(desc: &ModelDescription, opts: &SessionOptions) -> Result<Self, ModelError> {
        let ports = desc.ports().map_err(|message| ModelError::Description {
            path: desc.dir.join(super::desc::FILE_NAME),
            message,
        })?;
        let path = desc.graph_path();
        let bytes = std::fs::read(&path).map_err(|source| ModelError::Read {
            path: path.clone(),
            source,
        })?;
        desc.check_sha256(&bytes)?;
        let name = desc.file.display().to_string();
        let built = crate::runtime::session_with(&name, &bytes, opts)?;
        let (inputs, outputs) = GraphPort::of_session(&built.session);
        desc.check_graph(&inputs, &outputs)?;
        Ok(Self {
            name,
            session: built.session,
            provider: built.provider,
            fallback: built.fallback,
            ports,
            channels: desc.channels,
            sources: desc.sources.len(),
            speech: desc.speech_index().unwrap_or(0),
            window: desc.window,
            stft: match (desc.kind, &desc.stft) {
                (Kind::Hybrid, Some(st)) => Some(HybridStft::new(st.n_fft)),
                _ => None,
            },
            mix: Vec::new(),
            reference: Vec::new(),
            spec: Vec::new(),
            sources_out: Vec::new(),
            branch: Vec::new(),
        })
    }

    /// Where the graph runs.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// Why it does not run on the provider asked for, if it does not.
    pub fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// The graph's audio channels.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The graph's fixed window (0 = any length).
    pub fn window(&self) -> usize {
        self.window
    }

    /// Whether the graph takes a reference input (a refiner).
    pub fn takes_reference(&self) -> bool {
        self.ports.reference.is_some()
    }

    /// An inference error for this graph.
    fn error(&self, message: impl ToString) -> ModelError {
        ModelError::Inference {
            graph: self.name.clone(),
            message: message.to_string(),
        }
    }

    /// The full model on `mix` (`channels` planar channels of `len` samples, at most the
    /// graph's window; zero-padded to it): every source, `[S, C, len]`, each the sum of the
    /// waveform branch and the inverse spectrogram of the spectral branch (hybrid).
    pub fn forward(&mut self, mix: &[f32], len: usize) -> Result<&[f32], ModelError> {
        self.forward_with(mix, None, len)
    }

    /// [`Self::forward`] with the reference input of a refiner (`[C, len]` like `mix`); a
    /// graph that takes a reference needs one, and one that does not ignores it.
    pub fn forward_with(
        &mut self,
        mix: &[f32],
        reference: Option<&[f32]>,
        len: usize,
    ) -> Result<&[f32], ModelError> {
        let c = self.channels;
        if mix.len() != c * len {
            return Err(self.error(format!(
                "{} samples given for {c} channels of {len}",
                mix.len()
            )));
        }
        let reference = match (&self.ports.reference, reference) {
            (None, _) => None,
            (Some(_), Some(r)) if r.len() == c * len => Some(r),
            (Some(name), r) => {
                return Err(self.error(format!(
                    "input `{name}` (the reference) needs {} samples, {} given",
                    c * len,
                    r.map_or(0, <[f32]>::len)
                )))
            }
        };
        let t = if self.window == 0 { len } else { self.window };
        if len > t {
            return Err(self.error(format!(
                "{len} samples do not fit the graph's window of {t}"
            )));
        }
        self.mix.clear();
        self.mix.resize(c * t, 0.0);
        for ch in 0..c {
            self.mix[ch * t..ch * t + len].copy_from_slice(&mix[ch * len..(ch + 1) * len]);
        }
        let err = |e: ort::Error| ModelError::Inference {
            graph: self.name.clone(),
            message: e.to_string(),
        };
        if let Some(r) = reference {
            self.reference.clear();
            self.reference.resize(c * t, 0.0);
            for ch in 0..c {
                self.reference[ch * t..ch * t + len].copy_from_slice(&r[ch * len..(ch + 1) * len]);
            }
        }
        let mut feed: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::with_capacity(2);
        let mix_shape = vec![1i64, c as i64, t as i64];
        feed.push((
            Cow::Borrowed(self.ports.mix.as_str()),
            TensorRef::from_array_view((mix_shape, &self.mix[..]))
                .map_err(err)?
                .into(),
        ));
        if let (Some(name), Some(_)) = (self.ports.reference.as_ref(), reference) {
            let shape = vec![1i64, c as i64, t as i64];
            feed.push((
                Cow::Borrowed(name.as_str()),
                TensorRef::from_array_view((shape, &self.reference[..]))
                    .map_err(err)?
                    .into(),
            ));
        }
        let mut spec_dims = (0, 0);
        if let (Some(stft), Some(name)) = (self.stft.as_mut(), self.ports.spec.as_ref()) {
            self.spec.clear();
            self.spec.resize(stft.spec_len(c, t), 0.0);
            stft.spec(&self.mix, c, &mut self.spec);
            spec_dims = (stft.bins(), stft.frames(t));
            let shape = vec![1i64, 2 * c as i64, spec_dims.0 as i64, spec_dims.1 as i64];
            feed.push((
                Cow::Borrowed(name.as_str()),
                TensorRef::from_array_view((shape, &self.spec[..]))
                    .map_err(err)?
                    .into(),
            ));
        }
        let name = self.name.clone();
        let fail = |message: String| ModelError::Inference {
            graph: name.clone(),
            message,
        };
        let outputs = self.session.run(feed).map_err(|e| fail(e.to_string()))?;
        let s = if self.ports.wave_out_has_sources {
            self.sources
        } else {
            1
        };
        let wave = outputs
            .get(&self.ports.wave_out)
            .ok_or_else(|| fail(format!("no output `{}`", self.ports.wave_out)))?;
        let (shape, data) = wave
            .try_extract_tensor::<f32>()
            .map_err(|e| fail(e.to_string()))?;
        if data.len() != s * c * t {
            return Err(fail(format!(
                "output `{}` has shape {shape:?}, expected {} values",
                self.ports.wave_out,
                s * c * t
            )));
        }
        self.sources_out.clear();
        self.sources_out.resize(s * c * len, 0.0);
        for src in 0..s {
            for ch in 0..c {
                let from = (src * c + ch) * t;
                let to = (src * c + ch) * len;
                self.sources_out[to..to + len].copy_from_slice(&data[from..from + len]);
            }
        }
        if let (Some(stft), Some(out_name)) = (self.stft.as_mut(), self.ports.spec_out.as_ref()) {
            let z = outputs
                .get(out_name)
                .ok_or_else(|| fail(format!("no output `{out_name}`")))?;
            let (shape, data) = z
                .try_extract_tensor::<f32>()
                .map_err(|e| fail(e.to_string()))?;
            let per_source = 2 * c * spec_dims.0 * spec_dims.1;
            if data.len() != s * per_source {
                return Err(fail(format!(
                    "output `{out_name}` has shape {shape:?}, expected {} values",
                    s * per_source
                )));
            }
            self.branch.clear();
            self.branch.resize(c * t, 0.0);
            for src in 0..s {
                stft.ispec(
                    &data[src * per_source..(src + 1) * per_source],
                    c,
                    t,
                    &mut self.branch,
                );
                for ch in 0..c {
                    let to = (src * c + ch) * len;
                    for (o, b) in self.sources_out[to..to + len]
                        .iter_mut()
                        .zip(&self.branch[ch * t..ch * t + len])
                    {
                        *o += b;
                    }
                }
            }
        }
        Ok(&self.sources_out)
    }

    /// The speech source of [`SeparatorGraph::forward`], `[C, len]`.
    pub fn speech(&mut self, mix: &[f32], len: usize) -> Result<&[f32], ModelError> {
        self.speech_with(mix, None, len)
    }

    /// [`Self::speech`] with a refiner's reference input (see [`Self::forward_with`]).
    pub fn speech_with(
        &mut self,
        mix: &[f32],
        reference: Option<&[f32]>,
        len: usize,
    ) -> Result<&[f32], ModelError> {
        let c = self.channels;
        let speech = if self.ports.wave_out_has_sources {
            self.speech
        } else {
            0
        };
        let all = self.forward_with(mix, reference, len)?;
        Ok(&all[speech * c * len..(speech + 1) * c * len])
    }
}

/// A graph run on mono windows: the mono input duplicated into every channel of the graph,
/// the speech estimate averaged over them.
pub struct MonoRunner {
    /// The graph.
    pub graph: SeparatorGraph,
    /// Planar input scratch (`C * W`).
    input: Vec<f32>,
    /// Planar reference scratch (`C * W`).
    reference: Vec<f32>,
}

impl MonoRunner {
    /// Wraps a graph.
    pub fn new(graph: SeparatorGraph) -> Self {
        Self {
            graph,
            input: Vec::new(),
            reference: Vec::new(),
        }
    }
}

impl MonoRunner {
    /// Runs the graph on `input` (and `reference`, duplicated alike) into `output`.
    fn run_mono(
        &mut self,
        input: &[f32],
        reference: Option<&[f32]>,
        output: &mut [f32],
    ) -> Result<(), ModelError> {
        let c = self.graph.channels();
        let len = input.len();
        self.input.clear();
        for _ in 0..c {
            self.input.extend_from_slice(input);
        }
        if let Some(r) = reference {
            self.reference.clear();
            for _ in 0..c {
                self.reference.extend_from_slice(r);
            }
        }
        let reference = reference.map(|_| &self.reference[..]);
        let speech = self.graph.speech_with(&self.input, reference, len)?;
        let scale = 1.0 / c as f32;
        for (i, o) in output.iter_mut().enumerate() {
            *o = (0..c).map(|ch| speech[ch * len + i]).sum::<f32>() * scale;
        }
        Ok(())
    }
}

impl WindowModel for MonoRunner {
    fn run(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), ModelError> {
        self.run_mono(input, None, output)
    }

    fn run_with_reference(
        &mut self,
        input: &[f32],
        reference: &[f32],
        output: &mut [f32],
    ) -> Result<(), ModelError> {
        self.run_mono(input, Some(reference), output)
    }
}
