//! tools/list filtering of JSON and SSE responses.
#![allow(clippy::unwrap_used)]

use chaperone_mcp::{filter_tools_list_json, McpError, SseToolsFilter};
use serde_json::{json, Value};

fn deny_delete(name: &str, _tool: &Value) -> bool {
    !name.starts_with("delete")
}

fn filter_json(body: &str, id: Value) -> Result<String, McpError> {
    filter_tools_list_json(body.as_bytes(), &id, &mut deny_delete)
        .map(|b| String::from_utf8(b).unwrap())
}

const LIST: &str = r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"search_docs","inputSchema":{"type":"object","properties":{"query":{"type":"string"}}}},{"name":"delete_file","description":"rm"},{"name":"read_file","annotations":{"readOnlyHint":true}}],"nextCursor":"abc==","_meta":{"z":1.50,"big":123456789012345678901234567890}}}"#;

#[test]
fn removes_disallowed_tools_and_keeps_everything_else() {
    let out = filter_json(LIST, json!(2)).unwrap();
    assert_eq!(
        out,
        r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"search_docs","inputSchema":{"type":"object","properties":{"query":{"type":"string"}}}},{"name":"read_file","annotations":{"readOnlyHint":true}}],"nextCursor":"abc==","_meta":{"z":1.50,"big":123456789012345678901234567890}}}"#
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["result"]["nextCursor"], "abc==");
}

#[test]
fn unchanged_lists_are_byte_identical() {
    let pretty = "{\n  \"result\" : { \"tools\" : [ {\"name\":\"a\"} ,\n {\"name\":\"b\", \"x\": 1.0e3} ] },\n  \"id\": 2, \"jsonrpc\": \"2.0\"\n}\n";
    let out = filter_json(pretty, json!(2)).unwrap();
    assert_eq!(out, pretty);
}

#[test]
fn removal_at_every_position_keeps_formatting_valid() {
    let names = ["delete_a", "keep_b", "delete_c", "keep_d", "delete_e"];
    // Every subset of positions holding a "delete" tool, with pretty and compact formatting.
    for mask in 0u32..32 {
        for sep in [",", " ,\n    "] {
            let tools: Vec<String> = names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let n = if mask & (1 << i) != 0 {
                        n.replace("keep", "delete")
                    } else {
                        n.replace("delete", "keep")
                    };
                    format!(r#"{{"name":"{n}"}}"#)
                })
                .collect();
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":"x","result":{{"tools":[ {} ],"nextCursor":"n"}}}}"#,
                tools.join(sep)
            );
            let out = filter_json(&body, json!("x")).unwrap();
            let v: Value = serde_json::from_str(&out).unwrap();
            let kept: Vec<&str> = v["result"]["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap())
                .collect();
            let want: Vec<String> = (0..5)
                .filter(|i| mask & (1 << i) == 0)
                .map(|i| names[i].replace("delete", "keep"))
                .collect();
            assert_eq!(kept, want, "mask {mask} body {body}");
            assert_eq!(v["result"]["nextCursor"], "n");
        }
    }
}

#[test]
fn empty_and_all_removed() {
    let body = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#;
    assert_eq!(filter_json(body, json!(1)).unwrap(), body);
    let body = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[ {"name":"delete_a"} , {"name":"delete_b"} ]}}"#;
    assert_eq!(
        filter_json(body, json!(1)).unwrap(),
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#
    );
}

#[test]
fn allow_sees_each_tool_object() {
    let mut seen = Vec::new();
    let mut allow = |name: &str, tool: &Value| {
        seen.push((name.to_owned(), tool.get("description").cloned()));
        true
    };
    let out = filter_tools_list_json(LIST.as_bytes(), &json!(2), &mut allow).unwrap();
    assert_eq!(out, LIST.as_bytes());
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[1], ("delete_file".to_owned(), Some(json!("rm"))));
}

#[test]
fn other_messages_pass_unchanged() {
    let cases = [
        // Different id (number vs string matters).
        (LIST, json!("2")),
        (LIST, json!(3)),
        // An error response to our id.
        (
            r#"{"jsonrpc":"2.0","id":2,"error":{"code":-32601,"message":"no"}}"#,
            json!(2),
        ),
        // A notification and a server-to-client request with the same id.
        (
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}"#,
            json!(2),
        ),
        (
            r#"{"jsonrpc":"2.0","id":2,"method":"sampling/createMessage","params":{"tools":[{"name":"delete_x"}]}}"#,
            json!(2),
        ),
    ];
    for (body, id) in cases {
        assert_eq!(filter_json(body, id).unwrap(), body);
    }
}

