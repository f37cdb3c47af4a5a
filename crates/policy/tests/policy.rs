//! Loading, evaluation, reload and runner behaviour against real files.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chaperone_policy::{
    eval_report, json_to_value, run_tests, PolicyError, PolicyHandle, PolicyOptions, PolicySet,
    PolicyWatcher, ReloadOutcome,
};
use serde_json::json;

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn library() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

const ALLOW_ALL: &str = "package chaperone.authz\nallow := true\n";

fn call_input() -> serde_json::Value {
    json!({
        "identity": {"spiffe_id": "spiffe://prod.example.org/ns/support/sa/bot", "trust_domain": "prod.example.org",
                     "path": "/ns/support/sa/bot", "attributes": {"kind": "support", "agent": "support-bot"}},
        "session": {"id": "s1", "task": "look up order 123", "intent": {"summary": "s", "tools": ["orders-api"]},
                    "scopes": ["orders:read"], "created_at": "2026-12-01T09:00:00Z", "expires_at": "2026-12-01T09:15:00Z",
                    "delegation_chain": ["spiffe://prod.example.org/ns/support/sa/bot"],
                    "stats": {"requests": 3, "denied": 0, "routes": {"orders-api": 3}, "data_domains": ["billing"], "requests_last_minute": 3}},
        "request": {"method": "GET", "path": "/orders/v1/orders/123", "route_path": "/v1/orders/123", "segments": ["v1", "orders", "123"],
                    "query": {}, "host": "127.0.0.1", "headers": {"accept": "application/json"}, "body_bytes": 0},
        "route": {"name": "orders-api", "upstream": "https://orders.internal", "labels": {"sensitivity": "high", "data_domain": "billing"}},
        "environment": {"time": "2026-12-01T10:00:00Z", "node": "n", "namespace": "support", "pod": "p"}
    })
}

#[test]
fn loads_library_and_decides() {
    let set = PolicySet::load(&[library()]).unwrap();
    assert_eq!(set.revision().len(), 64);
    assert!(set
        .files()
        .iter()
        .all(|f| !f.to_string_lossy().ends_with("_test.rego")));
    assert!(set.files().iter().any(|f| f.ends_with("data.yaml")));
    let d = set.eval_call(json_to_value(&call_input()));
    assert!(d.permitted(), "{d:?}");
    assert_eq!(d.scopes, Some(vec!["orders:read".to_string()]));

    let mut post = call_input();
    post["request"]["method"] = json!("POST");
    let d = set.eval_call(json_to_value(&post));
    assert!(!d.permitted());
    assert_eq!(
        d.deny,
        vec![
            "Support agents are read-only: the POST method is not allowed (only GET and HEAD)."
                .to_string()
        ]
    );

    let mut night = call_input();
    night["environment"]["time"] = json!("2026-12-01T23:00:00Z");
    let d = set.eval_call(json_to_value(&night));
    assert!(d.permitted() && d.approval.len() == 1, "{d:?}");

    let mut no_session = call_input();
    no_session["session"] = serde_json::Value::Null;
    assert!(!set.eval_call(json_to_value(&no_session)).permitted());
}

#[test]
fn session_decision_from_library() {
    let set = PolicySet::load(&[library()]).unwrap();
    let input = json!({"identity": {"attributes": {"kind": "support"}},
        "session": {"task": "t", "intent": {}, "scopes": ["orders:read", "admin"], "ttl": "10m", "parent": null, "delegation_chain": []}});
    let s = set.eval_session(json_to_value(&input));
    assert!(s.permitted(), "{s:?}");
    assert_eq!(s.max_ttl, Some(Duration::from_secs(900)));
    assert_eq!(s.scopes.as_deref().map(<[String]>::len), Some(3));
    let robot = json!({"identity": {"attributes": {"kind": "robot"}}, "session": {"task": "t"}});
    assert!(!set.eval_session(json_to_value(&robot)).permitted());
}

#[test]
fn parse_error_names_real_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ok.rego", ALLOW_ALL);
    write(
        dir.path(),
        "sub/broken.rego",
        "package chaperone.authz\n\nallow if {\n  input.x ==\n",
    );
    let err = PolicySet::load(&[dir.path().to_path_buf()])
        .unwrap_err()
        .to_string();
    let expected = format!("{}:", dir.path().join("sub/broken.rego").display());
    assert!(err.contains(&expected), "{err}");
    assert!(err.contains(":4:") || err.contains(":5:"), "{err}");
}

