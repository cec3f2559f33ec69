#!/bin/sh
# run.sh: build the libFuzzer targets and run each for a bounded time.
#
#   FUZZ_SECONDS=20  sh tests/fuzz/run.sh     (make test)
#   FUZZ_SECONDS=300 sh tests/fuzz/run.sh     (make fuzz)
#   sh tests/fuzz/run.sh fuzz_conf            (one target)
#
# The targets are built with clang from the sources themselves (not the
# Makefile's objects, which are gcc-built without coverage), with
# AddressSanitizer and UBSan, UB made fatal.  The targets run at once,
# sharing the cores.  Seeds come from tests/fuzz/corpus/NAME and stay
# untouched: what libFuzzer learns goes to a scratch corpus, so a run leaves the
# checkout clean.  A crash, leak or broken invariant leaves its input in
# build/fuzz/ and fails the run.
#
# Prints one line per target, then "fuzz: N passed, N failed".  Needs the
# Debian packages clang and libclang-rt-14-dev (the fuzzer runtime).

root=$(cd "$(dirname "$0")/../.." && pwd)
seconds=${FUZZ_SECONDS:-20}
out=${FUZZ_BUILD:-$root/build/fuzz}
cc=${FUZZ_CC:-clang}
targets=${*:-fuzz_request fuzz_conf fuzz_keyspace}

mkdir -p "$out" || exit 1
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sw-fuzz.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! command -v "$cc" >/dev/null 2>&1; then
	echo "fuzz: $cc not found (apt-get install clang libclang-rt-14-dev)"
	echo "fuzz: 0 passed, 1 failed"
	exit 1
fi

yaml_cflags=$(pkg-config --cflags yaml-0.1 hiredis 2>/dev/null)
yaml_libs="$(pkg-config --libs yaml-0.1 2>/dev/null || echo -lyaml) -lev"
flags="-g -O1 -fno-omit-frame-pointer -D_GNU_SOURCE -std=c11
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
    -I$root/common -I$root/shim $yaml_cflags"

# What each target is built from: its harness, then the code under test.
sources() {
	case $1 in
	fuzz_request)
		echo "$root/tests/fuzz/fuzz_request.c $root/shim/request.c" \
		    "$root/common/log.c" ;;
	fuzz_conf)
		echo "$root/tests/fuzz/fuzz_conf.c $root/common/conf.c" \
		    "$root/common/keyspace.c" ;;
	fuzz_keyspace)
		echo "$root/tests/fuzz/fuzz_keyspace.c" \
		    "$root/common/keyspace.c" ;;
	*)
		return 1 ;;
	esac
}

passed=0
failed=0

# Build every target first: a compile error is reported as such.
built=
for t in $targets; do
	if ! src=$(sources "$t"); then
		echo "$t: FAIL unknown target"
		failed=$((failed + 1))
		continue
	fi
	# shellcheck disable=SC2086
	if ! $cc $flags -o "$out/$t" $src $yaml_libs >"$tmp/$t.build" 2>&1
	then
		cat "$tmp/$t.build"
		echo "$t: FAIL does not build"
		failed=$((failed + 1))
		continue
	fi
	built="$built $t"
done

# Run them side by side; libFuzzer exits non-zero on any finding.  Input
# from /dev/null: a config may name /dev/stdin as a password_file.
for t in $built; do
	mkdir -p "$tmp/$t.corpus"
	(
		cd "$out" || exit 1
		ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		"./$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
		    -print_final_stats=1 -artifact_prefix="$out/$t-" \
		    "$tmp/$t.corpus" "$root/tests/fuzz/corpus/${t#fuzz_}" \
		    </dev/null >"$tmp/$t.log" 2>&1
		echo $? >"$tmp/$t.rc"
	) &
done
wait

for t in $built; do
	rc=$(cat "$tmp/$t.rc" 2>/dev/null || echo 1)
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$tmp/$t.log")
	cov=$(sed -n 's/.*DONE *cov: *\([0-9]*\).*/\1/p' "$tmp/$t.log" |
	    tail -n 1)
	if [ -z "$cov" ]; then
		cov=$(sed -n 's/.* cov: *\([0-9]*\).*/\1/p' "$tmp/$t.log" |
		    tail -n 1)
	fi
	corpus=$(find "$tmp/$t.corpus" -type f | wc -l)
	if [ "$rc" -eq 0 ]; then
		echo "$t: ok seconds=$seconds runs=${runs:-?} cov=${cov:-?}" \
		    "new_inputs=$corpus"
		passed=$((passed + 1))
	else
		# The finding and its stack, then where the input was kept.
		grep -E -A 40 '^==[0-9]+==ERROR|runtime error|deadly signal' \
		    "$tmp/$t.log" | head -n 60
		echo "$t: FAIL exit=$rc runs=${runs:-?} input:" \
		    "$(find "$out" -name "$t-*" -newer "$out/$t" | tail -n 1)"
		failed=$((failed + 1))
	fi
done

echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
