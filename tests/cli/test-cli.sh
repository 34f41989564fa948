#!/usr/bin/env bash
# End-to-end test of the varslot CLI binary: argument errors and exit statuses, stat --json
# against real peers that hold slots (tests/cli/hold-slots.c), corruption, reap and rm.
# Usage, from the repository root: tests/cli/test-cli.sh build/bin/varslot
set -u

die() { echo "test-cli: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 path/to/varslot"
if [ ! -f "$1" ] || [ ! -x "$1" ]; then die "not an executable: $1"; fi
VARSLOT=$(realpath "$1")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
command -v jq >/dev/null || die "jq is required"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/varslot-cli-test.XXXXXX") || die "mktemp failed"
PREFIX="varslot-cli-test-$$"   # every POSIX segment of this run is /dev/shm/$PREFIX-*
PIDS=() # background helpers not yet killed and waited for

# A pid that was waited for may since belong to a stranger: kill only our own children.
our_child() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) } # past "pid (comm) ", whatever the comm holds
    [ "$(cut -d' ' -f2 <<<"$stat")" = "$$" ]
}
cleanup() {
    local pid
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do
        if our_child "$pid"; then
            kill -9 "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
        fi
    done
    rm -f /dev/shm/"$PREFIX"-*
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP # through the EXIT trap, so nothing is left behind

# ---- the helper that holds slots (make builds it: tests/need.sh) ----
. "$ROOT/tests/need.sh"
need build/tests/hold-slots build/tests/pty-run
HELPER="$ROOT/build/tests/hold-slots"

PTY_RUN="$ROOT/build/tests/pty-run"

# ---- reporting ----
. "$ROOT/tests/lib.sh"

# run ARGS...: OUT, ERR and RC of one varslot invocation. A hung CLI fails its check, not the run.
run() {
    OUT=$(timeout 30 "$VARSLOT" "$@" 2>"$TMP/stderr")
    RC=$?
    ERR=$(cat "$TMP/stderr")
}
V() { timeout 30 "$VARSLOT" "$@"; }
details() { echo "exit status $RC" "stdout: ${OUT:0:2000}" "stderr: ${ERR:0:2000}"; }

# expect_usage_error DESC ARGS...: exit 2, nothing on stdout, "varslot: " message + hint.
expect_usage_error() {
    local desc=$1
    shift
    run "$@"
    local first=${ERR%%$'\n'*}
    if [ "$RC" -ne 2 ] || [ -n "$OUT" ] || [[ "$first" != "varslot: "?* ]] ||
        [[ "$ERR" != *--help* ]] || [ "$(printf '%s\n' "$ERR" | wc -l)" -gt 2 ]; then
        not_ok "usage error exits 2 with one message: $desc" "exit status $RC" \
            "stdout: $OUT" "stderr: $ERR"
    else
        ok "usage error exits 2 with one message: $desc"
    fi
}

# expect_library_error DESC PATTERN COMMAND NAME [ARGS...]: exit 1, and stderr is
# "varslot: COMMAND NAME: <status text> (<detail>)" with PATTERN (an ERE) in it.
expect_library_error() {
    local desc=$1 pattern=$2 cmd=$3 name=$4
    shift 4
    run "$cmd" "$name" "$@"
    if [ "$RC" -ne 1 ] || [[ "$ERR" != "varslot: $cmd $name: "*" ("*")" ]] ||
        ! grep -Eq -- "$pattern" <<<"$ERR"; then
        not_ok "$desc" "wanted exit 1 and /$pattern/ in 'varslot: $cmd $name: ... (...)'" \
            "exit status $RC" "stdout: $OUT" "stderr: $ERR"
    else
        ok "$desc"
    fi
}

# expect_ok DESC PATTERN ARGS...: exit 0 and stdout matches PATTERN (an ERE).
expect_ok() {
    local desc=$1 pattern=$2
    shift 2
    run "$@"
    if [ "$RC" -ne 0 ] || ! grep -Eq -- "$pattern" <<<"$OUT"; then
        not_ok "$desc" "wanted exit 0 and /$pattern/ on stdout" "exit status $RC" \
            "stdout: $OUT" "stderr: $ERR"
    else
        ok "$desc"
    fi
}

# expect_stat DESC NAME FILTER [JQ ARGS...]: stat --json prints one JSON object satisfying
# the jq FILTER (which must yield true).
expect_stat() {
    local desc=$1 name=$2 filter=$3
    shift 3
    run stat "$name" --json
    if [ "$RC" -ne 0 ]; then
        not_ok "$desc" "stat --json exited $RC" "stderr: $ERR"
    elif ! jq -s -e 'length == 1 and (.[0] | type) == "object"' <<<"$OUT" >/dev/null 2>&1; then
        not_ok "$desc" "stat --json did not print exactly one JSON object" "stdout: $OUT"
    elif ! jq -e "$@" "$filter" <<<"$OUT" >/dev/null 2>&1; then
        not_ok "$desc" "jq filter is not true: $filter" "json: $OUT"
    else
        ok "$desc"
    fi
}

# classes_are: a jq filter comparing [slot_size, slot_count, allocated] of every class.
classes_are() { echo "[.classes[] | [.slot_size, .slot_count, .allocated]] == $1"; }

check() { # check DESC COMMAND...: a plain shell condition
    local desc=$1
    shift
    if "$@"; then ok "$desc"; else not_ok "$desc" "condition failed: $*"; fi
}

# ---- help ----
for args in "--help" "-h" "help"; do
    run "$args"
    if [ "$RC" -eq 0 ] && [ -z "$ERR" ] && grep -q 'varslot create NAME' <<<"$OUT" &&
        grep -q 'varslot stat NAME' <<<"$OUT" && grep -q 'varslot reap NAME' <<<"$OUT" &&
        grep -q 'varslot top NAME' <<<"$OUT" && grep -q 'varslot trim NAME' <<<"$OUT" &&
        grep -q 'varslot rm NAME' <<<"$OUT"; then
        ok "varslot $args prints the usage of every command and exits 0"
    else
        not_ok "varslot $args prints the usage of every command and exits 0" "$(details)"
    fi
done
for cmd in create stat top reap trim rm; do
    expect_ok "varslot $cmd --help exits 0 with its usage" "varslot $cmd NAME" "$cmd" --help
done
expect_ok "varslot help stat exits 0 with its usage" "varslot stat NAME" help stat
expect_ok "-h after a NAME still means help" "varslot create NAME" create "/$PREFIX-never" -h

# ---- argument errors: exit 2, and nothing is created ----
NEVER="/$PREFIX-never"
expect_usage_error "no command"
expect_usage_error "unknown command" frobnicate "$NEVER"
expect_usage_error "help with an unknown topic" help frobnicate
for cmd in create stat top reap trim rm; do
    expect_usage_error "$cmd without NAME" "$cmd"
    expect_usage_error "$cmd with two NAMEs" "$cmd" "$NEVER" "$NEVER-2"
done
expect_usage_error "stat --json without NAME" stat --json
expect_usage_error "empty NAME" stat ""
for spec in 64K 64K: 0:5 64Q:3 :5 64K:0 64K:-1 -64K:1 " 64K:1" 64K:1x 0x10:1 1M:2:3 64KK:1 \
    64K:1,32K:2 64K:1,64K:1 "64K:1," ",64K:1" "64K:1,,1M:1" 4G:1 99999999999999999999:1 \
    64K:16777217 ""; do
    expect_usage_error "--classes '$spec'" create "$NEVER" --classes "$spec"
done
expect_usage_error "--classes without a value" create "$NEVER" --classes
for n in 0 256 300 abc -1 "" 1.5 " 5" 0x10; do
    expect_usage_error "--max-peers '$n'" create "$NEVER" --max-peers "$n"
done
for m in 9999 0800 1777 abc "" 0400 0; do
    expect_usage_error "--mode '$m'" create "$NEVER" --mode "$m"
done
expect_usage_error "an option given twice" create "$NEVER" --max-peers 4 --max-peers 5
expect_usage_error "unknown option" stat "$NEVER" --bogus
expect_usage_error "another command's option (create --json)" create "$NEVER" --json
expect_usage_error "another command's option (stat --classes)" stat "$NEVER" --classes 64K:1
expect_usage_error "rm takes no options" rm "$NEVER" --json
expect_usage_error "--json with a value" stat "$NEVER" --json=1
expect_usage_error "--trust-owner with a value" stat "$NEVER" --trust-owner=1
expect_usage_error "create takes no --trust-owner (it makes its own segment)" create "$NEVER" --trust-owner
expect_usage_error "rm takes no --trust-owner (only the owner removes)" rm "$NEVER" --trust-owner
for cmd in stat ls reap trim top; do
    expect_ok "varslot $cmd --help tells of --trust-owner" "varslot $cmd NAME .*\[--trust-owner\]" "$cmd" --help
done
expect_usage_error "top takes no --json" top "$NEVER" --json
expect_usage_error "--once with a value" top "$NEVER" --once=1
check "argument errors created no segment" test ! -e "/dev/shm/$PREFIX-never"

# ---- a POSIX shm segment ----
SEG="/$PREFIX-a"
SHMFILE="/dev/shm/$PREFIX-a"
run create "$SEG" --classes 64K:256,1M:64 --max-peers 8 --mode 0640
if [ "$RC" -eq 0 ] && [ -f "$SHMFILE" ]; then
    size=$(stat -c %s "$SHMFILE")
    if [[ "$OUT" == *"$SEG"* && "$OUT" == *"64K:256,1M:64"* && "$OUT" == *"$size bytes"* &&
        "$OUT" == *"max peers 8"* && $(wc -l <<<"$OUT") -eq 1 ]]; then
        ok "create prints one line with name, classes, size in bytes and max peers"
    else
        not_ok "create prints one line with name, classes, size in bytes and max peers" \
            "file size $size" "$(details)"
    fi
else
    not_ok "create $SEG exits 0 and makes $SHMFILE" "$(details)"
    size=-1
fi
check "create --mode 0640 sets the mode" test "$(stat -c %a "$SHMFILE" 2>/dev/null)" = 640
expect_stat "stat --json: exact classes, nothing allocated, no peers" "$SEG" \
    "$(classes_are '[[65536,256,0],[1048576,64,0]]') and .peers == [] and .unowned == 0"
# shellcheck disable=SC2016 # $n and $s are jq variables
expect_stat "stat --json: name, max_peers, total_size" "$SEG" \
    '.segment == $n and .max_peers == 8 and .total_size == $s and
     (.mapped_at_creator_address | type) == "boolean"' --arg n "$SEG" --argjson s "$size"
expect_ok "stat prints a table row per class" \
    '^ *0 +65536 +256 +0$' stat "$SEG"
expect_ok "stat table: second class row" '^ *1 +1048576 +64 +0$' stat "$SEG"
expect_ok "stat --trust-owner of one's own segment is stat" '^ *1 +1048576 +64 +0$' stat "$SEG" --trust-owner
(umask 077 && V create "/$PREFIX-umask" --classes 4K:1 --mode 0660 >/dev/null)
check "create --mode 0660 under umask 077 makes a 0660 segment" \
    test "$(stat -c %a "/dev/shm/$PREFIX-umask" 2>/dev/null)" = 660
expect_library_error "create twice fails with VS_EEXIST" "segment already exists" create "$SEG"
expect_stat "a failed second create leaves the first segment intact" "$SEG" \
    "$(classes_are '[[65536,256,0],[1048576,64,0]]')"
expect_library_error "a segment bigger than the filesystem fails cleanly (VS_ENOSPC)" \
    "region too small|free space" create "/$PREFIX-huge" --classes 1G:16777216
check "a failed create leaves no file behind" test ! -e "/dev/shm/$PREFIX-huge"

run create "/$PREFIX-d"
expect_stat "create without options uses the default classes and 64 peers" "/$PREFIX-d" \
    "$(classes_are '[[65536,256,0],[262144,128,0],[1048576,64,0],[4194304,32,0],[16777216,8,0]]')
     and .max_peers == 64"
check "create without --mode makes a 0600 segment" \
    test "$(stat -c %a "/dev/shm/$PREFIX-d" 2>/dev/null)" = 600

# ---- segments that do not exist ----
MISSING="/$PREFIX-missing"
expect_library_error "stat of a missing segment exits 1" "no such segment" stat "$MISSING"
expect_library_error "stat --json of a missing segment exits 1" "no such segment" \
    stat "$MISSING" --json
expect_library_error "reap of a missing segment exits 1" "no such segment" reap "$MISSING"
expect_library_error "top of a missing segment exits 1" "no such segment" top "$MISSING" --once
expect_library_error "rm of a missing segment exits 1" "no such segment" rm "$MISSING"
expect_library_error "stat of a file in a missing directory exits 1" "no such segment" \
    stat "$TMP/no/such/dir/seg"

# ---- file-path segments ----
FSEG="$TMP/seg.vs"
expect_ok "create a file-path segment" "$FSEG" create "$FSEG" --classes 4K:16,64K:4 --max-peers 2
check "the file-path segment is a regular file" test -f "$FSEG"
check "the file-path segment has mode 0600" test "$(stat -c %a "$FSEG" 2>/dev/null)" = 600
expect_stat "stat --json of a file-path segment" "$FSEG" \
    "$(classes_are '[[4096,16,0],[65536,4,0]]') and .max_peers == 2 and .peers == []"
(cd "$TMP" && V create --classes 4K:1 -- -dash.vs >/dev/null 2>&1)
check "'--' lets a NAME start with '-'" test -f "$TMP/-dash.vs"

WEIRD="$TMP/we\"ird\\ na"$'\t'"me é"
run create "$WEIRD" --classes 4K:1
# shellcheck disable=SC2016 # $n is a jq variable
expect_stat "stat --json escapes quotes, backslashes and control characters" "$WEIRD" \
    '.segment == $n' --arg n "$WEIRD"
if command -v python3 >/dev/null; then
    BADUTF="$TMP/bad-"$'\xff\xc3'"-utf8"
    run create "$BADUTF" --classes 4K:1
    run stat "$BADUTF" --json
    if [ "$RC" -eq 0 ] && python3 -c 'import json, sys
json.loads(sys.stdin.buffer.read().decode("utf-8", "strict"))' <<<"$OUT" 2>/dev/null; then
        ok "stat --json stays valid UTF-8 JSON for a name that is not UTF-8"
    else
        not_ok "stat --json stays valid UTF-8 JSON for a name that is not UTF-8" "$(details)"
    fi
else
    ok "stat --json stays valid UTF-8 JSON for a name that is not UTF-8 # SKIP no python3"
fi

# ---- corrupt or foreign files: exit 1 with the library's reason ----
corrupt_copy() { # corrupt_copy FILE: a fresh small segment at FILE
    rm -f "$1"
    V create "$1" --classes 4K:4 --max-peers 4 >/dev/null 2>&1 || not_ok "create $1 for a corruption test"
}
corrupt_copy "$TMP/c1.vs"
printf 'GARBAGE!' | dd of="$TMP/c1.vs" conv=notrunc status=none
expect_library_error "garbage over the magic: stat exits 1 and says why" \
    "corrupt.*bad magic" stat "$TMP/c1.vs"
expect_library_error "garbage over the magic: stat --json exits 1 too" "corrupt" \
    stat "$TMP/c1.vs" --json
expect_library_error "garbage over the magic: reap exits 1" "corrupt" reap "$TMP/c1.vs"
corrupt_copy "$TMP/c2.vs"
printf 'XXXXXXXX' | dd of="$TMP/c2.vs" bs=1 seek=16 conv=notrunc status=none
expect_library_error "garbage inside the header: stat exits 1 (checksum)" \
    "corrupt.*checksum" stat "$TMP/c2.vs"
corrupt_copy "$TMP/c3.vs"
truncate -s 8192 "$TMP/c3.vs"
expect_library_error "a truncated segment: stat exits 1" "corrupt.*size" stat "$TMP/c3.vs"
printf 'just some text, not a segment\n' >"$TMP/text"
expect_library_error "a text file: stat exits 1" "corrupt.*bad magic" stat "$TMP/text"
: >"$TMP/empty"
expect_library_error "an empty file: stat exits 1" "corrupt" stat "$TMP/empty"
mkdir "$TMP/dir"
expect_library_error "a directory: stat exits 1" "." stat "$TMP/dir"
ln -s "$FSEG" "$TMP/link.vs"
expect_library_error "a symlink is refused" "symbolic link" stat "$TMP/link.vs"
expect_library_error "rm refuses a file that is not recognisably a segment" "not a varslot segment" rm "$TMP/c1.vs"
check "the refused file is still there" test -e "$TMP/c1.vs"
expect_ok "rm --force removes a corrupt segment" "" rm "$TMP/c1.vs" --force
check "the corrupt file is gone" test ! -e "$TMP/c1.vs"

# ---- peers holding slots: the counts are real ----
PSEG="/$PREFIX-peers"
A=0 B=0 C=0 H=0 O=0
HOLDER_PID=
# start_holder COUNT SIZE [OWNER]: a background process holding COUNT slots of SIZE bytes, as
# a joined peer, or without joining in OWNER's name
start_holder() {
    local out="$TMP/holder.${#PIDS[@]}"
    : >"$out" # before the background child opens it, so the first grep finds a file
    "$HELPER" "$PSEG" "$@" >"$out" 2>&1 &
    HOLDER_PID=$!
    PIDS+=("$HOLDER_PID")
    local i
    for ((i = 0; i < 200; i++)); do
        grep -q '^ready' "$out" && return 0
        kill -0 "$HOLDER_PID" 2>/dev/null || break
        sleep 0.05
    done
    not_ok "hold-slots $1 x $2 bytes got ready" "its output: $(cat "$out")"
    return 1
}
kill_holder() { # kill_holder PID: SIGKILL one helper and forget it
    local pid keep=()
    our_child "$1" && kill -9 "$1" 2>/dev/null && wait "$1" 2>/dev/null
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do [ "$pid" = "$1" ] || keep+=("$pid"); done
    PIDS=(${keep[@]+"${keep[@]}"})
}
peer() { # peer PID: jq filter selecting that peer's entry
    echo "(.peers | map(select(.pid == $1)))"
}

V create "$PSEG" --classes 4K:8,64K:4 --max-peers 4 >/dev/null
start_holder 3 1 && A=$HOLDER_PID && ok "peer A (3 slots of class 0) is ready"
start_holder 2 5000 && B=$HOLDER_PID && ok "peer B (2 slots of class 1) is ready"
expect_stat "allocated counts per class match what the peers hold" "$PSEG" \
    "$(classes_are '[[4096,8,3],[65536,4,2]]') and .unowned == 0"
expect_stat "both peers are listed alive with their own slot counts" "$PSEG" \
    "(.peers | length) == 2 and
     ($(peer "$A") | length == 1 and .[0].state == \"alive\" and .[0].slots == 3) and
     ($(peer "$B") | length == 1 and .[0].state == \"alive\" and .[0].slots == 2) and
     ([.peers[].id] | all(. >= 1 and . <= 4))"
expect_ok "the stat table shows peer A alive with 3 slots" "^ *[0-9]+ +$A +alive +3$" stat "$PSEG"
expect_ok "reap with every peer alive reaps nothing" "reaped 0 " reap "$PSEG"
expect_stat "reaping never takes a live peer's slots" "$PSEG" \
    "$(classes_are '[[4096,8,3],[65536,4,2]]') and (.peers | length) == 2"

kill_holder "$A"
expect_stat "a SIGKILLed peer shows as dead, still owning its slots" "$PSEG" \
    "($(peer "$A") | .[0].state == \"dead\" and .[0].slots == 3) and
     ($(peer "$B") | .[0].state == \"alive\" and .[0].slots == 2) and
     $(classes_are '[[4096,8,3],[65536,4,2]]')"
expect_ok "the stat table shows peer A dead" "^ *[0-9]+ +$A +dead +3$" stat "$PSEG"
expect_ok "reap reaps exactly the dead peer" "reaped 1 dead peer " reap "$PSEG"
expect_stat "after reap: the dead peer's slots are free and its entry is gone" "$PSEG" \
    "$(classes_are '[[4096,8,0],[65536,4,2]]') and
     ($(peer "$A") | length == 0) and (.peers | length) == 1 and
     ($(peer "$B") | .[0].state == \"alive\" and .[0].slots == 2)"
expect_ok "trim gives the reaped slots' touched pages back (3 x 4 KiB), never a held slot's" \
    "^trimmed $PSEG: 12 KiB of free slots given back; the file held [0-9]+ KiB, now [0-9]+ KiB$" trim "$PSEG"
expect_ok "a second trim finds nothing more to give back" "^trimmed $PSEG: 0 KiB " trim "$PSEG"
expect_stat "trim leaves the live peer's slots and entry as they were" "$PSEG" \
    "$(classes_are '[[4096,8,0],[65536,4,2]]') and (.peers | length) == 1 and
     ($(peer "$B") | .[0].state == \"alive\" and .[0].slots == 2)"
start_holder 8 1 && C=$HOLDER_PID && ok "every slot of the reaped class is allocatable again"
expect_stat "the new peer holds all 8 slots of class 0" "$PSEG" \
    "$(classes_are '[[4096,8,8],[65536,4,2]]') and ($(peer "${C:-0}") | .[0].slots == 8)"
# ---- top: what it shows is the segment's state, on a terminal and off one ----
# Peer B holds 2 slots of class 1, peer C all 8 of class 0; nothing else allocates.
TOPSEG_ROWS='^ *0 +4096 +8/8 +\[#+\] +100%$'
run top "$PSEG" --once
if [ "$RC" -eq 0 ] && grep -Eq "$TOPSEG_ROWS" <<<"$OUT" &&
    grep -Eq '^ *1 +65536 +2/4 +\[#+\.+\] +50%$' <<<"$OUT" &&
    grep -Eq "^ *[0-9]+ +$B +alive +2$" <<<"$OUT" && grep -Eq "^ *[0-9]+ +${C:-0} +alive +8$" <<<"$OUT" &&
    grep -Eq '^segment .*: [0-9]+ bytes, 2 of 4 peers$' <<<"$OUT" &&
    grep -Eq '^allocations: [0-9]+ in all, 0/s$' <<<"$OUT"; then
    ok "top --once shows each class's allocated/total with a bar, each peer's slots, a rate of 0"
else
    not_ok "top --once shows each class's allocated/total with a bar, each peer's slots, a rate of 0" "$(details)"
fi
check "top --once off a terminal prints no escape code" test -n "$OUT" -a "${OUT//$'\033'/}" = "$OUT"
run top "$PSEG" --once --ansi
check "top --once --ansi prints escape codes all the same" test "${OUT//$'\033'/}" != "$OUT"

# On a pseudo-terminal: pty_top COLS ROWS starts top on one (its log in $TMP/pty.log,
# control lines to fd 7, pty-run's report in $TMP/pty.out); pty_wait ERE waits (10 s at
# most) for the screen, escape codes stripped, to show a line matching ERE.
pty_top() {
    rm -f "$TMP/pty.log" "$TMP/pty.ctl"
    mkfifo "$TMP/pty.ctl"
    "$PTY_RUN" "$1" "$2" "$TMP/pty.log" "$VARSLOT" top "$PSEG" <"$TMP/pty.ctl" >"$TMP/pty.out" 2>&1 &
    PTY_PID=$!
    PIDS+=("$PTY_PID")
    exec 7>"$TMP/pty.ctl"
}
pty_screen() { sed -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\r//g' "$TMP/pty.log" 2>/dev/null; }
pty_wait() {
    local i
    for ((i = 0; i < 100; i++)); do
        pty_screen | grep -Eq -- "$1" && return 0
        sleep 0.1
    done
    return 1
}
# pty_end DESC WANT: closes the controls, waits for pty-run, and checks its report (exit
# status, terminal modes as they were) and that the screen and cursor were given back.
pty_end() {
    exec 7>&-
    local i
    for ((i = 0; i < 100; i++)); do # a top that does not end must not hang the suite
        kill -0 "$PTY_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$PTY_PID" 2>/dev/null; then
        kill -9 $(pgrep -P "$PTY_PID") 2>/dev/null # pty-run's child: the top that did not end
    fi
    wait "$PTY_PID" 2>/dev/null
    kill_holder "$PTY_PID"
    local report log after
    report=$(cat "$TMP/pty.out")
    log=$(cat "$TMP/pty.log")
    after=${log##*$'\033[?25h\033[?1049l'} # what it printed once the screen was given back
    if [ "$report" = "$2"$'\n'"termios same" ] && [ "$after" != "$log" ] && [[ "$after" != *$'\033'* ]]; then
        ok "$1"
    else
        not_ok "$1" "pty-run: $report" "last bytes: $(tail -c 200 "$TMP/pty.log" | cat -v)"
    fi
}

pty_top 80 24
if pty_wait "$TOPSEG_ROWS" && pty_wait "^ *[0-9]+ +$B +alive +2$"; then
    ok "top on a terminal shows the segment's classes and peers"
else
    not_ok "top on a terminal shows the segment's classes and peers" "screen: $(pty_screen | tail -30)"
fi
check "top on a terminal draws on the alternate screen" grep -q $'\033\\[?1049h' "$TMP/pty.log"
check "the rate is 0/s while nobody allocates" pty_wait '^allocations: [0-9]+ in all, 0/s$'
HOLD_SLOTS_CHURN=1 start_holder 1 1 && D=$HOLDER_PID
if pty_wait '^allocations: [0-9]+ in all, [1-9][0-9]*/s$'; then
    ok "the rate moves once a peer allocates"
else
    not_ok "the rate moves once a peer allocates" "screen: $(pty_screen | tail -12)"
fi
kill_holder "${D:-0}"
expect_ok "reap takes the allocating peer's entry back" "reaped 1 dead peer " reap "$PSEG"
echo "resize 100 8" >&7
# 100 columns leave 52 for the bar; 8 rows cut the frame and say so.
if pty_wait '^ *0 +4096 +8/8 +\[#{52}\] +100%$' && pty_wait '^\.\.\. [0-9]+ more lines'; then
    ok "top redraws at the new size when the terminal is resized"
else
    not_ok "top redraws at the new size when the terminal is resized" "screen: $(pty_screen | tail -14)"
fi
echo "keys q" >&7
pty_end "q quits with exit 0 and gives the terminal back (modes, screen, cursor)" "exit 0"

pty_top 80 24
pty_wait "$TOPSEG_ROWS"
echo "ctrl-c" >&7
pty_end "Ctrl-C quits with exit 0 and gives the terminal back" "exit 0"

kill_holder "$B"
kill_holder "${C:-0}"
expect_ok "reap reaps both remaining dead peers" "reaped 2 dead peers " reap "$PSEG"
expect_stat "after the last reap: nothing allocated, no peers" "$PSEG" \
    "$(classes_are '[[4096,8,0],[65536,4,0]]') and .peers == [] and .unowned == 0"
expect_ok "a second reap finds nothing" "reaped 0 " reap "$PSEG"

# Slots in the name of the host (0) or of an id with no peer entry belong to nobody reapable.
start_holder 2 1 0 && H=$HOLDER_PID && ok "a non-peer process holds 2 slots as the host"
start_holder 1 5000 3 && O=$HOLDER_PID && ok "a non-peer process holds 1 slot as id 3, never joined"
expect_stat "slots of the host and of an id without a peer entry count as unowned" "$PSEG" \
    "$(classes_are '[[4096,8,2],[65536,4,1]]') and .peers == [] and .unowned == 3"
expect_ok "the stat table reports them as unowned" "^unowned allocated slots: 3$" stat "$PSEG"
kill_holder "${H:-0}"
kill_holder "${O:-0}"
expect_ok "reap has no peer to reap for them" "reaped 0 " reap "$PSEG"
expect_stat "so they stay allocated" "$PSEG" \
    "$(classes_are '[[4096,8,2],[65536,4,1]]') and .unowned == 3"

# ---- rm ----
V create "/$PREFIX-gone" --classes 4K:2 >/dev/null
PSEG_SAVED=$PSEG PSEG="/$PREFIX-gone"
pty_top 80 24
pty_wait '^ *0 +4096 +0/2 '
V rm "$PSEG" >/dev/null
if pty_wait 'top /.*-gone: the segment was removed'; then
    ok "top says so when the segment it watches is removed"
else
    not_ok "top says so when the segment it watches is removed" "screen: $(pty_screen | tail -5)"
fi
pty_end "and exits 1, the terminal given back" "exit 1"
PSEG=$PSEG_SAVED

expect_ok "rm of a POSIX segment exits 0" "" rm "$SEG"
check "rm removed $SHMFILE" test ! -e "$SHMFILE"
expect_library_error "stat after rm exits 1" "no such segment" stat "$SEG"
expect_ok "rm of a file-path segment exits 0" "" rm "$FSEG"
check "rm removed the file" test ! -e "$FSEG"
for name in "/$PREFIX-d" "$PSEG" "/$PREFIX-umask"; do
    run rm "$name"
done
check "rm left no segment of this run in /dev/shm" \
    test -z "$(find /dev/shm -maxdepth 1 -name "$PREFIX-*" -print -quit)"

echo "# $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
