#!/usr/bin/env python3
"""Differential conformance: evaluate the example policies with OPA's own engine and with
chaperone (regorus), for every case in cases.json, and compare the full decision objects.

Usage: python3 tests/conformance/opa_conformance.py [POLICY_DIR] [CASES_JSON]
Exit status: 0 when every decision matches, 1 on any difference (each is printed),
2 when OPA's bindings are not installed or chaperone's evaluator cannot be run.
"""
import json
import os
import re
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
POLICY_DIR = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "policies")
CASES = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "tests", "conformance", "cases.json")

try:
    import yaml  # optional; the loader below falls back to a tiny subset parser otherwise
except ImportError:  # pragma: no cover
    yaml = None

try:
    from opa_bindings import OpaEngine, OpaError, OpaUndefinedError
except ImportError:
    sys.stderr.write("opa-golib-python-bindings is not installed; see tests/conformance/README.md\n")
    sys.exit(2)


def load_bundle(engine, root):
    """Load files exactly as chaperone's PolicySet::load does (sorted walk, hidden entries
    skipped, *_test.rego skipped, only data.json/data.yaml/data.yml are data)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            rel_dir = os.path.relpath(dirpath, root)
            prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, ".")
            if name.endswith(".rego") and not name.endswith("_test.rego"):
                with open(path) as f:
                    engine.add_policy(path, f.read())
            elif name in ("data.json", "data.yaml", "data.yml"):
                with open(path) as f:
                    text = f.read()
                if name == "data.json":
                    value = json.loads(text)
                elif yaml is not None:
                    value = yaml.safe_load(text) or {}
                else:
                    sys.stderr.write("PyYAML is required to load %s\n" % path)
                    sys.exit(2)
                engine.add_data(value, prefix)


_UNITS = {"ms": 1, "s": 1000, "m": 60000, "h": 3600000, "d": 86400000}


def parse_duration_ms(s):
    if not isinstance(s, str) or not re.fullmatch(r"(\d+(ms|s|m|h|d))+", s):
        return None
    return sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d)", s))


def str_list(v, sort):
    if v is None:
        return [], None
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        return [], "bad type"
    return (sorted(v) if sort else list(v)), None


def normalize_authz(doc, error):
    """Mirror chaperone's Decision (crates/policy/src/set.rs) from OPA's package value."""
    d = {"allow": False, "deny": [], "approval": [], "credential": None, "scopes": None,
         "revoke_session": [], "error": error is not None}
    if error is not None:
        return d
    errs = []
    allow = doc.get("allow")
    if allow is None or isinstance(allow, bool):
        d["allow"] = bool(allow)
    else:
        errs.append("allow")
    for k in ("deny", "approval", "revoke_session"):
        d[k], e = str_list(doc.get(k), True)
        if e:
            errs.append(k)
    cred = doc.get("credential")
    if cred is None or isinstance(cred, str):
        d["credential"] = cred
    else:
        errs.append("credential")
    if doc.get("scopes") is not None:
        d["scopes"], e = str_list(doc.get("scopes"), False)
        if e:
            d["scopes"] = None
            errs.append("scopes")
    if errs:
        d["allow"] = False
        d["error"] = True
    return d


def normalize_session(doc, error):
    d = {"allow": False, "deny": [], "max_ttl": None, "scopes": None, "error": error is not None}
    if error is not None:
        return d
    errs = []
    allow = doc.get("allow")
    if allow is None or isinstance(allow, bool):
        d["allow"] = bool(allow)
    else:
        errs.append("allow")
    d["deny"], e = str_list(doc.get("deny"), True)
    if e:
        errs.append("deny")
    if doc.get("scopes") is not None:
        d["scopes"], e = str_list(doc.get("scopes"), False)
        if e:
            d["scopes"] = None
            errs.append("scopes")
    ttl = doc.get("max_ttl")
    if ttl is not None:
        ms = parse_duration_ms(ttl)
        if not ms:
            errs.append("max_ttl")
        else:
            d["max_ttl"] = "%ds" % (ms // 1000)
    if errs:
        d["allow"] = False
        d["error"] = True
    return d


def opa_eval(engine, package, inp):
    try:
        return engine.eval_document(package, inp), None
    except OpaUndefinedError:
        return {}, None
    except OpaError as e:
        return {}, str(e)


def chaperone_decisions():
    cmd = ["cargo", "run", "-q", "-p", "chaperone-policy", "--example", "eval_cases", "--", POLICY_DIR, CASES]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write("chaperone evaluator failed (%s):\n%s\n" % (" ".join(cmd), proc.stderr))
        sys.exit(2)
    return json.loads(proc.stdout)


def from_chaperone(d, keys):
    out = {k: d.get(k) for k in keys}
    out["error"] = d.get("error") is not None
    return out


def main():
    with open(CASES) as f:
        cases = json.load(f)
    engine = OpaEngine()
    load_bundle(engine, POLICY_DIR)
    ours = chaperone_decisions()
    diffs = 0
    for case in cases:
        name, inp = case["name"], case["input"]
        doc, err = opa_eval(engine, "chaperone.authz", inp)
        opa_authz = normalize_authz(doc, err)
        doc, err = opa_eval(engine, "chaperone.session", inp)
        opa_session = normalize_session(doc, err)
        mine = ours.get(name)
        if mine is None:
            print("MISSING %s: chaperone produced no decision" % name)
            diffs += 1
            continue
        ch_authz = from_chaperone(mine["authz"], opa_authz.keys())
        ch_session = from_chaperone(mine["session"], opa_session.keys())
        for label, a, b in (("authz", opa_authz, ch_authz), ("session", opa_session, ch_session)):
            if a != b:
                diffs += 1
                print("DIFF %s [%s]\n  opa:       %s\n  chaperone: %s" % (name, label, json.dumps(a, sort_keys=True), json.dumps(b, sort_keys=True)))
    print("%d cases, %d differences" % (len(cases), diffs))
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
