/*
 * conf.h: the configuration both daemons share, parsed once from YAML into
 * a struct that the rest of the code treats as const.  A reload builds a new
 * struct and swaps it in only when it is valid.
 */
#ifndef SW_CONF_H
#define SW_CONF_H

#include <sys/types.h>
#include <stddef.h>
#include <stdint.h>

#define CONF_ERRLEN	512
#define CONF_NAME_MAX	64		/* rule names: [A-Za-z0-9_-] */
#define KEY_MAX		512		/* bytes of a key, before escaping */

struct conf_rule {
	char		 name[CONF_NAME_MAX];
	int64_t		 limit;		/* answer yes when count > limit */
	int64_t		 window_ms;	/* window from the key's first hit */
};

struct conf_listen {
	char		*addr;		/* as written: a path or inet:HOST:PORT */
};

struct conf {
	char		*path;		/* the file this came from */

	/* shim: */
	struct conf_listen *listen;
	size_t		 nlisten;
	mode_t		 socket_mode;
	char		*socket_group;	/* NULL: leave the group alone */
	char		*user;		/* NULL: do not change user */
	char		*group;		/* NULL: the user's primary group */
	int64_t		 client_timeout_ms;
	int		 max_clients;
	size_t		 max_request;
	char		*hostname;	/* reported in events */

	/* redis: */
	char		*redis_address;	/* host:port or unix:/path */
	char		*redis_username;
	char		*redis_password;
	int		 redis_database;
	int64_t		 redis_timeout_ms;
	char		*redis_on_error;	/* answer when Redis fails */
	char		*redis_prefix;

	/* events: */
	char		*events_channel;
	char		*events_stream;
	int64_t		 events_stream_maxlen;
	char		*events_group;

	/* rules: */
	struct conf_rule *rules;
	size_t		 nrules;

	/* alerts: */
	char		*alerts_from;
	char	       **alerts_to;
	size_t		 alerts_nto;
	char	       **alerts_cc;
	size_t		 alerts_ncc;
	char		*alerts_subject;
	char		*alerts_smtp;		/* host:port, or smtp[s]://... */
	char		*alerts_smtp_username;
	char		*alerts_smtp_password;
	int		 alerts_smtp_starttls;	/* 0 no, 1 try, 2 required */
	int64_t		 alerts_smtp_timeout_ms;
	char	       **alerts_sendmail;	/* argv, NULL-terminated, or NULL */
	char	       **alerts_report_command;	/* argv, NULL-terminated, or NULL */
	int64_t		 alerts_report_timeout_ms;
	size_t		 alerts_report_max_bytes;
	int64_t		 alerts_digest_wait_ms;
	int		 alerts_digest_max;
	int		 alerts_top_subjects;
	char		*alerts_consumer;	/* consumer name in the group */
	int64_t		 alerts_claim_idle_ms;	/* take over others' stale events */
	int64_t		 alerts_retry_max_ms;	/* cap of the send retry backoff */
};

/*
 * Parse and validate FILE.  Returns NULL and fills err with "file:line: what"
 * on any error.  The result is freed with conf_free().
 */
struct conf	*conf_load(const char *file, char *err, size_t errlen);
void		 conf_free(struct conf *);
const struct conf_rule *conf_rule_find(const struct conf *, const char *name,
		    size_t namelen);

/* Pure helpers, exposed for the unit tests. */
int		 conf_parse_duration(const char *, int64_t *ms);
int		 conf_parse_int(const char *, int64_t min, int64_t max,
		    int64_t *out);

#endif
