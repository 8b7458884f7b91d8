/*
 * End to end, one client at a time: what psql and libpq users see through
 * pgberth. Queries and results (simple and extended protocol, COPY, notices,
 * large rows), the real psql binary, SQLSTATEs of SQL errors and of the
 * pooler's own errors (3D000, 08006, the server's 28P01), startup
 * parameters, server reuse and reset in session mode, SSLRequest and
 * GSSENCRequest, malformed startup packets, cancel, and a client killed in
 * the middle of a transaction.
 *
 * Each TCase shares one PostgreSQL (h_tcase_add_pg); each test starts its
 * own daemon and stops it with SIGTERM, asserting a clean exit.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

/* ---- helpers --------------------------------------------------------- */

static void notice_receiver(void *arg, const PGresult *r)
{
	char *out = arg;
	const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);

	snprintf(out, 64, "%s", msg ? msg : "");
}

/* ---- queries --------------------------------------------------------- */

START_TEST(test_simple_queries)
{
	struct h_daemon d;
	PGconn *c;
	PGresult *r;
	char notice[64] = "", *big, *v;
	const char *params[2] = { "40", "2" };

	h_daemon_start(&d, &h_shared_pg, NULL);
	c = h_connect(&d, NULL);

	h_assert_value(c, "SELECT 1 + 1", "2");
	h_assert_value(c, "SELECT current_database() || '/' || current_user", "appdb/" H_SUPERUSER);
	v = h_query_value(c, "SELECT NULL::int");
	h_assert(v == NULL, "SELECT NULL returned \"%s\"", v);

	/* A thousand rows, all there and in order. */
	r = h_exec(c, "SELECT g FROM generate_series(1, 1000) g");
	h_assert(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1000,
		 "generate_series: %s, %d rows", PQresStatus(PQresultStatus(r)), PQntuples(r));
	h_assert(strcmp(PQgetvalue(r, 999, 0), "1000") == 0, "last row %s", PQgetvalue(r, 999, 0));
	PQclear(r);

	/* Several statements in one simple Query: the last result wins. */
	h_assert_value(c, "SELECT 1; SELECT 2; SELECT 'three'", "three");

	/* Extended protocol: unnamed statement with parameters... */
	h_assert(PQsendQueryParams(c, "SELECT $1::int + $2::int", 2, NULL, params, NULL, NULL, 0),
		 "send: %s", PQerrorMessage(c));
	r = h_result_try(c, H_QUERY_TIMEOUT);
	h_assert(r && PQresultStatus(r) == PGRES_TUPLES_OK && strcmp(PQgetvalue(r, 0, 0), "42") == 0,
		 "extended query: %s", r ? PQresultErrorMessage(r) : "timeout");
	PQclear(r);
	/* ...and a named prepared statement, which session mode keeps. */
	h_assert(PQsendPrepare(c, "greet", "SELECT $1::text || '!'", 1, NULL), "prepare send");
	r = h_result_try(c, H_QUERY_TIMEOUT);
	h_assert(r && PQresultStatus(r) == PGRES_COMMAND_OK, "prepare: %s",
		 r ? PQresultErrorMessage(r) : "timeout");
	PQclear(r);
	params[0] = "hi";
	h_assert(PQsendQueryPrepared(c, "greet", 1, params, NULL, NULL, 0), "execute send");
	r = h_result_try(c, H_QUERY_TIMEOUT);
	h_assert(r && PQresultStatus(r) == PGRES_TUPLES_OK && strcmp(PQgetvalue(r, 0, 0), "hi!") == 0,
		 "execute prepared: %s", r ? PQresultErrorMessage(r) : "timeout");
	PQclear(r);

	/* Transactions commit and roll back. */
	h_exec_ok(c, "CREATE TEMP TABLE t(x int)");
	h_exec_ok(c, "BEGIN");
	h_assert(PQtransactionStatus(c) == PQTRANS_INTRANS, "BEGIN: transaction status %d",
		 PQtransactionStatus(c));
	h_exec_ok(c, "INSERT INTO t VALUES (1), (2), (3)");
	h_exec_ok(c, "COMMIT");
	h_exec_ok(c, "BEGIN");
	h_exec_ok(c, "INSERT INTO t VALUES (4)");
	h_exec_ok(c, "ROLLBACK");
	h_assert_value(c, "SELECT count(*) || ':' || sum(x) FROM t", "3:6");
	h_assert(PQtransactionStatus(c) == PQTRANS_IDLE, "transaction status %d",
		 PQtransactionStatus(c));

	/* Notices are relayed. */
	PQsetNoticeReceiver(c, notice_receiver, notice);
	h_exec_ok(c, "DO $$ BEGIN RAISE NOTICE 'berth-notice'; END $$");
	h_assert(strcmp(notice, "berth-notice") == 0, "notice \"%s\"", notice);

	/* 10 MB of rows back, 1 MB of query text out. */
	r = h_exec(c, "SELECT repeat('x', 1000) || g FROM generate_series(1, 10000) g");
	h_assert(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 10000,
		 "big result: %s, %d rows", PQresStatus(PQresultStatus(r)), PQntuples(r));
	h_assert(PQgetlength(r, 9999, 0) == 1005, "row length %d", PQgetlength(r, 9999, 0));
	PQclear(r);
	big = malloc(1000000 + 64);
	strcpy(big, "SELECT length('");
	memset(big + strlen(big), 'y', 1000000);
	strcpy(big + strlen("SELECT length('") + 1000000, "')");
	h_assert_value(c, big, "1000000");
	free(big);

	h_assert(PQstatus(c) == CONNECTION_OK, "connection lost");
	PQfinish(c);
	h_daemon_stop_ok(&d);
}
END_TEST

