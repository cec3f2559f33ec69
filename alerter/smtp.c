/*
 * smtp.c: mail to a relay over SMTP, with libcurl doing the protocol
 * (EHLO, STARTTLS, AUTH, dot-stuffing) and libev doing the waiting.
 *
 * libcurl's multi "socket" interface tells us which sockets to watch and
 * when to wake it (the two callbacks below); we tell it what happened
 * (curl_multi_socket_action).  Nothing here blocks: name resolution runs in
 * libcurl's resolver thread, and every transfer has alerts.smtp_timeout as
 * its deadline.  Connections are kept in the multi handle's cache, so a
 * digest every few seconds does not reconnect each time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "alerter.h"
#include "log.h"
#include "mail.h"
#include "transport.h"

struct transport_job {
	CURL			*easy;
	struct curl_slist	*rcpts;
	const char		*msg;	/* the batch's: outlives the job */
	size_t			 len, off;
	transport_done_fn	*done;
	void			*arg;
	char			 errbuf[CURL_ERROR_SIZE];
};

/* One per socket libcurl asks us to watch. */
struct smtp_sock {
	ev_io		 io;
};

static CURLM	*smtp_multi;
static ev_timer	 smtp_timer;

static void
smtp_check_done(void)
{
	struct transport_job	*job;
	CURLMsg		*m;
	CURLcode	 rc;
	char		*priv, why[CURL_ERROR_SIZE + 64];
	long		 code = 0;
	int		 left;

	while ((m = curl_multi_info_read(smtp_multi, &left)) != NULL) {
		if (m->msg != CURLMSG_DONE)
			continue;
		rc = m->data.result;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
		curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE,
		    &code);
		job = (struct transport_job *)priv;
		why[0] = '\0';
		if (rc != CURLE_OK)
			snprintf(why, sizeof(why), "%s%s%s (last reply %ld)",
			    curl_easy_strerror(rc), job->errbuf[0] ? ": " : "",
			    job->errbuf, code);
		curl_multi_remove_handle(smtp_multi, job->easy);
		job->done(job->arg, rc == CURLE_OK, why);
		curl_easy_cleanup(job->easy);
		curl_slist_free_all(job->rcpts);
		free(job);
	}
}

static void
smtp_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	int	 running, action = 0;

	(void)loop;
	if (revents & EV_READ)
		action |= CURL_CSELECT_IN;
	if (revents & EV_WRITE)
		action |= CURL_CSELECT_OUT;
	curl_multi_socket_action(smtp_multi, w->fd, action, &running);
	smtp_check_done();
}

static void
smtp_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	int	 running;

	(void)loop;
	(void)w;
	(void)revents;
	curl_multi_socket_action(smtp_multi, CURL_SOCKET_TIMEOUT, 0, &running);
	smtp_check_done();
}

/* CURLMOPT_SOCKETFUNCTION: watch s as libcurl says, or stop watching. */
static int
smtp_socket_fn(CURL *easy, curl_socket_t s, int what, void *userp,
    void *socketp)
{
	struct smtp_sock	*ss = socketp;
	int			 events = 0;

	(void)easy;
	(void)userp;
	if (what == CURL_POLL_REMOVE) {
		if (ss != NULL) {
			ev_io_stop(alerter.loop, &ss->io);
			free(ss);
			curl_multi_assign(smtp_multi, s, NULL);
		}
		return 0;
	}
	if (ss == NULL) {
		if ((ss = calloc(1, sizeof(*ss))) == NULL)
			return -1;	/* libcurl fails the transfer */
		curl_multi_assign(smtp_multi, s, ss);
	} else
		ev_io_stop(alerter.loop, &ss->io);
	if (what & CURL_POLL_IN)
		events |= EV_READ;
	if (what & CURL_POLL_OUT)
		events |= EV_WRITE;
	ev_io_init(&ss->io, smtp_io_cb, s, events);
	ev_io_start(alerter.loop, &ss->io);
	return 0;
}

/*
 * CURLMOPT_TIMERFUNCTION: libcurl wants to be called after timeout_ms (0:
 * as soon as possible, but not from inside this callback; -1: never).
 */
static int
smtp_timer_fn(CURLM *multi, long timeout_ms, void *userp)
{
	(void)multi;
	(void)userp;
	ev_timer_stop(alerter.loop, &smtp_timer);
	if (timeout_ms >= 0) {
		ev_timer_set(&smtp_timer, timeout_ms / 1000., 0.);
		ev_timer_start(alerter.loop, &smtp_timer);
	}
	return 0;
}

