/*
 * batch.c: from events to mails.
 *
 *   queue --digest_wait after the first event, or digest_max reached--> batch
 *
 *   PREPARE --> REPORT --> SEND --accepted--> ACK --> done: events freed
 *      ^        (if any)     |
 *      |                  refused, timed out
 *      +---- BACKOFF <-------+     (1/4 s doubling, capped at retry_max)
 *
 *   PREPARE, one pipeline: is each entry still ours (and reset its idle
 *   time), its top subjects, and (fixed windows) its count and TTL now.
 *   Entries another alerter took over are dropped from the mail.
 *   WAIT: Redis is down at PREPARE or ACK; the step is redone when it is
 *   back (batch_redis_ready).
 *
 * One batch is on its way at a time, so mails follow stream order, and a
 * relay that is down sees one message retried, not a pile.  The message is
 * composed once and resent unchanged (same Message-ID).  While a send is
 * failing batch_room() is 0: new entries are left in the stream, for
 * another alerter to take or for us once the relay is back, when they go
 * out together as one digest.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alerter.h"
#include "log.h"
#include "rconn.h"

#define BACKOFF_FIRST_MS	250
#define DRAIN_MAX_S		5.0	/* SIGTERM: let a send finish */
#define IDS_LOG_MAX		200	/* characters of ids in one log line */

enum batch_state {
	B_PREPARE,
	B_REPORT,
	B_SEND,
	B_BACKOFF,
	B_ACK,
	B_WAIT,
};

struct batch {
	struct event	**evs;
	size_t		 n;
	enum batch_state state;
	unsigned	 inflight;	/* Redis replies this step waits for */
	int		 failed;	/* one of them failed */
	int		 enriched;	/* subjects and counts fetched */
	int		 composed;
	int		 via_sendmail;	/* what msg was composed for */
	struct buf	 msg;
	char		*from;		/* envelope, fixed with the message */
	char		**rcpts;
	size_t		 nrcpts;
	int		 sent;		/* accepted: only the XACK is left */
	unsigned	 attempts;
	int64_t		 backoff_ms;
	ev_timer	 timer;
	struct smtp_job	*smtp;
	struct proc	*sendmail;
	struct report	*report;
};

static struct event_queue queue = TAILQ_HEAD_INITIALIZER(queue);
static size_t		 nqueued;
static ev_timer		 gather;
static int		 gather_due;	/* the queue has waited long enough */
static struct batch	*current;
static int		 failing;	/* the last send failed */
static void		(*drain_fn)(void);
static ev_timer		 drain_timer;

static void	prepare(struct batch *);
static void	ack(struct batch *);
static void	try_start(void);

/* "id,id,..." for a log line, cut short for big digests. */
static const char *
ids_str(char *dst, size_t len, const struct batch *b)
{
	size_t	 i, o = 0;
	int	 n;

	dst[0] = '\0';
	for (i = 0; i < b->n; i++) {
		if (o > IDS_LOG_MAX && i + 1 < b->n) {
			snprintf(dst + o, len - o, ",+%zu", b->n - i);
			break;
		}
		n = snprintf(dst + o, len - o, "%s%s", i ? "," : "",
		    b->evs[i]->id);
		if (n < 0 || (size_t)n >= len - o)
			break;
		o += (size_t)n;
	}
	return dst;
}

static void
envelope_free(struct batch *b)
{
	size_t	 i;

	free(b->from);
	for (i = 0; i < b->nrcpts; i++)
		free(b->rcpts[i]);
	free(b->rcpts);
	b->from = NULL;
	b->rcpts = NULL;
	b->nrcpts = 0;
}

static void
batch_destroy(struct batch *b)
{
	ev_timer_stop(alerter.loop, &b->timer);
	smtp_cancel(b->smtp);
	proc_cancel(b->sendmail);
	report_cancel(b->report);
	envelope_free(b);
	buf_free(&b->msg);
	free(b->evs);
	free(b);
}

static void
drain_done(void)
{
	void	(*fn)(void) = drain_fn;

	if (fn == NULL)
		return;
	drain_fn = NULL;
	ev_timer_stop(alerter.loop, &drain_timer);
	fn();
}

static void
batch_end(struct batch *b)
{
	current = NULL;
	failing = 0;
	batch_destroy(b);
	if (drain_fn != NULL) {
		drain_done();
		return;
	}
	try_start();
	events_kick();
}

static void
backoff_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct batch	*b = w->data;

	(void)loop;
	(void)revents;
	if (b->sent)
		ack(b);
	else
		prepare(b);
}