#[test]
fn data_files_mount_like_bundles_and_conflicts_name_both_files() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "p.rego",
        "package chaperone.authz\nallow if { data.a.b.x == 1; data.top == \"t\"; data.a.y == 2 }\n",
    );
    write(dir.path(), "data.json", r#"{"top": "t", "a": {"y": 2}}"#);
    write(dir.path(), "a/b/data.yaml", "x: 1\n");
    write(dir.path(), "a/b/fixture.json", "{ not data");
    write(dir.path(), ".hidden/data.json", "{ broken");
    write(dir.path(), "x_test.rego", "package broken {{{");
    let set = PolicySet::load(&[dir.path().to_path_buf()]).unwrap();
    assert!(set.eval_call(json_to_value(&json!({}))).allow);
    assert_eq!(set.files().len(), 3);

    write(dir.path(), "a/data.yml", "b:\n  x: 3\n");
    let err = PolicySet::load(&[dir.path().to_path_buf()]).unwrap_err();
    match &err {
        PolicyError::DataConflict { key, first, second } => {
            assert_eq!(key, "a.b.x");
            assert!(
                first.ends_with("a/b/data.yaml") || second.ends_with("a/b/data.yaml"),
                "{err}"
            );
            assert!(
                first.ends_with("a/data.yml") || second.ends_with("a/data.yml"),
                "{err}"
            );
        }
        other => panic!("unexpected {other}"),
    }
    std::fs::remove_file(dir.path().join("a/data.yml")).unwrap();
    write(dir.path(), "a/data.yml", "b: [1, 2\n");
    let err = PolicySet::load(&[dir.path().to_path_buf()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("a/data.yml:"), "{err}");
}

/// A decision field no policy defines still comes from data when data has it (the
/// decision module writes `null` only for fields that neither defines), on both engines.
#[test]
fn decision_fields_defined_only_by_data_are_read() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "p.rego",
        "package chaperone.authz\ndefault allow := true\n",
    );
    write(
        dir.path(),
        "chaperone/authz/data.yaml",
        "credential: vaulted\nscopes: [a:read]\n",
    );
    for engine in [
        chaperone_policy::EngineChoice::Compiled,
        chaperone_policy::EngineChoice::Interpreter,
    ] {
        let opts = PolicyOptions {
            engine,
            ..Default::default()
        };
        let set = PolicySet::load_with(&[dir.path().to_path_buf()], &opts).unwrap();
        let d = set.eval_call(json_to_value(&json!({})));
        assert!(d.permitted(), "{engine:?}: {d:?}");
        assert_eq!(d.credential.as_deref(), Some("vaulted"), "{engine:?}");
        assert_eq!(d.scopes, Some(vec!["a:read".to_owned()]), "{engine:?}");
        // Defined by neither: absent, as before.
        assert!(
            d.approval.is_empty() && d.revoke_session.is_empty(),
            "{engine:?}"
        );
    }
}

#[test]
fn revision_tracks_content() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p.rego", ALLOW_ALL);
    let r1 = PolicySet::load(&[dir.path().to_path_buf()])
        .unwrap()
        .revision()
        .to_owned();
    let r1b = PolicySet::load(&[dir.path().to_path_buf()])
        .unwrap()
        .revision()
        .to_owned();
    assert_eq!(r1, r1b);
    write(
        dir.path(),
        "p.rego",
        "package chaperone.authz\nallow := false\n",
    );
    let r2 = PolicySet::load(&[dir.path().to_path_buf()])
        .unwrap()
        .revision()
        .to_owned();
    assert_ne!(r1, r2);
}

fn set_of(src: &str) -> PolicySet {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p.rego", src);
    PolicySet::load(&[dir.path().to_path_buf()]).unwrap()
}

/// The same, asking for the compiled engine (`policy.engine: compiled`).
fn compiled_set_of(src: &str) -> PolicySet {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p.rego", src);
    let opts = PolicyOptions {
        engine: chaperone_policy::EngineChoice::Compiled,
        ..Default::default()
    };
    PolicySet::load_with(&[dir.path().to_path_buf()], &opts).unwrap()
}

/// `body` as package `chaperone.authz`, which must be compiled (no interpreter fallback).
fn compiled_authz(body: &str) -> (String, PolicySet) {
    let src = format!("package chaperone.authz\n{body}\n");
    let set = compiled_set_of(&src);
    assert_eq!(
        set.engine_kind(),
        "compiled",
        "{src}: {:?}",
        set.engine_fallback()
    );
    (src, set)
}

