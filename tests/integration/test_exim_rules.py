"""The rule snippets shipped in deploy/exim/ (issues 3 and 4), each run in
a real Exim 4.96 against a real shim and Redis: subjects with one count per
message, per authenticated user, per client address, per normalised
sender, recipients per day with a cost, and a shadow trial.

The snippets have parts for the RCPT and the DATA ACL, marked by lines
"# == acl_smtp_rcpt ==" and "# == acl_smtp_data ==", so the Exim here is
exim.py's with a DATA ACL too.  Each part is pasted as shipped, only the
socket path replaced.  Sessions are `exim4 -bh IP` (nothing is queued);
the assertions are on SMTP reply codes, Exim's LOG lines, the shim's log
and what Redis holds.
"""
import base64
import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import ROOT, SHIM, shim_config
from exim import EXIM, SNIPPET_SOCK, Session, exim_dirs, snippet_text

SNIPPETS = ["senderwatch-subjects.acl", "senderwatch-auth-user.acl",
            "senderwatch-client-ip.acl", "senderwatch-sender.acl",
            "senderwatch-recipients-per-day.acl", "senderwatch-shadow.acl"]

# Small limits for the tests; the snippets' headers show production ones.
RULES = """\
  default: { limit: 3, window: 60s }
  user: { limit: 2, window: 60s }
  ip: { limit: 2, window: 60s }
  sender: { limit: 2, window: 60s, normalize: [ lowercase, strip_tag ] }
  rcpt_day: { limit: 5, window: 1d, count_denied: no }
  trial: { limit: 2, window: 60s, mode: shadow }
"""

STREAM = "senderwatch:stream"
MY_HOSTS = "<; 192.0.2.0/24 ; 2001:db8::/32"
DEFER = "4.7.1 Too much mail from this sender recently, try again later"

CONFIG = """\
# written by tests/integration/test_exim_rules.py
exim_user = {user}
exim_group = {group}
spool_directory = {spool}
log_file_path = {logdir}/%slog
primary_hostname = test.example
hostlist my_hosts = {my_hosts}
acl_smtp_rcpt = acl_rcpt
acl_smtp_data = acl_data

begin acl

acl_rcpt:
{acl_smtp_rcpt}
  accept

acl_data:
{acl_smtp_data}
  accept
"""

SECTION = re.compile(r"^# == (acl_smtp_rcpt|acl_smtp_data) ==\n", re.M)


@pytest.fixture(autouse=True)
def need_exim():
    # As in test_exim.py: a machine without Exim fails, it does not skip.
    assert os.access(EXIM, os.X_OK), \
        "%s missing: install exim4-daemon-light (make deps-test)" % EXIM


def sections(text):
    """A snippet's statements, by the ACL they go in."""
    pieces = SECTION.split(text)
    out = {}
    for acl, body in zip(pieces[1::2], pieces[2::2]):
        assert acl not in out, "two %s parts" % acl
        out[acl] = body
    return out


def documented_rules(text):
    """The rules: block a snippet's header shows, as config.yaml text
    below "rules:"."""
    lines = text.splitlines()
    start = lines.index("#   rules:") + 1
    end = lines.index("#", start)
    return "\n".join(l[len("#   "):] for l in lines[start:end]) + "\n"


class RuleExim:
    """A private Exim whose RCPT and DATA ACLs hold one shipped snippet,
    its socket path replaced by sock."""

    def __init__(self, d, snippet, sock, name="exim", my_hosts=MY_HOSTS,
                 edit=None):
        text = snippet_text(snippet)
        if edit is not None:
            text = edit(text)
        parts = sections(text)
        assert parts, snippet
        acls = {acl: parts.get(acl, "").replace(SNIPPET_SOCK, sock)
                for acl in ("acl_smtp_rcpt", "acl_smtp_data")}
        self.dir, spool, logdir, user, group = exim_dirs(d, name)
        self.conf = os.path.join(self.dir, "exim.conf")
        with open(self.conf, "w") as f:
            f.write(CONFIG.format(user=user, group=group, spool=spool,
                                  logdir=logdir, my_hosts=my_hosts, **acls))
        os.chmod(self.conf, 0o644)

    def verify(self):
        return subprocess.run([EXIM, "-C", self.conf, "-bV"],
                              capture_output=True, text=True, timeout=30)

    def session(self, sender, rcpts=("rcpt@test.example",),
                host="192.0.2.1", message=None, args=(), local=False):
        """One SMTP session; message, if given, is sent after DATA (lines
        joined by "\\n", dot-stuffed here).  local: `exim -bs`, a local
        submission with no client address, instead of -bh HOST."""
        # -bs really queues what it accepts: keep it to the envelope
        assert not (local and message is not None)
        cmds = ["EHLO client.example", "MAIL FROM:<%s>" % sender]
        cmds += ["RCPT TO:<%s>" % r for r in rcpts]
        if message is not None:
            cmds.append("DATA")
            cmds += ["." + l if l.startswith(".") else l
                     for l in message.split("\n")]
            cmds.append(".")
        cmds.append("QUIT")
        mode = ["-bs"] if local else ["-bh", host]
        t = time.monotonic()
        r = subprocess.run([EXIM, "-C", self.conf] + mode + list(args),
                           input=("\r\n".join(cmds) + "\r\n").encode(),
                           capture_output=True, timeout=30)
        s = Session(r.stdout.decode("utf-8", "replace"),
                    r.stderr.decode("utf-8", "replace"), len(rcpts),
                    message is not None, time.monotonic() - t)
        assert s.replies[0].code == 220, s.stdout + s.stderr
        return s


