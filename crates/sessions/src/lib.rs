//! chaperone-sessions: the task sessions an agent declares before it gets privileges.
//!
//! This crate is pure state: no HTTP, no policy. The proxy crate calls it to
//!
//! * mint a session and its bearer [`SessionToken`] ([`SessionStore::create`]),
//! * authenticate a presented token against the caller's SPIFFE ID
//!   ([`SessionStore::authenticate`], distinct errors for unknown / expired /
//!   revoked tokens and for a token presented by another identity),
//! * validate a delegation ([`validate_delegation`]) and create the child session,
//! * account every call ([`SessionStore::record_call`]) so policy sees
//!   [`Session::policy_view`] (`input.session`, SPEC §5), and
//! * end sessions together with all their descendants ([`SessionStore::end`],
//!   [`SessionStore::sweep_expired`]) so the caller can revoke credentials and audit.
//!
//! Tokens are never stored: the store keeps only their SHA-256 digest.
//! [`SessionStore`] is object safe so a shared (e.g. Redis-backed) store can be added
//! behind the same API; [`InMemorySessionStore`] is the single-process implementation.

mod delegation;
mod error;
mod session;
mod store;
mod token;

pub use delegation::validate_delegation;
pub use error::SessionError;
pub use session::{EndReason, Session, SessionStats};
pub use store::{InMemorySessionStore, NewSession, SessionStore, StoreLimits};
pub use token::{SessionToken, TokenDigest, MAX_TOKEN_LEN, TOKEN_PREFIX};

use std::time::{SystemTime, UNIX_EPOCH};

/// Longest session lifetime this crate accepts (a sanity bound; configuration
/// normally caps sessions far lower, e.g. `sessions.max_ttl: 1h`).
pub const MAX_SESSION_TTL: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);

/// Format a `SystemTime` as RFC 3339 in UTC with whole seconds, e.g. `2026-12-01T10:00:00Z`.
///
/// Sub-second precision is dropped (times are truncated toward the past).
/// Times before 1970 or beyond year 9999 never panic; they are clamped to the epoch
/// or formatted as the far bound respectively.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    let fmt = time::format_description::well_known::Rfc3339;
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(dt) => dt
            .format(&fmt)
            .unwrap_or_else(|_| "9999-12-31T23:59:59Z".to_owned()),
        Err(_) => "9999-12-31T23:59:59Z".to_owned(),
    }
}

/// Whole seconds since the Unix epoch (0 for times before it).
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
