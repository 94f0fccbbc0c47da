//! Windowed short-context scheduling of a whole-segment model, independent of ONNX Runtime.
//!
//! The model sees windows of `W` samples advanced by a step `S`. Of run `k`'s output only the
//! part for input samples `[kS, (k+1)S + X)` is used: the `X` samples at each end are a
//! raised-cosine crossfade with the neighbouring run, and `L` samples of future context
//! (lookahead) follow the used part, so run `k`'s window is
//!
//! ```text
//!   [ (k+1)S + X + L - W ,  (k+1)S + X + L )
//!     |-- past context --|-fade in-|--- S - X ---|-fade out-|-- lookahead L --|
//!                        kS       kS+X        (k+1)S   (k+1)S+X
//! ```
//!
//! Samples before the stream start are zeros. Output samples `[kS, (k+1)S)` are final once
//! run `k` is done, which needs input up to `(k+1)S + X + L`: the scheduler's latency is at
//! most `S + X + L` samples (see [`Schedule::latency`]). The first run has no fade-in (there is
//! nothing to fade from).
//!
//! A scheduler made by [`Scheduler::with_reference`] also carries a second signal aligned
//! sample for sample with the input (a refiner's reference: DeepFilterNet3's estimate of the
//! same samples): its windows start and end where the input's do, with the same zeros before
//! the stream, and the model gets both ([`WindowModel::run_with_reference`]).
//!
//! Memory: every buffer is allocated in [`Scheduler::new`] / [`Scheduler::with_reference`];
//! `push` does not allocate.

use crate::ModelError;
use std::f64::consts::FRAC_PI_2;

/// A model run on one window: mono samples in, the speech estimate out (same length).
pub trait WindowModel: Send {
    /// Runs on `input` and writes the estimate into `output` (`input.len()` samples).
    fn run(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), ModelError>;

    /// Runs on `input` and a second signal `reference` aligned with it sample for sample
    /// (same length) and writes the estimate into `output`. The default ignores `reference`.
    fn run_with_reference(
        &mut self,
        input: &[f32],
        reference: &[f32],
        output: &mut [f32],
    ) -> Result<(), ModelError> {
        let _ = reference;
        self.run(input, output)
    }
}

impl<F> WindowModel for F
where
    F: FnMut(&[f32], &mut [f32]) -> Result<(), ModelError> + Send,
{
    fn run(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), ModelError> {
        self(input, output)
    }
}

/// A schedule in samples at the model rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Samples per run, `W`.
    pub window: usize,
    /// Advance per run, `S`.
    pub step: usize,
    /// Future context after the used part, `L`.
    pub lookahead: usize,
    /// Crossfade between consecutive used parts, `X` (at most `S`).
    pub crossfade: usize,
}

impl Schedule {
    /// Checks `S >= 1`, `X <= S` and `W >= S + X + L`; `max_window` (when not 0) caps `W`.
    pub fn validate(&self, max_window: usize) -> Result<(), String> {
        if self.step == 0 {
            return Err("the step must be at least one sample".into());
        }
        if self.crossfade > self.step {
            return Err(format!(
                "the crossfade ({}) is longer than the step ({})",
                self.crossfade, self.step
            ));
        }
        let Some(used) = self
            .step
            .checked_add(self.crossfade)
            .and_then(|v| v.checked_add(self.lookahead))
        else {
            return Err("step + crossfade + lookahead overflows".into());
        };
        if self.window < used {
            return Err(format!(
                "the window ({}) is shorter than step + crossfade + lookahead ({used})",
                self.window
            ));
        }
        if max_window != 0 && self.window > max_window {
            return Err(format!(
                "the window ({}) is longer than the graph's window ({max_window})",
                self.window
            ));
        }
        Ok(())
    }

    /// Past context of each run: `W - S - X - L` samples.
    pub fn context(&self) -> usize {
        self.window - self.step - self.crossfade - self.lookahead
    }

