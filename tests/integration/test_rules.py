"""Rules against a real redis-server: several limits, the three algorithms
at their boundaries, cost, peek, shadow mode, normalisation, lists and
overrides from the config and from Redis, and Postfix's policy protocol.

Windows are short and waits poll Redis's own clock or state; the only
timed assertions are about Redis's TIME, which the script itself uses.
"""
import json
import os
import socket
import subprocess
import time

from conftest import ROOT, Resp, ask, wait_for

RULES = """\
  default: { limit: 3, window: 60s }
  multi:
    limits:
      - { limit: 2, window: 400ms }
      - { limit: 5, window: 1h }
  fixed: { limit: 2, window: 300ms }
  three:
    limits:
      - { limit: 1, window: 5m }
      - { limit: 2, window: 1h }
      - { limit: 3, window: 1d }
  costly: { limit: 5, window: 60s }
  strict: { limit: 2, window: 60s, count_denied: no }
  slide: { algorithm: sliding, limit: 3, window: 1s }
  bucket: { algorithm: gcra, limit: 10, window: 1s, burst: 3 }
  trial: { limit: 1, window: 60s, mode: shadow }
  users:
    limit: 1
    window: 60s
    normalize: [ lowercase, strip_tag ]
    allow: [ "*@trusted.example", 198.51.100.0/24 ]
    deny: [ spammer@example.net, 203.0.113.0/24 ]
    override: { ceo@example.org: allow, bob@example.org: block, carol@example.org: x3 }
  postfix:
    limit: 2
    window: 60s
    postfix: { key: sasl_username, action: "REJECT 5.7.1 slow down" }
  pfsender: { limit: 1, window: 60s }
"""

STREAM = "senderwatch:stream"


def block(rule, key, **attrs):
    lines = ["rule=" + rule, "key=" + key]
    lines += ["%s=%s" % kv for kv in attrs.items()]
    return "\n".join(lines) + "\n\n"


def answers(sock, rule, key, n, **attrs):
    return [ask(sock, block(rule, key, **attrs)).decode() for _ in range(n)]


def redis_ms(redis):
    sec, usec = redis.cli("TIME").split()
    return int(sec) * 1000 + int(usec) // 1000


def stream_entries(redis):
    out = subprocess.run(["redis-cli", "-s", redis.sock, "--no-raw", "XRANGE",
                          STREAM, "-", "+"], capture_output=True, text=True).stdout
    return out


def test_several_limits_any_exceeded_says_yes_and_event_names_it(make_shim, redis):
    _, sock = make_shim(rules=RULES)
    # 2 per 400 ms and 5 per hour, checked and counted in one call
    assert answers(sock, "multi", "m", 3) == ["no", "no", "yes"]
    assert redis.cli("GET", "senderwatch:multi.400ms:m") == "3"
    assert redis.cli("GET", "senderwatch:multi.1h:m") == "3"
    wait_for(lambda: redis.cli("EXISTS", "senderwatch:multi.400ms:m") == "0",
             what="the short window to end")
    # the short window starts again; the hourly one keeps counting
    assert answers(sock, "multi", "m", 2) == ["no", "no"]
    # the 6th hit is over both: 3 > 2 in the new short window, 6 > 5 an hour
    assert answers(sock, "multi", "m", 1) == ["yes"]
    lines = stream_entries(redis).splitlines()
    li = [lines[i + 1] for i, l in enumerate(lines) if l.endswith('"window_ms"')]
    # one event per limit per window: the short window twice, the hour once
    assert [x.split()[-1].strip('"') for x in li] == ["400", "400", "3600000"]


def test_three_windows_are_one_command_each_request(make_shim, redis):
    """However many windows a rule has, a decision is one EVALSHA from the
    shim: what Redis runs inside the script is MONITOR's "lua" client."""
    _, sock = make_shim(rules=RULES)
    mon = Resp(redis.sock)
    mon.monitor_start()
    # no, then over the 5 m window, then over two of them: all three paths
    assert answers(sock, "three", "t", 4) == ["no", "yes", "yes", "yes"]
    lines = mon.monitor_lines(redis.sock)
    from_shim = [l for l in lines[:-1] if "lua]" not in l]
    assert len(from_shim) == 4, from_shim
    assert all('"EVALSHA"' in l for l in from_shim), from_shim
    # each of them counted all three windows
    for w in ("5m", "1h", "1d"):
        assert redis.cli("GET", "senderwatch:three.%s:t" % w) == "4"
    assert sum('"INCRBY"' in l for l in lines) == 12


