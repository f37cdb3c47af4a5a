//! Strict parsing of one client-to-server JSON-RPC message (an MCP streamable HTTP POST body).

use serde_json::{Map, Value};

use crate::json::parse_document;
use crate::McpError;

/// Maximum nesting depth of arrays/objects in a request body.
pub const MAX_REQUEST_DEPTH: usize = 64;

/// Default cap for a request body, in bytes (1 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// Top-level members whose spelling is checked case-insensitively.
const TOP_LEVEL_KEYS: &[&str] = &["jsonrpc", "method", "params", "id", "result", "error"];
/// Members of `params` whose spelling is checked case-insensitively.
const PARAMS_KEYS: &[&str] = &["name", "arguments", "clientInfo", "protocolVersion"];

/// What kind of JSON-RPC message a body carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// A request (`method` and `id`): the server answers it.
    Request,
    /// A notification (`method`, no `id`): the server answers `202 Accepted`.
    Notification,
    /// A response (`result` or `error`, with `id`) to a server-initiated request.
    Response,
}

/// The inspected content of one JSON-RPC message sent by the agent.
#[derive(Debug, Clone, PartialEq)]
pub struct McpRequest {
    /// The JSON-RPC method (e.g. `tools/call`); empty for a [`MessageKind::Response`].
    pub method: String,
    /// The `id` member as sent (number, string or null); `None` when absent.
    pub id: Option<Value>,
    /// For `tools/call`: `params.name`.
    pub tool: Option<String>,
    /// For `tools/call`: `params.arguments` (`{}` when absent); otherwise `params` (or null).
    pub arguments: Value,
    /// For `initialize`: `params.clientInfo`.
    pub client_info: Option<Value>,
    /// For `initialize`: `params.protocolVersion`.
    pub protocol_version: Option<String>,
    /// Request, notification or response.
    pub kind: MessageKind,
}

impl McpRequest {
    /// The `input.request.mcp` document policy sees: `{"method", "tool", "arguments"}`.
    #[must_use]
    pub fn policy_input(&self) -> Value {
        serde_json::json!({
            "method": self.method,
            "tool": self.tool,
            "arguments": self.arguments,
        })
    }
}

/// Parse one MCP JSON-RPC message strictly.
///
/// The size is checked before anything else; then the whole body is validated (UTF-8, one
/// JSON text, no duplicate keys at any depth, nesting ≤ [`MAX_REQUEST_DEPTH`]) before any
/// member is looked at. Any failure rejects the whole message: nothing is partly inspected.
///
/// # Errors
/// A distinct [`McpError`] variant for each rejection (see the crate documentation).
pub fn parse_request(body: &[u8], max_bytes: usize) -> Result<McpRequest, McpError> {
    if body.len() > max_bytes {
        return Err(McpError::TooLarge {
            limit: max_bytes,
            actual: body.len(),
        });
    }
    let value = parse_document(body, MAX_REQUEST_DEPTH)?;
    let obj = match value {
        Value::Object(obj) => obj,
        Value::Array(_) => return Err(McpError::Batch),
        _ => return Err(McpError::NotObject),
    };
    check_canonical_keys(&obj, TOP_LEVEL_KEYS)?;

    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(McpError::InvalidVersion);
    }
    let id = match obj.get("id") {
        None => None,
        Some(v @ (Value::Number(_) | Value::String(_) | Value::Null)) => Some(v.clone()),
        Some(_) => return Err(McpError::InvalidId),
    };
    let has_result = obj.contains_key("result");
    let has_error = obj.contains_key("error");

    let method = match obj.get("method") {
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err(McpError::MethodNotString),
        None => {
            return parse_response(&obj, id, has_result, has_error);
        }
    };
    if has_result || has_error {
        return Err(McpError::InvalidMessage(
            "a request must not carry \"result\" or \"error\"",
        ));
    }
    if method.is_empty() {
        return Err(McpError::EmptyMethod);
    }
    if has_forbidden_chars(&method) {
        return Err(McpError::ControlCharacter { field: "method" });
    }
    let kind = if id.is_some() {
        MessageKind::Request
    } else {
        MessageKind::Notification
    };

    let params = match obj.get("params") {
        None => None,
        Some(Value::Object(p)) => {
            check_canonical_keys(p, PARAMS_KEYS)?;
            Some(p)
        }
        Some(Value::Array(_)) => None,
        Some(_) => return Err(McpError::InvalidParams),
    };
    let raw_params = obj.get("params").cloned().unwrap_or(Value::Null);

    let mut req = McpRequest {
        method,
        id,
        tool: None,
        arguments: raw_params,
        client_info: None,
        protocol_version: None,
        kind,
    };

    match req.method.as_str() {
        "tools/call" => {
            let p = params.ok_or(McpError::MissingToolName)?;
            let name = match p.get("name") {
                Some(Value::String(n)) if !n.is_empty() => n.clone(),
                _ => return Err(McpError::MissingToolName),
            };
            if has_forbidden_chars(&name) {
                return Err(McpError::ControlCharacter { field: "tool name" });
            }
            req.arguments = match p.get("arguments") {
                None => Value::Object(Map::new()),
                Some(a @ Value::Object(_)) => a.clone(),
                Some(_) => return Err(McpError::InvalidArguments),
            };
            req.tool = Some(name);
        }
        "initialize" => {
            if let Some(p) = params {
                req.client_info = p.get("clientInfo").cloned();
                req.protocol_version = match p.get("protocolVersion") {
                    None => None,
                    Some(Value::String(v)) => Some(v.clone()),
                    Some(_) => {
                        return Err(McpError::InvalidField {
                            field: "protocolVersion",
                        })
                    }
                };
            }
        }
        _ => {}
    }
    Ok(req)
}

