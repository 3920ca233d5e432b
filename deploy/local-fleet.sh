#!/usr/bin/env bash
# Starts a local Vantage fleet for trying things out: nats-server (JetStream, temp store) on
# 127.0.0.1 and three collectors on 127.0.0.2, 127.0.0.3 and 127.0.0.4, each with its own
# domain (collector-{a,b,c}.vantage.test, mapped by a generated hosts file and printed
# --resolve / --host-resolver-rules options: /etc/hosts is never touched), its own TLS
# certificate from a throw-away CA, its own store, and the one shared fleet collector key.
# Prints the URLs, then runs until Ctrl-C, which stops everything and removes the temp dir.
#
# The collectors run in fleet mode ([fleet], docs/fleet.md): each publishes what it accepted
# to the JetStream stream and every detector reads the whole stream. An agent config listing
# the three collectors in failover order is written to agent/agent.toml.
#
#   deploy/local-fleet.sh             run until Ctrl-C
#   deploy/local-fleet.sh --smoke     start everything on free ports, check every health
#                                     endpoint (collectors over HTTP, HTTPS by domain and the
#                                     admin listener; NATS monitoring), then show a failover:
#                                     `vantage-agent send-test` delivers to collector a; a is
#                                     stopped; the next report fails over to b; collector c,
#                                     which received neither, consumed both from the stream.
#                                     Stop, exit 0 or 1
#   deploy/local-fleet.sh --keep      keep the temp dir (configs, keys, logs, stores) on exit
#
# Environment:
#   VANTAGE_COLLECTOR=PATH   the collector binary (default: vantage-collector on PATH, else
#                            $CARGO_TARGET_DIR or target/ debug build, else `cargo build`)
#   VANTAGE_AGENT=PATH       the agent tool, for the failover (default: vantage-agent on PATH,
#                            else the debug build, else `cargo build -p vantage-agent
#                            --features cli`)
#   FLEET_DIR=DIR            work here instead of a new temp dir (kept on exit)
#   FLEET_TLS_PORT=8443 FLEET_PLAIN_PORT=8080 FLEET_ADMIN_PORT=9464
#   NATS_PORT=4222 NATS_MONITOR_PORT=8222
#                            ports (each collector has its own address, so they share ports);
#                            --smoke defaults all of them to free ones
# Needs: nats-server, openssl, curl (.ci/install-deploy-tools.sh installs them).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NAMES=(a b c)
ADDRS=(127.0.0.2 127.0.0.3 127.0.0.4)
DOMAIN=vantage.test
READY_TIMEOUT_S=30

SMOKE=0
KEEP=0
PIDS=()
declare -A COLLECTOR_PIDS=()
AGENT=
DELIVERED_TO=
WORK=

log() { printf '[local-fleet] %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

parse_args() {
    while [[ $# -gt 0 ]]; do
        case "$1" in
        --smoke) SMOKE=1 ;;
        --keep) KEEP=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) die "unknown argument: $1 (see --help)" ;;
        esac
        shift
    done
}

find_collector() {
    local candidate
    if [[ -n "${VANTAGE_COLLECTOR:-}" ]]; then
        [[ -x "$VANTAGE_COLLECTOR" ]] || die "VANTAGE_COLLECTOR=$VANTAGE_COLLECTOR is not executable"
        echo "$VANTAGE_COLLECTOR"
        return
    fi
    if candidate="$(command -v vantage-collector 2>/dev/null)"; then
        echo "$candidate"
        return
    fi
    candidate="${CARGO_TARGET_DIR:-$ROOT/target}/debug/vantage-collector"
    if [[ ! -x "$candidate" ]]; then
        log "building vantage-collector (cargo build -p vantage-collector)"
        (cd "$ROOT" && cargo build -q -p vantage-collector) >&2
    fi
    [[ -x "$candidate" ]] || die "no collector binary at $candidate"
    echo "$candidate"
}

find_agent_tool() {
    local candidate
    if [[ -n "${VANTAGE_AGENT:-}" ]]; then
        [[ -x "$VANTAGE_AGENT" ]] || die "VANTAGE_AGENT=$VANTAGE_AGENT is not executable"
        echo "$VANTAGE_AGENT"
        return
    fi
    if candidate="$(command -v vantage-agent 2>/dev/null)"; then
        echo "$candidate"
        return
    fi
    candidate="${CARGO_TARGET_DIR:-$ROOT/target}/debug/vantage-agent"
    if [[ ! -x "$candidate" ]]; then
        log "building vantage-agent (cargo build -p vantage-agent --features cli)"
        (cd "$ROOT" && cargo build -q -p vantage-agent --features cli --bin vantage-agent) >&2
    fi
    [[ -x "$candidate" ]] || die "no agent tool at $candidate"
    echo "$candidate"
}

