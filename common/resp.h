/*
 * resp.h: a Redis command written in RESP by hand, for the shim's hot
 * path: hiredis's generic formatter was half of the shim's work per
 * request.  RESP is simple: "*N\r\n", then "$LEN\r\nBYTES\r\n" per
 * argument.  N is known only at the end, so the arguments are written
 * RESP_HEAD bytes into the buffer and the header goes right before them.
 *
 *	struct resp r;
 *	resp_init(&r, buf);		buf: resp_size() of every argument
 *	resp_str(&r, "EVALSHA"); ...	+ RESP_HEAD bytes
 *	cmd = resp_finish(&r, &len);
 */
#ifndef SW_RESP_H
#define SW_RESP_H

#include <stddef.h>

#define RESP_HEAD	16	/* "*N\r\n" */

struct resp {
	char	*base;
	char	*p;
	int	 n;		/* arguments so far */
};

/* The most an argument of len bytes takes. */
#define resp_size(len)	((len) + 1 + 20 + 4)

void	 resp_init(struct resp *, char *buf);
void	 resp_arg(struct resp *, const char *, size_t);
void	 resp_str(struct resp *, const char *);
void	 resp_num(struct resp *, long long);
/* One argument of two parts: a key name's head and the escaped key. */
void	 resp_cat(struct resp *, const char *, size_t, const char *, size_t);
/* The whole command, which starts inside buf, and its length. */
char	*resp_finish(struct resp *, size_t *len);

#endif
