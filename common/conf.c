/*
 * conf.c: config.yaml loader.
 *
 * The file is loaded as a libyaml document, then walked against a table of
 * typed options per section.  Every error names file:line (libyaml counts
 * lines from 0) and the dotted option path.  Unknown keys and duplicates are
 * errors: a typo in a rate limiter's config must not silently fall back to a
 * default.
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

enum opt_type {
	OPT_STRING,	/* char * */
	OPT_NAME,	/* char *, restricted to [A-Za-z0-9_.:@-] */
	OPT_DURATION,	/* int64_t ms */
	OPT_INT,	/* int */
	OPT_INT64,	/* int64_t */
	OPT_SIZE,	/* size_t */
	OPT_MODE,	/* mode_t, octal string */
	OPT_LIST,	/* char **, NULL-terminated; a scalar is a list of one */
	OPT_LISTEN,	/* struct conf_listen[] + count */
	OPT_ANSWER,	/* char *, what Exim's condition accepts */
	OPT_STARTTLS,	/* int: no / try / yes */
	OPT_SECRET,	/* char *, read from the named file */
};

struct opt {
	const char	*name;
	enum opt_type	 type;
	size_t		 off;
	int64_t		 min, max;	/* numbers, durations (ms) */
};

#define O(f)	offsetof(struct conf, f)

static const struct opt shim_opts[] = {
	{ "listen",		OPT_LISTEN,	O(listen), 0, 0 },
	{ "socket_mode",	OPT_MODE,	O(socket_mode), 0, 07777 },
	{ "socket_group",	OPT_NAME,	O(socket_group), 0, 0 },
	{ "user",		OPT_NAME,	O(user), 0, 0 },
	{ "group",		OPT_NAME,	O(group), 0, 0 },
	{ "client_timeout",	OPT_DURATION,	O(client_timeout_ms), 10, 3600000 },
	{ "max_clients",	OPT_INT,	O(max_clients), 1, 1000000 },
	{ "max_request",	OPT_SIZE,	O(max_request), 64, 1048576 },
	{ "hostname",		OPT_NAME,	O(hostname), 0, 0 },
	{ NULL, 0, 0, 0, 0 }
};

static const struct opt redis_opts[] = {
	{ "address",		OPT_STRING,	O(redis_address), 0, 0 },
	{ "username",		OPT_STRING,	O(redis_username), 0, 0 },
	{ "password",		OPT_STRING,	O(redis_password), 0, 0 },
	{ "password_file",	OPT_SECRET,	O(redis_password), 0, 0 },
	{ "database",		OPT_INT,	O(redis_database), 0, 10000 },
	{ "timeout",		OPT_DURATION,	O(redis_timeout_ms), 1, 60000 },
	{ "on_error",		OPT_ANSWER,	O(redis_on_error), 0, 0 },
	{ "prefix",		OPT_NAME,	O(redis_prefix), 0, 0 },
	{ NULL, 0, 0, 0, 0 }
};

static const struct opt events_opts[] = {
	{ "channel",		OPT_NAME,	O(events_channel), 0, 0 },
	{ "stream",		OPT_NAME,	O(events_stream), 0, 0 },
	{ "stream_maxlen",	OPT_INT64,	O(events_stream_maxlen), 10, 100000000 },
	{ "group",		OPT_NAME,	O(events_group), 0, 0 },
	{ NULL, 0, 0, 0, 0 }
};

static const struct opt alerts_opts[] = {
	{ "from",		OPT_STRING,	O(alerts_from), 0, 0 },
	{ "to",			OPT_LIST,	O(alerts_to), 0, 0 },
	{ "cc",			OPT_LIST,	O(alerts_cc), 0, 0 },
	{ "subject",		OPT_STRING,	O(alerts_subject), 0, 0 },
	{ "smtp",		OPT_STRING,	O(alerts_smtp), 0, 0 },
	{ "smtp_username",	OPT_STRING,	O(alerts_smtp_username), 0, 0 },
	{ "smtp_password",	OPT_STRING,	O(alerts_smtp_password), 0, 0 },
	{ "smtp_password_file",	OPT_SECRET,	O(alerts_smtp_password), 0, 0 },
	{ "smtp_starttls",	OPT_STARTTLS,	O(alerts_smtp_starttls), 0, 0 },
	{ "smtp_cafile",	OPT_STRING,	O(alerts_smtp_cafile), 0, 0 },
	{ "smtp_timeout",	OPT_DURATION,	O(alerts_smtp_timeout_ms), 100, 600000 },
	{ "sendmail",		OPT_LIST,	O(alerts_sendmail), 0, 0 },
	{ "report_command",	OPT_LIST,	O(alerts_report_command), 0, 0 },
	{ "report_timeout",	OPT_DURATION,	O(alerts_report_timeout_ms), 10, 600000 },
	{ "report_max_bytes",	OPT_SIZE,	O(alerts_report_max_bytes), 16, 10485760 },
	{ "digest_wait",	OPT_DURATION,	O(alerts_digest_wait_ms), 0, 3600000 },
	{ "digest_max",		OPT_INT,	O(alerts_digest_max), 1, 10000 },
	{ "top_subjects",	OPT_INT,	O(alerts_top_subjects), 0, 100 },
	{ "consumer",		OPT_NAME,	O(alerts_consumer), 0, 0 },
	{ "claim_idle",		OPT_DURATION,	O(alerts_claim_idle_ms), 1000, 86400000 },
	{ "retry_max",		OPT_DURATION,	O(alerts_retry_max_ms), 100, 86400000 },
	{ NULL, 0, 0, 0, 0 }
};

