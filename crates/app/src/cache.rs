//! The mask cache of offline renders: the masks a model computed for an input are kept on
//! disk, so that rendering the same input again with other mix settings (wet, beta, floor,
//! output gain, post chain, block size) replays them instead of running the model.
//!
//! - **What is stored**: every call the worker made to the model, in order — each reset, and
//!   each hop with the stream it belongs to, a hash of the samples the model was given and the
//!   mask frame it returned, if any. Masks are the model's own frames, before they are mapped
//!   onto the host's grid.
//! - **Key**: a SHA-256 of the decoded input samples, the model and its version (a hash of its
//!   graph bytes, and the Voxsift version, which covers the code around the graphs), and the
//!   settings that change what the model sees or computes: the host sample rate, the channel
//!   count, the channel mode, the intra-op thread count, the execution provider and a
//!   separator's window schedule. A changed input, model or setting gives another key, so a
//!   stale entry is never read. Each model of a fused set has an entry of its own.
//! - **Replay**: offline rendering is deterministic, so the model is called the same way for
//!   the same key. The replayed model checks each call against the recording (same kind, same
//!   stream, same hash of the hop samples). On any difference the render stops, the entry is
//!   removed and the file is rendered again with the real model; [`Session::annotate`] says so
//!   in the render's notice. Hops past the end of the recording (the recording run stopped its
//!   worker before it took them, or a larger block size adds latency) return no mask: their
//!   frames lie after the end of the output, which the recording covered in full.
//! - **Integrity**: an entry is written to a temporary name and renamed into place once
//!   complete. Its last bytes are a SHA-256 of everything before them, checked before an entry
//!   is used: a truncated or corrupt entry is removed and the masks are computed again (with a
//!   notice).
//! - **Size**: about 23 MB per minute of audio and computed model stream for DFN3 (100 frames
//!   of 481 complex gains a second): a linked render has one stream whatever the channel
//!   count, an independent one has one per channel. [`MaskCache::max_bytes`] bounds the
//!   folder; after each store the least recently used entries go first.
//! - **Providers**: an entry is only stored when the model ran on the execution provider asked
//!   for, so a CPU fallback never stands in for a GPU render.
//! - Realtime renders never use the cache.
//!
//! The file format (little-endian): a header (magic `VXSMASK\0`, [`FORMAT_VERSION`] (u32), the
//! 32-byte key, the stream count (u32) and the model's name), then one record per event (a
//! kind byte; for hops the stream (u32) and the first 8 bytes of the SHA-256 of the hop's
//! samples; for hops with a mask the frame index (u64) and the mask as `bins` pairs of f32),
//! an end byte, the metadata (the loaded model's name, rate, hop, bins and lookahead, the
//! execution provider it ran on, its notice, the event count), and a tail: the offset of the
//! end byte (u64), the SHA-256 of every byte before the tail's digest, and the magic
//! `VXSMEND\0`.

use num_complex::Complex32;
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};
use voxsift_models::choice::ModelChoice;
use voxsift_models::dfn3;
use voxsift_models::{MaskModel, ModelError, ModelSpec};

/// Version of the file format; entries of another version are not read.
pub const FORMAT_VERSION: u32 = 1;

/// Extension of cache entries.
pub const EXTENSION: &str = "masks";

/// Default bound on the size of the cache folder: 4 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 4 << 30;

/// Magic at the start of an entry.
const MAGIC: [u8; 8] = *b"VXSMASK\0";
/// Magic at the end of an entry.
const END_MAGIC: [u8; 8] = *b"VXSMEND\0";
/// Bytes after the end byte's offset: the offset, the digest and the end magic.
const TAIL: u64 = 8 + 32 + 8;
/// Event kinds.
const EV_END: u8 = 0;
/// A reset of the model.
const EV_RESET: u8 = 1;
/// A hop that produced no mask.
const EV_HOP: u8 = 2;
/// A hop that produced a mask.
const EV_HOP_MASK: u8 = 3;
/// Temporary files older than this are left by a process that died; pruning removes them.
const STALE_TEMP: Duration = Duration::from_secs(24 * 3600);

