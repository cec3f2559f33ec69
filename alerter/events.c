/*
 * events.c: the alerter's side of the event stream (events.stream), read
 * through the consumer group (events.group) as consumer alerts.consumer.
 *
 * Reading.  The group hands each entry to one consumer and keeps it in that
 * consumer's pending list until XACK.  After every (re)connect we first
 * re-read our own pending entries (from id 0): what this consumer read but
 * never got acknowledged, say before a crash.  Then new entries (">"), as
 * many as the batcher has room for.  A message on events.channel, the poll
 * timer and the batcher (when it has room again) all trigger a read, so a
 * lost wake-up only costs up to a poll period.
 *
 * Losses.  The shim caps the stream (events.stream_maxlen).  If every
 * alerter is away long enough, the cap trims entries no alerter ever read,
 * and XREADGROUP then skips over the gap without a word.  So reads of new
 * entries go through read_script, which first works out how many entries
 * the group missed that way, atomically with the read, and we log them.
 *
 * One process per consumer name.  Two alerters that share a consumer name
 * share its pending list, so each would mail what the other is sending.
 * So reading waits for a lease, PREFIX:alerter:CONSUMER, that we renew
 * every POLL_S and that lapses LEASE_MS after its holder stops renewing.
 * A lease held by this host's earlier process (its pid gone: a crash or a
 * restart) is taken over at once; one held by a live process is not, and
 * says so in the log until that alerter goes away.
 *
 * Claiming.  Entries pending for another consumer for longer than
 * alerts.claim_idle belong to an alerter that died: XAUTOCLAIM takes them.
 *
 * Keeping.  Every claim_idle / 3 the entries we hold get their idle time
 * reset, so a live alerter's entries are not claimed even while its relay
 * is down and it keeps retrying.  A small script checks the owner and
 * claims in one atomic step: a plain XCLAIM would steal an entry back from
 * an alerter that rightly took it over while we were cut off from Redis,
 * and both would mail it.
 *
 * Every event read is in the `held` tree until it is released, whatever
 * stage it is in, so one read twice (our pending list after a reconnect,
 * a claim of our own entry) is recognised and skipped.
 */
#include <errno.h>
#include <search.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alerter.h"
#include "log.h"
#include "rconn.h"

#define READ_MAX	1000	/* entries per XREADGROUP / XAUTOCLAIM */
#define OWN_MAX		1000	/* ids per ownership script call */
#define POLL_S		1.0	/* read even without a wake-up this often */
#define CMD_HUNG_S	10.0	/* drop the command connection after this */
#define LEASE_MS	3000	/* a consumer-name lease lapses after this */
#define LEASE_LOG_S	60.0	/* repeat "name in use" this often */

/*
 * KEYS[1] stream; ARGV[1] group, ARGV[2] consumer, ARGV[3..] entry ids.
 * Per id: 1 (ours: idle time reset), 0 (another consumer's, or acked) or
 * 2 (unknown to Redis: the data was lost, so mail it anyway).
 */
static const char own_script[] =
    "local stream, group, me = KEYS[1], ARGV[1], ARGV[2]\n"
    "local out = {}\n"
    "for i = 3, #ARGV do\n"
    "  local id = ARGV[i]\n"
    "  local ok, p = pcall(redis.call, 'XPENDING', stream, group, id, id, 1)\n"
    "  if not ok then\n"
    "    out[#out + 1] = 2\n"
    "  elseif #p == 0 then\n"
    "    if #redis.call('XRANGE', stream, id, id) == 0 then\n"
    "      out[#out + 1] = 2\n"
    "    else\n"
    "      out[#out + 1] = 0\n"
    "    end\n"
    "  elseif p[1][2] == me then\n"
    "    redis.call('XCLAIM', stream, group, me, 0, id, 'JUSTID')\n"
    "    out[#out + 1] = 1\n"
    "  else\n"
    "    out[#out + 1] = 0\n"
    "  end\n"
    "end\n"
    "return out\n";

/*
 * KEYS[1] stream; ARGV[1] group, ARGV[2] consumer, ARGV[3] count.
 * Reply: { lost, the reply of XREADGROUP ... STREAMS stream > }, where lost
 * is how many entries trimmed off the head of the stream the group never
 * read (-1: the group keeps no read counter, so it cannot be told).
 * entries-added less the group's entries-read is everything added since
 * the last entry the group read; when the oldest entry left is newer than
 * that one, whatever of it is no longer in the stream was trimmed unread.
 * A group made with "$" on an empty stream has read nothing but shows no
 * counter until its first read.
 */
