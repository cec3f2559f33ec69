/*
 * ctl_keys.c: a key's counters: show, reset, keys, and top (the keys
 * counted highest now).
 *
 * show reads, in one pipelined batch on the key's node, each limit's
 * counter and its PTTL, its crossed marker, the runtime override and its
 * PTTL, and the top subjects; reset deletes the counters, the markers and
 * the subjects (never the override: that is clear's).
 *
 * top's work is bounded whatever the size of the keyspace: SCAN with
 * MATCH on the rule's counter names, COUNT 1000, on every master at once
 * (round-robin, so a cap spreads over them), at most CTL_TOP_SCAN_CAP
 * keys looked at in all; each batch of names found is read back in one
 * pipeline per round.  Only the N highest are kept.  When the cap is
 * reached the output says so: keys not looked at may count more.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"

#define CTL_SUBJECTS_TOP	5
#define CTL_TOP_MAX		10000
#define CTL_TOP_SCAN_COUNT	1000
#define CTL_TOP_SCAN_CAP	100000
#define CTL_MASTERS_MAX		128

/* What one show batch holds for one key: the replies' indexes. */
struct ctl_show {
	struct ctl_key	*k;
	size_t		 time;
	size_t		 value[CONF_LIMITS_MAX];
	size_t		 pttl[CONF_LIMITS_MAX];
	size_t		 crossed[CONF_LIMITS_MAX];
	size_t		 override, override_pttl;
	size_t		 subjects;
	double		 factor;
};

/* KEY [-r RULE] [-a]: the keys of the rules named. */
static size_t
ctl_keys_args(struct ctl *ctl, int argc, char **argv, int may_all,
    struct ctl_key **keys)
{
	const struct conf_rule	*rules[256];
	const char		*cmd = argv[0], *rule = NULL;
	char			 key[KEY_MAX + 1];
	size_t			 n, i, len;
	int			 ch, all = 0;

	while ((ch = getopt(argc, argv, may_all ? "r:a" : "r:")) != -1) {
		switch (ch) {
		case 'r':
			rule = optarg;
			break;
		case 'a':
			all = 1;
			break;
		default:
			ctl_usage(cmd, NULL);
		}
	}
	if (argc - optind != 1)
		ctl_usage(cmd, argc - optind < 1 ? "no KEY" :
		    "one KEY only");
	if (all && rule != NULL)
		ctl_usage(cmd, "-r or -a, not both");
	if (ctl->conf->nrules > sizeof(rules) / sizeof(rules[0]))
		ctl_fatal("more than %zu rules", sizeof(rules) /
		    sizeof(rules[0]));
	len = ctl_key_arg(cmd, argv[optind], key);
	n = ctl_rules(ctl, cmd, rule, all, rules);
	for (i = 0; i < n; i++)
		if ((keys[i] = ctl_key_new(ctl->conf, rules[i], key, len)) ==
		    NULL)
			exit(CTL_FAILED);
	return n;
}

static void
ctl_keys_connect(struct ctl *ctl, struct ctl_key **keys, size_t n)
{
	unsigned	 slots[256];
	size_t		 i;

	for (i = 0; i < n; i++)
		slots[i] = keys[i]->slot;
	ctl_redis_open(ctl, 0);
	ctl_redis_wait(ctl, slots, n);
}

static size_t
ctl_keys_cmd(struct ctl_batch *b, const struct ctl_key *k, const char *a0,
    const char *name, const char *a2, const char *a3, const char *a4)
{
	const char	*argv[5] = { a0, name, a2, a3, a4 };
	int		 argc = 2;

	while (argc < 5 && argv[argc] != NULL)
		argc++;
	return ctl_batch_cmd(b, k->slot, argc, argv, NULL);
}

/* The factor the key's limits are multiplied by: Redis's, else config's. */
static double
ctl_keys_factor(const struct ctl_key *k, const redisReply *ov)
{
	const struct conf_override	*co;
	const char			*s;
	char				 num[32], *end;
	size_t				 len;
	double				 f;

	if (ctl_reply_str(ov, &s, &len) == 0) {
		/* allow and block: no count is looked at. */
		if (len > 1 && len < sizeof(num) && s[0] == 'x') {
			memcpy(num, s + 1, len - 1);
			num[len - 1] = '\0';
			f = strtod(num, &end);
			if (*end == '\0' && end != num)
				return f;
		}
		return 1;
	}
	if ((co = ctl_key_conf_override(k)) != NULL &&
	    co->action == OVR_FACTOR)
		return co->factor;
	return 1;
}

