//! The crate's error type.

/// Everything that can go wrong creating, authenticating or delegating a session.
///
/// Every variant fails closed: the caller refuses the request. [`SessionError::status_code`]
/// gives the HTTP status SPEC §4/§9 prescribe and [`SessionError::code`] the error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The token is not (or no longer) known to this store.
    #[error("unknown session token")]
    Unknown,
    /// The session's TTL has passed.
    #[error("session expired")]
    Expired,
    /// The session was ended (DELETE, operator, policy, parent ended, shutdown).
    #[error("session has ended")]
    Revoked,
    /// The token is valid but was presented by a SPIFFE ID it is not bound to.
    #[error("session token is bound to a different identity")]
    WrongIdentity,
    /// A delegation asked for scopes the parent session does not hold.
    #[error("delegation requests scopes the parent session does not hold: {}", extra.join(", "))]
    ScopeEscalation {
        /// The requested scopes that are not in the parent's granted scopes.
        extra: Vec<String>,
    },
    /// A delegation would expire after its parent. The TTL is never silently clamped.
    #[error("delegation would outlive its parent session (requested expiry {requested_expires_at}, parent expires at {parent_expires_at})")]
    TtlEscalation {
        /// RFC 3339 expiry the requested TTL would give the child.
        requested_expires_at: String,
        /// RFC 3339 expiry of the parent session.
        parent_expires_at: String,
    },
    /// The delegation chain would become deeper than allowed.
    #[error("delegation depth {depth} exceeds the maximum of {max}")]
    DepthExceeded {
        /// Depth the child would have (root sessions have depth 0).
        depth: u32,
        /// Configured maximum depth.
        max: u32,
    },
    /// The parent session of a delegation has ended.
    #[error("parent session has ended")]
    ParentEnded,
    /// The parent session of a delegation has expired.
    #[error("parent session has expired")]
    ParentExpired,
    /// The request is malformed (zero or huge TTL, malformed SPIFFE ID, ...).
    #[error("invalid session request: {0}")]
    Invalid(String),
    /// The store holds its maximum number of live sessions.
    #[error("session limit reached ({limit} live sessions)")]
    TooMany {
        /// The configured limit.
        limit: usize,
    },
    /// The operating system's random number generator failed.
    #[error("system random number generator failed")]
    Rng,
}

impl SessionError {
    /// HTTP status for this error: 401 for unknown/expired/revoked tokens, 403 for a
    /// token of another identity and for refused delegations, 400 for malformed
    /// requests, 503 when the store is full or randomness is unavailable.
    pub fn status_code(&self) -> u16 {
        match self {
            SessionError::Unknown | SessionError::Expired | SessionError::Revoked => 401,
            SessionError::WrongIdentity
            | SessionError::ScopeEscalation { .. }
            | SessionError::TtlEscalation { .. }
            | SessionError::DepthExceeded { .. }
            | SessionError::ParentEnded
            | SessionError::ParentExpired => 403,
            SessionError::Invalid(_) => 400,
            SessionError::TooMany { .. } | SessionError::Rng => 503,
        }
    }

    /// SPEC §9 error code for this error.
    pub fn code(&self) -> &'static str {
        match self.status_code() {
            401 => "invalid_session",
            403 => "denied",
            400 => "bad_request",
            _ => "unavailable",
        }
    }
}
