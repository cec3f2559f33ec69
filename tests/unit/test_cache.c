/*
 * test_cache.c: unit tests for the near cache (shim/cache.c): holds end
 * when Redis said, costs below the hold go to Redis, counted costs reach
 * the flush callback once each (on a flush, an eviction, a "no", a
 * reload), a failed flush is retried or counted lost, the size bound and
 * least-recently-used order hold, and a reload's generation keeps late
 * replies out.  Times are given, so nothing here waits.
 * Prints one final line "N passed, N failed".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "conf.h"
#include "check.h"

static struct conf_rule	 rule_a, rule_b;

/* What reached the flush callback. */
static struct {
	const struct conf_rule	*rule;
	char			 key[64];
	long long		 cost;
	double			 until;
	unsigned		 generation;
} flushed[64];
static size_t	 nflushed;
static int	 flush_fails;	/* the callback gives the cost back */

static void
flush_cb(const struct conf_rule *r, const char *key, size_t len,
    long long cost, double until, unsigned generation)
{
	if (nflushed < sizeof(flushed) / sizeof(flushed[0])) {
		flushed[nflushed].rule = r;
		snprintf(flushed[nflushed].key, sizeof(flushed[0].key), "%.*s",
		    (int)len, key);
		flushed[nflushed].cost = cost;
		flushed[nflushed].until = until;
		flushed[nflushed].generation = generation;
		nflushed++;
	}
	if (flush_fails)
		cache_unflushed(r, key, len, cost, until, generation, 1.0);
}

static int
hit(const struct conf_rule *r, const char *key, long long cost, int counts,
    double now)
{
	return cache_hit(r, key, strlen(key), cost, counts, now);
}

static void
learn(const struct conf_rule *r, const char *key, long long min_cost,
    double until)
{
	cache_learn(r, key, strlen(key), min_cost, until, until,
	    cache_generation());
}

static long long
flushed_cost(const char *key)
{
	long long	 sum = 0;
	size_t		 i;

	for (i = 0; i < nflushed; i++)
		if (strcmp(flushed[i].key, key) == 0)
			sum += flushed[i].cost;
	return sum;
}

static void
test_hold(void)
{
	CHECK(cache_configure(100, flush_cb) == 0);
	/* Nothing is held that Redis did not say yes for. */
	CHECK(!hit(&rule_a, "alice", 1, 1, 10.0));
	learn(&rule_a, "alice", 0, 11.0);
	CHECK(hit(&rule_a, "alice", 1, 1, 10.0));
	CHECK(hit(&rule_a, "alice", 0, 0, 10.999));
	/* Until, not through: then Redis answers again. */
	CHECK(!hit(&rule_a, "alice", 1, 1, 11.0));
	CHECK(cache_stats()->lapsed == 1);
	/* Per rule and per key, byte for byte. */
	learn(&rule_a, "bob", 0, 20.0);
	CHECK(!hit(&rule_b, "bob", 1, 1, 10.0));
	CHECK(!hit(&rule_a, "Bob", 1, 1, 10.0));
	CHECK(!hit(&rule_a, "bo", 1, 1, 10.0));
	CHECK(cache_hit(&rule_a, "bob\0x", 3, 1, 0, 10.0) == 1);
	CHECK(cache_hit(&rule_a, "bob\0x", 5, 1, 0, 10.0) == 0);
	/* A hold for requests this dear only: a cheaper one asks Redis. */
	learn(&rule_a, "carol", 5, 20.0);
	CHECK(!hit(&rule_a, "carol", 4, 0, 10.0));
	CHECK(hit(&rule_a, "carol", 5, 0, 10.0));
	CHECK(hit(&rule_a, "carol", 9, 0, 10.0));
	/* Counted hits stop at count_until, the others go on to until. */
	cache_learn(&rule_a, "dave", 4, 0, 20.0, 15.0, cache_generation());
	CHECK(hit(&rule_a, "dave", 1, 1, 14.9));
	CHECK(!hit(&rule_a, "dave", 1, 1, 15.0));
	CHECK(hit(&rule_a, "dave", 1, 0, 15.0));
	CHECK(hit(&rule_a, "dave", 1, 0, 19.9));
	/* The latest word from Redis holds: "no" drops it. */
	cache_forget(&rule_a, "carol", 5, cache_generation());
	CHECK(!hit(&rule_a, "carol", 9, 0, 10.0));
}