#[test]
fn wrong_types_and_errors_fail_closed() {
    let cases = [
        (
            "package chaperone.authz\nallow := \"yes\"\n",
            "allow must be a boolean",
        ),
        (
            "package chaperone.authz\nallow := true\ndeny := [\"x\"]\n",
            "deny must be a set",
        ),
        (
            "package chaperone.authz\nallow := true\ndeny contains 1 if true\n",
            "has a number member",
        ),
        (
            "package chaperone.authz\nallow := true\ncredential := 3\n",
            "credential must be a string",
        ),
        (
            "package chaperone.authz\nallow := true\nscopes := \"a\"\n",
            "scopes must be an array",
        ),
        (
            "package chaperone.authz\nallow := true\nallow := false if input.x\n",
            "policy evaluation failed",
        ),
        (
            "package chaperone.authz\nallow if { x := 1 / input.zero; x > 0 }\n",
            "policy evaluation failed",
        ),
    ];
    for (src, want) in cases {
        let input = json_to_value(&json!({"x": true, "zero": 0}));
        // The default engine (compiled) reports every one of these as an error.
        let d = set_of(src).eval_call(input.clone());
        assert!(!d.allow && !d.permitted(), "{src}: {d:?}");
        let e = d.error.clone().unwrap_or_default();
        assert!(e.contains(want), "{src}: {e}");
        // So does the interpreter (conflicts: the compiled engine falls back to it).
        let d = set_of(src).with_interpreter().eval_call(input);
        assert!(!d.allow && !d.permitted(), "{src}: {d:?}");
        assert!(d.error.unwrap_or_default().contains(want), "{src}");
    }
    // Undefined everything: deny, no error.
    let d = set_of("package chaperone.other\nx := 1\n").eval_call(json_to_value(&json!({})));
    assert!(!d.permitted() && d.error.is_none());
    // A permitted decision with all fields.
    let d = set_of("package chaperone.authz\nallow := true\ncredential := \"kv\"\nscopes := [\"a\"]\napproval contains \"why\" if true\n")
        .eval_call(json_to_value(&json!({})));
    assert!(d.permitted());
    assert_eq!((d.credential.as_deref(), d.approval.len()), (Some("kv"), 1));
    // A deny reason overrides allow.
    let d = set_of("package chaperone.authz\nallow := true\ndeny contains \"no\" if true\n")
        .eval_call(json_to_value(&json!({})));
    assert!(d.allow && !d.permitted());
}

#[test]
fn session_max_ttl_must_parse() {
    let bad = set_of("package chaperone.session\nallow := true\nmax_ttl := \"ten minutes\"\n");
    let s = bad.eval_session(json_to_value(&json!({})));
    assert!(!s.allow && s.error.unwrap_or_default().contains("max_ttl"));
    let good = set_of("package chaperone.session\nallow := true\nmax_ttl := \"1h30m\"\nscopes := {\"b\", \"a\"}\n");
    let s = good.eval_session(json_to_value(&json!({})));
    assert!(s.permitted());
    assert_eq!(s.max_ttl, Some(Duration::from_secs(5400)));
    assert_eq!(s.scopes, Some(vec!["a".into(), "b".into()]));
}

#[test]
fn evaluation_is_time_bounded() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "p.rego",
        "package chaperone.authz\nallow if { count([x | some a in numbers.range(1, 2000); some b in numbers.range(1, 2000); x := a * b]) > 0 }\n",
    );
    let opts = PolicyOptions {
        eval_timeout: Duration::from_millis(20),
        ..Default::default()
    };
    let set = PolicySet::load_with(&[dir.path().to_path_buf()], &opts).unwrap();
    let start = Instant::now();
    let d = set.eval_call(json_to_value(&json!({})));
    let took = start.elapsed();
    assert!(!d.allow, "{d:?}");
    assert!(d.error.is_some(), "{d:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn reload_keeps_last_good_and_inflight_arc() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p.rego", ALLOW_ALL);
    let handle =
        PolicyHandle::new(vec![dir.path().to_path_buf()], PolicyOptions::default()).unwrap();
    let old = handle.current();
    write(dir.path(), "p.rego", "package chaperone.authz\nallow := \n");
    assert!(handle.reload().is_err());
    assert_eq!(handle.current().revision(), old.revision());
    write(
        dir.path(),
        "p.rego",
        "package chaperone.authz\nallow := false\n",
    );
    let new = handle.reload().unwrap();
    assert_ne!(new.revision(), old.revision());
    assert!(
        old.eval_call(json_to_value(&json!({}))).allow,
        "in-flight Arc keeps its policy"
    );
    assert!(!handle.current().eval_call(json_to_value(&json!({}))).allow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_reports_modified_added_removed() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p.rego", ALLOW_ALL);
    let handle = Arc::new(
        PolicyHandle::new(vec![dir.path().to_path_buf()], PolicyOptions::default()).unwrap(),
    );
    let seen: Arc<Mutex<Vec<ReloadOutcome>>> = Arc::default();
    let s2 = seen.clone();
    let _w = PolicyWatcher::spawn(handle.clone(), Duration::from_millis(50), move |o| {
        s2.lock().unwrap().push(o.clone())
    });
    tokio::time::sleep(Duration::from_millis(120)).await;

    async fn wait_for(seen: &Arc<Mutex<Vec<ReloadOutcome>>>, n: usize) {
        for _ in 0..100 {
            if seen.lock().unwrap().len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "watcher reported {} outcomes, wanted {n}",
            seen.lock().unwrap().len()
        );
    }
    // added
    write(
        dir.path(),
        "more/deny.rego",
        "package chaperone.authz\ndeny contains \"no\" if true\n",
    );
    wait_for(&seen, 1).await;
    assert!(!handle
        .current()
        .eval_call(json_to_value(&json!({})))
        .permitted());
    // modified, broken
    write(
        dir.path(),
        "more/deny.rego",
        "package chaperone.authz\ndeny contains \n",
    );
    wait_for(&seen, 2).await;
    assert!(matches!(
        seen.lock().unwrap()[1],
        ReloadOutcome::Failed { .. }
    ));
    // removed
    std::fs::remove_file(dir.path().join("more/deny.rego")).unwrap();
    wait_for(&seen, 3).await;
    assert!(matches!(
        seen.lock().unwrap()[2],
        ReloadOutcome::Reloaded { .. }
    ));
    assert!(handle
        .current()
        .eval_call(json_to_value(&json!({})))
        .permitted());
}

