/*
 * conf.c: the config.yaml loader.
 *
 * The text is loaded as a libyaml document, then walked against tables of
 * typed options: one table per section, one for a rule, one for a limit,
 * one for a rule's postfix settings.  A walk rejects unknown and repeated
 * keys and stores each value, typed, at its offset in the struct the table
 * describes; so every option of every level gets the same checks and the
 * same "file:line: option: what" errors (libyaml counts lines from 0).
 *
 *   conf_parse -> sections (conf_walk) -> rules (conf_rule) -> limits
 *              -> shared checks -> the daemon's checks -> key names
 *
 * Every value set is recorded with its line and dotted name (struct
 * conf_where), so checks that look at several options, and the daemons'
 * own checks, still name the line an option came from.  A typo in a rate
 * limiter's config must not silently fall back to a default.
 */
#include <sys/socket.h>
#include <arpa/inet.h>

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <yaml.h>

#include "conf.h"
#include "keyspace.h"

enum conf_type {
	CT_STRING,	/* char *, one line */
	CT_NAME,	/* char *, [A-Za-z0-9_.:@-], at most max (or 128) */
	CT_ATTR,	/* char[CONF_NAME_MAX], [A-Za-z0-9_-] */
	CT_DURATION,	/* int64_t ms */
	CT_INT,		/* int */
	CT_INT64,	/* int64_t */
	CT_SIZE,	/* size_t */
	CT_MODE,	/* mode_t, octal string */
	CT_BOOL,	/* int 0 or 1 */
	CT_ENUM,	/* int, from arg's choices */
	CT_FLAGS,	/* unsigned, a list of arg's choices or'ed */
	CT_LIST,	/* char **, NULL-terminated, count at noff */
	CT_ARGV,	/* char **, NULL-terminated; the command absolute */
	CT_LISTEN,	/* struct conf_listen[], count at noff */
	CT_SECRET,	/* char *, the first line of the named file */
	CT_PATTERNS,	/* struct conf_pattern[], count at noff */
	CT_CIDRS,	/* the same, address/prefix only */
	CT_OVERRIDES,	/* struct conf_override[], count at noff */
	CT_LIMITS,	/* struct conf_limit[], count at noff */
	CT_MAP,		/* a mapping of arg's options, same base */
};

struct conf_choice {
	const char	*name;
	int		 value;
};

struct conf_opt {
	const char		*name;
	enum conf_type		 type;
	size_t			 off;
	size_t			 noff;		/* where a list's count goes */
	int64_t			 min, max;
	const void		*arg;		/* choices, or a table */
	const char		*must;		/* message for a bad value */
};

struct conf_table {
	const char		*shape;		/* when it is not a mapping */
	const struct conf_opt	*opts;
};

/* Where a value came from, for errors found after it was set. */
struct conf_where {
	const void	*field;
	unsigned long	 line;
	char		 what[96];
};

struct conf_ctx {
	const char		*file;
	yaml_document_t		 doc;
	int			 have_doc;
	struct conf		*conf;
	char			*err;
	size_t			 errlen;
	struct conf_where	*where;
	size_t			 nwhere, capwhere;
	unsigned long		 root_line;
	const yaml_node_t	*sections[8];	/* by index in conf_sections */
};

#define C(f)	offsetof(struct conf, f)
#define R(f)	offsetof(struct conf_rule, f)
#define L(f)	offsetof(struct conf_limit, f)

static const struct conf_choice conf_algorithms[] = {
	{ "fixed", ALG_FIXED }, { "sliding", ALG_SLIDING },
	{ "gcra", ALG_GCRA }, { NULL, 0 }
};
static const struct conf_choice conf_modes[] = {
	{ "enforce", 0 }, { "shadow", 1 }, { NULL, 0 }
};
static const struct conf_choice conf_starttls[] = {
	{ "no", STARTTLS_NO }, { "false", STARTTLS_NO },
	{ "try", STARTTLS_TRY },
	{ "yes", STARTTLS_YES }, { "true", STARTTLS_YES }, { NULL, 0 }
};
static const struct conf_choice conf_bounces[] = {
	{ "skip", 0 }, { "count", 1 }, { NULL, 0 }
};
static const struct conf_choice conf_normalize[] = {
	{ "lowercase", NORM_LOWERCASE },
	{ "lowercase_domain", NORM_LOWERCASE_DOMAIN },
	{ "strip_tag", NORM_STRIP_TAG }, { NULL, 0 }
};

static const struct conf_opt conf_shim_opts[] = {
	{ "listen", CT_LISTEN, C(listen), C(nlisten), 0, 0, NULL, NULL },
	{ "socket_mode", CT_MODE, C(socket_mode), 0, 0, 07777, NULL, NULL },
	{ "socket_group", CT_NAME, C(socket_group), 0, 0, 0, NULL, NULL },
	{ "user", CT_NAME, C(user), 0, 0, 0, NULL, NULL },
	{ "group", CT_NAME, C(group), 0, 0, 0, NULL, NULL },
	{ "client_timeout", CT_DURATION, C(client_timeout_ms), 0, 10, 3600000,
	    NULL, NULL },
	{ "policy_idle_timeout", CT_DURATION, C(policy_idle_ms), 0, 1000,
	    86400000, NULL, NULL },
	{ "max_clients", CT_INT, C(max_clients), 0, 1, 1000000, NULL, NULL },
	{ "max_request", CT_SIZE, C(max_request), 0, 64, 1048576, NULL, NULL },
	{ "hostname", CT_NAME, C(hostname), 0, 0, 0, NULL, NULL },
	{ "near_cache", CT_INT, C(near_cache), 0, 0, 10000000, NULL,
	    "must be a number of keys, 0 (off) to 10000000" },
	{ NULL, 0, 0, 0, 0, 0, NULL, NULL }
};

static const struct conf_opt conf_sentinel_opts[] = {
	{ "master", CT_NAME, C(sentinel_master), 0, 0, 0, NULL, NULL },
	{ "addresses", CT_LIST, C(sentinel_addresses), C(nsentinel_addresses),
	    0, 0, NULL, NULL },
	{ "username", CT_STRING, C(sentinel_username), 0, 0, 0, NULL, NULL },
	{ "password", CT_STRING, C(sentinel_password), 0, 0, 0, NULL, NULL },
	{ "password_file", CT_SECRET, C(sentinel_password), 0, 0, 0, NULL,
	    NULL },
	{ NULL, 0, 0, 0, 0, 0, NULL, NULL }
};
static const struct conf_table conf_sentinel_table = {
	"must be a mapping such as { master: mymaster, addresses: "
	"[ 10.0.0.1:26379 ] }", conf_sentinel_opts
};

static const struct conf_opt conf_redis_opts[] = {
	{ "address", CT_STRING, C(redis_address), 0, 0, 255, NULL, NULL },
	{ "sentinel", CT_MAP, 0, 0, 0, 0, &conf_sentinel_table, NULL },
	{ "cluster", CT_LIST, C(cluster_seeds), C(ncluster_seeds), 0, 0, NULL,
	    NULL },
	{ "username", CT_STRING, C(redis_username), 0, 0, 0, NULL, NULL },
	{ "password", CT_STRING, C(redis_password), 0, 0, 0, NULL, NULL },
	{ "password_file", CT_SECRET, C(redis_password), 0, 0, 0, NULL, NULL },
	{ "database", CT_INT, C(redis_database), 0, 0, 10000, NULL, NULL },
	{ "timeout", CT_DURATION, C(redis_timeout_ms), 0, 1, 60000, NULL,
	    NULL },
	{ "batch_wait", CT_DURATION, C(redis_batch_wait_ms), 0, 0, 50, NULL,
	    NULL },
	{ "on_error", CT_BOOL, C(redis_on_error), 0, 0, 0, NULL,
	    "must be \"yes\" or \"no\" (quote it: YAML reads a bare no as "
	    "false)" },
	{ "prefix", CT_NAME, C(redis_prefix), 0, 0, 64, NULL, NULL },
	{ NULL, 0, 0, 0, 0, 0, NULL, NULL }
};