static void
test_counting(void)
{
	CHECK(cache_configure(100, flush_cb) == 0);
	nflushed = 0;
	learn(&rule_a, "alice", 0, 100.0);
	learn(&rule_a, "bob", 0, 100.0);
	CHECK(hit(&rule_a, "alice", 1, 1, 1.0));
	CHECK(hit(&rule_a, "alice", 3, 1, 1.0));
	CHECK(hit(&rule_a, "alice", 7, 0, 1.0));	/* not counted */
	CHECK(hit(&rule_a, "bob", 2, 1, 1.0));
	CHECK(cache_stats()->dirty == 2);	/* near_cache_unsent's part */
	/* One call per key, with the sum. */
	cache_flush();
	CHECK(nflushed == 2);
	CHECK(cache_stats()->dirty == 0);
	CHECK(flushed_cost("alice") == 4);
	CHECK(flushed_cost("bob") == 2);
	/* Flushed once: nothing twice. */
	cache_flush();
	CHECK(nflushed == 2);
	/* A request Redis answers gets what was counted there first. */
	CHECK(hit(&rule_a, "alice", 2, 1, 1.0));
	CHECK(!hit(&rule_a, "alice", 1, 1, 100.0));	/* lapsed */
	CHECK(nflushed == 3 && flushed[2].cost == 2);
	learn(&rule_a, "alice", 3, 100.0);
	CHECK(hit(&rule_a, "alice", 3, 1, 1.0));
	CHECK(!hit(&rule_a, "alice", 2, 1, 1.0));	/* too cheap */
	CHECK(nflushed == 4 && flushed[3].cost == 3);
	learn(&rule_a, "alice", 0, 100.0);
	nflushed = 0;
	/* A key that goes ("no", eviction, reload) takes its count along. */
	CHECK(hit(&rule_a, "alice", 5, 1, 1.0));
	cache_forget(&rule_a, "alice", 5, cache_generation());
	CHECK(nflushed == 1 && flushed_cost("alice") == 5);
	CHECK(hit(&rule_a, "bob", 1, 1, 1.0));
	CHECK(cache_configure(100, flush_cb) == 0);	/* a reload */
	CHECK(nflushed == 2 && flushed_cost("bob") == 1);
	CHECK(cache_stats()->entries == 0);
	CHECK(!hit(&rule_a, "bob", 1, 1, 1.0));
}

static void
test_failed_flush(void)
{
	unsigned	 old;
	uint64_t	 lost;

	nflushed = 0;
	CHECK(cache_configure(100, flush_cb) == 0);
	learn(&rule_a, "alice", 0, 100.0);
	CHECK(hit(&rule_a, "alice", 2, 1, 1.0));
	/* Redis down: the cost goes back, once per round, never looping. */
	flush_fails = 1;
	cache_flush();
	CHECK(nflushed == 1);
	cache_flush();
	CHECK(nflushed == 2 && flushed[1].cost == 2);
	flush_fails = 0;
	CHECK(hit(&rule_a, "alice", 1, 1, 1.0));
	cache_flush();
	CHECK(nflushed == 3 && flushed[2].cost == 3);
	/* A reply from before a reload finds nothing: its cost is lost. */
	old = cache_generation();
	CHECK(cache_configure(100, flush_cb) == 0);
	CHECK(cache_generation() != old);
	lost = cache_stats()->lost;
	CHECK(cache_unflushed(&rule_a, "alice", 5, 4, 100.0, old, 1.0) == -1);
	CHECK(cache_stats()->lost == lost + 4);
	cache_learn(&rule_a, "alice", 5, 0, 100.0, 100.0, old);
	CHECK(!hit(&rule_a, "alice", 1, 0, 1.0));
	/* Not sent again past its window: lost. */
	learn(&rule_a, "alice", 0, 100.0);
	lost = cache_stats()->lost;
	CHECK(cache_unflushed(&rule_a, "alice", 5, 3, 100.0,
	    cache_generation(), 100.0) == -1);
	CHECK(cache_stats()->lost == lost + 3);
	CHECK(cache_unflushed(&rule_a, "alice", 5, 0, 100.0,
	    cache_generation(), 1.0) == 0);
	/*
	 * Held till 10, its window lasting till 50: a cost counted then goes
	 * with until 50; refused after the hold (Redis away longer than it)
	 * it is kept while the window lasts, and goes at the next round, a
	 * later word from Redis (a peek's, its window's end now) moving only
	 * what is counted after it; past the window it is lost.
	 */
	cache_learn(&rule_a, "alice", 5, 0, 10.0, 50.0, cache_generation());
	nflushed = 0;
	CHECK(hit(&rule_a, "alice", 2, 1, 9.0));
	CHECK(!hit(&rule_a, "alice", 1, 1, 11.0));	/* lapsed: to Redis */
	CHECK(nflushed == 1 && flushed[0].cost == 2 &&
	    flushed[0].until == 50.0);
	lost = cache_stats()->lost;
	CHECK(cache_unflushed(&rule_a, "alice", 5, 2, flushed[0].until,
	    cache_generation(), 12.0) == 0);
	CHECK(cache_stats()->lost == lost);
	cache_learn(&rule_a, "alice", 5, 0, 13.0, 11.5, cache_generation());
	cache_flush();
	CHECK(nflushed == 2 && flushed[1].cost == 2 &&
	    flushed[1].until == 50.0);
	/* Costs counted under two words go with the sooner end. */
	CHECK(cache_unflushed(&rule_a, "alice", 5, 2, 50.0,
	    cache_generation(), 12.5) == 0);
	cache_learn(&rule_a, "alice", 5, 0, 20.0, 30.0, cache_generation());
	CHECK(hit(&rule_a, "alice", 1, 1, 14.0));
	cache_flush();
	CHECK(nflushed == 3 && flushed[2].cost == 3 &&
	    flushed[2].until == 30.0);
	CHECK(cache_unflushed(&rule_a, "alice", 5, 3, 30.0,
	    cache_generation(), 30.0) == -1);
	CHECK(cache_stats()->lost == lost + 3);
	/* A block: held, counting nothing. */
	cache_learn(&rule_a, "blocked", 7, 0, 100.0, -1, cache_generation());
	nflushed = 0;
	CHECK(hit(&rule_a, "blocked", 1, 1, 1.0));
	CHECK(hit(&rule_a, "blocked", 5, 1, 99.0));
	cache_flush();
	CHECK(nflushed == 0);
	/* At exit, with Redis gone, what is left is counted lost. */
	learn(&rule_a, "alice", 0, 100.0);
	CHECK(hit(&rule_a, "alice", 6, 1, 1.0));
	lost = cache_stats()->lost;
	nflushed = 0;
	cache_free();
	CHECK(nflushed == 0 && cache_stats()->lost == lost + 6);
}

