/*
 * session.c: one client connection, from accept() to close().
 *
 *   READING --request complete--> ASKING --verdict or deadline--> answer,
 *      |                                                         close
 *      +-- silent past client_timeout, malformed, too long --> answer, close
 *
 * One timer carries both deadlines: the client's (client_timeout) while
 * reading, Redis's (redis.timeout) while asking.  Everything ends in
 * session_free(), the only place a session is freed.  Every client that
 * asked gets an answer: the verdict, or the fail policy (redis.on_error)
 * when Redis failed, the request was bad or the client stayed silent.
 */
#include <sys/queue.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"
#include "log.h"
#include "rule.h"
#include "keyspace.h"
#include "shim.h"

/*
 * Exim's requests are a line; most sessions never need more than this, so
 * ten thousand idle clients cost little.  Longer ones grow to max_request.
 */
#define SESSION_SMALL	256

enum session_state { SESSION_READING, SESSION_ASKING };

struct session {
	TAILQ_ENTRY(session)	 entry;		/* oldest first */
	int			 fd;
	enum session_state	 state;
	ev_tstamp		 since;		/* accepted, or last answered */
	ev_tstamp		 asked;		/* the request complete (ev_time) */
	ev_io			 io;
	ev_timer		 timer;
	struct pending		*pending;
	const struct conf_rule	*rule;		/* while asking */
	int			 moving;	/* waited out TRYAGAIN */
	int			 policy;	/* Postfix: answer, read on */
	size_t			 used;		/* bytes of the request asked */
	size_t			 len;
	size_t			 cap;
	char			*buf;		/* small[] until it must grow */
	char			 small[SESSION_SMALL];
};

static TAILQ_HEAD(, session) sessions = TAILQ_HEAD_INITIALIZER(sessions);

const char *const fail_reason_names[FAIL_MAX] = {
	[FAIL_NONE] = "none",
	[FAIL_NOT_CONNECTED] = "not_connected",
	[FAIL_TIMEOUT] = "timeout",
	[FAIL_LOST] = "connection_lost",
	[FAIL_OOM] = "oom",
	[FAIL_READONLY] = "readonly",
	[FAIL_BUSY] = "busy",
	[FAIL_NOSCRIPT] = "noscript",
	[FAIL_LOADING] = "loading",
	[FAIL_NOPERM] = "noperm",
	[FAIL_CLUSTER] = "cluster",
	[FAIL_ERROR] = "redis_error",
	[FAIL_BAD_REPLY] = "bad_reply",
	[FAIL_SHUTDOWN] = "shutdown",
	[FAIL_NOMEM] = "out_of_memory",
};

/* One line per reason and period: an OOM is never hidden by timeouts. */
static struct log_limit warn_fail[FAIL_MAX];
static struct log_limit warn_bad = { .event = "bad_request", .warn = 1 };
static struct log_limit warn_timeout = { .event = "client_timeout",
	.warn = 1 };

static void
session_free(struct session *s, const char *reason)
{
	log_debug("event=session_close fd=%d reason=\"%s\"", s->fd, reason);
	if (s->pending != NULL) {
		/* Redis still owes a reply; it will find no session. */
		decide_detach(s->pending);
		s->pending = NULL;
	}
	if (s->state == SESSION_ASKING)
		shim.nasking--;
	ev_io_stop(shim.loop, &s->io);
	ev_timer_stop(shim.loop, &s->timer);
	TAILQ_REMOVE(&sessions, s, entry);
	close(s->fd);
	if (s->buf != s->small)
		free(s->buf);
	free(s);
	shim.nsessions--;
	listener_session_gone();
}

static void	session_parse(struct session *, int eof);

/*
 * Input left unread at close() makes the kernel reset the connection (Unix
 * and TCP alike), and the client then loses the answer just written: a
 * too-long request would get a read error instead of the on_error word.
 * Read what the client has already sent; the bound keeps a flooding
 * client from holding us.  Only refusals need it: a request that parsed
 * was read to its end, and an unread EOF does not reset anything.
 */
