/*
 * test_mail.c: unit tests for alert mail composition (alerter/mail.c):
 * durations and dates, the display of hostile keys and subjects, RFC 2047
 * headers, quoted-printable, addresses, the Message-ID, and whole messages
 * checked line by line against RFC 5322 (CRLF only, no line over 998
 * octets, ASCII headers, each header once, no injected header).
 *
 * Encoded output is decoded again here (base64, quoted-printable) so the
 * checks are on what a mail reader would show.  Prints one final line
 * "N passed, N failed".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "conf.h"
#include "mail.h"
#include "check.h"


static int
contains(const struct buf *b, const char *s)
{
	return b->data != NULL && strstr(b->data, s) != NULL;
}

/* ---- decoders, to read back what was encoded ---- */

static int
b64val(char c)
{
	const char	*tab = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
			    "0123456789+/";
	const char	*p = strchr(tab, c);

	return c != '\0' && p != NULL ? (int)(p - tab) : -1;
}

static void
b64decode(struct buf *out, const char *s, size_t len)
{
	unsigned	 acc = 0;
	int		 bits = 0, v;
	size_t		 i;

	for (i = 0; i < len && s[i] != '='; i++) {
		if ((v = b64val(s[i])) < 0)
			continue;
		acc = acc << 6 | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			buf_addc(out, (char)((acc >> bits) & 0xff));
		}
	}
}

/* An unstructured header's value as a reader sees it (RFC 2047 B only). */
static void
header_decode(struct buf *out, const char *v)
{
	const char	*p = v, *q, *end;
	int		 last_word = 0;

	while (*p != '\0') {
		if (strncmp(p, "=?UTF-8?B?", 10) == 0 &&
		    (end = strstr(p + 10, "?=")) != NULL) {
			b64decode(out, p + 10, (size_t)(end - p - 10));
			p = end + 2;
			last_word = 1;
			continue;
		}
		if (*p == '\r' || *p == '\n' || *p == ' ' || *p == '\t') {
			/* Folding white space between encoded words vanishes. */
			for (q = p; *q == '\r' || *q == '\n' || *q == ' ' ||
			    *q == '\t'; q++)
				;
			if (!(last_word && strncmp(q, "=?UTF-8?B?", 10) == 0)) {
				if (*p == ' ' || *p == '\t')
					buf_addc(out, ' ');
			}
			p = q;
			continue;
		}
		buf_addc(out, *p++);
		last_word = 0;
	}
}

static int
hexv(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static void
qp_decode(struct buf *out, const char *s, size_t len)
{
	size_t	 i;

	for (i = 0; i < len; i++) {
		if (s[i] == '=' && i + 2 < len && s[i + 1] == '\r' &&
		    s[i + 2] == '\n') {
			i += 2;		/* soft line break */
		} else if (s[i] == '=' && i + 2 < len && hexv(s[i + 1]) >= 0 &&
		    hexv(s[i + 2]) >= 0) {
			buf_addc(out, (char)(hexv(s[i + 1]) << 4 |
			    hexv(s[i + 2])));
			i += 2;
		} else if (s[i] == '\r' && i + 1 < len && s[i + 1] == '\n') {
			buf_addc(out, '\n');
			i++;
		} else
			buf_addc(out, s[i]);
	}
}

/* ---- a parsed message ---- */

struct msg {
	struct buf	 headers;	/* unfolded, one per line, LF */
	const char	*body;		/* into the composed buffer */
	size_t		 body_len;
	int		 ok;		/* CRLF only, lines <= 998, ASCII head */
	int		 longest;
};

static void
parse(struct msg *m, const struct buf *b, int crlf)
{
	const char	*p = b->data, *end = b->data + b->len, *nl;
	size_t		 len;
	int		 in_head = 1;

	memset(m, 0, sizeof(*m));
	buf_init(&m->headers);
	m->ok = 1;
	while (p < end) {
		if ((nl = memchr(p, '\n', (size_t)(end - p))) == NULL) {
			m->ok = 0;	/* no line end at the end */
			break;
		}
		len = (size_t)(nl - p);
		if (crlf) {
			if (len == 0 || p[len - 1] != '\r')
				m->ok = 0;	/* bare LF */
			else
				len--;
		}
		if (memchr(p, '\r', len) != NULL)
			m->ok = 0;		/* bare CR */
		if ((int)len > m->longest)
			m->longest = (int)len;
		if (len > 998)
			m->ok = 0;
		if (in_head) {
			size_t i;

			for (i = 0; i < len; i++)
				if ((unsigned char)p[i] >= 0x80)
					m->ok = 0;
			if (len == 0) {
				in_head = 0;
				m->body = nl + 1;
				m->body_len = (size_t)(end - m->body);
			} else if (p[0] == ' ' || p[0] == '\t') {
				/* Unfolding: the CRLF goes, the blank stays. */
				if (m->headers.len > 0)
					m->headers.len--;
				buf_add(&m->headers, p, len);
				buf_addc(&m->headers, '\n');
			} else {
				buf_add(&m->headers, p, len);
				buf_addc(&m->headers, '\n');
			}
		}
		p = nl + 1;
	}
	if (in_head)
		m->ok = 0;
}

/* How many headers are named name (at a line start). */
static int
header_count(const struct msg *m, const char *name)
{
	const char	*p = m->headers.data;
	size_t		 n = strlen(name);
	int		 count = 0;

	while (p != NULL && *p != '\0') {
		if (strncasecmp(p, name, n) == 0 && p[n] == ':')
			count++;
		if ((p = strchr(p, '\n')) != NULL)
			p++;
	}
	return count;
}

/* The decoded value of header name into out; 0 when absent. */
static int
header_value(const struct msg *m, const char *name, struct buf *out)
{
	const char	*p = m->headers.data, *nl;
	size_t		 n = strlen(name);
	struct buf	 raw;

	while (p != NULL && *p != '\0') {
		nl = strchr(p, '\n');
		if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
			buf_init(&raw);
			buf_add(&raw, p + n + 2, (size_t)(nl - p) - n - 2);
			header_decode(out, raw.data);
			buf_free(&raw);
			return 1;
		}
		p = nl != NULL ? nl + 1 : NULL;
	}
	return 0;
}

