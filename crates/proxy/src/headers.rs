//! Header hygiene (SPEC §8): what is removed before a request leaves the sidecar,
//! and what policy may see.

use http::header::{self, HeaderMap, HeaderName};

/// The session header (SPEC §4).
pub const SESSION_HEADER: &str = "chaperone-session";

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the legacy ones proxies strip.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers never forwarded from the agent, and never shown to policy.
const AGENT_CREDENTIALS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    SESSION_HEADER,
    "x-forwarded-client-cert",
];

/// Is this header one the sidecar owns (`x-chaperone-*`)?
fn is_reserved(name: &HeaderName) -> bool {
    name.as_str().starts_with("x-chaperone-")
}

/// Headers listed in `Connection` are hop-by-hop too (RFC 9110 §7.6.1).
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().to_ascii_lowercase().as_bytes()).ok())
        .collect()
}

/// Remove everything SPEC §8 requires from an outbound request's headers.
/// `inject_headers` are all headers any configured credential injects.
pub fn sanitize_request(headers: &mut HeaderMap, inject_headers: &[HeaderName]) {
    // Headers named in Connection are hop-by-hop too (read before removing Connection).
    for n in connection_named(headers) {
        headers.remove(n);
    }
    for h in HOP_BY_HOP.iter().chain(AGENT_CREDENTIALS) {
        headers.remove(*h);
    }
    for h in inject_headers {
        headers.remove(h);
    }
    let reserved: Vec<HeaderName> = headers.keys().filter(|n| is_reserved(n)).cloned().collect();
    for n in reserved {
        headers.remove(n);
    }
}

/// Remove hop-by-hop headers from a response going back to the agent.
pub fn sanitize_response(headers: &mut HeaderMap) {
    for n in connection_named(headers) {
        headers.remove(n);
    }
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
}

/// Headers as policy sees them: lowercase names, repeated values joined with ", ".
/// Called on the already sanitised map, so credentials, cookies and the session
/// header are never present.
pub fn policy_headers(headers: &HeaderMap) -> regorus::Value {
    let mut m = std::collections::BTreeMap::new();
    for name in headers.keys() {
        let all = headers.get_all(name);
        let mut values = all.iter();
        let single = match (values.next(), values.next()) {
            (Some(only), None) => only.to_str().ok(),
            _ => None,
        };
        let value = match single {
            // The common case, one visible-ASCII value: no intermediate strings.
            Some(text) => regorus::Value::from(text),
            None => regorus::Value::from(
                all.iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        };
        m.insert(regorus::Value::from(name.as_str()), value);
    }
    regorus::Value::from(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn policy_headers_join_repeats_and_keep_non_ascii_readable() {
        let mut h = HeaderMap::new();
        h.insert("accept", HeaderValue::from_static("application/json"));
        h.append("x-tag", HeaderValue::from_static("a"));
        h.append("x-tag", HeaderValue::from_static("b"));
        h.insert("x-raw", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let v = policy_headers(&h);
        let get = |k: &str| {
            v[&regorus::Value::from(k)]
                .as_string()
                .map(|s| s.to_string())
        };
        assert_eq!(get("accept").ok().as_deref(), Some("application/json"));
        assert_eq!(get("x-tag").ok().as_deref(), Some("a, b"));
        assert_eq!(get("x-raw").ok().as_deref(), Some("caf\u{fffd}"));
    }

    #[test]
    fn strips_everything_spec_lists() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret-thing, authorization"),
            ("x-secret-thing", "1"),
            ("authorization", "Bearer agent"),
            ("proxy-authorization", "x"),
            ("cookie", "a=b"),
            ("chaperone-session", "chs_x"),
            ("x-chaperone-identity", "forged"),
            ("x-forwarded-client-cert", "forged"),
            ("x-api-key", "agent-supplied"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("content-type", "application/json"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        sanitize_request(&mut h, &[HeaderName::from_static("x-api-key")]);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["content-type"]);
    }
}