struct parse {
	const char	*file;
	yaml_document_t	 doc;
	struct conf	*conf;
	char		*err;
	size_t		 errlen;
};

static int
fail(struct parse *p, const yaml_node_t *n, const char *fmt, ...)
{
	char	 msg[CONF_ERRLEN];
	va_list	 ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n != NULL)
		snprintf(p->err, p->errlen, "%s:%lu: %s", p->file,
		    (unsigned long)n->start_mark.line + 1, msg);
	else
		snprintf(p->err, p->errlen, "%s: %s", p->file, msg);
	return -1;
}

static const char *
scalar(const yaml_node_t *n)
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
	char		*end;
	long long	 v;
	int64_t		 mult;

	if (s == NULL || !isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0)
		return -1;
	if (strcmp(end, "ms") == 0)
		mult = 1;
	else if (strcmp(end, "s") == 0)
		mult = 1000;
	else if (strcmp(end, "m") == 0)
		mult = 60 * 1000;
	else if (strcmp(end, "h") == 0)
		mult = 3600 * 1000;
	else if (strcmp(end, "d") == 0)
		mult = 86400 * 1000;
	else
		return -1;
	/* Ten years is more than any window needs and keeps ms in range. */
	if (v > 10LL * 366 * 86400 * 1000 / mult)
		return -1;
	*ms = v * mult;
	return 0;
}

static int
valid_name(const char *s)
{
	if (*s == '\0')
		return 0;
	for (; *s != '\0'; s++)
		if (!isalnum((unsigned char)*s) && strchr("_.:@-", *s) == NULL)
			return 0;
	return 1;
}

static int
valid_rule_name(const char *s, size_t len)
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
strv_free(char **v)
{
	char	**p;

	if (v == NULL)
		return;
	for (p = v; *p != NULL; p++)
		free(*p);
	free(v);
}

/* A scalar, or a sequence of scalars, as a NULL-terminated vector. */
static char **
get_list(struct parse *p, const yaml_node_t *n, const char *what, size_t *count)
{
	yaml_node_item_t	*it;
	const yaml_node_t	*e;
	char			**v;
	size_t			 i = 0, cap;

	if (n->type == YAML_SCALAR_NODE) {
		if ((v = calloc(2, sizeof(*v))) == NULL ||
		    (v[0] = strdup(scalar(n))) == NULL) {
			free(v);
			fail(p, n, "%s: out of memory", what);
			return NULL;
		}
		*count = 1;
		return v;
	}
	if (n->type != YAML_SEQUENCE_NODE) {
		fail(p, n, "%s: must be a value or a list", what);
		return NULL;
	}
	cap = n->data.sequence.items.top - n->data.sequence.items.start;
	if (cap == 0) {
		fail(p, n, "%s: must not be empty", what);
		return NULL;
	}
	if ((v = calloc(cap + 1, sizeof(*v))) == NULL) {
		fail(p, n, "%s: out of memory", what);
		return NULL;
	}
	for (it = n->data.sequence.items.start;
	    it < n->data.sequence.items.top; it++) {
		e = yaml_document_get_node(&p->doc, *it);
		if (scalar(e) == NULL || *scalar(e) == '\0') {
			fail(p, e, "%s: each item must be a non-empty value",
			    what);
			strv_free(v);
			return NULL;
		}
		if ((v[i++] = strdup(scalar(e))) == NULL) {
			fail(p, e, "%s: out of memory", what);
			strv_free(v);
			return NULL;
		}
	}
	*count = i;
	return v;
}

/*
 * A secret kept out of the world-readable config: the first line of a file
 * only the daemon's user can read.
 */
static int
read_secret(const char *path, char **out, char *err, size_t errlen)
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

