//! Delegation checks (SPEC §4 `POST /.chaperone/v1/sessions/current/delegations`).

use std::time::{Duration, SystemTime};

use crate::{rfc3339, Session, SessionError, MAX_SESSION_TTL};

/// Check a delegation request from `parent` to the SPIFFE ID `to`.
///
/// Returns the granted scopes (the requested ones, de-duplicated, order kept) and the
/// TTL. Refuses, without adjusting anything, when
///
/// * the parent has ended ([`SessionError::ParentEnded`]) or expired
///   ([`SessionError::ParentExpired`]);
/// * `to` is not a `spiffe://` ID or `ttl` is zero or absurdly long ([`SessionError::Invalid`]);
/// * a requested scope is not among the parent's ([`SessionError::ScopeEscalation`]);
/// * `now + ttl` is later than the parent's expiry ([`SessionError::TtlEscalation`]).
///   The TTL is deliberately **not** clamped to the parent's remaining lifetime: the
///   agent asked for something it cannot have and must ask again, so it never holds a
///   session that ends earlier than it believes;
/// * the child's depth (`parent.depth + 1`) would exceed `max_depth`
///   ([`SessionError::DepthExceeded`]); `max_depth: 0` disables delegation.
///
/// The full SPIFFE ID syntax is the identity layer's job; this only rejects values that
/// cannot be one. [`crate::SessionStore::create`] re-checks scopes, expiry and the
/// parent's liveness atomically when it creates the child.
pub fn validate_delegation(
    parent: &Session,
    to: &str,
    scopes: &[String],
    ttl: Duration,
    max_depth: u32,
    now: SystemTime,
) -> Result<(Vec<String>, Duration), SessionError> {
    if parent.is_ended() {
        return Err(SessionError::ParentEnded);
    }
    if parent.is_expired(now) {
        return Err(SessionError::ParentExpired);
    }
    check_spiffe_id(to)?;
    check_ttl(ttl)?;
    let scopes = dedup(scopes);
    let extra: Vec<String> = scopes
        .iter()
        .filter(|s| !parent.scopes.contains(s))
        .cloned()
        .collect();
    if !extra.is_empty() {
        return Err(SessionError::ScopeEscalation { extra });
    }
    check_expiry(parent, ttl, now)?;
    let depth = parent.depth.saturating_add(1);
    if depth > max_depth {
        return Err(SessionError::DepthExceeded {
            depth,
            max: max_depth,
        });
    }
    Ok((scopes, ttl))
}

pub(crate) fn check_expiry(
    parent: &Session,
    ttl: Duration,
    now: SystemTime,
) -> Result<SystemTime, SessionError> {
    let expires_at = now
        .checked_add(ttl)
        .ok_or_else(|| SessionError::Invalid("ttl out of range".into()))?;
    if expires_at > parent.expires_at {
        return Err(SessionError::TtlEscalation {
            requested_expires_at: rfc3339(expires_at),
            parent_expires_at: rfc3339(parent.expires_at),
        });
    }
    Ok(expires_at)
}

pub(crate) fn check_ttl(ttl: Duration) -> Result<(), SessionError> {
    if ttl.is_zero() {
        return Err(SessionError::Invalid("ttl must be positive".into()));
    }
    if ttl > MAX_SESSION_TTL {
        return Err(SessionError::Invalid("ttl is too long".into()));
    }
    Ok(())
}

pub(crate) fn check_spiffe_id(id: &str) -> Result<(), SessionError> {
    let ok = id.strip_prefix("spiffe://").is_some_and(|rest| {
        !rest.is_empty()
            && !rest.starts_with('/')
            && !rest.chars().any(|c| c.is_control() || c.is_whitespace())
    });
    if ok && id.len() <= 2048 {
        Ok(())
    } else {
        Err(SessionError::Invalid("not a SPIFFE ID".into()))
    }
}

pub(crate) fn dedup(scopes: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(scopes.len());
    for s in scopes {
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    out
}
