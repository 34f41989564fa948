#!/usr/bin/env bash
# Runs the shim's suite (tests/preload/shim/) under libvarslot-preload.so, once per
# configuration, each with a fresh segment:
#   default     VARSLOT_MIN_SIZE=64K, VARSLOT_CALLERS=libvstest-caller.so, default classes
#   libc        the same with VARSLOT_FALLBACK=libc
#   tiny        VARSLOT_CLASSES=64K:2, only the tests written for it (pool exhaustion, routing
#               by size, bad values); its exit stats line must show fallback >= 6
#   share       the default with VARSLOT_FORK=share, only the fork tests
# After each run: the process's stats line (routed > 0), and `varslot stat --json` showing
# no allocated slot and no peer once the test process has exited. Segments are removed.
#
# Runs what make builds (tests/need.sh): the suite build/plain/tests/shim_tests
# (tests/preload/shim/), the caller library build/tests/libvstest-caller.so, the peer program
# build/tests/vstest-peer, the shim and the CLI.
#
# Usage, from anywhere: tests/preload/run-shim-tests.sh [GTEST ARGS...]
#   GTEST ARGS (e.g. --gtest_filter=Fork.*) go to every configuration but tiny, which is then
#   skipped; in share they replace its own filter. VSTEST_CONFIGS="share libc" runs only the
#   configurations named.
set -u

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
die() { echo "run-shim-tests: $*" >&2; exit 1; }

. "$ROOT/tests/need.sh"
need build/lib/libvarslot-preload.so build/bin/varslot build/plain/tests/shim_tests \
    build/tests/libvstest-caller.so build/tests/vstest-peer
SHIM=${VSTEST_SHIM:-$ROOT/build/lib/libvarslot-preload.so}  # VSTEST_SHIM: test another build of the shim
[ -e "$SHIM" ] || die "VSTEST_SHIM: no such file: $SHIM"
VARSLOT=$ROOT/build/bin/varslot
TEST_BIN=$ROOT/build/plain/tests/shim_tests
CALLER_LIB=$ROOT/build/tests/libvstest-caller.so
PEER=$ROOT/build/tests/vstest-peer
command -v jq >/dev/null || die "jq is required"

# Nothing of the caller's environment may change what is tested.
unset LD_PRELOAD
for v in $(compgen -e | grep '^VARSLOT_'); do unset "$v"; done

