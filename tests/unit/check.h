/*
 * check.h: the unit tests' whole framework.  CHECK(cond) counts a pass or
 * prints "FAIL file:line: cond"; check_done() prints the one closing line
 * "N passed, N failed" and gives main()'s exit status.
 */
#ifndef SW_CHECK_H
#define SW_CHECK_H

#include <stdio.h>

static int	check_passed, check_failed;

static void
check_at(int ok, const char *what, const char *file, int line)
{
	if (ok) {
		check_passed++;
		return;
	}
	check_failed++;
	printf("FAIL %s:%d: %s\n", file, line, what);
}

#define CHECK(cond)	check_at((cond) != 0, #cond, __FILE__, __LINE__)

static int
check_done(void)
{
	printf("%d passed, %d failed\n", check_passed, check_failed);
	return check_failed != 0;
}

#endif