static void
ctl_keys_conf_override(struct ctl_table *t, const struct ctl_key *k)
{
	const struct conf_override	*co;
	char				 text[32];

	if ((co = ctl_key_conf_override(k)) == NULL) {
		ctl_cell_null(t);
		return;
	}
	if (co->action == OVR_ALLOW)
		ctl_cell_text(t, "allow");
	else if (co->action == OVR_BLOCK)
		ctl_cell_text(t, "block");
	else {
		snprintf(text, sizeof(text), "x%g", co->factor);
		ctl_cell_text(t, text);
	}
}

static const struct ctl_col ctl_show_windows[] = {
	{ "rule", "RULE" }, { "key", "KEY" }, { "window_ms", "WINDOW" },
	{ "algorithm", NULL }, { "count", "COUNT" }, { "limit", "LIMIT" },
	{ "ttl_ms", "TTL" }, { "crossed", "CROSSED" }, { NULL, NULL }
};
static const struct ctl_col ctl_show_overrides[] = {
	{ "rule", "RULE" }, { "key", "KEY" }, { "override", "OVERRIDE" },
	{ "ttl_ms", "TTL" }, { "config", "CONFIG" }, { NULL, NULL }
};
static const struct ctl_col ctl_show_subjects[] = {
	{ "rule", "RULE" }, { "key", "KEY" }, { "subject", "SUBJECT" },
	{ "count", "COUNT" }, { NULL, NULL }
};

static void
ctl_show_print(struct ctl *ctl, struct ctl_batch *b, struct ctl_show *sh,
    size_t n)
{
	const struct conf_rule	*r;
	const struct conf_limit	*l;
	const redisReply	*rep, *t;
	struct ctl_table	*tw, *to, *ts;
	const char		*s;
	size_t			 i, j, len;
	long long		 pttl, now_ms = 0, sec, usec;
	int64_t			 limit;

	tw = ctl_table_new(ctl, "window", ctl_show_windows);
	to = ctl_table_new(ctl, "override", ctl_show_overrides);
	ts = ctl_table_new(ctl, "subject", ctl_show_subjects);
	for (i = 0; i < n; i++) {
		r = sh[i].k->rule;
		t = ctl_reply_array(ctl_batch_ok(b, sh[i].time, "TIME"), 2,
		    "TIME");
		if (ctl_reply_int(t->element[0], &sec) == 0 &&
		    ctl_reply_int(t->element[1], &usec) == 0)
			now_ms = sec * 1000 + usec / 1000;
		sh[i].factor = ctl_keys_factor(sh[i].k, ctl_batch_ok(b,
		    sh[i].override, "GET override"));
		for (j = 0; j < r->nlimits; j++) {
			l = &r->limits[j];
			if (ctl_reply_int(ctl_batch_ok(b, sh[i].pttl[j], "PTTL"),
			    &pttl) == -1)
				pttl = -2;
			limit = l->limit;
			if (sh[i].factor != 1)
				limit = (int64_t)((double)l->limit *
				    sh[i].factor);
			ctl_cell_text(tw, r->name);
			ctl_cell_str(tw, sh[i].k->ekey, sh[i].k->elen,
			    CTL_ESCAPED);
			ctl_cell_window(tw, l->window_ms);
			ctl_cell_text(tw, conf_algorithm_name(r->algorithm));
			ctl_cell_int(tw, (long long)ctl_key_count(r, l,
			    sh[i].factor, ctl_batch_ok(b, sh[i].value[j],
			    "the counter"), pttl, now_ms));
			ctl_cell_int(tw, (long long)limit);
			ctl_cell_pttl(tw, pttl);
			rep = ctl_batch_ok(b, sh[i].crossed[j], "EXISTS");
			ctl_cell_bool(tw, rep->type == REDIS_REPLY_INTEGER &&
			    rep->integer > 0);
			ctl_row_end(tw);
		}
		ctl_cell_text(to, r->name);
		ctl_cell_str(to, sh[i].k->ekey, sh[i].k->elen, CTL_ESCAPED);
		rep = ctl_batch_ok(b, sh[i].override, "GET override");
		if (ctl_reply_str(rep, &s, &len) == 0) {
			ctl_cell_str(to, s, len, CTL_RAW);
			if (ctl_reply_int(ctl_batch_ok(b, sh[i].override_pttl,
			    "PTTL"), &pttl) == -1)
				pttl = -2;
			ctl_cell_pttl(to, pttl);
		} else {
			ctl_cell_null(to);
			ctl_cell_null(to);
		}
		ctl_keys_conf_override(to, sh[i].k);
		ctl_row_end(to);
		rep = ctl_batch_ok(b, sh[i].subjects, "ZREVRANGE");
		for (j = 0; rep->type == REDIS_REPLY_ARRAY &&
		    j + 1 < rep->elements; j += 2) {
			ctl_cell_text(ts, r->name);
			ctl_cell_str(ts, sh[i].k->ekey, sh[i].k->elen,
			    CTL_ESCAPED);
			if (ctl_reply_str(rep->element[j], &s, &len) == -1)
				s = "", len = 0;
			ctl_cell_str(ts, s, len, CTL_RAW);
			if (ctl_reply_str(rep->element[j + 1], &s, &len) == -1)
				s = "", len = 0;
			ctl_cell_num(ts, s, len);
			ctl_row_end(ts);
		}
	}
	ctl_table_end(tw);
	ctl_table_end(to);
	ctl_table_end(ts);
}

