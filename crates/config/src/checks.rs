//! Pure string validators used by `validate()`. Each returns a human message on error.

use crate::Upstream;

/// Names of routes and credentials: `[A-Za-z0-9_.-]+`, at most 128 characters.
pub(crate) fn name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 128 {
        return Err("must be at most 128 characters".into());
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(format!(
            "invalid name {s:?}: use letters, digits, '_', '.' and '-'"
        ));
    }
    Ok(())
}

/// A canonical route prefix.
pub(crate) fn prefix(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("prefix {p:?} must start with '/'"));
    }
    if p == "/" {
        return Ok(());
    }
    if p.ends_with('/') {
        return Err(format!(
            "prefix {p:?} must not end with '/' (write {:?})",
            p.trim_end_matches('/')
        ));
    }
    path_chars(p, "prefix")?;
    for seg in p[1..].split('/') {
        if seg.is_empty() {
            return Err(format!("prefix {p:?} must not contain '//'"));
        }
        if seg == "." || seg == ".." {
            return Err(format!(
                "prefix {p:?} must not contain '.' or '..' segments"
            ));
        }
    }
    Ok(())
}

fn path_chars(p: &str, what: &str) -> Result<(), String> {
    for c in p.chars() {
        if matches!(c, '%' | ';' | '?' | '#' | '\\') {
            return Err(format!("{what} {p:?} must not contain {c:?}"));
        }
        if !c.is_ascii_graphic() {
            return Err(format!(
                "{what} {p:?} must contain only visible ASCII characters"
            ));
        }
    }
    Ok(())
}

/// A host name or IP literal (no port); returns it lowercased.
pub(crate) fn host(h: &str) -> Result<String, String> {
    if let Some(inner) = h.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner
            .parse::<std::net::Ipv6Addr>()
            .map(|_| h.to_ascii_lowercase())
            .map_err(|_| format!("invalid IPv6 address {h:?}"));
    }
    if h.is_empty() {
        return Err("host must not be empty".into());
    }
    if h.len() > 253 {
        return Err("host name is too long".into());
    }
    let lower = h.to_ascii_lowercase();
    for label in lower.split('.') {
        if label.is_empty() {
            return Err(format!("invalid host {h:?}: empty label"));
        }
        if label.len() > 63 {
            return Err(format!(
                "invalid host {h:?}: label longer than 63 characters"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("invalid host {h:?}: label starts or ends with '-'"));
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "invalid host {h:?}: use letters, digits, '-', '_' and '.'"
            ));
        }
    }
    Ok(lower)
}

/// A parsed `http`/`https` URL.
pub(crate) struct Url {
    pub scheme: String,
    pub authority: String,
    pub path: String,
}

/// Parse an absolute `http`/`https` URL with a host. Userinfo and fragments are
/// always rejected; a query only when `allow_query` is false.
pub(crate) fn http_url(u: &str, allow_query: bool) -> Result<Url, String> {
    let (scheme, rest) = match u.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => {
            return Err(format!(
                "{u:?} is not an absolute URL (expected http://host or https://host)"
            ))
        }
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "unsupported URL scheme {scheme:?} (expected http or https)"
        ));
    }
    if u.chars().any(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "URL {u:?} must contain only visible ASCII characters"
        ));
    }
    if u.contains('#') {
        return Err(format!("URL {u:?} must not contain a fragment"));
    }
    let (before_query, has_query) = match rest.split_once('?') {
        Some((b, _)) => (b, true),
        None => (rest, false),
    };
    if has_query && !allow_query {
        return Err(format!("URL {u:?} must not contain a query"));
    }
    let (authority, path) = match before_query.find('/') {
        Some(i) => (&before_query[..i], &before_query[i..]),
        None => (before_query, ""),
    };
    if authority.contains('@') {
        return Err(format!(
            "URL {u:?} must not contain userinfo (put secrets in credential files)"
        ));
    }
    if authority.is_empty() {
        return Err(format!("URL {u:?} has no host"));
    }
    let (host_part, port) = if authority.starts_with('[') {
        match authority.find(']') {
            Some(i) => {
                let after = &authority[i + 1..];
                match after.strip_prefix(':') {
                    Some(p) => (&authority[..=i], Some(p)),
                    None if after.is_empty() => (&authority[..=i], None),
                    None => return Err(format!("invalid authority in URL {u:?}")),
                }
            }
            None => return Err(format!("invalid IPv6 authority in URL {u:?}")),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let host = host(host_part).map_err(|e| format!("URL {u:?}: {e}"))?;
    let authority = match port {
        Some(p) => {
            match p.parse::<u16>() {
                Ok(n) if n > 0 && p.chars().all(|c| c.is_ascii_digit()) => {}
                _ => return Err(format!("URL {u:?} has an invalid port {p:?}")),
            }
            format!("{host}:{p}")
        }
        None => host.clone(),
    };
    Ok(Url {
        scheme,
        authority,
        path: path.to_string(),
    })
}

/// An upstream URL: `http`/`https`, host, optional canonical base path, no query.
pub(crate) fn upstream(u: &str) -> Result<Upstream, String> {
    let url = http_url(u, false)?;
    let base = url.path.trim_end_matches('/');
    if !base.is_empty() {
        prefix(base).map_err(|e| format!("upstream base path: {e}"))?;
    }
    Ok(Upstream {
        scheme: url.scheme,
        authority: url.authority,
        base_path: base.to_string(),
        url: u.to_string(),
    })
}

/// Headers that may never be injected: framing, hop-by-hop and the session header.
const FORBIDDEN_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "chaperone-session",
];