    /// The most input samples that can arrive after a sample before its output is final:
    /// `S + X + L`.
    pub fn latency(&self) -> usize {
        self.step + self.crossfade + self.lookahead
    }
}

/// Weight of run `k`'s output at offset `i` of a crossfade of `x` samples, rising.
fn fade_in(i: usize, x: usize) -> f32 {
    let s = (FRAC_PI_2 * (i as f64 + 0.5) / x as f64).sin();
    (s * s) as f32
}

/// Runs a [`WindowModel`] on a stream with a [`Schedule`] and emits the final output in
/// chunks of `S` samples, together with the input they belong to.
pub struct Scheduler {
    /// The schedule.
    schedule: Schedule,
    /// Input of the next run so far: samples `[kS - context, ...)`, at most `W`.
    input: Vec<f32>,
    /// The reference of the same samples as `input` (only with [`Scheduler::with_reference`]).
    reference: Option<Vec<f32>>,
    /// The model's output of the last run (`W`).
    output: Vec<f32>,
    /// Final output being assembled (`S`).
    chunk: Vec<f32>,
    /// The previous run's fade-out part, already weighted (`X`).
    tail: Vec<f32>,
    /// Rising crossfade weights (`X`); the falling ones are `1 - w`.
    fade: Vec<f32>,
    /// Runs since reset.
    runs: u64,
}

impl Scheduler {
    /// A scheduler for a valid `schedule` (see [`Schedule::validate`]); allocates its
    /// buffers.
    pub fn new(schedule: Schedule) -> Self {
        Self::build(schedule, false)
    }

    /// A scheduler that also carries a reference signal aligned with the input (fed with
    /// [`Scheduler::push_with_reference`]); allocates its buffers.
    pub fn with_reference(schedule: Schedule) -> Self {
        Self::build(schedule, true)
    }

    /// [`Self::new`] with or without a reference buffer.
    fn build(schedule: Schedule, reference: bool) -> Self {
        let mut s = Self {
            schedule,
            input: Vec::with_capacity(schedule.window),
            reference: reference.then(|| Vec::with_capacity(schedule.window)),
            output: vec![0.0; schedule.window],
            chunk: vec![0.0; schedule.step],
            tail: vec![0.0; schedule.crossfade],
            fade: (0..schedule.crossfade)
                .map(|i| fade_in(i, schedule.crossfade))
                .collect(),
            runs: 0,
        };
        s.reset();
        s
    }

    /// The schedule.
    pub fn schedule(&self) -> Schedule {
        self.schedule
    }

    /// Runs done since reset.
    pub fn runs(&self) -> u64 {
        self.runs
    }

    /// Whether it carries a reference signal ([`Scheduler::with_reference`]).
    pub fn has_reference(&self) -> bool {
        self.reference.is_some()
    }

    /// Starts a new stream: zeros before its first sample (of the reference too).
    pub fn reset(&mut self) {
        self.input.clear();
        self.input.resize(self.schedule.context(), 0.0);
        if let Some(r) = self.reference.as_mut() {
            r.clear();
            r.resize(self.schedule.context(), 0.0);
        }
        self.tail.fill(0.0);
        self.runs = 0;
    }

    /// Takes `samples` of input; runs the model for every window that is complete and calls
    /// `emit(input, output)` with each final chunk of `S` samples (in order, from the first
    /// sample of the stream).
    pub fn push(
        &mut self,
        samples: &[f32],
        model: &mut dyn WindowModel,
        mut emit: impl FnMut(&[f32], &[f32]),
    ) -> Result<(), ModelError> {
        if self.reference.is_some() {
            return Err(ModelError::Mismatch {
                graph: "scheduler".into(),
                message: "this stream carries a reference: push it with push_with_reference".into(),
            });
        }
        self.push_inner(samples, None, model, |x, _, y| emit(x, y))
    }