START_TEST(test_copy)
{
	struct h_daemon d;
	PGconn *c;
	PGresult *r;
	char line[32], *buf;
	int lines = 0, n;
	int64_t deadline;

	h_daemon_start(&d, &h_shared_pg, NULL);
	c = h_connect(&d, NULL);
	h_exec_ok(c, "CREATE TEMP TABLE cp(a int, b text)");

	r = h_exec(c, "COPY cp FROM STDIN");
	h_assert(PQresultStatus(r) == PGRES_COPY_IN, "COPY FROM: %s %s",
		 PQresStatus(PQresultStatus(r)), PQresultErrorMessage(r));
	PQclear(r);
	PQsetnonblocking(c, 0);
	for (int i = 1; i <= 1000; i++) {
		snprintf(line, sizeof(line), "%d\trow %d\n", i, i);
		h_assert(PQputCopyData(c, line, (int)strlen(line)) == 1, "put: %s", PQerrorMessage(c));
	}
	h_assert(PQputCopyEnd(c, NULL) == 1, "end: %s", PQerrorMessage(c));
	r = h_result_try(c, H_QUERY_TIMEOUT);
	h_assert(r && PQresultStatus(r) == PGRES_COMMAND_OK && strcmp(PQcmdTuples(r), "1000") == 0,
		 "COPY FROM result: %s", r ? PQresultErrorMessage(r) : "timeout");
	PQclear(r);
	h_assert_value(c, "SELECT count(*) || ':' || sum(a) FROM cp", "1000:500500");

	r = h_exec(c, "COPY (SELECT a FROM cp ORDER BY a) TO STDOUT");
	h_assert(PQresultStatus(r) == PGRES_COPY_OUT, "COPY TO: %s %s",
		 PQresStatus(PQresultStatus(r)), PQresultErrorMessage(r));
	PQclear(r);
	deadline = h_now_ms() + H_QUERY_TIMEOUT;
	for (;;) {
		n = PQgetCopyData(c, &buf, 1);
		if (n > 0) {
			lines++;
			PQfreemem(buf);
			continue;
		}
		if (n < 0)
			break;
		/* n == 0: nothing buffered yet */
		struct pollfd p = { PQsocket(c), POLLIN, 0 };
		h_assert(h_now_ms() < deadline, "COPY TO STDOUT stalled after %d lines", lines);
		poll(&p, 1, 100);
		h_assert(PQconsumeInput(c) == 1, "COPY TO: %s", PQerrorMessage(c));
	}
	h_assert(n == -1, "COPY TO failed: %s", PQerrorMessage(c));
	h_assert(lines == 1000, "COPY TO STDOUT gave %d lines", lines);
	r = h_result_try(c, H_QUERY_TIMEOUT);
	h_assert(r && PQresultStatus(r) == PGRES_COMMAND_OK, "COPY TO result: %s",
		 r ? PQresultErrorMessage(r) : "timeout");
	PQclear(r);
	PQsetnonblocking(c, 0);
	h_assert_value(c, "SELECT 'still here'", "still here");

	PQfinish(c);
	h_daemon_stop_ok(&d);
}
END_TEST

