/*
 * rconn.c: a self-healing asynchronous Redis connection.
 *
 *   DOWN --> [RESOLVING] --> CONNECTING --AUTH/SELECT/ROLE/PING ok--> READY
 *     ^           |               |                                     |
 *     +- backoff -+---------------+------ error, deadline, hang, -------+
 *                                          READONLY, a sentinel's switch
 *
 * RESOLVING is Sentinel's: each connect asks the sentinels for the master
 * first (sentinel.c), so a connection that drops finds the new master by
 * itself; a +switch-master message drops the connections to the old one
 * at once and reconnects without waiting for the backoff.
 *
 * The handshake ends with a PING so that "ready" means the server answered,
 * not merely that the kernel accepted the socket: a SIGSTOPped redis-server
 * still accepts connections.
 */
#include <sys/socket.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/adapters/libev.h>

#include "conf.h"
#include "log.h"
#include "rconn.h"
#include "sentinel.h"

/*
 * The cap bounds how long decisions stay on the fail policy after Redis is
 * back: it must stay well under the promised second.  A refused connect
 * every half second costs nothing, even over TCP.
 */
#define RCONN_BACKOFF_MIN	0.05
#define RCONN_BACKOFF_MAX	0.5
#define RCONN_CONNECT_TIMEOUT	1.0

enum rconn_state { RCONN_DOWN, RCONN_RESOLVING, RCONN_CONNECTING,
	RCONN_READY };

struct rconn {
	struct ev_loop		*loop;
	const struct conf	*conf;
	char			 name[32];
	char			 addr[300];	/* connected or dialled to */
	char			*fixed;		/* a Cluster node's: no lookup */
	size_t			 seed;		/* any Cluster node: seed next */
	int			 via_sentinel;	/* fixed at creation */
	struct sentinel_ask	*ask;		/* RESOLVING */
	int			 sentinel_logged;	/* the last verdict */
	struct rconn		*next_sentinel;	/* in rconn_sentinels */
	const struct rconn_cb	*cb;
	void			*arg;
	redisAsyncContext	*ac;
	enum rconn_state	 state;
	double			 backoff;
	double			 hung_s;
	ev_timer		 retry;		/* reconnect after backoff */
	ev_timer		 deadline;	/* connect deadline; watchdog */
	unsigned		 inflight;
	ev_tstamp		 last_reply;
	int			 replicas;	/* ROLE's, at the handshake */
	int			 logged_down;	/* an outage is logged... */
	char			 down_why[128];	/* ...once for each reason */
};

/* Wraps every command to count replies for the watchdog. */
struct rconn_call {
	struct rconn		*rc;
	redisCallbackFn		*fn;
	void			*priv;
};

static void	rconn_connect(struct rconn *);
static void	rconn_drop(struct rconn *, const char *why);

/* The connections that find their master through Sentinel. */
static struct rconn	*rconn_sentinels;

/*
 * An outage is logged when it starts and again only when its reason
 * changes (refused, then "not a master"), not at every retry.
 */
static void
rconn_log_down(struct rconn *rc, int was_ready, const char *why)
{
	if (rc->logged_down && !was_ready &&
	    strncmp(rc->down_why, why, sizeof(rc->down_why) - 1) == 0)
		return;
	log_warn("event=redis_down conn=%s address=%s reason=\"%s\"",
	    rc->name, rc->addr, why);
	snprintf(rc->down_why, sizeof(rc->down_why), "%s", why);
	rc->logged_down = 1;
}

static void
rconn_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	rconn_connect(w->data);
}

static void
rconn_schedule(struct rconn *rc)
{
	ev_timer_stop(rc->loop, &rc->retry);
	ev_timer_set(&rc->retry, rc->backoff, 0.);
	ev_timer_start(rc->loop, &rc->retry);
	rc->backoff *= 2;
	rc->seed++;
	if (rc->backoff > RCONN_BACKOFF_MAX)
		rc->backoff = RCONN_BACKOFF_MAX;
}

