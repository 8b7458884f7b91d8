/*
 * End to end: named prepared statements (protocol Parse/Bind/Describe/
 * Close) in transaction and statement pooling. A client's statements
 * follow it to every server it gets, run its own query whatever another
 * client named the same, and fail where they would on a direct connection
 * (42P05 for a name taken, 26000 for one never made, the Parse's own
 * error). The servers hold at most max_prepared_statements of them, by
 * content, under pgberth's names; a client beyond
 * max_client_prepared_statements gets its further statements untracked,
 * as they were before tracking. Assertions are on results and on what
 * PostgreSQL's pg_prepared_statements holds, never on logs.
 *
 * One PostgreSQL for the suite's TCase; each test starts its own daemon.
 */
#include <check.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "proto.h"

static void prepare_ok(PGconn *c, const char *name, const char *sql, int nparams)
{
	PGresult *r = PQprepare(c, name, sql, nparams, NULL);

	h_assert(PQresultStatus(r) == PGRES_COMMAND_OK, "prepare %s: %s [%s] %s", name,
		 PQresStatus(PQresultStatus(r)), h_sqlstate(r), PQresultErrorMessage(r));
	PQclear(r);
}

static void prepare_fails(PGconn *c, const char *name, const char *sql, const char *state)
{
	PGresult *r = PQprepare(c, name, sql, 0, NULL);

	h_assert(strcmp(h_sqlstate(r), state) == 0, "prepare %s: %s [%s], expected %s", name,
		 PQresStatus(PQresultStatus(r)), h_sqlstate(r), state);
	PQclear(r);
}

/* Runs statement name with one text parameter (or none); asserts the first
 * value is want, or (want NULL) that it fails with state. */
static void assert_run(PGconn *c, const char *name, const char *param, const char *want,
		       const char *state)
{
	const char *params[1] = { param };
	PGresult *r = PQexecPrepared(c, name, param ? 1 : 0, param ? params : NULL, NULL, NULL, 0);

	if (want != NULL)
		h_assert(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
			 strcmp(PQgetvalue(r, 0, 0), want) == 0,
			 "statement %s(%s): %s [%s] %s, expected \"%s\"", name, param ? param : "",
			 PQresStatus(PQresultStatus(r)), h_sqlstate(r),
			 PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) ? PQgetvalue(r, 0, 0)
									  : PQresultErrorMessage(r),
			 want);
	else
		h_assert(strcmp(h_sqlstate(r), state) == 0, "statement %s: %s [%s], expected %s", name,
			 PQresStatus(PQresultStatus(r)), h_sqlstate(r), state);
	PQclear(r);
}

/* How many statements the server c runs on holds, and how many of them
 * are not pgberth's (a client's own name on a server). */
static void server_statements(PGconn *c, long long *all, long long *foreign)
{
	*all = h_query_ll(c, "SELECT count(*) FROM pg_prepared_statements");
	*foreign = h_query_ll(c, "SELECT count(*) FROM pg_prepared_statements "
			      "WHERE name NOT LIKE 'pgberth\\_%'");
}

/*
 * Three clients on one server, and then on two: the same name is three
 * different queries, the same query under different names is one
 * statement on the server, and each client runs its own wherever it is.
 */
START_TEST(test_statements_follow_client)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .workers = 2, .pool_size = 1, .pool_mode = "transaction" };
	PGconn *c[3];
	char sql[64], want[16];
	long long all, foreign;

	h_daemon_start(&d, &h_shared_pg, &o);
	for (int i = 0; i < 3; i++) {
		c[i] = h_connect(&d, NULL);
		snprintf(sql, sizeof(sql), "SELECT 'client %d'", i);
		prepare_ok(c[i], "s1", sql, 0);
		prepare_ok(c[i], i == 1 ? "other_name" : "double", "SELECT $1::int * 2", 1);
	}
	for (int round = 0; round < 20; round++) {
		for (int i = 0; i < 3; i++) {
			snprintf(want, sizeof(want), "client %d", i);
			assert_run(c[i], "s1", NULL, want, NULL);
			snprintf(sql, sizeof(sql), "%d", round * 3 + i);
			snprintf(want, sizeof(want), "%d", (round * 3 + i) * 2);
			assert_run(c[i], i == 1 ? "other_name" : "double", sql, want, NULL);
		}
	}
	/* Describe: the statement's own parameters and columns. */
	PGresult *r = PQdescribePrepared(c[2], "double");
	h_assert(PQresultStatus(r) == PGRES_COMMAND_OK && PQnparams(r) == 1 &&
		 PQparamtype(r, 0) == 23 && PQnfields(r) == 1,
		 "describe: %s [%s] nparams %d", PQresStatus(PQresultStatus(r)), h_sqlstate(r),
		 PQnparams(r));
	PQclear(r);
	/* One server: 3 distinct texts of s1 and one of the doubling query. */
	server_statements(c[0], &all, &foreign);
	h_assert(all == 4 && foreign == 0, "server holds %lld statements, %lld of clients' names",
		 all, foreign);
	/* Names are per client: unknown to another, and free for it. */
	prepare_ok(c[0], "mine", "SELECT 'zero'", 0);
	assert_run(c[1], "mine", NULL, NULL, "26000");
	prepare_ok(c[1], "mine", "SELECT 'one'", 0);
	assert_run(c[0], "mine", NULL, "zero", NULL);
	assert_run(c[1], "mine", NULL, "one", NULL);
	for (int i = 0; i < 3; i++)
		PQfinish(c[i]);
	h_daemon_stop_ok(&d);
}
END_TEST

/* "SELECT length('xxx...') + k", the literal n bytes long. */
static char *long_query(size_t n, int k)
{
	char *q = malloc(n + 64);

	h_assert(q != NULL, "out of memory");
	int at = snprintf(q, n + 64, "SELECT length('");
	memset(q + at, 'x', n);
	snprintf(q + at + n, 64, "') + %d", k);
	return q;
}

/*
 * Statements longer than the relay buffer follow their client too, and
 * what servers hold of them is bounded in bytes (PSTMT_SERVER_BYTES) as
 * well as in number.
 */
START_TEST(test_long_statements)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .workers = 1, .pool_size = 2, .pool_mode = "transaction" };
	char name[16], want[16];
	PGconn *a, *b;

	h_daemon_start(&d, &h_shared_pg, &o);
	a = h_connect(&d, NULL);
	b = h_connect(&d, NULL);
	char *q = long_query(100000, 1);
	prepare_ok(a, "long", q, 0);
	free(q);
	/* b holds the only server there is: a's next runs on a new one. */
	h_exec_ok(b, "BEGIN");
	assert_run(a, "long", NULL, "100001", NULL);
	h_exec_ok(b, "COMMIT");
	/* 20 statements of 900 KB: at most 16 MiB of them on a server. */
	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof(name), "s%d", i);
		q = long_query(900000, i);
		prepare_ok(a, name, q, 0);
		free(q);
	}
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < 20; i++) {
			snprintf(name, sizeof(name), "s%d", i);
			snprintf(want, sizeof(want), "%d", 900000 + i);
			assert_run(a, name, NULL, want, NULL);
		}
	}
	long long held = h_query_ll(a, "SELECT coalesce(sum(length(statement)), 0) FROM pg_prepared_statements");
	h_assert(held > 0 && held <= 16 * 1024 * 1024, "a server holds %lld bytes of statements", held);
	assert_run(a, "long", NULL, "100001", NULL);
	PQfinish(a);
	PQfinish(b);
	h_daemon_stop_ok(&d);
}
END_TEST

