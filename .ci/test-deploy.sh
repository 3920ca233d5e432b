#!/usr/bin/env bash
# Checks the deploy kit (deploy/) with the real tools; exits non-zero on the first failure.
#
#   promtool     check rules, unit tests of every rule (vantage.rules*.test.yml), check config
#   names        every vantage_* metric the rules and the dashboard use is exported by the
#                collector, every recorded series the dashboard uses is recorded
#   amtool       check-config, and `config routes test` for each kind of Vantage alert
#   alertmanager the inhibit rules, on a real Alertmanager on loopback
#   systemd      `systemd-analyze verify` of the unit, alone and with the port-443 drop-in, with
#                no warning allowed; `systemd-analyze security --offline` exposure <= 2.0
#   syscalls     the collector, run under strace with real work (fleet mode on nats-server,
#                sealed envelopes from `demo --collector` until an alert fires and resolves, its
#                webhook notification, a NEL upload, TLS and admin requests, shutdown), uses only
#                system calls and socket families the unit's SystemCallFilter= and
#                RestrictAddressFamilies= allow
#   collector    `vantage-collector check-config` on every deploy/collector/*.toml
#   scripts      bash -n and shellcheck -x
#   grafana      the dashboard is valid JSON with unique panel ids and a query in every panel
#   local fleet  deploy/local-fleet.sh --smoke: nats-server + three collectors in fleet mode,
#                every health endpoint answered, a failover from a to b by `vantage-agent
#                send-test` seen by collector c through the stream, then stopped
#
# Tools: bash .ci/install-deploy-tools.sh. The collector binary is VANTAGE_COLLECTOR if set,
# else built (`cargo build -p vantage-collector`, a no-op when up to date) in CARGO_TARGET_DIR.
# VANTAGE_DEPLOY_STEPS="check_systemd check_syscalls" runs only the named steps.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CI_LOG_TAG=test-deploy
# shellcheck source=.ci/lib.sh
source "$ROOT/.ci/lib.sh"

DEPLOY="$ROOT/deploy"
MAX_EXPOSURE=2.0
TMP=

BG_PIDS=()
cleanup() {
    local pid
    for pid in "${BG_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    [[ -n "$TMP" ]] && rm -rf "$TMP"
}

need_tools() {
    local t
    for t in promtool amtool systemd-analyze nats-server openssl curl shellcheck python3 strace; do
        command -v "$t" >/dev/null 2>&1 ||
            ci_die "$t not found: run bash .ci/install-deploy-tools.sh"
    done
}

collector_binary() {
    if [[ -n "${VANTAGE_COLLECTOR:-}" ]]; then
        [[ -x "$VANTAGE_COLLECTOR" ]] || ci_die "VANTAGE_COLLECTOR=$VANTAGE_COLLECTOR is not executable"
        COLLECTOR="$VANTAGE_COLLECTOR"
        return
    fi
    (cd "$ROOT" && cargo build -q --locked -p vantage-collector)
    COLLECTOR="${CARGO_TARGET_DIR:-$ROOT/target}/debug/vantage-collector"
    [[ -x "$COLLECTOR" ]] || ci_die "no collector binary at $COLLECTOR"
}

check_prometheus() {
    ci_log "promtool: rules, rule unit tests, prometheus.yml"
    (
        cd "$DEPLOY/prometheus"
        promtool check rules vantage.rules.yml
        promtool test rules vantage.rules.test.yml vantage.rules.week.test.yml
        promtool check config prometheus.yml
    )
}