/// Errors of the mask cache. A render never fails because of them: it computes its masks and
/// says why in its notice.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The cache folder or an entry could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An entry is truncated, corrupt, or of another format version.
    #[error("{}: {reason}", path.display())]
    Corrupt {
        /// The entry.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Where and how big the mask cache is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskCache {
    /// The folder holding the entries (created when the first one is stored).
    pub dir: PathBuf,
    /// Most bytes the entries may take; after each store the least recently used entries are
    /// removed until they fit (the newest one is always kept).
    pub max_bytes: u64,
}

impl MaskCache {
    /// A cache in `dir` with the [default size bound](DEFAULT_MAX_BYTES).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }

    /// The per-user cache folder: `$XDG_CACHE_HOME/voxsift/masks`, else
    /// `~/.cache/voxsift/masks` (`~/Library/Caches/voxsift/masks` on macOS,
    /// `%LOCALAPPDATA%\voxsift\masks` on Windows). `None` when no home folder is known.
    pub fn default_dir() -> Option<PathBuf> {
        let env_dir = |k: &str| {
            std::env::var_os(k)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        let base = if cfg!(windows) {
            env_dir("LOCALAPPDATA")
        } else if let Some(xdg) = env_dir("XDG_CACHE_HOME") {
            Some(xdg)
        } else if cfg!(target_os = "macos") {
            env_dir("HOME").map(|h| h.join("Library").join("Caches"))
        } else {
            env_dir("HOME").map(|h| h.join(".cache"))
        };
        base.map(|b| b.join("voxsift").join("masks"))
    }

    /// A cache in [`MaskCache::default_dir`], if there is one.
    pub fn at_default_dir() -> Option<Self> {
        Self::default_dir().map(Self::new)
    }
}

/// Where the masks of a render came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskSource {
    /// The model ran.
    Computed,
    /// Every model's masks were replayed from the cache; no model was loaded.
    Cached,
}

impl std::fmt::Display for MaskSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Computed => "computed",
            Self::Cached => "cached",
        })
    }
}

/// Bytes of cache per minute of audio for `streams` computed streams of a model with `spec`
/// (a linked render computes one stream, an independent one a stream per channel).
pub fn bytes_per_minute(spec: &ModelSpec, streams: usize) -> u64 {
    let hops = 60 * spec.sample_rate as u64 / spec.hop.max(1) as u64;
    hops * streams as u64 * (HOP_RECORD + 8 + 8 * spec.bins as u64)
}

/// Bytes of a hop record without its mask: kind, stream, hash.
const HOP_RECORD: u64 = 1 + 4 + 8;

/// A hash of the model and its version: the graph bytes for DFN3 (embedded or read from the
/// folder), every file of a separator's folder, the settings of the synthetic model. The
/// Voxsift version is part of every key besides, for the code that runs around the graphs.
pub fn model_version(model: &ModelChoice) -> Result<[u8; 32], ModelError> {
    static EMBEDDED: OnceLock<[u8; 32]> = OnceLock::new();
    let graphs = |g: &[&[u8]]| {
        let mut h = Sha256::new();
        h.update(b"dfn3 stateful graphs");
        h.update(dfn3::STREAM_HANDLING.as_bytes());
        for bytes in g {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        }
        h.finalize().into()
    };
    let mut h = Sha256::new();
    match model {
        ModelChoice::Dfn3 => {
            return Ok(*EMBEDDED.get_or_init(|| {
                let g = dfn3::EMBEDDED;
                graphs(&[g.enc, g.erb_dec, g.df_dec])
            }))
        }
        ModelChoice::Dfn3Batched(frames) => {
            let g = dfn3::EMBEDDED;
            h.update(graphs(&[g.enc, g.erb_dec, g.df_dec]));
            h.update(b"frames per call");
            h.update((*frames as u64).to_le_bytes());
        }
        ModelChoice::Dfn3Dir(dir) => {
            let [enc, erb_dec, df_dec] = dfn3::read_graphs(dir)?;
            return Ok(graphs(&[&enc, &erb_dec, &df_dec]));
        }
        ModelChoice::Synthetic(lookahead) => {
            h.update(b"synthetic");
            h.update((*lookahead as u64).to_le_bytes());
        }
        ModelChoice::SyntheticWith(s) => {
            h.update(b"synthetic with");
            h.update(format!("{s:?}").as_bytes());
        }
        ModelChoice::Separator(dir) => {
            h.update(b"separator");
            hash_dir(&mut h, dir, Path::new(""))?;
        }
        ModelChoice::Fused { members, rule } => {
            h.update(format!("fused {rule:?}").as_bytes());
            for (m, w) in members {
                h.update(model_version(m)?);
                h.update(w.to_le_bytes());
            }
        }
    }
    Ok(h.finalize().into())
}

