#!/usr/bin/env bash
# Regenerate crates/cli/symbol-order.txt: the functions a running sidecar executes, hottest
# first, which crates/cli/build.rs hands to the linker (`--symbol-ordering-file`) so that
# they are laid out next to each other at the start of .text.
#
# Why: the kernel maps a binary's code into a process in 64 KiB windows around each page
# it touches ("fault-around"). With the executed functions scattered over the 10 MB .text,
# ~143 windows (~9 MB) end up resident although only ~3 MB of code runs; packed together
# they need ~3 MB (docs/performance.md, idle memory). The order never changes behaviour.
#
# How: the release binary runs under valgrind's callgrind (exact, not sampled) through
# start-up and a representative workload on 127.0.0.1: HTTP/1.1 and HTTP/2 keep-alive
# calls, a session declared through the session API with calls that get a minted JWT,
# denied calls, a /metrics scrape, then a graceful stop. Each executed function's own
# instruction count orders the list (ties by name, so the output is deterministic).
#
# A stale list (after code or dependency changes) is harmless: the linker ignores names it
# does not find and places everything else after the listed functions. Regenerate when
# idle RSS in `make bench` creeps up. Needs valgrind, curl, python3; takes ~1 minute.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
OUT_FILE="${OUT_FILE:-$ROOT/crates/cli/symbol-order.txt}"
WORK="$(mktemp -d)"
P_CHAP="${P_CHAP:-19443}"
P_ADMIN="${P_ADMIN:-19444}"
P_UP="${P_UP:-19099}"
TD=bench.test
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
log() { printf '[symbol-order] %s\n' "$*" >&2; }

for tool in valgrind curl python3; do
  command -v "$tool" >/dev/null || { log "needs $tool"; exit 1; }
done

log "building chaperone (release)"
# Whether this build already uses an older list does not matter: which functions run
# does not depend on where they are laid out.
cargo build --release --locked -p chaperone-cli
CHAP="$ROOT/target/release/chaperone"

# --- fixtures --------------------------------------------------------------------------
"$CHAP" dev certs --out "$WORK/certs" --trust-domain "$TD" --id "spiffe://$TD/ns/default/sa/agent" >/dev/null
C="$WORK/certs"
printf 'static-token-for-symbol-order' >"$WORK/static-token"
cp -r "$ROOT/policies" "$WORK/policies"
sed -i 's/max_requests_per_minute: .*/max_requests_per_minute: 1000000000/' "$WORK/policies/data.yaml"
# The upstream sees the route path with the route's prefix stripped: /status -> / (the
# directory listing), /orders/v1/orders/4711 -> /v1/orders/4711.
mkdir -p "$WORK/www/v1/orders"
printf '{"order":4711}\n' >"$WORK/www/v1/orders/4711"

write_chaperone_config "$WORK/chaperone.yaml"


(cd "$WORK/www" && exec python3 -m http.server "$P_UP" --bind 127.0.0.1) >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
wait_port "$P_UP"

log "running the sidecar under callgrind"
CHAPERONE_WORKER_THREADS=1 valgrind --tool=callgrind --demangle=no --dump-instr=no \
  --compress-strings=no --compress-pos=no --callgrind-out-file="$WORK/callgrind.out" \
  "$CHAP" run --config "$WORK/chaperone.yaml" --log-level warn >"$WORK/sidecar.log" 2>&1 &
SIDECAR=$!
PIDS+=("$SIDECAR")
wait_port "$P_CHAP" 600  # valgrind starts slowly

TLS=(--cacert "$C/ca.pem" --cert "$C/agent.pem" --key "$C/agent_key.pem")
BASE="https://127.0.0.1:$P_CHAP"
urls() { # n url [header]: a curl config making n calls over one connection
  local i
  # once: a config's headers apply to every transfer (a repeated chaperone-session header
  # is ambiguous, and the sidecar refuses it)
  [[ -n "${3:-}" ]] && printf 'header = "%s"\n' "$3"
  for i in $(seq 1 "$1"); do
    printf 'url = "%s"\noutput = /dev/null\n' "$2"
  done
  return 0
}
calls() { # what expected-status curl-args... (stdin: the curl config); fails on a surprise
  local what="$1" want="$2"; shift 2
  local got
  got="$(curl -sS "${TLS[@]}" "$@" -K - -w '%{http_code}\n' | sort | uniq -c | tr -s ' ' | tr '\n' ',')"
  log "$what: ${got%,}"
  [[ "$got" == " "*" $want," ]] || { log "$what: expected only HTTP $want"; exit 1; }
}
log "workload: HTTP/1.1, HTTP/2, session + JWT, denials, metrics"
urls 100 "$BASE/status" | calls "HTTP/1.1 keep-alive" 200
urls 50 "$BASE/status" | calls "HTTP/2" 200 --http2
TOKEN="$(curl -sS --fail "${TLS[@]}" -H 'content-type: application/json' \
  -d '{"task":"order the hot code","intent":{"summary":"symbol order workload","tools":["orders-api"]},"scopes":["orders:read"],"ttl":"15m"}' \
  "$BASE/.chaperone/v1/sessions" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"
urls 100 "$BASE/orders/v1/orders/4711" "chaperone-session: $TOKEN" | calls "session + JWT" 200
urls 20 "$BASE/orders/v1/orders/4711" | calls "no session (denied)" 403
curl -sS "http://127.0.0.1:$P_ADMIN/metrics" >/dev/null
kill -TERM "$SIDECAR"
wait "$SIDECAR" || true

python3 - "$WORK/callgrind.out" "$OUT_FILE" <<'PY'
import collections, re, sys
src, dst = sys.argv[1], sys.argv[2]
cost = collections.Counter()
obj = fn = None
call_line = False
for line in open(src, errors="replace"):
    if line.startswith("ob="):
        obj = line[3:].strip()
    elif line.startswith("fn="):
        # callgrind marks recursion levels as name'2, name'3: one function either way.
        fn = re.sub(r"'[0-9]+$", "", line[3:].strip()) if obj and obj.endswith("/chaperone") else None
    elif line.startswith("calls="):
        call_line = True  # the next cost line is the callee's inclusive cost
    elif line[:1].isdigit():
        if call_line:
            call_line = False
        elif fn:
            parts = line.split()
            if len(parts) >= 2:
                cost[fn] += int(parts[1])
# Only real symbol names (callgrind shows unnamed code as 0x... and "(below main)").
names = [n for n in cost if not n.startswith("0x") and " " not in n]
names.sort(key=lambda n: (-cost[n], n))
with open(dst, "w") as f:
    f.write("# Generated by benches/symbol-order.sh: functions a running sidecar executes,\n"
            "# hottest first, laid out first in .text by the linker (crates/cli/build.rs).\n")
    f.write("\n".join(names) + "\n")
print(f"[symbol-order] {len(names)} functions, {sum(cost.values())} instructions -> {dst}", file=sys.stderr)
PY