#[test]
fn concurrent_evaluation_from_threads() {
    let set = Arc::new(PolicySet::load(&[library()]).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let set = set.clone();
            std::thread::spawn(move || {
                let mut input = call_input();
                if i % 2 == 1 {
                    input["request"]["method"] = json!("DELETE");
                }
                (0..200).all(|_| set.eval_call(json_to_value(&input)).permitted() == (i % 2 == 0))
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap());
    }
}

#[test]
fn runner_reports_failures_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p.rego", ALLOW_ALL);
    write(
        dir.path(),
        "p_test.rego",
        "package chaperone.authz_test\ntest_ok if data.chaperone.authz.allow\ntest_bad if not data.chaperone.authz.allow\ntest_value := 3\ntest_err if { x := 1 / 0; x }\n",
    );
    let mut out = Vec::new();
    let s = run_tests(&[dir.path().to_path_buf()], None, false, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!((s.passed, s.failed), (1, 3), "{text}");
    assert!(
        text.contains("p_test.rego: data.chaperone.authz_test.test_bad (undefined)"),
        "{text}"
    );
    assert!(
        text.contains("data.chaperone.authz_test.test_value (3)"),
        "{text}"
    );
    assert!(text.contains("FAIL ") && !text.contains("PASS "), "{text}");
    assert!(text.ends_with("1 passed, 3 failed\n"), "{text}");

    let re = regex::Regex::new("test_ok$").unwrap();
    let mut out = Vec::new();
    let s = run_tests(&[dir.path().to_path_buf()], Some(&re), true, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!((s.passed, s.failed), (1, 0));
    assert!(
        text.starts_with("PASS ") && text.ends_with("1 passed, 0 failed\n"),
        "{text}"
    );
}

#[test]
fn eval_report_explains() {
    let set = PolicySet::load(&[library()]).unwrap();
    let r = eval_report(&set, &call_input(), true);
    assert_eq!(r.kind, "call");
    assert!(r.permitted);
    let ex = r.explain.as_ref().unwrap();
    assert_eq!(ex.rules["allow"], json!(true));
    assert!(ex.rules.contains_key("deny"));
    let j = serde_json::to_value(&r).unwrap();
    assert_eq!(j["decision"]["allow"], json!(true));
    let session_input = json!({"identity": {"attributes": {"kind": "code"}}, "session": {"task": "t", "scopes": []}});
    let r = eval_report(&set, &session_input, false);
    assert_eq!(r.kind, "session");
    assert!(r.session.unwrap().permitted());
    assert!(r.explain.is_none());
}

/// Prints p50/p99 per decision for the example library (run with --nocapture).
#[test]
fn decision_latency_report() {
    let set = PolicySet::load(&[library()]).unwrap();
    let input = call_input();
    for _ in 0..200 {
        let _ = set.eval_call(json_to_value(&input));
    }
    let mut samples = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let start = Instant::now();
        let d = set.eval_call(json_to_value(&input));
        samples.push(start.elapsed());
        assert!(d.permitted());
    }
    samples.sort();
    println!(
        "eval_call example library (incl. json_to_value): p50 {:?} p90 {:?} p99 {:?}",
        samples[1000], samples[1800], samples[1980]
    );
    // Baseline: a one-rule policy, to separate engine overhead from policy work.
    let trivial = set_of(ALLOW_ALL);
    let mut base = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let start = Instant::now();
        let d = trivial.eval_call(json_to_value(&input));
        base.push(start.elapsed());
        assert!(d.permitted());
    }
    base.sort();
    println!(
        "eval_call one-rule policy: p50 {:?} p99 {:?}",
        base[1000], base[1980]
    );
}

