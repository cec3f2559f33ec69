/*
 * ctl_stream.c: the threshold events' streams (one, or one per shard in
 * a Cluster): crossings and pending.
 *
 * crossings reads the newest N of every shard (XREVRANGE ... COUNT N, one
 * pipelined batch over the shards' nodes), merges them by id and prints
 * the N newest, newest first.  With -f it prints them oldest first, as
 * tail -f does, then follows: every CTL_FOLLOW_S it asks each shard for
 * what came after the last id it saw there (XRANGE with an exclusive
 * start), so nothing blocks a connection and a Cluster of many shards is
 * followed with one round trip a poll.  A lost connection is waited out
 * (rconn reconnects); SIGINT and SIGTERM end it with status 0.
 *
 * pending is what the alerters have not mailed yet: per consumer of the
 * group, the entries delivered and not acknowledged (XPENDING's summary,
 * per shard, summed) and how long the oldest of them has waited since it
 * was delivered; and the entries no alerter has read yet (XINFO GROUPS's
 * lag, Redis 7).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "layout.h"

#define CTL_CROSSINGS_MAX	100000
#define CTL_FOLLOW_S		0.2
#define CTL_FOLLOW_BATCH	"1000"

/* A stream entry: its id and fields, pointing into a batch's replies. */
struct ctl_entry {
	unsigned long long	 ms, seq;
	const char		*id;
	size_t			 idlen;
	size_t			 shard;
	const char		*f[KSF_MAX];
	size_t			 flen[KSF_MAX];
};

struct ctl_entries {
	struct ctl_entry	*e;
	size_t			 n, cap;
};

/* "1764626400000-3": 0, or -1 when it is not an id. */
static int
ctl_stream_id(const char *s, size_t len, unsigned long long *ms,
    unsigned long long *seq)
{
	size_t	 i;
	int	 dash = 0;

	*ms = *seq = 0;
	if (len == 0)
		return -1;
	for (i = 0; i < len; i++) {
		if (s[i] == '-' && !dash) {
			dash = 1;
			continue;
		}
		if (s[i] < '0' || s[i] > '9')
			return -1;
		if (dash)
			*seq = *seq * 10 + (unsigned)(s[i] - '0');
		else
			*ms = *ms * 10 + (unsigned)(s[i] - '0');
	}
	return 0;
}

static int
ctl_entry_cmp_new(const void *a, const void *b)
{
	const struct ctl_entry	*x = a, *y = b;

	if (x->ms != y->ms)
		return x->ms < y->ms ? 1 : -1;
	if (x->seq != y->seq)
		return x->seq < y->seq ? 1 : -1;
	return x->shard < y->shard ? -1 : x->shard > y->shard;
}

static int
ctl_entry_cmp_old(const void *a, const void *b)
{
	return ctl_entry_cmp_new(b, a);
}

/* The entries of an XRANGE or XREVRANGE reply of shard, appended. */
static void
ctl_entries_add(struct ctl_entries *es, const redisReply *r, size_t shard)
{
	const redisReply	*e, *fv;
	struct ctl_entry	*x;
	size_t			 i, j;
	int			 f;

	ctl_reply_array(r, 0, "XRANGE");
	for (i = 0; i < r->elements; i++) {
		e = r->element[i];
		if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
		    e->element[0]->type != REDIS_REPLY_STRING)
			continue;
		if (es->n == es->cap) {
			es->cap = es->cap ? es->cap * 2 : 64;
			if ((es->e = reallocarray(es->e, es->cap,
			    sizeof(*es->e))) == NULL)
				ctl_fatal("out of memory");
		}
		x = &es->e[es->n];
		memset(x, 0, sizeof(*x));
		x->id = e->element[0]->str;
		x->idlen = e->element[0]->len;
		x->shard = shard;
		if (ctl_stream_id(x->id, x->idlen, &x->ms, &x->seq) == -1)
			continue;
		/* The fields by name: keyspace_fields[], in any order. */
		fv = e->element[1];
		for (j = 0; fv->type == REDIS_REPLY_ARRAY &&
		    j + 1 < fv->elements; j += 2) {
			if (fv->element[j]->type != REDIS_REPLY_STRING ||
			    fv->element[j + 1]->type != REDIS_REPLY_STRING ||
			    (f = keyspace_field(fv->element[j]->str,
			    fv->element[j]->len)) == -1)
				continue;
			x->f[f] = fv->element[j + 1]->str;
			x->flen[f] = fv->element[j + 1]->len;
		}
		es->n++;
	}
}

