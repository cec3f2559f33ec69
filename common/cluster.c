/*
 * cluster.c: routing to a Redis Cluster's masters (see cluster.h).
 *
 * Nodes are found, never configured one by one: the seeds are connected
 * first, and the first that answers gives the map.  Every master in the
 * map gets a connection of its own (named after the daemon and the
 * node's address); a node that is no longer a master in a fresh map is
 * let go, so nothing is written to a replica after a failover is known.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "log.h"
#include "rconn.h"
#include "script.h"

#define CLUSTER_SLOTS		16384
#define REFRESH_MIN_S		0.25	/* between two CLUSTER SLOTS */
#define REFRESH_EVERY_S		5.0	/* even when nothing says so */

struct cluster_node {
	struct cluster		*cl;
	char			 addr[64];	/* host:port as the map says */
	struct rconn		*rc;
	struct script_conn	*sc;
	int			 master;	/* in the current map */
	int			 seed;		/* connected to ask for a map */
};

struct cluster {
	struct ev_loop		*loop;
	const struct conf	*conf;
	char			 name[32];
	unsigned		 script_mask;
	double			 hung_s;
	void			(*ready)(void *);
	void			*arg;
	struct cluster_node	*nodes[CLUSTER_NODES_MAX];
	size_t			 nnodes;
	unsigned char		 slot_node[CLUSTER_SLOTS];	/* index+1, 0 */
	int			 have_map;
	int			 refreshing;	/* CLUSTER SLOTS in flight */
	int			 refresh_due;	/* asked for while one was */
	ev_tstamp		 last_refresh;
	ev_timer		 refresh;
	struct log_limit	 warn_map;
};

static void	cluster_refresh(struct cluster *, const char *why);

static void
cluster_node_ready(struct rconn *rc, void *arg)
{
	struct cluster_node	*n = arg;

	(void)rc;
	script_conn_ready(n->sc);
	if (!n->cl->have_map)
		cluster_refresh(n->cl, "connected");
	if (n->master && n->cl->ready != NULL)
		n->cl->ready(n->cl->arg);
}

static void
cluster_node_down(struct rconn *rc, void *arg)
{
	struct cluster_node	*n = arg;

	(void)rc;
	/* A master gone may be a failover: its replica takes the slots. */
	if (n->master)
		cluster_refresh(n->cl, "a master's connection dropped");
}

static void
cluster_node_error(struct rconn *rc, void *arg, const redisReply *r)
{
	struct cluster_node	*n = arg;

	(void)rc;
	/* Any cluster fault but TRYAGAIN (a slot moving: the map holds). */
	if (rconn_error_kind(r) == RERR_CLUSTER &&
	    strncmp(r->str, "TRYAGAIN ", 9) != 0)
		cluster_refresh(n->cl, r->str);
}

static const struct rconn_cb cluster_node_cb = {
	.ready = cluster_node_ready,
	.down = cluster_node_down,
	.error = cluster_node_error,
};

static struct script_conn *cluster_route(void *, unsigned, const char *, int);

static struct cluster_node *
cluster_node_find(struct cluster *cl, const char *addr)
{
	size_t	 i;

	for (i = 0; i < cl->nnodes; i++)
		if (strcmp(cl->nodes[i]->addr, addr) == 0)
			return cl->nodes[i];
	return NULL;
}

static struct cluster_node *
cluster_node_add(struct cluster *cl, const char *addr)
{
	struct cluster_node	*n;
	char			 name[32];

	if ((n = cluster_node_find(cl, addr)) != NULL)
		return n;
	if (cl->nnodes == CLUSTER_NODES_MAX ||
	    (n = calloc(1, sizeof(*n))) == NULL)
		return NULL;
	n->cl = cl;
	snprintf(n->addr, sizeof(n->addr), "%s", addr);
	snprintf(name, sizeof(name), "%s", cl->name);
	if ((n->rc = rconn_new_at(cl->loop, cl->conf, name, addr,
	    &cluster_node_cb, n, cl->hung_s)) == NULL ||
	    (n->sc = script_conn_new(cl->loop, n->rc, cl->script_mask)) ==
	    NULL) {
		rconn_free(n->rc);
		free(n);
		return NULL;
	}
	script_conn_route(n->sc, cluster_route, cl);
	cl->nodes[cl->nnodes++] = n;
	return n;
}

