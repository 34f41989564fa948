#!/usr/bin/env bash
# Real two-process runs of varslotsink / varslotsrc with gst-launch-1.0 and vstest-gst-run.
# Every process runs under `timeout`; every case has its own socket path and segment name,
# and the EXIT trap kills what is left and removes both.
#   (a) videotestsrc ! varslotsink | varslotsrc ! checksumsink: per-frame "<pts> <sha1>"
#       identical to one process, timestamps included; caps arrive with no capsfilter, each
#       buffer's GstVideoMeta as videotestsrc made it
#   (b) no copy: each buffer the consumer gets is the very bytes (file, offset) videotestsrc
#       wrote in the producer (vstest-gst-run --trace on both sides); copied-buffers=0 and
#       buffers-sent=N
#   (c) 20,000 64x64 GRAY8 buffers complete within the timeout, identical checksums, no copy
#   (d) kill -9 the producer: the consumer errors out quickly (or, with wait-for-producer,
#       waits and takes the next producer's stream); reap leaves no slot allocated
#   (e) kill -9 the consumer: the producer goes on to EOS (wait-for-connection=false) or waits
#       for the next consumer and goes on (true); reap leaves no slot allocated
#   (f) fan-out to two consumers, identical checksums; each frame reaches one of them uncopied
#   (g) two producers in one segment, each to its own consumer, no copy
#   (h) gst-inspect-1.0 varslot / varslotsink / varslotsrc: no WARNING or CRITICAL
#   (i) after clean shutdowns nothing is left in /dev/shm and no socket file remains
# The plugin's own GST_WARNING/GST_ERROR lines (GST_DEBUG=varslot:2) fail the clean cases.
#
# Kills land once the consumer has frames, and waits end on what the processes report (frames
# received, counters the runner prints on SIGUSR1, log lines, a listening socket), not on
# sleeps. Only (e2)'s "the producer waits" watches for a second: load can make it see less,
# never fail a producer that waits.
#
# Usage, from the repo root (or anywhere): tests/gst/test-pipelines.sh [CASE...]
#   CASE: h a1 a2 b c d1 d2 d3 e1 e2 e3 f g g-race, or a, d, e for all of theirs (b runs
#   a1 and a2, where its checks are); none: every case. (i) checks run with their cases.
#   VSTEST_GST_RUN   the vstest-gst-run binary (default build/tests/vstest-gst-run, which
#                    make builds: tests/need.sh)
set -u

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
die() { echo "test-pipelines: $*" >&2; exit 1; }

ALL_CASES=(h a1 a2 c d1 d2 d3 e1 e2 e3 f g g-race)
CASES=()
for c in "$@"; do
    case $c in
    a | b) CASES+=(a1 a2) ;;
    d | e) CASES+=("${c}1" "${c}2" "${c}3") ;;
    *) [[ " ${ALL_CASES[*]} " == *" $c "* ]] || die "no case '$c' (cases: ${ALL_CASES[*]} a b d e)"
       CASES+=("$c") ;;
    esac
