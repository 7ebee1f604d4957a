/*
 * minitest: a tiny unit-test framework for the s2pt C core.
 *
 *   TEST(name) { CHECK(x); CHECK_EQ(a, b); REQUIRE_EQ(c, d); }
 *
 * Tests register themselves from constructors, so a test file needs nothing but TEST()
 * blocks. Exactly one translation unit defines MINITEST_MAIN before including this header;
 * it gets the registry and main().
 *
 * CHECK*   record a failure (file:line, the expression, both values) and go on.
 * REQUIRE* record a failure and return from the current function (void functions only).
 *
 * main() runs every registered test (sorted by file, then line) and prints one line per test
 * and a last line "N passed, N failed"; it exits non-zero if any test failed. By default each
 * test runs in a forked child, so a crash, sanitizer abort or __builtin_trap() from a debug
 * assertion fails that test only and the run goes on. Environment:
 *   MINITEST_NOFORK=1   run tests in-process (easier under a debugger)
 *   MINITEST_TIMEOUT=s  per-test time limit in forked mode (default 120 s)
 * Arguments: substrings; only tests whose name contains one of them run.
 */
#ifndef MINITEST_H
#define MINITEST_H

#include <stdint.h>
#include <stdio.h>

typedef void (*minitest_fn)(void);

