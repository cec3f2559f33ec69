/*
 * test_request.c: unit tests for the shim's request grammar (request.c:
 * bare keys, attribute blocks, Postfix policy requests), plus log_quote(),
 * which makes a client's bytes safe for a log line (key escaping for
 * Redis key names is tested in test_keyspace.c).
 *
 * Every case spells out its input bytes and the exact result expected, so
 * a change to the grammar shows up here as a named failure rather than as
 * a surprise in Exim's log.  Prints one final line "N passed, N failed".
 */
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "request.h"
#include "shim.h"
#include "check.h"

/*
 * The Makefile links every shim object but main.o; session.c and
 * listener.c refer to the global that main.c defines, so it lives here.
 */
struct shim shim;


/* Compare a (pointer, length) field with expected bytes. */
static int
same(const char *p, size_t len, const char *want, size_t wantlen)
{
	return p != NULL && len == wantlen && memcmp(p, want, len) == 0;
}

#define SAME(p, len, lit)	same((p), (len), (lit), sizeof(lit) - 1)

/* Parse a string literal (its length taken from sizeof, so NULs count). */
#define PARSE(lit, eof, req, err) \
	request_parse((lit), sizeof(lit) - 1, (eof), (req), (err), sizeof(err))

static void
test_bare(void)
{
	struct request	 r;
	char		 err[160];

	/* The article's request: the sender address and a newline. */
	CHECK(PARSE("alice@example.org\n", 0, &r, err) == REQUEST_DONE);
	CHECK(SAME(r.key, r.key_len, "alice@example.org"));
	CHECK(SAME(r.rule, r.rule_len, "default"));
	CHECK(r.subject == NULL);
	CHECK(r.used == 18);

	/* Without the newline it is complete only once the client shut. */
	CHECK(PARSE("alice@example.org", 0, &r, err) == REQUEST_MORE);
	CHECK(PARSE("alice@example.org", 1, &r, err) == REQUEST_DONE);
	CHECK(SAME(r.key, r.key_len, "alice@example.org"));
	CHECK(r.used == 17);

	/* A CR before the newline is not part of the key. */
	CHECK(PARSE("bob@example.org\r\n", 0, &r, err) == REQUEST_DONE);
	CHECK(SAME(r.key, r.key_len, "bob@example.org"));
	CHECK(r.used == 17);
	CHECK(PARSE("bob@example.org\r", 1, &r, err) == REQUEST_DONE);
	CHECK(SAME(r.key, r.key_len, "bob@example.org"));

	/* A CR inside the key is kept: the escaping deals with it later. */
	CHECK(PARSE("a\rb\n", 0, &r, err) == REQUEST_DONE);
	CHECK(SAME(r.key, r.key_len, "a\rb"));

	/* Only the first line is the request; the rest is not consumed. */
	CHECK(PARSE("one@example.org\ntwo@example.org\n", 0, &r, err) ==
	    REQUEST_DONE);
	CHECK(SAME(r.key, r.key_len, "one@example.org"));
	CHECK(r.used == 16);
}

static void
test_empty(void)
{
	struct request	 r;
	char		 err[160];

	/* Bounces have the null sender: $sender_address is empty. */
	CHECK(PARSE("\n", 0, &r, err) == REQUEST_DONE);
	CHECK(SAME(r.key, r.key_len, "<>"));
	CHECK(r.used == 1);
	CHECK(PARSE("\r\n", 0, &r, err) == REQUEST_DONE);
	CHECK(SAME(r.key, r.key_len, "<>"));
	CHECK(r.used == 2);

	/* Connect and close without a byte: a health check, not a key. */
	CHECK(request_parse("", 0, 1, &r, err, sizeof(err)) == REQUEST_EMPTY);
	CHECK(request_parse("", 0, 0, &r, err, sizeof(err)) == REQUEST_MORE);
}

