/*
 * stream.c: the alerter's side of the event stream (events.stream), read
 * through the consumer group (events.group) as consumer alerts.consumer.
 *
 * Shards.  In a Redis Cluster the events are in one stream per shard
 * (common/keyspace.h), each read, claimed and acknowledged on its own node
 * with the same consumer group: everything below is per shard, and an
 * event remembers its shard.  Outside a Cluster there is one.
 *
 * Reading.  The group hands each entry to one consumer and keeps it in that
 * consumer's pending list until XACK.  After every (re)connect we first
 * re-read our own pending entries (from id 0): what this consumer read but
 * never got acknowledged, say before a crash.  Then new entries (">"), as
 * many as the policy has room for.  A wake-up from the channel, the poll
 * timer and the policy (when it has room again) all trigger a read, so a
 * lost wake-up only costs up to a poll period.  Reading waits for the
 * consumer name's lease (lease.c).
 *
 * Losses.  The shim caps the stream (events.stream_maxlen).  If every
 * alerter is away long enough, the cap trims entries no alerter ever read,
 * and XREADGROUP skips over the gap without a word: new entries are read
 * through scripts/read.lua, which counts them atomically with the read.
 * If the stream or the group is lost (deleted, a Redis restarted without
 * persistence), count.lua makes the group with the stream's first new
 * entry, from its start; if we find the group gone first, we make it from
 * the last entry we read, so nothing written since is skipped, and count
 * what we knew was still unread as lost.
 *
 * Claiming.  Entries pending for another consumer for longer than
 * alerts.claim_idle belong to an alerter that died: XAUTOCLAIM takes them.
 *
 * Keeping.  Every claim_idle / 3 the entries we hold get their idle time
 * reset through scripts/own.lua, which checks the owner and claims in one
 * step, so a live alerter's entries are not claimed even while its relay
 * is down and it keeps retrying.
 *
 * Stalls.  While Redis is down or refuses our reads or acknowledgements
 * (a replica after a failover answers READONLY), we say so every
 * STALL_LOG_S, and in the stats, until a read works again.
 *
 * Every event read is in the `held` tree until it is released, whatever
 * stage it is in, so one read twice (our pending list after a reconnect,
 * a claim of our own entry) is recognised and skipped.
 */
#include <errno.h>
#include <search.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alerter.h"
#include "keyspace.h"
#include "kv.h"
#include "log.h"
#include "rconn.h"
#include "script.h"

#define READ_MAX	1000	/* entries per XREADGROUP / XAUTOCLAIM */
#define OWN_MAX		1000	/* ids per own.lua call */
#define POLL_S		1.0	/* read even without a wake-up this often */
#define STALL_LOG_S	30.0	/* "cannot read" again after this */

static const struct stream_hooks *stream_hooks;
static char	*stream_group, *stream_consumer;	/* fixed until restart */

/* Events read and not yet released. */
static void	*held;
static size_t	 nheld;

/* One stream: reading (our own pending entries first), claiming. */
struct stream_shard {
	size_t		 i;
	char		*name;		/* fixed until restart */
	unsigned	 slot;
	/* reading */
	int		 busy;		/* a read in flight */
	int		 again;		/* a wake-up came during it */
	int		 pel;		/* the read in flight is of our own */
	size_t		 count;		/* what it asked for */
	int		 pel_done;
	char		 pel_cursor[48];
	size_t		 pel_resumed;
	char		 last_id[48];	/* the newest entry read, or "" */
	uint64_t	 last_ms, last_seq;
	long long	 unread;	/* left unread at the last read, -1 ? */
	ev_tstamp	 next_group;	/* NOGROUP: when to make it again */
	/* claiming dead alerters' entries */
	int		 cl_busy;
	char		 cl_cursor[48];
	ev_tstamp	 cl_next;
};

static struct stream_shard *shards;
static size_t		 nshards;
static int		 claim_broken;	/* XAUTOCLAIM unknown: Redis < 6.2 */
static int		 lost_unknown_logged;

/* Not reading: since when, why, and when we last said so. */
static struct {
	ev_tstamp	 since;		/* 0: reading fine */
	ev_tstamp	 logged;
	char		 why[256];
} stall;

static ev_timer	 poll_timer, keep_timer;

static void	stream_read(void);
static void	stream_read_shard(struct stream_shard *, size_t room);

static int
stream_event_cmp(const void *a, const void *b)
{
	const struct event	*x = a, *y = b;

	/* Two shards' streams can give the same id to two crossings. */
	if (x->shard != y->shard)
		return x->shard < y->shard ? -1 : 1;
	if (x->id_ms != y->id_ms)
		return x->id_ms < y->id_ms ? -1 : 1;
	if (x->id_seq != y->id_seq)
		return x->id_seq < y->id_seq ? -1 : 1;
	return 0;
}

static void
stream_event_free(void *p)
{
	struct event	*ev = p;
	size_t		 i;

	free(ev->rule);
	free(ev->host);
	free(ev->algorithm);
	free(ev->key);
	free(ev->counter);
	free(ev->subjects_key);
	for (i = 0; i < ev->nsubjects; i++)
		free(ev->subjects[i].text);
	free(ev->subjects);
	buf_free(&ev->report);
	free(ev);
}

/* Reading works (again): a stall ends. */
static void
stream_ok(void)
{
	if (stall.since != 0)
		log_info("event=reading_resumed stalled_s=%.1f",
		    ev_now(alerter.loop) - stall.since);
	stall.since = 0;
	stall.logged = 0;
}

