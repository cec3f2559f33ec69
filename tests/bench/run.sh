#!/usr/bin/env bash
#
# run.sh: the driver behind `make bench`.  Starts a private Redis, the shim
# and the floor server (sw-bench floor: same protocol, no Redis) in a temp
# dir, drives both with the Exim-like load generator at a few concurrencies,
# and prints a table plus a verdict against the target.  The verdict is
# informative: the exit status is non-zero only when something broke.
#
# Run from anywhere after `make`; paths are taken from the repo root.
#
# Environment:
#   BENCH_SECONDS   measured seconds per run (default 5)
#   BENCH_WARMUP    unmeasured seconds before each run (default 1)
#   BENCH_KEYS      distinct sender addresses (default 10000)
#   BENCH_SHIM_BIN  shim binary (default build/senderwatch-shim)
#   BENCH_BIN       sw-bench binary (default build/sw-bench)
#   BENCH_USER      user the shim drops to when run as root (default nobody)

set -euo pipefail

cd "$(dirname "$0")/../.."

SECS=${BENCH_SECONDS:-5}
WARMUP=${BENCH_WARMUP:-1}
NKEYS=${BENCH_KEYS:-10000}
SHIM=${BENCH_SHIM_BIN:-build/senderwatch-shim}
SWB=${BENCH_BIN:-build/sw-bench}
CONCS=(1 8 32)

# The target, per docs: at this concurrency the shim keeps this share of the
# floor's rate, with this p99.
TARGET_CONC=32
TARGET_RATIO=0.60
TARGET_P99_US=2000

die() {
	echo "bench: $*" >&2
	exit 1
}

for b in "$SHIM" "$SWB"; do
	[[ -x $b ]] || die "$b: not found or not executable (run make first)"
done
for b in redis-server redis-cli; do
	command -v "$b" >/dev/null || die "$b: not in PATH"
done

T=$(mktemp -d "${TMPDIR:-/tmp}/sw-bench.XXXXXX")
PIDS=()

