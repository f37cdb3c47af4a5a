//! X.509-SVID leaf validation (SPEC §3).

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

use crate::error::IdentityError;
use crate::spiffe::SpiffeId;

/// What the sidecar learns from a valid X.509-SVID leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvidInfo {
    /// The SPIFFE ID from the single URI SAN.
    pub id: SpiffeId,
    /// `notBefore`, unix seconds.
    pub not_before: i64,
    /// `notAfter`, unix seconds.
    pub not_after: i64,
    /// Serial number, lowercase hex of the DER integer bytes.
    pub serial_hex: String,
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Validate a DER leaf certificate as an X.509-SVID.
///
/// Checks: the DER parses completely (no trailing bytes); exactly one URI SAN and
/// it is a well-formed SPIFFE ID with a non-empty path (a trust-domain ID is not a
/// workload identity); basicConstraints `cA` is not true; keyUsage, when present,
/// has neither keyCertSign nor cRLSign. Chain and validity-period checks are the
/// TLS verifier's job; this function only reports the validity period.
pub fn validate_svid_leaf(der: &[u8]) -> Result<SvidInfo, IdentityError> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| IdentityError::Certificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(IdentityError::Certificate(
            "trailing bytes after the certificate".into(),
        ));
    }
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::Certificate(format!("subjectAltName: {e}")))?;
    let uris: Vec<&str> = sans
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(*u),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let uri = match uris.as_slice() {
        [one] => *one,
        [] => return Err(IdentityError::NotSvid("no URI SAN".into())),
        more => {
            return Err(IdentityError::NotSvid(format!(
                "exactly one URI SAN is required, found {}",
                more.len()
            )))
        }
    };
    let id = SpiffeId::parse(uri)?;
    if id.path().is_empty() {
        return Err(IdentityError::NotSvid(
            "the SPIFFE ID has no path (a trust-domain ID is not a workload identity)".into(),
        ));
    }
    let bc = cert
        .basic_constraints()
        .map_err(|e| IdentityError::Certificate(format!("basicConstraints: {e}")))?;
    if bc.is_some_and(|b| b.value.ca) {
        return Err(IdentityError::NotSvid(
            "leaf is a CA certificate (basicConstraints cA=true)".into(),
        ));
    }
    let ku = cert
        .key_usage()
        .map_err(|e| IdentityError::Certificate(format!("keyUsage: {e}")))?;
    if let Some(ku) = ku {
        if ku.value.key_cert_sign() {
            return Err(IdentityError::NotSvid(
                "leaf has keyUsage keyCertSign".into(),
            ));
        }
        if ku.value.crl_sign() {
            return Err(IdentityError::NotSvid("leaf has keyUsage cRLSign".into()));
        }
    }
    let validity = cert.validity();
    Ok(SvidInfo {
        id,
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        serial_hex: to_hex(cert.raw_serial()),
    })
}

/// Validate the leaf (first certificate) of a peer chain.
pub fn svid_from_chain(chain: &[CertificateDer<'_>]) -> Result<SvidInfo, IdentityError> {
    match chain.first() {
        Some(leaf) => validate_svid_leaf(leaf.as_ref()),
        None => Err(IdentityError::NoPeerCertificate),
    }
}

/// The peer's SVID after a completed handshake on the agent listener.
pub fn peer_svid(conn: &rustls::ServerConnection) -> Result<SvidInfo, IdentityError> {
    match conn.peer_certificates() {
        Some(chain) => svid_from_chain(chain),
        None => Err(IdentityError::NoPeerCertificate),
    }
}
