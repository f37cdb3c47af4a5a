//! How one decision scales with policy size: the example library plus N generated
//! rules (each an extra `deny` on its own route name, so every rule is evaluated and
//! none fires). See `benches/README.md`.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use chaperone_policy::{json_to_value, PolicySet};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};

// The sidecar binary's allocator (crates/cli/src/main.rs), as in the hotpath benchmark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn input_json() -> serde_json::Value {
    serde_json::json!({
        "identity": {"spiffe_id": "spiffe://bench.chaperone.local/ns/support/sa/bot",
                      "trust_domain": "bench.chaperone.local", "path": "/ns/support/sa/bot",
                      "attributes": {"kind": "support", "team": "helpdesk"}},
        "session": {"id": "ses_1", "task": "answer ticket", "intent": {"tools": ["kb"]},
                    "scopes": ["kb:read"], "created_at": "2026-12-01T10:00:00Z",
                    "expires_at": "2026-12-01T10:10:00Z", "delegation_chain": [],
                    "stats": {"requests": 3, "denied": 0, "routes": {"kb": 3},
                              "data_domains": ["support"], "requests_last_minute": 3}},
        "request": {"method": "GET", "path": "/kb/articles/42", "route_path": "/articles/42",
                    "segments": ["articles", "42"], "query": {}, "host": "",
                    "headers": {"accept": ["application/json"]}, "body_bytes": null, "mcp": null},
        "route": {"name": "kb", "upstream": "http://127.0.0.1:18080", "protocol": "http",
                  "labels": {"sensitivity": "low", "data_domain": "support"}},
        "environment": {"time": "2026-12-01T10:01:00Z", "node": "n", "namespace": "default", "pod": "p"}
    })
}

fn library() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

fn with_extra_rules(dir: &tempfile::TempDir, n: usize) -> Vec<PathBuf> {
    let mut src = String::from("package chaperone.authz\n\n");
    for i in 0..n {
        src.push_str(&format!(
            "deny contains \"generated rule {i}\" if {{\n\tinput.route.name == \"generated-{i}\"\n\tinput.request.method == \"DELETE\"\n}}\n\n"
        ));
    }
    let file = dir.path().join("generated.rego");
    std::fs::write(&file, src).unwrap_or_else(|e| panic!("{e}"));
    vec![library(), file]
}

fn bench_scaling(c: &mut Criterion) {
    let input = json_to_value(&input_json());
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut g = c.benchmark_group("policy_size");
    for n in [0usize, 10, 100, 1000] {
        let set = PolicySet::load(&with_extra_rules(&dir, n)).unwrap_or_else(|e| panic!("{e}"));
        let d = set.eval_call(input.clone());
        assert!(
            d.permitted(),
            "bench input must be allowed with {n} extra rules: {d:?}"
        );
        g.bench_with_input(BenchmarkId::new("eval_call_extra_rules", n), &n, |b, _| {
            b.iter_batched(
                || input.clone(),
                |i| black_box(set.eval_call(i)),
                BatchSize::SmallInput,
            )
        });
    }
    // Fixed cost of one evaluation: a one-rule policy through the same PolicySet path.
    let minimal = dir.path().join("minimal");
    std::fs::create_dir_all(&minimal).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        minimal.join("p.rego"),
        "package chaperone.authz\n\ndefault allow := false\n\nallow if input.route.name == \"kb\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let set = PolicySet::load(&[minimal]).unwrap_or_else(|e| panic!("{e}"));
    assert!(set.eval_call(input.clone()).permitted());
    g.bench_function("eval_call_minimal_policy", |b| {
        b.iter_batched(
            || input.clone(),
            |i| black_box(set.eval_call(i)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("json_to_value", |b| {
        let j = input_json();
        b.iter(|| json_to_value(black_box(&j)))
    });
    g.finish();
}

criterion_group!(
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = bench_scaling
);
criterion_main!(benches);
