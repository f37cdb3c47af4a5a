//! `provider: vault` — Vault / OpenBao over its HTTP API.
//!
//! * Sidecar login: `token_file` (re-read when it changes) or Kubernetes auth
//!   (`POST /v1/auth/<mount>/login {role, jwt}`; the client token is cached until
//!   10 s before its lease ends).
//! * `mode: token`: `POST /v1/auth/token/create` → a non-renewable child token with
//!   the configured policies, `ttl` = `explicit_max_ttl` = min(ttl, session remaining),
//!   `num_uses`, `meta {spiffe_id, session_id, task}` and `display_name`. The id is the
//!   token's accessor; revocation is `POST /v1/auth/token/revoke-accessor`.
//! * `mode: lease`: `GET /v1/<path>`; the id is the `lease_id`; fields from
//!   `data.username`, `data.password` and `data.token` (`{token}` falls back to the
//!   password). Revocation is `PUT /v1/sys/leases/revoke`. The reader cannot choose the
//!   lease's TTL (the role does): when it outlives the session it is revoked at session
//!   end anyway.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use chaperone_config::{VaultAuth, VaultMode, VaultProvider as VaultConfig};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde::Deserialize;
use serde_json::json;

use crate::client::HttpClient;
use crate::files::WatchedFile;
use crate::provider::{CredentialProvider, IssueContext, Issued, RevocationHandle};
use crate::{CredentialError, Secret};

const KIND: &str = "vault";

enum Auth {
    TokenFile(WatchedFile),
    Kubernetes {
        mount: String,
        role: String,
        jwt: WatchedFile,
        cached: Mutex<Option<(Secret, Instant)>>,
    },
}

/// A Vault/OpenBao credential provider.
pub struct VaultIssuer {
    name: String,
    cfg: VaultConfig,
    auth: Auth,
    http: HttpClient,
}

impl std::fmt::Debug for VaultIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultIssuer")
            .field("name", &self.name)
            .field("address", &self.cfg.address)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct AuthResp {
    auth: Option<AuthBlock>,
}

#[derive(Deserialize)]
struct AuthBlock {
    client_token: Secret,
    #[serde(default)]
    accessor: String,
    #[serde(default)]
    lease_duration: u64,
}

#[derive(Deserialize)]
struct LeaseResp {
    #[serde(default)]
    lease_id: String,
    #[serde(default)]
    lease_duration: u64,
    data: Option<LeaseData>,
}

#[derive(Deserialize, Default)]
struct LeaseData {
    #[serde(default)]
    username: Option<Secret>,
    #[serde(default)]
    password: Option<Secret>,
    #[serde(default)]
    token: Option<Secret>,
}

#[derive(Deserialize)]
struct ErrResp {
    #[serde(default)]
    errors: Vec<String>,
}

