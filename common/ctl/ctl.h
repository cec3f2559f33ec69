/*
 * ctl.h: senderwatch-ctl, the admin's command line, inside: what its
 * files share.  Each file has one role, and calls go down this list:
 *
 *   ctl.c           main: options, the command table, usage, the rule and
 *                   argument helpers every command parses with
 *   ctl_keys.c      show, reset, top, keys: a key's counters
 *   ctl_override.c  allow, block, factor, clear: runtime overrides
 *   ctl_stream.c    crossings, pending: the threshold events' streams
 *   ctl_control.c   stats, status, reload: the daemons' control sockets
 *   ctl_key.c       a key as a rule counts it: normalised, escaped, its
 *                   shard and its names (from keyspace.h only)
 *   ctl_redis.c     the Redis layout on a libev loop, run until an answer:
 *                   batches of pipelined commands and their replies
 *   ctl_out.c       aligned text tables or JSON lines, and the escaping of
 *                   whatever came from a sender
 *
 * A command returns the exit status; a failure deep down (Redis gone, an
 * error reply) prints "senderwatch-ctl: ..." on stderr and exits 1 there
 * (ctl_fatal), a bad argument exits 2 (ctl_usage).
 */
#ifndef SW_CTL_H
#define SW_CTL_H

#include <stddef.h>
#include <stdint.h>

#include <ev.h>
#include <hiredis/hiredis.h>

#include "conf.h"
#include "keyspace.h"
#include "script.h"

#define CTL_NAME	"senderwatch-ctl"

/* Exit statuses. */
#define CTL_OK		0
#define CTL_FAILED	1
#define CTL_USAGE	2

struct layout;

struct ctl {
	struct ev_loop	*loop;
	struct conf	*conf;
	const char	*conf_path;
	int		 json;		/* -j */
	struct layout	*layout;	/* once a command asked for Redis */
	double		 wait_s;	/* redis.timeout and a few seconds */
	volatile int	 stopped;	/* SIGINT or SIGTERM while following */
};

/* ctl.c */
void	ctl_fatal(const char *, ...)
	    __attribute__((format(printf, 1, 2), noreturn));
void	ctl_usage(const char *cmd, const char *, ...)
	    __attribute__((format(printf, 2, 3), noreturn));
/* -r RULE (NULL: the default rule) or -a (all): into rules[], returns n. */
size_t	ctl_rules(const struct ctl *, const char *cmd, const char *name,
	    int all, const struct conf_rule **rules);
/* A KEY argument, raw or %XX-escaped as shown, into key[KEY_MAX + 1]. */
size_t	ctl_key_arg(const char *cmd, const char *arg, char *key);
/* A positive count argument (-n). */
long	ctl_count_arg(const char *cmd, const char *opt, const char *arg,
	    long max);

/* ctl_key.c: one key under one rule. */
#define CTL_NAME_MAX	(KEYSPACE_EKEY_MAX + 256)
struct ctl_key {
	const struct conf_rule	*rule;
	char			 ekey[KEYSPACE_EKEY_MAX + 1];
	size_t			 elen;
	size_t			 shard;
	unsigned		 slot;		/* of its names */
	char			 state[CONF_LIMITS_MAX][CTL_NAME_MAX];
	char			 crossed[CONF_LIMITS_MAX][CTL_NAME_MAX];
	char			 subjects[CTL_NAME_MAX];
	char			 override[CTL_NAME_MAX];
};
/* Returns NULL (after a message) when a name does not fit. */
struct ctl_key	*ctl_key_new(const struct conf *, const struct conf_rule *,
		    const char *key, size_t len);
/* A config override of the key (allow, block, xF), or NULL. */
const struct conf_override *ctl_key_conf_override(const struct ctl_key *);
/*
 * A counter's count now, from what was read of it (see count.lua): fixed,
 * its integer; sliding, the weighted estimate from its hash {i, c, p} at
 * Redis's time now_ms; gcra, its PTTL over the emission interval.
 */
int64_t	ctl_key_count(const struct conf_rule *, const struct conf_limit *,
	    double factor, const redisReply *value, long long pttl,
	    int64_t now_ms);

/* ctl_redis.c */
struct ctl_batch;
void	ctl_redis_open(struct ctl *, unsigned script_mask);
/* Until the nodes of slots[n] are connected (n 0: every node), or exit 1. */
void	ctl_redis_wait(struct ctl *, const unsigned *slots, size_t n);
void	ctl_redis_close(struct ctl *);
/* One slot for each master now (one outside a Cluster); returns n. */
size_t	ctl_redis_masters(struct ctl *, unsigned *slots, size_t max);
/* Let the loop run for s seconds; 1 when a signal stopped it. */
int	ctl_redis_sleep(struct ctl *, double s);

