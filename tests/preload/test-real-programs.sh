#!/usr/bin/env bash
# Real, unmodified programs under libvarslot-preload.so: each runs once plainly and once under
# the shim (`varslot run --min-size 64K --stats --segment /vs-real-PID-N -- CMD...` when the
# CLI has `run`, else LD_PRELOAD with VARSLOT_MIN_SIZE=64K VARSLOT_STATS=1 VARSLOT_SEGMENT),
# each with a fresh segment, and with a counter (tests/preload/count-large.c) preloaded in
# front of the shim. For every program:
#   - both runs exit 0;
#   - stdout is byte-identical, and so is every file the program wrote in its output dir;
#   - every `varslot: pid=N routed=N bytes=N fallback=N peak_slots=N freed=N segment=S`
#     line on stderr is well formed and names the segment, and there is at least one;
#   - its large allocations were routed, as the counter saw them, not as the shim says: it
#     made at least a given number of allocations of 64 KiB or more that fit a class; each
#     of them it did not route, and each too big, is among the shim's counted fallbacks; and
#     at most a given share of those that fit was not routed (none for the single-threaded
#     programs, whose pool never fills);
#   - no other `varslot:` line on stderr (warnings);
#   - after the program exited, `varslot stat --json` shows 0 allocated slots in every
#     class, no peer and no unowned slot.
# Programs: /bin/true, python3 (large bytearrays, hashed), sort -S 64M on a
# generated 10 MB file, an xz -T2 compress | decompress pipeline, gcc -O2 -c of a generated C
# file, perl building large strings, and build/tests/mt-alloc (tests/preload/mt-alloc.c,
# 4 threads). The counter and mt-alloc are make's (tests/need.sh).
#
# Usage, from the repository root: tests/preload/test-real-programs.sh [NAME...]
#   NAME limits the run to those programs (true python3 sort xz gcc perl mt-alloc).
set -u

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
die() { echo "test-real-programs: $*" >&2; exit 1; }

. "$ROOT/tests/need.sh"
need build/lib/libvarslot-preload.so build/bin/varslot build/tests/mt-alloc build/tests/libvstest-count.so
SHIM=${VSTEST_SHIM:-$ROOT/build/lib/libvarslot-preload.so}
VARSLOT=$ROOT/build/bin/varslot
MT_ALLOC=$ROOT/build/tests/mt-alloc
# The referee: it needs the shim by its soname, so it goes in front of whichever is preloaded.
COUNTER=$ROOT/build/tests/libvstest-count.so
[ -f "$SHIM" ] || die "VSTEST_SHIM: no such file: $SHIM"
SHIM=$(realpath "$SHIM")
for tool in jq timeout /usr/bin/python3 sort xz gcc perl cmp; do
    command -v "$tool" >/dev/null || die "$tool is required"
done

# Nothing of the caller's environment may change what is compared.
unset LD_PRELOAD
for v in $(compgen -e | grep '^VARSLOT_'); do unset "$v"; done
export LC_ALL=C

TMP=$(mktemp -d "${TMPDIR:-/tmp}/varslot-real.XXXXXX") || die "mktemp failed"
SEG_PREFIX="vs-real-$$"
cleanup() {
    rm -f /dev/shm/"$SEG_PREFIX"-*
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

T() { timeout -k 5 120 "$@"; } # every process gets a timeout

# `varslot run` is another part of the project: use it once it exists.
# VSTEST_NO_RUN=1 forces LD_PRELOAD (with VSTEST_SHIM=path, a shim other than the build's).
HAVE_RUN=0
if [ -z "${VSTEST_NO_RUN:-}" ] && [ -z "${VSTEST_SHIM:-}" ] &&
    { T "$VARSLOT" run --help >/dev/null 2>&1 || T "$VARSLOT" --help 2>&1 | grep -q 'varslot run'; }; then
    HAVE_RUN=1
fi

# ---- inputs ----
# ~10 MB of text lines for sort and xz, the same every run.
T /usr/bin/python3 - "$TMP/lines.txt" <<'EOF' || die "cannot generate the sort input"
import random, sys
r = random.Random(20240101)
words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]
with open(sys.argv[1], "w") as f:
    size = 0
    while size < 10 * 1000 * 1000:
        line = "%08x %s %d\n" % (r.getrandbits(32), " ".join(r.choice(words) for _ in range(r.randint(1, 8))), r.randint(0, 10**6))
        f.write(line)
        size += len(line)