static size_t
smtp_read_fn(char *dst, size_t size, size_t nitems, void *userp)
{
	struct transport_job	*job = userp;
	size_t		 n = size * nitems;

	if (n > job->len - job->off)
		n = job->len - job->off;
	memcpy(dst, job->msg + job->off, n);
	job->off += n;
	return n;
}

int
smtp_init(char *err, size_t errlen)
{
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK ||
	    (smtp_multi = curl_multi_init()) == NULL) {
		snprintf(err, errlen, "libcurl: initialisation failed");
		return -1;
	}
	curl_multi_setopt(smtp_multi, CURLMOPT_SOCKETFUNCTION, smtp_socket_fn);
	curl_multi_setopt(smtp_multi, CURLMOPT_TIMERFUNCTION, smtp_timer_fn);
	ev_timer_init(&smtp_timer, smtp_timer_cb, 0., 0.);
	return 0;
}

void
smtp_free(void)
{
	if (smtp_multi == NULL)
		return;
	ev_timer_stop(alerter.loop, &smtp_timer);
	curl_multi_cleanup(smtp_multi);	/* closes cached connections */
	smtp_multi = NULL;
	curl_global_cleanup();
}

/* The EHLO name: our host name reduced to what a domain may contain. */
static void
smtp_ehlo_name(const struct conf *c, char *dst, size_t len)
{
	const char	*s;
	size_t		 o = 0;

	for (s = c->hostname; *s != '\0' && o + 1 < len; s++)
		if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		    (*s >= '0' && *s <= '9') || *s == '.' || *s == '-')
			dst[o++] = *s;
	if (o == 0)
		o = (size_t)snprintf(dst, len, "localhost");
	dst[o] = '\0';
}

int
smtp_url(const struct conf *c, char *dst, size_t len, char *err,
    size_t errlen)
{
	const char	*s = c->alerts_smtp, *colon, *p;
	char		 ehlo[256];
	int		 n;

	if (s == NULL) {
		snprintf(err, errlen, "not set");
		return -1;
	}
	for (p = s; *p != '\0'; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) {
			snprintf(err, errlen, "\"%s\" must not contain spaces "
			    "or control characters", s);
			return -1;
		}
	if (strstr(s, "://") != NULL) {
		if (strncmp(s, "smtp://", 7) != 0 &&
		    strncmp(s, "smtps://", 8) != 0) {
			snprintf(err, errlen, "\"%s\": only smtp:// and "
			    "smtps:// URLs are mail relays", s);
			return -1;
		}
		n = snprintf(dst, len, "%s", s);
	} else {
		/* host:port, [v6]:port, or a bare host for port 25. */
		colon = strrchr(s, ':');
		if (colon != NULL && s[0] == '[' && colon < strchr(s, ']'))
			colon = NULL;
		if (colon != NULL && (colon[1] == '\0' ||
		    strspn(colon + 1, "0123456789") != strlen(colon + 1) ||
		    atoi(colon + 1) < 1 || atoi(colon + 1) > 65535)) {
			snprintf(err, errlen, "\"%s\" is not host:port or an "
			    "smtp:// URL", s);
			return -1;
		}
		smtp_ehlo_name(c, ehlo, sizeof(ehlo));
		n = snprintf(dst, len, "smtp://%s%s/%s", s,
		    colon == NULL ? ":25" : "", ehlo);
	}
	if (n < 0 || (size_t)n >= len) {
		snprintf(err, errlen, "too long");
		return -1;
	}
	return 0;
}

int
smtp_check_conf(struct conf_ctx *cx, const struct conf *c)
{
	char	 url[1024], why[256];

	if (c->alerts_sendmail == NULL &&
	    smtp_url(c, url, sizeof(url), why, sizeof(why)) == -1)
		return conf_fail(cx, &c->alerts_smtp, "%s", why);
	if (c->alerts_sendmail == NULL && c->alerts_smtp_username != NULL &&
	    c->alerts_smtp_starttls != STARTTLS_YES &&
	    strncmp(c->alerts_smtp, "smtps://", 8) != 0)
		log_warn("event=config_warning note=\"alerts.smtp_username "
		    "without smtp_starttls: yes or smtps://: the password may "
		    "be sent unencrypted\"");
	return 0;
}

