//! Fuzz the incremental SSE tools/list filter. The first byte chooses where the rest of the
//! input is split into two chunks; tools with an even-length name are allowed. The filter
//! must never panic and chunking must never change the result.
#![no_main]

use libfuzzer_sys::fuzz_target;

const CAP: usize = 4096;

fn run(stream: &[u8], cut: usize) -> Result<Vec<u8>, chaperone_mcp::McpError> {
    let id = chaperone_mcp::parse_request(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#, 64)
        .ok()
        .and_then(|r| r.id)
        .unwrap_or_default();
    let mut f = chaperone_mcp::SseToolsFilter::new(id, |name: &str, _| name.len() % 2 == 0)
        .with_max_event_bytes(CAP);
    let mut out = f.push(&stream[..cut])?;
    out.extend(f.push(&stream[cut..])?);
    out.extend(f.finish()?);
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let cut = usize::from(first) % (stream.len() + 1);
    let split = run(stream, cut);
    let whole = run(stream, 0);
    match (&split, &whole) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "chunking changed the output"),
        (Err(_), Err(_)) => {}
        // The cap applies to the buffered partial event, which depends on chunking.
        _ => assert!(
            stream.len() > CAP,
            "chunking changed the outcome: {split:?} vs {whole:?}"
        ),
    }
});
