"""deploy/redis/users.acl, the Redis ACL users of least privilege, against
real processes: redis-server loads a copy of the shipped file as its
aclfile (only the password placeholders replaced by the hashes of test
passwords; two test users added: an admin for the test's own look-ups and
the README's replication user for a replica), the shim and the alerter
log in as their users (redis.username and redis.password_file), and:

  - everything the daemons do works: every answer is a decision, never the
    fail policy (the shim's stats), for every algorithm, subjects (and
    their trimming), peek, a corrupt counter mended (count.lua's DEL), a
    runtime override set through override.lua as the ctl user; every
    crossing is mailed once, claims, the backlog and WAIT ran;
  - Redis refused nothing to these users meanwhile (ACL LOG is empty);
  - every command each user is granted works for it (a probe per command,
    so a command added to the file without a probe fails here), every
    command of a script is granted to the user that runs it, and what
    lies outside a role is refused: FLUSHALL, CONFIG, KEYS, keys outside
    the prefix, ad-hoc scripts (EVAL, and SCRIPT LOAD + EVALSHA of a script
    that steps outside), SCRIPT FLUSH, another channel, the stream's group
    destroyed, counters written by the alerter...;
  - senderwatch-ctl (when built) does its work as its user;
  - the same on a Redis Cluster of three masters, the users made on every
    node with ACL SETUSER from the file's own lines (cluster.py starts its
    nodes without an aclfile, and its helpers log in as the default user).
"""
import hashlib
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import (log_lines, ALERTER, BUILD, ROOT, RUN_USER, SHIM, VALGRIND, Daemon,
                      Redis, RespError, Resp, ask, command_calls, free_port,
                      shim_answers, stats, wait_for, write_config)
from cluster import Cluster, cli
from test_alerter import Sink, keys_mailed
from test_ctl import Lines

ACL_FILE = os.path.join(ROOT, "deploy", "redis", "users.acl")
SCRIPTS = os.path.join(ROOT, "scripts")
SHIM_USER = "senderwatch-shim"
ALERTER_USER = "senderwatch-alerter"
CTL_USER = "senderwatch-ctl"
USERS = (SHIM_USER, ALERTER_USER, CTL_USER)
PASSWORDS = {SHIM_USER: "shim test pass", ALERTER_USER: "alerter-test-pass",
             CTL_USER: "ctl-test-pass"}
PLACEHOLDER = re.compile(r"#<sha256-of-the-(shim|alerter|ctl)-password>")
# Test-only: the shipped file disables the default user and has no admin;
# the replication user is the README's.
ADMIN = ("sw-test-admin", "admin-test-pass")
REPLICA = ("sw-test-replica", "replica-test-pass")
STREAM = "senderwatch:stream"
GROUP = "senderwatch-alerters"
CHANNEL = "senderwatch:events"
# Under valgrind (SW_VALGRIND=1) the daemons are slower: waits and the
# decision timeout grow (a decision past it would be the fail policy).
SLOW = 10 if VALGRIND else 1


def sha256(s):
    return hashlib.sha256(s.encode()).hexdigest()


def acl_text():
    """The shipped file with the test passwords' hashes in place of the
    placeholders; nothing else changed."""
    with open(ACL_FILE) as f:
        text = f.read()
    assert sorted(PLACEHOLDER.findall(text)) == ["alerter", "ctl", "shim"]
    return PLACEHOLDER.sub(
        lambda m: "#" + sha256(PASSWORDS["senderwatch-" + m.group(1)]), text)


def acl_users(text):
    """{user: [rule, ...]} from an ACL file, a selector "(...)" one rule,
    as ACL SETUSER takes them."""
    users = {}
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        assert words[0] == "user", line
        rules, sel = [], None
        for w in words[2:]:
            if sel is not None:
                sel.append(w)
                if w.endswith(")"):
                    rules.append(" ".join(sel))
                    sel = None
            elif w.startswith("(") and not w.endswith(")"):
                sel = [w]
            else:
                rules.append(w)
        assert sel is None, line
        users[words[1]] = rules
    return users


def granted(rules):
    """The commands (and subcommands) a user's rules allow, selectors'
    included."""
    out = set()
    for r in rules:
        for w in r.strip("()").split():
            if w.startswith("+"):
                assert not w.startswith("+@"), "a category: %s" % w
                out.add(w[1:].lower())
    return out


def denied(msg):
    """An ACL refusal: NOPERM at the top level; inside a script Redis 7.0
    says it in an ERR."""
    return msg.startswith("NOPERM") or \
        "The user executing the script can't" in msg


class TcpResp(Resp):
    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port),
                                             timeout=timeout)
        self.buf = b""