# Stop what we started, politely first: a shim that ignores SIGTERM must
# not leave `make bench` hanging.
stop_pid() {
	local pid=$1 i
	kill "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local pid
	for pid in ${PIDS[@]+"${PIDS[@]}"}; do
		stop_pid "$pid"
	done
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Show the end of a daemon's log after it failed, then give up.
die_log() {
	local what=$1 log=$2
	echo "bench: $what" >&2
	if [[ -s $log ]]; then
		echo "--- last lines of $(basename "$log"):" >&2
		tail -n 20 "$log" >&2
	fi
	exit 1
}

# Poll "$@" every 50 ms, at most TRIES times; give up early once PID is
# gone, since a dead daemon will not start answering.
wait_until() {
	local tries=$1 pid=$2 i
	shift 2
	for ((i = 0; i < tries; i++)); do
		"$@" && return 0
		kill -0 "$pid" 2>/dev/null || return 1
		sleep 0.05
	done
	return 1
}

redis_up() {
	[[ $(redis-cli -s "$T/redis.sock" ping 2>/dev/null) == PONG ]]
}

# A socket is ready once it has answered a real decision, not merely once
# the path exists: the listener may be bound before the loop runs.
answers() {
	local out
	[[ -S $1 ]] || return 1
	out=$("$SWB" load -s "$1" -c 1 -d 0.1 2>/dev/null) || return 1
	(($(field decisions "$out") > 0))
}

# The value of NAME in a sw-bench line of key=value pairs.
field() {
	local kv
	for kv in $2; do
		if [[ $kv == "$1="* ]]; then
			kv=${kv#*=}
			echo "${kv%/s}"
			return
		fi
	done
	echo 0
}

alive() {
	kill -0 "$1" 2>/dev/null
}

check_alive() {
	alive "$REDIS_PID" || die_log "redis-server exited" "$T/redis.log"
	alive "$SHIM_PID" || die_log "senderwatch-shim exited" "$T/shim.log"
	alive "$FLOOR_PID" || die_log "sw-bench floor exited" "$T/floor.log"
}

rss() {
	local kb
	kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null) ||
		true
	if [[ -n $kb ]]; then
		awk -v kb="$kb" 'BEGIN { printf "%.1f MB", kb / 1024 }'
	else
		echo "unknown"
	fi
}

# --- start the daemons ------------------------------------------------------

# As root the shim insists on dropping to a user, who must then reach Redis'
# socket and read its config inside our private dir.
SOCKPERM=700
USER_LINE=
if (($(id -u) == 0)); then
	BENCH_USER=${BENCH_USER:-nobody}
	id "$BENCH_USER" >/dev/null 2>&1 ||
		die "running as root: user $BENCH_USER does not exist (set BENCH_USER)"
	chmod 711 "$T"
	SOCKPERM=777
	USER_LINE="  user: $BENCH_USER"
fi

redis-server --port 0 --unixsocket "$T/redis.sock" \
	--unixsocketperm "$SOCKPERM" \
	--save '' --appendonly no --daemonize no --dir "$T" \
	>"$T/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
wait_until 200 "$REDIS_PID" redis_up ||
	die_log "redis-server did not answer PING" "$T/redis.log"

# A limit nobody reaches: answers stay "no" as for most real senders, and
# every decision still costs the full script.
cat >"$T/shim.yaml" <<EOF
shim:
  listen: [ $T/shim.sock ]
  socket_mode: "0666"
  client_timeout: 2s
  max_clients: 4096
$USER_LINE
redis:
  address: unix:$T/redis.sock
  timeout: 100ms
  on_error: "no"
events:
  channel: senderwatch:events
control:
  shim: $T/shim.ctl
rules:
  default: { limit: 1000000, window: 300s }
  one: { limit: 1000000, window: 300s }
  abuse: { limit: 100, window: 300s }
  abuse_nc: { limit: 100, window: 300s, near_cache: no }
  three:
    limits:
      - { limit: 1000000, window: 5m }
      - { limit: 1000000, window: 1h }
      - { limit: 1000000, window: 1d }
EOF

"$SHIM" -f -c "$T/shim.yaml" -p "$T/shim.pid" >"$T/shim.log" 2>&1 &
SHIM_PID=$!
PIDS+=("$SHIM_PID")
wait_until 200 "$SHIM_PID" answers "$T/shim.sock" ||
	die_log "senderwatch-shim did not answer on $T/shim.sock" "$T/shim.log"

"$SWB" floor -s "$T/floor.sock" >"$T/floor.log" 2>&1 &
FLOOR_PID=$!
PIDS+=("$FLOOR_PID")
wait_until 200 "$FLOOR_PID" answers "$T/floor.sock" ||
	die_log "sw-bench floor did not answer on $T/floor.sock" "$T/floor.log"

# --- measure ----------------------------------------------------------------

declare -A RES REDIS_US PER_CALL
PIN=

# Every process here shares the machine: on few CPUs the shim's figures
# include competing with Redis and the load generator.
echo "bench: $(nproc) CPUs, ${SECS}s per run after ${WARMUP}s warmup," \
	"$NKEYS keys, shim pid $SHIM_PID"

# One of the shim's counters, from its control socket (key=value lines).
shim_stat() {
	/usr/bin/python3 - "$T/shim.ctl" "$1" <<'PYEOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"stats\n")
out = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    out += b
for line in out.decode().splitlines():
    k, _, v = line.partition("=")
    if k == sys.argv[2]:
        print(v)
        break
else:
    print(0)
PYEOF
}
# Redis's CPU time so far, in clock ticks (utime + stime), and the
# decisions it has run (the shim's count of those its count.lua calls
# carried, a call carrying up to 32; warmups included like the time).
redis_ticks() {
	awk '{ print $14 + $15 }' "/proc/$REDIS_PID/stat"
}
redis_calls() {
	redis-cli -s "$T/redis.sock" info commandstats | tr -d '\r' |
	    awk -F'[:=,]' -v c="cmdstat_$1" '$1 == c { n = $3 } END { print n + 0 }'
}
redis_evalsha() {
	redis_calls evalsha
}
HZ=$(getconf CLK_TCK)

run_load() {
	local name=$1 sock=$2 conc=$3 out t0 e0
	t0=$(redis_ticks)
	e0=$(redis_evalsha)
	d0=$(shim_stat script_decisions)
	# $PIN (unquoted: empty, or a taskset prefix) places the load generator.
	out=$($PIN "$SWB" load -s "$sock" -c "$conc" -d "$SECS" -w "$WARMUP" \
		-k "$NKEYS" ${4:+-r "$4"} 2>"$T/load.err") ||
		die "sw-bench load failed: $(cat "$T/load.err")"
	printf '%-7s c=%-3s %s\n' "$name" "$conc" "$out"
	if [[ -s $T/load.err ]]; then
		sed 's/^/            /' "$T/load.err"
	fi
	RES[$name,$conc]=$out
	REDIS_US[$name]=$(awk -v t="$(($(redis_ticks) - t0))" -v hz="$HZ" \
	    -v n="$(($(shim_stat script_decisions) - d0))" \
	    'BEGIN { printf "%.1f", (n > 0 ? t * 1e6 / hz / n : 0) }')
	PER_CALL[$name,$conc]=$(awk -v e="$(($(redis_evalsha) - e0))" \
	    -v n="$(($(shim_stat script_decisions) - d0))" \
	    'BEGIN { printf "%.1f", (e > 0 ? n / e : 0) }')
	REDIS_US[$name,$conc]=${REDIS_US[$name]}
	check_alive
}

for c in "${CONCS[@]}"; do
	run_load floor "$T/floor.sock" "$c"
	run_load shim "$T/shim.sock" "$c"
done

# --- report -----------------------------------------------------------------

echo
printf '%11s | %13s | %17s | %13s | %17s | %10s\n' concurrency \
	"floor dec/s" "floor p50/p99 us" "shim dec/s" "shim p50/p99 us" \
	"shim/floor"
printf '%s\n' "------------+---------------+-------------------+---------------+-------------------+-----------"
for c in "${CONCS[@]}"; do
	f=${RES[floor,$c]}
	s=${RES[shim,$c]}
	awk -v c="$c" \
	    -v fr="$(field rate "$f")" -v f50="$(field p50_us "$f")" \
	    -v f99="$(field p99_us "$f")" \
	    -v sr="$(field rate "$s")" -v s50="$(field p50_us "$s")" \
	    -v s99="$(field p99_us "$s")" 'BEGIN {
		printf "%11s | %13.0f | %17s | %13.0f | %17s | %10s\n", c, fr,
		    sprintf("%.0f/%.0f", f50, f99), sr,
		    sprintf("%.0f/%.0f", s50, s99),
		    (fr > 0 ? sprintf("%.2f", sr / fr) : "n/a")
	}'
