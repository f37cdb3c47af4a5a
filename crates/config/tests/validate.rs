//! Validation: typed results, defaults, and every error kind with its key path and line.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use chaperone_config::*;

/// A minimal valid config (7 lines); tests append to it, so line 8 is the first added line.
const BASE: &str = "\
tls:
  cert: c.pem
  key: /abs/k.pem
  bundle: b.pem
  trust_domains: [td.example]
policy:
  paths: [policies]
";

fn env(name: &str) -> Option<String> {
    match name {
        "UPSTREAM_HOST" => Some("orders.internal".into()),
        "NODE_NAME" => Some("node-1".into()),
        "POD_NAME" => Some("pod-1".into()),
        "AUD" => Some("https://aud.example".into()),
        _ => None,
    }
}

fn src() -> &'static Path {
    Path::new("/etc/chaperone/chaperone.yaml")
}

fn ok(extra: &str) -> Config {
    match from_str_with_env(&format!("{BASE}{extra}"), src(), &env) {
        Ok(c) => c,
        Err(e) => panic!("expected valid config, got:\n{e}"),
    }
}

fn errs_raw(yaml: &str) -> Vec<ConfigError> {
    match from_str_with_env(yaml, src(), &env) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(e) => {
            assert!(!e.0.is_empty(), "error list must not be empty");
            e.0
        }
    }
}

fn errs(extra: &str) -> Vec<ConfigError> {
    errs_raw(&format!("{BASE}{extra}"))
}

/// Assert exactly one error, at `key` on `line`, whose message contains `needle`.
fn one(extra: &str, key: &str, line: usize, needle: &str) {
    let e = errs(extra);
    assert_eq!(e.len(), 1, "expected one error, got: {e:#?}");
    assert_eq!(e[0].key, key, "{e:#?}");
    assert_eq!(e[0].line, line, "{e:#?}");
    assert!(
        e[0].message.contains(needle),
        "message {:?} lacks {needle:?}",
        e[0].message
    );
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = ok("");
    assert_eq!(c.source, src());
    assert_eq!(c.listen.to_string(), "127.0.0.1:15001");
    assert_eq!(c.admin.to_string(), "127.0.0.1:15000");
    assert_eq!(c.tls.cert, PathBuf::from("/etc/chaperone/c.pem"));
    assert_eq!(c.tls.key, PathBuf::from("/abs/k.pem"));
    assert_eq!(c.tls.reload, Duration::from_secs(10));
    assert_eq!(
        c.policy.paths,
        vec![PathBuf::from("/etc/chaperone/policies")]
    );
    assert_eq!(c.policy.reload, Duration::from_secs(2));
    assert_eq!(c.policy.timeout, Duration::from_millis(100));
    assert_eq!(c.sessions.default_ttl, Duration::from_secs(900));
    assert_eq!(c.sessions.max_ttl, Duration::from_secs(3600));
    assert_eq!(c.sessions.max_delegation_depth, 3);
    assert_eq!(c.sessions.sweep_interval, Duration::from_secs(1));
    assert_eq!(c.approvals.timeout, Duration::from_secs(120));
    assert!(c.approvals.webhook.is_none());
    assert!(c.audit.sink.is_none());
    assert_eq!(c.audit.on_failure, OnAuditFailure::Deny);
    assert_eq!(c.audit.buffer, 4096);
    assert_eq!(c.limits.max_body_bytes, 1 << 20);
    assert_eq!(c.limits.max_connections, 1024);
    assert_eq!(c.limits.max_header_bytes, 64 << 10);
    assert_eq!(c.limits.header_timeout, Duration::from_secs(10));
    assert_eq!(c.limits.idle_timeout, Duration::from_secs(90));
    assert_eq!(c.environment.node, "node-1");
    assert_eq!(c.environment.namespace, "");
    assert_eq!(c.environment.pod, "pod-1");
    assert!(c.routes.is_empty() && c.credentials.is_empty() && c.identities.is_empty());
}