/* A line of the body that starts with s (after CRLF), raw. */
static int
body_has_line_start(const struct msg *m, const char *s)
{
	const char	*p = m->body, *end = m->body + m->body_len;
	size_t		 n = strlen(s);

	while (p < end) {
		if ((size_t)(end - p) >= n && strncasecmp(p, s, n) == 0)
			return 1;
		if ((p = memchr(p, '\n', (size_t)(end - p))) == NULL)
			break;
		p++;
	}
	return 0;
}

/* ---- fixtures ---- */

static char *to_list[] = { "director@example.com",
    "\"Doe, Jane\" <jane@example.com>", NULL };
static char *cc_list[] = { "Lackey Ünicode <lackey@example.com>", NULL };

static void
conf_init(struct conf *c)
{
	memset(c, 0, sizeof(*c));
	c->path = "config.yaml";
	c->hostname = "alerter1.example.com";
	c->events_stream = "senderwatch:stream";
	c->alerts_from = "Senderwatch <sysadmin@example.com>";
	c->alerts_to = to_list;
	c->alerts_nto = 2;
	c->alerts_cc = cc_list;
	c->alerts_ncc = 1;
	c->alerts_subject = "Mail Abuse Alert";
	c->alerts_top_subjects = 10;
}

/* struct event's strings are char *: writable copies, not literals. */
static char s_buy[] = "Buy now", s_hello[] = "Hello";
static struct mail_subject subjects[] = {
	{ s_buy, 7, 12 },
	{ s_hello, 5, 9 },
};
static char rule_default[] = "default", rule_ip[] = "ip";
static char key_alice[] = "alice@example.org", key_bob[] = "bob@example.org",
	    key_ip[] = "192.0.2.1";
static char host_mta1[] = "mta1.example.com";
static char alg_sliding[] = "sliding";

static void
event_init(struct event *e)
{
	memset(e, 0, sizeof(*e));
	snprintf(e->id, sizeof(e->id), "%s", "1700000000123-0");
	e->rule = rule_default;
	e->key = key_alice;
	e->key_len = strlen(e->key);
	e->host = host_mta1;
	e->count = 21;
	e->limit = 20;
	e->window_ms = 300000;
	e->time = 1700000000;
	e->count_now = 34;
	e->ttl_ms = 252300;
	e->subjects = subjects;
	e->nsubjects = 2;
}

/* ---- tests ---- */

static void
test_duration_dates(void)
{
	char	 s[64];

	mail_duration(s, sizeof(s), 300000);
	CHECK(strcmp(s, "5m") == 0);
	mail_duration(s, sizeof(s), 60000);
	CHECK(strcmp(s, "1m") == 0);
	mail_duration(s, sizeof(s), 90000);
	CHECK(strcmp(s, "1m30s") == 0);
	mail_duration(s, sizeof(s), 3600000);
	CHECK(strcmp(s, "1h") == 0);
	mail_duration(s, sizeof(s), 86400000 + 1500);
	CHECK(strcmp(s, "1d1s500ms") == 0);
	mail_duration(s, sizeof(s), 250);
	CHECK(strcmp(s, "250ms") == 0);
	mail_duration(s, sizeof(s), 0);
	CHECK(strcmp(s, "0s") == 0);
	mail_duration(s, sizeof(s), -1);
	CHECK(strcmp(s, "?") == 0);

	mail_rfc3339(s, sizeof(s), 0);
	CHECK(strcmp(s, "1970-01-01T00:00:00Z") == 0);
	mail_rfc3339(s, sizeof(s), 1700000000);
	CHECK(strcmp(s, "2023-11-14T22:13:20Z") == 0);
	mail_rfc3339(s, sizeof(s), -1);
	CHECK(strcmp(s, "?") == 0);

	mail_date(s, sizeof(s), 1700000000);
	CHECK(strcmp(s, "Tue, 14 Nov 2023 22:13:20 +0000") == 0);
	mail_date(s, sizeof(s), 0);
	CHECK(strcmp(s, "Thu, 1 Jan 1970 00:00:00 +0000") == 0);
}

