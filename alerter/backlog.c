/*
 * backlog.c: how far behind the alerters are, for the metrics page: the
 * crossings not yet mailed (the group's pending entries, read by some
 * alerter but not acknowledged, plus the entries no alerter has read
 * yet) and the age of the oldest of them.
 *
 * Sampled every BACKLOG_EVERY_S from Redis, per stream shard: XINFO
 * GROUPS (pending, last-delivered-id, lag), then XPENDING's summary (the
 * oldest pending id) and one XRANGE past the last delivered id (the
 * oldest unread).  An entry id starts with Redis's clock in ms, so the
 * age needs no field.  A round counts only once every shard answered;
 * while Redis is away the last complete round stays (redis_up says so).
 * Every alerter samples the same group, so each reports the whole
 * backlog; that is three commands per shard every 5 s.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alerter.h"
#include "keyspace.h"
#include "log.h"

#define BACKLOG_EVERY_S	5.

struct backlog_shard {
	uint64_t	 pending, lag;
	uint64_t	 oldest_ms;		/* 0: none */
	int		 answers;		/* of the three this round */
	int		 failed;
};

struct backlog_ask {
	unsigned	 round;
	size_t		 shard;
	int		 what;			/* 0 groups, 1 pending, 2 range */
};

static struct backlog_shard	*shards;
static size_t			 nshards;
static unsigned			 round_no;
static size_t			 round_left;	/* shards yet to answer */
static ev_timer			 backlog_timer;
static struct backlog		 last;		/* the last complete round */
static int			 backlog_live;

static void	backlog_ask(size_t, int, const char *);

/* "1700000000000-0" -> 1700000000000; 0 when it is not an id. */
static uint64_t
backlog_id_ms(const char *id, size_t len)
{
	uint64_t	 ms = 0;
	size_t		 i;

	for (i = 0; i < len && id[i] >= '0' && id[i] <= '9'; i++)
		ms = ms * 10 + (uint64_t)(id[i] - '0');
	return i > 0 ? ms : 0;
}

static void
backlog_oldest(struct backlog_shard *sh, uint64_t ms)
{
	if (ms != 0 && (sh->oldest_ms == 0 || ms < sh->oldest_ms))
		sh->oldest_ms = ms;
}

static void
backlog_round_done(void)
{
	struct backlog	 b;
	size_t		 i;

	memset(&b, 0, sizeof(b));
	for (i = 0; i < nshards; i++) {
		if (shards[i].failed)
			return;			/* keep the last whole one */
		b.pending += shards[i].pending + shards[i].lag;
		if (shards[i].oldest_ms != 0 && (b.oldest_ms == 0 ||
		    shards[i].oldest_ms < b.oldest_ms))
			b.oldest_ms = shards[i].oldest_ms;
	}
	b.sampled = ev_now(alerter.loop);
	last = b;
}

/* One of a shard's three answers is in. */
static void
backlog_answered(struct backlog_shard *sh)
{
	if (++sh->answers < 3)
		return;
	if (--round_left == 0)
		backlog_round_done();
}

static const redisReply *
backlog_field(const redisReply *map, const char *name)
{
	size_t	 i;

	for (i = 0; i + 1 < map->elements; i += 2)
		if (map->element[i]->type == REDIS_REPLY_STRING &&
		    strcmp(map->element[i]->str, name) == 0)
			return map->element[i + 1];
	return NULL;
}

static void
backlog_groups(size_t i, const redisReply *r)
{
	struct backlog_shard	*sh = &shards[i];
	const redisReply	*g, *name, *v;
	const char		*last_id = NULL;
	size_t			 k;

	for (k = 0; r->type == REDIS_REPLY_ARRAY && k < r->elements; k++) {
		g = r->element[k];
		if (g->type != REDIS_REPLY_ARRAY ||
		    (name = backlog_field(g, "name")) == NULL ||
		    name->type != REDIS_REPLY_STRING ||
		    strcmp(name->str, alerter.conf->events_group) != 0)
			continue;
		if ((v = backlog_field(g, "pending")) != NULL &&
		    v->type == REDIS_REPLY_INTEGER && v->integer > 0)
			sh->pending = (uint64_t)v->integer;
		/* nil when Redis cannot tell (entries deleted): then 0. */
		if ((v = backlog_field(g, "lag")) != NULL &&
		    v->type == REDIS_REPLY_INTEGER && v->integer > 0)
			sh->lag = (uint64_t)v->integer;
		if ((v = backlog_field(g, "last-delivered-id")) != NULL &&
		    v->type == REDIS_REPLY_STRING)
			last_id = v->str;
		break;
	}
	backlog_answered(sh);
	if (last_id == NULL) {		/* no group yet: nothing is behind */
		backlog_answered(sh);
		backlog_answered(sh);
		return;
	}
	backlog_ask(i, 1, NULL);
	backlog_ask(i, 2, last_id);
}

