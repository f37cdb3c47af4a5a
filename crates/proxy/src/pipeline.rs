//! The request pipeline. Every agent call goes through these phases, in this
//! order, and any phase may refuse. Nothing is forwarded unless every phase before
//! `forward` succeeded: the decision path fails closed.
//!
//! ```text
//!  1. connection checks   peer SVID still valid; HTTP/1 framing verdict (sniff.rs)
//!  2. reserved API        /.chaperone/v1/sessions...  -> session_api.rs
//!  3. request target      CONNECT / upgrade / Host / absolute-form checks; canonical path
//!  4. route               host, then longest prefix                       -> 404 no_route
//!  5. identity            SPIFFE ID -> `identities` attributes            -> 403
//!  6. session             `chaperone-session` token, bound to the SPIFFE ID -> 401/403
//!  7. header hygiene      hop-by-hop, agent credentials, cookies, x-chaperone-*
//!  8. inspection          MCP JSON-RPC body (size-capped, strict)         -> 400
//!  9. decision            Rego `data.chaperone.authz`                      -> 403 denied
//! 10. revoke_session      anomaly -> end the whole session                -> 403
//! 11. approval            hold for a human                                -> 403 on deny/timeout
//! 12. credential          JIT credential for (session, credential)       -> 503
//! 13. forward             pooled upstream client, exact canonical path    -> 502/504
//! 14. response            hop-by-hop stripped; MCP tools/list filtered
//! 15. account             session stats, metrics, audit `request.decided`
//! ```

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use chaperone_audit::AuditEvent;
use chaperone_config::Protocol;
use chaperone_credentials::IssueContext;
use chaperone_identity::SpiffeId;
use chaperone_policy::Decision;
use chaperone_sessions::{EndReason, Session, SessionError};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use regorus::Value;

use crate::approvals::{self, ApprovalRecord, HoldOutcome};
use crate::body::{self, ProxyBody};
use crate::canon;
use crate::error::{Code, Refusal};
use crate::headers::{self, SESSION_HEADER};
use crate::input::{self, CallInput};
use crate::mcp_phase;
use crate::policy_object;
use crate::sidecar::{intent_summary, Sidecar};
use crate::sniff::{Verdict, Verdicts};

/// Per-connection facts, fixed at handshake time.
pub struct ConnInfo {
    pub spiffe: SpiffeId,
    /// Peer certificate expiry (unix seconds).
    pub not_after: i64,
    pub peer: std::net::SocketAddr,
    /// HTTP/1 framing verdicts (absent on HTTP/2, whose framing is unambiguous).
    pub verdicts: Option<Arc<Verdicts>>,
    /// `input.identity` for this peer, cached per routing generation (SIGHUP may
    /// change the `identities` mapping).
    pub identity_cache: parking_lot::Mutex<Option<(usize, Value)>>,
}

impl ConnInfo {
    pub fn new(
        spiffe: SpiffeId,
        not_after: i64,
        peer: std::net::SocketAddr,
        verdicts: Option<Arc<Verdicts>>,
    ) -> ConnInfo {
        ConnInfo {
            spiffe,
            not_after,
            peer,
            verdicts,
            identity_cache: parking_lot::Mutex::new(None),
        }
    }

    /// The identity value for the current routing, or `None` when the SPIFFE ID
    /// matches no `identities` entry.
    fn identity(&self, routing: &Arc<crate::sidecar::Routing>) -> Option<Value> {
        let generation = Arc::as_ptr(routing) as usize;
        let mut cache = self.identity_cache.lock();
        if let Some((g, v)) = cache.as_ref() {
            if *g == generation {
                return Some(v.clone());
            }
        }
        let attributes = routing.identities.resolve(&self.spiffe)?;
        let v = input::identity_value(
            self.spiffe.as_str(),
            self.spiffe.trust_domain(),
            self.spiffe.path(),
            attributes,
        );
        *cache = Some((generation, v.clone()));
        Some(v)
    }
}

/// What the audit record and metrics of one call need, filled in as phases run.
pub struct CallRecord {
    pub request_id: String,
    pub started: Instant,
    pub method: String,
    pub path: String,
    pub route: Option<String>,
    pub session: Option<Arc<Session>>,
    pub tool: Option<String>,
    pub decision: &'static str,
    pub reasons: Vec<String>,
    pub credential: Option<String>,
    pub credential_id: Option<String>,
    pub status: u16,
    pub policy_revision: Option<String>,
    /// Set when the session stats should count this call.
    pub counted: bool,
    pub data_domain: Option<String>,
    /// JSON-RPC id of an MCP request (refusals answer it).
    pub jsonrpc_id: Option<serde_json::Value>,
    /// Refusals on MCP routes are JSON-RPC shaped.
    pub mcp_route: bool,
}

