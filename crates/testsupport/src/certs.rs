//! A flexible test certificate factory on top of rcgen.
//!
//! ```ignore
//! use chaperone_testsupport::certs::{TestCa, LeafSpec};
//! let ca = TestCa::new("agents");
//! let agent = ca.svid("spiffe://prod.example.org/ns/support/sa/bot");
//! let server = ca.server_cert(&["localhost"]);
//! let bad = ca.leaf(LeafSpec { uri_sans: vec!["spiffe://td/a".into(), "spiffe://td/b".into()], ..LeafSpec::default() });
//! let expired = ca.leaf(LeafSpec::svid("spiffe://td/a").expired());
//! let client = chaperone_testsupport::certs::mtls_client_config(&ca.cert_pem, &agent.cert_pem, &agent.key_pem);
//! ```
//!
//! Everything panics on misuse: this is test code.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, SanType,
    SerialNumber,
};
pub use rcgen::{ExtendedKeyUsagePurpose, KeyUsagePurpose};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
pub use time::{Duration, OffsetDateTime};

static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_serial(explicit: Option<u64>) -> SerialNumber {
    use ring::rand::SecureRandom;
    match explicit {
        Some(s) => SerialNumber::from(s),
        None => {
            // Random high bytes + a process counter: unique across CAs and runs.
            let mut b = [0u8; 16];
            ring::rand::SystemRandom::new()
                .fill(&mut b[..8])
                .expect("randomness");
            b[0] = (b[0] & 0x7f) | 0x01;
            let n = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            b[8..].copy_from_slice(&n.to_be_bytes());
            SerialNumber::from_slice(&b)
        }
    }
}

/// Hex of the serial as DER encodes it (minimal positive INTEGER content).
fn der_serial_hex(bytes: &[u8]) -> String {
    let first = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    let mut v = bytes[first..].to_vec();
    if v.is_empty() {
        v.push(0);
    }
    if v[0] & 0x80 != 0 {
        v.insert(0, 0);
    }
    v.iter().map(|b| format!("{b:02x}")).collect()
}

/// What to put in a leaf certificate. `LeafSpec::default()` is a plain leaf with
/// no SANs, `digitalSignature` key usage, valid from one hour ago for one day.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    /// Subject common name.
    pub common_name: String,
    /// URI SANs (SPIFFE IDs), written verbatim (invalid IDs are allowed on purpose).
    pub uri_sans: Vec<String>,
    /// DNS SANs.
    pub dns_sans: Vec<String>,
    /// IP SANs.
    pub ip_sans: Vec<IpAddr>,
    /// basicConstraints cA=true when set.
    pub is_ca: bool,
    /// keyUsage bits (empty = no keyUsage extension).
    pub key_usages: Vec<KeyUsagePurpose>,
    /// extendedKeyUsage (empty = no EKU extension).
    pub extended_key_usages: Vec<ExtendedKeyUsagePurpose>,
    /// Validity start.
    pub not_before: OffsetDateTime,
    /// Validity end.
    pub not_after: OffsetDateTime,
    /// Serial number; `None` = unique random.
    pub serial: Option<u64>,
    /// Reuse this key (PEM) instead of generating one (e.g. a rotated cert with the same key).
    pub key_pem: Option<String>,
}

impl Default for LeafSpec {
    fn default() -> Self {
        let now = OffsetDateTime::now_utc();
        LeafSpec {
            common_name: "test leaf".into(),
            uri_sans: Vec::new(),
            dns_sans: Vec::new(),
            ip_sans: Vec::new(),
            is_ca: false,
            key_usages: vec![KeyUsagePurpose::DigitalSignature],
            extended_key_usages: Vec::new(),
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(1),
            serial: None,
            key_pem: None,
        }
    }
}

impl LeafSpec {
    /// A valid X.509-SVID spec for one SPIFFE ID.
    pub fn svid(id: &str) -> Self {
        LeafSpec {
            common_name: id.rsplit('/').next().unwrap_or("svid").into(),
            uri_sans: vec![id.into()],
            ..Self::default()
        }
    }

    /// A server spec for DNS names (plus IP SANs for names that parse as IPs).
    pub fn server(names: &[&str]) -> Self {
        let mut s = LeafSpec {
            common_name: names.first().copied().unwrap_or("server").into(),
            ..Self::default()
        };
        for n in names {
            match n.parse::<IpAddr>() {
                Ok(ip) => s.ip_sans.push(ip),
                Err(_) => s.dns_sans.push((*n).into()),
            }
        }
        s
    }

    /// Expired one hour ago (valid from two days ago).
    pub fn expired(mut self) -> Self {
        let now = OffsetDateTime::now_utc();
        self.not_before = now - Duration::days(2);
        self.not_after = now - Duration::hours(1);
        self
    }

