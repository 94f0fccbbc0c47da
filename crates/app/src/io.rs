//! Audio file input and output for the offline renderer and the tests.
//!
//! [`read_audio`] decodes any format symphonia supports (WAV, FLAC, Ogg Vorbis, MP3, ...) to
//! planar `f32` at the file's own rate and channel count, full length and sample-exact
//! (encoder delay and padding are trimmed where the container declares them).
//! [`write_wav`] writes a WAV file through a temporary file in the same directory, renamed
//! over the final name only once everything has been written.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use symphonia::core::audio::{AudioBuffer, Signal, SignalSpec};
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;
use thiserror::Error;

/// Decoded audio, planar: one `Vec<f32>` per channel, all of the same length.
///
/// Samples are nominally in `[-1, 1]`; integer sources are scaled by `2^(bits - 1)`
/// (so a 16-bit sample `s` becomes `s / 32768`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Audio {
    /// Sample rate in Hz.
    pub sample_rate: u32,
    /// One buffer per channel, in the file's channel order.
    pub channels: Vec<Vec<f32>>,
}

impl Audio {
    /// Audio from planar channels; no check is made that the channels have equal lengths
    /// ([`write_wav`] checks it).
    pub fn new(sample_rate: u32, channels: Vec<Vec<f32>>) -> Self {
        Self {
            sample_rate,
            channels,
        }
    }

    /// Number of frames (samples per channel); 0 when there are no channels.
    pub fn frames(&self) -> usize {
        self.channels.first().map_or(0, Vec::len)
    }

    /// Number of channels.
    pub fn num_channels(&self) -> usize {
        self.channels.len()
    }

    /// Duration in seconds (0 when the sample rate is 0).
    pub fn duration_secs(&self) -> f64 {
        if self.sample_rate == 0 {
            0.0
        } else {
            self.frames() as f64 / f64::from(self.sample_rate)
        }
    }
}

/// Sample format of a written WAV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SampleFormat {
    /// 32-bit IEEE float, written exactly.
    #[default]
    F32,
    /// 16-bit signed integer: `round(x * 32768)` clamped to `[-32768, 32767]`, no dither.
    I16,
    /// 24-bit signed integer: `round(x * 8388608)` clamped to `[-8388608, 8388607]`, no dither.
    I24,
}

/// Errors from [`read_audio`] and [`write_wav`].
#[derive(Debug, Error)]
pub enum IoError {
    /// The input file does not exist.
    #[error("{}: file not found", path.display())]
    NotFound {
        /// The path that was asked for.
        path: PathBuf,
    },
    /// The input file exists but cannot be opened or read.
    #[error("{}: cannot read: {source}", path.display())]
    Unreadable {
        /// The input path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The container or codec is not recognised or not supported.
    #[error("{}: unsupported audio format ({detail})", path.display())]
    UnsupportedFormat {
        /// The input path.
        path: PathBuf,
        /// What the decoder library reported.
        detail: String,
    },
    /// The container holds no audio track that can be decoded.
    #[error("{}: no audio track", path.display())]
    NoAudioTrack {
        /// The input path.
        path: PathBuf,
    },
    /// The audio data is corrupt or inconsistent.
    #[error(
        "{}: decode error at frame {frame} ({seconds:.3} s): {detail}",
        path.display()
    )]
    Decode {
        /// The input path.
        path: PathBuf,
        /// Frames (per channel) successfully decoded before the error.
        frame: u64,
        /// The same position in seconds.
        seconds: f64,
        /// What went wrong.
        detail: String,
    },
    /// The audio has no channels (on reading: the file declares none; on writing: the
    /// [`Audio`] is empty).
    #[error("{}: the audio has no channels", path.display())]
    NoChannels {
        /// The file concerned.
        path: PathBuf,
    },
    /// The [`Audio`] to write is malformed (channels of different lengths, too many channels,
    /// a zero sample rate).
    #[error("{}: cannot write: {detail}", path.display())]
    InvalidAudio {
        /// The output path.
        path: PathBuf,
        /// What is wrong with the audio.
        detail: String,
    },
    /// The output path has no file name (for example `..` or `/`).
    #[error("{}: not a file path", path.display())]
    InvalidPath {
        /// The output path.
        path: PathBuf,
    },
    /// Creating, writing or renaming the output failed.
    #[error("{}: write failed: {source}", path.display())]
    Write {
        /// The output path (the final name, not the temporary one).
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The WAV encoder reported an error (for example a file over the 4 GiB WAV limit).
    #[error("{}: WAV encoding failed: {source}", path.display())]
    Wav {
        /// The output path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: hound::Error,
    },
}