/*
 * The only way out of CONNECTING or READY.  The context is detached before
 * it is freed, so callbacks hiredis still runs for it (NULL replies, the
 * disconnect callback) cannot touch the next connection.
 */
static void
rconn_drop(struct rconn *rc, const char *why)
{
	redisAsyncContext	*ac = rc->ac;
	enum rconn_state	 was = rc->state;

	ev_timer_stop(rc->loop, &rc->deadline);
	sentinel_cancel(rc->ask);
	rc->ask = NULL;
	rc->ac = NULL;
	rc->state = RCONN_DOWN;
	rconn_log_down(rc, was == RCONN_READY, why);
	if (ac != NULL) {
		ac->data = NULL;
		redisAsyncFree(ac);	/* deferred by hiredis in a callback */
	}
	rc->inflight = 0;
	if (was == RCONN_READY && rc->cb->down != NULL)
		rc->cb->down(rc, rc->arg);
	rconn_schedule(rc);
}

static void
rconn_deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct rconn	*rc = w->data;
	char		 why[64];

	(void)revents;
	if (rc->state == RCONN_CONNECTING) {
		rconn_drop(rc, "connect timed out");
		return;
	}
	/* Watchdog: replies stopped while commands wait. */
	if (rc->state == RCONN_READY && rc->inflight > 0 && rc->hung_s > 0 &&
	    ev_now(loop) - rc->last_reply >= rc->hung_s) {
		snprintf(why, sizeof(why), "no reply for %.1fs", rc->hung_s);
		rconn_drop(rc, why);
	}
}

static void
rconn_call_cb(redisAsyncContext *ac, void *r, void *privdata)
{
	struct rconn_call	*call = privdata;
	struct rconn		*rc = ac->data;

	/* rc is NULL when this context was dropped: nothing to count. */
	if (rc != NULL) {
		if (rc->inflight > 0)
			rc->inflight--;
		rc->last_reply = ev_now(rc->loop);
	}
	call->fn(ac, r, call->priv);
	free(call);
	if ((rc = ac->data) == NULL || rc->ac != ac || r == NULL ||
	    ((redisReply *)r)->type != REDIS_REPLY_ERROR)
		return;
	if (rc->cb->error != NULL)
		rc->cb->error(rc, rc->arg, r);
	/*
	 * A master demoted under us (a failover) answers writes READONLY:
	 * drop it now rather than keep writing to a replica.  fn, or the
	 * error hook, may have dropped the connection already.
	 */
	if ((rc = ac->data) != NULL && rc->ac == ac &&
	    rconn_error_kind(r) == RERR_READONLY)
		rconn_drop(rc, "READONLY: the server is a replica now");
}

/* The steps of a handshake, in the order they are queued. */
enum rconn_step { STEP_AUTH, STEP_NAME, STEP_ROLE, STEP_INFO, STEP_LAST };

static const char *const rconn_steps[] = { "AUTH or SELECT", "CLIENT",
	"ROLE", "INFO", "PING" };

/* An INFO field's value ("maxmemory_policy:"), or "?" when absent. */
static void
rconn_info_field(const redisReply *reply, const char *name, char *dst,
    size_t len)
{
	const char	*p;
	size_t		 n;

	snprintf(dst, len, "?");
	if ((p = strstr(reply->str, name)) == NULL)
		return;
	p += strlen(name);
	n = strcspn(p, "\r\n");
	if (n >= len)
		n = len - 1;
	memcpy(dst, p, n);
	dst[n] = '\0';
}

/*
 * maxmemory-policy from INFO memory (which works where CONFIG is disabled):
 * every senderwatch key but the stream has a TTL, so every policy but
 * noeviction can evict counters and markers (limits reset, crossings
 * announced twice), and the allkeys ones the stream and its group too.
 */
