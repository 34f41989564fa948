#!/usr/bin/env bash
# The GStreamer plugin's suites:
#   gst_tests           GoogleTest + GstHarness, in one process (every tests/gst/*.cpp: one
#                       *_test.cpp per part of the plugin, and their main and helpers), run
#                       under GStreamer's leaks tracer
#   test-pipelines.sh   real two-process runs with gst-launch-1.0 and vstest-gst-run
# Runs what make builds (tests/need.sh): build/plain/tests/gst_tests, vstest-gst-run, the
# plugin and the CLI.
#
# Usage, from anywhere: tests/gst/run-gst-tests.sh [GTEST ARGS...]
#   (GTEST ARGS go to gst_tests; VSTEST_GST_SKIP_PIPELINES=1 runs gst_tests only)
set -u

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
die() { echo "run-gst-tests: $*" >&2; exit 1; }

. "$ROOT/tests/need.sh"
need build/lib/gstreamer-1.0/libgstvarslot.so build/bin/varslot build/plain/tests/gst_tests \
    build/tests/vstest-gst-run
PLUGIN_DIR=$ROOT/build/lib/gstreamer-1.0
VARSLOT=$ROOT/build/bin/varslot
OUT=$ROOT/build/tests
TEST_BIN=$ROOT/build/plain/tests/gst_tests
RUNNER=$OUT/vstest-gst-run

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
echo "# gst_tests (GoogleTest + GstHarness), under the leaks tracer"
# The leaks tracer g_warning()s at gst_deinit if any GstObject or GstMiniObject is left: the
# test counts that as a failure.
GST_TRACERS=leaks GST_DEBUG=GST_TRACER:7 GST_DEBUG_FILE=$OUT/gst-plugin-test-leaks.log \
    timeout -k 10 600 "$TEST_BIN" "$@"
rc=$?
left=$(compgen -G "/dev/shm/$VSTEST_GST_PREFIX-*"; compgen -G "/tmp/$VSTEST_GST_PREFIX-*")
if [ -n "$left" ]; then
    echo "# gst_tests left behind: $left"
    [ $rc -eq 0 ] && rc=1
fi
if [ $rc -eq 0 ]; then
    echo "ok - gst_tests"
else
    [ $rc -eq 124 ] && echo "# gst_tests timed out"
    grep -h -A3 'object-alive\|leak' "$OUT/gst-plugin-test-leaks.log" 2>/dev/null | head -40 | sed 's/^/#   /'
    echo "not ok - gst_tests (exit status $rc)"
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
