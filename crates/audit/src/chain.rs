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

/// `a,b,...`: each item written by `item`, comma-separated.
fn write_joined<T>(
    items: impl IntoIterator<Item = T>,
    out: &mut Vec<u8>,
    mut item: impl FnMut(T, &mut Vec<u8>),
) {
    for (i, x) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        item(x, out);
    }
}

/// `[a,b,...]`.
fn write_list<T>(items: &[T], out: &mut Vec<u8>, item: impl FnMut(&T, &mut Vec<u8>)) {
    out.push(b'[');
    write_joined(items, out, item);
    out.push(b']');
}

fn write(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_str(s, out),
        Value::Array(a) => write_list(a, out, write),
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push(b'{');
            write_joined(keys, out, |k, out| {
                write_str(k, out);
                out.push(b':');
                if let Some(x) = m.get(k) {
                    write(x, out);
                }
            });
            out.push(b'}');
        }
    }
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // Most strings (keys, ids, paths, routes) need no escaping: one branch-free pass
    // (it vectorises) decides that, and they are copied whole.
    let clean = !bytes.iter().fold(false, |dirty, &b| {
        dirty | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if clean {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    // Copy runs of bytes that need no escaping in one go.
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
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

/// Chain one event in a single pass, written directly from its fields (no intermediate
/// JSON tree): returns `(hash, line)` where `hash` is [`record_hash`] of the record with
/// `seq` and `prev_hash` and `line` is [`canonical_json`] of it with `hash` added.
/// `ev` must be normalised (see `AuditEvent::normalise`).
pub(crate) fn chain_event(prev_hash: &str, seq: u64, ev: &crate::AuditEvent) -> (String, Vec<u8>) {
    use crate::event::Field;
    let members = ev.members(seq, prev_hash);
    let split = members.partition_point(|(k, _)| k.as_bytes() < b"hash".as_slice());
    let write_members = |ms: &[(&'static str, Field<'_>)], out: &mut Vec<u8>| {
        write_joined(ms, out, |(k, v), out| {
            write_str(k, out);
            out.push(b':');
            match v {
                Field::Str(s) => write_str(s, out),
                Field::Strs(list) => write_list(list, out, |s, o| write_str(s, o)),
                Field::U64(n) => out.extend_from_slice(n.to_string().as_bytes()),
                Field::F64(f) => match serde_json::Number::from_f64(*f) {
                    Some(n) => out.extend_from_slice(n.to_string().as_bytes()),
                    None => out.extend_from_slice(b"null"),
                },
                Field::Json(j) => write(j, out),
            }
        });
    };
    let mut head = Vec::with_capacity(384);
    let mut tail = Vec::with_capacity(384);
    write_members(&members[..split], &mut head);
    write_members(&members[split..], &mut tail);
    finish_line(prev_hash, &head, &tail)
}

fn finish_line(prev_hash: &str, head: &[u8], tail: &[u8]) -> (String, Vec<u8>) {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(prev_hash.as_bytes());
    ctx.update(b"{");
    ctx.update(head);
    if !head.is_empty() && !tail.is_empty() {
        ctx.update(b",");
    }
    ctx.update(tail);
    ctx.update(b"}");
    let hash = hex::encode(ctx.finish().as_ref());
    let mut line = Vec::with_capacity(head.len() + tail.len() + 80);
    line.push(b'{');
    line.extend_from_slice(head);
    if !head.is_empty() {
        line.push(b',');
    }
    line.extend_from_slice(b"\"hash\":");
    write_str(&hash, &mut line);
    if !tail.is_empty() {
        line.push(b',');
        line.extend_from_slice(tail);
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
    fn chain_event_equals_the_two_step_form() {
        let mut full = crate::AuditEvent::request_decided("req-1", "deny");
        full.spiffe_id = Some("spiffe://t/ns/a/sa/b".into());
        full.session_id = Some("ses_1".into());
        full.task = Some("é\"q\\\n\u{1}".repeat(600));
        full.intent_summary = Some("sum".into());
        full.delegation_chain = vec!["spiffe://t/a".into(), "spiffe://t/b".into()];
        full.route = Some("r".into());
        full.method = Some("GET".into());
        full.path = Some("/x".into());
        full.mcp_tool = Some("tool".into());
        full.status = Some(403);
        full.reasons = vec!["no".into(), "never".into()];
        full.policy_revision = Some("abc".into());
        full.latency_ms = Some(1.234_567_8);
        full.credential = Some("c".into());
        full.credential_id = Some("id".into());
        full.provider = Some("static".into());
        full.cause = Some("why".into());
        full.approval_id = Some("ap".into());
        full.approver = Some("me".into());
        let full = full
            .with_detail("token", json!("s3cr3t"))
            .with_detail("z", json!({"b": [1, 2.5, null], "a": true}));
        let sparse = crate::AuditEvent::new("policy.reloaded");
        for ev in [full, sparse] {
            let (prev, seq) = (GENESIS_HASH, 7u64);
            let mut rec = ev.clone().into_record().unwrap();
            let Value::Object(m) = &mut rec else {
                unreachable!()
            };
            m.insert("seq".into(), json!(seq));
            m.insert("prev_hash".into(), json!(prev));
            let want_hash = record_hash(prev, &rec);
            let Value::Object(m) = &mut rec else {
                unreachable!()
            };
            m.insert("hash".into(), json!(want_hash));
            let mut norm = ev;
            norm.normalise();
            let (hash, line) = chain_event(prev, seq, &norm);
            assert_eq!(hash, want_hash);
            assert_eq!(
                String::from_utf8(line).unwrap(),
                String::from_utf8(canonical_json(&rec)).unwrap()
            );
        }
    }

    /// Clean strings take the copy-whole path, the others the escaping loop; both agree
    /// with serde_json's string form (the same escapes) wherever the special byte is.
    #[test]
    fn strings_escape_like_json_on_both_paths() {
        let mut cases = vec![String::new(), "plain".into(), "é ünïcode ✓".into()];
        for special in [
            '"', '\\', '\n', '\u{1}', '\u{1f}', '\u{8}', '\u{c}', '\r', '\t',
        ] {
            for at in [0, 1, 7, 8, 15, 16, 31, 32, 33] {
                let mut s: String = "abcdefghijklmnopqrstuvwxyz0123456789".into();
                s.insert(at, special);
                cases.push(s);
            }
        }
        cases.push("\u{7f}~ \u{80}".into());
        for s in cases {
            let mut out = Vec::new();
            write_str(&s, &mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&s).unwrap(),
                "{s:?}"
            );
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
