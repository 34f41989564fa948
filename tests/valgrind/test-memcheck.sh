#!/usr/bin/env bash
# Planted defects in small programs run through valgrind/varslot-memcheck: each must be
# reported at the line marked DEFECT in planted.c, with memcheck's usual words; a handle
# passed to another process and freed there must be no leak in either; a clean program must
# end with "ERROR SUMMARY: 0 errors"; frames through varslotsink/varslotsrc under memcheck must
# hash as those of a run without varslot.
# Shared slots (planted-share.c, the C API under plain valgrind): readable in every reader,
# a use after the release reported, a reference never released a leak in its reader.
#   tests/valgrind/test-memcheck.sh [CASE...]   CASE: leak overread uaf dfree clean handoff
#                                               share-uaf share share-leak gst (default: all)
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
CASES="leak overread uaf dfree clean handoff share-uaf share share-leak gst"
for c in "$@"; do
    [[ " $CASES " == *" $c "* ]] || { echo "test-memcheck: no case $c (cases: $CASES)" >&2; exit 2; }
done
[ $# -gt 0 ] && CASES="$*"
want() { [[ " $CASES " == *" $1 "* ]]; }
RUNNER=valgrind/varslot-memcheck
SRC=tests/valgrind/planted.c
BIN=build/tests/vstest-planted
export VARSLOT_SEGMENT=/vs-memcheck-$$ VARSLOT_MIN_SIZE=64K
TMP=$(mktemp -d "${TMPDIR:-/tmp}/vstest-memcheck.XXXXXX") || exit 1
trap 'build/bin/varslot rm "$VARSLOT_SEGMENT" >/dev/null 2>&1; rm -rf "$TMP"' EXIT

. tests/need.sh # make builds the planted program (at -O0: the reports name its lines)
SHARE_BIN=build/tests/vstest-planted-share
SHARE_SRC=tests/valgrind/planted-share.c
need "$BIN" "$SHARE_BIN" build/bin/varslot build/lib/libvarslot-preload.so build/lib/gstreamer-1.0/libgstvarslot.so

pass=0 fail=0
ok() { echo "ok - $1"; pass=$((pass + 1)); }
not_ok() { echo "not ok - $1"; fail=$((fail + 1)); [ -n "${2:-}" ] && sed 's/^/#   /' "$2" | head -40; }
line_of() { grep -n "$1" "$SRC" | head -n 1 | cut -d: -f1; }
expect() { # expect DESC LOG PATTERN: the log has a line matching the (extended) pattern
    if grep -Eq -- "$3" "$2"; then ok "$1"; else not_ok "$1 (wanted /$3/)" "$2"; fi
}
run() { # run NAME ARGS...: memcheck the planted program, log in $TMP/NAME.log
    local name=$1
    shift
    # dfree aborts: bash would print "Aborted" for the job unless told to wait quietly.
    timeout 300 "$RUNNER" --num-callers=30 -- "$BIN" "$@" >"$TMP/$name.out" 2>"$TMP/$name.log" &
    wait $! 2>/dev/null
    echo $? >"$TMP/$name.rc"
}

malloc_line=$(line_of 'char \*p = malloc(BLOCK);')

if want leak; then
    run leak leak
    expect "leak: a routed block never freed is definitely lost" "$TMP/leak.log" \
        "100,000 bytes in 1 blocks are definitely lost"
    expect "leak: the report points at the allocating line" "$TMP/leak.log" "routed_block \(planted.c:$malloc_line\)"
    expect "leak: ... called from leak()" "$TMP/leak.log" "by 0x[0-9A-F]+: leak \(planted.c:[0-9]+\)"
fi

if want overread; then
    run overread overread
    expect "overread: a read past the requested size is invalid" "$TMP/overread.log" "Invalid read of size 1"
    expect "overread: at the planted line" "$TMP/overread.log" "overread \(planted.c:$(line_of 'DEFECT overread')\)"
    expect "overread: just past the block, not the slot" "$TMP/overread.log" \
        "0 bytes after a block of size 100,000 alloc'd"
fi

if want uaf; then
    run uaf uaf
    expect "uaf: a read after free is invalid" "$TMP/uaf.log" "Invalid read of size 1"
    expect "uaf: at the planted line" "$TMP/uaf.log" "use_after_free \(planted.c:$(line_of 'DEFECT uaf')\)"
    expect "uaf: inside the freed block" "$TMP/uaf.log" "inside a block of size 100,000 free'd"
fi

if want dfree; then
    run dfree dfree
    expect "dfree: memcheck reports the invalid free" "$TMP/dfree.log" "Invalid free\(\)"
    expect "dfree: at the planted line" "$TMP/dfree.log" "double_free \(planted.c:$(line_of 'DEFECT dfree')\)"
    expect "dfree: varslot says so too" "$TMP/dfree.log" "varslot: free\(\): double free of a routed block"
    if [ "$(cat "$TMP/dfree.rc")" -ne 0 ]; then ok "dfree: the program stops"; else not_ok "dfree: the program stops" "$TMP/dfree.log"; fi
fi

if want clean; then
    run clean clean
    expect "clean: no error" "$TMP/clean.log" "ERROR SUMMARY: 0 errors"
    expect "clean: no leak" "$TMP/clean.log" "(definitely lost: 0 bytes|All heap blocks were freed)"
    [ "$(cat "$TMP/clean.rc")" -eq 0 ] && ok "clean: exit status 0" || not_ok "clean: exit status 0" "$TMP/clean.log"
fi

# Hand-over between two processes, both under memcheck.
if want handoff; then
    coproc SENDER { timeout 300 "$RUNNER" --num-callers=30 -- "$BIN" send 2>"$TMP/send.log"; }
    read -r handle <&"${SENDER[0]}"
    run receive receive "$handle"
    echo done >&"${SENDER[1]}"
    wait "$SENDER_PID"
    expect "handoff: the receiver got the block and freed it cleanly" "$TMP/receive.log" "ERROR SUMMARY: 0 errors"
    expect "handoff: no leak in the receiver" "$TMP/receive.log" "(definitely lost: 0 bytes|All heap blocks were freed)"
    expect "handoff: no error in the sender" "$TMP/send.log" "ERROR SUMMARY: 0 errors"
    expect "handoff: no false leak in the sender" "$TMP/send.log" "(definitely lost: 0 bytes|All heap blocks were freed)"
    [ "$(cat "$TMP/receive.rc")" -eq 0 ] && ok "handoff: receiver exit 0" || not_ok "handoff: receiver exit 0" "$TMP/receive.log"
fi

VG_SHARE=(valgrind --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite --num-callers=30)
share_line() { grep -n "$1" "$SHARE_SRC" | head -n 1 | cut -d: -f1; }

if want share-uaf; then
    timeout 300 "${VG_SHARE[@]}" "$SHARE_BIN" uaf "/vs-memcheck-suaf-$$" >/dev/null 2>"$TMP/suaf.log"
    expect "share-uaf: a read after the release is invalid" "$TMP/suaf.log" "Invalid read of size 1"
    expect "share-uaf: at the planted line" "$TMP/suaf.log" "use_after_release \(planted-share.c:$(share_line 'DEFECT share-uaf')\)"
    expect "share-uaf: inside the released block" "$TMP/suaf.log" "inside a block of size 100,000 free'd"
    build/bin/varslot rm "/vs-memcheck-suaf-$$" >/dev/null 2>&1
fi

# A publisher and a reader, both under memcheck: the publisher shares a slot with itself and
# the reader; both read every byte and release (share), or the reader exits holding its
# reference (share-leak).
share_pair() { # share_pair NAME release|keep
    local seg=/vs-memcheck-share-$$-$1 f=$TMP/$1 line id handle pin pout rin rout pub rdr
    mkfifo "$f.pin" "$f.pout" "$f.rin" "$f.rout"
    timeout 300 "${VG_SHARE[@]}" "$SHARE_BIN" publish "$seg" <"$f.pin" >"$f.pout" 2>"$f.pub.log" &
    pub=$!
    exec {pin}>"$f.pin" {pout}<"$f.pout"
    read -r line <&$pout
    if [ "$line" = ready ]; then
        timeout 300 "${VG_SHARE[@]}" "$SHARE_BIN" read "$seg" "$2" <"$f.rin" >"$f.rout" 2>"$f.rdr.log" &
        rdr=$!
        exec {rin}>"$f.rin" {rout}<"$f.rout"
        read -r id <&$rout && echo "$id" >&$pin
        read -r handle <&$pout && echo "$handle" >&$rin
        wait "$rdr"
        echo $? >"$f.rdr.rc"
        exec {rin}>&- {rout}<&-
    else
        not_ok "$1: the publisher started" "$f.pub.log"
    fi
    echo done >&$pin
    exec {pin}>&- {pout}<&-
    wait "$pub"
    echo $? >"$f.pub.rc"
    build/bin/varslot rm "$seg" >/dev/null 2>&1
}

if want share; then
    share_pair share release
    expect "share: the reader read every byte, no error" "$TMP/share.rdr.log" "ERROR SUMMARY: 0 errors"
    expect "share: no leak in the reader" "$TMP/share.rdr.log" "(definitely lost: 0 bytes|All heap blocks were freed)"
    expect "share: no error or leak in the publisher" "$TMP/share.pub.log" "ERROR SUMMARY: 0 errors"
    [ "$(cat "$TMP/share.rdr.rc")" = 0 ] && [ "$(cat "$TMP/share.pub.rc")" = 0 ] &&
        ok "share: both exit 0" || not_ok "share: both exit 0" "$TMP/share.pub.log"
fi

if want share-leak; then
    share_pair share-leak keep
    expect "share-leak: the reference never released is definitely lost in the reader" \
        "$TMP/share-leak.rdr.log" "100,000 bytes in 1 blocks are definitely lost"
    expect "share-leak: the report points at the line that took it" "$TMP/share-leak.rdr.log" \
        "read_shared \(planted-share.c:$(share_line 'TAKEN here')\)"
    expect "share-leak: no false leak in the publisher, which released its own" \
        "$TMP/share-leak.pub.log" "ERROR SUMMARY: 0 errors"
fi

# The GStreamer plugin under memcheck: varslotsink hands each frame's slots over as it sends,
# varslotsrc takes them; checksumsink reads every byte in the consumer, so a slot the consumer
# had not been given as a block would be an invalid read, and one the producer kept a false
# leak. Each frame's "<pts> <sha1>" must be that of the same source without varslot: pattern
# ball changes every frame, and GRAY8 rows of 320 bytes have no padding videotestsrc leaves
# unwritten. (Plain valgrind: GStreamer needs no shim.)
if want gst; then
    if [ -r build/lib/gstreamer-1.0/libgstvarslot.so ] && command -v gst-launch-1.0 >/dev/null; then
        export GST_PLUGIN_PATH=$ROOT/build/lib/gstreamer-1.0 GST_REGISTRY=$TMP/registry.bin
        export G_SLICE=always-malloc G_DEBUG=gc-friendly # GLib's slices would hide blocks
        gst-inspect-1.0 varslotsink >/dev/null 2>&1 # the registry, outside Valgrind
        # client-timeout=0: under Valgrind an honest consumer is as slow as a stuck one.
        VG=(valgrind --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite
            --num-callers=30 --suppressions=valgrind/gst.supp)
        [ -r /usr/share/glib-2.0/valgrind/glib.supp ] && VG+=(--suppressions=/usr/share/glib-2.0/valgrind/glib.supp)
        SOCK=$TMP/gst.sock GSEG=/vs-memcheck-gst-$$ NF=30
        GSRC=(videotestsrc num-buffers=$NF pattern=ball ! video/x-raw,format=GRAY8,width=320,height=240,framerate=30/1)
        timeout 300 gst-launch-1.0 -q "${GSRC[@]}" ! checksumsink >"$TMP/gst.ref" 2>"$TMP/gst.ref.err" ||
            not_ok "gst: the reference run without varslot" "$TMP/gst.ref.err"
        timeout 300 "${VG[@]}" gst-launch-1.0 -q "${GSRC[@]}" ! \
            varslotsink socket-path="$SOCK" segment="$GSEG" client-timeout=0 >"$TMP/gstp.out" 2>"$TMP/gstp.log" &
        gstp=$!
        for _ in $(seq 300); do [ -S "$SOCK" ] && break; sleep 0.1; done
        timeout 300 "${VG[@]}" gst-launch-1.0 -q varslotsrc socket-path="$SOCK" ! checksumsink \
            >"$TMP/gstc.out" 2>"$TMP/gstc.log"
        echo $? >"$TMP/gstc.rc"
        wait "$gstp"
        echo $? >"$TMP/gstp.rc"
        build/bin/varslot rm "$GSEG" >/dev/null 2>&1
        # checksum lines only (gst-launch may print status text on stdout too)
        sums() { grep -E '^[0-9]+:[0-9]{2}:[0-9]{2}\.[0-9]{9} [0-9a-f]{40}$' "$1"; }
        frames=$(sums "$TMP/gstc.out" | wc -l)
        [ "$(sums "$TMP/gst.ref" | wc -l)" -eq "$NF" ] || not_ok "gst: $NF frames in the reference run" "$TMP/gst.ref"
        [ "$frames" -eq "$NF" ] && ok "gst: $NF frames read in the consumer" ||
            not_ok "gst: $NF frames read in the consumer (got $frames)" "$TMP/gstc.log"
        if diff <(sums "$TMP/gst.ref") <(sums "$TMP/gstc.out") >"$TMP/gst.diff"; then
            ok "gst: every frame's <pts> <sha1> as without varslot"
        else
            not_ok "gst: every frame's <pts> <sha1> as without varslot" "$TMP/gst.diff"
        fi
        expect "gst: no error in the consumer (every byte read was a block's)" "$TMP/gstc.log" "ERROR SUMMARY: 0 errors"
        expect "gst: no error or false leak in the producer" "$TMP/gstp.log" "ERROR SUMMARY: 0 errors"
        [ "$(cat "$TMP/gstc.rc")" -eq 0 ] && [ "$(cat "$TMP/gstp.rc")" -eq 0 ] && ok "gst: both exit 0" ||
            not_ok "gst: both exit 0" "$TMP/gstp.log"
    else
        not_ok "gst: the plugin or gst-launch-1.0 is missing"
    fi
fi

echo "# test-memcheck: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