# Metric names are only ever spelled in full in the collector's exposition code, so a name
# that is not there is a typo or an invented metric.
check_metric_names() {
    ci_log "metric names used by the rules and the dashboard"
    python3 - "$ROOT" <<'EOF'
import json, pathlib, re, sys
root = pathlib.Path(sys.argv[1])
src = "\n".join(p.read_text() for p in (root / "collector" / "src").rglob("*.rs"))
exported = set(re.findall(r"\bvantage_[a-z_]+", src))
rules_text = (root / "deploy/prometheus/vantage.rules.yml").read_text()
recorded = set(re.findall(r"^\s*- record: (\S+)", rules_text, re.M))
dash = json.loads((root / "deploy/grafana/vantage.json").read_text())
exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
exprs += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
exprs.append(dash["templating"]["list"][1]["definition"])
# Rule expressions only (not comments or annotations).
rule_exprs = re.findall(r"^\s*expr: (?:\|\n)?((?:.+\n?)+?)(?=^\s*(?:for|labels|- record|- alert|$))",
                        rules_text, re.M)
bad = []
for where, texts in (("rules", rule_exprs), ("dashboard", exprs)):
    for e in texts:
        for name in re.findall(r"\b(?:instance:)?vantage[_:][a-z_:0-9]+", e):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if ":" in name:
                if name not in recorded:
                    bad.append(f"{where}: {name} is not recorded by vantage.rules.yml")
            elif name not in exported and base not in exported:
                bad.append(f"{where}: {name} is not exported by collector/src")
if not exprs or len(rule_exprs) != rules_text.count("expr:"):
    bad.append("expressions not found (the checker is broken)")
for b in bad:
    print(b, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
}

check_alertmanager() {
    ci_log "amtool: alertmanager.yml and its routes"
    local cfg="$DEPLOY/alertmanager/alertmanager.yml"
    amtool check-config "$cfg"
    route() {
        local want="$1"
        shift
        amtool config routes test --config.file="$cfg" --verify.receivers="$want" "$@" \
            >/dev/null 2>&1 || ci_die "alert {$*} is not routed to $want"
        ci_log "  {$*} -> $want"
    }
    route vantage-page alertname=VantageClientOutage service=shop slice=shop severity=page
    route vantage-page alertname=VantageClientSilence service=shop slice=shop/AS64500 severity=page
    route vantage-tickets alertname=VantageClientRetrospective service=shop severity=page
    route vantage-ops-page alertname=VantageCollectorDown team=vantage severity=page
    route vantage-ops-page alertname=VantageFleetReportDrop team=vantage severity=page
    route vantage-ops alertname=VantageIngestRejects team=vantage severity=warning
    route vantage-ops alertname=VantageFleetAlertFiring team=vantage severity=warning
    route vantage-ops alertname=VantageFleetDisconnected team=vantage severity=warning
    route vantage-ops alertname=VantageFleetOutboxDropping team=vantage severity=warning
    route vantage-ops alertname=VantageAgentDrops team=vantage severity=warning
    route vantage-ops alertname=SomethingElse
}

# The inhibit rules, on a real Alertmanager (loopback, clustering off, temp storage): alerts
# are posted, and the API's status says which ones are inhibited.
check_alertmanager_inhibition() {
    ci_log "alertmanager: inhibition"
    local am port dir="$TMP/alertmanager" pid i
    am="$(command -v prometheus-alertmanager || command -v alertmanager)" ||
        ci_die "no alertmanager binary: run bash .ci/install-deploy-tools.sh"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    mkdir -p "$dir"
    "$am" --config.file="$DEPLOY/alertmanager/alertmanager.yml" --storage.path="$dir" \
        --web.listen-address="127.0.0.1:$port" --cluster.listen-address= >"$dir/log" 2>&1 &
    pid=$!
    for ((i = 0; i < 100; i++)); do
        curl -fsS -o /dev/null "http://127.0.0.1:$port/-/ready" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || ci_die "alertmanager exited: $(cat "$dir/log")"
        sleep 0.1
    done
    local rc=0
    python3 - "http://127.0.0.1:$port" <<'EOF' || rc=$?
import json, sys, time, urllib.request
base = sys.argv[1]
def alert(**labels):
    return {"labels": labels, "annotations": {}, "generatorURL": "http://127.0.0.1/"}
fleet = {"job": "vantage-collector", "team": "vantage"}
alerts = [
    alert(alertname="VantageClientOutage", service="shop", slice="shop", dim="service",
          vantage_id="00abcdef01234567", severity="page"),
    alert(alertname="VantageFleetAlertFiring", instance="a:9464", severity="warning", **fleet),
    alert(alertname="VantageCollectorDown", instance="b:9464", severity="page", **fleet),
    alert(alertname="VantageIngestRejects", instance="b:9464", severity="warning", **fleet),
    alert(alertname="VantageIngestRejects", instance="c:9464", severity="warning", **fleet),
]
req = urllib.request.Request(base + "/api/v2/alerts", json.dumps(alerts).encode(),
                             {"Content-Type": "application/json"})
urllib.request.urlopen(req, timeout=5).read()
want = {
    ("VantageClientOutage", None): False,
    ("VantageFleetAlertFiring", "a:9464"): True,
    ("VantageCollectorDown", "b:9464"): False,
    ("VantageIngestRejects", "b:9464"): True,
    ("VantageIngestRejects", "c:9464"): False,
}
got = {}
for _ in range(50):
    listed = json.load(urllib.request.urlopen(base + "/api/v2/alerts", timeout=5))
    got = {(a["labels"]["alertname"], a["labels"].get("instance")):
           bool(a["status"]["inhibitedBy"]) for a in listed}
    if got == want:
        break
    time.sleep(0.1)
for key, inhibited in sorted(want.items(), key=str):
    state = got.get(key)
    shown = "missing" if state is None else "inhibited" if state else "active"
    expected = "inhibited" if inhibited else "active"
    print(f"  {key[0]} {key[1] or ''}: {shown}" + ("" if shown == expected else f"  <- expected {expected}"))
sys.exit(0 if got == want else 1)
EOF
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    [[ $rc -eq 0 ]] || ci_die "alertmanager.yml inhibits the wrong alerts (log: $dir/log)"
}

# systemd-analyze verify needs every ExecStart= binary to exist: the unit is verified as a copy
# whose /usr/local/bin/vantage-collector is replaced by the built collector.
check_systemd() {
    ci_log "systemd-analyze: verify and security rating"
    local dir="$TMP/systemd" unit=vantage-collector.service out score
    mkdir -p "$dir"
    sed "s#/usr/local/bin/vantage-collector#$COLLECTOR#g" "$DEPLOY/systemd/$unit" >"$dir/$unit"
    grep -q "^ExecStart=$COLLECTOR serve" "$dir/$unit" || ci_die "ExecStart not rewritten"
    local pass
    for pass in alone with-drop-in; do
        if [[ $pass == with-drop-in ]]; then
            mkdir -p "$dir/$unit.d"
            cp "$DEPLOY/systemd/bind-privileged-port.conf" "$dir/$unit.d/"
        fi
        # Unknown keys and bad values are warnings (exit 0): any output fails the check.
        out="$(cd "$dir" && systemd-analyze verify "./$unit" 2>&1)" ||
            ci_die "systemd-analyze verify ($pass) failed: $out"
        [[ -z "$out" ]] || ci_die "systemd-analyze verify ($pass) complained: $out"
        score="$(cd "$dir" && systemd-analyze security --offline=true "./$unit" 2>/dev/null |
            sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')"
        [[ -n "$score" ]] || ci_die "no exposure level from systemd-analyze security ($pass)"
        awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }' ||
            ci_die "exposure $score > $MAX_EXPOSURE ($pass)"
        ci_log "  $pass: verify clean, exposure $score"
    done
}