#[test]
fn malformed_responses_fail_closed() {
    let cases = [
        "not json",
        "",
        r#"[{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"delete_file"}]}}]"#,
        r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"delete_file"}]}} trailing"#,
        r#"{"jsonrpc":"2.0","id":2,"id":3,"result":{"tools":[{"name":"delete_file"}]}}"#,
        r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"a","name":"delete_file"}]}}"#,
        r#"{"jsonrpc":"2.0","ID":2,"result":{"tools":[{"name":"delete_file"}]}}"#,
        r#"{"jsonrpc":"2.0","id":2,"Result":{"tools":[{"name":"delete_file"}]}}"#,
        r#"{"jsonrpc":"2.0","id":2,"result":{"Tools":[{"name":"delete_file"}],"tools":[]}}"#,
        r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"Name":"delete_file","name":"ok"}]}}"#,
        r#"{"jsonrpc":"2.0","id":2,"result":{"tools":{"name":"delete_file"}}}"#,
        r#"{"jsonrpc":"2.0","id":2,"result":{}}"#,
        r#"{"jsonrpc":"2.0","id":2,"result":[]}"#,
        r#"{"jsonrpc":"2.0","id":2,"result":{"tools":["delete_file"]}}"#,
        r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"title":"delete_file"}]}}"#,
        r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":7}]}}"#,
        r#"{"jsonrpc":"1.0","id":2,"result":{"tools":[]}}"#,
        r#"{"id":2,"result":{"tools":[]}}"#,
        r#"{"jsonrpc":"2.0","id":2}"#,
        r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[]},"error":{}}"#,
        r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"a","x":NaN}]}}"#,
    ];
    for body in cases {
        match filter_json(body, json!(2)) {
            Err(McpError::MalformedToolsList(_)) => {}
            other => panic!("{body}: {other:?}"),
        }
    }
    let deep = format!(
        r#"{{"jsonrpc":"2.0","id":2,"result":{{"tools":[{{"name":"a","s":{}1{}}}]}}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    assert!(filter_json(&deep, json!(2)).is_err());
    let e = filter_json("nope", json!(2)).unwrap_err();
    assert_eq!(e.jsonrpc_code(), chaperone_mcp::codes::INTERNAL_ERROR);
}

// ---------------------------------------------------------------- SSE

fn sse_all(stream: &[u8], chunks: &[usize]) -> Result<Vec<u8>, McpError> {
    let mut f = SseToolsFilter::new(json!(2), deny_delete);
    let mut out = Vec::new();
    let mut start = 0;
    for &end in chunks {
        out.extend(f.push(&stream[start..end])?);
        start = end;
    }
    out.extend(f.push(&stream[start..])?);
    out.extend(f.finish()?);
    Ok(out)
}

fn one_shot(stream: &[u8]) -> Result<Vec<u8>, McpError> {
    sse_all(stream, &[])
}

const PROGRESS: &str = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":2,"progress":1}}"#;

fn stream_with(eol: &str) -> Vec<u8> {
    format!(
        ": keepalive{eol}{eol}\
         event: message{eol}id: 1{eol}data: {PROGRESS}{eol}{eol}\
         retry: 1000{eol}{eol}\
         id: 2{eol}event: message{eol}: a comment{eol}data: {LIST}{eol}{eol}\
         event: other{eol}data: not json at all{eol}{eol}"
    )
    .into_bytes()
}

fn expected_with(eol: &str) -> Vec<u8> {
    let filtered = filter_json(LIST, json!(2)).unwrap();
    format!(
        ": keepalive{eol}{eol}\
         event: message{eol}id: 1{eol}data: {PROGRESS}{eol}{eol}\
         retry: 1000{eol}{eol}\
         id: 2{eol}event: message{eol}: a comment{eol}data: {filtered}{eol}{eol}\
         event: other{eol}data: not json at all{eol}{eol}"
    )
    .into_bytes()
}

#[test]
fn sse_filters_matching_event_with_every_line_ending() {
    for eol in ["\n", "\r\n", "\r"] {
        let out = one_shot(&stream_with(eol)).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&expected_with(eol)),
            "eol {eol:?}"
        );
    }
}

#[test]
fn sse_every_split_point_matches_one_shot() {
    for eol in ["\n", "\r\n", "\r"] {
        let stream = stream_with(eol);
        let whole = one_shot(&stream).unwrap();
        assert_eq!(whole, expected_with(eol));
        for cut in 0..=stream.len() {
            assert_eq!(
                sse_all(&stream, &[cut]).unwrap(),
                whole,
                "eol {eol:?} cut {cut}"
            );
        }
        // Byte by byte.
        let cuts: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(
            sse_all(&stream, &cuts).unwrap(),
            whole,
            "eol {eol:?} bytewise"
        );
    }
}

