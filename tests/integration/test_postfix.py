"""A real Postfix 3.7 asking a real shim through check_policy_service, as
the README's Postfix section says to configure it; sessions by swaks.

Each test starts its own Postfix (postfix.py: Debian's package unpacked
into build/postfix-root, a private instance on a free port of 127.0.0.1,
every transport discard:) whose smtpd_recipient_restrictions are

    check_policy_service unix:<the shim's socket>, permit_mynetworks,
    reject_unauth_destination

and the client, 127.0.0.1, is in mynetworks: whatever the shim does not
refuse is relayed (250), and a DEFER_IF_PERMIT from the shim is a 450.
Counters are read from Redis directly.

Timings are swaks' own (--show-time-lapse: from sending RCPT to reading
its reply) and are printed: pytest -s shows them.
"""
import os
import signal
import smtplib
import socket
import subprocess
import time

import pytest

from conftest import VALGRIND, stats, wait_for
from postfix import (POSTCONF, POLICY_UNAVAILABLE, env,  # noqa: F401
                     ensure_root, make_postfix)

SENDER = "a@example.org"
COUNTER = "senderwatch:default:a@example.org"
BOUNCE_COUNTER = "senderwatch:default:<>"

RULE = "  default: { limit: 2, window: 60s }\n"
BOUNCES_COUNTED = \
    "  default: { limit: 2, window: 60s, postfix: { bounces: count } }\n"
NETWORKS_ELSEWHERE = ("  default: { limit: 2, window: 60s,\n"
                      "             postfix: { networks: [ 192.0.2.0/24 ] } }\n")
NETWORKS_LOOPBACK = ("  default: { limit: 2, window: 60s,\n"
                     "             postfix: { networks: [ 127.0.0.0/8 ] } }\n")
AUTHENTICATED = \
    "  default: { limit: 2, window: 60s, postfix: { authenticated: yes } }\n"

# The shim's answer over the limit (the rule's default postfix.action,
# DEFER_IF_PERMIT 4.7.1 ...), as Postfix words it to the client.
DEFERRED = ("4.7.1 <b@remote.example>: Recipient address rejected: "
            "too much mail from this sender, try again later")

# What the README recommends so that mail flows when the shim is away.
README_POLICY_SETTINGS = {
    "smtpd_policy_service_default_action": "DUNNO",
    "smtpd_policy_service_try_limit": "1",
    "smtpd_policy_service_timeout": "2s",
}

# Under valgrind the shim is some ten times slower; bounds that are about
# the shim scale with it.
SLOW = 10 if VALGRIND else 1


def start_shim(make_shim, tmp, **kw):
    """make_shim, but a shim that does not start fails the test with its
    own log (a rule option it does not know, say) rather than a bare
    timeout."""
    try:
        return make_shim(**kw)
    except AssertionError as e:
        try:
            name = kw.get("name", "shim")
            with open(os.path.join(tmp, name + ".log")) as f:
                log = f.read()[-2000:]
        except OSError:
            log = "(no log)"
        raise AssertionError("%s; the shim's log:\n%s" % (e, log)) from None


def counters(rdb):
    """Every counter of the rule default in Redis."""
    return sorted(k for k in rdb.keys()
                  if k.startswith(b"senderwatch:default:"))


def rcpt_codes(pf, sender, n, **kw):
    """n sessions from sender, one recipient each, quitting after RCPT;
    the RCPT reply codes."""
    return [pf.swaks(sender, **kw).rcpt.code for _ in range(n)]


def test_postconf_knows_the_readme_policy_parameters():
    """The three parameters the README recommends exist in Postfix 3.7
    under these names, with the defaults the other tests rely on."""
    ensure_root()
    r = subprocess.run(
        [POSTCONF, "-d"] + sorted(README_POLICY_SETTINGS) +
        ["smtpd_policy_service_retry_delay", "mail_version"],
        capture_output=True, text=True, env=env(), timeout=30)
    assert r.returncode == 0 and "unknown parameter" not in r.stderr, r.stderr
    got = dict(l.split(" = ", 1) for l in r.stdout.splitlines())
    assert got["mail_version"].startswith("3.7.")
    assert got["smtpd_policy_service_default_action"] == \
        "451 4.3.5 " + POLICY_UNAVAILABLE
    assert got["smtpd_policy_service_try_limit"] == "2"
    assert got["smtpd_policy_service_retry_delay"] == "1s"
    assert got["smtpd_policy_service_timeout"] == "100s"


