//! Human approval of held calls (SPEC §7).
//!
//! A held call owns a [`Hold`]; the approval exists exactly as long as the call
//! waits. Resolving it wakes the call; dropping the hold (agent disconnected, or the
//! call timed out) removes the approval, so an approval can never be used twice or
//! for another call.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::oneshot;

/// What an operator sees and decides on. Bound to exactly one call.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalRecord {
    pub id: String,
    pub spiffe_id: String,
    pub session_id: Option<String>,
    pub task: Option<String>,
    pub route: String,
    pub method: String,
    pub path: String,
    pub host: String,
    pub tool: Option<String>,
    /// SHA-256 of the exact request body.
    pub body_sha256: String,
    /// SHA-256 of the canonical JSON of the MCP arguments, when an MCP call.
    pub arguments_sha256: Option<String>,
    pub reasons: Vec<String>,
    pub request_id: String,
    pub created_at: String,
    pub expires_at: String,
}

#[derive(Debug, Clone)]
pub struct Resolution {
    pub approved: bool,
    pub by: String,
}

#[derive(Debug)]
pub enum HoldOutcome {
    Resolved(Resolution),
    TimedOut,
}

struct Pending {
    record: ApprovalRecord,
    tx: oneshot::Sender<Resolution>,
}

#[derive(Default)]
pub struct Approvals {
    pending: Mutex<HashMap<String, Pending>>,
}

/// Removes the pending approval when the held call goes away.
pub struct Hold {
    approvals: Arc<Approvals>,
    id: String,
    rx: Option<oneshot::Receiver<Resolution>>,
}

impl Approvals {
    pub fn new() -> Arc<Approvals> {
        Arc::new(Approvals::default())
    }

    pub fn hold(self: &Arc<Self>, record: ApprovalRecord) -> Hold {
        let (tx, rx) = oneshot::channel();
        let id = record.id.clone();
        self.pending
            .lock()
            .insert(id.clone(), Pending { record, tx });
        Hold {
            approvals: self.clone(),
            id,
            rx: Some(rx),
        }
    }

    pub fn list(&self) -> Vec<ApprovalRecord> {
        let mut v: Vec<ApprovalRecord> = self
            .pending
            .lock()
            .values()
            .map(|p| p.record.clone())
            .collect();
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        v
    }

    pub fn len(&self) -> usize {
        self.pending.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolve a pending approval. `None` if it does not exist (never did, already
    /// used, timed out, or its call went away).
    pub fn resolve(&self, id: &str, approved: bool, by: &str) -> Option<ApprovalRecord> {
        let p = self.pending.lock().remove(id)?;
        let record = p.record.clone();
        // The receiver may be gone if the call was cancelled concurrently.
        p.tx.send(Resolution {
            approved,
            by: by.to_owned(),
        })
        .ok()?;
        Some(record)
    }
}

impl Hold {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Wait for an operator, at most `timeout`.
    pub async fn wait(mut self, timeout: Duration) -> HoldOutcome {
        let Some(rx) = self.rx.take() else {
            return HoldOutcome::TimedOut;
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => HoldOutcome::Resolved(r),
            _ => HoldOutcome::TimedOut,
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.approvals.pending.lock().remove(&self.id);
    }
}

pub fn new_id() -> String {
    let mut b = [0u8; 12];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    format!("apr_{}", hex::encode(b))
}

pub fn expiry(timeout: Duration) -> SystemTime {
    SystemTime::now() + timeout
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str) -> ApprovalRecord {
        ApprovalRecord {
            id: id.into(),
            spiffe_id: "spiffe://td/a".into(),
            session_id: None,
            task: None,
            route: "r".into(),
            method: "POST".into(),
            path: "/x".into(),
            host: "h".into(),
            tool: None,
            body_sha256: String::new(),
            arguments_sha256: None,
            reasons: vec!["why".into()],
            request_id: "req".into(),
            created_at: "t".into(),
            expires_at: "t".into(),
        }
    }

    #[tokio::test]
    async fn approve_is_single_use_and_cancel_removes() {
        let a = Approvals::new();
        let hold = a.hold(rec("a1"));
        assert_eq!(a.list().len(), 1);
        let waiter = tokio::spawn(hold.wait(Duration::from_secs(5)));
        tokio::task::yield_now().await;
        assert!(a.resolve("a1", true, "alice").is_some());
        assert!(a.resolve("a1", true, "alice").is_none(), "single use");
        assert!(matches!(
            waiter.await.unwrap(),
            HoldOutcome::Resolved(Resolution { approved: true, .. })
        ));
        let hold = a.hold(rec("a2"));
        drop(hold);
        assert!(a.list().is_empty(), "a dropped call cancels its approval");
        let hold = a.hold(rec("a3"));
        assert!(matches!(
            hold.wait(Duration::from_millis(20)).await,
            HoldOutcome::TimedOut
        ));
        assert!(a.is_empty());
    }
}
