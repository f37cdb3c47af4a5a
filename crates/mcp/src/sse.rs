//! Incremental `text/event-stream` filter for `tools/list` responses.

use serde_json::Value;

use crate::filter::filter_message;
use crate::McpError;

/// Default cap for one buffered (incomplete) SSE event, in bytes (4 MiB).
pub const DEFAULT_MAX_SSE_EVENT_BYTES: usize = 4 * 1024 * 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// An incremental filter over an SSE response stream to a `tools/list` POST.
///
/// Feed the upstream body with [`push`](Self::push) and send whatever it returns to the agent
/// at once; call [`finish`](Self::finish) at the end of the stream. Only the current,
/// incomplete event is buffered (at most `max_event_bytes`); complete events are emitted as
/// soon as their terminating blank line arrives.
///
/// For each complete event whose type is `message` (the default; the only type MCP clients
/// act on) and which carries data, the `data:` lines are joined with `\n` (per the SSE
/// specification) and the message is treated like a JSON body by
/// [`filter_tools_list_json`](crate::filter_tools_list_json): a response to `request_id`
/// has its disallowed tools removed and the event is re-emitted with the new data (its
/// comments and `id:`/`event:`/`retry:` lines kept, in order, with the original line
/// endings). Every other event passes byte-identical. LF, CRLF and CR line endings and a
/// leading byte-order mark are understood.
///
/// Any error poisons the filter: later calls return [`McpError::SseFilterFailed`] and the
/// caller must abort the stream to the agent.
pub struct SseToolsFilter<F>
where
    F: FnMut(&str, &Value) -> bool,
{
    request_id: Value,
    allow: F,
    buf: Vec<u8>,
    /// Where scanning for line terminators resumes (relative to `buf`).
    scan: usize,
    /// Start of the current (incomplete) line (relative to `buf`).
    line_start: usize,
    max_event_bytes: usize,
    first_event: bool,
    failed: bool,
}

impl<F> std::fmt::Debug for SseToolsFilter<F>
where
    F: FnMut(&str, &Value) -> bool,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseToolsFilter")
            .field("request_id", &self.request_id)
            .field("buffered_bytes", &self.buf.len())
            .field("max_event_bytes", &self.max_event_bytes)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl<F> SseToolsFilter<F>
where
    F: FnMut(&str, &Value) -> bool,
{
    /// A filter for the response stream to the `tools/list` request with id `request_id`;
    /// `allow(name, tool)` decides whether the agent may see each tool.
    pub fn new(request_id: Value, allow: F) -> Self {
        Self {
            request_id,
            allow,
            buf: Vec::new(),
            scan: 0,
            line_start: 0,
            max_event_bytes: DEFAULT_MAX_SSE_EVENT_BYTES,
            first_event: true,
            failed: false,
        }
    }

    /// Set the cap for one buffered event (default [`DEFAULT_MAX_SSE_EVENT_BYTES`]).
    #[must_use]
    pub fn with_max_event_bytes(mut self, max_event_bytes: usize) -> Self {
        self.max_event_bytes = max_event_bytes;
        self
    }

    /// Number of bytes currently buffered (the incomplete event).
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feed the next chunk of the upstream body; returns the bytes to send downstream now.
    ///
    /// # Errors
    /// A malformed `tools/list` response (see [`filter_tools_list_json`](crate::filter_tools_list_json)),
    /// non-JSON data in a `message` event, an incomplete event over the cap
    /// ([`McpError::SseEventTooLarge`]), or a previous failure ([`McpError::SseFilterFailed`]).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, McpError> {
        if self.failed {
            return Err(McpError::SseFilterFailed);
        }
        let result = self.push_inner(chunk);
        if result.is_err() {
            self.poison();
        }
        result
    }

    /// Signal the end of the upstream body; returns any final bytes to send.
    ///
    /// # Errors
    /// [`McpError::SseIncompleteEvent`] when the stream ends inside an event (fail closed),
    /// or any error [`push`](Self::push) can return for the last event.
    pub fn finish(&mut self) -> Result<Vec<u8>, McpError> {
        if self.failed {
            return Err(McpError::SseFilterFailed);
        }
        let result = self.finish_inner();
        // Nothing may be pushed after the end of the stream.
        self.poison();
        result
    }

    fn poison(&mut self) {
        self.failed = true;
        self.buf = Vec::new();
        self.scan = 0;
        self.line_start = 0;
    }

    fn push_inner(&mut self, chunk: &[u8]) -> Result<Vec<u8>, McpError> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        let len = self.buf.len();
        let mut event_start = 0;
        let mut i = self.scan;
        let mut line_start = self.line_start;
        while let Some(rel) = self.buf[i..]
            .iter()
            .position(|b| *b == b'\n' || *b == b'\r')
        {
            let at = i + rel;
            let next = if self.buf[at] == b'\n' {
                at + 1
            } else if at + 1 < len {
                if self.buf[at + 1] == b'\n' {
                    at + 2
                } else {
                    at + 1
                }
            } else {
                // A CR at the end of the data: it may be the first half of a CRLF.
                i = at;
                break;
            };
            if at == line_start {
                // A blank line: the event [event_start, next) is complete.
                process_event(
                    &self.buf[event_start..next],
                    &self.request_id,
                    &mut self.allow,
                    &mut self.first_event,
                    &mut out,
                )?;
                event_start = next;
            }
            line_start = next;
            i = next;
        }
        if i < len && self.buf[i] != b'\r' {
            i = len;
        }
        self.buf.drain(..event_start);
        self.scan = i - event_start;
        self.line_start = line_start - event_start;
        if self.buf.len() > self.max_event_bytes {
            return Err(McpError::SseEventTooLarge {
                limit: self.max_event_bytes,
            });
        }
        Ok(out)
    }

    fn finish_inner(&mut self) -> Result<Vec<u8>, McpError> {
        let mut out = Vec::new();
        if self.buf.is_empty() {
            return Ok(out);
        }
        // The only way complete data can remain is a final CR that was waiting for a
        // possible LF; at the end of the stream it is a line terminator on its own.
        let last = self.buf.len() - 1;
        if self.buf[last] == b'\r' && self.line_start == last {
            let event = std::mem::take(&mut self.buf);
            process_event(
                &event,
                &self.request_id,
                &mut self.allow,
                &mut self.first_event,
                &mut out,
            )?;
            return Ok(out);
        }
        Err(McpError::SseIncompleteEvent)
    }
}

