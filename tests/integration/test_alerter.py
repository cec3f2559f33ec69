"""senderwatch-alerter against real parts: redis-server, the shim (whose
script records each crossing in the stream), the alerter, and a real SMTP
receiver (smtp_sink.py, aiosmtpd) that stores what it accepts.  The tests
read the messages the receiver actually got.

"Exactly once" is checked the same way everywhere: wait until the consumer
group has delivered every stream entry and nothing is pending (at that
point no alerter holds anything it could still send), then count each
crossing's stream id across all mails received.
"""
import collections
import email
import email.policy
import email.utils
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

import pytest

from conftest import (ALERTER, RUN_USER, SHIM, VALGRIND, Daemon, Redis, ask, free_port,
                      log_lines, stats, shim_answers, shim_config, wait_for,
                      write_config)

# Another build of the alerter (make B=/tmp/san SAN=1 ...) can be tested
# with SW_ALERTER=/tmp/san/senderwatch-alerter.
ALERTER = os.environ.get("SW_ALERTER", ALERTER)
HERE = os.path.dirname(os.path.abspath(__file__))
SINK = os.path.join(HERE, "smtp_sink.py")
STREAM = "senderwatch:stream"
GROUP = "senderwatch-alerters"
CHANNEL = "senderwatch:events"
RCPTS = ["director@example.com", "second@example.com", "lackey@example.com"]


# --- the SMTP receiver --------------------------------------------------------

class Mail:
    """One message the receiver accepted."""

    def __init__(self, base):
        with open(base + ".eml", "rb") as f:
            self.raw = f.read()
        with open(base + ".json") as f:
            self.meta = json.load(f)
        self.msg = email.message_from_bytes(self.raw,
                                            policy=email.policy.default)
        # The text as a reader gets it (decoded, LF line ends).
        self.body = self.msg.get_content().replace("\r\n", "\n")
        self.ids = re.findall(r"^  Event:\s+(\S+)$", self.body, re.M)

    def header(self, name):
        return str(self.msg[name]) if self.msg[name] is not None else None


class Sink:
    """smtp_sink.py in a subprocess; can be stopped and restarted on the
    same port, as a relay that goes down and comes back."""

    def __init__(self, d, name="sink"):
        self.dir = os.path.join(d, name + "-mail")
        self.out = os.path.join(d, name + ".out")
        self.port = 0
        self.proc = None
        os.makedirs(self.dir, exist_ok=True)

    def start(self, reject=0, delay=0, auth=None, tls=None):
        with open(self.out, "w"):
            pass
        args = [sys.executable, SINK, "--port", str(self.port),
                "--dir", self.dir]
        if reject:
            args += ["--reject", str(reject)]
        if delay:
            args += ["--delay", str(delay)]
        if auth:
            args += ["--auth", auth]
        if tls:
            args += ["--tls", tls]
        with open(self.out, "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out,
                                         stderr=subprocess.STDOUT)

        def listening():
            with open(self.out) as f:
                m = re.search(r"^listening \S+ (\d+)$", f.read(), re.M)
            assert self.proc.poll() is None, open(self.out).read()
            return m
        self.port = int(wait_for(listening, what="smtp_sink").group(1))
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def mails(self):
        names = sorted(n[:-5] for n in os.listdir(self.dir)
                       if n.endswith(".json"))
        return [Mail(os.path.join(self.dir, n)) for n in names]


@pytest.fixture
def sink(tmp):
    s = Sink(tmp).start()
    yield s
    s.stop()


# --- the alerter --------------------------------------------------------------

ALERTER_CONF = """\
{user}redis:
  address: unix:{redis}
events:
  channel: {channel}
  stream: senderwatch:stream
rules:
  default: {{ limit: 3, window: 60s }}
alerts:
  from: Senderwatch <senderwatch@example.com>
  to: [ director@example.com, "Second Director <second@example.com>" ]
  cc: [ lackey@example.com ]
  subject: Mail Abuse Alert
{transport}
  digest_wait: {digest_wait}
  digest_max: {digest_max}
  consumer: {consumer}
  claim_idle: {claim_idle}
  retry_max: {retry_max}
  smtp_timeout: {smtp_timeout}
{extra}"""


def alerter_config(d, redis_sock, name, port=None, sendmail=None,
                   consumer=None, digest_wait="50ms", digest_max=100,
                   claim_idle="1s", retry_max="500ms", smtp_timeout="5s",
                   channel=CHANNEL, extra=""):
    if sendmail is not None:
        transport = "  sendmail: [ %s ]" % ", ".join(
            json.dumps(a) for a in sendmail)
    else:
        transport = "  smtp: 127.0.0.1:%d" % port
    # A console, where the tests read the alerter's counters.
    if "control:" not in extra:
        # After extra, which may go on with the alerts section.
        extra = (extra + ("\n" if extra and not extra.endswith("\n")
                          else "") + "control:\n  alerter: %s\n"
                 % os.path.join(d, name + ".ctl"))
    text = ALERTER_CONF.format(
        user=("shim:\n  user: %s\n" % RUN_USER) if RUN_USER else "",
        redis=redis_sock, channel=channel, transport=transport,
        digest_wait=digest_wait, digest_max=digest_max,
        consumer=consumer or name, claim_idle=claim_idle,
        retry_max=retry_max, smtp_timeout=smtp_timeout, extra=extra)
    return write_config(os.path.join(d, name + ".yaml"), text)


def numsub(redis, channel=CHANNEL):
    out = redis.cli("PUBSUB", "NUMSUB", channel).split()
    return int(out[1]) if len(out) == 2 else 0


@pytest.fixture
def make_alerter(tmp, redis):
    """Factory: make_alerter(name, port=, **alerter_config kwargs)."""
    started = []

    def make(name="alerter", start=True, redis_sock=None, **kw):
        conf = alerter_config(tmp, redis_sock or redis.sock, name, **kw)
        d = Daemon(ALERTER, conf, tmp, name)
        if "control:" not in kw.get("extra", ""):
            d.ctl = os.path.join(tmp, name + ".ctl")
        before = numsub(redis, kw.get("channel", CHANNEL))
        if start:
            d.start(wait=lambda: "event=redis_up conn=alerter " in d.log()
                    and numsub(redis, kw.get("channel", CHANNEL)) > before)
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop()