#[test]
fn routes_parse_into_typed_values() {
    let c = ok("\
routes:
  - name: a
    prefix: /orders
    upstream: https://Orders.Internal:8443/base/
    protocol: mcp
    labels: {sensitivity: high, external: false, n: 3}
    credential: tok
    upstream_tls: {ca: ca.pem}
    timeout: 1h30m
    allow_upgrades: [WebSocket]
  - name: b
    host: API.Example.com
    upstream: http://127.0.0.1:9000
credentials:
  tok: {provider: jwt, audience: x}
");
    let a = &c.routes[0];
    assert_eq!(a.matcher, RouteMatch::Prefix("/orders".into()));
    assert_eq!(a.upstream.scheme, "https");
    assert_eq!(a.upstream.authority, "orders.internal:8443");
    assert_eq!(a.upstream.base_path, "/base");
    assert_eq!(a.upstream.url, "https://Orders.Internal:8443/base/");
    assert_eq!(a.protocol, Protocol::Mcp);
    assert_eq!(a.labels["sensitivity"], "high");
    assert_eq!(a.labels["external"], false);
    assert_eq!(a.labels["n"], 3);
    assert_eq!(a.credential.as_deref(), Some("tok"));
    assert_eq!(a.upstream_ca, Some(PathBuf::from("/etc/chaperone/ca.pem")));
    assert_eq!(a.timeout, Duration::from_secs(5400));
    assert_eq!(a.allow_upgrades, vec!["websocket".to_string()]);
    let b = &c.routes[1];
    assert_eq!(b.matcher, RouteMatch::Host("api.example.com".into()));
    assert_eq!(b.protocol, Protocol::Http);
    assert_eq!(b.timeout, Duration::from_secs(30));
    assert_eq!(b.upstream.base_path, "");
    assert!(b.credential.is_none() && b.upstream_ca.is_none() && b.allow_upgrades.is_empty());
}

#[test]
fn credential_defaults_and_shapes() {
    let c = ok("\
credentials:
  j: {provider: jwt, audience: aud}
  j2: {provider: jwt, audience: aud, issuer: me, ttl: 1m, algorithm: EdDSA, signing_key: k.pem}
  v: {provider: vault, address: http://127.0.0.1:8200/, token_file: /t, policies: [p]}
  vl:
    provider: vault
    address: https://vault:8200
    auth: {method: kubernetes, role: r}
    mode: lease
    path: /database/creds/ro/
    inject: {header: Authorization, value: 'Basic {basic}'}
  o: {provider: oauth2, token_url: https://a/t, client_id: c, client_secret_file: s}
  x: {provider: oauth2, token_url: https://a/t, client_id: c, grant: token_exchange, subject_credential: j}
  s: {provider: static, file: key, inject: {header: x-api-key, value: '{token}'}}
");
    let cred = |n: &str| &c.credentials[n];
    assert_eq!(cred("j").name, "j");
    assert_eq!(
        (
            cred("j").inject.header.as_str(),
            cred("j").inject.value.as_str()
        ),
        ("authorization", "Bearer {token}")
    );
    match &cred("j").provider {
        Provider::Jwt(j) => {
            assert_eq!(j.issuer, "chaperone");
            assert_eq!(j.ttl, Duration::from_secs(300));
            assert_eq!(j.algorithm, JwtAlgorithm::Es256);
            assert!(j.signing_key.is_none());
        }
        p => panic!("{p:?}"),
    }
    match &cred("j2").provider {
        Provider::Jwt(j) => {
            assert_eq!(
                (j.issuer.as_str(), j.ttl, j.algorithm),
                ("me", Duration::from_secs(60), JwtAlgorithm::EdDsa)
            );
            assert_eq!(j.signing_key, Some(PathBuf::from("/etc/chaperone/k.pem")));
        }
        p => panic!("{p:?}"),
    }
    match &cred("v").provider {
        Provider::Vault(v) => {
            assert_eq!(v.address, "http://127.0.0.1:8200");
            assert!(matches!(&v.auth, VaultAuth::TokenFile(p) if p == Path::new("/t")));
            assert!(
                matches!(&v.mode, VaultMode::Token { policies, num_uses: None } if policies == &["p"])
            );
            assert_eq!(v.ttl, Duration::from_secs(900));
        }
        p => panic!("{p:?}"),
    }
    assert_eq!(
        (
            cred("v").inject.header.as_str(),
            cred("v").inject.value.as_str()
        ),
        ("x-vault-token", "{token}")
    );
    match &cred("vl").provider {
        Provider::Vault(v) => {
            assert!(matches!(&v.mode, VaultMode::Lease { path } if path == "database/creds/ro"));
            match &v.auth {
                VaultAuth::Kubernetes {
                    mount,
                    role,
                    jwt_file,
                } => {
                    assert_eq!((mount.as_str(), role.as_str()), ("kubernetes", "r"));
                    assert_eq!(
                        jwt_file,
                        Path::new("/var/run/secrets/kubernetes.io/serviceaccount/token")
                    );
                }
                a => panic!("{a:?}"),
            }
        }
        p => panic!("{p:?}"),
    }
    assert_eq!(cred("vl").inject.header, "authorization");
    match &cred("o").provider {
        Provider::OAuth2(o) => {
            assert_eq!(o.grant, OAuth2Grant::ClientCredentials);
            assert_eq!(
                o.client_secret_file,
                Some(PathBuf::from("/etc/chaperone/s"))
            );
        }
        p => panic!("{p:?}"),
    }
    match &cred("x").provider {
        Provider::OAuth2(o) => assert_eq!(
            o.grant,
            OAuth2Grant::TokenExchange {
                subject_credential: "j".into()
            }
        ),
        p => panic!("{p:?}"),
    }
    assert_eq!(cred("s").provider.kind(), "static");
}

#[test]
fn audit_and_limits_sections() {
    let c = ok("audit: {path: '-', on_audit_failure: allow, buffer: 10}\nlimits: {max_header_bytes: 8192, max_connections: 5}\n");
    assert!(matches!(c.audit.sink, Some(AuditSink::Stdout)));
    assert_eq!(c.audit.on_failure, OnAuditFailure::Allow);
    assert_eq!(c.audit.buffer, 10);
    assert_eq!(c.limits.max_header_bytes, 8192);
    assert_eq!(c.limits.max_connections, 5);
    let c = ok("audit: {path: logs/audit.jsonl, rotate_bytes: 1000}\n");
    assert!(
        matches!(&c.audit.sink, Some(AuditSink::File(p)) if p == Path::new("/etc/chaperone/logs/audit.jsonl"))
    );
    assert_eq!(c.audit.rotate_bytes, Some(1000));
}

// ---- environment expansion ----

#[test]
fn env_vars_expand_in_string_values_only() {
    let c = ok("\
routes:
  - name: r
    prefix: /x
    upstream: https://${UPSTREAM_HOST}/v1
    labels: {note: 'costs $$5 and $${NOT_EXPANDED}'}
environment: {namespace: 'ns-${POD_NAME}'}
");
    assert_eq!(c.routes[0].upstream.authority, "orders.internal");
    assert_eq!(c.routes[0].upstream.url, "https://orders.internal/v1");
    assert_eq!(c.routes[0].labels["note"], "costs $$5 and ${NOT_EXPANDED}");
    assert_eq!(c.environment.namespace, "ns-pod-1");
}

#[test]
fn env_expansion_cannot_change_structure() {
    // A value that looks like YAML stays a plain string.
    let e = |n: &str| (n == "EVIL").then(|| "x\nlisten: 0.0.0.0:1".to_string());
    let c = from_str_with_env(
        &format!("{BASE}environment: {{node: '${{EVIL}}'}}\n"),
        src(),
        &e,
    )
    .unwrap();
    assert_eq!(c.environment.node, "x\nlisten: 0.0.0.0:1");
    assert_eq!(c.listen.to_string(), "127.0.0.1:15001");
}

#[test]
fn undefined_env_var_names_key_and_line() {
    one(
        "approvals:\n  webhook: https://${HOOK_HOST}/x\n",
        "approvals.webhook",
        9,
        "`HOOK_HOST` is not set",
    );
}

#[test]
fn env_errors_are_all_reported() {
    let e = errs("environment:\n  node: ${A}\n  pod: ${B\n");
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_eq!((e[0].key.as_str(), e[0].line), ("environment.node", 9));
    assert_eq!((e[1].key.as_str(), e[1].line), ("environment.pod", 10));
    assert!(e[1].message.contains("unterminated"));
}

#[test]
fn env_keys_are_not_expanded() {
    one("${X}: 1\n", "${X}", 8, "unknown key");
}

// ---- syntax and unknown keys ----

#[test]
fn yaml_syntax_error_has_location() {
    let e = errs_raw("tls:\n  cert: [a\npolicy: {}\n");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].key, "(document)");
    assert!(e[0].message.starts_with("invalid YAML"), "{}", e[0].message);
    assert!(e[0].line >= 2, "{e:?}");
}

#[test]
fn duplicate_keys_are_rejected() {
    let e = errs_raw(&format!("{BASE}listen: 127.0.0.1:1\nlisten: 127.0.0.1:2\n"));
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!(
        (e[0].key.as_str(), e[0].line, e[0].column),
        ("listen", 9, 1),
        "{e:#?}"
    );
    assert!(e[0].message.contains("duplicate"), "{}", e[0].message);
    let e = errs("routes:\n  - name: a\n    prefix: /a\n    upstream: http://u\n    prefix: /b\n");
    assert_eq!(
        (e[0].key.as_str(), e[0].line),
        ("routes[0].prefix", 12),
        "{e:#?}"
    );
}

#[test]
fn non_mapping_documents() {
    let e = errs_raw("- a\n- b\n");
    assert_eq!((e[0].key.as_str(), e[0].line), ("(document)", 1));
    let e = errs_raw("");
    let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["tls", "policy"], "{e:#?}");
    assert!(e[0].message.contains("missing required section"));
}

#[test]
fn unknown_top_level_key() {
    one("polcy:\n  paths: [x]\n", "polcy", 8, "unknown key `polcy`");
}

#[test]
fn unknown_keys_at_every_depth_are_all_reported() {
    let e = errs("\
sessions: {default_ttl: 1m, ttl_max: 2m}
routes:
  - name: a
    prefix: /a
    upstream: https://a
    upstream_tls: {ca: x, verify: false}
  - name: b
    prefx: /b
    upstream: http://b
credentials:
  c: {provider: jwt, audience: a, inject: {header: x, value: '{token}', extra: 1}}
  d: {provider: vault, address: http://v, auth: {method: kubernetes, role: r, path: p}, policies: [x]}
tls2: {}
");
    let got: Vec<(&str, usize)> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        got,
        [
            ("sessions.ttl_max", 8),
            ("routes[0].upstream_tls.verify", 13),
            // After the unknown key, the rest of the entry is still checked.
            ("routes[1]", 14),
            ("routes[1].prefx", 15),
            ("credentials.c.inject.extra", 18),
            ("credentials.d.auth.path", 19),
            ("tls2", 20),
        ],
        "{e:#?}"
    );
    assert!(
        e.iter()
            .filter(|e| e.key != "routes[1]")
            .all(|e| e.message.contains("unknown")),
        "{e:#?}"
    );
}

#[test]
fn wrong_types_are_located() {
    one(
        "sessions:\n  max_delegation_depth: lots\n",
        "sessions.max_delegation_depth",
        9,
        "invalid type",
    );
    one(
        "limits:\n  buffer: 1\n",
        "limits.buffer",
        9,
        "unknown field",
    );
    one(
        "audit:\n  path: '-'\n  buffer: -1\n",
        "audit.buffer",
        10,
        "invalid value",
    );
    one("routes: {a: 1}\n", "routes", 8, "must be a list");
    one("credentials: [a]\n", "credentials", 8, "must be a mapping");
}

// ---- durations ----

#[test]
fn bad_duration_is_located() {
    one(
        "sessions:\n  default_ttl: 5m\n  max_ttl: 1 hour\n",
        "sessions.max_ttl",
        10,
        "invalid duration \"1 hour\"",
    );
    one("policy2: 1\n", "policy2", 8, "unknown key");
    one(
        "approvals:\n  timeout: 30\n",
        "approvals.timeout",
        9,
        "a duration string",
    );
}

#[test]
fn zero_duration_rejected() {
    one(
        "approvals:\n  timeout: 0s\n",
        "approvals.timeout",
        9,
        "greater than zero",
    );
}

#[test]
fn default_ttl_must_not_exceed_max_ttl() {
    one(
        "sessions:\n  default_ttl: 2h\n",
        "sessions.default_ttl",
        9,
        "must not exceed max_ttl",
    );
    one(
        "sessions:\n  max_ttl: 10m\n",
        "sessions.max_ttl",
        9,
        "must not exceed max_ttl",
    );
    ok("sessions: {default_ttl: 1h, max_ttl: 1h}\n");
}

// ---- addresses ----

#[test]
fn socket_addresses() {
    one(
        "listen: localhost:15001\n",
        "listen",
        8,
        "invalid socket address",
    );
    one("admin: 127.0.0.1\n", "admin", 8, "invalid socket address");
    one(
        "listen: 127.0.0.1:7000\nadmin: 127.0.0.1:7000\n",
        "admin",
        9,
        "same as listen",
    );
    let c = ok("listen: '[::1]:0'\nadmin: 0.0.0.0:0\n");
    assert_eq!(c.listen.to_string(), "[::1]:0");
}

// ---- tls & identities ----

#[test]
fn trust_domains() {
    let yaml = BASE.replace("[td.example]", "[td.example, Prod.Example, td.example]");
    let e = errs_raw(&yaml);
    let got: Vec<(&str, usize)> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        got,
        [("tls.trust_domains[1]", 5), ("tls.trust_domains[2]", 5)],
        "{e:#?}"
    );
    assert!(e[0].message.contains("lowercase"));
    assert!(e[1].message.contains("duplicate"));
    let e = errs_raw(&BASE.replace("[td.example]", "[]"));
    assert_eq!((e[0].key.as_str(), e[0].line), ("tls.trust_domains", 5));
}

#[test]
fn missing_tls_field() {
    let e = errs_raw(&BASE.replace("  bundle: b.pem\n", ""));
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].key.as_str(), e[0].line), ("tls", 1));
    assert!(e[0].message.contains("missing field `bundle`"));
}

