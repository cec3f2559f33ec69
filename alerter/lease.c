/*
 * lease.c: one process per consumer name.
 *
 * Two alerters that share a consumer name share its pending list, so each
 * would mail what the other is sending.  So reading waits for a lease,
 * PREFIX:alerter:CONSUMER (common/keyspace.h) holding "HOST PID", that we
 * renew every poll (stream.c's timer) and that lapses LEASE_MS after its
 * holder stops renewing (scripts/lease.lua).  A lease held by this host's
 * earlier process (its pid gone: a crash or a restart) is taken over at
 * once; one held by a live process is not, and says so in the log until
 * that alerter goes away.  If the lease itself is refused by an ACL, we
 * read anyway: a guard must not stop the alerts.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alerter.h"
#include "keyspace.h"
#include "log.h"
#include "rconn.h"
#include "script.h"

#define LEASE_MS	3000	/* a consumer-name lease lapses after this */
#define LEASE_LOG_S	60.0	/* repeat "name in use" this often */

static struct {
	char		*key;
	unsigned	 slot;		/* the key's, for a Cluster */
	char		 me[320];	/* "host pid" */
	char		 stale[320];	/* our dead process's, or "" */
	int		 held;		/* ours: reading may go on */
	int		 busy;		/* a lease call in flight */
	ev_tstamp	 logged;	/* last "name in use" line */
} lease;

/* Is holder "HOST PID" a process of this host that no longer runs? */
static struct log_limit warn_lease = { .event = "lease_failed", .warn = 1 };

static int
lease_holder_gone(const char *holder, size_t len)
{
	/* "HOST " is ours up to and with the space. */
	size_t	 hlen = strchr(lease.me, ' ') + 1 - lease.me;
	char	 num[24], *end;
	long	 pid;

	if (len <= hlen || len - hlen >= sizeof(num) ||
	    memcmp(holder, lease.me, hlen) != 0)
		return 0;
	memcpy(num, holder + hlen, len - hlen);
	num[len - hlen] = '\0';
	pid = strtol(num, &end, 10);
	return *end == '\0' && pid > 0 && kill((pid_t)pid, 0) == -1 &&
	    errno == ESRCH;
}

static void
lease_cb(void *priv, redisReply *reply)
{
	const char	*consumer = alerter.conf->alerts_consumer;
	char		 q[sizeof(lease.me) * 4];
	ev_tstamp	 now = ev_now(alerter.loop);

	(void)priv;
	lease.busy = 0;
	if (reply == NULL || alerter.stopping) {
		lease.held = 0;	/* taken again before reading on reconnect */
		return;
	}
	if (reply->type == REDIS_REPLY_ERROR) {
		/*
		 * An ACL that refuses the lease: a guard must not stop the
		 * alerts, read anyway.  Anything else (a full Redis, a replica,
		 * loading) is a passing state: wait, and try again at the poll.
		 */
		if (rconn_error_kind(reply) == RERR_NOPERM) {
			if (!lease.held)
				log_warn("event=lease_failed key=%s reason=\"%s\" "
				    "action=read_anyway", lease.key, reply->str);
			lease.held = 1;
			stream_kick();
		} else {
			/* Said every time it lasts, not only when it began. */
			log_limited(alerter.loop, &warn_lease, "key=%s "
			    "reason=\"%s\" action=wait", lease.key, reply->str);
			lease.held = 0;
		}
		return;
	}
	if (reply->type != REDIS_REPLY_STRING)
		return;
	if (reply->len == 0) {
		lease.stale[0] = '\0';
		if (!lease.held) {
			if (lease.logged > 0)
				log_info("event=consumer_free consumer=%s",
				    consumer);
			lease.logged = 0;
			lease.held = 1;
			stream_kick();
		}
		return;
	}
	lease.held = 0;
	if (lease_holder_gone(reply->str, reply->len) &&
	    reply->len < sizeof(lease.stale)) {
		/* Our own earlier process: take its lease over now. */
		memcpy(lease.stale, reply->str, reply->len);
		lease.stale[reply->len] = '\0';
		lease_kick();
		return;
	}
	if (lease.logged == 0 || now - lease.logged >= LEASE_LOG_S) {
		lease.logged = now;
		log_err("event=consumer_in_use consumer=%s holder=\"%s\" "
		    "reason=\"another alerter reads as this consumer: give "
		    "each alerter its own alerts.consumer\" action=wait",
		    consumer, log_quote(q, sizeof(q), reply->str, reply->len));
	}
}

void
lease_kick(void)
{
	const char	*argv[5];
	char		 ttl[24];

	if (alerter.stopping || !store_ready() || lease.busy)
		return;
	snprintf(ttl, sizeof(ttl), "%d", LEASE_MS);
	argv[0] = "1";
	argv[1] = lease.key;
	argv[2] = lease.me;
	argv[3] = ttl;
	argv[4] = lease.stale;
	if (store_script(lease.slot, SCRIPT_LEASE, lease_cb, NULL, 5, argv) ==
	    0)
		lease.busy = 1;
}

void
lease_connected(void)
{
	lease.held = lease.busy = 0;
}

int
lease_held(void)
{
	return lease.held;
}

int
lease_init(char *err, size_t errlen)
{
	char	 host[256];

	if (gethostname(host, sizeof(host)) == -1)
		snprintf(host, sizeof(host), "unknown");
	host[sizeof(host) - 1] = '\0';
	snprintf(lease.me, sizeof(lease.me), "%s %ld", host, (long)getpid());
	if ((lease.key = keyspace_lease_key(alerter.conf,
	    alerter.conf->alerts_consumer)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	lease.slot = keyspace_slot(lease.key, strlen(lease.key));
	return 0;
}

void
lease_free(void)
{
	log_limit_stop(&warn_lease);
	free(lease.key);
	lease.key = NULL;
}
