//! The audit writer and verifier through their public API, on real files.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use chaperone_audit::*;
use serde_json::{json, Value};

fn ev(i: usize) -> AuditEvent {
    let mut e = AuditEvent::request_decided(
        &format!("req-{i}"),
        if i % 3 == 0 { "deny" } else { "allow" },
    );
    e.spiffe_id = Some("spiffe://example.org/ns/a/sa/bot".into());
    e.session_id = Some(format!("ses_{}", i % 2));
    e.task = Some("refund order 123 — \"urgent\"\n\ttab\u{1}".into());
    e.route = Some("orders-api".into());
    e.method = Some("POST".into());
    e.path = Some(format!("/orders/v1/refunds/{i}"));
    e.status = Some(if i % 3 == 0 { 403 } else { 200 });
    e.reasons = if i % 3 == 0 {
        vec!["refunds over 100 need approval".into()]
    } else {
        vec![]
    };
    e.latency_ms = Some(0.25 + i as f64 / 7.0);
    e.credential = Some("orders-token".into());
    e.credential_id = Some(format!("jti-{i}"));
    e.delegation_chain = vec![
        "spiffe://example.org/a".into(),
        "spiffe://example.org/b".into(),
    ];
    e
}

fn opts(path: &Path) -> AuditOptions {
    AuditOptions::new(AuditSink::File(path.to_owned()))
}

