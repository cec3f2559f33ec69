/*
 * fuzz_conf.c: libFuzzer target for the config loader (common/conf.c).
 *
 * Each input goes to conf_parse(), the loader without the file, with a
 * daemon-like check that reports through conf_fail().  The loader must
 * either give a config that keeps the promises the daemons rely on, or
 * NULL with an error naming the file and a line; LeakSanitizer checks that
 * every error path frees what it built.  A SIGHUP reload runs this same
 * code in a live daemon, so a leak or crash here is one there too.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

#define FUZZ_NAME	"fuzz.yaml"

static int
no_line_break(const char *s)
{
	return s == NULL || strpbrk(s, "\r\n") == NULL;
}

/* What a config that loaded must look like, whatever the input was. */
static void
check_conf(const struct conf *c)
{
	size_t	 i;

	if (c->nrules == 0 || conf_rule_find(c, "default", 7) == NULL)
		abort();
	for (i = 0; i < c->nrules; i++)
		if (c->rules[i].name[0] == '\0' ||
		    strlen(c->rules[i].name) >= CONF_NAME_MAX)
			abort();
	if (c->redis_address == NULL || c->redis_prefix == NULL ||
	    c->hostname == NULL)
		abort();
	/* Exim's condition reads the answer: only yes or no may come out. */
	if (c->redis_on_error != 0 && c->redis_on_error != 1)
		abort();
	for (i = 0; i < c->nrules; i++)
		if (c->rules[i].ks == NULL || c->rules[i].nlimits == 0 ||
		    c->rules[i].nlimits > CONF_LIMITS_MAX)
			abort();
	for (i = 0; i < c->nlisten; i++)
		if (c->listen[i].addr[0] != '/' &&
		    strncmp(c->listen[i].addr, "inet:", 5) != 0)
			abort();
	/* These reach Redis key names, log lines and mail headers. */
	if (!no_line_break(c->redis_prefix) || !no_line_break(c->hostname) ||
	    !no_line_break(c->events_channel) ||
	    !no_line_break(c->events_stream) ||
	    !no_line_break(c->alerts_from) ||
	    !no_line_break(c->alerts_subject))
		abort();
	if (c->redis_timeout_ms < 1 || c->client_timeout_ms < 1 ||
	    c->max_clients < 1 || c->max_request < 1)
		abort();
}

/* A daemon's check: it must be able to name any option's line. */
static int
fuzz_check(struct conf_ctx *cx, const struct conf *c)
{
	if (c->max_clients == 7)
		return conf_fail(cx, &c->max_clients, "seven");
	if (c->alerts_to != NULL && strcmp(c->alerts_to[0], "x") == 0)
		return conf_fail(cx, &c->alerts_to, "x");
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct conf	*c;
	char		 err[CONF_ERRLEN];

	err[0] = '\0';
	if ((c = conf_parse((const char *)data, size, FUZZ_NAME, fuzz_check,
	    err, sizeof(err))) == NULL) {
		/* Every refusal says which file, for the operator. */
		if (strncmp(err, FUZZ_NAME ":", strlen(FUZZ_NAME) + 1) != 0)
			abort();
		return 0;
	}
	if (strcmp(c->path, FUZZ_NAME) != 0)
		abort();
	check_conf(c);
	conf_free(c);
	return 0;
}
