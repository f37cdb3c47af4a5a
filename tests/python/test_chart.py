"""Tests for charts/chaperone: strict lint, renders with several value sets, offline schema
validation of every manifest (kubernetes-validate --strict -k 1.30.0), key properties of the
webhook, and the chart's policy copy staying identical to the repository's policies/.

Requirements (nothing is skipped: a missing tool fails the test with these instructions):
    pip install helm-python-sdk kubernetes-validate pytest pyyaml cryptography
"""

from __future__ import annotations

import base64
import copy
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "chaperone"
POLICIES = REPO / "policies"
CHART_POLICIES = CHART / "policies"
RELEASE = "chaperone"
NAMESPACE = "chaperone-system"
KUBE_VERSION = "1.30.0"
INSTALL = "pip install helm-python-sdk kubernetes-validate pytest pyyaml cryptography"

try:
    import yaml
except ImportError:  # pragma: no cover - exercised only on a broken environment
    yaml = None
try:
    from helm_python.chart import Chart, lint
except ImportError:  # pragma: no cover
    Chart = lint = None
try:
    from cryptography import x509
except ImportError:  # pragma: no cover
    x509 = None


def need(ok: object, what: str) -> None:
    if not ok:
        pytest.fail(f"{what} is not installed; run: {INSTALL}", pytrace=False)


@pytest.fixture(scope="session")
def helm():
    need(Chart, "helm-python-sdk (helm_python.chart)")
    need(yaml, "pyyaml")
    return Chart.load(str(CHART))


@pytest.fixture(scope="session")
def kubeval() -> str:
    exe = shutil.which("kubernetes-validate")
    need(exe, "kubernetes-validate")
    return exe


