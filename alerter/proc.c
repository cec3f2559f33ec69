/*
 * proc.c: run a configured command as a child, the way the alerter may:
 * an argument vector handed to execv() (never a shell, so no byte of a key
 * is ever interpreted), stdin fed from memory without blocking, stdout and
 * stderr collected up to a cap (the rest is read and thrown away, so a
 * chatty child cannot stall on a full pipe), and a time limit enforced by
 * killing the child's whole process group.
 *
 * The child is done when it exits; output still buffered in the pipe is
 * drained then.  A grandchild that keeps the pipe open is not waited for.
 */
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alerter.h"
#include "mail.h"

struct proc {
	pid_t		 pid;
	ev_child	 child;
	ev_io		 in_io;
	ev_io		 out_io;
	ev_timer	 timer;
	int		 in_fd;		/* -1 once all is written */
	int		 out_fd;	/* -1 at EOF */
	const char	*in;		/* the caller's: outlives the child */
	size_t		 inlen, inoff;
	struct buf	 out;
	size_t		 outmax;
	int		 truncated;
	int		 timed_out;
	int64_t		 timeout_ms;
	proc_done_fn	*done;
	void		*arg;
};

static void
proc_close_in(struct proc *p)
{
	if (p->in_fd == -1)
		return;
	ev_io_stop(alerter.loop, &p->in_io);
	close(p->in_fd);
	p->in_fd = -1;
}

static void
proc_close_out(struct proc *p)
{
	if (p->out_fd == -1)
		return;
	ev_io_stop(alerter.loop, &p->out_io);
	close(p->out_fd);
	p->out_fd = -1;
}

static void
proc_stop(struct proc *p)
{
	proc_close_in(p);
	proc_close_out(p);
	ev_timer_stop(alerter.loop, &p->timer);
	ev_child_stop(alerter.loop, &p->child);
	buf_free(&p->out);
	free(p);
}

/* Read what the pipe has now; 1 at EOF or on error. */
static int
proc_read(struct proc *p)
{
	char	 chunk[4096];
	ssize_t	 n;
	size_t	 keep;

	for (;;) {
		n = read(p->out_fd, chunk, sizeof(chunk));
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN)
			return 0;
		if (n <= 0)
			return 1;
		keep = p->out.len < p->outmax ? p->outmax - p->out.len : 0;
		if ((size_t)n > keep)
			p->truncated = 1;
		buf_add(&p->out, chunk, (size_t)n < keep ? (size_t)n : keep);
	}
}

static void
proc_out_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct proc	*p = w->data;

	(void)loop;
	(void)revents;
	if (proc_read(p))
		proc_close_out(p);
}

static void
proc_in_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct proc	*p = w->data;
	ssize_t		 n;

	(void)loop;
	(void)revents;
	while (p->inoff < p->inlen) {
		n = write(p->in_fd, p->in + p->inoff, p->inlen - p->inoff);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN)
			return;
		if (n == -1) {
			/* EPIPE: the child stopped reading; its exit says why. */
			break;
		}
		p->inoff += (size_t)n;
	}
	proc_close_in(p);	/* EOF tells the child the message is complete */
}

static void
proc_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct proc	*p = w->data;

	(void)loop;
	(void)revents;
	p->timed_out = 1;
	/* The group: a shell script's children die with it. */
	kill(-p->pid, SIGKILL);
	kill(p->pid, SIGKILL);
}

static void
proc_describe(char *dst, size_t len, int status, int timed_out,
    int64_t timeout_ms)
{
	char	 d[32];

	if (timed_out) {
		mail_duration(d, sizeof(d), timeout_ms);
		snprintf(dst, len, "timed out after %s", d);
	} else if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		dst[0] = '\0';
	else if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
		snprintf(dst, len, "exit 127: could not run the command");
	else if (WIFEXITED(status))
		snprintf(dst, len, "exit %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(dst, len, "killed by signal %d", WTERMSIG(status));
	else
		snprintf(dst, len, "ended with status %d", status);
}

static void
proc_child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
	struct proc	*p = w->data;
	char		 what[96];

	(void)loop;
	(void)revents;
	if (p->out_fd != -1)
		proc_read(p);
	proc_describe(what, sizeof(what), w->rstatus, p->timed_out,
	    p->timeout_ms);
	p->done(p->arg, what, &p->out, p->truncated);
	proc_stop(p);
}

