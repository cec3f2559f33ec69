/*
 * shim.h: what the shim's parts share.  One process, one libev loop, one
 * Redis connection; sessions are the only per-client state.
 *
 *   listener.c  accept()s on the configured sockets, caps the sessions
 *   session.c   one client connection: read, parse, ask, answer, close
 *   request.c   the request grammar (pure)
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

struct shim_stats {
	uint64_t	 decisions;	/* answered by the script */
	uint64_t	 yes;
	uint64_t	 fail_policy;	/* answered on_error: Redis failed */
	uint64_t	 bad_requests;
	uint64_t	 client_timeouts;
	uint64_t	 crossings;
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
/* The script's verdict (1 yes, 0 no) or -1 for "Redis failed". */
void	session_answer(struct session *, int verdict, const char *why);

/* script.c */
int	script_init(void);
void	script_ready(void);		/* Redis (re)connected */
void	script_down(void);
/*
 * Ask Redis about req on behalf of s.  Returns NULL when the answer must be
 * the fail policy at once (Redis known down); otherwise a pending request
 * that will call session_answer() unless script_detach() runs first.
 */
struct pending *script_submit(struct session *, const struct conf_rule *,
	    const struct request *);
void	script_detach(struct pending *);
/* Escape a key for a Redis key name; returns the length written. */
size_t	script_escape_key(char *dst, size_t dstlen, const char *key,
	    size_t len);

#endif