PREFIX="vs-shimtest-$$"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/varslot-shim-test.XXXXXX") || die "mktemp failed"
# The bad-value tests fall back to the per-user default segment; leave it as we found it.
DEFAULT_SEGMENT=/dev/shm/varslot-$(id -u)
[ -e "$DEFAULT_SEGMENT" ] && HAD_DEFAULT=1 || HAD_DEFAULT=0
cleanup() {
    rm -f /dev/shm/"$PREFIX"-*
    [ "$HAD_DEFAULT" = 1 ] || rm -f "$DEFAULT_SEGMENT"
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
. "$ROOT/tests/lib.sh" # ok, not_ok

SHIM_ABS=$(realpath "$SHIM")
N=0
# run_config NAME MIN_FALLBACK GTEST_FILTER [VAR=VALUE...]
run_config() {
    local name=$1 min_fallback=$2 filter=$3
    shift 3
    if [ -n "${VSTEST_CONFIGS:-}" ] && [[ " $VSTEST_CONFIGS " != *" $name "* ]]; then
        echo "# configuration $name: skipped (not in VSTEST_CONFIGS)"
        return
    fi
    N=$((N + 1))
    local seg="/$PREFIX-$N" log="$TMP/$name.log" err="$TMP/$name.err"
    echo "# configuration $name: segment $seg${*:+, $*}"
    timeout -k 10 600 env "$@" \
        LD_PRELOAD="$SHIM_ABS" VARSLOT_SEGMENT="$seg" VARSLOT_STATS=1 \
        VSTEST_PEER="$PEER" VSTEST_CALLER_LIB="$CALLER_LIB" \
        "$TEST_BIN" ${filter:+--gtest_filter="$filter"} "${GTEST_ARGS[@]}" \
        >"$log" 2>"$err"
    local rc=$?
    sed 's/^/    /' "$log"
    # stderr: the test process's stats line (pid = the process we started) and anything else
    local stats others
    stats=$(grep -E '^varslot: pid=[0-9]+ routed=[0-9]+ bytes=[0-9]+ fallback=[0-9]+ peak_slots=[0-9]+ freed=[0-9]+ segment=' "$err")
    others=$(grep -v -E '^varslot: pid=' "$err")
    [ -n "$others" ] && sed 's/^/    stderr: /' <<<"$others"
    if [ $rc -eq 0 ]; then
        ok "$name: shim_tests passed"
    else
        local why="exit status $rc"
        [ $rc -eq 124 ] && why="timed out"
        not_ok "$name: shim_tests failed ($why)"
    fi
    # The last stats line is the test process's own (children print theirs first).
    local last routed fallback
    last=$(tail -n 1 <<<"$stats")
    routed=$(sed -n 's/.* routed=\([0-9]*\) .*/\1/p' <<<"$last")
    fallback=$(sed -n 's/.* fallback=\([0-9]*\) .*/\1/p' <<<"$last")
    if [ -z "$last" ]; then
        not_ok "$name: the test process printed a VARSLOT_STATS line" "stderr: $(head -c 2000 "$err")"
    elif [ "${routed:-0}" -gt 0 ] && [ "${fallback:-0}" -ge "$min_fallback" ]; then
        ok "$name: stats line shows routed=$routed fallback=$fallback (want fallback >= $min_fallback)"
    else
        not_ok "$name: stats line shows routed=$routed fallback=$fallback (want routed > 0, fallback >= $min_fallback)" "$last"
    fi
    # Nothing left behind once the test process has exited.
    local json
    if ! json=$(timeout 60 "$VARSLOT" stat --json "$seg" 2>&1); then
        not_ok "$name: varslot stat $seg" "$json"
    elif jq -e '([.classes[].allocated] | add) == 0 and (.peers | length) == 0 and .unowned == 0' \
            >/dev/null <<<"$json"; then
        ok "$name: no slot allocated and no peer left in the segment"
    else
        not_ok "$name: slots or peers left in the segment after the test process exited" \
            "allocated per class: $(jq -c '[.classes[].allocated]' <<<"$json")" \
            "peers: $(jq -c '.peers' <<<"$json")" "unowned: $(jq -c '.unowned' <<<"$json")"
    fi
    timeout 60 "$VARSLOT" rm "$seg" >/dev/null 2>&1 || rm -f "/dev/shm/${seg#/}"
}

GTEST_ARGS=("$@")
COMMON=(VARSLOT_MIN_SIZE=64K VARSLOT_CALLERS=libvstest-caller.so)
# The whole suite includes Exhaustion.FullPoolFallsBack (6 fallbacks); a filter may not.
FULL_FALLBACK=6
[ ${#GTEST_ARGS[@]} -gt 0 ] && FULL_FALLBACK=0
run_config default $FULL_FALLBACK "" "${COMMON[@]}"
run_config libc $FULL_FALLBACK "" "${COMMON[@]}" VARSLOT_FALLBACK=libc
if [ ${#GTEST_ARGS[@]} -eq 0 ]; then
    run_config tiny 6 "Exhaustion.*:Routing.BySize:*BadEnvironment*" "${COMMON[@]}" VARSLOT_CLASSES=64K:2
else
    echo "# configuration tiny: skipped (it runs its own test selection; gtest arguments were given)"
fi
# The fork tests again, with share: nothing else depends on VARSLOT_FORK.
run_config share 0 "Fork.*" "${COMMON[@]}" VARSLOT_FORK=share

echo "# run-shim-tests: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