VALUE_SETS: dict[str, dict] = {
    "default": {},
    "cert-manager": {"certManager": {"enabled": True}},
    "cert-manager-issuer": {
        "certManager": {"enabled": True, "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}}
    },
    "secret-svid": {"svid": {"source": "secret", "secretName": "agent-svid"}},
    "cert-manager-csi-svid": {"svid": {"source": "cert-manager-csi"}},
    "existing-policy": {"policy": {"source": "existing", "existingConfigMap": "my-policies"}},
    "custom-resources": {
        "sidecar": {"resources": {"requests": {"cpu": "200m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}}},
        "injector": {"resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}}},
    },
    "three-replicas": {"injector": {"replicas": 3}},
    "one-replica": {"injector": {"replicas": 1}},
    "routes-and-credentials": {
        "trustDomain": "prod.example.org",
        "agentNamespaces": ["agents", "batch", "agents"],
        "sidecar": {
            "routes": [
                {"name": "orders-api", "prefix": "/orders", "upstream": "https://orders.internal",
                 "protocol": "http", "labels": {"sensitivity": "high"}, "credential": "orders-token"}
            ],
            "credentials": {
                "orders-token": {"provider": "jwt", "audience": "https://orders.internal", "ttl": "5m",
                                 "inject": {"header": "authorization", "value": "Bearer {token}"}}
            },
        },
    },
}


def render(helm, values: dict) -> dict[str, str]:
    return helm.render(copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE)


def docs(rendered: dict[str, str]) -> list[dict]:
    out = []
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        for d in yaml.safe_load_all(text):
            if d:
                out.append(d)
    return out


def one(manifests: list[dict], kind: str) -> dict:
    found = [m for m in manifests if m["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def sidecar_config(manifests: list[dict], namespace: str = "default") -> dict:
    cms = [m for m in manifests if m["kind"] == "ConfigMap" and m["metadata"]["namespace"] == namespace
           and "chaperone.yaml" in m.get("data", {})]
    assert len(cms) == 1
    return yaml.safe_load(cms[0]["data"]["chaperone.yaml"])


def injector_config(manifests: list[dict]) -> dict:
    cm = [m for m in manifests if m["kind"] == "ConfigMap" and "injector.yaml" in m.get("data", {})]
    assert len(cm) == 1
    return yaml.safe_load(cm[0]["data"]["injector.yaml"])


# ---------------------------------------------------------------- lint + schema validation


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_lint_strict(helm, name):
    report = lint(str(CHART), copy.deepcopy(VALUE_SETS[name]), strict=True, namespace=NAMESPACE,
                  kube_version="v" + KUBE_VERSION)
    assert report["errors"] == [], report
    bad = [m for m in report["messages"] if m["severity"] >= 2]
    assert bad == [], bad


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_manifests_validate_strict(helm, kubeval, name, tmp_path):
    manifests = docs(render(helm, VALUE_SETS[name]))
    assert manifests
    unvalidated = set()
    for i, m in enumerate(manifests):
        if m["apiVersion"].startswith("cert-manager.io/"):
            unvalidated.add(m["kind"])  # CRDs: no offline schema; checked structurally below
            continue
        f = tmp_path / f"{i:02d}-{m['kind']}.yaml"
        f.write_text(yaml.safe_dump(m))
        proc = subprocess.run([kubeval, "--strict", "-k", KUBE_VERSION, "--no-warn", str(f)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, f"{m['kind']}/{m['metadata']['name']}: {proc.stdout}{proc.stderr}"
        assert "ERROR" not in proc.stdout
    assert unvalidated <= {"Issuer", "Certificate"}


def test_validator_is_not_a_no_op(kubeval, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, bogus: 1}\n")
    proc = subprocess.run([kubeval, "--strict", "-k", KUBE_VERSION, str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0


@pytest.mark.parametrize("values", [
    {"bogus": 1},
    {"webhook": {"failurePolicy": "Ignore"}},
    {"svid": {"source": "nfs"}},
    {"image": {"pullPolicy": "Sometimes"}},
    {"injector": {"replicas": 0}},
    {"trustDomain": "Bad/Domain"},
    {"policy": {"source": "existing"}},
    {"sidecar": {"unknown": True}},
    {"policy": {"source": "chart", "engine": "fast"}},
    {"policy": {"source": "chart", "timeout": "soon"}},
])
def test_schema_rejects_bad_values(helm, values):
    with pytest.raises(Exception) as info:
        render(helm, values)
    assert "schema" in str(info.value).lower() or "required" in str(info.value).lower()


# ---------------------------------------------------------------- webhook properties


def test_webhook_configuration(helm):
    manifests = docs(render(helm, {}))
    mwc = one(manifests, "MutatingWebhookConfiguration")
    hooks = {h["name"]: h for h in mwc["webhooks"]}
    assert set(hooks) == {"pod.inject.chaperone.dev", "namespace.inject.chaperone.dev"}
    secret = one(manifests, "Secret")
    for h in hooks.values():
        assert h["failurePolicy"] == "Fail"
        assert h["sideEffects"] == "None"
        assert h["admissionReviewVersions"] == ["v1"]
        assert h["rules"] == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                               "resources": ["pods"], "scope": "Namespaced"}]
        svc = h["clientConfig"]["service"]
        assert svc["name"] == "chaperone-injector" and svc["namespace"] == NAMESPACE and svc["port"] == 443
        assert h["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
        ns_exprs = h["namespaceSelector"]["matchExpressions"]
        excl = [e for e in ns_exprs if e["key"] == "kubernetes.io/metadata.name"]
        assert excl and excl[0]["operator"] == "NotIn"
        assert NAMESPACE in excl[0]["values"] and "kube-system" in excl[0]["values"]
    pod = hooks["pod.inject.chaperone.dev"]
    assert pod["clientConfig"]["service"]["path"] == "/mutate"
    assert pod["objectSelector"] == {"matchLabels": {"chaperone.dev/inject": "true"}}
    ns = hooks["namespace.inject.chaperone.dev"]
    assert ns["clientConfig"]["service"]["path"] == "/mutate/namespace"
    assert {"key": "chaperone.dev/inject", "operator": "In", "values": ["enabled"]} in ns["namespaceSelector"]["matchExpressions"]
    assert ns["objectSelector"]["matchExpressions"] == [
        {"key": "chaperone.dev/inject", "operator": "NotIn", "values": ["false", "true"]}]


def test_generated_tls_chains_and_names_the_service(helm):
    need(x509, "cryptography")
    manifests = docs(render(helm, {}))
    secret = one(manifests, "Secret")
    assert secret["type"] == "kubernetes.io/tls"
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    leaf = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    assert base64.b64decode(secret["data"]["tls.key"]).startswith(b"-----BEGIN")
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert f"chaperone-injector.{NAMESPACE}.svc" in sans
    # the upgrade path reuses the existing Secret instead of rotating the CA on every upgrade
    src = (CHART / "templates" / "webhook.yaml").read_text()
    assert 'lookup "v1" "Secret" .Release.Namespace $secretName' in src


def test_cert_manager_mode(helm):
    manifests = docs(render(helm, VALUE_SETS["cert-manager"]))
    assert not [m for m in manifests if m["kind"] == "Secret"], "cert-manager owns the TLS Secret"
    mwc = one(manifests, "MutatingWebhookConfiguration")
    assert mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/chaperone-injector"
    for h in mwc["webhooks"]:
        assert "caBundle" not in h["clientConfig"]
    cert = one(manifests, "Certificate")
    issuer = one(manifests, "Issuer")
    assert cert["spec"]["secretName"] == "chaperone-injector-tls"
    assert f"chaperone-injector.{NAMESPACE}.svc" in cert["spec"]["dnsNames"]
    assert cert["spec"]["issuerRef"]["name"] == issuer["metadata"]["name"]
    assert issuer["spec"] == {"selfSigned": {}}
    # an external issuer: no Issuer rendered
    manifests = docs(render(helm, VALUE_SETS["cert-manager-issuer"]))
    assert not [m for m in manifests if m["kind"] == "Issuer"]
    assert one(manifests, "Certificate")["spec"]["issuerRef"] == {
        "name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}


# ---------------------------------------------------------------- injector Deployment


def test_injector_deployment_and_pdb(helm):
    manifests = docs(render(helm, {}))
    dep = one(manifests, "Deployment")
    assert dep["spec"]["replicas"] == 2
    pod = dep["spec"]["template"]
    assert pod["metadata"]["labels"]["chaperone.dev/inject"] == "false"
    spec = pod["spec"]
    anti = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert spec["securityContext"]["runAsNonRoot"] is True
    c = spec["containers"][0]
    assert c["args"][:3] == ["injector", "--config", "/etc/chaperone-injector/config/injector.yaml"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "https", "scheme": "HTTPS"}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    pdb = one(manifests, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    svc = one(manifests, "Service")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]

    manifests = docs(render(helm, VALUE_SETS["three-replicas"]))
    assert one(manifests, "Deployment")["spec"]["replicas"] == 3
    assert one(manifests, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    manifests = docs(render(helm, VALUE_SETS["one-replica"]))
    assert not [m for m in manifests if m["kind"] == "PodDisruptionBudget"]


def test_custom_resources(helm):
    manifests = docs(render(helm, VALUE_SETS["custom-resources"]))
    assert injector_config(manifests)["sidecar"]["resources"] == VALUE_SETS["custom-resources"]["sidecar"]["resources"]
    dep = one(manifests, "Deployment")
    assert dep["spec"]["template"]["spec"]["containers"][0]["resources"] == VALUE_SETS["custom-resources"]["injector"]["resources"]


# ---------------------------------------------------------------- injector + sidecar config


def test_injector_config_defaults(helm):
    cfg = injector_config(docs(render(helm, {})))
    assert cfg["listen"] == "0.0.0.0:8443"
    assert cfg["annotations_prefix"] == "chaperone.dev"
    sc = cfg["sidecar"]
    assert sc["image"] == "ghcr.io/example/chaperone:0.1.0"
    assert sc["svid"] == {"source": "csi", "csi_driver": "csi.spiffe.io"}
    assert sc["config_map"] == "chaperone-sidecar" and sc["policy_config_map"] == "chaperone-policies"
    assert sc["trust_domain"] == "cluster.local"
    assert sc["run_as_user"] == 65532


def test_secret_svid_source(helm):
    manifests = docs(render(helm, VALUE_SETS["secret-svid"]))
    assert injector_config(manifests)["sidecar"]["svid"]["source"] == "secret"
    assert injector_config(manifests)["sidecar"]["svid"]["secret_name"] == "agent-svid"
    manifests = docs(render(helm, VALUE_SETS["cert-manager-csi-svid"]))
    assert injector_config(manifests)["sidecar"]["svid"]["source"] == "cert-manager-csi"


def test_sidecar_config_shape(helm):
    manifests = docs(render(helm, VALUE_SETS["routes-and-credentials"]))
    # rendered into each agent namespace once (duplicates dropped)
    ns = sorted(m["metadata"]["namespace"] for m in manifests
                if m["kind"] == "ConfigMap" and "chaperone.yaml" in m.get("data", {}))
    assert ns == ["agents", "batch"]
    cfg = sidecar_config(manifests, "agents")
    assert cfg["listen"] == "127.0.0.1:15001"
    assert cfg["tls"]["cert"] == "${CHAPERONE_SVID_CERT}"
    assert cfg["tls"]["trust_domains"] == ["${CHAPERONE_TRUST_DOMAIN}"]
    assert cfg["policy"]["paths"] == ["/etc/chaperone/policies"]
    assert (cfg["policy"]["engine"], cfg["policy"]["timeout"]) == ("compiled", "100ms")
    assert cfg["routes"][0]["name"] == "orders-api"
    assert cfg["credentials"]["orders-token"]["provider"] == "jwt"
    assert injector_config(manifests)["sidecar"]["trust_domain"] == "prod.example.org"
    allowed = {"listen", "admin", "tls", "identities", "routes", "credentials", "policy", "sessions",
               "approvals", "audit", "limits", "environment"}
    assert set(cfg) <= allowed  # SPEC §2 top-level keys only (unknown keys are rejected)


def test_policy_engine_and_timeout_values(helm):
    values = copy.deepcopy(VALUE_SETS["routes-and-credentials"])
    values["policy"] = {**values.get("policy", {"source": "chart"}), "engine": "interpreter", "timeout": "250ms"}
    cfg = sidecar_config(docs(render(helm, values)), "agents")
    assert (cfg["policy"]["engine"], cfg["policy"]["timeout"]) == ("interpreter", "250ms")


def test_existing_policy_configmap(helm):
    manifests = docs(render(helm, VALUE_SETS["existing-policy"]))
    assert injector_config(manifests)["sidecar"]["policy_config_map"] == "my-policies"
    assert not [m for m in manifests if m["kind"] == "ConfigMap" and m["metadata"]["name"].endswith("-policies")]


# ---------------------------------------------------------------- policies copy


def policy_files(root: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        if p.name.endswith("_test.rego"):
            continue
        if p.suffix == ".rego" or p.name in ("data.yaml", "data.yml", "data.json"):
            out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


def test_chart_policies_identical_to_repo_policies():
    repo = policy_files(POLICIES)
    chart = policy_files(CHART_POLICIES)
    assert repo, "policies/ is empty"
    missing = sorted(set(repo) - set(chart))
    extra = sorted(set(chart) - set(repo))
    changed = sorted(k for k in set(repo) & set(chart) if repo[k] != chart[k])
    assert not (missing or extra or changed), (
        f"charts/chaperone/policies is out of sync with policies/ (run `make chart-policies`): "
        f"missing={missing} extra={extra} changed={changed}")
    stray = [p.relative_to(CHART_POLICIES).as_posix() for p in CHART_POLICIES.rglob("*")
             if p.is_file() and p.relative_to(CHART_POLICIES).as_posix() not in chart]
    assert stray == [], f"unexpected files in charts/chaperone/policies: {stray}"


def test_data_files_only_at_root():
    # ConfigMap keys are flat: a nested data.yaml would lose its data path when mounted.
    nested = [k for k in policy_files(CHART_POLICIES) if "/" in k and k.rsplit("/", 1)[1].startswith("data.")]
    assert nested == [], f"nested data files cannot be shipped in a flat ConfigMap: {nested}"


def test_policy_configmap_carries_every_policy(helm):
    manifests = docs(render(helm, {}))
    cms = [m for m in manifests if m["kind"] == "ConfigMap" and m["metadata"]["name"] == "chaperone-policies"]
    assert len(cms) == 1 and cms[0]["metadata"]["namespace"] == "default"
    data = cms[0]["data"]
    expected = {k.replace("/", "."): v.decode() for k, v in policy_files(POLICIES).items()}
    assert set(data) == set(expected)
    for k, v in expected.items():
        assert data[k].rstrip("\n") == v.rstrip("\n"), k
    assert not [k for k in data if k.endswith("_test.rego")]


# ---------------------------------------------------------------- examples


@pytest.mark.parametrize("name", ["agent-deployment.yaml", "policy-configmap.yaml"])
def test_examples_validate(kubeval, name):
    need(yaml, "pyyaml")
    path = REPO / "examples" / "kubernetes" / name
    proc = subprocess.run([kubeval, "--strict", "-k", KUBE_VERSION, "--no-warn", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_example_agent_is_opted_in_by_label():
    need(yaml, "pyyaml")
    manifests = list(yaml.safe_load_all((REPO / "examples" / "kubernetes" / "agent-deployment.yaml").read_text()))
    dep = [m for m in manifests if m and m["kind"] == "Deployment"][0]
    tmpl = dep["spec"]["template"]["metadata"]
    assert tmpl["labels"]["chaperone.dev/inject"] == "true"
    policy = yaml.safe_load((REPO / "examples" / "kubernetes" / "policy-configmap.yaml").read_text())
    assert tmpl["annotations"]["chaperone.dev/policy-configmap"] == policy["metadata"]["name"]
    assert policy["metadata"]["namespace"] == dep["metadata"]["namespace"]