static void
retry_later(struct batch *b, int64_t ms)
{
	b->state = B_BACKOFF;
	ev_timer_stop(alerter.loop, &b->timer);
	ev_timer_set(&b->timer, ms / 1000., 0.);
	ev_timer_start(alerter.loop, &b->timer);
}

/* A Redis step failed: wait for the reconnect, or retry an error reply. */
static void
redis_trouble(struct batch *b)
{
	if (drain_fn != NULL) {
		drain_done();
		return;
	}
	if (!rconn_is_ready(events_redis())) {
		log_info("event=batch_waiting events=%zu step=%s reason=\"redis "
		    "is down\"", b->n, b->sent ? "ack" : "prepare");
		b->state = B_WAIT;
	} else
		retry_later(b, 1000);
}

static void
send_failed(struct batch *b, const char *why)
{
	const struct conf	*c = alerter.conf;
	char			 ids[IDS_LOG_MAX + 64], q[1024];

	b->attempts++;
	alerter.stats.mails_failed++;
	if (b->backoff_ms == 0)
		b->backoff_ms = BACKOFF_FIRST_MS;
	else
		b->backoff_ms *= 2;
	if (b->backoff_ms > c->alerts_retry_max_ms)
		b->backoff_ms = c->alerts_retry_max_ms;
	failing = 1;
	log_warn("event=mail_failed ids=%s events=%zu attempt=%u "
	    "reason=\"%s\" retry_in_ms=%lld", ids_str(ids, sizeof(ids), b),
	    b->n, b->attempts, log_quote(q, sizeof(q), why, strlen(why)),
	    (long long)b->backoff_ms);
	if (drain_fn != NULL) {
		drain_done();
		return;
	}
	retry_later(b, b->backoff_ms);
}