/// An HTTP header name (RFC 9110 token) that may carry a credential; returns it lowercased.
pub(crate) fn header_name(h: &str) -> Result<String, String> {
    if h.is_empty() {
        return Err("header name must not be empty".into());
    }
    if !h.chars().all(is_tchar) {
        return Err(format!("invalid header name {h:?}: must be an HTTP token"));
    }
    let lower = h.to_ascii_lowercase();
    if FORBIDDEN_HEADERS.contains(&lower.as_str()) {
        return Err(format!("header {lower:?} cannot carry a credential"));
    }
    Ok(lower)
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// An HTTP upgrade protocol token (e.g. `websocket`); returns it lowercased.
pub(crate) fn upgrade_token(t: &str) -> Result<String, String> {
    if t.is_empty() || !t.chars().all(|c| is_tchar(c) || c == '/') {
        return Err(format!("invalid upgrade protocol {t:?}"));
    }
    let lower = t.to_ascii_lowercase();
    if lower == "h2c" || lower.starts_with("h2c/") {
        return Err("h2c upgrades cannot be allowed (request smuggling risk)".into());
    }
    Ok(lower)
}

/// An `inject.value` template. `lease` enables `{username}`, `{password}`, `{basic}`.
pub(crate) fn template(v: &str, lease: bool) -> Result<(), String> {
    if v.chars().any(|c| !(c == '\t' || (' '..='~').contains(&c))) {
        return Err("inject value must contain only visible ASCII, spaces and tabs".into());
    }
    let mut rest = v;
    let mut placeholders = 0usize;
    while let Some(i) = rest.find(['{', '}']) {
        let after = &rest[i..];
        if after.starts_with('}') {
            return Err(format!("unmatched '}}' in inject value {v:?}"));
        }
        let Some(end) = after.find('}') else {
            return Err(format!("unterminated '{{' in inject value {v:?}"));
        };
        let name = &after[1..end];
        match name {
            "token" => {}
            "username" | "password" | "basic" if lease => {}
            "username" | "password" | "basic" => {
                return Err(format!(
                    "placeholder {{{name}}} is only available for vault lease credentials"
                ))
            }
            _ => {
                let allowed = if lease {
                    "{token}, {username}, {password}, {basic}"
                } else {
                    "{token}"
                };
                return Err(format!(
                    "unknown placeholder {{{name}}} in inject value (allowed: {allowed})"
                ));
            }
        }
        placeholders += 1;
        rest = &after[end + 1..];
    }
    if placeholders == 0 {
        let need = if lease {
            "{token}, {username}, {password} or {basic}"
        } else {
            "{token}"
        };
        return Err(format!("inject value must contain {need}"));
    }
    Ok(())
}

/// A SPIFFE trust domain name: lowercase letters, digits, '.', '-', '_'.
pub(crate) fn trust_domain(td: &str) -> Result<(), String> {
    if td.is_empty() {
        return Err("trust domain must not be empty".into());
    }
    if td.len() > 255 {
        return Err("trust domain is too long".into());
    }
    if td.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("trust domain {td:?} must be lowercase"));
    }
    if !td
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
    {
        return Err(format!(
            "invalid trust domain {td:?}: use lowercase letters, digits, '.', '-' and '_'"
        ));
    }
    Ok(())
}

