"""The daemons' Prometheus pages (metrics.shim, metrics.alerter) against
real parts: redis-server, the shim, the alerter, an SMTP receiver, Debian's
promtool and a real Prometheus server scraping both daemons once a second,
and the Grafana dashboard deploy/grafana/senderwatch.json, every expression
of which is run against that Prometheus after a load run.

One set of processes serves the whole module (Prometheus takes a second or
two to start), so the counters add up from test to test: each test takes
its numbers from the daemons' control sockets and from what it sent, never
from a fresh start.  The HTTP flood tests run throwaway shims of their own,
since a flood may leave a metrics endpoint unusable.
"""
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import (ALERTER, ROOT, RUN_USER, SHIM, VALGRIND, Daemon, Redis,
                      ask, free_port, read_all, shim_answers, wait_for,
                      write_config)
from test_alerter import Sink

PROMTOOL = "/usr/bin/promtool"
PROMETHEUS = "/usr/bin/prometheus"
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "senderwatch.json")
STREAM = "senderwatch:stream"
GROUP = "senderwatch-alerters"
JOBS = {"shim": "senderwatch-shim", "alerter": "senderwatch-alerter"}
SLOW = 10 if VALGRIND else 1        # deadlines stretch under valgrind

# The contract: every family each daemon must serve, with its type.
COMMON = {
    "senderwatch_redis_up": "gauge",
    "senderwatch_build_info": "gauge",
    "senderwatch_config_reloads_total": "counter",
    "senderwatch_start_time_seconds": "gauge",
}
SHIM_FAMILIES = dict(COMMON, **{
    "senderwatch_decisions_total": "counter",
    "senderwatch_fail_policy_total": "counter",
    "senderwatch_decision_duration_seconds": "histogram",
    "senderwatch_crossings_total": "counter",
    "senderwatch_bad_requests_total": "counter",
    "senderwatch_client_timeouts_total": "counter",
    "senderwatch_listed_total": "counter",
    "senderwatch_policy_skipped_total": "counter",
    "senderwatch_sessions": "gauge",
    "senderwatch_sessions_waiting": "gauge",
    "senderwatch_sessions_shed_total": "counter",
    "senderwatch_accept_paused_total": "counter",
    "senderwatch_script_loads_total": "counter",
    "senderwatch_script_calls_total": "counter",
    "senderwatch_script_decisions_total": "counter",
    "senderwatch_script_resent_total": "counter",
    "senderwatch_script_held_total": "counter",
    "senderwatch_override_reads_skipped_total": "counter",
    "senderwatch_near_cache_hits_total": "counter",
    "senderwatch_near_cache_flushes_total": "counter",
    "senderwatch_near_cache_flush_failures_total": "counter",
    "senderwatch_near_cache_evictions_total": "counter",
    "senderwatch_near_cache_lost_total": "counter",
    "senderwatch_near_cache_entries": "gauge",
    "senderwatch_near_cache_unsent": "gauge",
    "senderwatch_near_cache_bytes": "gauge",
})
ALERTER_FAMILIES = dict(COMMON, **{
    "senderwatch_mails_sent_total": "counter",
    "senderwatch_mails_failed_total": "counter",
    "senderwatch_mails_retried_total": "counter",
    "senderwatch_alerts_pending": "gauge",
    "senderwatch_alerts_oldest_pending_age_seconds": "gauge",
    "senderwatch_alerts_sampled_time_seconds": "gauge",
    "senderwatch_events_read_total": "counter",
    "senderwatch_events_claimed_total": "counter",
    "senderwatch_events_lost_total": "counter",
    "senderwatch_events_mailed_total": "counter",
    "senderwatch_read_errors_total": "counter",
})
# The labels a dashboard may use: the daemons' own and Prometheus's target
# labels job and instance (nothing a particular deployment adds).
LABELS = {"job", "instance", "rule", "answer", "reason", "le", "result",
          "version"}

CONF = """\
shim:
  listen: [ {sock} ]
  socket_mode: "0666"
  near_cache: 0   # counts read at once; the cache: test_near_cache.py
  client_timeout: 500ms
{user}redis:
  address: unix:{redis}
  timeout: 500ms
  on_error: "no"
events:
  channel: senderwatch:events
  stream: {stream}
rules:
  default: {{ limit: 3, window: 1h, deny: [ blocked@example.net ] }}
  load: {{ limit: 20, window: 1h }}
alerts:
  from: Senderwatch <senderwatch@example.com>
  to: [ director@example.com ]
  subject: Mail Abuse Alert
  smtp: 127.0.0.1:{smtp}
  digest_wait: 50ms
  digest_max: 100
  consumer: prom-test
  claim_idle: 1s
  retry_max: 500ms
control:
  shim: {shim_ctl}
  alerter: {alerter_ctl}
metrics:
  shim: 127.0.0.1:{shim_port}
  alerter: 127.0.0.1:{alerter_port}
"""


