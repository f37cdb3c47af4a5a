//! The provider trait and the values that cross it.

use std::time::{Duration, SystemTime};

use crate::{CredentialError, Secret};

/// Who a credential is issued for, and the hard cap on its lifetime.
#[derive(Debug, Clone)]
pub struct IssueContext {
    /// The calling agent's SPIFFE ID (`sub` of minted JWTs).
    pub spiffe_id: String,
    /// The session (task) id; `None` for a per-call credential.
    pub session_id: Option<String>,
    /// The task the session declared.
    pub task: Option<String>,
    /// The session's scopes (narrow OAuth2 scopes, `scope` claim of JWTs).
    pub scopes: Vec<String>,
    /// SPIFFE IDs of the delegation chain, root first, the caller (`spiffe_id`) last.
    /// Empty or a single element for a root session.
    pub delegation_chain: Vec<String>,
    /// Hard cap: the session's expiry, or now + ttl for a per-call credential.
    pub not_after: SystemTime,
}

impl IssueContext {
    /// Remaining lifetime, capped by `ttl`; `Err(Expired)` when less than one second is left.
    pub fn capped_ttl(&self, ttl: Duration) -> Result<Duration, CredentialError> {
        let left = self
            .not_after
            .duration_since(SystemTime::now())
            .map_err(|_| CredentialError::Expired)?;
        let d = left.min(ttl);
        if d < Duration::from_secs(1) {
            return Err(CredentialError::Expired);
        }
        Ok(d)
    }

    /// `t` capped at `not_after`.
    pub fn cap(&self, t: SystemTime) -> SystemTime {
        t.min(self.not_after)
    }
}

/// What the provider needs to revoke an issued credential.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RevocationHandle {
    /// Nothing to call: revocation means forgetting (jwt, static).
    Forget,
    /// Vault/OpenBao token accessor (`auth/token/revoke-accessor`).
    VaultAccessor(String),
    /// Vault/OpenBao lease id (`sys/leases/revoke`).
    VaultLease(String),
    /// OAuth2 access token to revoke at the RFC 7009 endpoint.
    OAuth2Token(Secret),
}

/// An issued credential.
#[derive(Debug)]
pub struct Issued {
    /// Non-secret identifier: JWT `jti`, Vault accessor, lease id, `static:<name>`, ...
    pub id: String,
    /// When it stops being valid (always ≤ the context's `not_after`, except a Vault
    /// lease whose TTL is set by its role: that is revoked at session end anyway).
    pub expires_at: SystemTime,
    /// `{token}`.
    pub token: Option<Secret>,
    /// `{username}` (leases).
    pub username: Option<Secret>,
    /// `{password}` (leases).
    pub password: Option<Secret>,
    /// How to revoke it.
    pub revocation: RevocationHandle,
}

impl Issued {
    /// A token-only credential.
    pub fn token(
        id: String,
        expires_at: SystemTime,
        token: Secret,
        revocation: RevocationHandle,
    ) -> Self {
        Issued {
            id,
            expires_at,
            token: Some(token),
            username: None,
            password: None,
            revocation,
        }
    }
}

/// A source of credentials. Object safe; one instance per configured credential.
#[async_trait::async_trait]
pub trait CredentialProvider: Send + Sync {
    /// `jwt`, `vault`, `oauth2` or `static`.
    fn kind(&self) -> &'static str;
    /// Issue a credential for this context; its lifetime never exceeds `ctx.not_after`.
    async fn issue(&self, ctx: &IssueContext) -> Result<Issued, CredentialError>;
    /// Revoke it at the provider (or forget it, for stateless providers).
    async fn revoke(&self, c: &Issued) -> Result<(), CredentialError>;
}
