//! MCP routes (SPEC §6): strict JSON-RPC inspection of requests, JSON-RPC shaped
//! refusals, and `tools/list` responses filtered to what policy would allow.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use chaperone_mcp::{McpRequest, SseToolsFilter};
use chaperone_sessions::Session;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Response};
use http_body::{Body, Frame};
use regorus::Value;

use crate::body::{full, BoxError, ProxyBody};
use crate::error::{Code, Refusal};
use crate::input;
use crate::pipeline::ConnInfo;
use crate::policy_object;
use crate::sidecar::Sidecar;

/// Check headers and parse the body; refusals carry the JSON-RPC id when known.
pub fn inspect(headers: &HeaderMap, body: &[u8], max: usize) -> Result<McpRequest, Refusal> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let ce = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let refuse = |e: chaperone_mcp::McpError| {
        let mut r = Refusal::bad_request(format!("MCP request refused: {e}"));
        r.rpc = Some((e.jsonrpc_code(), e.reason()));
        r
    };
    chaperone_mcp::check_content_headers(ct, ce).map_err(refuse)?;
    chaperone_mcp::parse_request(body, max).map_err(refuse)
}

/// An MCP body over the inspection cap: refused before parsing, like the parser would.
pub fn too_large(max: usize) -> Refusal {
    let mut r = Refusal::bad_request(format!("MCP request refused: body exceeds {max} bytes"));
    r.rpc = Some((chaperone_mcp::codes::INVALID_REQUEST, "too_large"));
    r
}

/// `input.request.mcp`.
pub fn mcp_value(m: &McpRequest) -> Value {
    policy_object! {
        METHOD => Value::from(m.method.as_str()),
        ID => m.id.clone().map(input::json).unwrap_or(Value::Null),
        TOOL => m.tool.as_deref().map(Value::from).unwrap_or(Value::Null),
        ARGUMENTS => input::json(m.arguments.clone()),
        CLIENT_INFO => m.client_info.clone().map(input::json).unwrap_or(Value::Null),
    }
}

/// A refusal on an MCP route: HTTP status of SPEC §9, JSON-RPC error body so MCP
/// clients surface it as an error of the call that caused it.
pub fn refusal_response(
    r: Refusal,
    request_id: &str,
    jsonrpc_id: Option<&serde_json::Value>,
) -> Response<ProxyBody> {
    let mut code = chaperone_mcp::refusal_code(r.code.as_str());
    let mut data = serde_json::json!({"error": r.code.as_str(), "request_id": request_id});
    if let Some((rpc_code, reason)) = r.rpc {
        code = rpc_code;
        data["reason"] = serde_json::Value::String(reason.to_owned());
    }
    if !r.reasons.is_empty() {
        data["reasons"] = serde_json::json!(r.reasons);
    }
    // docs/mcp.md: `<code>: <reason>; <reason>` so SDK users see the policy's words.
    let message = if r.reasons.is_empty() {
        r.message.clone()
    } else if r.code == Code::Denied {
        format!("denied: {}", r.reasons.join("; "))
    } else {
        format!("{}: {}", r.message, r.reasons.join("; "))
    };
    let body = chaperone_mcp::jsonrpc_error(jsonrpc_id, code, &message, Some(data));
    let mut resp = Response::new(full(Bytes::from(body)));
    *resp.status_mut() = r.status();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn hidden_key(conn: &ConnInfo, session: Option<&Session>, route: &str) -> String {
    format!(
        "{}|{}|{}",
        conn.spiffe,
        session.map(|s| s.id.as_str()).unwrap_or("-"),
        route
    )
}

pub fn is_hidden(
    sc: &Sidecar,
    conn: &ConnInfo,
    session: Option<&Session>,
    route: &str,
    tool: &str,
) -> bool {
    sc.hidden_tools
        .get(&hidden_key(conn, session, route))
        .is_some_and(|s| s.contains(tool))
}

type Predicate = Box<dyn FnMut(&str, &serde_json::Value) -> bool + Send>;

/// The parts needed to evaluate "could this session call tool X?".
pub struct ToolsFilter {
    pub sidecar: Arc<Sidecar>,
    pub conn: Arc<ConnInfo>,
    pub session: Option<Arc<Session>>,
    pub route: String,
    pub request_id: serde_json::Value,
    /// Builds the call input for a given `request.mcp` value.
    pub make_input: Arc<dyn Fn(Value) -> Value + Send + Sync>,
}

impl ToolsFilter {
    /// A predicate: evaluates a synthetic `tools/call` per tool and remembers
    /// hidden tools so that calling them is denied too.
    fn predicate(&self) -> impl FnMut(&str, &serde_json::Value) -> bool + Send + 'static {
        let sc = self.sidecar.clone();
        let make = self.make_input.clone();
        let key = hidden_key(&self.conn, self.session.as_deref(), &self.route);
        move |name: &str, _tool: &serde_json::Value| {
            let mcp = policy_object! {
                METHOD => Value::from("tools/call"),
                ID => Value::Null,
                TOOL => Value::from(name),
                ARGUMENTS => input::empty_object(),
                CLIENT_INFO => Value::Null,
            };
            let d = sc.policy.current().eval_call(make(mcp));
            let ok = d.permitted() && d.revoke_session.is_empty();
            let mut hidden = sc.hidden_tools.entry(key.clone()).or_default();
            if ok {
                hidden.remove(name);
            } else {
                hidden.insert(name.to_owned());
            }
            ok
        }
    }
}

