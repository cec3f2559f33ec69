/*
 * mail.c: turn threshold events into an RFC 5322 message.
 *
 * The body is built as UTF-8 text with LF line ends, then sent as 7bit
 * when it is pure ASCII and as quoted-printable otherwise: a relay without
 * 8BITMIME must not see 8-bit bytes.  Lines that carry a sender's data are
 * always indented, so none of them can start with "." or look like a
 * header, and are wrapped well below the 998-octet line limit.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "conf.h"
#include "keyspace.h"
#include "mail.h"

#define WRAP_WIDTH	76	/* columns for text a reader reads */
#define RAW_LINE_MAX	900	/* bytes per line of report output */
#define SUBJECT_KEY_MAX	80	/* code points of a key in the Subject */
#define HEADER_WIDTH	78	/* RFC 5322's recommended line length */
#define LABEL_COL	16	/* where field values start in the body */

static const char hexdig[] = "0123456789ABCDEF";

/*
 * Length of the UTF-8 sequence at s, with its code point in *cp, or 0 when
 * it is not valid (overlong, surrogate, beyond U+10FFFF, cut short).
 */
static size_t
mail_utf8_decode(const unsigned char *s, size_t len, uint32_t *cp)
{
	uint32_t	 c, min;
	size_t		 n, i;

	if (len == 0)
		return 0;
	c = s[0];
	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if ((c & 0xe0) == 0xc0) {
		n = 2;
		c &= 0x1f;
		min = 0x80;
	} else if ((c & 0xf0) == 0xe0) {
		n = 3;
		c &= 0x0f;
		min = 0x800;
	} else if ((c & 0xf8) == 0xf0) {
		n = 4;
		c &= 0x07;
		min = 0x10000;
	} else
		return 0;
	if (len < n)
		return 0;
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3f);
	}
	if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return n;
}

/*
 * Characters a reader must not be shown raw: C0 and C1 controls, DEL, and
 * those that reorder or break lines (a key could otherwise be made to read
 * backwards, or to look like a different address).
 */
static int
mail_cp_unsafe(uint32_t c)
{
	return c < 0x20 || (c >= 0x7f && c <= 0x9f) ||
	    (c >= 0x200e && c <= 0x200f) || (c >= 0x2028 && c <= 0x202e) ||
	    (c >= 0x2066 && c <= 0x2069) || c == 0xfeff;
}

int
mail_text_ok(const char *s, size_t len)
{
	const unsigned char	*p = (const unsigned char *)s;
	uint32_t		 cp;
	size_t			 i = 0, n;

	while (i < len) {
		if ((n = mail_utf8_decode(p + i, len - i, &cp)) == 0 ||
		    mail_cp_unsafe(cp))
			return 0;
		i += n;
	}
	return 1;
}

/* %XX for every byte that is not printable ASCII (and for %, unless the
 * input is already in %XX form). */
static void
mail_escape_bytes(struct buf *b, const char *s, size_t len, int keep_pct)
{
	unsigned char	 c;
	size_t		 i;

	for (i = 0; i < len; i++) {
		c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x7f && (c != '%' || keep_pct))
			buf_addc(b, (char)c);
		else {
			buf_addc(b, '%');
			buf_addc(b, hexdig[c >> 4]);
			buf_addc(b, hexdig[c & 15]);
		}
	}
}

int
mail_display(struct buf *b, const char *s, size_t len, int escaped)
{
	struct buf	 tmp;
	size_t		 n;

	if (!escaped) {
		if (mail_text_ok(s, len)) {
			buf_add(b, s, len);
			return 0;
		}
		mail_escape_bytes(b, s, len, 0);
		return 1;
	}
	buf_init(&tmp);
	buf_add(&tmp, s, len);		/* room for the decoded form */
	if (buf_failed(&tmp)) {
		b->failed = 1;
		return 1;
	}
	n = keyspace_unescape(tmp.data, s, len);
	if (mail_text_ok(tmp.data, n)) {
		buf_add(b, tmp.data, n);
		buf_free(&tmp);
		return 0;
	}
	buf_free(&tmp);
	mail_escape_bytes(b, s, len, 1);
	return 1;
}