static void
rconn_check_policy(struct rconn *rc, const redisReply *reply)
{
	char	 policy[64], max[32];

	if (reply->type != REDIS_REPLY_STRING)
		return;
	rconn_info_field(reply, "maxmemory_policy:", policy, sizeof(policy));
	rconn_info_field(reply, "maxmemory_human:", max, sizeof(max));
	if (strcmp(policy, "noeviction") != 0 && strcmp(policy, "?") != 0)
		log_err("event=redis_may_evict conn=%s address=%s policy=%s "
		    "maxmemory=%s reason=\"Redis may evict senderwatch's keys "
		    "when full: limits reset and crossings are announced twice\" "
		    "fix=\"maxmemory-policy noeviction, and maxmemory sized for "
		    "the keys (see the README)\"", rc->name, rc->addr, policy,
		    max);
}

static void
rconn_handshake_cb(redisAsyncContext *ac, void *r, void *privdata)
{
	struct rconn	*rc = ac->data;
	redisReply	*reply = r;
	char		 why[256];
	enum rconn_step	 step = (enum rconn_step)(intptr_t)privdata;

	if (rc == NULL || rc->ac != ac)
		return;
	if (reply == NULL) {
		rconn_drop(rc, ac->errstr[0] ? ac->errstr : "connection lost");
		return;
	}
	switch (step) {
	case STEP_AUTH:
	case STEP_LAST:
		if (reply->type == REDIS_REPLY_ERROR) {
			snprintf(why, sizeof(why), "%s refused: %.*s",
			    rconn_steps[step], (int)reply->len, reply->str);
			rconn_drop(rc, why);
			return;
		}
		break;
	case STEP_ROLE:
		/* Refused (an ACL): go on, the first write will tell. */
		if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
		    reply->element[0]->type == REDIS_REPLY_STRING &&
		    strcmp(reply->element[0]->str, "master") != 0) {
			snprintf(why, sizeof(why), "the server is a %s, not a "
			    "master", reply->element[0]->str);
			rconn_drop(rc, why);
			return;
		}
		/* A master: ["master", offset, [[ip, port, offset]...]]. */
		rc->replicas = reply->type == REDIS_REPLY_ARRAY &&
		    reply->elements == 3 &&
		    reply->element[2]->type == REDIS_REPLY_ARRAY ?
		    (int)reply->element[2]->elements : 0;
		break;
	case STEP_INFO:
		rconn_check_policy(rc, reply);
		break;
	case STEP_NAME:
		break;
	}
	if (step != STEP_LAST)
		return;
	ev_timer_stop(rc->loop, &rc->deadline);
	rc->state = RCONN_READY;
	rc->backoff = RCONN_BACKOFF_MIN;
	rc->last_reply = ev_now(rc->loop);
	rc->logged_down = 0;
	rc->down_why[0] = '\0';
	rc->sentinel_logged = -1;
	log_info("event=redis_up conn=%s address=%s", rc->name, rc->addr);
	if (rc->hung_s > 0) {
		/* Checked a few times per hang period. */
		ev_timer_set(&rc->deadline, rc->hung_s / 4, rc->hung_s / 4);
		ev_timer_start(rc->loop, &rc->deadline);
	}
	if (rc->cb->ready != NULL)
		rc->cb->ready(rc, rc->arg);
}

static void
rconn_connect_cb(const redisAsyncContext *ac, int status)
{
	struct rconn	*rc = ac->data;

	if (rc == NULL || rc->ac != ac)
		return;
	if (status != REDIS_OK) {
		/* hiredis frees the context after this callback. */
		((redisAsyncContext *)ac)->data = NULL;
		rc->ac = NULL;
		rconn_drop(rc, ac->errstr[0] ? ac->errstr : "connect failed");
	}
}

static void
rconn_disconnect_cb(const redisAsyncContext *ac, int status)
{
	struct rconn	*rc = ac->data;

	(void)status;
	if (rc == NULL || rc->ac != ac)
		return;
	/* hiredis frees the context after this callback. */
	((redisAsyncContext *)ac)->data = NULL;
	rc->ac = NULL;
	rconn_drop(rc, ac->errstr[0] ? ac->errstr : "server closed the "
	    "connection");
}