#[test]
fn identity_patterns() {
    let c = ok("identities:\n  - match: spiffe://td.example/ns/*/sa/bot\n    attributes: {kind: support}\n");
    assert_eq!(c.identities[0].pattern, "spiffe://td.example/ns/*/sa/bot");
    assert_eq!(c.identities[0].attributes["kind"], "support");
    let e = errs(
        "\
identities:
  - match: https://td.example/x
  - match: spiffe://td.example/ns/sa*
  - match: spiffe://other.example/x
  - match: spiffe://td.example/ok
  - match: spiffe://td.example/ok
  - {match: 'spiffe://td.example/a/'}
",
    );
    let got: Vec<(&str, usize)> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        got,
        [
            ("identities[0].match", 9),
            ("identities[1].match", 10),
            ("identities[2].match", 11),
            ("identities[4].match", 13),
            ("identities[5].match", 14),
        ],
        "{e:#?}"
    );
    assert!(e[1].message.contains("whole path segment"));
    assert!(e[2].message.contains("not listed in tls.trust_domains"));
    assert!(e[3].message.contains("duplicate"));
}

// ---- routes ----

const R: &str = "routes:\n  - name: r\n    upstream: http://u\n";

#[test]
fn prefix_and_host_exactly_one() {
    one(R, "routes[0]", 9, "exactly one of `prefix` or `host`");
    one(
        &format!("{R}    prefix: /a\n    host: h\n"),
        "routes[0]",
        9,
        "not both",
    );
}

