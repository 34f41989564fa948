#!/usr/bin/env bash
# The shim's options (preload/options.h), end to end:
#   - the table as `varslot run --help` prints it: every option has a flag that sets its
#     variable, a help line, an entry in the man page's run section and ENVIRONMENT, and a
#     row with the same default in the README's list;
#   - `varslot run` refuses what the shim would ignore (bad segment names among them);
#   - a bad value is warned about once per process tree: a bash loop, make -j2, a second tree;
#   - a warning with a 5000-byte value still ends its line, so the stats line is its own;
#   - a segment name that cannot be meant (//x, relative, '.', '..', trailing '/') gets one
#     warning and the default: no file at / or in the working directory; the same in the
#     GStreamer plugin (varslotsink's $VARSLOT_SEGMENT and its segment property).
# Needs `make all` first. Usage, from anywhere: tests/preload/test-options.sh
set -u

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
die() { echo "test-options: $*" >&2; exit 1; }
SHIM=$(realpath build/lib/libvarslot-preload.so 2>/dev/null) || die "missing the shim: run 'make all' first"
VARSLOT=$ROOT/build/bin/varslot
[ -x "$VARSLOT" ] || die "missing $VARSLOT: run 'make all' first"
. "$ROOT/tests/lib.sh" # ok, not_ok

