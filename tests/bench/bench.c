/*
 * bench.c: sw-bench, the two programs behind `make bench`.
 *
 *   sw-bench floor -s SOCK
 *	A "floor" server that answers like senderwatch-shim but never asks
 *	Redis.  It is the reference for what the socket round trip alone
 *	costs, so shim/floor isolates the price of counting.  Like the shim
 *	it is single-threaded on libev; it does nothing the shim could not.
 *
 *   sw-bench load -s SOCK -c CONC -d SECONDS [-a] [-k NKEYS] [-w WARMUP]
 *	A load generator that behaves like Exim's ${readsocket}: a fresh
 *	connection per decision, one line, shutdown(SHUT_WR), read to EOF.
 *	CONC such clients run on one libev loop for WARMUP + SECONDS; only
 *	the last SECONDS are counted.  It prints one line of key=value pairs
 *	for run.sh to parse.  -a is the "abuse" workload: 90% of requests
 *	from LOAD_ABUSERS keys, the rest spread over NKEYS others.
 *
 * Latency is measured from the first connect attempt to EOF, so time spent
 * retrying a full backlog counts: Exim's blocking connect would have waited
 * that long too.
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE		/* accept4 on glibc */
#endif

#include <sys/types.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <err.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#define FLOOR_REQUEST_MAX	4096	/* bytes without a newline: give up */
#define FLOOR_PAUSE		0.1	/* s to stop accepting after EMFILE */

#define LOAD_LINE_MAX		160	/* "rule=R\nkey=bench-N@example.org\n\n" */
#define LOAD_ABUSERS		10	/* -a: the keys far over their limit */
#define LOAD_ANSWER_MAX		64	/* a longer answer is an error */
#define LOAD_RETRY_DELAY	0.001	/* s before retrying a full backlog */
#define LOAD_TIMEOUT_NS		5000000000ULL	/* Exim's {5s} */
#define LOAD_SWEEP		0.1	/* s between deadline checks */

#define NS_PER_S		1000000000ULL

static int
sun_fill(struct sockaddr_un *sun, const char *path)
{
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun->sun_path))
		return -1;
	memcpy(sun->sun_path, path, strlen(path) + 1);
	return 0;
}

/*
 * Each client holds a descriptor; at high concurrency the default soft
 * limit of 1024 would fail before the thing under test does.
 */
static void
raise_nofile(void)
{
	struct rlimit	rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static uint64_t
now_ns(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static void
stop_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)w;
	(void)revents;
	ev_break(loop, EVBREAK_ALL);
}

/* -------------------------------------------------------------------- */
/* floor */

struct floor_conn {
	ev_io		 io;
	int		 fd;
	size_t		 nread;
};

static struct {
	int		 fd;
	ev_io		 accept_io;
	ev_timer	 pause;
} floor_srv;

static void
floor_conn_free(struct ev_loop *loop, struct floor_conn *c)
{
	ev_io_stop(loop, &c->io);
	close(c->fd);
	free(c);
}

/* Returns 1 once a line or EOF has arrived, 0 to wait for more, -1 to drop. */
static int
floor_conn_read(struct floor_conn *c)
{
	char	buf[512];
	ssize_t	n;

	for (;;) {
		n = read(c->fd, buf, sizeof(buf));
		if (n > 0) {
			if (memchr(buf, '\n', (size_t)n) != NULL)
				return 1;
			c->nread += (size_t)n;
			if (c->nread > FLOOR_REQUEST_MAX)
				return -1;
			continue;
		}
		if (n == 0)
			return 1;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		return -1;
	}
}

static void
floor_conn_answer(struct ev_loop *loop, struct floor_conn *c)
{
	/*
	 * A fresh socket always has room for two bytes, so there is nothing
	 * to wait for; a failure means the client left and is not ours to
	 * report.
	 */
	(void)send(c->fd, "no", 2, MSG_NOSIGNAL);
	floor_conn_free(loop, c);
}

static void
floor_conn_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct floor_conn	*c = w->data;
	int			 r;

	(void)revents;
	if ((r = floor_conn_read(c)) == 0)
		return;
	if (r < 0)
		floor_conn_free(loop, c);
	else
		floor_conn_answer(loop, c);
}

static void
floor_resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)w;
	(void)revents;
	ev_io_start(loop, &floor_srv.accept_io);
}

