/*
 * session.c: one client connection, from accept() to close().
 *
 *   READING --request complete--> ASKING --verdict or deadline--> answer,
 *      |                                                         close
 *      +-- silent past client_timeout, malformed, too long --> answer, close
 *
 * One timer carries both deadlines: the client's (client_timeout) while
 * reading, Redis's (redis.timeout) while asking.  Everything ends in
 * session_free(), the only place a session is freed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "shim.h"

/*
 * Exim's requests are a line; most sessions never need more than this, so
 * ten thousand idle clients cost little.  Longer ones grow to max_request.
 */
#define SESSION_SMALL	256

enum session_state { SESSION_READING, SESSION_ASKING };

struct session {
	int			 fd;
	enum session_state	 state;
	ev_io			 io;
	ev_timer		 timer;
	struct pending		*pending;
	size_t			 len;
	size_t			 cap;
	char			*buf;		/* small[] until it must grow */
	char			 small[SESSION_SMALL];
};

/*
 * Rate-limited warnings: one client or one outage must not flood syslog.
 * The first of a kind is logged at once, the rest as a count every 10 s.
 */
struct warn_limit {
	const char	*event;
	ev_tstamp	 last;
	uint64_t	 suppressed;
};

static struct warn_limit warn_fail = { "fail_policy", 0, 0 };
static struct warn_limit warn_bad = { "bad_request", 0, 0 };
static struct warn_limit warn_timeout = { "client_timeout", 0, 0 };

static void
warn_limited(struct warn_limit *wl, const char *fmt, const char *a,
    const char *b)
{
	ev_tstamp	 now = ev_now(shim.loop);
	char		 msg[512];

	if (wl->last != 0 && now - wl->last < 10.) {
		wl->suppressed++;
		return;
	}
	snprintf(msg, sizeof(msg), fmt, a, b);
	if (wl->suppressed > 0)
		log_warn("event=%s %s suppressed=%llu", wl->event, msg,
		    (unsigned long long)wl->suppressed);
	else
		log_warn("event=%s %s", wl->event, msg);
	wl->last = now;
	wl->suppressed = 0;
}

static void
session_free(struct session *s, const char *reason)
{
	log_debug("event=session_close fd=%d reason=\"%s\"", s->fd, reason);
	if (s->pending != NULL) {
		/* Redis still owes a reply; it will find no session. */
		script_detach(s->pending);
		s->pending = NULL;
	}
	ev_io_stop(shim.loop, &s->io);
	ev_timer_stop(shim.loop, &s->timer);
	close(s->fd);
	if (s->buf != s->small)
		free(s->buf);
	free(s);
	shim.nsessions--;
	listener_session_gone();
}

/* Write the bare word and close: Exim reads until EOF. */
static void
session_reply(struct session *s, const char *word, const char *reason)
{
	size_t	 len = strlen(word);

	/*
	 * A fresh socket's send buffer always holds three bytes, so a short
	 * write means the client is gone; there is nobody to retry for.
	 */
	if (write(s->fd, word, len) != (ssize_t)len)
		reason = "client gone before the answer";
	session_free(s, reason);
}

void
session_answer(struct session *s, int verdict, const char *why)
{
	const char	*answer;

	s->pending = NULL;	/* answered: the pending frees itself */
	if (verdict < 0) {
		shim.stats.fail_policy++;
		answer = shim.conf->redis_on_error;
		warn_limited(&warn_fail, "reason=\"%s\" answer=%s", why,
		    answer);
	} else
		answer = verdict ? "yes" : "no";
	session_reply(s, answer, verdict < 0 ? why : "answered");
}

static void
session_bad(struct session *s, const char *why)
{
	shim.stats.bad_requests++;
	warn_limited(&warn_bad, "reason=\"%s\" answer=%s", why,
	    shim.conf->redis_on_error);
	session_reply(s, shim.conf->redis_on_error, why);
}

