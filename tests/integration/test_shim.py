"""senderwatch-shim against a real redis-server, one case per behaviour and
failure mode: counting and windows, sharing a counter between shims, one
event per crossing, keys Redis had before, Redis going away and coming
back, bad and silent clients, config checks and reloads, key escaping and
the listening socket's life.

Nothing here sleeps and hopes: waits poll a condition with a deadline
(wait_for), windows are short, and timings that matter are measured.
"""
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import (SHIM, Daemon, Resp, ask, command_calls, log_lines,
                      read_all, shim_config, stats, wait_for, write_config)

PREFIX = "senderwatch"
STREAM = "senderwatch:stream"
CHANNEL = "senderwatch:events"

# Generous bound on the shim's own work when it answers without Redis or
# after the Redis timeout: it has to beat Exim's readsocket timeout by far,
# and a loaded 2-CPU CI machine must still pass.
MARGIN = 0.4


class Events:
    """A subscriber to the events channel.  drain() publishes a marker of
    its own and reads up to it: Redis delivers a channel's messages in
    order, so every event published before the call has then arrived."""

    def __init__(self, redis_sock):
        self.sub = Resp(redis_sock)
        assert self.sub.cmd("SUBSCRIBE", CHANNEL) == [b"subscribe",
                                                      CHANNEL.encode(), 1]
        self.pub = Resp(redis_sock)
        self.n = 0

    def drain(self):
        self.n += 1
        marker = b"marker-%d" % self.n
        self.pub.cmd("PUBLISH", CHANNEL, marker)
        got = []
        while True:
            kind, _, payload = self.sub.read()
            assert kind == b"message"
            if payload == marker:
                return got
            got.append(json.loads(payload))

    def close(self):
        self.sub.close()
        self.pub.close()


@pytest.fixture
def events(redis):
    e = Events(redis.sock)
    yield e
    e.close()


def counter(key, rule="default"):
    return "%s:%s:%s" % (PREFIX, rule, key)


def timed_ask(sock, data):
    t = time.monotonic()
    out = ask(sock, data)
    return out, time.monotonic() - t




def stream_entries(rdb):
    """XRANGE as a list of (id, {field: value}) with str fields."""
    out = []
    for eid, flat in rdb.cmd("XRANGE", STREAM, "-", "+"):
        f = {flat[i].decode(): flat[i + 1].decode()
             for i in range(0, len(flat), 2)}
        out.append((eid.decode(), f))
    return out


def hammer(socks, key, per_thread, threads_per_sock=2):
    """Ask for key from threads_per_sock threads per socket at once;
    returns every answer."""
    answers, lock = [], threading.Lock()
    jobs = [s for s in socks for _ in range(threads_per_sock)]
    barrier = threading.Barrier(len(jobs))
    errors = []

    def run(sock):
        mine = []
        try:
            barrier.wait(timeout=10)
            for _ in range(per_thread):
                mine.append(ask(sock, key))
        except Exception as e:  # reported below, not lost in a thread
            errors.append(e)
        with lock:
            answers.extend(mine)

    ts = [threading.Thread(target=run, args=(s,)) for s in jobs]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=60)
    assert not errors, errors
    assert not any(t.is_alive() for t in ts)
    return answers


# --- counting ---------------------------------------------------------------

def test_rule_by_attribute_block(make_shim, redis):
    shim, sock = make_shim()
    req = "rule=ip\nkey=192.0.2.7\n\n"
    # rule ip: limit 2
    assert [ask(sock, req) for _ in range(4)] == [b"no", b"no", b"yes", b"yes"]
    assert redis.cli("GET", counter("192.0.2.7", "ip")) == "4"
    # the same key under the default rule is a different counter
    assert ask(sock, "192.0.2.7\n") == b"no"
    assert redis.cli("GET", counter("192.0.2.7")) == "1"


