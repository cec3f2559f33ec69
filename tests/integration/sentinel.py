"""A Redis set managed by Sentinel, from real processes on loopback ports:
a master, a replica and three redis-sentinel (Debian's redis-sentinel
package), each in the test's directory.  For test_sentinel.py.

Sentinels only fail over once they know the replica and each other, so
start() waits for that (SENTINEL replicas / sentinels), with a deadline.
"""
import os
import signal
import subprocess
import time

from conftest import Resp, free_port, wait_for

MASTER = "mymaster"


class Tcp(Resp):
    """conftest's binary-safe client, on 127.0.0.1:port."""

    def __init__(self, port, timeout=5.0):
        import socket
        self.sock = socket.create_connection(("127.0.0.1", port),
                                             timeout=timeout)
        self.buf = b""


def cli(port, *args):
    r = subprocess.run(["redis-cli", "-p", str(port)] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=10)
    return r.stdout.strip()


class Node:
    """redis-server on a loopback port, optionally a replica."""

    def __init__(self, d, name, replicaof=None):
        self.dir = d
        self.name = name
        self.port = free_port()
        self.replicaof = replicaof
        self.proc = None

    def start(self):
        args = ["redis-server", "--port", str(self.port), "--bind",
                "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", self.dir, "--dbfilename", self.name + ".rdb",
                "--logfile", os.path.join(self.dir, self.name + ".log")]
        if self.replicaof is not None:
            args += ["--replicaof", "127.0.0.1", str(self.replicaof)]
        self.proc = subprocess.Popen(args)
        wait_for(lambda: cli(self.port, "PING") == "PONG",
                 what="redis %s to answer" % self.name)
        return self

    def role(self):
        out = cli(self.port, "ROLE").splitlines()
        return out[0] if out else None

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self.proc = None


class Sentinel:
    def __init__(self, d, i, master_port):
        self.dir = d
        self.port = free_port()
        self.conf = os.path.join(d, "sentinel%d.conf" % i)
        self.log = os.path.join(d, "sentinel%d.log" % i)
        # A sentinel rewrites its config file: one file each.
        with open(self.conf, "w") as f:
            f.write("port %d\nbind 127.0.0.1\ndir %s\n"
                    "sentinel monitor %s 127.0.0.1 %d 2\n"
                    "sentinel down-after-milliseconds %s 1000\n"
                    "sentinel failover-timeout %s 10000\n"
                    "sentinel parallel-syncs %s 1\n"
                    % (self.port, d, MASTER, master_port, MASTER, MASTER,
                       MASTER))
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(["redis-sentinel", self.conf,
                                      "--logfile", self.log])
        wait_for(lambda: cli(self.port, "PING") == "PONG",
                 what="a sentinel to answer")
        return self

    def master_addr(self):
        out = cli(self.port, "SENTINEL", "get-master-addr-by-name", MASTER)
        return ":".join(out.splitlines()) if out else None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


class SentinelSet:
    """master + replica + three sentinels."""

    def __init__(self, d):
        self.dir = d
        self.nodes = []
        self.sentinels = []

    def start(self):
        master = Node(self.dir, "master").start()
        replica = Node(self.dir, "replica", replicaof=master.port).start()
        self.nodes = [master, replica]
        wait_for(lambda: "master_link_status:up" in
                 cli(replica.port, "INFO", "replication"),
                 timeout=10, what="the replica to sync")
        self.sentinels = [Sentinel(self.dir, i, master.port).start()
                          for i in range(3)]

        def ready():
            for s in self.sentinels:
                reps = cli(s.port, "SENTINEL", "replicas", MASTER)
                others = cli(s.port, "SENTINEL", "sentinels", MASTER)
                if str(replica.port) not in reps or \
                        others.count("127.0.0.1") < 2:
                    return False
            return True
        wait_for(ready, timeout=20, interval=0.1,
                 what="the sentinels to know the replica and each other")
        return self

    def addresses(self):
        return ["127.0.0.1:%d" % s.port for s in self.sentinels]

    def master(self):
        """The node Sentinel says is master now."""
        addr = self.sentinels[0].master_addr()
        return [n for n in self.nodes if addr == "127.0.0.1:%d" % n.port][0]

    def other(self, node):
        return [n for n in self.nodes if n is not node][0]

    def stop(self):
        for s in self.sentinels:
            s.stop()
        for n in self.nodes:
            n.stop()


class SwitchWatch:
    """A subscriber to +switch-master on a sentinel, in a thread: the
    moment (monotonic) Sentinel announced the new master."""

    def __init__(self, sentinel_port):
        import threading
        self.c = Tcp(sentinel_port, timeout=None)
        assert self.c.cmd("SUBSCRIBE", "+switch-master")[0] == \
            b"subscribe"
        self.at = None
        self.msg = None
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        try:
            m = self.c.read()
        except Exception:
            return
        self.at = time.monotonic()
        self.msg = m[2].decode()

    def close(self):
        self.c.close()


# The alerts section of the failover tests (Sentinel and Cluster): a
# local receiver, short digests, claims and retries.
ALERTS = """\
alerts:
  from: senderwatch@example.com
  to: [ director@example.com ]
  smtp: 127.0.0.1:{port}
  smtp_starttls: "no"
  digest_wait: 50ms
  claim_idle: 2s
  retry_max: 300ms
"""