static const char read_script[] =
    "local stream, group = KEYS[1], ARGV[1]\n"
    "local function fields(a)\n"
    "  local f = {}\n"
    "  for i = 1, #a, 2 do f[a[i]] = a[i + 1] end\n"
    "  return f\n"
    "end\n"
    "local function after(a, b)\n"
    "  local am, as = string.match(a, '^(%d+)-(%d+)$')\n"
    "  local bm, bs = string.match(b, '^(%d+)-(%d+)$')\n"
    "  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)\n"
    "  return am > bm or (am == bm and as > bs)\n"
    "end\n"
    "local lost = 0\n"
    "local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', stream)\n"
    "if ok then\n"
    "  for _, g in ipairs(groups) do\n"
    "    local gf = fields(g)\n"
    "    if gf['name'] == group then\n"
    "      local sf = fields(redis.call('XINFO', 'STREAM', stream))\n"
    "      local first, read = sf['first-entry'], gf['entries-read']\n"
    "      if not read and gf['last-delivered-id'] == '0-0' then\n"
    "        read = 0\n"
    "      end\n"
    "      if not read then\n"
    "        lost = -1\n"
    "      elseif sf['length'] == 0 or\n"
    "          (first and after(first[1], gf['last-delivered-id'])) then\n"
    "        lost = math.max(sf['entries-added'] - read - sf['length'], 0)\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local r = redis.pcall('XREADGROUP', 'GROUP', group, ARGV[2], 'COUNT',\n"
    "  ARGV[3], 'STREAMS', stream, '>')\n"
    "if type(r) == 'table' and r.err then return r end\n"
    "return { lost, r }\n";

/*
 * KEYS[1] lease; ARGV[1] us ("host pid"), ARGV[2] ttl ms, ARGV[3] a holder
 * we may replace (our own dead process), or "".  Reply: "" once the lease
 * is ours for ttl ms, else the holder's value.
 */
static const char lease_script[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if v and v ~= ARGV[1] and v ~= ARGV[3] then return v end\n"
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "return ''\n";

static struct {
	struct rconn	*cmd;		/* commands */
	struct rconn	*sub;		/* SUBSCRIBE: wake-ups only */
	char		*stream, *group, *consumer;	/* fixed until restart */
	char		*channel;	/* what sub is subscribed to */
	void		*held;		/* tsearch tree of struct event */
	size_t		 nheld;
	int		 reading;
	int		 read_again;	/* a wake-up came during a read */
	int		 read_pel;	/* the read in flight is of our own */
	size_t		 read_count;
	int		 pel_done;	/* own pending entries re-read */
	char		 pel_cursor[48];
	size_t		 pel_resumed;
	int		 claiming;
	int		 autoclaim_broken;
	char		 claim_cursor[48];
	ev_tstamp	 next_claim;
	ev_tstamp	 next_group;	/* NOGROUP: when to recreate it */
	int		 read_error_logged;
	int		 lost_unknown_logged;
	char		*lease_key;
	char		 lease_me[320];	/* "host pid" */
	char		 lease_stale[320];	/* our dead process's, or "" */
	int		 lease;		/* ours: reading may go on */
	int		 leasing;	/* a lease call in flight */
	ev_tstamp	 lease_logged;	/* last "name in use" line */
	ev_timer	 poll;
	ev_timer	 keep;
} es;

static void	read_kick(void);

static int
event_cmp(const void *a, const void *b)
{
	const struct event	*x = a, *y = b;

	if (x->id_ms != y->id_ms)
		return x->id_ms < y->id_ms ? -1 : 1;
	if (x->id_seq != y->id_seq)
		return x->id_seq < y->id_seq ? -1 : 1;
	return 0;
}

static void
event_free(void *p)
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
		free((char *)ev->subjects[i].text);
	free(ev->subjects);
	buf_free(&ev->report);
	free(ev);
}

