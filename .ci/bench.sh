#!/usr/bin/env bash
# The performance table in one run (issue 17): not part of the test step (.ci/test.sh), run it
# by hand on a quiet machine. Builds the release tools once, then measures and prints every
# row with its goal:
#
#   row                                   tool                                     how
#   ingest over TLS, CPU per envelope     vantage-loadgen --tls                    collector utime+stime (/proc/PID/stat)
#     vs HPKE open + verify, same run                                              CPU of one thread (/proc/thread-self/schedstat)
#     the open inside the collector                                                its vantage_envelope_open_cpu_seconds_total
#     the floor: a bare server, same stack                                         its utime+stime per request, right after
#   NEL /v1/nel, CPU per upload (3 rep.)  vantage-loadgen --nel                    collector utime+stime per stored upload
#     the floor, same uploads                                                      its utime+stime per upload, right after
#   collector memory after N reports      vantage-loadgen --rss-reports N          VmRSS (/proc/PID/status)
#   the same at the store's size bound    vantage-loadgen --store-max-mib 64       VmRSS, store.max_bytes enforced every 1 s
#   idle agent wakeups, empty queue       vantage-agent-bench --only idle          context switches of every thread
#   record() on the caller thread         vantage-agent-bench --only record        median and p99 of the call site
#   C library, stripped                   ffi/install.sh (release-ffi) + strip     bytes
#   wasm module, gzip -9                  .ci/build-wasm-pkg.sh                    bytes
#
#   bash .ci/bench.sh                 everything (about 20 minutes on 2 cores; the memory row
#                                     stores 2,000,000 reports, the bounded one 6,000,000)
#   bash .ci/bench.sh --quick         short phases, 200,000 reports for the memory row, 600,000
#                                     for the bounded one (16 MiB), 20 s idle
#   VANTAGE_BENCH_ONLY="ingest nel"   only some rows (ingest nel memory bounded idle record ffi wasm)
#   VANTAGE_BENCH_ROUNDS=N            rounds of the TLS and NEL phases (default 5, --quick 2): each
#                                     row of theirs is printed as the median of the rounds, with
#                                     their min and max (one round can be lucky or unlucky: these
#                                     machines swing by 10-20 % from one minute to the next)
#   VANTAGE_NEL_PEER=ADDR/PATH@PID    also measure another NEL collector already running here
#                                     (vantage-loadgen --nel-peer: 5 alternating rounds, the
#                                     ratio of the medians), e.g. 127.0.0.1:8080/nel@4242
#
# Every tool prints `bench-row: KEY VALUE UNIT` lines; this script gathers them (its log, with
# each tool's full output, is kept in $TARGET/bench/) and prints the table. CPU time per request
# is what the rows compare: wall-clock rates swing on shared machines, CPU time much less.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CI_LOG_TAG=bench
# shellcheck source=.ci/lib.sh
source "$ROOT/.ci/lib.sh"
cd "$ROOT"

QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
if [[ $# -gt 0 && "$1" != "--quick" ]]; then
    sed -n '2,36p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 2
fi
ONLY="${VANTAGE_BENCH_ONLY:-ingest nel memory bounded idle record ffi wasm}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT="$TARGET/bench"
mkdir -p "$OUT"
ROWS="$OUT/rows.txt"
: >"$ROWS"
if ((QUICK)); then
    DURATION=3 RSS_REPORTS=200000 IDLE_SECS=20 CALLS=20000
    BOUNDED_REPORTS=600000 BOUNDED_MIB=16 ROUNDS="${VANTAGE_BENCH_ROUNDS:-2}"
else
    DURATION=10 RSS_REPORTS=2000000 IDLE_SECS=60 CALLS=100000
    BOUNDED_REPORTS=6000000 BOUNDED_MIB=64 ROUNDS="${VANTAGE_BENCH_ROUNDS:-5}"
fi
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || ci_die "VANTAGE_BENCH_ROUNDS: expected a whole number of rounds from 1, got '$ROUNDS'"
wants() { [[ " $ONLY " == *" $1 "* ]]; }

ci_log "release build of the tools (vantage-collector, vantage-loadgen, vantage-agent-bench, vantage-agent-proc)"
cargo build --release --locked -q -p vantage-collector --bin vantage-collector
cargo build --release --locked -q -p vantage-tests --bin vantage-loadgen \
    --bin vantage-agent-bench --bin vantage-agent-proc
export VANTAGE_COLLECTOR_BIN="$TARGET/release/vantage-collector"

# run NAME COMMAND...: runs a tool with its output in $OUT/NAME.log, keeps its bench-rows
# (their keys prefixed with $ROW_PREFIX when set).
run() {
    local name="$1"
    shift
    ci_log "$name: $*"
    if ! "$@" >"$OUT/$name.log" 2>&1; then
        tail -n 20 "$OUT/$name.log" >&2
        ci_die "$name failed (log: $OUT/$name.log)"
    fi
    grep '^bench-row: ' "$OUT/$name.log" | sed "s/^bench-row: /${ROW_PREFIX:-}/" >>"$ROWS" || true
}

if wants ingest || wants nel || wants memory; then
    args=(--tls --duration "$DURATION")
    wants nel && args+=(--nel)
    if wants nel && [[ -n "${VANTAGE_NEL_PEER:-}" ]]; then
        args+=(--nel-peer "$VANTAGE_NEL_PEER")
    fi
    wants memory && args+=(--rss-reports "$RSS_REPORTS")
    run loadgen "$TARGET/release/vantage-loadgen" "${args[@]}"
fi
if wants ingest || wants nel; then
    # The other rounds of the TLS and NEL phases, each a fresh collector (rows round2_..).
    args=(--tls --duration "$DURATION")
    wants nel && args+=(--nel)
    for ((round = 2; round <= ROUNDS; round++)); do
        ROW_PREFIX="round${round}_" run "loadgen-round$round" "$TARGET/release/vantage-loadgen" "${args[@]}"
    done
fi
if wants bounded; then
    # A collector after months at its disk budget: the oldest reports deleted as new ones come.
    ROW_PREFIX=bounded_ run loadgen-bounded "$TARGET/release/vantage-loadgen" --duration 2 \
        --rss-reports "$BOUNDED_REPORTS" --rss-step $((BOUNDED_REPORTS / 6)) \
        --store-max-mib "$BOUNDED_MIB"
fi
if wants record; then
    run record "$TARGET/release/vantage-agent-bench" --only record --calls "$CALLS"
fi
if wants idle; then
    run idle "$TARGET/release/vantage-agent-bench" --only idle --idle-secs "$IDLE_SECS"
fi
if wants ffi; then
    prefix="$OUT/ffi"
    rm -rf "$prefix"
    run ffi bash ffi/install.sh --prefix "$prefix"
    strip --strip-all -o "$OUT/libvantage.so.stripped" "$prefix/lib/libvantage.so"
    echo "ffi_so_bytes $(stat -c %s "$OUT/libvantage.so.stripped") B" >>"$ROWS"
fi
if wants wasm; then
    run wasm bash .ci/build-wasm-pkg.sh
    pkg="${VANTAGE_WASM_PKG_DIR:-$TARGET/wasm-pkg}"
    echo "wasm_gzip_bytes $(gzip -9 <"$pkg/vantage_wasm_bg.wasm" | wc -c) B" >>"$ROWS"
fi

# The table: measure, figure now, goal (from the issue).
python3 - "$ROWS" "$QUICK" "$RSS_REPORTS" "$BOUNDED_REPORTS" "$BOUNDED_MIB" <<'EOF'
import re, statistics, sys
rows, rounds = {}, {}
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) >= 2:
        rows[parts[0]] = float(parts[1])
        m = re.fullmatch(r"round[0-9]+_(.+)", parts[0])
        rounds.setdefault(m.group(1) if m else parts[0], []).append(float(parts[1]))
quick, rss_reports = sys.argv[2] == "1", int(sys.argv[3])
bounded_reports, bounded_mib = int(sys.argv[4]), int(sys.argv[5])
def get(k, fmt="{:.0f}"):
    # A row measured in several rounds: the median, then (min-max, n); else its one figure.
    seen = rounds.get(k, [])
    if len(seen) > 1:
        lo, mid, hi = min(seen), statistics.median(seen), max(seen)
        return f"{fmt.format(mid)} ({fmt.format(lo)}-{fmt.format(hi)}, n={len(seen)})"
    return fmt.format(rows[k]) if k in rows else "not run"
table = [
    ("envelope ingest over TLS: collector CPU per envelope",
     get("ingest_tls_cpu_us_per_envelope") + " us", ""),
    ("  HPKE open + verify in the same run (CPU)", get("crypto_cpu_us_per_open") + " us", ""),
    ("  ratio: open+verify / ingest (CPU time)", get("ingest_tls_cpu_ratio_to_crypto", "{:.2f}") + "x", ">= 0.7x"),
    ("  open+verify inside the collector, same phase (CPU)", get("ingest_tls_open_cpu_us_per_envelope") + " us", ""),
    ("  ratio: that / ingest (the crypto's share of its CPU)", get("ingest_tls_open_share_of_cpu", "{:.2f}") + "x", ">= 0.7x"),
    ("  floor: a bare server on the same stack, same requests", get("ingest_tls_floor_cpu_us_per_request") + " us", ""),
    ("  collector beyond the floor and the open", get("ingest_tls_beyond_floor_and_open_us") + " us", ""),
    ("  by thread: tokio workers (the open included)", get("ingest_tls_workers_cpu_us_per_envelope") + " us", ""),
    ("  by thread: store writer", get("ingest_tls_writer_cpu_us_per_envelope") + " us", ""),
    ("NEL /v1/nel: collector CPU per upload (3 reports)", get("nel_cpu_us_per_upload") + " us", "<= 25 us"),
    ("  floor: a bare server on the same stack answering 204", get("nel_floor_cpu_us_per_upload", "{:.1f}") + " us", ""),
    ("  collector beyond the floor (parse, checks, store, sync)", get("nel_beyond_floor_us", "{:.1f}") + " us", ""),
    ("  by thread: tokio workers", get("nel_workers_cpu_us_per_upload", "{:.1f}") + " us", ""),
    ("  by thread: store writer", get("nel_writer_cpu_us_per_upload", "{:.1f}") + " us", ""),
    ("  the same, report ages spread over a minute", get("nel_spread_cpu_us_per_upload") + " us", "<= 25 us"),
    ("  another NEL collector, alternating (VANTAGE_NEL_PEER)", get("nel_peer_cpu_us_per_upload") + " us", ""),
    ("  ratio: vantage / that collector (medians)", get("nel_cpu_ratio_to_peer", "{:.2f}") + "x",
     "25 us was 1.09-1.19x a peer's 21-23 us"),
    (f"collector VmRSS after {rss_reports:,} reports", get("collector_rss_mib") + " MiB",
     "<= 160 MiB at 2M, flat after"),
    ("  growth over the second half", get("collector_rss_growth_mib_per_million", "{:.1f}") + " MiB/M", "flat"),
    ("  collector CPU per envelope there (plain HTTP)", get("collector_cpu_us_per_envelope_large_store") + " us", ""),
    (f"VmRSS after {bounded_reports:,} reports, store.max_bytes {bounded_mib} MiB",
     get("bounded_collector_rss_mib") + " MiB", "<= 160 MiB, flat"),
    ("  growth over the second half", get("bounded_collector_rss_growth_mib_per_million", "{:.1f}") + " MiB/M", "flat"),
    ("  store on disk at the end", get("bounded_store_disk_mib", "{:.0f}") + " MiB", ""),
    ("  its growth over the second half", get("bounded_store_disk_growth_mib_per_million", "{:.1f}") + " MiB/M", "flat"),
    ("idle agent: context switches, all threads", get("idle_agent_context_switches_per_min", "{:.1f}") + " /min", "0 /min"),
    ("record() at the call site: median", get("record_median_us", "{:.2f}") + " us", "<= 0.5 us"),
    ("record() at the call site: p99", get("record_p99_us", "{:.2f}") + " us", "<= 5 us"),
    ("C library, stripped (release-ffi)", get("ffi_so_bytes", "{:,.0f}") + " B", "<= 2,097,152 B"),
    ("wasm module, gzip -9", get("wasm_gzip_bytes", "{:,.0f}") + " B", "<= 60,000 B"),
]
w = max(len(r[0]) for r in table)
v = max(len(r[1]) for r in table)
print(f"\n{'measure':<{w}}  {'now':>{v}}  goal")
for name, now, goal in table:
    print(f"{name:<{w}}  {now:>{v}}  {goal}")
if any(len(seen) > 1 for seen in rounds.values()):
    print(f"\n(rows with n=: the median of that many rounds, then their min-max)")
if quick:
    print("\n(--quick: short phases; the memory row is not at 2M reports)")
EOF
ci_log "logs and rows in $OUT"
