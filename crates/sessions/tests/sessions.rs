//! Behaviour of the in-memory session store through its public API.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chaperone_sessions::*;
use serde_json::json;

const ALICE: &str = "spiffe://example.org/ns/a/sa/alice";
const BOB: &str = "spiffe://example.org/ns/a/sa/bob";
const CAROL: &str = "spiffe://example.org/ns/a/sa/carol";

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn new_root(id: &str, ttl: u64) -> NewSession {
    NewSession {
        spiffe_id: id.into(),
        task: "refund order 123".into(),
        intent: json!({"summary": "refund", "tools": ["orders-api"]}),
        scopes: vec!["orders:read".into(), "orders:refund".into()],
        ttl: Duration::from_secs(ttl),
        parent: None,
    }
}

fn delegate(
    store: &InMemorySessionStore,
    parent: &Arc<Session>,
    to: &str,
    scopes: &[&str],
    ttl: u64,
    now: SystemTime,
) -> Result<(Arc<Session>, SessionToken), SessionError> {
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    let (scopes, ttl) = validate_delegation(parent, to, &scopes, Duration::from_secs(ttl), 4, now)?;
    store.create_at(
        NewSession {
            spiffe_id: to.into(),
            task: "sub task".into(),
            intent: json!({}),
            scopes,
            ttl,
            parent: Some(Arc::clone(parent)),
        },
        now,
    )
}

#[test]
fn create_and_authenticate_binds_token_to_identity() {
    let store = InMemorySessionStore::new();
    let (s, tok) = store.create_at(new_root(ALICE, 600), t0()).unwrap();
    assert!(s.id.starts_with("ses_") && s.id.len() == 36, "{}", s.id);
    assert!(tok.expose().starts_with("chs_"));
    assert_eq!(s.delegation_chain, vec![ALICE.to_string()]);
    assert_eq!(s.depth, 0);
    assert_eq!(s.expires_at, t0() + Duration::from_secs(600));

    let got = store
        .authenticate(tok.expose(), ALICE, t0() + Duration::from_secs(1))
        .unwrap();
    assert!(Arc::ptr_eq(&got, &s));
    assert_eq!(
        store.authenticate(tok.expose(), BOB, t0()).unwrap_err(),
        SessionError::WrongIdentity
    );
    assert_eq!(SessionError::WrongIdentity.status_code(), 403);
    // A different token of the same shape, garbage, and over-long input are unknown.
    let (_, other) = store.create_at(new_root(BOB, 600), t0()).unwrap();
    assert_eq!(
        store.authenticate(other.expose(), ALICE, t0()).unwrap_err(),
        SessionError::WrongIdentity
    );
    let mut forged = tok.expose().to_string();
    forged.pop();
    forged.push('A');
    if forged == tok.expose() {
        forged.pop();
        forged.push('B');
    }
    assert_eq!(
        store.authenticate(&forged, ALICE, t0()).unwrap_err(),
        SessionError::Unknown
    );
    assert_eq!(
        store.authenticate("", ALICE, t0()).unwrap_err(),
        SessionError::Unknown
    );
    assert_eq!(
        store
            .authenticate(&"chs_x".repeat(100), ALICE, t0())
            .unwrap_err(),
        SessionError::Unknown
    );
    assert_eq!(SessionError::Unknown.status_code(), 401);
    // The token never shows up in views or debug output.
    let views = format!("{} {} {:?}", s.policy_view(t0()), s.admin_view_at(t0()), s);
    assert!(!views.contains(tok.expose()));
    assert!(!views.contains(&tok.expose()[4..20]));
}

#[test]
fn create_rejects_bad_input() {
    let store = InMemorySessionStore::new();
    let mut n = new_root(ALICE, 0);
    assert!(matches!(
        store.create_at(n.clone(), t0()),
        Err(SessionError::Invalid(_))
    ));
    n.ttl = Duration::from_secs(60);
    n.spiffe_id = "https://example.org/x".into();
    assert!(matches!(
        store.create_at(n.clone(), t0()),
        Err(SessionError::Invalid(_))
    ));
    n.spiffe_id = ALICE.into();
    n.ttl = Duration::from_secs(10 * 365 * 24 * 3600);
    assert!(matches!(
        store.create_at(n, t0()),
        Err(SessionError::Invalid(_))
    ));
    assert_eq!(store.active_count(), 0);
}

