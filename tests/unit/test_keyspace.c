/*
 * test_keyspace.c: unit tests for the Redis contract (common/keyspace.c)
 * and the script registry's table (common/script.c): the escaping of keys
 * and its inverse, reserved rule names, key names, and the scripts held
 * to what the C side agrees with them on (the stream's fields in the
 * order count.lua writes them, the cost limit, each script's arity check
 * and contract header).  Prints one final line "N passed, N failed".
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "keyspace.h"
#include "request.h"
#include "resp.h"
#include "script.h"
#include "check.h"

static void
test_escape(void)
{
	char	 out[KEYSPACE_EKEY_MAX + 1];
	size_t	 n;

#define ESC(lit) keyspace_escape(out, sizeof(out), (lit), sizeof(lit) - 1)
	n = ESC("alice@example.org");
	CHECK(n == 17 && strcmp(out, "alice@example.org") == 0);
	/* Hash tags, the escape itself, controls, space, NUL, high bytes. */
	n = ESC("{evil}@example.org");
	CHECK(strcmp(out, "%7Bevil%7D@example.org") == 0 && n == 22);
	ESC("100%");
	CHECK(strcmp(out, "100%25") == 0);
	ESC("a\rb\nc d\te");
	CHECK(strcmp(out, "a%0Db%0Ac%20d%09e") == 0);
	n = ESC("nul\0byte");
	CHECK(n == 10 && strcmp(out, "nul%00byte") == 0);
	ESC("\xff\x7f\x80");
	CHECK(strcmp(out, "%FF%7F%80") == 0);
	/* ':' stays: the rule is fixed, so "a:b" cannot reach another rule. */
	ESC("<>");
	CHECK(strcmp(out, "<>") == 0);
#undef ESC

	/* The worst case of KEY_MAX bytes fits the buffer the shim uses. */
	{
		char	 key[KEY_MAX];

		memset(key, '{', sizeof(key));
		n = keyspace_escape(out, sizeof(out), key, sizeof(key));
		CHECK(n == KEY_MAX * 3);
		CHECK(strlen(out) == KEY_MAX * 3);
	}
	/* A short buffer truncates at a whole escape and stays terminated. */
	{
		char	 small[5];

		n = keyspace_escape(small, sizeof(small), "a{b", 3);
		CHECK(n == 4 && strcmp(small, "a%7B") == 0);
	}
}

static void
test_unescape(void)
{
	char	 d[64];
	size_t	 n;

	n = keyspace_unescape(d, "a%0D%0Ab%zz%4", 13);
	CHECK(n == 9 && memcmp(d, "a\r\nb%zz%4", 10) == 0);
	n = keyspace_unescape(d, "J%C3%BCrgen", 11);
	CHECK(n == 7 && strcmp(d, "J\xc3\xbcrgen") == 0);
	n = keyspace_unescape(d, "%", 1);
	CHECK(n == 1 && strcmp(d, "%") == 0);
	/* Lower-case hex is read too: a hand-made key, say. */
	n = keyspace_unescape(d, "%7b%7D", 6);
	CHECK(n == 2 && strcmp(d, "{}") == 0);
	n = keyspace_unescape(d, "%00", 3);
	CHECK(n == 1 && d[0] == '\0');
}

/* Every byte string comes back from escape and unescape unchanged. */
static void
test_round_trip(void)
{
	char		 key[KEY_MAX], e[KEYSPACE_EKEY_MAX + 1], back[KEY_MAX + 1];
	size_t		 len, elen, blen, i;
	unsigned	 seed = 1, ok = 1, printable = 1;
	int		 round;

	for (round = 0; round < 20000; round++) {
		len = (size_t)(seed = seed * 1103515245 + 12345) % KEY_MAX;
		for (i = 0; i < len; i++) {
			seed = seed * 1103515245 + 12345;
			/* Often the dangerous bytes, sometimes any byte. */
			key[i] = (seed >> 16) % 4 == 0 ? "%{} \r\n\0:"[(seed >>
			    20) % 9] : (char)(seed >> 20);
		}
		elen = keyspace_escape(e, sizeof(e), key, len);
		for (i = 0; i < elen; i++)
			if (!isgraph((unsigned char)e[i]) || e[i] == '{' ||
			    e[i] == '}')
				printable = 0;
		blen = keyspace_unescape(back, e, elen);
		if (blen != len || memcmp(back, key, len) != 0)
			ok = 0;
	}
	CHECK(ok);
	/* And an escaped name is printable, with no hash tag in it. */
	CHECK(printable);
}