/// Feeds every file under `dir` to `h`: relative path, length and bytes, in name order.
fn hash_dir(h: &mut Sha256, dir: &Path, rel: &Path) -> Result<(), ModelError> {
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ModelError::Read { path, source }
    };
    let here = dir.join(rel);
    let mut entries = fs::read_dir(&here)
        .map_err(read_err(&here))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err(&here))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let rel = rel.join(e.file_name());
        let path = dir.join(&rel);
        let meta = fs::metadata(&path).map_err(read_err(&path))?;
        if meta.is_dir() {
            hash_dir(h, dir, &rel)?;
        } else if meta.is_file() {
            h.update(rel.to_string_lossy().as_bytes());
            h.update([0]);
            h.update(meta.len().to_le_bytes());
            let mut f = File::open(&path).map_err(read_err(&path))?;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = f.read(&mut buf).map_err(read_err(&path))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
    }
    Ok(())
}

/// A `'static` copy of a model name read from an entry (each distinct name is kept once).
fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<Vec<&'static str>>> = OnceLock::new();
    let mut names = lock(NAMES.get_or_init(|| Mutex::new(Vec::new())));
    if let Some(n) = names.iter().find(|n| **n == name) {
        return n;
    }
    let n: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.push(n);
    n
}

/// `name` reduced to characters safe in a file name.
pub(crate) fn file_safe(name: &str) -> String {
    let s: String = name
        .chars()
        .take(40)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "model".into()
    } else {
        s
    }
}

/// Feeds `xs` to `h` as little-endian bytes.
pub(crate) fn hash_f32(h: &mut Sha256, xs: &[f32]) {
    let mut buf = [0u8; 4096];
    for chunk in xs.chunks(buf.len() / 4) {
        for (b, x) in buf.chunks_exact_mut(4).zip(chunk) {
            b.copy_from_slice(&x.to_le_bytes());
        }
        h.update(&buf[..chunk.len() * 4]);
    }
}

/// The first 8 bytes of the SHA-256 of a hop's samples.
fn hop_hash(hop: &[f32]) -> [u8; 8] {
    let mut h = Sha256::new();
    hash_f32(&mut h, hop);
    let d = h.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&d[..8]);
    out
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Locks a mutex, taking the data of a poisoned one (a panicking worker is reported elsewhere).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The header of an entry: magic, format version, key, streams and the model's name.
pub(crate) fn header(key: &[u8; 32], name: &str, streams: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    b.extend_from_slice(key);
    b.extend_from_slice(&(streams as u32).to_le_bytes());
    let name = &name.as_bytes()[..name.len().min(255)];
    b.push(name.len() as u8);
    b.extend_from_slice(name);
    b
}

/// A verified entry, ready to replay.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The file.
    path: PathBuf,
    /// Offset of the first event.
    events_at: u64,
    /// Number of events.
    events: u64,
    /// The recorded model's spec.
    spec: ModelSpec,
    /// Where the model ran when it was recorded.
    pub(crate) provider: String,
    /// The model's notice when it was recorded.
    notice: Option<String>,
}

