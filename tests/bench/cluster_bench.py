#!/usr/bin/python3
"""cluster_bench.py: the shim on a Redis Cluster of three masters on this machine
against the same shim on one Redis, in the same run (make bench's cluster
row, issue 11).

Starts a single redis-server, three cluster-enabled ones (no replicas:
replication is not what is measured) and a one-node cluster on loopback
TCP, so every layout pays the same transport, and a shim on each; a
fourth shim uses the three masters with one shard each (events.shards 3,
under its own prefix), whose calls carry every decision of a turn that
one master owns even when batched per shard: the depth the shim's calls
per node should reach with the default 48 shards.  Drives
each with sw-bench load at concurrency 32 and reads, per Redis process,
its CPU time (/proc/PID/stat utime, stime), the decisions it ran (its
INCRBY calls in INFO commandstats: one per decision of the rule's one
window, however many decisions a count.lua call carried) and its EVALSHA
calls, over the same measured seconds.  Reports:

  - decisions/s and latency of both layouts;
  - Redis CPU per decision on each master, and over the three together;
  - how evenly decisions and keys (SCAN of the layout's prefix) spread,
    how many decisions a call and a read() carried, and CPU per decision
    split into user and system time.

Targets: decisions and keys within +-10% of the mean on every master;
the cluster's Redis CPU per decision within 20% of a single Redis's.
Informative like the rest of make bench: exit status 1 only when
something broke, not when a target is missed.

    /usr/bin/python3 tests/bench/cluster_bench.py [-d SECONDS] [-k KEYS]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from conftest import (BUILD, RUN_USER, SHIM, free_port,  # noqa: E402
                      shim_answers, wait_for, write_config)
from cluster import Cluster, ClusterNode, cli  # noqa: E402

SWB = os.path.join(BUILD, "sw-bench")
CONC = 32
SPREAD_MAX = 0.10       # each master within 10% of the mean
CPU_MAX = 1.20          # cluster CPU per decision at most 1.2x single
HZ = os.sysconf("SC_CLK_TCK")

CONF = """\
shim:
  listen: [ {sock} ]
  socket_mode: "0666"
  client_timeout: 2s
  max_clients: 4096
{user}redis:
  {layout}
  timeout: 100ms
  on_error: "no"
events:
  channel: senderwatch:events
{events}rules:
  default: {{ limit: 1000000, window: 300s }}
