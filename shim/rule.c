/*
 * rule.c: the parts of a rule the shim applies by itself.  Lists and
 * config overrides are answered here without a Redis round trip: they are
 * the same on every MTA, so nothing needs sharing.
 */
#include <sys/socket.h>
#include <arpa/inet.h>

#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "rule.h"

static int
rule_cidr_match(const struct conf_pattern *p, const char *key, size_t len)
{
	unsigned char	 addr[16];
	char		 buf[64];
	int		 bits = p->prefix, i;

	if (len == 0 || len >= sizeof(buf))
		return 0;
	memcpy(buf, key, len);
	buf[len] = '\0';
	if (inet_pton(p->family, buf, addr) != 1)
		return 0;
	for (i = 0; bits >= 8; i++, bits -= 8)
		if (addr[i] != p->addr[i])
			return 0;
	if (bits > 0 && ((addr[i] ^ p->addr[i]) & (0xff << (8 - bits))))
		return 0;
	return 1;
}

int
rule_listed(const struct conf_pattern *pats, size_t n, const char *key,
    size_t len)
{
	const struct conf_pattern *p;
	const char	*at;
	size_t		 i, dlen;

	for (i = 0; i < n; i++) {
		p = &pats[i];
		switch (p->type) {
		case PAT_EXACT:
			if (strlen(p->text) == len &&
			    memcmp(p->text, key, len) == 0)
				return 1;
			break;
		case PAT_DOMAIN:
			at = memchr(key, '@', len);
			while (at != NULL && memchr(at + 1, '@',
			    len - (at + 1 - key)) != NULL)
				at = memchr(at + 1, '@', len - (at + 1 - key));
			if (at == NULL)
				break;
			dlen = len - (at + 1 - key);
			if (strlen(p->text) == dlen &&
			    strncasecmp(p->text, at + 1, dlen) == 0)
				return 1;
			break;
		case PAT_CIDR:
			if (rule_cidr_match(p, key, len))
				return 1;
			break;
		}
	}
	return 0;
}

const struct conf_override *
rule_override(const struct conf_rule *r, const char *key, size_t len)
{
	size_t	 i;

	for (i = 0; i < r->noverrides; i++)
		if (strlen(r->overrides[i].key) == len &&
		    memcmp(r->overrides[i].key, key, len) == 0)
			return &r->overrides[i];
	return NULL;
}
