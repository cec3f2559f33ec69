/*
 * metrics.c: the Prometheus endpoint (metrics.h) on libmicrohttpd.
 *
 * Why a library: this listener lives in a process that sits in every mail
 * transaction, and an HTTP parser written for it would be new code facing
 * whatever reaches the port.  libmicrohttpd is Debian's, fuzzed and in
 * wide use, and can run with no thread of its own: we bind the socket
 * (for our own error messages), hand it over, and drive it from our loop
 * by watching its epoll descriptor and its timeout.
 *
 * Bounds: 8 connections at once, 5 s to send a request, 16 KB of memory
 * per connection; only GET and HEAD of /metrics are answered (404, 405
 * otherwise).  A busy or hostile scraper costs at most that, and the
 * page is rendered only when a request is complete.
 */
#include <sys/socket.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <microhttpd.h>

#include "daemon.h"
#include "log.h"
#include "metrics.h"

#define METRICS_CONNECTIONS	8
#define METRICS_TIMEOUT_S	5
#define METRICS_CONN_MEMORY	16384
#define METRICS_IDLE_RUN_S	1.

const double metrics_buckets[METRICS_BUCKETS] = {
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1,
};

struct metrics {
	char	*buf;
	size_t	 len, cap;
	int	 failed;		/* out of memory: a 500, not a cut page */
};

static struct MHD_Daemon	*metrics_mhd;
static struct ev_loop		*metrics_loop;
static metrics_render_fn	*metrics_fn;
static ev_io			 metrics_io;
static ev_timer			 metrics_timer;
static int			 metrics_fd = -1;

static void
metrics_printf(struct metrics *m, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void
metrics_printf(struct metrics *m, const char *fmt, ...)
{
	va_list	 ap;
	char	*nbuf;
	size_t	 ncap;
	int	 n;

	if (m->failed)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(m->buf + m->len, m->cap - m->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			m->failed = 1;
			return;
		}
		if ((size_t)n < m->cap - m->len) {
			m->len += (size_t)n;
			return;
		}
		ncap = m->cap * 2 + (size_t)n;
		if ((nbuf = realloc(m->buf, ncap)) == NULL) {
			m->failed = 1;
			return;
		}
		m->buf = nbuf;
		m->cap = ncap;
	}
}

void
metrics_family(struct metrics *m, const char *name, const char *type,
    const char *help)
{
	metrics_printf(m, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
	    type);
}

void
metrics_u64(struct metrics *m, const char *name, const char *labels,
    uint64_t v)
{
	metrics_printf(m, "%s%s%s%s %llu\n", name, *labels ? "{" : "",
	    labels, *labels ? "}" : "", (unsigned long long)v);
}

void
metrics_double(struct metrics *m, const char *name, const char *labels,
    double v)
{
	metrics_printf(m, "%s%s%s%s %.17g\n", name, *labels ? "{" : "",
	    labels, *labels ? "}" : "", v);
}

void
metrics_counter(struct metrics *m, const char *name, const char *help,
    uint64_t v)
{
	metrics_family(m, name, "counter", help);
	metrics_u64(m, name, "", v);
}

void
metrics_gauge(struct metrics *m, const char *name, const char *help,
    double v)
{
	metrics_family(m, name, "gauge", help);
	metrics_double(m, name, "", v);
}

const char *
metrics_label(char *dst, size_t dstlen, const char *value)
{
	size_t	 o = 0;

	if (dstlen == 0)
		return dst;
	for (; *value != '\0' && o + 2 < dstlen; value++) {
		if (*value == '\\' || *value == '"' || *value == '\n') {
			dst[o++] = '\\';
			dst[o++] = *value == '\n' ? 'n' : *value;
		} else
			dst[o++] = *value;
	}
	dst[o] = '\0';
	return dst;
}

void
metrics_hist_observe(struct metrics_hist *h, double s)
{
	size_t	 i;

	/* Thirteen compares at most: cheaper than any search here. */
	for (i = 0; i < METRICS_BUCKETS; i++)
		if (s <= metrics_buckets[i]) {
			h->le[i]++;
			break;
		}
	h->count++;
	h->sum += s;
}

void
metrics_hist(struct metrics *m, const char *name, const char *help,
    const struct metrics_hist *h)
{
	char		 labels[32];
	uint64_t	 sum = 0;
	size_t		 i;

	metrics_family(m, name, "histogram", help);
	for (i = 0; i < METRICS_BUCKETS; i++) {
		sum += h->le[i];
		snprintf(labels, sizeof(labels), "le=\"%g\"",
		    metrics_buckets[i]);
		metrics_printf(m, "%s_bucket{%s} %llu\n", name, labels,
		    (unsigned long long)sum);
	}
	metrics_printf(m, "%s_bucket{le=\"+Inf\"} %llu\n", name,
	    (unsigned long long)h->count);
	metrics_printf(m, "%s_sum %.17g\n%s_count %llu\n", name, h->sum, name,
	    (unsigned long long)h->count);
}

char *
metrics_render(metrics_render_fn *fn, size_t *len)
{
	struct metrics	 m;

	m.cap = 8192;
	m.len = 0;
	m.failed = 0;
	if ((m.buf = malloc(m.cap)) == NULL)
		return NULL;
	fn(&m);
	if (m.failed) {
		free(m.buf);
		return NULL;
	}
	*len = m.len;
	return m.buf;
}

