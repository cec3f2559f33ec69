/*
 * decide.c: the shim's side of scripts/count.lua: one EVALSHA per
 * decision, on the one pipelined Redis connection, and its reply.
 *
 * The command is written in RESP here (common/resp.h), into a call sized
 * for this request, from what the config prepared per rule (key name
 * heads and limits as text, common/keyspace.h): a request only copies
 * bytes.  The script registry (common/script.c) loads the script and
 * retries once on NOSCRIPT.
 *
 * Each request in flight has a struct pending, carried in the registry's
 * call until the reply comes (one allocation per request).  When the
 * client goes first, the session detaches itself and the reply finds no
 * session: a reply never touches freed memory.  An error from Redis is never read as a verdict:
 * it is the fail policy, counted by its reason.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
};

void
decide_detach(struct pending *p)
{
	p->session = NULL;
}

/* { answer, count, ttl_ms, crossed, limit number, over, override } */
#define DECIDE_REPLY_LEN	7

static int
decide_reply_ok(const redisReply *r)
{
	size_t	 i;

	if (r->type != REDIS_REPLY_ARRAY || r->elements != DECIDE_REPLY_LEN)
		return 0;
	for (i = 0; i < DECIDE_REPLY_LEN; i++)
		if (r->element[i]->type != REDIS_REPLY_INTEGER)
			return 0;
	return 1;
}

static void
decide_log(const struct pending *p, const redisReply *reply)
{
	const struct ask	*a = &p->ask;
	long long		 answer = reply->element[0]->integer;
	long long		 count = reply->element[1]->integer;
	long long		 which = reply->element[4]->integer;
	long long		 over = reply->element[5]->integer;
	const struct conf_limit	*l;
	char			 qkey[KEY_MAX * 4 + 1];

	shim.stats.decisions++;
	if (answer)
		shim.stats.yes++;
	l = &a->rule->limits[which >= 1 && (size_t)which <= a->rule->nlimits ?
	    which - 1 : 0];
	if (reply->element[3]->integer) {
		shim.stats.crossings++;
		log_info("event=crossing rule=%s key=\"%s\" count=%lld "
		    "limit=%lld window_ms=%lld%s", a->rule->name,
		    log_quote(qkey, sizeof(qkey), a->key, a->key_len), count,
		    (long long)l->limit, (long long)l->window_ms,
		    a->rule->shadow ? " shadow=yes" : "");
	}
	if (log_verbose())
		log_debug("event=decision rule=%s key=\"%s\" cost=%lld "
		    "count=%lld limit=%lld ttl_ms=%lld answer=%s%s%s%s",
		    a->rule->name, log_quote(qkey, sizeof(qkey), a->key,
		    a->key_len), a->cost, count, (long long)l->limit,
		    reply->element[2]->integer, answer ? "yes" : "no",
		    a->peek ? " mode=peek" : "",
		    a->rule->shadow && over ? " shadow_would_answer=yes" : "",
		    reply->element[6]->integer ? " override=redis" : "");
}

