//! SPEC §4 sessions, delegation, JIT credentials and their lifecycle, through the sidecar.

use std::time::Duration;

use chaperone_integration::*;

const SESSION_POLICY: &str = r#"
package chaperone.session
default allow := false
allow if input.identity.attributes.kind
max_ttl := "30m"
scopes := ["orders:read", "orders:write", "kb:read"]
"#;

const AUTHZ: &str = r#"
package chaperone.authz
default allow := false
allow if input.session != null
deny contains "too many calls in this session" if input.session.stats.requests >= 4
revoke_session contains "anomaly: repeated denied calls" if input.session.stats.denied >= 2
deny contains "forbidden path" if input.request.route_path == "/forbidden"
"#;

fn spec(extra: &str) -> Spec {
    Spec {
        config: format!(
            r#"{IDENTITIES}
routes:
  - name: orders
    prefix: /orders
    upstream: "{{echo}}"
    credential: orders-jwt
credentials:
  orders-jwt:
    provider: jwt
    audience: https://orders.internal
    ttl: 5m
{extra}"#
        ),
        policies: vec![
            ("authz.rego".into(), AUTHZ.into()),
            ("session.rego".into(), SESSION_POLICY.into()),
        ],
        ..Default::default()
    }
}

fn jwks_key(jwks: &serde_json::Value, kid: &str) -> jsonwebtoken::DecodingKey {
    let keys: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let jwk = keys.find(kid).expect("kid in JWKS");
    jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap()
}

fn verify_jwt(token: &str, jwks: &serde_json::Value) -> serde_json::Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    let key = jwks_key(jwks, header.kid.as_deref().unwrap());
    let mut v = jsonwebtoken::Validation::new(header.alg);
    v.set_audience(&["https://orders.internal"]);
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
        .expect("JWT verifies against the JWKS")
        .claims
}

