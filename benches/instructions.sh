#!/usr/bin/env bash
# Instructions per call, exact: the release sidecar runs under valgrind's callgrind twice,
# once with N1 and once with N2 keep-alive calls (HTTP/1.1, one mTLS connection, the same
# sidecar config and upstream as `make bench`); the difference divided by N2 - N1 is what one
# call costs, with start-up, the handshake and shutdown cancelled out. Prints the total and
# the inclusive cost of the pipeline's main parts per call.
#
# Why: rps and CPU time on a shared VM move by 5-15 % between runs, so a 2 % change cannot
# be seen in `make bench`; instruction counts are the same on every run of the same binary
# (docs/performance.md, method). They do not weigh cache misses, and under valgrind ring
# uses its AVX SHA-256 code instead of the SHA extensions, so the audit share is overstated.
#
# Knobs: N1 (200), N2 (1200), PROTO (--http1.1; --http2 for h2), TOP (25 functions).
# Needs valgrind, curl, python3; ~2 minutes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
N1="${N1:-200}" N2="${N2:-1200}" PROTO="${PROTO:---http1.1}" TOP="${TOP:-25}"
WORK="$(mktemp -d)"
P_CHAP=19453 P_ADMIN=19454 P_UP=19109
TD=bench.test
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
log() { printf '[instructions] %s\n' "$*" >&2; }

for tool in valgrind callgrind_annotate curl python3; do
  command -v "$tool" >/dev/null || { log "needs $tool"; exit 1; }
done
(( N2 > N1 )) || { log "N2 must be larger than N1"; exit 1; }

log "building chaperone (release) and the bench upstream"
cargo build --release --locked -p chaperone-cli
CHAP="$ROOT/target/release/chaperone"
UPSTREAM="$(cargo bench -p chaperone-proxy --bench upstream --no-run 2>&1 \
  | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)"
[[ -x "$UPSTREAM" ]] || { log "upstream binary not found"; exit 1; }

"$CHAP" dev certs --out "$WORK/certs" --trust-domain "$TD" --id "spiffe://$TD/ns/default/sa/agent" >/dev/null
C="$WORK/certs"
printf 'static-token-for-instructions' >"$WORK/static-token"
cp -r "$ROOT/policies" "$WORK/policies"
sed -i 's/max_requests_per_minute: .*/max_requests_per_minute: 1000000000/' "$WORK/policies/data.yaml"
write_chaperone_config "$WORK/chaperone.yaml"
"$UPSTREAM" serve "127.0.0.1:$P_UP" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
wait_port "$P_UP"

run() { # n: one sidecar under callgrind serving n calls; leaves $WORK/cg.n
  local n="$1" i
  rm -f "$WORK/audit.jsonl"
  CHAPERONE_WORKER_THREADS=1 valgrind --tool=callgrind --dump-instr=no \
    --callgrind-out-file="$WORK/cg.$n" \
    "$CHAP" run --config "$WORK/chaperone.yaml" --log-level warn >"$WORK/sidecar.$n.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  wait_port "$P_CHAP" 600
  for i in $(seq 1 "$n"); do printf 'url = "https://127.0.0.1:%s/status"\noutput = /dev/null\n' "$P_CHAP"; done \
    | curl -sS "$PROTO" --cacert "$C/ca.pem" --cert "$C/agent.pem" --key "$C/agent_key.pem" -K - -w '%{http_code}\n' \
    | sort | uniq -c >"$WORK/codes.$n"
  [[ "$(tr -s ' ' <"$WORK/codes.$n")" == " $n 200" ]] || { log "unexpected statuses: $(cat "$WORK/codes.$n")"; exit 1; }
  kill -TERM "$pid"
  wait "$pid" || true
  callgrind_annotate --inclusive=yes --auto=no --threshold=100 "$WORK/cg.$n" >"$WORK/inc.$n" 2>/dev/null
}
log "sidecar under callgrind: $N1 calls, then $N2 calls ($PROTO)"
run "$N1"
run "$N2"

python3 - "$WORK/inc.$N1" "$WORK/inc.$N2" "$((N2 - N1))" "$TOP" <<'PY'
import re, sys
def load(path):
    out = {}
    for line in open(path, errors="replace"):
        m = re.match(r"\s*([\d,]+) \([\d. %]+\)\s+(.*)$", line)
        if m:
            name = re.sub(r" \[/.*\]$", "", m.group(2).strip())
            # "file:function": a function is listed once per source file its (inlined)
            # code comes from, each entry with the function's inclusive cost or a part
            # of it; the largest is the function's. "'2" marks a recursion level.
            name = name.split(":", 1)[-1] if ":" in name else name
            if re.search(r"'[0-9]+$", name):
                continue
            out[name] = max(out.get(name, 0), int(m.group(1).replace(",", "")))
    return out
a, b, n, top = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
per = {k: (b.get(k, 0) - a.get(k, 0)) / n for k in b}
total = per.get("PROGRAM TOTALS", 0)
print(f"instructions per call: {total:,.0f}")
parts = [
    ("pipeline (chaperone_proxy::pipeline::handle)", "chaperone_proxy::pipeline::handle"),
    ("  policy decision (PolicySet::eval_call)", "chaperone_policy::set::PolicySet::eval_call"),
    ("  forward (pipeline::forward)", "chaperone_proxy::pipeline::forward"),
    ("audit writer task", "chaperone_audit::writer::run"),
]
for label, prefix in parts:
    cost = max((v for k, v in per.items() if k.startswith(prefix)), default=0)
    print(f"  {label:<50} {cost:>9,.0f}  {100 * cost / total if total else 0:5.1f} %")
print(f"top {top} functions by inclusive cost per call:")
skip = ("PROGRAM TOTALS", "(below main)", "main", "0x")
rows = sorted(((v, k) for k, v in per.items() if v > 0 and not k.startswith(skip)), reverse=True)
for v, k in rows[:top]:
    print(f"  {v:>9,.0f}  {k[:110]}")
PY
