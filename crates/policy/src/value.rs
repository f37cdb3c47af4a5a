//! Conversions between `serde_json::Value` and `regorus::Value`, and duration parsing.

use std::collections::BTreeMap;
use std::time::Duration;

use regorus::Value;

/// Convert a JSON value into a regorus value directly (no JSON text round trip).
///
/// Integers stay exact (`i64`/`u64`); other numbers go through `f64`, as in JSON parsing.
pub fn json_to_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => {
            Value::from(items.iter().map(json_to_value).collect::<Vec<_>>())
        }
        serde_json::Value::Object(map) => {
            let mut out = BTreeMap::new();
            for (k, v) in map {
                out.insert(Value::from(k.as_str()), json_to_value(v));
            }
            Value::from(out)
        }
    }
}

/// Convert a regorus value to JSON for reports (sets become sorted arrays,
/// `undefined` becomes `null`).
pub(crate) fn value_to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Undefined => serde_json::Value::Null,
        other => serde_json::to_value(other).unwrap_or(serde_json::Value::Null),
    }
}

/// Short type name of a value for error messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Set(_) => "set",
        Value::Object(_) => "object",
        Value::Undefined => "undefined",
    }
}

/// Parse a duration such as `"30s"`, `"10m"`, `"1h30m"`, `"500ms"` or `"1d"`.
///
/// Units: `ms`, `s`, `m`, `h`, `d`; integer amounts only; at least one component; no sign.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let amount: u64 = s.get(start..i)?.parse().ok()?;
        let ustart = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let millis_per: u64 = match s.get(ustart..i)? {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        total = total.checked_add(amount.checked_mul(millis_per)?)?;
    }
    Some(Duration::from_millis(total))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172_800)));
        for bad in [
            "",
            "10",
            "m",
            "-1m",
            "1.5h",
            "10 m",
            "10x",
            "99999999999999999999h",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn json_roundtrip() {
        let j = serde_json::json!({"a": [1, -2, 3.5, "x", null, true], "b": {"c": {}}, "u": 18446744073709551615u64});
        let v = json_to_value(&j);
        assert_eq!(v, Value::from_json_str(&j.to_string()).unwrap());
        assert_eq!(value_to_json(&v), j);
    }
}