# Stops every process we started (SIGTERM, then SIGKILL after 10 s) and removes the temp dir.
cleanup() {
    local rc=$? pid i
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid did not stop on SIGTERM; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n "$WORK" ]]; then
        if [[ $KEEP == 1 || -n "${FLEET_DIR:-}" ]]; then
            log "kept $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    log "stopped"
    exit "$rc"
}

# Waits until FILE exists and is non-empty while PID runs; $3 names what for the error.
wait_for_file() {
    local file="$1" pid="$2" what="$3" i
    for ((i = 0; i < READY_TIMEOUT_S * 10; i++)); do
        [[ -s "$file" ]] && return 0
        kill -0 "$pid" 2>/dev/null || die "$what exited before it was ready (log: $4)"
        sleep 0.1
    done
    die "$what not ready after ${READY_TIMEOUT_S}s (log: $4)"
}

# The value of a string field of a one-line JSON object, e.g. `json_field admin ready.json`.
json_field() {
    sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p" "$2"
}

# First element of a JSON array field (nats ports file): `json_first monitoring FILE`.
json_first() {
    sed -n "s/.*\"$1\":\\[\"\\([^\"]*\\)\".*/\\1/p" "$2"
}

make_ca() {
    local dir="$1"
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$dir/ca.key" -out "$dir/ca.crt" -days 7 -subj "/CN=Vantage local fleet CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

# make_leaf DIR NAME ADDR: DIR/tls.crt and DIR/tls.key for NAME and ADDR, signed by the CA.
make_leaf() {
    local dir="$1" name="$2" addr="$3"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$dir/tls.key" -out "$dir/tls.csr" -subj "/CN=$name" 2>/dev/null
    printf '%s\n' "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" \
        "subjectAltName=DNS:$name,IP:$addr" >"$dir/tls.ext"
    openssl x509 -req -in "$dir/tls.csr" -CA "$WORK/ca/ca.crt" -CAkey "$WORK/ca/ca.key" \
        -CAcreateserial -days 7 -extfile "$dir/tls.ext" -out "$dir/tls.crt" 2>/dev/null
    rm -f "$dir/tls.csr" "$dir/tls.ext"
    chmod 0600 "$dir/tls.key"
}

start_nats() {
    local dir="$WORK/nats" port="${NATS_PORT:-4222}" mport="${NATS_MONITOR_PORT:-8222}"
    if [[ $SMOKE == 1 ]]; then
        port="${NATS_PORT:--1}"
        mport="${NATS_MONITOR_PORT:--1}"
    fi
    mkdir -p "$dir/jetstream"
    nats-server --jetstream --store_dir "$dir/jetstream" --addr 127.0.0.1 --port "$port" \
        --http_port "$mport" --ports_file_dir "$dir" --log "$dir/nats.log" &
    local pid=$!
    PIDS+=("$pid")
    local ports="$dir/nats-server_$pid.ports"
    wait_for_file "$ports" "$pid" "nats-server" "$dir/nats.log"
    NATS_URL="$(json_first nats "$ports")"
    NATS_MONITOR_URL="$(json_first monitoring "$ports")"
}

# write_config DIR ADDR NAME: the collector's config (relative paths resolve in DIR).
write_config() {
    local dir="$1" addr="$2" tls plain admin
    tls="${FLEET_TLS_PORT:-8443}"
    plain="${FLEET_PLAIN_PORT:-8080}"
    admin="${FLEET_ADMIN_PORT:-9464}"
    if [[ $SMOKE == 1 ]]; then
        tls="${FLEET_TLS_PORT:-0}"
        plain="${FLEET_PLAIN_PORT:-0}"
        admin="${FLEET_ADMIN_PORT:-0}"
    fi
    cat >"$dir/collector.toml" <<EOF
# Generated by deploy/local-fleet.sh: one of three collectors in fleet mode (docs/fleet.md).
[server]
listen_tls = "$addr:$tls"
listen_plain = "$addr:$plain"
listen_admin = "$addr:$admin"
tls_cert = "tls.crt"
tls_key = "tls.key"
ready_file = "ready.json"

[keys]
private_key_files = ["collector.key"]
net_tag_secret_file = "net-tag.secret"

[store]
path = "store"
retention_days = 1
max_bytes = 268435456

[log]
format = "text"
level = "info"

[fleet]
nats_url = "$NATS_URL"
collector_id = "local-$3"
EOF
}

start_collector() {
    local name="$1" addr="$2" dir="$WORK/collector-$1"
    mkdir -p "$dir"
    install -m 0600 "$WORK/fleet-key/collector.key" "$dir/collector.key"
    install -m 0600 "$WORK/net-tag.secret" "$dir/net-tag.secret"
    make_leaf "$dir" "collector-$name.$DOMAIN" "$addr"
    write_config "$dir" "$addr" "$name"
    "$COLLECTOR" check-config --config "$dir/collector.toml" >/dev/null ||
        die "generated config $dir/collector.toml is invalid"
    "$COLLECTOR" serve --config "$dir/collector.toml" >>"$dir/collector.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    COLLECTOR_PIDS[$name]=$pid
    wait_for_file "$dir/ready.json" "$pid" "collector $name" "$dir/collector.log"
}

# check URL [curl options...]: GET must answer 2xx within 5 s.
check() {
    local url="$1"
    shift
    if curl -fsS --max-time 5 -o /dev/null "$@" "$url"; then
        log "  ok   $url"
    else
        log "  FAIL $url"
        return 1
    fi
}

check_all() {
    local failed=0 name i dir plain admin tls host port
    log "health checks:"
    check "$NATS_MONITOR_URL/healthz" || failed=1
    for i in "${!NAMES[@]}"; do
        name="${NAMES[$i]}"
        dir="$WORK/collector-$name"
        plain="$(json_field plain "$dir/ready.json")"
        admin="$(json_field admin "$dir/ready.json")"
        tls="$(json_field tls "$dir/ready.json")"
        host="collector-$name.$DOMAIN"
        port="${tls##*:}"
        check "http://$plain/healthz" || failed=1
        check "http://$admin/readyz" || failed=1
        check "https://$host:$port/healthz" --cacert "$WORK/ca/ca.crt" \
            --resolve "$host:$port:${ADDRS[$i]}" || failed=1
    done
    return "$failed"
}

# The agent config: the three collectors in failover order, by name (fixed_addrs stand in for
# DNS), trusting the fleet's CA.
write_agent_config() {
    local dir="$WORK/agent" i name tls port
    mkdir -p "$dir"
    cat >"$dir/agent.toml" <<EOF
# Generated by deploy/local-fleet.sh: an agent of the local fleet (docs/agent-config.md).
data_dir = "data"
collector_key = "$(tr -d ' \n' <"$WORK/fleet-key/collector.pub")"
extra_ca_files = ["$WORK/ca/ca.crt"]

[app]
id = "dev.vantage.local-fleet"
version = "1.0.0"
platform = "linux"

[[services]]
id = "shop"
hosts = ["shop.example"]
EOF
    for i in "${!NAMES[@]}"; do
        name="${NAMES[$i]}"
        tls="$(json_field tls "$WORK/collector-$name/ready.json")"
        port="${tls##*:}"
        printf '\n[[collectors]]\nurl = "https://collector-%s.%s:%s"\nfixed_addrs = ["%s:%s"]\n' \
            "$name" "$DOMAIN" "$port" "${ADDRS[$i]}" "$port" >>"$dir/agent.toml"
    done
}

# metric ADMIN NAME: an unlabelled sample from a collector's /metrics (0 when absent).
metric() {
    curl -fsS --max-time 5 "http://$1/metrics" |
        awk -v n="$2" '$1 == n { v = $2 } END { print v + 0 }'
}

# send_test RUN: one synthetic failure through `vantage-agent send-test`, with a fresh data dir;
# shows its output; fails when it was not delivered.
send_test() {
    local out
    out="$("$AGENT" send-test --config "$WORK/agent/agent.toml" --data-dir "$WORK/agent/$1" 2>&1)" ||
        true
    printf '%s\n' "$out" | sed 's/^/    /' >&2
    grep -q '^delivered: ' <<<"$out" || return 1
    # Which collector took it: the first one listed as ok.
    DELIVERED_TO="$(sed -n 's/^collector https:\/\/collector-\([a-z]\)\..*: ok$/\1/p' <<<"$out" | head -n 1)"
}

show_failover() {
    local admin_c consumed0 consumed=0 i pid="${COLLECTOR_PIDS[a]}"
    log "failover:"
    admin_c="$(json_field admin "$WORK/collector-c/ready.json")"
    consumed0="$(metric "$admin_c" vantage_fleet_consumed_total)"
    send_test run-1 || die "send-test to the fleet was not delivered"
    [[ "$DELIVERED_TO" == a ]] || die "the first report went to collector '$DELIVERED_TO', expected a"
    log "  collector a (pid $pid) stops"
    kill -TERM "$pid"
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && die "collector a did not stop"
    send_test run-2 || die "with collector a stopped, send-test did not fail over"
    [[ "$DELIVERED_TO" == b ]] || die "the second report went to collector '$DELIVERED_TO', expected b"
    # Collector c received neither envelope: its detector consumed both from the stream.
    for ((i = 0; i < 100; i++)); do
        consumed="$(metric "$admin_c" vantage_fleet_consumed_total)"
        ((consumed >= consumed0 + 2)) && break
        sleep 0.1
    done
    ((consumed >= consumed0 + 2)) ||
        die "collector c consumed $((consumed - consumed0)) batches from the stream, expected 2"
    log "  collector c, which received neither, consumed both from the stream ($consumed0 -> $consumed)"
}

print_urls() {
    local name i dir host tls port rules=()
    printf '\nVantage local fleet (work dir %s)\n' "$WORK"
    printf '  NATS          %s  (JetStream, monitoring %s)\n' "$NATS_URL" "$NATS_MONITOR_URL"
    for i in "${!NAMES[@]}"; do
        name="${NAMES[$i]}"
        dir="$WORK/collector-$name"
        host="collector-$name.$DOMAIN"
        tls="$(json_field tls "$dir/ready.json")"
        port="${tls##*:}"
        rules+=("MAP $host ${ADDRS[$i]}")
        printf '  collector %s   ingest https://%s:%s/  (%s), http://%s/\n' "$name" "$host" \
            "$port" "${ADDRS[$i]}" "$(json_field plain "$dir/ready.json")"
        printf '                dashboard http://%s/  metrics http://%s/metrics\n' \
            "$(json_field admin "$dir/ready.json")" "$(json_field admin "$dir/ready.json")"
    done
    local IFS=','
    printf '\n  fleet public key (for agents): %s\n' "$(cat "$WORK/fleet-key/collector.pub")"
    printf '  CA certificate:                %s\n' "$WORK/ca/ca.crt"
    printf '  hosts mapping:                 %s\n' "$WORK/hosts"
    printf '  curl:     curl --cacert %s --resolve collector-a.%s:%s:%s https://collector-a.%s:%s/healthz\n' \
        "$WORK/ca/ca.crt" "$DOMAIN" "$port" "${ADDRS[0]}" "$DOMAIN" "$port"
    printf '  chromium: --host-resolver-rules="%s, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"\n' "${rules[*]}"
    printf '  agent config:                  %s\n' "$WORK/agent/agent.toml"
    printf '\n  failover: %s send-test --config %s\n' "$AGENT" "$WORK/agent/agent.toml"
    printf '            then stop collector a (kill %s) and send again: collector b takes it,\n' "${COLLECTOR_PIDS[a]}"
    printf '            and collector c counts both (vantage_fleet_consumed_total on its /metrics)\n'
    printf '\nCtrl-C stops the fleet.\n'
}

main() {
    parse_args "$@"
    local tool
    for tool in nats-server openssl curl; do
        command -v "$tool" >/dev/null 2>&1 ||
            die "$tool not found (bash .ci/install-deploy-tools.sh installs it)"
    done
    COLLECTOR="$(find_collector)"

    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    if [[ -n "${FLEET_DIR:-}" ]]; then
        WORK="$FLEET_DIR"
        mkdir -p "$WORK"
    else
        WORK="$(mktemp -d "${TMPDIR:-/tmp}/vantage-fleet.XXXXXX")"
    fi

    # One collector key and one net-tag secret for the whole fleet.
    "$COLLECTOR" keygen --out "$WORK/fleet-key" >/dev/null
    (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$WORK/net-tag.secret")
    mkdir -p "$WORK/ca"
    make_ca "$WORK/ca"
    local i
    : >"$WORK/hosts"
    for i in "${!NAMES[@]}"; do
        printf '%s collector-%s.%s\n' "${ADDRS[$i]}" "${NAMES[$i]}" "$DOMAIN" >>"$WORK/hosts"
    done

    start_nats
    for i in "${!NAMES[@]}"; do
        start_collector "${NAMES[$i]}" "${ADDRS[$i]}"
    done

    write_agent_config
    AGENT="$(find_agent_tool)"
    if [[ $SMOKE == 1 ]]; then
        check_all || die "smoke run: a health check failed (logs in $WORK; rerun with --keep)"
        show_failover
        log "smoke run ok"
        return 0
    fi
    check_all || log "a health check failed; see the logs in $WORK"
    print_urls
    # Runs until Ctrl-C, or until one of the processes exits on its own.
    local rc=0
    wait -n "${PIDS[@]}" || rc=$?
    die "a fleet process exited (status $rc); logs in $WORK"
}

main "$@"
