//! chaperone-audit: the tamper-evident audit log (SPEC §9).
//!
//! * [`AuditEvent`]: one record (`session.created`, `request.decided`, ...). It has no
//!   field that can carry a credential value; `detail` is scrubbed of secret-looking keys.
//! * [`AuditLog::start`]: a writer task off the request path. [`AuditHandle::record`]
//!   never blocks (bounded queue; `Overloaded` when full, `SinkFailed` once the sink
//!   failed) so the caller can apply `on_audit_failure: deny|allow`.
//! * Every line carries `seq`, `prev_hash` and `hash`, where
//!   `hash = hex(SHA-256(prev_hash || canonical_json(record without "hash")))`
//!   (see [`canonical_json`] and `docs/audit.md`). Files rotate at `rotate_bytes`
//!   and the chain continues across files and restarts.
//! * [`verify_files`] checks a chain (edits, deletions, reordering, truncated lines,
//!   breaks between rotated files); [`show_session`] prints one task's timeline.

mod chain;
mod event;
mod verify;
mod writer;

pub use chain::{canonical_json, record_hash, GENESIS_HASH};
pub use event::{kind, now_rfc3339_ms, AuditEvent};
pub use verify::{show_session, verify_files, VerifyError, VerifyFailure, VerifyReport};
pub use writer::{AuditHandle, AuditLog, AuditOptions, AuditSink, ChainHead, FsyncPolicy};

use std::path::PathBuf;

/// Errors of the audit writer.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The queue to the writer is full; the record was dropped (counted in `dropped()`).
    #[error("audit queue is full; record dropped")]
    Overloaded,
    /// The writer's last write or fsync failed; it keeps retrying. The record was
    /// queued if there was room, but durability is not assured.
    #[error("audit sink failed; records are not being persisted")]
    SinkFailed,
    /// The writer task has stopped.
    #[error("audit writer has stopped")]
    Closed,
    /// An existing audit file cannot be continued (its last record is incomplete or
    /// does not verify). The writer refuses to start rather than break the chain.
    #[error("cannot continue audit log {}: line {line}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line number of the offending line.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// Opening, reading or writing a file failed.
    #[error("audit file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Invalid [`AuditOptions`].
    #[error("invalid audit options: {0}")]
    Invalid(String),
    /// [`AuditLog::start`] was called outside a Tokio runtime.
    #[error("audit writer must be started inside a Tokio runtime")]
    NoRuntime,
    /// A record could not be encoded as JSON.
    #[error("audit record could not be encoded: {0}")]
    Encode(String),
}