int
ctl_cmd_show(struct ctl *ctl, int argc, char **argv)
{
	struct ctl_key		*keys[256];
	struct ctl_show		 sh[256];
	struct ctl_batch	*b;
	const struct ctl_key	*k;
	char			 top[16];
	size_t			 n, i, j;

	n = ctl_keys_args(ctl, argc, argv, 1, keys);
	ctl_keys_connect(ctl, keys, n);
	snprintf(top, sizeof(top), "%d", CTL_SUBJECTS_TOP - 1);
	b = ctl_batch_new(ctl);
	for (i = 0; i < n; i++) {
		k = sh[i].k = keys[i];
		/* Sliding windows are reckoned on Redis's clock. */
		sh[i].time = ctl_batch_cmd(b, k->slot, 1,
		    (const char *[]){ "TIME" }, NULL);
		for (j = 0; j < k->rule->nlimits; j++) {
			if (k->rule->algorithm == ALG_SLIDING)
				sh[i].value[j] = ctl_keys_cmd(b, k, "HMGET",
				    k->state[j], "i", "c", "p");
			else
				sh[i].value[j] = ctl_keys_cmd(b, k, "GET",
				    k->state[j], NULL, NULL, NULL);
			sh[i].pttl[j] = ctl_keys_cmd(b, k, "PTTL", k->state[j],
			    NULL, NULL, NULL);
			sh[i].crossed[j] = ctl_keys_cmd(b, k, "EXISTS",
			    k->crossed[j], NULL, NULL, NULL);
		}
		sh[i].override = ctl_keys_cmd(b, k, "GET", k->override, NULL,
		    NULL, NULL);
		sh[i].override_pttl = ctl_keys_cmd(b, k, "PTTL", k->override,
		    NULL, NULL, NULL);
		sh[i].subjects = ctl_keys_cmd(b, k, "ZREVRANGE", k->subjects,
		    "0", top, "WITHSCORES");
	}
	ctl_batch_run(b);
	ctl_batch_check(b);
	ctl_show_print(ctl, b, sh, n);
	ctl_batch_free(b);
	for (i = 0; i < n; i++)
		free(keys[i]);
	return CTL_OK;
}

static const struct ctl_col ctl_reset_cols[] = {
	{ "rule", "RULE" }, { "key", "KEY" }, { "deleted", "DELETED" },
	{ NULL, NULL }
};