static void
backlog_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct backlog_ask	*q = priv;
	const redisReply	*r = reply, *e;
	struct backlog_shard	*sh;

	(void)ac;
	if (!backlog_live || q->round != round_no || q->shard >= nshards) {
		free(q);
		return;
	}
	sh = &shards[q->shard];
	/*
	 * No stream (deleted, not yet made again): nothing behind, not a
	 * failure that would keep every round from counting.
	 */
	if (q->what == 0 && r != NULL && r->type == REDIS_REPLY_ERROR &&
	    strncmp(r->str, "ERR no such key", 15) == 0) {
		backlog_answered(sh);
		backlog_answered(sh);
		backlog_answered(sh);
		free(q);
		return;
	}
	if (r == NULL || r->type == REDIS_REPLY_ERROR) {
		/* Never data: this round does not count. */
		if (r != NULL)
			log_debug("event=backlog_failed stream=%s error=\"%s\"",
			    alerter.conf->shards->stream[q->shard], r->str);
		sh->failed = 1;
		if (q->what == 0) {
			backlog_answered(sh);
			backlog_answered(sh);
		}
		backlog_answered(sh);
		free(q);
		return;
	}
	switch (q->what) {
	case 0:
		backlog_groups(q->shard, r);
		break;
	case 1:		/* [count, smallest, greatest, consumers] */
		if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2 &&
		    (e = r->element[1])->type == REDIS_REPLY_STRING)
			backlog_oldest(sh, backlog_id_ms(e->str, e->len));
		backlog_answered(sh);
		break;
	default:	/* [[id, fields]] */
		if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
		    r->element[0]->type == REDIS_REPLY_ARRAY &&
		    r->element[0]->elements >= 1 &&
		    (e = r->element[0]->element[0])->type == REDIS_REPLY_STRING)
			backlog_oldest(sh, backlog_id_ms(e->str, e->len));
		backlog_answered(sh);
		break;
	}
	free(q);
}

static void
backlog_ask(size_t i, int what, const char *last_id)
{
	const struct conf	*c = alerter.conf;
	struct backlog_ask	*q;
	const char		*argv[6];
	char			 from[64];
	int			 argc;

	switch (what) {
	case 0:
		argv[0] = "XINFO", argv[1] = "GROUPS";
		argv[2] = c->shards->stream[i];
		argc = 3;
		break;
	case 1:
		argv[0] = "XPENDING", argv[1] = c->shards->stream[i];
		argv[2] = c->events_group;
		argc = 3;
		break;
	default:
		snprintf(from, sizeof(from), "(%s", last_id);
		argv[0] = "XRANGE", argv[1] = c->shards->stream[i];
		argv[2] = from, argv[3] = "+", argv[4] = "COUNT";
		argv[5] = "1";
		argc = 6;
		break;
	}
	if ((q = malloc(sizeof(*q))) == NULL ||
	    (q->round = round_no, q->shard = i, q->what = what,
	    store_command(c->shards->slot[i], backlog_cb, q, argc, argv,
	    NULL)) == -1) {
		free(q);
		shards[i].failed = 1;
		backlog_answered(&shards[i]);
		if (what == 0) {
			backlog_answered(&shards[i]);
			backlog_answered(&shards[i]);
		}
	}
}

static void
backlog_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	size_t	 i;

	(void)loop;
	(void)w;
	(void)revents;
	if (!store_ready())
		return;
	/* A round still out (Redis hung) is given up: a new one starts. */
	round_no++;
	round_left = nshards;
	for (i = 0; i < nshards; i++)
		memset(&shards[i], 0, sizeof(shards[i]));
	for (i = 0; i < nshards; i++)
		backlog_ask(i, 0, NULL);
}

int
backlog_init(char *err, size_t errlen)
{
	/* events.shards is fixed for the process (stream.c says so). */
	nshards = alerter.conf->shards->n;
	if ((shards = calloc(nshards, sizeof(*shards))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	backlog_live = 1;
	ev_timer_init(&backlog_timer, backlog_timer_cb, 0.5, BACKLOG_EVERY_S);
	ev_timer_start(alerter.loop, &backlog_timer);
	return 0;
}

const struct backlog *
backlog_last(void)
{
	return &last;
}

void
backlog_free(void)
{
	if (!backlog_live)
		return;
	backlog_live = 0;
	ev_timer_stop(alerter.loop, &backlog_timer);
	free(shards);
	shards = NULL;
	nshards = 0;
}