"""


class Node:
    """What is measured of one redis-server: its port and pid."""

    def __init__(self, port, pid):
        self.port, self.pid = port, pid

    def ticks(self):
        """CPU so far, in clock ticks: (user, system)."""
        with open("/proc/%d/stat" % self.pid) as f:
            # After the command name in parentheses: utime, stime are the
            # 12th and 13th fields.
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]), int(fields[12])

    def calls(self, cmd):
        for line in cli(self.port, "INFO", "commandstats").splitlines():
            if line.startswith("cmdstat_%s:" % cmd):
                return int(line.split("calls=")[1].split(",")[0])
        return 0

    def evalsha(self):
        return self.calls("evalsha")

    def decisions(self):
        """The decisions it ran: one INCRBY each (one fixed window, every
        attempt counted), however many a count.lua call carried."""
        return self.calls("incrby")

    def reads(self):
        """read() calls so far: decisions per read is the batch depth."""
        with open("/proc/%d/io" % self.pid) as f:
            for line in f:
                if line.startswith("syscr:"):
                    return int(line.split()[1])
        return 0

    def keys(self, prefix):
        """The keys under prefix: two layouts share the three masters."""
        return len(cli(self.port, "--scan", "--pattern",
                       prefix + ":*").split())


def field(line, name):
    for kv in line.split():
        if kv.startswith(name + "="):
            return float(kv.split("=", 1)[1].rstrip("/s"))
    return 0.0


class Shim:
    """senderwatch-shim on one layout, warmed up (scripts loaded, every
    master connected).  Not the tests' Daemon: that runs with -v, and
    logging every decision is not what is measured."""

    def __init__(self, d, name, layout, nodes, nkeys, shards=0,
                 prefix="senderwatch"):
        self.name, self.nodes, self.nkeys = name, nodes, nkeys
        self.prefix = prefix
        self.sock = os.path.join(d, name + ".sock")
        conf = write_config(os.path.join(d, name + ".yaml"), CONF.format(
            sock=self.sock, layout=layout + "\n  prefix: " + prefix,
            events=("  shards: %d\n" % shards) if shards else "",
            user=("  user: %s\n" % RUN_USER) if RUN_USER else ""))
        self.log = open(os.path.join(d, name + "-shim.log"), "wb")
        self.proc = subprocess.Popen([SHIM, "-f", "-c", conf],
                                     stdout=self.log,
                                     stderr=subprocess.STDOUT)
        wait_for(lambda: self.proc.poll() is not None or
                 shim_answers(self.sock), timeout=10,
                 what="the shim to answer")
        self.load(1)

    def load(self, secs):
        r = subprocess.run([SWB, "load", "-s", self.sock, "-c", str(CONC),
                            "-d", str(secs), "-w", "0", "-k",
                            str(self.nkeys)], capture_output=True, text=True)
        if r.returncode != 0 or self.proc.poll() is not None:
            sys.exit("cluster bench: %s: %s" % (self.name, r.stderr or
                                                 "the shim exited"))
        return r.stdout.strip()

    def measure(self, secs):
        """One measured run: the load's line, and per Redis process its
        CPU seconds, decisions, EVALSHA calls and read() calls over it."""
        nodes = self.nodes
        t0 = [n.ticks() for n in nodes]
        e0 = [n.evalsha() for n in nodes]
        d0 = [n.decisions() for n in nodes]
        r0 = [n.reads() for n in nodes]
        out = self.load(secs)
        t1 = [n.ticks() for n in nodes]
        return {"line": out,
                "cpu": [(u1 + s1 - u - s) / HZ
                        for (u1, s1), (u, s) in zip(t1, t0)],
                "sys": [(s1 - s) / HZ for (_, s1), (_, s) in zip(t1, t0)],
                "calls": [n.decisions() - d for n, d in zip(nodes, d0)],
                "evalsha": [n.evalsha() - e for n, e in zip(nodes, e0)],
                "reads": [n.reads() - r for n, r in zip(nodes, r0)],
                "keys": [n.keys(self.prefix) for n in nodes]}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


def spread(values):
    """The largest distance from the mean, as a fraction of it."""
    mean = sum(values) / len(values)
    return max(abs(v - mean) for v in values) / mean if mean else 1.0


def us_per(cpu, calls):
    return 1e6 * cpu / calls if calls else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-d", "--seconds", type=float,
                    default=float(os.environ.get("BENCH_SECONDS", 5)))
    ap.add_argument("-k", "--keys", type=int,
                    default=int(os.environ.get("BENCH_KEYS", 10000)))
    args = ap.parse_args()
    if not os.access(SWB, os.X_OK):
        sys.exit("cluster bench: %s not built (run make first)" % SWB)
    d = tempfile.mkdtemp(prefix="sw-bench-cluster-")
    os.chmod(d, 0o755)
    single = cluster = solo = None
    runs, shims = {}, {}
    try:
        port = free_port()
        single = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", d,
             "--logfile", os.path.join(d, "single.log")])
        wait_for(lambda: cli(port, "PING") == "PONG", what="redis-server")
        cluster = Cluster(d, n=3, replicas=0).start()
        # A cluster of one node holding every slot: cluster mode's own
        # cost per decision, with a single Redis's batching.
        solo = ClusterNode(d, 9).start()
        cli(solo.port, "CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        wait_for(lambda: solo.cluster_info().get("cluster_state") == "ok",
                 timeout=10, what="the one-node cluster")
        seeds = "cluster: [ %s ]" % ", ".join(cluster.seeds())
        masters = [Node(n.port, n.proc.pid) for n in cluster.nodes]
        # "3-shard": the same three masters with one shard each, under
        # their own prefix: a call of one shard then carries every
        # decision of a turn that its master owns, as a node's call does.
        layouts = {
            "single": ("address: 127.0.0.1:%d" % port,
                       [Node(port, single.pid)], {}),
            "cluster": (seeds, masters, {}),
            "3-shard": (seeds, masters, {"shards": 3, "prefix": "sw3"}),
            "1-node": ("cluster: [ %s ]" % solo.addr,
                       [Node(solo.port, solo.proc.pid)], {}),
        }
        for name, (layout, nodes, kw) in layouts.items():
            shims[name] = Shim(d, name, layout, nodes, args.keys, **kw)
        # Short runs in turn, A B C C B A A B C C B A: on a shared machine
        # Redis's CPU per decision drifts by a quarter from minute to
        # minute, and this way the drift hits every layout alike.
        for name in (ORDER + ORDER[::-1]) * ROUNDS:
            runs.setdefault(name, []).append(
                shims[name].measure(args.seconds / ROUNDS))
    finally:
        for sh in shims.values():
            sh.stop()
        for n in (cluster, solo):
            if n is not None:
                n.stop()
        if single is not None:
            single.terminate()
            single.wait(timeout=10)
        shutil.rmtree(d, ignore_errors=True)
    report(args, {name: merge(r) for name, r in runs.items()})


ORDER = ["single", "cluster", "3-shard", "1-node"]
ROUNDS = 2


def merge(runs):
    """The runs of one layout as one: sums, the mean rate, the worst
    latencies."""
    out = {"rate": sum(field(r["line"], "rate") for r in runs) / len(runs),
           "p50": max(field(r["line"], "p50_us") for r in runs),
           "p99": max(field(r["line"], "p99_us") for r in runs),
           "decisions": sum(field(r["line"], "decisions") for r in runs),
           "keys": runs[-1]["keys"]}
    for k in ("cpu", "sys", "calls", "evalsha", "reads"):
        out[k] = [sum(v) for v in zip(*(r[k] for r in runs))]
    return out


def report(args, res):
    print("\ncluster, c=%d, %.0f s per layout in %d runs, %d keys, all processes "
          "sharing the %d cores; three masters, no replicas; loopback TCP "
          "for all" % (CONC, 2 * args.seconds, 2 * ROUNDS, args.keys,
                       os.cpu_count()))
    print("%-8s | %9s | %13s | %-26s | %-8s | %-8s | %s" % (
        "layout", "dec/s", "p50/p99 us", "Redis CPU/decision (us)",
        "dec/call", "dec/read", "decisions / keys per master"))
    print("-" * 9 + "+" + "-" * 11 + "+" + "-" * 15 + "+" + "-" * 28 + "+" +
          "-" * 10 + "+" + "-" * 10 + "+" + "-" * 30)
    broken = 0
    for name in ORDER:
        r = res[name]
        per = [us_per(c, n) for c, n in zip(r["cpu"], r["calls"])]
        total = us_per(sum(r["cpu"]), sum(r["calls"]))
        cpu_text = ("%.1f" % total if len(per) == 1 else
                    "%.1f (%s)" % (total, " ".join("%.1f" % p for p in per)))
        dist = ("-" if len(per) == 1 else "%s / %s" % (
            " ".join(str(n) for n in r["calls"]),
            " ".join(str(n) for n in r["keys"])))
        print("%-8s | %9.0f | %13s | %-26s | %8.1f | %8.1f | %s" % (
            name, r["rate"], "%.0f/%.0f" % (r["p50"], r["p99"]), cpu_text,
            sum(r["calls"]) / max(1, sum(r["evalsha"])), batch(r), dist))
        # Every answer must be a decision Redis made: a shim answering
        # by its fail policy would look fast here.
        if abs(sum(r["calls"]) - r["decisions"]) > 0.01 * r["decisions"]:
            print("bench: %s: %d decisions answered, %d run by Redis: "
                  "answers by the fail policy?" % (
                      name, r["decisions"], sum(r["calls"])))
            broken = 1
    many = res["cluster"]
    s_calls, s_keys = spread(many["calls"]), spread(many["keys"])
    ok = max(s_calls, s_keys) <= SPREAD_MAX
    print("target: decisions and keys within +-%.0f%% of the mean on every "
          "master: %s (decisions +-%.1f%%, keys +-%.1f%%)" % (
              100 * SPREAD_MAX, "PASS" if ok else "FAIL", 100 * s_calls,
              100 * s_keys))
    cpu = {n: us_per(sum(res[n]["cpu"]), sum(res[n]["calls"]))
           for n in ORDER}
    ok = cpu["single"] > 0 and cpu["cluster"] <= CPU_MAX * cpu["single"]
    print("target: cluster Redis CPU per decision within %.0f%% of a single "
          "Redis: %s (%.1f us against %.1f us: %+.0f%%)" % (
              100 * (CPU_MAX - 1), "PASS" if ok else "FAIL", cpu["cluster"],
              cpu["single"], pct(cpu["cluster"], cpu["single"])))
    # Where the difference comes from: cluster mode itself (the one-node
    # cluster batches like a single Redis), or three masters taking turns
    # on this machine's cores, each in smaller batches.
    print("        a one-node cluster: %.1f us (%+.0f%%): cluster mode's own "
          "cost; the rest is three masters sharing %d cores, %.1f "
          "decisions per read() against %.1f" % (
              cpu["1-node"], pct(cpu["1-node"], cpu["single"]),
              os.cpu_count(), batch(res["cluster"]), batch(res["single"])))
    print("        three masters, a shard each: %.1f us (%+.0f%%) at %.1f "
          "decisions per call: a node's calls, one shard each" % (
              cpu["3-shard"], pct(cpu["3-shard"], cpu["single"]),
              sum(res["3-shard"]["calls"]) /
              max(1, sum(res["3-shard"]["evalsha"]))))
    print("        user / system CPU per decision (us): %s" % ", ".join(
        "%s %.1f / %.1f" % (n, us_per(sum(res[n]["cpu"]) - sum(res[n]["sys"]),
                                      sum(res[n]["calls"])),
                            us_per(sum(res[n]["sys"]), sum(res[n]["calls"])))
        for n in ORDER))
    if broken:
        sys.exit(1)


def batch(r):
    """Decisions per read() on the Redis side: how deep it pipelines."""
    return sum(r["calls"]) / max(1, sum(r["reads"]))


def pct(a, b):
    return 100 * (a / b - 1) if b else 0.0


if __name__ == "__main__":
    main()