/*
 * TCP keepalive, RCONN_KEEPIDLE s after the last traffic, then a probe
 * every RCONN_KEEPINTVL s, RCONN_KEEPCNT unanswered ones and the
 * connection is gone.  A subscription only ever reads: when its server's
 * host dies or the network between drops (no reset ever comes), nothing
 * else would notice, and it would sit on a dead socket for good, its
 * messages lost.  Commands have the watchdog; this costs them nothing.
 * The kernel's defaults (two hours) are for other purposes; hiredis
 * 0.14's redisEnableKeepAlive waits 15 s.
 */
#define RCONN_KEEPIDLE	5
#define RCONN_KEEPINTVL	2
#define RCONN_KEEPCNT	3

static void
rconn_keepalive(int fd)
{
	int	 on = 1, idle = RCONN_KEEPIDLE, intvl = RCONN_KEEPINTVL;
	int	 cnt = RCONN_KEEPCNT;

	/* Best effort: a socket that refuses is left as it is. */
	(void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl,
	    sizeof(intvl));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
}

redisAsyncContext *
rconn_async_connect(const char *addr)
{
	redisAsyncContext	*ac;
	char			 host[256], *colon;

	if (strncmp(addr, "unix:", 5) == 0)
		return redisAsyncConnectUnix(addr + 5);
	snprintf(host, sizeof(host), "%s", addr);
	if ((colon = strrchr(host, ':')) == NULL)
		return NULL;	/* conf checked there is one */
	*colon = '\0';
	if (host[0] == '[' && colon > host && colon[-1] == ']') {
		colon[-1] = '\0';
		memmove(host, host + 1, strlen(host));
	}
	ac = redisAsyncConnect(host, atoi(colon + 1));
	if (ac != NULL && !ac->err && ac->c.fd >= 0)
		rconn_keepalive(ac->c.fd);
	return ac;
}

static void	rconn_dial(struct rconn *);

/* Sentinel's answer to RESOLVING. */
static void
rconn_resolved(void *arg, enum sentinel_status st, const char *addr,
    const char *why)
{
	struct rconn	*rc = arg;

	rc->ask = NULL;
	if (st == SENTINEL_OK) {
		snprintf(rc->addr, sizeof(rc->addr), "%s", addr);
		rconn_dial(rc);
		return;
	}
	rc->state = RCONN_DOWN;
	/* Two distinct troubles, each said once while it lasts. */
	if (rc->sentinel_logged != (int)st) {
		if (st == SENTINEL_UNKNOWN)
			log_err("event=sentinel_master_unknown conn=%s "
			    "master=%s reason=\"%s\"", rc->name,
			    rc->conf->sentinel_master, why);
		else
			log_err("event=sentinel_unreachable conn=%s master=%s "
			    "reason=\"%s\"", rc->name, rc->conf->sentinel_master,
			    why);
		rc->sentinel_logged = (int)st;
	}
	rconn_schedule(rc);
}

static void
rconn_connect(struct rconn *rc)
{
	const struct conf	*c = rc->conf;

	if (rc->fixed != NULL)
		snprintf(rc->addr, sizeof(rc->addr), "%s", rc->fixed);
	else if (rc->via_sentinel) {
		snprintf(rc->addr, sizeof(rc->addr), "sentinel:%s",
		    c->sentinel_master);
		rc->state = RCONN_RESOLVING;
		if ((rc->ask = sentinel_ask(rc->loop, c, rconn_resolved, rc))
		    == NULL) {
			rc->state = RCONN_DOWN;
			rconn_schedule(rc);
		}
		return;
	} else if (c->cluster_seeds != NULL)
		/*
		 * Any node will do (a subscription: a PUBLISH reaches every
		 * node), so not always the first seed: after each failure the
		 * next, and a dead node costs one backoff, not the
		 * subscription.
		 */
		snprintf(rc->addr, sizeof(rc->addr), "%s",
		    c->cluster_seeds[rc->seed % c->ncluster_seeds]);
	else
		snprintf(rc->addr, sizeof(rc->addr), "%s", c->redis_address);
	rconn_dial(rc);
}

