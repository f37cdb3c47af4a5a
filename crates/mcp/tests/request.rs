//! Request parsing: every rejection case and the accepted shapes.
#![allow(clippy::unwrap_used)]

use chaperone_mcp::{
    check_content_headers, codes, jsonrpc_denied, jsonrpc_error, parse_request, McpError,
    MessageKind, DEFAULT_MAX_REQUEST_BYTES,
};
use serde_json::{json, Value};

const MAX: usize = DEFAULT_MAX_REQUEST_BYTES;

fn parse(s: &str) -> Result<chaperone_mcp::McpRequest, McpError> {
    parse_request(s.as_bytes(), MAX)
}

fn reason(s: &str) -> &'static str {
    match parse(s) {
        Ok(r) => panic!("accepted {s:?}: {r:?}"),
        Err(e) => e.reason(),
    }
}

#[test]
fn tools_call_is_inspected() {
    let r = parse(
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"create_refund","arguments":{"order_id":"123","amount":5}}}"#,
    )
    .unwrap();
    assert_eq!(r.method, "tools/call");
    assert_eq!(r.id, Some(json!(7)));
    assert_eq!(r.tool.as_deref(), Some("create_refund"));
    assert_eq!(r.arguments, json!({"order_id": "123", "amount": 5}));
    assert_eq!(r.kind, MessageKind::Request);
    assert_eq!(
        r.policy_input(),
        json!({"method": "tools/call", "tool": "create_refund", "arguments": {"order_id": "123", "amount": 5}})
    );
}

#[test]
fn tools_call_without_arguments_gets_empty_object() {
    let r =
        parse(r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"x"}}"#).unwrap();
    assert_eq!(r.arguments, json!({}));
    assert_eq!(r.id, Some(json!("a")));
}

#[test]
fn initialize_exposes_client_info_and_version() {
    let r = parse(
        r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"agent","version":"1"}}}"#,
    )
    .unwrap();
    assert_eq!(r.protocol_version.as_deref(), Some("2025-06-18"));
    assert_eq!(
        r.client_info,
        Some(json!({"name": "agent", "version": "1"}))
    );
    assert_eq!(r.tool, None);
    assert_eq!(r.arguments["protocolVersion"], json!("2025-06-18"));
    assert_eq!(
        reason(r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":5}}"#),
        "invalid_field"
    );
}

