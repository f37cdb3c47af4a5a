//! mTLS clients for driving the sidecar like an agent does: one-shot requests over
//! HTTP/1.1 or HTTP/2, and raw bytes for framing (smuggling) tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response, fully read.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Open a TLS connection to `addr` presenting the config's client certificate.
pub async fn tls_connect(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<TlsStream<TcpStream>, BoxError> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost")?;
    Ok(TlsConnector::from(cfg).connect(name, tcp).await?)
}

/// Send one request on a fresh connection. `h2` selects HTTP/2 (the config must offer `h2` in ALPN).
pub async fn send(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    req: Request<Full<Bytes>>,
    h2: bool,
) -> Result<Reply, BoxError> {
    let mut cfg = (*cfg).clone();
    cfg.alpn_protocols = if h2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    let tls = tls_connect(addr, Arc::new(cfg)).await?;
    let io = TokioIo::new(tls);
    let resp = if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        sender.send_request(req).await?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        sender.send_request(req).await?
    };
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// Build a request for `path` with headers and an optional body.
pub fn request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(path);
    let mut has_host = false;
    for (k, v) in headers {
        has_host |= k.eq_ignore_ascii_case("host");
        b = b.header(*k, *v);
    }
    if !has_host {
        b = b.header("host", "localhost");
    }
    b.body(Full::new(body.into()))
        .unwrap_or_else(|_| Request::new(Full::new(Bytes::new())))
}

/// Write raw bytes over mTLS and read what comes back until the server closes or
/// `wait` passes.
pub async fn raw(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    bytes: &[u8],
    wait: Duration,
) -> Result<String, BoxError> {
    let mut cfg = (*cfg).clone();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut tls = tls_connect(addr, Arc::new(cfg)).await?;
    tls.write_all(bytes).await?;
    tls.flush().await?;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, tls.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => break,
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}
