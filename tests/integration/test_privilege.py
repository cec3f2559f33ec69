"""Connections and privileges: a TCP listener, Redis over TCP with AUTH
(plain password, Redis 6 ACL user, password from a file) and SELECT, the
socket's mode and group, and running as root: the shim drops to its user
after opening the socket, and refuses to run as root without one.
"""
import grp
import os
import pwd
import socket
import subprocess

import pytest

from conftest import (RUN_USER, SHIM, Daemon, ask, free_port, log_lines,
                      read_all, shim_answers, wait_for, write_config)


class TcpRedis:
    """redis-server on a loopback TCP port, optionally with a password."""

    def __init__(self, d, password=None):
        self.port = free_port()
        self.dir = d
        self.password = password
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", d,
                "--logfile", os.path.join(d, "tcp-redis.log")]
        if password:
            args += ["--requirepass", password]
        self.proc = subprocess.Popen(args)
        wait_for(lambda: self.cli("PING") == "PONG", what="redis on TCP")

    def cli(self, *args, user=None):
        cmd = ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "--no-auth-warning"]
        if user:
            cmd += ["--user", user[0], "--pass", user[1]]
        elif self.password:
            cmd += ["-a", self.password]
        r = subprocess.run(cmd + [str(a) for a in args], capture_output=True,
                           text=True, timeout=10)
        return r.stdout.strip()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def config(tmp, name, redis_lines, listen=None, extra_shim=""):
    sock = listen or os.path.join(tmp, name + ".sock")
    text = "shim:\n  listen: [ %s ]\n  socket_mode: \"0666\"\n" % sock
    if RUN_USER:
        text += "  user: %s\n" % RUN_USER
    text += extra_shim
    text += "redis:\n" + redis_lines
    text += "rules:\n  default: { limit: 2, window: 60s }\n"
    return write_config(os.path.join(tmp, name + ".yaml"), text), sock


def start(tmp, name, conf, ready=True):
    d = Daemon(SHIM, conf, tmp, name)
    d.start(wait=(lambda: "script_loaded" in d.log()) if ready else None)
    return d


@pytest.fixture
def tcp_redis(tmp):
    made = []

    def make(**kw):
        r = TcpRedis(tmp, **kw)
        made.append(r)
        return r
    yield make
    for r in made:
        r.stop()


@pytest.fixture
def daemons():
    made = []
    yield made
    for d in made:
        d.stop()


def test_tcp_listener_and_redis_over_tcp_with_select(tmp, tcp_redis, daemons):
    r = tcp_redis()
    port = free_port()
    conf, _ = config(tmp, "tcp", "  address: 127.0.0.1:%d\n  database: 3\n" % r.port,
                     listen="inet:127.0.0.1:%d" % port)
    daemons.append(start(tmp, "tcp", conf))

    def ask_tcp(data):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            return read_all(s)
    assert [ask_tcp(b"tcp@example.org\n") for _ in range(3)] == [b"no", b"no", b"yes"]
    assert r.cli("-n", 3, "GET", "senderwatch:default:tcp@example.org") == "3"
    assert r.cli("-n", 0, "EXISTS", "senderwatch:default:tcp@example.org") == "0"


def test_auth_with_password_file(tmp, tcp_redis, daemons):
    r = tcp_redis(password="s3cret pass")
    pw = os.path.join(tmp, "redis.pass")
    with open(pw, "w") as f:
        f.write("s3cret pass\n")
    os.chmod(pw, 0o600)      # read while still root, before the drop
    conf, sock = config(tmp, "auth", "  address: 127.0.0.1:%d\n"
                        "  password_file: %s\n" % (r.port, pw))
    shim = start(tmp, "auth", conf)
    daemons.append(shim)
    assert ask(sock, "auth@example.org\n") == b"no"
    assert r.cli("GET", "senderwatch:default:auth@example.org") == "1"
    assert "s3cret" not in shim.log()


