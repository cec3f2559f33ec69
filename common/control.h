/*
 * control.h: a daemon's control socket (control.shim, control.alerter), as
 * smtpctl's or pgbouncer's console: an admin, monit or a test writes one
 * line and reads the answer until the daemon closes the connection.
 *
 *   stats     every counter, a key=value pair a line
 *   status    the Redis layout and its state, the nodes, what is in
 *             flight, the config file and the last reload
 *   reload    read the config again, as SIGHUP: "ok", or "error=..."
 *
 * Anything else is answered "error=unknown command".  The socket is mode
 * 0600 (root and the daemon's user), or 0660 to control.group.
 */
#ifndef SW_CONTROL_H
#define SW_CONTROL_H

#include <stddef.h>

#include <ev.h>

struct kv;

struct control_hooks {
	void	(*stats)(struct kv *);
	void	(*status)(struct kv *);
	/* 0, or -1 with err filled. */
	int	(*reload)(char *err, size_t errlen);
};

/*
 * Bind path, still root (before the privilege drop), owned by owner (the
 * daemon's user, or NULL) and group (or NULL: mode 0600).
 */
int	control_open(struct ev_loop *, const char *path, const char *owner,
	    const char *group, const struct control_hooks *, char *err,
	    size_t errlen);
/* Close the socket and every client; unlink the path when we may. */
void	control_close(void);

#endif
