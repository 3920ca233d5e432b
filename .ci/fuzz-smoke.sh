#!/usr/bin/env bash
# Builds every cargo-fuzz target in collector/fuzz and runs each for a few seconds. Fails if a
# target crashes, leaks, times out or runs out of memory (libFuzzer exits non-zero and writes
# the input under collector/fuzz/artifacts/<target>/).
#
#   VANTAGE_FUZZ_SECS=N   seconds per target (default 20)
#   VANTAGE_FUZZ_PROFILE=dev|release   how the targets are built (default dev: unoptimised with
#                         debug assertions and overflow checks, crypto and CBOR crates optimised
#                         (collector/fuzz/Cargo.toml); about a third of release's build time
#                         here, at 500-900 instead of 13-17k executions per second. A smoke run
#                         in CI is bounded by the build; longer fuzzing should use release.)
#   .ci/fuzz-smoke.sh [TARGET...]   only these targets
#
# Seeds: the golden vectors in tests/vectors/ are written into collector/fuzz/corpus/<target>/
# (git-ignored, where new inputs also go); files in collector/fuzz/seeds/<target>/, if present,
# are read as an extra corpus.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT/collector"
SECS="${VANTAGE_FUZZ_SECS:-20}"
case "${VANTAGE_FUZZ_PROFILE:-dev}" in
dev) mode=(--dev) ;;
release) mode=(--release --debug-assertions) ;;
*)
    echo "[fuzz-smoke] VANTAGE_FUZZ_PROFILE must be dev or release, not ${VANTAGE_FUZZ_PROFILE}" >&2
    exit 2
    ;;
esac

# cargo fuzz builds with -Zsanitizer=address and friends; the stable compiler accepts -Z flags
# only with RUSTC_BOOTSTRAP=1. (Harmless on a nightly compiler.)
if ! rustc -V | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi
cargo fuzz --version >/dev/null 2>&1 || {
    echo "[fuzz-smoke] cargo-fuzz missing: run .ci/install-deps.sh" >&2
    exit 1
}

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi
[[ ${#targets[@]} -gt 0 ]] || { echo "[fuzz-smoke] no fuzz targets found" >&2; exit 1; }

echo "[fuzz-smoke] $(rustc -V), RUSTC_BOOTSTRAP=${RUSTC_BOOTSTRAP:-unset}; targets: ${targets[*]}"
echo "[fuzz-smoke] building (${VANTAGE_FUZZ_PROFILE:-dev} + ASan)"
if [[ $# -gt 0 ]]; then
    for t in "${targets[@]}"; do
        cargo fuzz build "${mode[@]}" --fuzz-dir fuzz "$t"
    done
else
    cargo fuzz build "${mode[@]}" --fuzz-dir fuzz
fi

# Seeds from the wire protocol's golden vectors (tests/vectors/*.txt, lines `name = hex`), so
# that mutation starts from envelopes that really open instead of from random bytes.
seed_from_vectors() {
    local t="$1" corpus="$2" f name hex
    local names=()
    case "$t" in
    envelope_decode | open) names=(envelope) ;;
    batch_decode) names=(batch signed_batch) ;;
    esac
    for f in "$ROOT"/tests/vectors/*.txt; do
        [[ -f "$f" ]] || continue
        for name in "${names[@]}"; do
            hex="$(sed -n "s/^$name = \([0-9a-fA-F]*\)\$/\1/p" "$f")"
            [[ -n "$hex" ]] || continue
            # shellcheck disable=SC2001 # hex pairs to \xHH escapes for printf %b
            printf '%b' "$(sed 's/../\\x&/g' <<<"$hex")" \
                >"$corpus/vector-$(basename "$f" .txt)-$name"
        done
    done
}

failed=()
for t in "${targets[@]}"; do
    corpus="fuzz/corpus/$t"
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    seed_from_vectors "$t" "$corpus"
    extra=()
    [[ -d "fuzz/seeds/$t" ]] && extra+=("fuzz/seeds/$t")
    before="$(find "fuzz/artifacts/$t" -type f ! -name smoke.log | sort)"
    echo "[fuzz-smoke] running $t for ${SECS}s"
    rc=0
    # libFuzzer prints a line per new input; keep that in a log, show it only on failure.
    log="fuzz/artifacts/$t/smoke.log"
    cargo fuzz run "${mode[@]}" --fuzz-dir fuzz "$t" "$corpus" "${extra[@]}" -- \
        -max_total_time="$SECS" -rss_limit_mb=2048 -print_final_stats=1 </dev/null >"$log" 2>&1 ||
        rc=$?
    grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' "$log" | sed "s/^/[fuzz-smoke]   $t: /" || true
    after="$(find "fuzz/artifacts/$t" -type f ! -name smoke.log | sort)"
    new="$(comm -13 <(echo "$before") <(echo "$after") | sed '/^$/d')"
    if [[ $rc -ne 0 || -n "$new" ]]; then
        echo "[fuzz-smoke] FAILED: $t (exit $rc); the last lines of $log:" >&2
        tail -n 40 "$log" >&2
        while IFS= read -r a; do
            [[ -n "$a" ]] && echo "[fuzz-smoke]   reproducer: collector/$a" >&2
        done <<<"$new"
        failed+=("$t")
    else
        echo "[fuzz-smoke] ok: $t"
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "[fuzz-smoke] ${#failed[@]} target(s) failed: ${failed[*]}" \
        "(reproduce: cd collector && RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET ARTIFACT)" >&2
    exit 1
fi
echo "[fuzz-smoke] all ${#targets[@]} targets ran ${SECS}s without a crash"
