/*
 * resp.c: RESP written by hand (see resp.h).  The caller sized the buffer,
 * so nothing here checks room: these are a few memcpy()s per argument.
 */
#include <stdio.h>
#include <string.h>

#include "resp.h"

static char *
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

void
resp_init(struct resp *r, char *buf)
{
	r->base = buf;
	r->p = buf + RESP_HEAD;
	r->n = 0;
}

void
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

void
resp_arg(struct resp *r, const char *s, size_t len)
{
	resp_cat(r, s, len, "", 0);
}

void
resp_str(struct resp *r, const char *s)
{
	resp_cat(r, s, strlen(s), "", 0);
}

void
resp_num(struct resp *r, long long v)
{
	char	 buf[24];
	size_t	 len;

	if (v < 0)
		len = (size_t)snprintf(buf, sizeof(buf), "%lld", v);
	else
		len = (size_t)(resp_uint(buf, (unsigned long long)v) - buf);
	resp_cat(r, buf, len, "", 0);
}

char *
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
