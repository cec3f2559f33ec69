/*
 * sentinel.c: the master's address from Redis Sentinel (see sentinel.h).
 *
 * An ask walks the sentinels in preference order, one connection at a
 * time, each with SENTINEL_TIMEOUT for the connect, the AUTH and the
 * answer together: a sentinel host that is down must not hold a failover
 * for a second per sentinel.  The order is the process's: the sentinel
 * that answered goes first, for every connection that asks next.
 *
 * What an ask needs from the config is copied at its start: a reload may
 * free the config while an ask is on its way.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libev.h>

#include "log.h"
#include "rconn.h"
#include "sentinel.h"

#define SENTINEL_TIMEOUT	0.25	/* seconds per sentinel */
#define SENTINEL_MAX		CONF_SENTINELS_MAX	/* conf.c checks it */
#define SENTINEL_WATCH_RETRY	0.5	/* the watch: next sentinel after */

/* What an ask or the watch takes from the config. */
struct sentinel_conf {
	char	*master;
	char	*addr[SENTINEL_MAX];
	size_t	 naddr;
	char	*username, *password;
};

struct sentinel_ask {
	struct ev_loop		*loop;
	struct sentinel_conf	 sc;
	sentinel_done_fn	*done;
	void			*arg;
	size_t			 next;		/* index into sentinel_order */
	size_t			 tried;
	unsigned		 unknown;	/* answered "no such master" */
	char			 why[160];	/* the last failure */
	redisAsyncContext	*ac;
	ev_timer		 deadline;
};

/* Preference: indexes into the config's list, the last good one first. */
static size_t	sentinel_order[SENTINEL_MAX];
static size_t	sentinel_norder;

static void	sentinel_try(struct sentinel_ask *);

static int
sentinel_conf_copy(struct sentinel_conf *sc, const struct conf *c)
{
	size_t	 i;

	memset(sc, 0, sizeof(*sc));
	if ((sc->master = strdup(c->sentinel_master)) == NULL)
		return -1;
	for (i = 0; i < c->nsentinel_addresses && i < SENTINEL_MAX; i++)
		if ((sc->addr[sc->naddr++] = strdup(c->sentinel_addresses[i]))
		    == NULL)
			return -1;
	if (c->sentinel_username != NULL &&
	    (sc->username = strdup(c->sentinel_username)) == NULL)
		return -1;
	if (c->sentinel_password != NULL &&
	    (sc->password = strdup(c->sentinel_password)) == NULL)
		return -1;
	/* A new list (the first ask, or a reload): its own order. */
	if (sentinel_norder != sc->naddr) {
		for (i = 0; i < sc->naddr; i++)
			sentinel_order[i] = i;
		sentinel_norder = sc->naddr;
	}
	return 0;
}

static void
sentinel_conf_free(struct sentinel_conf *sc)
{
	size_t	 i;

	for (i = 0; i < sc->naddr; i++)
		free(sc->addr[i]);
	free(sc->master);
	free(sc->username);
	if (sc->password != NULL)
		explicit_bzero(sc->password, strlen(sc->password));
	free(sc->password);
	memset(sc, 0, sizeof(*sc));
}

/* The sentinel that answered is asked first from now on. */
static void
sentinel_prefer(size_t idx)
{
	size_t	 i, j;

	for (i = 0; i < sentinel_norder; i++)
		if (sentinel_order[i] == idx)
			break;
	for (j = i; j > 0 && j < sentinel_norder; j--)
		sentinel_order[j] = sentinel_order[j - 1];
	if (i < sentinel_norder)
		sentinel_order[0] = idx;
}

/* Let go of the connection to the sentinel being asked. */
static void
sentinel_hangup(struct sentinel_ask *a)
{
	redisAsyncContext	*ac = a->ac;

	ev_timer_stop(a->loop, &a->deadline);
	a->ac = NULL;
	if (ac != NULL) {
		ac->data = NULL;
		redisAsyncFree(ac);	/* deferred by hiredis in a callback */
	}
}

static void
sentinel_finish(struct sentinel_ask *a, enum sentinel_status st,
    const char *addr)
{
	sentinel_done_fn	*done = a->done;
	void			*arg = a->arg;
	char			 why[sizeof(a->why)];

	snprintf(why, sizeof(why), "%s", a->why);
	sentinel_hangup(a);
	sentinel_conf_free(&a->sc);
	free(a);
	done(arg, st, addr, why);
}

/* This sentinel failed us: the next one, or the verdict. */
static void
sentinel_next(struct sentinel_ask *a, const char *why)
{
	snprintf(a->why, sizeof(a->why), "%s: %s",
	    a->sc.addr[sentinel_order[a->next]], why);
	sentinel_hangup(a);
	a->next++;
	sentinel_try(a);
}