/* A stream id, "ms-seq", into its two numbers. */
static int
parse_id(const char *s, size_t len, uint64_t *ms, uint64_t *seq)
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
field_num(const redisReply *v)
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
static char *
field_str(const redisReply *v, size_t *len)
{
	char	*s;

	if ((s = malloc(v->len + 1)) == NULL)
		return NULL;
	memcpy(s, v->str, v->len);
	s[v->len] = '\0';
	if (len != NULL)
		*len = v->len;
	return s;
}

/*
 * An event from a stream entry.  Fields the script did not write (an
 * older script, a hand-made entry) are shown as unknown: the crossing is
 * still mailed.  NULL only when out of memory or the id is not an id.
 */
static struct event *
event_new(const redisReply *id, const redisReply *fields)
{
	struct event		*ev;
	const redisReply	*k, *v;
	size_t			 i;
	int			 oom = 0;

	if ((ev = calloc(1, sizeof(*ev))) == NULL)
		return NULL;
	if (parse_id(id->str, id->len, &ev->id_ms, &ev->id_seq) == -1) {
		free(ev);
		return NULL;
	}
	memcpy(ev->id, id->str, id->len);
	ev->count = ev->limit = ev->window_ms = ev->time = -1;
	ev->count_now = ev->ttl_ms = -1;
	buf_init(&ev->report);
	for (i = 0; i + 1 < fields->elements; i += 2) {
		k = fields->element[i];
		v = fields->element[i + 1];
		if (k->type != REDIS_REPLY_STRING ||
		    v->type != REDIS_REPLY_STRING)
			continue;
#define IS(name)	(k->len == strlen(name) && memcmp(k->str, name, k->len) == 0)
#define STR(f, l)	do { free(f); if ((f = field_str(v, l)) == NULL) \
			    oom = 1; } while (0)
		if (IS("rule"))
			STR(ev->rule, NULL);
		else if (IS("key"))
			STR(ev->key, &ev->key_len);
		else if (IS("host"))
			STR(ev->host, NULL);
		else if (IS("algorithm"))
			STR(ev->algorithm, NULL);
		else if (IS("counter"))
			STR(ev->counter, &ev->counter_len);
		else if (IS("subjects"))
			STR(ev->subjects_key, &ev->subjects_key_len);
		else if (IS("count"))
			ev->count = field_num(v);
		else if (IS("limit"))
			ev->limit = field_num(v);
		else if (IS("window_ms"))
			ev->window_ms = field_num(v);
		else if (IS("time"))
			ev->time = field_num(v);
		else if (IS("shadow"))
			ev->shadow = field_num(v) == 1;
#undef IS
#undef STR
	}
	if (ev->rule == NULL && (ev->rule = strdup("?")) == NULL)
		oom = 1;
	if (ev->host == NULL && (ev->host = strdup("?")) == NULL)
		oom = 1;
	if (ev->key == NULL && (ev->key = strdup("")) == NULL)
		oom = 1;
	if (oom) {
		event_free(ev);
		return NULL;
	}
	return ev;
}

static void
ignore_cb(redisAsyncContext *ac, void *r, void *priv)
{
	(void)ac;
	(void)r;
	(void)priv;
}

/* An entry trimmed off the stream (events.stream_maxlen) unmailed. */
static void
event_lost(const char *id, size_t len, int ack)
{
	const char	*argv[4] = { "XACK", es.stream, es.group, id };
	size_t		 argvlen[4];
	char		 q[64];

	alerter.stats.events_lost++;
	log_err("event=event_lost id=%s reason=\"trimmed from the stream "
	    "before it was mailed: raise events.stream_maxlen\"",
	    log_quote(q, sizeof(q), id, len));
	if (!ack)
		return;
	argvlen[0] = 4;
	argvlen[1] = strlen(es.stream);
	argvlen[2] = strlen(es.group);
	argvlen[3] = len;
	rconn_command(es.cmd, ignore_cb, NULL, 4, argv, argvlen);
}