/* Reading or acknowledging failed: said at once, then every STALL_LOG_S. */
static void
stream_stalled(const char *why)
{
	ev_tstamp	 now = ev_now(alerter.loop);
	char		 q[256];

	snprintf(stall.why, sizeof(stall.why), "%s", why);
	if (stall.since == 0)
		stall.since = now;
	if (stall.logged != 0 && now - stall.logged < STALL_LOG_S)
		return;
	stall.logged = now;
	log_err("event=not_reading held=%zu stalled_s=%.0f reason=\"%s\" "
	    "note=\"crossings wait in the stream; none is lost while it keeps "
	    "them\"", nheld, now - stall.since, log_quote(q, sizeof(q), why,
	    strlen(why)));
}

/* A stream id, "ms-seq", into its two numbers. */
static int
stream_parse_id(const char *s, size_t len, uint64_t *ms, uint64_t *seq)
{
	char	 tmp[48], *dash, *end;

	if (len == 0 || len >= sizeof(tmp) ||
	    strspn(s, "0123456789-") < len)
		return -1;
	memcpy(tmp, s, len);
	tmp[len] = '\0';
	if ((dash = strchr(tmp, '-')) == NULL || dash == tmp)
		return -1;
	*dash = '\0';
	errno = 0;
	*ms = strtoull(tmp, &end, 10);
	if (errno != 0 || *end != '\0')
		return -1;
	*seq = strtoull(dash + 1, &end, 10);
	if (errno != 0 || *end != '\0' || dash[1] == '\0')
		return -1;
	return 0;
}

static long long
stream_field_num(const redisReply *v)
{
	char		 tmp[32], *end;
	long long	 n;

	if (v->len == 0 || v->len >= sizeof(tmp))
		return -1;
	memcpy(tmp, v->str, v->len);
	tmp[v->len] = '\0';
	errno = 0;
	n = strtoll(tmp, &end, 10);
	if (errno != 0 || *end != '\0' || n < 0)
		return -1;
	return n;
}

/* A copy that is NUL-terminated even if the value holds a NUL. */
static int
stream_field_str(char **dst, const redisReply *v, size_t *len)
{
	char	*s;

	if ((s = malloc(v->len + 1)) == NULL)
		return -1;
	memcpy(s, v->str, v->len);
	s[v->len] = '\0';
	free(*dst);
	*dst = s;
	if (len != NULL)
		*len = v->len;
	return 0;
}

/*
 * An event from a stream entry, field by field as keyspace_fields[] names
 * them.  Fields the script did not write (an older script, a hand-made
 * entry) are shown as unknown: the crossing is still mailed.  NULL only
 * when out of memory or the id is not an id.
 */
static struct event *
stream_event_new(const redisReply *id, const redisReply *fields)
{
	struct event		*ev;
	const redisReply	*k, *v;
	size_t			 i;
	int			 oom = 0;

	if ((ev = calloc(1, sizeof(*ev))) == NULL)
		return NULL;
	if (stream_parse_id(id->str, id->len, &ev->id_ms, &ev->id_seq) == -1) {
		free(ev);
		return NULL;
	}
	memcpy(ev->id, id->str, id->len);
	ev->count = ev->limit = ev->window_ms = ev->time = ev->cost = -1;
	ev->count_now = ev->ttl_ms = -1;
	buf_init(&ev->report);
	for (i = 0; i + 1 < fields->elements; i += 2) {
		k = fields->element[i];
		v = fields->element[i + 1];
		if (k->type != REDIS_REPLY_STRING ||
		    v->type != REDIS_REPLY_STRING)
			continue;
		switch (keyspace_field(k->str, k->len)) {
		case KSF_RULE:
			oom |= stream_field_str(&ev->rule, v, NULL);
			break;
		case KSF_KEY:
			oom |= stream_field_str(&ev->key, v, &ev->key_len);
			break;
		case KSF_HOST:
			oom |= stream_field_str(&ev->host, v, NULL);
			break;
		case KSF_ALGORITHM:
			oom |= stream_field_str(&ev->algorithm, v, NULL);
			break;
		case KSF_COUNTER:
			oom |= stream_field_str(&ev->counter, v,
			    &ev->counter_len);
			break;
		case KSF_SUBJECTS:
			oom |= stream_field_str(&ev->subjects_key, v,
			    &ev->subjects_key_len);
			break;
		case KSF_COUNT:
			ev->count = stream_field_num(v);
			break;
		case KSF_LIMIT:
			ev->limit = stream_field_num(v);
			break;
		case KSF_WINDOW_MS:
			ev->window_ms = stream_field_num(v);
			break;
		case KSF_TIME:
			ev->time = stream_field_num(v);
			break;
		case KSF_COST:
			ev->cost = stream_field_num(v);
			break;
		case KSF_SHADOW:
			ev->shadow = stream_field_num(v) == 1;
			break;
		default:
			break;	/* a newer script's: not ours to read */
		}
	}
	if (ev->rule == NULL && (ev->rule = strdup("?")) == NULL)
		oom = 1;
	if (ev->host == NULL && (ev->host = strdup("?")) == NULL)
		oom = 1;
	if (ev->key == NULL && (ev->key = strdup("")) == NULL)
		oom = 1;
	if (oom) {
		stream_event_free(ev);
		return NULL;
	}
	return ev;
}

static void
stream_ignore_cb(redisAsyncContext *ac, void *r, void *priv)
{
	(void)ac;
	(void)r;
	(void)priv;
}

