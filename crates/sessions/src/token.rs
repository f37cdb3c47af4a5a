//! Session bearer tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::SessionError;

/// Prefix of every session token (`chs_` = chaperone session), so leaked tokens are
/// recognisable by secret scanners.
pub const TOKEN_PREFIX: &str = "chs_";

/// Presented tokens longer than this are rejected as unknown without hashing.
pub const MAX_TOKEN_LEN: usize = 256;

const TOKEN_BYTES: usize = 32;
/// `chs_` + base64url(32 bytes) without padding (43 chars).
const TOKEN_LEN: usize = 4 + 43;

/// A session bearer token: `chs_` followed by 256 bits from the OS CSPRNG, base64url
/// without padding.
///
/// The value is handed to the agent exactly once ([`SessionToken::expose`]); the store
/// keeps only its SHA-256 [`TokenDigest`]. `Debug` redacts it, there is no `Display`,
/// and the buffer is zeroised on drop.
pub struct SessionToken(Zeroizing<String>);

impl SessionToken {
    /// Mint a fresh token from `rng`.
    pub(crate) fn generate(rng: &SystemRandom) -> Result<Self, SessionError> {
        let mut raw = Zeroizing::new([0u8; TOKEN_BYTES]);
        rng.fill(raw.as_mut()).map_err(|_| SessionError::Rng)?;
        // Exact capacity: encoding never reallocates, so no unzeroised copy is left behind.
        let mut s = Zeroizing::new(String::with_capacity(TOKEN_LEN));
        s.push_str(TOKEN_PREFIX);
        URL_SAFE_NO_PAD.encode_string(raw.as_ref(), &mut s);
        Ok(Self(s))
    }

    /// The token text, to hand to the agent once (the `token` field of the 201 response).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The digest under which the store indexes this token.
    pub fn digest(&self) -> TokenDigest {
        TokenDigest::of(&self.0)
    }
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(..redacted..)")
    }
}

/// SHA-256 of a token's text: the only form in which a store keeps tokens.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// Digest of a presented token string.
    pub fn of(token: &str) -> Self {
        let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Self(out)
    }

    /// The raw digest bytes (e.g. as a key in a shared store).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenDigest({}..)", hex::encode(&self.0[..4]))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn token_shape_and_redaction() {
        let rng = SystemRandom::new();
        let t = SessionToken::generate(&rng).unwrap();
        let s = t.expose();
        assert_eq!(s.len(), TOKEN_LEN);
        assert!(s.starts_with(TOKEN_PREFIX));
        let raw = URL_SAFE_NO_PAD.decode(&s[4..]).unwrap();
        assert_eq!(raw.len(), 32);
        assert_eq!(format!("{t:?}"), "SessionToken(..redacted..)");
        assert!(!format!("{:?}", t.digest()).contains(&s[4..]));
        let u = SessionToken::generate(&rng).unwrap();
        assert_ne!(t.expose(), u.expose());
        assert_eq!(t.digest(), TokenDigest::of(t.expose()));
        assert_ne!(t.digest(), u.digest());
    }
}
