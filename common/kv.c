/*
 * kv.c: key=value pairs for stats and status (kv.h).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "kv.h"
#include "log.h"

void
kv_init(struct kv *kv)
{
	kv->len = 0;
	kv->buf[0] = '\0';
}

static void
kv_put(struct kv *kv, const char *key, const char *value, int quote)
{
	int	 n;

	n = snprintf(kv->buf + kv->len, sizeof(kv->buf) - kv->len,
	    quote ? "%s=\"%s\"\n" : "%s=%s\n", key, value);
	/* A pair that does not fit is left out whole, never cut. */
	if (n > 0 && (size_t)n < sizeof(kv->buf) - kv->len)
		kv->len += (size_t)n;
	else
		kv->buf[kv->len] = '\0';
}

void
kv_u64(struct kv *kv, const char *key, uint64_t v)
{
	char	 num[24];

	snprintf(num, sizeof(num), "%" PRIu64, v);
	kv_put(kv, key, num, 0);
}

void
kv_str(struct kv *kv, const char *key, const char *value)
{
	char		 q[1024];
	const char	*p;
	int		 plain = *value != '\0';

	for (p = value; *p != '\0' && plain; p++)
		plain = *p > 0x20 && *p < 0x7f && *p != '"' && *p != '\\';
	if (plain) {
		kv_put(kv, key, value, 0);
		return;
	}
	kv_put(kv, key, log_quote(q, sizeof(q), value, strlen(value)), 1);
}

const char *
kv_line(const struct kv *kv, char *dst, size_t dstlen)
{
	size_t	 i, n = kv->len;

	if (dstlen == 0)
		return dst;
	if (n > 0 && kv->buf[n - 1] == '\n')
		n--;			/* no trailing separator */
	if (n >= dstlen)
		n = dstlen - 1;
	for (i = 0; i < n; i++)
		dst[i] = kv->buf[i] == '\n' ? ' ' : kv->buf[i];
	dst[n] = '\0';
	return dst;
}
