//! DeepFilterNet3 (Schröter et al., 2023), streamed frame by frame through stateful versions
//! of its three ONNX graphs (`models/dfn3/stateful/`, derived from the official export by
//! `cargo xtask stateful-models`; see `models/dfn3/PROVENANCE.md`).
//!
//! Per 10 ms hop and stream the cost is bounded: one 960-point FFT, the features, and one
//! single-frame call of each graph (encoder, ERB decoder, deep-filter decoder), whose causal
//! time paddings and GRU states are carried as explicit state tensors.
//!
//! The output of frame `t` is DeepFilterNet3's own enhanced spectrum `Y[t]`: ERB gains
//! interpolated to bins above the lowest 96, and a 5-tap complex deep filter over frames
//! `t-2..=t+2` in the lowest 96 bins. It is handed to the engine as a complex gain per bin,
//! `G = Y / X` with `|G| <= 2`, which on the 48 kHz grid reproduces the model's output.

pub mod erb;
pub mod features;
pub mod graph;

use super::{MaskModel, ModelError, ModelSpec};
use crate::runtime::{Provider, SessionOptions};
use features::Features;
use graph::{Graph, Slots, Stepper};
use num_complex::Complex32;
use std::path::Path;
use voxsift_engine::stft::{Grid, Stft};

/// Model sample rate.
pub const SAMPLE_RATE: u32 = 48_000;
/// FFT size.
pub const FFT_SIZE: usize = 960;
/// Hop size.
pub const HOP: usize = 480;
/// ERB bands.
pub const NB_ERB: usize = 32;
/// Deep-filter bins.
pub const NB_DF: usize = 96;
/// Deep-filter taps.
pub const DF_ORDER: usize = 5;
/// Deep-filter lookahead (frames).
pub const DF_LOOKAHEAD: usize = 2;
/// Convolution lookahead (frames): the features of frame `t + 2` are the model's input at `t`.
/// The graphs also run on the features of frames 0 and 1 of a stream, as the reference
/// runtime does, and their outputs (for frames before the stream) are dropped: so the
/// encoder's 3-frame time convolution sees real frames from the first mask on. Starting at
/// frame 2 instead (the training graph's shift, which drops frames 0 and 1) left zeros in it
/// and cost up to 2.6 dB SI-SDR on clean speech (BENCHMARKS.md, "Speech after digital
/// silence").
pub const CONV_LOOKAHEAD: usize = 2;
/// Largest magnitude a complex gain may have.
pub const MAX_GAIN: f32 = 2.0;

/// What the engine needs to know about DeepFilterNet3.
pub const SPEC: ModelSpec = ModelSpec {
    name: "dfn3",
    sample_rate: SAMPLE_RATE,
    hop: HOP,
    bins: FFT_SIZE / 2 + 1,
    lookahead: CONV_LOOKAHEAD,
};

/// The three stateful graphs as bytes.
pub struct Graphs<'a> {
    /// Encoder.
    pub enc: &'a [u8],
    /// ERB decoder.
    pub erb_dec: &'a [u8],
    /// Deep-filter decoder.
    pub df_dec: &'a [u8],
}

/// The spec of DeepFilterNet3 run `frames` frames per graph call ([`Dfn3::batched`]): each
/// call waits for a whole chunk of frames, so the lookahead grows by `frames - 1` frames.
pub const fn batched_spec(frames: usize) -> ModelSpec {
    let frames = if frames == 0 { 1 } else { frames };
    ModelSpec {
        lookahead: CONV_LOOKAHEAD + frames - 1,
        ..SPEC
    }
}

/// Most frames per graph call [`Dfn3::batched`] accepts.
pub const MAX_FRAMES_PER_CALL: usize = 1000;

