/*
 * stats.c: what the shim counts, shown three ways: every counter for the
 * control socket's "stats" and the SIGUSR1 and exit log lines, the state
 * for "status", and the Prometheus page.  Most counters live in
 * shim.stats, bumped where they happen; the answers by rule and the
 * latency histogram are kept here.
 *
 * Rules come and go with reloads, and a metric's series must not vanish
 * or restart while the process lives: a rule's counters are kept by name
 * for the process's lifetime (rules are few; the config bounds them).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "ovcache.h"
#include "cluster.h"
#include "conf.h"
#include "kv.h"
#include "metrics.h"
#include "rconn.h"
#include "script.h"
#include "shim.h"

struct stats_rule {
	char		 name[CONF_NAME_MAX];
	uint64_t	 answers[2];	/* no, yes */
};

static struct stats_rule	*stats_rules;
static size_t			 stats_nrules, stats_last;
static struct metrics_hist	 stats_latency;

static struct stats_rule *
stats_rule(const struct conf_rule *r)
{
	struct stats_rule	*n;
	size_t			 i;

	/* Most requests name the rule the last one did. */
	if (stats_last < stats_nrules &&
	    strcmp(stats_rules[stats_last].name, r->name) == 0)
		return &stats_rules[stats_last];
	for (i = 0; i < stats_nrules; i++)
		if (strcmp(stats_rules[i].name, r->name) == 0)
			return &stats_rules[stats_last = i];
	if ((n = realloc(stats_rules, (stats_nrules + 1) * sizeof(*n))) ==
	    NULL)
		return NULL;	/* uncounted by rule; shim.stats still has it */
	stats_rules = n;
	n = &stats_rules[stats_last = stats_nrules++];
	memset(n, 0, sizeof(*n));
	snprintf(n->name, sizeof(n->name), "%s", r->name);
	return n;
}

void
stats_answered(const struct conf_rule *r, int yes, ev_tstamp asked)
{
	struct stats_rule	*sr;

	if (r != NULL && (sr = stats_rule(r)) != NULL)
		sr->answers[yes != 0]++;
	stats_waited(asked);
}

void
stats_waited(ev_tstamp asked)
{
	double	 d;

	if (asked <= 0)
		return;
	d = ev_time() - asked;
	metrics_hist_observe(&stats_latency, d > 0 ? d : 0);
}

void
stats_free(void)
{
	free(stats_rules);
	stats_rules = NULL;
	stats_nrules = stats_last = 0;
}

static const char *
stats_redis_state(char *buf, size_t len)
{
	if (shim.cluster != NULL)
		return cluster_state(shim.cluster, buf, len);
	return shim.redis != NULL ? rconn_state(shim.redis) : "down";
}

static unsigned long
stats_script_loads(void)
{
	if (shim.cluster != NULL)
		return cluster_script_loads(shim.cluster);
	return shim.scripts != NULL ? script_conn_loads(shim.scripts) : 0;
}

/*
 * What the near cache counted that is not in Redis yet: a cost is either
 * in its entry, waiting for the next flush, or in a flush awaiting its
 * reply (back in an entry if that failed, or lost), so 0 means nothing
 * more will be sent.  Keys plus flushes: a key can be in both.
 */
static unsigned long
stats_near_unsent(void)
{
	return cache_stats()->dirty + decide_flushes_out();
}

static int
stats_redis_up(void)
{
	if (shim.cluster != NULL)
		return cluster_up(shim.cluster);
	return shim.redis != NULL && rconn_is_ready(shim.redis);
}