static const struct ctl_col ctl_crossing_cols[] = {
	{ "id", "ID" }, { "time", "TIME" }, { "rule", "RULE" },
	{ "key", "KEY" }, { "count", "COUNT" }, { "limit", "LIMIT" },
	{ "window_ms", "WINDOW" }, { "host", "HOST" },
	{ "shadow", "SHADOW" }, { "algorithm", NULL }, { "cost", NULL },
	{ "counter", NULL }, { "subjects", NULL }, { "stream", NULL },
	{ NULL, NULL }
};

static void
ctl_crossing_row(struct ctl *ctl, struct ctl_table *t,
    const struct ctl_entry *x)
{
	const struct keyspace_shards	*sh = ctl->conf->shards;
	long long			 ms;
	char				 num[24];

#define F(i)	(x->f[i] != NULL ? x->f[i] : ""), x->flen[i]
	ctl_cell_str(t, x->id, x->idlen, CTL_ESCAPED);
	ctl_cell_time(t, F(KSF_TIME));
	ctl_cell_str(t, F(KSF_RULE), CTL_RAW);
	ctl_cell_str(t, F(KSF_KEY), CTL_ESCAPED);
	ctl_cell_num(t, F(KSF_COUNT));
	ctl_cell_num(t, F(KSF_LIMIT));
	if (x->f[KSF_WINDOW_MS] != NULL && x->flen[KSF_WINDOW_MS] > 0 &&
	    x->flen[KSF_WINDOW_MS] < sizeof(num) &&
	    strspn(x->f[KSF_WINDOW_MS], "0123456789") ==
	    x->flen[KSF_WINDOW_MS]) {
		memcpy(num, x->f[KSF_WINDOW_MS], x->flen[KSF_WINDOW_MS]);
		num[x->flen[KSF_WINDOW_MS]] = '\0';
		ms = strtoll(num, NULL, 10);
		ctl_cell_window(t, ms);
	} else
		ctl_cell_str(t, F(KSF_WINDOW_MS), CTL_ESCAPED);
	ctl_cell_str(t, F(KSF_HOST), CTL_RAW);
	ctl_cell_bool(t, x->flen[KSF_SHADOW] == 1 &&
	    x->f[KSF_SHADOW][0] == '1');
	ctl_cell_str(t, F(KSF_ALGORITHM), CTL_RAW);
	ctl_cell_num(t, F(KSF_COST));
	ctl_cell_str(t, F(KSF_COUNTER), CTL_ESCAPED);
	ctl_cell_str(t, F(KSF_SUBJECTS), CTL_ESCAPED);
	ctl_cell_str(t, sh->stream[x->shard], sh->stream_len[x->shard],
	    CTL_ESCAPED);
	ctl_row_end(t);
#undef F
}

static void
ctl_stream_signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct ctl	*ctl = w->data;

	(void)revents;
	ctl->stopped = 1;
	ev_break(loop, EVBREAK_ALL);
}

