/*
 * keyname.c: the Redis key name of a rule's counter for a key, made by the
 * daemons' own code (common/keyspace.c), for the integration tests: they
 * check hostile keys' names against this rather than against an escaping
 * and a layout of their own.
 *
 *   build/tests/keyname PREFIX RULE < key bytes     prints the name
 */
#include <stdio.h>
#include <string.h>

#include "keyspace.h"

int
main(int argc, char *argv[])
{
	struct conf		 c;
	struct conf_rule	 r;
	struct keyspace_rule	*ks;
	char			 key[KEY_MAX], ekey[KEYSPACE_EKEY_MAX + 1];
	char			 name[KEYSPACE_EKEY_MAX + 256];
	size_t			 len, elen;

	if (argc != 3 || strlen(argv[2]) >= sizeof(r.name)) {
		fprintf(stderr, "usage: keyname PREFIX RULE < key\n");
		return 2;
	}
	memset(&c, 0, sizeof(c));
	memset(&r, 0, sizeof(r));
	snprintf(r.name, sizeof(r.name), "%s", argv[2]);
	r.nlimits = 1;
	if ((ks = keyspace_rule_new(&r)) == NULL ||
	    (c.shards = keyspace_shards_new(argv[1], "stream", 1, 0)) == NULL)
		return 1;
	len = fread(key, 1, sizeof(key), stdin);
	elen = keyspace_escape(ekey, sizeof(ekey), key, len);
	if (keyspace_name(name, sizeof(name), &c, 0, ks->state[0], ekey,
	    elen) == -1)
		return 1;
	fputs(name, stdout);
	keyspace_rule_free(ks);
	keyspace_shards_free(c.shards);
	return 0;
}
