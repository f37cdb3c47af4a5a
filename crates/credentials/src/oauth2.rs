//! `provider: oauth2` — client credentials (RFC 6749 §4.4) or token exchange
//! (RFC 8693) at `token_url`, revocation at `revocation_url` (RFC 7009).
//!
//! Scope narrowing: with session scopes, the requested `scope` is the intersection of
//! the configured scope and the session's scopes (configured order); an empty
//! intersection is an error (requesting no scope would get the client's default
//! scope, which is broader). Without a configured scope the session's scopes are
//! requested as they are.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::Bytes;
use chaperone_config::{OAuth2Grant, OAuth2Provider as OAuth2Config};
use http::{Method, Request};
use http_body_util::Full;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::client::HttpClient;
use crate::files::WatchedFile;
use crate::jwt::JwtMinter;
use crate::provider::{CredentialProvider, IssueContext, Issued, RevocationHandle};
use crate::{CredentialError, Secret};

const KIND: &str = "oauth2";

/// RFC 8693 grant type.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 token type of the subject token we send.
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// RFC 8693 requested token type.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// An OAuth 2.0 credential provider.
pub struct OAuth2Issuer {
    name: String,
    cfg: OAuth2Config,
    secret: Option<WatchedFile>,
    subject: Option<Arc<JwtMinter>>,
    http: HttpClient,
}

