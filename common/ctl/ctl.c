/*
 * ctl.c: senderwatch-ctl's main: the global options, the command table,
 * usage, and the argument helpers every command parses with (see ctl.h).
 *
 *   senderwatch-ctl [-c FILE] [-j] COMMAND [ARGS]
 *
 * The configuration is the daemons' own file, read with their loader: the
 * key names, the layout and the control sockets are those the daemons use.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "log.h"

#ifndef SW_VERSION
#define SW_VERSION	"dev"
#endif

struct ctl_command {
	const char	*name;
	int		(*fn)(struct ctl *, int, char **);
	const char	*usage;
};

static const struct ctl_command ctl_commands[] = {
	{ "show", ctl_cmd_show, "show KEY [-r RULE | -a]" },
	{ "reset", ctl_cmd_reset, "reset KEY [-r RULE | -a]" },
	{ "allow", ctl_cmd_override,
	    "allow KEY [-r RULE] [-d DURATION] [-m WHY]" },
	{ "block", ctl_cmd_override,
	    "block KEY [-r RULE] [-d DURATION] [-m WHY]" },
	{ "factor", ctl_cmd_override,
	    "factor KEY F [-r RULE] [-d DURATION] [-m WHY]" },
	{ "clear", ctl_cmd_override, "clear KEY [-r RULE]" },
	{ "crossings", ctl_cmd_crossings, "crossings [-n N] [-f]" },
	{ "pending", ctl_cmd_pending, "pending" },
	{ "top", ctl_cmd_top, "top [-r RULE] [-n N]" },
	{ "keys", ctl_cmd_keys, "keys KEY [-r RULE]" },
	{ "stats", ctl_cmd_control, "stats [shim|alerter]" },
	{ "status", ctl_cmd_control, "status [shim|alerter]" },
	{ "reload", ctl_cmd_control, "reload [shim|alerter]" },
	{ NULL, NULL, NULL }
};

static void
ctl_print_usage(FILE *f)
{
	const struct ctl_command	*c;

	fprintf(f, "usage: %s [-c FILE] [-j] COMMAND [ARGS]\n", CTL_NAME);
	for (c = ctl_commands; c->name != NULL; c++)
		fprintf(f, "       %s [-c FILE] [-j] %s\n", CTL_NAME, c->usage);
	fprintf(f, "KEY as the shim is asked it, or %%XX-escaped as shown "
	    "(a literal %% is %%25)\n");
}

void
ctl_fatal(const char *fmt, ...)
{
	va_list	 ap;

	fflush(stdout);
	fprintf(stderr, "%s: ", CTL_NAME);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(CTL_FAILED);
}

void
ctl_usage(const char *cmd, const char *fmt, ...)
{
	const struct ctl_command	*c;
	va_list				 ap;

	fflush(stdout);
	if (fmt != NULL) {
		fprintf(stderr, "%s: ", CTL_NAME);
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
		fputc('\n', stderr);
	}
	for (c = ctl_commands; cmd != NULL && c->name != NULL; c++)
		if (strcmp(c->name, cmd) == 0) {
			fprintf(stderr, "usage: %s [-c FILE] [-j] %s\n",
			    CTL_NAME, c->usage);
			exit(CTL_USAGE);
		}
	ctl_print_usage(stderr);
	exit(CTL_USAGE);
}

/*
 * The rule a command names: -r RULE, or every rule with -a, or by default
 * the one named "default" (the config requires it; the first rule should
 * a later version not).
 */
size_t
ctl_rules(const struct ctl *ctl, const char *cmd, const char *name, int all,
    const struct conf_rule **rules)
{
	const struct conf	*c = ctl->conf;
	const struct conf_rule	*r;
	size_t			 i;

	if (all) {
		for (i = 0; i < c->nrules; i++)
			rules[i] = &c->rules[i];
		return c->nrules;
	}
	if (name != NULL) {
		if ((r = conf_rule_find(c, name, strlen(name))) == NULL)
			ctl_usage(cmd, "no rule \"%s\" in %s", name, c->path);
		rules[0] = r;
		return 1;
	}
	if ((r = conf_rule_find(c, "default", 7)) == NULL) {
		if (c->nrules == 0)
			ctl_fatal("%s has no rules", c->path);
		r = &c->rules[0];
	}
	rules[0] = r;
	return 1;
}

/*
 * A key on the command line: as a client sends it, or as ctl and the key
 * names show it, %XX-escaped (a key with a NUL or a newline can only be
 * given so).  keyspace_escape() writes a literal % as %25, so unescaping
 * what it wrote gives the key back; a % that starts no escape stays.
 */
size_t
ctl_key_arg(const char *cmd, const char *arg, char *key)
{
	char	 raw[KEYSPACE_EKEY_MAX + 1];
	size_t	 len = strlen(arg);

	if (len > KEYSPACE_EKEY_MAX)
		ctl_usage(cmd, "a key is at most %d bytes", KEY_MAX);
	len = keyspace_unescape(raw, arg, len);
	if (len > KEY_MAX)
		ctl_usage(cmd, "a key is at most %d bytes", KEY_MAX);
	memcpy(key, raw, len);
	key[len] = '\0';
	return len;
}

long
ctl_count_arg(const char *cmd, const char *opt, const char *arg, long max)
{
	char	*end;
	long	 v;

	errno = 0;
	v = strtol(arg, &end, 10);
	if (errno != 0 || end == arg || *end != '\0' || v < 1 || v > max)
		ctl_usage(cmd, "%s: a number from 1 to %ld, not \"%s\"", opt,
		    max, arg);
	return v;
}

int
main(int argc, char *argv[])
{
	const struct ctl_command	*c;
	struct ctl			 ctl;
	char				 err[CONF_ERRLEN];
	int				 ch, rc;

	memset(&ctl, 0, sizeof(ctl));
	ctl.conf_path = SW_SYSCONFDIR "/senderwatch/config.yaml";
	/* "+": the options stop at the command, whose own follow it. */
	while ((ch = getopt(argc, argv, "+c:jhV")) != -1) {
		switch (ch) {
		case 'c':
			ctl.conf_path = optarg;
			break;
		case 'j':
			ctl.json = 1;
			break;
		case 'h':
			ctl_print_usage(stdout);
			return CTL_OK;
		case 'V':
			printf("%s %s\n", CTL_NAME, SW_VERSION);
			return CTL_OK;
		default:
			ctl_usage(NULL, NULL);
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1)
		ctl_usage(NULL, "no command");
	for (c = ctl_commands; c->name != NULL; c++)
		if (strcmp(c->name, argv[0]) == 0)
			break;
	if (c->name == NULL)
		ctl_usage(NULL, "unknown command \"%s\"", argv[0]);

	/* What rconn and cluster.c log goes to stderr, as ours does. */
	log_init(CTL_NAME, 1);
	log_set_quiet(1);
	if ((ctl.conf = conf_load(ctl.conf_path, NULL, err, sizeof(err))) ==
	    NULL)
		ctl_fatal("%s", err);
	ctl.wait_s = (double)ctl.conf->redis_timeout_ms / 1000. + 2.;
	if ((ctl.loop = ev_default_loop(0)) == NULL)
		ctl_fatal("cannot make an event loop");

	/* The command's own options: getopt again, from its name. */
	optind = 0;
	rc = c->fn(&ctl, argc, argv);
	if (fflush(stdout) == EOF || ferror(stdout))
		ctl_fatal("stdout: %s", strerror(errno));
	ctl_redis_close(&ctl);
	conf_free(ctl.conf);
	return rc;
}