/* Why an error reply (or none) means the fail policy. */
static enum fail_reason
decide_error_reason(const redisReply *r)
{
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

void
decide_shutdown(void)
{
	log_limit_stop(&warn_late);
}

static void
decide_reply_cb(void *priv, redisReply *reply)
{
	struct pending	*p = priv;
	char		 why[160];

	/*
	 * The client left (or timed out) before Redis answered.  The script
	 * ran all the same: a crossing it recorded is counted here too, or
	 * the shims' crossings would not add up to the mails.  The request's
	 * key lived in the session and its rule may be gone with a reload:
	 * the stream entry names both.
	 */
	if (p->session == NULL) {
		if (reply != NULL && decide_reply_ok(reply) &&
		    reply->element[3]->integer) {
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
	} else if (!decide_reply_ok(reply))
		session_fail(p->session, FAIL_BAD_REPLY, "unexpected reply "
		    "shape");
	else {
		decide_log(p, reply);
		session_answer(p->session, reply->element[0]->integer != 0,
		    NULL);
	}
	/* p goes with the call, after this returns. */
}

/*
 * The command, written into a call sized for it: the keys as keyspace.c
 * names them, then count.lua's arguments, in its order.
 */
static struct script_call *
decide_command(const struct ask *a, const char *ekey, size_t elen,
    size_t shard, const char **cmd, size_t *len, struct pending **p)
{
	const struct conf		*c = shim.conf;
	const struct conf_rule		*r = a->rule;
	const struct keyspace_rule	*ks = r->ks;
	struct script_call		*call;
	struct resp			 resp;
	char				 factor[24];
	size_t				 i, cap;

	/*
	 * Room for exactly this request: the keys, then every argument's own
	 * bytes and resp_size()'s bound on its framing; a number takes 24 at
	 * most, a name CONF_NAME_LEN.
	 */
	cap = RESP_HEAD + resp_size(7) + resp_size(40) + resp_size(24) +
	    keyspace_decision_size(c, r, shard, elen) +
	    resp_size(strlen(r->name)) + resp_size(elen) + resp_size(24) +
	    resp_size(strlen(c->hostname)) + resp_size(strlen(c->events_channel)) +
	    resp_size(a->subject_len) + resp_size(24) + 2 * resp_size(7) +
	    2 * resp_size(1) + resp_size(24) + resp_size(strlen(c->events_group)) +
	    3 * r->nlimits * resp_size(24);
	if ((call = script_call_new(cap, sizeof(**p))) == NULL)
		return NULL;
	*p = script_call_user(call);
	resp_init(&resp, script_call_buf(call));
	resp_str(&resp, "EVALSHA");
	resp_arg(&resp, script_defs[SCRIPT_COUNT].sha, 40);
	resp_num(&resp, (long long)keyspace_decision_nkeys(r));
	keyspace_decision_keys(&resp, c, r, shard, ekey, elen);
	resp_str(&resp, r->name);
	resp_arg(&resp, ekey, elen);
	resp_num(&resp, a->cost);
	resp_str(&resp, c->hostname);
	resp_str(&resp, c->events_channel);
	resp_arg(&resp, a->subject != NULL ? a->subject : "",
	    a->subject_len);
	resp_num(&resp, (long long)c->events_stream_maxlen);
	resp_str(&resp, a->peek ? "peek" : "count");
	resp_str(&resp, conf_algorithm_name(r->algorithm));
	resp_str(&resp, r->shadow ? "1" : "0");
	resp_str(&resp, r->count_denied ? "1" : "0");
	if (a->factor == 1)
		resp_str(&resp, "1");
	else
		resp_arg(&resp, factor, (size_t)snprintf(factor,
		    sizeof(factor), "%.6g", a->factor));
	resp_str(&resp, c->events_group);
	for (i = 0; i < r->nlimits; i++) {
		resp_str(&resp, ks->limit_text[i][0]);
		resp_str(&resp, ks->limit_text[i][1]);
		resp_str(&resp, ks->limit_text[i][2]);
	}
	*cmd = resp_finish(&resp, len);
	return call;
}

enum fail_reason
decide_submit(struct session *s, const struct ask *a, struct pending **out)
{
	const struct keyspace_shards	*sh = shim.conf->shards;
	struct pending			*p;
	struct script_call		*call;
	struct script_conn		*sc;
	char				 ekey[KEYSPACE_EKEY_MAX + 1];
	const char			*cmd;
	size_t				 len, elen, shard;

	*out = NULL;
	/* One decision, one node: the one serving the key's shard. */
	elen = keyspace_escape(ekey, sizeof(ekey), a->key, a->key_len);
	shard = keyspace_shard_of(sh, ekey, elen);
	if ((sc = shim_scripts(sh->slot[shard])) == NULL)
		return FAIL_NOT_CONNECTED;
	if ((call = decide_command(a, ekey, elen, shard, &cmd, &len, &p)) ==
	    NULL)
		return FAIL_NOMEM;
	p->session = s;
	p->ask = *a;
	if (script_call_send(sc, call, SCRIPT_COUNT, cmd, len,
	    decide_reply_cb, p) == -1) {
		script_call_free(call);
		/* rconn refuses only when it is down or out of memory. */
		return FAIL_NOT_CONNECTED;
	}
	*out = p;
	return FAIL_NONE;
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
