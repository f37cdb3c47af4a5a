//! Vault Kubernetes auth: login body, client-token caching, token used for issue.
//! (A real OpenBao kubernetes auth needs a Kubernetes TokenReview API; this uses an
//! in-test HTTP server that speaks the two Vault endpoints involved.)
#![allow(clippy::unwrap_used)]

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chaperone_config::{Provider, VaultAuth, VaultMode, VaultProvider};
use chaperone_credentials::CredentialManager;
use common::*;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};

#[derive(Default)]
struct Seen {
    logins: Vec<Value>,
    creates: Vec<(Option<String>, Value)>,
}

async fn handle(
    seen: Arc<Mutex<Seen>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let token = req
        .headers()
        .get("x-vault-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: Value = serde_json::from_slice(&req.into_body().collect().await.unwrap().to_bytes())
        .unwrap_or(Value::Null);
    let out = match path.as_str() {
        "/v1/auth/k8s/login" => {
            seen.lock().unwrap().logins.push(body);
            json!({"auth": {"client_token": "login-token-abc", "accessor": "acc-login", "lease_duration": 3600}})
        }
        "/v1/auth/token/create" => {
            let mut s = seen.lock().unwrap();
            s.creates.push((token, body));
            let n = s.creates.len();
            json!({"auth": {"client_token": format!("child-{n}"), "accessor": format!("acc-{n}"), "lease_duration": 60}})
        }
        _ => json!({"errors": ["unsupported path"]}),
    };
    Ok(Response::new(Full::new(Bytes::from(out.to_string()))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_login_is_cached_and_used() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let seen = s2.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(seen.clone(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let sa = write(dir.path(), "sa-token", "eyJhbGciOi.sa-jwt.sig\n");
    let mgr = CredentialManager::new(&creds(vec![cred(
        "kv",
        Provider::Vault(VaultProvider {
            address: format!("http://{addr}"),
            auth: VaultAuth::Kubernetes {
                mount: "k8s".into(),
                role: "sidecar".into(),
                jwt_file: sa,
            },
            mode: VaultMode::Token {
                policies: vec!["kv-read".into()],
                num_uses: None,
            },
            ttl: Duration::from_secs(600),
            namespace: Some("team-a".into()),
            ca: None,
        }),
        "x-vault-token",
        "{token}",
    )]))
    .unwrap();
    let a = mgr
        .acquire("kv", &ctx(Some("s1"), Duration::from_secs(120)))
        .await
        .unwrap();
    let b = mgr
        .acquire("kv", &ctx(Some("s2"), Duration::from_secs(120)))
        .await
        .unwrap();
    assert_eq!(a.header().1.to_str().unwrap(), "child-1");
    assert_eq!(b.header().1.to_str().unwrap(), "child-2");
    let s = seen.lock().unwrap();
    assert_eq!(
        s.logins.len(),
        1,
        "client token cached until its lease ends"
    );
    assert_eq!(
        s.logins[0],
        json!({"role": "sidecar", "jwt": "eyJhbGciOi.sa-jwt.sig"})
    );
    assert_eq!(s.creates.len(), 2);
    for (tok, body) in &s.creates {
        assert_eq!(tok.as_deref(), Some("login-token-abc"));
        assert_eq!(body["policies"], json!(["kv-read"]));
        assert_eq!(body["renewable"], false);
        let ttl = body["ttl"]
            .as_str()
            .unwrap()
            .trim_end_matches('s')
            .parse::<u64>()
            .unwrap();
        assert!(
            (115..=120).contains(&ttl),
            "ttl {ttl} capped by the session"
        );
        assert_eq!(body["ttl"], body["explicit_max_ttl"]);
    }
}