static void
floor_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct floor_conn	*c;
	int			 fd, r;

	(void)w;
	(void)revents;
	for (;;) {
		fd = accept4(floor_srv.fd, NULL, NULL,
		    SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			/*
			 * Out of descriptors or memory: the pending
			 * connections stay in the backlog, so stop polling a
			 * listener we cannot serve and look again shortly.
			 */
			warn("accept");
			ev_io_stop(loop, &floor_srv.accept_io);
			ev_timer_set(&floor_srv.pause, FLOOR_PAUSE, 0.);
			ev_timer_start(loop, &floor_srv.pause);
			return;
		}
		if ((c = malloc(sizeof(*c))) == NULL) {
			close(fd);
			continue;
		}
		c->fd = fd;
		c->nread = 0;
		ev_io_init(&c->io, floor_conn_cb, fd, EV_READ);
		c->io.data = c;

		/*
		 * Exim has usually written its line before we get round to
		 * accepting, so reading now mostly saves a trip through the
		 * loop.
		 */
		if ((r = floor_conn_read(c)) > 0)
			floor_conn_answer(loop, c);
		else if (r < 0)
			floor_conn_free(loop, c);
		else
			ev_io_start(loop, &c->io);
	}
}

static int
floor_main(const char *path)
{
	struct ev_loop		*loop = ev_default_loop(0);
	struct sockaddr_un	 sun;
	struct stat		 st;
	ev_signal		 sigint, sigterm;

	if (loop == NULL)
		errx(1, "cannot initialise libev");
	if (sun_fill(&sun, path) == -1)
		errx(1, "%s: socket path too long", path);

	/*
	 * A socket left behind by a killed run would make bind fail; anything
	 * else at that path is not ours to remove.
	 */
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		(void)unlink(path);

	floor_srv.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (floor_srv.fd == -1)
		err(1, "socket");
	if (bind(floor_srv.fd, (struct sockaddr *)&sun, sizeof(sun)) == -1)
		err(1, "bind %s", path);
	if (chmod(path, 0666) == -1)
		err(1, "chmod %s", path);
	if (listen(floor_srv.fd, SOMAXCONN) == -1)
		err(1, "listen %s", path);

	ev_io_init(&floor_srv.accept_io, floor_accept_cb, floor_srv.fd,
	    EV_READ);
	ev_io_start(loop, &floor_srv.accept_io);
	ev_timer_init(&floor_srv.pause, floor_resume_cb, FLOOR_PAUSE, 0.);

	ev_signal_init(&sigint, stop_cb, SIGINT);
	ev_signal_start(loop, &sigint);
	ev_signal_init(&sigterm, stop_cb, SIGTERM);
	ev_signal_start(loop, &sigterm);

	ev_run(loop, 0);

	close(floor_srv.fd);
	(void)unlink(path);
	return 0;
}

/* -------------------------------------------------------------------- */
/* load */

enum client_state {
	CL_IDLE,
	CL_RETRY,		/* waiting out a full backlog */
	CL_CONNECTING,
	CL_WRITING,
	CL_READING,
};

enum load_phase {
	PH_WARMUP,
	PH_MEASURE,
	PH_DONE,
};

struct client {
	ev_io		 io;
	ev_timer	 retry;
	int		 fd;
	enum client_state state;
	uint64_t	 t0;		/* ns, first connect attempt */
	char		 line[LOAD_LINE_MAX];
	size_t		 linelen;
	size_t		 off;		/* of line, written so far */
	char		 answer[LOAD_ANSWER_MAX];
	size_t		 anslen;
};

static struct {
	struct ev_loop	*loop;
	struct sockaddr_un sun;
	unsigned long	 nkeys;
	int		 abuse;		/* -a */
	const char	*rule;		/* -r: ask under this rule */
	struct client	*clients;
	int		 nclients;
	enum load_phase	 phase;
	double		 duration;	/* s, of the measured part */
	ev_timer	 end;
	uint64_t	 t_start;	/* ns, start of the measured part */
	uint64_t	 t_end;

	uint64_t	*lat;		/* ns, one per measured decision */
	size_t		 nlat;
	size_t		 latcap;

	uint64_t	 yes;
	uint64_t	 no;
	uint64_t	 retries;
	uint64_t	 e_connect;
	uint64_t	 e_io;
	uint64_t	 e_timeout;
	uint64_t	 e_answer;
} ld;

static void	client_start(struct client *);

static int
measuring(void)
{
	return ld.phase == PH_MEASURE;
}