/* Connect to rc->addr and queue the handshake. */
static void
rconn_dial(struct rconn *rc)
{
	const struct conf	*c = rc->conf;
	redisAsyncContext	*ac;
	char			 db[16], cname[48];
	const char		*argv[3];

	ac = rconn_async_connect(rc->addr);
	if (ac == NULL) {
		rc->state = RCONN_DOWN;
		log_err("event=redis_down conn=%s reason=\"out of memory\"",
		    rc->name);
		rconn_schedule(rc);
		return;
	}
	if (ac->err) {
		rconn_log_down(rc, 0, ac->errstr);
		redisAsyncFree(ac);
		rc->state = RCONN_DOWN;
		rconn_schedule(rc);
		return;
	}
	rc->ac = ac;
	ac->data = rc;
	rc->state = RCONN_CONNECTING;
	redisLibevAttach(rc->loop, ac);
	redisAsyncSetConnectCallback(ac, rconn_connect_cb);
	redisAsyncSetDisconnectCallback(ac, rconn_disconnect_cb);

	/* Queued now, written as soon as the socket connects. */
#define STEP(s)	((void *)(intptr_t)(s))
	if (c->redis_password != NULL) {
		argv[0] = "AUTH";
		if (c->redis_username != NULL) {
			argv[1] = c->redis_username;
			argv[2] = c->redis_password;
			redisAsyncCommandArgv(ac, rconn_handshake_cb,
			    STEP(STEP_AUTH), 3, argv, NULL);
		} else {
			argv[1] = c->redis_password;
			redisAsyncCommandArgv(ac, rconn_handshake_cb,
			    STEP(STEP_AUTH), 2, argv, NULL);
		}
	}
	if (c->redis_database != 0) {
		snprintf(db, sizeof(db), "%d", c->redis_database);
		argv[0] = "SELECT";
		argv[1] = db;
		redisAsyncCommandArgv(ac, rconn_handshake_cb, STEP(STEP_AUTH), 2,
		    argv, NULL);
	}
	/* Who is who in CLIENT LIST; refused by an ACL, it does not matter. */
	snprintf(cname, sizeof(cname), "senderwatch-%s", rc->name);
	argv[0] = "CLIENT";
	argv[1] = "SETNAME";
	argv[2] = cname;
	redisAsyncCommandArgv(ac, rconn_handshake_cb, STEP(STEP_NAME), 3, argv,
	    NULL);
	argv[0] = "ROLE";
	redisAsyncCommandArgv(ac, rconn_handshake_cb, STEP(STEP_ROLE), 1, argv,
	    NULL);
	argv[0] = "INFO";
	argv[1] = "memory";
	redisAsyncCommandArgv(ac, rconn_handshake_cb, STEP(STEP_INFO), 2, argv,
	    NULL);
	/* Last: "ready" means the server answered (see the top). */
	argv[0] = "PING";
	redisAsyncCommandArgv(ac, rconn_handshake_cb, STEP(STEP_LAST), 1, argv,
	    NULL);
#undef STEP

	ev_timer_stop(rc->loop, &rc->deadline);
	ev_timer_set(&rc->deadline, RCONN_CONNECT_TIMEOUT, 0.);
	ev_timer_start(rc->loop, &rc->deadline);
}

/*
 * A sentinel announced a new master: every connection to another address
 * goes now, and reconnects at once (asking the sentinels again, which
 * checks the announcement), so that nothing more is written to the old
 * master once the switch is known.
 */
static void
rconn_sentinel_switched(const char *addr)
{
	struct rconn	*rc;
	char		 why[400];

	for (rc = rconn_sentinels; rc != NULL; rc = rc->next_sentinel) {
		rc->backoff = RCONN_BACKOFF_MIN;
		if (rc->state == RCONN_READY && strcmp(rc->addr, addr) == 0)
			continue;
		if (rc->state == RCONN_READY || rc->state == RCONN_CONNECTING) {
			snprintf(why, sizeof(why), "a sentinel switched the "
			    "master to %s", addr);
			rconn_drop(rc, why);
		}
		if (rc->state == RCONN_DOWN) {
			ev_timer_stop(rc->loop, &rc->retry);
			ev_timer_set(&rc->retry, 0., 0.);
			ev_timer_start(rc->loop, &rc->retry);
		}
	}
}