static void
sentinel_reply_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct sentinel_ask	*a = ac->data;
	redisReply		*reply = r;
	char			 addr[300];

	if (a == NULL)
		return;
	if (priv != NULL) {		/* the AUTH */
		if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
			sentinel_next(a, reply->str);
		return;
	}
	if (reply == NULL) {
		sentinel_next(a, ac->errstr[0] ? ac->errstr :
		    "connection lost");
		return;
	}
	if (reply->type == REDIS_REPLY_NIL) {
		a->unknown++;
		sentinel_next(a, "does not know the master");
		return;
	}
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
	    reply->element[0]->type != REDIS_REPLY_STRING ||
	    reply->element[1]->type != REDIS_REPLY_STRING ||
	    reply->element[0]->len + reply->element[1]->len + 4 >
	    sizeof(addr)) {
		sentinel_next(a, reply->type == REDIS_REPLY_ERROR ?
		    reply->str : "unexpected reply");
		return;
	}
	/* An IPv6 address needs its brackets in host:port. */
	if (memchr(reply->element[0]->str, ':', reply->element[0]->len))
		snprintf(addr, sizeof(addr), "[%s]:%s",
		    reply->element[0]->str, reply->element[1]->str);
	else
		snprintf(addr, sizeof(addr), "%s:%s", reply->element[0]->str,
		    reply->element[1]->str);
	sentinel_prefer(sentinel_order[a->next]);
	sentinel_finish(a, SENTINEL_OK, addr);
}

static void
sentinel_connect_cb(const redisAsyncContext *ac, int status)
{
	struct sentinel_ask	*a = ac->data;

	if (a == NULL || status == REDIS_OK)
		return;
	/* hiredis frees the context after this callback. */
	((redisAsyncContext *)ac)->data = NULL;
	a->ac = NULL;
	sentinel_next(a, ac->errstr[0] ? ac->errstr : "connect failed");
}

static void
sentinel_disconnect_cb(const redisAsyncContext *ac, int status)
{
	struct sentinel_ask	*a = ac->data;

	(void)status;
	if (a == NULL)
		return;
	((redisAsyncContext *)ac)->data = NULL;
	a->ac = NULL;
	sentinel_next(a, "closed the connection");
}

static void
sentinel_deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	sentinel_next(w->data, "no answer in time");
}

/* Ask the sentinel at a->next in the order, or give the verdict. */
static void
sentinel_try(struct sentinel_ask *a)
{
	const char		*argv[3];
	redisAsyncContext	*ac;
	size_t			 idx;

	if (a->next >= a->sc.naddr) {
		if (a->unknown > 0)
			sentinel_finish(a, SENTINEL_UNKNOWN, NULL);
		else
			sentinel_finish(a, SENTINEL_UNREACHABLE, NULL);
		return;
	}
	idx = sentinel_order[a->next];
	if ((ac = rconn_async_connect(a->sc.addr[idx])) == NULL ||
	    ac->err) {
		snprintf(a->why, sizeof(a->why), "%s: %s", a->sc.addr[idx],
		    ac != NULL ? ac->errstr : "out of memory");
		if (ac != NULL)
			redisAsyncFree(ac);
		a->next++;
		sentinel_try(a);
		return;
	}
	a->ac = ac;
	ac->data = a;
	redisLibevAttach(a->loop, ac);
	redisAsyncSetConnectCallback(ac, sentinel_connect_cb);
	redisAsyncSetDisconnectCallback(ac, sentinel_disconnect_cb);
	if (a->sc.password != NULL) {
		argv[0] = "AUTH";
		argv[1] = a->sc.username != NULL ? a->sc.username :
		    a->sc.password;
		argv[2] = a->sc.password;
		redisAsyncCommandArgv(ac, sentinel_reply_cb, a,
		    a->sc.username != NULL ? 3 : 2, argv, NULL);
	}
	argv[0] = "SENTINEL";
	argv[1] = "get-master-addr-by-name";
	argv[2] = a->sc.master;
	redisAsyncCommandArgv(ac, sentinel_reply_cb, NULL, 3, argv, NULL);
	ev_timer_set(&a->deadline, SENTINEL_TIMEOUT, 0.);
	ev_timer_start(a->loop, &a->deadline);
}

struct sentinel_ask *
sentinel_ask(struct ev_loop *loop, const struct conf *c,
    sentinel_done_fn *done, void *arg)
{
	struct sentinel_ask	*a;

	if ((a = calloc(1, sizeof(*a))) == NULL)
		return NULL;
	if (sentinel_conf_copy(&a->sc, c) == -1) {
		sentinel_conf_free(&a->sc);
		free(a);
		return NULL;
	}
	a->loop = loop;
	a->done = done;
	a->arg = arg;
	ev_timer_init(&a->deadline, sentinel_deadline_cb, 0., 0.);
	a->deadline.data = a;
	snprintf(a->why, sizeof(a->why), "no sentinel configured");
	sentinel_try(a);
	return a;
}

void
sentinel_cancel(struct sentinel_ask *a)
{
	if (a == NULL)
		return;
	sentinel_hangup(a);
	sentinel_conf_free(&a->sc);
	free(a);
}