#[test]
fn expiry_then_sweep_then_tombstone() {
    let store = InMemorySessionStore::new();
    let (s, tok) = store.create_at(new_root(ALICE, 60), t0()).unwrap();
    let before = t0() + Duration::from_secs(59);
    let at = t0() + Duration::from_secs(60);
    assert!(store.authenticate(tok.expose(), ALICE, before).is_ok());
    assert_eq!(
        store.authenticate(tok.expose(), ALICE, at).unwrap_err(),
        SessionError::Expired
    );
    // Not swept yet: still listed.
    assert_eq!(store.active_count(), 1);
    assert!(store.sweep_expired(before).is_empty());
    let ended = store.sweep_expired(at);
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].id, s.id);
    assert_eq!(s.end_reason(), Some(EndReason::Expired));
    assert_eq!(store.active_count(), 0);
    assert!(store.get(&s.id).is_none());
    assert!(store.list().is_empty());
    // Tombstone keeps the answer "expired" (not "unknown"), and identity is still checked.
    assert_eq!(
        store.authenticate(tok.expose(), ALICE, at).unwrap_err(),
        SessionError::Expired
    );
    assert_eq!(
        store.authenticate(tok.expose(), BOB, at).unwrap_err(),
        SessionError::WrongIdentity
    );
    assert!(store.sweep_expired(at).is_empty(), "ending is idempotent");
}

#[test]
fn revoked_token_says_revoked_until_tombstone_ages_out() {
    let store = InMemorySessionStore::with_limits(StoreLimits {
        max_sessions: 10,
        tombstone_ttl: Duration::from_secs(300),
        max_tombstones: 10,
    });
    let (s, tok) = store.create(new_root(ALICE, 600)).unwrap();
    let ended = store.end(&s.id, EndReason::OperatorRevoked);
    assert_eq!(ended.len(), 1);
    assert!(s.is_ended());
    assert!(s.ended_at().is_some());
    assert_eq!(s.admin_view()["state"], "ended");
    assert_eq!(s.admin_view()["end_reason"], "operator_revoked");
    let now = SystemTime::now();
    assert_eq!(
        store.authenticate(tok.expose(), ALICE, now).unwrap_err(),
        SessionError::Revoked
    );
    assert_eq!(store.tombstone_count(), 1);
    assert!(store.end(&s.id, EndReason::Deleted).is_empty());
    // After the tombstone TTL the token is simply unknown, and sweeping forgets it.
    let later = now + Duration::from_secs(301);
    assert_eq!(
        store.authenticate(tok.expose(), ALICE, later).unwrap_err(),
        SessionError::Unknown
    );
    store.sweep_expired(later);
    assert_eq!(store.tombstone_count(), 0);
}

#[test]
fn tombstones_are_bounded_in_number() {
    let store = InMemorySessionStore::with_limits(StoreLimits {
        max_sessions: 100,
        tombstone_ttl: Duration::from_secs(3600),
        max_tombstones: 3,
    });
    let mut toks = Vec::new();
    for _ in 0..5 {
        let (s, t) = store.create(new_root(ALICE, 600)).unwrap();
        store.end(&s.id, EndReason::Deleted);
        toks.push(t);
    }
    assert_eq!(store.tombstone_count(), 3);
    let now = SystemTime::now();
    assert_eq!(
        store
            .authenticate(toks[0].expose(), ALICE, now)
            .unwrap_err(),
        SessionError::Unknown
    );
    assert_eq!(
        store
            .authenticate(toks[4].expose(), ALICE, now)
            .unwrap_err(),
        SessionError::Revoked
    );
}

#[test]
fn session_limit_fails_closed() {
    let store = InMemorySessionStore::with_limits(StoreLimits {
        max_sessions: 2,
        ..StoreLimits::default()
    });
    let (a, _) = store.create(new_root(ALICE, 60)).unwrap();
    store.create(new_root(ALICE, 60)).unwrap();
    let e = store.create(new_root(ALICE, 60)).unwrap_err();
    assert_eq!(e, SessionError::TooMany { limit: 2 });
    assert_eq!(e.status_code(), 503);
    store.end(&a.id, EndReason::Deleted);
    assert!(store.create(new_root(ALICE, 60)).is_ok());
    assert_eq!(store.active_count(), 2);
}

