//! The sidecar's shared state and the operations that span components: ending
//! sessions (with credential revocation and audit), policy reload with the drift
//! re-check, SIGHUP config reload.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use chaperone_audit::{AuditEvent, AuditHandle};
use chaperone_config::{Config, OnAuditFailure};
use chaperone_credentials::{CredentialEvent, CredentialManager, CredentialObserver};
use chaperone_identity::{IdentityMap, ServerTls};
use chaperone_policy::{PolicyHandle, ReloadOutcome};
use chaperone_sessions::{EndReason, InMemorySessionStore, Session, SessionStore};
use http::HeaderName;

use crate::approvals::Approvals;
use crate::error::ProxyError;
use crate::forward::Upstreams;
use crate::input;
use crate::metrics::Metrics;
use crate::route::RouteTable;

/// Everything that SIGHUP may swap at once: routes, identities, credentials.
pub struct Routing {
    pub routes: RouteTable,
    pub identities: IdentityMap,
    pub credentials: Arc<CredentialManager>,
    /// Every header any configured credential injects (stripped from agent requests).
    pub inject_headers: Vec<HeaderName>,
    pub upstreams: Upstreams,
    /// `input.environment` but the time, as policy values.
    pub environment: crate::input::EnvironmentValues,
}

impl Routing {
    pub fn build(cfg: &Config) -> Result<Routing, ProxyError> {
        let credentials = CredentialManager::new(&cfg.credentials)?;
        Ok(Routing {
            routes: RouteTable::new(&cfg.routes),
            identities: IdentityMap::new(&cfg.identities)?,
            inject_headers: credentials.inject_headers(),
            credentials,
            upstreams: Upstreams::new(&cfg.routes)?,
            environment: crate::input::EnvironmentValues::new(&cfg.environment),
        })
    }
}

pub struct Sidecar {
    pub config: ArcSwap<Config>,
    pub routing: ArcSwap<Routing>,
    pub policy: Arc<PolicyHandle>,
    pub sessions: Arc<dyn SessionStore>,
    pub audit: AuditHandle,
    pub approvals: Arc<Approvals>,
    pub metrics: Arc<Metrics>,
    pub tls: Arc<ServerTls>,
    pub ready: AtomicBool,
    pub started: Instant,
    /// MCP tools hidden from a session's tools/list (denied on call too).
    pub hidden_tools: crate::pipeline::HiddenTools,
    /// TLS refusals by reason since the last `tls.refused` audit record.
    pub tls_refusals: parking_lot::Mutex<std::collections::HashMap<String, u64>>,
}

impl Sidecar {
    pub fn cfg(&self) -> arc_swap::Guard<Arc<Config>> {
        self.config.load()
    }

    /// Record an audit event. Returns false when the record could not be queued
    /// and `on_audit_failure: deny` is in force: the caller must refuse the call.
    pub fn audit(&self, ev: AuditEvent) -> bool {
        match self.audit.record(ev) {
            Ok(()) => true,
            Err(e) => {
                self.metrics.audit_dropped.inc();
                tracing::warn!(error = %e, "audit record could not be queued");
                self.cfg().audit.on_failure == OnAuditFailure::Allow
            }
        }
    }

    /// Is the audit sink able to take records (for deciding *before* forwarding)?
    pub fn audit_ok(&self) -> bool {
        self.audit.healthy() || self.cfg().audit.on_failure == OnAuditFailure::Allow
    }

    /// End a session and all its descendants: revoke their credentials, audit, count.
    pub async fn end_session(&self, id: &str, reason: EndReason) -> Vec<Arc<Session>> {
        let ended = self.sessions.end(id, reason.clone());
        self.after_end(&ended, &reason).await;
        ended
    }

    pub async fn after_end(&self, ended: &[Arc<Session>], reason: &EndReason) {
        let routing = self.routing.load();
        for s in ended {
            // The root gets the stated reason; descendants are ended because of it.
            let why = if s.id == ended[0].id {
                reason.as_str()
            } else {
                EndReason::ParentEnded.as_str()
            };
            routing.credentials.revoke_session(&s.id, why).await;
            self.metrics.sessions_ended.with_label_values(&[why]).inc();
            let mut ev = session_event("session.ended", s);
            ev.cause = Some(why.to_owned());
            if let EndReason::PolicyRevoked(r) = reason {
                ev.reasons = r.clone();
            }
            self.audit(ev);
            tracing::info!(session = %s.id, spiffe_id = %s.spiffe_id, cause = why, "session ended");
        }
        self.metrics
            .sessions_active
            .set(self.sessions.active_count() as i64);
    }