/// Request ids: a random per-process prefix and a counter. Unique and unguessable
/// enough for correlation, without a getrandom syscall per request.
fn new_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PREFIX: OnceLock<String> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut b = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
        hex::encode(b)
    });
    format!("{prefix}{:08x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Entry point for every agent request.
pub async fn handle(
    sc: Arc<Sidecar>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let mut rec = CallRecord {
        request_id: new_request_id(),
        started: Instant::now(),
        method: req.method().as_str().to_owned(),
        path: req.uri().path().to_owned(),
        route: None,
        session: None,
        tool: None,
        decision: "refused",
        reasons: Vec::new(),
        credential: None,
        credential_id: None,
        status: 0,
        policy_revision: None,
        counted: false,
        data_domain: None,
        jsonrpc_id: None,
        mcp_route: false,
    };
    let result = run(&sc, &conn, req, &mut rec).await;
    let mut resp = match result {
        Ok(resp) => resp,
        Err((refusal, close)) => {
            if rec.reasons.is_empty() {
                rec.reasons = if refusal.reasons.is_empty() {
                    vec![refusal.message.clone()]
                } else {
                    refusal.reasons.clone()
                };
            }
            if rec.mcp_route {
                mcp_phase::refusal_response(refusal, &rec.request_id, rec.jsonrpc_id.as_ref())
            } else {
                refusal.into_response(&rec.request_id, close)
            }
        }
    };
    if let Ok(v) = HeaderValue::from_str(&rec.request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    rec.status = resp.status().as_u16();
    account(&sc, &conn, rec);
    Ok(resp)
}

type PhaseResult<T> = Result<T, (Refusal, bool)>;

fn refuse<T>(r: Refusal) -> PhaseResult<T> {
    Err((r, false))
}

async fn run(
    sc: &Arc<Sidecar>,
    conn: &Arc<ConnInfo>,
    req: Request<Incoming>,
    rec: &mut CallRecord,
) -> PhaseResult<Response<ProxyBody>> {
    // 1. connection checks ---------------------------------------------------
    if let Some(v) = &conn.verdicts {
        if let Verdict::Ambiguous(why) = v.next() {
            return Err((
                Refusal::bad_request(format!("ambiguous request framing: {why}")),
                true,
            ));
        }
    }
    let now_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if now_unix > conn.not_after {
        return Err((
            Refusal::new(
                Code::Denied,
                "client certificate has expired; reconnect with a current SVID",
            )
            .with_status(StatusCode::UNAUTHORIZED),
            true,
        ));
    }

    // 2. reserved API ----------------------------------------------------------
    if req.uri().path().starts_with("/.chaperone/") {
        rec.route = Some("chaperone-api".into());
        // Rare branches are boxed throughout, so that their futures do not grow the
        // per-request future hyper moves (tests::the_per_request_future_stays_small).
        return Box::pin(crate::session_api::handle(sc, conn, req, rec))
            .await
            .map_err(|r| (r, false));
    }

    // 3. request target ----------------------------------------------------------
    let (mut parts, body) = req.into_parts();
    if parts.method == Method::CONNECT {
        return Err((Refusal::bad_request("CONNECT is not supported"), true));
    }
    if parts.headers.get_all(header::HOST).iter().count() > 1 {
        return Err((Refusal::bad_request("duplicate Host header"), true));
    }
    if parts.headers.get_all(header::CONTENT_LENGTH).iter().count() > 1 {
        return Err((Refusal::bad_request("duplicate Content-Length"), true));
    }
    let host = request_host(&parts.uri, &parts.headers).map_err(|r| (r, true))?;
    let path = canon::canonicalize_path(parts.uri.path())
        .map_err(|e| (Refusal::bad_request(e.to_string()), false))?;
    let query = parts.uri.query().map(str::to_owned);
    if let Some(q) = &query {
        canon::check_query(q).map_err(|e| (Refusal::bad_request(e.to_string()), false))?;
    }
    rec.path = path.clone();

    // 4. route -------------------------------------------------------------------
    let routing = sc.routing.load_full();
    let Some(m) = routing.routes.lookup(host.as_deref(), &path) else {
        return refuse(Refusal::new(
            Code::NoRoute,
            format!("no route matches {path}"),
        ));
    };
    let route = m.route.clone();
    let route_path = m.route_path.to_owned();
    rec.route = Some(route.route.name.clone());
    rec.data_domain = route.data_domain.clone();
    let is_mcp = route.route.protocol == Protocol::Mcp;
    rec.mcp_route = is_mcp;
    if parts.headers.contains_key(header::UPGRADE) {
        return Err((
            Refusal::bad_request(format!(
                "protocol upgrade is not allowed on route {}",
                route.route.name
            )),
            true,
        ));
    }

    // 5. identity ------------------------------------------------------------------
    let Some(identity) = conn.identity(&routing) else {
        return refuse(Refusal::new(
            Code::Denied,
            format!("identity {} matches no `identities` entry", conn.spiffe),
        ));
    };

    // 6. session --------------------------------------------------------------------
    let session = authenticate(sc, conn, &parts.headers).map_err(|r| (r, false))?;
    rec.session = session.clone();

    // 7. header hygiene (before policy: policy never sees credentials) ---------------
    headers::sanitize_request(&mut parts.headers, &routing.inject_headers);
    parts.headers.remove(header::HOST);

    // 8. inspection --------------------------------------------------------------------
    let body_len = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if is_mcp && parts.method == Method::POST {
        // MCP: the whole (size-capped) body is inspected, and exactly those bytes are forwarded.
        let max = sc.cfg().limits.max_body_bytes;
        let bytes = Box::pin(read_body(body, max)).await.map_err(|r| {
            let r = if r.code == Code::PayloadTooLarge {
                mcp_phase::too_large(max)
            } else {
                r
            };
            (r, false)
        })?;
        let parsed = mcp_phase::inspect(&parts.headers, &bytes, max).map_err(|r| (r, false))?;
        rec.tool = parsed.tool.clone();
        rec.jsonrpc_id = parsed.id.clone();
        let mcp_value = mcp_phase::mcp_value(&parsed);
        return decide_and_forward(
            sc,
            conn,
            rec,
            parts,
            None,
            Some(bytes),
            body_len,
            route,
            route_path,
            query,
            host,
            identity,
            session,
            mcp_value,
            Some(parsed),
        )
        .await;
    }
    decide_and_forward(
        sc,
        conn,
        rec,
        parts,
        Some(body),
        None,
        body_len,
        route,
        route_path,
        query,
        host,
        identity,
        session,
        Value::Null,
        None,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn decide_and_forward(
    sc: &Arc<Sidecar>,
    conn: &Arc<ConnInfo>,
    rec: &mut CallRecord,
    mut parts: http::request::Parts,
    stream_body: Option<Incoming>,
    mut buffered: Option<Bytes>,
    body_len: Option<u64>,
    route: Arc<crate::route::RouteEntry>,
    route_path: String,
    query: Option<String>,
    host: Option<String>,
    identity: Value,
    session: Option<Arc<Session>>,
    mcp_value: Value,
    mcp_req: Option<chaperone_mcp::McpRequest>,
) -> PhaseResult<Response<ProxyBody>> {
    let cfg = sc.cfg();
    let routing = sc.routing.load_full();
    let now = SystemTime::now();

    // Hidden tools stay hidden: a tool filtered out of tools/list is denied on call.
    if let (Some(m), Some(tool)) = (&mcp_req, &rec.tool) {
        if m.method == "tools/call"
            && mcp_phase::is_hidden(sc, conn, session.as_deref(), &route.route.name, tool)
        {
            rec.decision = "deny";
            rec.counted = true;
            let reason = format!("tool {tool} is not available to this session");
            rec.reasons = vec![reason.clone()];
            return refuse(
                Refusal::new(Code::Denied, "call denied by policy").with_reasons(vec![reason]),
            );
        }
    }

    // 9. decision ----------------------------------------------------------------------
    let session_value = match &session {
        Some(s) => input::session_value(s, now),
        None => Value::Null,
    };
    let env_value = routing.environment.at(&input::rfc3339(now));
    let segments = input::str_array(canon::segments(&route_path));
    let request_base = RequestParts {
        method: input::method_value(&parts.method),
        path: Value::from(rec.path.as_str()),
        route_path: Value::from(route_path.as_str()),
        segments,
        query: input::query_value(query.as_deref()),
        host: Value::from(host.as_deref().unwrap_or_default()),
        headers: headers::policy_headers(&parts.headers),
        body_bytes: buffered.as_ref().map(|b| b.len() as u64).or(body_len),
    };
    let parts_in = Arc::new(InputParts {
        identity,
        session: session_value,
        request: request_base,
        route: route.policy_value.clone(),
        environment: env_value,
    });
    let make_input = |mcp: Value| parts_in.with_mcp(mcp);
    let set = sc.policy.current();
    rec.policy_revision = Some(set.revision().to_owned());
    let t = Instant::now();
    let decision: Decision = set.eval_call(make_input(mcp_value.clone()));
    sc.metrics.policy_eval.observe(t.elapsed().as_secs_f64());
    rec.counted = true;

    if let Some(err) = &decision.error {
        tracing::error!(request_id = %rec.request_id, error = %err, "policy evaluation failed: denying");
        rec.decision = "error";
        return refuse(
            Refusal::new(Code::Denied, "policy evaluation failed; the call is denied")
                .with_reasons(vec!["policy evaluation error".into()]),
        );
    }

    // 10. revoke_session -------------------------------------------------------------------
    if !decision.revoke_session.is_empty() {
        rec.decision = "deny";
        rec.reasons = decision.revoke_session.clone();
        if let Some(s) = &session {
            Box::pin(sc.end_session(
                &s.id,
                EndReason::PolicyRevoked(decision.revoke_session.clone()),
            ))
            .await;
        }
        let mut reasons = decision.revoke_session.clone();
        reasons.extend(decision.deny.iter().cloned());
        return refuse(
            Refusal::new(Code::Denied, "session revoked by policy").with_reasons(reasons),
        );
    }
    if !decision.deny.is_empty() || !decision.allow {
        rec.decision = "deny";
        let reasons = if decision.deny.is_empty() {
            vec!["no policy rule allows this call".to_owned()]
        } else {
            decision.deny.clone()
        };
        rec.reasons = reasons.clone();
        return refuse(Refusal::new(Code::Denied, "call denied by policy").with_reasons(reasons));
    }
    if !sc.audit_ok() {
        rec.decision = "error";
        return refuse(Refusal::new(
            Code::Unavailable,
            "audit log unavailable; calls are refused (on_audit_failure: deny)",
        ));
    }

    // 11. approval ------------------------------------------------------------------------------
    if !decision.approval.is_empty() {
        // Bind the approval to the exact body: buffer it (bounded) to hash it.
        if let (None, Some(b)) = (&buffered, stream_body) {
            buffered = Some(
                Box::pin(read_body(b, cfg.limits.max_body_bytes))
                    .await
                    .map_err(|r| (r, false))?,
            );
        }
        return Box::pin(approve_then_forward(
            sc, conn, rec, parts, buffered, route, route_path, query, host, session, decision,
            mcp_req,
        ))
        .await;
    }
    rec.decision = "allow";

    // 12-14.
    let req_body = match (buffered, stream_body) {
        (Some(b), _) => body::full(b),
        (None, Some(b)) => body::incoming(b),
        (None, None) => body::empty(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Some(n) = body_len {
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    let filter = tools_list_filter(sc, conn, &mcp_req, session.clone(), &route, &parts_in);
    forward(
        sc,
        rec,
        parts,
        req_body,
        &routing,
        &route,
        &route_path,
        query.as_deref(),
        session.as_ref(),
        &decision,
        filter,
    )
    .await
}

/// The input document minus `request.mcp`, shared by the call's decision and the
/// per-tool decisions of a tools/list filter.
struct InputParts {
    identity: Value,
    session: Value,
    request: RequestParts,
    route: Value,
    environment: Value,
}

impl InputParts {
    fn with_mcp(&self, mcp: Value) -> Value {
        CallInput {
            identity: self.identity.clone(),
            session: self.session.clone(),
            request: self.request.to_value(mcp),
            route: self.route.clone(),
            environment: self.environment.clone(),
        }
        .into_value()
    }
}

/// Everything of `input.request` but `mcp`.
struct RequestParts {
    method: Value,
    path: Value,
    route_path: Value,
    segments: Value,
    query: Value,
    host: Value,
    headers: Value,
    body_bytes: Option<u64>,
}

impl RequestParts {
    fn to_value(&self, mcp: Value) -> Value {
        policy_object! {
            METHOD => self.method.clone(),
            PATH => self.path.clone(),
            ROUTE_PATH => self.route_path.clone(),
            SEGMENTS => self.segments.clone(),
            QUERY => self.query.clone(),
            HOST => self.host.clone(),
            HEADERS => self.headers.clone(),
            BODY_BYTES => self.body_bytes.map(Value::from).unwrap_or(Value::Null),
            MCP => mcp,
        }
    }
}

fn tools_list_filter(
    sc: &Arc<Sidecar>,
    conn: &Arc<ConnInfo>,
    mcp_req: &Option<chaperone_mcp::McpRequest>,
    session: Option<Arc<Session>>,
    route: &Arc<crate::route::RouteEntry>,
    parts_in: &Arc<InputParts>,
) -> Option<mcp_phase::ToolsFilter> {
    let m = mcp_req.as_ref()?;
    if m.method != "tools/list" {
        return None;
    }
    let p = parts_in.clone();
    Some(mcp_phase::ToolsFilter {
        sidecar: sc.clone(),
        conn: conn.clone(),
        session,
        route: route.route.name.clone(),
        request_id: m.id.clone().unwrap_or(serde_json::Value::Null),
        make_input: Arc::new(move |mcp| p.with_mcp(mcp)),
    })
}

#[allow(clippy::too_many_arguments)]
async fn approve_then_forward(
    sc: &Arc<Sidecar>,
    conn: &Arc<ConnInfo>,
    rec: &mut CallRecord,
    mut parts: http::request::Parts,
    buffered: Option<Bytes>,
    route: Arc<crate::route::RouteEntry>,
    route_path: String,
    query: Option<String>,
    host: Option<String>,
    session: Option<Arc<Session>>,
    decision: Decision,
    mcp_req: Option<chaperone_mcp::McpRequest>,
) -> PhaseResult<Response<ProxyBody>> {
    let cfg = sc.cfg();
    let body_bytes = buffered.unwrap_or_default();
    let timeout = cfg.approvals.timeout;
    let now = SystemTime::now();
    let record = ApprovalRecord {
        id: approvals::new_id(),
        spiffe_id: conn.spiffe.to_string(),
        session_id: session.as_ref().map(|s| s.id.clone()),
        task: session.as_ref().map(|s| s.task.clone()),
        route: route.route.name.clone(),
        method: parts.method.as_str().to_owned(),
        path: rec.path.clone(),
        host: host.clone().unwrap_or_default(),
        tool: rec.tool.clone(),
        body_sha256: hex::encode(ring::digest::digest(&ring::digest::SHA256, &body_bytes)),
        arguments_sha256: mcp_req.as_ref().map(|m| {
            hex::encode(ring::digest::digest(
                &ring::digest::SHA256,
                m.arguments.to_string().as_bytes(),
            ))
        }),
        reasons: decision.approval.clone(),
        request_id: rec.request_id.clone(),
        created_at: input::rfc3339(now),
        expires_at: input::rfc3339(approvals::expiry(timeout)),
    };
    let hold = sc.approvals.hold(record.clone());
    sc.metrics.approvals_pending.set(sc.approvals.len() as i64);
    let mut ev = approval_event("approval.requested", &record, session.as_deref());
    ev.reasons = record.reasons.clone();
    sc.audit(ev);
    crate::webhook::notify(sc, &record);
    tracing::info!(approval = %record.id, route = %record.route, path = %record.path, "call held for approval");

    // If the agent disconnects, this future is dropped and `hold` with it: the
    // approval disappears from the list (cancelled).
    let mut cancel = CancelAudit {
        sc: sc.clone(),
        record: record.clone(),
        session: session.clone(),
        spiffe: conn.spiffe.to_string(),
        armed: true,
    };
    let outcome = hold.wait(timeout).await;
    cancel.armed = false;
    sc.metrics.approvals_pending.set(sc.approvals.len() as i64);
    let (decision_str, by) = match &outcome {
        HoldOutcome::Resolved(r) if r.approved => ("approved", r.by.clone()),
        HoldOutcome::Resolved(r) => ("denied", r.by.clone()),
        HoldOutcome::TimedOut => ("timeout", String::new()),
    };
    sc.metrics
        .approvals_resolved
        .with_label_values(&[decision_str])
        .inc();
    let mut ev = approval_event("approval.resolved", &record, session.as_deref());
    ev.decision = Some(decision_str.to_owned());
    if !by.is_empty() {
        ev.approver = Some(by.clone());
    }
    sc.audit(ev);
    match outcome {
        HoldOutcome::Resolved(r) if r.approved => {}
        HoldOutcome::Resolved(r) => {
            rec.decision = "approval_denied";
            rec.reasons = record.reasons.clone();
            return refuse(
                Refusal::new(
                    Code::ApprovalDenied,
                    format!("approval {} denied by {}", record.id, r.by),
                )
                .with_reasons(record.reasons),
            );
        }
        HoldOutcome::TimedOut => {
            rec.decision = "approval_timeout";
            rec.reasons = record.reasons.clone();
            return refuse(
                Refusal::new(
                    Code::ApprovalTimeout,
                    format!(
                        "approval {} was not granted within {:?}",
                        record.id, timeout
                    ),
                )
                .with_reasons(record.reasons),
            );
        }
    }
    rec.decision = "allow";
    rec.reasons = vec![format!("approved by {by}")];
    // A session may have been revoked while the call waited.
    if let Some(s) = &session {
        if s.is_ended() {
            return refuse(Refusal::new(
                Code::InvalidSession,
                "the session ended while the call waited for approval",
            ));
        }
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body_bytes.len()));
    let routing = sc.routing.load_full();
    forward(
        sc,
        rec,
        parts,
        body::full(body_bytes),
        &routing,
        &route,
        &route_path,
        query.as_deref(),
        session.as_ref(),
        &decision,
        None,
    )
    .await
}

/// Audits a held call whose agent went away: the future is dropped mid-wait, so
/// nothing after the wait runs; this guard writes `approval.resolved` (cancelled)
/// and the call's `request.decided`.
struct CancelAudit {
    sc: Arc<Sidecar>,
    record: ApprovalRecord,
    session: Option<Arc<Session>>,
    spiffe: String,
    armed: bool,
}

impl Drop for CancelAudit {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let sc = &self.sc;
        sc.metrics.approvals_pending.set(sc.approvals.len() as i64);
        sc.metrics
            .approvals_resolved
            .with_label_values(&["cancelled"])
            .inc();
        let mut ev = approval_event("approval.resolved", &self.record, self.session.as_deref());
        ev.decision = Some("cancelled".into());
        ev.cause = Some("agent disconnected".into());
        sc.audit(ev);
        let mut ev = approval_event("request.decided", &self.record, self.session.as_deref());
        ev.spiffe_id = Some(self.spiffe.clone());
        ev.decision = Some("approval_cancelled".into());
        ev.reasons = self.record.reasons.clone();
        sc.audit(ev);
        sc.metrics
            .requests
            .with_label_values(&[self.record.route.as_str(), "approval_cancelled"])
            .inc();
        tracing::info!(approval = %self.record.id, "held call cancelled: the agent disconnected");
    }
}

fn approval_event(kind: &str, r: &ApprovalRecord, session: Option<&Session>) -> AuditEvent {
    let mut ev = match session {
        Some(s) => crate::sidecar::session_event(kind, s),
        None => {
            let mut ev = AuditEvent::new(kind);
            ev.spiffe_id = Some(r.spiffe_id.clone());
            ev
        }
    };
    ev.approval_id = Some(r.id.clone());
    ev.route = Some(r.route.clone());
    ev.method = Some(r.method.clone());
    ev.path = Some(r.path.clone());
    ev.mcp_tool = r.tool.clone();
    ev.request_id = Some(r.request_id.clone());
    ev
}

/// 12-14: credential, forward, response.
#[allow(clippy::too_many_arguments)]
async fn forward(
    sc: &Arc<Sidecar>,
    rec: &mut CallRecord,
    mut parts: http::request::Parts,
    req_body: ProxyBody,
    routing: &Arc<crate::sidecar::Routing>,
    route: &Arc<crate::route::RouteEntry>,
    route_path: &str,
    query: Option<&str>,
    session: Option<&Arc<Session>>,
    decision: &Decision,
    filter: Option<mcp_phase::ToolsFilter>,
) -> PhaseResult<Response<ProxyBody>> {
    let r = &route.route;
    // 12. credential ----------------------------------------------------------------------------
    let cred_name = decision.credential.clone().or_else(|| r.credential.clone());
    let mut lease = None;
    if let Some(name) = &cred_name {
        rec.credential = Some(name.clone());
        let ctx = IssueContext {
            spiffe_id: rec_spiffe(session, sc, rec),
            session_id: session.map(|s| s.id.clone()),
            task: session.map(|s| s.task.clone()),
            scopes: decision
                .scopes
                .clone()
                .or_else(|| session.map(|s| s.scopes.clone()))
                .unwrap_or_default(),
            delegation_chain: session
                .map(|s| s.delegation_chain.clone())
                .unwrap_or_default(),
            not_after: session
                .map(|s| s.expires_at)
                .unwrap_or_else(|| SystemTime::now() + std::time::Duration::from_secs(300)),
        };
        match routing.credentials.acquire(name, &ctx).await {
            Ok(l) => {
                rec.credential_id = Some(l.id().to_owned());
                let (h, v) = l.header();
                parts.headers.insert(h, v);
                lease = Some(l);
            }
            Err(e) => {
                rec.decision = "error";
                tracing::warn!(request_id = %rec.request_id, credential = %name, error = %e, "credential unavailable");
                return refuse(Refusal::new(
                    Code::CredentialUnavailable,
                    format!("credential {name} is unavailable: {e}"),
                ));
            }
        }
    }

    // 13. forward -----------------------------------------------------------------------------------
    let mut target = String::with_capacity(r.upstream.url.len() + route_path.len() + 16);
    target.push_str(&r.upstream.scheme);
    target.push_str("://");
    target.push_str(&r.upstream.authority);
    target.push_str(&r.upstream.base_path);
    target.push_str(route_path);
    if let Some(q) = query {
        target.push('?');
        target.push_str(q);
    }
    let uri: Uri = target.parse().map_err(|_| {
        (
            Refusal::new(Code::BadRequest, "request cannot be mapped to the upstream"),
            false,
        )
    })?;
    parts.uri = uri;
    // The upstream leg is HTTP/1.1 (the pooled client speaks nothing else); the agent's
    // leg keeps the version the agent spoke, whatever the upstream answers with (step 14).
    let agent_version = parts.version;
    parts.version = http::Version::HTTP_11;
    if let Ok(v) = HeaderValue::from_str(&rec.request_id) {
        parts.headers.insert("x-request-id", v);
    }
    let Some(client) = routing.upstreams.for_route(r) else {
        return refuse(Refusal::new(
            Code::UpstreamUnavailable,
            "no upstream client for route",
        ));
    };
    let upstream_req = Request::from_parts(parts, req_body);
    let resp = match tokio::time::timeout(r.timeout, client.request(upstream_req)).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            let kind = if e.is_connect() {
                "connect"
            } else {
                "protocol"
            };
            sc.metrics
                .upstream_errors
                .with_label_values(&[r.name.as_str(), kind])
                .inc();
            tracing::warn!(request_id = %rec.request_id, route = %r.name, error = %e, "upstream request failed");
            return refuse(Refusal::new(
                Code::UpstreamUnavailable,
                format!("upstream of route {} is unavailable", r.name),
            ));
        }
        Err(_) => {
            sc.metrics
                .upstream_errors
                .with_label_values(&[r.name.as_str(), "timeout"])
                .inc();
            return refuse(Refusal::new(
                Code::UpstreamTimeout,
                format!(
                    "upstream of route {} did not answer within {:?}",
                    r.name, r.timeout
                ),
            ));
        }
    };

    // 14. response -------------------------------------------------------------------------------
    let (mut rparts, rbody) = resp.into_parts();
    // An HTTP/1.0 upstream must not turn the agent's HTTP/1.1 connection into a
    // one-shot one: hyper closes a connection after a response marked HTTP/1.0.
    rparts.version = agent_version;
    headers::sanitize_response(&mut rparts.headers);
    let body = match filter {
        Some(f) if rparts.status.is_success() => {
            Box::pin(mcp_phase::filter_response(f, &mut rparts.headers, rbody))
                .await
                .map_err(|r| (r, false))?
        }
        _ => body::incoming(rbody),
    };
    // Per-call credentials that must be revoked (no session) live until the response
    // body is done; the others are dropped (and zeroised) here.
    let body = match lease {
        Some(l) if session.is_none() && l.needs_release() => crate::body_guard::guard(body, l),
        _ => body,
    };
    Ok(Response::from_parts(rparts, body))
}

fn rec_spiffe(session: Option<&Arc<Session>>, _sc: &Sidecar, _rec: &CallRecord) -> String {
    session.map(|s| s.spiffe_id.clone()).unwrap_or_default()
}

/// Read a body fully, refusing more than `max` bytes.
pub async fn read_body<B>(b: B, max: usize) -> Result<Bytes, Refusal>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match Limited::new(b, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(Refusal::new(
                    Code::PayloadTooLarge,
                    format!("request body exceeds {max} bytes"),
                )
                .with_status(StatusCode::BAD_REQUEST))
            } else {
                Err(Refusal::bad_request("request body could not be read"))
            }
        }
    }
}

