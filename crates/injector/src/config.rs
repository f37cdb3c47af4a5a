//! The injector's own config file (`chaperone injector --config FILE`).
//!
//! ```yaml
//! listen: 0.0.0.0:8443
//! tls: {cert: /etc/chaperone-injector/tls/tls.crt, key: /etc/chaperone-injector/tls/tls.key}
//! annotations_prefix: chaperone.dev
//! sidecar:
//!   image: ghcr.io/example/chaperone:0.1.0
//!   image_pull_policy: IfNotPresent
//!   resources: {requests: {cpu: 50m, memory: 64Mi}, limits: {memory: 256Mi}}
//!   config_map: chaperone-sidecar
//!   policy_config_map: chaperone-policies
//!   trust_domain: cluster.local
//!   log_level: info
//!   svid: {source: csi, csi_driver: csi.spiffe.io}
//!   admin_port: 15000
//!   agent_port: 15001
//!   run_as_user: 65532
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::InjectorError;

/// Top level of the injector config. Unknown keys are rejected.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectorConfig {
    /// HTTPS listen address of the webhook. Default `0.0.0.0:8443`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The webhook's serving certificate; re-read when the files change.
    pub tls: TlsFiles,
    /// What gets injected.
    pub sidecar: SidecarConfig,
    /// Prefix of every annotation and label the injector reads or writes. Default `chaperone.dev`.
    #[serde(default = "default_prefix")]
    pub annotations_prefix: String,
}

/// PEM files of the webhook serving certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// Certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Private key (PEM: PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

/// Kubernetes `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum PullPolicy {
    /// `Always`.
    Always,
    /// `IfNotPresent` (default).
    #[default]
    IfNotPresent,
    /// `Never`.
    Never,
}

impl PullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// The injected sidecar.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarConfig {
    /// The chaperone image (same image as the injector).
    pub image: String,
    /// Default `IfNotPresent`.
    #[serde(default)]
    pub image_pull_policy: PullPolicy,
    /// A Kubernetes `ResourceRequirements` object, copied verbatim.
    /// Default: requests cpu 50m / memory 64Mi, limits memory 256Mi.
    #[serde(default = "default_resources")]
    pub resources: serde_json::Value,
    /// Name of the ConfigMap holding the sidecar config (key `chaperone.yaml`).
    #[serde(default = "default_config_map")]
    pub config_map: String,
    /// Name of the ConfigMap holding the policies (`.rego` and `data.yaml`);
    /// annotation `<prefix>/policy-configmap` overrides it per pod.
    #[serde(default = "default_policy_config_map")]
    pub policy_config_map: String,
    /// Trust domain exported to the sidecar as `CHAPERONE_TRUST_DOMAIN`;
    /// annotation `<prefix>/trust-domain` overrides it per pod.
    pub trust_domain: String,
    /// `RUST_LOG` of the sidecar; annotation `<prefix>/log-level` overrides it. Default `info`.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Where the pod's X.509-SVID comes from.
    #[serde(default)]
    pub svid: SvidConfig,
    /// Admin port (`/healthz`, `/readyz`) of the sidecar. Default 15000.
    #[serde(default = "default_admin_port")]
    pub admin_port: u16,
    /// Agent-facing mTLS port of the sidecar (`CHAPERONE_URL`). Default 15001.
    #[serde(default = "default_agent_port")]
    pub agent_port: u16,
    /// UID (and GID) the sidecar runs as. Default 65532 (distroless `nonroot`).
    #[serde(default = "default_uid")]
    pub run_as_user: i64,
}

/// How the SVID volume is provided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SvidSource {
    /// A CSI volume of `csi_driver` (default `csi.spiffe.io`) that provides the SVID files.
    #[default]
    Csi,
    /// A Kubernetes Secret (`secret_name`, or annotation `<prefix>/svid-secret`).
    Secret,
    /// cert-manager's csi-driver-spiffe (`spiffe.csi.cert-manager.io`): `tls.crt`, `tls.key`, `ca.crt`.
    CertManagerCsi,
}

/// SVID volume settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SvidConfig {
    /// Default `csi`.
    #[serde(default)]
    pub source: SvidSource,
    /// Secret name for `source: secret` (the pod annotation `<prefix>/svid-secret` wins).
    #[serde(default)]
    pub secret_name: Option<String>,
    /// CSI driver for `source: csi`. Default `csi.spiffe.io`.
    #[serde(default = "default_csi_driver")]
    pub csi_driver: String,
    /// File names inside the SVID volume. Defaults depend on the source:
    /// `csi`: `svid.pem`, `svid_key.pem`, `bundle.pem`;
    /// `secret` and `cert-manager-csi`: `tls.crt`, `tls.key`, `ca.crt`.
    #[serde(default)]
    pub files: Option<SvidFiles>,
}

impl Default for SvidConfig {
    fn default() -> Self {
        SvidConfig {
            source: SvidSource::Csi,
            secret_name: None,
            csi_driver: default_csi_driver(),
            files: None,
        }
    }
}