def mail(sender, subject):
    """A message whose Subject: header is subject as sent: "\\n" followed
    by white space folds it."""
    return "From: <%s>\nTo: <rcpt@test.example>\nSubject: %s\n\nHello.\n" % (
        sender, subject)


def data_codes(s):
    return [r.code for r in s.data]


def zset(redis, key):
    """A sorted set as {member: score}, read byte-exact."""
    out = subprocess.run(["redis-cli", "-s", redis.sock, "ZRANGE", key,
                          "0", "-1", "WITHSCORES"],
                         capture_output=True, timeout=10).stdout
    lines = out.decode("utf-8").split("\n")[:-1]
    return {lines[i]: int(lines[i + 1]) for i in range(0, len(lines), 2)}


ENTRY_ID = re.compile(r"^\d+-\d+$")


def stream_events(redis):
    """The event stream's entries, each as a dict of its fields."""
    out = subprocess.run(["redis-cli", "-s", redis.sock, "XRANGE", STREAM,
                          "-", "+"], capture_output=True, text=True,
                         timeout=10).stdout
    lines, events, i = out.split("\n")[:-1], [], 0
    if lines == [""]:
        lines = []      # the stream is there (the shim makes it) but empty
    while i < len(lines):
        assert ENTRY_ID.match(lines[i]), lines
        ev, i = {}, i + 1
        # field names are never entry ids, so the next id ends this entry
        while i < len(lines) and not ENTRY_ID.match(lines[i]):
            ev[lines[i]] = lines[i + 1]
            i += 2
        events.append(ev)
    return events


def keys(redis, pattern):
    return sorted(k for k in redis.cli("KEYS", pattern).split("\n") if k)


def auth(user):
    # -bh as if the client had logged in with AUTH PLAIN as user
    return ["-oMai", user, "-oMaa", "PLAIN"]


@pytest.mark.parametrize("name", SNIPPETS)
def test_snippet_is_valid_exim_config(tmp, name):
    text = snippet_text(name)
    parts = sections(text)
    assert parts, "no '# == acl_smtp_... ==' part in %s" % name
    # every part asks the shim once, at the path config.yaml ships
    for body in parts.values():
        assert body.count(SNIPPET_SOCK) == 1, body
    # the header says where each part goes
    header = SECTION.split(text)[0]
    for acl in parts:
        assert acl in header, acl
    r = RuleExim(tmp, name, os.path.join(tmp, "shim.sock")).verify()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Exim version 4." in r.stdout


