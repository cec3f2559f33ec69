/*
 * alerter.h: what senderwatch-alerter's parts share.  One process, one
 * libev loop, two Redis connections: one for commands, one subscribed to
 * the events channel purely as a wake-up.  The stream is the record; the
 * channel only makes reading it prompt.
 *
 *   policy      batch.c     gathers events into digests, mails, retries,
 *                           acknowledges: it calls the store and a
 *                           transport, and is called back only through
 *                           the hooks it gives the stream (stream_hooks)
 *   store       store.c     the Redis connections and the wake-up
 *               stream.c    the consumer group: read (own pending entries
 *                           first), claim dead alerters' entries, keep
 *                           ours, acknowledge; losses counted
 *               lease.c     one process per consumer name
 *               lookup.c    a mail's top subjects, counts and TTLs
 *   transport   transport.h smtp.c (libcurl), sendmail.c
 *   mail        mail.c      composition (pure); report.c, proc.c: the
 *                           optional report command, child processes
 *   backlog.c   what is not mailed yet, sampled for the metrics
 *   stats.c     the counters, as control stats/status and /metrics
 *   main.c      the daemon's hooks: start, reload, stop
 *
 * Every Redis command the alerter sends is in store.c, stream.c, lease.c
 * or lookup.c, and every key and field name comes from common/keyspace.h.
 *
 * An event's life: read from the stream (now pending for this consumer)
 * -> queued -> in a batch -> mail accepted -> XACK -> freed.  Until the
 * XACK it stays in the consumer group's pending list, so a crash at any
 * point leaves it to be mailed by this consumer's restart or, after
 * alerts.claim_idle, by another alerter.
 */
#ifndef SW_ALERTER_H
#define SW_ALERTER_H

#include <stdint.h>
#include <ev.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "buf.h"
#include "conf.h"
#include "event.h"
#include "script.h"


struct alerter_stats {
	uint64_t	 events_read;	/* entries taken from the stream */
	uint64_t	 events_claimed;	/* of those, taken over */
	uint64_t	 events_lost;	/* gone before they were mailed */
	uint64_t	 events_mailed;
	uint64_t	 events_handed;	/* another alerter had them */
	uint64_t	 mails_sent;
	uint64_t	 mails_failed;	/* attempts, each retried */
	uint64_t	 mails_retried;	/* attempts after the first */
	uint64_t	 read_errors;	/* reads or acks Redis refused */
	uint64_t	 groups_made;	/* the group made again after a loss */
};

struct alerter {
	struct ev_loop		*loop;
	const struct conf	*conf;
	struct alerter_stats	 stats;
	int			 stopping;
};

extern struct alerter alerter;

/*
 * store.c: the connections; the rest of the store uses them.  Every
 * command names the hash slot of its key (keyspace_slot()): in a Cluster
 * it goes to that slot's master; elsewhere the slot does not matter.
 * store_command() and store_script() return -1 when that node is not
 * connected (fn is not called).
 */
int	store_init(char *err, size_t errlen);
void	store_reload(const struct conf *old);
void	store_close(void);		/* pending callbacks run, NULL */
int	store_ready(void);		/* connected (to some master) */
int	store_up(void);			/* connected to every node needed */
const char *store_state(char *, size_t);
const char *store_nodes(char *, size_t);	/* "host:port,..." */
unsigned long store_script_loads(void);
int	store_replicas(unsigned slot);	/* that master's, at connect */
int	store_command(unsigned slot, redisCallbackFn *, void *, int argc,
	    const char **argv, const size_t *argvlen);
int	store_script(unsigned slot, enum script_id, script_reply_fn *,
	    void *, int argc, const char **argv);

/*
 * stream.c: the consumer group.  The policy gives its hooks once:
 *   event(ev)  a new event, pending for us until stream_ack()
 *   room()     how many more events it takes now (0: stop reading; it
 *              calls stream_kick() when it has room again)
 *   ready()    Redis is back: redo what waited for it
 */
struct stream_hooks {
	void	(*event)(struct event *);
	size_t	(*room)(void);
	void	(*ready)(void);
};
typedef void	stream_done_fn(void *arg, int ok);

int	stream_init(const struct stream_hooks *, char *err, size_t errlen);
void	stream_connected(void);		/* from store.c */
void	stream_wakeup(void);		/* from store.c: a new crossing */
void	stream_kick(void);
/*
 * For each event: if it is still ours, reset its idle time; set its
 * owner.  done(arg, ok) follows; ok 0: Redis failed, nothing is known.
 */
int	stream_own(struct event **, size_t, stream_done_fn *, void *);
int	stream_ack(struct event **, size_t, stream_done_fn *, void *);
void	stream_release(struct event *);	/* done: forget and free */
void	stream_reload(const struct conf *old);
void	stream_free(void);
/* reading=1 stalled_s=0 held=3 streams=1, for stats. */
struct kv;
void	stream_stats(struct kv *);

/* lease.c: one process per consumer name. */
int	lease_init(char *err, size_t errlen);
void	lease_connected(void);		/* from store.c */
int	lease_held(void);		/* reading may go on */
void	lease_kick(void);
void	lease_free(void);

/* lookup.c: a mail's subjects and counts, before it is composed. */
typedef void	lookup_done_fn(void *arg, int ok);
int	lookup_events(struct event **, size_t, lookup_done_fn *, void *);

/* backlog.c: the alert backlog, every 5 s, over every shard. */
struct backlog {
	uint64_t	 pending;	/* pending in the group + not read */
	uint64_t	 oldest_ms;	/* the oldest's entry id; 0: none */
	ev_tstamp	 sampled;	/* 0: not yet */
};
int	backlog_init(char *err, size_t errlen);
const struct backlog *backlog_last(void);
void	backlog_free(void);

/* stats.c */
struct kv;
struct metrics;
void	stats_kv(struct kv *);
void	stats_status(struct kv *);
void	stats_metrics(struct metrics *);

/* batch.c: the policy. */
int	batch_init(char *err, size_t errlen);
void	batch_free(void);
/* Finish what is being sent, then call fn (at once if nothing is). */
void	batch_drain(void (*fn)(void));

/* report.c */
struct report;
typedef void	report_done_fn(void *arg);
struct report *report_start(struct event **, size_t, report_done_fn *,
	    void *);
void	report_cancel(struct report *);

/* proc.c */
/*
 * what is "" for exit 0, else "exit 1", "killed by signal 9", "timed out
 * after 5s"...; out holds at most outmax bytes of stdout and stderr, and
 * truncated says there was more.  Not called after proc_cancel().
 */
struct proc;
typedef void	proc_done_fn(void *arg, const char *what,
		    const struct buf *out, int truncated);
struct proc *proc_run(char *const argv[], const char *last_arg,
	    const char *in, size_t inlen, size_t outmax, int64_t timeout_ms,
	    proc_done_fn *, void *, char *err, size_t errlen);
void	proc_cancel(struct proc *);

#endif
