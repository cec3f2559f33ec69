"""deploy/: the systemd units, the monit checks, the sysusers file and the
quick start (`make run` = deploy/run-local.sh), each checked by the real
tool that will read it: systemd-analyze, systemd-sysusers, monit, and a
real run of the whole loop down to the alert mail.
"""
import email
import email.policy
import os
import re
import shutil
import signal
import subprocess

import pytest

from conftest import ROOT, SHIM, ALERTER, ask, wait_for
from test_alerter import make_alerter, sink  # noqa: F401 (fixtures)

DEPLOY = os.path.join(ROOT, "deploy")
UNITS = {
    "shim": os.path.join(DEPLOY, "senderwatch-shim.service"),
    "alerter": os.path.join(DEPLOY, "senderwatch-alerter.service"),
}
MONIT = os.path.join(DEPLOY, "monit", "senderwatch")
SYSUSERS = os.path.join(DEPLOY, "senderwatch.sysusers")
RUN_LOCAL = os.path.join(DEPLOY, "run-local.sh")
SINK = os.path.join(ROOT, "tests", "integration", "smtp_sink.py")
REFERENCE_CONFIG = os.path.join(ROOT, "config.yaml")

need_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not installed (Debian package systemd)")
need_monit = pytest.mark.skipif(
    shutil.which("monit") is None,
    reason="monit not installed (apt-get install monit)")


# --- systemd ---------------------------------------------------------------

def unit_options(path):
    """{(section, key): [values in order]}: repeated keys (ExecReload=,
    SystemCallFilter=) keep every value, as systemd does."""
    opts, section = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            key, sep, value = line.partition("=")
            assert sep, "%s: not key=value: %r" % (path, line)
            opts.setdefault((section, key.strip()), []).append(value.strip())
    return opts


def unit_copy(tmp, which, text=None):
    """The unit with /usr/local/sbin/ pointed at copies of the built
    binaries: systemd-analyze refuses a unit whose command does not exist,
    and what matters here is the unit, not where the binary is installed."""
    sbin = os.path.join(tmp, "sbin")
    os.makedirs(sbin, exist_ok=True)
    for name, built in (("senderwatch-shim", SHIM),
                        ("senderwatch-alerter", ALERTER)):
        dst = os.path.join(sbin, name)
        if os.path.exists(dst):
            continue
        if os.path.exists(built):
            shutil.copy(built, dst)
        else:
            # The alerter may not be built yet; verify only needs an
            # executable file at the path.
            with open(dst, "w") as f:
                f.write("#!/bin/sh\nexit 0\n")
        os.chmod(dst, 0o755)
    if text is None:
        with open(UNITS[which]) as f:
            text = f.read()
    path = os.path.join(tmp, os.path.basename(UNITS[which]))
    with open(path, "w") as f:
        f.write(text.replace("/usr/local/sbin/", sbin + "/"))
    os.chmod(path, 0o644)
    return path


def verify(path):
    """systemd-analyze verify: (exit code, the lines about this unit)."""
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", path],
                       capture_output=True, text=True, timeout=60)
    name = os.path.basename(path)
    lines = [l for l in (r.stdout + r.stderr).splitlines()
             if name in l or "Unknown" in l or "ignoring" in l]
    return r.returncode, lines


@need_systemd_analyze
@pytest.mark.parametrize("which", ["shim", "alerter"])
def test_unit_verifies(tmp, which):
    rc, complaints = verify(unit_copy(tmp, which))
    assert rc == 0 and complaints == [], complaints


@need_systemd_analyze
def test_unit_verify_catches_a_typo(tmp):
    # verify only warns about unknown keys (exit 0): the check above must
    # look at what it says, and this proves it does.
    with open(UNITS["shim"]) as f:
        text = f.read().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes")
    rc, complaints = verify(unit_copy(tmp, "shim", text))
    assert any("NoNewPrivilege" in l for l in complaints), complaints


HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "",
    "Restart": "on-failure",
}