class Cutter:
    """A Unix-socket proxy between the alerter and Redis.  cut() drops its
    connections and refuses new ones, as a partition would, while the shim
    (connected directly) keeps counting and recording crossings; mend()
    lets the alerter in again."""

    def __init__(self, d, target):
        self.path = os.path.join(d, "cutter.sock")
        self.target = target
        self.lock = threading.Lock()
        self.socks = []
        self.listener = None

    def mend(self):
        lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lst.bind(self.path)
        os.chmod(self.path, 0o777)
        lst.listen(16)
        self.listener = lst
        threading.Thread(target=self._accept, args=(lst,),
                         daemon=True).start()
        return self

    def cut(self):
        with self.lock:
            self.listener.close()
            os.unlink(self.path)
            for s in self.socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.socks = []

    def _accept(self, lst):
        while True:
            try:
                c, _ = lst.accept()
            except OSError:
                return
            r = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            r.connect(self.target)
            with self.lock:
                self.socks += [c, r]
            for a, b in ((c, r), (r, c)):
                threading.Thread(target=self._pump, args=(a, b),
                                 daemon=True).start()

    @staticmethod
    def _pump(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# --- helpers ------------------------------------------------------------------


def cross(sock, key, subjects=(b"Hello",), limit=3):
    """limit + 1 requests for key under rule default: the last one crosses
    (the conftest shim's default rule has limit 3).  Returns the time just
    before the crossing request."""
    if isinstance(key, str):
        key = key.encode()
    for i in range(limit + 1):
        subj = subjects[i % len(subjects)]
        if isinstance(subj, str):
            subj = subj.encode()
        if i == limit:
            t = time.time()
        ans = ask(sock, b"rule=default\nkey=" + key + b"\nsubject=" + subj +
                  b"\n\n")
    assert ans == b"yes", ans
    return t


def stream_ids(redis):
    return [e[0] for e in json.loads(redis.cli("--json", "XRANGE", STREAM,
                                               "-", "+"))]


def stream_entry(redis, entry_id):
    e = json.loads(redis.cli("--json", "XRANGE", STREAM, entry_id, entry_id))
    f = e[0][1]
    return dict(zip(f[0::2], f[1::2]))


def settled(redis, n):
    """True once n crossings are in the stream, the group has delivered
    them all and none is pending: nothing is left for any alerter to send."""
    ids = stream_ids(redis)
    if len(ids) != n:
        return False
    groups = json.loads(redis.cli("--json", "XINFO", "GROUPS", STREAM))
    g = [g for g in groups if g["name"] == GROUP]
    return (len(g) == 1 and g[0]["pending"] == 0 and
            g[0]["last-delivered-id"] == ids[-1])


def pending_of(redis, consumer):
    out = json.loads(redis.cli("--json", "XPENDING", STREAM, GROUP, "-", "+",
                               "100", consumer))
    return [e[0] for e in out]


def mailed_ids(sink):
    return collections.Counter(i for m in sink.mails() for i in m.ids)


def assert_each_once(redis, sink, n):
    wait_for(lambda: settled(redis, n), timeout=15,
             what="%d crossings delivered and acknowledged" % n)
    ids = stream_ids(redis)
    counts = mailed_ids(sink)
    assert sorted(counts) == sorted(ids), (counts, ids)
    assert all(c == 1 for c in counts.values()), counts
    return ids


# --- tests --------------------------------------------------------------------

def test_crossing_mails_once(make_shim, make_alerter, sink, redis):
    shim, sock = make_shim()
    alerter = make_alerter(port=sink.port)
    t0 = cross(sock, "alice@example.org",
               subjects=[b"Cheap pills", b"Cheap pills", b"Hello",
                         b"Re: meeting"])
    ids = assert_each_once(redis, sink, 1)
    mails = sink.mails()
    assert len(mails) == 1
    m = mails[0]
    # Still over the limit: no new crossing, no second mail.
    assert ask(sock, "alice@example.org\n") == b"yes"
    assert_each_once(redis, sink, 1)

    assert m.meta["mail_from"] == "senderwatch@example.com"
    assert sorted(m.meta["rcpt_tos"]) == sorted(RCPTS)
    assert m.header("From") == "Senderwatch <senderwatch@example.com>"
    assert m.header("To") == ("director@example.com, "
                              "Second Director <second@example.com>")
    assert m.header("Cc") == "lackey@example.com"
    assert m.header("Subject") == \
        "Mail Abuse Alert: alice@example.org (default)"
    date = email.utils.parsedate_to_datetime(m.header("Date")).timestamp()
    assert abs(date - t0) < 60
    assert re.fullmatch(r"<senderwatch\.%s\.[0-9a-f]{16}@example\.com>"
                        % re.escape(ids[0]), m.header("Message-ID"))
    assert m.msg.get_content_type() == "text/plain"
    assert m.msg.get_content_charset() == "utf-8"
    assert m.header("Auto-Submitted") == "auto-generated"
    assert not m.msg.defects

    host = stream_entry(redis, ids[0])["host"]
    crossed = time.strftime("%Y-%m-%dT%H:%M:%SZ",
                            time.gmtime(int(stream_entry(redis, ids[0])
                                            ["time"])))
    for line in ["  Key:          alice@example.org",
                 "  Rule:         default, limit 3 in 1m",
                 "  Count:        4 when it crossed, 4 now",
                 "  Crossed at:   " + crossed,
                 "  Reported by:  " + host,
                 "  Event:        " + ids[0]]:
        assert line + "\n" in m.body, (line, m.body)
    assert re.search(r"^  Window:       ends in \d+s$", m.body, re.M)
    # Top subjects, most frequent first, counted across all requests.
    top = re.findall(r"^ {2,}(\d+)  (.+)$", m.body.split("Top subjects")[1],
                     re.M)
    assert top[0] == ("2", "Cheap pills")
    assert sorted(top[1:]) == [("1", "Hello"), ("1", "Re: meeting")]
    assert "event=mail_sent ids=%s events=1 recipients=3" % ids[0] \
        in alerter.log()


def test_down_alerter_catches_up(make_shim, make_alerter, sink, redis):
    shim, sock = make_shim()
    alerter = make_alerter(port=sink.port)
    assert alerter.stop() == 0
    for k in ("a@example.org", "b@example.org", "c@example.org"):
        cross(sock, k)
    assert len(stream_ids(redis)) == 3
    assert sink.mails() == []
    alerter.start()
    assert_each_once(redis, sink, 3)


def test_entries_trimmed_unread_are_counted(make_shim, make_alerter, sink,
                                            redis):
    """While every alerter is away the stream's cap may trim crossings no
    alerter read: the next read logs how many, the rest are mailed, and
    trimming what was read is no loss."""
    shim, sock = make_shim()
    alerter = make_alerter(port=sink.port)
    assert alerter.stop() == 0
    for k in ("a@example.org", "b@example.org", "c@example.org"):
        cross(sock, k)
    # What the cap (events.stream_maxlen) does: drop the oldest entries.
    assert redis.cli("XTRIM", STREAM, "MAXLEN", "1") == "2"
    cross(sock, "d@example.org")
    alerter.start()
    assert_each_once(redis, sink, 2)
    log = alerter.log()
    assert log.count("event=events_trimmed ") == 1, log
    assert "event=events_trimmed lost=2 stream=%s group=%s " % (STREAM, GROUP) \
        in log
    # Everything read and mailed, then trimmed: nothing is lost.
    assert redis.cli("XTRIM", STREAM, "MAXLEN", "0") == "2"
    cross(sock, "e@example.org")
    (e,) = stream_ids(redis)
    wait_for(lambda: e in mailed_ids(sink), what="the mail about e")
    assert alerter.log().count("event=events_trimmed") == 1
    assert stats(alerter)["events_lost"] == 2


def kill_holding_two(make_shim, make_alerter, sink, redis):
    """Alerter a1 reads two crossings, which a long gather keeps unmailed
    (pending for a1), and is killed."""
    shim, sock = make_shim()
    a1 = make_alerter("a1", port=sink.port, digest_wait="30s")
    for k in ("a@example.org", "b@example.org"):
        cross(sock, k)
    wait_for(lambda: len(pending_of(redis, "a1")) == 2,
             what="a1 to hold both events")
    a1.signal(signal.SIGKILL)
    a1.proc.wait(timeout=10)


def test_killed_alerter_resends_its_pending(make_shim, make_alerter, sink,
                                            redis):
    kill_holding_two(make_shim, make_alerter, sink, redis)
    assert sink.mails() == []
    a2 = make_alerter("a1-again", port=sink.port, consumer="a1")
    ids = assert_each_once(redis, sink, 2)
    for i in ids:
        assert "event=event_resumed id=%s" % i in a2.log()


def test_cut_off_from_redis(make_shim, make_alerter, sink, redis, tmp):
    shim, sock = make_shim()
    cutter = Cutter(tmp, redis.sock).mend()
    alerter = make_alerter(port=sink.port, redis_sock=cutter.path)
    cross(sock, "before@example.org")
    wait_for(lambda: len(sink.mails()) == 1, what="the first mail")
    cutter.cut()
    wait_for(lambda: alerter.log().count("event=redis_down") >= 2,
             what="both alerter connections down")
    cross(sock, "during1@example.org")
    cross(sock, "during2@example.org")
    cutter.mend()
    assert_each_once(redis, sink, 3)


def test_cut_off_between_read_and_mail(make_shim, make_alerter, sink, redis,
                                       tmp):
    # The events are read (pending), then Redis goes away before the mail
    # is prepared: the batch waits, and goes out once Redis is back.
    shim, sock = make_shim()
    cutter = Cutter(tmp, redis.sock).mend()
    alerter = make_alerter(port=sink.port, redis_sock=cutter.path,
                           digest_wait="1s")
    cross(sock, "a@example.org")
    cross(sock, "b@example.org")
    wait_for(lambda: len(pending_of(redis, "alerter")) == 2,
             what="both events read")
    cutter.cut()
    wait_for(lambda: "event=batch_waiting events=2 step=prepare" in
             alerter.log(), what="the batch to wait for Redis")
    assert sink.mails() == []
    cutter.mend()
    assert_each_once(redis, sink, 2)
    assert len(sink.mails()) == 1


def test_lost_wakeup_only_delays(make_shim, make_alerter, sink, redis):
    # Subscribed to a channel nobody publishes on: only the poll reads.
    shim, sock = make_shim()
    make_alerter(port=sink.port, channel="elsewhere")
    t0 = cross(sock, "quiet@example.org")
    assert_each_once(redis, sink, 1)
    assert sink.mails()[0].meta["received_at"] - t0 < 3.0


def test_two_alerters_one_mail_per_crossing(make_shim, make_alerter, sink,
                                            redis):
    shim, sock = make_shim()
    a1 = make_alerter("a1", port=sink.port, digest_wait="20ms")
    a2 = make_alerter("a2", port=sink.port, digest_wait="20ms")
    for i in range(20):
        cross(sock, "k%02d@example.org" % i)
        if i % 5 == 4:
            time.sleep(0.05)    # let some crossings go out on their own
    assert_each_once(redis, sink, 20)
    sent = [d.log().count("event=mail_sent") for d in (a1, a2)]
    assert sum(sent) == len(sink.mails())


def test_one_process_per_consumer_name(make_shim, make_alerter, sink,
                                        redis):
    """A second alerter configured with a consumer name already in use
    waits (and says so) instead of mailing the first one's events; it
    takes over once the first is gone.  A restart of the same alerter is
    not kept waiting by its own earlier lease."""
    shim, sock = make_shim()
    first = make_alerter("first", port=sink.port, consumer="mx1")
    lease = "senderwatch:alerter:mx1"
    wait_for(lambda: redis.cli("GET", lease).endswith(" %d" % first.proc.pid),
             what="the first alerter's lease")
    assert 0 < int(redis.cli("PTTL", lease)) <= 3000
    second = make_alerter("second", port=sink.port, consumer="mx1")
    wait_for(lambda: "event=consumer_in_use consumer=mx1" in second.log(),
             what="the second alerter to see the name in use")
    for k in ("a@example.org", "b@example.org", "c@example.org"):
        cross(sock, k)
    assert_each_once(redis, sink, 3)
    assert "event=mail_sent" not in second.log()
    assert "event=event_" not in second.log()

    # Gone: its pid on this host no longer runs, so no wait for the lapse.
    assert first.stop() == 0
    wait_for(lambda: "event=consumer_free consumer=mx1" in second.log(),
             timeout=10, what="the second alerter to take over")
    cross(sock, "d@example.org")
    assert_each_once(redis, sink, 4)
    assert "event=mail_sent" in second.log()

    # Stopped and started again: its own lease does not hold it up.
    in_use = second.log().count("event=consumer_in_use")
    assert second.stop() == 0
    second.start(wait=lambda: second.log().count("event=redis_up "
                                                 "conn=alerter ") == 2)
    cross(sock, "e@example.org")
    assert_each_once(redis, sink, 5)
    assert second.log().count("event=consumer_in_use") == in_use
    assert redis.cli("GET", lease).endswith(" %d" % second.proc.pid)

    # Held from another host: wait until that lease lapses unrenewed.  It
    # must outlive the alerter's start, which valgrind makes seconds long
    # (a lease gone before the first look is no wait to see).
    hold_ms = 8000 if VALGRIND else 1500
    assert second.stop() == 0
    redis.cli("SET", lease, "mx9.example 4242", "PX", str(hold_ms))
    second.start(wait=lambda: second.log().count("event=redis_up "
                                                 "conn=alerter ") == 3)
    wait_for(lambda: second.log().count("event=consumer_in_use") > in_use,
             timeout=hold_ms / 1000, what="the wait for the other host's "
             "lease")
    assert 'holder="mx9.example 4242"' in second.log()
    cross(sock, "f@example.org")
    wait_for(lambda: second.log().count("event=consumer_free") == 2,
             timeout=hold_ms / 1000 + 10,
             what="the lapse of the other host's lease")
    assert_each_once(redis, sink, 6)


def test_dead_alerter_is_taken_over(make_shim, make_alerter, sink, redis):
    kill_holding_two(make_shim, make_alerter, sink, redis)
    t = time.time()
    a2 = make_alerter("a2", port=sink.port, claim_idle="1s")
    assert_each_once(redis, sink, 2)
    # Not before a1's entries were idle for claim_idle.
    assert min(m.meta["received_at"] for m in sink.mails()) - t >= 0.5
    assert a2.log().count("event=event_claimed") == 2


def test_live_alerter_keeps_its_events(make_shim, make_alerter, sink, redis,
                                       tmp):
    # a1's relay is down: it retries and keeps its entries from a2, whose
    # relay works, for much longer than claim_idle.
    shim, sock = make_shim()
    relay1 = Sink(tmp, "relay1").start()
    relay1.stop()               # its port is now refused
    a1 = make_alerter("a1", port=relay1.port, claim_idle="1s",
                      retry_max="300ms")
    cross(sock, "held@example.org")
    wait_for(lambda: "event=mail_failed" in a1.log(), what="a1 to fail")
    a2 = make_alerter("a2", port=sink.port, claim_idle="1s")
    # a2 polls and claims idle entries every 250 ms: over 3.5 s it would
    # have had a dozen chances to take a1's entry.
    deadline = time.time() + 3.5
    while time.time() < deadline:
        assert pending_of(redis, "a1") != [], "a1 lost its entry"
        assert sink.mails() == [], "a2 mailed a1's event"
        time.sleep(0.1)
    relay1.start()
    try:
        wait_for(lambda: settled(redis, 1), timeout=10,
                 what="a1 to deliver after its relay is back")
        assert len(relay1.mails()) == 1 and sink.mails() == []
        assert "event=event_claimed" not in a2.log()
    finally:
        relay1.stop()


def test_partitioned_alerter_hands_over(make_shim, make_alerter, sink,
                                        redis, tmp):
    # a1 reads two crossings, then is cut off from Redis for longer than
    # claim_idle: a2 takes them over and mails them.  When a1 is back, its
    # ownership check finds them gone and it drops them: one mail in all.
    shim, sock = make_shim()
    cutter = Cutter(tmp, redis.sock).mend()
    a1 = make_alerter("a1", port=sink.port, redis_sock=cutter.path,
                      digest_wait="1500ms", claim_idle="1s")
    cross(sock, "a@example.org")
    cross(sock, "b@example.org")
    wait_for(lambda: len(pending_of(redis, "a1")) == 2, what="a1 reading")
    cutter.cut()
    wait_for(lambda: "event=batch_waiting events=2 step=prepare" in
             a1.log(), what="a1 to wait for Redis")
    a2 = make_alerter("a2", port=sink.port, claim_idle="1s")
    wait_for(lambda: settled(redis, 2), timeout=10, what="a2 to take over")
    cutter.mend()
    wait_for(lambda: a1.log().count("event=event_handed_over") == 2,
             what="a1 to drop what a2 sent")
    assert_each_once(redis, sink, 2)
    assert len(sink.mails()) == 1
    assert a2.log().count("event=event_claimed") == 2
    assert "event=mail_sent" not in a1.log()


def test_smtp_down_then_back(make_shim, make_alerter, tmp, redis):
    shim, sock = make_shim()
    relay = Sink(tmp, "relay").start()
    relay.stop()
    alerter = make_alerter(port=relay.port, retry_max="400ms")
    cross(sock, "first@example.org")
    wait_for(lambda: alerter.log().count("event=mail_failed") >= 2,
             what="failed attempts with the relay down")
    cross(sock, "second@example.org")
    cross(sock, "third@example.org")
    relay.start()
    try:
        assert_each_once(redis, relay, 3)
        # The first crossing went alone; the two read after the relay came
        # back went together.
        assert sorted(len(m.ids) for m in relay.mails()) == [1, 2]
        assert re.search(r"event=mail_failed ids=\S+ events=1 attempt=1 "
                         r"reason=\"[^\"]*\" retry_in_ms=250", alerter.log())
    finally:
        relay.stop()


def test_smtp_relay_hanging(make_shim, make_alerter, tmp, redis):
    """A relay that accepts connections and never says a word: each
    attempt ends at smtp_timeout and is retried; the mail goes out once a
    working relay answers on that port."""
    shim, sock = make_shim()
    hang = socket.socket()
    hang.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    hang.bind(("127.0.0.1", 0))
    hang.listen(16)
    port = hang.getsockname()[1]
    alerter = make_alerter(port=port, smtp_timeout="300ms", retry_max="300ms")
    cross(sock, "hung@example.org")
    wait_for(lambda: alerter.log().count("event=mail_failed") >= 2,
             what="attempts to end at the timeout")
    assert re.search(r"event=mail_failed .*reason=\"[^\"]*[Tt]ime", alerter.log())
    hang.close()
    relay = Sink(tmp, "relay")
    relay.port = port
    relay.start()
    try:
        assert_each_once(redis, relay, 1)
    finally:
        relay.stop()


class DurableRedis(Redis):
    """A redis-server that keeps its data across a kill -9 (AOF, fsync on
    every write), as a production Redis for senderwatch should."""

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", self.sock,
             "--unixsocketperm", "777", "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--dir", self.dir,
             "--logfile", self.log])
        wait_for(self.ping, what="redis-server to answer")
        return self


