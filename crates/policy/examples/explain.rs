//! `explain POLICY_DIR INPUT.json`: print the `eval_report` (with explanation) for one input,
//! what `chaperone policy eval --explain` prints.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(input)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: explain POLICY_DIR INPUT.json");
        return ExitCode::from(2);
    };
    let set = match chaperone_policy::PolicySet::load(&[PathBuf::from(dir)]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let input: serde_json::Value = match std::fs::read_to_string(input)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{input}: {e}");
            return ExitCode::from(1);
        }
    };
    let report = chaperone_policy::eval_report(&set, &input, true);
    match serde_json::to_string_pretty(&report) {
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