static int
set_opt(struct parse *p, const struct opt *o, const char *section,
    const yaml_node_t *n)
{
	char		 what[128];
	char		*base = (char *)p->conf;
	const char	*s = scalar(n);
	char		**list, *end, msg[256];
	int64_t		 v;
	size_t		 count, i;
	long		 mode;

	snprintf(what, sizeof(what), "%s.%s", section, o->name);
	if (o->type != OPT_LIST && o->type != OPT_LISTEN && s == NULL)
		return fail(p, n, "%s: must be a single value", what);

	switch (o->type) {
	case OPT_STRING:
	case OPT_NAME:
	case OPT_ANSWER:
		if (*s == '\0')
			return fail(p, n, "%s: must not be empty", what);
		if (o->type == OPT_NAME && (!valid_name(s) ||
		    strlen(s) > CONF_NAME_LEN))
			return fail(p, n, "%s: \"%.*s\" may only contain letters, "
			    "digits and _ . : @ - (at most %d)", what, 64, s,
			    CONF_NAME_LEN);
		if (o->type == OPT_ANSWER && strcasecmp(s, "yes") != 0 &&
		    strcasecmp(s, "no") != 0)
			return fail(p, n, "%s: must be \"yes\" or \"no\" "
			    "(quote it: YAML reads a bare no as false)", what);
		if (strpbrk(s, "\r\n") != NULL)
			return fail(p, n, "%s: must not contain a line break",
			    what);
		if (*(char **)(base + o->off) != NULL &&
		    (o->off == O(redis_password) ||
		    o->off == O(alerts_smtp_password)))
			return fail(p, n, "%s: the password is given twice",
			    what);
		free(*(char **)(base + o->off));
		if ((*(char **)(base + o->off) = strdup(s)) == NULL)
			return fail(p, n, "%s: out of memory", what);
		return 0;
	case OPT_DURATION:
		if (conf_parse_duration(s, &v) == -1)
			return fail(p, n, "%s: \"%s\" is not a duration "
			    "(a number and ms, s, m, h or d)", what, s);
		if (v < o->min || v > o->max)
			return fail(p, n, "%s: %s is out of range", what, s);
		*(int64_t *)(base + o->off) = v;
		return 0;
	case OPT_INT:
	case OPT_INT64:
	case OPT_SIZE:
		if (conf_parse_int(s, o->min, o->max, &v) == -1)
			return fail(p, n, "%s: must be a whole number from "
			    "%lld to %lld", what, (long long)o->min,
			    (long long)o->max);
		if (o->type == OPT_INT)
			*(int *)(base + o->off) = (int)v;
		else if (o->type == OPT_INT64)
			*(int64_t *)(base + o->off) = v;
		else
			*(size_t *)(base + o->off) = (size_t)v;
		return 0;
	case OPT_MODE:
		errno = 0;
		mode = strtol(s, &end, 8);
		if (*s == '\0' || *end != '\0' || errno != 0 || mode < 0 ||
		    mode > o->max)
			return fail(p, n, "%s: must be an octal mode such as "
			    "\"0660\"", what);
		*(mode_t *)(base + o->off) = (mode_t)mode;
		return 0;
	case OPT_SECRET:
		if (s[0] != '/')
			return fail(p, n, "%s: must be an absolute path", what);
		if (read_secret(s, &end, msg, sizeof(msg)) == -1)
			return fail(p, n, "%s: %s", what, msg);
		if (*(char **)(base + o->off) != NULL) {
			free(end);
			return fail(p, n, "%s: the password is given twice",
			    what);
		}
		*(char **)(base + o->off) = end;
		return 0;
	case OPT_STARTTLS:
		if (strcmp(s, "no") == 0 || strcmp(s, "false") == 0)
			v = 0;
		else if (strcmp(s, "try") == 0)
			v = 1;
		else if (strcmp(s, "yes") == 0 || strcmp(s, "true") == 0)
			v = 2;
		else
			return fail(p, n, "%s: must be no, try or yes", what);
		*(int *)(base + o->off) = (int)v;
		return 0;
	case OPT_LIST:
		if ((list = get_list(p, n, what, &count)) == NULL)
			return -1;
		strv_free(*(char ***)(base + o->off));
		*(char ***)(base + o->off) = list;
		if (o->off == O(alerts_to))
			p->conf->alerts_nto = count;
		else if (o->off == O(alerts_cc))
			p->conf->alerts_ncc = count;
		return 0;
	case OPT_LISTEN:
		if ((list = get_list(p, n, what, &count)) == NULL)
			return -1;
		for (i = 0; i < count; i++) {
			if (strncmp(list[i], "inet:", 5) != 0 &&
			    list[i][0] != '/') {
				fail(p, n, "%s: \"%s\" is neither an absolute "
				    "socket path nor inet:HOST:PORT", what,
				    list[i]);
				strv_free(list);
				return -1;
			}
		}
		if ((p->conf->listen = calloc(count,
		    sizeof(*p->conf->listen))) == NULL) {
			strv_free(list);
			return fail(p, n, "%s: out of memory", what);
		}
		for (i = 0; i < count; i++)
			p->conf->listen[i].addr = list[i];
		p->conf->nlisten = count;
		free(list);	/* the strings now belong to listen[] */
		return 0;
	}
	return fail(p, n, "%s: internal error", what);
}

/* Walk a mapping against a table: unknown and repeated keys are errors. */
static int
parse_section(struct parse *p, const char *section, const yaml_node_t *map,
    const struct opt *opts)
{
	yaml_node_pair_t	*pair;
	const yaml_node_t	*k, *v;
	const struct opt	*o;
	unsigned char		 seen[64];

	if (map->type != YAML_MAPPING_NODE)
		return fail(p, map, "%s: must be a mapping of options", section);
	memset(seen, 0, sizeof(seen));
	for (pair = map->data.mapping.pairs.start;
	    pair < map->data.mapping.pairs.top; pair++) {
		k = yaml_document_get_node(&p->doc, pair->key);
		v = yaml_document_get_node(&p->doc, pair->value);
		if (scalar(k) == NULL)
			return fail(p, k, "%s: keys must be plain names",
			    section);
		for (o = opts; o->name != NULL; o++)
			if (strcmp(o->name, scalar(k)) == 0)
				break;
		if (o->name == NULL)
			return fail(p, k, "%s: unknown option \"%s\"", section,
			    scalar(k));
		if (seen[o - opts]++)
			return fail(p, k, "%s.%s: given twice", section,
			    o->name);
		if (set_opt(p, o, section, v) == -1)
			return -1;
	}
	return 0;
}

/*
 * One { limit, window, burst }.  In the short form these sit among the
 * rule's other options, which parse_rule() has checked already.
 */
static int
parse_limit(struct parse *p, const char *rule, const yaml_node_t *map,
    struct conf_limit *l, int short_form)
{
	yaml_node_pair_t	*pair;
	const yaml_node_t	*k, *v;
	const char		*s;
	int			 have_limit = 0, have_window = 0;

