//! Malformed input never panics: truncations and byte mutations of the full example
//! (a deterministic stand-in for the `config_parse` fuzz target).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use chaperone_config::from_str_with_env;

fn example() -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/chaperone.yaml");
    std::fs::read_to_string(p).unwrap()
}

fn env(_: &str) -> Option<String> {
    Some("x".into())
}

#[test]
fn every_truncation_is_handled() {
    let text = example();
    let mut rejected = 0;
    for (i, _) in text.char_indices() {
        if from_str_with_env(&text[..i], Path::new("t.yaml"), &env).is_err() {
            rejected += 1;
        }
    }
    // Most prefixes cut a section or value short; the full text is valid.
    assert!(rejected > text.len() / 2, "{rejected}");
    assert!(from_str_with_env(&text, Path::new("t.yaml"), &env).is_ok());
}

#[test]
fn byte_mutations_are_handled() {
    let text = example().into_bytes();
    let alphabet = b"{}[]:,-'\"&*!|>%@`#?\n\t $\\0a/.";
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut errors_seen = 0;
    for _ in 0..3000 {
        let mut t = text.clone();
        for _ in 0..(1 + next() % 4) {
            let pos = (next() as usize) % t.len();
            t[pos] = alphabet[(next() as usize) % alphabet.len()];
        }
        let Ok(s) = std::str::from_utf8(&t) else {
            continue;
        };
        if let Err(e) = from_str_with_env(s, Path::new("m.yaml"), &env) {
            errors_seen += 1;
            for err in &e.0 {
                assert!(err.line >= 1 && err.column >= 1, "{err}");
                assert!(!err.key.is_empty() && !err.message.is_empty(), "{err}");
            }
        }
    }
    assert!(errors_seen > 100, "{errors_seen}");
}
