#!/bin/sh
# run-unit.sh BIN...: run each unit test binary, show its output, and end
# with one line "N passed, N failed" summing them all.
#
# Each binary prints "N passed, N failed" as its last line.  A binary that
# crashes, cannot run or prints no such line counts as one failure, so a
# broken test can never look like a passing one.  Exit status: 0 only when
# nothing failed.

passed=0
failed=0
for bin in "$@"; do
	echo "== $bin"
	out=$("$bin" 2>&1)
	rc=$?
	[ -n "$out" ] && printf '%s\n' "$out"
	last=$(printf '%s\n' "$out" | tail -n 1)
	p=$(printf '%s\n' "$last" |
	    sed -n 's/^\([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed$/\1/p')
	f=$(printf '%s\n' "$last" |
	    sed -n 's/^\([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed$/\2/p')
	if [ -z "$p" ]; then
		echo "$bin: exit status $rc and no summary line: counted as" \
		    "1 failure"
		p=0
		f=1
	elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		echo "$bin: exit status $rc with no failed check: counted as" \
		    "1 failure"
		f=1
	fi
	passed=$((passed + p))
	failed=$((failed + f))
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