/*
 * max_prepared_statements bounds what a server holds: a client rotating
 * through more statements than that still gets each one's result, and the
 * server never holds more.
 */
START_TEST(test_server_cache_bound)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .workers = 1, .pool_size = 1, .pool_mode = "transaction",
				   .extra_top = "max_prepared_statements: 3\n" };
	PGconn *a, *b;
	char name[16], sql[64], want[16];
	long long all, foreign;

	h_daemon_start(&d, &h_shared_pg, &o);
	a = h_connect(&d, NULL);
	b = h_connect(&d, NULL);
	for (int i = 0; i < 8; i++) {
		snprintf(name, sizeof(name), "q%d", i);
		snprintf(sql, sizeof(sql), "SELECT %d", i);
		prepare_ok(a, name, sql, 0);
	}
	for (int round = 0; round < 5; round++) {
		for (int i = 0; i < 8; i++) {
			snprintf(name, sizeof(name), "q%d", (i * 3 + round) % 8);
			snprintf(want, sizeof(want), "%d", (i * 3 + round) % 8);
			h_assert_value(b, "SELECT 'b between'", "b between");
			assert_run(a, name, NULL, want, NULL);
			server_statements(a, &all, &foreign);
			h_assert(all <= 3 && foreign == 0, "server holds %lld statements (bound 3)", all);
		}
	}
	PQfinish(a);
	PQfinish(b);
	h_daemon_stop_ok(&d);
}
END_TEST

/*
 * Errors as on a direct connection: a name taken (42P05), a Parse that
 * fails (its error, and the name stays free), and in a pipeline the
 * statements after an error are never made, also the one another client
 * already has on the server (pgberth answers that Parse itself).
 */
START_TEST(test_statement_errors)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .workers = 1, .pool_size = 1, .pool_mode = "transaction" };
	PGconn *a, *b;
	PGresult *r;

	h_daemon_start(&d, &h_shared_pg, &o);
	a = h_connect(&d, NULL);
	b = h_connect(&d, NULL);
	prepare_ok(a, "s", "SELECT 'a'", 0);
	prepare_fails(a, "s", "SELECT 'again'", "42P05");
	assert_run(a, "s", NULL, "a", NULL);
	prepare_fails(a, "bad", "SELEC 1", "42601");
	assert_run(a, "bad", NULL, NULL, "26000");
	prepare_ok(a, "bad", "SELECT 'fixed'", 0);
	assert_run(a, "bad", NULL, "fixed", NULL);

	/* b's pipeline: an error, then a Parse of what the server holds
	 * (a's "SELECT 'a'") and one of a new query: both skipped. */
	h_assert(PQenterPipelineMode(b) == 1, "pipeline mode");
	h_assert(PQsendQueryParams(b, "SELECT 1/0", 0, NULL, NULL, NULL, NULL, 0) == 1, "send");
	h_assert(PQsendPrepare(b, "p_cached", "SELECT 'a'", 0, NULL) == 1, "send prepare");
	h_assert(PQsendPrepare(b, "p_new", "SELECT 'new'", 0, NULL) == 1, "send prepare");
	h_assert(PQpipelineSync(b) == 1, "sync");
	const ExecStatusType want[] = { PGRES_FATAL_ERROR, PGRES_PIPELINE_ABORTED,
					PGRES_PIPELINE_ABORTED };
	for (int i = 0; i < 3; i++) {
		r = PQgetResult(b);
		h_assert(r != NULL && PQresultStatus(r) == want[i], "pipeline result %d: %s", i,
			 r ? PQresStatus(PQresultStatus(r)) : "none");
		PQclear(r);
		h_assert(PQgetResult(b) == NULL, "end of result %d", i);
	}
	r = PQgetResult(b);
	h_assert(r != NULL && PQresultStatus(r) == PGRES_PIPELINE_SYNC, "sync result");
	PQclear(r);
	h_assert(PQexitPipelineMode(b) == 1, "exit pipeline mode");
	assert_run(b, "p_cached", NULL, NULL, "26000");
	assert_run(b, "p_new", NULL, NULL, "26000");
	prepare_ok(b, "p_cached", "SELECT 'a'", 0);
	prepare_ok(b, "p_new", "SELECT 'new'", 0);
	assert_run(b, "p_cached", NULL, "a", NULL);
	assert_run(b, "p_new", NULL, "new", NULL);
	assert_run(a, "s", NULL, "a", NULL);
	PQfinish(a);
	PQfinish(b);
	h_daemon_stop_ok(&d);
}
END_TEST

/*
 * A pipeline of Parse, Bind, Execute for many statements in one go, from
 * clients that share one server: every result in order, also for the
 * Parses pgberth answers itself and the ones it sends for a Bind.
 */
START_TEST(test_statement_pipeline)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .workers = 2, .pool_size = 1, .pool_mode = "transaction",
				   .extra_top = "max_prepared_statements: 4\n" };
	PGconn *c[2];
	char name[16], sql[64], want[16], param[16];
	const char *params[1] = { param };
	PGresult *r;

	h_daemon_start(&d, &h_shared_pg, &o);
	for (int k = 0; k < 2; k++) {
		c[k] = h_connect(&d, NULL);
		h_assert(PQenterPipelineMode(c[k]) == 1, "pipeline mode");
	}
	for (int round = 0; round < 3; round++) {
		for (int k = 0; k < 2; k++) {
			for (int i = 0; i < 6; i++) {
				snprintf(name, sizeof(name), "st%d", i);
				snprintf(sql, sizeof(sql), "SELECT $1::int + %d", i);
				if (round == 0)
					h_assert(PQsendPrepare(c[k], name, sql, 1, NULL) == 1, "send prepare");
				snprintf(param, sizeof(param), "%d", k * 100);
				h_assert(PQsendQueryPrepared(c[k], name, 1, params, NULL, NULL, 0) == 1,
					 "send execute");
			}
			h_assert(PQpipelineSync(c[k]) == 1, "sync");
		}
		for (int k = 0; k < 2; k++) {
			for (int i = 0; i < 6; i++) {
				if (round == 0) {
					r = PQgetResult(c[k]);
					h_assert(r && PQresultStatus(r) == PGRES_COMMAND_OK,
						 "prepare st%d: %s %s", i, r ? PQresStatus(PQresultStatus(r)) : "none",
						 r ? PQresultErrorMessage(r) : "");
					PQclear(r);
					h_assert(PQgetResult(c[k]) == NULL, "end of prepare");
				}
				r = PQgetResult(c[k]);
				snprintf(want, sizeof(want), "%d", k * 100 + i);
				h_assert(r && PQresultStatus(r) == PGRES_TUPLES_OK &&
					 strcmp(PQgetvalue(r, 0, 0), want) == 0,
					 "client %d st%d: %s %s, expected %s", k, i,
					 r ? PQresStatus(PQresultStatus(r)) : "none",
					 r && PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0)
										 : (r ? PQresultErrorMessage(r) : ""),
					 want);
				PQclear(r);
				h_assert(PQgetResult(c[k]) == NULL, "end of execute");
			}
			r = PQgetResult(c[k]);
			h_assert(r && PQresultStatus(r) == PGRES_PIPELINE_SYNC, "sync result");
			PQclear(r);
		}
	}
	for (int k = 0; k < 2; k++)
		PQfinish(c[k]);
	h_daemon_stop_ok(&d);
}
END_TEST

/*
 * SQL DEALLOCATE of a protocol statement drops it as on a direct
 * connection (psycopg does that when its own cache evicts one); DEALLOCATE
 * ALL and DISCARD ALL drop them all, and the names are free again.
 */