def test_requests_exim_may_send(make_shim, redis):
    """With or without the newline, CRLF, and the null sender."""
    shim, sock = make_shim()
    assert ask(sock, b"a@example.org") == b"no"
    assert ask(sock, b"a@example.org\n") == b"no"
    assert ask(sock, b"a@example.org\r\n") == b"no"
    assert ask(sock, b"a@example.org\n") == b"yes"
    assert redis.cli("GET", counter("a@example.org")) == "4"
    assert ask(sock, b"\n") == b"no"
    assert redis.cli("GET", counter("<>")) == "1"
    # a health check (connect, close) counts nothing
    assert ask(sock, b"") == b"no"
    assert redis.cli("GET", counter("<>")) == "1"


def test_subjects_recorded(make_shim, redis):
    shim, sock = make_shim()
    key = "s@example.org"
    for subj in ["Cheap pills", "Cheap pills", "Hello"]:
        assert ask(sock, "key=%s\nsubject=%s\n\n" % (key, subj)) == b"no"
    zkey = "%s:subjects:default:%s" % (PREFIX, key)
    assert redis.cli("ZSCORE", zkey, "Cheap pills") == "2"
    assert redis.cli("ZSCORE", zkey, "Hello") == "1"
    assert 0 < int(redis.cli("PTTL", zkey)) <= 60000


def test_window_expiry(make_shim, redis):
    shim, sock = make_shim(rules="  default: { limit: 1, window: 300ms }\n")
    key = counter("w@example.org")
    assert ask(sock, "w@example.org\n") == b"no"
    assert ask(sock, "w@example.org\n") == b"yes"
    assert 0 < int(redis.cli("PTTL", key)) <= 300
    t = time.monotonic()
    wait_for(lambda: redis.cli("EXISTS", key) == "0", timeout=3,
             what="the counter to expire")
    # the window starts at the first hit: gone well before a second
    assert time.monotonic() - t < 1.0
    assert ask(sock, "w@example.org\n") == b"no"
    assert redis.cli("GET", key) == "1"


def test_two_shims_share_one_counter(make_shim, redis):
    a, sock_a = make_shim("a")
    b, sock_b = make_shim("b")
    socks = [sock_a, sock_b] * 3
    answers = [ask(s, "shared@example.org\n") for s in socks]
    assert answers == [b"no", b"no", b"no", b"yes", b"yes", b"yes"]
    assert redis.cli("GET", counter("shared@example.org")) == "6"
    # the 4th hit, through b, crossed; a never did
    assert len(log_lines(b, "event=crossing")) == 1
    assert log_lines(a, "event=crossing") == []


# --- events -----------------------------------------------------------------

def test_one_event_per_crossing_under_concurrency(make_shim, redis, rdb,
                                                  events):
    rules = "  default: { limit: 10, window: 60s }\n"
    a, sock_a = make_shim("a", rules=rules)
    b, sock_b = make_shim("b", rules=rules)
    assert rdb.cmd("XLEN", STREAM) == 0

    answers = hammer([sock_a, sock_b], "hot@example.org\n", per_thread=20)
    assert len(answers) == 80
    # every hit was counted once, atomically: exactly `limit` were below
    assert answers.count(b"no") == 10
    assert answers.count(b"yes") == 70
    assert rdb.cmd("GET", counter("hot@example.org")) == b"80"

    entries = stream_entries(rdb)
    assert len(entries) == 1
    eid, f = entries[0]
    assert f["rule"] == "default"
    assert f["key"] == "hot@example.org"
    assert f["count"] == "11"
    assert f["limit"] == "10"
    assert f["window_ms"] == "60000"
    assert f["counter"] == counter("hot@example.org")

    published = events.drain()
    assert len(published) == 1
    ev = published[0]
    assert ev["id"] == eid
    assert (ev["rule"], ev["key"], ev["count"], ev["limit"], ev["window"]) \
        == ("default", "hot@example.org", 11, 10, 60)

    crossings = log_lines(a, "event=crossing") + log_lines(b, "event=crossing")
    assert len(crossings) == 1
    assert 'key="hot@example.org" count=11 limit=10' in crossings[0]
    assert stats(a)["crossings"] + stats(b)["crossings"] == 1


