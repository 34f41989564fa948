#!/usr/bin/env bash
# Sharing a segment between real users: user A creates a 0660 segment under group G; user B,
# a member of G, opens it only with --trust-owner (VS_OPEN_TRUST_OWNER), takes a slot A's
# process hands over, and once B's process is SIGKILLed A reaps its slots; user C, outside
# G, is refused with a clear message, and so is a world-writable segment of a stranger.
# Needs root to create the accounts (useradd), else prints SKIP. The accounts, their groups
# and every segment of the run are removed at the end, whatever happens.
# The GStreamer elements too: a varslotsrc of B takes A's varslotsink's frames only with
# trust-owner=true, and a varslotsink of B uses A's segment only with trust-owner=true.
# So does the preload shim: B's program routes into A's segment only with VARSLOT_TRUST=1
# (varslot run --trust), and falls back with one warning without it.
# Usage, from the repository root:
#   tests/users/test-users.sh build/bin/varslot build/tests/hand-over \
#       [build/tests/vstest-gst-run build/lib/gstreamer-1.0]     (without them: no GStreamer part)
set -u

die() { echo "test-users: $*" >&2; exit 1; }

[ $# -eq 2 ] || [ $# -eq 4 ] || die "usage: $0 varslot hand-over [vstest-gst-run gstreamer-plugin-dir]"
for f in "$1" "$2" ${3:+"$3"}; do [ -f "$f" ] && [ -x "$f" ] || die "not an executable: $f"; done
[ $# -eq 2 ] || [ -f "$4/libgstvarslot.so" ] || die "no libgstvarslot.so in $4"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/tests/lib.sh"

if [ "$(id -u)" -ne 0 ]; then
    echo "SKIP: test-users needs root to create the users it runs as (useradd)"
    exit 0
fi
for tool in useradd userdel groupadd groupdel setpriv getent jq; do
    command -v "$tool" >/dev/null || die "$tool is missing (scripts/install-deps installs it)"
done

TAG="vsu$$"                                      # this run's accounts and group
UA=${TAG}a UB=${TAG}b UC=${TAG}c G=${TAG}g
PREFIX="varslot-users-test-$$"                   # every segment is /dev/shm/$PREFIX-*
SEG="/$PREFIX-cam"
MADE_USERS=() MADE_GROUPS=() PIDS=()

cleanup() {
    local pid u g
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
    rm -f /dev/shm/"$PREFIX"-*
    for u in ${MADE_USERS[@]+"${MADE_USERS[@]}"}; do
        userdel "$u" || echo "test-users: could not remove user $u: remove it by hand" >&2
        getent group "$u" >/dev/null && groupdel "$u" 2>/dev/null # its own group, if left
    done
    for g in ${MADE_GROUPS[@]+"${MADE_GROUPS[@]}"}; do groupdel "$g" 2>/dev/null; done
    [ -n "${TMP:-}" ] && rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP # through the EXIT trap, so nothing is left behind

# ---- the accounts: never one that existed before this run ----
for name in "$UA" "$UB" "$UC" "$G"; do
    if getent passwd "$name" >/dev/null || getent group "$name" >/dev/null; then
        die "$name already exists"
    fi
done
groupadd "$G" || die "groupadd $G failed"
MADE_GROUPS+=("$G")
for u in "$UA" "$UB" "$UC"; do
    groups=()
    [ "$u" != "$UC" ] && groups=(-G "$G") # C is in no group but its own
    useradd -M -U -s /usr/sbin/nologin ${groups[@]+"${groups[@]}"} "$u" || die "cannot create user $u"
    MADE_USERS+=("$u")
done

# The programs, where the test's users can run them (the tree may sit in a private home).
TMP=$(mktemp -d "${TMPDIR:-/tmp}/varslot-users-test.XXXXXX") || die "mktemp failed"
chmod 755 "$TMP"
mkdir -p "$TMP/bin" && cp "$1" "$TMP/bin/varslot" && cp "$2" "$TMP/bin/hand-over" || die "cannot copy the programs"
chmod 755 "$TMP/bin" "$TMP/bin/"*
VARSLOT="$TMP/bin/varslot" HAND_OVER="$TMP/bin/hand-over"
SHIM=$(dirname "$1")/../lib/libvarslot-preload.so # where varslot run finds it: ../lib
mkdir -p "$TMP/lib" && cp "$SHIM" "$TMP/lib/" && chmod 755 "$TMP/lib" && chmod 644 "$TMP/lib/"* ||
    die "cannot copy $SHIM"
if [ $# -eq 4 ]; then
    mkdir -p "$TMP/gst" "$TMP/registry" && cp "$3" "$TMP/bin/vstest-gst-run" && cp "$4/libgstvarslot.so" "$TMP/gst/" ||
        die "cannot copy the GStreamer programs"
    chmod 755 "$TMP/bin/vstest-gst-run" "$TMP/gst" && chmod 644 "$TMP/gst/libgstvarslot.so"
    # Only the plugins the pipelines use: each user's first run scans them into its registry.
    system=$(pkg-config --variable=pluginsdir gstreamer-1.0) || die "pkg-config knows no gstreamer-1.0"
    for p in coreelements videotestsrc; do
        ln -s "$system/libgst$p.so" "$TMP/gst/" || die "no libgst$p.so in $system"
    done
    chmod 1777 "$TMP/registry" # each user's plugin registry
fi

# Processes run as USER with GROUP as their effective group and USER's groups (setpriv).
# run USER GROUP ARGS...: OUT, ERR and RC of one varslot command as USER.
run() {
    local u=$1 g=$2
    shift 2
    OUT=$(timeout 30 setpriv --reuid="$u" --regid="$g" --init-groups -- "$VARSLOT" "$@" 2>"$TMP/stderr")
    RC=$?
    ERR=$(cat "$TMP/stderr")
}
expect() { # expect DESC WANTED_RC PATTERN(ERE, on stdout then stderr) USER GROUP ARGS...
    local desc=$1 want=$2 pattern=$3
    shift 3
    run "$@"
    if [ "$RC" -ne "$want" ] || ! grep -Eq -- "$pattern" <<<"$OUT$ERR"; then
        not_ok "$desc" "wanted exit $want and /$pattern/" "exit status $RC" "stdout: $OUT" "stderr: $ERR"
    else
        ok "$desc"
    fi
}
expect_stat() { # expect_stat DESC JQ_FILTER: the segment as its owner sees it
    run "$UA" "$G" stat "$SEG" --json
    if [ "$RC" -ne 0 ] || ! jq -e "$2" <<<"$OUT" >/dev/null 2>&1; then
        not_ok "$1" "jq filter is not true: $2" "exit status $RC" "stdout: $OUT" "stderr: $ERR"
    else
        ok "$1"
    fi
}
check() { # check DESC COMMAND...
    local desc=$1
    shift
    if "$@"; then ok "$desc"; else not_ok "$desc" "condition failed: $*"; fi
}
# start USER GROUP OUTFILE CMD...: CMD in the background as USER; waits for its first line.
start() {
    local u=$1 g=$2 out=$3
    shift 3
    : >"$out"
    setpriv --reuid="$u" --regid="$g" --init-groups -- "$@" >"$out" 2>&1 &
    STARTED=$! # setpriv execs CMD: this is its pid
    PIDS+=("$STARTED")
    local i
    for ((i = 0; i < 200; i++)); do
        [ -s "$out" ] && return 0
        kill -0 "$STARTED" 2>/dev/null || return 0
        sleep 0.05
    done
}

# ---- a segment shared through a group ----
umask 077
expect "A creates a 0660 segment, its effective group G" 0 "^created $SEG" \
    "$UA" "$G" create "$SEG" --mode 0660 --classes 4K:8 --max-peers 4
umask 022
FILE=/dev/shm${SEG}
check "the segment is A's, of group G, mode 0660 despite A's umask 077" \
    test "$(stat -c '%U %G %a' "$FILE" 2>/dev/null)" = "$UA $G 660"

expect "B (in G) is refused another user's segment by default" 1 \
    "not permitted .*segment is owned by another user" "$UB" "$UB" stat "$SEG"
check "... and told about --trust-owner" grep -q -- "--trust-owner accepts" <<<"$ERR"
expect "B opens it with --trust-owner" 0 '"slot_count": ?8' "$UB" "$UB" stat "$SEG" --trust-owner --json
expect "C (not in G) is refused even with --trust-owner" 1 \
    "permission denied: the segment's mode does not let this user read and write it" \
    "$UC" "$UC" stat "$SEG" --trust-owner
expect "C is refused ls too" 1 "permission denied" "$UC" "$UC" ls "$SEG" --trust-owner

# ---- a slot handed from A's process to B's, and B's death reaped by A ----
start "$UA" "$G" "$TMP/give.out" "$HAND_OVER" give "$SEG" "frame from A"
GIVER=$STARTED
read -r word FROM HANDLE <"$TMP/give.out"
if [ "${word:-}" != gave ]; then
    not_ok "A's process joins and gives a slot" "its output: $(cat "$TMP/give.out")"
    FROM=0 HANDLE=0
else
    ok "A's process joins and gives a slot"
fi

start "$UB" "$UB" "$TMP/refused.out" "$HAND_OVER" take "$SEG" "$FROM" "$HANDLE"
wait "$STARTED"
rc=$?
check "B's process without trust cannot take it (exit 1: owned by another user)" \
    test "$rc" -eq 1 -a -n "$(grep 'owned by another user' "$TMP/refused.out")"

start "$UB" "$UB" "$TMP/take.out" "$HAND_OVER" take "$SEG" "$FROM" "$HANDLE" --trust-owner
TAKER=$STARTED
for ((i = 0; i < 200; i++)); do grep -q '^holding' "$TMP/take.out" && break; sleep 0.05; done
check "B's process, trusting, takes A's slot and reads A's bytes in place" \
    grep -qx "took frame from A" "$TMP/take.out"
check "... and holds a slot of its own" grep -q '^holding' "$TMP/take.out"

expect_stat "A sees B's process as a live peer holding both slots" \
    "(.peers | map(select(.pid == $TAKER)) | length == 1 and .[0].state == \"alive\" and .[0].slots == 2)
     and .classes[0].allocated == 2"
expect "A's reap takes nothing of B's live process" 0 "^reaped 0 " "$UA" "$G" reap "$SEG"
expect_stat "B's slots are still B's" ".classes[0].allocated == 2 and (.peers | length) == 2"

kill -9 "$TAKER" && wait "$TAKER" 2>/dev/null
expect_stat "B's SIGKILLed process shows dead, still holding its slots" \
    "(.peers | map(select(.pid == $TAKER)) | .[0].state == \"dead\" and .[0].slots == 2)"
expect "A reaps B's dead process" 0 "^reaped 1 dead peer " "$UA" "$G" reap "$SEG"
expect_stat "after the reap B's slots are free and only A's process is a peer" \
    ".classes[0].allocated == 0 and (.peers | length) == 1 and .peers[0].pid == $GIVER"

# ---- removal is the owner's ----
expect "B cannot remove A's segment" 1 "owned by another user" "$UB" "$UB" rm "$SEG"
check "the segment is still there" test -e "$FILE"

# ---- a stranger's world-writable segment is not trusted ----
SQUAT="/$PREFIX-squat"
expect "C creates a 0666 segment" 0 "^created " "$UC" "$UC" create "$SQUAT" --mode 0666 --classes 4K:8
expect "B refuses a 0666 segment of a group it is not in, even trusting" 1 \
    "its group is not one of this process's groups" "$UB" "$UB" stat "$SQUAT" --trust-owner

kill -9 "$GIVER" && wait "$GIVER" 2>/dev/null
expect "A removes its segment" 0 "^removed " "$UA" "$G" rm "$SEG"

# ---- the preload shim: B's program allocates in A's segment ----
SHSEG="/$PREFIX-shim"
umask 077
expect "A creates a 0660 segment for the shim" 0 "^created " "$UA" "$G" create "$SHSEG" --mode 0660 --classes 256K:8
umask 022
ALLOC=(python3 -c 'block = bytearray(200000)') # one allocation the shim routes (>= 64K)
expect "B's program without --trust runs, its block falling back" 0 "routed=0 bytes=0 fallback=[1-9]" \
    "$UB" "$UB" run --segment "$SHSEG" --min-size 64K --stats -- "${ALLOC[@]}"
check "... with one warning naming the other owner" \
    test "$(grep -c "^varslot: cannot open or create $SHSEG: .*owned by another user" <<<"$ERR")" -eq 1
expect "B's program with --trust routes its block into A's segment" 0 \
    "^varslot: pid=[0-9]+ routed=[1-9][0-9]* bytes=[0-9]+ fallback=[0-9]+ .*segment=$SHSEG" \
    "$UB" "$UB" run --trust --segment "$SHSEG" --min-size 64K --stats -- "${ALLOC[@]}"
expect "... and so does VARSLOT_TRUST=yes" 0 "routed=[1-9]" \
    "$UB" "$UB" run --segment "$SHSEG" --min-size 64K --stats -- env VARSLOT_TRUST=yes "${ALLOC[@]}"
expect_stat_of() { # the shim's segment: B's program left it (nothing held, no peer)
    run "$UA" "$G" stat "$SHSEG" --json
    check "$1" jq -e "$2" <<<"$OUT"
}
expect_stat_of "B's programs left A's segment as they found it" \
    '.classes[0].allocated == 0 and .peers == []'
expect "A removes the shim's segment" 0 "^removed " "$UA" "$G" rm "$SHSEG"

# ---- GStreamer: A's varslotsink feeds B's varslotsrc ----
if [ $# -eq 4 ]; then
    GSEG="/$PREFIX-gst"
    SOCKDIR="$TMP/sock" SOCK="$TMP/sock/cam.sock"
    mkdir "$SOCKDIR" && chown "$UA:$G" "$SOCKDIR" && chmod 0770 "$SOCKDIR" # A's and G's only
    # gst USER GROUP OUT ERR PIPELINE...: vstest-gst-run in the background as USER.
    gst() {
        local u=$1 g=$2 out=$3 err=$4
        shift 4
        GST_PLUGIN_SYSTEM_PATH_1_0="" GST_PLUGIN_PATH=$TMP/gst GST_REGISTRY=$TMP/registry/$u.bin \
            setpriv --reuid="$u" --regid="$g" --init-groups -- "$TMP/bin/vstest-gst-run" --timeout 30 "$@" \
            >"$out" 2>"$err" &
        STARTED=$!
        PIDS+=("$STARTED")
    }
    prop() { sed -n "s/^$2=//p" "$1" | tail -n 1; } # prop FILE NAME.PROP
    FRAMES="videotestsrc num-buffers=20 ! video/x-raw,format=GRAY8,width=64,height=48"

    umask 077
    expect "A creates a 0660 segment for the pipeline" 0 "^created " "$UA" "$G" create "$GSEG" --mode 0660 --classes 64K:16
    umask 007 # the sink's socket: A's and G's
    gst "$UA" "$G" "$TMP/p.out" "$TMP/p.err" --print s.buffers-sent \
        "$FRAMES ! varslotsink name=s socket-path=$SOCK segment=$GSEG"
    PRODUCER=$STARTED
    umask 022
    for ((i = 0; i < 200; i++)); do [ -S "$SOCK" ] && break; sleep 0.05; done
    check "A's varslotsink listens" test -S "$SOCK"

    gst "$UB" "$UB" "$TMP/c0.out" "$TMP/c0.err" "varslotsrc socket-path=$SOCK ! fakesink"
    wait "$STARTED"
    rc=$?
    check "B's varslotsrc without trust-owner is refused A's segment (error, exit 1)" \
        test "$rc" -eq 1 -a -n "$(grep 'owned by another user' "$TMP/c0.err")"

    gst "$UB" "$UB" "$TMP/c1.out" "$TMP/c1.err" --print r.buffers-received \
        "varslotsrc name=r socket-path=$SOCK trust-owner=true ! fakesink"
    wait "$STARTED"
    crc=$?
    wait "$PRODUCER"
    prc=$?
    got=$(prop "$TMP/c1.out" r.buffers-received)
    check "B's varslotsrc with trust-owner=true runs to EOS" test "$crc" -eq 0
    check "... and takes A's frames in place (buffers-received ${got:-none})" test "${got:-0}" -gt 0
    check "A's pipeline runs to EOS" test "$prc" -eq 0
    [ "$crc" -eq 0 ] && [ "$prc" -eq 0 ] || sed 's/^/#   /' "$TMP/c1.err" "$TMP/p.err"

    # The other way round: B's producer in A's segment (no consumer: it drops).
    gst "$UB" "$UB" "$TMP/b0.out" "$TMP/b0.err" "$FRAMES ! varslotsink wait-for-connection=false \
        socket-path=$TMP/registry/b.sock segment=$GSEG"
    wait "$STARTED"
    rc=$?
    check "B's varslotsink without trust-owner is refused A's segment" \
        test "$rc" -eq 1 -a -n "$(grep 'owned by another user' "$TMP/b0.err")"
    gst "$UB" "$UB" "$TMP/b1.out" "$TMP/b1.err" --print s.buffers-sent "$FRAMES ! varslotsink name=s \
        wait-for-connection=false trust-owner=true socket-path=$TMP/registry/b.sock segment=$GSEG"
    wait "$STARTED"
    rc=$?
    check "B's varslotsink with trust-owner=true uses A's segment to EOS" test "$rc" -eq 0
    [ "$rc" -eq 0 ] || sed 's/^/#   /' "$TMP/b1.err"
    expect "A removes the pipeline's segment" 0 "^removed " "$UA" "$G" rm "$GSEG"
fi
echo "# $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
