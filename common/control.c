/*
 * control.c: the control socket (control.h).  Each client is one struct
 * control_client with one free path; it gets CONTROL_TIMEOUT_S to send
 * its line, and at most CONTROL_CLIENTS are served at once (more wait in
 * the backlog): the console must never cost the daemon its real work.
 */
#include <sys/types.h>
#include <sys/socket.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "control.h"
#include "daemon.h"
#include "kv.h"
#include "log.h"

#define CONTROL_CLIENTS		16
#define CONTROL_LINE_MAX	256
#define CONTROL_TIMEOUT_S	2.0

struct control_client {
	int			 fd;
	ev_io			 io;
	ev_timer		 timer;
	size_t			 len;
	char			 line[CONTROL_LINE_MAX];
};

static struct ev_loop			*control_loop;
static const struct control_hooks	*control_hooks;
static char				*control_path;
static int				 control_fd = -1;
static ev_io				 control_accept_io;
static struct control_client		*control_clients[CONTROL_CLIENTS];
static size_t				 control_nclients;

static ev_timer				 control_pause;

static void	control_accept_cb(struct ev_loop *, ev_io *, int);

static void
control_pause_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)w;
	(void)revents;
	if (control_fd != -1)
		ev_io_start(loop, &control_accept_io);
}

static void
control_client_free(struct control_client *cl)
{
	size_t	 i;

	ev_io_stop(control_loop, &cl->io);
	ev_timer_stop(control_loop, &cl->timer);
	close(cl->fd);
	for (i = 0; i < control_nclients; i++)
		if (control_clients[i] == cl) {
			control_clients[i] = control_clients[--control_nclients];
			break;
		}
	free(cl);
	/* Room again: take the next from the backlog. */
	if (control_fd != -1)
		ev_io_start(control_loop, &control_accept_io);
}

/*
 * The answer is one write: at most a kv's worth, far less than a Unix
 * socket's buffer.  A client that does not read it loses it.
 */
static void
control_answer(struct control_client *cl, const char *text, size_t len)
{
	char	 junk[1024];
	int	 i;

	/*
	 * Unread input at close() resets the connection, and the client
	 * would lose the answer: read what it already sent (bounded).
	 */
	for (i = 0; i < 16; i++)
		if (read(cl->fd, junk, sizeof(junk)) <= 0)
			break;
	if (write(cl->fd, text, len) != (ssize_t)len)
		log_debug("event=control_write_failed error=\"%s\"",
		    strerror(errno));
	control_client_free(cl);
}

static void
control_command(struct control_client *cl)
{
	struct kv	*kv;
	char		 err[CONF_ERRLEN], q[CONF_ERRLEN * 4 + 1];
	char		 out[sizeof(q) + 16];
	int		 n;

	if (strcmp(cl->line, "reload") == 0) {
		if (control_hooks->reload(err, sizeof(err)) == 0) {
			control_answer(cl, "ok\n", 3);
			return;
		}
		/*
		 * One line whatever the config held: control bytes escaped as
		 * in the log (a YAML string may carry a newline).
		 */
		n = snprintf(out, sizeof(out), "error=%s\n",
		    log_quote(q, sizeof(q), err, strlen(err)));
		control_answer(cl, out, (size_t)n < sizeof(out) ? (size_t)n :
		    sizeof(out) - 1);
		return;
	}
	if (strcmp(cl->line, "stats") != 0 && strcmp(cl->line, "status") != 0) {
		log_info("event=control_refused command=\"%s\"",
		    log_quote(q, sizeof(q), cl->line, strlen(cl->line)));
		control_answer(cl, "error=unknown command\n", 22);
		return;
	}
	/* A kv is 8 KB: off the stack of whoever called us. */
	if ((kv = malloc(sizeof(*kv))) == NULL) {
		control_answer(cl, "error=out of memory\n", 20);
		return;
	}
	kv_init(kv);
	if (strcmp(cl->line, "stats") == 0)
		control_hooks->stats(kv);
	else
		control_hooks->status(kv);
	control_answer(cl, kv->buf, kv->len);
	free(kv);
}

static void
control_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct control_client	*cl = w->data;
	char			*nl;
	ssize_t			 n;

	(void)loop;
	(void)revents;
	n = read(cl->fd, cl->line + cl->len, sizeof(cl->line) - 1 - cl->len);
	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		control_client_free(cl);
		return;
	}
	cl->len += (size_t)n;
	cl->line[cl->len] = '\0';
	if ((nl = memchr(cl->line, '\n', cl->len)) == NULL) {
		if (cl->len == sizeof(cl->line) - 1)
			control_answer(cl, "error=line too long\n", 20);
		return;
	}
	*nl = '\0';
	if (nl > cl->line && nl[-1] == '\r')
		nl[-1] = '\0';
	control_command(cl);
}

static void
control_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	control_answer(w->data, "error=timeout\n", 14);
}

static void
control_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct control_client	*cl;
	int			 fd;

	(void)revents;
	if (control_nclients == CONTROL_CLIENTS) {
		ev_io_stop(loop, w);	/* the backlog waits */
		return;
	}
	if ((fd = accept4(control_fd, NULL, NULL, SOCK_NONBLOCK |
	    SOCK_CLOEXEC)) == -1) {
		/*
		 * Out of descriptors, the connection stays in the backlog and
		 * the watcher would fire again at once: pause a second.
		 */
		if (errno == EMFILE || errno == ENFILE) {
			ev_io_stop(loop, w);
			ev_timer_start(loop, &control_pause);
		}
		return;
	}
	if ((cl = calloc(1, sizeof(*cl))) == NULL) {
		close(fd);
		return;
	}
	cl->fd = fd;
	ev_io_init(&cl->io, control_read_cb, fd, EV_READ);
	cl->io.data = cl;
	ev_timer_init(&cl->timer, control_timeout_cb, CONTROL_TIMEOUT_S, 0.);
	cl->timer.data = cl;
	ev_io_start(loop, &cl->io);
	ev_timer_start(loop, &cl->timer);
	control_clients[control_nclients++] = cl;
}

int
control_open(struct ev_loop *loop, const char *path, const char *owner,
    const char *group, const struct control_hooks *h, char *err,
    size_t errlen)
{
	if ((control_path = strdup(path)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if ((control_fd = daemon_socket(path, owner, group, "control.group",
	    group != NULL ? 0660 : 0600, err, errlen)) == -1) {
		free(control_path);
		control_path = NULL;
		return -1;
	}
	control_loop = loop;
	control_hooks = h;
	ev_io_init(&control_accept_io, control_accept_cb, control_fd, EV_READ);
	ev_io_start(loop, &control_accept_io);
	ev_timer_init(&control_pause, control_pause_cb, 1., 0.);
	return 0;
}

void
control_close(void)
{
	if (control_fd == -1)
		return;
	ev_io_stop(control_loop, &control_accept_io);
	ev_timer_stop(control_loop, &control_pause);
	close(control_fd);
	control_fd = -1;
	while (control_nclients > 0)
		control_client_free(control_clients[0]);
	/*
	 * After the privilege drop this may be refused: the next start
	 * replaces the file, as with the shim's socket.
	 */
	if (unlink(control_path) == -1 && errno != ENOENT)
		log_debug("event=socket_left path=%s reason=\"%s\"",
		    control_path, strerror(errno));
	free(control_path);
	control_path = NULL;
}
