//! SVID / bundle rotation under a live `ServerTls`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use chaperone_identity::{validate_svid_leaf, IdentityError, ServerTls};
use chaperone_testsupport::certs::{LeafSpec, TestCa};
use common::*;

fn served_serial(client: &ClientSide) -> String {
    validate_svid_leaf(client.server_leaf.as_ref().expect("server leaf"))
        .unwrap()
        .serial_hex
}

#[tokio::test]
async fn rotated_cert_is_served_to_new_connections_and_old_ones_survive() {
    let f = fixture(&[TD]);
    let agent = f.ca.svid(AGENT);
    assert_eq!(f.tls.cert_serial(), f.server.serial_hex);

    // A long-lived connection established before the rotation.
    let (addr, h) = serve_one(f.tls.clone()).await;
    let cfg = chaperone_testsupport::certs::mtls_client_config(
        &f.ca.cert_pem,
        &agent.chain_pem,
        &agent.key_pem,
    );
    let (before, kept) = connect(addr, cfg.clone()).await;
    let mut old_conn = kept.expect("connection");
    h.await.unwrap().unwrap();
    assert_eq!(served_serial(&before), f.server.serial_hex);

    // Unchanged files: nothing to do.
    assert!(!f.tls.reload_if_changed().unwrap());
    assert_eq!(f.tls.reloads(), 0);

    // Rotate: new key, new cert, shorter lifetime.
    let rotated = f.ca.leaf(
        LeafSpec::svid("spiffe://prod.example.org/chaperone/sidecar")
            .with_dns(&["localhost"])
            .valid_for(time::Duration::hours(2)),
    );
    write(&f.cfg.key, &rotated.key_pem);
    write(&f.cfg.cert, &rotated.chain_pem);
    assert!(f.tls.reload_if_changed().unwrap());
    assert_eq!(f.tls.reloads(), 1);
    assert_eq!(f.tls.cert_serial(), rotated.serial_hex);
    let want_not_after = validate_svid_leaf(rotated.der.as_ref()).unwrap().not_after;
    assert_eq!(f.tls.cert_not_after(), want_not_after);

    let (server, after) = handshake_with(&f.tls, &f.ca, &agent).await;
    assert!(server.is_ok(), "{server:?}");
    assert_eq!(served_serial(&after), rotated.serial_hex);

    // The old connection still works on its original session.
    assert_eq!(
        echo(&mut old_conn, "still here").await.unwrap(),
        "still here"
    );
}

