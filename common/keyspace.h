/*
 * keyspace.h: the Redis contract.  What the shim, the alerter, the Lua
 * scripts and an admin with redis-cli agree on about names and data in
 * Redis lives here and nowhere else:
 *
 *   key names   PREFIX:RULE[.WINDOW]:KEY            the counter of a limit
 *               PREFIX:crossed:RULE[.WINDOW]:KEY    set while it is crossed
 *               PREFIX:subjects:RULE:KEY            top subjects (zset)
 *               PREFIX:override:RULE:KEY            runtime override
 *               PREFIX:alerter:CONSUMER             an alerter's lease
 *   escaping    KEY is written %XX-escaped (keyspace_escape), so no sender
 *               can reach another key's name or pick a Cluster hash tag
 *   reserved    rule names that would share a name with the kinds above
 *   stream      the fields of a threshold event (keyspace_fields[]), in
 *               the order scripts/count.lua writes them
 *   group       how the alerters' consumer group is made
 *
 * Every key of one decision is built here from a rule's tails and the
 * escaped key (keyspace_rule, keyspace_decision_keys).
 *
 * Redis Cluster.  One decision is one script call on one node, so every
 * key it touches, and the stream it records a crossing in, must share a
 * hash slot.  In a Cluster the keyspace is cut into events.shards shards:
 * a key belongs to shard crc16(escaped key) mod S, every name of a
 * decision of that key carries the shard's hash tag, PREFIX:{TAG}:..., and
 * each shard has its own stream, STREAM:{TAG}.  The tags are chosen so
 * that the shards lie evenly over the slot space, and so over the masters
 * whatever their number divides.  Outside a Cluster there is one shard,
 * without a tag: the names are the ones above.
 */
#ifndef SW_KEYSPACE_H
#define SW_KEYSPACE_H

#include <stddef.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "conf.h"

struct resp;

/* An escaped key is at most three bytes per byte of the key. */
#define KEYSPACE_EKEY_MAX	(KEY_MAX * 3)

/* The most one request may count (cost=); count.lua refuses more. */
#define KEYSPACE_COST_MAX	1000000

/*
 * Escape key for a key name: printable ASCII but % { } stays, everything
 * else becomes %XX.  Returns the length written (dst is NUL-terminated and
 * cut short, never overrun, when dstlen is too small).
 */
size_t	keyspace_escape(char *dst, size_t dstlen, const char *key,
	    size_t len);
/*
 * The inverse: %XX back to its byte; anything else, including a % that
 * does not start a valid escape, is copied as it is.  dst needs len bytes
 * (and one more for the NUL it adds).  Returns the length written.
 */
size_t	keyspace_unescape(char *dst, const char *src, size_t len);

/*
 * The key as rule r counts it (its normalize: lowercase, lowercase_domain,
 * strip_tag) into out, which takes KEY_MAX bytes (no NUL); out may be key
 * itself, since each byte is read before it is written.  Returns the
 * length.  Applied before lists, overrides and key names, by the shim and
 * by senderwatch-ctl alike.
 */
size_t	keyspace_normalize(const struct conf_rule *r, const char *key,
	    size_t len, char *out);

/* 1 when a rule may not be called name: it would share a key namespace. */
int	keyspace_reserved(const char *name);

/*
 * What every decision of a rule names the same, made once at config load:
 * the heads of its key names ("PREFIX:crossed:RULE.5m:"), to which the
 * escaped key is appended, and its limits as the script's arguments.
 */
struct keyspace_rule {
	/* What follows "PREFIX:" (and a shard's "{TAG}:"): "crossed:r.5m:". */
	char	*subjects;
	char	*override;
	char	*state[CONF_LIMITS_MAX];
	char	*crossed[CONF_LIMITS_MAX];
	/* Their lengths: a decision only copies bytes. */
	size_t	 subjects_len, override_len;
	size_t	 state_len[CONF_LIMITS_MAX], crossed_len[CONF_LIMITS_MAX];
	char	 limit_text[CONF_LIMITS_MAX][3][24];	/* limit, ms, burst */
};

struct keyspace_rule *keyspace_rule_new(const struct conf_rule *);
void	keyspace_rule_free(struct keyspace_rule *);

/* The shards (see the top): one without a tag outside a Cluster. */
#define KEYSPACE_SHARDS_MAX	1024
struct keyspace_shards {
	size_t	 n;
	char	 prefix[80];		/* "PREFIX:" */
	size_t	 prefix_len;
	char	(*tag)[40];		/* "{s3.41}:" or "" */
	size_t	*tag_len;
	char	**stream;		/* events.stream[:{s3.41}] */
	size_t	*stream_len;
	unsigned *slot;			/* the tag's hash slot */
};

struct keyspace_shards *keyspace_shards_new(const char *prefix,
	    const char *stream, size_t n, int tagged);