static void
handle_entries(const redisReply *entries, const char *how)
{
	const redisReply	*e;
	struct event		*ev;
	char			 q[KEY_MAX * 4 + 1];
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
			event_lost(e->element[0]->str, e->element[0]->len, 1);
			continue;
		}
		if ((ev = event_new(e->element[0], e->element[1])) == NULL) {
			/* Still pending: re-read at the next reconnect. */
			log_err("event=bad_entry id=%s reason=\"out of memory "
			    "or not a stream id\"", log_quote(q, 64,
			    e->element[0]->str, e->element[0]->len));
			continue;
		}
		if (tfind(ev, &es.held, event_cmp) != NULL) {
			event_free(ev);	/* already on its way */
			continue;
		}
		if (tsearch(ev, &es.held, event_cmp) == NULL) {
			log_err("event=bad_entry id=%s reason=\"out of "
			    "memory\"", ev->id);
			event_free(ev);
			continue;
		}
		es.nheld++;
		alerter.stats.events_read++;
		if (strcmp(how, "claimed") == 0)
			alerter.stats.events_claimed++;
		if (strcmp(how, "new") != 0 || log_verbose())
			log_info("event=event_%s id=%s rule=%s key=\"%s\" "
			    "count=%lld", how, ev->id, ev->rule,
			    log_quote(q, sizeof(q), ev->key, ev->key_len),
			    ev->count);
		batch_add(ev);
	}
}

static void
group_cb(redisAsyncContext *ac, void *r, void *priv)
{
	redisReply	*reply = r;

	(void)ac;
	(void)priv;
	if (reply == NULL)
		return;
	if (reply->type == REDIS_REPLY_ERROR &&
	    strncmp(reply->str, "BUSYGROUP", 9) != 0)
		log_warn("event=group_create_failed stream=%s group=%s "
		    "reason=\"%s\"", es.stream, es.group, reply->str);
	else if (reply->type != REDIS_REPLY_ERROR)
		log_info("event=group_created stream=%s group=%s", es.stream,
		    es.group);
}

static void
group_create(void)
{
	const char	*argv[] = { "XGROUP", "CREATE", es.stream, es.group,
			    "$", "MKSTREAM" };

	rconn_command(es.cmd, group_cb, NULL, 6, argv, NULL);
}

/* XREADGROUP's reply: [[stream, entries]], or nil when nothing is new. */
static const redisReply *
read_entries(const redisReply *reply)
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
 * read_script's reply: log what the group lost to trimming and return the
 * XREADGROUP reply inside, or NULL if the reply is not what it sends.
 */
static redisReply *
read_lost(redisReply *reply)
{
	long long	 lost;

	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
	    reply->element[0]->type != REDIS_REPLY_INTEGER)
		return NULL;
	lost = reply->element[0]->integer;
	if (lost > 0) {
		alerter.stats.events_lost += (uint64_t)lost;
		log_err("event=events_trimmed lost=%lld stream=%s group=%s "
		    "reason=\"trimmed from the stream before any alerter read "
		    "them: raise events.stream_maxlen\"", lost, es.stream,
		    es.group);
	} else if (lost < 0 && !es.lost_unknown_logged++)
		log_warn("event=events_trimmed_unknown stream=%s group=%s "
		    "reason=\"the group keeps no read counter (set by "
		    "XGROUP SETID?): entries trimmed unread cannot be "
		    "counted\"", es.stream, es.group);
	return reply->element[1];
}

static void
read_cb(redisAsyncContext *ac, void *r, void *priv)
{
	redisReply		*reply = r;
	const redisReply	*entries, *last;
	size_t			 n;

	(void)ac;
	(void)priv;
	if (reply == NULL || alerter.stopping) {
		es.reading = 0;	/* the connection failed: ready() restarts */
		return;
	}
	if (reply->type == REDIS_REPLY_ERROR) {
		es.reading = 0;
		if (strncmp(reply->str, "NOGROUP", 7) == 0 &&
		    ev_now(alerter.loop) >= es.next_group) {
			/* Someone deleted the stream: make it again. */
			log_warn("event=group_missing stream=%s group=%s "
			    "action=create", es.stream, es.group);
			es.next_group = ev_now(alerter.loop) + POLL_S;
			group_create();
			read_kick();
		} else if (!es.read_error_logged++)
			log_warn("event=read_failed stream=%s reason=\"%s\"",
			    es.stream, reply->str);
		return;
	}
	es.read_error_logged = 0;
	if (!es.read_pel && (reply = read_lost(reply)) == NULL) {
		log_warn("event=read_failed stream=%s reason=\"unexpected "
		    "reply shape\"", es.stream);
		es.reading = 0;
		return;
	}
	entries = read_entries(reply);
	n = entries != NULL ? entries->elements : 0;
	if (es.read_pel) {
		if (n == 0) {
			es.pel_done = 1;
			if (es.pel_resumed > 0)
				log_info("event=resumed pending=%zu",
				    es.pel_resumed);
		} else {
			last = entries->element[n - 1];
			if (last->type == REDIS_REPLY_ARRAY &&
			    last->elements == 2 &&
			    last->element[0]->type == REDIS_REPLY_STRING &&
			    last->element[0]->len < sizeof(es.pel_cursor)) {
				memcpy(es.pel_cursor, last->element[0]->str,
				    last->element[0]->len);
				es.pel_cursor[last->element[0]->len] = '\0';
			} else
				es.pel_done = 1;	/* cannot go on */
			es.pel_resumed += n;
		}
		es.read_again = 1;	/* on to the rest, or to new ones */
	} else if (n >= es.read_count)
		es.read_again = 1;	/* a full read may have left more */
	/* Still "reading": kicks from the batcher only set read_again. */
	handle_entries(entries, es.read_pel ? "resumed" : "new");
	es.reading = 0;
	if (es.read_again)
		read_kick();
}

