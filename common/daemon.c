/*
 * daemon.c: a daemon's life (see daemon.h): options, config, pidfile,
 * privilege drop, detaching from the terminal, signals, reloads.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netdb.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "control.h"
#include "daemon.h"
#include "kv.h"
#include "log.h"
#include "metrics.h"

#ifndef SW_VERSION
#define SW_VERSION	"dev"
#endif

int
daemon_pidfile(const char *path, char *err, size_t errlen)
{
	char	 buf[32];
	int	 fd, len;

	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644))
	    == -1) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	len = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	if (write(fd, buf, len) != len) {
		snprintf(err, errlen, "%s: write: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

int
daemon_drop(const char *user, const char *group, char *err, size_t errlen)
{
	struct passwd	*pw;
	struct group	*gr;
	gid_t		 gid;

	if (geteuid() != 0)
		return 0;
	if (user == NULL) {
		snprintf(err, errlen, "running as root needs a user to switch "
		    "to (shim.user)");
		return -1;
	}
	if ((pw = getpwnam(user)) == NULL) {
		snprintf(err, errlen, "no such user \"%s\"", user);
		return -1;
	}
	gid = pw->pw_gid;
	if (group != NULL) {
		if ((gr = getgrnam(group)) == NULL) {
			snprintf(err, errlen, "no such group \"%s\"", group);
			return -1;
		}
		gid = gr->gr_gid;
	}
	if (setgroups(1, &gid) == -1 || setresgid(gid, gid, gid) == -1 ||
	    setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid) == -1) {
		snprintf(err, errlen, "cannot switch to user %s: %s", user,
		    strerror(errno));
		return -1;
	}
	if (setuid(0) != -1) {
		snprintf(err, errlen, "privileges were not dropped");
		return -1;
	}
	return 0;
}

/* The child's end of the pipe its parent waits on; -1 when not detached. */
static int	daemon_ready_fd = -1;

static int
daemon_detach(char *err, size_t errlen)
{
	pid_t	 pid;
	ssize_t	 n;
	int	 fd, p[2];
	char	 c = 0;

	/*
	 * The parent waits until the child says it is set up (pidfile
	 * written, privileges dropped), so that whoever started us — systemd
	 * with Type=forking, an init script — sees the pidfile at once and a
	 * failed start as a non-zero exit.
	 */
	if (pipe2(p, O_CLOEXEC) == -1) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		return -1;
	}
	if ((pid = fork()) == -1) {
		snprintf(err, errlen, "fork: %s", strerror(errno));
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (pid != 0) {
		close(p[1]);
		do
			n = read(p[0], &c, 1);
		while (n == -1 && errno == EINTR);
		_exit(n == 1 && c == 'R' ? 0 : 1);
	}
	close(p[0]);
	daemon_ready_fd = p[1];
	if (setsid() == -1) {
		snprintf(err, errlen, "setsid: %s", strerror(errno));
		return -1;
	}
	if ((fd = open("/dev/null", O_RDWR)) != -1) {
		dup2(fd, STDIN_FILENO);
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		if (fd > STDERR_FILENO)
			close(fd);
	}
	if (chdir("/") == -1) {
		snprintf(err, errlen, "chdir /: %s", strerror(errno));
		return -1;
	}
	return 0;
}

static void
daemon_ready(void)
{
	if (daemon_ready_fd == -1)
		return;
	while (write(daemon_ready_fd, "R", 1) == -1 && errno == EINTR)
		;
	close(daemon_ready_fd);
	daemon_ready_fd = -1;
}

static void
daemon_usage(FILE *fp, const struct daemon_opts *o,
    const struct daemon_hooks *h)
{
	fprintf(fp, "usage: %s [-fnvVh] [-c config] [-p pidfile]%s\n"
	    "  -c FILE  configuration (default %s)\n"
	    "  -f       stay in the foreground, log to stderr\n"
	    "  -n       check the configuration and exit\n"
	    "  -p FILE  write the pid to FILE\n"
	    "  -v       log every decision and event\n"
	    "  -V       print the version and exit\n"
	    "  -h       this help\n", o->name,
	    h->keys != NULL ? " [-k key]" : "", o->conf_path);
	if (h->keys != NULL)
		fprintf(fp, "  -k KEY   print the Redis key names of KEY under "
		    "every rule and exit\n");
}