START_TEST(test_psql)
{
	struct h_daemon d;
	char *conninfo, *out, *outpath;
	int rc;

	h_daemon_start(&d, &h_shared_pg, NULL);
	conninfo = h_conninfo(&d, NULL);
	outpath = malloc(strlen(d.dir) + 16);
	sprintf(outpath, "%s/psql.out", d.dir);
	{
		const char *argv[] = { h_pg_bin("psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
				       "-d", conninfo, "-c", "SELECT 6 * 7",
				       "-c", "SELECT current_database()",
				       "-c", "SELECT string_agg(g::text, ',') FROM generate_series(1, 5) g",
				       NULL };

		rc = h_run(argv, outpath, false, 30000);
	}
	out = h_read_file(outpath);
	h_assert(rc == 0 && out && strcmp(out, "42\nappdb\n1,2,3,4,5\n") == 0,
		 "psql exited %d with output:\n%s", rc, out ? out : "(none)");
	free(out);

	/* A failing statement makes psql exit 1, and the next psql still works. */
	unlink(outpath);
	{
		const char *argv[] = { h_pg_bin("psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
				       "-d", conninfo, "-c", "SELECT 1/0", NULL };

		rc = h_run(argv, outpath, false, 30000);
	}
	out = h_read_file(outpath);
	h_assert(rc == 1, "psql with a failing statement exited %d:\n%s", rc, out ? out : "");
	free(out);
	unlink(outpath);
	{
		const char *argv[] = { h_pg_bin("psql"), "-X", "-A", "-t", "-d", conninfo,
				       "-c", "SELECT 'again'", NULL };

		rc = h_run(argv, outpath, false, 30000);
	}
	out = h_read_file(outpath);
	h_assert(rc == 0 && out && strcmp(out, "again\n") == 0, "psql exited %d:\n%s", rc,
		 out ? out : "");
	free(out);
	free(outpath);
	free(conninfo);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- errors ---------------------------------------------------------- */

START_TEST(test_sql_error_keeps_sqlstate)
{
	struct h_daemon d;
	PGconn *c;
	PGresult *r;
	const char *zero[1] = { "0" };

	h_daemon_start(&d, &h_shared_pg, NULL);
	c = h_connect(&d, NULL);

	h_exec_fails(c, "SELECT * FROM no_such_table", "42P01");
	h_exec_fails(c, "SELECT 1/0", "22012");
	h_exec_fails(c, "SELEC 1", "42601");
	r = h_exec(c, "SELECT * FROM no_such_table");
	{
		const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);

		h_assert(m && strstr(m, "no_such_table") != NULL,
			 "message does not name the table: %s", PQresultErrorMessage(r));
	}
	PQclear(r);
	h_assert_value(c, "SELECT 'usable'", "usable");

	/* In a transaction: failed state, then ROLLBACK brings it back. */
	h_exec_ok(c, "BEGIN");
	h_exec_fails(c, "SELECT 1/0", "22012");
	h_assert(PQtransactionStatus(c) == PQTRANS_INERROR, "status %d after error in transaction",
		 PQtransactionStatus(c));
	h_exec_fails(c, "SELECT 1", "25P02");
	h_exec_ok(c, "ROLLBACK");
	h_assert(PQtransactionStatus(c) == PQTRANS_IDLE, "status %d after ROLLBACK",
		 PQtransactionStatus(c));

	/* Extended protocol error, then the connection is in sync again. */
	h_assert(PQsendQueryParams(c, "SELECT 1 / $1::int", 1, NULL, zero, NULL, NULL, 0), "send");
	r = h_result_try(c, H_QUERY_TIMEOUT);
	h_assert(r && strcmp(h_sqlstate(r), "22012") == 0, "extended error: [%s] %s",
		 h_sqlstate(r), r ? PQresultErrorMessage(r) : "timeout");
	PQclear(r);
	h_assert_value(c, "SELECT 'in sync'", "in sync");

	PQfinish(c);
	h_daemon_stop_ok(&d);
}
END_TEST

START_TEST(test_unknown_database)
{
	struct h_daemon d;
	struct h_login l;
	const char *kv[] = { "user", H_SUPERUSER, "database", "nosuchdb", NULL };
	PGconn *c;
	int fd, rc;

	h_daemon_start(&d, &h_shared_pg, NULL);
	fd = h_raw_connect(d.sockpath);
	h_assert(fd >= 0, "connect %s: %s", d.sockpath, strerror(errno));
	rc = h_raw_login(fd, kv, &l, 10000);
	h_assert(rc == 1, "login to an unconfigured database: rc %d (expected ErrorResponse)", rc);
	h_assert(strcmp(l.sqlstate, "3D000") == 0, "SQLSTATE %s (%s), expected 3D000", l.sqlstate,
		 l.message);
	h_assert(strstr(l.message, "nosuchdb") != NULL, "message does not name the database: %s",
		 l.message);
	h_assert(h_raw_wait_eof(fd, 5000) == 0, "connection left open after the error");
	close(fd);

	c = h_connect_try(&d, "dbname=nosuchdb");
	h_assert(PQstatus(c) == CONNECTION_BAD, "libpq connected to an unconfigured database");
	PQfinish(c);
	c = h_connect(&d, NULL);
	h_assert_value(c, "SELECT 'fine'", "fine");
	PQfinish(c);
	h_daemon_stop_ok(&d);
}
END_TEST

START_TEST(test_wrong_server_password)
{
	struct h_daemon d;
	struct h_daemon_opts o = {
		.extra_dbs =
			"  badpw:\n"
			"    conninfo: \"host=@PGHOST@ port=@PGPORT@ dbname=appdb user=" H_PW_USER
			" password=wrong\"\n"
			"    pool_size: 2\n"
			"    pool_mode: session\n"
			"  goodpw:\n"
			"    conninfo: \"host=@PGHOST@ port=@PGPORT@ dbname=appdb user=" H_PW_USER
			" password=" H_PW_PASSWORD "\"\n"
			"    pool_size: 2\n"
			"    pool_mode: session\n",
	};
	const char *kv[] = { "user", H_SUPERUSER, "database", "badpw", NULL };
	struct h_login l;
	PGconn *c;
	int fd, rc;

	h_daemon_start(&d, &h_shared_pg, &o);
	for (int attempt = 0; attempt < 2; attempt++) {
		fd = h_raw_connect(d.sockpath);
		h_assert(fd >= 0, "connect: %s", strerror(errno));
		rc = h_raw_login(fd, kv, &l, 10000);
		h_assert(rc == 1, "attempt %d: login with a wrong server password: rc %d", attempt, rc);
		h_assert(strcmp(l.sqlstate, "28P01") == 0, "SQLSTATE %s (%s), expected 28P01",
			 l.sqlstate, l.message);
		h_assert(strstr(l.message, "password authentication failed") != NULL,
			 "the server's message is not passed on: %s", l.message);
		close(fd);
	}
	/* The same user with the right password works: the forced user is used. */
	c = h_connect(&d, "dbname=goodpw");
	h_assert_value(c, "SELECT current_user", H_PW_USER);
	PQfinish(c);
	h_daemon_stop_ok(&d);
}
END_TEST

/*
 * Host names in conninfo are looked up off the worker loop. localhost has
 * no PostgreSQL on TCP here, and a .invalid name never resolves: both give
 * 08006 with libpq's reason, and the worker keeps serving other clients.
 */
START_TEST(test_host_name_conninfo)
{
	struct h_daemon d;
	struct h_daemon_opts o = { 0 };
	static const struct {
		const char *db;
		const char *reason;
	} cases[] = {
		{ "namedb", "localhost" },
		{ "nxdb", "no-such-host.invalid" },
	};
	struct h_login l;
	PGconn *c;

	o.extra_dbs = "  namedb:\n"
		      "    conninfo: \"host=localhost port=1 dbname=appdb\"\n"
		      "  nxdb:\n"
		      "    conninfo: \"host=no-such-host.invalid port=5432 dbname=appdb\"\n";
	o.workers = 1;
	h_daemon_start(&d, &h_shared_pg, &o);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *kv[] = { "user", H_SUPERUSER, "database", cases[i].db, NULL };
		int fd = h_raw_connect(d.sockpath);

		h_assert(fd >= 0, "connect: %s", strerror(errno));
		int rc = h_raw_login(fd, kv, &l, 10000);
		h_assert(rc == 1 && strcmp(l.sqlstate, "08006") == 0, "%s: rc %d [%s] %s", cases[i].db,
			 rc, l.sqlstate, l.message);
		h_assert(strstr(l.message, cases[i].reason) != NULL, "%s: message does not say why: %s",
			 cases[i].db, l.message);
		close(fd);
	}
	c = h_connect(&d, NULL);
	h_assert_value(c, "SELECT 'still serving'", "still serving");
	PQfinish(c);
	h_daemon_stop_ok(&d);
}
END_TEST

START_TEST(test_unreachable_server)
{
	struct h_daemon d;
	char *empty = h_mkdtemp("empty");
	char *dbs = NULL;
	struct h_daemon_opts o = { 0 };
	const char *kv[] = { "user", H_SUPERUSER, "database", "deaddb", NULL };
	struct h_login l;
	PGconn *c;
	int fd, rc;

	h_assert(asprintf(&dbs, "  deaddb:\n"
			  "    conninfo: \"host=%s port=1 dbname=appdb\"\n"
			  "    pool_size: 2\n"
			  "    pool_mode: session\n", empty) > 0, "asprintf");
	o.extra_dbs = dbs;
	h_daemon_start(&d, &h_shared_pg, &o);
	for (int attempt = 0; attempt < 2; attempt++) {
		int64_t t0 = h_now_ms();

		fd = h_raw_connect(d.sockpath);
		h_assert(fd >= 0, "connect: %s", strerror(errno));
		rc = h_raw_login(fd, kv, &l, 10000);
		h_assert(rc == 1, "attempt %d: login to an unreachable server: rc %d", attempt, rc);
		h_assert(strcmp(l.sqlstate, "08006") == 0, "SQLSTATE %s (%s), expected 08006",
			 l.sqlstate, l.message);
		h_assert(h_now_ms() - t0 < 6000, "refusal took %lld ms",
			 (long long)(h_now_ms() - t0));
		close(fd);
	}
	c = h_connect(&d, NULL);
	h_assert_value(c, "SELECT 'other databases unaffected'", "other databases unaffected");
	PQfinish(c);
	h_daemon_stop_ok(&d);
	free(dbs);
	free(empty);
}
END_TEST

/* ---- startup parameters and session reuse ---------------------------- */

START_TEST(test_startup_parameters)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 1 };
	PGconn *c, *direct;
	long long pid;
	char sql[160], value[128];
	const char *ps;
	struct h_login l;
	const char *kv[] = { "user", H_SUPERUSER, "database", "appdb",
			     "application_name", "raw_app", "DateStyle", "SQL, DMY",
			     "TimeZone", "Asia/Tokyo", NULL };
	int fd, rc;

	h_daemon_start(&d, &h_shared_pg, &o);
	c = h_connect(&d, "application_name=berth_app options='-c search_path=foo' "
			  "client_encoding=LATIN1");
	h_assert_value(c, "SHOW application_name", "berth_app");
	h_assert_value(c, "SHOW search_path", "foo");
	h_assert_value(c, "SHOW client_encoding", "LATIN1");
	ps = PQparameterStatus(c, "application_name");
	h_assert(ps && strcmp(ps, "berth_app") == 0, "ParameterStatus application_name %s", ps);
	ps = PQparameterStatus(c, "client_encoding");
	h_assert(ps && strcmp(ps, "LATIN1") == 0, "ParameterStatus client_encoding %s", ps);
	ps = PQparameterStatus(c, "server_version");
	h_assert(ps && *ps, "no server_version ParameterStatus");
	/* The server itself knows the client's name. */
	pid = h_backend_pid(c);
	direct = h_pg_connect(&h_shared_pg, NULL);
	snprintf(sql, sizeof(sql), "SELECT application_name FROM pg_stat_activity WHERE pid = %lld",
		 pid);
	h_assert_value(direct, sql, "berth_app");
	PQfinish(direct);
	PQfinish(c);

	/* The next client on the same server (pool_size 1) gets its own settings. */
	fd = h_raw_connect(d.sockpath);
	h_assert(fd >= 0, "connect: %s", strerror(errno));
	rc = h_raw_login(fd, kv, &l, 10000);
	h_assert(rc == 0, "raw login: rc %d [%s] %s", rc, l.sqlstate, l.message);
	h_assert(l.auth_ok && l.key_data && l.ready, "login lacked AuthenticationOk/BackendKeyData");
	ps = h_login_param(&l, "DateStyle");
	h_assert(ps && strcmp(ps, "SQL, DMY") == 0, "ParameterStatus DateStyle %s", ps);
	ps = h_login_param(&l, "TimeZone");
	h_assert(ps && strcmp(ps, "Asia/Tokyo") == 0, "ParameterStatus TimeZone %s", ps);
	ps = h_login_param(&l, "application_name");
	h_assert(ps && strcmp(ps, "raw_app") == 0, "ParameterStatus application_name %s", ps);
	rc = h_raw_query(fd, "SHOW DateStyle", value, sizeof(value), NULL, 10000);
	h_assert(rc == 0 && strcmp(value, "SQL, DMY") == 0, "SHOW DateStyle: rc %d, %s", rc, value);
	rc = h_raw_query(fd, "SHOW TimeZone", value, sizeof(value), NULL, 10000);
	h_assert(rc == 0 && strcmp(value, "Asia/Tokyo") == 0, "SHOW TimeZone: rc %d, %s", rc, value);
	rc = h_raw_query(fd, "SHOW application_name", value, sizeof(value), NULL, 10000);
	h_assert(rc == 0 && strcmp(value, "raw_app") == 0, "SHOW application_name: %s", value);
	rc = h_raw_query(fd, "SELECT pg_backend_pid()", value, sizeof(value), NULL, 10000);
	h_assert(rc == 0 && atoll(value) == pid, "pool_size 1: backend %s, expected %lld (reuse)",
		 value, pid);
	close(fd);
	h_daemon_stop_ok(&d);
}
END_TEST