#[tokio::test]
async fn mismatched_key_is_refused_and_old_config_kept() {
    let f = fixture(&[TD]);
    let agent = f.ca.svid(AGENT);
    let other = f.ca.leaf(
        LeafSpec::svid("spiffe://prod.example.org/chaperone/sidecar").with_dns(&["localhost"]),
    );
    // New cert, old key: must never be served.
    write(&f.cfg.cert, &other.chain_pem);
    match f.tls.reload_if_changed() {
        Err(IdentityError::KeyMismatch { .. }) => {}
        other => panic!("expected KeyMismatch, got {other:?}"),
    }
    assert_eq!(f.tls.reloads(), 0);
    assert_eq!(f.tls.cert_serial(), f.server.serial_hex);
    let (server, client) = handshake_with(&f.tls, &f.ca, &agent).await;
    assert!(server.is_ok(), "{server:?}");
    assert_eq!(served_serial(&client), f.server.serial_hex);

    // Garbage, missing and truncated files are refused the same way.
    write(&f.cfg.cert, "not a certificate");
    assert!(matches!(
        f.tls.reload_if_changed(),
        Err(IdentityError::Pem { .. })
    ));
    write(&f.cfg.cert, &f.server.chain_pem);
    write(
        &f.cfg.key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    assert!(f.tls.reload_if_changed().is_err());
    std::fs::remove_file(&f.cfg.bundle).unwrap();
    assert!(matches!(
        f.tls.reload_if_changed(),
        Err(IdentityError::Io { .. })
    ));
    assert_eq!(f.tls.cert_serial(), f.server.serial_hex);
    let (server, _) = handshake_with(&f.tls, &f.ca, &agent).await;
    assert!(server.is_ok(), "old config still serving: {server:?}");

    // Fixing the files makes the next reload succeed (same cert content as before => new key file restored).
    write(&f.cfg.key, &f.server.key_pem);
    f.ca.write_to(f.dir.path(), "bundle");
    assert!(
        !f.tls.reload_if_changed().unwrap(),
        "content identical to the serving generation"
    );
}

#[tokio::test]
async fn bundle_rotation_changes_which_agents_are_trusted() {
    let f = fixture(&[TD]);
    let new_ca = TestCa::new("new agent CA");
    let old_agent = f.ca.svid(AGENT);
    let new_agent = new_ca.svid(AGENT);
    let (s, _) = handshake_with(&f.tls, &f.ca, &new_agent).await;
    assert!(s.is_err());
    // Trust both during the overlap, then only the new one.
    write(
        &f.cfg.bundle,
        &format!("{}{}", f.ca.cert_pem, new_ca.cert_pem),
    );
    assert!(f.tls.reload_if_changed().unwrap());
    assert!(handshake_with(&f.tls, &f.ca, &old_agent).await.0.is_ok());
    assert!(handshake_with(&f.tls, &f.ca, &new_agent).await.0.is_ok());
    write(&f.cfg.bundle, &new_ca.cert_pem);
    assert!(f.tls.reload_if_changed().unwrap());
    assert!(handshake_with(&f.tls, &f.ca, &old_agent).await.0.is_err());
    assert!(handshake_with(&f.tls, &f.ca, &new_agent).await.0.is_ok());
    assert_eq!(f.tls.reloads(), 2);
}

#[tokio::test]
async fn reloader_task_picks_up_changes() {
    let f = fixture(&[TD]);
    let task = f.tls.spawn_reloader(Duration::from_millis(50));
    let rotated = f.ca.leaf(
        LeafSpec::svid("spiffe://prod.example.org/chaperone/sidecar").with_dns(&["localhost"]),
    );
    write(&f.cfg.key, &rotated.key_pem);
    write(&f.cfg.cert, &rotated.chain_pem);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while f.tls.cert_serial() != rotated.serial_hex {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reloader did not pick up the new cert"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(f.tls.reloads() >= 1);
    let (_, client) = handshake_with(&f.tls, &f.ca, &f.ca.svid(AGENT)).await;
    assert_eq!(served_serial(&client), rotated.serial_hex);
    // The task ends once the ServerTls is gone.
    let Fixture { tls, .. } = f;
    drop(tls);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("reloader ends")
        .unwrap();
}

#[test]
fn load_refuses_bad_material() {
    let f = fixture(&[TD]);
    let other = f.ca.server_cert(&[]);
    let mut cfg = f.cfg.clone();
    let (other_cert, _) = other.write_to(f.dir.path(), "other");
    cfg.cert = other_cert;
    assert!(matches!(
        ServerTls::load(&cfg),
        Err(IdentityError::KeyMismatch { .. })
    ));

    let mut cfg = f.cfg.clone();
    cfg.trust_domains.clear();
    assert!(ServerTls::load(&cfg).is_err());

    let mut cfg = f.cfg.clone();
    cfg.trust_domains = vec!["Bad.Domain".into()];
    assert!(ServerTls::load(&cfg).is_err());

    let expired = f.ca.leaf(LeafSpec::server(&["localhost"]).expired());
    let (c, k) = expired.write_to(f.dir.path(), "expired");
    let mut cfg = f.cfg.clone();
    cfg.cert = c;
    cfg.key = k;
    assert!(ServerTls::load(&cfg).is_err());

    let mut cfg = f.cfg.clone();
    cfg.bundle = f.dir.path().join("missing.pem");
    assert!(matches!(
        ServerTls::load(&cfg),
        Err(IdentityError::Io { .. })
    ));

    // Debug output never contains key material.
    let dbg = format!("{:?}", f.tls);
    assert!(!dbg.contains("PRIVATE KEY"), "{dbg}");
}
