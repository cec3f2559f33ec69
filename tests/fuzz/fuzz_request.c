/*
 * fuzz_request.c: libFuzzer target for the shim's request grammar
 * (shim/request.c), both forms: bare "KEY\n" lines and name=value blocks.
 *
 * The parser runs on every read() of every client, so besides "does not
 * crash" it must keep a few promises the session relies on; a broken one
 * aborts, which libFuzzer reports like a crash:
 *
 *   - results point into the caller's buffer (or at the parser's own
 *     constants "default" and "<>"), inside the bytes it says it used;
 *   - a key is 1..KEY_MAX bytes, a subject at most 998, a rule non-empty,
 *     a cost within 0..REQUEST_COST_MAX; a policy request has no key yet
 *     (its rule picks one) and at most REQUEST_ATTRS_MAX attributes;
 *   - no field of a finished request holds a newline: a line ends there;
 *   - an error message is printable ASCII: it goes into a log line, and a
 *     client must not be able to forge one with CR/LF;
 *   - streaming: once a prefix of the bytes is DONE or an ERROR, more
 *     bytes (or EOF) never change the verdict.  The session parses after
 *     each read(), so a verdict that depended on how the kernel split the
 *     bytes would make the answer depend on timing.
 *
 * The first input byte picks where the stream is split; the rest is the
 * client's bytes.  The input is copied into a buffer of exactly its size
 * so that AddressSanitizer sees any read past the end.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "request.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

#define SUBJECT_MAX	998	/* request.c trims subjects to this */

static void
check_inside(const char *buf, size_t used, const char *p, size_t len,
    const char *own)
{
	if (p == own)
		return;
	if (p < buf || p + len > buf + used)
		abort();
}

static int
has_newline(const char *p, size_t len)
{
	return p != NULL && memchr(p, '\n', len) != NULL;
}

static void
check_request(const char *buf, size_t len, enum request_status st,
    const struct request *r, const char *err)
{
	const struct request_attr	*a;
	const char			*e;
	size_t				 i;

	switch (st) {
	case REQUEST_MORE:
	case REQUEST_EMPTY:
		return;
	case REQUEST_ERROR:
		if (err[0] == '\0')
			abort();	/* an error must say why */
		for (e = err; *e != '\0'; e++)
			if ((unsigned char)*e < 0x20 || (unsigned char)*e > 0x7e)
				abort();
		return;
	case REQUEST_DONE:
		break;
	default:
		abort();
	}
	if (r->used == 0 || r->used > len)
		abort();
	if (r->rule == NULL || r->rule_len == 0)
		abort();
	if (r->cost < 0 || r->cost > REQUEST_COST_MAX ||
	    (r->peek != 0 && r->peek != 1))
		abort();
	if (r->policy) {
		if (r->nattrs > REQUEST_ATTRS_MAX)
			abort();
		for (i = 0; i < r->nattrs; i++) {
			a = &r->attrs[i];
			check_inside(buf, r->used, a->name, a->name_len, NULL);
			check_inside(buf, r->used, a->value, a->value_len,
			    NULL);
			if (has_newline(a->name, a->name_len) ||
			    has_newline(a->value, a->value_len) ||
			    memchr(a->name, '=', a->name_len) != NULL)
				abort();
		}
		if (request_attr(r, "request") == NULL)
			abort();
	} else {
		if (r->nattrs != 0)
			abort();
		if (r->key == NULL || r->key_len == 0 ||
		    r->key_len > KEY_MAX)
			abort();
		check_inside(buf, r->used, r->key, r->key_len,
		    r->key_len == 2 && memcmp(r->key, "<>", 2) == 0 ?
		    r->key : NULL);
	}
	if (r->subject == NULL ? r->subject_len != 0 :
	    r->subject_len > SUBJECT_MAX)
		abort();
	check_inside(buf, r->used, r->rule, r->rule_len,
	    r->rule_len == 7 && memcmp(r->rule, "default", 7) == 0 ?
	    r->rule : NULL);
	if (r->subject != NULL)
		check_inside(buf, r->used, r->subject, r->subject_len, NULL);
	if (has_newline(r->key, r->key_len) ||
	    has_newline(r->rule, r->rule_len) ||
	    has_newline(r->subject, r->subject_len))
		abort();
}

static int
same_field(const char *a, size_t alen, const char *b, size_t blen)
{
	if (a == NULL || b == NULL)
		return a == b && alen == blen;
	return alen == blen && memcmp(a, b, alen) == 0;
}

static int
same_request(const struct request *a, const struct request *b)
{
	size_t	 i;

	if (a->used != b->used || a->policy != b->policy ||
	    a->cost != b->cost || a->peek != b->peek || a->nattrs != b->nattrs)
		return 0;
	for (i = 0; i < a->nattrs; i++)
		if (!same_field(a->attrs[i].name, a->attrs[i].name_len,
		    b->attrs[i].name, b->attrs[i].name_len) ||
		    !same_field(a->attrs[i].value, a->attrs[i].value_len,
		    b->attrs[i].value, b->attrs[i].value_len))
			return 0;
	return same_field(a->key, a->key_len, b->key, b->key_len) &&
	    same_field(a->rule, a->rule_len, b->rule, b->rule_len) &&
	    same_field(a->subject, a->subject_len, b->subject, b->subject_len);
}

/* Parse buf as one read() gave it, then again after more data or EOF. */
static enum request_status
parse(const char *buf, size_t len, int eof, struct request *r, char *err,
    size_t errlen)
{
	enum request_status	 st;

	err[0] = '\0';
	st = request_parse(buf, len, eof, r, err, errlen);
	check_request(buf, len, st, r, err);
	return st;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct request		 full, part, fin;
	enum request_status	 st_full, st_part, st_fin;
	char			 err[160];
	char			*buf;
	size_t			 len, split;

	if (size < 1)
		return 0;
	len = size - 1;
	split = len > 0 ? data[0] % (len + 1) : 0;
	/* malloc(0) may return NULL; one spare byte keeps it simple. */
	if ((buf = malloc(len + 1)) == NULL)
		return 0;
	memcpy(buf, data + 1, len);

	/* A prefix as an early read() would see it, then the whole. */
	st_part = parse(buf, split, 0, &part, err, sizeof(err));
	st_full = parse(buf, len, 0, &full, err, sizeof(err));
	st_fin = parse(buf, len, 1, &fin, err, sizeof(err));

	if (st_part == REQUEST_DONE &&
	    (st_full != REQUEST_DONE || !same_request(&part, &full)))
		abort();
	if (st_part == REQUEST_ERROR && st_full != REQUEST_ERROR)
		abort();
	if (st_full == REQUEST_DONE &&
	    (st_fin != REQUEST_DONE || !same_request(&full, &fin)))
		abort();
	if (st_full == REQUEST_ERROR && st_fin != REQUEST_ERROR)
		abort();
	/* With EOF nothing is left to wait for. */
	if (st_fin == REQUEST_MORE)
		abort();
	if (st_fin == REQUEST_EMPTY && len != 0)
		abort();

	/* The prefix itself at EOF: a client that stopped there. */
	st_part = parse(buf, split, 1, &part, err, sizeof(err));
	if (st_part == REQUEST_MORE)
		abort();

	free(buf);
	return 0;
}
