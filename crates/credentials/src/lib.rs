//! chaperone-credentials: just-in-time credentials for allowed calls (SPEC §8).
//!
//! [`CredentialManager`] owns one [`CredentialProvider`] per configured credential
//! (`jwt`, `vault`, `oauth2`, `static`). A session's credential is issued lazily on
//! its first allowed call, reused while valid, never outlives the session and is
//! revoked (provider API) and zeroized when the session ends. A call without a
//! session gets a per-call credential revoked when its [`Lease`] is released.
//!
//! Every secret lives in a [`Secret`] (redacted `Debug`, zeroized on drop); errors
//! never carry secret values or raw provider bodies. See `docs/credentials.md`.

mod client;
mod error;
mod files;
pub mod jwt;
mod manager;
pub mod oauth2;
mod provider;
mod secret;
pub mod static_file;
mod template;
pub mod vault;

pub use error::CredentialError;
pub use manager::{CredentialEvent, CredentialManager, CredentialObserver, Lease, ManagerOptions};
pub use provider::{CredentialProvider, IssueContext, Issued, RevocationHandle};
pub use secret::Secret;

/// A provider response body (zeroized when dropped).
pub(crate) type ResponseBody = zeroize::Zeroizing<Vec<u8>>;
