//! The reserved session API on the agent listener (SPEC §4):
//!
//! - `POST   /.chaperone/v1/sessions`                       declare a task
//! - `GET    /.chaperone/v1/sessions/current`               the session as policy sees it
//! - `DELETE /.chaperone/v1/sessions/current`               end it (revokes its credentials)
//! - `POST   /.chaperone/v1/sessions/current/delegations`   narrow it for another SPIFFE ID
//!
//! Creation and delegation are decided by `data.chaperone.session`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chaperone_config::Config;
use chaperone_identity::SpiffeId;
use chaperone_sessions::{EndReason, NewSession, Session, SessionError};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use regorus::Value;
use serde::Deserialize;

use crate::body::ProxyBody;
use crate::error::{json_response, Code, Refusal};
use crate::headers::SESSION_HEADER;
use crate::input;
use crate::pipeline::{CallRecord, ConnInfo};
use crate::policy_object;
use crate::sidecar::{identity_for, session_event, Sidecar};

const MAX_BODY: usize = 64 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    task: String,
    #[serde(default)]
    intent: Option<serde_json::Value>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    ttl: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DelegateBody {
    to: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    ttl: Option<String>,
}

pub async fn handle(
    sc: &Arc<Sidecar>,
    conn: &Arc<ConnInfo>,
    req: Request<Incoming>,
    rec: &mut CallRecord,
) -> Result<Response<ProxyBody>, Refusal> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (method, path.as_str()) {
        (Method::POST, "/.chaperone/v1/sessions") => create(sc, conn, req, rec).await,
        (Method::GET, "/.chaperone/v1/sessions/current") => {
            let s = current(sc, conn, &req)?;
            let mut view = s.policy_view(SystemTime::now());
            view["spiffe_id"] = serde_json::Value::String(s.spiffe_id.clone());
            Ok(json_response(
                StatusCode::OK,
                Bytes::from(view.to_string()),
                &rec.request_id,
                false,
            ))
        }
        (Method::DELETE, "/.chaperone/v1/sessions/current") => {
            let s = current(sc, conn, &req)?;
            sc.end_session(&s.id, EndReason::Deleted).await;
            let mut resp = Response::new(crate::body::empty());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            Ok(resp)
        }
        (Method::POST, "/.chaperone/v1/sessions/current/delegations") => {
            delegate(sc, conn, req, rec).await
        }
        (
            _,
            "/.chaperone/v1/sessions"
            | "/.chaperone/v1/sessions/current"
            | "/.chaperone/v1/sessions/current/delegations",
        ) => Err(
            Refusal::bad_request("method not allowed on this session endpoint")
                .with_status(StatusCode::METHOD_NOT_ALLOWED),
        ),
        _ => Err(Refusal::new(
            Code::NoRoute,
            format!("no chaperone API at {path}"),
        )),
    }
}

fn current(
    sc: &Sidecar,
    conn: &ConnInfo,
    req: &Request<Incoming>,
) -> Result<Arc<Session>, Refusal> {
    let Some(v) = req.headers().get(SESSION_HEADER) else {
        return Err(Refusal::new(Code::NoSession, "no chaperone-session header"));
    };
    let token = v
        .to_str()
        .map_err(|_| Refusal::new(Code::InvalidSession, "malformed session token"))?;
    sc.sessions
        .authenticate(token, conn.spiffe.as_str(), SystemTime::now())
        .map_err(session_refusal)
}

fn session_refusal(e: SessionError) -> Refusal {
    match e {
        SessionError::WrongIdentity => Refusal::new(
            Code::InvalidSession,
            "this session token belongs to another identity",
        )
        .with_status(StatusCode::FORBIDDEN),
        SessionError::Expired => Refusal::new(Code::InvalidSession, "session expired"),
        SessionError::Revoked => Refusal::new(Code::InvalidSession, "session has ended"),
        SessionError::Unknown => Refusal::new(Code::InvalidSession, "unknown session token"),
        other => Refusal::new(Code::Denied, other.to_string()),
    }
}

async fn read_json<T: for<'de> Deserialize<'de>>(req: Request<Incoming>) -> Result<T, Refusal> {
    let bytes = crate::pipeline::read_body(req.into_body(), MAX_BODY).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Refusal::bad_request(format!("invalid request body: {e}")))
}

fn parse_ttl(ttl: &Option<String>) -> Result<Option<Duration>, Refusal> {
    match ttl {
        None => Ok(None),
        Some(s) => chaperone_config::parse_duration(s)
            .map(Some)
            .map_err(|e| Refusal::bad_request(format!("ttl: {e}"))),
    }
}

