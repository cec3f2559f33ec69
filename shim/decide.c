/*
 * decide.c: the shim's side of scripts/count.lua: the decisions of a
 * loop turn, batched into count.lua calls (one per rule and shard, or in
 * a Cluster per rule and node, up to 32 decisions each) on the pipelined
 * connection to the node, and each decision's reply.
 *
 * The command is written in RESP here (common/resp.h): each decision's
 * keys and arguments copied into its batch as it comes, from what the
 * config prepared per rule (key name heads and limits as text,
 * common/keyspace.h), what the batch shares written once at the send.
 * The script registry (common/script.c) loads the script and retries
 * once on NOSCRIPT.
 *
 * Each request in flight has a struct pending, in its batch, which lives
 * until the call's reply has been handed out.  When the client goes
 * first, the session detaches itself and the reply finds no session: a
 * reply never touches freed memory.  An error from Redis is never read
 * as a verdict: it is the fail policy, counted by its reason.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "cache.h"
#include "cluster.h"
#include "ovcache.h"
#include "keyspace.h"
#include "rule.h"
#include "log.h"
#include "rconn.h"
#include "resp.h"
#include "script.h"
#include "shim.h"

struct pending {
	struct session		*session;	/* NULL once the client left */
	struct ask		 ask;		/* points into the session */
	double			 sent;		/* cache_clock(), for a hold */
	unsigned		 generation;	/* the near cache's, when sent */
	int			 ov_read;	/* count.lua reads the override */
	double			 ov_at;		/* else, when it was last read */
	unsigned		 ov_generation;	/* the override cache's, then */
};

/*
 * A near-cache flush: the cost the cache counted for one key, sent as a
 * count.lua call of that cost.  It carries its own copy of the key and
 * the rule's name, as the entry and its config may be gone by the reply.
 */
struct flush {
	const struct conf_rule	*rule;		/* only if generation holds */
	unsigned		 generation;
	double			 sent;
	double			 until;		/* to land in its window */
	long long		 cost;
	char			 rule_name[CONF_NAME_MAX];
	size_t			 key_len;
	char			 key[];		/* key_len bytes */
};

static unsigned		 decide_flushing;	/* flushes awaiting a reply */
static int		 decide_draining;	/* at exit: break when none */

void
decide_detach(struct pending *p)
{
	p->session = NULL;
}

/*
 * count.lua's verdict: { answer, count, ttl_ms, crossed, limit number,
 * over, override, hold_ms, count_ms }, or the count alone for the common
 * "no" (a reply table costs Redis more than the commands of a decision).
 */
enum {
	V_ANSWER, V_COUNT, V_TTL, V_CROSSED, V_WHICH, V_OVER, V_OVERRIDE,
	V_HOLD, V_COUNT_MS, V_MAX
};

struct verdict {
	long long	 v[V_MAX];
};

/* 0, and v filled, for a reply count.lua sends; -1 for any other. */
static int
decide_verdict(const redisReply *r, struct verdict *v)
{
	size_t	 i;

	memset(v, 0, sizeof(*v));
	if (r->type == REDIS_REPLY_INTEGER) {
		v->v[V_COUNT] = r->integer;
		v->v[V_TTL] = -1;
		return 0;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements != V_MAX)
		return -1;
	for (i = 0; i < V_MAX; i++) {
		if (r->element[i]->type != REDIS_REPLY_INTEGER)
			return -1;
		v->v[i] = r->element[i]->integer;
	}
	return 0;
}

/*
 * A crossing this call recorded.  A flush's rule may have gone with a
 * reload (r NULL): the limit is then named by its number only; the
 * stream entry has it all.
 */
static void
decide_log_crossing(const struct conf_rule *r, const char *rule,
    const char *key, size_t key_len, const struct verdict *v,
    const char *how)
{
	long long		 which = v->v[V_WHICH];
	const struct conf_limit	*l;
	char			 qkey[KEY_MAX * 4 + 1];

	shim.stats.crossings++;
	log_quote(qkey, sizeof(qkey), key, key_len);
	if (r == NULL) {
		log_info("event=crossing rule=%s key=\"%s\" count=%lld "
		    "limit_number=%lld%s", rule, qkey, v->v[V_COUNT], which,
		    how);
		return;
	}
	l = &r->limits[which >= 1 && (size_t)which <= r->nlimits ?
	    which - 1 : 0];
	log_info("event=crossing rule=%s key=\"%s\" count=%lld limit=%lld "
	    "window_ms=%lld%s%s", r->name, qkey, v->v[V_COUNT],
	    (long long)l->limit, (long long)l->window_ms,
	    r->shadow ? " shadow=yes" : "", how);
}

static void
decide_log(const struct pending *p, const struct verdict *v)
{
	const struct ask	*a = &p->ask;
	long long		 which = v->v[V_WHICH];
	const struct conf_limit	*l;
	char			 qkey[KEY_MAX * 4 + 1];

	shim.stats.decisions++;
	if (v->v[V_ANSWER])
		shim.stats.yes++;
	l = &a->rule->limits[which >= 1 && (size_t)which <= a->rule->nlimits ?
	    which - 1 : 0];
	if (v->v[V_CROSSED])
		decide_log_crossing(a->rule, a->rule->name, a->key, a->key_len,
		    v, "");
	if (log_verbose())
		log_debug("event=decision rule=%s key=\"%s\" cost=%lld "
		    "count=%lld limit=%lld ttl_ms=%lld answer=%s%s%s%s",
		    a->rule->name, log_quote(qkey, sizeof(qkey), a->key,
		    a->key_len), a->cost, v->v[V_COUNT], (long long)l->limit,
		    v->v[V_TTL], v->v[V_ANSWER] ? "yes" : "no",
		    a->peek ? " mode=peek" : "",
		    a->rule->shadow && v->v[V_OVER] ?
		    " shadow_would_answer=yes" : "",
		    v->v[V_OVERRIDE] ? " override=redis" : "");
}

static int	decide_elsewhere(const redisReply *);

/* Why an error reply (or none) means the fail policy. */
static enum fail_reason
decide_error_reason(const redisReply *r)
{
	if (decide_elsewhere(r))
		return FAIL_CLUSTER;
	switch (rconn_error_kind(r)) {
	case RERR_OOM:
		return FAIL_OOM;
	case RERR_READONLY:
		return FAIL_READONLY;
	case RERR_BUSY:
		return FAIL_BUSY;
	case RERR_NOSCRIPT:
		return FAIL_NOSCRIPT;
	case RERR_LOADING:
		return FAIL_LOADING;
	case RERR_NOPERM:
		return FAIL_NOPERM;
	case RERR_CLUSTER:
		return FAIL_CLUSTER;
	default:
		return FAIL_ERROR;
	}
}

