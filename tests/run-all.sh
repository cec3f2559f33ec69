#!/bin/sh
# run-all.sh UNIT_BIN...: what `make test` runs.  The unit test binaries
# first, then the integration tests (real redis-server, shim and Exim)
# under Debian's python3, then one closing line "N passed, N failed" that
# sums both.  Exit status: 0 only when nothing failed.
#
# pytest runs without its cache plugin and Python without bytecode files,
# so a test run leaves nothing behind in the checkout.

root=$(cd "$(dirname "$0")/.." && pwd)
python=${SW_PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sw-run-all.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Numbers from a "N passed, N failed" line.
field() {
	printf '%s\n' "$2" | sed -n "s/.*[^0-9]\([0-9][0-9]*\) $1.*/\1/p;
	    s/^\([0-9][0-9]*\) $1.*/\1/p" | head -n 1
}

# --- unit -------------------------------------------------------------------

sh "$root/tests/run-unit.sh" "$@" | tee "$tmp/unit.out"
last=$(tail -n 1 "$tmp/unit.out")
up=$(field passed "$last")
uf=$(field failed "$last")
if [ -z "$up" ] || [ -z "$uf" ]; then
	echo "run-all: the unit tests gave no summary: counted as 1 failure"
	up=0
	uf=1
fi

# --- integration ------------------------------------------------------------

echo "== integration (pytest)"
# Shown as it runs; POSIX sh has no pipefail, so the status goes via a file.
{
	PYTHONDONTWRITEBYTECODE=1 "$python" -m pytest -q -rfEs \
	    -p no:cacheprovider --durations=5 "$root/tests/integration" 2>&1
	echo $? >"$tmp/py.rc"
} | tee "$tmp/py.out"
rc=$(cat "$tmp/py.rc" 2>/dev/null || echo 1)
# The closing line: "3 failed, 40 passed, 1 skipped, 2 errors in 9.1s".
last=$(grep -E '^(=+ )?[0-9]+ (passed|failed|error|errors|skipped)' \
    "$tmp/py.out" | tail -n 1)
ip=$(field passed "$last")
ifl=$(field failed "$last")
ie=$(field error "$last")
ip=${ip:-0}
ifl=$((${ifl:-0} + ${ie:-0}))
if [ "$rc" -ne 0 ] && [ "$ifl" -eq 0 ]; then
	# Collection errors, no tests found, pytest missing, interrupted.
	echo "run-all: pytest exited with status $rc: counted as 1 failure"
	ifl=1
fi

echo "unit: $up passed, $uf failed; integration: $ip passed, $ifl failed"
echo "$((up + ip)) passed, $((uf + ifl)) failed"
[ $((uf + ifl)) -eq 0 ]
