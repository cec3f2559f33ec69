/*
 * keyspace.c: the Redis contract (see keyspace.h): key names, the
 * escaping of keys, reserved rule names, the stream's fields and the
 * consumer group.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyspace.h"
#include "resp.h"

size_t
keyspace_escape(char *dst, size_t dstlen, const char *key, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t		 i, o = 0;
	unsigned char	 c;

	/*
	 * Printable ASCII stays readable in redis-cli.  Everything else, and
	 * % (the escape itself) and { } (Redis Cluster hash tags, which would
	 * let a sender pick the slot), becomes %XX: no key can reach another
	 * key's name or inject anything into a command.
	 */
	for (i = 0; i < len; i++) {
		c = (unsigned char)key[i];
		if (c > 0x20 && c < 0x7f && c != '%' && c != '{' && c != '}') {
			if (o + 1 >= dstlen)
				break;
			dst[o++] = (char)c;
		} else {
			if (o + 3 >= dstlen)
				break;
			dst[o++] = '%';
			dst[o++] = hex[c >> 4];
			dst[o++] = hex[c & 15];
		}
	}
	if (dstlen > 0)
		dst[o] = '\0';
	return o;
}

static int
keyspace_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

size_t
keyspace_unescape(char *dst, const char *src, size_t len)
{
	size_t	 i, o = 0;
	int	 hi, lo;

	for (i = 0; i < len; i++) {
		if (src[i] == '%' && i + 2 < len &&
		    (hi = keyspace_hexval(src[i + 1])) != -1 &&
		    (lo = keyspace_hexval(src[i + 2])) != -1) {
			dst[o++] = (char)(hi << 4 | lo);
			i += 2;
		} else
			dst[o++] = src[i];
	}
	dst[o] = '\0';
	return o;
}

/*
 * The second part of the daemons' own key names.  A rule of such a name
 * would count under keys that belong to them: a rule "alerter" counting a
 * key that is an alerter's consumer name would overwrite its lease.  New
 * kinds of keys take their name from this list, so it is reserved ahead.
 */
static const char *const keyspace_kinds[] = {
	"subjects", "crossed", "override", "alerter", "stream", "top", NULL
};

int
keyspace_reserved(const char *name)
{
	size_t	 i;

	for (i = 0; keyspace_kinds[i] != NULL; i++)
		if (strcmp(name, keyspace_kinds[i]) == 0)
			return 1;
	return 0;
}

/* "PREFIX:[KIND:]RULE[SUFFIX]:" */
static char *
keyspace_head(const char *prefix, const char *kind, const char *rule,
    const char *suffix)
{
	char	*s;

	if (asprintf(&s, "%s:%s%s%s%s:", prefix, kind, *kind != '\0' ? ":" :
	    "", rule, suffix) == -1)
		return NULL;
	return s;
}

struct keyspace_rule *
keyspace_rule_new(const char *prefix, const struct conf_rule *r)
{
	struct keyspace_rule	*ks;
	const struct conf_limit	*l;
	size_t			 i;

	if ((ks = calloc(1, sizeof(*ks))) == NULL)
		return NULL;
	if ((ks->subjects = keyspace_head(prefix, "subjects", r->name, ""))
	    == NULL || (ks->override = keyspace_head(prefix, "override",
	    r->name, "")) == NULL)
		goto fail;
	ks->subjects_len = strlen(ks->subjects);
	ks->override_len = strlen(ks->override);
	for (i = 0; i < r->nlimits; i++) {
		l = &r->limits[i];
		if ((ks->state[i] = keyspace_head(prefix, "", r->name,
		    l->suffix)) == NULL || (ks->crossed[i] =
		    keyspace_head(prefix, "crossed", r->name, l->suffix)) == NULL)
			goto fail;
		ks->state_len[i] = strlen(ks->state[i]);
		ks->crossed_len[i] = strlen(ks->crossed[i]);
		snprintf(ks->limit_text[i][0], sizeof(ks->limit_text[i][0]),
		    "%lld", (long long)l->limit);
		snprintf(ks->limit_text[i][1], sizeof(ks->limit_text[i][1]),
		    "%lld", (long long)l->window_ms);
		snprintf(ks->limit_text[i][2], sizeof(ks->limit_text[i][2]),
		    "%lld", (long long)l->burst);
	}
	return ks;
fail:
	keyspace_rule_free(ks);
	return NULL;
}

