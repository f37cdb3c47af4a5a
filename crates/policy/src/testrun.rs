//! `chaperone policy test`: run every `test_*` rule.

use std::io::Write;
use std::path::PathBuf;

use regorus::Value;
use serde::Serialize;

use crate::set::{compile, load_engine};
use crate::value::value_to_json;
use crate::{PolicyError, PolicyOptions};

/// Result counts of a test run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct TestSummary {
    /// Tests whose result was exactly `true`.
    pub passed: usize,
    /// Tests that were undefined, not `true`, or errored.
    pub failed: usize,
}

/// Load every `.rego` file (including `*_test.rego`) and data file under `dirs`, run every
/// rule whose last path segment starts with `test_` (in any package) whose full path
/// `data.pkg.rule` matches `filter`, and write `FAIL <file>: data.<pkg>.<rule> (<why>)`
/// per failure (`PASS ...` per pass when `verbose`) and a closing `N passed, M failed`.
///
/// Returns an error only when the policies fail to load or compile (or output fails).
pub fn run_tests(
    dirs: &[PathBuf],
    filter: Option<&regex::Regex>,
    verbose: bool,
    out: &mut dyn Write,
) -> Result<TestSummary, PolicyError> {
    let opts = PolicyOptions {
        // Tests may do more work than a single decision; keep them bounded all the same.
        eval_timeout: std::time::Duration::from_secs(5),
        // Tests use `with`, which only the interpreter implements.
        engine: crate::EngineChoice::Interpreter,
    };
    let mut loaded = load_engine(dirs, true, &opts)?;
    let rules = compile(&mut loaded.engine)?;
    let mut summary = TestSummary::default();
    for (path, file) in &rules {
        let last = path.rsplit('.').next().unwrap_or_default();
        if !last.starts_with("test_") {
            continue;
        }
        if filter.is_some_and(|re| !re.is_match(path)) {
            continue;
        }
        let mut engine = loaded.engine.clone();
        engine.set_input(Value::Undefined);
        let result = engine.eval_rule(path.clone());
        let w = |out: &mut dyn Write, line: String| {
            writeln!(out, "{line}").map_err(PolicyError::Output)
        };
        match result {
            Ok(Value::Bool(true)) => {
                summary.passed += 1;
                if verbose {
                    w(out, format!("PASS {file}: {path}"))?;
                }
            }
            Ok(Value::Undefined) => {
                summary.failed += 1;
                w(out, format!("FAIL {file}: {path} (undefined)"))?;
            }
            Ok(v) => {
                summary.failed += 1;
                w(out, format!("FAIL {file}: {path} ({})", value_to_json(&v)))?;
            }
            Err(e) => {
                summary.failed += 1;
                w(out, format!("FAIL {file}: {path} (error: {e})"))?;
            }
        }
        if verbose {
            for p in engine.take_prints().unwrap_or_default() {
                w(out, format!("  print: {p}"))?;
            }
        }
    }
    writeln!(out, "{} passed, {} failed", summary.passed, summary.failed)
        .map_err(PolicyError::Output)?;
    Ok(summary)
}