/// `input` for `data.chaperone.session` when `session` already carries `parent`.
pub fn session_input_raw(
    cfg: &Config,
    identity: Value,
    session: serde_json::Value,
    now: SystemTime,
) -> Value {
    policy_object! {
        IDENTITY => identity,
        SESSION => input::json(session),
        ENVIRONMENT => input::environment_value(&cfg.environment, &input::rfc3339(now)),
    }
}

/// `input` for `data.chaperone.session`.
pub fn session_input(
    cfg: &Config,
    identity: Value,
    session: &serde_json::Value,
    parent: Option<&serde_json::Value>,
    now: SystemTime,
) -> Value {
    let mut s = session.clone();
    s["parent"] = parent.cloned().unwrap_or(serde_json::Value::Null);
    policy_object! {
        IDENTITY => identity,
        SESSION => input::json(s),
        ENVIRONMENT => input::environment_value(&cfg.environment, &input::rfc3339(now)),
    }
}

fn fmt_duration(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

async fn create(
    sc: &Arc<Sidecar>,
    conn: &Arc<ConnInfo>,
    req: Request<Incoming>,
    rec: &mut CallRecord,
) -> Result<Response<ProxyBody>, Refusal> {
    let body: CreateBody = read_json(req).await?;
    if body.task.trim().is_empty() || body.task.len() > 4096 {
        return Err(Refusal::bad_request(
            "task must be a non-empty string of at most 4096 bytes",
        ));
    }
    let intent = body.intent.unwrap_or_else(|| serde_json::json!({}));
    if !intent.is_object() {
        return Err(Refusal::bad_request("intent must be an object"));
    }
    let cfg = sc.cfg();
    let requested_ttl = parse_ttl(&body.ttl)?.unwrap_or(cfg.sessions.default_ttl);
    let routing = sc.routing.load();
    if routing.identities.resolve(&conn.spiffe).is_none() {
        return Err(Refusal::new(
            Code::Denied,
            format!("identity {} matches no `identities` entry", conn.spiffe),
        ));
    }
    let now = SystemTime::now();
    let proposed = serde_json::json!({
        "task": body.task,
        "intent": intent,
        "scopes": body.scopes,
        "ttl": fmt_duration(requested_ttl),
        "ttl_seconds": requested_ttl.as_secs(),
        "delegation_chain": [conn.spiffe.as_str()],
    });
    let identity = identity_for(&routing.identities, conn.spiffe.as_str());
    let d = sc
        .policy
        .current()
        .eval_session(session_input(&cfg, identity, &proposed, None, now));
    rec.decision = "deny";
    if let Some(e) = &d.error {
        tracing::error!(error = %e, "session policy evaluation failed: denying");
        return Err(Refusal::new(
            Code::Denied,
            "session policy evaluation failed; the session is denied",
        )
        .with_reasons(vec!["policy evaluation error".into()]));
    }
    if !d.deny.is_empty() || !d.allow {
        let reasons = if d.deny.is_empty() {
            vec!["no session policy rule allows this task".into()]
        } else {
            d.deny.clone()
        };
        rec.reasons = reasons.clone();
        return Err(Refusal::new(Code::Denied, "session denied by policy").with_reasons(reasons));
    }
    // TTL: requested (or default), clamped by the config's max_ttl and policy's max_ttl.
    let mut ttl = requested_ttl.min(cfg.sessions.max_ttl);
    if let Some(m) = d.max_ttl {
        ttl = ttl.min(m);
    }
    let scopes: Vec<String> = match &d.scopes {
        Some(allowed) => body
            .scopes
            .iter()
            .filter(|s| allowed.contains(s))
            .cloned()
            .collect(),
        None => body.scopes.clone(),
    };
    let (session, token) = sc
        .sessions
        .create(NewSession {
            spiffe_id: conn.spiffe.to_string(),
            task: body.task,
            intent,
            scopes: scopes.clone(),
            ttl,
            parent: None,
        })
        .map_err(|e| {
            Refusal::new(
                Code::Unavailable,
                format!("session could not be created: {e}"),
            )
        })?;
    rec.decision = "allow";
    sc.metrics
        .sessions_active
        .set(sc.sessions.active_count() as i64);
    let mut ev = session_event("session.created", &session);
    ev.decision = Some("allow".into());
    ev.policy_revision = Some(sc.policy.current().revision().to_owned());
    sc.audit(ev);
    tracing::info!(session = %session.id, spiffe_id = %session.spiffe_id, task = %session.task, "session created");
    let out = serde_json::json!({
        "session_id": session.id,
        "token": token.expose(),
        "expires_at": input::rfc3339(session.expires_at),
        "scopes": scopes,
    });
    Ok(json_response(
        StatusCode::CREATED,
        Bytes::from(out.to_string()),
        &rec.request_id,
        false,
    ))
}

async fn delegate(
    sc: &Arc<Sidecar>,
    conn: &Arc<ConnInfo>,
    req: Request<Incoming>,
    rec: &mut CallRecord,
) -> Result<Response<ProxyBody>, Refusal> {
    let parent = current(sc, conn, &req)?;
    let body: DelegateBody = read_json(req).await?;
    let to = SpiffeId::parse(&body.to).map_err(|e| Refusal::bad_request(format!("to: {e}")))?;
    let cfg = sc.cfg();
    if !cfg
        .tls
        .trust_domains
        .iter()
        .any(|td| td == to.trust_domain())
    {
        return Err(Refusal::new(
            Code::Denied,
            format!("trust domain {} is not accepted", to.trust_domain()),
        ));
    }
    let now = SystemTime::now();
    // Default: the parent's remaining lifetime, in whole seconds (so that the child's
    // expiry can never land after the parent's, whatever the clock does meanwhile).
    let remaining = Duration::from_secs(
        parent
            .expires_at
            .duration_since(now)
            .unwrap_or_default()
            .as_secs(),
    );
    let ttl = parse_ttl(&body.ttl)?.unwrap_or(remaining);
    let (scopes, ttl) = chaperone_sessions::validate_delegation(
        &parent,
        to.as_str(),
        &body.scopes,
        ttl,
        cfg.sessions.max_delegation_depth,
        now,
    )
    .map_err(|e| {
        rec.decision = "deny";
        rec.reasons = vec![e.to_string()];
        Refusal::new(Code::Denied, "delegation refused").with_reasons(vec![e.to_string()])
    })?;
    let routing = sc.routing.load();
    let mut chain = parent.delegation_chain.clone();
    chain.push(to.to_string());
    let proposed = serde_json::json!({
        "task": parent.task,
        "intent": parent.intent,
        "scopes": scopes,
        "ttl": fmt_duration(ttl),
        "ttl_seconds": ttl.as_secs(),
        "delegation_chain": chain,
    });
    let parent_view = parent.policy_view(now);
    let identity = identity_for(&routing.identities, to.as_str());
    let d = sc.policy.current().eval_session(session_input(
        &cfg,
        identity,
        &proposed,
        Some(&parent_view),
        now,
    ));
    if d.error.is_some() || !d.deny.is_empty() || !d.allow {
        rec.decision = "deny";
        let reasons = if d.error.is_some() {
            vec!["policy evaluation error".to_owned()]
        } else if d.deny.is_empty() {
            vec!["no session policy rule allows this delegation".to_owned()]
        } else {
            d.deny.clone()
        };
        rec.reasons = reasons.clone();
        return Err(Refusal::new(Code::Denied, "delegation denied by policy").with_reasons(reasons));
    }
    let mut ttl = ttl;
    if let Some(m) = d.max_ttl {
        ttl = ttl.min(m);
    }
    let scopes: Vec<String> = match &d.scopes {
        Some(allowed) => scopes.into_iter().filter(|s| allowed.contains(s)).collect(),
        None => scopes,
    };
    let (child, token) = sc
        .sessions
        .create(NewSession {
            spiffe_id: to.to_string(),
            task: parent.task.clone(),
            intent: parent.intent.clone(),
            scopes: scopes.clone(),
            ttl,
            parent: Some(parent.clone()),
        })
        .map_err(|e| {
            Refusal::new(Code::Denied, "delegation refused").with_reasons(vec![e.to_string()])
        })?;
    rec.decision = "allow";
    sc.metrics
        .sessions_active
        .set(sc.sessions.active_count() as i64);
    let mut ev = session_event("session.created", &child);
    ev.decision = Some("allow".into());
    ev.detail =
        Some(serde_json::json!({"parent": parent.id, "delegated_by": conn.spiffe.as_str()}));
    sc.audit(ev);
    let out = serde_json::json!({
        "session_id": child.id,
        "token": token.expose(),
        "expires_at": input::rfc3339(child.expires_at),
        "scopes": scopes,
        "delegated_to": child.spiffe_id,
        "parent": parent.id,
        "delegation_chain": child.delegation_chain,
    });
    Ok(json_response(
        StatusCode::CREATED,
        Bytes::from(out.to_string()),
        &rec.request_id,
        false,
    ))
}