def test_new_window_new_event(make_shim, redis, rdb, events):
    shim, sock = make_shim(rules="  default: { limit: 1, window: 300ms }\n")
    key = counter("again@example.org")
    for _ in range(3):
        ask(sock, "again@example.org\n")
    assert len(events.drain()) == 1
    wait_for(lambda: rdb.cmd("EXISTS", key) == 0, timeout=3,
             what="the window to end")
    assert [ask(sock, "again@example.org\n") for _ in range(3)] == \
        [b"no", b"yes", b"yes"]
    assert len(events.drain()) == 1
    assert rdb.cmd("XLEN", STREAM) == 2


# --- what Redis held before -------------------------------------------------

@pytest.mark.parametrize("setup,want", [
    (("SET", "{k}", "2"), ("no", "3")),           # no TTL: the article's fear
    (("SET", "{k}", "many"), ("no", "1")),        # not a number
    (("RPUSH", "{k}", "x", "y"), ("no", "1")),    # wrong type
    (("HSET", "{k}", "f", "v"), ("no", "1")),
    (("SADD", "{k}", "m"), ("no", "1")),
])
def test_every_key_gets_a_ttl(make_shim, redis, setup, want):
    shim, sock = make_shim()
    key = counter("old@example.org")
    redis.cli(*[key if a == "{k}" else a for a in setup])
    assert redis.cli("PTTL", key) == "-1"
    answer, count = want
    assert ask(sock, "old@example.org\n") == answer.encode()
    assert redis.cli("TYPE", key) == "string"
    assert redis.cli("GET", key) == count
    assert 0 < int(redis.cli("PTTL", key)) <= 60000


def test_a_counter_without_a_ttl_is_mended_within_a_sixteenth(make_shim,
                                                              redis):
    """A fixed counter has its TTL from its first hit, so count.lua sends
    PEXPIRE NX only where one may be missing: where the count is the cost
    alone (new, or reset to 0 by another tool), where it is over, and as
    it passes a multiple of a sixteenth of the limit (10 of 160 here)."""
    shim, sock = make_shim(rules="  default: { limit: 160, window: 60s }\n"
                           "  nodeny: { limit: 160, window: 60s,"
                           " count_denied: no }\n")
    # Set without a TTL below the limit: mended as it passes 10.
    key = counter("set@example.org")
    redis.cli("SET", key, "2")
    for count in range(3, 10):
        assert ask(sock, "set@example.org\n") == b"no"
        assert redis.cli("PTTL", key) == "-1", count
    assert ask(sock, "set@example.org\n") == b"no"
    assert redis.cli("GET", key) == "10"
    assert 0 < int(redis.cli("PTTL", key)) <= 60000
    # Reset to 0 by another tool: mended by the next count.
    key = counter("reset@example.org")
    redis.cli("SET", key, "0")
    assert ask(sock, "reset@example.org\n") == b"no"
    assert 0 < int(redis.cli("PTTL", key)) <= 60000
    # Over the limit, counted or not: mended before it answers yes.
    for rule in ("default", "nodeny"):
        key = counter("over@example.org", rule)
        redis.cli("SET", key, "500")
        assert ask(sock, "rule=%s\nkey=over@example.org\n\n" % rule) == \
            b"yes"
        assert 0 < int(redis.cli("PTTL", key)) <= 60000, rule
    # A counter this shim made: PEXPIRE at its first hit and at 10 and 20
    # only, and its window is the first hit's.
    key = counter("new@example.org")
    before = command_calls(redis, "pexpire")
    assert ask(sock, "new@example.org\n") == b"no"
    first = int(redis.cli("PTTL", key))
    for _ in range(19):
        assert ask(sock, "new@example.org\n") == b"no"
    assert redis.cli("GET", key) == "20"
    assert command_calls(redis, "pexpire") - before == 3
    assert 0 < int(redis.cli("PTTL", key)) <= first


def test_existing_window_is_kept(make_shim, redis):
    """The window runs from the first hit: later hits don't extend it."""
    shim, sock = make_shim()
    key = counter("kept@example.org")
    redis.cli("SET", key, "1", "PX", "5000")
    assert ask(sock, "kept@example.org\n") == b"no"
    assert 0 < int(redis.cli("PTTL", key)) <= 5000