START_TEST(test_startup_parameters_do_not_leak)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 1 };
	char *def_path = h_pg_setting("search_path");
	char *def_tz = h_pg_setting("TimeZone");
	char *def_ds = h_pg_setting("DateStyle");
	PGconn *c;
	long long pid;

	h_daemon_start(&d, &h_shared_pg, &o);
	c = h_connect(&d, "application_name=alpha "
			  "options='-c search_path=foo -c TimeZone=Asia/Tokyo -c DateStyle=German'");
	h_assert_value(c, "SHOW search_path", "foo");
	h_assert_value(c, "SHOW TimeZone", "Asia/Tokyo");
	pid = h_backend_pid(c);
	PQfinish(c);

	c = h_connect(&d, "application_name=beta options='-c search_path=bar'");
	h_assert(h_backend_pid(c) == pid, "pool_size 1 but a new server backend");
	h_assert_value(c, "SHOW application_name", "beta");
	h_assert_value(c, "SHOW search_path", "bar");
	h_assert_value(c, "SHOW TimeZone", def_tz);
	PQfinish(c);

	/*
	 * No parameters: server defaults, nothing left from earlier clients.
	 * (The application_name of a client that sent none is not specified;
	 * the pooler may use its own, but never another client's.)
	 */
	c = h_connect(&d, NULL);
	h_assert(h_backend_pid(c) == pid, "pool_size 1 but a new server backend");
	{
		char *app = h_query_value(c, "SHOW application_name");

		h_assert(app && strcmp(app, "alpha") != 0 && strcmp(app, "beta") != 0,
			 "application_name \"%s\" left over from an earlier client", app);
		free(app);
	}
	h_assert_value(c, "SHOW search_path", def_path);
	h_assert_value(c, "SHOW TimeZone", def_tz);
	h_assert_value(c, "SHOW DateStyle", def_ds);
	PQfinish(c);
	h_daemon_stop_ok(&d);
	free(def_path);
	free(def_tz);
	free(def_ds);
}
END_TEST