impl Entry {
    /// Opens and verifies the entry at `path` for `key`, the model `name` and `streams`:
    /// header, digest and metadata.
    pub(crate) fn open(
        path: &Path,
        key: &[u8; 32],
        name: &str,
        streams: usize,
    ) -> Result<Self, CacheError> {
        let io_err = |source| CacheError::Io {
            path: path.to_path_buf(),
            source,
        };
        let corrupt = |reason: &str| CacheError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let mut f = File::open(path).map_err(io_err)?;
        let len = f.metadata().map_err(io_err)?.len();
        let head = header(key, name, streams);
        if len < head.len() as u64 + 1 + TAIL {
            return Err(corrupt("truncated"));
        }
        let mut got = vec![0u8; head.len()];
        f.read_exact(&mut got).map_err(io_err)?;
        if got[..8] != MAGIC {
            return Err(corrupt("not a mask cache entry"));
        }
        if got[8..12] != FORMAT_VERSION.to_le_bytes() {
            return Err(corrupt("another format version"));
        }
        if got != head {
            return Err(corrupt("its header does not match its name"));
        }
        // The digest covers every byte before it.
        let body = len - 40;
        f.seek(SeekFrom::Start(0)).map_err(io_err)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut left = body;
        while left > 0 {
            let n = (left as usize).min(buf.len());
            f.read_exact(&mut buf[..n]).map_err(io_err)?;
            h.update(&buf[..n]);
            left -= n as u64;
        }
        let mut tail = [0u8; 40];
        f.read_exact(&mut tail).map_err(io_err)?;
        if tail[32..] != END_MAGIC {
            return Err(corrupt("truncated (no end marker)"));
        }
        if h.finalize()[..] != tail[..32] {
            return Err(corrupt("checksum mismatch"));
        }
        // Metadata: from the end byte to the tail.
        f.seek(SeekFrom::Start(body - 8)).map_err(io_err)?;
        let mut off = [0u8; 8];
        f.read_exact(&mut off).map_err(io_err)?;
        let end_at = u64::from_le_bytes(off);
        if end_at < head.len() as u64 || end_at >= body - 8 {
            return Err(corrupt("bad metadata offset"));
        }
        f.seek(SeekFrom::Start(end_at)).map_err(io_err)?;
        let mut meta = vec![0u8; (body - 8 - end_at) as usize];
        f.read_exact(&mut meta).map_err(io_err)?;
        let Meta {
            name: spec_name,
            rate,
            hop,
            bins,
            lookahead,
            provider,
            notice,
            events,
        } = Meta::parse(&meta).ok_or_else(|| corrupt("bad metadata"))?;
        Ok(Self {
            path: path.to_path_buf(),
            events_at: head.len() as u64,
            events,
            spec: ModelSpec {
                name: intern(&spec_name),
                sample_rate: rate,
                hop: hop as usize,
                bins: bins as usize,
                lookahead: lookahead as usize,
            },
            provider,
            notice,
        })
    }
}

/// The metadata after the events: the loaded model's spec, where it ran and its notice, and
/// the number of events.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    /// The model's name.
    name: String,
    /// Model sample rate.
    rate: u32,
    /// Model hop.
    hop: u32,
    /// Mask bins.
    bins: u32,
    /// Lookahead in frames.
    lookahead: u32,
    /// Execution provider.
    provider: String,
    /// The model's notice.
    notice: Option<String>,
    /// Events recorded.
    events: u64,
}

impl Meta {
    /// Bytes: the end byte, then the fields in order (strings with a length).
    fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![EV_END];
        for v in [self.rate, self.hop, self.bins, self.lookahead] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for s in [&self.name, &self.provider] {
            let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
            b.extend_from_slice(&(s.len() as u16).to_le_bytes());
            b.extend_from_slice(s);
        }
        match &self.notice {
            Some(n) => {
                let n = &n.as_bytes()[..n.len().min(u32::MAX as usize)];
                b.push(1);
                b.extend_from_slice(&(n.len() as u32).to_le_bytes());
                b.extend_from_slice(n);
            }
            None => b.push(0),
        }
        b.extend_from_slice(&self.events.to_le_bytes());
        b
    }

    /// Parses [`Meta::to_bytes`]; `None` unless `b` is exactly that.
    fn parse(b: &[u8]) -> Option<Self> {
        let mut r = b;
        let mut take = |n: usize| -> Option<&[u8]> {
            let (a, rest) = (r.get(..n)?, r.get(n..)?);
            r = rest;
            Some(a)
        };
        if take(1)? != [EV_END] {
            return None;
        }
        let mut u32s = [0u32; 4];
        for v in &mut u32s {
            *v = u32::from_le_bytes(take(4)?.try_into().ok()?);
        }
        let mut strings = [String::new(), String::new()];
        for v in &mut strings {
            let len = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
            *v = String::from_utf8(take(len)?.to_vec()).ok()?;
        }
        let [name, provider] = strings;
        let notice = match take(1)? {
            [0] => None,
            [1] => {
                let nlen = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
                Some(String::from_utf8(take(nlen)?.to_vec()).ok()?)
            }
            _ => return None,
        };
        let events = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let [rate, hop, bins, lookahead] = u32s;
        (r.is_empty() && bins > 0 && bins <= 1 << 16).then_some(Self {
            name,
            rate,
            hop,
            bins,
            lookahead,
            provider,
            notice,
            events,
        })
    }
}

