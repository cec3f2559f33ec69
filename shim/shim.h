/*
 * shim.h: what the shim's parts share.  One process, one libev loop, one
 * Redis connection; sessions are the only per-client state.
 *
 *   listener.c  accept()s on the configured sockets, caps the sessions,
 *               sheds silent ones when descriptors run out
 *   session.c   one client connection: read, parse, ask, answer, close
 *   request.c   the request grammar (pure)
 *   rule.c      normalisation, allow/deny lists, config overrides (pure)
 *   decide.c    one decision in Redis: count.lua's EVALSHA and its reply
 *   cache.c     the near cache: keys over their limit, answered without
 *               Redis while Redis's answer holds (pure)
 *   watch.c     events.channel: an announced override empties the cache
 *   stats.c     the counters, as control stats/status and /metrics
 *   main.c      the daemon's hooks: start, reload, stats, stop
 *
 * Calls go one way: listener -> session -> rule, cache, decide -> common/
 * (Redis connection, scripts, key names); decide -> cache.  decide.c
 * answers the session through session_answer()/session_fail(), the
 * session's documented callbacks, and flushes for the cache through
 * decide_flush(), the cache's.
 */
#ifndef SW_SHIM_H
#define SW_SHIM_H

#include <stdint.h>
#include <ev.h>

#include "conf.h"
#include "request.h"

struct session;
struct pending;

/* One question for the script, built by the session from a request. */
struct ask {
	const struct conf_rule	*rule;	/* valid while the session is */
	const char		*key;	/* normalised, in the session */
	size_t			 key_len;
	const char		*subject;
	size_t			 subject_len;
	long long		 cost;
	int			 peek;
	double			 factor;	/* config override, 1 = none */
};

/* Why a client got the fail policy (redis.on_error) instead of a verdict. */
enum fail_reason {
	FAIL_NONE,
	FAIL_NOT_CONNECTED,	/* Redis known down: answered at once */
	FAIL_TIMEOUT,		/* no reply within redis.timeout */
	FAIL_LOST,		/* the connection failed, request in flight */
	FAIL_OOM,		/* Redis is full (maxmemory, noeviction) */
	FAIL_READONLY,		/* a replica */
	FAIL_BUSY,		/* a script running too long */
	FAIL_NOSCRIPT,		/* still missing after a reload */
	FAIL_LOADING,		/* Redis loading its data after a restart */
	FAIL_NOPERM,		/* an ACL refused the script */
	FAIL_CLUSTER,		/* TRYAGAIN, CLUSTERDOWN, a redirect too many */
	FAIL_ERROR,		/* any other error from Redis */
	FAIL_BAD_REPLY,		/* a reply count.lua never sends */
	FAIL_SHUTDOWN,		/* asked while we stop */
	FAIL_NOMEM,		/* out of memory here */
	FAIL_MAX
};

extern const char *const fail_reason_names[FAIL_MAX];

struct shim_stats {
	uint64_t	 decisions;	/* answered by the script */
	uint64_t	 yes;
	uint64_t	 fail_policy;	/* answered on_error: Redis failed */
	uint64_t	 fail[FAIL_MAX];	/* the same, by reason */
	uint64_t	 bad_requests;
	uint64_t	 client_timeouts;
	uint64_t	 crossings;
	uint64_t	 listed;	/* answered by an allow/deny list */
	uint64_t	 policy_skipped;	/* Postfix: not counted (bounces...) */
	uint64_t	 shed;		/* silent sessions dropped for room */
	uint64_t	 accept_paused;	/* accept() stopped: no room */
	uint64_t	 script_calls;	/* count.lua calls (EVALSHA) sent */
	uint64_t	 script_decisions;	/* the decisions they carried */
	uint64_t	 script_resent;	/* refused by a node, sent declared */
	uint64_t	 script_held;	/* calls that waited (batch_wait) */
	uint64_t	 near_flushes;	/* count.lua calls of cached costs */
	uint64_t	 near_flush_failed;
	uint64_t	 near_invalidated;	/* emptied by an announced override */
};

struct shim {
	struct ev_loop		*loop;
	const struct conf	*conf;
	struct rconn		*redis;		/* a Redis, or Sentinel's */
	struct script_conn	*scripts;
	struct cluster		*cluster;	/* or a Redis Cluster */
	struct shim_stats	 stats;
	unsigned		 nsessions;
	unsigned		 nasking;	/* of them, waiting on Redis */
	double			 answered_here;	/* cache_clock() at the last
						   answer given without Redis
						   while others waited on it */
};

extern struct shim shim;

/* stats.c: counters by rule, the latency histogram; shown three ways. */
struct kv;
struct metrics;
void	stats_answered(const struct conf_rule *, int yes, ev_tstamp asked);
void	stats_waited(ev_tstamp asked);	/* a fail-policy answer */
void	stats_kv(struct kv *);		/* control "stats", the log lines */
void	stats_status(struct kv *);	/* the shim's part of "status" */
void	stats_metrics(struct metrics *);
void	stats_free(void);

/* listener.c */
int	listener_open(const struct conf *, char *err, size_t errlen);
void	listener_start(void);
void	listener_close(void);
void	listener_session_gone(void);	/* a slot is free again */
void	listener_check_dirs(void);	/* after the privilege drop */

/* session.c */
void	session_new(int fd);
void	session_shutdown_all(void);
/*
 * Drop up to max of the oldest sessions still reading, at least min_age
 * seconds old, each answered like a silent client.  Returns how many.
 */
unsigned session_shed(unsigned max, double min_age);
/* The answers decide.c gives: a verdict (1 yes, 0 no), or a failure. */
void	session_answer(struct session *, int verdict, const char *why);
void	session_fail(struct session *, enum fail_reason, const char *why);
/* decide.c sent the request again: its reply now comes to pending. */
void	session_resent(struct session *, struct pending *);
/* Its slot is moving: it waits to be sent again (TRYAGAIN). */
void	session_moving(struct session *);

/* watch.c: the subscription to events.channel, for overrides. */
int	watch_start(void);
void	watch_reload(const struct conf *old);
void	watch_stop(void);

/* main.c: the scripts of the master of slot, or NULL: not connected. */
struct script_conn *shim_scripts(unsigned slot);

/* decide.c */
/*
 * Ask Redis about a on behalf of s.  FAIL_NONE and *pending set: the reply
 * will call session_answer() or session_fail() unless decide_detach()
 * runs first.  Otherwise the reason to answer the fail policy at once.
 */
enum fail_reason decide_submit(struct session *, const struct ask *,
	    struct pending **);
void	decide_detach(struct pending *);
/*
 * The near cache's side in Redis (cache.c): decide_flush() is its flush
 * callback; decide_start() flushes every CACHE_FLUSH_EVERY.  At exit,
 * decide_shutdown() flushes and waits up to deadline seconds for the
 * replies, and decide_exit(), once the connections are gone, frees the
 * cache and says what never reached Redis.
 */
void	decide_flush(const struct conf_rule *, const char *key, size_t len,
	    long long cost, double until, unsigned generation);
void	decide_start(void);
/* Before a reload's config takes over: every batch goes, under the old. */
void	decide_reload(void);
void	decide_shutdown(double deadline);
void	decide_exit(void);
/* Near-cache flushes made and not yet answered (sent or to be). */
unsigned decide_flushes_out(void);
/*
 * senderwatch-shim -k KEY: the Redis key names a decision for KEY
 * touches under each rule, as "RULE WHAT NAME" lines on stdout, from the
 * code that makes them, so an admin's redis-cli finds them in any layout.
 */
int	decide_print_keys(const struct conf *, const char *key);

#endif