static void
test_text(void)
{
	CHECK(mail_text_ok("alice@example.org", 17));
	CHECK(mail_text_ok("", 0));
	CHECK(mail_text_ok("Gr\xc3\xbc\xc3\x9f" "e \xe2\x82\xac \xf0\x9f\x98\x80",
	    16));
	CHECK(!mail_text_ok("\xff", 1));		/* not UTF-8 */
	CHECK(!mail_text_ok("a\rb", 3));		/* control */
	CHECK(!mail_text_ok("a\tb", 3));
	CHECK(!mail_text_ok("a\0b", 3));
	CHECK(!mail_text_ok("\x7f", 1));		/* DEL */
	CHECK(!mail_text_ok("\xc2\x85", 2));		/* NEL, C1 */
	CHECK(!mail_text_ok("\xc0\xaf", 2));		/* overlong / */
	CHECK(!mail_text_ok("\xed\xa0\x80", 3));	/* surrogate */
	CHECK(!mail_text_ok("\xf4\x90\x80\x80", 4));	/* > U+10FFFF */
	CHECK(!mail_text_ok("abc\xe2\x80\xae" "gro.evil", 14)); /* RLO */
	CHECK(!mail_text_ok("\xe2\x80\xa8", 3));	/* line separator */
	CHECK(!mail_text_ok("\xc3", 1));		/* cut short */
}

static void
test_display(void)
{
	struct buf	 b;

	buf_init(&b);
	/* Escaped keys: clean text decodes, anything else stays %XX. */
	CHECK(mail_display(&b, "J%C3%BCrgen@example.org", 23, 1) == 0);
	CHECK(strcmp(b.data, "J\xc3\xbcrgen@example.org") == 0);
	buf_reset(&b);
	CHECK(mail_display(&b, "evil%0D%0ABcc:%20x@y", 20, 1) == 1);
	CHECK(strcmp(b.data, "evil%0D%0ABcc:%20x@y") == 0);
	buf_reset(&b);
	CHECK(mail_display(&b, "%FF%FE", 6, 1) == 1);
	CHECK(strcmp(b.data, "%FF%FE") == 0);
	buf_reset(&b);
	/* A hand-made entry with raw bytes in the key: escaped again. */
	CHECK(mail_display(&b, "a\r\nb", 4, 1) == 1);
	CHECK(strcmp(b.data, "a%0D%0Ab") == 0);
	buf_reset(&b);
	/* Raw subjects. */
	CHECK(mail_display(&b, "Caf\xc3\xa9 100%", 10, 0) == 0);
	CHECK(strcmp(b.data, "Caf\xc3\xa9 100%") == 0);
	buf_reset(&b);
	CHECK(mail_display(&b, "Hi\r\nBcc: x@y 5%", 15, 0) == 1);
	CHECK(strcmp(b.data, "Hi%0D%0ABcc: x@y 5%25") == 0);
	buf_reset(&b);
	CHECK(mail_display(&b, "\xff", 1, 0) == 1);
	CHECK(strcmp(b.data, "%FF") == 0);
	buf_reset(&b);

	/* Report output: controls but \n and \t become ?, CRLF becomes LF. */
	mail_sanitize(&b, "ok\r\nred\x1b[31m\xff\tend\rx\n",
	    sizeof("ok\r\nred\x1b[31m\xff\tend\rx\n") - 1);
	CHECK(strcmp(b.data, "ok\nred?[31m?\tend?x\n") == 0);
	buf_free(&b);
}

