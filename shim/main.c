/*
 * main.c: senderwatch-shim's hooks into the daemon life that common/daemon.c
 * runs.  The order matters: sockets are opened while still root, then
 * privileges go, then Redis is dialled.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "ovcache.h"
#include "cluster.h"
#include "daemon.h"
#include "log.h"
#include "rconn.h"
#include "script.h"
#include "shim.h"

#ifndef SW_VERSION
#define SW_VERSION	"dev"
#endif

struct shim shim;

static struct daemon_opts opts = {
	.name = "senderwatch-shim",
	.role = ROLE_SHIM,
	.conf_path = SW_SYSCONFDIR "/senderwatch/config.yaml",
};

/* What the shim needs beyond what conf_load() checks for both daemons. */
static int
shim_check(struct conf_ctx *cx, const struct conf *c)
{
	if (c->nlisten == 0)
		return conf_fail(cx, &c->listen, "no address to listen on");
	return 0;
}

static void
shim_checked(const struct conf *c)
{
	printf("%s: configuration OK (%zu rules)\n", c->path, c->nrules);
}

static void
shim_redis_ready(struct rconn *rc, void *arg)
{
	(void)rc;
	(void)arg;
	/* Pipelined ahead of every decision: EVALSHA is safe at once. */
	script_conn_ready(shim.scripts);
}

/*
 * No "down" callback: requests in flight get NULL replies from hiredis and
 * new ones are answered by the fail policy while rconn is not ready.
 */
static const struct rconn_cb shim_redis_cb = { .ready = shim_redis_ready };

struct script_conn *
shim_scripts(unsigned slot)
{
	if (shim.cluster != NULL)
		return cluster_scripts(shim.cluster, slot);
	/* NULL at exit, after the connection. */
	return shim.redis != NULL && rconn_is_ready(shim.redis) ?
	    shim.scripts : NULL;
}

static int
shim_same_listen(const struct conf *a, const struct conf *b)
{
	size_t	 i;

	if (a->nlisten != b->nlisten || a->socket_mode != b->socket_mode)
		return 0;
	for (i = 0; i < a->nlisten; i++)
		if (strcmp(a->listen[i].addr, b->listen[i].addr) != 0)
			return 0;
	return 1;
}

/*
 * A config replaced by a reload, kept while sessions may still use its
 * rules.  Listed, so that an exit before the delay frees it too.
 */
struct retired {
	struct conf	*conf;
	ev_timer	 timer;
	struct retired	*next;
};

static struct retired	*retired;

static void
shim_retired_free(struct retired *r)
{
	struct retired	**pp;

	for (pp = &retired; *pp != r; pp = &(*pp)->next)
		;
	*pp = r->next;
	ev_timer_stop(shim.loop, &r->timer);
	conf_free(r->conf);
	free(r);
}

static void
shim_retired_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	shim_retired_free(w->data);
}

static void
shim_reload(struct conf *c)
{
	const struct conf	*old = shim.conf;
	struct retired		*r;

	/*
	 * The near cache's entries point at the old rules: what they
	 * counted goes to Redis under the old config, then they go.
	 */
	if (cache_configure(c->near_cache, decide_flush) == -1)
		log_warn("event=reload note=\"out of memory for the near "
		    "cache: it keeps its old size\"");
	/* Those flushes and every decision still held, under the old. */
	decide_reload();
	/* Its entries are the old rules'. */
	ovcache_clear();
	if (!shim_same_listen(old, c))
		log_warn("event=reload note=\"listen and socket settings "
		    "take effect at restart\"");
	if (shim.cluster != NULL)
		cluster_set_conf(shim.cluster, c);
	else
		rconn_set_conf(shim.redis, c);
	shim.conf = c;
	watch_reload(old);
	/*
	 * Sessions waiting on Redis still point at the old rules, for at
	 * most the old redis.timeout: free the old config after that.
	 */
	if ((r = malloc(sizeof(*r))) == NULL)
		return;		/* kept for ever: better than freed too soon */
	r->conf = (struct conf *)old;
	r->next = retired;
	retired = r;
	ev_timer_init(&r->timer, shim_retired_cb,
	    old->redis_timeout_ms / 1000. + 1., 0.);
	r->timer.data = r;
	ev_timer_start(shim.loop, &r->timer);
	log_info("event=reload rules=%zu", c->nrules);
}

static int
shim_open(struct ev_loop *loop, struct conf *c, char *err, size_t errlen)
{
	shim.loop = loop;
	shim.conf = c;
	return listener_open(c, err, errlen);
}

static int
shim_start(char *err, size_t errlen)
{
	const struct conf	*c = shim.conf;
	/* A hung server: drop it after this long without a reply. */
	double			 hung = c->redis_timeout_ms * 20 / 1000.;

	listener_check_dirs();
	if (conf_layout(c) == LAYOUT_CLUSTER) {
		if ((shim.cluster = cluster_new(shim.loop, c, "shim",
		    SCRIPT_BIT(SCRIPT_COUNT), hung > 1. ? hung : 1., NULL,
		    NULL)) == NULL) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
	} else if ((shim.redis = rconn_new(shim.loop, c, "shim",
	    &shim_redis_cb, NULL, hung > 1. ? hung : 1.)) == NULL ||
	    (shim.scripts = script_conn_new(shim.loop, shim.redis,
	    SCRIPT_BIT(SCRIPT_COUNT))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (cache_configure(c->near_cache, decide_flush) == -1) {
		snprintf(err, errlen, "out of memory for shim.near_cache");
		return -1;
	}
	if (ovcache_configure(1) == -1) {
		snprintf(err, errlen, "out of memory for the override cache");
		return -1;
	}
	decide_start();
	if (watch_start() == -1) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	listener_start();
	log_info("event=start version=%s config=%s rules=%zu layout=%s "
	    "redis=%s timeout_ms=%lld on_error=%s", SW_VERSION, c->path,
	    c->nrules, conf_layout_name(conf_layout(c)), conf_redis_name(c),
	    (long long)c->redis_timeout_ms,
	    c->redis_on_error ? "yes" : "no");
	return 0;
}

static void
shim_stop(struct ev_loop *loop)
{
	ev_break(loop, EVBREAK_ALL);
}

static void
shim_exit(void)
{
	if (shim.redis != NULL || shim.cluster != NULL)
		daemon_log_stats("exit");
	if (shim.loop == NULL)
		return;
	listener_close();
	session_shutdown_all();
	decide_shutdown(shim.conf->redis_timeout_ms / 1000. + 0.1);
	watch_stop();
	/* The connection first: pending calls get their NULL replies. */
	rconn_free(shim.redis);
	script_conn_free(shim.scripts);
	cluster_free(shim.cluster);
	shim.redis = NULL;
	shim.scripts = NULL;
	shim.cluster = NULL;
	decide_exit();
	while (retired != NULL)
		shim_retired_free(retired);
	conf_free((struct conf *)shim.conf);
	shim.conf = NULL;
	stats_free();
}

static const struct daemon_hooks shim_hooks = {
	.check = shim_check,
	.checked = shim_checked,
	.keys = decide_print_keys,
	.open = shim_open,
	.start = shim_start,
	.reload = shim_reload,
	.stats = stats_kv,
	.status = stats_status,
	.metrics = stats_metrics,
	.stop = shim_stop,
	.exit = shim_exit,
};

int
main(int argc, char *argv[])
{
	return daemon_main(argc, argv, &opts, &shim_hooks);
}
