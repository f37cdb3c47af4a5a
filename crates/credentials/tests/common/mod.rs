#![allow(dead_code, clippy::unwrap_used)]
//! Shared helpers for the credential tests.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chaperone_config::{Credential, Inject, Provider};
use chaperone_credentials::{CredentialEvent, CredentialObserver, IssueContext};

pub fn cred(name: &str, provider: Provider, header: &str, value: &str) -> Credential {
    Credential {
        name: name.to_string(),
        provider,
        inject: Inject {
            header: header.to_string(),
            value: value.to_string(),
        },
    }
}

pub fn creds(list: Vec<Credential>) -> BTreeMap<String, Credential> {
    list.into_iter().map(|c| (c.name.clone(), c)).collect()
}

pub fn ctx(session: Option<&str>, ttl: Duration) -> IssueContext {
    IssueContext {
        spiffe_id: "spiffe://test.example.org/ns/a/sa/agent".into(),
        session_id: session.map(str::to_string),
        task: Some("refund order 123".into()),
        scopes: vec!["orders:read".into()],
        delegation_chain: vec![],
        not_after: SystemTime::now() + ttl,
    }
}

#[derive(Default)]
pub struct Recorded {
    pub issued: Vec<CredentialEvent>,
    pub revoked: Vec<(CredentialEvent, String, bool)>,
    pub failed: Vec<(CredentialEvent, String, bool)>,
}

#[derive(Default, Clone)]
pub struct Recorder(pub Arc<Mutex<Recorded>>);

impl Recorder {
    pub fn issued(&self) -> usize {
        self.0.lock().unwrap().issued.len()
    }
    pub fn revoked(&self) -> Vec<(CredentialEvent, String, bool)> {
        self.0.lock().unwrap().revoked.clone()
    }
    pub fn failed(&self) -> Vec<(CredentialEvent, String, bool)> {
        self.0.lock().unwrap().failed.clone()
    }
    /// Wait until `n` revocations were reported (or panic after 20 s).
    pub async fn wait_revoked(&self, n: usize) -> Vec<(CredentialEvent, String, bool)> {
        for _ in 0..400 {
            let r = self.revoked();
            if r.len() >= n {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("expected {n} revocations, got {:?}", self.revoked());
    }
}

impl CredentialObserver for Recorder {
    fn issued(&self, ev: &CredentialEvent, _latency: Duration) {
        self.0.lock().unwrap().issued.push(ev.clone());
    }
    fn revoked(&self, ev: &CredentialEvent, reason: &str, ok: bool) {
        self.0
            .lock()
            .unwrap()
            .revoked
            .push((ev.clone(), reason.to_string(), ok));
    }
    fn revoke_failed(&self, ev: &CredentialEvent, error: &str, will_retry: bool) {
        self.0
            .lock()
            .unwrap()
            .failed
            .push((ev.clone(), error.to_string(), will_retry));
    }
}

pub fn write(dir: &std::path::Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}