static struct rconn *
rconn_make(struct ev_loop *loop, const struct conf *conf, const char *name,
    const char *fixed, const struct rconn_cb *cb, void *arg, double hung_s)
{
	struct rconn	*rc;

	if ((rc = calloc(1, sizeof(*rc))) == NULL)
		return NULL;
	if (fixed != NULL && (rc->fixed = strdup(fixed)) == NULL) {
		free(rc);
		return NULL;
	}
	rc->loop = loop;
	rc->conf = conf;
	snprintf(rc->name, sizeof(rc->name), "%s", name);
	rc->cb = cb;
	rc->arg = arg;
	rc->hung_s = hung_s;
	rc->backoff = RCONN_BACKOFF_MIN;
	rc->sentinel_logged = -1;
	ev_timer_init(&rc->retry, rconn_retry_cb, 0., 0.);
	rc->retry.data = rc;
	ev_timer_init(&rc->deadline, rconn_deadline_cb, 0., 0.);
	rc->deadline.data = rc;
	if (fixed == NULL && conf->sentinel_master != NULL) {
		rc->via_sentinel = 1;
		if (rconn_sentinels == NULL)
			sentinel_watch(loop, conf, rconn_sentinel_switched);
		rc->next_sentinel = rconn_sentinels;
		rconn_sentinels = rc;
	}
	rconn_connect(rc);
	return rc;
}

struct rconn *
rconn_new(struct ev_loop *loop, const struct conf *conf, const char *name,
    const struct rconn_cb *cb, void *arg, double hung_s)
{
	return rconn_make(loop, conf, name, NULL, cb, arg, hung_s);
}

struct rconn *
rconn_new_at(struct ev_loop *loop, const struct conf *conf, const char *name,
    const char *addr, const struct rconn_cb *cb, void *arg, double hung_s)
{
	return rconn_make(loop, conf, name, addr, cb, arg, hung_s);
}

const char *
rconn_address(const struct rconn *rc)
{
	return rc->addr;
}

void *
rconn_arg(const struct rconn *rc)
{
	return rc->arg;
}

int
rconn_replicas(const struct rconn *rc)
{
	return rc->state == RCONN_READY ? rc->replicas : 0;
}

void
rconn_free(struct rconn *rc)
{
	redisAsyncContext	*ac;

	struct rconn		**pp;

	if (rc == NULL)
		return;
	for (pp = &rconn_sentinels; *pp != NULL; pp = &(*pp)->next_sentinel)
		if (*pp == rc) {
			*pp = rc->next_sentinel;
			if (rconn_sentinels == NULL)
				sentinel_watch_stop();
			break;
		}
	sentinel_cancel(rc->ask);
	rc->ask = NULL;
	ev_timer_stop(rc->loop, &rc->retry);
	ev_timer_stop(rc->loop, &rc->deadline);
	if ((ac = rc->ac) != NULL) {
		rc->ac = NULL;
		ac->data = NULL;
		redisAsyncFree(ac);
	}
	free(rc->fixed);
	free(rc);
}

