/*
 * fuzz_keyspace.c: libFuzzer target for the escaping of keys in Redis key
 * names (common/keyspace.c).  Whatever bytes a sender puts in a key, the
 * escaped name is printable ASCII with no space, no hash tag and no lone
 * escape character, it fits the bound the shim sizes its buffers by, and
 * unescaping gives the key back byte for byte (the alerter shows it so).
 * The input is also unescaped as it is, as if it came from Redis: that
 * must never write past its length.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keyspace.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	 e[KEYSPACE_EKEY_MAX + 1], back[KEY_MAX + 1], *raw;
	size_t	 len = size > KEY_MAX ? KEY_MAX : size, elen, blen, i;

	elen = keyspace_escape(e, sizeof(e), (const char *)data, len);
	if (elen > KEYSPACE_EKEY_MAX || e[elen] != '\0' || strlen(e) != elen)
		abort();
	for (i = 0; i < elen; i++) {
		if (e[i] <= 0x20 || e[i] >= 0x7f || e[i] == '{' || e[i] == '}')
			abort();
		if (e[i] == '%' && i + 2 >= elen)
			abort();
	}
	blen = keyspace_unescape(back, e, elen);
	if (blen != len || memcmp(back, data, len) != 0)
		abort();

	/* Bytes from Redis, escaped or not: never more out than in. */
	if ((raw = malloc(size + 1)) == NULL)
		return 0;
	if (keyspace_unescape(raw, (const char *)data, size) > size)
		abort();
	free(raw);
	return 0;
}
