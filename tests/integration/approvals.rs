//! SPEC §7 on HTTP routes: approve, deny, timeout, disconnect, single use, webhook.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chaperone_integration::*;
use chaperone_testsupport::client;

const POLICY: &str = r#"package chaperone.authz
allow := true
approval contains "refunds need a human" if startswith(input.request.route_path, "/refund")
"#;

async fn webhook_server() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    use http_body_util::BodyExt;
    let got = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let g = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let g = g.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let g = g.clone();
                        async move {
                            let b = req
                                .into_body()
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            if let Ok(v) = serde_json::from_slice(&b) {
                                g.lock().unwrap().push(v);
                            }
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(bytes::Bytes::new()),
                            ))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}/hook"), got)
}

async fn harness(hook: &str) -> Harness {
    Harness::start(Spec {
        config: format!(
            "{IDENTITIES}\nroutes:\n  - name: pay\n    prefix: /pay\n    upstream: \"{{echo}}\"\napprovals:\n  timeout: 2s\n  webhook: {hook}\naudit:\n  path: \"{{dir}}/audit.jsonl\"\n"
        ),
        policies: vec![("authz.rego".into(), POLICY.into())],
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn pending(h: &Harness) -> Vec<serde_json::Value> {
    let (_, body) = h.admin("GET", "/v1/approvals", None).await;
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["approvals"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn wait_pending(h: &Harness, n: usize) -> Vec<serde_json::Value> {
    for _ in 0..100 {
        let p = pending(h).await;
        if p.len() == n {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    panic!("expected {n} pending approvals");
}

fn spawn_call(h: &Harness, body: &'static str) -> tokio::task::JoinHandle<client::Reply> {
    let addr = h.agent_addr();
    let cfg = h.client(AGENT);
    tokio::spawn(async move {
        client::send(
            addr,
            cfg,
            client::request("POST", "/pay/refund/9", &[], body),
            false,
        )
        .await
        .unwrap()
    })
}

#[tokio::test]
async fn approve_deny_timeout_disconnect_and_single_use() {
    let (hook, got) = webhook_server().await;
    let h = harness(&hook).await;

    // Approve: the held call proceeds with its exact body.
    let call = spawn_call(&h, "amount=10");
    let p = wait_pending(&h, 1).await;
    let id = p[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(p[0]["reasons"], serde_json::json!(["refunds need a human"]));
    assert_eq!(p[0]["path"], "/pay/refund/9");
    assert_eq!(h.echo.seen.count(), 0, "held, not forwarded");
    let (s, _) = h
        .admin(
            "POST",
            &format!("/v1/approvals/{id}"),
            Some(serde_json::json!({"decision": "approve", "by": "alice"})),
        )
        .await;
    assert_eq!(s, 200);
    let r = call.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(&h.echo.seen.last().unwrap().body[..], b"amount=10");
    // Single use.
    let (s, _) = h
        .admin(
            "POST",
            &format!("/v1/approvals/{id}"),
            Some(serde_json::json!({"decision": "approve"})),
        )
        .await;
    assert_eq!(s, 404);

    // Deny.
    let call = spawn_call(&h, "amount=11");
    let p = wait_pending(&h, 1).await;
    assert_ne!(
        p[0]["id"].as_str().unwrap(),
        id,
        "a different call gets a different approval"
    );
    assert_ne!(p[0]["body_sha256"], serde_json::Value::Null);
    let (s, _) = h
        .admin(
            "POST",
            &format!("/v1/approvals/{}", p[0]["id"].as_str().unwrap()),
            Some(serde_json::json!({"decision": "deny", "by": "bob"})),
        )
        .await;
    assert_eq!(s, 200);
    let r = call.await.unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "approval_denied");

    // Timeout.
    let r = spawn_call(&h, "amount=12").await.unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "approval_timeout");
    assert!(pending(&h).await.is_empty());

    // Disconnect: the approval is cancelled.
    let call = spawn_call(&h, "amount=13");
    wait_pending(&h, 1).await;
    call.abort();
    wait_pending(&h, 0).await;
    assert_eq!(
        h.echo.seen.count(),
        1,
        "only the approved call was forwarded"
    );

    // Webhook got Slack-compatible JSON.
    for _ in 0..100 {
        if got.lock().unwrap().len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let hooks = got.lock().unwrap().clone();
    assert!(hooks.len() >= 4, "{hooks:?}");
    assert!(
        hooks[0]["text"].as_str().unwrap().contains("approval"),
        "{hooks:?}"
    );
    let audit = read(&h.path("audit.jsonl"));
    for needle in [
        "\"approval.requested\"",
        "\"approval.resolved\"",
        "\"approver\":\"alice\"",
        "\"timeout\"",
    ] {
        assert!(audit.contains(needle), "{needle} in audit");
    }
}