#[test]
fn sse_random_chunkings_match_one_shot() {
    let mut stream = stream_with("\r\n");
    stream.extend(stream_with("\n"));
    stream.extend(stream_with("\r"));
    let whole = one_shot(&stream).unwrap();
    let mut state: u64 = 42;
    for _ in 0..500 {
        let mut cuts = Vec::new();
        let mut pos = 0;
        loop {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            pos += 1 + (state >> 33) as usize % 40;
            if pos >= stream.len() {
                break;
            }
            cuts.push(pos);
        }
        assert_eq!(sse_all(&stream, &cuts).unwrap(), whole);
    }
}

#[test]
fn sse_emits_complete_events_immediately() {
    let mut f = SseToolsFilter::new(json!(2), deny_delete);
    let first = format!("data: {PROGRESS}\n\n");
    assert_eq!(f.push(first.as_bytes()).unwrap(), first.as_bytes());
    assert_eq!(f.buffered(), 0);
    // A partial event is held back, nothing else.
    assert!(f.push(b"data: {\"jsonrpc\"").unwrap().is_empty());
    assert_eq!(f.buffered(), 16);
    let rest = b":\"2.0\",\"method\":\"x\"}\n\n: after\n\n";
    let out = f.push(rest).unwrap();
    assert_eq!(
        out,
        b"data: {\"jsonrpc\":\"2.0\",\"method\":\"x\"}\n\n: after\n\n".to_vec()
    );
    assert!(f.finish().unwrap().is_empty());
    // Finished: no further input.
    assert_eq!(f.push(b"x"), Err(McpError::SseFilterFailed));
}

