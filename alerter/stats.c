/*
 * stats.c: what the alerter counts, shown three ways: every counter for
 * the control socket's "stats" and the SIGUSR1 and exit log lines, the
 * state for "status", and the Prometheus page.  The counters live in
 * alerter.stats, bumped where they happen; the backlog is backlog.c's.
 */
#include <stdio.h>
#include <string.h>

#include "alerter.h"
#include "kv.h"
#include "metrics.h"

void
stats_kv(struct kv *kv)
{
	const struct alerter_stats	*st = &alerter.stats;
	char				 state[64];

	kv_u64(kv, "events_read", st->events_read);
	kv_u64(kv, "events_claimed", st->events_claimed);
	kv_u64(kv, "events_mailed", st->events_mailed);
	kv_u64(kv, "events_handed_over", st->events_handed);
	kv_u64(kv, "events_lost", st->events_lost);
	kv_u64(kv, "mails_sent", st->mails_sent);
	kv_u64(kv, "mails_failed", st->mails_failed);
	kv_u64(kv, "mails_retried", st->mails_retried);
	kv_u64(kv, "read_errors", st->read_errors);
	kv_u64(kv, "groups_made", st->groups_made);
	kv_str(kv, "redis", store_state(state, sizeof(state)));
	stream_stats(kv);
}

void
stats_status(struct kv *kv)
{
	const struct backlog	*b = backlog_last();
	char			 buf[1024];

	kv_str(kv, "layout", conf_layout_name(conf_layout(alerter.conf)));
	kv_str(kv, "redis", store_state(buf, sizeof(buf)));
	kv_str(kv, "redis_nodes", store_nodes(buf, sizeof(buf)));
	kv_str(kv, "consumer", alerter.conf->alerts_consumer);
	kv_u64(kv, "lease", lease_held());
	kv_u64(kv, "alerts_pending", b->pending);
	kv_u64(kv, "fail_policy", 0);	/* the alerter waits; it never guesses */
}

void
stats_metrics(struct metrics *m)
{
	const struct alerter_stats	*st = &alerter.stats;
	const struct backlog		*b = backlog_last();
	double				 age = 0;

	/*
	 * An entry id is Redis's clock at the crossing, this is ours (both
	 * wall clocks): a skew between the hosts shows as age, never below 0.
	 */
	if (b->oldest_ms != 0) {
		age = ev_now(alerter.loop) - b->oldest_ms / 1000.;
		if (age < 0)
			age = 0;
	}
	metrics_gauge(m, "senderwatch_redis_up",
	    "1 when every Redis node this daemon needs is connected.",
	    store_up());
	metrics_counter(m, "senderwatch_mails_sent_total",
	    "Alert mails accepted by the relay or sendmail.", st->mails_sent);
	metrics_counter(m, "senderwatch_mails_failed_total",
	    "Attempts to send an alert mail that failed (each is retried).",
	    st->mails_failed);
	metrics_counter(m, "senderwatch_mails_retried_total",
	    "Attempts after the first for the same mail.", st->mails_retried);
	metrics_gauge(m, "senderwatch_alerts_pending",
	    "Crossings not mailed yet: pending in the group plus unread "
	    "(every alerter reports the whole group's).", (double)b->pending);
	metrics_gauge(m, "senderwatch_alerts_oldest_pending_age_seconds",
	    "Age of the oldest crossing not mailed yet; 0 when none.", age);
	metrics_gauge(m, "senderwatch_alerts_sampled_time_seconds",
	    "When the two gauges above were sampled from Redis.",
	    b->sampled);
	metrics_counter(m, "senderwatch_events_read_total",
	    "Stream entries taken for mailing (claimed ones included).",
	    st->events_read);
	metrics_counter(m, "senderwatch_events_claimed_total",
	    "Entries taken over from an alerter idle past claim_idle.",
	    st->events_claimed);
	metrics_counter(m, "senderwatch_events_lost_total",
	    "Entries gone from the stream before they were mailed.",
	    st->events_lost);
	metrics_counter(m, "senderwatch_events_mailed_total",
	    "Entries mailed and acknowledged.", st->events_mailed);
	metrics_counter(m, "senderwatch_read_errors_total",
	    "Reads or acknowledgements Redis refused.", st->read_errors);
}
