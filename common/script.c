/*
 * script.c: the script registry (see script.h).
 *
 * NOSCRIPT and bursts.  A SCRIPT FLUSH under load fails every EVALSHA in
 * flight.  Each call remembers the load generation it was sent in; only a
 * call sent after the newest SCRIPT LOAD reloads (and starts a new
 * generation), the others are simply resent: on one pipelined connection
 * they reach Redis after that load.  So one flush costs one reload and one
 * log line, not one of each per request.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "rconn.h"
#include "script.h"

/* build/scripts_lua.c, made by the Makefile from scripts/NAME.lua. */
#define SCRIPT_EXTERN(n) \
	extern const char script_##n##_body[], script_##n##_sha[]
SCRIPT_EXTERN(count);
SCRIPT_EXTERN(override);
SCRIPT_EXTERN(read);
SCRIPT_EXTERN(own);
SCRIPT_EXTERN(lease);
#define SCRIPT_DEF(id, n) \
	[id] = { #n, script_##n##_body, script_##n##_sha }

const struct script_def script_defs[SCRIPT_MAX] = {
	SCRIPT_DEF(SCRIPT_COUNT, count),
	SCRIPT_DEF(SCRIPT_OVERRIDE, override),
	SCRIPT_DEF(SCRIPT_READ, read),
	SCRIPT_DEF(SCRIPT_OWN, own),
	SCRIPT_DEF(SCRIPT_LEASE, lease),
};

struct script_conn;

/* A SCRIPT LOAD's reply needs both: which script, on which connection. */
struct script_load {
	struct script_conn	*sc;
	enum script_id		 id;
};

struct script_conn {
	struct ev_loop		*loop;
	struct script_load	 loads[SCRIPT_MAX];
	struct rconn		*rc;
	unsigned		 mask;
	unsigned long		 gen;		/* SCRIPT LOADs sent */
	struct log_limit	 missing;
	int			 mismatch_logged;
	int			 load_failed;	/* refused: do not load again */
	unsigned long		 calls;
	script_route_fn		*route;		/* a Cluster's redirects */
	void			*route_arg;
};

struct script_call {
	struct script_conn	*sc;
	enum script_id		 id;
	script_reply_fn		*fn;
	void			*priv;
	unsigned long		 gen;		/* sc->gen when sent */
	int			 retried;
	int			 redirects;
	char			*cmd;		/* into buf[], or hiredis's */
	size_t			 len;
	int			 formatted;	/* cmd from redisFormat... */
	size_t			 userlen;	/* buf[] starts with the user's */
	_Alignas(16) char	 buf[];
};

#define SCRIPT_USER_ROUND(n)	(((n) + 15) & ~(size_t)15)

struct script_conn *
script_conn_new(struct ev_loop *loop, struct rconn *rc, unsigned mask)
{
	struct script_conn	*sc;
	int			 i;

	if ((sc = calloc(1, sizeof(*sc))) == NULL)
		return NULL;
	sc->loop = loop;
	sc->rc = rc;
	sc->mask = mask;
	sc->missing.event = "script_missing";
	sc->missing.warn = 1;
	for (i = 0; i < SCRIPT_MAX; i++) {
		sc->loads[i].sc = sc;
		sc->loads[i].id = (enum script_id)i;
	}
	return sc;
}

void
script_conn_free(struct script_conn *sc)
{
	if (sc == NULL)
		return;
	log_limit_stop(&sc->missing);
	free(sc);
}

static void
script_load_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct script_load	*l = priv;
	const struct script_def	*d = &script_defs[l->id];
	redisReply		*reply = r;

	(void)ac;
	if (reply == NULL)
		return;		/* the connection failed; loaded on reconnect */
	if (reply->type == REDIS_REPLY_STRING && reply->len == 40 &&
	    memcmp(reply->str, d->sha, 40) == 0) {
		log_debug("event=script_loaded script=%s sha=%s", d->name,
		    d->sha);
		return;
	}
	/*
	 * Refused (an ACL without SCRIPT, say): EVALSHA may still work if
	 * someone loaded it, and if not, each call fails with NOSCRIPT and
	 * gets the fail policy.  Say it loudly, once per connection.
	 */
	l->sc->load_failed = 1;
	if (l->sc->mismatch_logged++)
		return;
	if (reply->type == REDIS_REPLY_ERROR)
		log_err("event=script_load_failed script=%s reason=\"%.*s\"",
		    d->name, (int)reply->len, reply->str);
	else
		log_err("event=script_load_failed script=%s reason=\"the SHA-1 "
		    "is not %s: a different build of the script\"", d->name,
		    d->sha);
}

static void
script_load_all(struct script_conn *sc)
{
	const char	*argv[3] = { "SCRIPT", "LOAD", NULL };
	int		 i;

	sc->gen++;
	for (i = 0; i < SCRIPT_MAX; i++) {
		if (!(sc->mask & SCRIPT_BIT(i)))
			continue;
		argv[2] = script_defs[i].body;
		rconn_command(sc->rc, script_load_cb, &sc->loads[i], 3, argv,
		    NULL);
	}
}

void
script_conn_ready(struct script_conn *sc)
{
	sc->mismatch_logged = 0;
	sc->load_failed = 0;
	script_load_all(sc);
}

unsigned long
script_conn_loads(const struct script_conn *sc)
{
	return sc->gen;
}

unsigned long
script_conn_calls(const struct script_conn *sc)
{
	return sc->calls;
}

