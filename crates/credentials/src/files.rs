//! Secret files that are re-read when they change (mtime or length; looked at no more
//! often than every 100 ms).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use zeroize::Zeroizing;

use crate::{CredentialError, Secret};

/// How long a cached value is used without looking at the file again. Bounds the
/// `stat` calls on the request path to a few per second; a rotated secret is picked up
/// at most this much later.
const RECHECK: Duration = Duration::from_millis(100);

/// A cached value and the file stamp (mtime, length) it was read at.
struct Cached {
    modified: Option<SystemTime>,
    len: u64,
    checked: Instant,
    secret: Secret,
}

/// A file holding one secret; trailing `\n` / `\r\n` trimmed; cached until its
/// mtime or length changes (looked at no more often than every [`RECHECK`]).
pub(crate) struct WatchedFile {
    path: PathBuf,
    what: &'static str,
    cache: Mutex<Option<Cached>>,
}

impl WatchedFile {
    pub(crate) fn new(path: &Path, what: &'static str) -> Self {
        WatchedFile {
            path: path.to_path_buf(),
            what,
            cache: Mutex::new(None),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, reason: String) -> CredentialError {
        CredentialError::File {
            what: self.what,
            path: self.path.display().to_string(),
            reason,
        }
    }

    /// The current value (re-read when the file changed). An empty file is an error.
    pub(crate) fn read(&self) -> Result<Secret, CredentialError> {
        if let Ok(guard) = self.cache.lock() {
            if let Some(c) = guard.as_ref() {
                if c.checked.elapsed() < RECHECK {
                    return Ok(c.secret.clone());
                }
            }
        }
        let meta = std::fs::metadata(&self.path).map_err(|e| self.err(e.kind().to_string()))?;
        let stamp = (meta.modified().ok(), meta.len());
        if let Ok(mut guard) = self.cache.lock() {
            if let Some(c) = guard.as_mut() {
                if (c.modified, c.len) == stamp {
                    c.checked = Instant::now();
                    return Ok(c.secret.clone());
                }
            }
        }
        let raw =
            Zeroizing::new(std::fs::read(&self.path).map_err(|e| self.err(e.kind().to_string()))?);
        let text = std::str::from_utf8(&raw).map_err(|_| self.err("not UTF-8".into()))?;
        let trimmed = text.strip_suffix('\n').unwrap_or(text);
        let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
        if trimmed.is_empty() {
            return Err(self.err("file is empty".into()));
        }
        let secret = Secret::new(trimmed.to_string());
        if let Ok(mut guard) = self.cache.lock() {
            *guard = Some(Cached {
                modified: stamp.0,
                len: stamp.1,
                checked: Instant::now(),
                secret: secret.clone(),
            });
        }
        Ok(secret)
    }

    /// Drop the cached value (e.g. after the provider rejected it).
    pub(crate) fn invalidate(&self) {
        if let Ok(mut g) = self.cache.lock() {
            *g = None;
        }
    }
}
