#!/usr/bin/env bash
# Builds the browser package: cargo build --release for wasm32 (by the route .ci/wasm-env.sh
# finds) -> wasm-bindgen --target web -> wasm-opt -Oz (binaryen 132 from npm) -> the package
# folder (default target/wasm-pkg; override with VANTAGE_WASM_PKG_DIR), with vantage.js,
# package.json, README.md and the example page from wasm/pkg-src. Prints raw and gzip -9 sizes
# of the module and its JavaScript. Runs .ci/install-wasm-tools.sh first (idempotent: a quick
# check when the tools are there) unless VANTAGE_WASM_NO_INSTALL=1.
#
# By default std is rebuilt for size (-Z build-std with optimize_for_size and
# -Cpanic=immediate-abort; RUSTC_BOOTSTRAP on route A, which then needs the rust-src
# component; route B builds std anyway): about 14% smaller gzipped. Panics then abort without
# a message, which loses nothing on wasm32-unknown-unknown: std's stderr discards the message
# and the package sets no panic hook, so a page sees `RuntimeError: unreachable` either way.
# The same build passes -Zlocation-detail=none (panic locations hold no file, line or column:
# nothing reads them once a panic aborts without a message) and -Zfmt-debug=shallow (a derived
# `Debug` prints only the type's name): together about 1,450 B smaller gzipped. The only
# `Debug` code left in the module is *ring*'s `FixedSliceRandom`, kept by the `SecureRandom`
# vtable that needs it as a supertrait and never called; a `{:?}` that reaches JavaScript would
# need this flag revisited (README "Size").
# VANTAGE_WASM_MIN=0 builds with the prebuilt std instead (stable features only on route A).
#
# VANTAGE_WASM_BUILD_DIR overrides the cargo target dir (default: the one .ci/wasm-env.sh picks;
# the size build appends -min). VANTAGE_WASM_NAMES=1 keeps the function names in the module
# (wasm-opt -g) for size analysis (`twiggy top|dominators|monos`); never ship that build.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CI_LOG_TAG=build-wasm-pkg
# shellcheck source=.ci/wasm-env.sh
source .ci/wasm-env.sh

OUT="${VANTAGE_WASM_PKG_DIR:-$ROOT/target/wasm-pkg}"
WASM_BINDGEN="$VANTAGE_CI_CACHE/tools/bin/wasm-bindgen"
WASM_OPT="$ROOT/wasm/tools/node_modules/.bin/wasm-opt"
if [[ "${VANTAGE_WASM_NO_INSTALL:-0}" != 1 ]] && { [[ ! -x "$WASM_BINDGEN" ]] || [[ ! -x "$WASM_OPT" ]]; }; then
    ci_log "wasm tools missing: running .ci/install-wasm-tools.sh"
    bash "$ROOT/.ci/install-wasm-tools.sh"
    # shellcheck source=.ci/wasm-env.sh
    source .ci/wasm-env.sh
fi
[[ -x "$WASM_BINDGEN" ]] || ci_die "$WASM_BINDGEN missing: run .ci/install-wasm-tools.sh"
[[ -x "$WASM_OPT" ]] || ci_die "$WASM_OPT missing: run .ci/install-wasm-tools.sh"

target_dir="${VANTAGE_WASM_BUILD_DIR:-$VANTAGE_WASM_TARGET_DIR}"
ci_log "route $VANTAGE_WASM_ROUTE, target dir $target_dir, package $OUT"
extra=("${VANTAGE_WASM_CARGO_ARGS[@]}")
if [[ "${VANTAGE_WASM_MIN:-1}" == 1 ]]; then
    if [[ "$VANTAGE_WASM_ROUTE" == A ]]; then
        rustup component list --installed | grep -q '^rust-src' || timeout 300 rustup component add rust-src
        extra=(-Z "build-std=std,panic_abort")
    fi
    extra+=(-Z build-std-features=optimize_for_size)
    export RUSTC_BOOTSTRAP=1
    export RUSTFLAGS="${RUSTFLAGS:-} -Zunstable-options -Cpanic=immediate-abort -Zlocation-detail=none -Zfmt-debug=shallow"
    # Other flags, other artifacts: keep them apart.
    target_dir="$target_dir-min"
    ci_log "size build (build-std, immediate-abort) in $target_dir"
fi
# Size-tuned release profile for this build only (the workspace profile stays as it is).
# strip stays off: wasm-bindgen needs its custom sections; wasm-opt strips afterwards.
CARGO_PROFILE_RELEASE_OPT_LEVEL=z \
    CARGO_PROFILE_RELEASE_LTO=true \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
    CARGO_PROFILE_RELEASE_PANIC=abort \
    CARGO_PROFILE_RELEASE_STRIP=false \
    CARGO_PROFILE_RELEASE_DEBUG=false \
    "$VANTAGE_WASM_CARGO" build -p vantage-wasm --release --locked \
    --target wasm32-unknown-unknown --target-dir "$target_dir" "${extra[@]}"

rm -rf "$OUT"
mkdir -p "$OUT"
"$WASM_BINDGEN" --target web --out-dir "$OUT" --out-name vantage_wasm \
    "$target_dir/wasm32-unknown-unknown/release/vantage_wasm.wasm"
strip=(--strip-debug --strip-producers)
if [[ "${VANTAGE_WASM_NAMES:-0}" == 1 ]]; then
    strip=(-g --strip-producers)
    ci_log "keeping the name section (analysis build)"
fi
# The features rustc enables by default for wasm32-unknown-unknown. --flatten --rereloop
# first rebuilds the control flow of every function (binaryen's Relooper), which then shrinks
# further under -Oz (about 370 B of gzip, README "Size"); --converge repeats -Oz while it still
# shrinks; --zero-filled-memory holds because the module defines its own memory (fresh pages
# are zero) and --low-memory-unused because rustc's data and stack start at 1 MiB.
# --remove-exports drops the exports *ring* gives its Rust fallbacks for its C code
# (`ring_core_*`, e.g. bn_mul_mont, which only RSA and P-256 call); JavaScript calls none of them,
# and without the export the unused ones go (about 380 B gzip).
"$WASM_OPT" --remove-exports --pass-arg='remove-exports@ring_core_*' \
    --flatten --rereloop -Oz --converge --zero-filled-memory --low-memory-unused "${strip[@]}" \
    --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
    --enable-nontrapping-float-to-int --enable-reference-types --enable-multivalue \
    -o "$OUT/vantage_wasm_bg.wasm" "$OUT/vantage_wasm_bg.wasm"
cp wasm/pkg-src/vantage.js wasm/pkg-src/vantage.d.ts wasm/pkg-src/README.md "$OUT/"
mkdir -p "$OUT/example"
cp wasm/pkg-src/example/index.html "$OUT/example/"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
sed "s/@VERSION@/$version/" wasm/pkg-src/package.json >"$OUT/package.json"

size_line() {
    local raw gz
    raw=$(cat "$@" | wc -c)
    gz=$(cat "$@" | gzip -9 | wc -c)
    printf '%-44s raw %7d B   gzip -9 %6d B\n' "$*" "$raw" "$gz"
}
cd "$OUT"
ci_log "sizes (gzip -9 of the concatenation):"
size_line vantage_wasm_bg.wasm
size_line vantage_wasm.js
size_line vantage.js
size_line vantage_wasm_bg.wasm vantage_wasm.js vantage.js
