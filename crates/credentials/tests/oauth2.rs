//! OAuth2 provider against an in-test token server over real TLS (custom CA).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use chaperone_config::{JwtAlgorithm, JwtProvider, OAuth2Grant, OAuth2Provider, Provider};
use chaperone_credentials::{CredentialManager, ManagerOptions};
use chaperone_testsupport::certs::{tls_server_config, TestCa};
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

const CLIENT_SECRET: &str = "client-s3cr3t-e9d1";

#[derive(Default)]
struct Seen {
    token_requests: Vec<HashMap<String, String>>,
    revocations: Vec<HashMap<String, String>>,
    issued: u32,
}

struct TokenServer {
    url: String,
    seen: Arc<Mutex<Seen>>,
    fail: Arc<Mutex<bool>>,
    _task: tokio::task::JoinHandle<()>,
}

fn parse_form(b: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(b).into_owned().collect()
}

async fn handle(
    seen: Arc<Mutex<Seen>>,
    fail: Arc<Mutex<bool>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let form = parse_form(&body);
    let reply = |status: StatusCode, body: serde_json::Value| {
        Ok(Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap())
    };
    if *fail.lock().unwrap() {
        // A body that echoes the secret: the client must not surface it.
        return reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({"error": "server_error", "error_description": format!("boom {CLIENT_SECRET}")}),
        );
    }
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("agents:{CLIENT_SECRET}"))
    );
    if auth.as_deref() != Some(expected.as_str()) {
        return reply(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": "invalid_client"}),
        );
    }
    match path.as_str() {
        "/token" => {
            let mut s = seen.lock().unwrap();
            s.issued += 1;
            let token = format!(
                "at-{}-{}",
                s.issued,
                form.get("grant_type").cloned().unwrap_or_default().len()
            );
            s.token_requests.push(form);
            reply(
                StatusCode::OK,
                serde_json::json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600}),
            )
        }
        "/revoke" => {
            seen.lock().unwrap().revocations.push(form);
            reply(StatusCode::OK, serde_json::json!({}))
        }
        _ => reply(StatusCode::NOT_FOUND, serde_json::json!({})),
    }
}

