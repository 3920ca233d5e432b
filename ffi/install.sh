#!/usr/bin/env bash
# Builds and installs the C library (libvantage) for C, C++, Swift and JVM apps:
#
#   bash ffi/install.sh --prefix /usr/local          # then: sudo ldconfig (system prefixes)
#   bash ffi/install.sh --prefix "$HOME/.local"      # then: export PKG_CONFIG_PATH=...
#   gcc app.c $(pkg-config --cflags --libs vantage)
#
# Installs, under PREFIX (or DESTDIR/PREFIX, for packagers):
#   lib/libvantage.so.X.Y.Z     the shared library, its SONAME libvantage.so.<ABI> (for 0.x
#                               versions the ABI is 0.<minor>: 0.1.0 and 0.1.7 are compatible,
#                               0.2.0 is not; from 1.0 it is the major version)
#   lib/libvantage.so.<ABI>     -> libvantage.so.X.Y.Z (what programs load at run time)
#   lib/libvantage.so           -> libvantage.so.<ABI> (what `-lvantage` links against)
#   lib/libvantage.a            the static library (link its Libs.private too: pkg-config --static)
#   include/vantage.h           the header
#   lib/pkgconfig/vantage.pc    pkg-config metadata (Version = the crate version)
#
# Options: --prefix DIR (required), --libdir NAME (default lib), --destdir DIR (or $DESTDIR),
# --no-build (install what target/release-ffi already holds), --tls13-only (leave TLS 1.2 out:
# 68 kB smaller, but a collector behind a front end without TLS 1.3 is then unreachable,
# docs/ffi.md), --panic-abort (profile release-ffi-abort, no unwinding: about 0.2 MB
# smaller, but a bug that panics inside the library aborts the app instead of returning
# VANTAGE_ERR_PANIC, docs/ffi.md), --stable-std (link the prebuilt standard library instead
# of rebuilding it for size: about 0.25 MB larger, no rust-src needed).
# By default the standard library is rebuilt with the library, for size (`-Z build-std` with
# std's `optimize_for_size`, unwinding kept so every export still catches panics): that needs
# rustup's rust-src component (added when missing) and RUSTC_BOOTSTRAP=1 for these two cargo
# runs only, on the stable toolchain. Needs cargo and the Rust toolchain of rust-toolchain /
# Cargo.toml (rust-version); CARGO_TARGET_DIR is honoured.
# Idempotent: running it again replaces the files. Exit 2 on a usage error, 1 on a failure.
set -euo pipefail

usage() {
    sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit "${1:-2}"
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX=""
LIBDIR=lib
DESTDIR="${DESTDIR:-}"
BUILD=1
FEATURES=()
PROFILE=release-ffi
STD=size
while (($#)); do
    case "$1" in
    --prefix)
        PREFIX="${2:?--prefix needs a directory}"
        shift 2
        ;;
    --prefix=*)
        PREFIX="${1#*=}"
        shift
        ;;
    --libdir)
        LIBDIR="${2:?--libdir needs a name}"
        shift 2
        ;;
    --destdir)
        DESTDIR="${2:?--destdir needs a directory}"
        shift 2
        ;;
    --no-build)
        BUILD=0
        shift
        ;;
    --tls13-only)
        FEATURES=(--no-default-features)
        shift
        ;;
    --panic-abort)
        PROFILE=release-ffi-abort
        shift
        ;;
    --stable-std)
        STD=prebuilt
        shift
        ;;
    -h | --help) usage 0 ;;
    *)
        echo "ffi/install.sh: unknown argument '$1' (see --help)" >&2
        exit 2
        ;;
    esac
done
if [[ -z "$PREFIX" ]]; then
    echo "ffi/install.sh: --prefix DIR is required (e.g. --prefix /usr/local)" >&2
    exit 2