static enum MHD_Result
metrics_send(struct MHD_Connection *conn, unsigned status, const char *type,
    char *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response	*resp;
	enum MHD_Result		 rv;

	if ((resp = MHD_create_response_from_buffer(len, body, mode)) == NULL) {
		if (mode == MHD_RESPMEM_MUST_FREE)
			free(body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	rv = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return rv;
}

static enum MHD_Result
metrics_request(void *cls, struct MHD_Connection *conn, const char *url,
    const char *method, const char *version, const char *upload,
    size_t *upload_len, void **con_cls)
{
	static char	 notfound[] = "not found: try /metrics\n";
	static char	 badmethod[] = "only GET\n";
	static char	 nomem[] = "out of memory\n";
	char		*page;
	size_t		 len;

	(void)cls;
	(void)version;
	(void)upload;
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return metrics_send(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
		    "text/plain", badmethod, sizeof(badmethod) - 1,
		    MHD_RESPMEM_PERSISTENT);
	/* A GET has no body: answer on the first call, with the headers. */
	(void)con_cls;
	*upload_len = 0;
	if (strcmp(url, "/metrics") != 0)
		return metrics_send(conn, MHD_HTTP_NOT_FOUND, "text/plain",
		    notfound, sizeof(notfound) - 1, MHD_RESPMEM_PERSISTENT);
	if ((page = metrics_render(metrics_fn, &len)) == NULL)
		return metrics_send(conn, MHD_HTTP_INTERNAL_SERVER_ERROR,
		    "text/plain", nomem, sizeof(nomem) - 1,
		    MHD_RESPMEM_PERSISTENT);
	return metrics_send(conn, MHD_HTTP_OK,
	    "text/plain; version=0.0.4; charset=utf-8", page, len,
	    MHD_RESPMEM_MUST_FREE);
}

static void
metrics_logger(void *cls, const char *fmt, va_list ap)
{
	char	 msg[256], q[300];
	size_t	 n;

	(void)cls;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n > 0 && msg[n - 1] == '\n')
		msg[--n] = '\0';
	log_debug("event=metrics_http error=\"%s\"", log_quote(q, sizeof(q),
	    msg, n));
}

/*
 * Run what is ready, then wake again when MHD next has a deadline, and
 * within a second in any case: at its connection limit MHD takes the
 * listening socket out of its epoll set and puts it back only in a later
 * MHD_run(), which nothing would cause once the last connection is gone
 * (a scraper's connections timed out, say).  One call a second is
 * nothing; an endpoint deaf until a restart is a monitoring outage.
 */
static void
metrics_run(void)
{
	MHD_UNSIGNED_LONG_LONG	 ms;
	double			 next = METRICS_IDLE_RUN_S;

	MHD_run(metrics_mhd);
	if (MHD_get_timeout(metrics_mhd, &ms) == MHD_YES &&
	    ms / 1000. < next)
		next = ms / 1000. + 0.001;
	ev_timer_stop(metrics_loop, &metrics_timer);
	ev_timer_set(&metrics_timer, next, 0.);
	ev_timer_start(metrics_loop, &metrics_timer);
}

static void
metrics_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	metrics_run();
}

static void
metrics_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	metrics_run();
}

int
metrics_open(struct ev_loop *loop, const char *addr, metrics_render_fn *fn,
    char *err, size_t errlen)
{
	const union MHD_DaemonInfo	*info;

	if ((metrics_fd = daemon_inet(addr, "metrics: ", err, errlen)) == -1)
		return -1;
	if (listen(metrics_fd, 32) == -1) {
		snprintf(err, errlen, "metrics: %s: listen: %s", addr,
		    strerror(errno));
		goto fail;
	}
	/* The logger first: MHD says so, and logs its place otherwise. */
	metrics_mhd = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG,
	    0, NULL, NULL, metrics_request, NULL,
	    MHD_OPTION_EXTERNAL_LOGGER, metrics_logger, NULL,
	    MHD_OPTION_LISTEN_SOCKET, metrics_fd,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned)METRICS_CONNECTIONS,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)METRICS_TIMEOUT_S,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)METRICS_CONN_MEMORY,
	    MHD_OPTION_END);
	if (metrics_mhd == NULL) {
		snprintf(err, errlen, "metrics: %s: the HTTP server did not "
		    "start", addr);
		goto fail;
	}
	if ((info = MHD_get_daemon_info(metrics_mhd,
	    MHD_DAEMON_INFO_EPOLL_FD)) == NULL) {
		snprintf(err, errlen, "metrics: %s: no epoll descriptor", addr);
		MHD_stop_daemon(metrics_mhd);	/* it closes metrics_fd */
		metrics_mhd = NULL;
		metrics_fd = -1;
		return -1;
	}
	metrics_loop = loop;
	metrics_fn = fn;
	ev_io_init(&metrics_io, metrics_io_cb, info->epoll_fd, EV_READ);
	ev_timer_init(&metrics_timer, metrics_timer_cb, 0., 0.);
	ev_io_start(loop, &metrics_io);
	ev_timer_set(&metrics_timer, METRICS_IDLE_RUN_S, 0.);
	ev_timer_start(loop, &metrics_timer);
	return 0;
fail:
	close(metrics_fd);
	metrics_fd = -1;
	return -1;
}

void
metrics_close(void)
{
	if (metrics_mhd == NULL)
		return;
	ev_io_stop(metrics_loop, &metrics_io);
	ev_timer_stop(metrics_loop, &metrics_timer);
	/* It closes its connections and the listening socket we gave it. */
	MHD_stop_daemon(metrics_mhd);
	metrics_mhd = NULL;
	metrics_fd = -1;
}