static void
read_kick(void)
{
	const char	*argv[9];
	char		 count[24];
	size_t		 room;
	int		 argc;

	if (alerter.stopping || !rconn_is_ready(es.cmd) || !es.lease)
		return;
	if (es.reading) {
		es.read_again = 1;
		return;
	}
	room = READ_MAX;
	if (es.pel_done && (room = batch_room()) == 0)
		return;		/* the batcher calls events_kick() later */
	if (room > READ_MAX)
		room = READ_MAX;
	snprintf(count, sizeof(count), "%zu", room);
	if (es.pel_done) {
		argv[0] = "EVAL";
		argv[1] = read_script;
		argv[2] = "1";
		argv[3] = es.stream;
		argv[4] = es.group;
		argv[5] = es.consumer;
		argv[6] = count;
		argc = 7;
	} else {
		argv[0] = "XREADGROUP";
		argv[1] = "GROUP";
		argv[2] = es.group;
		argv[3] = es.consumer;
		argv[4] = "COUNT";
		argv[5] = count;
		argv[6] = "STREAMS";
		argv[7] = es.stream;
		argv[8] = es.pel_cursor;
		argc = 9;
	}
	if (rconn_command(es.cmd, read_cb, NULL, argc, argv, NULL) == 0) {
		es.reading = 1;
		es.read_again = 0;
		es.read_pel = !es.pel_done;
		es.read_count = room;
	}
}

static double
claim_interval(void)
{
	double	 s = alerter.conf->alerts_claim_idle_ms / 4000.;

	return s < 0.25 ? 0.25 : s > 30 ? 30 : s;
}

static void	claim_kick(void);

static void
claim_cb(redisAsyncContext *ac, void *r, void *priv)
{
	redisReply		*reply = r;
	const redisReply	*cur, *del;
	size_t			 i;

	(void)ac;
	(void)priv;
	es.claiming = 0;
	if (reply == NULL || alerter.stopping)
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		if (strstr(reply->str, "unknown command") != NULL) {
			es.autoclaim_broken = 1;
			log_err("event=claim_unavailable reason=\"XAUTOCLAIM "
			    "needs Redis 6.2: events of dead alerters are not "
			    "taken over\"");
		} else
			log_warn("event=claim_failed reason=\"%s\"",
			    reply->str);
		es.next_claim = ev_now(alerter.loop) + claim_interval();
		return;
	}
	/* [next cursor, entries, deleted ids (Redis 7)] */
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2 ||
	    (cur = reply->element[0])->type != REDIS_REPLY_STRING ||
	    cur->len >= sizeof(es.claim_cursor)) {
		log_warn("event=claim_failed reason=\"unexpected reply\"");
		es.next_claim = ev_now(alerter.loop) + claim_interval();
		return;
	}
	memcpy(es.claim_cursor, cur->str, cur->len);
	es.claim_cursor[cur->len] = '\0';
	if (reply->elements > 2 &&
	    (del = reply->element[2])->type == REDIS_REPLY_ARRAY)
		for (i = 0; i < del->elements; i++)
			if (del->element[i]->type == REDIS_REPLY_STRING)
				event_lost(del->element[i]->str,
				    del->element[i]->len, 0);
	handle_entries(reply->element[1], "claimed");
	if (strcmp(es.claim_cursor, "0-0") == 0)
		es.next_claim = ev_now(alerter.loop) + claim_interval();
	else
		claim_kick();	/* more of the pending list to scan */
}