/// The graphs shipped inside the binary (no download, no files needed at run time).
pub const EMBEDDED: Graphs<'static> = Graphs {
    enc: include_bytes!("../../../../models/dfn3/stateful/enc.onnx"),
    erb_dec: include_bytes!("../../../../models/dfn3/stateful/erb_dec.onnx"),
    df_dec: include_bytes!("../../../../models/dfn3/stateful/df_dec.onnx"),
};

/// Reads the three graphs from a directory (`enc.onnx`, `erb_dec.onnx`, `df_dec.onnx`).
pub fn read_graphs(dir: &Path) -> Result<[Vec<u8>; 3], ModelError> {
    let read = |n: &str| {
        let path = dir.join(n);
        std::fs::read(&path).map_err(|source| ModelError::Read { path, source })
    };
    Ok([
        read("enc.onnx")?,
        read("erb_dec.onnx")?,
        read("df_dec.onnx")?,
    ])
}

/// Names how DeepFilterNet3 handles a stream, for cache keys: masks computed by code that
/// handles it otherwise differ.
pub const STREAM_HANDLING: &str = "runs from frame 0; after digital silence, carries on from \
     the state the silence left (the model runs through it)";

/// Slot indices of the values DeepFilterNet3's step reads and writes.
struct Io {
    /// ERB features in.
    feat_erb: usize,
    /// Complex spectrum features in.
    feat_spec: usize,
    /// ERB gains out.
    m: usize,
    /// Deep-filter coefficients out.
    coefs: usize,
}

/// Streaming state of one audio stream.
struct Stream {
    /// The last `FFT_SIZE` input samples, oldest first.
    frame: Vec<f32>,
    /// Feature normalisation state.
    features: Features,
    /// Spectra of the last `2 * DF_LOOKAHEAD + 1` frames, by frame index modulo that.
    history: Vec<Vec<Complex32>>,
    /// Frames analysed since reset.
    frames: u64,
    /// Whether any hop since the last reset held sound (not exact zeros).
    heard: bool,
    /// Batched only: frames whose features wait in the slots for the next call.
    chunk_len: usize,
    /// Batched only: the masks of the last call, `frames_per_call * bins`, frame by frame.
    queued: Vec<Complex32>,
    /// Batched only: the frame whose features were the input of the first of them (its
    /// mask is for the frame `CONV_LOOKAHEAD` earlier).
    queued_first: u64,
}

impl Stream {
    /// Starts the stream again at frame 0 with empty buffers, keeping `features` (after long
    /// digital silence the buffers hold nothing but zeros anyway).
    fn restart(&mut self) {
        self.frame.fill(0.0);
        self.history
            .iter_mut()
            .for_each(|h| h.fill(Complex32::default()));
        self.frames = 0;
        self.chunk_len = 0;
    }
}

/// DeepFilterNet3 on ONNX Runtime.
pub struct Dfn3 {
    /// Where the graphs run.
    provider: Provider,
    /// Why they do not run where asked, if so.
    notice: Option<String>,
    /// Frames per graph call: 1 streams frame by frame (the default, the plugin's); more runs
    /// the graphs over chunks of that many frames (offline only, see [`Dfn3::batched`]).
    frames_per_call: usize,
    /// Encoder (its states per stream inside).
    enc: Stepper,
    /// ERB decoder.
    erb_dec: Stepper,
    /// Deep-filter decoder.
    df_dec: Stepper,
    /// ERB band of every bin.
    band_of_bin: Vec<usize>,
    /// STFT at 48 kHz (same window as the engine).
    stft: Stft,
    /// Per-stream state.
    streams: Vec<Stream>,
    /// Tensors passed between the graphs, allocated at load.
    slots: Slots,
    /// Slot indices: the features in, the ERB gains and deep-filter coefficients out.
    io: Io,
    /// Scratch spectrum.
    spec: Vec<Complex32>,
    /// Scratch features.
    erb_feat: Vec<f32>,
    /// Scratch features.
    spec_feat: Vec<f32>,
}