START_TEST(test_server_reuse_and_reset)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 1 };
	char *def_work_mem = h_pg_setting("work_mem");
	PGconn *c;
	long long pid;

	h_daemon_start(&d, &h_shared_pg, &o);
	c = h_connect(&d, NULL);
	pid = h_backend_pid(c);
	h_exec_ok(c, "SET work_mem = '7MB'");
	h_exec_ok(c, "CREATE TEMP TABLE reuse_tmp(x int)");
	h_exec_ok(c, "PREPARE reuse_stmt AS SELECT 1");
	h_exec_ok(c, "SELECT pg_advisory_lock(4242)");
	h_exec_ok(c, "LISTEN reuse_channel");
	PQfinish(c);

	for (int i = 0; i < 3; i++) {
		c = h_connect(&d, NULL);
		h_assert(h_backend_pid(c) == pid,
			 "client %d: backend %lld, expected the pooled %lld", i + 2, h_backend_pid(c),
			 pid);
		/* DISCARD ALL ran in between. */
		h_assert_value(c, "SHOW work_mem", def_work_mem);
		h_assert_value(c, "SELECT to_regclass('pg_temp.reuse_tmp') IS NULL", "t");
		h_assert_value(c, "SELECT count(*) FROM pg_prepared_statements", "0");
		h_assert_value(c, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
			     "AND pid = pg_backend_pid()", "0");
		h_assert_value(c, "SELECT count(*) FROM pg_listening_channels()", "0");
		PQfinish(c);
	}
	h_daemon_stop_ok(&d);

	/* With room for 5, twenty clients one after another still reuse servers. */
	o.pool_size = 5;
	h_daemon_start(&d, &h_shared_pg, &o);
	{
		long long pids[20];
		int distinct = 0;

		for (int i = 0; i < 20; i++) {
			bool seen = false;

			c = h_connect(&d, NULL);
			pids[i] = h_backend_pid(c);
			PQfinish(c);
			for (int j = 0; j < i; j++)
				seen = seen || pids[j] == pids[i];
			distinct += !seen;
		}
		h_assert(distinct <= 5, "20 sequential clients used %d server backends (pool_size 5)",
			 distinct);
	}
	h_daemon_stop_ok(&d);
	free(def_work_mem);
}
END_TEST

/* ---- protocol edges -------------------------------------------------- */

static int send_request_code(int fd, uint32_t code)
{
	unsigned char pkt[8] = { 0, 0, 0, 8, (unsigned char)(code >> 24), (unsigned char)(code >> 16),
				 (unsigned char)(code >> 8), (unsigned char)code };

	return h_raw_send(fd, pkt, sizeof(pkt));
}

#define SSL_REQUEST_CODE    80877103u
#define GSSENC_REQUEST_CODE 80877104u

START_TEST(test_ssl_and_gssenc_requests)
{
	/* Iteration: 0 SSLRequest, 1 GSSENCRequest, 2 both (as libpq may over TCP). */
	static const uint32_t seq[3][2] = {
		{ SSL_REQUEST_CODE, 0 }, { GSSENC_REQUEST_CODE, 0 },
		{ GSSENC_REQUEST_CODE, SSL_REQUEST_CODE },
	};
	const char *kv[] = { "user", H_SUPERUSER, "database", "appdb", NULL };
	struct h_daemon d;
	struct h_login l;
	char value[32];
	int fd, rc;

	h_daemon_start(&d, &h_shared_pg, NULL);
	fd = h_raw_connect(d.sockpath);
	h_assert(fd >= 0, "connect: %s", strerror(errno));
	for (int i = 0; i < 2 && seq[_i][i]; i++) {
		char answer = 0;
		ssize_t n;

		h_assert(send_request_code(fd, seq[_i][i]) == 0, "send request");
		n = h_raw_read(fd, &answer, 1, 5000);
		h_assert(n == 1 && answer == 'N', "request %u: read %zd, answer 0x%02x, expected 'N'",
			 seq[_i][i], n, (unsigned char)answer);
	}
	/* The same connection goes on with a plain startup. */
	rc = h_raw_login(fd, kv, &l, 10000);
	h_assert(rc == 0, "startup after the refusal: rc %d [%s] %s", rc, l.sqlstate, l.message);
	rc = h_raw_query(fd, "SELECT 40 + 2", value, sizeof(value), NULL, 10000);
	h_assert(rc == 0 && strcmp(value, "42") == 0, "query: rc %d, %s", rc, value);
	close(fd);
	h_daemon_stop_ok(&d);
}
END_TEST

/* SQLSTATE field of an ErrorResponse body, or "" */
static const char *error_sqlstate(const struct h_msg *m)
{
	for (const char *f = m->body; f < m->body + m->len && *f; f += strlen(f) + 1)
		if (*f == 'C')
			return f + 1;
	return "";
}

/*
 * client_login_timeout bounds the whole login: a client that never sends
 * its startup packet gets 08P01, one that waits for a server while the pool
 * is full gets 53300, both within the timeout; the client holding the
 * server is not disturbed.
 */