/* A statement that drops statements, sent as a simple query or (ext) in
 * the extended protocol, as psycopg 3 sends its DEALLOCATE: asserts it
 * fails with state, or (state NULL) that it runs. */
static void drop_sql(PGconn *c, bool ext, const char *sql, const char *state)
{
	PGresult *r = ext ? PQexecParams(c, sql, 0, NULL, NULL, NULL, NULL, 0) : PQexec(c, sql);
	ExecStatusType st = PQresultStatus(r);

	if (state == NULL)
		h_assert(st == PGRES_COMMAND_OK, "\"%s\": %s [%s] %s", sql, PQresStatus(st), h_sqlstate(r),
			 PQresultErrorMessage(r));
	else
		h_assert(st == PGRES_FATAL_ERROR && strcmp(h_sqlstate(r), state) == 0,
			 "\"%s\": %s [%s], expected %s", sql, PQresStatus(st), h_sqlstate(r), state);
	PQclear(r);
}

/* DEALLOCATE, DEALLOCATE ALL and DISCARD ALL of a client's statements in
 * simple queries (_i 0) and in the extended protocol (_i 1). */
START_TEST(test_deallocate)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .workers = 1, .pool_size = 1, .pool_mode = "transaction" };
	bool ext = _i == 1;
	PGconn *a, *b;

	h_daemon_start(&d, &h_shared_pg, &o);
	a = h_connect(&d, NULL);
	b = h_connect(&d, NULL);
	prepare_ok(a, "_pg3_0", "SELECT 'x'", 0);
	prepare_ok(a, "Upper", "SELECT 'y'", 0);
	prepare_ok(b, "_pg3_0", "SELECT 'x'", 0);
	drop_sql(a, ext, "DEALLOCATE _pg3_0", NULL);
	assert_run(a, "_pg3_0", NULL, NULL, "26000");
	assert_run(b, "_pg3_0", NULL, "x", NULL);
	drop_sql(a, ext, "DEALLOCATE Upper", "26000");      /* folds to lower case */
	/* In a failed transaction it fails, and the statement stays. */
	h_exec_ok(a, "BEGIN");
	h_exec_fails(a, "SELECT 1/0", "22012");
	drop_sql(a, ext, "DEALLOCATE PREPARE \"Upper\"", "25P02");
	h_exec_ok(a, "ROLLBACK");
	assert_run(a, "Upper", NULL, "y", NULL);
	drop_sql(a, ext, "DEALLOCATE PREPARE \"Upper\";", NULL);
	assert_run(a, "Upper", NULL, NULL, "26000");
	drop_sql(a, ext, "DEALLOCATE never_made", "26000");
	prepare_ok(a, "_pg3_0", "SELECT 'x again'", 0);
	assert_run(a, "_pg3_0", NULL, "x again", NULL);
	drop_sql(a, ext, "DEALLOCATE ALL", NULL);
	assert_run(a, "_pg3_0", NULL, NULL, "26000");
	assert_run(b, "_pg3_0", NULL, "x", NULL);
	prepare_ok(a, "_pg3_0", "SELECT 'x, third'", 0);
	assert_run(a, "_pg3_0", NULL, "x, third", NULL);
	prepare_ok(b, "second", "SELECT 'z'", 0);
	drop_sql(b, ext, "DISCARD ALL", NULL);
	assert_run(b, "_pg3_0", NULL, NULL, "26000");
	assert_run(b, "second", NULL, NULL, "26000");
	prepare_ok(b, "second", "SELECT 'z2'", 0);
	assert_run(b, "second", NULL, "z2", NULL);
	assert_run(a, "_pg3_0", NULL, "x, third", NULL);
	PQfinish(a);
	PQfinish(b);
	h_daemon_stop_ok(&d);
}
END_TEST

/*
 * Past max_client_prepared_statements a client's statements are not
 * tracked: they work on the server it has, and are dropped (DEALLOCATE
 * ALL) before another client uses that server; the tracked ones are made
 * again where needed.
 */
START_TEST(test_client_limit)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .workers = 1, .pool_size = 1, .pool_mode = "transaction",
				   .extra_top = "max_client_prepared_statements: 2\n" };
	PGconn *a, *b;
	long long all, foreign;

	h_daemon_start(&d, &h_shared_pg, &o);
	a = h_connect(&d, NULL);
	b = h_connect(&d, NULL);
	prepare_ok(a, "t1", "SELECT 1", 0);
	prepare_ok(a, "t2", "SELECT 2", 0);
	prepare_ok(a, "t3", "SELECT 3", 0);
	assert_run(a, "t3", NULL, "3", NULL);       /* the same server: pool_size 1 */
	assert_run(b, "t3", NULL, NULL, "26000");
	server_statements(b, &all, &foreign);
	h_assert(foreign == 0, "another client's untracked statement is on b's server");
	assert_run(a, "t1", NULL, "1", NULL);
	assert_run(a, "t2", NULL, "2", NULL);
	PQfinish(a);
	PQfinish(b);
	h_daemon_stop_ok(&d);
}
END_TEST

/* Statement mode: each statement on whichever server, named ones too. */
START_TEST(test_statement_mode)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .workers = 2, .pool_size = 1, .pool_mode = "statement" };
	PGconn *a, *b;

	h_daemon_start(&d, &h_shared_pg, &o);
	a = h_connect(&d, NULL);
	b = h_connect(&d, NULL);
	prepare_ok(a, "s", "SELECT 'a:' || $1", 1);
	prepare_ok(b, "s", "SELECT 'b:' || $1", 1);
	for (int i = 0; i < 10; i++) {
		assert_run(a, "s", "1", "a:1", NULL);
		assert_run(b, "s", "2", "b:2", NULL);
	}
	PQfinish(a);
	PQfinish(b);
	h_daemon_stop_ok(&d);
}
END_TEST

/* pgbench -M prepared through transaction pooling, more clients than
 * servers, a transaction of several statements: no error, every
 * transaction done. One thread per client: pgbench prepares with a
 * blocking call, and one thread for many clients would wait for a server
 * the others hold. */
START_TEST(test_pgbench_prepared)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .workers = 2, .pool_size = 2, .pool_mode = "transaction" };
	char port[16], script[H_PATH_MAX + 32], out_path[H_PATH_MAX + 32], *out;

	h_daemon_start(&d, &h_shared_pg, &o);
	snprintf(port, sizeof(port), "%d", d.port);
	snprintf(script, sizeof(script), "%s/prepared.sql", d.dir);
	snprintf(out_path, sizeof(out_path), "%s/pgbench.out", d.dir);
	h_assert(h_write_file(script, "\\set a random(1, 1000)\n"
				      "SELECT :a + 1;\n"
				      "BEGIN;\n"
				      "SELECT :a * 2;\n"
				      "SELECT 1 / (1 + :a % 2), :a::text;\n"
				      "COMMIT;\n"), "script");
	const char *argv[] = { h_pg_bin("pgbench"), "-n", "-h", d.sockdir, "-p", port, "-U",
			       H_SUPERUSER, "-M", "prepared", "-f", script, "-c", "6", "-j", "6",
			       "-t", "100", "appdb", NULL };
	int rc = h_run(argv, out_path, false, 60000);
	out = h_read_file(out_path);
	h_assert(rc == 0 && out != NULL &&
		 strstr(out, "number of transactions actually processed: 600/600") != NULL &&
		 strstr(out, "number of failed transactions: 0 ") != NULL,
		 "pgbench exited %d:\n%s", rc, out ? out : "(no output)");
	free(out);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- raw protocol, for sequences libpq does not send ---------------- */