struct ctl_batch *ctl_batch_new(struct ctl *);
size_t	ctl_batch_cmd(struct ctl_batch *, unsigned slot, int argc,
	    const char **argv, const size_t *argvlen);
size_t	ctl_batch_script(struct ctl_batch *, unsigned slot, enum script_id,
	    int argc, const char **argv, const size_t *argvlen);
/* Send, and run the loop until every reply; -1 when stopped by a signal. */
int	ctl_batch_run(struct ctl_batch *);
size_t	ctl_batch_len(const struct ctl_batch *);
/* Reply i: NULL when the connection was lost first. */
const redisReply *ctl_batch_get(const struct ctl_batch *, size_t i);
/* Reply i, or exit 1 naming what when it is lost or an error. */
const redisReply *ctl_batch_ok(const struct ctl_batch *, size_t i,
	    const char *what);
/* Exit 1 naming the first reply lost or an error: before any output. */
void	ctl_batch_check(const struct ctl_batch *);
void	ctl_batch_free(struct ctl_batch *);

/* Reply helpers: a bulk or status string's bytes, an integer's value. */
int	ctl_reply_str(const redisReply *, const char **s, size_t *len);
int	ctl_reply_int(const redisReply *, long long *);
/* An array reply of at least n elements, or exit 1 naming what. */
const redisReply *ctl_reply_array(const redisReply *, size_t n,
	    const char *what);

/* ctl_out.c: a table is text columns or JSON lines, one row per line. */
enum ctl_esc {
	CTL_RAW,	/* a sender's bytes: keyspace_escape()d */
	CTL_ESCAPED,	/* escaped already (key names, stream keys) */
	CTL_TEXT	/* ours or a daemon's: printable, quoted in JSON */
};
struct ctl_col {
	const char	*json;		/* the JSON member */
	const char	*text;		/* the header, or NULL: JSON only */
};
struct ctl_table;
/* type: a "type" member in each JSON row, or NULL. cols: ends with {0}. */
struct ctl_table *ctl_table_new(const struct ctl *, const char *type,
		    const struct ctl_col *cols);
/* Text: a column at least width wide (rows printed later line up). */
void	ctl_table_min(struct ctl_table *, const char *json, size_t width);
void	ctl_cell_str(struct ctl_table *, const char *, size_t, enum ctl_esc);
void	ctl_cell_text(struct ctl_table *, const char *);
void	ctl_cell_int(struct ctl_table *, long long);
/* A number read as a string (stream fields): a JSON number if it is one. */
void	ctl_cell_num(struct ctl_table *, const char *, size_t);
void	ctl_cell_bool(struct ctl_table *, int);
void	ctl_cell_null(struct ctl_table *);
/* A PTTL: text "4m59s", "no expiry", "-"; JSON the milliseconds. */
void	ctl_cell_pttl(struct ctl_table *, long long);
/* A duration in ms: text "5m"; JSON the milliseconds. */
void	ctl_cell_window(struct ctl_table *, long long);
/* Unix seconds: text ISO 8601 UTC; JSON the number. */
void	ctl_cell_time(struct ctl_table *, const char *, size_t);
void	ctl_row_end(struct ctl_table *);
/* Text: print the rows so far (the header first, once), aligned. */
void	ctl_table_flush(struct ctl_table *);
/*
 * Flush, then free.  A text table with no rows prints nothing; one that
 * follows another is set apart by a blank line.
 */
void	ctl_table_end(struct ctl_table *);

/* A JSON object of members named at run time (a daemon's pairs). */
struct ctl_obj;
struct ctl_obj	*ctl_obj_new(void);
void	ctl_obj_str(struct ctl_obj *, const char *key, const char *, size_t);
/* An integer when the value is one, else a string. */
void	ctl_obj_value(struct ctl_obj *, const char *key, const char *,
	    size_t);
void	ctl_obj_end(struct ctl_obj *);	/* prints it, one line, and frees */

/* A human duration from ms, "850ms", "59.2s", "4m59s", "2d3h", into buf. */
const char *ctl_out_duration(long long ms, char *buf, size_t len);

/* The commands: each returns the exit status. */
int	ctl_cmd_show(struct ctl *, int, char **);
int	ctl_cmd_reset(struct ctl *, int, char **);
int	ctl_cmd_top(struct ctl *, int, char **);
int	ctl_cmd_keys(struct ctl *, int, char **);
int	ctl_cmd_override(struct ctl *, int, char **);
int	ctl_cmd_crossings(struct ctl *, int, char **);
int	ctl_cmd_pending(struct ctl *, int, char **);
int	ctl_cmd_control(struct ctl *, int, char **);

#endif
