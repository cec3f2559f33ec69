/*
 * batch.c: the alerter's policy: from events to mails.  It calls down: the
 * store (stream.c, lookup.c), the composer (mail.c, pure), the report
 * command (report.c) and a transport (transport.h).  Nothing calls into
 * it but through callbacks it hands over: the stream_hooks it registers
 * (batch_event, batch_room, batch_ready), and the done() of each call it
 * makes (batch_step_done for the store, batch_report_done, batch_sent).
 *
 *   queue --digest_wait after the first event, or digest_max reached--> batch
 *
 *   PREPARE --> REPORT --> SEND --accepted--> ACK --> done: events freed
 *      ^        (if any)     |
 *      |                  refused, timed out
 *      +---- BACKOFF <-------+     (1/4 s doubling, capped at retry_max)
 *
 *   PREPARE, one pipeline: is each entry still ours (stream_own, which
 *   resets its idle time) and what the mail shows now (lookup_events).
 *   Entries another alerter took over are dropped from the mail.
 *   WAIT: Redis is down at PREPARE or ACK; the step is redone when it is
 *   back (batch_ready).
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
#include "mail.h"
#include "transport.h"

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
	unsigned	 inflight;	/* store calls this step waits for */
	int		 failed;	/* one of them failed */
	int		 looked_up;	/* subjects and counts fetched */
	int		 composed;
	const struct transport *via;	/* what msg was composed for */
	struct buf	 msg;
	char		*from;		/* envelope, fixed with the message */
	char		**rcpts;
	size_t		 nrcpts;
	int		 sent;		/* accepted: only the XACK is left */
	unsigned	 attempts;
	int64_t		 backoff_ms;
	ev_timer	 timer;
	struct transport_job *job;
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

static void	batch_prepare(struct batch *);
static void	batch_ack(struct batch *);
static void	batch_try_start(void);

/* "id,id,..." for a log line, cut short for big digests. */
static const char *
batch_ids(char *dst, size_t len, const struct batch *b)
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
batch_envelope_free(struct batch *b)
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
	if (b->job != NULL)
		b->via->cancel(b->job);
	report_cancel(b->report);
	batch_envelope_free(b);
	buf_free(&b->msg);
	free(b->evs);
	free(b);
}

static void
batch_drain_done(void)
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
		batch_drain_done();
		return;
	}
	batch_try_start();
	stream_kick();
}

static void
batch_backoff_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct batch	*b = w->data;

	(void)loop;
	(void)revents;
	if (b->sent)
		batch_ack(b);
	else
		batch_prepare(b);
}

static void
batch_retry_later(struct batch *b, int64_t ms)
{
	b->state = B_BACKOFF;
	ev_timer_stop(alerter.loop, &b->timer);
	ev_timer_set(&b->timer, ms / 1000., 0.);
	ev_timer_start(alerter.loop, &b->timer);
}

/* A Redis step failed: wait for the reconnect, or retry an error reply. */
static void
batch_redis_trouble(struct batch *b)
{
	if (drain_fn != NULL) {
		batch_drain_done();
		return;
	}
	if (!store_ready()) {
		log_info("event=batch_waiting events=%zu step=%s reason=\"redis "
		    "is down\"", b->n, b->sent ? "ack" : "prepare");
		b->state = B_WAIT;
	} else
		batch_retry_later(b, 1000);
}

static void
batch_send_failed(struct batch *b, const char *why)
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
	    "reason=\"%s\" retry_in_ms=%lld", batch_ids(ids, sizeof(ids), b),
	    b->n, b->attempts, log_quote(q, sizeof(q), why, strlen(why)),
	    (long long)b->backoff_ms);
	if (drain_fn != NULL) {
		batch_drain_done();
		return;
	}
	batch_retry_later(b, b->backoff_ms);
}

static void
batch_sent(void *arg, int ok, const char *why)
{
	struct batch	*b = arg;
	struct timespec	 now;
	long long	 now_ms, lat, worst = 0;
	char		 ids[IDS_LOG_MAX + 64];
	size_t		 i;

	b->job = NULL;
	if (!ok) {
		batch_send_failed(b, why);
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
	    "attempts=%u via=%s latency_ms=%lld", batch_ids(ids, sizeof(ids), b),
	    b->n, b->nrcpts, b->attempts, b->via->name, worst);
	b->sent = 1;
	failing = 0;
	batch_ack(b);
}

