//! JWT provider: tokens verified with the real `jsonwebtoken` crate against `jwks()`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use chaperone_config::{JwtAlgorithm, JwtProvider, Provider};
use chaperone_credentials::CredentialManager;
use common::*;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use ring::signature::KeyPair as _;
use serde_json::Value;

fn jwt_cfg(alg: JwtAlgorithm, key: Option<std::path::PathBuf>, ttl: Duration) -> Provider {
    Provider::Jwt(JwtProvider {
        audience: "https://orders.internal".into(),
        issuer: "chaperone".into(),
        ttl,
        signing_key: key,
        algorithm: alg,
    })
}

fn verify(mgr: &CredentialManager, token: &str, alg: Algorithm) -> (jsonwebtoken::Header, Value) {
    let header = jsonwebtoken::decode_header(token).unwrap();
    let kid = header.kid.clone().unwrap();
    let jwks = mgr.jwks();
    let jwk_json = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("kid in jwks")
        .clone();
    assert_eq!(jwk_json["use"], "sig");
    let jwk: Jwk = serde_json::from_value(jwk_json).unwrap();
    let key = DecodingKey::from_jwk(&jwk).unwrap();
    let mut v = Validation::new(alg);
    v.set_audience(&["https://orders.internal"]);
    v.set_issuer(&["chaperone"]);
    v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    v.leeway = 0;
    let data = jsonwebtoken::decode::<Value>(token, &key, &v).unwrap();
    (data.header, data.claims)
}