/* Stops every watcher and closes the socket: the one way out of a request. */
static void
client_stop(struct client *c)
{
	ev_io_stop(ld.loop, &c->io);
	ev_timer_stop(ld.loop, &c->retry);
	if (c->fd != -1) {
		close(c->fd);
		c->fd = -1;
	}
	c->state = CL_IDLE;
}

static void
client_watch(struct client *c, enum client_state state, int events)
{
	c->state = state;
	ev_io_stop(ld.loop, &c->io);
	ev_io_set(&c->io, c->fd, events);
	ev_io_start(ld.loop, &c->io);
}

/*
 * A failed request counts as an error, and the next one waits a moment so
 * that a dead server does not turn the generator into a busy loop.
 */
static void
client_fail(struct client *c, uint64_t *counter)
{
	client_stop(c);
	if (measuring())
		(*counter)++;
	c->state = CL_RETRY;
	c->t0 = 0;
	ev_timer_set(&c->retry, LOAD_RETRY_DELAY, 0.);
	ev_timer_start(ld.loop, &c->retry);
}

static void
client_record(struct client *c)
{
	uint64_t	 dt = now_ns() - c->t0;
	uint64_t	*nl;
	size_t		 ncap;

	if (c->anslen == 3 && memcmp(c->answer, "yes", 3) == 0) {
		if (measuring())
			ld.yes++;
	} else if (c->anslen == 2 && memcmp(c->answer, "no", 2) == 0) {
		if (measuring())
			ld.no++;
	} else {
		if (measuring())
			ld.e_answer++;
		return;
	}
	if (!measuring())
		return;
	if (ld.nlat == ld.latcap) {
		ncap = ld.latcap ? ld.latcap * 2 : 65536;
		if ((nl = realloc(ld.lat, ncap * sizeof(*nl))) == NULL)
			err(1, "realloc");
		ld.lat = nl;
		ld.latcap = ncap;
	}
	ld.lat[ld.nlat++] = dt;
}

static void
client_read(struct client *c)
{
	ssize_t	n;

	for (;;) {
		n = read(c->fd, c->answer + c->anslen,
		    sizeof(c->answer) - c->anslen);
		if (n > 0) {
			c->anslen += (size_t)n;
			if (c->anslen == sizeof(c->answer)) {
				client_fail(c, &ld.e_answer);
				return;
			}
			continue;
		}
		if (n == 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		client_fail(c, &ld.e_io);
		return;
	}
	client_stop(c);
	client_record(c);
	client_start(c);
}

static void
client_write(struct client *c)
{
	ssize_t	n;

	while (c->off < c->linelen) {
		n = send(c->fd, c->line + c->off, c->linelen - c->off,
		    MSG_NOSIGNAL);
		if (n > 0) {
			c->off += (size_t)n;
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (c->state != CL_WRITING)
				client_watch(c, CL_WRITING, EV_WRITE);
			return;
		}
		client_fail(c, &ld.e_io);
		return;
	}
	if (shutdown(c->fd, SHUT_WR) == -1) {
		client_fail(c, &ld.e_io);
		return;
	}
	client_watch(c, CL_READING, EV_READ);
}

static void
client_connect(struct client *c)
{
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd == -1) {
		client_fail(c, &ld.e_connect);
		return;
	}
	if (connect(c->fd, (struct sockaddr *)&ld.sun, sizeof(ld.sun)) == 0) {
		client_write(c);
		return;
	}
	if (errno == EAGAIN) {
		/*
		 * Linux says EAGAIN when a Unix listener's backlog is full;
		 * Exim's blocking connect would just wait, so do the same,
		 * without counting an error.
		 */
		close(c->fd);
		c->fd = -1;
		if (measuring())
			ld.retries++;
		c->state = CL_RETRY;
		ev_timer_set(&c->retry, LOAD_RETRY_DELAY, 0.);
		ev_timer_start(ld.loop, &c->retry);
		return;
	}
	if (errno == EINPROGRESS || errno == EINTR) {
		client_watch(c, CL_CONNECTING, EV_WRITE);
		return;
	}
	client_fail(c, &ld.e_connect);
}

static void
client_start(struct client *c)
{
	unsigned long	key;
	const char	*who;
	int		len;

	if (ld.phase == PH_DONE)
		return;
	key = (unsigned long)random() % ld.nkeys;
	who = "bench";
	if (ld.abuse && random() % 10 != 0) {
		key = (unsigned long)random() % LOAD_ABUSERS;
		who = "abuser";
	}
	/* Exim's bare line, or an attribute block naming a rule (-r). */
	if (ld.rule != NULL)
		len = snprintf(c->line, sizeof(c->line),
		    "rule=%s\nkey=%s-%lu@example.org\n\n", ld.rule, who, key);
	else
		len = snprintf(c->line, sizeof(c->line),
		    "%s-%lu@example.org\n", who, key);
	c->linelen = (size_t)len;
	c->off = 0;
	c->anslen = 0;
	c->t0 = now_ns();
	client_connect(c);
}

