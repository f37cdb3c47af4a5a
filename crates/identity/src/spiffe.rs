//! SPIFFE IDs (SPEC §3): `spiffe://<trust-domain>/<path>`.

use std::fmt;

use crate::error::{clip, IdentityError};

/// Maximum length of a SPIFFE ID in bytes.
pub const MAX_SPIFFE_ID_LEN: usize = 2048;

const SCHEME: &str = "spiffe://";

/// A well-formed SPIFFE ID.
///
/// Invariants (checked by [`SpiffeId::parse`], the only constructor):
/// the scheme is exactly `spiffe://`; the trust domain is non-empty and made of
/// `[a-z0-9._-]` (no port, no userinfo); the path is empty or a sequence of
/// `/segment` where every segment is non-empty, not `.`/`..`, made of
/// `[A-Za-z0-9._-]`; there is no query, fragment, percent-encoding or trailing
/// slash; the whole ID is at most [`MAX_SPIFFE_ID_LEN`] bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    id: String,
    /// Byte offset where the path starts (== id.len() when the path is empty).
    path_start: usize,
}

pub(crate) fn td_char_ok(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
}

pub(crate) fn path_char_ok(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')
}

/// Split and check `spiffe://td[/path]`; returns (trust domain, path).
/// `wildcard` allows a path segment that is exactly `*`.
pub(crate) fn split_checked(s: &str, wildcard: bool) -> Result<(&str, &str), &'static str> {
    if s.is_empty() {
        return Err("empty");
    }
    if s.len() > MAX_SPIFFE_ID_LEN {
        return Err("longer than 2048 bytes");
    }
    let rest = match s.strip_prefix(SCHEME) {
        Some(r) => r,
        None => {
            return Err(
                if s.len() >= SCHEME.len()
                    && s.as_bytes()[..SCHEME.len()].eq_ignore_ascii_case(SCHEME.as_bytes())
                {
                    "scheme must be lowercase \"spiffe://\""
                } else {
                    "scheme must be \"spiffe://\""
                },
            );
        }
    };
    // Rules that apply to the whole ID first, so the reason is precise.
    if s.contains('%') {
        return Err("percent-encoding is not allowed");
    }
    if s.contains('?') {
        return Err("a query is not allowed");
    }
    if s.contains('#') {
        return Err("a fragment is not allowed");
    }
    let (td, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if td.is_empty() {
        return Err("trust domain is empty");
    }
    if td.contains('@') {
        return Err("userinfo is not allowed");
    }
    if td.contains(':') {
        return Err("a port is not allowed");
    }
    if td.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("trust domain must be lowercase");
    }
    if !td.bytes().all(td_char_ok) {
        return Err("trust domain may only contain [a-z0-9.-_]");
    }
    if path.is_empty() {
        return Ok((td, path));
    }
    if path.ends_with('/') {
        return Err("trailing slash is not allowed");
    }
    // path starts with '/'; skip it and check each segment.
    for seg in path[1..].split('/') {
        match seg {
            "" => return Err("path segments must not be empty"),
            "." | ".." => return Err("path segments must not be \".\" or \"..\""),
            "*" if wildcard => {}
            _ => {
                if !seg.bytes().all(path_char_ok) {
                    return Err("path may only contain [A-Za-z0-9.-_]");
                }
            }
        }
    }
    Ok((td, path))
}

impl SpiffeId {
    /// Parse and validate a SPIFFE ID. Nothing is normalised: an ID that is not
    /// already in canonical form is refused.
    pub fn parse(s: &str) -> Result<SpiffeId, IdentityError> {
        match split_checked(s, false) {
            Ok((td, _)) => Ok(SpiffeId {
                id: s.to_owned(),
                path_start: SCHEME.len() + td.len(),
            }),
            Err(reason) => Err(IdentityError::InvalidSpiffeId {
                id: clip(s),
                reason,
            }),
        }
    }

    /// Build `spiffe://<trust_domain><path>` and validate it.
    pub fn from_parts(trust_domain: &str, path: &str) -> Result<SpiffeId, IdentityError> {
        SpiffeId::parse(&format!("{SCHEME}{trust_domain}{path}"))
    }

    /// The trust domain, e.g. `prod.example.org`.
    pub fn trust_domain(&self) -> &str {
        &self.id[SCHEME.len()..self.path_start]
    }

    /// The path including its leading `/`, or `""` for a trust-domain ID.
    pub fn path(&self) -> &str {
        &self.id[self.path_start..]
    }

    /// The path segments (empty for a trust-domain ID).
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        let p = self.path();
        p.get(1..)
            .unwrap_or("")
            .split('/')
            .filter(|s| !s.is_empty())
    }

    /// The whole ID.
    pub fn as_str(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.id)
    }
}

impl std::str::FromStr for SpiffeId {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SpiffeId::parse(s)
    }
}

impl AsRef<str> for SpiffeId {
    fn as_ref(&self) -> &str {
        &self.id
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn reason(s: &str) -> &'static str {
        match SpiffeId::parse(s) {
            Err(IdentityError::InvalidSpiffeId { reason, .. }) => reason,
            other => panic!("{s:?} should be refused, got {other:?}"),
        }
    }

