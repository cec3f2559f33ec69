"""Fixtures shared by the integration tests: real redis-server and real
senderwatch daemons, each in a private temporary directory.

Every wait here polls a condition with a deadline; nothing sleeps and hopes.
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# SW_BUILD: a build directory of its own (make B=DIR), for a second worker.
BUILD = os.environ.get("SW_BUILD") or os.path.join(ROOT, "build")
SHIM = os.path.join(BUILD, "senderwatch-shim")
ALERTER = os.path.join(BUILD, "senderwatch-alerter")

# SW_VALGRIND=1 runs every daemon under valgrind: memory errors and
# definite or indirect leaks at exit fail the test that started it.
VALGRIND = os.environ.get("SW_VALGRIND") == "1"

# The daemons refuse to run as root without a user to switch to; the tests
# run as root in CI, so they switch to nobody and every file they touch
# must be reachable by nobody.
RUN_USER = "nobody" if os.geteuid() == 0 else None


def wait_for(cond, timeout=5.0, what="condition", interval=0.01):
    """Poll cond() until it returns a true value, or fail the test."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(interval)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_all(s):
    """Read a socket until the peer closes it, as Exim's readsocket does."""
    out = b""
    while True:
        b = s.recv(4096)
        if not b:
            return out
        out += b


def ask(path, data, timeout=5.0):
    """Talk to the shim like Exim's readsocket: connect, write, shut the
    write side, read to EOF.  Returns the bytes read."""
    if isinstance(data, str):
        data = data.encode()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        if data:
            s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        return read_all(s)
    finally:
        s.close()


def command_calls(r, name):
    """How many times Redis (r: anything with cli()) ran a command,
    scripts' calls included."""
    for line in r.cli("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_%s:" % name):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


def log_lines(daemon, what):
    """The daemon's log lines that contain what."""
    return [l for l in daemon.log().splitlines() if what in l]


def control(path, line, timeout=5.0):
    """One line to a daemon's control socket; its answer, until it closes."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(line if isinstance(line, bytes) else line.encode())
        out = b""
        while True:
            data = s.recv(65536)
            if not data:
                return out.decode()
            out += data
    finally:
        s.close()


def stats(shim):
    """The shim's counters: from its control socket when it has one (the
    conftest's shims do), else from the line SIGUSR1 makes it log."""
    ctl = getattr(shim, "ctl", None)
    if ctl is not None and os.path.exists(ctl):
        text = control(ctl, b"stats\n", timeout=50 if VALGRIND else 5)
        return {k: int(v) for k, v in
                (l.split("=", 1) for l in text.splitlines() if "=" in l)
                if v.isdigit()}
    before = len(log_lines(shim, "event=stats "))
    shim.signal(signal.SIGUSR1)
    wait_for(lambda: len(log_lines(shim, "event=stats ")) > before,
             timeout=50 if VALGRIND else 5, what="the stats line")
    line = log_lines(shim, "event=stats ")[-1]
    return {k: int(v) for k, v in
            (kv.split("=", 1) for kv in line.split() if "=" in kv)
            if v.isdigit()}


def rss_kb(pid):
    """A process's resident memory in KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


class RespError(Exception):
    pass


class Resp:
    """A binary-safe Redis client on a raw socket: redis-cli mangles keys
    with NUL and CR, and pub/sub needs a connection that stays open."""

    def __init__(self, path, timeout=5.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if not isinstance(a, bytes):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))

    def _fill(self):
        b = self.sock.recv(65536)
        if not b:
            raise ConnectionError("redis closed the connection")
        self.buf += b

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def read(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RespError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RespError("unexpected reply %r" % line)

    def cmd(self, *args):
        self.send(*args)
        return self.read()

    def monitor_start(self):
        """Make this connection a MONITOR: see monitor_lines()."""
        assert self.cmd("MONITOR") == "OK"

    def monitor_lines(self, path, marker="end-of-test"):
        """Every command Redis saw since monitor_start(), through an ECHO
        of marker sent on another connection (the last line); then closes
        this connection."""
        other = Resp(path)
        other.cmd("ECHO", marker)
        other.close()
        lines = []
        while not lines or marker not in lines[-1]:
            lines.append(self.read())
        self.close()
        return lines

    def keys(self):
        """Every key name, exactly as stored (bytes), via SCAN."""
        cursor, found = b"0", set()
        while True:
            cursor, batch = self.cmd("SCAN", cursor, "COUNT", 1000)
            found.update(batch)
            if cursor == b"0":
                return found


@pytest.fixture
def rdb(redis):
    """A binary-safe connection to the test's redis-server."""
    r = Resp(redis.sock)
    yield r
    r.close()


