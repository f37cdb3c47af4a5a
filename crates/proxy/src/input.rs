//! The policy input document (SPEC §5), built directly as `regorus::Value`s: no JSON
//! text round trip per call. Parts that do not change per call (identity, route,
//! environment node/pod) are built once and shared (regorus values are Arc-backed,
//! so cloning them is a reference-count bump).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use chaperone_config::{Environment, Route};
use regorus::Value;

/// An object key of the input document, turned into a policy value once: cloning a
/// value is a reference-count bump, where `Value::from("method")` allocates, and a call's
/// input has ~40 keys.
pub struct Key {
    text: &'static str,
    value: OnceLock<Value>,
}

impl Key {
    pub const fn new(text: &'static str) -> Key {
        Key {
            text,
            value: OnceLock::new(),
        }
    }

    pub fn value(&self) -> Value {
        self.value.get_or_init(|| Value::from(self.text)).clone()
    }
}

/// The keys of the input document (SPEC §5).
pub mod keys {
    use super::Key;

    macro_rules! keys {
        ($($name:ident = $text:literal),* $(,)?) => {
            $(pub static $name: Key = Key::new($text);)*
            #[cfg(test)]
            pub(crate) const ALL: &[(&Key, &str)] = &[$((&$name, $text)),*];
        };
    }

    keys! {
        ARGUMENTS = "arguments", ATTRIBUTES = "attributes", BODY_BYTES = "body_bytes",
        CLIENT_INFO = "client_info", CREATED_AT = "created_at",
        DATA_DOMAINS = "data_domains", DELEGATION_CHAIN = "delegation_chain",
        DENIED = "denied", ENVIRONMENT = "environment", EXPIRES_AT = "expires_at",
        HEADERS = "headers", HOST = "host", ID = "id", IDENTITY = "identity",
        INTENT = "intent", LABELS = "labels", MCP = "mcp", METHOD = "method",
        NAME = "name", NAMESPACE = "namespace", NODE = "node", PATH = "path", POD = "pod",
        PROTOCOL = "protocol", QUERY = "query", REQUEST = "request", REQUESTS = "requests",
        REQUESTS_LAST_MINUTE = "requests_last_minute", ROUTE = "route",
        ROUTE_PATH = "route_path", ROUTES = "routes", SCOPES = "scopes",
        SEGMENTS = "segments", SESSION = "session", SPIFFE_ID = "spiffe_id",
        STATS = "stats", TASK = "task", TIME = "time", TOOL = "tool",
        TRUST_DOMAIN = "trust_domain", UPSTREAM = "upstream",
    }
}

/// `input.request.method`: the standard methods as values built once, others per call.
pub fn method_value(m: &http::Method) -> Value {
    static STANDARD: [Key; 9] = [
        Key::new("GET"),
        Key::new("POST"),
        Key::new("PUT"),
        Key::new("DELETE"),
        Key::new("HEAD"),
        Key::new("OPTIONS"),
        Key::new("PATCH"),
        Key::new("TRACE"),
        Key::new("CONNECT"),
    ];
    match STANDARD.iter().find(|k| k.text == m.as_str()) {
        Some(k) => k.value(),
        None => Value::from(m.as_str()),
    }
}

/// Build an object value from input-document keys.
pub fn obj<const N: usize>(fields: [(&Key, Value); N]) -> Value {
    let mut m = BTreeMap::new();
    for (k, v) in fields {
        m.insert(k.value(), v);
    }
    Value::from(m)
}

pub fn str_array<'a>(items: impl IntoIterator<Item = &'a str>) -> Value {
    Value::from(items.into_iter().map(Value::from).collect::<Vec<_>>())
}

pub fn json(v: serde_json::Value) -> Value {
    Value::from(v)
}

/// The fields of `input.session` that never change for a session, as policy values.
struct SessionStatic {
    id: Value,
    task: Value,
    intent: Value,
    scopes: Value,
    created_at: Value,
    expires_at: Value,
    delegation_chain: Value,
}

/// `input.session` for a live session: equal to `json(s.policy_view(now))`, but the
/// fixed fields are converted once per session (kept in `Session::derived`) and only
/// `stats` is built per call.
pub fn session_value(s: &chaperone_sessions::Session, now: std::time::SystemTime) -> Value {
    let cached = s.derived.get_or_init(|| {
        std::sync::Arc::new(SessionStatic {
            id: Value::from(s.id.as_str()),
            task: Value::from(s.task.as_str()),
            intent: json(s.intent.clone()),
            scopes: str_array(s.scopes.iter().map(String::as_str)),
            created_at: Value::from(chaperone_sessions::rfc3339(s.created_at)),
            expires_at: Value::from(chaperone_sessions::rfc3339(s.expires_at)),
            delegation_chain: str_array(s.delegation_chain.iter().map(String::as_str)),
        })
    });
    let Some(st) = cached.downcast_ref::<SessionStatic>() else {
        // Another consumer's type in the slot: build the view the slow way.
        return json(s.policy_view(now));
    };
    let stats = s.stats(now);
    let mut routes = BTreeMap::new();
    for (k, v) in &stats.routes {
        routes.insert(Value::from(k.as_str()), Value::from(*v));
    }
    obj([
        (&keys::ID, st.id.clone()),
        (&keys::TASK, st.task.clone()),
        (&keys::INTENT, st.intent.clone()),
        (&keys::SCOPES, st.scopes.clone()),
        (&keys::CREATED_AT, st.created_at.clone()),
        (&keys::EXPIRES_AT, st.expires_at.clone()),
        (&keys::DELEGATION_CHAIN, st.delegation_chain.clone()),
        (
            &keys::STATS,
            obj([
                (&keys::REQUESTS, Value::from(stats.requests)),
                (&keys::DENIED, Value::from(stats.denied)),
                (&keys::ROUTES, Value::from(routes)),
                (
                    &keys::DATA_DOMAINS,
                    str_array(stats.data_domains.iter().map(String::as_str)),
                ),
                (
                    &keys::REQUESTS_LAST_MINUTE,
                    Value::from(stats.requests_last_minute),
                ),
            ]),
        ),
    ])
}

