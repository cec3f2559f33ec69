#!/bin/sh
# run-local.sh: the quick start behind `make run` (which builds first).
#
# Runs the whole loop on this machine, in the foreground, from run/:
# a private redis-server, a local SMTP sink that files each mail in
# run/mail/, senderwatch-shim and senderwatch-alerter.  Then it plays a
# demo (6 hits for demo@example.org against a limit of 5, so one alert
# mail), prints how to try it by hand, and waits for Ctrl-C, which stops
# everything it started.
#
# Without a terminal on stdin, or with MAKE_RUN_ONESHOT=1, it stops after
# the demo and exits 0 only if the alert mail arrived (the tests use this).
# MAKE_RUN_ONESHOT=0 keeps it in the foreground even without a terminal.
# SW_RUN_DIR chooses another run directory (default: run/ in the repo).
#
# Re-runnable: processes left by an earlier run in the same run directory
# (say its terminal was killed) are stopped first.  Only processes named in
# that directory's pidfiles, and whose command line still points into it,
# are touched.
set -eu

cd "$(dirname "$0")/.."
ROOT=$(pwd -P)
SHIM=$ROOT/build/senderwatch-shim
ALERTER=$ROOT/build/senderwatch-alerter
CTL=$ROOT/build/senderwatch-ctl
SINK=$ROOT/tests/integration/smtp_sink.py
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

DEMO_KEY=demo@example.org
LIMIT=5
WINDOW=60s

say() { printf '%s\n' "$*"; }
warn() { printf 'run-local: %s\n' "$*" >&2; }

# die MESSAGE [LOG...]: fail with the end of the logs that explain why.
die() {
	warn "$1"
	shift
	for f in "$@"; do
		[ -s "$f" ] || continue
		printf -- '--- last lines of %s:\n' "$f" >&2
		tail -n 20 "$f" >&2
	done
	exit 1
}

case "${MAKE_RUN_ONESHOT:-}" in
1|yes|true)	oneshot=1 ;;
0|no|false)	oneshot=0 ;;
"")		if [ -t 0 ]; then oneshot=0; else oneshot=1; fi ;;
*)		die "MAKE_RUN_ONESHOT must be 1 or 0" ;;
esac

# --- what must be there ---------------------------------------------------

for b in "$SHIM" "$ALERTER"; do
	[ -x "$b" ] || die "$b is missing: run \`make\` first (or \`make run\`)"
done
[ -f "$SINK" ] || die "$SINK is missing: the local SMTP sink is needed"
command -v redis-server >/dev/null ||
    die "redis-server is missing: apt-get install redis-server"
command -v redis-cli >/dev/null ||
    die "redis-cli is missing: apt-get install redis-tools"
"$PY" -c 'import aiosmtpd' 2>/dev/null ||
    die "$PY cannot import aiosmtpd: apt-get install python3-aiosmtpd"

# --- the run directory ----------------------------------------------------

RUN=${SW_RUN_DIR:-$ROOT/run}
mkdir -p "$RUN"
RUN=$(cd "$RUN" && pwd -P)
chmod 755 "$RUN"
MAIL=$RUN/mail

# As root the daemons switch to nobody after opening their sockets, and
# must then still reach Redis's socket.  A checkout under /root or a 0700
# home is out of nobody's reach, and a Unix socket path may not exceed 107
# bytes: in either case the sockets go to a directory of their own.
SOCKDIR=$RUN
if [ "$(id -u)" -eq 0 ]; then
	RUN_USER=nobody
	if command -v runuser >/dev/null &&
	    ! runuser -u nobody -- test -x "$RUN" 2>/dev/null; then
		SOCKDIR=/run/senderwatch-local
	fi
else
	RUN_USER=
