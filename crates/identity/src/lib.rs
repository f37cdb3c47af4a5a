//! chaperone-identity: SPIFFE identities for the agent-facing listener (SPEC §3).
//!
//! - [`SpiffeId`]: strict SPIFFE ID parsing.
//! - [`validate_svid_leaf`] / [`peer_svid`]: X.509-SVID leaf rules.
//! - [`IdentityMap`]: `identities` patterns to policy attributes.
//! - [`ServerTls`]: the mTLS server configuration with SVID checks and hot reload.
//! - [`dev`]: dev certificates and an mTLS client configuration helper.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod dev;
mod error;
mod map;
mod spiffe;
mod svid;
mod tls;

pub use error::IdentityError;
pub use map::IdentityMap;
pub use spiffe::{SpiffeId, MAX_SPIFFE_ID_LEN};
pub use svid::{peer_svid, svid_from_chain, validate_svid_leaf, SvidInfo};
pub use tls::{crypto_provider, FailureHook, HandshakeFailure, ServerTls, ALPN};