def test_redis_restarted_under_the_alerter(make_alerter, tmp):
    """Redis killed with mails pending (the relay is down too) and
    restarted: every crossing is mailed once, before and after."""
    r = DurableRedis(tmp, "durable").start()
    conf, sock = shim_config(tmp, r.sock, name="dshim")
    shim = Daemon(SHIM, conf, tmp, "dshim")
    relay = Sink(tmp, "relay").start()
    try:
        # The shim subscribes too (overrides for its near cache): it
        # first, then the alerter, so that the count tells them apart.
        shim.start(wait=lambda: shim_answers(sock) and
                   "script_loaded" in shim.log() and numsub(r) == 1)
        alerter = make_alerter(start=False, redis_sock=r.sock, port=relay.port,
                               retry_max="300ms")
        alerter.start(wait=lambda: numsub(r) == 2)
        for k in ("a", "b", "c"):
            cross(sock, k + "@example.org")
        assert_each_once(r, relay, 3)
        # Two more while the relay is down: they stay pending...
        relay.stop()
        cross(sock, "d@example.org")
        cross(sock, "e@example.org")
        wait_for(lambda: alerter.log().count("event=mail_failed") >= 1,
                 what="a failed send")
        # ...when Redis dies and comes back with its data.
        r.kill(signal.SIGKILL)
        r.start()
        wait_for(lambda: "script_loaded" in shim.log().split("event=redis_down")[-1],
                 what="the shim to reload its script")
        relay.start()
        cross(sock, "f@example.org")
        assert_each_once(r, relay, 6)
        assert alerter.proc.poll() is None and shim.proc.poll() is None
    finally:
        shim.stop()
        relay.stop()
        r.stop()


