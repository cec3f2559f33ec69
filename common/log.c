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
static int	 log_quiet;		/* a command-line tool's: no info */
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
LOG_FN(log_info, LOG_INFO, "info", !log_quiet)
LOG_FN(log_debug, LOG_DEBUG, "debug", log_verbosity > 0 && !log_quiet)

void
log_set_quiet(int q)
{
	log_quiet = q;
}

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

static void
log_limit_write(struct log_limit *l, const char *msg)
{
	if (l->suppressed > 0) {
		if (l->warn)
			log_warn("event=%s %s suppressed=%llu", l->event, msg,
			    (unsigned long long)l->suppressed);
		else
			log_err("event=%s %s suppressed=%llu", l->event, msg,
			    (unsigned long long)l->suppressed);
	} else if (l->warn)
		log_warn("event=%s %s", l->event, msg);
	else
		log_err("event=%s %s", l->event, msg);
	l->suppressed = 0;
}

static void
log_limit_flush_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct log_limit	*l = w->data;

	(void)revents;
	if (l->suppressed == 0)
		return;
	log_limit_write(l, l->msg);
	l->last = ev_now(loop);
}

void
log_limited(struct ev_loop *loop, struct log_limit *l, const char *fmt, ...)
{
	ev_tstamp	 now = ev_now(loop), period = l->period > 0 ?
			    l->period : 10.;
	char		 msg[sizeof(l->msg)];
	va_list		 ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (l->loop == NULL) {
		l->loop = loop;
		ev_timer_init(&l->flush, log_limit_flush_cb, 0., 0.);
		l->flush.data = l;
	}
	if (l->last != 0 && now - l->last < period) {
		memcpy(l->msg, msg, sizeof(l->msg));
		if (l->suppressed++ == 0) {
			ev_timer_set(&l->flush, period - (now - l->last), 0.);
			ev_timer_start(loop, &l->flush);
		}
		return;
	}
	ev_timer_stop(loop, &l->flush);
	log_limit_write(l, msg);
	l->last = now;
}

void
log_limit_stop(struct log_limit *l)
{
	if (l->loop == NULL)
		return;
	ev_timer_stop(l->loop, &l->flush);
	if (l->suppressed > 0)
		log_limit_write(l, l->msg);
}