static void
sent(struct batch *b, int ok, const char *why)
{
	struct timespec	 now;
	long long	 now_ms, lat, worst = 0;
	char		 ids[IDS_LOG_MAX + 64];
	size_t		 i;

	if (!ok) {
		send_failed(b, why);
		return;
	}
	/* The id's time is Redis's clock at the crossing. */
	clock_gettime(CLOCK_REALTIME, &now);
	now_ms = (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
	for (i = 0; i < b->n; i++) {
		lat = now_ms - (long long)b->evs[i]->id_ms;
		if (lat > worst)
			worst = lat;
	}
	b->attempts++;
	alerter.stats.mails_sent++;
	alerter.stats.events_mailed += b->n;
	log_info("event=mail_sent ids=%s events=%zu recipients=%zu "
	    "attempts=%u via=%s latency_ms=%lld", ids_str(ids, sizeof(ids), b),
	    b->n, b->nrcpts, b->attempts, b->via_sendmail ? "sendmail" : "smtp",
	    worst);
	b->sent = 1;
	failing = 0;
	ack(b);
}

static void
smtp_done(void *arg, int ok, const char *why)
{
	struct batch	*b = arg;

	b->smtp = NULL;
	sent(b, ok, why);
}

static void
sendmail_done(void *arg, const char *what, const struct buf *out,
    int truncated)
{
	struct batch	*b = arg;
	char		 why[512];
	int		 ok;

	(void)truncated;
	b->sendmail = NULL;
	ok = sendmail_accepted(what, out, why, sizeof(why));
	sent(b, ok, why);
}

static int
envelope(struct batch *b, char *err, size_t errlen)
{
	const struct conf	*c = alerter.conf;
	char			 a[MAIL_ADDR_MAX + 1];
	size_t			 i, j, n = c->alerts_nto + c->alerts_ncc;

	envelope_free(b);
	if (mail_addr_spec(c->alerts_from, a, sizeof(a)) == -1 ||
	    (b->from = strdup(a)) == NULL ||
	    (b->rcpts = calloc(n, sizeof(*b->rcpts))) == NULL) {
		snprintf(err, errlen, "out of memory or bad alerts.from");
		return -1;
	}
	for (i = 0; i < n; i++) {
		if (mail_addr_spec(i < c->alerts_nto ? c->alerts_to[i] :
		    c->alerts_cc[i - c->alerts_nto], a, sizeof(a)) == -1)
			continue;	/* mail_check_conf refused those */
		for (j = 0; j < b->nrcpts; j++)
			if (strcasecmp(b->rcpts[j], a) == 0)
				break;
		if (j < b->nrcpts)
			continue;	/* in To and Cc: one RCPT is enough */
		if ((b->rcpts[b->nrcpts] = strdup(a)) == NULL) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		b->nrcpts++;
	}
	return 0;
}

static int
compose(struct batch *b, int via_sendmail, char *err, size_t errlen)
{
	struct mail_event	*m;
	struct event		*ev;
	size_t			 i;
	int			 rc;

	if ((m = calloc(b->n, sizeof(*m))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (i = 0; i < b->n; i++) {
		ev = b->evs[i];
		m[i].id = ev->id;
		m[i].rule = ev->rule;
		m[i].key = ev->key;
		m[i].key_len = ev->key_len;
		m[i].host = ev->host;
		m[i].count = ev->count;
		m[i].limit = ev->limit;
		m[i].window_ms = ev->window_ms;
		m[i].time = ev->time;
		m[i].algorithm = ev->algorithm;
		m[i].shadow = ev->shadow;
		m[i].count_now = ev->count_now;
		m[i].ttl_ms = ev->ttl_ms;
		m[i].subjects = ev->subjects;
		m[i].nsubjects = ev->nsubjects;
		if (ev->reported) {
			m[i].report = ev->report.data;
			m[i].report_len = ev->report.len;
			m[i].report_note = ev->report_note[0] != '\0' ?
			    ev->report_note : NULL;
		}
	}
	buf_reset(&b->msg);
	rc = mail_compose(&b->msg, alerter.conf, m, b->n, time(NULL),
	    !via_sendmail, err, errlen);
	free(m);
	if (rc == -1 || envelope(b, err, errlen) == -1)
		return -1;
	b->composed = 1;
	b->via_sendmail = via_sendmail;
	return 0;
}

static void
send_mail(struct batch *b)
{
	const struct conf	*c = alerter.conf;
	char			 err[512];
	int			 via = c->alerts_sendmail != NULL;

	b->state = B_SEND;
	if ((!b->composed || b->via_sendmail != via) &&
	    compose(b, via, err, sizeof(err)) == -1) {
		send_failed(b, err);
		return;
	}
	if (via)
		b->sendmail = sendmail_send(b->msg.data, b->msg.len,
		    sendmail_done, b, err, sizeof(err));
	else
		b->smtp = smtp_send(b->msg.data, b->msg.len, b->from,
		    b->rcpts, b->nrcpts, smtp_done, b, err, sizeof(err));
	if (b->sendmail == NULL && b->smtp == NULL)
		send_failed(b, err);
}

static void
report_done(void *arg)
{
	struct batch	*b = arg;

	b->report = NULL;
	send_mail(b);
}

/* PREPARE's replies are all in. */
static void
prepared(struct batch *b)
{
	char		 q[KEY_MAX * 4 + 1];
	size_t		 i, kept = 0;
	struct event	*ev;

	if (b->failed) {
		redis_trouble(b);
		return;
	}
	b->enriched = 1;
	for (i = 0; i < b->n; i++) {
		ev = b->evs[i];
		if (ev->owner != OWNER_OTHER) {
			b->evs[kept++] = ev;
			continue;
		}
		/* Taken over while we were cut off: it is the other's now. */
		alerter.stats.events_handed++;
		log_warn("event=event_handed_over id=%s key=\"%s\" "
		    "reason=\"another alerter claimed or acknowledged it\"",
		    ev->id, log_quote(q, sizeof(q), ev->key, ev->key_len));
		events_release(ev);
	}
	if (kept < b->n)
		b->composed = 0;
	b->n = kept;
	if (b->n == 0) {
		batch_end(b);
		return;
	}
	if (!b->composed && alerter.conf->alerts_report_command != NULL) {
		b->state = B_REPORT;
		if ((b->report = report_start(b->evs, b->n, report_done, b))
		    != NULL)
			return;
	}
	send_mail(b);
}

static void
step_done(struct batch *b)
{
	if (--b->inflight > 0 || alerter.stopping)
		return;
	if (b->state == B_PREPARE)
		prepared(b);
	else if (b->state == B_ACK) {
		if (b->failed) {
			redis_trouble(b);
			return;
		}
		while (b->n > 0)
			events_release(b->evs[--b->n]);
		batch_end(b);
	}
}

static void
own_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct batch	*b = priv;
	redisReply	*reply = r;

	(void)ac;
	if (reply == NULL)
		b->failed = 1;
	else if (events_own_parse(reply, b->evs, b->n) == -1) {
		log_warn("event=own_check_failed reason=\"%s\"",
		    reply->type == REDIS_REPLY_ERROR ? reply->str :
		    "unexpected reply");
		b->failed = 1;
	}
	step_done(b);
}

static void
subjects_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct event		*ev = priv;
	redisReply		*reply = r;
	const redisReply	*m, *s;
	struct mail_subject	*subj;
	size_t			 i, n;
	char			*text;

	(void)ac;
	if (reply == NULL) {
		ev->batch->failed = 1;
	} else if (reply->type == REDIS_REPLY_ARRAY &&
	    (subj = calloc(reply->elements / 2 + 1, sizeof(*subj))) != NULL) {
		/* [member, score, member, score, ...], highest first */
		for (i = n = 0; i + 1 < reply->elements; i += 2) {
			m = reply->element[i];
			s = reply->element[i + 1];
			if (m->type != REDIS_REPLY_STRING ||
			    s->type != REDIS_REPLY_STRING ||
			    (text = malloc(m->len + 1)) == NULL)
				continue;
			memcpy(text, m->str, m->len);
			text[m->len] = '\0';
			subj[n].text = text;
			subj[n].len = m->len;
			subj[n].count = (long long)strtod(s->str, NULL);
			n++;
		}
		for (i = 0; i < ev->nsubjects; i++)
			free((char *)ev->subjects[i].text);
		free(ev->subjects);
		ev->subjects = subj;
		ev->nsubjects = n;
	}
	/* An error reply (the key holds something else): no subjects. */
	step_done(ev->batch);
}

static void
count_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct event	*ev = priv;
	redisReply	*reply = r;
	char		*end;

	(void)ac;
	if (reply == NULL)
		ev->batch->failed = 1;
	else if (reply->type == REDIS_REPLY_STRING) {
		ev->count_now = strtoll(reply->str, &end, 10);
		if (*end != '\0' || ev->count_now < 0)
			ev->count_now = -1;
	} else
		ev->count_now = -1;	/* nil: expired */
	step_done(ev->batch);
}

