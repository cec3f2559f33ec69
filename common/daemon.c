/*
 * daemon.c: pidfile, privilege drop, detaching from the terminal.
 */
#include <sys/types.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "daemon.h"

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

int
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

void
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
daemon_usage(FILE *fp, const struct daemon_opts *o)
{
	fprintf(fp, "usage: %s [-fnvVh] [-c config] [-p pidfile]\n"
	    "  -c FILE  configuration (default %s)\n"
	    "  -f       stay in the foreground, log to stderr\n"
	    "  -n       check the configuration and exit\n"
	    "  -p FILE  write the pid to FILE\n"
	    "  -v       log every decision and event\n"
	    "  -V       print the version and exit\n"
	    "  -h       this help\n", o->name, o->conf_path);
}

int
daemon_options(int argc, char *argv[], struct daemon_opts *o, int *rc)
{
	int	 ch;

	while ((ch = getopt(argc, argv, "c:fhnp:vV")) != -1) {
		switch (ch) {
		case 'c':
			o->conf_path = optarg;
			break;
		case 'f':
			o->foreground = 1;
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
			daemon_usage(stdout, o);
			*rc = 0;
			return -1;
		default:
			daemon_usage(stderr, o);
			*rc = 2;
			return -1;
		}
	}
	if (optind != argc) {
		daemon_usage(stderr, o);
		*rc = 2;
		return -1;
	}
	return 0;
}

int
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
