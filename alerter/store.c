/*
 * store.c: the alerter's two Redis connections.
 *
 *   cmd   every command: the stream, the lease, the lookups; its scripts
 *         (read.lua, own.lua, lease.lua) are loaded on each connect
 *   sub   SUBSCRIBE events.channel, as a wake-up only: the payload is not
 *         even parsed, the stream entry is the truth, and a lost wake-up
 *         costs at most the stream's poll period
 *
 * When cmd (re)connects, the stream and the lease start over (our own
 * pending entries first, the lease taken again before reading).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alerter.h"
#include "log.h"
#include "rconn.h"
#include "script.h"

#define STORE_HUNG_S	10.0	/* drop the command connection after this */

static struct rconn		*store_cmd;
static struct rconn		*store_sub;
static struct script_conn	*store_sc;
static char			*store_channel;	/* what sub listens to */

static void
store_cmd_ready(struct rconn *rc, void *arg)
{
	(void)rc;
	(void)arg;
	script_conn_ready(store_sc);
	lease_connected();
	stream_connected();
}

static const struct rconn_cb store_cmd_cb = { store_cmd_ready, NULL };

static void
store_sub_cb(redisAsyncContext *ac, void *r, void *priv)
{
	redisReply	*reply = r;

	(void)ac;
	(void)priv;
	if (reply == NULL || alerter.stopping)
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		log_warn("event=subscribe_failed channel=%s reason=\"%s\"",
		    store_channel, reply->str);
		return;
	}
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
	    reply->element[0]->type != REDIS_REPLY_STRING)
		return;
	/* A new subscription reads too: what was published meanwhile. */
	if (strcmp(reply->element[0]->str, "message") == 0 ||
	    strcmp(reply->element[0]->str, "subscribe") == 0)
		stream_wakeup();
}

static void
store_sub_ready(struct rconn *rc, void *arg)
{
	redisAsyncContext	*ac = rconn_context(rc);
	const char		*ch = alerter.conf->events_channel;
	char			*copy;

	(void)arg;
	if (ac == NULL)
		return;
	if ((copy = strdup(ch)) != NULL) {
		free(store_channel);
		store_channel = copy;
	}
	/* Not rconn_command(): the callback runs for every message. */
	redisAsyncCommand(ac, store_sub_cb, NULL, "SUBSCRIBE %b", ch,
	    strlen(ch));
}

static const struct rconn_cb store_sub_cbs = { store_sub_ready, NULL };

int
store_init(char *err, size_t errlen)
{
	const struct conf	*c = alerter.conf;

	store_cmd = rconn_new(alerter.loop, c, "alerter", &store_cmd_cb, NULL,
	    STORE_HUNG_S);
	store_sc = script_conn_new(alerter.loop, store_cmd,
	    SCRIPT_BIT(SCRIPT_READ) | SCRIPT_BIT(SCRIPT_OWN) |
	    SCRIPT_BIT(SCRIPT_LEASE));
	store_sub = rconn_new(alerter.loop, c, "alerter-sub", &store_sub_cbs,
	    NULL, 0);
	if (store_cmd == NULL || store_sc == NULL || store_sub == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

void
store_reload(const struct conf *old)
{
	const struct conf	*c = alerter.conf;

	rconn_set_conf(store_cmd, c);
	rconn_set_conf(store_sub, c);
	if (strcmp(old->events_channel, c->events_channel) != 0)
		rconn_reset(store_sub, "events.channel changed");
}

void
store_close(void)
{
	/* Pending callbacks run now, with NULL replies. */
	rconn_free(store_sub);
	rconn_free(store_cmd);
	script_conn_free(store_sc);
	store_sub = store_cmd = NULL;
	store_sc = NULL;
	free(store_channel);
	store_channel = NULL;
}

int
store_ready(void)
{
	return store_cmd != NULL && rconn_is_ready(store_cmd);
}

int
store_replicas(void)
{
	return store_cmd != NULL ? rconn_replicas(store_cmd) : 0;
}

const char *
store_state(void)
{
	return store_cmd != NULL ? rconn_state(store_cmd) : "down";
}

int
store_command(redisCallbackFn *fn, void *priv, int argc, const char **argv,
    const size_t *argvlen)
{
	if (store_cmd == NULL)
		return -1;
	return rconn_command(store_cmd, fn, priv, argc, argv, argvlen);
}

struct script_conn *
store_scripts(void)
{
	return store_sc;
}