static const struct conf_opt conf_events_opts[] = {
	{ "channel", CT_NAME, C(events_channel), 0, 0, 0, NULL, NULL },
	{ "stream", CT_NAME, C(events_stream), 0, 0, 0, NULL, NULL },
	{ "stream_maxlen", CT_INT64, C(events_stream_maxlen), 0, 10,
	    100000000, NULL, NULL },
	{ "group", CT_NAME, C(events_group), 0, 0, 0, NULL, NULL },
	{ "shards", CT_INT, C(events_shards), 0, 1, KEYSPACE_SHARDS_MAX, NULL,
	    NULL },
	{ NULL, 0, 0, 0, 0, 0, NULL, NULL }
};

static const struct conf_opt conf_alerts_opts[] = {
	{ "from", CT_STRING, C(alerts_from), 0, 0, 0, NULL, NULL },
	{ "to", CT_LIST, C(alerts_to), C(alerts_nto), 0, 0, NULL, NULL },
	{ "cc", CT_LIST, C(alerts_cc), C(alerts_ncc), 0, 0, NULL, NULL },
	{ "subject", CT_STRING, C(alerts_subject), 0, 0, 0, NULL, NULL },
	{ "smtp", CT_STRING, C(alerts_smtp), 0, 0, 0, NULL, NULL },
	{ "smtp_username", CT_STRING, C(alerts_smtp_username), 0, 0, 0, NULL,
	    NULL },
	{ "smtp_password", CT_STRING, C(alerts_smtp_password), 0, 0, 0, NULL,
	    NULL },
	{ "smtp_password_file", CT_SECRET, C(alerts_smtp_password), 0, 0, 0,
	    NULL, NULL },
	{ "smtp_starttls", CT_ENUM, C(alerts_smtp_starttls), 0, 0, 0,
	    conf_starttls, "must be no, try or yes" },
	{ "smtp_cafile", CT_STRING, C(alerts_smtp_cafile), 0, 0, 0, NULL,
	    NULL },
	{ "smtp_timeout", CT_DURATION, C(alerts_smtp_timeout_ms), 0, 100,
	    600000, NULL, NULL },
	{ "sendmail", CT_ARGV, C(alerts_sendmail), 0, 0, 0, NULL, NULL },
	{ "report_command", CT_ARGV, C(alerts_report_command), 0, 0, 0, NULL,
	    NULL },
	{ "report_timeout", CT_DURATION, C(alerts_report_timeout_ms), 0, 10,
	    600000, NULL, NULL },
	{ "report_max_bytes", CT_SIZE, C(alerts_report_max_bytes), 0, 16,
	    10485760, NULL, NULL },
	{ "digest_wait", CT_DURATION, C(alerts_digest_wait_ms), 0, 0, 3600000,
	    NULL, NULL },
	/* At most what one own.lua call takes (alerter/stream.c). */
	{ "digest_max", CT_INT, C(alerts_digest_max), 0, 1, 1000, NULL,
	    NULL },
	{ "top_subjects", CT_INT, C(alerts_top_subjects), 0, 0, 100, NULL,
	    NULL },
	{ "consumer", CT_NAME, C(alerts_consumer), 0, 0, 0, NULL, NULL },
	{ "claim_idle", CT_DURATION, C(alerts_claim_idle_ms), 0, 1000,
	    86400000, NULL, NULL },
	{ "retry_max", CT_DURATION, C(alerts_retry_max_ms), 0, 100, 86400000,
	    NULL, NULL },
	{ NULL, 0, 0, 0, 0, 0, NULL, NULL }
};

static const struct conf_opt conf_control_opts[] = {
	{ "shim", CT_STRING, C(control_path[ROLE_SHIM]), 0, 0, 0, NULL,
	    NULL },
	{ "alerter", CT_STRING, C(control_path[ROLE_ALERTER]), 0, 0, 0, NULL,
	    NULL },
	{ "group", CT_NAME, C(control_group), 0, 0, 0, NULL, NULL },
	{ NULL, 0, 0, 0, 0, 0, NULL, NULL }
};

static const struct conf_opt conf_metrics_opts[] = {
	{ "shim", CT_STRING, C(metrics_addr[ROLE_SHIM]), 0, 0, 0, NULL,
	    NULL },
	{ "alerter", CT_STRING, C(metrics_addr[ROLE_ALERTER]), 0, 0, 0, NULL,
	    NULL },
	{ NULL, 0, 0, 0, 0, 0, NULL, NULL }
};

#define LIMIT_MUST	"must be a whole number, 0 or more"
#define WINDOW_MUST	"must be a duration such as 300s or 1h"
#define BURST_MUST	"must be a whole number, 1 or more"

/* One { limit, window, burst }, based at a struct conf_limit. */
static const struct conf_opt conf_limit_opts[] = {
	{ "limit", CT_INT64, L(limit), 0, 0, INT64_MAX / 4, NULL, LIMIT_MUST },
	{ "window", CT_DURATION, L(window_ms), 0, 1, INT64_MAX, NULL,
	    WINDOW_MUST },
	{ "burst", CT_INT64, L(burst), 0, 1, INT64_MAX / 4, NULL, BURST_MUST },
	{ NULL, 0, 0, 0, 0, 0, NULL, NULL }
};
static const struct conf_table conf_limit_table = {
	"must be a mapping such as { limit: 20, window: 5m }", conf_limit_opts
};

static const struct conf_opt conf_postfix_opts[] = {
	{ "key", CT_ATTR, R(postfix_key), 0, 0, 0, NULL,
	    "not a policy attribute name" },
	{ "action", CT_STRING, R(postfix_action), 0, 0, 0, NULL, NULL },
	{ "bounces", CT_ENUM, R(postfix_bounces), 0, 0, 0, conf_bounces,
	    "must be skip or count" },
	{ "networks", CT_CIDRS, R(postfix_networks), R(npostfix_networks), 0,
	    0, NULL, NULL },
	{ "authenticated", CT_BOOL, R(postfix_authenticated), 0, 0, 0, NULL,
	    "must be yes or no" },
	{ NULL, 0, 0, 0, 0, 0, NULL, NULL }
};
static const struct conf_table conf_postfix_table = {
	"must be a mapping such as { key: sasl_username, networks: "
	"[ 192.0.2.0/24 ] }", conf_postfix_opts
};

/*
 * A rule.  limit, window and burst here are the short form of a one-limit
 * rule: they land in limits[0], and conf_rule_finish() checks that they
 * and a limits list are not both given.
 */
enum { RO_LIMIT, RO_WINDOW, RO_BURST, RO_LIMITS, RO_COUNT_DENIED,
	RO_NEAR_CACHE };
static const struct conf_opt conf_rule_opts[] = {
	[RO_LIMIT] = { "limit", CT_INT64, R(limits[0].limit), 0, 0,
	    INT64_MAX / 4, NULL, LIMIT_MUST },
	[RO_WINDOW] = { "window", CT_DURATION, R(limits[0].window_ms), 0, 1,
	    INT64_MAX, NULL, WINDOW_MUST },
	[RO_BURST] = { "burst", CT_INT64, R(limits[0].burst), 0, 1,
	    INT64_MAX / 4, NULL, BURST_MUST },
	[RO_LIMITS] = { "limits", CT_LIMITS, R(limits), R(nlimits), 0, 0,
	    NULL, NULL },
	[RO_COUNT_DENIED] = { "count_denied", CT_BOOL, R(count_denied), 0, 0,
	    0, NULL, "must be yes or no" },
	[RO_NEAR_CACHE] = { "near_cache", CT_BOOL, R(near_cache), 0, 0, 0,
	    NULL, "must be yes or no" },
	{ "algorithm", CT_ENUM, R(algorithm), 0, 0, 0, conf_algorithms,
	    "must be fixed, sliding or gcra" },
	{ "mode", CT_ENUM, R(shadow), 0, 0, 0, conf_modes,
	    "must be enforce or shadow" },
	{ "normalize", CT_FLAGS, R(normalize), 0, 0, 0, conf_normalize, NULL },
	{ "allow", CT_PATTERNS, R(allow), R(nallow), 0, 0, NULL, NULL },
	{ "deny", CT_PATTERNS, R(deny), R(ndeny), 0, 0, NULL, NULL },
	{ "override", CT_OVERRIDES, R(overrides), R(noverrides), 0, 0, NULL,
	    NULL },
	{ "postfix", CT_MAP, 0, 0, 0, 0, &conf_postfix_table, NULL },
	{ NULL, 0, 0, 0, 0, 0, NULL, NULL }
};
static const struct conf_table conf_rule_table = {
	"must be a mapping such as { limit: 20, window: 300s }", conf_rule_opts
};

