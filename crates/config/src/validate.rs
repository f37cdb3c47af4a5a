//! Raw YAML tree -> typed [`Config`], collecting every error with its key path and
//! location.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_norway::{Mapping, Value};

use crate::env::{expand_tree, key_name};
use crate::locate::{join_index, join_key, Locations};
use crate::raw::*;
use crate::*;
use crate::{checks, ConfigError, ConfigErrors};

/// Largest config file accepted.
pub(crate) const MAX_CONFIG_BYTES: usize = 8 * 1024 * 1024;

const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "admin",
    "tls",
    "identities",
    "routes",
    "credentials",
    "policy",
    "sessions",
    "approvals",
    "audit",
    "limits",
    "environment",
];

/// How many serde errors one section (or list entry) reports at most.
const MAX_DE_RETRIES: usize = 16;

/// Remove the mapping entry at `segments` (relative to `v`). `false` when the path
/// does not end in a mapping key or cannot be followed.
fn remove_at(v: &mut Value, segments: &[serde_path_to_error::Segment]) -> bool {
    use serde_path_to_error::Segment;
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut cur = v;
    for seg in parents {
        cur = match (seg, cur) {
            (Segment::Map { key }, Value::Mapping(m)) => match m.get_mut(key.as_str()) {
                Some(next) => next,
                None => return false,
            },
            (Segment::Seq { index }, Value::Sequence(items)) => match items.get_mut(*index) {
                Some(next) => next,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, cur) {
        (Segment::Map { key }, Value::Mapping(m)) => m.remove(key.as_str()).is_some(),
        _ => false,
    }
}

/// hyper refuses (panics on) HTTP/1 read buffers smaller than this.
const MIN_HEADER_BYTES: usize = 8192;

struct Ctx<'a> {
    file: &'a Path,
    base_dir: PathBuf,
    locs: Locations,
    errors: Vec<ConfigError>,
    /// Keys whose `${VAR}` expansion failed: later errors there would only be noise.
    unexpanded: BTreeSet<String>,
}

impl Ctx<'_> {
    fn err(&mut self, key: &str, message: impl Into<String>) {
        if self.unexpanded.contains(key) {
            return;
        }
        let (line, column) = self.locs.locate(key);
        self.push(key, line, column, message.into());
    }

    fn push(&mut self, key: &str, line: usize, column: usize, message: String) {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            key: key.to_string(),
            message,
        });
    }

    /// Deserialize `v` (found at `key`) into a raw struct, reporting the precise path on error.
    ///
    /// To report more than serde's first error, the offending key is removed and the
    /// value deserialized again (a bounded number of times). The result is used only
    /// when every removed key was an unknown one; otherwise `None` (errors recorded).
    fn de<T: DeserializeOwned>(&mut self, key: &str, mut v: Value) -> Option<T> {
        let mut removed: Vec<String> = Vec::new();
        let mut only_unknown = true;
        for _ in 0..MAX_DE_RETRIES {
            let e = match serde_path_to_error::deserialize::<_, T>(v.clone()) {
                Ok(t) => return (removed.is_empty() || only_unknown).then_some(t),
                Err(e) => e,
            };
            let segments: Vec<serde_path_to_error::Segment> = e.path().iter().cloned().collect();
            let mut path = key.to_string();
            for seg in &segments {
                match seg {
                    serde_path_to_error::Segment::Seq { index } => path = join_index(&path, *index),
                    serde_path_to_error::Segment::Map { key } => path = join_key(&path, key),
                    serde_path_to_error::Segment::Enum { .. }
                    | serde_path_to_error::Segment::Unknown => {}
                }
            }
            let msg = e.into_inner().to_string();
            // A key removed after a bad value is now "missing": not a new problem.
            if let Some(field) = msg
                .strip_prefix("missing field `")
                .and_then(|m| m.strip_suffix('`'))
            {
                if removed.contains(&join_key(&path, field)) {
                    return None;
                }
            }
            let unknown = msg.starts_with("unknown field");
            self.err(&path, msg);
            if !remove_at(&mut v, &segments) {
                return None;
            }
            only_unknown &= unknown;
            removed.push(path);
        }
        None
    }

    /// Resolve a configured path against the config file's directory.
    fn path(&mut self, key: &str, s: &str) -> PathBuf {
        if s.is_empty() {
            self.err(key, "path must not be empty");
        }
        let p = Path::new(s);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    fn opt_path(&mut self, key: &str, s: Option<&str>) -> Option<PathBuf> {
        s.map(|s| self.path(key, s))
    }

    fn positive(&mut self, key: &str, d: Option<RawDuration>, default: Duration) -> Duration {
        match d {
            Some(RawDuration(d)) if d.is_zero() => {
                self.err(key, "duration must be greater than zero");
                default
            }
            Some(RawDuration(d)) => d,
            None => default,
        }
    }

    fn nonzero<T: PartialEq + Default>(&mut self, key: &str, v: Option<T>, default: T) -> T {
        match v {
            Some(v) if v == T::default() => {
                self.err(key, "must be greater than zero");
                default
            }
            Some(v) => v,
            None => default,
        }
    }

    fn non_empty(&mut self, key: &str, s: &str) {
        if s.trim().is_empty() {
            self.err(key, "must not be empty");
        }
    }
}

