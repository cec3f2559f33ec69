/*
 * cache.c: the near cache.  A key Redis has just answered "yes" for (over
 * its limit) is answered "yes" again by the shim itself, without Redis,
 * for as long as count.lua said the answer holds (hold_ms: a fixed
 * window's end, the time a sliding or gcra limit frees up), and never
 * longer than CACHE_HOLD_MAX (0.9 s) after Redis was asked.  That bounds
 * everything Redis could change behind our back: an override set
 * with the tools or with a plain SET, a counter reset, another shim.
 *
 * A request the cache answers would have been counted by Redis when its
 * rule counts denied requests: such costs add up in the entry and go to
 * Redis in one count.lua call per key (decide.c), at least every
 * CACHE_FLUSH_EVERY, before Redis answers the key again, when an entry
 * leaves the cache and at shutdown.  The flush's own answer refreshes the
 * entry or drops it.  A cost must land in the window it was counted in,
 * so counted hits stop CACHE_FLUSH_MARGIN before the soonest window ends
 * (count.lua's count_ms): its flush is due before then.
 *
 * Bounded: at most max entries, the least recently used out first.  Only
 * a key Redis answered yes for gets in, and bucket chains are hashed with
 * a secret key (SipHash), so hostile keys can fill it but not slow it.
 *
 * Pure: no Redis, and times are monotonic seconds given by the caller
 * (cache_clock() reads one).  What leaves with a cost to count goes to
 * the flush callback, decide.c's.
 */
#include <sys/queue.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache.h"
#include "siphash.h"

struct cache_entry {
	struct cache_entry	*hnext;		/* the bucket's chain */
	TAILQ_ENTRY(cache_entry) lru;		/* most recently used first */
	TAILQ_ENTRY(cache_entry) dirty;		/* with a cost to flush */
	const struct conf_rule	*rule;
	uint64_t		 hash;
	double			 until;		/* held while now < until */
	double			 window_until;	/* and counted hits while < this:
						   such a cost lands in its
						   window if sent before it */
	double			 pending_until;	/* and pending's, all of it */
	long long		 min_cost;	/* held for requests this dear */
	long long		 pending;	/* counted here, not yet in Redis */
	int			 nocount;	/* a block: Redis counts nothing */
	size_t			 key_len;
	char			 key[];
};

TAILQ_HEAD(cache_list, cache_entry);

static struct {
	struct cache_entry	**bucket;
	size_t			 nbuckets;	/* a power of 2 */
	size_t			 max;
	struct cache_list	 lru;
	struct cache_list	 dirty;
	cache_flush_fn		*flush;
	uint64_t		 sipkey[2];
	unsigned		 generation;
	struct cache_stats	 st;
} cache = {
	.lru = TAILQ_HEAD_INITIALIZER(cache.lru),
	.dirty = TAILQ_HEAD_INITIALIZER(cache.dirty),
};

static uint64_t
cache_hash(const struct conf_rule *r, const char *key, size_t len)
{
	return siphash(cache.sipkey, (uint64_t)(uintptr_t)r, key, len);
}

static struct cache_entry **
cache_slot(const struct conf_rule *r, const char *key, size_t len,
    uint64_t h)
{
	struct cache_entry	**pp;

	for (pp = &cache.bucket[h & (cache.nbuckets - 1)]; *pp != NULL;
	    pp = &(*pp)->hnext)
		if ((*pp)->hash == h && (*pp)->rule == r &&
		    (*pp)->key_len == len && memcmp((*pp)->key, key, len) == 0)
			break;
	return pp;
}

static struct cache_entry *
cache_find(const struct conf_rule *r, const char *key, size_t len)
{
	if (cache.max == 0)
		return NULL;
	return *cache_slot(r, key, len, cache_hash(r, key, len));
}

/*
 * Out of the cache; a cost still counted here goes to Redis first, or at
 * the very end, with Redis gone, is counted lost.
 */
static void
cache_drop(struct cache_entry *e, int flush)
{
	struct cache_entry	**pp;

	for (pp = &cache.bucket[e->hash & (cache.nbuckets - 1)]; *pp != e;
	    pp = &(*pp)->hnext)
		;
	*pp = e->hnext;
	TAILQ_REMOVE(&cache.lru, e, lru);
	if (e->pending > 0) {
		TAILQ_REMOVE(&cache.dirty, e, dirty);
		cache.st.dirty--;
		if (flush) {
			cache.st.flushed++;
			cache.flush(e->rule, e->key, e->key_len, e->pending,
			    e->pending_until, cache.generation);
		} else
			cache.st.lost += e->pending;
	}
	cache.st.entries--;
	cache.st.bytes -= sizeof(*e) + e->key_len;
	free(e);
}

/* A cost to flush, which must reach Redis before until. */
static void
cache_pend(struct cache_entry *e, long long cost, double until)
{
	if (e->pending == 0) {
		TAILQ_INSERT_TAIL(&cache.dirty, e, dirty);
		cache.st.dirty++;
		e->pending_until = until;
	} else if (until < e->pending_until)
		e->pending_until = until;
	e->pending += cost;
}

/* An entry's counted cost, to the callback (it may come back at once). */
static void
cache_flush_one(struct cache_entry *e)
{
	long long	 cost = e->pending;

	if (cost == 0)
		return;
	TAILQ_REMOVE(&cache.dirty, e, dirty);
	cache.st.dirty--;
	e->pending = 0;
	cache.st.flushed++;
	cache.flush(e->rule, e->key, e->key_len, cost, e->pending_until,
	    cache.generation);
}

