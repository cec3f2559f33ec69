/*
 * report.c: the optional alerts.report_command (say, a script around
 * exigrep over this host's mail log), run once per key of a mail with the
 * key as its last argument.  Its output, sanitised by mail.c, is appended
 * to that key's part of the mail.
 *
 * The key is passed as the shim stored it: %XX-escaped, so it is printable
 * ASCII without spaces and an ordinary address is passed unchanged.  No
 * shell is involved; a key starting with "-" is not passed at all, since
 * the command would take it for an option.  The runs of one mail go in
 * parallel, each with alerts.report_timeout, and at most REPORT_PER_MAIL
 * of them: a digest of a hundred keys must not fork a hundred greps.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alerter.h"
#include "log.h"

#define REPORT_PER_MAIL	10

struct report_run {
	struct report	*report;
	struct event	*ev;
	struct proc	*proc;		/* NULL once it has finished */
};

struct report {
	struct report_run runs[REPORT_PER_MAIL];
	size_t		 nruns;
	size_t		 running;
	report_done_fn	*done;
	void		*arg;
};

static void
report_proc_done(void *arg, const char *what, const struct buf *out,
    int truncated)
{
	struct report_run	*run = arg;
	struct report		*r = run->report;
	struct event		*ev = run->ev;
	report_done_fn		*done;
	void			*darg;

	buf_add(&ev->report, out->data != NULL ? out->data : "", out->len);
	snprintf(ev->report_note, sizeof(ev->report_note), "%s%s%s", what,
	    what[0] != '\0' && truncated ? "; " : "",
	    truncated ? "output cut at alerts.report_max_bytes" : "");
	if (what[0] != '\0')
		log_warn("event=report_failed id=%s reason=\"%s\"", ev->id,
		    what);
	run->proc = NULL;
	if (--r->running > 0)
		return;
	done = r->done;
	darg = r->arg;
	free(r);
	done(darg);
}

struct report *
report_start(struct event **evs, size_t n, report_done_fn *done, void *arg)
{
	const struct conf	*c = alerter.conf;
	struct report		*r;
	struct report_run	*run;
	struct event		*ev;
	char			 err[256];
	size_t			 i;

	if (c->alerts_report_command == NULL)
		return NULL;
	if ((r = calloc(1, sizeof(*r))) == NULL) {
		for (i = 0; i < n; i++) {
			evs[i]->reported = 1;	/* the note goes in the mail */
			snprintf(evs[i]->report_note,
			    sizeof(evs[i]->report_note), "not run: out of "
			    "memory");
		}
		return NULL;
	}
	r->done = done;
	r->arg = arg;
	for (i = 0; i < n; i++) {
		ev = evs[i];
		if (ev->reported)
			continue;	/* a retry: the output is kept */
		ev->reported = 1;
		if (r->nruns == REPORT_PER_MAIL) {
			snprintf(ev->report_note, sizeof(ev->report_note),
			    "not run: at most %d reports per mail",
			    REPORT_PER_MAIL);
			continue;
		}
		if (ev->key[0] == '-') {
			snprintf(ev->report_note, sizeof(ev->report_note),
			    "not run: a key starting with \"-\" would read as "
			    "an option");
			continue;
		}
		run = &r->runs[r->nruns];
		run->report = r;
		run->ev = ev;
		run->proc = proc_run(c->alerts_report_command, ev->key, NULL,
		    0, c->alerts_report_max_bytes,
		    c->alerts_report_timeout_ms, report_proc_done, run, err,
		    sizeof(err));
		if (run->proc == NULL) {
			snprintf(ev->report_note, sizeof(ev->report_note),
			    "not run: %.120s", err);
			log_warn("event=report_failed id=%s reason=\"%s\"",
			    ev->id, err);
			continue;
		}
		r->nruns++;
		r->running++;
	}
	if (r->running == 0) {
		free(r);
		return NULL;
	}
	return r;
}

void
report_cancel(struct report *r)
{
	size_t	 i;

	if (r == NULL)
		return;
	for (i = 0; i < r->nruns; i++)
		proc_cancel(r->runs[i].proc);
	free(r);
}