static void
test_reserved(void)
{
	CHECK(keyspace_reserved("subjects"));
	CHECK(keyspace_reserved("crossed"));
	CHECK(keyspace_reserved("override"));
	CHECK(keyspace_reserved("alerter"));
	CHECK(!keyspace_reserved("default"));
	CHECK(!keyspace_reserved("Alerter"));
	CHECK(!keyspace_reserved("alerters"));
}

/* A config of the test's, parsed; NULL (and why, printed) on an error. */
static struct conf *
test_parse(const char *text, size_t len)
{
	struct conf	*c;
	char		 err[CONF_ERRLEN];

	c = conf_parse(text, len, "t.yaml", NULL, err, sizeof(err));
	CHECK(c != NULL);
	if (c == NULL)
		printf("  %s\n", err);
	return c;
}

static void
test_names(void)
{
	struct conf		*c;
	const struct conf_rule	*r;
	char			 name[256], *lease;
	static const char	 text[] =
	    "redis:\n  prefix: sw\n"
	    "rules:\n"
	    "  default: { limit: 20, window: 300s }\n"
	    "  user:\n    limits:\n      - { limit: 5, window: 5m }\n"
	    "      - { limit: 500, window: 1d, burst: 7 }\n";

	if ((c = test_parse(text, sizeof(text) - 1)) == NULL)
		return;
	r = conf_rule_find(c, "default", 7);
	CHECK(r != NULL && strcmp(r->ks->state[0], "default:") == 0);
	CHECK(r != NULL && strcmp(r->ks->crossed[0], "crossed:default:") ==
	    0);
	CHECK(r != NULL && strcmp(r->ks->subjects, "subjects:default:") ==
	    0);
	CHECK(r != NULL && strcmp(r->ks->override, "override:default:") ==
	    0);
	CHECK(r != NULL && strcmp(r->ks->limit_text[0][0], "20") == 0 &&
	    strcmp(r->ks->limit_text[0][1], "300000") == 0 &&
	    strcmp(r->ks->limit_text[0][2], "20") == 0);
	r = conf_rule_find(c, "user", 4);
	CHECK(r != NULL && strcmp(r->ks->state[0], "user.5m:") == 0 &&
	    strcmp(r->ks->state[1], "user.1d:") == 0);
	CHECK(r != NULL && strcmp(r->ks->crossed[1], "crossed:user.1d:") ==
	    0);
	CHECK(r != NULL && strcmp(r->ks->limit_text[1][2], "7") == 0);
	/* One shard, no tag, outside a Cluster: the names as they were. */
	CHECK(c->shards->n == 1 && strcmp(c->shards->stream[0],
	    "senderwatch:stream") == 0);
	CHECK(keyspace_name(name, sizeof(name), c, 0, r->ks->state[1],
	    "a%7Bb", 5) == 16 && strcmp(name, "sw:user.1d:a%7Bb") == 0);
	CHECK(keyspace_name(name, 10, c, 0, r->ks->state[1], "a", 1) == -1);
	CHECK((lease = keyspace_lease_key(c, "mta1")) != NULL &&
	    strcmp(lease, "sw:alerter:mta1") == 0);
	free(lease);
	conf_free(c);
}

/* The next RESP argument at *p (resp_at() order), or NULL past end. */
static const char *
resp_next(const char **p, const char *end, size_t *len)
{
	const char	*s = *p;
	char		*q;

	if (s >= end || *s != '$')
		return NULL;
	*len = strtoul(s + 1, &q, 10);
	s = q + 2;
	*p = s + *len + 2;
	return *p <= end ? s : NULL;
}