#define SECTION_SHAPE	"must be a mapping of options"
static const struct conf_table conf_shim_table = { SECTION_SHAPE,
	conf_shim_opts };
static const struct conf_table conf_redis_table = { SECTION_SHAPE,
	conf_redis_opts };
static const struct conf_table conf_events_table = { SECTION_SHAPE,
	conf_events_opts };
static const struct conf_table conf_alerts_table = { SECTION_SHAPE,
	conf_alerts_opts };
static const struct conf_table conf_control_table = { SECTION_SHAPE,
	conf_control_opts };
static const struct conf_table conf_metrics_table = { SECTION_SHAPE,
	conf_metrics_opts };

/* The top level; rules (NULL table) are a mapping of names to rules. */
static const struct {
	const char		*name;
	const struct conf_table	*table;
} conf_sections[] = {
	{ "shim", &conf_shim_table },
	{ "redis", &conf_redis_table },
	{ "events", &conf_events_table },
	{ "rules", NULL },
	{ "alerts", &conf_alerts_table },
	{ "control", &conf_control_table },
	{ "metrics", &conf_metrics_table },
};
#define CONF_NSECTIONS	(sizeof(conf_sections) / sizeof(conf_sections[0]))
#define CONF_RULES	3

static int	conf_walk(struct conf_ctx *, const char *,
		    const yaml_node_t *, const struct conf_table *, void *,
		    unsigned char *);

static unsigned long
conf_line(const yaml_node_t *n)
{
	return (unsigned long)n->start_mark.line + 1;
}

static int
conf_vfail(struct conf_ctx *p, unsigned long line, const char *fmt,
    va_list ap)
{
	char	 msg[CONF_ERRLEN];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (line > 0)
		snprintf(p->err, p->errlen, "%s:%lu: %s", p->file, line, msg);
	else
		snprintf(p->err, p->errlen, "%s: %s", p->file, msg);
	return -1;
}

/* "file:line: msg" at node n (NULL: no line). */
static int
conf_error(struct conf_ctx *p, const yaml_node_t *n, const char *fmt, ...)
{
	va_list	 ap;
	int	 rc;

	va_start(ap, fmt);
	rc = conf_vfail(p, n != NULL ? conf_line(n) : 0, fmt, ap);
	va_end(ap);
	return rc;
}

static int
conf_record(struct conf_ctx *p, const void *field, const yaml_node_t *n,
    const char *what)
{
	struct conf_where	*w;
	size_t			 cap;

	if (p->nwhere == p->capwhere) {
		cap = p->capwhere ? p->capwhere * 2 : 64;
		if ((w = reallocarray(p->where, cap, sizeof(*w))) == NULL)
			return conf_error(p, n, "%s: out of memory", what);
		p->where = w;
		p->capwhere = cap;
	}
	w = &p->where[p->nwhere++];
	w->field = field;
	w->line = conf_line(n);
	snprintf(w->what, sizeof(w->what), "%s", what);
	return 0;
}

static const struct conf_where *
conf_where_of(const struct conf_ctx *p, const void *field)
{
	size_t	 i;

	for (i = p->nwhere; i-- > 0;)
		if (p->where[i].field == field)
			return &p->where[i];
	return NULL;
}

/* The dotted name of the option at offset off of a table, or 0. */
static int
conf_opt_path(const struct conf_table *t, const char *prefix, size_t off,
    char *dst, size_t len)
{
	const struct conf_opt	*o;
	char			 sub[96];

	for (o = t->opts; o->name != NULL; o++) {
		if (o->type == CT_MAP) {
			snprintf(sub, sizeof(sub), "%s.%s", prefix, o->name);
			if (conf_opt_path(o->arg, sub, off, dst, len))
				return 1;
		} else if (o->off == off) {
			snprintf(dst, len, "%s.%s", prefix, o->name);
			return 1;
		}
	}
	return 0;
}

int
conf_fail(struct conf_ctx *p, const void *field, const char *fmt, ...)
{
	const struct conf_where	*w;
	const char		*base = (const char *)p->conf;
	char			 msg[CONF_ERRLEN], what[128];
	unsigned long		 line = p->root_line;
	size_t			 i;
	va_list			 ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if ((w = conf_where_of(p, field)) != NULL) {
		snprintf(p->err, p->errlen, "%s:%lu: %s: %s", p->file, w->line,
		    w->what, msg);
		return -1;
	}
	/* Not in the file: name it from the tables, at its section. */
	for (i = 0; i < CONF_NSECTIONS; i++) {
		if (conf_sections[i].table == NULL ||
		    !conf_opt_path(conf_sections[i].table,
		    conf_sections[i].name, (size_t)((const char *)field - base),
		    what, sizeof(what)))
			continue;
		if (p->sections[i] != NULL)
			line = conf_line(p->sections[i]);
		snprintf(p->err, p->errlen, "%s:%lu: %s: %s", p->file, line,
		    what, msg);
		return -1;
	}
	snprintf(p->err, p->errlen, "%s:%lu: %s", p->file, line, msg);
	return -1;
}

static const char *
conf_scalar(const yaml_node_t *n)
{
	return n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value
	    : NULL;
}