static struct log_limit warn_late = { .event = "crossing_late", .warn = 1 };
static struct log_limit warn_flush = { .event = "near_cache_flush_failed",
	.warn = 1 };

/*
 * Until when a yes may be answered from the near cache.  hold_ms counts
 * from the script's start, which is after sent: so the entry ends no
 * later than Redis's own answer changes, less a guard for the ms
 * rounding.  -1 (an override's block) holds for the longest allowed.
 */
#define DECIDE_HOLD_GUARD	0.002

static double
decide_until(double sent, long long hold_ms)
{
	double	 h = CACHE_HOLD_MAX;

	if (hold_ms >= 0 && hold_ms / 1000. - DECIDE_HOLD_GUARD < h)
		h = hold_ms / 1000. - DECIDE_HOLD_GUARD;
	return sent + h;
}

/*
 * Until when the cache may count hits: their flush due before count_ms.
 * A block (-1) counts nothing, in Redis or here: -1 says so to the cache.
 */
static double
decide_count_until(double sent, long long count_ms)
{
	if (count_ms < 0)
		return -1;
	return sent + count_ms / 1000. - CACHE_FLUSH_MARGIN;
}

/*
 * What the near cache learns from an answer.  A request counted (mode
 * count, count_denied) leaves the key at least that far over, so any
 * cost holds; otherwise only as dear a request as this one.  An answer
 * given without reading the override (ovcache.c) holds no longer than
 * one given when it was last read: a plain SET of an override shows
 * within CACHE_HOLD_MAX of it, however the two caches take turns.
 */
static void
decide_teach(const struct pending *p, const struct verdict *v)
{
	const struct ask	*a = &p->ask;
	long long		 hold = v->v[V_HOLD];
	double			 until = decide_until(p->sent, hold);

	if (!a->rule->near_cache)
		return;
	if (v->v[V_ANSWER] == 0) {
		cache_forget(a->rule, a->key, a->key_len, p->generation);
		return;
	}
	if (!p->ov_read && until > p->ov_at + CACHE_HOLD_MAX -
	    DECIDE_HOLD_GUARD)
		until = p->ov_at + CACHE_HOLD_MAX - DECIDE_HOLD_GUARD;
	if (hold != 0 && until > p->sent)
		cache_learn(a->rule, a->key, a->key_len,
		    !a->peek && a->rule->count_denied ? 0 : a->cost, until,
		    decide_count_until(p->sent, v->v[V_COUNT_MS]),
		    p->generation);
}

static void
decide_reply_cb(void *priv, redisReply *reply)
{
	struct pending	*p = priv;
	struct verdict	 v;
	char		 why[160];

	/*
	 * The client left (or timed out) before Redis answered.  The script
	 * ran all the same: a crossing it recorded is counted here too, or
	 * the shims' crossings would not add up to the mails.  The request's
	 * key lived in the session and its rule may be gone with a reload:
	 * the stream entry names both.
	 */
	if (p->session == NULL) {
		if (reply != NULL && decide_verdict(reply, &v) == 0 &&
		    v.v[V_CROSSED]) {
			shim.stats.crossings++;
			log_limited(shim.loop, &warn_late, "note=\"a crossing "
			    "answered after redis.timeout (the client had the "
			    "fail policy); the stream records it\"");
		}
		return;
	}
	if (reply == NULL)
		session_fail(p->session, FAIL_LOST, "redis connection failed");
	else if (reply->type == REDIS_REPLY_ERROR) {
		snprintf(why, sizeof(why), "%.*s", (int)reply->len, reply->str);
		session_fail(p->session, decide_error_reason(reply), why);
	} else if (decide_verdict(reply, &v) == -1)
		session_fail(p->session, FAIL_BAD_REPLY, "unexpected reply "
		    "shape");
	else {
		decide_log(p, &v);
		/* Before the answer: the key lives in the session. */
		decide_teach(p, &v);
		if (v.v[V_OVERRIDE] != 0)
			ovcache_forget(p->ask.rule, p->ask.key,
			    p->ask.key_len);
		else if (p->ov_read)
			ovcache_learn(p->ask.rule, p->ask.key, p->ask.key_len,
			    p->sent, p->ov_generation);
		session_answer(p->session, v.v[V_ANSWER] != 0, NULL);
	}
	/* p goes with the call, after this returns. */
}

/*
 * A flush that did not reach Redis: its cost goes back to the entry for
 * the next round, or is lost with the entry (counted, and said).
 */
static void
decide_unflushed(const struct conf_rule *r, const char *rule_name,
    const char *key, size_t key_len, long long cost, double until,
    unsigned generation, int ran, const char *why)
{
	char	 qkey[KEY_MAX * 4 + 1], qwhy[160];
	int	 kept = 0;

	shim.stats.near_flush_failed++;
	/*
	 * Sent again only if Redis certainly did not run it: a script that
	 * failed after its INCRBY (a stream key of another type), or a reply
	 * lost with the connection, may have counted it already.
	 */
	if (ran)
		cache_lost(cost);
	else
		kept = cache_unflushed(r, key, key_len, cost, until,
		    generation, cache_clock()) == 0;
	log_limited(shim.loop, &warn_flush, "rule=%s key=\"%s\" cost=%lld "
	    "reason=\"%s\" action=%s", rule_name, log_quote(qkey,
	    sizeof(qkey), key, key_len), cost, log_quote(qwhy, sizeof(qwhy),
	    why, strlen(why)), kept ? "retry" : "lost");
}

#define DECIDE_UNFLUSHED(f, ran, why)	decide_unflushed((f)->rule, \
	(f)->rule_name, (f)->key, (f)->key_len, (f)->cost, (f)->until, \
	(f)->generation, (ran), (why))

/*
 * Batches: the decisions one loop turn makes, sent as one count.lua call
 * per rule, shard and mode just before the loop waits again (an
 * ev_prepare), so none waits for another and Redis's fixed cost of a
 * call (a third of a lone decision's) is paid once.  A shard is one hash
 * slot, so a batch goes to one node in any layout.  Each decision stays
 * atomic (the whole call is) and gets its own reply.
 *
 * In a Cluster, a call per shard would carry a node's decisions cut into
 * its shards (16 of 48 on three masters): one at a time.  So a batch
 * there is per node, by the slot map, its keys among the arguments
 * (count.lua's node's call), and Redis checks each key as the script
 * uses it.  A decision the node refuses before writing (the map was
 * stale, its slot is moving) comes back "ELSEWHERE" and goes again with
 * its keys declared, where MOVED, ASK and TRYAGAIN are handled as for any
 * call (decide_resend(), decide_retry_later()).  A lone decision goes
 * declared from the start.
 *
 * A batch copies each decision's keys and arguments as they come (a
 * request's key lives in its session, which may go before the batch
 * does); what the decisions share is written once, at the send.
 */
