//! [`CredentialManager`]: issue lazily, reuse per session, revoke when the task ends.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use chaperone_config::{Credential, OAuth2Grant, Provider};
use dashmap::DashMap;
use http::{HeaderName, HeaderValue};
use tokio::sync::{Mutex, Notify};

use crate::jwt::JwtMinter;
use crate::oauth2::OAuth2Issuer;
use crate::provider::{CredentialProvider, IssueContext, Issued, RevocationHandle};
use crate::static_file::StaticSecret;
use crate::template::Template;
use crate::vault::VaultIssuer;
use crate::CredentialError;

/// Non-secret description of a credential, for audit records and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialEvent {
    /// Credential name (key under `credentials`).
    pub name: String,
    /// Provider kind.
    pub provider: &'static str,
    /// Non-secret id (jti, accessor, lease id, ...).
    pub id: String,
    /// Session id; `None` for per-call credentials.
    pub session_id: Option<String>,
    /// The agent it was issued for.
    pub spiffe_id: String,
    /// When it expires.
    pub expires_at: SystemTime,
}

/// Receives credential lifecycle events (audit + metrics). Must not block.
pub trait CredentialObserver: Send + Sync {
    /// A credential was issued (`latency` = provider round trip).
    fn issued(&self, ev: &CredentialEvent, latency: Duration);
    /// A credential was revoked (`ok = false`: every attempt failed).
    fn revoked(&self, ev: &CredentialEvent, reason: &str, ok: bool);
    /// One revocation attempt failed.
    fn revoke_failed(&self, ev: &CredentialEvent, error: &str, will_retry: bool);
}

struct NoopObserver;

impl CredentialObserver for NoopObserver {
    fn issued(&self, _: &CredentialEvent, _: Duration) {}
    fn revoked(&self, _: &CredentialEvent, _: &str, _: bool) {}
    fn revoke_failed(&self, _: &CredentialEvent, _: &str, _: bool) {}
}

/// Tunables of the manager.
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    /// A cached session credential is reused only while it is valid for at least this long.
    pub min_remaining: Duration,
    /// Revocation attempts per credential (≥ 1).
    pub revoke_attempts: u32,
    /// Delay before the second attempt; doubles each time, capped at 10 s.
    pub revoke_backoff: Duration,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        ManagerOptions {
            min_remaining: Duration::from_secs(5),
            revoke_attempts: 5,
            revoke_backoff: Duration::from_millis(250),
        }
    }
}

struct Entry {
    provider: Arc<dyn CredentialProvider>,
    header: HeaderName,
    template: Template,
}

/// An issued credential plus its rendered header. Secrets are zeroized when the last
/// reference (cache, leases in flight, revocation task) is dropped.
struct Held {
    issued: Issued,
    value: HeaderValue,
    event: CredentialEvent,
    provider: Arc<dyn CredentialProvider>,
}

enum SlotState {
    Empty,
    Live(Arc<Held>),
    Closed,
}

struct Slot {
    state: Mutex<SlotState>,
}

/// Counts background revocations so `shutdown` can wait for them.
struct Tracker {
    pending: AtomicUsize,
    idle: Notify,
}

struct TrackGuard(Arc<Tracker>);