impl Dfn3 {
    /// Loads the embedded graphs for `streams` streams with `threads` intra-op threads.
    pub fn embedded(streams: usize, threads: usize) -> Result<Self, ModelError> {
        Self::from_graphs(&EMBEDDED, streams, threads)
    }

    /// Loads the embedded graphs with the given session options (provider, threads).
    pub fn embedded_with(streams: usize, opts: &SessionOptions) -> Result<Self, ModelError> {
        Self::from_graphs_with(&EMBEDDED, streams, opts)
    }

    /// Loads stateful graphs from bytes, on the CPU.
    pub fn from_graphs(g: &Graphs, streams: usize, threads: usize) -> Result<Self, ModelError> {
        Self::from_graphs_with(
            g,
            streams,
            &SessionOptions {
                threads,
                ..SessionOptions::default()
            },
        )
    }

    /// Loads stateful graphs from bytes with the given session options. If the provider asked
    /// for cannot start, every graph runs on the CPU and [`MaskModel::notice`] says why.
    pub fn from_graphs_with(
        g: &Graphs,
        streams: usize,
        opts: &SessionOptions,
    ) -> Result<Self, ModelError> {
        Self::batched(g, streams, opts, 1)
    }

    /// Like [`Dfn3::from_graphs_with`], but every graph call runs `frames_per_call` frames at
    /// once (1 to [`MAX_FRAMES_PER_CALL`]), with the states carried from chunk to chunk. About
    /// 2.5 times cheaper per frame from 8 frames on, but not bit-identical to frame-by-frame
    /// calls (ONNX Runtime's kernels sum in another order over longer inputs: within about
    /// 1e-6 of the outputs), and the lookahead grows to [`batched_spec`]'s. Chunks start at
    /// fixed frame indices, so the output is deterministic. After digital silence the stream
    /// carries on from the states the silence left, as frame by frame.
    pub fn batched(
        g: &Graphs,
        streams: usize,
        opts: &SessionOptions,
        frames_per_call: usize,
    ) -> Result<Self, ModelError> {
        if !(1..=MAX_FRAMES_PER_CALL).contains(&frames_per_call) {
            return Err(ModelError::Mismatch {
                graph: "dfn3".into(),
                message: format!(
                    "{frames_per_call} frames per call: from 1 to {MAX_FRAMES_PER_CALL}"
                ),
            });
        }
        let k = frames_per_call;
        let mut opts = *opts;
        let enc = crate::runtime::session_with("enc", g.enc, &opts)?;
        let (provider, notice) = (enc.provider, enc.fallback);
        // One provider for all three graphs: after a fallback the others go straight to CPU.
        opts.provider = provider;
        let erb_dec_s = crate::runtime::session_with("erb_dec", g.erb_dec, &opts)?;
        let df_dec_s = crate::runtime::session_with("df_dec", g.df_dec, &opts)?;
        let enc = Graph::new(
            "enc",
            enc.session,
            &["feat_erb", "feat_spec"],
            &["e0", "e1", "e2", "e3", "emb", "c0"],
        )?;
        let erb_dec = Graph::new(
            "erb_dec",
            erb_dec_s.session,
            &["emb", "e0", "e1", "e2", "e3"],
            &["m"],
        )?;
        let df_dec = Graph::new("df_dec", df_dec_s.session, &["emb", "c0"], &["coefs"])?;
        let widths = erb::band_widths(SAMPLE_RATE, FFT_SIZE, NB_ERB, 2);
        let band_of_bin = widths
            .iter()
            .enumerate()
            .flat_map(|(b, &w)| std::iter::repeat_n(b, w))
            .collect();
        let alpha = (-(HOP as f64) / SAMPLE_RATE as f64).exp() as f32;
        let n_streams = streams.max(1);
        // The features are the encoder's inputs; every graph's outputs become slots that the
        // next graph reads (each probe run gives their shapes).
        let mut slots = Slots::new();
        let feat_erb = slots.insert("feat_erb", &[1, 1, k as i64, NB_ERB as i64])?;
        let feat_spec = slots.insert("feat_spec", &[1, 2, k as i64, NB_DF as i64])?;
        let enc = Stepper::new(enc, &mut slots, n_streams)?;
        let erb_dec = Stepper::new(erb_dec, &mut slots, n_streams)?;
        let df_dec = Stepper::new(df_dec, &mut slots, n_streams)?;
        let slot = |name: &str, len: usize| match slots.index(name) {
            Some(i) if slots.data(i).len() == len => Ok(i),
            _ => Err(ModelError::Mismatch {
                graph: "erb_dec/df_dec".into(),
                message: format!("output `{name}` does not hold {len} values per frame"),
            }),
        };
        let io = Io {
            feat_erb,
            feat_spec,
            m: slot("m", k * NB_ERB)?,
            coefs: slot("coefs", k * NB_DF * DF_ORDER * 2)?,
        };
        let streams = (0..n_streams)
            .map(|_| Stream {
                frame: vec![0.0; FFT_SIZE],
                features: Features::new(&widths, NB_DF, alpha),
                // Frames t - 2 ..= t + 2 for every frame t of a chunk.
                history: vec![vec![Complex32::default(); SPEC.bins]; 2 * DF_LOOKAHEAD + k],
                frames: 0,
                heard: false,
                chunk_len: 0,
                queued: if k > 1 {
                    vec![Complex32::default(); k * SPEC.bins]
                } else {
                    Vec::new()
                },
                queued_first: 0,
            })
            .collect();
        Ok(Self {
            frames_per_call: k,
            provider,
            notice,
            enc,
            erb_dec,
            df_dec,
            band_of_bin,
            stft: Stft::new(Grid::for_rate(SAMPLE_RATE)),
            streams,
            slots,
            io,
            spec: vec![Complex32::default(); SPEC.bins],
            erb_feat: vec![0.0; NB_ERB],
            spec_feat: vec![0.0; 2 * NB_DF],
        })
    }

