//! `dev certs` output works end to end with `ServerTls` and `client_config`.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use chaperone_config::TlsConfig;
use chaperone_identity::dev::{client_config, client_config_from_files, generate_dev_certs};
use chaperone_identity::{validate_svid_leaf, ServerTls};
use common::*;

#[tokio::test]
async fn generated_certs_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let ids = vec![
        "spiffe://example.org/ns/a/sa/bot".to_string(),
        "spiffe://example.org/ns/a/sa/bot".to_string(),
        "spiffe://example.org/ns/b/sa/helper".to_string(),
    ];
    let certs = generate_dev_certs(dir.path(), "example.org", &ids).unwrap();
    assert_eq!(certs.agents.len(), 2);
    assert_eq!(certs.agents[0].cert, dir.path().join("bot.pem"));
    assert_eq!(certs.agents[1].key, dir.path().join("helper_key.pem"));
    assert_eq!(
        certs.sidecar_id.as_str(),
        "spiffe://example.org/chaperone/sidecar"
    );
    for p in [
        &certs.ca,
        &certs.ca_key,
        &certs.bundle,
        &certs.sidecar_cert,
        &certs.sidecar_key,
    ] {
        assert!(p.exists(), "{}", p.display());
    }
    assert_eq!(
        std::fs::read(&certs.ca).unwrap(),
        std::fs::read(&certs.bundle).unwrap()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for k in [&certs.ca_key, &certs.sidecar_key, &certs.agents[0].key] {
            assert_eq!(
                std::fs::metadata(k).unwrap().permissions().mode() & 0o777,
                0o600,
                "{}",
                k.display()
            );
        }
    }
    let desc = certs.describe();
    assert!(
        desc.contains("bot.pem") && desc.contains("sidecar.pem"),
        "{desc}"
    );

    let sidecar = validate_svid_leaf(
        rustls_pki_types::pem::PemObject::from_pem_file(&certs.sidecar_cert)
            .map(|c: rustls_pki_types::CertificateDer<'static>| c)
            .unwrap()
            .as_ref(),
    )
    .unwrap();
    assert_eq!(sidecar.id, certs.sidecar_id);

    let tls = ServerTls::load(&TlsConfig {
        cert: certs.sidecar_cert.clone(),
        key: certs.sidecar_key.clone(),
        bundle: certs.bundle.clone(),
        trust_domains: vec!["example.org".into()],
        reload: Duration::from_secs(10),
    })
    .unwrap();
    for a in &certs.agents {
        let cfg = client_config_from_files(&certs.ca, &a.cert, &a.key).unwrap();
        let (server, client) = handshake(&tls, Arc::new(cfg)).await;
        assert_eq!(server.unwrap().id, a.id);
        assert_eq!(client.alpn.as_deref(), Some(&b"h2"[..]));
    }

    // The server certificate is valid for 127.0.0.1 too.
    let a = &certs.agents[0];
    let cfg = client_config(
        std::fs::read(&certs.ca).unwrap(),
        std::fs::read_to_string(&a.cert).unwrap(),
        std::fs::read(&a.key).unwrap(),
    )
    .unwrap();
    let (addr, h) = serve_one(tls.clone()).await;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let ip = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ip, tcp)
        .await;
    assert!(s.is_ok(), "{:?}", s.err());
    assert_eq!(h.await.unwrap().unwrap().id, a.id);
}

#[test]
fn defaults_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let certs = generate_dev_certs(dir.path(), "dev.local", &[]).unwrap();
    assert_eq!(certs.agents.len(), 1);
    assert_eq!(
        certs.agents[0].id.as_str(),
        "spiffe://dev.local/ns/default/sa/agent"
    );
    assert!(dir.path().join("agent.pem").exists());

    let d = tempfile::tempdir().unwrap();
    assert!(generate_dev_certs(d.path(), "Bad_TD", &[]).is_err());
    assert!(generate_dev_certs(d.path(), "td", &["spiffe://td/a/../b".into()]).is_err());
    assert!(generate_dev_certs(d.path(), "td", &["spiffe://td".into()]).is_err());
    // Two different IDs writing the same file, or clobbering the CA.
    assert!(generate_dev_certs(
        d.path(),
        "td",
        &["spiffe://td/x/bot".into(), "spiffe://td/y/bot".into()]
    )
    .is_err());
    assert!(generate_dev_certs(d.path(), "td", &["spiffe://td/ns/ca".into()]).is_err());
    assert!(generate_dev_certs(
        d.path(),
        "td",
        &["spiffe://td/a/x".into(), "spiffe://td/a/x_key".into()]
    )
    .is_err());
    assert_eq!(
        std::fs::read_dir(d.path()).unwrap().count(),
        0,
        "nothing written on refusal"
    );

    // client_config refuses a key that does not match the certificate.
    let a = &certs.agents[0];
    let ca = std::fs::read(&certs.ca).unwrap();
    let cert = std::fs::read(&a.cert).unwrap();
    let wrong_key = std::fs::read(&certs.sidecar_key).unwrap();
    assert!(client_config(&ca, &cert, &wrong_key).is_err());
    assert!(client_config(&ca, b"junk", std::fs::read(&a.key).unwrap()).is_err());
}
