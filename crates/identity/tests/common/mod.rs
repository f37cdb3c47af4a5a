//! Shared helpers: a real TLS server on 127.0.0.1 driven by a `ServerTls`, and a
//! real tokio-rustls client.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chaperone_config::TlsConfig;
use chaperone_identity::{peer_svid, ServerTls, SvidInfo};
use chaperone_testsupport::certs::{LeafSpec, TestCa, TestCert};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

pub const TD: &str = "prod.example.org";
pub const AGENT: &str = "spiffe://prod.example.org/ns/support/sa/bot";

/// The sidecar's own certificate: an SVID that is also valid for `localhost`.
pub fn sidecar_cert(ca: &TestCa) -> TestCert {
    ca.leaf(LeafSpec::svid("spiffe://prod.example.org/chaperone/sidecar").with_dns(&["localhost"]))
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub ca: TestCa,
    pub server: TestCert,
    pub cfg: TlsConfig,
    pub tls: Arc<ServerTls>,
}

pub fn fixture(trust_domains: &[&str]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("agent CA");
    let server = sidecar_cert(&ca);
    let (cert, key) = server.write_to(dir.path(), "svid");
    let bundle = ca.write_to(dir.path(), "bundle");
    let cfg = TlsConfig {
        cert,
        key,
        bundle,
        trust_domains: trust_domains.iter().map(|s| s.to_string()).collect(),
        reload: Duration::from_millis(50),
    };
    let tls = ServerTls::load(&cfg).unwrap();
    Fixture {
        dir,
        ca,
        server,
        cfg,
        tls,
    }
}

pub fn write(path: &Path, contents: &str) {
    // Atomic replace, as SPIRE's agent / cert-manager do.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// What the server saw for one connection.
pub type ServerSide = Result<SvidInfo, String>;

/// What the client saw: the server's leaf serial line, or an error.
#[derive(Debug)]
pub struct ClientSide {
    pub result: Result<String, String>,
    pub alpn: Option<Vec<u8>>,
    pub server_leaf: Option<Vec<u8>>,
}

/// Start a server that accepts exactly one connection with `tls.acceptor()`.
/// On success it reports the peer SVID, writes `<agent id>\n` and echoes lines.
pub async fn serve_one(tls: Arc<ServerTls>) -> (SocketAddr, tokio::task::JoinHandle<ServerSide>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let h = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let acceptor = tls.acceptor();
        let mut stream = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let info = peer_svid(stream.get_ref().1).map_err(|e| e.to_string())?;
        let _ = stream.write_all(format!("{}\n", info.id).as_bytes()).await;
        let _ = stream.flush().await;
        let info2 = info.clone();
        tokio::spawn(async move {
            // Echo until the client goes away (used by the rotation tests).
            let mut buf = [0u8; 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        let _ = stream.flush().await;
                    }
                }
            }
            drop(info2);
        });
        Ok(info)
    });
    (addr, h)
}

pub type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Connect and read the server's greeting line. Keeps the stream open when asked.
pub async fn connect(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> (ClientSide, Option<BufReader<ClientStream>>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let stream = match tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            return (
                ClientSide {
                    result: Err(e.to_string()),
                    alpn: None,
                    server_leaf: None,
                },
                None,
            )
        }
    };
    let alpn = stream.get_ref().1.alpn_protocol().map(|p| p.to_vec());
    let server_leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec());
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    let res = tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut line)).await;
    let result = match res {
        Ok(Ok(0)) => Err("closed without greeting".to_string()),
        Ok(Ok(_)) => Ok(line.trim_end().to_string()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timeout".to_string()),
    };
    let keep = result.is_ok().then_some(r);
    (
        ClientSide {
            result,
            alpn,
            server_leaf,
        },
        keep,
    )
}

/// One full handshake against `tls`.
pub async fn handshake(
    tls: &Arc<ServerTls>,
    cfg: Arc<rustls::ClientConfig>,
) -> (ServerSide, ClientSide) {
    let (addr, h) = serve_one(tls.clone()).await;
    let (client, _) = connect(addr, cfg).await;
    let server = tokio::time::timeout(Duration::from_secs(5), h)
        .await
        .unwrap()
        .unwrap();
    (server, client)
}

/// Handshake with a client presenting `cert` (issued by any CA) and trusting `server_ca`.
pub async fn handshake_with(
    tls: &Arc<ServerTls>,
    server_ca: &TestCa,
    cert: &TestCert,
) -> (ServerSide, ClientSide) {
    let cfg = chaperone_testsupport::certs::mtls_client_config(
        &server_ca.cert_pem,
        &cert.chain_pem,
        &cert.key_pem,
    );
    handshake(tls, cfg).await
}

/// Round-trip a line over an established connection.
pub async fn echo(stream: &mut BufReader<ClientStream>, msg: &str) -> Result<String, String> {
    stream
        .get_mut()
        .write_all(format!("{msg}\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stream.get_mut().flush().await.map_err(|e| e.to_string())?;
    let mut line = String::new();
    match tokio::time::timeout(Duration::from_secs(5), stream.read_line(&mut line)).await {
        Ok(Ok(n)) if n > 0 => Ok(line.trim_end().to_string()),
        other => Err(format!("{other:?}")),
    }
}
