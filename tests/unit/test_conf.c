/*
 * test_conf.c: unit tests for the config loader (common/conf.c).
 *
 * Each case writes a small YAML file into a private temporary directory
 * and loads it with conf_load(): good files must give exactly the values
 * written (and the documented defaults for what is left out); bad ones
 * must fail with exactly "file:line: what", because that line is all an
 * admin sees from `senderwatch-shim -n` or a failed SIGHUP.  The shipped
 * config.yaml must load too.  Prints one final line "N passed, N failed".
 */
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "shim.h"
#include "check.h"

/*
 * The Makefile links every shim object but main.o; session.c and
 * listener.c refer to the global that main.c defines, so it lives here.
 */
struct shim shim;

static char	 tmpdir[] = "/tmp/sw-test-conf-XXXXXX";
static char	 path[sizeof(tmpdir) + 32];
static unsigned	 nfiles;

static int
streq(const char *a, const char *b)
{
	return a != NULL && b != NULL && strcmp(a, b) == 0;
}

/* Write text to a new file in tmpdir; path names it afterwards. */
static const char *
put(const char *text)
{
	FILE	*fp;

	snprintf(path, sizeof(path), "%s/c%u.yaml", tmpdir, nfiles++);
	if ((fp = fopen(path, "w")) == NULL || fputs(text, fp) == EOF ||
	    fclose(fp) == EOF) {
		perror(path);
		exit(2);
	}
	return path;
}

/* A minimal valid file: everything else takes its default. */
#define RULES_OK	"rules:\n  default: { limit: 20, window: 300s }\n"

static void
test_good(void)
{
	struct conf		*c;
	const struct conf_rule	*r;
	char			 err[CONF_ERRLEN];

	c = conf_load(put(
	    "# every option that the shim and the events use\n"
	    "shim:\n"
	    "  listen: [ /run/sw/a.sock, \"inet:127.0.0.1:7025\" ]\n"
	    "  socket_mode: \"0640\"\n"
	    "  socket_group: Debian-exim\n"
	    "  user: senderwatch\n"
	    "  group: senderwatch\n"
	    "  client_timeout: 250ms\n"
	    "  max_clients: 10\n"
	    "  max_request: 1024\n"
	    "  hostname: mta1.example.org\n"
	    "redis:\n"
	    "  address: unix:/run/sw/redis.sock\n"
	    "  username: sw\n"
	    "  password: \"s3cret: yes\"\n"
	    "  database: 3\n"
	    "  timeout: 2s\n"
	    "  on_error: \"yes\"\n"
	    "  prefix: swtest\n"
	    "events:\n"
	    "  channel: sw:ch\n"
	    "  stream: sw:st\n"
	    "  stream_maxlen: 500\n"
	    "  group: grp\n"
	    "rules:\n"
	    "  default: { limit: 20, window: 300s }\n"
	    "  ip:\n"
	    "    limit: 0\n"
	    "    window: 1h\n"
	    "  per-day_2: { window: 2d, limit: 1000 }\n"
	    "alerts:\n"
	    "  from: sysadmin@example.com\n"
	    "  to: [ director@example.com, boss@example.com ]\n"
	    "  cc: lackey@example.com\n"
	    "  subject: Mail Abuse Alert\n"
	    "  smtp: localhost:2525\n"
	    "  smtp_starttls: \"no\"\n"
	    "  digest_wait: 5m\n"
	    "  digest_max: 7\n"), NULL, err, sizeof(err));
	CHECK(c != NULL);
	if (c == NULL) {
		printf("  error: %s\n", err);
		return;
	}
	CHECK(streq(c->path, path));
	CHECK(c->nlisten == 2);
	CHECK(c->nlisten == 2 && streq(c->listen[0].addr, "/run/sw/a.sock"));
	CHECK(c->nlisten == 2 &&
	    streq(c->listen[1].addr, "inet:127.0.0.1:7025"));
	CHECK(c->socket_mode == 0640);
	CHECK(streq(c->socket_group, "Debian-exim"));
	CHECK(streq(c->user, "senderwatch"));
	CHECK(streq(c->group, "senderwatch"));
	CHECK(c->client_timeout_ms == 250);
	CHECK(c->max_clients == 10);
	CHECK(c->max_request == 1024);
	CHECK(streq(c->hostname, "mta1.example.org"));
	CHECK(streq(c->redis_address, "unix:/run/sw/redis.sock"));
	CHECK(streq(c->redis_username, "sw"));
	CHECK(streq(c->redis_password, "s3cret: yes"));
	CHECK(c->redis_database == 3);
	CHECK(c->redis_timeout_ms == 2000);
	CHECK(c->redis_on_error == 1);
	CHECK(streq(c->redis_prefix, "swtest"));
	CHECK(streq(c->events_channel, "sw:ch"));
	CHECK(streq(c->events_stream, "sw:st"));
	CHECK(c->events_stream_maxlen == 500);
	CHECK(streq(c->events_group, "grp"));
	CHECK(c->nrules == 3);
	CHECK((r = conf_rule_find(c, "default", 7)) != NULL &&
	    r->limits[0].limit == 20 && r->limits[0].window_ms == 300000);
	CHECK((r = conf_rule_find(c, "ip", 2)) != NULL &&
	    r->limits[0].limit == 0 && r->limits[0].window_ms == 3600000);
	CHECK((r = conf_rule_find(c, "per-day_2", 9)) != NULL &&
	    r->limits[0].limit == 1000 &&
	    r->limits[0].window_ms == 2 * 86400000LL);
	/* Lookups take a length: a prefix or a longer name is no match. */
	CHECK(conf_rule_find(c, "defaul", 6) == NULL);
	CHECK(conf_rule_find(c, "ipx", 3) == NULL);
	CHECK(conf_rule_find(c, "ip\0", 3) == NULL);
	CHECK(conf_rule_find(c, "", 0) == NULL);
	CHECK(streq(c->alerts_from, "sysadmin@example.com"));
	CHECK(c->alerts_nto == 2 && streq(c->alerts_to[0],
	    "director@example.com") && streq(c->alerts_to[1],
	    "boss@example.com") && c->alerts_to[2] == NULL);
	CHECK(c->alerts_ncc == 1 && streq(c->alerts_cc[0],
	    "lackey@example.com") && c->alerts_cc[1] == NULL);
	CHECK(streq(c->alerts_subject, "Mail Abuse Alert"));
	CHECK(streq(c->alerts_smtp, "localhost:2525"));
	CHECK(c->alerts_smtp_starttls == 0);
	CHECK(c->alerts_digest_wait_ms == 300000);
	CHECK(c->alerts_digest_max == 7);
	conf_free(c);

	/* sendmail instead of smtp: an argv; smtp then stays unset. */
	c = conf_load(put(RULES_OK
	    "alerts:\n"
	    "  sendmail: [ /usr/sbin/sendmail, -t, -oi ]\n"), NULL, err,
	    sizeof(err));
	CHECK(c != NULL);
	if (c != NULL) {
		CHECK(c->alerts_smtp == NULL);
		CHECK(streq(c->alerts_sendmail[0], "/usr/sbin/sendmail") &&
		    streq(c->alerts_sendmail[1], "-t") &&
		    streq(c->alerts_sendmail[2], "-oi") &&
		    c->alerts_sendmail[3] == NULL);
		conf_free(c);
	}

	/* An IPv6 listener, bracketed as it is bound. */
	c = conf_load(put(RULES_OK
	    "shim:\n"
	    "  listen: [ \"inet:[::1]:7025\" ]\n"), NULL, err, sizeof(err));
	CHECK(c != NULL && c->nlisten == 1 &&
	    streq(c->listen[0].addr, "inet:[::1]:7025"));
	if (c != NULL)
		conf_free(c);
}

