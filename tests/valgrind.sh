#!/bin/sh
# valgrind.sh: senderwatch-shim under valgrind through a short scenario
# that walks its error paths, then SIGTERM; fails on any memory error or
# any definite or indirect leak at exit.
#
#   sh tests/valgrind.sh            (after make; needs valgrind, redis-server)
#
# The scenario: decisions, every kind of bad request, a 1 MB line, binary
# keys, clients that leave before the answer or never send, Redis frozen
# (the timeout answers while replies are owed), Redis killed and restarted
# (reconnect, script reloaded), a config reload, stats, and a shutdown with
# a request still waiting on a frozen Redis.  Prints valgrind's summary and
# "valgrind: N passed, N failed".

root=$(cd "$(dirname "$0")/.." && pwd)
shim=${SHIM:-$root/build/senderwatch-shim}
python=${SW_PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sw-valgrind.XXXXXX") || exit 1
chmod 755 "$tmp"
redis_pid=
shim_pid=

cleanup() {
	[ -n "$shim_pid" ] && kill "$shim_pid" 2>/dev/null
	if [ -n "$redis_pid" ]; then
		kill -CONT "$redis_pid" 2>/dev/null
		kill "$redis_pid" 2>/dev/null
	fi
	wait 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
	echo "valgrind.sh: $*"
	echo "valgrind: 0 passed, 1 failed"
	exit 1
}

command -v valgrind >/dev/null || fail "valgrind is not installed"
[ -x "$shim" ] || fail "$shim: not built (run make)"

start_redis() {
	redis-server --port 0 --unixsocket "$tmp/redis.sock" \
	    --unixsocketperm 777 --save "" --appendonly no --dir "$tmp" \
	    --logfile "$tmp/redis.log" &
	redis_pid=$!
	i=0
	until redis-cli -s "$tmp/redis.sock" PING 2>/dev/null | grep -q PONG
	do
		i=$((i + 1))
		[ $i -gt 500 ] && fail "redis-server did not start"
		sleep 0.01
	done
}
start_redis

user=
[ "$(id -u)" -eq 0 ] && user="  user: nobody"
cat >"$tmp/config.yaml" <<EOF
shim:
  listen: [ $tmp/shim.sock ]
  socket_mode: "0666"
$user
  client_timeout: 300ms
  max_request: 1024
redis:
  address: unix:$tmp/redis.sock
  timeout: 500ms
  on_error: "yes"
rules:
  default: { limit: 3, window: 60s }
  ip: { limit: 1, window: 60s }
EOF
chmod 644 "$tmp/config.yaml"

valgrind -q --vgdb=no --leak-check=full --show-leak-kinds=definite,indirect \
    --errors-for-leak-kinds=definite,indirect --error-exitcode=99 \
    --log-file="$tmp/valgrind.log" \
    "$shim" -f -v -c "$tmp/config.yaml" >"$tmp/shim.log" 2>&1 &
shim_pid=$!

# The driver talks to the sockets and signals; it exits non-zero when the
# shim misbehaves (wrong answer, no answer, died).
cat >"$tmp/driver.py" <<'PYEOF'
import os, signal, socket, sys, time

tmp, phase = os.environ["TMPD"], sys.argv[1]
sock = os.path.join(tmp, "shim.sock")
shim_pid = int(os.environ["SHIM_PID"])
redis_pid = int(os.environ["REDIS_PID"])


def wait_for(cond, what, timeout=60.0):
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            sys.exit("valgrind.sh: timed out waiting for " + what)
        time.sleep(0.05)


def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(sock)
    return s


def ask(data):
    s = connect()
    try:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass        # refused before the end: the answer is there
        out = b""
        while True:
            try:
                b = s.recv(4096)
            except ConnectionResetError:
                return out
            if not b:
                return out
            out += b
    finally:
        s.close()


def log():
    with open(os.path.join(tmp, "shim.log"), "rb") as f:
        return f.read().decode("utf-8", "replace")


def stats():
    n = log().count("event=stats ")
    os.kill(shim_pid, signal.SIGUSR1)
    wait_for(lambda: log().count("event=stats ") > n, "the stats line")
    line = [l for l in log().splitlines() if "event=stats " in l][-1]
    return {k: int(v) for k, v in (kv.split("=", 1) for kv in line.split()
                                   if "=" in kv) if v.isdigit()}


def check(got, want, what):
    if got != want:
        sys.exit("valgrind.sh: %s: got %r, want %r" % (what, got, want))


def answers():
    try:
        return ask(b"") == b"no"
    except OSError:
        return False


if phase == "start":
    wait_for(lambda: answers() and "script_loaded" in log(),
             "the shim to start")

    # Decisions, over the limit too (a crossing is logged).
    for i, want in enumerate([b"no", b"no", b"no", b"yes"]):
        check(ask(b"alice@example.org\n"), want, "decision %d" % i)
    check(ask(b"rule=ip\nkey=192.0.2.1\nsubject=Hi\n\n"), b"no", "block")

    # Bad requests of every kind, a 1 MB line, hostile bytes.
    for bad in [b"rule=nope\nkey=a\n\n", b"key=a\ncolour=x\n\n",
                b"key=a\nkey=b\n\n", b"x" * 600 + b"\n",
                b"key=a\nsubject=" + b"s" * 2000 + b"\n\n",
                b"rule=ip\nsubject=x\n\n", b"k" * 3000,
                b"m" * (1 << 20) + b"\n"]:
        check(ask(bad), b"yes", "bad request %r" % bad[:20])
    for k in [b"\x00\xff{}\r", b"$(id)`x`", b"\xc3\x28"]:
        check(ask(k + b"\n"), b"no", "binary key")

    # Gone before the answer; silent until client_timeout.
    for _ in range(20):
        s = connect()
        s.sendall(b"gone@example.org\n")
        s.close()
    s = connect()
    # answered the fail policy (on_error "yes"), then closed
    check(s.recv(10), b"yes", "silent client answered")
    s.close()

    # Redis frozen: the timer answers while replies are owed, and some
    # clients leave meanwhile.  The replies come after SIGCONT and find no
    # session.
    before = stats()["fail_policy"]
    os.kill(redis_pid, signal.SIGSTOP)
    try:
        check(ask(b"frozen@example.org\n"), b"yes", "frozen: fail policy")
        for _ in range(5):
            s = connect()
            s.sendall(b"frozen-gone@example.org\n")
            s.close()
        wait_for(lambda: stats()["fail_policy"] >= before + 6,
                 "the timer to answer the departed")
    finally:
        os.kill(redis_pid, signal.SIGCONT)
    wait_for(lambda: ask(b"after-freeze@example.org\n") == b"no",
             "decisions after the freeze")

    os.kill(shim_pid, signal.SIGHUP)
    wait_for(lambda: "event=reload " in log(), "the reload")
    print("driver: ok")

elif phase == "restarted":
    wait_for(lambda: ask(b"restart@example.org\n") == b"no",
             "decisions after the restart")
    # Shut down with a request waiting on a frozen Redis: it gets the fail
    # policy, then the exit frees everything.
    os.kill(redis_pid, signal.SIGSTOP)
    s = connect()
    s.sendall(b"at-exit@example.org\n")
    s.shutdown(socket.SHUT_WR)
    wait_for(lambda: stats()["sessions"] == 1, "the request to be taken")
    os.kill(shim_pid, signal.SIGTERM)
    got = s.recv(100)
    s.close()
    if got not in (b"yes", b""):
        sys.exit("valgrind.sh: at exit: got %r" % got)
    print("driver after the restart: ok, answer at exit %r" % got)
PYEOF

drive() {
	SHIM_PID=$shim_pid REDIS_PID=$redis_pid TMPD=$tmp \
	    "$python" "$tmp/driver.py" "$1" ||
	    fail "driver ($1) failed; shim log: $(tail -n 5 "$tmp/shim.log")"
}

drive start
# Redis killed and restarted on the same socket.
kill -9 "$redis_pid"
wait "$redis_pid" 2>/dev/null
start_redis
drive restarted

wait "$shim_pid"
rc=$?
shim_pid=
kill -CONT "$redis_pid" 2>/dev/null

echo "== valgrind log"
cat "$tmp/valgrind.log"
echo "== shim stats"
grep -E 'event=(stats|exit)' "$tmp/shim.log" | tail -n 2
if [ $rc -eq 0 ]; then
	echo "valgrind.sh: shim exited 0: no memory errors, no definite or" \
	    "indirect leaks"
	echo "valgrind: 1 passed, 0 failed"
	exit 0
fi
echo "valgrind.sh: shim exited $rc (99: valgrind found errors or leaks)"
echo "valgrind: 0 passed, 1 failed"
exit 1