/// Parse, expand and validate. `env` supplies environment variables.
pub(crate) fn run(
    yaml: &str,
    source: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let file = source;
    let base_dir = source.parent().map(Path::to_path_buf).unwrap_or_default();
    let error_at = |line: usize, column: usize, key: &str, message: String| {
        ConfigErrors(vec![ConfigError {
            file: file.to_path_buf(),
            line,
            column,
            key: key.to_string(),
            message,
        }])
    };
    if yaml.len() > MAX_CONFIG_BYTES {
        return Err(error_at(
            1,
            1,
            "(document)",
            format!("config is larger than {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    let mut root: Value = match serde_norway::from_str(yaml) {
        Ok(v) => v,
        Err(e) => {
            let mut msg = e.to_string();
            if msg.contains("duplicate entry") {
                let locs = Locations::scan(yaml);
                if let Some((key, (line, column))) = locs.first_duplicate() {
                    return Err(error_at(
                        line,
                        column,
                        key,
                        format!("duplicate key `{key}`"),
                    ));
                }
            }
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            if let Some(l) = e.location() {
                let suffix = format!(" at line {} column {}", l.line(), l.column());
                if let Some(stripped) = msg.strip_suffix(&suffix) {
                    msg = stripped.to_string();
                }
            }
            return Err(error_at(
                line,
                column,
                "(document)",
                format!("invalid YAML: {msg}"),
            ));
        }
    };
    let mut ctx = Ctx {
        file,
        base_dir,
        locs: Locations::scan(yaml),
        errors: Vec::new(),
        unexpanded: BTreeSet::new(),
    };

    if root.is_null() {
        root = Value::Mapping(Mapping::new());
    }
    if !root.is_mapping() {
        ctx.err("(document)", "the config must be a YAML mapping");
        return Err(ConfigErrors(ctx.errors));
    }
    if let Err(e) = root.apply_merge() {
        ctx.err("(document)", format!("invalid merge key: {e}"));
    }

    if let Value::Mapping(m) = &mut root {
        let unknown: Vec<Value> = m
            .keys()
            .filter(|k| !k.as_str().is_some_and(|k| TOP_LEVEL_KEYS.contains(&k)))
            .cloned()
            .collect();
        for k in unknown {
            let name = key_name(&k);
            ctx.err(
                &name,
                format!(
                    "unknown key `{name}`, expected one of: {}",
                    TOP_LEVEL_KEYS.join(", ")
                ),
            );
            m.remove(&k);
        }
    }

    let mut env_errors = Vec::new();
    expand_tree(&mut root, "", env, &mut env_errors);
    for (key, msg) in env_errors {
        ctx.err(&key, msg);
        ctx.unexpanded.insert(key);
    }

    let raw: RawConfig = match ctx.de("", root) {
        Some(r) => r,
        None => return Err(finish(ctx)),
    };

    let listen = socket(&mut ctx, "listen", raw.listen, "127.0.0.1:15001");
    let admin = socket(&mut ctx, "admin", raw.admin, "127.0.0.1:15000");
    if let (Some(l), Some(a)) = (listen, admin) {
        if l == a && l.port() != 0 {
            ctx.err("admin", format!("admin address {a} is the same as listen"));
        }
    }
    let tls = tls(&mut ctx, raw.tls);
    let identities = identities(&mut ctx, raw.identities, tls.as_ref());
    let (credentials, credential_kinds) = credentials(&mut ctx, raw.credentials);
    let routes = routes(&mut ctx, raw.routes, &credential_kinds);
    let policy = policy(&mut ctx, raw.policy);
    let sessions = sessions(&mut ctx, raw.sessions);
    let approvals = approvals(&mut ctx, raw.approvals);
    let audit = audit(&mut ctx, raw.audit);
    let limits = limits(&mut ctx, raw.limits);
    let environment = environment(&mut ctx, raw.environment, env);

    if !ctx.errors.is_empty() {
        return Err(finish(ctx));
    }
    match (
        listen,
        admin,
        tls,
        policy,
        sessions,
        approvals,
        audit,
        limits,
        environment,
    ) {
        (
            Some(listen),
            Some(admin),
            Some(tls),
            Some(policy),
            Some(sessions),
            Some(approvals),
            Some(audit),
            Some(limits),
            Some(environment),
        ) => Ok(Config {
            source: source.to_path_buf(),
            listen,
            admin,
            tls,
            identities,
            routes,
            credentials,
            policy,
            sessions,
            approvals,
            audit,
            limits,
            environment,
        }),
        _ => {
            // Every `None` above comes with an error; fail closed regardless.
            ctx.err("(document)", "invalid configuration");
            Err(finish(ctx))
        }
    }
}

fn finish(ctx: Ctx<'_>) -> ConfigErrors {
    let mut errors = ctx.errors;
    errors.sort_by_key(|e| (e.line, e.column));
    errors.dedup();
    ConfigErrors(errors)
}

fn socket(ctx: &mut Ctx<'_>, key: &str, v: Option<Value>, default: &str) -> Option<SocketAddr> {
    let s: String = match v {
        None | Some(Value::Null) => default.to_string(),
        Some(v) => ctx.de(key, v)?,
    };
    match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            ctx.err(
                key,
                format!("invalid socket address {s:?} (expected IP:PORT, e.g. {default})"),
            );
            None
        }
    }
}

/// A section that must be present.
fn required<T: DeserializeOwned>(ctx: &mut Ctx<'_>, key: &str, v: Option<Value>) -> Option<T> {
    match v {
        None | Some(Value::Null) => {
            ctx.err(key, format!("missing required section `{key}`"));
            None
        }
        Some(v) => ctx.de(key, v),
    }
}

/// A section that may be absent (all defaults).
fn optional<T: DeserializeOwned + Default>(
    ctx: &mut Ctx<'_>,
    key: &str,
    v: Option<Value>,
) -> Option<T> {
    match v {
        None | Some(Value::Null) => Some(T::default()),
        Some(v) => ctx.de(key, v),
    }
}

fn tls(ctx: &mut Ctx<'_>, v: Option<Value>) -> Option<TlsConfig> {
    let raw: RawTls = required(ctx, "tls", v)?;
    let cert = ctx.path("tls.cert", &raw.cert);
    let key = ctx.path("tls.key", &raw.key);
    let bundle = ctx.path("tls.bundle", &raw.bundle);
    if raw.trust_domains.is_empty() {
        ctx.err("tls.trust_domains", "at least one trust domain is required");
    }
    let mut seen = BTreeSet::new();
    for (i, td) in raw.trust_domains.iter().enumerate() {
        let k = join_index("tls.trust_domains", i);
        if let Err(e) = checks::trust_domain(td) {
            ctx.err(&k, e);
        } else if !seen.insert(td.clone()) {
            ctx.err(&k, format!("duplicate trust domain {td:?}"));
        }
    }
    let reload = ctx.positive("tls.reload", raw.reload, Duration::from_secs(10));
    Some(TlsConfig {
        cert,
        key,
        bundle,
        trust_domains: raw.trust_domains,
        reload,
    })
}

/// A list section: `null`/absent is empty; anything else must be a sequence.
fn list(ctx: &mut Ctx<'_>, key: &str, v: Option<Value>) -> Vec<Value> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(items)) => items,
        Some(_) => {
            ctx.err(key, format!("`{key}` must be a list"));
            Vec::new()
        }
    }
}