static int
rconn_same(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

void
rconn_set_conf(struct rconn *rc, const struct conf *c)
{
	const struct conf	*old = rc->conf;
	int			 changed;

	changed = !rconn_same(old->redis_address, c->redis_address) ||
	    !rconn_same(old->redis_username, c->redis_username) ||
	    !rconn_same(old->redis_password, c->redis_password) ||
	    !rconn_same(old->sentinel_master, c->sentinel_master) ||
	    old->redis_database != c->redis_database;
	rc->conf = c;
	/*
	 * The layout (address, Sentinel, Cluster) is the same: daemon.c
	 * refuses a reload that changes it.  The watch keeps a copy of
	 * what it needs: give it the new one.
	 */
	if (rc == rconn_sentinels)
		sentinel_watch(rc->loop, c, rconn_sentinel_switched);
	if (changed && rc->state != RCONN_DOWN) {
		rc->backoff = RCONN_BACKOFF_MIN;
		rconn_drop(rc, "redis settings changed");
	}
}

int
rconn_is_ready(const struct rconn *rc)
{
	return rc->state == RCONN_READY;
}

redisAsyncContext *
rconn_context(struct rconn *rc)
{
	return rc->state == RCONN_READY ? rc->ac : NULL;
}

void
rconn_reset(struct rconn *rc, const char *why)
{
	if (rc->state != RCONN_DOWN)
		rconn_drop(rc, why);
}

/* Queue a command: argv, or RESP already formatted (cmd, len). */
static int
rconn_queue(struct rconn *rc, redisCallbackFn *fn, void *priv, int argc,
    const char **argv, const size_t *argvlen, const char *cmd, size_t len)
{
	struct rconn_call	*call;
	int			 rv;

	if (rc->state != RCONN_READY)
		return -1;
	if ((call = malloc(sizeof(*call))) == NULL)
		return -1;
	call->rc = rc;
	call->fn = fn;
	call->priv = priv;
	if (cmd != NULL)
		rv = redisAsyncFormattedCommand(rc->ac, rconn_call_cb, call,
		    cmd, len);
	else
		rv = redisAsyncCommandArgv(rc->ac, rconn_call_cb, call, argc,
		    argv, argvlen);
	if (rv != REDIS_OK) {
		free(call);
		return -1;
	}
	if (rc->inflight++ == 0)
		rc->last_reply = ev_now(rc->loop);	/* the wait starts now */
	return 0;
}

int
rconn_command(struct rconn *rc, redisCallbackFn *fn, void *priv, int argc,
    const char **argv, const size_t *argvlen)
{
	return rconn_queue(rc, fn, priv, argc, argv, argvlen, NULL, 0);
}

int
rconn_formatted(struct rconn *rc, redisCallbackFn *fn, void *priv,
    const char *cmd, size_t len)
{
	return rconn_queue(rc, fn, priv, 0, NULL, NULL, cmd, len);
}

const char *
rconn_state(const struct rconn *rc)
{
	switch (rc->state) {
	case RCONN_READY:
		return "ready";
	case RCONN_CONNECTING:
		return "connecting";
	case RCONN_RESOLVING:
		return "asking sentinels";
	default:
		return "down";
	}
}

enum rconn_error
rconn_error_kind(const redisReply *r)
{
	static const struct {
		const char		*prefix;
		enum rconn_error	 kind;
	} kinds[] = {
		{ "OOM ", RERR_OOM }, { "READONLY ", RERR_READONLY },
		{ "BUSY ", RERR_BUSY }, { "NOSCRIPT ", RERR_NOSCRIPT },
		{ "LOADING ", RERR_LOADING }, { "NOPERM ", RERR_NOPERM },
		{ "MOVED ", RERR_CLUSTER }, { "ASK ", RERR_CLUSTER },
		{ "TRYAGAIN ", RERR_CLUSTER }, { "CLUSTERDOWN ", RERR_CLUSTER },
	};
	size_t	 i, n;

	if (r->type != REDIS_REPLY_ERROR)
		return RERR_OTHER;
	for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		n = strlen(kinds[i].prefix);
		if (r->len >= n && memcmp(r->str, kinds[i].prefix, n) == 0)
			return kinds[i].kind;
	}
	/* A script's error carries the command's: "... OOM command ..." */
	if (strstr(r->str, "OOM command not allowed") != NULL)
		return RERR_OOM;
	if (strstr(r->str, "READONLY You can't write") != NULL)
		return RERR_READONLY;
	/* An ACL refusing a script's command or key (Redis 7: "ERR The
	 * user executing the script can't run this command..."). */
	if (strstr(r->str, "user executing the script can't") != NULL)
		return RERR_NOPERM;
	/*
	 * A Cluster that is down but lets reads through
	 * (cluster-allow-reads-when-down) runs the script and refuses its
	 * first write: "ERR Script attempted to execute a write command while
	 * the cluster is down and readonly ...".  Nothing was written.
	 */
	if (strstr(r->str, "while the cluster is down") != NULL)
		return RERR_CLUSTER;
	return RERR_OTHER;
}
