/*
 * keyspace.c: the Redis contract (see keyspace.h): key names, the
 * escaping of keys, reserved rule names, the stream's fields and the
 * consumer group.
 */
#include <ctype.h>
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

size_t
keyspace_normalize(const struct conf_rule *r, const char *key, size_t len,
    char *out)
{
	const char	*at = NULL, *plus;
	size_t		 i, o = 0, local;

	if (len > KEY_MAX)
		len = KEY_MAX;
	for (i = len; i > 0; i--)
		if (key[i - 1] == '@') {
			at = key + i - 1;
			break;
		}
	local = at != NULL ? (size_t)(at - key) : len;
	/* alice+lists@example.org counts as alice@example.org. */
	if ((r->normalize & NORM_STRIP_TAG) && at != NULL &&
	    (plus = memchr(key, '+', local)) != NULL && plus != key)
		local = plus - key;
	for (i = 0; i < local; i++)
		out[o++] = (r->normalize & NORM_LOWERCASE) ?
		    (char)tolower((unsigned char)key[i]) : key[i];
	if (at != NULL)
		for (i = at - key; i < len; i++)
			out[o++] = (r->normalize &
			    (NORM_LOWERCASE | NORM_LOWERCASE_DOMAIN)) ?
			    (char)tolower((unsigned char)key[i]) : key[i];
	return o;
}

int
keyspace_reserved(const char *name)
{
	size_t	 i;

	for (i = 0; keyspace_kinds[i] != NULL; i++)
		if (strcmp(name, keyspace_kinds[i]) == 0)
			return 1;
	return 0;
}

/* "[KIND:]RULE[SUFFIX]:", what follows the prefix and a shard's tag. */
static char *
keyspace_tail(const char *kind, const char *rule, const char *suffix)
{
	char	*s;

	if (asprintf(&s, "%s%s%s%s:", kind, *kind != '\0' ? ":" : "", rule,
	    suffix) == -1)
		return NULL;
	return s;
}

