//! The session store trait and its in-memory implementation.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use parking_lot::Mutex;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value;

use crate::delegation::{check_expiry, check_spiffe_id, check_ttl, dedup};
use crate::token::{TokenDigest, MAX_TOKEN_LEN, TOKEN_PREFIX};
use crate::{EndReason, Session, SessionError, SessionToken};

/// A session to create. For a delegation, `parent` is the authenticated parent session
/// and `spiffe_id` the delegate's SPIFFE ID; run [`crate::validate_delegation`] first.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// SPIFFE ID the session is bound to.
    pub spiffe_id: String,
    /// The declared task.
    pub task: String,
    /// The declared intent.
    pub intent: Value,
    /// Granted scopes (already narrowed by policy).
    pub scopes: Vec<String>,
    /// Lifetime from creation.
    pub ttl: Duration,
    /// Parent session of a delegation.
    pub parent: Option<Arc<Session>>,
}

/// Where sessions live. Object safe; every method returns owned or `Arc` values and
/// statistics change only through explicit calls, so a shared store (e.g. Redis) can
/// implement it.
pub trait SessionStore: Send + Sync {
    /// Create a session at `now`; returns it and its token (the only copy of the token).
    ///
    /// For a delegation the parent must be live in this store, the scopes ⊆ the
    /// parent's and the expiry ≤ the parent's; this is checked atomically with
    /// registering the child, so a parent ended concurrently never leaves a live child.
    fn create_at(
        &self,
        new: NewSession,
        now: SystemTime,
    ) -> Result<(Arc<Session>, SessionToken), SessionError>;

    /// [`SessionStore::create_at`] with the current time.
    fn create(&self, new: NewSession) -> Result<(Arc<Session>, SessionToken), SessionError> {
        self.create_at(new, SystemTime::now())
    }

    /// Resolve a presented token for the caller `spiffe_id`.
    ///
    /// Errors: [`SessionError::WrongIdentity`] (403) if the token is bound to another
    /// identity (checked first, also for ended sessions still remembered);
    /// [`SessionError::Expired`], [`SessionError::Revoked`] or [`SessionError::Unknown`]
    /// (401) otherwise. Ended sessions are remembered (tombstones) for a bounded time
    /// so a revoked token keeps saying `Revoked` rather than `Unknown`.
    fn authenticate(
        &self,
        token: &str,
        spiffe_id: &str,
        now: SystemTime,
    ) -> Result<Arc<Session>, SessionError>;

    /// A live (not ended) session by id. It may be expired but not yet swept.
    fn get(&self, id: &str) -> Option<Arc<Session>>;

    /// All live (not ended) sessions.
    fn list(&self) -> Vec<Arc<Session>>;

    /// Number of live sessions.
    fn active_count(&self) -> usize;

    /// End session `id` and every descendant. Returns every session ended by this
    /// call, the named one first, then descendants breadth-first (so the caller can
    /// revoke their credentials and audit). Descendants get
    /// [`EndReason::for_descendants`] of `reason`. Unknown or already ended: empty.
    fn end(&self, id: &str, reason: EndReason) -> Vec<Arc<Session>>;

    /// End every session whose TTL passed at `now` (reason `expired`), with its
    /// descendants, and forget old tombstones. Returns everything ended.
    fn sweep_expired(&self, now: SystemTime) -> Vec<Arc<Session>>;

    /// End every live session (e.g. [`EndReason::Shutdown`]). Returns everything ended.
    fn end_all(&self, reason: EndReason) -> Vec<Arc<Session>> {
        let mut out = Vec::new();
        for s in self.list() {
            out.extend(self.end(&s.id, reason.clone()));
        }
        out
    }

    /// Account one call of `session` on `route`: total, denied (not allowed for any
    /// reason), per-route count, the route's data domain, and the one-minute window.
    fn record_call(
        &self,
        session: &Session,
        route: &str,
        data_domain: Option<&str>,
        denied: bool,
        now: SystemTime,
    );
}

/// Bounds of an [`InMemorySessionStore`].
#[derive(Debug, Clone)]
pub struct StoreLimits {
    /// Maximum live sessions; creation beyond it fails with [`SessionError::TooMany`].
    pub max_sessions: usize,
    /// How long an ended session's token keeps answering `Revoked`/`Expired`.
    pub tombstone_ttl: Duration,
    /// Maximum remembered ended tokens (oldest forgotten first).
    pub max_tombstones: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_sessions: 100_000,
            tombstone_ttl: Duration::from_secs(3600),
            max_tombstones: 100_000,
        }
    }
}

