//! The webhook over real TLS on 127.0.0.1: a CA and serving cert from rcgen, a rustls
//! client that verifies them, hyper on both ends.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chaperone_injector::{serve, InjectorConfig};
use http_body_util::{BodyExt, Full};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

struct Pki {
    ca_der: CertificateDer<'static>,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test webhook CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Pki {
            ca_der: issuer.der().clone(),
            issuer,
        }
    }

    /// Write a fresh serving cert (SANs localhost, 127.0.0.1) to dir; returns its DER.
    fn write_leaf(&self, dir: &Path) -> Vec<u8> {
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        // write via rename so a reader never sees a half-written file
        std::fs::write(dir.join("tls.key.tmp"), key.serialize_pem()).unwrap();
        std::fs::write(dir.join("tls.crt.tmp"), cert.pem()).unwrap();
        std::fs::rename(dir.join("tls.key.tmp"), dir.join("tls.key")).unwrap();
        std::fs::rename(dir.join("tls.crt.tmp"), dir.join("tls.crt")).unwrap();
        cert.der().to_vec()
    }
}

struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), chaperone_injector::InjectorError>>,
}

async fn start(dir: &Path) -> Server {
    let cfg_text = format!(
        "listen: 127.0.0.1:0\ntls: {{cert: {c}, key: {k}}}\nsidecar: {{image: ghcr.io/example/chaperone:0.1.0, trust_domain: cluster.local}}\n",
        c = dir.join("tls.crt").display(),
        k = dir.join("tls.key").display()
    );
    let cfg_path: PathBuf = dir.join("injector.yaml");
    std::fs::write(&cfg_path, cfg_text).unwrap();
    let cfg = InjectorConfig::load(&cfg_path).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, cfg, async move {
        let _ = rx.await;
    }));
    Server {
        addr,
        stop: Some(tx),
        task,
    }
}

fn client_config(ca: &CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(cfg)
}

/// One HTTPS request; returns (status, body JSON, served leaf certificate DER).
async fn request(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    method: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value, Vec<u8>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_config(ca));
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json, leaf)
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutate_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    pki.write_leaf(dir.path());
    let mut srv = start(dir.path()).await;
    let ca = &pki.ca_der;

    let (status, body, _) =
        request(srv.addr, ca, "GET", "/healthz", "application/json", vec![]).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");

    let (status, body, _) = request(
        srv.addr,
        ca,
        "POST",
        "/mutate",
        "application/json",
        fixture("deployment_pod.json"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["kind"], "AdmissionReview");
    assert_eq!(
        body["response"]["uid"],
        "7f8e9d0c-1a2b-4c3d-8e4f-000000000001"
    );
    assert_eq!(body["response"]["allowed"], true);
    assert_eq!(body["response"]["patchType"], "JSONPatch");
    assert!(!body["response"]["patch"].as_str().unwrap().is_empty());

    // namespace scope injects a pod without its own opt-in; pod scope does not
    let (_, body, _) = request(
        srv.addr,
        ca,
        "POST",
        "/mutate",
        "application/json",
        fixture("namespace_pod.json"),
    )
    .await;
    assert!(body["response"].get("patch").is_none());
    let (_, body, _) = request(
        srv.addr,
        ca,
        "POST",
        "/mutate/namespace",
        "application/json",
        fixture("namespace_pod.json"),
    )
    .await;
    assert!(body["response"]["patch"].is_string());

    // a uid-bearing but unusable request: 200 with allowed=false
    let (status, body, _) = request(
        srv.addr,
        ca,
        "POST",
        "/mutate",
        "application/json",
        fixture("malformed_not_a_pod.json"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["response"]["allowed"], false);
    assert!(body["response"]["status"]["message"]
        .as_str()
        .unwrap()
        .contains("Pods"));

    // no uid / not a review / not JSON / wrong content type / bad query / wrong method / unknown path
    let (status, body, _) = request(
        srv.addr,
        ca,
        "POST",
        "/mutate",
        "application/json",
        fixture("malformed_missing_uid.json"),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().contains("uid"));
    let (status, _, _) = request(
        srv.addr,
        ca,
        "POST",
        "/mutate",
        "application/json",
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _, _) = request(
        srv.addr,
        ca,
        "POST",
        "/mutate",
        "text/plain",
        fixture("bare_pod.json"),
    )
    .await;
    assert_eq!(status, 415);
    let (status, _, _) = request(
        srv.addr,
        ca,
        "POST",
        "/mutate?scope=pod",
        "application/json",
        fixture("bare_pod.json"),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _, _) = request(srv.addr, ca, "GET", "/mutate", "application/json", vec![]).await;
    assert_eq!(status, 405);
    let (status, _, _) = request(srv.addr, ca, "GET", "/nope", "application/json", vec![]).await;
    assert_eq!(status, 404);
    // oversized body
    let big = vec![b' '; chaperone_injector::MAX_BODY_BYTES + 10];
    let (status, _, _) = request(srv.addr, ca, "POST", "/mutate", "application/json", big).await;
    assert_eq!(status, 413);

    // graceful shutdown
    srv.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), srv.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_certificate_is_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let first = pki.write_leaf(dir.path());
    let srv = start(dir.path()).await;
    let (_, _, leaf) = request(
        srv.addr,
        &pki.ca_der,
        "GET",
        "/healthz",
        "application/json",
        vec![],
    )
    .await;
    assert_eq!(leaf, first);

    // a broken update keeps serving the old certificate
    std::fs::write(dir.path().join("tls.crt"), "garbage").unwrap();
    tokio::time::sleep(chaperone_injector::TLS_RELOAD_INTERVAL + Duration::from_secs(1)).await;
    let (status, _, leaf) = request(
        srv.addr,
        &pki.ca_der,
        "GET",
        "/healthz",
        "application/json",
        vec![],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(leaf, first);

    let second = pki.write_leaf(dir.path());
    assert_ne!(first, second);
    let deadline = tokio::time::Instant::now() + chaperone_injector::TLS_RELOAD_INTERVAL * 3;
    loop {
        let (_, _, leaf) = request(
            srv.addr,
            &pki.ca_der,
            "GET",
            "/healthz",
            "application/json",
            vec![],
        )
        .await;
        if leaf == second {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "new certificate never served"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    srv.task.abort();
}

#[tokio::test]
async fn startup_fails_closed_without_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = InjectorConfig::from_yaml(
        &format!(
            "tls: {{cert: {}/missing.crt, key: {}/missing.key}}\nsidecar: {{image: i, trust_domain: td}}\n",
            dir.path().display(),
            dir.path().display()
        ),
        Path::new("x.yaml"),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = serve(listener, cfg, std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("missing.crt"), "{err}");
    // and `run` reports a missing config file
    let err = chaperone_injector::run(&dir.path().join("nope.yaml"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nope.yaml"), "{err}");
}