static void
claim_kick(void)
{
	const char	*argv[8];
	char		 idle[24], count[24];
	size_t		 room;

	if (alerter.stopping || !rconn_is_ready(es.cmd) || es.claiming ||
	    !es.lease || !es.pel_done || es.autoclaim_broken ||
	    ev_now(alerter.loop) < es.next_claim)
		return;
	if ((room = batch_room()) == 0)
		return;
	if (room > READ_MAX)
		room = READ_MAX;
	snprintf(idle, sizeof(idle), "%lld",
	    (long long)alerter.conf->alerts_claim_idle_ms);
	snprintf(count, sizeof(count), "%zu", room);
	argv[0] = "XAUTOCLAIM";
	argv[1] = es.stream;
	argv[2] = es.group;
	argv[3] = es.consumer;
	argv[4] = idle;
	argv[5] = es.claim_cursor;
	argv[6] = "COUNT";
	argv[7] = count;
	if (rconn_command(es.cmd, claim_cb, NULL, 8, argv, NULL) == 0)
		es.claiming = 1;
}

int
events_own(struct event **evs, size_t n, redisCallbackFn *fn, void *priv)
{
	const char	**argv;
	size_t		 i;
	int		 rc;

	if (n == 0 || n > OWN_MAX * 100)
		return -1;
	if ((argv = calloc(n + 6, sizeof(*argv))) == NULL)
		return -1;
	argv[0] = "EVAL";
	argv[1] = own_script;
	argv[2] = "1";
	argv[3] = es.stream;
	argv[4] = es.group;
	argv[5] = es.consumer;
	for (i = 0; i < n; i++)
		argv[6 + i] = evs[i]->id;
	rc = rconn_command(es.cmd, fn, priv, (int)(n + 6), argv, NULL);
	free(argv);
	return rc;
}

int
events_own_parse(const void *r, struct event **evs, size_t n)
{
	const redisReply	*reply = r;
	size_t			 i;

	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY ||
	    reply->elements != n)
		return -1;
	for (i = 0; i < n; i++) {
		if (reply->element[i]->type != REDIS_REPLY_INTEGER)
			return -1;
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
	}
	return 0;
}

int
events_ack(struct event **evs, size_t n, redisCallbackFn *fn, void *priv)
{
	const char	**argv;
	size_t		 i;
	int		 rc;

	if ((argv = calloc(n + 3, sizeof(*argv))) == NULL)
		return -1;
	argv[0] = "XACK";
	argv[1] = es.stream;
	argv[2] = es.group;
	for (i = 0; i < n; i++)
		argv[3 + i] = evs[i]->id;
	rc = rconn_command(es.cmd, fn, priv, (int)(n + 3), argv, NULL);
	free(argv);
	return rc;
}

void
events_release(struct event *ev)
{
	if (tdelete(ev, &es.held, event_cmp) != NULL)
		es.nheld--;
	event_free(ev);
}

struct rconn *
events_redis(void)
{
	return es.cmd;
}

void
events_kick(void)
{
	read_kick();
}

/* The keepalive's reply: only counted, the batcher acts on ownership. */
static void
keep_cb(redisAsyncContext *ac, void *r, void *priv)
{
	redisReply	*reply = r;
	size_t		 i, other = 0;

	(void)ac;
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

struct keep_walk {
	struct event	**evs;
	size_t		 n, cap;
};

static void
keep_collect(const void *node, VISIT which, void *arg)
{
	struct keep_walk	*kw = arg;

	if ((which == postorder || which == leaf) && kw->n < kw->cap)
		kw->evs[kw->n++] = *(struct event *const *)node;
}

static void
keep_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct keep_walk	 kw;
	size_t			 off, n;

	(void)loop;
	(void)w;
	(void)revents;
	if (!rconn_is_ready(es.cmd) || es.nheld == 0)
		return;
	kw.cap = es.nheld;
	kw.n = 0;
	if ((kw.evs = calloc(kw.cap, sizeof(*kw.evs))) == NULL)
		return;
	twalk_r(es.held, keep_collect, &kw);
	for (off = 0; off < kw.n; off += n) {
		n = kw.n - off < OWN_MAX ? kw.n - off : OWN_MAX;
		events_own(kw.evs + off, n, keep_cb, NULL);
	}
	free(kw.evs);
}