#[test]
fn notification_and_response_kinds() {
    let n = parse(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
    assert_eq!(n.kind, MessageKind::Notification);
    assert_eq!(n.id, None);
    assert_eq!(n.arguments, Value::Null);

    let null_id = parse(r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#).unwrap();
    assert_eq!(null_id.kind, MessageKind::Request);
    assert_eq!(null_id.id, Some(Value::Null));

    let resp = parse(r#"{"jsonrpc":"2.0","id":3,"result":{"roots":[]}}"#).unwrap();
    assert_eq!(resp.kind, MessageKind::Response);
    assert_eq!(resp.method, "");
    assert_eq!(resp.arguments, json!({"roots": []}));

    let err = parse(r#"{"jsonrpc":"2.0","id":3,"error":{"code":-1,"message":"no"}}"#).unwrap();
    assert_eq!(err.kind, MessageKind::Response);

    let arr = parse(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1,2]}"#).unwrap();
    assert_eq!(arr.arguments, json!([1, 2]));
}

#[test]
fn size_is_checked_before_parsing() {
    // Not even valid JSON: the size check must win.
    let body = vec![b'x'; 101];
    assert_eq!(
        parse_request(&body, 100),
        Err(McpError::TooLarge {
            limit: 100,
            actual: 101
        })
    );
    let ok = br#"{"jsonrpc":"2.0","method":"a"}"#;
    assert!(parse_request(ok, ok.len()).is_ok());
    assert!(matches!(
        parse_request(ok, ok.len() - 1),
        Err(McpError::TooLarge { .. })
    ));
}

#[test]
fn every_rejection_has_a_distinct_reason() {
    let cases: &[(&[u8], &str)] = &[
        (b"{\"jsonrpc\":\"2.0\",\"method\":\"\xc3\x28\"}", "invalid_utf8"),
        (b"not json", "not_json"),
        (b"", "not_json"),
        (b"{\"jsonrpc\":\"2.0\",\"method\":\"a\"", "not_json"),
        (b"{\"jsonrpc\":\"2.0\",\"method\":\"a\"}{}", "trailing_data"),
        (b"{\"jsonrpc\":\"2.0\",\"method\":\"a\"} x", "trailing_data"),
        (b"\"a string\"", "not_object"),
        (b"42", "not_object"),
        (b"null", "not_object"),
        (b"[{\"jsonrpc\":\"2.0\",\"method\":\"a\",\"id\":1}]", "batch"),
        (b"[]", "batch"),
        (
            b"{\"jsonrpc\":\"2.0\",\"method\":\"a\",\"method\":\"b\"}",
            "duplicate_key",
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"a\",\"arguments\":{\"x\":{\"y\":1,\"y\":2}}}}",
            "duplicate_key",
        ),
        (b"{\"jsonrpc\":\"1.0\",\"method\":\"a\"}", "invalid_version"),
        (b"{\"jsonrpc\":2.0,\"method\":\"a\"}", "invalid_version"),
        (b"{\"method\":\"a\"}", "invalid_version"),
        (
            b"{\"jsonrpc\":\"2.0\",\"Method\":\"a\",\"method\":\"b\"}",
            "non_canonical_key",
        ),
        (b"{\"jsonrpc\":\"2.0\",\"METHOD\":\"a\"}", "non_canonical_key"),
        (
            b"{\"jsonrpc\":\"2.0\",\"method\":\"a\",\"Params\":{}}",
            "non_canonical_key",
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"method\":\"a\",\"iD\":1}",
            "non_canonical_key",
        ),
        (
            b"{\"JsonRpc\":\"2.0\",\"jsonrpc\":\"2.0\",\"method\":\"a\"}",
            "non_canonical_key",
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"a\",\"Name\":\"b\"}}",
            "non_canonical_key",
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"a\",\"ARGUMENTS\":{}}}",
            "non_canonical_key",
        ),
        // Long s: folds to "params" in some case-insensitive matchers.
        (
            "{\"jsonrpc\":\"2.0\",\"method\":\"a\",\"param\u{17f}\":{}}".as_bytes(),
            "non_canonical_key",
        ),
        (b"{\"jsonrpc\":\"2.0\",\"id\":1}", "missing_method"),
        (b"{\"jsonrpc\":\"2.0\",\"method\":7}", "method_not_string"),
        (b"{\"jsonrpc\":\"2.0\",\"method\":null}", "method_not_string"),
        (b"{\"jsonrpc\":\"2.0\",\"method\":\"\"}", "empty_method"),
        (
            b"{\"jsonrpc\":\"2.0\",\"method\":\"tools/call\\u0000\"}",
            "control_character",
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"method\":\"tools/\\u001bcall\"}",
            "control_character",
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"method\":\"tools/call\\u0085\"}",
            "control_character",
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"read\\u0000file\"}}",
            "control_character",
        ),
        (
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"read\u{202e}elif\"}}"
                .as_bytes(),
            "control_character",
        ),
        (
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"delete\u{200b}_file\"}}"
                .as_bytes(),
            "control_character",
        ),
        (b"{\"jsonrpc\":\"2.0\",\"method\":\"a\",\"id\":{}}", "invalid_id"),
        (b"{\"jsonrpc\":\"2.0\",\"method\":\"a\",\"id\":[1]}", "invalid_id"),
        (b"{\"jsonrpc\":\"2.0\",\"method\":\"a\",\"id\":true}", "invalid_id"),
        (b"{\"jsonrpc\":\"2.0\",\"method\":\"a\",\"params\":\"x\"}", "invalid_params"),
        (b"{\"jsonrpc\":\"2.0\",\"method\":\"a\",\"params\":null}", "invalid_params"),
        (b"{\"jsonrpc\":\"2.0\",\"method\":\"a\",\"params\":3}", "invalid_params"),
        (b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\"}", "missing_tool_name"),
        (
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{}}",
            "missing_tool_name",
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":5}}",
            "missing_tool_name",
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"\"}}",
            "missing_tool_name",
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":[\"a\"]}",
            "missing_tool_name",
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"a\",\"arguments\":[1]}}",
            "invalid_arguments",
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"a\",\"arguments\":\"{}\"}}",
            "invalid_arguments",
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"a\",\"arguments\":null}}",
            "invalid_arguments",
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\",\"result\":{}}",
            "invalid_message",
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{},\"error\":{}}",
            "invalid_message",
        ),
        (b"{\"jsonrpc\":\"2.0\",\"result\":{}}", "invalid_message"),
        (b"{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":\"x\"}", "invalid_message"),
    ];
    for (body, want) in cases {
        let got = match parse_request(body, MAX) {
            Ok(r) => panic!("accepted {:?}: {r:?}", String::from_utf8_lossy(body)),
            Err(e) => e.reason(),
        };
        assert_eq!(got, *want, "{:?}", String::from_utf8_lossy(body));
    }
}

#[test]
fn nesting_limit() {
    let nest = |n: usize| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"a","arguments":{{"x":{}1{}}}}}}}"#,
            "[".repeat(n),
            "]".repeat(n)
        )
    };
    // top object, params, arguments = 3 levels; 61 arrays make 64.
    assert!(parse(&nest(61)).is_ok());
    assert_eq!(reason(&nest(62)), "too_deep");
    assert_eq!(reason(&nest(100_000)), "too_deep");
}

#[test]
fn escaped_keys_are_compared_decoded() {
    // "\u006dethod" is "method": a duplicate, even though the bytes differ.
    assert_eq!(
        reason(r#"{"jsonrpc":"2.0","method":"a","\u006dethod":"b"}"#),
        "duplicate_key"
    );
    // An escaped canonical key is fine on its own.
    let r = parse(r#"{"jsonrpc":"2.0","\u006dethod":"ping"}"#).unwrap();
    assert_eq!(r.method, "ping");
}

#[test]
fn unknown_members_and_unicode_names_are_accepted() {
    let r = parse(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"recherche_é","arguments":{},"_meta":{"progressToken":1}}}"#,
    )
    .unwrap();
    assert_eq!(r.tool.as_deref(), Some("recherche_é"));
}

