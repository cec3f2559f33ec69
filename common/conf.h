/*
 * conf.h: the configuration both daemons share, parsed once from YAML into
 * a struct that the rest of the code treats as const.  A reload builds a new
 * struct and swaps it in only when it is valid.
 *
 * Values are typed at load (numbers, durations in ms, booleans, enums), so
 * nothing on the request path compares strings.  Each daemon adds its own
 * checks (conf_check_fn), which run while the file's nodes are still there:
 * every error, whoever finds it, reads "file:line: option: what".
 */
#ifndef SW_CONF_H
#define SW_CONF_H

#include <sys/types.h>
#include <stddef.h>
#include <stdint.h>

#define CONF_ERRLEN	512
#define CONF_NAME_MAX	64		/* rule names: [A-Za-z0-9_-] */
#define KEY_MAX		512		/* bytes of a key, before escaping */
#define CONF_SENTINELS_MAX 16		/* redis.sentinel.addresses */
#define CONF_NAME_LEN	128		/* host, channel, stream, prefix... */
#define CONF_FILE_MAX	(1024 * 1024)	/* a config file, at most */

#define CONF_LIMITS_MAX	8		/* limits per rule, checked at once */

enum conf_algorithm { ALG_FIXED, ALG_SLIDING, ALG_GCRA };
enum conf_starttls { STARTTLS_NO, STARTTLS_TRY, STARTTLS_YES };

/* Key normalisation, applied by the shim before anything else. */
#define NORM_LOWERCASE		0x01	/* the whole key */
#define NORM_LOWERCASE_DOMAIN	0x02	/* after the last @ only */
#define NORM_STRIP_TAG		0x04	/* local+tag@domain -> local@domain */

enum conf_pattern_type { PAT_EXACT, PAT_DOMAIN, PAT_CIDR };

/* An allow/deny entry: alice@example.org, *@example.org, 192.0.2.0/24. */
struct conf_pattern {
	enum conf_pattern_type	 type;
	char			*text;		/* exact key, or the domain */
	int			 family;	/* CIDR: AF_INET or AF_INET6 */
	unsigned char		 addr[16];
	int			 prefix;
};

enum conf_override_action { OVR_ALLOW = 1, OVR_BLOCK, OVR_FACTOR };

/* A per-key override from the config (runtime ones live in Redis). */
struct conf_override {
	char			*key;
	enum conf_override_action action;
	double			 factor;
};

struct conf_limit {
	int64_t		 limit;		/* answer yes when count > limit */
	int64_t		 window_ms;
	int64_t		 burst;		/* gcra: bucket size; default limit */
	char		 suffix[24];	/* ".5m" in multi-limit key names */
};

struct keyspace_rule;

struct conf_rule {
	char		 name[CONF_NAME_MAX];
	struct conf_limit limits[CONF_LIMITS_MAX];
	size_t		 nlimits;
	enum conf_algorithm algorithm;
	int		 shadow;	/* count and announce, answer no */
	int		 count_denied;	/* yes answers still add their cost */
	int		 near_cache;	/* yes answers held in the shim */
	unsigned	 normalize;	/* NORM_* */
	struct conf_pattern *allow, *deny;
	size_t		 nallow, ndeny;
	struct conf_override *overrides;
	size_t		 noverrides;

	/* Postfix's policy requests: */
	char		 postfix_key[CONF_NAME_MAX];	/* attribute counted */
	int		 postfix_key_sender;	/* it is "sender": <> for none */
	char		*postfix_action;		/* over the limit */
	int		 postfix_bounces;	/* count MAIL FROM:<> too */
	/* Count only these clients (client_address), or authenticated ones
	 * (sasl_username); both unset: count every request. */
	struct conf_pattern *postfix_networks;
	size_t		 npostfix_networks;
	int		 postfix_authenticated;

	struct keyspace_rule *ks;	/* key names, made at load */
};

struct conf_listen {
	char		*addr;		/* as written: a path or inet:HOST:PORT */
};

/* The daemons, as the control and metrics sections name them. */
enum conf_role { ROLE_SHIM, ROLE_ALERTER, CONF_ROLES };

struct conf {
	char		*path;		/* the file this came from */

	/* shim: */
	struct conf_listen *listen;
	size_t		 nlisten;
	mode_t		 socket_mode;
	char		*socket_group;	/* NULL: leave the group alone */
	char		*user;		/* NULL: do not change user */
	char		*group;		/* NULL: the user's primary group */
	int64_t		 client_timeout_ms;
	int64_t		 policy_idle_ms;	/* Postfix between requests */
	int		 max_clients;
	size_t		 max_request;
	char		*hostname;	/* reported in events */
	int		 near_cache;	/* keys held over their limit; 0: off */

