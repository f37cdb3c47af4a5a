//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while parsing identities, validating SVIDs,
/// loading TLS material or generating dev certificates.
///
/// Messages never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A string is not a well-formed SPIFFE ID (SPEC §3).
    #[error("invalid SPIFFE ID {id:?}: {reason}")]
    InvalidSpiffeId {
        /// The offending input (truncated to 256 characters).
        id: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// An `identities[].match` pattern is malformed.
    #[error("invalid identity pattern {pattern:?}: {reason}")]
    InvalidPattern {
        /// The pattern as written (truncated to 256 characters).
        pattern: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// The certificate bytes are not a parseable X.509 certificate.
    #[error("malformed certificate: {0}")]
    Certificate(String),
    /// The certificate parses but is not a valid X.509-SVID.
    #[error("not a valid X.509-SVID: {0}")]
    NotSvid(String),
    /// The SVID's trust domain is not in `tls.trust_domains`.
    #[error("trust domain {0:?} is not accepted")]
    UntrustedDomain(String),
    /// The peer presented no certificate.
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file holds nothing usable.
    #[error("{}: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The private key does not belong to the certificate.
    #[error("{}: private key does not match the certificate {}", key.display(), cert.display())]
    KeyMismatch {
        /// Certificate file.
        cert: PathBuf,
        /// Key file.
        key: PathBuf,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Generate(String),
}

/// Truncate user input for error messages.
pub(crate) fn clip(s: &str) -> String {
    if s.len() <= 256 {
        return s.to_owned();
    }
    let mut end = 256;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