def login(conn, user):
    assert conn.cmd("AUTH", user, PASSWORDS[user]) == "OK"
    return conn


def refused(conn, *cmd):
    try:
        r = conn.cmd(*cmd)
    except RespError as e:
        assert denied(str(e)), (cmd, str(e))
        return str(e)
    raise AssertionError("not refused: %r -> %r" % (cmd, r))


def allowed(conn, *cmd):
    """Not refused by the ACL (it may fail otherwise: CLUSTER SLOTS on a
    single Redis, NOSCRIPT...)."""
    try:
        return conn.cmd(*cmd)
    except RespError as e:
        assert not denied(str(e)), (cmd, str(e))
        return e


def acl_log(cli_fn):
    """ACL LOG as [{field: value}], from redis-cli's one-per-line output."""
    out = cli_fn("ACL", "LOG", "128").splitlines()
    entries, cur = [], None
    for i in range(0, len(out) - 1, 2):
        k, v = out[i], out[i + 1]
        if k == "count":
            cur = {}
            entries.append(cur)
        if cur is not None:
            cur[k] = v
    return entries


def script_body(name):
    with open(os.path.join(SCRIPTS, name)) as f:
        return f.read()


# --- a redis-server with the aclfile ------------------------------------------

class AclRedis(Redis):
    def __init__(self, d):
        super().__init__(d, "acl-redis")
        self.aclfile = os.path.join(d, "users.acl")
        with open(self.aclfile, "w") as f:
            f.write(acl_text())
            f.write("user %s on #%s ~* &* +@all\n" % (ADMIN[0],
                                                     sha256(ADMIN[1])))
            f.write("user %s on #%s +psync +replconf +ping\n" % (
                REPLICA[0], sha256(REPLICA[1])))
        self.port = free_port()
        os.chmod(self.aclfile, 0o600)

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--unixsocket", self.sock,
             "--unixsocketperm", "777", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--logfile", self.log,
             "--repl-diskless-sync-delay", "0",
             "--aclfile", self.aclfile])
        wait_for(self.ping, what="redis-server with the aclfile")
        return self

    def cli(self, *args):
        r = subprocess.run(["redis-cli", "-s", self.sock, "--no-auth-warning",
                            "--user", ADMIN[0], "--pass", ADMIN[1]] +
                           [str(a) for a in args],
                           capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            raise RuntimeError(r.stderr)
        return r.stdout.strip()

    def conn(self, user=None):
        c = Resp(self.sock)
        return login(c, user) if user else c


@pytest.fixture
def aredis(tmp):
    r = AclRedis(tmp).start()
    yield r
    r.stop()


@pytest.fixture
def replica(tmp, aredis):
    """A replica of aredis, logged in as the replication user: the
    alerter's ROLE sees it, so its WAITs are sent."""
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", tmp,
         "--logfile", os.path.join(tmp, "replica.log"),
         "--replicaof", "127.0.0.1", str(aredis.port),
         "--masteruser", REPLICA[0], "--masterauth", REPLICA[1]])
    try:
        wait_for(lambda: "state=online" in aredis.cli("INFO", "replication"),
                 what="the replica to sync")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- the daemons' configuration -----------------------------------------------

RULES = """\
rules:
  default: { limit: 3, window: 60s }
  slide: { limit: 2, window: 60s, algorithm: sliding }
  bucket: { limit: 2, window: 60s, algorithm: gcra }
  multi:
    limits: [ { limit: 2, window: 60s }, { limit: 5, window: 1h } ]
"""

CONF = """\
shim:
  listen: [ {sock} ]
  socket_mode: "0666"
  near_cache: 0   # counts read at once; the cache: test_near_cache.py
{user}redis:
{where}
  username: {username}
  password_file: {pwfile}
  timeout: {timeout}
  on_error: "yes"
events:
  channel: senderwatch:events
  stream: senderwatch:stream
{rules}alerts:
  from: senderwatch@example.com
  to: [ director@example.com ]
  smtp: 127.0.0.1:{port}
  smtp_starttls: "no"
  digest_wait: 50ms
  consumer: acl
  claim_idle: 1s
  retry_max: 300ms
"""


def daemon_conf(tmp, name, user, where, port):
    pwfile = os.path.join(tmp, name + ".pass")
    with open(pwfile, "w") as f:
        f.write(PASSWORDS[user] + "\n")
    os.chmod(pwfile, 0o600)          # read as root, before the drop
    sock = os.path.join(tmp, name + ".sock")
    conf = write_config(os.path.join(tmp, name + ".yaml"), CONF.format(
        sock=sock, where=where, username=user, pwfile=pwfile, port=port,
        timeout="2s" if VALGRIND else "200ms",
        rules=RULES, user=("  user: %s\n" % RUN_USER) if RUN_USER else ""))
    return conf, sock


