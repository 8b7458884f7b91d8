/*
 * End to end, the limits and timeouts of the pools: max_client_conn,
 * query_wait_timeout, client_idle_timeout, idle_transaction_timeout,
 * server_idle_timeout, server_lifetime, min_pool_size, reserve_pool_size
 * with reserve_pool_timeout, max_db_connections, server_check_query with
 * server_check_delay, and server connections that PostgreSQL kills or
 * loses in a restart.
 *
 * Every test defines its own database entries (extra_dbs) whose conninfo
 * sets application_name to the entry's name, so the test counts its own
 * server connections in pg_stat_activity and nobody else's. The timeouts
 * are a few hundred ms (the janitor runs every 100 ms); tests wait on
 * events with deadlines, and where what they assert is that something did
 * NOT happen, they watch for it over a window longer than the timeout.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

/* A database entry pointing at appdb, tagged with its own name. */
#define TAGGED_DB(name, rest) \
	"  " name ":\n" \
	"    conninfo: \"host=@PGHOST@ port=@PGPORT@ dbname=appdb application_name=" name "\"\n" \
	rest

/* ---- helpers --------------------------------------------------------- */

/* tag's server connections as PostgreSQL sees them, -1 if the query failed.
 * Never asserts, so that failure messages may call it. */
static long long count_servers(PGconn *direct, const char *tag)
{
	char sql[256];
	PGresult *r;
	long long n = -1;

	snprintf(sql, sizeof(sql), "SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s'",
		 tag);
	r = h_exec_try(direct, sql, 5000);
	if (r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
		n = atoll(PQgetvalue(r, 0, 0));
	PQclear(r);
	return n;
}

/*
 * Runs sql (one boolean) every 10 ms until it returns true; false once
 * timeout_ms passed without. Unlike h_poll_until it never abandons a query
 * at the deadline, so c stays usable when the answer is false, which is
 * what the tests that watch for something NOT happening expect.
 */
static bool poll_sql(PGconn *c, const char *sql, int timeout_ms)
{
	int64_t deadline = h_now_ms() + timeout_ms;

	for (;;) {
		char *v = h_query_value(c, sql);
		bool yes = v && strcmp(v, "t") == 0;

		free(v);
		if (yes)
			return true;
		if (h_now_ms() >= deadline)
			return false;
		h_sleep_ms(10);
	}
}

/* Polls until the number of tag's server connections satisfies cmp ("= 2"). */
static bool wait_servers(PGconn *direct, const char *tag, const char *cmp, int timeout_ms)
{
	char sql[256];

	snprintf(sql, sizeof(sql),
		 "SELECT count(*) %s FROM pg_stat_activity WHERE application_name = '%s'", cmp, tag);
	return poll_sql(direct, sql, timeout_ms);
}

/* Fails the test if the daemon logged that it found a dirty server. */
static void assert_log_clean(const struct h_daemon *d)
{
	char *log = h_read_file(d->log);

	h_assert(log != NULL, "cannot read %s", d->log);
	h_assert(strstr(log, "not clean at release") == NULL, "pgberth released a dirty server");
	free(log);
}

/* Counts one tag's server connections in the background; keeps the maximum. */
static void sampler_start(struct h_sampler *s, const char *tag)
{
	char sql[256];

	snprintf(sql, sizeof(sql),
		 "SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s'", tag);
	h_sampler_start(s, sql);
}

/* Stops the sampler and asserts it saw at most max connections. */
static void sampler_stop(struct h_sampler *s, int max, const char *what)
{
	h_sampler_stop(s);
	h_assert(s->max <= max, "%s: PostgreSQL saw %d server connections at once, the cap is %d",
		 what, s->max, max);
}

/* ---- max_client_conn ------------------------------------------------- */

#define MAXCONN 3

/*
 * MAXCONN clients get in; one more is refused with 53300 (seen by libpq
 * and in the raw ErrorResponse) while the others keep working; once one
 * leaves, a new client gets in, and the count does not leak.
 */
START_TEST(test_max_client_conn)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .extra_top = "max_client_conn: 3\n" };
	const char *kv[] = { "user", H_SUPERUSER, "database", "appdb", NULL };
	PostgresPollingStatusType st;
	PGconn *c[MAXCONN], *extra;
	struct h_login l;
	int fd, rc;
	int64_t deadline;

	h_daemon_start(&d, &h_shared_pg, &o);
	for (int i = 0; i < MAXCONN; i++) {
		c[i] = h_connect(&d, NULL);
		h_exec_ok(c[i], "SELECT 1");
	}

	/* libpq: the login fails, and the verbose message carries the SQLSTATE. */
	extra = h_connect_start(&d, NULL, true, &st);
	rc = h_drive_connect(extra, &st, h_now_ms() + 10000);
	h_assert(rc == PGRES_POLLING_FAILED, "client %d over max_client_conn %d: %s", MAXCONN + 1,
		 MAXCONN, rc == -1 ? "no answer within 10 s" : "logged in");
	h_assert(strstr(PQerrorMessage(extra), "53300") != NULL,
		 "client over max_client_conn: no 53300 in \"%s\"", PQerrorMessage(extra));
	PQfinish(extra);

	/* Raw: the ErrorResponse's 'C' field, then the connection is closed. */
	fd = h_raw_connect(d.sockpath);
	h_assert(fd >= 0, "raw connect: %s", strerror(errno));
	rc = h_raw_login(fd, kv, &l, 10000);
	h_assert(rc == 1 && strcmp(l.sqlstate, "53300") == 0,
		 "raw client over max_client_conn: rc %d [%s] %s", rc, l.sqlstate, l.message);
	h_assert(h_raw_wait_eof(fd, 5000) == 0, "refused client's connection still open after 5 s");
	close(fd);

	/* The clients inside never noticed. */
	for (int i = 0; i < MAXCONN; i++) {
		h_assert(PQstatus(c[i]) == CONNECTION_OK, "client %d lost its connection", i);
		h_exec_ok(c[i], "SELECT 2");
	}

	/* One leaves: a newcomer gets in once pgberth has seen the departure. */
	PQfinish(c[0]);
	deadline = h_now_ms() + 5000;
	for (;;) {
		c[0] = h_connect_try(&d, NULL);
		if (PQstatus(c[0]) == CONNECTION_OK)
			break;
		h_assert(strstr(PQerrorMessage(c[0]), "max_client_conn") != NULL,
			 "newcomer refused for another reason: %s", PQerrorMessage(c[0]));
		PQfinish(c[0]);
		h_assert(h_now_ms() < deadline,
			 "5 s after a client left, a new one is still refused by max_client_conn");
		h_sleep_ms(20);
	}
	h_exec_ok(c[0], "SELECT 3");

	/* Full again: still refused, so the refusals did not eat the count... */
	extra = h_connect_start(&d, NULL, true, &st);
	rc = h_drive_connect(extra, &st, h_now_ms() + 10000);
	h_assert(rc == PGRES_POLLING_FAILED && strstr(PQerrorMessage(extra), "53300") != NULL,
		 "client over max_client_conn after a replacement: %s",
		 rc == -1 ? "no answer" : rc == PGRES_POLLING_OK ? "logged in" : PQerrorMessage(extra));
	PQfinish(extra);
	/* ...nor leaked it: with everyone gone, MAXCONN clients fit again. */
	for (int i = 0; i < MAXCONN; i++)
		PQfinish(c[i]);
	deadline = h_now_ms() + 5000;
	for (int i = 0; i < MAXCONN;) {
		c[i] = h_connect_try(&d, NULL);
		if (PQstatus(c[i]) == CONNECTION_OK) {
			i++;
			continue;
		}
		PQfinish(c[i]);
		h_assert(h_now_ms() < deadline, "after all clients left, only %d of %d got in", i,
			 MAXCONN);
		h_sleep_ms(20);
	}
	for (int i = 0; i < MAXCONN; i++)
		PQfinish(c[i]);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- a waiting client that leaves ------------------------------------ */

