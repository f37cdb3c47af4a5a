//! The agent-facing TLS server configuration (SPEC §2 `tls`, §3).
//!
//! Client authentication is mandatory. The chain, signature and validity period
//! are checked by rustls' WebPKI verifier built from the trust bundle; the leaf
//! is then checked as an X.509-SVID and its trust domain against
//! `tls.trust_domains`. Any failure fails the handshake.
//!
//! The certificate, key and bundle files are re-read when they change; a new
//! configuration is swapped in atomically only when everything parses and the
//! key matches the certificate. Established connections keep their session.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use chaperone_config::TlsConfig;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use zeroize::Zeroizing;

use crate::error::IdentityError;
use crate::svid::{to_hex, validate_svid_leaf};

/// ALPN protocols offered on the agent listener, in preference order.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The ring crypto provider, obtained explicitly (never the process default).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why a client certificate was refused during the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeFailure {
    /// Chain does not lead to the bundle, bad signature, expired or not yet valid.
    Chain,
    /// The leaf is not a valid X.509-SVID (SAN, CA flag, key usage, SPIFFE ID syntax).
    InvalidSvid,
    /// The SVID's trust domain is not in `tls.trust_domains`.
    UntrustedDomain,
}

impl HandshakeFailure {
    /// All reasons, in a fixed order.
    pub const ALL: [HandshakeFailure; 3] = [
        HandshakeFailure::Chain,
        HandshakeFailure::InvalidSvid,
        HandshakeFailure::UntrustedDomain,
    ];

    /// Short stable label (for metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::Chain => "chain",
            HandshakeFailure::InvalidSvid => "invalid_svid",
            HandshakeFailure::UntrustedDomain => "untrusted_domain",
        }
    }

    fn index(self) -> usize {
        match self {
            HandshakeFailure::Chain => 0,
            HandshakeFailure::InvalidSvid => 1,
            HandshakeFailure::UntrustedDomain => 2,
        }
    }
}

/// Callback invoked for every refused client certificate with the reason and a
/// human-readable detail. It runs on the handshake path: keep it cheap.
pub type FailureHook = dyn Fn(HandshakeFailure, &str) + Send + Sync;

struct Hook(Box<FailureHook>);

#[derive(Default)]
struct FailureStats {
    total: Arc<AtomicU64>,
    by_reason: [AtomicU64; 3],
    hook: ArcSwapOption<Hook>,
}

impl FailureStats {
    fn record(&self, reason: HandshakeFailure, detail: &str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.by_reason[reason.index()].fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            reason = reason.as_str(),
            detail,
            "client certificate refused"
        );
        if let Some(h) = self.hook.load().as_ref() {
            (h.0)(reason, detail);
        }
    }
}

/// Wraps the WebPKI verifier with the SVID and trust-domain checks.
struct SvidVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    trust_domains: Arc<Vec<String>>,
    stats: Arc<FailureStats>,
}

impl std::fmt::Debug for SvidVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SvidVerifier")
            .field("trust_domains", &self.trust_domains)
            .finish_non_exhaustive()
    }
}

fn refuse(e: IdentityError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

impl ClientCertVerifier for SvidVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if let Err(e) = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            self.stats.record(HandshakeFailure::Chain, &e.to_string());
            return Err(e);
        }
        let info = match validate_svid_leaf(end_entity.as_ref()) {
            Ok(i) => i,
            Err(e) => {
                self.stats
                    .record(HandshakeFailure::InvalidSvid, &e.to_string());
                return Err(refuse(e));
            }
        };
        let td = info.id.trust_domain();
        if !self.trust_domains.iter().any(|t| t == td) {
            let e = IdentityError::UntrustedDomain(td.to_owned());
            self.stats.record(
                HandshakeFailure::UntrustedDomain,
                &format!("{}: {e}", info.id),
            );
            return Err(refuse(e));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// One loaded generation of cert + key + bundle.
struct Loaded {
    config: Arc<ServerConfig>,
    fingerprint: [u8; 32],
    not_after: i64,
    serial_hex: String,
}

/// Raw file contents of one generation; the key bytes are zeroized on drop.
struct Files {
    cert: Vec<u8>,
    key: Zeroizing<Vec<u8>>,
    bundle: Vec<u8>,
}

impl Files {
    fn read(cert: &Path, key: &Path, bundle: &Path) -> Result<Files, IdentityError> {
        let rd = |p: &Path| {
            std::fs::read(p).map_err(|source| IdentityError::Io {
                path: p.to_owned(),
                source,
            })
        };
        Ok(Files {
            cert: rd(cert)?,
            key: Zeroizing::new(rd(key)?),
            bundle: rd(bundle)?,
        })
    }

    fn fingerprint(&self) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [&self.cert[..], &self.key[..], &self.bundle[..]] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }
}

