#!/bin/sh
# run-all.sh UNIT_BIN...: what `make test` runs.  The unit test binaries
# first, then the integration tests (real redis-server, daemons, Exim, an
# SMTP receiver) under Debian's python3, then a bounded fuzzing run
# (FUZZ_SECONDS, default 20), the shim under valgrind through faults, and
# the integration tests again with both daemons under valgrind
# (SW_VALGRIND=1); then one closing line "N passed, N failed" that sums
# them all.  Exit status: 0 only when nothing failed.
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

# --- fuzzing and valgrind: each prints "NAME: N passed, N failed" ------------

extra() {
	name=$1
	shift
	echo "== $name"
	{
		"$@" 2>&1
		echo $? >"$tmp/x.rc"
	} | tee "$tmp/x.out"
	last=$(grep -E "^$name: [0-9]+ passed, [0-9]+ failed" "$tmp/x.out" |
	    tail -n 1)
	p=$(field passed "$last")
	f=$(field failed "$last")
	if [ -z "$p" ] || [ -z "$f" ] ||
	    { [ "$(cat "$tmp/x.rc")" -ne 0 ] && [ "$f" -eq 0 ]; }; then
		echo "run-all: $name gave no clean summary: counted as 1 failure"
		p=${p:-0}
		f=1
	fi
	xp=$((xp + p))
	xf=$((xf + f))
}
xp=0
xf=0
extra fuzz env FUZZ_SECONDS="${FUZZ_SECONDS:-20}" sh "$root/tests/fuzz/run.sh"
if [ -n "${SW_SAN:-}" ]; then
	# Sanitizer builds and valgrind do not mix: ASan is the memory check.
	echo "== valgrind: skipped (the daemons are built with sanitizers)"
else
	extra valgrind sh "$root/tests/valgrind.sh"

	# The integration suite once more with both daemons under valgrind: memory
	# errors or leaks at exit fail the test that started the daemon.  Timing
	# and memory bounds skip themselves there.
	echo "== integration under valgrind (SW_VALGRIND=1)"
	{
		SW_VALGRIND=1 PYTHONDONTWRITEBYTECODE=1 "$python" -m pytest -q -rfEs \
		    -p no:cacheprovider "$root/tests/integration" 2>&1
		echo $? >"$tmp/vg.rc"
	} | tee "$tmp/vg.out"
	last=$(grep -E '^(=+ )?[0-9]+ (passed|failed|error|errors|skipped)' \
	    "$tmp/vg.out" | tail -n 1)
	vp=$(field passed "$last")
	vf=$(field failed "$last")
	ve=$(field error "$last")
	vf=$((${vf:-0} + ${ve:-0}))
	if [ "$(cat "$tmp/vg.rc" 2>/dev/null || echo 1)" -ne 0 ] && [ "$vf" -eq 0 ]; then
		echo "run-all: pytest under valgrind failed to run: counted as 1 failure"
		vf=1
	fi
	xp=$((xp + ${vp:-0}))
	xf=$((xf + vf))
fi

echo "unit: $up passed, $uf failed; integration: $ip passed, $ifl failed;" \
    "fuzz and valgrind: $xp passed, $xf failed"
echo "$((up + ip + xp)) passed, $((uf + ifl + xf)) failed"
[ $((uf + ifl + xf)) -eq 0 ]
