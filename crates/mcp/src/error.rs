//! The crate's single error type.

use thiserror::Error;

/// Longest excerpt of an attacker-controlled string (e.g. a duplicate key) kept in an error.
const MAX_ECHO_CHARS: usize = 64;

/// Everything that can go wrong while inspecting MCP traffic.
///
/// Every variant is a refusal: the caller must not forward a message that produced one
/// (requests), nor the unfiltered bytes (tools/list responses). Display strings never contain
/// message content beyond a short, escaped key or field name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum McpError {
    /// The body is larger than the configured cap (checked before any parsing).
    #[error("body of {actual} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The configured cap in bytes.
        limit: usize,
        /// The size of the rejected body.
        actual: usize,
    },
    /// The body is not valid UTF-8.
    #[error("body is not valid UTF-8 (at byte {offset})")]
    InvalidUtf8 {
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },
    /// The body is not a JSON text.
    #[error("body is not valid JSON at byte {offset}: {reason}")]
    NotJson {
        /// Byte offset where parsing failed.
        offset: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// A complete JSON value is followed by something other than whitespace.
    #[error("unexpected data after the JSON value at byte {offset}")]
    TrailingData {
        /// Byte offset of the first trailing byte.
        offset: usize,
    },
    /// The top-level JSON value is an array (a JSON-RPC batch); batches are not accepted.
    #[error("JSON-RPC batches are not accepted")]
    Batch,
    /// The top-level JSON value is not an object.
    #[error("the JSON-RPC message must be a JSON object")]
    NotObject,
    /// An object contains the same key twice (at any depth).
    #[error("duplicate object key {key:?}")]
    DuplicateKey {
        /// The duplicated key (truncated).
        key: String,
    },
    /// Arrays/objects are nested deeper than the limit.
    #[error("JSON nesting deeper than {limit} levels")]
    TooDeep {
        /// The nesting limit.
        limit: usize,
    },
    /// `jsonrpc` is missing or not exactly `"2.0"`.
    #[error("\"jsonrpc\" must be the string \"2.0\"")]
    InvalidVersion,
    /// A protocol key appears in a non-canonical spelling (e.g. `Method`, `PARAMS`).
    #[error("key {key:?} is a non-canonical spelling of a JSON-RPC/MCP member")]
    NonCanonicalKey {
        /// The offending key (truncated).
        key: String,
    },
    /// The message has neither `method` nor `result`/`error`.
    #[error("message has no \"method\" and is not a response")]
    MissingMethod,
    /// `method` is present but not a string.
    #[error("\"method\" must be a string")]
    MethodNotString,
    /// `method` is empty.
    #[error("\"method\" must not be empty")]
    EmptyMethod,
    /// A method or tool name contains a NUL, control or invisible formatting character.
    #[error("{field} contains a control or invisible character")]
    ControlCharacter {
        /// Which field (`method` or `tool name`).
        field: &'static str,
    },
    /// `id` is present but not a number, string or null.
    #[error("\"id\" must be a number, a string or null")]
    InvalidId,
    /// `params` is present but neither an object nor an array.
    #[error("\"params\" must be an object or an array")]
    InvalidParams,
    /// A `tools/call` request without a non-empty string `params.name`.
    #[error("tools/call requires a string \"params.name\"")]
    MissingToolName,
    /// `params.arguments` of a `tools/call` is present but not an object.
    #[error("tools/call \"params.arguments\" must be an object")]
    InvalidArguments,
    /// A member that must be a string (e.g. `params.protocolVersion`) is not.
    #[error("\"{field}\" has the wrong type")]
    InvalidField {
        /// The member name.
        field: &'static str,
    },
    /// The members present do not form a valid JSON-RPC message.
    #[error("invalid JSON-RPC message: {0}")]
    InvalidMessage(&'static str),
    /// The request `Content-Type` is not `application/json` (optionally `charset=utf-8`).
    #[error("unsupported Content-Type (expected application/json)")]
    UnsupportedContentType,
    /// The request has a `Content-Encoding` other than `identity`.
    #[error("unsupported Content-Encoding (only identity is accepted)")]
    UnsupportedContentEncoding,
    /// A response to a `tools/list` request is not a well-formed result.
    #[error("malformed tools/list response: {0}")]
    MalformedToolsList(&'static str),
    /// A partial SSE event grew beyond the buffer cap.
    #[error("SSE event exceeds the limit of {limit} bytes")]
    SseEventTooLarge {
        /// The cap in bytes.
        limit: usize,
    },
    /// The SSE stream ended in the middle of an event.
    #[error("SSE stream ended inside an incomplete event")]
    SseIncompleteEvent,
    /// The SSE filter already failed; the stream must be aborted.
    #[error("SSE filter already failed; the stream must be aborted")]
    SseFilterFailed,
}

impl McpError {
    /// The JSON-RPC 2.0 error code for this error: `-32700` (parse error) for bodies that are
    /// not UTF-8 JSON text, `-32602` (invalid params) for bad `params`, `-32603` (internal
    /// error) for malformed upstream responses, `-32600` (invalid request) otherwise.
    #[must_use]
    pub fn jsonrpc_code(&self) -> i64 {
        match self {
            Self::InvalidUtf8 { .. } | Self::NotJson { .. } | Self::TrailingData { .. } => {
                crate::codes::PARSE_ERROR
            }
            Self::InvalidParams
            | Self::MissingToolName
            | Self::InvalidArguments
            | Self::InvalidField { .. } => crate::codes::INVALID_PARAMS,
            Self::MalformedToolsList(_)
            | Self::SseEventTooLarge { .. }
            | Self::SseIncompleteEvent
            | Self::SseFilterFailed => crate::codes::INTERNAL_ERROR,
            _ => crate::codes::INVALID_REQUEST,
        }
    }

    /// A stable, machine-readable snake_case name for the error (used in `error.data.reason`,
    /// metrics labels and audit records).
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::InvalidUtf8 { .. } => "invalid_utf8",
            Self::NotJson { .. } => "not_json",
            Self::TrailingData { .. } => "trailing_data",
            Self::Batch => "batch",
            Self::NotObject => "not_object",
            Self::DuplicateKey { .. } => "duplicate_key",
            Self::TooDeep { .. } => "too_deep",
            Self::InvalidVersion => "invalid_version",
            Self::NonCanonicalKey { .. } => "non_canonical_key",
            Self::MissingMethod => "missing_method",
            Self::MethodNotString => "method_not_string",
            Self::EmptyMethod => "empty_method",
            Self::ControlCharacter { .. } => "control_character",
            Self::InvalidId => "invalid_id",
            Self::InvalidParams => "invalid_params",
            Self::MissingToolName => "missing_tool_name",
            Self::InvalidArguments => "invalid_arguments",
            Self::InvalidField { .. } => "invalid_field",
            Self::InvalidMessage(_) => "invalid_message",
            Self::UnsupportedContentType => "unsupported_content_type",
            Self::UnsupportedContentEncoding => "unsupported_content_encoding",
            Self::MalformedToolsList(_) => "malformed_tools_list",
            Self::SseEventTooLarge { .. } => "sse_event_too_large",
            Self::SseIncompleteEvent => "sse_incomplete_event",
            Self::SseFilterFailed => "sse_filter_failed",
        }
    }

    /// The serialized JSON-RPC 2.0 error response for this error, answering `id` (or `null`
    /// when the request id is unknown, e.g. the body did not parse).
    ///
    /// `error.message` is this error's Display text; `error.data` is `{"reason": ...}`
    /// (see [`McpError::reason`]).
    #[must_use]
    pub fn jsonrpc_error_body(&self, id: Option<&serde_json::Value>) -> Vec<u8> {
        crate::jsonrpc_error(
            id,
            self.jsonrpc_code(),
            &self.to_string(),
            Some(serde_json::json!({ "reason": self.reason() })),
        )
    }

    pub(crate) fn duplicate_key(key: &str) -> Self {
        Self::DuplicateKey { key: truncate(key) }
    }

    pub(crate) fn non_canonical(key: &str) -> Self {
        Self::NonCanonicalKey { key: truncate(key) }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(MAX_ECHO_CHARS).collect()
}
