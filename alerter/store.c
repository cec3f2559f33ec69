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
 * pending entries first, the lease taken again before reading).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alerter.h"
#include "cluster.h"
#include "log.h"
#include "rconn.h"
#include "script.h"

#define STORE_HUNG_S	10.0	/* drop the command connection after this */

static struct rconn		*store_cmd;	/* a Redis, Sentinel's */
static struct script_conn	*store_sc;
static struct cluster		*store_cl;	/* or a Cluster's masters */
static struct rconn		*store_sub;
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

static const struct rconn_cb store_cmd_cb = { .ready = store_cmd_ready };

/* A Cluster's master connected: the scripts load per node (cluster.c). */
static void
store_cluster_ready(void *arg)
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

	if (conf_layout(c) == LAYOUT_CLUSTER) {
		store_cl = cluster_new(alerter.loop, c, "alerter",
		    STORE_SCRIPTS, STORE_HUNG_S, store_cluster_ready, NULL);
		store_sub = rconn_new_at(alerter.loop, c, "alerter-sub",
		    c->cluster_seeds[0], &store_sub_cbs, NULL, 0);
		if (store_cl == NULL || store_sub == NULL) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		return 0;
	}
	store_cmd = rconn_new(alerter.loop, c, "alerter", &store_cmd_cb, NULL,
	    STORE_HUNG_S);
	store_sc = script_conn_new(alerter.loop, store_cmd, STORE_SCRIPTS);
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

	if (store_cl != NULL)
		cluster_set_conf(store_cl, c);
	else
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
	cluster_free(store_cl);
	store_sub = store_cmd = NULL;
	store_sc = NULL;
	store_cl = NULL;
	free(store_channel);
	store_channel = NULL;
}

/* The connection for slot: the one, or its master's. */
static struct rconn *
store_rconn(unsigned slot)
{
	if (store_cl != NULL)
		return cluster_rconn(store_cl, slot);
	return store_cmd != NULL && rconn_is_ready(store_cmd) ? store_cmd :
	    NULL;
}

int
store_ready(void)
{
	if (store_cl != NULL)
		return cluster_ready(store_cl);
	return store_cmd != NULL && rconn_is_ready(store_cmd);
}

int
store_replicas(unsigned slot)
{
	struct rconn	*rc = store_rconn(slot);

	return rc != NULL ? rconn_replicas(rc) : 0;
}

const char *
store_state(char *buf, size_t len)
{
	if (store_cl != NULL)
		return cluster_state(store_cl, buf, len);
	return store_cmd != NULL ? rconn_state(store_cmd) : "down";
}

int
store_command(unsigned slot, redisCallbackFn *fn, void *priv, int argc,
    const char **argv, const size_t *argvlen)
{
	struct rconn	*rc;

	if ((rc = store_rconn(slot)) == NULL)
		return -1;
	return rconn_command(rc, fn, priv, argc, argv, argvlen);
}

int
store_script(unsigned slot, enum script_id id, script_reply_fn *fn,
    void *priv, int argc, const char **argv)
{
	struct script_conn	*sc;

	if (store_cl != NULL)
		sc = cluster_scripts(store_cl, slot);
	else
		sc = store_rconn(slot) != NULL ? store_sc : NULL;
	if (sc == NULL)
		return -1;
	return script_run(sc, id, fn, priv, argc, argv, NULL);
}
