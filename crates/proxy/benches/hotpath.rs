//! Criterion micro-benchmarks of the per-call hot path (see `benches/README.md`).
//!
//! `cargo bench -p chaperone-proxy --bench hotpath` measures; under
//! `cargo test --all-targets` criterion runs every benchmark once as a smoke test.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

use chaperone_config::{Credential, Environment, Inject, JwtAlgorithm, JwtProvider, Provider};
use chaperone_credentials::{CredentialManager, IssueContext};
use chaperone_identity::{validate_svid_leaf, SpiffeId};
use chaperone_policy::PolicySet;
use chaperone_proxy::input::EnvironmentValues;
use chaperone_proxy::{canon, headers, input, policy_object};
use chaperone_sessions::{InMemorySessionStore, NewSession, Session, SessionStore};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use regorus::Value;

// The sidecar binary's allocator (crates/cli/src/main.rs): the decision path allocates
// many small policy values, so what an allocation costs is part of what is measured here.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const AGENT: &str = "spiffe://bench.chaperone.local/ns/support/sa/helpdesk-bot";

fn policies_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

fn bench_identity(c: &mut Criterion) {
    let ca = chaperone_testsupport::certs::TestCa::new("bench CA");
    let svid = ca.svid(AGENT);
    let der = svid.der.to_vec();
    let mut g = c.benchmark_group("identity");
    g.bench_function("spiffe_id_parse", |b| {
        b.iter(|| SpiffeId::parse(black_box(AGENT)))
    });
    g.bench_function("validate_svid_leaf", |b| {
        b.iter(|| validate_svid_leaf(black_box(&der)))
    });
    g.finish();
}

fn bench_canon(c: &mut Criterion) {
    let mut g = c.benchmark_group("canon");
    g.bench_function("canonicalize_path/plain", |b| {
        b.iter(|| canon::canonicalize_path(black_box("/orders/v1/customers/4711/refunds")))
    });
    g.bench_function("canonicalize_path/encoded", |b| {
        b.iter(|| canon::canonicalize_path(black_box("/orders/v1/./a%20b/../c%2Dd/items")))
    });
    g.finish();
}

fn attributes() -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("kind".into(), "support".into());
    m.insert("team".into(), "helpdesk".into());
    m
}

fn route_value(name: &str, labels: serde_json::Value) -> Value {
    policy_object! {
        NAME => Value::from(name),
        UPSTREAM => Value::from("http://127.0.0.1:18080"),
        PROTOCOL => Value::from("http"),
        LABELS => input::json(labels),
    }
}

/// `input.identity`: the pipeline builds it once per connection (`ConnInfo::identity`,
/// cached until the identity map changes), so the per-call build below clones it.
fn identity() -> Value {
    let spiffe = SpiffeId::parse(AGENT).unwrap_or_else(|e| panic!("{e}"));
    input::identity_value(
        spiffe.as_str(),
        spiffe.trust_domain(),
        spiffe.path(),
        &attributes(),
    )
}

/// The call input exactly as `pipeline::decide_and_forward` assembles it per call.
fn call_input(
    identity: &Value,
    session: Option<&Session>,
    route: &Value,
    path: &str,
    route_path: &str,
) -> Value {
    let now = SystemTime::now();
    let identity = identity.clone();
    let session_value = match session {
        Some(s) => input::session_value(s, now),
        None => Value::Null,
    };
    // Built once per config load by the sidecar (`Routing::environment`).
    static ENV: LazyLock<EnvironmentValues> = LazyLock::new(|| {
        EnvironmentValues::new(&Environment {
            node: "node-1".into(),
            namespace: "default".into(),
            pod: "agent-0".into(),
        })
    });
    let environment = ENV.at(&input::rfc3339(now));
    let mut hm = http::HeaderMap::new();
    hm.insert("accept", http::HeaderValue::from_static("application/json"));
    hm.insert("user-agent", http::HeaderValue::from_static("bench/1"));
    let request = policy_object! {
        METHOD => input::method_value(&http::Method::GET),
        PATH => Value::from(path),
        ROUTE_PATH => Value::from(route_path),
        SEGMENTS => input::str_array(canon::segments(route_path)),
        QUERY => input::query_value(Some("limit=10")),
        HOST => Value::from(""),
        HEADERS => headers::policy_headers(&hm),
        BODY_BYTES => Value::Null,
        MCP => Value::Null,
    };
    input::CallInput {
        identity,
        session: session_value,
        request,
        route: route.clone(),
        environment,
    }
    .into_value()
}

fn new_session(store: &InMemorySessionStore) -> (Arc<Session>, String) {
    let (s, tok) = store
        .create(NewSession {
            spiffe_id: AGENT.into(),
            task: "answer support ticket #4711 about a late refund".into(),
            intent: serde_json::json!({"summary": "look up the order", "tools": ["kb", "orders-api"]}),
            scopes: vec!["kb:read".into(), "orders:read".into()],
            ttl: Duration::from_secs(600),
            parent: None,
        })
        .unwrap_or_else(|e| panic!("{e}"));
    (s, tok.expose().to_owned())
}

