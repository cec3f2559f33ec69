/*
 * main.c: senderwatch-alerter's life: options, config, privileges,
 * signals.  There is nothing to open as root, so privileges go right after
 * the pidfile, before Redis is dialled and before any command is run.
 *
 * SIGTERM lets a mail that is being sent finish (DRAIN_MAX_S at most), so
 * that a restart does not send it a second time; everything else simply
 * stays pending in Redis for the next run.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alerter.h"
#include "daemon.h"
#include "log.h"

#ifndef SW_VERSION
#define SW_VERSION	"dev"
#endif

struct alerter alerter;

static struct daemon_opts opts = {
	.name = "senderwatch-alerter",
	.conf_path = "/etc/senderwatch/config.yaml",
};
static int		 shutting_down;

/* What the alerter needs beyond what conf_load() checks for both. */
static int
check_conf(const struct conf *c, char *err, size_t errlen)
{
	char	 url[1024];

	if (mail_check_conf(c, err, errlen) == -1 ||
	    sendmail_check(c, err, errlen) == -1)
		return -1;
	if (c->alerts_sendmail == NULL &&
	    smtp_url(c, url, sizeof(url), err, errlen) == -1)
		return -1;
	return 0;
}

static void
warn_conf(const struct conf *c)
{
	if (c->alerts_sendmail == NULL && c->alerts_smtp_username != NULL &&
	    c->alerts_smtp_starttls != 2 &&
	    strncmp(c->alerts_smtp, "smtps://", 8) != 0)
		log_warn("event=config_warning note=\"alerts.smtp_username "
		    "without smtp_starttls: yes or smtps://: the password may "
		    "be sent unencrypted\"");
}

static void
log_stats(const char *event)
{
	const struct alerter_stats	*st = &alerter.stats;

	log_info("event=%s events_read=%llu events_claimed=%llu "
	    "events_mailed=%llu events_handed_over=%llu events_lost=%llu "
	    "mails_sent=%llu mails_failed=%llu", event,
	    (unsigned long long)st->events_read,
	    (unsigned long long)st->events_claimed,
	    (unsigned long long)st->events_mailed,
	    (unsigned long long)st->events_handed,
	    (unsigned long long)st->events_lost,
	    (unsigned long long)st->mails_sent,
	    (unsigned long long)st->mails_failed);
}

static void
reload(void)
{
	struct conf		*c;
	const struct conf	*old = alerter.conf;
	char			 err[CONF_ERRLEN];

	if ((c = conf_load(opts.conf_path, err, sizeof(err))) == NULL ||
	    check_conf(c, err, sizeof(err)) == -1) {
		log_err("event=reload_failed error=\"%s\" action=keep_old", err);
		conf_free(c);
		return;
	}
	alerter.conf = c;
	events_reload(old);
	conf_free((struct conf *)old);
	warn_conf(c);
	log_info("event=reload to=%zu cc=%zu via=%s", c->alerts_nto,
	    c->alerts_ncc, c->alerts_sendmail != NULL ? "sendmail" : "smtp");
}

static void
stop_loop(void)
{
	ev_break(alerter.loop, EVBREAK_ALL);
}

static void
signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)revents;
	switch (w->signum) {
	case SIGHUP:
		reload();
		break;
	case SIGUSR1:
		log_stats("stats");
		break;
	default:
		log_info("event=shutdown signal=%d", w->signum);
		if (shutting_down++)
			ev_break(loop, EVBREAK_ALL);	/* asked twice */
		else
			batch_drain(stop_loop);
		break;
	}
}

int
main(int argc, char *argv[])
{
	static ev_signal	 sigs[5];
	static const int	 signums[5] = { SIGTERM, SIGINT, SIGHUP,
				    SIGUSR1, SIGQUIT };
	struct conf		*c;
	char			 err[CONF_ERRLEN];
	int			 rc;
	size_t			 i;

	if (daemon_options(argc, argv, &opts, &rc) == -1)
		return rc;

	if ((c = conf_load(opts.conf_path, err, sizeof(err))) == NULL ||
	    check_conf(c, err, sizeof(err)) == -1) {
		fprintf(stderr, "senderwatch-alerter: %s\n", err);
		conf_free(c);
		return 1;
	}
	if (opts.check) {
		printf("%s: configuration OK (alerts to %zu, cc %zu, via %s)\n",
		    opts.conf_path, c->alerts_nto, c->alerts_ncc,
		    c->alerts_sendmail != NULL ? "sendmail" : "smtp");
		conf_free(c);
		return 0;
	}
	alerter.conf = c;
	log_init(opts.name, opts.foreground);
	log_set_verbose(opts.verbose);
	signal(SIGPIPE, SIG_IGN);

	/* The default loop: only it can watch children (ev_child). */
	alerter.loop = ev_default_loop(EVFLAG_AUTO);
	if (daemon_start(&opts, c, err, sizeof(err)) == -1) {
		log_err("event=fatal error=\"%s\"", err);
		fprintf(stderr, "senderwatch-alerter: %s\n", err);
		return 1;
	}
	if (smtp_init(err, sizeof(err)) == -1) {
		log_err("event=fatal error=\"%s\"", err);
		return 1;
	}

	for (i = 0; i < 5; i++) {
		ev_signal_init(&sigs[i], signal_cb, signums[i]);
		ev_signal_start(alerter.loop, &sigs[i]);
	}
	batch_init();
	if (events_init(err, sizeof(err)) == -1) {
		log_err("event=fatal error=\"%s\"", err);
		return 1;
	}
	warn_conf(c);
	daemon_ready();
	log_info("event=start version=%s config=%s redis=%s stream=%s "
	    "group=%s consumer=%s via=%s digest_wait_ms=%lld digest_max=%d",
	    SW_VERSION, opts.conf_path, c->redis_address, c->events_stream,
	    c->events_group, c->alerts_consumer,
	    c->alerts_sendmail != NULL ? "sendmail" : "smtp",
	    (long long)c->alerts_digest_wait_ms, c->alerts_digest_max);

	ev_run(alerter.loop, 0);

	/* Order matters: Redis callbacks still refer to the batch. */
	alerter.stopping = 1;
	events_disconnect();
	batch_free();
	events_free();
	smtp_free();
	log_stats("exit");
	if (opts.pid_path != NULL)
		unlink(opts.pid_path);
	conf_free((struct conf *)alerter.conf);
	ev_loop_destroy(alerter.loop);
	return 0;
}
