//! MCP (Model Context Protocol, streamable HTTP transport) inspection for chaperone.
//!
//! A pure parsing/rewriting library used by the proxy on `protocol: mcp` routes (SPEC §6):
//!
//! * [`parse_request`] strictly parses one client-to-server JSON-RPC message (size-capped;
//!   batches, duplicate keys, non-JSON, trailing data, non-canonical key spellings and
//!   control characters are rejected, never partly inspected) into an [`McpRequest`] whose
//!   [`McpRequest::policy_input`] becomes `input.request.mcp`.
//! * [`check_content_headers`] accepts only `application/json` bodies without a content coding.
//! * [`filter_tools_list_json`] and [`SseToolsFilter`] remove tools that policy would not
//!   allow from `tools/list` responses (JSON or SSE), fail closed on malformed responses, and
//!   otherwise keep the upstream bytes exactly.
//! * [`jsonrpc_error`], [`jsonrpc_denied`], [`jsonrpc_refusal`] and
//!   [`McpError::jsonrpc_error_body`] build JSON-RPC 2.0 error responses (codes in [`codes`]).
//!
//! See `docs/mcp.md` for the full list of checks, error codes and limits.

#![warn(missing_docs)]

mod error;
mod filter;
mod json;
mod request;
mod sse;

pub use error::McpError;
pub use filter::{filter_tools_list_json, MAX_RESPONSE_DEPTH};
pub use request::{
    check_content_headers, parse_request, McpRequest, MessageKind, DEFAULT_MAX_REQUEST_BYTES,
    MAX_REQUEST_DEPTH,
};
pub use sse::{SseToolsFilter, DEFAULT_MAX_SSE_EVENT_BYTES};

use serde_json::Value;

/// JSON-RPC 2.0 error codes used by chaperone.
///
/// `-32700..=-32600` are the JSON-RPC standard codes; `-32001..=-32099` is the
/// implementation-defined server-error range, where chaperone maps its refusal codes
/// (SPEC §9).
pub mod codes {
    /// Invalid JSON was received (not UTF-8, not JSON, trailing data).
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON is not a valid, acceptable JSON-RPC request (batch, duplicate key, ...).
    pub const INVALID_REQUEST: i64 = -32600;
    /// The method does not exist.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Invalid method parameters (e.g. `tools/call` without `params.name`).
    pub const INVALID_PARAMS: i64 = -32602;
    /// Internal error (e.g. the upstream sent a malformed `tools/list` response).
    pub const INTERNAL_ERROR: i64 = -32603;
    /// Policy denied the call (`denied`).
    pub const DENIED: i64 = -32001;
    /// A human denied the approval (`approval_denied`).
    pub const APPROVAL_DENIED: i64 = -32002;
    /// The approval timed out (`approval_timeout`).
    pub const APPROVAL_TIMEOUT: i64 = -32003;
    /// No, unknown, expired or revoked session (`no_session`, `invalid_session`).
    pub const SESSION: i64 = -32004;
    /// The credential could not be issued (`credential_unavailable`).
    pub const CREDENTIAL_UNAVAILABLE: i64 = -32005;
    /// The upstream failed or timed out (`upstream_unavailable`, `upstream_timeout`).
    pub const UPSTREAM: i64 = -32006;
    /// Any other chaperone refusal.
    pub const SERVER_ERROR: i64 = -32000;
}

/// The JSON-RPC code for a chaperone refusal code (SPEC §9, e.g. `"denied"`).
#[must_use]
pub fn refusal_code(error: &str) -> i64 {
    match error {
        "denied" => codes::DENIED,
        "approval_denied" => codes::APPROVAL_DENIED,
        "approval_timeout" => codes::APPROVAL_TIMEOUT,
        "no_session" | "invalid_session" => codes::SESSION,
        "credential_unavailable" => codes::CREDENTIAL_UNAVAILABLE,
        "upstream_unavailable" | "upstream_timeout" => codes::UPSTREAM,
        "bad_request" => codes::INVALID_REQUEST,
        _ => codes::SERVER_ERROR,
    }
}

/// Serialize a JSON-RPC 2.0 error response:
/// `{"jsonrpc":"2.0","id":<id>,"error":{"code":..,"message":..,"data":..}}`.
///
/// `id` must be the id of the request being answered; `None`, or an id that is not a number,
/// string or null, is written as `null`. `data` is omitted when `None`.
#[must_use]
pub fn jsonrpc_error(id: Option<&Value>, code: i64, message: &str, data: Option<Value>) -> Vec<u8> {
    let id = match id {
        Some(v @ (Value::Number(_) | Value::String(_))) => v.clone(),
        _ => Value::Null,
    };
    let mut error = serde_json::Map::new();
    error.insert("code".into(), Value::from(code));
    error.insert("message".into(), Value::from(message));
    if let Some(data) = data {
        error.insert("data".into(), data);
    }
    let body = serde_json::json!({ "jsonrpc": "2.0", "id": id, "error": error });
    // Serializing a Value with string keys cannot fail; fall back to a fixed body anyway.
    serde_json::to_vec(&body).unwrap_or_else(|_| {
        br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"internal error"}}"#
            .to_vec()
    })
}

/// A chaperone refusal as a JSON-RPC error: code from [`refusal_code`], message
/// `"<error>: <reason>; <reason>"` (or just `"<error>"` without reasons), and
/// `data: {"error", "reasons", "request_id"}`.
#[must_use]
pub fn jsonrpc_refusal(
    id: Option<&Value>,
    error: &str,
    reasons: &[String],
    request_id: &str,
) -> Vec<u8> {
    let message = if reasons.is_empty() {
        error.to_owned()
    } else {
        format!("{error}: {}", reasons.join("; "))
    };
    jsonrpc_error(
        id,
        refusal_code(error),
        &message,
        Some(serde_json::json!({
            "error": error,
            "reasons": reasons,
            "request_id": request_id,
        })),
    )
}

/// A policy denial as a JSON-RPC error: code [`codes::DENIED`] (-32001), message
/// `"denied: <reasons>"`, `data: {"error": "denied", "reasons": [...], "request_id"}`.
#[must_use]
pub fn jsonrpc_denied(id: Option<&Value>, reasons: &[String], request_id: &str) -> Vec<u8> {
    jsonrpc_refusal(id, "denied", reasons, request_id)
}
