/*
 * daemon.h: the life of a daemon that both programs share: pidfile,
 * dropping privileges, detaching.
 */
#ifndef SW_DAEMON_H
#define SW_DAEMON_H

#include <stddef.h>

struct conf;

/* The command line both daemons share: -c -f -n -p -v -V -h. */
struct daemon_opts {
	const char	*name;		/* senderwatch-shim, ... */
	const char	*conf_path;
	const char	*pid_path;
	int		 foreground;
	int		 check;		/* -n: check the config and exit */
	int		 verbose;
};

/*
 * Parse argv into o (name and conf_path set by the caller as defaults).
 * Returns -1 when the program should exit at once with *rc (-V, -h, a
 * usage error), 0 to go on.
 */
int	daemon_options(int argc, char *argv[], struct daemon_opts *o, int *rc);
/*
 * Become the daemon: detach unless -f, write the pidfile, drop to the
 * config's user.  Sockets must be open before: after this we may not be
 * allowed to.  The caller calls daemon_ready() once it is serving.
 */
int	daemon_start(const struct daemon_opts *, const struct conf *,
	    char *err, size_t errlen);

/* Write our pid to path (O_EXCL is not used: a stale file is replaced). */
int	daemon_pidfile(const char *path, char *err, size_t errlen);
/*
 * When running as root: switch to user (and group, else the user's), or
 * fail.  When not root: succeed without doing anything.
 */
int	daemon_drop(const char *user, const char *group, char *err,
	    size_t errlen);
/*
 * Detach from the terminal.  The parent waits and exits 0 when the child
 * calls daemon_ready(), 1 if the child exits first.
 */
int	daemon_detach(char *err, size_t errlen);
void	daemon_ready(void);

#endif
