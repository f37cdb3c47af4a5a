//! Routing, canonicalisation, smuggling, header hygiene, injection, errors, HTTP/2.

use std::time::Duration;

use chaperone_integration::*;
use chaperone_testsupport::client;

fn static_spec() -> Spec {
    Spec {
        config: format!(
            r#"{IDENTITIES}
routes:
  - name: echo
    prefix: /echo
    upstream: "{{echo}}/base"
    labels: {{harmless: true, data_domain: demo}}
    credential: api-key
  - name: open
    prefix: /open
    upstream: "{{echo}}"
    labels: {{harmless: true}}
  - name: slow
    prefix: /slow
    upstream: "{{echo}}"
    labels: {{harmless: true}}
    timeout: 500ms
  - name: dead
    prefix: /dead
    upstream: http://127.0.0.1:9
    labels: {{harmless: true}}
  - name: guarded
    prefix: /guarded
    upstream: "{{echo}}"
    credential: api-key
credentials:
  api-key:
    provider: static
    file: "{{dir}}/api-key"
    inject: {{header: x-api-key, value: "Key {{token}}"}}
"#
        ),
        policies: vec![
            ("authz.rego".into(), ALLOW_WITH_SESSION.into()),
            ("session.rego".into(), SESSION_ALLOW_ALL.into()),
        ],
        ..Default::default()
    }
}

async fn harness() -> Harness {
    let dir_secret = "s3cr3t-static-value-0001";
    let h = Harness::start(Spec { ..static_spec() }).await;
    let h = match h {
        Ok(h) => h,
        Err(e) => panic!("harness: {e}"),
    };
    std::fs::write(h.path("api-key"), dir_secret).unwrap();
    h
}

#[tokio::test]
async fn forwards_with_injected_credential_and_strips_agent_headers() {
    let h = harness().await;
    let r = h
        .call(
            AGENT,
            "GET",
            "/echo/v1/items?x=1&x=2",
            &[
                ("authorization", "Bearer agent-token"),
                ("cookie", "session=abc"),
                ("x-api-key", "agent-supplied"),
                ("x-chaperone-identity", "spiffe://forged"),
                ("x-forwarded-client-cert", "forged"),
                ("connection", "x-drop-me"),
                ("x-drop-me", "1"),
                ("x-keep", "kept"),
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
            ],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.headers.contains_key("x-request-id"));
    let seen = h.echo.seen.last().unwrap();
    assert_eq!(
        seen.target, "/base/v1/items?x=1&x=2",
        "prefix stripped, base path and query kept"
    );
    assert_eq!(
        seen.headers.get("x-api-key").unwrap(),
        "Key s3cr3t-static-value-0001"
    );
    assert_eq!(
        seen.headers.get_all("x-api-key").iter().count(),
        1,
        "exactly one credential"
    );
    for gone in [
        "authorization",
        "cookie",
        "x-chaperone-identity",
        "x-forwarded-client-cert",
        "x-drop-me",
        "chaperone-session",
    ] {
        assert!(!seen.headers.contains_key(gone), "{gone} must be stripped");
    }
    assert_eq!(seen.headers.get("x-keep").unwrap(), "kept");
    assert_eq!(
        seen.headers.get("traceparent").unwrap(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "W3C trace context propagated"
    );
    assert_eq!(
        seen.headers.get("x-request-id").unwrap(),
        r.headers.get("x-request-id").unwrap()
    );
    assert!(
        !r.text().contains("s3cr3t-static"),
        "credential never reaches the agent"
    );
}

#[tokio::test]
async fn connection_named_authorization_is_stripped_and_static_file_rereads() {
    let h = harness().await;
    let r = h
        .call(
            AGENT,
            "GET",
            "/echo/a",
            &[("connection", "authorization"), ("authorization", "x")],
            "",
        )
        .await;
    assert_eq!(r.status, 200);
    let seen = h.echo.seen.last().unwrap();
    assert!(!seen.headers.contains_key("authorization"));
    // Rotation of the static secret file is picked up.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(h.path("api-key"), "rotated-value-0002").unwrap();
    let r = h.call(AGENT, "GET", "/echo/b", &[], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        h.echo
            .seen
            .last()
            .unwrap()
            .headers
            .get("x-api-key")
            .unwrap(),
        "Key rotated-value-0002"
    );
}

#[tokio::test]
async fn canonical_paths_route_and_reach_the_upstream_exactly() {
    let h = harness().await;
    for (raw, expect) in [
        ("/echo/a/../b", "/base/b"),
        ("/echo//a///b", "/base/a/b"),
        ("/echo/./a/", "/base/a/"),
        ("/x/../echo/q", "/base/q"),
    ] {
        let r = h.call(AGENT, "GET", raw, &[], "").await;
        assert_eq!(r.status, 200, "{raw}: {}", r.text());
        assert_eq!(h.echo.seen.last().unwrap().target, expect, "{raw}");
    }
    for bad in [
        "/echo/%2e%2e/secret",
        "/echo/a%2Fb",
        "/echo/a%2fb",
        "/echo/a%5cb",
        "/echo/a;jsessionid=1",
        "/echo/%252e",
        "/../echo",
    ] {
        let before = h.echo.seen.count();
        let r = h.call(AGENT, "GET", bad, &[], "").await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert_eq!(r.json()["error"], "bad_request");
        assert!(r.json()["request_id"].is_string());
        assert_eq!(h.echo.seen.count(), before, "{bad} must not be forwarded");
    }
    let r = h.call(AGENT, "GET", "/nothing/here", &[], "").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "no_route");
    // Prefixes match on segment boundaries.
    assert_eq!(h.call(AGENT, "GET", "/echoes", &[], "").await.status, 404);
}

