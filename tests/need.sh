# shellcheck shell=bash
# need TARGET...: the programs a suite runs, as the Makefile names them (paths under the tree),
# up to date. Nothing under tests/ or scripts/ compiles anything: run by hand, a suite has make
# build its programs first; run by make (MAKELEVEL is set), the calling target's prerequisites
# did, and a missing program is an error that names its target. Sourced after ROOT is set.
need() {
    local me=${0##*/} t
    if [ -z "${MAKELEVEL:-}" ]; then
        make -s -C "$ROOT" "$@" >&2 || { echo "$me: 'make $*' failed" >&2; exit 1; }
    fi
    for t in "$@"; do
        [ -e "$ROOT/$t" ] || { echo "$me: $t is missing: run 'make $t'" >&2; exit 1; }
    done
}
