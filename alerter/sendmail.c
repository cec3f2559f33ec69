/*
 * sendmail.c: hand the message to a sendmail-compatible command instead of
 * an SMTP relay.  alerts.sendmail is the argument vector (no shell); the
 * message goes to its stdin with LF line ends, and exit status 0 is the
 * only acceptance.  alerts.smtp_timeout limits it like an SMTP transfer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alerter.h"
#include "log.h"

/* What a failing sendmail printed: enough to diagnose, one log value. */
#define SENDMAIL_OUTPUT_MAX	2048

int
sendmail_accepted(const char *what, const struct buf *out, char *why,
    size_t len)
{
	const char	*nl;
	int		 n = 0;

	if (what[0] == '\0')
		return 1;
	/* The first line of its output usually says it all. */
	if (out != NULL && out->len > 0) {
		nl = memchr(out->data, '\n', out->len);
		n = (int)(nl != NULL ? (size_t)(nl - out->data) : out->len);
	}
	/* Raw bytes: the caller quotes the reason for its log line. */
	snprintf(why, len, "sendmail %s%s%.*s", what, n > 0 ? ": " : "", n,
	    n > 0 ? out->data : "");
	return 0;
}

struct proc *
sendmail_send(const char *msg, size_t len,
    void (*done)(void *, const char *, const struct buf *, int), void *arg,
    char *err, size_t errlen)
{
	const struct conf	*c = alerter.conf;

	return proc_run(c->alerts_sendmail, NULL, msg, len,
	    SENDMAIL_OUTPUT_MAX, c->alerts_smtp_timeout_ms, done, arg, err,
	    errlen);
}

int
sendmail_check(const struct conf *c, char *err, size_t errlen)
{
	size_t	 i;

	if (c->alerts_sendmail == NULL)
		return 0;
	for (i = 1; c->alerts_sendmail[i] != NULL; i++)
		if (strcmp(c->alerts_sendmail[i], "-t") == 0)
			return 0;
	/* The recipients are in the headers only: without -t none is given. */
	snprintf(err, errlen, "%s: alerts.sendmail: needs -t (recipients are "
	    "taken from the message's To and Cc), e.g. [ /usr/sbin/sendmail, "
	    "-t, -oi ]", c->path);
	return -1;
}
