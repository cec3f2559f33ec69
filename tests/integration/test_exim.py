"""A real Exim 4.96 asking real shims through the ACL snippets shipped in
deploy/exim/: the article's warn, defer, and freeze; and mail still flowing,
promptly, when Redis or the shim is gone.

Each Exim session is `exim4 -bh 192.0.2.1` (see exim.py); the assertions
are on its SMTP reply codes and its LOG lines.  The rule is conftest's
default: limit 3, so the 4th recipient from one sender is over.
"""
import os
import re
import signal

import pytest

from conftest import ask, wait_for
from exim import EXIM, SNIPPET_SOCK, Exim, snippet_text

SNIPPETS = ["senderwatch-warn.acl", "senderwatch-defer.acl",
            "senderwatch-freeze.acl"]

# The article's statement, word for word (only the socket path is ours).
ARTICLE = ("warn hosts = +my_hosts condition = ${readsocket{%s}"
           "{$sender_address\\n}{5s}{}{no}} log_message = tons-o-mail"
           % SNIPPET_SOCK)

# Exim, the shim and Redis together answer in well under this; readsocket's
# own timeouts (2s, 5s) are what a stuck shim would cost.
PROMPT = 1.5

DEFER_REPLY = "4.7.1 Too much mail from this sender recently, try again later"


@pytest.fixture(autouse=True)
def need_exim():
    # Not a skip: the suite claims Exim works with the shim, so a machine
    # without Exim must not report these as passed or quietly left out.
    assert os.access(EXIM, os.X_OK), \
        "%s missing: install exim4-daemon-light (make deps-test)" % EXIM


def statements(text):
    """A snippet without its comments, whitespace folded."""
    body = [l for l in text.splitlines() if not l.lstrip().startswith("#")]
    return " ".join(" ".join(body).split())


def counter(key):
    return "senderwatch:default:%s" % key


@pytest.mark.parametrize("name", SNIPPETS)
def test_snippet_is_valid_exim_config(tmp, name):
    assert snippet_text(name).count(SNIPPET_SOCK) == 1
    r = Exim(tmp, name, os.path.join(tmp, "shim.sock")).verify()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Exim version 4." in r.stdout


def test_warn_snippet_is_the_articles():
    assert statements(snippet_text("senderwatch-warn.acl")) == ARTICLE


def test_article_warn_with_two_shims(make_shim, redis, tmp):
    """Two MTAs, each with its own shim, one Redis: the count is shared,
    and the warning appears in whichever session goes over."""
    a, sock_a = make_shim("a")
    b, sock_b = make_shim("b")
    exims = [Exim(tmp, "senderwatch-warn.acl", sock_a, "exim-a"),
             Exim(tmp, "senderwatch-warn.acl", sock_b, "exim-b")]
    sessions = [exims[i % 2].session("tons@example.org") for i in range(6)]

    # warn never refuses anything
    assert [s.rcpt_codes for s in sessions] == [[250]] * 6
    warned = [s.logged("Warning: tons-o-mail") for s in sessions]
    assert warned == [False, False, False, True, True, True]
    # the 4th session went through exim-b and shim b, which saw the crossing
    assert "H=(client.example) [192.0.2.1] Warning: tons-o-mail" in \
        sessions[3].log
    assert len([l for l in b.log().splitlines()
                if "event=crossing" in l]) == 1
    assert "event=crossing" not in a.log()
    assert redis.cli("GET", counter("tons@example.org")) == "6"

    # hosts outside my_hosts are not counted at all
    s = exims[0].session("tons@example.org", host="198.51.100.7")
    assert s.rcpt_codes == [250] and not s.logged("tons-o-mail")
    assert redis.cli("GET", counter("tons@example.org")) == "6"
    # and other senders have counts of their own
    s = exims[1].session("quiet@example.org")
    assert s.rcpt_codes == [250] and not s.logged("tons-o-mail")
    assert redis.cli("GET", counter("quiet@example.org")) == "1"


def test_defer_over_the_limit(make_shim, redis, tmp):
    shim, sock = make_shim()
    exim = Exim(tmp, "senderwatch-defer.acl", sock)
    sessions = [exim.session("d@example.org") for _ in range(5)]
    assert [s.rcpt_codes for s in sessions] == \
        [[250], [250], [250], [451], [451]]
    assert sessions[3].rcpt[0].text == DEFER_REPLY
    assert sessions[3].log == [
        "H=(client.example) [192.0.2.1] F=<d@example.org> temporarily "
        "rejected RCPT <rcpt@test.example>: senderwatch: over the limit"]
    assert sessions[2].log == []
    # someone else still gets through
    assert exim.session("other@example.org").rcpt_codes == [250]


