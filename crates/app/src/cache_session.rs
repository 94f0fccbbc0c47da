//! The mask cache's part in one render ([`Session`]): which entry each model of the render
//! reads or writes, recording and replaying through [`crate::cache`]'s entries. Apart from the
//! cache's storage so that the storage ([`crate::cache`]) needs neither the render options nor
//! the renderer, and the renderer ([`crate::render`]) needs only this.

use crate::cache::{
    file_safe, hash_f32, header, hex, lock, model_version, prune, touch, Entry, MaskCache,
    MaskSource, RecordingModel, ReplayModel, Sink, EXTENSION, FORMAT_VERSION,
};
use crate::options::{engine_config, RenderOptions, Rendered};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use voxsift_engine::{ChannelMode, RunMode};
use voxsift_models::choice::ModelChoice;
use voxsift_models::worker::{Member, ModelFactory, Plan};
use voxsift_models::MaskModel;

/// What a session does for one model.
enum Slot {
    /// Recording into a temporary file, stored under `path` if the render succeeds.
    Record {
        /// The entry to store.
        path: PathBuf,
        /// The recording.
        sink: Arc<Mutex<Sink>>,
    },
    /// Replaying the entry at `path`.
    Replay {
        /// The entry.
        path: PathBuf,
        /// Set by the replay model on a mismatch.
        failure: Arc<Mutex<Option<String>>>,
    },
}

/// The mask cache's part in one render: built by [`crate::render::render`] from
/// [`RenderOptions::mask_cache`]. [`Session::wrap`] turns each model factory into one that
/// records the model's calls or replays them from an entry; [`Session::finish`] stores the
/// recordings of a render that succeeded.
pub struct Session {
    /// The cache, when this render uses it.
    cache: Option<MaskCache>,
    /// Key material shared by all models of the render (input and settings).
    base: [u8; 32],
    /// Model streams.
    streams: usize,
    /// The execution provider asked for.
    provider: String,
    /// Whether entries found may be replayed (not after a mismatch).
    replay: bool,
    /// One per wrapped model of the current pass.
    slots: Vec<Slot>,
    /// The mismatch that stopped the last pass, if any.
    replay_failure: Option<String>,
    /// Where the masks of the last finished pass came from.
    source: MaskSource,
    /// Things the user should know (unusable entries, entries that could not be stored).
    notes: Vec<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("cache", &self.cache)
            .field("key", &hex(&self.base))
            .field("streams", &self.streams)
            .field("slots", &self.slots.len())
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session for rendering `input` at `sample_rate` with `opts`: inactive (every factory
    /// left as it is) unless `opts.mask_cache` is set and the render is offline.
    pub fn open(input: &[Vec<f32>], sample_rate: u32, opts: &RenderOptions) -> Self {
        let config = engine_config(sample_rate, input.len(), opts);
        let streams = config.mask_streams();
        let cache = opts
            .mask_cache
            .clone()
            .filter(|_| opts.run_mode == RunMode::Offline && !input.is_empty());
        let mut base = [0u8; 32];
        if cache.is_some() {
            let len = input.iter().map(Vec::len).min().unwrap_or(0);
            let mut h = Sha256::new();
            h.update(b"voxsift mask cache");
            h.update(FORMAT_VERSION.to_le_bytes());
            h.update(env!("CARGO_PKG_VERSION").as_bytes());
            h.update([0]);
            h.update(sample_rate.to_le_bytes());
            h.update((input.len() as u64).to_le_bytes());
            h.update((streams as u64).to_le_bytes());
            h.update([match opts.channel_mode {
                ChannelMode::Linked => 0,
                ChannelMode::Independent => 1,
            }]);
            h.update((opts.threads.max(1) as u64).to_le_bytes());
            h.update(opts.provider.name().as_bytes());
            h.update([0]);
            // Separators' window schedule changes what they compute.
            h.update(format!("{:?}", opts.schedule).as_bytes());
            h.update((len as u64).to_le_bytes());
            for ch in input {
                hash_f32(&mut h, &ch[..len]);
            }
            base = h.finalize().into();
        }
        Self {
            cache,
            base,
            streams,
            provider: opts.provider.name().to_string(),
            replay: true,
            slots: Vec::new(),
            replay_failure: None,
            source: MaskSource::Computed,
            notes: Vec::new(),
        }
    }

    /// Whether this render uses the cache.
    pub fn is_active(&self) -> bool {
        self.cache.is_some()
    }

    /// The entry of `model` in this session's cache (whether or not it exists), or `None` when
    /// the session is inactive or the model's version cannot be read.
    pub fn entry_path(&self, model: &ModelChoice) -> Option<PathBuf> {
        let cache = self.cache.as_ref()?;
        let version = model_version(model).ok()?;
        Some(cache.dir.join(self.entry_name(model, &version)))
    }

    /// The key of `model` with this session's input and settings.
    fn key(&self, model: &ModelChoice, version: &[u8; 32]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.base);
        h.update(model.name().as_bytes());
        h.update([0]);
        h.update(version);
        h.finalize().into()
    }

    /// File name of the entry of `model`.
    fn entry_name(&self, model: &ModelChoice, version: &[u8; 32]) -> String {
        format!(
            "{}-{}.{EXTENSION}",
            file_safe(&model.name()),
            hex(&self.key(model, version))
        )
    }