def start_daemons(tmp, aredis, sink):
    """The alerter and the shim, each logged in as its own user."""
    where = "  address: unix:%s" % aredis.sock
    aconf, _ = daemon_conf(tmp, "alerter", ALERTER_USER, where, sink.port)
    sconf, sock = daemon_conf(tmp, "shim", SHIM_USER, where, sink.port)
    alerter = Daemon(ALERTER, aconf, tmp, "alerter")
    shim = Daemon(SHIM, sconf, tmp, "shim")
    try:
        alerter.start(wait=lambda: "event=redis_up conn=alerter " in
                      alerter.log() and aredis.cli("PUBSUB", "NUMSUB",
                                                   CHANNEL).split()[-1] == "1")
        shim.start(wait=lambda: shim_answers(sock) and
                   "script_loaded" in shim.log())
    except BaseException:
        shim.stop()
        alerter.stop()
        sink.stop()
        raise
    return alerter, shim, sock


def block(rule, key, subject=None, mode=None):
    b = "rule=%s\nkey=%s\n" % (rule, key)
    if subject is not None:
        b += "subject=%s\n" % subject
    if mode is not None:
        b += "mode=%s\n" % mode
    return (b + "\n").encode()


def no_trouble(d, also=(), since=0):
    """Nothing in a daemon's log (from offset since) that an ACL refusal
    would cause."""
    lines = d.log()[since:].splitlines()
    for what in ("NOPERM", "no permissions", "can't run", "can't access",
                 "script_load_failed", "lease_failed", "event=fail_policy",
                 "subscribe_failed", "refused") + tuple(also):
        bad = [l for l in lines if what in l]
        assert not bad, (d.name, bad[:3])


# --- the probes: each granted command, as its user would send it --------------

def probes():
    k = "senderwatch:default:probe@example.org"
    return {
        "ping": [("PING",)],
        "role": [("ROLE",)],
        "info|memory": [("INFO", "memory")],
        "client|setname": [("CLIENT", "SETNAME", "acl-probe")],
        "cluster|slots": [("CLUSTER", "SLOTS")],
        "asking": [("ASKING",)],
        # EVALSHA needs read and write on the keys it names.
        "evalsha": [("EVALSHA", "0" * 40, "1", STREAM)],
        "script|load": [("SCRIPT", "LOAD", "return 1")],
        "get": [("GET", k)],
        "hmget": [("HMGET", "senderwatch:slide:probe", "i", "c", "p")],
        "pttl": [("PTTL", k)],
        "time": [("TIME",)],
        "set": [("SET", "senderwatch:crossed:default:probe", "1", "NX",
                 "PX", "1000")],
        "incrby": [("INCRBY", k, "1")],
        "pexpire": [("PEXPIRE", k, "60000", "NX")],
        "hset": [("HSET", "senderwatch:slide:probe", "i", "1")],
        "del": [("DEL", "senderwatch:slide:probe")],
        "zincrby": [("ZINCRBY", "senderwatch:subjects:default:probe", "1",
                     "s")],
        "zcard": [("ZCARD", "senderwatch:subjects:default:probe")],
        "zremrangebyrank": [("ZREMRANGEBYRANK",
                             "senderwatch:subjects:default:probe", "0",
                             "-101")],
        "zrevrange": [("ZREVRANGE", "senderwatch:subjects:default:probe", "0",
                       "9", "WITHSCORES")],
        "xadd": [("XADD", STREAM, "MAXLEN", "~", "10000", "*", "rule",
                  "probe")],
        "xgroup|create": [("XGROUP", "CREATE", STREAM, GROUP, "$",
                           "MKSTREAM")],
        "publish": [("PUBLISH", CHANNEL, "{}")],
        "xreadgroup": [("XREADGROUP", "GROUP", GROUP, "probe", "COUNT", "1",
                        "STREAMS", STREAM, "0")],
        "xautoclaim": [("XAUTOCLAIM", STREAM, GROUP, "probe", "60000", "0-0",
                        "COUNT", "1")],
        "xclaim": [("XCLAIM", STREAM, GROUP, "probe", "0", "0-1", "JUSTID")],
        "xack": [("XACK", STREAM, GROUP, "0-1")],
        "xpending": [("XPENDING", STREAM, GROUP),
                     ("XPENDING", STREAM, GROUP, "-", "+", "10")],
        "xrange": [("XRANGE", STREAM, "-", "+", "COUNT", "1")],
        "xrevrange": [("XREVRANGE", STREAM, "+", "-", "COUNT", "1")],
        "xlen": [("XLEN", STREAM)],
        "xinfo|groups": [("XINFO", "GROUPS", STREAM)],
        "xinfo|stream": [("XINFO", "STREAM", STREAM)],
        "wait": [("WAIT", "0", "0")],
        "scan": [("SCAN", "0", "MATCH", "senderwatch:*", "COUNT", "100")],
        "type": [("TYPE", k)],
        "exists": [("EXISTS", k)],
        # subscribe: probed on a connection of its own (it stays subscribed)
    }