/* An entry trimmed off the stream (events.stream_maxlen) unmailed. */
static void
stream_event_lost(struct stream_shard *sh, const char *id, size_t len,
    int ack)
{
	const char	*argv[4] = { "XACK", sh->name, stream_group, id };
	size_t		 argvlen[4];
	char		 q[64];

	alerter.stats.events_lost++;
	log_err("event=event_lost id=%s reason=\"trimmed from the stream "
	    "before it was mailed: raise events.stream_maxlen\"",
	    log_quote(q, sizeof(q), id, len));
	if (!ack)
		return;
	argvlen[0] = 4;
	argvlen[1] = strlen(sh->name);
	argvlen[2] = strlen(stream_group);
	argvlen[3] = len;
	store_command(sh->slot, stream_ignore_cb, NULL, 4, argv, argvlen);
}

/*
 * Events just read or claimed, held back until a replica has the
 * delivery (stream_confirm): one per read or claim in flight.
 */
struct stream_fresh {
	struct stream_shard *sh;
	struct event	**evs;
	size_t		 n, cap;
	const char	*how;		/* "new", "resumed", "claimed" */
};

static int
stream_fresh_add(struct stream_fresh *f, struct event *ev)
{
	struct event	**evs;
	size_t		 cap;

	if (f->n == f->cap) {
		cap = f->cap ? f->cap * 2 : 16;
		if ((evs = reallocarray(f->evs, cap, sizeof(*evs))) == NULL)
			return -1;
		f->evs = evs;
		f->cap = cap;
	}
	f->evs[f->n++] = ev;
	return 0;
}

/* Parse entries into f: held from now on, not yet handed over. */
static void
stream_handle(const redisReply *entries, struct stream_fresh *f)
{
	const redisReply	*e;
	struct event		*ev;
	char			 q[64];
	size_t			 i;

	if (entries == NULL || entries->type != REDIS_REPLY_ARRAY)
		return;
	for (i = 0; i < entries->elements; i++) {
		e = entries->element[i];
		if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
		    e->element[0]->type != REDIS_REPLY_STRING) {
			log_warn("event=bad_entry reason=\"unexpected reply "
			    "shape\"");
			continue;
		}
		if (e->element[1]->type != REDIS_REPLY_ARRAY) {
			stream_event_lost(f->sh, e->element[0]->str,
			    e->element[0]->len, 1);
			continue;
		}
		if ((ev = stream_event_new(e->element[0], e->element[1])) ==
		    NULL) {
			/* Still pending: re-read at the next reconnect. */
			log_err("event=bad_entry id=%s reason=\"out of memory "
			    "or not a stream id\"", log_quote(q, sizeof(q),
			    e->element[0]->str, e->element[0]->len));
			continue;
		}
		ev->shard = f->sh->i;
		if (ev->id_ms > f->sh->last_ms || (ev->id_ms == f->sh->last_ms &&
		    ev->id_seq > f->sh->last_seq)) {
			f->sh->last_ms = ev->id_ms;
			f->sh->last_seq = ev->id_seq;
			snprintf(f->sh->last_id, sizeof(f->sh->last_id), "%s",
			    ev->id);
		}
		if (tfind(ev, &held, stream_event_cmp) != NULL) {
			stream_event_free(ev);	/* already on its way */
			continue;
		}
		if (tsearch(ev, &held, stream_event_cmp) == NULL ||
		    stream_fresh_add(f, ev) == -1) {
			log_err("event=bad_entry id=%s reason=\"out of "
			    "memory\"", ev->id);
			tdelete(ev, &held, stream_event_cmp);
			stream_event_free(ev);
			continue;
		}
		nheld++;
	}
}

/*
 * Confirm with WAIT that a replica has what this connection just wrote to
 * the group: a delivery (a read, a claim) or an acknowledgement.  In a
 * failover, Sentinel promotes a replica while the old master still takes
 * our writes for a moment; a delivery or an ack only the old master saw
 * would, after the switch, mail a crossing again.  So what is not
 * confirmed is not acted on, for at most CONFIRM_GRACE_S: a replica that
 * is away longer than a failover takes must not stop the alerts (then we
 * act, and say so).  Without replicas (a single Redis) there is nothing
 * to wait for.
 */
#define CONFIRM_WAIT_MS		"250"
#define CONFIRM_GRACE_S		5.0

typedef void	stream_confirm_fn(void *arg, int confirmed);

struct stream_confirm_call {
	stream_confirm_fn	*fn;
	void			*arg;
};

static ev_tstamp	 confirm_since;	/* unconfirmed since; 0: fine */
static struct log_limit	 warn_unconfirmed = {
	.event = "replica_unconfirmed", .warn = 1, .period = 60 };

static void
stream_confirm_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct stream_confirm_call	*call = priv;
	redisReply			*reply = r;
	ev_tstamp			 now = ev_now(alerter.loop);
	int				 ok = 0;

	(void)ac;
	if (reply != NULL && reply->type == REDIS_REPLY_INTEGER &&
	    reply->integer >= 1) {
		ok = 1;
		confirm_since = 0;
	} else if (reply != NULL) {
		if (confirm_since == 0)
			confirm_since = now;
		if (now - confirm_since >= CONFIRM_GRACE_S) {
			ok = 1;
			log_limited(alerter.loop, &warn_unconfirmed,
			    "for_s=%.0f note=\"no replica confirms the "
			    "group's deliveries and acks: going on without; a "
			    "failover now could mail a crossing twice\"",
			    now - confirm_since);
		}
	}
	call->fn(call->arg, ok);
	free(call);
}

