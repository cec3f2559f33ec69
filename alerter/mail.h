/*
 * mail.h: alert mail composition.  Pure functions (no I/O, no clock, no
 * globals) so that every header and body rule is unit tested in
 * tests/unit/test_mail.c.
 *
 * Everything a sender controls (keys, subjects, report output, and even
 * the rule and host names read back from Redis) is treated as hostile: it
 * reaches the body only as clean UTF-8 text or in %XX form, indented, and
 * the Subject header only RFC 2047-encoded or as plain printable ASCII.
 */
#ifndef SW_MAIL_H
#define SW_MAIL_H

#include <stddef.h>
#include <time.h>

#include "buf.h"
#include "event.h"

struct conf;
struct conf_ctx;

#define MAIL_ADDR_MAX	320	/* RFC 5321: 64 + @ + 255 */

/*
 * Compose one message for the n events at evs (event.h; it reads the
 * entry's fields, lookup.c's and report.c's, and changes none): a single
 * alert when n is 1, a digest otherwise.  Lines end in CRLF (SMTP) or LF
 * (a local sendmail).  Returns -1 with err filled when the result could
 * not be built (out of memory).
 */
int	mail_compose(struct buf *out, const struct conf *,
	    struct event *const *evs, size_t n, time_t now, int crlf,
	    char *err, size_t errlen);

/* "<...>": derived from the entry ids only, so a retry reuses it. */
void	mail_message_id(struct buf *, const struct conf *,
	    struct event *const *evs, size_t n);

/* The bare address of "Name <addr>" or "addr", for the envelope. */
int	mail_addr_spec(const char *, char *dst, size_t dstlen);

/*
 * The alerts section as the alerter needs it: from, to, no line breaks.
 * A conf_check_fn: errors go through conf_fail(), as "file:line: option:".
 */
int	mail_check_conf(struct conf_ctx *, const struct conf *);

/* Helpers, exposed for the unit tests. */
int	mail_text_ok(const char *, size_t);
int	mail_display(struct buf *, const char *, size_t, int escaped);
void	mail_sanitize(struct buf *, const char *, size_t);
void	mail_duration(char *, size_t, long long ms);
void	mail_rfc3339(char *, size_t, long long t);
void	mail_date(char *, size_t, time_t);
void	mail_header_text(struct buf *, const char *name, const char *text,
	    size_t len, const char *eol);
void	mail_qp(struct buf *, const char *, size_t, const char *eol);

#endif
