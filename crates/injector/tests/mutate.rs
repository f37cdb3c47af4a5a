//! AdmissionReview fixtures through `mutate`, with the returned JSONPatch applied by the
//! `json-patch` crate and the resulting pod inspected.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::path::Path;

use base64::Engine as _;
use chaperone_injector::{mutate, mutate_scoped, InjectorConfig, InjectorError, Scope};
use serde_json::{json, Value};

fn fixture(name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn config(extra: &str) -> InjectorConfig {
    let text = format!(
        "tls: {{cert: /nonexistent/tls.crt, key: /nonexistent/tls.key}}\n\
         sidecar:\n  image: ghcr.io/example/chaperone:0.1.0\n  trust_domain: cluster.local\n{extra}"
    );
    InjectorConfig::from_yaml(&text, Path::new("test.yaml")).unwrap()
}

struct Outcome {
    response: Value,
    pod: Value,
    patched: bool,
}

/// Run the review, check the response envelope, apply any patch to request.object.
fn run(review: &Value, cfg: &InjectorConfig, scope: Scope) -> Outcome {
    let out = mutate_scoped(review, cfg, scope).unwrap();
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    let response = out["response"].clone();
    assert_eq!(
        response["uid"], review["request"]["uid"],
        "uid must be echoed"
    );
    let mut pod = review["request"]["object"].clone();
    let patched = match response.get("patch") {
        None => false,
        Some(p) => {
            assert_eq!(response["patchType"], "JSONPatch");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(p.as_str().unwrap())
                .unwrap();
            let ops: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
            json_patch::patch(&mut pod, &ops).unwrap();
            true
        }
    };
    Outcome {
        response,
        pod,
        patched,
    }
}

/// Wrap a (patched) pod into a new CREATE review, for idempotency checks.
fn rereview(original: &Value, pod: &Value) -> Value {
    let mut r = original.clone();
    r["request"]["object"] = pod.clone();
    r
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

fn volume<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("volume {name} missing"))
}