done
for c in "${CONCS[@]}"; do
	for n in floor shim; do
		e=$(field errors "${RES[$n,$c]}")
		r=$(field retries "${RES[$n,$c]}")
		if ((e > 0 || r > 0)); then
			echo "note: $n at c=$c had $e errors, $r connect retries"
		fi
	done
done
echo

# With -f the shim should be the process we started; trust its pid file only
# if it names a live process.
pid=$SHIM_PID
if [[ -r $T/shim.pid ]]; then
	p=$(head -n 1 "$T/shim.pid")
	if [[ $p =~ ^[0-9]+$ ]] && alive "$p"; then
		pid=$p
	fi
fi
echo "shim RSS: $(rss "$pid")   (floor RSS: $(rss "$FLOOR_PID"))"
mem=$(redis-cli -s "$T/redis.sock" info memory | tr -d '\r' |
	awk -F: '$1 == "used_memory_human" { print $2 }')
keys=$(redis-cli -s "$T/redis.sock" dbsize | tr -d '\r')
echo "redis used_memory_human: ${mem:-unknown}   keys (DBSIZE): ${keys:-unknown}"
echo

f=${RES[floor,$TARGET_CONC]:-}
s=${RES[shim,$TARGET_CONC]:-}
if [[ -z $f || -z $s ]]; then
	verdict="n/a (no run at c=$TARGET_CONC)"
