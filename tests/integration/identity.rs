//! SPEC §3 through the running sidecar: every SVID rule, trust domains, identity
//! mapping, expired connections, rotation of the serving SVID on disk.

use std::sync::Arc;
use std::time::Duration;

use chaperone_integration::*;
use chaperone_testsupport::certs::{LeafSpec, TestCa};
use chaperone_testsupport::client;
use rcgen::KeyUsagePurpose;

fn spec() -> Spec {
    Spec {
        config: format!(
            "{IDENTITIES}\nroutes:\n  - name: open\n    prefix: /open\n    upstream: \"{{echo}}\"\n    labels: {{harmless: true}}\n"
        ),
        policies: vec![("authz.rego".into(), ALLOW_WITH_SESSION.into())],
        ..Default::default()
    }
}

/// A client that trusts the sidecar's CA but presents `cert`/`key`.
fn presenting(h: &Harness, cert_pem: &str, key_pem: &str) -> Arc<rustls::ClientConfig> {
    let ca = read(&h.certs.ca);
    Arc::new(chaperone_identity::dev::client_config(ca, cert_pem, key_pem).unwrap())
}

async fn try_call(h: &Harness, cfg: Arc<rustls::ClientConfig>) -> Result<u16, String> {
    client::send(
        h.agent_addr(),
        cfg,
        client::request("GET", "/open/x", &[], ""),
        false,
    )
    .await
    .map(|r| r.status.as_u16())
    .map_err(|e| e.to_string())
}

/// The dev CA as a TestCa (same key), so tests can mint bad leaves under the trusted root.
fn trusted_ca(h: &Harness) -> TestCa {
    TestCa::from_pem(&read(&h.certs.ca), &read(&h.certs.ca_key)).expect("load dev CA")
}

#[tokio::test]
async fn every_svid_rule_is_enforced_at_the_handshake() {
    let h = Harness::start(spec()).await.unwrap();
    assert_eq!(
        try_call(&h, h.client(AGENT)).await,
        Ok(200),
        "a valid SVID works"
    );
    let ca = trusted_ca(&h);
    let bad: Vec<(&str, LeafSpec)> = vec![
        (
            "two URI SANs",
            LeafSpec::svid(AGENT).with_uri("spiffe://test.local/ns/default/sa/other"),
        ),
        ("no URI SAN", LeafSpec::server(&["agent.local"])),
        ("CA leaf", LeafSpec::svid(AGENT).ca()),
        (
            "keyCertSign leaf",
            LeafSpec::svid(AGENT).with_key_usages(&[
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyCertSign,
            ]),
        ),
        (
            "cRLSign leaf",
            LeafSpec::svid(AGENT)
                .with_key_usages(&[KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign]),
        ),
        (
            "wrong trust domain",
            LeafSpec::svid("spiffe://other.domain/ns/default/sa/agent"),
        ),
        ("expired", LeafSpec::svid(AGENT).expired()),
        ("not yet valid", LeafSpec::svid(AGENT).not_yet_valid()),
        (
            "uppercase trust domain",
            LeafSpec::svid("spiffe://TEST.local/ns/default/sa/agent"),
        ),
        (
            "port",
            LeafSpec::svid("spiffe://test.local:8443/ns/default/sa/agent"),
        ),
        (
            "dot segment",
            LeafSpec::svid("spiffe://test.local/ns/./sa/agent"),
        ),
        (
            "dot-dot segment",
            LeafSpec::svid("spiffe://test.local/ns/../sa/agent"),
        ),
        (
            "percent-encoding",
            LeafSpec::svid("spiffe://test.local/ns/%2e/sa/agent"),
        ),
        (
            "trailing slash",
            LeafSpec::svid("spiffe://test.local/ns/default/sa/agent/"),
        ),
        (
            "query",
            LeafSpec::svid("spiffe://test.local/ns/default/sa/agent?x=1"),
        ),
        (
            "empty segment",
            LeafSpec::svid("spiffe://test.local/ns//sa/agent"),
        ),
    ];
    for (what, leaf) in bad {
        let cert = ca.leaf(leaf);
        let r = try_call(&h, presenting(&h, &cert.cert_pem, &cert.key_pem)).await;
        assert!(
            r.is_err(),
            "{what}: expected a handshake failure, got {r:?}"
        );
    }
    // Same SPIFFE ID, but from an untrusted CA.
    let rogue = TestCa::new("rogue").svid(AGENT);
    assert!(
        try_call(&h, presenting(&h, &rogue.cert_pem, &rogue.key_pem))
            .await
            .is_err(),
        "untrusted CA"
    );
    // No client certificate at all.
    let no_cert = chaperone_testsupport::certs::tls_client_config(&read(&h.certs.ca));
    assert!(
        try_call(&h, no_cert).await.is_err(),
        "no client certificate"
    );
    let (_, m) = h.admin("GET", "/metrics", None).await;
    let failures: u64 = m
        .lines()
        .find(|l| l.starts_with("chaperone_tls_handshake_failures_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(failures >= 18, "handshake failures counted: {failures}");
}

#[tokio::test]
async fn unmapped_identity_gets_403_with_a_clear_reason() {
    let h = Harness::start(spec()).await.unwrap();
    let r = h.call(UNMAPPED, "GET", "/open/x", &[], "").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("matches no `identities` entry"),
        "{}",
        r.text()
    );
    assert_eq!(h.echo.seen.count(), 0);
}

#[tokio::test]
async fn serving_svid_rotation_on_disk_is_picked_up_without_failed_requests() {
    let h = Harness::start(spec()).await.unwrap();
    let before = h.running().sidecar.tls.cert_serial();
    // A load of calls runs while the files are rewritten.
    let addr = h.agent_addr();
    let cfg = h.client(AGENT);
    let load = tokio::spawn(async move {
        let mut ok = 0;
        for _ in 0..60 {
            let r = client::send(
                addr,
                cfg.clone(),
                client::request("GET", "/open/x", &[], ""),
                false,
            )
            .await;
            assert_eq!(
                r.map(|r| r.status.as_u16()).ok(),
                Some(200),
                "a call failed during rotation"
            );
            ok += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ok
    });
    let ca = trusted_ca(&h);
    let new =
        ca.leaf(LeafSpec::server(&["localhost"]).with_uri("spiffe://test.local/chaperone/sidecar"));
    // Write key then cert atomically (rename), as spiffe-helper does.
    let (cert_tmp, key_tmp) = (h.path("certs/new.pem"), h.path("certs/new_key.pem"));
    std::fs::write(&cert_tmp, &new.chain_pem).unwrap();
    std::fs::write(&key_tmp, &new.key_pem).unwrap();
    std::fs::rename(&key_tmp, &h.certs.sidecar_key).unwrap();
    std::fs::rename(&cert_tmp, &h.certs.sidecar_cert).unwrap();
    assert_eq!(load.await.unwrap(), 60);
    let mut rotated = false;
    for _ in 0..50 {
        if h.running().sidecar.tls.cert_serial() != before {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rotated, "new serving cert picked up");
    assert_eq!(h.running().sidecar.tls.cert_serial(), new.serial_hex);
    assert_eq!(try_call(&h, h.client(AGENT)).await, Ok(200));
}