	if (map->type != YAML_MAPPING_NODE)
		return fail(p, map, "rules.%s.limits: each limit must be a "
		    "mapping such as { limit: 20, window: 5m }", rule);
	for (pair = map->data.mapping.pairs.start;
	    pair < map->data.mapping.pairs.top; pair++) {
		k = yaml_document_get_node(&p->doc, pair->key);
		v = yaml_document_get_node(&p->doc, pair->value);
		s = scalar(v);
		if (scalar(k) == NULL)
			return fail(p, k, "rules.%s: keys must be plain names",
			    rule);
		if (strcmp(scalar(k), "limit") == 0) {
			if (have_limit++)
				return fail(p, k, "rules.%s.limit: given twice",
				    rule);
			if (conf_parse_int(s, 0, INT64_MAX / 4, &l->limit)
			    == -1)
				return fail(p, v, "rules.%s.limit: must be a "
				    "whole number, 0 or more", rule);
		} else if (strcmp(scalar(k), "window") == 0) {
			if (have_window++)
				return fail(p, k, "rules.%s.window: given "
				    "twice", rule);
			if (conf_parse_duration(s, &l->window_ms) == -1 ||
			    l->window_ms < 1)
				return fail(p, v, "rules.%s.window: must be a "
				    "duration such as 300s or 1h", rule);
		} else if (strcmp(scalar(k), "burst") == 0) {
			if (conf_parse_int(s, 1, INT64_MAX / 4, &l->burst)
			    == -1)
				return fail(p, v, "rules.%s.burst: must be a "
				    "whole number, 1 or more", rule);
		} else if (!short_form)
			return fail(p, k, "rules.%s: unknown option \"%s\"",
			    rule, scalar(k));
	}
	if (!have_limit)
		return fail(p, map, "rules.%s: limit is required", rule);
	if (!have_window)
		return fail(p, map, "rules.%s: window is required", rule);
	return 0;
}

static int
parse_pattern(struct parse *p, const char *rule, const char *list,
    const yaml_node_t *n, struct conf_pattern *pat)
{
	const char	*s = scalar(n), *slash;
	char		 addr[64], *end;
	long		 prefix;
	int		 max;

	if (s == NULL || *s == '\0')
		return fail(p, n, "rules.%s.%s: each entry must be a key, "
		    "*@domain or an address/prefix", rule, list);
	if (strncmp(s, "*@", 2) == 0 && s[2] != '\0') {
		pat->type = PAT_DOMAIN;
		pat->text = strdup(s + 2);
	} else if ((slash = strchr(s, '/')) != NULL &&
	    (size_t)(slash - s) < sizeof(addr)) {
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
			return fail(p, n, "rules.%s.%s: \"%s\" is not an "
			    "address/prefix", rule, list, s);
		errno = 0;
		prefix = strtol(slash + 1, &end, 10);
		if (slash[1] == '\0' || *end != '\0' || prefix < 0 ||
		    prefix > max)
			return fail(p, n, "rules.%s.%s: bad prefix length in "
			    "\"%s\"", rule, list, s);
		pat->prefix = (int)prefix;
		pat->text = strdup(s);
	} else {
		pat->type = PAT_EXACT;
		pat->text = strdup(s);
	}
	if (pat->text == NULL)
		return fail(p, n, "out of memory");
	return 0;
}

static int
parse_patterns(struct parse *p, const char *rule, const char *list,
    const yaml_node_t *seq, struct conf_pattern **out, size_t *nout)
{
	yaml_node_item_t	*it;
	size_t			 n;

	if (seq->type != YAML_SEQUENCE_NODE)
		return fail(p, seq, "rules.%s.%s: must be a list", rule, list);
	n = seq->data.sequence.items.top - seq->data.sequence.items.start;
	if ((*out = calloc(n + 1, sizeof(**out))) == NULL)
		return fail(p, seq, "out of memory");
	for (it = seq->data.sequence.items.start;
	    it < seq->data.sequence.items.top; it++) {
		if (parse_pattern(p, rule, list,
		    yaml_document_get_node(&p->doc, *it), &(*out)[*nout]) == -1)
			return -1;
		(*nout)++;
	}
	return 0;
}

static int
parse_overrides(struct parse *p, const char *rule, const yaml_node_t *map,
    struct conf_rule *r)
{
	yaml_node_pair_t	*pair;
	const yaml_node_t	*k, *v;
	struct conf_override	*o;
	const char		*s;
	char			*end;
	size_t			 n;

	if (map->type != YAML_MAPPING_NODE)
		return fail(p, map, "rules.%s.override: must map keys to "
		    "allow, block or xFACTOR", rule);
	n = map->data.mapping.pairs.top - map->data.mapping.pairs.start;
	if ((r->overrides = calloc(n + 1, sizeof(*o))) == NULL)
		return fail(p, map, "out of memory");
	for (pair = map->data.mapping.pairs.start;
	    pair < map->data.mapping.pairs.top; pair++) {
		k = yaml_document_get_node(&p->doc, pair->key);
		v = yaml_document_get_node(&p->doc, pair->value);
		o = &r->overrides[r->noverrides];
		if (scalar(k) == NULL || (s = scalar(v)) == NULL)
			return fail(p, k, "rules.%s.override: entries are "
			    "KEY: allow | block | xFACTOR", rule);
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
				return fail(p, v, "rules.%s.override: \"%s\" "
				    "is not a factor such as x2 or x0.5", rule,
				    s);
		} else
			return fail(p, v, "rules.%s.override: \"%s\" must be "
			    "allow, block or xFACTOR", rule, s);
		if ((o->key = strdup(scalar(k))) == NULL)
			return fail(p, k, "out of memory");
		r->noverrides++;
	}
	return 0;
}

