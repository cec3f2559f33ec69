"""senderwatch-ctl, the admin's command line, against real processes: a
redis-server (or a Redis Cluster of three masters), the shim counting real
requests, the alerter, redis-cli.  What ctl prints is checked against what
Redis holds (redis-cli, the binary-safe Resp client) and against the
daemons' own code (senderwatch-shim -k, build/tests/keyname).

What must hold:
  - show's counts, limits, TTLs, crossed markers, overrides and subjects
    are Redis's; -a covers every rule and window; -j is JSON lines with
    the same figures;
  - reset makes the next decision count from 1, and leaves the override;
  - allow, block, factor and clear change the shim's answers, and each is
    announced on the events channel as override.lua announces it;
  - crossings lists real crossings newest first, and -f prints one that
    happens after it started, and ends with status 0 on SIGINT;
  - pending shows what a consumer holds and what no alerter has read;
  - top lists the heaviest keys in order, and says when its cap was hit;
  - keys prints what senderwatch-shim -k prints;
  - a hostile key or subject never reaches stdout raw: no ESC, no NUL;
  - exit status 0 done, 1 failed (Redis down or frozen: within a bound),
    2 usage;
  - the same on a Cluster: show, reset, top, crossings;
  - stats, status and reload from the daemons' control sockets.
"""
import json
import os
import select
import signal
import subprocess
import time

import pytest

from test_shim import Events
from conftest import (BUILD, RUN_USER, SHIM, ALERTER, VALGRIND, Daemon, Resp,
                      ask, free_port, shim_answers, stats, wait_for,
                      write_config)
from cluster import Cluster

CTL = os.path.join(BUILD, "senderwatch-ctl")
KEYNAME = os.path.join(BUILD, "tests", "keyname")
STREAM = "senderwatch:stream"
CHANNEL = "senderwatch:events"
GROUP = "senderwatch-alerters"

pytestmark = pytest.mark.skipif(os.environ.get("SW_VALGRIND") == "1",
                                reason="ctl is not a daemon: nothing to "
                                "run under valgrind here")

RULES = """\
  default: { limit: 3, window: 60s }
  ip: { limit: 2, window: 60s }
  user:
    limits: [ { limit: 2, window: 30s }, { limit: 10, window: 1h } ]
    normalize: [ lowercase, strip_tag ]
"""

# The bound on a failing command: redis.timeout (100 ms) + 2 s, and some.
FAIL_BOUND = 4.0

HOSTILE = b"evil\x1b[31m\x00x@example.org"
HOSTILE_ESC = "evil%1B[31m%00x@example.org"


# --- helpers ------------------------------------------------------------------

def run(conf, *args, json_out=False, timeout=20):
    cmd = [CTL, "-c", conf] + (["-j"] if json_out else []) + list(args)
    return subprocess.run(cmd, capture_output=True, timeout=timeout)


def out(conf, *args):
    """ctl's stdout (text), after checking that it succeeded."""
    r = run(conf, *args)
    assert r.returncode == 0, (args, r.returncode, r.stderr)
    return r.stdout.decode("ascii")


def rows(conf, *args):
    """ctl -j: one JSON object per line, each parsed."""
    r = run(conf, *args, json_out=True)
    assert r.returncode == 0, (args, r.returncode, r.stderr)
    return [json.loads(line) for line in r.stdout.decode("utf-8").splitlines()]


def tables(text):
    """Aligned text tables: a list of [{HEADER: cell}] per table.  The
    columns are split on runs of blanks (no cell has one, but the last)."""
    found = []
    for block in text.strip("\n").split("\n\n"):
        lines = block.splitlines()
        head = lines[0].split()
        found.append([dict(zip(head, l.split(None, len(head) - 1)))
                      for l in lines[1:]])
    return found


def decide(sock, key, rule="default", subject=None, n=1):
    """n requests of key under rule through the shim: the answers."""
    if isinstance(key, str):
        key = key.encode()
    req = b"rule=" + rule.encode() + b"\nkey=" + key + b"\n"
    if subject is not None:
        req += b"subject=" + (subject if isinstance(subject, bytes)
                              else subject.encode()) + b"\n"
    return [ask(sock, req + b"\n").decode() for _ in range(n)]


