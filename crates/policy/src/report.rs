//! `chaperone policy eval`: a decision with timing and optional explanation.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use crate::set::{AUTHZ_ENTRY, AUTHZ_PACKAGE, SESSION_ENTRY, SESSION_PACKAGE};
use crate::value::{json_to_value, value_to_json};
use crate::{Decision, PolicySet, SessionDecision};

/// What `policy eval` prints (as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// The policy revision evaluated.
    pub revision: String,
    /// `"call"` or `"session"` (see [`is_session_input`]).
    pub kind: &'static str,
    /// The per-call decision (`data.chaperone.authz`); absent for session inputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// The session decision (`data.chaperone.session`); present for session inputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionDecision>,
    /// `true` when the call/session may proceed.
    pub permitted: bool,
    /// Wall time of the decision evaluation in microseconds.
    pub elapsed_us: f64,
    /// Present when explanation was requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explain: Option<Explanation>,
}

/// Per-rule values of the evaluated package and `print()` output.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// Package explained.
    pub package: String,
    /// Each rule of the package -> its value (`{"undefined": true}` or `{"error": ...}` when
    /// it did not produce one). Rules that contributed are those with a value.
    pub rules: BTreeMap<String, serde_json::Value>,
    /// Lines written by `print()` while evaluating the package's rules.
    pub prints: Vec<String>,
}

/// An input is a session input when it has no `request` member (or it is `null`): session
/// creation, delegation and the drift re-check carry only `identity`, `session`, `environment`.
pub fn is_session_input(input: &serde_json::Value) -> bool {
    input.get("request").is_none_or(serde_json::Value::is_null)
}

/// Evaluate `input` like the sidecar would and build a report.
pub fn eval_report(set: &PolicySet, input: &serde_json::Value, explain: bool) -> EvalReport {
    let session_kind = is_session_input(input);
    let value = json_to_value(input);
    let start = Instant::now();
    let (decision, session, permitted) = if session_kind {
        let s = set.eval_session(value.clone());
        let p = s.permitted();
        (None, Some(s), p)
    } else {
        let d = set.eval_call(value.clone());
        let p = d.permitted();
        (Some(d), None, p)
    };
    let elapsed_us = start.elapsed().as_secs_f64() * 1e6;
    let explain = explain.then(|| {
        let package = if session_kind {
            SESSION_PACKAGE
        } else {
            AUTHZ_PACKAGE
        };
        let prefix = format!("{package}.");
        let mut rules = BTreeMap::new();
        let entry = if session_kind {
            SESSION_ENTRY
        } else {
            AUTHZ_ENTRY
        };
        let (_, prints) = set.eval_rule_raw(entry, value.clone());
        for (path, _file) in set.rules() {
            let Some(name) = path.strip_prefix(&prefix) else {
                continue;
            };
            let (result, _) = set.eval_rule_raw(path, value.clone());
            let shown = match result {
                Ok(regorus::Value::Undefined) => serde_json::json!({"undefined": true}),
                Ok(v) => value_to_json(&v),
                Err(e) => serde_json::json!({"error": e}),
            };
            rules.insert(name.to_owned(), shown);
        }
        Explanation {
            package: package.to_owned(),
            rules,
            prints,
        }
    });
    EvalReport {
        revision: set.revision().to_owned(),
        kind: if session_kind { "session" } else { "call" },
        decision,
        session,
        permitted,
        elapsed_us,
        explain,
    }
}