# --- helpers ------------------------------------------------------------------

def http_get(port, path="/metrics", method="GET", timeout=2.0, body=None):
    """One request on a fresh connection: (status, headers, body)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def page(port):
    status, headers, body = http_get(port)
    assert status == 200, (status, body)
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    return body.decode()


def try_scrape(port, timeout=1.0):
    """The page's bytes, or None when the endpoint does not answer."""
    try:
        status, _, body = http_get(port, timeout=timeout)
    except OSError:
        return None
    return body if status == 200 else None


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """Prometheus text -> ({(name, frozenset(labels)): value}, {family: type})."""
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
            continue
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        labels = frozenset(LABEL.findall(m.group(2) or ""))
        key = (m.group(1), labels)
        assert key not in samples, "duplicate series: %r" % line
        samples[key] = float(m.group(3))
    return samples, types


def value(samples, name, **labels):
    """The one sample of name with exactly these labels."""
    return samples[(name, frozenset(labels.items()))]


def total(samples, name, **match):
    """Sum of name's samples whose labels include match."""
    return sum(v for (n, ls), v in samples.items() if n == name and
               set(match.items()) <= set(ls))


def control(path, command, timeout=5.0):
    """One control-socket command: key=value lines until the daemon closes."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(command.encode() + b"\n")
        text = read_all(s).decode()
    finally:
        s.close()
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition("=")
        out[k] = v
    return out


def ctl_int(path):
    return {k: int(v) for k, v in control(path, "stats").items()
            if v.isdigit()}


def promtool(text):
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(),
                       capture_output=True, timeout=30)
    return r.returncode, (r.stdout + r.stderr).decode()


class Prometheus:
    """A real Prometheus server in a private directory, scraping every 1 s."""

    def __init__(self, d, targets):
        self.dir = os.path.join(d, "prometheus")
        os.makedirs(self.dir)
        self.port = free_port()
        self.log = os.path.join(self.dir, "prometheus.log")
        conf = ["global:", "  scrape_interval: 1s", "  scrape_timeout: 1s",
                "  evaluation_interval: 1s", "scrape_configs:"]
        for job, port in targets.items():
            conf += ["  - job_name: %s" % job,
                     "    static_configs:",
                     "      - targets: [ '127.0.0.1:%d' ]" % port]
        self.conf = write_config(os.path.join(self.dir, "prometheus.yml"),
                                 "\n".join(conf) + "\n")
        self.proc = None

    def start(self):
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [PROMETHEUS, "--config.file=" + self.conf,
                 "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
                 "--web.listen-address=127.0.0.1:%d" % self.port,
                 "--storage.tsdb.retention.time=1h", "--log.level=warn"],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.dir)

        def ready():
            assert self.proc.poll() is None, open(self.log).read()[-3000:]
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/-/ready"
                                            % self.port, timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False
        wait_for(ready, timeout=30 * SLOW, what="prometheus /-/ready",
                 interval=0.1)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def api(self, path, **params):
        url = "http://127.0.0.1:%d/api/v1/%s?%s" % (
            self.port, path, urllib.parse.urlencode(params, doseq=True))
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:     # 400, 422: a bad query
            return json.load(e)

    def query(self, expr, **params):
        out = self.api("query", query=expr, **params)
        assert out["status"] == "success", (expr, out)
        return out["data"]

    def vector(self, expr):
        """{frozenset(labels): value} of an instant query."""
        data = self.query(expr)
        assert data["resultType"] == "vector", (expr, data)
        return {frozenset(r["metric"].items()): float(r["value"][1])
                for r in data["result"]}

    def scalar(self, expr):
        """The value of an expression with one series, or None."""
        v = self.vector(expr)
        return next(iter(v.values())) if len(v) == 1 else None

    def targets(self):
        return self.api("targets")["data"]["activeTargets"]


class Env:
    """Redis, the SMTP receiver, the shim and the alerter, sharing one
    config file; and a tally of the decisions the tests asked for."""

    def __init__(self, d):
        self.dir = d
        self.redis = Redis(d).start()
        self.sink = Sink(d).start()
        self.sock = os.path.join(d, "shim.sock")
        self.ctl = {r: os.path.join(d, r + ".ctl") for r in JOBS}
        self.port = {r: free_port() for r in JOBS}
        self.conf_text = CONF.format(
            sock=self.sock, redis=self.redis.sock, stream=STREAM,
            smtp=self.sink.port, shim_ctl=self.ctl["shim"],
            alerter_ctl=self.ctl["alerter"], shim_port=self.port["shim"],
            alerter_port=self.port["alerter"],
            user=("  user: %s\n" % RUN_USER) if RUN_USER else "")
        self.conf = write_config(os.path.join(d, "senderwatch.yaml"),
                                 self.conf_text)
        self.tally = {}                 # (rule, answer) -> decisions asked
        self.lock = threading.Lock()
        self.shim = Daemon(SHIM, self.conf, d, "shim")
        self.shim.start(wait=lambda: shim_answers(self.sock) and
                        "script_loaded" in self.shim.log() and
                        try_scrape(self.port["shim"]) is not None)
        self.alerter = Daemon(ALERTER, self.conf, d, "alerter")
        self.alerter.start(wait=lambda: "event=redis_up conn=alerter " in
                           self.alerter.log() and self.scrape_has(
                               "alerter", "senderwatch_redis_up 1\n"))

    def scrape_has(self, role, text):
        body = try_scrape(self.port[role])
        return body is not None and text.encode() in body

    def decide(self, rule, key, want=None):
        """One counted request, tallied by the answer it got."""
        ans = ask(self.sock, "rule=%s\nkey=%s\n\n" % (rule, key)).decode()
        assert ans in ("yes", "no"), ans
        if want is not None:
            assert ans == want, (rule, key, ans)
        with self.lock:
            self.tally[(rule, ans)] = self.tally.get((rule, ans), 0) + 1
        return ans

    def xlen(self):
        return int(self.redis.cli("XLEN", STREAM))

    def group(self):
        groups = json.loads(self.redis.cli("--json", "XINFO", "GROUPS",
                                           STREAM))
        return next((g for g in groups if g["name"] == GROUP), None)

    def settled(self):
        """Every stream entry delivered to the group and acknowledged."""
        g = self.group()
        last = json.loads(self.redis.cli("--json", "XREVRANGE", STREAM, "+",
                                         "-", "COUNT", "1"))
        return (g is not None and g["pending"] == 0 and bool(last) and
                g["last-delivered-id"] == last[0][0])

    def close(self):
        died = [(d.name, d.proc.poll()) for d in (self.shim, self.alerter)
                if d.proc is not None and d.proc.poll() is not None]
        logs = {d.name: d.log()[-3000:] for d in (self.shim, self.alerter)}
        for d in (self.alerter, self.shim):
            d.stop()
        self.sink.stop()
        self.redis.stop()
        assert not died, "daemon exited during the module: %s\n%s" % (
            died, "\n".join(logs[n] for n, _ in died))


@pytest.fixture(scope="module")
def env():
    d = tempfile.mkdtemp(prefix="sw-prom-")
    os.chmod(d, 0o755)
    e = None
    try:
        e = Env(d)
        yield e
    finally:
        if e is not None:
            e.close()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def prom(env):
    p = Prometheus(env.dir, {JOBS[r]: env.port[r] for r in JOBS}).start()
    yield p
    p.stop()


@pytest.fixture
def spare_shim(env):
    """Factory for throwaway shims on env's Redis with their own metrics
    port: for tests that may leave an endpoint unusable."""
    started = []

    def make(name, redis_sock=None, timeout="100ms",
             rules="  default: { limit: 1000, window: 1h }\n"):
        sock = os.path.join(env.dir, name + ".sock")
        port = free_port()
        conf = write_config(os.path.join(env.dir, name + ".yaml"), (
            "shim:\n  listen: [ %s ]\n  socket_mode: \"0666\"\n  near_cache: 0\n%s"  # counts read at once
            "redis:\n  address: unix:%s\n  timeout: %s\n"
            "events:\n  stream: %s:stream\nrules:\n%s"
            "metrics:\n  shim: 127.0.0.1:%d\n") % (
                sock, ("  user: %s\n" % RUN_USER) if RUN_USER else "",
                redis_sock or env.redis.sock, timeout, name, rules, port))
        d = Daemon(SHIM, conf, env.dir, name)
        d.start(wait=lambda: shim_answers(sock) and
                "script_loaded" in d.log() and
                try_scrape(port) is not None)
        d.sock, d.port = sock, port
        started.append(d)
        return d

    yield make
    died = [(d.name, d.proc.poll()) for d in started
            if d.proc is not None and d.proc.poll() is not None]
    logs = {d.name: d.log()[-3000:] for d in started}
    for d in started:
        d.stop()
    assert not died, "shim exited during the test: %s\n%s" % (
        died, "\n".join(logs[n] for n, _ in died))


def idle_connections(port, n):
    """n TCP connections to port that never send a byte."""
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        out.append(s)
    return out


def closed_by_peer(s):
    """True once the peer has closed s (EOF or reset), without blocking."""
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


# --- 1. the pages pass promtool, and say what happened -------------------------

def test_pages_pass_promtool_after_traffic(env):
    # Yes and no, a crossing, a deny-list answer.
    for i in range(4):
        env.decide("default", "t1-cross@example.org",
                   want="yes" if i == 3 else "no")
    env.decide("default", "blocked@example.net", want="yes")    # listed
    # A bad request and a silent client: answered on_error, not decisions.
    assert ask(env.sock, b"rule=nosuch\nkey=x\n\n") == b"no"
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(5)
    c.connect(env.sock)
    c.sendall(b"half a req")
    t0 = time.monotonic()
    assert read_all(c) == b"no"
    c.close()
    assert time.monotonic() - t0 >= 0.4         # client_timeout: 500ms
    # Redis frozen past redis.timeout (500ms): one fail-policy answer.
    assert env.redis.cli("CLIENT", "PAUSE", "1200") == "OK"
    t0 = time.monotonic()
    assert ask(env.sock, b"rule=default\nkey=t1-paused@example.org\n\n") \
        == b"no"
    assert time.monotonic() - t0 < 1.1
    wait_for(env.redis.ping, timeout=5, what="the pause to end")
    # A reload that fails (the old config stays) and one that works, on
    # both daemons.
    write_config(env.conf, env.conf_text + "bogus: 1\n")
    for r in JOBS:
        assert "error" in control(env.ctl[r], "reload"), r
    write_config(env.conf, env.conf_text)
    for r in JOBS:
        assert control(env.ctl[r], "reload") == {"ok": ""}, r
    # The crossing mailed.
    wait_for(lambda: env.settled() and
             env.scrape_has("alerter", "senderwatch_events_mailed_total 1\n"),
             timeout=10 * SLOW, what="the crossing mailed")

    pages = {r: page(env.port[r]) for r in JOBS}
    for r, text in pages.items():
        rc, out = promtool(text)
        assert rc == 0 and out == "", (r, rc, out, text)

    shim, types = parse(pages["shim"])
    assert types == SHIM_FAMILIES
    alerter, types = parse(pages["alerter"])
    assert types == ALERTER_FAMILIES

    # The shim's page agrees with its control socket and with what we sent.
    st = ctl_int(env.ctl["shim"])
    decisions = total(shim, "senderwatch_decisions_total")
    assert decisions == st["decisions"] + st["listed"] == 5
    for (rule, ans), n in env.tally.items():
        assert value(shim, "senderwatch_decisions_total", rule=rule,
                     answer=ans) == n, (rule, ans)
    assert value(shim, "senderwatch_decisions_total", rule="default",
                 answer="yes") == 2
    assert value(shim, "senderwatch_listed_total") == st["listed"] == 1
    assert value(shim, "senderwatch_crossings_total") == st["crossings"] == 1
    assert value(shim, "senderwatch_bad_requests_total") == 1
    assert value(shim, "senderwatch_client_timeouts_total") == 1
    assert value(shim, "senderwatch_fail_policy_total",
                 reason="timeout") == st["fail_timeout"] == 1
    assert total(shim, "senderwatch_fail_policy_total") == st["fail_policy"]
    assert value(shim, "senderwatch_redis_up") == 1
    assert value(shim, "senderwatch_sessions") >= 0
    # Nobody waits on Redis between requests.
    assert value(shim, "senderwatch_sessions_waiting") == 0 == \
        st["sessions_waiting"]
    assert value(shim, "senderwatch_script_loads_total") >= 1
    # The histogram: cumulative, +Inf == _count == every timed answer.
    name = "senderwatch_decision_duration_seconds"
    buckets = sorted((float(dict(ls)["le"]), v) for (n, ls), v in
                     shim.items() if n == name + "_bucket")
    assert buckets[-1][0] == float("inf") and len(buckets) == 14
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])), buckets
    count = value(shim, name + "_count")
    assert buckets[-1][1] == count == decisions + st["fail_policy"]
    assert 0 < value(shim, name + "_sum") < count
    # The paused request waited past 0.25 s: the top buckets hold it.
    assert count - dict(buckets)[0.25] >= 1

    at = ctl_int(env.ctl["alerter"])
    for m, k in (("mails_sent", "mails_sent"), ("mails_failed", "mails_failed"),
                 ("mails_retried", "mails_retried"),
                 ("events_read", "events_read"),
                 ("events_claimed", "events_claimed"),
                 ("events_lost", "events_lost"),
                 ("events_mailed", "events_mailed"),
                 ("read_errors", "read_errors")):
        assert value(alerter, "senderwatch_%s_total" % m) == at[k], m
    assert value(alerter, "senderwatch_mails_sent_total") == \
        len(env.sink.mails()) == 1
    assert value(alerter, "senderwatch_events_mailed_total") == 1
    assert value(alerter, "senderwatch_redis_up") == 1
    for p in (shim, alerter):
        assert value(p, "senderwatch_config_reloads_total", result="ok") == 1
        assert value(p, "senderwatch_config_reloads_total",
                     result="failed") == 1
        info = [(dict(ls), v) for (n, ls), v in p.items()
                if n == "senderwatch_build_info"]
        assert len(info) == 1 and info[0][1] == 1, info
        assert re.fullmatch(r"\d+\.\d+\.\d+\S*", info[0][0]["version"])
        assert time.time() - 600 < value(
            p, "senderwatch_start_time_seconds") <= time.time()


# --- 2. HTTP behaviour ---------------------------------------------------------

def test_http_paths_and_methods(env):
    for r in JOBS:
        port = env.port[r]
        for path in ("/", "/metricsx", "/metrics/", "/favicon.ico"):
            assert http_get(port, path)[0] == 404, (r, path)
        for method in ("POST", "PUT", "DELETE"):
            assert http_get(port, method=method, body=b"x=1")[0] == 405, \
                (r, method)
        status, headers, body = http_get(port, method="HEAD")
        assert status == 200 and body == b"", r
        status, headers, body = http_get(port)
        assert status == 200 and b"senderwatch_redis_up " in body, r
        assert headers["content-type"] == \
            "text/plain; version=0.0.4; charset=utf-8"
        # Two requests on one kept-alive connection, as Prometheus does.
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            for _ in range(2):
                c.request("GET", "/metrics")
                resp = c.getresponse()
                assert resp.status == 200 and resp.read(), r
        finally:
            c.close()


def test_idle_client_does_not_block_a_scrape(env):
    for r in JOBS:
        port = env.port[r]
        idle = idle_connections(port, 1)
        slow = socket.create_connection(("127.0.0.1", port), timeout=5)
        slow.sendall(b"GET /metr")                  # and then nothing
        try:
            t0 = time.monotonic()
            body = try_scrape(port, timeout=1.0)
            took = time.monotonic() - t0
            assert body is not None and b"senderwatch_redis_up " in body, r
            assert took < 1.0, (r, took)
        finally:
            for s in idle + [slow]:
                s.close()


def test_connection_flood_leaves_the_shim_answering(spare_shim):
    """More idle connections than the endpoint takes (8): the daemon
    stays up and keeps answering Exim, and scrapes work again once the
    flood goes away."""
    shim = spare_shim("flood")
    idle = idle_connections(shim.port, 20)
    try:
        for i in range(20):
            t0 = time.monotonic()
            assert ask(shim.sock, b"flood%d@example.org\n" % i) == b"no"
            assert time.monotonic() - t0 < 0.5 * SLOW
        assert shim.proc.poll() is None
    finally:
        for s in idle:
            s.close()
    wait_for(lambda: try_scrape(shim.port, timeout=0.5) is not None,
             timeout=3 * SLOW, what="a scrape after the flood left")
    assert shim.proc.poll() is None


def test_scrapes_resume_after_idle_clients_time_out(spare_shim):
    """Idle clients that fill the endpoint's 8 connections are dropped
    after 5 s (metrics.c's bound); the endpoint must then serve again,
    with the flood's excess still waiting in the listen backlog."""
    shim = spare_shim("timeout")
    idle = idle_connections(shim.port, 12)
    try:
        t0 = time.monotonic()
        # The daemon drops the 8 it took once they have been silent 5 s.
        wait_for(lambda: sum(closed_by_peer(s) for s in idle) >= 8,
                 timeout=8 * SLOW, interval=0.1,
                 what="the daemon to drop its idle clients")
        dropped = time.monotonic() - t0
        assert 4 <= dropped <= 7 * SLOW, dropped
        assert ask(shim.sock, b"after@example.org\n") == b"no"
        wait_for(lambda: try_scrape(shim.port, timeout=0.5) is not None,
                 timeout=3 * SLOW, what="a scrape once the idle clients "
                 "were dropped (the endpoint stays deaf after it reached "
                 "its connection limit)")
    finally:
        for s in idle:
            s.close()


# --- the counters at the edges -------------------------------------------------

def test_crossing_answered_too_late_is_still_counted(env, spare_shim):
    """A crossing whose reply comes after redis.timeout: the client got the
    fail policy, but the script ran, recorded the crossing in the stream
    and an alerter will mail it.  senderwatch_crossings_total must count it
    (the dashboard's crossings and the mails must agree)."""
    redis = Redis(env.dir, name="late-redis").start()
    shim = None
    try:
        shim = spare_shim("late", redis_sock=redis.sock,
                          rules="  default: { limit: 3, window: 1h }\n")
        for _ in range(3):
            assert ask(shim.sock, b"late@example.org\n") == b"no"
        assert redis.cli("CLIENT", "PAUSE", "500") == "OK"
        assert ask(shim.sock, b"late@example.org\n") == b"no"  # fail policy
        wait_for(redis.ping, timeout=5, what="the pause to end")
        wait_for(lambda: redis.cli("XLEN", "late:stream") == "1",
                 what="the late crossing in the stream")
        samples, _ = parse(page(shim.port))
        assert value(samples, "senderwatch_fail_policy_total",
                     reason="timeout") == 1
        assert value(samples, "senderwatch_crossings_total") == 1, \
            "a crossing recorded in the stream is missing from " \
            "senderwatch_crossings_total (its reply came after the timeout)"
    finally:
        if shim is not None:
            shim.stop()
        redis.stop()


# --- 3. a real Prometheus during a load run ------------------------------------

HEAVY, LIGHT = 60, 150      # keys: heavy ones cross the load rule's 20
HEAVY_N, LIGHT_N, FIRST = 25, 10, 10


@pytest.fixture(scope="module")
def loaded(env, prom):
    """Two bursts through the shim socket, Prometheus scraping throughout:
    first FIRST requests for every key (all under the limit), then the
    rest of the heavy keys' requests, each of which crosses once at its
    21st.  Each key is asked by one thread in order, so every answer is
    known beforehand."""
    before = ctl_int(env.ctl["shim"])
    xlen0 = env.xlen()
    keys = ["heavy%d@example.org" % i for i in range(HEAVY)] + \
           ["light%d@example.org" % i for i in range(LIGHT)]
    errors = []

    def burst(work):
        def run(part):
            try:
                for key, lo, hi in part:
                    for n in range(lo + 1, hi + 1):
                        env.decide("load", key, want="yes" if n > 20 else "no")
            except Exception as e:          # every failure is a finding
                errors.append(repr(e))
        threads = [threading.Thread(target=run, args=(work[i::8],))
                   for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors[:5]

    def prom_sees(n):
        return prom.scalar("sum(senderwatch_decisions_total)") == n

    t0 = time.monotonic()
    burst([(k, 0, FIRST) for k in keys])
    mid = ctl_int(env.ctl["shim"])
    # Scraped between the bursts: Prometheus holds the middle value.
    wait_for(lambda: prom_sees(mid["decisions"] + mid["listed"]),
             timeout=10 * SLOW, interval=0.2,
             what="prometheus to see the first burst")
    burst([(k, FIRST, HEAVY_N) for k in keys[:HEAVY]] +
          [(k, FIRST, LIGHT_N) for k in keys[HEAVY:]])
    took = time.monotonic() - t0
    after = ctl_int(env.ctl["shim"])
    sent = HEAVY * HEAVY_N + LIGHT * LIGHT_N
    return dict(before=before, mid=mid, after=after, sent=sent, took=took,
                xlen0=xlen0, crossings=HEAVY)


def test_prometheus_sees_the_load(env, prom, loaded):
    before, after = loaded["before"], loaded["after"]
    # The shim decided every request itself: none fell to the fail policy.
    assert after["fail_policy"] == before["fail_policy"]
    assert after["decisions"] - before["decisions"] == loaded["sent"]
    assert after["crossings"] - before["crossings"] == loaded["crossings"]
    assert env.xlen() - loaded["xlen0"] == loaded["crossings"]

    want = after["decisions"] + after["listed"]
    wait_for(lambda: prom.scalar("sum(senderwatch_decisions_total)") == want,
             timeout=10 * SLOW, interval=0.2,
             what="prometheus: sum(senderwatch_decisions_total) == %d" % want)
    # By rule and answer: what the tests asked, exactly.
    got = prom.vector("sum by (rule, answer) (senderwatch_decisions_total)")
    assert {tuple(sorted(k)): v for k, v in got.items() if v} == {
        tuple(sorted({("rule", r), ("answer", a)})): float(n)
        for (r, a), n in env.tally.items()}
    assert env.tally[("load", "yes")] == HEAVY * (HEAVY_N - 20)
    # During the load, not only after: some sample lies between.
    mid = loaded["mid"]["decisions"] + loaded["mid"]["listed"]
    raw = prom.query('senderwatch_decisions_total{job="%s"}[5m]'
                     % JOBS["shim"])["result"]
    by_time = {}
    for series in raw:
        for t, v in series["values"]:
            by_time[t] = by_time.get(t, 0) + float(v)
    assert mid in by_time.values(), sorted(by_time.items())

    crossings = after["crossings"]
    assert crossings == env.xlen()
    wait_for(lambda: prom.scalar("sum(senderwatch_crossings_total)")
             == crossings, timeout=10 * SLOW, interval=0.2,
             what="prometheus: senderwatch_crossings_total == %d" % crossings)

    # Every crossing mailed; the alerter's page says so.
    wait_for(env.settled, timeout=30 * SLOW, interval=0.2,
             what="every crossing mailed and acknowledged")
    mailed_at = time.time()
    mails = len(env.sink.mails())
    wait_for(lambda: prom.scalar("sum(senderwatch_events_mailed_total)")
             == crossings and prom.scalar(
                 "sum(senderwatch_mails_sent_total)") == mails,
             timeout=10 * SLOW, interval=0.2,
             what="prometheus: %d events mailed in %d mails" % (crossings,
                                                                mails))
    assert mails >= 1
    assert prom.scalar("sum(senderwatch_mails_failed_total)") == 0
    assert prom.scalar("sum(senderwatch_events_lost_total)") == 0

    up = prom.vector("senderwatch_redis_up")
    assert {dict(k)["job"]: v for k, v in up.items()} == {
        JOBS["shim"]: 1.0, JOBS["alerter"]: 1.0}
    assert {dict(k)["instance"] for k in up} == {
        "127.0.0.1:%d" % env.port[r] for r in JOBS}

    # The backlog gauges, sampled every 5 s: a sample taken after the
    # last mail says nothing is pending.
    wait_for(lambda: (prom.scalar("senderwatch_alerts_sampled_time_seconds")
                      or 0) > mailed_at,
             timeout=15 * SLOW, interval=0.2,
             what="a backlog sample after the last mail")
    assert prom.scalar("senderwatch_alerts_pending") == 0
    assert prom.scalar("senderwatch_alerts_oldest_pending_age_seconds") == 0

    # Every scrape of both targets worked.
    for t in prom.targets():
        assert t["health"] == "up" and t["lastError"] == "", t
    fails = prom.vector("sum by (job) (count_over_time(up[5m]) - "
                        "sum_over_time(up[5m]))")
    assert set(fails.values()) == {0.0}, fails

    # What was measured, for -s (python3 -m pytest -s ...).
    durations = prom.vector("max_over_time(scrape_duration_seconds[5m])")
    q = {p: prom.scalar(
        "histogram_quantile(%s, sum by (le) (increase("
        "senderwatch_decision_duration_seconds_bucket[5m])))" % p)
        for p in ("0.5", "0.99")}
    print("\nload: %d requests in %.2f s (%.0f/s), %d crossings, %d mails; "
          "decision p50 <= %.4f s p99 <= %.4f s; longest scrape: %s" % (
              loaded["sent"], loaded["took"], loaded["sent"] / loaded["took"],
              loaded["crossings"], mails, q["0.5"], q["0.99"],
              ", ".join("%s %.1f ms" % (dict(k)["job"], v * 1e3)
                        for k, v in sorted(durations.items(),
                                           key=lambda kv: sorted(kv[0])))))


# --- 4. the Grafana dashboard --------------------------------------------------

DS = {"type": "prometheus", "uid": "${datasource}"}


def dashboard():
    with open(DASHBOARD) as f:
        return json.load(f)


def all_panels(panels):
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))


