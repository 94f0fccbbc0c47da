//! A deterministic stand-in model for tests that must not depend on ONNX Runtime: its mask of
//! frame `t` is a fixed function of the input spectrum energy of frames `t..=t+lookahead`, so
//! alignment, lookahead, block-size invariance and realtime fallback are all exercised.

use super::{MaskModel, ModelError, ModelSpec};
use num_complex::Complex32;
use std::collections::VecDeque;

/// Gain per bin from a running level of the last `lookahead + 1` hops: bins above
/// `cutoff_hz` are attenuated when the level is high. Deterministic and cheap.
pub struct SyntheticModel {
    /// The spec it reports.
    spec: ModelSpec,
    /// Per stream: energies of the hops not yet turned into masks.
    pending: Vec<VecDeque<f32>>,
    /// Per stream: hops received since reset.
    count: Vec<u64>,
    /// Bins at or above this are attenuated.
    cutoff_bin: usize,
}

impl SyntheticModel {
    /// A 48 kHz, 10 ms-hop model with `lookahead` frames, for `streams` streams.
    pub fn new(streams: usize, lookahead: usize) -> Self {
        Self::with_rate(streams, lookahead, 48_000)
    }

    /// The same at another model rate.
    pub fn with_rate(streams: usize, lookahead: usize, sample_rate: u32) -> Self {
        let hop = (sample_rate / 100) as usize;
        let spec = ModelSpec {
            name: "synthetic",
            sample_rate,
            hop,
            bins: hop + 1,
            lookahead,
        };
        Self {
            spec,
            pending: vec![VecDeque::new(); streams],
            count: vec![0; streams],
            cutoff_bin: 40,
        }
    }

    /// The same with the attenuated band starting at `cutoff_hz` instead of bin 40 (2 kHz at a
    /// 10 ms hop), so that two synthetic models can give different masks (fusion tests).
    pub fn with_cutoff_hz(mut self, cutoff_hz: f32) -> Self {
        let bin = (cutoff_hz as f64 / self.spec.bin_hz()).round();
        self.cutoff_bin = (bin.max(0.0) as usize).min(self.spec.bins);
        self
    }
}

impl MaskModel for SyntheticModel {
    fn spec(&self) -> ModelSpec {
        self.spec
    }

    fn reset(&mut self) {
        self.pending.iter_mut().for_each(VecDeque::clear);
        self.count.fill(0);
    }

    fn push_hop(
        &mut self,
        stream: usize,
        hop: &[f32],
        mask: &mut [Complex32],
    ) -> Result<Option<u64>, ModelError> {
        let energy = hop.iter().map(|x| x * x).sum::<f32>() / hop.len() as f32;
        let q = &mut self.pending[stream];
        q.push_back(energy);
        self.count[stream] += 1;
        if q.len() <= self.spec.lookahead {
            return Ok(None);
        }
        let level: f32 = q.iter().sum::<f32>() / q.len() as f32;
        q.pop_front();
        let atten = 1.0 / (1.0 + 50.0 * level);
        for (k, m) in mask.iter_mut().enumerate() {
            let g = if k >= self.cutoff_bin { atten } else { 1.0 };
            *m = Complex32::new(g, 0.0);
        }
        Ok(Some(self.count[stream] - 1 - self.spec.lookahead as u64))
    }
}