    /// [`Self::push`] for a scheduler made by [`Self::with_reference`]: `reference` holds the
    /// reference of the same samples as `samples` (same length). The model gets the windows of
    /// both ([`WindowModel::run_with_reference`]), and `emit(input, reference, output)` each
    /// final chunk with the input and reference it belongs to.
    pub fn push_with_reference(
        &mut self,
        samples: &[f32],
        reference: &[f32],
        model: &mut dyn WindowModel,
        emit: impl FnMut(&[f32], &[f32], &[f32]),
    ) -> Result<(), ModelError> {
        if self.reference.is_none() || reference.len() != samples.len() {
            return Err(ModelError::Mismatch {
                graph: "scheduler".into(),
                message: format!(
                    "push_with_reference: {} samples with {} of reference on a scheduler {} a \
                     reference",
                    samples.len(),
                    reference.len(),
                    if self.reference.is_some() {
                        "with"
                    } else {
                        "without"
                    }
                ),
            });
        }
        self.push_inner(samples, Some(reference), model, emit)
    }

    /// The body of [`Self::push`] and [`Self::push_with_reference`] (`reference` is `Some`
    /// exactly when `self.reference` is, with the length of `samples`).
    fn push_inner(
        &mut self,
        mut samples: &[f32],
        mut reference: Option<&[f32]>,
        model: &mut dyn WindowModel,
        mut emit: impl FnMut(&[f32], &[f32], &[f32]),
    ) -> Result<(), ModelError> {
        let sch = self.schedule;
        while !samples.is_empty() {
            let take = (sch.window - self.input.len()).min(samples.len());
            self.input.extend_from_slice(&samples[..take]);
            samples = &samples[take..];
            if let (Some(buf), Some(r)) = (self.reference.as_mut(), reference) {
                buf.extend_from_slice(&r[..take]);
                reference = Some(&r[take..]);
            }
            if self.input.len() < sch.window {
                break;
            }
            match self.reference.as_deref() {
                Some(r) => model.run_with_reference(&self.input, r, &mut self.output)?,
                None => model.run(&self.input, &mut self.output)?,
            }
            let used = &self.output[sch.context()..];
            let first = self.runs == 0;
            for (i, (c, &y)) in self.chunk.iter_mut().zip(used).enumerate() {
                *c = if i < sch.crossfade {
                    let w = if first { 1.0 } else { self.fade[i] };
                    y * w + self.tail[i]
                } else {
                    y
                };
            }
            for ((t, &y), &w) in self.tail.iter_mut().zip(&used[sch.step..]).zip(&self.fade) {
                *t = y * (1.0 - w);
            }
            let start = sch.context();
            let used_reference = self
                .reference
                .as_deref()
                .map_or(&[][..], |r| &r[start..start + sch.step]);
            emit(
                &self.input[start..start + sch.step],
                used_reference,
                &self.chunk,
            );
            self.input.drain(..sch.step);
            if let Some(r) = self.reference.as_mut() {
                r.drain(..sch.step);
            }
            self.runs += 1;
        }
        Ok(())
    }

