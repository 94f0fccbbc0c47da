//! Whole-file rendering through the same engine and worker the plugin uses: the input is
//! followed by `latency` samples of silence and the first `latency` output samples are
//! dropped, so the result is sample-aligned with the input and of the same length.
//!
//! The model choice and the start of engine and worker live in [`voxsift_models::choice`]
//! (re-exported here); the options and results of a render in [`crate::options`].

pub use crate::options::{engine_config, RenderOptions, Rendered};
use std::time::{Duration, Instant};
use voxsift_engine::RunMode;
pub use voxsift_models::choice::*;
use voxsift_models::runtime::SessionOptions;

/// Renders `input` (planar channels at `sample_rate`); `progress(done, total)` is called
/// after each block.
pub fn render(
    input: &[Vec<f32>],
    sample_rate: u32,
    opts: &RenderOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<Rendered, RenderError> {
    let mut cache = crate::cache_session::Session::open(input, sample_rate, opts);
    let mut result = render_pass(input, sample_rate, opts, &mut cache, &mut progress);
    if result.is_err() && cache.retry_computing() {
        // A cached entry did not match what the models were fed: compute the masks.
        result = render_pass(input, sample_rate, opts, &mut cache, &mut progress);
    }
    result.map(|r| cache.annotate(r))
}

/// One pass of [`render`], with the models' masks recorded into or replayed from `cache`.
fn render_pass(
    input: &[Vec<f32>],
    sample_rate: u32,
    opts: &RenderOptions,
    cache: &mut crate::cache_session::Session,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Rendered, RenderError> {
    if input.is_empty() {
        return Err(RenderError::Invalid("no channels".into()));
    }
    if opts.blocks.is_empty() || opts.blocks.contains(&0) {
        return Err(RenderError::Invalid(
            "block sizes must be at least 1".into(),
        ));
    }
    let channels = input.len();
    let len = input.iter().map(Vec::len).min().unwrap_or(0);
    let config = engine_config(sample_rate, channels, opts);
    let session = SessionOptions {
        threads: opts.threads,
        provider: opts.provider,
    };
    opts.model.check()?;
    let mut plan = opts
        .model
        .plan(config.mask_streams(), session, opts.schedule);
    cache.wrap_plan(&opts.model, &mut plan);
    let (mut engine, mut worker) = start_plan(config, &opts.model.name(), plan)?;
    engine.set_params_immediate(opts.params);
    let latency = engine.latency_samples();
    let total = len + latency;
    let mut out = vec![Vec::with_capacity(len); channels];
    let mut buf = vec![vec![0.0f32; config.max_block]; channels];
    let start = Instant::now();
    let mut pos = 0usize;
    let mut b = 0usize;
    while pos < total {
        let n = opts.blocks[b % opts.blocks.len()].min(total - pos);
        b += 1;
        for (c, ch) in buf.iter_mut().enumerate() {
            for (i, v) in ch[..n].iter_mut().enumerate() {
                *v = input[c]
                    .get(pos + i)
                    .copied()
                    .filter(|_| pos + i < len)
                    .unwrap_or(0.0);
            }
        }
        if opts.pace && opts.run_mode == RunMode::Realtime {
            // A host calls process once a block's input has arrived.
            let due = Duration::from_secs_f64((pos + n) as f64 / sample_rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let mut refs: Vec<&mut [f32]> = buf.iter_mut().map(|c| &mut c[..n]).collect();
        engine.process(&mut refs);
        for (c, ch) in buf.iter().enumerate() {
            for (i, v) in ch[..n].iter().enumerate() {
                if pos + i >= latency {
                    out[c].push(*v);
                }
            }
        }
        pos += n;
        progress(pos.min(total), total);
    }
    let shared = worker.shared().clone();
    let failed = engine.is_failed();
    worker.stop();
    cache.finish(!failed);
    if failed {
        return Err(RenderError::Model {
            model: opts.model.name(),
            message: format!("the worker stopped delivering masks: {}", shared.message()),
        });
    }
    Ok(Rendered {
        channels: out,
        latency,
        late_masks: shared.late_masks.load(std::sync::atomic::Ordering::Relaxed),
        dropped_hops: shared
            .dropped_hops
            .load(std::sync::atomic::Ordering::Relaxed),
        provider: shared.provider(),
        notice: Some(shared.message()).filter(|m| !m.is_empty()),
        seconds: start.elapsed().as_secs_f64(),
        worker_seconds: shared.busy_ns.load(std::sync::atomic::Ordering::Relaxed) as f64 * 1e-9,
        masks: cache.source(),
    })
}