struct raw {
	char buf[4096];
	size_t len;
};

static void raw_msg(struct raw *r, char type, const void *body, size_t n)
{
	h_assert(r->len + 5 + n <= sizeof(r->buf), "raw batch too long");
	r->buf[r->len] = type;
	proto_put32((uint8_t *)r->buf + r->len + 1, (uint32_t)(n + 4));
	memcpy(r->buf + r->len + 5, body, n);
	r->len += 5 + n;
}

/* Parse name (NUL-separated strings) with no parameter types. */
static void raw_parse(struct raw *r, const char *name, const char *sql)
{
	char b[512];
	size_t n = strlen(name) + 1, m = strlen(sql) + 1;
	memcpy(b, name, n);
	memcpy(b + n, sql, m);
	b[n + m] = b[n + m + 1] = 0;
	raw_msg(r, 'P', b, n + m + 2);
}

static void raw_bind_exec(struct raw *r, const char *stmt)
{
	char b[128] = "";
	size_t n = strlen(stmt) + 1;
	memcpy(b + 1, stmt, n);             /* unnamed portal, then the name */
	memset(b + 1 + n, 0, 6);            /* no formats, no parameters, no result formats */
	raw_msg(r, 'B', b, 1 + n + 6);
	raw_msg(r, 'E', "\0\0\0\0", 5);
}

static void raw_close(struct raw *r, const char *name)
{
	char b[128] = "S";
	size_t n = strlen(name) + 1;
	memcpy(b + 1, name, n);
	raw_msg(r, 'C', b, 1 + n);
}

static void raw_sync(struct raw *r)
{
	raw_msg(r, 'S', "", 0);
}

static void raw_query(struct raw *r, const char *sql)
{
	raw_msg(r, 'Q', sql, strlen(sql) + 1);
}

static void raw_run_until(int fd, struct raw *r, int nz, char stop, char *out, size_t size);

/* Sends the batch and reads until nz ReadyForQuery: the replies, as
 * "1 2 D:11 C Z" (errors as E:SQLSTATE, rows by their first value). */
static void raw_run(int fd, struct raw *r, int nz, char *out, size_t size)
{
	raw_run_until(fd, r, nz, 'Z', out, size);
}

/* The same, counting messages of type stop instead. */
static void raw_run_until(int fd, struct raw *r, int nz, char stop, char *out, size_t size)
{
	struct h_msg m;
	size_t at = 0;

	h_assert(h_raw_send(fd, r->buf, r->len) == 0, "raw send");
	r->len = 0;
	out[0] = '\0';
	while (nz > 0) {
		int rc = h_raw_read_msg(fd, &m, 10000);
		h_assert(rc == 1, "raw read: %d, after \"%s\"", rc, out);
		char item[96];
		if (m.type == 'E' || m.type == 'N')
			snprintf(item, sizeof(item), "%c:%s", m.type,
				 proto_error_field((const uint8_t *)m.body, m.len, 'C'));
		else if (m.type == 'D' && m.len >= 6 && (int32_t)proto_get32((uint8_t *)m.body + 2) >= 0)
			snprintf(item, sizeof(item), "D:%.*s", (int)proto_get32((uint8_t *)m.body + 2), m.body + 6);
		else
			snprintf(item, sizeof(item), "%c", m.type);
		if (m.type == stop)
			nz--;
		free(m.body);
		if (m.type == 'N' || m.type == 'S')
			continue;
		at += (size_t)snprintf(out + at, size - at, "%s%s", at ? " " : "", item);
		h_assert(at < size, "raw replies too long");
	}
}

static void raw_expect_until(int fd, struct raw *r, char stop, const char *want)
{
	char got[1024];

	raw_run_until(fd, r, 1, stop, got, sizeof(got));
	h_assert(strcmp(got, want) == 0, "replies \"%s\", expected \"%s\"", got, want);
}

static void raw_expect(int fd, struct raw *r, int nz, const char *want)
{
	char got[1024];

	raw_run(fd, r, nz, got, sizeof(got));
	h_assert(strcmp(got, want) == 0, "replies \"%s\", expected \"%s\"", got, want);
}

/*
 * What a direct connection answers, for sequences that once went wrong:
 * each expected string is PostgreSQL's own reply to the same bytes.
 */
START_TEST(test_like_direct)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .workers = 2, .pool_size = 1, .pool_mode = "transaction",
				   .extra_top = "max_prepared_statements: 2\n" };
	struct raw r = { .len = 0 };
	int a, b;

	h_daemon_start(&d, &h_shared_pg, &o);
	a = h_raw_client(&d, "appdb", NULL);
	b = h_raw_client(&d, "appdb", NULL);

	/* A second name for the same query, DEALLOCATEd: the first still runs. */
	raw_parse(&r, "s", "SELECT 1"); raw_sync(&r);
	raw_parse(&r, "t", "SELECT 1"); raw_sync(&r);
	raw_query(&r, "DEALLOCATE t");
	raw_bind_exec(&r, "s"); raw_sync(&r);
	raw_expect(a, &r, 4, "1 Z 1 Z C Z 2 D:1 C Z");
	raw_parse(&r, "u", "SELECT 1"); raw_bind_exec(&r, "u"); raw_sync(&r);
	raw_expect(b, &r, 1, "1 2 D:1 C Z");

	/* DEALLOCATE in a failed transaction fails, and drops nothing. (Sent
	 * on its own: in a pipeline, what follows it is scanned before its
	 * answer, as if it had worked.) */
	raw_parse(&r, "f", "SELECT 2"); raw_sync(&r);
	raw_query(&r, "BEGIN"); raw_query(&r, "SELECT 1/0");
	raw_expect(a, &r, 3, "1 Z C Z E:22012 Z");
	raw_query(&r, "DEALLOCATE f");
	raw_expect(a, &r, 1, "E:25P02 Z");
	raw_query(&r, "ROLLBACK");
	raw_bind_exec(&r, "f"); raw_sync(&r);
	raw_expect(a, &r, 2, "C Z 2 D:2 C Z");
	raw_parse(&r, "g", "SELECT 2"); raw_bind_exec(&r, "g"); raw_sync(&r);
	raw_expect(b, &r, 1, "1 2 D:2 C Z");

	/* A Close skipped after an error closes nothing. */
	raw_parse(&r, "c", "SELECT 3"); raw_sync(&r);
	raw_parse(&r, "", "SELEC bogus"); raw_close(&r, "c"); raw_sync(&r);
	raw_bind_exec(&r, "c"); raw_sync(&r);
	raw_expect(a, &r, 3, "1 Z E:42601 Z 2 D:3 C Z");

	/* Two Parses of a query that fails: both fail. */
	raw_parse(&r, "n1", "SELECT * FROM regress_nosuch"); raw_sync(&r);
	raw_parse(&r, "n2", "SELECT * FROM regress_nosuch"); raw_sync(&r);
	raw_expect(a, &r, 2, "E:42P01 Z E:42P01 Z");

	/* Statements made after a DEALLOCATE ALL or DISCARD ALL in the same
	 * batch stay, for this client and as statements of the server. */
	raw_query(&r, "DEALLOCATE ALL"); raw_parse(&r, "d", "SELECT 44"); raw_sync(&r);
	raw_bind_exec(&r, "d"); raw_sync(&r);
	raw_expect(a, &r, 3, "C Z 1 Z 2 D:44 C Z");
	raw_parse(&r, "e", "SELECT 44"); raw_bind_exec(&r, "e"); raw_sync(&r);
	raw_expect(b, &r, 1, "1 2 D:44 C Z");
	raw_parse(&r, "x", "SELECT 45"); raw_sync(&r);
	raw_query(&r, "DISCARD ALL"); raw_parse(&r, "y", "SELECT 45"); raw_sync(&r);
	raw_bind_exec(&r, "y"); raw_sync(&r);
	raw_expect(a, &r, 4, "1 Z C Z 1 Z 2 D:45 C Z");
	raw_bind_exec(&r, "x"); raw_sync(&r);
	raw_expect(a, &r, 1, "E:26000 Z");     /* once the DISCARD ALL was answered */

	/* Skipped Parses, then evictions: no statement name left taken. */
	raw_parse(&r, "", "SELEC bogus"); raw_parse(&r, "k1", "SELECT 11"); raw_parse(&r, "k2", "SELECT 12");
	raw_parse(&r, "k3", "SELECT 13"); raw_sync(&r);
	raw_expect(a, &r, 1, "E:42601 Z");
	raw_parse(&r, "k1", "SELECT 11"); raw_bind_exec(&r, "k1"); raw_sync(&r);
	raw_parse(&r, "k4", "SELECT 11"); raw_bind_exec(&r, "k4"); raw_sync(&r);
	raw_expect(a, &r, 2, "1 2 D:11 C Z 1 2 D:11 C Z");
	raw_parse(&r, "k5", "SELECT 11"); raw_parse(&r, "k6", "SELECT 12"); raw_parse(&r, "k7", "SELECT 13");
	raw_bind_exec(&r, "k5"); raw_sync(&r);
	raw_expect(b, &r, 1, "1 1 1 2 D:11 C Z");

	/* A Query in an extended batch after an error is skipped: no reply
	 * owed for it, and the next client gets the server. */
	raw_parse(&r, "", "SELEC bogus"); raw_query(&r, "SELECT 1"); raw_sync(&r);
	raw_expect(a, &r, 1, "E:42601 Z");
	raw_query(&r, "SELECT 'b here'");
	raw_expect(b, &r, 1, "T D:b here C Z");

	close(a);
	close(b);
	h_daemon_stop_ok(&d);
}
END_TEST