    #[test]
    fn accepts_well_formed_ids() {
        let id = SpiffeId::parse("spiffe://prod.example.org/ns/support/sa/bot-1_x.y").unwrap();
        assert_eq!(id.trust_domain(), "prod.example.org");
        assert_eq!(id.path(), "/ns/support/sa/bot-1_x.y");
        assert_eq!(
            id.as_str(),
            "spiffe://prod.example.org/ns/support/sa/bot-1_x.y"
        );
        assert_eq!(id.to_string(), id.as_str());
        assert_eq!(
            id.segments().collect::<Vec<_>>(),
            ["ns", "support", "sa", "bot-1_x.y"]
        );
        let td = SpiffeId::parse("spiffe://a_b-c.9").unwrap();
        assert_eq!(td.trust_domain(), "a_b-c.9");
        assert_eq!(td.path(), "");
        assert_eq!(td.segments().count(), 0);
        assert_eq!(
            SpiffeId::from_parts("td", "/x").unwrap().as_str(),
            "spiffe://td/x"
        );
        // Path may be mixed case; `...` is an ordinary segment.
        assert!(SpiffeId::parse("spiffe://td/Ns/.../a").is_ok());
    }

    #[test]
    fn refuses_every_spec_rule() {
        assert_eq!(reason(""), "empty");
        assert_eq!(
            reason("SPIFFE://td/x"),
            "scheme must be lowercase \"spiffe://\""
        );
        assert_eq!(
            reason("Spiffe://td/x"),
            "scheme must be lowercase \"spiffe://\""
        );
        assert_eq!(reason("https://td/x"), "scheme must be \"spiffe://\"");
        assert_eq!(reason("spiffe:/td/x"), "scheme must be \"spiffe://\"");
        assert_eq!(
            reason("spiffe://Prod.example.org/x"),
            "trust domain must be lowercase"
        );
        assert_eq!(reason("spiffe://td:443/x"), "a port is not allowed");
        assert_eq!(reason("spiffe://user@td/x"), "userinfo is not allowed");
        assert_eq!(reason("spiffe://user:pw@td/x"), "userinfo is not allowed");
        assert_eq!(reason("spiffe://td/x?a=b"), "a query is not allowed");
        assert_eq!(reason("spiffe://td/x#frag"), "a fragment is not allowed");
        assert_eq!(reason("spiffe://td/%2e"), "percent-encoding is not allowed");
        assert_eq!(
            reason("spiffe://td/a%2Fb"),
            "percent-encoding is not allowed"
        );
        assert_eq!(
            reason("spiffe://td/a//b"),
            "path segments must not be empty"
        );
        assert_eq!(reason("spiffe://td//"), "trailing slash is not allowed");
        assert_eq!(
            reason("spiffe://td/a/./b"),
            "path segments must not be \".\" or \"..\""
        );
        assert_eq!(
            reason("spiffe://td/a/.."),
            "path segments must not be \".\" or \"..\""
        );
        assert_eq!(reason("spiffe://td/a/"), "trailing slash is not allowed");
        assert_eq!(reason("spiffe://td/"), "trailing slash is not allowed");
        assert_eq!(reason("spiffe://"), "trust domain is empty");
        assert_eq!(reason("spiffe:///x"), "trust domain is empty");
        assert_eq!(
            reason("spiffe://t*d/x"),
            "trust domain may only contain [a-z0-9.-_]"
        );
        assert_eq!(
            reason("spiffe://td/a b"),
            "path may only contain [A-Za-z0-9.-_]"
        );
        assert_eq!(
            reason("spiffe://td/*"),
            "path may only contain [A-Za-z0-9.-_]"
        );
        assert_eq!(
            reason("spiffe://td/caf\u{e9}"),
            "path may only contain [A-Za-z0-9.-_]"
        );
        assert_eq!(
            reason("spiffe://td/a\\b"),
            "path may only contain [A-Za-z0-9.-_]"
        );
    }

    #[test]
    fn enforces_max_length() {
        let base = "spiffe://td/";
        let ok = format!("{base}{}", "a".repeat(MAX_SPIFFE_ID_LEN - base.len()));
        assert_eq!(ok.len(), MAX_SPIFFE_ID_LEN);
        assert!(SpiffeId::parse(&ok).is_ok());
        let long = format!("{ok}a");
        assert_eq!(reason(&long), "longer than 2048 bytes");
        // The error message stays short.
        let msg = SpiffeId::parse(&long).unwrap_err().to_string();
        assert!(msg.len() < 400, "{}", msg.len());
    }

    #[test]
    fn equality_and_hash_are_by_value() {
        use std::collections::HashSet;
        let a = SpiffeId::parse("spiffe://td/a").unwrap();
        let b: SpiffeId = "spiffe://td/a".parse().unwrap();
        assert_eq!(a, b);
        let set: HashSet<_> = [a.clone(), b].into_iter().collect();
        assert_eq!(set.len(), 1);
        assert_ne!(a, SpiffeId::parse("spiffe://td/A").unwrap());
    }
}