int
ctl_cmd_reset(struct ctl *ctl, int argc, char **argv)
{
	struct ctl_key		*keys[256];
	struct ctl_batch	*b;
	struct ctl_table	*t;
	const struct ctl_key	*k;
	const redisReply	*rep;
	const char		*dargv[2 * CONF_LIMITS_MAX + 2];
	size_t			 idx[256], n, i, j;
	int			 dargc;

	n = ctl_keys_args(ctl, argc, argv, 1, keys);
	ctl_keys_connect(ctl, keys, n);
	b = ctl_batch_new(ctl);
	for (i = 0; i < n; i++) {
		k = keys[i];
		/* One DEL: every name of a key shares its slot. */
		dargc = 0;
		dargv[dargc++] = "DEL";
		for (j = 0; j < k->rule->nlimits; j++) {
			dargv[dargc++] = k->state[j];
			dargv[dargc++] = k->crossed[j];
		}
		dargv[dargc++] = k->subjects;
		idx[i] = ctl_batch_cmd(b, k->slot, dargc, dargv, NULL);
	}
	ctl_batch_run(b);
	ctl_batch_check(b);
	t = ctl_table_new(ctl, NULL, ctl_reset_cols);
	for (i = 0; i < n; i++) {
		rep = ctl_batch_ok(b, idx[i], "DEL");
		ctl_cell_text(t, keys[i]->rule->name);
		ctl_cell_str(t, keys[i]->ekey, keys[i]->elen, CTL_ESCAPED);
		ctl_cell_int(t, rep->type == REDIS_REPLY_INTEGER ?
		    rep->integer : 0);
		ctl_row_end(t);
	}
	ctl_table_end(t);
	ctl_batch_free(b);
	for (i = 0; i < n; i++)
		free(keys[i]);
	return CTL_OK;
}

/*
 * keys: the names senderwatch-shim -k prints (shim/decide.c), line for
 * line, from the same keyspace.h calls: every rule, or the one named.
 */
static void
ctl_keys_line(struct ctl *ctl, const char *rule, const char *what,
    const char *name)
{
	struct ctl_obj	*o;

	if (!ctl->json) {
		printf("%s %s %s\n", rule, what, name);
		return;
	}
	o = ctl_obj_new();
	ctl_obj_str(o, "rule", rule, strlen(rule));
	ctl_obj_str(o, "what", what, strlen(what));
	ctl_obj_value(o, "name", name, strlen(name));
	ctl_obj_end(o);
}

int
ctl_cmd_keys(struct ctl *ctl, int argc, char **argv)
{
	const struct keyspace_shards	*sh = ctl->conf->shards;
	const struct conf_rule		*rules[256];
	const char			*cmd = argv[0], *rule = NULL;
	struct ctl_key			*k;
	char				 key[KEY_MAX + 1], slot[16];
	size_t				 n, i, j, len;
	int				 ch;

	while ((ch = getopt(argc, argv, "r:")) != -1) {
		if (ch != 'r')
			ctl_usage(cmd, NULL);
		rule = optarg;
	}
	if (argc - optind != 1)
		ctl_usage(cmd, argc - optind < 1 ? "no KEY" : "one KEY only");
	if (ctl->conf->nrules > sizeof(rules) / sizeof(rules[0]))
		ctl_fatal("more than %zu rules", sizeof(rules) /
		    sizeof(rules[0]));
	len = ctl_key_arg(cmd, argv[optind], key);
	n = ctl_rules(ctl, cmd, rule, rule == NULL, rules);
	for (i = 0; i < n; i++) {
		if ((k = ctl_key_new(ctl->conf, rules[i], key, len)) == NULL)
			return CTL_FAILED;
		for (j = 0; j < k->rule->nlimits; j++) {
			ctl_keys_line(ctl, k->rule->name, "count", k->state[j]);
			ctl_keys_line(ctl, k->rule->name, "crossed",
			    k->crossed[j]);
		}
		ctl_keys_line(ctl, k->rule->name, "subjects", k->subjects);
		ctl_keys_line(ctl, k->rule->name, "override", k->override);
		ctl_keys_line(ctl, k->rule->name, "stream",
		    sh->stream[k->shard]);
		if (sh->tag_len[k->shard] > 0) {
			snprintf(slot, sizeof(slot), "%u", sh->slot[k->shard]);
			ctl_keys_line(ctl, k->rule->name, "slot", slot);
		}
		free(k);
	}
	return CTL_OK;
}

/* top: the N highest counts, kept sorted, highest first. */
struct ctl_top_entry {
	char		*ekey;
	size_t		 elen;
	int64_t		 count;
};

struct ctl_top {
	struct ctl		*ctl;
	const struct conf_rule	*rule;
	const char		*tail;		/* the counter's, of limit 1 */
	size_t			 tail_len;
	struct ctl_top_entry	*e;
	size_t			 n, max;
	unsigned long long	 matched;
};