#[tokio::test]
async fn smuggling_shapes_are_refused_before_forwarding() {
    let h = harness().await;
    let cfg = h.client(AGENT);
    let cases: &[&[u8]] = &[
        b"POST /open/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /open/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
        b"GET /open/x HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n",
        b"GET http://other.example/open/x HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n",
        b"GET /open/x HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    ];
    for c in cases {
        let before = h.echo.seen.count();
        let out = client::raw(h.agent_addr(), cfg.clone(), c, Duration::from_secs(2))
            .await
            .unwrap();
        assert!(
            out.starts_with("HTTP/1.1 400"),
            "{:?} -> {out:?}",
            String::from_utf8_lossy(c)
        );
        assert_eq!(
            h.echo.seen.count(),
            before,
            "{:?} must not be forwarded",
            String::from_utf8_lossy(c)
        );
    }
    // A well-formed pipelined pair goes through.
    let ok = b"GET /open/1 HTTP/1.1\r\nHost: localhost\r\n\r\nGET /open/2 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let out = client::raw(h.agent_addr(), cfg, ok, Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(out.matches("HTTP/1.1 200").count(), 2, "{out}");
}

#[tokio::test]
async fn http2_works_and_strips_the_same_headers() {
    let h = harness().await;
    let req = client::request(
        "GET",
        "/echo/h2",
        &[("authorization", "x"), ("cookie", "y")],
        "",
    );
    let r = client::send(h.agent_addr(), h.client(AGENT), req, true)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = h.echo.seen.last().unwrap();
    assert_eq!(seen.target, "/base/h2");
    assert!(!seen.headers.contains_key("authorization") && !seen.headers.contains_key("cookie"));
    assert!(seen.headers.contains_key("x-api-key"));
}

#[tokio::test]
async fn upstream_failures_map_to_502_and_504() {
    let h = harness().await;
    let r = h.call(AGENT, "GET", "/dead/x", &[], "").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream_unavailable");
    let r = h.call(AGENT, "GET", "/slow/slow", &[], "").await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream_timeout");
}

#[tokio::test]
async fn missing_static_secret_fails_closed_with_503() {
    let h = harness().await;
    std::fs::remove_file(h.path("api-key")).unwrap();
    let before = h.echo.seen.count();
    let r = h.call(AGENT, "GET", "/echo/x", &[], "").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "credential_unavailable");
    assert_eq!(
        h.echo.seen.count(),
        before,
        "never forwarded without the credential"
    );
}