fn parse_response(
    obj: &Map<String, Value>,
    id: Option<Value>,
    has_result: bool,
    has_error: bool,
) -> Result<McpRequest, McpError> {
    if !has_result && !has_error {
        return Err(McpError::MissingMethod);
    }
    if has_result && has_error {
        return Err(McpError::InvalidMessage(
            "a response must not carry both \"result\" and \"error\"",
        ));
    }
    let id = id.ok_or(McpError::InvalidMessage("a response must carry an \"id\""))?;
    if obj.contains_key("params") {
        return Err(McpError::InvalidMessage(
            "a response must not carry \"params\"",
        ));
    }
    let payload = if has_result {
        obj.get("result")
    } else {
        match obj.get("error") {
            Some(e @ Value::Object(_)) => Some(e),
            _ => return Err(McpError::InvalidMessage("\"error\" must be an object")),
        }
    };
    Ok(McpRequest {
        method: String::new(),
        id: Some(id),
        tool: None,
        arguments: payload.cloned().unwrap_or(Value::Null),
        client_info: None,
        protocol_version: None,
        kind: MessageKind::Response,
    })
}

/// Reject any key that equals one of `canonical` ignoring case but is spelled differently.
pub(crate) fn check_canonical_keys(
    obj: &Map<String, Value>,
    canonical: &[&str],
) -> Result<(), McpError> {
    for key in obj.keys() {
        for c in canonical {
            if key != c && fold(key) == fold(c) {
                return Err(McpError::non_canonical(key));
            }
        }
    }
    Ok(())
}

/// Case folding for the spelling check: Unicode lowercase (which already maps the Kelvin
/// sign to `k`), with long s and dotless i (which some case-insensitive matchers fold to
/// ASCII) mapped to their ASCII letters.
fn fold(s: &str) -> String {
    s.chars()
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'ſ' => 's',
            'ı' => 'i',
            other => other,
        })
        .collect()
}

/// NUL, C0/C1 controls, DEL and invisible formatting characters (bidi controls, zero-width
/// characters, BOM) that could make a name display differently from what policy matched.
pub(crate) fn has_forbidden_chars(s: &str) -> bool {
    s.chars().any(|c| {
        c.is_control()
            || matches!(c,
                '\u{00AD}'
                | '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{E0000}'..='\u{E007F}')
    })
}

/// Check the request's `Content-Type` and `Content-Encoding` headers.
///
/// Accepted: `application/json` (any ASCII case, surrounding whitespace allowed) with at most
/// a `charset=utf-8` parameter (quoted or not); no `Content-Encoding`, or `identity`.
///
/// # Errors
/// [`McpError::UnsupportedContentType`] or [`McpError::UnsupportedContentEncoding`].
pub fn check_content_headers(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
) -> Result<(), McpError> {
    if let Some(enc) = content_encoding {
        if !enc.trim().eq_ignore_ascii_case("identity") {
            return Err(McpError::UnsupportedContentEncoding);
        }
    }
    let ct = content_type.ok_or(McpError::UnsupportedContentType)?;
    let mut parts = ct.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(McpError::UnsupportedContentType);
    }
    let mut seen_charset = false;
    for param in parts {
        let param = param.trim();
        if param.is_empty() {
            continue;
        }
        let (name, value) = param
            .split_once('=')
            .ok_or(McpError::UnsupportedContentType)?;
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if seen_charset
            || !name.trim().eq_ignore_ascii_case("charset")
            || !value.eq_ignore_ascii_case("utf-8")
        {
            return Err(McpError::UnsupportedContentType);
        }
        seen_charset = true;
    }
    Ok(())
}