static void
keep_schedule(void)
{
	double	 s = alerter.conf->alerts_claim_idle_ms / 3000.;

	ev_timer_stop(alerter.loop, &es.keep);
	ev_timer_set(&es.keep, s, s);
	ev_timer_start(alerter.loop, &es.keep);
}

static void	lease_kick(void);

/* Is holder "HOST PID" a process of this host that no longer runs? */
static int
lease_holder_gone(const char *holder, size_t len)
{
	/* "HOST " is ours up to and with the space. */
	size_t	 hlen = strchr(es.lease_me, ' ') + 1 - es.lease_me;
	char	 num[24], *end;
	long	 pid;

	if (len <= hlen || len - hlen >= sizeof(num) ||
	    memcmp(holder, es.lease_me, hlen) != 0)
		return 0;
	memcpy(num, holder + hlen, len - hlen);
	num[len - hlen] = '\0';
	pid = strtol(num, &end, 10);
	return *end == '\0' && pid > 0 && kill((pid_t)pid, 0) == -1 &&
	    errno == ESRCH;
}

static void
lease_cb(redisAsyncContext *ac, void *r, void *priv)
{
	redisReply	*reply = r;
	char		 q[sizeof(es.lease_me) * 4];
	ev_tstamp	 now = ev_now(alerter.loop);

	(void)ac;
	(void)priv;
	es.leasing = 0;
	if (reply == NULL || alerter.stopping) {
		es.lease = 0;	/* taken again before reading on reconnect */
		return;
	}
	if (reply->type == REDIS_REPLY_ERROR) {
		/* A guard must not stop the alerts: go on without it. */
		if (!es.lease)
			log_warn("event=lease_failed key=%s reason=\"%s\" "
			    "action=read_anyway", es.lease_key, reply->str);
		es.lease = 1;
		read_kick();
		return;
	}
	if (reply->type != REDIS_REPLY_STRING)
		return;
	if (reply->len == 0) {
		es.lease_stale[0] = '\0';
		if (!es.lease) {
			if (es.lease_logged > 0)
				log_info("event=consumer_free consumer=%s",
				    es.consumer);
			es.lease_logged = 0;
			es.lease = 1;
			read_kick();
			claim_kick();
		}
		return;
	}
	es.lease = 0;
	if (lease_holder_gone(reply->str, reply->len) &&
	    reply->len < sizeof(es.lease_stale)) {
		/* Our own earlier process: take its lease over now. */
		memcpy(es.lease_stale, reply->str, reply->len);
		es.lease_stale[reply->len] = '\0';
		lease_kick();
		return;
	}
	if (es.lease_logged == 0 || now - es.lease_logged >= LEASE_LOG_S) {
		es.lease_logged = now;
		log_err("event=consumer_in_use consumer=%s holder=\"%s\" "
		    "reason=\"another alerter reads as this consumer: give "
		    "each alerter its own alerts.consumer\" action=wait",
		    es.consumer, log_quote(q, sizeof(q), reply->str,
		    reply->len));
	}
}

static void
lease_kick(void)
{
	const char	*argv[7];
	char		 ttl[24];

	if (alerter.stopping || !rconn_is_ready(es.cmd) || es.leasing)
		return;
	snprintf(ttl, sizeof(ttl), "%d", LEASE_MS);
	argv[0] = "EVAL";
	argv[1] = lease_script;
	argv[2] = "1";
	argv[3] = es.lease_key;
	argv[4] = es.lease_me;
	argv[5] = ttl;
	argv[6] = es.lease_stale;
	if (rconn_command(es.cmd, lease_cb, NULL, 7, argv, NULL) == 0)
		es.leasing = 1;
}

static void
poll_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	lease_kick();
	read_kick();
	claim_kick();
}

static void
cmd_ready(struct rconn *rc, void *arg)
{
	(void)rc;
	(void)arg;
	/* Our own pending entries first: a previous run may have left some. */
	es.pel_done = 0;
	es.pel_resumed = 0;
	snprintf(es.pel_cursor, sizeof(es.pel_cursor), "0");
	es.reading = es.claiming = 0;
	es.lease = es.leasing = 0;
	group_create();
	lease_kick();		/* reading starts once the lease is ours */
	batch_redis_ready();
}