def test_defer_counts_each_recipient(make_shim, redis, tmp):
    shim, sock = make_shim()
    exim = Exim(tmp, "senderwatch-defer.acl", sock)
    rcpts = ["r%d@test.example" % i for i in range(5)]
    s = exim.session("many@example.org", rcpts=rcpts)
    assert s.rcpt_codes == [250, 250, 250, 451, 451]
    assert redis.cli("GET", counter("many@example.org")) == "5"


def test_defer_leaves_bounces_alone(make_shim, redis, tmp):
    shim, sock = make_shim()
    exim = Exim(tmp, "senderwatch-defer.acl", sock)
    for _ in range(5):
        assert exim.session("").rcpt_codes == [250]
    # not even asked: the null sender is not counted
    assert redis.cli("EXISTS", counter("<>")) == "0"


def test_freeze_over_the_limit(make_shim, redis, tmp):
    shim, sock = make_shim()
    exim = Exim(tmp, "senderwatch-freeze.acl", sock)
    sessions = [exim.session("fz@example.org", data=True) for _ in range(5)]
    # accepted every time: recipient, then the message itself
    assert [s.rcpt_codes for s in sessions] == [[250]] * 5
    assert [[r.code for r in s.data] for s in sessions] == [[354, 250]] * 5
    frozen = [s.logged("frozen by ACL") for s in sessions]
    assert frozen == [False, False, False, True, True]
    assert sessions[3].logged("Warning: senderwatch: over the limit, frozen")
    # the log names the message that was frozen
    ids = [re.match(r"(\S+) frozen by ACL", l)
           for l in sessions[3].log if "frozen by ACL" in l]
    assert ids and ids[0] and ("%s <= fz@example.org" % ids[0].group(1)) in \
        "\n".join(sessions[3].log)


def over_the_limit(exim, sender):
    codes = [exim.session(sender).rcpt_codes[0] for _ in range(4)]
    assert codes == [250, 250, 250, 451]


def test_redis_down_mail_flows(make_shim, redis, tmp):
    shim, sock = make_shim(timeout="100ms")
    exim = Exim(tmp, "senderwatch-defer.acl", sock)
    over_the_limit(exim, "down@example.org")
    redis.stop()
    for _ in range(2):
        s = exim.session("down@example.org")
        assert s.rcpt_codes == [250]            # fail open: on_error no
        assert s.log == []
        assert s.elapsed < PROMPT, s.elapsed
    assert "event=fail_policy" in shim.log()

    # back up: a fresh Redis, so the count starts again, and counts
    redis.start()
    wait_for(lambda: ask(sock, "probe@example.org\n") == b"no" and
             redis.cli("EXISTS", counter("probe@example.org")) == "1",
             timeout=10, interval=0.05, what="the shim to reconnect")
    over_the_limit(exim, "down@example.org")


def test_redis_frozen_mail_flows(make_shim, redis, tmp):
    shim, sock = make_shim(timeout="100ms")
    exim = Exim(tmp, "senderwatch-defer.acl", sock)
    over_the_limit(exim, "frz@example.org")
    redis.kill(signal.SIGSTOP)
    try:
        s = exim.session("frz@example.org", rcpts=["a@test.example",
                                                   "b@test.example"])
    finally:
        redis.kill(signal.SIGCONT)
    assert s.rcpt_codes == [250, 250]
    # each recipient waited redis.timeout (100ms) at most, not readsocket's
    assert s.elapsed < PROMPT, s.elapsed
    assert "redis did not answer in 100ms" in shim.log()


def test_shim_gone_mail_flows(make_shim, redis, tmp):
    shim, sock = make_shim()
    exim = Exim(tmp, "senderwatch-defer.acl", sock)
    over_the_limit(exim, "gone@example.org")
    shim.stop()
    s = exim.session("gone@example.org", rcpts=["a@test.example",
                                                "b@test.example"])
    # readsocket's fail string "no": accepted, without waiting
    assert s.rcpt_codes == [250, 250]
    assert s.elapsed < PROMPT, s.elapsed