def keys_mailed(sink):
    """How many times each key was mailed, from the mails' bodies."""
    return collections.Counter(
        k for m in sink.mails()
        for k in re.findall(r"^  Key:\s+(\S+)$", m.body, re.M))


def test_alerter_on_a_demoted_master_says_so_and_comes_back(
        make_shim, make_alerter, sink, redis, tmp):
    """Its Redis becomes a replica (what a failover does to the old
    master): writes answer READONLY.  The alerter drops that connection
    at once, refuses to read from a replica, says it cannot read (at once,
    then periodically, and in its stats), and reads again when its Redis
    is a master again."""
    port = free_port()
    other = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", tmp,
         "--logfile", os.path.join(tmp, "other.log")])
    try:
        wait_for(lambda: subprocess.run(
            ["redis-cli", "-p", str(port), "PING"], capture_output=True,
            text=True).stdout.strip() == "PONG", what="the other redis")
        shim, sock = make_shim()
        alerter = make_alerter(port=sink.port)
        cross(sock, "before@example.org")
        wait_for(lambda: keys_mailed(sink)["before@example.org"] == 1,
                 what="the first mail")
        assert redis.cli("REPLICAOF", "127.0.0.1", port) == "OK"
        wait_for(lambda: log_lines(alerter, "event=not_reading"),
                 what="the alerter to say it cannot read")
        # It dropped the replica (READONLY) and will not read from one.
        wait_for(lambda: any(
            "READONLY" in l or "not a master" in l
            for l in log_lines(alerter, "event=redis_down conn=alerter ")),
            what="the alerter to drop the replica")
        st1 = stats(alerter)
        assert st1["reading"] == 0, st1
        wait_for(lambda: stats(alerter)["stalled_s"] > st1["stalled_s"],
                 what="the stall to grow in the stats")
        # A master again: reading resumes, and a new crossing is mailed.
        assert redis.cli("REPLICAOF", "NO", "ONE") == "OK"
        wait_for(lambda: log_lines(alerter, "event=reading_resumed"),
                 timeout=10, what="reading to resume")
        wait_for(lambda: shim_answers(sock) and
                 ask(sock, "probe@example.org\n") == b"no",
                 what="the shim to decide again")
        cross(sock, "after@example.org")
        wait_for(lambda: keys_mailed(sink)["after@example.org"] == 1,
                 timeout=10, what="the mail after the failover")
        assert keys_mailed(sink)["before@example.org"] == 1
        assert stats(alerter)["reading"] == 1
    finally:
        other.terminate()
        other.wait(timeout=10)