static void
session_drain(int fd)
{
	char	 buf[4096];
	int	 i;

	for (i = 0; i < 64; i++)
		if (read(fd, buf, sizeof(buf)) <= 0)
			break;
}

/*
 * A request answered without Redis while others wait on it: clients
 * besides those may bring decisions (decide.c's batch wait).  A lone
 * client's own answers never count: it waits on nothing then.  Only a
 * request that was decided counts (lists, overrides, the near cache, a
 * Postfix request the rule skips): a probe that connects and closes, a
 * bad request or a silent client is no sign of mail to come.
 */
static void
session_company(const struct session *s)
{
	if (s->state != SESSION_ASKING && shim.nasking > 0)
		shim.answered_here = cache_clock();
}

/*
 * Exim: write the bare word and close, since Exim reads until EOF.
 * Postfix: write "action=..." and an empty line, then read the next
 * request on the same connection.
 */
static void
session_reply(struct session *s, const char *word, const char *reason)
{
	char	 line[512];
	size_t	 len;

	if (s->policy) {
		len = snprintf(line, sizeof(line), "action=%s\n\n", word);
		if (len >= sizeof(line))
			len = sizeof(line) - 1;
		word = line;
	} else
		len = strlen(word);
	/*
	 * The answer is far smaller than a socket's send buffer, so a short
	 * write means the client is gone or not reading: nobody to retry for.
	 */
	if (write(s->fd, word, len) != (ssize_t)len) {
		session_free(s, "client gone before the answer");
		return;
	}
	if (!s->policy) {
		session_free(s, reason);
		return;
	}
	if (s->pending != NULL) {
		decide_detach(s->pending);
		s->pending = NULL;
	}
	s->rule = NULL;
	memmove(s->buf, s->buf + s->used, s->len - s->used);
	s->len -= s->used;
	s->used = 0;
	if (s->state == SESSION_ASKING)
		shim.nasking--;
	s->state = SESSION_READING;
	s->since = ev_now(shim.loop);
	/* Answered: it is the newest session now, the last to be shed. */
	TAILQ_REMOVE(&sessions, s, entry);
	TAILQ_INSERT_TAIL(&sessions, s, entry);
	/*
	 * Postfix keeps an idle policy connection for its
	 * smtpd_policy_service_max_idle (300s) and does not notice our close
	 * while an SMTP session is open: its next request would fail (with
	 * try_limit 1, uncounted).  So an idle one is kept longer than that.
	 */
	ev_timer_stop(shim.loop, &s->timer);
	ev_timer_set(&s->timer, (s->len == 0 ? shim.conf->policy_idle_ms :
	    shim.conf->client_timeout_ms) / 1000., 0.);
	ev_timer_start(shim.loop, &s->timer);
	ev_io_start(shim.loop, &s->io);
	/*
	 * Postfix may have pipelined the next request.  Parse it from the
	 * loop, not from here: answers that need no Redis (lists, bad input)
	 * would otherwise recurse once per request still in the buffer.
	 * Stopping the watcher (session_free) cancels the fed event.
	 */
	if (s->len > 0)
		ev_feed_event(shim.loop, &s->io, EV_CUSTOM);
}

/* What a verdict means in the client's protocol. */
static const char *
session_word(const struct session *s, int yes)
{
	if (!s->policy)
		return yes ? "yes" : "no";
	if (!yes)
		return "DUNNO";
	return s->rule != NULL ? s->rule->postfix_action :
	    "DEFER_IF_PERMIT 4.7.1 rate limit exceeded";
}

void
session_answer(struct session *s, int verdict, const char *why)
{
	/*
	 * s->pending stays set: session_free() detaches it.  After the Redis
	 * timer (or at shutdown) the reply is still to come and must find no
	 * session; from the reply callback the pending is freed right after.
	 */
	stats_answered(s->rule, verdict, s->asked);
	session_company(s);
	session_reply(s, session_word(s, verdict), why != NULL ? why :
	    "answered");
}