static int
parse_postfix(struct parse *p, const char *rule, const yaml_node_t *map,
    struct conf_rule *r)
{
	yaml_node_pair_t	*pair;
	const yaml_node_t	*k, *v;
	const char		*s;

	if (map->type != YAML_MAPPING_NODE)
		return fail(p, map, "rules.%s.postfix: must be a mapping "
		    "{ key: ATTRIBUTE, action: ACTION }", rule);
	for (pair = map->data.mapping.pairs.start;
	    pair < map->data.mapping.pairs.top; pair++) {
		k = yaml_document_get_node(&p->doc, pair->key);
		v = yaml_document_get_node(&p->doc, pair->value);
		if (scalar(k) == NULL || (s = scalar(v)) == NULL || *s == '\0')
			return fail(p, k, "rules.%s.postfix: entries need "
			    "values", rule);
		if (strcmp(scalar(k), "key") == 0) {
			if (!valid_rule_name(s, strlen(s)))
				return fail(p, v, "rules.%s.postfix.key: not "
				    "a policy attribute name", rule);
			snprintf(r->postfix_key, sizeof(r->postfix_key), "%s",
			    s);
		} else if (strcmp(scalar(k), "action") == 0) {
			if (strpbrk(s, "\r\n") != NULL)
				return fail(p, v, "rules.%s.postfix.action: "
				    "must be one line", rule);
			free(r->postfix_action);
			if ((r->postfix_action = strdup(s)) == NULL)
				return fail(p, v, "out of memory");
		} else
			return fail(p, k, "rules.%s.postfix: unknown option "
			    "\"%s\"", rule, scalar(k));
	}
	return 0;
}

static int
parse_normalize(struct parse *p, const char *rule, const yaml_node_t *seq,
    unsigned *flags)
{
	yaml_node_item_t	*it;
	const yaml_node_t	*e;
	const char		*s;

	if (seq->type != YAML_SEQUENCE_NODE)
		return fail(p, seq, "rules.%s.normalize: must be a list", rule);
	for (it = seq->data.sequence.items.start;
	    it < seq->data.sequence.items.top; it++) {
		e = yaml_document_get_node(&p->doc, *it);
		if ((s = scalar(e)) == NULL)
			s = "";
		if (strcmp(s, "lowercase") == 0)
			*flags |= NORM_LOWERCASE;
		else if (strcmp(s, "lowercase_domain") == 0)
			*flags |= NORM_LOWERCASE_DOMAIN;
		else if (strcmp(s, "strip_tag") == 0)
			*flags |= NORM_STRIP_TAG;
		else
			return fail(p, e, "rules.%s.normalize: \"%s\" is not "
			    "lowercase, lowercase_domain or strip_tag", rule,
			    s);
	}
	return 0;
}

/* Rule option names, in the order a rule's errors are checked. */
enum {
	RO_LIMIT, RO_WINDOW, RO_BURST, RO_LIMITS, RO_ALGORITHM, RO_MODE,
	RO_COUNT_DENIED, RO_NORMALIZE, RO_ALLOW, RO_DENY, RO_OVERRIDE,
	RO_POSTFIX, RO_MAX
};
static const char *rule_opts[RO_MAX] = {
	"limit", "window", "burst", "limits", "algorithm", "mode",
	"count_denied", "normalize", "allow", "deny", "override", "postfix"
};

static int
parse_rule(struct parse *p, const char *name, const yaml_node_t *v,
    struct conf_rule *r)
{
	yaml_node_pair_t	*rp;
	yaml_node_item_t	*it;
	const yaml_node_t	*rk, *rv, *short_node = NULL;
	const char		*s;
	int			 seen[RO_MAX], o, count_denied = -1;
	size_t			 i, j;