static int
daemon_options(int argc, char *argv[], struct daemon_opts *o,
    const struct daemon_hooks *h, int *rc)
{
	int	 ch;

	while ((ch = getopt(argc, argv, "c:fhk:np:vV")) != -1) {
		switch (ch) {
		case 'c':
			o->conf_path = optarg;
			break;
		case 'f':
			o->foreground = 1;
			break;
		case 'k':
			if (h->keys == NULL)
				goto usage;
			o->key = optarg;
			break;
		case 'n':
			o->check = 1;
			break;
		case 'p':
			o->pid_path = optarg;
			break;
		case 'v':
			o->verbose++;
			break;
		case 'V':
			printf("%s %s\n", o->name, SW_VERSION);
			*rc = 0;
			return -1;
		case 'h':
			daemon_usage(stdout, o, h);
			*rc = 0;
			return -1;
		default:
			goto usage;
		}
	}
	if (optind == argc)
		return 0;
usage:
	daemon_usage(stderr, o, h);
	*rc = 2;
	return -1;
}

int
daemon_socket(const char *path, const char *owner, const char *group,
    const char *group_opt, mode_t mode, char *err, size_t errlen)
{
	struct sockaddr_un	 sun;
	struct passwd		*pw;
	struct group		*gr;
	struct stat		 st;
	uid_t			 uid = (uid_t)-1;
	gid_t			 gid = (gid_t)-1;
	int			 fd, probe;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		snprintf(err, errlen, "%s: socket path too long", path);
		return -1;
	}
	strcpy(sun.sun_path, path);
	if (owner != NULL && getuid() == 0) {
		if ((pw = getpwnam(owner)) == NULL) {
			snprintf(err, errlen, "%s: no such user \"%s\"", path,
			    owner);
			return -1;
		}
		uid = pw->pw_uid;
	}
	if (group != NULL) {
		if ((gr = getgrnam(group)) == NULL) {
			snprintf(err, errlen, "%s: no such group \"%s\" (%s)",
			    path, group, group_opt);
			return -1;
		}
		gid = gr->gr_gid;
	}

	/* Is someone answering there?  Then it is not stale. */
	if ((probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) != -1) {
		if (connect(probe, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
			close(probe);
			snprintf(err, errlen, "%s: another process is serving "
			    "this socket", path);
			return -1;
		}
		close(probe);
	}
	/*
	 * Only a socket is stale: a typo in the config must not make a root
	 * daemon delete whatever file the path names.
	 */
	if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "%s: exists and is not a socket", path);
		return -1;
	}
	if (unlink(path) == -1 && errno != ENOENT) {
		snprintf(err, errlen, "%s: cannot remove stale socket: %s",
		    path, strerror(errno));
		return -1;
	}
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0)) == -1) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		snprintf(err, errlen, "%s: bind: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	if ((uid != (uid_t)-1 || gid != (gid_t)-1) &&
	    chown(path, uid, gid) == -1) {
		snprintf(err, errlen, "%s: chown: %s", path, strerror(errno));
		goto fail;
	}
	if (chmod(path, mode) == -1) {
		snprintf(err, errlen, "%s: chmod: %s", path, strerror(errno));
		goto fail;
	}
	if (listen(fd, 128) == -1) {
		snprintf(err, errlen, "%s: listen: %s", path, strerror(errno));
		goto fail;
	}
	return fd;
fail:
	close(fd);
	unlink(path);
	return -1;
}

