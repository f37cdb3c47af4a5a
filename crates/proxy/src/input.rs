//! The policy input document (SPEC §5), built directly as `regorus::Value`s: no JSON
//! text round trip per call. Parts that do not change per call (identity, route,
//! environment node/pod) are built once and shared (regorus values are Arc-backed,
//! so cloning them is a reference-count bump).

use std::collections::BTreeMap;

use chaperone_config::{Environment, Route};
use regorus::Value;

/// Build an object value from string keys.
pub fn obj<const N: usize>(fields: [(&str, Value); N]) -> Value {
    let mut m = BTreeMap::new();
    for (k, v) in fields {
        m.insert(Value::from(k), v);
    }
    Value::from(m)
}

pub fn str_array<'a>(items: impl IntoIterator<Item = &'a str>) -> Value {
    Value::from(items.into_iter().map(Value::from).collect::<Vec<_>>())
}

pub fn json(v: serde_json::Value) -> Value {
    Value::from(v)
}

/// `input.route`.
pub fn route_value(r: &Route) -> Value {
    obj([
        ("name", Value::from(r.name.as_str())),
        ("upstream", Value::from(r.upstream.url.as_str())),
        (
            "protocol",
            Value::from(match r.protocol {
                chaperone_config::Protocol::Http => "http",
                chaperone_config::Protocol::Mcp => "mcp",
            }),
        ),
        ("labels", json(serde_json::Value::Object(r.labels.clone()))),
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
        ("spiffe_id", Value::from(spiffe_id)),
        ("trust_domain", Value::from(trust_domain)),
        ("path", Value::from(path)),
        (
            "attributes",
            json(serde_json::Value::Object(attributes.clone())),
        ),
    ])
}

/// `input.environment` for the current time.
pub fn environment_value(env: &Environment, now_rfc3339: &str) -> Value {
    obj([
        ("time", Value::from(now_rfc3339)),
        ("node", Value::from(env.node.as_str())),
        ("namespace", Value::from(env.namespace.as_str())),
        ("pod", Value::from(env.pod.as_str())),
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
            ("identity", self.identity),
            ("session", self.session),
            ("request", self.request),
            ("route", self.route),
            ("environment", self.environment),
        ])
    }
}

pub fn rfc3339(t: std::time::SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    dt.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