impl VaultIssuer {
    /// Build from config (no network I/O).
    pub fn new(name: &str, cfg: &VaultConfig) -> Result<Self, CredentialError> {
        let auth = match &cfg.auth {
            VaultAuth::TokenFile(p) => Auth::TokenFile(WatchedFile::new(p, "vault token")),
            VaultAuth::Kubernetes {
                mount,
                role,
                jwt_file,
            } => Auth::Kubernetes {
                mount: mount.trim_matches('/').to_string(),
                role: role.clone(),
                jwt: WatchedFile::new(jwt_file, "service account token"),
                cached: Mutex::new(None),
            },
        };
        if let VaultMode::Token { policies, .. } = &cfg.mode {
            if policies.is_empty() || policies.iter().any(|p| p == "root") {
                return Err(CredentialError::Config {
                    name: name.to_string(),
                    reason: "vault token mode needs non-empty policies, never `root`".into(),
                });
            }
        }
        let http = HttpClient::new(KIND, name, cfg.ca.as_deref())?;
        Ok(VaultIssuer {
            name: name.to_string(),
            cfg: cfg.clone(),
            auth,
            http,
        })
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&Secret>,
        body: Option<serde_json::Value>,
    ) -> Result<Request<Full<Bytes>>, CredentialError> {
        let uri = format!("{}/v1/{}", self.cfg.address.trim_end_matches('/'), path);
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            let mut v =
                http::HeaderValue::from_str(t.expose()).map_err(|_| CredentialError::Config {
                    name: self.name.clone(),
                    reason: "vault token is not a valid header value".into(),
                })?;
            v.set_sensitive(true);
            b = b.header("x-vault-token", v);
        }
        if let Some(ns) = &self.cfg.namespace {
            b = b.header("x-vault-namespace", ns.as_str());
        }
        let body = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        b.body(Full::new(body))
            .map_err(|_| CredentialError::Config {
                name: self.name.clone(),
                reason: "invalid vault address".into(),
            })
    }

    fn upstream_error(status: StatusCode, body: &[u8], secrets: &[&str]) -> CredentialError {
        let detail = serde_json::from_slice::<ErrResp>(body)
            .ok()
            .filter(|e| !e.errors.is_empty())
            .map(|e| {
                format!(
                    ": {}",
                    crate::error::sanitise(&e.errors.join("; "), secrets)
                )
            })
            .unwrap_or_default();
        CredentialError::Upstream {
            provider: KIND,
            status: status.as_u16(),
            detail,
        }
    }

    /// The sidecar's own Vault token.
    async fn client_token(&self) -> Result<Secret, CredentialError> {
        match &self.auth {
            Auth::TokenFile(f) => f.read(),
            Auth::Kubernetes {
                mount,
                role,
                jwt,
                cached,
            } => {
                if let Ok(g) = cached.lock() {
                    if let Some((t, until)) = g.as_ref() {
                        if Instant::now() < *until {
                            return Ok(t.clone());
                        }
                    }
                }
                let sa = jwt.read()?;
                let req = self.request(
                    Method::POST,
                    &format!("auth/{mount}/login"),
                    None,
                    Some(json!({"role": role, "jwt": sa.expose()})),
                )?;
                let (status, body) = self.http.send(req).await?;
                if !status.is_success() {
                    return Err(Self::upstream_error(status, &body, &[sa.expose()]));
                }
                let resp: AuthResp = serde_json::from_slice(&body).map_err(|_| bad("auth"))?;
                let auth = resp.auth.ok_or_else(|| bad("auth"))?;
                // Renew 10 s early; a lease of 0 (non-expiring) is re-checked every 5 minutes.
                let life = if auth.lease_duration == 0 {
                    Duration::from_secs(300)
                } else {
                    Duration::from_secs(auth.lease_duration.saturating_sub(10).max(1))
                };
                if let Ok(mut g) = cached.lock() {
                    *g = Some((auth.client_token.clone(), Instant::now() + life));
                }
                Ok(auth.client_token)
            }
        }
    }

    fn forget_client_token(&self) {
        match &self.auth {
            Auth::TokenFile(f) => f.invalidate(),
            Auth::Kubernetes { cached, .. } => {
                if let Ok(mut g) = cached.lock() {
                    *g = None;
                }
            }
        }
    }

    /// Send with the sidecar token; on 403 the cached sidecar token is dropped so the
    /// next call logs in (or re-reads the file) again.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<crate::ResponseBody, CredentialError> {
        let token = self.client_token().await?;
        let req = self.request(method, path, Some(&token), body)?;
        let (status, resp) = self.http.send(req).await?;
        if status == StatusCode::FORBIDDEN {
            self.forget_client_token();
        }
        if !status.is_success() {
            return Err(Self::upstream_error(status, &resp, &[token.expose()]));
        }
        Ok(resp)
    }

    /// The configured sidecar token file, if any (for docs/diagnostics).
    pub fn token_file(&self) -> Option<PathBuf> {
        match &self.auth {
            Auth::TokenFile(f) => Some(f.path().to_path_buf()),
            Auth::Kubernetes { .. } => None,
        }
    }
}

fn bad(what: &str) -> CredentialError {
    CredentialError::BadResponse {
        provider: KIND,
        reason: format!("missing or invalid `{what}`"),
    }
}

