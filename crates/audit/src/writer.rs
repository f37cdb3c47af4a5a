//! The asynchronous, hash-chaining writer.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::chain::{chain_event, GENESIS_HASH};
use crate::event::{kind, AuditEvent};
use crate::verify::{check_line, MAX_LINE};
use crate::AuditError;

/// After writing a batch, the writer waits this long before taking the next one.
const COALESCE: Duration = Duration::from_millis(2);
/// Chained-but-unwritten bytes kept while the sink fails; beyond this, new records are
/// dropped (and counted) without entering the chain.
const MAX_PENDING_BYTES: usize = 16 << 20;
/// Records taken from the queue per write.
const MAX_BATCH: usize = 1024;
/// Retry backoff bounds while the sink fails.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Retries after the last handle is dropped before pending records are given up.
const FINAL_RETRIES: u32 = 3;
/// Pause between rotation attempts after a failed rotation.
const ROTATE_RETRY: Duration = Duration::from_secs(60);

/// Where records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    /// Standard output (`audit.path: "-"`). Each start begins a new chain.
    Stdout,
    /// An append-only file; the chain continues across restarts and rotations.
    File(PathBuf),
    /// Records are chained and counted but not stored (tests, benchmarks).
    Discard,
}

/// When written data is forced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `fdatasync` after every batch (strongest; costs throughput on slow disks).
    EveryBatch,
    /// At most this long after a write, and on every [`AuditHandle::flush`].
    Interval(Duration),
}

/// Writer options (a small struct of its own so this crate does not depend on config).
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// Destination.
    pub sink: AuditSink,
    /// Queue capacity in records; `record` returns `Overloaded` when it is full.
    pub buffer: usize,
    /// Rotate a file sink once it reaches this many bytes (`None`: never).
    pub rotate_bytes: Option<u64>,
    /// Durability policy.
    pub fsync: FsyncPolicy,
}

impl AuditOptions {
    /// Options for `sink` with a 8192-record queue, no rotation, fsync every second.
    pub fn new(sink: AuditSink) -> Self {
        Self {
            sink,
            buffer: 8192,
            rotate_bytes: None,
            fsync: FsyncPolicy::Interval(Duration::from_secs(1)),
        }
    }
}

/// Position of the chain: last written record's `seq` and `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// `seq` of the last written record.
    pub seq: u64,
    /// `hash` of the last written record (an anchor for detecting a removed tail).
    pub hash: String,
}

enum Msg {
    Event(Box<AuditEvent>),
    Flush(oneshot::Sender<Result<(), AuditError>>),
}

struct Shared {
    dropped: AtomicU64,
    written: AtomicU64,
    healthy: AtomicBool,
    head: Mutex<ChainHead>,
}

/// Cheap, cloneable handle for submitting records.
#[derive(Clone)]
pub struct AuditHandle {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AuditHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditHandle")
            .field("written", &self.written())
            .field("dropped", &self.dropped())
            .field("healthy", &self.healthy())
            .finish()
    }
}