START_TEST(test_client_login_timeout)
{
	struct h_daemon_opts o = { .pool_size = 1, .extra_top = "client_login_timeout: 500ms\n" };
	const char *kv[] = { "user", H_SUPERUSER, "database", "appdb", NULL };
	struct h_daemon d;
	struct h_login l;
	struct h_msg m;
	int64_t t0;
	int fd, rc;

	h_daemon_start(&d, &h_shared_pg, &o);

	/* Silent client. */
	fd = h_raw_connect(d.sockpath);
	h_assert(fd >= 0, "connect: %s", strerror(errno));
	t0 = h_now_ms();
	rc = h_raw_read_msg(fd, &m, 5000);
	h_assert(rc == 1 && m.type == 'E', "silent client: rc %d, type %c", rc, rc == 1 ? m.type : '-');
	h_assert(strcmp(error_sqlstate(&m), "08P01") == 0, "silent client: SQLSTATE %s",
		 error_sqlstate(&m));
	h_msg_free(&m);
	h_assert(h_now_ms() - t0 >= 400 && h_now_ms() - t0 < 3000, "silent client closed after %lld ms",
		 (long long)(h_now_ms() - t0));
	h_assert(h_raw_wait_eof(fd, 2000) == 0, "silent client: connection left open");
	close(fd);

	/* The only server is held by a session: the next login waits, then fails. */
	char *ci = h_conninfo(&d, NULL);
	PGconn *holder = PQconnectdb(ci);
	free(ci);
	h_assert(PQstatus(holder) == CONNECTION_OK, "holder: %s", PQerrorMessage(holder));
	fd = h_raw_connect(d.sockpath);
	h_assert(fd >= 0, "connect: %s", strerror(errno));
	t0 = h_now_ms();
	rc = h_raw_login(fd, kv, &l, 5000);
	h_assert(rc != 0 && strcmp(l.sqlstate, "53300") == 0, "waiting client: rc %d [%s] %s", rc,
		 l.sqlstate, l.message);
	h_assert(h_now_ms() - t0 >= 400, "waiting client failed after only %lld ms",
		 (long long)(h_now_ms() - t0));
	close(fd);

	/* Nothing else affected: the holder goes on, and once it leaves the
	 * pool serves a new client. */
	h_exec_ok(holder, "SELECT 1");
	PQfinish(holder);
	ci = h_conninfo(&d, NULL);
	PGconn *next = PQconnectdb(ci);
	free(ci);
	h_assert(PQstatus(next) == CONNECTION_OK, "after the holder left: %s", PQerrorMessage(next));
	h_exec_ok(next, "SELECT 1");
	PQfinish(next);
	h_daemon_stop_ok(&d);
}
END_TEST

/*
 * A client that leaves in the middle of an extended query (Parse failed,
 * Bind/Execute/Flush sent, no Sync: the server is skipping messages until
 * a Sync) must not cost the next client a deadline or a reconnect: pgberth
 * closes the extended query itself, and the same server is reused clean.
 */
START_TEST(test_client_leaves_without_sync)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 1 };
	const char *kv[] = { "user", H_SUPERUSER, "database", "appdb", NULL };
	static const char parse[] = "\0SELEC nonsense\0\0";   /* unnamed, syntax error, 0 types */
	static const char bind[] = "\0\0\0\0\0\0\0\0";        /* unnamed portal/stmt, no params */
	static const char exec[] = "\0\0\0\0";                /* unnamed portal, no row limit */
	char buf[256], pid_before[32], pid_after[32];
	struct h_login l;
	struct h_msg m;
	size_t n = 0;
	int fd, rc;

	h_daemon_start(&d, &h_shared_pg, &o);
	fd = h_raw_connect(d.sockpath);
	h_assert(fd >= 0 && h_raw_login(fd, kv, &l, 10000) == 0, "first login: %s", l.message);
	rc = h_raw_query(fd, "SELECT pg_backend_pid()", pid_before, sizeof(pid_before), NULL, 10000);
	h_assert(rc == 0, "first query: rc %d", rc);
	n = h_put_msg(buf, n, 'P', parse, sizeof(parse) - 1);
	n = h_put_msg(buf, n, 'B', bind, sizeof(bind) - 1);
	n = h_put_msg(buf, n, 'E', exec, sizeof(exec) - 1);
	n = h_put_msg(buf, n, 'H', "", 0);
	h_assert(h_raw_send(fd, buf, n) == 0, "send extended query");
	rc = h_raw_read_msg(fd, &m, 10000);
	h_assert(rc == 1 && m.type == 'E', "expected the Parse error, got rc %d type %c", rc,
		 rc == 1 ? m.type : '-');
	h_msg_free(&m);
	close(fd);      /* gone without a Sync */

	int64_t t0 = h_now_ms();
	PGconn *c = h_connect(&d, NULL);
	char *pid = h_query_value(c, "SELECT pg_backend_pid()");
	snprintf(pid_after, sizeof(pid_after), "%s", pid ? pid : "");
	free(pid);
	h_assert(h_now_ms() - t0 < 2000, "next client waited %lld ms for the server",
		 (long long)(h_now_ms() - t0));
	h_assert(strcmp(pid_before, pid_after) == 0, "server not reused: backend %s, then %s",
		 pid_before, pid_after);
	char *tx = h_query_value(c, "SELECT count(*) FROM pg_stat_activity WHERE state LIKE "
				    "'idle in transaction%'");
	h_assert(tx && strcmp(tx, "0") == 0, "%s backends left idle in transaction", tx);
	free(tx);
	PQfinish(c);
	h_daemon_stop_ok(&d);
}
END_TEST

/*
 * A logged-in client that sends a message whose length field lies (below 4)
 * gets 08P01 and is closed; its server goes back to the pool clean and
 * serves the next client; nothing else is affected.
 */
