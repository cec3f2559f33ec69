/*
 * log.c: logging for both daemons.  Lines are "level=... key=value ...";
 * syslog adds the time and pid, stderr gets a timestamp of its own.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include "log.h"

static int	 log_foreground = 1;
static int	 log_verbosity;
static const char *log_ident = "senderwatch";

void
log_init(const char *ident, int foreground)
{
	log_ident = ident;
	log_foreground = foreground;
	if (!foreground)
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
}

void
log_set_verbose(int v)
{
	log_verbosity = v;
}

int
log_verbose(void)
{
	return log_verbosity;
}

static void
log_vwrite(int pri, const char *level, const char *fmt, va_list ap)
{
	char		 msg[2048];
	char		 ts[32];
	struct timespec	 now;
	struct tm	 tm;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (!log_foreground) {
		syslog(pri, "level=%s %s", level, msg);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ldZ %s level=%s %s\n", ts,
	    now.tv_nsec / 1000000, log_ident, level, msg);
}

#define LOG_FN(name, pri, level, cond)				\
void								\
name(const char *fmt, ...)					\
{								\
	va_list	 ap;						\
								\
	if (!(cond))						\
		return;						\
	va_start(ap, fmt);					\
	log_vwrite(pri, level, fmt, ap);			\
	va_end(ap);						\
}

LOG_FN(log_err, LOG_ERR, "error", 1)
LOG_FN(log_warn, LOG_WARNING, "warning", 1)
LOG_FN(log_info, LOG_INFO, "info", 1)
LOG_FN(log_debug, LOG_DEBUG, "debug", log_verbosity > 0)

char *
log_quote(char *dst, size_t dstlen, const char *src, size_t srclen)
{
	static const char hex[] = "0123456789abcdef";
	size_t		 i, o = 0;
	unsigned char	 c;

	if (dstlen == 0)
		return dst;
	for (i = 0; i < srclen; i++) {
		c = (unsigned char)src[i];
		if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
			if (o + 1 >= dstlen)
				break;
			dst[o++] = (char)c;
		} else {
			if (o + 4 >= dstlen)
				break;
			dst[o++] = '\\';
			dst[o++] = 'x';
			dst[o++] = hex[c >> 4];
			dst[o++] = hex[c & 15];
		}
	}
	dst[o] = '\0';
	return dst;
}