/*
 * A decision's keys in each of count.lua's forms agree: each declared
 * name is a named call's prefix (with the shard's tag, or in a node's
 * call the decision's own tag), its middle and the escaped key, in their
 * order; a node's call's stream is its base, ':' and the tag less its
 * colon; and each form fits the size its _size() function reserves.
 * Under a Cluster's tagged shards too.
 */
static void
test_decision_forms(void)
{
	struct conf		*c;
	const struct conf_rule	*r;
	struct keyspace_shards	*plain;
	const struct keyspace_shards *sh;
	struct resp		 out;
	char			 dk[4096], hd[4096], nd[4096];
	char			 want[512], stream[256];
	const char		*dp, *hp, *np, *a, *h, *pre, *e;
	size_t			 shard, j, elen, dlen, hlen, nlen, prelen, wlen;
	size_t			 alen = 0, hl = 0, n = 0;
	int			 tagged, node, same;
	static const char	 ekey[] = "b%7Bo%7Db@example.org";
	static const char	 text[] =
	    "rules:\n"
	    "  default: { limit: 20, window: 300s }\n"
	    "  user:\n    limits:\n      - { limit: 5, window: 5m }\n"
	    "      - { limit: 500, window: 1d }\n";

	elen = sizeof(ekey) - 1;
	if ((c = test_parse(text, sizeof(text) - 1)) == NULL)
		return;
	r = conf_rule_find(c, "user", 4);
	CHECK(r != NULL && keyspace_decision_nkeys(r) == 6);
	plain = c->shards;
	for (tagged = 0; r != NULL && tagged < 2; tagged++) {
		if (tagged && (c->shards = keyspace_shards_new("senderwatch",
		    "senderwatch:stream", 3, 1)) == NULL)
			break;
		sh = c->shards;
		for (shard = 0; shard < sh->n; shard++) {
			resp_at(&out, dk);
			keyspace_decision_keys(&out, c, r, shard, ekey, elen,
			    KEYSPACE_DECLARED);
			dlen = (size_t)(out.p - dk);
			CHECK(out.n == 6 && dlen <= keyspace_decision_size(c, r,
			    shard, elen, KEYSPACE_DECLARED));
			for (node = 0; node < 2; node++) {
				enum keyspace_form f = node ? KEYSPACE_NODE :
				    KEYSPACE_NAMED;

				resp_at(&out, hd);
				keyspace_decision_heads(&out, c, r, shard, f);
				hlen = (size_t)(out.p - hd);
				CHECK(out.n == 7 + node && hlen <=
				    keyspace_decision_heads_size(c, r, shard, f));
				hp = hd;
				pre = resp_next(&hp, hd + hlen, &prelen);
				CHECK(pre != NULL);
				if (pre == NULL)
					break;
				dp = dk;
				for (j = 0, same = 1; j < 6; j++) {
					a = resp_next(&dp, dk + dlen, &alen);
					h = resp_next(&hp, hd + hlen, &hl);
					wlen = (size_t)snprintf(want,
					    sizeof(want), "%.*s%s%.*s%s",
					    (int)prelen, pre, node ?
					    sh->tag[shard] : "", (int)hl,
					    h != NULL ? h : "", ekey);
					same = same && a != NULL && h != NULL &&
					    alen == wlen &&
					    memcmp(a, want, wlen) == 0 &&
					    (!tagged || strstr(want,
					    sh->tag[shard]) != NULL);
				}
				CHECK(same && dp == dk + dlen);
				if (node) {
					h = resp_next(&hp, hd + hlen, &hl);
					snprintf(stream, sizeof(stream),
					    "%.*s%s%.*s", (int)hl,
					    h != NULL ? h : "", tagged ? ":" :
					    "", (int)(tagged ?
					    sh->tag_len[shard] - 1 : 0),
					    sh->tag[shard]);
					CHECK(h != NULL && strcmp(stream,
					    sh->stream[shard]) == 0);
				}
				CHECK(hp == hd + hlen);
				/* What each decision brings: its key, after
				 * its tag in a node's call. */
				resp_at(&out, nd);
				keyspace_decision_keys(&out, c, r, shard, ekey,
				    elen, f);
				nlen = (size_t)(out.p - nd);
				np = nd;
				if (node) {
					e = resp_next(&np, nd + nlen, &n);
					CHECK(e != NULL &&
					    n == sh->tag_len[shard] &&
					    memcmp(e, sh->tag[shard], n) == 0);
				}
				e = resp_next(&np, nd + nlen, &n);
				CHECK(out.n == 1 + node && e != NULL &&
				    n == elen && memcmp(e, ekey, elen) == 0 &&
				    np == nd + nlen && nlen <=
				    keyspace_decision_size(c, r, shard, elen,
				    f));
			}
		}
		if (tagged)
			keyspace_shards_free(c->shards);
	}
	c->shards = plain;
	conf_free(c);
}