void
script_conn_route(struct script_conn *sc, script_route_fn *fn, void *arg)
{
	sc->route = fn;
	sc->route_arg = arg;
}

struct rconn *
script_conn_rconn(const struct script_conn *sc)
{
	return sc->rc;
}

static void
script_call_done(struct script_call *c, redisReply *reply)
{
	c->fn(c->priv, reply);
	script_call_free(c);
}

static void	script_call_cb(redisAsyncContext *, void *, void *);

static void
script_ignore_cb(redisAsyncContext *ac, void *r, void *priv)
{
	(void)ac;
	(void)r;
	(void)priv;
}

/*
 * MOVED SLOT HOST:PORT, ASK SLOT HOST:PORT: send the call to the node
 * named (after ASKING for ASK, on the same connection, so right before
 * it).  0 when it went; -1: the caller gets the error.
 */
static int
script_redirect(struct script_call *c, const redisReply *reply)
{
	struct script_conn	*target;
	const char		*asking[] = { "ASKING" };
	char			 addr[300];
	unsigned		 slot;
	int			 ask;

	ask = strncmp(reply->str, "ASK ", 4) == 0;
	if (!ask && strncmp(reply->str, "MOVED ", 6) != 0)
		return -1;
	if (c->sc->route == NULL || c->redirects >= 2 ||
	    sscanf(reply->str + (ask ? 4 : 6), "%u %299s", &slot, addr) != 2 ||
	    (target = c->sc->route(c->sc->route_arg, slot, addr, ask)) ==
	    NULL)
		return -1;
	c->redirects++;
	if (ask && rconn_command(target->rc, script_ignore_cb, NULL, 1,
	    asking, NULL) == -1)
		return -1;
	c->sc = target;
	c->gen = target->gen;
	target->calls++;
	return rconn_formatted(target->rc, script_call_cb, c, c->cmd, c->len);
}

static void
script_call_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct script_call	*c = priv;
	struct script_conn	*sc = c->sc;
	redisReply		*reply = r;

	(void)ac;
	if (reply != NULL && reply->type == REDIS_REPLY_ERROR &&
	    script_redirect(c, reply) == 0)
		return;
	if (reply == NULL || reply->type != REDIS_REPLY_ERROR ||
	    strncmp(reply->str, "NOSCRIPT", 8) != 0 || c->retried) {
		script_call_done(c, reply);
		return;
	}
	c->retried = 1;
	if (sc->load_failed) {
		/* Loading is refused here: a retry could only fail again. */
		script_call_done(c, reply);
		return;
	}
	if (c->gen == sc->gen) {
		log_limited(sc->loop, &sc->missing, "script=%s action=reload",
		    script_defs[c->id].name);
		script_load_all(sc);
	}
	c->gen = sc->gen;
	if (rconn_formatted(sc->rc, script_call_cb, c, c->cmd, c->len) == -1)
		script_call_done(c, NULL);
}

struct script_call *
script_call_new(size_t cap, size_t userlen)
{
	struct script_call	*c;

	userlen = SCRIPT_USER_ROUND(userlen);
	if ((c = malloc(sizeof(*c) + userlen + cap)) == NULL)
		return NULL;
	c->cmd = NULL;
	c->formatted = 0;
	c->userlen = userlen;
	return c;
}

char *
script_call_buf(struct script_call *c)
{
	return c->buf + c->userlen;
}

void *
script_call_user(struct script_call *c)
{
	return c->buf;
}

void
script_call_free(struct script_call *c)
{
	if (c == NULL)
		return;
	if (c->formatted)
		redisFreeCommand(c->cmd);
	free(c);
}

int
script_call_send(struct script_conn *sc, struct script_call *c,
    enum script_id id, const char *cmd, size_t len, script_reply_fn *fn,
    void *priv)
{
	c->sc = sc;
	c->id = id;
	c->fn = fn;
	c->priv = priv;
	c->gen = sc->gen;
	c->retried = 0;
	c->redirects = 0;
	if (!c->formatted)
		c->cmd = (char *)cmd;
	c->len = len;
	sc->calls++;
	return rconn_formatted(sc->rc, script_call_cb, c, c->cmd, c->len);
}

int
script_run(struct script_conn *sc, enum script_id id, script_reply_fn *fn,
    void *priv, int argc, const char **argv, const size_t *argvlen)
{
	struct script_call	*c;
	const char		**av;
	size_t			*avlen;
	char			*cmd;
	int			 i, len;

	if ((av = calloc(argc + 2, sizeof(*av))) == NULL ||
	    (avlen = calloc(argc + 2, sizeof(*avlen))) == NULL) {
		free(av);
		return -1;
	}
	av[0] = "EVALSHA";
	avlen[0] = 7;
	av[1] = script_defs[id].sha;
	avlen[1] = 40;
	for (i = 0; i < argc; i++) {
		av[i + 2] = argv[i];
		avlen[i + 2] = argvlen != NULL ? argvlen[i] : strlen(argv[i]);
	}
	len = redisFormatCommandArgv(&cmd, argc + 2, av, avlen);
	free(av);
	free(avlen);
	if (len < 0)
		return -1;
	if ((c = script_call_new(0, 0)) == NULL) {
		redisFreeCommand(cmd);
		return -1;
	}
	c->cmd = cmd;
	c->formatted = 1;
	if (script_call_send(sc, c, id, cmd, (size_t)len, fn, priv) == -1) {
		script_call_free(c);
		return -1;
	}
	return 0;
}