	if (v->type != YAML_MAPPING_NODE)
		return fail(p, v, "rules.%s: must be a mapping such as "
		    "{ limit: 20, window: 300s }", name);
	memset(seen, 0, sizeof(seen));
	snprintf(r->name, sizeof(r->name), "%s", name);
	for (rp = v->data.mapping.pairs.start;
	    rp < v->data.mapping.pairs.top; rp++) {
		rk = yaml_document_get_node(&p->doc, rp->key);
		rv = yaml_document_get_node(&p->doc, rp->value);
		s = scalar(rv);
		if (scalar(rk) == NULL)
			return fail(p, rk, "rules.%s: keys must be plain names",
			    name);
		for (o = 0; o < RO_MAX; o++)
			if (strcmp(scalar(rk), rule_opts[o]) == 0)
				break;
		if (o == RO_MAX)
			return fail(p, rk, "rules.%s: unknown option \"%s\"",
			    name, scalar(rk));
		if (seen[o]++)
			return fail(p, rk, "rules.%s.%s: given twice", name,
			    rule_opts[o]);
		switch (o) {
		case RO_LIMIT:
		case RO_WINDOW:
		case RO_BURST:
			short_node = v;	/* checked as one limit below */
			break;
		case RO_LIMITS:
			if (rv->type != YAML_SEQUENCE_NODE ||
			    rv->data.sequence.items.top ==
			    rv->data.sequence.items.start)
				return fail(p, rv, "rules.%s.limits: must be a "
				    "list of { limit, window }", name);
			for (it = rv->data.sequence.items.start;
			    it < rv->data.sequence.items.top; it++) {
				if (r->nlimits == CONF_LIMITS_MAX)
					return fail(p, rv, "rules.%s.limits: "
					    "at most %d", name,
					    CONF_LIMITS_MAX);
				if (parse_limit(p, name,
				    yaml_document_get_node(&p->doc, *it),
				    &r->limits[r->nlimits], 0) == -1)
					return -1;
				r->nlimits++;
			}
			break;
		case RO_ALGORITHM:
			if (s != NULL && strcmp(s, "fixed") == 0)
				r->algorithm = ALG_FIXED;
			else if (s != NULL && strcmp(s, "sliding") == 0)
				r->algorithm = ALG_SLIDING;
			else if (s != NULL && strcmp(s, "gcra") == 0)
				r->algorithm = ALG_GCRA;
			else
				return fail(p, rv, "rules.%s.algorithm: must "
				    "be fixed, sliding or gcra", name);
			break;
		case RO_MODE:
			if (s != NULL && strcmp(s, "enforce") == 0)
				r->shadow = 0;
			else if (s != NULL && strcmp(s, "shadow") == 0)
				r->shadow = 1;
			else
				return fail(p, rv, "rules.%s.mode: must be "
				    "enforce or shadow", name);
			break;
		case RO_COUNT_DENIED:
			if (s != NULL && (strcmp(s, "yes") == 0 ||
			    strcmp(s, "true") == 0))
				count_denied = 1;
			else if (s != NULL && (strcmp(s, "no") == 0 ||
			    strcmp(s, "false") == 0))
				count_denied = 0;
			else
				return fail(p, rv, "rules.%s.count_denied: "
				    "must be yes or no", name);
			break;
		case RO_NORMALIZE:
			if (parse_normalize(p, name, rv, &r->normalize) == -1)
				return -1;
			break;
		case RO_ALLOW:
			if (parse_patterns(p, name, "allow", rv, &r->allow,
			    &r->nallow) == -1)
				return -1;
			break;
		case RO_DENY:
			if (parse_patterns(p, name, "deny", rv, &r->deny,
			    &r->ndeny) == -1)
				return -1;
			break;
		case RO_OVERRIDE:
			if (parse_overrides(p, name, rv, r) == -1)
				return -1;
			break;
		case RO_POSTFIX:
			if (parse_postfix(p, name, rv, r) == -1)
				return -1;
			break;
		}
	}
	if (short_node != NULL) {
		if (seen[RO_LIMITS])
			return fail(p, v, "rules.%s: give limit and window, or "
			    "limits, not both", name);
		/* The short form is a one-element limits list. */
		if (parse_limit(p, name, v, &r->limits[0], 1) == -1)
			return -1;
		r->nlimits = 1;
	}
	if (r->nlimits == 0)
		return fail(p, v, "rules.%s: limit and window are required",
		    name);
	for (i = 0; i < r->nlimits; i++) {
		if (r->limits[i].burst == 0)
			r->limits[i].burst = r->limits[i].limit;
		if (r->algorithm == ALG_GCRA && r->limits[i].limit == 0)
			return fail(p, v, "rules.%s: gcra needs limits of 1 "
			    "or more", name);
		if (r->nlimits > 1) {
			r->limits[i].suffix[0] = '.';
			conf_format_duration(r->limits[i].window_ms,
			    r->limits[i].suffix + 1,
			    sizeof(r->limits[i].suffix) - 1);
		}
		for (j = 0; j < i; j++)
			if (r->limits[j].window_ms == r->limits[i].window_ms)
				return fail(p, v, "rules.%s.limits: two limits "
				    "with the same window", name);
	}
	/* The article counted every attempt; rate algorithms should not. */
	r->count_denied = count_denied != -1 ? count_denied :
	    r->algorithm == ALG_FIXED;
	if (r->postfix_key[0] == '\0')
		strcpy(r->postfix_key, "sender");
	if (r->postfix_action == NULL &&
	    (r->postfix_action = strdup("DEFER_IF_PERMIT 4.7.1 too much mail "
	    "from this sender, try again later")) == NULL)
		return fail(p, v, "out of memory");
	return 0;
}

static int
parse_rules(struct parse *p, const yaml_node_t *map)
{
	yaml_node_pair_t	*pair;
	const yaml_node_t	*k, *v;
	const char		*name;
	size_t			 n, i;

	if (map->type != YAML_MAPPING_NODE)
		return fail(p, map, "rules: must be a mapping of rule names");
	n = map->data.mapping.pairs.top - map->data.mapping.pairs.start;
	if (n == 0)
		return fail(p, map, "rules: at least one rule is needed");
	if ((p->conf->rules = calloc(n, sizeof(struct conf_rule))) == NULL)
		return fail(p, map, "rules: out of memory");

	for (pair = map->data.mapping.pairs.start;
	    pair < map->data.mapping.pairs.top; pair++) {
		k = yaml_document_get_node(&p->doc, pair->key);
		v = yaml_document_get_node(&p->doc, pair->value);
		if ((name = scalar(k)) == NULL ||
		    !valid_rule_name(name, strlen(name)))
			return fail(p, k, "rules: a rule name may only contain "
			    "letters, digits, _ and - (at most %d)",
			    CONF_NAME_MAX - 1);
		/* These name other data under the prefix (count.lua). */
		if (strcmp(name, "subjects") == 0 ||
		    strcmp(name, "crossed") == 0 ||
		    strcmp(name, "override") == 0)
			return fail(p, k, "rules.%s: the name is reserved",
			    name);
		for (i = 0; i < p->conf->nrules; i++)
			if (strcmp(p->conf->rules[i].name, name) == 0)
				return fail(p, k, "rules.%s: given twice",
				    name);
		/* Counted first, so conf_free() frees a half-parsed rule. */
		p->conf->nrules++;
		if (parse_rule(p, name, v,
		    &p->conf->rules[p->conf->nrules - 1]) == -1)
			return -1;
	}
	return 0;
}