fn identities(ctx: &mut Ctx<'_>, v: Option<Value>, tls: Option<&TlsConfig>) -> Vec<IdentityRule> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, item) in list(ctx, "identities", v).into_iter().enumerate() {
        let base = join_index("identities", i);
        let Some(raw) = ctx.de::<RawIdentity>(&base, item) else {
            continue;
        };
        let k = join_key(&base, "match");
        match checks::spiffe_pattern(&raw.pattern) {
            Err(e) => ctx.err(&k, e),
            Ok(td) => {
                if let Some(tls) = tls {
                    if !tls.trust_domains.iter().any(|t| t == td) {
                        ctx.err(
                            &k,
                            format!("trust domain {td:?} is not listed in tls.trust_domains"),
                        );
                    }
                }
                if !seen.insert(raw.pattern.clone()) {
                    ctx.err(
                        &k,
                        format!(
                            "duplicate identity pattern {:?} (first match wins)",
                            raw.pattern
                        ),
                    );
                }
            }
        }
        out.push(IdentityRule {
            pattern: raw.pattern,
            attributes: raw.attributes.unwrap_or_default(),
        });
    }
    out
}

fn routes(
    ctx: &mut Ctx<'_>,
    v: Option<Value>,
    kinds: &BTreeMap<String, Option<String>>,
) -> Vec<Route> {
    let mut out = Vec::new();
    let mut names = BTreeSet::new();
    let mut matchers: BTreeMap<String, String> = BTreeMap::new();
    for (i, item) in list(ctx, "routes", v).into_iter().enumerate() {
        let base = join_index("routes", i);
        let Some(raw) = ctx.de::<RawRoute>(&base, item) else {
            continue;
        };
        let k = |f: &str| join_key(&base, f);
        if let Err(e) = checks::name(&raw.name) {
            ctx.err(&k("name"), e);
        } else if !names.insert(raw.name.clone()) {
            ctx.err(&k("name"), format!("duplicate route name {:?}", raw.name));
        }
        let matcher = match (&raw.prefix, &raw.host) {
            (Some(_), Some(_)) => {
                ctx.err(&base, "set exactly one of `prefix` or `host`, not both");
                None
            }
            (None, None) => {
                ctx.err(&base, "set exactly one of `prefix` or `host`");
                None
            }
            (Some(p), None) => match checks::prefix(p) {
                Ok(()) => Some((RouteMatch::Prefix(p.clone()), k("prefix"))),
                Err(e) => {
                    ctx.err(&k("prefix"), e);
                    None
                }
            },
            (None, Some(h)) => {
                if h.contains(':') && !h.starts_with('[') {
                    ctx.err(&k("host"), format!("host {h:?} must not include a port"));
                    None
                } else {
                    match checks::host(h) {
                        Ok(h) => Some((RouteMatch::Host(h), k("host"))),
                        Err(e) => {
                            ctx.err(&k("host"), e);
                            None
                        }
                    }
                }
            }
        };
        if let Some((m, mk)) = &matcher {
            let id = match m {
                RouteMatch::Prefix(p) => format!("prefix {p:?}"),
                RouteMatch::Host(h) => format!("host {h:?}"),
            };
            if let Some(other) = matchers.get(&id) {
                ctx.err(mk, format!("{id} is already used by route {other:?}"));
            } else {
                matchers.insert(id, raw.name.clone());
            }
        }
        let upstream = match checks::upstream(&raw.upstream) {
            Ok(u) => Some(u),
            Err(e) => {
                ctx.err(&k("upstream"), e);
                None
            }
        };
        if let Some(c) = &raw.credential {
            if !kinds.contains_key(c) {
                ctx.err(
                    &k("credential"),
                    format!("unknown credential {c:?} (not defined under `credentials`)"),
                );
            }
        }
        let upstream_ca = match raw.upstream_tls.and_then(|t| t.ca) {
            Some(ca) => {
                if upstream.as_ref().is_some_and(|u| u.scheme != "https") {
                    ctx.err(
                        &k("upstream_tls"),
                        "upstream_tls applies only to https upstreams",
                    );
                }
                Some(ctx.path(&join_key(&k("upstream_tls"), "ca"), &ca))
            }
            None => None,
        };
        let timeout = ctx.positive(&k("timeout"), raw.timeout, Duration::from_secs(30));
        let mut allow_upgrades = Vec::new();
        for (j, t) in raw.allow_upgrades.unwrap_or_default().iter().enumerate() {
            match checks::upgrade_token(t) {
                Ok(t) => allow_upgrades.push(t),
                Err(e) => ctx.err(&join_index(&k("allow_upgrades"), j), e),
            }
        }
        let (Some((matcher, _)), Some(upstream)) = (matcher, upstream) else {
            continue;
        };
        out.push(Route {
            name: raw.name,
            matcher,
            upstream,
            protocol: match raw.protocol {
                Some(RawProtocol::Mcp) => Protocol::Mcp,
                Some(RawProtocol::Http) | None => Protocol::Http,
            },
            labels: raw.labels.unwrap_or_default(),
            credential: raw.credential,
            upstream_ca,
            timeout,
            allow_upgrades,
        });
    }
    out
}