    /// Valid only from tomorrow.
    pub fn not_yet_valid(mut self) -> Self {
        let now = OffsetDateTime::now_utc();
        self.not_before = now + Duration::days(1);
        self.not_after = now + Duration::days(2);
        self
    }

    /// Valid from now for `d`.
    pub fn valid_for(mut self, d: Duration) -> Self {
        let now = OffsetDateTime::now_utc();
        self.not_before = now - Duration::minutes(1);
        self.not_after = now + d;
        self
    }

    /// Add a URI SAN.
    pub fn with_uri(mut self, uri: &str) -> Self {
        self.uri_sans.push(uri.into());
        self
    }

    /// Add DNS SANs.
    pub fn with_dns(mut self, names: &[&str]) -> Self {
        self.dns_sans.extend(names.iter().map(|s| s.to_string()));
        self
    }

    /// Set key usages.
    pub fn with_key_usages(mut self, ku: &[KeyUsagePurpose]) -> Self {
        self.key_usages = ku.to_vec();
        self
    }

    /// Mark as a CA certificate (basicConstraints cA=true).
    pub fn ca(mut self) -> Self {
        self.is_ca = true;
        self
    }

    /// Fixed serial number.
    pub fn with_serial(mut self, serial: u64) -> Self {
        self.serial = Some(serial);
        self
    }

    /// Reuse an existing key.
    pub fn with_key(mut self, key_pem: &str) -> Self {
        self.key_pem = Some(key_pem.into());
        self
    }
}

/// An issued certificate with its private key.
#[derive(Clone)]
pub struct TestCert {
    /// Leaf certificate PEM.
    pub cert_pem: String,
    /// Leaf + intermediate CA certificates PEM (what a server/client should send).
    pub chain_pem: String,
    /// Private key PEM (PKCS#8).
    pub key_pem: String,
    /// Leaf DER.
    pub der: CertificateDer<'static>,
    /// Serial number as lowercase hex of the DER integer bytes.
    pub serial_hex: String,
}

impl std::fmt::Debug for TestCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCert")
            .field("serial_hex", &self.serial_hex)
            .finish_non_exhaustive()
    }
}

impl TestCert {
    /// Write `<name>.pem` (the chain) and `<name>_key.pem` into `dir`; returns (cert, key) paths.
    pub fn write_to(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}_key.pem"));
        std::fs::write(&cert, &self.chain_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }

    /// The chain as rustls DER certificates.
    pub fn chain_der(&self) -> Vec<CertificateDer<'static>> {
        parse_certs(&self.chain_pem)
    }

    /// The private key as rustls DER.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("key PEM")
    }
}

/// A test certificate authority (root or intermediate).
pub struct TestCa {
    /// This CA's certificate PEM.
    pub cert_pem: String,
    /// This CA's key PEM.
    pub key_pem: String,
    /// This CA's certificate DER.
    pub der: CertificateDer<'static>,
    /// Intermediate chain to append to issued leaves (this CA first when it is an
    /// intermediate; empty for a root).
    chain_tail: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = now - Duration::days(1);
    p.not_after = now + Duration::days(30);
    p.serial_number = Some(next_serial(None));
    p
}