static void
test_defaults(void)
{
	struct conf	*c;
	char		 err[CONF_ERRLEN], host[256];

	c = conf_load(put(RULES_OK), NULL, err, sizeof(err));
	CHECK(c != NULL);
	if (c == NULL) {
		printf("  error: %s\n", err);
		return;
	}
	CHECK(c->nlisten == 0 && c->listen == NULL);
	CHECK(c->socket_mode == 0660);
	CHECK(c->socket_group == NULL);
	CHECK(c->user == NULL && c->group == NULL);
	CHECK(c->client_timeout_ms == 2000);
	CHECK(c->max_clients == 4096);
	CHECK(c->max_request == 4096);
	CHECK(streq(c->redis_address, "127.0.0.1:6379"));
	CHECK(c->redis_username == NULL && c->redis_password == NULL);
	CHECK(c->redis_database == 0);
	CHECK(c->redis_timeout_ms == 100);
	CHECK(c->redis_batch_wait_ms == 1);
	/* Fail open: a rate limiter must not stop mail when Redis is down. */
	CHECK(c->redis_on_error == 0);
	CHECK(streq(c->redis_prefix, "senderwatch"));
	CHECK(streq(c->events_channel, "senderwatch:events"));
	CHECK(streq(c->events_stream, "senderwatch:stream"));
	CHECK(c->events_stream_maxlen == 10000);
	CHECK(streq(c->events_group, "senderwatch-alerters"));
	CHECK(streq(c->alerts_subject, "Mail Abuse Alert"));
	CHECK(streq(c->alerts_smtp, "localhost:25"));
	CHECK(c->alerts_sendmail == NULL);
	CHECK(c->alerts_smtp_starttls == 1);
	CHECK(c->alerts_digest_wait_ms == 500);
	CHECK(c->alerts_digest_max == 100);
	CHECK(c->nrules == 1);
	if (gethostname(host, sizeof(host)) == 0) {
		host[sizeof(host) - 1] = '\0';
		CHECK(streq(c->hostname, host));
	}
	conf_free(c);

	/* A bare no is still the string "no" to libyaml, as is a quoted one. */
	c = conf_load(put(RULES_OK "redis:\n  on_error: no\n"), NULL, err,
	    sizeof(err));
	CHECK(c != NULL && c->redis_on_error == 0);
	conf_free(c);
	/* A single listen address needs no list. */
	c = conf_load(put(RULES_OK "shim:\n  listen: /run/x.sock\n"), NULL,
	    err, sizeof(err));
	CHECK(c != NULL && c->nlisten == 1 &&
	    streq(c->listen[0].addr, "/run/x.sock"));
	conf_free(c);
}

static void
test_durations(void)
{
	int64_t	 ms;

#define DUR(s, want)	(ms = -7, conf_parse_duration((s), &ms) == 0 && \
			    ms == (want))
	CHECK(DUR("0ms", 0));
	CHECK(DUR("250ms", 250));
	CHECK(DUR("1s", 1000));
	CHECK(DUR("300s", 300000));
	CHECK(DUR("5m", 300000));
	CHECK(DUR("1h", 3600000));
	CHECK(DUR("2d", 172800000));
	CHECK(DUR("3660d", 3660LL * 86400000));	/* the ten-year cap */
#undef DUR
#define BAD(s)	(ms = -7, conf_parse_duration((s), &ms) == -1 && ms == -7)
	CHECK(BAD(""));
	CHECK(BAD("10"));		/* a unit is required */
	CHECK(BAD("s"));
	CHECK(BAD("ms"));
	CHECK(BAD("10x"));
	CHECK(BAD("10S"));
	CHECK(BAD("10sec"));
	CHECK(BAD("1.5s"));
	CHECK(BAD("-1s"));
	CHECK(BAD("+1s"));
	CHECK(BAD(" 1s"));
	CHECK(BAD("1 s"));
	CHECK(BAD("1s "));
	CHECK(BAD("3661d"));
	CHECK(BAD("99999999999999999999ms"));	/* overflows strtoll */
	CHECK(BAD("9223372036854775807s"));	/* would overflow in ms */
	CHECK(BAD(NULL));
