"""loadgen.py: a load generator for the fault tests that keeps every request.

Like Exim's ${readsocket}: a fresh Unix-socket connection per decision, one
line, shutdown(SHUT_WR), read to EOF.  CONCURRENCY such clients run on one
asyncio loop for DURATION seconds.  Unlike sw-bench, which sums up, this
records each request as (start, end, answer) on the CLOCK_MONOTONIC
timeline that the test process shares, so a test can ask "what was
answered while Redis was frozen", "when did real decisions come back" and
"what was the worst wait" against the moments it injected its faults.

Latency runs from the connect to EOF, so it includes this process's own
scheduling: on a 2-core machine that runs the shim, redis-server and this
loop, that is part of what a client sees.

Run as a program it writes JSON to --out and prints one summary line:

    python3 loadgen.py --socket S --concurrency 32 --duration 4 --out F.json
"""
import argparse
import asyncio
import gc
import json
import random
import socket
import sys
import time

ANSWER_MAX = 64     # a longer answer is an error, not a verdict


async def one(loop, path, line, timeout):
    """One readsocket-like exchange; returns the answer bytes."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        async def talk():
            await loop.sock_connect(s, path)
            await loop.sock_sendall(s, line)
            s.shutdown(socket.SHUT_WR)
            out = b""
            while True:
                b = await loop.sock_recv(s, ANSWER_MAX)
                if not b:
                    return out
                out += b
                if len(out) > ANSWER_MAX:
                    raise ValueError("answer too long")
        return await asyncio.wait_for(talk(), timeout)
    finally:
        s.close()


async def client(loop, args, until, results, errors, rnd):
    while time.monotonic() < until:
        key = "%s%d@example.org" % (args.prefix, rnd.randrange(args.keys))
        line = (key + "\n").encode()
        t0 = time.monotonic()
        try:
            ans = await one(loop, args.socket, line, args.timeout)
        except Exception as e:          # every failure is a finding
            errors.append((t0, time.monotonic(), "%s: %s" % (type(e).__name__, e)))
            continue
        t1 = time.monotonic()
        if ans in (b"yes", b"no"):
            results.append((t0, t1, ans.decode()))
        else:
            errors.append((t0, t1, "bad answer %r" % ans[:ANSWER_MAX]))


async def run(args):
    loop = asyncio.get_running_loop()
    results, errors = [], []
    until = time.monotonic() + args.duration
    rnd = random.Random(args.seed)
    await asyncio.gather(*(client(loop, args, until, results, errors,
                                  random.Random(rnd.random()))
                           for _ in range(args.concurrency)))
    return results, errors


def summary(results, errors):
    lat = sorted(t1 - t0 for t0, t1, _ in results)
    n = len(lat)

    def pct(p):
        return lat[min(n - 1, int(p * n))] * 1e3 if n else 0.0
    return {
        "answered": n,
        "errors": len(errors),
        "yes": sum(1 for r in results if r[2] == "yes"),
        "no": sum(1 for r in results if r[2] == "no"),
        "p50_ms": round(pct(0.50), 3),
        "p99_ms": round(pct(0.99), 3),
        "max_ms": round(lat[-1] * 1e3, 3) if n else 0.0,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--socket", required=True)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--prefix", default="load")
    ap.add_argument("--timeout", type=float, default=5.0,
                    help="per request, like readsocket's {5s}")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    # A collection pause would be charged to whichever request is waiting.
    gc.disable()
    results, errors = asyncio.run(run(args))
    s = summary(results, errors)
    with open(args.out, "w") as f:
        json.dump({"summary": s, "results": results, "errors": errors}, f)
    print(" ".join("%s=%s" % kv for kv in s.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
