//! `provider: static` — a long-lived secret from a file (e.g. a mounted Kubernetes
//! Secret). Trailing newline trimmed; re-read when the file's mtime or length changes.
//! The id is `static:<name>`; revocation means forgetting (the secret is not ours to
//! revoke — rotate it at its source).

use chaperone_config::StaticProvider as StaticConfig;

use crate::files::WatchedFile;
use crate::provider::{CredentialProvider, IssueContext, Issued, RevocationHandle};
use crate::CredentialError;

/// A static, file-backed credential.
pub struct StaticSecret {
    name: String,
    file: WatchedFile,
}

impl std::fmt::Debug for StaticSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticSecret")
            .field("name", &self.name)
            .field("file", &self.file.path())
            .finish()
    }
}

impl StaticSecret {
    /// Build from config (the file is read on first use).
    pub fn new(name: &str, cfg: &StaticConfig) -> Self {
        StaticSecret {
            name: name.to_string(),
            file: WatchedFile::new(&cfg.file, "static secret"),
        }
    }
}

#[async_trait::async_trait]
impl CredentialProvider for StaticSecret {
    fn kind(&self) -> &'static str {
        "static"
    }

    async fn issue(&self, ctx: &IssueContext) -> Result<Issued, CredentialError> {
        ctx.capped_ttl(std::time::Duration::MAX)?;
        let value = self.file.read()?;
        Ok(Issued::token(
            format!("static:{}", self.name),
            ctx.not_after,
            value,
            RevocationHandle::Forget,
        ))
    }

    async fn revoke(&self, _c: &Issued) -> Result<(), CredentialError> {
        Ok(())
    }
}
