#!/usr/bin/python3
"""smtp_sink.py: a real SMTP receiver (Debian's python3-aiosmtpd) that keeps
every message it accepts as a file, so tests read what a relay really got.

    python3 tests/integration/smtp_sink.py --port 2525 --dir /tmp/mail

Each accepted message becomes two files in --dir, written before the 250
reply goes out and renamed into place, so a reader never sees half a file:

    NNNNNN.eml   the message bytes as received (CRLF, dot-unstuffed)
    NNNNNN.json  {"mail_from", "rcpt_tos", "received_at" (time.time()),
                  "peer"}

--port 0 picks a free port.  The line "listening HOST PORT" on stdout says
the socket is bound; tests wait for it.  For failure tests: --reject N
answers the first N messages with a temporary failure (451) and prints
"rejected MESSAGE-ID"; --delay S waits S seconds after the data before
answering (printing "receiving" first), like a slow relay.  --auth
USER:PASS makes AUTH (PLAIN, LOGIN) mandatory, over plain TCP as there is
no certificate; the .json then says who logged in.
"""
import argparse
import asyncio
import email
import email.policy
import itertools
import json
import os
import signal
import socket
import ssl
import sys
import time

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Session(SMTP):
    """aiosmtpd writes a multi-line reply (EHLO) in several small writes;
    with Nagle on, the second waits for the client's delayed ACK (40 ms on
    Linux).  Real MTAs do not stall like this, so neither does the sink:
    latency measured against it is the alerter's own."""

    def connection_made(self, transport):
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


class Store:
    """aiosmtpd handler: DATA -> files in a directory."""

    def __init__(self, directory, reject=0, delay=0.0):
        self.dir = directory
        self.reject = reject
        self.delay = delay
        # Continue the numbering of a previous run in the same directory.
        taken = [int(n.split(".")[0]) for n in os.listdir(directory)
                 if n.endswith(".eml") and n.split(".")[0].isdigit()]
        self.seq = itertools.count(max(taken, default=0) + 1)

    async def handle_DATA(self, server, session, envelope):
        if self.reject > 0:
            self.reject -= 1
            msg = email.message_from_bytes(envelope.original_content,
                                           policy=email.policy.default)
            print("rejected %s" % msg["Message-ID"], flush=True)
            return "451 4.3.0 try again later (smtp_sink --reject)"
        if self.delay > 0:
            print("receiving", flush=True)
            await asyncio.sleep(self.delay)
        received = time.time()
        n = next(self.seq)
        base = os.path.join(self.dir, "%06d" % n)
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "received_at": received,
            "peer": str(session.peer),
            "auth": session.auth_data.login.decode()
            if isinstance(session.auth_data, LoginPassword) else None,
            "tls": session.ssl is not None,
        }
        for ext, data in ((".eml", envelope.original_content),
                          (".json", json.dumps(meta).encode())):
            with open(base + ext + ".tmp", "wb") as f:
                f.write(data)
            os.rename(base + ext + ".tmp", base + ext)
        return "250 2.0.0 OK stored as %06d" % n


def authenticator(user, password):
    """aiosmtpd authenticator accepting exactly one login."""

    def check(server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword) and
              auth_data.login == user and auth_data.password == password)
        return AuthResult(success=ok, handled=False, auth_data=auth_data)
    return check


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--reject", type=int, default=0,
                    help="answer the first N messages with 451")
    ap.add_argument("--delay", type=float, default=0.0,
                    help="seconds to wait before answering the data")
    ap.add_argument("--auth", metavar="USER:PASS",
                    help="require AUTH with this login")
    ap.add_argument("--tls", metavar="CERT,KEY",
                    help="offer STARTTLS with this certificate and key")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    store = Store(args.dir, args.reject, args.delay)
    opts = {}
    if args.auth:
        user, _, password = args.auth.partition(":")
        opts = dict(authenticator=authenticator(user.encode(),
                                                password.encode()),
                    auth_required=True, auth_require_tls=False)
    if args.tls:
        cert, _, key = args.tls.partition(",")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        opts["tls_context"] = ctx
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A restarted sink must get its port back at once.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    server = loop.run_until_complete(loop.create_server(
        lambda: Session(store, hostname="sink.test", ident="smtp_sink",
                        decode_data=False, **opts),
        sock=sock))
    port = server.sockets[0].getsockname()[1]
    print("listening %s %d" % (args.host, port), flush=True)
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.add_signal_handler(signal.SIGINT, loop.stop)
    try:
        loop.run_forever()
    finally:
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
