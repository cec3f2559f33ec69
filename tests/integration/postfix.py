"""Run a real Postfix 3.7 (Debian's package) against a shim, without making
it the machine's MTA.

Debian's postfix package conflicts with exim4-daemon-light, which the other
tests need, so it is never installed: its .deb is fetched with `apt-get
download` and unpacked with `dpkg -x` into build/postfix-root, once per
checkout (see ensure_root).  Its shared libraries (libicu72, libsasl2-2,
libssl3, libnsl2, libdb5.3) are ordinary packages that do not conflict.
The binaries look for Debian's libpostfix-*.so in /usr/lib/postfix (their
RUNPATH), so every Postfix process gets LD_LIBRARY_PATH, passed down from
master to its children through import_environment.

Each Postfix is one instance in a private directory: its own main.cf and
master.cf (config_directory), queue and data directories and log file,
listening on 127.0.0.1 at a free port.  Every transport is discard:, no
service is chrooted, and master runs as root as it must; its daemons run
as mail_owner (`postfix`) with the setgid group `postdrop`, created here if
missing (ensure_users).

Sessions are swaks runs; a Session holds each command's reply code, text
and time lapse, as swaks printed them.
"""
import fcntl
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import free_port, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
PF_ROOT = os.path.join(ROOT, "build", "postfix-root")
SBIN = os.path.join(PF_ROOT, "usr", "sbin")
DAEMON_DIR = os.path.join(PF_ROOT, "usr", "lib", "postfix", "sbin")
SHLIB_DIR = os.path.join(PF_ROOT, "usr", "lib", "postfix")
META_DIR = os.path.join(PF_ROOT, "etc", "postfix")
POSTFIX = os.path.join(SBIN, "postfix")
POSTCONF = os.path.join(SBIN, "postconf")
SWAKS = "/usr/bin/swaks"
VERSION_PREFIX = "3.7."

MAIL_OWNER = "postfix"
SETGID_GROUP = "postdrop"

# The text of Postfix's default reply (451 4.3.5) when the policy service
# cannot be reached: smtpd_policy_service_default_action in 3.7.
POLICY_UNAVAILABLE = "Server configuration problem"


def env():
    """The environment for Postfix commands: PATH, and where Debian's
    libpostfix-*.so are."""
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LD_LIBRARY_PATH": SHLIB_DIR, "LANG": "C"}


def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def _download(dest):
    """apt-get download postfix into dest; apt-get update once if that
    fails (a fresh container has no package lists)."""
    r = _run(["apt-get", "download", "postfix"], cwd=dest, timeout=300)
    if r.returncode != 0:
        u = _run(["apt-get", "update"], timeout=600)
        assert u.returncode == 0, "apt-get update failed:\n" + u.stderr
        r = _run(["apt-get", "download", "postfix"], cwd=dest, timeout=300)
    assert r.returncode == 0, "apt-get download postfix failed:\n" + r.stderr
    debs = [f for f in os.listdir(dest) if f.startswith("postfix_")
            and f.endswith(".deb")]
    assert len(debs) == 1, debs
    return os.path.join(dest, debs[0])