/*
 * pool_size 1 (session), max_client_conn 2: A holds the only server. B's
 * startup packet and its hang-up are both in the socket before pgberth
 * accepts it (pgberth is stopped meanwhile), so pgberth reads the packet
 * at accept and queues B for a server. B's leaving must be noticed then,
 * not when a server frees up: a newcomer C gets in at once instead of being
 * refused by max_client_conn, and logs in as soon as A leaves.
 */
START_TEST(test_waiting_client_leaves)
{
	struct h_daemon d;
	struct h_daemon_opts o = {
		.extra_top = "max_client_conn: 2\n",
		.extra_dbs = TAGGED_DB("wldb", "    pool_size: 1\n    pool_mode: session\n"),
	};
	static const char body[] = "user\0" H_SUPERUSER "\0database\0wldb\0";
	uint8_t pkt[8 + sizeof(body)];
	uint32_t len = htonl((uint32_t)sizeof(pkt)), code = htonl(196608);
	PostgresPollingStatusType st;
	PGconn *a, *c;
	int fd, rc;

	h_daemon_start(&d, &h_shared_pg, &o);
	a = h_connect_db(&d, "wldb", NULL);
	h_exec_ok(a, "SELECT 1");

	memcpy(pkt, &len, 4);
	memcpy(pkt + 4, &code, 4);
	memcpy(pkt + 8, body, sizeof(body));    /* body's own NUL ends the packet */
	h_assert(kill(d.pid, SIGSTOP) == 0, "SIGSTOP pgberth: %s", strerror(errno));
	fd = h_raw_connect(d.sockpath);
	rc = fd < 0 ? -1 : h_raw_send(fd, pkt, sizeof(pkt));
	if (fd >= 0)
		close(fd);
	h_assert(kill(d.pid, SIGCONT) == 0, "SIGCONT pgberth: %s", strerror(errno));
	h_assert(rc == 0, "raw client B could not connect and send its startup packet");

	/* C is let in (and waits, A still holds the server) once B is seen gone. */
	int64_t deadline = h_now_ms() + 5000;
	for (;;) {
		c = h_connect_start(&d, "dbname=wldb", true, &st);
		rc = h_drive_connect(c, &st, h_now_ms() + 300);
		if (rc == -1)
			break;
		h_assert(rc == PGRES_POLLING_FAILED && strstr(PQerrorMessage(c), "53300") != NULL,
			 "C while A holds the only server: %s",
			 rc == PGRES_POLLING_OK ? "logged in" : PQerrorMessage(c));
		PQfinish(c);
		h_assert(h_now_ms() < deadline,
			 "5 s after B left while waiting, C is still refused by max_client_conn");
		h_sleep_ms(20);
	}
	PQfinish(a);
	rc = h_drive_connect(c, &st, h_now_ms() + 10000);
	h_assert(rc == PGRES_POLLING_OK, "C did not log in after A left: %s",
		 rc == -1 ? "no answer within 10 s" : PQerrorMessage(c));
	h_exec_ok(c, "SELECT 1");
	PQfinish(c);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- query_wait_timeout ---------------------------------------------- */

/*
 * pool_size 1, transaction mode: A holds the server in a transaction; B's
 * INSERT waits, fails with 57014 after query_wait_timeout (not before) and
 * B is disconnected. A is unaffected and PostgreSQL never saw B's INSERT.
 */
START_TEST(test_query_wait_timeout)
{
	struct h_daemon d;
	struct h_daemon_opts o = {
		.extra_top = "query_wait_timeout: 500ms\n",
		.extra_dbs = TAGGED_DB("qwdb", "    pool_size: 1\n    pool_mode: transaction\n"),
	};
	struct h_outcome out;
	PGconn *a, *b, *c, *direct;
	char *v;

	h_pg_exec("SET client_min_messages = warning; DROP TABLE IF EXISTS lim_qwt; "
		    "CREATE TABLE lim_qwt (v int)");
	h_daemon_start(&d, &h_shared_pg, &o);
	a = h_connect_db(&d, "qwdb", NULL);
	h_exec_ok(a, "BEGIN");
	h_exec_ok(a, "INSERT INTO lim_qwt VALUES (1)");

	b = h_connect_db(&d, "qwdb", NULL);
	h_run_query(b, "INSERT INTO lim_qwt VALUES (2)", 5000, &out);
	h_assert(out.answered, "B's query got no answer within 5 s (query_wait_timeout is 500 ms)");
	h_assert(!out.ok && strcmp(out.sqlstate, "57014") == 0,
		 "B's query while the only server is held: %s [%s] %s",
		 out.ok ? "succeeded" : "failed", out.sqlstate, out.message);
	h_assert(out.ms >= 450 && out.ms <= 1500,
		 "B's query failed after %d ms, query_wait_timeout is 500 ms", out.ms);
	h_assert(PQstatus(b) == CONNECTION_BAD, "B's connection is still open after its 57014");
	PQfinish(b);

	/* A kept its server and its transaction. */
	h_assert(PQtransactionStatus(a) == PQTRANS_INTRANS, "A's transaction status %d",
		 PQtransactionStatus(a));
	h_exec_ok(a, "INSERT INTO lim_qwt VALUES (3)");
	h_exec_ok(a, "COMMIT");
	direct = h_pg_connect(&h_shared_pg, NULL);
	v = h_query_value(direct, "SELECT string_agg(v::text, ',' ORDER BY v) FROM lim_qwt");
	h_assert(v && strcmp(v, "1,3") == 0, "rows in lim_qwt: %s, expected 1,3 (B's 2 must be absent)",
		 v ? v : "none");
	free(v);

	/* The pool still serves. */
	c = h_connect_db(&d, "qwdb", NULL);
	h_exec_ok(c, "SELECT 1");
	h_assert(count_servers(direct, "qwdb") == 1, "qwdb has %lld server connections, pool_size 1",
		 count_servers(direct, "qwdb"));
	PQfinish(c);
	PQfinish(a);
	PQfinish(direct);
	assert_log_clean(&d);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- reserve_pool_size + reserve_pool_timeout ------------------------ */

/*
 * pool_size 1, reserve 1: with A holding the server, B is served by a
 * reserve connection after reserve_pool_timeout, not before; C finds both
 * in use and waits (never a third connection) until A's server is free.
 * The reserve connection is closed when B is done with it.
 */
START_TEST(test_reserve_pool)
{
	struct h_daemon d;
	struct h_daemon_opts o = {
		.extra_top = "reserve_pool_timeout: 500ms\n",
		.extra_dbs = TAGGED_DB("rpdb", "    pool_size: 1\n    pool_mode: transaction\n"
				       "    reserve_pool_size: 1\n"),
	};
	struct h_sampler sm;
	struct h_outcome out;
	PGconn *a, *b, *c, *direct;
	PGresult *r;
	long long apid, bpid;

	h_daemon_start(&d, &h_shared_pg, &o);
	direct = h_pg_connect(&h_shared_pg, NULL);
	sampler_start(&sm, "rpdb");
	a = h_connect_db(&d, "rpdb", NULL);
	h_exec_ok(a, "BEGIN");
	apid = h_query_ll(a, "SELECT pg_backend_pid()");

	b = h_connect_db(&d, "rpdb", NULL);
	h_run_query(b, "BEGIN; SELECT pg_backend_pid()", 5000, &out);
	h_assert(out.answered && out.ok, "B: %s [%s] %s", out.answered ? "failed" : "no answer in 5 s",
		 out.sqlstate, out.message);
	h_assert(out.ms >= 450, "B was served after %d ms, before reserve_pool_timeout (500 ms)",
		 out.ms);
	h_assert(out.ms <= 1500, "B was served after %d ms, reserve_pool_timeout is 500 ms", out.ms);
	bpid = out.value;
	h_assert(bpid != apid, "B got A's server (%lld) while A's transaction is open", apid);
	h_assert(count_servers(direct, "rpdb") == 2, "PostgreSQL sees %lld rpdb connections, expected 2",
		 count_servers(direct, "rpdb"));

	/* C: pool and reserve both in use; it waits well past the reserve timeout. */
	c = h_connect_db(&d, "rpdb", NULL);
	h_assert(PQsendQuery(c, "SELECT pg_backend_pid()"), "send: %s", PQerrorMessage(c));
	r = h_result_try(c, 1200);
	h_assert(r == NULL, "C was served (%s) with A and B holding pool and reserve",
		 PQresStatus(PQresultStatus(r)));
	h_assert(count_servers(direct, "rpdb") == 2, "PostgreSQL sees %lld rpdb connections, "
		 "pool_size + reserve_pool_size is 2", count_servers(direct, "rpdb"));

	/* A commits: C, first in line, gets A's server. */
	h_exec_ok(a, "COMMIT");
	r = h_result_try(c, 5000);
	h_assert(r && PQresultStatus(r) == PGRES_TUPLES_OK, "C after A's COMMIT: %s",
		 r ? PQresultErrorMessage(r) : "no result within 5 s");
	h_assert(atoll(PQgetvalue(r, 0, 0)) == apid, "C got backend %s, A's was %lld",
		 PQgetvalue(r, 0, 0), apid);
	PQclear(r);
	while ((r = PQgetResult(c)) != NULL)
		PQclear(r);
	PQsetnonblocking(c, 0);

	/* B commits: nobody waits, the reserve connection goes away. */
	h_exec_ok(b, "COMMIT");
	h_assert(wait_servers(direct, "rpdb", "= 1", 3000),
		 "the reserve connection is still open 3 s after its client was done (%lld)",
		 count_servers(direct, "rpdb"));
	sampler_stop(&sm, 2, "reserve pool");
	PQfinish(a);
	PQfinish(b);
	PQfinish(c);
	PQfinish(direct);
	assert_log_clean(&d);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- max_db_connections ---------------------------------------------- */

#define SECOND_ROLE "lim_other"

/*
 * Two users' pools on one database, pool_size 2 each, max_db_connections
 * 2: user A's two clients hold both connections in transactions; user B's
 * client waits (its pool could grow, the database cannot). When one of A's
 * clients commits, its server is idle in A's pool and B must get a
 * connection: with server_idle_timeout (_i 0: 500ms) once that idle server
 * is closed, and also without one (_i 1: the default 600s) - an idle
 * server of one pool must not starve another pool's waiter at the
 * database's cap. PostgreSQL never sees more than 2 connections.
 */
START_TEST(test_max_db_connections)
{
	struct h_daemon d;
	struct h_daemon_opts o = {
		.extra_top = _i == 0 ? "server_idle_timeout: 500ms\nclient_login_timeout: 4s\n"
				     : "client_login_timeout: 4s\n",
		.extra_dbs = TAGGED_DB("mdb", "    pool_size: 2\n    pool_mode: transaction\n"
				       "    max_db_connections: 2\n"),
	};
	struct h_sampler sm;
	PostgresPollingStatusType st;
	PGconn *a1, *a2, *b, *b2;
	char *v;
	int rc;
	int64_t t0;

	h_create_role(SECOND_ROLE);
	h_daemon_start(&d, &h_shared_pg, &o);
	sampler_start(&sm, "mdb");
	a1 = h_connect_db(&d, "mdb", NULL);
	a2 = h_connect_db(&d, "mdb", NULL);
	h_exec_ok(a1, "BEGIN");
	h_exec_ok(a1, "SELECT 1");
	h_exec_ok(a2, "BEGIN");
	h_exec_ok(a2, "SELECT 1");

	/* B's first login needs a server, and the database is at its cap. */
	b = h_connect_start(&d, "dbname=mdb user=" SECOND_ROLE, false, &st);
	rc = h_drive_connect(b, &st, h_now_ms() + 800);
	h_assert(rc == -1, "B (%s) finished its login (%s) while A's clients hold both connections "
		 "of a database capped at 2", SECOND_ROLE,
		 rc == PGRES_POLLING_OK ? "logged in" : PQerrorMessage(b));

	/* A1 is done: its server is idle in A's pool; B must get a connection. */
	h_exec_ok(a1, "COMMIT");
	t0 = h_now_ms();
	rc = h_drive_connect(b, &st, t0 + 3000);
	h_assert(rc == PGRES_POLLING_OK, "B not served %lld ms after one of A's two connections went "
		 "idle (server_idle_timeout %s): %s", (long long)(h_now_ms() - t0),
		 _i == 0 ? "500ms" : "600s", rc == -1 ? "still waiting" : PQerrorMessage(b));
	v = h_query_value(b, "SELECT current_user");
	h_assert(v && strcmp(v, SECOND_ROLE) == 0, "B runs as %s", v ? v : "NULL");
	free(v);

	/* Both users keep being served, under the cap, as connections free up. */
	h_exec_ok(a2, "COMMIT");
	b2 = h_connect_db(&d, "mdb", SECOND_ROLE);
	for (int i = 0; i < 3; i++) {
		h_exec_ok(a1, "SELECT 1");
		h_exec_ok(b, "SELECT 2");
		h_exec_ok(a2, "SELECT 3");
		h_exec_ok(b2, "SELECT 4");
	}
	sampler_stop(&sm, 2, "max_db_connections 2");
	PQfinish(a1);
	PQfinish(a2);
	PQfinish(b);
	PQfinish(b2);
	assert_log_clean(&d);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- client_idle_timeout --------------------------------------------- */

/*
 * An idle logged-in client is closed with 57P05 after client_idle_timeout;
 * a client that keeps sending queries, and one whose query runs longer
 * than the timeout, are not.
 */
START_TEST(test_client_idle_timeout)
{
	struct h_daemon d;
	struct h_daemon_opts o = {
		.extra_top = "client_idle_timeout: 500ms\n",
		.extra_dbs = TAGGED_DB("cidb", "    pool_size: 2\n    pool_mode: transaction\n"),
	};
	PGconn *busy;
	struct h_raw_error e;
	int fd, rc = -2, closed_ms = -1;
	int64_t t0;

	h_daemon_start(&d, &h_shared_pg, &o);
	busy = h_connect_db(&d, "cidb", NULL);
	h_exec_ok(busy, "SELECT 1");
	fd = h_raw_client(&d, "cidb", NULL);
	t0 = h_now_ms();

	/* busy queries every 100 ms for 1.5 s, while the idle one is watched. */
	while (h_now_ms() - t0 < 1500) {
		struct pollfd p = { fd, POLLIN, 0 };

		h_exec_ok(busy, "SELECT 1");
		if (closed_ms < 0 && poll(&p, 1, 100) > 0) {
			closed_ms = (int)(h_now_ms() - t0);
			rc = h_raw_wait_error(fd, 2000, &e);
		} else if (closed_ms >= 0) {
			h_sleep_ms(100);
		}
	}
	h_assert(closed_ms >= 0, "the idle client is still open 1.5 s into a 500 ms client_idle_timeout");
	h_assert(rc == 1 && strcmp(e.sqlstate, "57P05") == 0,
		 "idle client: expected an ErrorResponse 57P05, got rc %d [%s] %s", rc, e.sqlstate,
		 e.message);
	h_assert(closed_ms >= 450 && closed_ms <= 1200,
		 "idle client closed after %d ms, client_idle_timeout is 500 ms", closed_ms);
	h_assert(h_raw_wait_eof(fd, 2000) == 0, "idle client's connection open after its 57P05");
	close(fd);

	/* A query longer than the timeout is not idleness. */
	h_assert(PQstatus(busy) == CONNECTION_OK, "the busy client was closed");
	h_exec_ok(busy, "SELECT pg_sleep(0.8)");
	h_exec_ok(busy, "SELECT 1");
	PQfinish(busy);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- idle_transaction_timeout ---------------------------------------- */

/*
 * pool_size 1: T idles inside BEGIN after an INSERT and is closed with
 * 25P03; its server is rolled back and goes to U, who was waiting for it.
 * A transaction that is busy (queries back to back) outlives the timeout.
 */
START_TEST(test_idle_transaction_timeout)
{
	struct h_daemon d;
	struct h_daemon_opts o = {
		.extra_top = "idle_transaction_timeout: 500ms\n",
		.extra_dbs = TAGGED_DB("itdb", "    pool_size: 1\n    pool_mode: transaction\n"),
	};
	PGconn *u, *direct;
	PGresult *r;
	char tpid[32], sqlstate[6];
	struct h_raw_error e;
	int fd, rc, t_ms;
	int64_t t0;

	h_pg_exec("SET client_min_messages = warning; DROP TABLE IF EXISTS lim_itx; "
		    "CREATE TABLE lim_itx (v int)");
	h_daemon_start(&d, &h_shared_pg, &o);
	fd = h_raw_client(&d, "itdb", NULL);
	h_assert(h_raw_query(fd, "BEGIN", NULL, 0, sqlstate, 5000) == 0, "BEGIN [%s]", sqlstate);
	h_assert(h_raw_query(fd, "INSERT INTO lim_itx VALUES (1)", NULL, 0, sqlstate, 5000) == 0,
		 "INSERT [%s]", sqlstate);
	h_assert(h_raw_query(fd, "SELECT pg_backend_pid()", tpid, sizeof(tpid), sqlstate, 5000) == 0,
		 "pid [%s]", sqlstate);
	t0 = h_now_ms();

	/* U wants the only server meanwhile. */
	u = h_connect_db(&d, "itdb", NULL);
	h_assert(PQsendQuery(u, "SELECT pg_backend_pid() || ',' || (SELECT count(*) FROM lim_itx) || "
			     "',' || (now() = statement_timestamp())"), "send");

	rc = h_raw_wait_error(fd, 3000, &e);
	t_ms = (int)(h_now_ms() - t0);
	h_assert(rc == 1 && strcmp(e.sqlstate, "25P03") == 0,
		 "client idle in transaction: expected 25P03, got rc %d [%s] %s", rc, e.sqlstate,
		 e.message);
	h_assert(t_ms >= 450 && t_ms <= 1500,
		 "idle-in-transaction client closed after %d ms, idle_transaction_timeout is 500 ms",
		 t_ms);
	h_assert(h_raw_wait_eof(fd, 2000) == 0, "connection open after 25P03");
	close(fd);

	/* U gets T's server, rolled back: not inside T's transaction, no row. */
	r = h_result_try(u, 5000);
	{
		char want[64];

		snprintf(want, sizeof(want), "%s,0,true", tpid);
		h_assert(r && PQresultStatus(r) == PGRES_TUPLES_OK &&
			 strcmp(PQgetvalue(r, 0, 0), want) == 0,
			 "U after T's timeout: %s (want pid,rows,fresh-transaction = %s)",
			 r ? (PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0)
							     : PQresultErrorMessage(r))
			   : "no result within 5 s", want);
	}
	PQclear(r);
	PQsetnonblocking(u, 0);
	direct = h_pg_connect(&h_shared_pg, NULL);
	h_assert(h_query_ll(direct, "SELECT count(*) FROM lim_itx") == 0,
		 "T's uncommitted INSERT is visible");

	/* Busy for longer than the timeout, never idle that long: survives. */
	h_exec_ok(u, "BEGIN");
	for (int i = 0; i < 4; i++)
		h_exec_ok(u, "SELECT pg_sleep(0.2)");
	h_exec_ok(u, "INSERT INTO lim_itx VALUES (2)");
	h_exec_ok(u, "COMMIT");
	h_assert(h_query_ll(direct, "SELECT count(*) FROM lim_itx WHERE v = 2") == 1,
		 "U's committed row is missing");
	PQfinish(u);
	PQfinish(direct);
	assert_log_clean(&d);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- server_idle_timeout --------------------------------------------- */

/*
 * After a burst that opened 4 servers, the idle ones are closed after
 * server_idle_timeout (not before) down to min_pool_size 1, and the one
 * kept is not churned.
 */
START_TEST(test_server_idle_timeout)
{
	struct h_daemon d;
	struct h_daemon_opts o = {
		.extra_top = "server_idle_timeout: 600ms\n",
		.extra_dbs = TAGGED_DB("sidb", "    pool_size: 4\n    pool_mode: transaction\n"
				       "    min_pool_size: 1\n"),
	};
	PGconn *c[4], *direct;
	long long pids[4], kept;
	char sql[256];
	int64_t t0, took;

	h_daemon_start(&d, &h_shared_pg, &o);
	direct = h_pg_connect(&h_shared_pg, NULL);
	for (int i = 0; i < 4; i++) {
		c[i] = h_connect_db(&d, "sidb", NULL);
		h_exec_ok(c[i], "BEGIN");
		pids[i] = h_query_ll(c[i], "SELECT pg_backend_pid()");
		for (int j = 0; j < i; j++)
			h_assert(pids[i] != pids[j], "clients %d and %d share a server in transactions", i, j);
	}
	for (int i = 0; i < 4; i++)
		h_exec_ok(c[i], "COMMIT");
	t0 = h_now_ms();
	h_assert(count_servers(direct, "sidb") == 4, "%lld sidb servers right after the burst, expected 4",
		 count_servers(direct, "sidb"));
	h_assert(wait_servers(direct, "sidb", "= 1", 3000),
		 "3 s after the burst PostgreSQL still sees %lld sidb connections "
		 "(server_idle_timeout 600 ms, min_pool_size 1)", count_servers(direct, "sidb"));
	took = h_now_ms() - t0;
	h_assert(took >= 500, "idle servers closed %lld ms after the burst, before server_idle_timeout "
		 "(600 ms)", (long long)took);
	h_assert(took <= 2100, "idle servers closed only %lld ms after the burst "
		 "(server_idle_timeout 600 ms)", (long long)took);

	/* The min_pool_size one stays, the same backend, past another timeout. */
	kept = h_query_ll(direct, "SELECT pid FROM pg_stat_activity WHERE application_name = 'sidb'");
	snprintf(sql, sizeof(sql), "SELECT count(*) <> 1 OR min(pid) <> %lld FROM pg_stat_activity "
		 "WHERE application_name = 'sidb'", kept);
	h_assert(!poll_sql(direct, sql, 1000),
		 "the last idle server (min_pool_size 1) was closed or replaced: %lld connections",
		 count_servers(direct, "sidb"));
	h_assert(h_query_ll(c[2], "SELECT pg_backend_pid()") == kept,
		 "a client did not get the kept idle server");
	for (int i = 0; i < 4; i++)
		PQfinish(c[i]);
	PQfinish(direct);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- server_lifetime ------------------------------------------------- */

/*
 * server_lifetime 500ms: a client's backend changes across transactions
 * once the lifetime passes (not before), never inside a transaction, and
 * no query fails.
 */
START_TEST(test_server_lifetime)
{
	struct h_daemon d;
	struct h_daemon_opts o = {
		.extra_top = "server_lifetime: 500ms\n",
		.extra_dbs = TAGGED_DB("sldb", "    pool_size: 1\n    pool_mode: transaction\n"),
	};
	PGconn *c, *direct;
	long long first, pid, p1, p2;
	int64_t t0, changed = -1;

	h_daemon_start(&d, &h_shared_pg, &o);
	direct = h_pg_connect(&h_shared_pg, NULL);
	t0 = h_now_ms();        /* the server is born after this */
	c = h_connect_db(&d, "sldb", NULL);
	first = h_query_ll(c, "SELECT pg_backend_pid()");
	while (h_now_ms() - t0 < 3000) {
		pid = h_query_ll(c, "SELECT pg_backend_pid()");    /* asserts success */
		if (pid != first) {
			changed = h_now_ms() - t0;
			break;
		}
		h_sleep_ms(20);
	}
	h_assert(changed >= 0, "the backend did not change within 3 s (server_lifetime 500 ms)");
	h_assert(changed >= 450, "the backend changed %lld ms after connecting, before "
		 "server_lifetime (500 ms)", (long long)changed);
	h_assert(count_servers(direct, "sldb") == 1, "%lld sldb servers, pool_size 1",
		 count_servers(direct, "sldb"));

	/* A transaction longer than the lifetime keeps its server to the end. */
	h_exec_ok(c, "BEGIN");
	p1 = h_query_ll(c, "SELECT pg_backend_pid()");
	h_exec_ok(c, "SELECT pg_sleep(0.7)");
	p2 = h_query_ll(c, "SELECT pg_backend_pid()");
	h_exec_ok(c, "COMMIT");
	h_assert(p1 == p2, "the server changed inside a transaction (%lld then %lld)", p1, p2);
	pid = h_query_ll(c, "SELECT pg_backend_pid()");
	h_assert(pid != p1, "a server past server_lifetime was reused after its transaction");
	PQfinish(c);
	PQfinish(direct);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- min_pool_size --------------------------------------------------- */

/*
 * No pool before the first client; after it, min_pool_size 2 connections
 * stay open with no client at all, never more; one killed is replaced.
 */
START_TEST(test_min_pool_size)
{
	struct h_daemon d;
	struct h_daemon_opts o = {
		.extra_dbs = TAGGED_DB("mpdb", "    pool_size: 3\n    pool_mode: transaction\n"
				       "    min_pool_size: 2\n"),
	};
	struct h_sampler sm;
	PGconn *c, *direct;
	long long killed;
	char sql[256];

	h_daemon_start(&d, &h_shared_pg, &o);
	direct = h_pg_connect(&h_shared_pg, NULL);
	h_assert(!wait_servers(direct, "mpdb", "> 0", 300),
		 "pgberth opened mpdb connections before any client asked for mpdb");

	sampler_start(&sm, "mpdb");
	c = h_connect_db(&d, "mpdb", NULL);
	h_exec_ok(c, "SELECT 1");
	PQfinish(c);
	h_assert(wait_servers(direct, "mpdb", "= 2", 3000), "no client: PostgreSQL sees %lld mpdb "
		 "connections 3 s after the first client, min_pool_size is 2",
		 count_servers(direct, "mpdb"));
	h_assert(!wait_servers(direct, "mpdb", "<> 2", 500), "mpdb connections went from 2 to %lld",
		 count_servers(direct, "mpdb"));
	sampler_stop(&sm, 2, "min_pool_size 2 with no client");

	killed = h_query_ll(direct, "SELECT pid FROM pg_stat_activity WHERE application_name = 'mpdb' "
			    "ORDER BY pid LIMIT 1");
	snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%lld)", killed);
	h_exec_ok(direct, sql);
	snprintf(sql, sizeof(sql), "SELECT count(*) = 2 AND bool_and(pid <> %lld) FROM pg_stat_activity "
		 "WHERE application_name = 'mpdb'", killed);
	h_assert(poll_sql(direct, sql, 3000), "the terminated spare was not replaced within 3 s: "
		 "%lld mpdb connections", count_servers(direct, "mpdb"));

	/* And the spares serve clients. */
	c = h_connect_db(&d, "mpdb", NULL);
	h_exec_ok(c, "SELECT 1");
	PQfinish(c);
	PQfinish(direct);
	assert_log_clean(&d);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- server_check_query ---------------------------------------------- */

/*
 * The check query records each run in a table. server_check_delay 0: it
 * runs before every reuse of a server (not on a fresh one). _i 1:
 * server_check_delay 600ms: not on a server reused at once, but on one
 * idle longer than that.
 */
START_TEST(test_server_check_query)
{
	struct h_daemon d;
	struct h_daemon_opts o = {
		.extra_top = _i == 0 ? "server_check_query: SELECT lim_check()\nserver_check_delay: 0\n"
				     : "server_check_query: SELECT lim_check()\nserver_check_delay: 600ms\n",
		.extra_dbs = TAGGED_DB("ckdb", "    pool_size: 1\n    pool_mode: transaction\n"),
	};
	PGconn *c, *direct;
	long long before, after, pid;

	h_pg_exec("SET client_min_messages = warning; DROP TABLE IF EXISTS lim_checks; "
		    "CREATE TABLE lim_checks (at timestamptz); "
		    "CREATE OR REPLACE FUNCTION lim_check() RETURNS int LANGUAGE sql AS "
		    "'INSERT INTO lim_checks VALUES (clock_timestamp()) RETURNING 1'");
	h_daemon_start(&d, &h_shared_pg, &o);
	direct = h_pg_connect(&h_shared_pg, NULL);
	c = h_connect_db(&d, "ckdb", NULL);
	pid = h_query_ll(c, "SELECT pg_backend_pid()");
	before = h_query_ll(direct, "SELECT count(*) FROM lim_checks");
	for (int i = 0; i < 5; i++)
		h_assert(h_query_ll(c, "SELECT pg_backend_pid()") == pid, "the server changed");
	after = h_query_ll(direct, "SELECT count(*) FROM lim_checks");
	if (_i == 0) {
		h_assert(after - before == 5, "5 reuses with server_check_delay 0 ran the check query "
			 "%lld times", after - before);
	} else {
		h_assert(after == before, "5 reuses in quick succession ran the check query %lld times "
			 "(server_check_delay 600 ms)", after - before);
		h_sleep_ms(800);        /* the server must sit idle past the delay */
		h_assert(h_query_ll(c, "SELECT pg_backend_pid()") == pid, "the server changed");
		after = h_query_ll(direct, "SELECT count(*) FROM lim_checks");
		h_assert(after - before == 1, "a reuse after 800 ms idle ran the check query %lld times "
			 "(server_check_delay 600 ms), expected once", after - before);
	}
	PQfinish(c);
	PQfinish(direct);
	assert_log_clean(&d);
	h_daemon_stop_ok(&d);
}
END_TEST

/*
 * A check query that fails: every reused server fails it and is closed,
 * and the client is served on a fresh server without seeing any error;
 * pool_size 1 still holds.
 */
START_TEST(test_server_check_fails)
{
	struct h_daemon d;
	struct h_daemon_opts o = {
		.extra_top = "server_check_query: SELECT 1/0\nserver_check_delay: 0\n",
		.extra_dbs = TAGGED_DB("cfdb", "    pool_size: 1\n    pool_mode: transaction\n"),
	};
	struct h_sampler sm;
	PGconn *c;
	long long prev, pid;

	h_daemon_start(&d, &h_shared_pg, &o);
	sampler_start(&sm, "cfdb");
	c = h_connect_db(&d, "cfdb", NULL);
	prev = h_query_ll(c, "SELECT pg_backend_pid()");
	for (int i = 0; i < 3; i++) {
		struct h_outcome out;

		h_run_query(c, "SELECT pg_backend_pid()", 10000, &out);
		h_assert(out.answered && out.ok, "query %d after a failed check: %s [%s] %s", i,
			 out.answered ? "error" : "no answer in 10 s", out.sqlstate, out.message);
		pid = out.value;
		h_assert(pid != prev, "query %d ran on backend %lld, which failed its check", i, prev);
		prev = pid;
	}
	sampler_stop(&sm, 1, "failing server_check_query, pool_size 1");
	PQfinish(c);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- servers that die ------------------------------------------------ */

/*
 * pg_terminate_backend on every server of the pool: the client whose
 * query was running gets an error at once, not a hang; a client without a
 * server does not notice (its next query gets a fresh one); new clients
 * work, and both slots of the pool are usable again.
 */
START_TEST(test_servers_terminated)
{
	struct h_daemon d;
	struct h_daemon_opts o = {
		.extra_dbs = TAGGED_DB("tmdb", "    pool_size: 2\n    pool_mode: transaction\n"),
	};
	struct h_outcome out;
	PGconn *a, *b, *c, *direct;
	PGresult *r;
	int64_t t0;

	h_daemon_start(&d, &h_shared_pg, &o);
	direct = h_pg_connect(&h_shared_pg, NULL);
	a = h_connect_db(&d, "tmdb", NULL);
	b = h_connect_db(&d, "tmdb", NULL);
	h_exec_ok(b, "BEGIN");          /* so that A gets the second server */
	h_assert(PQsendQuery(a, "SELECT pg_sleep(30) /* lim-terminated */"), "send");
	h_assert(poll_sql(direct, "SELECT count(*) = 1 FROM pg_stat_activity WHERE state = 'active' "
			      "AND query LIKE '%lim-terminated */'", 5000), "A's pg_sleep never started");
	h_exec_ok(b, "COMMIT");         /* B's server: idle in the pool */
	h_assert(count_servers(direct, "tmdb") == 2, "expected 2 tmdb servers");

	h_exec_ok(direct, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
		  "WHERE application_name = 'tmdb'");
	t0 = h_now_ms();
	r = h_result_try(a, 5000);
	h_assert(r != NULL && PQresultStatus(r) == PGRES_FATAL_ERROR,
		 "A, whose backend was terminated mid-query: %s after %lld ms",
		 r ? PQresStatus(PQresultStatus(r)) : "no answer", (long long)(h_now_ms() - t0));
	PQclear(r);
	PQfinish(a);
	h_assert(wait_servers(direct, "tmdb", "= 0", 5000), "terminated backends still there");

	/* B had no server: its next transaction runs on a fresh one. */
	h_run_query(b, "SELECT pg_backend_pid()", 10000, &out);
	h_assert(out.answered && out.ok, "B after its pool's servers died: %s [%s] %s",
		 out.answered ? "error" : "no answer", out.sqlstate, out.message);

	/* Both slots are free again: two transactions at once. */
	c = h_connect_db(&d, "tmdb", NULL);
	h_exec_ok(b, "BEGIN");
	h_exec_ok(c, "BEGIN");
	h_run_query(c, "SELECT pg_backend_pid()", 5000, &out);
	h_assert(out.answered && out.ok, "a second transaction after the servers died: %s [%s] %s",
		 out.answered ? "error" : "no server within 5 s (slot leaked?)", out.sqlstate,
		 out.message);
	h_exec_ok(b, "COMMIT");
	h_exec_ok(c, "COMMIT");
	PQfinish(b);
	PQfinish(c);
	PQfinish(direct);
	assert_log_clean(&d);
	h_daemon_stop_ok(&d);
}
END_TEST

/*
 * Starts postgres again on pg's data directory and socket, with the
 * harness's settings; waits until it answers. The harness only starts
 * fresh copies, and h_pg_stop removes the directory.
 */
static void pg_restart(struct h_pg *pg)
{
	char sockopt[H_PATH_MAX + 32], port[16], conninfo[H_PATH_MAX + 128];
	const char *argv[] = {
		h_pg_bin("postgres"), "-D", pg->datadir, "-p", port,
		"-c", "listen_addresses=", "-c", sockopt, "-c", "fsync=off",
		"-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=200", "-c", "shared_buffers=16MB", "-c", "autovacuum=off",
		"-c", "dynamic_shared_memory_type=mmap", "-c", "max_parallel_workers_per_gather=0",
		"-c", "client_connection_check_interval=1s", "-c", "logging_collector=off", NULL,
	};
	int64_t deadline = h_now_ms() + 30000;

	snprintf(sockopt, sizeof(sockopt), "unix_socket_directories=%s", pg->sockdir);
	snprintf(port, sizeof(port), "%d", pg->port);
	snprintf(conninfo, sizeof(conninfo), "host=%s port=%d dbname=appdb user=" H_SUPERUSER,
		 pg->sockdir, pg->port);
	pg->pid = h_spawn(argv, pg->log, true);
	h_assert(pg->pid > 0, "cannot restart postgres: %s", strerror(errno));
	while (PQping(conninfo) != PQPING_OK) {
		h_assert(h_now_ms() < deadline, "postgres did not come back within 30 s");
		h_sleep_ms(20);
	}
}

/*
 * PostgreSQL stops (fast shutdown) under the daemon: the running query,
 * the session-mode client and new queries all get errors promptly, never
 * a hang; once PostgreSQL is back, new clients work and the pool has all
 * its slots.
 */
START_TEST(test_postgres_restart)
{
	static struct h_pg pg;
	struct h_daemon d;
	struct h_daemon_opts o = {
		.server_connect_timeout = "1s",
		.extra_dbs = TAGGED_DB("rsdb", "    pool_size: 2\n    pool_mode: transaction\n"),
	};
	struct h_outcome out;
	PGconn *a, *b, *s, *c, *c2;
	int64_t t0;

	h_pg_start(&pg);
	h_daemon_start(&d, &pg, &o);
	s = h_connect(&d, NULL);        /* appdb: session mode, holds a server */
	h_exec_ok(s, "SELECT 1");
	a = h_connect_db(&d, "rsdb", NULL);
	b = h_connect_db(&d, "rsdb", NULL);
	h_exec_ok(b, "SELECT 1");
	h_assert(PQsendQuery(a, "SELECT pg_sleep(30) /* lim-restart */"), "send");
	{
		PGconn *direct = h_pg_connect(&pg, NULL);

		h_assert(poll_sql(direct, "SELECT count(*) = 1 FROM pg_stat_activity WHERE state = "
				      "'active' AND query LIKE '%lim-restart */'", 5000),
			 "A's pg_sleep never started");
		PQfinish(direct);
	}

	kill(pg.pid, SIGINT);
	h_assert(h_wait_pid(pg.pid, 15000, NULL) >= 0, "postgres did not stop within 15 s");
	pg.pid = 0;
	t0 = h_now_ms();

	{
		PGresult *r = h_result_try(a, 5000);

		h_assert(r != NULL && PQresultStatus(r) == PGRES_FATAL_ERROR,
			 "running query when PostgreSQL stopped: %s after %lld ms",
			 r ? PQresStatus(PQresultStatus(r)) : "no answer", (long long)(h_now_ms() - t0));
		PQclear(r);
	}
	h_run_query(s, "SELECT 1", 5000, &out);
	h_assert(out.answered && !out.ok, "session client's query with PostgreSQL down: %s",
		 out.answered ? "succeeded" : "no answer within 5 s");
	h_run_query(b, "SELECT 1", 5000, &out);
	h_assert(out.answered && !out.ok, "transaction client's query with PostgreSQL down: %s",
		 out.answered ? "succeeded" : "no answer within 5 s");
	h_assert(strcmp(out.sqlstate, "08006") == 0, "query with PostgreSQL down: [%s] %s",
		 out.sqlstate, out.message);
	{
		PGconn *n = h_connect_try(&d, "connect_timeout=5");

		h_assert(PQstatus(n) == CONNECTION_BAD, "a session login with PostgreSQL down succeeded");
		PQfinish(n);
	}

	pg_restart(&pg);
	c = h_connect_db(&d, "rsdb", NULL);
	c2 = h_connect_db(&d, "rsdb", NULL);
	h_exec_ok(c, "BEGIN");
	h_exec_ok(c2, "BEGIN");
	h_run_query(c, "SELECT 1", 5000, &out);
	h_assert(out.answered && out.ok, "after the restart: %s [%s] %s",
		 out.answered ? "error" : "no answer", out.sqlstate, out.message);
	h_run_query(c2, "SELECT 1", 5000, &out);
	h_assert(out.answered && out.ok, "second transaction after the restart: %s [%s] %s",
		 out.answered ? "error" : "no server within 5 s (slot leaked?)", out.sqlstate,
		 out.message);
	h_exec_ok(c, "COMMIT");
	h_exec_ok(c2, "COMMIT");
	PQfinish(c);
	PQfinish(c2);
	c = h_connect(&d, NULL);
	h_exec_ok(c, "SELECT 1");
	PQfinish(c);
	PQfinish(a);
	PQfinish(b);
	PQfinish(s);
	h_daemon_stop_ok(&d);
	h_pg_stop(&pg);
}
END_TEST

static Suite *e2e_limits_suite(void)
{
	Suite *s = suite_create("e2e_limits");
	TCase *tc;

	tc = h_tcase("limits", 60);
	h_tcase_add_pg(tc);
	tcase_add_test(tc, test_max_client_conn);
	tcase_add_test(tc, test_waiting_client_leaves);
	tcase_add_test(tc, test_query_wait_timeout);
	tcase_add_test(tc, test_reserve_pool);
	tcase_add_loop_test(tc, test_max_db_connections, 0, 2);
	suite_add_tcase(s, tc);

	tc = h_tcase("timeouts", 60);
	h_tcase_add_pg(tc);
	tcase_add_test(tc, test_client_idle_timeout);
	tcase_add_test(tc, test_idle_transaction_timeout);
	tcase_add_test(tc, test_server_idle_timeout);
	tcase_add_test(tc, test_server_lifetime);
	tcase_add_test(tc, test_min_pool_size);
	suite_add_tcase(s, tc);

	tc = h_tcase("check", 60);
	h_tcase_add_pg(tc);
	tcase_add_loop_test(tc, test_server_check_query, 0, 2);
	tcase_add_test(tc, test_server_check_fails);
	suite_add_tcase(s, tc);

	tc = h_tcase("dead", 60);
	h_tcase_add_pg(tc);
	tcase_add_test(tc, test_servers_terminated);
	suite_add_tcase(s, tc);

	tc = h_tcase("restart", 60);
	tcase_add_test(tc, test_postgres_restart);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return h_main(e2e_limits_suite());
}
