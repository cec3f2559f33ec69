/*
 * buf.h: a growable byte buffer for composing mail and collecting child
 * output.  An allocation failure is sticky: the writes after it are
 * ignored and the owner checks buf_failed() once at the end, so composing
 * code stays a straight sequence of appends.
 */
#ifndef SW_BUF_H
#define SW_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
	char	*data;		/* always NUL-terminated once anything is added */
	size_t	 len;
	size_t	 cap;
	int	 failed;
};

void	buf_init(struct buf *);
void	buf_free(struct buf *);
void	buf_reset(struct buf *);	/* empty, keep the memory */
void	buf_add(struct buf *, const void *, size_t);
void	buf_adds(struct buf *, const char *);
void	buf_addc(struct buf *, char);
void	buf_printf(struct buf *, const char *, ...)
	    __attribute__((format(printf, 2, 3)));
int	buf_failed(const struct buf *);

#endif