impl std::fmt::Debug for OAuth2Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2Issuer")
            .field("name", &self.name)
            .field("token_url", &self.cfg.token_url)
            .field("client_id", &self.cfg.client_id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResp {
    access_token: Secret,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct ErrResp {
    #[serde(default)]
    error: Option<String>,
}

/// Intersect configured and session scopes (see module docs).
pub(crate) fn narrow_scope(
    configured: Option<&str>,
    session: &[String],
) -> Result<Option<String>, CredentialError> {
    let conf: Vec<&str> = configured
        .map(|s| s.split_whitespace().collect())
        .unwrap_or_default();
    if session.is_empty() {
        return Ok(if conf.is_empty() {
            None
        } else {
            Some(conf.join(" "))
        });
    }
    if conf.is_empty() {
        return Ok(Some(session.join(" ")));
    }
    let narrowed: Vec<&str> = conf
        .into_iter()
        .filter(|c| session.iter().any(|s| s == c))
        .collect();
    if narrowed.is_empty() {
        return Err(CredentialError::Config {
            name: String::new(),
            reason: "no configured oauth2 scope is within the session's scopes".into(),
        });
    }
    Ok(Some(narrowed.join(" ")))
}

fn form_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl OAuth2Issuer {
    /// `subject`: the jwt minter named by `grant: token_exchange`.
    pub fn new(
        name: &str,
        cfg: &OAuth2Config,
        subject: Option<Arc<JwtMinter>>,
    ) -> Result<Self, CredentialError> {
        let secret = cfg
            .client_secret_file
            .as_deref()
            .map(|p| WatchedFile::new(p, "oauth2 client secret"));
        match &cfg.grant {
            OAuth2Grant::ClientCredentials if secret.is_none() => {
                return Err(CredentialError::Config {
                    name: name.to_string(),
                    reason: "client_credentials needs client_secret_file".into(),
                })
            }
            OAuth2Grant::TokenExchange { subject_credential } if subject.is_none() => {
                return Err(CredentialError::Config {
                    name: name.to_string(),
                    reason: format!(
                        "subject credential `{subject_credential}` is not a jwt credential"
                    ),
                })
            }
            _ => {}
        }
        Ok(OAuth2Issuer {
            name: name.to_string(),
            cfg: cfg.clone(),
            secret,
            subject,
            http: HttpClient::new(KIND, name, cfg.ca.as_deref())?,
        })
    }

    /// Form POST with client authentication (HTTP Basic when a secret is configured,
    /// else `client_id` in the form).
    async fn post_form(
        &self,
        url: &str,
        mut form: Zeroizing<String>,
    ) -> Result<crate::ResponseBody, CredentialError> {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json");
        let mut secrets: Vec<Secret> = Vec::new();
        match &self.secret {
            Some(f) => {
                let s = f.read()?;
                // RFC 6749 §2.3.1: form-encode id and secret before base64.
                let raw = Zeroizing::new(format!(
                    "{}:{}",
                    form_encode(&self.cfg.client_id),
                    Zeroizing::new(form_encode(s.expose())).as_str()
                ));
                let encoded = Zeroizing::new(format!("Basic {}", B64.encode(raw.as_bytes())));
                let mut v =
                    http::HeaderValue::from_str(&encoded).map_err(|_| CredentialError::Config {
                        name: self.name.clone(),
                        reason: "client credentials are not a valid header value".into(),
                    })?;
                v.set_sensitive(true);
                b = b.header("authorization", v);
                secrets.push(s);
            }
            None => {
                form.push_str("&client_id=");
                form.push_str(&form_encode(&self.cfg.client_id));
            }
        }
        let req = b
            .body(Full::new(Bytes::from(form.as_bytes().to_vec())))
            .map_err(|_| CredentialError::Config {
                name: self.name.clone(),
                reason: "invalid oauth2 endpoint URL".into(),
            })?;
        let (status, body) = self.http.send(req).await?;
        if !status.is_success() {
            // Only the RFC 6749 `error` code is kept; descriptions may echo input.
            let detail = serde_json::from_slice::<ErrResp>(&body)
                .ok()
                .and_then(|e| e.error)
                .map(|e| {
                    let exposed: Vec<&str> = secrets.iter().map(|s| s.expose()).collect();
                    format!(": {}", crate::error::sanitise(&e, &exposed))
                })
                .unwrap_or_default();
            return Err(CredentialError::Upstream {
                provider: KIND,
                status: status.as_u16(),
                detail,
            });
        }
        Ok(body)
    }
}

#[async_trait::async_trait]
impl CredentialProvider for OAuth2Issuer {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn issue(&self, ctx: &IssueContext) -> Result<Issued, CredentialError> {
        // Fails with Expired before any network I/O when the session is over.
        let max = ctx.capped_ttl(Duration::MAX)?;
        let scope = narrow_scope(self.cfg.scope.as_deref(), &ctx.scopes).map_err(|e| match e {
            CredentialError::Config { reason, .. } => CredentialError::Config {
                name: self.name.clone(),
                reason,
            },
            other => other,
        })?;
        let mut form = Zeroizing::new(String::new());
        match (&self.cfg.grant, &self.subject) {
            (OAuth2Grant::TokenExchange { .. }, Some(minter)) => {
                let (_, _, subject) = minter.mint(ctx)?;
                form.push_str("grant_type=");
                form.push_str(&form_encode(TOKEN_EXCHANGE_GRANT));
                form.push_str("&subject_token=");
                form.push_str(subject.expose());
                form.push_str("&subject_token_type=");
                form.push_str(&form_encode(JWT_TOKEN_TYPE));
                form.push_str("&requested_token_type=");
                form.push_str(&form_encode(ACCESS_TOKEN_TYPE));
            }
            _ => form.push_str("grant_type=client_credentials"),
        }
        if let Some(s) = &scope {
            form.push_str("&scope=");
            form.push_str(&form_encode(s));
        }
        if let Some(a) = &self.cfg.audience {
            form.push_str("&audience=");
            form.push_str(&form_encode(a));
        }
        let body = self.post_form(&self.cfg.token_url, form).await?;
        let resp: TokenResp =
            serde_json::from_slice(&body).map_err(|_| CredentialError::BadResponse {
                provider: KIND,
                reason: "missing or invalid `access_token`".into(),
            })?;
        if resp.access_token.is_empty() {
            return Err(CredentialError::BadResponse {
                provider: KIND,
                reason: "empty `access_token`".into(),
            });
        }
        let life = resp
            .expires_in
            .map(|s| Duration::from_secs(s).min(max))
            .unwrap_or(max);
        let fp = ring::digest::digest(&ring::digest::SHA256, resp.access_token.expose().as_bytes());
        // Non-secret id: a short fingerprint of the token (never the token itself).
        let id = format!("oauth2:{}", hex::encode(&fp.as_ref()[..8]));
        Ok(Issued::token(
            id,
            ctx.cap(SystemTime::now() + life),
            resp.access_token.clone(),
            RevocationHandle::OAuth2Token(resp.access_token),
        ))
    }

    async fn revoke(&self, c: &Issued) -> Result<(), CredentialError> {
        let (Some(url), RevocationHandle::OAuth2Token(t)) =
            (&self.cfg.revocation_url, &c.revocation)
        else {
            return Ok(());
        };
        let mut form = Zeroizing::new(String::from("token="));
        form.push_str(&Zeroizing::new(form_encode(t.expose())));
        form.push_str("&token_type_hint=access_token");
        self.post_form(url, form).await.map(|_| ())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::narrow_scope;

    #[test]
    fn scope_narrowing() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            narrow_scope(Some("a b c"), &s(&["c", "a", "z"]))
                .unwrap()
                .as_deref(),
            Some("a c")
        );
        assert_eq!(
            narrow_scope(Some("a b"), &[]).unwrap().as_deref(),
            Some("a b")
        );
        assert_eq!(
            narrow_scope(None, &s(&["x"])).unwrap().as_deref(),
            Some("x")
        );
        assert_eq!(narrow_scope(None, &[]).unwrap(), None);
        assert!(narrow_scope(Some("a"), &s(&["z"])).is_err());
    }
}
