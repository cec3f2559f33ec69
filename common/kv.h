/*
 * kv.h: a list of key=value pairs, built once and written three ways: as
 * one log line (SIGUSR1, exit), and as one pair per line on a control
 * socket (stats, status).  Values with a space, a quote or a byte outside
 * printable ASCII are quoted as log values are (log_quote), so a line
 * parses the same whichever way it was written.
 */
#ifndef SW_KV_H
#define SW_KV_H

#include <stddef.h>
#include <stdint.h>

#define KV_MAX		8192

struct kv {
	char	 buf[KV_MAX];	/* "key=value\n" pairs */
	size_t	 len;
};

void	kv_init(struct kv *);
void	kv_u64(struct kv *, const char *key, uint64_t);
void	kv_str(struct kv *, const char *key, const char *value);
/* The pairs on one line, separated by spaces, into dst. */
const char *kv_line(const struct kv *, char *dst, size_t dstlen);

#endif
