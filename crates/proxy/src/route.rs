//! Route table: host routes first (exact host), then the longest path prefix on a
//! segment boundary. Built once per config (re)load; lookups allocate nothing.

use std::collections::HashMap;
use std::sync::Arc;

use chaperone_config::{Route, RouteMatch};

/// A matched route and the path the upstream receives (prefix stripped).
pub struct RouteMatchResult<'a> {
    pub route: &'a Arc<RouteEntry>,
    /// `input.request.route_path`: the canonical path with the prefix stripped.
    pub route_path: &'a str,
}

/// A route plus what is precomputed for it.
pub struct RouteEntry {
    pub route: Route,
    /// `input.route` as a policy value, built once.
    pub policy_value: regorus::Value,
    /// `labels.data_domain`, if a string (feeds session stats).
    pub data_domain: Option<String>,
}

pub struct RouteTable {
    by_host: HashMap<String, Arc<RouteEntry>>,
    /// Sorted by prefix length, longest first.
    by_prefix: Vec<(String, Arc<RouteEntry>)>,
    by_name: HashMap<String, Arc<RouteEntry>>,
}

impl RouteTable {
    pub fn new(routes: &[Route]) -> RouteTable {
        let mut by_host = HashMap::new();
        let mut by_prefix = Vec::new();
        let mut by_name = HashMap::new();
        for r in routes {
            let entry = Arc::new(RouteEntry {
                policy_value: crate::input::route_value(r),
                data_domain: r
                    .labels
                    .get("data_domain")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned),
                route: r.clone(),
            });
            by_name.insert(r.name.clone(), entry.clone());
            match &r.matcher {
                RouteMatch::Host(h) => {
                    by_host.insert(h.to_ascii_lowercase(), entry);
                }
                RouteMatch::Prefix(p) => by_prefix.push((p.clone(), entry)),
            }
        }
        by_prefix.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        RouteTable {
            by_host,
            by_prefix,
            by_name,
        }
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<RouteEntry>> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// `host` is the lowercased request host without port; `path` is canonical.
    pub fn lookup<'a>(&'a self, host: Option<&str>, path: &'a str) -> Option<RouteMatchResult<'a>> {
        if let Some(h) = host {
            if let Some(route) = self.by_host.get(h) {
                return Some(RouteMatchResult {
                    route,
                    route_path: path,
                });
            }
        }
        for (prefix, route) in &self.by_prefix {
            if prefix == "/" {
                return Some(RouteMatchResult {
                    route,
                    route_path: path,
                });
            }
            if let Some(rest) = path.strip_prefix(prefix.as_str()) {
                if rest.is_empty() {
                    return Some(RouteMatchResult {
                        route,
                        route_path: "/",
                    });
                }
                if rest.starts_with('/') {
                    return Some(RouteMatchResult {
                        route,
                        route_path: rest,
                    });
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chaperone_config::{Protocol, Upstream};
    use std::time::Duration;

    fn route(name: &str, m: RouteMatch) -> Route {
        Route {
            name: name.into(),
            matcher: m,
            upstream: Upstream {
                scheme: "http".into(),
                authority: "127.0.0.1:1".into(),
                base_path: String::new(),
                url: "http://127.0.0.1:1".into(),
            },
            protocol: Protocol::Http,
            labels: Default::default(),
            credential: None,
            upstream_ca: None,
            timeout: Duration::from_secs(1),
            allow_upgrades: vec![],
        }
    }

    #[test]
    fn longest_prefix_on_segment_boundary() {
        let t = RouteTable::new(&[
            route("a", RouteMatch::Prefix("/orders".into())),
            route("b", RouteMatch::Prefix("/orders/v2".into())),
            route("h", RouteMatch::Host("api.example.org".into())),
        ]);
        let m = t.lookup(None, "/orders/v2/x").unwrap();
        assert_eq!((m.route.route.name.as_str(), m.route_path), ("b", "/x"));
        let m = t.lookup(None, "/orders/v1").unwrap();
        assert_eq!((m.route.route.name.as_str(), m.route_path), ("a", "/v1"));
        let m = t.lookup(None, "/orders").unwrap();
        assert_eq!(m.route_path, "/");
        assert!(t.lookup(None, "/ordersx").is_none());
        let m = t.lookup(Some("api.example.org"), "/orders/v1").unwrap();
        assert_eq!(
            (m.route.route.name.as_str(), m.route_path),
            ("h", "/orders/v1")
        );
        assert!(t.lookup(None, "/nothing").is_none());
    }
}
