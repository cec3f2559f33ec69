/*
 * ctl_redis.c: Redis for a command line.  The daemons' layout (layout.h:
 * one Redis, Sentinel's master or a Cluster's masters) on a libev loop
 * that runs only while ctl waits: for the nodes a command needs, with a
 * deadline, then for the replies of a batch of pipelined commands.
 *
 * hiredis frees a reply when its callback returns, so each is copied
 * into its batch; a command reads them in order once the batch is done.
 * A NULL reply (the connection lost first) and an error reply are never
 * data: ctl_batch_ok() exits 1 naming them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "layout.h"
#include "log.h"
#include "rconn.h"

#define CTL_SLOTS	16384

struct ctl_req {
	struct ctl_batch	*b;
	redisReply		*reply;		/* a copy; NULL: lost */
	int			 done;
	int			 sent;
	unsigned		 slot;
	int			 script;
	enum script_id		 id;
	int			 argc;
	char			**argv;
	size_t			*argvlen;
};

struct ctl_batch {
	struct ctl		*ctl;
	struct ctl_req		**req;
	size_t			 n, cap;
	size_t			 pending;
};

/* What the loop waits for: a predicate, checked after each iteration. */
struct ctl_wait {
	struct ctl		*ctl;
	int			(*done)(struct ctl_wait *);
	const unsigned		*slots;
	size_t			 nslots;
	struct ctl_batch	*batch;
	int			 expired;
};

static void
ctl_redis_deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct ctl_wait	*cw = w->data;

	(void)loop;
	(void)revents;
	cw->expired = 1;
}

/*
 * Run the loop an iteration at a time until done(), a signal (while
 * following) or s seconds (0: no deadline of ours).
 */
static int
ctl_redis_run(struct ctl_wait *cw, double s)
{
	struct ev_loop	*loop = cw->ctl->loop;
	ev_timer	 deadline;

	ev_timer_init(&deadline, ctl_redis_deadline_cb, s, 0.);
	deadline.data = cw;
	if (s > 0)
		ev_timer_start(loop, &deadline);
	while (!cw->done(cw) && !cw->expired && !cw->ctl->stopped)
		ev_run(loop, EVRUN_ONCE);
	ev_timer_stop(loop, &deadline);
	return cw->done(cw) ? 0 : -1;
}

void
ctl_redis_open(struct ctl *ctl, unsigned script_mask)
{
	/*
	 * The watchdog drops a connection whose replies stop coming: a
	 * frozen server fails the command rather than hang it.
	 */
	if ((ctl->layout = layout_new(ctl->loop, ctl->conf, "ctl", script_mask,
	    ctl->wait_s + 3., NULL, NULL)) == NULL)
		ctl_fatal("out of memory");
}

static int
ctl_redis_nodes_up(struct ctl_wait *cw)
{
	size_t	 i;

	if (cw->nslots == 0)
		return layout_up(cw->ctl->layout);
	for (i = 0; i < cw->nslots; i++)
		if (layout_rconn(cw->ctl->layout, cw->slots[i]) == NULL)
			return 0;
	return 1;
}

void
ctl_redis_wait(struct ctl *ctl, const unsigned *slots, size_t n)
{
	struct ctl_wait	 cw;
	char		 state[256], nodes[512];

	memset(&cw, 0, sizeof(cw));
	cw.ctl = ctl;
	cw.done = ctl_redis_nodes_up;
	cw.slots = slots;
	cw.nslots = n;
	if (ctl_redis_run(&cw, ctl->wait_s) == 0)
		return;
	if (ctl->stopped)
		exit(CTL_OK);
	ctl_fatal("Redis not reachable: %s %s (%s, after %.1fs)",
	    conf_layout_name(conf_layout(ctl->conf)),
	    layout_nodes(ctl->layout, nodes, sizeof(nodes)),
	    layout_state(ctl->layout, state, sizeof(state)), ctl->wait_s);
}

void
ctl_redis_close(struct ctl *ctl)
{
	layout_free(ctl->layout);
	ctl->layout = NULL;
}

size_t
ctl_redis_masters(struct ctl *ctl, unsigned *slots, size_t max)
{
	struct rconn	*seen[128], *rc;
	size_t		 n = 0, i;
	unsigned	 s;

	if (conf_layout(ctl->conf) != LAYOUT_CLUSTER) {
		slots[0] = 0;
		return 1;
	}
	/* The slot map is cluster.c's: ask it slot by slot. */
	for (s = 0; s < CTL_SLOTS && n < max && n < 128; s++) {
		if ((rc = layout_rconn(ctl->layout, s)) == NULL)
			continue;
		for (i = 0; i < n && seen[i] != rc; i++)
			;
		if (i == n) {
			seen[n] = rc;
			slots[n++] = s;
		}
	}
	return n;
}