#[test]
fn content_headers() {
    let ok = [
        "application/json",
        "Application/JSON",
        " application/json ",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "application/json; charset=\"utf-8\"",
        "application/json;",
    ];
    for ct in ok {
        assert_eq!(check_content_headers(Some(ct), None), Ok(()), "{ct}");
    }
    assert_eq!(
        check_content_headers(Some("application/json"), Some("identity")),
        Ok(())
    );
    assert_eq!(
        check_content_headers(Some("application/json"), Some(" Identity ")),
        Ok(())
    );
    let bad_ct = [
        None,
        Some(""),
        Some("text/plain"),
        Some("application/json-seq"),
        Some("application/jsonx"),
        Some("application/x-www-form-urlencoded"),
        Some("application/json; charset=latin1"),
        Some("application/json; charset=utf-8; charset=utf-8"),
        Some("application/json; boundary=x"),
        Some("application/json; charset"),
        Some("text/event-stream"),
    ];
    for ct in bad_ct {
        assert_eq!(
            check_content_headers(ct, None),
            Err(McpError::UnsupportedContentType),
            "{ct:?}"
        );
    }
    for enc in ["gzip", "deflate", "br", "identity, gzip", "", "zstd"] {
        assert_eq!(
            check_content_headers(Some("application/json"), Some(enc)),
            Err(McpError::UnsupportedContentEncoding),
            "{enc}"
        );
    }
}

#[test]
fn error_bodies_are_jsonrpc() {
    let e = parse("[1]").unwrap_err();
    let body: Value = serde_json::from_slice(&e.jsonrpc_error_body(None)).unwrap();
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(body["id"], Value::Null);
    assert_eq!(body["error"]["code"], codes::INVALID_REQUEST);
    assert_eq!(body["error"]["data"]["reason"], "batch");
    assert_eq!(
        body["error"]["message"],
        "JSON-RPC batches are not accepted"
    );

    let e = parse("{").unwrap_err();
    let body: Value = serde_json::from_slice(&e.jsonrpc_error_body(Some(&json!(4)))).unwrap();
    assert_eq!(body["error"]["code"], codes::PARSE_ERROR);
    assert_eq!(body["id"], 4);

    let e = parse(r#"{"jsonrpc":"2.0","id":"q","method":"tools/call","params":{}}"#).unwrap_err();
    assert_eq!(e.jsonrpc_code(), codes::INVALID_PARAMS);

    let body: Value = serde_json::from_slice(&jsonrpc_denied(
        Some(&json!("req-1")),
        &["tool delete_file is not in the task intent".to_owned()],
        "r-123",
    ))
    .unwrap();
    assert_eq!(
        body,
        json!({"jsonrpc": "2.0", "id": "req-1", "error": {
            "code": -32001,
            "message": "denied: tool delete_file is not in the task intent",
            "data": {"error": "denied", "reasons": ["tool delete_file is not in the task intent"], "request_id": "r-123"}}})
    );

    // Object ids are never echoed; data omitted when None.
    let body: Value =
        serde_json::from_slice(&jsonrpc_error(Some(&json!({"a": 1})), -32000, "x", None)).unwrap();
    assert_eq!(
        body,
        json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32000, "message": "x"}})
    );
}

#[test]
fn error_display_does_not_echo_long_input() {
    let key = "k".repeat(10_000);
    let body = format!(r#"{{"jsonrpc":"2.0","method":"a","{key}":1,"{key}":2}}"#);
    let e = parse(&body).unwrap_err();
    assert!(e.to_string().len() < 200, "{}", e);
}

/// Randomized: mutations of a valid request never panic, and whatever is accepted is also
/// accepted by serde_json with the same meaning (no parser differential on accepted input).
#[test]
fn random_mutations_never_disagree_with_serde_json() {
    let seed = br#"{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/etc/x","n":[1,2.5,-3e2],"o":{"a":null,"b":true}}}}"#;
    let alphabet = b"{}[]\":,\\ u0aZ-.e1\x00\xff\n";
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    let mut accepted = 0;
    for _ in 0..20_000 {
        let mut body = seed.to_vec();
        for _ in 0..(1 + next() % 3) {
            let pos = next() % body.len();
            match next() % 3 {
                0 => body[pos] = alphabet[next() % alphabet.len()],
                1 => body.insert(pos, alphabet[next() % alphabet.len()]),
                _ => {
                    body.remove(pos);
                }
            }
        }
        if let Ok(req) = parse_request(&body, MAX) {
            accepted += 1;
            let v: Value = serde_json::from_slice(&body).expect("we accepted non-JSON");
            assert_eq!(v["method"], json!(req.method));
            if req.method == "tools/call" {
                assert_eq!(v["params"]["name"], json!(req.tool));
            }
        }
    }
    assert!(accepted > 0);
}