def test_subjects_key_of_wrong_type(make_shim, redis):
    shim, sock = make_shim()
    zkey = "%s:subjects:default:z@example.org" % PREFIX
    redis.cli("SET", zkey, "junk")
    assert ask(sock, "key=z@example.org\nsubject=Hi\n\n") == b"no"
    assert redis.cli("TYPE", zkey) == "zset"
    assert redis.cli("ZSCORE", zkey, "Hi") == "1"
    assert 0 < int(redis.cli("PTTL", zkey)) <= 60000


# --- Redis failing ----------------------------------------------------------

# limit 0: a shim that reaches Redis answers yes, the fail policy no, so
# the answer tells which one spoke.
LIMIT0 = "  default: { limit: 0, window: 60s }\n"


def test_redis_stopped_and_restarted(make_shim, redis):
    shim, sock = make_shim(rules=LIMIT0, timeout="100ms")
    assert ask(sock, "r@example.org\n") == b"yes"
    redis.stop()
    for _ in range(5):
        out, took = timed_ask(sock, "r@example.org\n")
        assert out == b"no"
        assert took < 0.1 + MARGIN, took
    wait_for(lambda: log_lines(shim, "event=redis_down"), what="redis_down")
    assert log_lines(shim, "event=fail_policy")
    assert "answer=no" in log_lines(shim, "event=fail_policy")[0]

    redis.start()
    wait_for(lambda: ask(sock, "r@example.org\n") == b"yes", timeout=10,
             interval=0.05, what="decisions to resume")
    # a fresh redis-server: the count started again
    assert int(redis.cli("GET", counter("r@example.org"))) >= 1
    assert len(log_lines(shim, "event=redis_up conn=shim ")) == 2


def test_redis_frozen_answers_after_timeout(make_shim, redis):
    """A SIGSTOPped server keeps its socket: only the shim's timer helps.
    The replies owed to the sessions that timed out come later, when it
    thaws: they must go nowhere, neither to new clients nor to freed
    memory."""
    shim, sock = make_shim(
        rules=LIMIT0 + "  ip: { limit: 100, window: 60s }\n", timeout="100ms")
    assert ask(sock, "f@example.org\n") == b"yes"
    redis.kill(signal.SIGSTOP)
    try:
        for _ in range(3):
            out, took = timed_ask(sock, "f@example.org\n")
            assert out == b"no"
            # it waited for redis.timeout, and not much longer
            assert 0.09 <= took < 0.1 + MARGIN, took
        assert any("redis did not answer in 100ms" in l
                   for l in log_lines(shim, "event=fail_policy"))
    finally:
        redis.kill(signal.SIGCONT)
    # rule ip is far from its limit: any "yes" now is a stale reply
    # delivered to the wrong client
    def thawed():
        assert ask(sock, "rule=ip\nkey=thaw\n\n") == b"no"
        return redis.cli("EXISTS", counter("thaw", "ip")) == "1"

    wait_for(thawed, timeout=10, interval=0.05, what="decisions to resume")
    for _ in range(5):
        assert ask(sock, "rule=ip\nkey=after\n\n") == b"no"
    assert redis.cli("GET", counter("after", "ip")) == "5"
    # the three late replies were counted in Redis, not answered
    assert redis.cli("GET", counter("f@example.org")) == "4"
    assert shim.proc.poll() is None


def test_on_error_yes(make_shim, redis):
    shim, sock = make_shim(on_error="yes", rules="  default: { limit: 100, "
                           "window: 60s }\n")
    assert ask(sock, "y@example.org\n") == b"no"
    redis.stop()
    out, took = timed_ask(sock, "y@example.org\n")
    assert out == b"yes"
    assert took < 0.1 + MARGIN, took