    /// Runs the three graphs for one model step of `stream` on the features already in
    /// their slots; leaves the ERB gains and deep-filter coefficients in the `m` and `coefs`
    /// slots. No allocation.
    fn step(&mut self, stream: usize) -> Result<(), ModelError> {
        self.enc.step(&mut self.slots, stream)?;
        self.erb_dec.step(&mut self.slots, stream)?;
        self.df_dec.step(&mut self.slots, stream)?;
        Ok(())
    }

    /// [`MaskModel::push_hop`] for `frames_per_call > 1`: queues the frame's features; when a
    /// chunk is complete, runs it in one call of each graph and queues its masks. Returns the
    /// mask of frame `g - lookahead` (`g` the frame just analysed), so one mask per hop at a
    /// constant lag, as the worker expects.
    fn push_hop_batched(
        &mut self,
        stream: usize,
        hop: &[f32],
        mask: &mut [Complex32],
    ) -> Result<Option<u64>, ModelError> {
        let k = self.frames_per_call;
        let g = self.analyse(stream, hop);
        let j = self.streams[stream].chunk_len;
        self.slots.data_mut(self.io.feat_erb)[j * NB_ERB..(j + 1) * NB_ERB]
            .copy_from_slice(&self.erb_feat);
        let spec = self.slots.data_mut(self.io.feat_spec);
        spec[j * NB_DF..(j + 1) * NB_DF].copy_from_slice(&self.spec_feat[..NB_DF]);
        spec[(k + j) * NB_DF..(k + j + 1) * NB_DF].copy_from_slice(&self.spec_feat[NB_DF..]);
        let st = &mut self.streams[stream];
        st.chunk_len += 1;
        if st.chunk_len == k {
            st.chunk_len = 0;
            // The chunk holds the features of frames g' = first ..= g, the model's input for
            // frames t = g' - 2; the first chunk's first two are for frames before the
            // stream, whose masks are not needed.
            let first = g + 1 - k as u64;
            self.step(stream)?;
            let m = self.slots.data(self.io.m);
            let coefs = self.slots.data(self.io.coefs);
            let st = &mut self.streams[stream];
            let per = NB_DF * DF_ORDER * 2;
            for (j, q) in st.queued.chunks_exact_mut(SPEC.bins).enumerate() {
                if let Some(t) = (first + j as u64).checked_sub(CONV_LOOKAHEAD as u64) {
                    frame_mask(
                        &st.history,
                        &self.band_of_bin,
                        t,
                        &m[j * NB_ERB..(j + 1) * NB_ERB],
                        &coefs[j * per..(j + 1) * per],
                        q,
                    );
                }
            }
            st.queued_first = first;
        }
        let lookahead = batched_spec(k).lookahead as u64;
        let Some(t) = g.checked_sub(lookahead) else {
            return Ok(None);
        };
        // Frame t's mask came from the features of frame t + 2.
        let input = t + CONV_LOOKAHEAD as u64;
        let st = &self.streams[stream];
        let j = input.wrapping_sub(st.queued_first) as usize;
        if input < st.queued_first || j >= k {
            return Err(ModelError::Inference {
                graph: "dfn3".into(),
                message: format!("frame {t} is not queued (batched, {k} frames per call)"),
            });
        }
        mask.copy_from_slice(&st.queued[j * SPEC.bins..(j + 1) * SPEC.bins]);
        Ok(Some(t))
    }