#[tokio::test]
async fn session_lifecycle_jwt_injection_and_token_binding() {
    let h = Harness::start(spec("")).await.unwrap();
    // No session: denied.
    assert_eq!(h.call(AGENT, "GET", "/orders/1", &[], "").await.status, 403);
    let (token, created) = h
        .session(AGENT, serde_json::json!({"task": "refund order 123", "intent": {"summary": "refund"}, "scopes": ["orders:read", "admin:all"], "ttl": "10m"}))
        .await;
    assert!(token.starts_with("chs_") && token.len() >= 26, "{token}");
    assert_eq!(
        created["scopes"],
        serde_json::json!(["orders:read"]),
        "requested ∩ policy scopes"
    );
    let r = h
        .call(
            AGENT,
            "GET",
            "/orders/1",
            &[("chaperone-session", &token)],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = h.echo.seen.last().unwrap();
    assert!(
        !seen.headers.contains_key("chaperone-session"),
        "session header stripped"
    );
    let jwt = seen
        .headers
        .get("authorization")
        .unwrap()
        .to_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned();
    let (_, jwks) = h.admin("GET", "/v1/jwks", None).await;
    let claims = verify_jwt(&jwt, &serde_json::from_str(&jwks).unwrap());
    assert_eq!(claims["sub"], AGENT);
    assert_eq!(claims["aud"], "https://orders.internal");
    assert_eq!(claims["session_id"], created["session_id"]);
    assert_eq!(claims["scope"], "orders:read");
    assert_eq!(claims["task"], "refund order 123");
    assert!(claims["jti"].is_string() && claims["iat"].is_number());
    // The credential is reused within the session.
    let _ = h
        .call(
            AGENT,
            "GET",
            "/orders/2",
            &[("chaperone-session", &token)],
            "",
        )
        .await;
    assert_eq!(
        h.echo
            .seen
            .last()
            .unwrap()
            .headers
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap(),
        format!("Bearer {jwt}")
    );
    // The session as policy sees it, never a credential.
    let r = h
        .call(
            AGENT,
            "GET",
            "/.chaperone/v1/sessions/current",
            &[("chaperone-session", &token)],
            "",
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["task"], "refund order 123");
    assert_eq!(r.json()["stats"]["requests"], 2);
    assert!(!r.text().contains(&jwt) && !r.text().contains(&token));
    // Theft: another identity presenting the token.
    let r = h
        .call(
            OTHER,
            "GET",
            "/orders/1",
            &[("chaperone-session", &token)],
            "",
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "invalid_session");
    // Unknown token.
    let r = h
        .call(
            AGENT,
            "GET",
            "/orders/1",
            &[(
                "chaperone-session",
                "chs_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            )],
            "",
        )
        .await;
    assert_eq!(r.status, 401);
    // End it.
    let r = h
        .call(
            AGENT,
            "DELETE",
            "/.chaperone/v1/sessions/current",
            &[("chaperone-session", &token)],
            "",
        )
        .await;
    assert_eq!(r.status, 204);
    let r = h
        .call(
            AGENT,
            "GET",
            "/orders/1",
            &[("chaperone-session", &token)],
            "",
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "invalid_session");
}

#[tokio::test]
async fn ttl_expiry_is_enforced_and_swept() {
    let h = Harness::start(spec("audit:\n  path: \"{dir}/audit.jsonl\"\n"))
        .await
        .unwrap();
    let (token, _) = h
        .session(
            AGENT,
            serde_json::json!({"task": "short", "scopes": ["orders:read"], "ttl": "3s"}),
        )
        .await;
    assert_eq!(
        h.call(
            AGENT,
            "GET",
            "/orders/1",
            &[("chaperone-session", &token)],
            ""
        )
        .await
        .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(3600)).await;
    assert_eq!(
        h.call(
            AGENT,
            "GET",
            "/orders/1",
            &[("chaperone-session", &token)],
            ""
        )
        .await
        .status,
        401
    );
    let (_, list) = h.admin("GET", "/v1/sessions", None).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&list).unwrap()["sessions"],
        serde_json::json!([])
    );
    let audit = read(&h.path("audit.jsonl"));
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"session.ended\"") && l.contains("\"expired\"")),
        "{audit}"
    );
    assert!(
        audit.lines().any(|l| l.contains("\"credential.revoked\"")),
        "{audit}"
    );
}

#[tokio::test]
async fn behaviour_stats_feed_policy_and_revoke_session_ends_it() {
    let h = Harness::start(spec("")).await.unwrap();
    let (token, _) = h
        .session(
            AGENT,
            serde_json::json!({"task": "t", "scopes": ["orders:read"]}),
        )
        .await;
    let hdr = [("chaperone-session", token.as_str())];
    for _ in 0..4 {
        assert_eq!(
            h.call(AGENT, "GET", "/orders/x", &hdr, "").await.status,
            200
        );
    }
    let r = h.call(AGENT, "GET", "/orders/x", &hdr, "").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["reasons"][0], "too many calls in this session");
    let _ = h.call(AGENT, "GET", "/orders/forbidden", &hdr, "").await;
    // Now denied >= 2: the next call triggers revoke_session.
    let r = h.call(AGENT, "GET", "/orders/x", &hdr, "").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("anomaly"), "{}", r.text());
    let r = h.call(AGENT, "GET", "/orders/x", &hdr, "").await;
    assert_eq!(r.status, 401, "the session was ended: {}", r.text());
}

