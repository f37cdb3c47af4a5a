//! Manager behaviour with the static provider, templates and redaction.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use chaperone_config::{JwtAlgorithm, JwtProvider, Provider, StaticProvider};
use chaperone_credentials::{
    CredentialError, CredentialManager, IssueContext, Issued, RevocationHandle, Secret,
};
use common::*;

const STATIC_VALUE: &str = "legacy-key-0b1c2d3e";

fn static_cfg(path: std::path::PathBuf) -> Provider {
    Provider::Static(StaticProvider { file: path })
}

#[tokio::test]
async fn static_value_injected_and_file_change_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "key", &format!("{STATIC_VALUE}\n"));
    let mgr = CredentialManager::new(&creds(vec![cred(
        "legacy",
        static_cfg(path.clone()),
        "x-api-key",
        "{token}",
    )]))
    .unwrap();
    let lease = mgr
        .acquire("legacy", &ctx(None, Duration::from_secs(10)))
        .await
        .unwrap();
    let (name, value) = lease.header();
    assert_eq!(name.as_str(), "x-api-key");
    assert_eq!(
        value.to_str().unwrap(),
        STATIC_VALUE,
        "trailing newline trimmed"
    );
    assert!(value.is_sensitive());
    assert_eq!(lease.id(), "static:legacy");
    assert!(!format!("{lease:?}").contains(STATIC_VALUE));
    // A static secret has nothing to revoke: the per-call lease need not be held.
    assert!(lease.is_per_call() && !lease.needs_release());

    // Rotate the file (different length): a per-call credential issued after the
    // recheck interval (100 ms) sees it.
    std::fs::write(&path, "rotated-value-99\n").unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let lease = mgr
        .acquire("legacy", &ctx(None, Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(lease.header().1.to_str().unwrap(), "rotated-value-99");

    // Missing file (noticed within the recheck interval): error, fail closed.
    std::fs::remove_file(&path).unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let err = mgr
        .acquire("legacy", &ctx(Some("s"), Duration::from_secs(10)))
        .await
        .unwrap_err();
    assert!(matches!(err, CredentialError::File { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_flight_reuse_and_revoke_session() {
    let mgr = CredentialManager::new(&creds(vec![cred(
        "orders",
        Provider::Jwt(JwtProvider {
            audience: "a".into(),
            issuer: "chaperone".into(),
            ttl: Duration::from_secs(60),
            signing_key: None,
            algorithm: JwtAlgorithm::Es256,
        }),
        "authorization",
        "Bearer {token}",
    )]))
    .unwrap();
    let rec = Recorder::default();
    mgr.set_observer(Arc::new(rec.clone()));
    let c = ctx(Some("sf"), Duration::from_secs(60));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (m, c) = (mgr.clone(), c.clone());
        tasks.push(tokio::spawn(async move {
            m.acquire("orders", &c).await.unwrap().header().1
        }));
    }
    let mut values = Vec::new();
    for t in tasks {
        values.push(t.await.unwrap());
    }
    assert!(values.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(rec.issued(), 1, "concurrent first calls issue once");
    let ev = rec.0.lock().unwrap().issued[0].clone();
    assert_eq!(ev.session_id.as_deref(), Some("sf"));
    assert_eq!(ev.provider, "jwt");

    mgr.revoke_session("sf", "operator").await;
    let r = rec.wait_revoked(1).await;
    assert_eq!(r[0].1, "operator");
    assert!(matches!(
        mgr.acquire("orders", &c).await,
        Err(CredentialError::SessionEnded(_))
    ));
    // Other sessions are unaffected.
    mgr.acquire("orders", &ctx(Some("other"), Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(rec.issued(), 2);
}

#[tokio::test]
async fn short_lived_credentials_are_reissued_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "key", STATIC_VALUE);
    let mgr = CredentialManager::new(&creds(vec![cred(
        "legacy",
        static_cfg(path),
        "x-api-key",
        "{token}",
    )]))
    .unwrap();
    let rec = Recorder::default();
    mgr.set_observer(Arc::new(rec.clone()));
    // The session has less than the reuse margin left: every call issues afresh
    // (and the stale one is revoked).
    let c = ctx(Some("short"), Duration::from_secs(3));
    mgr.acquire("legacy", &c).await.unwrap();
    mgr.acquire("legacy", &c).await.unwrap();
    assert_eq!(rec.issued(), 2);
    let r = rec.wait_revoked(1).await;
    assert_eq!(r[0].1, "expired");
}

#[tokio::test]
async fn config_and_template_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "key", STATIC_VALUE);
    // Unknown placeholder: refused at startup.
    let err = CredentialManager::new(&creds(vec![cred(
        "x",
        static_cfg(path.clone()),
        "x-api-key",
        "{secret}",
    )]))
    .unwrap_err();
    assert!(err.to_string().contains("unknown placeholder"), "{err}");
    // {basic} needs a username and password; a static secret has neither.
    let mgr = CredentialManager::new(&creds(vec![
        cred(
            "basic",
            static_cfg(path.clone()),
            "authorization",
            "Basic {basic}",
        ),
        cred("plain", static_cfg(path.clone()), "x-api-key", "{token}"),
        cred("other", static_cfg(path), "X-Other-Key", "k={token}"),
    ]))
    .unwrap();
    let err = mgr
        .acquire("basic", &ctx(None, Duration::from_secs(10)))
        .await
        .unwrap_err();
    assert!(matches!(err, CredentialError::Template { .. }), "{err}");
    assert!(!err.to_string().contains(STATIC_VALUE));
    assert!(matches!(
        mgr.acquire("nope", &ctx(None, Duration::from_secs(10)))
            .await,
        Err(CredentialError::UnknownCredential(_))
    ));
    let headers: Vec<String> = mgr.inject_headers().iter().map(|h| h.to_string()).collect();
    assert_eq!(headers, vec!["authorization", "x-api-key", "x-other-key"]);
    assert_eq!(mgr.provider_kind("plain"), Some("static"));
    assert_eq!(mgr.provider_kind("nope"), None);
    assert_eq!(mgr.jwks()["keys"].as_array().unwrap().len(), 0);
}

#[test]
fn debug_never_shows_secrets() {
    let s = Secret::new("hunter2-secret-value".into());
    assert_eq!(format!("{s:?}"), "Secret(..redacted..)");
    let issued = Issued {
        id: "accessor-1".into(),
        expires_at: std::time::SystemTime::now(),
        token: Some(Secret::new("tok-hunter2".into())),
        username: Some(Secret::new("user-hunter2".into())),
        password: Some(Secret::new("pw-hunter2".into())),
        revocation: RevocationHandle::OAuth2Token(Secret::new("rev-hunter2".into())),
    };
    let dbg = format!("{issued:?} {:?}", issued.revocation);
    assert!(!dbg.contains("hunter2"), "{dbg}");
    assert!(dbg.contains("accessor-1"));
    let ctx: IssueContext = ctx(Some("s"), Duration::from_secs(1));
    assert!(!format!("{ctx:?}").is_empty());
    let err = CredentialError::Upstream {
        provider: "vault",
        status: 403,
        detail: String::new(),
    };
    assert_eq!(err.to_string(), "vault provider answered HTTP 403");
}

#[tokio::test]
async fn debug_of_manager_and_lease_never_shows_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "key", STATIC_VALUE);
    let mgr = CredentialManager::new(&creds(vec![cred(
        "legacy",
        static_cfg(path),
        "x-api-key",
        "{token}",
    )]))
    .unwrap();
    let lease = mgr
        .acquire("legacy", &ctx(Some("s"), Duration::from_secs(60)))
        .await
        .unwrap();
    let (name, value) = lease.header();
    let all = format!("{mgr:?} {lease:?} {name:?} {value:?}");
    assert!(!all.contains(STATIC_VALUE), "{all}");
    assert!(
        all.contains("Sensitive"),
        "HeaderValue debug is redacted: {all}"
    );
}
