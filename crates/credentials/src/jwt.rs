//! `provider: jwt` — JWTs minted in-process with `ring` (ES256 or EdDSA).
//!
//! Claims: `iss`, `sub` (the caller's SPIFFE ID), `aud`, `iat`, `nbf`, `exp`
//! (= min(now + ttl, not_after)), `jti` (128 random bits, hex), `scope` (space
//! separated session scopes, omitted when none), `session_id`, `task` (when known),
//! and for delegated sessions an RFC 8693 `act` claim.
//!
//! `act` order: the outermost `act.sub` is the *immediate* delegator (the parent
//! session's SPIFFE ID), its nested `act.sub` that delegator's parent, and so on; the
//! innermost `act` is the root of the chain. For `delegation_chain = [A, B, C]` and
//! caller C: `sub = C, act = {sub: B, act: {sub: A}}`.
//!
//! Header: `alg`, `typ: JWT`, `kid` = RFC 7638 JWK thumbprint of the public key.
//! Revocation is "forget": the token is stateless and bounded by its short `exp`.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use chaperone_config::{JwtAlgorithm, JwtProvider as JwtConfig};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivatePkcs8KeyDer;
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use crate::provider::{CredentialProvider, IssueContext, Issued, RevocationHandle};
use crate::{CredentialError, Secret};

enum Key {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

/// A JWT minting provider. The private key lives inside `ring`'s key pair type
/// (which does not zeroize); the PKCS#8 bytes it was parsed from are zeroized.
pub struct JwtMinter {
    cfg: JwtConfig,
    key: Key,
    kid: String,
    jwk: Value,
    rng: SystemRandom,
}

impl std::fmt::Debug for JwtMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtMinter")
            .field("issuer", &self.cfg.issuer)
            .field("audience", &self.cfg.audience)
            .field("kid", &self.kid)
            .field("key", &"..redacted..")
            .finish()
    }
}

fn read_pkcs8(path: &Path) -> Result<Zeroizing<Vec<u8>>, CredentialError> {
    let err = |reason: String| CredentialError::File {
        what: "jwt signing key",
        path: path.display().to_string(),
        reason,
    };
    let pem = Zeroizing::new(std::fs::read(path).map_err(|e| err(e.kind().to_string()))?);
    let der = PrivatePkcs8KeyDer::from_pem_slice(&pem)
        .map_err(|_| err("expected a PEM `PRIVATE KEY` (PKCS#8) block".into()))?;
    Ok(Zeroizing::new(der.secret_pkcs8_der().to_vec()))
}