/// A recording being written (shared by the session and the recording model).
pub(crate) struct Sink {
    /// The temporary file.
    pub(crate) temp: PathBuf,
    /// Writer on it.
    out: BufWriter<File>,
    /// Digest of every byte written.
    digest: Sha256,
    /// Bytes written.
    written: u64,
    /// Events written.
    events: u64,
    /// The first write error; the entry is then not stored.
    error: Option<io::Error>,
    /// The loaded model's spec.
    pub(crate) spec: Option<ModelSpec>,
    /// Where the model runs, once it is loaded.
    pub(crate) provider: Option<String>,
    /// The model's notice.
    pub(crate) notice: Option<String>,
    /// Scratch for one record.
    record: Vec<u8>,
}

impl Sink {
    /// Creates the temporary file for `path` and writes the header.
    pub(crate) fn create(path: &Path, head: &[u8]) -> Result<Self, CacheError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = dir.join(format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let io_err = |p: &Path| {
            let p = p.to_path_buf();
            move |source| CacheError::Io { path: p, source }
        };
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let file = File::create(&temp).map_err(io_err(&temp))?;
        let mut sink = Self {
            temp,
            out: BufWriter::with_capacity(1 << 16, file),
            digest: Sha256::new(),
            written: 0,
            events: 0,
            error: None,
            spec: None,
            provider: None,
            notice: None,
            record: Vec::with_capacity(4096),
        };
        sink.put(head);
        match sink.error.take() {
            Some(e) => {
                let _ = fs::remove_file(&sink.temp);
                Err(CacheError::Io {
                    path: sink.temp,
                    source: e,
                })
            }
            None => Ok(sink),
        }
    }

    /// Writes `bytes` (unless an earlier write failed).
    fn put(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        self.digest.update(bytes);
        self.written += bytes.len() as u64;
        if let Err(e) = self.out.write_all(bytes) {
            self.error = Some(e);
        }
    }

    /// Writes the record in `self.record` as one event.
    fn put_record(&mut self) {
        let rec = std::mem::take(&mut self.record);
        self.put(&rec);
        self.record = rec;
        self.events += 1;
    }

    /// Records a reset.
    fn reset(&mut self) {
        self.record.clear();
        self.record.push(EV_RESET);
        self.put_record();
    }

    /// Records a hop and what the model returned for it.
    fn hop(&mut self, stream: usize, hop: &[f32], result: Option<u64>, mask: &[Complex32]) {
        self.record.clear();
        self.record.push(if result.is_some() {
            EV_HOP_MASK
        } else {
            EV_HOP
        });
        self.record
            .extend_from_slice(&(stream as u32).to_le_bytes());
        self.record.extend_from_slice(&hop_hash(hop));
        if let Some(frame) = result {
            self.record.extend_from_slice(&frame.to_le_bytes());
            for m in mask {
                self.record.extend_from_slice(&m.re.to_le_bytes());
                self.record.extend_from_slice(&m.im.to_le_bytes());
            }
        }
        self.put_record();
    }

    /// Writes the metadata and tail, and renames the file to `path`.
    pub(crate) fn store(mut self, path: &Path) -> Result<(), CacheError> {
        let end_at = self.written;
        let spec = self.spec.unwrap_or(ModelSpec {
            name: "",
            sample_rate: 0,
            hop: 0,
            bins: 0,
            lookahead: 0,
        });
        let m = Meta {
            name: spec.name.to_string(),
            rate: spec.sample_rate,
            hop: spec.hop as u32,
            bins: spec.bins as u32,
            lookahead: spec.lookahead as u32,
            provider: self.provider.clone().unwrap_or_default(),
            notice: self.notice.clone(),
            events: self.events,
        };
        self.put(&m.to_bytes());
        self.put(&end_at.to_le_bytes());
        let digest = self.digest.clone().finalize();
        self.put(&digest);
        self.put(&END_MAGIC);
        let temp = self.temp.clone();
        let fail = |source| {
            let _ = fs::remove_file(&temp);
            CacheError::Io {
                path: temp.clone(),
                source,
            }
        };
        if let Some(e) = self.error.take() {
            return Err(fail(e));
        }
        self.out.flush().map_err(fail)?;
        drop(self.out);
        fs::rename(&temp, path).map_err(fail)
    }
}