impl TestCa {
    /// A fresh self-signed root CA named `name` (ECDSA P-256).
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("keygen");
        let params = ca_params(name);
        let cert = params.self_signed(&key).expect("self-sign CA");
        TestCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            chain_tail: String::new(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An existing CA (certificate + key PEM), e.g. one written by
    /// `chaperone dev certs`, so tests can issue bad leaves under a trusted root.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<TestCa, String> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| e.to_string())?;
        let der = rustls_pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| e.to_string())?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| e.to_string())?;
        Ok(TestCa {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            der,
            chain_tail: String::new(),
            issuer,
        })
    }

    /// An intermediate CA signed by this CA. Leaves it issues carry the
    /// intermediate(s) in [`TestCert::chain_pem`].
    pub fn intermediate(&self, name: &str) -> TestCa {
        let key = KeyPair::generate().expect("keygen");
        let mut params = ca_params(name);
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign intermediate");
        let pem = cert.pem();
        TestCa {
            chain_tail: format!("{pem}{}", self.chain_tail),
            cert_pem: pem,
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Issue a leaf certificate exactly as `spec` says.
    pub fn leaf(&self, spec: LeafSpec) -> TestCert {
        let key = match &spec.key_pem {
            Some(pem) => KeyPair::from_pem(pem).expect("key PEM"),
            None => KeyPair::generate().expect("keygen"),
        };
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, spec.common_name.as_str());
        p.distinguished_name = dn;
        p.is_ca = if spec.is_ca {
            IsCa::Ca(BasicConstraints::Unconstrained)
        } else {
            IsCa::ExplicitNoCa
        };
        p.key_usages = spec.key_usages.clone();
        p.extended_key_usages = spec.extended_key_usages.clone();
        p.not_before = spec.not_before;
        p.not_after = spec.not_after;
        p.serial_number = Some(next_serial(spec.serial));
        p.use_authority_key_identifier_extension = true;
        for u in &spec.uri_sans {
            p.subject_alt_names.push(SanType::URI(
                u.as_str().try_into().expect("URI SAN must be IA5"),
            ));
        }
        for d in &spec.dns_sans {
            p.subject_alt_names.push(SanType::DnsName(
                d.as_str().try_into().expect("DNS SAN must be IA5"),
            ));
        }
        for ip in &spec.ip_sans {
            p.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        let serial_hex = der_serial_hex(
            &p.serial_number
                .as_ref()
                .map(|s| s.to_bytes())
                .unwrap_or_default(),
        );
        let cert = p.signed_by(&key, &self.issuer).expect("sign leaf");
        let pem = cert.pem();
        TestCert {
            chain_pem: format!("{pem}{}", self.chain_tail),
            cert_pem: pem,
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            serial_hex,
        }
    }

    /// A valid agent SVID for `spiffe_id`.
    pub fn svid(&self, spiffe_id: &str) -> TestCert {
        self.leaf(LeafSpec::svid(spiffe_id))
    }

    /// A server certificate for the given DNS names / IPs (`localhost` and
    /// `127.0.0.1` are always included).
    pub fn server_cert(&self, dns: &[&str]) -> TestCert {
        let mut names: Vec<&str> = dns.to_vec();
        for n in ["localhost", "127.0.0.1"] {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        self.leaf(LeafSpec::server(&names))
    }

    /// Write this CA's certificate to `dir/<name>.pem`; returns the path.
    pub fn write_to(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(format!("{name}.pem"));
        std::fs::write(&p, &self.cert_pem).expect("write CA");
        p
    }
}

fn parse_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("cert PEM")
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &str) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for c in parse_certs(ca_pem) {
        roots.add(c).expect("trust anchor");
    }
    roots
}

/// An mTLS client configuration: trusts `ca_pem` (one or more CA certificates),
/// presents `cert_pem` (leaf, optionally followed by intermediates) with
/// `key_pem`. ALPN `h2`, `http/1.1`; TLS 1.2 and 1.3; ring.
pub fn mtls_client_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Arc<rustls::ClientConfig> {
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key PEM");
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots(ca_pem))
        .with_client_auth_cert(parse_certs(cert_pem), key)
        .expect("client cert");
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// A TLS client configuration that trusts `ca_pem` and presents no certificate.
pub fn tls_client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots(ca_pem))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// A TLS server configuration serving `cert` (its chain), optionally requiring
/// client certificates chaining to `client_ca_pem`. ALPN `h2`, `http/1.1`.
pub fn tls_server_config(
    cert: &TestCert,
    client_ca_pem: Option<&str>,
) -> Arc<rustls::ServerConfig> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions");
    let builder = match client_ca_pem {
        Some(ca) => {
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)),
                provider(),
            )
            .build()
            .expect("client verifier");
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(cert.chain_der(), cert.key_der())
        .expect("server cert");
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn leaf_fields_round_trip() {
        let ca = TestCa::new("root");
        let inter = ca.intermediate("inter");
        let c = inter.leaf(
            LeafSpec::svid("spiffe://td/a")
                .with_serial(0x1234)
                .with_dns(&["x.test"]),
        );
        assert_eq!(c.serial_hex, "1234");
        assert_eq!(c.chain_der().len(), 2);
        assert_ne!(c.cert_pem, c.chain_pem);
        let again = ca.leaf(LeafSpec::svid("spiffe://td/a").with_key(&c.key_pem));
        assert_eq!(again.key_pem, c.key_pem);
        assert_ne!(again.serial_hex, c.serial_hex);
        let dir = tempfile::tempdir().unwrap();
        let (cp, kp) = c.write_to(dir.path(), "a");
        assert!(cp.ends_with("a.pem") && kp.ends_with("a_key.pem"));
        assert_eq!(std::fs::read_to_string(cp).unwrap(), c.chain_pem);
        let _ = mtls_client_config(&ca.cert_pem, &c.chain_pem, &c.key_pem);
        let _ = tls_server_config(&ca.server_cert(&["svc"]), Some(&ca.cert_pem));
    }
}