def test_stream_deleted_under_the_alerter_skips_nothing_written_after(
        make_shim, make_alerter, sink, redis):
    """The stream deleted while crossings arrive: every crossing recorded
    after the DEL is mailed, once (count.lua makes the group with the new
    stream, before its first entry).  What the DEL took with it was mailed
    if the alerter had read it; what the alerter knew was unread is counted
    lost, and nothing more (what it never saw cannot be counted)."""
    shim, sock = make_shim()
    alerter = make_alerter(port=sink.port, digest_wait="0ms")
    before = ["before%d@example.org" % i for i in range(40)]
    after = ["after%d@example.org" % i for i in range(40)]
    for k in before:
        cross(sock, k)
    assert redis.cli("DEL", STREAM) == "1"
    for k in after:
        cross(sock, k)
    wait_for(lambda: all(keys_mailed(sink)[k] == 1 for k in after),
             timeout=15, what="every crossing after the DEL mailed")
    wait_for(lambda: settled(redis, len(after)), timeout=15,
             what="the new stream delivered and acknowledged")
    mailed = keys_mailed(sink)
    st = stats(alerter)
    missing = [k for k in before if mailed[k] == 0]
    print("\nFIGURE stream deleted: %d before (%d mailed, %d lost, %d "
          "counted lost), %d after (all mailed once)" % (
              len(before), len(before) - len(missing), len(missing),
              st["events_lost"], len(after)))
    assert all(c == 1 for c in mailed.values()), mailed
    assert st["events_lost"] <= len(missing), (missing, st)