struct keyspace_rule *
keyspace_rule_new(const struct conf_rule *r)
{
	struct keyspace_rule	*ks;
	const struct conf_limit	*l;
	size_t			 i;

	if ((ks = calloc(1, sizeof(*ks))) == NULL)
		return NULL;
	if ((ks->subjects = keyspace_tail("subjects", r->name, "")) == NULL ||
	    (ks->override = keyspace_tail("override", r->name, "")) == NULL)
		goto fail;
	ks->subjects_len = strlen(ks->subjects);
	ks->override_len = strlen(ks->override);
	for (i = 0; i < r->nlimits; i++) {
		l = &r->limits[i];
		if ((ks->state[i] = keyspace_tail("", r->name, l->suffix)) ==
		    NULL || (ks->crossed[i] = keyspace_tail("crossed", r->name,
		    l->suffix)) == NULL)
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

/* CRC16-CCITT (XMODEM: polynomial 0x1021, initial 0), as Redis Cluster. */
static unsigned
keyspace_crc16(const char *s, size_t len)
{
	unsigned	 crc = 0;
	size_t		 i;
	int		 b;

	for (i = 0; i < len; i++) {
		crc ^= (unsigned)(unsigned char)s[i] << 8;
		for (b = 0; b < 8; b++)
			crc = crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1;
		crc &= 0xffff;
	}
	return crc;
}

unsigned
keyspace_slot(const char *key, size_t len)
{
	const char	*open, *close;

	/* A hash tag: what is between the first { and the next }, if any. */
	if ((open = memchr(key, '{', len)) != NULL &&
	    (close = memchr(open + 1, '}', len - (size_t)(open + 1 - key))) !=
	    NULL && close > open + 1)
		return keyspace_crc16(open + 1, (size_t)(close - open - 1)) &
		    16383;
	return keyspace_crc16(key, len) & 16383;
}

struct keyspace_shards *
keyspace_shards_new(const char *prefix, const char *stream, size_t n,
    int tagged)
{
	struct keyspace_shards	*sh;
	char			 tag[24];
	unsigned		 lo, hi, slot;
	size_t			 i, j;

	if (n < 1 || n > KEYSPACE_SHARDS_MAX ||
	    (sh = calloc(1, sizeof(*sh))) == NULL)
		return NULL;
	sh->n = n;
	sh->prefix_len = (size_t)snprintf(sh->prefix, sizeof(sh->prefix),
	    "%s:", prefix);
	if ((sh->tag = calloc(n, sizeof(*sh->tag))) == NULL ||
	    (sh->tag_len = calloc(n, sizeof(*sh->tag_len))) == NULL ||
	    (sh->stream = calloc(n, sizeof(*sh->stream))) == NULL ||
	    (sh->stream_len = calloc(n, sizeof(*sh->stream_len))) == NULL ||
	    (sh->slot = calloc(n, sizeof(*sh->slot))) == NULL)
		goto fail;
	for (i = 0; i < n; i++) {
		if (!tagged) {
			sh->tag[i][0] = '\0';
			if ((sh->stream[i] = strdup(stream)) == NULL)
				goto fail;
		} else {
			/*
			 * Shard i's tag is the first "s<i>.<j>" whose slot is
			 * in the i-th of n equal parts of the slot space:
			 * about n/16384 of the names are, so this is a few
			 * hundred CRCs a shard, once at load.
			 */
			lo = (unsigned)(i * 16384 / n);
			hi = (unsigned)((i + 1) * 16384 / n);
			for (j = 0;; j++) {
				snprintf(tag, sizeof(tag), "s%zu.%zu", i, j);
				slot = keyspace_crc16(tag, strlen(tag)) & 16383;
				if (slot >= lo && slot < hi)
					break;
			}
			snprintf(sh->tag[i], sizeof(sh->tag[i]), "{%s}:", tag);
			if (asprintf(&sh->stream[i], "%s:{%s}", stream, tag) ==
			    -1) {
				sh->stream[i] = NULL;
				goto fail;
			}
		}
		sh->tag_len[i] = strlen(sh->tag[i]);
		sh->stream_len[i] = strlen(sh->stream[i]);
		sh->slot[i] = keyspace_slot(sh->stream[i], sh->stream_len[i]);
	}
	return sh;
fail:
	keyspace_shards_free(sh);
	return NULL;
}

void
keyspace_shards_free(struct keyspace_shards *sh)
{
	size_t	 i;

	if (sh == NULL)
		return;
	for (i = 0; sh->stream != NULL && i < sh->n; i++)
		free(sh->stream[i]);
	free(sh->tag);
	free(sh->tag_len);
	free(sh->stream);
	free(sh->stream_len);
	free(sh->slot);
	free(sh);
}

size_t
keyspace_shard_of(const struct keyspace_shards *sh, const char *ekey,
    size_t elen)
{
	return sh->n == 1 ? 0 : keyspace_crc16(ekey, elen) % sh->n;
}

size_t
keyspace_decision_nkeys(const struct conf_rule *r)
{
	return 2 + 2 * r->nlimits;
}

/* A key name of four parts, as one RESP argument. */
static void
keyspace_put(struct resp *out, const struct keyspace_shards *sh,
    size_t shard, const char *tail, size_t tlen, const char *ekey,
    size_t elen)
{
	const char	*parts[4] = { sh->prefix, sh->tag[shard], tail, ekey };
	size_t		 lens[4] = { sh->prefix_len, sh->tag_len[shard], tlen,
			    elen };

	resp_parts(out, parts, lens, 4);
}

/* Each of a decision's names as one argument, its middle and more bytes. */
static size_t
keyspace_middles_size(const struct conf_rule *r, size_t more)
{
	const struct keyspace_rule	*ks = r->ks;
	size_t				 i, n;

	n = resp_size(more + ks->subjects_len) +
	    resp_size(more + ks->override_len);
	for (i = 0; i < r->nlimits; i++)
		n += resp_size(more + ks->state_len[i]) +
		    resp_size(more + ks->crossed_len[i]);
	return n;
}

size_t
keyspace_decision_size(const struct conf *c, const struct conf_rule *r,
    size_t shard, size_t elen, enum keyspace_form form)
{
	const struct keyspace_shards	*sh = c->shards;

	if (form == KEYSPACE_NAMED)
		return resp_size(elen);
	if (form == KEYSPACE_NODE)
		return resp_size(sh->tag_len[shard]) + resp_size(elen);
	return keyspace_middles_size(r, sh->prefix_len + sh->tag_len[shard] +
	    elen);
}

void
keyspace_decision_keys(struct resp *out, const struct conf *c,
    const struct conf_rule *r, size_t shard, const char *ekey, size_t elen,
    enum keyspace_form form)
{
	const struct keyspace_shards	*sh = c->shards;
	const struct keyspace_rule	*ks = r->ks;
	size_t				 i;

	if (form == KEYSPACE_NODE)
		resp_arg(out, sh->tag[shard], sh->tag_len[shard]);
	if (form != KEYSPACE_DECLARED) {
		resp_arg(out, ekey, elen);
		return;
	}
	keyspace_put(out, sh, shard, ks->subjects, ks->subjects_len, ekey,
	    elen);
	keyspace_put(out, sh, shard, ks->override, ks->override_len, ekey,
	    elen);
	for (i = 0; i < r->nlimits; i++) {
		keyspace_put(out, sh, shard, ks->state[i], ks->state_len[i],
		    ekey, elen);
		keyspace_put(out, sh, shard, ks->crossed[i],
		    ks->crossed_len[i], ekey, elen);
	}
}

size_t
keyspace_decision_heads_size(const struct conf *c, const struct conf_rule *r,
    size_t shard, enum keyspace_form form)
{
	const struct keyspace_shards	*sh = c->shards;
	size_t				 n;

	n = resp_size(sh->prefix_len + sh->tag_len[shard]) +
	    keyspace_middles_size(r, 0);
	if (form == KEYSPACE_NODE)
		n += resp_size(sh->stream_len[shard]);
	return n;
}

void
keyspace_decision_heads(struct resp *out, const struct conf *c,
    const struct conf_rule *r, size_t shard, enum keyspace_form form)
{
	const struct keyspace_shards	*sh = c->shards;
	const struct keyspace_rule	*ks = r->ks;
	size_t				 i, sbase;

	/* A node's call spans shards: each decision brings its tag. */
	if (form == KEYSPACE_NODE)
		resp_arg(out, sh->prefix, sh->prefix_len);
	else
		resp_cat(out, sh->prefix, sh->prefix_len, sh->tag[shard],
		    sh->tag_len[shard]);
	resp_arg(out, ks->subjects, ks->subjects_len);
	resp_arg(out, ks->override, ks->override_len);
	for (i = 0; i < r->nlimits; i++) {
		resp_arg(out, ks->state[i], ks->state_len[i]);
		resp_arg(out, ks->crossed[i], ks->crossed_len[i]);
	}
	if (form == KEYSPACE_NODE) {
		(void)keyspace_decision_keyoff(c, r, &sbase);
		resp_arg(out, sh->stream[shard], sbase);
	}
}

size_t
keyspace_decision_keyoff(const struct conf *c, const struct conf_rule *r,
    size_t *stream_base)
{
	const struct keyspace_shards	*sh = c->shards;

	/* Every shard's stream is the base and its tag, if it has one. */
	*stream_base = sh->stream_len[0] - sh->tag_len[0];
	return sh->prefix_len + r->ks->override_len;
}

int
keyspace_name(char *dst, size_t dstlen, const struct conf *c, size_t shard,
    const char *tail, const char *ekey, size_t elen)
{
	const struct keyspace_shards	*sh = c->shards;
	int				 n;

	n = snprintf(dst, dstlen, "%s%s%s%.*s", sh->prefix, sh->tag[shard],
	    tail, (int)elen, ekey);
	return n < 0 || (size_t)n >= dstlen ? -1 : n;
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