/* A glob's literal text: Redis's MATCH special characters escaped. */
static void
ctl_top_glob(char *dst, size_t dstlen, const char *s, size_t len)
{
	size_t	 i, o = 0;

	for (i = 0; i < len && o + 2 < dstlen; i++) {
		if (strchr("*?[]\\", s[i]) != NULL)
			dst[o++] = '\\';
		dst[o++] = s[i];
	}
	dst[o] = '\0';
}

/*
 * The MATCH pattern of the rule's counters: the name keyspace_name()
 * makes for an empty key, as a literal, with a shard's tag (Cluster) made
 * "{*}:", and "*" for the key.  A name it matches is taken only when it
 * is exactly the name keyspace.h makes for the key it ends with (see
 * ctl_top_key), so the glob need not be exact.
 */
static void
ctl_top_pattern(const struct ctl_top *tp, char *pat, size_t patlen)
{
	const struct keyspace_shards	*sh = tp->ctl->conf->shards;
	char				 head[CTL_NAME_MAX];
	size_t				 o;

	if (keyspace_name(head, sizeof(head), tp->ctl->conf, 0, tp->tail, "",
	    0) == -1)
		ctl_fatal("the rule's key names are too long");
	if (sh->tag_len[0] == 0) {
		ctl_top_glob(pat, patlen - 2, head, strlen(head));
	} else {
		ctl_top_glob(pat, patlen - 8, head, sh->prefix_len);
		o = strlen(pat);
		snprintf(pat + o, patlen - o - 2, "{*}:");
		o = strlen(pat);
		ctl_top_glob(pat + o, patlen - o - 2, head + sh->prefix_len +
		    sh->tag_len[0], strlen(head + sh->prefix_len +
		    sh->tag_len[0]));
	}
	o = strlen(pat);
	snprintf(pat + o, patlen - o, "*");
}

/* The escaped key of a counter name, or -1 when it is not one of ours. */
static int
ctl_top_key(const struct ctl_top *tp, const char *name, size_t len,
    const char **ekey, size_t *elen)
{
	const struct conf		*c = tp->ctl->conf;
	const struct keyspace_shards	*sh = c->shards;
	char				 again[CTL_NAME_MAX];
	const char			*p, *end = name + len;
	size_t				 shard;

	if (len < sh->prefix_len || memcmp(name, sh->prefix,
	    sh->prefix_len) != 0)
		return -1;
	p = name + sh->prefix_len;
	if (sh->tag_len[0] > 0) {	/* skip "{TAG}:" */
		if (p == end || *p != '{' ||
		    (p = memchr(p, '}', (size_t)(end - p))) == NULL ||
		    ++p == end || *p++ != ':')
			return -1;
	}
	if ((size_t)(end - p) < tp->tail_len ||
	    memcmp(p, tp->tail, tp->tail_len) != 0)
		return -1;
	*ekey = p + tp->tail_len;
	*elen = (size_t)(end - *ekey);
	/* The name keyspace.h makes for that key must be this very one. */
	shard = keyspace_shard_of(sh, *ekey, *elen);
	if (keyspace_name(again, sizeof(again), c, shard, tp->tail, *ekey,
	    *elen) != (int)len || memcmp(again, name, len) != 0)
		return -1;
	return 0;
}

static void
ctl_top_add(struct ctl_top *tp, const char *ekey, size_t elen,
    int64_t count)
{
	struct ctl_top_entry	 e;
	size_t			 i, pos;

	/* SCAN may return a name twice. */
	for (i = 0; i < tp->n; i++)
		if (tp->e[i].elen == elen && memcmp(tp->e[i].ekey, ekey,
		    elen) == 0)
			return;
	if (tp->n == tp->max && count <= tp->e[tp->n - 1].count)
		return;
	for (pos = tp->n; pos > 0 && tp->e[pos - 1].count < count; pos--)
		;
	if (tp->n == tp->max) {
		free(tp->e[tp->n - 1].ekey);
		tp->n--;
	}
	memmove(&tp->e[pos + 1], &tp->e[pos], (tp->n - pos) * sizeof(e));
	if ((e.ekey = malloc(elen + 1)) == NULL)
		ctl_fatal("out of memory");
	memcpy(e.ekey, ekey, elen);
	e.ekey[elen] = '\0';
	e.elen = elen;
	e.count = count;
	tp->e[pos] = e;
	tp->n++;
}