/// File names of the certificate, key and trust bundle inside the SVID volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SvidFiles {
    /// Certificate chain file name.
    pub cert: String,
    /// Private key file name.
    pub key: String,
    /// Trust bundle file name.
    pub bundle: String,
}

impl SvidConfig {
    /// The effective file names (explicit `files`, else the source's defaults).
    pub fn effective_files(&self) -> SvidFiles {
        self.files_for(self.source)
    }

    /// The file names for `source` (explicit `files` win over the source's defaults).
    pub fn files_for(&self, source: SvidSource) -> SvidFiles {
        if let Some(f) = &self.files {
            return f.clone();
        }
        match source {
            SvidSource::Csi => SvidFiles {
                cert: "svid.pem".into(),
                key: "svid_key.pem".into(),
                bundle: "bundle.pem".into(),
            },
            SvidSource::Secret | SvidSource::CertManagerCsi => SvidFiles {
                cert: "tls.crt".into(),
                key: "tls.key".into(),
                bundle: "ca.crt".into(),
            },
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8443))
}
fn default_prefix() -> String {
    "chaperone.dev".into()
}
fn default_resources() -> serde_json::Value {
    serde_json::json!({
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"memory": "256Mi"}
    })
}
fn default_config_map() -> String {
    "chaperone-sidecar".into()
}
fn default_policy_config_map() -> String {
    "chaperone-policies".into()
}
fn default_log_level() -> String {
    "info".into()
}
fn default_admin_port() -> u16 {
    15000
}
fn default_agent_port() -> u16 {
    15001
}
fn default_uid() -> i64 {
    65532
}
fn default_csi_driver() -> String {
    "csi.spiffe.io".into()
}

/// Is `s` a valid DNS-1123 subdomain (ConfigMap / Secret / CSI driver names)?
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Is `s` a SPIFFE trust domain name (lowercase letters, digits, `.`, `-`, `_`)?
pub(crate) fn is_trust_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'_'
        })
}

/// Is `s` an acceptable `RUST_LOG` filter (`info`, `chaperone=debug,hyper=warn`, ...)?
pub(crate) fn is_log_filter(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_=,:.-".contains(&b))
}

impl InjectorConfig {
    /// Parse and validate a config from YAML text.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, InjectorError> {
        let cfg: InjectorConfig =
            serde_norway::from_str(text).map_err(|e| InjectorError::ConfigParse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read, parse and validate the config file.
    pub fn load(path: &Path) -> Result<Self, InjectorError> {
        let text = std::fs::read_to_string(path).map_err(|source| InjectorError::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text, path)
    }

    /// Check the invariants serde cannot express.
    pub fn validate(&self) -> Result<(), InjectorError> {
        let bad = |m: String| Err(InjectorError::ConfigInvalid(m));
        if !is_dns_subdomain(&self.annotations_prefix) {
            return bad(format!(
                "annotations_prefix {:?} is not a DNS subdomain",
                self.annotations_prefix
            ));
        }
        let s = &self.sidecar;
        if s.image.trim().is_empty() {
            return bad("sidecar.image must not be empty".into());
        }
        if !s.resources.is_object() {
            return bad("sidecar.resources must be a ResourceRequirements mapping".into());
        }
        for (key, v) in [
            ("sidecar.config_map", &s.config_map),
            ("sidecar.policy_config_map", &s.policy_config_map),
            ("sidecar.svid.csi_driver", &s.svid.csi_driver),
        ] {
            if !is_dns_subdomain(v) {
                return bad(format!("{key} {v:?} is not a valid Kubernetes name"));
            }
        }
        if let Some(name) = &s.svid.secret_name {
            if !is_dns_subdomain(name) {
                return bad(format!(
                    "sidecar.svid.secret_name {name:?} is not a valid Kubernetes name"
                ));
            }
        }
        if !is_trust_domain(&s.trust_domain) {
            return bad(format!(
                "sidecar.trust_domain {:?} is not a SPIFFE trust domain name",
                s.trust_domain
            ));
        }
        if !is_log_filter(&s.log_level) {
            return bad(format!(
                "sidecar.log_level {:?} is not a log filter",
                s.log_level
            ));
        }
        if s.admin_port == 0 || s.agent_port == 0 || s.admin_port == s.agent_port {
            return bad(
                "sidecar.admin_port and sidecar.agent_port must be distinct and non-zero".into(),
            );
        }
        if s.run_as_user <= 0 {
            return bad("sidecar.run_as_user must be a non-root uid (> 0)".into());
        }
        let files = s.svid.effective_files();
        for f in [&files.cert, &files.key, &files.bundle] {
            if f.is_empty() || f.contains('/') || f == ".." || f == "." {
                return bad(format!(
                    "sidecar.svid.files entry {f:?} must be a plain file name"
                ));
            }
        }
        Ok(())
    }
}