else
	verdict=$(awk -v fr="$(field rate "$f")" -v sr="$(field rate "$s")" \
	    -v p99="$(field p99_us "$s")" -v ratio="$TARGET_RATIO" \
	    -v max="$TARGET_P99_US" 'BEGIN {
		ok = fr > 0 && sr / fr >= ratio && p99 < max
		printf "%s (shim at %.0f%% of floor, p99 %.2f ms)\n",
		    (ok ? "PASS" : "FAIL"), (fr > 0 ? 100 * sr / fr : 0),
		    p99 / 1000
	}')
fi
echo "target: at c=$TARGET_CONC shim >= 60% of floor decisions/s and" \
	"p99 < 2 ms: $verdict"

# --- Redis's CPU per decision, against a bare INCR ---------------------------

# What Redis spends on one decision, from its own CPU counters and command
# counts, beside what its cheapest write costs it in the same run: INCR
# from one client unpipelined (as the shim's one request at c=1) and
# pipelined 8 deep (as the shim's pipeline at c=32 is, about).  And the
# least any script costs it: an EVALSHA of "return 0" with no keys and no
# arguments, unpipelined, so that the c=1 ratio can be read against what
# is left of its budget once a script runs at all.
#
# redis_cmd_us PIPELINE REQUESTS COMMANDSTAT ARG...
redis_cmd_us() {
	local t0 n0 pipe=$1 n=$2 cmd=$3
	shift 3
	t0=$(redis_ticks)
	n0=$(redis_calls "$cmd")
	redis-benchmark -s "$T/redis.sock" -n "$n" -c 1 -P "$pipe" -q \
	    "$@" >/dev/null 2>&1 || die "redis-benchmark failed"
	awk -v t="$(($(redis_ticks) - t0))" -v hz="$HZ" \
	    -v n="$(($(redis_calls "$cmd") - n0))" \
	    'BEGIN { printf "%.2f", (n > 0 ? t * 1e6 / hz / n : 0) }'
}
INCR1=$(redis_cmd_us 1 200000 incr INCR senderwatch-bench:incr)
INCR8=$(redis_cmd_us 8 1000000 incr INCR senderwatch-bench:incr)
EMPTY_SHA=$(redis-cli -s "$T/redis.sock" script load "return 0") ||
	die "SCRIPT LOAD failed"
EMPTY1=$(redis_cmd_us 1 100000 evalsha EVALSHA "$EMPTY_SHA" 0)
echo "Redis CPU per decision (one window), from its counters:"
awk -v s1="${REDIS_US[shim,1]}" -v s32="${REDIS_US[shim,$TARGET_CONC]}" \
    -v i1="$INCR1" -v i8="$INCR8" -v e1="$EMPTY1" -v c="$TARGET_CONC" '
function x(a, b) { return b > 0 ? a / b : 0 }
BEGIN {
	printf "  c=1:  %.1f us, a bare INCR %.2f us unpipelined: %.1fx " \
	    "(target <= 1.5x: %s)\n", s1, i1, x(s1, i1),
	    (i1 > 0 && s1 / i1 <= 1.5 ? "PASS" : "FAIL")
	printf "        an empty script (EVALSHA of return 0, no keys) " \
	    "%.2f us unpipelined: %.1fx a bare INCR\n", e1, x(e1, i1)
	printf "  c=%d: %.1f us (target <= 3.5 us: %s), a bare INCR %.2f us " \
	    "pipelined 8 deep: %.1fx\n", c, s32, (s32 <= 3.5 ? "PASS" : "FAIL"),
	    i8, x(s32, i8)
	# Information only: this VM runs Redis at up to twice the cost of
	# another day.  The issue set 3.5 us where INCR 8 deep cost 1.5 us.
	printf "        (the target was set where that INCR cost 1.50 us: " \
	    "3.5 us was 2.3x it, %.1f us at this run'"'"'s)\n", 3.5 * i8 / 1.5
}'
line="  decisions per count.lua call (the shim's batches):"
for c in "${CONCS[@]}"; do
	line="$line c=$c ${PER_CALL[shim,$c]}"
done
echo "$line"
echo

# --- one window against three: still one round trip -------------------------