#[test]
fn deployment_pod_gets_native_sidecar_first() {
    let review = fixture("deployment_pod.json");
    let cfg = config("");
    let o = run(&review, &cfg, Scope::Pod);
    assert_eq!(o.response["allowed"], true);
    assert!(o.patched);
    let pod = &o.pod;

    // Native sidecar, placed before the existing init container.
    let init = pod["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(init.len(), 2);
    let sc = &init[0];
    assert_eq!(sc["name"], "chaperone");
    assert_eq!(sc["restartPolicy"], "Always");
    assert_eq!(init[1]["name"], "migrate");
    assert_eq!(sc["image"], "ghcr.io/example/chaperone:0.1.0");
    assert_eq!(
        sc["args"],
        json!([
            "run",
            "--config",
            "/etc/chaperone/chaperone.yaml",
            "--log-format",
            "json"
        ])
    );
    // env
    assert_eq!(
        env_value(sc, "POD_NAME").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env_value(sc, "POD_NAMESPACE").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        env_value(sc, "NODE_NAME").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(env_value(sc, "RUST_LOG").unwrap()["value"], "info");
    // per-pod trust domain annotation wins over the config
    assert_eq!(
        env_value(sc, "CHAPERONE_TRUST_DOMAIN").unwrap()["value"],
        "prod.example.org"
    );
    // probes on the admin port
    assert_eq!(
        sc["startupProbe"]["exec"]["command"],
        json!([
            "chaperone",
            "health",
            "--admin",
            "http://127.0.0.1:15000",
            "--ready"
        ])
    );
    assert_eq!(
        sc["readinessProbe"]["exec"]["command"],
        json!([
            "chaperone",
            "health",
            "--admin",
            "http://127.0.0.1:15000",
            "--ready"
        ])
    );
    assert_eq!(
        sc["livenessProbe"]["exec"]["command"],
        json!(["chaperone", "health", "--admin", "http://127.0.0.1:15000"])
    );
    // security context
    let sec = &sc["securityContext"];
    assert_eq!(sec["runAsNonRoot"], true);
    assert_eq!(sec["runAsUser"], 65532);
    assert_eq!(sec["readOnlyRootFilesystem"], true);
    assert_eq!(sec["allowPrivilegeEscalation"], false);
    assert_eq!(sec["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sec["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(sc["resources"]["limits"]["memory"], "256Mi");
    let ports: Vec<i64> = sc["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, vec![15001, 15000]);
    let mounts: Vec<&str> = sc["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert!(mounts.contains(&"/var/run/svid"));
    assert!(mounts.contains(&"/etc/chaperone/chaperone.yaml"));
    assert!(mounts.contains(&"/etc/chaperone/policies"));
    assert!(mounts.contains(&"/var/run/chaperone"));

    // volumes appended, existing one kept
    let vols = pod["spec"]["volumes"].as_array().unwrap();
    assert_eq!(vols[0]["name"], "kube-api-access-abcde");
    assert_eq!(vols.len(), 5);
    let svid = volume(pod, "chaperone-svid");
    assert_eq!(svid["csi"]["driver"], "csi.spiffe.io");
    assert_eq!(svid["csi"]["readOnly"], true);
    assert_eq!(
        volume(pod, "chaperone-config")["configMap"]["name"],
        "chaperone-sidecar"
    );
    assert_eq!(
        volume(pod, "chaperone-policies")["configMap"]["name"],
        "chaperone-policies"
    );
    assert!(volume(pod, "chaperone-run")["emptyDir"].is_object());

    // every agent container gets the env and a read-only SVID mount
    let containers = pod["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2);
    for c in containers {
        assert!(env_value(c, "CHAPERONE_CA_FILE").is_some(), "{c}");
        assert_eq!(
            env_value(c, "CHAPERONE_CERT_FILE").unwrap()["value"],
            "/var/run/svid/svid.pem"
        );
        assert_eq!(
            env_value(c, "CHAPERONE_KEY_FILE").unwrap()["value"],
            "/var/run/svid/svid_key.pem"
        );
        assert_eq!(
            env_value(c, "CHAPERONE_CA_FILE").unwrap()["value"],
            "/var/run/svid/bundle.pem"
        );
        let m = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "chaperone-svid")
            .unwrap();
        assert_eq!(m["readOnly"], true);
        assert_eq!(m["mountPath"], "/var/run/svid");
    }
    // the author's own CHAPERONE_URL is kept, not duplicated
    let agent = &containers[0];
    let urls: Vec<&Value> = agent["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "CHAPERONE_URL")
        .collect();
    assert_eq!(urls.len(), 1);
    assert_eq!(urls[0]["value"], "https://127.0.0.1:15001/custom");
    assert_eq!(
        env_value(&containers[1], "CHAPERONE_URL").unwrap()["value"],
        "https://127.0.0.1:15001"
    );
    assert_eq!(agent["env"][0]["name"], "MODEL");
    assert_eq!(agent["volumeMounts"][0]["name"], "kube-api-access-abcde");

    // annotation with a '/' in the key, existing annotations kept
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(ann["chaperone.dev/injected"], "true");
    assert_eq!(
        ann["kubectl.kubernetes.io/restartedAt"],
        "2026-11-30T10:00:00Z"
    );

    // idempotent: the patched pod yields no patch
    let again = run(&rereview(&review, pod), &cfg, Scope::Pod);
    assert_eq!(again.response["allowed"], true);
    assert!(!again.patched);
}

#[test]
fn job_pod_annotation_opt_in_and_overrides() {
    let review = fixture("job_pod.json");
    let o = run(&review, &config(""), Scope::Pod);
    assert!(o.patched);
    let pod = &o.pod;
    let init = pod["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(init.len(), 1);
    assert_eq!(init[0]["restartPolicy"], "Always");
    assert_eq!(
        pod["spec"]["restartPolicy"], "Never",
        "pod restart policy untouched"
    );
    assert_eq!(
        env_value(&init[0], "RUST_LOG").unwrap()["value"],
        "chaperone=debug,info"
    );
    assert_eq!(
        env_value(&init[0], "CHAPERONE_TRUST_DOMAIN").unwrap()["value"],
        "cluster.local"
    );
    assert_eq!(
        volume(pod, "chaperone-policies")["configMap"]["name"],
        "batch-policies"
    );
    let report = &pod["spec"]["containers"][0];
    assert_eq!(
        env_value(report, "CHAPERONE_URL").unwrap()["value"],
        "https://127.0.0.1:15001"
    );
    assert_eq!(report["volumeMounts"].as_array().unwrap().len(), 1);
    assert_eq!(report["args"], json!(["--once"]));
}

#[test]
fn bare_pod_gets_whole_arrays_added() {
    let review = fixture("bare_pod.json");
    let cfg = config("");
    let out = mutate(&review, &cfg).unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(out["response"]["patch"].as_str().unwrap())
        .unwrap();
    let ops: Vec<Value> = serde_json::from_slice(&bytes).unwrap();
    let paths: Vec<&str> = ops.iter().map(|o| o["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&"/metadata/annotations"));
    assert!(paths.contains(&"/spec/initContainers"));
    assert!(paths.contains(&"/spec/volumes"));
    assert!(paths.contains(&"/spec/containers/0/env"));
    assert!(paths.contains(&"/spec/containers/0/volumeMounts"));
    let o = run(&review, &cfg, Scope::Pod);
    assert_eq!(
        o.pod["metadata"]["annotations"]["chaperone.dev/injected"],
        "true"
    );
    assert_eq!(o.pod["spec"]["volumes"].as_array().unwrap().len(), 4);
    assert!(!run(&rereview(&review, &o.pod), &cfg, Scope::Pod).patched);
}

#[test]
fn namespace_scope_injects_without_pod_opt_in() {
    let review = fixture("namespace_pod.json");
    let cfg = config("");
    // Pod scope: no opt-in, no patch.
    let o = run(&review, &cfg, Scope::Pod);
    assert_eq!(o.response["allowed"], true);
    assert!(!o.patched);
    // Namespace scope: injected; the pod had no annotations map at all.
    let o = run(&review, &cfg, Scope::Namespace);
    assert!(o.patched);
    assert_eq!(o.pod["spec"]["initContainers"][0]["name"], "chaperone");
    assert!(!run(&rereview(&review, &o.pod), &cfg, Scope::Namespace).patched);
}

#[test]
fn already_injected_and_opted_out_are_allowed_unpatched() {
    let cfg = config("");
    for (name, scope) in [
        ("already_injected.json", Scope::Pod),
        ("has_sidecar.json", Scope::Pod),
        ("opted_out.json", Scope::Pod),
        ("opted_out.json", Scope::Namespace),
        ("not_opted_in.json", Scope::Pod),
    ] {
        let o = run(&fixture(name), &cfg, scope);
        assert_eq!(o.response["allowed"], true, "{name}");
        assert!(!o.patched, "{name} must not be patched");
    }
}

#[test]
fn secret_svid_source_from_annotation() {
    let review = fixture("secret_svid_pod.json");
    let o = run(&review, &config(""), Scope::Pod);
    let svid = volume(&o.pod, "chaperone-svid");
    assert_eq!(svid["secret"]["secretName"], "agent-svid");
    assert!(svid.get("csi").is_none());
    let agent = &o.pod["spec"]["containers"][0];
    assert_eq!(
        env_value(agent, "CHAPERONE_CERT_FILE").unwrap()["value"],
        "/var/run/svid/tls.crt"
    );
    assert_eq!(
        env_value(agent, "CHAPERONE_CA_FILE").unwrap()["value"],
        "/var/run/svid/ca.crt"
    );
}

#[test]
fn secret_source_without_name_is_refused() {
    let cfg = config("  svid: {source: secret}\n");
    let o = run(&fixture("bare_pod.json"), &cfg, Scope::Pod);
    assert_eq!(o.response["allowed"], false);
    assert!(o.response["status"]["message"]
        .as_str()
        .unwrap()
        .contains("secret"));
    let cfg = config("  svid: {source: secret, secret_name: pod-svid}\n");
    let o = run(&fixture("bare_pod.json"), &cfg, Scope::Pod);
    assert_eq!(
        volume(&o.pod, "chaperone-svid")["secret"]["secretName"],
        "pod-svid"
    );
}

#[test]
fn cert_manager_csi_source() {
    let cfg = config("  svid: {source: cert-manager-csi}\n  run_as_user: 1000\n");
    let o = run(&fixture("bare_pod.json"), &cfg, Scope::Pod);
    let svid = volume(&o.pod, "chaperone-svid");
    assert_eq!(svid["csi"]["driver"], "spiffe.csi.cert-manager.io");
    assert_eq!(svid["csi"]["readOnly"], true);
    assert_eq!(
        svid["csi"]["volumeAttributes"]["spiffe.csi.cert-manager.io/fs-group"],
        "1000"
    );
    assert_eq!(
        o.pod["spec"]["initContainers"][0]["securityContext"]["runAsUser"],
        1000
    );
}

#[test]
fn custom_prefix_and_ports() {
    let cfg =
        config("  agent_port: 16001\n  admin_port: 16000\nannotations_prefix: pam.example.com\n");
    let mut review = fixture("bare_pod.json");
    // the default prefix no longer opts in
    assert!(!run(&review, &cfg, Scope::Pod).patched);
    review["request"]["object"]["metadata"]["labels"] = json!({"pam.example.com/inject": "true"});
    let o = run(&review, &cfg, Scope::Pod);
    assert!(o.patched);
    assert_eq!(
        o.pod["metadata"]["annotations"]["pam.example.com/injected"],
        "true"
    );
    assert_eq!(
        env_value(&o.pod["spec"]["containers"][0], "CHAPERONE_URL").unwrap()["value"],
        "https://127.0.0.1:16001"
    );
    assert_eq!(
        o.pod["spec"]["initContainers"][0]["readinessProbe"]["exec"]["command"][3],
        "http://127.0.0.1:16000"
    );
}

#[test]
fn annotation_keys_with_tilde_are_escaped() {
    let mut review = fixture("bare_pod.json");
    review["request"]["object"]["metadata"]["annotations"] = json!({"weird~key/x": "1"});
    let o = run(&review, &config(""), Scope::Pod);
    assert_eq!(o.pod["metadata"]["annotations"]["weird~key/x"], "1");
    assert_eq!(
        o.pod["metadata"]["annotations"]["chaperone.dev/injected"],
        "true"
    );
}

#[test]
fn non_create_operations_pass_through() {
    let mut review = fixture("bare_pod.json");
    review["request"]["operation"] = json!("UPDATE");
    let o = run(&review, &config(""), Scope::Pod);
    assert_eq!(o.response["allowed"], true);
    assert!(!o.patched);
}

#[test]
fn malformed_reviews_without_uid_are_errors() {
    let cfg = config("");
    for name in [
        "malformed_wrong_kind.json",
        "malformed_wrong_api_version.json",
        "malformed_missing_request.json",
        "malformed_missing_uid.json",
    ] {
        match mutate(&fixture(name), &cfg) {
            Err(InjectorError::BadReview(m)) => assert!(!m.is_empty(), "{name}"),
            other => panic!("{name}: expected BadReview, got {other:?}"),
        }
    }
    for v in [
        json!(null),
        json!([]),
        json!("x"),
        json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {"uid": 7}}),
    ] {
        assert!(
            matches!(mutate(&v, &cfg), Err(InjectorError::BadReview(_))),
            "{v}"
        );
    }
}

#[test]
fn malformed_requests_with_uid_are_denied_with_message() {
    let cfg = config("");
    for (name, needle) in [
        ("malformed_not_a_pod.json", "only Pods"),
        ("malformed_missing_object.json", "object"),
        ("malformed_bad_trust_domain.json", "trust domain"),
        ("malformed_volume_clash.json", "chaperone-svid"),
    ] {
        let o = run(&fixture(name), &cfg, Scope::Pod);
        assert_eq!(o.response["allowed"], false, "{name}");
        assert!(!o.patched, "{name}");
        let msg = o.response["status"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{name}: {msg}");
    }
    // Type confusion inside the pod never panics.
    let mut review = fixture("bare_pod.json");
    for (parent, key, bad) in [
        ("/request/object/spec", "containers", json!("nope")),
        ("/request/object/spec", "volumes", json!({"a": 1})),
        ("/request/object/spec", "initContainers", json!(1)),
        ("/request/object", "spec", json!(3)),
        ("/request/object", "metadata", json!("m")),
        (
            "/request/object/metadata",
            "annotations",
            json!({"chaperone.dev/inject": 5}),
        ),
    ] {
        let mut r = review.clone();
        r.pointer_mut(parent).unwrap()[key] = bad;
        let o = run(&r, &cfg, Scope::Pod);
        assert_eq!(o.response["allowed"], false, "{parent}/{key}");
    }
    review["request"]["object"]["spec"]["containers"][0]["env"] = json!({"x": 1});
    assert_eq!(run(&review, &cfg, Scope::Pod).response["allowed"], false);
}

#[test]
fn config_is_strict() {
    let p = Path::new("x.yaml");
    let base = "tls: {cert: a, key: b}\nsidecar: {image: i, trust_domain: td}\n";
    let cfg = InjectorConfig::from_yaml(base, p).unwrap();
    assert_eq!(cfg.listen.to_string(), "0.0.0.0:8443");
    assert_eq!(cfg.annotations_prefix, "chaperone.dev");
    assert_eq!(cfg.sidecar.svid.csi_driver, "csi.spiffe.io");
    assert_eq!(cfg.sidecar.run_as_user, 65532);
    for bad in [
        format!("{base}extra: 1\n"),
        "tls: {cert: a, key: b, other: c}\nsidecar: {image: i, trust_domain: td}\n".to_string(),
        "tls: {cert: a, key: b}\nsidecar: {image: i, trust_domain: TD}\n".to_string(),
        "tls: {cert: a, key: b}\nsidecar: {image: i, trust_domain: td, svid: {source: nfs}}\n".to_string(),
        "tls: {cert: a, key: b}\nsidecar: {image: i, trust_domain: td, image_pull_policy: Sometimes}\n".to_string(),
        "tls: {cert: a, key: b}\nsidecar: {image: i, trust_domain: td, agent_port: 15000}\n".to_string(),
        "tls: {cert: a, key: b}\nsidecar: {image: i, trust_domain: td, run_as_user: 0}\n".to_string(),
        "tls: {cert: a, key: b}\nsidecar: {image: i, trust_domain: td, config_map: Bad_Name}\n".to_string(),
        "tls: {cert: a, key: b}\nsidecar: {image: '', trust_domain: td}\n".to_string(),
    ] {
        assert!(InjectorConfig::from_yaml(&bad, p).is_err(), "accepted: {bad}");
    }
}

#[test]
fn documented_config_reference_parses() {
    // The "Injector config reference" block of docs/kubernetes.md must stay a valid config.
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/kubernetes.md"),
    )
    .unwrap();
    let section = doc.split("## Injector config reference").nth(1).unwrap();
    let block = section
        .split("```yaml\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let cfg = InjectorConfig::from_yaml(block, Path::new("docs/kubernetes.md")).unwrap();
    assert_eq!(cfg.sidecar.svid.secret_name.as_deref(), Some("agent-svid"));
    assert_eq!(cfg.sidecar.svid.effective_files().key, "svid_key.pem");
}