async fn start_token_server(ca: &TestCa) -> TokenServer {
    let cert = ca.server_cert(&["localhost"]);
    let tls = tokio_rustls::TlsAcceptor::from(tls_server_config(&cert, None));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let fail = Arc::new(Mutex::new(false));
    let (s2, f2) = (seen.clone(), fail.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (tls, seen, fail) = (tls.clone(), s2.clone(), f2.clone());
            tokio::spawn(async move {
                let Ok(stream) = tls.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |req| handle(seen.clone(), fail.clone(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    TokenServer {
        url: format!("https://localhost:{}", addr.port()),
        seen,
        fail,
        _task: task,
    }
}

fn oauth(
    server: &TokenServer,
    ca: std::path::PathBuf,
    secret: std::path::PathBuf,
    grant: OAuth2Grant,
) -> Provider {
    Provider::OAuth2(OAuth2Provider {
        token_url: format!("{}/token", server.url),
        grant,
        client_id: "agents".into(),
        client_secret_file: Some(secret),
        scope: Some("orders:read orders:write billing:read".into()),
        audience: Some("https://orders.internal".into()),
        revocation_url: Some(format!("{}/revoke", server.url)),
        ca: Some(ca),
    })
}

fn opts() -> ManagerOptions {
    ManagerOptions {
        revoke_attempts: 2,
        revoke_backoff: Duration::from_millis(20),
        ..ManagerOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_narrowed_scope_and_rfc7009_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("oauth-test-ca");
    let ca_path = ca.write_to(dir.path(), "ca");
    let server = start_token_server(&ca).await;
    let secret = write(dir.path(), "secret", &format!("{CLIENT_SECRET}\n"));
    let mgr = CredentialManager::with_options(
        &creds(vec![cred(
            "partner",
            oauth(&server, ca_path, secret, OAuth2Grant::ClientCredentials),
            "authorization",
            "Bearer {token}",
        )]),
        opts(),
    )
    .unwrap();
    let rec = Recorder::default();
    mgr.set_observer(Arc::new(rec.clone()));
    let mut c = ctx(Some("s-oauth"), Duration::from_secs(120));
    c.scopes = vec!["orders:read".into(), "billing:read".into(), "admin".into()];
    let lease = mgr.acquire("partner", &c).await.unwrap();
    let (_, v) = lease.header();
    assert!(v.is_sensitive());
    let token = v
        .to_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_string();
    assert!(token.starts_with("at-1-"));
    // expires_in 3600 capped by the session (120 s).
    assert!(lease.expires_at().unwrap() <= c.not_after);
    {
        let s = server.seen.lock().unwrap();
        let f = &s.token_requests[0];
        assert_eq!(f["grant_type"], "client_credentials");
        assert_eq!(
            f["scope"], "orders:read billing:read",
            "configured ∩ session scopes"
        );
        assert_eq!(f["audience"], "https://orders.internal");
        assert!(
            !f.contains_key("client_secret"),
            "secret only in Basic auth"
        );
    }
    // Reused in the session.
    drop(lease);
    let again = mgr.acquire("partner", &c).await.unwrap();
    assert_eq!(
        again.header().1.to_str().unwrap(),
        format!("Bearer {token}")
    );
    assert_eq!(server.seen.lock().unwrap().issued, 1);
    drop(again);

    // Session scopes disjoint from the configured scope: refused, nothing requested.
    let mut d = ctx(Some("s-disjoint"), Duration::from_secs(60));
    d.scopes = vec!["admin".into()];
    let err = mgr.acquire("partner", &d).await.unwrap_err();
    assert!(err.to_string().contains("scope"), "{err}");
    assert_eq!(server.seen.lock().unwrap().issued, 1);

    mgr.revoke_session("s-oauth", "session_ended").await;
    let r = rec.wait_revoked(1).await;
    assert!(r[0].2);
    let s = server.seen.lock().unwrap();
    assert_eq!(s.revocations.len(), 1);
    assert_eq!(s.revocations[0]["token"], token);
    assert_eq!(s.revocations[0]["token_type_hint"], "access_token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_exchange_sends_our_jwt_as_subject_token() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("oauth-test-ca");
    let ca_path = ca.write_to(dir.path(), "ca");
    let server = start_token_server(&ca).await;
    let secret = write(dir.path(), "secret", CLIENT_SECRET);
    let mgr = CredentialManager::with_options(
        &creds(vec![
            cred(
                "subject",
                Provider::Jwt(JwtProvider {
                    audience: "https://auth.example.org".into(),
                    issuer: "chaperone".into(),
                    ttl: Duration::from_secs(60),
                    signing_key: None,
                    algorithm: JwtAlgorithm::Es256,
                }),
                "authorization",
                "Bearer {token}",
            ),
            cred(
                "exchanged",
                oauth(
                    &server,
                    ca_path,
                    secret,
                    OAuth2Grant::TokenExchange {
                        subject_credential: "subject".into(),
                    },
                ),
                "authorization",
                "Bearer {token}",
            ),
        ]),
        opts(),
    )
    .unwrap();
    let c = ctx(None, Duration::from_secs(30));
    let lease = mgr.acquire("exchanged", &c).await.unwrap();
    assert!(lease.is_per_call());
    let form = server.seen.lock().unwrap().token_requests[0].clone();
    assert_eq!(
        form["grant_type"],
        "urn:ietf:params:oauth:grant-type:token-exchange"
    );
    assert_eq!(
        form["subject_token_type"],
        "urn:ietf:params:oauth:token-type:jwt"
    );
    assert_eq!(
        form["requested_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(form["scope"], "orders:read");
    // The subject token verifies against our JWKS.
    let subject = &form["subject_token"];
    let kid = jsonwebtoken::decode_header(subject).unwrap().kid.unwrap();
    let jwks = mgr.jwks();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap()
        .clone();
    let key = jsonwebtoken::DecodingKey::from_jwk(&serde_json::from_value(jwk).unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&["https://auth.example.org"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(subject, &key, &v)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], c.spiffe_id.as_str());

    // Per-call: revoked at the RFC 7009 endpoint once released.
    let token = lease.header().1.to_str().unwrap().to_string();
    lease.release();
    for _ in 0..200 {
        if !server.seen.lock().unwrap().revocations.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let s = server.seen.lock().unwrap();
    assert_eq!(format!("Bearer {}", s.revocations[0]["token"]), token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_failure_is_an_error_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("oauth-test-ca");
    let ca_path = ca.write_to(dir.path(), "ca");
    let server = start_token_server(&ca).await;
    let secret = write(dir.path(), "secret", CLIENT_SECRET);
    *server.fail.lock().unwrap() = true;
    let mgr = CredentialManager::new(&creds(vec![cred(
        "partner",
        oauth(
            &server,
            ca_path.clone(),
            secret.clone(),
            OAuth2Grant::ClientCredentials,
        ),
        "authorization",
        "Bearer {token}",
    )]))
    .unwrap();
    let err = mgr
        .acquire("partner", &ctx(Some("s"), Duration::from_secs(60)))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("HTTP 500"), "{msg}");
    assert!(msg.contains("server_error"), "{msg}");
    assert!(
        !msg.contains(CLIENT_SECRET) && !msg.contains("boom"),
        "{msg}"
    );
    assert!(!format!("{err:?}").contains(CLIENT_SECRET));

    // A server whose certificate does not chain to the configured CA: refused.
    let other_ca = TestCa::new("unrelated-ca");
    let other_path = other_ca.write_to(dir.path(), "other");
    *server.fail.lock().unwrap() = false;
    let mgr = CredentialManager::new(&creds(vec![cred(
        "partner",
        oauth(&server, other_path, secret, OAuth2Grant::ClientCredentials),
        "authorization",
        "Bearer {token}",
    )]))
    .unwrap();
    let err = mgr
        .acquire("partner", &ctx(Some("s"), Duration::from_secs(60)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unavailable"), "{err}");
    assert_eq!(server.seen.lock().unwrap().issued, 0);
}