const MAX_TOOLS_LIST_JSON: usize = 16 * 1024 * 1024;

/// Filter a successful upstream response to a `tools/list` request.
pub async fn filter_response(
    f: ToolsFilter,
    headers: &mut HeaderMap,
    body: hyper::body::Incoming,
) -> Result<ProxyBody, Refusal> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    if ct.starts_with("text/event-stream") {
        headers.remove(header::CONTENT_LENGTH);
        let pred = f.predicate();
        let pred: Predicate = Box::new(pred);
        let filter = SseToolsFilter::new(f.request_id.clone(), pred);
        return Ok(http_body_util::BodyExt::boxed_unsync(SseBody {
            inner: body,
            filter: Some(filter),
        }));
    }
    if ct.starts_with("application/json") {
        let bytes = crate::pipeline::read_body(body, MAX_TOOLS_LIST_JSON)
            .await
            .map_err(|_| {
                Refusal::new(
                    Code::UpstreamUnavailable,
                    "tools/list response too large or unreadable",
                )
            })?;
        let mut pred = f.predicate();
        let out = chaperone_mcp::filter_tools_list_json(&bytes, &f.request_id, &mut pred).map_err(
            |e| {
                Refusal::new(
                    Code::UpstreamUnavailable,
                    format!("malformed tools/list response: {e}"),
                )
            },
        )?;
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
        return Ok(full(Bytes::from(out)));
    }
    // 202 Accepted and friends have no body to filter.
    if headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0")
    {
        return Ok(crate::body::incoming(body));
    }
    Err(Refusal::new(
        Code::UpstreamUnavailable,
        format!("tools/list response has an unexpected content type {ct:?}"),
    ))
}

/// SSE response body filtered event by event.
struct SseBody {
    inner: hyper::body::Incoming,
    filter: Option<SseToolsFilter<Predicate>>,
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            let Some(filter) = self.filter.as_mut() else {
                return Poll::Ready(None);
            };
            let _ = filter;
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let Some(filter) = self.filter.as_mut() else {
                        return Poll::Ready(None);
                    };
                    match filter.push(&data) {
                        Ok(out) if out.is_empty() => continue,
                        Ok(out) => return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out))))),
                        Err(e) => {
                            self.filter = None;
                            return Poll::Ready(Some(Err(Box::new(e))));
                        }
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.filter = None;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                Poll::Ready(None) => {
                    let Some(mut filter) = self.filter.take() else {
                        return Poll::Ready(None);
                    };
                    return match filter.finish() {
                        Ok(out) if out.is_empty() => Poll::Ready(None),
                        Ok(out) => Poll::Ready(Some(Ok(Frame::data(Bytes::from(out))))),
                        Err(e) => Poll::Ready(Some(Err(Box::new(e)))),
                    };
                }
            }
        }
    }
}
