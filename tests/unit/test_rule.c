/*
 * test_rule.c: unit tests for what a rule decides without Redis (rule.c):
 * key normalisation, allow/deny matching (exact, *@domain, CIDR) and
 * per-key overrides, on rules loaded by the real config loader.
 * Prints one final line "N passed, N failed".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "keyspace.h"
#include "rule.h"
#include "check.h"


static const char config[] =
    "rules:\n"
    "  default: { limit: 1, window: 1s }\n"
    "  all:\n"
    "    limit: 1\n"
    "    window: 1s\n"
    "    normalize: [ lowercase, strip_tag ]\n"
    "    allow: [ \"*@Trusted.example\", ceo@example.org, 10.0.0.0/8,\n"
    "             \"2001:db8::/32\", 192.0.2.128/25 ]\n"
    "    override: { carol@example.org: x2.5, bob@example.org: block }\n"
    "  domain: { limit: 1, window: 1s, normalize: [ lowercase_domain ] }\n";

static struct conf *
load(void)
{
	char		 path[] = "/tmp/sw-test-rule-XXXXXX", err[CONF_ERRLEN];
	struct conf	*c;
	int		 fd;

	if ((fd = mkstemp(path)) == -1 ||
	    write(fd, config, sizeof(config) - 1) != sizeof(config) - 1) {
		perror("mkstemp");
		exit(2);
	}
	close(fd);
	c = conf_load(path, NULL, err, sizeof(err));
	unlink(path);
	if (c == NULL) {
		printf("FAIL: %s\n", err);
		exit(1);
	}
	return c;
}

static int
norm_is(const struct conf_rule *r, const char *in, const char *want)
{
	char	 out[KEY_MAX];
	size_t	 len;

	len = keyspace_normalize(r, in, strlen(in), out);
	return len == strlen(want) && memcmp(out, want, len) == 0;
}

#define LISTED(r, k)	rule_listed((r)->allow, (r)->nallow, (k), strlen(k))

int
main(void)
{
	struct conf			*c = load();
	const struct conf_rule		*def, *all, *dom;
	const struct conf_override	*o;

	def = conf_rule_find(c, "default", 7);
	all = conf_rule_find(c, "all", 3);
	dom = conf_rule_find(c, "domain", 6);
	CHECK(def != NULL && all != NULL && dom != NULL);

	/* No normalisation: bytes as they came. */
	CHECK(norm_is(def, "Alice+x@Example.ORG", "Alice+x@Example.ORG"));
	/* Whole key lowercased, +tag stripped from the local part only. */
	CHECK(norm_is(all, "Alice+News@Example.ORG", "alice@example.org"));
	CHECK(norm_is(all, "a+b+c@d.example", "a@d.example"));
	CHECK(norm_is(all, "+tag@d.example", "+tag@d.example"));
	CHECK(norm_is(all, "no-at-sign+x", "no-at-sign+x"));
	CHECK(norm_is(all, "x@sub+dom.example", "x@sub+dom.example"));
	CHECK(norm_is(all, "<>", "<>"));
	/* The last @ separates the domain (quoted local parts may hold @). */
	CHECK(norm_is(dom, "\"A@B\"@EXAMPLE.org", "\"A@B\"@example.org"));
	CHECK(norm_is(dom, "Alice@Example.ORG", "Alice@example.org"));
	/* In place is safe: the output never runs ahead of the input. */
	{
		char	 buf[] = "Alice+News@Example.ORG";
		size_t	 len = keyspace_normalize(all, buf, strlen(buf), buf);

		CHECK(len == 17 && memcmp(buf, "alice@example.org", 17) == 0);
	}

	/* Lists: *@domain matches any case, exact keys exactly. */
	CHECK(LISTED(all, "x@trusted.example"));
	CHECK(LISTED(all, "x@TRUSTED.EXAMPLE"));
	CHECK(!LISTED(all, "x@untrusted.example"));
	CHECK(!LISTED(all, "x@sub.trusted.example"));
	CHECK(!LISTED(all, "trusted.example"));
	CHECK(LISTED(all, "ceo@example.org"));
	CHECK(!LISTED(all, "CEO@example.org"));
	CHECK(!LISTED(all, "ceo@example.org.evil"));
	/* CIDR: v4 and v6, prefix boundaries, and non-addresses. */
	CHECK(LISTED(all, "10.1.2.3"));
	CHECK(!LISTED(all, "11.0.0.1"));
	CHECK(LISTED(all, "192.0.2.128"));
	CHECK(LISTED(all, "192.0.2.255"));
	CHECK(!LISTED(all, "192.0.2.127"));
	CHECK(LISTED(all, "2001:db8::1"));
	CHECK(!LISTED(all, "2001:db9::1"));
	CHECK(!LISTED(all, "10.0.0.1@example.org"));
	CHECK(!LISTED(all, ""));

	/* Config overrides. */
	o = rule_override(all, "carol@example.org", 17);
	CHECK(o != NULL && o->action == OVR_FACTOR && o->factor == 2.5);
	o = rule_override(all, "bob@example.org", 15);
	CHECK(o != NULL && o->action == OVR_BLOCK);
	CHECK(rule_override(all, "bob@example.orgx", 16) == NULL);
	CHECK(rule_override(def, "bob@example.org", 15) == NULL);

	conf_free(c);
	return check_done();
}
