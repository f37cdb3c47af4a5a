//! SPEC §3 over real TLS handshakes on 127.0.0.1.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use chaperone_identity::{validate_svid_leaf, HandshakeFailure};
use chaperone_testsupport::certs::{tls_client_config, KeyUsagePurpose, LeafSpec, TestCa};
use common::*;

fn reason_count(f: &Fixture, r: HandshakeFailure) -> u64 {
    f.tls
        .handshake_failures_by_reason()
        .iter()
        .find(|(x, _)| *x == r)
        .map(|(_, n)| *n)
        .unwrap()
}

/// Assert the server refused the handshake and the client never got the greeting.
fn assert_refused(what: &str, server: &ServerSide, client: &ClientSide) {
    assert!(server.is_err(), "{what}: server accepted: {server:?}");
    assert!(
        client.result.is_err(),
        "{what}: client got a greeting: {client:?}"
    );
}

#[tokio::test]
async fn valid_svid_is_accepted_with_alpn_and_identity() {
    let f = fixture(&[TD]);
    let agent = f.ca.svid(AGENT);
    let (server, client) = handshake_with(&f.tls, &f.ca, &agent).await;
    let info = server.unwrap();
    assert_eq!(info.id.as_str(), AGENT);
    assert_eq!(info.id.trust_domain(), TD);
    assert_eq!(info.serial_hex, agent.serial_hex);
    assert!(info.not_before < info.not_after);
    assert_eq!(client.result.unwrap(), AGENT);
    assert_eq!(client.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(f.tls.handshake_failures().load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn http1_only_client_and_tls12_work() {
    let f = fixture(&[TD]);
    let agent = f.ca.svid(AGENT);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates({
            let mut r = rustls::RootCertStore::empty();
            r.add(f.ca.der.clone()).unwrap();
            r
        })
        .with_client_auth_cert(agent.chain_der(), agent.key_der())
        .unwrap();
    let mut cfg = cfg;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let (server, client) = handshake(&f.tls, Arc::new(cfg)).await;
    assert_eq!(server.unwrap().id.as_str(), AGENT);
    assert_eq!(client.alpn.as_deref(), Some(&b"http/1.1"[..]));
}

#[tokio::test]
async fn svid_via_intermediate_is_accepted() {
    let f = fixture(&[TD]);
    let inter = f.ca.intermediate("spire intermediate");
    let agent = inter.svid(AGENT);
    let (server, _) = handshake_with(&f.tls, &f.ca, &agent).await;
    assert_eq!(server.unwrap().id.as_str(), AGENT);
}

#[tokio::test]
async fn no_client_certificate_fails_the_handshake() {
    let f = fixture(&[TD]);
    let (server, client) = handshake(&f.tls, tls_client_config(&f.ca.cert_pem)).await;
    assert_refused("no cert", &server, &client);
}

#[tokio::test]
async fn chain_failures_fail_the_handshake() {
    let f = fixture(&[TD]);
    let other = TestCa::new("attacker CA");
    let cases = [
        ("untrusted CA, same SAN", other.svid(AGENT)),
        ("expired", f.ca.leaf(LeafSpec::svid(AGENT).expired())),
        (
            "not yet valid",
            f.ca.leaf(LeafSpec::svid(AGENT).not_yet_valid()),
        ),
    ];
    for (i, (what, cert)) in cases.iter().enumerate() {
        let (server, client) = handshake_with(&f.tls, &f.ca, cert).await;
        assert_refused(what, &server, &client);
        assert_eq!(
            reason_count(&f, HandshakeFailure::Chain),
            i as u64 + 1,
            "{what}"
        );
    }
    assert_eq!(f.tls.handshake_failures().load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn non_svid_leaves_fail_the_handshake() {
    let f = fixture(&[TD]);
    let seen: Arc<Mutex<Vec<(HandshakeFailure, String)>>> = Arc::default();
    let s = seen.clone();
    f.tls
        .set_failure_hook(move |r, d| s.lock().unwrap().push((r, d.to_string())));
    let cases = [
        (
            "two URI SANs",
            LeafSpec::svid(AGENT).with_uri("spiffe://prod.example.org/ns/x/sa/y"),
            "exactly one URI SAN",
        ),
        (
            "no URI SAN",
            LeafSpec::default().with_dns(&["bot.example.org"]),
            "no URI SAN",
        ),
        (
            "keyCertSign",
            LeafSpec::svid(AGENT).with_key_usages(&[
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyCertSign,
            ]),
            "keyCertSign",
        ),
        (
            "cRLSign",
            LeafSpec::svid(AGENT)
                .with_key_usages(&[KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign]),
            "cRLSign",
        ),
        (
            "trust-domain ID",
            LeafSpec::svid("spiffe://prod.example.org"),
            "no path",
        ),
    ];
    for (what, spec, needle) in cases {
        let cert = f.ca.leaf(spec);
        let (server, client) = handshake_with(&f.tls, &f.ca, &cert).await;
        assert_refused(what, &server, &client);
        let last = seen.lock().unwrap().last().cloned().unwrap();
        assert_eq!(last.0, HandshakeFailure::InvalidSvid, "{what}");
        assert!(last.1.contains(needle), "{what}: {}", last.1);
    }
    assert_eq!(reason_count(&f, HandshakeFailure::InvalidSvid), 5);
}

#[tokio::test]
async fn ca_leaf_fails_the_handshake() {
    let f = fixture(&[TD]);
    let cert = f.ca.leaf(LeafSpec::svid(AGENT).ca());
    let (server, client) = handshake_with(&f.tls, &f.ca, &cert).await;
    assert_refused("CA leaf", &server, &client);
    assert_eq!(f.tls.handshake_failures().load(Ordering::Relaxed), 1);
    // Our own check refuses it too, whatever WebPKI decides first.
    let e = validate_svid_leaf(cert.der.as_ref())
        .unwrap_err()
        .to_string();
    assert!(e.contains("CA certificate"), "{e}");
}

#[tokio::test]
async fn wrong_trust_domain_fails_the_handshake() {
    let f = fixture(&[TD, "staging.example.org"]);
    let ok = f.ca.svid("spiffe://staging.example.org/ns/a/sa/b");
    let (server, _) = handshake_with(&f.tls, &f.ca, &ok).await;
    assert!(server.is_ok(), "{server:?}");
    for id in [
        "spiffe://evil.example.org/ns/support/sa/bot",
        "spiffe://example.org/ns/support/sa/bot",
    ] {
        let cert = f.ca.svid(id);
        let (server, client) = handshake_with(&f.tls, &f.ca, &cert).await;
        assert_refused(id, &server, &client);
    }
    assert_eq!(reason_count(&f, HandshakeFailure::UntrustedDomain), 2);
    assert_eq!(reason_count(&f, HandshakeFailure::InvalidSvid), 0);
}

#[tokio::test]
async fn malformed_spiffe_ids_fail_the_handshake() {
    let f = fixture(&[TD]);
    let bad = [
        "SPIFFE://prod.example.org/ns/support/sa/bot",
        "spiffe://PROD.example.org/ns/support/sa/bot",
        "spiffe://prod.example.org:8443/ns/support/sa/bot",
        "spiffe://user@prod.example.org/ns/support/sa/bot",
        "spiffe://prod.example.org/ns/support/sa/bot?x=1",
        "spiffe://prod.example.org/ns/support/sa/bot#frag",
        "spiffe://prod.example.org/ns/%2e/sa/bot",
        "spiffe://prod.example.org/ns//sa/bot",
        "spiffe://prod.example.org/ns/./sa/bot",
        "spiffe://prod.example.org/ns/../sa/bot",
        "spiffe://prod.example.org/ns/support/sa/bot/",
    ];
    for id in bad {
        let cert = f.ca.svid(id);
        let (server, client) = handshake_with(&f.tls, &f.ca, &cert).await;
        assert_refused(id, &server, &client);
        assert!(validate_svid_leaf(cert.der.as_ref()).is_err(), "{id}");
    }
    assert_eq!(
        reason_count(&f, HandshakeFailure::InvalidSvid),
        bad.len() as u64
    );
}