int
cache_configure(size_t max, cache_flush_fn *flush)
{
	struct cache_entry	**b = NULL;
	size_t			 n = 16;

	cache_clear();
	if (max > 0) {
		while (n < max && n < ((size_t)1 << 30))
			n <<= 1;
		if ((b = calloc(n, sizeof(*b))) == NULL)
			return -1;
	}
	/* A new key each time: chains an attacker learnt are gone too. */
	siphash_key(cache.sipkey);
	free(cache.bucket);
	cache.bucket = b;
	cache.nbuckets = max > 0 ? n : 0;
	cache.max = max;
	cache.flush = flush;
	cache.st.bytes = max > 0 ? n * sizeof(*b) : 0;
	return 0;
}

int
cache_hit(const struct conf_rule *r, const char *key, size_t len,
    long long cost, int counts, double now)
{
	struct cache_entry	*e;

	if ((e = cache_find(r, key, len)) == NULL)
		return 0;
	if (now >= e->until || cost < e->min_cost ||
	    (counts && now >= e->window_until)) {
		/*
		 * Redis answers this one (and learn() refreshes): what was
		 * counted here goes first, on the same connection, so that
		 * Redis decides with it.
		 */
		if (now >= e->until || (counts && now >= e->window_until))
			cache.st.lapsed++;
		cache_flush_one(e);
		return 0;
	}
	if (counts && cost > 0 && !e->nocount)
		cache_pend(e, cost, e->window_until);
	if (TAILQ_FIRST(&cache.lru) != e) {
		TAILQ_REMOVE(&cache.lru, e, lru);
		TAILQ_INSERT_HEAD(&cache.lru, e, lru);
	}
	cache.st.hits++;
	return 1;
}

void
cache_learn(const struct conf_rule *r, const char *key, size_t len,
    long long min_cost, double until, double count_until,
    unsigned generation)
{
	struct cache_entry	*e, **pp;
	uint64_t		 h;

	if (cache.max == 0 || generation != cache.generation)
		return;
	h = cache_hash(r, key, len);
	if ((e = *(pp = cache_slot(r, key, len, h))) == NULL) {
		if (cache.st.entries >= cache.max) {
			cache.st.evicted++;
			cache_drop(TAILQ_LAST(&cache.lru, cache_list), 1);
			pp = cache_slot(r, key, len, h);
		}
		if ((e = malloc(sizeof(*e) + len)) == NULL)
			return;		/* Redis answers it next time */
		memset(e, 0, sizeof(*e));
		e->rule = r;
		e->hash = h;
		e->key_len = len;
		memcpy(e->key, key, len);
		*pp = e;
		TAILQ_INSERT_HEAD(&cache.lru, e, lru);
		cache.st.entries++;
		cache.st.bytes += sizeof(*e) + len;
		cache.st.learnt++;
	} else if (TAILQ_FIRST(&cache.lru) != e) {
		TAILQ_REMOVE(&cache.lru, e, lru);
		TAILQ_INSERT_HEAD(&cache.lru, e, lru);
	}
	/* The latest word from Redis is the one that holds. */
	e->until = until;
	e->nocount = count_until < 0;
	/*
	 * Hits are counted only while held (until) and while their window
	 * lasts; a cost counted then and refused by Redis (down, failing
	 * over) may go again for as long as that window lasts, the hold over
	 * or not: a Redis away for longer than a hold must not lose an
	 * abuser's counts.  What is pending keeps its own windows' end
	 * (pending_until): a later word (a peek's, count_ms 0) moves only the
	 * costs counted after it.
	 */
	e->window_until = count_until < 0 ? until : count_until;
	e->min_cost = min_cost;
}

void
cache_forget(const struct conf_rule *r, const char *key, size_t len,
    unsigned generation)
{
	struct cache_entry	*e;

	if (generation != cache.generation ||
	    (e = cache_find(r, key, len)) == NULL)
		return;
	cache_drop(e, 1);
}

int
cache_unflushed(const struct conf_rule *r, const char *key, size_t len,
    long long cost, double until, unsigned generation, double now)
{
	struct cache_entry	*e;

	if (cost <= 0)
		return 0;
	/*
	 * Sent again at the next round at the latest, it must still land in
	 * the window it was counted in: so only while that window lasts, less
	 * CACHE_FLUSH_MARGIN (until, from count.lua's count_ms).
	 */
	if (generation != cache.generation ||
	    (e = cache_find(r, key, len)) == NULL || now >= until) {
		cache.st.lost += cost;
		return -1;
	}
	cache_pend(e, cost, until);
	return 0;
}

void
cache_flush(void)
{
	struct cache_entry	*e;
	size_t			 n;

	/*
	 * Each entry dirty now, once: a flush that fails at once (Redis
	 * down) puts its cost back at the tail, for the next round.
	 */
	for (n = cache.st.dirty; n > 0 &&
	    (e = TAILQ_FIRST(&cache.dirty)) != NULL; n--)
		cache_flush_one(e);
}

static void
cache_empty(int flush)
{
	while (!TAILQ_EMPTY(&cache.lru))
		cache_drop(TAILQ_FIRST(&cache.lru), flush);
	/* Replies to what was asked before now find nothing to refresh. */
	cache.generation++;
}

void
cache_clear(void)
{
	cache_empty(1);
}

void
cache_free(void)
{
	cache_empty(0);
	free(cache.bucket);
	cache.bucket = NULL;
	cache.nbuckets = cache.max = 0;
	cache.st.bytes = 0;
}

void
cache_lost(long long cost)
{
	if (cost > 0)
		cache.st.lost += cost;
}

unsigned
cache_generation(void)
{
	return cache.generation;
}

const struct cache_stats *
cache_stats(void)
{
	return &cache.st;
}

double
cache_clock(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}
