//! `chaperone dev certs`: a throwaway CA, a sidecar server certificate and
//! agent SVIDs for trying chaperone without SPIRE. Not for production.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::ClientConfig;
use time::{Duration, OffsetDateTime};

use crate::error::IdentityError;
use crate::spiffe::SpiffeId;
use crate::tls::{certified_key, crypto_provider, parse_certs, parse_key, parse_roots, ALPN};

/// One generated agent SVID.
#[derive(Debug, Clone)]
pub struct AgentCert {
    /// The SPIFFE ID in the URI SAN.
    pub id: SpiffeId,
    /// `<name>.pem`.
    pub cert: PathBuf,
    /// `<name>_key.pem`.
    pub key: PathBuf,
}

/// Paths written by [`generate_dev_certs`].
#[derive(Debug, Clone)]
pub struct DevCerts {
    /// Output directory.
    pub dir: PathBuf,
    /// `ca.pem`.
    pub ca: PathBuf,
    /// `ca_key.pem`.
    pub ca_key: PathBuf,
    /// `bundle.pem` (the CA; use as `tls.bundle`).
    pub bundle: PathBuf,
    /// `sidecar.pem` (use as `tls.cert`).
    pub sidecar_cert: PathBuf,
    /// `sidecar_key.pem` (use as `tls.key`).
    pub sidecar_key: PathBuf,
    /// The sidecar's SPIFFE ID (`spiffe://TD/chaperone/sidecar`).
    pub sidecar_id: SpiffeId,
    /// One entry per distinct agent ID, in input order.
    pub agents: Vec<AgentCert>,
}

impl DevCerts {
    /// A human-readable summary listing every file written.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "dev certificates written to {}", self.dir.display());
        let _ = writeln!(
            s,
            "  CA:        {} (key {})",
            self.ca.display(),
            self.ca_key.display()
        );
        let _ = writeln!(s, "  bundle:    {}   -> tls.bundle", self.bundle.display());
        let _ = writeln!(
            s,
            "  sidecar:   {} / {}   -> tls.cert / tls.key ({})",
            self.sidecar_cert.display(),
            self.sidecar_key.display(),
            self.sidecar_id
        );
        for a in &self.agents {
            let _ = writeln!(
                s,
                "  agent:     {} / {}   ({})",
                a.cert.display(),
                a.key.display(),
                a.id
            );
        }
        s.push_str("These are for local testing only; the CA key is on disk.");
        s
    }
}

fn gen_err(e: rcgen::Error) -> IdentityError {
    IdentityError::Generate(e.to_string())
}

fn random_serial() -> Result<SerialNumber, IdentityError> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| IdentityError::Generate("no randomness".into()))?;
    b[0] &= 0x7f; // positive
    b[0] |= 0x01; // no leading zero byte
    Ok(SerialNumber::from_slice(&b))
}

fn uri(id: &SpiffeId) -> Result<SanType, IdentityError> {
    Ok(SanType::URI(id.as_str().try_into().map_err(gen_err)?))
}

fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    };
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mode = if secret { 0o600 } else { 0o644 };
        // Replace atomically so a watching sidecar never reads half a file.
        let tmp = path.with_extension("pem.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(contents.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
    #[cfg(not(unix))]
    {
        let _ = secret;
        std::fs::write(path, contents).map_err(io)
    }
}