# The unit's seccomp and socket-family filters cannot be tried without a running systemd, so
# the collector runs under strace with real work and every system call and socket family it
# used must pass the unit's SystemCallFilter= and RestrictAddressFamilies=, with the groups
# expanded by `systemd-analyze syscall-filter`. The work: fleet mode on a real nats-server
# (publish, consume, the alert stream), `vantage-collector demo --collector` driving sealed
# envelopes through ingest, store and detector until an alert fires and resolves, the webhook
# notification of it (to a local receiver, which must get the firing event), a browser NEL
# upload, TLS and admin requests, and a clean shutdown.
check_syscalls() {
    ci_log "collector system calls against the unit's filters (real ingest, store, NATS, notify)"
    local dir="$TMP/strace" spid cpid i ready npid hpid
    mkdir -p "$dir/nats"
    "$COLLECTOR" keygen --out "$dir" >/dev/null
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -keyout "$dir/tls.key" -out "$dir/tls.crt" -subj /CN=localhost \
        -addext subjectAltName=DNS:localhost 2>/dev/null
    nats-server --jetstream --store_dir "$dir/nats" --addr 127.0.0.1 --port -1 \
        --ports_file_dir "$dir/nats" --log "$dir/nats/log" &
    npid=$!
    BG_PIDS+=("$npid")
    for ((i = 0; i < 300; i++)); do
        [[ -s "$dir/nats/nats-server_$npid.ports" ]] && break
        sleep 0.1
    done
    local nats_url
    nats_url="$(sed -n 's/.*"nats":\["\([^"]*\)".*/\1/p' "$dir/nats/nats-server_$npid.ports")"
    [[ -n "$nats_url" ]] || ci_die "nats-server did not start: $(cat "$dir/nats/log")"
    # The webhook receiver: answers 200 and keeps every body.
    python3 - "$dir/hook" <<'EOF' &
import http.server, sys
out = sys.argv[1]
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(out + ".bodies", "ab") as f:
            f.write(body + b"\n")
        self.send_response(200)
        self.end_headers()
    def log_message(self, *a):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
with open(out + ".port.tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os
os.rename(out + ".port.tmp", out + ".port")
server.serve_forever()
EOF
    hpid=$!
    BG_PIDS+=("$hpid")
    for ((i = 0; i < 100; i++)); do
        [[ -s "$dir/hook.port" ]] && break
        sleep 0.1
    done
    [[ -s "$dir/hook.port" ]] || ci_die "the webhook receiver did not start"
    cat >"$dir/collector.toml" <<EOF
[server]
listen_tls = "127.0.0.1:0"
listen_plain = "127.0.0.1:0"
listen_admin = "127.0.0.1:0"
tls_cert = "tls.crt"
tls_key = "tls.key"
ready_file = "ready.json"
[keys]
private_key_files = ["collector.key"]
[store]
path = "store"
[fleet]
nats_url = "$nats_url"
collector_id = "strace"
[notify]
[[notify.receivers]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:$(cat "$dir/hook.port")/vantage"
[detector]
bucket_ms = 500
window_buckets = 4
warmup_windows = 12
lateness_ms = 5000
client_gap_ms = 5000
flush_grace_ms = 1500
retro_settle_ms = 2500
resolve_after = 3
net_tenure_ms = 3000
EOF
    ready="$dir/ready.json"
    strace -f -qq -o "$dir/trace" "$COLLECTOR" serve --config "$dir/collector.toml" \
        >"$dir/log" 2>&1 &
    spid=$!
    BG_PIDS+=("$spid")
    for ((i = 0; i < 300; i++)); do
        [[ -s "$ready" ]] && break
        kill -0 "$spid" 2>/dev/null || ci_die "collector under strace exited: $(cat "$dir/log")"
        sleep 0.1
    done
    [[ -s "$ready" ]] || ci_die "collector under strace not ready after 30 s"
    local tls plain admin
    tls="$(sed -n 's/.*"tls":"\([^"]*\)".*/\1/p' "$ready")"
    plain="$(sed -n 's/.*"plain":"\([^"]*\)".*/\1/p' "$ready")"
    admin="$(sed -n 's/.*"admin":"\([^"]*\)".*/\1/p' "$ready")"
    curl -fsS -o /dev/null --cacert "$dir/tls.crt" --resolve "localhost:${tls##*:}:127.0.0.1" \
        "https://localhost:${tls##*:}/healthz"
    local nel='[{"age":10,"type":"network-error","url":"https://shop.example/cart","body":{"sampling_fraction":1.0,"phase":"dns","type":"dns.name_not_resolved","elapsed_time":12}}]'
    [[ "$(curl -sS -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/reports+json' \
        --data-binary "$nel" "http://$plain/v1/nel")" == 2* ]] || ci_die "the NEL upload was refused"
    timeout 240 "$COLLECTOR" demo --short --collector "http://$plain" --key "$dir/collector.pub" \
        --dashboard "http://$admin/" >"$dir/demo.log" 2>&1 ||
        ci_die "demo against the collector under strace failed: $(tail -n 20 "$dir/demo.log")"
    grep -q '^RESOLVED ' "$dir/demo.log" || ci_die "no resolution in the demo: $(cat "$dir/demo.log")"
    for ((i = 0; i < 100; i++)); do
        grep -q '"fired"' "$dir/hook.bodies" 2>/dev/null && break
        sleep 0.1
    done
    grep -q '"fired"' "$dir/hook.bodies" 2>/dev/null ||
        ci_die "the webhook receiver got no firing notification"
    for path in / /metrics /v1/alerts /readyz; do
        curl -fsS -o /dev/null "http://$admin$path"
    done
    curl -fsS "http://$admin/metrics" | grep -q '^vantage_fleet_consumed_total [1-9]' ||
        ci_die "the collector under strace consumed nothing from the fleet stream"
    cpid="$(pgrep -P "$spid" | head -n 1)"
    [[ -n "$cpid" ]] || ci_die "no collector process under strace"
    kill -TERM "$cpid"
    wait "$spid" || ci_die "collector under strace did not exit cleanly: $(tail -n 5 "$dir/log")"
    kill -TERM "$npid" "$hpid" 2>/dev/null || true
    wait "$npid" "$hpid" 2>/dev/null || true
    systemd-analyze syscall-filter >"$dir/groups" 2>/dev/null
    python3 - "$DEPLOY/systemd/vantage-collector.service" "$dir/groups" "$dir/trace" <<'EOF'
import re, sys
unit, groups_file, trace = sys.argv[1:]
groups, cur = {}, None
for line in open(groups_file):
    s = line.strip()
    if not s or s.startswith("#"):
        continue
    if not line[0].isspace():
        cur = groups.setdefault(s, [])
    elif cur is not None:
        cur.append(s)
def expand(names):
    out = set()
    for n in names:
        out |= expand(groups[n]) if n.startswith("@") else {n}
    return out
allow, deny, families = set(), set(), set()
for line in open(unit):
    key, _, value = line.strip().partition("=")
    if key == "SystemCallFilter" and value:
        if value.startswith("~"):
            deny |= expand(value[1:].split())
        else:
            allow |= expand(value.split())
    elif key == "RestrictAddressFamilies":
        families |= set(value.split())
used, used_families = set(), set()
for line in open(trace):
    m = re.match(r"\d+\s+(?:<\.\.\. (\w+) resumed>|(\w+)\()", line)
    if m:
        used.add(m.group(1) or m.group(2))
    f = re.match(r"\d+\s+socket\((AF_\w+)", line)
    if f:
        used_families.add(f.group(1))
used.discard("execve")  # the exec of the service itself, before the filter applies
bad = sorted(s for s in used if s not in allow or s in deny)
bad_families = sorted(used_families - families)
print(f"  {len(used)} system calls, families {sorted(used_families)}")
for s in bad:
    print(f"  {s}: refused by SystemCallFilter=", file=sys.stderr)
for f in bad_families:
    print(f"  {f}: refused by RestrictAddressFamilies=", file=sys.stderr)
if len(used) < 20 or not allow:
    print("  too few system calls traced or no filter parsed (the check is broken)", file=sys.stderr)
    sys.exit(1)
sys.exit(1 if bad or bad_families else 0)
EOF
}

# The example configs name their secrets relative to the systemd credentials directory; the
# check puts freshly made ones next to a copy of each config.
check_collector_configs() {
    ci_log "vantage-collector check-config on deploy/collector/*.toml"
    local dir="$TMP/configs" cfg n=0
    mkdir -p "$dir"
    "$COLLECTOR" keygen --out "$dir/key" >/dev/null
    cp "$dir/key/collector.key" "$dir/collector.key"
    (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$dir/net-tag.secret")
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -keyout "$dir/tls.key" -out "$dir/tls.crt" -subj /CN=collector.vantage.test \
        -addext subjectAltName=DNS:collector.vantage.test 2>/dev/null
    for cfg in "$DEPLOY"/collector/*.toml; do
        cp "$cfg" "$dir/collector.toml"
        "$COLLECTOR" check-config --config "$dir/collector.toml" >/dev/null ||
            ci_die "$cfg: check-config failed"
        grep -q '^\[fleet\]' "$cfg" || ci_die "$cfg: no [fleet] section (the kit runs in fleet mode)"
        sed -n 's/^collector_id = "\(.*\)"/\1/p' "$cfg" >>"$dir/ids"
        ci_log "  ok $(basename "$cfg")"
        n=$((n + 1))
    done
    [[ $n -eq 3 ]] || ci_die "expected 3 example configs, found $n"
    [[ "$(sort -u "$dir/ids" | wc -l)" -eq 3 ]] ||
        ci_die "the example configs need three distinct fleet.collector_id values: $(tr '\n' ' ' <"$dir/ids")"
    # The check is not vacuous: without the key file the same config is refused (exit 2).
    rm "$dir/collector.key"
    local rc=0
    "$COLLECTOR" check-config --config "$dir/collector.toml" >/dev/null 2>&1 || rc=$?
    [[ $rc -eq 2 ]] || ci_die "check-config without collector.key exited $rc, expected 2"
}

check_scripts() {
    ci_log "bash -n and shellcheck"
    local s
    for s in deploy/local-fleet.sh .ci/install-deploy-tools.sh .ci/test-deploy.sh; do
        bash -n "$ROOT/$s"
    done
    (cd "$ROOT" && shellcheck -x deploy/local-fleet.sh .ci/install-deploy-tools.sh .ci/test-deploy.sh)
}

check_grafana() {
    ci_log "grafana dashboard JSON"
    python3 - "$DEPLOY/grafana/vantage.json" <<'EOF'
import json, sys
dash = json.load(open(sys.argv[1]))
ids = [p["id"] for p in dash["panels"]]
assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
for p in dash["panels"]:
    if p["type"] != "row":
        assert p.get("targets") and all(t.get("expr") for t in p["targets"]), p["title"]
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
assert dash["uid"] and dash["title"]
print(f"{len(ids)} panels")
EOF
}

# The agent tool for the failover: VANTAGE_AGENT, else the one the workspace tests built
# (all features), else a build of it.
check_local_fleet() {
    ci_log "deploy/local-fleet.sh --smoke"
    local agent="${VANTAGE_AGENT:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/vantage-agent}"
    if [[ ! -x "$agent" ]]; then
        (cd "$ROOT" && cargo build -q --locked -p vantage-agent --features cli --bin vantage-agent)
    fi
    VANTAGE_COLLECTOR="$COLLECTOR" VANTAGE_AGENT="$agent" timeout 180 bash "$DEPLOY/local-fleet.sh" --smoke
}

main() {
    local t0 start step
    t0=$(date +%s)
    need_tools
    TMP="$(mktemp -d)"
    trap cleanup EXIT
    collector_binary
    local steps=(check_prometheus check_metric_names check_alertmanager
        check_alertmanager_inhibition check_systemd check_syscalls check_collector_configs
        check_scripts check_grafana check_local_fleet)
    if [[ -n "${VANTAGE_DEPLOY_STEPS:-}" ]]; then
        read -ra steps <<<"$VANTAGE_DEPLOY_STEPS"
    fi
    for step in "${steps[@]}"; do
        declare -F "$step" >/dev/null || ci_die "no step $step"
        start=$(date +%s)
        "$step"
        ci_log "  ($step: $(ci_fmt_secs $(($(date +%s) - start))))"
    done
    ci_log "deploy kit ok in $(ci_fmt_secs $(($(date +%s) - t0)))"
}

main "$@"