def test_fixed_window_starts_at_first_hit_and_expires(make_shim, redis):
    _, sock = make_shim(rules=RULES)
    assert answers(sock, "fixed", "f", 3) == ["no", "no", "yes"]
    ttl = int(redis.cli("PTTL", "senderwatch:fixed:f"))
    assert 0 < ttl <= 300
    wait_for(lambda: redis.cli("EXISTS", "senderwatch:fixed:f") == "0",
             what="window end")
    assert answers(sock, "fixed", "f", 1) == ["no"]
    assert redis.cli("GET", "senderwatch:fixed:f") == "1"


def test_cost_counts_recipients(make_shim, redis):
    _, sock = make_shim(rules=RULES)
    assert answers(sock, "costly", "c", 1, cost=3) == ["no"]    # 3 <= 5
    assert answers(sock, "costly", "c", 1, cost=2) == ["no"]    # 5 <= 5
    assert answers(sock, "costly", "c", 1, cost=1) == ["yes"]   # 6 > 5
    assert redis.cli("GET", "senderwatch:costly:c") == "6"
    # cost 0 checks without adding
    assert answers(sock, "costly", "d", 1, cost=0) == ["no"]
    assert redis.cli("GET", "senderwatch:costly:d") == "0"


def test_count_denied_no_leaves_the_count_alone(make_shim, redis):
    _, sock = make_shim(rules=RULES)
    assert answers(sock, "strict", "s", 5) == ["no", "no", "yes", "yes", "yes"]
    assert redis.cli("GET", "senderwatch:strict:s") == "2"
    # and the default rule counts denied attempts, as the article did
    assert answers(sock, "default", "d", 5)[-1] == "yes"
    assert redis.cli("GET", "senderwatch:default:d") == "5"


def test_peek_answers_without_counting(make_shim, redis):
    _, sock = make_shim(rules=RULES)
    assert answers(sock, "costly", "p", 1, mode="peek") == ["no"]
    assert redis.cli("EXISTS", "senderwatch:costly:p") == "0"
    answers(sock, "costly", "p", 1, cost=5)
    # the next one would be over: peek says so, and still counts nothing
    assert answers(sock, "costly", "p", 2, mode="peek") == ["yes", "yes"]
    assert redis.cli("GET", "senderwatch:costly:p") == "5"


def test_sliding_window_has_no_burst_at_the_edge(make_shim, redis):
    _, sock = make_shim(rules=RULES)
    w = 1000

    def elapsed():
        return redis_ms(redis) % w
    # three hits late in one bucket...
    wait_for(lambda: 600 <= elapsed() < 700, what="late in a bucket",
             interval=0.005)
    start = redis_ms(redis) // w
    assert answers(sock, "slide", "s", 3) == ["no", "no", "no"]
    assert answers(sock, "slide", "s", 1) == ["yes"]
    # ...and early in the next one they still weigh: no fresh burst
    wait_for(lambda: redis_ms(redis) // w == start + 1 and elapsed() < 150,
             what="the next bucket", interval=0.005)
    assert answers(sock, "slide", "s", 1) == ["yes"]
    # two windows later the past is forgotten
    wait_for(lambda: redis_ms(redis) // w >= start + 3, timeout=5,
             what="two buckets later")
    assert answers(sock, "slide", "s", 1) == ["no"]
    assert int(redis.cli("PTTL", "senderwatch:slide:s")) > 0


def test_gcra_burst_then_steady_rate(make_shim, redis):
    _, sock = make_shim(rules=RULES)
    # 10 per second = one per 100 ms, with a burst of 3
    assert answers(sock, "bucket", "g", 4) == ["no", "no", "no", "yes"]
    t0 = time.monotonic()
    wait_for(lambda: ask(sock, block("bucket", "g")) == b"no", timeout=3,
             what="a token to come back", interval=0.01)
    waited = time.monotonic() - t0
    # denied requests did not push it further out (count_denied: no)
    assert 0.03 <= waited <= 0.6, waited
    assert int(redis.cli("PTTL", "senderwatch:bucket:g")) > 0


def test_shadow_counts_announces_and_says_no(make_shim, redis):
    _, sock = make_shim(rules=RULES)
    assert answers(sock, "trial", "t", 3) == ["no", "no", "no"]
    assert redis.cli("GET", "senderwatch:trial:t") == "3"
    entries = stream_entries(redis)
    assert '"shadow"' in entries
    lines = entries.splitlines()
    i = [n for n, l in enumerate(lines) if l.endswith('"shadow"')][0]
    assert lines[i + 1].split()[-1].strip('"') == "1"
    assert entries.count('"rule"') == 1      # one event, not one per hit