/// Generate a dev CA, the sidecar certificate and one SVID per agent ID under
/// `out` (created if missing). With no `agent_ids`, one SVID for
/// `spiffe://TD/ns/default/sa/agent` is made. Agent files are named after the
/// ID's last path segment; repeated IDs are written once, and two different IDs
/// that would write the same file are refused.
pub fn generate_dev_certs(
    out: &Path,
    trust_domain: &str,
    agent_ids: &[String],
) -> Result<DevCerts, IdentityError> {
    let sidecar_id = SpiffeId::from_parts(trust_domain, "/chaperone/sidecar")?;
    let ids: Vec<String> = if agent_ids.is_empty() {
        vec![format!("spiffe://{trust_domain}/ns/default/sa/agent")]
    } else {
        agent_ids.to_vec()
    };
    // Validate everything before touching the disk.
    let mut names: BTreeSet<String> = ["ca", "ca_key", "bundle", "sidecar", "sidecar_key"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut seen = BTreeSet::new();
    let mut agents = Vec::new();
    for raw in &ids {
        let id = SpiffeId::parse(raw)?;
        if !seen.insert(id.clone()) {
            continue;
        }
        let name = match id.segments().last() {
            Some(n) => n.to_owned(),
            None => {
                return Err(IdentityError::NotSvid(format!(
                    "{id}: an agent SVID needs a path"
                )));
            }
        };
        let key_name = format!("{name}_key");
        if !names.insert(name.clone()) || !names.insert(key_name) {
            return Err(IdentityError::Generate(format!(
                "{id}: file name {name}.pem collides with another output file; use distinct last path segments"
            )));
        }
        agents.push((id, name));
    }

    std::fs::create_dir_all(out).map_err(|source| IdentityError::Io {
        path: out.to_owned(),
        source,
    })?;
    let now = OffsetDateTime::now_utc();

    let ca_key = KeyPair::generate().map_err(gen_err)?;
    let mut ca_params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("chaperone dev CA ({trust_domain})"),
    );
    dn.push(DnType::OrganizationName, "chaperone dev");
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = now - Duration::hours(1);
    ca_params.not_after = now + Duration::days(365);
    ca_params.serial_number = Some(random_serial()?);
    ca_params.subject_alt_names = vec![uri(&SpiffeId::from_parts(trust_domain, "")?)?];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(gen_err)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf = |id: &SpiffeId, server: bool| -> Result<(String, String), IdentityError> {
        let key = KeyPair::generate().map_err(gen_err)?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            id.segments().last().unwrap_or("svid").to_owned(),
        );
        p.distinguished_name = dn;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.not_before = now - Duration::minutes(5);
        p.not_after = now + Duration::days(90);
        p.serial_number = Some(random_serial()?);
        p.use_authority_key_identifier_extension = true;
        p.subject_alt_names = vec![uri(id)?];
        if server {
            p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            for dns in ["localhost", "chaperone"] {
                p.subject_alt_names
                    .push(SanType::DnsName(dns.try_into().map_err(gen_err)?));
            }
            p.subject_alt_names
                .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        } else {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        let cert = p.signed_by(&key, &issuer).map_err(gen_err)?;
        Ok((cert.pem(), key.serialize_pem()))
    };

    let path = |n: &str| out.join(format!("{n}.pem"));
    let ca_pem = ca_cert.pem();
    write_file(&path("ca"), &ca_pem, false)?;
    write_file(&path("ca_key"), &issuer.key().serialize_pem(), true)?;
    write_file(&path("bundle"), &ca_pem, false)?;
    let (sc, sk) = leaf(&sidecar_id, true)?;
    write_file(&path("sidecar"), &sc, false)?;
    write_file(&path("sidecar_key"), &sk, true)?;
    let mut written = Vec::new();
    for (id, name) in agents {
        let (c, k) = leaf(&id, false)?;
        let cert = path(&name);
        let key = path(&format!("{name}_key"));
        write_file(&cert, &c, false)?;
        write_file(&key, &k, true)?;
        written.push(AgentCert { id, cert, key });
    }
    Ok(DevCerts {
        dir: out.to_owned(),
        ca: path("ca"),
        ca_key: path("ca_key"),
        bundle: path("bundle"),
        sidecar_cert: path("sidecar"),
        sidecar_key: path("sidecar_key"),
        sidecar_id,
        agents: written,
    })
}

/// An mTLS client configuration trusting `ca_pem` and presenting `cert_pem` /
/// `key_pem` (PEM text or bytes). ALPN offers `h2` then `http/1.1`; TLS 1.2+1.3;
/// ring provider. Fails if the key does not match the certificate.
pub fn client_config(
    ca_pem: impl AsRef<[u8]>,
    cert_pem: impl AsRef<[u8]>,
    key_pem: impl AsRef<[u8]>,
) -> Result<ClientConfig, IdentityError> {
    let provider = crypto_provider();
    let ca_path = Path::new("<ca>");
    let cert_path = Path::new("<client cert>");
    let key_path = Path::new("<client key>");
    let roots = parse_roots(ca_pem.as_ref(), ca_path)?;
    let chain = parse_certs(cert_pem.as_ref(), cert_path)?;
    let key = parse_key(key_pem.as_ref(), key_path)?;
    let ck = certified_key(chain, key, &provider, cert_path, key_path)?;
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| IdentityError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(ck)));
    cfg.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// [`client_config`] reading the three PEM files.
pub fn client_config_from_files(
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<ClientConfig, IdentityError> {
    let rd = |p: &Path| {
        std::fs::read(p).map_err(|source| IdentityError::Io {
            path: p.to_owned(),
            source,
        })
    };
    let key_bytes = zeroize::Zeroizing::new(rd(key)?);
    client_config(rd(ca)?, rd(cert)?, &key_bytes[..])
}
