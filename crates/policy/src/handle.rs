//! Hot-swappable policy: [`PolicyHandle`] and the file-polling [`PolicyWatcher`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::load;
use crate::{PolicyError, PolicyOptions, PolicySet};

/// The live policy. Readers call [`PolicyHandle::current`] once per call and keep that
/// `Arc` for the whole call, so a concurrent reload never changes a decision midway.
pub struct PolicyHandle {
    paths: Vec<PathBuf>,
    opts: PolicyOptions,
    current: ArcSwap<PolicySet>,
    /// Serialises reloads (watcher and SIGHUP may race).
    reload_lock: Mutex<()>,
    /// The files' fingerprint taken just before the last load attempt read them. The
    /// watcher compares against this, so an edit made between a load and the watcher's
    /// first poll is still noticed (a fingerprint taken after the load would already
    /// include it and the edit would never be applied).
    loaded: Mutex<Fingerprint>,
}

type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

impl std::fmt::Debug for PolicyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyHandle")
            .field("paths", &self.paths)
            .field("revision", &self.current.load().revision())
            .finish()
    }
}

impl PolicyHandle {
    /// Load the initial policy from `paths`; fails if it does not compile.
    pub fn new(paths: Vec<PathBuf>, opts: PolicyOptions) -> Result<Self, PolicyError> {
        let before = fingerprint(&paths);
        let set = PolicySet::load_with(&paths, &opts)?;
        Ok(Self::with_fingerprint(paths, opts, set, before))
    }

    /// Wrap an already loaded set; later reloads read `paths`. The files are taken to be
    /// as they are now: prefer [`PolicyHandle::new`], which fingerprints them before
    /// reading, so that no edit can slip between the load and the watcher.
    pub fn from_set(paths: Vec<PathBuf>, opts: PolicyOptions, set: PolicySet) -> Self {
        let now = fingerprint(&paths);
        Self::with_fingerprint(paths, opts, set, now)
    }

    fn with_fingerprint(
        paths: Vec<PathBuf>,
        opts: PolicyOptions,
        set: PolicySet,
        loaded: Fingerprint,
    ) -> Self {
        Self {
            paths,
            opts,
            current: ArcSwap::from_pointee(set),
            reload_lock: Mutex::new(()),
            loaded: Mutex::new(loaded),
        }
    }

    /// Whether the files differ from what the last load attempt read.
    fn changed_since_load(&self) -> bool {
        let now = fingerprint(&self.paths);
        *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) != now
    }

    /// The configured policy paths.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// The policy in force now.
    pub fn current(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    /// Re-read and compile the configured paths. On success the new set replaces the old
    /// one and is returned; on error the old set stays in force and the error is returned.
    pub fn reload(&self) -> Result<Arc<PolicySet>, PolicyError> {
        let _guard = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        // Fingerprint before reading: an edit racing this load shows up as a change on
        // the next poll (and is loaded then) instead of being recorded as seen. A failed
        // attempt records it too, so a broken edit is reported once, not on every poll.
        let before = fingerprint(&self.paths);
        let loaded = PolicySet::load_with(&self.paths, &self.opts);
        *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) = before;
        let set = Arc::new(loaded?);
        self.current.store(set.clone());
        Ok(set)
    }
}

/// What a reload attempt triggered by the watcher did.
#[derive(Debug, Clone)]
pub enum ReloadOutcome {
    /// The new set compiled and is now in force.
    Reloaded {
        /// Revision before the reload.
        previous_revision: String,
        /// Revision now in force.
        revision: String,
    },
    /// Files changed but did not compile; the previous set is still in force.
    Failed {
        /// Revision still in force.
        revision: String,
        /// The compile error (`file:line:col: ...`).
        error: String,
    },
}

/// Fingerprint of every relevant file: (path, mtime, size). Errors (e.g. a directory that
/// vanished) become part of the fingerprint so that the change is noticed and reported.
fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    match load::discover(paths) {
        Ok(found) => found
            .into_iter()
            .map(|f| {
                let meta = std::fs::metadata(&f.path).ok();
                let mtime = meta.as_ref().and_then(|m| m.modified().ok());
                let size = meta.map(|m| m.len()).unwrap_or(u64::MAX);
                (f.path, mtime, size)
            })
            .collect(),
        Err(e) => vec![(PathBuf::from(format!("<error: {e}>")), None, 0)],
    }
}

/// Polls the handle's paths and reloads when files are modified, added or removed.
/// Stops when dropped.
#[derive(Debug)]
pub struct PolicyWatcher {
    task: tokio::task::JoinHandle<()>,
}

impl PolicyWatcher {
    /// Start polling every `interval` on the current tokio runtime. `on_reload` is called
    /// (from a blocking thread) with the outcome of every reload attempt, so the caller can
    /// log/audit/meter it and run the drift re-check after a successful one.
    pub fn spawn<F>(handle: Arc<PolicyHandle>, interval: Duration, on_reload: F) -> PolicyWatcher
    where
        F: Fn(&ReloadOutcome) + Send + Sync + 'static,
    {
        let on_reload = Arc::new(on_reload);
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let h = handle.clone();
                let cb = on_reload.clone();
                let joined = tokio::task::spawn_blocking(move || {
                    if !h.changed_since_load() {
                        return;
                    }
                    let previous_revision = h.current().revision().to_owned();
                    let outcome = match h.reload() {
                        Ok(set) => ReloadOutcome::Reloaded {
                            previous_revision,
                            revision: set.revision().to_owned(),
                        },
                        Err(e) => ReloadOutcome::Failed {
                            revision: previous_revision,
                            error: e.to_string(),
                        },
                    };
                    match &outcome {
                        ReloadOutcome::Reloaded { revision, .. } => {
                            tracing::info!(%revision, "policy reloaded");
                        }
                        ReloadOutcome::Failed { error, .. } => {
                            tracing::warn!(%error, "policy reload failed; keeping the last good policy");
                        }
                    }
                    cb(&outcome);
                })
                .await;
                if let Err(e) = joined {
                    tracing::error!(error = %e, "policy watcher poll panicked");
                }
            }
        });
        PolicyWatcher { task }
    }

    /// Stop polling.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for PolicyWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}
