//! Chain verification and the per-session timeline.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::chain::{canonical_json, is_hash, record_hash, GENESIS_HASH};
use crate::event::kind;
use crate::AuditError;

/// Longest accepted line (bytes, without the newline).
pub(crate) const MAX_LINE: usize = 1 << 20;

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Files checked.
    pub files: usize,
    /// Records checked.
    pub records: u64,
    /// `seq` of the first record.
    pub first_seq: u64,
    /// `prev_hash` of the first record ([`GENESIS_HASH`] when the chain starts here).
    pub first_prev_hash: String,
    /// `seq` of the last record.
    pub last_seq: u64,
    /// `hash` of the last record: compare it with an externally kept anchor to detect
    /// a removed tail.
    pub last_hash: String,
    /// The chain starts at genesis (`seq` 1, zero `prev_hash`) rather than mid-chain
    /// (e.g. older rotated files were not given).
    pub from_genesis: bool,
}

/// Why a record failed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyFailure {
    /// The file could not be read.
    Io(String),
    /// The file has no records.
    Empty,
    /// The last line has no terminating newline (truncated write or truncated file).
    Truncated,
    /// A line exceeds the size limit.
    LineTooLong,
    /// A line is not a JSON object.
    NotJson(String),
    /// A required member is missing or malformed.
    BadField(&'static str),
    /// The line is not in canonical form (edited by hand, reformatted, duplicate keys).
    NotCanonical,
    /// `hash` does not match the record's content (the record was edited).
    HashMismatch {
        /// Hash recomputed from the content.
        computed: String,
    },
    /// `prev_hash` does not match the previous record's `hash` (records deleted,
    /// inserted or reordered, or files given out of order).
    BrokenLink {
        /// The previous record's hash.
        expected: String,
    },
    /// `seq` does not follow the previous record's.
    SeqGap {
        /// The expected `seq`.
        expected: u64,
    },
    /// The first record is neither at genesis nor a file header (`audit.rotated` /
    /// `audit.started`): records were removed from the beginning.
    MissingHead,
}

impl std::fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerifyFailure::Io(e) => write!(f, "cannot read: {e}"),
            VerifyFailure::Empty => f.write_str("file has no records"),
            VerifyFailure::Truncated => f.write_str("incomplete last line (truncated)"),
            VerifyFailure::LineTooLong => write!(f, "line longer than {MAX_LINE} bytes"),
            VerifyFailure::NotJson(e) => write!(f, "not a JSON object: {e}"),
            VerifyFailure::BadField(name) => write!(f, "missing or malformed `{name}`"),
            VerifyFailure::NotCanonical => f.write_str("record is not in canonical form (modified)"),
            VerifyFailure::HashMismatch { computed } => write!(f, "hash mismatch: content hashes to {computed} (record modified)"),
            VerifyFailure::BrokenLink { expected } => {
                write!(f, "prev_hash does not match the previous record's hash {expected} (records deleted, inserted or reordered)")
            }
            VerifyFailure::SeqGap { expected } => write!(f, "seq out of order: expected {expected}"),
            VerifyFailure::MissingHead => {
                f.write_str("chain does not start at genesis or at a file header (records removed from the beginning)")
            }
        }
    }
}

/// The first broken record: file, 1-based line, its `seq` if readable, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {}{reason}", file.display(), seq.map(|s| format!("seq {s}: ")).unwrap_or_default())]
pub struct VerifyError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line number (0: the file as a whole).
    pub line: u64,
    /// `seq` of the offending record, when it could be read.
    pub seq: Option<u64>,
    /// What is wrong.
    pub reason: VerifyFailure,
}

pub(crate) struct Checked {
    pub(crate) seq: u64,
    pub(crate) prev_hash: String,
    pub(crate) hash: String,
    pub(crate) value: Value,
}