static void
ttl_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct event	*ev = priv;
	redisReply	*reply = r;

	(void)ac;
	if (reply == NULL)
		ev->batch->failed = 1;
	else if (reply->type == REDIS_REPLY_INTEGER)
		ev->ttl_ms = reply->integer >= -2 ? reply->integer : -1;
	step_done(ev->batch);
}

static void
command(struct batch *b, redisCallbackFn *fn, void *priv, int argc,
    const char **argv, const size_t *argvlen)
{
	if (rconn_command(events_redis(), fn, priv, argc, argv, argvlen) == 0)
		b->inflight++;
	else
		b->failed = 1;
}

/* Top subjects, and the counter as it is now, for the mail. */
static void
enrich(struct batch *b, struct event *ev)
{
	const struct conf	*c = alerter.conf;
	const char		*argv[5];
	size_t			 argvlen[5];
	char			 stop[16];

	if (c->alerts_top_subjects > 0 && ev->subjects_key != NULL) {
		snprintf(stop, sizeof(stop), "%d", c->alerts_top_subjects - 1);
		argv[0] = "ZREVRANGE";
		argv[1] = ev->subjects_key;
		argv[2] = "0";
		argv[3] = stop;
		argv[4] = "WITHSCORES";
		argvlen[0] = 9;
		argvlen[1] = ev->subjects_key_len;
		argvlen[2] = 1;
		argvlen[3] = strlen(stop);
		argvlen[4] = 10;
		command(b, subjects_cb, ev, 5, argv, argvlen);
	}
	/* Only a fixed window's counter is a plain count. */
	if (ev->counter != NULL && (ev->algorithm == NULL ||
	    strcmp(ev->algorithm, "fixed") == 0)) {
		argv[1] = ev->counter;
		argvlen[1] = ev->counter_len;
		argv[0] = "GET";
		argvlen[0] = 3;
		command(b, count_cb, ev, 2, argv, argvlen);
		argv[0] = "PTTL";
		argvlen[0] = 4;
		command(b, ttl_cb, ev, 2, argv, argvlen);
	}
}

static void
prepare(struct batch *b)
{
	size_t	 i;

	b->state = B_PREPARE;
	b->failed = 0;
	if (!rconn_is_ready(events_redis())) {
		redis_trouble(b);
		return;
	}
	b->inflight = 1;	/* held until every command is queued */
	if (events_own(b->evs, b->n, own_cb, b) == 0)
		b->inflight++;
	else
		b->failed = 1;
	if (!b->enriched)
		for (i = 0; i < b->n; i++)
			enrich(b, b->evs[i]);
	step_done(b);
}