static void
test_headers(void)
{
	static const char utf8[] = "Alert: J\xc3\xbcrgen \xe2\x82\xac\xe2\x82\xac"
	    "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac \xf0\x9f\x98\x80"
	    "\xf0\x9f\x98\x80\xf0\x9f\x98\x80 and some more text to make it "
	    "fold, and then some more";
	struct buf	 b, d;
	const char	*p, *nl;
	char		 big[400];
	int		 okw = 1;

	buf_init(&b);
	buf_init(&d);
	mail_header_text(&b, "Subject", "Hello world", 11, "\r\n");
	CHECK(strcmp(b.data, "Subject: Hello world\r\n") == 0);
	buf_reset(&b);

	/* Non-ASCII: encoded words, each <= 75, lines <= 78, decodes back. */
	mail_header_text(&b, "Subject", utf8, sizeof(utf8) - 1, "\r\n");
	CHECK(strncmp(b.data, "Subject: =?UTF-8?B?", 19) == 0);
	for (p = b.data; (nl = strstr(p, "\r\n")) != NULL; p = nl + 2)
		if (nl - p > 78)
			okw = 0;
	CHECK(okw);
	CHECK(strstr(b.data, "\r\n =?UTF-8?B?") != NULL);	/* folded */
	header_decode(&d, b.data + 9);
	CHECK(d.data != NULL && strcmp(d.data, utf8) == 0);
	buf_reset(&b);
	buf_reset(&d);

	/* Long ASCII folds at spaces. */
	memset(big, 'w', sizeof(big));
	for (int i = 9; i < 300; i += 10)
		big[i] = ' ';
	mail_header_text(&b, "Subject", big, 300, "\r\n");
	okw = 1;
	for (p = b.data; (nl = strstr(p, "\r\n")) != NULL; p = nl + 2)
		if (nl - p > 78)
			okw = 0;
	CHECK(okw);
	CHECK(strstr(b.data, "=?") == NULL);
	buf_reset(&b);

	/* A 300-character word cannot fold at a space: encoded words. */
	memset(big, 'x', 300);
	mail_header_text(&b, "Subject", big, 300, "\r\n");
	CHECK(strstr(b.data, "=?UTF-8?B?") != NULL);
	header_decode(&d, b.data + 9);
	CHECK(d.len == 300 && memcmp(d.data, big, 300) == 0);
	buf_reset(&b);
	buf_reset(&d);

	/* Text that would itself read as an encoded word is encoded. */
	mail_header_text(&b, "Subject", "=?UTF-8?B?QmNjOg==?=", 20, "\r\n");
	header_decode(&d, b.data + 9);
	CHECK(strcmp(d.data, "=?UTF-8?B?QmNjOg==?=") == 0);
	buf_reset(&b);
	buf_reset(&d);

	/* LF mode writes no CR at all. */
	mail_header_text(&b, "Subject", big, 300, "\n");
	CHECK(strchr(b.data, '\r') == NULL);
	buf_free(&b);
	buf_free(&d);
}

static void
test_qp(void)
{
	struct buf	 b, d;
	const char	*p, *nl;
	char		 line[301];
	int		 okw = 1;

	buf_init(&b);
	buf_init(&d);
	mail_qp(&b, "a=b\n", 4, "\r\n");
	CHECK(strcmp(b.data, "a=3Db\r\n") == 0);
	buf_reset(&b);
	mail_qp(&b, "x \ny\t\n", 6, "\r\n");
	CHECK(strcmp(b.data, "x=20\r\ny=09\r\n") == 0);
	buf_reset(&b);
	mail_qp(&b, "caf\xc3\xa9\n", 6, "\r\n");
	CHECK(strcmp(b.data, "caf=C3=A9\r\n") == 0);
	buf_reset(&b);
	mail_qp(&b, ".\n.x\n", 5, "\r\n");
	CHECK(strcmp(b.data, "=2E\r\n=2Ex\r\n") == 0);
	buf_reset(&b);

	/* Long lines get soft breaks; no output line over 76. */
	memset(line, 'a', 300);
	for (int i = 0; i < 300; i += 7)
		line[i] = (char)(i % 2 ? '.' : '=');
	line[300] = '\n';
	mail_qp(&b, line, 301, "\r\n");
	for (p = b.data; (nl = strstr(p, "\r\n")) != NULL; p = nl + 2) {
		if (nl - p > 76)
			okw = 0;
		if (*p == '.')
			okw = 0;
	}
	CHECK(okw);
	qp_decode(&d, b.data, b.len);
	CHECK(d.len == 301 && memcmp(d.data, line, 301) == 0);
	buf_free(&b);
	buf_free(&d);
}

/* ---- the alerts section, through the loader ---- */

#define RULES	"rules:\n  default: { limit: 20, window: 300s }\n"

/*
 * Load text as t.yaml with check (mail_check_conf, or one of the wrappers
 * below); err is "" when it loads.
 */
static int
load(const char *text, conf_check_fn *check, char *err, size_t errlen)
{
	struct conf	*c;

	err[0] = '\0';
	if ((c = conf_parse(text, strlen(text), "t.yaml", check, err,
	    errlen)) == NULL)
		return -1;
	conf_free(c);
	return 0;
}

/*
 * The loader refuses line breaks in any value before mail_check_conf runs;
 * these put one in (in place of the first space) to reach its own check,
 * which also guards a conf that was not loaded from a file.
 */
static int
break_to(struct conf_ctx *cx, const struct conf *c)
{
	char	*p;

	if (c->alerts_nto > 1 && (p = strchr(c->alerts_to[1], ' ')) != NULL)
		*p = '\n';
	return mail_check_conf(cx, c);
}

static int
break_from(struct conf_ctx *cx, const struct conf *c)
{
	char	*p;

	if (c->alerts_from != NULL && (p = strchr(c->alerts_from, ' ')) != NULL)
		*p = '\r';
	return mail_check_conf(cx, c);
}

