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

/// The keys of one object of the input document, in the order its values are given, and
/// the order in which to insert them. Use it through [`policy_object!`](crate::policy_object).
///
/// Why the order: regorus builds an object in a `BTreeMap` (then copies it into its
/// compact sorted form), and a B-tree leaf finds an insert position by comparing the new
/// key with the stored ones from the smallest up. Inserting the keys largest first makes
/// every insert one comparison, where the given order took about N²/4 (a key comparison
/// is ~70 instructions; ~30 keys per call).
pub struct Shape<const N: usize> {
    keys: [&'static Key; N],
    descending: OnceLock<[usize; N]>,
}

impl<const N: usize> Shape<N> {
    pub const fn new(keys: [&'static Key; N]) -> Shape<N> {
        Shape {
            keys,
            descending: OnceLock::new(),
        }
    }

    /// The object with `values[i]` under `keys[i]`: equal to inserting the pairs into a
    /// map in the given order (a repeated key keeps its last value).
    pub fn build(&self, values: [Value; N]) -> Value {
        let order = self.descending.get_or_init(|| {
            let mut order: [usize; N] = std::array::from_fn(|i| i);
            // Stable: of two equal keys the later one is still inserted last.
            order.sort_by(|&a, &b| self.keys[b].text.cmp(self.keys[a].text));
            order
        });
        let mut values = values.map(Some);
        let mut map = BTreeMap::new();
        for &i in order {
            if let (Some(key), Some(value)) = (self.keys.get(i), values.get_mut(i)) {
                map.insert(key.value(), value.take().unwrap_or(Value::Null));
            }
        }
        Value::from(map)
    }
}

/// `template` (an object) with `key` set to `value`: for objects whose other fields are
/// built once. Copies the template's entries (reference-count bumps) and replaces one.
fn with_field(template: &Value, key: &Key, value: Value) -> Value {
    let mut out = template.clone();
    if let Ok(object) = out.as_object_mut() {
        object.insert(key.value(), value);
    }
    out
}

/// An input-document object from `KEY => value` pairs (the names of [`keys`]), its keys
/// inserted in the cheap order worked out once per call site ([`Shape`]):
///
/// ```ignore
/// policy_object! { METHOD => method, PATH => path }
/// ```
#[macro_export]
macro_rules! policy_object {
    ($($key:ident => $value:expr),+ $(,)?) => {{
        static SHAPE: $crate::input::Shape<{ [$(stringify!($key)),+].len() }> =
            $crate::input::Shape::new([$(&$crate::input::keys::$key),+]);
        SHAPE.build([$($value),+])
    }};
}

/// An object from key-value pairs, the general way (a later pair wins over an earlier
/// one with the same key).
fn pairs_to_object(pairs: impl IntoIterator<Item = (Value, Value)>) -> Value {
    Value::from(pairs.into_iter().collect::<BTreeMap<_, _>>())
}

/// `{}`, built once: an empty query, a session's routes before its first call, the
/// arguments of the tools/list filter's synthetic calls.
pub(crate) fn empty_object() -> Value {
    static EMPTY: OnceLock<Value> = OnceLock::new();
    EMPTY
        .get_or_init(|| Value::from(BTreeMap::<Value, Value>::new()))
        .clone()
}

/// `[]`, built once: no data domains yet, no delegation, no segments.
fn empty_array() -> Value {
    static EMPTY: OnceLock<Value> = OnceLock::new();
    EMPTY.get_or_init(|| Value::from(Vec::new())).clone()
}

pub fn str_array<'a>(items: impl IntoIterator<Item = &'a str>) -> Value {
    let items: Vec<Value> = items.into_iter().map(Value::from).collect();
    if items.is_empty() {
        return empty_array();
    }
    Value::from(items)
}

pub fn json(v: serde_json::Value) -> Value {
    Value::from(v)
}

/// `input.session` without `stats` (which is `null` here): the fields that never change
/// for a session, converted once (kept in `Session::derived`).
struct SessionStatic(Value);

/// `input.session` for a live session: equal to `json(s.policy_view(now))`, but only
/// `stats` is built per call, into a copy of the session's fixed part.
pub fn session_value(s: &chaperone_sessions::Session, now: std::time::SystemTime) -> Value {
    let cached = s.derived.get_or_init(|| {
        std::sync::Arc::new(SessionStatic(policy_object! {
            ID => Value::from(s.id.as_str()),
            TASK => Value::from(s.task.as_str()),
            INTENT => json(s.intent.clone()),
            SCOPES => str_array(s.scopes.iter().map(String::as_str)),
            CREATED_AT => Value::from(chaperone_sessions::rfc3339(s.created_at)),
            EXPIRES_AT => Value::from(chaperone_sessions::rfc3339(s.expires_at)),
            DELEGATION_CHAIN => str_array(s.delegation_chain.iter().map(String::as_str)),
            STATS => Value::Null,
        }))
    });
    let Some(SessionStatic(fixed)) = cached.downcast_ref::<SessionStatic>() else {
        // Another consumer's type in the slot: build the view the slow way.
        return json(s.policy_view(now));
    };
    let stats = s.stats(now);
    let routes = if stats.routes.is_empty() {
        empty_object()
    } else {
        pairs_to_object(
            stats
                .routes
                .iter()
                .map(|(k, v)| (Value::from(k.as_str()), Value::from(*v))),
        )
    };
    let stats = policy_object! {
        REQUESTS => Value::from(stats.requests),
        DENIED => Value::from(stats.denied),
        ROUTES => routes,
        DATA_DOMAINS => str_array(stats.data_domains.iter().map(String::as_str)),
        REQUESTS_LAST_MINUTE => Value::from(stats.requests_last_minute),
    };
    with_field(fixed, &keys::STATS, stats)
}

/// `input.route`.
pub fn route_value(r: &Route) -> Value {
    policy_object! {
        NAME => Value::from(r.name.as_str()),
        UPSTREAM => Value::from(r.upstream.url.as_str()),
        PROTOCOL => Value::from(match r.protocol {
            chaperone_config::Protocol::Http => "http",
            chaperone_config::Protocol::Mcp => "mcp",
        }),
        LABELS => json(serde_json::Value::Object(r.labels.clone())),
    }
}

/// `input.identity`.
pub fn identity_value(
    spiffe_id: &str,
    trust_domain: &str,
    path: &str,
    attributes: &chaperone_config::JsonMap,
) -> Value {
    policy_object! {
        SPIFFE_ID => Value::from(spiffe_id),
        TRUST_DOMAIN => Value::from(trust_domain),
        PATH => Value::from(path),
        ATTRIBUTES => json(serde_json::Value::Object(attributes.clone())),
    }
}

/// `input.environment` for the current time.
pub fn environment_value(env: &Environment, now_rfc3339: &str) -> Value {
    EnvironmentValues::new(env).at(now_rfc3339)
}

/// `input.environment` but the time (`null` here), built once per config load (kept in
/// the sidecar's routing state).
pub struct EnvironmentValues(Value);

impl EnvironmentValues {
    pub fn new(env: &Environment) -> EnvironmentValues {
        EnvironmentValues(policy_object! {
            TIME => Value::Null,
            NODE => Value::from(env.node.as_str()),
            NAMESPACE => Value::from(env.namespace.as_str()),
            POD => Value::from(env.pod.as_str()),
        })
    }