static void
test_srs_and_lookalikes(void)
{
	struct request	 r;
	char		 err[160];

	/* SRS addresses contain '=' but name no attribute: bare keys. */
	CHECK(PARSE("SRS0=HHH=TT=example.com=alice@example.net\n", 0, &r,
	    err) == REQUEST_DONE);
	CHECK(SAME(r.key, r.key_len,
	    "SRS0=HHH=TT=example.com=alice@example.net"));
	CHECK(SAME(r.rule, r.rule_len, "default"));
	CHECK(PARSE("SRS1=XXX=example.org==HHH=TT=example.com=a@example.net\n",
	    0, &r, err) == REQUEST_DONE);
	CHECK(SAME(r.key, r.key_len,
	    "SRS1=XXX=example.org==HHH=TT=example.com=a@example.net"));

	/* Starting like an attribute name is not enough: "=" must follow. */
	CHECK(PARSE("rulebreaker@example.org\n", 0, &r, err) == REQUEST_DONE);
	CHECK(SAME(r.key, r.key_len, "rulebreaker@example.org"));
	CHECK(PARSE("keymaster=x@example.org\n", 0, &r, err) == REQUEST_DONE);
	CHECK(SAME(r.key, r.key_len, "keymaster=x@example.org"));
	CHECK(PARSE("Key=x\n", 0, &r, err) == REQUEST_DONE);	/* case */
	CHECK(SAME(r.key, r.key_len, "Key=x"));
	/* An unknown name first: the whole line is a bare key. */
	CHECK(PARSE("foo=bar\n", 0, &r, err) == REQUEST_DONE);
	CHECK(SAME(r.key, r.key_len, "foo=bar"));
}

static void
test_block(void)
{
	struct request	 r;
	char		 err[160];

	/* Ended by an empty line. */
	CHECK(PARSE("rule=ip\nkey=192.0.2.7\nsubject=Hello there\n\n", 0, &r,
	    err) == REQUEST_DONE);
	CHECK(SAME(r.rule, r.rule_len, "ip"));
	CHECK(SAME(r.key, r.key_len, "192.0.2.7"));
	CHECK(SAME(r.subject, r.subject_len, "Hello there"));
	CHECK(r.used == 43);

	/* Attributes in any order; no rule= means the default rule. */
	CHECK(PARSE("subject=Hi\nkey=carol@example.org\n\n", 0, &r, err) ==
	    REQUEST_DONE);
	CHECK(SAME(r.rule, r.rule_len, "default"));
	CHECK(SAME(r.key, r.key_len, "carol@example.org"));
	CHECK(SAME(r.subject, r.subject_len, "Hi"));

	/* CRLF line ends. */
	CHECK(PARSE("rule=ip\r\nkey=198.51.100.1\r\n\r\n", 0, &r, err) ==
	    REQUEST_DONE);
	CHECK(SAME(r.rule, r.rule_len, "ip"));
	CHECK(SAME(r.key, r.key_len, "198.51.100.1"));
	CHECK(r.used == 29);

	/* Ended by EOF instead of an empty line, with or without \n. */
	CHECK(PARSE("rule=ip\nkey=192.0.2.8\n", 1, &r, err) == REQUEST_DONE);
	CHECK(SAME(r.key, r.key_len, "192.0.2.8"));
	CHECK(PARSE("rule=ip\nkey=192.0.2.9", 1, &r, err) == REQUEST_DONE);
	CHECK(SAME(r.key, r.key_len, "192.0.2.9"));
	CHECK(SAME(r.rule, r.rule_len, "ip"));

	/* What follows the empty line is left for later. */
	CHECK(PARSE("key=a\n\nkey=b\n\n", 0, &r, err) == REQUEST_DONE);
	CHECK(SAME(r.key, r.key_len, "a"));
	CHECK(r.used == 7);

	/* An empty key is the null sender, as for bare requests. */
	CHECK(PARSE("key=\n\n", 0, &r, err) == REQUEST_DONE);
	CHECK(SAME(r.key, r.key_len, "<>"));

	/* A value may contain '=' (only the first one splits). */
	CHECK(PARSE("key=SRS0=a=b@example.com\nsubject=x=y\n\n", 0, &r, err)
	    == REQUEST_DONE);
	CHECK(SAME(r.key, r.key_len, "SRS0=a=b@example.com"));
	CHECK(SAME(r.subject, r.subject_len, "x=y"));
}

static void
test_incomplete(void)
{
	struct request	 r;
	char		 err[160];

	CHECK(PARSE("alice@exa", 0, &r, err) == REQUEST_MORE);
	CHECK(PARSE("rule=ip\n", 0, &r, err) == REQUEST_MORE);
	CHECK(PARSE("rule=ip\nkey=192.0.2.1\n", 0, &r, err) == REQUEST_MORE);
	CHECK(PARSE("rule=ip\nkey=192.0.2.1", 0, &r, err) == REQUEST_MORE);
	CHECK(PARSE("rule=ip\nkey=192.0.2.1\r\n\r", 0, &r, err) ==
	    REQUEST_MORE);
	/* "rule=" alone decides "block" even before its line ends. */
	CHECK(PARSE("rule=", 0, &r, err) == REQUEST_MORE);
}