#define DECIDE_BATCH_MAX	32	/* decisions per call: Redis blocks */

struct batch_item {
	int			 flush;		/* a struct flush, not pending */
	void			*priv;
};

TAILQ_HEAD(batch_list, batch);

struct batch {
	TAILQ_ENTRY(batch)	 entry;		/* in decide_batches till sent */
	const struct conf	*conf;		/* the keys' names are its */
	const struct conf_rule	*rule;
	size_t			 shard;		/* the first decision's */
	unsigned		 slot;		/* the shard's, kept: conf may go */
	int			 node;		/* a node's call, or -1 a slot's */
	enum keyspace_form	 form;		/* how its keys go */
	unsigned		 route;		/* decide_inflight[]'s index */
	int			 resent;	/* decisions a node refused */
	unsigned long		 seq;		/* the order batches were opened */
	double			 opened;	/* cache_clock() at its first */
	int			 held;		/* waited for company */
	int			 flushes;	/* carries a near-cache flush */
	double			 factor;
	int			 peek;
	unsigned		 n;
	struct batch_item	 item[DECIDE_BATCH_MAX];
	struct pending		 pending[DECIDE_BATCH_MAX];
	char			*keys;		/* RESP: each one's keys */
	char			*args;		/* RESP: each one's cost, subject */
	size_t			 keys_len, keys_cap, args_len, args_cap;
	size_t			 args_first;	/* the first one's, in args */
	int			 args_one;	/* all theirs are the first's */
	size_t			 ekey_off;	/* the first's key, in keys */
	size_t			 ekey_len;
};

static struct batch_list decide_batches =
	TAILQ_HEAD_INITIALIZER(decide_batches);
static ev_prepare	 decide_prepare;
static unsigned long	 decide_seq;		/* batches opened */
static unsigned long	 decide_flush_seq;	/* the last flush's batch */

static void	decide_flush_cb(void *, redisReply *);

static void
decide_batch_free(struct batch *b)
{
	free(b->keys);
	free(b->args);
	free(b);
}

/* Room for need more bytes in *buf; -1 when out of memory. */
static int
decide_reserve(char **buf, size_t *cap, size_t len, size_t need)
{
	size_t	 ncap;
	char	*nbuf;

	if (len + need <= *cap)
		return 0;
	ncap = *cap > 0 ? *cap : 1024;
	while (ncap < len + need)
		ncap *= 2;
	if ((nbuf = realloc(*buf, ncap)) == NULL)
		return -1;
	*buf = nbuf;
	*cap = ncap;
	return 0;
}

/* One item's reply: a verdict, an error, or NULL (nothing came). */
static void
decide_item_reply(struct batch_item *it, redisReply *reply)
{
	if (it->flush)
		decide_flush_cb(it->priv, reply);
	else
		decide_reply_cb(it->priv, reply);
}

/*
 * Batches go before the loop waits, but one route's next waits while its
 * last is in Redis, unless full: Redis runs a node's calls one after the
 * other, so a batch sent then would only queue there, and held it takes
 * the decisions that come meanwhile, the deeper the busier Redis is.  A
 * decision goes at once when no call of its route is in Redis.  A route
 * is a Cluster node's calls, or a slot's (one Redis, Sentinel, and a
 * Cluster's decisions sent again alone).  A route's batches go in the
 * order they were opened: a near-cache flush must reach Redis before the
 * request of the same key that made it.
 */
static unsigned		 decide_inflight[16384 + CLUSTER_NODES_MAX];
					/* calls, by slot, then by node */
static double		 decide_last_sent[16384 + CLUSTER_NODES_MAX];
					/* cache_clock() at its last call */

static void	decide_resend(struct batch *, unsigned, redisReply *);
static int	decide_retry_later(struct batch *, unsigned);

/* count.lua's word for a decision a node refused before it wrote. */
static int
decide_elsewhere(const redisReply *r)
{
	return r->type == REDIS_REPLY_ERROR && r->len > 10 &&
	    memcmp(r->str, "ELSEWHERE ", 10) == 0;
}

/*
 * The call's reply: one decision's own, or an array of each one's.  An
 * error of the whole call (NOSCRIPT twice, READONLY before it ran, a
 * Cluster's redirection) or none at all is every decision's.
 */
static void
decide_batch_cb(void *priv, redisReply *reply)
{
	static redisReply	 bad = { .type = REDIS_REPLY_NIL };
	struct batch		*b = *(struct batch **)priv;
	unsigned		 i;
	int			 each;

	each = b->n > 1 && reply != NULL && reply->type == REDIS_REPLY_ARRAY &&
	    reply->elements == b->n;
	/* Not the array of one reply each: no verdict for anyone. */
	if (b->n > 1 && reply != NULL && !each &&
	    reply->type != REDIS_REPLY_ERROR)
		reply = &bad;
	decide_inflight[b->route]--;
	for (i = 0; i < b->n; i++) {
		if (each && b->node >= 0 && decide_elsewhere(reply->element[i]))
			decide_resend(b, i, reply->element[i]);
		else if (reply != NULL && reply->type == REDIS_REPLY_ERROR &&
		    reply->len > 9 && memcmp(reply->str, "TRYAGAIN ", 9) == 0 &&
		    decide_retry_later(b, i) == 0)
			continue;
		else
			decide_item_reply(&b->item[i], each ?
			    reply->element[i] : reply);
	}
	decide_batch_free(b);
}

/* A batch that could not be sent: every decision's fail policy. */
static void
decide_batch_unsent(struct batch *b, enum fail_reason why)
{
	struct pending	*p;
	unsigned	 i;

	for (i = 0; i < b->n; i++) {
		if (b->item[i].flush) {
			decide_flushing--;
			DECIDE_UNFLUSHED((struct flush *)b->item[i].priv, 0,
			    why == FAIL_NOMEM ? "out of memory" :
			    "redis not connected");
			free(b->item[i].priv);
		} else if ((p = b->item[i].priv)->session != NULL)
			session_fail(p->session, why, why == FAIL_NOMEM ?
			    "out of memory" : "redis not connected");
	}
	decide_batch_free(b);
	if (decide_draining && decide_flushing == 0)
		ev_break(shim.loop, EVBREAK_ONE);
}

