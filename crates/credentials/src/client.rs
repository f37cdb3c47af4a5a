//! A small HTTPS/HTTP client for provider APIs (hyper-util legacy client + rustls/ring).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use zeroize::Zeroizing;

use crate::CredentialError;

/// Upper bound on a provider response body.
const MAX_BODY: usize = 1024 * 1024;
/// Upper bound on one provider round trip.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One client per provider instance (connection pool, fixed trust roots).
pub(crate) struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    provider: &'static str,
}

impl HttpClient {
    /// `ca`: PEM trust anchors for https; `None` = the system roots.
    pub(crate) fn new(
        provider: &'static str,
        name: &str,
        ca: Option<&Path>,
    ) -> Result<Self, CredentialError> {
        let crypto = Arc::new(rustls::crypto::ring::default_provider());
        let cfg_err = |reason: String| CredentialError::Config {
            name: name.to_string(),
            reason,
        };
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match ca {
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                let certs =
                    CertificateDer::pem_file_iter(path).map_err(|e| CredentialError::File {
                        what: "CA",
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?;
                for c in certs {
                    let c = c.map_err(|e| CredentialError::File {
                        what: "CA",
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?;
                    roots
                        .add(c)
                        .map_err(|e| cfg_err(format!("bad CA certificate: {e}")))?;
                }
                if roots.is_empty() {
                    return Err(cfg_err(format!(
                        "no certificate in CA file `{}`",
                        path.display()
                    )));
                }
                let tls = rustls::ClientConfig::builder_with_provider(crypto)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| cfg_err(e.to_string()))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                builder.with_tls_config(tls)
            }
            None => match hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_native_roots(crypto.clone())
            {
                Ok(b) => b,
                Err(e) => {
                    // No system roots: https then fails closed at the handshake.
                    tracing::warn!(credential = name, error = %e, "no system trust roots available");
                    let tls = rustls::ClientConfig::builder_with_provider(crypto)
                        .with_safe_default_protocol_versions()
                        .map_err(|e| cfg_err(e.to_string()))?
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth();
                    builder.with_tls_config(tls)
                }
            },
        };
        let connector = builder.https_or_http().enable_http1().build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(HttpClient { client, provider })
    }

    /// Send a request; returns the status and the body (zeroized when dropped).
    pub(crate) async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Zeroizing<Vec<u8>>), CredentialError> {
        let provider = self.provider;
        let unavailable = |reason: String| CredentialError::Unavailable { provider, reason };
        let fut = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| unavailable(describe_client_error(&e)))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|_| unavailable("error reading response body".into()))?
                .to_bytes();
            Ok::<_, CredentialError>((status, Zeroizing::new(body.to_vec())))
        };
        tokio::time::timeout(TIMEOUT, fut)
            .await
            .map_err(|_| unavailable(format!("no answer within {}s", TIMEOUT.as_secs())))?
    }
}

fn describe_client_error(e: &hyper_util::client::legacy::Error) -> String {
    use std::error::Error as _;
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        parts.push(s.to_string());
        src = s.source();
    }
    crate::error::sanitise(&parts.join(": "), &[])
}