@pytest.mark.parametrize("which", ["shim", "alerter"])
def test_unit_options(which):
    o = unit_options(UNITS[which])

    def one(key):
        v = o.get(("Service", key))
        assert v is not None and len(v) == 1, "%s: %s=%r" % (which, key, v)
        return v[0]

    for key, want in HARDENING.items():
        assert one(key) == want, "%s: %s" % (which, key)
    pid = "/run/senderwatch/%s.pid" % which
    binary = "/usr/local/sbin/senderwatch-" + which
    assert one("Type") == "forking"
    assert one("PIDFile") == pid
    assert one("ExecStart") == (
        "%s -c /etc/senderwatch/config.yaml -p %s" % (binary, pid))
    assert o[("Service", "ExecReload")][-1] == "/bin/kill -HUP $MAINPID"
    assert one("User") == "senderwatch" and one("Group") == "senderwatch"
    assert one("RuntimeDirectory") == "senderwatch"
    # Both units name the directory: without this, stopping one would
    # delete the other's socket and pidfile.
    assert one("RuntimeDirectoryPreserve") == "yes"
    if which == "shim":
        # chown of the socket to socket_group needs membership in it.
        assert one("SupplementaryGroups") == "Debian-exim"
    else:
        assert ("Service", "SupplementaryGroups") not in o
    assert o[("Install", "WantedBy")] == ["multi-user.target"]


@need_systemd_analyze
@pytest.mark.parametrize("which", ["shim", "alerter"])
def test_unit_exposure(tmp, which):
    # systemd's own reading of the sandbox, on its 0-10 scale (10 = none).
    path = unit_copy(tmp, which)
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes",
                        "--no-pager", path],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 2.0, r.stdout


def test_paths_agree():
    """The units, the monit checks and the reference config name the same
    pidfiles and socket."""
    with open(MONIT) as f:
        monit = f.read()
    for which in ("shim", "alerter"):
        pid = unit_options(UNITS[which])[("Service", "PIDFile")][0]
        assert re.search(r"check process senderwatch-%s with pidfile %s\n"
                         % (which, re.escape(pid)), monit)
        assert ("systemctl start senderwatch-%s.service" % which) in monit
        assert ("systemctl stop senderwatch-%s.service" % which) in monit
    with open(REFERENCE_CONFIG) as f:
        listen = re.search(r"^\s+listen: \[ (\S+) \]", f.read(), re.M)
    assert listen, "config.yaml: shim.listen not found"
    assert "if failed unixsocket %s " % listen.group(1) in monit
    with open(REFERENCE_CONFIG) as f:
        ctl = re.search(r"^\s+alerter: (/\S+\.ctl)", f.read(), re.M)
    assert ctl, "config.yaml: control.alerter not found"
    assert "if failed unixsocket %s " % ctl.group(1) in monit


def test_sysusers_makes_the_units_user(tmp):
    if shutil.which("systemd-sysusers") is None:
        pytest.skip("systemd-sysusers not installed (Debian package systemd)")
    # --root: into an empty tree here, never the machine's /etc.
    os.makedirs(os.path.join(tmp, "etc"))
    subprocess.run(["systemd-sysusers", "--root", tmp, SYSUSERS],
                   check=True, capture_output=True, timeout=60)
    with open(os.path.join(tmp, "etc", "passwd")) as f:
        users = {l.split(":")[0]: l.strip().split(":") for l in f}
    with open(os.path.join(tmp, "etc", "group")) as f:
        groups = {l.split(":")[0] for l in f}
    for which in UNITS:
        o = unit_options(UNITS[which])
        user = o[("Service", "User")][0]
        assert user in users
        assert o[("Service", "Group")][0] in groups
        assert users[user][6] == "/usr/sbin/nologin"
        assert int(users[user][2]) < 1000     # a system user


# --- monit -------------------------------------------------------------------

