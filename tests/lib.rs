#![allow(clippy::unwrap_used, clippy::expect_used)] // test harness: a panic is a test failure
//! The in-process sidecar harness for the integration tests: dev certificates,
//! a real echo upstream, config + policies written to a temp dir, the sidecar
//! started with `chaperone_proxy::start`, and mTLS clients for several identities.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use chaperone_identity::dev::{client_config_from_files, generate_dev_certs, DevCerts};
use chaperone_proxy::{Running, StartOptions};
use chaperone_testsupport::client::{self, Reply};
use chaperone_testsupport::echo::{start_echo, EchoServer};

pub const TD: &str = "test.local";
pub const AGENT: &str = "spiffe://test.local/ns/default/sa/agent";
pub const OTHER: &str = "spiffe://test.local/ns/default/sa/other";
pub const UNMAPPED: &str = "spiffe://test.local/ns/nobody/sa/unmapped";
pub const CODE: &str = "spiffe://test.local/ns/dev/sa/coder";

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a test wants the sidecar to look like.
#[derive(Default)]
pub struct Spec {
    /// Extra config YAML appended at the top level (routes, credentials, ... ).
    /// `{echo}` is replaced by the echo upstream URL, `{dir}` by the temp dir.
    pub config: String,
    /// Policy files (relative path, content) written under `{dir}/policies`.
    pub policies: Vec<(String, String)>,
    /// Extra lines under `sessions:` (indented two spaces).
    pub sessions: String,
}

/// The standard identities block mapping AGENT/OTHER/CODE (UNMAPPED is unmapped).
pub const IDENTITIES: &str = r#"
identities:
  - match: spiffe://test.local/ns/default/sa/*
    attributes: {kind: support, team: cx}
  - match: spiffe://test.local/ns/dev/sa/*
    attributes: {kind: code, team: eng}
"#;

pub struct Harness {
    pub running: Option<Running>,
    pub dir: tempfile::TempDir,
    pub certs: DevCerts,
    pub echo: EchoServer,
    pub config_path: PathBuf,
}

impl Harness {
    pub async fn start(spec: Spec) -> Result<Harness, BoxError> {
        let dir = tempfile::tempdir()?;
        let certs = generate_dev_certs(
            &dir.path().join("certs"),
            TD,
            &[AGENT.into(), OTHER.into(), UNMAPPED.into(), CODE.into()],
        )?;
        let echo = start_echo().await?;
        let pdir = dir.path().join("policies");
        for (name, content) in &spec.policies {
            let p = pdir.join(name);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(p, content)?;
        }
        let body = spec
            .config
            .replace("{echo}", &echo.url())
            .replace("{dir}", &dir.path().display().to_string());
        let yaml = format!(
            "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\ntls:\n  cert: {}\n  key: {}\n  bundle: {}\n  trust_domains: [{TD}]\n  reload: 200ms\npolicy:\n  paths: [{}]\n  reload: 200ms\nsessions:\n  sweep_interval: 100ms\n{}{body}\n",
            certs.sidecar_cert.display(),
            certs.sidecar_key.display(),
            certs.bundle.display(),
            pdir.display(),
            spec.sessions,
        );
        let config_path = dir.path().join("chaperone.yaml");
        std::fs::write(&config_path, &yaml)?;
        let cfg = chaperone_config::load(&config_path)
            .map_err(|e| format!("config:\n{e}\n---\n{yaml}"))?;
        let running = chaperone_proxy::start(cfg, StartOptions::default()).await?;
        Ok(Harness {
            running: Some(running),
            dir,
            certs,
            echo,
            config_path,
        })
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    pub fn agent_addr(&self) -> SocketAddr {
        self.running().agent_addr
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.running().admin_addr)
    }

    /// Client config for one of the generated identities (by SPIFFE ID).
    pub fn client(&self, spiffe_id: &str) -> Arc<rustls::ClientConfig> {
        let a = self
            .certs
            .agents
            .iter()
            .find(|a| a.id.as_str() == spiffe_id)
            .expect("generated identity");
        Arc::new(client_config_from_files(&self.certs.ca, &a.cert, &a.key).expect("client config"))
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// One request as `who`.
    pub async fn call(
        &self,
        who: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        client::send(
            self.agent_addr(),
            self.client(who),
            client::request(method, path, headers, body),
            false,
        )
        .await
        .expect("request")
    }

    /// Create a session for `who`; returns (token, response json).
    pub async fn session(&self, who: &str, body: serde_json::Value) -> (String, serde_json::Value) {
        let r = self
            .call(
                who,
                "POST",
                "/.chaperone/v1/sessions",
                &[("content-type", "application/json")],
                body.to_string(),
            )
            .await;
        assert_eq!(r.status, 201, "session create: {}", r.text());
        let j = r.json();
        (j["token"].as_str().unwrap_or_default().to_owned(), j)
    }

    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, String) {
        admin_request(&self.admin_url(), method, path, body).await
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// Plain-HTTP request to the admin API.
pub async fn admin_request(
    base: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, String) {
    use http_body_util::{BodyExt, Full};
    let addr: SocketAddr = base
        .trim_start_matches("http://")
        .parse()
        .expect("admin addr");
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect admin");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "admin")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .expect("request");
    let resp = sender.send_request(req).await.expect("admin request");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// Allow-everything-with-a-session policy used where policy is not under test.
pub const ALLOW_WITH_SESSION: &str = r#"
package chaperone.authz
default allow := false
allow if input.session != null
allow if input.route.labels.harmless == true
deny contains "no session" if { input.session == null; not input.route.labels.harmless }
"#;

pub const SESSION_ALLOW_ALL: &str = r#"
package chaperone.session
default allow := false
allow if input.identity.attributes.kind
"#;

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}
