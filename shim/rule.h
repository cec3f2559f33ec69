/*
 * rule.h: what a rule decides before Redis is asked: key normalisation,
 * the allow and deny lists, per-key overrides from the config.  Pure code,
 * unit tested and fuzzed.
 */
#ifndef SW_RULE_H
#define SW_RULE_H

#include <stddef.h>

#include "conf.h"

/* 1 when key matches an entry: exact, *@domain (any case), or CIDR. */
int	rule_listed(const struct conf_pattern *, size_t n, const char *key,
	    size_t len);
const struct conf_override *rule_override(const struct conf_rule *,
	    const char *key, size_t len);

#endif