/// Returns the valid credentials, and the provider kind of every *named* entry
/// (`None` when unreadable) so that references to a broken entry are not reported twice.
fn credentials(
    ctx: &mut Ctx<'_>,
    v: Option<Value>,
) -> (
    BTreeMap<String, Credential>,
    BTreeMap<String, Option<String>>,
) {
    let mut out = BTreeMap::new();
    let mut kinds = BTreeMap::new();
    let entries = match v {
        None | Some(Value::Null) => Mapping::new(),
        Some(Value::Mapping(m)) => m,
        Some(_) => {
            ctx.err(
                "credentials",
                "`credentials` must be a mapping of name -> credential",
            );
            Mapping::new()
        }
    };
    let mut pending = Vec::new();
    for (name_v, body) in entries {
        let name = key_name(&name_v);
        let base = join_key("credentials", &name);
        if !matches!(name_v, Value::String(_)) {
            ctx.err(&base, "credential names must be strings");
            continue;
        }
        if let Err(e) = checks::name(&name) {
            ctx.err(&base, e);
        }
        let mut body = match body {
            Value::Mapping(m) => m,
            _ => {
                ctx.err(
                    &base,
                    "a credential must be a mapping with a `provider` key",
                );
                kinds.insert(name, None);
                continue;
            }
        };
        let provider = match body.remove("provider") {
            Some(Value::String(p)) => p,
            Some(_) => {
                ctx.err(&join_key(&base, "provider"), "`provider` must be a string");
                kinds.insert(name, None);
                continue;
            }
            None => {
                ctx.err(
                    &base,
                    "missing `provider` (one of jwt, vault, oauth2, static)",
                );
                kinds.insert(name, None);
                continue;
            }
        };
        kinds.insert(name.clone(), Some(provider.clone()));
        pending.push((name, base, provider, Value::Mapping(body)));
    }
    for (name, base, provider, body) in pending {
        let parsed = match provider.as_str() {
            "jwt" => ctx.de::<RawJwt>(&base, body).map(|r| jwt(ctx, &base, r)),
            "vault" => ctx
                .de::<RawVault>(&base, body)
                .and_then(|r| vault(ctx, &base, r)),
            "oauth2" => ctx
                .de::<RawOAuth2>(&base, body)
                .and_then(|r| oauth2(ctx, &base, r, &kinds)),
            "static" => ctx
                .de::<RawStatic>(&base, body)
                .map(|r| static_provider(ctx, &base, r)),
            other => {
                ctx.err(
                    &join_key(&base, "provider"),
                    format!(
                        "unknown provider {other:?} (expected one of jwt, vault, oauth2, static)"
                    ),
                );
                None
            }
        };
        if let Some((provider, inject)) = parsed {
            out.insert(
                name.clone(),
                Credential {
                    name,
                    provider,
                    inject,
                },
            );
        }
    }
    (out, kinds)
}