    /// Starts `stream` again at frame 0 with empty buffers; `cold` also restores the initial
    /// normalisation and graph states and forgets that the stream heard sound. No allocation.
    fn restart_stream(&mut self, stream: usize, cold: bool) {
        let st = &mut self.streams[stream];
        st.restart();
        if cold {
            st.features.reset();
            st.heard = false;
            for g in [&mut self.enc, &mut self.erb_dec, &mut self.df_dec] {
                g.set_state(stream, None);
            }
        }
    }

    /// The ERB gains (`m`) and deep-filter coefficients (`coefs`) of the last model step.
    pub fn last_outputs(&self) -> (&[f32], &[f32]) {
        (self.slots.data(self.io.m), self.slots.data(self.io.coefs))
    }

    /// Features of one frame for tests: analyses `frame` (960 samples) of `stream` without
    /// running the graphs and returns (ERB features, spectrum features).
    pub fn features_only(&mut self, stream: usize, hop: &[f32]) -> (Vec<f32>, Vec<f32>) {
        self.analyse(stream, hop);
        (self.erb_feat.clone(), self.spec_feat.clone())
    }

    /// Shifts `hop` into the stream, analyses the frame, stores its spectrum and computes its
    /// features into the scratch buffers.
    fn analyse(&mut self, stream: usize, hop: &[f32]) -> u64 {
        let st = &mut self.streams[stream];
        st.frame.copy_within(HOP.., 0);
        st.frame[FFT_SIZE - HOP..].copy_from_slice(hop);
        self.stft.analyze(&st.frame, &mut self.spec);
        let norm = 1.0 / FFT_SIZE as f32; // DeepFilterNet's 2H / N^2 with N = 2H
        for v in &mut self.spec {
            *v *= norm;
        }
        let g = st.frames;
        let slot = (g % st.history.len() as u64) as usize;
        st.history[slot].copy_from_slice(&self.spec);
        st.features
            .compute(&self.spec, &mut self.erb_feat, &mut self.spec_feat);
        st.frames += 1;
        g
    }
}

impl MaskModel for Dfn3 {
    fn spec(&self) -> ModelSpec {
        batched_spec(self.frames_per_call)
    }

    fn provider(&self) -> String {
        self.provider.name().into()
    }

    fn notice(&self) -> Option<String> {
        self.notice.clone()
    }