/*
 * Which of a batch's decisions count.lua need not read the override of
 * (ovcache.c): decided as the batch goes, so that an override announced
 * while it waited is read.  A flush always reads it (the near cache's
 * word on an override made with a plain SET), and so does a request
 * whose client left (its key went with the session).  Where any need
 * not, flags get k and a 1 or 0 for each decision.
 */
static void
decide_override_flags(struct batch *b, int node_call, char *flags,
    size_t *nflags)
{
	struct pending	*p;
	size_t		 i, k = *nflags;
	int		 any = 0;
	/*
	 * The script may run up to redis.timeout from now: the read it
	 * spares must still be fresh then, or a plain SET could wait longer
	 * than a second.
	 */
	double		 now = cache_clock() + b->conf->redis_timeout_ms / 1000.;

	flags[k++] = 'k';
	for (i = 0; i < b->n; i++) {
		p = b->item[i].flush ? NULL : b->item[i].priv;
		if (p != NULL) {
			/* A node's call reads them all (count.lua says why). */
			p->ov_read = node_call || p->session == NULL ||
			    !ovcache_none(p->ask.rule, p->ask.key,
			    p->ask.key_len, now, &p->ov_at);
			p->ov_generation = ovcache_generation();
		}
		flags[k++] = p != NULL && !p->ov_read ? '1' : '0';
		any |= flags[k - 1] == '1';
	}
	if (any)
		*nflags = k;
}

/*
 * The call: EVALSHA, the shard's stream, every decision's keys, what they
 * share (flags, factor, what a crossing records, the limits), then every
 * decision's cost and subject: count.lua's order.  A named call (a single
 * Redis's) declares the stream alone, and a node's call (b->node set)
 * nothing; both give last what the names share, then each decision's
 * escaped key (a node's, each with its shard's tag).  A node's lone
 * decision goes declared, its keys made here from its escaped key.
 */
static void
decide_batch_send(struct batch *b)
{
	const struct conf		*c = b->conf;
	const struct conf_rule		*r = b->rule;
	const struct keyspace_rule	*ks = r->ks;
	const struct keyspace_shards	*sh = c->shards;
	struct script_call		*call;
	struct script_conn		*sc;
	struct resp			 resp;
	char				 factor[24], meta[512];
	char				 flags[7 + DECIDE_BATCH_MAX];
	const char			*cmd;
	size_t				 i, cap, len, mlen, keyoff, sbase, nkeys;
	size_t				 nflags;
	int				 node_call, named, lone, one;

	if (b->n == 0) {		/* opened, then out of memory */
		decide_batch_free(b);
		return;
	}
	if ((sc = shim_scripts(b->slot)) == NULL) {
		decide_batch_unsent(b, FAIL_NOT_CONNECTED);
		return;
	}
	node_call = b->form == KEYSPACE_NODE && b->n > 1;
	lone = b->form == KEYSPACE_NODE && b->n == 1;
	named = b->form == KEYSPACE_NAMED || node_call;
	/*
	 * What only a crossing needs, as one argument of seven words: every
	 * argument costs Redis a string per call.  The names are config
	 * names (no spaces).
	 */
	keyoff = keyspace_decision_keyoff(c, r, &sbase);
	mlen = (size_t)snprintf(meta, sizeof(meta), "%s %s %s %lld %s %zu %zu",
	    r->name, c->hostname, c->events_channel,
	    (long long)c->events_stream_maxlen, c->events_group, keyoff,
	    sbase);
	if (mlen >= sizeof(meta)) {
		decide_batch_unsent(b, FAIL_NOMEM);
		return;
	}
	flags[0] = b->peek ? 'p' : 'c';
	flags[1] = r->algorithm == ALG_SLIDING ? 's' :
	    r->algorithm == ALG_GCRA ? 'g' : 'f';
	flags[2] = r->shadow ? '1' : '0';
	flags[3] = r->count_denied ? '1' : '0';
	flags[4] = (char)('0' + r->nlimits);
	/* Every string a call carries costs Redis its making. */
	one = b->n > 1 && b->args_one;
	nflags = 5;
	if (one)
		flags[nflags++] = 'u';
	decide_override_flags(b, node_call, flags, &nflags);

	nkeys = b->n * keyspace_decision_nkeys(r);
	cap = RESP_HEAD + resp_size(7) + resp_size(40) + resp_size(24) +
	    resp_size(sh->stream_len[b->shard]) + b->keys_len +
	    resp_size(sizeof(flags)) + resp_size(24) + resp_size(mlen) +
	    3 * r->nlimits * resp_size(24) + b->args_len +
	    (named ? keyspace_decision_heads_size(c, r, b->shard, b->form) :
	    0) + (lone ? keyspace_decision_size(c, r, b->shard, b->ekey_len,
	    KEYSPACE_DECLARED) : 0);
	if ((call = script_call_new(cap, sizeof(b))) == NULL) {
		decide_batch_unsent(b, FAIL_NOMEM);
		return;
	}
	*(struct batch **)script_call_user(call) = b;
	resp_init(&resp, script_call_buf(call));
	resp_str(&resp, "EVALSHA");
	resp_arg(&resp, script_defs[SCRIPT_COUNT].sha, 40);
	if (node_call)
		resp_str(&resp, "0");
	else {
		resp_num(&resp, named ? 1 : (long long)(1 + nkeys));
		resp_arg(&resp, sh->stream[b->shard], sh->stream_len[b->shard]);
		if (lone)
			keyspace_decision_keys(&resp, c, r, b->shard,
			    b->keys + b->ekey_off, b->ekey_len,
			    KEYSPACE_DECLARED);
		else if (!named)
			resp_raw(&resp, b->keys, b->keys_len, (int)nkeys);
	}
	resp_arg(&resp, flags, nflags);
	if (b->factor == 1)
		resp_str(&resp, "1");
	else
		resp_arg(&resp, factor, (size_t)snprintf(factor,
		    sizeof(factor), "%.6g", b->factor));
	resp_arg(&resp, meta, mlen);
	for (i = 0; i < r->nlimits; i++) {
		resp_str(&resp, ks->limit_text[i][0]);
		resp_str(&resp, ks->limit_text[i][1]);
		resp_str(&resp, ks->limit_text[i][2]);
	}
	if (one)
		resp_raw(&resp, b->args, b->args_first, 2);
	else
		resp_raw(&resp, b->args, b->args_len, (int)(2 * b->n));
	if (named) {
		keyspace_decision_heads(&resp, c, r, b->shard, b->form);
		resp_raw(&resp, b->keys, b->keys_len,
		    (int)(node_call ? 2 * b->n : b->n));
	}
	cmd = resp_finish(&resp, &len);
	if (script_call_send(sc, call, SCRIPT_COUNT, cmd, len,
	    decide_batch_cb, script_call_user(call)) == -1) {
		script_call_free(call);
		/* rconn refuses only when it is down or out of memory. */
		decide_batch_unsent(b, FAIL_NOT_CONNECTED);
		return;
	}
	shim.stats.script_calls++;
	shim.stats.script_decisions += b->n;
	if (b->held)
		shim.stats.script_held++;
	decide_inflight[b->route]++;
	decide_last_sent[b->route] = cache_clock();
}