/// The compiled engine and the interpreter must decide the example library identically.
/// Inputs are a deterministic sample of combinations of the fields the library reads.
#[test]
fn compiled_engine_matches_interpreter_on_example_library() {
    let lib = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let opts = PolicyOptions {
        engine: chaperone_policy::EngineChoice::Compiled,
        ..Default::default()
    };
    let set = PolicySet::load_with(&[lib], &opts).unwrap();
    assert_eq!(set.engine_kind(), "compiled", "{:?}", set.engine_fallback());
    let interp = set.with_interpreter();
    assert_eq!(interp.engine_kind(), "interpreter");

    let kinds = [
        json!({"kind": "support"}),
        json!({"kind": "code"}),
        json!({}),
        json!({"kind": "support", "external": true}),
    ];
    let routes = [
        json!({"name": "kb", "labels": {"sensitivity": "low", "data_domain": "support"}}),
        json!({"name": "orders-api", "labels": {"sensitivity": "high", "data_domain": "billing", "action": "write"}}),
        json!({"name": "hr-api", "labels": {"sensitivity": "critical", "data_domain": "hr"}}),
        json!({"name": "status", "labels": {"harmless": true}}),
        json!({"name": "partner", "labels": {"external": true, "sensitivity": "high"}}),
        json!({"name": "mcp-tools", "labels": {"data_domain": "billing"}}),
    ];
    let sessions = [
        json!(null),
        json!({"id": "s1", "task": "answer ticket", "intent": {"tools": ["kb"]}, "scopes": ["kb:read"],
               "created_at": "2026-12-01T10:00:00Z", "expires_at": "2026-12-01T10:10:00Z",
               "delegation_chain": [], "parent": null,
               "stats": {"requests": 3, "denied": 0, "routes": {"kb": 3}, "data_domains": ["support"], "requests_last_minute": 3}}),
        json!({"id": "s2", "task": "refund", "intent": {"tools": ["orders-api", "create_refund"], "external": true, "window": "business_hours"},
               "scopes": ["orders:read", "orders:write"], "created_at": "2026-12-01T10:00:00Z", "expires_at": "2026-12-01T10:10:00Z",
               "delegation_chain": ["spiffe://a/x", "spiffe://a/y"], "parent": {"id": "s0", "scopes": ["orders:read"]},
               "stats": {"requests": 200, "denied": 9, "routes": {"orders-api": 150}, "data_domains": ["hr"], "requests_last_minute": 500}}),
        json!({"id": "s3", "task": "", "intent": {}, "scopes": [], "created_at": "2026-12-01T10:00:00Z",
               "expires_at": "2026-12-01T10:10:00Z", "delegation_chain": [], "parent": null,
               "stats": {"requests": 0, "denied": 0, "routes": {}, "data_domains": ["billing"], "requests_last_minute": 0}}),
    ];
    let requests = [
        json!({"method": "GET", "mcp": null}),
        json!({"method": "POST", "mcp": null}),
        json!({"method": "DELETE", "mcp": null}),
        json!({"method": "POST", "mcp": {"method": "tools/call", "tool": "get_order", "arguments": {"id": 1}}}),
        json!({"method": "POST", "mcp": {"method": "tools/call", "tool": "create_refund", "arguments": {"amount": 5000}}}),
        json!({"method": "POST", "mcp": {"method": "tools/list", "tool": null, "arguments": {}}}),
    ];
    let times = [
        "2026-11-30T10:00:00Z",
        "2026-12-05T03:00:00Z",
        "2026-12-01T17:59:59Z",
    ];
    let mut checked = 0;
    let mut permitted = 0;
    for (ki, kind) in kinds.iter().enumerate() {
        for (ri, route) in routes.iter().enumerate() {
            for (si, session) in sessions.iter().enumerate() {
                for (qi, req) in requests.iter().enumerate() {
                    let time = times[(ki + ri + si + qi) % times.len()];
                    let mut request = req.clone();
                    request["path"] = json!("/x/v1/items");
                    request["route_path"] = json!("/v1/items");
                    request["segments"] = json!(["v1", "items"]);
                    request["query"] = json!({});
                    request["host"] = json!("");
                    request["headers"] = json!({});
                    request["body_bytes"] = json!(12);
                    let input = json!({
                        "identity": {"spiffe_id": "spiffe://t.local/ns/a/sa/b", "trust_domain": "t.local",
                                      "path": "/ns/a/sa/b", "attributes": kind},
                        "session": session, "request": request, "route": route,
                        "environment": {"time": time, "node": "n", "namespace": "a", "pod": "p"}
                    });
                    let v = json_to_value(&input);
                    let (a, b) = (set.eval_call(v.clone()), interp.eval_call(v.clone()));
                    assert_eq!(a, b, "call decision differs for {input}");
                    assert!(a.error.is_none(), "{input}: {a:?}");
                    permitted += usize::from(a.permitted());
                    if !session.is_null() {
                        let (a, b) = (set.eval_session(v.clone()), interp.eval_session(v));
                        assert_eq!(a, b, "session decision differs for {input}");
                    }
                    checked += 1;
                }
            }
        }
    }
    // The sample must exercise both outcomes, or it proves nothing.
    assert!(
        permitted > 10 && permitted < checked - 10,
        "{permitted}/{checked} permitted"
    );
}