static void
stream_confirm(unsigned slot, stream_confirm_fn *fn, void *arg)
{
	struct stream_confirm_call	*call;
	const char			*argv[] = { "WAIT", "1",
					    CONFIRM_WAIT_MS };

	if (store_replicas(slot) == 0) {
		fn(arg, 1);
		return;
	}
	if ((call = malloc(sizeof(*call))) == NULL) {
		fn(arg, 0);
		return;
	}
	call->fn = fn;
	call->arg = arg;
	if (store_command(slot, stream_confirm_cb, call, 3, argv, NULL) == -1) {
		free(call);
		fn(arg, 0);
	}
}

/* Confirmed: hand the events over to the policy. */
static void
stream_deliver(struct stream_fresh *f)
{
	struct event	*ev;
	char		 q[KEY_MAX * 4 + 1];
	size_t		 i;

	for (i = 0; i < f->n; i++) {
		ev = f->evs[i];
		alerter.stats.events_read++;
		if (strcmp(f->how, "claimed") == 0)
			alerter.stats.events_claimed++;
		if (strcmp(f->how, "new") != 0 || log_verbose())
			log_info("event=event_%s id=%s rule=%s key=\"%s\" "
			    "count=%lld", f->how, ev->id, ev->rule,
			    log_quote(q, sizeof(q), ev->key, ev->key_len),
			    ev->count);
		stream_hooks->event(ev);
	}
	f->n = 0;
}

/*
 * Not confirmed: let go of them.  They stay pending for us in Redis, so
 * our pending list is read again (from its start) by the next read: from
 * the new master after a failover, where only what a replica had counts.
 */
static void
stream_withdraw(struct stream_fresh *f)
{
	size_t	 i;

	for (i = 0; i < f->n; i++)
		stream_release(f->evs[i]);
	f->n = 0;
	f->sh->pel_done = 0;
	snprintf(f->sh->pel_cursor, sizeof(f->sh->pel_cursor), "0");
}

static void
stream_group_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct stream_shard	*sh = priv;
	redisReply		*reply = r;
	char			 err[256];

	(void)ac;
	if (reply == NULL)
		return;
	switch (keyspace_group_reply(reply, err, sizeof(err))) {
	case 1:
		alerter.stats.groups_made++;
		log_warn("event=group_created stream=%s group=%s from=%s",
		    sh->name, stream_group, sh->last_id[0] != '\0' ?
		    sh->last_id : "$");
		break;
	case 0:
		break;		/* count.lua or another alerter made it */
	default:
		log_warn("event=group_create_failed stream=%s group=%s "
		    "reason=\"%s\"", sh->name, stream_group, err);
	}
}

/*
 * The group is gone (XGROUP DESTROY, the stream deleted, a Redis without
 * persistence restarted).  Made again from the last entry we read: what
 * was written since is read, and what we had not read yet when it was
 * lost is counted as lost.  Never read anything: from "$", as a new
 * install starts, rather than mail a stream's whole history again.
 */
static void
stream_group_lost(struct stream_shard *sh)
{
	const char	*argv[KEYSPACE_GROUP_ARGC];

	if (sh->unread > 0) {
		alerter.stats.events_lost += (uint64_t)sh->unread;
		log_err("event=events_lost lost_at_least=%lld stream=%s "
		    "group=%s reason=\"the group or the stream was lost with "
		    "entries no alerter had read yet\"", sh->unread, sh->name,
		    stream_group);
	}
	sh->unread = 0;
	log_warn("event=group_missing stream=%s group=%s action=create",
	    sh->name, stream_group);
	keyspace_group_argv(sh->name, stream_group, sh->last_id[0] != '\0' ?
	    sh->last_id : "$", argv);
	store_command(sh->slot, stream_group_cb, sh, KEYSPACE_GROUP_ARGC, argv,
	    NULL);
}

/* XREADGROUP's reply: [[stream, entries]], or nil when nothing is new. */
static const redisReply *
stream_entries(const redisReply *reply)
{
	const redisReply	*s;

	if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1)
		return NULL;
	s = reply->element[0];
	if (s->type != REDIS_REPLY_ARRAY || s->elements != 2 ||
	    s->element[1]->type != REDIS_REPLY_ARRAY)
		return NULL;
	return s->element[1];
}

/*
 * read.lua's reply: log what the group lost to trimming, note what was
 * left unread, and return the XREADGROUP reply inside, or NULL if the
 * reply is not what it sends.
 */
static const redisReply *
stream_read_lost(struct stream_shard *sh, const redisReply *reply)
{
	long long	 lost, lag;

	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
	    reply->element[0]->type != REDIS_REPLY_INTEGER ||
	    reply->element[2]->type != REDIS_REPLY_INTEGER)
		return NULL;
	lost = reply->element[0]->integer;
	lag = reply->element[2]->integer;
	if (lost > 0) {
		alerter.stats.events_lost += (uint64_t)lost;
		log_err("event=events_trimmed lost=%lld stream=%s group=%s "
		    "reason=\"trimmed from the stream before any alerter read "
		    "them: raise events.stream_maxlen\"", lost, sh->name,
		    stream_group);
	} else if (lost < 0 && !lost_unknown_logged++)
		log_warn("event=events_trimmed_unknown stream=%s group=%s "
		    "reason=\"the group keeps no read counter (set by "
		    "XGROUP SETID?), or XINFO is refused: entries trimmed "
		    "unread cannot be counted\"", sh->name, stream_group);
	sh->unread = lag;
	return reply->element[1];
}

static void
stream_read_confirmed(void *arg, int ok)
{
	struct stream_fresh	*f = arg;
	struct stream_shard	*sh = f->sh;

	if (ok && !alerter.stopping)
		stream_deliver(f);
	else
		stream_withdraw(f);
	free(f->evs);
	free(f);
	sh->busy = 0;
	if (ok && sh->again)
		stream_read();
}