#undef BAD

#define INT(s, lo, hi, want)	(ms = -7, \
	    conf_parse_int((s), (lo), (hi), &ms) == 0 && ms == (want))
#define BADINT(s, lo, hi)	(ms = -7, \
	    conf_parse_int((s), (lo), (hi), &ms) == -1 && ms == -7)
	CHECK(INT("0", 0, 10, 0));
	CHECK(INT("10", 0, 10, 10));
	CHECK(INT("-3", -5, 5, -3));
	CHECK(BADINT("11", 0, 10));
	CHECK(BADINT("-1", 0, 10));
	CHECK(BADINT("", 0, 10));
	CHECK(BADINT(" 1", 0, 10));
	CHECK(BADINT("1 ", 0, 10));
	CHECK(BADINT("1.0", 0, 10));
	CHECK(BADINT("0x10", 0, 100));
	CHECK(BADINT("twenty", 0, 100));
	CHECK(BADINT(NULL, 0, 100));
#undef INT
#undef BADINT
}

/*
 * Load text and compare the error with "FILE" + want, where want starts
 * at the ":line: " part (or ": " for errors without a line).
 */
static void
bad(const char *text, const char *want, int line)
{
	struct conf	*c;
	char		 err[CONF_ERRLEN], full[CONF_ERRLEN + 64];

	strcpy(err, "(no error)");
	c = conf_load(put(text), NULL, err, sizeof(err));
	snprintf(full, sizeof(full), "%s%s", path, want);
	if (c != NULL) {
		check_at(0, "conf_load() failed", __FILE__, line);
		printf("  it loaded; wanted: %s\n", full);
		conf_free(c);
		return;
	}
	check_at(strcmp(err, full) == 0, "error message", __FILE__, line);
	if (strcmp(err, full) != 0)
		printf("  got:  %s\n  want: %s\n", err, full);
}

#define BAD(text, want)	bad((text), (want), __LINE__)