/// Decodes an audio file to planar `f32` at its own sample rate and channel count.
///
/// The whole file is decoded; for MP3 and Ogg Vorbis the encoder delay and padding declared by
/// the file (LAME/Xing header, granule positions) are trimmed, so the result is sample-exact.
/// Any decode error fails the whole read: no packet is silently skipped.
pub fn read_audio(path: &Path) -> Result<Audio, IoError> {
    // A decoder bug must not take the CLI (or a whole batch) down: a panic on a malformed
    // file is reported as an unsupported file.
    std::panic::catch_unwind(|| read_audio_unguarded(path)).unwrap_or_else(|p| {
        let why = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        Err(IoError::UnsupportedFormat {
            path: path.to_path_buf(),
            detail: format!("the decoder failed on this file: {why}"),
        })
    })
}

/// [`read_audio`] without the panic guard.
fn read_audio_unguarded(path: &Path) -> Result<Audio, IoError> {
    let file = open_input(path)?;
    let mss = MediaSourceStream::new(Box::new(file), MediaSourceStreamOptions::default());

    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let format_opts = FormatOptions {
        enable_gapless: true,
        ..FormatOptions::default()
    };
    let probed = symphonia::default::get_probe()
        .format(&hint, mss, &format_opts, &MetadataOptions::default())
        .map_err(|e| probe_error(path, e))?;
    let mut format = probed.format;

    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| IoError::NoAudioTrack {
            path: path.to_path_buf(),
        })?;
    let track_id = track.id;
    let params = track.codec_params.clone();
    let mut decoder = symphonia::default::get_codecs()
        .make(&params, &DecoderOptions::default())
        .map_err(|e| IoError::UnsupportedFormat {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;

    let mut sample_rate = params.sample_rate;
    let mut channels: Option<Vec<Vec<f32>>> = params.channels.map(|c| {
        let capacity = params
            .n_frames
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0)
            // Only a hint: a header may claim any length (2^36 frames aborted the process).
            .min(1 << 22);
        (0..c.count())
            .map(|_| Vec::with_capacity(capacity))
            .collect()
    });
    if channels.as_ref().is_some_and(Vec::is_empty) {
        return Err(IoError::NoChannels {
            path: path.to_path_buf(),
        });
    }

    let mut scratch: Option<AudioBuffer<f32>> = None;
    let mut frames_done: u64 = 0;
    let decode_err = |frames_done: u64, rate: Option<u32>, detail: String| {
        let seconds = match rate {
            Some(r) if r > 0 => frames_done as f64 / f64::from(r),
            _ => 0.0,
        };
        IoError::Decode {
            path: path.to_path_buf(),
            frame: frames_done,
            seconds,
            detail,
        }
    };

    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymphoniaError::IoError(e)) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(SymphoniaError::IoError(e)) => {
                return Err(IoError::Unreadable {
                    path: path.to_path_buf(),
                    source: e,
                })
            }
            Err(SymphoniaError::ResetRequired) => {
                return Err(IoError::UnsupportedFormat {
                    path: path.to_path_buf(),
                    detail: "the track list changes mid-file (chained streams)".into(),
                })
            }
            Err(e) => return Err(decode_err(frames_done, sample_rate, e.to_string())),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            Err(e) => return Err(decode_err(frames_done, sample_rate, e.to_string())),
        };

        let spec: SignalSpec = *decoded.spec();
        let n_ch = spec.channels.count();
        if n_ch == 0 {
            return Err(IoError::NoChannels {
                path: path.to_path_buf(),
            });
        }
        match sample_rate {
            None => sample_rate = Some(spec.rate),
            Some(r) if r != spec.rate => {
                return Err(decode_err(
                    frames_done,
                    sample_rate,
                    format!("sample rate changes from {r} Hz to {} Hz", spec.rate),
                ))
            }
            Some(_) => {}
        }
        let out = channels.get_or_insert_with(|| vec![Vec::new(); n_ch]);
        if out.len() != n_ch {
            return Err(decode_err(
                frames_done,
                sample_rate,
                format!("channel count changes from {} to {n_ch}", out.len()),
            ));
        }
        if decoded.frames() == 0 {
            continue;
        }

        let capacity = decoded.capacity();
        let buf = match &mut scratch {
            Some(b) if b.spec() == &spec && b.capacity() >= capacity => b,
            _ => scratch.insert(AudioBuffer::new(capacity as u64, spec)),
        };
        decoded.convert(buf);
        for (c, dst) in out.iter_mut().enumerate() {
            dst.extend_from_slice(buf.chan(c));
        }
        frames_done += buf.frames() as u64;
    }

    let channels = channels.ok_or_else(|| IoError::NoChannels {
        path: path.to_path_buf(),
    })?;
    let sample_rate = match sample_rate {
        Some(r) if r > 0 => r,
        _ => {
            return Err(IoError::UnsupportedFormat {
                path: path.to_path_buf(),
                detail: "the file does not declare a sample rate".into(),
            })
        }
    };
    Ok(Audio {
        sample_rate,
        channels,
    })
}