static void
test_errors(void)
{
	struct request	 r;
	char		 err[160];

	err[0] = '\0';
	CHECK(PARSE("rule=ip\nkey=x\nfoo=bar\n\n", 0, &r, err) ==
	    REQUEST_ERROR);
	CHECK(strcmp(err, "unknown attribute foo") == 0);

	/* An attribute without '=' at all is named whole. */
	CHECK(PARSE("key=x\nbogus\n\n", 0, &r, err) == REQUEST_ERROR);
	CHECK(strcmp(err, "unknown attribute bogus") == 0);

	/* The name is the client's: control bytes are quoted, not logged. */
	CHECK(PARSE("key=x\nfo\x1b[2Jo=1\n\n", 0, &r, err) == REQUEST_ERROR);
	CHECK(strcmp(err, "unknown attribute fo\\x1b[2Jo") == 0);

	CHECK(PARSE("key=a\nkey=b\n\n", 0, &r, err) == REQUEST_ERROR);
	CHECK(strcmp(err, "attribute key given twice") == 0);
	CHECK(PARSE("rule=ip\nkey=a\nrule=default\n\n", 0, &r, err) ==
	    REQUEST_ERROR);
	CHECK(strcmp(err, "attribute rule given twice") == 0);
	CHECK(PARSE("key=a\nsubject=1\nsubject=2\n\n", 0, &r, err) ==
	    REQUEST_ERROR);
	CHECK(strcmp(err, "attribute subject given twice") == 0);

	CHECK(PARSE("rule=ip\nsubject=x\n\n", 0, &r, err) == REQUEST_ERROR);
	CHECK(strcmp(err, "attribute block without key=") == 0);
	CHECK(PARSE("rule=ip\n", 1, &r, err) == REQUEST_ERROR);
	CHECK(strcmp(err, "attribute block without key=") == 0);

	CHECK(PARSE("rule=\nkey=a\n\n", 0, &r, err) == REQUEST_ERROR);
	CHECK(strcmp(err, "empty rule=") == 0);
}

static void
test_key_length(void)
{
	char		 buf[KEY_MAX + 64];
	struct request	 r;
	char		 err[160];
	size_t		 n;

	/* Exactly KEY_MAX bytes is allowed, with \n or \r\n. */
	memset(buf, 'k', KEY_MAX);
	buf[KEY_MAX] = '\n';
	CHECK(request_parse(buf, KEY_MAX + 1, 0, &r, err, sizeof(err)) ==
	    REQUEST_DONE);
	CHECK(r.key_len == KEY_MAX);
	buf[KEY_MAX] = '\r';
	buf[KEY_MAX + 1] = '\n';
	CHECK(request_parse(buf, KEY_MAX + 2, 0, &r, err, sizeof(err)) ==
	    REQUEST_DONE);
	CHECK(r.key_len == KEY_MAX);

	/* One more is an error, however the line ends. */
	memset(buf, 'k', KEY_MAX + 1);
	buf[KEY_MAX + 1] = '\n';
	err[0] = '\0';
	CHECK(request_parse(buf, KEY_MAX + 2, 0, &r, err, sizeof(err)) ==
	    REQUEST_ERROR);
	CHECK(strcmp(err, "key longer than 512 bytes") == 0);
	CHECK(request_parse(buf, KEY_MAX + 1, 1, &r, err, sizeof(err)) ==
	    REQUEST_ERROR);

	/*
	 * Without a newline yet, the parser gives up as soon as no ending
	 * could make the key short enough, rather than buffer max_request.
	 */
	CHECK(request_parse(buf, KEY_MAX + 1, 0, &r, err, sizeof(err)) ==
	    REQUEST_MORE);		/* a \r may still follow, then \n */
	memset(buf, 'k', KEY_MAX + 2);
	CHECK(request_parse(buf, KEY_MAX + 2, 0, &r, err, sizeof(err)) ==
	    REQUEST_ERROR);
	CHECK(strcmp(err, "key longer than 512 bytes") == 0);

	/* The same limit for key= in a block. */
	n = (size_t)snprintf(buf, sizeof(buf), "key=");
	memset(buf + n, 'k', KEY_MAX);
	memcpy(buf + n + KEY_MAX, "\n\n", 2);
	CHECK(request_parse(buf, n + KEY_MAX + 2, 0, &r, err, sizeof(err)) ==
	    REQUEST_DONE);
	CHECK(r.key_len == KEY_MAX);
	buf[n + KEY_MAX] = 'k';
	memcpy(buf + n + KEY_MAX + 1, "\n\n", 2);
	CHECK(request_parse(buf, n + KEY_MAX + 3, 0, &r, err, sizeof(err)) ==
	    REQUEST_ERROR);
	CHECK(strcmp(err, "key longer than 512 bytes") == 0);
}

