//! The checks the fuzz targets run on every input, shared with the stable test that replays
//! the seed corpora (`crates/app/tests/properties.rs` includes this file as a module), so that a
//! machine without nightly Rust runs the same code on the same inputs.
//!
//! Each check returns normally for any input, accepted or rejected; a panic, an abort or a
//! broken invariant is a finding.

use std::path::PathBuf;
use voxsift_app::io::read_audio;
use voxsift_app::post::PostChain;
use voxsift_models::separator::desc;

/// A scratch file for one input: per process and thread, so parallel tests do not collide.
fn scratch_file() -> PathBuf {
    let thread = format!("{:?}", std::thread::current().id());
    let thread: String = thread.chars().filter(char::is_ascii_digit).collect();
    std::env::temp_dir().join(format!(
        "voxsift-fuzz-{}-{thread}.input",
        std::process::id()
    ))
}

/// Decodes `data` as an audio file with [`read_audio`] (written to a scratch file, since
/// `read_audio` reads paths; no extension, so the format is found from the content). Any
/// error is fine; decoded audio must have a positive rate, at least one channel and channels
/// of equal length. Returns the number of frames decoded, if any.
pub fn check_read_audio(data: &[u8]) -> Option<usize> {
    /// Removes the scratch file, also when the decoder panics.
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let file = Remove(scratch_file());
    std::fs::write(&file.0, data).expect("writing the scratch file");
    let result = read_audio(&file.0);
    drop(file);
    let audio = result.ok()?;
    assert!(
        audio.sample_rate > 0,
        "decoded audio with a zero sample rate"
    );
    assert!(audio.num_channels() > 0, "decoded audio with no channels");
    let frames = audio.frames();
    assert!(
        audio.channels.iter().all(|c| c.len() == frames),
        "decoded channels of different lengths"
    );
    Some(frames)
}

/// Parses `data` as a post-chain preset (TOML). Any error is fine; an accepted preset must
/// write back to TOML that parses to the same chain, and must process a short test signal
/// (48 kHz stereo, 0.5 s) into finite samples or refuse it with an error.
pub fn check_post_preset(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let Ok(chain) = PostChain::from_toml_str(text) else {
        return false;
    };
    let written = chain
        .to_toml_string()
        .expect("an accepted preset writes back");
    let again = PostChain::from_toml_str(&written).expect("a written preset parses");
    assert_eq!(chain, again, "the preset does not round-trip:\n{written}");
    let n = 24_000;
    let mut audio: Vec<Vec<f32>> = (0..2)
        .map(|c| {
            (0..n)
                .map(|i| 0.3 * ((i * (7 + c)) as f32 * 0.01).sin())
                .collect()
        })
        .collect();
    if chain.apply(&mut audio, 48_000).is_ok() {
        assert!(
            audio.iter().flatten().all(|v| v.is_finite()),
            "an accepted preset produced non-finite samples"
        );
    }
    true
}

/// Parses `data` as a separator model description (`model.toml`, the file the loader reads
/// beside each Demucs-family graph). Any error is fine; an accepted description must validate
/// or be refused by `validate` with a message, and a valid one must give its graph ports, mask
/// grid and schedule in samples without panicking or overflowing. Returns whether it was valid.
pub fn check_model_desc(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let Ok(d) = desc::parse(text) else {
        return false;
    };
    match d.validate() {
        Err(message) => {
            assert!(!message.is_empty(), "a refusal without a message");
            false
        }
        Ok(()) => {
            assert!(
                d.hop() > 0 && d.bins() > 1,
                "a valid description with no mask grid"
            );
            assert!(
                d.speech_index().is_some(),
                "valid, but its speech source is unknown"
            );
            let _ = d.ports();
            let _ = d.ms_to_samples(d.schedule.window_ms);
            let _ = voxsift_models::separator::schedule(
                &d,
                &voxsift_models::separator::ScheduleOverrides::default(),
            );
            true
        }
    }
}