    fn reset(&mut self) {
        for s in 0..self.streams.len() {
            self.restart_stream(s, true);
        }
    }

    /// After digital silence: every stream starts again at frame 0 with empty buffers and
    /// carries on from the normalisation and graph states the silence left: the worker runs
    /// the model on every silent hop, as the reference runtime does, and the feature means
    /// (1 s time constant) and recurrent states that settle over the silence are what let
    /// DeepFilterNet3 open up for the first syllables after it. Starting cold ate them, and
    /// both resuming from the state before the silence and starting from a precomputed
    /// silence steady state (cold, then 3 s of zeros) kept suppressing them (BENCHMARKS.md,
    /// "Speech after digital silence"). A stream that has heard no sound since the last reset
    /// starts cold, so leading silence of any length still changes nothing. No allocation.
    fn resume(&mut self) {
        for s in 0..self.streams.len() {
            let cold = !self.streams[s].heard;
            self.restart_stream(s, cold);
        }
    }

    fn push_hop(
        &mut self,
        stream: usize,
        hop: &[f32],
        mask: &mut [Complex32],
    ) -> Result<Option<u64>, ModelError> {
        if hop.iter().any(|&x| x != 0.0) {
            self.streams[stream].heard = true;
        }
        if self.frames_per_call > 1 {
            return self.push_hop_batched(stream, hop, mask);
        }
        let g = self.analyse(stream, hop);
        self.slots
            .data_mut(self.io.feat_erb)
            .copy_from_slice(&self.erb_feat);
        self.slots
            .data_mut(self.io.feat_spec)
            .copy_from_slice(&self.spec_feat);
        // Frames 0 and 1 run too (their outputs are for frames before the stream): the
        // encoder's time convolution then holds real frames, not zeros, from the first mask
        // on, as in the reference runtime.
        self.step(stream)?;
        let Some(t) = g.checked_sub(CONV_LOOKAHEAD as u64) else {
            return Ok(None);
        };
        // Lengths checked at load.
        let m = self.slots.data(self.io.m);
        let coefs = self.slots.data(self.io.coefs);
        frame_mask(
            &self.streams[stream].history,
            &self.band_of_bin,
            t,
            m,
            coefs,
            mask,
        );
        Ok(Some(t))
    }
}

/// The complex gain per bin for frame `t`, `G = Y / X` with `|G| <= 2`, from DeepFilterNet3's
/// ERB gains `m` and deep-filter coefficients `coefs` of that frame and the stream's spectra
/// `history` (by frame index modulo its length, frames `t - 2..=t + 2` held).
fn frame_mask(
    history: &[Vec<Complex32>],
    band_of_bin: &[usize],
    t: u64,
    m: &[f32],
    coefs: &[f32],
    mask: &mut [Complex32],
) {
    let n_hist = history.len() as u64;
    let x_t = &history[(t % n_hist) as usize];
    for (k, out) in mask.iter_mut().enumerate() {
        let x = x_t[k];
        let erb_gain = m[band_of_bin[k]];
        let y = if k < NB_DF {
            let mut acc = Complex32::default();
            for o in 0..DF_ORDER {
                // Tap o multiplies frame t + o - 2 (zero before the stream started).
                let Some(f) = (t + o as u64).checked_sub(DF_LOOKAHEAD as u64) else {
                    continue;
                };
                let c = Complex32::new(coefs[k * 10 + o * 2], coefs[k * 10 + o * 2 + 1]);
                acc += history[(f % n_hist) as usize][k] * c;
            }
            acc
        } else {
            x * erb_gain
        };
        let xn = x.norm_sqr();
        *out = if xn > 1e-24 {
            let gain = y * x.conj() / xn;
            let mag = gain.norm();
            if mag > MAX_GAIN {
                gain * (MAX_GAIN / mag)
            } else {
                gain
            }
        } else {
            Complex32::new(erb_gain, 0.0)
        };
    }
}
