//! WAV helpers shared by the host-test binaries (the CLI's input and output files).

use std::path::Path;

/// Writes planar f32 as a 32-bit float WAV.
pub fn write_wav(path: &Path, rate: u32, chans: &[Vec<f32>]) {
    let spec = hound::WavSpec {
        channels: chans.len() as u16,
        sample_rate: rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("creating a WAV");
    for i in 0..chans[0].len() {
        for c in chans {
            w.write_sample(c[i]).expect("writing a WAV");
        }
    }
    w.finalize().expect("finishing a WAV");
}

/// Reads a 32-bit float WAV to planar f32.
pub fn read_wav(path: &Path) -> (u32, Vec<Vec<f32>>) {
    let mut r = hound::WavReader::open(path).expect("opening the CLI's WAV");
    let spec = r.spec();
    assert_eq!(
        (spec.bits_per_sample, spec.sample_format),
        (32, hound::SampleFormat::Float),
        "the CLI wrote {spec:?}, not 32-bit float"
    );
    let n = spec.channels as usize;
    let mut chans = vec![Vec::new(); n];
    for (i, s) in r.samples::<f32>().enumerate() {
        chans[i % n].push(s.expect("reading the CLI's WAV"));
    }
    (spec.sample_rate, chans)
}