fn inject(
    ctx: &mut Ctx<'_>,
    base: &str,
    raw: Option<RawInject>,
    default: Option<(&str, &str)>,
    lease: bool,
) -> Inject {
    let key = join_key(base, "inject");
    let raw = match (raw, default) {
        (Some(r), _) => r,
        (None, Some((h, v))) => {
            return Inject {
                header: h.to_string(),
                value: v.to_string(),
            }
        }
        (None, None) => {
            ctx.err(
                &key,
                "`inject: {header, value}` is required for this credential",
            );
            return Inject {
                header: String::new(),
                value: String::new(),
            };
        }
    };
    let header = match checks::header_name(&raw.header) {
        Ok(h) => h,
        Err(e) => {
            ctx.err(&join_key(&key, "header"), e);
            raw.header
        }
    };
    if let Err(e) = checks::template(&raw.value, lease) {
        ctx.err(&join_key(&key, "value"), e);
    }
    Inject {
        header,
        value: raw.value,
    }
}

const BEARER: (&str, &str) = ("authorization", "Bearer {token}");

fn jwt(ctx: &mut Ctx<'_>, base: &str, r: RawJwt) -> (Provider, Inject) {
    ctx.non_empty(&join_key(base, "audience"), &r.audience);
    let issuer = r.issuer.unwrap_or_else(|| "chaperone".to_string());
    ctx.non_empty(&join_key(base, "issuer"), &issuer);
    let ttl = ctx.positive(&join_key(base, "ttl"), r.ttl, Duration::from_secs(300));
    let signing_key = ctx.opt_path(&join_key(base, "signing_key"), r.signing_key.as_deref());
    let algorithm = match r.algorithm {
        Some(RawJwtAlgorithm::EdDsa) => JwtAlgorithm::EdDsa,
        Some(RawJwtAlgorithm::Es256) | None => JwtAlgorithm::Es256,
    };
    let inject = inject(ctx, base, r.inject, Some(BEARER), false);
    (
        Provider::Jwt(JwtProvider {
            audience: r.audience,
            issuer,
            ttl,
            signing_key,
            algorithm,
        }),
        inject,
    )
}