def test_temporary_rejection_is_retried(make_shim, make_alerter, tmp, redis):
    shim, sock = make_shim()
    relay = Sink(tmp, "relay").start(reject=2)
    alerter = make_alerter(port=relay.port, retry_max="200ms")
    try:
        cross(sock, "greylisted@example.org")
        assert_each_once(redis, relay, 1)
        log = alerter.log()
        assert log.count("event=mail_failed") == 2
        assert "451" in log
        assert "attempts=3" in log
        # Every attempt carried the same Message-ID.
        rejected = re.findall(r"^rejected (\S+)$", open(relay.out).read(),
                              re.M)
        assert rejected == [relay.mails()[0].header("Message-ID")] * 2
    finally:
        relay.stop()


def test_smtp_auth(make_shim, make_alerter, tmp, redis):
    # A relay that wants AUTH: a wrong password is refused and retried; the
    # right one (after a reload) gets the mail in, logged in as "alerts".
    shim, sock = make_shim()
    relay = Sink(tmp, "relay").start(auth="alerts:s3cret")
    try:
        alerter = make_alerter(port=relay.port, retry_max="300ms", extra=(
            "  smtp_username: alerts\n  smtp_password: wrong\n"
            "  smtp_starttls: \"no\"\n"))
        cross(sock, "auth@example.org")
        wait_for(lambda: "event=mail_failed" in alerter.log(),
                 what="the refused login")
        assert "Login denied" in alerter.log() or "535" in alerter.log()
        assert relay.mails() == []
        with open(alerter.conf) as f:
            text = f.read()
        write_config(alerter.conf, text.replace("smtp_password: wrong",
                                                "smtp_password: s3cret"))
        alerter.signal(signal.SIGHUP)
        assert_each_once(redis, relay, 1)
        assert relay.mails()[0].meta["auth"] == "alerts"
    finally:
        relay.stop()


def test_starttls_required_is_never_skipped(make_shim, make_alerter, sink,
                                            redis):
    # smtp_starttls: yes against a relay without STARTTLS: nothing goes out
    # in clear; the mail waits (and is retried) instead.
    shim, sock = make_shim()
    alerter = make_alerter(port=sink.port, retry_max="300ms",
                           extra="  smtp_starttls: \"yes\"\n")
    cross(sock, "tls@example.org")
    wait_for(lambda: alerter.log().count("event=mail_failed") >= 2,
             what="refusals to send without TLS")
    assert sink.mails() == []
    assert len(pending_of(redis, "alerter")) == 1


