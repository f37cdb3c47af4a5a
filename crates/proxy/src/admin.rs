//! The admin API (plain HTTP, loopback by default; SPEC §9). Nothing here ever
//! returns a credential or session token.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use chaperone_sessions::EndReason;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use crate::body::{full, ProxyBody};
use crate::sidecar::Sidecar;

fn json(status: StatusCode, v: serde_json::Value) -> Response<ProxyBody> {
    let mut r = Response::new(full(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response<ProxyBody> {
    json(
        status,
        serde_json::json!({"error": code, "message": message.into()}),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalDecision {
    decision: String,
    #[serde(default)]
    by: Option<String>,
}

pub async fn handle(
    sc: Arc<Sidecar>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let resp = match (&method, segs.as_slice()) {
        (&Method::GET, ["healthz"]) => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
        (&Method::GET, ["readyz"]) => {
            if sc.is_ready() {
                json(
                    StatusCode::OK,
                    serde_json::json!({"status": "ready", "policy_revision": sc.policy.current().revision()}),
                )
            } else {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({"status": "starting"}),
                )
            }
        }
        (&Method::GET, ["metrics"]) => {
            sc.metrics
                .sessions_active
                .set(sc.sessions.active_count() as i64);
            sc.metrics.cert_expiry.set(sc.tls.cert_not_after());
            let mut r = Response::new(full(Bytes::from(sc.metrics.render())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        (&Method::GET, ["v1", "sessions"]) => {
            let mut list: Vec<serde_json::Value> = sc
                .sessions
                .list()
                .iter()
                .filter(|s| !s.is_ended())
                .map(|s| s.admin_view())
                .collect();
            list.sort_by(|a, b| a["created_at"].as_str().cmp(&b["created_at"].as_str()));
            json(StatusCode::OK, serde_json::json!({"sessions": list}))
        }
        (&Method::GET, ["v1", "sessions", id]) => match sc.sessions.get(id) {
            Some(s) => json(StatusCode::OK, s.admin_view()),
            None => error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no session {id}"),
            ),
        },
        (&Method::DELETE, ["v1", "sessions", id]) => match sc.sessions.get(id) {
            Some(s) if !s.is_ended() => {
                let ended = sc.end_session(id, EndReason::OperatorRevoked).await;
                json(
                    StatusCode::OK,
                    serde_json::json!({"revoked": ended.iter().map(|s| s.id.clone()).collect::<Vec<_>>()}),
                )
            }
            _ => error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no live session {id}"),
            ),
        },
        (&Method::GET, ["v1", "approvals"]) => json(
            StatusCode::OK,
            serde_json::json!({"approvals": sc.approvals.list()}),
        ),
        (&Method::POST, ["v1", "approvals", id]) => {
            let id = (*id).to_owned();
            resolve_approval(&sc, &id, req).await
        }
        (&Method::GET, ["v1", "jwks"]) => {
            json(StatusCode::OK, sc.routing.load().credentials.jwks())
        }
        (&Method::GET, ["v1", "config"]) => {
            json(StatusCode::OK, crate::redact::config_view(&sc.cfg()))
        }
        (&Method::GET, ["v1", "policy"]) => {
            let set = sc.policy.current();
            json(
                StatusCode::OK,
                serde_json::json!({
                    "revision": set.revision(),
                    "files": set.files().iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                }),
            )
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no admin endpoint {method} {path}"),
        ),
    };
    Ok(resp)
}

async fn resolve_approval(sc: &Sidecar, id: &str, req: Request<Incoming>) -> Response<ProxyBody> {
    let body = match crate::pipeline::read_body(req.into_body(), 16 * 1024).await {
        Ok(b) => b,
        Err(r) => return error(StatusCode::BAD_REQUEST, "bad_request", r.message),
    };
    let d: ApprovalDecision = match serde_json::from_slice(&body) {
        Ok(d) => d,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("expected {{\"decision\": \"approve\"|\"deny\", \"by\": \"...\"}}: {e}"),
            )
        }
    };
    let approve = match d.decision.as_str() {
        "approve" => true,
        "deny" => false,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("decision must be approve or deny, not {other:?}"),
            )
        }
    };
    let by = d.by.unwrap_or_else(|| "admin".to_owned());
    match sc.approvals.resolve(id, approve, &by) {
        Some(rec) => json(
            StatusCode::OK,
            serde_json::json!({"id": rec.id, "decision": d.decision, "by": by, "resolved_at": crate::input::rfc3339(SystemTime::now())}),
        ),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no pending approval {id} (already used, expired or cancelled)"),
        ),
    }
}