static const struct rconn_cb cmd_cb = { cmd_ready, NULL };

static void
sub_cb(redisAsyncContext *ac, void *r, void *priv)
{
	redisReply	*reply = r;

	(void)ac;
	(void)priv;
	if (reply == NULL || alerter.stopping)
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		log_warn("event=subscribe_failed channel=%s reason=\"%s\"",
		    es.channel, reply->str);
		return;
	}
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
	    reply->element[0]->type != REDIS_REPLY_STRING)
		return;
	/*
	 * The payload is not even parsed: the stream entry is the truth.  A
	 * new subscription reads too, for what was published while we were
	 * not listening.
	 */
	if (strcmp(reply->element[0]->str, "message") == 0 ||
	    strcmp(reply->element[0]->str, "subscribe") == 0)
		read_kick();
}

static void
sub_ready(struct rconn *rc, void *arg)
{
	redisAsyncContext	*ac = rconn_context(rc);
	const char		*ch = alerter.conf->events_channel;
	char			*copy;

	(void)arg;
	if (ac == NULL)
		return;
	if ((copy = strdup(ch)) != NULL) {
		free(es.channel);
		es.channel = copy;
	}
	/* Not rconn_command(): the callback runs for every message. */
	redisAsyncCommand(ac, sub_cb, NULL, "SUBSCRIBE %b", ch, strlen(ch));
}

static const struct rconn_cb sub_cbs = { sub_ready, NULL };

int
events_init(char *err, size_t errlen)
{
	const struct conf	*c = alerter.conf;
	char			 host[256];

	if ((es.stream = strdup(c->events_stream)) == NULL ||
	    (es.group = strdup(c->events_group)) == NULL ||
	    (es.consumer = strdup(c->alerts_consumer)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (gethostname(host, sizeof(host)) == -1)
		snprintf(host, sizeof(host), "unknown");
	host[sizeof(host) - 1] = '\0';
	snprintf(es.lease_me, sizeof(es.lease_me), "%s %ld", host,
	    (long)getpid());
	if (asprintf(&es.lease_key, "%s:alerter:%s", c->redis_prefix,
	    es.consumer) == -1) {
		es.lease_key = NULL;
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	snprintf(es.claim_cursor, sizeof(es.claim_cursor), "0-0");
	snprintf(es.pel_cursor, sizeof(es.pel_cursor), "0");
	es.next_claim = ev_now(alerter.loop) + claim_interval();
	ev_timer_init(&es.poll, poll_cb, POLL_S, POLL_S);
	ev_timer_start(alerter.loop, &es.poll);
	ev_timer_init(&es.keep, keep_timer_cb, 0., 0.);
	keep_schedule();
	es.cmd = rconn_new(alerter.loop, c, "alerter", &cmd_cb, NULL,
	    CMD_HUNG_S);
	es.sub = rconn_new(alerter.loop, c, "alerter-sub", &sub_cbs, NULL, 0);
	if (es.cmd == NULL || es.sub == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

void
events_reload(const struct conf *old)
{
	const struct conf	*c = alerter.conf;

	rconn_set_conf(es.cmd, c);
	rconn_set_conf(es.sub, c);
	if (strcmp(old->events_channel, c->events_channel) != 0)
		rconn_reset(es.sub, "events.channel changed");
	if (strcmp(es.stream, c->events_stream) != 0 ||
	    strcmp(es.group, c->events_group) != 0 ||
	    strcmp(es.consumer, c->alerts_consumer) != 0)
		log_warn("event=reload note=\"events.stream, events.group and "
		    "alerts.consumer take effect at restart\"");
	if (old->alerts_claim_idle_ms != c->alerts_claim_idle_ms)
		keep_schedule();
}

void
events_disconnect(void)
{
	ev_timer_stop(alerter.loop, &es.poll);
	ev_timer_stop(alerter.loop, &es.keep);
	/* Pending callbacks run now, with NULL replies. */
	rconn_free(es.sub);
	rconn_free(es.cmd);
	es.sub = es.cmd = NULL;
}

void
events_free(void)
{
	tdestroy(es.held, event_free);
	es.held = NULL;
	es.nheld = 0;
	free(es.stream);
	free(es.group);
	free(es.consumer);
	free(es.channel);
	free(es.lease_key);
}
