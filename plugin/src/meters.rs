//! Live values for the editor, published by the audio thread without locks: levels and
//! reduction as atomics (one writer, stores only), and the applied mask as columns of
//! log-frequency bands in a wait-free SPSC ring. The editor owns the ring's consumer behind a
//! mutex the audio thread never touches; a full ring drops columns instead of waiting.

use atomic_float::AtomicF32;
use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use voxsift_engine::{stft::Grid, Engine};

/// Bands per mask column, log-spaced from [`LOW_HZ`] to the top of the spectrum.
pub const BANDS: usize = 96;
/// Lowest band edge in Hz.
pub const LOW_HZ: f64 = 40.0;
/// Columns the ring holds (about 2.5 s at 100 columns per second).
const CAPACITY: usize = 256;
/// Level meters fall by this many dB per second.
const FALL_DB_PER_S: f32 = 20.0;
/// Time constant of the reduction reading, in seconds.
const REDUCTION_TAU_S: f32 = 0.3;
/// Levels below this read as silence (dB).
pub const FLOOR_DB: f32 = -100.0;

/// Values the editor reads. Shared by the plugin and its editor.
pub struct Meters {
    /// Input peak level with fall-off, dB (written by the audio thread).
    pub input_db: AtomicF32,
    /// Output peak level with fall-off, dB (written by the audio thread).
    pub output_db: AtomicF32,
    /// Reduction being applied (output over delayed dry, before the output gain), dB ≤ 0
    /// mostly (written by the audio thread).
    pub reduction_db: AtomicF32,
    /// Mask columns per second (the STFT frame rate; 0 when inactive).
    pub columns_per_second: AtomicU32,
    /// Top frequency of the last band in Hz (half the sample rate).
    pub top_hz: AtomicF32,
    /// The consumer of mask columns (`BANDS` values each, 0..=1), replaced at each
    /// activation. Only the editor locks it.
    pub columns: Mutex<Option<HeapCons<f32>>>,
}

impl Default for Meters {
    fn default() -> Self {
        Self {
            input_db: AtomicF32::new(FLOOR_DB),
            output_db: AtomicF32::new(FLOOR_DB),
            reduction_db: AtomicF32::new(0.0),
            columns_per_second: AtomicU32::new(0),
            top_hz: AtomicF32::new(24_000.0),
            columns: Mutex::new(None),
        }
    }
}

impl Meters {
    /// Pops up to `out.len() / BANDS` mask columns into `out`, oldest first; returns how
    /// many (editor thread).
    pub fn pop_columns(&self, out: &mut [f32]) -> usize {
        let Ok(mut guard) = self.columns.lock() else {
            return 0;
        };
        let Some(cons) = guard.as_mut() else {
            return 0;
        };
        let n = (cons.occupied_len() / BANDS).min(out.len() / BANDS);
        cons.pop_slice(&mut out[..n * BANDS]) / BANDS
    }

    /// The centre frequency of band `b` in Hz for a spectrum that ends at `top_hz`.
    pub fn band_hz(b: usize, top_hz: f64) -> f64 {
        let (lo, hi) = (LOW_HZ.ln(), top_hz.max(LOW_HZ * 2.0).ln());
        ((lo + (hi - lo) * (b as f64 + 0.5) / BANDS as f64).exp()).min(top_hz)
    }
}

/// The audio thread's half: computes and publishes. Built in `activate` (allocates there).
pub struct MeterWriter {
    /// Producer of mask columns.
    producer: HeapProd<f32>,
    /// Per band: the range of engine bins averaged into it.
    bands: Vec<(usize, usize)>,
    /// Scratch column.
    column: Vec<f32>,
    /// Engine frame count at the last column sent.
    last_frame: u64,
    /// Input peak level, linear, with fall-off.
    input: f32,
    /// Output peak level, linear, with fall-off.
    output: f32,
    /// Smoothed dry energy per sample.
    e_dry: f32,
    /// Smoothed output energy per sample.
    e_out: f32,
    /// Sample rate in Hz.
    sample_rate: f32,
}

