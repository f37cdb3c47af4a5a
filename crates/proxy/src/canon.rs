//! Request-target canonicalisation (SPEC §8).
//!
//! The canonical path is what routing, policy and the upstream all see, so that
//! no component can interpret a request differently from another. Anything whose
//! meaning could differ between two reasonable parsers is refused.

/// Why a path was refused. Messages are safe to show to the agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonError {
    #[error("request path must start with '/'")]
    NotOriginForm,
    #[error("request path contains a backslash")]
    Backslash,
    #[error("request path contains ';' path parameters")]
    PathParameter,
    #[error("request target contains a fragment")]
    Fragment,
    #[error("request path contains a control or non-ASCII character")]
    ControlChar,
    #[error("request path contains a malformed percent-encoding")]
    BadPercent,
    #[error("request path contains an encoded '/', '\\', '.', '%' or control character")]
    EncodedDelimiter,
    #[error("request path escapes the root with '..'")]
    EscapesRoot,
    #[error("request path is too long")]
    TooLong,
}

const MAX_PATH: usize = 8192;

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~')
}

/// Canonicalise a raw request path (without query).
///
/// - percent-encoded unreserved characters are decoded, other encodings are kept
///   with upper-case hex; encoded `/`, `\`, `.`, `%`, `;`, `?`, `#` and control
///   characters are refused;
/// - empty segments are merged (`//` -> `/`), `.` segments dropped, `..` resolved;
///   `..` above the root is refused;
/// - a trailing slash is preserved.
pub fn canonicalize_path(raw: &str) -> Result<String, CanonError> {
    if raw.len() > MAX_PATH {
        return Err(CanonError::TooLong);
    }
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(CanonError::NotOriginForm);
    }
    // Pass 1: validate and normalise percent-encodings, byte by byte.
    let mut norm = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\\' => return Err(CanonError::Backslash),
            b';' => return Err(CanonError::PathParameter),
            b'#' => return Err(CanonError::Fragment),
            0..=0x20 | 0x7f..=0xff => return Err(CanonError::ControlChar),
            b'%' => {
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex_val),
                    bytes.get(i + 2).copied().and_then(hex_val),
                ) else {
                    return Err(CanonError::BadPercent);
                };
                let decoded = h * 16 + l;
                if matches!(decoded, b'/' | b'\\' | b'.' | b'%' | b';' | b'?' | b'#')
                    || decoded < 0x20
                    || decoded == 0x7f
                {
                    return Err(CanonError::EncodedDelimiter);
                }
                if is_unreserved(decoded) {
                    norm.push(decoded as char);
                } else {
                    norm.push('%');
                    norm.push(char::from(b"0123456789ABCDEF"[usize::from(h)]));
                    norm.push(char::from(b"0123456789ABCDEF"[usize::from(l)]));
                }
                i += 3;
                continue;
            }
            _ => norm.push(b as char),
        }
        i += 1;
    }
    // Pass 2: segments.
    let trailing = norm.ends_with('/') || norm.ends_with("/.") || norm.ends_with("/..");
    let mut stack: Vec<&str> = Vec::new();
    for seg in norm.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if stack.pop().is_none() {
                    return Err(CanonError::EscapesRoot);
                }
            }
            s => stack.push(s),
        }
    }
    let mut out = String::with_capacity(norm.len());
    for s in &stack {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    Ok(out)
}

/// Check a raw query string: fragments and control characters are refused; the
/// query itself is forwarded byte for byte.
pub fn check_query(q: &str) -> Result<(), CanonError> {
    for b in q.bytes() {
        match b {
            b'#' => return Err(CanonError::Fragment),
            0..=0x20 | 0x7f..=0xff => return Err(CanonError::ControlChar),
            _ => {}
        }
    }
    Ok(())
}

/// Non-empty segments of a canonical path.
pub fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_and_merges() {
        assert_eq!(canonicalize_path("/a/../b").unwrap(), "/b");
        assert_eq!(canonicalize_path("/a/./b").unwrap(), "/a/b");
        assert_eq!(canonicalize_path("//a///b").unwrap(), "/a/b");
        assert_eq!(canonicalize_path("/a/b/").unwrap(), "/a/b/");
        assert_eq!(canonicalize_path("/a/b/..").unwrap(), "/a/");
        assert_eq!(canonicalize_path("/").unwrap(), "/");
        assert_eq!(canonicalize_path("/%41%62c").unwrap(), "/Abc");
        assert_eq!(canonicalize_path("/a%20b").unwrap(), "/a%20b");
        assert_eq!(canonicalize_path("/a%c3%a9").unwrap(), "/a%C3%A9");
    }

    #[test]
    fn refuses_ambiguity() {
        assert_eq!(
            canonicalize_path("/%2e%2e/etc"),
            Err(CanonError::EncodedDelimiter)
        );
        assert_eq!(
            canonicalize_path("/a%2Fb"),
            Err(CanonError::EncodedDelimiter)
        );
        assert_eq!(
            canonicalize_path("/a%2fb"),
            Err(CanonError::EncodedDelimiter)
        );
        assert_eq!(
            canonicalize_path("/a%5cb"),
            Err(CanonError::EncodedDelimiter)
        );
        assert_eq!(
            canonicalize_path("/a%252e"),
            Err(CanonError::EncodedDelimiter)
        );
        assert_eq!(
            canonicalize_path("/a%00"),
            Err(CanonError::EncodedDelimiter)
        );
        assert_eq!(canonicalize_path("/a\\b"), Err(CanonError::Backslash));
        assert_eq!(
            canonicalize_path("/a;jsessionid=1"),
            Err(CanonError::PathParameter)
        );
        assert_eq!(canonicalize_path("/a#frag"), Err(CanonError::Fragment));
        assert_eq!(canonicalize_path("/a%zz"), Err(CanonError::BadPercent));
        assert_eq!(canonicalize_path("/a%4"), Err(CanonError::BadPercent));
        assert_eq!(canonicalize_path("/../x"), Err(CanonError::EscapesRoot));
        assert_eq!(canonicalize_path("a/b"), Err(CanonError::NotOriginForm));
        assert_eq!(canonicalize_path("*"), Err(CanonError::NotOriginForm));
    }

    #[test]
    fn idempotent_on_random_inputs() {
        // A tiny LCG: canonical output must canonicalise to itself.
        let alphabet = b"/.a%2e5Fb;\\";
        let mut x: u64 = 42;
        for _ in 0..20_000 {
            let mut s = String::from("/");
            for _ in 0..(x % 12) {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                s.push(alphabet[(x >> 33) as usize % alphabet.len()] as char);
            }
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            if let Ok(c) = canonicalize_path(&s) {
                assert_eq!(
                    canonicalize_path(&c).as_deref(),
                    Ok(c.as_str()),
                    "input {s:?}"
                );
                assert!(
                    !c.contains("//") && !c.contains("/./") && !c.contains("/../"),
                    "{s:?} -> {c:?}"
                );
            }
        }
    }
}