/*
 * A batch may wait for company, up to redis.batch_wait from its first
 * decision: a call's fixed cost is most of a lone decision's Redis CPU,
 * and where most requests need no Redis (abusers answered by the near
 * cache), the few that do come one or two a call.  As PostgreSQL's
 * commit_delay waits only with commit_siblings, a batch waits only where
 * decisions can come from clients other than those it holds: some client
 * was answered without Redis, within the wait, while another waited on
 * it (session.c).  A lone client never waits (what would join is its own
 * next request, which the wait would hold up), nor do clients that all
 * wait on Redis (they came back at once, measured: nothing to gain).
 * And only on a busy route (a call sent within the wait), so that a
 * quiet MTA's decision goes at once; never once DECIDE_BATCH_DEEP have
 * come (the call's fixed cost is then a small part of it), nor for a
 * decision sent again, nor a near-cache flush (its margin before a
 * window ends, and its TRYAGAIN retries, are counted from its sending).
 * The clock is the monotonic one: a step of the wall clock must not hold
 * a batch.  Returns 1, lowering *deadline to when it may go, if b waits.
 */
#define DECIDE_BATCH_DEEP	8

static int
decide_hold(const struct batch *b, double now, double *deadline)
{
	double	 wait = b->conf->redis_batch_wait_ms / 1000., until;

	if (wait <= 0 || b->resent || b->flushes ||
	    b->n >= DECIDE_BATCH_DEEP ||
	    now - decide_last_sent[b->route] >= wait ||
	    now - shim.answered_here >= wait)
		return 0;
	until = b->opened + wait;
	if (now >= until)
		return 0;
	if (until < *deadline)
		*deadline = until;
	return 1;
}

static ev_timer		 decide_hold_timer;

/* A held batch's time is up: the prepare watcher sends it. */
static void
decide_hold_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
}

/*
 * Every batch that may go, before the loop waits; every one at exit and
 * at a reload (a held batch must not outlive its config).  Never from a
 * decision's own call: a batch that cannot go fails its sessions, and
 * the one asking must not be failed under its own feet.
 */
static void
decide_send(int all)
{
	struct batch	*b, *next, *e;
	double		 now = cache_clock(), deadline = now + 3600;

	for (b = TAILQ_FIRST(&decide_batches); b != NULL; b = next) {
		next = TAILQ_NEXT(b, entry);
		if (!all) {
			if (b->n < DECIDE_BATCH_MAX &&
			    decide_inflight[b->route] > 0)
				continue;
			/* Not past one of its slot or node held before it. */
			for (e = TAILQ_PREV(b, batch_list, entry); e != NULL;
			    e = TAILQ_PREV(e, batch_list, entry))
				if (e->route == b->route)
					break;
			if (e != NULL)
				continue;
			if (decide_hold(b, now, &deadline)) {
				b->held = 1;
				continue;
			}
		}
		TAILQ_REMOVE(&decide_batches, b, entry);
		decide_batch_send(b);
	}
	if (deadline < now + 3600) {
		ev_timer_stop(shim.loop, &decide_hold_timer);
		ev_timer_set(&decide_hold_timer, deadline - now, 0.);
		ev_timer_start(shim.loop, &decide_hold_timer);
	}
}

void
decide_reload(void)
{
	decide_send(1);
}

static void
decide_prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	decide_send(0);
}

/*
 * The batch a decision joins: the newest of its kind with room, or a
 * new one: of its shard, or in a Cluster of its node.  None opened before
 * the last flush: the request a flush was made for must come after it
 * (a route's batches go in the order queued).  NULL: out of memory.
 *
 * A decision sent again (route not -1) goes with its keys declared, on
 * that route, after those sent again before it and ahead of the route's
 * other waiting batches, so that it stays ahead of what came after it: a
 * flush a node refused must still count before the request that made it,
 * which may wait in the next batch for that node or be sent again too.
 */
static struct batch *
decide_batch_for(const struct ask *a, size_t shard, long route)
{
	struct batch	*b, *at = NULL, *last = NULL;
	unsigned	 slot = shim.conf->shards->slot[shard] & 16383;
	int		 node = -1;

	if (route >= 0) {
		/* at: the route's first batch of its own; last: the newest
		 * sent-again one before it, which this one follows. */
		TAILQ_FOREACH(at, &decide_batches, entry) {
			if (at->route != (unsigned)route)
				continue;
			if (!at->resent)
				break;
			last = at;
		}
		if (last != NULL && last->shard == shard &&
		    last->rule == a->rule && last->peek == a->peek &&
		    last->factor == a->factor && last->conf == shim.conf &&
		    last->n < DECIDE_BATCH_MAX)
			return last;
	} else {
		if (shim.cluster != NULL)
			node = cluster_node_index(shim.cluster, slot);
		TAILQ_FOREACH_REVERSE(b, &decide_batches, batch_list, entry) {
			if (b->seq < decide_flush_seq)
				break;
			if (b->rule == a->rule && b->node == node &&
			    !b->resent && (node >= 0 || b->shard == shard) &&
			    b->peek == a->peek && b->factor == a->factor &&
			    b->conf == shim.conf && b->n < DECIDE_BATCH_MAX)
				return b;
		}
	}
	if ((b = calloc(1, sizeof(*b))) == NULL)
		return NULL;
	b->seq = ++decide_seq;
	b->opened = cache_clock();
	b->conf = shim.conf;
	b->rule = a->rule;
	b->shard = shard;
	b->slot = slot;
	b->node = node;
	/* A single Redis routes nothing by keys: it is given names only. */
	b->form = node >= 0 ? KEYSPACE_NODE : shim.cluster == NULL ?
	    KEYSPACE_NAMED : KEYSPACE_DECLARED;
	b->resent = route >= 0;
	b->route = route >= 0 ? (unsigned)route :
	    node >= 0 ? 16384 + (unsigned)node : slot;
	b->peek = a->peek;
	b->factor = a->factor;
	if (last != NULL)
		TAILQ_INSERT_AFTER(&decide_batches, last, b, entry);
	else if (at != NULL)
		TAILQ_INSERT_BEFORE(at, b, entry);
	else
		TAILQ_INSERT_TAIL(&decide_batches, b, entry);
	return b;
}

