//! Fuzzes the post-chain preset parser (`voxsift_app::post::PostChain::from_toml_str`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = voxsift_fuzz::check_post_preset(data);
});