# The target is about round trips: a rule with three windows must still be
# one EVALSHA, not three.  What the extra windows do cost is Redis CPU (two
# commands each), so measure it where Redis has a core of its own, as it
# has a host of its own in production: redis-server on one core, the shim
# and the load generator on the other.  The same runs with all three
# sharing both cores follow, and Redis's CPU per decision in each, which is
# what a Redis sized for the cluster must budget for extra windows.
# The mean of runs NAME and NAME2: their rate, or Redis's CPU per decision.
mean_rate() {
	echo $((($(field rate "${RES[$1,$TARGET_CONC]}" | cut -d. -f1) +
	    $(field rate "${RES[${1}2,$TARGET_CONC]}" | cut -d. -f1)) / 2))
}
mean_us() {
	awk -v a="${REDIS_US[$1]}" -v b="${REDIS_US[${1}2]}" \
	    'BEGIN { printf "%.1f", (a + b) / 2 }'
}

# rules_report ONE THREE WHAT: print the comparison, leave it in RATIO (%).
rules_report() {
	local one three
	one=$(mean_rate "$1")
	three=$(mean_rate "$2")
	RATIO=$((one > 0 ? 100 * three / one : 0))
	echo "$3: one window $one/s, three windows $three/s: three at" \
	    "$RATIO% of one; Redis CPU per decision $(mean_us "$1") us and" \
	    "$(mean_us "$2") us"
}

verdict="n/a (needs 2 CPUs and taskset)"
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null 2>&1; then
	echo
	echo "rules, c=$TARGET_CONC, Redis on its own core (taskset: redis cpu 1, shim and load cpu 0)"
	taskset -pc 1 "$REDIS_PID" >/dev/null
	taskset -pc 0 "$SHIM_PID" >/dev/null
	PIN="taskset -c 0"
	# One, three, three, one: a drift in the machine's speed (or the
	# first run after the move) hits both alike.
	run_load pone "$T/shim.sock" "$TARGET_CONC" one
	run_load pthree "$T/shim.sock" "$TARGET_CONC" three
	run_load pthree2 "$T/shim.sock" "$TARGET_CONC" three
	run_load pone2 "$T/shim.sock" "$TARGET_CONC" one
	PIN=
	taskset -pc 0-$(($(nproc) - 1)) "$REDIS_PID" >/dev/null
	taskset -pc 0-$(($(nproc) - 1)) "$SHIM_PID" >/dev/null
	rules_report pone pthree "Redis on its own core"
	verdict="PASS"
	((RATIO >= 85)) || verdict="FAIL"
	verdict="$verdict (three at $RATIO% of one)"
fi

echo
echo "rules, c=$TARGET_CONC, all three processes sharing the $(nproc) cores"
run_load one "$T/shim.sock" "$TARGET_CONC" one
run_load three "$T/shim.sock" "$TARGET_CONC" three
run_load three2 "$T/shim.sock" "$TARGET_CONC" three
run_load one2 "$T/shim.sock" "$TARGET_CONC" one
rules_report one three "sharing the cores (information: the extra Redis CPU competes with the client here)"
echo "target: three windows within 15% of one, Redis on its own core: $verdict"

# --- abuse: a few keys far over their limit ---------------------------------

