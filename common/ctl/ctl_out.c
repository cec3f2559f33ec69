/*
 * ctl_out.c: what senderwatch-ctl prints, on stdout: aligned text columns
 * under a header line, or with -j JSON lines, one object per row.
 *
 * Nothing a sender chose reaches a terminal as it is.  A sender's bytes
 * (CTL_RAW: subjects, hosts, consumer names) are shown %XX-escaped by
 * keyspace_escape(), as keys are in key names; what is escaped already
 * (CTL_ESCAPED: keys and key names read back from Redis) keeps its
 * printable bytes and has any other escaped; our own and the daemons'
 * text (CTL_TEXT) is shown as log values are (log_quote: \xNN).  JSON
 * carries the same escaped forms, and CTL_TEXT as JSON strings proper:
 * \uXXXX for control characters and for bytes that are not UTF-8, so
 * every line is valid JSON whatever the bytes were.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"
#include "log.h"

struct ctl_buf {
	char	*s;
	size_t	 len, cap;
};

struct ctl_table {
	int			 json;
	const char		*type;
	const struct ctl_col	*cols;
	size_t			 ncols;
	size_t			 col;		/* the next cell */
	struct ctl_buf		 row;		/* JSON: the row being made */
	char			**cells;	/* text: this row's */
	char			***rows;	/* text: waiting for flush */
	size_t			 nrows, caprows;
	size_t			*width;
	int			 headed;
};

struct ctl_obj {
	struct ctl_buf		 b;
};

/* Text: a table printed already, so the next starts after a blank line. */
static int	 ctl_out_printed;

static void
ctl_buf_add(struct ctl_buf *b, const char *s, size_t len)
{
	if (b->len + len + 1 > b->cap) {
		while (b->len + len + 1 > b->cap)
			b->cap = b->cap ? b->cap * 2 : 256;
		if ((b->s = realloc(b->s, b->cap)) == NULL)
			ctl_fatal("out of memory");
	}
	memcpy(b->s + b->len, s, len);
	b->len += len;
	b->s[b->len] = '\0';
}

static void
ctl_buf_str(struct ctl_buf *b, const char *s)
{
	ctl_buf_add(b, s, strlen(s));
}

/* The length of the UTF-8 sequence at s, or 0 when it is not one. */
static size_t
ctl_utf8_len(const unsigned char *s, size_t len)
{
	size_t		 n, i;
	unsigned	 cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		n = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		n = 4;
	else
		return 0;
	if (len < n)
		return 0;
	cp = s[0] & (0x7f >> n);
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	/* Overlong forms, surrogates, past U+10FFFF. */
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	return n;
}

/* A JSON string, quotes and all. */
static void
ctl_json_str(struct ctl_buf *b, const char *s, size_t len)
{
	static const char	 hex[] = "0123456789abcdef";
	const unsigned char	*p = (const unsigned char *)s;
	char			 esc[8];
	size_t			 i, n;

	ctl_buf_add(b, "\"", 1);
	for (i = 0; i < len; i += n) {
		n = ctl_utf8_len(p + i, len - i);
		if (n > 1) {
			ctl_buf_add(b, s + i, n);
			continue;
		}
		n = 1;
		if (p[i] == '"' || p[i] == '\\') {
			esc[0] = '\\';
			esc[1] = (char)p[i];
			ctl_buf_add(b, esc, 2);
		} else if (p[i] >= 0x20 && p[i] < 0x7f)
			ctl_buf_add(b, s + i, 1);
		else {
			/* Control characters, and bytes that are not UTF-8. */
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[p[i] >> 4];
			esc[5] = hex[p[i] & 15];
			ctl_buf_add(b, esc, 6);
		}
	}
	ctl_buf_add(b, "\"", 1);
}