/// The example library under inputs an agent could shape: every field it controls
/// (method, path, query, headers, MCP method/tool/arguments, body size) takes values of
/// every JSON type. Both engines must agree on every decision (or both fail).
#[test]
fn compiled_engine_matches_interpreter_on_example_library_with_agent_shaped_inputs() {
    let lib = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let set = PolicySet::load(&[lib]).unwrap();
    assert_eq!(set.engine_kind(), "compiled", "{:?}", set.engine_fallback());
    let interp = set.with_interpreter();
    let odd = [
        json!(null),
        json!(true),
        json!(7),
        json!("x"),
        json!(["a", 1]),
        json!({"k": [null]}),
    ];
    let session = json!({"id": "s1", "task": "t", "intent": {"tools": ["kb", "get_order"]}, "scopes": ["kb:read"],
        "created_at": "2026-12-01T10:00:00Z", "expires_at": "2026-12-01T10:10:00Z", "delegation_chain": [], "parent": null,
        "stats": {"requests": 1, "denied": 0, "routes": {}, "data_domains": [], "requests_last_minute": 1}});
    let (mut same, mut failed) = (0, 0);
    for (i, v) in odd.iter().enumerate() {
        for field in [
            "method",
            "path",
            "query",
            "headers",
            "body_bytes",
            "mcp.method",
            "mcp.tool",
            "mcp.arguments",
            "mcp",
        ] {
            for sess in [json!(null), session.clone()] {
                let mut request = json!({"method": "POST", "path": "/kb/x", "route_path": "/x", "segments": ["x"],
                    "query": {}, "host": "", "headers": {}, "body_bytes": 3,
                    "mcp": {"method": "tools/call", "tool": "get_order", "arguments": {"id": 1}}});
                match field.split_once('.') {
                    Some((_, inner)) => request["mcp"][inner] = v.clone(),
                    None => request[field] = v.clone(),
                }
                let route = if i % 2 == 0 {
                    json!({"name": "kb", "labels": {"sensitivity": "high", "data_domain": "support"}})
                } else {
                    json!({"name": "mcp-tools", "labels": {"data_domain": "billing"}})
                };
                let input = json!({
                    "identity": {"spiffe_id": "spiffe://t.local/ns/a/sa/b", "trust_domain": "t.local",
                                  "path": "/ns/a/sa/b", "attributes": {"kind": "support"}},
                    "session": sess, "request": request, "route": route,
                    "environment": {"time": "2026-12-01T10:00:00Z", "node": "n", "namespace": "a", "pod": "p"}
                });
                let value = json_to_value(&input);
                let (c, i) = (set.eval_call(value.clone()), interp.eval_call(value));
                match (&c.error, &i.error) {
                    (None, None) => {
                        assert_eq!(c, i, "{input}");
                        same += 1;
                    }
                    (Some(_), Some(_)) => failed += 1,
                    _ => panic!("engines disagree on failing for {input}\ncompiled: {c:?}\ninterpreter: {i:?}"),
                }
            }
        }
    }
    assert!(same > 50, "{same} decided, {failed} failed");
}