static void
client_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct client	*c = w->data;
	int		 soerr;
	socklen_t	 len = sizeof(soerr);

	(void)loop;
	(void)revents;
	switch (c->state) {
	case CL_CONNECTING:
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) ==
		    -1 || soerr != 0) {
			client_fail(c, &ld.e_connect);
			return;
		}
		client_write(c);
		break;
	case CL_WRITING:
		client_write(c);
		break;
	case CL_READING:
		client_read(c);
		break;
	default:
		break;
	}
}

static void
client_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct client	*c = w->data;

	(void)loop;
	(void)revents;
	c->state = CL_IDLE;
	/* A retried connect keeps its t0; a request after a failure is new. */
	if (c->t0 == 0)
		client_start(c);
	else if (ld.phase != PH_DONE)
		client_connect(c);
}

/*
 * One sweep over all clients instead of a timer per request keeps the
 * generator's own cost per decision down.
 */
static void
sweep_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	uint64_t	 now = now_ns();
	struct client	*c;
	int		 i;

	(void)loop;
	(void)w;
	(void)revents;
	for (i = 0; i < ld.nclients; i++) {
		c = &ld.clients[i];
		if (c->state != CL_IDLE && c->t0 != 0 &&
		    now - c->t0 > LOAD_TIMEOUT_NS)
			client_fail(c, &ld.e_timeout);
	}
}

/*
 * The measured part starts when this actually runs, not when it was due, so
 * a late warmup timer cannot shorten it.
 */
static void
measure_start(void)
{
	ld.phase = PH_MEASURE;
	ld.t_start = now_ns();
	ev_now_update(ld.loop);
	ev_timer_set(&ld.end, ld.duration, 0.);
	ev_timer_start(ld.loop, &ld.end);
}

static void
warmup_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	measure_start();
}

static void
end_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)w;
	(void)revents;
	ld.phase = PH_DONE;
	ld.t_end = now_ns();
	ev_break(loop, EVBREAK_ALL);
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t	x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* Nearest rank: the smallest sample with at least p of them at or below. */
static double
percentile_us(double p)
{
	size_t	rank;

	if (ld.nlat == 0)
		return 0.;
	rank = (size_t)(p * (double)ld.nlat);
	if ((double)rank < p * (double)ld.nlat)
		rank++;
	if (rank == 0)
		rank = 1;
	return (double)ld.lat[rank - 1] / 1000.;
}

static void
load_report(void)
{
	uint64_t	decisions = ld.yes + ld.no;
	uint64_t	errors = ld.e_connect + ld.e_io + ld.e_timeout +
			    ld.e_answer;
	double		secs = (double)(ld.t_end - ld.t_start) / NS_PER_S;

	if (ld.nlat > 0)
		qsort(ld.lat, ld.nlat, sizeof(*ld.lat), cmp_u64);
	printf("decisions=%llu seconds=%.3f rate=%.1f/s p50_us=%.1f "
	    "p99_us=%.1f max_us=%.1f yes=%llu no=%llu errors=%llu "
	    "retries=%llu\n",
	    (unsigned long long)decisions, secs,
	    secs > 0 ? (double)decisions / secs : 0.,
	    percentile_us(0.50), percentile_us(0.99), percentile_us(1.0),
	    (unsigned long long)ld.yes, (unsigned long long)ld.no,
	    (unsigned long long)errors, (unsigned long long)ld.retries);
	if (errors > 0)
		fprintf(stderr, "sw-bench: errors: connect=%llu io=%llu "
		    "timeout=%llu answer=%llu\n",
		    (unsigned long long)ld.e_connect,
		    (unsigned long long)ld.e_io,
		    (unsigned long long)ld.e_timeout,
		    (unsigned long long)ld.e_answer);
}