def make_ca(d, name):
    """A private CA (openssl, as an admin would) and a certificate it signs
    for the relay at 127.0.0.1: returns (ca.pem, "cert,key")."""
    def ossl(*args):
        subprocess.run(["openssl"] + list(args), cwd=d, check=True,
                       capture_output=True)
    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=%s test CA" % name, "-keyout", name + "-ca.key",
         "-out", name + "-ca.pem")
    ossl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-keyout", name + "-relay.key", "-out", name + "-relay.csr")
    with open(os.path.join(d, name + "-san.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    ossl("x509", "-req", "-days", "1", "-in", name + "-relay.csr",
         "-CA", name + "-ca.pem", "-CAkey", name + "-ca.key",
         "-CAcreateserial", "-extfile", name + "-san.cnf",
         "-out", name + "-relay.pem")
    return (os.path.join(d, name + "-ca.pem"),
            "%s,%s" % (os.path.join(d, name + "-relay.pem"),
                       os.path.join(d, name + "-relay.key")))


def test_starttls_with_a_private_ca(make_shim, make_alerter, tmp, redis):
    """smtp_starttls: yes with smtp_cafile: the relay's certificate is
    checked against that CA; one from another CA is refused and the mail
    waits (pending) rather than go out to a relay that may be anyone."""
    ca, relay_cert = make_ca(tmp, "good")
    other_ca, _ = make_ca(tmp, "other")
    relay = Sink(tmp, "tls").start(tls=relay_cert)
    try:
        shim, sock = make_shim()
        wrong = make_alerter("wrong", port=relay.port, retry_max="300ms",
                             extra="  smtp_starttls: \"yes\"\n"
                                   "  smtp_cafile: %s\n" % other_ca)
        cross(sock, "tls@example.org")
        wait_for(lambda: wrong.log().count("event=mail_failed") >= 2,
                 what="refusals of a certificate from another CA")
        assert "certificate" in wrong.log().lower(), wrong.log()
        assert relay.mails() == []
        assert len(pending_of(redis, "wrong")) == 1
        assert wrong.stop() == 0

        right = make_alerter("right", port=relay.port,
                             extra="  smtp_starttls: \"yes\"\n"
                                   "  smtp_cafile: %s\n" % ca)
        ids = assert_each_once(redis, relay, 1)
        (m,) = relay.mails()
        assert m.meta["tls"] is True
        assert m.ids == ids
        assert "event=mail_sent" in right.log()
    finally:
        relay.stop()


def test_burst_is_one_digest(make_shim, make_alerter, sink, redis):
    shim, sock = make_shim()
    make_alerter(port=sink.port, digest_wait="2s")
    keys = ["burst%02d@example.org" % i for i in range(10)]
    for k in keys:
        cross(sock, k)
    assert_each_once(redis, sink, 10)
    mails = sink.mails()
    assert len(mails) == 1
    m = mails[0]
    assert m.header("Subject") == \
        "Mail Abuse Alert: 10 senders over their limits"
    assert "10 senders went over their limits." in m.body
    for k in keys:
        assert "  Key:          %s\n" % k in m.body


def test_digest_max_caps_a_mail(make_shim, make_alerter, sink, redis):
    shim, sock = make_shim()
    make_alerter(port=sink.port, digest_wait="2s", digest_max=4)
    for i in range(10):
        cross(sock, "cap%02d@example.org" % i)
    assert_each_once(redis, sink, 10)
    assert sorted(len(m.ids) for m in sink.mails()) == [2, 4, 4]


# The shim's requests are lines: a key or subject can hold a CR, never LF.
HOSTILE_KEYS = [
    b"evil\rBcc: victim@example.net",
    b"J\xc3\xbcrgen@b\xc3\xbccher.example",
    b"\xff\xfe@bad-utf8.example",
    b"$(touch PWNED)`touch PWNED2`;touch PWNED3|cat>PWNED4",
    b"-rf",
    b"nul\x00byte@example.org",
    b"\xe2\x80\xaegro.elpmaxe@ecila",
    b"L" * 512,
]
HOSTILE_SUBJECTS = [
    b"Hi\rBcc: victim2@example.net",
    b"$(touch PWNED5); `touch PWNED6`",
    b"\xe2\x80\xae reversed \xf0\x9f\x98\x80",
    b".\r.\rQUIT",
    b"S" * 998,
]
REPORT_SCRIPT = """\
#!/usr/bin/python3
import sys
print("args=%r" % (sys.argv[1:],))
sys.stdout.flush()
sys.stdout.buffer.write(b"ctl=\\x1b[2J bad=\\xff\\xfe nul=\\x00 end\\n.\\nBcc: x@y\\n")
"""


@pytest.mark.parametrize("transport", ["smtp", "sendmail"])
def test_hostile_keys_and_subjects(make_shim, make_alerter, sink, redis, tmp,
                                   transport):
    shim, sock = make_shim()
    report = os.path.join(tmp, "report.py")
    with open(report, "w") as f:
        f.write(REPORT_SCRIPT)
    os.chmod(report, 0o755)
    extra = "  report_command: [ %s ]\n  report_timeout: 5s\n" % report
    if transport == "sendmail":
        kw = dict(sendmail=exim_sendmail(tmp, sink.port))
    else:
        kw = dict(port=sink.port)
    # One mail per crossing (digest_max 1): each key reaches a Subject.
    make_alerter(digest_max=1, extra=extra, **kw)
    for k in HOSTILE_KEYS:
        cross(sock, k, subjects=HOSTILE_SUBJECTS)
    assert_each_once(redis, sink, len(HOSTILE_KEYS))
    mails = sink.mails()
    assert len(mails) == len(HOSTILE_KEYS)
    subjects = []
    for m in mails:
        assert sorted(m.meta["rcpt_tos"]) == sorted(RCPTS)
        assert m.msg["Bcc"] is None
        assert not m.msg.defects, m.msg.defects
        head = m.raw.split(b"\r\n\r\n", 1)[0]
        assert max(len(line) for line in head.split(b"\r\n")) <= 78
        assert all(b < 0x80 for b in head)
        assert max(len(line) for line in m.raw.split(b"\r\n")) <= 998
        subj = m.header("Subject")
        assert "\r" not in subj and "\n" not in subj
        subjects.append(subj)
        assert not re.search(r"^(Bcc|QUIT|\.$)", m.body, re.M)
        # The report command got the key as one argument, never a shell.
        assert "    args=['" in m.body or "not run: a key starting" in m.body
        assert "    ctl=?[2J bad=?? nul=? end\n    .\n    Bcc: x@y\n" \
            in m.body or "-rf" in subj
    for name in os.listdir(tmp) + os.listdir("/") + os.listdir(os.getcwd()):
        assert not name.startswith("PWNED"), name
    text = "\n".join(subjects)
    assert "evil%0DBcc:%20victim@example.net" in text
    assert "Mail Abuse Alert: J\u00fcrgen@b\u00fccher.example (default)" \
        in text
    assert "%FF%FE@bad-utf8.example" in text
    assert "%E2%80%AEgro.elpmaxe@ecila" in text    # no bidi override shown
    assert "L" * 80 + "..." in text
    bodies = "\n".join(m.body for m in mails)
    assert "Hi%0DBcc: victim2@example.net (%XX-escaped" in bodies
    assert "$(touch PWNED5); `touch PWNED6`" in bodies
    assert "not run: a key starting with \"-\"" in bodies
    assert "args=['$(touch%20PWNED)`touch%20PWNED2`;touch%20PWNED3|cat>" \
        "PWNED4']" in bodies


def exim_sendmail(tmp, port):
    """Debian's Exim as the sendmail command: it takes the message on stdin
    (-t: recipients from the headers) and relays it to the sink."""
    if not os.path.exists("/usr/sbin/exim4"):
        pytest.skip("exim4 is not installed")
    d = os.path.join(tmp, "exim")
    for sub in ("spool", "log"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    conf = write_config(os.path.join(d, "exim.conf"), """\
primary_hostname = alerter.test
spool_directory = {d}/spool
log_file_path = {d}/log/%slog
exim_user = {user}
exim_group = {group}
never_users =
keep_environment =
begin routers
relay:
  driver = manualroute
  route_list = * 127.0.0.1 byname
  self = send
  transport = to_sink
begin transports
to_sink:
  driver = smtp
  port = {port}
  hosts_avoid_tls = *
  allow_localhost
""".format(d=d, port=port, user=RUN_USER or os.getlogin(),
           group="nogroup" if RUN_USER else os.getlogin()))
    if RUN_USER:
        subprocess.run(["chown", "-R", RUN_USER, d], check=True)
    return ["/usr/sbin/exim4", "-C", conf, "-odi", "-t", "-oi"]


def test_sendmail_command_failing_is_retried(make_shim, make_alerter, sink,
                                             redis, tmp):
    # A sendmail that refuses until a flag file exists; then real Exim.
    shim, sock = make_shim()
    flag = os.path.join(tmp, "accept")
    wrapper = os.path.join(tmp, "sendmail.sh")
    real = exim_sendmail(tmp, sink.port)
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\n[ -e %s ] || { echo 'queue full' >&2; "
                "exit 75; }\nexec %s\n" % (flag, " ".join(real)))
    os.chmod(wrapper, 0o755)
    alerter = make_alerter(sendmail=[wrapper, "-t"], retry_max="300ms")
    cross(sock, "via-sendmail@example.org")
    wait_for(lambda: "reason=\"sendmail exit 75: queue full\"" in
             alerter.log(), what="the refusal in the log")
    with open(flag, "w"):
        pass
    assert_each_once(redis, sink, 1)
    m = sink.mails()[0]
    assert sorted(m.meta["rcpt_tos"]) == sorted(RCPTS)
    assert m.header("Subject") == \
        "Mail Abuse Alert: via-sendmail@example.org (default)"


def test_report_command_time_limit(make_shim, make_alerter, sink, redis,
                                   tmp):
    shim, sock = make_shim()
    slow = os.path.join(tmp, "slow.sh")
    with open(slow, "w") as f:
        f.write("#!/bin/sh\necho started for \"$1\"\nexec sleep 30\n")
    os.chmod(slow, 0o755)
    extra = ("  report_command: [ %s ]\n  report_timeout: 300ms\n"
             "  report_max_bytes: 64\n" % slow)
    make_alerter(port=sink.port, extra=extra)
    t0 = cross(sock, "slow@example.org")
    assert_each_once(redis, sink, 1)
    m = sink.mails()[0]
    assert m.meta["received_at"] - t0 < 3
    assert "  Report from %s (timed out after 300ms):\n" % slow in m.body
    assert "    started for slow@example.org\n" in m.body


def test_config_check(tmp, redis):
    def check(text):
        path = write_config(os.path.join(tmp, "check.yaml"),
                            "rules:\n  default: { limit: 3, window: 60s }\n"
                            + text)
        r = subprocess.run([ALERTER, "-n", "-c", path], capture_output=True,
                           text=True, timeout=10)
        return r.returncode, r.stdout + r.stderr

    # Every error names the file, the line of the option (or of its
    # section when it is missing) and the option: the alerter's own checks
    # run while the config's lines are known.
    rc, out = check("alerts:\n  from: a@example.com\n")
    assert rc == 1 and "check.yaml:3: alerts.to: is required" in out, out
    rc, out = check("alerts:\n  to: a@example.com\n")
    assert rc == 1 and "check.yaml:3: alerts.from: is required" in out, out
    rc, out = check("alerts:\n  from: a@example.com\n"
                    "  to: [ \"b@example.com\\r\\nBcc: c@example.com\" ]\n")
    assert rc == 1 and "check.yaml:5: alerts.to: must not contain a line " \
        "break" in out, out
    rc, out = check("alerts:\n  from: a@example.com\n  to: b@example.com\n"
                    "  sendmail: [ /usr/sbin/sendmail, -oi ]\n")
    assert rc == 1 and "check.yaml:6: alerts.sendmail: needs -t" in out, out
    rc, out = check("alerts:\n  from: a@example.com\n  to: b@example.com\n"
                    "  smtp: ftp://relay.example\n")
    assert rc == 1 and "check.yaml:6: alerts.smtp: \"ftp://relay.example\": " \
        "only smtp:// and smtps://" in out, out
    rc, out = check("alerts:\n  from: a@example.com\n  to: b@example.com\n"
                    "  cc: [ \"not an address\" ]\n")
    assert rc == 1 and "check.yaml:6: alerts.cc: \"not an address\" is not " \
        "an address" in out, out
    rc, out = check("alerts:\n  from: a@example.com\n  to: b@example.com\n"
                    "  smtp: smtps://relay.example:465\n")
    assert rc == 0 and "configuration OK" in out, out


def test_sighup_reload(make_shim, make_alerter, sink, redis, tmp):
    shim, sock = make_shim()
    alerter = make_alerter(port=sink.port)
    with open(alerter.conf) as f:
        good = f.read()
    write_config(alerter.conf, good.replace("subject: Mail Abuse Alert",
                                            "subject: Reloaded"))
    alerter.signal(signal.SIGHUP)
    wait_for(lambda: "event=reload " in alerter.log(), what="reload")
    cross(sock, "one@example.org")
    assert_each_once(redis, sink, 1)
    assert sink.mails()[0].header("Subject").startswith("Reloaded: ")
    # A bad config is refused and the running one kept.
    write_config(alerter.conf, good.replace("  to: [", "  cc2: ["))
    alerter.signal(signal.SIGHUP)
    wait_for(lambda: "event=reload_failed" in alerter.log(), what="refusal")
    cross(sock, "two@example.org")
    assert_each_once(redis, sink, 2)


def test_sigterm_lets_a_send_finish(make_shim, make_alerter, redis, tmp):
    # A relay that takes 1 s to answer the data; SIGTERM arrives meanwhile.
    shim, sock = make_shim()
    slow = Sink(tmp, "slow").start(delay=1.0)
    alerter = make_alerter(port=slow.port)
    try:
        cross(sock, "inflight@example.org")
        wait_for(lambda: "receiving" in open(slow.out).read(),
                 what="the relay to be receiving")
        assert alerter.stop() == 0
        assert "event=mail_sent" in alerter.log()
        # Accepted and acknowledged: a restart has nothing to send again.
        assert settled(redis, 1) and len(slow.mails()) == 1
    finally:
        slow.stop()


def test_latency(make_shim, make_alerter, sink, redis):
    """Crossing to the receiver's acceptance, sequential crossings,
    digest_wait 50ms.  Target: worst under 1 s with nothing failing."""
    shim, sock = make_shim()
    make_alerter(port=sink.port, digest_wait="50ms")
    lat = []
    for i in range(30):
        t0 = cross(sock, "lat%02d@example.org" % i)
        wait_for(lambda: len(sink.mails()) == i + 1, timeout=5,
                 what="mail %d" % i, interval=0.002)
        lat.append(sink.mails()[-1].meta["received_at"] - t0)
    assert_each_once(redis, sink, 30)
    print("\nalert latency over %d crossings: median %.0f ms, worst %.0f ms"
          % (len(lat), statistics.median(lat) * 1000, max(lat) * 1000))
    assert max(lat) < 1.0