fn bench_policy(c: &mut Criterion) {
    let set = PolicySet::load(&[policies_dir()]).unwrap_or_else(|e| panic!("{e}"));
    let harmless = route_value("status", serde_json::json!({"harmless": true}));
    let kb = route_value(
        "kb",
        serde_json::json!({"sensitivity": "low", "data_domain": "support"}),
    );
    let store = InMemorySessionStore::new();
    let (session, _) = new_session(&store);
    let id = identity();

    // Sanity: the benchmarked calls are the allowed ones.
    let d = set.eval_call(call_input(
        &id,
        None,
        &harmless,
        "/status/health",
        "/health",
    ));
    assert!(d.permitted(), "harmless call must be allowed: {d:?}");
    let d = set.eval_call(call_input(
        &id,
        Some(&session),
        &kb,
        "/kb/articles/42",
        "/articles/42",
    ));
    assert!(d.permitted(), "session call must be allowed: {d:?}");
    let d = set.eval_call(call_input(
        &id,
        None,
        &kb,
        "/kb/articles/42",
        "/articles/42",
    ));
    assert!(!d.permitted(), "session-less call to kb must be denied");

    let mut g = c.benchmark_group("policy");
    g.bench_function("input_build/no_session", |b| {
        b.iter(|| call_input(&id, None, &harmless, "/status/health", "/health"))
    });
    g.bench_function("input_build/session", |b| {
        b.iter(|| call_input(&id, Some(&session), &kb, "/kb/articles/42", "/articles/42"))
    });
    g.bench_function("session_policy_view_to_value", |b| {
        b.iter(|| input::json(session.policy_view(SystemTime::now())))
    });
    g.bench_function("session_value_cached", |b| {
        b.iter(|| input::session_value(&session, SystemTime::now()))
    });
    let pre_harmless = call_input(&id, None, &harmless, "/status/health", "/health");
    g.bench_function("eval_call/no_session", |b| {
        b.iter_batched(
            || pre_harmless.clone(),
            |i| set.eval_call(i),
            BatchSize::SmallInput,
        )
    });
    let pre_session = call_input(&id, Some(&session), &kb, "/kb/articles/42", "/articles/42");
    g.bench_function("eval_call/session", |b| {
        b.iter_batched(
            || pre_session.clone(),
            |i| set.eval_call(i),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("decision/session (build + eval)", |b| {
        b.iter(|| {
            set.eval_call(call_input(
                &id,
                Some(&session),
                &kb,
                "/kb/articles/42",
                "/articles/42",
            ))
        })
    });
    g.finish();
}

fn bench_jwt(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut creds = BTreeMap::new();
    creds.insert(
        "orders-jwt".to_owned(),
        Credential {
            name: "orders-jwt".into(),
            provider: Provider::Jwt(JwtProvider {
                audience: "https://orders.bench.internal".into(),
                issuer: "chaperone".into(),
                ttl: Duration::from_secs(300),
                signing_key: None,
                algorithm: JwtAlgorithm::Es256,
            }),
            inject: Inject {
                header: "authorization".into(),
                value: "Bearer {token}".into(),
            },
        },
    );
    let mgr =
        rt.block_on(async { CredentialManager::new(&creds).unwrap_or_else(|e| panic!("{e}")) });
    let per_call = IssueContext {
        spiffe_id: AGENT.into(),
        session_id: None,
        task: None,
        scopes: vec!["orders:read".into()],
        delegation_chain: Vec::new(),
        not_after: SystemTime::now() + Duration::from_secs(3600),
    };
    let session_ctx = IssueContext {
        session_id: Some("ses_bench".into()),
        task: Some("bench".into()),
        ..per_call.clone()
    };
    let mut g = c.benchmark_group("credentials");
    g.bench_function("jwt_acquire/per_call_mint", |b| {
        b.iter(|| {
            rt.block_on(async {
                let l = mgr
                    .acquire("orders-jwt", &per_call)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                black_box(l.header());
                l.release();
            })
        })
    });
    g.bench_function("jwt_acquire/session_cached", |b| {
        b.iter(|| {
            rt.block_on(async {
                let l = mgr
                    .acquire("orders-jwt", &session_ctx)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                black_box(l.header());
            })
        })
    });
    g.finish();
}

fn bench_sessions(c: &mut Criterion) {
    let mut g = c.benchmark_group("sessions");
    let store = InMemorySessionStore::new();
    // create + end: the store is bounded (100,000 live sessions), so each iteration
    // also ends its session (leaving a bounded tombstone).
    g.bench_function("create_then_end", |b| {
        b.iter(|| {
            let (s, _) = new_session(&store);
            store.end(&s.id, chaperone_sessions::EndReason::Shutdown)
        })
    });
    let big = InMemorySessionStore::new();
    let mut tokens = Vec::new();
    for _ in 0..10_000 {
        tokens.push(new_session(&big).1);
    }
    let now = SystemTime::now();
    let mut i = 0usize;
    g.bench_function("authenticate/10k_live", |b| {
        b.iter(|| {
            i = (i + 1) % tokens.len();
            big.authenticate(black_box(&tokens[i]), AGENT, now)
                .unwrap_or_else(|e| panic!("{e}"))
        })
    });
    g.bench_function("record_call", |b| {
        let s = big
            .get(&big.list()[0].id)
            .unwrap_or_else(|| panic!("session"));
        b.iter(|| big.record_call(&s, "kb", Some("support"), false, now))
    });
    g.finish();
}

criterion_group!(
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = bench_identity, bench_canon, bench_policy, bench_jwt, bench_sessions
);
criterion_main!(benches);