/* The connection first: its pending calls get their NULL replies. */
static void
cluster_node_free(struct cluster_node *n)
{
	rconn_free(n->rc);
	script_conn_free(n->sc);
	free(n);
}

/* Nodes that are neither masters nor seeds any more: let go of them. */
static void
cluster_prune(struct cluster *cl)
{
	size_t	 i, j, k;
	int	 used[CLUSTER_NODES_MAX];

	memset(used, 0, sizeof(used));
	for (i = 0; i < CLUSTER_SLOTS; i++)
		if (cl->slot_node[i] != 0)
			used[cl->slot_node[i] - 1] = 1;
	for (i = j = 0; i < cl->nnodes; i++) {
		if (used[i] || cl->nodes[i]->seed) {
			cl->nodes[j] = cl->nodes[i];
			/* Renumber the map for the node that moved down. */
			if (i != j)
				for (k = 0; k < CLUSTER_SLOTS; k++)
					if (cl->slot_node[k] == i + 1)
						cl->slot_node[k] =
						    (unsigned char)(j + 1);
			j++;
		} else {
			log_info("event=cluster_node_gone conn=%s node=%s",
			    cl->name, cl->nodes[i]->addr);
			cluster_node_free(cl->nodes[i]);
		}
	}
	cl->nnodes = j;
}

/*
 * CLUSTER SLOTS: [[start, end, [ip, port, id, ...], [replica]...], ...].
 * Only the master of each range matters here.
 */
static void
cluster_slots_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct cluster		*cl = priv;
	redisReply		*reply = r;
	const redisReply	*range, *m;
	struct cluster_node	*n;
	const char		*host;
	unsigned char		 map[CLUSTER_SLOTS];
	char			 addr[64];
	long long		 start, end, s;
	size_t			 i, idx;
	int			 changed;

	cl->refreshing = 0;
	if (reply == NULL)
		goto again;
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0) {
		log_limited(cl->loop, &cl->warn_map, "conn=%s reason=\"%s\"",
		    cl->name, reply->type == REDIS_REPLY_ERROR ? reply->str :
		    "CLUSTER SLOTS gave no slots");
		goto again;
	}
	memset(map, 0, sizeof(map));
	for (i = 0; i < cl->nnodes; i++)
		cl->nodes[i]->master = 0;
	for (i = 0; i < reply->elements; i++) {
		range = reply->element[i];
		if (range->type != REDIS_REPLY_ARRAY || range->elements < 3 ||
		    range->element[0]->type != REDIS_REPLY_INTEGER ||
		    range->element[1]->type != REDIS_REPLY_INTEGER ||
		    (m = range->element[2])->type != REDIS_REPLY_ARRAY ||
		    m->elements < 2 || m->element[0]->type != REDIS_REPLY_STRING ||
		    m->element[1]->type != REDIS_REPLY_INTEGER)
			continue;
		start = range->element[0]->integer;
		end = range->element[1]->integer;
		if (start < 0 || end >= CLUSTER_SLOTS || start > end)
			continue;
		/*
		 * An empty address is the answering node's own, not yet
		 * learnt (a node that has met no other): per the Cluster
		 * specification, the address we reached it at.
		 */
		host = m->element[0]->str;
		if (*host == '\0' && ac != NULL && ac->c.tcp.host != NULL)
			host = ac->c.tcp.host;
		if (*host == '\0' || strcmp(host, "?") == 0)
			continue;
		if (strchr(host, ':') != NULL)
			snprintf(addr, sizeof(addr), "[%s]:%lld", host,
			    m->element[1]->integer);
		else
			snprintf(addr, sizeof(addr), "%s:%lld", host,
			    m->element[1]->integer);
		if ((n = cluster_node_add(cl, addr)) == NULL)
			continue;
		n->master = 1;
		for (idx = 0; idx < cl->nnodes && cl->nodes[idx] != n; idx++)
			;
		for (s = start; s <= end; s++)
			map[s] = (unsigned char)(idx + 1);
	}
	/*
	 * Only a map that moved slots is news to the daemon: the alerter
	 * re-reads its pending entries of every shard on ready(), and the
	 * map is refreshed every few seconds whether or not it changed.
	 */
	changed = !cl->have_map || memcmp(cl->slot_node, map, sizeof(map)) != 0;
	memcpy(cl->slot_node, map, sizeof(map));
	if (!cl->have_map)
		log_info("event=cluster_map conn=%s masters=%zu", cl->name,
		    cluster_nodes(cl));
	cl->have_map = 1;
	/* The seeds were for finding the map: masters keep theirs. */
	for (i = 0; i < cl->nnodes; i++)
		cl->nodes[i]->seed = 0;
	cluster_prune(cl);
	for (i = 0; changed && i < cl->nnodes; i++)
		if (cl->nodes[i]->master && rconn_is_ready(cl->nodes[i]->rc) &&
		    cl->ready != NULL) {
			cl->ready(cl->arg);
			break;
		}