void minitest_register(const char *name, const char *file, int line, minitest_fn fn);
void minitest_fail(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void minitest_fail_eq(const char *file, int line, const char *op, const char *ea, const char *eb,
		      uint64_t a, uint64_t b);
/* Failures recorded so far in the current test. */
int minitest_failures(void);

#define MT_CAT_(a, b) a##b
#define MT_CAT(a, b) MT_CAT_(a, b)

#define TEST(name)                                                                        \
	static void MT_CAT(mt_test_, name)(void);                                         \
	__attribute__((constructor)) static void MT_CAT(mt_register_, name)(void)         \
	{                                                                                 \
		minitest_register(#name, __FILE__, __LINE__, MT_CAT(mt_test_, name));     \
	}                                                                                 \
	static void MT_CAT(mt_test_, name)(void)

#define CHECK(cond)                                                          \
	do {                                                                 \
		if (!(cond))                                                 \
			minitest_fail(__FILE__, __LINE__, "CHECK(%s)", #cond); \
	} while (0)

#define CHECK_MSG(cond, ...)                                       \
	do {                                                       \
		if (!(cond))                                       \
			minitest_fail(__FILE__, __LINE__, __VA_ARGS__); \
	} while (0)

/* Values are compared as 64-bit unsigned integers (negative codes sign-extend first). */
#define MT_CMP_(a, b, op, opname, action)                                                  \
	do {                                                                               \
		uint64_t mt_a_ = (uint64_t)(a);                                            \
		uint64_t mt_b_ = (uint64_t)(b);                                            \
		if (!(mt_a_ op mt_b_)) {                                                   \
			minitest_fail_eq(__FILE__, __LINE__, opname, #a, #b, mt_a_, mt_b_); \
			action;                                                            \
		}                                                                          \
	} while (0)

#define CHECK_EQ(a, b) MT_CMP_(a, b, ==, "==", (void)0)
#define CHECK_NE(a, b) MT_CMP_(a, b, !=, "!=", (void)0)
#define CHECK_LE(a, b) MT_CMP_(a, b, <=, "<=", (void)0)
#define CHECK_LT(a, b) MT_CMP_(a, b, <, "<", (void)0)
#define REQUIRE_EQ(a, b) MT_CMP_(a, b, ==, "==", return)

#define REQUIRE(cond)                                                          \
	do {                                                                   \
		if (!(cond)) {                                                 \
			minitest_fail(__FILE__, __LINE__, "REQUIRE(%s)", #cond); \
			return;                                                \
		}                                                              \
	} while (0)

/* ------------------------------------------------------------------------------------- */
#ifdef MINITEST_MAIN

#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MT_MAX_TESTS 1024

struct mt_test {
	const char *name;
	const char *file;
	int line;
	minitest_fn fn;
};

static struct mt_test mt_tests[MT_MAX_TESTS];
static int mt_ntests;
static int mt_cur_failures;
static const char *mt_cur_name = "?";

void minitest_register(const char *name, const char *file, int line, minitest_fn fn)
{
	if (mt_ntests == MT_MAX_TESTS) {
		fprintf(stderr, "minitest: more than %d tests\n", MT_MAX_TESTS);
		abort();
	}
	mt_tests[mt_ntests++] = (struct mt_test){name, file, line, fn};
}

int minitest_failures(void)
{
	return mt_cur_failures;
}

void minitest_fail(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	mt_cur_failures++;
	fprintf(stdout, "%s:%d: [%s] ", file, line, mt_cur_name);
	va_start(ap, fmt);
	vfprintf(stdout, fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
}

void minitest_fail_eq(const char *file, int line, const char *op, const char *ea, const char *eb,
		      uint64_t a, uint64_t b)
{
	minitest_fail(file, line,
		      "CHECK(%s %s %s) failed\n    %s = %#llx (%lld)\n    %s = %#llx (%lld)", ea, op,
		      eb, ea, (unsigned long long)a, (long long)a, eb, (unsigned long long)b,
		      (long long)b);
}

static int mt_compare(const void *pa, const void *pb)
{
	const struct mt_test *a = pa, *b = pb;
	int c = strcmp(a->file, b->file);

	return c ? c : a->line - b->line;
}

static int mt_selected(const struct mt_test *t, int argc, char **argv)
{
	if (argc < 2)
		return 1;
	for (int i = 1; i < argc; i++)
		if (strstr(t->name, argv[i]))
			return 1;
	return 0;
}

/* 0 = passed. */
static int mt_run_one(const struct mt_test *t, int forked, unsigned timeout)
{
	pid_t pid;
	int status;

	mt_cur_name = t->name;
	mt_cur_failures = 0;
	if (!forked) {
		t->fn();
		return mt_cur_failures != 0;
	}
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		perror("minitest: fork");
		return 1;
	}
	if (pid == 0) {
		alarm(timeout);
		t->fn();
		fflush(stdout);
		/* exit(), not _exit(): LeakSanitizer checks the child at exit. */
		exit(mt_cur_failures ? 1 : 0);
	}
	if (waitpid(pid, &status, 0) < 0) {
		perror("minitest: waitpid");
		return 1;
	}
	if (WIFEXITED(status))
		return WEXITSTATUS(status) != 0;
	if (WIFSIGNALED(status))
		printf("%s:%d: [%s] crashed with signal %d (%s)\n", t->file, t->line, t->name,
		       WTERMSIG(status), WTERMSIG(status) == SIGALRM ? "timeout" : "crash/abort/trap");
	return 1;
}

int main(int argc, char **argv)
{
	const char *nofork = getenv("MINITEST_NOFORK");
	const char *tmo = getenv("MINITEST_TIMEOUT");
	int forked = !(nofork && *nofork && strcmp(nofork, "0") != 0);
	unsigned timeout = tmo ? (unsigned)strtoul(tmo, NULL, 10) : 120u;
	int passed = 0, failed = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	qsort(mt_tests, (size_t)mt_ntests, sizeof(mt_tests[0]), mt_compare);
	for (int i = 0; i < mt_ntests; i++) {
		const struct mt_test *t = &mt_tests[i];

		if (!mt_selected(t, argc, argv))
			continue;
		if (mt_run_one(t, forked, timeout)) {
			failed++;
			printf("FAIL %s (%s:%d)\n", t->name, t->file, t->line);
		} else {
			passed++;
			printf("ok   %s\n", t->name);
		}
	}
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}

#endif /* MINITEST_MAIN */
#endif /* MINITEST_H */