int
daemon_inet(const char *addr, const char *label, char *err, size_t errlen)
{
	struct addrinfo	 hints, *res;
	char		 host[256], *port;
	int		 fd, rv, on = 1;

	snprintf(host, sizeof(host), "%s", addr);
	if ((port = strrchr(host, ':')) == NULL) {
		snprintf(err, errlen, "%s%s: expected HOST:PORT", label, addr);
		return -1;
	}
	*port++ = '\0';
	if (host[0] == '[' && port[-2] == ']') {
		port[-2] = '\0';
		memmove(host, host + 1, strlen(host));
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	if ((rv = getaddrinfo(host, port, &hints, &res)) != 0) {
		snprintf(err, errlen, "%s%s: %s", label, addr, gai_strerror(rv));
		return -1;
	}
	fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (fd == -1) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		freeaddrinfo(res);
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	if (bind(fd, res->ai_addr, res->ai_addrlen) == -1) {
		snprintf(err, errlen, "%s%s: bind: %s", label,
		    addr, strerror(errno));
		close(fd);
		freeaddrinfo(res);
		return -1;
	}
	freeaddrinfo(res);
	return fd;
}

/*
 * Become the daemon: detach unless -f, write the pidfile, drop to the
 * config's user.  Sockets are open before: after this we may not be
 * allowed to.
 */
static int
daemon_start(const struct daemon_opts *o, const struct conf *c, char *err,
    size_t errlen)
{
	if (!o->foreground && daemon_detach(err, errlen) == -1)
		return -1;
	if (o->pid_path != NULL && daemon_pidfile(o->pid_path, err, errlen)
	    == -1)
		return -1;
	return daemon_drop(c->user, c->group, err, errlen);
}

static const struct daemon_hooks *daemon_hooks;
static struct daemon_opts *daemon_opts;
static int	daemon_stopping;
/* The config the daemon runs on: it frees one only for the next. */
static const struct conf *daemon_conf;
/* For status and metrics. */
static time_t	daemon_started, daemon_reloaded;
static uint64_t	daemon_reloads[2];		/* failed, ok */
static char	daemon_reload_error[CONF_ERRLEN];

static int
daemon_same(const char *a, const char *b)
{
	return (a == NULL && b == NULL) ||
	    (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static int
daemon_reload_conf(char *err, size_t errlen)
{
	const struct conf	*old = daemon_conf;
	struct conf		*c;
	enum conf_role		 r = daemon_opts->role;

	if ((c = conf_load(daemon_opts->conf_path, daemon_hooks->check, err,
	    errlen)) == NULL)
		return -1;
	/* Every connection would change at once: that is a restart. */
	if (conf_layout(c) != conf_layout(old)) {
		snprintf(err, errlen, "%s: the Redis layout changes from %s "
		    "to %s: restart the daemon for that", c->path,
		    conf_layout_name(conf_layout(old)),
		    conf_layout_name(conf_layout(c)));
		conf_free(c);
		return -1;
	}
	if (!daemon_same(c->control_path[r], old->control_path[r]) ||
	    !daemon_same(c->control_group, old->control_group) ||
	    !daemon_same(c->metrics_addr[r], old->metrics_addr[r]))
		log_warn("event=reload note=\"control and metrics settings "
		    "take effect at restart\"");
	daemon_conf = c;
	daemon_hooks->reload(c);
	return 0;
}

/* A reload from SIGHUP or the control socket: counted, the last kept. */
static int
daemon_reload(char *err, size_t errlen)
{
	int	 rv;

	rv = daemon_reload_conf(err, errlen);
	daemon_reloaded = time(NULL);
	daemon_reloads[rv == 0]++;
	if (rv == -1) {
		snprintf(daemon_reload_error, sizeof(daemon_reload_error),
		    "%s", err);
		log_err("event=reload_failed error=\"%s\" action=keep_old",
		    err);
	} else
		daemon_reload_error[0] = '\0';
	return rv;
}

void
daemon_log_stats(const char *event)
{
	struct kv	*kv;
	char		*line;

	/* 16 KB: off the stack of a signal watcher or an exit path. */
	if ((kv = malloc(sizeof(*kv))) == NULL ||
	    (line = malloc(KV_MAX)) == NULL) {
		free(kv);
		log_err("event=%s error=\"out of memory\"", event);
		return;
	}
	kv_init(kv);
	daemon_hooks->stats(kv);
	log_info("event=%s %s", event, kv_line(kv, line, KV_MAX));
	free(line);
	free(kv);
}

static const char *
daemon_time(char *buf, size_t len, time_t t)
{
	struct tm	 tm;

	if (t == 0)
		return "never";
	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
	return buf;
}

static void
daemon_status(struct kv *kv)
{
	char	 t[32];

	kv_str(kv, "daemon", conf_role_name(daemon_opts->role));
	kv_str(kv, "version", SW_VERSION);
	kv_u64(kv, "pid", (uint64_t)getpid());
	daemon_hooks->status(kv);
	kv_str(kv, "config", daemon_conf->path);
	kv_str(kv, "started", daemon_time(t, sizeof(t), daemon_started));
	kv_str(kv, "reloaded", daemon_time(t, sizeof(t), daemon_reloaded));
	if (daemon_reloaded == 0)
		kv_str(kv, "reload_result", "none");
	else if (daemon_reload_error[0] == '\0')
		kv_str(kv, "reload_result", "ok");
	else {
		char	 r[CONF_ERRLEN + 16];

		snprintf(r, sizeof(r), "failed: %s", daemon_reload_error);
		kv_str(kv, "reload_result", r);
	}
}

static void
daemon_stats(struct kv *kv)
{
	daemon_hooks->stats(kv);
}

static void
daemon_metrics(struct metrics *m)
{
	char	 l[64];

	metrics_family(m, "senderwatch_build_info", "gauge",
	    "The version running, as a label.");
	snprintf(l, sizeof(l), "version=\"%s\"", SW_VERSION);
	metrics_u64(m, "senderwatch_build_info", l, 1);
	metrics_family(m, "senderwatch_start_time_seconds", "gauge",
	    "When the daemon started, in seconds since the epoch.");
	metrics_u64(m, "senderwatch_start_time_seconds", "",
	    (uint64_t)daemon_started);
	metrics_family(m, "senderwatch_config_reloads_total", "counter",
	    "Reloads (SIGHUP or the control socket), by result.");
	metrics_u64(m, "senderwatch_config_reloads_total", "result=\"ok\"",
	    daemon_reloads[1]);
	metrics_u64(m, "senderwatch_config_reloads_total",
	    "result=\"failed\"", daemon_reloads[0]);
	daemon_hooks->metrics(m);
}

static const struct control_hooks daemon_control = {
	.stats = daemon_stats,
	.status = daemon_status,
	.reload = daemon_reload,
};

/* Still root: what the config asks of this daemon beside its own. */
static int
daemon_open(struct ev_loop *loop, const struct conf *c, char *err,
    size_t errlen)
{
	enum conf_role	 r = daemon_opts->role;

	if (c->control_path[r] != NULL && control_open(loop,
	    c->control_path[r], c->user, c->control_group, &daemon_control,
	    err, errlen) == -1)
		return -1;
	if (c->metrics_addr[r] != NULL && metrics_open(loop,
	    c->metrics_addr[r], daemon_metrics, err, errlen) == -1)
		return -1;
	return 0;
}

static void
daemon_close(void)
{
	control_close();
	metrics_close();
}

static void
daemon_signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)revents;
	switch (w->signum) {
	case SIGHUP: {
		char	 err[CONF_ERRLEN];

		(void)daemon_reload(err, sizeof(err));
		break;
	}
	case SIGUSR1:
		daemon_log_stats("stats");
		break;
	default:
		log_info("event=shutdown signal=%d", w->signum);
		if (daemon_stopping++)
			ev_break(loop, EVBREAK_ALL);	/* asked twice */
		else
			daemon_hooks->stop(loop);
		break;
	}
}

int
daemon_main(int argc, char *argv[], struct daemon_opts *o,
    const struct daemon_hooks *h)
{
	static const int	 signums[] = { SIGTERM, SIGINT, SIGHUP,
				    SIGUSR1, SIGQUIT };
	static ev_signal	 sigs[sizeof(signums) / sizeof(signums[0])];
	struct ev_loop		*loop;
	struct conf		*c;
	char			 err[CONF_ERRLEN];
	size_t			 i;
	int			 rc;

	if (daemon_options(argc, argv, o, h, &rc) == -1)
		return rc;
	if ((c = conf_load(o->conf_path, h->check, err, sizeof(err))) ==
	    NULL) {
		fprintf(stderr, "%s: %s\n", o->name, err);
		return 1;
	}
	if (o->check || o->key != NULL) {
		rc = o->key != NULL ? h->keys(c, o->key) : 0;
		if (o->key == NULL)
			h->checked(c);
		conf_free(c);
		return rc;
	}
	daemon_hooks = h;
	daemon_opts = o;
	log_init(o->name, o->foreground);
	log_set_verbose(o->verbose);
	signal(SIGPIPE, SIG_IGN);

	/* The default loop: only it can watch children (ev_child). */
	loop = ev_default_loop(EVFLAG_AUTO);
	/* From here the daemon owns c: its exit hook frees it. */
	daemon_conf = c;
	daemon_started = time(NULL);
	if (h->open(loop, c, err, sizeof(err)) == -1 ||
	    daemon_open(loop, c, err, sizeof(err)) == -1 ||
	    daemon_start(o, c, err, sizeof(err)) == -1) {
		log_err("event=fatal error=\"%s\"", err);
		fprintf(stderr, "%s: %s\n", o->name, err);
		daemon_close();
		h->exit();
		return 1;
	}
	for (i = 0; i < sizeof(signums) / sizeof(signums[0]); i++) {
		ev_signal_init(&sigs[i], daemon_signal_cb, signums[i]);
		ev_signal_start(loop, &sigs[i]);
	}
	if (h->start(err, sizeof(err)) == -1) {
		log_err("event=fatal error=\"%s\"", err);
		daemon_close();
		h->exit();
		return 1;
	}
	daemon_ready();

	ev_run(loop, 0);

	/* No console while the daemon takes itself apart. */
	daemon_close();
	h->exit();
	if (o->pid_path != NULL)
		unlink(o->pid_path);
	ev_loop_destroy(loop);
	return 0;
}
