#!/usr/bin/env bash
# make check-mutants: each tests/mutants/NAME.mutant is a small deliberate bug in the real
# sources (exact text replaced by other text, in one or more hunks) and the test that claims
# to catch it. Each is applied to a scratch copy of the tree, built, and run against only that
# test; a mutant the test does not catch fails the run. Before any mutant, every named test
# must pass on the unmutated tree (else "caught" would mean nothing).
#   tests/run-mutants.sh [NAME...]     (default: all)
# Prints "mutant: NAME: caught by TEST" or "mutant: NAME: SURVIVED (TEST passed)".
# A mutant file: "# why" lines, then "file: PATH", "suite: core|gst|shell", "test: FILTER"
# (a gtest filter; for suite shell, a command line), then hunks: "@@ old", the exact whole
# lines to replace (found once), "@@ new", their replacement; "@@ end" after the last.
# Optional "repeat: N" (suite core): the test runs N times and the mutant is caught if any
# run fails, for a test that samples a race and catches its mutant in most runs, not all.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
die() { echo "run-mutants: $*" >&2; exit 2; }

field() { sed -n "s/^$2: //p" "$1" | head -1; } # field FILE NAME

# Applies the hunks of mutant $1 to file $2 (each old text must occur exactly once), or
# restores nothing and fails.
apply() {
    perl -e '
        my ($mutant, $target) = @ARGV;
        open(my $m, "<", $mutant) or die "cannot read $mutant\n";
        my (@hunks, $mode, $old, $new);
        while (my $line = <$m>) {
            if ($line =~ /^\@\@ old$/) { push @hunks, [$old, $new] if defined $old; ($old, $new, $mode) = ("", "", "old"); next }
            if ($line =~ /^\@\@ new$/) { $mode = "new"; next }
            if ($line =~ /^\@\@ end$/) { push @hunks, [$old, $new] if defined $old; last }
            next unless defined $mode;
            if ($mode eq "old") { $old .= $line } else { $new .= $line }
        }
        local $/; open(my $f, "<", $target) or die "cannot read $target\n"; my $text = <$f>; close $f;
        for my $h (@hunks) {
            my ($o, $n) = @$h;
            my $count = () = $text =~ /\Q$o\E/g;
            die "hunk found $count times (must be once):\n$o" if $count != 1;
            my $at = index($text, $o);
            substr($text, $at, length $o) = $n;
        }
        open($f, ">", $target) or die "cannot write $target\n"; print $f $text; close $f;
    ' "$1" "$2"
}

# Runs TEST of SUITE in the scratch tree; its exit status. Suite "shell": TEST is a command
# line run by bash (a shell suite, or one of its cases), e.g.
#   test: tests/preload/run-shim-tests.sh --gtest_filter=Routing.FreeGoesBackToTheSegment
run_test() {
    local suite=$1 test=$2 repeat=${3:-1}
    case $suite in
    shell) timeout -k 5 900 bash -c "$test" ;;
    core) timeout -k 5 300 build/plain/tests/core_tests --gtest_filter="$test" --gtest_repeat="$repeat" ;;
    gst) VSTEST_GST_SKIP_PIPELINES=1 timeout -k 5 300 tests/gst/run-gst-tests.sh --gtest_filter="$test" ;;
    *) echo "unknown suite $suite"; return 2 ;;
    esac
}

build() { # build SUITE: its programs, as make check would (the suites build nothing)
    case $1 in
    core) make -s -j2 build/plain/tests/core_tests ;;
    gst | shell) make -s -j2 test-programs-plain ;;
    esac
}

mutants=()
if [ $# -gt 0 ]; then
    for n in "$@"; do mutants+=("$ROOT/tests/mutants/$n.mutant"); done
else
    mutants=("$ROOT"/tests/mutants/*.mutant)
fi

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/varslot-mutants.XXXXXX") || die "mktemp failed"
trap 'rm -rf "$SCRATCH"' EXIT
git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$SCRATCH" || die "cannot copy the tree"
cd "$SCRATCH" || exit 1
LOG=$SCRATCH/log
echo "# scratch copy in $SCRATCH; building"
make -s -j2 test-programs-plain >"$LOG" 2>&1 || { tail -20 "$LOG"; die "the unmutated tree does not build"; }

echo "# the unmutated tree passes every named test"
for m in "${mutants[@]}"; do
    [ -f "$m" ] || die "no such mutant: $m"
    if ! run_test "$(field "$m" suite)" "$(field "$m" test)" "$(field "$m" repeat)" >"$LOG" 2>&1; then
        tail -20 "$LOG"
        die "$(field "$m" test) fails without any mutation"
    fi
done

FAILED=0
for m in "${mutants[@]}"; do
    name=$(basename "$m" .mutant) file=$(field "$m" file) suite=$(field "$m" suite) test=$(field "$m" test)
    cp "$file" "$LOG.orig"
    if ! apply "$m" "$file" 2>"$LOG"; then
        echo "mutant: $name: DOES NOT APPLY to $file"; sed 's/^/#   /' "$LOG"
        FAILED=$((FAILED + 1))
        continue
    fi
    if ! build "$suite" >"$LOG" 2>&1; then
        echo "mutant: $name: DOES NOT BUILD"; tail -5 "$LOG" | sed 's/^/#   /'
        FAILED=$((FAILED + 1))
    elif run_test "$suite" "$test" "$(field "$m" repeat)" >"$LOG" 2>&1; then
        echo "mutant: $name: SURVIVED ($test passed)"
        FAILED=$((FAILED + 1))
    else
        echo "mutant: $name: caught by $test"
    fi
    cp "$LOG.orig" "$file"
    touch "$file"
done
build core >/dev/null 2>&1; build gst >/dev/null 2>&1
[ $FAILED -eq 0 ] && echo "# run-mutants: every mutant caught (${#mutants[@]})" || echo "# run-mutants: $FAILED of ${#mutants[@]} not caught"
[ $FAILED -eq 0 ]