/*
 * More sequences a second review found answered unlike PostgreSQL: a SET
 * batched before a Parse, a COPY that fails on its data with Syncs among
 * it, a batch sent while a COPY runs, a failed Parse made again in the
 * same batch, a DISCARD ALL that fails, and a DEALLOCATE split across
 * reads.
 */
START_TEST(test_like_direct_2)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .workers = 1, .pool_size = 1, .pool_mode = "transaction" };
	struct raw r = { .len = 0 };
	int a, b;
	const char *epoch = "SELECT extract(epoch from '2020-01-01 00:00'::timestamptz)::int";

	h_daemon_start(&d, &h_shared_pg, &o);
	a = h_raw_client(&d, "appdb", NULL);
	b = h_raw_client(&d, "appdb", NULL);
	raw_query(&r, "SET TimeZone = 'UTC'");
	raw_expect(b, &r, 1, "C Z");
	raw_query(&r, "SET TimeZone = 'UTC'");
	raw_expect(a, &r, 1, "C Z");

	/* A SET in the same batch as the Parse: the statement is parsed
	 * under Tokyo, and is not UTC b's. */
	raw_query(&r, "SET TimeZone = 'Asia/Tokyo'"); raw_parse(&r, "s1", epoch); raw_sync(&r);
	raw_expect(a, &r, 2, "C Z 1 Z");
	raw_parse(&r, "x", epoch); raw_bind_exec(&r, "x"); raw_sync(&r);
	raw_expect(b, &r, 1, "1 2 D:1577836800 C Z");
	raw_bind_exec(&r, "s1"); raw_sync(&r);
	raw_expect(a, &r, 1, "2 D:1577804400 C Z");

	/* COPY failing on its data, a Sync among the data: both Syncs answered. */
	raw_query(&r, "CREATE TABLE IF NOT EXISTS regress_cp2 (x int)");
	raw_expect(a, &r, 1, "C Z");
	raw_parse(&r, "", "COPY regress_cp2 FROM STDIN"); raw_bind_exec(&r, "");
	raw_msg(&r, 'd', "bad\n", 4); raw_sync(&r);
	raw_msg(&r, 'd', "2\n", 2); raw_msg(&r, 'c', "", 0); raw_sync(&r);
	raw_expect(a, &r, 2, "1 2 G E:22P02 Z Z");
	raw_query(&r, "SELECT 'b after the copy'");
	raw_expect(b, &r, 1, "T D:b after the copy C Z");

	/* A batch sent while the COPY still runs (its CopyDone went first). */
	raw_query(&r, "CREATE OR REPLACE FUNCTION regress_slow() RETURNS trigger LANGUAGE plpgsql AS "
		  "'BEGIN PERFORM pg_sleep(0.3); RETURN NEW; END';"
		  "DROP TRIGGER IF EXISTS regress_slow ON regress_cp2;"
		  "CREATE TRIGGER regress_slow BEFORE INSERT ON regress_cp2 FOR EACH ROW "
		  "EXECUTE FUNCTION regress_slow()");
	raw_expect(a, &r, 1, "C C C Z");
	raw_parse(&r, "", "COPY regress_cp2 FROM STDIN"); raw_bind_exec(&r, "");
	raw_msg(&r, 'd', "3\n", 2); raw_msg(&r, 'c', "", 0); raw_sync(&r);
	h_assert(h_raw_send(a, r.buf, r.len) == 0, "raw send");
	r.len = 0;
	h_sleep_ms(100);
	raw_parse(&r, "", "SELECT 'second batch'"); raw_bind_exec(&r, ""); raw_sync(&r);
	raw_expect(a, &r, 2, "1 2 G C Z 1 2 D:second batch C Z");
	raw_query(&r, "DROP TABLE regress_cp2; DROP FUNCTION regress_slow()");
	raw_expect(a, &r, 1, "C C Z");

	/* A COPY that fails before reading anything (a statement trigger),
	 * with a batch behind it: the Sync after the COPY is answered. */
	raw_query(&r, "CREATE TABLE regress_cp3 (x int);"
		  "CREATE FUNCTION regress_no() RETURNS trigger LANGUAGE plpgsql AS "
		  "'BEGIN RAISE EXCEPTION ''no copy''; END';"
		  "CREATE TRIGGER regress_no BEFORE INSERT ON regress_cp3 FOR EACH STATEMENT "
		  "EXECUTE FUNCTION regress_no()");
	raw_expect(a, &r, 1, "C C C Z");
	raw_parse(&r, "", "COPY regress_cp3 FROM STDIN"); raw_bind_exec(&r, ""); raw_sync(&r);
	raw_parse(&r, "", "SELECT 'a second'"); raw_bind_exec(&r, ""); raw_sync(&r);
	raw_expect(a, &r, 2, "1 2 G E:P0001 Z 1 2 D:a second C Z");
	raw_query(&r, "SELECT 'b after'");
	raw_expect(b, &r, 1, "T D:b after C Z");
	raw_query(&r, "DROP TABLE regress_cp3; DROP FUNCTION regress_no()");
	raw_expect(a, &r, 1, "C C Z");

	/* CopyFail in an extended query: what follows it up to the Sync is
	 * skipped, as without pgberth's fence behind it. */
	raw_parse(&r, "", "COPY (SELECT 1) TO STDOUT"); raw_sync(&r);     /* not an input */
	raw_expect(a, &r, 1, "1 Z");
	raw_query(&r, "CREATE TEMP TABLE regress_cp4 (x int)");
	raw_expect(a, &r, 1, "C Z");
	raw_parse(&r, "", "COPY regress_cp4 FROM STDIN"); raw_bind_exec(&r, ""); raw_msg(&r, 'H', "", 0);
	h_assert(h_raw_send(a, r.buf, r.len) == 0, "raw send");
	r.len = 0;
	raw_msg(&r, 'f', "nope", 5);
	raw_parse(&r, "", "SELECT 'skipped'"); raw_bind_exec(&r, ""); raw_sync(&r);
	raw_parse(&r, "", "SELECT 'runs'"); raw_bind_exec(&r, ""); raw_sync(&r);
	raw_expect(a, &r, 2, "1 2 G E:57014 Z 1 2 D:runs C Z");

	/* A Parse of a name whose Parse is on its way: 42P05 (a retry sent
	 * before the first one's error is known fails the same way: README). */
	raw_parse(&r, "again", "SELECT 'good'"); raw_parse(&r, "again", "SELECT 'other'");
	raw_bind_exec(&r, "again"); raw_sync(&r);
	raw_expect(a, &r, 1, "1 E:42P05 Z");
	raw_bind_exec(&r, "again"); raw_sync(&r);
	raw_expect(a, &r, 1, "2 D:good C Z");

	/* DISCARD ALL in a transaction block fails, and drops nothing. */
	raw_query(&r, "BEGIN"); raw_query(&r, "DISCARD ALL"); raw_query(&r, "ROLLBACK");
	raw_bind_exec(&r, "again"); raw_sync(&r);
	raw_expect(a, &r, 4, "C Z E:25001 Z C Z 2 D:good C Z");

	/* DEALLOCATE in two reads. */
	raw_query(&r, "DEALLOCATE again");
	h_assert(h_raw_send(a, r.buf, 8) == 0, "raw send");
	h_sleep_ms(200);
	memmove(r.buf, r.buf + 8, r.len - 8);
	r.len -= 8;
	raw_expect(a, &r, 1, "C Z");
	raw_bind_exec(&r, "again"); raw_sync(&r);
	raw_expect(a, &r, 1, "E:26000 Z");

	close(a);
	close(b);
	h_daemon_stop_ok(&d);
}
END_TEST