fn vault(ctx: &mut Ctx<'_>, base: &str, r: RawVault) -> Option<(Provider, Inject)> {
    let k = |f: &str| join_key(base, f);
    let address = match checks::http_url(&r.address, false) {
        Ok(u) => Some(format!(
            "{}://{}{}",
            u.scheme,
            u.authority,
            u.path.trim_end_matches('/')
        )),
        Err(e) => {
            ctx.err(&k("address"), e);
            None
        }
    };
    let auth = match (r.token_file, r.auth) {
        (Some(_), Some(_)) => {
            ctx.err(base, "set exactly one of `token_file` or `auth`, not both");
            None
        }
        (None, None) => {
            ctx.err(
                base,
                "set one of `token_file` or `auth: {method: kubernetes, role: ...}`",
            );
            None
        }
        (Some(f), None) => Some(VaultAuth::TokenFile(ctx.path(&k("token_file"), &f))),
        (None, Some(a)) => {
            let ak = k("auth");
            if a.method != "kubernetes" {
                ctx.err(
                    &join_key(&ak, "method"),
                    format!(
                        "unsupported auth method {:?} (expected kubernetes)",
                        a.method
                    ),
                );
                None
            } else {
                let role = match a.role {
                    Some(r) if !r.trim().is_empty() => Some(r),
                    _ => {
                        ctx.err(
                            &join_key(&ak, "role"),
                            "`role` is required for kubernetes auth",
                        );
                        None
                    }
                };
                let mount = a.mount.unwrap_or_else(|| "kubernetes".to_string());
                let mount = mount.trim_matches('/').to_string();
                if mount.is_empty() {
                    ctx.err(&join_key(&ak, "mount"), "must not be empty");
                }
                let jwt_file = a.jwt_file.unwrap_or_else(|| {
                    "/var/run/secrets/kubernetes.io/serviceaccount/token".to_string()
                });
                let jwt_file = ctx.path(&join_key(&ak, "jwt_file"), &jwt_file);
                role.map(|role| VaultAuth::Kubernetes {
                    mount,
                    role,
                    jwt_file,
                })
            }
        }
    };
    let mode_kind = r.mode.unwrap_or(RawVaultMode::Token);
    let mode = match mode_kind {
        RawVaultMode::Token => {
            if r.path.is_some() {
                ctx.err(&k("path"), "`path` applies only to `mode: lease`");
            }
            let policies = r.policies.unwrap_or_default();
            if policies.is_empty() {
                ctx.err(
                    &k("policies"),
                    "`mode: token` needs a non-empty `policies` list (a child token would otherwise inherit every policy of the sidecar's token)",
                );
            }
            for (i, p) in policies.iter().enumerate() {
                let pk = join_index(&k("policies"), i);
                if p.trim().is_empty() {
                    ctx.err(&pk, "must not be empty");
                } else if p == "root" {
                    ctx.err(&pk, "the root policy cannot be granted to agents");
                }
            }
            if r.num_uses == Some(0) {
                ctx.err(
                    &k("num_uses"),
                    "must be at least 1 (omit it for unlimited uses)",
                );
            }
            VaultMode::Token {
                policies,
                num_uses: r.num_uses,
            }
        }
        RawVaultMode::Lease => {
            if r.policies.is_some() {
                ctx.err(&k("policies"), "`policies` applies only to `mode: token`");
            }
            if r.num_uses.is_some() {
                ctx.err(&k("num_uses"), "`num_uses` applies only to `mode: token`");
            }
            let path = r.path.unwrap_or_default();
            let path = path.trim_matches('/').to_string();
            if path.is_empty() {
                ctx.err(
                    base,
                    "`mode: lease` needs `path` (e.g. database/creds/readonly)",
                );
            } else if path
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
                || path
                    .chars()
                    .any(|c| !c.is_ascii_graphic() || matches!(c, '?' | '#' | '%' | '\\'))
            {
                ctx.err(&k("path"), format!("invalid secret path {path:?}"));
            }
            VaultMode::Lease { path }
        }
    };
    let ttl = ctx.positive(&k("ttl"), r.ttl, Duration::from_secs(900));
    if let Some(ns) = &r.namespace {
        ctx.non_empty(&k("namespace"), ns);
    }
    let ca = ctx.opt_path(&k("ca"), r.ca.as_deref());
    let lease = mode_kind == RawVaultMode::Lease;
    let default = if lease {
        None
    } else {
        Some(("x-vault-token", "{token}"))
    };
    let inject = inject(ctx, base, r.inject, default, lease);
    let (address, auth) = (address?, auth?);
    Some((
        Provider::Vault(VaultProvider {
            address,
            auth,
            mode,
            ttl,
            namespace: r.namespace,
            ca,
        }),
        inject,
    ))
}

