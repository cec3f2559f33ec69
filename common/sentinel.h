/*
 * sentinel.h: finding the master through Redis Sentinel, as the Sentinel
 * client spec has it.
 *
 *   sentinel_ask()    ask the sentinels in turn, each with a short
 *                     deadline, SENTINEL get-master-addr-by-name; the one
 *                     that answered is asked first the next time
 *   sentinel_watch()  one subscription to +switch-master on a sentinel: a
 *                     hint to switch at once, not the only way (a
 *                     connection that fails asks again)
 *
 * The address found is only a candidate: rconn checks with ROLE that it
 * is a master before using it.
 */
#ifndef SW_SENTINEL_H
#define SW_SENTINEL_H

#include <ev.h>

#include "conf.h"

enum sentinel_status {
	SENTINEL_OK,		/* addr is the master's host:port */
	SENTINEL_UNKNOWN,	/* sentinels answered; none knows the master */
	SENTINEL_UNREACHABLE,	/* no sentinel answered */
};

struct sentinel_ask;

/* Exactly one call, unless sentinel_cancel() comes first. */
typedef void	sentinel_done_fn(void *arg, enum sentinel_status,
		    const char *addr, const char *why);

struct sentinel_ask *sentinel_ask(struct ev_loop *, const struct conf *,
		    sentinel_done_fn *, void *arg);
void		 sentinel_cancel(struct sentinel_ask *);

/* fn(addr) when a sentinel announces a new master of ours. */
typedef void	sentinel_switch_fn(const char *addr);
void		 sentinel_watch(struct ev_loop *, const struct conf *,
		    sentinel_switch_fn *);
void		 sentinel_watch_stop(void);

#endif