START_TEST(test_malformed_message_after_login)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 1 };
	const char *kv[] = { "user", H_SUPERUSER, "database", "appdb", NULL };
	static const char bad[] = { 'Q', 0, 0, 0, 2 };
	char pid_before[32];
	struct h_login l;
	struct h_msg m;
	int fd, rc;

	h_daemon_start(&d, &h_shared_pg, &o);
	fd = h_raw_connect(d.sockpath);
	h_assert(fd >= 0 && h_raw_login(fd, kv, &l, 10000) == 0, "login: %s", l.message);
	rc = h_raw_query(fd, "SELECT pg_backend_pid()", pid_before, sizeof(pid_before), NULL, 10000);
	h_assert(rc == 0, "query: rc %d", rc);
	h_assert(h_raw_send(fd, bad, sizeof(bad)) == 0, "send");
	rc = h_raw_read_msg(fd, &m, 5000);
	h_assert(rc == 1 && m.type == 'E' && strcmp(error_sqlstate(&m), "08P01") == 0,
		 "malformed message: rc %d type %c sqlstate %s", rc, rc == 1 ? m.type : '-',
		 rc == 1 ? error_sqlstate(&m) : "");
	h_msg_free(&m);
	h_assert(h_raw_wait_eof(fd, 5000) == 0, "offending connection left open");
	close(fd);

	PGconn *c = h_connect(&d, NULL);
	char *pid = h_query_value(c, "SELECT pg_backend_pid()");
	h_assert(pid != NULL && strcmp(pid, pid_before) == 0, "server not reused: %s then %s",
		 pid_before, pid);
	free(pid);
	PQfinish(c);
	h_daemon_stop_ok(&d);
}
END_TEST

/* Writes malformed startup variant i; see the table in test_malformed_startup. */
static void send_malformed(int fd, int variant)
{
	char buf[5000];
	uint32_t x = 0x12345678u;

	switch (variant) {
	case 0: /* length 3: shorter than the length field itself */
		h_raw_send(fd, "\0\0\0\3", 4);
		break;
	case 1: /* length 2^31-1 claimed, protocol 3.0 */
		h_raw_send(fd, "\x7f\xff\xff\xff\0\3\0\0", 8);
		break;
	case 2: /* 5000 bytes of noise */
		for (size_t i = 0; i < sizeof(buf); i++) {
			x ^= x << 13;
			x ^= x >> 17;
			x ^= x << 5;
			buf[i] = (char)x;
		}
		buf[0] = (char)0xab;
		h_raw_send(fd, buf, sizeof(buf));
		break;
	case 3: /* honest length 5000, unknown protocol version, noise */
		memset(buf, 'z', sizeof(buf));
		memcpy(buf, "\0\0\x13\x88\0\x09\0\x09", 8);
		h_raw_send(fd, buf, sizeof(buf));
		break;
	case 4: /* says 100 bytes, sends 20, then half-closes */
		memset(buf, 0, 20);
		memcpy(buf, "\0\0\0\x64\0\3\0\0user", 12);
		h_raw_send(fd, buf, 20);
		shutdown(fd, SHUT_WR);
		break;
	case 5: { /* well formed but no user */
		const char *kv[] = { "database", "appdb", NULL };
		size_t n = h_startup_packet(buf, sizeof(buf), kv);

		h_raw_send(fd, buf, n);
		break;
	}
	case 6: /* parameter string without its terminating NUL */
		h_raw_send(fd, "\0\0\0\x0c\0\3\0\0user", 12);
		break;
	case 7: /* CancelRequest code with a length of 8 (needs 16) */
		h_raw_send(fd, "\0\0\0\x08\x04\xd2\x16\x2e", 8);
		break;
	}
}