#[test]
fn non_canonical_prefixes() {
    for (p, needle) in [
        ("a", "start with '/'"),
        ("/a/", "must not end with '/'"),
        ("/a//b", "'//'"),
        ("/a/../b", "dot"),
        ("/a/./b", "'.' or '..'"),
        ("/a%2F", "'%'"),
        ("/a;x", "';'"),
        ("'/a?x'", "'?'"),
        ("'/a#x'", "'#'"),
        ("'/a\\b'", "'\\\\'"),
    ] {
        let needle = if needle == "dot" {
            "'.' or '..'"
        } else {
            needle
        };
        one(
            &format!("{R}    prefix: {p}\n"),
            "routes[0].prefix",
            11,
            needle,
        );
    }
}

#[test]
fn route_names_and_matchers_unique() {
    let e = errs(
        "\
routes:
  - {name: a, prefix: /a, upstream: http://u}
  - {name: a, prefix: /b, upstream: http://u}
  - {name: c, prefix: /a, upstream: http://u}
  - {name: d, host: H.example, upstream: http://u}
  - {name: e, host: h.example, upstream: http://u}
  - {name: 'bad name', prefix: /z, upstream: http://u}
  - {name: g, host: 'h.example:80', upstream: http://u}
",
    );
    let got: Vec<(&str, usize)> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        got,
        [
            ("routes[1].name", 10),
            ("routes[2].prefix", 11),
            ("routes[4].host", 13),
            ("routes[5].name", 14),
            ("routes[6].host", 15),
        ],
        "{e:#?}"
    );
    assert!(e[0].message.contains("duplicate route name"));
    assert!(e[1].message.contains("already used by route \"a\""));
    assert!(e[2].message.contains("already used by route \"d\""));
    assert!(e[4].message.contains("port"));
}

#[test]
fn upstream_urls() {
    for bad in [
        "orders.internal",
        "ftp://x",
        "https://user:pw@x",
        "https://x/a?b=1",
        "https://x:0",
        "https:///x",
    ] {
        one(
            &format!("routes:\n  - name: r\n    prefix: /a\n    upstream: '{bad}'\n"),
            "routes[0].upstream",
            11,
            "",
        );
    }
    one(
        "routes:\n  - name: r\n    prefix: /a\n    upstream: http://x\n    upstream_tls: {ca: c.pem}\n",
        "routes[0].upstream_tls",
        12,
        "only to https",
    );
}

#[test]
fn route_protocol_and_upgrades() {
    one(
        &format!("{R}    prefix: /a\n    protocol: grpc\n"),
        "routes[0].protocol",
        12,
        "unknown variant `grpc`",
    );
    one(
        &format!("{R}    prefix: /a\n    allow_upgrades: [websocket, h2c]\n"),
        "routes[0].allow_upgrades[1]",
        12,
        "h2c",
    );
}

#[test]
fn credential_references() {
    let e = errs("\
routes:
  - {name: a, prefix: /a, upstream: http://u, credential: nope}
  - {name: b, prefix: /b, upstream: http://u, credential: broken}
credentials:
  broken: {provider: jwt}
  x1: {provider: oauth2, token_url: https://t, client_id: c, grant: token_exchange, subject_credential: s}
  x2: {provider: oauth2, token_url: https://t, client_id: c, grant: token_exchange, subject_credential: x1}
  x3: {provider: oauth2, token_url: https://t, client_id: c, grant: token_exchange}
");
    let got: Vec<(&str, usize)> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        got,
        [
            ("routes[0].credential", 9),
            ("credentials.broken", 12),
            ("credentials.x1.subject_credential", 13),
            ("credentials.x2.subject_credential", 14),
            ("credentials.x3", 15),
        ],
        "{e:#?}"
    );
    assert!(e[0].message.contains("unknown credential \"nope\""));
    assert!(e[1].message.contains("missing field `audience`"));
    assert!(e[2].message.contains("unknown credential \"s\""));
    assert!(e[3].message.contains("is a oauth2 credential"));
    assert!(e[4].message.contains("needs `subject_credential`"));
}

// ---- credentials ----

#[test]
fn provider_errors() {
    one(
        "credentials:\n  c: {provider: ldap}\n",
        "credentials.c.provider",
        9,
        "unknown provider \"ldap\"",
    );
    one(
        "credentials:\n  c: {audience: a}\n",
        "credentials.c",
        9,
        "missing `provider`",
    );
    one(
        "credentials:\n  c: token\n",
        "credentials.c",
        9,
        "must be a mapping",
    );
    one(
        "credentials:\n  'a b': {provider: jwt, audience: a}\n",
        "credentials.a b",
        9,
        "invalid name",
    );
    one(
        "credentials:\n  c: {provider: jwt, audience: a, algorithm: RS256}\n",
        "credentials.c.algorithm",
        9,
        "unknown variant",
    );
}

#[test]
fn inject_checks() {
    let c = |inj: &str| {
        format!("credentials:\n  c:\n    provider: jwt\n    audience: a\n    inject: {inj}\n")
    };
    one(
        &c("{header: 'x y', value: '{token}'}"),
        "credentials.c.inject.header",
        12,
        "HTTP token",
    );
    one(
        &c("{header: Host, value: '{token}'}"),
        "credentials.c.inject.header",
        12,
        "cannot carry a credential",
    );
    one(
        &c("{header: x-k, value: 'Bearer'}"),
        "credentials.c.inject.value",
        12,
        "must contain {token}",
    );
    one(
        &c("{header: x-k, value: '{secret}'}"),
        "credentials.c.inject.value",
        12,
        "unknown placeholder {secret}",
    );
    one(
        &c("{header: x-k, value: 'Basic {basic}'}"),
        "credentials.c.inject.value",
        12,
        "only available for vault lease",
    );
    one(
        &c("{header: x-k}"),
        "credentials.c.inject",
        12,
        "missing field `value`",
    );
    one(
        "credentials:\n  s: {provider: static, file: f}\n",
        "credentials.s",
        9,
        "missing field `inject`",
    );
}

#[test]
fn vault_checks() {
    let v = |body: &str| {
        format!(
            "credentials:\n  v:\n    provider: vault\n    address: http://127.0.0.1:8200\n{body}"
        )
    };
    one(
        &v("    policies: [p]\n"),
        "credentials.v",
        9,
        "`token_file` or `auth",
    );
    one(
        &v("    token_file: t\n    auth: {method: kubernetes, role: r}\n    policies: [p]\n"),
        "credentials.v",
        9,
        "not both",
    );
    one(
        &v("    token_file: t\n"),
        "credentials.v.policies",
        9,
        "non-empty `policies`",
    );
    one(
        &v("    token_file: t\n    policies: [root]\n"),
        "credentials.v.policies[0]",
        13,
        "root policy",
    );
    one(
        &v("    token_file: t\n    policies: [p]\n    num_uses: 0\n"),
        "credentials.v.num_uses",
        14,
        "at least 1",
    );
    one(
        &v("    token_file: t\n    policies: [p]\n    path: a/b\n"),
        "credentials.v.path",
        14,
        "only to `mode: lease`",
    );
    one(
        &v("    auth: {method: approle, role: r}\n    policies: [p]\n"),
        "credentials.v.auth.method",
        12,
        "unsupported auth method",
    );
    one(
        &v("    auth: {method: kubernetes}\n    policies: [p]\n"),
        "credentials.v.auth.role",
        12,
        "required",
    );
    one(
        &v("    token_file: t\n    mode: lease\n    inject: {header: x, value: '{token}'}\n"),
        "credentials.v",
        9,
        "needs `path`",
    );
    one(
        &v("    token_file: t\n    mode: lease\n    path: db/creds/r\n"),
        "credentials.v.inject",
        9,
        "required",
    );
    one(&v("    token_file: t\n    mode: lease\n    path: db/../r\n    inject: {header: x, value: '{username}'}\n"), "credentials.v.path", 14, "invalid secret path");
    one(&v("    token_file: t\n    mode: lease\n    path: a\n    policies: [p]\n    inject: {header: x, value: '{token}'}\n"), "credentials.v.policies", 15, "only to `mode: token`");
    one(
        &v("    token_file: t\n    mode: both\n"),
        "credentials.v.mode",
        13,
        "unknown variant `both`",
    );
    one("credentials:\n  v: {provider: vault, address: 'vault:8200', token_file: t, policies: [p]}\n", "credentials.v.address", 9, "absolute URL");
}

#[test]
fn oauth2_checks() {
    one(
        "credentials:\n  o: {provider: oauth2, token_url: https://t, client_id: c}\n",
        "credentials.o",
        9,
        "needs `client_secret_file`",
    );
    one("credentials:\n  o: {provider: oauth2, token_url: 't', client_id: c, client_secret_file: s}\n", "credentials.o.token_url", 9, "absolute URL");
    one(
        "credentials:\n  o:\n    provider: oauth2\n    token_url: https://t\n    client_id: c\n    client_secret_file: s\n    revocation_url: 'ftp://r'\n",
        "credentials.o.revocation_url",
        14,
        "unsupported URL scheme",
    );
    one(
        "credentials:\n  j: {provider: jwt, audience: a}\n  o: {provider: oauth2, token_url: https://t, client_id: c, client_secret_file: s, subject_credential: j}\n",
        "credentials.o.subject_credential",
        10,
        "only to `grant: token_exchange`",
    );
    one("credentials:\n  o: {provider: oauth2, token_url: https://t, client_id: '', client_secret_file: s}\n", "credentials.o.client_id", 9, "must not be empty");
}

// ---- policy, audit, limits, approvals ----

#[test]
fn policy_checks() {
    let e = errs_raw(&BASE.replace("[policies]", "[]"));
    assert_eq!((e[0].key.as_str(), e[0].line), ("policy.paths", 7));
    let e = errs_raw(&BASE.replace("[policies]", "[policies, '']"));
    assert_eq!(
        (e[0].key.as_str(), e[0].line, e[0].message.as_str()),
        ("policy.paths[1]", 7, "path must not be empty")
    );
    one(
        "policy:\n  paths: [x]\n",
        "policy",
        8,
        "duplicate key `policy`",
    );
}

#[test]
fn audit_checks() {
    one(
        "audit:\n  path: '-'\n  rotate_bytes: 10\n",
        "audit.rotate_bytes",
        10,
        "cannot be rotated",
    );
    one(
        "audit:\n  path: a\n  rotate_bytes: 0\n",
        "audit.rotate_bytes",
        10,
        "greater than zero",
    );
    one(
        "audit:\n  path: a\n  buffer: 0\n",
        "audit.buffer",
        10,
        "greater than zero",
    );
    one(
        "audit:\n  path: a\n  on_audit_failure: ignore\n",
        "audit.on_audit_failure",
        10,
        "unknown variant `ignore`",
    );
    one(
        "audit:\n  on_audit_failure: deny\n",
        "audit",
        8,
        "missing field `path`",
    );
}

#[test]
fn limits_and_approvals_checks() {
    one(
        "limits:\n  max_header_bytes: 1024\n",
        "limits.max_header_bytes",
        9,
        "at least 8192",
    );
    one(
        "limits:\n  max_connections: 0\n",
        "limits.max_connections",
        9,
        "greater than zero",
    );
    one(
        "limits:\n  idle_timeout: 0ms\n",
        "limits.idle_timeout",
        9,
        "greater than zero",
    );
    one(
        "approvals:\n  webhook: 'hooks.example.org'\n",
        "approvals.webhook",
        9,
        "absolute URL",
    );
}

// ---- error collection and formatting ----

#[test]
fn all_errors_are_collected_and_sorted() {
    let e = errs(
        "\
listen: nope
sessions: {default_ttl: x}
routes:
  - {name: a, prefix: a, upstream: u}
audit: {path: '-', buffer: 0}
",
    );
    let got: Vec<(&str, usize)> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        got,
        [
            ("listen", 8),
            ("sessions.default_ttl", 9),
            ("routes[0].prefix", 11),
            ("routes[0].upstream", 11),
            ("audit.buffer", 12),
        ],
        "{e:#?}"
    );
    // Same line: ordered by column.
    assert!(e[2].column < e[3].column);
}

#[test]
fn display_format_is_file_line_col_key_message() {
    let err = from_str_with_env(
        &format!("{BASE}listen: nope\n"),
        Path::new("conf/c.yaml"),
        &env,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "conf/c.yaml:8:1: listen: invalid socket address \"nope\" (expected IP:PORT, e.g. 127.0.0.1:15001)"
    );
    let two = from_str_with_env(
        &format!("{BASE}listen: nope\nadmin: nope\n"),
        Path::new("c.yaml"),
        &env,
    )
    .unwrap_err();
    assert_eq!(two.to_string().lines().count(), 2);
}

#[test]
fn columns_point_into_flow_mappings() {
    let e = errs("credentials:\n  c: {provider: jwt, audience: a, ttl: 5x}\n");
    assert_eq!(
        (e[0].key.as_str(), e[0].line, e[0].column),
        ("credentials.c.ttl", 9, 35)
    );
}

// ---- load() ----

#[test]
fn load_reads_files_and_resolves_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chaperone.yaml");
    std::fs::write(&file, BASE).unwrap();
    let c = load(&file).unwrap();
    assert_eq!(c.source, file);
    assert_eq!(c.tls.cert, dir.path().join("c.pem"));
    assert_eq!(c.policy.paths, vec![dir.path().join("policies")]);

    let missing = dir.path().join("missing.yaml");
    let e = load(&missing).unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert!(e.0[0].message.contains("cannot read config"), "{e}");
    assert_eq!(e.0[0].file, missing);

    std::fs::write(&file, [0xff, 0xfe, b'\n']).unwrap();
    assert!(load(&file).is_err());
}

#[test]
fn from_str_uses_the_process_environment() {
    // PATH is set in every test environment; a name nobody sets is not.
    let c = from_str(
        &format!("{BASE}environment: {{node: '${{PATH}}'}}\n"),
        src(),
    )
    .unwrap();
    assert!(!c.environment.node.is_empty());
    let e = from_str(
        &format!("{BASE}environment: {{node: '${{CHAPERONE_TEST_UNSET_9F2C}}'}}\n"),
        src(),
    )
    .unwrap_err();
    assert_eq!(e.0[0].key, "environment.node");
}

#[test]
fn several_serde_errors_in_one_section_are_all_reported() {
    let e = errs(
        "\
tls2: 1
routes:
  - name: a
    prefix: /a/
    upstream: http://u
    timeout: 30
    colour: red
    credential: [x]
",
    );
    let got: Vec<(&str, usize)> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        got,
        [
            ("tls2", 8),
            ("routes[0].timeout", 13),
            ("routes[0].colour", 14),
            ("routes[0].credential", 15)
        ],
        "{e:#?}"
    );
    // A bad value of a required key is reported once, not again as "missing".
    let e = errs("routes:\n  - name: a\n    prefix: /a\n    upstream: 5\n    oops: 1\n");
    let got: Vec<(&str, usize)> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        got,
        [("routes[0].upstream", 11), ("routes[0].oops", 12)],
        "{e:#?}"
    );
}
