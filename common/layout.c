/*
 * layout.c: one Redis, Sentinel's master, or a Cluster's masters, behind
 * one interface (layout.h).  The single and Sentinel layouts are one
 * rconn (which asks the sentinels itself) with one script registry; a
 * Cluster is cluster.c's connection per master.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "layout.h"
#include "rconn.h"

struct layout {
	struct rconn		*rc;	/* one Redis, or Sentinel's master */
	struct script_conn	*sc;
	struct cluster		*cl;	/* or a Cluster's masters */
	void			(*ready)(void *);
	void			*arg;
};

static void
layout_rconn_ready(struct rconn *rc, void *arg)
{
	struct layout	*l = arg;

	(void)rc;
	script_conn_ready(l->sc);
	if (l->ready != NULL)
		l->ready(l->arg);
}

static const struct rconn_cb layout_rconn_cb = { .ready = layout_rconn_ready };

struct layout *
layout_new(struct ev_loop *loop, const struct conf *c, const char *name,
    unsigned script_mask, double hung_s, void (*ready)(void *), void *arg)
{
	struct layout	*l;

	if ((l = calloc(1, sizeof(*l))) == NULL)
		return NULL;
	l->ready = ready;
	l->arg = arg;
	if (conf_layout(c) == LAYOUT_CLUSTER) {
		/* cluster.c loads the scripts on each node before ready. */
		if ((l->cl = cluster_new(loop, c, name, script_mask, hung_s,
		    ready, arg)) == NULL)
			goto fail;
		return l;
	}
	if ((l->rc = rconn_new(loop, c, name, &layout_rconn_cb, l,
	    hung_s)) == NULL ||
	    (l->sc = script_conn_new(loop, l->rc, script_mask)) == NULL)
		goto fail;
	return l;
fail:
	layout_free(l);
	return NULL;
}

void
layout_free(struct layout *l)
{
	if (l == NULL)
		return;
	/* The connections first: pending calls get their NULL replies. */
	rconn_free(l->rc);
	script_conn_free(l->sc);
	cluster_free(l->cl);
	free(l);
}

void
layout_set_conf(struct layout *l, const struct conf *c)
{
	if (l->cl != NULL)
		cluster_set_conf(l->cl, c);
	else
		rconn_set_conf(l->rc, c);
}

struct rconn *
layout_rconn(const struct layout *l, unsigned slot)
{
	if (l->cl != NULL)
		return cluster_rconn(l->cl, slot);
	return rconn_is_ready(l->rc) ? l->rc : NULL;
}

int
layout_ready(const struct layout *l)
{
	return l->cl != NULL ? cluster_ready(l->cl) : rconn_is_ready(l->rc);
}

int
layout_up(const struct layout *l)
{
	return l->cl != NULL ? cluster_up(l->cl) : rconn_is_ready(l->rc);
}

const char *
layout_state(const struct layout *l, char *buf, size_t len)
{
	if (l->cl != NULL)
		return cluster_state(l->cl, buf, len);
	snprintf(buf, len, "%s", rconn_state(l->rc));
	return buf;
}

const char *
layout_nodes(const struct layout *l, char *buf, size_t len)
{
	if (l->cl != NULL)
		return cluster_addresses(l->cl, buf, len);
	snprintf(buf, len, "%s", rconn_address(l->rc));
	return buf;
}

int
layout_replicas(const struct layout *l, unsigned slot)
{
	struct rconn	*rc = layout_rconn(l, slot);

	return rc != NULL ? rconn_replicas(rc) : 0;
}

unsigned long
layout_script_loads(const struct layout *l)
{
	return l->cl != NULL ? cluster_script_loads(l->cl) :
	    script_conn_loads(l->sc);
}

int
layout_command(struct layout *l, unsigned slot, redisCallbackFn *fn,
    void *priv, int argc, const char **argv, const size_t *argvlen)
{
	struct rconn	*rc;

	if ((rc = layout_rconn(l, slot)) == NULL)
		return -1;
	return rconn_command(rc, fn, priv, argc, argv, argvlen);
}

int
layout_script(struct layout *l, unsigned slot, enum script_id id,
    script_reply_fn *fn, void *priv, int argc, const char **argv,
    const size_t *argvlen)
{
	struct script_conn	*sc;

	if (l->cl != NULL)
		sc = cluster_scripts(l->cl, slot);
	else
		sc = rconn_is_ready(l->rc) ? l->sc : NULL;
	if (sc == NULL)
		return -1;
	return script_run(sc, id, fn, priv, argc, argv, argvlen);
}