static int
set_defaults(struct conf *c)
{
	char	 host[256];

	c->socket_mode = 0660;
	c->client_timeout_ms = 2000;
	c->max_clients = 4096;
	c->max_request = 4096;
	c->redis_timeout_ms = 100;
	c->events_stream_maxlen = 10000;
	c->alerts_smtp_timeout_ms = 30000;
	c->alerts_report_timeout_ms = 5000;
	c->alerts_report_max_bytes = 16384;
	c->alerts_digest_wait_ms = 500;
	c->alerts_digest_max = 100;
	c->alerts_top_subjects = 10;
	c->alerts_claim_idle_ms = 60000;
	c->alerts_retry_max_ms = 60000;
	c->alerts_smtp_starttls = 1;
	if (gethostname(host, sizeof(host)) == -1)
		strcpy(host, "localhost");
	host[CONF_NAME_LEN] = '\0';	/* names are bounded everywhere */
#define DUP(f, v) if (c->f == NULL && (c->f = strdup(v)) == NULL) return -1
	DUP(hostname, host);
	DUP(alerts_consumer, host);
	DUP(redis_address, "127.0.0.1:6379");
	DUP(redis_on_error, "no");
	DUP(redis_prefix, "senderwatch");
	DUP(events_channel, "senderwatch:events");
	DUP(events_stream, "senderwatch:stream");
	DUP(events_group, "senderwatch-alerters");
	DUP(alerts_subject, "Mail Abuse Alert");
#undef DUP
	return 0;
}

/* A string that names Redis keys: PREFIX:[KIND:]RULE[SUFFIX]: */
static char *
key_head(const struct conf *c, const char *kind, const char *rule,
    const char *suffix)
{
	char	*s;

	if (asprintf(&s, "%s:%s%s%s%s:", c->redis_prefix, kind,
	    *kind != '\0' ? ":" : "", rule, suffix) == -1)
		return NULL;
	return s;
}

/*
 * What every request of a rule sends the same: key name heads and the
 * limits as text, made once here rather than per request.
 */
static int
rule_prepare(const struct conf *c, struct conf_rule *r)
{
	struct conf_limit	*l;
	size_t			 i;

	if ((r->subjects_head = key_head(c, "subjects", r->name, "")) == NULL ||
	    (r->override_head = key_head(c, "override", r->name, "")) == NULL)
		return -1;
	for (i = 0; i < r->nlimits; i++) {
		l = &r->limits[i];
		if ((l->state_head = key_head(c, "", r->name, l->suffix)) ==
		    NULL || (l->crossed_head = key_head(c, "crossed", r->name,
		    l->suffix)) == NULL)
			return -1;
		snprintf(l->text[0], sizeof(l->text[0]), "%lld",
		    (long long)l->limit);
		snprintf(l->text[1], sizeof(l->text[1]), "%lld",
		    (long long)l->window_ms);
		snprintf(l->text[2], sizeof(l->text[2]), "%lld",
		    (long long)l->burst);
	}
	return 0;
}

/* Checks across options, once everything is read. */
static int
post_validate(struct parse *p, const yaml_node_t *root)
{
	struct conf	*c = p->conf;
	size_t		 i;

	if (c->rules == NULL)
		return fail(p, root, "rules: at least one rule is needed");
	for (i = 0; i < c->nrules; i++)
		if (strcmp(c->rules[i].name, "default") == 0)
			break;
	if (i == c->nrules)
		return fail(p, root, "rules: a rule named \"default\" is "
		    "needed (bare requests are counted under it)");
	if (strlen(c->redis_prefix) > 64)
		return fail(p, root, "redis.prefix: at most 64 characters");
	if (c->redis_username != NULL && c->redis_password == NULL)
		return fail(p, root, "redis.username needs redis.password");
	if (strncmp(c->redis_address, "unix:", 5) != 0 &&
	    strrchr(c->redis_address, ':') == NULL)
		return fail(p, root, "redis.address: \"%s\" is neither "
		    "unix:/path nor host:port", c->redis_address);
	if (c->alerts_smtp != NULL && c->alerts_sendmail != NULL)
		return fail(p, root, "alerts: give smtp or sendmail, not both");
	if (c->alerts_sendmail != NULL && c->alerts_sendmail[0][0] != '/')
		return fail(p, root, "alerts.sendmail: the command must be an "
		    "absolute path");
	if (c->alerts_report_command != NULL &&
	    c->alerts_report_command[0][0] != '/')
		return fail(p, root, "alerts.report_command: the command must "
		    "be an absolute path");
	if (c->alerts_smtp == NULL && c->alerts_sendmail == NULL &&
	    (c->alerts_smtp = strdup("localhost:25")) == NULL)
		return fail(p, root, "out of memory");
	for (i = 0; i < c->nrules; i++)
		if (rule_prepare(c, &c->rules[i]) == -1)
			return fail(p, root, "out of memory");
	return 0;
}