@pytest.mark.parametrize("name", SNIPPETS)
def test_documented_rule_is_valid_and_used(tmp, redis, name):
    """The rule YAML in the header passes the shim's config check, and is
    the rule the snippet's requests name."""
    text = snippet_text(name)
    rules = documented_rules(text)
    if not re.search(r"^  default:", rules, re.M):
        # added next to the reference config's default rule, which every
        # config must have
        with open(os.path.join(ROOT, "config.yaml")) as f:
            rules = "".join(l for l in f if l.startswith("  default:")) + \
                rules
    conf, _ = shim_config(tmp, redis.sock, rules=rules)
    r = subprocess.run([SHIM, "-n", "-c", conf], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, rules + r.stdout + r.stderr
    named = set(re.findall(r"\{rule=(\w+)\\n", text))
    assert named and all(re.search(r"^  %s:" % n, rules, re.M)
                         for n in named), (named, rules)


def test_subjects_one_count_per_message(make_shim, redis, tmp):
    shim, sock = make_shim(rules=RULES)
    exim = RuleExim(tmp, "senderwatch-subjects.acl", sock)
    who = "reports@example.org"
    counter = "senderwatch:default:" + who
    subjects = "senderwatch:subjects:default:" + who

    s = exim.session(who, message=mail(who, "Quarterly report"))
    assert s.rcpt_codes == [250] and data_codes(s) == [354, 250]
    # three recipients, folded differently: still one message, one subject
    rcpts = ["r%d@test.example" % i for i in range(3)]
    s = exim.session(who, rcpts=rcpts,
                     message=mail(who, "Quarterly\n\t report"))
    assert s.rcpt_codes == [250] * 3 and data_codes(s) == [354, 250]
    assert redis.cli("GET", counter) == "2"
    s = exim.session(who, message=mail(who, "Minutes"))
    assert data_codes(s) == [354, 250]
    assert redis.cli("GET", counter) == "3"
    assert zset(redis, subjects) == {"Quarterly report": 2, "Minutes": 1}
    assert stream_events(redis) == []

    # The 4th message passes RCPT (the sender is not over yet) and is
    # counted at DATA, where it goes over: deferred, one event.
    s = exim.session(who, message=mail(who, "One too many"))
    assert s.rcpt_codes == [250] and data_codes(s) == [354, 451]
    assert s.data[1].text == DEFER
    assert s.logged("F=<%s> temporarily rejected after DATA: senderwatch: "
                    "over the limit with this message" % who), s.log
    assert redis.cli("GET", counter) == "4"
    events = stream_events(redis)
    assert len(events) == 1
    assert (events[0]["rule"], events[0]["key"], events[0]["count"],
            events[0]["subjects"]) == ("default", who, "4", subjects)
    assert zset(redis, subjects)["One too many"] == 1

    # From now on RCPT defers before any data, and only asks: no count.
    s = exim.session(who, rcpts=rcpts[:2])
    assert s.rcpt_codes == [451, 451]
    assert s.rcpt[0].text == DEFER
    assert s.logged("temporarily rejected RCPT <r0@test.example>: "
                    "senderwatch: over the limit")
    assert redis.cli("GET", counter) == "4"
    assert len(stream_events(redis)) == 1
    # others are not affected, and bounces are not counted at all
    s = exim.session("other@example.org",
                     message=mail("other@example.org", "Hi"))
    assert data_codes(s) == [354, 250]
    s = exim.session("", message=mail("mailer-daemon@test.example", "Bounce"))
    assert data_codes(s) == [354, 250]
    assert keys(redis, "senderwatch:*<>*") == []
    assert "event=bad_request" not in shim.log()


def test_subjects_hostile_subject_is_data(make_shim, redis, tmp):
    """Quotes, =, braces, $, backslashes, folding, and RFC 2047 words that
    decode to newlines, a NUL and an empty line followed by attributes:
    all of it is recorded as the subject, none of it is a request line."""
    shim, sock = make_shim(rules=RULES)
    exim = RuleExim(tmp, "senderwatch-subjects.acl", sock)
    who = "tricky@example.org"
    b64 = base64.b64encode(b"end\r\n\r\nrule=trial").decode()
    subject = ('"Q3" a=b {x} }} ${y} \\z =?UTF-8?Q?caf=C3=A9=0Amode=3Dpeek'
               '=00?=\n\tcost=0 }\n =?UTF-8?B?%s?=' % b64)
    # What a reader sees: the words decoded (NUL shows as "?"), every run
    # of white space, the decoded newlines included, one space.
    want = '"Q3" a=b {x} }} ${y} \\z caf\u00e9 mode=peek? cost=0 } end ' \
           'rule=trial'
    for n in (1, 2):
        s = exim.session(who, message=mail(who, subject))
        assert s.rcpt_codes == [250] and data_codes(s) == [354, 250]
        # counted once each: not peeked, not cost 0, not another rule
        assert redis.cli("GET", "senderwatch:default:" + who) == str(n)
    assert zset(redis, "senderwatch:subjects:default:" + who) == {want: 2}
    assert keys(redis, "senderwatch:trial*") == []
    log = shim.log()
    assert "event=bad_request" not in log
    # per message: RCPT's question (cost 0, peek), then DATA's count
    decisions = [re.search(r" cost=(\d+) .*?( mode=peek)?$", l).groups()
                 for l in log.splitlines() if "event=decision" in l]
    assert decisions == [("0", " mode=peek"), ("1", None)] * 2


def test_subjects_long_subject_still_counts(make_shim, redis, tmp):
    """A subject far past shim.max_request once unfolded: the snippet cuts
    it to the 998 bytes the shim keeps, so the request still fits and the
    message is counted."""
    shim, sock = make_shim(rules=RULES)
    exim = RuleExim(tmp, "senderwatch-subjects.acl", sock)
    who = "long@example.org"
    words = ["word%04d" % i for i in range(600)]
    folded = "\n ".join(" ".join(words[i:i + 8])
                        for i in range(0, len(words), 8))
    assert len(folded) > 5000
    s = exim.session(who, message=mail(who, folded))
    assert data_codes(s) == [354, 250]
    assert redis.cli("GET", "senderwatch:default:" + who) == "1"
    assert zset(redis, "senderwatch:subjects:default:" + who) == \
        {" ".join(words)[:998]: 1}
    assert "event=bad_request" not in shim.log()


def test_auth_user(make_shim, redis, tmp):
    shim, sock = make_shim(rules=RULES)
    exim = RuleExim(tmp, "senderwatch-auth-user.acl", sock)
    rcpts = ["r%d@test.example" % i for i in range(3)]
    s = exim.session("a@example.org", rcpts=rcpts, args=auth("alice"))
    assert s.rcpt_codes == [250, 250, 451]
    assert s.rcpt[2].text == \
        "4.7.1 You have sent too much mail recently, try again later"
    assert s.logged("temporarily rejected RCPT <r2@test.example>: "
                    "senderwatch: user alice over the limit"), s.log
    # the login counts, whatever the sender address or client
    s = exim.session("other@example.net", host="192.0.2.99",
                     args=auth("alice"))
    assert s.rcpt_codes == [451]
    assert redis.cli("GET", "senderwatch:user:alice") == "4"
    assert exim.session("b@example.org", args=auth("bob")).rcpt_codes == \
        [250]
    # not logged in: not counted, not deferred, however much
    s = exim.session("a@example.org", rcpts=rcpts)
    assert s.rcpt_codes == [250] * 3 and s.log == []
    assert keys(redis, "senderwatch:user:*") == \
        ["senderwatch:user:alice", "senderwatch:user:bob"]
    # A login name with a newline cannot add "cost=0" to the request: the
    # name is hex-quoted, and counts like any other.
    s = exim.session("m@example.org", rcpts=rcpts,
                     args=auth("mallory\ncost=0"))
    assert s.rcpt_codes == [250, 250, 451]
    assert redis.cli("GET", "senderwatch:user:mallory\\x0acost=0") == "3"
    assert "event=bad_request" not in shim.log()


def test_client_ip(make_shim, redis, tmp):
    shim, sock = make_shim(rules=RULES)
    # my_hosts matches local submissions too (the empty item): the snippet
    # must still leave them out
    local_too = "<; ; 192.0.2.0/24 ; 2001:db8::/32"
    exim = RuleExim(tmp, "senderwatch-client-ip.acl", sock,
                    my_hosts=local_too)
    rcpts = ["r%d@test.example" % i for i in range(3)]
    s = exim.session("a@example.org", rcpts=rcpts, host="192.0.2.7")
    assert s.rcpt_codes == [250, 250, 451]
    assert s.rcpt[2].text == \
        "4.7.1 Too much mail from your address recently, try again later"
    assert s.logged("temporarily rejected RCPT <r2@test.example>: "
                    "senderwatch: client 192.0.2.7 over the limit"), s.log
    # another sender from the same client: the same count
    assert exim.session("b@example.org", host="192.0.2.7").rcpt_codes == \
        [451]
    assert redis.cli("GET", "senderwatch:ip:192.0.2.7") == "4"
    assert exim.session("a@example.org", host="192.0.2.8").rcpt_codes == \
        [250]
    # two addresses of one IPv6 /64 share a count
    assert exim.session("a@example.org", rcpts=rcpts[:2],
                        host="2001:db8::5").rcpt_codes == [250, 250]
    assert exim.session("a@example.org",
                        host="2001:db8::6").rcpt_codes == [451]
    assert redis.cli("GET", "senderwatch:ip:2001.0db8.0000.0000.0000."
                     "0000.0000.0000/64") == "3"
    # hosts outside my_hosts are not counted
    assert exim.session("a@example.org", rcpts=rcpts,
                        host="198.51.100.7").rcpt_codes == [250] * 3
    before = keys(redis, "senderwatch:ip:*")
    assert len(before) == 3
    # local submission (exim -bs): no client address, never counted
    s = exim.session("local@test.example", rcpts=rcpts, local=True)
    assert s.rcpt_codes == [250] * 3
    assert keys(redis, "senderwatch:ip:*") == before

    # Without its "def:sender_host_address" guard the same snippet would
    # count every local submission under one empty key: the guard is what
    # kept them out above.
    unguarded = RuleExim(
        tmp, "senderwatch-client-ip.acl", sock, name="unguarded",
        my_hosts=local_too,
        edit=lambda t: t.replace(
            "          condition    = ${if def:sender_host_address}\n", ""))
    unguarded.session("local@test.example", local=True)
    assert redis.cli("GET", "senderwatch:ip:<>") == "1"


def test_sender_normalised(make_shim, redis, tmp):
    shim, sock = make_shim(rules=RULES)
    exim = RuleExim(tmp, "senderwatch-sender.acl", sock)
    assert exim.session("Alice+x@Example.org").rcpt_codes == [250]
    assert exim.session("alice@example.org").rcpt_codes == [250]
    s = exim.session("ALICE+lists@EXAMPLE.ORG")
    assert s.rcpt_codes == [451] and s.rcpt[0].text == DEFER
    assert s.logged("F=<ALICE+lists@EXAMPLE.ORG> temporarily rejected RCPT "
                    "<rcpt@test.example>: senderwatch: sender over the "
                    "limit"), s.log
    assert redis.cli("GET", "senderwatch:sender:alice@example.org") == "3"
    # a different local part is a different sender
    assert exim.session("bob+x@example.org").rcpt_codes == [250]
    assert keys(redis, "senderwatch:sender:*") == [
        "senderwatch:sender:alice@example.org",
        "senderwatch:sender:bob@example.org"]


DEBIAN_EXIM = "/etc/exim4"
UPDATE_EXIM = "/usr/sbin/update-exim4.conf"


class DebianExim(RuleExim):
    """Debian's own split configuration, set up the way the snippets'
    headers tell an admin: the RCPT part pasted into a copy of
    conf.d/acl/30_exim4-config_check_rcpt right after its first statement
    (local submissions), ahead of the accepts for relay hosts and
    authenticated users; my_hosts in conf.d/main; the relay network in
    update-exim4.conf.conf; the file made by update-exim4.conf."""

    def __init__(self, d, snippet, sock, name="debian"):
        top = os.path.join(d, name)
        shutil.copytree(os.path.join(DEBIAN_EXIM, "conf.d"),
                        os.path.join(top, "conf.d"))
        with open(os.path.join(DEBIAN_EXIM, "update-exim4.conf.conf")) as f:
            dc = f.read()
        for k, v in (("dc_eximconfig_configtype", "internet"),
                     ("dc_relay_nets", "192.0.2.0/24"),
                     ("dc_use_split_config", "true")):
            dc = re.sub(r"(?m)^%s=.*$" % k, "%s='%s'" % (k, v), dc)
        with open(os.path.join(top, "update-exim4.conf.conf"), "w") as f:
            f.write(dc)
        with open(os.path.join(top, "conf.d", "main", "000_localmacros"),
                  "w") as f:
            f.write("hostlist my_hosts = 192.0.2.0/24\n")
        rcpt = os.path.join(top, "conf.d", "acl",
                            "30_exim4-config_check_rcpt")
        with open(rcpt) as f:
            acl = f.read()
        first = "  accept\n    hosts = :\n    control = dkim_disable_verify\n"
        assert acl.count(first) == 1, "Debian's check_rcpt has changed"
        part = sections(snippet_text(snippet))["acl_smtp_rcpt"]
        with open(rcpt, "w") as f:
            f.write(acl.replace(first, first + "\n" +
                                part.replace(SNIPPET_SOCK, sock) + "\n"))
        self.dir = top
        self.conf = os.path.join(top, "exim4.conf")
        r = subprocess.run([UPDATE_EXIM, "-d", top, "-o", self.conf],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(not os.path.exists(UPDATE_EXIM),
                    reason="Debian's exim4-config is not installed")
def test_sender_in_debian_split_config(make_shim, redis, tmp):
    """Mail relayed for my_hosts is counted and deferred over the limit,
    though Debian's ACL accepts relay hosts a few statements later."""
    shim, sock = make_shim(rules=RULES)
    exim = DebianExim(tmp, "senderwatch-sender.acl", sock)
    assert exim.verify().returncode == 0
    assert exim.session("Alice@example.org").rcpt_codes == [250]
    assert exim.session("alice+x@example.org").rcpt_codes == [250]
    s = exim.session("alice@example.org")
    assert s.rcpt_codes == [451] and s.rcpt[0].text == DEFER
    assert s.logged("senderwatch: sender over the limit"), s.log
    assert redis.cli("GET", "senderwatch:sender:alice@example.org") == "3"
    # from outside my_hosts: not counted (and not relayed either)
    assert exim.session("alice@example.org", host="198.51.100.7"
                        ).rcpt_codes[0] >= 500
    assert redis.cli("GET", "senderwatch:sender:alice@example.org") == "3"


def test_recipients_per_day_costs_each_recipient(make_shim, redis, tmp):
    shim, sock = make_shim(rules=RULES)
    exim = RuleExim(tmp, "senderwatch-recipients-per-day.acl", sock)
    who = "daily@example.org"
    counter = "senderwatch:rcpt_day:" + who
    three = ["r%d@test.example" % i for i in range(3)]

    s = exim.session(who, rcpts=three, message=mail(who, "to three"))
    assert s.rcpt_codes == [250] * 3 and data_codes(s) == [354, 250]
    assert redis.cli("GET", counter) == "3"
    # a day's window, started by this first message
    assert 86_000_000 < int(redis.cli("PTTL", counter)) <= 86_400_000

    # 3 more would make 6 > 5: the whole message is deferred, costs nothing
    s = exim.session(who, rcpts=three, message=mail(who, "three more"))
    assert s.rcpt_codes == [250] * 3 and data_codes(s) == [354, 451]
    assert s.data[1].text == \
        "4.7.1 Too many recipients from this sender today, try again later"
    assert s.logged("temporarily rejected after DATA: senderwatch: 3 "
                    "recipients would pass the daily limit"), s.log
    assert redis.cli("GET", counter) == "3"
    events = stream_events(redis)
    assert [(e["rule"], e["key"], e["count"], e["cost"]) for e in events] == \
        [("rcpt_day", who, "6", "3")]

    # two still fit in what is left of the day; after that, not one
    s = exim.session(who, rcpts=three[:2], message=mail(who, "two"))
    assert data_codes(s) == [354, 250]
    assert redis.cli("GET", counter) == "5"
    s = exim.session(who, message=mail(who, "one"))
    assert data_codes(s) == [354, 451]
    assert redis.cli("GET", counter) == "5"
    assert len(stream_events(redis)) == 1


def test_shadow_never_defers_and_announces_once(make_shim, redis, tmp):
    shim, sock = make_shim(rules=RULES)
    exim = RuleExim(tmp, "senderwatch-shadow.acl", sock)
    who = "trial@example.org"
    sessions = [exim.session(who, rcpts=["a@test.example", "b@test.example"])
                for _ in range(3)]
    # 6 recipients against a limit of 2: nothing refused, nothing logged
    assert [s.rcpt_codes for s in sessions] == [[250, 250]] * 3
    assert [s.log for s in sessions] == [[]] * 3
    assert redis.cli("GET", "senderwatch:trial:" + who) == "6"
    # ... but the crossing is in the stream, once, marked shadow
    events = stream_events(redis)
    assert [(e["rule"], e["key"], e["count"], e["limit"], e["shadow"])
            for e in events] == [("trial", who, "3", "2", "1")]
    crossings = [l for l in shim.log().splitlines() if "event=crossing" in l]
    assert len(crossings) == 1
    assert 'rule=trial key="%s" count=3 limit=2' % who in crossings[0]
    assert crossings[0].endswith("shadow=yes")

    # The same snippet with the rule in enforce mode: Exim warns for each
    # recipient over the limit, and still accepts them all.
    enforce = RULES.replace("mode: shadow", "mode: enforce")
    _, sock2 = make_shim("enforce", rules=enforce)
    exim2 = RuleExim(tmp, "senderwatch-shadow.acl", sock2, name="exim2")
    s = exim2.session("e@example.org", rcpts=["a@test.example",
                                              "b@test.example",
                                              "c@test.example"])
    assert s.rcpt_codes == [250] * 3
    assert s.log == ["H=(client.example) [192.0.2.1] Warning: senderwatch: "
                     "trial would defer this sender"]