START_TEST(test_malformed_startup)
{
	struct h_daemon d;
	PGconn *before, *after;
	int fd, rc;

	h_daemon_start(&d, &h_shared_pg, NULL);
	before = h_connect(&d, NULL);
	h_assert_value(before, "SELECT 1", "1");

	fd = h_raw_connect(d.sockpath);
	h_assert(fd >= 0, "connect: %s", strerror(errno));
	send_malformed(fd, _i);
	/* Closed (maybe after an ErrorResponse), not left hanging. */
	rc = h_raw_wait_eof(fd, 5000);
	h_assert(rc == 0, "variant %d: connection still open 5 s after a malformed startup", _i);
	close(fd);

	h_assert(!h_daemon_exited(&d), "variant %d: pgberth exited", _i);
	h_assert_value(before, "SELECT 'client before'", "client before");
	after = h_connect(&d, NULL);
	h_assert_value(after, "SELECT 'client after'", "client after");
	PQfinish(after);
	PQfinish(before);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- cancel ---------------------------------------------------------- */

START_TEST(test_cancel_stops_pg_sleep)
{
	struct h_daemon d;
	PGconn *c, *direct;
	PGresult *r;
	long long pid;
	int64_t t0;

	h_daemon_start(&d, &h_shared_pg, NULL);
	c = h_connect(&d, NULL);
	pid = h_backend_pid(c);
	direct = h_pg_connect(&h_shared_pg, NULL);

	t0 = h_now_ms();
	h_assert(PQsendQuery(c, "SELECT pg_sleep(60) /* cancel-me */"), "send");
	h_assert(h_poll_until(direct, "SELECT count(*) = 1 FROM pg_stat_activity WHERE state = "
			      "'active' AND query LIKE '%cancel-me%' AND pid <> pg_backend_pid()",
			      10000), "the pg_sleep never started on the server");

	/* PQcancel blocks until the pooler closes the cancel connection: bounded. */
	h_cancel(c);

	r = h_result_try(c, 10000);
	h_assert(r != NULL, "no result 10 s after the cancel");
	h_assert(PQresultStatus(r) == PGRES_FATAL_ERROR && strcmp(h_sqlstate(r), "57014") == 0,
		 "cancelled query: %s [%s] %s", PQresStatus(PQresultStatus(r)), h_sqlstate(r),
		 PQresultErrorMessage(r));
	PQclear(r);
	h_assert(h_now_ms() - t0 < 20000, "pg_sleep(60) ran %lld ms", (long long)(h_now_ms() - t0));

	/* Same session, same server, usable. */
	h_assert(h_backend_pid(c) == pid, "the session changed server after the cancel");
	h_assert_value(c, "SELECT 'after cancel'", "after cancel");
	PQfinish(direct);
	PQfinish(c);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- a client killed mid-transaction ---------------------------------- */

/*
 * Child: connect through pgberth, BEGIN, INSERT, optionally start a long
 * query, report its backend pid on the pipe, then wait to be killed.
 */
static void doomed_client(const char *conninfo, const char *table, bool mid_query, int wfd)
{
	char sql[128], msg[32];
	PGconn *k = PQconnectdb(conninfo);
	PGresult *r;

	if (PQstatus(k) != CONNECTION_OK)
		_exit(2);
	r = PQexec(k, "BEGIN");
	PQclear(r);
	snprintf(sql, sizeof(sql), "INSERT INTO %s VALUES (42)", table);
	r = PQexec(k, sql);
	if (PQresultStatus(r) != PGRES_COMMAND_OK)
		_exit(3);
	PQclear(r);
	r = PQexec(k, "SELECT pg_backend_pid()");
	snprintf(msg, sizeof(msg), "%s\n", PQgetvalue(r, 0, 0));
	PQclear(r);
	if (mid_query && !PQsendQuery(k, "SELECT pg_sleep(2) /* doomed */"))
		_exit(4);
	if (write(wfd, msg, strlen(msg)) < 0)
		_exit(5);
	for (;;)
		pause();
}

START_TEST(test_killed_client_does_not_leak_transaction)
{
	/* _i: 0 killed while idle in transaction, 1 killed during a query. */
	bool mid_query = _i == 1;
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 1 };
	char table[64], sql[256], line[32] = "";
	PGconn *direct, *c;
	char *conninfo;
	long long doomed_pid;
	int p[2], status;
	pid_t child;
	ssize_t n;

	snprintf(table, sizeof(table), "leak_%d_%d", (int)getpid(), _i);
	direct = h_pg_connect(&h_shared_pg, NULL);
	snprintf(sql, sizeof(sql), "CREATE TABLE %s(x int)", table);
	h_exec_ok(direct, sql);
	h_daemon_start(&d, &h_shared_pg, &o);
	conninfo = h_conninfo(&d, NULL);

	h_assert(pipe(p) == 0, "pipe");
	fflush(stdout);
	fflush(stderr);
	child = fork();
	h_assert(child >= 0, "fork");
	if (child == 0) {
		close(p[0]);
		doomed_client(conninfo, table, mid_query, p[1]);
	}
	close(p[1]);
	{
		struct pollfd pf = { p[0], POLLIN, 0 };

		h_assert(poll(&pf, 1, 10000) == 1, "the doomed client never reported in");
		n = read(p[0], line, sizeof(line) - 1);
	}
	close(p[0]);
	if (n <= 0) {
		waitpid(child, &status, 0);
		h_assert(false, "the doomed client failed before its transaction (status 0x%x)", status);
	}
	doomed_pid = atoll(line);
	snprintf(sql, sizeof(sql), "SELECT state = '%s' FROM pg_stat_activity WHERE pid = %lld",
		 mid_query ? "active" : "idle in transaction", doomed_pid);
	h_assert(h_poll_until(direct, sql, 10000), "backend %lld never reached the expected state",
		 doomed_pid);

	kill(child, SIGKILL);
	h_assert(h_wait_pid(child, 5000, &status) >= 0, "killed child not reaped");

	/* The next client waits for the only server slot, and finds it clean. */
	c = h_connect(&d, NULL);
	h_assert(PQtransactionStatus(c) == PQTRANS_IDLE, "next client starts in transaction state %d",
		 PQtransactionStatus(c));
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", table);
	h_assert_value(c, sql, "0");
	h_assert(PQtransactionStatus(c) == PQTRANS_IDLE,
		 "next client is inside the killed client's transaction (status %d)",
		 PQtransactionStatus(c));
	h_exec_ok(c, "BEGIN");
	h_exec_ok(c, "COMMIT");
	PQfinish(c);

	h_assert(h_poll_until(direct, "SELECT count(*) = 0 FROM pg_stat_activity WHERE datname = "
			      "'appdb' AND state LIKE 'idle in transaction%'", 10000),
		 "an 'idle in transaction' backend is left on the server");
	h_assert_value(direct, sql, "0");
	snprintf(sql, sizeof(sql), "DROP TABLE %s", table);
	h_exec_ok(direct, sql);
	PQfinish(direct);
	free(conninfo);
	h_daemon_stop_ok(&d);
}
END_TEST

static Suite *e2e_basic_suite(void)
{
	Suite *s = suite_create("e2e_basic");
	TCase *tc;

	tc = h_tcase("queries", 60);
	h_tcase_add_pg(tc);
	tcase_add_test(tc, test_simple_queries);
	tcase_add_test(tc, test_copy);
	tcase_add_test(tc, test_psql);
	suite_add_tcase(s, tc);

	tc = h_tcase("errors", 60);
	h_tcase_add_pg(tc);
	tcase_add_test(tc, test_sql_error_keeps_sqlstate);
	tcase_add_test(tc, test_unknown_database);
	tcase_add_test(tc, test_wrong_server_password);
	tcase_add_test(tc, test_unreachable_server);
	tcase_add_test(tc, test_host_name_conninfo);
	suite_add_tcase(s, tc);

	tc = h_tcase("session", 60);
	h_tcase_add_pg(tc);
	tcase_add_test(tc, test_startup_parameters);
	tcase_add_test(tc, test_startup_parameters_do_not_leak);
	tcase_add_test(tc, test_server_reuse_and_reset);
	tcase_add_test(tc, test_client_leaves_without_sync);
	tcase_add_test(tc, test_cancel_stops_pg_sleep);
	tcase_add_loop_test(tc, test_killed_client_does_not_leak_transaction, 0, 2);
	suite_add_tcase(s, tc);

	tc = h_tcase("protocol", 60);
	h_tcase_add_pg(tc);
	tcase_add_loop_test(tc, test_ssl_and_gssenc_requests, 0, 3);
	tcase_add_loop_test(tc, test_malformed_startup, 0, 8);
	tcase_add_test(tc, test_client_login_timeout);
	tcase_add_test(tc, test_malformed_message_after_login);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return h_main(e2e_basic_suite());
}