#[test]
fn delegation_rules() {
    let store = InMemorySessionStore::new();
    let (p, _) = store.create_at(new_root(ALICE, 600), t0()).unwrap();
    let now = t0() + Duration::from_secs(100);
    // Escalations are refused, never clamped.
    let e = delegate(
        &store,
        &p,
        BOB,
        &["orders:read", "orders:delete", "admin"],
        60,
        now,
    )
    .unwrap_err();
    assert_eq!(
        e,
        SessionError::ScopeEscalation {
            extra: vec!["orders:delete".into(), "admin".into()]
        }
    );
    let e = delegate(&store, &p, BOB, &["orders:read"], 501, now).unwrap_err();
    assert!(matches!(e, SessionError::TtlEscalation { .. }), "{e:?}");
    assert!(e.to_string().contains("outlive"));
    // Exactly up to the parent's expiry is fine.
    let (c, ctok) = delegate(&store, &p, BOB, &["orders:read", "orders:read"], 500, now).unwrap();
    assert_eq!(c.scopes, vec!["orders:read".to_string()]);
    assert_eq!(c.expires_at, p.expires_at);
    assert_eq!(c.delegation_chain, vec![ALICE.to_string(), BOB.to_string()]);
    assert_eq!(c.depth, 1);
    assert_eq!(c.parent.as_deref(), Some(p.id.as_str()));
    // The child's token works only for the delegate.
    assert!(store.authenticate(ctok.expose(), BOB, now).is_ok());
    assert_eq!(
        store.authenticate(ctok.expose(), ALICE, now).unwrap_err(),
        SessionError::WrongIdentity
    );
    // Depth limit.
    let scopes = vec!["orders:read".to_string()];
    let e = validate_delegation(&c, CAROL, &scopes, Duration::from_secs(10), 1, now).unwrap_err();
    assert_eq!(e, SessionError::DepthExceeded { depth: 2, max: 1 });
    assert!(validate_delegation(&c, CAROL, &scopes, Duration::from_secs(10), 2, now).is_ok());
    assert_eq!(
        validate_delegation(&p, BOB, &scopes, Duration::from_secs(10), 0, now).unwrap_err(),
        SessionError::DepthExceeded { depth: 1, max: 0 }
    );
    assert!(matches!(
        validate_delegation(&p, "bob", &scopes, Duration::from_secs(10), 4, now),
        Err(SessionError::Invalid(_))
    ));
    // Expired parent.
    let late = t0() + Duration::from_secs(600);
    assert_eq!(
        validate_delegation(&p, BOB, &scopes, Duration::from_secs(1), 4, late).unwrap_err(),
        SessionError::ParentExpired
    );
    // create() re-checks on its own (a caller that skipped validate_delegation).
    let sneaky = NewSession {
        spiffe_id: BOB.into(),
        task: "x".into(),
        intent: json!(null),
        scopes: vec!["root".into()],
        ttl: Duration::from_secs(10),
        parent: Some(Arc::clone(&p)),
    };
    assert!(matches!(
        store.create_at(sneaky, now),
        Err(SessionError::ScopeEscalation { .. })
    ));
    // Ended parent.
    store.end(&p.id, EndReason::Deleted);
    assert_eq!(
        validate_delegation(&p, BOB, &scopes, Duration::from_secs(1), 4, now).unwrap_err(),
        SessionError::ParentEnded
    );
    let late_child = NewSession {
        spiffe_id: BOB.into(),
        task: "x".into(),
        intent: json!(null),
        scopes: vec![],
        ttl: Duration::from_secs(10),
        parent: Some(Arc::clone(&p)),
    };
    assert_eq!(
        store.create_at(late_child, now).unwrap_err(),
        SessionError::ParentEnded
    );
}

