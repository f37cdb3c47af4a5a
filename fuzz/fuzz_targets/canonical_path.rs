#![no_main]
//! Canonicalisation must never panic, and its output must be a fixed point with no
//! dot segments or empty segments.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(c) = chaperone_proxy::canon::canonicalize_path(s) {
            assert_eq!(chaperone_proxy::canon::canonicalize_path(&c).as_deref(), Ok(c.as_str()));
            assert!(!c.contains("//") && !c.contains("/./") && !c.contains("/../"));
        }
    }
});
