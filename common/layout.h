/*
 * layout.h: the Redis a program talks to, whichever layout the config
 * names (conf_layout()): one Redis, the master Sentinel names, or a
 * Cluster's masters.  A command names the hash slot of its key and goes
 * to the node serving it; outside a Cluster there is one node, and the
 * slot does not matter.  The alerter and senderwatch-ctl use it; each
 * connection loads the scripts asked for (script.c).
 */
#ifndef SW_LAYOUT_H
#define SW_LAYOUT_H

#include <stddef.h>

#include <ev.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "conf.h"
#include "script.h"

struct layout;
struct rconn;

/*
 * ready(arg): a node is connected and its scripts are on their way: start
 * work that needs Redis (again, after a reconnect).
 */
struct layout	*layout_new(struct ev_loop *, const struct conf *,
		    const char *name, unsigned script_mask, double hung_s,
		    void (*ready)(void *), void *arg);
void		 layout_free(struct layout *);
/* A reloaded config; a layout is never switched (daemon.c refuses). */
void		 layout_set_conf(struct layout *, const struct conf *);

/* 1 when a node is connected (in a Cluster: a map, and a master). */
int		 layout_ready(const struct layout *);
/* "ready", "down", "ready 3/3 masters"... for stats and status. */
const char	*layout_state(const struct layout *, char *buf, size_t len);
/* 1 when every node needed is connected (the redis_up gauge). */
int		 layout_up(const struct layout *);
/* The nodes, "host:port,host:port", for status lines. */
const char	*layout_nodes(const struct layout *, char *buf, size_t len);
/* Replicas of slot's master, when it was connected (ROLE). */
int		 layout_replicas(const struct layout *, unsigned slot);
/* SCRIPT LOADs so far, over every node. */
unsigned long	 layout_script_loads(const struct layout *);

/* The connection serving slot, or NULL when it is not ready. */
struct rconn	*layout_rconn(const struct layout *, unsigned slot);

/*
 * A command, or a script call, to slot's node.  Returns -1 (fn not
 * called) when that node is not connected.
 */
int		 layout_command(struct layout *, unsigned slot,
		    redisCallbackFn *fn, void *priv, int argc,
		    const char **argv, const size_t *argvlen);
int		 layout_script(struct layout *, unsigned slot, enum script_id,
		    script_reply_fn *fn, void *priv, int argc,
		    const char **argv, const size_t *argvlen);

#endif