/* What is escaped already: printable bytes stay, the rest are %XX. */
static char *
ctl_out_sanitize(const char *s, size_t len)
{
	static const char	 hex[] = "0123456789ABCDEF";
	unsigned char		 c;
	char			*out;
	size_t			 i, o = 0;

	if ((out = malloc(len * 3 + 1)) == NULL)
		ctl_fatal("out of memory");
	for (i = 0; i < len; i++) {
		c = (unsigned char)s[i];
		if (c > 0x20 && c < 0x7f)
			out[o++] = (char)c;
		else {
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
	return out;
}

/* The text a cell shows, malloc'ed. */
static char *
ctl_out_text(const char *s, size_t len, enum ctl_esc how)
{
	char	*out;
	size_t	 cap;

	switch (how) {
	case CTL_RAW:
		cap = len * 3 + 1;
		if ((out = malloc(cap)) == NULL)
			ctl_fatal("out of memory");
		keyspace_escape(out, cap, s, len);
		return out;
	case CTL_ESCAPED:
		return ctl_out_sanitize(s, len);
	default:
		cap = len * 4 + 1;
		if ((out = malloc(cap)) == NULL)
			ctl_fatal("out of memory");
		return log_quote(out, cap, s, len);
	}
}

struct ctl_table *
ctl_table_new(const struct ctl *ctl, const char *type,
    const struct ctl_col *cols)
{
	struct ctl_table	*t;
	size_t			 i;

	if ((t = calloc(1, sizeof(*t))) == NULL)
		ctl_fatal("out of memory");
	t->json = ctl->json;
	t->type = type;
	t->cols = cols;
	while (cols[t->ncols].json != NULL)
		t->ncols++;
	if ((t->width = calloc(t->ncols, sizeof(*t->width))) == NULL ||
	    (t->cells = calloc(t->ncols, sizeof(*t->cells))) == NULL)
		ctl_fatal("out of memory");
	for (i = 0; i < t->ncols; i++)
		if (cols[i].text != NULL)
			t->width[i] = strlen(cols[i].text);
	return t;
}

void
ctl_table_min(struct ctl_table *t, const char *json, size_t width)
{
	size_t	 i;

	for (i = 0; i < t->ncols; i++)
		if (strcmp(t->cols[i].json, json) == 0 && t->width[i] < width)
			t->width[i] = width;
}

/* The next cell: in JSON its member's name; 0 when text skips it. */
static int
ctl_cell_begin(struct ctl_table *t)
{
	const struct ctl_col	*c;

	if (t->col >= t->ncols)
		ctl_fatal("internal error: a row of more than %zu cells",
		    t->ncols);
	c = &t->cols[t->col];
	if (t->json) {
		if (t->row.len == 0) {
			ctl_buf_add(&t->row, "{", 1);
			if (t->type != NULL) {
				ctl_buf_str(&t->row, "\"type\":");
				ctl_json_str(&t->row, t->type,
				    strlen(t->type));
			}
		}
		if (t->row.len > 1)
			ctl_buf_add(&t->row, ",", 1);
		ctl_json_str(&t->row, c->json, strlen(c->json));
		ctl_buf_add(&t->row, ":", 1);
		return 1;
	}
	return c->text != NULL;
}

/* A text cell's string, taken over. */
static void
ctl_cell_put(struct ctl_table *t, char *s)
{
	size_t	 len;

	if (t->cols[t->col].text == NULL) {
		free(s);
	} else {
		t->cells[t->col] = s;
		if ((len = strlen(s)) > t->width[t->col])
			t->width[t->col] = len;
	}
	t->col++;
}

static char *
ctl_strdup(const char *s)
{
	char	*d;

	if ((d = strdup(s)) == NULL)
		ctl_fatal("out of memory");
	return d;
}

void
ctl_cell_str(struct ctl_table *t, const char *s, size_t len,
    enum ctl_esc how)
{
	char	*text;

	if (!ctl_cell_begin(t)) {
		t->col++;
		return;
	}
	if (t->json && how == CTL_TEXT) {
		ctl_json_str(&t->row, s, len);
		t->col++;
		return;
	}
	text = ctl_out_text(s, len, how);
	if (t->json) {
		ctl_json_str(&t->row, text, strlen(text));
		free(text);
		t->col++;
		return;
	}
	ctl_cell_put(t, text);
}

void
ctl_cell_text(struct ctl_table *t, const char *s)
{
	ctl_cell_str(t, s, strlen(s), CTL_TEXT);
}

/* A cell whose JSON is json (a number, true, null) and text is text. */
static void
ctl_cell_both(struct ctl_table *t, const char *json, const char *text)
{
	if (!ctl_cell_begin(t)) {
		t->col++;
		return;
	}
	if (t->json) {
		ctl_buf_str(&t->row, json);
		t->col++;
		return;
	}
	ctl_cell_put(t, ctl_strdup(text));
}

void
ctl_cell_int(struct ctl_table *t, long long v)
{
	char	 num[32];

	snprintf(num, sizeof(num), "%lld", v);
	ctl_cell_both(t, num, num);
}

/* Digits, maybe signed, that JSON and strtoll read the same. */
static int
ctl_out_integer(const char *s, size_t len)
{
	size_t	 i = 0;

	if (len > 0 && s[0] == '-')
		i++;
	if (i == len || len - i > 18 || (s[i] == '0' && len - i > 1))
		return 0;
	for (; i < len; i++)
		if (s[i] < '0' || s[i] > '9')
			return 0;
	return 1;
}

void
ctl_cell_num(struct ctl_table *t, const char *s, size_t len)
{
	char	 num[24];

	if (!ctl_out_integer(s, len)) {
		ctl_cell_str(t, s, len, CTL_ESCAPED);
		return;
	}
	memcpy(num, s, len);
	num[len] = '\0';
	ctl_cell_both(t, num, num);
}

void
ctl_cell_bool(struct ctl_table *t, int v)
{
	ctl_cell_both(t, v ? "true" : "false", v ? "yes" : "no");
}

void
ctl_cell_null(struct ctl_table *t)
{
	ctl_cell_both(t, "null", "-");
}

const char *
ctl_out_duration(long long ms, char *buf, size_t len)
{
	long long	 s = ms / 1000;

	if (ms < 1000)
		snprintf(buf, len, "%lldms", ms);
	else if (ms < 60000)
		snprintf(buf, len, "%lld.%llds", s, ms % 1000 / 100);
	else if (s < 3600)
		snprintf(buf, len, "%lldm%02llds", s / 60, s % 60);
	else if (s < 86400)
		snprintf(buf, len, "%lldh%02lldm", s / 3600, s % 3600 / 60);
	else
		snprintf(buf, len, "%lldd%02lldh", s / 86400, s % 86400 / 3600);
	return buf;
}

void
ctl_cell_pttl(struct ctl_table *t, long long pttl)
{
	char	 num[32], text[32];

	snprintf(num, sizeof(num), "%lld", pttl);
	if (pttl >= 0)
		ctl_out_duration(pttl, text, sizeof(text));
	else
		snprintf(text, sizeof(text), "%s", pttl == -1 ? "no-expiry" :
		    "-");
	ctl_cell_both(t, num, text);
}

void
ctl_cell_window(struct ctl_table *t, long long ms)
{
	char	 num[32], text[32];

	snprintf(num, sizeof(num), "%lld", ms);
	conf_format_duration(ms, text, sizeof(text));
	ctl_cell_both(t, num, text);
}

void
ctl_cell_time(struct ctl_table *t, const char *s, size_t len)
{
	char		 num[24], text[32];
	struct tm	 tm;
	time_t		 when;

	if (!ctl_out_integer(s, len)) {
		ctl_cell_str(t, s, len, CTL_ESCAPED);
		return;
	}
	memcpy(num, s, len);
	num[len] = '\0';
	when = (time_t)strtoll(num, NULL, 10);
	if (gmtime_r(&when, &tm) == NULL)
		snprintf(text, sizeof(text), "%s", num);
	else
		strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm);
	ctl_cell_both(t, num, text);
}

void
ctl_row_end(struct ctl_table *t)
{
	while (t->col < t->ncols)
		ctl_cell_null(t);
	t->col = 0;
	if (t->json) {
		ctl_buf_add(&t->row, "}\n", 2);
		fputs(t->row.s, stdout);
		t->row.len = 0;
		return;
	}
	if (t->nrows == t->caprows) {
		t->caprows = t->caprows ? t->caprows * 2 : 16;
		if ((t->rows = reallocarray(t->rows, t->caprows,
		    sizeof(*t->rows))) == NULL)
			ctl_fatal("out of memory");
	}
	t->rows[t->nrows++] = t->cells;
	if ((t->cells = calloc(t->ncols, sizeof(*t->cells))) == NULL)
		ctl_fatal("out of memory");
}

static void
ctl_table_line(const struct ctl_table *t, char *const *cells)
{
	size_t	 i, last = 0;
	int	 first = 1;

	for (i = 0; i < t->ncols; i++)
		if (t->cols[i].text != NULL)
			last = i;
	for (i = 0; i < t->ncols; i++) {
		if (t->cols[i].text == NULL)
			continue;
		if (!first)
			fputs("  ", stdout);
		first = 0;
		/* The last column is not padded: no trailing blanks. */
		printf("%-*s", i == last ? 0 : (int)t->width[i],
		    cells[i] != NULL ? cells[i] : "");
	}
	putchar('\n');
}

void
ctl_table_flush(struct ctl_table *t)
{
	char	**head;
	size_t	 i, j;

	if (t->json) {
		fflush(stdout);
		return;
	}
	/* A table without rows shows nothing, not even its header. */
	if (!t->headed && t->nrows == 0)
		return;
	if (!t->headed) {
		if (ctl_out_printed)
			putchar('\n');
		ctl_out_printed = 1;
		if ((head = calloc(t->ncols, sizeof(*head))) == NULL)
			ctl_fatal("out of memory");
		for (i = 0; i < t->ncols; i++)
			head[i] = (char *)t->cols[i].text;
		ctl_table_line(t, head);
		free(head);
		t->headed = 1;
	}
	for (i = 0; i < t->nrows; i++) {
		ctl_table_line(t, t->rows[i]);
		for (j = 0; j < t->ncols; j++)
			free(t->rows[i][j]);
		free(t->rows[i]);
	}
	t->nrows = 0;
	fflush(stdout);
}

void
ctl_table_end(struct ctl_table *t)
{
	size_t	 i;

	ctl_table_flush(t);
	for (i = 0; i < t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t->rows);
	free(t->width);
	free(t->row.s);
	free(t);
}

struct ctl_obj *
ctl_obj_new(void)
{
	struct ctl_obj	*o;

	if ((o = calloc(1, sizeof(*o))) == NULL)
		ctl_fatal("out of memory");
	ctl_buf_add(&o->b, "{", 1);
	return o;
}

static void
ctl_obj_key(struct ctl_obj *o, const char *key)
{
	if (o->b.len > 1)
		ctl_buf_add(&o->b, ",", 1);
	ctl_json_str(&o->b, key, strlen(key));
	ctl_buf_add(&o->b, ":", 1);
}

void
ctl_obj_str(struct ctl_obj *o, const char *key, const char *s, size_t len)
{
	ctl_obj_key(o, key);
	ctl_json_str(&o->b, s, len);
}

void
ctl_obj_value(struct ctl_obj *o, const char *key, const char *s, size_t len)
{
	if (!ctl_out_integer(s, len)) {
		ctl_obj_str(o, key, s, len);
		return;
	}
	ctl_obj_key(o, key);
	ctl_buf_add(&o->b, s, len);
}

void
ctl_obj_end(struct ctl_obj *o)
{
	ctl_buf_add(&o->b, "}\n", 2);
	fputs(o->b.s, stdout);
	fflush(stdout);
	free(o->b.s);
	free(o);
}
