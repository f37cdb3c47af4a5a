//! The admission logic: AdmissionReview in, AdmissionReview (with a JSONPatch) out.
//!
//! Error contract:
//! * a body that is not an `admission.k8s.io/v1` `AdmissionReview` with a `request`
//!   and a non-empty `request.uid` is an [`InjectorError::BadReview`] (HTTP 400 — there
//!   is no uid to answer with);
//! * every other problem (not a Pod, no object, unusable annotation values, volume name
//!   clashes, no SVID secret configured) is answered with `allowed: false` and a status
//!   message, echoing the uid. The webhook is `failurePolicy: Fail`, so this fails closed.

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::config::{is_dns_subdomain, is_log_filter, is_trust_domain, SvidSource};
use crate::{InjectorConfig, InjectorError};

/// The sidecar container name (also used for the idempotency check).
pub const SIDECAR_NAME: &str = "chaperone";
/// Where the sidecar config ConfigMap is mounted (file `chaperone.yaml`).
pub const CONFIG_PATH: &str = "/etc/chaperone/chaperone.yaml";
/// Where the policy ConfigMap is mounted.
pub const POLICY_DIR: &str = "/etc/chaperone/policies";
/// Where the SVID volume is mounted (sidecar and agents).
pub const SVID_DIR: &str = "/var/run/svid";
/// Where the runtime-state emptyDir is mounted.
pub const RUN_DIR: &str = "/var/run/chaperone";

const VOL_SVID: &str = "chaperone-svid";
const VOL_CONFIG: &str = "chaperone-config";
const VOL_POLICIES: &str = "chaperone-policies";
const VOL_RUN: &str = "chaperone-run";
const CERT_MANAGER_CSI_DRIVER: &str = "spiffe.csi.cert-manager.io";

/// Which webhook entry the request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The pod itself must opt in (label or annotation `<prefix>/inject: "true"`).
    Pod,
    /// The pod's namespace opted in (the webhook's namespaceSelector matched); only
    /// `<prefix>/inject: "false"` on the pod opts out.
    Namespace,
}

/// Mutate a review that came through the pod-scoped webhook entry (`POST /mutate`).
/// See [`mutate_scoped`].
pub fn mutate(review: &Value, cfg: &InjectorConfig) -> Result<Value, InjectorError> {
    mutate_scoped(review, cfg, Scope::Pod)
}

/// Compute the AdmissionReview v1 response for `review`.
///
/// Returns `Err(BadReview)` only when there is no uid to answer with (see the module docs);
/// otherwise always an AdmissionReview whose `response.uid` echoes the request.
pub fn mutate_scoped(
    review: &Value,
    cfg: &InjectorConfig,
    scope: Scope,
) -> Result<Value, InjectorError> {
    let obj = review
        .as_object()
        .ok_or_else(|| InjectorError::BadReview("body is not a JSON object".into()))?;
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind != "AdmissionReview" {
        return Err(InjectorError::BadReview(format!(
            "kind must be AdmissionReview, got {kind:?}"
        )));
    }
    if api_version != "admission.k8s.io/v1" {
        return Err(InjectorError::BadReview(format!(
            "apiVersion must be admission.k8s.io/v1, got {api_version:?}"
        )));
    }
    let request = obj
        .get("request")
        .and_then(Value::as_object)
        .ok_or_else(|| InjectorError::BadReview("missing request".into()))?;
    let uid = request
        .get("uid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| InjectorError::BadReview("missing request.uid".into()))?;

    let response = match decide(request, cfg, scope) {
        Ok(Decision::Skip(why)) => {
            tracing::debug!(uid, why, "not injecting");
            json!({"uid": uid, "allowed": true})
        }
        Ok(Decision::Patch(ops)) => {
            let bytes =
                serde_json::to_vec(&ops).map_err(|e| InjectorError::Internal(e.to_string()))?;
            let namespace = request
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or("");
            tracing::info!(uid, namespace, "injecting chaperone sidecar");
            json!({
                "uid": uid,
                "allowed": true,
                "patchType": "JSONPatch",
                "patch": base64::engine::general_purpose::STANDARD.encode(bytes),
            })
        }
        Err(message) => {
            tracing::warn!(uid, %message, "refusing pod");
            json!({
                "uid": uid,
                "allowed": false,
                "status": {"code": 400, "reason": "BadRequest", "message": format!("chaperone-injector: {message}")},
            })
        }
    };
    Ok(json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    }))
}