static void
test_errors(void)
{
	struct conf	*c;
	char		 err[CONF_ERRLEN], want[CONF_ERRLEN + 64];

	/* Sections. */
	BAD(RULES_OK "bogus:\n  x: 1\n",
	    ":3: unknown section \"bogus\" (known: shim, redis, events, "
	    "control, metrics, rules, alerts)");
	BAD(RULES_OK "shim:\n  max_clients: 1\nshim:\n  max_clients: 2\n",
	    ":5: section shim given twice");
	BAD(RULES_OK "redis: unix:/x\n",
	    ":3: redis: must be a mapping of options");
	BAD("- shim\n- rules\n",
	    ":1: the top level must be a mapping of sections");

	/* Options. */
	BAD("shim:\n  client_timeout: 1s\n  listne: [ /tmp/x.sock ]\n"
	    RULES_OK, ":3: shim: unknown option \"listne\"");
	BAD(RULES_OK "redis:\n  timeout: 1s\n  Timeout: 2s\n",
	    ":5: redis: unknown option \"Timeout\"");
	BAD(RULES_OK "shim:\n  client_timeout: 1s\n  max_clients: 5\n"
	    "  client_timeout: 2s\n",
	    ":6: shim.client_timeout: given twice");
	BAD(RULES_OK "shim:\n  max_clients: [ 1, 2 ]\n",
	    ":4: shim.max_clients: must be a single value");

	/* Durations. */
	BAD(RULES_OK "shim:\n  client_timeout: 2x\n",
	    ":4: shim.client_timeout: \"2x\" is not a duration (a number "
	    "and ms, s, m, h or d)");
	BAD(RULES_OK "redis:\n  timeout: 100\n",
	    ":4: redis.timeout: \"100\" is not a duration (a number and ms, "
	    "s, m, h or d)");
	BAD(RULES_OK "shim:\n  client_timeout: 5ms\n",
	    ":4: shim.client_timeout: 5ms is out of range");
	BAD(RULES_OK "redis:\n  timeout: 2m\n",
	    ":4: redis.timeout: 2m is out of range");
	BAD(RULES_OK "redis:\n  batch_wait: 51ms\n",
	    ":4: redis.batch_wait: 51ms is out of range");
	/* A decision's wait counts against its timeout. */
	BAD(RULES_OK "redis:\n  timeout: 1ms\n  batch_wait: 1ms\n",
	    ":5: redis.batch_wait: must be at most half of redis.timeout "
	    "(1ms)");
	BAD(RULES_OK "redis:\n  timeout: 10ms\n  batch_wait: 6ms\n",
	    ":5: redis.batch_wait: must be at most half of redis.timeout "
	    "(10ms)");
	BAD("rules:\n  default: { limit: 20, window: 5 }\n",
	    ":2: rules.default.window: must be a duration such as 300s or 1h");
	BAD("rules:\n  default: { limit: 20, window: 0s }\n",
	    ":2: rules.default.window: must be a duration such as 300s or 1h");
	BAD("rules:\n  default:\n    limit: 20\n    window: 5 minutes\n",
	    ":4: rules.default.window: must be a duration such as 300s or 1h");

	/* Limits. */
	BAD("rules:\n  default: { limit: -1, window: 1s }\n",
	    ":2: rules.default.limit: must be a whole number, 0 or more");
	BAD("rules:\n  default: { limit: twenty, window: 1s }\n",
	    ":2: rules.default.limit: must be a whole number, 0 or more");
	BAD("rules:\n  default: { limit: 2.5, window: 1s }\n",
	    ":2: rules.default.limit: must be a whole number, 0 or more");
	BAD("rules:\n  default: { limit: [ 1 ], window: 1s }\n",
	    ":2: rules.default.limit: must be a whole number, 0 or more");
	BAD("rules:\n  default:\n    window: 1s\n    limit: \"\"\n",
	    ":4: rules.default.limit: must be a whole number, 0 or more");
	BAD(RULES_OK "shim:\n  max_clients: 0\n",
	    ":4: shim.max_clients: must be a whole number from 1 to 1000000");
	BAD(RULES_OK "shim:\n  max_request: 63\n",
	    ":4: shim.max_request: must be a whole number from 64 to "
	    "1048576");

	/* Rules. */
	BAD("rules:\n  ip: { limit: 1, window: 1s }\n",
	    ":1: rules: a rule named \"default\" is needed (bare requests "
	    "are counted under it)");
	BAD("# no rules at all\nshim:\n  max_clients: 5\n",
	    ":2: rules: at least one rule is needed");
	BAD("rules: {}\n", ":1: rules: at least one rule is needed");
	BAD(RULES_OK "  ip: { window: 1s }\n",
	    ":3: rules.ip: limit is required");
	BAD(RULES_OK "  ip: { limit: 5 }\n",
	    ":3: rules.ip: window is required");
	BAD(RULES_OK "  ip:\n    limit: 5\n",
	    ":4: rules.ip: window is required");
	BAD(RULES_OK "  ip: { limit: 1, window: 1s }\n"
	    "  ip: { limit: 2, window: 2s }\n",
	    ":4: rules.ip: given twice");
	BAD("rules:\n  default:\n    limit: 1\n    window: 1s\n    limit: 2\n",
	    ":5: rules.default.limit: given twice");
	BAD("rules:\n  default:\n    limit: 1\n    window: 1s\n"
	    "    window: 2s\n",
	    ":5: rules.default.window: given twice");
	BAD(RULES_OK "  ip: { limit: 1, window: 1s, bucket: 3 }\n",
	    ":3: rules.ip: unknown option \"bucket\"");
	BAD(RULES_OK "  ip: 5\n",
	    ":3: rules.ip: must be a mapping such as { limit: 20, window: "
	    "300s }");
	BAD(RULES_OK "  \"bad name\": { limit: 1, window: 1s }\n",
	    ":3: rules: a rule name may only contain letters, digits, _ and "
	    "- (at most 63)");
	BAD(RULES_OK "  subjects: { limit: 1, window: 1s }\n",
	    ":3: rules.subjects: the name is reserved: senderwatch's own "
	    "keys are called PREFIX:subjects:...");
	BAD(RULES_OK "  alerter: { limit: 1, window: 1s }\n",
	    ":3: rules.alerter: the name is reserved: senderwatch's own "
	    "keys are called PREFIX:alerter:...");

	/* Values. */
	BAD(RULES_OK "redis:\n  on_error: maybe\n",
	    ":4: redis.on_error: must be \"yes\" or \"no\" (quote it: YAML "
	    "reads a bare no as false)");
	BAD(RULES_OK "shim:\n  socket_mode: \"0999\"\n",
	    ":4: shim.socket_mode: must be an octal mode such as \"0660\"");
	BAD(RULES_OK "shim:\n  listen: [ run/shim.sock ]\n",
	    ":4: shim.listen: \"run/shim.sock\" is neither an absolute socket "
	    "path nor inet:HOST:PORT");
	BAD(RULES_OK "shim:\n  listen: [ \"inet:localhost:7025\" ]\n",
	    ":4: shim.listen: \"inet:localhost:7025\": HOST must be an IP "
	    "address (inet:127.0.0.1:7025, inet:[::1]:7025) and PORT 1 to "
	    "65535");
	BAD(RULES_OK "shim:\n  listen: [ \"inet:nocolon\" ]\n",
	    ":4: shim.listen: \"inet:nocolon\": HOST must be an IP "
	    "address (inet:127.0.0.1:7025, inet:[::1]:7025) and PORT 1 to "
	    "65535");
	BAD(RULES_OK "shim:\n  listen: [ \"inet:127.0.0.1:4294974321\" ]\n",
	    ":4: shim.listen: \"inet:127.0.0.1:4294974321\": HOST must be an "
	    "IP address (inet:127.0.0.1:7025, inet:[::1]:7025) and PORT 1 to "
	    "65535");
	BAD(RULES_OK "shim:\n  listen: [ \"inet:127.0.0.1:0\" ]\n",
	    ":4: shim.listen: \"inet:127.0.0.1:0\": HOST must be an IP "
	    "address (inet:127.0.0.1:7025, inet:[::1]:7025) and PORT 1 to "
	    "65535");
	BAD(RULES_OK "shim:\n  listen: []\n",
	    ":4: shim.listen: must not be empty");
	BAD(RULES_OK "redis:\n  prefix: \"sw prefix\"\n",
	    ":4: redis.prefix: \"sw prefix\" may only contain letters, digits "
	    "and _ . : @ - (at most 64)");
	BAD(RULES_OK "redis:\n  username: sw\n",
	    ":4: redis.username: needs redis.password");
	BAD(RULES_OK "redis:\n  address: localhost\n",
	    ":4: redis.address: \"localhost\" is neither unix:/path nor "
	    "host:port");
	BAD(RULES_OK "alerts:\n  smtp: localhost:25\n"
	    "  sendmail: /usr/sbin/sendmail\n",
	    ":5: alerts.sendmail: give alerts.smtp or alerts.sendmail, not "
	    "both");
	BAD(RULES_OK "alerts:\n  sendmail: [ sendmail, -t ]\n",
	    ":4: alerts.sendmail: the command must be an absolute path");
	BAD(RULES_OK "alerts:\n  smtp_starttls: maybe\n",
	    ":4: alerts.smtp_starttls: must be no, try or yes");

	/* YAML syntax errors: the line libyaml stopped at, counted from 1. */
	BAD("shim:\n  max_clients: 5\n  client_timeout: 1s: 2s\n" RULES_OK,
	    ":3: mapping values are not allowed in this context");
	BAD("shim:\n\tmax_clients: 5\n" RULES_OK,
	    ":2: found character that cannot start any token");
	BAD("shim:\n  listen: [ /tmp/a.sock\n" RULES_OK,
	    ":3: did not find expected ',' or ']'");

	/* No file, an empty file. */
	BAD("", ": the file is empty");
	snprintf(want, sizeof(want), "%s/missing.yaml: No such file or "
	    "directory", tmpdir);
	snprintf(path, sizeof(path), "%s/missing.yaml", tmpdir);
	c = conf_load(path, NULL, err, sizeof(err));
	CHECK(c == NULL && strcmp(err, want) == 0);

	/* A short error buffer truncates but stays a string. */
	{
		char	 small[16];

		memset(small, 'x', sizeof(small));
		c = conf_load(put("rules:\n  ip: { limit: 1, window: 1s }\n"),
		    NULL, small, sizeof(small));
		CHECK(c == NULL && memchr(small, '\0', sizeof(small)) != NULL);
	}
}