impl AuditHandle {
    /// Queue a record without blocking.
    ///
    /// * `Ok(())`: queued and the sink is healthy.
    /// * `Err(Overloaded)`: the queue is full; the record was dropped (`dropped()` + 1).
    /// * `Err(SinkFailed)`: the sink's last write failed. The record was still queued if
    ///   there was room (it is written if the sink recovers), else dropped.
    /// * `Err(Closed)`: the writer has stopped; dropped.
    ///
    /// The caller decides what an error means (`on_audit_failure: deny|allow`).
    pub fn record(&self, ev: AuditEvent) -> Result<(), AuditError> {
        let healthy = self.shared.healthy.load(Ordering::Acquire);
        match self.tx.try_send(Msg::Event(Box::new(ev))) {
            Ok(()) if healthy => Ok(()),
            Ok(()) => Err(AuditError::SinkFailed),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                Err(if healthy {
                    AuditError::Overloaded
                } else {
                    AuditError::SinkFailed
                })
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                Err(AuditError::Closed)
            }
        }
    }

    /// Wait until every record queued before this call is written and fsynced.
    /// Fails with `SinkFailed` if that write or fsync failed, `Closed` if the writer stopped.
    pub async fn flush(&self) -> Result<(), AuditError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Flush(tx))
            .await
            .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Records dropped because the queue was full, the writer had stopped, or the
    /// sink had been failing for so long that the retry buffer was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Records written to the sink (including the writer's own `audit.*` records).
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }

    /// `false` from a failed write/fsync until the next successful one.
    pub fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }

    /// The last written record's `seq` and `hash`.
    pub fn head(&self) -> ChainHead {
        self.shared
            .head
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Entry point of the writer.
#[derive(Debug)]
pub struct AuditLog;

impl AuditLog {
    /// Open the sink and start the writer task on the current Tokio runtime.
    ///
    /// For a file sink an existing file is continued from its last record; if that
    /// line is incomplete or does not verify, start fails with [`AuditError::Corrupt`]
    /// naming the file and line (repair or move the file; the chain is never silently
    /// restarted). If the file is missing or empty but rotated siblings
    /// (`<path>.<unix_ts>[.<n>]`) exist, the chain continues from the newest one. The
    /// first record written is `audit.started`, synchronously, so an unwritable sink
    /// fails here.
    ///
    /// The task ends after every handle is dropped and the queue is drained.
    pub fn start(opts: AuditOptions) -> Result<(AuditHandle, JoinHandle<()>), AuditError> {
        if opts.buffer == 0 {
            return Err(AuditError::Invalid("buffer must be at least 1".into()));
        }
        if opts.rotate_bytes == Some(0) {
            return Err(AuditError::Invalid("rotate_bytes must be positive".into()));
        }
        let rt = tokio::runtime::Handle::try_current().map_err(|_| AuditError::NoRuntime)?;
        let (sink, seq, last_hash, continued) = match &opts.sink {
            AuditSink::Stdout => (Sink::Stdout, 0, GENESIS_HASH.to_owned(), None),
            AuditSink::Discard => (Sink::Discard, 0, GENESIS_HASH.to_owned(), None),
            AuditSink::File(p) => open_file_sink(p)?,
        };
        let mut w = Box::new(Writer {
            sink,
            seq,
            last_hash,
            pending: Vec::new(),
            pending_records: 0,
            dirty: false,
            last_sync: Instant::now(),
            rotate_bytes: opts.rotate_bytes,
            rotate_blocked_until: None,
            dropped_pending: 0,
        });
        let mut started = AuditEvent::new(kind::AUDIT_STARTED)
            .with_detail("version", json!(env!("CARGO_PKG_VERSION")));
        if let Some(from) = &continued {
            started = started.with_detail("continued_from", json!(from));
        }
        w.append(&mut started)?;
        let written = w.commit(true).map_err(|source| AuditError::Io {
            path: w.sink.path(),
            source,
        })?;
        let shared = Arc::new(Shared {
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(written),
            healthy: AtomicBool::new(true),
            head: Mutex::new(ChainHead {
                seq: w.seq,
                hash: w.last_hash.clone(),
            }),
        });
        let (tx, rx) = mpsc::channel(opts.buffer);
        let batch = opts.buffer.min(MAX_BATCH);
        let task = rt.spawn(run(w, rx, Arc::clone(&shared), batch, opts.fsync));
        Ok((AuditHandle { tx, shared }, task))
    }
}

enum Sink {
    Stdout,
    Discard,
    File(FileSink),
}

impl Sink {
    fn path(&self) -> PathBuf {
        match self {
            Sink::Stdout => PathBuf::from("-"),
            Sink::Discard => PathBuf::from("(discard)"),
            Sink::File(f) => f.path.clone(),
        }
    }
}

struct FileSink {
    path: PathBuf,
    file: File,
    /// Bytes known to be completely written (a failed write is truncated back to this).
    committed: u64,
    /// A regular file (can be truncated, scanned and rotated), not e.g. a FIFO or /dev/full.
    regular: bool,
    /// The last write failed part-way; truncate before retrying.
    needs_truncate: bool,
}

struct Writer {
    sink: Sink,
    /// Chain position including pending (chained but unwritten) records.
    seq: u64,
    last_hash: String,
    pending: Vec<u8>,
    pending_records: u64,
    dirty: bool,
    last_sync: Instant,
    rotate_bytes: Option<u64>,
    rotate_blocked_until: Option<Instant>,
    dropped_pending: u64,
}

impl Writer {
    /// Chain `ev` and append its line to the pending buffer.
    fn append(&mut self, ev: &mut AuditEvent) -> Result<(), AuditError> {
        ev.normalise();
        let seq = self.seq + 1;
        let (hash, line) = chain_event(&self.last_hash, seq, ev);
        if line.len() >= MAX_LINE {
            return Err(AuditError::Encode(format!(
                "record of {} bytes exceeds the line limit",
                line.len()
            )));
        }
        self.pending.extend_from_slice(&line);
        self.pending.push(b'\n');
        self.pending_records += 1;
        self.seq = seq;
        self.last_hash = hash;
        Ok(())
    }

    /// Write pending bytes (and fsync if asked). Returns the records written.
    fn commit(&mut self, sync: bool) -> std::io::Result<u64> {
        let n = self.pending_records;
        if !self.pending.is_empty() {
            match &mut self.sink {
                Sink::Discard => {}
                Sink::Stdout => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&self.pending)?;
                    out.flush()?;
                }
                Sink::File(f) => {
                    if f.needs_truncate && f.regular {
                        f.file.set_len(f.committed)?;
                    }
                    f.needs_truncate = true;
                    f.file.write_all(&self.pending)?;
                    f.needs_truncate = false;
                    f.committed += self.pending.len() as u64;
                }
            }
            self.pending.clear();
            self.pending_records = 0;
            self.dirty = true;
        }
        if sync && self.dirty {
            if let Sink::File(f) = &self.sink {
                // fsync is meaningless (EINVAL) on pipes and character devices.
                if f.regular {
                    f.file.sync_data()?;
                }
            }
            self.dirty = false;
            self.last_sync = Instant::now();
        }
        let rotated = self.maybe_rotate();
        Ok(n + rotated)
    }

    /// Whether [`Writer::commit`] cannot block for long: discard, or a regular file
    /// without fsync and without a rotation due after this write.
    fn commit_is_cheap(&self, sync: bool) -> bool {
        match &self.sink {
            Sink::Discard => true,
            Sink::Stdout => false,
            Sink::File(f) => {
                let after = f.committed + self.pending.len() as u64;
                f.regular && !sync && self.rotate_bytes.is_none_or(|limit| after < limit)
            }
        }
    }

    /// Rotate when the file reached `rotate_bytes`. Failures are logged and retried
    /// later; they never stop writing. Returns records written (the header).
    fn maybe_rotate(&mut self) -> u64 {
        let (Some(limit), Sink::File(f)) = (self.rotate_bytes, &self.sink) else {
            return 0;
        };
        if !f.regular
            || f.committed < limit
            || self
                .rotate_blocked_until
                .is_some_and(|t| Instant::now() < t)
        {
            return 0;
        }
        match self.rotate() {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "audit log rotation failed; continuing in the current file");
                self.rotate_blocked_until = Some(Instant::now() + ROTATE_RETRY);
                0
            }
        }
    }

    fn rotate(&mut self) -> std::io::Result<u64> {
        let Sink::File(f) = &mut self.sink else {
            return Ok(0);
        };
        f.file.sync_all()?;
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut rotated = PathBuf::from(format!("{}.{ts}", f.path.display()));
        let mut n = 1;
        while rotated.exists() {
            rotated = PathBuf::from(format!("{}.{ts}.{n}", f.path.display()));
            n += 1;
        }
        std::fs::rename(&f.path, &rotated)?;
        let new = match OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&f.path)
        {
            Ok(file) => file,
            Err(e) => {
                // Put the old file back so writing simply continues there.
                if let Err(back) = std::fs::rename(&rotated, &f.path) {
                    tracing::error!(error = %back, file = %rotated.display(), "could not undo audit rotation");
                }
                return Err(e);
            }
        };
        f.file = new;
        f.committed = 0;
        f.needs_truncate = false;
        sync_dir(&f.path);
        let name = rotated
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        tracing::info!(file = %rotated.display(), seq = self.seq, hash = %self.last_hash, "audit log rotated");
        let mut header =
            AuditEvent::new(kind::AUDIT_ROTATED).with_detail("previous_file", json!(name));
        if let Err(e) = self.append(&mut header) {
            tracing::error!(error = %e, "audit rotation header could not be encoded");
            return Ok(0);
        }
        // Write the header now; if that fails it stays pending and is retried first.
        let n = self.pending_records;
        if let Sink::File(f) = &mut self.sink {
            f.needs_truncate = true;
            f.file.write_all(&self.pending)?;
            f.file.sync_data()?;
            f.needs_truncate = false;
            f.committed += self.pending.len() as u64;
        }
        self.pending.clear();
        self.pending_records = 0;
        Ok(n)
    }
}

fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// Open (or create) a file sink and find where its chain continues.
fn open_file_sink(path: &Path) -> Result<(Sink, u64, String, Option<String>), AuditError> {
    let io = |source| AuditError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(e)),
    };
    let regular = meta.as_ref().is_none_or(|m| m.is_file());
    let (seq, hash, continued) = match &meta {
        Some(m) if m.is_file() && m.len() > 0 => {
            let (s, h) = last_record(path)?;
            (s, h, None)
        }
        Some(m) if !m.is_file() => (0, GENESIS_HASH.to_owned(), None),
        _ => match newest_rotated(path) {
            Some(prev) => {
                let (s, h) = last_record(&prev)?;
                let name = prev.file_name().map(|s| s.to_string_lossy().into_owned());
                (s, h, name)
            }
            None => (0, GENESIS_HASH.to_owned(), None),
        },
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    let committed = if regular {
        file.metadata().map_err(io)?.len()
    } else {
        0
    };
    Ok((
        Sink::File(FileSink {
            path: path.to_owned(),
            file,
            committed,
            regular,
            needs_truncate: false,
        }),
        seq,
        hash,
        continued,
    ))
}

/// `seq` and `hash` of the last record of `path`, which must be complete and intact.
fn last_record(path: &Path) -> Result<(u64, String), AuditError> {
    let io = |source| AuditError::Io {
        path: path.to_owned(),
        source,
    };
    let mut r = BufReader::new(File::open(path).map_err(io)?);
    let mut line = Vec::new();
    let mut last = Vec::new();
    let mut n = 0u64;
    loop {
        line.clear();
        let got = (&mut r)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(io)?;
        if got == 0 {
            break;
        }
        n += 1;
        if line.last() != Some(&b'\n') {
            let reason = if line.len() > MAX_LINE {
                "line too long"
            } else {
                "incomplete last line (truncated write?)"
            };
            return Err(AuditError::Corrupt {
                path: path.to_owned(),
                line: n,
                reason: reason.into(),
            });
        }
        std::mem::swap(&mut line, &mut last);
    }
    if n == 0 {
        return Ok((0, GENESIS_HASH.to_owned()));
    }
    let rec = check_line(&last[..last.len() - 1]).map_err(|(_, f)| AuditError::Corrupt {
        path: path.to_owned(),
        line: n,
        reason: f.to_string(),
    })?;
    Ok((rec.seq, rec.hash))
}

