#!/usr/bin/env bash
# Builds the JVM binding (issue 19): libvantage with its JNI glue (cargo feature `jni`) and
# vantage.jar (the Java sources of ffi/java/src/main, `javac --release 11`, then `jar`), with
# Debian's JDK (.ci/install-ffi-tools.sh installs openjdk-17-jdk-headless). No Gradle or Maven:
# javac and jar only.
#
#   bash .ci/build-jvm.sh                       profile release-ffi, into $TARGET/jvm
#   bash .ci/build-jvm.sh --profile dev --out DIR --with-tests
#
# Output in the out dir: libvantage.so, vantage.jar, and with --with-tests test-classes/ (the
# test program ffi/java/src/test, which tests/tests/ffi_jvm.rs runs against a collector).
# CARGO_TARGET_DIR is honoured (default: target/).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CI_LOG_TAG=build-jvm
# shellcheck source=.ci/lib.sh
source "$ROOT/.ci/lib.sh"

PROFILE=release-ffi
OUT=
TESTS=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --profile) PROFILE="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --with-tests) TESTS=1; shift ;;
        *) ci_die "unknown argument $1 (see the comment at the top of $0)" ;;
    esac
done
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
PROFILE_DIR="$TARGET/$([[ $PROFILE == dev ]] && echo debug || echo "$PROFILE")"
OUT="${OUT:-$TARGET/jvm}"

command -v javac >/dev/null 2>&1 || ci_die "no javac: run .ci/install-ffi-tools.sh"
JAVA_BIN="$(dirname "$(readlink -f "$(command -v javac)")")"

cd "$ROOT"
start=$(date +%s)
if [[ $PROFILE == release-ffi ]]; then
    # One crate type, so cargo runs LTO (see .ci/test-ffi.sh).
    cargo rustc --locked --quiet -p vantage-ffi --lib --profile "$PROFILE" --features jni \
        --crate-type cdylib
else
    cargo build --locked --quiet -p vantage-ffi --lib --profile "$PROFILE" --features jni
fi
mkdir -p "$OUT"
# A copy: a later build of the C library without the feature writes the same file name.
cp "$PROFILE_DIR/libvantage.so" "$OUT/libvantage.so.tmp"
mv "$OUT/libvantage.so.tmp" "$OUT/libvantage.so"

classes="$OUT/classes"
rm -rf "$classes" "$OUT/test-classes"
mapfile -t sources < <(find ffi/java/src/main/java -name '*.java' | sort)
"$JAVA_BIN/javac" --release 11 -Xlint:all -Werror -encoding UTF-8 -d "$classes" "${sources[@]}"
"$JAVA_BIN/jar" --create --file "$OUT/vantage.jar" -C "$classes" .
if [[ $TESTS == 1 ]]; then
    mapfile -t tests < <(find ffi/java/src/test/java -name '*.java' | sort)
    "$JAVA_BIN/javac" --release 17 -Xlint:all -Werror -encoding UTF-8 -cp "$OUT/vantage.jar" \
        -d "$OUT/test-classes" "${tests[@]}"
fi
ci_log "$OUT: libvantage.so ($(stat -c %s "$OUT/libvantage.so") bytes, profile $PROFILE), vantage.jar ($(stat -c %s "$OUT/vantage.jar") bytes) in $(ci_fmt_secs $(($(date +%s) - start)))"