#[derive(Debug, Clone)]
struct Tombstone {
    spiffe_id: String,
    reason: EndReason,
    ended_at: SystemTime,
}

/// Single-process [`SessionStore`] on concurrent hash maps.
pub struct InMemorySessionStore {
    rng: SystemRandom,
    limits: StoreLimits,
    sessions: DashMap<String, Arc<Session>>,
    by_token: DashMap<TokenDigest, Arc<Session>>,
    tombstones: DashMap<TokenDigest, Tombstone>,
    tomb_order: Mutex<VecDeque<TokenDigest>>,
    live: AtomicUsize,
}

impl std::fmt::Debug for InMemorySessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemorySessionStore")
            .field("live", &self.live.load(Ordering::Relaxed))
            .field("tombstones", &self.tombstones.len())
            .field("limits", &self.limits)
            .finish()
    }
}

impl Default for InMemorySessionStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemorySessionStore {
    /// A store with [`StoreLimits::default`].
    pub fn new() -> Self {
        Self::with_limits(StoreLimits::default())
    }

    /// A store with explicit limits.
    pub fn with_limits(limits: StoreLimits) -> Self {
        Self {
            rng: SystemRandom::new(),
            limits,
            sessions: DashMap::new(),
            by_token: DashMap::new(),
            tombstones: DashMap::new(),
            tomb_order: Mutex::new(VecDeque::new()),
            live: AtomicUsize::new(0),
        }
    }

    /// Number of remembered ended tokens.
    pub fn tombstone_count(&self) -> usize {
        self.tombstones.len()
    }

    fn new_id(&self) -> Result<String, SessionError> {
        let mut b = [0u8; 16];
        self.rng.fill(&mut b).map_err(|_| SessionError::Rng)?;
        Ok(format!("ses_{}", hex::encode(b)))
    }

    fn reserve(&self) -> Result<(), SessionError> {
        let prev = self.live.fetch_add(1, Ordering::AcqRel);
        if prev >= self.limits.max_sessions {
            self.live.fetch_sub(1, Ordering::AcqRel);
            return Err(SessionError::TooMany {
                limit: self.limits.max_sessions,
            });
        }
        Ok(())
    }

    fn insert(&self, s: &Arc<Session>) {
        self.by_token.insert(s.token_digest, Arc::clone(s));
        self.sessions.insert(s.id.clone(), Arc::clone(s));
    }

    /// Drop an ended session from the live maps and remember its token.
    fn retire(&self, s: &Session, reason: EndReason, at: SystemTime) {
        if self.sessions.remove(&s.id).is_some() {
            self.live.fetch_sub(1, Ordering::AcqRel);
        }
        self.by_token.remove(&s.token_digest);
        if self.limits.max_tombstones == 0 {
            return;
        }
        self.tombstones.insert(
            s.token_digest,
            Tombstone {
                spiffe_id: s.spiffe_id.clone(),
                reason,
                ended_at: at,
            },
        );
        let mut order = self.tomb_order.lock();
        order.push_back(s.token_digest);
        while order.len() > self.limits.max_tombstones {
            if let Some(d) = order.pop_front() {
                self.tombstones.remove(&d);
            }
        }
    }

    fn prune_tombstones(&self, now: SystemTime) {
        let mut order = self.tomb_order.lock();
        while let Some(d) = order.front().copied() {
            let stale = match self.tombstones.get(&d) {
                Some(t) => t
                    .ended_at
                    .checked_add(self.limits.tombstone_ttl)
                    .is_none_or(|until| until <= now),
                None => true,
            };
            if !stale {
                break;
            }
            order.pop_front();
            self.tombstones.remove(&d);
        }
    }

    fn end_at(&self, id: &str, reason: EndReason, at: SystemTime) -> Vec<Arc<Session>> {
        let Some(root) = self.sessions.get(id).map(|r| Arc::clone(r.value())) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut queue = VecDeque::from([(root, reason)]);
        while let Some((s, r)) = queue.pop_front() {
            let Some(children) = s.mark_ended(r.clone(), at) else {
                continue;
            };
            self.retire(&s, r.clone(), at);
            for c in children {
                if let Some(cs) = self.sessions.get(&c).map(|e| Arc::clone(e.value())) {
                    queue.push_back((cs, r.for_descendants()));
                }
            }
            out.push(s);
        }
        out
    }
}