EOF

# A C file that takes cc1 a few seconds at -O2: tables, and functions with big switches.
T /usr/bin/python3 - "$TMP/big.c" <<'EOF' || die "cannot generate the C file"
import random, sys
r = random.Random(7)
out = ["#include <stddef.h>", ""]
for t in range(16):
    out.append("static const unsigned tab%d[512] = {%s};" % (t, ",".join("%du" % r.getrandbits(32) for _ in range(512))))
for f in range(260):
    out.append("unsigned f%d(unsigned x, const unsigned char *p, size_t n) {" % f)
    out.append("  unsigned acc = %du;" % r.getrandbits(31))
    out.append("  for (size_t i = 0; i < n; i++) {")
    out.append("    switch ((p[i] + x) % 8) {")
    for c in range(8):
        out.append("    case %d: acc = acc * %du + tab%d[(acc ^ p[i]) & 511] + %du; break;" % (c, r.getrandbits(16) | 1, r.randrange(16), r.getrandbits(20)))
    out.append("    }")
    out.append("    if (acc & 1) x ^= acc >> %d; else x += acc << %d;" % (r.randrange(1, 31), r.randrange(1, 31)))
    out.append("  }")
    out.append("  return acc ^ x;")
    out.append("}")
out.append("unsigned (*const all_functions[])(unsigned, const unsigned char *, size_t) = {%s};" % ",".join("f%d" % i for i in range(260)))
open(sys.argv[1], "w").write("\n".join(out) + "\n")
EOF