def test_auth_with_acl_user(tmp, tcp_redis, daemons):
    r = tcp_redis(password="admin")
    assert r.cli("ACL", "SETUSER", "sw", "on", ">userpw", "~senderwatch:*",
                 "&*", "+@all") == "OK"
    conf, sock = config(tmp, "acl", "  address: 127.0.0.1:%d\n  username: sw\n"
                        "  password: userpw\n" % r.port)
    daemons.append(start(tmp, "acl", conf))
    assert ask(sock, "acl@example.org\n") == b"no"
    assert r.cli("GET", "senderwatch:default:acl@example.org") == "1"


def test_wrong_password_fails_open_and_says_why(tmp, tcp_redis, daemons):
    r = tcp_redis(password="right")
    conf, sock = config(tmp, "wrong", "  address: 127.0.0.1:%d\n"
                        "  password: wrong\n" % r.port)
    shim = start(tmp, "wrong", conf, ready=False)
    daemons.append(shim)
    wait_for(lambda: log_lines(shim, "AUTH or SELECT refused"), what="the refusal")
    wait_for(lambda: shim_answers(sock), what="the shim to answer")
    assert ask(sock, "x@example.org\n") == b"no"      # the fail policy
    assert r.cli("DBSIZE") == "0"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_root_drops_to_its_user_and_sets_socket_group(tmp, redis, daemons):
    group = grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
    conf, sock = config(tmp, "drop", "  address: unix:%s\n" % redis.sock,
                        extra_shim="  socket_group: %s\n" % group)
    text = open(conf).read().replace('socket_mode: "0666"', 'socket_mode: "0660"')
    write_config(conf, text)
    shim = start(tmp, "drop", conf)
    daemons.append(shim)
    st = os.stat(sock)
    assert st.st_mode & 0o777 == 0o660
    assert st.st_gid == grp.getgrnam(group).gr_gid
    with open("/proc/%d/status" % shim.proc.pid) as f:
        uids = [l.split()[1:] for l in f if l.startswith(("Uid:", "Gid:"))]
    nobody = pwd.getpwnam("nobody")
    assert uids[0] == [str(nobody.pw_uid)] * 4      # real, effective, saved, fs
    assert uids[1] == [str(nobody.pw_gid)] * 4
    assert ask(sock, "drop@example.org\n") == b"no"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_socket_directory_of_the_daemons_user(tmp, redis):
    """After the privilege drop the shim cannot unlink its socket from a
    directory only root may write (a stale socket, replaced at the next
    start): it says so at start and at exit.  A directory of its own user,
    as systemd's RuntimeDirectory= makes, gets no warning and is left
    clean."""
    nobody = pwd.getpwnam("nobody")
    for owned in (False, True):
        d = os.path.join(tmp, "run-owned" if owned else "run-root")
        os.mkdir(d, 0o755)
        if owned:
            os.chown(d, nobody.pw_uid, nobody.pw_gid)
        conf, sock = config(tmp, "dir%d" % owned,
                            "  address: unix:%s\n" % redis.sock,
                            listen=os.path.join(d, "shim.sock"))
        shim = start(tmp, "dir%d" % owned, conf)
        warned = log_lines(shim, "event=socket_dir_not_writable")
        assert ask(sock, "dir@example.org\n") == b"no"
        assert shim.stop() == 0
        if owned:
            assert not warned
            assert not os.path.exists(sock)
            assert not log_lines(shim, "event=socket_left")
        else:
            assert warned and "RuntimeDirectory" in warned[0], warned
            assert os.path.exists(sock)
            assert log_lines(shim, "event=socket_left")
            # The next start replaces the stale socket.
            shim = start(tmp, "dir-again", conf)
            assert ask(sock, "dir2@example.org\n") == b"no"
            shim.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_refuses_root_without_a_user(tmp, redis):
    sock = os.path.join(tmp, "root.sock")
    conf = write_config(os.path.join(tmp, "root.yaml"),
                        "shim:\n  listen: [ %s ]\nredis:\n  address: unix:%s\n"
                        "rules:\n  default: { limit: 1, window: 1s }\n"
                        % (sock, redis.sock))
    r = subprocess.run([SHIM, "-f", "-c", conf], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 1
    assert "running as root needs a user to switch to" in r.stderr
    assert not os.path.exists(sock)