#[test]
fn sse_multiline_data_is_joined_and_rewritten() {
    let pretty = "{\"jsonrpc\":\"2.0\",\n\"id\":2,\n\"result\":{\"tools\":[\n{\"name\":\"delete_file\"},\n{\"name\":\"read_file\"}\n],\n\"nextCursor\":\"c\"}}";
    let mut stream = String::from("event: message\nid: 9\n");
    for line in pretty.split('\n') {
        stream.push_str("data:");
        stream.push_str(line);
        stream.push('\n');
    }
    stream.push('\n');
    let out = String::from_utf8(one_shot(stream.as_bytes()).unwrap()).unwrap();
    // Reassemble the data as an SSE client would.
    let data: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    let v: Value = serde_json::from_str(&data.join("\n")).unwrap();
    assert_eq!(
        v,
        json!({"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"read_file"}],"nextCursor":"c"}})
    );
    assert!(out.starts_with("event: message\nid: 9\ndata: "));
    assert!(out.ends_with("\n\n"));
}

#[test]
fn sse_bom_does_not_hide_the_response() {
    let stream = format!("\u{feff}data: {LIST}\n\n");
    let out = String::from_utf8(one_shot(stream.as_bytes()).unwrap()).unwrap();
    assert!(!out.contains("delete_file"));
    assert!(out.starts_with('\u{feff}'));
}

#[test]
fn sse_fails_closed() {
    let bad: &[&[u8]] = &[
        // Non-JSON data in a message event.
        b"data: hello\n\n",
        b"event: message\ndata: {\"a\":1\n\n",
        // Duplicate keys smuggled in a message event.
        b"data: {\"jsonrpc\":\"2.0\",\"id\":3,\"id\":2,\"result\":{\"tools\":[]}}\n\n",
        // Malformed response to our id.
        b"data: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"tools\":7}}\n\n",
        // Stream ends inside an event.
        b"data: {\"jsonrpc\":\"2.0\",\"method\":\"x\"}\n",
        b"data: {\"jsonrpc\":\"2.0\",\"method\":\"x\"}",
        b"data: {\"jsonrpc\":\"2.0\",\"method\":\"x\"}\r",
        b": comment only",
    ];
    for stream in bad {
        assert!(
            one_shot(stream).is_err(),
            "{:?}",
            String::from_utf8_lossy(stream)
        );
    }
    // A final CR terminating the blank line is complete at end of stream.
    let ok = b"data: {\"jsonrpc\":\"2.0\",\"method\":\"x\"}\r\r";
    assert_eq!(one_shot(ok).unwrap(), ok.to_vec());
    // Empty data (e.g. a priming event) passes.
    let ok = b"id: 0\ndata:\n\n";
    assert_eq!(one_shot(ok).unwrap(), ok.to_vec());
}

#[test]
fn sse_error_poisons_the_filter() {
    let mut f = SseToolsFilter::new(json!(2), deny_delete);
    assert!(f.push(b"data: nope\n\n").is_err());
    assert_eq!(
        f.push(format!("data: {PROGRESS}\n\n").as_bytes()),
        Err(McpError::SseFilterFailed)
    );
    assert_eq!(f.finish(), Err(McpError::SseFilterFailed));
}

#[test]
fn sse_partial_event_cap() {
    let mut f = SseToolsFilter::new(json!(2), deny_delete).with_max_event_bytes(64);
    // Many complete small events in one chunk are fine even beyond the cap in total.
    let small = format!("data: {PROGRESS}\n\n").repeat(1);
    let mut f2 = SseToolsFilter::new(json!(2), deny_delete).with_max_event_bytes(small.len());
    let many = small.repeat(100);
    assert_eq!(f2.push(many.as_bytes()).unwrap(), many.as_bytes());
    // A partial event beyond the cap is an error.
    assert!(f.push(&[b'a'; 60]).unwrap().is_empty());
    assert_eq!(
        f.push(&[b'a'; 10]),
        Err(McpError::SseEventTooLarge { limit: 64 })
    );
}

#[test]
fn sse_unrelated_events_are_byte_identical() {
    // Odd but valid framing: fields without space, field without colon, CR-only lines.
    let stream = b"data:{\"jsonrpc\":\"2.0\",\"method\":\"a\"}\r\rdata\r\n\r\nid\n:x\n\n";
    assert_eq!(one_shot(stream).unwrap(), stream.to_vec());
}

// ------------------------------------------- real MCP Python SDK output (captured fixtures)

const SDK_TOOLS_SSE: &[u8] = include_bytes!("fixtures/sdk_tools_list.sse");
const SDK_TOOLS_JSON: &[u8] = include_bytes!("fixtures/sdk_tools_list.json");
const SDK_SLOW_SSE: &[u8] = include_bytes!("fixtures/sdk_slow_count.sse");

fn policy(name: &str, _tool: &Value) -> bool {
    !matches!(name, "delete_file" | "create_refund")
}

fn sse_data_messages(stream: &[u8]) -> Vec<Value> {
    let text = String::from_utf8(stream.to_vec()).unwrap();
    text.split("\r\n\r\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let data: Vec<&str> = e
                .split("\r\n")
                .filter_map(|l| l.strip_prefix("data: "))
                .collect();
            serde_json::from_str(&data.join("\n")).unwrap()
        })
        .collect()
}

fn names(msg: &Value) -> Vec<&str> {
    msg["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect()
}

#[test]
fn sdk_sse_tools_list_is_filtered_at_every_split() {
    let run = |cuts: &[usize]| {
        let mut f = SseToolsFilter::new(json!(1), policy);
        let mut out = Vec::new();
        let mut start = 0;
        for &c in cuts {
            out.extend(f.push(&SDK_TOOLS_SSE[start..c]).unwrap());
            start = c;
        }
        out.extend(f.push(&SDK_TOOLS_SSE[start..]).unwrap());
        out.extend(f.finish().unwrap());
        out
    };
    let whole = run(&[]);
    let before = sse_data_messages(SDK_TOOLS_SSE);
    let after = sse_data_messages(&whole);
    assert_eq!(before.len(), 1);
    assert_eq!(
        names(&before[0]),
        vec![
            "search_docs",
            "read_file",
            "delete_file",
            "create_refund",
            "slow_count"
        ]
    );
    assert_eq!(
        names(&after[0]),
        vec!["search_docs", "read_file", "slow_count"]
    );
    // Other members and the kept tools are unchanged.
    let kept: Vec<&Value> = before[0]["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| policy(t["name"].as_str().unwrap(), t))
        .collect();
    assert_eq!(
        after[0]["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .collect::<Vec<_>>(),
        kept
    );
    assert!(whole.starts_with(b"event: message\r\ndata: {"));
    for cut in 0..=SDK_TOOLS_SSE.len() {
        assert_eq!(run(&[cut]), whole, "cut {cut}");
    }
}

#[test]
fn sdk_json_tools_list_is_filtered() {
    let out = filter_tools_list_json(SDK_TOOLS_JSON, &json!("list-1"), &mut policy).unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(names(&v), vec!["search_docs", "read_file", "slow_count"]);
    // Wrong id type: passes unchanged.
    let same = filter_tools_list_json(SDK_TOOLS_JSON, &json!(1), &mut policy).unwrap();
    assert_eq!(same, SDK_TOOLS_JSON);
}

#[test]
fn sdk_progress_stream_passes_byte_identical() {
    let mut f = SseToolsFilter::new(json!(1), policy);
    let mut out = Vec::new();
    for chunk in SDK_SLOW_SSE.chunks(7) {
        out.extend(f.push(chunk).unwrap());
    }
    out.extend(f.finish().unwrap());
    assert_eq!(out, SDK_SLOW_SSE);
    assert_eq!(sse_data_messages(SDK_SLOW_SSE).len(), 4);
    // Used (wrongly) on a tools/call response with the same id, the filter fails closed.
    let mut f = SseToolsFilter::new(json!(2), policy);
    assert!(f.push(SDK_SLOW_SSE).is_err());
}