/* Read back the counters of names[] (SCAN's replies), keep the highest. */
static void
ctl_top_read(struct ctl_top *tp, const redisReply **names,
    const unsigned *slots, size_t nmasters)
{
	const struct conf_limit	*l = &tp->rule->limits[0];
	struct ctl_batch	*b;
	const redisReply	*t, *list;
	const char		*ekey, *argv[5];
	size_t			 i, j, elen, *value, *pttl, *timei, nv = 0, k;
	long long		 ms, sec, usec, now_ms = 0;

	for (i = 0; i < nmasters; i++)
		if (names[i] != NULL)
			nv += names[i]->elements;
	if (nv == 0)
		return;
	if ((value = calloc(nv, sizeof(*value))) == NULL ||
	    (pttl = calloc(nv, sizeof(*pttl))) == NULL ||
	    (timei = calloc(nmasters, sizeof(*timei))) == NULL)
		ctl_fatal("out of memory");
	b = ctl_batch_new(tp->ctl);
	for (i = 0, k = 0; i < nmasters; i++) {
		if (names[i] == NULL)
			continue;
		timei[i] = ctl_batch_cmd(b, slots[i], 1,
		    (const char *[]){ "TIME" }, NULL);
		for (j = 0; j < names[i]->elements; j++, k++) {
			if (names[i]->element[j]->type != REDIS_REPLY_STRING)
				ctl_fatal("SCAN: an unexpected reply");
			argv[1] = names[i]->element[j]->str;
			if (tp->rule->algorithm == ALG_SLIDING) {
				argv[0] = "HMGET";
				argv[2] = "i";
				argv[3] = "c";
				argv[4] = "p";
				value[k] = ctl_batch_cmd(b, slots[i], 5, argv,
				    (const size_t[]){ 5,
				    names[i]->element[j]->len, 1, 1, 1 });
			} else {
				argv[0] = "GET";
				value[k] = ctl_batch_cmd(b, slots[i], 2, argv,
				    (const size_t[]){ 3,
				    names[i]->element[j]->len });
			}
			argv[0] = "PTTL";
			pttl[k] = ctl_batch_cmd(b, slots[i], 2, argv,
			    (const size_t[]){ 4, names[i]->element[j]->len });
		}
	}
	ctl_batch_run(b);
	ctl_batch_check(b);
	for (i = 0, k = 0; i < nmasters; i++) {
		if ((list = names[i]) == NULL)
			continue;
		t = ctl_reply_array(ctl_batch_ok(b, timei[i], "TIME"), 2,
		    "TIME");
		if (ctl_reply_int(t->element[0], &sec) == 0 &&
		    ctl_reply_int(t->element[1], &usec) == 0)
			now_ms = sec * 1000 + usec / 1000;
		for (j = 0; j < list->elements; j++, k++) {
			if (ctl_top_key(tp, list->element[j]->str,
			    list->element[j]->len, &ekey, &elen) == -1)
				continue;
			tp->matched++;
			if (ctl_reply_int(ctl_batch_ok(b, pttl[k], "PTTL"),
			    &ms) == -1)
				ms = -2;
			if (ms == -2)		/* gone meanwhile */
				continue;
			ctl_top_add(tp, ekey, elen, ctl_key_count(tp->rule, l,
			    1, ctl_batch_ok(b, value[k], "the counter"), ms,
			    now_ms));
		}
	}
	ctl_batch_free(b);
	free(value);
	free(pttl);
	free(timei);
}

static const struct ctl_col ctl_top_cols[] = {
	{ "rank", "RANK" }, { "count", "COUNT" }, { "rule", "RULE" },
	{ "key", "KEY" }, { NULL, NULL }
};
static const struct ctl_col ctl_top_summary[] = {
	{ "scanned", "SCANNED" }, { "matched", "MATCHED" },
	{ "masters", "MASTERS" }, { "cap", "CAP" },
	{ "cap_reached", "CAP_REACHED" }, { NULL, NULL }
};

