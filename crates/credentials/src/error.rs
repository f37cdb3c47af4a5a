//! The crate's single error type. Messages never contain secret values or raw
//! upstream bodies: provider errors are reduced to a status code plus a short,
//! sanitised reason.

/// Everything that can go wrong while issuing, rendering or revoking a credential.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// No credential with this name is configured.
    #[error("unknown credential `{0}`")]
    UnknownCredential(String),
    /// The credential's configuration cannot be used.
    #[error("credential `{name}`: invalid configuration: {reason}")]
    Config {
        /// Credential name.
        name: String,
        /// What is wrong (never a secret value).
        reason: String,
    },
    /// A file (key, token, secret) could not be read or parsed.
    #[error("cannot read {what} file `{path}`: {reason}")]
    File {
        /// What the file holds (e.g. `vault token`).
        what: &'static str,
        /// The path.
        path: String,
        /// Why (I/O error kind or parse failure; never file content).
        reason: String,
    },
    /// The provider could not be reached (connect, TLS, timeout).
    #[error("{provider} provider unavailable: {reason}")]
    Unavailable {
        /// Provider kind.
        provider: &'static str,
        /// Sanitised reason.
        reason: String,
    },
    /// The provider refused or failed the request.
    #[error("{provider} provider answered HTTP {status}{detail}")]
    Upstream {
        /// Provider kind.
        provider: &'static str,
        /// HTTP status code.
        status: u16,
        /// Sanitised, truncated detail (`": ..."`), or empty.
        detail: String,
    },
    /// The provider answered something we cannot use.
    #[error("{provider} provider returned a malformed response: {reason}")]
    BadResponse {
        /// Provider kind.
        provider: &'static str,
        /// What was missing or wrong (field names only).
        reason: String,
    },
    /// The session (or per-call window) has no lifetime left.
    #[error("no credential can be issued: the session has expired")]
    Expired,
    /// The session's credentials were revoked; nothing more is issued for it.
    #[error("session `{0}` has ended; its credentials are revoked")]
    SessionEnded(String),
    /// The inject template cannot be rendered for this credential.
    #[error("credential `{name}`: cannot render inject template: {reason}")]
    Template {
        /// Credential name.
        name: String,
        /// Which placeholder is unavailable or why the value is not a valid header.
        reason: String,
    },
    /// Signing a JWT failed.
    #[error("jwt signing failed")]
    Signing,
}

/// Reduce an upstream-provided message to something safe to log: printable ASCII,
/// at most 160 characters, with any of the given secrets removed.
pub(crate) fn sanitise(msg: &str, secrets: &[&str]) -> String {
    let mut s: String = msg
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                ' '
            }
        })
        .collect();
    for sec in secrets {
        if sec.len() >= 4 {
            s = s.replace(sec, "..redacted..");
        }
    }
    if s.len() > 160 {
        let mut cut = 160;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}
