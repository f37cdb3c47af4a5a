//! A task session and its live statistics.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{json, Value};

use crate::token::TokenDigest;
use crate::{rfc3339, unix_secs};

/// Width of the sliding window behind `requests_last_minute`, in one-second buckets.
const WINDOW_SECS: u64 = 60;
/// Distinct route names tracked per session (routes come from configuration; this
/// bound only protects memory if a caller passes unbounded names).
pub(crate) const MAX_ROUTES: usize = 1024;
/// Distinct data domains tracked per session.
pub(crate) const MAX_DATA_DOMAINS: usize = 256;

/// Why a session ended. Carried in audit records (`cause`) and metrics labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The agent ended its own session (`DELETE /.chaperone/v1/sessions/current`).
    Deleted,
    /// The session's TTL passed.
    Expired,
    /// An operator revoked it (admin API / CLI).
    OperatorRevoked,
    /// Policy's `revoke_session` rule fired, with its reasons.
    PolicyRevoked(Vec<String>),
    /// After a policy reload `chaperone.session` no longer allows the session.
    PolicyDrift,
    /// An ancestor session ended.
    ParentEnded,
    /// The sidecar is shutting down.
    Shutdown,
}

impl EndReason {
    /// Stable snake_case name: `deleted`, `expired`, `operator_revoked`,
    /// `revoke_session`, `policy_drift`, `parent_ended`, `shutdown`.
    pub fn as_str(&self) -> &'static str {
        match self {
            EndReason::Deleted => "deleted",
            EndReason::Expired => "expired",
            EndReason::OperatorRevoked => "operator_revoked",
            EndReason::PolicyRevoked(_) => "revoke_session",
            EndReason::PolicyDrift => "policy_drift",
            EndReason::ParentEnded => "parent_ended",
            EndReason::Shutdown => "shutdown",
        }
    }

    /// Policy reasons for [`EndReason::PolicyRevoked`]; empty otherwise.
    pub fn reasons(&self) -> &[String] {
        match self {
            EndReason::PolicyRevoked(r) => r,
            _ => &[],
        }
    }

    /// The reason descendants of a session ended for `self` get: `expired` stays
    /// `expired` (a child never outlives its parent), `shutdown` stays `shutdown`,
    /// everything else becomes `parent_ended`.
    pub fn for_descendants(&self) -> EndReason {
        match self {
            EndReason::Expired => EndReason::Expired,
            EndReason::Shutdown => EndReason::Shutdown,
            _ => EndReason::ParentEnded,
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of a session's statistics, shaped as `input.session.stats` (SPEC §5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionStats {
    /// Calls accounted to the session (allowed and refused).
    pub requests: u64,
    /// Calls that were not allowed (denied, approval denied/timed out, errors).
    pub denied: u64,
    /// Calls per route name.
    pub routes: BTreeMap<String, u64>,
    /// Data domains (route label `data_domain`) the session touched, sorted.
    pub data_domains: Vec<String>,
    /// Calls in the 60 seconds up to the snapshot time.
    pub requests_last_minute: u64,
}

#[derive(Clone, Copy, Default)]
struct Bucket {
    second: u64,
    count: u64,
}

struct Stats {
    requests: u64,
    denied: u64,
    routes: BTreeMap<String, u64>,
    data_domains: BTreeSet<String>,
    window: [Bucket; WINDOW_SECS as usize],
}

impl Stats {
    fn new() -> Self {
        Self {
            requests: 0,
            denied: 0,
            routes: BTreeMap::new(),
            data_domains: BTreeSet::new(),
            window: [Bucket::default(); WINDOW_SECS as usize],
        }
    }

    fn last_minute(&self, now: SystemTime) -> u64 {
        let now_s = unix_secs(now);
        self.window
            .iter()
            .filter(|b| b.count > 0 && b.second <= now_s && now_s - b.second < WINDOW_SECS)
            .map(|b| b.count)
            .sum()
    }
}

pub(crate) struct State {
    stats: Stats,
    ended: Option<(EndReason, SystemTime)>,
    pub(crate) children: Vec<String>,
}

impl State {
    pub(crate) fn ended_is_some(&self) -> bool {
        self.ended.is_some()
    }
}

/// A live (or just-ended) task session. Shared as `Arc<Session>`.
///
/// The identity and grant fields are immutable after creation; statistics and the
/// ended state live behind an internal lock and change only through the store
/// ([`crate::SessionStore::record_call`], [`crate::SessionStore::end`]). A session never
/// holds its token, only the token's digest.
pub struct Session {
    /// Non-secret session id: `ses_` + 32 lowercase hex digits (128 random bits).
    pub id: String,
    /// SPIFFE ID the session (and its token) is bound to.
    pub spiffe_id: String,
    /// The declared task.
    pub task: String,
    /// The declared intent (free-form JSON).
    pub intent: Value,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Creation time.
    pub created_at: SystemTime,
    /// Expiry time (`created_at + ttl`).
    pub expires_at: SystemTime,
    /// Parent session id for a delegated session.
    pub parent: Option<String>,
    /// SPIFFE IDs from the root session's identity to this session's (inclusive).
    pub delegation_chain: Vec<String>,
    /// Delegation depth: 0 for a root session, parent's depth + 1 for a delegation.
    pub depth: u32,
    pub(crate) token_digest: TokenDigest,
    pub(crate) state: Mutex<State>,
    /// A slot for a consumer's derived, immutable view of this session (the proxy keeps
    /// the per-session part of the policy input here, built once). Never a secret.
    pub derived: std::sync::OnceLock<std::sync::Arc<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("spiffe_id", &self.spiffe_id)
            .field("task", &self.task)
            .field("scopes", &self.scopes)
            .field("parent", &self.parent)
            .field("depth", &self.depth)
            .field("ended", &self.end_reason())
            .finish_non_exhaustive()
    }
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: String,
        spiffe_id: String,
        task: String,
        intent: Value,
        scopes: Vec<String>,
        created_at: SystemTime,
        expires_at: SystemTime,
        parent: Option<String>,
        delegation_chain: Vec<String>,
        depth: u32,
        token_digest: TokenDigest,
    ) -> Self {
        Self {
            id,
            spiffe_id,
            task,
            intent,
            scopes,
            created_at,
            expires_at,
            parent,
            delegation_chain,
            depth,
            token_digest,
            derived: std::sync::OnceLock::new(),
            state: Mutex::new(State {
                stats: Stats::new(),
                ended: None,
                children: Vec::new(),
            }),
        }
    }

    /// The TTL the session was granted (`expires_at - created_at`).
    pub fn ttl(&self) -> Duration {
        self.expires_at
            .duration_since(self.created_at)
            .unwrap_or_default()
    }

    /// Has the session's TTL passed at `now`?
    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.expires_at
    }

    /// Has the session been ended (by any [`EndReason`])?
    pub fn is_ended(&self) -> bool {
        self.state.lock().ended.is_some()
    }

    /// Usable at `now`: neither ended nor expired.
    pub fn is_active(&self, now: SystemTime) -> bool {
        !self.is_expired(now) && !self.is_ended()
    }

    /// Why the session ended, if it has.
    pub fn end_reason(&self) -> Option<EndReason> {
        self.state.lock().ended.as_ref().map(|(r, _)| r.clone())
    }

    /// When the session ended, if it has.
    pub fn ended_at(&self) -> Option<SystemTime> {
        self.state.lock().ended.as_ref().map(|(_, t)| *t)
    }

    /// Snapshot of the statistics at `now`.
    pub fn stats(&self, now: SystemTime) -> SessionStats {
        let st = self.state.lock();
        SessionStats {
            requests: st.stats.requests,
            denied: st.stats.denied,
            routes: st.stats.routes.clone(),
            data_domains: st.stats.data_domains.iter().cloned().collect(),
            requests_last_minute: st.stats.last_minute(now),
        }
    }

    /// `input.session` exactly as SPEC §5 defines it:
    /// `{"id", "task", "intent", "scopes", "created_at", "expires_at", "delegation_chain",
    ///   "stats": {"requests", "denied", "routes", "data_domains", "requests_last_minute"}}`.
    /// Times are RFC 3339 UTC with whole seconds. Stats cover calls accounted before `now`
    /// (the call being decided is accounted after its decision).
    pub fn policy_view(&self, now: SystemTime) -> Value {
        json!({
            "id": self.id,
            "task": self.task,
            "intent": self.intent,
            "scopes": self.scopes,
            "created_at": rfc3339(self.created_at),
            "expires_at": rfc3339(self.expires_at),
            "delegation_chain": self.delegation_chain,
            "stats": self.stats(now),
        })
    }

    /// Operator view (admin API `GET /v1/sessions`): the policy view plus `spiffe_id`,
    /// `depth`, `parent`, `state` (`active`/`ended`) and, once ended, `ended_at`,
    /// `end_reason` and `end_reasons`. Never contains the token or its digest.
    pub fn admin_view(&self) -> Value {
        self.admin_view_at(SystemTime::now())
    }

    /// [`Session::admin_view`] with an explicit clock.
    pub fn admin_view_at(&self, now: SystemTime) -> Value {
        let mut v = self.policy_view(now);
        let ended = self.state.lock().ended.clone();
        if let Value::Object(m) = &mut v {
            m.insert("spiffe_id".into(), json!(self.spiffe_id));
            m.insert("depth".into(), json!(self.depth));
            m.insert("parent".into(), json!(self.parent));
            match ended {
                None => {
                    let state = if self.is_expired(now) {
                        "expired"
                    } else {
                        "active"
                    };
                    m.insert("state".into(), json!(state));
                }
                Some((reason, at)) => {
                    m.insert("state".into(), json!("ended"));
                    m.insert("ended_at".into(), json!(rfc3339(at)));
                    m.insert("end_reason".into(), json!(reason.as_str()));
                    m.insert("end_reasons".into(), json!(reason.reasons()));
                }
            }
        }
        v
    }

    /// `input.session` for a `chaperone.session` re-check of this live session (SPEC §5
    /// "drift re-check"): `{"id", "task", "intent", "scopes", "ttl", "parent",
    /// "delegation_chain"}` where `ttl` is the granted TTL as `"<seconds>s"` and
    /// `parent` is the parent's [`Session::policy_view`] (or null).
    pub fn recheck_view(&self, parent: Option<&Session>, now: SystemTime) -> Value {
        json!({
            "id": self.id,
            "task": self.task,
            "intent": self.intent,
            "scopes": self.scopes,
            "ttl": format!("{}s", self.ttl().as_secs()),
            "parent": parent.map(|p| p.policy_view(now)),
            "delegation_chain": self.delegation_chain,
        })
    }

    /// Account one call. Ended sessions are not updated.
    pub(crate) fn record(
        &self,
        route: &str,
        data_domain: Option<&str>,
        denied: bool,
        now: SystemTime,
    ) {
        let mut st = self.state.lock();
        if st.ended.is_some() {
            return;
        }
        let s = &mut st.stats;
        s.requests = s.requests.saturating_add(1);
        if denied {
            s.denied = s.denied.saturating_add(1);
        }
        if let Some(n) = s.routes.get_mut(route) {
            *n = n.saturating_add(1);
        } else if s.routes.len() < MAX_ROUTES {
            s.routes.insert(route.to_owned(), 1);
        }
        if let Some(d) = data_domain {
            if !s.data_domains.contains(d) && s.data_domains.len() < MAX_DATA_DOMAINS {
                s.data_domains.insert(d.to_owned());
            }
        }
        let sec = unix_secs(now);
        let b = &mut s.window[(sec % WINDOW_SECS) as usize];
        if b.second != sec {
            *b = Bucket {
                second: sec,
                count: 0,
            };
        }
        b.count = b.count.saturating_add(1);
    }

    /// Mark ended. Returns the child ids to cascade to, or `None` if already ended.
    pub(crate) fn mark_ended(&self, reason: EndReason, at: SystemTime) -> Option<Vec<String>> {
        let mut st = self.state.lock();
        if st.ended.is_some() {
            return None;
        }
        st.ended = Some((reason, at));
        Some(std::mem::take(&mut st.children))
    }
}
