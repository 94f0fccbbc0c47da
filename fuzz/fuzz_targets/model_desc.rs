//! Fuzzes the separator model description parser (`voxsift_models::separator::desc`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = voxsift_fuzz::check_model_desc(data);
});
