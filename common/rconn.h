/*
 * rconn.h: one asynchronous Redis connection on a libev loop, kept up by
 * itself: connect with a deadline, AUTH and SELECT, check that the server
 * is a master (ROLE) and whether it may evict keys (INFO memory), reconnect
 * with backoff, and a watchdog that drops a connection whose replies
 * stopped coming (a frozen or hung server keeps its TCP socket open), TCP
 * keepalive for one that only listens (a subscription) when the far host
 * is gone.  A
 * READONLY reply (a master demoted under us) drops the connection at once:
 * nothing more is written to a replica.  hiredis 0.14 has no timeouts of
 * its own, so every deadline lives here or with the caller.
 */
#ifndef SW_RCONN_H
#define SW_RCONN_H

#include <ev.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

struct conf;
struct rconn;

struct rconn_cb {
	/* Connected and authenticated: load scripts, subscribe... */
	void	(*ready)(struct rconn *, void *arg);
	/*
	 * The connection is gone.  Pending commands get their NULL replies
	 * too, but maybe after this (hiredis defers them when the drop
	 * happens inside a reply callback).
	 */
	void	(*down)(struct rconn *, void *arg);
	/*
	 * Any error reply, after the command's own callback has had it (a
	 * Cluster node's MOVED, ASK, CLUSTERDOWN: the map needs a refresh).
	 */
	void	(*error)(struct rconn *, void *arg, const redisReply *);
};

/*
 * To redis.address, to the master the sentinels name, or in a Cluster to
 * any node: the seeds in turn, the next after each failure (for a
 * subscription, which any node serves).  hung_s: drop the connection when
 * a command has waited this long for its reply (0: never; for
 * connections that block or subscribe).
 */
struct rconn	*rconn_new(struct ev_loop *, const struct conf *,
		    const char *name, const struct rconn_cb *, void *arg,
		    double hung_s);
/* A connection to one address (a Cluster node), never through Sentinel. */
struct rconn	*rconn_new_at(struct ev_loop *, const struct conf *,
		    const char *name, const char *addr, const struct rconn_cb *,
		    void *arg, double hung_s);
void		 rconn_free(struct rconn *);

/* Where it is connected, or dialling, for logs and status lines. */
const char	*rconn_address(const struct rconn *);
/* The replicas the master had when it was connected (ROLE). */
int		 rconn_replicas(const struct rconn *);

/* An async context to host:port, [v6]:port or unix:/path, unattached. */
redisAsyncContext *rconn_async_connect(const char *addr);

/* Take a new config; reconnects only when the Redis settings changed. */
void		 rconn_set_conf(struct rconn *, const struct conf *);

/* 1 once connected, authenticated and selected. */
int		 rconn_is_ready(const struct rconn *);

/*
 * Queue a command; fn gets a NULL reply when the connection fails first.
 * Returns -1 (fn not called) when the connection is not ready.
 */
int		 rconn_command(struct rconn *, redisCallbackFn *fn, void *priv,
		    int argc, const char **argv, const size_t *argvlen);

/* The same with a command already in RESP, as resp_* in script.c make. */
int		 rconn_formatted(struct rconn *, redisCallbackFn *fn, void *priv,
		    const char *cmd, size_t len);

/* The raw context, for SUBSCRIBE, whose callback runs many times. */
redisAsyncContext *rconn_context(struct rconn *);

/* Drop the connection now and reconnect after the backoff. */
void		 rconn_reset(struct rconn *, const char *why);

/* "ready", "connecting" or "down", for stats and status lines. */
const char	*rconn_state(const struct rconn *);

/* What an error reply from Redis is. */
enum rconn_error {
	RERR_OTHER,
	RERR_OOM,		/* maxmemory reached, noeviction */
	RERR_READONLY,		/* a replica */
	RERR_BUSY,		/* a script running too long */
	RERR_NOSCRIPT,
	RERR_LOADING,		/* loading its dataset after a restart */
	RERR_NOPERM,		/* an ACL refused it */
	RERR_CLUSTER,		/* MOVED, ASK, TRYAGAIN, CLUSTERDOWN, a script
				   refused as the cluster is down */
};
enum rconn_error rconn_error_kind(const redisReply *);

/* The rconn_cb's arg, for hooks that see only the connection. */
void		*rconn_arg(const struct rconn *);

#endif