/// The request's host: from the absolute-form URI or the Host header; they must agree.
fn request_host(uri: &Uri, headers: &http::HeaderMap) -> Result<Option<String>, Refusal> {
    let header_host = match headers.get(header::HOST) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| Refusal::bad_request("invalid Host header"))?
                .to_ascii_lowercase(),
        ),
        None => None,
    };
    let uri_host = uri.authority().map(|a| a.as_str().to_ascii_lowercase());
    if let (Some(h), Some(u)) = (&header_host, &uri_host) {
        if h != u {
            return Err(Refusal::bad_request(
                "absolute-form request target disagrees with Host",
            ));
        }
    }
    let full = uri_host.or(header_host);
    Ok(full.map(|h| strip_port(&h).to_owned()))
}

fn strip_port(h: &str) -> &str {
    if h.starts_with('[') {
        return h
            .split(']')
            .next()
            .map(|s| s.trim_start_matches('['))
            .unwrap_or(h);
    }
    h.rsplit_once(':').map(|(a, _)| a).unwrap_or(h)
}

/// Phase 6: the session token, if any.
fn authenticate(
    sc: &Sidecar,
    conn: &ConnInfo,
    headers: &http::HeaderMap,
) -> Result<Option<Arc<Session>>, Refusal> {
    let mut values = headers.get_all(SESSION_HEADER).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Refusal::bad_request(
            "more than one chaperone-session header",
        ));
    }
    let token = v
        .to_str()
        .map_err(|_| Refusal::new(Code::InvalidSession, "malformed session token"))?;
    match sc
        .sessions
        .authenticate(token, conn.spiffe.as_str(), SystemTime::now())
    {
        Ok(s) => Ok(Some(s)),
        Err(SessionError::WrongIdentity) => Err(Refusal::new(
            Code::InvalidSession,
            "this session token belongs to another identity",
        )
        .with_status(StatusCode::FORBIDDEN)),
        Err(SessionError::Expired) => Err(Refusal::new(Code::InvalidSession, "session expired")),
        Err(SessionError::Revoked) => Err(Refusal::new(Code::InvalidSession, "session has ended")),
        Err(_) => Err(Refusal::new(Code::InvalidSession, "unknown session token")),
    }
}