    /// Wraps the factory of `model`: when its entry exists and verifies, the new factory never
    /// calls `factory` and builds a model that replays the entry (no ONNX Runtime, no
    /// inference); otherwise it builds the real model and records its calls. An inactive
    /// session returns `factory` as it is.
    pub fn wrap(&mut self, model: &ModelChoice, factory: ModelFactory) -> ModelFactory {
        let Some(cache) = self.cache.as_ref() else {
            return factory;
        };
        // A model whose files cannot be read fails to load with a clear error of its own.
        let Ok(version) = model_version(model) else {
            return factory;
        };
        let name = model.name();
        let key = self.key(model, &version);
        let path = cache.dir.join(self.entry_name(model, &version));
        if self.replay && path.exists() {
            match Entry::open(&path, &key, &name, self.streams) {
                Ok(entry) if entry.provider == self.provider => {
                    let failure = Arc::new(Mutex::new(None));
                    self.slots.push(Slot::Replay {
                        path,
                        failure: failure.clone(),
                    });
                    drop(factory);
                    return Box::new(move || {
                        ReplayModel::open(&entry, failure)
                            .map(|m| Box::new(m) as Box<dyn MaskModel>)
                    });
                }
                // Recorded elsewhere; a new recording will replace it.
                Ok(_) => {}
                Err(e) => {
                    self.notes
                        .push(format!("mask cache entry unusable ({e}); masks computed"));
                    let _ = fs::remove_file(&path);
                }
            }
        }
        let sink = match Sink::create(&path, &header(&key, &name, self.streams)) {
            Ok(s) => Arc::new(Mutex::new(s)),
            Err(e) => {
                self.notes.push(format!("mask cache not written: {e}"));
                return factory;
            }
        };
        self.slots.push(Slot::Record {
            path,
            sink: sink.clone(),
        });
        Box::new(move || {
            let inner = factory()?;
            {
                let mut s = lock(&sink);
                s.spec = Some(inner.spec());
                s.provider = Some(inner.provider());
                s.notice = inner.notice();
            }
            Ok(Box::new(RecordingModel { inner, sink }) as Box<dyn MaskModel>)
        })
    }

    /// [`Session::wrap`] applied to every member of `plan`, the worker plan of `model`
    /// ([`ModelChoice::plan`]): each member model has an entry of its own.
    pub fn wrap_plan(&mut self, model: &ModelChoice, plan: &mut Plan) {
        let (models, _) = model.members();
        if !self.is_active() || models.len() != plan.members.len() {
            return;
        }
        let members = std::mem::take(&mut plan.members);
        plan.members = members
            .into_iter()
            .zip(&models)
            .map(|(m, (choice, _))| Member {
                factory: self.wrap(choice, m.factory),
                ..m
            })
            .collect();
    }

    /// Ends a render pass (after its worker has stopped): when `ok`, stores the recordings
    /// and marks replayed entries as used; otherwise discards the recordings and removes
    /// entries that did not match. Idempotent; dropping the session finishes it as failed.
    pub fn finish(&mut self, ok: bool) {
        let mut all_replayed = !self.slots.is_empty();
        let mut stored = false;
        for slot in std::mem::take(&mut self.slots) {
            match slot {
                Slot::Record { path, sink } => {
                    all_replayed = false;
                    let sink = match Arc::try_unwrap(sink) {
                        Ok(m) => m.into_inner().unwrap_or_else(|e| e.into_inner()),
                        Err(shared) => {
                            // The model is still alive somewhere: never store a recording
                            // that may still grow.
                            let temp = lock(&shared).temp.clone();
                            let _ = fs::remove_file(temp);
                            continue;
                        }
                    };
                    let complete = ok && sink.provider.is_some();
                    if !complete || sink.provider.as_deref() != Some(self.provider.as_str()) {
                        // Failed, never loaded, or ran on a fallback provider.
                        let _ = fs::remove_file(&sink.temp);
                        continue;
                    }
                    match sink.store(&path) {
                        Ok(()) => stored = true,
                        Err(e) => self.notes.push(format!("mask cache not written: {e}")),
                    }
                }
                Slot::Replay { path, failure } => {
                    if let Some(why) = lock(&failure).take() {
                        let _ = fs::remove_file(&path);
                        self.replay_failure = Some(why);
                        all_replayed = false;
                    } else if ok {
                        touch(&path);
                    } else {
                        all_replayed = false;
                    }
                }
            }
        }
        self.source = if ok && all_replayed {
            MaskSource::Cached
        } else {
            MaskSource::Computed
        };
        if stored {
            if let Some(c) = &self.cache {
                prune(&c.dir, c.max_bytes);
            }
        }
    }

    /// After a failed pass: if it failed because a replayed entry did not match what the
    /// model was fed, returns true and makes the next pass compute (and record) its masks.
    pub fn retry_computing(&mut self) -> bool {
        self.finish(false);
        match self.replay_failure.take() {
            Some(why) => {
                self.replay = false;
                self.notes.push(format!(
                    "{why}; the entry was removed and the masks computed"
                ));
                true
            }
            None => false,
        }
    }

    /// Where the masks of the last finished pass came from.
    pub fn source(&self) -> MaskSource {
        self.source
    }

    /// What the user should know about the cache in this render, if anything.
    pub fn notice(&self) -> Option<String> {
        (!self.notes.is_empty()).then(|| self.notes.join("; "))
    }

    /// `r` with the mask source of the last pass and the cache's notice added to its own.
    pub fn annotate(&self, mut r: Rendered) -> Rendered {
        r.masks = self.source;
        if let Some(n) = self.notice() {
            r.notice = Some(match r.notice.take() {
                Some(own) => format!("{own}; {n}"),
                None => n,
            });
        }
        r
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.slots.is_empty() {
            self.finish(false);
        }
    }
}