# 90% of the requests from 10 keys far over their limit, 10% from NKEYS
# others under it, at c=TARGET_CONC, against the floor's rate of the same
# run.  With the near cache (rule abuse) the shim answers the abusers
# itself; rule abuse_nc is the same without it.  Each is run once to put
# the abusers over, then measured with no warmup, so that Redis's and the
# shim's CPU cover exactly the requests answered.
shim_ticks() {
	awk '{ print $14 + $15 }' "/proc/$SHIM_PID/stat"
}
declare -A AB
run_abuse() {
	local name=$1 rule=$2 out t0 s0 h0 f0 n
	"$SWB" load -a -s "$T/shim.sock" -c "$TARGET_CONC" -d 1 -k "$NKEYS" \
	    -r "$rule" >/dev/null 2>"$T/load.err" ||
		die "sw-bench load failed: $(cat "$T/load.err")"
	t0=$(redis_ticks)
	s0=$(shim_ticks)
	h0=$(shim_stat near_cache_hits)
	f0=$(shim_stat near_cache_flushes)
	out=$("$SWB" load -a -s "$T/shim.sock" -c "$TARGET_CONC" -d "$SECS" \
	    -k "$NKEYS" -r "$rule" 2>"$T/load.err") ||
		die "sw-bench load failed: $(cat "$T/load.err")"
	n=$(field decisions "$out")
	printf '%-8s c=%-3s %s\n' "$name" "$TARGET_CONC" "$out"
	AB[$name]=$(awk -v r="$(field rate "$out")" -v p99="$(field p99_us "$out")" \
	    -v yes="$(field yes "$out")" -v n="$n" -v hz="$HZ" \
	    -v rt="$(($(redis_ticks) - t0))" -v st="$(($(shim_ticks) - s0))" \
	    -v hits="$(($(shim_stat near_cache_hits) - h0))" \
	    -v fl="$(($(shim_stat near_cache_flushes) - f0))" 'BEGIN {
		printf "%.0f %.0f %.2f %.2f %.0f %d %s", r, p99,
		    (n > 0 ? rt * 1e6 / hz / n : 0),
		    (n > 0 ? st * 1e6 / hz / n : 0),
		    (n > 0 ? 100 * hits / n : 0), fl, (n > 0 ? yes / n : 0)
	}')
	check_alive
}
echo
echo "abuse, c=$TARGET_CONC: 90% of requests from 10 keys over their limit, 10% from $NKEYS keys under it"
# The floor again, right before: this VM's speed drifts within minutes.
run_load floor "$T/floor.sock" "$TARGET_CONC"
floor_rate=$(field rate "${RES[floor,$TARGET_CONC]}")
run_abuse cached abuse
run_abuse uncached abuse_nc
printf '\n%9s | %9s | %8s | %8s | %13s | %12s | %9s | %7s\n' workload dec/s \
	"of floor" "p99 us" "Redis us/req" "shim us/req" "cache hits" flushes
printf '%s\n' "----------+-----------+----------+----------+---------------+--------------+-----------+--------"
for n in uncached cached; do
	read -r r p99 rus sus hits fl _ <<<"${AB[$n]}"
	awk -v n="$n" -v r="$r" -v f="$floor_rate" -v p99="$p99" -v rus="$rus" \
	    -v sus="$sus" -v hits="$hits" -v fl="$fl" 'BEGIN {
		printf "%9s | %9.0f | %7.0f%% | %8.0f | %13.2f | %12.2f | %8.0f%% | %7d\n",
		    n, r, (f > 0 ? 100 * r / f : 0), p99, rus, sus, hits, fl
	}'
done
echo "near cache: $(shim_stat near_cache_entries) entries, $(shim_stat near_cache_bytes) bytes, $(shim_stat near_cache_lost) cost units lost"
read -r r p99 rus _ <<<"${AB[cached]}"
verdict=$(awk -v r="$r" -v f="$floor_rate" -v rus="$rus" 'BEGIN {
	ok = f > 0 && r / f >= 0.90 && rus < 1.0
	printf "%s (%.0f%% of floor, Redis %.2f us per request)",
	    (ok ? "PASS" : "FAIL"), (f > 0 ? 100 * r / f : 0), rus
}')
echo "target: abuse at c=$TARGET_CONC >= 90% of the floor's decisions/s and Redis CPU < 1 us per request: $verdict"
# Information only, as for c=32 above: the 1 us was set where a bare INCR
# 8 deep cost Redis 1.5 us.
awk -v rus="$rus" -v i8="$INCR8" 'BEGIN {
	if (i8 > 0)
		printf "        Redis per request %.2fx this run'"'"'s bare INCR 8 " \
		    "deep (%.2f us); the target was 0.67x the 1.50 us of the " \
		    "day it was set\n", rus / i8, i8
}'

# --- Redis memory per tracked key --------------------------------------------

echo
/usr/bin/python3 tests/bench/memory.py "${BENCH_MEMORY_KEYS:-100000}"