/// A model whose calls are recorded into a [`Sink`].
pub(crate) struct RecordingModel {
    /// The real model.
    pub(crate) inner: Box<dyn MaskModel>,
    /// Where the calls go.
    pub(crate) sink: Arc<Mutex<Sink>>,
}

impl MaskModel for RecordingModel {
    fn spec(&self) -> ModelSpec {
        self.inner.spec()
    }

    fn reset(&mut self) {
        self.inner.reset();
        lock(&self.sink).reset();
    }

    fn resume(&mut self) {
        // Recorded as a reset: a replay only checks where streams start again.
        self.inner.resume();
        lock(&self.sink).reset();
    }

    fn push_hop(
        &mut self,
        stream: usize,
        hop: &[f32],
        mask: &mut [Complex32],
    ) -> Result<Option<u64>, ModelError> {
        let r = self.inner.push_hop(stream, hop, mask)?;
        lock(&self.sink).hop(stream, hop, r, mask);
        Ok(r)
    }

    fn provider(&self) -> String {
        self.inner.provider()
    }

    fn notice(&self) -> Option<String> {
        self.inner.notice()
    }
}

/// A model that answers from a recording, checking that it is called the same way.
pub(crate) struct ReplayModel {
    /// The spec of the recorded model.
    spec: ModelSpec,
    /// The entry's name, for messages.
    name: String,
    /// Reader positioned at the next event.
    reader: BufReader<File>,
    /// Events not yet replayed.
    left: u64,
    /// Events replayed.
    done: u64,
    /// Where the recorded model ran.
    provider: String,
    /// Its notice.
    notice: Option<String>,
    /// A reset that did not match, reported by the next `push_hop`.
    pending: Option<String>,
    /// Set on the first mismatch (read by the session).
    failure: Arc<Mutex<Option<String>>>,
    /// Scratch.
    buf: Vec<u8>,
}

impl ReplayModel {
    /// Opens `entry` for replay.
    pub(crate) fn open(
        entry: &Entry,
        failure: Arc<Mutex<Option<String>>>,
    ) -> Result<Self, ModelError> {
        let spec = entry.spec;
        let read_err = |source| ModelError::Read {
            path: entry.path.clone(),
            source,
        };
        let mut f = File::open(&entry.path).map_err(read_err)?;
        f.seek(SeekFrom::Start(entry.events_at)).map_err(read_err)?;
        Ok(Self {
            spec,
            name: entry
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            reader: BufReader::with_capacity(1 << 16, f),
            left: entry.events,
            done: 0,
            provider: entry.provider.clone(),
            notice: entry.notice.clone(),
            pending: None,
            failure,
            buf: vec![0u8; 8 * spec.bins],
        })
    }

    /// Records the first mismatch and returns the error that stops the render.
    fn fail(&mut self, why: String) -> ModelError {
        let message = format!("mask cache entry {}: {why}", self.name);
        let mut f = lock(&self.failure);
        if f.is_none() {
            *f = Some(message.clone());
        }
        ModelError::Mismatch {
            graph: "mask cache".into(),
            message,
        }
    }

    /// The next event's kind, or `None` when the recording is over.
    fn next_kind(&mut self) -> Result<Option<u8>, String> {
        if self.left == 0 {
            return Ok(None);
        }
        let mut k = [0u8; 1];
        self.reader
            .read_exact(&mut k)
            .map_err(|e| format!("read error at event {}: {e}", self.done))?;
        self.left -= 1;
        self.done += 1;
        Ok(Some(k[0]))
    }

    /// Reads `n` bytes into the scratch buffer.
    fn read(&mut self, n: usize) -> Result<&[u8], String> {
        if self.buf.len() < n {
            self.buf.resize(n, 0);
        }
        self.reader
            .read_exact(&mut self.buf[..n])
            .map_err(|e| format!("read error at event {}: {e}", self.done))?;
        Ok(&self.buf[..n])
    }