static void
proc_child(char *const argv[], int in_fd, int out_fd, long maxfd)
{
	sigset_t	 none;
	int		 fd;

	/*
	 * Between fork and exec only async-signal-safe calls: the parent may
	 * have other threads (libcurl's resolver).
	 */
	setsid();
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);	/* ignored in the daemon; exec keeps it */
	if (in_fd == -1)
		in_fd = open("/dev/null", O_RDONLY);
	if (in_fd != STDIN_FILENO && dup2(in_fd, STDIN_FILENO) == -1)
		_exit(127);
	if (dup2(out_fd, STDOUT_FILENO) == -1 ||
	    dup2(out_fd, STDERR_FILENO) == -1)
		_exit(127);
	/* Redis and SMTP sockets are not the child's business. */
#ifdef SYS_close_range
	if (syscall(SYS_close_range, 3U, ~0U, 0) == 0)
		maxfd = 0;
#endif
	for (fd = 3; fd < maxfd; fd++)
		close(fd);
	execv(argv[0], argv);
	_exit(127);
}

struct proc *
proc_run(char *const argv[], const char *last_arg, const char *in,
    size_t inlen, size_t outmax, int64_t timeout_ms, proc_done_fn *done,
    void *arg, char *err, size_t errlen)
{
	struct proc	*p;
	char		**av = NULL;
	int		 inpipe[2] = { -1, -1 }, outpipe[2] = { -1, -1 };
	size_t		 n, i;
	long		 maxfd;

	for (n = 0; argv[n] != NULL; n++)
		;
	if ((p = calloc(1, sizeof(*p))) == NULL ||
	    (av = calloc(n + 2, sizeof(*av))) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	for (i = 0; i < n; i++)
		av[i] = argv[i];
	if (last_arg != NULL)
		av[n++] = (char *)last_arg;
	if ((in != NULL && pipe2(inpipe, O_CLOEXEC) == -1) ||
	    pipe2(outpipe, O_CLOEXEC) == -1) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		goto fail;
	}
	if ((maxfd = sysconf(_SC_OPEN_MAX)) < 0 || maxfd > 65536)
		maxfd = 65536;
	if ((p->pid = fork()) == -1) {
		snprintf(err, errlen, "fork: %s", strerror(errno));
		goto fail;
	}
	if (p->pid == 0)
		proc_child(av, inpipe[0], outpipe[1], maxfd);
	free(av);
	av = NULL;

	if (inpipe[0] != -1)
		close(inpipe[0]);
	close(outpipe[1]);
	p->in_fd = inpipe[1];
	p->out_fd = outpipe[0];
	p->in = in;
	p->inlen = inlen;
	p->outmax = outmax;
	p->timeout_ms = timeout_ms;
	p->done = done;
	p->arg = arg;
	buf_init(&p->out);

	/* Started before the loop runs again, so the exit cannot be missed. */
	ev_child_init(&p->child, proc_child_cb, p->pid, 0);
	p->child.data = p;
	ev_child_start(alerter.loop, &p->child);
	ev_timer_init(&p->timer, proc_timeout_cb, timeout_ms / 1000., 0.);
	p->timer.data = p;
	ev_timer_start(alerter.loop, &p->timer);
	fcntl(p->out_fd, F_SETFL, fcntl(p->out_fd, F_GETFL) | O_NONBLOCK);
	ev_io_init(&p->out_io, proc_out_cb, p->out_fd, EV_READ);
	p->out_io.data = p;
	ev_io_start(alerter.loop, &p->out_io);
	if (p->in_fd != -1) {
		fcntl(p->in_fd, F_SETFL, fcntl(p->in_fd, F_GETFL) | O_NONBLOCK);
		ev_io_init(&p->in_io, proc_in_cb, p->in_fd, EV_WRITE);
		p->in_io.data = p;
		ev_io_start(alerter.loop, &p->in_io);
	}
	return p;
fail:
	for (i = 0; i < 2; i++) {
		if (inpipe[i] != -1)
			close(inpipe[i]);
		if (outpipe[i] != -1)
			close(outpipe[i]);
	}
	free(av);
	free(p);
	return NULL;
}

void
proc_cancel(struct proc *p)
{
	int	 status;

	if (p == NULL)
		return;
	kill(-p->pid, SIGKILL);
	kill(p->pid, SIGKILL);
	/* Reaped here: the loop may not run again to do it. */
	while (waitpid(p->pid, &status, 0) == -1 && errno == EINTR)
		;
	proc_stop(p);
}