static void
test_addresses(void)
{
	char		 a[MAIL_ADDR_MAX + 1], err[CONF_ERRLEN];

	CHECK(mail_addr_spec("Name <a@b.example>", a, sizeof(a)) == 0 &&
	    strcmp(a, "a@b.example") == 0);
	CHECK(mail_addr_spec(" a@b.example ", a, sizeof(a)) == 0 &&
	    strcmp(a, "a@b.example") == 0);
	CHECK(mail_addr_spec("<a@b.example>", a, sizeof(a)) == 0 &&
	    strcmp(a, "a@b.example") == 0);
	CHECK(mail_addr_spec("\"Doe, J\" <j@x.example>", a, sizeof(a)) == 0 &&
	    strcmp(a, "j@x.example") == 0);
	CHECK(mail_addr_spec("bad", a, sizeof(a)) == -1);
	CHECK(mail_addr_spec("a b@c", a, sizeof(a)) == -1);
	CHECK(mail_addr_spec("x <a@b", a, sizeof(a)) == -1);
	CHECK(mail_addr_spec("a@b@c", a, sizeof(a)) == -1);
	CHECK(mail_addr_spec("@b", a, sizeof(a)) == -1);
	CHECK(mail_addr_spec("a@", a, sizeof(a)) == -1);
	CHECK(mail_addr_spec("<a@b>, <c@d>", a, sizeof(a)) == -1);

	/* What conf_init() builds by hand, as a file. */
	CHECK(load(RULES "alerts:\n"
	    "  from: Senderwatch <sysadmin@example.com>\n"
	    "  to: [ director@example.com, "
	    "\"\\\"Doe, Jane\\\" <jane@example.com>\" ]\n"
	    "  cc: Lackey \xc3\x9cnicode <lackey@example.com>\n"
	    "  subject: Mail Abuse Alert\n",
	    mail_check_conf, err, sizeof(err)) == 0 && err[0] == '\0');

	/* Not set: the line of the alerts section, or of the file. */
	CHECK(load(RULES "alerts:\n  from: a@example.com\n", mail_check_conf,
	    err, sizeof(err)) == -1 &&
	    strcmp(err, "t.yaml:3: alerts.to: is required") == 0);
	CHECK(load(RULES "alerts:\n  to: a@example.com\n", mail_check_conf,
	    err, sizeof(err)) == -1 &&
	    strcmp(err, "t.yaml:3: alerts.from: is required") == 0);
	CHECK(load(RULES, mail_check_conf, err, sizeof(err)) == -1 &&
	    strcmp(err, "t.yaml:1: alerts.from: is required") == 0);

	/* Line breaks: the loader's check, then mail_check_conf's own. */
	CHECK(load(RULES "alerts:\n  from: a@example.com\n"
	    "  to: [ ok@example.com, \"x@example.com\\nBcc: y@z\" ]\n",
	    mail_check_conf, err, sizeof(err)) == -1 &&
	    strcmp(err, "t.yaml:5: alerts.to: must not contain a line break")
	    == 0);
	CHECK(load(RULES "alerts:\n  from: a@example.com\n"
	    "  to: [ ok@example.com, \"x@example.com Bcc: y@z\" ]\n",
	    break_to, err, sizeof(err)) == -1 &&
	    strcmp(err, "t.yaml:5: alerts.to: must not contain a line break")
	    == 0);
	CHECK(load(RULES "alerts:\n  from: Senderwatch <a@example.com>\n"
	    "  to: b@example.com\n", break_from, err, sizeof(err)) == -1 &&
	    strcmp(err, "t.yaml:4: alerts.from: must not contain a line "
	    "break") == 0);

	/* Controls, which YAML's escapes let through. */
	CHECK(load(RULES "alerts:\n  from: a@example.com\n"
	    "  to: \"a\\tb@example.com\"\n", mail_check_conf, err,
	    sizeof(err)) == -1 &&
	    strcmp(err, "t.yaml:5: alerts.to: control characters or invalid "
	    "UTF-8 in \"a\tb@example.com\"") == 0);

	/* Not addresses. */
	CHECK(load(RULES "alerts:\n  from: a@example.com\n"
	    "  to: b@example.com\n  cc: not an address\n", mail_check_conf,
	    err, sizeof(err)) == -1 &&
	    strcmp(err, "t.yaml:6: alerts.cc: \"not an address\" is not an "
	    "address (user@domain or Name <user@domain>)") == 0);
	CHECK(load(RULES "alerts:\n  from: sysadmin\n  to: b@example.com\n",
	    mail_check_conf, err, sizeof(err)) == -1 &&
	    strcmp(err, "t.yaml:4: alerts.from: \"sysadmin\" is not an "
	    "address (user@domain or Name <user@domain>)") == 0);

	/* The subject: one line of text. */
	CHECK(load(RULES "alerts:\n  from: a@example.com\n"
	    "  to: b@example.com\n  subject: \"Alert\\e[2J\"\n",
	    mail_check_conf, err, sizeof(err)) == -1 &&
	    strcmp(err, "t.yaml:6: alerts.subject: must be one line of text "
	    "without control characters") == 0);
}