static void
stream_read_reply(struct stream_shard *sh, redisReply *reply)
{
	const redisReply	*entries, *last;
	struct stream_fresh	*f;
	size_t			 n;

	if (reply == NULL || alerter.stopping) {
		sh->busy = 0;	/* the connection failed: connected() restarts */
		if (!alerter.stopping)
			stream_stalled("redis connection failed");
		return;
	}
	if (reply->type == REDIS_REPLY_ERROR) {
		sh->busy = 0;
		alerter.stats.read_errors++;
		if (strncmp(reply->str, "NOGROUP", 7) == 0) {
			if (ev_now(alerter.loop) >= sh->next_group) {
				sh->next_group = ev_now(alerter.loop) + POLL_S;
				stream_group_lost(sh);
				stream_read();
			}
			return;
		}
		stream_stalled(reply->str);
		return;
	}
	if (!sh->pel && (reply = (redisReply *)stream_read_lost(sh, reply)) ==
	    NULL) {
		sh->busy = 0;
		alerter.stats.read_errors++;
		stream_stalled("unexpected reply shape from read.lua");
		return;
	}
	stream_ok();
	entries = stream_entries(reply);
	n = entries != NULL ? entries->elements : 0;
	if (!sh->pel && sh->unread > 0)
		sh->unread = sh->unread > (long long)n ? sh->unread -
		    (long long)n : 0;
	if (sh->pel) {
		if (n == 0) {
			sh->pel_done = 1;
			if (sh->pel_resumed > 0)
				log_info("event=resumed stream=%s pending=%zu",
				    sh->name, sh->pel_resumed);
		} else {
			last = entries->element[n - 1];
			if (last->type == REDIS_REPLY_ARRAY &&
			    last->elements == 2 &&
			    last->element[0]->type == REDIS_REPLY_STRING &&
			    last->element[0]->len < sizeof(sh->pel_cursor)) {
				memcpy(sh->pel_cursor, last->element[0]->str,
				    last->element[0]->len);
				sh->pel_cursor[last->element[0]->len] = '\0';
			} else
				sh->pel_done = 1;	/* cannot go on */
			sh->pel_resumed += n;
		}
		sh->again = 1;	/* on to the rest, or to new ones */
	} else if (n >= sh->count)
		sh->again = 1;	/* a full read may have left more */
	/* Still "busy" until confirmed: kicks only set sh->again. */
	if ((f = calloc(1, sizeof(*f))) == NULL) {
		sh->busy = 0;
		sh->pel_done = 0;
		snprintf(sh->pel_cursor, sizeof(sh->pel_cursor), "0");
		return;
	}
	f->sh = sh;
	f->how = sh->pel ? "resumed" : "new";
	stream_handle(entries, f);
	stream_confirm(sh->slot, stream_read_confirmed, f);
}

static void
stream_read_cb(void *priv, redisReply *reply)
{
	stream_read_reply(priv, reply);
}

static void
stream_xread_cb(redisAsyncContext *ac, void *r, void *priv)
{
	(void)ac;
	stream_read_reply(priv, r);
}

static void
stream_read_shard(struct stream_shard *sh, size_t room)
{
	const char	*argv[9];
	char		 count[24];
	int		 rc;

	if (sh->busy) {
		sh->again = 1;
		return;
	}
	if (!sh->pel_done)
		room = READ_MAX;
	else if (room == 0)
		return;		/* the policy calls stream_kick() later */
	if (room > READ_MAX)
		room = READ_MAX;
	snprintf(count, sizeof(count), "%zu", room);
	if (sh->pel_done) {
		argv[0] = "1";
		argv[1] = sh->name;
		argv[2] = stream_group;
		argv[3] = stream_consumer;
		argv[4] = count;
		rc = store_script(sh->slot, SCRIPT_READ, stream_read_cb, sh, 5,
		    argv);
	} else {
		argv[0] = "XREADGROUP";
		argv[1] = "GROUP";
		argv[2] = stream_group;
		argv[3] = stream_consumer;
		argv[4] = "COUNT";
		argv[5] = count;
		argv[6] = "STREAMS";
		argv[7] = sh->name;
		argv[8] = sh->pel_cursor;
		rc = store_command(sh->slot, stream_xread_cb, sh, 9, argv, NULL);
	}
	if (rc == 0) {
		sh->busy = 1;
		sh->again = 0;
		sh->pel = !sh->pel_done;
		sh->count = room;
	}
}

/*
 * Every shard, each with its share of the room the policy has (at least
 * one entry each: a shard is never starved by the others).
 */
static void
stream_read(void)
{
	size_t	 i, room, share;

	if (alerter.stopping || !store_ready() || !lease_held())
		return;
	room = stream_hooks->room();
	share = nshards > 1 ? (room + nshards - 1) / nshards : room;
	for (i = 0; i < nshards; i++)
		stream_read_shard(&shards[i], room == 0 ? 0 : share);
}

static double
stream_claim_interval(void)
{
	double	 s = alerter.conf->alerts_claim_idle_ms / 4000.;

	return s < 0.25 ? 0.25 : s > 30 ? 30 : s;
}

static void	stream_claim_shard(struct stream_shard *);

