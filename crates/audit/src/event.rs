//! The audit record.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Event kinds (the `event` field).
pub mod kind {
    /// A session was created (including delegations).
    pub const SESSION_CREATED: &str = "session.created";
    /// A session ended; `cause` says why.
    pub const SESSION_ENDED: &str = "session.ended";
    /// A call was decided (allow/deny/approval/error).
    pub const REQUEST_DECIDED: &str = "request.decided";
    /// A credential was issued for a session or call.
    pub const CREDENTIAL_ISSUED: &str = "credential.issued";
    /// A credential was revoked.
    pub const CREDENTIAL_REVOKED: &str = "credential.revoked";
    /// A call is held for human approval.
    pub const APPROVAL_REQUESTED: &str = "approval.requested";
    /// A held call was approved, denied or timed out.
    pub const APPROVAL_RESOLVED: &str = "approval.resolved";
    /// Policy was reloaded (`decision`: `ok` or `error`).
    pub const POLICY_RELOADED: &str = "policy.reloaded";
    /// Aggregate of refused TLS handshakes per reason over an interval.
    pub const TLS_REFUSED: &str = "tls.refused";
    /// The writer started (first record of a chain, and after each restart).
    pub const AUDIT_STARTED: &str = "audit.started";
    /// First record of a file created by rotation; chains to the previous file.
    pub const AUDIT_ROTATED: &str = "audit.rotated";
}

/// Longest `task` / `intent_summary` kept in a record (longer values are cut at a
/// character boundary and marked with `…`).
pub const MAX_TEXT: usize = 1024;

/// One audit record. Optional fields are omitted when `None` (or empty).
///
/// The writer adds `seq`, `prev_hash` and `hash`. There is deliberately no field for a
/// credential *value*: only its configured name (`credential`) and a non-secret id
/// (`credential_id`, e.g. a JWT `jti`, a Vault accessor or lease id). `detail` is for
/// extras; members whose key looks secret (`token`, `secret`, `password`,
/// `authorization`, `cookie`, `api_key`, `private_key`, ...) are replaced by
/// `"[redacted]"` when written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// RFC 3339 UTC with milliseconds, e.g. `2026-12-01T10:00:00.123Z`.
    pub time: String,
    /// Event kind, one of [`kind`].
    pub event: String,
    /// Request id (also in the refusal body and logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Caller's SPIFFE ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// Session id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The session's declared task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// `intent.summary` of the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent_summary: Option<String>,
    /// SPIFFE IDs root..self of a delegated session.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegation_chain: Vec<String>,
    /// Route name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// HTTP method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Canonical request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// MCP tool for `tools/call`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_tool: Option<String>,
    /// `allow`, `deny`, `approval`, `error` (request), `ok`/`error` (reload),
    /// `approved`/`denied`/`timeout` (approval), ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// HTTP status returned to the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Policy reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// Revision of the policy set that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_revision: Option<String>,
    /// Latency in milliseconds (rounded to 3 decimals when written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Configured credential name (never the value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// Non-secret credential id (jti, accessor, lease id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<String>,
    /// Credential provider (`jwt`, `vault`, `oauth2`, `static`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Why a session ended or a credential was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// Approval id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// Who resolved an approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    /// Extras (never secrets; secret-looking keys are redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

/// The current time as RFC 3339 UTC with exactly three fractional digits.
pub fn now_rfc3339_ms() -> String {
    use std::cell::RefCell;
    use std::fmt::Write as _;
    // The `YYYY-MM-DDTHH:MM:SS` part changes once a second: format it once per second
    // (per thread) and append the milliseconds.
    thread_local! {
        static SECOND: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }
    let now = time::OffsetDateTime::now_utc();
    let unix = now.unix_timestamp();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != unix {
            let fmt =
                time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
            match now.format(&fmt) {
                Ok(s) => *cached = (unix, s),
                Err(_) => return "1970-01-01T00:00:00.000Z".to_owned(),
            }
        }
        let mut out = String::with_capacity(24);
        out.push_str(&cached.1);
        let _ = write!(out, ".{:03}Z", now.millisecond());
        out
    })
}

impl AuditEvent {
    /// A record of kind `event` stamped with the current time.
    pub fn new(event: &str) -> Self {
        Self {
            time: now_rfc3339_ms(),
            event: event.to_owned(),
            ..Self::default()
        }
    }