/* Poll every shard for what came after last[shard], until a signal. */
static int
ctl_crossings_follow(struct ctl *ctl, struct ctl_table *t,
    char (*last)[48])
{
	const struct keyspace_shards	*sh = ctl->conf->shards;
	struct ctl_entries		 es;
	struct ctl_batch		*b;
	const redisReply		*r;
	const char			*argv[6];
	char				 start[56];
	size_t				 i, j, *idx;
	int				 warned = 0;

	if ((idx = calloc(sh->n, sizeof(*idx))) == NULL)
		ctl_fatal("out of memory");
	while (!ctl->stopped) {
		if (ctl_redis_sleep(ctl, CTL_FOLLOW_S))
			break;
		b = ctl_batch_new(ctl);
		for (i = 0; i < sh->n; i++) {
			snprintf(start, sizeof(start), "(%s", last[i]);
			argv[0] = "XRANGE";
			argv[1] = sh->stream[i];
			argv[2] = start;
			argv[3] = "+";
			argv[4] = "COUNT";
			argv[5] = CTL_FOLLOW_BATCH;
			idx[i] = ctl_batch_cmd(b, sh->slot[i], 6, argv, NULL);
		}
		if (ctl_batch_run(b) == -1) {	/* a signal */
			ctl_batch_free(b);
			break;
		}
		memset(&es, 0, sizeof(es));
		for (i = 0; i < sh->n; i++) {
			if ((r = ctl_batch_get(b, idx[i])) == NULL) {
				/* Down: rconn dials again; so do we. */
				if (!warned++)
					fprintf(stderr, "%s: Redis connection "
					    "lost; waiting for it\n", CTL_NAME);
				continue;
			}
			if (r->type == REDIS_REPLY_ERROR)
				ctl_fatal("XRANGE %s: Redis error: %s",
				    sh->stream[i], r->str);
			j = es.n;
			ctl_entries_add(&es, r, i);
			/* The newest of this shard: the next poll's start. */
			if (es.n > j && es.e[es.n - 1].idlen < sizeof(last[i]))
				snprintf(last[i], sizeof(last[i]), "%.*s",
				    (int)es.e[es.n - 1].idlen,
				    es.e[es.n - 1].id);
		}
		qsort(es.e, es.n, sizeof(*es.e), ctl_entry_cmp_old);
		for (i = 0; i < es.n; i++)
			ctl_crossing_row(ctl, t, &es.e[i]);
		ctl_table_flush(t);
		free(es.e);
		ctl_batch_free(b);
	}
	free(idx);
	return CTL_OK;
}

int
ctl_cmd_crossings(struct ctl *ctl, int argc, char **argv)
{
	const struct keyspace_shards	*sh = ctl->conf->shards;
	const char			*cmd = argv[0], *xargv[6];
	struct ctl_entries		 es;
	struct ctl_batch		*b;
	struct ctl_table		*t;
	char				 count[24], (*last)[48];
	ev_signal			 sint, sterm;
	size_t				 i, j, *idx;
	long				 n = 20;
	int				 ch, follow = 0;

	while ((ch = getopt(argc, argv, "n:f")) != -1) {
		switch (ch) {
		case 'n':
			n = ctl_count_arg(cmd, "-n", optarg, CTL_CROSSINGS_MAX);
			break;
		case 'f':
			follow = 1;
			break;
		default:
			ctl_usage(cmd, NULL);
		}
	}
	if (optind != argc)
		ctl_usage(cmd, "unexpected \"%s\"", argv[optind]);
	/* Following ends with SIGINT or SIGTERM, whenever they come. */
	ev_signal_init(&sint, ctl_stream_signal_cb, SIGINT);
	ev_signal_init(&sterm, ctl_stream_signal_cb, SIGTERM);
	sint.data = sterm.data = ctl;
	if (follow) {
		ev_signal_start(ctl->loop, &sint);
		ev_signal_start(ctl->loop, &sterm);
	}
	ctl_redis_open(ctl, 0);
	ctl_redis_wait(ctl, sh->slot, sh->n);
	if ((idx = calloc(sh->n, sizeof(*idx))) == NULL ||
	    (last = calloc(sh->n, sizeof(*last))) == NULL)
		ctl_fatal("out of memory");
	snprintf(count, sizeof(count), "%ld", n);
	b = ctl_batch_new(ctl);
	for (i = 0; i < sh->n; i++) {
		xargv[0] = "XREVRANGE";
		xargv[1] = sh->stream[i];
		xargv[2] = "+";
		xargv[3] = "-";
		xargv[4] = "COUNT";
		xargv[5] = count;
		idx[i] = ctl_batch_cmd(b, sh->slot[i], 6, xargv, NULL);
	}
	if (ctl_batch_run(b) == -1)
		return CTL_OK;			/* stopped by a signal */
	memset(&es, 0, sizeof(es));
	for (i = 0; i < sh->n; i++) {
		j = es.n;
		ctl_entries_add(&es, ctl_batch_ok(b, idx[i], "XREVRANGE"), i);
		/* Newest first: the shard's last id is its first entry. */
		if (es.n > j && es.e[j].idlen < sizeof(last[i]))
			snprintf(last[i], sizeof(last[i]), "%.*s",
			    (int)es.e[j].idlen, es.e[j].id);
		else
			snprintf(last[i], sizeof(last[i]), "0-0");
	}
	qsort(es.e, es.n, sizeof(*es.e), ctl_entry_cmp_new);
	if (es.n > (size_t)n)
		es.n = (size_t)n;
	if (follow)
		qsort(es.e, es.n, sizeof(*es.e), ctl_entry_cmp_old);
	t = ctl_table_new(ctl, NULL, ctl_crossing_cols);
	if (follow) {
		/* What comes later is printed under the same header. */
		ctl_table_min(t, "id", 15);
		ctl_table_min(t, "rule", 12);
		ctl_table_min(t, "key", 28);
		ctl_table_min(t, "count", 6);
		ctl_table_min(t, "limit", 6);
		ctl_table_min(t, "window_ms", 6);
		ctl_table_min(t, "host", 12);
	}
	for (i = 0; i < es.n; i++)
		ctl_crossing_row(ctl, t, &es.e[i]);
	ctl_table_flush(t);
	free(es.e);
	ctl_batch_free(b);
	if (follow) {
		ctl_crossings_follow(ctl, t, last);
		ev_signal_stop(ctl->loop, &sint);
		ev_signal_stop(ctl->loop, &sterm);
	}
	ctl_table_end(t);
	free(idx);
	free(last);
	return CTL_OK;
}

