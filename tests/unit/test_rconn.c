/*
 * test_rconn.c: unit tests for rconn_error_kind(), which tells what an
 * error reply from Redis means: the shim's fail-policy reason, and
 * whether Redis certainly ran nothing (a near-cache flush's cost is then
 * kept for the next round rather than counted lost).
 *
 * The error texts are Redis 7.0's own (Debian 12's redis-server), as it
 * sends them for a plain command and from inside a script, copied from
 * replies seen on this machine.  Prints one final line "N passed, N
 * failed".
 */
#include <string.h>

#include <hiredis/hiredis.h>

#include "rconn.h"
#include "shim.h"
#include "check.h"

/* The Makefile links every shim object but main.o; they need the global. */
struct shim shim;

static enum rconn_error
kind_of(int type, const char *text)
{
	redisReply	r;

	memset(&r, 0, sizeof(r));
	r.type = type;
	r.str = (char *)text;
	r.len = strlen(text);
	return rconn_error_kind(&r);
}

#define KIND(text)	kind_of(REDIS_REPLY_ERROR, (text))

static void
test_plain_errors(void)
{
	CHECK(KIND("OOM command not allowed when used memory > 'maxmemory'.")
	    == RERR_OOM);
	CHECK(KIND("READONLY You can't write against a read only replica.") ==
	    RERR_READONLY);
	CHECK(KIND("BUSY Redis is busy running a script. You can only call "
	    "SCRIPT KILL or SHUTDOWN NOSAVE.") == RERR_BUSY);
	CHECK(KIND("NOSCRIPT No matching script. Please use EVAL.") ==
	    RERR_NOSCRIPT);
	CHECK(KIND("LOADING Redis is loading the dataset in memory") ==
	    RERR_LOADING);
	CHECK(KIND("NOPERM this user has no permissions to run the 'incr' "
	    "command") == RERR_NOPERM);
	CHECK(KIND("MOVED 3999 127.0.0.1:6381") == RERR_CLUSTER);
	CHECK(KIND("ASK 3999 127.0.0.1:6381") == RERR_CLUSTER);
	CHECK(KIND("TRYAGAIN Multiple keys request during rehashing of slot")
	    == RERR_CLUSTER);
	CHECK(KIND("CLUSTERDOWN The cluster is down") == RERR_CLUSTER);
	CHECK(KIND("CLUSTERDOWN The cluster is down and only accepts read "
	    "commands") == RERR_CLUSTER);
}

/* From inside a script: Redis's error text, then where it was raised. */
static void
test_script_errors(void)
{
	CHECK(KIND("OOM command not allowed when used memory > 'maxmemory'. "
	    "script: 61636018f4e6b5817b89791bbed242f93fa089e3, on "
	    "@user_script:1.") == RERR_OOM);
	CHECK(KIND("READONLY You can't write against a read only replica. "
	    "script: 61636018f4e6b5817b89791bbed242f93fa089e3, on "
	    "@user_script:1.") == RERR_READONLY);
	CHECK(KIND("ERR The user executing the script can't run this command "
	    "or subcommand script: 61636018f4e6b5817b89791bbed242f93fa089e3, "
	    "on @user_script:1.") == RERR_NOPERM);
	/* cluster-allow-reads-when-down: the script runs, its first write
	 * is refused, nothing written. */
	CHECK(KIND("ERR Script attempted to execute a write command while the "
	    "cluster is down and readonly script: "
	    "61636018f4e6b5817b89791bbed242f93fa089e3, on @user_script:1.") ==
	    RERR_CLUSTER);
	CHECK(KIND("ERR Script attempted to execute a command while the "
	    "cluster is down") == RERR_CLUSTER);
}

/* Anything else is an error of its own, and a reply that is no error is
 * never one. */
static void
test_others(void)
{
	CHECK(KIND("ERR cost must be a whole number from 0 to 1000000") ==
	    RERR_OTHER);
	CHECK(KIND("WRONGTYPE Operation against a key holding the wrong kind "
	    "of value") == RERR_OTHER);
	CHECK(KIND("ERR Error running script, OOMish") == RERR_OTHER);
	CHECK(KIND("OOM") == RERR_OTHER);	/* the prefix has its space */
	CHECK(KIND("") == RERR_OTHER);
	CHECK(kind_of(REDIS_REPLY_STATUS, "OOM command not allowed") ==
	    RERR_OTHER);
	CHECK(kind_of(REDIS_REPLY_STRING, "while the cluster is down") ==
	    RERR_OTHER);
}

int
main(void)
{
	test_plain_errors();
	test_script_errors();
	test_others();
	return check_done();
}