int
conf_parse_int(const char *s, int64_t min, int64_t max, int64_t *out)
{
	char		*end;
	long long	 v;

	if (s == NULL || *s == '\0' || isspace((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

int
conf_parse_duration(const char *s, int64_t *ms)
{
	static const struct { const char *unit; int64_t mult; } units[] = {
		{ "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
		{ "d", 86400000 },
	};
	char		*end;
	long long	 v;
	size_t		 i;

	if (s == NULL || !isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0)
		return -1;
	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (strcmp(end, units[i].unit) == 0)
			break;
	if (i == sizeof(units) / sizeof(units[0]))
		return -1;
	/* Ten years is more than any window needs and keeps ms in range. */
	if (v > 10LL * 366 * 86400 * 1000 / units[i].mult)
		return -1;
	*ms = v * units[i].mult;
	return 0;
}

static int
conf_valid_name(const char *s)
{
	if (*s == '\0')
		return 0;
	for (; *s != '\0'; s++)
		if (!isalnum((unsigned char)*s) && strchr("_.:@-", *s) == NULL)
			return 0;
	return 1;
}

static int
conf_valid_rule_name(const char *s, size_t len)
{
	size_t	 i;

	if (len == 0 || len >= CONF_NAME_MAX)
		return 0;
	for (i = 0; i < len; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-')
			return 0;
	return 1;
}

static void
conf_strv_free(char **v)
{
	char	**p;

	if (v == NULL)
		return;
	for (p = v; *p != NULL; p++)
		free(*p);
	free(v);
}

/* The items of a sequence node, and how many. */
static size_t
conf_nitems(const yaml_node_t *n)
{
	return (size_t)(n->data.sequence.items.top -
	    n->data.sequence.items.start);
}

static const yaml_node_t *
conf_item(struct conf_ctx *p, const yaml_node_t *n, size_t i)
{
	return yaml_document_get_node(&p->doc, n->data.sequence.items.start[i]);
}

/* host:port, [v6]:port, or unix:/path (where allowed). */
static int
conf_valid_address(const char *s, int unix_ok)
{
	const char	*colon;

	if (strncmp(s, "unix:", 5) == 0)
		return unix_ok && s[5] == '/';
	if ((colon = strrchr(s, ':')) == NULL || colon == s || colon[1] == '\0')
		return 0;
	/* Digits only, and few enough that atoi() cannot wrap. */
	return strspn(colon + 1, "0123456789") == strlen(colon + 1) &&
	    strlen(colon + 1) <= 5 && atoi(colon + 1) > 0 &&
	    atoi(colon + 1) < 65536;
}

/* host:port whose host is an IPv4 or a bracketed IPv6 address. */
static int
conf_numeric_host(const char *s)
{
	char		 host[64];
	unsigned char	 a[16];
	const char	*colon = strrchr(s, ':');
	size_t		 len = (size_t)(colon - s);

	if (colon == NULL || len == 0 || len >= sizeof(host))
		return 0;
	if (s[0] == '[' && colon[-1] == ']') {
		memcpy(host, s + 1, len - 2);
		host[len - 2] = '\0';
		return inet_pton(AF_INET6, host, a) == 1;
	}
	memcpy(host, s, len);
	host[len] = '\0';
	return inet_pton(AF_INET, host, a) == 1;
}

/* A scalar, or a sequence of scalars, as a NULL-terminated vector. */
static char **
conf_get_list(struct conf_ctx *p, const yaml_node_t *n, const char *what,
    size_t *count)
{
	const yaml_node_t	*e;
	char			**v;
	size_t			 i, cap;

	if (n->type == YAML_SCALAR_NODE) {
		if (*conf_scalar(n) == '\0') {
			conf_error(p, n, "%s: must not be empty", what);
			return NULL;
		}
		if ((v = calloc(2, sizeof(*v))) == NULL ||
		    (v[0] = strdup(conf_scalar(n))) == NULL) {
			free(v);
			conf_error(p, n, "%s: out of memory", what);
			return NULL;
		}
		*count = 1;
		return v;
	}
	if (n->type != YAML_SEQUENCE_NODE) {
		conf_error(p, n, "%s: must be a value or a list", what);
		return NULL;
	}
	if ((cap = conf_nitems(n)) == 0) {
		conf_error(p, n, "%s: must not be empty", what);
		return NULL;
	}
	if ((v = calloc(cap + 1, sizeof(*v))) == NULL) {
		conf_error(p, n, "%s: out of memory", what);
		return NULL;
	}
	for (i = 0; i < cap; i++) {
		e = conf_item(p, n, i);
		if (conf_scalar(e) == NULL || *conf_scalar(e) == '\0') {
			conf_error(p, e, "%s: each item must be a non-empty "
			    "value", what);
			conf_strv_free(v);
			return NULL;
		}
		if (strpbrk(conf_scalar(e), "\r\n") != NULL) {
			conf_error(p, e, "%s: must not contain a line break",
			    what);
			conf_strv_free(v);
			return NULL;
		}
		if ((v[i] = strdup(conf_scalar(e))) == NULL) {
			conf_error(p, e, "%s: out of memory", what);
			conf_strv_free(v);
			return NULL;
		}
	}
	*count = cap;
	return v;
}

/*
 * A secret kept out of the world-readable config: the first line of a file
 * only the daemon's user can read.
 */
static int
conf_read_secret(const char *path, char **out, char *err, size_t errlen)
{
	char	 buf[1024];
	FILE	*fp;
	size_t	 len;

	if ((fp = fopen(path, "r")) == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (fgets(buf, sizeof(buf), fp) == NULL) {
		snprintf(err, errlen, "%s: empty", path);
		fclose(fp);
		return -1;
	}
	fclose(fp);
	len = strcspn(buf, "\r\n");
	buf[len] = '\0';
	if (len == 0) {
		snprintf(err, errlen, "%s: empty first line", path);
		return -1;
	}
	if ((*out = strdup(buf)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	explicit_bzero(buf, sizeof(buf));
	return 0;
}

/* alice@example.org, *@example.org, 192.0.2.0/24, 2001:db8::/32. */
static int
conf_pattern(struct conf_ctx *p, const char *what, const yaml_node_t *n,
    int cidr_only, struct conf_pattern *pat)
{
	const char	*s = conf_scalar(n), *slash;
	char		 addr[64], *end;
	long		 prefix;
	int		 max;

	if (s == NULL || *s == '\0')
		return conf_error(p, n, "%s: each entry must be %s", what,
		    cidr_only ? "an address/prefix" :
		    "a key, *@domain or an address/prefix");
	slash = strchr(s, '/');
	if (!cidr_only && strncmp(s, "*@", 2) == 0 && s[2] != '\0') {
		pat->type = PAT_DOMAIN;
		pat->text = strdup(s + 2);
	} else if (slash != NULL && (size_t)(slash - s) < sizeof(addr)) {
		memcpy(addr, s, slash - s);
		addr[slash - s] = '\0';
		pat->type = PAT_CIDR;
		if (inet_pton(AF_INET, addr, pat->addr) == 1) {
			pat->family = AF_INET;
			max = 32;
		} else if (inet_pton(AF_INET6, addr, pat->addr) == 1) {
			pat->family = AF_INET6;
			max = 128;
		} else
			return conf_error(p, n, "%s: \"%s\" is not an "
			    "address/prefix", what, s);
		errno = 0;
		prefix = strtol(slash + 1, &end, 10);
		if (slash[1] == '\0' || *end != '\0' || prefix < 0 ||
		    prefix > max)
			return conf_error(p, n, "%s: bad prefix length in "
			    "\"%s\"", what, s);
		pat->prefix = (int)prefix;
		pat->text = strdup(s);
	} else if (cidr_only)
		return conf_error(p, n, "%s: \"%s\" is not an address/prefix "
		    "such as 192.0.2.0/24", what, s);
	else {
		pat->type = PAT_EXACT;
		pat->text = strdup(s);
	}
	if (pat->text == NULL)
		return conf_error(p, n, "%s: out of memory", what);
	return 0;
}

static int
conf_patterns(struct conf_ctx *p, const char *what, const yaml_node_t *seq,
    int cidr_only, struct conf_pattern **out, size_t *nout)
{
	size_t	 i, n;

	if (seq->type != YAML_SEQUENCE_NODE)
		return conf_error(p, seq, "%s: must be a list", what);
	n = conf_nitems(seq);
	if ((*out = calloc(n + 1, sizeof(**out))) == NULL)
		return conf_error(p, seq, "%s: out of memory", what);
	for (i = 0; i < n; i++) {
		if (conf_pattern(p, what, conf_item(p, seq, i), cidr_only,
		    &(*out)[*nout]) == -1)
			return -1;
		(*nout)++;
	}
	return 0;
}

static int
conf_overrides(struct conf_ctx *p, const char *what, const yaml_node_t *map,
    struct conf_override **out, size_t *nout)
{
	yaml_node_pair_t	*pair;
	const yaml_node_t	*k, *v;
	struct conf_override	*o;
	const char		*s;
	char			*end;
	size_t			 n;

	if (map->type != YAML_MAPPING_NODE)
		return conf_error(p, map, "%s: must map keys to allow, block or "
		    "xFACTOR", what);
	n = map->data.mapping.pairs.top - map->data.mapping.pairs.start;
	if ((*out = calloc(n + 1, sizeof(**out))) == NULL)
		return conf_error(p, map, "%s: out of memory", what);
	for (pair = map->data.mapping.pairs.start;
	    pair < map->data.mapping.pairs.top; pair++) {
		k = yaml_document_get_node(&p->doc, pair->key);
		v = yaml_document_get_node(&p->doc, pair->value);
		o = &(*out)[*nout];
		if (conf_scalar(k) == NULL || (s = conf_scalar(v)) == NULL)
			return conf_error(p, k, "%s: entries are KEY: allow | "
			    "block | xFACTOR", what);
		if (strcmp(s, "allow") == 0)
			o->action = OVR_ALLOW;
		else if (strcmp(s, "block") == 0)
			o->action = OVR_BLOCK;
		else if (s[0] == 'x' && s[1] != '\0') {
			o->action = OVR_FACTOR;
			errno = 0;
			o->factor = strtod(s + 1, &end);
			if (*end != '\0' || errno != 0 || !(o->factor > 0) ||
			    o->factor > 1e6)
				return conf_error(p, v, "%s: \"%s\" is not a "
				    "factor such as x2 or x0.5", what, s);
		} else
			return conf_error(p, v, "%s: \"%s\" must be allow, "
			    "block or xFACTOR", what, s);
		if ((o->key = strdup(conf_scalar(k))) == NULL)
			return conf_error(p, k, "%s: out of memory", what);
		(*nout)++;
	}
	return 0;
}

/* A rule's limits list: each item walked as one limit. */
static int
conf_limits(struct conf_ctx *p, const char *what, const yaml_node_t *seq,
    struct conf_limit *limits, size_t *nlimits)
{
	const yaml_node_t	*e;
	unsigned char		 seen[8];
	char			 item[128];
	size_t			 i;

	if (seq->type != YAML_SEQUENCE_NODE || conf_nitems(seq) == 0)
		return conf_error(p, seq, "%s: must be a list of { limit, "
		    "window }", what);
	if (conf_nitems(seq) > CONF_LIMITS_MAX)
		return conf_error(p, seq, "%s: at most %d", what,
		    CONF_LIMITS_MAX);
	for (i = 0; i < conf_nitems(seq); i++) {
		e = conf_item(p, seq, i);
		snprintf(item, sizeof(item), "%s[%zu]", what, i + 1);
		if (conf_walk(p, item, e, &conf_limit_table, &limits[i], seen)
		    == -1)
			return -1;
		if (!seen[0])
			return conf_error(p, e, "%s: limit is required", item);
		if (!seen[1])
			return conf_error(p, e, "%s: window is required", item);
		*nlimits = i + 1;
	}
	return 0;
}

/* The choice called s, or -1. */
static int
conf_choose(const struct conf_choice *ch, const char *s)
{
	for (; ch->name != NULL; ch++)
		if (strcmp(ch->name, s) == 0)
			return ch->value;
	return -1;
}

/* Store one option's value, typed, at base + o->off. */
static int
conf_set(struct conf_ctx *p, const char *section, const struct conf_opt *o,
    const yaml_node_t *n, void *base)
{
	char			 what[96], msg[256], *s2, **list;
	const char		*s = conf_scalar(n);
	char			*field = (char *)base + o->off;
	const struct conf_where	*dup;
	const yaml_node_t	*e;
	int64_t			 v;
	size_t			 count, i, max;
	long			 mode;
	int			 ch;

	snprintf(what, sizeof(what), "%s.%s", section, o->name);
	switch (o->type) {
	case CT_LIST:
	case CT_ARGV:
	case CT_LISTEN:
	case CT_PATTERNS:
	case CT_CIDRS:
	case CT_OVERRIDES:
	case CT_LIMITS:
	case CT_MAP:
	case CT_FLAGS:
		break;
	default:
		if (s == NULL)
			return conf_error(p, n, "%s: %s", what, o->must != NULL ?
			    o->must : "must be a single value");
		if (strpbrk(s, "\r\n") != NULL)
			return conf_error(p, n, "%s: must not contain a line "
			    "break", what);
	}
	/* Two options for one setting: password and password_file. */
	if ((o->type == CT_STRING || o->type == CT_SECRET) &&
	    (dup = conf_where_of(p, field)) != NULL)
		return conf_error(p, n, "%s: the same setting as %s (line %lu): "
		    "give one of them", what, dup->what, dup->line);
	if (o->type != CT_MAP && conf_record(p, field, n, what) == -1)
		return -1;

	switch (o->type) {
	case CT_STRING:
	case CT_NAME:
		if (*s == '\0')
			return conf_error(p, n, "%s: must not be empty", what);
		max = o->max > 0 ? (size_t)o->max : CONF_NAME_LEN;
		if (o->type == CT_NAME && (!conf_valid_name(s) ||
		    strlen(s) > max))
			return conf_error(p, n, "%s: \"%.*s\" may only contain "
			    "letters, digits and _ . : @ - (at most %zu)", what,
			    64, s, max);
		if (o->type == CT_STRING && o->max > 0 && strlen(s) > max)
			return conf_error(p, n, "%s: at most %zu characters",
			    what, max);
		if ((s2 = strdup(s)) == NULL)
			return conf_error(p, n, "%s: out of memory", what);
		free(*(char **)field);
		*(char **)field = s2;
		return 0;
	case CT_ATTR:
		if (!conf_valid_rule_name(s, strlen(s)))
			return conf_error(p, n, "%s: %s", what, o->must);
		snprintf(field, CONF_NAME_MAX, "%s", s);
		return 0;
	case CT_DURATION:
		if (conf_parse_duration(s, &v) == -1 || v < o->min ||
		    v > o->max) {
			if (o->must != NULL)
				return conf_error(p, n, "%s: %s", what,
				    o->must);
			if (conf_parse_duration(s, &v) == -1)
				return conf_error(p, n, "%s: \"%s\" is not a "
				    "duration (a number and ms, s, m, h or d)",
				    what, s);
			return conf_error(p, n, "%s: %s is out of range", what,
			    s);
		}
		*(int64_t *)field = v;
		return 0;
	case CT_INT:
	case CT_INT64:
	case CT_SIZE:
		if (conf_parse_int(s, o->min, o->max, &v) == -1) {
			if (o->must != NULL)
				return conf_error(p, n, "%s: %s", what,
				    o->must);
			return conf_error(p, n, "%s: must be a whole number "
			    "from %lld to %lld", what, (long long)o->min,
			    (long long)o->max);
		}
		if (o->type == CT_INT)
			*(int *)field = (int)v;
		else if (o->type == CT_INT64)
			*(int64_t *)field = v;
		else
			*(size_t *)field = (size_t)v;
		return 0;
	case CT_MODE:
		errno = 0;
		mode = strtol(s, &s2, 8);
		if (*s == '\0' || *s2 != '\0' || errno != 0 || mode < 0 ||
		    mode > o->max)
			return conf_error(p, n, "%s: must be an octal mode such "
			    "as \"0660\"", what);
		*(mode_t *)field = (mode_t)mode;
		return 0;
	case CT_BOOL:
		if (strcasecmp(s, "yes") == 0 || strcasecmp(s, "true") == 0)
			*(int *)field = 1;
		else if (strcasecmp(s, "no") == 0 ||
		    strcasecmp(s, "false") == 0)
			*(int *)field = 0;
		else
			return conf_error(p, n, "%s: %s", what, o->must != NULL ?
			    o->must : "must be yes or no");
		return 0;
	case CT_ENUM:
		if ((ch = conf_choose(o->arg, s)) == -1)
			return conf_error(p, n, "%s: %s", what, o->must);
		*(int *)field = ch;
		return 0;
	case CT_FLAGS:
		if (n->type != YAML_SEQUENCE_NODE)
			return conf_error(p, n, "%s: must be a list", what);
		for (i = 0; i < conf_nitems(n); i++) {
			e = conf_item(p, n, i);
			if ((s = conf_scalar(e)) == NULL)
				s = "";
			if ((ch = conf_choose(o->arg, s)) == -1)
				return conf_error(p, e, "%s: \"%s\" is not "
				    "lowercase, lowercase_domain or strip_tag",
				    what, s);
			*(unsigned *)field |= (unsigned)ch;
		}
		return 0;
	case CT_LIST:
	case CT_ARGV:
		if ((list = conf_get_list(p, n, what, &count)) == NULL)
			return -1;
		if (o->type == CT_ARGV && list[0][0] != '/') {
			conf_strv_free(list);
			return conf_error(p, n, "%s: the command must be an "
			    "absolute path", what);
		}
		conf_strv_free(*(char ***)field);
		*(char ***)field = list;
		if (o->type == CT_LIST)
			*(size_t *)((char *)base + o->noff) = count;
		return 0;
	case CT_LISTEN:
		if ((list = conf_get_list(p, n, what, &count)) == NULL)
			return -1;
		for (i = 0; i < count; i++) {
			if (strncmp(list[i], "inet:", 5) != 0 &&
			    list[i][0] != '/') {
				conf_error(p, n, "%s: \"%s\" is neither an "
				    "absolute socket path nor inet:HOST:PORT",
				    what, list[i]);
				conf_strv_free(list);
				return -1;
			}
			/* Bound as root, before names resolve: numeric,
			 * as daemon_inet() binds it. */
			if (list[i][0] != '/' &&
			    (!conf_valid_address(list[i] + 5, 0) ||
			    !conf_numeric_host(list[i] + 5))) {
				conf_error(p, n, "%s: \"%s\": HOST must be an "
				    "IP address (inet:127.0.0.1:7025, "
				    "inet:[::1]:7025) and PORT 1 to 65535",
				    what, list[i]);
				conf_strv_free(list);
				return -1;
			}
		}
		if ((*(struct conf_listen **)field = calloc(count,
		    sizeof(struct conf_listen))) == NULL) {
			conf_strv_free(list);
			return conf_error(p, n, "%s: out of memory", what);
		}
		for (i = 0; i < count; i++)
			(*(struct conf_listen **)field)[i].addr = list[i];
		*(size_t *)((char *)base + o->noff) = count;
		free(list);	/* the strings now belong to listen[] */
		return 0;
	case CT_SECRET:
		if (s[0] != '/')
			return conf_error(p, n, "%s: must be an absolute path",
			    what);
		if (conf_read_secret(s, &s2, msg, sizeof(msg)) == -1)
			return conf_error(p, n, "%s: %s", what, msg);
		free(*(char **)field);
		*(char **)field = s2;
		return 0;
	case CT_PATTERNS:
	case CT_CIDRS:
		return conf_patterns(p, what, n, o->type == CT_CIDRS,
		    (struct conf_pattern **)field,
		    (size_t *)((char *)base + o->noff));
	case CT_OVERRIDES:
		return conf_overrides(p, what, n, (struct conf_override **)field,
		    (size_t *)((char *)base + o->noff));
	case CT_LIMITS:
		return conf_limits(p, what, n, (struct conf_limit *)field,
		    (size_t *)((char *)base + o->noff));
	case CT_MAP:
		return conf_walk(p, what, n, o->arg, base, NULL);
	}
	return conf_error(p, n, "%s: internal error", what);
}

/*
 * Walk a mapping against a table: unknown and repeated keys are errors.
 * seen (one byte per option, may be NULL) tells the caller what was given.
 */
static int
conf_walk(struct conf_ctx *p, const char *path, const yaml_node_t *map,
    const struct conf_table *t, void *base, unsigned char *seen)
{
	yaml_node_pair_t	*pair;
	const yaml_node_t	*k, *v;
	const struct conf_opt	*o;
	unsigned char		 mine[32];
	size_t			 nopts;

	for (nopts = 0; t->opts[nopts].name != NULL; nopts++)
		;
	if (nopts > sizeof(mine))
		return conf_error(p, map, "%s: internal error: too many "
		    "options", path);
	if (seen == NULL)
		seen = mine;
	memset(seen, 0, nopts);
	if (map->type != YAML_MAPPING_NODE)
		return conf_error(p, map, "%s: %s", path, t->shape);
	for (pair = map->data.mapping.pairs.start;
	    pair < map->data.mapping.pairs.top; pair++) {
		k = yaml_document_get_node(&p->doc, pair->key);
		v = yaml_document_get_node(&p->doc, pair->value);
		if (conf_scalar(k) == NULL)
			return conf_error(p, k, "%s: keys must be plain names",
			    path);
		for (o = t->opts; o->name != NULL; o++)
			if (strcmp(o->name, conf_scalar(k)) == 0)
				break;
		if (o->name == NULL)
			return conf_error(p, k, "%s: unknown option \"%s\"",
			    path, conf_scalar(k));
		if (seen[o - t->opts]++)
			return conf_error(p, k, "%s.%s: given twice", path,
			    o->name);
		if (conf_set(p, path, o, v, base) == -1)
			return -1;
	}
	return 0;
}

/* What a rule needs beyond its options' own checks, and its defaults. */
static int
conf_rule_finish(struct conf_ctx *p, const char *path, const yaml_node_t *n,
    struct conf_rule *r, const unsigned char *seen)
{
	struct conf_limit	*l;
	size_t			 i, j;

	if (seen[RO_LIMIT] || seen[RO_WINDOW] || seen[RO_BURST]) {
		if (seen[RO_LIMITS])
			return conf_error(p, n, "%s: give limit and window, or "
			    "limits, not both", path);
		if (!seen[RO_LIMIT])
			return conf_error(p, n, "%s: limit is required", path);
		if (!seen[RO_WINDOW])
			return conf_error(p, n, "%s: window is required", path);
		r->nlimits = 1;
	}
	if (r->nlimits == 0)
		return conf_error(p, n, "%s: limit and window are required",
		    path);
	for (i = 0; i < r->nlimits; i++) {
		l = &r->limits[i];
		if (l->burst == 0)
			l->burst = l->limit;
		if (r->algorithm == ALG_GCRA && l->limit == 0)
			return conf_error(p, n, "%s: gcra needs limits of 1 or "
			    "more", path);
		if (r->nlimits > 1) {
			l->suffix[0] = '.';
			conf_format_duration(l->window_ms, l->suffix + 1,
			    sizeof(l->suffix) - 1);
		}
		for (j = 0; j < i; j++)
			if (r->limits[j].window_ms == l->window_ms)
				return conf_error(p, n, "%s.limits: two limits "
				    "with the same window", path);
	}
	/* The article counted every attempt; rate algorithms should not. */
	if (!seen[RO_COUNT_DENIED])
		r->count_denied = r->algorithm == ALG_FIXED;
	if (!seen[RO_NEAR_CACHE])
		r->near_cache = 1;
	if (r->postfix_key[0] == '\0')
		strcpy(r->postfix_key, "sender");
	r->postfix_key_sender = strcmp(r->postfix_key, "sender") == 0;
	if (r->postfix_action == NULL &&
	    (r->postfix_action = strdup("DEFER_IF_PERMIT 4.7.1 too much mail "
	    "from this sender, try again later")) == NULL)
		return conf_error(p, n, "%s: out of memory", path);
	return 0;
}

static int
conf_rules(struct conf_ctx *p, const yaml_node_t *map)
{
	yaml_node_pair_t	*pair;
	const yaml_node_t	*k, *v;
	struct conf_rule	*r;
	unsigned char		 seen[32];
	const char		*name;
	char			 path[96];
	size_t			 n, i;

	if (map->type != YAML_MAPPING_NODE)
		return conf_error(p, map, "rules: must be a mapping of rule "
		    "names");
	n = map->data.mapping.pairs.top - map->data.mapping.pairs.start;
	if (n == 0)
		return conf_error(p, map, "rules: at least one rule is needed");
	if ((p->conf->rules = calloc(n, sizeof(struct conf_rule))) == NULL)
		return conf_error(p, map, "rules: out of memory");
	for (pair = map->data.mapping.pairs.start;
	    pair < map->data.mapping.pairs.top; pair++) {
		k = yaml_document_get_node(&p->doc, pair->key);
		v = yaml_document_get_node(&p->doc, pair->value);
		if ((name = conf_scalar(k)) == NULL ||
		    !conf_valid_rule_name(name, strlen(name)))
			return conf_error(p, k, "rules: a rule name may only "
			    "contain letters, digits, _ and - (at most %d)",
			    CONF_NAME_MAX - 1);
		if (keyspace_reserved(name))
			return conf_error(p, k, "rules.%s: the name is "
			    "reserved: senderwatch's own keys are called "
			    "PREFIX:%s:...", name, name);
		for (i = 0; i < p->conf->nrules; i++)
			if (strcmp(p->conf->rules[i].name, name) == 0)
				return conf_error(p, k, "rules.%s: given twice",
				    name);
		/* Counted first, so conf_free() frees a half-parsed rule. */
		r = &p->conf->rules[p->conf->nrules++];
		snprintf(r->name, sizeof(r->name), "%s", name);
		snprintf(path, sizeof(path), "rules.%s", name);
		if (conf_record(p, r, k, path) == -1 ||
		    conf_walk(p, path, v, &conf_rule_table, r, seen) == -1 ||
		    conf_rule_finish(p, path, v, r, seen) == -1)
			return -1;
	}
	return 0;
}

static int
conf_defaults(struct conf *c)
{
	char	 host[256];

	c->socket_mode = 0660;
	c->client_timeout_ms = 2000;
	/* Longer than Postfix keeps an idle policy connection (300s). */
	c->policy_idle_ms = 330000;
	c->max_clients = 4096;
	c->max_request = 4096;
	c->near_cache = 10000;
	c->redis_timeout_ms = 100;
	c->redis_batch_wait_ms = 1;
	c->events_stream_maxlen = 10000;
	c->alerts_smtp_timeout_ms = 30000;
	c->alerts_report_timeout_ms = 5000;
	c->alerts_report_max_bytes = 16384;
	c->alerts_digest_wait_ms = 500;
	c->alerts_digest_max = 100;
	c->alerts_top_subjects = 10;
	c->alerts_claim_idle_ms = 60000;
	c->alerts_retry_max_ms = 60000;
	c->alerts_smtp_starttls = STARTTLS_TRY;
	if (gethostname(host, sizeof(host)) == -1)
		strcpy(host, "localhost");
	host[CONF_NAME_LEN] = '\0';	/* names are bounded everywhere */
	/* What shim.hostname accepts: count.lua's events name it in words. */
	if (!conf_valid_name(host))
		strcpy(host, "localhost");
#define DUP(f, v) if ((c->f = strdup(v)) == NULL) return -1
	DUP(hostname, host);
	DUP(alerts_consumer, host);
	DUP(redis_address, "127.0.0.1:6379");
	DUP(redis_prefix, "senderwatch");
	DUP(events_channel, "senderwatch:events");
	DUP(events_stream, "senderwatch:stream");
	DUP(events_group, "senderwatch-alerters");
	DUP(alerts_subject, "Mail Abuse Alert");
#undef DUP
	return 0;
}

/* One layout: a Redis (address), a Sentinel-managed master, a Cluster. */
static int
conf_check_redis(struct conf_ctx *p, const struct conf *c)
{
	size_t	 i;

	if (c->sentinel_master != NULL || c->nsentinel_addresses > 0 ||
	    c->sentinel_password != NULL || c->sentinel_username != NULL) {
		if (conf_where_of(p, &c->redis_address) != NULL)
			return conf_fail(p, &c->sentinel_addresses, "give "
			    "redis.address, redis.sentinel or redis.cluster, "
			    "one of them");
		if (c->cluster_seeds != NULL)
			return conf_fail(p, &c->cluster_seeds, "give "
			    "redis.sentinel or redis.cluster, not both");
		if (c->sentinel_master == NULL)
			return conf_fail(p, &c->sentinel_master, "is required "
			    "with redis.sentinel (the name the sentinels "
			    "monitor)");
		if (c->nsentinel_addresses == 0)
			return conf_fail(p, &c->sentinel_addresses, "is "
			    "required with redis.sentinel");
		if (c->sentinel_username != NULL &&
		    c->sentinel_password == NULL)
			return conf_fail(p, &c->sentinel_username, "needs "
			    "redis.sentinel.password");
		if (c->nsentinel_addresses > CONF_SENTINELS_MAX)
			return conf_fail(p, &c->sentinel_addresses, "at most "
			    "%d sentinels", CONF_SENTINELS_MAX);
		for (i = 0; i < c->nsentinel_addresses; i++)
			if (!conf_valid_address(c->sentinel_addresses[i], 1))
				return conf_fail(p, &c->sentinel_addresses,
				    "\"%s\" is not host:port",
				    c->sentinel_addresses[i]);
	}
	if (c->cluster_seeds != NULL) {
		if (conf_where_of(p, &c->redis_address) != NULL)
			return conf_fail(p, &c->cluster_seeds, "give "
			    "redis.address, redis.sentinel or redis.cluster, "
			    "one of them");
		if (c->redis_database != 0)
			return conf_fail(p, &c->redis_database, "a Redis "
			    "Cluster has database 0 only");
		for (i = 0; i < c->ncluster_seeds; i++)
			if (!conf_valid_address(c->cluster_seeds[i], 0))
				return conf_fail(p, &c->cluster_seeds, "\"%s\" "
				    "is not host:port", c->cluster_seeds[i]);
	}
	if (!conf_valid_address(c->redis_address, 1))
		return conf_fail(p, &c->redis_address, "\"%s\" is neither "
		    "unix:/path nor host:port", c->redis_address);
	return 0;
}

/* Checks across options that both daemons need, once everything is read. */
static int
conf_check_shared(struct conf_ctx *p, struct conf *c)
{
	size_t	 i;

	if (p->sections[CONF_RULES] == NULL)
		return conf_error(p, yaml_document_get_root_node(&p->doc),
		    "rules: at least one rule is needed");
	if ((c->rule_default = conf_rule_find(c, "default", 7)) == NULL)
		return conf_error(p, p->sections[CONF_RULES], "rules: a rule "
		    "named \"default\" is needed (bare requests are counted "
		    "under it)");
	if ((c->rule_postfix = conf_rule_find(c, "postfix", 7)) == NULL)
		c->rule_postfix = c->rule_default;
	if (c->redis_username != NULL && c->redis_password == NULL)
		return conf_fail(p, &c->redis_username, "needs redis.password");
	if (conf_check_redis(p, c) == -1)
		return -1;
	if (c->alerts_smtp != NULL && c->alerts_sendmail != NULL)
		return conf_fail(p, &c->alerts_sendmail, "give alerts.smtp or "
		    "alerts.sendmail, not both");
	if (c->alerts_smtp == NULL && c->alerts_sendmail == NULL &&
	    (c->alerts_smtp = strdup("localhost:25")) == NULL)
		return conf_error(p, NULL, "out of memory");
	for (i = 0; i < CONF_ROLES; i++) {
		if (c->control_path[i] != NULL && c->control_path[i][0] != '/')
			return conf_fail(p, &c->control_path[i], "must be an "
			    "absolute path");
		if (c->metrics_addr[i] != NULL &&
		    !conf_valid_address(c->metrics_addr[i], 0))
			return conf_fail(p, &c->metrics_addr[i], "\"%s\" is "
			    "not host:port", c->metrics_addr[i]);
		/* Bound as root before anything resolves names: numeric. */
		if (c->metrics_addr[i] != NULL &&
		    !conf_numeric_host(c->metrics_addr[i]))
			return conf_fail(p, &c->metrics_addr[i], "\"%s\": the "
			    "host must be an IP address (127.0.0.1, [::1])",
			    c->metrics_addr[i]);
	}
	if (c->control_path[ROLE_SHIM] != NULL &&
	    c->control_path[ROLE_ALERTER] != NULL &&
	    strcmp(c->control_path[ROLE_SHIM],
	    c->control_path[ROLE_ALERTER]) == 0)
		return conf_fail(p, &c->control_path[ROLE_ALERTER], "the shim "
		    "and the alerter need a socket each");
	if (c->metrics_addr[ROLE_SHIM] != NULL &&
	    c->metrics_addr[ROLE_ALERTER] != NULL &&
	    strcmp(c->metrics_addr[ROLE_SHIM],
	    c->metrics_addr[ROLE_ALERTER]) == 0)
		return conf_fail(p, &c->metrics_addr[ROLE_ALERTER], "the shim "
		    "and the alerter need an address each");
	/*
	 * A decision's wait for company counts against its timeout, and the
	 * call needs the rest: the default gives way to a timeout too short
	 * for it; a wait set is refused.
	 */
	if (c->redis_batch_wait_ms > c->redis_timeout_ms / 2) {
		if (conf_where_of(p, &c->redis_batch_wait_ms) == NULL)
			c->redis_batch_wait_ms = 0;
		else
			return conf_fail(p, &c->redis_batch_wait_ms, "must be "
			    "at most half of redis.timeout (%lldms)",
			    (long long)c->redis_timeout_ms);
	}
	/*
	 * Shards: a Cluster's, 48 by default (a multiple of any likely
	 * number of masters up to 6, and 8, 12, 16, 24: an even spread);
	 * elsewhere one, untagged, the names as they always were.
	 */
	if (c->cluster_seeds == NULL && c->events_shards > 1)
		return conf_fail(p, &c->events_shards, "more than one shard "
		    "needs redis.cluster");
	if (c->events_shards == 0)
		c->events_shards = c->cluster_seeds != NULL ? 48 : 1;
	if ((c->shards = keyspace_shards_new(c->redis_prefix,
	    c->events_stream, (size_t)c->events_shards,
	    c->cluster_seeds != NULL)) == NULL)
		return conf_error(p, NULL, "out of memory");
	for (i = 0; i < c->nrules; i++)
		if ((c->rules[i].ks = keyspace_rule_new(&c->rules[i])) == NULL)
			return conf_error(p, NULL, "out of memory");
	return 0;
}

static int
conf_top(struct conf_ctx *p, conf_check_fn *check)
{
	yaml_node_t		*root, *k, *v;
	yaml_node_pair_t	*pair;
	const char		*sect;
	size_t			 i;

	if ((root = yaml_document_get_root_node(&p->doc)) == NULL)
		return conf_error(p, NULL, "the file is empty");
	p->root_line = conf_line(root);
	if (root->type != YAML_MAPPING_NODE)
		return conf_error(p, root, "the top level must be a mapping of "
		    "sections");
	for (pair = root->data.mapping.pairs.start;
	    pair < root->data.mapping.pairs.top; pair++) {
		k = yaml_document_get_node(&p->doc, pair->key);
		v = yaml_document_get_node(&p->doc, pair->value);
		if ((sect = conf_scalar(k)) == NULL)
			return conf_error(p, k, "section names must be plain "
			    "names");
		for (i = 0; i < CONF_NSECTIONS; i++)
			if (strcmp(sect, conf_sections[i].name) == 0)
				break;
		if (i == CONF_NSECTIONS)
			return conf_error(p, k, "unknown section \"%s\" (known: "
			    "shim, redis, events, control, metrics, rules, "
			    "alerts)", sect);
		if (p->sections[i] != NULL)
			return conf_error(p, k, "section %s given twice", sect);
		p->sections[i] = k;
		if (conf_sections[i].table == NULL) {
			if (conf_rules(p, v) == -1)
				return -1;
		} else if (conf_walk(p, sect, v, conf_sections[i].table,
		    p->conf, NULL) == -1)
			return -1;
	}
	if (conf_check_shared(p, p->conf) == -1)
		return -1;
	return check != NULL ? check(p, p->conf) : 0;
}

struct conf *
conf_parse(const char *text, size_t len, const char *name,
    conf_check_fn *check, char *err, size_t errlen)
{
	struct conf_ctx		 p;
	yaml_parser_t		 parser;
	int			 rc;

	memset(&p, 0, sizeof(p));
	p.file = name;
	p.err = err;
	p.errlen = errlen;
	if ((p.conf = calloc(1, sizeof(*p.conf))) == NULL ||
	    (p.conf->path = strdup(name)) == NULL ||
	    conf_defaults(p.conf) == -1) {
		snprintf(err, errlen, "%s: out of memory", name);
		conf_free(p.conf);
		return NULL;
	}
	yaml_parser_initialize(&parser);
	yaml_parser_set_input_string(&parser, (const unsigned char *)text,
	    len);
	if (!yaml_parser_load(&parser, &p.doc)) {
		snprintf(err, errlen, "%s:%lu: %s", name,
		    (unsigned long)parser.problem_mark.line + 1,
		    parser.problem ? parser.problem : "YAML syntax error");
		yaml_parser_delete(&parser);
		conf_free(p.conf);
		return NULL;
	}
	yaml_parser_delete(&parser);
	rc = conf_top(&p, check);
	yaml_document_delete(&p.doc);
	free(p.where);
	if (rc == -1) {
		conf_free(p.conf);
		return NULL;
	}
	return p.conf;
}

struct conf *
conf_load(const char *file, conf_check_fn *check, char *err, size_t errlen)
{
	struct conf	*c;
	FILE		*fp;
	char		*text;
	size_t		 len;

	if ((fp = fopen(file, "r")) == NULL) {
		snprintf(err, errlen, "%s: %s", file, strerror(errno));
		return NULL;
	}
	if ((text = malloc(CONF_FILE_MAX + 1)) == NULL) {
		snprintf(err, errlen, "%s: out of memory", file);
		fclose(fp);
		return NULL;
	}
	len = fread(text, 1, CONF_FILE_MAX + 1, fp);
	if (ferror(fp) || len > CONF_FILE_MAX) {
		snprintf(err, errlen, "%s: %s", file, ferror(fp) ?
		    strerror(errno) : "larger than 1 MB");
		fclose(fp);
		free(text);
		return NULL;
	}
	fclose(fp);
	c = conf_parse(text, len, file, check, err, errlen);
	free(text);
	return c;
}

const struct conf_rule *
conf_rule_find(const struct conf *c, const char *name, size_t len)
{
	size_t	 i;

	for (i = 0; i < c->nrules; i++)
		if (strlen(c->rules[i].name) == len &&
		    memcmp(c->rules[i].name, name, len) == 0)
			return &c->rules[i];
	return NULL;
}

static void
conf_patterns_free(struct conf_pattern *pat, size_t n)
{
	size_t	 i;

	for (i = 0; i < n; i++)
		free(pat[i].text);
	free(pat);
}

static void
conf_rule_free(struct conf_rule *r)
{
	size_t	 i;

	conf_patterns_free(r->allow, r->nallow);
	conf_patterns_free(r->deny, r->ndeny);
	conf_patterns_free(r->postfix_networks, r->npostfix_networks);
	for (i = 0; i < r->noverrides; i++)
		free(r->overrides[i].key);
	free(r->overrides);
	free(r->postfix_action);
	keyspace_rule_free(r->ks);
}

enum conf_layout
conf_layout(const struct conf *c)
{
	if (c->sentinel_master != NULL)
		return LAYOUT_SENTINEL;
	if (c->cluster_seeds != NULL)
		return LAYOUT_CLUSTER;
	return LAYOUT_SINGLE;
}

const char *
conf_layout_name(enum conf_layout l)
{
	switch (l) {
	case LAYOUT_SENTINEL:
		return "sentinel";
	case LAYOUT_CLUSTER:
		return "cluster";
	default:
		return "single";
	}
}

const char *
conf_role_name(enum conf_role r)
{
	return r == ROLE_ALERTER ? "alerter" : "shim";
}

const char *
conf_redis_name(const struct conf *c)
{
	switch (conf_layout(c)) {
	case LAYOUT_SENTINEL:
		return c->sentinel_master;
	case LAYOUT_CLUSTER:
		return c->cluster_seeds[0];
	default:
		return c->redis_address;
	}
}

const char *
conf_algorithm_name(enum conf_algorithm a)
{
	const struct conf_choice	*ch;

	for (ch = conf_algorithms; ch->name != NULL; ch++)
		if (ch->value == (int)a)
			return ch->name;
	return "fixed";
}

void
conf_format_duration(int64_t ms, char *buf, size_t len)
{
	static const struct { int64_t ms; const char *unit; } units[] = {
		{ 86400000, "d" }, { 3600000, "h" }, { 60000, "m" },
		{ 1000, "s" }, { 1, "ms" },
	};
	size_t	 i;

	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (ms % units[i].ms == 0)
			break;
	snprintf(buf, len, "%lld%s", (long long)(ms / units[i].ms),
	    units[i].unit);
}

void
conf_free(struct conf *c)
{
	size_t	 i;

	if (c == NULL)
		return;
	for (i = 0; i < c->nlisten; i++)
		free(c->listen[i].addr);
	free(c->listen);
	for (i = 0; i < c->nrules; i++)
		conf_rule_free(&c->rules[i]);
	free(c->rules);
	keyspace_shards_free(c->shards);
	for (i = 0; i < CONF_ROLES; i++) {
		free(c->control_path[i]);
		free(c->metrics_addr[i]);
	}
	free(c->control_group);
	conf_strv_free(c->sentinel_addresses);
	conf_strv_free(c->cluster_seeds);
	free(c->sentinel_master);
	free(c->sentinel_username);
	if (c->sentinel_password != NULL)
		explicit_bzero(c->sentinel_password,
		    strlen(c->sentinel_password));
	free(c->sentinel_password);
	conf_strv_free(c->alerts_to);
	conf_strv_free(c->alerts_cc);
	conf_strv_free(c->alerts_sendmail);
	conf_strv_free(c->alerts_report_command);
	free(c->path);
	free(c->socket_group);
	free(c->user);
	free(c->group);
	free(c->hostname);
	free(c->redis_address);
	free(c->redis_username);
	if (c->redis_password != NULL)
		explicit_bzero(c->redis_password, strlen(c->redis_password));
	free(c->redis_password);
	free(c->redis_prefix);
	free(c->events_channel);
	free(c->events_stream);
	free(c->events_group);
	free(c->alerts_from);
	free(c->alerts_subject);
	free(c->alerts_smtp);
	free(c->alerts_smtp_username);
	if (c->alerts_smtp_password != NULL)
		explicit_bzero(c->alerts_smtp_password,
		    strlen(c->alerts_smtp_password));
	free(c->alerts_smtp_password);
	free(c->alerts_smtp_cafile);
	free(c->alerts_consumer);
	free(c);
}