again:
	if (cl->refresh_due) {
		cl->refresh_due = 0;
		cluster_refresh(cl, "asked for meanwhile");
	}
}

/* Ask any connected node for the map, at most every REFRESH_MIN_S. */
static void
cluster_refresh_now(struct cluster *cl)
{
	const char	*argv[] = { "CLUSTER", "SLOTS" };
	size_t		 i;

	for (i = 0; i < cl->nnodes; i++)
		if (rconn_is_ready(cl->nodes[i]->rc) &&
		    rconn_command(cl->nodes[i]->rc, cluster_slots_cb, cl, 2,
		    argv, NULL) == 0) {
			cl->refreshing = 1;
			cl->last_refresh = ev_now(cl->loop);
			return;
		}
	/* No node connected: the seeds again, in case they all moved. */
	for (i = 0; i < cl->conf->ncluster_seeds; i++)
		if (cluster_node_find(cl, cl->conf->cluster_seeds[i]) == NULL &&
		    cluster_node_add(cl, cl->conf->cluster_seeds[i]) != NULL)
			cluster_node_find(cl,
			    cl->conf->cluster_seeds[i])->seed = 1;
}

static void
cluster_refresh(struct cluster *cl, const char *why)
{
	ev_tstamp	 wait;

	log_debug("event=cluster_refresh conn=%s reason=\"%s\"", cl->name,
	    why);
	if (cl->refreshing) {
		cl->refresh_due = 1;
		return;
	}
	wait = cl->last_refresh + REFRESH_MIN_S - ev_now(cl->loop);
	if (wait <= 0) {
		cluster_refresh_now(cl);
		return;
	}
	if (!ev_is_active(&cl->refresh) || ev_timer_remaining(cl->loop,
	    &cl->refresh) > wait) {
		ev_timer_stop(cl->loop, &cl->refresh);
		ev_timer_set(&cl->refresh, wait, REFRESH_EVERY_S);
		ev_timer_start(cl->loop, &cl->refresh);
	}
}

static void
cluster_refresh_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct cluster	*cl = w->data;

	(void)loop;
	(void)revents;
	if (!cl->refreshing)
		cluster_refresh_now(cl);
}

/*
 * script.c's hook for a redirected call.  MOVED also fixes that slot in
 * the map at once (the full map follows from the refresh the error asked
 * for); ASK is for this one call only.
 */
static struct script_conn *
cluster_route(void *arg, unsigned slot, const char *addr, int ask)
{
	struct cluster		*cl = arg;
	struct cluster_node	*n;
	size_t			 idx;

	if (slot >= CLUSTER_SLOTS || (n = cluster_node_add(cl, addr)) == NULL)
		return NULL;
	if (!ask) {
		for (idx = 0; idx < cl->nnodes && cl->nodes[idx] != n; idx++)
			;
		n->master = 1;
		cl->slot_node[slot] = (unsigned char)(idx + 1);
	}
	return rconn_is_ready(n->rc) ? n->sc : NULL;
}

struct cluster *
cluster_new(struct ev_loop *loop, const struct conf *c, const char *name,
    unsigned script_mask, double hung_s, void (*ready)(void *), void *arg)
{
	struct cluster		*cl;
	struct cluster_node	*n;
	size_t			 i;

	if ((cl = calloc(1, sizeof(*cl))) == NULL)
		return NULL;
	cl->loop = loop;
	cl->conf = c;
	snprintf(cl->name, sizeof(cl->name), "%s", name);
	cl->script_mask = script_mask;
	cl->hung_s = hung_s;
	cl->ready = ready;
	cl->arg = arg;
	cl->warn_map.event = "cluster_map_failed";
	cl->warn_map.warn = 1;
	ev_timer_init(&cl->refresh, cluster_refresh_cb, REFRESH_EVERY_S,
	    REFRESH_EVERY_S);
	cl->refresh.data = cl;
	ev_timer_start(loop, &cl->refresh);
	for (i = 0; i < c->ncluster_seeds; i++)
		if ((n = cluster_node_add(cl, c->cluster_seeds[i])) != NULL)
			n->seed = 1;
	return cl;
}