PROBE_ONLY_FOR = {
    # The alerter may SET only its lease, ctl only overrides (selectors).
    ALERTER_USER: {"set": [("SET", "senderwatch:alerter:probe", "x", "PX",
                            "3000")]},
    CTL_USER: {"set": [("SET", "senderwatch:override:default:probe",
                        "allow", "EX", "10")]},
}


def probe_granted(conn_fn, user, rules):
    """Every command the file grants user works for it."""
    table = probes()
    table.update(PROBE_ONLY_FOR.get(user, {}))
    cmds = granted(rules)
    conn = conn_fn(user)
    try:
        for c in sorted(cmds - {"subscribe"}):
            assert c in table, "no probe for %s's %s" % (user, c)
            for cmd in table[c]:
                allowed(conn, *cmd)
    finally:
        conn.close()
    if "subscribe" in cmds:
        sub = conn_fn(user)
        try:
            assert sub.cmd("SUBSCRIBE", CHANNEL) == [b"subscribe",
                                                     CHANNEL.encode(), 1]
        finally:
            sub.close()
    return cmds


# --- the refusals -------------------------------------------------------------

def refused_to_all(conn):
    """What none of the three may do."""
    other = "other:key"
    for cmd in [("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "SET", "maxmemory",
                                              "1"),
                ("CONFIG", "GET", "*"), ("KEYS", "*"), ("DBSIZE",),
                ("INFO",), ("INFO", "keyspace"), ("GET", other),
                ("SET", other, "1"), ("DEL", other),
                ("EVAL", "return 1", "0"), ("EVAL_RO", "return 1", "0"),
                ("SCRIPT", "FLUSH"), ("SCRIPT", "KILL"), ("FUNCTION", "LIST"),
                ("FCALL", "f", "0"), ("ACL", "LIST"),
                ("ACL", "SETUSER", "evil", "on", ">x", "+@all"),
                ("CLIENT", "LIST"), ("CLIENT", "KILL", "TYPE", "normal"),
                ("MONITOR",), ("SHUTDOWN", "NOSAVE"),
                ("REPLICAOF", "NO", "ONE"),
                ("BGSAVE",), ("SLOWLOG", "GET"), ("LATENCY", "RESET"),
                ("SELECT", "1"), ("SWAPDB", "0", "1"), ("MULTI",),
                ("RENAME", "senderwatch:a", "senderwatch:b"),
                ("DUMP", "senderwatch:default:x"),
                ("XGROUP", "DESTROY", STREAM, GROUP),
                ("XGROUP", "SETID", STREAM, GROUP, "$"),
                ("XTRIM", STREAM, "MAXLEN", "0"), ("XDEL", STREAM, "0-1"),
                ("UNLINK", "senderwatch:default:x"),
                ("EXPIRE", "senderwatch:default:x", "1"),
                ("PUBLISH", "other", "x"), ("PSUBSCRIBE", "*"),
                ("SUBSCRIBE", "other"), ("CLUSTER", "RESET"),
                ("CLUSTER", "FAILOVER"), ("CLUSTER", "SETSLOT", "0", "STABLE"),
                ("READONLY",)]:
        refused(conn, *cmd)


