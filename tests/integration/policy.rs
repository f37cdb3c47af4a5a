//! Decision semantics (fail closed), hot reload, broken edits kept out, policy drift.

use std::time::Duration;

use chaperone_integration::*;

fn spec(authz: &str, session: &str) -> Spec {
    Spec {
        config: format!(
            "{IDENTITIES}\nroutes:\n  - name: api\n    prefix: /api\n    upstream: \"{{echo}}\"\naudit:\n  path: \"{{dir}}/audit.jsonl\"\n"
        ),
        policies: vec![("authz.rego".into(), authz.into()), ("session.rego".into(), session.into())],
        ..Default::default()
    }
}

const OPEN: &str = "package chaperone.authz\nallow := true\n";

#[tokio::test]
async fn errors_wrong_types_and_undefined_results_deny() {
    for (what, policy) in [
        ("undefined allow", "package chaperone.authz\nx := 1\n"),
        ("allow is a string", "package chaperone.authz\nallow := \"yes\"\n"),
        ("deny is not a set of strings", "package chaperone.authz\nallow := true\ndeny := 5\n"),
        ("runtime error", "package chaperone.authz\nallow if { x := 1 / 0; x > 0 }\nallow if { to_number(\"nope\") > 1 }\n"),
        ("conflicting values", "package chaperone.authz\nallow := true if input.request.method == \"GET\"\nallow := false if input.request.path != \"\"\n"),
    ] {
        let h = Harness::start(spec(policy, SESSION_ALLOW_ALL)).await.unwrap();
        let r = h.call(AGENT, "GET", "/api/x", &[], "").await;
        assert_eq!(r.status, 403, "{what}: {}", r.text());
        assert_eq!(r.json()["error"], "denied", "{what}");
        assert_eq!(h.echo.seen.count(), 0, "{what}: never forwarded");
    }
}

#[tokio::test]
async fn deny_reasons_reach_the_agent_and_override_allow() {
    let p = "package chaperone.authz\nallow := true\ndeny contains \"writes are frozen\" if input.request.method == \"POST\"\n";
    let h = Harness::start(spec(p, SESSION_ALLOW_ALL)).await.unwrap();
    assert_eq!(h.call(AGENT, "GET", "/api/x", &[], "").await.status, 200);
    let r = h.call(AGENT, "POST", "/api/x", &[], "body").await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json()["reasons"],
        serde_json::json!(["writes are frozen"])
    );
    // The input document shape policy relies on.
    let p2 = r#"package chaperone.authz
allow if {
  input.identity.spiffe_id == "spiffe://test.local/ns/default/sa/agent"
  input.identity.trust_domain == "test.local"
  input.identity.path == "/ns/default/sa/agent"
  input.identity.attributes.kind == "support"
  input.request.method == "GET"
  input.request.path == "/api/v1/items"
  input.request.route_path == "/v1/items"
  input.request.segments == ["v1", "items"]
  input.request.query.k == ["a", "b"]
  input.request.headers["x-test"] == "1"
  not input.request.headers.authorization
  not input.request.headers.cookie
  input.route.name == "api"
  input.session == null
  time.parse_rfc3339_ns(input.environment.time) > 0
}
"#;
    let h = Harness::start(spec(p2, SESSION_ALLOW_ALL)).await.unwrap();
    let r = h
        .call(
            AGENT,
            "GET",
            "/api//v1/./items?k=a&k=b",
            &[("x-test", "1"), ("authorization", "x"), ("cookie", "c")],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "input document as documented: {}", r.text());
}

async fn wait_for<F: Fn() -> bool>(f: F, what: &str) {
    for _ in 0..100 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn hot_reload_keeps_broken_edits_out_and_revokes_drifted_sessions() {
    let h = Harness::start(spec(OPEN, SESSION_ALLOW_ALL)).await.unwrap();
    let (token, _) = h
        .session(AGENT, serde_json::json!({"task": "t", "scopes": ["x"]}))
        .await;
    assert_eq!(h.call(AGENT, "GET", "/api/x", &[], "").await.status, 200);
    let rev0 = h.running().sidecar.policy.current().revision().to_owned();

    // 1. A valid edit takes effect.
    std::fs::write(
        h.path("policies/authz.rego"),
        "package chaperone.authz\nallow := true\ndeny contains \"frozen\" if true\n",
    )
    .unwrap();
    let sc = h.running().sidecar.clone();
    wait_for(|| sc.policy.current().revision() != rev0, "reload").await;
    assert_eq!(h.call(AGENT, "GET", "/api/x", &[], "").await.status, 403);

    // 2. A broken edit is kept out; the last good policy stays.
    let rev1 = sc.policy.current().revision().to_owned();
    std::fs::write(
        h.path("policies/authz.rego"),
        "package chaperone.authz\nallow := true {{{ broken\n",
    )
    .unwrap();
    let mut errors = 0;
    for _ in 0..100 {
        let (_, m) = h.admin("GET", "/metrics", None).await;
        if m.contains("chaperone_policy_reloads_total{result=\"error\"} 1") {
            errors = 1;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(errors, 1, "failed reload counted");
    assert_eq!(sc.policy.current().revision(), rev1);
    let r = h.call(AGENT, "GET", "/api/x", &[], "").await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json()["reasons"],
        serde_json::json!(["frozen"]),
        "still the last good policy"
    );

    // 3. Drift: the session policy no longer allows this identity.
    std::fs::write(h.path("policies/authz.rego"), OPEN).unwrap();
    std::fs::write(
        h.path("policies/session.rego"),
        "package chaperone.session\ndefault allow := false\n",
    )
    .unwrap();
    let hdr = [("chaperone-session", token.as_str())];
    let mut status = 0;
    for _ in 0..100 {
        status = h
            .call(AGENT, "GET", "/api/x", &hdr, "")
            .await
            .status
            .as_u16();
        if status == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 401, "drifted session revoked");
    let audit = read(&h.path("audit.jsonl"));
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"session.ended\"") && l.contains("policy_drift")),
        "{audit}"
    );
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"policy.reloaded\"") && l.contains("\"error\"")),
        "{audit}"
    );
}

#[tokio::test]
async fn sighup_style_config_reload_swaps_routes_and_identities() {
    let h = Harness::start(spec(OPEN, SESSION_ALLOW_ALL)).await.unwrap();
    assert_eq!(h.call(AGENT, "GET", "/new/x", &[], "").await.status, 404);
    let cfg = read(&h.config_path);
    let edited = cfg.replace(
        "routes:\n",
        &format!(
            "routes:\n  - name: new\n    prefix: /new\n    upstream: \"{}\"\n",
            h.echo.url()
        ),
    );
    assert_ne!(cfg, edited);
    std::fs::write(&h.config_path, edited).unwrap();
    h.running().sidecar.reload_config().await.unwrap();
    assert_eq!(h.call(AGENT, "GET", "/new/x", &[], "").await.status, 200);
    // A broken config is refused and the running one kept.
    std::fs::write(&h.config_path, "listen: [nonsense\n").unwrap();
    assert!(h.running().sidecar.reload_config().await.is_err());
    assert_eq!(h.call(AGENT, "GET", "/new/x", &[], "").await.status, 200);
}
