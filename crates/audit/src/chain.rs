//! Canonical JSON and the record hash.

use serde_json::Value;

/// `prev_hash` of the first record of a chain: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The canonical form of a JSON value, as hashed and as written to the log.
///
/// * objects: members sorted by key, comparing the keys' UTF-8 bytes (= code points);
/// * no whitespace anywhere; `,` and `:` as separators;
/// * strings: UTF-8, not ASCII-escaped; `"` and `\` escaped as `\"` `\\`; U+0008,
///   U+000C, U+000A, U+000D, U+0009 as `\b \f \n \r \t`; other controls below U+0020 as
///   `\u00xx` (lowercase hex); nothing else is escaped;
/// * integers in decimal; floats in shortest round-trip form (`0.5`, `12.345`, `1.0`).
///   The writer only emits floats in `latency_ms`, rounded to 3 decimals.
///
/// This equals Python's `json.dumps(v, sort_keys=True, separators=(",", ":"),
/// ensure_ascii=False)` for every record the writer produces.
pub fn canonical_json(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write(v, &mut out);
    out
}

fn write(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_str(s, out),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(x, out);
            }
            out.push(b']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(k, out);
                out.push(b':');
                if let Some(x) = m.get(k) {
                    write(x, out);
                }
            }
            out.push(b'}');
        }
    }
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x00..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// `hex(SHA-256(prev_hash || canonical_json(record)))` where `record` is the full
/// record object without its `hash` member (it includes `seq` and `prev_hash`) and
/// `prev_hash` is taken as its 64 lowercase hex ASCII characters.
pub fn record_hash(prev_hash: &str, record_without_hash: &Value) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(prev_hash.as_bytes());
    ctx.update(&canonical_json(record_without_hash));
    hex::encode(ctx.finish().as_ref())
}

/// Chain one record in a single serialization pass: returns `(hash, line)` where `hash`
/// is [`record_hash`] of `rec` (which must not contain `hash`) and `line` is
/// [`canonical_json`] of `rec` with `hash` added. Same bytes as the two-step form.
pub(crate) fn chain_line(
    prev_hash: &str,
    rec: &serde_json::Map<String, Value>,
) -> (String, Vec<u8>) {
    let mut keys: Vec<&String> = rec.keys().filter(|k| k.as_str() != "hash").collect();
    keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let split = keys.partition_point(|k| k.as_bytes() < b"hash".as_slice());
    let members = |ks: &[&String], out: &mut Vec<u8>| {
        for (i, k) in ks.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(k, out);
            out.push(b':');
            if let Some(v) = rec.get(*k) {
                write(v, out);
            }
        }
    };
    let mut head = Vec::with_capacity(384);
    let mut tail = Vec::with_capacity(384);
    members(&keys[..split], &mut head);
    members(&keys[split..], &mut tail);
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(prev_hash.as_bytes());
    ctx.update(b"{");
    ctx.update(&head);
    if !head.is_empty() && !tail.is_empty() {
        ctx.update(b",");
    }
    ctx.update(&tail);
    ctx.update(b"}");
    let hash = hex::encode(ctx.finish().as_ref());
    let mut line = Vec::with_capacity(head.len() + tail.len() + 80);
    line.push(b'{');
    line.extend_from_slice(&head);
    if !head.is_empty() {
        line.push(b',');
    }
    line.extend_from_slice(b"\"hash\":");
    write_str(&hash, &mut line);
    if !tail.is_empty() {
        line.push(b',');
        line.extend_from_slice(&tail);
    }
    line.push(b'}');
    (hash, line)
}

pub(crate) fn is_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chain_line_equals_the_two_step_form() {
        let prev = GENESIS_HASH;
        for v in [
            json!({"a": 1, "seq": 2, "prev_hash": prev, "z": "x\n"}),
            json!({"a": 1}),
            json!({"zz": [1, {"b": null, "a": true}]}),
            json!({}),
        ] {
            let Value::Object(m) = &v else { unreachable!() };
            let (hash, line) = chain_line(prev, m);
            assert_eq!(hash, record_hash(prev, &v));
            let mut with = m.clone();
            with.insert("hash".into(), json!(hash));
            assert_eq!(line, canonical_json(&Value::Object(with)), "{v}");
        }
    }

    #[test]
    fn canonical_sorts_and_escapes() {
        let v = json!({"b": 1, "a": [true, null, "x\"\\\n\u{1}é"], "A": {"z": 0.5, "y": -2}});
        let s = String::from_utf8(canonical_json(&v)).unwrap();
        assert_eq!(
            s,
            r#"{"A":{"y":-2,"z":0.5},"a":[true,null,"x\"\\\n\u0001é"],"b":1}"#
        );
        // Canonical output parses back to the same value and is a fixed point.
        let back: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back, v);
        assert_eq!(canonical_json(&back), s.as_bytes());
    }

    #[test]
    fn hash_is_sha256_of_prev_and_canonical() {
        let v = json!({"seq": 1, "prev_hash": GENESIS_HASH, "event": "audit.started"});
        let h = record_hash(GENESIS_HASH, &v);
        let mut input = GENESIS_HASH.as_bytes().to_vec();
        input.extend_from_slice(&canonical_json(&v));
        assert_eq!(
            h,
            hex::encode(ring::digest::digest(&ring::digest::SHA256, &input))
        );
        assert!(is_hash(&h));
        assert!(!is_hash(&h.to_uppercase()));
    }
}
