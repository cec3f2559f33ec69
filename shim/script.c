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
	struct ask		 ask;		/* points into the session */
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

/* The longest key name: a head (prefix, kind, rule, window) and a key. */
#define SCRIPT_KEYLEN	(KEY_MAX * 3 + 256)
#define SCRIPT_NKEYS	(3 + 2 * CONF_LIMITS_MAX)
#define SCRIPT_NARGS	(3 + SCRIPT_NKEYS + 12 + 3 * CONF_LIMITS_MAX)

/*
 * The command is written in RESP here rather than by hiredis: its generic
 * formatter was half of the shim's work per request.  RESP is simple: an
 * array of bulk strings, "*N\r\n" then "$LEN\r\nBYTES\r\n" for each.
 */
struct resp {
	char	*p, *end;
	int	 n;		/* arguments so far */
};

static char *
resp_uint(char *p, unsigned long long v)
{
	char	 tmp[24];
	int	 i = 0;

	do
		tmp[i++] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	while (i > 0)
		*p++ = tmp[--i];
	return p;
}

/* Append one bulk string; the caller sized the buffer for all of them. */
static void
resp_arg(struct resp *r, const char *s, size_t len)
{
	*r->p++ = '$';
	r->p = resp_uint(r->p, len);
	*r->p++ = '\r';
	*r->p++ = '\n';
	memcpy(r->p, s, len);
	r->p += len;
	*r->p++ = '\r';
	*r->p++ = '\n';
	r->n++;
}

static void
resp_str(struct resp *r, const char *s)
{
	resp_arg(r, s, strlen(s));
}

/* A bulk string of two parts: a key name's head and the escaped key. */
static void
resp_key(struct resp *r, const char *head, const char *ekey, size_t elen)
{
	size_t	 hlen = strlen(head);

	*r->p++ = '$';
	r->p = resp_uint(r->p, hlen + elen);
	*r->p++ = '\r';
	*r->p++ = '\n';
	memcpy(r->p, head, hlen);
	memcpy(r->p + hlen, ekey, elen);
	r->p += hlen + elen;
	*r->p++ = '\r';
	*r->p++ = '\n';
	r->n++;
}

static void
resp_num(struct resp *r, long long v)
{
	char	 buf[24];

	if (v < 0)
		resp_arg(r, buf, snprintf(buf, sizeof(buf), "%lld", v));
	else
		resp_arg(r, buf, resp_uint(buf, (unsigned long long)v) - buf);
}

/*
 * One EVALSHA per request, so this is the hot path: the heads of the key
 * names and the limits' numbers were made at config load, and a request
 * only copies bytes.  Key names: PREFIX:[KIND:]RULE[.WINDOW]:ESCAPED_KEY.
 */
static int
script_send(struct pending *p)
{
	const struct conf	*c = shim.conf;
	const struct ask	*a = &p->ask;
	const struct conf_rule	*r = a->rule;
	const struct conf_limit	*l;
	char			 ekey[KEY_MAX * 3 + 1];
	/* Arguments after the keys are short but for the subject. */
	char			 cmd[SCRIPT_NKEYS * SCRIPT_KEYLEN +
				    SCRIPT_NARGS * 32 + KEY_MAX * 3 + 4096],
				*args;
	char			 factor[24];
	struct resp		 resp;
	size_t			 i, elen, nkeys = 3 + 2 * r->nlimits;

	elen = script_escape_key(ekey, sizeof(ekey), a->key, a->key_len);
	/* Names are at most CONF_NAME_LEN, the subject 998 bytes: it fits. */

	/* The argument count goes first; leave room and write it last. */
	args = cmd + 16;
	resp.p = args;
	resp.n = 0;
	resp_str(&resp, "EVALSHA");
	resp_arg(&resp, script_sha, 40);
	resp_num(&resp, (long long)nkeys);
	resp_key(&resp, r->subjects_head, ekey, elen);
	resp_str(&resp, c->events_stream);
	resp_key(&resp, r->override_head, ekey, elen);
	for (i = 0; i < r->nlimits; i++) {
		resp_key(&resp, r->limits[i].state_head, ekey, elen);
		resp_key(&resp, r->limits[i].crossed_head, ekey, elen);
	}
	resp_str(&resp, r->name);
	resp_arg(&resp, ekey, elen);
	resp_num(&resp, a->cost);
	resp_str(&resp, c->hostname);
	resp_str(&resp, c->events_channel);
	if (a->subject != NULL)
		resp_arg(&resp, a->subject, a->subject_len);
	else
		resp_str(&resp, "");
	resp_num(&resp, (long long)c->events_stream_maxlen);
	resp_str(&resp, a->peek ? "peek" : "count");
	resp_str(&resp, conf_algorithm_name(r->algorithm));
	resp_str(&resp, r->shadow ? "1" : "0");
	resp_str(&resp, r->count_denied ? "1" : "0");
	if (a->factor == 1)
		resp_str(&resp, "1");
	else
		resp_arg(&resp, factor, snprintf(factor, sizeof(factor),
		    "%.6g", a->factor));
	for (i = 0; i < r->nlimits; i++) {
		l = &r->limits[i];
		resp_str(&resp, l->text[0]);
		resp_str(&resp, l->text[1]);
		resp_str(&resp, l->text[2]);
	}
	/* "*N\r\n" right before the arguments. */
	{
		char	 head[16], *h = head;

		*h++ = '*';
		h = resp_uint(h, (unsigned long long)resp.n);
		*h++ = '\r';
		*h++ = '\n';
		memcpy(args - (h - head), head, h - head);
		return rconn_formatted(shim.redis, script_reply_cb, p,
		    args - (h - head), resp.p - (args - (h - head)));
	}
}

struct pending *
script_submit(struct session *s, const struct ask *a)
{
	struct pending	*p;

	if (!rconn_is_ready(shim.redis) || script_sha[0] == '\0')
		return NULL;
	if ((p = calloc(1, sizeof(*p))) == NULL)
		return NULL;
	p->session = s;
	p->ask = *a;
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

/* { answer, count, ttl_ms, crossed, limit number, over, override } */
#define SCRIPT_REPLY_LEN	7

static int
script_reply_ok(const redisReply *r)
{
	size_t	 i;

	if (r->type != REDIS_REPLY_ARRAY || r->elements != SCRIPT_REPLY_LEN)
		return 0;
	for (i = 0; i < SCRIPT_REPLY_LEN; i++)
		if (r->element[i]->type != REDIS_REPLY_INTEGER)
			return 0;
	return 1;
}

static void
script_log(const struct pending *p, const redisReply *reply)
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

static void
script_reply_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct pending	*p = priv;
	redisReply	*reply = r;
	char		 why[160];

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
	script_log(p, reply);
	session_answer(p->session, reply->element[0]->integer != 0, NULL);
	free(p);
}
