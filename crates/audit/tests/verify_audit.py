#!/usr/bin/env python3
"""Independent verifier for chaperone audit logs (stdlib only). See docs/audit.md.

usage: verify_audit.py FILE... (oldest first)
"""
import hashlib
import json
import sys

GENESIS = "0" * 64


def canonical(v):
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def main(paths):
    prev_hash, prev_seq, n = None, None, 0
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        if data and not data.endswith(b"\n"):
            print(f"{path}: last line is truncated")
            return 1
        for i, raw in enumerate(data.split(b"\n")[:-1], 1):
            line = raw.decode("utf-8")
            rec = json.loads(line)
            if canonical(rec) != line:
                print(f"{path}: line {i}: not canonical")
                return 1
            body = {k: v for k, v in rec.items() if k != "hash"}
            h = hashlib.sha256((rec["prev_hash"] + canonical(body)).encode("utf-8")).hexdigest()
            if h != rec["hash"]:
                print(f"{path}: line {i}: hash mismatch")
                return 1
            if prev_hash is None:
                ok = (rec["prev_hash"] == GENESIS and rec["seq"] == 1) or rec["event"] in ("audit.rotated", "audit.started")
            else:
                ok = rec["prev_hash"] == prev_hash and rec["seq"] == prev_seq + 1
            if not ok:
                print(f"{path}: line {i}: chain broken")
                return 1
            prev_hash, prev_seq, n = rec["hash"], rec["seq"], n + 1
    print(f"OK {n} records, last seq {prev_seq}, last hash {prev_hash}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