static void
session_ask(struct session *s, const struct request *req)
{
	const struct conf_rule	*rule;
	char			 why[160], qrule[CONF_NAME_MAX * 4];

	rule = conf_rule_find(shim.conf, req->rule, req->rule_len);
	if (rule == NULL) {
		snprintf(why, sizeof(why), "unknown rule %s",
		    log_quote(qrule, sizeof(qrule), req->rule,
		    req->rule_len < CONF_NAME_MAX ? req->rule_len :
		    CONF_NAME_MAX));
		session_bad(s, why);
		return;
	}
	ev_io_stop(shim.loop, &s->io);
	s->pending = script_submit(s, rule, req);
	if (s->pending == NULL) {
		/* Known down: answer now rather than make Exim wait. */
		session_answer(s, -1, "redis not connected");
		return;
	}
	s->state = SESSION_ASKING;
	ev_timer_stop(shim.loop, &s->timer);
	ev_timer_set(&s->timer, shim.conf->redis_timeout_ms / 1000., 0.);
	ev_timer_start(shim.loop, &s->timer);
}

static int
session_grow(struct session *s)
{
	size_t	 cap = s->cap * 4;
	char	*buf;

	if (cap > shim.conf->max_request)
		cap = shim.conf->max_request;
	if (cap <= s->len) {	/* max_request shrank in a reload */
		session_bad(s, "request too long");
		return -1;
	}
	if ((buf = malloc(cap)) == NULL) {
		session_free(s, "out of memory");
		return -1;
	}
	memcpy(buf, s->buf, s->len);
	if (s->buf != s->small)
		free(s->buf);
	s->buf = buf;
	s->cap = cap;
	return 0;
}

static void
session_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct session		*s = w->data;
	struct request		 req;
	enum request_status	 st;
	char			 err[160];
	ssize_t			 n;
	int			 eof = 0;

	(void)loop;
	(void)revents;
	if (s->len == s->cap && session_grow(s) == -1)
		return;
	n = read(s->fd, s->buf + s->len, s->cap - s->len);
	if (n == -1) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		session_free(s, strerror(errno));
		return;
	}
	if (n == 0)
		eof = 1;
	s->len += n;

	st = request_parse(s->buf, s->len, eof, &req, err, sizeof(err));
	switch (st) {
	case REQUEST_DONE:
		session_ask(s, &req);
		return;
	case REQUEST_EMPTY:
		/* Connected and closed without a word: monit, a probe. */
		session_reply(s, "no", "empty request");
		return;
	case REQUEST_ERROR:
		session_bad(s, err);
		return;
	case REQUEST_MORE:
		if (eof) {
			session_bad(s, "incomplete request");
			return;
		}
		if (s->len >= shim.conf->max_request) {
			snprintf(err, sizeof(err), "request longer than %zu "
			    "bytes", shim.conf->max_request);
			session_bad(s, err);
		}
		return;
	}
}

static void
session_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct session	*s = w->data;
	char		 why[64];

	(void)loop;
	(void)revents;
	if (s->state == SESSION_ASKING) {
		snprintf(why, sizeof(why), "redis did not answer in %lldms",
		    (long long)shim.conf->redis_timeout_ms);
		session_answer(s, -1, why);
		return;
	}
	shim.stats.client_timeouts++;
	warn_limited(&warn_timeout, "reason=\"%s\"%s",
	    "client sent no complete request in time", "");
	session_free(s, "client timeout");
}

void
session_new(int fd)
{
	struct session	*s;

	if ((s = malloc(sizeof(*s))) == NULL) {
		log_err("event=session_alloc_failed");
		close(fd);
		return;
	}
	s->fd = fd;
	s->state = SESSION_READING;
	s->pending = NULL;
	s->len = 0;
	s->buf = s->small;
	s->cap = shim.conf->max_request < SESSION_SMALL ?
	    shim.conf->max_request : SESSION_SMALL;
	shim.nsessions++;
	ev_io_init(&s->io, session_read_cb, fd, EV_READ);
	s->io.data = s;
	ev_timer_init(&s->timer, session_timer_cb,
	    shim.conf->client_timeout_ms / 1000., 0.);
	s->timer.data = s;
	ev_io_start(shim.loop, &s->io);
	ev_timer_start(shim.loop, &s->timer);
	/* Exim writes right after connecting: the request is often here. */
	session_read_cb(shim.loop, &s->io, EV_READ);
}