static int
batch_envelope(struct batch *b, char *err, size_t errlen)
{
	const struct conf	*c = alerter.conf;
	char			 a[MAIL_ADDR_MAX + 1];
	size_t			 i, j, n = c->alerts_nto + c->alerts_ncc;

	batch_envelope_free(b);
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
batch_compose(struct batch *b, const struct transport *via, char *err,
    size_t errlen)
{
	buf_reset(&b->msg);
	if (mail_compose(&b->msg, alerter.conf, b->evs, b->n, time(NULL),
	    via->crlf, err, errlen) == -1 ||
	    batch_envelope(b, err, errlen) == -1)
		return -1;
	b->composed = 1;
	b->via = via;
	return 0;
}

static void
batch_send(struct batch *b)
{
	const struct transport	*via = transport_for(alerter.conf);
	struct transport_msg	 m;
	char			 err[512];

	b->state = B_SEND;
	if (b->attempts > 0)
		alerter.stats.mails_retried++;
	if ((!b->composed || b->via != via) &&
	    batch_compose(b, via, err, sizeof(err)) == -1) {
		batch_send_failed(b, err);
		return;
	}
	m.data = b->msg.data;
	m.len = b->msg.len;
	m.from = b->from;
	m.rcpts = b->rcpts;
	m.nrcpts = b->nrcpts;
	if ((b->job = via->send(&m, batch_sent, b, err, sizeof(err))) == NULL)
		batch_send_failed(b, err);
}

static void
batch_report_done(void *arg)
{
	struct batch	*b = arg;

	b->report = NULL;
	batch_send(b);
}

/* PREPARE's replies are all in. */
static void
batch_prepared(struct batch *b)
{
	char		 q[KEY_MAX * 4 + 1];
	size_t		 i, kept = 0;
	struct event	*ev;

	if (b->failed) {
		batch_redis_trouble(b);
		return;
	}
	b->looked_up = 1;
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
		stream_release(ev);
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
		if ((b->report = report_start(b->evs, b->n, batch_report_done,
		    b)) != NULL)
			return;
	}
	batch_send(b);
}

/* A store call of the current step is back; ok 0: it failed. */
static void
batch_step_done(void *arg, int ok)
{
	struct batch	*b = arg;

	if (!ok)
		b->failed = 1;
	if (--b->inflight > 0 || alerter.stopping)
		return;
	if (b->state == B_PREPARE)
		batch_prepared(b);
	else if (b->state == B_ACK) {
		if (b->failed) {
			batch_redis_trouble(b);
			return;
		}
		while (b->n > 0)
			stream_release(b->evs[--b->n]);
		batch_end(b);
	}
}

static void
batch_prepare(struct batch *b)
{
	b->state = B_PREPARE;
	b->failed = 0;
	if (!store_ready()) {
		batch_redis_trouble(b);
		return;
	}
	b->inflight = 1;	/* held until every call is made */
	if (stream_own(b->evs, b->n, batch_step_done, b) == 0)
		b->inflight++;
	else
		b->failed = 1;
	if (!b->looked_up) {
		b->inflight++;
		if (lookup_events(b->evs, b->n, batch_step_done, b) == -1) {
			b->inflight--;
			b->failed = 1;
		}
	}
	batch_step_done(b, 1);
}

static void
batch_ack(struct batch *b)
{
	b->state = B_ACK;
	b->failed = 0;
	if (!store_ready()) {
		batch_redis_trouble(b);
		return;
	}
	b->inflight = 1;
	if (stream_ack(b->evs, b->n, batch_step_done, b) == 0)
		b->inflight++;
	else
		b->failed = 1;
	batch_step_done(b, 1);
}

static void
batch_try_start(void)
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
	ev_timer_init(&b->timer, batch_backoff_cb, 0., 0.);
	b->timer.data = b;
	current = b;
	batch_prepare(b);
	/* The queue has room again: the next mail gathers during this one. */
	stream_kick();
}

static void
batch_gather_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	gather_due = 1;
	batch_try_start();
}

/* stream_hooks.event: a new event, pending for us. */
static void
batch_event(struct event *ev)
{
	const struct conf	*c = alerter.conf;

	TAILQ_INSERT_TAIL(&queue, ev, entry);
	nqueued++;
	if (nqueued >= (size_t)c->alerts_digest_max) {
		/* Full: waiting longer cannot make the mail any bigger. */
		ev_timer_stop(alerter.loop, &gather);
		gather_due = 1;
		batch_try_start();
	} else if (!gather_due && !ev_is_active(&gather)) {
		ev_timer_set(&gather, c->alerts_digest_wait_ms / 1000., 0.);
		ev_timer_start(alerter.loop, &gather);
	}
}

/* stream_hooks.room: events worth reading now. */
static size_t
batch_room(void)
{
	size_t	 max = (size_t)alerter.conf->alerts_digest_max;

	if (failing || drain_fn != NULL || alerter.stopping)
		return 0;
	return nqueued < max ? max - nqueued : 0;
}

/* stream_hooks.ready: Redis is back; redo the step that waited. */
static void
batch_ready(void)
{
	struct batch	*b = current;

	if (b == NULL || b->state != B_WAIT || drain_fn != NULL)
		return;
	if (b->sent)
		batch_ack(b);
	else
		batch_prepare(b);
}

static void
batch_drain_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	log_warn("event=shutdown note=\"a mail was still being sent; it is "
	    "sent again after a restart\"");
	batch_drain_done();
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
	ev_timer_init(&drain_timer, batch_drain_timer_cb, DRAIN_MAX_S, 0.);
	ev_timer_start(alerter.loop, &drain_timer);
}

static const struct stream_hooks batch_hooks = {
	.event = batch_event,
	.room = batch_room,
	.ready = batch_ready,
};

int
batch_init(char *err, size_t errlen)
{
	ev_timer_init(&gather, batch_gather_cb, 0., 0.);
	return stream_init(&batch_hooks, err, errlen);
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
	/* The events themselves belong to stream.c, which frees them. */
	while ((ev = TAILQ_FIRST(&queue)) != NULL)
		TAILQ_REMOVE(&queue, ev, entry);
	nqueued = 0;
}
