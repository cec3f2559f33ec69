/*
 * ovcache.h: the override cache (ovcache.c): keys count.lua has just
 * found no runtime override for, whose next decisions within
 * OVCACHE_FRESH do not read it again.
 */
#ifndef SW_OVCACHE_H
#define SW_OVCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "conf.h"

/*
 * How long a key's "no override" holds after the call that read it was
 * sent: an override made with a plain SET shows within a second, as in
 * the near cache (one announced on the channel, at once: ovcache_clear()).
 */
#define OVCACHE_FRESH		0.9
/* Entries, two to a hash bucket: 1 MiB, and 64 Ki keys read again. */
#define OVCACHE_SLOTS		65536

struct ovcache_stats {
	uint64_t	 skipped;	/* decisions sent not to read it */
	uint64_t	 learnt;	/* "none" taken from a reply */
	uint64_t	 bytes;
};

/* On (the table made, a new secret key) or, with on 0, off; -1: no memory. */
int	ovcache_configure(int on);
/*
 * 1: count.lua found no override for key under rule in a call sent
 * within OVCACHE_FRESH before now, at *read: this decision need not read
 * it, and its answer holds no longer than one read then.
 */
int	ovcache_none(const struct conf_rule *, const char *key, size_t len,
	    double now, double *read);
/*
 * count.lua read none for key, in a call sent at sent, under generation
 * (ovcache_generation() then): a reply to a call sent before the last
 * clear says nothing.
 */
void	ovcache_learn(const struct conf_rule *, const char *key, size_t len,
	    double sent, unsigned generation);
/*
 * count.lua found an override for key (a near-cache flush reads it): its
 * next decisions read it too.
 */
void	ovcache_forget(const struct conf_rule *, const char *key, size_t len);
/* Empty: an override announced, a reload; a new generation. */
void	ovcache_clear(void);
unsigned ovcache_generation(void);
void	ovcache_free(void);
const struct ovcache_stats *ovcache_stats(void);

#endif
