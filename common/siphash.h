/*
 * siphash.h: SipHash-2-4 with a secret key (siphash.c), for the shim's
 * tables keyed by senders' addresses: hostile keys can fill a table but
 * not choose its chains.
 */
#ifndef SW_SIPHASH_H
#define SW_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

/* A fresh secret key: from getrandom(), or at worst the clock's. */
void		siphash_key(uint64_t k[2]);
/* The hash of one whole word (a rule's address), then len bytes at p. */
uint64_t	siphash(const uint64_t k[2], uint64_t word, const void *p,
		    size_t len);

#endif