int
ctl_cmd_top(struct ctl *ctl, int argc, char **argv)
{
	const struct conf_rule	*rules[1];
	const char		*cmd = argv[0], *rule = NULL, *sargv[6];
	struct ctl_top		 tp;
	struct ctl_batch	*b;
	struct ctl_table	*t;
	const redisReply	*rep, *names[CTL_MASTERS_MAX];
	unsigned		 slots[CTL_MASTERS_MAX];
	char			 cursor[CTL_MASTERS_MAX][32], pat[2 * CTL_NAME_MAX];
	char			 count[16];
	size_t			 nm, i, idx[CTL_MASTERS_MAX], active;
	unsigned long long	 scanned = 0;
	long			 n = 10;
	int			 ch, done[CTL_MASTERS_MAX], capped = 0;

	while ((ch = getopt(argc, argv, "r:n:")) != -1) {
		switch (ch) {
		case 'r':
			rule = optarg;
			break;
		case 'n':
			n = ctl_count_arg(cmd, "-n", optarg, CTL_TOP_MAX);
			break;
		default:
			ctl_usage(cmd, NULL);
		}
	}
	if (optind != argc)
		ctl_usage(cmd, "unexpected \"%s\"", argv[optind]);
	ctl_rules(ctl, cmd, rule, 0, rules);
	memset(&tp, 0, sizeof(tp));
	tp.ctl = ctl;
	tp.rule = rules[0];
	tp.tail = rules[0]->ks->state[0];
	tp.tail_len = rules[0]->ks->state_len[0];
	tp.max = (size_t)n;
	if ((tp.e = calloc(tp.max + 1, sizeof(*tp.e))) == NULL)
		ctl_fatal("out of memory");
	ctl_top_pattern(&tp, pat, sizeof(pat));
	snprintf(count, sizeof(count), "%d", CTL_TOP_SCAN_COUNT);

	ctl_redis_open(ctl, 0);
	ctl_redis_wait(ctl, NULL, 0);
	nm = ctl_redis_masters(ctl, slots, CTL_MASTERS_MAX);
	for (i = 0; i < nm; i++) {
		snprintf(cursor[i], sizeof(cursor[i]), "0");
		done[i] = 0;
	}
	/* A round: one SCAN on every master not done, then their reads. */
	for (active = nm; active > 0;) {
		if (scanned >= CTL_TOP_SCAN_CAP) {
			capped = 1;
			break;
		}
		b = ctl_batch_new(ctl);
		for (i = 0; i < nm; i++) {
			if (done[i])
				continue;
			sargv[0] = "SCAN";
			sargv[1] = cursor[i];
			sargv[2] = "MATCH";
			sargv[3] = pat;
			sargv[4] = "COUNT";
			sargv[5] = count;
			idx[i] = ctl_batch_cmd(b, slots[i], 6, sargv, NULL);
		}
		ctl_batch_run(b);
		for (i = 0; i < nm; i++) {
			names[i] = NULL;
			if (done[i])
				continue;
			rep = ctl_reply_array(ctl_batch_ok(b, idx[i], "SCAN"),
			    2, "SCAN");
			if (rep->element[0]->type != REDIS_REPLY_STRING ||
			    rep->element[0]->len >= sizeof(cursor[i]) ||
			    rep->element[1]->type != REDIS_REPLY_ARRAY)
				ctl_fatal("SCAN: an unexpected reply");
			memcpy(cursor[i], rep->element[0]->str,
			    rep->element[0]->len + 1);
			names[i] = rep->element[1];
			scanned += CTL_TOP_SCAN_COUNT;
			if (strcmp(cursor[i], "0") == 0) {
				done[i] = 1;
				active--;
			}
		}
		ctl_top_read(&tp, names, slots, nm);
		ctl_batch_free(b);
	}

	t = ctl_table_new(ctl, "key", ctl_top_cols);
	for (i = 0; i < tp.n; i++) {
		ctl_cell_int(t, (long long)i + 1);
		ctl_cell_int(t, (long long)tp.e[i].count);
		ctl_cell_text(t, tp.rule->name);
		ctl_cell_str(t, tp.e[i].ekey, tp.e[i].elen, CTL_ESCAPED);
		ctl_row_end(t);
		free(tp.e[i].ekey);
	}
	ctl_table_end(t);
	t = ctl_table_new(ctl, "summary", ctl_top_summary);
	ctl_cell_int(t, (long long)scanned);
	ctl_cell_int(t, (long long)tp.matched);
	ctl_cell_int(t, (long long)nm);
	ctl_cell_int(t, CTL_TOP_SCAN_CAP);
	ctl_cell_bool(t, capped);
	ctl_row_end(t);
	ctl_table_end(t);
	if (capped && !ctl->json)
		printf("the cap of %d keys scanned was reached: keys not "
		    "looked at may count more\n", CTL_TOP_SCAN_CAP);
	free(tp.e);
	return CTL_OK;
}
