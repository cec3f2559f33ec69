/*
 * log.h: key=value log lines, to syslog (LOG_MAIL) or to stderr when the
 * daemon runs in the foreground.
 */
#ifndef SW_LOG_H
#define SW_LOG_H

#include <stddef.h>

void	log_init(const char *ident, int foreground);
void	log_set_verbose(int);
int	log_verbose(void);

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

#endif