/* redis.batch_wait: the default gives way to a timeout too short for it. */
static void
test_batch_wait(void)
{
	struct conf	*c;
	char		 err[CONF_ERRLEN];

	c = conf_load(put(RULES_OK "redis:\n  timeout: 1ms\n"), NULL,
	    err, sizeof(err));
	CHECK(c != NULL && c->redis_batch_wait_ms == 0);
	if (c != NULL)
		conf_free(c);
	c = conf_load(put(RULES_OK "redis:\n  timeout: 10ms\n"
	    "  batch_wait: 5ms\n"), NULL, err, sizeof(err));
	CHECK(c != NULL && c->redis_batch_wait_ms == 5);
	if (c != NULL)
		conf_free(c);
	c = conf_load(put(RULES_OK "redis:\n  timeout: 2ms\n"), NULL,
	    err, sizeof(err));
	CHECK(c != NULL && c->redis_batch_wait_ms == 1);
	if (c != NULL)
		conf_free(c);
	c = conf_load(put(RULES_OK "redis:\n  batch_wait: 0ms\n"),
	    NULL, err, sizeof(err));
	CHECK(c != NULL && c->redis_batch_wait_ms == 0);
	if (c != NULL)
		conf_free(c);
}

/* Rule options beyond { limit, window }: several limits, algorithms... */
static void
test_rule_options(void)
{
	struct conf		*c;
	const struct conf_rule	*r;
	char			 err[CONF_ERRLEN], buf[32];

	c = conf_load(put(
	    "rules:\n"
	    "  default: { limit: 20, window: 300s }\n"
	    "  multi:\n"
	    "    limits:\n"
	    "      - { limit: 5, window: 1m }\n"
	    "      - { limit: 100, window: 1h, burst: 7 }\n"
	    "    algorithm: sliding\n"
	    "    mode: shadow\n"
	    "    postfix: { key: sasl_username,\n"
	    "               action: \"REJECT 5.7.1 slow\" }\n"
	    "  bucket: { limit: 10, window: 1m, algorithm: gcra, "
	    "count_denied: yes }\n"), NULL, err, sizeof(err));
	CHECK(c != NULL);
	if (c == NULL) {
		printf("  error: %s\n", err);
		return;
	}
	/* The article's rule: one fixed window, every attempt counted. */
	r = conf_rule_find(c, "default", 7);
	CHECK(r != NULL && r->nlimits == 1 && r->limits[0].suffix[0] == '\0');
	CHECK(r != NULL && r->algorithm == ALG_FIXED && r->count_denied == 1 &&
	    r->shadow == 0 && r->limits[0].burst == 20);
	CHECK(r != NULL && streq(r->postfix_key, "sender") &&
	    streq(r->postfix_action, "DEFER_IF_PERMIT 4.7.1 too much mail "
	    "from this sender, try again later"));
	r = conf_rule_find(c, "multi", 5);
	CHECK(r != NULL && r->nlimits == 2);
	if (r != NULL && r->nlimits == 2) {
		CHECK(r->limits[0].limit == 5 && r->limits[0].window_ms == 60000
		    && r->limits[0].burst == 5);
		CHECK(r->limits[1].limit == 100 &&
		    r->limits[1].window_ms == 3600000 &&
		    r->limits[1].burst == 7);
		/* Each limit counts under its own key name. */
		CHECK(streq(r->limits[0].suffix, ".1m"));
		CHECK(streq(r->limits[1].suffix, ".1h"));
		CHECK(r->algorithm == ALG_SLIDING && r->shadow == 1);
		/* Rate algorithms don't count what they refuse by default. */
		CHECK(r->count_denied == 0);
		CHECK(streq(r->postfix_key, "sasl_username") &&
		    streq(r->postfix_action, "REJECT 5.7.1 slow"));
	}
	r = conf_rule_find(c, "bucket", 6);
	CHECK(r != NULL && r->algorithm == ALG_GCRA && r->count_denied == 1);
	conf_free(c);

	CHECK(streq(conf_algorithm_name(ALG_FIXED), "fixed"));
	CHECK(streq(conf_algorithm_name(ALG_SLIDING), "sliding"));
	CHECK(streq(conf_algorithm_name(ALG_GCRA), "gcra"));
#define FMT(ms, want) (conf_format_duration((ms), buf, sizeof(buf)), \
			    streq(buf, (want)))
	CHECK(FMT(300000, "5m"));
	CHECK(FMT(90000, "90s"));
	CHECK(FMT(1500, "1500ms"));
	CHECK(FMT(7200000, "2h"));
	CHECK(FMT(86400000, "1d"));