static void
test_message_id(void)
{
	struct conf		 c;
	struct event		 e[2];
	struct event		*evs[2] = { &e[0], &e[1] };
	struct buf		 a, b;

	conf_init(&c);
	event_init(&e[0]);
	event_init(&e[1]);
	snprintf(e[1].id, sizeof(e[1].id), "%s", "1700000000124-0");
	buf_init(&a);
	buf_init(&b);
	mail_message_id(&a, &c, evs, 1);
	mail_message_id(&b, &c, evs, 1);
	CHECK(strcmp(a.data, b.data) == 0);		/* stable */
	CHECK(strncmp(a.data, "<senderwatch.1700000000123-0.", 29) == 0);
	CHECK(strcmp(a.data + a.len - 13, "@example.com>") == 0);
	buf_reset(&b);
	mail_message_id(&b, &c, evs + 1, 1);
	CHECK(strcmp(a.data, b.data) != 0);
	buf_reset(&b);
	mail_message_id(&b, &c, evs, 2);
	CHECK(strstr(b.data, ".n2.") != NULL && strcmp(a.data, b.data) != 0);
	buf_reset(&a);
	/* A hostile id or From domain cannot break the header. */
	snprintf(e[0].id, sizeof(e[0].id), "%s", "1-0>\r\nBcc: x");
	c.alerts_from = "x@exa\"mple..com.";
	mail_message_id(&a, &c, evs, 1);
	CHECK(strpbrk(a.data, "\r\n\" ") == NULL);
	CHECK(strcmp(a.data + a.len - 13, "@example..com>") != 0);
	buf_free(&a);
	buf_free(&b);
}

static void
test_single(void)
{
	struct conf		 c;
	struct event		 e;
	struct event		*evs[1] = { &e };
	struct buf		 b, v;
	struct msg		 m;
	char			 err[256];

	conf_init(&c);
	event_init(&e);
	buf_init(&b);
	buf_init(&v);
	CHECK(mail_compose(&b, &c, evs, 1, 1700000100, 1, err,
	    sizeof(err)) == 0);
	parse(&m, &b, 1);
	CHECK(m.ok);
	CHECK(header_count(&m, "Date") == 1);
	CHECK(header_count(&m, "From") == 1);
	CHECK(header_count(&m, "To") == 1);
	CHECK(header_count(&m, "Cc") == 1);
	CHECK(header_count(&m, "Subject") == 1);
	CHECK(header_count(&m, "Message-ID") == 1);
	CHECK(header_count(&m, "MIME-Version") == 1);
	CHECK(header_count(&m, "Content-Type") == 1);
	CHECK(header_count(&m, "Content-Transfer-Encoding") == 1);
	CHECK(header_count(&m, "Auto-Submitted") == 1);
	CHECK(contains(&m.headers, "Date: Tue, 14 Nov 2023 22:15:00 +0000\n"));
	CHECK(contains(&m.headers,
	    "From: Senderwatch <sysadmin@example.com>\n"));
	CHECK(contains(&m.headers, "To: director@example.com, "
	    "\"Doe, Jane\" <jane@example.com>\n"));
	CHECK(contains(&m.headers,
	    "Content-Type: text/plain; charset=utf-8\n"));
	CHECK(contains(&m.headers, "Content-Transfer-Encoding: 7bit\n"));
	header_value(&m, "Cc", &v);
	CHECK(v.data != NULL && strcmp(v.data,
	    "Lackey \xc3\x9cnicode <lackey@example.com>") == 0);
	buf_reset(&v);
	header_value(&m, "Subject", &v);
	CHECK(v.data != NULL && strcmp(v.data,
	    "Mail Abuse Alert: alice@example.org (default)") == 0);
	buf_reset(&v);

	CHECK(contains(&b, "A sender went over its limit.\r\n"));
	CHECK(contains(&b, "  Key:          alice@example.org\r\n"));
	CHECK(contains(&b, "  Rule:         default, limit 20 in 5m\r\n"));
	CHECK(contains(&b, "  Count:        21 when it crossed, 34 now\r\n"));
	CHECK(contains(&b, "  Window:       ends in 4m12s\r\n"));
	CHECK(contains(&b, "  Crossed at:   2023-11-14T22:13:20Z\r\n"));
	CHECK(contains(&b, "  Reported by:  mta1.example.com\r\n"));
	CHECK(contains(&b, "  Event:        1700000000123-0\r\n"));
	CHECK(contains(&b, "        12  Buy now\r\n        9  Hello\r\n") ||
	    contains(&b, "        12  Buy now\r\n         9  Hello\r\n"));
	CHECK(!contains(&b, "Report from"));
	buf_free(&m.headers);
	buf_reset(&b);

	/* Expired counter, sliding window, shadow rule, no subjects. */
	e.count_now = -1;
	e.ttl_ms = -2;
	e.nsubjects = 0;
	CHECK(mail_compose(&b, &c, evs, 1, 1700000100, 1, err,
	    sizeof(err)) == 0);
	CHECK(contains(&b, "  Count:        21 when it crossed\r\n"));
	CHECK(contains(&b, "over (the counter has expired)"));
	CHECK(contains(&b, "    (none recorded)\r\n"));
	buf_reset(&b);
	/* A request that counted several (a message's recipients) says so. */
	e.cost = 3;
	CHECK(mail_compose(&b, &c, evs, 1, 1700000100, 1, err,
	    sizeof(err)) == 0);
	CHECK(contains(&b, "  Count:        21 when it crossed (a request "
	    "counting 3)\r\n"));
	e.cost = 1;
	buf_reset(&b);
	e.algorithm = alg_sliding;
	e.shadow = 1;
	e.ttl_ms = -1;
	CHECK(mail_compose(&b, &c, evs, 1, 1700000100, 1, err,
	    sizeof(err)) == 0);
	CHECK(contains(&b, "limit 20 in 5m (sliding)\r\n"));
	CHECK(contains(&b, "shadow mode"));
	CHECK(!contains(&b, "Window:"));

	/* LF line ends for sendmail. */
	buf_reset(&b);
	CHECK(mail_compose(&b, &c, evs, 1, 1700000100, 0, err,
	    sizeof(err)) == 0);
	parse(&m, &b, 0);
	CHECK(m.ok && strchr(b.data, '\r') == NULL);
	buf_free(&m.headers);

	/*
	 * The report block: only once report.c has been (reported), a note
	 * without output, and (as batch.c had it) nothing at all when the
	 * command printed nothing and has no note.
	 */
	event_init(&e);
	snprintf(e.report_note, sizeof(e.report_note), "%s", "timed out");
	buf_reset(&b);
	CHECK(mail_compose(&b, &c, evs, 1, 1700000100, 1, err,
	    sizeof(err)) == 0);
	CHECK(!contains(&b, "Report from"));
	e.reported = 1;
	buf_reset(&b);
	CHECK(mail_compose(&b, &c, evs, 1, 1700000100, 1, err,
	    sizeof(err)) == 0);
	CHECK(contains(&b, "\r\n  Report from the report command (timed out):"
	    "\r\n    (no output)\r\n"));
	e.report_note[0] = '\0';
	buf_reset(&b);
	CHECK(mail_compose(&b, &c, evs, 1, 1700000100, 1, err,
	    sizeof(err)) == 0);
	CHECK(!contains(&b, "Report from"));
	buf_free(&b);
	buf_free(&v);
}