    /// Sweep expired sessions (run every `sessions.sweep_interval`).
    pub async fn sweep(&self) {
        let expired = self.sessions.sweep_expired(SystemTime::now());
        if !expired.is_empty() {
            self.after_end(&expired, &EndReason::Expired).await;
        }
    }

    /// Reload policies; on success re-check every live session ("policy drift").
    pub async fn reload_policy(&self) -> Result<(), String> {
        let previous_revision = self.policy.current().revision().to_owned();
        let outcome = match self.policy.reload() {
            Ok(set) => ReloadOutcome::Reloaded {
                previous_revision,
                revision: set.revision().to_owned(),
            },
            Err(e) => ReloadOutcome::Failed {
                revision: previous_revision,
                error: e.to_string(),
            },
        };
        self.after_policy_reload(&outcome).await;
        match outcome {
            ReloadOutcome::Reloaded { .. } => Ok(()),
            ReloadOutcome::Failed { error, .. } => Err(error),
        }
    }

    /// Account for a reload attempt (watcher or SIGHUP): metric, audit, log, and
    /// after a successful one the drift re-check of every live session.
    pub async fn after_policy_reload(&self, outcome: &ReloadOutcome) {
        let mut ev = AuditEvent::new("policy.reloaded");
        match outcome {
            ReloadOutcome::Reloaded {
                previous_revision,
                revision,
            } => {
                self.metrics.policy_reloads.with_label_values(&["ok"]).inc();
                ev.policy_revision = Some(revision.clone());
                ev.decision = Some("ok".into());
                let current = self.policy.current();
                ev.detail = Some(serde_json::json!({
                    "previous_revision": previous_revision,
                    "engine": current.engine_kind(),
                    "engine_fallback": current.engine_fallback(),
                }));
                self.audit(ev);
                tracing::info!(%revision, "policy reloaded");
                self.drift_check().await;
            }
            ReloadOutcome::Failed { revision, error } => {
                self.metrics
                    .policy_reloads
                    .with_label_values(&["error"])
                    .inc();
                ev.decision = Some("error".into());
                ev.reasons = vec![error.clone()];
                ev.policy_revision = Some(revision.clone());
                self.audit(ev);
                tracing::error!(%error, "policy reload failed; keeping the last good policy");
            }
        }
    }

    /// Re-evaluate `data.chaperone.session` for every live root session.
    pub async fn drift_check(&self) {
        let set = self.policy.current();
        let routing = self.routing.load();
        let cfg = self.cfg();
        let now = SystemTime::now();
        for s in self.sessions.list() {
            if s.is_ended() {
                continue;
            }
            let identity = identity_for(&routing.identities, &s.spiffe_id);
            let parent = s.parent.as_deref().and_then(|p| self.sessions.get(p));
            let view = s.recheck_view(parent.as_deref(), now);
            let input = crate::session_api::session_input_raw(&cfg, identity, view, now);
            let d = set.eval_session(input);
            if !(d.allow && d.deny.is_empty() && d.error.is_none()) {
                tracing::warn!(session = %s.id, reasons = ?d.deny, error = ?d.error, "session no longer allowed by policy");
                self.end_session(&s.id, EndReason::PolicyDrift).await;
            }
        }
    }