#[test]
fn ending_a_parent_ends_every_descendant() {
    let store = InMemorySessionStore::new();
    // `end` stamps tombstones with the wall clock, so use it here too.
    let now = SystemTime::now();
    let (root, root_tok) = store.create_at(new_root(ALICE, 600), now).unwrap();
    let (c1, c1_tok) = delegate(&store, &root, BOB, &["orders:read"], 300, now).unwrap();
    let (c2, _) = delegate(&store, &root, CAROL, &["orders:refund"], 300, now).unwrap();
    let (g1, g1_tok) = delegate(&store, &c1, CAROL, &["orders:read"], 100, now).unwrap();
    let (other, _) = store.create_at(new_root(BOB, 600), now).unwrap();
    assert_eq!(store.active_count(), 5);
    assert_eq!(
        g1.delegation_chain,
        vec![ALICE.to_string(), BOB.to_string(), CAROL.to_string()]
    );
    assert_eq!(g1.depth, 2);

    // Ending a middle node ends only its subtree.
    let ended = store.end(&c1.id, EndReason::OperatorRevoked);
    let ids: Vec<&str> = ended.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, vec![c1.id.as_str(), g1.id.as_str()]);
    assert_eq!(c1.end_reason(), Some(EndReason::OperatorRevoked));
    assert_eq!(g1.end_reason(), Some(EndReason::ParentEnded));
    assert_eq!(
        store.authenticate(g1_tok.expose(), CAROL, now).unwrap_err(),
        SessionError::Revoked
    );
    assert_eq!(
        store.authenticate(c1_tok.expose(), BOB, now).unwrap_err(),
        SessionError::Revoked
    );
    assert!(store.authenticate(root_tok.expose(), ALICE, now).is_ok());

    let ended = store.end(
        &root.id,
        EndReason::PolicyRevoked(vec!["exfiltration".into()]),
    );
    let ids: Vec<&str> = ended.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, vec![root.id.as_str(), c2.id.as_str()]);
    assert_eq!(root.end_reason().unwrap().as_str(), "revoke_session");
    assert_eq!(
        root.end_reason().unwrap().reasons(),
        ["exfiltration".to_string()]
    );
    assert_eq!(root.admin_view()["end_reasons"], json!(["exfiltration"]));
    assert_eq!(c2.end_reason(), Some(EndReason::ParentEnded));
    assert_eq!(store.active_count(), 1);
    assert!(store.get(&other.id).is_some());

    let all = store.end_all(EndReason::Shutdown);
    assert_eq!(all.len(), 1);
    assert_eq!(other.end_reason(), Some(EndReason::Shutdown));
    assert_eq!(store.active_count(), 0);
}

#[test]
fn sweep_cascades_expired_parent() {
    let store = InMemorySessionStore::new();
    let (root, _) = store.create_at(new_root(ALICE, 100), t0()).unwrap();
    let (child, _) = delegate(&store, &root, BOB, &["orders:read"], 100, t0()).unwrap();
    let (short, _) = delegate(&store, &root, CAROL, &["orders:read"], 10, t0()).unwrap();
    let ended = store.sweep_expired(t0() + Duration::from_secs(10));
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].id, short.id);
    let ended = store.sweep_expired(t0() + Duration::from_secs(100));
    let ids: Vec<&str> = ended.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, vec![root.id.as_str(), child.id.as_str()]);
    assert_eq!(child.end_reason(), Some(EndReason::Expired));
    assert_eq!(store.active_count(), 0);
}

#[test]
fn end_reason_names() {
    let names: Vec<&str> = [
        EndReason::Deleted,
        EndReason::Expired,
        EndReason::OperatorRevoked,
        EndReason::PolicyRevoked(vec![]),
        EndReason::PolicyDrift,
        EndReason::ParentEnded,
        EndReason::Shutdown,
    ]
    .iter()
    .map(|r| r.as_str())
    .collect();
    assert_eq!(
        names,
        [
            "deleted",
            "expired",
            "operator_revoked",
            "revoke_session",
            "policy_drift",
            "parent_ended",
            "shutdown"
        ]
    );
}

#[test]
fn stats_and_one_minute_window() {
    let store = InMemorySessionStore::new();
    let (s, _) = store.create_at(new_root(ALICE, 3600), t0()).unwrap();
    let at = |secs: u64| t0() + Duration::from_secs(secs);
    store.record_call(&s, "orders-api", Some("billing"), false, at(0));
    store.record_call(&s, "orders-api", Some("billing"), true, at(0));
    store.record_call(&s, "kb", None, false, at(30));
    store.record_call(&s, "crm", Some("customers"), false, at(59));
    let st = s.stats(at(59));
    assert_eq!(st.requests, 4);
    assert_eq!(st.denied, 1);
    assert_eq!(st.routes.get("orders-api"), Some(&2));
    assert_eq!(st.routes.get("kb"), Some(&1));
    assert_eq!(
        st.data_domains,
        vec!["billing".to_string(), "customers".to_string()]
    );
    assert_eq!(st.requests_last_minute, 4);
    // The two calls at t=0 leave the window at t=60; the others at t=90 / t=119.
    assert_eq!(s.stats(at(60)).requests_last_minute, 2);
    assert_eq!(s.stats(at(89)).requests_last_minute, 2);
    assert_eq!(s.stats(at(90)).requests_last_minute, 1);
    assert_eq!(s.stats(at(119)).requests_last_minute, 0);
    // A bucket is reused after a full revolution without leaking old counts.
    store.record_call(&s, "kb", None, false, at(120));
    assert_eq!(s.stats(at(120)).requests_last_minute, 1);
    assert_eq!(s.stats(at(120)).requests, 5);
    // 1000 calls in one second.
    for _ in 0..1000 {
        store.record_call(&s, "kb", None, false, at(200));
    }
    assert_eq!(s.stats(at(200)).requests_last_minute, 1000);
    assert_eq!(s.stats(at(259)).requests_last_minute, 1000);
    assert_eq!(s.stats(at(260)).requests_last_minute, 0);
    // Ended sessions are not accounted any more.
    store.end(&s.id, EndReason::Deleted);
    store.record_call(&s, "kb", None, false, at(261));
    assert_eq!(s.stats(at(261)).requests, 1005);
}

