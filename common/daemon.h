/*
 * daemon.h: the life of a daemon that both programs share: pidfile,
 * dropping privileges, detaching.
 */
#ifndef SW_DAEMON_H
#define SW_DAEMON_H

#include <stddef.h>

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