static void
test_hostile(void)
{
	/* The shim's escaped form of "evil\r\nBcc: victim@example.net\r\n". */
	static char		 evil[] =
				    "evil%0D%0ABcc:%20victim@example.net%0D%0A";
	static char		 s0[] = "Hi\r\nBcc: victim2@example.net",
				 s1[] = "$(touch /tmp/pwned); `id` | rm -rf /",
				 s2[] = ".\r\n.\r\nQUIT\r\n";
	struct conf		 c;
	struct event		 e;
	struct event		*evs[1] = { &e };
	struct mail_subject	 s[3];
	struct buf		 b, v, body;
	struct msg		 m;
	char			 err[256], key[1600], report[3000];
	size_t			 i;

	conf_init(&c);
	event_init(&e);
	c.alerts_report_command = (char *[]){ "/usr/local/bin/exireport",
	    NULL };
	e.key = evil;
	e.key_len = strlen(e.key);
	s[0].text = s0;
	s[0].len = strlen(s[0].text);
	s[0].count = 3;
	s[1].text = s1;
	s[1].len = strlen(s[1].text);
	s[1].count = 2;
	s[2].text = s2;
	s[2].len = strlen(s[2].text);
	s[2].count = 1;
	e.subjects = s;
	e.nsubjects = 3;
	/* Report output: escapes, a lone dot, a header-looking line. */
	snprintf(report, sizeof(report), "line1\n.\nBcc: x@y\n\x1b[2Jred\n"
	    "\xff\xfe bad utf8\n");
	e.reported = 1;
	e.report.data = report;
	e.report.len = strlen(report);
	snprintf(e.report_note, sizeof(e.report_note), "%s", "exit 1");

	buf_init(&b);
	buf_init(&v);
	buf_init(&body);
	CHECK(mail_compose(&b, &c, evs, 1, 1700000100, 1, err,
	    sizeof(err)) == 0);
	parse(&m, &b, 1);
	CHECK(m.ok);
	CHECK(header_count(&m, "Bcc") == 0);
	CHECK(header_count(&m, "Subject") == 1);
	CHECK(!body_has_line_start(&m, "Bcc:"));
	CHECK(!body_has_line_start(&m, "QUIT"));
	CHECK(!body_has_line_start(&m, "."));
	header_value(&m, "Subject", &v);
	CHECK(v.data != NULL && strpbrk(v.data, "\r\n") == NULL);
	CHECK(strstr(v.data, "evil%0D%0ABcc:%20victim@example.net%0D%0A")
	    != NULL);
	CHECK(contains(&b, "  Key:          evil%0D%0ABcc:%20victim@example."
	    "net%0D%0A (%XX-escaped"));
	CHECK(contains(&b, "Hi%0D%0ABcc: victim2@example.net (%XX-escaped"));
	CHECK(contains(&b, "  $(touch /tmp/pwned); `id` | rm -rf /\r\n"));
	CHECK(contains(&b, "  Report from /usr/local/bin/exireport (exit 1):"
	    "\r\n"));
	CHECK(contains(&b, "    line1\r\n    .\r\n    Bcc: x@y\r\n    "
	    "?[2Jred\r\n    ?? bad utf8\r\n"));
	buf_reset(&v);
	buf_free(&m.headers);
	buf_reset(&b);

	/* A long key of non-ASCII text: encoded, cut, quoted-printable. */
	key[0] = '\0';
	for (i = 0; i < 100; i++)
		strcat(key, "J%C3%BCrgen");
	e.key = key;
	e.key_len = strlen(key);
	memset(report, 'r', 2500);		/* one 2500-byte log line */
	report[2500] = '\n';
	e.report.len = 2501;
	CHECK(mail_compose(&b, &c, evs, 1, 1700000100, 1, err,
	    sizeof(err)) == 0);
	parse(&m, &b, 1);
	CHECK(m.ok);
	CHECK(m.longest <= 78);		/* QP lines and folded headers */
	CHECK(contains(&m.headers, "Content-Transfer-Encoding: "
	    "quoted-printable\n"));
	header_value(&m, "Subject", &v);
	CHECK(v.data != NULL && strstr(v.data, "Mail Abuse Alert: J\xc3\xbcrgen"
	    "J\xc3\xbcrgen") != NULL && strstr(v.data, "...") != NULL &&
	    v.len < 200);
	qp_decode(&body, m.body, m.body_len);
	CHECK(strstr(body.data, "  Key:          J\xc3\xbcrgenJ\xc3\xbcrgen")
	    != NULL);
	CHECK(strstr(body.data, "\n    rrrr") != NULL);
	buf_free(&m.headers);
	buf_reset(&b);

	/* ASCII only: 7bit, and the 2500-byte line is cut, not overlong. */
	event_init(&e);
	c.alerts_report_command = (char *[]){ "/bin/report", NULL };
	e.reported = 1;
	e.report.data = report;
	e.report.len = 2501;
	CHECK(mail_compose(&b, &c, evs, 1, 1700000100, 1, err,
	    sizeof(err)) == 0);
	parse(&m, &b, 1);
	CHECK(m.ok);
	CHECK(contains(&m.headers, "Content-Transfer-Encoding: 7bit\n"));
	CHECK(m.longest == 904);		/* "    " + 900 bytes */
	buf_free(&m.headers);
	buf_free(&b);
	buf_free(&v);
	buf_free(&body);
}

