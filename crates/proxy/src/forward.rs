//! Pooled upstream clients: one hyper client per distinct upstream trust root
//! (system roots, or a route's custom CA), shared by every route that uses it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::{pem::PemObject, CertificateDer};

use crate::body::ProxyBody;
use crate::error::ProxyError;

pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, ProxyBody>;

/// Build a rustls client config trusting `ca` (PEM file) or the system roots.
pub fn client_tls(ca: Option<&Path>) -> Result<rustls::ClientConfig, ProxyError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| {
                ProxyError::Other(format!("reading upstream CA {}: {e}", path.display()))
            })?;
            for c in certs {
                let c = c.map_err(|e| {
                    ProxyError::Other(format!("parsing upstream CA {}: {e}", path.display()))
                })?;
                roots.add(c).map_err(|e| {
                    ProxyError::Other(format!("upstream CA {}: {e}", path.display()))
                })?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for c in native.certs {
                let _ = roots.add(c);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ProxyError::Other(format!("tls: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(cfg)
}

/// A client trusting the system roots (webhooks).
pub fn system_client() -> Result<UpstreamClient, ProxyError> {
    build_client(None)
}

fn build_client(ca: Option<&Path>) -> Result<UpstreamClient, ProxyError> {
    let tls = client_tls(ca)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(connector))
}

/// Clients keyed by custom CA path (`None` = system roots).
pub struct Upstreams {
    clients: HashMap<Option<PathBuf>, UpstreamClient>,
}

impl Upstreams {
    pub fn new(routes: &[chaperone_config::Route]) -> Result<Upstreams, ProxyError> {
        let mut clients = HashMap::new();
        for r in routes {
            let key = r.upstream_ca.clone();
            if let std::collections::hash_map::Entry::Vacant(slot) = clients.entry(key) {
                let client =
                    build_client(slot.key().as_deref()).map_err(|e| ProxyError::Route {
                        route: r.name.clone(),
                        message: e.to_string(),
                    })?;
                slot.insert(client);
            }
        }
        Ok(Upstreams { clients })
    }

    pub fn for_route(&self, r: &chaperone_config::Route) -> Option<&UpstreamClient> {
        self.clients.get(&r.upstream_ca)
    }
}