/// Policies where a complete rule or function could produce two values are decided by the
/// interpreter (which reports the conflict as an error); the compiled engine would make
/// the rule undefined instead.
#[test]
fn conflict_capable_policies_fall_back_to_the_interpreter() {
    let risky = [
        "package chaperone.authz\nallow := true\ncredential := \"a\" if input.x\ncredential := \"b\" if input.x\n",
        "package chaperone.authz\nallow := true\ncredential := y if { some y in [\"a\", \"b\"] }\n",
        "package chaperone.authz\nf(x) := 1 if x\nf(x) := 2 if x\nallow if f(true) == 1\n",
        "package chaperone.authz\nm[k] := 1 if { some k in [\"a\"] }\nm[k] := 2 if { k := \"a\" }\nallow if m.a\n",
    ];
    for src in risky {
        let set = compiled_set_of(src);
        assert_eq!(set.engine_kind(), "interpreter", "{src}");
        assert!(
            set.engine_fallback()
                .unwrap_or_default()
                .contains("conflicting"),
            "{src}"
        );
        let d = set.eval_call(json_to_value(&json!({"x": true})));
        assert!(!d.permitted() && d.error.is_some(), "{src}: {d:?}");
    }
    // Same constant from several definitions, `default` + rule, and `else` chains compile.
    let safe = [
        "package chaperone.authz\nallow if input.x\nallow if input.y\n",
        "package chaperone.authz\ndefault allow := false\nallow if input.x\n",
        "package chaperone.authz\nallow := true\ncredential := \"a\" if { input.x } else := \"b\"\n",
        "package chaperone.authz\nallow := true\nscopes := [s | some s in input.s]\n",
    ];
    for src in safe {
        let set = compiled_set_of(src);
        assert_eq!(
            set.engine_kind(),
            "compiled",
            "{src}: {:?}",
            set.engine_fallback()
        );
        let v = json_to_value(&json!({"x": true, "s": ["a"]}));
        assert_eq!(
            set.eval_call(v.clone()),
            set.with_interpreter().eval_call(v),
            "{src}"
        );
    }
    // And the default is the compiled engine, with no fallback to report.
    let set = set_of("package chaperone.authz\nallow := true\n");
    assert_eq!(
        (set.engine_kind(), set.engine_fallback()),
        ("compiled", None)
    );
}

/// The compiled engine is hardened (`harden.rs`): a runtime error anywhere in the
/// evaluation fails it, as in the interpreter, instead of making one rule body undefined.
/// Each policy here hides an error where the unhardened VM dropped it (and permitted the
/// call): a `deny` body, a helper under `not`, a function, an `else`, a comprehension,
/// `every`, arithmetic.
#[test]
fn compiled_engine_fails_closed_on_runtime_errors() {
    let cases = [
        ("allow := true\ndeny contains sprintf(\"bad path %q\", [p]) if {\n\tp := input.path\n\tnot startswith(p, \"/tmp/\")\n}\n", "startswith"),
        ("allow if not blocked\nblocked if startswith(input.path, \"/etc\")\n", "startswith"),
        ("allow if not f(input.path)\nf(p) if endswith(p, \".key\")\n", "endswith"),
        ("allow := true\ndeny contains \"big\" if input.n * 2 > 10\n", "mul"),
        ("allow := true\ndeny contains \"odd\" if input.n % 2 == 1\n", "mod"),
        ("allow if { x := 10 / input.zero; x > 0 }\ndefault allow := true\n", "divide by zero"),
        ("allow if { lower(input.path) == \"x\" } else := true\n", "lower"),
        ("allow := true\ndeny contains \"x\" if { names := [upper(p) | some p in input.paths]; count(names) > 5 }\n", "upper"),
        ("allow if every p in input.paths { not contains(p, \"..\") }\n", "contains"),
        ("allow := true\ndeny contains \"neg\" if { x := input.n - 1; x < 0 }\n", "sub"),
    ];
    let input =
        json_to_value(&json!({"path": ["/etc"], "n": "seven", "zero": 0, "paths": [1, "a"]}));
    for (body, want) in cases {
        let (src, set) = compiled_authz(body);
        let d = set.eval_call(input.clone());
        assert!(!d.permitted(), "{src}: {d:?}");
        let e = d.error.unwrap_or_default();
        assert!(e.contains(want), "{src}: {e}");
        // The message points at the policy source, like the interpreter's.
        assert!(e.contains("p.rego:"), "{src}: {e}");
        let i = set.with_interpreter().eval_call(input.clone());
        assert!(
            i.error.is_some(),
            "the interpreter must fail too: {src}: {i:?}"
        );
    }
    // With well-typed input the same policies decide, identically in both engines.
    let good = json_to_value(&json!({"path": "/tmp/a", "n": 4, "zero": 2, "paths": ["a", "b"]}));
    for (body, _) in cases {
        let (_, set) = compiled_authz(body);
        let d = set.eval_call(good.clone());
        assert!(d.error.is_none(), "{body}: {d:?}");
        assert_eq!(d, set.with_interpreter().eval_call(good.clone()), "{body}");
    }
    // Comparing values of different types is not an error: Rego orders all values.
    let set = compiled_set_of("package chaperone.authz\nallow if input.n > 5\n");
    let d = set.eval_call(json_to_value(&json!({"n": "a"})));
    assert!(d.permitted(), "{d:?}");
    assert_eq!(
        d,
        set.with_interpreter()
            .eval_call(json_to_value(&json!({"n": "a"})))
    );
}

