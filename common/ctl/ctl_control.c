/*
 * ctl_control.c: stats, status and reload, from the daemons' control
 * sockets (control.shim, control.alerter; see common/control.h): one line
 * written, key=value lines read until the daemon closes, within
 * CTL_CONTROL_TIMEOUT_S.  Values may be double-quoted with backslash
 * escapes (log_quote's \xNN), and are decoded before they are shown.
 *
 * Every daemon named (both configured ones by default) is asked, in
 * turn; one that does not answer is an error on stderr and exit status 1,
 * the others are still printed.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"

#define CTL_CONTROL_TIMEOUT_S	2
#define CTL_CONTROL_MAX		(256 * 1024)

static double
ctl_control_now(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
ctl_control_timeout(int fd, int opt, double s)
{
	struct timeval	 tv;

	if (s < 0.001)
		s = 0.001;
	tv.tv_sec = (time_t)s;
	tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
	setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof(tv));
}

/*
 * Ask the daemon at path; its answer into *out (NUL-terminated).  Returns
 * 0, or -1 with err filled.
 */
static int
ctl_control_ask(const char *path, const char *line, char **out, size_t *outlen,
    char *err, size_t errlen)
{
	struct sockaddr_un	 sun;
	char			 req[32], *buf = NULL;
	size_t			 len = 0, cap = 0;
	double			 deadline;
	ssize_t			 n;
	int			 fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		snprintf(err, errlen, "%s: the path is too long", path);
		return -1;
	}
	memcpy(sun.sun_path, path, strlen(path));
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	deadline = ctl_control_now() + CTL_CONTROL_TIMEOUT_S;
	/* A Unix socket's connect waits (a full backlog) up to SO_SNDTIMEO. */
	ctl_control_timeout(fd, SO_SNDTIMEO, CTL_CONTROL_TIMEOUT_S);
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		snprintf(err, errlen, "%s: connect: %s", path,
		    errno == EAGAIN ? "timed out" : strerror(errno));
		goto fail;
	}
	n = snprintf(req, sizeof(req), "%s\n", line);
	if (write(fd, req, (size_t)n) != n) {
		snprintf(err, errlen, "%s: write: %s", path, strerror(errno));
		goto fail;
	}
	for (;;) {
		if (ctl_control_now() >= deadline) {
			snprintf(err, errlen, "%s: no answer in %ds", path,
			    CTL_CONTROL_TIMEOUT_S);
			goto fail;
		}
		ctl_control_timeout(fd, SO_RCVTIMEO, deadline -
		    ctl_control_now());
		if (len + 4096 + 1 > cap) {
			cap = cap ? cap * 2 : 8192;
			if ((buf = realloc(buf, cap)) == NULL)
				ctl_fatal("out of memory");
		}
		if ((n = read(fd, buf + len, cap - len - 1)) == -1) {
			if (errno == EINTR)
				continue;
			snprintf(err, errlen, "%s: %s", path, errno == EAGAIN ?
			    "no answer in time" : strerror(errno));
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > CTL_CONTROL_MAX) {
			snprintf(err, errlen, "%s: an answer of more than %d "
			    "bytes", path, CTL_CONTROL_MAX);
			goto fail;
		}
	}
	close(fd);
	if (buf == NULL && (buf = malloc(1)) == NULL)
		ctl_fatal("out of memory");
	buf[len] = '\0';
	*out = buf;
	*outlen = len;
	return 0;
fail:
	close(fd);
	free(buf);
	return -1;
}

static int
ctl_control_hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* A value, unquoted in place: "a b\x1b" -> the bytes; returns its length. */
static size_t
ctl_control_value(char *v, size_t len)
{
	size_t	 i, o = 0;
	int	 hi, lo;

	if (len < 2 || v[0] != '"' || v[len - 1] != '"')
		return len;
	for (i = 1; i + 1 < len; i++) {
		if (v[i] != '\\' || i + 2 >= len) {
			v[o++] = v[i];
			continue;
		}
		switch (v[++i]) {
		case 'x':
			if (i + 3 < len && (hi = ctl_control_hex(v[i + 1])) !=
			    -1 && (lo = ctl_control_hex(v[i + 2])) != -1) {
				v[o++] = (char)(hi << 4 | lo);
				i += 2;
			} else
				v[o++] = 'x';
			break;
		case 'n':
			v[o++] = '\n';
			break;
		case 't':
			v[o++] = '\t';
			break;
		case 'r':
			v[o++] = '\r';
			break;
		default:		/* \" \\ and anything else: itself */
			v[o++] = v[i];
		}
	}
	v[o] = '\0';
	return o;
}