struct conf *
conf_load(const char *file, char *err, size_t errlen)
{
	struct parse		 p;
	yaml_parser_t		 parser;
	yaml_node_t		*root, *k, *v;
	yaml_node_pair_t	*pair;
	FILE			*fp;
	const char		*sect;
	unsigned		 seen = 0, bit;
	int			 rc = -1;

	memset(&p, 0, sizeof(p));
	p.file = file;
	p.err = err;
	p.errlen = errlen;

	if ((fp = fopen(file, "r")) == NULL) {
		snprintf(err, errlen, "%s: %s", file, strerror(errno));
		return NULL;
	}
	if ((p.conf = calloc(1, sizeof(*p.conf))) == NULL ||
	    (p.conf->path = strdup(file)) == NULL) {
		snprintf(err, errlen, "%s: out of memory", file);
		fclose(fp);
		conf_free(p.conf);
		return NULL;
	}
	yaml_parser_initialize(&parser);
	yaml_parser_set_input_file(&parser, fp);
	if (!yaml_parser_load(&parser, &p.doc)) {
		snprintf(err, errlen, "%s:%lu: %s", file,
		    (unsigned long)parser.problem_mark.line + 1,
		    parser.problem ? parser.problem : "YAML syntax error");
		yaml_parser_delete(&parser);
		fclose(fp);
		conf_free(p.conf);
		return NULL;
	}
	yaml_parser_delete(&parser);
	fclose(fp);

	/* Defaults first: what the file sets replaces them. */
	if (set_defaults(p.conf) == -1) {
		fail(&p, NULL, "out of memory");
		goto done;
	}
	if ((root = yaml_document_get_root_node(&p.doc)) == NULL) {
		fail(&p, NULL, "the file is empty");
		goto done;
	}
	if (root->type != YAML_MAPPING_NODE) {
		fail(&p, root, "the top level must be a mapping of sections");
		goto done;
	}
	for (pair = root->data.mapping.pairs.start;
	    pair < root->data.mapping.pairs.top; pair++) {
		k = yaml_document_get_node(&p.doc, pair->key);
		v = yaml_document_get_node(&p.doc, pair->value);
		if ((sect = scalar(k)) == NULL) {
			fail(&p, k, "section names must be plain names");
			goto done;
		}
		if (strcmp(sect, "shim") == 0)
			bit = 1;
		else if (strcmp(sect, "redis") == 0)
			bit = 2;
		else if (strcmp(sect, "events") == 0)
			bit = 4;
		else if (strcmp(sect, "rules") == 0)
			bit = 8;
		else if (strcmp(sect, "alerts") == 0)
			bit = 16;
		else {
			fail(&p, k, "unknown section \"%s\" (known: shim, "
			    "redis, events, rules, alerts)", sect);
			goto done;
		}
		if (seen & bit) {
			fail(&p, k, "section %s given twice", sect);
			goto done;
		}
		seen |= bit;
		if ((bit == 1 && parse_section(&p, sect, v, shim_opts) == -1) ||
		    (bit == 2 && parse_section(&p, sect, v, redis_opts) == -1) ||
		    (bit == 4 && parse_section(&p, sect, v, events_opts) == -1) ||
		    (bit == 8 && parse_rules(&p, v) == -1) ||
		    (bit == 16 && parse_section(&p, sect, v, alerts_opts) == -1))
			goto done;
	}
	if (post_validate(&p, root) == -1)
		goto done;
	rc = 0;
done:
	yaml_document_delete(&p.doc);
	if (rc == -1) {
		conf_free(p.conf);
		return NULL;
	}
	return p.conf;
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
conf_rule_free(struct conf_rule *r)
{
	size_t	 i;

	for (i = 0; i < r->nallow; i++)
		free(r->allow[i].text);
	for (i = 0; i < r->ndeny; i++)
		free(r->deny[i].text);
	for (i = 0; i < r->noverrides; i++)
		free(r->overrides[i].key);
	for (i = 0; i < r->nlimits; i++) {
		free(r->limits[i].state_head);
		free(r->limits[i].crossed_head);
	}
	free(r->subjects_head);
	free(r->override_head);
	free(r->allow);
	free(r->deny);
	free(r->overrides);
	free(r->postfix_action);
}

const char *
conf_algorithm_name(enum conf_algorithm a)
{
	switch (a) {
	case ALG_SLIDING:
		return "sliding";
	case ALG_GCRA:
		return "gcra";
	default:
		return "fixed";
	}
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
	strv_free(c->alerts_to);
	strv_free(c->alerts_cc);
	strv_free(c->alerts_sendmail);
	strv_free(c->alerts_report_command);
	free(c->path);
	free(c->socket_group);
	free(c->user);
	free(c->group);
	free(c->hostname);
	free(c->redis_address);
	free(c->redis_username);
	free(c->redis_password);
	free(c->redis_on_error);
	free(c->redis_prefix);
	free(c->events_channel);
	free(c->events_stream);
	free(c->events_group);
	free(c->alerts_from);
	free(c->alerts_subject);
	free(c->alerts_smtp);
	free(c->alerts_smtp_username);
	free(c->alerts_smtp_password);
	free(c->alerts_smtp_cafile);
	free(c->alerts_consumer);
	free(c);
}
