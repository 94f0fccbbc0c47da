//! Fuzzes audio file decoding (`voxsift_app::io::read_audio`) with arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = voxsift_fuzz::check_read_audio(data);
});
