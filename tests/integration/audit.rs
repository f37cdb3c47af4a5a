//! Audit chain after real traffic; no secret value in audit, logs, metrics or admin output.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use chaperone_integration::*;

/// Captures every log line of the whole test binary (global subscriber, TRACE).
#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Capture {
    static C: OnceLock<Capture> = OnceLock::new();
    C.get_or_init(|| {
        let c = Capture(Arc::new(Mutex::new(Vec::new())));
        let w = c.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .json()
            .with_writer(move || w.clone())
            .try_init();
        c
    })
}

const SECRET: &str = "sk-live-7d1e0c55aa-static-secret";

#[tokio::test]
async fn audit_chain_verifies_and_no_secret_leaks_anywhere() {
    let cap = logs();
    let mut h = Harness::start(Spec {
        config: format!(
            r#"{IDENTITIES}
routes:
  - name: api
    prefix: /api
    upstream: "{{echo}}"
    credential: key
  - name: jwt
    prefix: /jwt
    upstream: "{{echo}}"
    credential: minted
credentials:
  key:
    provider: static
    file: "{{dir}}/key"
    inject: {{header: x-api-key, value: "{{token}}"}}
  minted:
    provider: jwt
    audience: https://jwt.internal
audit:
  path: "{{dir}}/audit.jsonl"
"#
        ),
        policies: vec![
            (
                "authz.rego".into(),
                "package chaperone.authz\nallow if input.session != null\n".into(),
            ),
            ("session.rego".into(), SESSION_ALLOW_ALL.into()),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    std::fs::write(h.path("key"), SECRET).unwrap();
    let (token, _) = h.session(AGENT, serde_json::json!({"task": "audit me", "intent": {"summary": "check the chain"}, "scopes": ["a"]})).await;
    let hdr = [("chaperone-session", token.as_str())];
    assert_eq!(h.call(AGENT, "GET", "/api/1", &hdr, "").await.status, 200);
    assert_eq!(h.call(AGENT, "GET", "/jwt/1", &hdr, "").await.status, 200);
    let jwt = h
        .echo
        .seen
        .last()
        .unwrap()
        .headers
        .get("authorization")
        .unwrap()
        .to_str()
        .unwrap()[7..]
        .to_owned();
    assert_eq!(h.call(AGENT, "GET", "/api/2", &[], "").await.status, 403);
    let (_, metrics) = h.admin("GET", "/metrics", None).await;
    let (_, sessions) = h.admin("GET", "/v1/sessions", None).await;
    let (_, config) = h.admin("GET", "/v1/config", None).await;
    assert_eq!(
        h.call(AGENT, "DELETE", "/.chaperone/v1/sessions/current", &hdr, "")
            .await
            .status,
        204
    );
    h.stop().await;

    let path = h.path("audit.jsonl");
    let report =
        chaperone_audit::verify_files(std::slice::from_ref(&path)).expect("chain verifies");
    assert!(report.records >= 8, "{report:?}");
    let audit = read(&path);
    let decided: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "request.decided")
        .collect();
    let first = &decided[0];
    for key in [
        "spiffe_id",
        "session_id",
        "task",
        "intent_summary",
        "route",
        "method",
        "path",
        "decision",
        "policy_revision",
        "latency_ms",
        "credential",
        "credential_id",
        "prev_hash",
        "hash",
    ] {
        assert!(
            !first[key].is_null(),
            "request.decided carries {key}: {first}"
        );
    }
    assert_eq!(first["intent_summary"], "check the chain");
    let log_text = String::from_utf8_lossy(&cap.0.lock().unwrap()).into_owned();
    for (what, text) in [
        ("audit", &audit),
        ("logs", &log_text),
        ("metrics", &metrics),
        ("sessions", &sessions),
        ("config", &config),
    ] {
        for secret in [SECRET, jwt.as_str(), token.as_str()] {
            assert!(!text.contains(secret), "{what} contains a secret");
        }
    }
    assert!(log_text.contains("request"), "logs were captured");
    // Tampering is detected.
    let edited = audit.replacen("\"allow\"", "\"deny\"", 1);
    std::fs::write(&path, edited).unwrap();
    assert!(chaperone_audit::verify_files(std::slice::from_ref(&path)).is_err());
}
