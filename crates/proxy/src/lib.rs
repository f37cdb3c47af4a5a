//! chaperone's data plane: the mTLS listener, the request pipeline (see
//! [`pipeline`] for the ordered phases), the session API, approvals, the admin API
//! and metrics. Identity, policy, sessions, credentials, MCP parsing and audit live
//! in their own crates; this crate wires them into one request path.

pub mod admin;
pub mod approvals;
pub mod body;
mod body_guard;
pub mod canon;
pub mod error;
pub mod forward;
pub mod headers;
pub mod input;
pub mod mcp_phase;
pub mod metrics;
pub mod pipeline;
mod redact;
pub mod route;
pub mod server;
pub mod session_api;
pub mod sidecar;
pub mod sniff;
mod webhook;

pub use error::{Code, ProxyError, Refusal};
pub use server::{policy_options, run, start, Running, StartOptions};
pub use sidecar::Sidecar;
