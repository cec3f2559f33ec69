/*
 * rconn.c: a self-healing asynchronous Redis connection.
 *
 *   DOWN --connect()--> CONNECTING --AUTH/SELECT/PING ok--> READY
 *     ^                     |                                 |
 *     +--- backoff timer <--+---- error, deadline, hang <-----+
 *
 * The handshake ends with a PING so that "ready" means the server answered,
 * not merely that the kernel accepted the socket: a SIGSTOPped redis-server
 * still accepts connections.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/adapters/libev.h>

#include "conf.h"
#include "log.h"
#include "rconn.h"

/*
 * The cap bounds how long decisions stay on the fail policy after Redis is
 * back: it must stay well under the promised second.  A refused connect
 * every half second costs nothing, even over TCP.
 */
#define RCONN_BACKOFF_MIN	0.05
#define RCONN_BACKOFF_MAX	0.5
#define RCONN_CONNECT_TIMEOUT	1.0

enum rconn_state { RCONN_DOWN, RCONN_CONNECTING, RCONN_READY };

struct rconn {
	struct ev_loop		*loop;
	const struct conf	*conf;
	char			 name[32];
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
	    rc->name, rc->conf->redis_address, why);
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
	/*
	 * A master demoted under us (a failover) answers writes READONLY:
	 * drop it now rather than keep writing to a replica.  fn may have
	 * dropped the connection already.
	 */
	if ((rc = ac->data) != NULL && rc->ac == ac && r != NULL &&
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
		    "the keys (see the README)\"", rc->name,
		    rc->conf->redis_address, policy, max);
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
	log_info("event=redis_up conn=%s address=%s", rc->name,
	    rc->conf->redis_address);
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

static void
rconn_connect(struct rconn *rc)
{
	const struct conf	*c = rc->conf;
	redisAsyncContext	*ac;
	char			 host[256], db[16], cname[48], *colon;
	const char		*argv[3];
	int			 port;

	if (strncmp(c->redis_address, "unix:", 5) == 0)
		ac = redisAsyncConnectUnix(c->redis_address + 5);
	else {
		snprintf(host, sizeof(host), "%s", c->redis_address);
		colon = strrchr(host, ':');
		*colon = '\0';	/* conf checked there is one */
		port = atoi(colon + 1);
		if (host[0] == '[' && colon[-1] == ']') {
			colon[-1] = '\0';
			memmove(host, host + 1, strlen(host));
		}
		ac = redisAsyncConnect(host, port);
	}
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

struct rconn *
rconn_new(struct ev_loop *loop, const struct conf *conf, const char *name,
    const struct rconn_cb *cb, void *arg, double hung_s)
{
	struct rconn	*rc;

	if ((rc = calloc(1, sizeof(*rc))) == NULL)
		return NULL;
	rc->loop = loop;
	rc->conf = conf;
	snprintf(rc->name, sizeof(rc->name), "%s", name);
	rc->cb = cb;
	rc->arg = arg;
	rc->hung_s = hung_s;
	rc->backoff = RCONN_BACKOFF_MIN;
	ev_timer_init(&rc->retry, rconn_retry_cb, 0., 0.);
	rc->retry.data = rc;
	ev_timer_init(&rc->deadline, rconn_deadline_cb, 0., 0.);
	rc->deadline.data = rc;
	rconn_connect(rc);
	return rc;
}

void
rconn_free(struct rconn *rc)
{
	redisAsyncContext	*ac;

	if (rc == NULL)
		return;
	ev_timer_stop(rc->loop, &rc->retry);
	ev_timer_stop(rc->loop, &rc->deadline);
	if ((ac = rc->ac) != NULL) {
		rc->ac = NULL;
		ac->data = NULL;
		redisAsyncFree(ac);
	}
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
	    old->redis_database != c->redis_database;
	rc->conf = c;
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
	return RERR_OTHER;
}