#undef FMT

	BAD(RULES_OK "  ip: { limit: 1, window: 1s, limits: [ { limit: 2, "
	    "window: 2s } ] }\n",
	    ":3: rules.ip: give limit and window, or limits, not both");
	BAD(RULES_OK "  ip:\n    limits: [ { limit: 1, window: 60s }, "
	    "{ limit: 9, window: 1m } ]\n",
	    ":4: rules.ip.limits: two limits with the same window");
	BAD(RULES_OK "  ip: { limits: [] }\n",
	    ":3: rules.ip.limits: must be a list of { limit, window }");
	BAD(RULES_OK "  ip:\n    limits:\n"
	    "      - { limit: 1, window: 1s }\n"
	    "      - { limit: 1, window: 2s }\n"
	    "      - { limit: 1, window: 3s }\n"
	    "      - { limit: 1, window: 4s }\n"
	    "      - { limit: 1, window: 5s }\n"
	    "      - { limit: 1, window: 6s }\n"
	    "      - { limit: 1, window: 7s }\n"
	    "      - { limit: 1, window: 8s }\n"
	    "      - { limit: 1, window: 9s }\n",
	    ":5: rules.ip.limits: at most 8");
	BAD(RULES_OK "  ip:\n    limits:\n      - { limit: 1, window: 1s }\n"
	    "      - { limit: 2 }\n",
	    ":6: rules.ip.limits[2]: window is required");
	BAD(RULES_OK "  ip:\n    limits:\n      - { limit: 1, window: 1s, "
	    "burts: 3 }\n",
	    ":5: rules.ip.limits[1]: unknown option \"burts\"");
	BAD(RULES_OK "  ip: { limit: 1, window: 1s, burst: 0 }\n",
	    ":3: rules.ip.burst: must be a whole number, 1 or more");
	BAD(RULES_OK "  ip: { limit: 1, window: 1s, algorithm: leaky }\n",
	    ":3: rules.ip.algorithm: must be fixed, sliding or gcra");
	BAD(RULES_OK "  ip: { limit: 0, window: 1s, algorithm: gcra }\n",
	    ":3: rules.ip: gcra needs limits of 1 or more");
	BAD(RULES_OK "  ip: { limit: 1, window: 1s, mode: dry-run }\n",
	    ":3: rules.ip.mode: must be enforce or shadow");
	BAD(RULES_OK "  ip: { limit: 1, window: 1s, count_denied: maybe }\n",
	    ":3: rules.ip.count_denied: must be yes or no");
	BAD(RULES_OK "  ip: { limit: 1, window: 1s, algorithm: gcra,\n"
	    "        algorithm: fixed }\n",
	    ":4: rules.ip.algorithm: given twice");
	BAD(RULES_OK "  ip: { limit: 1, window: 1s, normalize: [ upper ] }\n",
	    ":3: rules.ip.normalize: \"upper\" is not lowercase, "
	    "lowercase_domain or strip_tag");
	BAD(RULES_OK "  ip: { limit: 1, window: 1s, allow: [ 10.0.0.0/33 ] }\n",
	    ":3: rules.ip.allow: bad prefix length in \"10.0.0.0/33\"");
	BAD(RULES_OK "  ip: { limit: 1, window: 1s, deny: \"*@x.example\" }\n",
	    ":3: rules.ip.deny: must be a list");
	BAD(RULES_OK "  ip:\n    limit: 1\n    window: 1s\n"
	    "    override: { a@example.org: x0 }\n",
	    ":6: rules.ip.override: \"x0\" is not a factor such as x2 or x0.5");
	BAD(RULES_OK "  ip:\n    limit: 1\n    window: 1s\n"
	    "    override: { a@example.org: pass }\n",
	    ":6: rules.ip.override: \"pass\" must be allow, block or xFACTOR");
	BAD(RULES_OK "  ip:\n    limit: 1\n    window: 1s\n"
	    "    postfix: { key: \"bad key\" }\n",
	    ":6: rules.ip.postfix.key: not a policy attribute name");
	BAD(RULES_OK "  crossed: { limit: 1, window: 1s }\n",
	    ":3: rules.crossed: the name is reserved: senderwatch's own "
	    "keys are called PREFIX:crossed:...");
	BAD(RULES_OK "  override: { limit: 1, window: 1s }\n",
	    ":3: rules.override: the name is reserved: senderwatch's own "
	    "keys are called PREFIX:override:...");
}

/* Passwords kept in a file of their own, out of the readable config. */
static void
test_secrets(void)
{
	struct conf	*c;
	char		 err[CONF_ERRLEN], secret[sizeof(path)], text[512];
	char		 want[CONF_ERRLEN];
	FILE		*fp;

	snprintf(secret, sizeof(secret), "%s/secret", tmpdir);
	if ((fp = fopen(secret, "w")) == NULL) {
		perror(secret);
		exit(2);
	}
	fputs("s3cret\r\nsecond line is ignored\n", fp);
	fclose(fp);
	snprintf(text, sizeof(text), RULES_OK "redis:\n  password_file: %s\n"
	    "alerts:\n  smtp_password_file: %s\n", secret, secret);
	c = conf_load(put(text), NULL, err, sizeof(err));
	CHECK(c != NULL && streq(c->redis_password, "s3cret") &&
	    streq(c->alerts_smtp_password, "s3cret"));
	conf_free(c);

	BAD(RULES_OK "redis:\n  password_file: secret\n",
	    ":4: redis.password_file: must be an absolute path");
	snprintf(text, sizeof(text), RULES_OK "redis:\n  password: x\n"
	    "  password_file: %s\n", secret);
	BAD(text, ":5: redis.password_file: the same setting as "
	    "redis.password (line 4): give one of them");
	snprintf(text, sizeof(text), RULES_OK "redis:\n  password_file: %s\n"
	    "  password: x\n", secret);
	BAD(text, ":5: redis.password: the same setting as "
	    "redis.password_file (line 4): give one of them");

	snprintf(text, sizeof(text), RULES_OK "redis:\n  password_file: "
	    "%s/nope\n", tmpdir);
	snprintf(want, sizeof(want), ":4: redis.password_file: %s/nope: No "
	    "such file or directory", tmpdir);
	BAD(text, want);
	if ((fp = fopen(secret, "w")) == NULL) {
		perror(secret);
		exit(2);
	}
	fputs("\nlater\n", fp);
	fclose(fp);
	snprintf(text, sizeof(text), RULES_OK "redis:\n  password_file: %s\n",
	    secret);
	snprintf(want, sizeof(want), ":4: redis.password_file: %s: empty "
	    "first line", secret);
	BAD(text, want);
	unlink(secret);
}