void
mail_sanitize(struct buf *b, const char *s, size_t len)
{
	const unsigned char	*p = (const unsigned char *)s;
	uint32_t		 cp;
	size_t			 i = 0, n;

	while (i < len) {
		if (p[i] == '\r' && i + 1 < len && p[i + 1] == '\n') {
			i++;		/* CRLF output: keep the LF only */
			continue;
		}
		if ((n = mail_utf8_decode(p + i, len - i, &cp)) == 0) {
			buf_addc(b, '?');
			i++;
			continue;
		}
		if (cp != '\n' && cp != '\t' && mail_cp_unsafe(cp))
			buf_addc(b, '?');
		else
			buf_add(b, p + i, n);
		i += n;
	}
}

void
mail_duration(char *dst, size_t len, long long ms)
{
	static const struct { long long ms; const char *unit; } units[] = {
		{ 86400000LL, "d" }, { 3600000LL, "h" }, { 60000LL, "m" },
		{ 1000LL, "s" }, { 1LL, "ms" },
	};
	size_t	 i, o = 0;
	int	 n;

	if (len == 0)
		return;
	dst[0] = '\0';
	if (ms < 0) {
		snprintf(dst, len, "?");
		return;
	}
	if (ms == 0) {
		snprintf(dst, len, "0s");
		return;
	}
	for (i = 0; i < sizeof(units) / sizeof(units[0]) && ms > 0; i++) {
		if (ms < units[i].ms)
			continue;
		n = snprintf(dst + o, len - o, "%lld%s", ms / units[i].ms,
		    units[i].unit);
		if (n < 0 || (size_t)n >= len - o)
			return;
		o += (size_t)n;
		ms %= units[i].ms;
	}
}