/*
 * The watch: one subscription, moved to the next sentinel when it drops.
 * A message on +switch-master reads "NAME OLDIP OLDPORT NEWIP NEWPORT".
 */
static struct {
	struct ev_loop		*loop;
	struct sentinel_conf	 sc;
	sentinel_switch_fn	*fn;
	redisAsyncContext	*ac;
	size_t			 next;
	ev_timer		 retry;
	int			 on;
} watch;

static void	sentinel_watch_connect(void);

static void
sentinel_watch_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	sentinel_watch_connect();
}

/* The subscription is gone: the next sentinel, in a moment. */
static void
sentinel_watch_lost(void)
{
	watch.ac = NULL;
	watch.next++;
	if (!watch.on)
		return;
	ev_timer_stop(watch.loop, &watch.retry);
	ev_timer_set(&watch.retry, SENTINEL_WATCH_RETRY, 0.);
	ev_timer_start(watch.loop, &watch.retry);
}

static void
sentinel_watch_msg_cb(redisAsyncContext *ac, void *r, void *priv)
{
	redisReply	*reply = r;
	char		 msg[512], name[256], oldip[64], newip[64], addr[160];
	unsigned	 oldport, newport;
	const redisReply *m;

	(void)priv;
	if (ac->data == NULL || reply == NULL)
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		log_warn("event=sentinel_watch_failed reason=\"%s\"",
		    reply->str);
		return;
	}
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
	    reply->element[0]->type != REDIS_REPLY_STRING ||
	    strcmp(reply->element[0]->str, "message") != 0 ||
	    (m = reply->element[2])->type != REDIS_REPLY_STRING ||
	    m->len >= sizeof(msg))
		return;
	memcpy(msg, m->str, m->len);
	msg[m->len] = '\0';
	if (sscanf(msg, "%255s %63s %u %63s %u", name, oldip, &oldport, newip,
	    &newport) != 5 || strcmp(name, watch.sc.master) != 0)
		return;
	if (strchr(newip, ':') != NULL)
		snprintf(addr, sizeof(addr), "[%s]:%u", newip, newport);
	else
		snprintf(addr, sizeof(addr), "%s:%u", newip, newport);
	log_info("event=sentinel_switch master=%s from=%s:%u to=%s", name,
	    oldip, oldport, addr);
	watch.fn(addr);
}

static void
sentinel_watch_connect_cb(const redisAsyncContext *ac, int status)
{
	if (ac->data == NULL || status == REDIS_OK)
		return;
	((redisAsyncContext *)ac)->data = NULL;
	sentinel_watch_lost();
}

static void
sentinel_watch_disconnect_cb(const redisAsyncContext *ac, int status)
{
	(void)status;
	if (ac->data == NULL)
		return;
	((redisAsyncContext *)ac)->data = NULL;
	sentinel_watch_lost();
}

static void
sentinel_watch_connect(void)
{
	const char		*argv[3];
	redisAsyncContext	*ac;

	if (!watch.on || watch.ac != NULL || watch.sc.naddr == 0)
		return;
	ac = rconn_async_connect(watch.sc.addr[watch.next % watch.sc.naddr]);
	if (ac == NULL || ac->err) {
		if (ac != NULL)
			redisAsyncFree(ac);
		sentinel_watch_lost();
		return;
	}
	watch.ac = ac;
	ac->data = &watch;
	redisLibevAttach(watch.loop, ac);
	redisAsyncSetConnectCallback(ac, sentinel_watch_connect_cb);
	redisAsyncSetDisconnectCallback(ac, sentinel_watch_disconnect_cb);
	if (watch.sc.password != NULL) {
		argv[0] = "AUTH";
		argv[1] = watch.sc.username != NULL ? watch.sc.username :
		    watch.sc.password;
		argv[2] = watch.sc.password;
		redisAsyncCommandArgv(ac, NULL, NULL,
		    watch.sc.username != NULL ? 3 : 2, argv, NULL);
	}
	/* Not a one-shot: the callback runs for every message. */
	redisAsyncCommand(ac, sentinel_watch_msg_cb, NULL,
	    "SUBSCRIBE +switch-master");
}

void
sentinel_watch(struct ev_loop *loop, const struct conf *c,
    sentinel_switch_fn *fn)
{
	sentinel_watch_stop();
	if (sentinel_conf_copy(&watch.sc, c) == -1) {
		sentinel_conf_free(&watch.sc);
		return;
	}
	watch.loop = loop;
	watch.fn = fn;
	watch.on = 1;
	ev_timer_init(&watch.retry, sentinel_watch_retry_cb, 0., 0.);
	sentinel_watch_connect();
}

void
sentinel_watch_stop(void)
{
	redisAsyncContext	*ac = watch.ac;

	if (!watch.on)
		return;
	watch.on = 0;
	ev_timer_stop(watch.loop, &watch.retry);
	watch.ac = NULL;
	if (ac != NULL) {
		ac->data = NULL;
		redisAsyncFree(ac);
	}
	sentinel_conf_free(&watch.sc);
}