    /// Replays one hop.
    fn hop(
        &mut self,
        stream: usize,
        hop: &[f32],
        mask: &mut [Complex32],
    ) -> Result<Option<u64>, String> {
        let kind = match self.next_kind()? {
            // Past the recording: these frames are past the end of the output.
            None => return Ok(None),
            Some(k) => k,
        };
        let event = self.done;
        if kind != EV_HOP && kind != EV_HOP_MASK {
            return Err(format!("event {event} is not a hop"));
        }
        let head = self.read(12)?;
        let rec_stream = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let rec_hash: [u8; 8] = [
            head[4], head[5], head[6], head[7], head[8], head[9], head[10], head[11],
        ];
        if rec_stream != stream {
            return Err(format!(
                "event {event} is a hop of stream {rec_stream}, not {stream}"
            ));
        }
        if rec_hash != hop_hash(hop) {
            return Err(format!(
                "the samples of hop event {event} (stream {stream}) differ from the recording"
            ));
        }
        if kind == EV_HOP {
            return Ok(None);
        }
        let bins = self.spec.bins;
        if mask.len() != bins {
            return Err(format!(
                "the worker asks for {} bins, the recording has {bins}",
                mask.len()
            ));
        }
        let frame = self.read(8)?;
        let frame = u64::from_le_bytes([
            frame[0], frame[1], frame[2], frame[3], frame[4], frame[5], frame[6], frame[7],
        ]);
        let data = self.read(8 * bins)?;
        for (m, b) in mask.iter_mut().zip(data.chunks_exact(8)) {
            *m = Complex32::new(
                f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                f32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            );
        }
        Ok(Some(frame))
    }
}

impl MaskModel for ReplayModel {
    fn spec(&self) -> ModelSpec {
        self.spec
    }

    fn reset(&mut self) {
        if self.pending.is_some() {
            return;
        }
        match self.next_kind() {
            Ok(None | Some(EV_RESET)) => {}
            Ok(Some(_)) => {
                self.pending = Some(format!("event {} is not a reset", self.done));
            }
            Err(e) => self.pending = Some(e),
        }
    }

    fn push_hop(
        &mut self,
        stream: usize,
        hop: &[f32],
        mask: &mut [Complex32],
    ) -> Result<Option<u64>, ModelError> {
        if let Some(why) = self.pending.take() {
            return Err(self.fail(why));
        }
        self.hop(stream, hop, mask).map_err(|why| self.fail(why))
    }

    fn provider(&self) -> String {
        self.provider.clone()
    }

    fn notice(&self) -> Option<String> {
        self.notice.clone()
    }
}

/// Marks an entry as recently used (best effort).
pub(crate) fn touch(path: &Path) {
    if let Ok(f) = File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Removes the least recently used entries of `dir` until they take at most `max_bytes` (the
/// most recent one is always kept), and temporary files left by processes that died.
pub fn prune(dir: &Path, max_bytes: u64) {
    let Ok(read) = fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    let mut entries = Vec::new();
    for e in read.flatten() {
        let path = e.path();
        let Ok(meta) = e.metadata() else { continue };
        let modified = meta.modified().unwrap_or(now);
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(".tmp") {
            if now.duration_since(modified).unwrap_or_default() > STALE_TEMP {
                let _ = fs::remove_file(&path);
            }
        } else if meta.is_file() && path.extension().is_some_and(|x| x == EXTENSION) {
            entries.push((modified, meta.len(), path));
        }
    }
    let mut total: u64 = entries.iter().map(|e| e.1).sum();
    entries.sort_by_key(|e| e.0);
    let keep = entries.len().saturating_sub(1);
    for (_, len, path) in entries.into_iter().take(keep) {
        if total <= max_bytes {
            break;
        }
        if fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips() {
        for notice in [None, Some("CUDA could not start".to_string())] {
            let m = Meta {
                name: "dfn3".into(),
                rate: 48_000,
                hop: 480,
                bins: 481,
                lookahead: 2,
                provider: "CPU".into(),
                notice,
                events: 12345,
            };
            let b = m.to_bytes();
            assert_eq!(Meta::parse(&b), Some(m));
            assert_eq!(Meta::parse(&b[..b.len() - 1]), None);
            let mut longer = b.clone();
            longer.push(0);
            assert_eq!(Meta::parse(&longer), None);
        }
    }

    #[test]
    fn size_per_minute_of_dfn3() {
        let b = bytes_per_minute(&dfn3::SPEC, 1);
        // 6000 hops of 481 complex gains.
        assert!((23_000_000..23_500_000).contains(&b), "{b}");
    }
}