static const struct ctl_col ctl_control_cols[] = {
	{ "daemon", "DAEMON" }, { "key", "KEY" }, { "value", "VALUE" },
	{ NULL, NULL }
};
static const struct ctl_col ctl_reload_cols[] = {
	{ "daemon", "DAEMON" }, { "result", "RESULT" }, { "error", NULL },
	{ NULL, NULL }
};

/* One daemon's answer printed; -1 when the daemon answered an error. */
static int
ctl_control_print(struct ctl *ctl, struct ctl_table *t, const char *cmd,
    const char *role, char *ans)
{
	struct ctl_obj	*o = NULL;
	char		*line, *next, *eq, *err = NULL;
	size_t		 vlen;
	int		 reload = strcmp(cmd, "reload") == 0, ok = 0;

	if (ctl->json && !reload) {
		o = ctl_obj_new();
		ctl_obj_str(o, "daemon", role, strlen(role));
	}
	for (line = ans; line != NULL && *line != '\0'; line = next) {
		if ((next = strchr(line, '\n')) != NULL)
			*next++ = '\0';
		if (next != NULL && next - line >= 2 && next[-2] == '\r')
			next[-2] = '\0';
		if (*line == '\0')
			continue;
		if (strcmp(line, "ok") == 0) {
			ok = 1;
			continue;
		}
		if ((eq = strchr(line, '=')) == NULL)
			continue;
		*eq++ = '\0';
		vlen = ctl_control_value(eq, strlen(eq));
		if (strcmp(line, "error") == 0) {
			err = eq;
			continue;
		}
		if (reload)
			continue;
		if (o != NULL) {
			/* Ours names the daemon as the config does. */
			if (strcmp(line, "daemon") != 0)
				ctl_obj_value(o, line, eq, vlen);
			continue;
		}
		if (!ctl->json) {
			ctl_cell_text(t, role);
			ctl_cell_text(t, line);
			ctl_cell_str(t, eq, vlen, CTL_TEXT);
			ctl_row_end(t);
		}
	}
	if (reload) {
		ctl_cell_text(t, role);
		ctl_cell_text(t, err == NULL && ok ? "ok" : "error");
		if (err != NULL)
			ctl_cell_text(t, err);
		else
			ctl_cell_null(t);
		ctl_row_end(t);
	} else if (o != NULL) {
		if (err != NULL)
			ctl_obj_str(o, "error", err, strlen(err));
		ctl_obj_end(o);
	}
	if (err != NULL || (reload && !ok)) {
		ctl_table_flush(t);
		fprintf(stderr, "%s: %s: %s: %s\n", CTL_NAME, role, cmd,
		    err != NULL ? err : "no \"ok\" in the answer");
		return -1;
	}
	return 0;
}

int
ctl_cmd_control(struct ctl *ctl, int argc, char **argv)
{
	const struct conf	*c = ctl->conf;
	const char		*cmd = argv[0];
	struct ctl_table	*t;
	char			 err[512], *ans;
	size_t			 len;
	int			 want[CONF_ROLES], i, rc = CTL_OK, any = 0;

	if (getopt(argc, argv, "") != -1)
		ctl_usage(cmd, NULL);
	if (argc - optind > 1)
		ctl_usage(cmd, "one daemon at most");
	for (i = 0; i < CONF_ROLES; i++)
		want[i] = optind == argc || strcmp(argv[optind],
		    conf_role_name((enum conf_role)i)) == 0;
	if (optind < argc && !want[ROLE_SHIM] && !want[ROLE_ALERTER])
		ctl_usage(cmd, "\"%s\": shim or alerter", argv[optind]);
	for (i = 0; i < CONF_ROLES; i++) {
		if (!want[i])
			continue;
		if (c->control_path[i] == NULL) {
			if (optind < argc)
				ctl_fatal("control.%s is not set in %s",
				    conf_role_name((enum conf_role)i), c->path);
			want[i] = 0;
		} else
			any = 1;
	}
	if (!any)
		ctl_fatal("no control socket in %s (control.shim, "
		    "control.alerter)", c->path);

	t = ctl_table_new(ctl, NULL, strcmp(cmd, "reload") == 0 ?
	    ctl_reload_cols : ctl_control_cols);
	for (i = 0; i < CONF_ROLES; i++) {
		if (!want[i])
			continue;
		if (ctl_control_ask(c->control_path[i], cmd, &ans, &len, err,
		    sizeof(err)) == -1) {
			ctl_table_flush(t);
			fprintf(stderr, "%s: %s not answering: %s\n", CTL_NAME,
			    conf_role_name((enum conf_role)i), err);
			rc = CTL_FAILED;
			continue;
		}
		if (ctl_control_print(ctl, t, cmd,
		    conf_role_name((enum conf_role)i), ans) == -1)
			rc = CTL_FAILED;
		free(ans);
	}
	ctl_table_end(t);
	return rc;
}
