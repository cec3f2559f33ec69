/*
 * metrics.h: a daemon's Prometheus endpoint (metrics.shim,
 * metrics.alerter): GET /metrics on host:port, in Prometheus's text
 * format, served by libmicrohttpd from the daemon's own libev loop (no
 * thread: a scrape reads counters the loop owns, so nothing is locked).
 *
 * A scrape renders the page afresh through the daemon's render function,
 * which writes families with the helpers below.  No label value comes
 * from a request: rule names and reasons are from the config and the code.
 */
#ifndef SW_METRICS_H
#define SW_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include <ev.h>

struct metrics;
typedef void	metrics_render_fn(struct metrics *);

/* Listen on addr ("host:port"), still root, before the privilege drop. */
int	metrics_open(struct ev_loop *, const char *addr, metrics_render_fn *,
	    char *err, size_t errlen);
void	metrics_close(void);
/* The page as a scrape would get it, malloc'ed (the tests' and -n's). */
char	*metrics_render(metrics_render_fn *, size_t *len);

/* "# HELP" and "# TYPE" of a family: type is counter, gauge, histogram. */
void	metrics_family(struct metrics *, const char *name, const char *type,
	    const char *help);
/* One sample: labels is "" or `rule="a",answer="yes"` (see metrics_label). */
void	metrics_u64(struct metrics *, const char *name, const char *labels,
	    uint64_t);
void	metrics_double(struct metrics *, const char *name, const char *labels,
	    double);
/* A family of one sample without labels. */
void	metrics_counter(struct metrics *, const char *name, const char *help,
	    uint64_t);
void	metrics_gauge(struct metrics *, const char *name, const char *help,
	    double);
/* A label value escaped as the format wants (\\ \" \n). */
const char *metrics_label(char *dst, size_t dstlen, const char *value);

/* Latency buckets, in seconds: 100 us to 1 s. */
#define METRICS_BUCKETS	13
extern const double metrics_buckets[METRICS_BUCKETS];

struct metrics_hist {
	uint64_t	 le[METRICS_BUCKETS];	/* not cumulative: by bucket */
	uint64_t	 count;
	double		 sum;
};

void	metrics_hist_observe(struct metrics_hist *, double seconds);
void	metrics_hist(struct metrics *, const char *name, const char *help,
	    const struct metrics_hist *);

#endif