fn bearer(lease: &chaperone_credentials::Lease) -> String {
    let (name, value) = lease.header();
    assert_eq!(name.as_str(), "authorization");
    assert!(value.is_sensitive());
    value
        .to_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_string()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn es256_claims_verify_and_exp_capped_by_session() {
    let mgr = CredentialManager::new(&creds(vec![cred(
        "orders",
        jwt_cfg(JwtAlgorithm::Es256, None, Duration::from_secs(300)),
        "authorization",
        "Bearer {token}",
    )]))
    .unwrap();
    // Session ends in 60 s: exp must be ≤ that, not now + 300.
    let c = ctx(Some("sess-1"), Duration::from_secs(60));
    let lease = mgr.acquire("orders", &c).await.unwrap();
    let token = bearer(&lease);
    let (header, claims) = verify(&mgr, &token, Algorithm::ES256);
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    assert_eq!(claims["sub"], "spiffe://test.example.org/ns/a/sa/agent");
    assert_eq!(claims["iss"], "chaperone");
    assert_eq!(claims["aud"], "https://orders.internal");
    assert_eq!(claims["scope"], "orders:read");
    assert_eq!(claims["session_id"], "sess-1");
    assert_eq!(claims["task"], "refund order 123");
    assert!(claims.get("act").is_none(), "root session has no act");
    let exp = claims["exp"].as_u64().unwrap();
    let not_after = c.not_after.duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!(exp <= not_after, "exp {exp} > not_after {not_after}");
    assert!(exp >= now() + 55);
    assert!(claims["iat"].as_u64().unwrap() <= now());
    assert_eq!(claims["jti"].as_str().unwrap(), lease.id());
    assert_eq!(claims["jti"].as_str().unwrap().len(), 32);
    assert_eq!(mgr.provider_kind("orders"), Some("jwt"));

    // Reused within the session.
    let again = mgr.acquire("orders", &c).await.unwrap();
    assert_eq!(bearer(&again), token);
    // Another session gets its own token.
    let other = mgr
        .acquire("orders", &ctx(Some("sess-2"), Duration::from_secs(60)))
        .await
        .unwrap();
    assert_ne!(bearer(&other), token);
}

#[tokio::test]
async fn ttl_shorter_than_session_wins() {
    let mgr = CredentialManager::new(&creds(vec![cred(
        "orders",
        jwt_cfg(JwtAlgorithm::Es256, None, Duration::from_secs(30)),
        "authorization",
        "Bearer {token}",
    )]))
    .unwrap();
    let lease = mgr
        .acquire("orders", &ctx(Some("s"), Duration::from_secs(3600)))
        .await
        .unwrap();
    let (_, claims) = verify(&mgr, &bearer(&lease), Algorithm::ES256);
    assert!(claims["exp"].as_u64().unwrap() <= now() + 30);
}

#[tokio::test]
async fn delegated_session_has_nested_act_chain() {
    let mgr = CredentialManager::new(&creds(vec![cred(
        "orders",
        jwt_cfg(JwtAlgorithm::EdDsa, None, Duration::from_secs(300)),
        "authorization",
        "Bearer {token}",
    )]))
    .unwrap();
    let mut c = ctx(Some("child"), Duration::from_secs(120));
    let a = "spiffe://test.example.org/root-agent".to_string();
    let b = "spiffe://test.example.org/planner".to_string();
    c.delegation_chain = vec![a.clone(), b.clone(), c.spiffe_id.clone()];
    let lease = mgr.acquire("orders", &c).await.unwrap();
    let (header, claims) = verify(&mgr, &bearer(&lease), Algorithm::EdDSA);
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(claims["sub"], c.spiffe_id.as_str());
    assert_eq!(
        claims["act"]["sub"],
        b.as_str(),
        "outermost act = immediate delegator"
    );
    assert_eq!(
        claims["act"]["act"]["sub"],
        a.as_str(),
        "innermost act = root"
    );
    assert!(claims["act"]["act"].get("act").is_none());
}

#[tokio::test]
async fn key_from_pkcs8_pem_file_and_rfc7638_kid() {
    let dir = tempfile::tempdir().unwrap();
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
    let path = write(dir.path(), "jwt.pem", &pem);
    let mgr = CredentialManager::new(&creds(vec![cred(
        "orders",
        jwt_cfg(
            JwtAlgorithm::Es256,
            Some(path.clone()),
            Duration::from_secs(60),
        ),
        "authorization",
        "Bearer {token}",
    )]))
    .unwrap();
    let jwks = mgr.jwks();
    let k = &jwks["keys"][0];
    assert_eq!(k["kty"], "EC");
    assert_eq!(k["crv"], "P-256");
    assert_eq!(k["alg"], "ES256");
    // The JWK is the public half of our file's key.
    let kp = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8.as_ref(),
        &rng,
    )
    .unwrap();
    let b64u = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    assert_eq!(k["x"], b64u.encode(&kp.public_key().as_ref()[1..33]));
    // RFC 7638 thumbprint, computed independently.
    let canon = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        k["x"].as_str().unwrap(),
        k["y"].as_str().unwrap()
    );
    let thumb = b64u.encode(ring::digest::digest(
        &ring::digest::SHA256,
        canon.as_bytes(),
    ));
    assert_eq!(k["kid"], thumb.as_str());
    let lease = mgr
        .acquire("orders", &ctx(None, Duration::from_secs(30)))
        .await
        .unwrap();
    verify(&mgr, &bearer(&lease), Algorithm::ES256);

    // Wrong algorithm for the key: refused at startup.
    let err = CredentialManager::new(&creds(vec![cred(
        "orders",
        jwt_cfg(JwtAlgorithm::EdDsa, Some(path), Duration::from_secs(60)),
        "authorization",
        "Bearer {token}",
    )]))
    .unwrap_err();
    assert!(err.to_string().contains("Ed25519"), "{err}");
}

#[tokio::test]
async fn expired_session_gets_no_token() {
    let mgr = CredentialManager::new(&creds(vec![cred(
        "orders",
        jwt_cfg(JwtAlgorithm::Es256, None, Duration::from_secs(60)),
        "authorization",
        "Bearer {token}",
    )]))
    .unwrap();
    let mut c = ctx(Some("old"), Duration::from_secs(1));
    c.not_after = SystemTime::now() - Duration::from_secs(1);
    let err = mgr.acquire("orders", &c).await.unwrap_err();
    assert!(matches!(
        err,
        chaperone_credentials::CredentialError::Expired
    ));
}