/// The newest `<path>.<unix_ts>[.<n>]` sibling, if any.
fn newest_rotated(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?.to_owned();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let prefix = format!("{name}.");
    let mut best: Option<((u64, u64), PathBuf)> = None;
    for entry in std::fs::read_dir(&dir).ok()?.flatten() {
        let Some(fname) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Some(rest) = fname.strip_prefix(&prefix) else {
            continue;
        };
        let mut parts = rest.splitn(2, '.');
        let Some(Ok(ts)) = parts.next().map(str::parse::<u64>) else {
            continue;
        };
        let n = match parts.next() {
            None => 0,
            Some(p) => match p.parse::<u64>() {
                Ok(n) => n,
                Err(_) => continue,
            },
        };
        if best.as_ref().is_none_or(|(k, _)| (ts, n) > *k) {
            best = Some(((ts, n), entry.path()));
        }
    }
    best.map(|(_, p)| p)
}

async fn run(
    mut w: Box<Writer>,
    mut rx: mpsc::Receiver<Msg>,
    shared: Arc<Shared>,
    batch: usize,
    fsync: FsyncPolicy,
) {
    let interval = match fsync {
        FsyncPolicy::EveryBatch => Duration::ZERO,
        FsyncPolicy::Interval(d) => d,
    };
    let mut msgs = Vec::with_capacity(batch);
    let mut backoff: Option<Duration> = None;
    let mut closed = false;
    let mut final_retries = 0u32;
    loop {
        let wait = backoff.or(if w.dirty { Some(interval) } else { None });
        if closed {
            if let Some(d) = backoff {
                tokio::time::sleep(d).await;
            }
        } else {
            let got = match wait {
                None => Some(rx.recv_many(&mut msgs, batch).await),
                Some(d) => tokio::time::timeout(d, rx.recv_many(&mut msgs, batch))
                    .await
                    .ok(),
            };
            if got == Some(0) {
                closed = true;
            }
        }
        let mut waiters = Vec::new();
        let mut events = 0usize;
        for m in msgs.drain(..) {
            match m {
                Msg::Event(mut ev) => {
                    events += 1;
                    if w.pending.len() >= MAX_PENDING_BYTES {
                        shared.dropped.fetch_add(1, Ordering::Relaxed);
                        w.dropped_pending += 1;
                    } else if let Err(e) = w.append(&mut ev) {
                        shared.dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %e, event = %ev.event, "audit record dropped");
                    }
                }
                Msg::Flush(tx) => waiters.push(tx),
            }
        }
        let sync = !waiters.is_empty()
            || closed
            || fsync == FsyncPolicy::EveryBatch
            || (w.dirty && w.last_sync.elapsed() >= interval);
        if w.pending.is_empty() && !(sync && w.dirty) {
            for tx in waiters {
                let _ = tx.send(Ok(()));
            }
            if closed {
                break;
            }
            continue;
        }
        // A buffered append to a regular file (no fsync, no rotation due) is a page-cache
        // copy of a few KiB: done in place. Anything that may block (fsync, rotation,
        // pipes, stdout) goes to the blocking pool.
        let joined = if w.commit_is_cheap(sync) {
            let r = w.commit(sync);
            Ok((w, r))
        } else {
            tokio::task::spawn_blocking(move || {
                let r = w.commit(sync);
                (w, r)
            })
            .await
        };
        let (back, res) = match joined {
            Ok(x) => x,
            Err(e) => {
                shared.healthy.store(false, Ordering::Release);
                tracing::error!(error = %e, "audit writer crashed");
                for tx in waiters {
                    let _ = tx.send(Err(AuditError::SinkFailed));
                }
                return;
            }
        };
        w = back;
        match res {
            Ok(n) => {
                shared.written.fetch_add(n, Ordering::Relaxed);
                if !shared.healthy.swap(true, Ordering::AcqRel) {
                    tracing::info!(dropped = w.dropped_pending, "audit sink recovered");
                }
                *shared.head.lock().unwrap_or_else(|e| e.into_inner()) = ChainHead {
                    seq: w.seq,
                    hash: w.last_hash.clone(),
                };
                backoff = None;
                for tx in waiters {
                    let _ = tx.send(Ok(()));
                }
            }
            Err(e) => {
                if shared.healthy.swap(false, Ordering::AcqRel) {
                    tracing::error!(error = %e, file = %w.sink.path().display(), "audit write failed; retrying");
                }
                for tx in waiters {
                    let _ = tx.send(Err(AuditError::SinkFailed));
                }
                backoff = Some(backoff.map_or(BACKOFF_MIN, |b| (b * 2).min(BACKOFF_MAX)));
                if closed {
                    final_retries += 1;
                    if final_retries > FINAL_RETRIES {
                        tracing::error!(
                            lost = w.pending_records,
                            "audit writer stopping with unwritten records"
                        );
                        return;
                    }
                }
            }
        }
        if closed && w.pending.is_empty() && !w.dirty {
            break;
        }
        // Under load, let records accumulate for a moment so that one write carries many
        // of them (instead of a wake-up and a write per request). Idle, the next
        // `recv_many` simply waits; records are never delayed by more than this.
        if events > 0 && !closed && backoff.is_none() {
            tokio::time::sleep(COALESCE).await;
        }
    }
}
