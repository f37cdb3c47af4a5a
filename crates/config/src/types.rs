//! The typed, validated configuration. Everything downstream of `chaperone-config`
//! consumes these types; they are only ever produced by `validate()` from the raw
//! serde structs, so every invariant documented here holds.
//!
//! Relative paths are resolved against the directory of the config file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Attribute / label maps are plain JSON objects so that they reach policy unchanged.
pub type JsonMap = serde_json::Map<String, serde_json::Value>;

/// The validated configuration of one sidecar.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file this was loaded from (for reload and error messages).
    pub source: PathBuf,
    /// Agent-facing mTLS listener.
    pub listen: SocketAddr,
    /// Plain-HTTP admin listener (loopback by default).
    pub admin: SocketAddr,
    /// Agent-facing TLS: the sidecar's SVID and the agent trust bundle.
    pub tls: TlsConfig,
    /// First match wins.
    pub identities: Vec<IdentityRule>,
    /// Outbound routes; longest prefix wins, host routes match by authority.
    pub routes: Vec<Route>,
    /// Keyed by credential name.
    pub credentials: BTreeMap<String, Credential>,
    /// Rego policy sources.
    pub policy: PolicyConfig,
    /// Session (task) lifetimes and delegation.
    pub sessions: SessionsConfig,
    /// Human approvals.
    pub approvals: ApprovalsConfig,
    /// Audit log sink.
    pub audit: AuditConfig,
    /// Resource limits for agent connections.
    pub limits: Limits,
    /// Where this sidecar runs (visible to policy as `input.environment`).
    pub environment: Environment,
}

/// `tls` section: the sidecar's own certificate and the agent trust anchors.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// The sidecar's own SVID (server certificate chain, PEM).
    pub cert: PathBuf,
    /// Private key for `cert` (PEM, PKCS#8 / SEC1 / PKCS#1).
    pub key: PathBuf,
    /// Trust bundle(s) for agent certificates (PEM, one or more CA certificates).
    pub bundle: PathBuf,
    /// Accepted agent trust domains (lowercase, validated as SPIFFE trust domain names).
    pub trust_domains: Vec<String>,
    /// How often the cert/key/bundle files are checked for changes. Default 10s.
    pub reload: Duration,
}

/// One `identities` entry: SPIFFE ID pattern -> policy attributes.
#[derive(Debug, Clone)]
pub struct IdentityRule {
    /// The pattern as written, e.g. `spiffe://prod.example.org/ns/support/sa/*`.
    /// `*` matches exactly one path segment. Validated to be a SPIFFE ID shape.
    pub pattern: String,
    /// Attributes visible to policy as `input.identity.attributes`.
    pub attributes: JsonMap,
}

/// How a route selects requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMatch {
    /// Canonical path prefix, always starting with `/`, never ending with `/` unless it is `/`.
    /// Matches on segment boundaries: `/orders` matches `/orders` and `/orders/x`, not `/ordersx`.
    Prefix(String),
    /// Lowercased host name (no port) compared with the request's authority host.
    Host(String),
}

/// What the route speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Plain HTTP forwarding.
    Http,
    /// MCP streamable HTTP: JSON-RPC bodies are inspected (SPEC §6).
    Mcp,
}

/// A parsed upstream URL.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `http` or `https`.
    pub scheme: String,
    /// host[:port] as written (lowercased host).
    pub authority: String,
    /// Base path of the upstream URL without trailing slash ("" when none).
    /// The upstream request path is `base_path + route_path`.
    pub base_path: String,
    /// The URL as written in the config (for policy input and logs).
    pub url: String,
}

/// One `routes` entry.
#[derive(Debug, Clone)]
pub struct Route {
    /// Unique route name (`input.route.name`, metric label).
    pub name: String,
    /// Prefix or host matcher.
    pub matcher: RouteMatch,
    /// Where allowed calls go.
    pub upstream: Upstream,
    /// `http` (default) or `mcp`.
    pub protocol: Protocol,
    /// Free-form labels visible to policy (`sensitivity`, `data_domain`, `external`, ...).
    pub labels: JsonMap,
    /// Default credential for this route (must name a key of `Config::credentials`).
    pub credential: Option<String>,
    /// Custom CA for https upstreams; `None` = system roots.
    pub upstream_ca: Option<PathBuf>,
    /// Per-request upstream timeout (response headers). Default 30s.
    pub timeout: Duration,
    /// Upgrade protocols (e.g. `websocket`) the agent may request on this route. Default none.
    pub allow_upgrades: Vec<String>,
}

