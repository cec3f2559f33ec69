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
	struct sockaddr_un	 sun;
	struct group		*gr;
	struct stat		 st;
	int			 fd, probe;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		snprintf(err, errlen, "%s: socket path too long", path);
		return -1;
	}
	strcpy(sun.sun_path, path);

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
	 * Only a socket is stale: a typo in shim.listen must not make a root
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
	if (c->socket_group != NULL) {
		if ((gr = getgrnam(c->socket_group)) == NULL) {
			snprintf(err, errlen, "%s: no such group \"%s\" "
			    "(shim.socket_group)", path, c->socket_group);
			goto fail;
		}
		if (chown(path, (uid_t)-1, gr->gr_gid) == -1) {
			snprintf(err, errlen, "%s: chown to group %s: %s",
			    path, c->socket_group, strerror(errno));
			goto fail;
		}
	}
	if (chmod(path, c->socket_mode) == -1) {
		snprintf(err, errlen, "%s: chmod: %s", path, strerror(errno));
		goto fail;
	}
	return fd;
fail:
	close(fd);
	unlink(path);
	return -1;
}

static int
listener_inet(const char *addr, char *err, size_t errlen)
{
	struct addrinfo	 hints, *res;
	char		 host[256], *port;
	int		 fd, rv, on = 1;

	snprintf(host, sizeof(host), "%s", addr);
	if ((port = strrchr(host, ':')) == NULL) {
		snprintf(err, errlen, "inet:%s: expected HOST:PORT", addr);
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
		snprintf(err, errlen, "inet:%s: %s", addr, gai_strerror(rv));
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
		snprintf(err, errlen, "inet:%s: bind: %s", addr,
		    strerror(errno));
		close(fd);
		freeaddrinfo(res);
		return -1;
	}
	freeaddrinfo(res);
	return fd;
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
