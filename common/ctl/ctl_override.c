/*
 * ctl_override.c: runtime overrides of one key under one rule: allow,
 * block, factor (xF: the key's limits times F) and clear.  Each goes
 * through scripts/override.lua, on the key's node, which sets or deletes
 * PREFIX:override:RULE:KEY and announces the change on events.channel
 * ({"type":"override", ...}) with who did it and why: the same record
 * whether an admin used ctl or redis-cli --eval.  The key announced is
 * the escaped one, as threshold events name keys.
 */
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"

/* Who runs us, for the default note. */
static const char *
ctl_override_user(void)
{
	struct passwd	*pw;
	const char	*u;
	static char	 uid[24];

	if ((u = getenv("USER")) != NULL && *u != '\0')
		return u;
	if ((pw = getpwuid(getuid())) != NULL)
		return pw->pw_name;
	snprintf(uid, sizeof(uid), "uid %ld", (long)getuid());
	return uid;
}

/* F of factor: a number > 0, written as override.lua and count.lua read. */
static void
ctl_override_factor(const char *cmd, const char *arg, char *action,
    size_t len)
{
	char	*end;
	double	 f;

	errno = 0;
	f = strtod(arg, &end);
	/* The bound a config override's xF has (conf.c). */
	if (errno != 0 || end == arg || *end != '\0' || !(f > 0) ||
	    f > 1e6)
		ctl_usage(cmd, "F must be a number greater than 0 and at most "
		    "1000000, not \"%s\"", arg);
	snprintf(action, len, "x%.6g", f);
	if (strcmp(action, "x0") == 0)
		ctl_usage(cmd, "F is too small: \"%s\"", arg);
}

static const struct ctl_col ctl_override_cols[] = {
	{ "rule", "RULE" }, { "key", "KEY" }, { "action", "ACTION" },
	{ "ttl_s", "FOR" }, { "note", "NOTE" }, { NULL, NULL }
};

int
ctl_cmd_override(struct ctl *ctl, int argc, char **argv)
{
	const struct conf_rule	*rules[1];
	const char		*cmd = argv[0], *rule = NULL, *note = NULL;
	const char		*sargv[8], *d = NULL;
	struct ctl_key		*k;
	struct ctl_batch	*b;
	struct ctl_table	*t;
	const redisReply	*rep;
	char			 key[KEY_MAX + 1], action[40], ttl[24];
	char			 defnote[300], text[32];
	size_t			 len, sargvlen[8];
	int64_t			 ms = 0, secs = 0;
	int			 ch, clear = strcmp(cmd, "clear") == 0;
	int			 factor = strcmp(cmd, "factor") == 0, i;

	while ((ch = getopt(argc, argv, clear ? "r:" : "r:d:m:")) != -1) {
		switch (ch) {
		case 'r':
			rule = optarg;
			break;
		case 'd':
			d = optarg;
			break;
		case 'm':
			note = optarg;
			break;
		default:
			ctl_usage(cmd, NULL);
		}
	}
	if (argc - optind != 1 + factor)
		ctl_usage(cmd, argc - optind < 1 + factor ? "%s missing" :
		    "%s only", factor ? "KEY and F" : "KEY");
	len = ctl_key_arg(cmd, argv[optind], key);
	if (factor)
		ctl_override_factor(cmd, argv[optind + 1], action,
		    sizeof(action));
	else
		snprintf(action, sizeof(action), "%s", cmd);
	if (d != NULL) {
		/* override.lua keeps seconds: a part of one is a whole one. */
		if (conf_parse_duration(d, &ms) == -1 || ms <= 0)
			ctl_usage(cmd, "-d: a duration such as 30s, 5m, 24h or "
			    "7d, not \"%s\"", d);
		secs = (ms + 999) / 1000;
	}
	if (note == NULL) {
		snprintf(defnote, sizeof(defnote), "%s by %s", CTL_NAME,
		    ctl_override_user());
		note = defnote;
	}
	ctl_rules(ctl, cmd, rule, 0, rules);
	if ((k = ctl_key_new(ctl->conf, rules[0], key, len)) == NULL)
		return CTL_FAILED;

	ctl_redis_open(ctl, SCRIPT_BIT(SCRIPT_OVERRIDE));
	ctl_redis_wait(ctl, &k->slot, 1);
	snprintf(ttl, sizeof(ttl), "%lld", (long long)secs);
	/* numkeys, the override key; action, lifetime, channel, rule, key. */
	sargv[0] = "1";
	sargv[1] = k->override;
	sargv[2] = action;
	sargv[3] = ttl;
	sargv[4] = ctl->conf->events_channel;
	sargv[5] = k->rule->name;
	sargv[6] = k->ekey;
	sargv[7] = note;
	for (i = 0; i < 8; i++)
		sargvlen[i] = i == 6 ? k->elen : strlen(sargv[i]);
	b = ctl_batch_new(ctl);
	ctl_batch_script(b, k->slot, SCRIPT_OVERRIDE, 8, sargv, sargvlen);
	ctl_batch_run(b);
	rep = ctl_batch_ok(b, 0, "override.lua");
	if (rep->type != REDIS_REPLY_STATUS || strcmp(rep->str, "OK") != 0)
		ctl_fatal("override.lua: an unexpected reply");

	t = ctl_table_new(ctl, NULL, ctl_override_cols);
	ctl_cell_text(t, k->rule->name);
	ctl_cell_str(t, k->ekey, k->elen, CTL_ESCAPED);
	ctl_cell_text(t, action);
	if (clear)
		ctl_cell_null(t);
	else if (secs == 0) {
		if (ctl->json)
			ctl_cell_int(t, 0);
		else
			ctl_cell_text(t, "until-cleared");
	} else if (ctl->json)
		ctl_cell_int(t, secs);
	else
		ctl_cell_text(t, ctl_out_duration(secs * 1000, text,
		    sizeof(text)));
	ctl_cell_text(t, note);
	ctl_row_end(t);
	ctl_table_end(t);
	ctl_batch_free(b);
	free(k);
	return CTL_OK;
}
