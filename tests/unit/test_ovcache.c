/*
 * test_ovcache.c: unit tests for the override cache (shim/ovcache.c): a
 * key is "none" only after a reply said so, per rule and byte for byte,
 * for OVCACHE_FRESH from the call's sending and not a moment past it; the
 * read time it gives is that call's; a reply to an older call neither
 * shortens nor, after a clear, restores an entry; forget and clear drop
 * entries; the table stays its size under any number of keys, and a key
 * never learnt is never "none" however full it is.  Times are given, so
 * nothing here waits.
 * Prints one final line "N passed, N failed".
 */
#include <stdio.h>
#include <string.h>

#include "conf.h"
#include "ovcache.h"
#include "check.h"

static struct conf_rule	 rule_a, rule_b;

static int
none(const struct conf_rule *r, const char *key, double now)
{
	double	 read;

	return ovcache_none(r, key, strlen(key), now, &read);
}

static void
learn(const struct conf_rule *r, const char *key, double sent)
{
	ovcache_learn(r, key, strlen(key), sent, ovcache_generation());
}

static void
test_fresh(void)
{
	double	 read = 0;

	CHECK(ovcache_configure(1) == 0);
	/* Nothing is known that no reply said. */
	CHECK(!none(&rule_a, "alice", 10.0));
	learn(&rule_a, "alice", 10.0);
	CHECK(none(&rule_a, "alice", 10.0));
	CHECK(none(&rule_a, "alice", 10.0 + OVCACHE_FRESH - 0.001));
	CHECK(!none(&rule_a, "alice", 10.0 + OVCACHE_FRESH));
	CHECK(ovcache_none(&rule_a, "alice", 5, 10.5, &read) == 1);
	CHECK(read == 10.0);
	/* Per rule and per key, byte for byte. */
	CHECK(!none(&rule_b, "alice", 10.1));
	CHECK(!none(&rule_a, "Alice", 10.1));
	CHECK(!none(&rule_a, "alic", 10.1));
	ovcache_learn(&rule_a, "bob\0x", 5, 10.0, ovcache_generation());
	CHECK(ovcache_none(&rule_a, "bob\0x", 5, 10.1, &read) == 1);
	CHECK(ovcache_none(&rule_a, "bob\0x", 3, 10.1, &read) == 0);
	/* A later reply moves it on; an older one does not take it back. */
	learn(&rule_a, "alice", 10.5);
	learn(&rule_a, "alice", 10.2);
	CHECK(none(&rule_a, "alice", 10.5 + OVCACHE_FRESH - 0.001));
	CHECK(ovcache_none(&rule_a, "alice", 5, 11.0, &read) == 1);
	CHECK(read == 10.5);
	/* An override found: read again from the next decision on. */
	ovcache_forget(&rule_a, "alice", 5);
	CHECK(!none(&rule_a, "alice", 10.6));
	CHECK(ovcache_stats()->learnt == 3);
}

static void
test_clear(void)
{
	unsigned	 before;

	CHECK(ovcache_configure(1) == 0);
	learn(&rule_a, "carol", 20.0);
	before = ovcache_generation();
	/* An override announced: everything is read again... */
	ovcache_clear();
	CHECK(!none(&rule_a, "carol", 20.1));
	CHECK(ovcache_generation() != before);
	/* ...and a reply to a call sent before it says nothing. */
	ovcache_learn(&rule_a, "carol", 5, 20.05, before);
	CHECK(!none(&rule_a, "carol", 20.1));
	learn(&rule_a, "carol", 20.2);
	CHECK(none(&rule_a, "carol", 20.3));
	/* Off: nothing known, nothing kept. */
	CHECK(ovcache_configure(0) == 0);
	learn(&rule_a, "carol", 20.2);
	CHECK(!none(&rule_a, "carol", 20.3));
	CHECK(ovcache_stats()->bytes == 0);
}

static void
test_bounded(void)
{
	char	 key[64];
	int	 i, found, wrong;

	CHECK(ovcache_configure(1) == 0);
	CHECK(ovcache_stats()->bytes <= 2 * 1024 * 1024);
	/* Four times the slots, of hostile bytes: the size does not move. */
	for (i = 0; i < 4 * OVCACHE_SLOTS; i++) {
		snprintf(key, sizeof(key), "\x1b[%d\r\n%c@x", i, (char)(i & 0xff));
		ovcache_learn(&rule_a, key, strlen(key) + 1, 30.0,
		    ovcache_generation());
	}
	CHECK(ovcache_stats()->bytes <= 2 * 1024 * 1024);
	/* The latest are mostly there (two to a bucket)... */
	found = 0;
	for (i = 3 * OVCACHE_SLOTS; i < 4 * OVCACHE_SLOTS; i++) {
		double	 read;

		snprintf(key, sizeof(key), "\x1b[%d\r\n%c@x", i, (char)(i & 0xff));
		found += ovcache_none(&rule_a, key, strlen(key) + 1, 30.1,
		    &read);
	}
	CHECK(found > OVCACHE_SLOTS / 2);
	/* ...and not one key that was never learnt is taken for one. */
	wrong = 0;
	for (i = 0; i < 4 * OVCACHE_SLOTS; i++) {
		snprintf(key, sizeof(key), "never-%d@x", i);
		wrong += none(&rule_a, key, 30.1);
		wrong += none(&rule_b, key, 30.1);
	}
	CHECK(wrong == 0);
}

int
main(void)
{
	snprintf(rule_a.name, sizeof(rule_a.name), "a");
	snprintf(rule_b.name, sizeof(rule_b.name), "b");
	test_fresh();
	test_clear();
	test_bounded();
	ovcache_free();
	return check_done();
}
