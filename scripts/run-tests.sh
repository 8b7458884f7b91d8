#!/bin/sh
# Runs every test binary BUILD_DIR/tests/check_* from the repository root,
# with PGBERTH_BIN pointing at BUILD_DIR/pgberth, and reports each. Counts
# are Check's own ("Checks: X, Failures: Y, Errors: Z"), summed over the
# binaries; a binary that dies without that line counts as one failure.
# The last line is always "N passed, N failed"; the exit status is nonzero
# if anything failed.
#
# Usage: scripts/run-tests.sh [BUILD_DIR]      (default: build)
# Environment: CK_RUN_CASE / CK_RUN_SUITE / CK_VERBOSITY / CK_FORK and
# CK_TIMEOUT_MULTIPLIER are Check's; PG_BINDIR picks the PostgreSQL binaries.
set -u

BUILD=${1:-build}
cd "$(dirname "$0")/.." || exit 2
case $BUILD in
/*) ;;
*) BUILD=$(pwd)/$BUILD ;;
esac
PGBERTH_BIN=$BUILD/pgberth
export PGBERTH_BIN

passed=0
failed=0
found=0
out=$(mktemp "${TMPDIR:-/tmp}/pgberth-run-tests.XXXXXX") || exit 2
trap 'rm -f "$out"' EXIT INT TERM

for t in "$BUILD"/tests/check_*; do
	[ -f "$t" ] && [ -x "$t" ] || continue
	case $t in *.o | *.d) continue ;; esac
	found=$((found + 1))
	name=$(basename "$t")
	start=$(date +%s)
	"$t" >"$out" 2>&1
	rc=$?
	secs=$(($(date +%s) - start))
	summary=$(grep -E 'Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+' "$out" | tail -n 1)
	if [ -n "$summary" ]; then
		checks=$(echo "$summary" | sed -E 's/.*Checks: ([0-9]+).*/\1/')
		fails=$(echo "$summary" | sed -E 's/.*Failures: ([0-9]+).*/\1/')
		errors=$(echo "$summary" | sed -E 's/.*Errors: ([0-9]+).*/\1/')
		bad=$((fails + errors))
		good=$((checks - bad))
		# Crashed or leaked after its summary: count that as a failure too.
		[ "$rc" -ne 0 ] && [ "$bad" -eq 0 ] && bad=1
	else
		good=0
		bad=1
	fi
	passed=$((passed + good))
	failed=$((failed + bad))
	if [ "$bad" -eq 0 ]; then
		echo "PASS $name: $good checks (${secs}s)"
	else
		echo "FAIL $name: $good passed, $bad failed, exit status $rc (${secs}s)"
		sed 's/^/    /' "$out"
	fi
done

if [ "$found" -eq 0 ]; then
	echo "no test binaries in $BUILD/tests (run make tests)"
	failed=$((failed + 1))
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
