/*
 * store.c: the alerter's Redis connections.
 *
 *   cmd   every command: the streams, the lease, the lookups; its scripts
 *         (read.lua, own.lua, lease.lua) are loaded on each connect.  One
 *         connection, or in a Cluster one per master (common/cluster.c):
 *         each command names the slot of its key, and goes to its node.
 *   sub   SUBSCRIBE events.channel, as a wake-up only: the payload is not
 *         even parsed, the stream entry is the truth, and a lost wake-up
 *         costs at most the stream's poll period.  In a Cluster a PUBLISH
 *         reaches every node, so one node's subscription is enough.
 *
 * When cmd (re)connects, the stream and the lease start over (our own
 * pending entries first, the lease taken again before reading).  cmd is
 * common/layout.c: the same code whichever Redis layout the config names.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alerter.h"
#include "layout.h"
#include "log.h"
#include "rconn.h"
#include "script.h"

#define STORE_HUNG_S	10.0	/* drop the command connection after this */

static struct layout		*store_cmd;
static struct rconn		*store_sub;
static char			*store_channel;	/* what sub listens to */

/* A node connected (in a Cluster, a master): start over. */
static void
store_cmd_ready(void *arg)
{
	(void)arg;
	lease_connected();
	stream_connected();
}

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

static const struct rconn_cb store_sub_cbs = { .ready = store_sub_ready };

#define STORE_SCRIPTS	(SCRIPT_BIT(SCRIPT_READ) | SCRIPT_BIT(SCRIPT_OWN) | \
			    SCRIPT_BIT(SCRIPT_LEASE))

int
store_init(char *err, size_t errlen)
{
	const struct conf	*c = alerter.conf;

	store_cmd = layout_new(alerter.loop, c, "alerter", STORE_SCRIPTS,
	    STORE_HUNG_S, store_cmd_ready, NULL);
	/*
	 * In a Cluster, one node's subscription hears every PUBLISH: any
	 * seed that answers, another when it fails (rconn.c).
	 */
	store_sub = rconn_new(alerter.loop, c, "alerter-sub", &store_sub_cbs,
	    NULL, 0);
	if (store_cmd == NULL || store_sub == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

void
store_reload(const struct conf *old)
{
	const struct conf	*c = alerter.conf;

	layout_set_conf(store_cmd, c);
	rconn_set_conf(store_sub, c);
	if (strcmp(old->events_channel, c->events_channel) != 0)
		rconn_reset(store_sub, "events.channel changed");
}

void
store_close(void)
{
	/* Pending callbacks run now, with NULL replies. */
	rconn_free(store_sub);
	layout_free(store_cmd);
	store_sub = NULL;
	store_cmd = NULL;
	free(store_channel);
	store_channel = NULL;
}

int
store_ready(void)
{
	return store_cmd != NULL && layout_ready(store_cmd);
}

int
store_up(void)
{
	return store_cmd != NULL && layout_up(store_cmd);
}

int
store_replicas(unsigned slot)
{
	return store_cmd != NULL ? layout_replicas(store_cmd, slot) : 0;
}

const char *
store_state(char *buf, size_t len)
{
	if (store_cmd == NULL)
		return "down";
	return layout_state(store_cmd, buf, len);
}

const char *
store_nodes(char *buf, size_t len)
{
	if (store_cmd == NULL)
		return "";
	return layout_nodes(store_cmd, buf, len);
}

unsigned long
store_script_loads(void)
{
	return store_cmd != NULL ? layout_script_loads(store_cmd) : 0;
}

int
store_command(unsigned slot, redisCallbackFn *fn, void *priv, int argc,
    const char **argv, const size_t *argvlen)
{
	if (store_cmd == NULL)
		return -1;
	return layout_command(store_cmd, slot, fn, priv, argc, argv, argvlen);
}

int
store_script(unsigned slot, enum script_id id, script_reply_fn *fn,
    void *priv, int argc, const char **argv)
{
	if (store_cmd == NULL)
		return -1;
	return layout_script(store_cmd, slot, id, fn, priv, argc, argv, NULL);
}