impl MeterWriter {
    /// A writer for an engine on `grid`; installs a fresh consumer in `meters`.
    pub fn new(grid: Grid, meters: &Meters) -> Self {
        let (producer, consumer) = HeapRb::<f32>::new(CAPACITY * BANDS).split();
        if let Ok(mut c) = meters.columns.lock() {
            *c = Some(consumer);
        }
        let top = grid.sample_rate as f64 / 2.0;
        let bin_of = |hz: f64| ((hz / grid.bin_hz(1)).round() as usize).min(grid.bins - 1);
        let (lo, hi) = (LOW_HZ.ln(), top.max(LOW_HZ * 2.0).ln());
        let bands = (0..BANDS)
            .map(|b| {
                let a = (lo + (hi - lo) * b as f64 / BANDS as f64).exp();
                let z = (lo + (hi - lo) * (b + 1) as f64 / BANDS as f64).exp();
                let (ka, kz) = (bin_of(a), bin_of(z));
                (ka, kz.max(ka + 1).min(grid.bins))
            })
            .collect();
        meters
            .columns_per_second
            .store(grid.sample_rate / grid.hop as u32, Ordering::Relaxed);
        meters.top_hz.store(top as f32, Ordering::Relaxed);
        Self {
            producer,
            bands,
            column: vec![0.0; BANDS],
            last_frame: 0,
            input: 0.0,
            output: 0.0,
            e_dry: 0.0,
            e_out: 0.0,
            sample_rate: grid.sample_rate as f32,
        }
    }

    /// Forgets the levels (after an engine reset).
    pub fn reset(&mut self) {
        self.last_frame = 0;
        self.input = 0.0;
        self.output = 0.0;
        self.e_dry = 0.0;
        self.e_out = 0.0;
    }

    /// Publishes one block of `n` samples: the input and output peaks of the block and the
    /// engine's state after it. Allocation- and lock-free (audio thread).
    pub fn update(&mut self, n: usize, in_peak: f32, out_peak: f32, engine: &Engine, m: &Meters) {
        if n == 0 {
            return;
        }
        let secs = n as f32 / self.sample_rate;
        let fall = 10f32.powf(-FALL_DB_PER_S * secs / 20.0);
        self.input = in_peak.max(self.input * fall);
        self.output = out_peak.max(self.output * fall);
        let (dry, out) = engine.block_energy();
        let a = 1.0 - (-secs / REDUCTION_TAU_S).exp();
        self.e_dry += a * (dry / n as f32 - self.e_dry);
        self.e_out += a * (out / n as f32 - self.e_out);
        let to_db = |x: f32| {
            if x > 1e-10 {
                (20.0 * x.log10()).max(FLOOR_DB)
            } else {
                FLOOR_DB
            }
        };
        m.input_db.store(to_db(self.input), Ordering::Relaxed);
        m.output_db.store(to_db(self.output), Ordering::Relaxed);
        let reduction = if self.e_dry > 1e-12 {
            (10.0 * (self.e_out.max(1e-20) / self.e_dry).log10()).clamp(-60.0, 12.0)
        } else {
            0.0
        };
        m.reduction_db.store(reduction, Ordering::Relaxed);
        let frame = engine.frames_synthesized();
        if frame != self.last_frame {
            self.last_frame = frame;
            let gains = engine.applied_gains();
            for (c, &(a, z)) in self.column.iter_mut().zip(&self.bands) {
                let s = &gains[a..z];
                *c = s.iter().sum::<f32>() / s.len().max(1) as f32;
            }
            if self.producer.vacant_len() >= BANDS {
                self.producer.push_slice(&self.column);
            }
        }
    }
}

/// Peak absolute value over planar channels.
pub fn peak(channels: &[&mut [f32]]) -> f32 {
    channels.iter().flat_map(|c| c.iter()).fold(0.0f32, |m, v| {
        if v.is_finite() {
            m.max(v.abs())
        } else {
            m
        }
    })
}