    /// `session.created` for `session_id` of `spiffe_id`.
    pub fn session_created(spiffe_id: &str, session_id: &str, task: &str) -> Self {
        let mut e = Self::new(kind::SESSION_CREATED);
        e.spiffe_id = Some(spiffe_id.to_owned());
        e.session_id = Some(session_id.to_owned());
        e.task = Some(task.to_owned());
        e
    }

    /// `session.ended` with its `cause` (e.g. `expired`, `revoke_session`).
    pub fn session_ended(session_id: &str, cause: &str) -> Self {
        let mut e = Self::new(kind::SESSION_ENDED);
        e.session_id = Some(session_id.to_owned());
        e.cause = Some(cause.to_owned());
        e
    }

    /// `request.decided` with `decision` (`allow`, `deny`, `approval`, `error`).
    pub fn request_decided(request_id: &str, decision: &str) -> Self {
        let mut e = Self::new(kind::REQUEST_DECIDED);
        e.request_id = Some(request_id.to_owned());
        e.decision = Some(decision.to_owned());
        e
    }

    /// `credential.issued`: name, non-secret id, provider.
    pub fn credential_issued(credential: &str, credential_id: &str, provider: &str) -> Self {
        let mut e = Self::new(kind::CREDENTIAL_ISSUED);
        e.credential = Some(credential.to_owned());
        e.credential_id = Some(credential_id.to_owned());
        e.provider = Some(provider.to_owned());
        e
    }

    /// `credential.revoked`: name, non-secret id, provider and cause.
    pub fn credential_revoked(
        credential: &str,
        credential_id: &str,
        provider: &str,
        cause: &str,
    ) -> Self {
        let mut e = Self::new(kind::CREDENTIAL_REVOKED);
        e.credential = Some(credential.to_owned());
        e.credential_id = Some(credential_id.to_owned());
        e.provider = Some(provider.to_owned());
        e.cause = Some(cause.to_owned());
        e
    }

    /// `approval.requested`.
    pub fn approval_requested(approval_id: &str) -> Self {
        let mut e = Self::new(kind::APPROVAL_REQUESTED);
        e.approval_id = Some(approval_id.to_owned());
        e.decision = Some("approval".to_owned());
        e
    }

    /// `approval.resolved` with `decision` (`approved`, `denied`, `timeout`) and approver.
    pub fn approval_resolved(approval_id: &str, decision: &str, approver: Option<&str>) -> Self {
        let mut e = Self::new(kind::APPROVAL_RESOLVED);
        e.approval_id = Some(approval_id.to_owned());
        e.decision = Some(decision.to_owned());
        e.approver = approver.map(str::to_owned);
        e
    }

    /// `policy.reloaded`: `decision` is `ok` or `error` (with the error as a reason).
    pub fn policy_reloaded(revision: &str, error: Option<&str>) -> Self {
        let mut e = Self::new(kind::POLICY_RELOADED);
        e.policy_revision = Some(revision.to_owned());
        e.decision = Some(if error.is_some() { "error" } else { "ok" }.to_owned());
        e.reasons = error.map(|s| vec![s.to_owned()]).unwrap_or_default();
        e
    }

    /// `tls.refused`: `count` handshakes refused for `reason` within `interval_secs`.
    pub fn tls_refused(reason: &str, count: u64, interval_secs: u64) -> Self {
        let mut e = Self::new(kind::TLS_REFUSED);
        e.reasons = vec![reason.to_owned()];
        e.detail = Some(json!({"count": count, "interval_secs": interval_secs}));
        e
    }

    /// Add one member to `detail` (turning it into an object if needed).
    pub fn with_detail(mut self, key: &str, value: Value) -> Self {
        match &mut self.detail {
            Some(Value::Object(m)) => {
                m.insert(key.to_owned(), value);
            }
            _ => {
                let mut m = serde_json::Map::new();
                m.insert(key.to_owned(), value);
                self.detail = Some(Value::Object(m));
            }
        }
        self
    }

    /// The record as the writer stores it (before `seq`/`prev_hash`/`hash`): long
    /// texts cut, latency rounded, secret-looking `detail` keys redacted.
    #[cfg(test)]
    pub(crate) fn into_record(self) -> Result<Value, crate::AuditError> {
        let mut e = self;
        e.normalise();
        serde_json::to_value(&e).map_err(|err| crate::AuditError::Encode(err.to_string()))
    }
}