void
stats_kv(struct kv *kv)
{
	const struct shim_stats	*st = &shim.stats;
	char			 name[48], state[64];
	int			 i;

	kv_u64(kv, "decisions", st->decisions);
	kv_u64(kv, "yes", st->yes);
	kv_u64(kv, "fail_policy", st->fail_policy);
	for (i = FAIL_NONE + 1; i < FAIL_MAX; i++)
		if (st->fail[i] > 0) {
			snprintf(name, sizeof(name), "fail_%s",
			    fail_reason_names[i]);
			kv_u64(kv, name, st->fail[i]);
		}
	kv_u64(kv, "bad_requests", st->bad_requests);
	kv_u64(kv, "client_timeouts", st->client_timeouts);
	kv_u64(kv, "crossings", st->crossings);
	kv_u64(kv, "listed", st->listed);
	kv_u64(kv, "policy_skipped", st->policy_skipped);
	kv_u64(kv, "shed", st->shed);
	kv_u64(kv, "accept_paused", st->accept_paused);
	kv_u64(kv, "near_cache_hits", cache_stats()->hits);
	kv_u64(kv, "near_cache_learnt", cache_stats()->learnt);
	kv_u64(kv, "near_cache_lapsed", cache_stats()->lapsed);
	kv_u64(kv, "near_cache_evicted", cache_stats()->evicted);
	kv_u64(kv, "near_cache_flushes", st->near_flushes);
	kv_u64(kv, "near_cache_flush_failed", st->near_flush_failed);
	kv_u64(kv, "near_cache_lost", cache_stats()->lost);
	kv_u64(kv, "near_cache_invalidated", st->near_invalidated);
	kv_u64(kv, "near_cache_entries", cache_stats()->entries);
	kv_u64(kv, "near_cache_unsent", stats_near_unsent());
	kv_u64(kv, "near_cache_bytes", cache_stats()->bytes);
	kv_u64(kv, "script_loads", stats_script_loads());
	kv_u64(kv, "script_calls", st->script_calls);
	kv_u64(kv, "script_decisions", st->script_decisions);
	kv_u64(kv, "script_resent", st->script_resent);
	kv_u64(kv, "script_held", st->script_held);
	kv_u64(kv, "override_reads_skipped", ovcache_stats()->skipped);
	kv_u64(kv, "override_cache_learnt", ovcache_stats()->learnt);
	kv_u64(kv, "sessions", shim.nsessions);
	kv_u64(kv, "sessions_waiting", shim.nasking);
	kv_str(kv, "redis", stats_redis_state(state, sizeof(state)));
	kv_str(kv, "redis_address", shim.redis != NULL ?
	    rconn_address(shim.redis) : "cluster");
}

void
stats_status(struct kv *kv)
{
	char	 buf[1024];

	kv_str(kv, "layout", conf_layout_name(conf_layout(shim.conf)));
	kv_str(kv, "redis", stats_redis_state(buf, sizeof(buf)));
	if (shim.cluster != NULL)
		kv_str(kv, "redis_nodes", cluster_addresses(shim.cluster, buf,
		    sizeof(buf)));
	else
		kv_str(kv, "redis_nodes", shim.redis != NULL ?
		    rconn_address(shim.redis) : "");
	kv_u64(kv, "sessions", shim.nsessions);
	kv_u64(kv, "fail_policy", shim.stats.fail_policy);
	kv_u64(kv, "rules", shim.conf->nrules);
}

