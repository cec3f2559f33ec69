/*
 * script.c: the shim's side of scripts/count.lua.
 *
 * The script is compiled into the binary and loaded with SCRIPT LOAD each
 * time the connection comes up; decisions use EVALSHA, so a request costs
 * one small command on the one pipelined connection.  A NOSCRIPT reply (a
 * SCRIPT FLUSH, a failover to a replica that never saw the script) loads
 * it again and retries the request once.
 *
 * Each request in flight has a struct pending, owned by hiredis until the
 * reply comes.  When the client goes first, the session detaches itself and
 * the reply just frees the pending: a reply never touches freed memory.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "rconn.h"
#include "shim.h"

extern const char script_count_lua[];	/* build/count_lua.c */

struct pending {
	struct session		*session;	/* NULL once the client left */
	struct conf_rule	 rule;		/* a copy: reloads free rules */
	struct request		 req;		/* points into session's buffer */
	int			 retried;
};

static char	script_sha[41];

static void	script_reply_cb(redisAsyncContext *, void *, void *);

static void
script_load_cb(redisAsyncContext *ac, void *r, void *priv)
{
	redisReply	*reply = r;

	(void)ac;
	(void)priv;
	if (reply == NULL)
		return;		/* the connection failed; loaded on reconnect */
	if (reply->type != REDIS_REPLY_STRING || reply->len != 40) {
		log_err("event=script_load_failed reason=\"%.*s\"",
		    reply->type == REDIS_REPLY_ERROR ? (int)reply->len : 0,
		    reply->type == REDIS_REPLY_ERROR ? reply->str : "");
		rconn_reset(shim.redis, "SCRIPT LOAD failed");
		return;
	}
	memcpy(script_sha, reply->str, 40);
	script_sha[40] = '\0';
	log_debug("event=script_loaded sha=%s", script_sha);
}

static void
script_group_cb(redisAsyncContext *ac, void *r, void *priv)
{
	redisReply	*reply = r;

	(void)ac;
	(void)priv;
	/* BUSYGROUP: an alerter or another shim made it first. */
	if (reply != NULL && reply->type == REDIS_REPLY_ERROR &&
	    strncmp(reply->str, "BUSYGROUP", 9) != 0)
		log_warn("event=group_create_failed stream=%s reason=\"%.*s\"",
		    shim.conf->events_stream, (int)reply->len, reply->str);
}

static void
script_load(void)
{
	const char	*argv[] = { "SCRIPT", "LOAD", script_count_lua };

	rconn_command(shim.redis, script_load_cb, NULL, 3, argv, NULL);
}

void
script_ready(void)
{
	const struct conf	*c = shim.conf;
	const char		*argv[] = { "XGROUP", "CREATE",
				    c->events_stream, c->events_group, "$",
				    "MKSTREAM" };

	/*
	 * Pipelined ahead of every decision, so EVALSHA with the SHA we
	 * already know is safe at once.  The group is made here as well as
	 * by the alerters: a crossing recorded before any alerter ever ran
	 * must still reach one.
	 */
	script_load();
	rconn_command(shim.redis, script_group_cb, NULL, 6, argv, NULL);
}

void
script_down(void)
{
	/* Nothing to do: pending requests get NULL replies from hiredis. */
}

int
script_init(void)
{
	return 0;
}

size_t
script_escape_key(char *dst, size_t dstlen, const char *key, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t		 i, o = 0;
	unsigned char	 c;

	/*
	 * Printable ASCII stays readable in redis-cli.  Everything else, and
	 * % (the escape itself) and { } (Redis Cluster hash tags, which would
	 * let a sender pick the slot), becomes %XX: no key can reach another
	 * key's name or inject anything into the command.
	 */
	for (i = 0; i < len; i++) {
		c = (unsigned char)key[i];
		if (c > 0x20 && c < 0x7f && c != '%' && c != '{' && c != '}') {
			if (o + 1 >= dstlen)
				break;
			dst[o++] = (char)c;
		} else {
			if (o + 3 >= dstlen)
				break;
			dst[o++] = '%';
			dst[o++] = hex[c >> 4];
			dst[o++] = hex[c & 15];
		}
	}
	if (dstlen > 0)
		dst[o] = '\0';
	return o;
}

