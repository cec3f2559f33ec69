/*
 * script.h: the Lua scripts of scripts/ and how the daemons run them.
 *
 * Each script is compiled in, with the SHA-1 that Redis will name it by
 * (the Makefile computes both from the file), so a daemon and its scripts
 * cannot drift and EVALSHA can be pipelined right behind the SCRIPT LOAD
 * of a new connection.  On NOSCRIPT (a SCRIPT FLUSH, a restart without
 * persistence, a failover to a node that never saw them) the scripts are
 * loaded again, once per burst however many calls were in flight, and the
 * call is retried once.
 *
 * One struct script_conn per Redis connection: load state is a property of
 * the server at the other end.
 */
#ifndef SW_SCRIPT_H
#define SW_SCRIPT_H

#include <stddef.h>

#include <ev.h>
#include <hiredis/hiredis.h>

struct rconn;

enum script_id {
	SCRIPT_COUNT,		/* count.lua: one decision (the shim) */
	SCRIPT_OVERRIDE,	/* override.lua: set a runtime override */
	SCRIPT_READ,		/* read.lua: new entries, and losses */
	SCRIPT_OWN,		/* own.lua: are these entries still ours */
	SCRIPT_LEASE,		/* lease.lua: one process per consumer */
	SCRIPT_MAX
};
#define SCRIPT_BIT(id)	(1u << (id))

struct script_def {
	const char	*name;		/* "count": scripts/count.lua */
	const char	*body;
	const char	*sha;		/* 40 hex digits */
};

extern const struct script_def script_defs[SCRIPT_MAX];

struct script_conn;
struct script_call;

/* reply is NULL when the connection failed first. */
typedef void	script_reply_fn(void *priv, redisReply *reply);

/* The scripts in mask (SCRIPT_BIT()s), on rc. */
struct script_conn *script_conn_new(struct ev_loop *, struct rconn *,
		    unsigned mask);
/* After the rconn is freed: no call is in flight any more. */
void		 script_conn_free(struct script_conn *);
/* rc is (re)connected: load the scripts, ahead of any call. */
void		 script_conn_ready(struct script_conn *);
/* SCRIPT LOADs sent since the start (each reconnect, each NOSCRIPT burst). */
unsigned long	 script_conn_loads(const struct script_conn *);
/* Script calls sent on it (the bench counts a Cluster's per node). */
unsigned long	 script_conn_calls(const struct script_conn *);

/*
 * Redis Cluster: where a call goes that a node redirected (MOVED or ASK
 * to addr for slot): the target's registry, or NULL, and the caller gets
 * the redirection as an error.  A call is redirected twice at most.
 */
typedef struct script_conn *script_route_fn(void *arg, unsigned slot,
		    const char *addr, int ask);
void		 script_conn_route(struct script_conn *, script_route_fn *,
		    void *arg);
struct rconn	*script_conn_rconn(const struct script_conn *);

/*
 * EVALSHA of script id with argv (numkeys, keys, arguments).  Returns -1
 * (fn not called) when the command could not be queued.
 */
int		 script_run(struct script_conn *, enum script_id,
		    script_reply_fn *fn, void *priv, int argc,
		    const char **argv, const size_t *argvlen);

/*
 * The same for a command the caller writes itself (the shim, in RESP):
 * a call with room for cap bytes, the caller's EVALSHA written into
 * script_call_buf() (cmd, len: where it starts in there), then sent.  A
 * call that is not sent is freed with script_call_free().  The call can
 * carry userlen bytes of the caller's own (script_call_user()), which live
 * until fn has returned: one allocation per request, not two.
 */
struct script_call *script_call_new(size_t cap, size_t userlen);
char		*script_call_buf(struct script_call *);
void		*script_call_user(struct script_call *);
int		 script_call_send(struct script_conn *, struct script_call *,
		    enum script_id, const char *cmd, size_t len,
		    script_reply_fn *fn, void *priv);
void		 script_call_free(struct script_call *);

#endif