/// One named credential (`credentials.NAME`).
#[derive(Debug, Clone)]
pub struct Credential {
    /// The key under `credentials`.
    pub name: String,
    /// How the credential is obtained.
    pub provider: Provider,
    /// How it is put on the upstream request.
    pub inject: Inject,
}

/// Where and how a credential is injected into upstream requests.
#[derive(Debug, Clone)]
pub struct Inject {
    /// Lowercased header name.
    pub header: String,
    /// Template; `{token}` always, `{username}`, `{password}`, `{basic}` for leases with those fields.
    pub value: String,
}

/// JWT signing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    /// ECDSA P-256 with SHA-256 (default).
    Es256,
    /// Ed25519.
    EdDsa,
}

/// Credential provider and its settings.
#[derive(Debug, Clone)]
pub enum Provider {
    /// Sidecar-minted JWT.
    Jwt(JwtProvider),
    /// Vault / OpenBao child token or dynamic-secret lease.
    Vault(VaultProvider),
    /// OAuth 2.0 client credentials or token exchange.
    OAuth2(OAuth2Provider),
    /// Long-lived secret read from a file.
    Static(StaticProvider),
}

impl Provider {
    /// The provider kind as used in config and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Provider::Jwt(_) => "jwt",
            Provider::Vault(_) => "vault",
            Provider::OAuth2(_) => "oauth2",
            Provider::Static(_) => "static",
        }
    }
}

/// `provider: jwt`.
#[derive(Debug, Clone)]
pub struct JwtProvider {
    /// `aud` claim.
    pub audience: String,
    /// Default `chaperone`; `iss` claim.
    pub issuer: String,
    /// Token lifetime (capped at the session's expiry). Default 5m.
    pub ttl: Duration,
    /// PEM PKCS#8 private key; `None` = generated at start (dev).
    pub signing_key: Option<PathBuf>,
    /// Default ES256. With a key file, must match the key type.
    pub algorithm: JwtAlgorithm,
}

/// How the sidecar authenticates to Vault.
#[derive(Debug, Clone)]
pub enum VaultAuth {
    /// Read the sidecar's Vault token from this file (re-read on change).
    TokenFile(PathBuf),
    /// Kubernetes auth method: log in with the pod's service-account JWT.
    Kubernetes {
        /// Auth mount path. Default `kubernetes`.
        mount: String,
        /// Vault role to log in as.
        role: String,
        /// Service-account JWT file. Default the pod's projected token.
        jwt_file: PathBuf,
    },
}

/// What the Vault provider issues per session.
#[derive(Debug, Clone)]
pub enum VaultMode {
    /// Create a child token per session.
    Token {
        /// Policies of the child token (never empty, never `root`).
        policies: Vec<String>,
        /// Optional use limit; `None` = unlimited.
        num_uses: Option<u32>,
    },
    /// Read a dynamic secret path (e.g. `database/creds/readonly`) and track its lease.
    Lease {
        /// Secret path, without leading or trailing `/`.
        path: String,
    },
}

/// `provider: vault`.
#[derive(Debug, Clone)]
pub struct VaultProvider {
    /// Base address, e.g. `http://127.0.0.1:8200` (no trailing slash).
    pub address: String,
    /// How the sidecar itself logs in.
    pub auth: VaultAuth,
    /// Child token or lease. Default token.
    pub mode: VaultMode,
    /// Requested TTL (always capped at the session's remaining lifetime).
    pub ttl: Duration,
    /// Vault namespace header (Enterprise/OpenBao namespaces), optional.
    pub namespace: Option<String>,
    /// Custom CA for an https Vault.
    pub ca: Option<PathBuf>,
}

/// OAuth 2.0 grant used at `token_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OAuth2Grant {
    /// RFC 6749 §4.4 client credentials (needs `client_secret_file`).
    ClientCredentials,
    /// RFC 8693. The subject token is minted by the named `jwt` credential for the calling agent.
    TokenExchange {
        /// Name of the `jwt` credential that mints the subject token.
        subject_credential: String,
    },
}

