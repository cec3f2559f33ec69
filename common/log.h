/*
 * log.h: key=value log lines, to syslog (LOG_MAIL) or to stderr when the
 * daemon runs in the foreground; and rate-limited lines for anything that
 * can repeat (one client, one outage or one flood must not flood syslog).
 */
#ifndef SW_LOG_H
#define SW_LOG_H

#include <stddef.h>
#include <stdint.h>

#include <ev.h>

void	log_init(const char *ident, int foreground);
void	log_set_verbose(int);
int	log_verbose(void);
/* 1: info and debug lines are not written (senderwatch-ctl's stderr). */
void	log_set_quiet(int);

/* Each takes a printf format that should produce key=value pairs. */
void	log_err(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_warn(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_info(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_debug(const char *, ...) __attribute__((format(printf, 1, 2)));

/*
 * Quote an untrusted byte string for a log value in double quotes:
 * printable ASCII and spaces are kept, everything else (and " and \)
 * becomes \xNN, so one client can't forge log lines or end the value.
 * Truncated to fit; returns dst.
 */
char	*log_quote(char *dst, size_t dstlen, const char *src, size_t srclen);

/*
 * A line that can repeat: "event=EVENT ..." at most once a period.  The
 * first is logged at once; the rest are counted, and the count is logged
 * with the next one a period on, or by a timer when the flood has stopped,
 * so the last burst is never silent.  Static storage, zero-initialised but
 * for the designated fields:
 *
 *	static struct log_limit lim = { .event = "bad_request", .warn = 1 };
 */
struct log_limit {
	const char	*event;
	int		 warn;		/* 1 warning, 0 error */
	double		 period;	/* seconds; 0 means 10 */
	ev_tstamp	 last;
	uint64_t	 suppressed;
	char		 msg[512];	/* the last one suppressed */
	struct ev_loop	*loop;
	ev_timer	 flush;
};

void	log_limited(struct ev_loop *, struct log_limit *, const char *, ...)
	    __attribute__((format(printf, 3, 4)));
/* Stop its timer (at exit), logging what it still holds. */
void	log_limit_stop(struct log_limit *);

#endif