/// Differential check of the hardened compiled engine against the interpreter over
/// policies that use many builtins and operators, with inputs of every JSON type in every
/// field. Wherever the interpreter decides, the compiled engine must decide the same;
/// wherever the interpreter fails, the compiled engine must fail.
#[test]
fn compiled_engine_matches_interpreter_on_type_confused_inputs() {
    let policies = [
        "allow if startswith(input.a, \"x\")\ndeny contains \"e\" if endswith(input.b, \"y\")",
        "allow if { count(input.a) > 1 }\ndeny contains msg if { msg := sprintf(\"%s/%v\", [input.b, input.a]); contains(msg, \"z\") }",
        "allow if input.a + input.b > 2\ndeny contains \"m\" if input.a * 2 == input.b",
        "allow if { s := input.a - input.b; count(s) >= 0 }",
        "allow if not bad\nbad if { some x in input.a; startswith(x, \"-\") }",
        "allow if { x := lower(input.a); x == upper(input.b) } else := input.a == input.b",
        "allow if every x in input.a { x != input.b }",
        "allow if { parts := split(input.a, \"/\"); parts[1] == \"v1\" }",
        "allow if regex.match(\"^[a-z]+$\", input.a)\ndeny contains \"g\" if glob.match(\"*.key\", [], input.b)",
        "allow if { n := to_number(input.a); n > abs(input.b) }",
        "allow if { object.get(input.a, \"k\", 0) == 1 }\ndeny contains \"u\" if { count(input.a | input.b) > 2 }",
        "allow if { input.a in input.b }\ndeny contains \"t\" if { time.parse_rfc3339_ns(input.a) > 0 }",
        "allow if f(input.a) == 3\nf(x) := x + 1 if { is_number(x) } else := 3 if { is_string(x) }",
        "allow if { concat(\",\", input.a) == \"p,q\" }\ndeny contains \"r\" if { trim_space(input.b) == \"\" }",
        "allow if { array.concat(input.a, [1])[0] == input.b }",
        "allow if { xs := [x | some x in input.a; x > 1]; count(xs) == 1 }\ndeny contains \"d\" if input.a / input.b < 1",
    ];
    let values = [
        json!(null),
        json!(true),
        json!(0),
        json!(2),
        json!(-1.5),
        json!(""),
        json!("x/v1/y"),
        json!("-z"),
        json!("2026-12-01T10:00:00Z"),
        json!([]),
        json!(["p", "q"]),
        json!([1, "a", 3]),
        json!({}),
        json!({"k": 1}),
    ];
    let (mut decided, mut failed, mut permitted, mut some_in_scalar) = (0, 0, 0, 0);
    for body in policies {
        let (src, set) = compiled_authz(body);
        let interp = set.with_interpreter();
        for a in &values {
            for b in &values {
                let input = json!({"a": a, "b": b});
                let v = json_to_value(&input);
                let (c, i) = (set.eval_call(v.clone()), interp.eval_call(v));
                match (&c.error, &i.error) {
                    (None, None) => {
                        assert_eq!(c, i, "{src} with {input}");
                        decided += 1;
                        permitted += usize::from(c.permitted());
                    }
                    (Some(_), Some(_)) => failed += 1,
                    // The one known difference, where the compiled engine does what OPA
                    // does: `some x in v` over a v that is not a collection iterates
                    // nothing; the interpreter calls it an error.
                    (None, Some(e))
                        if e.contains("`some .. in collection` expects")
                            && src.contains("some x in input.a") =>
                    {
                        some_in_scalar += 1;
                    }
                    _ => panic!("engines disagree on failing: {src} with {input}\ncompiled: {c:?}\ninterpreter: {i:?}"),
                }
            }
        }
    }
    // The corpus must exercise deciding, permitting and failing, or it proves nothing.
    println!("{decided} decided ({permitted} permitted), {failed} failed, {some_in_scalar} `some .. in` over a scalar");
    assert!(
        decided > 500 && failed > 500 && permitted > 50,
        "{decided} decided ({permitted} permitted), {failed} failed"
    );
}

/// An edit made after the policy was loaded but before the watcher's first poll is
/// applied: the watcher compares against the files as they were when they were read, not
/// as they are when it starts (which would already include the edit and never reload it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_applies_an_edit_made_before_its_first_poll() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p.rego", ALLOW_ALL);
    let handle = Arc::new(
        PolicyHandle::new(vec![dir.path().to_path_buf()], PolicyOptions::default()).unwrap(),
    );
    let rev0 = handle.current().revision().to_owned();
    write(
        dir.path(),
        "p.rego",
        "package chaperone.authz\n# edited before the watcher started\nallow := false\n",
    );
    let _w = PolicyWatcher::spawn(handle.clone(), Duration::from_millis(20), |_| {});
    for _ in 0..250 {
        if handle.current().revision() != rev0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_ne!(handle.current().revision(), rev0, "edit never applied");
    assert!(!handle.current().eval_call(json_to_value(&json!({}))).allow);
}
