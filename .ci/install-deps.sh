#!/usr/bin/env bash
# Installs everything .ci/test.sh needs on a Debian machine of this project's kind.
#
# Idempotent: each component checks what is already there and skips it, so a second run takes
# seconds. Safe on a fresh machine where `apt-get update` has never run (it runs once, and only
# when a Debian package is missing). Nothing is set globally: the wasm build environment lives
# in .ci/wasm-env.sh, which scripts source in their own process.
#
# One function per component; add new ones (Chromium, Prometheus, ...) the same way and list
# them in main().
#
# Knobs (environment):
#   VANTAGE_WASM_ROUTE=A|B   force a wasm route (default: try A, fall back to B)
#   VANTAGE_CI_CACHE=DIR     where probes and stamps live (default ~/.cache/vantage-ci)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CI_LOG_TAG=install-deps
# shellcheck source=.ci/lib.sh
source "$ROOT/.ci/lib.sh"

CARGO_FUZZ_VERSION="${VANTAGE_CARGO_FUZZ_VERSION:-0.13.2}"
WASM_TARGET=wasm32-unknown-unknown

# ---------------------------------------------------------------------------------------------
# Rust toolchain components (rustfmt, clippy)

install_rust_components() {
    command -v rustup >/dev/null 2>&1 || ci_die "rustup not found; this machine kind ships it"
    local installed c
    installed="$(rustup component list --installed 2>/dev/null)"
    for c in rustfmt clippy; do
        if grep -q "^$c" <<<"$installed"; then
            ci_log "  rustup component $c already installed (skip)"
        else
            ci_log "  rustup component add $c"
            timeout 300 rustup component add "$c"
        fi
    done
}

# ---------------------------------------------------------------------------------------------
# wasm32-unknown-unknown: a wasm-capable clang for ring's C code, plus route A or B

# Installs clang-N (N = the LLVM major of the given rustc, else the newest packaged one) and
# sets WASM_CC to its name.
WASM_CC=
install_wasm_clang() {
    local major="$1"
    local wanted=()
    [[ -n "$major" ]] && wanted+=("clang-$major")
    wanted+=(clang-22 clang-21 clang-20 clang-19)
    apt_pick "${wanted[@]}" || { ci_warn "no clang package found (tried ${wanted[*]})"; return 1; }
    apt_install "$APT_PICKED" || return 1
    command -v "$APT_PICKED" >/dev/null || { ci_warn "$APT_PICKED not on PATH"; return 1; }
    "$APT_PICKED" --print-targets | grep -q wasm32 || { ci_warn "$APT_PICKED cannot target wasm32"; return 1; }
    WASM_CC="$APT_PICKED"
}

# Compiles a C function with clang for wasm32 and links it into a Rust cdylib with the rustup
# toolchain's own wasm32 std and rust-lld: the same pieces ring's build uses.
verify_wasm_route_a() {
    local cc="$1" dir
    dir="$(mktemp -d)"
    printf 'int vantage_probe_c(int x) { return 2 * x + 1; }\n' >"$dir/probe.c"
    cat >"$dir/probe.rs" <<'EOF'
unsafe extern "C" {
    fn vantage_probe_c(x: i32) -> i32;
}
#[unsafe(no_mangle)]
pub extern "C" fn vantage_probe(x: i32) -> i32 {
    let v: Vec<i32> = (0..x).collect();
    unsafe { vantage_probe_c(v.len() as i32) }
}
EOF
    "$cc" --target="$WASM_TARGET" -O2 -c "$dir/probe.c" -o "$dir/probe_c.o" \
        || { rm -rf "$dir"; return 1; }
    rustc --edition 2024 --target "$WASM_TARGET" --crate-type cdylib -O \
        -C "link-arg=$dir/probe_c.o" "$dir/probe.rs" -o "$dir/probe.wasm" \
        || { rm -rf "$dir"; return 1; }
    # A wasm module starts with "\0asm".
    [[ "$(head -c 4 "$dir/probe.wasm" | od -An -c | tr -d ' ')" == '\0asm' ]] \
        || { rm -rf "$dir"; return 1; }
    rm -rf "$dir"
}

install_wasm_route_a() {
    if rustup target list --installed 2>/dev/null | grep -qx "$WASM_TARGET"; then
        ci_log "  rustup target $WASM_TARGET already installed (skip)"
    else
        ci_log "  timeout 300 rustup target add $WASM_TARGET"
        timeout 300 rustup target add "$WASM_TARGET" || return 1
    fi
    install_wasm_clang "$(ci_llvm_major rustc)" || return 1
    ci_log "  verifying route A: C ($WASM_CC) + Rust ($(rustc -V)) -> wasm32 cdylib"
    verify_wasm_route_a "$WASM_CC" || return 1
    ci_log "  route A works"
}