def test_noscript_recovery(make_shim, redis):
    shim, sock = make_shim()
    assert ask(sock, "n@example.org\n") == b"no"
    assert ask(sock, "n@example.org\n") == b"no"
    assert redis.cli("SCRIPT", "FLUSH") == "OK"
    assert ask(sock, "n@example.org\n") == b"no"
    assert ask(sock, "n@example.org\n") == b"yes"
    assert redis.cli("GET", counter("n@example.org")) == "4"
    assert log_lines(shim, "event=script_missing script=count action=reload")
    st = stats(shim)
    assert st["fail_policy"] == 0 and st["decisions"] == 4


def test_noscript_with_requests_in_flight(make_shim, redis):
    shim, sock = make_shim(rules=LIMIT0)
    assert ask(sock, "m@example.org\n") == b"yes"
    redis.cli("SCRIPT", "FLUSH")
    answers = hammer([sock], "m@example.org\n", per_thread=5,
                     threads_per_sock=4)
    assert answers == [b"yes"] * 20
    assert redis.cli("GET", counter("m@example.org")) == "21"
    assert stats(shim)["fail_policy"] == 0


# --- bad clients ------------------------------------------------------------

BAD_REQUESTS = {
    "bare key too long": (b"x" * 600 + b"\n", "key longer than 512 bytes"),
    "no newline, too long": (b"x" * 5000, "key longer than 512 bytes"),
    "request too long": (b"key=a@example.org\nsubject=" + b"s" * 5000 +
                         b"\n\n", "request longer than 4096 bytes"),
    "unknown rule": (b"rule=nope\nkey=a@example.org\n\n", "unknown rule nope"),
    "unknown attribute": (b"key=a@example.org\ncolour=blue\n\n",
                          "unknown attribute"),
    "duplicate attribute": (b"key=a@example.org\nkey=b@example.org\n\n",
                            "attribute key given twice"),
    "binary rule": (b"rule=\xff\x00\x1b[2J\nkey=a@example.org\n\n",
                    r"unknown rule \xff\x00\x1b[2J"),
    "no key": (b"rule=ip\nsubject=x\n\n", "attribute block without key="),
}


@pytest.mark.parametrize("on_error", ["no", "yes"])
@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request(make_shim, redis, rdb, case, on_error):
    data, reason = BAD_REQUESTS[case]
    shim, sock = make_shim(on_error=on_error)
    assert ask(sock, data) == on_error.encode()
    warned = wait_for(lambda: log_lines(shim, "event=bad_request"),
                      what="the bad_request warning")
    assert reason in warned[0]
    assert "answer=%s" % on_error in warned[0]
    # only the client's words are quoted: no raw control bytes in the log
    raw = open(shim.logpath, "rb").read()
    assert b"\x00" not in raw and b"\x1b" not in raw and b"\xff" not in raw
    # nothing was counted, and the shim goes on serving
    assert [k for k in rdb.keys() if k != STREAM.encode()] == []
    assert ask(sock, "good@example.org\n") == b"no"
    assert rdb.cmd("GET", counter("good@example.org")) == b"1"


def test_bad_requests_counted_and_warnings_limited(make_shim, redis):
    shim, sock = make_shim()
    for data, _ in BAD_REQUESTS.values():
        assert ask(sock, data) == b"no"
    st = stats(shim)
    assert st["bad_requests"] == len(BAD_REQUESTS)
    assert st["decisions"] == 0 and st["fail_policy"] == 0
    # one client must not flood syslog: the rest wait for the summary
    assert len(log_lines(shim, "event=bad_request")) == 1


def test_silent_clients_dropped(make_shim, redis):
    shim, sock = make_shim(client_timeout="200ms")
    silent = []
    for i in range(6):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(sock)
        if i == 0:
            s.sendall(b"half-a-line@exa")   # started and stalled
        silent.append((s, time.monotonic()))
    try:
        # everybody else is served, promptly, while they hang on
        for i in range(10):
            out, took = timed_ask(sock, "busy%d@example.org\n" % i)
            assert out == b"no"
            assert took < MARGIN, took
        for s, t0 in silent:
            # answered the fail policy (on_error "no"), then closed
            assert read_all(s) == b"no"
            s.close()
            took = time.monotonic() - t0
            assert 0.15 <= took < 0.2 + 1.0, took
    finally:
        for s, _ in silent:
            s.close()
    assert stats(shim)["client_timeouts"] == 6
    assert log_lines(shim, "event=client_timeout")
    # nothing was counted for them
    assert redis.cli("EXISTS", counter("half-a-line@exa")) == "0"