static int
script_send(struct pending *p)
{
	const struct conf	*c = shim.conf;
	const struct request	*req = &p->req;
	char			 ekey[KEY_MAX * 3 + 1];
	char			 counter[sizeof(ekey) + 256];
	char			 subjects[sizeof(ekey) + 256];
	char			 limit[24], window[24], maxlen[24];
	const char		*argv[16];
	size_t			 argvlen[16];
	size_t			 elen;
	int			 n;

	elen = script_escape_key(ekey, sizeof(ekey), req->key, req->key_len);
	snprintf(counter, sizeof(counter), "%s:%s:%s", c->redis_prefix,
	    p->rule.name, ekey);
	snprintf(subjects, sizeof(subjects), "%s:subjects:%s:%s",
	    c->redis_prefix, p->rule.name, ekey);
	snprintf(limit, sizeof(limit), "%lld", (long long)p->rule.limit);
	snprintf(window, sizeof(window), "%lld", (long long)p->rule.window_ms);
	snprintf(maxlen, sizeof(maxlen), "%lld",
	    (long long)c->events_stream_maxlen);

	n = 0;
#define ARG(s, l)	do { argv[n] = (s); argvlen[n] = (l); n++; } while (0)
#define ARGS(s)		ARG((s), strlen(s))
	ARGS("EVALSHA");
	ARG(script_sha, 40);
	ARGS("3");
	ARGS(counter);
	ARGS(subjects);
	ARGS(c->events_stream);
	ARGS(p->rule.name);
	ARG(ekey, elen);
	ARGS(limit);
	ARGS(window);
	ARGS("1");
	ARGS(c->hostname);
	ARGS(c->events_channel);
	if (req->subject != NULL)
		ARG(req->subject, req->subject_len);
	else
		ARGS("");
	ARGS(maxlen);
	ARGS("count");
#undef ARG
#undef ARGS
	return rconn_command(shim.redis, script_reply_cb, p, n, argv, argvlen);
}

struct pending *
script_submit(struct session *s, const struct conf_rule *rule,
    const struct request *req)
{
	struct pending	*p;

	if (!rconn_is_ready(shim.redis) || script_sha[0] == '\0')
		return NULL;
	if ((p = calloc(1, sizeof(*p))) == NULL)
		return NULL;
	p->session = s;
	p->rule = *rule;
	p->req = *req;
	if (script_send(p) == -1) {
		free(p);
		return NULL;
	}
	return p;
}

void
script_detach(struct pending *p)
{
	p->session = NULL;
}

static int
script_reply_ok(const redisReply *r)
{
	size_t	 i;

	if (r->type != REDIS_REPLY_ARRAY || r->elements != 4)
		return 0;
	for (i = 0; i < 4; i++)
		if (r->element[i]->type != REDIS_REPLY_INTEGER)
			return 0;
	return 1;
}

static void
script_reply_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct pending	*p = priv;
	redisReply	*reply = r;
	char		 why[160], qkey[KEY_MAX * 4 + 1];

	(void)ac;
	if (p->session == NULL) {
		/* The client left (or timed out) before Redis answered. */
		free(p);
		return;
	}
	if (reply == NULL) {
		session_answer(p->session, -1, "redis connection failed");
		free(p);
		return;
	}
	if (reply->type == REDIS_REPLY_ERROR &&
	    strncmp(reply->str, "NOSCRIPT", 8) == 0 && !p->retried) {
		p->retried = 1;
		log_warn("event=script_missing action=reload");
		script_load();
		if (script_send(p) == 0)
			return;
		session_answer(p->session, -1, "redis connection failed");
		free(p);
		return;
	}
	if (!script_reply_ok(reply)) {
		snprintf(why, sizeof(why), "unexpected reply: %.*s",
		    reply->type == REDIS_REPLY_ERROR ? (int)reply->len : 4,
		    reply->type == REDIS_REPLY_ERROR ? reply->str : "type");
		session_answer(p->session, -1, why);
		free(p);
		return;
	}
	shim.stats.decisions++;
	if (reply->element[0]->integer)
		shim.stats.yes++;
	if (reply->element[3]->integer) {
		shim.stats.crossings++;
		log_info("event=crossing rule=%s key=\"%s\" count=%lld "
		    "limit=%lld", p->rule.name, log_quote(qkey, sizeof(qkey),
		    p->req.key, p->req.key_len),
		    reply->element[1]->integer, (long long)p->rule.limit);
	}
	if (log_verbose())
		log_debug("event=decision rule=%s key=\"%s\" count=%lld "
		    "limit=%lld ttl_ms=%lld answer=%s", p->rule.name,
		    log_quote(qkey, sizeof(qkey), p->req.key, p->req.key_len),
		    reply->element[1]->integer, (long long)p->rule.limit,
		    reply->element[2]->integer,
		    reply->element[0]->integer ? "yes" : "no");
	session_answer(p->session, reply->element[0]->integer != 0, NULL);
	free(p);
}