/* The names count.lua's XADD writes, in order, from its text. */
static size_t
xadd_fields(const char *body, char names[][32], size_t max)
{
	const char	*p, *q;
	size_t		 n = 0, len;
	int		 field = 1;

	if ((p = strstr(body, "('XADD', stream")) == NULL ||
	    (p = strstr(p, "'*',")) == NULL)
		return 0;
	p += 4;
	/* 'name', value, 'name', value ... ) */
	while (n < max && (p = strpbrk(p, "',)")) != NULL && *p != ')') {
		if (*p == ',') {
			field = !field;
			p++;
			continue;
		}
		q = strchr(p + 1, '\'');
		if (q == NULL)
			break;
		len = (size_t)(q - p - 1);
		if (field && len < 32) {
			memcpy(names[n], p + 1, len);
			names[n++][len] = '\0';
		}
		p = q + 1;
	}
	return n;
}

static void
test_stream_fields(void)
{
	char	 names[32][32];
	size_t	 n, i;
	int	 same;

	n = xadd_fields(script_defs[SCRIPT_COUNT].body, names, 32);
	CHECK(n == KSF_MAX);
	same = n == KSF_MAX;
	for (i = 0; same && i < n; i++)
		if (strcmp(names[i], keyspace_fields[i]) != 0) {
			printf("  count.lua writes %s where keyspace_fields "
			    "has %s\n", names[i], keyspace_fields[i]);
			same = 0;
		}
	CHECK(same);
	CHECK(keyspace_field("window_ms", 9) == KSF_WINDOW_MS);
	CHECK(keyspace_field("window", 6) == -1);
	CHECK(keyspace_field("limit_index", 11) == -1);
}

static void
test_scripts(void)
{
	char	 want[64];
	size_t	 i, j;
	int	 hex;

	/* The shim refuses costs above this; the script must agree. */
	CHECK(REQUEST_COST_MAX == KEYSPACE_COST_MAX);
	snprintf(want, sizeof(want), "local COST_MAX = %d", KEYSPACE_COST_MAX);
	CHECK(strstr(script_defs[SCRIPT_COUNT].body, want) != NULL);
	for (i = 0; i < SCRIPT_MAX; i++) {
		hex = strlen(script_defs[i].sha) == 40;
		for (j = 0; hex && j < 40; j++)
			hex = isxdigit((unsigned char)script_defs[i].sha[j]);
		CHECK(hex);
		/* Each states its contract and checks its own arity. */
		CHECK(strstr(script_defs[i].body, "KEYS[1]") != NULL);
		CHECK(strstr(script_defs[i].body, "Reply:") != NULL);
		CHECK(strstr(script_defs[i].body, "#KEYS") != NULL);
		CHECK(strstr(script_defs[i].body, "redis.error_reply") != NULL);
	}
}

int
main(void)
{
	test_escape();
	test_unescape();
	test_round_trip();
	test_reserved();
	test_names();
	test_decision_forms();
	test_stream_fields();
	test_scripts();
	return check_done();
}