fn oauth2(
    ctx: &mut Ctx<'_>,
    base: &str,
    r: RawOAuth2,
    kinds: &BTreeMap<String, Option<String>>,
) -> Option<(Provider, Inject)> {
    let k = |f: &str| join_key(base, f);
    let mut ok = true;
    if let Err(e) = checks::http_url(&r.token_url, true) {
        ctx.err(&k("token_url"), e);
        ok = false;
    }
    if let Some(u) = &r.revocation_url {
        if let Err(e) = checks::http_url(u, true) {
            ctx.err(&k("revocation_url"), e);
        }
    }
    ctx.non_empty(&k("client_id"), &r.client_id);
    let client_secret_file =
        ctx.opt_path(&k("client_secret_file"), r.client_secret_file.as_deref());
    let grant = match r.grant.unwrap_or(RawGrant::ClientCredentials) {
        RawGrant::ClientCredentials => {
            if r.subject_credential.is_some() {
                ctx.err(
                    &k("subject_credential"),
                    "`subject_credential` applies only to `grant: token_exchange`",
                );
            }
            if client_secret_file.is_none() {
                ctx.err(
                    base,
                    "`grant: client_credentials` needs `client_secret_file`",
                );
            }
            OAuth2Grant::ClientCredentials
        }
        RawGrant::TokenExchange => match r.subject_credential {
            None => {
                ctx.err(base, "`grant: token_exchange` needs `subject_credential` (the name of a jwt credential)");
                ok = false;
                OAuth2Grant::ClientCredentials
            }
            Some(s) => {
                match kinds.get(&s) {
                    None => ctx.err(&k("subject_credential"), format!("unknown credential {s:?}")),
                    Some(Some(kind)) if kind != "jwt" => ctx.err(
                        &k("subject_credential"),
                        format!("credential {s:?} is a {kind} credential; the subject token must come from a jwt credential"),
                    ),
                    Some(_) => {}
                }
                OAuth2Grant::TokenExchange {
                    subject_credential: s,
                }
            }
        },
    };
    if let Some(s) = &r.scope {
        ctx.non_empty(&k("scope"), s);
    }
    if let Some(a) = &r.audience {
        ctx.non_empty(&k("audience"), a);
    }
    let ca = ctx.opt_path(&k("ca"), r.ca.as_deref());
    let inject = inject(ctx, base, r.inject, Some(BEARER), false);
    ok.then_some((
        Provider::OAuth2(OAuth2Provider {
            token_url: r.token_url,
            grant,
            client_id: r.client_id,
            client_secret_file,
            scope: r.scope,
            audience: r.audience,
            revocation_url: r.revocation_url,
            ca,
        }),
        inject,
    ))
}

fn static_provider(ctx: &mut Ctx<'_>, base: &str, r: RawStatic) -> (Provider, Inject) {
    let file = ctx.path(&join_key(base, "file"), &r.file);
    let inject = inject(ctx, base, Some(r.inject), None, false);
    (Provider::Static(StaticProvider { file }), inject)
}

fn policy(ctx: &mut Ctx<'_>, v: Option<Value>) -> Option<PolicyConfig> {
    let raw: RawPolicy = required(ctx, "policy", v)?;
    if raw.paths.is_empty() {
        ctx.err("policy.paths", "at least one policy path is required");
    }
    let paths = raw
        .paths
        .iter()
        .enumerate()
        .map(|(i, p)| ctx.path(&join_index("policy.paths", i), p))
        .collect();
    let reload = ctx.positive("policy.reload", raw.reload, Duration::from_secs(2));
    let timeout = ctx.positive("policy.timeout", raw.timeout, Duration::from_millis(100));
    Some(PolicyConfig {
        paths,
        reload,
        timeout,
        engine: match raw.engine {
            Some(RawPolicyEngine::Compiled) | None => PolicyEngine::Compiled,
            Some(RawPolicyEngine::Interpreter) => PolicyEngine::Interpreter,
        },
    })
}

