/*
 * alerter.h: what senderwatch-alerter's parts share.  One process, one
 * libev loop, two Redis connections: one for commands, one subscribed to
 * the events channel purely as a wake-up.  The stream is the record; the
 * channel only makes reading it prompt.
 *
 *   events.c    the stream consumer: group, reading (own pending entries
 *               first), claiming dead alerters' entries, keeping ours, XACK
 *   batch.c     gathers events into one mail (digest), fetches top subjects
 *               and counts, composes, sends, retries, acknowledges
 *   mail.c      message composition (pure)
 *   smtp.c      SMTP through libcurl's multi interface on the libev loop
 *   sendmail.c  a sendmail-compatible command instead of SMTP
 *   report.c    the optional report command, run per key
 *   proc.c      child processes: argv only, time limit, bounded output
 *   main.c      options, daemon life, signals, reload
 *
 * An event's life: read from the stream (now pending for this consumer)
 * -> queued -> in a batch -> mail accepted -> XACK -> freed.  Until the
 * XACK it stays in the consumer group's pending list, so a crash at any
 * point leaves it to be mailed by this consumer's restart or, after
 * alerts.claim_idle, by another alerter.
 */
#ifndef SW_ALERTER_H
#define SW_ALERTER_H

#include <sys/queue.h>
#include <stdint.h>
#include <ev.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "buf.h"
#include "conf.h"
#include "mail.h"

struct rconn;
struct batch;

struct alerter_stats {
	uint64_t	 events_read;	/* entries taken from the stream */
	uint64_t	 events_claimed;	/* of those, taken over */
	uint64_t	 events_lost;	/* trimmed before they were mailed */
	uint64_t	 events_mailed;
	uint64_t	 events_handed;	/* another alerter had them */
	uint64_t	 mails_sent;
	uint64_t	 mails_failed;	/* attempts, each retried */
};

struct alerter {
	struct ev_loop		*loop;
	const struct conf	*conf;
	struct alerter_stats	 stats;
	int			 stopping;
};

extern struct alerter alerter;

/* Ownership of a pending entry, as events_own() finds it. */
enum event_owner {
	OWNER_OTHER = 0,	/* another consumer has it, or it was acked */
	OWNER_US = 1,		/* ours, and its idle time is reset */
	OWNER_NOBODY = 2,	/* gone from Redis (data loss): mail it */
};

struct event {
	TAILQ_ENTRY(event)	 entry;		/* in the gather queue */
	char			 id[48];
	uint64_t		 id_ms, id_seq;	/* parsed id: ms is the
						   crossing's Redis time */
	char			*rule, *host, *algorithm;
	char			*key;		/* %XX-escaped; NUL-terminated */
	size_t			 key_len;
	char			*counter, *subjects_key;
	size_t			 counter_len, subjects_key_len;
	long long		 count, limit, window_ms, time;
	int			 shadow;
	/* Fetched just before the mail is composed: */
	long long		 count_now, ttl_ms;
	struct mail_subject	*subjects;
	size_t			 nsubjects;
	struct buf		 report;
	char			 report_note[160];
	int			 reported;	/* report has run (or not) */
	enum event_owner	 owner;
	struct batch		*batch;
};
TAILQ_HEAD(event_queue, event);

typedef void	send_done_fn(void *arg, int ok, const char *why);

/* events.c */
int	events_init(char *err, size_t errlen);
void	events_disconnect(void);		/* close Redis, stop timers */
void	events_free(void);			/* then free every event */
void	events_reload(const struct conf *old);
void	events_kick(void);			/* room for more: read now */
struct rconn *events_redis(void);
/*
 * For each event: if it is still ours, reset its idle time; set
 * ev->owner.  fn gets the raw reply; the caller calls events_own_parse().
 */
int	events_own(struct event **, size_t, redisCallbackFn *, void *);
int	events_own_parse(const void *reply, struct event **, size_t);
int	events_ack(struct event **, size_t, redisCallbackFn *, void *);
void	events_release(struct event *);		/* done: forget and free */

/* batch.c */
void	batch_init(void);
void	batch_free(void);
void	batch_add(struct event *);
size_t	batch_room(void);			/* events worth reading now */
void	batch_redis_ready(void);
/* Finish what is being sent, then call fn (at once if nothing is). */
void	batch_drain(void (*fn)(void));

/* smtp.c */
struct smtp_job;
int	smtp_init(char *err, size_t errlen);
void	smtp_free(void);
int	smtp_url(const struct conf *, char *dst, size_t dstlen, char *err,
	    size_t errlen);
struct smtp_job *smtp_send(const char *msg, size_t len, const char *from,
	    char *const *rcpts, size_t nrcpts, send_done_fn *, void *,
	    char *err, size_t errlen);
void	smtp_cancel(struct smtp_job *);

/* sendmail.c */
struct proc;
struct proc *sendmail_send(const char *msg, size_t len,
	    void (*done)(void *, const char *, const struct buf *, int),
	    void *, char *err, size_t errlen);
/* From the command's outcome: 1 when accepted, else 0 and why. */
int	sendmail_accepted(const char *what, const struct buf *out, char *why,
	    size_t len);
int	sendmail_check(const struct conf *, char *err, size_t errlen);

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
typedef void	proc_done_fn(void *arg, const char *what,
		    const struct buf *out, int truncated);
struct proc *proc_run(char *const argv[], const char *last_arg,
	    const char *in, size_t inlen, size_t outmax, int64_t timeout_ms,
	    proc_done_fn *, void *, char *err, size_t errlen);
void	proc_cancel(struct proc *);

#endif