def refused_by_role(conn, user):
    counter = "senderwatch:default:x@example.org"
    if user == SHIM_USER:
        for cmd in [("XREADGROUP", "GROUP", GROUP, "c", "STREAMS", STREAM,
                     ">"), ("XACK", STREAM, GROUP, "0-1"),
                    ("XAUTOCLAIM", STREAM, GROUP, "c", "0", "0-0"),
                    ("XRANGE", STREAM, "-", "+"), ("SCAN", "0"),
                    ("ZREVRANGE", counter, "0", "1"), ("WAIT", "0", "0")]:
            refused(conn, *cmd)
    if user == ALERTER_USER:
        # Counters are read-only to it; the stream is not its to write.
        for cmd in [("SET", counter, "1"), ("DEL", counter),
                    ("INCRBY", counter, "1"), ("SET", STREAM, "x"),
                    ("SET", "senderwatch:override:default:x", "allow"),
                    ("DEL", STREAM), ("XADD", STREAM, "*", "a", "b"),
                    ("PUBLISH", CHANNEL, "x"), ("SCAN", "0"),
                    ("HMGET", counter, "i"),
                    ("EVALSHA", "0" * 40, "1", counter)]:
            refused(conn, *cmd)
    if user == CTL_USER:
        for cmd in [("XADD", STREAM, "*", "a", "b"),
                    ("XACK", STREAM, GROUP, "0-1"),
                    ("XREADGROUP", "GROUP", GROUP, "c", "STREAMS", STREAM,
                     ">"), ("XGROUP", "CREATE", STREAM, "g", "$"),
                    ("INCRBY", counter, "1"), ("SET", counter, "1"),
                    ("SET", "senderwatch:alerter:acl", "x"),
                    ("SUBSCRIBE", CHANNEL), ("WAIT", "0", "0")]:
            refused(conn, *cmd)
    # An ad-hoc script, loaded where SCRIPT LOAD is allowed, is held to the
    # user's rules command by command, key by key, channel by channel.
    sha = conn.cmd("SCRIPT", "LOAD", "return redis.call(ARGV[1], "
                   "unpack(KEYS))")
    refused(conn, "EVALSHA", sha, "0", "FLUSHALL")
    refused(conn, "EVALSHA", sha, "1", "other:key", "GET")
    sha = conn.cmd("SCRIPT", "LOAD", "return redis.call('GET', 'other:key')")
    refused(conn, "EVALSHA", sha, "0")
    if user != ALERTER_USER:
        sha = conn.cmd("SCRIPT", "LOAD",
                       "return redis.call('PUBLISH', 'other', 'x')")
        refused(conn, "EVALSHA", sha, "0")


# --- the tests ----------------------------------------------------------------