/// One member of a record, borrowed for the canonical writer.
pub(crate) enum Field<'a> {
    Str(&'a str),
    Strs(&'a [String]),
    U64(u64),
    F64(f64),
    Json(&'a Value),
}

impl AuditEvent {
    /// Normalise in place before writing: long texts cut, latency rounded to 3 decimals,
    /// secret-looking `detail` keys redacted.
    pub(crate) fn normalise(&mut self) {
        if let Some(t) = self.task.take() {
            self.task = Some(cut(t, MAX_TEXT));
        }
        if let Some(t) = self.intent_summary.take() {
            self.intent_summary = Some(cut(t, MAX_TEXT));
        }
        self.latency_ms = self
            .latency_ms
            .filter(|l| l.is_finite())
            .map(|l| (l * 1000.0).round() / 1000.0);
        if let Some(d) = &mut self.detail {
            scrub(d);
        }
    }

    /// The record's members (as serde would serialize them: `None` and empty lists
    /// omitted), plus `seq` and `prev_hash`, in canonical (byte-wise sorted) key order.
    pub(crate) fn members<'a>(
        &'a self,
        seq: u64,
        prev_hash: &'a str,
    ) -> Vec<(&'static str, Field<'a>)> {
        let mut m: Vec<(&'static str, Field<'a>)> = Vec::with_capacity(26);
        let mut opt = |k: &'static str, v: &'a Option<String>| {
            if let Some(v) = v {
                m.push((k, Field::Str(v)));
            }
        };
        opt("approval_id", &self.approval_id);
        opt("approver", &self.approver);
        opt("cause", &self.cause);
        opt("credential", &self.credential);
        opt("credential_id", &self.credential_id);
        opt("decision", &self.decision);
        opt("intent_summary", &self.intent_summary);
        opt("mcp_tool", &self.mcp_tool);
        opt("method", &self.method);
        opt("path", &self.path);
        opt("policy_revision", &self.policy_revision);
        opt("provider", &self.provider);
        opt("request_id", &self.request_id);
        opt("route", &self.route);
        opt("session_id", &self.session_id);
        opt("spiffe_id", &self.spiffe_id);
        opt("task", &self.task);
        m.push(("event", Field::Str(&self.event)));
        m.push(("time", Field::Str(&self.time)));
        m.push(("prev_hash", Field::Str(prev_hash)));
        m.push(("seq", Field::U64(seq)));
        if !self.delegation_chain.is_empty() {
            m.push(("delegation_chain", Field::Strs(&self.delegation_chain)));
        }
        if !self.reasons.is_empty() {
            m.push(("reasons", Field::Strs(&self.reasons)));
        }
        if let Some(s) = self.status {
            m.push(("status", Field::U64(u64::from(s))));
        }
        if let Some(l) = self.latency_ms {
            m.push(("latency_ms", Field::F64(l)));
        }
        if let Some(d) = &self.detail {
            m.push(("detail", Field::Json(d)));
        }
        m.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        m
    }
}

fn cut(s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = s[..end].to_owned();
    out.push('…');
    out
}

fn secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    [
        "token",
        "secret",
        "password",
        "passwd",
        "authorization",
        "cookie",
        "api_key",
        "apikey",
        "private_key",
        "credential_value",
    ]
    .iter()
    .any(|p| k.contains(p))
}

fn scrub(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if secret_key(k) {
                    *x = Value::String("[redacted]".to_owned());
                } else {
                    scrub(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(scrub),
        _ => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn record_shape() {
        let mut e = AuditEvent::request_decided("req-1", "deny");
        e.reasons = vec!["not allowed".into()];
        e.latency_ms = Some(1.234_567_8);
        e.task = Some("é".repeat(2000));
        let e = e
            .with_detail("x_vault_token", json!("hvs.SECRET"))
            .with_detail("nested", json!([{"Password": "p"}, {"ok": 1}]));
        let v = e.clone().into_record().unwrap();
        assert_eq!(v["event"], "request.decided");
        assert_eq!(v["latency_ms"], json!(1.235));
        assert!(v.get("route").is_none(), "None fields are omitted");
        assert!(
            v.get("delegation_chain").is_none(),
            "empty lists are omitted"
        );
        assert_eq!(v["detail"]["x_vault_token"], "[redacted]");
        assert_eq!(v["detail"]["nested"][0]["Password"], "[redacted]");
        assert_eq!(v["detail"]["nested"][1]["ok"], 1);
        let task = v["task"].as_str().unwrap();
        assert!(task.len() <= MAX_TEXT + 3 && task.ends_with('…'));
        assert!(!v.to_string().contains("SECRET"));
        let t = &e.time;
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[19] == b'.');
    }
}