#[test]
fn policy_view_shape() {
    let store = InMemorySessionStore::new();
    let (s, _) = store.create_at(new_root(ALICE, 600), t0()).unwrap();
    store.record_call(&s, "orders-api", Some("billing"), false, t0());
    let v = s.policy_view(t0() + Duration::from_secs(1));
    let expected = json!({
        "id": s.id,
        "task": "refund order 123",
        "intent": {"summary": "refund", "tools": ["orders-api"]},
        "scopes": ["orders:read", "orders:refund"],
        "created_at": "2027-01-15T08:00:00Z",
        "expires_at": "2027-01-15T08:10:00Z",
        "delegation_chain": [ALICE],
        "stats": {"requests": 1, "denied": 0, "routes": {"orders-api": 1}, "data_domains": ["billing"], "requests_last_minute": 1}
    });
    assert_eq!(v, expected);
    let a = s.admin_view_at(t0());
    assert_eq!(a["spiffe_id"], ALICE);
    assert_eq!(a["depth"], 0);
    assert_eq!(a["parent"], json!(null));
    assert_eq!(a["state"], "active");
    assert_eq!(a["stats"], expected["stats"]);
    assert_eq!(
        s.admin_view_at(t0() + Duration::from_secs(600))["state"],
        "expired"
    );
    let r = s.recheck_view(None, t0());
    assert_eq!(r["ttl"], "600s");
    assert_eq!(r["parent"], json!(null));
    assert_eq!(r["scopes"], expected["scopes"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_create_authenticate_record_end() {
    let store: Arc<dyn SessionStore> = Arc::new(InMemorySessionStore::new());
    let (root, _) = store.create(new_root(ALICE, 600)).unwrap();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let store = Arc::clone(&store);
        let root = Arc::clone(&root);
        tasks.push(tokio::spawn(async move {
            let me = format!("spiffe://example.org/agent/{i}");
            let (s, tok) = store.create(new_root(&me, 600)).unwrap();
            for _ in 0..200 {
                let got = store
                    .authenticate(tok.expose(), &me, SystemTime::now())
                    .unwrap();
                store.record_call(
                    &got,
                    "orders-api",
                    Some("billing"),
                    false,
                    SystemTime::now(),
                );
                store.record_call(&root, "shared", None, true, SystemTime::now());
                tokio::task::yield_now().await;
            }
            assert_eq!(s.stats(SystemTime::now()).requests, 200);
            let ended = store.end(&s.id, EndReason::Deleted);
            assert_eq!(ended.len(), 1);
            assert_eq!(
                store
                    .authenticate(tok.expose(), &me, SystemTime::now())
                    .unwrap_err(),
                SessionError::Revoked
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let st = root.stats(SystemTime::now());
    assert_eq!(st.requests, 64 * 200);
    assert_eq!(st.denied, 64 * 200);
    assert_eq!(store.active_count(), 1);
}

/// Delegations racing with the end of their parent: afterwards no child may be live.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delegation_racing_parent_end_leaves_no_orphans() {
    for _round in 0..20 {
        let store = Arc::new(InMemorySessionStore::new());
        let (root, _) = store.create(new_root(ALICE, 600)).unwrap();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let store = Arc::clone(&store);
            let root = Arc::clone(&root);
            tasks.push(tokio::spawn(async move {
                let mut made = Vec::new();
                for _ in 0..50 {
                    if let Ok((c, _)) =
                        delegate(&store, &root, BOB, &["orders:read"], 60, SystemTime::now())
                    {
                        made.push(c);
                    }
                    tokio::task::yield_now().await;
                }
                made
            }));
        }
        let ender = {
            let store = Arc::clone(&store);
            let id = root.id.clone();
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                store.end(&id, EndReason::OperatorRevoked).len()
            })
        };
        let mut children = Vec::new();
        for t in tasks {
            children.extend(t.await.unwrap());
        }
        let ended = ender.await.unwrap();
        for c in &children {
            assert!(
                c.is_ended(),
                "child {} of an ended parent is still live",
                c.id
            );
        }
        assert_eq!(ended, children.len() + 1);
        assert_eq!(store.active_count(), 0);
    }
}
