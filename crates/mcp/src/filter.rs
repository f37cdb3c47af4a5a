//! `tools/list` response filtering by splicing the original bytes.

use serde_json::Value;

use crate::json::{parse_document, Parser};
use crate::request::check_canonical_keys;
use crate::McpError;

/// Maximum nesting depth accepted in upstream responses (tool schemas can be deep).
pub const MAX_RESPONSE_DEPTH: usize = 128;

/// Filter the `result.tools` array of a JSON (`application/json`) response to `tools/list`.
///
/// If `body` is a JSON-RPC response whose `id` equals `request_id` and which carries a
/// `result`, `result.tools` must be an array of objects with a string `name`; every tool for
/// which `allow(name, tool)` returns false is removed. Everything else (other members of
/// `result` such as `nextCursor`, number formatting, key order, whitespace) is kept
/// byte-for-byte. When nothing is removed the output equals the input exactly.
///
/// Messages that are not a response to `request_id` (notifications, server requests, other
/// ids) and error responses pass unchanged, but must still be strict JSON objects.
///
/// # Errors
/// [`McpError::MalformedToolsList`] when the body is not strict JSON (duplicate keys, too
/// deep, invalid), not a single object, or a matching response is not a well-formed
/// `tools/list` result. The caller must then fail closed (never send the unfiltered body).
pub fn filter_tools_list_json(
    body: &[u8],
    request_id: &Value,
    allow: &mut dyn FnMut(&str, &Value) -> bool,
) -> Result<Vec<u8>, McpError> {
    Ok(filter_message(body, request_id, allow)?.unwrap_or_else(|| body.to_vec()))
}

/// Filter one JSON-RPC message; `Ok(None)` means "unchanged".
pub(crate) fn filter_message(
    data: &[u8],
    request_id: &Value,
    allow: &mut dyn FnMut(&str, &Value) -> bool,
) -> Result<Option<Vec<u8>>, McpError> {
    let value = parse_document(data, MAX_RESPONSE_DEPTH).map_err(|e| match e {
        McpError::DuplicateKey { .. } => McpError::MalformedToolsList("duplicate key"),
        McpError::TooDeep { .. } => McpError::MalformedToolsList("nesting too deep"),
        _ => McpError::MalformedToolsList("not valid JSON"),
    })?;
    let Value::Object(obj) = &value else {
        return Err(McpError::MalformedToolsList(
            "message is not a single JSON object",
        ));
    };
    check_canonical_keys(
        obj,
        &["jsonrpc", "id", "method", "result", "error", "params"],
    )
    .map_err(|_| McpError::MalformedToolsList("non-canonical key"))?;
    if obj.contains_key("method") || obj.get("id") != Some(request_id) {
        return Ok(None);
    }
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(McpError::MalformedToolsList("\"jsonrpc\" is not \"2.0\""));
    }
    let result = match (obj.get("result"), obj.get("error")) {
        (Some(_), Some(_)) => {
            return Err(McpError::MalformedToolsList(
                "both \"result\" and \"error\"",
            ))
        }
        (None, Some(_)) => return Ok(None),
        (None, None) => return Err(McpError::MalformedToolsList("no \"result\"")),
        (Some(Value::Object(r)), None) => r,
        (Some(_), None) => return Err(McpError::MalformedToolsList("\"result\" is not an object")),
    };
    check_canonical_keys(result, &["tools", "nextCursor"])
        .map_err(|_| McpError::MalformedToolsList("non-canonical key"))?;
    let Some(Value::Array(tools)) = result.get("tools") else {
        return Err(McpError::MalformedToolsList(
            "\"result.tools\" is not an array",
        ));
    };
    let mut keep = Vec::with_capacity(tools.len());
    for tool in tools {
        let Value::Object(t) = tool else {
            return Err(McpError::MalformedToolsList("a tool is not an object"));
        };
        check_canonical_keys(t, &["name"])
            .map_err(|_| McpError::MalformedToolsList("non-canonical key"))?;
        let Some(Value::String(name)) = t.get("name") else {
            return Err(McpError::MalformedToolsList(
                "a tool has no string \"name\"",
            ));
        };
        keep.push(allow(name, tool));
    }
    if keep.iter().all(|k| *k) {
        return Ok(None);
    }
    splice(data, &keep).map(Some)
}

/// Rebuild `data` with the unkept elements of `result.tools` removed.
fn splice(data: &[u8], keep: &[bool]) -> Result<Vec<u8>, McpError> {
    let src =
        std::str::from_utf8(data).map_err(|_| McpError::MalformedToolsList("not valid JSON"))?;
    let span_err = |_| McpError::MalformedToolsList("not valid JSON");
    let top = Parser::new(src, 0, MAX_RESPONSE_DEPTH)
        .object_member_spans()
        .map_err(span_err)?;
    let (_, (result_start, _)) = top
        .iter()
        .find(|(k, _)| k == "result")
        .ok_or(McpError::MalformedToolsList("no \"result\""))?;
    let members = Parser::new(src, *result_start, MAX_RESPONSE_DEPTH)
        .object_member_spans()
        .map_err(span_err)?;
    let (_, (tools_start, tools_end)) = members
        .iter()
        .find(|(k, _)| k == "tools")
        .ok_or(McpError::MalformedToolsList("no \"result.tools\""))?;
    let elements = Parser::new(src, *tools_start, MAX_RESPONSE_DEPTH)
        .array_element_spans()
        .map_err(span_err)?;
    if elements.len() != keep.len() {
        return Err(McpError::MalformedToolsList("inconsistent tools array"));
    }

    let mut out = Vec::with_capacity(data.len());
    out.extend_from_slice(&data[..=*tools_start]); // up to and including '['
    let mut first_kept = true;
    for (i, ((start, end), kept)) in elements.iter().zip(keep).enumerate() {
        if !kept {
            continue;
        }
        // The whitespace that preceded this element in the original text.
        let gap_start = if i == 0 {
            tools_start + 1
        } else {
            // Just after the comma separating the previous element from this one.
            let prev_end = elements[i - 1].1;
            data[prev_end..*start]
                .iter()
                .position(|b| *b == b',')
                .map_or(prev_end, |p| prev_end + p + 1)
        };
        if !first_kept {
            out.push(b',');
        }
        out.extend_from_slice(&data[gap_start..*start]);
        out.extend_from_slice(&data[*start..*end]);
        first_kept = false;
    }
    if let Some((_, last_end)) = elements.last() {
        if !first_kept {
            // Trailing whitespace before ']'.
            out.extend_from_slice(&data[*last_end..tools_end - 1]);
        }
    }
    out.extend_from_slice(&data[tools_end - 1..]); // ']' and the rest of the document
    Ok(out)
}