/*
 * COPY sequences a fourth review found broken by pgberth's fence: two
 * COPYs in one simple Query; a client that leaves a COPY without its
 * Sync, then another client's libpq COPY on that server; and a client
 * that leaves after its COPY failed, before CopyDone.
 */
START_TEST(test_copy_fence)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .workers = 1, .pool_size = 1, .pool_mode = "transaction" };
	struct raw r = { .len = 0 };
	int a, b;

	h_daemon_start(&d, &h_shared_pg, &o);
	a = h_raw_client(&d, "appdb", NULL);
	raw_query(&r, "CREATE TABLE IF NOT EXISTS regress_f1 (x int); CREATE TABLE IF NOT EXISTS regress_f2 (x int)");
	raw_expect(a, &r, 1, "C C Z");
	raw_query(&r, "COPY regress_f1 FROM STDIN; COPY regress_f2 FROM STDIN");
	raw_expect_until(a, &r, 'G', "G");
	raw_msg(&r, 'd', "1\n", 2); raw_msg(&r, 'c', "", 0);
	raw_expect_until(a, &r, 'G', "C G");
	raw_msg(&r, 'd', "2\n", 2); raw_msg(&r, 'c', "", 0);
	raw_expect(a, &r, 1, "C Z");
	raw_query(&r, "SELECT (SELECT count(*) FROM regress_f1) + (SELECT count(*) FROM regress_f2)");
	raw_expect(a, &r, 1, "T D:2 C Z");

	/* A: extended COPY, CopyDone, then a Query with no Sync; leaves. */
	raw_parse(&r, "", "COPY regress_f1 FROM STDIN"); raw_bind_exec(&r, ""); raw_sync(&r);
	raw_expect_until(a, &r, 'G', "1 2 G");
	raw_msg(&r, 'd', "3\n", 2); raw_msg(&r, 'c', "", 0); raw_query(&r, "SELECT 'a last'");
	raw_expect_until(a, &r, 'C', "C");
	close(a);
	/* B: libpq's own sequence on the same server. */
	b = h_raw_client(&d, "appdb", NULL);
	raw_parse(&r, "", "COPY regress_f2 FROM STDIN"); raw_bind_exec(&r, ""); raw_sync(&r);
	raw_expect_until(b, &r, 'G', "1 2 G");
	raw_msg(&r, 'd', "4\n", 2); raw_msg(&r, 'c', "", 0); raw_sync(&r);
	raw_expect(b, &r, 1, "C Z");

	/* B's COPY fails on its data, and B leaves before CopyDone. */
	raw_parse(&r, "", "COPY regress_f2 FROM STDIN"); raw_bind_exec(&r, ""); raw_sync(&r);
	raw_expect_until(b, &r, 'G', "1 2 G");
	raw_msg(&r, 'd', "bad\n", 4);
	raw_expect_until(b, &r, 'E', "E:22P02");
	close(b);
	a = h_raw_client(&d, "appdb", NULL);
	int64_t t0 = h_now_ms();
	raw_query(&r, "SELECT count(*) FROM regress_f2");
	raw_expect(a, &r, 1, "T D:2 C Z");
	h_assert(h_now_ms() - t0 < 5000, "the next client waited %lld ms", (long long)(h_now_ms() - t0));
	raw_query(&r, "DROP TABLE regress_f1, regress_f2");
	raw_expect(a, &r, 1, "C Z");
	close(a);
	h_daemon_stop_ok(&d);
}
END_TEST

/* A COPY FROM STDIN in one batch with what follows it: the Sync after
 * CopyDone is answered, and the client gets all of its replies before the
 * server goes to another client. Also without tracking (_i 1): the reply
 * queue counts for every client. */
START_TEST(test_copy_then_more)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .workers = 1, .pool_size = 1, .pool_mode = "transaction",
				   .extra_top = _i ? "max_prepared_statements: 0\n" : NULL };
	struct raw r = { .len = 0 };
	int a, b;

	h_daemon_start(&d, &h_shared_pg, &o);
	a = h_raw_client(&d, "appdb", NULL);
	b = h_raw_client(&d, "appdb", NULL);
	raw_query(&r, "CREATE TEMP TABLE regress_cp (x int)");
	raw_expect(a, &r, 1, "C Z");
	raw_parse(&r, "", "COPY regress_cp FROM STDIN"); raw_bind_exec(&r, "");
	raw_msg(&r, 'd', "1\n", 2);
	raw_msg(&r, 'c', "", 0);
	raw_sync(&r);
	raw_parse(&r, "", "SELECT 'rest of a' FROM pg_sleep(0.2)"); raw_bind_exec(&r, ""); raw_sync(&r);
	raw_expect(a, &r, 2, "1 2 G C Z 1 2 D:rest of a C Z");
	raw_query(&r, "SELECT 'b here'");
	raw_expect(b, &r, 1, "T D:b here C Z");
	close(a);
	close(b);
	h_daemon_stop_ok(&d);
}
END_TEST

/* A client sends COPY FROM STDIN and Terminate and leaves: the COPY starts
 * after it has gone, with no cancel (the client said goodbye). pgberth
 * ends it with a CopyFail, and the next client of the server is served at
 * once, not after the drain deadline. Simple (_i 0) and extended (_i 1). */
