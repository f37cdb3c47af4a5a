//! Pooled upstream clients: one hyper client per distinct upstream trust root
//! (system roots, or a route's custom CA), shared by every route that uses it, and one
//! for plain-HTTP upstreams, which never need a trust store. The system roots are read
//! only when some `https://` route has no `upstream_tls.ca`: parsing the distribution's
//! bundle costs ~15 ms at start and ~0.3 MB held for the process's lifetime
//! (docs/performance.md, idle memory).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::{pem::PemObject, CertificateDer};

use crate::body::ProxyBody;
use crate::error::ProxyError;

pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, ProxyBody>;

/// Which trust store an upstream client verifies servers against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTrust {
    /// `http://` upstreams: no TLS, so no trust store (an empty one, never consulted).
    Plain,
    /// `https://` with the system roots (`SSL_CERT_FILE`/`SSL_CERT_DIR` or the
    /// distribution's bundle).
    System,
    /// `https://` with the route's own CA bundle (`upstream_tls.ca`).
    Ca(PathBuf),
}

/// The trust a route needs, borrowed from the route: the one place that decides it,
/// used to build clients at start and to find a route's client per call (no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrustKey<'a> {
    Plain,
    System,
    Ca(&'a std::path::Path),
}

impl<'a> TrustKey<'a> {
    fn of(r: &'a chaperone_config::Route) -> TrustKey<'a> {
        if r.upstream.scheme == "http" {
            return TrustKey::Plain;
        }
        match &r.upstream_ca {
            Some(ca) => TrustKey::Ca(ca),
            None => TrustKey::System,
        }
    }
}

impl UpstreamTrust {
    /// The trust a route's upstream needs.
    pub fn for_route(r: &chaperone_config::Route) -> UpstreamTrust {
        match TrustKey::of(r) {
            TrustKey::Plain => UpstreamTrust::Plain,
            TrustKey::System => UpstreamTrust::System,
            TrustKey::Ca(ca) => UpstreamTrust::Ca(ca.to_path_buf()),
        }
    }

    fn key(&self) -> TrustKey<'_> {
        match self {
            UpstreamTrust::Plain => TrustKey::Plain,
            UpstreamTrust::System => TrustKey::System,
            UpstreamTrust::Ca(ca) => TrustKey::Ca(ca),
        }
    }
}

/// The rustls client config for `trust`.
fn client_tls(trust: &UpstreamTrust) -> Result<rustls::ClientConfig, ProxyError> {
    let mut roots = rustls::RootCertStore::empty();
    match trust {
        UpstreamTrust::Plain => {}
        UpstreamTrust::Ca(path) => {
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
        UpstreamTrust::System => {
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
    build_client(&UpstreamTrust::System)
}

fn build_client(trust: &UpstreamTrust) -> Result<UpstreamClient, ProxyError> {
    let tls = client_tls(trust)?;
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

/// Clients keyed by the trust their routes need. A handful of entries at most (plain,
/// system roots, one per custom CA), so a linear scan per call: no hashing of paths on
/// the request path.
pub struct Upstreams {
    clients: Vec<(UpstreamTrust, UpstreamClient)>,
}

impl Upstreams {
    pub fn new(routes: &[chaperone_config::Route]) -> Result<Upstreams, ProxyError> {
        let mut clients: Vec<(UpstreamTrust, UpstreamClient)> = Vec::new();
        for r in routes {
            let key = TrustKey::of(r);
            if clients.iter().any(|(t, _)| t.key() == key) {
                continue;
            }
            let trust = UpstreamTrust::for_route(r);
            let client = build_client(&trust).map_err(|e| ProxyError::Route {
                route: r.name.clone(),
                message: e.to_string(),
            })?;
            clients.push((trust, client));
        }
        Ok(Upstreams { clients })
    }

    pub fn for_route(&self, r: &chaperone_config::Route) -> Option<&UpstreamClient> {
        self.entry_for_route(r).map(|(_, c)| c)
    }

    fn entry_for_route(
        &self,
        r: &chaperone_config::Route,
    ) -> Option<&(UpstreamTrust, UpstreamClient)> {
        let key = TrustKey::of(r);
        self.clients.iter().find(|(t, _)| t.key() == key)
    }

    /// The trust stores built, for start-up checks and tests.
    pub fn trusts(&self) -> impl Iterator<Item = &UpstreamTrust> {
        self.clients.iter().map(|(t, _)| t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chaperone_config::{Protocol, Route, RouteMatch, Upstream};

    fn route(name: &str, url: &str, ca: Option<&str>) -> Route {
        let (scheme, authority) = url.split_once("://").expect("test url");
        Route {
            name: name.into(),
            matcher: RouteMatch::Prefix(format!("/{name}")),
            upstream: Upstream {
                scheme: scheme.into(),
                authority: authority.into(),
                base_path: String::new(),
                url: url.into(),
            },
            protocol: Protocol::Http,
            labels: Default::default(),
            credential: None,
            upstream_ca: ca.map(PathBuf::from),
            timeout: Duration::from_secs(1),
            allow_upgrades: vec![],
        }
    }

    fn trusts(u: &Upstreams) -> Vec<UpstreamTrust> {
        let mut t: Vec<UpstreamTrust> = u.trusts().cloned().collect();
        t.sort_by_key(|t| format!("{t:?}"));
        t
    }

    #[test]
    fn plain_http_routes_share_one_client_and_never_load_system_roots() {
        let routes = [
            route("a", "http://127.0.0.1:1", None),
            route("b", "http://127.0.0.1:2", None),
        ];
        let u = Upstreams::new(&routes).expect("clients");
        assert_eq!(trusts(&u), vec![UpstreamTrust::Plain]);
        for r in &routes {
            let (trust, _) = u.entry_for_route(r).expect("a client for every route");
            assert_eq!(*trust, UpstreamTrust::Plain);
        }
    }

    #[test]
    fn https_routes_get_system_roots_or_their_own_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &ca,
            chaperone_testsupport::certs::TestCa::new("upstream CA").cert_pem,
        )
        .expect("write ca");
        let ca = ca.to_str().expect("utf-8 path");
        let routes = [
            route("plain", "http://127.0.0.1:1", None),
            route("public", "https://api.example.com", None),
            route("internal", "https://orders.internal", Some(ca)),
        ];
        let u = Upstreams::new(&routes).expect("clients");
        assert_eq!(
            trusts(&u),
            vec![
                UpstreamTrust::Ca(PathBuf::from(ca)),
                UpstreamTrust::Plain,
                UpstreamTrust::System
            ]
        );
        for r in &routes {
            let (trust, _) = u.entry_for_route(r).expect("a client for every route");
            assert_eq!(*trust, UpstreamTrust::for_route(r), "{}", r.name);
        }
    }

    #[test]
    fn an_unreadable_route_ca_names_the_route() {
        let routes = [route(
            "internal",
            "https://orders.internal",
            Some("/nonexistent/ca.pem"),
        )];
        let err = Upstreams::new(&routes).err().expect("must fail");
        let msg = err.to_string();
        assert!(
            msg.contains("internal") && msg.contains("/nonexistent/ca.pem"),
            "{msg}"
        );
    }
}