def grafana(expr, rate="30s", rng="5m"):
    """An expression as Grafana would send it with every job and
    instance selected ("All": the variables' allValue)."""
    out = (expr.replace("$__rate_interval", rate)
           .replace("${__rate_interval}", rate)
           .replace("$__interval", "1s").replace("${__interval}", "1s")
           .replace("$__range", rng).replace("${__range}", rng))
    for var, v in (("job", ".+"), ("instance", ".+")):
        out = out.replace("${%s}" % var, v).replace("$" + var, v)
    assert "$" not in out, "an unknown variable in %r" % expr
    return out


def test_dashboard_structure():
    d = dashboard()
    assert d["uid"] == "senderwatch"
    assert 36 <= d["schemaVersion"] <= 39
    assert d.get("id") is None              # importable as a new dashboard
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = list(all_panels(d["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), ids
    assert any(p.get("panels") for p in panels if p["type"] == "row"), \
        "no collapsed row: nested panels untested"
    exprs = 0
    for p in panels:
        assert p["datasource"] == DS, p["title"]
        assert p.get("title"), p["id"]
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        if p["type"] == "row":
            assert not p.get("targets"), p["title"]
            continue
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t.get("datasource", DS) == DS, p["title"]
            assert t["expr"].strip(), p["title"]
            exprs += 1
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == DS, v["name"]
    assert exprs >= 20
    # The panels the operator needs, by what they show.
    text = json.dumps(d)
    for m in ("senderwatch_decisions_total", "senderwatch_fail_policy_total",
              "senderwatch_decision_duration_seconds_bucket",
              "senderwatch_redis_up", "senderwatch_crossings_total",
              "senderwatch_alerts_pending",
              "senderwatch_alerts_oldest_pending_age_seconds",
              "senderwatch_mails_sent_total", "senderwatch_mails_failed_total",
              "senderwatch_mails_retried_total", "senderwatch_sessions",
              "senderwatch_bad_requests_total",
              "senderwatch_client_timeouts_total",
              "senderwatch_config_reloads_total"):
        assert m in text, m
    for q in ("0.5", "0.95", "0.99"):
        assert "histogram_quantile(%s," % q in text, q


def targets_of(d):
    for p in all_panels(d["panels"]):
        for t in p.get("targets", []):
            yield p["title"], t["expr"]


METRIC = re.compile(r"\b(senderwatch_[a-z_]+)")
BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")


def test_dashboard_uses_only_the_contract():
    names = set(SHIM_FAMILIES) | set(ALERTER_FAMILIES)
    names |= {"senderwatch_decision_duration_seconds" + s
              for s in ("_bucket", "_sum", "_count")}
    names.discard("senderwatch_decision_duration_seconds")
    for title, expr in targets_of(dashboard()):
        for m in METRIC.findall(expr):
            assert m in names, (title, m)
        for group in BY.findall(expr):
            for label in filter(None, (x.strip() for x in group.split(","))):
                assert label in LABELS, (title, label)
        for label in MATCHER.findall(expr):
            assert label in LABELS, (title, label)


def test_dashboard_queries_return_data(env, prom, loaded):
    d = dashboard()
    now = time.time()
    bad = []
    n = 0
    for title, expr in targets_of(d):
        q = grafana(expr)
        n += 1
        out = prom.api("query", query=q)
        if out["status"] != "success" or not out["data"]["result"]:
            bad.append((title, q, "instant", out))
            continue
        out = prom.api("query_range", query=q, start=now - 60, end=now,
                       step="2s")
        if out["status"] != "success" or not out["data"]["result"]:
            bad.append((title, q, "range", out))
    assert not bad, "\n".join(repr(b) for b in bad)
    assert n >= 20
    # The variables' label_values() queries find both daemons.
    for v in d["templating"]["list"]:
        if v["type"] != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q)
        assert m, q
        out = prom.api("label/%s/values" % m.group(2),
                       **{"match[]": grafana(m.group(1))})
        assert out["status"] == "success", (q, out)
        want = set(JOBS.values()) if m.group(2) == "job" else {
            "127.0.0.1:%d" % env.port[r] for r in JOBS}
        assert set(out["data"]) == want, (q, out)