/// One line of an event: content without terminator, and the terminator bytes.
struct Line<'a> {
    content: &'a [u8],
    terminator: &'a [u8],
}

fn split_lines(event: &[u8]) -> Vec<Line<'_>> {
    let mut lines = Vec::new();
    let mut start = 0;
    while start < event.len() {
        let Some(rel) = event[start..]
            .iter()
            .position(|b| *b == b'\n' || *b == b'\r')
        else {
            // Not reachable for complete events; keep the bytes anyway.
            lines.push(Line {
                content: &event[start..],
                terminator: &[],
            });
            break;
        };
        let at = start + rel;
        let end = if event[at] == b'\r' && event.get(at + 1) == Some(&b'\n') {
            at + 2
        } else {
            at + 1
        };
        lines.push(Line {
            content: &event[start..at],
            terminator: &event[at..end],
        });
        start = end;
    }
    lines
}

/// Split a non-comment line into field name and value (one leading space stripped).
fn field(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|b| *b == b':') {
        Some(colon) => {
            let value = &line[colon + 1..];
            (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
        }
        None => (line, &[]),
    }
}

fn process_event<F>(
    event: &[u8],
    request_id: &Value,
    allow: &mut F,
    first_event: &mut bool,
    out: &mut Vec<u8>,
) -> Result<(), McpError>
where
    F: FnMut(&str, &Value) -> bool,
{
    // A byte-order mark at the very start of the stream is ignored by SSE parsers.
    let skip = if std::mem::take(first_event) && event.starts_with(BOM) {
        BOM.len()
    } else {
        0
    };
    let lines = split_lines(&event[skip..]);
    let mut data: Vec<u8> = Vec::new();
    let mut has_data = false;
    let mut event_type: &[u8] = b"";
    for line in &lines {
        if line.content.is_empty() || line.content[0] == b':' {
            continue;
        }
        match field(line.content) {
            (b"data", value) => {
                data.extend_from_slice(value);
                data.push(b'\n');
                has_data = true;
            }
            (b"event", value) => event_type = value,
            _ => {}
        }
    }
    let is_message = event_type.is_empty() || event_type == b"message";
    if !has_data || !is_message {
        out.extend_from_slice(event);
        return Ok(());
    }
    data.pop(); // the final '\n'
    if data.is_empty() {
        // Empty data: the client dispatches nothing (e.g. a resumability priming event).
        out.extend_from_slice(event);
        return Ok(());
    }
    let Some(new_data) = filter_message(&data, request_id, allow)? else {
        out.extend_from_slice(event);
        return Ok(());
    };
    out.extend_from_slice(&event[..skip]);
    let mut wrote_data = false;
    for line in &lines {
        let is_data =
            !line.content.is_empty() && line.content[0] != b':' && field(line.content).0 == b"data";
        if !is_data {
            out.extend_from_slice(line.content);
            out.extend_from_slice(line.terminator);
        } else if !wrote_data {
            wrote_data = true;
            for piece in new_data.split(|b| *b == b'\n') {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(piece);
                out.extend_from_slice(line.terminator);
            }
        }
    }
    Ok(())
}
