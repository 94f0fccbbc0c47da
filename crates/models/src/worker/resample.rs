//! Streaming resampling from the host rate to a model's rate (rubato), with its delay removed
//! so that model sample `n` lines up with host time `n / model_rate`.

use rubato::{
    Resampler, SincFixedIn, SincInterpolationParameters, SincInterpolationType, WindowFunction,
};
use std::collections::VecDeque;

/// Resampler for `streams` channels fed one host hop at a time.
pub struct StreamResampler {
    /// rubato's resampler (allocated in `new`).
    inner: SincFixedIn<f32>,
    /// Input scratch, one hop per stream.
    input: Vec<Vec<f32>>,
    /// Output scratch, one per stream.
    out: Vec<Vec<f32>>,
    /// Output samples still to drop to remove the resampler's delay.
    to_drop: usize,
    /// Its delay in output samples.
    delay: usize,
    /// Per stream: aligned output waiting to be consumed (room for a few hops reserved in
    /// `new`, so pushing and popping in turn never allocates).
    fifo: Vec<VecDeque<f32>>,
}

impl StreamResampler {
    /// From `host_rate` to `model_rate`, `hop` host samples per call.
    pub fn new(
        host_rate: u32,
        model_rate: u32,
        hop: usize,
        streams: usize,
    ) -> Result<Self, String> {
        let params = SincInterpolationParameters {
            sinc_len: 128,
            f_cutoff: 0.95,
            oversampling_factor: 256,
            interpolation: SincInterpolationType::Cubic,
            window: WindowFunction::BlackmanHarris2,
        };
        let ratio = model_rate as f64 / host_rate as f64;
        let inner =
            SincFixedIn::<f32>::new(ratio, 1.0, params, hop, streams).map_err(|e| e.to_string())?;
        let delay = inner.output_delay();
        let out = vec![vec![0.0; inner.output_frames_max()]; streams];
        let room = 4 * inner.output_frames_max() + hop;
        Ok(Self {
            input: vec![vec![0.0; hop]; streams],
            fifo: (0..streams)
                .map(|_| VecDeque::with_capacity(room))
                .collect(),
            inner,
            out,
            to_drop: delay,
            delay,
        })
    }

    /// Feeds one hop per stream: stream `s` is `hops[s * hop..(s + 1) * hop]`. No allocation.
    pub fn push(&mut self, hops: &[f32]) -> Result<(), String> {
        for (s, inp) in self.input.iter_mut().enumerate() {
            let n = inp.len();
            let src = hops
                .get(s * n..(s + 1) * n)
                .ok_or_else(|| format!("{} samples for {} streams", hops.len(), self.fifo.len()))?;
            inp.copy_from_slice(src);
        }
        let (_, produced) = self
            .inner
            .process_into_buffer(&self.input, &mut self.out, None)
            .map_err(|e| e.to_string())?;
        let skip = self.to_drop.min(produced);
        self.to_drop -= skip;
        for (fifo, out) in self.fifo.iter_mut().zip(&self.out) {
            fifo.extend(&out[skip..produced]);
        }
        Ok(())
    }

    /// Pops `out.len()` aligned samples of `stream` if that many are waiting.
    pub fn pop(&mut self, stream: usize, out: &mut [f32]) -> bool {
        let fifo = &mut self.fifo[stream];
        if fifo.len() < out.len() {
            return false;
        }
        let n = out.len();
        for (o, v) in out.iter_mut().zip(fifo.drain(..n)) {
            *o = v;
        }
        true
    }

    /// Samples of `stream` waiting.
    pub fn available(&self, stream: usize) -> usize {
        self.fifo[stream].len()
    }

    /// Forgets all state.
    pub fn reset(&mut self) {
        self.inner.reset();
        self.to_drop = self.delay;
        self.fifo.iter_mut().for_each(VecDeque::clear);
    }
}
