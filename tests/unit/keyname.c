/*
 * keyname.c: the Redis key name of a rule's counter for a key, as the
 * daemons make it (common/keyspace.c), for the integration tests: they
 * check hostile keys' names against this rather than against an escaping
 * of their own.
 *
 *   build/tests/keyname PREFIX RULE < key bytes     prints the name
 */
#include <stdio.h>
#include <string.h>

#include "keyspace.h"

int
main(int argc, char *argv[])
{
	char	 key[KEY_MAX], ekey[KEYSPACE_EKEY_MAX + 1];
	size_t	 len, elen;

	if (argc != 3) {
		fprintf(stderr, "usage: keyname PREFIX RULE < key\n");
		return 2;
	}
	len = fread(key, 1, sizeof(key), stdin);
	elen = keyspace_escape(ekey, sizeof(ekey), key, len);
	printf("%s:%s:%.*s", argv[1], argv[2], (int)elen, ekey);
	return 0;
}