void	keyspace_shards_free(struct keyspace_shards *);
size_t	keyspace_shard_of(const struct keyspace_shards *, const char *ekey,
	    size_t elen);

/* Redis Cluster's hash slot of a key: CRC16, the hash tag rule. */
unsigned keyspace_slot(const char *key, size_t len);

/*
 * How a count.lua call gives a decision's keys (its three forms):
 *   DECLARED  its keys, in KEYS after the stream the call's decisions
 *             share (Redis routes the call by them: a Cluster's slot)
 *   NAMED     its escaped key alone, count.lua making each name of the
 *             call's prefix and middles (keyspace_decision_heads()) and
 *             it: a single Redis, where nothing routes by keys, and
 *             every string a call carries costs Redis its making
 *   NODE      named too, each decision with its shard's tag before its
 *             key (a Cluster node's call, of any slots it serves)
 */
enum keyspace_form {
	KEYSPACE_DECLARED,
	KEYSPACE_NAMED,
	KEYSPACE_NODE,
};

/*
 * The keys of one decision, in count.lua's KEYS order (subjects,
 * override, then each limit's state and crossed marker), written into r
 * for key ekey (escaped, elen bytes) under rule, in a call's form.  This
 * is the one place that says which keys a decision touches and how they
 * are named.  keyspace_decision_size() is the most they take in RESP, and
 * keyspace_decision_keyoff() where ekey starts in the override key's
 * name without a shard's tag, *stream_base the stream's name without it
 * (count.lua reads the key for a crossing's event from there, a shard's
 * tag being what its stream's name has past stream_base).
 * Named (NAMED, NODE), what the decision gives instead: its key, or its
 * shard's tag and its key.  keyspace_decision_heads() writes what a named
 * call's decisions share: the prefix (with the shard's tag, NAMED), each
 * name's middle in the same order, and (NODE) the stream's name without
 * a tag; keyspace_decision_heads_size() is what they take.
 */
size_t	keyspace_decision_nkeys(const struct conf_rule *);
size_t	keyspace_decision_size(const struct conf *, const struct conf_rule *,
	    size_t shard, size_t elen, enum keyspace_form);
void	keyspace_decision_keys(struct resp *, const struct conf *,
	    const struct conf_rule *, size_t shard, const char *ekey,
	    size_t elen, enum keyspace_form);
size_t	keyspace_decision_heads_size(const struct conf *,
	    const struct conf_rule *, size_t shard, enum keyspace_form);
void	keyspace_decision_heads(struct resp *, const struct conf *,
	    const struct conf_rule *, size_t shard, enum keyspace_form);
size_t	keyspace_decision_keyoff(const struct conf *,
	    const struct conf_rule *, size_t *stream_base);

/*
 * One key name into dst: the prefix, the shard's tag, a tail (from a
 * keyspace_rule) and the escaped key.  Returns the length, or -1 when it
 * does not fit.
 */
int	keyspace_name(char *dst, size_t dstlen, const struct conf *,
	    size_t shard, const char *tail, const char *ekey, size_t elen);

/* PREFIX:alerter:CONSUMER, malloc'ed; NULL when out of memory. */
char	*keyspace_lease_key(const struct conf *, const char *consumer);

/*
 * The fields of a stream entry, as count.lua's XADD writes them (a unit
 * test holds the script to this order) and the alerter reads them.
 */
enum keyspace_field {
	KSF_RULE,		/* rule name */
	KSF_KEY,		/* the key, escaped as in key names */
	KSF_COUNT,		/* the count that crossed */
	KSF_LIMIT,		/* the limit crossed (after an override factor) */
	KSF_WINDOW_MS,		/* that limit's window */
	KSF_TIME,		/* Redis's clock at the crossing, unix seconds */
	KSF_HOST,		/* the MTA that asked */
	KSF_COUNTER,		/* the limit's counter key, for "count now" */
	KSF_SUBJECTS,		/* the subjects key */
	KSF_ALGORITHM,		/* fixed | sliding | gcra */
	KSF_COST,		/* what the request that crossed counted */
	KSF_SHADOW,		/* 1: a rule in shadow mode */
	KSF_MAX
};

extern const char *const keyspace_fields[KSF_MAX];

/* The field a name is, or -1 for one this version does not know. */
int	keyspace_field(const char *name, size_t len);

/*
 * The command that makes the consumer group: XGROUP CREATE stream group
 * ID MKSTREAM, into argv[6].  count.lua makes it with the stream's first
 * entry (from id 0); an alerter makes it again when it finds it gone.
 */
#define KEYSPACE_GROUP_ARGC	6
void	keyspace_group_argv(const char *stream, const char *group,
	    const char *id, const char *argv[KEYSPACE_GROUP_ARGC]);
/* Its reply: 1 made, 0 there already, -1 an error (err says which). */
int	keyspace_group_reply(const redisReply *, char *err, size_t errlen);

#endif
