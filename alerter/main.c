/*
 * main.c: senderwatch-alerter's hooks into the daemon life that
 * common/daemon.c runs.  There is nothing to open as root, so privileges
 * go right after the pidfile, before Redis is dialled and before any
 * command is run.
 *
 * SIGTERM lets a mail that is being sent finish (batch_drain), so that a
 * restart does not send it a second time; everything else simply stays
 * pending in Redis for the next run.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alerter.h"
#include "daemon.h"
#include "log.h"
#include "mail.h"
#include "transport.h"

#ifndef SW_VERSION
#define SW_VERSION	"dev"
#endif

struct alerter alerter;

static struct daemon_opts opts = {
	.name = "senderwatch-alerter",
	.role = ROLE_ALERTER,
	.conf_path = SW_SYSCONFDIR "/senderwatch/config.yaml",
};
static struct ev_loop	*alerter_loop;

/* What the alerter needs beyond what conf_load() checks for both. */
static int
alerter_check(struct conf_ctx *cx, const struct conf *c)
{
	if (mail_check_conf(cx, c) == -1 ||
	    sendmail_check_conf(cx, c) == -1 ||
	    smtp_check_conf(cx, c) == -1)
		return -1;
	return 0;
}

static void
alerter_checked(const struct conf *c)
{
	printf("%s: configuration OK (alerts to %zu, cc %zu, via %s)\n",
	    c->path, c->alerts_nto, c->alerts_ncc, transport_for(c)->name);
}

static void
alerter_reload(struct conf *c)
{
	const struct conf	*old = alerter.conf;

	alerter.conf = c;
	store_reload(old);
	stream_reload(old);
	conf_free((struct conf *)old);
	log_info("event=reload to=%zu cc=%zu via=%s", c->alerts_nto,
	    c->alerts_ncc, transport_for(c)->name);
}

static int
alerter_open(struct ev_loop *loop, struct conf *c, char *err, size_t errlen)
{
	(void)err;
	(void)errlen;
	alerter_loop = alerter.loop = loop;
	alerter.conf = c;
	return 0;
}

static int
alerter_start(char *err, size_t errlen)
{
	const struct conf	*c = alerter.conf;

	if (smtp_init(err, errlen) == -1 || lease_init(err, errlen) == -1 ||
	    batch_init(err, errlen) == -1 || store_init(err, errlen) == -1 ||
	    backlog_init(err, errlen) == -1)
		return -1;
	log_info("event=start version=%s config=%s layout=%s redis=%s "
	    "stream=%s group=%s consumer=%s via=%s digest_wait_ms=%lld "
	    "digest_max=%d", SW_VERSION, c->path,
	    conf_layout_name(conf_layout(c)), conf_redis_name(c),
	    c->events_stream,
	    c->events_group, c->alerts_consumer, transport_for(c)->name,
	    (long long)c->alerts_digest_wait_ms, c->alerts_digest_max);
	return 0;
}

static void
alerter_break(void)
{
	ev_break(alerter_loop, EVBREAK_ALL);
}

static void
alerter_stop(struct ev_loop *loop)
{
	(void)loop;
	batch_drain(alerter_break);
}

static void
alerter_exit(void)
{
	if (alerter.loop == NULL) {
		conf_free((struct conf *)alerter.conf);
		return;
	}
	/* Order matters: Redis callbacks still refer to the batch. */
	alerter.stopping = 1;
	store_close();
	backlog_free();
	batch_free();
	stream_free();
	lease_free();
	smtp_free();
	daemon_log_stats("exit");
	conf_free((struct conf *)alerter.conf);
	alerter.conf = NULL;
}

static const struct daemon_hooks alerter_hooks = {
	.check = alerter_check,
	.checked = alerter_checked,
	.open = alerter_open,
	.start = alerter_start,
	.reload = alerter_reload,
	.stats = stats_kv,
	.status = stats_status,
	.metrics = stats_metrics,
	.stop = alerter_stop,
	.exit = alerter_exit,
};

int
main(int argc, char *argv[])
{
	return daemon_main(argc, argv, &opts, &alerter_hooks);
}
