//! `identities`: SPIFFE ID patterns -> policy attributes (SPEC §2, §3).

use chaperone_config::{IdentityRule, JsonMap};

use crate::error::{clip, IdentityError};
use crate::spiffe::{split_checked, SpiffeId};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Any,
    Lit(String),
}

#[derive(Debug, Clone)]
struct Compiled {
    pattern: String,
    trust_domain: String,
    segments: Vec<Seg>,
    attributes: JsonMap,
}

impl Compiled {
    fn matches(&self, id: &SpiffeId) -> bool {
        if id.trust_domain() != self.trust_domain {
            return false;
        }
        let mut segs = id.segments();
        for want in &self.segments {
            match (want, segs.next()) {
                (_, None) => return false,
                (Seg::Any, Some(_)) => {}
                (Seg::Lit(l), Some(got)) => {
                    if l != got {
                        return false;
                    }
                }
            }
        }
        segs.next().is_none()
    }
}

/// The compiled `identities` list. First match wins; `*` matches exactly one
/// path segment; the trust domain always matches exactly.
#[derive(Debug, Clone, Default)]
pub struct IdentityMap {
    rules: Vec<Compiled>,
}

impl IdentityMap {
    /// Compile the rules, refusing any pattern that is not a SPIFFE ID shape
    /// (with `*` allowed only as a whole path segment).
    pub fn new(rules: &[IdentityRule]) -> Result<IdentityMap, IdentityError> {
        let mut out = Vec::with_capacity(rules.len());
        for r in rules {
            let (td, path) = split_checked(&r.pattern, true).map_err(|reason| {
                IdentityError::InvalidPattern {
                    pattern: clip(&r.pattern),
                    reason: reason.to_owned(),
                }
            })?;
            let segments = path
                .get(1..)
                .unwrap_or("")
                .split('/')
                .filter(|s| !s.is_empty())
                .map(|s| {
                    if s == "*" {
                        Seg::Any
                    } else {
                        Seg::Lit(s.to_owned())
                    }
                })
                .collect();
            out.push(Compiled {
                pattern: r.pattern.clone(),
                trust_domain: td.to_owned(),
                segments,
                attributes: r.attributes.clone(),
            });
        }
        Ok(IdentityMap { rules: out })
    }

    /// Attributes of the first rule matching `id`, or `None` (the caller must
    /// refuse: there is never a default identity).
    pub fn resolve(&self, id: &SpiffeId) -> Option<&JsonMap> {
        self.resolve_rule(id).map(|(_, a)| a)
    }

    /// Like [`IdentityMap::resolve`], also returning the matching pattern as written.
    pub fn resolve_rule(&self, id: &SpiffeId) -> Option<(&str, &JsonMap)> {
        self.rules
            .iter()
            .find(|r| r.matches(id))
            .map(|r| (r.pattern.as_str(), &r.attributes))
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when there are no rules (every identity is refused).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(p: &str, name: &str) -> IdentityRule {
        let mut attributes = JsonMap::new();
        attributes.insert("agent".into(), json!(name));
        IdentityRule {
            pattern: p.into(),
            attributes,
        }
    }

    fn agent<'a>(m: &'a IdentityMap, id: &str) -> Option<&'a str> {
        m.resolve(&SpiffeId::parse(id).unwrap())
            .and_then(|a| a["agent"].as_str())
    }

    #[test]
    fn first_match_wins_and_star_is_one_segment() {
        let m = IdentityMap::new(&[
            rule("spiffe://prod.example.org/ns/support/sa/admin", "admin"),
            rule("spiffe://prod.example.org/ns/support/sa/*", "support"),
            rule("spiffe://prod.example.org/ns/*/sa/*", "any-ns"),
            rule("spiffe://prod.example.org/ns/support/sa/never", "shadowed"),
            rule("spiffe://prod.example.org", "td-only"),
        ])
        .unwrap();
        assert_eq!(m.len(), 5);
        assert_eq!(
            agent(&m, "spiffe://prod.example.org/ns/support/sa/admin"),
            Some("admin")
        );
        assert_eq!(
            agent(&m, "spiffe://prod.example.org/ns/support/sa/bot"),
            Some("support")
        );
        assert_eq!(
            agent(&m, "spiffe://prod.example.org/ns/support/sa/never"),
            Some("support")
        );
        assert_eq!(
            agent(&m, "spiffe://prod.example.org/ns/billing/sa/bot"),
            Some("any-ns")
        );
        // `*` is exactly one segment: not zero, not two.
        assert_eq!(agent(&m, "spiffe://prod.example.org/ns/support/sa"), None);
        assert_eq!(
            agent(&m, "spiffe://prod.example.org/ns/support/sa/bot/extra"),
            None
        );
        assert_eq!(agent(&m, "spiffe://prod.example.org/ns/a/b/sa/bot"), None);
        // Literal segments are case-sensitive.
        assert_eq!(
            agent(&m, "spiffe://prod.example.org/NS/support/sa/bot"),
            None
        );
        // Trust domain must match exactly (no suffix / subdomain matching).
        assert_eq!(
            agent(&m, "spiffe://evil.prod.example.org/ns/support/sa/bot"),
            None
        );
        assert_eq!(
            agent(&m, "spiffe://prod.example.org.evil/ns/support/sa/bot"),
            None
        );
        assert_eq!(agent(&m, "spiffe://prod.example.org"), Some("td-only"));
        let (p, _) = m
            .resolve_rule(&SpiffeId::parse("spiffe://prod.example.org/ns/x/sa/y").unwrap())
            .unwrap();
        assert_eq!(p, "spiffe://prod.example.org/ns/*/sa/*");
    }

    #[test]
    fn empty_map_resolves_nothing() {
        let m = IdentityMap::new(&[]).unwrap();
        assert!(m.is_empty());
        assert_eq!(agent(&m, "spiffe://td/a"), None);
    }

    #[test]
    fn refuses_malformed_patterns() {
        for bad in [
            "spiffe://*/ns/a",
            "spiffe://td/ns/a*",
            "spiffe://td/ns/**",
            "spiffe://td/ns/*/",
            "spiffe://TD/ns",
            "spiffe://td:8443/ns",
            "spiffe://td/ns?x",
            "spiffe://td/%2a",
            "spiffe://td/../x",
            "https://td/x",
            "",
        ] {
            match IdentityMap::new(&[rule(bad, "x")]) {
                Err(IdentityError::InvalidPattern { .. }) => {}
                other => panic!("{bad:?} should be refused, got {other:?}"),
            }
        }
    }
}
