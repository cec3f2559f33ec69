"""Several decisions in one count.lua call, against a real redis-server.

The shim sends the decisions of one loop turn that share a rule and a
shard as one call (decide.c); count.lua decides each in turn.  Checked
here: a burst of concurrent requests is batched and every count, answer
and crossing is what one call per decision would have made; by hand, a
call's decisions are each answered alone (one's error is its own), a
full Redis refuses them all before any write, and a batch answers as the
same decisions sent one by one, with the keys declared, as a node's
call (no KEYS; what the shim sends a Cluster's master) or as a named
call (the stream the only key, each decision named by its key alone;
what it sends a single Redis), their costs each one's or given once.
"""
import os
import socket
import threading
import time

import pytest

from conftest import (ROOT, VALGRIND, Resp, RespError, ask, command_calls,
                      DEFAULT_RULES, control, log_lines, read_all,
                      stats, wait_for)

PREFIX = "senderwatch"
STREAM = PREFIX + ":stream"
HEAD = len(PREFIX + ":override:default:")
META = "default mta1 senderwatch:events 10000 senderwatch-alerters %d %d" % (
    HEAD, len(STREAM))


def burst(sock, keys, timeout=10.0):
    """Each key asked once, all at the same time: every connection made
    and its request written before any answer is read (as many MTAs'
    Exims at once), so the shim finds them in the same loop turns."""
    conns = []
    for k in keys:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(timeout)
        s.connect(sock)
        s.sendall(k.encode() + b"\n")
        s.shutdown(socket.SHUT_WR)
        conns.append(s)
    answers = [read_all(s) for s in conns]
    for s in conns:
        s.close()
    return answers


def test_a_burst_is_batched_and_counts_as_one_call_each(make_shim, redis,
                                                          rdb):
    """40 keys asked 6 times each in bursts of one request per key,
    limit 3: every key answers no, no, no, yes, yes, yes, counts 6 in
    Redis and has one crossing in the stream, as one call per decision
    would make; and the calls carried several decisions each, as named
    calls (to a single Redis), the one cost they share given once."""
    shim, sock = make_shim(rules="  default: { limit: 3, window: 60s }\n")
    keys = ["b%02d@example.org" % i for i in range(40)]
    mon = Resp(redis.sock)
    mon.monitor_start()
    before = stats(shim)
    got = {k: [] for k in keys}
    for _ in range(6):
        for k, a in zip(keys, burst(sock, keys)):
            got[k].append(a)
    after = stats(shim)
    lines = mon.monitor_lines(redis.sock)
    calls = [l.split('" "') for l in lines if '"EVALSHA"' in l]
    assert calls and all(c[2:4] == ["1", STREAM] for c in calls), calls[:3]
    # u: the one cost given once (then k and a digit a decision, where
    # the override cache knows some: bursts after the first).
    assert any(c[4].startswith("cf011u") for c in calls), calls[:3]
    for k in keys:
        assert got[k] == [b"no"] * 3 + [b"yes"] * 3, (k, got[k])
        assert rdb.cmd("GET", "%s:default:%s" % (PREFIX, k)) == b"6"
    assert rdb.cmd("XLEN", STREAM) == len(keys)
    calls = after["script_calls"] - before.get("script_calls", 0)
    carried = after["script_decisions"] - before.get("script_decisions", 0)
    assert carried == 6 * len(keys)
    print("\nFIGURE batch: %d decisions in %d count.lua calls (%.1f a call)"
          % (carried, calls, carried / calls))
    # 240 requests written before any is answered cannot all be one loop
    # turn each, not even under valgrind.
    assert calls < carried
    assert after.get("fail_policy", 0) == before.get("fail_policy", 0)


# redis.batch_wait in the tests below: long against the 2 ms between the
# paced requests and the few steps that set a test up, short against
# their redis.timeout (200 ms).  They measure waits: not under valgrind.
WAIT_MS = 50
TIMEOUT = "200ms"
timing = pytest.mark.skipif(VALGRIND, reason="waits of milliseconds")


def flood(sock, key, stop, asked):
    """A sender far over its limit, asked again and again until stop is
    set: the near cache answers it, without Redis."""
    while not stop.is_set():
        assert ask(sock, key.encode() + b"\n") == b"yes"
        asked.append(1)


def paced(sock, keys, gap=0.002):
    """Each key asked on its own connection, gap seconds apart (so each
    arrives in a loop turn of its own), the answers read once all are
    asked: [(answer, seconds from its asking to its answer)]."""
    conns = []
    for k in keys:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(sock)
        conns.append((s, time.monotonic()))
        s.sendall(k.encode() + b"\n")
        s.shutdown(socket.SHUT_WR)
        time.sleep(gap)
    out = []
    for s, t0 in conns:
        a = read_all(s)
        out.append((a, time.monotonic() - t0))
        s.close()
    return out


def calls_with(lines, keys):
    """The count.lua calls (MONITOR lines) that carried any of keys."""
    return [l for l in lines if '"EVALSHA"' in l and
            any('"%s"' % k in l for k in keys)]


def over_limit(sock, key):
    """key asked until over its limit (3): the near cache holds it."""
    for want in [b"no"] * 3 + [b"yes"]:
        assert ask(sock, key.encode() + b"\n") == want


def blocked(rdb):
    info = rdb.cmd("INFO", "clients").decode()
    return int(info.split("blocked_clients:")[1].split()[0])


