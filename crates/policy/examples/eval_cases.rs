//! Evaluate conformance cases: `eval_cases POLICY_DIR CASES.json` prints one JSON object
//! `{"name": {"authz": Decision, "session": SessionDecision}}` for every case, with each
//! case's `input` evaluated against both packages.

use std::path::PathBuf;
use std::process::ExitCode;

use chaperone_policy::{json_to_value, PolicySet};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(cases)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: eval_cases POLICY_DIR CASES.json");
        return ExitCode::from(2);
    };
    let set = match PolicySet::load(&[PathBuf::from(dir)]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let text = match std::fs::read_to_string(cases) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{cases}: {e}");
            return ExitCode::from(1);
        }
    };
    let cases: Vec<serde_json::Value> = match serde_json::from_str(&text) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{cases}: {e}");
            return ExitCode::from(1);
        }
    };
    let mut out = serde_json::Map::new();
    for (i, case) in cases.iter().enumerate() {
        let name = case
            .get("name")
            .and_then(|n| n.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| format!("case-{i}"));
        let input = case
            .get("input")
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        let v = json_to_value(&input);
        let authz = set.eval_call(v.clone());
        let session = set.eval_session(v);
        out.insert(
            name,
            serde_json::json!({"authz": authz, "session": session}),
        );
    }
    match serde_json::to_string_pretty(&serde_json::Value::Object(out)) {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}