void
session_resent(struct session *s, struct pending *p)
{
	s->pending = p;
}

void
session_moving(struct session *s)
{
	s->moving = 1;
}

void
session_fail(struct session *s, enum fail_reason reason, const char *why)
{
	struct log_limit	*l = &warn_fail[reason];
	const char		*answer;
	char			 q[256];

	shim.stats.fail_policy++;
	shim.stats.fail[reason]++;
	stats_waited(s->asked);
	answer = session_word(s, shim.conf->redis_on_error);
	if (l->event == NULL) {
		l->event = "fail_policy";
		l->warn = reason != FAIL_OOM && reason != FAIL_READONLY;
	}
	log_limited(shim.loop, l, "reason=%s detail=\"%s\" answer=%s",
	    fail_reason_names[reason], log_quote(q, sizeof(q), why,
	    strlen(why)), answer);
	session_reply(s, answer, why);
}

static void
session_bad(struct session *s, const char *why)
{
	const char	*answer;

	shim.stats.bad_requests++;
	if (s->policy) {
		/* Postfix's advice: on trouble, log and close. */
		log_limited(shim.loop, &warn_bad, "reason=\"%s\" action=close",
		    why);
		session_free(s, why);
		return;
	}
	answer = session_word(s, shim.conf->redis_on_error);
	log_limited(shim.loop, &warn_bad, "reason=\"%s\" answer=%s", why,
	    answer);
	session_drain(s->fd);
	session_reply(s, answer, why);
}

/* Postfix: the rule named by policy_context, else "postfix", else default. */
static const struct conf_rule *
session_policy_rule(const struct request *req)
{
	const struct request_attr	*a;
	const struct conf_rule		*r;

	if ((a = request_attr(req, "policy_context")) != NULL &&
	    (r = conf_rule_find(shim.conf, a->value, a->value_len)) != NULL)
		return r;
	return shim.conf->rule_postfix;
}

/*
 * Is this Postfix request one the rule counts?  A rule may count only
 * its own clients (the Postfix counterpart of the Exim snippets' "hosts =
 * +my_hosts": outgoing mail), and bounces only when asked to: MAIL FROM:<>
 * is one key for the whole cluster, and every bounce past its limit would
 * be deferred.  NULL: count it; else why not.
 */
static const char *
session_policy_skip(const struct conf_rule *r, const struct request *req,
    const struct request_attr *key)
{
	const struct request_attr	*a;

	if (r->postfix_key_sender && (key == NULL || key->value_len == 0) &&
	    !r->postfix_bounces)
		return "null sender";
	if (r->npostfix_networks == 0 && !r->postfix_authenticated)
		return NULL;
	if (r->postfix_authenticated &&
	    (a = request_attr(req, "sasl_username")) != NULL &&
	    a->value_len > 0)
		return NULL;
	if (r->npostfix_networks > 0 &&
	    (a = request_attr(req, "client_address")) != NULL &&
	    rule_listed(r->postfix_networks, r->npostfix_networks, a->value,
	    a->value_len))
		return NULL;
	return "client not counted by this rule";
}