    /// `input.environment` at `now_rfc3339`.
    pub fn at(&self, now_rfc3339: &str) -> Value {
        with_field(&self.0, &keys::TIME, Value::from(now_rfc3339))
    }
}

/// Parse a query string into `{"k": ["v", ...]}`.
pub fn query_value(q: Option<&str>) -> Value {
    let Some(q) = q.filter(|q| !q.is_empty()) else {
        return empty_object();
    };
    let mut m: BTreeMap<std::borrow::Cow<'_, str>, Vec<Value>> = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        m.entry(k).or_default().push(Value::from(v.as_ref()));
    }
    pairs_to_object(
        m.into_iter()
            .map(|(k, v)| (Value::from(k.as_ref()), Value::from(v))),
    )
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
        policy_object! {
            IDENTITY => self.identity,
            SESSION => self.session,
            REQUEST => self.request,
            ROUTE => self.route,
            ENVIRONMENT => self.environment,
        }
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

    /// A shape's object equals the map built pair by pair in the given order: same
    /// entries, a repeated key keeping its last value; the next call is independent.
    #[test]
    fn shapes_build_what_a_map_would() {
        static THREE: Shape<3> = Shape::new([&keys::TASK, &keys::ID, &keys::SCOPES]);
        static REPEATED: Shape<3> = Shape::new([&keys::ID, &keys::TASK, &keys::ID]);
        let map = |pairs: &[(&str, Value)]| {
            pairs_to_object(pairs.iter().map(|(k, v)| (Value::from(*k), v.clone())))
        };
        let a = THREE.build([Value::from("t"), Value::from(1u64), Value::Null]);
        assert_eq!(
            a,
            map(&[
                ("task", "t".into()),
                ("id", 1u64.into()),
                ("scopes", Value::Null)
            ])
        );
        let b = THREE.build([Value::from("u"), Value::from(2u64), str_array(["x"])]);
        assert_eq!(
            b,
            map(&[
                ("task", "u".into()),
                ("id", 2u64.into()),
                ("scopes", str_array(["x"]))
            ])
        );
        assert_ne!(a, b);
        let r = REPEATED.build([Value::from(1u64), Value::from("t"), Value::from(3u64)]);
        assert_eq!(r, map(&[("id", 3u64.into()), ("task", "t".into())]));
        // Through the macro, as the input builders use it.
        let m = policy_object! { NAME => Value::from("kb"), LABELS => empty_object() };
        assert_eq!(m, map(&[("name", "kb".into()), ("labels", empty_object())]));
    }

    /// The environment copy carries this call's time and leaves the fixed part alone.
    #[test]
    fn environment_values_fill_in_the_time() {
        let env = EnvironmentValues::new(&Environment {
            node: "n1".into(),
            namespace: "ns".into(),
            pod: "p0".into(),
        });
        let expected = |time: &str| {
            pairs_to_object([
                (Value::from("time"), Value::from(time)),
                (Value::from("node"), Value::from("n1")),
                (Value::from("namespace"), Value::from("ns")),
                (Value::from("pod"), Value::from("p0")),
            ])
        };
        assert_eq!(
            env.at("2026-12-03T10:00:00Z"),
            expected("2026-12-03T10:00:00Z")
        );
        assert_eq!(
            env.at("2026-12-03T10:00:01Z"),
            expected("2026-12-03T10:00:01Z")
        );
        assert_eq!(
            environment_value(
                &Environment {
                    node: "n1".into(),
                    namespace: "ns".into(),
                    pod: "p0".into()
                },
                "t"
            ),
            expected("t")
        );
    }

    #[test]
    fn empty_query_and_query_values() {
        assert_eq!(query_value(None), pairs_to_object([]));
        assert_eq!(query_value(Some("")), pairs_to_object([]));
        assert_eq!(
            query_value(Some("b=2&a=1&b=%20x")),
            pairs_to_object([
                (Value::from("a"), str_array(["1"])),
                (Value::from("b"), str_array(["2", " x"])),
            ])
        );
    }

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