def test_postfix_accepts_under_the_limit_and_defers_over_it(
        make_shim, tmp, rdb, make_postfix):
    _, sock = start_shim(make_shim, tmp, rules=RULE)
    pf = make_postfix(sock)

    # The first message goes all the way: queued, then discarded.
    first = pf.swaks(SENDER, quit_after=None)
    assert first.rcpt.code == 250, first
    assert first.end_of_data.code == 250, first
    queue_id = first.end_of_data.text.split()[-1]
    wait_for(lambda: any(queue_id + ": to=<b@remote.example>, relay=none" in l
                         and "status=sent (senderwatch test)" in l
                         for l in pf.log().splitlines()),
             what="the message to be discarded")

    later = [pf.swaks(SENDER).rcpt for _ in range(3)]
    assert [r.code for r in later] == [250, 450, 450], later
    assert later[1].text == DEFERRED
    # Postfix logs the refusal with the shim's words.
    assert "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 450 " + DEFERRED \
        in pf.log()
    # Every request counted (count_denied defaults to yes for fixed).
    assert rdb.cmd("GET", COUNTER) == b"4"
    # The limit is per sender: another one is not held back.
    assert pf.swaks("other@example.org").rcpt.code == 250
    assert rdb.cmd("GET", "senderwatch:default:other@example.org") == b"1"


def test_postfix_bounces_are_not_counted_by_default(
        make_shim, tmp, rdb, make_postfix):
    _, sock = start_shim(make_shim, tmp, rules=RULE)
    pf = make_postfix(sock)
    assert rcpt_codes(pf, "<>", 4) == [250] * 4
    assert rdb.cmd("EXISTS", BOUNCE_COUNTER) == 0
    assert counters(rdb) == []
    # The shim was asked all along: a real sender on the same path counts.
    assert pf.swaks(SENDER).rcpt.code == 250
    assert rdb.cmd("GET", COUNTER) == b"1"


def test_postfix_bounces_counted_under_null_sender_key_with_bounces_count(
        make_shim, tmp, rdb, make_postfix):
    _, sock = start_shim(make_shim, tmp, rules=BOUNCES_COUNTED)
    pf = make_postfix(sock)
    assert rcpt_codes(pf, "<>", 4) == [250, 250, 450, 450]
    assert rdb.cmd("GET", BOUNCE_COUNTER) == b"4"


def test_postfix_client_outside_networks_is_not_counted(
        make_shim, tmp, rdb, make_postfix):
    """Postfix's client is 127.0.0.1, outside 192.0.2.0/24: DUNNO, never
    counted, however much it sends."""
    _, sock = start_shim(make_shim, tmp, rules=NETWORKS_ELSEWHERE)
    pf = make_postfix(sock)
    assert rcpt_codes(pf, SENDER, 4) == [250] * 4
    assert counters(rdb) == []


def test_postfix_client_inside_networks_is_counted_and_deferred(
        make_shim, tmp, rdb, make_postfix):
    _, sock = start_shim(make_shim, tmp, rules=NETWORKS_LOOPBACK)
    pf = make_postfix(sock)
    assert rcpt_codes(pf, SENDER, 4) == [250, 250, 450, 450]
    assert rdb.cmd("GET", COUNTER) == b"4"


def test_postfix_networks_judge_the_client_address_postfix_reports(
        make_shim, tmp, rdb, make_postfix):
    """One Postfix, clients on both sides of networks: 192.0.2.7 (made the
    client by XCLIENT, which Postfix then reports as client_address) is
    counted and deferred; the plain 127.0.0.1 session is not counted."""
    _, sock = start_shim(make_shim, tmp, rules=NETWORKS_ELSEWHERE)
    pf = make_postfix(sock, {
        "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
        "mynetworks": "127.0.0.0/8, 192.0.2.0/24"})
    inside = ["--xclient-addr", "192.0.2.7"]
    assert rcpt_codes(pf, SENDER, 3, extra=inside) == [250, 250, 450]
    assert "RCPT from unknown[192.0.2.7]: 450 " + DEFERRED in pf.log()
    assert rcpt_codes(pf, SENDER, 2) == [250, 250]
    assert rdb.cmd("GET", COUNTER) == b"3"