START_TEST(test_copy_then_terminate)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .workers = 1, .pool_size = 1, .pool_mode = "transaction" };
	struct raw r = { .len = 0 };
	int a, b;

	h_daemon_start(&d, &h_shared_pg, &o);
	b = h_raw_client(&d, "appdb", NULL);
	raw_query(&r, "CREATE TABLE IF NOT EXISTS regress_ct (x int)");
	raw_expect(b, &r, 1, "C Z");
	for (int i = 0; i < 3; i++) {
		a = h_raw_client(&d, "appdb", NULL);
		if (_i == 0) {
			raw_query(&r, "COPY regress_ct FROM STDIN");
		} else {
			raw_parse(&r, "", "COPY regress_ct FROM STDIN");
			raw_bind_exec(&r, "");
			raw_sync(&r);
		}
		raw_msg(&r, 'X', "", 0);
		h_assert(h_raw_send(a, r.buf, r.len) == 0, "raw send");
		r.len = 0;
		close(a);
		int64_t t0 = h_now_ms();
		raw_query(&r, "SELECT count(*) FROM regress_ct");
		raw_expect(b, &r, 1, "T D:0 C Z");
		h_assert(h_now_ms() - t0 < 5000, "round %d: the next client waited %lld ms", i,
			 (long long)(h_now_ms() - t0));
	}
	raw_query(&r, "DROP TABLE regress_ct");
	raw_expect(b, &r, 1, "C Z");
	close(b);
	h_daemon_stop_ok(&d);
}
END_TEST

/* An extended DEALLOCATE in a batch: skipped after an error (the
 * statement stays), and followed by another unnamed statement. */
START_TEST(test_deallocate_batch)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .workers = 1, .pool_size = 1, .pool_mode = "transaction" };
	struct raw r = { .len = 0 };
	int a;

	h_daemon_start(&d, &h_shared_pg, &o);
	a = h_raw_client(&d, "appdb", NULL);
	raw_parse(&r, "s1", "SELECT 11"); raw_sync(&r);
	raw_expect(a, &r, 1, "1 Z");
	raw_parse(&r, "", "SELECT 1/0"); raw_bind_exec(&r, "");
	raw_parse(&r, "", "DEALLOCATE s1"); raw_bind_exec(&r, ""); raw_sync(&r);
	raw_expect(a, &r, 1, "1 E:22012 Z");
	raw_bind_exec(&r, "s1"); raw_sync(&r);
	raw_expect(a, &r, 1, "2 D:11 C Z");
	raw_parse(&r, "", "DEALLOCATE s1"); raw_msg(&r, 'B', "\0\0\0\0\0\0\0\0", 8);
	raw_msg(&r, 'D', "P", 2); raw_msg(&r, 'E', "\0\0\0\0", 5);
	raw_parse(&r, "", "SELECT 5"); raw_bind_exec(&r, ""); raw_sync(&r);
	raw_expect(a, &r, 1, "1 2 n C 1 2 D:5 C Z");
	raw_bind_exec(&r, "s1"); raw_sync(&r);
	raw_expect(a, &r, 1, "E:26000 Z");

	/* Its Parse skipped, then the unnamed statement run in the next
	 * Sync block: that is the one before, and nothing is dropped. */
	raw_parse(&r, "s1", "SELECT 11"); raw_sync(&r);
	raw_expect(a, &r, 1, "1 Z");
	raw_parse(&r, "", "SELECT 42"); raw_parse(&r, "bad", "SELEC"); raw_parse(&r, "", "DEALLOCATE s1");
	raw_sync(&r); raw_bind_exec(&r, ""); raw_sync(&r);
	raw_expect(a, &r, 2, "1 E:42601 Z 2 D:42 C Z");
	raw_bind_exec(&r, "s1"); raw_sync(&r);
	raw_expect(a, &r, 1, "2 D:11 C Z");
	/* Two in one batch, the second parsed before the first runs. */
	raw_parse(&r, "s2", "SELECT 22"); raw_sync(&r);
	raw_expect(a, &r, 1, "1 Z");
	raw_parse(&r, "", "DEALLOCATE s1"); raw_msg(&r, 'B', "\0\0\0\0\0\0\0\0", 8);
	raw_parse(&r, "", "DEALLOCATE s2"); raw_msg(&r, 'E', "\0\0\0\0", 5);
	raw_bind_exec(&r, ""); raw_sync(&r);
	raw_expect(a, &r, 1, "1 2 1 C 2 C Z");
	raw_bind_exec(&r, "s1"); raw_bind_exec(&r, "s2"); raw_sync(&r);
	raw_expect(a, &r, 1, "E:26000 Z");
	raw_bind_exec(&r, "s2"); raw_sync(&r);
	raw_expect(a, &r, 1, "E:26000 Z");
	close(a);
	h_daemon_stop_ok(&d);
}
END_TEST

/* Appends one message to a growing batch. */
static void batch_msg(char **b, size_t *len, size_t *cap, char type, const void *body, size_t n)
{
	if (*len + 5 + n > *cap) {
		*cap = (*len + 5 + n) * 2;
		*b = realloc(*b, *cap);
		h_assert(*b != NULL, "out of memory");
	}
	(*b)[*len] = type;
	proto_put32((uint8_t *)*b + *len + 1, (uint32_t)(n + 4));
	memcpy(*b + *len + 5, body, n);
	*len += 5 + n;
}

/*
 * With room for one statement per server, every Bind in a batch that
 * alternates two long statements needs pgberth's Parse of the other: a
 * short batch becomes a long stream to the server. pgberth sends it as the
 * server takes it, not all at once from memory.
 */
START_TEST(test_rebuilt_parses_bounded)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .workers = 1, .pool_size = 1, .pool_mode = "transaction",
				   .extra_top = "max_prepared_statements: 1\n" };
	enum { QLEN = 8192, PAIRS = 1000 };
	char *b = NULL, *sql = malloc(QLEN + 64);
	size_t len = 0, cap = 0;
	struct h_msg m;
	int a;

	h_assert(sql != NULL, "out of memory");
	h_daemon_start(&d, &h_shared_pg, &o);
	a = h_raw_client(&d, "appdb", NULL);
	for (int i = 1; i <= 2; i++) {
		int n = snprintf(sql, QLEN + 64, "big%d", i) + 1;
		n += snprintf(sql + n, QLEN + 64 - (size_t)n, "SELECT length('%0*d') + %d", QLEN, 0, i) + 1;
		sql[n] = sql[n + 1] = 0;        /* no parameter types */
		batch_msg(&b, &len, &cap, 'P', sql, (size_t)n + 2);
	}
	batch_msg(&b, &len, &cap, 'S', "", 0);
	h_assert(h_raw_send(a, b, len) == 0, "raw send");
	len = 0;
	for (const char *want = "11Z"; *want != '\0'; want++) {
		h_assert(h_raw_read_msg(a, &m, 10000) == 1 && m.type == *want, "reply to the Parses");
		h_msg_free(&m);
	}

	long hwm0 = h_proc_status_kb(d.pid, "VmHWM");
	for (int i = 0; i < 2 * PAIRS; i++) {
		char bind[16] = "";             /* unnamed portal, then the name */
		memcpy(bind + 1, i % 2 ? "big2" : "big1", 5);
		batch_msg(&b, &len, &cap, 'B', bind, 1 + 5 + 6);
		batch_msg(&b, &len, &cap, 'E', "\0\0\0\0", 5);
	}
	batch_msg(&b, &len, &cap, 'S', "", 0);
	h_assert(h_raw_send(a, b, len) == 0, "raw send");
	int rows = 0, wrong = 0;
	for (;;) {
		h_assert(h_raw_read_msg(a, &m, 20000) == 1, "batch reply after %d rows", rows);
		char type = m.type;
		if (type == 'D') {
			char want[16];
			snprintf(want, sizeof(want), "%d", QLEN + 1 + rows % 2);
			wrong += m.len != 6 + strlen(want) || memcmp(m.body + 6, want, strlen(want)) != 0;
			rows++;
		}
		h_assert(type != 'E', "error in the batch after %d rows", rows);
		h_msg_free(&m);
		if (type == 'Z')
			break;
	}
	long hwm1 = h_proc_status_kb(d.pid, "VmHWM");
	h_assert(rows == 2 * PAIRS && wrong == 0, "%d rows, %d wrong", rows, wrong);
	/* Without the bound, the 2,000 Parses of 8 KiB were all in memory. */
	h_assert(hwm0 > 0 && hwm1 - hwm0 < 4096, "peak RSS grew by %ld KiB", hwm1 - hwm0);
	close(a);
	free(b);
	free(sql);
	h_daemon_stop_ok(&d);
}
END_TEST

