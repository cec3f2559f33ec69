/*
 * shim.h: what the shim's parts share.  One process, one libev loop, one
 * Redis connection; sessions are the only per-client state.
 *
 *   listener.c  accept()s on the configured sockets, caps the sessions
 *   session.c   one client connection: read, parse, ask, answer, close
 *   request.c   the request grammar (pure)
 *   rule.c      normalisation, allow/deny lists, config overrides (pure)
 *   script.c    the Lua script: load, EVALSHA, NOSCRIPT, key escaping
 *   main.c      options, daemon life, signals, config reload
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

struct shim_stats {
	uint64_t	 decisions;	/* answered by the script */
	uint64_t	 yes;
	uint64_t	 fail_policy;	/* answered on_error: Redis failed */
	uint64_t	 bad_requests;
	uint64_t	 client_timeouts;
	uint64_t	 crossings;
	uint64_t	 listed;	/* answered by an allow/deny list */
};

struct shim {
	struct ev_loop		*loop;
	const struct conf	*conf;
	struct rconn		*redis;
	struct shim_stats	 stats;
	unsigned		 nsessions;
};

extern struct shim shim;

/* listener.c */
int	listener_open(const struct conf *, char *err, size_t errlen);
void	listener_start(void);
void	listener_close(void);
void	listener_session_gone(void);	/* a slot is free again */

/* session.c */
void	session_new(int fd);
void	session_shutdown_all(void);
/* The verdict (1 yes, 0 no) or -1 for "Redis failed": why says why. */
void	session_answer(struct session *, int verdict, const char *why);

/* script.c */
void	script_ready(void);		/* Redis (re)connected */
/*
 * Ask Redis about req on behalf of s.  Returns NULL when the answer must be
 * the fail policy at once (Redis known down); otherwise a pending request
 * that will call session_answer() unless script_detach() runs first.
 */
struct pending *script_submit(struct session *, const struct ask *);
void	script_detach(struct pending *);
/* Escape a key for a Redis key name; returns the length written. */
size_t	script_escape_key(char *dst, size_t dstlen, const char *key,
	    size_t len);

#endif
