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

struct conf;

#define MAIL_ADDR_MAX	320	/* RFC 5321: 64 + @ + 255 */

struct mail_subject {
	const char	*text;		/* raw bytes, as the MTA reported them */
	size_t		 len;
	long long	 count;
};

/* One threshold crossing, as read from the stream and Redis. */
struct mail_event {
	const char	*id;		/* stream entry id */
	const char	*rule;
	const char	*key;		/* %XX-escaped, as in the Redis key name */
	size_t		 key_len;
	const char	*host;		/* the MTA that saw the crossing */
	long long	 count;		/* -1 for unknown, likewise below */
	long long	 limit;
	long long	 window_ms;
	long long	 time;		/* unix seconds of the crossing */
	const char	*algorithm;	/* fixed, sliding, gcra; NULL: fixed */
	int		 shadow;	/* the rule counts but never refuses */
	/*
	 * The counter as the mail is composed (fixed windows only): count_now
	 * -1 with ttl_ms -2 means it has expired, ttl_ms -1 means unknown.
	 */
	long long	 count_now;
	long long	 ttl_ms;
	const struct mail_subject *subjects;	/* most frequent first */
	size_t		 nsubjects;
	const char	*report;	/* raw output of the report command */
	size_t		 report_len;
	const char	*report_note;	/* "exit 1", "timed out"... or NULL */
};

/*
 * Compose one message for n events: a single alert when n is 1, a digest
 * otherwise.  Lines end in CRLF (SMTP) or LF (a local sendmail).  Returns
 * -1 with err filled when the result could not be built (out of memory).
 */
int	mail_compose(struct buf *out, const struct conf *,
	    const struct mail_event *, size_t n, time_t now, int crlf,
	    char *err, size_t errlen);

/* "<...>": derived from the entry ids only, so a retry reuses it. */
void	mail_message_id(struct buf *, const struct conf *,
	    const struct mail_event *, size_t n);

/* The bare address of "Name <addr>" or "addr", for the envelope. */
int	mail_addr_spec(const char *, char *dst, size_t dstlen);

/* The alerts section as the alerter needs it: from, to, no line breaks. */
int	mail_check_conf(const struct conf *, char *err, size_t errlen);

/* Helpers, exposed for the unit tests. */
size_t	mail_unescape(char *dst, const char *src, size_t len);
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