/* pending: one consumer's entries over every shard. */
struct ctl_consumer {
	char			*name;
	size_t			 len;
	long long		 pending;
	unsigned long long	 oldest_ms, oldest_seq;
	char			 oldest[48];
	long long		 idle;		/* the oldest's, ms */
};

/* One field of an XINFO GROUPS group: [name, value, name, value...]. */
static const redisReply *
ctl_pending_field(const redisReply *g, const char *name)
{
	size_t	 i;

	for (i = 0; i + 1 < g->elements; i += 2)
		if (g->element[i]->type == REDIS_REPLY_STRING &&
		    strcmp(g->element[i]->str, name) == 0)
			return g->element[i + 1];
	return NULL;
}

static struct ctl_consumer *
ctl_pending_consumer(struct ctl_consumer **cs, size_t *n, const char *name,
    size_t len)
{
	struct ctl_consumer	*c;
	size_t			 i;

	for (i = 0; i < *n; i++)
		if ((*cs)[i].len == len && memcmp((*cs)[i].name, name, len) ==
		    0)
			return &(*cs)[i];
	if ((*cs = reallocarray(*cs, *n + 1, sizeof(**cs))) == NULL)
		ctl_fatal("out of memory");
	c = &(*cs)[(*n)++];
	memset(c, 0, sizeof(*c));
	if ((c->name = malloc(len + 1)) == NULL)
		ctl_fatal("out of memory");
	memcpy(c->name, name, len);
	c->name[len] = '\0';
	c->len = len;
	c->idle = -1;
	return c;
}

static const struct ctl_col ctl_pending_cols[] = {
	{ "consumer", "CONSUMER" }, { "pending", "PENDING" },
	{ "oldest", "OLDEST" }, { "idle_ms", "IDLE" }, { NULL, NULL }
};
static const struct ctl_col ctl_pending_total[] = {
	{ "pending", "PENDING" }, { "unread", "UNREAD" },
	{ "streams", "STREAMS" }, { "group", "GROUP" }, { NULL, NULL }
};

