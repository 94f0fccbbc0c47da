//! A fixed delay line for the dry path. Allocated in [`DelayLine::new`]; `tick` never allocates.

/// Delays a signal by a fixed number of samples.
pub struct DelayLine {
    /// Circular buffer, `delay` long.
    buf: Vec<f32>,
    /// Next read/write position.
    pos: usize,
}

impl DelayLine {
    /// A delay of `delay` samples, initially silent.
    pub fn new(delay: usize) -> Self {
        Self {
            buf: vec![0.0; delay],
            pos: 0,
        }
    }

    /// Pushes `x` and returns the sample from `delay` samples ago.
    #[inline]
    pub fn tick(&mut self, x: f32) -> f32 {
        if self.buf.is_empty() {
            return x;
        }
        let y = std::mem::replace(&mut self.buf[self.pos], x);
        self.pos += 1;
        if self.pos == self.buf.len() {
            self.pos = 0;
        }
        y
    }

    /// Delays a run of samples: `out[k]` is what [`DelayLine::tick`] would return for
    /// `input[k]`, copied in contiguous pieces (one per wrap of the ring) instead of sample by sample.
    /// `input` and `out` have the same length. Allocation-free (audio thread).
    #[inline]
    pub fn process(&mut self, input: &[f32], out: &mut [f32]) {
        if self.buf.is_empty() {
            out.copy_from_slice(input);
            return;
        }
        let len = self.buf.len();
        let mut done = 0;
        while done < input.len() {
            let m = (input.len() - done).min(len - self.pos);
            let span = self.pos..self.pos + m;
            out[done..done + m].copy_from_slice(&self.buf[span.clone()]);
            self.buf[span].copy_from_slice(&input[done..done + m]);
            done += m;
            self.pos += m;
            if self.pos == len {
                self.pos = 0;
            }
        }
    }

    /// Silences the line.
    pub fn reset(&mut self) {
        self.buf.fill(0.0);
        self.pos = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_equals_tick_across_wraps() {
        for d in [0, 1, 5, 17] {
            let (mut a, mut b) = (DelayLine::new(d), DelayLine::new(d));
            let input: Vec<f32> = (0..200).map(|i| (i as f32 * 0.7).sin()).collect();
            let mut at = 0;
            for run in [1, 3, 16, 40, 0, 7, 100, 33] {
                let run = run.min(input.len() - at);
                let x = &input[at..at + run];
                let want: Vec<f32> = x.iter().map(|&v| a.tick(v)).collect();
                let mut got = vec![f32::NAN; run];
                b.process(x, &mut got);
                assert_eq!(got, want, "delay {d}, run at {at}");
                at += run;
            }
        }
    }

    #[test]
    fn delays_exactly() {
        for d in [0, 1, 5] {
            let mut l = DelayLine::new(d);
            let out: Vec<f32> = (1..=10).map(|i| l.tick(i as f32)).collect();
            for (i, y) in out.iter().enumerate() {
                let want = if i >= d { (i - d + 1) as f32 } else { 0.0 };
                assert_eq!(*y, want);
            }
        }
    }
}
