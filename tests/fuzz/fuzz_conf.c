/*
 * fuzz_conf.c: libFuzzer target for the config loader (common/conf.c).
 *
 * conf_load() reads a file, so each input is written to a memfd and loaded
 * through /proc/self/fd/N: no disk, no temporary names to clean up.  The
 * loader must either give a config that keeps the promises the daemons
 * rely on, or NULL with an error naming the file; LeakSanitizer checks
 * that every error path frees what it built.  A SIGHUP reload runs this
 * same code in a live daemon, so a leak or crash here is one there too.
 */
#include <sys/mman.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "conf.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static int	 fuzz_fd = -1;
static char	 fuzz_path[64];

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
	    c->redis_on_error == NULL || c->hostname == NULL)
		abort();
	/* Exim's condition reads the answer: only these two may come out. */
	if (strcasecmp(c->redis_on_error, "yes") != 0 &&
	    strcasecmp(c->redis_on_error, "no") != 0)
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

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct conf	*c;
	char		 err[CONF_ERRLEN];

	if (fuzz_fd == -1) {
		if ((fuzz_fd = memfd_create("fuzz_conf", 0)) == -1) {
			perror("memfd_create");
			exit(1);
		}
		snprintf(fuzz_path, sizeof(fuzz_path), "/proc/self/fd/%d",
		    fuzz_fd);
	}
	if (ftruncate(fuzz_fd, 0) == -1 ||
	    pwrite(fuzz_fd, data, size, 0) != (ssize_t)size) {
		perror("memfd write");
		exit(1);
	}

	err[0] = '\0';
	if ((c = conf_load(fuzz_path, err, sizeof(err))) == NULL) {
		/* Every refusal says which file, for the operator. */
		if (strncmp(err, fuzz_path, strlen(fuzz_path)) != 0)
			abort();
		return 0;
	}
	if (strcmp(c->path, fuzz_path) != 0)
		abort();
	check_conf(c);
	conf_free(c);
	return 0;
}