# --- configuration ----------------------------------------------------------

def check_config(conf):
    return subprocess.run([SHIM, "-n", "-c", conf], capture_output=True,
                          text=True, timeout=10)


def test_check_good_config(tmp, redis):
    conf, sock = shim_config(tmp, redis.sock)
    r = check_config(conf)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "%s: configuration OK (2 rules)\n" % conf
    assert r.stderr == ""
    # -n opens nothing
    assert not os.path.exists(sock)


def line_of(conf, text):
    """The line number (from 1) of the first line containing text."""
    for i, line in enumerate(open(conf).read().splitlines()):
        if text in line:
            return i + 1
    raise AssertionError("%r not in %s" % (text, conf))


@pytest.mark.parametrize("rules,marker,what", [
    ("  default: { limit: 3, window: 60s }\n  ip: { limit: 2 }\n", "ip:",
     "rules.ip: window is required"),
    ("  default: { limit: many, window: 60s }\n", "many",
     "rules.default.limit: must be a whole number, 0 or more"),
    ("  default: { limit: 3, window: 60 }\n", "window: 60 ",
     "rules.default.window: must be a duration such as 300s or 1h"),
    ("  ip: { limit: 3, window: 60s }\n", "rules:",
     "rules: a rule named \"default\" is needed (bare requests are counted "
     "under it)"),
])
def test_check_bad_config(tmp, redis, rules, marker, what):
    conf, sock = shim_config(tmp, redis.sock, rules=rules)
    r = check_config(conf)
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr == "senderwatch-shim: %s:%d: %s\n" % (
        conf, line_of(conf, marker), what)


def test_check_config_with_unknown_key(tmp, redis):
    conf, sock = shim_config(tmp, redis.sock, extra="alerts:\n  tooo: x\n")
    n = open(conf).read().count("\n")
    r = check_config(conf)
    assert r.returncode == 1
    assert r.stderr == 'senderwatch-shim: %s:%d: alerts: unknown option ' \
        '"tooo"\n' % (conf, n)


def test_reload(make_shim, redis, tmp):
    shim, sock = make_shim()           # default limit 3
    assert [ask(sock, "h1@example.org\n") for _ in range(4)] == \
        [b"no", b"no", b"no", b"yes"]

    shim_config(tmp, redis.sock,
                rules="  default: { limit: 1, window: 60s }\n")
    shim.signal(signal.SIGHUP)
    wait_for(lambda: log_lines(shim, "event=reload rules=1"),
             what="the reload")
    assert [ask(sock, "h2@example.org\n") for _ in range(2)] == \
        [b"no", b"yes"]

    # a broken file: logged with file:line, the running config kept
    conf, _ = shim_config(tmp, redis.sock,
                          rules="  default: { limit: oops, window: 1s }\n")
    shim.signal(signal.SIGHUP)
    failed = wait_for(lambda: log_lines(shim, "event=reload_failed"),
                      what="the failed reload")
    assert 'error="%s:%d: rules.default.limit: must be a whole number, ' \
        '0 or more" action=keep_old' % (conf, line_of(conf, "oops")) \
        in failed[0]
    assert shim.proc.poll() is None
    assert [ask(sock, "h3@example.org\n") for _ in range(2)] == \
        [b"no", b"yes"]

    # and the next good file is taken
    shim_config(tmp, redis.sock,
                rules="  default: { limit: 2, window: 60s }\n")
    shim.signal(signal.SIGHUP)
    wait_for(lambda: len(log_lines(shim, "event=reload rules=1")) == 2,
             what="the second reload")
    assert [ask(sock, "h4@example.org\n") for _ in range(3)] == \
        [b"no", b"no", b"yes"]


