"""Run a real Exim (Debian's exim4-daemon-light) against a shim, without
making it the machine's MTA.

Each Exim gets a private config: a few main options, `hostlist my_hosts =
192.0.2.0/24`, and an RCPT ACL made of one of the snippets shipped in
deploy/exim/ followed by `accept`.  The snippet is pasted as it is, with
only its socket path replaced, so what admins copy is what is tested.

Sessions use `exim4 -bh IP`: a fake SMTP conversation on stdin/stdout as if
from that client.  Every ACL runs, readsocket included, but nothing is
queued or delivered.  Exim's exit status is always 0 there, so callers look
at the SMTP reply codes and at the log lines, which -bh writes to stderr
as "LOG: ..." instead of to the main log.
"""
import grp
import os
import pwd
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
EXIM = "/usr/sbin/exim4"
SNIPPETS = os.path.join(ROOT, "deploy", "exim")
# The path the snippets ship with: shim.listen in the reference config.
SNIPPET_SOCK = "/run/senderwatch/shim.sock"

CONFIG = """\
# written by tests/integration/exim.py
exim_user = {user}
exim_group = {group}
spool_directory = {spool}
log_file_path = {logdir}/%slog
primary_hostname = test.example
hostlist my_hosts = 192.0.2.0/24
acl_smtp_rcpt = acl_rcpt

begin acl

acl_rcpt:
{snippet}
  accept
"""


def snippet_text(name):
    with open(os.path.join(SNIPPETS, name)) as f:
        return f.read()


class Reply:
    def __init__(self, code, lines):
        self.code = code
        self.lines = lines          # the text of each line, code removed

    @property
    def text(self):
        return " ".join(self.lines)

    def __repr__(self):
        return "%d %s" % (self.code, self.text)


class Session:
    """What one -bh run said: the replies in order, split by command."""

    def __init__(self, stdout, stderr, nrcpt, data, elapsed):
        self.stdout = stdout
        self.stderr = stderr
        self.elapsed = elapsed
        self.replies = parse_replies(stdout)
        # 220 greeting, EHLO, MAIL, one per RCPT, [DATA, end of data], QUIT
        self.mail = self.replies[2]
        self.rcpt = self.replies[3:3 + nrcpt]
        self.data = self.replies[3 + nrcpt:5 + nrcpt] if data else []
        self.log = [l[len("LOG: "):] for l in stderr.splitlines()
                    if l.startswith("LOG: ")]

    @property
    def rcpt_codes(self):
        return [r.code for r in self.rcpt]

    def logged(self, text):
        return any(text in l for l in self.log)


def parse_replies(out):
    """SMTP replies from -bh's stdout; "****" lines are -bh's own notes."""
    replies, cur = [], []
    for line in out.splitlines():
        if line.startswith("****") or not line.strip():
            continue
        if len(line) < 4 or not line[:3].isdigit() or line[3] not in " -":
            raise AssertionError("not an SMTP reply: %r\n%s" % (line, out))
        cur.append(line[4:])
        if line[3] == " ":
            replies.append(Reply(int(line[:3]), cur))
            cur = []
    return replies


def exim_dirs(d, name):
    """A private Exim's directory, spool and log directory, and the user
    and group it runs as: as root, -bh and -bs switch to exim_user, which
    must own the spool and the log directory."""
    top = os.path.join(d, name)
    spool = os.path.join(top, "spool")
    logdir = os.path.join(top, "log")
    if os.geteuid() == 0:
        user, group = "nobody", "nogroup"
    else:
        user = pwd.getpwuid(os.getuid()).pw_name
        group = grp.getgrgid(os.getgid()).gr_name
    for p in (top, spool, logdir):
        os.makedirs(p, exist_ok=True)
    if os.geteuid() == 0:
        uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
        for p in (spool, logdir):
            os.chown(p, uid, gid)
    return top, spool, logdir, user, group


class Exim:
    def __init__(self, d, snippet, sock, name="exim"):
        """An Exim in d/name whose RCPT ACL is deploy/exim/snippet with its
        socket path replaced by sock."""
        text = snippet_text(snippet)
        assert text.count(SNIPPET_SOCK) == 1, snippet
        self.dir, spool, logdir, user, group = exim_dirs(d, name)
        self.conf = os.path.join(self.dir, "exim.conf")
        with open(self.conf, "w") as f:
            f.write(CONFIG.format(user=user, group=group, spool=spool,
                                  logdir=logdir,
                                  snippet=text.replace(SNIPPET_SOCK, sock)))
        os.chmod(self.conf, 0o644)

    def verify(self):
        """Exim reads the whole config, ACLs included, and says if it is
        well formed."""
        return subprocess.run([EXIM, "-C", self.conf, "-bV"],
                              capture_output=True, text=True, timeout=30)

    def session(self, sender, rcpts=("rcpt@test.example",),
                host="192.0.2.1", data=False, timeout=30):
        cmds = ["EHLO client.example", "MAIL FROM:<%s>" % sender]
        cmds += ["RCPT TO:<%s>" % r for r in rcpts]
        if data:
            cmds += ["DATA", "From: <%s>" % sender, "Subject: test", "",
                     "Hello.", "."]
        cmds.append("QUIT")
        t = time.monotonic()
        r = subprocess.run([EXIM, "-C", self.conf, "-bh", host],
                           input="\r\n".join(cmds) + "\r\n",
                           capture_output=True, text=True, timeout=timeout)
        elapsed = time.monotonic() - t
        s = Session(r.stdout, r.stderr, len(rcpts), data, elapsed)
        assert s.replies[0].code == 220, r.stdout + r.stderr
        return s
