//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong in the injector.
#[derive(Debug, thiserror::Error)]
pub enum InjectorError {
    /// The injector config file could not be read.
    #[error("cannot read config {path}: {source}")]
    ConfigRead {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The injector config file is not valid YAML for [`crate::InjectorConfig`].
    #[error("invalid config {path}: {message}")]
    ConfigParse {
        /// The config file.
        path: PathBuf,
        /// The parser's message (names the key and line).
        message: String,
    },
    /// The config parsed but a value is not acceptable.
    #[error("invalid config: {0}")]
    ConfigInvalid(String),
    /// The webhook serving certificate or key could not be loaded.
    #[error("webhook TLS: {0}")]
    Tls(String),
    /// Binding or accepting on the listen socket failed.
    #[error("listener {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The body is not an `admission.k8s.io/v1` `AdmissionReview` with a request and a uid.
    /// Answered with HTTP 400 (there is no uid to answer with).
    #[error("bad AdmissionReview: {0}")]
    BadReview(String),
    /// Building the response failed (serialization).
    #[error("internal error: {0}")]
    Internal(String),
}