/// A SPIFFE ID pattern (`spiffe://td/seg/*`); `*` stands for exactly one whole segment.
/// Returns the trust domain.
pub(crate) fn spiffe_pattern(p: &str) -> Result<&str, String> {
    let Some(rest) = p.strip_prefix("spiffe://") else {
        return Err(format!(
            "identity pattern {p:?} must start with \"spiffe://\""
        ));
    };
    let (td, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    trust_domain(td).map_err(|e| format!("identity pattern {p:?}: {e}"))?;
    if path.is_empty() || path == "/" {
        return Err(format!(
            "identity pattern {p:?} needs a path (e.g. spiffe://{td}/ns/NAME/sa/*)"
        ));
    }
    for seg in path[1..].split('/') {
        if seg.is_empty() {
            return Err(format!("identity pattern {p:?} has an empty path segment"));
        }
        if seg == "." || seg == ".." {
            return Err(format!(
                "identity pattern {p:?} must not contain '.' or '..' segments"
            ));
        }
        if seg == "*" {
            continue;
        }
        if seg.contains('*') {
            return Err(format!(
                "identity pattern {p:?}: '*' must be a whole path segment"
            ));
        }
        if !seg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(format!(
                "identity pattern {p:?}: path segments use letters, digits, '.', '-' and '_'"
            ));
        }
    }
    Ok(td)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        for ok in ["/", "/orders", "/a/b-c/d_e.f", "/v1/x~y"] {
            assert!(prefix(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "orders", "/orders/", "//", "/a//b", "/a/./b", "/a/..", "/a%2f", "/a;b", "/a?b",
            "/a#b", "/a\\b", "/a b", "/é",
        ] {
            assert!(prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls() {
        let u = upstream("HTTPS://Orders.Internal:8443/base/").unwrap();
        assert_eq!(
            (
                u.scheme.as_str(),
                u.authority.as_str(),
                u.base_path.as_str()
            ),
            ("https", "orders.internal:8443", "/base")
        );
        let u = upstream("http://[::1]:9000").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.base_path.as_str()),
            ("[::1]:9000", "")
        );
        assert_eq!(upstream("http://127.0.0.1:8080/").unwrap().base_path, "");
        for bad in [
            "orders.internal",
            "ftp://x",
            "https://",
            "https://u:p@x",
            "https://x/a?b",
            "https://x#f",
            "https://x:0",
            "https://x:99999",
            "https://x:ab",
            "https://x/a//b",
            "https://[::1",
            "https://a..b",
            "http://x/%2e",
        ] {
            assert!(upstream(bad).is_err(), "{bad}");
        }
        assert!(http_url("https://auth.example.org/token?tenant=a", true).is_ok());
    }

    #[test]
    fn headers_and_templates() {
        assert_eq!(header_name("Authorization").unwrap(), "authorization");
        assert_eq!(header_name("x-api-key").unwrap(), "x-api-key");
        for bad in [
            "",
            "x api",
            "x:y",
            "host",
            "Content-Length",
            "chaperone-session",
            "connection",
            "é",
        ] {
            assert!(header_name(bad).is_err(), "{bad}");
        }
        assert!(template("Bearer {token}", false).is_ok());
        assert!(template("Basic {basic}", true).is_ok());
        assert!(template("{username}:{password}", true).is_ok());
        assert!(template("Basic {basic}", false).is_err());
        assert!(template("Bearer", false).is_err());
        assert!(template("{tok}", false).is_err());
        assert!(template("{token", false).is_err());
        assert!(template("}{token}", false).is_err());
        assert!(template("Bearer {token}\r\nx: y", false).is_err());
    }

    #[test]
    fn spiffe() {
        assert_eq!(
            spiffe_pattern("spiffe://prod.example.org/ns/support/sa/*").unwrap(),
            "prod.example.org"
        );
        assert!(spiffe_pattern("spiffe://td/agent").is_ok());
        for bad in [
            "https://td/x",
            "SPIFFE://td/x",
            "spiffe://TD/x",
            "spiffe://td",
            "spiffe://td/",
            "spiffe://td/a/",
            "spiffe://td//a",
            "spiffe://td/a/../b",
            "spiffe://td/sa*",
            "spiffe://td/**",
            "spiffe://td:80/a",
            "spiffe://td/a%20",
            "spiffe://td/a?b",
        ] {
            assert!(spiffe_pattern(bad).is_err(), "{bad}");
        }
        assert!(trust_domain("prod.example.org").is_ok());
        assert!(trust_domain("Prod").is_err());
        assert!(trust_domain("a b").is_err());
    }

    #[test]
    fn upgrades() {
        assert_eq!(upgrade_token("WebSocket").unwrap(), "websocket");
        assert!(upgrade_token("h2c").is_err());
        assert!(upgrade_token("a b").is_err());
    }
}
