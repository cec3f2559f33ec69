/*
 * daemon.c: a daemon's life (see daemon.h): options, config, pidfile,
 * privilege drop, detaching from the terminal, signals, reloads.
 */
#include <sys/types.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "daemon.h"
#include "log.h"

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

static void
daemon_reload(void)
{
	struct conf	*c;
	char		 err[CONF_ERRLEN];

	if ((c = conf_load(daemon_opts->conf_path, daemon_hooks->check, err,
	    sizeof(err))) == NULL) {
		log_err("event=reload_failed error=\"%s\" action=keep_old",
		    err);
		return;
	}
	/* Every connection would change at once: that is a restart. */
	if (conf_layout(c) != conf_layout(daemon_conf)) {
		log_err("event=reload_failed error=\"%s: the Redis layout "
		    "changes from %s to %s: restart the daemon for that\" "
		    "action=keep_old", c->path,
		    conf_layout_name(conf_layout(daemon_conf)),
		    conf_layout_name(conf_layout(c)));
		conf_free(c);
		return;
	}
	daemon_conf = c;
	daemon_hooks->reload(c);
}

static void
daemon_signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)revents;
	switch (w->signum) {
	case SIGHUP:
		daemon_reload();
		break;
	case SIGUSR1:
		daemon_hooks->stats("stats");
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
	if (h->open(loop, c, err, sizeof(err)) == -1 ||
	    daemon_start(o, c, err, sizeof(err)) == -1) {
		log_err("event=fatal error=\"%s\"", err);
		fprintf(stderr, "%s: %s\n", o->name, err);
		h->exit();
		return 1;
	}
	for (i = 0; i < sizeof(signums) / sizeof(signums[0]); i++) {
		ev_signal_init(&sigs[i], daemon_signal_cb, signums[i]);
		ev_signal_start(loop, &sigs[i]);
	}
	if (h->start(err, sizeof(err)) == -1) {
		log_err("event=fatal error=\"%s\"", err);
		h->exit();
		return 1;
	}
	daemon_ready();

	ev_run(loop, 0);

	h->exit();
	if (o->pid_path != NULL)
		unlink(o->pid_path);
	ev_loop_destroy(loop);
	return 0;
}