impl Drop for TrackGuard {
    fn drop(&mut self) {
        if self.0.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// State shared with leases and background tasks.
struct Shared {
    observer: RwLock<Arc<dyn CredentialObserver>>,
    tracker: Arc<Tracker>,
    opts: ManagerOptions,
}

impl Shared {
    fn observer(&self) -> Arc<dyn CredentialObserver> {
        match self.observer.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Revoke in the background (retry with exponential backoff, bounded attempts).
    fn spawn_revoke(
        self: &Arc<Self>,
        handle: &tokio::runtime::Handle,
        held: Arc<Held>,
        reason: String,
    ) {
        self.tracker.pending.fetch_add(1, Ordering::AcqRel);
        let guard = TrackGuard(self.tracker.clone());
        let shared = self.clone();
        handle.spawn(async move {
            let _guard = guard;
            shared.revoke_with_retry(&held, &reason).await;
        });
    }

    async fn revoke_with_retry(&self, held: &Held, reason: &str) {
        let attempts = self.opts.revoke_attempts.max(1);
        let mut delay = self.opts.revoke_backoff;
        for attempt in 1..=attempts {
            match held.provider.revoke(&held.issued).await {
                Ok(()) => {
                    tracing::debug!(credential = %held.event.name, id = %held.event.id, reason, "credential revoked");
                    self.observer().revoked(&held.event, reason, true);
                    return;
                }
                Err(e) => {
                    let will_retry = attempt < attempts;
                    let msg = e.to_string();
                    tracing::warn!(credential = %held.event.name, id = %held.event.id, attempt, will_retry, error = %msg, "credential revocation failed");
                    self.observer().revoke_failed(&held.event, &msg, will_retry);
                    if !will_retry {
                        self.observer().revoked(&held.event, reason, false);
                        return;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

/// Per-call revocation on drop.
struct PerCall {
    shared: Arc<Shared>,
    handle: tokio::runtime::Handle,
}

/// A credential ready to inject. For a session it is the session's shared credential
/// (revoked when the session ends); for a call without a session it is revoked when
/// the lease is dropped or [`Lease::release`]d.
pub struct Lease {
    held: Option<Arc<Held>>,
    header: HeaderName,
    per_call: Option<PerCall>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("header", &self.header)
            .field("event", &self.held.as_ref().map(|h| &h.event))
            .field("per_call", &self.per_call.is_some())
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// The header to inject; the value is marked sensitive (HPACK never-index, redacted in `Debug`).
    pub fn header(&self) -> (HeaderName, HeaderValue) {
        let value = self
            .held
            .as_ref()
            .map(|h| h.value.clone())
            .unwrap_or_else(|| HeaderValue::from_static(""));
        (self.header.clone(), value)
    }

    /// Non-secret description (name, provider, id, ...).
    pub fn event(&self) -> Option<&CredentialEvent> {
        self.held.as_ref().map(|h| &h.event)
    }

    /// The credential's non-secret id.
    pub fn id(&self) -> &str {
        self.held
            .as_ref()
            .map(|h| h.event.id.as_str())
            .unwrap_or("")
    }

    /// When the credential expires.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.held.as_ref().map(|h| h.event.expires_at)
    }

    /// Whether this is a per-call credential (revoked on release/drop).
    pub fn is_per_call(&self) -> bool {
        self.per_call.is_some()
    }

    /// Whether releasing this lease does anything at a provider: a per-call credential
    /// that must be revoked (Vault, OAuth2). A session's credential, or a per-call one
    /// whose revocation is forgetting (static, JWT), can be dropped as soon as its header
    /// is injected.
    pub fn needs_release(&self) -> bool {
        self.per_call.is_some()
            && self
                .held
                .as_ref()
                .is_some_and(|h| !matches!(h.issued.revocation, RevocationHandle::Forget))
    }

    /// Done with the call: a per-call credential is revoked in the background.
    pub fn release(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        // Nothing to call at a provider (static secret, minted JWT): the per-call copy is
        // simply dropped (and zeroised) with the lease; no revocation task, no
        // `credential.revoked` record (request.decided carries the credential id).
        if !self.needs_release() {
            return;
        }
        if let (Some(pc), Some(held)) = (self.per_call.take(), self.held.take()) {
            pc.shared
                .spawn_revoke(&pc.handle, held, "call_complete".into());
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Issues, caches and revokes every configured credential. One per sidecar.
pub struct CredentialManager {
    entries: BTreeMap<String, Entry>,
    minters: Vec<Arc<JwtMinter>>,
    cache: DashMap<(String, String), Arc<Slot>>,
    ended: DashMap<String, Instant>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for CredentialManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialManager")
            .field("credentials", &self.entries.keys().collect::<Vec<_>>())
            .field("cached", &self.cache.len())
            .finish()
    }
}

/// Tombstones of ended sessions are kept this long (session ids are never reused).
const TOMBSTONE_TTL: Duration = Duration::from_secs(24 * 3600);

impl CredentialManager {
    /// Build every provider (keys are loaded or generated; no network I/O).
    pub fn new(creds: &BTreeMap<String, Credential>) -> Result<Arc<Self>, CredentialError> {
        Self::with_options(creds, ManagerOptions::default())
    }

    /// [`CredentialManager::new`] with explicit tunables.
    pub fn with_options(
        creds: &BTreeMap<String, Credential>,
        opts: ManagerOptions,
    ) -> Result<Arc<Self>, CredentialError> {
        let mut jwt: BTreeMap<String, Arc<JwtMinter>> = BTreeMap::new();
        for (name, c) in creds {
            if let Provider::Jwt(j) = &c.provider {
                jwt.insert(name.clone(), Arc::new(JwtMinter::new(name, j)?));
            }
        }
        let mut entries = BTreeMap::new();
        for (name, c) in creds {
            let provider: Arc<dyn CredentialProvider> = match &c.provider {
                Provider::Jwt(_) => match jwt.get(name) {
                    Some(m) => m.clone(),
                    None => {
                        return Err(CredentialError::Config {
                            name: name.clone(),
                            reason: "jwt key missing".into(),
                        })
                    }
                },
                Provider::Vault(v) => Arc::new(VaultIssuer::new(name, v)?),
                Provider::OAuth2(o) => {
                    let subject = match &o.grant {
                        OAuth2Grant::TokenExchange { subject_credential } => {
                            Some(jwt.get(subject_credential).cloned().ok_or_else(|| {
                                CredentialError::Config {
                                    name: name.clone(),
                                    reason: format!(
                                        "subject_credential `{subject_credential}` is not a jwt credential"
                                    ),
                                }
                            })?)
                        }
                        OAuth2Grant::ClientCredentials => None,
                    };
                    Arc::new(OAuth2Issuer::new(name, o, subject)?)
                }
                Provider::Static(s) => Arc::new(StaticSecret::new(name, s)),
            };
            let header = HeaderName::from_bytes(c.inject.header.to_ascii_lowercase().as_bytes())
                .map_err(|_| CredentialError::Config {
                    name: name.clone(),
                    reason: format!("invalid inject.header `{}`", c.inject.header),
                })?;
            let template = Template::parse(name, &c.inject.value)?;
            entries.insert(
                name.clone(),
                Entry {
                    provider,
                    header,
                    template,
                },
            );
        }
        Ok(Arc::new(CredentialManager {
            entries,
            minters: jwt.into_values().collect(),
            cache: DashMap::new(),
            ended: DashMap::new(),
            shared: Arc::new(Shared {
                observer: RwLock::new(Arc::new(NoopObserver)),
                tracker: Arc::new(Tracker {
                    pending: AtomicUsize::new(0),
                    idle: Notify::new(),
                }),
                opts,
            }),
        }))
    }

    /// Install the audit/metrics observer (replaces the previous one).
    pub fn set_observer(&self, observer: Arc<dyn CredentialObserver>) {
        match self.shared.observer.write() {
            Ok(mut g) => *g = observer,
            Err(p) => *p.into_inner() = observer,
        }
    }

    /// The provider kind of a configured credential.
    pub fn provider_kind(&self, name: &str) -> Option<&'static str> {
        self.entries.get(name).map(|e| e.provider.kind())
    }

    /// Every header any credential injects (the proxy strips these from agent requests).
    pub fn inject_headers(&self) -> Vec<HeaderName> {
        let mut v: Vec<HeaderName> = self.entries.values().map(|e| e.header.clone()).collect();
        v.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        v.dedup();
        v
    }

    /// JWKS (`{"keys": [...]}`) with the public key of every jwt credential.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self.minters.iter().map(|m| m.jwk().clone()).collect();
        serde_json::json!({ "keys": keys })
    }

    /// Number of background revocations still running.
    pub fn pending_revocations(&self) -> usize {
        self.shared.tracker.pending.load(Ordering::Acquire)
    }

    async fn issue_held(
        &self,
        name: &str,
        entry: &Entry,
        ctx: &IssueContext,
    ) -> Result<Arc<Held>, CredentialError> {
        let start = Instant::now();
        let issued = entry.provider.issue(ctx).await?;
        let latency = start.elapsed();
        let event = CredentialEvent {
            name: name.to_string(),
            provider: entry.provider.kind(),
            id: issued.id.clone(),
            session_id: ctx.session_id.clone(),
            spiffe_id: ctx.spiffe_id.clone(),
            expires_at: issued.expires_at,
        };
        let held = match entry.template.render(name, &issued) {
            Ok(value) => Arc::new(Held {
                issued,
                value,
                event,
                provider: entry.provider.clone(),
            }),
            Err(e) => {
                // Unusable: revoke what we just got instead of leaving it alive.
                let held = Arc::new(Held {
                    issued,
                    value: HeaderValue::from_static(""),
                    event,
                    provider: entry.provider.clone(),
                });
                self.shared.observer().issued(&held.event, latency);
                self.shared.spawn_revoke(
                    &tokio::runtime::Handle::current(),
                    held,
                    "template_error".into(),
                );
                return Err(e);
            }
        };
        tracing::debug!(credential = name, id = %held.event.id, provider = held.event.provider, "credential issued");
        self.shared.observer().issued(&held.event, latency);
        Ok(held)
    }

    /// The credential `name` for this call: the session's cached one (issued lazily,
    /// single-flight) or, without a session, a fresh per-call credential.
    pub async fn acquire(&self, name: &str, ctx: &IssueContext) -> Result<Lease, CredentialError> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| CredentialError::UnknownCredential(name.to_string()))?;
        let Some(session) = ctx.session_id.clone() else {
            let held = self.issue_held(name, entry, ctx).await?;
            return Ok(Lease {
                held: Some(held),
                header: entry.header.clone(),
                per_call: Some(PerCall {
                    shared: self.shared.clone(),
                    handle: tokio::runtime::Handle::current(),
                }),
            });
        };
        if self.ended.contains_key(&session) {
            return Err(CredentialError::SessionEnded(session));
        }
        let key = (session.clone(), name.to_string());
        let slot = self
            .cache
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Slot {
                    state: Mutex::new(SlotState::Empty),
                })
            })
            .clone();
        let mut state = slot.state.lock().await;
        match &*state {
            SlotState::Closed => return Err(CredentialError::SessionEnded(session)),
            SlotState::Live(h)
                if h.issued.expires_at > SystemTime::now() + self.shared.opts.min_remaining =>
            {
                return Ok(Lease {
                    held: Some(h.clone()),
                    header: entry.header.clone(),
                    per_call: None,
                });
            }
            SlotState::Live(_) => {
                if let SlotState::Live(old) = std::mem::replace(&mut *state, SlotState::Empty) {
                    self.shared.spawn_revoke(
                        &tokio::runtime::Handle::current(),
                        old,
                        "expired".into(),
                    );
                }
            }
            SlotState::Empty => {}
        }
        let held = self.issue_held(name, entry, ctx).await?;
        *state = SlotState::Live(held.clone());
        Ok(Lease {
            held: Some(held),
            header: entry.header.clone(),
            per_call: None,
        })
    }

    /// End a session's credentials: forget them now (no further call gets them) and
    /// revoke them at the provider in the background. Never blocks on the provider.
    pub async fn revoke_session(&self, session_id: &str, reason: &str) {
        let now = Instant::now();
        self.ended
            .retain(|_, t| now.duration_since(*t) < TOMBSTONE_TTL);
        self.ended.insert(session_id.to_string(), now);
        let keys: Vec<(String, String)> = self
            .cache
            .iter()
            .filter(|e| e.key().0 == session_id)
            .map(|e| e.key().clone())
            .collect();
        for k in keys {
            if let Some((_, slot)) = self.cache.remove(&k) {
                self.close_slot(slot, reason);
            }
        }
    }

    fn close_slot(&self, slot: Arc<Slot>, reason: &str) {
        let handle = tokio::runtime::Handle::current();
        let closed_now = match slot.state.try_lock() {
            Ok(mut st) => {
                if let SlotState::Live(h) = std::mem::replace(&mut *st, SlotState::Closed) {
                    self.shared.spawn_revoke(&handle, h, reason.to_string());
                }
                true
            }
            Err(_) => false,
        };
        if !closed_now {
            // An issue is in flight: close the slot once it finishes, then revoke.
            let shared = self.shared.clone();
            let reason = reason.to_string();
            shared.tracker.pending.fetch_add(1, Ordering::AcqRel);
            let guard = TrackGuard(shared.tracker.clone());
            let h2 = handle.clone();
            handle.spawn(async move {
                let _guard = guard;
                let mut st = slot.state.lock().await;
                if let SlotState::Live(h) = std::mem::replace(&mut *st, SlotState::Closed) {
                    shared.spawn_revoke(&h2, h, reason);
                }
            });
        }
    }

    /// Revoke everything still cached, waiting at most `deadline` for the providers.
    pub async fn shutdown(&self, deadline: Duration) {
        let sessions: Vec<String> = self.cache.iter().map(|e| e.key().0.clone()).collect();
        for s in sessions {
            self.revoke_session(&s, "shutdown").await;
        }
        let tracker = self.shared.tracker.clone();
        let wait = async {
            loop {
                let notified = tracker.idle.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if tracker.pending.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(deadline, wait).await.is_err() {
            tracing::warn!(
                pending = self.pending_revocations(),
                "shutdown deadline reached with credential revocations still pending"
            );
        }
    }
}
