/*
 * request.c: parse one shim request.  Pure code: no I/O, no allocation;
 * the results point into the caller's buffer.
 */
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

static const struct attr attrs[] = {
	{ "rule", 4 },
	{ "key", 3 },
	{ "subject", 7 },
};
#define NATTRS	(sizeof(attrs) / sizeof(attrs[0]))

/* Index of the attribute that line starts with ("name="), or -1. */
static int
attr_of(const char *line, size_t len)
{
	size_t	 i;

	for (i = 0; i < NATTRS; i++)
		if (len > attrs[i].len && line[attrs[i].len] == '=' &&
		    memcmp(line, attrs[i].name, attrs[i].len) == 0)
			return (int)i;
	return -1;
}

static void
set_key(struct request *req, const char *key, size_t len)
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

static enum request_status
parse_block(const char *buf, size_t len, int eof, struct request *req,
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
		if ((a = attr_of(line, llen)) == -1) {
			val = memchr(line, '=', llen);
			/* The name is the client's: quote it for the log. */
			log_quote(name, sizeof(name), line,
			    val != NULL ? (size_t)(val - line) : llen);
			snprintf(err, errlen, "unknown attribute \"%s\"", name);
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
		case 0:
			req->rule = val;
			req->rule_len = vlen;
			break;
		case 1:
			if (vlen > KEY_MAX) {
				snprintf(err, errlen, "key longer than %d "
				    "bytes", KEY_MAX);
				return REQUEST_ERROR;
			}
			set_key(req, val, vlen);
			have_key = 1;
			break;
		case 2:
			req->subject = val;
			req->subject_len = vlen < SUBJECT_MAX ? vlen :
			    SUBJECT_MAX;
			break;
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

	memset(req, 0, sizeof(*req));
	req->rule = "default";
	req->rule_len = 7;

	if (len == 0)
		return eof ? REQUEST_EMPTY : REQUEST_MORE;

	nl = memchr(buf, '\n', len);
	llen = nl != NULL ? (size_t)(nl - buf) : len;
	/* Decide bare or block as soon as the first name could be seen. */
	if (attr_of(buf, llen) != -1)
		return parse_block(buf, len, eof, req, err, errlen);
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
	set_key(req, buf, llen);
	return REQUEST_DONE;
}