int
ctl_cmd_pending(struct ctl *ctl, int argc, char **argv)
{
	const struct keyspace_shards	*sh = ctl->conf->shards;
	const char			*group = ctl->conf->events_group;
	const char			*xargv[7];
	struct ctl_batch		*b1, *b2, *b3;
	struct ctl_consumer		*cs = NULL, *c;
	struct ctl_table		*t;
	const redisReply		*r, *g, *f, *list, *e;
	size_t				*idx, *grp, ncs = 0, i, j, q;
	size_t				 nstreams = 0, *who, nwho = 0;
	long long			 v, total = 0, unread = 0, xlen;
	unsigned long long		 ms, seq;
	int				 unknown = 0, *has;

	if (getopt(argc, argv, "") != -1)
		ctl_usage(argv[0], NULL);
	if (optind != argc)
		ctl_usage(argv[0], "unexpected \"%s\"", argv[optind]);
	ctl_redis_open(ctl, 0);
	ctl_redis_wait(ctl, sh->slot, sh->n);
	if ((idx = calloc(sh->n, sizeof(*idx))) == NULL ||
	    (grp = calloc(sh->n, sizeof(*grp))) == NULL ||
	    (has = calloc(sh->n, sizeof(*has))) == NULL)
		ctl_fatal("out of memory");

	/* 1: which streams exist (XINFO of a missing key is an error). */
	b1 = ctl_batch_new(ctl);
	for (i = 0; i < sh->n; i++) {
		xargv[0] = "XLEN";
		xargv[1] = sh->stream[i];
		idx[i] = ctl_batch_cmd(b1, sh->slot[i], 2, xargv, NULL);
		xargv[0] = "EXISTS";
		grp[i] = ctl_batch_cmd(b1, sh->slot[i], 2, xargv, NULL);
	}
	ctl_batch_run(b1);
	/* 2: the group of each stream there, and its summary. */
	b2 = ctl_batch_new(ctl);
	for (i = 0; i < sh->n; i++) {
		r = ctl_batch_ok(b1, grp[i], "EXISTS");
		if (r->type != REDIS_REPLY_INTEGER || r->integer == 0) {
			idx[i] = (size_t)-1;
			continue;
		}
		nstreams++;
		xargv[0] = "XINFO";
		xargv[1] = "GROUPS";
		xargv[2] = sh->stream[i];
		grp[i] = ctl_batch_cmd(b2, sh->slot[i], 3, xargv, NULL);
	}
	ctl_batch_run(b2);
	b3 = ctl_batch_new(ctl);
	for (i = 0; i < sh->n; i++) {
		if (idx[i] == (size_t)-1)
			continue;
		if (ctl_reply_int(ctl_batch_ok(b1, idx[i], "XLEN"), &xlen) ==
		    -1)
			xlen = 0;
		r = ctl_reply_array(ctl_batch_ok(b2, grp[i], "XINFO GROUPS"),
		    0, "XINFO GROUPS");
		for (j = 0, g = NULL; j < r->elements; j++) {
			f = ctl_pending_field(r->element[j], "name");
			if (f != NULL && f->type == REDIS_REPLY_STRING &&
			    strcmp(f->str, group) == 0)
				g = r->element[j];
		}
		if (g == NULL) {
			/* No group yet: nothing of this stream was read. */
			unread += xlen;
			continue;
		}
		f = ctl_pending_field(g, "lag");
		if (f != NULL && ctl_reply_int(f, &v) == 0)
			unread += v;
		else
			unknown = 1;	/* before Redis 7, or not known */
		f = ctl_pending_field(g, "pending");
		if (f == NULL || ctl_reply_int(f, &v) == -1 || v == 0)
			continue;
		has[i] = 1;
		xargv[0] = "XPENDING";
		xargv[1] = sh->stream[i];
		xargv[2] = group;
		grp[i] = ctl_batch_cmd(b3, sh->slot[i], 3, xargv, NULL);
	}
	ctl_batch_run(b3);
	ctl_batch_free(b1);
	ctl_batch_free(b2);

	/* 3: per shard, per consumer: the count, then its oldest entry. */
	b1 = ctl_batch_new(ctl);
	if ((who = calloc(1, sizeof(*who))) == NULL)
		ctl_fatal("out of memory");
	for (i = 0; i < sh->n; i++) {
		if (!has[i])
			continue;
		r = ctl_reply_array(ctl_batch_ok(b3, grp[i], "XPENDING"), 4,
		    "XPENDING");
		if (ctl_reply_int(r->element[0], &v) == 0)
			total += v;
		if ((list = r->element[3])->type != REDIS_REPLY_ARRAY)
			continue;
		for (j = 0; j < list->elements; j++) {
			e = list->element[j];
			if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
			    e->element[0]->type != REDIS_REPLY_STRING)
				continue;
			c = ctl_pending_consumer(&cs, &ncs, e->element[0]->str,
			    e->element[0]->len);
			if (ctl_reply_int(e->element[1], &v) == 0)
				c->pending += v;
			xargv[0] = "XPENDING";
			xargv[1] = sh->stream[i];
			xargv[2] = group;
			xargv[3] = "-";
			xargv[4] = "+";
			xargv[5] = "1";
			xargv[6] = c->name;
			if ((who = reallocarray(who, 2 * (nwho + 1),
			    sizeof(*who))) == NULL)
				ctl_fatal("out of memory");
			who[2 * nwho] = ctl_batch_cmd(b1, sh->slot[i], 7,
			    xargv, (const size_t[]){ 8, sh->stream_len[i],
			    strlen(group), 1, 1, 1, c->len });
			who[2 * nwho + 1] = (size_t)(c - cs);
			nwho++;
		}
	}
	ctl_batch_run(b1);
	for (q = 0; q < nwho; q++) {
		c = &cs[who[2 * q + 1]];
		r = ctl_reply_array(ctl_batch_ok(b1, who[2 * q], "XPENDING"),
		    0, "XPENDING");
		if (r->elements == 0 || (e = r->element[0])->type !=
		    REDIS_REPLY_ARRAY || e->elements < 3 ||
		    e->element[0]->type != REDIS_REPLY_STRING ||
		    ctl_stream_id(e->element[0]->str, e->element[0]->len, &ms,
		    &seq) == -1 || ctl_reply_int(e->element[2], &v) == -1)
			continue;
		/* The oldest over every shard: the lowest id. */
		if (c->oldest[0] == '\0' || ms < c->oldest_ms ||
		    (ms == c->oldest_ms && seq < c->oldest_seq)) {
			c->oldest_ms = ms;
			c->oldest_seq = seq;
			snprintf(c->oldest, sizeof(c->oldest), "%.*s",
			    (int)e->element[0]->len, e->element[0]->str);
			c->idle = v;
		}
	}

	t = ctl_table_new(ctl, "consumer", ctl_pending_cols);
	for (i = 0; i < ncs; i++) {
		ctl_cell_str(t, cs[i].name, cs[i].len, CTL_RAW);
		ctl_cell_int(t, cs[i].pending);
		if (cs[i].oldest[0] != '\0') {
			ctl_cell_str(t, cs[i].oldest, strlen(cs[i].oldest),
			    CTL_ESCAPED);
			ctl_cell_pttl(t, cs[i].idle);
		} else {
			ctl_cell_null(t);
			ctl_cell_null(t);
		}
		ctl_row_end(t);
		free(cs[i].name);
	}
	ctl_table_end(t);
	t = ctl_table_new(ctl, "total", ctl_pending_total);
	ctl_cell_int(t, total);
	if (unknown)
		ctl_cell_null(t);
	else
		ctl_cell_int(t, unread);
	ctl_cell_int(t, (long long)nstreams);
	ctl_cell_str(t, group, strlen(group), CTL_TEXT);
	ctl_row_end(t);
	ctl_table_end(t);
	ctl_batch_free(b1);
	ctl_batch_free(b3);
	free(cs);
	free(who);
	free(idx);
	free(grp);
	free(has);
	return CTL_OK;
}