static void
test_subject_length(void)
{
	char		 buf[2048];
	struct request	 r;
	char		 err[160];
	size_t		 n;

	/* Longer than a mail line can be: kept to the first 998 bytes. */
	n = (size_t)snprintf(buf, sizeof(buf), "key=a\nsubject=");
	memset(buf + n, 's', 1500);
	memcpy(buf + n + 1500, "\n\n", 2);
	CHECK(request_parse(buf, n + 1502, 0, &r, err, sizeof(err)) ==
	    REQUEST_DONE);
	CHECK(r.subject_len == 998);
	CHECK(r.subject == buf + n);
	CHECK(r.used == n + 1502);
}

static void
test_nul(void)
{
	struct request	 r;
	char		 err[160];

	/* NUL bytes are data: kept, and the length counts past them. */
	CHECK(PARSE("nul\0byte@example.org\n", 0, &r, err) == REQUEST_DONE);
	CHECK(SAME(r.key, r.key_len, "nul\0byte@example.org"));
	CHECK(PARSE("\0\n", 0, &r, err) == REQUEST_DONE);
	CHECK(SAME(r.key, r.key_len, "\0"));
	CHECK(PARSE("key=a\0b\n\n", 0, &r, err) == REQUEST_DONE);
	CHECK(SAME(r.key, r.key_len, "a\0b"));
	/* Binary junk is a key like any other, counted and escaped. */
	CHECK(PARSE("\xff\xfe\x01\n", 0, &r, err) == REQUEST_DONE);
	CHECK(SAME(r.key, r.key_len, "\xff\xfe\x01"));
}

static void
test_cost_and_mode(void)
{
	struct request	 r;
	char		 err[160];

	/* One message unless the client says how many units it costs. */
	CHECK(PARSE("a@example.org\n", 0, &r, err) == REQUEST_DONE);
	CHECK(r.cost == 1 && r.peek == 0);
	CHECK(PARSE("key=a@example.org\n\n", 0, &r, err) == REQUEST_DONE);
	CHECK(r.cost == 1 && r.peek == 0);
	CHECK(PARSE("key=a@example.org\ncost=25\n\n", 0, &r, err) ==
	    REQUEST_DONE);
	CHECK(r.cost == 25);
	CHECK(PARSE("cost=0\nkey=a\n\n", 0, &r, err) == REQUEST_DONE);
	CHECK(r.cost == 0);
	CHECK(PARSE("key=a\ncost=1000000\n\n", 0, &r, err) == REQUEST_DONE);
	CHECK(r.cost == REQUEST_COST_MAX);

	err[0] = '\0';
	CHECK(PARSE("key=a\ncost=1000001\n\n", 0, &r, err) == REQUEST_ERROR);
	CHECK(strcmp(err, "cost must be a whole number from 0 to 1000000")
	    == 0);
	CHECK(PARSE("key=a\ncost=-1\n\n", 0, &r, err) == REQUEST_ERROR);
	CHECK(PARSE("key=a\ncost=\n\n", 0, &r, err) == REQUEST_ERROR);
	CHECK(PARSE("key=a\ncost=1.5\n\n", 0, &r, err) == REQUEST_ERROR);
	CHECK(PARSE("key=a\ncost= 1\n\n", 0, &r, err) == REQUEST_ERROR);
	CHECK(PARSE("key=a\ncost=00000001\n\n", 0, &r, err) ==
	    REQUEST_ERROR);		/* more digits than any valid cost */
	CHECK(PARSE("key=a\ncost=1\ncost=2\n\n", 0, &r, err) ==
	    REQUEST_ERROR);
	CHECK(strcmp(err, "attribute cost given twice") == 0);

	CHECK(PARSE("key=a\nmode=peek\n\n", 0, &r, err) == REQUEST_DONE);
	CHECK(r.peek == 1);
	CHECK(PARSE("key=a\nmode=count\n\n", 0, &r, err) == REQUEST_DONE);
	CHECK(r.peek == 0);
	CHECK(PARSE("key=a\nmode=PEEK\n\n", 0, &r, err) == REQUEST_ERROR);
	CHECK(strcmp(err, "mode must be count or peek") == 0);
	CHECK(PARSE("key=a\nmode=\n\n", 0, &r, err) == REQUEST_ERROR);

	/* A policy request is recognised by its first line only. */
	CHECK(PARSE("key=a\nrequest=smtpd_access_policy\n\n", 0, &r, err) ==
	    REQUEST_ERROR);
	CHECK(strcmp(err, "request= must come first") == 0);
}

