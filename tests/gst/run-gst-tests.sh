#!/usr/bin/env bash
# The GStreamer plugin's suites:
#   plugin_test         GoogleTest + GstHarness, in one process (every tests/gst/*.cpp: one
#                       *_test.cpp per part of the plugin, and their main and helpers), run
#                       under GStreamer's leaks tracer
#   test-pipelines.sh   real two-process runs with gst-launch-1.0 and vstest-gst-run
# Builds into build/tests/ what it needs (gtest once, reusing build/plain/obj/gtest-all.o when
# present; plugin_test; vstest-gst-run). Needs `make all` first (the plugin, the CLI).
#
# Usage, from anywhere: tests/gst/run-gst-tests.sh [GTEST ARGS...]
#   (GTEST ARGS go to plugin_test; VSTEST_GST_SKIP_PIPELINES=1 runs plugin_test only)
set -u

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
die() { echo "run-gst-tests: $*" >&2; exit 1; }

PLUGIN_DIR=$ROOT/build/lib/gstreamer-1.0
VARSLOT=$ROOT/build/bin/varslot
OUT=$ROOT/build/tests
GTEST_SRC=/usr/src/googletest/googletest
for f in "$PLUGIN_DIR/libgstvarslot.so" "$VARSLOT"; do
    [ -e "$f" ] || die "missing $f: run 'make all' first"
done
[ -f "$GTEST_SRC/src/gtest-all.cc" ] || die "GoogleTest sources not found in $GTEST_SRC"
PKGS="gstreamer-1.0 gstreamer-check-1.0 gstreamer-app-1.0 gstreamer-video-1.0"
# shellcheck disable=SC2086
pkg-config --exists $PKGS || die "pkg-config cannot find: $PKGS"

# ---- build (each step only when its output is missing or stale) ----
mkdir -p "$OUT/obj"
. "$ROOT/tests/lib.sh" # stale, build
CXXFLAGS=(-O1 -g -std=c++17 -isystem "$GTEST_SRC/include")
GTEST_O=$ROOT/build/plain/obj/gtest-all.o # made by make check-core with the same gtest
if [ ! -e "$GTEST_O" ]; then
    GTEST_O=$OUT/obj/gtest-all-gsttest.o
    if stale "$GTEST_O" "$GTEST_SRC/src/gtest-all.cc"; then
        build "$GTEST_O" g++ "${CXXFLAGS[@]}" -I"$GTEST_SRC" -c "$GTEST_SRC/src/gtest-all.cc" \
            -o "$GTEST_O.tmp" && mv "$GTEST_O.tmp" "$GTEST_O"
    fi
fi
# shellcheck disable=SC2086
GST_CFLAGS=$(pkg-config --cflags $PKGS)
# shellcheck disable=SC2086
GST_LIBS=$(pkg-config --libs $PKGS)
TEST_BIN=$OUT/gst_plugin_test
LIBVARSLOT=$ROOT/build/lib/libvarslot.a # fake producers are real peers of real segments
WIRE_O=$OUT/obj/wire-gsttest.o           # and speak the plugin's own wire code
if stale "$WIRE_O" gst-plugin/protocol.c gst-plugin/protocol.h; then
    # shellcheck disable=SC2086
    build "$WIRE_O" gcc -O1 -g -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror $GST_CFLAGS \
        -c gst-plugin/protocol.c -o "$WIRE_O"
fi
TEST_SRCS=(tests/gst/*.cpp)
if stale "$TEST_BIN" "${TEST_SRCS[@]}" tests/gst/*.h "$GTEST_O" "$LIBVARSLOT" "$WIRE_O"; then
    # shellcheck disable=SC2086
    build "$TEST_BIN" g++ "${CXXFLAGS[@]}" -Wall -Wextra -Werror -Wno-missing-field-initializers \
        -DVSTEST_PLUGIN_DIR="\"$PLUGIN_DIR\"" -DVSTEST_VARSLOT_CLI="\"$VARSLOT\"" \
        -DVSTEST_REGISTRY="\"$OUT/gst-registry-unit.bin\"" -I"$ROOT/core/include" \
        $GST_CFLAGS "${TEST_SRCS[@]}" "$WIRE_O" "$GTEST_O" "$LIBVARSLOT" -o "$TEST_BIN" $GST_LIBS -pthread
fi
RUNNER=$OUT/vstest-gst-run
if stale "$RUNNER" tests/gst/run-pipeline.c; then
    # shellcheck disable=SC2046
    build "$RUNNER" gcc -O2 -g -std=gnu11 -Wall -Wextra -Werror tests/gst/run-pipeline.c \
        -o "$RUNNER" $(pkg-config --cflags --libs gstreamer-1.0)
fi

# ---- run ----
# Nothing of the caller's environment may change what is tested.
for v in $(compgen -e | grep -E '^(VARSLOT_|GST_)'); do unset "$v"; done
unset LD_PRELOAD
export GST_PLUGIN_PATH=$PLUGIN_DIR
export GST_REGISTRY=$OUT/gst-registry-unit.bin
export VSTEST_VARSLOT_CLI=$VARSLOT

# The test names its segments and sockets with this prefix; whatever a crash leaves goes.
export VSTEST_GST_PREFIX="vstest-gstu-$$"
cleanup() {
    local f
    for f in /dev/shm/"$VSTEST_GST_PREFIX"-*; do
        [ -e "$f" ] && { timeout 30 "$VARSLOT" rm "/${f#/dev/shm/}" >/dev/null 2>&1 || rm -f "$f"; }
    done
    rm -f /tmp/"$VSTEST_GST_PREFIX"-*.sock
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

FAILED=0
echo "# plugin_test (GoogleTest + GstHarness), under the leaks tracer"
# The leaks tracer g_warning()s at gst_deinit if any GstObject or GstMiniObject is left: the
# test counts that as a failure.
GST_TRACERS=leaks GST_DEBUG=GST_TRACER:7 GST_DEBUG_FILE=$OUT/gst-plugin-test-leaks.log \
    timeout -k 10 600 "$TEST_BIN" "$@"
rc=$?
left=$(compgen -G "/dev/shm/$VSTEST_GST_PREFIX-*"; compgen -G "/tmp/$VSTEST_GST_PREFIX-*")
if [ -n "$left" ]; then
    echo "# plugin_test left behind: $left"
    [ $rc -eq 0 ] && rc=1
fi
if [ $rc -eq 0 ]; then
    echo "ok - plugin_test"
else
    [ $rc -eq 124 ] && echo "# plugin_test timed out"
    grep -h -A3 'object-alive\|leak' "$OUT/gst-plugin-test-leaks.log" 2>/dev/null | head -40 | sed 's/^/#   /'
    echo "not ok - plugin_test (exit status $rc)"
    FAILED=$((FAILED + 1))
fi

if [ "${VSTEST_GST_SKIP_PIPELINES:-0}" != 1 ]; then
    echo "# test-pipelines.sh (two processes)"
    if VSTEST_GST_RUN=$RUNNER timeout -k 10 1500 tests/gst/test-pipelines.sh; then
        echo "ok - test-pipelines.sh"
    else
        echo "not ok - test-pipelines.sh"
        FAILED=$((FAILED + 1))
    fi
fi

if [ $FAILED -eq 0 ]; then
    echo "# run-gst-tests: all passed"
else
    echo "# run-gst-tests: $FAILED suite(s) failed"
fi
[ $FAILED -eq 0 ]