	/* redis: one of a Redis, a Sentinel-managed master, a Cluster */
	char		*redis_address;	/* host:port or unix:/path */
	char		*sentinel_master;	/* NULL: no Sentinel */
	char	       **sentinel_addresses;	/* host:port of the sentinels */
	size_t		 nsentinel_addresses;
	char		*sentinel_username;	/* to the sentinels themselves */
	char		*sentinel_password;
	char	       **cluster_seeds;		/* NULL: no Cluster */
	size_t		 ncluster_seeds;
	char		*redis_username;
	char		*redis_password;
	int		 redis_database;
	int64_t		 redis_timeout_ms;
	int64_t		 redis_batch_wait_ms;	/* shim: a call's wait for more */
	int		 redis_on_error;	/* the verdict when Redis fails */
	char		*redis_prefix;

	/* events: */
	char		*events_channel;
	char		*events_stream;
	int		 events_shards;		/* Cluster: streams, key tags */
	struct keyspace_shards *shards;		/* made at load */
	int64_t		 events_stream_maxlen;
	char		*events_group;

	/* rules: */
	struct conf_rule *rules;
	size_t		 nrules;
	const struct conf_rule *rule_default;	/* bare requests */
	const struct conf_rule *rule_postfix;	/* "postfix", or default */

	/* alerts: */
	char		*alerts_from;
	char	       **alerts_to;
	size_t		 alerts_nto;
	char	       **alerts_cc;
	size_t		 alerts_ncc;
	char		*alerts_subject;
	char		*alerts_smtp;		/* host:port, or smtp[s]://... */
	char		*alerts_smtp_username;
	char		*alerts_smtp_password;
	enum conf_starttls alerts_smtp_starttls;
	char		*alerts_smtp_cafile;	/* NULL: the system's CAs */
	int64_t		 alerts_smtp_timeout_ms;
	char	       **alerts_sendmail;	/* argv, NULL-terminated, or NULL */
	char	       **alerts_report_command;	/* argv, NULL-terminated, or NULL */
	int64_t		 alerts_report_timeout_ms;
	size_t		 alerts_report_max_bytes;
	int64_t		 alerts_digest_wait_ms;
	int		 alerts_digest_max;
	int		 alerts_top_subjects;
	char		*alerts_consumer;	/* consumer name in the group */
	int64_t		 alerts_claim_idle_ms;	/* take over others' stale events */
	int64_t		 alerts_retry_max_ms;	/* cap of the send retry backoff */

	/* control: each daemon's control socket; NULL: none */
	char		*control_path[CONF_ROLES];
	char		*control_group;		/* mode 0660 to it; else 0600 */
	/* metrics: each daemon's Prometheus listener, host:port; NULL: off */
	char		*metrics_addr[CONF_ROLES];
};

/* Which program reads the config, for its own control and metrics. */
const char	*conf_role_name(enum conf_role);

/*
 * A file being loaded, as a daemon's own checks see it.  A check returns 0,
 * or -1 after conf_fail(), which names the file, the line and the option
 * that field (the address of a member of the conf) was set by.
 */
struct conf_ctx;
typedef int	conf_check_fn(struct conf_ctx *, const struct conf *);
int		 conf_fail(struct conf_ctx *, const void *field,
		    const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*
 * Parse and validate FILE, then run check (may be NULL).  Returns NULL and
 * fills err with "file:line: option: what" on any error.  The result is
 * freed with conf_free().  conf_parse() does the same with text in memory
 * named name, for the unit tests and the fuzzer.
 */
struct conf	*conf_load(const char *file, conf_check_fn *check, char *err,
		    size_t errlen);
struct conf	*conf_parse(const char *text, size_t len, const char *name,
		    conf_check_fn *check, char *err, size_t errlen);
void		 conf_free(struct conf *);
const struct conf_rule *conf_rule_find(const struct conf *, const char *name,
		    size_t namelen);

/* Which Redis layout a config names; a reload may not change it. */
enum conf_layout { LAYOUT_SINGLE, LAYOUT_SENTINEL, LAYOUT_CLUSTER };
enum conf_layout conf_layout(const struct conf *);
const char	*conf_layout_name(enum conf_layout);
/* For the logs: the address, the Sentinel master's name or a seed. */
const char	*conf_redis_name(const struct conf *);
const char	*conf_algorithm_name(enum conf_algorithm);
/* A duration in its shortest exact unit: 300000 -> "5m". */
void		 conf_format_duration(int64_t ms, char *buf, size_t len);

/* Pure helpers, exposed for the unit tests. */
int		 conf_parse_duration(const char *, int64_t *ms);
int		 conf_parse_int(const char *, int64_t min, int64_t max,
		    int64_t *out);

#endif
