/*
 * watch.c: the shim's ear on events.channel.  An override announced there
 * (scripts/override.lua, senderwatch-ctl) empties the near cache at once,
 * so an admin's allow, block or clear shows in the next answer of every
 * shim rather than within the cache's 0.9 s.  A message missed (the
 * connection down, an override made with a plain SET) costs only that:
 * the hold's bound still holds.  In a Cluster a PUBLISH reaches every
 * node, so one node's subscription is enough: any seed that answers.
 *
 * The payload is override.lua's JSON; only its type is looked at, and a
 * string value's quotes are escaped in it, so "type":"override" can be
 * nothing but the type.  The whole cache goes, not one key: overrides are
 * rare, and a held key costs one Redis call to learn again.
 */
#include <string.h>

#include "cache.h"
#include "ovcache.h"
#include "log.h"
#include "rconn.h"
#include "shim.h"

#define WATCH_OVERRIDE	"\"type\":\"override\""

static struct rconn	*watch_rc;
static struct log_limit	 warn_sub = { .event = "subscribe_failed",
	.warn = 1 };

static void
watch_cb(redisAsyncContext *ac, void *r, void *priv)
{
	redisReply	*reply = r;
	char		 q[160];

	(void)ac;
	(void)priv;
	if (reply == NULL)
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		log_limited(shim.loop, &warn_sub, "channel=%s reason=\"%s\" "
		    "note=\"overrides still show within a second\"",
		    shim.conf->events_channel, log_quote(q, sizeof(q),
		    reply->str, reply->len));
		return;
	}
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
	    reply->element[0]->type != REDIS_REPLY_STRING ||
	    strcmp(reply->element[0]->str, "message") != 0 ||
	    reply->element[2]->type != REDIS_REPLY_STRING)
		return;
	if (memmem(reply->element[2]->str, reply->element[2]->len,
	    WATCH_OVERRIDE, sizeof(WATCH_OVERRIDE) - 1) == NULL)
		return;
	shim.stats.near_invalidated++;
	cache_clear();
	ovcache_clear();
}

static void
watch_ready(struct rconn *rc, void *arg)
{
	redisAsyncContext	*ac = rconn_context(rc);
	const char		*ch = shim.conf->events_channel;

	(void)arg;
	if (ac == NULL)
		return;
	/*
	 * Subscribed anew: an override announced while it was down was not
	 * heard, so what the caches hold goes too.
	 */
	cache_clear();
	ovcache_clear();
	/* Not rconn_command(): the callback runs for every message. */
	redisAsyncCommand(ac, watch_cb, NULL, "SUBSCRIBE %b", ch, strlen(ch));
}

static const struct rconn_cb watch_cbs = { .ready = watch_ready };

int
watch_start(void)
{
	/* In a Cluster any node, and another if it fails (rconn.c). */
	watch_rc = rconn_new(shim.loop, shim.conf, "shim-sub", &watch_cbs,
	    NULL, 0);
	return watch_rc == NULL ? -1 : 0;
}

void
watch_reload(const struct conf *old)
{
	const struct conf	*c = shim.conf;

	if (watch_rc == NULL)
		return;
	rconn_set_conf(watch_rc, c);
	if (strcmp(old->events_channel, c->events_channel) != 0)
		rconn_reset(watch_rc, "events.channel changed");
}

void
watch_stop(void)
{
	rconn_free(watch_rc);
	watch_rc = NULL;
	log_limit_stop(&warn_sub);
}
