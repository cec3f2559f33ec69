/*
 * ctl_key.c: one key as a rule counts it: normalised as the shim does,
 * escaped, its shard and every name a decision of it touches, all made
 * by keyspace.h; and what a counter read back means (count.lua's three
 * algorithms), for show and top.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

static int
ctl_key_name(char *dst, const struct conf *c, const struct ctl_key *k,
    const char *tail)
{
	if (keyspace_name(dst, CTL_NAME_MAX, c, k->shard, tail, k->ekey,
	    k->elen) == -1) {
		fprintf(stderr, "%s: a key name of rule %s is too long\n",
		    CTL_NAME, k->rule->name);
		return -1;
	}
	return 0;
}

struct ctl_key *
ctl_key_new(const struct conf *c, const struct conf_rule *r,
    const char *key, size_t len)
{
	const struct keyspace_rule	*ks = r->ks;
	struct ctl_key			*k;
	char				 norm[KEY_MAX];
	size_t				 i;

	if ((k = calloc(1, sizeof(*k))) == NULL)
		ctl_fatal("out of memory");
	k->rule = r;
	k->elen = keyspace_escape(k->ekey, sizeof(k->ekey), norm,
	    keyspace_normalize(r, key, len, norm));
	k->shard = keyspace_shard_of(c->shards, k->ekey, k->elen);
	for (i = 0; i < r->nlimits; i++)
		if (ctl_key_name(k->state[i], c, k, ks->state[i]) == -1 ||
		    ctl_key_name(k->crossed[i], c, k, ks->crossed[i]) == -1)
			goto fail;
	if (ctl_key_name(k->subjects, c, k, ks->subjects) == -1 ||
	    ctl_key_name(k->override, c, k, ks->override) == -1)
		goto fail;
	/* Every name of a key shares its shard's tag, so its slot. */
	k->slot = keyspace_slot(k->state[0], strlen(k->state[0]));
	return k;
fail:
	free(k);
	return NULL;
}

const struct conf_override *
ctl_key_conf_override(const struct ctl_key *k)
{
	const struct conf_rule	*r = k->rule;
	char			 key[KEY_MAX + 1];
	size_t			 i, len;

	/* The config names keys as they are, the counter escaped. */
	len = keyspace_unescape(key, k->ekey, k->elen);
	for (i = 0; i < r->noverrides; i++)
		if (strlen(r->overrides[i].key) == len &&
		    memcmp(r->overrides[i].key, key, len) == 0)
			return &r->overrides[i];
	return NULL;
}

/* floor() and ceil() of what is never negative here, without libm. */
static int64_t
ctl_key_floor(double v)
{
	return v <= 0 ? 0 : (int64_t)v;
}

static int64_t
ctl_key_ceil(double v)
{
	int64_t	 i = ctl_key_floor(v);

	return (double)i < v ? i + 1 : i;
}

int64_t
ctl_key_count(const struct conf_rule *r, const struct conf_limit *l,
    double factor, const redisReply *v, long long pttl, int64_t now_ms)
{
	const char	*s;
	size_t		 len;
	long long	 n, idx, bi, c, p;
	double		 limit, interval, elapsed;
	char		 num[32];

	switch (r->algorithm) {
	case ALG_SLIDING:
		/* HMGET i c p: this bucket's count and the one before. */
		if (v == NULL || v->type != REDIS_REPLY_ARRAY ||
		    v->elements < 3 || l->window_ms <= 0)
			return 0;
		bi = ctl_reply_int(v->element[0], &n) == 0 ? n : -1;
		c = ctl_reply_int(v->element[1], &n) == 0 ? n : 0;
		p = ctl_reply_int(v->element[2], &n) == 0 ? n : 0;
		idx = now_ms / l->window_ms;
		if (bi != idx) {
			p = bi == idx - 1 ? c : 0;
			c = 0;
		}
		elapsed = (double)(now_ms - idx * l->window_ms);
		return ctl_key_floor((double)p * ((double)l->window_ms -
		    elapsed) / (double)l->window_ms + (double)c);
	case ALG_GCRA:
		/* The key expires at the theoretical arrival time. */
		limit = (double)ctl_key_floor((double)l->limit * factor);
		if (pttl <= 0 || limit <= 0)
			return 0;
		interval = (double)l->window_ms / limit;
		return ctl_key_ceil((double)pttl / interval);
	default:
		if (v == NULL || ctl_reply_str(v, &s, &len) == -1 ||
		    len >= sizeof(num))
			return v != NULL && v->type == REDIS_REPLY_INTEGER ?
			    v->integer : 0;
		memcpy(num, s, len);
		num[len] = '\0';
		return strtoll(num, NULL, 10);
	}
}
