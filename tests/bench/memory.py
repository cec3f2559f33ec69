#!/usr/bin/python3
"""Redis memory per tracked key, for each algorithm, measured with the
shim's own script (scripts/count.lua) on a private redis-server.

For each algorithm: warm up, FLUSHALL, read used_memory, run the script
once for each of N keys of about 30 bytes (pipelined on a raw socket), read
used_memory again; the difference over N is the cost of one tracked key
and limit, including its key name, its TTL and Redis's bookkeeping.

usage: memory.py [N]      (default 100000)
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGETS = {"fixed": 150, "sliding": 300, "gcra": 150}
# limit, window, burst: keys must outlive the run (gcra's state lives one
# emission interval per hit: 36 s here).
PARAMS = {"fixed": (1000000, 3600000, 1000000),
          "sliding": (1000000, 3600000, 1000000),
          "gcra": (100, 3600000, 100)}


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Conn:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            b = self.s.recv(1 << 20)
            if not b:
                raise ConnectionError("redis closed the connection")
            self.buf += b
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t in (b"+", b":"):
            return rest
        if t == b"-":
            raise RuntimeError(rest.decode())
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.s.recv(1 << 20)
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if t == b"*":
            return [self.read() for _ in range(int(rest))]
        raise RuntimeError("bad reply %r" % line)

    def call(self, *args):
        self.s.sendall(resp(*args))
        return self.read()


def used_memory(c):
    """Data memory: used_memory less the clients' buffers, which grow with
    the pipelined batches and are not the keys' cost."""
    info = dict(l.split(":", 1) for l in c.call("INFO", "memory").decode().splitlines()
                if ":" in l)
    return int(info["used_memory"]) - int(info.get("mem_clients_normal", 0))


def settled_memory(c):
    """used_memory once Redis's incremental rehashing (done by its cron,
    about every 100 ms) has finished: the same figure three reads running."""
    last, same = None, 0
    deadline = time.monotonic() + 10
    while same < 3 and time.monotonic() < deadline:
        m = used_memory(c)
        same = same + 1 if m == last else 0
        last = m
        time.sleep(0.1)
    return last


def track(c, sha, algo, n):
    """Run the script once for each of n keys of 31 bytes, pipelined."""
    batch = []
    for i in range(n):
        key = "sender-%07d@example-mail.org" % i       # 31 bytes
        batch.append(resp(
            "EVALSHA", sha, 5, "senderwatch:stream",
            "senderwatch:subjects:default:" + key,
            "senderwatch:override:default:" + key,
            "senderwatch:default:" + key,
            "senderwatch:crossed:default:" + key,
            "c%s0%d1" % (algo[0], 1 if algo == "fixed" else 0), 1,
            "default bench senderwatch:events 10000 senderwatch-alerters "
            "%d %d" % (len("senderwatch:override:default:"),
                       len("senderwatch:stream")), *PARAMS[algo],
            1, ""))
        if len(batch) == 1000 or i == n - 1:
            c.s.sendall(b"".join(batch))
            for _ in batch:
                c.read()
            batch = []


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
    d = tempfile.mkdtemp(prefix="sw-mem-")
    sock = os.path.join(d, "redis.sock")
    redis = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", sock,
                              "--save", "", "--appendonly", "no", "--dir", d],
                             stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                c = Conn(sock)
                c.call("PING")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        with open(os.path.join(ROOT, "scripts", "count.lua"), "rb") as f:
            sha = c.call("SCRIPT", "LOAD", f.read())
        print("Redis memory per tracked key and limit, %d keys of 31 bytes "
              "(key names senderwatch:default:KEY, 51 bytes):" % n)
        verdict = True
        for algo in ("fixed", "sliding", "gcra"):
            # Warm up first: Redis 7 allocates a latency histogram (about
            # 24 KB) for each command the first time it runs, which is not
            # a cost of the keys.
            track(c, sha, algo, 10)
            c.call("FLUSHALL")
            before = used_memory(c)
            track(c, sha, algo, n)
            keys = int(c.call("DBSIZE"))
            after = settled_memory(c)
            per = (after - before) / n
            ok = per <= TARGETS[algo]
            verdict = verdict and ok
            print("  %-8s %7.1f bytes/key  (%d keys; target <= %d: %s)"
                  % (algo, per, keys, TARGETS[algo], "PASS" if ok else "FAIL"))
        # The floor: what Redis itself needs for such a key with a TTL.
        c.call("FLUSHALL")
        before = used_memory(c)
        for start in range(0, n, 1000):
            batch = [resp("SET", "senderwatch:default:sender-%07d@example-mail.org" % i,
                          1, "PX", 3600000) for i in range(start, min(n, start + 1000))]
            c.s.sendall(b"".join(batch))
            for _ in batch:
                c.read()
        print("  %-8s %7.1f bytes/key  (plain SET .. PX with the same names: "
              "Redis's floor)" % ("floor", (settled_memory(c) - before) / n))
        print("memory target: %s" % ("PASS" if verdict else "FAIL"))
    finally:
        redis.terminate()
        redis.wait()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
