/*
 * request.c: parse one shim request.  Pure code: no I/O, no allocation;
 * the results point into the caller's buffer.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "conf.h"
#include "log.h"
#include "request.h"

#define SUBJECT_MAX	998	/* RFC 5322 line limit; the script trims */

struct attr {
	const char	*name;
	size_t		 len;
};

enum { ATTR_RULE, ATTR_KEY, ATTR_SUBJECT, ATTR_COST, ATTR_MODE,
    ATTR_REQUEST };

static const struct attr attrs[] = {
	{ "rule", 4 },
	{ "key", 3 },
	{ "subject", 7 },
	{ "cost", 4 },
	{ "mode", 4 },
	{ "request", 7 },
};
#define NATTRS	(sizeof(attrs) / sizeof(attrs[0]))

/* Index of the attribute that line starts with ("name="), or -1. */
static int
request_attr_of(const char *line, size_t len)
{
	size_t	 i;

	for (i = 0; i < NATTRS; i++)
		if (len > attrs[i].len && line[attrs[i].len] == '=' &&
		    memcmp(line, attrs[i].name, attrs[i].len) == 0)
			return (int)i;
	return -1;
}

static void
request_set_key(struct request *req, const char *key, size_t len)
{
	if (len == 0) {
		/* The null sender of bounces, as Exim shows it. */
		req->key = "<>";
		req->key_len = 2;
	} else {
		req->key = key;
		req->key_len = len;
	}
}

static int
request_parse_cost(const char *val, size_t len, long long *out)
{
	long long	 v = 0;
	size_t		 i;

	if (len == 0 || len > 7)
		return -1;
	for (i = 0; i < len; i++) {
		if (val[i] < '0' || val[i] > '9')
			return -1;
		v = v * 10 + (val[i] - '0');
	}
	if (v > REQUEST_COST_MAX)
		return -1;
	*out = v;
	return 0;
}

/*
 * Postfix policy delegation: every attribute is kept (unknown ones are
 * Postfix's business), the block must end with an empty line, and the
 * key is chosen later by the rule.
 */
static enum request_status
request_parse_policy(const char *buf, size_t len, int eof, struct request *req,
    char *err, size_t errlen)
{
	const char		*line = buf, *nl, *end = buf + len, *eq;
	struct request_attr	*a;
	size_t			 llen;

	req->policy = 1;
	for (;;) {
		nl = memchr(line, '\n', end - line);
		if (nl == NULL) {
			if (!eof)
				return REQUEST_MORE;
			snprintf(err, errlen, "policy request without its "
			    "closing empty line");
			return REQUEST_ERROR;
		}
		llen = nl - line;
		if (llen > 0 && line[llen - 1] == '\r')
			llen--;
		if (llen == 0)
			break;
		if ((eq = memchr(line, '=', llen)) == NULL) {
			snprintf(err, errlen, "policy attribute without =");
			return REQUEST_ERROR;
		}
		if (req->nattrs < REQUEST_ATTRS_MAX) {
			a = &req->attrs[req->nattrs++];
			a->name = line;
			a->name_len = eq - line;
			a->value = eq + 1;
			a->value_len = llen - (eq + 1 - line);
		}
		line = nl + 1;
	}
	req->used = nl + 1 - buf;
	a = (struct request_attr *)request_attr(req, "request");
	if (a == NULL || a->value_len != 19 ||
	    memcmp(a->value, "smtpd_access_policy", 19) != 0) {
		snprintf(err, errlen, "unsupported policy request type");
		return REQUEST_ERROR;
	}
	return REQUEST_DONE;
}

const struct request_attr *
request_attr(const struct request *req, const char *name)
{
	size_t	 i, len = strlen(name);

	for (i = 0; i < req->nattrs; i++)
		if (req->attrs[i].name_len == len &&
		    memcmp(req->attrs[i].name, name, len) == 0)
			return &req->attrs[i];
	return NULL;
}