@pytest.fixture
def tmp(request):
    d = tempfile.mkdtemp(prefix="sw-test-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


class Redis:
    """A private redis-server on a Unix socket (no TCP port)."""

    def __init__(self, d, name="redis"):
        self.dir = d
        self.sock = os.path.join(d, name + ".sock")
        self.log = os.path.join(d, name + ".log")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", self.sock,
             "--unixsocketperm", "777", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--logfile", self.log])
        wait_for(self.ping, what="redis-server to answer")
        return self

    def ping(self):
        try:
            return self.cli("PING") == "PONG"
        except Exception:
            return False

    def cli(self, *args):
        """Run one command with redis-cli; returns its stdout, stripped."""
        r = subprocess.run(["redis-cli", "-s", self.sock] + [str(a) for a in args],
                           capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            raise RuntimeError(r.stderr)
        return r.stdout.strip()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def kill(self, sig=signal.SIGKILL):
        self.proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def redis(tmp):
    r = Redis(tmp).start()
    yield r
    r.stop()


def write_config(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)
    return path


class Daemon:
    """A senderwatch daemon run in the foreground with its log captured."""

    def __init__(self, binary, conf, d, name, extra=(), preexec=None):
        self.binary = binary
        self.conf = conf
        self.name = name
        self.logpath = os.path.join(d, name + ".log")
        self.pidfile = os.path.join(d, name + ".pid")
        self.extra = list(extra)
        self.preexec = preexec      # run in the child before exec (limits)
        self.proc = None

    def start(self, wait=None):
        self.logf = open(self.logpath, "ab")
        cmd = [self.binary, "-f", "-v", "-c", self.conf, "-p", self.pidfile] + self.extra
        if VALGRIND:
            self.vglog = self.logpath + ".valgrind"
            cmd = ["valgrind", "-q", "--vgdb=no", "--leak-check=full",
                   "--show-leak-kinds=definite,indirect",
                   "--errors-for-leak-kinds=definite,indirect",
                   "--error-exitcode=99", "--log-file=" + self.vglog] + cmd
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT,
                                     preexec_fn=self.preexec)
        if wait is not None:
            wait_for(wait, timeout=50 if VALGRIND else 5, what=self.name + " to start")
        return self

    def log(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode if self.proc else None
        self.proc = None
        if VALGRIND and rc == 99:
            with open(self.vglog) as f:
                raise AssertionError("valgrind found errors in %s:\n%s"
                                     % (self.name, f.read()[-5000:]))
        return rc


SHIM_CONF = """\
shim:
  listen: [ {sock} ]
  socket_mode: "0666"
{user}  client_timeout: {client_timeout}
{shim_extra}redis:
  address: unix:{redis}
  timeout: {timeout}
{redis_extra}  on_error: "{on_error}"
events:
  channel: senderwatch:events
  stream: senderwatch:stream
rules:
{rules}
"""

DEFAULT_RULES = """\
  default: { limit: 3, window: 60s }
  ip: { limit: 2, window: 60s }
"""


def shim_config(d, redis_sock, name="shim", rules=DEFAULT_RULES, timeout="100ms",
                on_error="no", client_timeout="2s", extra="", near_cache=0,
                batch_wait=None):
    """A shim's config file.  The near cache is off unless near_cache says
    how big: most tests read Redis, or the shim's per-script counters,
    right after a request, and the cache's promises (counts in Redis and
    overrides seen within a second) are test_near_cache.py's; the tests
    that run with it on say so.  batch_wait: redis.batch_wait, where a
    test sets it (test_batch.py's)."""
    sock = os.path.join(d, name + ".sock")
    text = SHIM_CONF.format(sock=sock, redis=redis_sock, timeout=timeout,
                            on_error=on_error, client_timeout=client_timeout,
                            rules=rules,
                            redis_extra=("  batch_wait: %s\n" % batch_wait)
                            if batch_wait is not None else "",
                            shim_extra=("  near_cache: %d\n" % near_cache)
                            if near_cache is not None else "",
                            user=("  user: %s\n" % RUN_USER) if RUN_USER else "")
    # Every test shim has a console: the tests read its counters there.
    if "control:" not in extra:
        text += "control:\n  shim: %s\n" % os.path.join(d, name + ".ctl")
    text += extra
    return write_config(os.path.join(d, name + ".yaml"), text), sock


def shim_answers(sock):
    try:
        return ask(sock, b"") == b"no"
    except OSError:
        return False


@pytest.fixture
def make_shim(tmp, redis):
    """Factory: make_shim(name="shim", **shim_config kwargs) -> (daemon, sock)."""
    started = []

    def make(name="shim", **kw):
        conf, sock = shim_config(tmp, redis.sock, name=name, **kw)
        d = Daemon(SHIM, conf, tmp, name)
        d.sock = sock
        if "control:" not in kw.get("extra", ""):
            d.ctl = os.path.join(tmp, name + ".ctl")
        d.start(wait=lambda: shim_answers(sock) and "script_loaded" in d.log())
        started.append(d)
        return d, sock

    yield make
    # A crash after the last assertion (a late Redis reply hitting freed
    # memory, say) must fail the test too.
    died = [(d.name, d.proc.poll()) for d in started
            if d.proc is not None and d.proc.poll() is not None]
    logs = {d.name: d.log()[-3000:] for d in started}
    for d in started:
        d.stop()
    assert not died, "shim exited during the test: %s\n%s" % (
        died, "\n".join(logs[n] for n, _ in died))