static int
load_main(const char *path, int conc, double duration, unsigned long nkeys,
    double warmup)
{
	ev_timer	warmup_t, sweep_t;
	ev_signal	sigint, sigterm;
	int		i;

	if ((ld.loop = ev_default_loop(0)) == NULL)
		errx(1, "cannot initialise libev");
	if (sun_fill(&ld.sun, path) == -1)
		errx(1, "%s: socket path too long", path);
	ld.nkeys = nkeys;
	ld.nclients = conc;
	if ((ld.clients = calloc((size_t)conc, sizeof(*ld.clients))) == NULL)
		err(1, "calloc");
	srandom((unsigned int)((uint64_t)getpid() ^ now_ns()));

	ld.duration = duration;
	ev_timer_init(&ld.end, end_cb, duration, 0.);
	ev_now_update(ld.loop);
	if (warmup > 0) {
		ld.phase = PH_WARMUP;
		ev_timer_init(&warmup_t, warmup_cb, warmup, 0.);
		ev_timer_start(ld.loop, &warmup_t);
	} else
		measure_start();
	ev_timer_init(&sweep_t, sweep_cb, LOAD_SWEEP, LOAD_SWEEP);
	ev_timer_start(ld.loop, &sweep_t);

	/* Interrupted, still report what was measured so far. */
	ev_signal_init(&sigint, stop_cb, SIGINT);
	ev_signal_start(ld.loop, &sigint);
	ev_signal_init(&sigterm, stop_cb, SIGTERM);
	ev_signal_start(ld.loop, &sigterm);

	for (i = 0; i < conc; i++) {
		struct client *c = &ld.clients[i];

		c->fd = -1;
		c->state = CL_IDLE;
		ev_io_init(&c->io, client_io_cb, -1, EV_READ);
		c->io.data = c;
		ev_timer_init(&c->retry, client_retry_cb, 0., 0.);
		c->retry.data = c;
	}
	for (i = 0; i < conc; i++)
		client_start(&ld.clients[i]);

	ev_run(ld.loop, 0);

	if (ld.phase != PH_DONE) {
		if (ld.phase == PH_WARMUP)
			ld.t_start = now_ns();
		ld.phase = PH_DONE;
		ld.t_end = now_ns();
	}
	for (i = 0; i < conc; i++)
		client_stop(&ld.clients[i]);
	load_report();
	free(ld.lat);
	free(ld.clients);
	return 0;
}

/* -------------------------------------------------------------------- */

static void
usage(void)
{
	fprintf(stderr,
	    "usage: sw-bench floor -s SOCK\n"
	    "       sw-bench load -s SOCK -c CONCURRENCY -d SECONDS "
	    "[-a] [-k NKEYS] [-r RULE] [-w WARMUP]\n");
	exit(2);
}

static double
parse_seconds(const char *s, double min, double max, const char *what)
{
	char	*end;
	double	 v;

	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !(v >= min) ||
	    !(v <= max))
		errx(2, "%s: must be a number of seconds in [%g, %g]", what,
		    min, max);
	return v;
}

static long
parse_long(const char *s, long min, long max, const char *what)
{
	char	*end;
	long	 v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		errx(2, "%s: must be an integer in [%ld, %ld]", what, min,
		    max);
	return v;
}

int
main(int argc, char *argv[])
{
	const char	*mode, *path = NULL;
	double		 duration = -1, warmup = 0;
	long		 conc = -1, nkeys = 10000;
	int		 ch;

	if (argc < 2)
		usage();
	mode = argv[1];
	argc--;
	argv++;
	while ((ch = getopt(argc, argv, "ac:d:k:r:s:w:")) != -1) {
		switch (ch) {
		case 'a':
			ld.abuse = 1;
			break;
		case 'c':
			conc = parse_long(optarg, 1, 100000, "-c");
			break;
		case 'd':
			duration = parse_seconds(optarg, 0.001, 86400, "-d");
			break;
		case 'k':
			nkeys = parse_long(optarg, 1, 1000000000, "-k");
			break;
		case 'r':
			if (strlen(optarg) > 64)
				usage();
			ld.rule = optarg;
			break;
		case 's':
			path = optarg;
			break;
		case 'w':
			warmup = parse_seconds(optarg, 0, 86400, "-w");
			break;
		default:
			usage();
		}
	}
	if (optind != argc || path == NULL)
		usage();

	signal(SIGPIPE, SIG_IGN);
	raise_nofile();
	setvbuf(stdout, NULL, _IOLBF, 0);

	if (strcmp(mode, "floor") == 0) {
		if (conc != -1 || duration >= 0)
			usage();
		return floor_main(path);
	}
	if (strcmp(mode, "load") == 0) {
		if (conc == -1 || duration < 0)
			usage();
		return load_main(path, (int)conc, duration,
		    (unsigned long)nkeys, warmup);
	}
	usage();
	return 2;
}