/// Opens the input, telling a missing file from one that cannot be read.
fn open_input(path: &Path) -> Result<File, IoError> {
    let unreadable = |source: io::Error| {
        if source.kind() == io::ErrorKind::NotFound {
            IoError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            IoError::Unreadable {
                path: path.to_path_buf(),
                source,
            }
        }
    };
    let meta = fs::metadata(path).map_err(unreadable)?;
    if meta.is_dir() {
        return Err(IoError::Unreadable {
            path: path.to_path_buf(),
            source: io::Error::other("is a directory"),
        });
    }
    File::open(path).map_err(unreadable)
}

/// Maps an error from format probing: anything that is not a real I/O failure means the
/// content was not recognised.
fn probe_error(path: &Path, e: SymphoniaError) -> IoError {
    match e {
        SymphoniaError::IoError(e) if e.kind() != io::ErrorKind::UnexpectedEof => {
            IoError::Unreadable {
                path: path.to_path_buf(),
                source: e,
            }
        }
        SymphoniaError::IoError(_) => IoError::UnsupportedFormat {
            path: path.to_path_buf(),
            detail: "no known format found before the end of the file".into(),
        },
        other => IoError::UnsupportedFormat {
            path: path.to_path_buf(),
            detail: other.to_string(),
        },
    }
}