void
stats_metrics(struct metrics *m)
{
	const struct shim_stats	*st = &shim.stats;
	char			 l[CONF_NAME_MAX * 2 + 64], q[CONF_NAME_MAX * 2];
	size_t			 i;
	int			 r;

	metrics_family(m, "senderwatch_redis_up", "gauge",
	    "1 when every Redis node this daemon needs is connected.");
	metrics_u64(m, "senderwatch_redis_up", "", stats_redis_up());
	metrics_family(m, "senderwatch_decisions_total", "counter",
	    "Requests answered yes or no: by Redis, the near cache, a list or "
	    "an override.");
	for (i = 0; i < stats_nrules; i++) {
		metrics_label(q, sizeof(q), stats_rules[i].name);
		snprintf(l, sizeof(l), "rule=\"%s\",answer=\"yes\"", q);
		metrics_u64(m, "senderwatch_decisions_total", l,
		    stats_rules[i].answers[1]);
		snprintf(l, sizeof(l), "rule=\"%s\",answer=\"no\"", q);
		metrics_u64(m, "senderwatch_decisions_total", l,
		    stats_rules[i].answers[0]);
	}
	metrics_family(m, "senderwatch_fail_policy_total", "counter",
	    "Requests answered by redis.on_error, by why Redis did not.");
	for (r = FAIL_NONE + 1; r < FAIL_MAX; r++) {
		snprintf(l, sizeof(l), "reason=\"%s\"", fail_reason_names[r]);
		metrics_u64(m, "senderwatch_fail_policy_total", l, st->fail[r]);
	}
	metrics_hist(m, "senderwatch_decision_duration_seconds",
	    "From a complete request to its answer written.",
	    &stats_latency);
	metrics_counter(m, "senderwatch_crossings_total",
	    "Limits crossed (each recorded once, by the first shim).",
	    st->crossings);
	metrics_counter(m, "senderwatch_bad_requests_total",
	    "Requests refused as malformed, too long or naming no rule.",
	    st->bad_requests);
	metrics_counter(m, "senderwatch_client_timeouts_total",
	    "Clients that sent no complete request in shim.client_timeout.",
	    st->client_timeouts);
	metrics_counter(m, "senderwatch_listed_total",
	    "Requests answered by an allow or deny list or a config "
	    "override.", st->listed);
	metrics_counter(m, "senderwatch_policy_skipped_total",
	    "Postfix requests not counted (bounces, clients not counted).",
	    st->policy_skipped);
	metrics_family(m, "senderwatch_sessions", "gauge",
	    "Client connections open now.");
	metrics_u64(m, "senderwatch_sessions", "", shim.nsessions);
	/* Climbing while decisions/s fall: Redis is slow, before timeouts. */
	metrics_family(m, "senderwatch_sessions_waiting", "gauge",
	    "Client connections waiting for Redis's answer now (held for "
	    "company, queued or sent).");
	metrics_u64(m, "senderwatch_sessions_waiting", "", shim.nasking);
	metrics_counter(m, "senderwatch_sessions_shed_total",
	    "Silent client connections dropped to make room.", st->shed);
	metrics_counter(m, "senderwatch_accept_paused_total",
	    "Times accepting stopped for want of descriptors or room.",
	    st->accept_paused);
	metrics_counter(m, "senderwatch_script_calls_total",
	    "count.lua calls sent to Redis, each with one or more decisions "
	    "of one rule and hash slot, or in a Cluster of one node.",
	    st->script_calls);
	metrics_counter(m, "senderwatch_script_decisions_total",
	    "Decisions and near-cache flushes those calls carried.",
	    st->script_decisions);
	metrics_counter(m, "senderwatch_script_resent_total",
	    "Decisions sent again: a Cluster node refused them before "
	    "deciding (a slot it no longer serves, or one moving), or said "
	    "TRYAGAIN (a slot moving, retried within redis.timeout).",
	    st->script_resent);
	metrics_counter(m, "senderwatch_script_held_total",
	    "count.lua calls that waited up to redis.batch_wait for more "
	    "decisions to share them, on a busy route.",
	    st->script_held);
	metrics_counter(m, "senderwatch_override_reads_skipped_total",
	    "Decisions count.lua decided without reading the key's runtime "
	    "override: it had found none for the key within 0.9 s.",
	    ovcache_stats()->skipped);
	metrics_counter(m, "senderwatch_near_cache_hits_total",
	    "Requests answered yes by the near cache, without Redis.",
	    cache_stats()->hits);
	metrics_counter(m, "senderwatch_near_cache_flushes_total",
	    "count.lua calls carrying costs the near cache counted.",
	    st->near_flushes);
	metrics_counter(m, "senderwatch_near_cache_flush_failures_total",
	    "Flushes Redis did not take (retried while the key is cached).",
	    st->near_flush_failed);
	metrics_counter(m, "senderwatch_near_cache_evictions_total",
	    "Keys pushed out of a full near cache.", cache_stats()->evicted);
	metrics_counter(m, "senderwatch_near_cache_lost_total",
	    "Cost units counted by the near cache that never reached Redis.",
	    cache_stats()->lost);
	metrics_family(m, "senderwatch_near_cache_entries", "gauge",
	    "Keys held over their limit in the near cache now.");
	metrics_u64(m, "senderwatch_near_cache_entries", "",
	    cache_stats()->entries);
	metrics_family(m, "senderwatch_near_cache_unsent", "gauge",
	    "Near-cache costs not in Redis yet: keys waiting for the next "
	    "flush, and flushes not yet answered.");
	metrics_u64(m, "senderwatch_near_cache_unsent", "",
	    stats_near_unsent());
	metrics_family(m, "senderwatch_near_cache_bytes", "gauge",
	    "Memory the near cache holds: its table and entries.");
	metrics_u64(m, "senderwatch_near_cache_bytes", "",
	    cache_stats()->bytes);
	metrics_counter(m, "senderwatch_script_loads_total",
	    "SCRIPT LOADs sent (each connect, each NOSCRIPT burst).",
	    stats_script_loads());
}