impl JwtMinter {
    /// Load the key from `signing_key` (PEM PKCS#8) or generate one.
    pub fn new(name: &str, cfg: &JwtConfig) -> Result<Self, CredentialError> {
        let rng = SystemRandom::new();
        let bad = |reason: &str| CredentialError::Config {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        let pkcs8: Zeroizing<Vec<u8>> = match &cfg.signing_key {
            Some(p) => read_pkcs8(p)?,
            None => match cfg.algorithm {
                JwtAlgorithm::Es256 => Zeroizing::new(
                    EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                        .map_err(|_| bad("cannot generate a P-256 key"))?
                        .as_ref()
                        .to_vec(),
                ),
                JwtAlgorithm::EdDsa => Zeroizing::new(
                    Ed25519KeyPair::generate_pkcs8(&rng)
                        .map_err(|_| bad("cannot generate an Ed25519 key"))?
                        .as_ref()
                        .to_vec(),
                ),
            },
        };
        let (key, jwk, thumb_input) = match cfg.algorithm {
            JwtAlgorithm::Es256 => {
                let kp = EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &pkcs8,
                    &rng,
                )
                .map_err(|_| bad("signing_key is not a P-256 PKCS#8 key (algorithm ES256)"))?;
                let pubkey = kp.public_key().as_ref();
                if pubkey.len() != 65 || pubkey[0] != 4 {
                    return Err(bad("unexpected P-256 public key encoding"));
                }
                let x = B64.encode(&pubkey[1..33]);
                let y = B64.encode(&pubkey[33..65]);
                let thumb = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
                let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "alg": "ES256", "use": "sig"});
                (Key::Es256(kp), jwk, thumb)
            }
            JwtAlgorithm::EdDsa => {
                let kp = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).map_err(|_| {
                    bad("signing_key is not an Ed25519 PKCS#8 key (algorithm EdDSA)")
                })?;
                let x = B64.encode(kp.public_key().as_ref());
                let thumb = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
                let jwk =
                    json!({"kty": "OKP", "crv": "Ed25519", "x": x, "alg": "EdDSA", "use": "sig"});
                (Key::EdDsa(kp), jwk, thumb)
            }
        };
        let kid = B64.encode(ring::digest::digest(
            &ring::digest::SHA256,
            thumb_input.as_bytes(),
        ));
        let mut jwk = jwk;
        if let Value::Object(m) = &mut jwk {
            m.insert("kid".into(), Value::String(kid.clone()));
        }
        Ok(JwtMinter {
            cfg: cfg.clone(),
            key,
            kid,
            jwk,
            rng,
        })
    }

    /// The public JWK (`kty`, `crv`, `x`, `y` for EC, `kid`, `alg`, `use`).
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// RFC 7638 thumbprint used as `kid`.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    fn alg(&self) -> &'static str {
        match self.key {
            Key::Es256(_) => "ES256",
            Key::EdDsa(_) => "EdDSA",
        }
    }

    /// Mint a token for `ctx`; returns (jti, exp, token).
    pub fn mint(
        &self,
        ctx: &IssueContext,
    ) -> Result<(String, SystemTime, Secret), CredentialError> {
        let ttl = ctx.capped_ttl(self.cfg.ttl)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| CredentialError::Expired)?
            .as_secs();
        let exp = now + ttl.as_secs();
        let mut jti_bytes = [0u8; 16];
        self.rng
            .fill(&mut jti_bytes)
            .map_err(|_| CredentialError::Signing)?;
        let jti = hex::encode(jti_bytes);
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(self.cfg.issuer));
        claims.insert("sub".into(), json!(ctx.spiffe_id));
        claims.insert("aud".into(), json!(self.cfg.audience));
        claims.insert("iat".into(), json!(now));
        claims.insert("nbf".into(), json!(now));
        claims.insert("exp".into(), json!(exp));
        claims.insert("jti".into(), json!(jti));
        if !ctx.scopes.is_empty() {
            claims.insert("scope".into(), json!(ctx.scopes.join(" ")));
        }
        if let Some(s) = &ctx.session_id {
            claims.insert("session_id".into(), json!(s));
        }
        if let Some(t) = &ctx.task {
            claims.insert("task".into(), json!(t));
        }
        if let Some(act) = act_claim(&ctx.spiffe_id, &ctx.delegation_chain) {
            claims.insert("act".into(), act);
        }
        let header = json!({"alg": self.alg(), "typ": "JWT", "kid": self.kid});
        let mut signing_input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(Value::Object(claims).to_string())
        );
        let sig = match &self.key {
            Key::Es256(kp) => kp
                .sign(&self.rng, signing_input.as_bytes())
                .map_err(|_| CredentialError::Signing)?
                .as_ref()
                .to_vec(),
            Key::EdDsa(kp) => kp.sign(signing_input.as_bytes()).as_ref().to_vec(),
        };
        signing_input.push('.');
        signing_input.push_str(&B64.encode(sig));
        Ok((
            jti,
            UNIX_EPOCH + std::time::Duration::from_secs(exp),
            Secret::new(signing_input),
        ))
    }
}

/// Build the nested RFC 8693 `act` claim: the actors before the caller, most recent
/// outermost. `None` for a root session.
pub(crate) fn act_claim(caller: &str, chain: &[String]) -> Option<Value> {
    let prior: &[String] = match chain.split_last() {
        Some((last, rest)) if last == caller => rest,
        _ => chain,
    };
    let mut act: Option<Value> = None;
    // Root first in `prior`: build from the root outwards so the root ends up innermost.
    for actor in prior {
        let mut m = Map::new();
        m.insert("sub".into(), json!(actor));
        if let Some(inner) = act.take() {
            m.insert("act".into(), inner);
        }
        act = Some(Value::Object(m));
    }
    act
}

#[async_trait::async_trait]
impl CredentialProvider for JwtMinter {
    fn kind(&self) -> &'static str {
        "jwt"
    }

    async fn issue(&self, ctx: &IssueContext) -> Result<Issued, CredentialError> {
        let (jti, exp, token) = self.mint(ctx)?;
        Ok(Issued::token(jti, exp, token, RevocationHandle::Forget))
    }

    async fn revoke(&self, _c: &Issued) -> Result<(), CredentialError> {
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::act_claim;
    use serde_json::json;

    #[test]
    fn act_order_most_recent_outermost() {
        let chain: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            act_claim("c", &chain),
            Some(json!({"sub": "b", "act": {"sub": "a"}}))
        );
        assert_eq!(act_claim("a", &chain[..1]), None);
        assert_eq!(act_claim("a", &[]), None);
    }
}