def waiting_in_redis(sock, rdb, key):
    """key asked on a connection left open while its call waits in Redis
    (CLIENT PAUSE WRITE, until the caller's CLIENT UNPAUSE: a pause's
    own end is only noticed by Redis's cron, up to 100 ms late)."""
    rdb.cmd("CLIENT", "PAUSE", "2000", "WRITE")
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(sock)
    try:
        s.sendall(key.encode() + b"\n")
        s.shutdown(socket.SHUT_WR)
        wait_for(lambda: blocked(rdb) >= 1, interval=0.001,
                 what="the call to wait in Redis")
    except BaseException:
        rdb.cmd("CLIENT", "UNPAUSE")
        s.close()
        raise
    return s


def flood_and_pace(make_shim, redis, rdb, batch_wait, tag):
    """While a sender over its limit floods the shim (the near cache
    answering it), one request waits in Redis (CLIENT PAUSE WRITE) while
    the flood is answered; then five others come, 2 ms apart.  The
    route is busy and others were answered without Redis while one
    waited on it, so with a batch_wait they should share a call.
    Returns (the count.lua calls that carried the five, stats before,
    after, [(answer, seconds)])."""
    shim, sock = make_shim(name="shim" + tag, near_cache=10000,
                           batch_wait=batch_wait, timeout=TIMEOUT)
    abuser = "abuser%s@example.org" % tag
    over_limit(sock, abuser)
    stop, asked = threading.Event(), []
    flooder = threading.Thread(target=flood, args=(sock, abuser, stop, asked))
    flooder.start()
    try:
        wait_for(lambda: len(asked) > 10, what="the flood under way")
        keys = ["w%d%s@example.org" % (i, tag) for i in range(5)]
        mon = Resp(redis.sock)
        mon.monitor_start()
        before = stats(shim)
        first = waiting_in_redis(sock, rdb, "first%s@example.org" % tag)
        n = len(asked)
        wait_for(lambda: len(asked) > n + 5, interval=0.001,
                 what="the flood answered while one waits on Redis")
        rdb.cmd("CLIENT", "UNPAUSE")
        assert read_all(first) == b"no"
        first.close()
        got = paced(sock, keys)
        after = stats(shim)
        lines = mon.monitor_lines(redis.sock)
    finally:
        stop.set()
        flooder.join()
    assert [a for a, _ in got] == [b"no"] * 5, got
    for k in keys:
        assert rdb.cmd("GET", "senderwatch:default:" + k) == b"1", k
    assert after.get("fail_policy", 0) == before.get("fail_policy", 0)
    return calls_with(lines, keys), before, after, got


@timing
def test_a_busy_route_waits_for_company(make_shim, redis, rdb):
    """redis.batch_wait: with others answered by the near cache while a
    request waited on Redis, and a call just sent, five decisions asked
    2 ms apart share one call (two at worst, the machine stalling for
    most of the wait), each answered by Redis within the wait and a
    call's time; with batch_wait 0ms no call waits."""
    calls, before, after, got = flood_and_pace(
        make_shim, redis, rdb, "%dms" % WAIT_MS, "a")
    held = after["script_held"] - before.get("script_held", 0)
    slowest = max(t for _, t in got)
    print("\nFIGURE batch_wait %dms: 5 decisions 2 ms apart in %d call(s), "
          "%d held, slowest answered in %.1f ms" % (WAIT_MS, len(calls),
                                                   held, 1000 * slowest))
    assert 1 <= len(calls) <= 2, calls
    assert held >= 1, (before, after)
    # Held no longer than the wait: well within redis.timeout.
    assert slowest < WAIT_MS / 1000 + 0.1, got
    calls0, before, after, got = flood_and_pace(make_shim, redis, rdb,
                                                "0ms", "b")
    print("FIGURE batch_wait 0ms: the same in %d call(s)" % len(calls0))
    assert after["script_held"] == before.get("script_held", 0) == 0


def company(sock, rdb, abuser, key, linger=0.0, companion=None):
    """Company for the next decision, and its route busy: key's call
    waits in Redis (sent at once: nothing was before it) while abuser (a
    request) is answered by the near cache, linger seconds after the call
    went (or companion() is called instead); then Redis goes on and key
    is answered.  Returns when key's call began (it went after) and when
    abuser was asked."""
    # The near cache asks Redis again after 0.9 s at most (an override
    # shows within a second): the abuser learnt again first, Redis not
    # paused, and nobody waiting on it (no company yet).
    assert ask(sock, abuser) == b"yes"
    began = time.monotonic()
    p = waiting_in_redis(sock, rdb, key)
    try:
        time.sleep(linger)
        asked = time.monotonic()
        if companion is not None:
            companion()
        else:
            assert ask(sock, abuser) == b"yes"
    finally:
        rdb.cmd("CLIENT", "UNPAUSE")
    assert read_all(p) == b"no"
    p.close()
    return began, asked