static struct curl_slist *
smtp_rcpts(char *const *rcpts, size_t n)
{
	struct curl_slist	*l = NULL, *t;
	char			 a[MAIL_ADDR_MAX + 3];
	size_t			 i;

	for (i = 0; i < n; i++) {
		snprintf(a, sizeof(a), "<%s>", rcpts[i]);
		if ((t = curl_slist_append(l, a)) == NULL) {
			curl_slist_free_all(l);
			return NULL;
		}
		l = t;
	}
	return l;
}

static struct transport_job *
smtp_send(const struct transport_msg *m, transport_done_fn *done, void *arg,
    char *err, size_t errlen)
{
	const struct conf	*c = alerter.conf;
	static const long	 tls[] = {
		[STARTTLS_NO] = CURLUSESSL_NONE,
		[STARTTLS_TRY] = CURLUSESSL_TRY,
		[STARTTLS_YES] = CURLUSESSL_ALL,
	};
	struct transport_job	*job;
	char			 url[1024], mfrom[MAIL_ADDR_MAX + 3];
	CURLMcode		 mc;

	if (smtp_url(c, url, sizeof(url), err, errlen) == -1)
		return NULL;
	if ((job = calloc(1, sizeof(*job))) == NULL ||
	    (job->easy = curl_easy_init()) == NULL ||
	    (job->rcpts = smtp_rcpts(m->rcpts, m->nrcpts)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	job->msg = m->data;
	job->len = m->len;
	job->done = done;
	job->arg = arg;
	snprintf(mfrom, sizeof(mfrom), "<%s>", m->from);

	curl_easy_setopt(job->easy, CURLOPT_URL, url);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(job->easy, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
#else
	curl_easy_setopt(job->easy, CURLOPT_PROTOCOLS,
	    (long)(CURLPROTO_SMTP | CURLPROTO_SMTPS));
#endif
	curl_easy_setopt(job->easy, CURLOPT_MAIL_FROM, mfrom);
	curl_easy_setopt(job->easy, CURLOPT_MAIL_RCPT, job->rcpts);
	curl_easy_setopt(job->easy, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(job->easy, CURLOPT_READFUNCTION, smtp_read_fn);
	curl_easy_setopt(job->easy, CURLOPT_READDATA, job);
	curl_easy_setopt(job->easy, CURLOPT_INFILESIZE_LARGE,
	    (curl_off_t)m->len);
	curl_easy_setopt(job->easy, CURLOPT_USE_SSL,
	    tls[c->alerts_smtp_starttls]);
	if (c->alerts_smtp_cafile != NULL)
		curl_easy_setopt(job->easy, CURLOPT_CAINFO,
		    c->alerts_smtp_cafile);
	if (c->alerts_smtp_username != NULL) {
		curl_easy_setopt(job->easy, CURLOPT_USERNAME,
		    c->alerts_smtp_username);
		curl_easy_setopt(job->easy, CURLOPT_PASSWORD,
		    c->alerts_smtp_password != NULL ?
		    c->alerts_smtp_password : "");
	}
	curl_easy_setopt(job->easy, CURLOPT_TIMEOUT_MS,
	    (long)c->alerts_smtp_timeout_ms);
	curl_easy_setopt(job->easy, CURLOPT_CONNECTTIMEOUT_MS,
	    (long)c->alerts_smtp_timeout_ms);
	curl_easy_setopt(job->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(job->easy, CURLOPT_ERRORBUFFER, job->errbuf);
	curl_easy_setopt(job->easy, CURLOPT_PRIVATE, (char *)job);

	if ((mc = curl_multi_add_handle(smtp_multi, job->easy)) != CURLM_OK) {
		snprintf(err, errlen, "libcurl: %s", curl_multi_strerror(mc));
		goto fail;
	}
	return job;
fail:
	if (job != NULL) {
		if (job->easy != NULL)
			curl_easy_cleanup(job->easy);
		curl_slist_free_all(job->rcpts);
		free(job);
	}
	return NULL;
}

static void
smtp_cancel(struct transport_job *job)
{
	if (job == NULL)
		return;
	curl_multi_remove_handle(smtp_multi, job->easy);
	curl_easy_cleanup(job->easy);
	curl_slist_free_all(job->rcpts);
	free(job);
}

const struct transport transport_smtp = {
	.name = "smtp",
	.crlf = 1,
	.send = smtp_send,
	.cancel = smtp_cancel,
};