impl SessionStore for InMemorySessionStore {
    fn create_at(
        &self,
        new: NewSession,
        now: SystemTime,
    ) -> Result<(Arc<Session>, SessionToken), SessionError> {
        check_spiffe_id(&new.spiffe_id)?;
        check_ttl(new.ttl)?;
        let scopes = dedup(&new.scopes);
        let expires_at = match &new.parent {
            Some(p) => {
                if p.is_expired(now) {
                    return Err(SessionError::ParentExpired);
                }
                let extra: Vec<String> = scopes
                    .iter()
                    .filter(|s| !p.scopes.contains(s))
                    .cloned()
                    .collect();
                if !extra.is_empty() {
                    return Err(SessionError::ScopeEscalation { extra });
                }
                check_expiry(p, new.ttl, now)?
            }
            None => now
                .checked_add(new.ttl)
                .ok_or_else(|| SessionError::Invalid("ttl out of range".into()))?,
        };
        let id = self.new_id()?;
        let token = SessionToken::generate(&self.rng)?;
        let (parent_id, chain, depth) = match &new.parent {
            Some(p) => {
                let mut chain = p.delegation_chain.clone();
                chain.push(new.spiffe_id.clone());
                (Some(p.id.clone()), chain, p.depth.saturating_add(1))
            }
            None => (None, vec![new.spiffe_id.clone()], 0),
        };
        let session = Arc::new(Session::new(
            id,
            new.spiffe_id,
            new.task,
            new.intent,
            scopes,
            now,
            expires_at,
            parent_id,
            chain,
            depth,
            token.digest(),
        ));
        self.reserve()?;
        match &new.parent {
            None => self.insert(&session),
            Some(p) => {
                // The parent must be this store's live session (not a stale or foreign Arc).
                let registered = self
                    .sessions
                    .get(&p.id)
                    .is_some_and(|e| Arc::ptr_eq(e.value(), p));
                // Holding the parent's state lock makes "parent still live" and
                // "child registered" one step with respect to `end`.
                let mut st = p.state.lock();
                if !registered || st.ended_is_some() {
                    drop(st);
                    self.live.fetch_sub(1, Ordering::AcqRel);
                    return Err(SessionError::ParentEnded);
                }
                st.children.push(session.id.clone());
                self.insert(&session);
            }
        }
        Ok((session, token))
    }

    fn authenticate(
        &self,
        token: &str,
        spiffe_id: &str,
        now: SystemTime,
    ) -> Result<Arc<Session>, SessionError> {
        if token.len() > MAX_TOKEN_LEN || !token.starts_with(TOKEN_PREFIX) {
            return Err(SessionError::Unknown);
        }
        let digest = TokenDigest::of(token);
        if let Some(s) = self.by_token.get(&digest).map(|e| Arc::clone(e.value())) {
            if s.spiffe_id != spiffe_id {
                return Err(SessionError::WrongIdentity);
            }
            return match s.end_reason() {
                Some(EndReason::Expired) => Err(SessionError::Expired),
                Some(_) => Err(SessionError::Revoked),
                None if s.is_expired(now) => Err(SessionError::Expired),
                None => Ok(s),
            };
        }
        if let Some(t) = self.tombstones.get(&digest).map(|e| e.value().clone()) {
            if t.ended_at
                .checked_add(self.limits.tombstone_ttl)
                .is_some_and(|until| until > now)
            {
                if t.spiffe_id != spiffe_id {
                    return Err(SessionError::WrongIdentity);
                }
                return Err(match t.reason {
                    EndReason::Expired => SessionError::Expired,
                    _ => SessionError::Revoked,
                });
            }
        }
        Err(SessionError::Unknown)
    }

    fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions.get(id).map(|e| Arc::clone(e.value()))
    }

    fn list(&self) -> Vec<Arc<Session>> {
        self.sessions
            .iter()
            .map(|e| Arc::clone(e.value()))
            .collect()
    }

    fn active_count(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    fn end(&self, id: &str, reason: EndReason) -> Vec<Arc<Session>> {
        self.end_at(id, reason, SystemTime::now())
    }

    fn sweep_expired(&self, now: SystemTime) -> Vec<Arc<Session>> {
        let mut expired: Vec<Arc<Session>> = self
            .sessions
            .iter()
            .filter(|e| e.value().is_expired(now))
            .map(|e| Arc::clone(e.value()))
            .collect();
        // Ancestors first, so descendants are ended by the cascade exactly once.
        expired.sort_by_key(|s| s.depth);
        let mut out = Vec::new();
        for s in expired {
            out.extend(self.end_at(&s.id, EndReason::Expired, now));
        }
        self.prune_tombstones(now);
        out
    }

    fn record_call(
        &self,
        session: &Session,
        route: &str,
        data_domain: Option<&str>,
        denied: bool,
        now: SystemTime,
    ) {
        session.record(route, data_domain, denied, now);
    }
}
