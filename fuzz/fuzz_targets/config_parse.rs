//! Fuzz the config parser and validator: arbitrary text must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = chaperone_config::from_str(s, std::path::Path::new("fuzz.yaml"));
    }
});