static void
session_ask(struct session *s, struct request *req)
{
	const struct conf_override	*ov;
	const struct request_attr	*attr;
	const char			*skip;
	struct ask			 a;
	enum fail_reason		 fail;
	char				 why[160], q[CONF_NAME_MAX * 4];
	char				*key;

	/* The clock itself, not the loop's: the latency starts now. */
	s->asked = ev_time();
	s->used = req->used;
	s->policy = req->policy;
	if (req->policy) {
		s->rule = session_policy_rule(req);
		attr = s->rule != NULL ? request_attr(req,
		    s->rule->postfix_key) : NULL;
		if (s->rule != NULL &&
		    (skip = session_policy_skip(s->rule, req, attr)) != NULL) {
			shim.stats.policy_skipped++;
			session_company(s);
			session_reply(s, "DUNNO", skip);
			return;
		}
		if (attr != NULL && attr->value_len > KEY_MAX) {
			/* As a bare key too long: never cut to share a count. */
			session_bad(s, "key longer than 512 bytes");
			return;
		}
		if (attr != NULL && attr->value_len > 0) {
			req->key = attr->value;
			req->key_len = attr->value_len;
		} else if (s->rule != NULL && s->rule->postfix_key_sender)
			req->key = "<>", req->key_len = 2;
		else {
			/* No such attribute (not authenticated...): no key. */
			shim.stats.policy_skipped++;
			session_company(s);
			session_reply(s, "DUNNO", "no key attribute");
			return;
		}
	} else
		s->rule = conf_rule_find(shim.conf, req->rule, req->rule_len);
	if (s->rule == NULL) {
		snprintf(why, sizeof(why), "unknown rule %s",
		    log_quote(q, sizeof(q), req->rule,
		    req->rule_len < CONF_NAME_MAX ? req->rule_len :
		    CONF_NAME_MAX));
		session_bad(s, why);
		return;
	}

	memset(&a, 0, sizeof(a));
	a.rule = s->rule;
	a.key = req->key;
	a.key_len = req->key_len;
	/*
	 * Normalising only shortens or lowercases, so it is done in place
	 * in the session's buffer; "<>" is a constant and needs none.
	 */
	if (s->rule->normalize != 0 && req->key >= s->buf &&
	    req->key < s->buf + s->len) {
		key = s->buf + (req->key - s->buf);
		a.key_len = keyspace_normalize(s->rule, req->key, req->key_len,
		    key);
	}
	a.subject = req->subject;
	a.subject_len = req->subject_len;
	a.cost = req->cost;
	a.peek = req->peek;
	a.factor = 1;

	/* Lists and config overrides need no Redis: the same everywhere. */
	if (rule_listed(s->rule->deny, s->rule->ndeny, a.key, a.key_len)) {
		shim.stats.listed++;
		session_answer(s, !s->rule->shadow, "deny list");
		return;
	}
	if (rule_listed(s->rule->allow, s->rule->nallow, a.key, a.key_len)) {
		shim.stats.listed++;
		session_answer(s, 0, "allow list");
		return;
	}
	if ((ov = rule_override(s->rule, a.key, a.key_len)) != NULL) {
		if (ov->action != OVR_FACTOR) {
			shim.stats.listed++;
			session_answer(s, ov->action == OVR_BLOCK &&
			    !s->rule->shadow, "config override");
			return;
		}
		a.factor = ov->factor;
	}
	/*
	 * A key Redis just found over its limit: the same answer, without
	 * Redis.  A request with a subject still goes there, to be recorded
	 * for the alert.
	 */
	if (a.subject == NULL && s->rule->near_cache &&
	    cache_hit(s->rule, a.key, a.key_len, a.cost,
	    !a.peek && s->rule->count_denied, cache_clock())) {
		session_answer(s, !s->rule->shadow, "near cache");
		return;
	}

	ev_io_stop(shim.loop, &s->io);
	if ((fail = decide_submit(s, &a, &s->pending)) != FAIL_NONE) {
		/* Known down: answer now rather than make Exim wait. */
		session_fail(s, fail, fail == FAIL_NOMEM ? "out of memory" :
		    "redis not connected");
		return;
	}
	s->state = SESSION_ASKING;
	shim.nasking++;
	s->moving = 0;
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
session_parse(struct session *s, int eof)
{
	struct request		 req;
	enum request_status	 st;
	char			 err[160];

	st = request_parse(s->buf, s->len, eof, &req, err, sizeof(err));
	if (req.policy)
		s->policy = 1;
	switch (st) {
	case REQUEST_DONE:
		session_ask(s, &req);
		return;
	case REQUEST_EMPTY:
		if (s->policy) {
			/* Postfix closed its end between requests. */
			session_free(s, "client closed");
			return;
		}
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
session_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct session	*s = w->data;
	ssize_t		 n;

	(void)loop;
	if (revents & EV_CUSTOM) {	/* from session_reply() */
		session_parse(s, 0);
		return;
	}
	if (s->len == s->cap && session_grow(s) == -1)
		return;
	n = read(s->fd, s->buf + s->len, s->cap - s->len);
	if (n == -1) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		session_free(s, strerror(errno));
		return;
	}
	/* A policy connection that was idle: a request has begun. */
	if (s->policy && s->len == 0 && n > 0) {
		ev_timer_stop(shim.loop, &s->timer);
		ev_timer_set(&s->timer, shim.conf->client_timeout_ms / 1000.,
		    0.);
		ev_timer_start(shim.loop, &s->timer);
	}
	s->len += n;
	session_parse(s, n == 0);
}

/* A client that never sent a whole request: answered, as a bad one is. */
static void
session_silent(struct session *s, const char *why)
{
	if (s->policy) {
		/* An idle Postfix connection: it reconnects when it needs. */
		session_free(s, s->len == 0 ? "idle" : why);
		return;
	}
	session_drain(s->fd);
	session_reply(s, session_word(s, shim.conf->redis_on_error), why);
}

static void
session_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct session	*s = w->data;
	char		 why[64];

	(void)loop;
	(void)revents;
	if (s->state == SESSION_ASKING) {
		/* Redis answered, but its slot was moving all that time: a
		 * reshard to see in fail_cluster, not a slow Redis. */
		snprintf(why, sizeof(why), s->moving ? "slot still moving "
		    "(TRYAGAIN) after %lldms" : "redis did not answer in %lldms",
		    (long long)shim.conf->redis_timeout_ms);
		session_fail(s, s->moving ? FAIL_CLUSTER : FAIL_TIMEOUT, why);
		return;
	}
	if (!(s->policy && s->len == 0)) {
		shim.stats.client_timeouts++;
		log_limited(shim.loop, &warn_timeout, "reason=\"client sent no "
		    "complete request in time\" answer=%s",
		    s->policy ? "close" :
		    session_word(s, shim.conf->redis_on_error));
	}
	session_silent(s, "client timeout");
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
	s->since = ev_now(shim.loop);
	s->pending = NULL;
	s->rule = NULL;
	s->asked = 0;
	s->policy = 0;
	s->used = 0;
	s->len = 0;
	s->buf = s->small;
	s->cap = shim.conf->max_request < SESSION_SMALL ?
	    shim.conf->max_request : SESSION_SMALL;
	shim.nsessions++;
	TAILQ_INSERT_TAIL(&sessions, s, entry);
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

unsigned
session_shed(unsigned max, double min_age)
{
	struct session	*s, *next;
	ev_tstamp	 now = ev_now(shim.loop);
	unsigned	 n = 0;

	/*
	 * Oldest first, and only those still reading: a client asking
	 * (Redis owes it an answer within redis.timeout) is never shed, and
	 * a live client's request arrives right after it connects.
	 */
	for (s = TAILQ_FIRST(&sessions); s != NULL && n < max; s = next) {
		next = TAILQ_NEXT(s, entry);
		if (now - s->since < min_age)
			break;		/* the rest are younger still */
		if (s->state != SESSION_READING)
			continue;
		shim.stats.shed++;
		session_silent(s, "shed: out of descriptors");
		n++;
	}
	return n;
}

void
session_shutdown_all(void)
{
	struct session	*s;
	int		 i;

	/* Clients waiting on Redis get the fail policy, not a bare EOF. */
	while ((s = TAILQ_FIRST(&sessions)) != NULL) {
		if (s->state == SESSION_ASKING)
			session_fail(s, FAIL_SHUTDOWN, "shutting down");
		else
			session_free(s, "shutting down");
	}
	for (i = 0; i < FAIL_MAX; i++)
		log_limit_stop(&warn_fail[i]);
	log_limit_stop(&warn_bad);
	log_limit_stop(&warn_timeout);
}