static enum request_status
request_parse_block(const char *buf, size_t len, int eof, struct request *req,
    char *err, size_t errlen)
{
	const char	*line = buf, *nl, *end = buf + len, *val;
	char		 name[48];
	size_t		 llen, vlen;
	int		 a, seen = 0, have_key = 0;

	for (;;) {
		if (line == end) {
			if (!eof)
				return REQUEST_MORE;
			break;		/* EOF ends the block */
		}
		nl = memchr(line, '\n', end - line);
		if (nl == NULL && !eof)
			return REQUEST_MORE;
		llen = (nl != NULL ? nl : end) - line;
		if (llen > 0 && line[llen - 1] == '\r')
			llen--;
		if (llen == 0) {
			/* An empty line ends the block. */
			line = nl != NULL ? nl + 1 : end;
			break;
		}
		if ((a = request_attr_of(line, llen)) == -1) {
			val = memchr(line, '=', llen);
			/* The name is the client's: quote it for the log. */
			log_quote(name, sizeof(name), line,
			    val != NULL ? (size_t)(val - line) : llen);
			snprintf(err, errlen, "unknown attribute %s", name);
			return REQUEST_ERROR;
		}
		if (seen & (1 << a)) {
			snprintf(err, errlen, "attribute %s given twice",
			    attrs[a].name);
			return REQUEST_ERROR;
		}
		seen |= 1 << a;
		val = line + attrs[a].len + 1;
		vlen = llen - attrs[a].len - 1;
		switch (a) {
		case ATTR_RULE:
			req->rule = val;
			req->rule_len = vlen;
			break;
		case ATTR_KEY:
			if (vlen > KEY_MAX) {
				snprintf(err, errlen, "key longer than %d "
				    "bytes", KEY_MAX);
				return REQUEST_ERROR;
			}
			request_set_key(req, val, vlen);
			have_key = 1;
			break;
		case ATTR_SUBJECT:
			req->subject = val;
			req->subject_len = vlen < SUBJECT_MAX ? vlen :
			    SUBJECT_MAX;
			break;
		case ATTR_COST:
			if (request_parse_cost(val, vlen, &req->cost) == -1) {
				snprintf(err, errlen, "cost must be a whole "
				    "number from 0 to %d", REQUEST_COST_MAX);
				return REQUEST_ERROR;
			}
			break;
		case ATTR_MODE:
			if (vlen == 4 && memcmp(val, "peek", 4) == 0)
				req->peek = 1;
			else if (!(vlen == 5 && memcmp(val, "count", 5) == 0)) {
				snprintf(err, errlen, "mode must be count or "
				    "peek");
				return REQUEST_ERROR;
			}
			break;
		case ATTR_REQUEST:
			snprintf(err, errlen, "request= must come first");
			return REQUEST_ERROR;
		}
		if (nl == NULL) {
			line = end;
			break;
		}
		line = nl + 1;
	}
	if (!have_key) {
		snprintf(err, errlen, "attribute block without key=");
		return REQUEST_ERROR;
	}
	if (req->rule_len == 0) {
		snprintf(err, errlen, "empty rule=");
		return REQUEST_ERROR;
	}
	req->used = line - buf;
	return REQUEST_DONE;
}

enum request_status
request_parse(const char *buf, size_t len, int eof, struct request *req,
    char *err, size_t errlen)
{
	const char	*nl;
	size_t		 llen;

	/* The attribute array is large and filled only for policy requests. */
	memset(req, 0, offsetof(struct request, attrs));
	req->nattrs = 0;
	req->used = 0;
	req->rule = "default";
	req->rule_len = 7;
	req->cost = 1;

	if (len == 0)
		return eof ? REQUEST_EMPTY : REQUEST_MORE;

	nl = memchr(buf, '\n', len);
	llen = nl != NULL ? (size_t)(nl - buf) : len;
	/* Decide bare or block as soon as the first name could be seen. */
	switch (request_attr_of(buf, llen)) {
	case -1:
		break;
	case ATTR_REQUEST:
		return request_parse_policy(buf, len, eof, req, err, errlen);
	default:
		return request_parse_block(buf, len, eof, req, err, errlen);
	}
	if (nl == NULL && !eof) {
		if (len > KEY_MAX + 1) {
			snprintf(err, errlen, "key longer than %d bytes",
			    KEY_MAX);
			return REQUEST_ERROR;
		}
		return REQUEST_MORE;
	}
	req->used = nl != NULL ? llen + 1 : len;
	if (llen > 0 && buf[llen - 1] == '\r')
		llen--;
	if (llen > KEY_MAX) {
		snprintf(err, errlen, "key longer than %d bytes", KEY_MAX);
		return REQUEST_ERROR;
	}
	request_set_key(req, buf, llen);
	return REQUEST_DONE;
}
