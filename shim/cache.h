/*
 * cache.h: the near cache (cache.c): keys over their limit, answered "yes"
 * without Redis while count.lua's answer holds, at most 0.9 s.
 */
#ifndef SW_CACHE_H
#define SW_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "conf.h"

/*
 * An entry is never held longer than this after Redis was asked: an
 * override or a reset shows within a second, with room to spare.
 */
#define CACHE_HOLD_MAX		0.9
/* Costs counted in the cache reach Redis at least this often. */
#define CACHE_FLUSH_EVERY	0.5
/*
 * Counted hits stop this long before a window they count in ends: a
 * flush every CACHE_FLUSH_EVERY, and 100 ms for it to reach Redis.
 */
#define CACHE_FLUSH_MARGIN	(CACHE_FLUSH_EVERY + 0.1)

/*
 * The documented callback: cost units counted here for key under rule
 * must go to Redis now (decide.c sends one count.lua call).  until: they
 * land in the window they were counted in if Redis takes them before
 * then (the soonest of their windows' ends, less CACHE_FLUSH_MARGIN).
 * until and generation come back with the reply, to cache_learn(),
 * cache_forget() or cache_unflushed().
 */
typedef void	cache_flush_fn(const struct conf_rule *, const char *key,
		    size_t len, long long cost, double until,
		    unsigned generation);

struct cache_stats {
	uint64_t	 hits;		/* answered here */
	uint64_t	 learnt;	/* entries made from a yes */
	uint64_t	 lapsed;	/* found past their hold: Redis asked */
	uint64_t	 evicted;	/* least recently used, for room */
	uint64_t	 flushed;	/* counts handed to the flush callback */
	uint64_t	 lost;		/* cost units whose flush failed, entry gone */
	uint64_t	 entries;
	uint64_t	 dirty;		/* entries with a cost not yet flushed */
	uint64_t	 bytes;
};

/*
 * At most max entries (0: off).  Empties the cache (flushing what it
 * counted) and starts a new generation: on start and on every reload, as
 * entries point at their config's rules.  -1: out of memory, cache off.
 */
int	cache_configure(size_t max, cache_flush_fn *);
/*
 * 1: answer yes, Redis need not be asked; the cost is counted here when
 * counts (mode count on a count_denied rule).  0: ask Redis.
 */
int	cache_hit(const struct conf_rule *, const char *key, size_t len,
	    long long cost, int counts, double now);
/*
 * Redis said yes, holding for requests of min_cost or more until until,
 * and for requests the cache counts until count_until; a count_until
 * below 0: held until until, counting nothing (a block override, under
 * which Redis counts nothing either).
 */
void	cache_learn(const struct conf_rule *, const char *key, size_t len,
	    long long min_cost, double until, double count_until,
	    unsigned generation);
/* Redis said no: the key is not held. */
void	cache_forget(const struct conf_rule *, const char *key, size_t len,
	    unsigned generation);
/*
 * A flush Redis certainly did not run: its cost goes back to the entry
 * while the window it was counted in lasts (now before the flush's until:
 * it is sent again within it, the hold over or not), or -1: it is
 * counted lost.
 */
int	cache_unflushed(const struct conf_rule *, const char *key, size_t len,
	    long long cost, double until, unsigned generation, double now);
/* A flush that may or may not have run: its cost is not sent again. */
void	cache_lost(long long cost);
void	cache_flush(void);	/* every cost counted here, to the callback */
void	cache_clear(void);	/* flush, then empty: a new generation */
void	cache_free(void);
unsigned cache_generation(void);
const struct cache_stats *cache_stats(void);
double	cache_clock(void);	/* monotonic seconds */

#endif