    /// SIGHUP: re-read the config file; swap routes, identities and credentials.
    /// Keys that need a restart (listen, admin, tls, audit) are reported if changed.
    pub async fn reload_config(&self) -> Result<(), String> {
        let path = self.cfg().source.clone();
        let new = chaperone_config::load(&path).map_err(|e| e.to_string())?;
        let old = self.cfg();
        let mut restart = Vec::new();
        if new.listen != old.listen {
            restart.push("listen");
        }
        if new.admin != old.admin {
            restart.push("admin");
        }
        if new.tls.cert != old.tls.cert
            || new.tls.key != old.tls.key
            || new.tls.bundle != old.tls.bundle
        {
            restart.push("tls");
        }
        if format!("{:?}", new.audit) != format!("{:?}", old.audit) {
            restart.push("audit");
        }
        if !restart.is_empty() {
            tracing::warn!(keys = ?restart, "config keys changed that only take effect after a restart");
        }
        let routing = Routing::build(&new).map_err(|e| e.to_string())?;
        let credentials_changed =
            format!("{:?}", new.credentials) != format!("{:?}", old.credentials);
        let old_routing = self.routing.swap(Arc::new(routing));
        if credentials_changed {
            // Live sessions get fresh credentials from the new providers on their next call.
            old_routing
                .credentials
                .shutdown(Duration::from_secs(5))
                .await;
        }
        self.config.store(Arc::new(new));
        tracing::info!("config reloaded (routes, identities, credentials)");
        self.reload_policy().await
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// `input.identity` for a SPIFFE ID string (sessions store IDs as strings).
pub fn identity_for(identities: &IdentityMap, spiffe_id: &str) -> regorus::Value {
    match chaperone_identity::SpiffeId::parse(spiffe_id) {
        Ok(id) => {
            let empty = chaperone_config::JsonMap::new();
            let attrs = identities.resolve(&id).unwrap_or(&empty);
            input::identity_value(id.as_str(), id.trust_domain(), id.path(), attrs)
        }
        Err(_) => regorus::Value::Null,
    }
}

pub fn session_event(kind: &str, s: &Session) -> AuditEvent {
    let mut ev = AuditEvent::new(kind);
    ev.spiffe_id = Some(s.spiffe_id.clone());
    ev.session_id = Some(s.id.clone());
    ev.task = Some(s.task.clone());
    ev.intent_summary = intent_summary(&s.intent);
    ev.delegation_chain = s.delegation_chain.clone();
    ev
}

pub fn intent_summary(intent: &serde_json::Value) -> Option<String> {
    intent
        .get("summary")
        .and_then(|v| v.as_str())
        .map(|s| s.chars().take(256).collect())
}

/// Observer that turns credential lifecycle events into audit records and metrics.
pub struct CredentialAudit {
    pub audit: AuditHandle,
    pub metrics: Arc<Metrics>,
}

impl CredentialObserver for CredentialAudit {
    fn issued(&self, ev: &CredentialEvent, latency: Duration) {
        self.metrics
            .credentials_issued
            .with_label_values(&[ev.provider])
            .inc();
        self.metrics
            .credential_issue_seconds
            .with_label_values(&[ev.provider])
            .observe(latency.as_secs_f64());
        let mut a = AuditEvent::new("credential.issued");
        a.credential = Some(ev.name.clone());
        a.credential_id = Some(ev.id.clone());
        a.provider = Some(ev.provider.to_owned());
        a.session_id = ev.session_id.clone();
        a.spiffe_id = Some(ev.spiffe_id.clone());
        a.latency_ms = Some(latency.as_secs_f64() * 1000.0);
        if self.audit.record(a).is_err() {
            self.metrics.audit_dropped.inc();
        }
    }

    fn revoked(&self, ev: &CredentialEvent, reason: &str, ok: bool) {
        self.metrics
            .credentials_revoked
            .with_label_values(&[ev.provider, reason])
            .inc();
        let mut a = AuditEvent::new("credential.revoked");
        a.credential = Some(ev.name.clone());
        a.credential_id = Some(ev.id.clone());
        a.provider = Some(ev.provider.to_owned());
        a.session_id = ev.session_id.clone();
        a.spiffe_id = Some(ev.spiffe_id.clone());
        a.cause = Some(reason.to_owned());
        a.decision = Some(if ok { "revoked" } else { "revoke_failed" }.to_owned());
        if self.audit.record(a).is_err() {
            self.metrics.audit_dropped.inc();
        }
    }

    fn revoke_failed(&self, ev: &CredentialEvent, error: &str, will_retry: bool) {
        self.metrics
            .credential_revoke_failures
            .with_label_values(&[ev.provider])
            .inc();
        tracing::warn!(credential = %ev.name, id = %ev.id, provider = ev.provider, error, will_retry, "credential revocation failed");
    }
}

/// Build the in-memory session store (the shared-store seam is the trait).
pub fn session_store() -> Arc<dyn SessionStore> {
    Arc::new(InMemorySessionStore::new())
}
