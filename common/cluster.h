/*
 * cluster.h: Redis Cluster without a cluster client library (hiredis 0.14
 * has none): what every Cluster client does, per the Cluster
 * specification.
 *
 *   the map     CLUSTER SLOTS from any connected node: which master serves
 *               each of the 16384 slots; refreshed when a node says MOVED,
 *               ASK or CLUSTERDOWN, when one drops, and every few seconds,
 *               at most REFRESH_MIN_S apart
 *   the nodes   one self-healing, pipelined connection (rconn) per master,
 *               each with its own script registry: scripts are loaded on
 *               every node; a connection to a node that is no longer a
 *               master is closed
 *   redirects   MOVED: the command is sent again to the node named, once;
 *               ASK: ASKING, then the command, on the node named, once
 *               (script.c does it for script calls, through the hook here)
 *
 * A slot whose master is unknown or not connected has no connection: the
 * caller answers its fail policy at once, as for a Redis that is down.
 */
#ifndef SW_CLUSTER_H
#define SW_CLUSTER_H

#include <ev.h>

#include "conf.h"

#define CLUSTER_NODES_MAX	128	/* masters and seeds known at once */

struct cluster;
struct rconn;
struct script_conn;

/* ready(arg): a node connected (the alerter starts reading). */
struct cluster *cluster_new(struct ev_loop *, const struct conf *,
		    const char *name, unsigned script_mask, double hung_s,
		    void (*ready)(void *), void *arg);
void		 cluster_free(struct cluster *);
void		 cluster_set_conf(struct cluster *, const struct conf *);

/* The connection and scripts of slot's master, or NULL when not ready. */
struct rconn	*cluster_rconn(struct cluster *, unsigned slot);
struct script_conn *cluster_scripts(struct cluster *, unsigned slot);
/*
 * Which of the known nodes serves slot, by the map: 0 to
 * CLUSTER_NODES_MAX - 1, or -1.  The same number names the same node
 * until the next map, which may give it to another (batches use it only
 * to group decisions; a stale one costs a decision sent again).
 */
int		 cluster_node_index(const struct cluster *, unsigned slot);

/* 1 once a map is known and some master is connected. */
int		 cluster_ready(const struct cluster *);
/* "ready 3/3 masters", "no map"... for stats lines. */
const char	*cluster_state(const struct cluster *, char *, size_t);
/* Masters, and decisions' script calls sent to each, for the bench. */
size_t		 cluster_nodes(const struct cluster *);
/* 1 when every slot has a master and its connection is ready. */
int		 cluster_up(const struct cluster *);
/* The masters, "host:port,host:port", into dst. */
const char	*cluster_addresses(const struct cluster *, char *dst, size_t);
/* SCRIPT LOADs so far over every node. */
unsigned long	 cluster_script_loads(const struct cluster *);

#endif
