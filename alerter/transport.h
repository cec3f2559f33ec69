/*
 * transport.h: how a composed alert mail leaves: one interface, two
 * transports.  batch.c picks one for the config and never knows which.
 *
 *   smtp.c      SMTP to a relay through libcurl's multi interface on the
 *               loop (STARTTLS, AUTH, timeouts)
 *   sendmail.c  a sendmail-compatible command, argv only, the message on
 *               its stdin
 *
 * send() starts a transfer and returns a job, or NULL with err filled;
 * exactly one done(arg, ok, why) follows for a job, unless it is
 * cancel()ed first.  ok means the mail was accepted (SMTP 250 after DATA,
 * or sendmail exiting 0); why says why not, raw (the caller quotes it).
 */
#ifndef SW_TRANSPORT_H
#define SW_TRANSPORT_H

#include <stddef.h>

#include "buf.h"
#include "conf.h"

struct transport_job;

struct transport_msg {
	const char	*data;		/* the message, lines as crlf says */
	size_t		 len;
	const char	*from;		/* envelope sender */
	char *const	*rcpts;		/* envelope recipients */
	size_t		 nrcpts;
};

typedef void	transport_done_fn(void *arg, int ok, const char *why);

struct transport {
	const char	*name;		/* "smtp", "sendmail": for logs */
	int		 crlf;		/* lines end in CRLF (else LF) */
	struct transport_job *(*send)(const struct transport_msg *,
			    transport_done_fn *, void *arg, char *err,
			    size_t errlen);
	void		(*cancel)(struct transport_job *);
};

extern const struct transport transport_smtp;
extern const struct transport transport_sendmail;

/* The transport a config asks for. */
const struct transport *transport_for(const struct conf *);

/* Each transport's config checks (conf_check_fn); both run for any. */
int	smtp_check_conf(struct conf_ctx *, const struct conf *);
int	sendmail_check_conf(struct conf_ctx *, const struct conf *);

/* smtp.c's libcurl state, for the life of the process. */
int	smtp_init(char *err, size_t errlen);
void	smtp_free(void);
/* alerts.smtp as the URL libcurl takes, or -1 with why. */
int	smtp_url(const struct conf *, char *dst, size_t dstlen, char *why,
	    size_t whylen);

/* From a sendmail run's outcome: 1 when accepted, else 0 and why. */
int	sendmail_accepted(const char *what, const struct buf *out, char *why,
	    size_t len);

#endif