/*
 * A client sends a long batch, Sync and Terminate while the server is busy
 * (so pgberth still holds what it cleared of the batch), and closes (_i 0)
 * or keeps its socket open (_i 1). The server runs all of the batch, as on
 * a direct connection, and the next client is served; the client that
 * said Terminate is closed.
 */
START_TEST(test_terminate_after_batch)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .workers = 1, .pool_size = 1, .pool_mode = "transaction",
				   .extra_top = "max_prepared_statements: 1\n" };
	enum { QLEN = 32000, N = 400 };
	char *b = NULL, *sql = malloc(QLEN + 96);
	size_t len = 0, cap = 0;
	struct raw r = { .len = 0 };
	struct h_msg m;
	int a, z;

	h_assert(sql != NULL, "out of memory");
	h_daemon_start(&d, &h_shared_pg, &o);
	z = h_raw_client(&d, "appdb", NULL);
	raw_query(&r, "CREATE TABLE IF NOT EXISTS regress_tb (x int); TRUNCATE regress_tb");
	raw_expect(z, &r, 1, "C C Z");
	a = h_raw_client(&d, "appdb", NULL);
	for (int i = 0; i < 3; i++) {
		int n = snprintf(sql, QLEN + 96, "%s%d", i == 0 ? "nap" : "ins", i) + 1;
		if (i == 0)
			n += snprintf(sql + n, QLEN + 96 - (size_t)n, "SELECT pg_sleep(0.5)") + 1;
		else
			n += snprintf(sql + n, QLEN + 96 - (size_t)n, "INSERT INTO regress_tb SELECT length('%0*d')",
				      QLEN, i) + 1;
		sql[n] = sql[n + 1] = 0;
		batch_msg(&b, &len, &cap, 'P', sql, (size_t)n + 2);
	}
	batch_msg(&b, &len, &cap, 'S', "", 0);
	h_assert(h_raw_send(a, b, len) == 0, "raw send");
	len = 0;
	for (const char *want = "111Z"; *want != '\0'; want++) {
		h_assert(h_raw_read_msg(a, &m, 10000) == 1 && m.type == *want, "reply to the Parses");
		h_msg_free(&m);
	}
	/* The nap, then Binds that each need pgberth's Parse of the other. */
	for (int i = 0; i <= N; i++) {
		char bind[16] = "";
		memcpy(bind + 1, i == 0 ? "nap0" : i % 2 ? "ins1" : "ins2", 5);
		batch_msg(&b, &len, &cap, 'B', bind, 1 + 5 + 6);
		batch_msg(&b, &len, &cap, 'E', "\0\0\0\0", 5);
	}
	batch_msg(&b, &len, &cap, 'S', "", 0);
	batch_msg(&b, &len, &cap, 'X', "", 0);
	h_assert(h_raw_send(a, b, len) == 0, "raw send");
	if (_i == 0)
		close(a);
	/* z may get the server before the batch does: then it asks again. */
	char want[32], got[1024];
	snprintf(want, sizeof(want), "T D:%d C Z", N);
	for (int64_t until = h_now_ms() + 20000;;) {
		raw_query(&r, "SELECT count(*) FROM regress_tb");
		raw_run(z, &r, 1, got, sizeof(got));
		if (strcmp(got, want) == 0 || h_now_ms() > until)
			break;
		usleep(20 * 1000);
	}
	h_assert(strcmp(got, want) == 0, "replies \"%s\", expected \"%s\"", got, want);
	if (_i == 1) {
		int rc;
		while ((rc = h_raw_read_msg(a, &m, 10000)) == 1)
			h_msg_free(&m);
		h_assert(rc == 0, "the client that said Terminate was not closed (%d)", rc);
		close(a);
	}
	raw_query(&r, "DROP TABLE regress_tb");
	raw_expect(z, &r, 1, "C Z");
	close(z);
	free(b);
	free(sql);
	h_daemon_stop_ok(&d);
}
END_TEST

/*
 * A statement's literals are read under the settings of the session that
 * parses it (TimeZone, client_encoding ...): clients with other settings
 * never share it, each gets what a direct connection gives.
 */
START_TEST(test_settings_key_statements)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .workers = 1, .pool_size = 1, .pool_mode = "transaction" };
	const char *sql = "SELECT '2024-01-01 00:00'::timestamptz::text";
	PGconn *utc, *tokyo;

	h_daemon_start(&d, &h_shared_pg, &o);
	utc = h_connect(&d, "options='-c TimeZone=UTC'");
	tokyo = h_connect(&d, NULL);
	h_exec_ok(tokyo, "SET TimeZone = 'Asia/Tokyo'");
	prepare_ok(utc, "s", sql, 0);
	prepare_ok(tokyo, "t", sql, 0);
	assert_run(utc, "s", NULL, "2024-01-01 00:00:00+00", NULL);
	assert_run(tokyo, "t", NULL, "2024-01-01 00:00:00+09", NULL);
	assert_run(utc, "s", NULL, "2024-01-01 00:00:00+00", NULL);
	PQfinish(utc);
	PQfinish(tokyo);
	h_daemon_stop_ok(&d);
}
END_TEST

static Suite *e2e_pstmt_suite(void)
{
	Suite *s = suite_create("e2e_pstmt");
	TCase *tc = h_tcase("pstmt", 120);

	h_tcase_add_pg(tc);
	tcase_add_test(tc, test_statements_follow_client);
	tcase_add_test(tc, test_server_cache_bound);
	tcase_add_test(tc, test_long_statements);
	tcase_add_test(tc, test_statement_errors);
	tcase_add_test(tc, test_statement_pipeline);
	tcase_add_loop_test(tc, test_deallocate, 0, 2);
	tcase_add_test(tc, test_client_limit);
	tcase_add_test(tc, test_statement_mode);
	tcase_add_test(tc, test_pgbench_prepared);
	tcase_add_test(tc, test_like_direct);
	tcase_add_test(tc, test_like_direct_2);
	tcase_add_test(tc, test_copy_fence);
	tcase_add_loop_test(tc, test_copy_then_more, 0, 2);
	tcase_add_loop_test(tc, test_copy_then_terminate, 0, 2);
	tcase_add_test(tc, test_rebuilt_parses_bounded);
	tcase_add_loop_test(tc, test_terminate_after_batch, 0, 2);
	tcase_add_test(tc, test_deallocate_batch);
	tcase_add_test(tc, test_settings_key_statements);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return h_main(e2e_pstmt_suite());
}