/// Parse every certificate of a PEM file (at least one).
pub(crate) fn parse_certs(
    pem: &[u8],
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| IdentityError::Pem {
            path: path.to_owned(),
            reason: format!("bad certificate PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(IdentityError::Pem {
            path: path.to_owned(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// Parse a private key (PKCS#8, SEC1 or PKCS#1 PEM).
pub(crate) fn parse_key(pem: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, IdentityError> {
    // The error text never includes key bytes.
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| IdentityError::Pem {
        path: path.to_owned(),
        reason: format!("no usable private key: {e}"),
    })
}

/// Trust anchors from a PEM bundle (at least one).
pub(crate) fn parse_roots(pem: &[u8], path: &Path) -> Result<RootCertStore, IdentityError> {
    let mut roots = RootCertStore::empty();
    for c in parse_certs(pem, path)? {
        roots.add(c).map_err(|e| IdentityError::Pem {
            path: path.to_owned(),
            reason: format!("unusable trust anchor: {e}"),
        })?;
    }
    Ok(roots)
}

/// Load the key and check it belongs to the first certificate of the chain.
/// An undeterminable match counts as a mismatch (fail closed).
pub(crate) fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, IdentityError> {
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| IdentityError::Pem {
            path: key_path.to_owned(),
            reason: format!("unsupported private key: {e}"),
        })?;
    let ck = CertifiedKey::new(chain, signer);
    ck.keys_match().map_err(|_| IdentityError::KeyMismatch {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
    })?;
    Ok(ck)
}

/// The agent-facing TLS configuration with hot reload.
pub struct ServerTls {
    cert_path: PathBuf,
    key_path: PathBuf,
    bundle_path: PathBuf,
    trust_domains: Arc<Vec<String>>,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<Loaded>,
    stats: Arc<FailureStats>,
    reloads: AtomicU64,
    reload_lock: Mutex<()>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cur = self.current.load();
        f.debug_struct("ServerTls")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .field("bundle", &self.bundle_path)
            .field("trust_domains", &self.trust_domains)
            .field("serial", &cur.serial_hex)
            .field("not_after", &cur.not_after)
            .finish()
    }
}

impl ServerTls {
    /// Read the files named by `cfg` and build the first configuration.
    pub fn load(cfg: &TlsConfig) -> Result<Arc<ServerTls>, IdentityError> {
        if cfg.trust_domains.is_empty() {
            return Err(IdentityError::Tls(
                "tls.trust_domains is empty: no agent could ever connect".into(),
            ));
        }
        for td in &cfg.trust_domains {
            crate::SpiffeId::from_parts(td, "")?;
        }
        let trust_domains = Arc::new(cfg.trust_domains.clone());
        let provider = crypto_provider();
        let stats = Arc::new(FailureStats::default());
        let files = Files::read(&cfg.cert, &cfg.key, &cfg.bundle)?;
        let loaded = build(
            &files,
            &cfg.cert,
            &cfg.key,
            &cfg.bundle,
            &trust_domains,
            &provider,
            &stats,
        )?;
        Ok(Arc::new(ServerTls {
            cert_path: cfg.cert.clone(),
            key_path: cfg.key.clone(),
            bundle_path: cfg.bundle.clone(),
            trust_domains,
            provider,
            current: ArcSwap::from_pointee(loaded),
            stats,
            reloads: AtomicU64::new(0),
            reload_lock: Mutex::new(()),
        }))
    }

    /// An acceptor for the current configuration (cheap: one Arc clone).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server_config())
    }

    /// The current rustls configuration.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current.load().config.clone()
    }

    /// Re-read cert, key and bundle; when their content changed, build and swap in
    /// a new configuration. Returns `Ok(true)` when swapped, `Ok(false)` when
    /// unchanged. On any error the current configuration stays in place.
    pub fn reload_if_changed(&self) -> Result<bool, IdentityError> {
        let _guard = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let files = Files::read(&self.cert_path, &self.key_path, &self.bundle_path)?;
        if files.fingerprint() == self.current.load().fingerprint {
            return Ok(false);
        }
        let loaded = build(
            &files,
            &self.cert_path,
            &self.key_path,
            &self.bundle_path,
            &self.trust_domains,
            &self.provider,
            &self.stats,
        )?;
        tracing::info!(serial = %loaded.serial_hex, not_after = loaded.not_after, "agent-facing TLS material reloaded");
        self.current.store(Arc::new(loaded));
        self.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Poll the files every `every` on a Tokio task (file reads run on the
    /// blocking pool). Errors are logged and the old configuration is kept. The
    /// task ends when the `ServerTls` is dropped.
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak: Weak<ServerTls> = Arc::downgrade(self);
        let every = every.max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(tls) = weak.upgrade() else { return };
                let res = tokio::task::spawn_blocking(move || tls.reload_if_changed()).await;
                match res {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "TLS reload failed; keeping the current certificate")
                    }
                    Err(e) => tracing::warn!(error = %e, "TLS reload task failed"),
                }
            }
        })
    }

    /// `notAfter` of the serving certificate (unix seconds).
    pub fn cert_not_after(&self) -> i64 {
        self.current.load().not_after
    }

    /// Serial number (lowercase hex) of the serving certificate.
    pub fn cert_serial(&self) -> String {
        self.current.load().serial_hex.clone()
    }

    /// Number of successful reloads since `load`.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Total refused client certificates (shared counter; the metrics layer may keep it).
    /// Handshakes that fail before certificate verification (no certificate,
    /// protocol errors) are not counted here.
    pub fn handshake_failures(&self) -> Arc<AtomicU64> {
        self.stats.total.clone()
    }

    /// Refused client certificates by reason.
    pub fn handshake_failures_by_reason(&self) -> [(HandshakeFailure, u64); 3] {
        HandshakeFailure::ALL.map(|r| (r, self.stats.by_reason[r.index()].load(Ordering::Relaxed)))
    }

    /// Install (or replace) a callback invoked for every refused client certificate.
    pub fn set_failure_hook(&self, hook: impl Fn(HandshakeFailure, &str) + Send + Sync + 'static) {
        self.stats.hook.store(Some(Arc::new(Hook(Box::new(hook)))));
    }

    /// The accepted agent trust domains.
    pub fn trust_domains(&self) -> &[String] {
        &self.trust_domains
    }
}