static void
stream_claim_confirmed(void *arg, int ok)
{
	struct stream_fresh	*f = arg;
	struct stream_shard	*sh = f->sh;

	if (ok && !alerter.stopping)
		stream_deliver(f);
	else
		stream_withdraw(f);	/* ours now: our pending list has them */
	free(f->evs);
	free(f);
	sh->cl_busy = 0;
	if (ok && strcmp(sh->cl_cursor, "0-0") != 0)
		stream_claim_shard(sh);	/* more of the pending list */
	else
		sh->cl_next = ev_now(alerter.loop) + stream_claim_interval();
}

static void
stream_claim_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct stream_shard	*sh = priv;
	redisReply		*reply = r;
	const redisReply	*cur, *del;
	struct stream_fresh	*f;
	size_t			 i;

	(void)ac;
	sh->cl_busy = 0;
	if (reply == NULL || alerter.stopping)
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		if (strstr(reply->str, "unknown command") != NULL) {
			claim_broken = 1;
			log_err("event=claim_unavailable reason=\"XAUTOCLAIM "
			    "needs Redis 6.2: events of dead alerters are not "
			    "taken over\"");
		} else
			log_warn("event=claim_failed stream=%s reason=\"%s\"",
			    sh->name, reply->str);
		sh->cl_next = ev_now(alerter.loop) + stream_claim_interval();
		return;
	}
	/* [next cursor, entries, deleted ids (Redis 7)] */
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2 ||
	    (cur = reply->element[0])->type != REDIS_REPLY_STRING ||
	    cur->len >= sizeof(sh->cl_cursor)) {
		log_warn("event=claim_failed stream=%s reason=\"unexpected "
		    "reply\"", sh->name);
		sh->cl_next = ev_now(alerter.loop) + stream_claim_interval();
		return;
	}
	memcpy(sh->cl_cursor, cur->str, cur->len);
	sh->cl_cursor[cur->len] = '\0';
	if (reply->elements > 2 &&
	    (del = reply->element[2])->type == REDIS_REPLY_ARRAY)
		for (i = 0; i < del->elements; i++)
			if (del->element[i]->type == REDIS_REPLY_STRING)
				stream_event_lost(sh, del->element[i]->str,
				    del->element[i]->len, 0);
	if ((f = calloc(1, sizeof(*f))) == NULL) {
		sh->cl_next = ev_now(alerter.loop) + stream_claim_interval();
		return;
	}
	sh->cl_busy = 1;	/* until confirmed */
	f->sh = sh;
	f->how = "claimed";
	stream_handle(reply->element[1], f);
	stream_confirm(sh->slot, stream_claim_confirmed, f);
}

static void
stream_claim_shard(struct stream_shard *sh)
{
	const char	*argv[8];
	char		 idle[24], count[24];
	size_t		 room;

	if (sh->cl_busy || !sh->pel_done || ev_now(alerter.loop) < sh->cl_next)
		return;
	if ((room = stream_hooks->room()) == 0)
		return;
	if (room > READ_MAX)
		room = READ_MAX;
	snprintf(idle, sizeof(idle), "%lld",
	    (long long)alerter.conf->alerts_claim_idle_ms);
	snprintf(count, sizeof(count), "%zu", room);
	argv[0] = "XAUTOCLAIM";
	argv[1] = sh->name;
	argv[2] = stream_group;
	argv[3] = stream_consumer;
	argv[4] = idle;
	argv[5] = sh->cl_cursor;
	argv[6] = "COUNT";
	argv[7] = count;
	if (store_command(sh->slot, stream_claim_cb, sh, 8, argv, NULL) == 0)
		sh->cl_busy = 1;
}

static void
stream_claim(void)
{
	size_t	 i;

	if (alerter.stopping || !store_ready() || !lease_held() ||
	    claim_broken)
		return;
	for (i = 0; i < nshards; i++)
		stream_claim_shard(&shards[i]);
}

/*
 * One call on behalf of the policy, cut per shard (each its own stream
 * and node): done(arg, ok) once every part is back, ok if all were.
 */
struct stream_call {
	struct event	**evs;		/* the policy's, stable meanwhile */
	size_t		 n;
	stream_done_fn	*done;
	void		*arg;
	unsigned	 parts;		/* in flight */
	int		 failed;
};

struct stream_part {
	struct stream_call	*call;
	struct stream_shard	*sh;
	struct event		**evs;	/* this shard's, a copy */
	size_t			 n;
};

static void
stream_call_part_done(struct stream_part *p, int ok)
{
	struct stream_call	*call = p->call;

	free(p->evs);
	free(p);
	if (!ok)
		call->failed = 1;
	if (--call->parts > 0)
		return;
	if (call->done != NULL)
		call->done(call->arg, !call->failed);
	free(call);
}

/*
 * Make and send the parts of a call: one per shard that has events
 * (digest_max is at most OWN_MAX, so one own.lua call each).  send(part)
 * queues one, or returns -1.
 */
static void
stream_call_split(struct stream_call *call, int (*send)(struct stream_part *))
{
	struct stream_part	*p;
	size_t			 s, i, k;

	call->parts = 1;	/* held until every part is sent */
	for (s = 0; s < nshards; s++) {
		for (i = k = 0; i < call->n; i++)
			k += call->evs[i]->shard == s;
		if (k == 0)
			continue;
		if ((p = calloc(1, sizeof(*p))) == NULL ||
		    (p->evs = calloc(k, sizeof(*p->evs))) == NULL) {
			free(p);
			call->failed = 1;
			continue;
		}
		p->call = call;
		p->sh = &shards[s];
		for (i = 0; i < call->n; i++)
			if (call->evs[i]->shard == s)
				p->evs[p->n++] = call->evs[i];
		call->parts++;
		if (send(p) == -1) {
			call->parts--;
			free(p->evs);
			free(p);
			call->failed = 1;
		}
	}
	if (--call->parts == 0) {
		if (call->done != NULL)
			call->done(call->arg, !call->failed);
		free(call);
	}
}