/* A daemon's own check, as the alerter's and the shim's are. */
static int
check_listen(struct conf_ctx *cx, const struct conf *c)
{
	if (c->nlisten == 0)
		return conf_fail(cx, &c->listen, "no address to listen on");
	if (c->max_clients == 500)
		return conf_fail(cx, &c->max_clients, "not 500 here");
	return 0;
}

/* Text in memory, and checks that run while the file's lines are known. */
static void
test_parse_and_checks(void)
{
	struct conf		*c;
	const struct conf_rule	*r;
	char			 err[CONF_ERRLEN];
	static const char	 good[] =
	    "shim:\n  listen: /run/x.sock\n  policy_idle_timeout: 10m\n"
	    "redis:\n  on_error: \"yes\"\n"
	    "rules:\n"
	    "  default: { limit: 20, window: 300s }\n"
	    "  postfix:\n    limit: 5\n    window: 1h\n"
	    "    postfix: { key: sasl_username, bounces: count,\n"
	    "               networks: [ 192.0.2.0/24, \"2001:db8::/32\" ],\n"
	    "               authenticated: yes }\n";

	c = conf_parse(good, sizeof(good) - 1, "mem.yaml", check_listen, err,
	    sizeof(err));
	CHECK(c != NULL);
	if (c == NULL) {
		printf("  %s\n", err);
		return;
	}
	CHECK(streq(c->path, "mem.yaml"));
	CHECK(c->policy_idle_ms == 600000);
	CHECK(c->redis_on_error == 1);
	r = conf_rule_find(c, "postfix", 7);
	CHECK(r != NULL && r->postfix_bounces == 1 &&
	    r->postfix_authenticated == 1 && r->npostfix_networks == 2 &&
	    r->postfix_networks[0].type == PAT_CIDR &&
	    r->postfix_networks[1].prefix == 32 &&
	    streq(r->postfix_key, "sasl_username"));
	r = conf_rule_find(c, "default", 7);
	/* The defaults: bounces skipped, every client counted. */
	CHECK(r != NULL && r->postfix_bounces == 0 &&
	    r->postfix_authenticated == 0 && r->npostfix_networks == 0);
	conf_free(c);
	/* The default idle timeout outlasts Postfix's own (300 s). */
	c = conf_parse(RULES_OK, strlen(RULES_OK), "mem.yaml", NULL, err,
	    sizeof(err));
	CHECK(c != NULL && c->policy_idle_ms > 300000);
	conf_free(c);

#define PBAD(text, want) do {						\
	strcpy(err, "(none)");						\
	c = conf_parse((text), strlen(text), "mem.yaml", check_listen,	\
	    err, sizeof(err));						\
	CHECK(c == NULL && streq(err, (want)));				\
	if (c != NULL || !streq(err, (want)))				\
		printf("  got:  %s\n  want: %s\n", err, (want));		\
	conf_free(c);							\
} while (0)
	/* A daemon's check names the option's line... */
	PBAD("shim:\n  listen: /x.sock\n  max_clients: 500\n" RULES_OK,
	    "mem.yaml:3: shim.max_clients: not 500 here");
	/* ...or its section's when the file leaves it out... */
	PBAD("shim:\n  max_clients: 5\n" RULES_OK,
	    "mem.yaml:1: shim.listen: no address to listen on");
	/* ...or the top's when the section is not there either. */
	PBAD("# rules only\n" RULES_OK,
	    "mem.yaml:2: shim.listen: no address to listen on");
	/* The same table checks every level: a duplicate in a limit too. */
	PBAD("shim:\n  listen: /x.sock\n" RULES_OK
	    "  ip:\n    limits:\n      - { limit: 1, window: 1s, burst: 2,"
	    " burst: 3 }\n",
	    "mem.yaml:7: rules.ip.limits[1].burst: given twice");
	PBAD("shim:\n  listen: /x.sock\n" RULES_OK
	    "  ip:\n    limits:\n      - { limit: 1, window: 1s }\n"
	    "      - { limit: x, window: 2s }\n",
	    "mem.yaml:8: rules.ip.limits[2].limit: must be a whole number, 0 "
	    "or more");
	PBAD("shim:\n  listen: /x.sock\n" RULES_OK
	    "  p: { limit: 1, window: 1s, postfix: { bounces: maybe } }\n",
	    "mem.yaml:5: rules.p.postfix.bounces: must be skip or count");
	PBAD("shim:\n  listen: /x.sock\n" RULES_OK
	    "  p: { limit: 1, window: 1s, postfix: { networks: [ \"*@x.org\" ] } }"
	    "\n", "mem.yaml:5: rules.p.postfix.networks: \"*@x.org\" is not "
	    "an address/prefix such as 192.0.2.0/24");
	PBAD("shim:\n  listen: /x.sock\n" RULES_OK
	    "  p: { limit: 1, window: 1s, postfix: { authenticated: 2 } }\n",
	    "mem.yaml:5: rules.p.postfix.authenticated: must be yes or no");
	PBAD("shim:\n  listen: /x.sock\n" RULES_OK
	    "  p: { limit: 1, window: 1s, postfix: { keys: sender } }\n",
	    "mem.yaml:5: rules.p.postfix: unknown option \"keys\"");
	PBAD("shim:\n  listen: /x.sock\n  policy_idle_timeout: 500ms\n" RULES_OK,
	    "mem.yaml:3: shim.policy_idle_timeout: 500ms is out of range");
	/* A value of the wrong shape gets the option's own message. */
	PBAD("shim:\n  listen: /x.sock\n" RULES_OK
	    "  ip: { limit: { a: 1 }, window: 1s }\n",
	    "mem.yaml:5: rules.ip.limit: must be a whole number, 0 or more");
	/* Nothing after a NUL in a buffer is read as config. */
	PBAD("shim:\n  listen: [\n", "mem.yaml:3: did not find expected "
	    "node content");
