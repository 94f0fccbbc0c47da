//! Linear parameter ramps: reach the target exactly after a fixed number of steps, so that a
//! setting such as wet = 0 is exact once the ramp ends.

/// A linear ramp towards a target.
#[derive(Debug, Clone, Copy)]
pub struct Smoother {
    /// Current value.
    current: f32,
    /// Target value.
    target: f32,
    /// Increment per step while ramping.
    step: f32,
    /// Steps left in the ramp.
    remaining: u32,
    /// Ramp length in steps.
    length: u32,
}

impl Smoother {
    /// A smoother at `value` that ramps over `length` steps.
    pub fn new(value: f32, length: u32) -> Self {
        Self {
            current: value,
            target: value,
            step: 0.0,
            remaining: 0,
            length: length.max(1),
        }
    }

    /// Starts a ramp to `target` (no-op when it is already the target).
    #[inline]
    pub fn set_target(&mut self, target: f32) {
        if target != self.target {
            self.target = target;
            self.remaining = self.length;
            self.step = (target - self.current) / self.length as f32;
        }
    }

    /// Jumps to `value` with no ramp.
    pub fn reset(&mut self, value: f32) {
        *self = Self::new(value, self.length);
    }

    /// Advances one step and returns the value.
    #[inline]
    pub fn next_value(&mut self) -> f32 {
        if self.remaining > 0 {
            self.remaining -= 1;
            self.current = if self.remaining == 0 {
                self.target
            } else {
                self.current + self.step
            };
        }
        self.current
    }

    /// Sets the target and advances one step (for per-frame parameters).
    #[inline]
    pub fn next_value_target(&mut self, target: f32) -> f32 {
        self.set_target(target);
        self.next_value()
    }

    /// True while a ramp is under way (`next_value` changes the value).
    #[inline]
    pub fn is_ramping(&self) -> bool {
        self.remaining > 0
    }

    /// Current value without advancing.
    pub fn value(&self) -> f32 {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramps_linearly_and_lands_exactly() {
        let mut s = Smoother::new(1.0, 4);
        s.set_target(0.0);
        let v: Vec<f32> = (0..6).map(|_| s.next_value()).collect();
        assert_eq!(v, vec![0.75, 0.5, 0.25, 0.0, 0.0, 0.0]);
    }
}
