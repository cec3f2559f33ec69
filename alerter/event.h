/*
 * event.h: one threshold crossing, as the alerter carries it from the
 * stream to the mail.  The store (stream.c) parses it from a stream entry
 * (the fields of common/keyspace.h), lookup.c and report.c add to it,
 * mail.c composes from it, batch.c moves it along; stream.c frees it.
 *
 * Everything in it came from Redis and is treated as hostile: a sender
 * chose the key and the subjects, and anyone who can write to Redis the
 * rest.  mail.c shows none of it raw.
 */
#ifndef SW_EVENT_H
#define SW_EVENT_H

#include <sys/queue.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

struct batch;

struct mail_subject {
	char		*text;		/* raw bytes, as the MTA reported them */
	size_t		 len;
	long long	 count;
};

/* Ownership of a pending entry, as stream_own() finds it. */
enum event_owner {
	OWNER_OTHER = 0,	/* another consumer has it, or it was acked */
	OWNER_US = 1,		/* ours, and its idle time is reset */
	OWNER_NOBODY = 2,	/* gone from Redis (data loss): mail it */
};

struct event {
	TAILQ_ENTRY(event)	 entry;		/* in the gather queue */
	char			 id[48];	/* stream entry id */
	size_t			 shard;		/* its stream (keyspace.h) */
	uint64_t		 id_ms, id_seq;	/* parsed: ms is Redis's
						   clock at the crossing */
	/* The entry's fields; -1 and "?" for what an entry lacks. */
	char			*rule;
	char			*key;		/* %XX-escaped, NUL-terminated */
	size_t			 key_len;
	char			*host;		/* the MTA that saw it */
	char			*algorithm;	/* NULL: fixed */
	char			*counter;	/* the limit's counter key */
	size_t			 counter_len;
	char			*subjects_key;
	size_t			 subjects_key_len;
	long long		 count, limit, window_ms, time;
	long long		 cost;		/* of the request that crossed */
	int			 shadow;	/* counts, never refuses */
	/*
	 * Looked up as the mail is composed (lookup.c; fixed windows only):
	 * count_now -1 with ttl_ms -2: the counter has expired; ttl_ms -1:
	 * unknown.
	 */
	long long		 count_now, ttl_ms;
	struct mail_subject	*subjects;	/* most frequent first */
	size_t			 nsubjects;
	/* The report command's (report.c). */
	struct buf		 report;	/* raw output */
	char			 report_note[160];	/* "exit 1"... */
	int			 reported;	/* it ran (or was skipped) */
	/* Where it is. */
	enum event_owner	 owner;
	struct batch		*batch;
};
TAILQ_HEAD(event_queue, event);

#endif