def asking(sock, key):
    """key asked on a connection of its own, its answer read later."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(sock)
    s.sendall(key.encode() + b"\n")
    s.shutdown(socket.SHUT_WR)
    return s


# The abusers of the tests below: a rule that does not count denied
# requests, so that the near cache has nothing to flush (a flush is a
# call on the route, and would join or end a held batch).
STRICT_RULES = DEFAULT_RULES + "  strict: { limit: 3, window: 60s, " \
    "count_denied: no }\n"


def strict_abuser(sock, key):
    """key over the strict rule's limit, held by the near cache: the
    request to ask it again."""
    req = b"rule=strict\nkey=" + key.encode() + b"\n\n"
    assert [ask(sock, req) for _ in range(4)] == [b"no"] * 3 + [b"yes"]
    return req


@timing
def test_a_held_call_goes_when_its_wait_ends(make_shim, redis, rdb):
    """Nothing else happening, a held call goes when its wait ends (the
    wait's timer, not the next event, sends it): a request waits in
    Redis (CLIENT PAUSE WRITE) while another is answered without it; a
    third, on the route just busy, is held alone and answered by Redis
    in about the wait, not at redis.timeout by the fail policy.  Three
    times: the near cache's flush timer wakes the loop every 0.5 s, and
    one of its ticks could land in the bound by luck, not three."""
    shim, sock = make_shim(near_cache=10000, batch_wait="%dms" % WAIT_MS,
                           timeout=TIMEOUT)
    abuser = "alone-abuser@example.org"
    over_limit(sock, abuser)
    for i in range(3):
        time.sleep(2 * WAIT_MS / 1000)	# nothing before within a wait
        before = stats(shim)
        company(sock, rdb, abuser.encode() + b"\n",
                "waiting%d@example.org" % i)
        held = "held%d@example.org" % i
        t0 = time.monotonic()
        assert ask(sock, held.encode() + b"\n") == b"no"
        took = time.monotonic() - t0
        after = stats(shim)
        print("\nFIGURE a lone held call: answered in %.1f ms (batch_wait "
              "%d ms)" % (1000 * took, WAIT_MS))
        assert after["script_held"] - before.get("script_held", 0) == 1
        assert after.get("fail_policy", 0) == before.get("fail_policy", 0)
        assert rdb.cmd("GET", "senderwatch:default:" + held) == b"1"
        assert took < WAIT_MS / 1000 + 0.04, took


# A held batch goes at the first loop turn past its route's last call
# and a wait, or at its own opening and a wait (decide_hold()): a round of
# the tests below that took longer than this from its first step (before
# that call went) proves nothing, and is done again.
ROUND = 0.8 * WAIT_MS / 1000


def held(shim, before):
    return stats(shim)["script_held"] - before.get("script_held", 0)


def held_twins(shim, sock, rdb, abuser, name, twins):
    """Rounds of twins [(company()'s keywords, want, busy)]: each a
    decision asked right after company(), held (want 1) or not.  A round
    counts where each decision was asked within half a wait of its
    company (still fresh) and, busy, within ROUND of its route's last
    call (busy for sure); three of ten must count."""
    rounds = 0
    for i in range(10):
        fresh = True
        for kw, want, busy in twins:
            time.sleep(2 * WAIT_MS / 1000)	# nothing within a wait
            before = stats(shim)
            began, asked = company(sock, rdb, abuser, "%s-long%d-%d@x" % (
                name, i, want), **kw)
            key = "%s%d-%d@example.org" % (name, i, want)
            sent = time.monotonic()
            assert ask(sock, key.encode() + b"\n") == b"no"
            assert rdb.cmd("GET", "senderwatch:default:" + key) == b"1"
            fresh = fresh and sent - asked < WAIT_MS / 2000 and \
                (not busy or sent - began < ROUND)
            if fresh:
                assert held(shim, before) == want, (name, i, want)
        rounds += fresh
        if rounds == 3:
            break
    assert rounds == 3, "only %d rounds of 10 had company for sure" % rounds


@timing
def test_a_quiet_route_never_waits(make_shim, redis, rdb):
    """Company alone holds nothing: where the route's last call went
    longer than a wait ago (it waited in Redis all that time), the next
    decision goes at once, though a client was answered without Redis
    just before.  Each round is run twice: without the linger the same
    decision is held (company is there), with it, not (held_twins())."""
    shim, sock = make_shim(rules=STRICT_RULES, near_cache=10000,
                           batch_wait="%dms" % WAIT_MS, timeout=TIMEOUT)
    abuser = strict_abuser(sock, "quiet-abuser@example.org")
    held_twins(shim, sock, rdb, abuser, "quiet",
               [({}, 1, True), ({"linger": 1.5 * WAIT_MS / 1000}, 0, False)])


def probes(sock):
    """Clients answered without Redis that bring no mail: a probe that
    connects and closes (monit), and a bad request."""
    assert ask(sock, b"") == b"no"
    assert ask(sock, b"k" * 600 + b"\n") == b"no"


@timing
def test_probes_and_bad_requests_are_no_company(make_shim, redis, rdb):
    """Only a request decided without Redis is company: a probe or a bad
    request answered while a call waits in Redis holds nothing.  Each
    round is run twice, as the quiet route's: the same decision is held
    where the abuser was answered (company is there), and not where only
    probes were (held_twins())."""
    shim, sock = make_shim(rules=STRICT_RULES, near_cache=10000,
                           batch_wait="%dms" % WAIT_MS, timeout=TIMEOUT)
    abuser = strict_abuser(sock, "probed-abuser@example.org")
    held_twins(shim, sock, rdb, abuser, "probed",
               [({}, 1, True), ({"companion": lambda: probes(sock)}, 0,
                                True)])


@timing
def test_a_flush_is_never_held(make_shim, redis, rdb):
    """A batch carrying a near-cache flush goes at once, company or not:
    its margin before the window ends, and its TRYAGAIN retries, count
    from its sending.  The flush timer's tick (every 0.5 s) is found;
    then, just before each next one, company is made (the route busy,
    the abuser answered by the near cache while a call waited), and the
    tick flushes the abuser's counted cost with nothing held.  A round
    counts where the tick came after the company and within half a
    wait of it (the company still fresh), and within ROUND of the
    route's last call; three must."""
    shim, sock = make_shim(near_cache=10000, batch_wait="%dms" % WAIT_MS,
                           timeout=TIMEOUT)
    abuser = "flushed-abuser@example.org"
    over_limit(sock, abuser)
    req = abuser.encode() + b"\n"

    def flushes():
        return stats(shim).get("near_cache_flushes", 0)

    assert ask(sock, req) == b"yes"	# a cost for the next tick
    n = flushes()
    wait_for(lambda: flushes() > n, interval=0.001, what="a flush")
    tick = time.monotonic()
    rounds = 0
    for i in range(10):
        nxt = tick + 0.5
        while nxt < time.monotonic() + 0.05:
            nxt += 0.5
        time.sleep(nxt - 0.015 - time.monotonic())
        before = stats(shim)
        seen = []

        def companion():
            seen.append(flushes())
            assert ask(sock, req) == b"yes"

        began, asked = company(sock, rdb, req,
                               "before-flush%d@example.org" % i,
                               companion=companion)
        wait_for(lambda: flushes() > before["near_cache_flushes"],
                 interval=0.001, what="the tick's flush")
        tick = time.monotonic()
        # The flush answered, held or not: nothing counted is unsent.
        wait_for(lambda: stats(shim)["near_cache_unsent"] == 0,
                 interval=0.001, what="the flush's reply")
        after = stats(shim)
        assert after.get("near_cache_flush_failed", 0) == \
            before.get("near_cache_flush_failed", 0)
        # Company fresh and the route busy (its last call within ROUND)
        # at the tick, for sure.
        if seen == [before["near_cache_flushes"]] and \
                tick - asked < WAIT_MS / 2000 and tick - began < ROUND:
            assert held(shim, before) == 0, i
            rounds += 1
            if rounds == 3:
                break
    assert rounds == 3, "only %d rounds of 10 had company at a tick" % rounds


@timing
def test_a_held_call_goes_once_eight_have_come(make_shim, redis, rdb):
    """A held batch goes as soon as it has DECIDE_BATCH_DEEP (8)
    decisions, not at its wait's end: the call's fixed cost is then a
    small part of it.  One decision is held (company, a busy route);
    seven more join it; all eight share one call, the first answered
    before its wait could have ended (a batch held to its end answers
    its first no sooner)."""
    shim, sock = make_shim(rules=STRICT_RULES, near_cache=10000,
                           batch_wait="%dms" % WAIT_MS, timeout=TIMEOUT)
    abuser = strict_abuser(sock, "deep-abuser@example.org")
    for i in range(5):
        keys = ["deep%d-%d@example.org" % (i, j) for j in range(8)]
        mon = Resp(redis.sock)
        mon.monitor_start()
        time.sleep(2 * WAIT_MS / 1000)
        before = stats(shim)
        start = time.monotonic()
        company(sock, rdb, abuser, "before-deep%d@example.org" % i)
        t0 = time.monotonic()
        first = asking(sock, keys[0])
        wait_for(lambda: stats(shim)["sessions_waiting"] == 1,
                 interval=0.001, what="the first decision queued")
        rest = [asking(sock, k) for k in keys[1:]]
        joined = time.monotonic() - start
        answer = read_all(first)
        took = time.monotonic() - t0
        answers = [answer] + [read_all(s) for s in rest]
        for s in [first] + rest:
            s.close()
        calls = calls_with(mon.monitor_lines(redis.sock), keys)
        assert answers == [b"no"] * 8, answers
        if joined >= ROUND:
            continue
        print("\nFIGURE 8 decisions, the first held: in %d call(s), the "
              "first answered in %.1f ms (batch_wait %d ms)" % (
                  len(calls), 1000 * took, WAIT_MS))
        assert len(calls) == 1, calls
        assert held(shim, before) == 1
        assert took < WAIT_MS / 1000, took
        return
    pytest.fail("5 rounds took %.0f ms or more to set up" % (1000 * ROUND))


@timing
def test_a_reload_sends_a_held_call_under_its_config(make_shim, redis,
                                                     rdb):
    """A reload sends every held batch at once, under the config it was
    made with: the key, counted once before, is at 2 of the old limit
    (3) and answered no by Redis, though the new config's limit is 1;
    and before the wait could have ended (the reload is quick)."""
    shim, sock = make_shim(rules=STRICT_RULES, near_cache=10000,
                           batch_wait="%dms" % WAIT_MS, timeout=TIMEOUT)
    abuser = strict_abuser(sock, "reload-abuser@example.org")
    text = open(shim.conf).read()
    assert "default: { limit: 3," in text
    for i in range(5):
        with open(shim.conf, "w") as f:
            f.write(text)
        assert control(shim.ctl, b"reload\n") == "ok\n"
        key = "reloaded%d@example.org" % i
        assert ask(sock, key.encode() + b"\n") == b"no"
        with open(shim.conf, "w") as f:
            f.write(text.replace("default: { limit: 3,",
                                 "default: { limit: 1,"))
        time.sleep(2 * WAIT_MS / 1000)
        before = stats(shim)
        start = time.monotonic()
        company(sock, rdb, abuser, "before-reload%d@example.org" % i)
        t0 = time.monotonic()
        s = asking(sock, key)
        wait_for(lambda: stats(shim)["sessions_waiting"] == 1,
                 interval=0.001, what="the decision queued")
        assert control(shim.ctl, b"reload\n") == "ok\n"
        reloaded = time.monotonic() - start
        answer = read_all(s)
        took = time.monotonic() - t0
        s.close()
        after = stats(shim)
        assert answer == b"no"
        assert rdb.cmd("GET", "senderwatch:default:" + key) == b"2"
        assert after.get("fail_policy", 0) == before.get("fail_policy", 0)
        # The new config from the next decision on.
        assert ask(sock, key.encode() + b"\n") == b"yes"
        if reloaded >= ROUND:
            continue
        print("\nFIGURE a held call at a reload: answered in %.1f ms "
              "(batch_wait %d ms)" % (1000 * took, WAIT_MS))
        assert after["script_held"] - before.get("script_held", 0) == 1
        assert took < WAIT_MS / 1000, took
        return
    pytest.fail("5 rounds took %.0f ms or more to set up" % (1000 * ROUND))


def test_a_held_call_at_shutdown(make_shim, redis, rdb):
    """SIGTERM while a decision is held (or, under valgrind, maybe sent
    to a paused Redis): its client gets the fail policy at once
    (on_error yes here, where Redis would say no), and the shim exits
    cleanly (valgrind's run checks what it frees).  A redis.timeout of
    2 s: valgrind's slowness must not fail anything first."""
    shim, sock = make_shim(rules=STRICT_RULES, near_cache=10000,
                           batch_wait="%dms" % WAIT_MS, timeout="2s",
                           on_error="yes")
    abuser = strict_abuser(sock, "stop-abuser@example.org")
    for i in range(5):
        time.sleep(2 * WAIT_MS / 1000)
        start = time.monotonic()
        company(sock, rdb, abuser, "before-stop%d@example.org" % i)
        calls = stats(shim)["script_calls"]
        # Held, or sent if the round was slow: paused either way until
        # the signal.
        rdb.cmd("CLIENT", "PAUSE", "5000", "WRITE")
        try:
            s = asking(sock, "stopped%d@example.org" % i)
            wait_for(lambda: stats(shim)["sessions_waiting"] == 1,
                     interval=0.001, what="the decision queued")
            sent = stats(shim)["script_calls"] - calls
            if not VALGRIND and (sent or time.monotonic() - start >= ROUND):
                rdb.cmd("CLIENT", "UNPAUSE")
                assert read_all(s) == b"no"
                s.close()
                continue
            shim.signal(15)
            assert read_all(s) == b"yes"
            s.close()
            assert shim.stop() == 0
        finally:
            rdb.cmd("CLIENT", "UNPAUSE")
        # Still waiting when the signal came, not answered by Redis first.
        assert len([l for l in log_lines(shim, "event=exit")
                    if " sessions_waiting=1 " in l]) == 1, \
            shim.log()[-2000:]
        return
    pytest.fail("the decision was never held in 5 rounds")


def test_a_lone_client_never_waits(make_shim, redis, rdb):
    """One client asking again as soon as it is answered, nobody else
    asking, never waits, however busy its route, and whether its
    requests go to Redis or are answered by the near cache in between:
    what would join a batch is its own next request, which the wait
    would hold up."""
    shim, sock = make_shim(near_cache=10000, batch_wait="%dms" % WAIT_MS,
                           timeout=TIMEOUT)
    abuser = "lone-abuser@example.org"
    over_limit(sock, abuser)
    before = stats(shim)
    for i in range(20):
        assert ask(sock, ("lone%d@example.org\n" % i).encode()) == b"no"
        assert ask(sock, abuser.encode() + b"\n") == b"yes"
    after = stats(shim)
    assert after["script_held"] == before.get("script_held", 0) == 0
    assert after["script_calls"] - before.get("script_calls", 0) >= 20


class BatchResp(Resp):
    """Resp, with an error inside an array (one decision's) returned as
    a RespError in its place rather than raised."""

    def read(self, depth=0):
        line = self._line()
        if line[:1] == b"-" and depth > 0:
            return RespError(line[1:].decode())
        if line[:1] == b"*" and int(line[1:]) >= 0:
            return [self.read(depth + 1) for _ in range(int(line[1:]))]
        self.buf = line + b"\r\n" + self.buf
        return Resp.read(self)


def script(redis):
    with open(os.path.join(ROOT, "scripts", "count.lua")) as f:
        src = f.read()
    r = BatchResp(redis.sock)
    return r, r.cmd("SCRIPT", "LOAD", src)


def costs(decisions, flags, shared):
    """The flags and the decisions' costs and subjects: each one's, or
    (shared, count.lua's sixth flag, before any k) the first one's for
    all."""
    if shared:
        assert len({(c, s) for _, c, s in decisions}) == 1
        return flags[:5] + "u" + flags[5:], list(decisions[0][1:])
    return flags, [x for _, cost, subject in decisions
                   for x in (cost, subject)]


def call(r, sha, decisions, flags="cf011", limits=("3", "60000", "3"),
         shared=False):
    """One count.lua call of decisions [(key, cost, subject)]."""
    keys = [STREAM]
    for key, cost, subject in decisions:
        keys += ["%s:subjects:default:%s" % (PREFIX, key),
                 "%s:override:default:%s" % (PREFIX, key),
                 "%s:default:%s" % (PREFIX, key),
                 "%s:crossed:default:%s" % (PREFIX, key)]
    flags, args = costs(decisions, flags, shared)
    return r.cmd("EVALSHA", sha, str(len(keys)), *keys, flags, "1", META,
                 *limits, *args)


MIDDLES = ["subjects:default:", "override:default:", "default:",
           "crossed:default:"]


def node_call(r, sha, decisions, flags="cf011", limits=("3", "60000", "3"),
              shared=False, tag="", middles=MIDDLES):
    """The same as a node's call (what the shim sends a Cluster's master):
    no KEYS; after the arguments the names' prefix and middles, the
    stream's name less a shard's tag, then each decision's tag and key
    (here, as on a single Redis, the tag is empty unless given)."""
    flags, args = costs(decisions, flags, shared)
    each = []
    for key, _, _ in decisions:
        each += [tag, key]
    return r.cmd("EVALSHA", sha, "0", flags, "1", META, *limits, *args,
                 PREFIX + ":", *middles, STREAM, *each)


def named_call(r, sha, decisions, flags="cf011", limits=("3", "60000",
                                                        "3"), shared=False,
               middles=MIDDLES):
    """The same as a named call (what the shim sends a single Redis): the
    stream the only key, the names' prefix and middles after the
    arguments, then each decision's key; count.lua makes the names."""
    flags, args = costs(decisions, flags, shared)
    return r.cmd("EVALSHA", sha, "1", STREAM, flags, "1", META, *limits,
                 *args, PREFIX + ":", *middles,
                 *[key for key, _, _ in decisions])


@pytest.mark.parametrize("how", ["call", "node_call", "named_call"])
def test_each_decision_of_a_call_is_answered_alone(redis, rdb, how):
    """A bad cost is that decision's error; the others are counted and
    answered; a crossing among them is recorded once, with its key: with
    the keys declared, as a node's call and as a named call."""
    r, sha = script(redis)
    try:
        rdb.cmd("SET", "%s:default:over@x" % PREFIX, "3", "PX", "60000")
        out = globals()[how](r, sha, [("a@x", "1", ""), ("b@x", "1.5", ""),
                            ("over@x", "1", "Hi"), ("c@x", "2", "")])
        assert out[0] == 1 and out[3] == 2
        assert isinstance(out[1], RespError) and \
            "cost must be" in str(out[1])
        assert out[2][:2] == [1, 4] and out[2][3] == 1   # yes, 4, crossed
        assert rdb.cmd("EXISTS", "%s:default:b@x" % PREFIX) == 0
        entries = rdb.cmd("XRANGE", STREAM, "-", "+")
        assert len(entries) == 1
        fields = entries[0][1]
        assert fields[fields.index(b"key") + 1] == b"over@x"
        assert rdb.cmd("ZSCORE", "%s:subjects:default:over@x" % PREFIX,
                       "Hi") == b"1"
        # A decision of the wrong arity is the whole call's error.
        try:
            r.cmd("EVALSHA", sha, "5", STREAM, "s", "o", "c", "x", "cf011",
                  "1", META, "3", "60000", "3", "1")
            assert False, "a call one argument short was taken"
        except RespError as e:
            assert "count.lua: got 5 keys" in str(e)
        # A sixth flag other than u is the flags' error, not the arity's.
        try:
            named_call(r, sha, [("a@x", "1", "")], flags="cf011x")
            assert False, "a sixth flag x was taken"
        except RespError as e:
            assert "flags must be" in str(e), e
    finally:
        r.close()


@pytest.mark.parametrize("how", ["call", "node_call", "named_call"])
def test_a_decision_flagged_k1_does_not_read_its_override(redis, rdb, how):
    """The flags' k and a character per decision (what the shim's override
    cache sends): 1 decides without reading the key's override, 0 reads
    it (a node's call reads them all); a k that does not give one 0 or 1
    per decision is refused."""
    r, sha = script(redis)
    try:
        for key in ("a@x", "b@x"):
            rdb.cmd("SET", "%s:override:%s" % (PREFIX, "default:" + key),
                    "block")
        decisions = [("a@x", "1", ""), ("b@x", "1", ""), ("c@x", "1", "")]
        gets = command_calls(redis, "get")
        out = globals()[how](r, sha, decisions, flags="cf011k100")
        # a: counted as if none; b: blocked, counted nowhere; c: none.
        # A node's call reads every override: that read is what has a
        # slot moving away refuse its decisions before they write.
        if how == "node_call":
            assert out[0][:2] == [1, 0] and out[0][6] == 2, out
        else:
            assert out[0] == 1, out
        assert out[2] == 1, out
        assert out[1][:2] == [1, 0] and out[1][6] == 2, out
        assert command_calls(redis, "get") - gets == \
            (3 if how == "node_call" else 2)
        assert rdb.cmd("GET", "%s:default:b@x" % PREFIX) is None
        for bad in ("cf011k10", "cf011k1000", "cf011k1x0", "cf011k"):
            try:
                globals()[how](r, sha, decisions, flags=bad)
                assert False, "flags %s were taken" % bad
            except RespError as e:
                assert "flags must be" in str(e), (bad, e)
    finally:
        r.close()


def test_a_full_redis_or_a_replica_refuses_the_whole_call(redis, rdb):
    """maxmemory reached, or a replica: Redis refuses a call's first
    write (and lets a script that has written go on), so where one
    decision is refused none wrote, and the call's reply is that error,
    as it is for one decision: what makes the shim leave a demoted
    master.  Nothing is written."""
    r, sha = script(redis)
    try:
        rdb.cmd("SET", "pad", "x" * 100000)
        rdb.cmd("CONFIG", "SET", "maxmemory-policy", "noeviction")
        rdb.cmd("CONFIG", "SET", "maxmemory", "1")
        def refused(word):
            # Declared, and named with one cost and no subject (the
            # shim's common call, which count.lua decides in its loop).
            for how, shared in ((call, False), (named_call, True),
                                (node_call, True)):
                try:
                    out = how(r, sha, [("a@x", "1", ""), ("b@x", "1", "")],
                              shared=shared)
                    assert False, "%s: answered %r" % (word, out)
                except RespError as e:
                    assert str(e).startswith(word), e

        refused("OOM")
        rdb.cmd("CONFIG", "SET", "maxmemory", "0")
        # A replica of a master that is not there: read-only.
        rdb.cmd("REPLICAOF", "127.0.0.1", "1")
        refused("READONLY")
        assert rdb.cmd("EXISTS", "%s:default:a@x" % PREFIX) == 0
        assert rdb.cmd("EXISTS", "%s:default:b@x" % PREFIX) == 0
    finally:
        rdb.cmd("CONFIG", "SET", "maxmemory", "0")
        rdb.cmd("REPLICAOF", "NO", "ONE")
        r.close()


def state(rdb, key):
    """A counter's state: a fixed or gcra string, a sliding hash."""
    name = "%s:default:%s" % (PREFIX, key)
    if rdb.cmd("TYPE", name) == "hash":
        return rdb.cmd("HGETALL", name)
    return rdb.cmd("GET", name)


def test_a_batch_answers_as_its_decisions_one_by_one(redis, rdb):
    """The same requests, one call for all against one call each, on
    two keyspaces: the same replies, the same counts, for the fixed,
    sliding and gcra algorithms, counting and strict."""
    r, sha = script(redis)
    try:
        for flags, limits in (("cf011", ("4", "60000", "4")),
                              ("cf001", ("4", "60000", "4")),
                              ("cs011", ("4", "60000", "4")),
                              ("cg011", ("4", "60000", "2"))):
            # gcra keeps a key of cost 0 for 1 ms, a time no two runs
            # share: costs 1 to 3 there, 0 to 2 elsewhere.
            low = 1 if flags[1] == "g" else 0
            seq = [("k%d@x" % (i % 3), str(i % 3 + low), "")
                   for i in range(9)]
            rdb.cmd("FLUSHALL")
            alone = [call(r, sha, [d], flags, limits) for d in seq]
            counts = {k: state(rdb, k) for k, _, _ in seq}
            # ttl_ms, hold_ms and count_ms are times: equal within the
            # few ms between the runs.
            def shape(x):
                return x if isinstance(x, int) else \
                    [x[0], x[1], x[3], x[4], x[5], x[6]]
            for how in (call, node_call, named_call):
                rdb.cmd("FLUSHALL")
                together = how(r, sha, seq, flags, limits)
                assert [shape(x) for x in together] == \
                    [shape(x) for x in alone], (flags, how.__name__)
                assert {k: state(rdb, k) for k, _, _ in seq} == counts, \
                    (flags, how.__name__)
            # One cost and subject for all, given once: the same again.
            seq = [("k%d@x" % (i % 3), "2", "Hi") for i in range(9)]
            rdb.cmd("FLUSHALL")
            alone = [call(r, sha, [d], flags, limits) for d in seq]
            counts = {k: state(rdb, k) for k, _, _ in seq}
            subjects = rdb.cmd("ZSCORE", "%s:subjects:default:k1@x" % PREFIX,
                               "Hi")
            assert subjects == b"3"
            for how in (call, node_call, named_call):
                rdb.cmd("FLUSHALL")
                together = how(r, sha, seq, flags, limits, shared=True)
                assert [shape(x) for x in together] == \
                    [shape(x) for x in alone], (flags, how.__name__)
                assert {k: state(rdb, k) for k, _, _ in seq} == counts, \
                    (flags, how.__name__)
                assert rdb.cmd("ZSCORE", "%s:subjects:default:k1@x"
                               % PREFIX, "Hi") == subjects
    finally:
        r.close()


# Three windows, as a rule of three limits names them.
MIDDLES3 = MIDDLES + ["default.1h:", "crossed:default.1h:", "default.1d:",
                      "crossed:default.1d:"]


@pytest.mark.parametrize("how", ["named_call", "node_call"])
def test_the_common_call_answers_as_its_decisions_one_by_one(redis, rdb,
                                                             how):
    """The shim's common call, a single Redis's or a node's (fixed
    windows counting every attempt, one cost, no subject, the keys
    named), which count.lua decides in its loop rather than in decide():
    the same replies, the same counts and the same TTLs (to the second)
    as one call for each, with one limit and with three, over keys under
    a limit, crossing it within the call and over it already, with an
    override (allow, block, a factor, one of another type), a corrupt
    counter (another type, not an integer, one INCRBY would overflow; of
    the first limit, and of a later one once the first has counted),
    counters another tool left without a TTL (under a limit and passing
    a point where one is mended, and over it), in shadow mode too, for
    costs of 0, 1, 3 and the most, bad costs, and the flags' k saying a
    key has no override (read, or not)."""
    r, sha = script(redis)
    keys = ["n%d@x" % i for i in range(10)]
    # A node's decisions have their shard's tag in their names.
    tag = "{s1.7}:" if how == "node_call" else ""
    stream = STREAM + (":" + tag[:-1] if tag else "")

    def name(middle, key):
        return "%s:%s%s%s" % (PREFIX, tag, middle, key)

    def prepare(n, cost, limits):
        rdb.cmd("FLUSHALL")
        c = int(cost) if cost.isdigit() else 1
        ov = "override:default:"
        st = [MIDDLES3[2 * i] for i in range(1, n + 1)]
        # Two costs under a limit: the key's three requests cross it.
        # Half its window gone: PEXPIRE NX leaves the TTL as it is.
        lim = limits[3 * (n - 1)]
        rdb.cmd("SET", name(st[-1], "n0@x"), str(max(lim - 2 * c, 0)),
                "PX", "30000")
        rdb.cmd("SET", name(ov, "n1@x"), "allow")
        rdb.cmd("SET", name(ov, "n2@x"), "block")
        rdb.cmd("SET", name(ov, "n3@x"), "x2")
        rdb.cmd("HSET", name(ov, "n4@x"), "a", "b")
        # Corrupt: the last limit's counter, and (three limits) a middle
        # one's, after the first has counted.
        rdb.cmd("HSET", name(st[-1], "n5@x"), "a", "b")
        rdb.cmd("SET", name(st[n // 2], "n6@x"), "abc")
        # The first limit's counter with no TTL, over it.
        rdb.cmd("SET", name(st[0], "n7@x"), str(limits[0] + 20))
        # No TTL, under the first limit, mended as it passes a 16th of it.
        rdb.cmd("SET", name(st[0], "n8@x"), "1" if limits[0] < 32 else "21")
        rdb.cmd("SET", name(st[-1], "n9@x"), "9223372036854775807")

    def after(n):
        out = {}
        for k in keys:
            for i in range(1, n + 1):
                nm = name(MIDDLES3[2 * i], k)
                ttl = rdb.cmd("PTTL", nm)
                value = rdb.cmd("HGETALL", nm) if \
                    rdb.cmd("TYPE", nm) == "hash" else rdb.cmd("GET", nm)
                out[k, i] = (value, ttl if ttl < 0 else (ttl + 500) // 1000)
        return out, rdb.cmd("XLEN", stream)

    def shape(x):
        if isinstance(x, RespError):
            return str(x)
        return x if isinstance(x, int) else \
            [x[0], x[1], x[3], x[4], x[5], x[6]]

    one = ((4, 60000), )
    three = ((64, 60000), (4, 3600000), (1000, 86400000))
    seen, streamed = [], 0
    try:
        for windows in (one, three):
            n = len(windows)
            kw = {"middles": MIDDLES3[:2 + 2 * n]}
            if tag:
                kw["tag"] = tag
            for flags in ("cf01%d" % n, "cf11%d" % n):
                for cost, first in (("1", None), ("3", 64), ("0", None),
                                    ("1000000", None), ("1000001", None),
                                    ("-1", None)):
                    lims = [first or windows[0][0]] + \
                        [l for l, _ in windows[1:]]
                    limits = []
                    for l, (_, w) in zip(lims, windows):
                        limits += [l, w, 4]
                    args = tuple(str(x) for x in limits)
                    seq = [keys[i % 10] for i in range(30)]
                    for k in ("", "k" + "".join("1" if i % 3 else "0"
                                                 for i in range(30))):
                        prepare(n, cost, limits)
                        p0 = command_calls(redis, "pexpire")
                        alone = []
                        for i, key in enumerate(seq):
                            f = flags + ("k" + k[1 + i] if k else "")
                            try:
                                alone.append(globals()[how](
                                    r, sha, [(key, cost, "")], f, args,
                                    shared=True, **kw))
                            except RespError as e:	# a lone one's is
                                alone.append(e)		# the call's
                        want = after(n)
                        pexpires = command_calls(redis, "pexpire") - p0
                        prepare(n, cost, limits)
                        p0 = command_calls(redis, "pexpire")
                        together = globals()[how](
                            r, sha, [(key, cost, "") for key in seq],
                            flags + k, args, shared=True, **kw)
                        # Nor a PEXPIRE sent twice (decide() given counts).
                        assert command_calls(redis, "pexpire") - p0 == \
                            pexpires, (flags, cost, k)
                        assert [shape(x) for x in together] == \
                            [shape(x) for x in alone], (flags, cost, k)
                        assert after(n) == want, (flags, cost, k)
                        seen += together
                        streamed += want[1]
        # Each kind of answer came up: a count alone, a crossing (an
        # event), allowed, blocked, a factor, a bad cost; and the stream
        # named as the decisions' tag says.
        lists = [x for x in seen if isinstance(x, list)]
        assert any(isinstance(x, int) for x in seen)
        assert any(x[0] == 1 and x[3] == 1 for x in lists)
        assert {1, 2, 3} <= {x[6] for x in lists}
        assert any(isinstance(x, RespError) for x in seen)
        assert streamed > 0
    finally:
        r.close()


@pytest.mark.parametrize("windows", [("60000", "abc"), ("abc", "60000")])
def test_a_failing_pexpire_stops_the_decision_as_alone(redis, rdb, windows):
    """A limit's PEXPIRE that Redis refuses (a window no shim sends: by
    hand) is that decision's error, and the limits after it are not
    counted, the first limit over or not: in count.lua's loop as in a
    call of one decision."""
    r, sha = script(redis)
    middles = MIDDLES3[:6]
    limits = ("2", windows[0], "0", "10", windows[1], "0")

    def dump():
        out = {}
        for m in (middles[2], middles[4]):
            for k in ("a@x", "b@x"):
                nm = "%s:%s%s" % (PREFIX, m, k)
                ttl = rdb.cmd("PTTL", nm)
                out[nm] = (rdb.cmd("GET", nm), ttl if ttl < 0 else "ttl")
        return out

    try:
        for cost in ("3", "1"):
            rdb.cmd("FLUSHALL")
            alone = []
            for key in ("a@x", "b@x"):
                try:
                    alone.append(named_call(r, sha, [(key, cost, "")],
                                            "cf012", limits, shared=True,
                                            middles=middles))
                except RespError as e:
                    alone.append(e)
            want = dump()
            rdb.cmd("FLUSHALL")
            together = named_call(r, sha, [("a@x", cost, ""),
                                           ("b@x", cost, "")], "cf012",
                                  limits, shared=True, middles=middles)
            # (Redis adds where a lone call's raised error came from.)
            assert [str(x) for x in together] == \
                [str(x).split(" script: ")[0] for x in alone]
            assert all(isinstance(x, RespError) for x in together)
            assert dump() == want, cost
    finally:
        r.close()
