/*
 * sendmail.c: hand the message to a sendmail-compatible command instead of
 * an SMTP relay (transport.h).  alerts.sendmail is the argument vector (no
 * shell); the message goes to its stdin with LF line ends, and exit status
 * 0 is the only acceptance.  alerts.smtp_timeout limits it like an SMTP
 * transfer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alerter.h"
#include "log.h"
#include "transport.h"

/* What a failing sendmail printed: enough to diagnose, one log value. */
#define SENDMAIL_OUTPUT_MAX	2048

struct transport_job {
	struct proc		*proc;
	transport_done_fn	*done;
	void			*arg;
};

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

static void
sendmail_proc_done(void *arg, const char *what, const struct buf *out,
    int truncated)
{
	struct transport_job	*job = arg;
	transport_done_fn	*done = job->done;
	void			*darg = job->arg;
	char			 why[512];
	int			 ok;

	(void)truncated;
	ok = sendmail_accepted(what, out, why, sizeof(why));
	free(job);
	done(darg, ok, why);
}

static struct transport_job *
sendmail_send(const struct transport_msg *m, transport_done_fn *done,
    void *arg, char *err, size_t errlen)
{
	const struct conf	*c = alerter.conf;
	struct transport_job	*job;

	if ((job = calloc(1, sizeof(*job))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	job->done = done;
	job->arg = arg;
	/* The recipients are in the message's headers: sendmail -t. */
	if ((job->proc = proc_run(c->alerts_sendmail, NULL, m->data, m->len,
	    SENDMAIL_OUTPUT_MAX, c->alerts_smtp_timeout_ms, sendmail_proc_done,
	    job, err, errlen)) == NULL) {
		free(job);
		return NULL;
	}
	return job;
}

static void
sendmail_cancel(struct transport_job *job)
{
	if (job == NULL)
		return;
	proc_cancel(job->proc);
	free(job);
}

int
sendmail_check_conf(struct conf_ctx *cx, const struct conf *c)
{
	size_t	 i;

	if (c->alerts_sendmail == NULL)
		return 0;
	for (i = 1; c->alerts_sendmail[i] != NULL; i++)
		if (strcmp(c->alerts_sendmail[i], "-t") == 0)
			return 0;
	/* The recipients are in the headers only: without -t none is given. */
	return conf_fail(cx, &c->alerts_sendmail, "needs -t (recipients are "
	    "taken from the message's To and Cc), e.g. [ /usr/sbin/sendmail, "
	    "-t, -oi ]");
}

const struct transport transport_sendmail = {
	.name = "sendmail",
	.crlf = 0,
	.send = sendmail_send,
	.cancel = sendmail_cancel,
};
