/*
 * listener.c: the shim's listening sockets.
 *
 * Unix sockets get the configured mode and group so Exim's user can
 * connect; a stale socket file is removed, but a live one (another shim
 * answering on it) stops the start.  accept() errors are never fatal.
 *
 * Out of room.  When descriptors run out, or max_clients is reached, the
 * oldest sessions that are still silent are shed (answered the fail
 * policy, like a client timeout, and closed) to make room: a live Exim
 * writes its request right after connecting, so a flood of silent clients
 * must not keep live ones waiting in the backlog for client_timeout.  Only
 * when nothing can be shed does accepting pause, for a moment (out of
 * descriptors) or until a session ends (max_clients).
 */
#include <sys/types.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"
#include "shim.h"

#define LISTENER_MAX		16
#define LISTENER_BACKLOG	1024
#define LISTENER_BATCH		64	/* accepts per wake-up: fairness */
#define LISTENER_SHED		8	/* sessions shed per lack of room */
#define LISTENER_SHED_AGE	0.1	/* seconds: younger ones are live */

struct listener {
	int	 fd;
	char	*path;		/* Unix socket to unlink at exit, or NULL */
	ev_io	 io;
};

static struct listener	listeners[LISTENER_MAX];
static size_t		nlisteners;
static int		paused;
static ev_timer		resume_timer;
static struct log_limit	warn_cap = { .event = "max_clients", .warn = 1 };
static struct log_limit	warn_fds = { .event = "accept_paused", .warn = 1 };
static struct log_limit	warn_shed = { .event = "sessions_shed", .warn = 1 };

static int
listener_unix(const char *path, const struct conf *c, char *err,
    size_t errlen)
{
	return daemon_socket(path, NULL, c->socket_group, "shim.socket_group",
	    c->socket_mode, err, errlen);
}

static int
listener_inet(const char *addr, char *err, size_t errlen)
{
	return daemon_inet(addr, "inet:", err, errlen);
}

static void
listener_pause(void)
{
	size_t	 i;

	if (paused)
		return;
	for (i = 0; i < nlisteners; i++)
		ev_io_stop(shim.loop, &listeners[i].io);
	paused = 1;
}

static void
listener_resume(void)
{
	size_t	 i;

	if (!paused || shim.nsessions >= (unsigned)shim.conf->max_clients)
		return;
	for (i = 0; i < nlisteners; i++)
		ev_io_start(shim.loop, &listeners[i].io);
	paused = 0;
}

static void
listener_resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	listener_resume();
}

/* No room for another session: shed silent ones, or 0 if there are none. */
static unsigned
listener_make_room(const char *why)
{
	unsigned	 n;

	if ((n = session_shed(LISTENER_SHED, LISTENER_SHED_AGE)) > 0)
		log_limited(shim.loop, &warn_shed, "reason=\"%s\" shed=%u "
		    "sessions=%u", why, n, shim.nsessions);
	return n;
}

static void
listener_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct listener	*l = w->data;
	int		 fd, i;

	(void)revents;
	for (i = 0; i < LISTENER_BATCH; i++) {
		if (shim.nsessions >= (unsigned)shim.conf->max_clients &&
		    listener_make_room("max_clients") == 0) {
			log_limited(loop, &warn_cap, "sessions=%u "
			    "action=pause_accept", shim.nsessions);
			shim.stats.accept_paused++;
			listener_pause();
			return;
		}
		fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno != EMFILE && errno != ENFILE &&
			    errno != ENOBUFS && errno != ENOMEM)
				return;	/* EAGAIN, ECONNABORTED, EINTR */
			if (listener_make_room(strerror(errno)) > 0)
				continue;
			log_limited(loop, &warn_fds, "reason=\"%s\" "
			    "sessions=%u action=pause_100ms", strerror(errno),
			    shim.nsessions);
			shim.stats.accept_paused++;
			listener_pause();
			ev_timer_stop(loop, &resume_timer);
			ev_timer_set(&resume_timer, 0.1, 0.);
			ev_timer_start(loop, &resume_timer);
			return;
		}
		session_new(fd);
	}
}

/*
 * Raise the soft descriptor limit toward the hard one: Debian's soft 1024
 * is below the default max_clients.  Never lowered.
 */
static void
listener_rlimit(const struct conf *c)
{
	struct rlimit	 rl;
	rlim_t		 want = (rlim_t)c->max_clients + 64;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1 || rl.rlim_cur >= want)
		return;
	rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ?
	    want : rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
		return;
	log_debug("event=rlimit_nofile soft=%llu",
	    (unsigned long long)rl.rlim_cur);
}

int
listener_open(const struct conf *c, char *err, size_t errlen)
{
	struct listener	*l;
	const char	*addr;
	size_t		 i;
	int		 fd;

	listener_rlimit(c);
	for (i = 0; i < c->nlisten; i++) {
		if (nlisteners == LISTENER_MAX) {
			snprintf(err, errlen, "more than %d listen addresses",
			    LISTENER_MAX);
			return -1;
		}
		addr = c->listen[i].addr;
		if (strncmp(addr, "inet:", 5) == 0)
			fd = listener_inet(addr + 5, err, errlen);
		else
			fd = listener_unix(addr, c, err, errlen);
		if (fd == -1)
			return -1;
		if (listen(fd, LISTENER_BACKLOG) == -1) {
			snprintf(err, errlen, "%s: listen: %s", addr,
			    strerror(errno));
			close(fd);
			return -1;
		}
		l = &listeners[nlisteners++];
		l->fd = fd;
		l->path = addr[0] == '/' ? strdup(addr) : NULL;
		ev_io_init(&l->io, listener_accept_cb, fd, EV_READ);
		l->io.data = l;
		log_info("event=listening address=%s", addr);
	}
	return 0;
}

void
listener_start(void)
{
	size_t	 i;

	ev_timer_init(&resume_timer, listener_resume_cb, 0., 0.);
	for (i = 0; i < nlisteners; i++)
		ev_io_start(shim.loop, &listeners[i].io);
}

void
listener_session_gone(void)
{
	if (paused && !ev_is_active(&resume_timer))
		listener_resume();
}

/*
 * After the privilege drop: a socket in a directory we can no longer
 * write to stays behind at exit (harmless: the next start replaces it, as
 * it does a crash's).  Say so once, with the fix.
 */
void
listener_check_dirs(void)
{
	char	*copy, *dir;
	size_t	 i;

	for (i = 0; i < nlisteners; i++) {
		if (listeners[i].path == NULL ||
		    (copy = strdup(listeners[i].path)) == NULL)
			continue;
		dir = dirname(copy);
		if (access(dir, W_OK) == -1)
			log_warn("event=socket_dir_not_writable path=%s dir=%s "
			    "note=\"the socket file will be left at exit; give "
			    "the directory to the shim's user (systemd: "
			    "RuntimeDirectory=)\"", listeners[i].path, dir);
		free(copy);
	}
}

void
listener_close(void)
{
	size_t	 i;

	for (i = 0; i < nlisteners; i++) {
		ev_io_stop(shim.loop, &listeners[i].io);
		close(listeners[i].fd);
		if (listeners[i].path != NULL) {
			if (unlink(listeners[i].path) == -1 && errno != ENOENT)
				log_warn("event=socket_left path=%s "
				    "reason=\"%s\"", listeners[i].path,
				    strerror(errno));
			free(listeners[i].path);
		}
	}
	nlisteners = 0;
	log_limit_stop(&warn_cap);
	log_limit_stop(&warn_fds);
	log_limit_stop(&warn_shed);
}