static struct stream_call *
stream_call_new(struct event **evs, size_t n, stream_done_fn *done,
    void *arg)
{
	struct stream_call	*call;

	if (n == 0 || n > OWN_MAX ||
	    (call = calloc(1, sizeof(*call))) == NULL)
		return NULL;
	call->evs = evs;
	call->n = n;
	call->done = done;
	call->arg = arg;
	return call;
}

static int
stream_own_parse(const redisReply *reply, struct event **evs, size_t n)
{
	size_t	 i;

	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != n)
		return -1;
	for (i = 0; i < n; i++)
		if (reply->element[i]->type != REDIS_REPLY_INTEGER)
			return -1;
	for (i = 0; i < n; i++)
		switch (reply->element[i]->integer) {
		case 1:
			evs[i]->owner = OWNER_US;
			break;
		case 2:
			evs[i]->owner = OWNER_NOBODY;
			break;
		default:
			evs[i]->owner = OWNER_OTHER;
			break;
		}
	return 0;
}

static void
stream_own_cb(void *priv, redisReply *reply)
{
	struct stream_part	*p = priv;
	int			 ok = 0;

	if (reply != NULL && stream_own_parse(reply, p->evs, p->n) == 0)
		ok = 1;
	else if (reply != NULL) {
		alerter.stats.read_errors++;
		stream_stalled(reply->type == REDIS_REPLY_ERROR ? reply->str :
		    "unexpected reply from own.lua");
	}
	stream_call_part_done(p, ok);
}

/* own.lua for one shard's events, or the keepalive's ids. */
static int
stream_own_send(struct stream_shard *sh, struct event **evs, size_t n,
    script_reply_fn *fn, void *priv)
{
	const char	**argv;
	size_t		 i;
	int		 rc;

	if ((argv = calloc(n + 4, sizeof(*argv))) == NULL)
		return -1;
	argv[0] = "1";
	argv[1] = sh->name;
	argv[2] = stream_group;
	argv[3] = stream_consumer;
	for (i = 0; i < n; i++)
		argv[4 + i] = evs[i]->id;
	/* script_run() copies the ids into its command. */
	rc = store_script(sh->slot, SCRIPT_OWN, fn, priv, (int)(n + 4), argv);
	free(argv);
	return rc;
}

static int
stream_own_part(struct stream_part *p)
{
	return stream_own_send(p->sh, p->evs, p->n, stream_own_cb, p);
}

int
stream_own(struct event **evs, size_t n, stream_done_fn *done, void *arg)
{
	struct stream_call	*call;

	if ((call = stream_call_new(evs, n, done, arg)) == NULL)
		return -1;
	stream_call_split(call, stream_own_part);
	return 0;
}

static void
stream_ack_confirmed(void *arg, int ok)
{
	stream_call_part_done(arg, ok);
}

static void
stream_ack_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct stream_part	*p = priv;
	redisReply		*reply = r;

	(void)ac;
	if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
		if (reply != NULL) {
			alerter.stats.read_errors++;
			log_warn("event=ack_failed stream=%s reason=\"%s\"",
			    p->sh->name, reply->str);
			stream_stalled(reply->str);
		}
		stream_call_part_done(p, 0);
		return;
	}
	/* Done only once a replica has the ack too (see stream_confirm). */
	stream_confirm(p->sh->slot, stream_ack_confirmed, p);
}

static int
stream_ack_part(struct stream_part *p)
{
	const char	**argv;
	size_t		 i;
	int		 rc;

	if ((argv = calloc(p->n + 3, sizeof(*argv))) == NULL)
		return -1;
	argv[0] = "XACK";
	argv[1] = p->sh->name;
	argv[2] = stream_group;
	for (i = 0; i < p->n; i++)
		argv[3 + i] = p->evs[i]->id;
	rc = store_command(p->sh->slot, stream_ack_cb, p, (int)(p->n + 3),
	    argv, NULL);
	free(argv);
	return rc;
}

int
stream_ack(struct event **evs, size_t n, stream_done_fn *done, void *arg)
{
	struct stream_call	*call;

	if ((call = stream_call_new(evs, n, done, arg)) == NULL)
		return -1;
	stream_call_split(call, stream_ack_part);
	return 0;
}

void
stream_release(struct event *ev)
{
	if (tdelete(ev, &held, stream_event_cmp) != NULL)
		nheld--;
	stream_event_free(ev);
}

void
stream_kick(void)
{
	stream_read();
}

void
stream_wakeup(void)
{
	stream_read();
}

/* The keepalive's reply: only counted; the policy acts on ownership. */
static void
stream_keep_cb(void *priv, redisReply *reply)
{
	size_t	 i, other = 0;

	(void)priv;
	if (reply == NULL || alerter.stopping)
		return;
	if (reply->type != REDIS_REPLY_ARRAY) {
		log_warn("event=keepalive_failed reason=\"%s\"",
		    reply->type == REDIS_REPLY_ERROR ? reply->str :
		    "unexpected reply");
		return;
	}
	for (i = 0; i < reply->elements; i++)
		if (reply->element[i]->type == REDIS_REPLY_INTEGER &&
		    reply->element[i]->integer == 0)
			other++;
	if (other > 0)
		log_warn("event=keepalive held=%zu taken_over=%zu",
		    reply->elements, other);
}

struct stream_walk {
	struct event	**evs;
	size_t		 n, cap;
};