/// 15. account: stats, metrics, audit.
fn account(sc: &Sidecar, conn: &ConnInfo, rec: CallRecord) {
    let route = rec.route.as_deref().unwrap_or("none");
    sc.metrics
        .requests
        .with_label_values(&[route, rec.decision])
        .inc();
    sc.metrics
        .request_duration
        .with_label_values(&[route])
        .observe(rec.started.elapsed().as_secs_f64());
    if rec.counted {
        if let Some(s) = &rec.session {
            sc.sessions.record_call(
                s,
                route,
                rec.data_domain.as_deref(),
                rec.decision != "allow",
                SystemTime::now(),
            );
        }
    }
    let latency_ms = rec.started.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(
        request_id = %rec.request_id,
        spiffe_id = %conn.spiffe,
        route,
        method = %rec.method,
        path = %rec.path,
        decision = rec.decision,
        status = rec.status,
        duration_ms = latency_ms,
        "request"
    );
    if rec.route.as_deref() == Some("chaperone-api") {
        return; // session API calls are audited as session.* events
    }
    let mut ev = match &rec.session {
        Some(s) => crate::sidecar::session_event("request.decided", s),
        None => {
            let mut ev = AuditEvent::new("request.decided");
            ev.spiffe_id = Some(conn.spiffe.to_string());
            ev
        }
    };
    ev.request_id = Some(rec.request_id);
    ev.route = rec.route;
    ev.method = Some(rec.method);
    ev.path = Some(rec.path);
    ev.mcp_tool = rec.tool;
    ev.decision = Some(rec.decision.to_owned());
    ev.status = Some(rec.status);
    ev.reasons = rec.reasons;
    ev.policy_revision = rec.policy_revision;
    ev.latency_ms = Some(latency_ms);
    ev.credential = rec.credential;
    ev.credential_id = rec.credential_id;
    if ev.intent_summary.is_none() {
        ev.intent_summary = rec.session.as_ref().and_then(|s| intent_summary(&s.intent));
    }
    sc.audit(ev);
}

/// Tools hidden per (identity, session, route).
pub type HiddenTools = dashmap::DashMap<String, HashSet<String>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, B, C, F: std::future::Future>(_: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// hyper moves the per-request future (into its dispatcher, into a task for HTTP/2),
    /// and every move copies all of it: rare branches (session API, approvals, MCP
    /// bodies, revocation) are boxed so that they do not grow the hot path's future.
    /// It was 8.4 KiB before they were; 4.7 KiB with rustc 1.95.
    #[test]
    fn the_per_request_future_stays_small() {
        let size = future_size(handle);
        assert!(size <= 6 * 1024, "pipeline::handle future is {size} bytes");
    }
}
