# Shared by run.sh and symbol-order.sh: the sidecar configuration both measure.
# write_chaperone_config FILE: uses WORK (policies/, static-token, audit log), C (dev certs
# from `chaperone dev certs`), TD, P_CHAP, P_ADMIN, P_UP and ENGINE (default compiled).
write_chaperone_config() {
  local ENGINE="${ENGINE:-compiled}"
  cat >"$1" <<EOF
listen: 127.0.0.1:$P_CHAP
admin: 127.0.0.1:$P_ADMIN
tls:
  cert: $C/sidecar.pem
  key: $C/sidecar_key.pem
  bundle: $C/bundle.pem
  trust_domains: [$TD]
identities:
  - match: spiffe://$TD/ns/default/sa/*
    attributes: {kind: support, team: bench}
routes:
  - name: status
    prefix: /status
    upstream: http://127.0.0.1:$P_UP
    labels: {harmless: true}
    credential: static-token
  - name: orders-api
    prefix: /orders
    upstream: http://127.0.0.1:$P_UP
    labels: {sensitivity: medium, data_domain: billing}
    credential: orders-jwt
credentials:
  static-token:
    provider: static
    file: $WORK/static-token
    inject: {header: authorization, value: "Bearer {token}"}
  orders-jwt:
    provider: jwt
    audience: https://orders.bench.internal
    ttl: 15m
    inject: {header: authorization, value: "Bearer {token}"}
policy:
  paths: [$WORK/policies]
  engine: $ENGINE
sessions:
  default_ttl: 15m
  max_ttl: 1h
audit:
  path: $WORK/audit.jsonl
EOF
}

# wait_port PORT [TRIES]: until 127.0.0.1:PORT accepts (TRIES x 0.1 s, default 100).
# Uses the caller's `log`.
wait_port() {
  local i
  for i in $(seq 1 "${2:-100}"); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  log "port $1 did not open"; return 1
}