static void
ack_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct batch	*b = priv;
	redisReply	*reply = r;

	(void)ac;
	if (reply == NULL)
		b->failed = 1;
	else if (reply->type == REDIS_REPLY_ERROR) {
		log_warn("event=ack_failed reason=\"%s\"", reply->str);
		b->failed = 1;
	}
	step_done(b);
}

static void
ack(struct batch *b)
{
	b->state = B_ACK;
	b->failed = 0;
	if (!rconn_is_ready(events_redis())) {
		redis_trouble(b);
		return;
	}
	b->inflight = 1;
	if (events_ack(b->evs, b->n, ack_cb, b) == 0)
		b->inflight++;
	else
		b->failed = 1;
	step_done(b);
}

static void
try_start(void)
{
	const struct conf	*c = alerter.conf;
	struct batch		*b;
	struct event		*ev;
	size_t			 n;

	if (current != NULL || !gather_due || nqueued == 0 ||
	    drain_fn != NULL || alerter.stopping)
		return;
	n = nqueued < (size_t)c->alerts_digest_max ? nqueued :
	    (size_t)c->alerts_digest_max;
	if ((b = calloc(1, sizeof(*b))) == NULL ||
	    (b->evs = calloc(n, sizeof(*b->evs))) == NULL) {
		free(b);
		log_err("event=batch_failed reason=\"out of memory\" "
		    "action=retry");
		ev_timer_set(&gather, 1., 0.);
		ev_timer_start(alerter.loop, &gather);
		return;
	}
	while (b->n < n && (ev = TAILQ_FIRST(&queue)) != NULL) {
		TAILQ_REMOVE(&queue, ev, entry);
		nqueued--;
		ev->batch = b;
		b->evs[b->n++] = ev;
	}
	/* What is left has waited already: it goes next, without a wait. */
	gather_due = nqueued > 0;
	buf_init(&b->msg);
	ev_timer_init(&b->timer, backoff_cb, 0., 0.);
	b->timer.data = b;
	current = b;
	prepare(b);
	/* The queue has room again: the next mail gathers during this one. */
	events_kick();
}

static void
gather_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	gather_due = 1;
	try_start();
}

void
batch_add(struct event *ev)
{
	const struct conf	*c = alerter.conf;

	TAILQ_INSERT_TAIL(&queue, ev, entry);
	nqueued++;
	if (nqueued >= (size_t)c->alerts_digest_max) {
		/* Full: waiting longer cannot make the mail any bigger. */
		ev_timer_stop(alerter.loop, &gather);
		gather_due = 1;
		try_start();
	} else if (!gather_due && !ev_is_active(&gather)) {
		ev_timer_set(&gather, c->alerts_digest_wait_ms / 1000., 0.);
		ev_timer_start(alerter.loop, &gather);
	}
}

size_t
batch_room(void)
{
	size_t	 max = (size_t)alerter.conf->alerts_digest_max;

	if (failing || drain_fn != NULL || alerter.stopping)
		return 0;
	return nqueued < max ? max - nqueued : 0;
}

void
batch_redis_ready(void)
{
	struct batch	*b = current;

	if (b == NULL || b->state != B_WAIT || drain_fn != NULL)
		return;
	if (b->sent)
		ack(b);
	else
		prepare(b);
}

static void
drain_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	log_warn("event=shutdown note=\"a mail was still being sent; it is "
	    "sent again after a restart\"");
	drain_done();
}

void
batch_drain(void (*fn)(void))
{
	ev_timer_stop(alerter.loop, &gather);
	if (current == NULL || (current->state != B_SEND &&
	    current->state != B_ACK)) {
		fn();
		return;
	}
	drain_fn = fn;
	ev_timer_init(&drain_timer, drain_timer_cb, DRAIN_MAX_S, 0.);
	ev_timer_start(alerter.loop, &drain_timer);
}

void
batch_init(void)
{
	ev_timer_init(&gather, gather_cb, 0., 0.);
}

void
batch_free(void)
{
	struct event	*ev;

	ev_timer_stop(alerter.loop, &gather);
	ev_timer_stop(alerter.loop, &drain_timer);
	if (current != NULL)
		batch_destroy(current);
	current = NULL;
	/* The events themselves belong to events.c, which frees them. */
	while ((ev = TAILQ_FIRST(&queue)) != NULL)
		TAILQ_REMOVE(&queue, ev, entry);
	nqueued = 0;
}
