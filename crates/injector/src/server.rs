//! The HTTPS server: `POST /mutate` (pod opt-in), `POST /mutate/namespace` (namespace
//! opt-in, used by the namespaceSelector webhook entry), `GET /healthz`.

use std::convert::Infallible;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::mutate::{mutate_scoped, Scope};
use crate::{InjectorConfig, InjectorError};

/// Largest accepted request body (the API server caps objects at ~1.5 MiB).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// How often the serving certificate files are checked for changes.
pub const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(5);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the current serving certificate; swapped in place when the files change.
#[derive(Debug)]
struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|g| Arc::clone(&g))
    }
}

fn load_certified_key(
    provider: &CryptoProvider,
    cert: &Path,
    key: &Path,
) -> Result<(Arc<CertifiedKey>, Vec<u8>), InjectorError> {
    let cert_pem = std::fs::read(cert)
        .map_err(|e| InjectorError::Tls(format!("read {}: {e}", cert.display())))?;
    let key_pem = std::fs::read(key)
        .map_err(|e| InjectorError::Tls(format!("read {}: {e}", key.display())))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| InjectorError::Tls(format!("parse {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(InjectorError::Tls(format!(
            "{} holds no certificate",
            cert.display()
        )));
    }
    let der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| InjectorError::Tls(format!("parse {}: {e}", key.display())))?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| InjectorError::Tls(format!("load {}: {e}", key.display())))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| {
        InjectorError::Tls(format!(
            "{} does not match {}: {e}",
            key.display(),
            cert.display()
        ))
    })?;
    let mut fingerprint = cert_pem;
    fingerprint.extend_from_slice(&key_pem);
    Ok((Arc::new(ck), fingerprint))
}

fn build_acceptor(
    cfg: &InjectorConfig,
) -> Result<(TlsAcceptor, Arc<ReloadingCert>, Vec<u8>), InjectorError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (ck, fingerprint) = load_certified_key(&provider, &cfg.tls.cert, &cfg.tls.key)?;
    let resolver = Arc::new(ReloadingCert {
        current: RwLock::new(ck),
    });
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| InjectorError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(server)), resolver, fingerprint))
}

/// Poll the certificate files; swap in a new key pair when they change and parse.
/// A broken update keeps the previous certificate (logged).
async fn reload_loop(resolver: Arc<ReloadingCert>, cert: PathBuf, key: PathBuf, mut last: Vec<u8>) {
    let provider = rustls::crypto::ring::default_provider();
    let mut tick = tokio::time::interval(TLS_RELOAD_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match load_certified_key(&provider, &cert, &key) {
            Ok((ck, fp)) if fp != last => {
                if let Ok(mut g) = resolver.current.write() {
                    *g = ck;
                    last = fp;
                    tracing::info!(cert = %cert.display(), "webhook serving certificate reloaded");
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "webhook certificate reload failed; keeping the previous one")
            }
        }
    }
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(
        status,
        &serde_json::json!({"error": "bad_request", "message": message}),
    )
}

/// Route one request.
async fn handle(
    req: Request<Incoming>,
    cfg: Arc<InjectorConfig>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let resp = match (req.method(), path) {
        (&Method::GET, "/healthz") => {
            json_response(StatusCode::OK, &serde_json::json!({"status": "ok"}))
        }
        (&Method::POST, "/mutate") | (&Method::POST, "/mutate/namespace") => {
            let scope = if path == "/mutate" {
                Scope::Pod
            } else {
                Scope::Namespace
            };
            if req.uri().query().is_some_and(|q| !q.is_empty()) {
                return Ok(error_response(
                    StatusCode::BAD_REQUEST,
                    "query parameters are not accepted",
                ));
            }
            let ct_ok = req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim_start().starts_with("application/json"));
            if !ct_ok {
                return Ok(error_response(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "content-type must be application/json",
                ));
            }
            let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return Ok(error_response(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!("cannot read body: {e}"),
                    ));
                }
            };
            match serde_json::from_slice::<serde_json::Value>(&body) {
                Err(e) => {
                    error_response(StatusCode::BAD_REQUEST, &format!("body is not JSON: {e}"))
                }
                Ok(review) => match mutate_scoped(&review, &cfg, scope) {
                    Ok(out) => json_response(StatusCode::OK, &out),
                    Err(InjectorError::BadReview(m)) => {
                        tracing::warn!(message = %m, "rejecting malformed AdmissionReview");
                        error_response(
                            StatusCode::BAD_REQUEST,
                            &format!("bad AdmissionReview: {m}"),
                        )
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "mutation failed");
                        json_response(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            &serde_json::json!({"error": "internal", "message": e.to_string()}),
                        )
                    }
                },
            }
        }
        (_, "/mutate") | (_, "/mutate/namespace") | (_, "/healthz") => {
            error_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "not_found", "message": "no such path"}),
        ),
    };
    Ok(resp)
}

/// Serve the webhook on an already bound listener until `shutdown` completes.
pub async fn serve<F>(
    listener: TcpListener,
    cfg: InjectorConfig,
    shutdown: F,
) -> Result<(), InjectorError>
where
    F: Future<Output = ()> + Send,
{
    cfg.validate()?;
    let (acceptor, resolver, fingerprint) = build_acceptor(&cfg)?;
    let reload = tokio::spawn(reload_loop(
        resolver,
        cfg.tls.cert.clone(),
        cfg.tls.key.clone(),
        fingerprint,
    ));
    let cfg = Arc::new(cfg);
    let addr = listener
        .local_addr()
        .map_err(|source| InjectorError::Listen {
            addr: cfg.listen,
            source,
        })?;
    tracing::info!(%addr, "chaperone injector listening");
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Transient (EMFILE, ECONNABORTED...): back off briefly instead of exiting.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let cfg = Arc::clone(&cfg);
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let svc = hyper::service::service_fn(move |req| handle(req, Arc::clone(&cfg)));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection(TokioIo::new(tls), svc).await {
                tracing::debug!(%peer, error = %e, "connection error");
            }
        });
    }
    reload.abort();
    tracing::info!("chaperone injector stopped");
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Load the config at `config`, bind `listen` and serve until SIGTERM / Ctrl-C.
pub async fn run(config: &Path) -> Result<(), InjectorError> {
    let cfg = InjectorConfig::load(config)?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| InjectorError::Listen {
            addr: cfg.listen,
            source,
        })?;
    serve(listener, cfg, shutdown_signal()).await
}