/// `input.route`.
pub fn route_value(r: &Route) -> Value {
    obj([
        (&keys::NAME, Value::from(r.name.as_str())),
        (&keys::UPSTREAM, Value::from(r.upstream.url.as_str())),
        (
            &keys::PROTOCOL,
            Value::from(match r.protocol {
                chaperone_config::Protocol::Http => "http",
                chaperone_config::Protocol::Mcp => "mcp",
            }),
        ),
        (
            &keys::LABELS,
            json(serde_json::Value::Object(r.labels.clone())),
        ),
    ])
}

/// `input.identity`.
pub fn identity_value(
    spiffe_id: &str,
    trust_domain: &str,
    path: &str,
    attributes: &chaperone_config::JsonMap,
) -> Value {
    obj([
        (&keys::SPIFFE_ID, Value::from(spiffe_id)),
        (&keys::TRUST_DOMAIN, Value::from(trust_domain)),
        (&keys::PATH, Value::from(path)),
        (
            &keys::ATTRIBUTES,
            json(serde_json::Value::Object(attributes.clone())),
        ),
    ])
}

/// `input.environment` for the current time.
pub fn environment_value(env: &Environment, now_rfc3339: &str) -> Value {
    obj([
        (&keys::TIME, Value::from(now_rfc3339)),
        (&keys::NODE, Value::from(env.node.as_str())),
        (&keys::NAMESPACE, Value::from(env.namespace.as_str())),
        (&keys::POD, Value::from(env.pod.as_str())),
    ])
}

/// Parse a query string into `{"k": ["v", ...]}`.
pub fn query_value(q: Option<&str>) -> Value {
    let mut m: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    if let Some(q) = q {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            m.entry(k.into_owned())
                .or_default()
                .push(Value::from(v.as_ref()));
        }
    }
    let mut out = BTreeMap::new();
    for (k, v) in m {
        out.insert(Value::from(k), Value::from(v));
    }
    Value::from(out)
}

/// The whole call input.
pub struct CallInput {
    pub identity: Value,
    pub session: Value,
    pub request: Value,
    pub route: Value,
    pub environment: Value,
}

impl CallInput {
    pub fn into_value(self) -> Value {
        obj([
            (&keys::IDENTITY, self.identity),
            (&keys::SESSION, self.session),
            (&keys::REQUEST, self.request),
            (&keys::ROUTE, self.route),
            (&keys::ENVIRONMENT, self.environment),
        ])
    }
}

pub fn rfc3339(t: std::time::SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    dt.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chaperone_sessions::{InMemorySessionStore, NewSession, SessionStore};
    use std::time::{Duration, SystemTime};

    /// Every key's value is its text (a typo in the table would rename an input field).
    #[test]
    fn keys_are_their_text() {
        for (k, text) in keys::ALL {
            assert_eq!(k.value(), Value::from(*text));
            assert_eq!(
                k.value().as_string().map(|s| s.to_string()).ok().as_deref(),
                Some(*text)
            );
        }
    }

    #[test]
    fn methods_are_their_text() {
        for m in [
            "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT", "PURGE",
        ] {
            let method = http::Method::from_bytes(m.as_bytes()).unwrap();
            assert_eq!(method_value(&method), Value::from(m));
        }
    }

    /// The cached per-session input equals the policy view converted from JSON, before
    /// and after calls change the stats, and for every call after the first.
    #[test]
    fn session_value_equals_the_policy_view() {
        let store = InMemorySessionStore::new();
        let (s, _) = store
            .create(NewSession {
                spiffe_id: "spiffe://t/ns/a/sa/b".into(),
                task: "refund \"order\" 1".into(),
                intent: serde_json::json!({"summary": "x", "tools": ["a", {"n": 1}]}),
                scopes: vec!["b:read".into(), "a:write".into()],
                ttl: Duration::from_secs(60),
                parent: None,
            })
            .unwrap();
        let now = SystemTime::now();
        assert_eq!(session_value(&s, now), json(s.policy_view(now)));
        store.record_call(&s, "orders", Some("billing"), true, now);
        store.record_call(&s, "kb", None, false, now);
        let later = now + Duration::from_secs(2);
        assert_eq!(session_value(&s, later), json(s.policy_view(later)));
        assert_eq!(session_value(&s, later), session_value(&s, later));
    }
}
