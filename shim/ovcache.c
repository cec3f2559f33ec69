/*
 * ovcache.c: the override cache.  count.lua reads a decision's runtime
 * override, which nearly never exists, and the GET of a key that is not
 * there was a quarter of Redis's work per decision.  So a
 * key count.lua has just answered without an override is remembered
 * here, and its decisions within OVCACHE_FRESH of that call's sending
 * tell count.lua not to read it (decide.c).  An override set with the
 * tools is announced on the channel and empties this at once (watch.c);
 * one set with a plain SET shows within a second, as in the near cache.
 * What holds an override is never remembered: its decisions read it.
 *
 * A table of OVCACHE_SLOTS entries, two to a bucket (the two keys of it
 * learnt last), each the key's SipHash (secret key) and until when it
 * holds: no allocation per key, bounded, and a key that loses its slot
 * only reads its override again.
 * The 64-bit hash stands for the key: another key taken for it would
 * skip its override read, once in 2^64 lookups, and the secret key
 * keeps an attacker from choosing one.
 *
 * Pure: no Redis; times are the caller's monotonic seconds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ovcache.h"
#include "siphash.h"

struct ovcache_slot {
	uint64_t	 hash;
	double		 until;		/* 0: empty */
};

static struct {
	struct ovcache_slot	*slot;		/* OVCACHE_SLOTS, or NULL: off */
	uint64_t		 sipkey[2];
	unsigned		 generation;
	struct ovcache_stats	 st;
} ovc;

int
ovcache_configure(int on)
{
	if (!on) {
		ovcache_free();
		return 0;
	}
	if (ovc.slot == NULL &&
	    (ovc.slot = calloc(OVCACHE_SLOTS, sizeof(*ovc.slot))) == NULL)
		return -1;
	ovcache_clear();
	siphash_key(ovc.sipkey);
	ovc.st.bytes = OVCACHE_SLOTS * sizeof(*ovc.slot);
	return 0;
}

/* The bucket of a hash: its two slots. */
static struct ovcache_slot *
ovcache_bucket(uint64_t h)
{
	return &ovc.slot[(h & (OVCACHE_SLOTS / 2 - 1)) * 2];
}

static uint64_t
ovcache_hash(const struct conf_rule *r, const char *key, size_t len)
{
	return siphash(ovc.sipkey, (uint64_t)(uintptr_t)r, key, len);
}

int
ovcache_none(const struct conf_rule *r, const char *key, size_t len,
    double now, double *read)
{
	struct ovcache_slot	*b;
	uint64_t		 h;
	int			 i;

	if (ovc.slot == NULL)
		return 0;
	h = ovcache_hash(r, key, len);
	b = ovcache_bucket(h);
	for (i = 0; i < 2; i++)
		if (b[i].hash == h && now < b[i].until) {
			ovc.st.skipped++;
			*read = b[i].until - OVCACHE_FRESH;
			return 1;
		}
	return 0;
}

void
ovcache_learn(const struct conf_rule *r, const char *key, size_t len,
    double sent, unsigned generation)
{
	struct ovcache_slot	*b, *s, keep;
	uint64_t		 h;
	double			 until = sent + OVCACHE_FRESH;

	/*
	 * An override announced after the call's script read none may be
	 * heard first (another connection): its clear must not be undone.
	 */
	if (ovc.slot == NULL || generation != ovc.generation)
		return;
	h = ovcache_hash(r, key, len);
	b = ovcache_bucket(h);
	/*
	 * The bucket's first slot is the key learnt last: a key found in
	 * the second moves up, a new one pushes the second out.
	 */
	if (b[1].hash == h && b[1].until > 0) {
		keep = b[0];
		b[0] = b[1];
		b[1] = keep;
	} else if (b[0].hash != h && b[0].until > 0)
		b[1] = b[0];
	s = &b[0];
	/* A reply to an older call says nothing newer. */
	if (s->hash == h && s->until >= until)
		return;
	s->hash = h;
	s->until = until;
	ovc.st.learnt++;
}

void
ovcache_forget(const struct conf_rule *r, const char *key, size_t len)
{
	struct ovcache_slot	*b;
	uint64_t		 h;
	int			 i;

	if (ovc.slot == NULL)
		return;
	h = ovcache_hash(r, key, len);
	b = ovcache_bucket(h);
	for (i = 0; i < 2; i++)
		if (b[i].hash == h)
			b[i].until = 0;
}

void
ovcache_clear(void)
{
	if (ovc.slot != NULL)
		memset(ovc.slot, 0, OVCACHE_SLOTS * sizeof(*ovc.slot));
	ovc.generation++;
}

unsigned
ovcache_generation(void)
{
	return ovc.generation;
}

void
ovcache_free(void)
{
	free(ovc.slot);
	ovc.slot = NULL;
	ovc.st.bytes = 0;
}

const struct ovcache_stats *
ovcache_stats(void)
{
	return &ovc.st;
}