class Policy:
    """Postfix's side of the policy protocol on one connection."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(5 * SLOW)
        self.s.connect(path)
        self.buf = b""

    def ask(self, request):
        self.s.sendall(request.encode())
        while b"\n\n" not in self.buf:
            b = self.s.recv(4096)
            assert b, "the shim closed the policy connection"
            self.buf += b
        answer, self.buf = self.buf.split(b"\n\n", 1)
        return answer.decode()

    def close(self):
        self.s.close()


def policy_request(sasl_username=None):
    req = ("request=smtpd_access_policy\nprotocol_state=RCPT\n"
           "sender=a@example.org\nclient_address=127.0.0.1\n")
    if sasl_username is not None:
        req += "sasl_username=%s\n" % sasl_username
    return req + "\n"


def test_policy_authenticated_yes_counts_only_sasl_users(make_shim, tmp, rdb):
    """Raw policy requests (SASL in Postfix would need a SASL server): an
    empty or missing sasl_username is DUNNO and counts nothing; a logged-in
    client is counted under its sender and deferred past the limit."""
    _, sock = start_shim(make_shim, tmp, rules=AUTHENTICATED)
    p = Policy(sock)
    try:
        anonymous = [p.ask(policy_request("")) for _ in range(3)]
        anonymous.append(p.ask(policy_request(None)))
        assert anonymous == ["action=DUNNO"] * 4
        assert rdb.cmd("EXISTS", COUNTER) == 0
        logged_in = [p.ask(policy_request("pat")) for _ in range(3)]
        assert logged_in[:2] == ["action=DUNNO"] * 2
        assert logged_in[2].startswith("action=DEFER_IF_PERMIT 4.7.1 "), \
            logged_in
        assert rdb.cmd("GET", COUNTER) == b"3"
    finally:
        p.close()


@pytest.mark.parametrize("how", ["never_listening", "stopped_after_use"])
def test_postfix_defaults_answer_451_when_the_shim_is_down(
        make_shim, make_postfix, tmp, how):
    """Postfix's defaults: try twice, one second apart, then the default
    action, 451 4.3.5: mail from everyone waits while the shim is away."""
    if how == "never_listening":
        sock = os.path.join(tmp, "nobody-listens.sock")
        pf = make_postfix(sock)
    else:
        shim, sock = start_shim(make_shim, tmp, rules=RULE)
        pf = make_postfix(sock)
        assert pf.swaks(SENDER).rcpt.code == 250
        shim.stop()
    s = pf.swaks(SENDER)
    print("\nPostfix defaults, shim %s: RCPT answered %r in %.3f s"
          % (how, s.rcpt, s.rcpt.lapse))
    assert s.rcpt.code == 451, s
    assert s.rcpt.text == "4.3.5 <b@remote.example>: Recipient address " \
        "rejected: " + POLICY_UNAVAILABLE
    assert "warning: problem talking to server %s" % sock in pf.log()
    # smtpd_policy_service_retry_delay (1s) between the two tries.
    assert 0.9 <= s.rcpt.lapse < 3.0, s.rcpt.lapse


@pytest.mark.parametrize("how", ["never_listening", "stopped_after_use"])
def test_postfix_readme_settings_accept_mail_at_once_when_the_shim_is_down(
        make_shim, make_postfix, tmp, how):
    """With the README's settings a missing shim is DUNNO after one try:
    mail flows (250), with no retry delay."""
    if how == "never_listening":
        sock = os.path.join(tmp, "nobody-listens.sock")
        pf = make_postfix(sock, README_POLICY_SETTINGS)
    else:
        shim, sock = start_shim(make_shim, tmp, rules=RULE)
        pf = make_postfix(sock, README_POLICY_SETTINGS)
        assert pf.swaks(SENDER).rcpt.code == 250
        shim.stop()
    lapses = []
    for _ in range(3):
        s = pf.swaks(SENDER)
        assert s.rcpt.code == 250, s
        lapses.append(s.rcpt.lapse)
    print("\nREADME settings, shim %s: RCPT 250 in %s s"
          % (how, ", ".join("%.3f" % l for l in lapses)))
    assert "warning: problem talking to server %s" % sock in pf.log()
    assert max(lapses) < 1.0, lapses


@pytest.mark.parametrize("fault", ["killed", "frozen"])
def test_postfix_gets_the_fail_policy_answer_when_redis_is_gone(
        make_shim, tmp, redis, make_postfix, fault):
    """Redis killed, or frozen (SIGSTOP), while the shim runs: the shim
    answers its fail policy (on_error "no", so DUNNO) within redis.timeout,
    and Postfix relays mail even from a sender over the limit."""
    timeout = 0.1                       # conftest's redis.timeout
    shim, sock = start_shim(make_shim, tmp, rules=RULE)
    pf = make_postfix(sock)
    assert rcpt_codes(pf, SENDER, 3) == [250, 250, 450]
    before = stats(shim)["fail_policy"]
    if fault == "killed":
        redis.kill(signal.SIGKILL)
    else:
        redis.kill(signal.SIGSTOP)
    try:
        s = [pf.swaks(SENDER) for _ in range(2)]
    finally:
        if fault == "frozen":
            redis.proc.send_signal(signal.SIGCONT)
    lapses = [x.rcpt.lapse for x in s]
    print("\nRedis %s: RCPT %s in %s s" % (
        fault, [x.rcpt.code for x in s],
        ", ".join("%.3f" % l for l in lapses)))
    assert [x.rcpt.code for x in s] == [250, 250], s
    assert stats(shim)["fail_policy"] >= before + 2
    # The shim's answer is due within redis.timeout; the rest is Postfix
    # and swaks on a busy machine.
    assert max(lapses) < timeout + 0.4 * SLOW, lapses
    if fault == "frozen":
        # A frozen Redis is waited out, not mistaken for an answer.
        assert min(lapses) >= timeout * 0.9, lapses


def idle_closes(shim):
    return len([l for l in shim.log().splitlines()
                if "event=session_close" in l and 'reason="idle"' in l])


@pytest.mark.parametrize("settings", ["postfix_defaults", "readme_settings"])
def test_postfix_counts_each_recipient_after_a_pause_past_client_timeout(
        make_shim, tmp, rdb, make_postfix, settings):
    """Postfix keeps an idle policy connection for
    smtpd_policy_service_max_idle (300s) and does not notice a close from
    the other end while an SMTP session is open: a shim that closed it after
    shim.client_timeout made the next question fail, uncounted with
    try_limit 1 and a second late otherwise.  So an idle policy connection
    is kept for shim.policy_idle_timeout (330s): an SMTP session that pauses
    past client_timeout (500ms here) between two recipients gets both
    counted, at once, on the same connection."""
    shim, sock = start_shim(make_shim, tmp, rules=RULE,
                            client_timeout="500ms")
    pf = make_postfix(sock, README_POLICY_SETTINGS
                      if settings == "readme_settings" else {})
    idle_before = idle_closes(shim)
    smtp = smtplib.SMTP("127.0.0.1", pf.port, timeout=30)
    try:
        smtp.ehlo("client.example")
        assert smtp.mail(SENDER)[0] == 250
        assert smtp.rcpt("b1@remote.example")[0] == 250
        assert rdb.cmd("GET", COUNTER) == b"1"
        # The SMTP client pauses: three client_timeouts.
        time.sleep(1.5)
        t = time.monotonic()
        code, text = smtp.rcpt("b2@remote.example")
        lapse = time.monotonic() - t
    finally:
        smtp.close()
    print("\n%s, a 1.5 s pause between recipients: second RCPT %d in "
          "%.3f s, counter %r" % (settings, code, lapse,
                                  rdb.cmd("GET", COUNTER)))
    assert code == 250, text
    assert rdb.cmd("GET", COUNTER) == b"2"
    assert idle_closes(shim) == idle_before
    # Answered on the connection that was kept: no retry's second.
    assert lapse < 0.5 * SLOW, lapse