#undef PBAD
}

/* redis.address, redis.sentinel, redis.cluster: one of them. */
static void
test_layouts(void)
{
	struct conf	*c;
	char		 err[CONF_ERRLEN];
	static const char sentinel[] = RULES_OK
	    "redis:\n  sentinel:\n    master: mymaster\n"
	    "    addresses: [ 10.0.0.1:26379, \"[::1]:26380\" ]\n"
	    "    password: s\n  password: d\n";
	static const char cluster[] = RULES_OK
	    "redis:\n  cluster: [ 10.0.0.1:7000, 10.0.0.2:7000 ]\n";

	c = conf_parse(sentinel, sizeof(sentinel) - 1, "l.yaml", NULL, err,
	    sizeof(err));
	CHECK(c != NULL);
	if (c != NULL) {
		CHECK(conf_layout(c) == LAYOUT_SENTINEL);
		CHECK(streq(c->sentinel_master, "mymaster"));
		CHECK(c->nsentinel_addresses == 2 &&
		    streq(c->sentinel_addresses[1], "[::1]:26380"));
		/* The sentinels' password, and the data nodes' own. */
		CHECK(streq(c->sentinel_password, "s") &&
		    streq(c->redis_password, "d"));
		conf_free(c);
	} else
		printf("  %s\n", err);
	c = conf_parse(cluster, sizeof(cluster) - 1, "l.yaml", NULL, err,
	    sizeof(err));
	CHECK(c != NULL && conf_layout(c) == LAYOUT_CLUSTER &&
	    c->ncluster_seeds == 2 && streq(c->cluster_seeds[0],
	    "10.0.0.1:7000"));
	conf_free(c);
	c = conf_parse(RULES_OK, strlen(RULES_OK), "l.yaml", NULL, err,
	    sizeof(err));
	CHECK(c != NULL && conf_layout(c) == LAYOUT_SINGLE);
	conf_free(c);

	BAD(RULES_OK "redis:\n  address: 127.0.0.1:6379\n"
	    "  sentinel: { master: m, addresses: [ 127.0.0.1:26379 ] }\n",
	    ":5: redis.sentinel.addresses: give redis.address, redis.sentinel "
	    "or redis.cluster, one of them");
	BAD(RULES_OK "redis:\n  sentinel: { master: m, addresses: "
	    "[ 127.0.0.1:26379 ] }\n  cluster: [ 127.0.0.1:7000 ]\n",
	    ":5: redis.cluster: give redis.sentinel or redis.cluster, not "
	    "both");
	BAD(RULES_OK "redis:\n  sentinel: { addresses: [ 127.0.0.1:26379 ] "
	    "}\n", ":3: redis.sentinel.master: is required with "
	    "redis.sentinel (the name the sentinels monitor)");
	BAD(RULES_OK "redis:\n  sentinel: { master: m }\n",
	    ":3: redis.sentinel.addresses: is required with redis.sentinel");
	BAD(RULES_OK "redis:\n  sentinel: { master: m, addresses: [ "
	    "sentinel1 ] }\n",
	    ":4: redis.sentinel.addresses: \"sentinel1\" is not host:port");
	BAD(RULES_OK "redis:\n  sentinel: { master: m, addresses: [ "
	    "127.0.0.1:1 ], usernam: x }\n",
	    ":4: redis.sentinel: unknown option \"usernam\"");
	BAD(RULES_OK "redis:\n  cluster: [ 127.0.0.1:7000 ]\n"
	    "  database: 2\n",
	    ":5: redis.database: a Redis Cluster has database 0 only");
	BAD(RULES_OK "redis:\n  cluster: [ unix:/run/redis.sock ]\n",
	    ":4: redis.cluster: \"unix:/run/redis.sock\" is not host:port");
	BAD(RULES_OK "redis:\n  address: 127.0.0.1:99999\n",
	    ":4: redis.address: \"127.0.0.1:99999\" is neither unix:/path nor "
	    "host:port");
}

/* The shipped reference config, found from this binary's place. */
static void
test_reference(const char *argv0)
{
	struct conf		*c;
	const struct conf_rule	*r;
	char			 err[CONF_ERRLEN], file[4096], *copy, *dir;
	const char		*env;

	if ((env = getenv("SW_CONFIG")) != NULL)
		snprintf(file, sizeof(file), "%s", env);
	else if (strchr(argv0, '/') != NULL && (copy = strdup(argv0)) != NULL) {
		/* build/tests/test_conf -> build/tests/../../config.yaml */
		dir = dirname(copy);
		snprintf(file, sizeof(file), "%s/../../config.yaml", dir);
		free(copy);
	} else
		snprintf(file, sizeof(file), "config.yaml");

	c = conf_load(file, NULL, err, sizeof(err));
	CHECK(c != NULL);
	if (c == NULL) {
		printf("  reference config: %s\n", err);
		return;
	}
	/* The article's thresholds: 20 messages in 5 minutes. */
	CHECK((r = conf_rule_find(c, "default", 7)) != NULL &&
	    r->limits[0].limit == 20 && r->limits[0].window_ms == 300000);
	CHECK(c->nlisten >= 1);
	CHECK(c->redis_on_error == 0);
	conf_free(c);
}

int
main(int argc, char *argv[])
{
	char	 file[sizeof(path)];
	unsigned i;

	(void)argc;
	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return 2;
	}
	test_good();
	test_defaults();
	test_durations();
	test_errors();
	test_batch_wait();
	test_rule_options();
	test_secrets();
	test_parse_and_checks();
	test_layouts();
	test_reference(argv[0]);

	for (i = 0; i < nfiles; i++) {
		snprintf(file, sizeof(file), "%s/c%u.yaml", tmpdir, i);
		unlink(file);
	}
	rmdir(tmpdir);
	return check_done();
}