static void
stream_collect(const void *node, VISIT which, void *arg)
{
	struct stream_walk	*w = arg;

	if ((which == postorder || which == leaf) && w->n < w->cap)
		w->evs[w->n++] = *(struct event *const *)node;
}

/*
 * Every claim_idle / 3: reset the idle time of what we hold, so that no
 * other alerter claims it while our relay is down and we retry; per
 * shard, OWN_MAX ids a call.
 */
static void
stream_keep_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct stream_walk	 walk;
	struct event		**mine;
	size_t			 s, i, k;

	(void)loop;
	(void)w;
	(void)revents;
	if (!store_ready() || nheld == 0)
		return;
	walk.cap = nheld;
	walk.n = 0;
	if ((walk.evs = calloc(walk.cap, sizeof(*walk.evs))) == NULL)
		return;
	if ((mine = calloc(walk.cap, sizeof(*mine))) == NULL) {
		free(walk.evs);
		return;
	}
	twalk_r(held, stream_collect, &walk);
	for (s = 0; s < nshards; s++) {
		for (i = k = 0; i < walk.n; i++)
			if (walk.evs[i]->shard == s)
				mine[k++] = walk.evs[i];
		for (i = 0; i < k; i += OWN_MAX)
			stream_own_send(&shards[s], mine + i, k - i < OWN_MAX ?
			    k - i : OWN_MAX, stream_keep_cb, NULL);
	}
	free(mine);
	free(walk.evs);
}

static void
stream_keep_schedule(void)
{
	double	 s = alerter.conf->alerts_claim_idle_ms / 3000.;

	ev_timer_stop(alerter.loop, &keep_timer);
	ev_timer_set(&keep_timer, s, s);
	ev_timer_start(alerter.loop, &keep_timer);
}

static void
stream_poll_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	if (!store_ready() && !alerter.stopping)
		stream_stalled("redis is down");
	else if (stall.since != 0)
		stream_stalled(stall.why);
	lease_kick();
	stream_read();
	stream_claim();
}

void
stream_connected(void)
{
	size_t	 i;

	/*
	 * Our own pending entries first: a previous run may have left some.
	 * A read or claim still in flight is left alone: in a Cluster this
	 * is one master (re)connected while the others' replies are on
	 * their way, and each reply clears its own busy flag (a lost
	 * connection's with a NULL reply).  Clearing them here sent a
	 * second read beside the first, and a reply was then taken for
	 * the other kind ("unexpected reply shape from read.lua").
	 */
	for (i = 0; i < nshards; i++) {
		shards[i].pel_done = 0;
		shards[i].pel_resumed = 0;
		snprintf(shards[i].pel_cursor, sizeof(shards[i].pel_cursor),
		    "0");
	}
	lease_kick();		/* reading starts once the lease is ours */
	stream_hooks->ready();
}

int
stream_init(const struct stream_hooks *hooks, char *err, size_t errlen)
{
	const struct conf		*c = alerter.conf;
	const struct keyspace_shards	*ks = c->shards;
	size_t				 i;

	stream_hooks = hooks;
	if ((stream_group = strdup(c->events_group)) == NULL ||
	    (stream_consumer = strdup(c->alerts_consumer)) == NULL ||
	    (shards = calloc(ks->n, sizeof(*shards))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (i = 0; i < ks->n; i++) {
		shards[i].i = i;
		shards[i].slot = ks->slot[i];
		if ((shards[i].name = strdup(ks->stream[i])) == NULL) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		nshards++;
		snprintf(shards[i].cl_cursor, sizeof(shards[i].cl_cursor),
		    "0-0");
		snprintf(shards[i].pel_cursor, sizeof(shards[i].pel_cursor),
		    "0");
		shards[i].cl_next = ev_now(alerter.loop) +
		    stream_claim_interval();
	}
	ev_timer_init(&poll_timer, stream_poll_cb, POLL_S, POLL_S);
	ev_timer_start(alerter.loop, &poll_timer);
	ev_timer_init(&keep_timer, stream_keep_timer_cb, 0., 0.);
	stream_keep_schedule();
	return 0;
}

void
stream_reload(const struct conf *old)
{
	const struct conf	*c = alerter.conf;

	if (strcmp(old->events_stream, c->events_stream) != 0 ||
	    old->events_shards != c->events_shards ||
	    strcmp(stream_group, c->events_group) != 0 ||
	    strcmp(stream_consumer, c->alerts_consumer) != 0)
		log_warn("event=reload note=\"events.stream, events.shards, "
		    "events.group and alerts.consumer take effect at "
		    "restart\"");
	if (old->alerts_claim_idle_ms != c->alerts_claim_idle_ms)
		stream_keep_schedule();
}

void
stream_stats(struct kv *kv)
{
	kv_u64(kv, "reading", store_ready() && lease_held() &&
	    stall.since == 0);
	kv_u64(kv, "stalled_s", stall.since != 0 ?
	    (uint64_t)(ev_now(alerter.loop) - stall.since) : 0);
	kv_u64(kv, "held", nheld);
	kv_u64(kv, "streams", nshards);
}

void
stream_free(void)
{
	size_t	 i;

	ev_timer_stop(alerter.loop, &poll_timer);
	ev_timer_stop(alerter.loop, &keep_timer);
	log_limit_stop(&warn_unconfirmed);
	tdestroy(held, stream_event_free);
	held = NULL;
	nheld = 0;
	for (i = 0; i < nshards; i++)
		free(shards[i].name);
	free(shards);
	shards = NULL;
	nshards = 0;
	free(stream_group);
	free(stream_consumer);
	stream_group = stream_consumer = NULL;
}