void
keyspace_rule_free(struct keyspace_rule *ks)
{
	size_t	 i;

	if (ks == NULL)
		return;
	for (i = 0; i < CONF_LIMITS_MAX; i++) {
		free(ks->state[i]);
		free(ks->crossed[i]);
	}
	free(ks->subjects);
	free(ks->override);
	free(ks);
}

size_t
keyspace_decision_nkeys(const struct conf_rule *r)
{
	return 3 + 2 * r->nlimits;
}

size_t
keyspace_decision_size(const struct conf *c, const struct conf_rule *r,
    size_t elen)
{
	const struct keyspace_rule	*ks = r->ks;
	size_t				 i, n;

	n = resp_size(ks->subjects_len + elen) +
	    resp_size(strlen(c->events_stream)) +
	    resp_size(ks->override_len + elen);
	for (i = 0; i < r->nlimits; i++)
		n += resp_size(ks->state_len[i] + elen) +
		    resp_size(ks->crossed_len[i] + elen);
	return n;
}

void
keyspace_decision_keys(struct resp *out, const struct conf *c,
    const struct conf_rule *r, const char *ekey, size_t elen)
{
	const struct keyspace_rule	*ks = r->ks;
	size_t				 i;

	resp_cat(out, ks->subjects, ks->subjects_len, ekey, elen);
	resp_str(out, c->events_stream);
	resp_cat(out, ks->override, ks->override_len, ekey, elen);
	for (i = 0; i < r->nlimits; i++) {
		resp_cat(out, ks->state[i], ks->state_len[i], ekey, elen);
		resp_cat(out, ks->crossed[i], ks->crossed_len[i], ekey, elen);
	}
}

int
keyspace_name(char *dst, size_t dstlen, const char *head, const char *ekey,
    size_t elen)
{
	size_t	 hlen = strlen(head);

	if (hlen + elen + 1 > dstlen)
		return -1;
	memcpy(dst, head, hlen);
	memcpy(dst + hlen, ekey, elen);
	dst[hlen + elen] = '\0';
	return (int)(hlen + elen);
}

char *
keyspace_lease_key(const struct conf *c, const char *consumer)
{
	char	*s;

	if (asprintf(&s, "%s:alerter:%s", c->redis_prefix, consumer) == -1)
		return NULL;
	return s;
}

const char *const keyspace_fields[KSF_MAX] = {
	[KSF_RULE] = "rule",
	[KSF_KEY] = "key",
	[KSF_COUNT] = "count",
	[KSF_LIMIT] = "limit",
	[KSF_WINDOW_MS] = "window_ms",
	[KSF_TIME] = "time",
	[KSF_HOST] = "host",
	[KSF_COUNTER] = "counter",
	[KSF_SUBJECTS] = "subjects",
	[KSF_ALGORITHM] = "algorithm",
	[KSF_COST] = "cost",
	[KSF_SHADOW] = "shadow",
};

int
keyspace_field(const char *name, size_t len)
{
	int	 i;

	for (i = 0; i < KSF_MAX; i++)
		if (strlen(keyspace_fields[i]) == len &&
		    memcmp(keyspace_fields[i], name, len) == 0)
			return i;
	return -1;
}

void
keyspace_group_argv(const char *stream, const char *group, const char *id,
    const char *argv[KEYSPACE_GROUP_ARGC])
{
	argv[0] = "XGROUP";
	argv[1] = "CREATE";
	argv[2] = stream;
	argv[3] = group;
	argv[4] = id;
	argv[5] = "MKSTREAM";
}

int
keyspace_group_reply(const redisReply *r, char *err, size_t errlen)
{
	if (r->type != REDIS_REPLY_ERROR)
		return 1;
	/* BUSYGROUP: an alerter or another shim made it first. */
	if (strncmp(r->str, "BUSYGROUP", 9) == 0)
		return 0;
	snprintf(err, errlen, "%.*s", (int)r->len, r->str);
	return -1;
}