# --- keys are data, never syntax --------------------------------------------

def test_keys_escaped_in_redis(make_shim, redis, rdb, events):
    shim, sock = make_shim(rules=LIMIT0 + "  ip: { limit: 0, window: 60s }\n")
    cases = [
        (b"{evil}@example.org\n", b"%7Bevil%7D@example.org"),
        (b"cr\rin@example.org\n", b"cr%0Din@example.org"),
        (b"nul\x00in@example.org\n", b"nul%00in@example.org"),
        (b"two words@example.org\n", b"two%20words@example.org"),
        (b"\xff\xfe@example.org\n", b"%FF%FE@example.org"),
        # a literal escape must not alias the byte it spells
        (b"%7Bevil%7D@example.org\n", b"%257Bevil%257D@example.org"),
        (b"rule=ip\nkey={1}:x\n\n", None),
    ]
    for data, _ in cases:
        assert ask(sock, data) == b"yes"
    escaped = [("default", esc) for _, esc in cases if esc is not None]
    escaped.append(("ip", b"%7B1%7D:x"))
    # the counter, and the marker that makes one event per crossing
    want = {("%s:%s%s:" % (PREFIX, kind, rule)).encode() + esc
            for rule, esc in escaped for kind in ("", "crossed:")}
    want.add(STREAM.encode())
    assert rdb.keys() == want
    for k in rdb.keys():
        assert not set(k) & set(b"{}\r\n\x00 ")

    # the events carry the escaped key, as alerters and mails will show it
    keys = {f["key"] for _, f in stream_entries(rdb)}
    assert keys == {esc.decode() for _, esc in cases if esc is not None} | \
        {"%7B1%7D:x"}
    assert {e["key"] for e in events.drain()} == keys
    raw = open(shim.logpath, "rb").read()
    assert b"\r" not in raw and b"\x00" not in raw and b"\xff" not in raw


# --- the listening socket ---------------------------------------------------

def test_refuses_a_socket_in_use(make_shim, redis, tmp):
    a, sock = make_shim("a")
    conf = write_config(os.path.join(tmp, "b.yaml"), open(a.conf).read())
    b = Daemon(SHIM, conf, tmp, "b").start()
    try:
        assert b.proc.wait(timeout=10) == 1
    finally:
        b.stop()
    assert "%s: another process is serving this socket" % sock in b.log()
    # the first shim was not disturbed
    assert os.path.exists(sock)
    assert ask(sock, "still@example.org\n") == b"no"
    assert redis.cli("GET", counter("still@example.org")) == "1"


def test_stale_socket_replaced(make_shim, redis, tmp):
    path = os.path.join(tmp, "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()                       # the file stays; nobody listens
    with pytest.raises(ConnectionRefusedError):
        ask(path, "x\n")
    shim, sock = make_shim("stale")
    assert sock == path
    assert ask(sock, "fresh@example.org\n") == b"no"


def test_not_a_socket_is_left_alone(redis, tmp):
    """A typo in listen: must never delete a file that isn't a socket."""
    conf, sock = shim_config(tmp, redis.sock, name="typo")
    with open(sock, "w") as f:
        f.write("precious\n")
    d = Daemon(SHIM, conf, tmp, "typo").start()
    try:
        assert d.proc.wait(timeout=10) == 1
    finally:
        d.stop()
    assert open(sock).read() == "precious\n"
    assert "%s: exists and is not a socket" % sock in d.log()


def test_suppressed_warnings_are_counted_when_the_flood_stops(make_shim, redis):
    """A burst of refusals logs one line at once, and the count of the rest
    when the ten-second period ends, even if nothing else comes."""
    shim, sock = make_shim()
    for _ in range(3):
        assert ask(sock, "rule=nope\nkey=x@example.org\n\n") == b"no"
    assert len(log_lines(shim, "event=bad_request")) == 1
    wait_for(lambda: any("suppressed=2" in l
                         for l in log_lines(shim, "event=bad_request")),
             timeout=15, what="the count of the suppressed warnings")
    assert len(log_lines(shim, "event=bad_request")) == 2