/*
 * Add a decision to its batch, its keys and arguments copied in: a flush
 * (priv its struct flush) or a request (*pending its struct).  -1: out of
 * memory, nothing added.
 */
static int
decide_enqueue(const struct ask *a, const char *ekey, size_t elen,
    size_t shard, void *flush, struct pending **pending, long route)
{
	const struct conf	*c = shim.conf;
	struct batch		*b;
	struct resp		 resp;
	unsigned		 i;

	if ((b = decide_batch_for(a, shard, route)) == NULL)
		return -1;
	if (decide_reserve(&b->keys, &b->keys_cap, b->keys_len,
	    keyspace_decision_size(c, a->rule, shard, elen, b->form)) ==
	    -1 ||
	    decide_reserve(&b->args, &b->args_cap, b->args_len,
	    resp_size(24) + resp_size(a->subject_len)) == -1)
		return -1;	/* the batch goes as it is */
	resp_at(&resp, b->keys + b->keys_len);
	keyspace_decision_keys(&resp, c, a->rule, shard, ekey, elen,
	    b->form);
	b->keys_len = (size_t)(resp.p - b->keys);
	resp_at(&resp, b->args + b->args_len);
	resp_num(&resp, a->cost);
	resp_arg(&resp, a->subject != NULL ? a->subject : "",
	    a->subject_len);
	/* The same cost and subject as the first (nearly always): the call
	 * may give them once. */
	if (b->n == 0) {
		/* Every form's keys end with the escaped key: a node's
		 * batch of one goes declared, its keys made from it. */
		b->ekey_off = b->keys_len - 2 - elen;
		b->ekey_len = elen;
		b->args_first = (size_t)(resp.p - b->args);
		b->args_one = 1;
	} else if ((size_t)(resp.p - b->args) - b->args_len != b->args_first ||
	    memcmp(b->args + b->args_len, b->args, b->args_first) != 0)
		b->args_one = 0;
	b->args_len = (size_t)(resp.p - b->args);
	i = b->n++;
	b->item[i].flush = flush != NULL;
	b->flushes |= flush != NULL;
	b->item[i].priv = flush != NULL ? flush : &b->pending[i];
	if (flush != NULL)
		decide_flush_seq = b->seq;
	if (pending != NULL)
		*pending = &b->pending[i];
	return 0;
}

/*
 * Send a decision again, its keys declared: a flush f, or a request whose
 * pending p a session waits on (moved to the new batch).  On route, or
 * with route DECIDE_ROUTE_SLOT on its own slot's.  Only under the config
 * it was made with (a flush's rule lives as long as the cache's
 * generation, which a reload ends; a waiting session keeps its config).
 * 0: it goes on the next loop turn; -1: the caller answers it.
 */
#define DECIDE_ROUTE_SLOT	(-2L)

static int
decide_again(const struct conf *conf, double factor, struct flush *f,
    struct pending *p, long route)
{
	const struct keyspace_shards	*sh = shim.conf->shards;
	struct pending			*np;
	struct ask			 a;
	char				 ekey[KEYSPACE_EKEY_MAX + 1];
	size_t				 elen, shard;

	if (conf != shim.conf ||
	    (f != NULL && f->generation != cache_generation()))
		return -1;
	if (f != NULL) {
		memset(&a, 0, sizeof(a));
		a.rule = f->rule;
		a.key = f->key;
		a.key_len = f->key_len;
		a.cost = f->cost;
		a.factor = factor;
	} else
		a = p->ask;
	elen = keyspace_escape(ekey, sizeof(ekey), a.key, a.key_len);
	shard = keyspace_shard_of(sh, ekey, elen);
	if (route == DECIDE_ROUTE_SLOT)
		route = (long)(sh->slot[shard] & 16383);
	if (shim_scripts(sh->slot[shard]) == NULL ||
	    decide_enqueue(&a, ekey, elen, shard, f, f == NULL ? &np : NULL,
	    route) == -1)
		return -1;
	shim.stats.script_resent++;
	if (f == NULL) {
		/* As first sent: the hold counts from then, safely early. */
		*np = *p;
		session_resent(p->session, np);
		p->session = NULL;
	}
	return 0;
}

/*
 * A decision a node refused before writing (count.lua's ELSEWHERE): sent
 * again on the route of the call it was in, where MOVED, ASK and TRYAGAIN
 * are handled as for any call; where it cannot go, the refusal is its
 * reply (the fail policy, or a flush's cost kept for the next).
 */
static void
decide_resend(struct batch *b, unsigned i, redisReply *reply)
{
	struct batch_item	*it = &b->item[i];
	struct pending		*p = it->flush ? NULL : it->priv;

	if (p != NULL && p->session == NULL)
		return;			/* nobody waits, and nothing counted */
	if (decide_again(b->conf, b->factor, it->flush ? it->priv : NULL, p,
	    (long)b->route) == -1)
		decide_item_reply(it, reply);
}

/*
 * TRYAGAIN: the call's slot is moving and a decision's keys are not all
 * on one side (its override and crossing marker seldom exist, so that is
 * nearly every decision of the slot until the move ends), and Redis ran
 * nothing.  A request waits and goes again every DECIDE_RETRY_S until it
 * is decided or its session's redis.timeout gives the fail policy
 * (reason cluster: session_moving()): a slot moved within that time
 * (with a large --cluster-pipeline) costs its senders a little latency,
 * not their limits.  A near-cache flush goes
 * again the same way, in the same order (it must count before the
 * request that made it), but only within DECIDE_FLUSH_RETRY_S of its
 * first sending: the cache made it in time for its window with 100 ms to
 * reach Redis (CACHE_FLUSH_MARGIN).  Past that its cost goes back to the
 * cache, or is counted lost, as for any flush that failed.
 */
#define DECIDE_RETRY_S		0.010
#define DECIDE_FLUSH_RETRY_S	0.050

struct retry {
	TAILQ_ENTRY(retry)	 entry;
	const struct conf	*conf;
	double			 factor;	/* the call's */
	struct flush		*flush;		/* or: */
	struct pending		 p;		/* the session's till sent */
};