enum Decision {
    Skip(&'static str),
    Patch(Vec<Value>),
}

/// Escape a JSON pointer reference token (RFC 6901).
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn str_map<'a>(meta: Option<&'a Map<String, Value>>, key: &str) -> Option<&'a Map<String, Value>> {
    meta.and_then(|m| m.get(key)).and_then(Value::as_object)
}

fn decide(
    request: &Map<String, Value>,
    cfg: &InjectorConfig,
    scope: Scope,
) -> Result<Decision, String> {
    let resource_kind = request
        .get("kind")
        .and_then(|k| k.get("kind"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if resource_kind != "Pod" {
        return Err(format!("only Pods are handled, got kind {resource_kind:?}"));
    }
    let operation = request
        .get("operation")
        .and_then(Value::as_str)
        .unwrap_or("");
    if operation != "CREATE" {
        return Ok(Decision::Skip("operation is not CREATE"));
    }
    let pod = request
        .get("object")
        .and_then(Value::as_object)
        .ok_or("request.object is missing or not an object")?;
    if pod
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k != "Pod")
    {
        return Err("request.object is not a Pod".into());
    }
    let meta = match pod.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => return Err("metadata is not an object".into()),
    };
    let annotations = str_map(meta, "annotations");
    let labels = str_map(meta, "labels");
    let p = &cfg.annotations_prefix;
    let key = |k: &str| format!("{p}/{k}");
    let annotation = |k: &str| -> Result<Option<&str>, String> {
        match annotations.and_then(|a| a.get(&key(k))) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(format!("annotation {} is not a string", key(k))),
        }
    };
    let label = labels
        .and_then(|l| l.get(&key("inject")))
        .and_then(Value::as_str);
    let inject_annotation = annotation("inject")?;

    // Opt out always wins; then opt in (pod scope needs an explicit "true").
    if label == Some("false") || inject_annotation == Some("false") {
        return Ok(Decision::Skip("pod opted out"));
    }
    let opted_in = label == Some("true") || inject_annotation == Some("true");
    if scope == Scope::Pod && !opted_in {
        return Ok(Decision::Skip("pod did not opt in"));
    }

    let spec = pod
        .get("spec")
        .and_then(Value::as_object)
        .ok_or("spec is missing or not an object")?;
    let array = |k: &str| -> Result<Option<&Vec<Value>>, String> {
        match spec.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(format!("spec.{k} is not an array")),
        }
    };
    let init = array("initContainers")?;
    let containers = array("containers")?.ok_or("spec.containers is missing")?;
    let volumes = array("volumes")?;

    // Idempotency.
    if annotation("injected")? == Some("true") {
        return Ok(Decision::Skip("already injected (annotation)"));
    }
    let has_sidecar = |list: Option<&Vec<Value>>| {
        list.is_some_and(|l| {
            l.iter()
                .any(|c| c.get("name").and_then(Value::as_str) == Some(SIDECAR_NAME))
        })
    };
    if has_sidecar(init) || has_sidecar(Some(containers)) {
        return Ok(Decision::Skip("already injected (container present)"));
    }
    for v in volumes.into_iter().flatten() {
        if let Some(name) = v.get("name").and_then(Value::as_str) {
            if [VOL_SVID, VOL_CONFIG, VOL_POLICIES, VOL_RUN].contains(&name) {
                return Err(format!(
                    "pod already has a volume named {name:?} (reserved by chaperone)"
                ));
            }
        }
    }

    // Per-pod overrides, validated (they end up in the pod spec).
    let sc = &cfg.sidecar;
    let trust_domain = match annotation("trust-domain")? {
        Some(td) if !is_trust_domain(td) => {
            return Err(format!(
                "annotation {} {td:?} is not a SPIFFE trust domain",
                key("trust-domain")
            ))
        }
        Some(td) => td.to_string(),
        None => sc.trust_domain.clone(),
    };
    let log_level = match annotation("log-level")? {
        Some(l) if !is_log_filter(l) => {
            return Err(format!(
                "annotation {} {l:?} is not a log filter",
                key("log-level")
            ))
        }
        Some(l) => l.to_string(),
        None => sc.log_level.clone(),
    };
    let policy_cm = match annotation("policy-configmap")? {
        Some(n) if !is_dns_subdomain(n) => {
            return Err(format!(
                "annotation {} {n:?} is not a ConfigMap name",
                key("policy-configmap")
            ))
        }
        Some(n) => n.to_string(),
        None => sc.policy_config_map.clone(),
    };
    let secret_annotation = annotation("svid-secret")?;
    if let Some(n) = secret_annotation {
        if !is_dns_subdomain(n) {
            return Err(format!(
                "annotation {} {n:?} is not a Secret name",
                key("svid-secret")
            ));
        }
    }
    // An svid-secret annotation selects the Secret source for this pod.
    let source = if secret_annotation.is_some() {
        SvidSource::Secret
    } else {
        sc.svid.source
    };
    let files = sc.svid.files_for(source);
    let svid_volume = match source {
        SvidSource::Csi => json!({
            "name": VOL_SVID,
            "csi": {"driver": sc.svid.csi_driver, "readOnly": true},
        }),
        SvidSource::CertManagerCsi => json!({
            "name": VOL_SVID,
            "csi": {
                "driver": CERT_MANAGER_CSI_DRIVER,
                "readOnly": true,
                "volumeAttributes": {"spiffe.csi.cert-manager.io/fs-group": sc.run_as_user.to_string()},
            },
        }),
        SvidSource::Secret => {
            let name = secret_annotation
                .map(str::to_string)
                .or_else(|| sc.svid.secret_name.clone())
                .ok_or_else(|| format!(
                    "svid source is secret but neither sidecar.svid.secret_name nor annotation {} is set",
                    key("svid-secret")
                ))?;
            // 0444: the key must be readable by the non-root sidecar and agents of this pod.
            json!({"name": VOL_SVID, "secret": {"secretName": name, "defaultMode": 0o444}})
        }
    };
    let cert_file = format!("{SVID_DIR}/{}", files.cert);
    let key_file = format!("{SVID_DIR}/{}", files.key);
    let bundle_file = format!("{SVID_DIR}/{}", files.bundle);

    let new_volumes = vec![
        svid_volume,
        json!({"name": VOL_CONFIG, "configMap": {"name": sc.config_map, "items": [{"key": "chaperone.yaml", "path": "chaperone.yaml"}]}}),
        json!({"name": VOL_POLICIES, "configMap": {"name": policy_cm}}),
        json!({"name": VOL_RUN, "emptyDir": {"sizeLimit": "16Mi"}}),
    ];

    let field =
        |path: &str| json!({"valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}});
    let mut env = Vec::new();
    for (name, path) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
        ("NODE_NAME", "spec.nodeName"),
        ("POD_IP", "status.podIP"),
    ] {
        let mut e = field(path);
        if let Some(o) = e.as_object_mut() {
            o.insert("name".into(), json!(name));
        }
        env.push(e);
    }
    for (name, value) in [
        ("RUST_LOG", log_level.as_str()),
        ("CHAPERONE_TRUST_DOMAIN", trust_domain.as_str()),
        ("CHAPERONE_SVID_CERT", cert_file.as_str()),
        ("CHAPERONE_SVID_KEY", key_file.as_str()),
        ("CHAPERONE_SVID_BUNDLE", bundle_file.as_str()),
        ("CHAPERONE_POLICY_DIR", POLICY_DIR),
        ("CHAPERONE_RUN_DIR", RUN_DIR),
    ] {
        env.push(json!({"name": name, "value": value}));
    }
    // Exec probes against the loopback admin API: the kubelet probes the pod IP, and
    // exposing the admin API (sessions, approvals) to the pod network is not acceptable.
    let admin_url = format!("http://127.0.0.1:{}", sc.admin_port);
    let http_probe = |path: &str, period: u32, failures: u32| {
        let mut cmd = vec!["chaperone", "health", "--admin", admin_url.as_str()];
        if path == "/readyz" {
            cmd.push("--ready");
        }
        json!({
            "exec": {"command": cmd},
            "periodSeconds": period,
            "timeoutSeconds": 3,
            "failureThreshold": failures,
        })
    };
    let sidecar = json!({
        "name": SIDECAR_NAME,
        "image": sc.image,
        "imagePullPolicy": sc.image_pull_policy.as_str(),
        "restartPolicy": "Always",
        "args": ["run", "--config", CONFIG_PATH, "--log-format", "json"],
        "env": env,
        "ports": [
            {"name": "chaperone-agent", "containerPort": sc.agent_port, "protocol": "TCP"},
            {"name": "chaperone-admin", "containerPort": sc.admin_port, "protocol": "TCP"},
        ],
        "startupProbe": http_probe("/readyz", 1, 60),
        "readinessProbe": http_probe("/readyz", 5, 3),
        "livenessProbe": http_probe("/healthz", 10, 3),
        "resources": sc.resources,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": sc.run_as_user,
            "runAsGroup": sc.run_as_user,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "privileged": false,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": VOL_SVID, "mountPath": SVID_DIR, "readOnly": true},
            {"name": VOL_CONFIG, "mountPath": CONFIG_PATH, "subPath": "chaperone.yaml", "readOnly": true},
            {"name": VOL_POLICIES, "mountPath": POLICY_DIR, "readOnly": true},
            {"name": VOL_RUN, "mountPath": RUN_DIR},
        ],
    });

    let mut ops = Vec::new();
    // 1. annotations (mark as injected)
    let injected_key = key("injected");
    match (meta, annotations) {
        (None, _) => ops.push(json!({"op": "add", "path": "/metadata", "value": {"annotations": {injected_key: "true"}}})),
        (Some(_), None) => ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": {injected_key: "true"}})),
        (Some(_), Some(_)) => ops.push(json!({"op": "add", "path": format!("/metadata/annotations/{}", escape(&injected_key)), "value": "true"})),
    }
    // 2. native sidecar, first init container
    match init {
        None => ops.push(json!({"op": "add", "path": "/spec/initContainers", "value": [sidecar]})),
        Some(_) => {
            ops.push(json!({"op": "add", "path": "/spec/initContainers/0", "value": sidecar}))
        }
    }
    // 3. volumes
    match volumes {
        None => ops.push(json!({"op": "add", "path": "/spec/volumes", "value": new_volumes})),
        Some(_) => {
            for v in new_volumes {
                ops.push(json!({"op": "add", "path": "/spec/volumes/-", "value": v}));
            }
        }
    }
    // 4. agent containers: env + read-only SVID mount
    let agent_url = format!("https://127.0.0.1:{}", sc.agent_port);
    let agent_env = [
        ("CHAPERONE_URL", agent_url.as_str()),
        ("CHAPERONE_CA_FILE", bundle_file.as_str()),
        ("CHAPERONE_CERT_FILE", cert_file.as_str()),
        ("CHAPERONE_KEY_FILE", key_file.as_str()),
    ];
    let agent_mount = json!({"name": VOL_SVID, "mountPath": SVID_DIR, "readOnly": true});
    for (i, c) in containers.iter().enumerate() {
        let c = c
            .as_object()
            .ok_or_else(|| format!("spec.containers[{i}] is not an object"))?;
        let base = format!("/spec/containers/{i}");
        match c.get("env") {
            None | Some(Value::Null) => {
                let all: Vec<Value> = agent_env
                    .iter()
                    .map(|(n, v)| json!({"name": n, "value": v}))
                    .collect();
                ops.push(json!({"op": "add", "path": format!("{base}/env"), "value": all}));
            }
            Some(Value::Array(existing)) => {
                for (n, v) in agent_env {
                    // A value the pod author set explicitly wins.
                    if existing
                        .iter()
                        .any(|e| e.get("name").and_then(Value::as_str) == Some(n))
                    {
                        continue;
                    }
                    ops.push(json!({"op": "add", "path": format!("{base}/env/-"), "value": {"name": n, "value": v}}));
                }
            }
            Some(_) => return Err(format!("spec.containers[{i}].env is not an array")),
        }
        match c.get("volumeMounts") {
            None | Some(Value::Null) => {
                ops.push(json!({"op": "add", "path": format!("{base}/volumeMounts"), "value": [agent_mount.clone()]}));
            }
            Some(Value::Array(existing)) => {
                if existing
                    .iter()
                    .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(SVID_DIR))
                {
                    return Err(format!(
                        "spec.containers[{i}] already mounts something at {SVID_DIR}"
                    ));
                }
                ops.push(json!({"op": "add", "path": format!("{base}/volumeMounts/-"), "value": agent_mount.clone()}));
            }
            Some(_) => return Err(format!("spec.containers[{i}].volumeMounts is not an array")),
        }
    }
    Ok(Decision::Patch(ops))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::escape;

    #[test]
    fn escapes_pointer_tokens() {
        assert_eq!(escape("chaperone.dev/injected"), "chaperone.dev~1injected");
        assert_eq!(escape("a~b/c"), "a~0b~1c");
    }
}