class Lines:
    """A process's stdout, read line by line with a deadline."""

    def __init__(self, proc):
        self.proc = proc
        self.buf = b""

    def next(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            assert left > 0, "no line from ctl in %.1fs: %r" % (timeout,
                                                                self.buf)
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if r:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                assert chunk, "ctl closed its stdout: %r" % self.buf
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line


@pytest.fixture
def shim(make_shim):
    d, sock = make_shim(rules=RULES)
    return d, sock


# --- show, reset ----------------------------------------------------------------

def test_show_counts_what_redis_holds(shim, redis):
    d, sock = shim
    assert decide(sock, "alice@example.org", subject="Hello", n=3) == \
        ["no"] * 3
    assert decide(sock, "alice@example.org", subject="Re: hi", n=2) == \
        ["yes"] * 2
    assert redis.cli("GET", "senderwatch:default:alice@example.org") == "5"
    pttl = int(redis.cli("PTTL", "senderwatch:default:alice@example.org"))

    w, o, s = tables(out(d.conf, "show", "alice@example.org"))
    assert w == [{"RULE": "default", "KEY": "alice@example.org",
                  "WINDOW": "1m", "COUNT": "5", "LIMIT": "3",
                  "TTL": w[0]["TTL"], "CROSSED": "yes"}]
    assert o == [{"RULE": "default", "KEY": "alice@example.org",
                  "OVERRIDE": "-", "TTL": "-", "CONFIG": "-"}]
    assert s == [
        {"RULE": "default", "KEY": "alice@example.org", "SUBJECT": "Hello",
         "COUNT": "3"},
        {"RULE": "default", "KEY": "alice@example.org",
         "SUBJECT": "Re:%20hi", "COUNT": "2"}]

    j = rows(d.conf, "show", "alice@example.org")
    win = [r for r in j if r["type"] == "window"]
    assert len(win) == 1 and win[0]["count"] == 5 and win[0]["limit"] == 3
    assert win[0]["crossed"] is True and win[0]["window_ms"] == 60000
    assert pttl - 2000 < win[0]["ttl_ms"] <= pttl
    assert [r for r in j if r["type"] == "override"][0]["override"] is None
    assert [(r["subject"], r["count"]) for r in j
            if r["type"] == "subject"] == [("Hello", 3), ("Re:%20hi", 2)]


def test_show_every_rule_and_window(shim, redis):
    d, sock = shim
    # user lowercases and strips the tag: these are one key.
    assert decide(sock, "Bob+lists@Example.ORG", rule="user", n=2) == \
        ["no", "no"]
    assert decide(sock, "bob@example.org", rule="user") == ["yes"]
    assert decide(sock, "Bob+lists@Example.ORG", rule="ip") == ["no"]
    j = rows(d.conf, "show", "-a", "Bob+lists@Example.ORG")
    win = {(r["rule"], r["window_ms"]): r for r in j
           if r["type"] == "window"}
    assert sorted(win) == [("default", 60000), ("ip", 60000),
                           ("user", 30000), ("user", 3600000)]
    assert win[("user", 30000)]["key"] == "bob@example.org"
    assert win[("user", 30000)]["count"] == 3
    assert win[("user", 30000)]["crossed"] is True
    assert win[("user", 3600000)]["count"] == 3
    assert win[("user", 3600000)]["limit"] == 10
    assert win[("user", 3600000)]["crossed"] is False
    assert win[("ip", 60000)]["key"] == "Bob+lists@Example.ORG"
    assert win[("ip", 60000)]["count"] == 1
    assert win[("default", 60000)]["count"] == 0
    assert win[("default", 60000)]["ttl_ms"] == -2
    # Each count is its counter's, named as ctl keys names it.
    for (rule, ms), r in win.items():
        counters = [l.split()[2] for l in
                    out(d.conf, "keys", "-r", rule, r["key"]).splitlines()
                    if l.split()[1] == "count"]
        name = counters[1 if ms == 3600000 else 0]
        assert redis.cli("GET", name) == \
            (str(r["count"]) if r["count"] else ""), (rule, ms, name)
    # -r names one rule; the text has every window of it.
    w = tables(out(d.conf, "show", "-r", "user", "BOB@example.org"))[0]
    assert [(r["WINDOW"], r["COUNT"], r["LIMIT"]) for r in w] == \
        [("30s", "3", "2"), ("1h", "3", "10")]


def test_reset_counts_from_one_and_keeps_the_override(shim, redis):
    d, sock = shim
    assert decide(sock, "carol@example.org", subject="x", n=4)[-1] == "yes"
    out(d.conf, "factor", "carol@example.org", "2")
    j = rows(d.conf, "reset", "carol@example.org")
    # The counter, the crossed marker and the subjects.
    assert j == [{"rule": "default", "key": "carol@example.org",
                  "deleted": 3}]
    assert redis.cli("EXISTS", "senderwatch:default:carol@example.org",
                     "senderwatch:crossed:default:carol@example.org",
                     "senderwatch:subjects:default:carol@example.org") == "0"
    assert redis.cli("GET", "senderwatch:override:default:"
                     "carol@example.org") == "x2"
    assert decide(sock, "carol@example.org") == ["no"]
    assert redis.cli("GET", "senderwatch:default:carol@example.org") == "1"
    # -a: every rule, each told what it deleted.
    decide(sock, "carol@example.org", rule="ip")
    t = tables(out(d.conf, "reset", "-a", "carol@example.org"))[0]
    assert {r["RULE"]: r["DELETED"] for r in t} == \
        {"default": "1", "ip": "1", "user": "0"}


# --- overrides ------------------------------------------------------------------

def test_overrides_change_the_answers_and_are_announced(shim, redis):
    d, sock = shim
    key = "dave@example.org"
    okey = "senderwatch:override:default:" + key
    ev = Events(redis.sock)
    try:
        assert decide(sock, key, n=4) == ["no"] * 3 + ["yes"]
        assert [x["type"] for x in ev.drain()] == ["threshold"]

        assert out(d.conf, "allow", key, "-d", "90s", "-m", "ticket 42")
        assert decide(sock, key, n=2) == ["no", "no"]
        assert 85 <= int(redis.cli("TTL", okey)) <= 90
        e = ev.drain()
        assert e == [{"type": "override", "rule": "default", "key": key,
                      "action": "allow", "ttl": 90, "note": "ticket 42",
                      "time": e[0]["time"]}]

        j = rows(d.conf, "block", "-r", "default", key)
        assert j == [{"rule": "default", "key": key, "action": "block",
                      "ttl_s": 0, "note": j[0]["note"]}]
        assert j[0]["note"].startswith("senderwatch-ctl by ")
        assert redis.cli("TTL", okey) == "-1"
        assert decide(sock, "erin@example.org") == ["no"]
        assert decide(sock, key) == ["yes"]
        assert [(x["action"], x["ttl"]) for x in ev.drain()] == \
            [("block", 0)]

        # x2: the limit is 6; allow and block counted nothing.
        out(d.conf, "factor", key, "2", "-d", "1h")
        assert decide(sock, key, n=3) == ["no", "no", "yes"]
        assert redis.cli("GET", "senderwatch:default:" + key) == "7"
        assert [r["limit"] for r in rows(d.conf, "show", key)
                if r["type"] == "window"] == [6]
        o = [r for r in rows(d.conf, "show", key) if r["type"] == "override"]
        assert o[0]["override"] == "x2" and 0 < o[0]["ttl_ms"] <= 3600000

        out(d.conf, "clear", key)
        assert redis.cli("EXISTS", okey) == "0"
        assert decide(sock, key) == ["yes"]
        assert [(x["action"], x["key"]) for x in ev.drain()] == \
            [("x2", key), ("clear", key)]
    finally:
        ev.close()
    # What an override is for an unknown rule, a bad factor: usage.
    assert run(d.conf, "allow", key, "-r", "nope").returncode == 2
    assert run(d.conf, "factor", key, "0").returncode == 2
    assert run(d.conf, "factor", key, "x").returncode == 2
    assert run(d.conf, "allow", key, "-d", "soon").returncode == 2


# --- crossings, pending -----------------------------------------------------------

def test_crossings_list_and_follow(shim, redis):
    d, sock = shim
    decide(sock, "first@example.org", n=4)
    decide(sock, "second@example.org", rule="ip", n=3)
    ids = [e[0] for e in json.loads(redis.cli("--json", "XRANGE", STREAM,
                                              "-", "+"))]
    assert len(ids) == 2
    j = rows(d.conf, "crossings")
    assert [r["id"] for r in j] == ids[::-1]       # newest first
    assert (j[1]["rule"], j[1]["key"], j[1]["count"], j[1]["limit"],
            j[1]["window_ms"], j[1]["shadow"]) == \
        ("default", "first@example.org", 4, 3, 60000, False)
    assert (j[0]["rule"], j[0]["key"], j[0]["count"]) == \
        ("ip", "second@example.org", 3)
    t = tables(out(d.conf, "crossings", "-n", "1"))[0]
    assert [(r["ID"], r["RULE"], r["KEY"], r["COUNT"], r["LIMIT"],
             r["WINDOW"]) for r in t] == \
        [(ids[1], "ip", "second@example.org", "3", "2", "1m")]

    p = subprocess.Popen([CTL, "-c", d.conf, "-j", "crossings", "-f", "-n",
                          "1"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    try:
        lines = Lines(p)
        assert json.loads(lines.next())["id"] == ids[1]
        decide(sock, "third@example.org", n=4)
        e = json.loads(lines.next())
        assert (e["key"], e["count"]) == ("third@example.org", 4)
        decide(sock, "fourth@example.org", n=4)
        assert json.loads(lines.next())["key"] == "fourth@example.org"
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=5) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_pending_per_consumer_and_unread(shim, redis):
    d, sock = shim
    assert tables(out(d.conf, "pending"))[0] == [
        {"PENDING": "0", "UNREAD": "0", "STREAMS": "0", "GROUP": GROUP}]
    for k in ("p1@example.org", "p2@example.org", "p3@example.org"):
        decide(sock, k, n=4)
    # One consumer takes two and holds them, as an alerter that died.
    redis.cli("XREADGROUP", "GROUP", GROUP, "alerter1", "COUNT", "2",
              "STREAMS", STREAM, ">")
    first = json.loads(redis.cli("--json", "XRANGE", STREAM, "-", "+"))[0][0]
    j = rows(d.conf, "pending")
    assert j[0] == {"type": "consumer", "consumer": "alerter1", "pending": 2,
                    "oldest": first, "idle_ms": j[0]["idle_ms"]}
    assert 0 <= j[0]["idle_ms"] < 10000
    assert j[1] == {"type": "total", "pending": 2, "unread": 1,
                    "streams": 1, "group": GROUP}
    c, total = tables(out(d.conf, "pending"))
    assert [(r["CONSUMER"], r["PENDING"], r["OLDEST"]) for r in c] == \
        [("alerter1", "2", first)]
    assert total[0]["UNREAD"] == "1"


# --- top, keys ----------------------------------------------------------------------

def test_top_lists_the_heaviest_and_says_when_capped(shim, redis, rdb):
    d, sock = shim
    for key, n in (("light@example.org", 1), ("heavy@example.org", 7),
                   ("middle@example.org", 4), ("mid2@example.org", 2)):
        decide(sock, key, n=n)
    decide(sock, "other@example.org", rule="ip", n=9)
    j = rows(d.conf, "top", "-n", "3")
    keys = [r for r in j if r["type"] == "key"]
    assert [(r["rank"], r["key"], r["count"]) for r in keys] == \
        [(1, "heavy@example.org", 7), (2, "middle@example.org", 4),
         (3, "mid2@example.org", 2)]
    summary = [r for r in j if r["type"] == "summary"][0]
    assert summary["matched"] == 4 and summary["cap_reached"] is False
    t = tables(out(d.conf, "top", "-r", "ip"))[0]
    assert [(r["RULE"], r["KEY"], r["COUNT"]) for r in t] == \
        [("ip", "other@example.org", "9")]

    # More keys than the cap: it stops, and says so.
    rdb.cmd("EVAL", "for i = 1, 120000 do redis.call('SET', 'pad:' .. i, 1) "
            "end", 0)
    start = time.monotonic()
    r = run(d.conf, "top")
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - start < 10
    assert b"cap of 100000 keys scanned was reached" in r.stdout
    s = [x for x in rows(d.conf, "top") if x["type"] == "summary"][0]
    assert s["cap_reached"] is True and s["scanned"] == 100000


def test_keys_are_the_shims_names(shim):
    d, _ = shim
    for key in ("alice@example.org", "Alice+News@Example.ORG",
                "{s0.0}brace", "100%sure@example.org", "a b@example.org"):
        want = subprocess.run([SHIM, "-c", d.conf, "-k", key],
                              capture_output=True, timeout=10)
        assert want.returncode == 0, want.stderr
        assert run(d.conf, "keys", key).stdout == want.stdout, key
        assert run(d.conf, "keys", "-r", "user", key).stdout == b"".join(
            l + b"\n" for l in want.stdout.splitlines()
            if l.startswith(b"user "))
    # A key with a literal % before two hex digits is given as %25.
    want = subprocess.run([SHIM, "-c", d.conf, "-k", "per%cent"],
                          capture_output=True, timeout=10).stdout
    assert run(d.conf, "keys", "per%25cent").stdout == want
    assert b"per%25cent" in want
    j = rows(d.conf, "keys", "-r", "default", "x@example.org")
    assert {r["what"]: r["name"] for r in j} == {
        "count": "senderwatch:default:x@example.org",
        "crossed": "senderwatch:crossed:default:x@example.org",
        "subjects": "senderwatch:subjects:default:x@example.org",
        "override": "senderwatch:override:default:x@example.org",
        "stream": STREAM}


# --- hostile keys, exit statuses ------------------------------------------------------

def test_a_hostile_key_is_shown_escaped(shim, redis, rdb):
    d, sock = shim
    subject = b"\x1b]0;pwned\x07 \xff\xfe hi"
    assert decide(sock, HOSTILE, subject=subject, n=4)[-1] == "yes"
    name = subprocess.run([KEYNAME, "senderwatch", "default"], input=HOSTILE,
                          capture_output=True, check=True).stdout
    assert rdb.cmd("GET", name) == b"4"
    # A name written by hand with raw bytes in it is escaped on output too.
    rdb.cmd("SET", b"senderwatch:default:raw\x1b[2Jkey", b"9")

    for args in (("show", HOSTILE_ESC), ("show", "-a", HOSTILE_ESC),
                 ("top",), ("crossings",), ("keys", HOSTILE_ESC),
                 ("pending",)):
        for json_out in (False, True):
            r = run(d.conf, *args, json_out=json_out)
            assert r.returncode == 0, (args, r.stderr)
            assert not set(r.stdout) & set(b"\x1b\x00\x07\xff\r"), \
                (args, r.stdout)
            assert all(b >= 0x20 or b == 0x0a for b in r.stdout), args
            if json_out:
                for line in r.stdout.decode("utf-8").splitlines():
                    json.loads(line)
    w = [r for r in rows(d.conf, "show", HOSTILE_ESC)]
    assert [r["key"] for r in w if r["type"] == "window"] == [HOSTILE_ESC]
    assert [r["count"] for r in w if r["type"] == "window"] == [4]
    assert [r["subject"] for r in w if r["type"] == "subject"] == \
        ["%1B]0;pwned%07%20%FF%FE%20hi"]
    top = {r["key"]: r["count"] for r in rows(d.conf, "top")
           if r["type"] == "key"}
    assert top == {"raw%1B[2Jkey": 9, HOSTILE_ESC: 4}
    assert rows(d.conf, "crossings")[0]["key"] == HOSTILE_ESC
    # The escaped form is the key: reset finds it.
    assert rows(d.conf, "reset", HOSTILE_ESC)[0]["deleted"] == 3
    assert rdb.cmd("EXISTS", name) == 0


def test_exit_statuses(shim, redis, rdb, tmp):
    d, sock = shim
    for args in ((), ("nope",), ("show",), ("show", "a", "b"),
                 ("show", "-r", "nope", "a"), ("show", "-a", "-r", "ip", "a"),
                 ("top", "-n", "0"), ("top", "-n", "x"), ("crossings", "x"),
                 ("stats", "neither"), ("show", "-x", "a")):
        r = run(d.conf, *args)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert b"usage: senderwatch-ctl" in r.stderr, args
        assert r.stdout == b"", args
    assert run(d.conf, "-h").returncode == 0
    assert run(os.path.join(tmp, "missing.yaml"), "show", "a").returncode == 1

    # An error reply is a failure, never data.
    rdb.cmd("SET", "senderwatch:subjects:default:typed@example.org", "x")
    r = run(d.conf, "show", "typed@example.org")
    assert r.returncode == 1 and b"WRONGTYPE" in r.stderr, r.stderr
    assert b"senderwatch-ctl: " in r.stderr

    # No control socket configured: nothing to ask.
    with open(d.conf) as f:
        text = f.read()
    bare = write_config(os.path.join(tmp, "bare.yaml"),
                        text[:text.index("control:")])
    r = run(bare, "stats")
    assert r.returncode == 1 and b"no control socket" in r.stderr
    r = run(bare, "status", "alerter")
    assert r.returncode == 1 and b"control.alerter is not set" in r.stderr

    # Redis frozen (it accepts, never answers), then gone: 1, in bounds.
    redis.kill(signal.SIGSTOP)
    try:
        start = time.monotonic()
        r = run(d.conf, "show", "a@example.org")
        took = time.monotonic() - start
        assert r.returncode == 1, r.stderr
        assert b"senderwatch-ctl: Redis not reachable: " in r.stderr
        assert took < FAIL_BOUND, took
    finally:
        redis.kill(signal.SIGCONT)
    redis.stop()
    for args in (("show", "a@example.org"), ("top",), ("crossings",),
                 ("allow", "a@example.org"), ("pending",)):
        start = time.monotonic()
        r = run(d.conf, *args)
        took = time.monotonic() - start
        assert r.returncode == 1, (args, r.stderr)
        assert b"senderwatch-ctl: Redis not reachable: " in r.stderr, args
        assert took < FAIL_BOUND, (args, took)
    # keys needs no Redis.
    assert run(d.conf, "keys", "a@example.org").returncode == 0


# --- Redis Cluster ----------------------------------------------------------------

CLUSTER_CONF = """\
shim:
  listen: [ {sock} ]
  socket_mode: "0666"
  near_cache: 0   # counts read at once; the cache: test_near_cache.py
{user}redis:
  cluster: [ {seeds} ]
  timeout: 100ms
  on_error: "yes"
events:
  channel: senderwatch:events
  stream: senderwatch:stream
rules:
  default: {{ limit: 3, window: 60s }}
control:
  shim: {ctl}
"""


def cli_c(port, *args):
    r = subprocess.run(["redis-cli", "-c", "-p", str(port)] +
                       [str(a) for a in args], capture_output=True,
                       text=True, timeout=30)
    return r.stdout.strip()


def test_a_cluster(tmp):
    cluster = Cluster(tmp, n=3, replicas=0).start()
    shim = None
    try:
        sock = os.path.join(tmp, "c.sock")
        conf = write_config(os.path.join(tmp, "c.yaml"), CLUSTER_CONF.format(
            sock=sock, seeds=", ".join(cluster.seeds()),
            ctl=os.path.join(tmp, "c.ctl"),
            user=("  user: %s\n" % RUN_USER) if RUN_USER else ""))
        shim = Daemon(SHIM, conf, tmp, "cshim")
        shim.ctl = os.path.join(tmp, "c.ctl")
        shim.start(wait=lambda: shim_answers(sock) and ask(
            sock, b"rule=default\nkey=probe\ncost=0\n\n") == b"no")
        port = cluster.nodes[0].port
        # Twelve keys, key i asked i + 1 times: the last nine cross.
        keys = ["c%d@example.org" % i for i in range(12)]
        for i, k in enumerate(keys):
            assert decide(sock, k, n=i + 1)[-1] == ("yes" if i >= 3 else
                                                    "no")
        names = {}
        for k in keys:
            lines = out(conf, "keys", k).splitlines()
            want = subprocess.run([SHIM, "-c", conf, "-k", k],
                                  capture_output=True, text=True).stdout
            assert "\n".join(lines) + "\n" == want
            names[k] = dict((l.split()[1], l.split()[2]) for l in lines)
        # The keys lie on every master.
        assert len({cluster.owner(int(n["slot"])).port
                    for n in names.values()}) == 3

        for i in (0, 5, 11):
            w = [r for r in rows(conf, "show", keys[i])
                 if r["type"] == "window"][0]
            assert w["count"] == i + 1 == int(cli_c(port, "GET",
                                                    names[keys[i]]["count"]))
            assert w["crossed"] is (i >= 3)

        j = rows(conf, "top", "-n", "4")
        assert [(r["key"], r["count"]) for r in j if r["type"] == "key"] == \
            [(keys[i], i + 1) for i in (11, 10, 9, 8)]
        s = [r for r in j if r["type"] == "summary"][0]
        # And the start's probe (cost=0), counted 0.
        assert s["masters"] == 3 and s["matched"] == 13

        c = rows(conf, "crossings", "-n", "100")
        assert sorted(r["key"] for r in c) == sorted(keys[3:])
        assert len({r["stream"] for r in c}) > 1
        ids = [tuple(map(int, r["id"].split("-"))) for r in c]
        assert ids == sorted(ids, reverse=True)
        assert rows(conf, "crossings", "-n", "2") == c[:2]

        p = [r for r in rows(conf, "pending") if r["type"] == "total"][0]
        assert p["unread"] == 9 and p["pending"] == 0

        # Its counter and its crossed marker (no subjects were sent).
        assert rows(conf, "reset", keys[11])[0]["deleted"] == 2
        assert cli_c(port, "EXISTS", names[keys[11]]["count"]) == "0"
        assert decide(sock, keys[11]) == ["no"]
        assert cli_c(port, "GET", names[keys[11]]["count"]) == "1"

        # An override announced on a Cluster reaches the shim's node over
        # the cluster bus, after ctl has its reply: awaited (the promise
        # is within a second), since until the shim hears it a key it
        # found without one less than 0.9 s ago is not read again.
        for what, want in (("block", ["yes"]), ("clear", ["no"])):
            heard = stats(shim)["near_cache_invalidated"]
            out(conf, what, keys[0])
            wait_for(lambda: stats(shim)["near_cache_invalidated"] > heard,
                     timeout=10 if VALGRIND else 1,
                     what="the shim to hear the " + what)
            assert decide(sock, keys[0]) == want
    finally:
        if shim is not None:
            shim.stop()
        cluster.stop()


# --- control sockets ----------------------------------------------------------------

ALERTER_CONF = """\
{user}redis:
  address: unix:{redis}
events:
  channel: senderwatch:events
  stream: senderwatch:stream
rules:
  default: {{ limit: 3, window: 60s }}
alerts:
  from: senderwatch@example.com
  to: [ director@example.com ]
  smtp: 127.0.0.1:{port}
  consumer: ctl-test
control:
  alerter: {control}
"""


def test_stats_status_reload(make_shim, redis, tmp):
    shim_ctl = os.path.join(tmp, "shim.ctl")
    alerter_ctl = os.path.join(tmp, "alerter.ctl")
    control = "control:\n  shim: %s\n  alerter: %s\n" % (shim_ctl,
                                                         alerter_ctl)
    d, sock = make_shim(rules=RULES, extra=control)
    decide(sock, "s@example.org", n=2)
    wait_for(lambda: os.path.exists(shim_ctl), what="the shim's control "
             "socket")

    # The alerter is configured but not running: shim printed, exit 1.
    r = run(d.conf, "stats")
    assert r.returncode == 1
    assert b"alerter not answering" in r.stderr
    t = tables(r.stdout.decode())[0]
    assert t and {x["DAEMON"] for x in t} == {"shim"}

    conf = write_config(os.path.join(tmp, "alerter.yaml"),
                        ALERTER_CONF.format(
                            user=("shim:\n  user: %s\n" % RUN_USER)
                            if RUN_USER else "",
                            redis=redis.sock, port=free_port(),
                            control=alerter_ctl))
    alerter = Daemon(ALERTER, conf, tmp, "alerter")
    alerter.start(wait=lambda: os.path.exists(alerter_ctl) and
                  "event=redis_up conn=alerter " in alerter.log())
    try:
        j = rows(d.conf, "status")
        assert [x["daemon"] for x in j] == ["shim", "alerter"]
        assert j[0]["pid"] == d.proc.pid
        assert j[1]["pid"] == alerter.proc.pid
        assert j[0]["config"] == d.conf and j[1]["config"] == conf
        for x in j:
            for k in ("version", "layout", "redis", "started"):
                assert k in x, (k, x)
        t = tables(out(d.conf, "status", "shim"))[0]
        assert {x["DAEMON"] for x in t} == {"shim"}
        assert {x["KEY"]: x["VALUE"] for x in t}["pid"] == str(d.proc.pid)

        s = rows(d.conf, "stats", "shim")
        assert len(s) == 1 and s[0]["daemon"] == "shim"
        assert s[0]["decisions"] >= 2

        r = rows(d.conf, "reload")
        assert [(x["daemon"], x["result"]) for x in r] == \
            [("shim", "ok"), ("alerter", "ok")]
        assert tables(out(d.conf, "reload", "alerter"))[0] == \
            [{"DAEMON": "alerter", "RESULT": "ok"}]
        # A file the daemon refuses: its error on stderr, and exit 1 (ctl
        # reads a good copy of it).
        good = write_config(os.path.join(tmp, "good.yaml"),
                            open(d.conf).read())
        with open(d.conf, "a") as f:
            f.write("bogus: 1\n")
        r = run(good, "reload", "shim")
        assert r.returncode == 1, r.stderr
        assert b"senderwatch-ctl: shim: reload: " in r.stderr
        assert tables(r.stdout.decode())[0][0]["RESULT"] == "error"
        assert decide(sock, "s@example.org") == ["no"]    # still serving
    finally:
        alerter.stop()


def test_under_sentinel_and_across_a_failover(tmp):
    """The same commands through Sentinel: the CLI finds the master as
    the daemons do (common/layout.c), and after a planned failover finds
    the new one, where the replicated counters and override are."""
    from sentinel import MASTER, SentinelSet, SwitchWatch, cli as scli
    sset = SentinelSet(tmp).start()
    shim = None
    try:
        sock = os.path.join(tmp, "s.sock")
        conf = write_config(os.path.join(tmp, "s.yaml"), """\
shim:
  listen: [ %s ]
  socket_mode: "0666"
  near_cache: 0   # counts read at once; the cache: test_near_cache.py
%sredis:
  sentinel:
    master: %s
    addresses: [ %s ]
  timeout: 200ms
events:
  channel: senderwatch:events
  stream: senderwatch:stream
rules:
  default: { limit: 3, window: 60s }
""" % (sock, ("  user: %s\n" % RUN_USER) if RUN_USER else "", MASTER,
            ", ".join(sset.addresses())))
        shim = Daemon(SHIM, conf, tmp, "sshim")
        shim.start(wait=lambda: shim_answers(sock) and
                   "script_loaded" in shim.log())
        assert decide(sock, "sen@example.org", n=4)[-1] == "yes"
        win = tables(out(conf, "show", "sen@example.org"))[0]
        assert win[0]["COUNT"] == "4" and win[0]["CROSSED"] == "yes"
        assert out(conf, "block", "sen@example.org", "-m", "sentinel test")
        old = sset.master()
        # Replicated before the switch: a planned failover loses nothing.
        wait_for(lambda: scli(sset.other(old).port, "GET",
                              "senderwatch:override:default:sen@example.org")
                 == "block", what="the replica to have the override")
        watch = SwitchWatch(sset.sentinels[1].port)
        try:
            assert scli(sset.sentinels[0].port, "SENTINEL", "FAILOVER",
                        MASTER) == "OK"
            wait_for(lambda: watch.at is not None, timeout=30,
                     what="+switch-master")
        finally:
            watch.close()
        wait_for(lambda: sset.master() is not old, timeout=10,
                 what="the new master")
        # The CLI asks the sentinels afresh: the new master has it all.
        wait_for(lambda: run(conf, "show", "sen@example.org").returncode
                 == 0, timeout=10, what="ctl on the new master")
        win, ov = tables(out(conf, "show", "sen@example.org"))[:2]
        assert win[0]["COUNT"] == "4"
        assert ov[0]["OVERRIDE"] == "block"
        out(conf, "clear", "sen@example.org")
        wait_for(lambda: decide(sock, "sen@example.org")[-1] == "yes" and
                 out(conf, "show", "sen@example.org"), what="a decision")
    finally:
        if shim is not None:
            shim.stop()
        sset.stop()