static TAILQ_HEAD(, retry) decide_retries =
	TAILQ_HEAD_INITIALIZER(decide_retries);
static ev_timer		 decide_retry_timer;

/* 0: item i of b waits for the retry timer; -1: it is to be answered. */
static int
decide_retry_later(struct batch *b, unsigned i)
{
	struct pending	*p = NULL;
	struct flush	*f = NULL;
	struct retry	*r;

	if (b->item[i].flush) {
		f = b->item[i].priv;
		if (f->generation != cache_generation() || cache_clock() +
		    DECIDE_RETRY_S >= f->sent + DECIDE_FLUSH_RETRY_S)
			return -1;
	} else if ((p = b->item[i].priv)->session == NULL)
		return -1;
	if (b->conf != shim.conf || (r = malloc(sizeof(*r))) == NULL)
		return -1;
	r->conf = b->conf;
	r->factor = b->factor;
	r->flush = f;
	if (p != NULL) {
		r->p = *p;
		session_resent(p->session, &r->p);
		session_moving(p->session);
		p->session = NULL;
	}
	TAILQ_INSERT_TAIL(&decide_retries, r, entry);
	if (!ev_is_active(&decide_retry_timer)) {
		ev_timer_set(&decide_retry_timer, DECIDE_RETRY_S, 0.);
		ev_timer_start(shim.loop, &decide_retry_timer);
	}
	return 0;
}

/* A flush that goes no further: as when it cannot be sent. */
static void
decide_retry_drop_flush(struct flush *f, const char *why)
{
	decide_flushing--;
	DECIDE_UNFLUSHED(f, 0, why);
	free(f);
	if (decide_draining && decide_flushing == 0)
		ev_break(shim.loop, EVBREAK_ONE);
}

static void
decide_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	TAILQ_HEAD(, retry)	 due = TAILQ_HEAD_INITIALIZER(due);
	struct retry		*r;

	(void)loop;
	(void)w;
	(void)revents;
	/* Those that come back TRYAGAIN meanwhile wait for the next turn. */
	TAILQ_CONCAT(&due, &decide_retries, entry);
	while ((r = TAILQ_FIRST(&due)) != NULL) {
		TAILQ_REMOVE(&due, r, entry);
		/* A request whose timeout came is gone from here. */
		if ((r->flush != NULL || r->p.session != NULL) &&
		    decide_again(r->conf, r->factor, r->flush, &r->p,
		    DECIDE_ROUTE_SLOT) == -1) {
			if (r->flush != NULL)
				decide_retry_drop_flush(r->flush, "TRYAGAIN, "
				    "then it could not go again");
			else
				session_fail(r->p.session, FAIL_CLUSTER,
				    "TRYAGAIN, then it could not go again");
		}
		free(r);
	}
}

/* At exit: whoever still waits gets the fail policy. */
static void
decide_retry_stop(void)
{
	struct retry	*r;

	ev_timer_stop(shim.loop, &decide_retry_timer);
	while ((r = TAILQ_FIRST(&decide_retries)) != NULL) {
		TAILQ_REMOVE(&decide_retries, r, entry);
		if (r->flush != NULL)
			decide_retry_drop_flush(r->flush, "shutting down");
		else if (r->p.session != NULL)
			session_fail(r->p.session, FAIL_SHUTDOWN,
			    "shutting down");
		free(r);
	}
}

enum fail_reason
decide_submit(struct session *s, const struct ask *a, struct pending **out)
{
	const struct keyspace_shards	*sh = shim.conf->shards;
	struct pending			*p;
	char				 ekey[KEYSPACE_EKEY_MAX + 1];
	size_t				 elen, shard;

	*out = NULL;
	/* One decision, one node: the one serving the key's shard. */
	elen = keyspace_escape(ekey, sizeof(ekey), a->key, a->key_len);
	shard = keyspace_shard_of(sh, ekey, elen);
	if (shim_scripts(sh->slot[shard]) == NULL)
		return FAIL_NOT_CONNECTED;
	if (decide_enqueue(a, ekey, elen, shard, NULL, &p, -1) == -1)
		return FAIL_NOMEM;
	p->session = s;
	p->ask = *a;
	p->sent = cache_clock();
	p->generation = cache_generation();
	*out = p;
	return FAIL_NONE;
}

/* An error Redis gives before the script writes anything. */
static int
decide_not_run(const redisReply *r)
{
	if (decide_elsewhere(r))
		return 1;
	switch (rconn_error_kind(r)) {
	case RERR_OOM:		/* at the first write, INCRBY */
	case RERR_READONLY:
	case RERR_BUSY:
	case RERR_NOSCRIPT:
	case RERR_LOADING:
	case RERR_CLUSTER:
		return 1;
	default:
		return 0;
	}
}

static void
decide_flush_cb(void *priv, redisReply *reply)
{
	struct flush		*f = priv;
	const struct conf_rule	*r;
	struct verdict		 v;
	char			 why[160];

	decide_flushing--;
	/* The rule is there only while the cache's generation is. */
	r = f->generation == cache_generation() ? f->rule : NULL;
	if (reply == NULL)
		DECIDE_UNFLUSHED(f, 1, "redis connection failed");
	else if (reply->type == REDIS_REPLY_ERROR) {
		snprintf(why, sizeof(why), "%.*s", (int)reply->len, reply->str);
		DECIDE_UNFLUSHED(f, !decide_not_run(reply), why);
	} else if (decide_verdict(reply, &v) == -1)
		DECIDE_UNFLUSHED(f, 1, "unexpected reply shape");
	else {
		if (v.v[V_CROSSED])
			decide_log_crossing(r, f->rule_name, f->key,
			    f->key_len, &v, " near_cache=flush");
		/*
		 * A flush reads the override: one made with a plain SET is
		 * how a held key learns of it, and the key's requests that
		 * go to Redis next must read it too.
		 */
		if (r != NULL && v.v[V_OVERRIDE] != 0)
			ovcache_forget(r, f->key, f->key_len);
		/* A flush is a request counted: any cost holds after it. */
		if (r != NULL && v.v[V_ANSWER] != 0 && v.v[V_HOLD] != 0)
			cache_learn(r, f->key, f->key_len, 0, decide_until(
			    f->sent, v.v[V_HOLD]), decide_count_until(f->sent,
			    v.v[V_COUNT_MS]), f->generation);
		else if (r != NULL)
			cache_forget(r, f->key, f->key_len, f->generation);
	}
	free(f);
	if (decide_draining && decide_flushing == 0)
		ev_break(shim.loop, EVBREAK_ONE);
}

