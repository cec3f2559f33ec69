/*
 * siphash.c: SipHash-2-4 (Aumasson and Bernstein) over a word and bytes,
 * and the secret key it is given.
 */
#include <sys/random.h>

#include <string.h>
#include <time.h>

#include "siphash.h"

#define ROTL(x, b)	(uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND do {							\
	v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);	\
	v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;				\
	v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;				\
	v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);	\
} while (0)

void
siphash_key(uint64_t k[2])
{
	if (getrandom(k, 2 * sizeof(*k), GRND_NONBLOCK) != 2 * sizeof(*k)) {
		k[0] ^= (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ULL;
		k[1] ^= (uint64_t)(uintptr_t)&k;
	}
}

uint64_t
siphash(const uint64_t k[2], uint64_t word, const void *data, size_t len)
{
	const unsigned char	*p = data;
	uint64_t		 v0 = k[0] ^ 0x736f6d6570736575ULL;
	uint64_t		 v1 = k[1] ^ 0x646f72616e646f6dULL;
	uint64_t		 v2 = k[0] ^ 0x6c7967656e657261ULL;
	uint64_t		 v3 = k[1] ^ 0x7465646279746573ULL;
	uint64_t		 m, b = (uint64_t)(len + 8) << 56;
	size_t			 i, left;

	v3 ^= word; SIPROUND; SIPROUND; v0 ^= word;
	for (i = 0; i + 8 <= len; i += 8) {
		memcpy(&m, p + i, 8);
		v3 ^= m; SIPROUND; SIPROUND; v0 ^= m;
	}
	for (left = len - i; left > 0; left--)
		b |= (uint64_t)p[i + left - 1] << (8 * (left - 1));
	v3 ^= b; SIPROUND; SIPROUND; v0 ^= b;
	v2 ^= 0xff;
	SIPROUND; SIPROUND; SIPROUND; SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}
