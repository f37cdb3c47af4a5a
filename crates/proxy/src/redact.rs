//! `GET /v1/config`: the effective config with nothing secret in it. Secrets are
//! only ever referenced by file path in the config, and no file content is read here.

use chaperone_config::{Config, Provider, RouteMatch, VaultAuth, VaultMode};
use serde_json::json;

pub fn config_view(c: &Config) -> serde_json::Value {
    let routes: Vec<_> = c
        .routes
        .iter()
        .map(|r| {
            let (k, v) = match &r.matcher {
                RouteMatch::Prefix(p) => ("prefix", p.clone()),
                RouteMatch::Host(h) => ("host", h.clone()),
            };
            json!({
                "name": r.name, k: v, "upstream": r.upstream.url,
                "protocol": match r.protocol { chaperone_config::Protocol::Http => "http", chaperone_config::Protocol::Mcp => "mcp" },
                "labels": r.labels, "credential": r.credential,
                "timeout_ms": r.timeout.as_millis() as u64,
                "upstream_ca": r.upstream_ca.as_ref().map(|p| p.display().to_string()),
            })
        })
        .collect();
    let mut creds = serde_json::Map::new();
    for (name, cr) in &c.credentials {
        let detail = match &cr.provider {
            Provider::Jwt(j) => {
                json!({"audience": j.audience, "issuer": j.issuer, "ttl_s": j.ttl.as_secs(),
                "signing_key": j.signing_key.as_ref().map(|p| p.display().to_string()),
                "algorithm": format!("{:?}", j.algorithm)})
            }
            Provider::Vault(v) => json!({"address": v.address,
                "auth": match &v.auth { VaultAuth::TokenFile(p) => json!({"token_file": p.display().to_string()}),
                    VaultAuth::Kubernetes { mount, role, jwt_file } => json!({"method": "kubernetes", "mount": mount, "role": role, "jwt_file": jwt_file.display().to_string()}) },
                "mode": match &v.mode { VaultMode::Token { policies, num_uses } => json!({"token": {"policies": policies, "num_uses": num_uses}}),
                    VaultMode::Lease { path } => json!({"lease": {"path": path}}) },
                "ttl_s": v.ttl.as_secs()}),
            Provider::OAuth2(o) => {
                json!({"token_url": o.token_url, "grant": format!("{:?}", o.grant), "client_id": o.client_id,
                "client_secret_file": o.client_secret_file.as_ref().map(|p| p.display().to_string()),
                "scope": o.scope, "audience": o.audience, "revocation_url": o.revocation_url})
            }
            Provider::Static(s) => json!({"file": s.file.display().to_string()}),
        };
        creds.insert(name.clone(), json!({"provider": cr.provider.kind(), "inject_header": cr.inject.header, "settings": detail}));
    }
    json!({
        "source": c.source.display().to_string(),
        "listen": c.listen.to_string(),
        "admin": c.admin.to_string(),
        "tls": {"cert": c.tls.cert.display().to_string(), "key": c.tls.key.display().to_string(),
                "bundle": c.tls.bundle.display().to_string(), "trust_domains": c.tls.trust_domains, "reload_s": c.tls.reload.as_secs()},
        "identities": c.identities.iter().map(|i| json!({"match": i.pattern, "attributes": i.attributes})).collect::<Vec<_>>(),
        "routes": routes,
        "credentials": creds,
        "policy": {"paths": c.policy.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                   "reload_ms": c.policy.reload.as_millis() as u64, "timeout_ms": c.policy.timeout.as_millis() as u64},
        "sessions": {"default_ttl_s": c.sessions.default_ttl.as_secs(), "max_ttl_s": c.sessions.max_ttl.as_secs(),
                     "max_delegation_depth": c.sessions.max_delegation_depth},
        "approvals": {"timeout_s": c.approvals.timeout.as_secs(), "webhook": c.approvals.webhook.is_some()},
        "audit": {"sink": format!("{:?}", c.audit.sink), "on_audit_failure": format!("{:?}", c.audit.on_failure)},
    })
}