/// Check one line (without its newline) on its own: JSON object, canonical, fields,
/// and the hash of its content. Chain links are the caller's business.
pub(crate) fn check_line(line: &[u8]) -> Result<Checked, (Option<u64>, VerifyFailure)> {
    let value: Value =
        serde_json::from_slice(line).map_err(|e| (None, VerifyFailure::NotJson(e.to_string())))?;
    let Value::Object(m) = &value else {
        return Err((None, VerifyFailure::NotJson("not an object".into())));
    };
    let seq = m.get("seq").and_then(Value::as_u64);
    let fail = |f| (seq, f);
    let seq_v = seq.ok_or(fail(VerifyFailure::BadField("seq")))?;
    let prev_hash = m
        .get("prev_hash")
        .and_then(Value::as_str)
        .filter(|s| is_hash(s))
        .ok_or(fail(VerifyFailure::BadField("prev_hash")))?;
    let hash = m
        .get("hash")
        .and_then(Value::as_str)
        .filter(|s| is_hash(s))
        .ok_or(fail(VerifyFailure::BadField("hash")))?;
    if canonical_json(&value) != line {
        return Err(fail(VerifyFailure::NotCanonical));
    }
    let mut without = m.clone();
    without.remove("hash");
    let computed = record_hash(prev_hash, &Value::Object(without));
    if computed != hash {
        return Err(fail(VerifyFailure::HashMismatch { computed }));
    }
    Ok(Checked {
        seq: seq_v,
        prev_hash: prev_hash.to_owned(),
        hash: hash.to_owned(),
        value,
    })
}

/// Iterate the complete lines of a file; the final item is `Err(Truncated)` when
/// the file does not end with a newline.
fn for_each_line(
    path: &Path,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), VerifyError>,
) -> Result<u64, VerifyError> {
    let err = |line, reason| VerifyError {
        file: path.to_owned(),
        line,
        seq: None,
        reason,
    };
    let file = File::open(path).map_err(|e| err(0, VerifyFailure::Io(e.to_string())))?;
    let mut r = BufReader::new(file);
    let mut buf = Vec::new();
    let mut n = 0u64;
    loop {
        buf.clear();
        let got = (&mut r)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| err(n + 1, VerifyFailure::Io(e.to_string())))?;
        if got == 0 {
            return Ok(n);
        }
        n += 1;
        if buf.last() != Some(&b'\n') {
            let reason = if buf.len() > MAX_LINE {
                VerifyFailure::LineTooLong
            } else {
                VerifyFailure::Truncated
            };
            return Err(err(n, reason));
        }
        f(n, &buf[..buf.len() - 1])?;
    }
}

/// Verify the hash chain of `paths`, given oldest first (rotated files, then the live
/// file). Returns the first broken record.
///
/// Detects: an edited, inserted, deleted or reordered record; a reformatted line; a
/// truncated final line; an empty file; a file missing between rotated files or
/// files given out of order; records removed from the beginning of the first file
/// (unless cut exactly at an `audit.started` record). A chain may start mid-way (older
/// rotated files deleted by retention) at an `audit.rotated`/`audit.started` header;
/// the report says so (`from_genesis: false`). Not detectable without an external
/// anchor: removal of whole records at the end of the last file (compare
/// [`VerifyReport::last_hash`] / `last_seq` with a recorded head) or of whole files at
/// the start.
pub fn verify_files(paths: &[PathBuf]) -> Result<VerifyReport, VerifyError> {
    let mut prev: Option<(u64, String)> = None;
    let mut first: Option<(u64, String)> = None;
    let mut records = 0u64;
    for path in paths {
        let mut in_file = 0u64;
        for_each_line(path, |line_no, line| {
            let e = |seq, reason| VerifyError {
                file: path.clone(),
                line: line_no,
                seq,
                reason,
            };
            let rec = check_line(line).map_err(|(seq, f)| e(seq, f))?;
            match &prev {
                None => {
                    let event = rec.value.get("event").and_then(Value::as_str).unwrap_or("");
                    if rec.prev_hash == GENESIS_HASH {
                        if rec.seq != 1 {
                            return Err(e(Some(rec.seq), VerifyFailure::SeqGap { expected: 1 }));
                        }
                    } else if event != kind::AUDIT_ROTATED && event != kind::AUDIT_STARTED {
                        return Err(e(Some(rec.seq), VerifyFailure::MissingHead));
                    }
                    first = Some((rec.seq, rec.prev_hash.clone()));
                }
                Some((pseq, phash)) => {
                    if &rec.prev_hash != phash {
                        return Err(e(
                            Some(rec.seq),
                            VerifyFailure::BrokenLink {
                                expected: phash.clone(),
                            },
                        ));
                    }
                    if rec.seq != pseq + 1 {
                        return Err(e(
                            Some(rec.seq),
                            VerifyFailure::SeqGap { expected: pseq + 1 },
                        ));
                    }
                }
            }
            prev = Some((rec.seq, rec.hash));
            in_file += 1;
            records += 1;
            Ok(())
        })?;
        if in_file == 0 {
            return Err(VerifyError {
                file: path.clone(),
                line: 0,
                seq: None,
                reason: VerifyFailure::Empty,
            });
        }
    }
    match (first, prev) {
        (Some((first_seq, first_prev_hash)), Some((last_seq, last_hash))) => Ok(VerifyReport {
            files: paths.len(),
            records,
            first_seq,
            from_genesis: first_prev_hash == GENESIS_HASH,
            first_prev_hash,
            last_seq,
            last_hash,
        }),
        _ => Err(VerifyError {
            file: PathBuf::new(),
            line: 0,
            seq: None,
            reason: VerifyFailure::Empty,
        }),
    }
}

