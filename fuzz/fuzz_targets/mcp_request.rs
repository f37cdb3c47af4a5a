//! Fuzz the strict MCP request parser: arbitrary bytes must never panic; accepted requests
//! must be internally consistent, and every rejection must yield a strict JSON-RPC error body.
#![no_main]

use libfuzzer_sys::fuzz_target;

const MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    match chaperone_mcp::parse_request(data, MAX) {
        Ok(req) => {
            // A tool name only ever comes from a tools/call request.
            assert!(req.tool.is_none() || req.method == "tools/call");
            if req.kind == chaperone_mcp::MessageKind::Response {
                assert!(req.method.is_empty() && req.id.is_some());
            } else {
                assert!(!req.method.is_empty());
            }
            // Parsing is deterministic.
            assert_eq!(chaperone_mcp::parse_request(data, MAX), Ok(req.clone()));
            let _ = req.policy_input();
        }
        Err(e) => {
            // The error body is a single strict JSON object (an error response, so the
            // tools/list filter passes it unchanged).
            let body = e.jsonrpc_error_body(None);
            let id = Default::default();
            let out = chaperone_mcp::filter_tools_list_json(&body, &id, &mut |_, _| true)
                .expect("error body is not strict JSON");
            assert_eq!(out, body);
            assert!((-32700..=-32600).contains(&e.jsonrpc_code()));
        }
    }
});