def root_version():
    """mail_version of the unpacked Postfix, or None if it does not run."""
    try:
        r = _run([POSTCONF, "-d", "-h", "mail_version"], env=env(), timeout=30)
    except OSError:
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def ensure_root():
    """Unpack Debian's postfix .deb into build/postfix-root, once.

    Done under a lock, into a scratch directory renamed into place at the
    end, so an interrupted or concurrent first run never leaves half a
    root behind.  Needs root (apt-get)."""
    marker = os.path.join(PF_ROOT, ".unpacked")
    if os.path.exists(marker):
        return PF_ROOT
    build = os.path.dirname(PF_ROOT)
    os.makedirs(build, exist_ok=True)
    with open(os.path.join(build, ".postfix-root.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(marker):
            return PF_ROOT
        assert os.geteuid() == 0, \
            "unpacking Postfix into %s needs root (apt-get)" % PF_ROOT
        scratch = tempfile.mkdtemp(prefix=".postfix-root.", dir=build)
        try:
            # _apt must be able to write where apt-get downloads to.
            dl = os.path.join(scratch, "dl")
            os.mkdir(dl)
            os.chmod(dl, 0o777)
            deb = _download(dl)
            tree = os.path.join(scratch, "root")
            r = _run(["dpkg", "-x", deb, tree], timeout=120)
            assert r.returncode == 0, "dpkg -x failed:\n" + r.stderr
            # postfix-script checks these exist in meta_directory (on a
            # real install Debian's postinst puts them in /etc/postfix).
            share = os.path.join(tree, "usr", "share", "postfix")
            meta = os.path.join(tree, "etc", "postfix")
            for src, dst in (("dynamicmaps.cf", "dynamicmaps.cf"),
                             ("makedefs.out", "makedefs.out"),
                             ("main.cf.dist", "main.cf.proto"),
                             ("master.cf.dist", "master.cf.proto")):
                if os.path.exists(os.path.join(share, src)):
                    shutil.copy(os.path.join(share, src),
                                os.path.join(meta, dst))
            with open(os.path.join(tree, ".unpacked"), "w") as f:
                f.write(os.path.basename(deb) + "\n")
            if os.path.exists(PF_ROOT):
                shutil.rmtree(PF_ROOT)
            os.rename(tree, PF_ROOT)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    v = root_version()
    assert v and v.startswith(VERSION_PREFIX), \
        "Postfix in %s is %r, not %sx (missing libraries? see postfix.py)" \
        % (PF_ROOT, v, VERSION_PREFIX)
    return PF_ROOT


def _exists(lookup, name):
    try:
        lookup(name)
        return True
    except KeyError:
        return False


def ensure_users():
    """Postfix's mail_owner and setgid group, as Debian's package would
    create them; only those that are missing.  (A concurrent run may add
    one first: what counts is that it exists afterwards.)"""
    assert os.geteuid() == 0, "Postfix's master must run as root"
    if not _exists(grp.getgrnam, SETGID_GROUP):
        r = _run(["groupadd", "--system", SETGID_GROUP], timeout=30)
        assert _exists(grp.getgrnam, SETGID_GROUP), r.stderr
    if not _exists(pwd.getpwnam, MAIL_OWNER):
        r = _run(["useradd", "--system", "--user-group",
                  "--home-dir", "/nonexistent", "--no-create-home",
                  "--shell", "/usr/sbin/nologin",
                  "--comment", "Postfix mail_owner (senderwatch tests)",
                  MAIL_OWNER], timeout=30)
        assert _exists(pwd.getpwnam, MAIL_OWNER), r.stderr


MAIN_CF = """\
# written by tests/integration/postfix.py
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
daemon_directory = {daemon_dir}
command_directory = {sbin}
shlib_directory = {shlib}
meta_directory = {meta}
mail_owner = {owner}
setgid_group = {group}
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C
    POSTLOG_SERVICE POSTLOG_HOSTNAME LD_LIBRARY_PATH={shlib}
maillog_file = {log}
maillog_file_prefixes = {dir}
myhostname = mta.test.example
mydomain = test.example
myorigin = $myhostname
mydestination = $myhostname, localhost
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_peername_lookup = no
smtpd_banner = $myhostname ESMTP senderwatch test
biff = no
append_dot_mydomain = no
alias_maps =
alias_database =
local_recipient_maps =
notify_classes =
# No mail leaves: every transport discards.
default_transport = discard:senderwatch test
relay_transport = discard:senderwatch test
local_transport = discard:senderwatch test
virtual_transport = discard:senderwatch test
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions =
    check_policy_service unix:{policy},
    permit_mynetworks,
    reject_unauth_destination
"""

# Every service Postfix needs to take mail over SMTP and discard it, none
# chrooted.  The smtpd listens on 127.0.0.1:PORT only.
MASTER_CF = """\
# written by tests/integration/postfix.py
# service  type  private unpriv  chroot  wakeup  maxproc command
127.0.0.1:{port} inet n   -       n       -       -       smtpd
cleanup    unix  n       -       n       -       0       cleanup
qmgr       unix  n       -       n       300     1       qmgr
rewrite    unix  -       -       n       -       -       trivial-rewrite
bounce     unix  -       -       n       -       0       bounce
defer      unix  -       -       n       -       0       bounce
trace      unix  -       -       n       -       0       bounce
verify     unix  -       -       n       -       1       verify
flush      unix  n       -       n       1000?   0       flush
proxymap   unix  -       -       n       -       -       proxymap
error      unix  -       -       n       -       -       error
retry      unix  -       -       n       -       -       error
discard    unix  -       -       n       -       -       discard
anvil      unix  -       -       n       -       1       anvil
scache     unix  -       -       n       -       1       scache
postlog    unix-dgram n  -       n       -       1       postlogd
"""


class Reply:
    def __init__(self, code, lines, lapse=None):
        self.code = code
        self.lines = lines          # the text of each line, code removed
        self.lapse = lapse          # seconds, from swaks --show-time-lapse

    @property
    def text(self):
        return " ".join(self.lines)

    def __repr__(self):
        return "%d %s" % (self.code, self.text)


REPLY_RE = re.compile(r"^<(?:-|\*\*|~|~\*) +(\d{3})([ -])(.*)$")
SENT_RE = re.compile(r"^ (?:->|~>) (.*)$")
LAPSE_RE = re.compile(r"^=== response in ([0-9.]+)s$")


class Session:
    """What one swaks run said, as pairs of (command, Reply): the banner's
    command is "" (the connection), the end of data's is the message's
    first line."""

    def __init__(self, args, proc, elapsed):
        self.args = args
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.rc = proc.returncode
        self.elapsed = elapsed
        self.exchanges = parse_swaks(proc.stdout)

    def reply(self, verb):
        """The reply to the first command starting with verb ("RCPT")."""
        for cmd, r in self.exchanges:
            if cmd.upper().startswith(verb.upper()):
                return r
        raise AssertionError("no %s in the session:\n%s%s"
                             % (verb, self.stdout, self.stderr))

    @property
    def rcpt(self):
        return self.reply("RCPT")

    @property
    def end_of_data(self):
        """The reply to the message (after DATA's 354)."""
        for i, (cmd, r) in enumerate(self.exchanges):
            if cmd.upper() == "DATA" and r.code == 354:
                return self.exchanges[i + 1][1]
        raise AssertionError("no DATA in the session:\n" + self.stdout)

    def __repr__(self):
        return "\n".join("%s -> %r" % e for e in self.exchanges)


def parse_swaks(out):
    """swaks --show-time-lapse output: " -> CMD" for what it sent,
    "=== response in N.NNNs" before each reply, then the reply's lines,
    "<-  250 ..." or "<** 450 ..." for an error.  Returns [(command,
    Reply)], each Reply with its lapse."""
    exchanges, cmd, lines, lapse = [], "", [], None
    for line in out.splitlines():
        m = REPLY_RE.match(line)
        if m:
            lines.append(m.group(3))
            if m.group(2) == " ":
                exchanges.append((cmd or "", Reply(int(m.group(1)), lines,
                                                   lapse)))
                cmd, lines, lapse = None, [], None
            continue
        m = LAPSE_RE.match(line)
        if m:
            lapse = float(m.group(1))
            continue
        m = SENT_RE.match(line)
        if m and cmd is None:
            cmd = m.group(1)
    return exchanges


class Postfix:
    """One private Postfix instance in d/name whose smtpd asks the policy
    service at policy_socket (an absolute path) for each recipient."""

    def __init__(self, d, policy_socket, extra_main_cf=None, name="postfix"):
        ensure_root()
        ensure_users()
        self.dir = os.path.join(d, name)
        self.conf_dir = os.path.join(self.dir, "etc")
        self.queue = os.path.join(self.dir, "queue")
        self.data = os.path.join(self.dir, "data")
        self.logpath = os.path.join(self.dir, "maillog")
        self.policy_socket = policy_socket
        self.extra = dict(extra_main_cf or {})
        self.port = None
        self.running = False
        for p in (self.dir, self.conf_dir, self.queue):
            os.makedirs(p, exist_ok=True)
            os.chmod(p, 0o755)

    def write_config(self):
        main = MAIN_CF.format(
            queue=self.queue, data=self.data, daemon_dir=DAEMON_DIR,
            sbin=SBIN, shlib=SHLIB_DIR, meta=META_DIR, owner=MAIL_OWNER,
            group=SETGID_GROUP, log=self.logpath, dir=self.dir,
            policy=self.policy_socket)
        for name, text in (("main.cf", main),
                           ("master.cf", MASTER_CF.format(port=self.port))):
            path = os.path.join(self.conf_dir, name)
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o644)
        # Extra settings replace the ones above in place (postconf -e), so
        # no parameter is set twice.
        if self.extra:
            self.postconf("-e", *("%s=%s" % kv for kv in self.extra.items()))
        # Every name must be one Postfix knows: a typo would otherwise be
        # a silently ignored setting.
        r = _run([POSTCONF, "-c", self.conf_dir, "-n"], env=env(), timeout=30)
        assert r.returncode == 0 and "warning" not in r.stderr, r.stderr

    def postfix(self, *args, timeout=60):
        return _run([POSTFIX, "-c", self.conf_dir] + list(args), env=env(),
                    timeout=timeout)

    def postconf(self, *args):
        r = _run([POSTCONF, "-c", self.conf_dir] + list(args), env=env(),
                 timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def log(self):
        try:
            with open(self.logpath, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def banner(self):
        """True once smtpd answers 220 on our port."""
        try:
            with socket.create_connection(("127.0.0.1", self.port),
                                          timeout=2) as s:
                buf = b""
                while b"\n" not in buf:
                    b = s.recv(512)
                    if not b:
                        return False
                    buf += b
                s.sendall(b"QUIT\r\n")
                return buf.startswith(b"220 ")
        except OSError:
            return False

    def start(self, timeout=30):
        # A port picked free may be taken before master binds it: try again.
        for attempt in range(3):
            self.port = free_port()
            self.write_config()
            r = self.postfix("start")
            if r.returncode == 0:
                break
            if "Address already in use" not in r.stderr + self.log():
                break
        assert r.returncode == 0, "postfix start failed:\n%s%s\n%s" % (
            r.stdout, r.stderr, self.log()[-3000:])
        self.running = True
        wait_for(self.banner, timeout=timeout,
                 what="Postfix's smtpd to greet on port %d" % self.port,
                 interval=0.05)
        return self

    def pids(self):
        """Every live process of this instance: master and its children
        carry MAIL_CONFIG=<our config directory> in their environment."""
        want = b"MAIL_CONFIG=" + self.conf_dir.encode()
        found = []
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open("/proc/%s/environ" % p, "rb") as f:
                    envs = f.read().split(b"\0")
                with open("/proc/%s/stat" % p, "rb") as f:
                    state = f.read().rsplit(b")", 1)[1].split()[0]
            except OSError:
                continue
            if want in envs and state != b"Z":
                found.append(int(p))
        return found

    def stop(self):
        """Stop master (SIGTERM, which it passes on to its children: what
        `postfix stop` sends) and wait, with a deadline, until no process
        of this instance is left.  `postfix abort` sends the same signal
        as `postfix stop` without stop's one-second sleeps."""
        if self.running:
            self.running = False
            self.postfix("abort")
        try:
            wait_for(lambda: not self.pids(), timeout=10,
                     what="Postfix's processes to exit", interval=0.05)
        except AssertionError:
            left = self.pids()
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            raise AssertionError("Postfix processes left after stop: %s"
                                 % left)

    def swaks(self, sender, rcpt="b@remote.example", quit_after="RCPT",
              extra=(), timeout=30):
        """One SMTP session by swaks; sender "<>" is the null sender."""
        args = [SWAKS, "--server", "127.0.0.1:%d" % self.port,
                "--ehlo", "client.example", "--from", sender, "--to", rcpt,
                "--show-time-lapse", "--timeout", "%ds" % timeout]
        if quit_after:
            args += ["--quit-after", quit_after]
        args += list(extra)
        t = time.monotonic()
        r = _run(args, timeout=timeout + 10)
        s = Session(args, r, time.monotonic() - t)
        assert s.exchanges and s.exchanges[0][1].code == 220, \
            "swaks got no greeting (exit %d):\n%s%s" % (r.returncode,
                                                         r.stdout, r.stderr)
        return s


@pytest.fixture
def make_postfix(tmp):
    """Factory: make_postfix(policy_socket, extra_main_cf={}) -> a started
    Postfix (each in its own directory under tmp), all stopped at teardown,
    with no process left behind."""
    started = []

    def make(policy_socket, extra_main_cf=None, name=None):
        pf = Postfix(tmp, policy_socket, extra_main_cf,
                     name=name or "postfix%d" % len(started))
        started.append(pf)
        return pf.start()

    yield make
    errors = []
    for pf in started:
        try:
            pf.stop()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, errors