static void
test_bounded(void)
{
	char		 key[32];
	int		 i, all;

	nflushed = 0;
	CHECK(cache_configure(8, flush_cb) == 0);
	for (i = 0; i < 8; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		learn(&rule_a, key, 0, 100.0);
	}
	/* k0 used: k1 is now the least recently used. */
	CHECK(hit(&rule_a, "k0", 1, 1, 1.0));
	CHECK(hit(&rule_a, "k1", 1, 1, 1.0));
	CHECK(hit(&rule_a, "k0", 1, 0, 1.0));
	for (i = 2; i < 8; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		CHECK(hit(&rule_a, key, 0, 0, 1.0));
	}
	learn(&rule_a, "new", 0, 100.0);
	CHECK(cache_stats()->entries == 8);
	CHECK(cache_stats()->evicted == 1);
	CHECK(!hit(&rule_a, "k1", 0, 0, 1.0));
	/* Its count went to Redis on the way out. */
	CHECK(nflushed == 1 && flushed_cost("k1") == 1);
	CHECK(hit(&rule_a, "k0", 0, 0, 1.0));
	/* A flood of hostile keys: still 8 entries, every one answerable. */
	for (i = 0; i < 5000; i++) {
		snprintf(key, sizeof(key), "\x1b[%d\r\n%c", i, (char)(i & 0xff));
		cache_learn(&rule_a, key, strlen(key) + 1, 0, 100.0, 100.0,
		    cache_generation());
	}
	CHECK(cache_stats()->entries == 8);
	all = 1;
	for (i = 4992; i < 5000; i++) {
		snprintf(key, sizeof(key), "\x1b[%d\r\n%c", i, (char)(i & 0xff));
		all &= cache_hit(&rule_a, key, strlen(key) + 1, 0, 0, 1.0);
	}
	CHECK(all);
	/* Memory: the table and eight entries, no more. */
	CHECK(cache_stats()->bytes < 16 * sizeof(void *) + 8 * 256);
	/* Off: nothing held, nothing counted. */
	CHECK(cache_configure(0, flush_cb) == 0);
	learn(&rule_a, "alice", 0, 100.0);
	CHECK(!hit(&rule_a, "alice", 1, 1, 1.0));
	CHECK(cache_stats()->entries == 0);
}

int
main(void)
{
	snprintf(rule_a.name, sizeof(rule_a.name), "a");
	snprintf(rule_b.name, sizeof(rule_b.name), "b");
	test_hold();
	test_counting();
	test_failed_flush();
	test_bounded();
	cache_free();
	return check_done();
}
