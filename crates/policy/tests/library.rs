//! Runs the example policy library's own Rego tests.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

fn policies_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

#[test]
fn example_library_tests_all_pass() {
    let mut out = Vec::new();
    let summary = chaperone_policy::run_tests(&[policies_dir()], None, true, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    println!("{text}");
    assert_eq!(summary.failed, 0, "{text}");
    assert!(
        summary.passed >= 40,
        "only {} tests ran:\n{text}",
        summary.passed
    );
    assert!(text.ends_with(&format!("{} passed, 0 failed\n", summary.passed)));
}