/// A readable timeline of one session across `paths` (oldest first): one line per
/// record with time, event, route, method and path, decision, status, reasons,
/// credential and cause. Lines that are not JSON are skipped (run [`verify_files`]
/// to check integrity); unreadable files are an error.
pub fn show_session(paths: &[PathBuf], session_id: &str) -> Result<String, AuditError> {
    let mut out = String::new();
    let mut header = false;
    let mut count = 0u64;
    for path in paths {
        let file = File::open(path).map_err(|source| AuditError::Io {
            path: path.clone(),
            source,
        })?;
        for line in BufReader::new(file).split(b'\n') {
            let line = line.map_err(|source| AuditError::Io {
                path: path.clone(),
                source,
            })?;
            let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            if v.get("session_id").and_then(Value::as_str) != Some(session_id) {
                continue;
            }
            let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("");
            if !header {
                header = true;
                let _ = writeln!(out, "session {session_id}");
                if !s("spiffe_id").is_empty() {
                    let _ = writeln!(out, "  identity: {}", s("spiffe_id"));
                }
                if !s("task").is_empty() {
                    let _ = writeln!(out, "  task:     {}", s("task"));
                }
                if !s("intent_summary").is_empty() {
                    let _ = writeln!(out, "  intent:   {}", s("intent_summary"));
                }
                if let Some(Value::Array(chain)) = v.get("delegation_chain") {
                    let chain: Vec<&str> = chain.iter().filter_map(Value::as_str).collect();
                    let _ = writeln!(out, "  chain:    {}", chain.join(" -> "));
                }
            }
            count += 1;
            let mut l = format!("{:<24}  {:<18}", s("time"), s("event"));
            let mut push = |x: String| {
                if !x.is_empty() {
                    l.push_str("  ");
                    l.push_str(&x);
                }
            };
            push(s("route").to_owned());
            push(format!("{} {}", s("method"), s("path")).trim().to_owned());
            if !s("mcp_tool").is_empty() {
                push(format!("tool={}", s("mcp_tool")));
            }
            push(s("decision").to_owned());
            push(
                v.get("status")
                    .and_then(Value::as_u64)
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
            );
            if let Some(Value::Array(r)) = v.get("reasons") {
                let r: Vec<&str> = r.iter().filter_map(Value::as_str).collect();
                push(format!("[{}]", r.join("; ")));
            }
            if !s("credential").is_empty() {
                push(format!("credential={}", s("credential")));
            }
            if !s("cause").is_empty() {
                push(format!("cause={}", s("cause")));
            }
            let _ = writeln!(out, "{l}");
        }
    }
    if count == 0 {
        let _ = writeln!(out, "no records for session {session_id}");
    } else {
        let _ = writeln!(out, "{count} records");
    }
    Ok(out)
}