/// Start a writer on `o`, record `n` events, flush, stop. Returns the final head.
async fn write_log(o: AuditOptions, range: std::ops::Range<usize>) -> ChainHead {
    let (h, task) = AuditLog::start(o).unwrap();
    for i in range {
        h.record(ev(i)).unwrap();
    }
    h.flush().await.unwrap();
    let head = h.head();
    assert!(h.healthy());
    drop(h);
    task.await.unwrap();
    head
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn put(p: &Path, lines: &[String]) {
    let mut s = lines.join("\n");
    s.push('\n');
    std::fs::write(p, s).unwrap();
}

fn fails(paths: &[PathBuf]) -> VerifyError {
    match verify_files(paths) {
        Ok(r) => panic!("tampering not detected: {r:?}"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn chain_verifies_and_matches_head() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let head = write_log(opts(&p), 0..50).await;
    let r = verify_files(std::slice::from_ref(&p)).unwrap();
    assert_eq!(r.records, 51, "audit.started + 50");
    assert_eq!((r.first_seq, r.last_seq), (1, 51));
    assert!(r.from_genesis);
    assert_eq!(r.first_prev_hash, GENESIS_HASH);
    assert_eq!(r.last_hash, head.hash);
    assert_eq!(head.seq, 51);

    let l = lines(&p);
    let first: Value = serde_json::from_str(&l[0]).unwrap();
    assert_eq!(first["event"], "audit.started");
    assert_eq!(first["seq"], 1);
    let rec: Value = serde_json::from_str(&l[1]).unwrap();
    assert_eq!(rec["event"], "request.decided");
    assert_eq!(rec["prev_hash"], first["hash"]);
    assert_eq!(rec["decision"], "deny");
    assert_eq!(rec["credential"], "orders-token");
    assert!(rec.get("approval_id").is_none());
    // Every line is exactly the canonical form of its value.
    for line in &l {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(canonical_json(&v), line.as_bytes());
    }
}

#[tokio::test]
async fn edited_field_is_detected_even_with_rehash() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    write_log(opts(&p), 0..20).await;
    let orig = lines(&p);

    let mut l = orig.clone();
    assert!(l[4].contains(r#""decision":"deny""#));
    l[4] = l[4].replace(r#""decision":"deny""#, r#""decision":"allow""#);
    put(&p, &l);
    let e = fails(std::slice::from_ref(&p));
    assert_eq!((e.line, e.seq), (5, Some(5)));
    assert!(
        matches!(e.reason, VerifyFailure::HashMismatch { .. }),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("audit.jsonl:5: seq 5: hash mismatch"),
        "{e}"
    );

    // The forger also recomputes that record's hash: the next record's link breaks.
    let mut v: Value = serde_json::from_str(&l[4]).unwrap();
    let m = v.as_object_mut().unwrap();
    m.remove("hash");
    let h = record_hash(m["prev_hash"].as_str().unwrap(), &Value::Object(m.clone()));
    m.insert("hash".into(), json!(h));
    l[4] = String::from_utf8(canonical_json(&v)).unwrap();
    put(&p, &l);
    let e = fails(std::slice::from_ref(&p));
    assert_eq!(e.line, 6);
    assert!(matches!(e.reason, VerifyFailure::BrokenLink { .. }), "{e}");

    // Same content, different formatting: not canonical.
    let mut l = orig.clone();
    l[2] = l[2].replacen(',', ", ", 1);
    put(&p, &l);
    assert_eq!(
        fails(std::slice::from_ref(&p)).reason,
        VerifyFailure::NotCanonical
    );
    // Duplicate key smuggled in front (a JSON parser keeps the last one).
    let mut l = orig.clone();
    l[2] = l[2].replacen('{', r#"{"decision":"allow","#, 1);
    put(&p, &l);
    assert_eq!(
        fails(std::slice::from_ref(&p)).reason,
        VerifyFailure::NotCanonical
    );
}

#[tokio::test]
async fn deleted_swapped_inserted_and_truncated_records_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    write_log(opts(&p), 0..20).await;
    let orig = lines(&p);

    let mut l = orig.clone();
    l.remove(7);
    put(&p, &l);
    let e = fails(std::slice::from_ref(&p));
    assert_eq!((e.line, e.seq), (8, Some(9)));
    assert!(matches!(e.reason, VerifyFailure::BrokenLink { .. }), "{e}");

    let mut l = orig.clone();
    l.swap(3, 4);
    put(&p, &l);
    let e = fails(std::slice::from_ref(&p));
    assert_eq!(e.line, 4);
    assert!(matches!(e.reason, VerifyFailure::BrokenLink { .. }), "{e}");

    let mut l = orig.clone();
    let dup = l[5].clone();
    l.insert(6, dup);
    put(&p, &l);
    assert_eq!(fails(std::slice::from_ref(&p)).line, 7);

    // Removing the first record: the chain no longer starts at genesis or a header.
    let mut l = orig.clone();
    l.remove(0);
    put(&p, &l);
    assert_eq!(
        fails(std::slice::from_ref(&p)).reason,
        VerifyFailure::MissingHead
    );

    // Truncated mid-line.
    put(&p, &orig);
    let full = std::fs::read(&p).unwrap();
    let cut = full.len() - 40;
    std::fs::write(&p, &full[..cut]).unwrap();
    let e = fails(std::slice::from_ref(&p));
    assert_eq!((e.line, e.reason.clone()), (21, VerifyFailure::Truncated));

    // The writer refuses to continue such a file, naming file and line.
    let err = AuditLog::start(opts(&p)).unwrap_err();
    match &err {
        AuditError::Corrupt { path, line, .. } => {
            assert_eq!(path, &p);
            assert_eq!(*line, 21);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("line 21"), "{err}");
    // A complete but edited last line is refused too.
    let mut l = orig.clone();
    let last = l.len() - 1;
    l[last] = l[last].replace("orders-api", "orders-apX");
    put(&p, &l);
    assert!(matches!(
        AuditLog::start(opts(&p)),
        Err(AuditError::Corrupt { line: 21, .. })
    ));

    // Truncated to nothing.
    std::fs::write(&p, b"").unwrap();
    assert_eq!(fails(std::slice::from_ref(&p)).reason, VerifyFailure::Empty);
}

#[tokio::test]
async fn restart_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let h1 = write_log(opts(&p), 0..5).await;
    let h2 = write_log(opts(&p), 5..10).await;
    assert_eq!(h1.seq, 6);
    assert_eq!(h2.seq, 12);
    let r = verify_files(std::slice::from_ref(&p)).unwrap();
    assert_eq!(r.records, 12);
    assert_eq!(r.last_hash, h2.hash);
    let l = lines(&p);
    let restarted: Value = serde_json::from_str(&l[6]).unwrap();
    assert_eq!(restarted["event"], "audit.started");
    assert_eq!(restarted["seq"], 7);
    assert_eq!(restarted["prev_hash"], json!(h1.hash));
}

#[tokio::test]
async fn rotation_chains_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let mut o = opts(&p);
    o.rotate_bytes = Some(4000);
    o.fsync = FsyncPolicy::EveryBatch;
    let (h, task) = AuditLog::start(o).unwrap();
    for i in 0..60 {
        h.record(ev(i)).unwrap();
        if i % 5 == 0 {
            h.flush().await.unwrap();
        }
    }
    h.flush().await.unwrap();
    let head = h.head();
    drop(h);
    task.await.unwrap();

    let mut rotated: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|q| q != &p)
        .collect();
    // Names are audit.jsonl.<unix_ts>[.<n>]; order by (ts, n).
    rotated.sort_by_key(|q| {
        let name = q.file_name().unwrap().to_str().unwrap().to_owned();
        let rest = name.strip_prefix("audit.jsonl.").unwrap().to_owned();
        let mut it = rest.split('.');
        let ts: u64 = it.next().unwrap().parse().unwrap();
        let n: u64 = it.next().map(|x| x.parse().unwrap()).unwrap_or(0);
        (ts, n)
    });
    assert!(
        rotated.len() >= 3,
        "expected several rotations, got {rotated:?}"
    );
    let mut all = rotated.clone();
    all.push(p.clone());
    let r = verify_files(&all).unwrap();
    assert_eq!(r.files, all.len());
    assert_eq!(r.records, head.seq);
    assert!(r.from_genesis);
    assert_eq!(r.last_hash, head.hash);

    // Each new file starts with an audit.rotated header naming its predecessor.
    let first_of_live: Value = serde_json::from_str(&lines(&p)[0]).unwrap();
    assert_eq!(first_of_live["event"], "audit.rotated");
    let prev_name = rotated
        .last()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(first_of_live["detail"]["previous_file"], prev_name);

    // The live file alone verifies, but not from genesis (older files pruned).
    let r = verify_files(std::slice::from_ref(&p)).unwrap();
    assert!(!r.from_genesis);
    // A missing middle file or the wrong order breaks the chain.
    let mut gap = all.clone();
    gap.remove(1);
    let e = fails(&gap);
    assert_eq!(e.file, all[2]);
    assert_eq!(e.line, 1);
    let mut rev = all.clone();
    rev.swap(0, 1);
    assert!(verify_files(&rev).is_err());

    // Restart after the live file was lost: continue from the newest rotated file.
    std::fs::remove_file(&p).unwrap();
    let h2 = write_log(opts(&p), 0..1).await;
    let in_rotated: u64 = rotated.iter().map(|q| lines(q).len() as u64).sum();
    assert_eq!(
        h2.seq,
        in_rotated + 2,
        "audit.started + 1 record after the newest rotated file"
    );
    let mut again = rotated.clone();
    again.push(p.clone());
    let r = verify_files(&again).unwrap();
    assert!(r.from_genesis);
    let started: Value = serde_json::from_str(&lines(&p)[0]).unwrap();
    assert_eq!(started["event"], "audit.started");
    assert_eq!(started["detail"]["continued_from"], prev_name);
}

#[tokio::test(flavor = "current_thread")]
async fn overload_is_reported_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let mut o = opts(&p);
    o.buffer = 8;
    let (h, task) = AuditLog::start(o).unwrap();
    // On a current-thread runtime the writer cannot run while we do not yield.
    let mut ok = 0;
    let mut overloaded = 0;
    for i in 0..100 {
        match h.record(ev(i)) {
            Ok(()) => ok += 1,
            Err(AuditError::Overloaded) => overloaded += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok, 8);
    assert_eq!(overloaded, 92);
    assert_eq!(h.dropped(), 92);
    assert!(h.healthy(), "overload is not a sink failure");
    h.flush().await.unwrap();
    assert_eq!(h.written(), 9);
    // Room again after the writer drained the queue.
    h.record(ev(100)).unwrap();
    h.flush().await.unwrap();
    assert_eq!(h.written(), 10);
    drop(h);
    task.await.unwrap();
    assert_eq!(verify_files(std::slice::from_ref(&p)).unwrap().records, 10);
}

/// A sink that fails after start: a FIFO whose reader (a real `head` process) exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_failure_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("audit.fifo");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    let mut reader = std::process::Command::new("head")
        .arg("-c")
        .arg("1")
        .arg(&fifo)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (h, task) = AuditLog::start(opts(&fifo)).unwrap();
    assert!(h.healthy());
    assert!(reader.wait().unwrap().success());
    // The reader is gone: the next write fails with EPIPE.
    let _ = h.record(ev(1));
    assert!(matches!(h.flush().await, Err(AuditError::SinkFailed)));
    assert!(!h.healthy());
    assert!(matches!(h.record(ev(2)), Err(AuditError::SinkFailed)));
    assert_eq!(h.written(), 1);
    drop(h);
    // After the last handle is dropped the writer retries a few times, then stops.
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn start_refuses_an_unwritable_sink_and_bad_options() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir/audit.jsonl");
    assert!(matches!(
        AuditLog::start(opts(&missing)),
        Err(AuditError::Io { .. })
    ));
    let mut o = opts(&dir.path().join("a.jsonl"));
    o.buffer = 0;
    assert!(matches!(AuditLog::start(o), Err(AuditError::Invalid(_))));
}

#[test]
fn start_needs_a_runtime() {
    assert!(matches!(
        AuditLog::start(AuditOptions::new(AuditSink::Discard)),
        Err(AuditError::NoRuntime)
    ));
}

#[tokio::test]
async fn discard_sink_counts() {
    let (h, task) = AuditLog::start(AuditOptions::new(AuditSink::Discard)).unwrap();
    for i in 0..10 {
        h.record(ev(i)).unwrap();
    }
    h.flush().await.unwrap();
    assert_eq!(h.written(), 11);
    assert_eq!(h.head().seq, 11);
    drop(h);
    task.await.unwrap();
}

/// Tiny deterministic PRNG (xorshift64*), so failures are reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[tokio::test]
async fn random_tampering_is_always_detected() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    write_log(opts(&p), 0..30).await;
    let orig = std::fs::read(&p).unwrap();
    let orig_lines = lines(&p);
    let target = dir.path().join("t.jsonl");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..400 {
        let (what, bytes): (&str, Vec<u8>) = match rng.below(5) {
            0 | 1 => {
                let mut b = orig.clone();
                let i = rng.below(b.len());
                let mut v = (rng.next() & 0xff) as u8;
                if v == b[i] {
                    v ^= 0x01;
                }
                b[i] = v;
                ("byte", b)
            }
            2 => {
                let mut l = orig_lines.clone();
                l.remove(rng.below(l.len() - 1));
                ("delete", (l.join("\n") + "\n").into_bytes())
            }
            3 => {
                let mut l = orig_lines.clone();
                let a = rng.below(l.len());
                let mut b = rng.below(l.len());
                if a == b {
                    b = (a + 1) % l.len();
                }
                l.swap(a, b);
                ("swap", (l.join("\n") + "\n").into_bytes())
            }
            _ => {
                // Cut anywhere except exactly at a line end (removing whole tail
                // records needs an external anchor, see docs/audit.md).
                let mut cut = 1 + rng.below(orig.len() - 1);
                if orig[cut - 1] == b'\n' {
                    cut -= 1;
                }
                ("truncate", orig[..cut].to_vec())
            }
        };
        std::fs::write(&target, &bytes).unwrap();
        assert!(
            verify_files(std::slice::from_ref(&target)).is_err(),
            "round {round}: {what} not detected"
        );
    }
}

#[tokio::test]
async fn show_session_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let (h, task) = AuditLog::start(opts(&p)).unwrap();
    let mut c =
        AuditEvent::session_created("spiffe://example.org/bot", "ses_0", "refund order 123");
    c.intent_summary = Some("refund one order".into());
    h.record(c).unwrap();
    for i in 0..4 {
        h.record(ev(i)).unwrap();
    }
    let mut issued = AuditEvent::credential_issued("orders-token", "jti-9", "jwt");
    issued.session_id = Some("ses_0".into());
    h.record(issued).unwrap();
    h.record(AuditEvent::session_ended("ses_0", "deleted"))
        .unwrap();
    h.flush().await.unwrap();
    drop(h);
    task.await.unwrap();
    let out = show_session(std::slice::from_ref(&p), "ses_0").unwrap();
    assert!(out.starts_with("session ses_0\n"), "{out}");
    assert!(out.contains("task:     refund order 123"), "{out}");
    assert!(out.contains("request.decided     orders-api  POST /orders/v1/refunds/0  deny  403  [refunds over 100 need approval]  credential=orders-token"), "{out}");
    assert!(out.contains("/orders/v1/refunds/2"), "{out}");
    assert!(
        !out.contains("/orders/v1/refunds/1 "),
        "ses_1 records are not shown: {out}"
    );
    assert!(
        out.contains("session.ended") && out.contains("cause=deleted"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("5 records"), "{out}");
    assert!(show_session(std::slice::from_ref(&p), "ses_nope")
        .unwrap()
        .contains("no records"));
}

const PY_VERIFY: &str = include_str!("verify_audit.py");

/// A third party's verifier (Python, stdlib only, as printed in docs/audit.md) agrees.
#[tokio::test]
async fn independent_python_verifier_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    write_log(opts(&p), 0..25).await;
    let script = dir.path().join("verify_audit.py");
    std::fs::write(&script, PY_VERIFY).unwrap();
    let run = |files: &[&Path]| {
        std::process::Command::new("python3")
            .arg(&script)
            .args(files)
            .output()
            .expect("python3 must be installed for this test")
    };
    let out = run(&[&p]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK 26 records"));
    let mut l = lines(&p);
    l[3] = l[3].replace("orders-api", "orders-apx");
    put(&p, &l);
    let out = run(&[&p]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("line 4"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
