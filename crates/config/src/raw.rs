//! Raw serde structs: the YAML shape of `chaperone.yaml` (SPEC §2), with unknown keys
//! rejected at every level. `validate()` turns them into the typed config.
//!
//! Sections are deserialized one by one (and list/map entries one by one) from the
//! parsed YAML tree, so that one broken route does not hide the errors of the next.

use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_norway::Value;

use crate::JsonMap;

/// Top level. Sections stay untyped here and are deserialized individually.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub listen: Option<Value>,
    pub admin: Option<Value>,
    pub tls: Option<Value>,
    pub identities: Option<Value>,
    pub routes: Option<Value>,
    pub credentials: Option<Value>,
    pub policy: Option<Value>,
    pub sessions: Option<Value>,
    pub approvals: Option<Value>,
    pub audit: Option<Value>,
    pub limits: Option<Value>,
    pub environment: Option<Value>,
}

/// A duration written as `"500ms"`, `"30s"`, `"15m"`, `"1h"`, `"1h30m"`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawDuration(pub Duration);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration string such as \"500ms\", \"30s\", \"15m\" or \"1h30m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                crate::parse_duration(v).map(RawDuration).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub cert: String,
    pub key: String,
    pub bundle: String,
    pub trust_domains: Vec<String>,
    pub reload: Option<RawDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIdentity {
    #[serde(rename = "match")]
    pub pattern: String,
    pub attributes: Option<JsonMap>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawProtocol {
    Http,
    Mcp,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstreamTls {
    pub ca: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub name: String,
    pub prefix: Option<String>,
    pub host: Option<String>,
    pub upstream: String,
    pub protocol: Option<RawProtocol>,
    pub labels: Option<JsonMap>,
    pub credential: Option<String>,
    pub upstream_tls: Option<RawUpstreamTls>,
    pub timeout: Option<RawDuration>,
    pub allow_upgrades: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInject {
    pub header: String,
    pub value: String,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub(crate) enum RawJwtAlgorithm {
    #[serde(rename = "ES256")]
    Es256,
    #[serde(rename = "EdDSA")]
    EdDsa,
}

/// `provider: jwt` (the `provider` key is removed before deserializing).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJwt {
    pub audience: String,
    pub issuer: Option<String>,
    pub ttl: Option<RawDuration>,
    pub signing_key: Option<String>,
    pub algorithm: Option<RawJwtAlgorithm>,
    pub inject: Option<RawInject>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVaultAuth {
    pub method: String,
    pub role: Option<String>,
    pub mount: Option<String>,
    pub jwt_file: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawVaultMode {
    Token,
    Lease,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVault {
    pub address: String,
    pub token_file: Option<String>,
    pub auth: Option<RawVaultAuth>,
    pub mode: Option<RawVaultMode>,
    pub policies: Option<Vec<String>>,
    pub num_uses: Option<u32>,
    pub ttl: Option<RawDuration>,
    pub path: Option<String>,
    pub namespace: Option<String>,
    pub ca: Option<String>,
    pub inject: Option<RawInject>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawGrant {
    ClientCredentials,
    TokenExchange,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOAuth2 {
    pub token_url: String,
    pub grant: Option<RawGrant>,
    pub client_id: String,
    pub client_secret_file: Option<String>,
    pub scope: Option<String>,
    pub audience: Option<String>,
    pub revocation_url: Option<String>,
    pub subject_credential: Option<String>,
    pub ca: Option<String>,
    pub inject: Option<RawInject>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStatic {
    pub file: String,
    pub inject: RawInject,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    pub paths: Vec<String>,
    pub reload: Option<RawDuration>,
    pub timeout: Option<RawDuration>,
    pub engine: Option<RawPolicyEngine>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawPolicyEngine {
    Compiled,
    Interpreter,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSessions {
    pub default_ttl: Option<RawDuration>,
    pub max_ttl: Option<RawDuration>,
    pub max_delegation_depth: Option<u32>,
    pub sweep_interval: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApprovals {
    pub timeout: Option<RawDuration>,
    pub webhook: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawOnAuditFailure {
    Deny,
    Allow,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAudit {
    pub path: String,
    pub on_audit_failure: Option<RawOnAuditFailure>,
    pub buffer: Option<usize>,
    pub rotate_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub max_body_bytes: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_header_bytes: Option<usize>,
    pub header_timeout: Option<RawDuration>,
    pub idle_timeout: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEnvironment {
    pub node: Option<String>,
    pub namespace: Option<String>,
    pub pod: Option<String>,
}