def test_the_file_loads_and_refuses_to_load_unedited(tmp):
    """As shipped, with its placeholders, redis-server refuses the file
    (a hash must be 64 hex digits): it cannot run with a guessable
    password.  Every rule lists commands, never a category."""
    raw = os.path.join(tmp, "raw.acl")
    with open(ACL_FILE) as f, open(raw, "w") as out:
        out.write(f.read())
    r = subprocess.run(["redis-server", "--port", "0", "--unixsocket",
                        os.path.join(tmp, "raw.sock"), "--save", "",
                        "--dir", tmp, "--aclfile", raw],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode != 0
    assert "password hash must be exactly 64" in r.stdout + r.stderr
    users = acl_users(acl_text())
    assert set(users) == {"default"} | set(USERS)
    assert "off" in users["default"] and "on" not in users["default"]
    for u in USERS:
        granted(users[u])           # asserts no +@category
        assert "resetchannels" in users[u] and "&*" not in users[u]
        assert "allkeys" not in users[u] and "~*" not in users[u]


SCRIPT_USERS = {"count.lua": SHIM_USER, "read.lua": ALERTER_USER,
                "own.lua": ALERTER_USER, "lease.lua": ALERTER_USER,
                "override.lua": CTL_USER}
SUBCOMMANDS = ("xgroup", "xinfo", "script", "client", "cluster")


def script_commands(name):
    """The commands a script's redis.call()s and redis.pcall()s name."""
    out = set()
    for cmd, sub in re.findall(r"redis\.p?call\(\s*'(\w+)'(?:\s*,\s*'(\w+)')?",
                               script_body(name)):
        cmd = cmd.lower()
        out.add(cmd + "|" + sub.lower() if cmd in SUBCOMMANDS else cmd)
    return out


def test_every_command_of_every_script_is_granted_to_its_user():
    """Redis 7 checks each redis.call() against the caller's ACL: a command
    added to a script must be added to its user (the daemon tests below
    cannot reach every branch of count.lua)."""
    assert sorted(SCRIPT_USERS) == sorted(n for n in os.listdir(SCRIPTS)
                                          if n.endswith(".lua"))
    users = acl_users(acl_text())
    for name, user in SCRIPT_USERS.items():
        cmds = script_commands(name)
        assert cmds, name
        missing = cmds - granted(users[user])
        assert not missing, "%s runs %s, not granted to %s" % (
            name, sorted(missing), user)
        assert {"evalsha", "script|load"} <= granted(users[user])


def test_daemons_run_as_their_users_and_nothing_else_is_allowed(
        tmp, aredis, replica):
    users = acl_users(acl_text())
    sink = Sink(tmp).start()
    assert aredis.cli("ACL", "LOG", "RESET") == "OK"
    alerter, shim, sock = start_daemons(tmp, aredis, sink)
    try:

        answers = []

        def go(req):
            a = ask(sock, req)
            answers.append(a)
            return a
        # Fixed (with subjects), sliding, gcra, two limits; peek.
        assert [go(block("default", "fixed@example.org", "s%d" % i))
                for i in range(4)] == [b"no"] * 3 + [b"yes"]
        assert [go(block("slide", "slide@example.org")) for _ in range(3)] \
            == [b"no", b"no", b"yes"]
        assert [go(block("bucket", "gcra@example.org")) for _ in range(3)] \
            == [b"no", b"no", b"yes"]
        assert [go(block("multi", "multi@example.org")) for _ in range(3)] \
            == [b"no", b"no", b"yes"]
        assert go(block("default", "fixed@example.org", mode="peek")) == b"yes"
        assert go(block("default", "fresh@example.org", mode="peek")) == b"no"
        # More than 100 subjects: count.lua trims them (ZREMRANGEBYRANK).
        for i in range(102):
            go(block("default", "many@example.org", "m%d" % i))
        assert aredis.cli("ZCARD",
                          "senderwatch:subjects:default:many@example.org") \
            == "100"
        # A corrupt counter: count.lua DELs and counts again.
        aredis.cli("HSET", "senderwatch:default:corrupt@example.org", "x", "1")
        assert go(b"corrupt@example.org\n") == b"no"
        assert aredis.cli("GET", "senderwatch:default:corrupt@example.org") \
            == "1"
        # A runtime override, set as the admin tool's user with override.lua
        # (EVALSHA: EVAL, which redis-cli --eval sends, is not the ctl's).
        ctl = aredis.conn(CTL_USER)
        sha = ctl.cmd("SCRIPT", "LOAD", script_body("override.lua"))
        assert ctl.cmd("EVALSHA", sha, "1",
                       "senderwatch:override:default:blocked@example.org",
                       "block", "0", CHANNEL, "default",
                       "blocked@example.org", "acl test") == "OK"
        assert go(b"blocked@example.org\n") == b"yes"
        # Its reset: DEL of a counter, found with SCAN.
        found = set()
        cursor = b"0"
        while True:
            cursor, batch = ctl.cmd("SCAN", cursor, "MATCH",
                                    "senderwatch:default:*", "COUNT", "100")
            found.update(batch)
            if cursor == b"0":
                break
        assert b"senderwatch:default:fixed@example.org" in found
        assert ctl.cmd("GET", "senderwatch:default:fixed@example.org") == b"4"
        assert ctl.cmd("DEL", "senderwatch:default:corrupt@example.org") == 1
        ctl.close()
        assert go(b"corrupt@example.org\n") == b"no"

        st = stats(shim)
        assert st["fail_policy"] == 0, st
        assert st["decisions"] == len(answers), (st, len(answers))
        assert st["crossings"] == 5, st
        crossed = ["fixed@example.org", "slide@example.org",
                   "gcra@example.org", "multi@example.org",
                   "many@example.org"]
        wait_for(lambda: all(keys_mailed(sink)[k] == 1 for k in crossed),
                 timeout=10 * SLOW, what="the five crossings mailed")
        wait_for(lambda: aredis.cli("XPENDING", STREAM, GROUP).split()[0]
                 == "0", timeout=5 * SLOW, what="every crossing acknowledged")
        # The alerter's other paths: claims, the backlog, and WAIT (a
        # replica is there), each run at least once.
        for c in ("xautoclaim", "wait", "xinfo|groups", "xpending"):
            wait_for(lambda: command_calls(aredis, c) > 0, timeout=5 * SLOW,
                     what=c)
        subjects = [m for m in sink.mails() if "fixed@example.org" in m.body]
        assert "s0" in subjects[0].body       # ZREVRANGE of the subjects
        ast = stats(alerter)
        assert ast.get("reading") == 1, ast
        assert all(n == 1 for n in keys_mailed(sink).values())

        # Redis refused these users nothing.
        assert acl_log(aredis.cli) == []
        no_trouble(shim)
        no_trouble(alerter, also=("not_reading",))
        assert shim.proc.poll() is None and alerter.proc.poll() is None
    finally:
        shim.stop()
        alerter.stop()
        sink.stop()

    # Every command granted works; what is outside a role is refused.
    for u in USERS:
        probe_granted(aredis.conn, u, users[u])
        conn = aredis.conn(u)
        try:
            refused_to_all(conn)
            refused_by_role(conn, u)
            assert conn.cmd("PING") == "PONG"    # still logged in and sane
        finally:
            conn.close()
    # The shim's DEL is count.lua's (corrupt counters, a failed crossing's
    # marker): it can DEL a counter directly too.  Nothing narrower in
    # Redis's ACL: a script's commands are checked as the caller's.
    c = aredis.conn(SHIM_USER)
    assert c.cmd("DEL", "senderwatch:default:fixed@example.org") == 1
    c.close()
    # The default user is off; a wrong password is no way in.
    c = aredis.conn()
    for u in ("default",) + USERS:
        with pytest.raises(RespError, match="WRONGPASS"):
            c.cmd("AUTH", u, "changeme")
    with pytest.raises(RespError, match="NOAUTH"):
        c.cmd("GET", "senderwatch:default:fixed@example.org")
    c.close()
    # A Cluster's names carry a hash tag: the same patterns hold for them.
    tag = "{s3.41}"
    for user, cmd, ok in [
            (SHIM_USER, ("INCRBY", "senderwatch:%s:default:x" % tag, "1"), 1),
            (SHIM_USER, ("XADD", "senderwatch:stream:%s" % tag, "*", "a",
                         "b"), 1),
            (ALERTER_USER, ("XACK", "senderwatch:stream:%s" % tag, GROUP,
                            "0-1"), 1),
            (ALERTER_USER, ("GET", "senderwatch:%s:default:x" % tag), 1),
            (ALERTER_USER, ("ZREVRANGE", "senderwatch:%s:subjects:default:x"
                            % tag, "0", "9"), 1),
            (ALERTER_USER, ("SET", "senderwatch:%s:default:x" % tag, "1"), 0),
            (ALERTER_USER, ("SET", "senderwatch:stream:%s" % tag, "1"), 0),
            (CTL_USER, ("SET", "senderwatch:%s:override:default:x" % tag,
                        "allow"), 1),
            (CTL_USER, ("SET", "senderwatch:%s:default:x" % tag, "1"), 0),
            (CTL_USER, ("SET", "senderwatch:%s:crossed:default:x" % tag,
                        "1"), 0),
            (CTL_USER, ("DEL", "senderwatch:%s:default:x" % tag), 1)]:
        out = aredis.cli("ACL", "DRYRUN", user, *cmd)
        assert (out == "OK") == bool(ok), (user, cmd, out)
    # ...and ACL LOG did see the refusals: its silence above meant something.
    seen = {e.get("username") for e in acl_log(aredis.cli)
            if e.get("reason") in ("command", "key", "channel")}
    assert set(USERS) <= seen, seen


CTL = os.path.join(BUILD, "senderwatch-ctl")


@pytest.mark.skipif(not os.path.exists(CTL), reason="no senderwatch-ctl built")
def test_senderwatch_ctl_runs_as_its_user(tmp, aredis):
    """The admin tool, logged in as senderwatch-ctl, does all its Redis
    work (show, top, keys, reset, the overrides through override.lua,
    crossings, following them, pending) with nothing refused."""
    where = "  address: unix:%s" % aredis.sock
    sconf, sock = daemon_conf(tmp, "shim", SHIM_USER, where, 25)
    cconf, _ = daemon_conf(tmp, "ctl", CTL_USER, where, 25)
    shim = Daemon(SHIM, sconf, tmp, "shim")
    try:
        shim.start(wait=lambda: shim_answers(sock) and
                   "script_loaded" in shim.log())
        for i in range(4):
            ask(sock, block("default", "ctl@example.org", "s%d" % i))
            ask(sock, block("slide", "ctl@example.org"))
        assert aredis.cli("ACL", "LOG", "RESET") == "OK"

        def ctl(*args):
            r = subprocess.run([CTL, "-c", cconf] + list(args),
                               capture_output=True, text=True, timeout=20)
            assert r.returncode == 0, (args, r.returncode, r.stderr)
            return r.stdout
        assert "ctl@example.org" in ctl("show", "ctl@example.org", "-a")
        assert "ctl@example.org" in ctl("top")
        ctl("top", "-r", "slide")
        assert "senderwatch:default:ctl@example.org" in ctl(
            "keys", "ctl@example.org")
        ctl("crossings", "-n", "5")
        ctl("pending")
        ctl("block", "blocked@example.org", "-m", "acl test")
        assert ask(sock, b"blocked@example.org\n") == b"yes"
        ctl("factor", "ctl@example.org", "2", "-d", "1h")
        ctl("allow", "ctl@example.org", "-r", "slide", "-d", "1h")
        ctl("clear", "blocked@example.org")
        assert ask(sock, b"blocked@example.org\n") == b"no"
        ctl("reset", "ctl@example.org", "-a")
        assert aredis.cli("EXISTS", "senderwatch:default:ctl@example.org") \
            == "0"
        follow = subprocess.Popen([CTL, "-c", cconf, "crossings", "-f"],
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        seen = []
        try:
            for _ in range(4):
                ask(sock, b"followed@example.org\n")
            # The crossing printed by the follower, as its user polls.
            lines = Lines(follow)
            wait_for(lambda: seen.append(lines.next(timeout=5 * SLOW)) or
                     b"followed@example.org" in seen[-1],
                     timeout=10 * SLOW, what="crossings -f to print it")
        finally:
            follow.send_signal(signal.SIGINT)
            o, e = follow.communicate(timeout=10)
        assert follow.returncode == 0, e
        assert acl_log(aredis.cli) == []
        assert stats(shim)["fail_policy"] == 0
    finally:
        shim.stop()


@pytest.mark.skipif(VALGRIND, reason="the Cluster variant, as test_cluster.py")
def test_on_a_cluster_with_the_same_users_on_every_node(tmp):
    users = acl_users(acl_text())
    cluster = Cluster(tmp, n=3, replicas=0).start()
    sink = Sink(tmp).start()
    shim = alerter = None
    try:
        for n in cluster.nodes:
            # The file's own lines; the default user stays on for
            # cluster.py's helpers.
            for u in USERS:
                assert cli(n.port, "ACL", "SETUSER", u, *users[u]) == "OK"
            assert cli(n.port, "ACL", "LOG", "RESET") == "OK"
        where = "  cluster: [ %s ]" % ", ".join(cluster.seeds())
        aconf, _ = daemon_conf(tmp, "calerter", ALERTER_USER, where,
                               sink.port)
        sconf, sock = daemon_conf(tmp, "cshim", SHIM_USER, where, sink.port)
        alerter = Daemon(ALERTER, aconf, tmp, "calerter")
        shim = Daemon(SHIM, sconf, tmp, "cshim")
        alerter.start(wait=lambda: "event=cluster_map" in alerter.log())
        shim.start(wait=lambda: shim_answers(sock) and
                   ask(sock, b"rule=default\nkey=probe\ncost=0\n\n") == b"no")
        # Probes before the slot map came are the fail policy: not ours.
        before = stats(shim)["fail_policy"]
        since = len(shim.log())
        keys = ["c%d@example.org" % i for i in range(30)]
        for k in keys:
            assert [ask(sock, block("default", k, "subj")) for _ in range(4)] \
                == [b"no"] * 3 + [b"yes"], k
        st = stats(shim)
        assert st["fail_policy"] == before, st
        wait_for(lambda: all(keys_mailed(sink)[k] == 1 for k in keys),
                 timeout=15, what="the crossings mailed")
        # The crossings went to shards on every master: each node's users
        # did their part.
        for n in cluster.nodes:
            assert int(cli(n.port, "DBSIZE")) > 0, n.name
        for n in cluster.nodes:
            log = [e for e in acl_log(lambda *a: cli(n.port, *a))
                   if e.get("username") in USERS]
            assert log == [], (n.name, log)
        no_trouble(shim, since=since)
        no_trouble(alerter, also=("not_reading",))
        # A node refuses what is outside the role, here as everywhere.
        for u in USERS:
            conn = login(TcpResp(cluster.nodes[0].port), u)
            try:
                refused(conn, "FLUSHALL")
                refused(conn, "KEYS", "*")
                refused(conn, "CLUSTER", "RESET")
                refused(conn, "GET", "{other}:key")
            finally:
                conn.close()
    finally:
        for d in (shim, alerter):
            if d is not None:
                d.stop()
        sink.stop()
        cluster.stop()


def test_a_refused_lease_does_not_stop_the_alerts(tmp, aredis):
    """An ACL without the alerter's lease (its SET selector taken out):
    lease.lua's SET is refused inside the script, which Redis 7 reports
    as "ERR The user executing the script can't...", not NOPERM.  The
    alerter must still read and mail, and say once why it reads without
    a lease."""
    rules = [r for r in acl_users(acl_text())[ALERTER_USER]
             if not r.startswith("(")]
    assert aredis.cli("ACL", "SETUSER", ALERTER_USER, "reset", *rules) == "OK"
    sink = Sink(tmp).start()
    alerter, shim, sock = start_daemons(tmp, aredis, sink)
    try:
        answers = [ask(sock, block("default", "lease@example.org"))
                   for _ in range(4)]
        assert answers == [b"no"] * 3 + [b"yes"]
        wait_for(lambda: keys_mailed(sink).get("lease@example.org") == 1,
                 timeout=10 * SLOW, what="the crossing mailed")
        lines = log_lines(alerter, "event=lease_failed")
        assert len(lines) == 1 and "action=read_anyway" in lines[0], lines
        assert "can't" in lines[0]
        # It was Redis that refused: the ACL log has the lease's SET.
        assert any(e.get("username") == ALERTER_USER and
                   e.get("object") == "set" for e in acl_log(aredis.cli))
    finally:
        shim.stop()
        alerter.stop()
        sink.stop()