static void
test_digest(void)
{
	struct conf		 c;
	struct event		 e[3];
	struct event		*evs[3] = { &e[0], &e[1], &e[2] };
	struct buf		 b, v;
	struct msg		 m;
	char			 err[256];

	conf_init(&c);
	event_init(&e[0]);
	event_init(&e[1]);
	event_init(&e[2]);
	snprintf(e[1].id, sizeof(e[1].id), "%s", "1700000000200-0");
	e[1].key = key_bob;
	e[1].key_len = 15;
	snprintf(e[2].id, sizeof(e[2].id), "%s", "1700000000300-0");
	e[2].key = key_ip;
	e[2].key_len = 9;
	e[2].rule = rule_ip;
	buf_init(&b);
	buf_init(&v);
	CHECK(mail_compose(&b, &c, evs, 3, 1700000100, 1, err,
	    sizeof(err)) == 0);
	parse(&m, &b, 1);
	CHECK(m.ok);
	header_value(&m, "Subject", &v);
	CHECK(v.data != NULL && strcmp(v.data,
	    "Mail Abuse Alert: 3 senders over their limits") == 0);
	CHECK(contains(&b, "3 senders went over their limits."));
	CHECK(contains(&b, "    1. alice@example.org\r\n"));
	CHECK(contains(&b, "    2. bob@example.org\r\n"));
	CHECK(contains(&b, "    3. 192.0.2.1\r\n       ip: 21, limit 20 in "
	    "5m, at 2023-11-14T22:13:20Z\r\n"));
	CHECK(contains(&b, "[1 of 3]\r\n") && contains(&b, "[3 of 3]\r\n"));
	CHECK(contains(&b, "  Event:        1700000000300-0\r\n"));
	buf_free(&m.headers);
	buf_free(&b);
	buf_free(&v);
}

int
main(void)
{
	test_duration_dates();
	test_text();
	test_display();
	test_headers();
	test_qp();
	test_addresses();
	test_message_id();
	test_single();
	test_hostile();
	test_digest();
	return check_done();
}