fn sessions(ctx: &mut Ctx<'_>, v: Option<Value>) -> Option<SessionsConfig> {
    let raw: RawSessions = optional(ctx, "sessions", v)?;
    let default_ttl = ctx.positive(
        "sessions.default_ttl",
        raw.default_ttl,
        Duration::from_secs(15 * 60),
    );
    let max_ttl = ctx.positive("sessions.max_ttl", raw.max_ttl, Duration::from_secs(3600));
    if default_ttl > max_ttl {
        let key = if raw.default_ttl.is_some() {
            "sessions.default_ttl"
        } else {
            "sessions.max_ttl"
        };
        ctx.err(
            key,
            format!("default_ttl ({default_ttl:?}) must not exceed max_ttl ({max_ttl:?})"),
        );
    }
    let sweep_interval = ctx.positive(
        "sessions.sweep_interval",
        raw.sweep_interval,
        Duration::from_secs(1),
    );
    Some(SessionsConfig {
        default_ttl,
        max_ttl,
        max_delegation_depth: raw.max_delegation_depth.unwrap_or(3),
        sweep_interval,
    })
}

fn approvals(ctx: &mut Ctx<'_>, v: Option<Value>) -> Option<ApprovalsConfig> {
    let raw: RawApprovals = optional(ctx, "approvals", v)?;
    let timeout = ctx.positive("approvals.timeout", raw.timeout, Duration::from_secs(120));
    if let Some(w) = &raw.webhook {
        if let Err(e) = checks::http_url(w, true) {
            ctx.err("approvals.webhook", e);
        }
    }
    Some(ApprovalsConfig {
        timeout,
        webhook: raw.webhook,
    })
}

fn audit(ctx: &mut Ctx<'_>, v: Option<Value>) -> Option<AuditConfig> {
    let raw: Option<RawAudit> = match v {
        None | Some(Value::Null) => None,
        Some(v) => Some(ctx.de("audit", v)?),
    };
    let Some(raw) = raw else {
        return Some(AuditConfig {
            sink: None,
            on_failure: OnAuditFailure::Deny,
            buffer: 4096,
            rotate_bytes: None,
        });
    };
    let sink = if raw.path == "-" {
        AuditSink::Stdout
    } else {
        AuditSink::File(ctx.path("audit.path", &raw.path))
    };
    let buffer = ctx.nonzero("audit.buffer", raw.buffer, 4096);
    let rotate_bytes = match raw.rotate_bytes {
        Some(0) => {
            ctx.err(
                "audit.rotate_bytes",
                "must be greater than zero (omit it to never rotate)",
            );
            None
        }
        Some(n) => {
            if matches!(sink, AuditSink::Stdout) {
                ctx.err(
                    "audit.rotate_bytes",
                    "stdout (`path: \"-\"`) cannot be rotated",
                );
            }
            Some(n)
        }
        None => None,
    };
    let on_failure = match raw.on_audit_failure {
        Some(RawOnAuditFailure::Allow) => OnAuditFailure::Allow,
        Some(RawOnAuditFailure::Deny) | None => OnAuditFailure::Deny,
    };
    Some(AuditConfig {
        sink: Some(sink),
        on_failure,
        buffer,
        rotate_bytes,
    })
}

fn limits(ctx: &mut Ctx<'_>, v: Option<Value>) -> Option<Limits> {
    let raw: RawLimits = optional(ctx, "limits", v)?;
    let max_header_bytes = ctx.nonzero("limits.max_header_bytes", raw.max_header_bytes, 64 * 1024);
    if max_header_bytes < MIN_HEADER_BYTES {
        ctx.err(
            "limits.max_header_bytes",
            format!("must be at least {MIN_HEADER_BYTES}"),
        );
    }
    Some(Limits {
        max_body_bytes: ctx.nonzero("limits.max_body_bytes", raw.max_body_bytes, 1024 * 1024),
        max_connections: ctx.nonzero("limits.max_connections", raw.max_connections, 1024),
        max_header_bytes,
        header_timeout: ctx.positive(
            "limits.header_timeout",
            raw.header_timeout,
            Duration::from_secs(10),
        ),
        idle_timeout: ctx.positive(
            "limits.idle_timeout",
            raw.idle_timeout,
            Duration::from_secs(90),
        ),
    })
}

fn environment(
    ctx: &mut Ctx<'_>,
    v: Option<Value>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Environment> {
    let raw: RawEnvironment = optional(ctx, "environment", v)?;
    let pick = |v: Option<String>, var: &str| v.or_else(|| env(var)).unwrap_or_default();
    Some(Environment {
        node: pick(raw.node, "NODE_NAME"),
        namespace: pick(raw.namespace, "POD_NAMESPACE"),
        pod: pick(raw.pod, "POD_NAME"),
    })
}