# Debian's rustc-web (a newer rustc) with std built from rust-web-src by -Z build-std.
install_wasm_route_b() {
    local major cc ver_rustc ver_src stamp probe
    # set -e is off inside `f || ...`, so every step that can fail says `|| return 1`.
    apt_install rustc-web cargo-web rust-web-src || return 1
    ver_rustc="$(dpkg-query -W -f='${Version}' rustc-web)"
    ver_src="$(dpkg-query -W -f='${Version}' rust-web-src)"
    [[ "$ver_rustc" == "$ver_src" ]] \
        || ci_die "rustc-web ($ver_rustc) and rust-web-src ($ver_src) versions differ"
    [[ -d /usr/lib/rustlib/src/rust/library ]] || ci_die "rust-web-src has no library/ source"
    major="$(ci_llvm_major /usr/bin/rustc)"
    [[ -n "$major" ]] || ci_die "cannot read the LLVM version of /usr/bin/rustc"
    apt_install "lld-$major" "clang-$major" || return 1
    cc="clang-$major"

    stamp="$VANTAGE_CI_CACHE/wasm-route-b-ok-$ver_rustc"
    if [[ -f "$stamp" ]]; then
        ci_log "  route B already verified for rustc-web $ver_rustc (skip)"
        return 0
    fi
    ci_log "  verifying route B: -Z build-std with /usr/bin/rustc (first time takes minutes)"
    probe="$VANTAGE_CI_CACHE/wasm-probe-b"
    mkdir -p "$probe/src"
    cat >"$probe/Cargo.toml" <<'EOF'
[package]
name = "vantage-wasm-probe"
version = "0.0.0"
edition = "2021"
publish = false

[lib]
crate-type = ["cdylib"]

[workspace]
EOF
    cat >"$probe/src/lib.rs" <<'EOF'
#[no_mangle]
pub extern "C" fn vantage_probe(x: i32) -> i32 {
    let v: Vec<i32> = (0..x).collect();
    v.len() as i32
}
EOF
    printf 'int vantage_probe_c(int x) { return x; }\n' >"$probe/probe.c"
    "$cc" --target="$WASM_TARGET" -O2 -c "$probe/probe.c" -o "$probe/probe_c.o" || return 1
    (
        cd "$probe"
        RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
            CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="wasm-ld-$major" \
            CC_wasm32_unknown_unknown="$cc" \
            /usr/bin/cargo build --release --target "$WASM_TARGET" -Z build-std=std,panic_abort -q
    ) || return 1
    [[ -f "$probe/target/$WASM_TARGET/release/vantage_wasm_probe.wasm" ]] || return 1
    touch "$stamp"
    ci_log "  route B works"
}

install_wasm() {
    local route="${VANTAGE_WASM_ROUTE:-}"
    mkdir -p "$VANTAGE_CI_CACHE"
    case "$route" in
    A | a)
        install_wasm_route_a || ci_die "wasm route A failed (forced by VANTAGE_WASM_ROUTE)"
        route=A
        ;;
    B | b)
        install_wasm_route_b || ci_die "wasm route B failed (forced by VANTAGE_WASM_ROUTE)"
        route=B
        ;;
    "")
        if install_wasm_route_a; then
            route=A
        else
            ci_warn "wasm route A (rustup target) failed; falling back to route B (Debian rustc-web)"
            install_wasm_route_b || ci_die "wasm route B failed too"
            route=B
        fi
        ;;
    *) ci_die "VANTAGE_WASM_ROUTE must be A or B, not '$route'" ;;
    esac
    echo "$route" >"$VANTAGE_CI_CACHE/wasm-route"
    ci_log "  wasm route in use: $route (recorded in $VANTAGE_CI_CACHE/wasm-route)"
}

# ---------------------------------------------------------------------------------------------
# cargo-fuzz (libFuzzer); runs on the stable toolchain with RUSTC_BOOTSTRAP=1

install_cargo_fuzz() {
    local dir
    if cargo fuzz --version >/dev/null 2>&1; then
        ci_log "  $(cargo fuzz --version) already installed (skip)"
    else
        ci_log "  cargo install cargo-fuzz --version $CARGO_FUZZ_VERSION (about a minute)"
        cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --quiet
    fi
    # cargo fuzz builds with -Zsanitizer=address; stable accepts -Z only with RUSTC_BOOTSTRAP=1,
    # and needs the ASan runtime that rustup's x86_64 rust-std ships.
    dir="$(mktemp -d)"
    echo 'fn main() { let v = vec![1u8; 4]; std::process::exit(i32::from(v[3]) - 1) }' >"$dir/m.rs"
    if ! { RUSTC_BOOTSTRAP=1 rustc -Zsanitizer=address --target x86_64-unknown-linux-gnu \
        "$dir/m.rs" -o "$dir/m" && "$dir/m"; }; then
        rm -rf "$dir"
        ci_die "rustc -Zsanitizer=address (RUSTC_BOOTSTRAP=1) does not work here"
    fi
    rm -rf "$dir"
    ci_log "  RUSTC_BOOTSTRAP=1 rustc -Zsanitizer=address works on $(rustc -V)"
}

# ---------------------------------------------------------------------------------------------
# Components with their own scripts (each idempotent, each runnable on its own).

install_netns_tools() {
    bash "$ROOT/.ci/install-netns-tools.sh"
}

install_ip_data() {
    bash "$ROOT/.ci/install-ip-data.sh"
}

install_chromium() {
    bash "$ROOT/.ci/install-chromium.sh"
}

install_alertmanager() {
    bash "$ROOT/.ci/install-alertmanager.sh"
}

install_deploy_tools() {
    bash "$ROOT/.ci/install-deploy-tools.sh"
}

install_nats() {
    bash "$ROOT/.ci/install-nats.sh"
}

install_wasm_tools() {
    bash "$ROOT/.ci/install-wasm-tools.sh"
}

# ---------------------------------------------------------------------------------------------

run_component() {
    local name="$1" start
    start=$(date +%s)
    ci_log "== $name"
    "$name"
    ci_log "   $name done in $(ci_fmt_secs $(($(date +%s) - start)))"
}

main() {
    local start
    start=$(date +%s)
    ci_log "installing test dependencies (cache: $VANTAGE_CI_CACHE)"
    run_component install_rust_components
    run_component install_wasm
    run_component install_cargo_fuzz
    run_component install_netns_tools
    run_component install_ip_data
    run_component install_chromium
    run_component install_alertmanager
    run_component install_wasm_tools
    run_component install_deploy_tools
    run_component install_nats
    ci_log "all dependencies present ($(ci_fmt_secs $(($(date +%s) - start))))"
}

main "$@"