static void
test_policy(void)
{
	static const char two[] =
	    "request=smtpd_access_policy\r\n"
	    "protocol_state=RCPT\r\n"
	    "sender=a@example.org\r\n"
	    "client_address=192.0.2.1\r\n"
	    "ccert_subject=\r\n"
	    "x-future=a=b\r\n"
	    "\r\n"
	    "request=smtpd_access_policy\n";
	const struct request_attr *a;
	struct request	 r;
	char		 err[160], big[4096];
	size_t		 n;
	int		 i;

	CHECK(request_parse(two, sizeof(two) - 1, 0, &r, err, sizeof(err)) ==
	    REQUEST_DONE);
	CHECK(r.policy == 1);
	/* Only the first request; the pipelined one waits its turn. */
	CHECK(r.used == sizeof(two) - 1 - 28);
	CHECK(r.nattrs == 6);
	CHECK((a = request_attr(&r, "sender")) != NULL &&
	    SAME(a->value, a->value_len, "a@example.org"));
	CHECK((a = request_attr(&r, "client_address")) != NULL &&
	    SAME(a->value, a->value_len, "192.0.2.1"));
	/* Empty values and unknown attributes are Postfix's business. */
	CHECK((a = request_attr(&r, "ccert_subject")) != NULL &&
	    a->value_len == 0);
	CHECK((a = request_attr(&r, "x-future")) != NULL &&
	    SAME(a->value, a->value_len, "a=b"));
	CHECK(request_attr(&r, "recipient") == NULL);
	CHECK(request_attr(&r, "sende") == NULL);

	/* Postfix always ends with an empty line: EOF before it is broken. */
	CHECK(PARSE("request=smtpd_access_policy\nsender=a\n", 0, &r, err) ==
	    REQUEST_MORE);
	CHECK(PARSE("request=smtpd_access_policy\nsender=a\n", 1, &r, err) ==
	    REQUEST_ERROR);
	CHECK(strcmp(err, "policy request without its closing empty line") ==
	    0);
	CHECK(PARSE("request=smtpd_access_policy\nsender\n\n", 0, &r, err) ==
	    REQUEST_ERROR);
	CHECK(strcmp(err, "policy attribute without =") == 0);
	CHECK(PARSE("request=junk\nsender=a\n\n", 0, &r, err) ==
	    REQUEST_ERROR);
	CHECK(strcmp(err, "unsupported policy request type") == 0);

	/* More attributes than kept: the rest is skipped, not an overflow. */
	n = (size_t)snprintf(big, sizeof(big), "request=smtpd_access_policy\n");
	for (i = 0; i < REQUEST_ATTRS_MAX + 10; i++)
		n += (size_t)snprintf(big + n, sizeof(big) - n, "a%d=%d\n", i,
		    i);
	n += (size_t)snprintf(big + n, sizeof(big) - n, "\n");
	CHECK(n < sizeof(big) - 1);
	CHECK(request_parse(big, n, 0, &r, err, sizeof(err)) == REQUEST_DONE);
	CHECK(r.nattrs == REQUEST_ATTRS_MAX);
	CHECK(r.used == n);
}

static void
test_log_quote(void)
{
	char	 out[64];

	log_quote(out, sizeof(out), "plain@example.org", 17);
	CHECK(strcmp(out, "plain@example.org") == 0);
	/* A newline must not start a forged log line; quotes stay paired. */
	log_quote(out, sizeof(out), "x\nlevel=info \"y\\", 16);
	CHECK(strcmp(out, "x\\x0alevel=info \\x22y\\x5c") == 0);
	log_quote(out, sizeof(out), "a\0b", 3);
	CHECK(strcmp(out, "a\\x00b") == 0);
	/* Truncation never splits an escape. */
	log_quote(out, 6, "ab\x01", 3);
	CHECK(strcmp(out, "ab") == 0);
}

int
main(void)
{
	test_bare();
	test_empty();
	test_srs_and_lookalikes();
	test_block();
	test_incomplete();
	test_errors();
	test_key_length();
	test_subject_length();
	test_nul();
	test_cost_and_mode();
	test_policy();
	test_log_quote();
	return check_done();
}