fi
if [ ${#SOCKDIR} -gt 96 ]; then
	[ -n "$RUN_USER" ] ||
	    die "$SOCKDIR is too long for a Unix socket path: set SW_RUN_DIR to a shorter directory"
	SOCKDIR=/run/senderwatch-local
fi
if [ "$SOCKDIR" != "$RUN" ]; then
	mkdir -p "$SOCKDIR"
	chmod 755 "$SOCKDIR"
fi
REDIS_SOCK=$SOCKDIR/redis.sock
SHIM_SOCK=$SOCKDIR/shim.sock
CONF=$RUN/config.yaml

# Paths as the user types them: relative when under the repo.
show() {
	case "$1" in
	"$ROOT"/*)	printf '%s' "${1#"$ROOT"/}" ;;
	*)		printf '%s' "$1" ;;
	esac
}

# Is pid a process of an earlier run here?  Its command line must still
# name this run directory (or the socket directory), which a recycled pid
# would not.
ours() {
	[ -r "/proc/$1/cmdline" ] || return 1
	tr '\0' ' ' < "/proc/$1/cmdline" | grep -qF -e "$RUN/" -e "$SOCKDIR/"
}

alive() {
	[ -r "/proc/$1/stat" ] || return 1
	st=$(sed -e 's/.*) //' -e 's/ .*//' "/proc/$1/stat" 2>/dev/null) ||
	    return 1
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# stop_pid PID: TERM, then KILL if it is still there after 5 s.
stop_pid() {
	alive "$1" || return 0
	kill -TERM "$1" 2>/dev/null || return 0
	n=50
	while alive "$1" && [ "$n" -gt 0 ]; do
		sleep 0.1
		n=$((n - 1))
	done
	if alive "$1"; then
		warn "pid $1 ignored SIGTERM for 5 s: killing it"
		kill -KILL "$1" 2>/dev/null || true
	fi
}

readpid() {
	[ -r "$1" ] || return 1
	p=$(head -n 1 "$1" 2>/dev/null) || return 1
	case "$p" in
	''|*[!0-9]*)	return 1 ;;
	esac
	printf '%s' "$p"
}

# An earlier run-local.sh still in the foreground stops its own children.
if old=$(readpid "$RUN/run-local.pid") && [ "$old" != $$ ] &&
    [ -r "/proc/$old/cmdline" ] &&
    tr '\0' ' ' < "/proc/$old/cmdline" | grep -qF run-local.sh; then
	say "stopping the earlier run-local.sh (pid $old)"
	stop_pid "$old"
fi
# Orphans of an earlier run that could not clean up (kill -9, a crash).
for name in alerter shim smtp-sink redis; do
	if old=$(readpid "$RUN/$name.pid") && ours "$old"; then
		say "stopping $name left from an earlier run (pid $old)"
		stop_pid "$old"
	fi
	rm -f "$RUN/$name.pid"
done
# Stale socket files need nothing: redis-server replaces its own, and the
# shim replaces its own unless another process still answers on it.
# A fresh mailbox, so the demo's alert is this run's.
rm -rf "$MAIL"
mkdir -p "$MAIL"
echo $$ > "$RUN/run-local.pid"

# --- stop everything on the way out --------------------------------------

PIDS=""
OWNED_SOCKS=""	# sockets this run's processes served, removed at exit
cleanup() {
	trap - EXIT INT TERM HUP
	# The daemons first, so nothing talks to a Redis or sink already gone.
	for p in $PIDS; do
		stop_pid "$p"
		wait "$p" 2>/dev/null || true
	done
	# The shim, as nobody, cannot unlink in a directory of root's.
	for s in $OWNED_SOCKS; do
		rm -f "$s"
	done
	rm -f "$RUN/alerter.pid" "$RUN/shim.pid" "$RUN/smtp-sink.pid" \
	    "$RUN/redis.pid"
	if [ "$(readpid "$RUN/run-local.pid" || true)" = $$ ]; then
		rm -f "$RUN/run-local.pid"
	fi
	[ "$SOCKDIR" = "$RUN" ] || rmdir "$SOCKDIR" 2>/dev/null || true
}
on_exit() {
	rc=$?
	cleanup
	exit "$rc"
}
trap on_exit EXIT
trap 'say ""; say "stopping"; exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# wait_until WHAT SECONDS PID LOG CMD...: poll CMD until it succeeds, and
# give up early when PID, the process that should make it true, is gone.
wait_until() {
	what=$1 secs=$2 wpid=$3 wlog=$4
	shift 4
	end=$(($(date +%s) + secs))
	until "$@" >/dev/null 2>&1; do
		alive "$wpid" || die "$what: the process exited" "$wlog"
		[ "$(date +%s)" -lt "$end" ] ||
		    die "gave up after ${secs}s waiting for $what" "$wlog"
		sleep 0.1
	done
}

# --- Redis ------------------------------------------------------------------

# No persistence: every run starts from empty counters, so the demo crosses.
redis-server --port 0 --unixsocket "$REDIS_SOCK" --unixsocketperm 777 \
    --save '' --appendonly no --daemonize no --dir "$RUN" \
    --logfile "$RUN/redis.log" </dev/null &
REDIS_PID=$!
PIDS="$REDIS_PID"
echo "$REDIS_PID" > "$RUN/redis.pid"
redis_up() {
	[ "$(redis-cli -s "$REDIS_SOCK" PING 2>/dev/null)" = PONG ]
}
wait_until "redis-server to answer on $(show "$REDIS_SOCK")" 10 \
    "$REDIS_PID" "$RUN/redis.log" redis_up
OWNED_SOCKS="$REDIS_SOCK"

# --- the SMTP sink ------------------------------------------------------------

# Port 0: the sink binds a free port and says which once it listens, in a
# line "listening 127.0.0.1 PORT".  Each mail becomes NNNNNN.eml (with an
# NNNNNN.json of envelope data), renamed into place when complete.
"$PY" "$SINK" --host 127.0.0.1 --port 0 --dir "$MAIL" \
    >"$RUN/smtp-sink.log" 2>&1 </dev/null &
SINK_PID=$!
PIDS="$SINK_PID $PIDS"
echo "$SINK_PID" > "$RUN/smtp-sink.pid"
sink_port() {
	sed -n 's/^listening 127\.0\.0\.1 \([0-9][0-9]*\)$/\1/p' \
	    "$RUN/smtp-sink.log" | head -n 1 | grep .
}
wait_until "the SMTP sink to listen" 10 "$SINK_PID" "$RUN/smtp-sink.log" \
    sink_port
SMTP_PORT=$(sink_port)

# --- the config ---------------------------------------------------------------

# A YAML double-quoted string, whatever the path holds.
yq() {
	printf '"%s"' "$(printf '%s' "$1" | sed 's/[\\"]/\\&/g')"
}
user_line=""
[ -z "$RUN_USER" ] || user_line="  user: $RUN_USER                              # root drops to this user"
cat > "$CONF" <<EOF
# run/config.yaml: written by deploy/run-local.sh on every run (edits are
# lost); config.yaml in the repo is the documented reference.

shim:
  listen: [ $(yq "$SHIM_SOCK") ]
  socket_mode: "0666"                        # any local user may ask
$user_line
  client_timeout: 2s

redis:
  address: $(yq "unix:$REDIS_SOCK")
  timeout: 100ms
  on_error: "no"
  prefix: senderwatch

events:
  channel: senderwatch:events
  stream: senderwatch:stream
  group: senderwatch-alerters

control:                                      # senderwatch-ctl -c this file stats|status
  shim: $(yq "$RUN/shim.ctl")
  alerter: $(yq "$RUN/alerter.ctl")

rules:
  default: { limit: $LIMIT, window: $WINDOW }        # the 6th hit in a minute is one too many

alerts:
  from: senderwatch@example.com
  to: [ postmaster@example.com ]
  subject: Mail Abuse Alert
  smtp: 127.0.0.1:$SMTP_PORT                      # the local sink: mail lands in run/mail/
  smtp_starttls: "no"
  digest_wait: 200ms
EOF
chmod 644 "$CONF"
for b in "$SHIM" "$ALERTER"; do
	"$b" -n -c "$CONF" >/dev/null || die "the generated $CONF is not valid"
done

# --- the daemons ----------------------------------------------------------------

"$SHIM" -f -v -c "$CONF" -p "$RUN/shim.pid" >"$RUN/shim.log" 2>&1 </dev/null &
SHIM_PID=$!
PIDS="$SHIM_PID $PIDS"
"$ALERTER" -f -v -c "$CONF" -p "$RUN/alerter.pid" \
    >"$RUN/alerter.log" 2>&1 </dev/null &
ALERTER_PID=$!
PIDS="$ALERTER_PID $PIDS"

# ONELINER is what the instructions show; the demo runs that very code.
ONELINER='import socket,sys;s=socket.socket(socket.AF_UNIX);s.settimeout(5);s.connect(sys.argv[1]);s.sendall(sys.argv[2].encode()+b"\n");s.shutdown(socket.SHUT_WR);print(s.makefile().read())'
ask() {
	"$PY" -c "$ONELINER" "$SHIM_SOCK" "$1"
}
# An empty request (connect, shut, read) is the shim's health check: it
# answers no and counts nothing.  Answering is not enough, though: until
# its script is loaded into Redis the shim answers on_error without
# counting, and the demo would not cross; -v logs the moment it is loaded.
shim_ready() {
	[ "$("$PY" -c 'import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(2)
s.connect(sys.argv[1])
s.shutdown(socket.SHUT_WR)
print(s.makefile().read())' "$SHIM_SOCK" 2>/dev/null)" = no ] &&
	    grep -q 'event=script_loaded' "$RUN/shim.log"
}
wait_until "the shim to answer on $(show "$SHIM_SOCK")" 10 "$SHIM_PID" \
    "$RUN/shim.log" shim_ready
OWNED_SOCKS="$SHIM_SOCK $RUN/shim.ctl $RUN/alerter.ctl $OWNED_SOCKS"
alive "$ALERTER_PID" || die "senderwatch-alerter exited" "$RUN/alerter.log"

# run/ask KEY [SUBJECT]: the same question as a command, with a subject if
# given (then as an attribute block: key=, subject=).
sq() {
	printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}
cat > "$RUN/ask" <<EOF
#!/bin/sh
# ask KEY [SUBJECT]: ask senderwatch-shim like Exim's readsocket does:
# connect, write the request, shut the write side, read the answer to EOF.
# Written by deploy/run-local.sh.
exec $(sq "$PY") -c '
import socket, sys
sock, args = sys.argv[1], sys.argv[2:]
if not 1 <= len(args) <= 2 or any("\n" in a for a in args):
    sys.exit("usage: ask KEY [SUBJECT]   (one line each)")
if len(args) == 1:
    req = args[0] + "\n"
else:
    req = "key=%s\nsubject=%s\n" % (args[0], args[1])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
s.connect(sock)
s.sendall(req.encode())
s.shutdown(socket.SHUT_WR)
print(s.makefile().read())
' $(sq "$SHIM_SOCK") "\$@"
EOF
chmod 755 "$RUN/ask"

# --- how to play ----------------------------------------------------------------

R=$(show "$RUN")
RS=$(show "$REDIS_SOCK")
SS=$(show "$SHIM_SOCK")
M=$(show "$MAIL")
cat <<EOF

senderwatch is running; logs in $R/*.log
  redis-server   $RS
  shim           $SS
  SMTP sink      127.0.0.1:$SMTP_PORT, one file per mail in $M/*.eml
  alerter        mails postmaster@example.com through the sink
  config         $R/config.yaml (rule default: yes past $LIMIT hits in $WINDOW)

Ask like Exim's \${readsocket}: connect, send the key and a newline, shut
the write side, read the answer (no = under the limit, yes = over it):
  $R/ask alice@example.org
  $R/ask alice@example.org 'Cheap pills'      # with a subject for the alert
  python3 -c '$ONELINER' $SS alice@example.org
  printf 'alice@example.org\n' | socat -t5 - UNIX-CONNECT:$SS   # apt-get install socat

Cross the limit: the 6th hit within $WINDOW answers yes and mails one alert:
  for i in 1 2 3 4 5 6; do $R/ask alice@example.org; done
  ls $M/*.eml

Look with the admin CLI (same config; man -l deploy/man/senderwatch-ctl.8):
  $(show "$CTL") -c $R/config.yaml show alice@example.org
  $(show "$CTL") -c $R/config.yaml allow alice@example.org -d 1h -m "it's fine"
  $(show "$CTL") -c $R/config.yaml crossings
  $(show "$CTL") -c $R/config.yaml status

Look into Redis:
  redis-cli -s $RS --scan --pattern 'senderwatch:*'
  redis-cli -s $RS GET senderwatch:default:alice@example.org
  redis-cli -s $RS PTTL senderwatch:default:alice@example.org
  redis-cli -s $RS XRANGE senderwatch:stream - +
  redis-cli -s $RS SUBSCRIBE senderwatch:events      # live events; Ctrl-C leaves
EOF

# --- the demo -------------------------------------------------------------------

say ""
say "demo: $((LIMIT + 1)) hits for $DEMO_KEY (limit $LIMIT)"
answers=""
i=0
while [ "$i" -le "$LIMIT" ]; do
	# With subjects, as Exim's DATA-time request sends them, so the alert
	# shows the sender's top subjects.
	case $i in
	0|1|2) subj="Quarterly report" ;;
	*) subj="Invoice overdue" ;;
	esac
	a=$("$RUN/ask" "$DEMO_KEY" "$subj") ||
	    die "the shim did not answer" "$RUN/shim.log"
	answers="$answers $a"
	i=$((i + 1))
done
say "answers:$answers"
expect=""
i=0
while [ "$i" -lt "$LIMIT" ]; do
	expect="$expect no"
	i=$((i + 1))
done
[ "$answers" = "$expect yes" ] ||
    die "expected answers:$expect yes" "$RUN/shim.log" "$RUN/redis.log"

# The mailbox was emptied at the start, so the first mail is the demo's.
# (Not grep for the key: the body may well be encoded.)
demo_mail() {
	for f in "$MAIL"/*.eml; do
		[ -f "$f" ] && printf '%s' "$f" && return 0
	done
	return 1
}
say "waiting for the alert mail in $M/ ..."
wait_until "the alert mail for $DEMO_KEY" 20 "$ALERTER_PID" \
    "$RUN/alerter.log" demo_mail
f=$(demo_mail)
say "the alert arrived: $(show "$f")"
say "-------------------------------------------------------------------------"
cat "$f"
say "-------------------------------------------------------------------------"
say "why $DEMO_KEY is deferred: senderwatch-ctl show $DEMO_KEY"
"$CTL" -c "$CONF" show "$DEMO_KEY" || die "senderwatch-ctl show failed"

if [ "$oneshot" = 1 ]; then
	say "demo done (MAKE_RUN_ONESHOT or no terminal): stopping"
	exit 0
fi

say ""
say "Ctrl-C stops redis-server, the SMTP sink and both daemons."
while :; do
	for p in $PIDS; do
		alive "$p" ||
		    die "process $p exited; see the logs in $R/" \
		        "$RUN/shim.log" "$RUN/alerter.log"
	done
	# wait, unlike a plain sleep, returns at once when Ctrl-C comes.
	sleep 1 &
	wait $! || true
done