done
want() { [ ${#CASES[@]} -eq 0 ] || [[ " ${CASES[*]} " == *" $1 "* ]]; } # want CASE: run it

. "$ROOT/tests/need.sh"
need build/lib/gstreamer-1.0/libgstvarslot.so build/bin/varslot
[ -n "${VSTEST_GST_RUN:-}" ] || need build/tests/vstest-gst-run
PLUGIN_DIR=$ROOT/build/lib/gstreamer-1.0
VARSLOT=$ROOT/build/bin/varslot
RUNNER=${VSTEST_GST_RUN:-$ROOT/build/tests/vstest-gst-run}
[ -x "$RUNNER" ] || die "VSTEST_GST_RUN: not an executable: $RUNNER"
for tool in gst-launch-1.0 gst-inspect-1.0 jq timeout stdbuf; do
    command -v "$tool" >/dev/null || die "$tool is required"
done

# Nothing of the caller's environment may change what is tested.
for v in $(compgen -e | grep -E '^(VARSLOT_|GST_)'); do unset "$v"; done
unset LD_PRELOAD
export GST_PLUGIN_PATH=$PLUGIN_DIR
export GST_REGISTRY=$ROOT/build/tests/gst-registry-pipelines.bin
export GST_DEBUG=varslot:2 GST_DEBUG_NO_COLOR=1

PREFIX="vstest-gstp-$$"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/vstest-gstp.XXXXXX") || die "mktemp failed"
PIDS=() # the timeout processes we started
kill_tree() { # kill_tree PID: PID's descendants, then PID, by pid
    local pid=$1 child
    for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do kill_tree "$child"; done
    kill -9 "$pid" 2>/dev/null
}
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && kill_tree "$pid"; done
    wait 2>/dev/null
    for f in /dev/shm/"$PREFIX"-*; do
        [ -e "$f" ] && { timeout 30 "$VARSLOT" rm "/${f#/dev/shm/}" >/dev/null 2>&1 || rm -f "$f"; }
    done
    [ -n "${VSTEST_KEEP:-}" ] && echo "kept $TMP" || rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

. "$ROOT/tests/lib.sh"
check() { # check DESCRIPTION COMMAND... (details of a failure on the command's stdout)
    local what=$1 out
    shift
    if out=$("$@" 2>&1); then ok "$what"; else not_ok "$what" "${out:0:3000}"; fi
}

# ---- helpers ----
seg() { echo "/$PREFIX-$1"; }
sock() { echo "$TMP/$1.sock"; }
# bg VAR TIMEOUT OUT ERR CMD...: start CMD under timeout in the background; VAR = the pid of
# a subshell around timeout (which exits with timeout's status instead of dying of the signal
# that killed CMD, so bash has no "Killed" job to report)
bg() {
    local var=$1 t=$2 out=$3 err=$4
    shift 4
    (
        timeout -k 5 "$t" "$@" >"$out" 2>"$err"
        exit $?
    ) 2>/dev/null &
    local pid=$!
    PIDS+=("$pid")
    printf -v "$var" '%s' "$pid"
}
# child_of PID: the command a bg PID runs (subshell -> timeout -> command)
child_of() {
    local i c pid=$1
    for _ in 1 2; do
        c=
        for ((i = 0; i < 50; i++)); do
            c=$(ps -o pid= --ppid "$pid" 2>/dev/null | head -n 1 | tr -d ' ')
            [ -n "$c" ] && break
            sleep 0.1
        done
        [ -n "$c" ] || return 1
        pid=$c
    done
    echo "$pid"
}
# finish PID SECS: wait up to SECS for a background process; its exit status, or 255 if it
# is still running then (it is killed)
finish() {
    local pid=$1 secs=$2 i
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill_tree "$pid"
        wait "$pid" 2>/dev/null
        return 255
    fi
    wait "$pid"
}
running() { kill -0 "$1" 2>/dev/null; }
wait_until() { # wait_until SECS COMMAND...: until COMMAND succeeds; fails (with its output) after SECS
    local secs=$1 i
    shift
    for ((i = 0; i < secs * 20; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    "$@"
}
# A sink accepts connections once its socket listens, not when the file appears (bind, then
# listen; and a killed sink leaves its file behind).
listening() { awk -v p="$1" '$4 == "00010000" && $NF == p { f = 1 } END { exit !f }' /proc/net/unix; }
wait_socket() { wait_until 20 listening "$1"; }
has_line() { grep -q -E "$2" "$1" 2>/dev/null || { echo "no line matching '$2' in $1"; return 1; }; }
has_frames() { # has_frames OUT N: OUT has at least N checksum lines
    local n
    n=$(sums "$1" | wc -l)
    [ "$n" -ge "$2" ] || { echo "$n frames, want at least $2"; return 1; }
}
# snapshot PID OUT NAME: NAME's value now. vstest-gst-run (PID, its stdout OUT, already
# "started") prints its --print list on SIGUSR1.
snapshot() {
    local n
    n=$(grep -c "^$3=" "$2")
    kill -USR1 "$1" 2>/dev/null || { echo "no process $1"; return 1; }
    wait_until 20 more_lines "$2" "^$3=" "$n" || return 1
    prop "$2" "$3"
}
idle() { # idle PID SENT0 DROPPED0 SENT1 DROPPED1: still running, nothing sent, at most one frame
    # dropped (the one on its way when the consumer died)
    running "$1" || { echo "it exited"; return 1; }
    [[ "$2 $3 $4 $5" =~ ^[0-9]+\ [0-9]+\ [0-9]+\ [0-9]+$ ]] || { echo "counters: '$2' '$3' '$4' '$5'"; return 1; }
    [ "$4" -eq "$2" ] && [ "$5" -le $(($3 + 1)) ] || { echo "sent $2 -> $4, dropped $3 -> $5"; return 1; }
}
more_lines() { [ "$(grep -c "$2" "$1")" -gt "$3" ]; } # more_lines FILE REGEX N
# wait_prop PID OUT NAME TEST VALUE SECS: until NAME TEST VALUE (-ge, -eq...), by snapshots
wait_prop() {
    local v='' i
    for ((i = 0; i < $6 * 10; i++)); do
        v=$(snapshot "$1" "$2" "$3") && test "$v" "$4" "$5" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$3=$v after $6 s, want $4 $5"
    return 1
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# checksum lines only (gst-launch prints status text on stdout too)
sums() { grep -E '^[0-9]+:[0-9]{2}:[0-9]{2}\.[0-9]{9} [0-9a-f]+$' "$1"; }
hashes() { sums "$1" | awk '{print $2}'; }
# vstest-gst-run --trace lines: "buffer PTS DEV:INODE@OFFSET+SIZE...", where each buffer's bytes are
traced() { grep -h '^buffer ' "$@"; }
same_bytes() { # same_bytes PRODUCER CONSUMER N: the consumer's N buffers are the producer's bytes
    local n
    n=$(traced "$2" | wc -l)
    [ "$n" -eq "$3" ] || { echo "$n buffers traced at the consumer, want $3"; return 1; }
    diff <(traced "$1") <(traced "$2") | head -n 10
    [ "${PIPESTATUS[0]}" -eq 0 ]
}
same_layout() { # same_layout PRODUCER CONSUMER N: N buffers' GstVideoMeta, as the producer's upstream made it
    local n
    n=$(grep -c '^video ' "$2")
    [ "$n" -eq "$3" ] || { echo "$n buffers with a GstVideoMeta at the consumer, want $3"; return 1; }
    diff <(grep '^video ' "$1") <(grep '^video ' "$2") | head -n 10
    [ "${PIPESTATUS[0]}" -eq 0 ]
}
bytes_of() { # bytes_of PRODUCER CONSUMER MIN: each of the consumer's buffers (MIN at least) too
    local n other
    n=$(traced "$2" | wc -l)
    [ "$n" -ge "$3" ] || { echo "$n buffers traced at the consumer, want at least $3"; return 1; }
    other=$(comm -13 <(traced "$1" | sort) <(traced "$2" | sort))
    [ -z "$other" ] || { echo "not where the producer's buffers were:"; head -n 10 <<<"$other"; return 1; }
}
in_place() { # in_place PRODUCER CONSUMER: every buffer the consumer traced is one the producer
    # traced, in the same place (file and offset): it was read where it was written
    local have n
    have=$(traced "$2" | wc -l)
    n=$(comm -12 <(traced "$1" | sort -u) <(traced "$2" | sort -u) | wc -l)
    [ "$have" -gt 0 ] && [ "$n" -eq "$(traced "$2" | sort -u | wc -l)" ] ||
        { echo "$n of the consumer's $have buffers are where the producer wrote them"; return 1; }
}
one_file() { # one_file OUT...: every traced buffer is in one file
    local f
    f=$(traced "$@" | awk '{ for (i = 3; i <= NF; i++) print substr($i, 1, index($i, "@") - 1) }' | sort -u)
    [ "$(wc -l <<<"$f")" -eq 1 ] && [ -n "$f" ] || { echo "files: ${f//$'\n'/ }"; return 1; }
}
# The one-process reference: videotestsrc ARGS ! CAPS ! checksumsink
reference() { # reference OUT N CAPS [videotestsrc properties...]
    local out=$1 n=$2 caps=$3
    shift 3
    # shellcheck disable=SC2086
    timeout 300 gst-launch-1.0 -q videotestsrc num-buffers="$n" "$@" ! $caps ! checksumsink \
        >"$out" 2>"$out.err" || { echo "reference run failed: $(head -c 500 "$out.err")"; return 1; }
}
# The plugin's warnings and errors, GLib warnings and criticals, element warnings.
warnings() { grep -h -E '(CRITICAL|WARNING) \*\*| (WARN|ERROR) +varslot |^WARNING: from element' "$@"; }
no_warnings() { # no_warnings FILE...: prints the offending lines, fails if any
    local w
    w=$(warnings "$@")
    [ -z "$w" ] || { echo "$w" | head -n 20; return 1; }
}
same_sums() { # same_sums REF GOT N: N lines, identical, with real timestamps
    local n
    n=$(sums "$2" | wc -l)
    [ "$n" -eq "$3" ] || { echo "$n checksum lines, want $3"; return 1; }
    sums "$2" | grep -q '^99:99:99' && { echo "buffers without a timestamp"; return 1; }
    diff <(sums "$1") <(sums "$2") | head -n 10
    [ "${PIPESTATUS[0]}" -eq 0 ]
}
ends_with() { # ends_with REF GOT: GOT's last hashes are all of REF's
    local n
    n=$(hashes "$1" | wc -l)
    diff <(hashes "$1") <(hashes "$2" | tail -n "$n") | head -n 10
    [ "${PIPESTATUS[0]}" -eq 0 ]
}
tail_of() { # tail_of REF GOT MIN: GOT's hashes are the last lines of REF's, at least MIN
    local n
    n=$(hashes "$2" | wc -l)
    [ "$n" -ge "$3" ] || { echo "$n frames, want at least $3"; return 1; }
    diff <(hashes "$1" | tail -n "$n") <(hashes "$2") | head -n 10
    [ "${PIPESTATUS[0]}" -eq 0 ]
}
prop() { sed -n "s/^$2=//p" "$1" | tail -n 1; } # prop FILE NAME.PROP
eq() { [ "$1" = "$2" ] || { echo "got '$1', want '$2'"; return 1; }; }
ge() { [ -n "$1" ] && [ "$1" -ge "$2" ] || { echo "got '$1', want >= $2"; return 1; }; }
exit_is() { [ "$1" -eq "$2" ] || { echo "exit status $1, want $2"; shift 2; [ $# -gt 0 ] && head -c 1500 "$@"; return 1; }; }
gone() { # gone SEGMENT SOCKET...: nothing left behind
    local s=$1 f
    shift
    [ ! -e "/dev/shm/${s#/}" ] || { echo "/dev/shm/${s#/} remains"; return 1; }
    for f in "$@"; do [ ! -e "$f" ] || { echo "$f remains"; return 1; }; done
}
no_slot_held() { # no_slot_held SEGMENT: after reap, nothing allocated and no peer
    local json
    timeout 30 "$VARSLOT" reap "$1" >/dev/null 2>&1
    json=$(timeout 30 "$VARSLOT" stat --json "$1" 2>&1) || { echo "stat: $json"; return 1; }
    jq -e '([.classes[].allocated] | add) == 0 and (.peers | length) == 0 and .unowned == 0' \
        >/dev/null <<<"$json" && return 0
    echo "allocated per class: $(jq -c '[.classes[].allocated]' <<<"$json")"
    echo "peers: $(jq -c '.peers' <<<"$json") unowned: $(jq -c '.unowned' <<<"$json")"
    return 1
}

# ---- (h) gst-inspect, first, on a fresh registry: the plugin is scanned here ----
if want h; then
    echo "# (h) gst-inspect-1.0"
    (
        export GST_REGISTRY=$TMP/inspect-registry.bin
        before=$(compgen -G "/dev/shm/varslot-gst*" | wc -l)
        for what in varslot varslotsink varslotsrc "$PLUGIN_DIR/libgstvarslot.so"; do
            timeout 60 gst-inspect-1.0 "$what" >"$TMP/inspect.out" 2>&1
            rc=$?
            name=${what##*/}
            check "(h) gst-inspect-1.0 $name exits 0" exit_is $rc 0 "$TMP/inspect.out"
            check "(h) gst-inspect-1.0 $name prints no WARNING or CRITICAL" \
                bash -c "! grep -n -E 'WARN|CRITICAL|ERROR' '$TMP/inspect.out'"
            case $what in
            varslot | */libgstvarslot.so)
                check "(h) $name lists both elements" grep -q -E 'varslotsink.*varslotsrc|2 elements' "$TMP/inspect.out" ;;
            varslotsink)
                check "(h) varslotsink shows its properties" bash -c "for p in socket-path segment wait-for-connection \
                    buffers-sent copied-buffers fanout-copies dropped fallbacks clients; do grep -q \"^  \$p \" '$TMP/inspect.out' \
                    || { echo \"no \$p\"; exit 1; }; done" ;;
            varslotsrc)
                check "(h) varslotsrc shows its properties" bash -c "for p in socket-path is-live wait-for-producer do-timestamp \
                    buffers-received buffers-refused; do grep -q \"^  \$p \" '$TMP/inspect.out' || { echo \"no \$p\"; exit 1; }; done" ;;
            esac
        done
        timeout 60 gst-inspect-1.0 -b >"$TMP/blacklist.out" 2>&1
        check "(h) the plugin is not blacklisted" bash -c "! grep -n varslot '$TMP/blacklist.out'"
        after=$(compgen -G "/dev/shm/varslot-gst*" | wc -l)
        check "(h) inspecting creates no segment" eq "$after" "$before"
        echo "$PASSED $FAILED" >"$TMP/counts"
    )
    read -r PASSED FAILED <"$TMP/counts"
fi

# ---- (a)+(b) per-frame checksums across two processes, caps without capsfilter ----
# (a2) has odd sizes, so the I420 planes have padded strides that both sides must read the
# same way: the consumer's GstVideoMeta must be the producer's (the traces compare them).
# videotestsrc leaves the padding bytes unwritten (they differ even between two one-process
# runs), so there both sides hash videoconvert's packed BGRx instead.
for variant in "a1 120 BGRx 640 480 30/1" "a2 60 I420 322 242 25/1 videoconvert ! video/x-raw,format=BGRx !"; do
    read -r id n fmt w h fps post <<<"$variant"
    want "$id" || continue
    caps=video/x-raw,format=$fmt,width=$w,height=$h,framerate=$fps
    echo "# ($id) $n frames $caps, producer and consumer in two processes"
    S=$(sock "$id") G=$(seg "$id")
    # shellcheck disable=SC2086
    reference "$TMP/$id.ref" "$n" "$caps${post:+ ! ${post% !}}" pattern=ball || not_ok "($id) reference run"
    bg P 60 "$TMP/$id.p.out" "$TMP/$id.p.err" "$RUNNER" --print s.copied-buffers --print s.buffers-sent \
        --print s.dropped --trace s.sink \
        "videotestsrc num-buffers=$n pattern=ball ! $caps ! varslotsink name=s socket-path=$S segment=$G"
    wait_socket "$S" || not_ok "($id) the sink listens at $S"
    bg C 60 "$TMP/$id.c.out" "$TMP/$id.c.err" "$RUNNER" --trace r.src \
        "varslotsrc name=r socket-path=$S ! $post checksumsink sync=false"
    finish "$C" 60; crc=$?
    finish "$P" 60; prc=$?
    check "($id) consumer exits 0 at EOS" exit_is $crc 0 "$TMP/$id.c.err"
    check "($id) producer exits 0 at EOS" exit_is $prc 0 "$TMP/$id.p.err"
    check "($id) per-frame '<pts> <sha1>' identical to one process, $n frames" same_sums "$TMP/$id.ref" "$TMP/$id.c.out" "$n"
    check "($id) caps reach the consumer with no capsfilter" \
        has_line "$TMP/$id.c.out" "^caps video/x-raw, format=\(string\)$fmt, width=\(int\)$w, height=\(int\)$h"
    check "($id) each frame's GstVideoMeta (plane offsets, strides) reaches the consumer as videotestsrc made it" \
        same_layout "$TMP/$id.p.out" "$TMP/$id.c.out" "$n"
    check "(b) $id: each frame reaches the consumer in the bytes videotestsrc wrote (same file, offset): no copy" \
        same_bytes "$TMP/$id.p.out" "$TMP/$id.c.out" "$n"
    check "(b) $id: copied-buffers=0 behind videotestsrc" eq "$(prop "$TMP/$id.p.out" s.copied-buffers)" 0
    check "(b) $id: buffers-sent=$n" eq "$(prop "$TMP/$id.p.out" s.buffers-sent)" "$n"
    check "($id) no warnings from either process" no_warnings "$TMP/$id.p.err" "$TMP/$id.c.err"
    check "(i) $id: clean shutdown leaves no segment and no socket" gone "$G" "$S"
done

# ---- (c) 20,000 small buffers: no deadlock, identical checksums ----
if want c; then
    echo "# (c) 20000 64x64 GRAY8 buffers"
    N=20000 CAPS=video/x-raw,format=GRAY8,width=64,height=64,framerate=30/1
    S=$(sock c) G=$(seg c)
    reference "$TMP/c.ref" $N $CAPS pattern=ball || not_ok "(c) reference run"
    t0=$(now_ms)
    bg P 120 "$TMP/c.p.out" "$TMP/c.p.err" "$RUNNER" --print s.copied-buffers --print s.buffers-sent --time \
        --trace s.sink "videotestsrc num-buffers=$N pattern=ball ! $CAPS ! varslotsink name=s socket-path=$S segment=$G"
    wait_socket "$S" || not_ok "(c) the sink listens"
    bg C 120 "$TMP/c.c.out" "$TMP/c.c.err" "$RUNNER" --trace r.src "varslotsrc name=r socket-path=$S ! checksumsink sync=false"
    finish "$C" 130; crc=$?
    finish "$P" 30; prc=$?
    echo "# (c) $(( $(now_ms) - t0 )) ms for $N buffers (producer: $(prop "$TMP/c.p.out" elapsed) s)"
    check "(c) consumer completes (no deadlock, no timeout)" exit_is $crc 0 "$TMP/c.c.err"
    check "(c) producer completes" exit_is $prc 0 "$TMP/c.p.err"
    check "(c) $N checksums identical to one process" same_sums "$TMP/c.ref" "$TMP/c.c.out" $N
    check "(c) each buffer reaches the consumer in the bytes videotestsrc wrote: no copy" same_bytes "$TMP/c.p.out" "$TMP/c.c.out" $N
    check "(c) copied-buffers=0, buffers-sent=$N" eq "$(prop "$TMP/c.p.out" s.copied-buffers)/$(prop "$TMP/c.p.out" s.buffers-sent)" "0/$N"
    check "(c) no warnings" no_warnings "$TMP/c.p.err" "$TMP/c.c.err"
    check "(i) c: clean shutdown leaves no segment and no socket" gone "$G" "$S"
fi

# Segments for the kill cases are made beforehand, so `varslot stat` can look at them after
# everyone is gone (a pipeline's own segment is removed by the last peer out).
LIVE_CAPS=video/x-raw,format=BGRx,width=640,height=480,framerate=30/1
make_seg() { timeout 30 "$VARSLOT" create "$1" --classes 64K:64,2M:32 >/dev/null || not_ok "varslot create $1"; }

# ---- (d) kill -9 the producer ----
if want d1; then
    echo "# (d1) kill -9 the producer mid-stream; the consumer must end with an error"
    S=$(sock d1) G=$(seg d1)
    make_seg "$G"
    bg P 60 "$TMP/d1.p.out" "$TMP/d1.p.err" gst-launch-1.0 videotestsrc is-live=true pattern=ball ! \
        $LIVE_CAPS ! varslotsink socket-path="$S" segment="$G"
    wait_socket "$S" || not_ok "(d1) the sink listens"
    PP=$(child_of "$P") # (the pids to signal are looked up before the waits: ps takes time)
    bg C 60 "$TMP/d1.c.out" "$TMP/d1.c.err" stdbuf -oL gst-launch-1.0 -q varslotsrc socket-path="$S" ! checksumsink sync=false
    check "(d1) the consumer receives frames before the kill" wait_until 30 has_frames "$TMP/d1.c.out" 5
    check "(d1) both run before the kill" bash -c "kill -0 $P && kill -0 $C"
    t0=$(now_ms)
    kill -9 "$PP"
    finish "$C" 20; crc=$?
    dt=$(( $(now_ms) - t0 ))
    finish "$P" 10 >/dev/null
    echo "# (d1) consumer exited $dt ms after the kill, status $crc"
    check "(d1) the consumer exits with an error, does not hang" bash -c "[ $crc -ne 0 ] && [ $crc -ne 255 ] && [ $crc -ne 124 ] || { echo 'status $crc'; exit 1; }"
    check "(d1) ... within a few seconds (${dt} ms)" bash -c "[ $dt -lt 5000 ]"
    check "(d1) ... saying the producer went away" grep -q -i "went away" "$TMP/d1.c.err"
    check "(d1) after reap no slot is allocated and no peer is left" no_slot_held "$G"
    timeout 30 "$VARSLOT" rm "$G" >/dev/null 2>&1
    rm -f "$S" # a SIGKILLed sink cannot remove its socket; (d2) shows the next sink replaces it
fi

if want d2; then
    echo "# (d2) kill -9 the producer; a consumer with wait-for-producer=true takes the next producer's stream"
    S=$(sock d2) G=$(seg d2)
    make_seg "$G"
    reference "$TMP/d2.ref" 30 $LIVE_CAPS pattern=ball || not_ok "(d2) reference run"
    bg P 60 "$TMP/d2.p.out" "$TMP/d2.p.err" gst-launch-1.0 videotestsrc is-live=true pattern=ball ! \
        $LIVE_CAPS ! varslotsink socket-path="$S" segment="$G"
    wait_socket "$S" || not_ok "(d2) the sink listens"
    PP=$(child_of "$P")
    bg C 60 "$TMP/d2.c.out" "$TMP/d2.c.err" stdbuf -oL gst-launch-1.0 -q varslotsrc socket-path="$S" wait-for-producer=true ! \
        checksumsink sync=false
    check "(d2) the consumer receives frames before the kill" wait_until 30 has_frames "$TMP/d2.c.out" 5
    kill -9 "$PP"
    finish "$P" 10 >/dev/null
    # it says so (GST_WARNING) once it saw the producer go
    check "(d2) the consumer waits for a producer" wait_until 20 has_line "$TMP/d2.c.err" "producer went away .*waiting for it"
    check "(d2) ... and is still running" running "$C"
    bg P2 60 "$TMP/d2.p2.out" "$TMP/d2.p2.err" "$RUNNER" --print s.buffers-sent \
        "videotestsrc num-buffers=30 pattern=ball ! $LIVE_CAPS ! varslotsink name=s socket-path=$S segment=$G"
    finish "$P2" 30; p2rc=$?
    finish "$C" 20; crc=$?
    check "(d2) the new producer (replacing the dead one's socket) finishes" exit_is $p2rc 0 "$TMP/d2.p2.err"
    check "(d2) the consumer reaches the new producer's EOS" exit_is $crc 0 "$TMP/d2.c.err"
    check "(d2) the new producer's 30 frames arrive intact, after the old ones" ends_with "$TMP/d2.ref" "$TMP/d2.c.out"
    check "(d2) after reap no slot is allocated and no peer is left" no_slot_held "$G"
    timeout 30 "$VARSLOT" rm "$G" >/dev/null 2>&1
fi

if want d3; then
    echo "# (d3) interrupt the producer (SIGINT, gst-launch-1.0 without -e: it stops without EOS)"
    S=$(sock d3) G=$(seg d3)
    bg P 60 "$TMP/d3.p.out" "$TMP/d3.p.err" gst-launch-1.0 videotestsrc is-live=true pattern=ball ! \
        $LIVE_CAPS ! varslotsink socket-path="$S" segment="$G"
    wait_socket "$S" || not_ok "(d3) the sink listens"
    PP=$(child_of "$P")
    bg C 60 "$TMP/d3.c.out" "$TMP/d3.c.err" stdbuf -oL gst-launch-1.0 -q varslotsrc socket-path="$S" ! checksumsink sync=false
    check "(d3) the consumer receives frames before the interrupt" wait_until 30 has_frames "$TMP/d3.c.out" 5
    kill -INT "$PP"
    finish "$P" 20; prc=$?
    finish "$C" 20; crc=$?
    check "(d3) the producer stops (exit 0)" exit_is $prc 0 "$TMP/d3.p.err"
    check "(d3) the consumer ends with an error, saying the producer went away" \
        bash -c "[ $crc -ne 0 ] && [ $crc -ne 255 ] && grep -q -i 'went away' '$TMP/d3.c.err' || { echo 'status $crc'; exit 1; }"
    check "(d3) no warnings from the producer" no_warnings "$TMP/d3.p.err"
    check "(i) d3: nothing left behind" gone "$G" "$S"
fi

# ---- (e) kill -9 the consumer ----
# The producers are live and run until the test has seen what it waits for, so a kill lands
# mid-stream however slow the machine is; the runner's SIGINT ends them with an EOS.
if want e1; then
    echo "# (e1) kill -9 the consumer, wait-for-connection=false: the producer runs on without it, to EOS"
    S=$(sock e1) G=$(seg e1)
    make_seg "$G"
    bg P 60 "$TMP/e1.p.out" "$TMP/e1.p.err" "$RUNNER" --print s.buffers-sent --print s.dropped --print s.clients \
        "videotestsrc is-live=true pattern=ball ! $LIVE_CAPS ! varslotsink name=s wait-for-connection=false socket-path=$S segment=$G"
    wait_socket "$S" || not_ok "(e1) the sink listens"
    PR=$(child_of "$P")
    bg C 60 "$TMP/e1.c.out" "$TMP/e1.c.err" stdbuf -oL gst-launch-1.0 -q varslotsrc socket-path="$S" ! checksumsink sync=false
    CC=$(child_of "$C")
    check "(e1) the consumer receives frames" wait_until 30 has_frames "$TMP/e1.c.out" 5
    d0=$(snapshot "$PR" "$TMP/e1.p.out" s.dropped) || not_ok "(e1) the producer reports its counters"
    d0=${d0:-0} # what it dropped before the consumer came: nothing is dropped while it is there
    kill -9 "$CC"
    finish "$C" 10 >/dev/null
    check "(e1) the producer goes on without its consumer, dropping frames" \
        wait_prop "$PR" "$TMP/e1.p.out" s.dropped -gt "$d0" 20
    kill -INT "$PR"
    finish "$P" 20; prc=$?
    check "(e1) the producer reaches EOS (exit 0) without its consumer" exit_is $prc 0 "$TMP/e1.p.err"
    check "(e1) it sent frames before the kill" ge "$(prop "$TMP/e1.p.out" s.buffers-sent)" 5
    check "(e1) and dropped the rest" ge "$(prop "$TMP/e1.p.out" s.dropped)" $((d0 + 1))
    check "(e1) it noticed the consumer left (clients=0)" eq "$(prop "$TMP/e1.p.out" s.clients)" 0
    check "(e1) after reap no slot is allocated and no peer is left" no_slot_held "$G"
    timeout 30 "$VARSLOT" rm "$G" >/dev/null 2>&1
fi

if want e2; then
    echo "# (e2) kill -9 the consumer, wait-for-connection=true: the producer waits, a new consumer gets the rest"
    N=150 # 5 s live: the new consumer gets most of them, however late the kill lands
    S=$(sock e2) G=$(seg e2)
    make_seg "$G"
    reference "$TMP/e2.ref" $N $LIVE_CAPS pattern=ball || not_ok "(e2) reference run"
    # The consumer is there first: a live producer that waited for it would catch up in a burst
    # and could send every frame before the kill.
    bg C 60 "$TMP/e2.c.out" "$TMP/e2.c.err" "$RUNNER" "varslotsrc socket-path=$S wait-for-producer=true ! checksumsink sync=false"
    CC=$(child_of "$C")
    wait_until 30 has_line "$TMP/e2.c.out" '^started$' || not_ok "(e2) the consumer starts"
    bg P 60 "$TMP/e2.p.out" "$TMP/e2.p.err" "$RUNNER" --print s.buffers-sent --print s.copied-buffers --print s.dropped \
        --print s.clients --trace s.sink \
        "videotestsrc is-live=true pattern=ball num-buffers=$N ! $LIVE_CAPS ! varslotsink name=s socket-path=$S segment=$G"
    PR=$(child_of "$P")
    check "(e2) the consumer receives frames" wait_until 30 has_frames "$TMP/e2.c.out" 5
    kill -9 "$CC"
    finish "$C" 10 >/dev/null
    check "(e2) the producer notices the consumer left (clients=0)" wait_prop "$PR" "$TMP/e2.p.out" s.clients -eq 0 20
    sent0=$(snapshot "$PR" "$TMP/e2.p.out" s.buffers-sent) dropped0=$(snapshot "$PR" "$TMP/e2.p.out" s.dropped)
    # A producer that did not wait would send or drop a frame every 33 ms; load can only make
    # fewer of them happen in this second, never fail a producer that waits.
    sleep 1
    sent1=$(snapshot "$PR" "$TMP/e2.p.out" s.buffers-sent) dropped1=$(snapshot "$PR" "$TMP/e2.p.out" s.dropped)
    check "(e2) the producer waits for a consumer: still running, it sends and drops nothing meanwhile" \
        idle "$P" "$sent0" "$dropped0" "$sent1" "$dropped1"
    bg C2 60 "$TMP/e2.c2.out" "$TMP/e2.c2.err" "$RUNNER" --trace r.src "varslotsrc name=r socket-path=$S ! checksumsink sync=false"
    finish "$C2" 30; c2rc=$?
    finish "$P" 30; prc=$?
    echo "# (e2) the first consumer got $(sums "$TMP/e2.c.out" | wc -l) frames, the new one $(sums "$TMP/e2.c2.out" | wc -l)"
    check "(e2) the new consumer reaches EOS" exit_is $c2rc 0 "$TMP/e2.c2.err"
    check "(e2) the producer finishes" exit_is $prc 0 "$TMP/e2.p.err"
    check "(e2) the stream goes on: the last frames arrive intact at the new consumer" tail_of "$TMP/e2.ref" "$TMP/e2.c2.out" 10
    check "(e2) the new consumer's buffers are the bytes videotestsrc wrote: no copy" bytes_of "$TMP/e2.p.out" "$TMP/e2.c2.out" 10
    check "(e2) copied-buffers=0" eq "$(prop "$TMP/e2.p.out" s.copied-buffers)" 0
    check "(e2) after reap no slot is allocated and no peer is left" no_slot_held "$G"
    timeout 30 "$VARSLOT" rm "$G" >/dev/null 2>&1
fi

if want e3; then
    echo "# (e3) kill -9 the consumer of a fast 64x64 stream in the middle of things"
    S=$(sock e3) G=$(seg e3)
    make_seg "$G"
    bg P 60 "$TMP/e3.p.out" "$TMP/e3.p.err" "$RUNNER" --print s.buffers-sent --print s.dropped \
        "videotestsrc ! video/x-raw,format=GRAY8,width=64,height=64 ! varslotsink name=s wait-for-connection=false socket-path=$S segment=$G"
    wait_socket "$S" || not_ok "(e3) the sink listens"
    bg C 60 "$TMP/e3.c.out" "$TMP/e3.c.err" "$RUNNER" --print r.buffers-received "varslotsrc name=r socket-path=$S ! fakesink"
    wait_until 30 has_line "$TMP/e3.c.out" '^started$' || not_ok "(e3) the consumer starts"
    CR=$(child_of "$C") PR=$(child_of "$P")
    check "(e3) the consumer takes buffers" wait_prop "$CR" "$TMP/e3.c.out" r.buffers-received -ge 1000 30
    d0=$(snapshot "$PR" "$TMP/e3.p.out" s.dropped) || not_ok "(e3) the producer reports its counters"
    kill -9 "$CR"
    finish "$C" 10 >/dev/null
    check "(e3) the producer goes on without it" wait_prop "$PR" "$TMP/e3.p.out" s.dropped -gt "${d0:-0}" 20
    kill -INT "$PR"
    finish "$P" 50; prc=$?
    check "(e3) the producer finishes" exit_is $prc 0 "$TMP/e3.p.err"
    check "(e3) it sent buffers before the kill" ge "$(prop "$TMP/e3.p.out" s.buffers-sent)" 1000
    check "(e3) after reap no slot is allocated and no peer is left" no_slot_held "$G"
    timeout 30 "$VARSLOT" rm "$G" >/dev/null 2>&1
fi

# ---- (f) fan-out ----
if want f; then
    echo "# (f) one producer with a local branch through a tee, three consumers"
    N=90
    S=$(sock f) G=$(seg f)
    reference "$TMP/f.ref" $N $LIVE_CAPS pattern=ball || not_ok "(f) reference run"
    # The consumers wait for the producer (retrying every 100 ms) before it starts, so all are
    # there from (nearly) the first frame; the producer waits for the first one. Its tee's
    # other branch (a local display's stand-in) answers no ALLOCATION query, so the tee alone
    # would send videotestsrc to system memory: the sink offers its allocator across it.
    for i in 1 2 3; do
        bg "C$i" 60 "$TMP/f.c$i.out" "$TMP/f.c$i.err" "$RUNNER" --trace r.src \
            "varslotsrc name=r socket-path=$S wait-for-producer=true ! checksumsink sync=false"
    done
    for i in 1 2 3; do wait_until 30 has_line "$TMP/f.c$i.out" '^started$' || not_ok "(f) consumer $i starts"; done
    bg P 60 "$TMP/f.p.out" "$TMP/f.p.err" "$RUNNER" --print s.buffers-sent --print s.buffers-shared \
        --print s.copied-buffers --print s.fanout-copies \
        --trace s.sink "videotestsrc is-live=true pattern=ball num-buffers=$N ! $LIVE_CAPS ! tee name=t \
            t. ! queue ! fakesink sync=false t. ! queue ! varslotsink name=s socket-path=$S segment=$G"
    finish "$P" 40; prc=$?
    finish "$C1" 20; c1rc=$?
    finish "$C2" 20; c2rc=$?
    finish "$C3" 20; c3rc=$?
    check "(f) the producer finishes" exit_is $prc 0 "$TMP/f.p.err"
    check "(f) the consumers reach EOS" bash -c "[ $c1rc -eq 0 ] && [ $c2rc -eq 0 ] && [ $c3rc -eq 0 ] || { echo 'status $c1rc $c2rc $c3rc'; exit 1; }"
    n1=$(sums "$TMP/f.c1.out" | wc -l) n2=$(sums "$TMP/f.c2.out" | wc -l) n3=$(sums "$TMP/f.c3.out" | wc -l)
    echo "# (f) consumers: $n1, $n2, $n3 frames; buffers-shared=$(prop "$TMP/f.p.out" s.buffers-shared)"
    for i in 1 2 3; do
        check "(f) consumer $i: every frame it got is intact and in order, to the last" tail_of "$TMP/f.ref" "$TMP/f.c$i.out" $((N - 15))
        check "(f) consumer $i: every frame it got is in the bytes videotestsrc wrote (no copy)" \
            in_place "$TMP/f.p.out" "$TMP/f.c$i.out"
    done
    check "(f) the first one connected got all $N" bash -c "[ $n1 -eq $N ] || [ $n2 -eq $N ] || [ $n3 -eq $N ]"
    check "(f) fanout-copies=0, copied-buffers=0" eq "$(prop "$TMP/f.p.out" s.fanout-copies)/$(prop "$TMP/f.p.out" s.copied-buffers)" "0/0"
    check "(f) buffers-sent=$N" eq "$(prop "$TMP/f.p.out" s.buffers-sent)" $N
    check "(f) no warnings" no_warnings "$TMP/f.p.err" "$TMP/f.c1.err" "$TMP/f.c2.err" "$TMP/f.c3.err"
    check "(i) f: clean shutdown leaves no segment and no socket" gone "$G" "$S"
fi

# ---- (g) two producers, one segment ----
# The first producer makes the segment; the second opens it and runs longer (live, 2 s), so
# the last ones out of the segment are the second pipeline's (it must still be removed).
CAPS=video/x-raw,format=BGRx,width=320,height=240,framerate=30/1
if want g; then
    echo "# (g) two producers writing into one segment, each to its own consumer"
    N1=60 N2=60
    G=$(seg g) S1=$(sock g1) S2=$(sock g2)
    reference "$TMP/g1.ref" $N1 $CAPS pattern=ball || not_ok "(g) reference run 1"
    reference "$TMP/g2.ref" $N2 $CAPS pattern=smpte horizontal-speed=3 || not_ok "(g) reference run 2"
    bg P1 60 "$TMP/g1.p.out" "$TMP/g1.p.err" "$RUNNER" --print s.copied-buffers --print s.buffers-sent --trace s.sink \
        "videotestsrc num-buffers=$N1 pattern=ball ! $CAPS ! varslotsink name=s socket-path=$S1 segment=$G"
    wait_socket "$S1" || not_ok "(g) sink 1 listens"
    wait_until 20 test -e "/dev/shm/${G#/}" || not_ok "(g) the first producer made the segment"
    bg P2 60 "$TMP/g2.p.out" "$TMP/g2.p.err" "$RUNNER" --print s.copied-buffers --print s.buffers-sent --trace s.sink \
        "videotestsrc is-live=true num-buffers=$N2 pattern=smpte horizontal-speed=3 ! $CAPS ! varslotsink name=s socket-path=$S2 segment=$G"
    wait_socket "$S2" || not_ok "(g) sink 2 listens"
    for i in 1 2; do
        bg "C$i" 60 "$TMP/g$i.c.out" "$TMP/g$i.c.err" "$RUNNER" --trace r.src \
            "varslotsrc name=r socket-path=$(sock "g$i") ! checksumsink sync=false"
    done
    finish "$C1" 60; c1rc=$?
    finish "$P1" 30; p1rc=$?
    finish "$C2" 60; c2rc=$?
    finish "$P2" 30; p2rc=$?
    check "(g) all four processes exit 0" bash -c "[ $p1rc$p2rc$c1rc$c2rc = 0000 ] || { echo 'producers $p1rc $p2rc consumers $c1rc $c2rc'; cat '$TMP/g1.p.err' '$TMP/g2.p.err' | head -c 1500; exit 1; }"
    check "(g) stream 1 identical to one process" same_sums "$TMP/g1.ref" "$TMP/g1.c.out" $N1
    check "(g) stream 2 (live) identical to one process" tail_of "$TMP/g2.ref" "$TMP/g2.c.out" $N2
    check "(g) stream 1 reaches its consumer in the bytes its videotestsrc wrote: no copy" same_bytes "$TMP/g1.p.out" "$TMP/g1.c.out" $N1
    check "(g) stream 2 too" same_bytes "$TMP/g2.p.out" "$TMP/g2.c.out" $N2
    check "(g) both streams' bytes are in one file (the segment)" one_file "$TMP/g1.c.out" "$TMP/g2.c.out"
    check "(g) copied-buffers=0 for both producers" eq "$(prop "$TMP/g1.p.out" s.copied-buffers)/$(prop "$TMP/g2.p.out" s.copied-buffers)" 0/0
    check "(g) no warnings" no_warnings "$TMP"/g?.p.err "$TMP"/g?.c.err
    check "(i) g: clean shutdown leaves no segment and no socket" gone "$G" "$S1" "$S2"
    timeout 30 "$VARSLOT" rm "$G" >/dev/null 2>&1
fi

if want g-race; then
    echo "# (g-race) two producers started together race to make the segment"
    N=100
    G=$(seg gr) S1=$(sock gr1) S2=$(sock gr2)
    reference "$TMP/gr.ref" $N $CAPS pattern=ball || not_ok "(g-race) reference run"
    bg P1 60 "$TMP/gr1.p.out" "$TMP/gr1.p.err" gst-launch-1.0 -q videotestsrc num-buffers=$N pattern=ball ! $CAPS ! \
        varslotsink socket-path="$S1" segment="$G"
    bg P2 60 "$TMP/gr2.p.out" "$TMP/gr2.p.err" gst-launch-1.0 -q videotestsrc num-buffers=$N pattern=ball ! $CAPS ! \
        varslotsink socket-path="$S2" segment="$G"
    wait_socket "$S1" || not_ok "(g-race) sink 1 listens"
    wait_socket "$S2" || not_ok "(g-race) sink 2 listens"
    bg C1 60 "$TMP/gr1.c.out" "$TMP/gr1.c.err" gst-launch-1.0 -q varslotsrc socket-path="$S1" ! checksumsink sync=false
    bg C2 60 "$TMP/gr2.c.out" "$TMP/gr2.c.err" gst-launch-1.0 -q varslotsrc socket-path="$S2" ! checksumsink sync=false
    finish "$C1" 60; c1rc=$?
    finish "$C2" 60; c2rc=$?
    finish "$P1" 30; p1rc=$?
    finish "$P2" 30; p2rc=$?
    check "(g-race) all four processes exit 0" bash -c "[ $p1rc$p2rc$c1rc$c2rc = 0000 ] || { echo 'producers $p1rc $p2rc consumers $c1rc $c2rc'; cat '$TMP/gr1.p.err' '$TMP/gr2.p.err' | head -c 1500; exit 1; }"
    check "(g-race) stream 1 identical to one process" same_sums "$TMP/gr.ref" "$TMP/gr1.c.out" $N
    check "(g-race) stream 2 identical to one process" same_sums "$TMP/gr.ref" "$TMP/gr2.c.out" $N
    # (whether the segment is left depends on who created it: (g) checks that deterministically)
    timeout 30 "$VARSLOT" rm "$G" >/dev/null 2>&1
fi

# ---- (i) nothing of ours is left anywhere ----
left=$(compgen -G "/dev/shm/$PREFIX*" || true)
check "(i) nothing named $PREFIX-* remains in /dev/shm" bash -c "[ -z '$left' ] || { echo '$left'; exit 1; }"
socks=$(find "$TMP" -type s 2>/dev/null)
check "(i) no socket file remains" bash -c "[ -z '$socks' ] || { echo '$socks'; exit 1; }"

echo "# test-pipelines: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