def test_normalisation_lists_and_config_overrides(make_shim, redis):
    _, sock = make_shim(rules=RULES)
    assert ask(sock, block("users", "Alice+News@Example.ORG")) == b"no"
    assert ask(sock, block("users", "alice@example.org")) == b"yes"
    assert redis.cli("GET", "senderwatch:users:alice@example.org") == "2"
    # lists need no Redis and count nothing
    for key in ["x@trusted.example", "X@TRUSTED.example", "198.51.100.9"]:
        assert answers(sock, "users", key, 3) == ["no"] * 3
    for key in ["spammer@example.net", "203.0.113.200"]:
        assert answers(sock, "users", key, 1) == ["yes"]
    assert redis.cli("EXISTS", "senderwatch:users:203.0.113.200") == "0"
    assert answers(sock, "users", "ceo@example.org", 3) == ["no"] * 3
    assert answers(sock, "users", "bob@example.org", 1) == ["yes"]
    # carol's limit is tripled: 3 allowed, the 4th is over
    assert answers(sock, "users", "carol@example.org", 4) == ["no"] * 3 + ["yes"]


def test_runtime_overrides_appear_announce_and_expire(make_shim, redis):
    _, sock = make_shim(rules=RULES)
    okey = "senderwatch:override:default:dave@example.org"
    assert answers(sock, "default", "dave@example.org", 4)[-1] == "yes"
    sub = subprocess.Popen(["redis-cli", "-s", redis.sock, "SUBSCRIBE",
                            "senderwatch:events"], stdout=subprocess.PIPE, text=True)
    try:
        assert sub.stdout.readline().strip() == "subscribe"
        for _ in range(2):
            sub.stdout.readline()
        out = subprocess.run(
            ["redis-cli", "-s", redis.sock, "--eval",
             os.path.join(ROOT, "scripts", "override.lua"), okey, ",", "allow", "1",
             "senderwatch:events", "default", "dave@example.org", "test: ticket 1"],
            capture_output=True, text=True)
        assert out.stdout.strip() == "OK", out
        lines = [sub.stdout.readline().strip() for _ in range(3)]
        event = json.loads(lines[2])
        assert event["type"] == "override" and event["action"] == "allow"
        assert event["key"] == "dave@example.org" and event["ttl"] == 1
    finally:
        sub.kill()
        sub.wait()
    assert answers(sock, "default", "dave@example.org", 2) == ["no", "no"]
    wait_for(lambda: redis.cli("EXISTS", okey) == "0", what="override to expire")
    assert answers(sock, "default", "dave@example.org", 1) == ["yes"]
    # block, and a factor; plain SET works too (it is just not announced)
    redis.cli("SET", "senderwatch:override:default:erin@example.org", "block", "EX", "60")
    assert answers(sock, "default", "erin@example.org", 1) == ["yes"]
    redis.cli("SET", "senderwatch:override:default:fay@example.org", "x2", "EX", "60")
    assert answers(sock, "default", "fay@example.org", 7) == ["no"] * 6 + ["yes"]


def test_count_lua_by_hand_as_the_readme_shows(redis):
    """The README's redis-cli --eval line works, and a cost INCRBY would
    refuse is an error that leaves the counter alone."""
    def run(cost):
        return subprocess.run(
            ["redis-cli", "-s", redis.sock, "--eval",
             os.path.join(ROOT, "scripts", "count.lua"),
             "senderwatch:stream",
             "senderwatch:subjects:default:alice@example.org",
             "senderwatch:override:default:alice@example.org",
             "senderwatch:default:alice@example.org",
             "senderwatch:crossed:default:alice@example.org", ",",
             "cf011", "1",
             "default mta1 senderwatch:events 10000 senderwatch-alerters 29 18",
             "20", "300000", "20", cost, ""],
            capture_output=True, text=True).stdout.split()
    # Under the limit: the count alone.
    assert run("1") == ["1"]
    assert run("19") == ["20"]
    for bad in ("1.5", "007", "-1", "1e3", "x"):
        assert "cost must be a whole number" in " ".join(run(bad)), bad
    assert redis.cli("GET", "senderwatch:default:alice@example.org") == "20"
    assert 0 < int(redis.cli("PTTL", "senderwatch:default:alice@example.org")) <= 300000
    # Over: held (hold_ms) and counted alike (count_ms) to the window's end.
    over = run("1")
    assert over[:2] == ["1", "21"] and over[7] == over[8]
    assert int(redis.cli("PTTL", "senderwatch:default:alice@example.org")) \
        <= int(over[7]) <= 300000