unset LD_PRELOAD
for v in $(compgen -e | grep '^VARSLOT_'); do unset "$v"; done
TMP=$(mktemp -d "${TMPDIR:-/tmp}/varslot-options-test.XXXXXX") || die "mktemp failed"
TAG="vs-optest-$$"
# Falling back to the per-user default segment creates it; leave it as we found it.
DEFAULT_SEGMENT=/dev/shm/varslot-$(id -u)
[ -e "$DEFAULT_SEGMENT" ] && HAD_DEFAULT=1 || HAD_DEFAULT=0
cleanup() {
    rm -rf "$TMP" /dev/shm/"$TAG"* "/$TAG"
    [ "$HAD_DEFAULT" = 1 ] || rm -f "$DEFAULT_SEGMENT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

T() { timeout -k 5 60 "$@"; }
shim() { T env LD_PRELOAD="$SHIM" "$@"; } # shim VAR=VALUE... CMD...
warnings() { grep -c '^varslot: ignoring ' "$1"; } # warnings FILE: how many lines warn

# ---- the table, as varslot run --help prints it ----
help=$(T "$VARSLOT" run --help)
mapfile -t entries < <(sed -n 's/^      \(--[a-z-]*\)\( [^ ]*\)\?  (\(VARSLOT_[A-Z_]*\); default \(.*\))$/\1\x1f\2\x1f\3\x1f\4/p' <<<"$help")
if [ ${#entries[@]} -ge 8 ]; then
    ok "varslot run --help lists ${#entries[@]} options, each with its variable and default"
else
    not_ok "varslot run --help lists ${#entries[@]} options (want the table's, at least 8)" "$help"
fi
man_text=$(sed 's/\\-/-/g; s/\\f[BIRP]//g' cli/varslot.1)
man_run=$(sed -n '/^\.B run /,/^\.B reap /p' <<<"$man_text")
man_env=$(sed -n '/^\.SH ENVIRONMENT/,/^\.SH /p' <<<"$man_text")
# A valid value for options whose default is a description rather than a value.
declare -A SAMPLE=([--classes]=64K:4 [--callers]=libvstest.so)
for e in "${entries[@]}"; do
    IFS=$'\x1f' read -r flag meta var dflt <<<"$e"
    missing=()
    grep -F -A1 -- "      $flag$meta  ($var; default $dflt)" <<<"$help" |
        sed -n 2p | grep -qE '^          [^ ]' || missing+=("a help line under $flag in varslot run --help")
    grep -qE -- "^\.B[IR]? $flag( |$)" <<<"$man_run" || missing+=("$flag in the man page's run section")
    grep -qF -- "$var" <<<"$man_env" || missing+=("$var in the man page's ENVIRONMENT section")
    row=$(grep -F -- "| \`$var\` |" README.md | head -1)
    row_default=$(cut -d'|' -f3 <<<"$row" | tr -d '`' | sed 's/^ *//; s/ *$//')
    [ "$row_default" = "$dflt" ] || missing+=("a README row '| \`$var\` | $dflt |' (found: '${row:0:80}')")
    # The flag sets the variable, and takes what the shim takes.
    if [ -z "$meta" ]; then value=1; args=("$flag"); else value=${SAMPLE[$flag]:-$dflt}; args=("$flag" "$value"); fi
    got=$(T "$VARSLOT" run --min-size off "${args[@]}" -- printenv "$var" 2>"$TMP/run.err")
    [ "$got" = "$value" ] || missing+=("varslot run ${args[*]} -- printenv $var printed '$got', want '$value'")
    if [ ${#missing[@]} -eq 0 ]; then
        ok "$flag ($var): help, man page, README, and it sets $var"
    else
        not_ok "$flag ($var) is not everywhere the table's options must be" "${missing[@]}"
    fi
done

# ---- varslot run refuses what the shim would ignore ----
for bad in "--segment relative-$TAG" "--segment //$TAG" "--segment /tmp/../$TAG" "--segment /tmp/$TAG/" \
           "--segment /./$TAG" "--segment=" "--fork sometimes" "--min-size 64Q" "--classes 64K" \
           "--fallback tcmalloc" "--callers ,," "--stats=1"; do
    # shellcheck disable=SC2086 # the words are the arguments
    out=$(cd "$TMP" && T "$VARSLOT" run $bad -- /bin/true 2>&1)
    rc=$?
    if [ $rc -eq 2 ] && grep -q "^varslot: run: " <<<"$out"; then
        ok "varslot run $bad: exit 2 ($(head -1 <<<"$out" | cut -c1-90))"
    else
        not_ok "varslot run $bad: exit $rc, want 2 with a reason" "$out"
    fi
done

# ---- once per process tree ----
shim VARSLOT_MIN_SIZE=bogus-$TAG bash -c 'for i in 1 2 3 4 5; do /bin/true; (/bin/true); x=$(echo $i); done' \
    2>"$TMP/loop.err"
n=$(warnings "$TMP/loop.err")
if [ "$n" = 1 ]; then
    ok "a 5-iteration bash loop under the shim with a bad value: 1 warning"
else
    not_ok "a 5-iteration bash loop: $n warnings, want 1" "$(head -5 "$TMP/loop.err")"
fi
printf 'all: a b c d\na b c d:\n\t@/bin/true\n\t@sh -c /bin/true\n' >"$TMP/Makefile"
shim VARSLOT_FORK=sometimes-$TAG make -s -j2 -C "$TMP" 2>"$TMP/make.err" >/dev/null
n=$(warnings "$TMP/make.err")
if [ "$n" = 1 ]; then
    ok "make -j2 of four recipes under the shim with a bad value: 1 warning"
else
    not_ok "make -j2 of four recipes: $n warnings, want 1" "$(head -5 "$TMP/make.err")"
fi
# Another tree with the same setting (this script is not under the shim), and a second bad
# setting inside one tree: each gets its own line.
shim VARSLOT_MIN_SIZE=bogus-$TAG VARSLOT_STATS=maybe-$TAG bash -c '/bin/true; /bin/true' 2>"$TMP/second.err"
if [ "$(warnings "$TMP/second.err")" = 2 ] && grep -q "VARSLOT_MIN_SIZE=bogus-$TAG" "$TMP/second.err" &&
    grep -q "VARSLOT_STATS=maybe-$TAG" "$TMP/second.err"; then
    ok "a second tree with the same bad value warns again; two bad values, one line each"
else
    not_ok "a second tree / two bad values: want one line for each of the two values" "$(cat "$TMP/second.err")"
fi
# The markers of trees that have exited are swept when the next one is made.
markers=/dev/shm/.varslot-warned-$(id -u)
mapfile -t before < <(ls "$markers")
shim VARSLOT_VERBOSE=loud-$TAG /bin/true 2>/dev/null
mapfile -t after < <(ls "$markers")
left=$(comm -12 <(printf '%s\n' "${before[@]}" | sort) <(printf '%s\n' "${after[@]}" | sort))
if [ ${#before[@]} -ge 2 ] && [ -z "$left" ] && [ ${#after[@]} = 1 ]; then
    ok "the ${#before[@]} markers of the exited trees above are swept when the next tree warns"
else
    not_ok "markers: ${#before[@]} before (want >= 2), $(wc -w <<<"$left") of them left (want 0), ${#after[@]} after (want 1)" \
        "${before[@]}" "left: $left"
fi

# ---- a long value: cut visibly, and the line still ends ----
shim VARSLOT_MIN_SIZE=off VARSLOT_CALLERS="$(printf 'x%.0s' $(seq 5000))" VARSLOT_STATS=1 \
    python3 -S -c 1 2>"$TMP/long.err"
first=$(sed -n 1p "$TMP/long.err")
if [[ $first == "varslot: ignoring VARSLOT_CALLERS=xxxx"*"...: a name is longer than 63 bytes; using the default (none)" ]] &&
    [ ${#first} -lt 300 ] && sed -n 2p "$TMP/long.err" | grep -qE '^varslot: pid=[0-9]+ routed=0 '; then
    ok "a 5000-byte VARSLOT_CALLERS: its warning is cut with '...' and ends its line; the stats line follows"
else
    not_ok "a 5000-byte VARSLOT_CALLERS: want a cut warning line, then the stats line" "$(cut -c1-200 "$TMP/long.err" | head -3)"
fi

# ---- segment names that cannot be meant ----
# Each routes a 1 MiB block: a name the shim took would be created. The default is used.
mkdir -p "$TMP/cwd"
for name in "//$TAG" "$TAG" "./$TAG" "/tmp/../$TAG" "/tmp/./$TAG" "/dev/shm/$TAG/" "/"; do
    (cd "$TMP/cwd" && shim VARSLOT_SEGMENT="$name" VARSLOT_STATS=1 perl -e '$x = "a" x (1 << 20); print length $x') \
        >"$TMP/seg.out" 2>"$TMP/seg.err"
    created=$(ls -d "/$TAG" "/tmp/$TAG" "/dev/shm/$TAG" "$TMP/cwd/$TAG" 2>/dev/null)
    last=$(tail -1 "$TMP/seg.err")
    if [ "$(warnings "$TMP/seg.err")" = 1 ] && grep -qF "varslot: ignoring VARSLOT_SEGMENT=$name: " "$TMP/seg.err" &&
        [ -z "$created" ] && [ "$(cat "$TMP/seg.out")" = 1048576 ] &&
        [[ $last == *" segment=/varslot-$(id -u)" ]] && [[ $last != *" routed=0 "* ]]; then
        ok "VARSLOT_SEGMENT=$name: one warning, routed into the default segment, no file made"
    else
        not_ok "VARSLOT_SEGMENT=$name: want one warning, the default segment, no file" \
            "files made: ${created:-none}" "$(cat "$TMP/seg.err")"
    fi
    rm -rf "/$TAG" "/tmp/$TAG" "/dev/shm/$TAG" "$TMP/cwd/$TAG"
done
# The names that are meant still work.
for name in "/$TAG-shm" "/dev/shm/$TAG-file"; do
    shim VARSLOT_SEGMENT="$name" VARSLOT_STATS=1 perl -e '$x = "a" x (1 << 20)' 2>"$TMP/seg.err"
    if [ "$(warnings "$TMP/seg.err")" = 0 ] && tail -1 "$TMP/seg.err" | grep -qF " segment=$name" &&
        [ -e "/dev/shm/${name##*/}" ]; then
        ok "VARSLOT_SEGMENT=$name is taken as it is"
    else
        not_ok "VARSLOT_SEGMENT=$name was not taken" "$(cat "$TMP/seg.err")"
    fi
done

# ---- memory comes back ----
# A program routes 8 blocks of 16 MiB, frees them and exits: the last peer out gives every
# free slot back, so the segment holds its metadata only. VARSLOT_DECAY_MS is read by the
# library: a bad value is refused there, and the program falls back and runs.
seg="/$TAG-decay"
shim VARSLOT_SEGMENT="$seg" VARSLOT_STATS=1 perl -e 'my @a = map { "a" x (5 << 20) } 1..8; print scalar @a' \
    >"$TMP/decay.out" 2>"$TMP/decay.err"
kib=$(du -k "/dev/shm$seg" 2>/dev/null | cut -f1)
if [ "$(cat "$TMP/decay.out")" = 8 ] && grep -qE ' routed=8 ' "$TMP/decay.err" && [ -n "$kib" ] && [ "$kib" -le 64 ]; then
    ok "the last process out gives the segment's memory back ($kib KiB left after routing 8 x 16 MiB)"
else
    not_ok "the last process out gives the segment's memory back" "du: ${kib:-none} KiB" "$(cat "$TMP/decay.err")"
fi
rm -f "/dev/shm$seg"
shim VARSLOT_SEGMENT="$seg" VARSLOT_DECAY_MS=soon VARSLOT_STATS=1 perl -e '$x = "a" x (1 << 20); print length $x' \
    >"$TMP/decay.out" 2>"$TMP/decay.err"
if [ "$(cat "$TMP/decay.out")" = 1048576 ] && grep -qF "VARSLOT_DECAY_MS is not a number" "$TMP/decay.err" &&
    [ ! -e "/dev/shm$seg" ]; then
    ok "VARSLOT_DECAY_MS=soon: the segment is refused with the reason, the program runs on the fallback"
else
    not_ok "VARSLOT_DECAY_MS=soon: want the reason and a program that runs" "$(cat "$TMP/decay.err")"
fi
rm -f "/dev/shm$seg"

# The GStreamer plugin follows the same rule: a bad $VARSLOT_SEGMENT is warned about and its
# own default taken; a bad segment property is an error that names the rule.
GST_DEFAULT=/dev/shm/varslot-gst-$(id -u)
[ -e "$GST_DEFAULT" ] && HAD_GST_DEFAULT=1 || HAD_GST_DEFAULT=0
gst() { (cd "$TMP/cwd" && T env GST_PLUGIN_PATH="$ROOT/build/lib/gstreamer-1.0" GST_REGISTRY="$TMP/gst-registry.bin" \
    gst-launch-1.0 videotestsrc num-buffers=3 ! varslotsink socket-path="$TMP/gst.sock" \
    wait-for-connection=false "$@"); }
GST_DEBUG=varslot:2 VARSLOT_SEGMENT="//$TAG" gst >"$TMP/gst.out" 2>&1
gst_rc=$?
[ "$HAD_GST_DEFAULT" = 1 ] || rm -f "$GST_DEFAULT"
if [ "$gst_rc" = 0 ] && grep -qF "ignoring VARSLOT_SEGMENT=//$TAG: an empty path component" "$TMP/gst.out" &&
    [ ! -e "/$TAG" ]; then
    ok "varslotsink: VARSLOT_SEGMENT=//$TAG is warned about, the default used, no /$TAG made"
else
    not_ok "varslotsink: VARSLOT_SEGMENT=//$TAG (rc $gst_rc, /$TAG $([ -e "/$TAG" ] && echo made || echo absent))" \
        "$(tail -5 "$TMP/gst.out")"
fi
rm -f "/$TAG"
gst segment="$TAG" >"$TMP/gst.out" 2>&1
gst_rc=$?
if [ "$gst_rc" != 0 ] && grep -qF "varslot segment name '$TAG' is refused: relative" "$TMP/gst.out" &&
    [ ! -e "$TMP/cwd/$TAG" ]; then
    ok "varslotsink segment=$TAG (relative) is an error that says why; no file made"
else
    not_ok "varslotsink segment=$TAG (relative): want an error, no file (rc $gst_rc)" "$(tail -5 "$TMP/gst.out")"
fi

echo "# test-options: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
