#!/usr/bin/env bash
# Runs the glibc-semantics suite (tests/preload/semantics/):
#   1. plainly, against glibc: proves the expectations are glibc 2.36's own;
#   2. with LD_PRELOAD=build/lib/libvarslot-preload.so in each shim mode:
#        default | VARSLOT_FALLBACK=libc | VARSLOT_MIN_SIZE=1 | VARSLOT_MIN_SIZE=1 VARSLOT_FALLBACK=libc
#      each on its own segment /vs-sem-<pid>, removed afterwards.
#
# usage: tests/preload/run-semantics.sh [--glibc-only] [--bin PATH] [--shim PATH] [-- GTEST_ARGS...]
#   --glibc-only  run only the plain glibc pass; a missing shim is then not an error
#   --bin PATH    the test binary (default build/plain/tests/semantics_tests)
#   --shim PATH   the preload library (default build/lib/libvarslot-preload.so)
#   GTEST_ARGS    passed to every run, e.g. -- --gtest_filter='Realloc.*'
# The defaults are make's (tests/need.sh): run by hand, make brings them up to date first.
# Exit status: 0 when every run passed; 1 when a run failed (each is named), the shim is
# missing without --glibc-only, or make failed; 2 for bad arguments or a missing test binary.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$ROOT/build/plain/tests/semantics_tests
SHIM=$ROOT/build/lib/libvarslot-preload.so
CLI=$ROOT/build/bin/varslot
GLIBC_ONLY=0
TIMEOUT=${SEMANTICS_TIMEOUT:-900}
GTEST_ARGS=()

while [ $# -gt 0 ]; do
    case $1 in
        --glibc-only) GLIBC_ONLY=1 ;;
        --bin) BIN=${2:?--bin needs a path}; shift ;;
        --shim) SHIM=${2:?--shim needs a path}; shift ;;
        --) shift; GTEST_ARGS=("$@"); break ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "run-semantics: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

# What make builds, unless a path was given: the binary, the shim (for the shim runs) and the
# CLI that removes their segments.
. "$ROOT/tests/need.sh"
DEFAULTS=()
[ "$BIN" = "$ROOT/build/plain/tests/semantics_tests" ] && DEFAULTS+=(build/plain/tests/semantics_tests)
if [ $GLIBC_ONLY -eq 0 ]; then
    DEFAULTS+=(build/bin/varslot)
    [ "$SHIM" = "$ROOT/build/lib/libvarslot-preload.so" ] && DEFAULTS+=(build/lib/libvarslot-preload.so)
fi
[ ${#DEFAULTS[@]} -eq 0 ] || need "${DEFAULTS[@]}"
if [ ! -x "$BIN" ]; then
    echo "run-semantics: test binary $BIN not found (make builds build/plain/tests/semantics_tests)" >&2
    exit 2
fi
case $SHIM in /*) ;; *) SHIM=$PWD/$SHIM ;; esac  # LD_PRELOAD wants an absolute path

FAILED=()
SEGMENTS=()

remove_segment() {
    local seg=$1
    if [ -x "$CLI" ]; then
        "$CLI" rm --force "$seg" >/dev/null 2>&1
    fi
    rm -f "/dev/shm/${seg#/}"
}
cleanup() {
    local seg
    for seg in "${SEGMENTS[@]}"; do remove_segment "$seg"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run LABEL [VAR=VALUE...]: one run of the suite. The variables (and LD_PRELOAD) are set only
# for the test binary, not for timeout/env; inherited VARSLOT_* settings are dropped so each
# mode is exactly what its label says.
run() {
    local label=$1; shift
    echo
    echo "=== run-semantics: $label ==="
    timeout --signal=KILL "$TIMEOUT" env -u LD_PRELOAD -u VARSLOT_FALLBACK -u VARSLOT_MIN_SIZE \
        -u VARSLOT_SEGMENT "$@" "$BIN" --gtest_brief=1 "${GTEST_ARGS[@]}"
    local rc=$?
    if [ $rc -eq 0 ]; then
        echo "=== run-semantics: $label: PASSED ==="
    else
        local why="exit $rc"
        [ $rc -eq 137 ] && why="killed after ${TIMEOUT}s (timeout) or SIGKILL"
        [ $rc -gt 128 ] && [ $rc -ne 137 ] && why="killed by signal $((rc - 128))"
        echo "=== run-semantics: $label: FAILED ($why) ==="
        FAILED+=("$label ($why)")
    fi
}

run "glibc (no preload)"

if [ $GLIBC_ONLY -eq 0 ]; then
    if [ ! -f "$SHIM" ]; then
        echo
        echo "run-semantics: the shim $SHIM does not exist (not built yet?)."
        echo "run-semantics: only the plain glibc run was done; pass --glibc-only to accept that."
        FAILED+=("shim missing: $SHIM")
    else
        modes=(
            "default|"
            "VARSLOT_FALLBACK=libc|VARSLOT_FALLBACK=libc"
            "VARSLOT_MIN_SIZE=1|VARSLOT_MIN_SIZE=1"
            "VARSLOT_MIN_SIZE=1 VARSLOT_FALLBACK=libc|VARSLOT_MIN_SIZE=1 VARSLOT_FALLBACK=libc"
        )
        for m in "${modes[@]}"; do
            label=${m%%|*}
            read -r -a vars <<<"${m#*|}"
            seg=/vs-sem-$$
            SEGMENTS+=("$seg")
            remove_segment "$seg"  # a leftover from an earlier run with the same pid
            run "shim, $label" LD_PRELOAD="$SHIM" VARSLOT_SEGMENT="$seg" "${vars[@]}"
            remove_segment "$seg"
        done
    fi
fi

echo
if [ ${#FAILED[@]} -eq 0 ]; then
    echo "run-semantics: all runs passed"
    exit 0
fi
echo "run-semantics: ${#FAILED[@]} run(s) failed:"
printf '  - %s\n' "${FAILED[@]}"
exit 1