def test_count_ms_skips_a_window_not_mended_yet(redis):
    """Over its 5-minute limit, with its hour's counter set by another tool
    without a TTL (not mended yet: 3 of 1000 is below a sixteenth): the
    request is counted to the 5 minutes' end (count_ms), not to a window
    that never ends (PTTL -1)."""
    five = "senderwatch:default.5m:bob@example.org"
    hour = "senderwatch:default.1h:bob@example.org"
    redis.cli("SET", five, "20", "PX", "300000")
    redis.cli("SET", hour, "2")
    out = subprocess.run(
        ["redis-cli", "-s", redis.sock, "--eval",
         os.path.join(ROOT, "scripts", "count.lua"),
         "senderwatch:stream",
         "senderwatch:subjects:default:bob@example.org",
         "senderwatch:override:default:bob@example.org",
         five, "senderwatch:crossed:default.5m:bob@example.org",
         hour, "senderwatch:crossed:default.1h:bob@example.org", ",",
         "cf012", "1",
         "default mta1 senderwatch:events 10000 senderwatch-alerters 29 18",
         "20", "300000", "20", "1000", "3600000", "1000", "1", ""],
        capture_output=True, text=True).stdout.split()
    assert out[:2] == ["1", "21"], out
    assert redis.cli("PTTL", hour) == "-1"
    assert 0 < int(out[8]) == int(out[7]) <= 300000, out


def test_bad_rule_attributes_are_refused(make_shim, redis):
    shim, sock = make_shim(rules=RULES)
    assert ask(sock, block("costly", "k", cost="-1")) == b"no"
    assert ask(sock, block("costly", "k", mode="sometimes")) == b"no"
    assert redis.cli("EXISTS", "senderwatch:costly:k") == "0"
    log = wait_for(lambda: "cost must be" in shim.log() and shim.log(),
                   what="the refusal in the log")
    assert "event=bad_request" in log


class Policy:
    """Postfix's side of the policy protocol: one connection, many requests."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(5)
        self.s.connect(path)
        self.buf = b""

    def ask(self, **attrs):
        req = "request=smtpd_access_policy\nprotocol_state=RCPT\n"
        req += "".join("%s=%s\n" % kv for kv in attrs.items()) + "\n"
        self.s.sendall(req.encode())
        while b"\n\n" not in self.buf:
            b = self.s.recv(4096)
            assert b, "the shim closed the policy connection"
            self.buf += b
        reply, self.buf = self.buf.split(b"\n\n", 1)
        return reply.decode()

    def close(self):
        self.s.close()


def test_postfix_policy_protocol_keeps_the_connection(make_shim, redis):
    _, sock = make_shim(rules=RULES)
    p = Policy(sock)
    try:
        # no policy_context: the rule named "postfix"; its key: sasl_username
        got = [p.ask(sender="x@example.org", sasl_username="pat") for _ in range(3)]
        assert got == ["action=DUNNO", "action=DUNNO", "action=REJECT 5.7.1 slow down"]
        assert redis.cli("GET", "senderwatch:postfix:pat") == "3"
        # not authenticated: nothing to count under that rule
        assert p.ask(sender="x@example.org") == "action=DUNNO"
        # policy_context picks another rule, with its default key (sender)
        got = [p.ask(sender="q@example.org", policy_context="pfsender") for _ in range(2)]
        assert got[0] == "action=DUNNO"
        assert got[1].startswith("action=DEFER_IF_PERMIT")
        assert redis.cli("GET", "senderwatch:pfsender:q@example.org") == "2"
    finally:
        p.close()


def pipelined(sock, data, n):
    """Send several policy requests at once, as one write, on one
    connection; return the first n answers (without their empty line)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(sock)
    s.sendall(data)
    buf = b""
    while buf.count(b"\n\n") < n:
        b = s.recv(65536)
        assert b, buf
        buf += b
    s.close()
    return buf.split(b"\n\n")[:n]


def test_postfix_pipelined_requests_each_get_an_answer(make_shim, redis):
    _, sock = make_shim(rules=RULES)
    req = b"request=smtpd_access_policy\nsasl_username=pip\nsender=a@b\n\n"
    assert pipelined(sock, req * 3, 3) == [b"action=DUNNO", b"action=DUNNO",
                                           b"action=REJECT 5.7.1 slow down"]


def test_postfix_pipelined_answers_without_redis_in_order(make_shim, redis):
    """Pipelined requests that lists answer at once (no Redis) are each
    answered, in order, on the one connection."""
    _, sock = make_shim(rules=RULES)
    deny = b"request=smtpd_access_policy\npolicy_context=users\nsender=spammer@example.net\n\n"
    allow = b"request=smtpd_access_policy\npolicy_context=users\nsender=x@trusted.example\n\n"
    assert pipelined(sock, (deny + allow) * 50, 100) == [
        b"action=DEFER_IF_PERMIT 4.7.1 too much mail from this sender, "
        b"try again later",
        b"action=DUNNO"] * 50
    assert redis.cli("EXISTS", "senderwatch:users:spammer@example.net") == "0"
