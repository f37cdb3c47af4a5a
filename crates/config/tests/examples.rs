//! Every `*.yaml` directly under `examples/` must validate.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use chaperone_config::{from_str_with_env, AuditSink, Provider};

fn dummy_env(name: &str) -> Option<String> {
    Some(format!("dummy-{}", name.to_ascii_lowercase()))
}

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn every_example_validates() {
    let mut checked = 0;
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") || !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        if let Err(e) = from_str_with_env(&text, &path, &dummy_env) {
            panic!("{} does not validate:\n{e}", path.display());
        }
        checked += 1;
    }
    assert!(
        checked >= 2,
        "expected at least chaperone.yaml and dev.yaml, found {checked}"
    );
}

#[test]
fn full_example_has_every_provider() {
    let path = examples_dir().join("chaperone.yaml");
    let cfg =
        from_str_with_env(&std::fs::read_to_string(&path).unwrap(), &path, &dummy_env).unwrap();
    let kinds: std::collections::BTreeSet<&str> = cfg
        .credentials
        .values()
        .map(|c| c.provider.kind())
        .collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["jwt", "oauth2", "static", "vault"]
    );
    assert_eq!(cfg.environment.node, "dummy-node_name");
    assert_eq!(cfg.environment.pod, "dummy-pod_name");
    assert!(matches!(cfg.audit.sink, Some(AuditSink::File(_))));
}

#[test]
fn dev_example_resolves_paths_relative_to_the_file() {
    let path = examples_dir().join("dev.yaml");
    let cfg =
        from_str_with_env(&std::fs::read_to_string(&path).unwrap(), &path, &|_| None).unwrap();
    assert_eq!(cfg.tls.cert, examples_dir().join("dev-certs/sidecar.pem"));
    assert_eq!(cfg.policy.paths, vec![examples_dir().join("../policies")]);
    match &cfg.credentials["echo-key"].provider {
        Provider::Static(s) => assert_eq!(s.file, examples_dir().join("dev-secrets/echo-key")),
        other => panic!("unexpected provider {other:?}"),
    }
    assert!(matches!(cfg.audit.sink, Some(AuditSink::Stdout)));
    // Environment defaults: no env vars -> empty strings.
    assert_eq!(cfg.environment.node, "");
}