void
cluster_free(struct cluster *cl)
{
	size_t	 i;

	if (cl == NULL)
		return;
	ev_timer_stop(cl->loop, &cl->refresh);
	/* Free the nodes last to first: callbacks may look at the list. */
	while (cl->nnodes > 0) {
		i = --cl->nnodes;
		cluster_node_free(cl->nodes[i]);
	}
	log_limit_stop(&cl->warn_map);
	free(cl);
}

void
cluster_set_conf(struct cluster *cl, const struct conf *c)
{
	size_t	 i;

	cl->conf = c;
	for (i = 0; i < cl->nnodes; i++)
		rconn_set_conf(cl->nodes[i]->rc, c);
}

static struct cluster_node *
cluster_node_of(struct cluster *cl, unsigned slot)
{
	struct cluster_node	*n;

	if (slot >= CLUSTER_SLOTS || cl->slot_node[slot] == 0)
		return NULL;
	n = cl->nodes[cl->slot_node[slot] - 1];
	return rconn_is_ready(n->rc) ? n : NULL;
}

struct rconn *
cluster_rconn(struct cluster *cl, unsigned slot)
{
	struct cluster_node	*n = cluster_node_of(cl, slot);

	return n != NULL ? n->rc : NULL;
}

int
cluster_node_index(const struct cluster *cl, unsigned slot)
{
	if (slot >= CLUSTER_SLOTS || cl->slot_node[slot] == 0)
		return -1;
	return cl->slot_node[slot] - 1;
}

struct script_conn *
cluster_scripts(struct cluster *cl, unsigned slot)
{
	struct cluster_node	*n = cluster_node_of(cl, slot);

	return n != NULL ? n->sc : NULL;
}

int
cluster_ready(const struct cluster *cl)
{
	size_t	 i;

	if (!cl->have_map)
		return 0;
	for (i = 0; i < cl->nnodes; i++)
		if (cl->nodes[i]->master && rconn_is_ready(cl->nodes[i]->rc))
			return 1;
	return 0;
}

size_t
cluster_nodes(const struct cluster *cl)
{
	size_t	 i, n = 0;

	for (i = 0; i < cl->nnodes; i++)
		n += cl->nodes[i]->master;
	return n;
}

const char *
cluster_state(const struct cluster *cl, char *dst, size_t len)
{
	size_t	 i, up = 0;

	if (!cl->have_map) {
		snprintf(dst, len, "no_map");
		return dst;
	}
	for (i = 0; i < cl->nnodes; i++)
		up += cl->nodes[i]->master && rconn_is_ready(cl->nodes[i]->rc);
	snprintf(dst, len, "%zu/%zu_masters", up, cluster_nodes(cl));
	return dst;
}

int
cluster_up(const struct cluster *cl)
{
	size_t	 s, idx;

	if (!cl->have_map)
		return 0;
	for (s = 0; s < CLUSTER_SLOTS; s++) {
		if ((idx = cl->slot_node[s]) == 0 ||
		    !rconn_is_ready(cl->nodes[idx - 1]->rc))
			return 0;
	}
	return 1;
}

const char *
cluster_addresses(const struct cluster *cl, char *dst, size_t len)
{
	size_t	 i, off = 0;
	int	 n;

	*dst = '\0';
	for (i = 0; i < cl->nnodes && off < len; i++) {
		if (!cl->nodes[i]->master)
			continue;
		n = snprintf(dst + off, len - off, "%s%s", off > 0 ? "," : "",
		    cl->nodes[i]->addr);
		if (n < 0)
			break;
		off += (size_t)n;
	}
	return dst;
}

unsigned long
cluster_script_loads(const struct cluster *cl)
{
	unsigned long	 n = 0;
	size_t		 i;

	for (i = 0; i < cl->nnodes; i++)
		n += script_conn_loads(cl->nodes[i]->sc);
	return n;
}
