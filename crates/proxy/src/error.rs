//! The boundary error: every refusal the sidecar returns to an agent is a [`Refusal`],
//! which maps to exactly one HTTP status and the SPEC §9 JSON body
//! `{"error": "<code>", "message": "...", "request_id": "...", "reasons": [...]}`.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use crate::body::{full, ProxyBody};

/// The stable error codes of SPEC §9.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Denied,
    ApprovalDenied,
    ApprovalTimeout,
    NoSession,
    InvalidSession,
    NoRoute,
    BadRequest,
    CredentialUnavailable,
    UpstreamUnavailable,
    UpstreamTimeout,
    PayloadTooLarge,
    Unavailable,
    Internal,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Denied => "denied",
            Code::ApprovalDenied => "approval_denied",
            Code::ApprovalTimeout => "approval_timeout",
            Code::NoSession => "no_session",
            Code::InvalidSession => "invalid_session",
            Code::NoRoute => "no_route",
            Code::BadRequest => "bad_request",
            Code::CredentialUnavailable => "credential_unavailable",
            Code::UpstreamUnavailable => "upstream_unavailable",
            Code::UpstreamTimeout => "upstream_timeout",
            Code::PayloadTooLarge => "payload_too_large",
            Code::Unavailable => "unavailable",
            Code::Internal => "internal",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Code::Denied | Code::ApprovalDenied | Code::ApprovalTimeout => StatusCode::FORBIDDEN,
            Code::NoSession | Code::InvalidSession => StatusCode::UNAUTHORIZED,
            Code::NoRoute => StatusCode::NOT_FOUND,
            Code::BadRequest => StatusCode::BAD_REQUEST,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::CredentialUnavailable | Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Code::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A refusal: why the call did not go through. Never carries a secret: messages are
/// written by us, and provider errors are sanitised by the credentials crate.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub code: Code,
    /// Overrides `code.status()` (e.g. 403 for a token presented by the wrong identity).
    pub status: Option<StatusCode>,
    pub message: String,
    pub reasons: Vec<String>,
    /// On MCP routes: the JSON-RPC error code and the stable rejection reason of
    /// the MCP parser (`data.reason`), when the refusal came from inspection.
    pub rpc: Option<(i64, &'static str)>,
}

impl Refusal {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Refusal {
            code,
            status: None,
            message: message.into(),
            reasons: Vec::new(),
            rpc: None,
        }
    }

    pub fn with_reasons(mut self, reasons: Vec<String>) -> Self {
        self.reasons = reasons;
        self
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or_else(|| self.code.status())
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Refusal::new(Code::BadRequest, message)
    }

    /// The JSON body of SPEC §9.
    pub fn body_json(&self, request_id: &str) -> serde_json::Value {
        let mut body = serde_json::json!({
            "error": self.code.as_str(),
            "message": self.message,
            "request_id": request_id,
        });
        if !self.reasons.is_empty() {
            body["reasons"] = serde_json::json!(self.reasons);
        }
        body
    }

    /// Render as an HTTP response. `close` asks the client to drop the connection
    /// (used after framing errors, where the rest of the stream cannot be trusted).
    pub fn into_response(self, request_id: &str, close: bool) -> Response<ProxyBody> {
        let body = self.body_json(request_id).to_string();
        json_response(self.status(), Bytes::from(body), request_id, close)
    }
}

/// A JSON response with the request id header.
pub fn json_response(
    status: StatusCode,
    body: Bytes,
    request_id: &str,
    close: bool,
) -> Response<ProxyBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-request-id", v);
    }
    if close {
        h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Errors while starting or running the sidecar (not per-request).
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("binding {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("identity: {0}")]
    Identity(#[from] chaperone_identity::IdentityError),
    #[error("policy: {0}")]
    Policy(#[from] chaperone_policy::PolicyError),
    #[error("credentials: {0}")]
    Credentials(#[from] chaperone_credentials::CredentialError),
    #[error("audit: {0}")]
    Audit(#[from] chaperone_audit::AuditError),
    #[error("route {route}: {message}")]
    Route { route: String, message: String },
    #[error("{0}")]
    Other(String),
}