    /// The whole of `x` through the schedule, as a stream would see it (zeros after its end
    /// to flush the last windows); returns the output, `x.len()` samples.
    pub fn run_offline(
        schedule: Schedule,
        model: &mut dyn WindowModel,
        x: &[f32],
    ) -> Result<Vec<f32>, ModelError> {
        let mut s = Self::new(schedule);
        let mut out = Vec::with_capacity(x.len() + schedule.latency() + schedule.step);
        let flush = vec![0.0; schedule.latency() + schedule.step];
        for part in [x, &flush] {
            s.push(part, model, |_, y| out.extend_from_slice(y))?;
        }
        out.truncate(x.len());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(window: usize, step: usize, lookahead: usize, crossfade: usize) -> Schedule {
        let s = Schedule {
            window,
            step,
            lookahead,
            crossfade,
        };
        s.validate(0).expect("valid schedule");
        s
    }

    fn ramp(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect()
    }

    #[test]
    fn invalid_schedules_are_refused() {
        let bad = |w, s, l, x, max| {
            Schedule {
                window: w,
                step: s,
                lookahead: l,
                crossfade: x,
            }
            .validate(max)
            .is_err()
        };
        assert!(bad(100, 0, 0, 0, 0));
        assert!(bad(100, 10, 0, 20, 0));
        assert!(bad(100, 50, 40, 20, 0));
        assert!(bad(100, 10, 10, 10, 90));
        assert!(!bad(100, 50, 30, 20, 100));
    }

    #[test]
    fn an_identity_model_is_reproduced_exactly_through_the_crossfades() {
        let x = ramp(1000);
        let mut id = |i: &[f32], o: &mut [f32]| {
            o.copy_from_slice(i);
            Ok(())
        };
        for s in [
            sched(100, 30, 20, 10),
            sched(64, 16, 0, 16),
            sched(50, 50, 0, 0),
        ] {
            let y = Scheduler::run_offline(s, &mut id, &x).expect("runs");
            assert_eq!(y.len(), x.len());
            for (n, (a, b)) in x.iter().zip(&y).enumerate() {
                assert!((a - b).abs() < 1e-6, "{s:?} n={n}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn windows_sit_where_the_schedule_says_and_crossfade_the_used_parts() {
        // The model writes the window's own run number + position: the output tells which
        // run and which offset each output sample came from.
        let s = sched(40, 10, 5, 4);
        let mut run = 0.0f32;
        let mut starts = Vec::new();
        let mut model = |i: &[f32], o: &mut [f32]| {
            // Input is the absolute sample index + 1 (0 = before the stream).
            starts.push(i[0]);
            for (k, v) in o.iter_mut().enumerate() {
                *v = 1000.0 * run + k as f32;
            }
            run += 1.0;
            Ok(())
        };
        let x: Vec<f32> = (1..=200).map(|v| v as f32).collect();
        let y = Scheduler::run_offline(s, &mut model, &x).expect("runs");
        // Run k's window starts at (k+1)S + X + L - W = 10k - 21 (zeros before 0).
        for (k, &st) in starts.iter().enumerate() {
            let abs = 10 * k as i64 - 21;
            let want = if abs < 0 { 0.0 } else { (abs + 1) as f32 };
            assert_eq!(st, want, "run {k}");
        }
        // Sample n in [kS + X, (k+1)S) comes only from run k at offset context + n - kS.
        let ctx = s.context() as f32;
        for (n, &got) in y.iter().enumerate().take(190) {
            let (k, i) = (n / 10, n % 10);
            let own = 1000.0 * k as f32 + ctx + i as f32;
            if i >= s.crossfade || k == 0 {
                assert_eq!(got, own, "n={n}");
            } else {
                let w = fade_in(i, s.crossfade);
                let prev = 1000.0 * (k - 1) as f32 + ctx + (10 + i) as f32;
                let want = own * w + prev * (1.0 - w);
                assert!((got - want).abs() < 1e-2, "n={n}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn output_is_final_after_step_crossfade_and_lookahead() {
        let s = sched(60, 10, 7, 3);
        let mut id = |i: &[f32], o: &mut [f32]| {
            o.copy_from_slice(i);
            Ok(())
        };
        let mut sc = Scheduler::new(s);
        let mut emitted = 0usize;
        for n in 1..=300usize {
            sc.push(&[0.5], &mut id, |x, y| {
                assert_eq!((x.len(), y.len()), (10, 10));
                emitted += 10;
            })
            .expect("runs");
            // After n samples, chunks up to (k+1)S are out once n >= (k+1)S + X + L.
            let want = (n.saturating_sub(s.crossfade + s.lookahead) / s.step) * s.step;
            assert_eq!(emitted, want, "n={n}");
            // No sample waits longer than the latency.
            assert!(n - emitted <= s.latency());
        }
    }

    /// Records the first sample of every window of input and reference, and outputs the
    /// reference (an identity on it).
    struct SeesReference {
        starts: Vec<(f32, f32)>,
    }

    impl WindowModel for SeesReference {
        fn run(&mut self, _: &[f32], _: &mut [f32]) -> Result<(), ModelError> {
            panic!("a scheduler with a reference must call run_with_reference");
        }

        fn run_with_reference(
            &mut self,
            input: &[f32],
            reference: &[f32],
            output: &mut [f32],
        ) -> Result<(), ModelError> {
            assert_eq!(input.len(), reference.len());
            // Every window holds the reference of its own samples: reference = -input.
            for (i, (x, r)) in input.iter().zip(reference).enumerate() {
                assert_eq!(*r, -*x, "window {} offset {i}", self.starts.len());
            }
            self.starts.push((input[0], reference[0]));
            output.copy_from_slice(reference);
            Ok(())
        }
    }

    #[test]
    fn windows_see_the_reference_aligned_with_the_input() {
        let s = sched(40, 10, 5, 4);
        let x: Vec<f32> = (1..=300).map(|v| v as f32).collect();
        let r: Vec<f32> = x.iter().map(|v| -v).collect();
        let mut model = SeesReference { starts: Vec::new() };
        let mut sc = Scheduler::with_reference(s);
        assert!(sc.has_reference());
        let mut out = Vec::new();
        // Uneven chunks, so windows fill across pushes.
        let mut at = 0;
        for (k, n) in [1usize, 7, 13, 50, 3, 99, 127].iter().cycle().enumerate() {
            if at >= x.len() {
                break;
            }
            let end = (at + n + k % 2).min(x.len());
            sc.push_with_reference(&x[at..end], &r[at..end], &mut model, |i, rf, y| {
                assert_eq!((i.len(), rf.len(), y.len()), (10, 10, 10));
                for (a, b) in i.iter().zip(rf) {
                    assert_eq!(*b, -*a);
                }
                out.extend_from_slice(y);
            })
            .expect("runs");
            at = end;
        }
        // Run k's window starts at 10k - 21 in both signals (zeros before the stream).
        for (k, &(a, b)) in model.starts.iter().enumerate() {
            let abs = 10 * k as i64 - 21;
            let want = if abs < 0 { 0.0 } else { (abs + 1) as f32 };
            assert_eq!((a, b), (want, -want), "run {k}");
        }
        // An identity on the reference is reproduced through the crossfades.
        for (n, (y, want)) in out.iter().zip(&r).enumerate() {
            assert!((y - want).abs() < 1e-3, "n={n}: {y} vs {want}");
        }
        assert!(out.len() >= 250);
        // After a reset the reference starts with zeros again.
        sc.reset();
        model.starts.clear();
        sc.push_with_reference(&x[..60], &r[..60], &mut model, |_, _, _| {})
            .expect("runs");
        assert_eq!(model.starts.first(), Some(&(0.0, -0.0)));
        // Mismatched calls are errors, not panics.
        assert!(sc
            .push_with_reference(&x[..5], &r[..4], &mut model, |_, _, _| {})
            .is_err());
        assert!(sc.push(&x[..5], &mut model, |_, _| {}).is_err());
        let mut plain = Scheduler::new(s);
        assert!(plain
            .push_with_reference(&x[..5], &r[..5], &mut model, |_, _, _| {})
            .is_err());
    }

    #[test]
    fn errors_from_the_model_are_passed_on() {
        let mut failing = |_: &[f32], _: &mut [f32]| {
            Err(ModelError::Inference {
                graph: "fake".into(),
                message: "boom".into(),
            })
        };
        let e = Scheduler::run_offline(sched(20, 10, 0, 0), &mut failing, &[0.0; 50]);
        assert!(matches!(e, Err(ModelError::Inference { .. })));
    }
}