#[tokio::test]
async fn operator_revoke_via_admin() {
    let h = Harness::start(spec("")).await.unwrap();
    let (token, created) = h
        .session(
            AGENT,
            serde_json::json!({"task": "t", "scopes": ["orders:read"]}),
        )
        .await;
    let id = created["session_id"].as_str().unwrap();
    let (s, list) = h.admin("GET", "/v1/sessions", None).await;
    assert_eq!(s, 200);
    assert!(
        list.contains(id) && !list.contains(&token),
        "admin lists sessions without tokens"
    );
    let (s, _) = h.admin("DELETE", &format!("/v1/sessions/{id}"), None).await;
    assert_eq!(s, 200);
    assert_eq!(
        h.call(
            AGENT,
            "GET",
            "/orders/1",
            &[("chaperone-session", &token)],
            ""
        )
        .await
        .status,
        401
    );
    let (s, _) = h.admin("DELETE", &format!("/v1/sessions/{id}"), None).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn delegation_only_narrows_and_dies_with_the_parent() {
    let h = Harness::start(Spec {
        sessions: "  max_delegation_depth: 2\n".into(),
        ..spec("")
    })
    .await
    .unwrap();
    let (parent, _) = h.session(AGENT, serde_json::json!({"task": "triage", "scopes": ["orders:read", "kb:read"], "ttl": "10m"})).await;
    let ph = [
        ("chaperone-session", parent.as_str()),
        ("content-type", "application/json"),
    ];
    let h = &h;
    let delegate = |body: serde_json::Value| {
        let b = body.to_string();
        async move {
            h.call(
                AGENT,
                "POST",
                "/.chaperone/v1/sessions/current/delegations",
                &ph,
                b,
            )
            .await
        }
    };
    // Escalations are refused.
    let r = delegate(serde_json::json!({"to": CODE, "scopes": ["orders:write"]})).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = delegate(serde_json::json!({"to": CODE, "scopes": ["orders:read"], "ttl": "2h"})).await;
    assert_eq!(r.status, 403, "{}", r.text());
    // A narrowed delegation works, only for the delegatee.
    let r = delegate(serde_json::json!({"to": CODE, "scopes": ["orders:read"], "ttl": "5m"})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let child = r.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(
        r.json()["delegation_chain"],
        serde_json::json!([AGENT, CODE])
    );
    let r = h
        .call(
            CODE,
            "GET",
            "/orders/1",
            &[("chaperone-session", &child)],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
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
    let (_, jwks) = h.admin("GET", "/v1/jwks", None).await;
    let claims = verify_jwt(&jwt, &serde_json::from_str(&jwks).unwrap());
    assert_eq!(claims["sub"], CODE);
    assert_eq!(claims["act"]["sub"], AGENT, "RFC 8693 act chain: {claims}");
    assert_eq!(
        h.call(
            AGENT,
            "GET",
            "/orders/1",
            &[("chaperone-session", &child)],
            ""
        )
        .await
        .status,
        403,
        "bound to the delegatee"
    );
    // Depth: the child may delegate once more (chain of 3 = depth 2), not twice.
    let ch = [
        ("chaperone-session", child.as_str()),
        ("content-type", "application/json"),
    ];
    let r = h
        .call(
            CODE,
            "POST",
            "/.chaperone/v1/sessions/current/delegations",
            &ch,
            serde_json::json!({"to": OTHER, "scopes": ["orders:read"]}).to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let grandchild = r.json()["token"].as_str().unwrap().to_owned();
    let gh = [
        ("chaperone-session", grandchild.as_str()),
        ("content-type", "application/json"),
    ];
    let r = h
        .call(
            OTHER,
            "POST",
            "/.chaperone/v1/sessions/current/delegations",
            &gh,
            serde_json::json!({"to": CODE, "scopes": ["orders:read"]}).to_string(),
        )
        .await;
    assert_eq!(r.status, 403, "depth cap: {}", r.text());
    // Ending the parent ends every descendant.
    assert_eq!(
        h.call(
            AGENT,
            "DELETE",
            "/.chaperone/v1/sessions/current",
            &[("chaperone-session", &parent)],
            ""
        )
        .await
        .status,
        204
    );
    assert_eq!(
        h.call(
            CODE,
            "GET",
            "/orders/1",
            &[("chaperone-session", &child)],
            ""
        )
        .await
        .status,
        401
    );
    assert_eq!(
        h.call(
            OTHER,
            "GET",
            "/orders/1",
            &[("chaperone-session", &grandchild)],
            ""
        )
        .await
        .status,
        401
    );
}