static int
ctl_redis_never(struct ctl_wait *cw)
{
	(void)cw;
	return 0;
}

int
ctl_redis_sleep(struct ctl *ctl, double s)
{
	struct ctl_wait	 cw;

	memset(&cw, 0, sizeof(cw));
	cw.ctl = ctl;
	cw.done = ctl_redis_never;
	ctl_redis_run(&cw, s);
	return ctl->stopped ? 1 : 0;
}

/* A copy of a reply that outlives its callback. */
static redisReply *
ctl_reply_copy(const redisReply *r)
{
	redisReply	*c;
	size_t		 i;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		ctl_fatal("out of memory");
	c->type = r->type;
	c->integer = r->integer;
	switch (r->type) {
	case REDIS_REPLY_STRING:
	case REDIS_REPLY_STATUS:
	case REDIS_REPLY_ERROR:
		if ((c->str = malloc(r->len + 1)) == NULL)
			ctl_fatal("out of memory");
		memcpy(c->str, r->str, r->len);
		c->str[r->len] = '\0';
		c->len = r->len;
		break;
	case REDIS_REPLY_ARRAY:
		if (r->elements == 0)
			break;
		if ((c->element = calloc(r->elements, sizeof(*c->element))) ==
		    NULL)
			ctl_fatal("out of memory");
		c->elements = r->elements;
		for (i = 0; i < r->elements; i++)
			c->element[i] = ctl_reply_copy(r->element[i]);
		break;
	}
	return c;
}

static void
ctl_reply_free(redisReply *r)
{
	size_t	 i;

	if (r == NULL)
		return;
	for (i = 0; i < r->elements; i++)
		ctl_reply_free(r->element[i]);
	free(r->element);
	free(r->str);
	free(r);
}

struct ctl_batch *
ctl_batch_new(struct ctl *ctl)
{
	struct ctl_batch	*b;

	if ((b = calloc(1, sizeof(*b))) == NULL)
		ctl_fatal("out of memory");
	b->ctl = ctl;
	return b;
}

static size_t
ctl_batch_add(struct ctl_batch *b, unsigned slot, int script,
    enum script_id id, int argc, const char **argv, const size_t *argvlen)
{
	struct ctl_req	*q;
	int		 i;

	if (b->n == b->cap) {
		b->cap = b->cap ? b->cap * 2 : 16;
		if ((b->req = reallocarray(b->req, b->cap, sizeof(*b->req))) ==
		    NULL)
			ctl_fatal("out of memory");
	}
	if ((q = calloc(1, sizeof(*q))) == NULL ||
	    (q->argv = calloc((size_t)argc, sizeof(*q->argv))) == NULL ||
	    (q->argvlen = calloc((size_t)argc, sizeof(*q->argvlen))) == NULL)
		ctl_fatal("out of memory");
	/* The arguments are the caller's until sent: keep our own. */
	for (i = 0; i < argc; i++) {
		q->argvlen[i] = argvlen != NULL ? argvlen[i] : strlen(argv[i]);
		if ((q->argv[i] = malloc(q->argvlen[i] + 1)) == NULL)
			ctl_fatal("out of memory");
		memcpy(q->argv[i], argv[i], q->argvlen[i]);
		q->argv[i][q->argvlen[i]] = '\0';
	}
	q->b = b;
	q->slot = slot;
	q->script = script;
	q->id = id;
	q->argc = argc;
	b->req[b->n] = q;
	return b->n++;
}

size_t
ctl_batch_cmd(struct ctl_batch *b, unsigned slot, int argc,
    const char **argv, const size_t *argvlen)
{
	return ctl_batch_add(b, slot, 0, SCRIPT_COUNT, argc, argv, argvlen);
}

size_t
ctl_batch_script(struct ctl_batch *b, unsigned slot, enum script_id id,
    int argc, const char **argv, const size_t *argvlen)
{
	return ctl_batch_add(b, slot, 1, id, argc, argv, argvlen);
}

static void
ctl_req_free(struct ctl_req *q)
{
	int	 i;

	for (i = 0; i < q->argc; i++)
		free(q->argv[i]);
	free(q->argv);
	free(q->argvlen);
	ctl_reply_free(q->reply);
	free(q);
}

static void
ctl_batch_reply(struct ctl_req *q, const redisReply *r)
{
	if (q->b == NULL) {		/* its batch was given up */
		ctl_req_free(q);
		return;
	}
	if (q->done)
		return;
	q->reply = r != NULL ? ctl_reply_copy(r) : NULL;
	q->done = 1;
	q->b->pending--;
}

static void
ctl_batch_cmd_cb(redisAsyncContext *ac, void *r, void *priv)
{
	(void)ac;
	ctl_batch_reply(priv, r);
}