/*
 * cache.c's flush callback: the cost the cache counted for one key, as
 * count.lua calls of that cost (one, unless it is more than a call
 * takes), with no subject: the cache answers no request that has one.
 */
void
decide_flush(const struct conf_rule *r, const char *key, size_t key_len,
    long long cost, double until, unsigned generation)
{
	const struct keyspace_shards	*sh = shim.conf->shards;
	const struct conf_override	*ov;
	struct flush			*f;
	struct ask			 a;
	char				 ekey[KEYSPACE_EKEY_MAX + 1];
	size_t				 elen, shard;
	long long			 part;

	memset(&a, 0, sizeof(a));
	a.rule = r;
	a.key = key;
	a.key_len = key_len;
	a.factor = 1;
	if ((ov = rule_override(r, key, key_len)) != NULL &&
	    ov->action == OVR_FACTOR)
		a.factor = ov->factor;
	elen = keyspace_escape(ekey, sizeof(ekey), key, key_len);
	shard = keyspace_shard_of(sh, ekey, elen);
	for (; cost > 0; cost -= part) {
		part = cost > KEYSPACE_COST_MAX ? KEYSPACE_COST_MAX : cost;
		a.cost = part;
		shim.stats.near_flushes++;
		if ((f = malloc(sizeof(*f) + key_len)) == NULL) {
			/* Nothing sent: this part only goes back. */
			decide_unflushed(r, r->name, key, key_len, part,
			    until, generation, 0, "out of memory");
			continue;
		}
		f->rule = r;
		f->generation = generation;
		f->sent = cache_clock();
		f->until = until;
		f->cost = part;
		snprintf(f->rule_name, sizeof(f->rule_name), "%s", r->name);
		f->key_len = key_len;
		memcpy(f->key, key, key_len);
		if (shim_scripts(sh->slot[shard]) == NULL ||
		    decide_enqueue(&a, ekey, elen, shard, f, NULL, -1) == -1) {
			DECIDE_UNFLUSHED(f, 0, "redis not connected");
			free(f);
			continue;
		}
		decide_flushing++;
	}
}

static ev_timer	 decide_flush_timer;

static void
decide_flush_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	cache_flush();
}

void
decide_start(void)
{
	ev_timer_init(&decide_flush_timer, decide_flush_timer_cb,
	    CACHE_FLUSH_EVERY, CACHE_FLUSH_EVERY);
	ev_timer_start(shim.loop, &decide_flush_timer);
	ev_prepare_init(&decide_prepare, decide_prepare_cb);
	ev_prepare_start(shim.loop, &decide_prepare);
	ev_timer_init(&decide_retry_timer, decide_retry_cb, DECIDE_RETRY_S, 0.);
	ev_timer_init(&decide_hold_timer, decide_hold_cb, 0., 0.);
	/* Batches to send are no reason to keep the loop running. */
	ev_unref(shim.loop);
}

unsigned
decide_flushes_out(void)
{
	return decide_flushing;
}

/* deadline_ms to get the flushes' replies in, the rest counted lost. */
static void
decide_drain_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)w;
	(void)revents;
	ev_break(loop, EVBREAK_ONE);
}

void
decide_shutdown(double deadline)
{
	ev_timer	 t;

	ev_timer_stop(shim.loop, &decide_flush_timer);
	/* What the near cache counted goes to Redis before we go. */
	cache_flush();
	decide_send(1);
	if (decide_flushing > 0) {
		decide_draining = 1;
		ev_timer_init(&t, decide_drain_cb, deadline, 0.);
		ev_timer_start(shim.loop, &t);
		ev_run(shim.loop, 0);
		ev_timer_stop(shim.loop, &t);
		decide_draining = 0;
	}
}

void
decide_exit(void)
{
	/*
	 * Batches made during the drain (flushes of keys that left the
	 * cache), after the connections: their costs go back to the cache,
	 * which counts them lost.
	 */
	decide_retry_stop();
	ev_timer_stop(shim.loop, &decide_hold_timer);
	decide_send(1);
	if (ev_is_active(&decide_prepare)) {
		ev_ref(shim.loop);
		ev_prepare_stop(shim.loop, &decide_prepare);
	}
	/* After the connections: a flush still out has had its NULL reply. */
	cache_free();
	ovcache_free();
	if (cache_stats()->lost > 0)
		log_warn("event=near_cache_exit lost=%llu note=\"cost counted "
		    "by the near cache that never reached redis\"",
		    (unsigned long long)cache_stats()->lost);
	log_limit_stop(&warn_late);
	log_limit_stop(&warn_flush);
}

static void
decide_print_name(const struct conf *c, const char *rule, const char *what,
    size_t shard, const char *tail, const char *ekey, size_t elen)
{
	char	 name[KEYSPACE_EKEY_MAX + 256];

	if (keyspace_name(name, sizeof(name), c, shard, tail, ekey, elen) !=
	    -1)
		printf("%s %s %s\n", rule, what, name);
}

int
decide_print_keys(const struct conf *c, const char *key)
{
	const struct keyspace_shards	*sh = c->shards;
	const struct conf_rule		*r;
	const struct keyspace_rule	*ks;
	char				 norm[KEY_MAX];
	char				 ekey[KEYSPACE_EKEY_MAX + 1];
	size_t				 i, j, len, elen, shard;

	if ((len = strlen(key)) > KEY_MAX) {
		fprintf(stderr, "senderwatch-shim: a key is at most %d bytes\n",
		    KEY_MAX);
		return 1;
	}
	for (i = 0; i < c->nrules; i++) {
		r = &c->rules[i];
		ks = r->ks;
		/* What the request would count: the key normalised first. */
		elen = keyspace_escape(ekey, sizeof(ekey), norm,
		    keyspace_normalize(r, key, len, norm));
		shard = keyspace_shard_of(sh, ekey, elen);
		for (j = 0; j < r->nlimits; j++) {
			decide_print_name(c, r->name, "count", shard,
			    ks->state[j], ekey, elen);
			decide_print_name(c, r->name, "crossed", shard,
			    ks->crossed[j], ekey, elen);
		}
		decide_print_name(c, r->name, "subjects", shard, ks->subjects,
		    ekey, elen);
		decide_print_name(c, r->name, "override", shard, ks->override,
		    ekey, elen);
		printf("%s stream %s\n", r->name, sh->stream[shard]);
		if (sh->tag_len[shard] > 0)	/* a Cluster's hash slot */
			printf("%s slot %u\n", r->name, sh->slot[shard]);
	}
	return 0;
}
