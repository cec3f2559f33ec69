/*
 * lookup.c: what a mail shows beyond the stream entry, read just before
 * it is composed: each key's top subjects across all MTAs, and (fixed
 * windows, whose counter is a plain count) the count and the window's
 * time left now.  One pipeline for a whole batch; done(arg, ok) once
 * every reply is in, ok 0 when the connection failed (nothing is kept
 * half-looked-up: the policy asks again when Redis is back).
 *
 * Key names come from the entry (its counter and subjects fields), so a
 * mail shows the layout the crossing was recorded under.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alerter.h"
#include "keyspace.h"
#include "log.h"

struct lookup {
	unsigned	 inflight;
	int		 failed;
	lookup_done_fn	*done;
	void		*arg;
};

/* One command's reply: for which lookup, into which event. */
struct lookup_call {
	struct lookup	*l;
	struct event	*ev;
};

static void
lookup_step(struct lookup *l)
{
	if (--l->inflight > 0)
		return;
	l->done(l->arg, !l->failed);
	free(l);
}

static void
lookup_subjects_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct lookup_call	*lc = priv;
	struct event		*ev = lc->ev;
	redisReply		*reply = r;
	const redisReply	*m, *s;
	struct mail_subject	*subj;
	size_t			 i, n;
	char			*text;

	(void)ac;
	if (reply == NULL)
		lc->l->failed = 1;
	else if (reply->type == REDIS_REPLY_ARRAY &&
	    (subj = calloc(reply->elements / 2 + 1, sizeof(*subj))) != NULL) {
		/* [member, score, member, score, ...], highest first */
		for (i = n = 0; i + 1 < reply->elements; i += 2) {
			m = reply->element[i];
			s = reply->element[i + 1];
			if (m->type != REDIS_REPLY_STRING ||
			    s->type != REDIS_REPLY_STRING ||
			    (text = malloc(m->len + 1)) == NULL)
				continue;
			memcpy(text, m->str, m->len);
			text[m->len] = '\0';
			subj[n].text = text;
			subj[n].len = m->len;
			subj[n].count = (long long)strtod(s->str, NULL);
			n++;
		}
		for (i = 0; i < ev->nsubjects; i++)
			free(ev->subjects[i].text);
		free(ev->subjects);
		ev->subjects = subj;
		ev->nsubjects = n;
	}
	/* An error reply (the key holds something else): no subjects. */
	lookup_step(lc->l);
	free(lc);
}

static void
lookup_count_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct lookup_call	*lc = priv;
	redisReply		*reply = r;
	char			*end;

	(void)ac;
	if (reply == NULL)
		lc->l->failed = 1;
	else if (reply->type == REDIS_REPLY_STRING) {
		lc->ev->count_now = strtoll(reply->str, &end, 10);
		if (*end != '\0' || lc->ev->count_now < 0)
			lc->ev->count_now = -1;
	} else
		lc->ev->count_now = -1;	/* nil: expired; an error: unknown */
	lookup_step(lc->l);
	free(lc);
}

static void
lookup_ttl_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct lookup_call	*lc = priv;
	redisReply		*reply = r;

	(void)ac;
	if (reply == NULL)
		lc->l->failed = 1;
	else if (reply->type == REDIS_REPLY_INTEGER)
		lc->ev->ttl_ms = reply->integer >= -2 ? reply->integer : -1;
	lookup_step(lc->l);
	free(lc);
}

static void
lookup_command(struct lookup *l, struct event *ev, redisCallbackFn *fn,
    int argc, const char **argv, const size_t *argvlen)
{
	struct lookup_call	*lc;

	if ((lc = malloc(sizeof(*lc))) == NULL) {
		l->failed = 1;
		return;
	}
	lc->l = l;
	lc->ev = ev;
	/* The key's node: in a Cluster, the slot of argv[1]'s name. */
	if (store_command(keyspace_slot(argv[1], argvlen[1]), fn, lc, argc,
	    argv, argvlen) == 0)
		l->inflight++;
	else {
		free(lc);
		l->failed = 1;
	}
}

static void
lookup_event(struct lookup *l, struct event *ev)
{
	const struct conf	*c = alerter.conf;
	const char		*argv[5];
	size_t			 argvlen[5];
	char			 stop[16];

	if (c->alerts_top_subjects > 0 && ev->subjects_key != NULL) {
		snprintf(stop, sizeof(stop), "%d", c->alerts_top_subjects - 1);
		argv[0] = "ZREVRANGE";
		argv[1] = ev->subjects_key;
		argv[2] = "0";
		argv[3] = stop;
		argv[4] = "WITHSCORES";
		argvlen[0] = 9;
		argvlen[1] = ev->subjects_key_len;
		argvlen[2] = 1;
		argvlen[3] = strlen(stop);
		argvlen[4] = 10;
		lookup_command(l, ev, lookup_subjects_cb, 5, argv, argvlen);
	}
	/* Only a fixed window's counter is a plain count. */
	if (ev->counter != NULL && (ev->algorithm == NULL ||
	    strcmp(ev->algorithm, "fixed") == 0)) {
		argv[1] = ev->counter;
		argvlen[1] = ev->counter_len;
		argv[0] = "GET";
		argvlen[0] = 3;
		lookup_command(l, ev, lookup_count_cb, 2, argv, argvlen);
		argv[0] = "PTTL";
		argvlen[0] = 4;
		lookup_command(l, ev, lookup_ttl_cb, 2, argv, argvlen);
	}
}

int
lookup_events(struct event **evs, size_t n, lookup_done_fn *done, void *arg)
{
	struct lookup	*l;
	size_t		 i;

	if ((l = calloc(1, sizeof(*l))) == NULL)
		return -1;
	l->done = done;
	l->arg = arg;
	l->inflight = 1;	/* held until every command is queued */
	for (i = 0; i < n; i++)
		lookup_event(l, evs[i]);
	lookup_step(l);
	return 0;
}