/// `provider: oauth2`.
#[derive(Debug, Clone)]
pub struct OAuth2Provider {
    /// Token endpoint.
    pub token_url: String,
    /// Grant type. Default client_credentials.
    pub grant: OAuth2Grant,
    /// OAuth client id.
    pub client_id: String,
    /// File holding the client secret (re-read when it changes).
    pub client_secret_file: Option<PathBuf>,
    /// Space separated scope requested (narrowed further by policy `scopes`).
    pub scope: Option<String>,
    /// Requested audience (`audience` parameter).
    pub audience: Option<String>,
    /// RFC 7009 revocation endpoint; tokens are revoked there when the session ends.
    pub revocation_url: Option<String>,
    /// Custom CA for the token / revocation endpoints; `None` = system roots.
    pub ca: Option<PathBuf>,
}

/// `provider: static`.
#[derive(Debug, Clone)]
pub struct StaticProvider {
    /// File holding the secret (trailing newline trimmed); re-read when it changes.
    pub file: PathBuf,
}

/// `policy` section.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// Directories or files: `.rego` plus data `.json` / `.yaml` / `.yml`.
    pub paths: Vec<PathBuf>,
    /// How often the files are checked for changes. Default 2s. (SIGHUP reloads at once.)
    pub reload: Duration,
    /// Upper bound for one evaluation. Default 100ms.
    pub timeout: Duration,
    /// Evaluator for decisions. Default `compiled`.
    pub engine: PolicyEngine,
}

/// `policy.engine`: which regorus evaluator decides calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyEngine {
    /// Policies compiled to regorus's register VM (default): ≈ 8x faster, equally strict
    /// (any runtime error denies); falls back to the interpreter, with a warning, when a
    /// construct is unsupported or a rule could produce conflicting values.
    Compiled,
    /// regorus's tree-walking interpreter, the reference evaluator.
    Interpreter,
}

/// `sessions` section.
#[derive(Debug, Clone)]
pub struct SessionsConfig {
    /// Default 15m.
    pub default_ttl: Duration,
    /// Default 1h; `default_ttl <= max_ttl` is enforced.
    pub max_ttl: Duration,
    /// Maximum delegation depth (a root session has depth 0). Default 3.
    pub max_delegation_depth: u32,
    /// How often expired sessions are swept. Default 1s.
    pub sweep_interval: Duration,
}

/// `approvals` section.
#[derive(Debug, Clone)]
pub struct ApprovalsConfig {
    /// Default 120s.
    pub timeout: Duration,
    /// Optional URL POSTed a JSON document for each new approval.
    pub webhook: Option<String>,
}

/// What happens when an audit record cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnAuditFailure {
    /// Refuse the call (fail closed, default).
    Deny,
    /// Forward the call anyway (the failure is logged and counted).
    Allow,
}

/// Where audit records go.
#[derive(Debug, Clone)]
pub enum AuditSink {
    /// Standard output (`path: "-"`).
    Stdout,
    /// Append to this file.
    File(PathBuf),
}

/// `audit` section.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// `None` when the `audit` section is absent: audit records are discarded (dev only).
    pub sink: Option<AuditSink>,
    /// Default deny.
    pub on_failure: OnAuditFailure,
    /// Bounded channel capacity between the request path and the writer. Default 4096.
    pub buffer: usize,
    /// Rotate the file when it exceeds this many bytes (`None` = never). Default none.
    pub rotate_bytes: Option<u64>,
}

/// `limits` section.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Max request body inspected (MCP) / buffered. Default 1 MiB.
    pub max_body_bytes: usize,
    /// Max concurrent agent connections. Default 1024.
    pub max_connections: usize,
    /// Max request header bytes. Default 64 KiB.
    pub max_header_bytes: usize,
    /// TLS handshake + request head timeout. Default 10s.
    pub header_timeout: Duration,
    /// Idle keep-alive timeout for agent connections. Default 90s.
    pub idle_timeout: Duration,
}

/// `environment` section; defaults from `NODE_NAME`, `POD_NAMESPACE`, `POD_NAME`, else empty.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// Node name (`input.environment.node`).
    pub node: String,
    /// Namespace (`input.environment.namespace`).
    pub namespace: String,
    /// Pod name (`input.environment.pod`).
    pub pod: String,
}