static void
ctl_batch_script_cb(void *priv, redisReply *r)
{
	ctl_batch_reply(priv, r);
}

static int
ctl_batch_done(struct ctl_wait *cw)
{
	return cw->batch->pending == 0;
}

int
ctl_batch_run(struct ctl_batch *b)
{
	struct ctl_wait	 cw;
	struct ctl_req	*q;
	size_t		 i;
	int		 rc;

	for (i = 0; i < b->n; i++) {
		q = b->req[i];
		if (q->sent)
			continue;
		q->sent = 1;
		b->pending++;
		if (q->script)
			rc = layout_script(b->ctl->layout, q->slot, q->id,
			    ctl_batch_script_cb, q, q->argc,
			    (const char **)q->argv, q->argvlen);
		else
			rc = layout_command(b->ctl->layout, q->slot,
			    ctl_batch_cmd_cb, q, q->argc,
			    (const char **)q->argv, q->argvlen);
		if (rc == -1)		/* that node is not connected */
			ctl_batch_reply(q, NULL);
	}
	memset(&cw, 0, sizeof(cw));
	cw.ctl = b->ctl;
	cw.done = ctl_batch_done;
	cw.batch = b;
	/*
	 * No deadline of our own: the layout's watchdog drops a connection
	 * whose replies stop, and its calls come back NULL.
	 */
	if (ctl_redis_run(&cw, 0) == 0)
		return 0;
	return -1;
}

size_t
ctl_batch_len(const struct ctl_batch *b)
{
	return b->n;
}

const redisReply *
ctl_batch_get(const struct ctl_batch *b, size_t i)
{
	return i < b->n && b->req[i]->done ? b->req[i]->reply : NULL;
}

/* What failed, and why: Redis's error text may echo our arguments. */
static void
ctl_batch_fail(const struct ctl_batch *b, size_t i, const char *what)
{
	const struct ctl_req	*q = b->req[i];
	const redisReply	*r = q->done ? q->reply : NULL;
	char			 nodes[512], name[64], err[600];

	if (what == NULL) {
		if (q->script)
			snprintf(name, sizeof(name), "%s.lua",
			    script_defs[q->id].name);
		else
			log_quote(name, sizeof(name), q->argv[0],
			    q->argvlen[0]);
		what = name;
	}
	if (r == NULL)
		ctl_fatal("%s: the connection to Redis was lost (%s)", what,
		    layout_nodes(b->ctl->layout, nodes, sizeof(nodes)));
	ctl_fatal("%s: Redis error: %s", what, log_quote(err, sizeof(err),
	    r->str, r->len));
}

const redisReply *
ctl_batch_ok(const struct ctl_batch *b, size_t i, const char *what)
{
	const redisReply	*r = ctl_batch_get(b, i);

	if (r == NULL || r->type == REDIS_REPLY_ERROR)
		ctl_batch_fail(b, i, what);
	return r;
}

void
ctl_batch_check(const struct ctl_batch *b)
{
	const redisReply	*r;
	size_t			 i;

	for (i = 0; i < b->n; i++)
		if ((r = ctl_batch_get(b, i)) == NULL ||
		    r->type == REDIS_REPLY_ERROR)
			ctl_batch_fail(b, i, NULL);
}

void
ctl_batch_free(struct ctl_batch *b)
{
	struct ctl_req	*q;
	size_t		 i;

	if (b == NULL)
		return;
	for (i = 0; i < b->n; i++) {
		q = b->req[i];
		if (q->sent && !q->done)
			q->b = NULL;	/* its callback frees it */
		else
			ctl_req_free(q);
	}
	free(b->req);
	free(b);
}

int
ctl_reply_str(const redisReply *r, const char **s, size_t *len)
{
	if (r == NULL || (r->type != REDIS_REPLY_STRING &&
	    r->type != REDIS_REPLY_STATUS))
		return -1;
	*s = r->str;
	*len = r->len;
	return 0;
}

int
ctl_reply_int(const redisReply *r, long long *v)
{
	char	 num[32], *end;

	if (r == NULL)
		return -1;
	if (r->type == REDIS_REPLY_INTEGER) {
		*v = r->integer;
		return 0;
	}
	if ((r->type != REDIS_REPLY_STRING && r->type !=
	    REDIS_REPLY_STATUS) || r->len == 0 || r->len >= sizeof(num))
		return -1;
	memcpy(num, r->str, r->len);
	num[r->len] = '\0';
	*v = strtoll(num, &end, 10);
	return *end == '\0' ? 0 : -1;
}

const redisReply *
ctl_reply_array(const redisReply *r, size_t n, const char *what)
{
	if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < n)
		ctl_fatal("%s: an unexpected reply from Redis", what);
	return r;
}
