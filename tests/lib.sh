# Shared by the shell suites (sourced after ROOT is set): TAP-style reporting, and building a
# helper only when it is missing or older than its sources.

PASSED=0
FAILED=0
ok() { PASSED=$((PASSED + 1)); echo "ok - $1"; }
not_ok() { # not_ok DESCRIPTION [DETAIL LINE...]
    FAILED=$((FAILED + 1))
    echo "not ok - $1"
    shift
    local line
    for line in "$@"; do printf '#   %s\n' "$line"; done
}

stale() { # stale OUTPUT INPUT...
    local out=$1 in
    shift
    [ -e "$out" ] || return 0
    for in in "$@"; do [ "$in" -nt "$out" ] && return 0; done
    return 1
}
build() { # build OUTPUT COMMAND...: the suite stops (die) if it cannot build
    local out=$1 me=${0##*/}
    shift
    echo "${me%.sh}: building ${out#"$ROOT"/}"
    timeout 600 "$@" || die "cannot build $out"
}
