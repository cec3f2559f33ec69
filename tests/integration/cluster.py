"""A Redis Cluster from real processes on loopback ports: three masters
and three replicas (redis-server --cluster-enabled yes, then redis-cli
--cluster create ... --cluster-replicas 1), each in the test's directory.
For test_cluster.py.

start() returns once every node says cluster_state:ok and every replica
has synced: a test never begins against a cluster still forming.
"""
import os
import signal
import subprocess

from conftest import free_port, wait_for


def cli(port, *args):
    r = subprocess.run(["redis-cli", "-p", str(port)] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=30)
    return r.stdout.strip()


def node_port():
    """A free port whose cluster bus port (port + 10000) is free too."""
    import socket
    while True:
        p = free_port()
        if p + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + 10000))
            except OSError:
                continue
        return p


class ClusterNode:
    def __init__(self, d, i, args=()):
        self.dir = d
        self.port = node_port()
        self.name = "node%d" % i
        self.args = [str(a) for a in args]
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes",
             "--cluster-config-file", "nodes-%d.conf" % self.port,
             "--cluster-node-timeout", "1000",
             "--save", "", "--appendonly", "no", "--dir", self.dir,
             "--logfile", os.path.join(self.dir, self.name + ".log")] +
            self.args)
        wait_for(lambda: cli(self.port, "PING") == "PONG",
                 what="cluster node %s" % self.name)
        return self

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def info(self, section):
        return dict(l.split(":", 1) for l in
                    cli(self.port, "INFO", section).splitlines() if ":" in l)

    def cluster_info(self):
        return dict(l.split(":", 1) for l in
                    cli(self.port, "CLUSTER", "INFO").splitlines() if ":" in l)

    def evalsha_calls(self):
        f = self.info("commandstats").get("cmdstat_evalsha")
        return int(f.split(",")[0].split("=")[1]) if f else 0

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self.proc = None


class Cluster:
    def __init__(self, d, n=6, replicas=1):
        self.dir = d
        self.nodes = [ClusterNode(d, i) for i in range(n)]
        self.replicas = replicas

    def start(self):
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self):
        for n in self.nodes:
            n.start()
        r = subprocess.run(
            ["redis-cli", "--cluster", "create"] +
            [n.addr for n in self.nodes] +
            ["--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr

        why = ["nothing asked yet"]

        def formed():
            for n in self.nodes:
                if n.cluster_info().get("cluster_state") != "ok":
                    why[0] = "%s: cluster_state %s" % (
                        n.addr, n.cluster_info().get("cluster_state"))
                    return False
            for n in self.replicas_now():
                if n.info("replication").get("master_link_status") != "up":
                    why[0] = "%s: replica link down" % n.addr
                    return False
            why[0] = "masters: %s" % [n.addr for n in self.masters()]
            return len(self.masters()) == len(self.nodes) // \
                (self.replicas + 1)
        try:
            wait_for(formed, timeout=30, interval=0.1,
                     what="the cluster to form")
        except AssertionError as e:
            raise AssertionError("%s (last: %s)" % (e, why[0])) from None
        return self

    def live(self):
        return [n for n in self.nodes if n.proc is not None]

    def _nodes_line(self, n):
        """CLUSTER NODES of a live node: [(addr, flags, slots...)]."""
        out = []
        for line in cli(n.port, "CLUSTER", "NODES").splitlines():
            f = line.split()
            out.append((f[1].split("@")[0], f[2], f[8:]))
        return out

    def masters(self):
        """The live nodes that are masters with slots, as one node sees."""
        view = self._nodes_line(self.live()[0])
        addrs = [a for a, flags, slots in view
                 if "master" in flags and "fail" not in flags and slots]
        return [n for n in self.live() if n.addr in addrs]

    def replicas_now(self):
        view = self._nodes_line(self.live()[0])
        addrs = [a for a, flags, _ in view if "slave" in flags]
        return [n for n in self.live() if n.addr in addrs]

    def owner(self, slot):
        """The live master serving slot."""
        for n in self.masters():
            for a, flags, slots in self._nodes_line(n):
                if a != n.addr:
                    continue
                for s in slots:
                    if s.startswith("["):
                        continue
                    lo, _, hi = s.partition("-")
                    if int(lo) <= slot <= int(hi or lo):
                        return n
        return None

    def seeds(self):
        return [n.addr for n in self.nodes[:3]]

    def stop(self):
        for n in self.nodes:
            n.stop()
