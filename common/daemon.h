/*
 * daemon.h: the life of a daemon that both programs share: the command
 * line, loading and checking the config, pidfile, dropping privileges,
 * detaching, signals and reloads.  A daemon gives its hooks and calls
 * daemon_main(); everything around them is the same for both.
 *
 *   options -> config (with the daemon's checks) -> -n: report, exit
 *   -> hooks.open (as root: sockets) -> detach, pidfile, drop privileges
 *   -> signals -> hooks.start (Redis...) -> loop -> hooks.exit
 *
 *   SIGHUP   a new config, checked; hooks.reload only when it is valid
 *   SIGUSR1  hooks.stats, logged as one line
 *   SIGTERM, SIGINT, SIGQUIT  hooks.stop (once; asked twice: stop now)
 *
 * The control socket (control.ROLE: stats, status, reload) and the
 * metrics listener (metrics.ROLE) are opened here too, as root, and
 * answered from the hooks; daemon.c adds what every daemon has (version,
 * pid, config, reloads, start time).  Both stay as they were at the
 * start: a reload that changes them says so, and a restart applies it.
 */
#ifndef SW_DAEMON_H
#define SW_DAEMON_H

#include <stddef.h>

#include <sys/types.h>

#include <ev.h>

#include "conf.h"

struct kv;
struct metrics;

/* The command line both daemons share: -c -f -n -p -v -V -h. */
struct daemon_opts {
	const char	*name;		/* senderwatch-shim, ... */
	enum conf_role	 role;		/* its control and metrics entries */
	const char	*conf_path;
	const char	*pid_path;
	int		 foreground;
	int		 check;		/* -n: check the config and exit */
	int		 verbose;
	const char	*key;		/* -k: print a key's names and exit */
};

struct daemon_hooks {
	conf_check_fn	*check;		/* the daemon's own config checks */
	/* -n passed: one line on stdout saying what was checked. */
	void		(*checked)(const struct conf *);
	/*
	 * -k KEY passed (offered only when set): print the Redis key names
	 * a decision for KEY touches; returns the exit status.
	 */
	int		(*keys)(const struct conf *, const char *key);
	/*
	 * Still root: take the loop and the config (from here the daemon
	 * owns it, and its exit hook frees it) and open what needs root.
	 */
	int		(*open)(struct ev_loop *, struct conf *, char *err,
			    size_t errlen);
	/* Unprivileged now: dial Redis, start serving. */
	int		(*start)(char *err, size_t errlen);
	/* A new, valid config: the daemon owns it (and the old one). */
	void		(*reload)(struct conf *);
	/* Every counter: control "stats", SIGUSR1's and the exit log line. */
	void		(*stats)(struct kv *);
	/* The daemon's part of control "status": Redis, nodes, sessions. */
	void		(*status)(struct kv *);
	/* The daemon's own families on /metrics (redis_up among them). */
	void		(*metrics)(struct metrics *);
	/* Stop: end the loop, now or once in-flight work is done. */
	void		(*stop)(struct ev_loop *);
	/* After the loop: free everything. */
	void		(*exit)(void);
};

/* Log hooks.stats as one line "event=EVENT key=value ...". */
void	daemon_log_stats(const char *event);

/* Returns the process's exit status. */
int	daemon_main(int argc, char *argv[], struct daemon_opts *,
	    const struct daemon_hooks *);

/* Write our pid to path (O_EXCL is not used: a stale file is replaced). */
int	daemon_pidfile(const char *path, char *err, size_t errlen);
/*
 * When running as root: switch to user (and group, else the user's), or
 * fail.  When not root: succeed without doing anything.
 */
int	daemon_drop(const char *user, const char *group, char *err,
	    size_t errlen);

/*
 * A listening Unix socket at path, non-blocking: a stale socket file is
 * removed, a live one (another process answering) or any other file there
 * is an error.  It is given to owner and group when named (group_opt names
 * the option, for the error) and then mode.  Returns the descriptor.
 */
int	daemon_socket(const char *path, const char *owner, const char *group,
	    const char *group_opt, mode_t mode, char *err, size_t errlen);

/*
 * A TCP socket bound to addr ("host:port", "[v6]:port"; numeric), not yet
 * listening, non-blocking.  label starts each error ("inet:").
 */
int	daemon_inet(const char *addr, const char *label, char *err,
	    size_t errlen);

#endif