void
mail_rfc3339(char *dst, size_t len, long long t)
{
	struct tm	 tm;
	time_t		 tt = (time_t)t;

	if (t < 0 || gmtime_r(&tt, &tm) == NULL) {
		snprintf(dst, len, "?");
		return;
	}
	snprintf(dst, len, "%04d-%02d-%02dT%02d:%02d:%02dZ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec);
}

void
mail_date(char *dst, size_t len, time_t t)
{
	/* Not strftime: %a and %b follow the locale, RFC 5322 does not. */
	static const char *const days[] = { "Sun", "Mon", "Tue", "Wed", "Thu",
	    "Fri", "Sat" };
	static const char *const months[] = { "Jan", "Feb", "Mar", "Apr",
	    "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	struct tm	 tm;

	if (gmtime_r(&t, &tm) == NULL)
		memset(&tm, 0, sizeof(tm));
	snprintf(dst, len, "%s, %d %s %04d %02d:%02d:%02d +0000",
	    days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12],
	    tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static void
mail_base64(struct buf *b, const unsigned char *s, size_t len)
{
	static const char tab[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	uint32_t	 v;
	size_t		 i;

	for (i = 0; i + 2 < len; i += 3) {
		v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
		buf_addc(b, tab[v >> 18]);
		buf_addc(b, tab[(v >> 12) & 63]);
		buf_addc(b, tab[(v >> 6) & 63]);
		buf_addc(b, tab[v & 63]);
	}
	if (i < len) {
		v = (uint32_t)s[i] << 16;
		if (i + 1 < len)
			v |= (uint32_t)s[i + 1] << 8;
		buf_addc(b, tab[v >> 18]);
		buf_addc(b, tab[(v >> 12) & 63]);
		buf_addc(b, i + 1 < len ? tab[(v >> 6) & 63] : '=');
		buf_addc(b, '=');
	}
}

/*
 * Bytes of the whole characters at s that fit in max bytes; at least one
 * character, so that a caller always makes progress.  An invalid byte
 * counts as a character of its own.
 */
static size_t
mail_utf8_prefix(const char *s, size_t len, size_t max)
{
	uint32_t	 cp;
	size_t		 i = 0, n;

	while (i < len) {
		if ((n = mail_utf8_decode((const unsigned char *)s + i, len - i,
		    &cp)) == 0)
			n = 1;
		if (i > 0 && i + n > max)
			break;
		i += n;
	}
	return i;
}

/*
 * RFC 2047 encoded-words ("=?UTF-8?B?...?="), each at most 75 characters
 * and never splitting a character, folded so that lines stay within 78.
 * col is the column the first word starts at.
 */
static void
mail_encoded_words(struct buf *b, const char *s, size_t len, size_t col,
    const char *eol)
{
	size_t	 room, max, n;

	while (len > 0) {
		room = HEADER_WIDTH > col ? HEADER_WIDTH - col : 0;
		if (room > 75)
			room = 75;
		if (room < 20) {
			/* Too little left on this line for a useful word. */
			buf_adds(b, eol);
			buf_addc(b, ' ');
			col = 1;
			continue;
		}
		max = (room - 12) / 4 * 3;
		n = mail_utf8_prefix(s, len, max);
		buf_adds(b, "=?UTF-8?B?");
		mail_base64(b, (const unsigned char *)s, n);
		buf_adds(b, "?=");
		col += 12 + (n + 2) / 3 * 4;
		s += n;
		len -= n;
		if (len > 0) {
			buf_adds(b, eol);
			buf_addc(b, ' ');
			col = 1;
		}
	}
}

static int
mail_plain_ascii(const char *s, size_t len)
{
	size_t	 i, word = 0;

	for (i = 0; i < len; i++) {
		if (s[i] < 0x20 || s[i] > 0x7e)
			return 0;
		if (s[i] == '=' && i + 1 < len && s[i + 1] == '?')
			return 0;	/* would read as an encoded-word */
		word = s[i] == ' ' ? 0 : word + 1;
		if (word > 70)
			return 0;	/* too long to fold at a space */
	}
	return 1;
}

void
mail_header_text(struct buf *b, const char *name, const char *text,
    size_t len, const char *eol)
{
	size_t	 col, i, w;

	buf_printf(b, "%s: ", name);
	col = strlen(name) + 2;
	if (!mail_plain_ascii(text, len)) {
		mail_encoded_words(b, text, len, col, eol);
		buf_adds(b, eol);
		return;
	}
	/* Fold before a word that would pass the recommended width. */
	for (i = 0; i < len; i += w) {
		for (w = 1; i + w < len && text[i + w] != ' '; w++)
			;
		if (i > 0 && text[i] == ' ' && col + w > HEADER_WIDTH) {
			buf_adds(b, eol);
			col = 0;
		}
		buf_add(b, text + i, w);
		col += w;
	}
	buf_adds(b, eol);
}

static int
mail_specials(const char *s, size_t len)
{
	size_t	 i;

	for (i = 0; i < len; i++)
		if (strchr("()<>[]:;@\\,.\"", s[i]) != NULL)
			return 1;
	return 0;
}

static const char *
mail_trim(const char *s, size_t *len)
{
	while (*len > 0 && (*s == ' ' || *s == '\t')) {
		s++;
		(*len)--;
	}
	while (*len > 0 && (s[*len - 1] == ' ' || s[*len - 1] == '\t'))
		(*len)--;
	return s;
}

/* Split "Name <addr>" (or "addr") into its parts; -1 when malformed. */
static int
mail_addr_split(const char *s, const char **name, size_t *nlen, const char **addr,
    size_t *alen)
{
	const char	*lt;
	size_t		 len = strlen(s), i;

	s = mail_trim(s, &len);
	*name = NULL;
	*nlen = 0;
	if (len > 0 && s[len - 1] == '>') {
		if ((lt = memchr(s, '<', len)) == NULL)
			return -1;
		*addr = lt + 1;
		*alen = (size_t)(s + len - 1 - *addr);
		*nlen = (size_t)(lt - s);
		*name = mail_trim(s, nlen);
	} else {
		*addr = s;
		*alen = len;
	}
	if (*alen == 0 || *alen > MAIL_ADDR_MAX)
		return -1;
	for (i = 0; i < *alen; i++)
		if ((*addr)[i] <= 0x20 || (*addr)[i] >= 0x7f ||
		    strchr("<>()[],;:\\\"", (*addr)[i]) != NULL)
			return -1;
	lt = memchr(*addr, '@', *alen);
	if (lt == NULL || lt == *addr || lt == *addr + *alen - 1 ||
	    memchr(lt + 1, '@', *alen - (size_t)(lt + 1 - *addr)) != NULL)
		return -1;
	return 0;
}

int
mail_addr_spec(const char *s, char *dst, size_t dstlen)
{
	const char	*name, *addr;
	size_t		 nlen, alen;

	if (mail_addr_split(s, &name, &nlen, &addr, &alen) == -1 ||
	    alen >= dstlen)
		return -1;
	memcpy(dst, addr, alen);
	dst[alen] = '\0';
	return 0;
}

/* One mailbox for a From/To/Cc header, the display name made safe. */
static void
mail_mailbox(struct buf *b, const char *s)
{
	const char	*name, *addr;
	size_t		 nlen, alen, i;
	struct buf	 dn;

	if (mail_addr_split(s, &name, &nlen, &addr, &alen) == -1)
		return;			/* mail_check_conf refused it */
	if (nlen == 0) {
		buf_add(b, addr, alen);
		return;
	}
	/* The name unquoted first: it is re-quoted or encoded below. */
	buf_init(&dn);
	if (nlen >= 2 && name[0] == '"' && name[nlen - 1] == '"') {
		for (i = 1; i + 1 < nlen; i++) {
			if (name[i] == '\\' && i + 2 < nlen)
				i++;
			buf_addc(&dn, name[i]);
		}
	} else
		buf_add(&dn, name, nlen);
	if (dn.len > 0 && !mail_plain_ascii(dn.data, dn.len)) {
		mail_encoded_words(b, dn.data, dn.len, 0, "");
	} else if (dn.len > 0 && mail_specials(dn.data, dn.len)) {
		buf_addc(b, '"');
		for (i = 0; i < dn.len; i++) {
			if (dn.data[i] == '"' || dn.data[i] == '\\')
				buf_addc(b, '\\');
			buf_addc(b, dn.data[i]);
		}
		buf_addc(b, '"');
	} else
		buf_add(b, dn.data, dn.len);
	if (buf_failed(&dn))
		b->failed = 1;
	buf_free(&dn);
	buf_adds(b, " <");
	buf_add(b, addr, alen);
	buf_addc(b, '>');
}

/* From/To/Cc: mailboxes separated by commas, folded between them. */
static void
mail_header_addrs(struct buf *b, const char *name, char *const *list, size_t n,
    const char *eol)
{
	struct buf	 one;
	size_t		 i, col;

	buf_printf(b, "%s: ", name);
	col = strlen(name) + 2;
	buf_init(&one);
	for (i = 0; i < n; i++) {
		buf_reset(&one);
		mail_mailbox(&one, list[i]);
		if (i > 0) {
			buf_addc(b, ',');
			col++;
			if (col + 1 + one.len > HEADER_WIDTH) {
				buf_adds(b, eol);
				col = 0;
			}
			buf_addc(b, ' ');
			col++;
		}
		buf_add(b, one.data, one.len);
		col += one.len;
	}
	if (buf_failed(&one))
		b->failed = 1;
	buf_free(&one);
	buf_adds(b, eol);
}

void
mail_qp(struct buf *b, const char *s, size_t len, const char *eol)
{
	unsigned char	 c;
	size_t		 i, col = 0;
	int		 lit;

	for (i = 0; i < len; i++) {
		c = (unsigned char)s[i];
		if (c == '\n') {
			buf_adds(b, eol);
			col = 0;
			continue;
		}
		/*
		 * Literal: printable ASCII but "=", white space not at a line
		 * end, and not a "." opening a line (a lone "." ends a
		 * message for SMTP and for sendmail without -oi).
		 */
		lit = (c >= 0x21 && c <= 0x7e && c != '=' &&
		    !(c == '.' && col == 0)) ||
		    ((c == ' ' || c == '\t') && i + 1 < len && s[i + 1] != '\n');
		if (col + (lit ? 1 : 3) > 75) {
			buf_addc(b, '=');
			buf_adds(b, eol);
			col = 0;
			if (c == '.')
				lit = 0;
		}
		if (lit) {
			buf_addc(b, (char)c);
			col++;
		} else {
			buf_addc(b, '=');
			buf_addc(b, hexdig[c >> 4]);
			buf_addc(b, hexdig[c & 15]);
			col += 3;
		}
	}
}

/* Code points in s (which is valid UTF-8 or plain bytes). */
static size_t
mail_cp_count(const char *s, size_t len)
{
	size_t	 i, n = 0;

	for (i = 0; i < len; i++)
		if (((unsigned char)s[i] & 0xc0) != 0x80)
			n++;
	return n;
}

/* Byte length of the first cps code points of s. */
static size_t
mail_cp_bytes(const char *s, size_t len, size_t cps)
{
	size_t	 i, n = 0;

	for (i = 0; i < len; i++) {
		if (((unsigned char)s[i] & 0xc0) != 0x80) {
			if (n == cps)
				return i;
			n++;
		}
	}
	return len;
}

/*
 * Append display text starting at column col, wrapped at WRAP_WIDTH;
 * continuation lines are indented to column indent.  Breaks at a space
 * when one is in the last third of the line, else between characters.
 */
static void
mail_wrap(struct buf *b, const char *s, size_t len, size_t col, size_t indent)
{
	size_t	 room, n, brk, k;

	for (;;) {
		room = WRAP_WIDTH > col ? WRAP_WIDTH - col : 1;
		if (mail_cp_count(s, len) <= room) {
			buf_add(b, s, len);
			return;
		}
		n = mail_cp_bytes(s, len, room);
		brk = n;
		for (k = n; k > n * 2 / 3; k--)
			if (s[k - 1] == ' ') {
				brk = k;
				break;
			}
		buf_add(b, s, brk);
		buf_addc(b, '\n');
		for (k = 0; k < indent; k++)
			buf_addc(b, ' ');
		col = indent;
		s += brk;
		len -= brk;
	}
}

/* A sender's text, shown safely and wrapped; notes when it is %XX. */
static void
mail_show(struct buf *b, const char *s, size_t len, int escaped, size_t col,
    size_t indent)
{
	struct buf	 d;
	int		 esc;

	buf_init(&d);
	esc = mail_display(&d, s, len, escaped);
	if (len == 0)
		buf_adds(&d, "(empty)");
	if (esc)
		buf_adds(&d, " (%XX-escaped: not clean UTF-8 text)");
	mail_wrap(b, d.data != NULL ? d.data : "", d.len, col, indent);
	if (buf_failed(&d))
		b->failed = 1;
	buf_free(&d);
}

static void
mail_label(struct buf *b, const char *l)
{
	buf_printf(b, "  %-*s", LABEL_COL - 2, l);
}

static const char *
mail_num(char *dst, size_t len, long long v)
{
	if (v < 0)
		snprintf(dst, len, "?");
	else
		snprintf(dst, len, "%lld", v);
	return dst;
}

static void
mail_report_block(struct buf *b, const struct conf *c, const struct event *e)
{
	struct buf	 clean;
	const char	*p, *end, *nl;
	size_t		 n;
	int		 note = e->reported && e->report_note[0] != '\0';

	/* Not run, or run with no output (no buffer) and nothing to note. */
	if (!e->reported || (e->report.data == NULL && !note))
		return;
	buf_adds(b, "\n  Report from ");
	if (c->alerts_report_command != NULL)
		mail_show(b, c->alerts_report_command[0],
		    strlen(c->alerts_report_command[0]), 0, 15, 4);
	else
		buf_adds(b, "the report command");
	if (note) {
		buf_adds(b, " (");
		mail_show(b, e->report_note, strlen(e->report_note), 0, 0, 4);
		buf_adds(b, ")");
	}
	buf_adds(b, ":\n");
	buf_init(&clean);
	mail_sanitize(&clean, e->report.data != NULL ? e->report.data : "",
	    e->report.len);
	p = clean.data != NULL ? clean.data : "";
	end = p + clean.len;
	if (p == end)
		buf_adds(b, "    (no output)\n");
	while (p < end) {
		if ((nl = memchr(p, '\n', (size_t)(end - p))) == NULL)
			nl = end;
		/* Long log lines are cut in pieces, not wrapped for reading. */
		do {
			n = (size_t)(nl - p);
			if (n > RAW_LINE_MAX)
				n = mail_utf8_prefix(p, n, RAW_LINE_MAX);
			buf_adds(b, "    ");
			buf_add(b, p, n);
			buf_addc(b, '\n');
			p += n;
		} while (p < nl);
		p = nl + 1;
	}
	if (buf_failed(&clean))
		b->failed = 1;
	buf_free(&clean);
}

static void
mail_event_block(struct buf *b, const struct conf *c, const struct event *e)
{
	char	 t[64], w[32], n1[24], n2[24];
	size_t	 i;

	mail_label(b, "Key:");
	mail_show(b, e->key, e->key_len, 1, LABEL_COL, LABEL_COL);
	buf_addc(b, '\n');

	mail_duration(w, sizeof(w), e->window_ms);
	mail_label(b, "Rule:");
	mail_show(b, e->rule, strlen(e->rule), 0, LABEL_COL, LABEL_COL);
	buf_printf(b, ", limit %s in %s", mail_num(n1, sizeof(n1), e->limit), w);
	if (e->algorithm != NULL && strcmp(e->algorithm, "fixed") != 0) {
		buf_adds(b, " (");
		mail_show(b, e->algorithm, strlen(e->algorithm), 0, 0, LABEL_COL);
		buf_adds(b, ")");
	}
	buf_addc(b, '\n');
	if (e->shadow) {
		mail_label(b, "");
		buf_adds(b, "shadow mode: counted and reported, not refused\n");
	}

	mail_label(b, "Count:");
	buf_printf(b, "%s when it crossed", mail_num(n1, sizeof(n1), e->count));
	/* One message to 50 recipients can cross a recipients-a-day rule. */
	if (e->cost > 1)
		buf_printf(b, " (a request counting %s)", mail_num(n2, sizeof(n2),
		    e->cost));
	if (e->count_now >= 0)
		buf_printf(b, ", %s now", mail_num(n2, sizeof(n2), e->count_now));
	buf_addc(b, '\n');

	if (e->count_now >= 0 && e->ttl_ms >= 0) {
		/* Whole seconds: the mail is read later than it is written. */
		mail_duration(w, sizeof(w), e->ttl_ms / 1000 * 1000);
		mail_label(b, "Window:");
		buf_printf(b, "ends in %s\n", e->ttl_ms < 1000 ? "under 1s" :
		    w);
	} else if (e->ttl_ms == -2) {
		mail_label(b, "Window:");
		buf_adds(b, "over (the counter has expired)\n");
	}

	mail_rfc3339(t, sizeof(t), e->time);
	mail_label(b, "Crossed at:");
	buf_printf(b, "%s\n", t);

	mail_label(b, "Reported by:");
	mail_show(b, e->host, strlen(e->host), 0, LABEL_COL, LABEL_COL);
	buf_addc(b, '\n');

	mail_label(b, "Event:");
	mail_show(b, e->id, strlen(e->id), 0, LABEL_COL, LABEL_COL);
	buf_addc(b, '\n');

	if (c->alerts_top_subjects > 0) {
		buf_adds(b, "\n  Top subjects in this window, all MTAs "
		    "(messages, subject):\n");
		if (e->nsubjects == 0)
			buf_adds(b, "    (none recorded)\n");
		for (i = 0; i < e->nsubjects; i++) {
			buf_printf(b, "  %8lld  ", e->subjects[i].count);
			mail_show(b, e->subjects[i].text, e->subjects[i].len, 0,
			    12, 12);
			buf_addc(b, '\n');
		}
	}
	mail_report_block(b, c, e);
}

static void
mail_body(struct buf *b, const struct conf *c, struct event *const *evs,
    size_t n)
{
	char	 w[32], n1[24], n2[24], t[64];
	size_t	 i;

	if (n == 1) {
		buf_adds(b, "A sender went over its limit.\n\n");
		mail_event_block(b, c, evs[0]);
	} else {
		buf_printf(b, "%zu senders went over their limits.\n\n", n);
		for (i = 0; i < n; i++) {
			mail_duration(w, sizeof(w), evs[i]->window_ms);
			mail_rfc3339(t, sizeof(t), evs[i]->time);
			buf_printf(b, "  %3zu. ", i + 1);
			mail_show(b, evs[i]->key, evs[i]->key_len, 1, 7, 7);
			buf_adds(b, "\n       ");
			mail_show(b, evs[i]->rule, strlen(evs[i]->rule), 0, 7, 7);
			buf_printf(b, ": %s, limit %s in %s, at %s\n",
			    mail_num(n1, sizeof(n1), evs[i]->count),
			    mail_num(n2, sizeof(n2), evs[i]->limit), w, t);
		}
		for (i = 0; i < n; i++) {
			buf_printf(b, "\n[%zu of %zu]\n", i + 1, n);
			mail_event_block(b, c, evs[i]);
		}
	}
	buf_adds(b, "\n-- \nsenderwatch-alerter on ");
	mail_show(b, c->hostname, strlen(c->hostname), 0, 24, 0);
	buf_adds(b, "\n");
}

static uint64_t
mail_fnv1a(uint64_t h, const char *s, size_t len)
{
	size_t	 i;

	for (i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

/* Only the characters a stream id has: the Message-ID stays well-formed. */
static void
mail_add_id(struct buf *b, const char *id)
{
	for (; *id != '\0'; id++)
		if ((*id >= '0' && *id <= '9') || *id == '-')
			buf_addc(b, *id);
}

void
mail_message_id(struct buf *b, const struct conf *c,
    struct event *const *evs, size_t n)
{
	char		 addr[MAIL_ADDR_MAX + 1];
	const char	*dom;
	uint64_t	 h;
	size_t		 i, before;

	/*
	 * Stream ids, the stream name and the From domain: the same crossing
	 * gets the same Message-ID from any alerter and on every retry.
	 */
	h = mail_fnv1a(0xcbf29ce484222325ULL, c->events_stream,
	    strlen(c->events_stream));
	for (i = 0; i < n; i++)
		h = mail_fnv1a(h, evs[i]->id, strlen(evs[i]->id) + 1);
	buf_adds(b, "<senderwatch.");
	mail_add_id(b, n > 0 ? evs[0]->id : "");
	if (n > 1)
		buf_printf(b, ".n%zu", n);
	buf_printf(b, ".%016llx@", (unsigned long long)h);
	dom = NULL;
	if (c->alerts_from != NULL &&
	    mail_addr_spec(c->alerts_from, addr, sizeof(addr)) == 0)
		dom = strrchr(addr, '@') + 1;
	before = b->len;
	for (; dom != NULL && *dom != '\0'; dom++)
		if ((*dom >= 'a' && *dom <= 'z') || (*dom >= 'A' &&
		    *dom <= 'Z') || (*dom >= '0' && *dom <= '9') ||
		    ((*dom == '.' || *dom == '-') && b->len > before))
			buf_addc(b, *dom);
	while (b->len > before && (b->data[b->len - 1] == '.' ||
	    b->data[b->len - 1] == '-'))
		b->data[--b->len] = '\0';
	if (b->len == before)
		buf_adds(b, "senderwatch.invalid");
	buf_addc(b, '>');
}

static void
mail_subject(struct buf *b, const struct conf *c, struct event *const *evs,
    size_t n)
{
	struct buf	 key;
	size_t		 cut;

	buf_adds(b, c->alerts_subject);
	if (n != 1) {
		buf_printf(b, ": %zu senders over their limits", n);
		return;
	}
	buf_init(&key);
	mail_display(&key, evs[0]->key, evs[0]->key_len, 1);
	buf_adds(b, ": ");
	cut = mail_cp_bytes(key.data != NULL ? key.data : "", key.len,
	    SUBJECT_KEY_MAX);
	buf_add(b, key.data, cut);
	if (cut < key.len)
		buf_adds(b, "...");
	buf_adds(b, " (");
	mail_display(b, evs[0]->rule, strlen(evs[0]->rule), 0);
	buf_adds(b, ")");
	if (buf_failed(&key))
		b->failed = 1;
	buf_free(&key);
}

static int
mail_all_ascii(const char *s, size_t len)
{
	size_t	 i;

	for (i = 0; i < len; i++)
		if ((unsigned char)s[i] >= 0x80)
			return 0;
	return 1;
}

int
mail_compose(struct buf *out, const struct conf *c,
    struct event *const *evs, size_t n, time_t now, int crlf,
    char *err, size_t errlen)
{
	const char	*eol = crlf ? "\r\n" : "\n";
	struct buf	 text, subj;
	char		 date[64];
	const char	*p, *end, *nl;
	int		 qp;

	buf_init(&text);
	buf_init(&subj);
	mail_body(&text, c, evs, n);
	mail_subject(&subj, c, evs, n);
	qp = !mail_all_ascii(text.data, text.len);

	mail_date(date, sizeof(date), now);
	buf_printf(out, "Date: %s%s", date, eol);
	mail_header_addrs(out, "From", &c->alerts_from, 1, eol);
	mail_header_addrs(out, "To", c->alerts_to, c->alerts_nto, eol);
	if (c->alerts_ncc > 0)
		mail_header_addrs(out, "Cc", c->alerts_cc, c->alerts_ncc, eol);
	mail_header_text(out, "Subject", subj.data, subj.len, eol);
	buf_adds(out, "Message-ID: ");
	mail_message_id(out, c, evs, n);
	buf_adds(out, eol);
	/* RFC 3834: no vacation replies to a robot. */
	buf_printf(out, "Auto-Submitted: auto-generated%s", eol);
	buf_printf(out, "MIME-Version: 1.0%s", eol);
	buf_printf(out, "Content-Type: text/plain; charset=utf-8%s", eol);
	buf_printf(out, "Content-Transfer-Encoding: %s%s%s",
	    qp ? "quoted-printable" : "7bit", eol, eol);
	if (qp)
		mail_qp(out, text.data, text.len, eol);
	else {
		p = text.data;
		end = p + text.len;
		while (p < end) {
			if ((nl = memchr(p, '\n', (size_t)(end - p))) == NULL)
				nl = end;
			buf_add(out, p, (size_t)(nl - p));
			buf_adds(out, eol);
			p = nl + 1;
		}
	}
	if (buf_failed(&text) || buf_failed(&subj) || buf_failed(out)) {
		snprintf(err, errlen, "out of memory composing the message");
		buf_free(&text);
		buf_free(&subj);
		return -1;
	}
	buf_free(&text);
	buf_free(&subj);
	return 0;
}

static int
mail_check_addr(struct conf_ctx *cx, const void *field, const char *s)
{
	char	 addr[MAIL_ADDR_MAX + 1];

	if (strpbrk(s, "\r\n") != NULL)
		return conf_fail(cx, field, "must not contain a line break");
	if (!mail_text_ok(s, strlen(s)))
		return conf_fail(cx, field, "control characters or invalid "
		    "UTF-8 in \"%.100s\"", s);
	if (strlen(s) > 400 || mail_addr_spec(s, addr, sizeof(addr)) == -1)
		return conf_fail(cx, field, "\"%.100s\" is not an address "
		    "(user@domain or Name <user@domain>)", s);
	return 0;
}

int
mail_check_conf(struct conf_ctx *cx, const struct conf *c)
{
	size_t	 i;

	if (c->alerts_from == NULL)
		return conf_fail(cx, &c->alerts_from, "is required");
	if (c->alerts_to == NULL || c->alerts_nto == 0)
		return conf_fail(cx, &c->alerts_to, "is required");
	if (mail_check_addr(cx, &c->alerts_from, c->alerts_from) == -1)
		return -1;
	for (i = 0; i < c->alerts_nto; i++)
		if (mail_check_addr(cx, &c->alerts_to, c->alerts_to[i]) == -1)
			return -1;
	for (i = 0; i < c->alerts_ncc; i++)
		if (mail_check_addr(cx, &c->alerts_cc, c->alerts_cc[i]) == -1)
			return -1;
	if (c->alerts_subject == NULL ||
	    strpbrk(c->alerts_subject, "\r\n") != NULL ||
	    !mail_text_ok(c->alerts_subject, strlen(c->alerts_subject)))
		return conf_fail(cx, &c->alerts_subject, "must be one line of "
		    "text without control characters");
	return 0;
}