#[async_trait::async_trait]
impl CredentialProvider for VaultIssuer {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn issue(&self, ctx: &IssueContext) -> Result<Issued, CredentialError> {
        let ttl = ctx.capped_ttl(self.cfg.ttl)?;
        let now = SystemTime::now();
        match &self.cfg.mode {
            VaultMode::Token { policies, num_uses } => {
                let secs = format!("{}s", ttl.as_secs());
                let mut meta = serde_json::Map::new();
                meta.insert("spiffe_id".into(), json!(ctx.spiffe_id));
                if let Some(s) = &ctx.session_id {
                    meta.insert("session_id".into(), json!(s));
                }
                if let Some(t) = &ctx.task {
                    meta.insert("task".into(), json!(t));
                }
                let mut body = json!({
                    "policies": policies,
                    "ttl": secs,
                    "explicit_max_ttl": secs,
                    "renewable": false,
                    "meta": meta,
                    "display_name": format!("chaperone-{}", self.name),
                });
                if let (Some(n), Some(m)) = (num_uses, body.as_object_mut()) {
                    m.insert("num_uses".into(), json!(n));
                }
                let resp = self
                    .call(Method::POST, "auth/token/create", Some(body))
                    .await?;
                let resp: AuthResp = serde_json::from_slice(&resp).map_err(|_| bad("auth"))?;
                let auth = resp.auth.ok_or_else(|| bad("auth"))?;
                if auth.accessor.is_empty() || auth.client_token.is_empty() {
                    return Err(bad("auth.accessor"));
                }
                let granted = Duration::from_secs(auth.lease_duration);
                let life = if auth.lease_duration == 0 {
                    ttl
                } else {
                    granted.min(ttl)
                };
                Ok(Issued::token(
                    auth.accessor.clone(),
                    ctx.cap(now + life),
                    auth.client_token,
                    RevocationHandle::VaultAccessor(auth.accessor),
                ))
            }
            VaultMode::Lease { path } => {
                let resp = self.call(Method::GET, path, None).await?;
                let resp: LeaseResp = serde_json::from_slice(&resp).map_err(|_| bad("data"))?;
                if resp.lease_id.is_empty() {
                    return Err(bad("lease_id"));
                }
                let data = resp.data.unwrap_or_default();
                let token = data.token.clone().or_else(|| data.password.clone());
                if token.is_none() && data.username.is_none() {
                    // Nothing we could inject; revoke right away rather than leak it.
                    let lease = RevocationHandle::VaultLease(resp.lease_id.clone());
                    let _ = self.revoke_handle(&lease).await;
                    return Err(bad("data.token / data.password"));
                }
                let life = if resp.lease_duration == 0 {
                    ttl
                } else {
                    Duration::from_secs(resp.lease_duration).min(ttl)
                };
                Ok(Issued {
                    id: resp.lease_id.clone(),
                    expires_at: ctx.cap(now + life),
                    token,
                    username: data.username,
                    password: data.password,
                    revocation: RevocationHandle::VaultLease(resp.lease_id),
                })
            }
        }
    }

    async fn revoke(&self, c: &Issued) -> Result<(), CredentialError> {
        self.revoke_handle(&c.revocation).await
    }
}

impl VaultIssuer {
    async fn revoke_handle(&self, h: &RevocationHandle) -> Result<(), CredentialError> {
        match h {
            RevocationHandle::VaultAccessor(a) => {
                match self
                    .call(
                        Method::POST,
                        "auth/token/revoke-accessor",
                        Some(json!({"accessor": a})),
                    )
                    .await
                {
                    Ok(_) => Ok(()),
                    // Already gone (expired or revoked): the goal is reached.
                    Err(CredentialError::Upstream {
                        status: 400,
                        detail,
                        ..
                    }) if detail.contains("invalid accessor") => Ok(()),
                    Err(e) => Err(e),
                }
            }
            RevocationHandle::VaultLease(l) => self
                .call(
                    Method::PUT,
                    "sys/leases/revoke",
                    Some(json!({"lease_id": l})),
                )
                .await
                .map(|_| ()),
            _ => Ok(()),
        }
    }
}