def monit_control(tmp, include, cycle=30):
    """A control file that keeps all of monit's files in tmp."""
    path = os.path.join(tmp, "monitrc")
    with open(path, "w") as f:
        f.write("set daemon %d\n"
                "set idfile %s/monit.id\n"
                "set statefile %s/monit.state\n"
                "set pidfile %s/monit.pid\n"
                "set logfile %s/monit.log\n"
                "include %s\n" % (cycle, tmp, tmp, tmp, tmp, include))
    os.chmod(path, 0o600)       # monit refuses a control file others read
    return path


def monit_check(tmp, text):
    path = os.path.join(tmp, "checks")
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    return subprocess.run(["monit", "-t", "-c", monit_control(tmp, path)],
                          capture_output=True, text=True, timeout=60)


def monit_run(tmp, text, stop_marker, start_timeout=1):
    """text (one check of deploy/monit/senderwatch, its paths already
    pointed at the test's daemon) made runnable here: starting is
    /bin/true, stopping (what a restart begins with) leaves a marker, and
    the start timeout, during which monit skips a process's tests, is
    start_timeout seconds instead of 30.  Returns (monit in the
    foreground checking every second, logged(s): how often s is in its
    log)."""
    text = text.replace("with timeout 30 seconds",
                        "with timeout %d seconds" % start_timeout)
    text = re.sub(r'start program = "[^"]*"', 'start program = "/bin/true"',
                  text)
    text = re.sub(r'stop program  = "[^"]*"',
                  'stop program = "/bin/sh -c \'echo >> %s\'"' % stop_marker,
                  text)
    path = os.path.join(tmp, "checks")
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    control = monit_control(tmp, path, cycle=1)
    log = os.path.join(tmp, "monit.log")

    def logged(s):
        try:
            with open(log) as f:
                return f.read().count(s)
        except FileNotFoundError:
            return 0

    monit = subprocess.Popen(["monit", "-I", "-v", "-c", control],
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    return monit, logged


@need_monit
def test_monit_syntax(tmp):
    with open(MONIT) as f:
        text = f.read()
    r = monit_check(tmp, text)
    assert r.returncode == 0, r.stdout + r.stderr
    # ... and the same check does notice a mistake.
    r = monit_check(tmp, text.replace("restarts within", "restrats within"))
    assert r.returncode != 0


@need_monit
def test_monit_probes_a_real_shim(tmp, make_shim, redis):
    shim, sock = make_shim()
    marker = os.path.join(tmp, "restarted")
    with open(MONIT) as f:
        text = f.read()
    # The shim's check only, pointed at this shim.  A restart begins with
    # the stop program: here it just leaves a marker.  monit skips the
    # socket test while a process is younger than its start timeout: 1 s
    # here instead of 30.
    text = text[:text.index("check process senderwatch-alerter")]
    text = (text.replace("/run/senderwatch/shim.pid", shim.pidfile)
            .replace("/run/senderwatch/shim.sock", sock))
    monit, logged = monit_run(tmp, text, marker)
    try:
        wait_for(lambda: logged("connection succeeded to %s" % sock),
                 timeout=15, what="monit to probe the shim")
        # The probe is an empty request: answered, and nothing counted.
        assert redis.cli("--scan", "--pattern", "senderwatch:default:*") == ""
        assert not os.path.exists(marker)

        # A shim that no longer answers on its socket is restarted, after
        # a second failed cycle, not the first.
        os.rename(sock, sock + ".away")
        wait_for(lambda: os.path.exists(marker), timeout=15,
                 what="monit to restart the shim")
        assert logged("failed protocol test") >= 2
        assert logged("'senderwatch-shim' trying to restart")
    finally:
        monit.terminate()
        monit.wait(timeout=10)
        if os.path.exists(sock + ".away"):
            os.rename(sock + ".away", sock)


@need_monit
def test_monit_probes_a_real_alerter(tmp, make_alerter, sink):
    """The alerter's check asks its control socket for its status."""
    ctl = os.path.join(tmp, "alerter.ctl")
    alerter = make_alerter(port=sink.port,
                           extra="control:\n  alerter: %s\n" % ctl)
    marker = os.path.join(tmp, "restarted")
    with open(MONIT) as f:
        text = f.read()
    text = text[text.index("check process senderwatch-alerter"):]
    text = (text.replace("/run/senderwatch/alerter.pid", alerter.pidfile)
            .replace("/run/senderwatch/alerter.ctl", ctl))
    monit, logged = monit_run(tmp, text, marker)
    try:
        wait_for(lambda: logged("connection succeeded to %s" % ctl),
                 timeout=15, what="monit to probe the alerter")
        assert not os.path.exists(marker)
        # A stopped loop answers nothing: SIGSTOP, and monit restarts it.
        alerter.signal(signal.SIGSTOP)
        wait_for(lambda: os.path.exists(marker), timeout=30,
                 what="monit to restart the alerter")
        assert logged("'senderwatch-alerter' trying to restart")
    finally:
        alerter.signal(signal.SIGCONT)
        monit.terminate()
        monit.wait(timeout=10)


# --- make run ------------------------------------------------------------------

def need_run_local():
    if not os.path.exists(ALERTER):
        pytest.skip("build/senderwatch-alerter is not built yet: "
                    "`make run` needs it")
    if not os.path.exists(SINK):
        pytest.skip("tests/integration/smtp_sink.py does not exist yet: "
                    "`make run` needs it")


def run_env(rundir, oneshot):
    env = dict(os.environ)
    env["SW_RUN_DIR"] = rundir
    env["MAKE_RUN_ONESHOT"] = oneshot
    return env


def processes_in(rundir):
    """pids whose command line points into rundir: what a run left."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            with open("/proc/%s/stat" % pid) as f:
                state = f.read().rsplit(") ", 1)[1][0]
        except (OSError, IndexError):
            continue
        if rundir + "/" in cmd and state != "Z":
            found.append(int(pid))
    return found


def reap(rundir):
    """After a failed test: kill what that run (and only it) left."""
    for pid in processes_in(rundir):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def mails(rundir):
    d = os.path.join(rundir, "mail")
    return sorted(os.path.join(d, f) for f in os.listdir(d)
                  if f.endswith(".eml"))


def read_mail(path):
    with open(path, "rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.default)
    body = "\n".join(part.get_content() for part in msg.walk()
                     if part.get_content_maintype() == "text")
    return msg, body


def oneshot(rundir):
    """Run it as `make run` does without a terminal.  Returns the result
    and the processes it left behind (which are then killed, so a failure
    leaks nothing)."""
    left = []
    try:
        r = subprocess.run(["sh", RUN_LOCAL], cwd=ROOT,
                           env=run_env(rundir, "1"), stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=120)
        left = processes_in(rundir)
    finally:
        reap(rundir)
    return r, left


def test_make_run_oneshot(tmp):
    need_run_local()
    rundir = os.path.join(tmp, "run")
    os.makedirs(rundir)
    # A stale pidfile naming a live process that is not ours: it must be
    # left alone, however the pid got there.
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        with open(os.path.join(rundir, "redis.pid"), "w") as f:
            f.write("%d\n" % bystander.pid)
        r, left = oneshot(rundir)
        assert r.returncode == 0, r.stdout + r.stderr
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()

    out = r.stdout
    assert "answers: no no no no no yes" in out, out
    [path] = mails(rundir)
    assert "the alert arrived: %s" % path in out
    msg, body = read_mail(path)
    assert msg["Subject"].startswith("Mail Abuse Alert")
    assert "postmaster@example.com" in msg["To"]
    assert "demo@example.org" in body, body
    with open(path, "rb") as f:
        raw = f.read().decode("utf-8", "replace").replace("\r\n", "\n")
    assert raw.strip() in out           # the mail is shown as it arrived
    # senderwatch-ctl shows why the demo key is deferred: 6 against 5.
    assert re.search(r"^default\s+demo@example\.org\s+\S+\s+6\s+5\s+\S+"
                     r"\s+yes$", out, re.M), out
    # The instructions name what a user needs.
    for s in ("senderwatch-ctl -c", "--scan --pattern 'senderwatch:*'", "PTTL", "XRANGE senderwatch:stream - +",
              "SUBSCRIBE senderwatch:events", "for i in 1 2 3 4 5 6"):
        assert s in out
    # Everything it started is gone.
    assert left == []
    assert not os.path.exists(os.path.join(rundir, "shim.sock"))
    assert not os.path.exists(os.path.join(rundir, "redis.sock"))
    assert not os.path.exists(os.path.join(rundir, "shim.ctl"))


def start_foreground(rundir):
    log = open(os.path.join(os.path.dirname(rundir), "run-local.out"), "w+")
    p = subprocess.Popen(["sh", RUN_LOCAL], cwd=ROOT,
                         env=run_env(rundir, "0"), stdin=subprocess.DEVNULL,
                         stdout=log, stderr=subprocess.STDOUT)

    def ready():
        assert p.poll() is None, "run-local.sh exited early:\n" + out()
        return "Ctrl-C stops" in out()

    def out():
        log.seek(0)
        return log.read()

    wait_for(ready, timeout=60, what="run-local.sh to be ready")
    return p, out


def test_make_run_foreground_by_hand_then_rerun(tmp):
    need_run_local()
    rundir = os.path.join(tmp, "run")
    p, out = start_foreground(rundir)
    try:
        sock = os.path.join(rundir, "shim.sock")
        redis_sock = os.path.join(rundir, "redis.sock")

        # What the instructions tell a user to do, with the generated
        # run/ask (the demo already ran the printed one-liner).
        ask_cmd = [os.path.join(rundir, "ask"), "alice@example.org",
                   "Cheap pills"]
        answers = [subprocess.run(ask_cmd, capture_output=True, text=True,
                                  timeout=10, check=True).stdout
                   for _ in range(5)]
        assert answers == ["no\n"] * 5
        assert ask(sock, "alice@example.org\n") == b"yes"
        key = "senderwatch:default:alice@example.org"
        cli = ["redis-cli", "-s", redis_sock]
        count = subprocess.run(cli + ["GET", key], capture_output=True,
                               text=True, timeout=10).stdout.strip()
        assert count == "6"
        ttl = int(subprocess.run(cli + ["PTTL", key], capture_output=True,
                                 text=True, timeout=10).stdout)
        assert 0 < ttl <= 60000
        subjects = subprocess.run(
            cli + ["ZRANGE", "senderwatch:subjects:default:alice@example.org",
                   "0", "-1"], capture_output=True, text=True, timeout=10)
        assert subjects.stdout.strip() == "Cheap pills"
        wait_for(lambda: len(mails(rundir)) == 2, timeout=20,
                 what="the second alert mail")
        bodies = [read_mail(m)[1] for m in mails(rundir)]
        assert any("alice@example.org" in b for b in bodies), bodies

        # The terminal dies with it: kill -9 leaves the children behind...
        p.kill()
        p.wait()
        orphans = processes_in(rundir)
        assert len(orphans) >= 4, orphans
    except BaseException:
        p.kill()
        reap(rundir)
        raise

    # ... and the next run stops them and works.
    r, left = oneshot(rundir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "left from an earlier run" in r.stdout
    # (Killed orphans may linger as zombies where nothing reaps them;
    # processes_in() does not count those.)
    assert left == []
    assert len(mails(rundir)) == 1      # a fresh mailbox, the demo's alert


def test_make_run_ctrl_c_stops_everything(tmp):
    need_run_local()
    rundir = os.path.join(tmp, "run")
    p, out = start_foreground(rundir)
    assert len(processes_in(rundir)) >= 4
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=30)
        left = processes_in(rundir)     # before reap() hides them
    finally:
        if p.poll() is None:
            p.kill()
        reap(rundir)
    assert p.returncode == 130, out()
    assert left == []
    for name in ("shim.sock", "redis.sock", "shim.pid", "alerter.pid",
                 "redis.pid", "smtp-sink.pid", "run-local.pid"):
        assert not os.path.exists(os.path.join(rundir, name)), name