/// Writes `audio` as a WAV file at `path`, replacing any existing file of that name.
///
/// The data go to a temporary file in the same directory, which is flushed to disk and then
/// renamed to `path`; on any failure the temporary file is removed and `path` is untouched.
/// Integer formats round to nearest and clamp (no dither), so the output is deterministic.
/// Deciding whether an existing file may be replaced is the caller's business.
pub fn write_wav(path: &Path, audio: &Audio, fmt: SampleFormat) -> Result<(), IoError> {
    let n_ch = audio.num_channels();
    if n_ch == 0 {
        return Err(IoError::NoChannels {
            path: path.to_path_buf(),
        });
    }
    let invalid = |detail: String| IoError::InvalidAudio {
        path: path.to_path_buf(),
        detail,
    };
    let channels = u16::try_from(n_ch).map_err(|_| invalid(format!("{n_ch} channels")))?;
    if audio.sample_rate == 0 {
        return Err(invalid("sample rate is 0".into()));
    }
    let frames = audio.frames();
    if let Some((i, c)) = audio
        .channels
        .iter()
        .enumerate()
        .find(|(_, c)| c.len() != frames)
    {
        return Err(invalid(format!(
            "channel {i} has {} frames, channel 0 has {frames}",
            c.len()
        )));
    }

    let file_name = path.file_name().ok_or_else(|| IoError::InvalidPath {
        path: path.to_path_buf(),
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };

    let write_err = |source: io::Error| IoError::Write {
        path: path.to_path_buf(),
        source,
    };
    let (tmp_path, file) = create_temp(dir, file_name).map_err(write_err)?;
    let mut guard = TempGuard {
        path: Some(tmp_path),
    };

    let (bits, sample_format) = match fmt {
        SampleFormat::F32 => (32, hound::SampleFormat::Float),
        SampleFormat::I16 => (16, hound::SampleFormat::Int),
        SampleFormat::I24 => (24, hound::SampleFormat::Int),
    };
    let spec = hound::WavSpec {
        channels,
        sample_rate: audio.sample_rate,
        bits_per_sample: bits,
        sample_format,
    };
    let wav_err = |source: hound::Error| match source {
        hound::Error::IoError(source) => IoError::Write {
            path: path.to_path_buf(),
            source,
        },
        source => IoError::Wav {
            path: path.to_path_buf(),
            source,
        },
    };

    let mut buffered = BufWriter::with_capacity(1 << 16, file);
    {
        let mut writer = hound::WavWriter::new(&mut buffered, spec).map_err(wav_err)?;
        for i in 0..frames {
            for c in &audio.channels {
                let x = c[i];
                match fmt {
                    SampleFormat::F32 => writer.write_sample(x),
                    SampleFormat::I16 => writer.write_sample(quantize(x, 16) as i16),
                    SampleFormat::I24 => writer.write_sample(quantize(x, 24)),
                }
                .map_err(wav_err)?;
            }
        }
        writer.finalize().map_err(wav_err)?;
    }
    let file = buffered
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?;
    file.sync_all().map_err(write_err)?;
    drop(file);

    if let Some(tmp) = guard.path.as_deref() {
        fs::rename(tmp, path).map_err(write_err)?;
    }
    guard.path = None;
    Ok(())
}

/// Rounds `x * 2^(bits-1)` to the nearest integer and clamps it to the signed `bits` range.
/// NaN becomes 0.
fn quantize(x: f32, bits: u32) -> i32 {
    let full = f64::from(1u32 << (bits - 1));
    let v = (f64::from(x) * full).round().clamp(-full, full - 1.0);
    // In range by the clamp; `as` maps NaN to 0.
    v as i32
}

/// Creates a new, uniquely named hidden file next to the output.
fn create_temp(dir: &Path, file_name: &std::ffi::OsStr) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut name = std::ffi::OsString::from(".");
        name.push(file_name);
        name.push(format!(".{pid}.{n}.tmp"));
        let tmp = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Removes the temporary file on drop unless it has been renamed into place.
struct TempGuard {
    path: Option<PathBuf>,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            // Best effort: the original error is what the caller needs to see.
            let _ = fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh, empty scratch directory for one test.
    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("voxsift-io-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    /// Deterministic test signal: sines plus LCG noise, a few samples beyond full scale.
    fn test_audio(rate: u32, n_ch: usize, frames: usize) -> Audio {
        let mut state: u32 = 12345;
        let channels = (0..n_ch)
            .map(|c| {
                (0..frames)
                    .map(|i| {
                        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        let noise = (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                        let t = i as f32 / rate as f32;
                        0.6 * (2.0 * std::f32::consts::PI * (220.0 + 110.0 * c as f32) * t).sin()
                            + 0.3 * noise
                    })
                    .collect::<Vec<f32>>()
            })
            .collect();
        Audio::new(rate, channels)
    }

    fn temp_leftovers(dir: &Path) -> Vec<PathBuf> {
        fs::read_dir(dir)
            .expect("read scratch dir")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
            .collect()
    }

    #[test]
    fn f32_round_trip_is_exact() {
        let dir = scratch_dir("f32");
        let path = dir.join("out.wav");
        let mut audio = test_audio(44_100, 3, 10_007);
        audio.channels[1][5] = 1.75; // out of range values survive in float
        audio.channels[2][7] = -3.0e-39; // subnormal
        write_wav(&path, &audio, SampleFormat::F32).expect("write");
        let back = read_audio(&path).expect("read");
        assert_eq!(back, audio);
        assert!(temp_leftovers(&dir).is_empty());
        fs::remove_dir_all(&dir).ok();
    }

    fn check_int_round_trip(fmt: SampleFormat, bits: u32) {
        let dir = scratch_dir(&format!("i{bits}"));
        let path = dir.join("out.wav");
        let mut audio = test_audio(48_000, 2, 4_801);
        audio.channels[0][10] = 1.5;
        audio.channels[0][11] = -1.5;
        audio.channels[1][12] = 1.0;
        write_wav(&path, &audio, fmt).expect("write");
        let back = read_audio(&path).expect("read");
        assert_eq!(back.sample_rate, 48_000);
        assert_eq!(back.num_channels(), 2);
        assert_eq!(back.frames(), audio.frames());
        let full = (1u64 << (bits - 1)) as f32;
        let half_step = 0.5 / full + 1e-7;
        for (a, b) in audio.channels.iter().zip(&back.channels) {
            for (&x, &y) in a.iter().zip(b) {
                let expected = x.clamp(-1.0, (full - 1.0) / full);
                assert!(
                    (expected - y).abs() <= half_step,
                    "{x} -> {y} ({bits} bits)"
                );
            }
        }
        assert_eq!(back.channels[0][10], (full - 1.0) / full);
        assert_eq!(back.channels[0][11], -1.0);
        // Integer data re-written in the same format is bit-identical.
        let path2 = dir.join("again.wav");
        write_wav(&path2, &back, fmt).expect("rewrite");
        assert_eq!(read_audio(&path2).expect("reread"), back);
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn i16_round_trip_within_quantisation() {
        check_int_round_trip(SampleFormat::I16, 16);
    }

    #[test]
    fn i24_round_trip_within_quantisation() {
        check_int_round_trip(SampleFormat::I24, 24);
    }

    #[test]
    fn quantize_rounds_and_clamps() {
        assert_eq!(quantize(0.0, 16), 0);
        assert_eq!(quantize(1.0, 16), 32_767);
        assert_eq!(quantize(-1.0, 16), -32_768);
        assert_eq!(quantize(0.4 / 32_768.0, 16), 0);
        assert_eq!(quantize(0.6 / 32_768.0, 16), 1);
        assert_eq!(quantize(-0.6 / 32_768.0, 16), -1);
        assert_eq!(quantize(f32::NAN, 24), 0);
        assert_eq!(quantize(f32::INFINITY, 24), 8_388_607);
        assert_eq!(quantize(f32::NEG_INFINITY, 24), -8_388_608);
    }

    #[test]
    fn write_replaces_existing_file() {
        let dir = scratch_dir("replace");
        let path = dir.join("out.wav");
        fs::write(&path, b"old contents").expect("seed");
        let audio = test_audio(16_000, 1, 100);
        write_wav(&path, &audio, SampleFormat::F32).expect("write");
        assert_eq!(read_audio(&path).expect("read"), audio);
        assert!(temp_leftovers(&dir).is_empty());
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn failed_write_leaves_nothing_behind() {
        let dir = scratch_dir("fail");
        let path = dir.join("out.wav");
        let ragged = Audio::new(48_000, vec![vec![0.0; 10], vec![0.0; 9]]);
        let err = write_wav(&path, &ragged, SampleFormat::I16).unwrap_err();
        assert!(matches!(err, IoError::InvalidAudio { .. }), "{err}");
        let empty = Audio::new(48_000, vec![]);
        let err = write_wav(&path, &empty, SampleFormat::I16).unwrap_err();
        assert!(matches!(err, IoError::NoChannels { .. }), "{err}");
        let missing_dir = dir.join("no/such/dir/out.wav");
        let err = write_wav(&missing_dir, &test_audio(8_000, 1, 8), SampleFormat::F32).unwrap_err();
        assert!(matches!(err, IoError::Write { .. }), "{err}");
        assert!(!path.exists());
        assert_eq!(fs::read_dir(&dir).expect("list").count(), 0);
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn missing_file_is_not_found() {
        let path = Path::new("definitely/not/here.flac");
        match read_audio(path) {
            Err(IoError::NotFound { path: p }) => assert_eq!(p, path),
            other => panic!("expected NotFound, got {other:?}"),
        }
    }

    #[test]
    fn directory_is_unreadable() {
        let dir = scratch_dir("isdir");
        let err = read_audio(&dir).unwrap_err();
        assert!(matches!(err, IoError::Unreadable { .. }), "{err}");
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn garbage_and_empty_files_are_unsupported() {
        let dir = scratch_dir("garbage");
        let garbage = dir.join("garbage.wav");
        let text = "this is not audio, only text pretending to be a wave file. ".repeat(200);
        fs::write(&garbage, text).expect("write garbage");
        let err = read_audio(&garbage).unwrap_err();
        assert!(matches!(err, IoError::UnsupportedFormat { .. }), "{err}");
        assert!(err.to_string().contains("garbage.wav"), "{err}");

        let empty = dir.join("empty.flac");
        fs::write(&empty, b"").expect("write empty");
        let err = read_audio(&empty).unwrap_err();
        assert!(matches!(err, IoError::UnsupportedFormat { .. }), "{err}");
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn truncated_wav_is_an_error_not_a_panic() {
        let dir = scratch_dir("trunc");
        let path = dir.join("t.wav");
        write_wav(&path, &test_audio(48_000, 2, 1000), SampleFormat::I16).expect("write");
        let bytes = fs::read(&path).expect("read back");
        fs::write(&path, &bytes[..30]).expect("truncate");
        assert!(read_audio(&path).is_err());
        fs::remove_dir_all(&dir).ok();
    }

    /// A 48 kHz FLAC from the shared evaluation set decodes to its full length.
    /// `soundfile.info(...).frames` (libsndfile) gives 667_683 frames for sp01 (13.910 s).
    #[test]
    fn reads_shared_flac() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/eval-audio/speech");
        let Some(path) = fs::read_dir(&dir).ok().and_then(|rd| {
            rd.filter_map(Result::ok).map(|e| e.path()).find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("sp01") && n.ends_with(".flac"))
            })
        }) else {
            println!("skipped: no sp01*.flac under {}", dir.display());
            return;
        };
        let audio = read_audio(&path).expect("decode shared FLAC");
        assert_eq!(audio.sample_rate, 48_000);
        assert_eq!(audio.num_channels(), 1);
        assert_eq!(audio.frames(), SP01_FRAMES);
        assert!(audio.channels[0]
            .iter()
            .all(|x| x.is_finite() && x.abs() <= 1.0));
        let peak = audio.channels[0].iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!(peak > 0.01, "speech should not be silent (peak {peak})");
    }

    /// Frame count of `speech/sp01*.flac`, measured independently with libsndfile.
    const SP01_FRAMES: usize = 667_683;
}