#[tokio::test]
async fn no_session_on_guarded_route_is_denied_with_reason() {
    let h = harness().await;
    let r = h.call(AGENT, "GET", "/guarded/x", &[], "").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "denied");
    assert_eq!(r.json()["reasons"][0], "no session");
}

#[tokio::test]
async fn admin_health_ready_metrics_and_redacted_config() {
    let h = harness().await;
    let _ = h.call(AGENT, "GET", "/echo/m", &[], "").await;
    let _ = h.call(AGENT, "GET", "/guarded/m", &[], "").await;
    let (s, _) = h.admin("GET", "/healthz", None).await;
    assert_eq!(s, 200);
    let (s, body) = h.admin("GET", "/readyz", None).await;
    assert_eq!(s, 200, "{body}");
    let (s, m) = h.admin("GET", "/metrics", None).await;
    assert_eq!(s, 200);
    for name in [
        "chaperone_requests_total{decision=\"allow\",route=\"echo\"} 1",
        "chaperone_requests_total{decision=\"deny\",route=\"guarded\"} 1",
        "chaperone_policy_eval_seconds",
        "chaperone_request_duration_seconds",
        "chaperone_sessions_active",
        "chaperone_credentials_issued_total{provider=\"static\"}",
        "chaperone_tls_handshake_failures_total",
        "chaperone_cert_expiry_timestamp_seconds",
    ] {
        assert!(m.contains(name), "metrics missing {name}:\n{m}");
    }
    let (s, cfg) = h.admin("GET", "/v1/config", None).await;
    assert_eq!(s, 200);
    assert!(
        cfg.contains("api-key") && !cfg.contains("s3cr3t-static"),
        "{cfg}"
    );
    assert!(!m.contains("s3cr3t-static"));
}

/// An upstream that answers every request as HTTP/1.0 and closes: the agent's HTTP/1.1
/// connection must stay open (one TLS handshake for many calls), and the agent sees the
/// version it spoke. Before the fix every such response closed the agent's connection.
#[tokio::test]
async fn an_http10_upstream_does_not_close_the_agent_connection() {
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let legacy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let legacy_addr = legacy.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = legacy.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 6\r\n\r\nlegacy")
                    .await;
                let _ = s.shutdown().await;
            });
        }
    });
    let spec = Spec {
        config: format!(
            "{IDENTITIES}\nroutes:\n  - name: legacy\n    prefix: /legacy\n    upstream: http://{legacy_addr}\n    labels: {{harmless: true}}\n"
        ),
        policies: vec![
            ("authz.rego".into(), ALLOW_WITH_SESSION.into()),
            ("session.rego".into(), SESSION_ALLOW_ALL.into()),
        ],
        ..Default::default()
    };
    let h = Harness::start(spec).await.unwrap();

    let mut cfg = (*h.client(AGENT)).clone();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = client::tls_connect(h.agent_addr(), std::sync::Arc::new(cfg))
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    for i in 0..3 {
        sender
            .ready()
            .await
            .unwrap_or_else(|e| panic!("call {i}: the sidecar closed the agent connection: {e}"));
        let resp = sender
            .send_request(client::request("GET", "/legacy/x", &[], ""))
            .await
            .unwrap_or_else(|e| panic!("call {i}: {e}"));
        assert_eq!(resp.status(), 200, "call {i}");
        assert_eq!(resp.version(), http::Version::HTTP_11, "call {i}");
        assert!(resp.headers().get("connection").is_none(), "call {i}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"legacy");
    }
    assert!(!conn.is_finished(), "agent connection ended");
    // Three calls, three upstream connections (HTTP/1.0 closes), one agent connection.
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
}
