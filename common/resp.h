/*
 * resp.h: a Redis command written in RESP by hand, for the shim's hot
 * path: hiredis's generic formatter was half of the shim's work per
 * request.  RESP is simple: "*N\r\n", then "$LEN\r\nBYTES\r\n" per
 * argument.  N is known only at the end, so the arguments are written
 * RESP_HEAD bytes into the buffer and the header goes right before them.
 * Inline, so that each argument is a few stores and one memcpy.
 *
 *	struct resp r;
 *	resp_init(&r, buf);		buf: resp_size() of every argument
 *	resp_str(&r, "EVALSHA"); ...	+ RESP_HEAD bytes
 *	cmd = resp_finish(&r, &len);
 *
 * The caller sized the buffer, so nothing here checks room.
 */
#ifndef SW_RESP_H
#define SW_RESP_H

#include <stdio.h>
#include <string.h>

#define RESP_HEAD	16	/* "*N\r\n" */

struct resp {
	char	*base;
	char	*p;
	int	 n;		/* arguments so far */
};

/* The most an argument of len bytes takes. */
#define resp_size(len)	((len) + 1 + 20 + 4)

static inline char *
resp_uint(char *p, unsigned long long v)
{
	char	 tmp[24];
	int	 i = 0;

	do
		tmp[i++] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	while (i > 0)
		*p++ = tmp[--i];
	return p;
}

static inline void
resp_init(struct resp *r, char *buf)
{
	r->base = buf;
	r->p = buf + RESP_HEAD;
	r->n = 0;
}

/*
 * Arguments written at p, to be copied into a command later with
 * resp_raw(): no header, so no RESP_HEAD before them.
 */
static inline void
resp_at(struct resp *r, char *p)
{
	r->base = p;
	r->p = p;
	r->n = 0;
}

/* n arguments already in RESP (written after resp_at()), len bytes. */
static inline void
resp_raw(struct resp *r, const char *s, size_t len, int n)
{
	memcpy(r->p, s, len);
	r->p += len;
	r->n += n;
}

static inline void
resp_arg(struct resp *r, const char *s, size_t len)
{
	*r->p++ = '$';
	r->p = resp_uint(r->p, len);
	*r->p++ = '\r';
	*r->p++ = '\n';
	memcpy(r->p, s, len);
	r->p += len;
	*r->p++ = '\r';
	*r->p++ = '\n';
	r->n++;
}

static inline void
resp_str(struct resp *r, const char *s)
{
	resp_arg(r, s, strlen(s));
}

/* One argument of two parts: a key name's head and the escaped key. */
static inline void
resp_cat(struct resp *r, const char *a, size_t alen, const char *b,
    size_t blen)
{
	*r->p++ = '$';
	r->p = resp_uint(r->p, alen + blen);
	*r->p++ = '\r';
	*r->p++ = '\n';
	memcpy(r->p, a, alen);
	memcpy(r->p + alen, b, blen);
	r->p += alen + blen;
	*r->p++ = '\r';
	*r->p++ = '\n';
	r->n++;
}

/* One argument of n parts (a key name: prefix, tag, tail, key). */
static inline void
resp_parts(struct resp *r, const char *const *part, const size_t *len,
    int n)
{
	size_t	 total = 0;
	int	 i;

	for (i = 0; i < n; i++)
		total += len[i];
	*r->p++ = '$';
	r->p = resp_uint(r->p, total);
	*r->p++ = '\r';
	*r->p++ = '\n';
	for (i = 0; i < n; i++) {
		memcpy(r->p, part[i], len[i]);
		r->p += len[i];
	}
	*r->p++ = '\r';
	*r->p++ = '\n';
	r->n++;
}

static inline void
resp_num(struct resp *r, long long v)
{
	char	 buf[24];
	size_t	 len;

	if (v < 0)
		len = (size_t)snprintf(buf, sizeof(buf), "%lld", v);
	else
		len = (size_t)(resp_uint(buf, (unsigned long long)v) - buf);
	resp_arg(r, buf, len);
}

/* The whole command, which starts inside buf, and its length. */
static inline char *
resp_finish(struct resp *r, size_t *len)
{
	char	 head[RESP_HEAD], *h = head, *start;

	*h++ = '*';
	h = resp_uint(h, (unsigned long long)r->n);
	*h++ = '\r';
	*h++ = '\n';
	start = r->base + RESP_HEAD - (h - head);
	memcpy(start, head, (size_t)(h - head));
	*len = (size_t)(r->p - start);
	return start;
}

#endif
