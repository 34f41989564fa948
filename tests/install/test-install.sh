#!/usr/bin/env bash
# make install used as a user would, against the installed copy only: the file list, the
# exported symbols against varslot.h's VS_API declarations, the README's two-process example
# built with pkg-config and run, <varslot/preload.h> and `varslot run` with the installed shim,
# gst-inspect-1.0 finding the installed plugin, the installed varslot-memcheck, the man page
# against --help, a LIBDIR other than PREFIX/lib, a DESTDIR staging, and make uninstall
# leaving no file behind. Needs `make all` first (make check-install does it).
#   tests/install/test-install.sh
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
die() { echo "test-install: $*" >&2; exit 1; }
. "$ROOT/tests/lib.sh"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/varslot-install.XXXXXX") || die "mktemp failed"
TMP=$(realpath "$TMP")
SEG=/vs-install-$$ # every segment this run makes
cleanup() {
    rm -f "/dev/shm/${SEG#/}" "/dev/shm/${SEG#/}"-*
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP # through the EXIT trap

VERSION=$(sed -n 's/^VERSION *:= *//p' Makefile)
[ -n "$VERSION" ] || die "no VERSION in the Makefile"

# The sub-make must see only the variables given here: not the caller's DESTDIR, PREFIX or
# make command-line overrides (passed down in MAKEFLAGS).
mk() { # mk TARGET VAR=VALUE...: make quietly, its output in $TMP/make.log
    env -u MAKEFLAGS -u MAKEOVERRIDES -u MFLAGS -u MAKELEVEL -u DESTDIR -u PREFIX -u LIBDIR \
        timeout 300 make -s -C "$ROOT" "$@" >"$TMP/make.log" 2>&1
}
listing() { # listing DIR: every non-directory under DIR, relative and sorted; links with target
    (cd "$1" && find . -type l -printf '%P -> %l\n' -o ! -type d -printf '%P\n') | sort
}
# What install puts under PREFIX (LIBDIR = PREFIX/lib).
expected() {
    sort <<EOF
bin/varslot
bin/varslot-memcheck
include/varslot.h
include/varslot/preload.h
lib/gstreamer-1.0/libgstvarslot.so
lib/libvarslot-preload.so
lib/libvarslot.a
lib/libvarslot.so -> libvarslot.so.1
lib/libvarslot.so.1 -> libvarslot.so.$VERSION
lib/libvarslot.so.$VERSION
lib/pkgconfig/varslot.pc
share/man/man1/varslot.1
share/varslot/gst.supp
share/varslot/varslot.supp
EOF
}
same() { # same DESC WANTED ACTUAL
    if [ "$2" = "$3" ]; then ok "$1"; else not_ok "$1" "wanted: $2" "got:    $3"; fi
}
log() { sed -n '1,30p' "$1"; }

# ---- make install PREFIX=$P: its paths are the real ones, so pkg-config needs no tricks ----
P=$TMP/prefix
if mk install PREFIX="$P"; then
    ok "make install PREFIX=$P"
else
    not_ok "make install PREFIX=$P" "$(log "$TMP/make.log")"
    echo "# $PASSED passed, $FAILED failed"
    exit 1
fi
got=$(listing "$P")
if [ "$got" = "$(expected)" ]; then
    ok "install put exactly the expected files under the prefix"
else
    not_ok "install's files differ from the expected list (< expected, > installed)" \
        "$(diff <(expected) <(echo "$got") | grep '^[<>]')"
fi
for pair in core/include:varslot.h preload/include:varslot/preload.h; do
    src=${pair%%:*}/${pair#*:} h=${pair#*:}
    if cmp -s "$src" "$P/include/$h"; then ok "include/$h is $src"
    else not_ok "include/$h is not $src"; fi
done
so=$P/lib/libvarslot.so.$VERSION
same "the library's soname is libvarslot.so.1" "libvarslot.so.1" \
    "$(readelf -d "$so" 2>&1 | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')"

# ---- the exported symbols are exactly the VS_API functions of varslot.h ----
HDR=core/include/varslot.h
api=$(grep -E '^VS_API ' "$HDR" | sed -E 's/^VS_API[^(]*[^A-Za-z0-9_(]([A-Za-z_][A-Za-z0-9_]*)\(.*/\1/' | sort)
n_uses=$(grep -v '^#define VS_API ' "$HDR" | grep -c 'VS_API')
if [ "$(grep -cxE '[A-Za-z_][A-Za-z0-9_]*' <<<"$api")" -eq "$n_uses" ] && [ "$n_uses" -gt 0 ]; then
    ok "parsed $n_uses VS_API declarations from varslot.h"
else
    not_ok "cannot parse the VS_API declarations of varslot.h (each must start a line: VS_API type name(...)" \
        "$(grep -n 'VS_API' "$HDR")"
fi
dyn=$(nm -D --defined-only "$so" 2>&1)
exported=$(awk '$2 != "A" { print $3 }' <<<"$dyn" | sort)
names=$(sed 's/@.*//' <<<"$exported" | sort)
if [ "$names" = "$api" ]; then
    ok "the library exports exactly the $n_uses VS_API functions"
else
    not_ok "exports differ from varslot.h's VS_API functions (< declared only, > exported only)" \
        "$(diff <(echo "$api") <(echo "$names") | grep '^[<>]')"
fi
unversioned=$(grep -v '@@VARSLOT_[0-9]' <<<"$exported")
if [ -z "$unversioned" ] && grep -qE ' A VARSLOT_1\.0$' <<<"$dyn"; then
    ok "every export is in a VARSLOT_ version node (VARSLOT_1.0 defined)"
else
    not_ok "exports outside a VARSLOT_ version node" "$unversioned" "$(grep ' A ' <<<"$dyn")"
fi

# ---- pkg-config sees the installed copy, and only it ----
export PKG_CONFIG_LIBDIR=$P/lib/pkgconfig PKG_CONFIG_PATH=
same "pkg-config --modversion varslot" "$VERSION" "$(pkg-config --modversion varslot 2>&1)"
same "pkg-config --cflags --libs varslot" "-I$P/include -L$P/lib -lvarslot" \
    "$(pkg-config --cflags --libs varslot 2>&1 | sed 's/ *$//')"
same "pkg-config --static --libs varslot adds -pthread" "-L$P/lib -lvarslot -pthread" \
    "$(pkg-config --static --libs varslot 2>&1 | sed 's/ *$//')"

# ---- the README's two-process example, built against the installed copy ----
# The README's block is a fragment: its process A and process B halves go into two functions
# of a program that forks, with the helpers it names (frame_bytes, render_into, consume, sock).
W=$TMP/work
mkdir -p "$W"
awk '/^## Using it from two processes/ { inside = 1; next }
     inside && /^```c$/ { code = 1; next }
     code && /^```$/ { exit }
     code { print }' README.md >"$W/readme.c"
n_frames=$(grep -o '"/frames"' "$W/readme.c" | wc -l)
if [ "$(head -1 "$W/readme.c")" = "#include <varslot.h>" ] && grep -q '^/\* process B' "$W/readme.c" &&
    [ "$n_frames" -eq 2 ]; then
    ok "README's example found: #include <varslot.h>, process A, process B, \"/frames\" twice"
else
    not_ok "README's two-process example is not where or what this test expects" "$(head -5 "$W/readme.c")"
fi
sed -i "s|\"/frames\"|\"$SEG\"|" "$W/readme.c" # a segment name of this run's own
{
    head -1 "$W/readme.c"
    cat <<'EOF'
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

enum { frame_bytes = 3 << 20 };
static void render_into(void *p, size_t n) { memset(p, 0x5a, n); }
static int consumed;
static void consume(const void *p)
{
    const unsigned char *b = p;
    consumed = b[0] == 0x5a && b[frame_bytes - 1] == 0x5a;
}

static int process_a(int sock)
{
EOF
    sed -n '2,/^\/\* process B/p' "$W/readme.c" | sed '$d'
    cat <<'EOF'
    char ack;
    if (read(sock, &ack, 1) != 1) /* B has taken and freed the slot */
        return 1;
    int freed = vs_pool_slot_data(vs_segment_pool(&seg), &ref) == NULL; /* stale now */
    vs_segment_close(&seg);
    return freed ? 0 : 1;
}

static int process_b(int sock)
{
    struct pollfd pfd = {sock, POLLIN, 0};
    if (poll(&pfd, 1, 20000) != 1) /* A writes once its segment exists */
        return 1;
EOF
    sed -n '/^\/\* process B/,$p' "$W/readme.c"
    cat <<'EOF'
    if (write(sock, "k", 1) != 1)
        return 1;
    return consumed ? 0 : 1;
}

int main(void)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return 1;
    pid_t pid = fork();
    if (pid == 0)
        _exit(process_b(sv[1]));
    int a = process_a(sv[0]), status = 0;
    waitpid(pid, &status, 0);
    int b = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
    printf("process A: %d, process B: %d\n", a, b);
    return a || b;
}
EOF
} >"$W/example.c"
# Nothing of the build tree on the paths: only what pkg-config says (its flags split as words).
# shellcheck disable=SC2046
if (cd "$W" && env -u CPATH -u C_INCLUDE_PATH -u LIBRARY_PATH \
    gcc -O1 -Wall -Wextra -Werror -Wno-unused-result -MD example.c \
        $(pkg-config --cflags --libs varslot) -o example) >"$TMP/cc.log" 2>&1; then
    ok "the README example builds with pkg-config --cflags --libs varslot"
else
    not_ok "the README example does not build" "$(log "$TMP/cc.log")"
fi
if grep -q " $P/include/varslot.h" "$W/example.d" 2>/dev/null &&
    ! grep -q "$ROOT" "$W/example.d"; then
    ok "it included the installed varslot.h, nothing from the build tree"
else
    not_ok "it did not include $P/include/varslot.h alone" "$(cat "$W/example.d" 2>&1)"
fi
# At run time through LD_LIBRARY_PATH (no rpath): the soname must resolve in the prefix.
resolved=$(LD_LIBRARY_PATH=$P/lib ldd "$W/example" 2>&1 | sed -n 's/^\t*libvarslot.so.1 => \([^ ]*\).*/\1/p')
same "it needs libvarslot.so.1, found in the prefix" "$P/lib/libvarslot.so.1" "$resolved"
if objdump -p "$W/example" 2>/dev/null | grep -q 'VARSLOT_1\.0'; then
    ok "it records the version node VARSLOT_1.0"
else
    not_ok "no VARSLOT_1.0 in its version references" "$(objdump -p "$W/example" | grep -A8 'Version References')"
fi
out=$(LD_LIBRARY_PATH=$P/lib timeout 30 "$W/example" 2>&1)
rc=$?
if [ $rc -eq 0 ]; then
    ok "it runs: A hands a slot to B, which reads and frees it ($out)"
else
    not_ok "the README example failed, exit $rc" "$out"
fi
LD_LIBRARY_PATH=$P/lib "$P/bin/varslot" rm "$SEG" >/dev/null 2>&1

# ---- the installed varslot run and <varslot/preload.h> ----
cat >"$W/tagged.c" <<'EOF'
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <varslot/preload.h>

int main(void)
{
    vs_tag_push_fn push = (vs_tag_push_fn)dlsym(RTLD_DEFAULT, "vs_tag_push");
    vs_tag_pop_fn pop = (vs_tag_pop_fn)dlsym(RTLD_DEFAULT, "vs_tag_pop");
    vs_owns_fn owns = (vs_owns_fn)dlsym(RTLD_DEFAULT, "vs_owns");
    if (!push || !pop || !owns) {
        puts("no shim");
        return 1;
    }
    push(7);
    void *small = malloc(100); /* routed by its tag, not its size */
    pop();
    printf("routed=%d\n", owns(small));
    free(small);
    return 0;
}
EOF
# shellcheck disable=SC2046
if (cd "$W" && gcc -O1 -Wall -Werror tagged.c $(pkg-config --cflags varslot) -o tagged -ldl) >"$TMP/cc.log" 2>&1; then
    ok "a program including <varslot/preload.h> builds with pkg-config --cflags varslot"
else
    not_ok "<varslot/preload.h> does not build" "$(log "$TMP/cc.log")"
fi
same "the installed varslot run preloads the installed shim" "$P/lib/libvarslot-preload.so" \
    "$(env -u LD_PRELOAD timeout 30 "$P/bin/varslot" run --segment "$SEG" -- /bin/sh -c 'printf %s "$LD_PRELOAD"' 2>&1)"
same "under it, the preload.h API routes a tagged block" "routed=1" \
    "$(timeout 30 "$P/bin/varslot" run --segment "$SEG" -- "$W/tagged" 2>&1)"
# Debian's python3 itself, not a wrapper script found first on PATH.
err=$(timeout 60 "$P/bin/varslot" run --segment "$SEG" --stats -- \
    /usr/bin/python3 -c 'b = bytearray(4 << 20); b[-1] = 1' 2>&1 >/dev/null)
rc=$?
routed=$(sed -n "s|^varslot: pid=[0-9]* routed=\([0-9]*\) .* segment=$SEG\$|\1|p" <<<"$err" | head -1)
if [ $rc -eq 0 ] && [ "${routed:-0}" -gt 0 ]; then
    ok "python3 under the installed varslot run --stats: routed=$routed in $SEG"
else
    not_ok "python3 under the installed varslot run: exit $rc, no routed>0 stats line for $SEG" "$err"
fi
out=$(timeout 30 "$P/bin/varslot" rm "$SEG" 2>&1)
rc=$?
if [ $rc -eq 0 ] && [ ! -e "/dev/shm/${SEG#/}" ]; then
    ok "the installed varslot rm removed $SEG"
else
    not_ok "varslot rm $SEG: exit $rc" "$out"
fi

# ---- gst-inspect-1.0 finds the installed plugin (a fresh registry, no system plugins) ----
out=$(GST_PLUGIN_PATH=$P/lib/gstreamer-1.0 GST_PLUGIN_SYSTEM_PATH='' GST_REGISTRY=$TMP/registry.bin \
    timeout 60 gst-inspect-1.0 varslotsink 2>&1)
rc=$?
if [ $rc -eq 0 ] && grep -qE "^ *Filename +$P/lib/gstreamer-1.0/libgstvarslot.so$" <<<"$out"; then
    ok "gst-inspect-1.0 varslotsink: from $P/lib/gstreamer-1.0"
else
    not_ok "gst-inspect-1.0 varslotsink with GST_PLUGIN_PATH=$P/lib/gstreamer-1.0: exit $rc" "$(head -20 <<<"$out")"
fi

# ---- the installed varslot-memcheck finds its shim and suppressions ----
timeout 120 "$P/bin/varslot-memcheck" -v -- /bin/true >"$TMP/vg.log" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "Reading suppressions file: $P/share/varslot/varslot.supp" "$TMP/vg.log"; then
    ok "installed varslot-memcheck -- /bin/true exits 0, with $P/share/varslot/varslot.supp"
else
    not_ok "installed varslot-memcheck -- /bin/true: exit $rc" "$(grep -E 'suppressions|varslot|rror' "$TMP/vg.log" | head -20)"
fi
out=$(env -u LD_PRELOAD timeout 120 "$P/bin/varslot-memcheck" -q -- /bin/sh -c 'printf "%s\n" "$LD_PRELOAD"' 2>&1)
if [[ ":${out//$'\n'/:}:" == *":$P/lib/libvarslot-preload.so:"* ]]; then
    ok "installed varslot-memcheck preloads $P/lib/libvarslot-preload.so"
else
    not_ok "installed varslot-memcheck did not preload the installed shim" "$out"
fi

# ---- the man page: clean roff, and every command and option of --help ----
MAN=$P/share/man/man1/varslot.1
out=$(groff -man -ww -z "$MAN" 2>&1)
if [ -z "$out" ]; then ok "groff -man -ww: varslot.1 has no warnings"; else not_ok "groff warns about varslot.1" "$out"; fi
help=$("$P/bin/varslot" --help 2>&1)
man_text=$(sed 's/\\-/-/g' "$MAN")
missing=()
for c in $(sed -n 's/^  varslot \([a-z]*\).*/\1/p' <<<"$help"); do
    grep -qE "^\.BR? $c( |$)" <<<"$man_text" || missing+=("command $c")
done
for o in $(grep -oE -- '--[a-z][a-z-]*' <<<"$help" | sort -u); do
    grep -qF -- "$o" <<<"$man_text" || missing+=("option $o")
done
if [ ${#missing[@]} -eq 0 ]; then
    ok "varslot.1 describes every command and option of varslot --help"
else
    not_ok "varslot.1 lacks what --help lists" "${missing[@]}"
fi

# ---- one version everywhere: the tool, the man page, pkg-config and the library file ----
version=$("$P/bin/varslot" --version 2>&1)
man_version=$(sed -n 's/^\.TH VARSLOT 1 "[^"]*" "\(varslot [^"]*\)".*/\1/p' "$MAN")
pc_version=$(PKG_CONFIG_PATH="$P/lib/pkgconfig" pkg-config --modversion varslot 2>&1)
if [[ $version =~ ^varslot\ ([0-9]+\.[0-9]+\.[0-9]+)$ ]] && [ "$man_version" = "$version" ] &&
    [ "$pc_version" = "${BASH_REMATCH[1]}" ] && [ -f "$P/lib/libvarslot.so.$pc_version" ]; then
    ok "one version: varslot --version, the man page, pkg-config and libvarslot.so.$pc_version agree"
else
    not_ok "the versions disagree" "varslot --version: $version" "man page .TH: $man_version" \
        "pkg-config: $pc_version" "$(ls "$P/lib" | grep '^libvarslot\.so\.')"
fi

# ---- LIBDIR other than PREFIX/lib: the tools find the shim where make put it ----
P2=$TMP/prefix2
if mk install PREFIX="$P2" LIBDIR="$P2/lib64"; then
    ok "make install PREFIX=$P2 LIBDIR=$P2/lib64"
else
    not_ok "make install with LIBDIR=$P2/lib64" "$(log "$TMP/make.log")"
fi
same "its varslot run preloads $P2/lib64/libvarslot-preload.so" "$P2/lib64/libvarslot-preload.so" \
    "$(env -u LD_PRELOAD timeout 30 "$P2/bin/varslot" run -- /bin/sh -c 'printf %s "$LD_PRELOAD"' 2>&1)"
out=$(env -u LD_PRELOAD timeout 120 "$P2/bin/varslot-memcheck" -q -- /bin/sh -c 'printf "%s\n" "$LD_PRELOAD"' 2>&1)
if [[ ":${out//$'\n'/:}:" == *":$P2/lib64/libvarslot-preload.so:"* ]]; then
    ok "its varslot-memcheck preloads $P2/lib64/libvarslot-preload.so"
else
    not_ok "its varslot-memcheck did not preload the lib64 shim" "$out"
fi
same "its varslot.pc says libdir=\${prefix}/lib64" "$P2/lib64" \
    "$(PKG_CONFIG_LIBDIR=$P2/lib64/pkgconfig pkg-config --variable=libdir varslot 2>&1)"
mkdir -p "$TMP/lonely/bin" && cp "$P2/bin/varslot" "$P2/bin/varslot-memcheck" "$TMP/lonely/bin/"
mk uninstall PREFIX="$P2" LIBDIR="$P2/lib64"
same "make uninstall with the same LIBDIR leaves no file" "" "$(listing "$P2")"
# Copies whose shim is gone say so.
out=$(timeout 30 "$TMP/lonely/bin/varslot" run -- /bin/true 2>&1)
rc=$?
if [ $rc -eq 1 ] && [[ "$out" == *"cannot find libvarslot-preload.so in ../lib beside this program or in $P2/lib64"* ]]; then
    ok "varslot run without a shim: exit 1, says where it looked"
else
    not_ok "varslot run without a shim: exit $rc" "$out"
fi
out=$(timeout 30 "$TMP/lonely/bin/varslot-memcheck" -- /bin/true 2>&1)
rc=$?
if [ $rc -eq 2 ] && [[ "$out" == *"cannot find libvarslot-preload.so in $TMP/lonely/bin/../lib $P2/lib64"* ]]; then
    ok "varslot-memcheck without a shim: exit 2, says where it looked"
else
    not_ok "varslot-memcheck without a shim: exit $rc" "$out"
fi

# ---- make uninstall ----
if mk uninstall PREFIX="$P"; then ok "make uninstall PREFIX=$P"; else not_ok "make uninstall PREFIX=$P" "$(log "$TMP/make.log")"; fi
same "it left no file under the prefix" "" "$(listing "$P")"

# ---- DESTDIR: everything lands under it, nothing of it is baked into the files ----
S=$TMP/stage
if mk install DESTDIR="$S" PREFIX=/usr/local; then
    ok "make install DESTDIR=$S PREFIX=/usr/local"
else
    not_ok "make install DESTDIR=$S PREFIX=/usr/local" "$(log "$TMP/make.log")"
fi
same "the staged files are the expected list under usr/local/" "$(expected | sed 's|^|usr/local/|')" "$(listing "$S")"
baked=$(grep -rlF "$S" "$S" 2>/dev/null)
same "no installed file mentions DESTDIR" "" "$baked"
same "the staged varslot.pc has prefix=/usr/local" "prefix=/usr/local" \
    "$(grep '^prefix=' "$S/usr/local/lib/pkgconfig/varslot.pc" 2>&1)"
mk uninstall DESTDIR="$S" PREFIX=/usr/local
same "make uninstall with the same DESTDIR leaves no file" "" "$(listing "$S")"

echo "# $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