fn build(
    files: &Files,
    cert_path: &Path,
    key_path: &Path,
    bundle_path: &Path,
    trust_domains: &Arc<Vec<String>>,
    provider: &Arc<CryptoProvider>,
    stats: &Arc<FailureStats>,
) -> Result<Loaded, IdentityError> {
    let chain = parse_certs(&files.cert, cert_path)?;
    let (not_after, serial_hex) = {
        let first = chain.first().ok_or_else(|| IdentityError::Pem {
            path: cert_path.to_owned(),
            reason: "no CERTIFICATE block".into(),
        })?;
        let (_, leaf) = x509_parser::parse_x509_certificate(first.as_ref()).map_err(|e| {
            IdentityError::Pem {
                path: cert_path.to_owned(),
                reason: format!("bad certificate: {e}"),
            }
        })?;
        (
            leaf.validity().not_after.timestamp(),
            to_hex(leaf.raw_serial()),
        )
    };
    let now = UnixTime::now().as_secs() as i64;
    if not_after <= now {
        return Err(IdentityError::Pem {
            path: cert_path.to_owned(),
            reason: format!("certificate expired (notAfter {not_after})"),
        });
    }
    let key = parse_key(&files.key, key_path)?;
    let ck = certified_key(chain, key, provider, cert_path, key_path)?;
    let roots = parse_roots(&files.bundle, bundle_path)?;
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| IdentityError::Tls(format!("client verifier: {e}")))?;
    let verifier = SvidVerifier {
        inner,
        trust_domains: trust_domains.clone(),
        stats: stats.clone(),
    };
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| IdentityError::Tls(e.to_string()))?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(ck)));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Loaded {
        config: Arc::new(config),
        fingerprint: files.fingerprint(),
        not_after,
        serial_hex,
    })
}
