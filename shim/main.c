/*
 * main.c: senderwatch-shim's life: options, config, sockets, privileges,
 * signals.  The order matters: sockets and the pidfile are opened while
 * still root, then privileges go, then Redis is dialled.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"
#include "rconn.h"
#include "shim.h"

#ifndef SW_VERSION
#define SW_VERSION	"dev"
#endif

struct shim shim;

static struct daemon_opts opts = {
	.name = "senderwatch-shim",
	.conf_path = "/etc/senderwatch/config.yaml",
};

static void
redis_ready(struct rconn *rc, void *arg)
{
	(void)rc;
	(void)arg;
	script_ready();
}

/*
 * No "down" callback: requests in flight get NULL replies from hiredis and
 * new ones are answered by the fail policy while rconn is not ready.
 */
static const struct rconn_cb redis_cb = { redis_ready, NULL };

static void
log_stats(const char *event)
{
	const struct shim_stats	*st = &shim.stats;

	log_info("event=%s decisions=%llu yes=%llu fail_policy=%llu "
	    "bad_requests=%llu client_timeouts=%llu crossings=%llu "
	    "listed=%llu sessions=%u", event,
	    (unsigned long long)st->decisions, (unsigned long long)st->yes,
	    (unsigned long long)st->fail_policy,
	    (unsigned long long)st->bad_requests,
	    (unsigned long long)st->client_timeouts,
	    (unsigned long long)st->crossings,
	    (unsigned long long)st->listed, shim.nsessions);
}

static int
same_listen(const struct conf *a, const struct conf *b)
{
	size_t	 i;

	if (a->nlisten != b->nlisten || a->socket_mode != b->socket_mode)
		return 0;
	for (i = 0; i < a->nlisten; i++)
		if (strcmp(a->listen[i].addr, b->listen[i].addr) != 0)
			return 0;
	return 1;
}

/*
 * A config replaced by a reload, kept while sessions may still use its
 * rules.  Listed, so that an exit before the delay frees it too.
 */
struct retired {
	struct conf	*conf;
	ev_timer	 timer;
	struct retired	*next;
};

static struct retired	*retired;

static void
retired_free(struct retired *r)
{
	struct retired	**pp;

	for (pp = &retired; *pp != r; pp = &(*pp)->next)
		;
	*pp = r->next;
	ev_timer_stop(shim.loop, &r->timer);
	conf_free(r->conf);
	free(r);
}

static void
retired_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	retired_free(w->data);
}

static void
reload(void)
{
	struct conf	*c;
	const struct conf *old = shim.conf;
	struct retired	*r;
	char		 err[CONF_ERRLEN];

	if ((c = conf_load(opts.conf_path, err, sizeof(err))) == NULL) {
		log_err("event=reload_failed error=\"%s\" action=keep_old", err);
		return;
	}
	if (!same_listen(old, c))
		log_warn("event=reload note=\"listen and socket settings "
		    "take effect at restart\"");
	rconn_set_conf(shim.redis, c);
	shim.conf = c;
	/*
	 * Sessions waiting on Redis still point at the old rules, for at
	 * most the old redis.timeout: free the old config after that.
	 */
	if ((r = malloc(sizeof(*r))) == NULL)
		return;		/* kept for ever: better than freed too soon */
	r->conf = (struct conf *)old;
	r->next = retired;
	retired = r;
	ev_timer_init(&r->timer, retired_cb,
	    old->redis_timeout_ms / 1000. + 1., 0.);
	r->timer.data = r;
	ev_timer_start(shim.loop, &r->timer);
	log_info("event=reload rules=%zu", c->nrules);
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
		ev_break(loop, EVBREAK_ALL);
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
	if ((c = conf_load(opts.conf_path, err, sizeof(err))) == NULL) {
		fprintf(stderr, "senderwatch-shim: %s\n", err);
		return 1;
	}
	if (opts.check) {
		printf("%s: configuration OK (%zu rules)\n", opts.conf_path,
		    c->nrules);
		conf_free(c);
		return 0;
	}
	if (c->nlisten == 0) {
		fprintf(stderr, "senderwatch-shim: %s: shim.listen: no "
		    "address to listen on\n", opts.conf_path);
		return 1;
	}
	shim.conf = c;
	log_init(opts.name, opts.foreground);
	log_set_verbose(opts.verbose);
	signal(SIGPIPE, SIG_IGN);

	shim.loop = ev_default_loop(EVFLAG_AUTO);
	if (listener_open(c, err, sizeof(err)) == -1) {
		fprintf(stderr, "senderwatch-shim: %s\n", err);
		listener_close();
		return 1;
	}
	if (daemon_start(&opts, c, err, sizeof(err)) == -1) {
		log_err("event=fatal error=\"%s\"", err);
		fprintf(stderr, "senderwatch-shim: %s\n", err);
		listener_close();
		return 1;
	}

	for (i = 0; i < 5; i++) {
		ev_signal_init(&sigs[i], signal_cb, signums[i]);
		ev_signal_start(shim.loop, &sigs[i]);
	}
	shim.redis = rconn_new(shim.loop, c, "shim", &redis_cb, NULL,
	    /* a hung server: drop after this many seconds without a reply */
	    c->redis_timeout_ms * 20 / 1000. > 1. ?
	    c->redis_timeout_ms * 20 / 1000. : 1.);
	if (shim.redis == NULL) {
		log_err("event=fatal error=\"out of memory\"");
		return 1;
	}
	listener_start();
	daemon_ready();
	log_info("event=start version=%s config=%s rules=%zu redis=%s "
	    "timeout_ms=%lld on_error=%s", SW_VERSION, opts.conf_path,
	    c->nrules, c->redis_address, (long long)c->redis_timeout_ms,
	    c->redis_on_error);

	ev_run(shim.loop, 0);

	log_stats("exit");
	listener_close();
	session_shutdown_all();
	rconn_free(shim.redis);
	while (retired != NULL)
		retired_free(retired);
	if (opts.pid_path != NULL)
		unlink(opts.pid_path);
	conf_free((struct conf *)shim.conf);
	ev_loop_destroy(shim.loop);
	return 0;
}
