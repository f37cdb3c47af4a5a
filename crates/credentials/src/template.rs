//! `inject.value` templates: `{token}`, `{username}`, `{password}`, `{basic}`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use http::HeaderValue;
use zeroize::Zeroizing;

use crate::provider::Issued;
use crate::CredentialError;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Token,
    Username,
    Password,
    Basic,
}

/// A parsed template (validated at startup).
#[derive(Debug, Clone)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parse; unknown placeholders and unbalanced braces are errors.
    pub(crate) fn parse(name: &str, src: &str) -> Result<Self, CredentialError> {
        let err = |reason: String| CredentialError::Config {
            name: name.to_string(),
            reason,
        };
        let mut parts = Vec::new();
        let mut rest = src;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err(err("unbalanced `}` in inject.value".into()));
            }
            if open > 0 {
                parts.push(Part::Lit(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| err("unterminated `{` in inject.value".into()))?;
            parts.push(match &after[..close] {
                "token" => Part::Token,
                "username" => Part::Username,
                "password" => Part::Password,
                "basic" => Part::Basic,
                other => {
                    return Err(err(format!(
                        "unknown placeholder `{{{other}}}` in inject.value"
                    )))
                }
            });
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        if !parts.iter().any(|p| !matches!(p, Part::Lit(_))) {
            return Err(err("inject.value has no placeholder".into()));
        }
        Ok(Template { parts })
    }

    /// Render for an issued credential; the result is marked sensitive.
    pub(crate) fn render(&self, name: &str, c: &Issued) -> Result<HeaderValue, CredentialError> {
        let missing = |what: &str| CredentialError::Template {
            name: name.to_string(),
            reason: format!("`{{{what}}}` is not available from this provider"),
        };
        let mut out = Zeroizing::new(String::new());
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Token => {
                    out.push_str(c.token.as_ref().ok_or_else(|| missing("token"))?.expose())
                }
                Part::Username => out.push_str(
                    c.username
                        .as_ref()
                        .ok_or_else(|| missing("username"))?
                        .expose(),
                ),
                Part::Password => out.push_str(
                    c.password
                        .as_ref()
                        .ok_or_else(|| missing("password"))?
                        .expose(),
                ),
                Part::Basic => {
                    let u = c.username.as_ref().ok_or_else(|| missing("basic"))?;
                    let pw = c.password.as_ref().ok_or_else(|| missing("basic"))?;
                    let raw = Zeroizing::new(format!("{}:{}", u.expose(), pw.expose()));
                    let enc = Zeroizing::new(B64.encode(raw.as_bytes()));
                    out.push_str(&enc);
                }
            }
        }
        let mut v =
            HeaderValue::from_bytes(out.as_bytes()).map_err(|_| CredentialError::Template {
                name: name.to_string(),
                reason: "rendered value is not a valid HTTP header value".into(),
            })?;
        v.set_sensitive(true);
        Ok(v)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::provider::RevocationHandle;
    use crate::Secret;
    use std::time::SystemTime;

    fn lease(user: Option<&str>, pw: Option<&str>, token: Option<&str>) -> Issued {
        Issued {
            id: "l".into(),
            expires_at: SystemTime::now(),
            token: token.map(|t| Secret::new(t.into())),
            username: user.map(|t| Secret::new(t.into())),
            password: pw.map(|t| Secret::new(t.into())),
            revocation: RevocationHandle::Forget,
        }
    }

    #[test]
    fn basic_username_password_token() {
        let c = lease(Some("v-agent"), Some("p@ss:w"), Some("p@ss:w"));
        let t = Template::parse("db", "Basic {basic}").unwrap();
        let v = t.render("db", &c).unwrap();
        assert!(v.is_sensitive());
        assert_eq!(
            v.to_str().unwrap(),
            format!("Basic {}", B64.encode("v-agent:p@ss:w"))
        );
        let t = Template::parse("db", "user={username};pw={password};t={token}").unwrap();
        assert_eq!(
            t.render("db", &c).unwrap().to_str().unwrap(),
            "user=v-agent;pw=p@ss:w;t=p@ss:w"
        );
    }

    #[test]
    fn missing_fields_and_bad_values_are_errors() {
        let token_only = lease(None, None, Some("tok"));
        for src in ["{basic}", "{username}", "{password}"] {
            let err = Template::parse("x", src)
                .unwrap()
                .render("x", &token_only)
                .unwrap_err();
            assert!(matches!(err, CredentialError::Template { .. }), "{src}");
        }
        let ctl = lease(None, None, Some("bad\r\nInjected: yes"));
        let err = Template::parse("x", "{token}")
            .unwrap()
            .render("x", &ctl)
            .unwrap_err();
        assert!(!err.to_string().contains("Injected"), "{err}");
    }

    #[test]
    fn parse_rejects_malformed_templates() {
        for src in ["{token", "token}", "{}", "{nope}", "no placeholder"] {
            assert!(Template::parse("x", src).is_err(), "{src}");
        }
        assert!(Template::parse("x", "Bearer {token}").is_ok());
    }
}