PY_PROG='
import hashlib
total = hashlib.sha256()
keep = []
for i in range(64):
    n = (1 << (10 + i % 15)) + 4099 * i          # 1 KiB .. 16 MiB and a bit
    pat = bytes((i * 31 + k) & 255 for k in range(251))
    b = bytearray(pat) * (n // 251 + 1)
    del b[n:]
    b.extend(b[: n // 3])                          # grow in place or move
    del b[n // 2 :]                                # shrink
    b[::4096] = bytes([i & 255]) * len(b[::4096])
    total.update(b)
    keep.append(bytes(b[: 1 << 17]))
    if len(keep) > 8:
        keep.pop(0)
    print(i, len(b), hashlib.sha1(b).hexdigest())
print("total", total.hexdigest(), sum(map(len, keep)))
'
PERL_PROG='
use strict; use warnings; use Digest::MD5 qw(md5_hex);
my $s = "";
for my $i (1 .. 400000) { $s .= "line $i " . ("x" x ($i % 61)) . "\n"; }
printf "%d %s\n", length($s), md5_hex($s);
my @parts = map { substr($s, $_ * 1000, 90000 * $_) } 1 .. 24;
my $big = join("|", @parts) x 2;
printf "%d %s\n", length($big), md5_hex($big);
my %h; $h{$_ % 50000} .= "v$_," for 1 .. 300000;
print md5_hex(join ";", map { "$_=$h{$_}" } sort { $a <=> $b } keys %h), "\n";
(my $t = $s) =~ s/x+/y/g;
printf "%d %s\n", length($t), md5_hex($t);
'

# ---- reporting ----
. "$ROOT/tests/lib.sh"
# The first lines of a file, indented, for a failure's details.
excerpt() { head -c 1500 "$1" | head -n 12 | sed 's/^/    /'; }
bytes() { # bytes 64K: a size with an optional K, M or G suffix, in bytes
    local n=${1%[KMG]}
    case $1 in *K) n=$((n << 10)) ;; *M) n=$((n << 20)) ;; *G) n=$((n << 30)) ;; esac
    echo "$n"
}

CASE=0

# check_program NAME MIN_FIT MAX_MISSED EXTRA_ENV CMD ARGS...
#   MIN_FIT: allocations of 64 KiB or more that fit a class the program makes at least
#   MAX_MISSED: percent of those the shim may leave unrouted (counted as fallbacks)
#   EXTRA_ENV: space-separated VAR=VALUE for the shim run ("" for none)
#   @OUT@ in the arguments: a directory of the run's own, whose files are compared too
check_program() {
    local name=$1 min_fit=$2 max_missed=$3 extra_env=$4
    shift 4
    CASE=$((CASE + 1))
    local seg="/$SEG_PREFIX-$CASE" dir="$TMP/$name"
    mkdir -p "$dir/plain" "$dir/shim"
    local plain_args=("${@//@OUT@/$dir/plain}") shim_args=("${@//@OUT@/$dir/shim}")
    local extra=()
    [ -n "$extra_env" ] && read -r -a extra <<<"$extra_env"

    # plain
    T "${plain_args[@]}" >"$dir/plain.out" 2>"$dir/plain.err"
    local plain_rc=$?
    # under the shim
    # The counter goes in front of the shim (a trampoline puts it there after `varslot run`).
    local shim_rc fit_max=$((16 << 20)) classes
    classes=$(sed -n 's/.*VARSLOT_CLASSES=\([^ ]*\).*/\1/p' <<<"$extra_env")
    [ -n "$classes" ] && fit_max=$(bytes "$(sed 's/.*,//; s/:.*//' <<<"$classes")")
    if [ $HAVE_RUN = 1 ]; then
        T env ${extra[@]+"${extra[@]}"} VSTEST_COUNT_MIN=65536 VSTEST_COUNT_FIT=$fit_max \
            "$VARSLOT" run --min-size 64K --stats --segment "$seg" \
            -- /bin/sh -c 'LD_PRELOAD="$0:$LD_PRELOAD"; exec "$@"' "$COUNTER" "${shim_args[@]}" \
            >"$dir/shim.out" 2>"$dir/shim.err"
        shim_rc=$?
    else
        T env ${extra[@]+"${extra[@]}"} VSTEST_COUNT_MIN=65536 VSTEST_COUNT_FIT=$fit_max \
            LD_PRELOAD="$COUNTER:$SHIM" VARSLOT_MIN_SIZE=64K VARSLOT_STATS=1 \
            VARSLOT_SEGMENT="$seg" "${shim_args[@]}" >"$dir/shim.out" 2>"$dir/shim.err"
        shim_rc=$?
    fi

    if [ $plain_rc -eq 0 ] && [ $shim_rc -eq 0 ]; then
        ok "$name: exits 0 plainly and under the shim"
    else
        not_ok "$name: exit status plain=$plain_rc shim=$shim_rc (124: timed out)" \
            "plain stderr:" "$(excerpt "$dir/plain.err")" "shim stderr:" "$(excerpt "$dir/shim.err")"
    fi

    # outputs
    local diffs=() f rel
    cmp -s "$dir/plain.out" "$dir/shim.out" || diffs+=("stdout: $(cmp "$dir/plain.out" "$dir/shim.out" 2>&1 | head -n 1)")
    while IFS= read -r -d '' f; do
        rel=${f#"$dir/plain/"}
        cmp -s "$f" "$dir/shim/$rel" || diffs+=("$rel: $(cmp "$f" "$dir/shim/$rel" 2>&1 | head -n 1)")
    done < <(find "$dir/plain" -type f -print0)
    if [ ${#diffs[@]} -eq 0 ]; then
        ok "$name: output identical with and without the shim ($(wc -c <"$dir/plain.out") bytes of stdout, $(find "$dir/plain" -type f | wc -l) files)"
    else
        not_ok "$name: output differs under the shim" "${diffs[@]}"
    fi

    # stats lines
    local re="^varslot: pid=[0-9]+ routed=[0-9]+ bytes=[0-9]+ fallback=[0-9]+ peak_slots=[0-9]+ freed=[0-9]+ segment=${seg}\$"
    local lines nlines bad routed fallback pids
    lines=$(grep -a '^varslot: pid=' "$dir/shim.err")
    nlines=$(grep -c . <<<"$lines")
    bad=$(grep -a -v -E "$re" <<<"$lines" | grep .)
    routed=$(sed -n 's/.* routed=\([0-9]*\) .*/\1/p' <<<"$lines" | awk '{s += $1} END {print s + 0}')
    fallback=$(sed -n 's/.* fallback=\([0-9]*\) .*/\1/p' <<<"$lines" | awk '{s += $1} END {print s + 0}')
    pids=$(sed -n 's/^varslot: pid=\([0-9]*\) .*/\1/p' <<<"$lines" | tr '\n' ' ')
    if [ "$nlines" -eq 0 ]; then
        not_ok "$name: no VARSLOT_STATS line on stderr" \
            "(it is lost when a program closes stderr before exit, as coreutils and xz do, or is killed)" \
            "shim stderr:" "$(excerpt "$dir/shim.err")"
    elif [ -n "$bad" ]; then
        not_ok "$name: malformed VARSLOT_STATS lines" "$bad"
    else
        ok "$name: $nlines VARSLOT_STATS lines: routed=$routed fallback=$fallback"
    fi

    # Were its large allocations routed? The counter's lines say, per process, how many
    # allocations of 64 KiB or more it made, how many of those a class can take (fit), and
    # how many of those are in the segment. Every one not routed must be a fallback the shim
    # counted (too big, pool full, a thread arriving while another joins); a program may miss
    # at most MAX_MISSED percent of those that fit (0 unless it has threads).
    local counts ncounts large fit fit_routed missed unfit
    counts=$(grep -a '^vscount: pid=' "$dir/shim.err")
    ncounts=$(grep -c . <<<"$counts")
    field_sum() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$counts" | awk '{s += $1} END {print s + 0}'; }
    large=$(field_sum large) fit=$(field_sum fit) fit_routed=$(field_sum fit_routed)
    missed=$((fit - fit_routed)) unfit=$((large - fit))
    if [ "$ncounts" -eq 0 ]; then
        not_ok "$name: no vscount line on stderr (the counter did not run)" "shim stderr:" "$(excerpt "$dir/shim.err")"
    elif [ "$fit" -lt "$min_fit" ]; then
        not_ok "$name: $fit allocations of 64 KiB or more that fit a class, want at least $min_fit" "$counts"
    else
        ok "$name: $ncounts processes made $large allocations of 64 KiB or more, $fit that fit a class (want >= $min_fit)"
    fi
    if [ $((missed + unfit)) -gt "$fallback" ]; then
        not_ok "$name: $missed that fit and $unfit too big were not routed, but the shim counted only $fallback fallbacks" "$counts" "$lines"
    elif [ $((missed * 100)) -gt $((fit * max_missed)) ]; then
        not_ok "$name: $fit_routed of $fit that fit were routed: $missed missed, more than $max_missed%" "$counts" "$lines"
    else
        ok "$name: $fit_routed of $fit that fit were routed; the $missed others and $unfit too big are all among its $fallback fallbacks"
    fi
    local others
    others=$(grep -a '^varslot:' "$dir/shim.err" | grep -a -v '^varslot: pid=')
    if [ -z "$others" ]; then
        ok "$name: no other varslot message on stderr"
    else
        not_ok "$name: unexpected varslot messages on stderr" "$others"
    fi

    # nothing held once it exited
    local json
    if ! json=$(T "$VARSLOT" stat --json "$seg" 2>&1); then
        not_ok "$name: varslot stat $seg failed" "$json"
    elif jq -e '([.classes[].allocated] | add) == 0 and (.peers | length) == 0 and .unowned == 0' \
            >/dev/null <<<"$json"; then
        ok "$name: no slot allocated and no peer left after exit"
    else
        local peer_notes=() p pid state slots
        while read -r pid state slots; do
            [ -n "$pid" ] || continue
            p="pid $pid ($state, $slots slots) did not leave the segment: it exited with other threads still running, exec'd, or was killed"
            if [[ " $pids" == *" $pid "* ]]; then
                p+="; it printed its stats line"
            else
                p+="; no stats line from it"
            fi
            peer_notes+=("$p")
        done < <(jq -r '.peers[] | "\(.pid) \(.state) \(.slots)"' <<<"$json")
        not_ok "$name: slots or peers left in the segment after exit" \
            "allocated per class: $(jq -c '[.classes[].allocated]' <<<"$json"), unowned: $(jq -c .unowned <<<"$json")" \
            ${peer_notes[@]+"${peer_notes[@]}"}
    fi
    T "$VARSLOT" rm "$seg" >/dev/null 2>&1 || rm -f "/dev/shm/${seg#/}"
}

SELECTED=("$@")
sel() { # sel NAME: selected on the command line, or no selection
    local n
    [ ${#SELECTED[@]} -eq 0 ] && return 0
    for n in "${SELECTED[@]}"; do [ "$n" = "$1" ] && return 0; done
    return 1
}

[ $HAVE_RUN = 1 ] && echo "# under the shim via: varslot run" || echo "# under the shim via: LD_PRELOAD=$SHIM (varslot run not used: unavailable, or VSTEST_NO_RUN/VSTEST_SHIM set)"

# MIN_FIT: python3's is one for each of its bytearrays of 64 KiB to 16 MiB (it makes about
# 300 such allocations); the others' are about half the number measured (sort: its one buffer;
# xz: 28; gcc: 1080; perl: 184; mt-alloc: 987).
sel true && check_program true 0 0 "" /bin/true

PY_FIT=0
for i in $(seq 0 63); do
    n=$(((1 << (10 + i % 15)) + 4099 * i))
    [ $n -ge $((64 << 10)) ] && [ $((251 * (n / 251 + 1))) -le $((16 << 20)) ] && PY_FIT=$((PY_FIT + 1))
done
sel python3 && check_program python3 $PY_FIT 0 "" /usr/bin/python3 -c "$PY_PROG"

# sort's one big buffer (-S 64M) is larger than the default classes' largest (16 MiB): give the
# segment one class it fits in, or sort would route nothing of its own.
sel sort && check_program sort 1 0 "VARSLOT_CLASSES=64K:256,256K:128,1M:64,4M:32,16M:8,128M:2" \
    sort -S 64M "$TMP/lines.txt"

# A pipeline: the compressor (2 threads, 1 MiB blocks so both work), tee keeping the
# compressed stream, the decompressor (2 threads) writing to stdout. A thread allocating
# while another joins falls back (not seen here): 10% leaves room for one per xz.
sel xz && check_program xz 14 10 "" bash -c \
    'set -o pipefail; xz -T2 --block-size=1MiB -c -- "$1" | tee "$2/data.xz" | xz -d -T2 -c' \
    xz-round-trip "$TMP/lines.txt" @OUT@

sel gcc && check_program gcc 540 0 "" gcc -O2 -c "$TMP/big.c" -o @OUT@/big.o

sel perl && check_program perl 92 0 "" perl -e "$PERL_PROG"

# 4 threads of up to 16 blocks of up to 8 MiB: the 16 MiB class (8 slots) fills at times, and
# the threads' first allocations race the first join; a few percent miss.
sel mt-alloc && check_program mt-alloc 490 25 "" "$MT_ALLOC"

echo "# test-real-programs: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