fi
if [[ "$PREFIX" != /* ]]; then
    PREFIX="$(pwd)/$PREFIX"
fi

version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)"
if [[ ! "$version" =~ ^([0-9]+)\.([0-9]+)\.([0-9]+) ]]; then
    echo "ffi/install.sh: cannot read the workspace version from Cargo.toml ('$version')" >&2
    exit 1
fi
major="${BASH_REMATCH[1]}"
minor="${BASH_REMATCH[2]}"
if ((major == 0)); then abi="0.$minor"; else abi="$major"; fi
soname="libvantage.so.$abi"
real="libvantage.so.$version"

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT="$TARGET/$PROFILE"
if ((BUILD)); then
    cd "$ROOT"
    # One crate type per build: with several in one rustc run cargo cannot run LTO (the .so
    # comes out about 30 % larger). The SONAME goes on the cdylib only.
    if [[ $STD == size ]]; then
        # std rebuilt with the library: it joins the fat LTO and its size-tuned paths are
        # used. Artifacts of an explicit --target land under $TARGET/<host>/$PROFILE; they are
        # copied to $OUT, where --no-build and the callers look.
        if ! rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
            timeout 300 rustup component add rust-src || {
                echo "ffi/install.sh: the size build needs rustup's rust-src component (rustup component add rust-src), or pass --stable-std" >&2
                exit 1
            }
        fi
        host="$(rustc -vV | sed -n 's/^host: //p')"
        panic_crate=panic_unwind
        [[ $PROFILE == release-ffi-abort ]] && panic_crate=panic_abort
        std_args=(--target "$host" -Z "build-std=std,$panic_crate" -Z build-std-features=optimize_for_size)
        export RUSTC_BOOTSTRAP=1
    else
        std_args=()
    fi
    cargo rustc --locked --quiet -p vantage-ffi --lib --profile "$PROFILE" "${FEATURES[@]}" \
        "${std_args[@]}" --crate-type cdylib -- -C "link-arg=-Wl,-soname,$soname"
    cargo rustc --locked --quiet -p vantage-ffi --lib --profile "$PROFILE" "${FEATURES[@]}" \
        "${std_args[@]}" --crate-type staticlib
    unset RUSTC_BOOTSTRAP
    if [[ $STD == size ]]; then
        mkdir -p "$OUT"
        for f in libvantage.so libvantage.a; do
            cp "$TARGET/$host/$PROFILE/$f" "$OUT/$f.tmp"
            mv "$OUT/$f.tmp" "$OUT/$f"
        done
    fi
fi
for f in libvantage.so libvantage.a; do
    [[ -f "$OUT/$f" ]] || {
        echo "ffi/install.sh: $OUT/$f is missing (run without --no-build)" >&2
        exit 1
    }
done
if ! readelf -d "$OUT/libvantage.so" | grep -q "SONAME.*\[$soname\]"; then
    echo "ffi/install.sh: $OUT/libvantage.so has no SONAME $soname (built without this script?)" >&2
    exit 1
fi

lib="$DESTDIR$PREFIX/$LIBDIR"
inc="$DESTDIR$PREFIX/include"
mkdir -p "$lib/pkgconfig" "$inc"
install -m 0755 "$OUT/libvantage.so" "$lib/$real"
ln -sfn "$real" "$lib/$soname"
ln -sfn "$soname" "$lib/libvantage.so"
install -m 0644 "$OUT/libvantage.a" "$lib/libvantage.a"
install -m 0644 "$ROOT/ffi/include/vantage.h" "$inc/vantage.h"
# The .pc file names the final prefix (not DESTDIR: that is a staging root).
sed -e "s|@PREFIX@|$PREFIX|" -e "s|@LIBDIR@|$LIBDIR|" -e "s|@VERSION@|$version|" \
    "$ROOT/ffi/vantage.pc.in" >"$lib/pkgconfig/vantage.pc"
chmod 0644 "$lib/pkgconfig/vantage.pc"

echo "installed libvantage $version (SONAME $soname) under $DESTDIR$PREFIX:"
echo "  $LIBDIR/$real, $LIBDIR/$soname, $LIBDIR/libvantage.so, $LIBDIR/libvantage.a"
echo "  include/vantage.h, $LIBDIR/pkgconfig/vantage.pc"
case "$PREFIX" in
/usr | /usr/local) echo "run 'ldconfig' so the loader finds $soname" ;;
*)
    echo "build with: PKG_CONFIG_PATH=$PREFIX/$LIBDIR/pkgconfig gcc app.c \$(pkg-config --cflags --libs vantage)"
    echo "run with:   LD_LIBRARY_PATH=$PREFIX/$LIBDIR (or link with -Wl,-rpath,$PREFIX/$LIBDIR)"
    ;;
esac
