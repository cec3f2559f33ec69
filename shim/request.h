/*
 * request.h: the shim's request grammar, independent of sockets so that it
 * can be unit tested and fuzzed.
 *
 *   bare:    KEY [\r] [\n]                counted under rule "default"
 *   block:   name=value \n ... (\n | EOF)  rule, key, subject, cost, mode
 *   policy:  request=smtpd_access_policy \n name=value \n ... \n
 *            Postfix's policy delegation: ends with an empty line, the
 *            connection stays open for the next one.
 *
 * A request is a block when its first line starts with a known attribute
 * name and "=", so SRS addresses (SRS0=...) still work as bare keys.
 */
#ifndef SW_REQUEST_H
#define SW_REQUEST_H

#include <stddef.h>

#include "keyspace.h"

enum request_status {
	REQUEST_MORE,		/* incomplete: read more */
	REQUEST_DONE,		/* complete: fields are set */
	REQUEST_EMPTY,		/* no bytes at all, then EOF: a health check */
	REQUEST_ERROR,		/* malformed: err says why */
};

#define REQUEST_ATTRS_MAX	64	/* Postfix sends about 30 */
#define REQUEST_COST_MAX	KEYSPACE_COST_MAX	/* count.lua's too */

struct request_attr {
	const char	*name;
	size_t		 name_len;
	const char	*value;
	size_t		 value_len;
};

struct request {
	const char	*rule;		/* point into the caller's buffer */
	size_t		 rule_len;
	const char	*key;		/* "<>" for an empty key */
	size_t		 key_len;
	const char	*subject;	/* NULL when not given */
	size_t		 subject_len;
	long long	 cost;		/* 1 unless cost= says otherwise */
	int		 peek;		/* mode=peek: answer, count nothing */
	int		 policy;	/* a Postfix policy request */
	/* Policy requests: every attribute, for the rule to pick its key. */
	struct request_attr attrs[REQUEST_ATTRS_MAX];
	size_t		 nattrs;
	size_t		 used;		/* bytes of the buffer consumed */
};

/*
 * Parse buf[0..len).  eof says the client shut its write side, so a request
 * without its final newline is complete.  Errors fill err.
 */
enum request_status request_parse(const char *buf, size_t len, int eof,
		    struct request *, char *err, size_t errlen);

/* A policy request's attribute value, or NULL. */
const struct request_attr *request_attr(const struct request *,
		    const char *name);

#endif
