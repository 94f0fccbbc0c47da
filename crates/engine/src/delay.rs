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
