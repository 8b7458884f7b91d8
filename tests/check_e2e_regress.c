/*
 * End to end, regression tests for bugs a review found. They assert what
 * a user sees (rows, SQLSTATEs, timings, backend pids), never log text.
 * All but test_cancel_then_leave failed on the daemon before the fixes;
 * that one guards a race no test can force (see its comment).
 *
 *   stale_bytes  a client that leaves with server output it never read
 *                (notifications, the tail of a result) must not hand that
 *                output, or heap bytes behind it, to the next client.
 *   release      a cancel that ran just before a clean exit, a Terminate
 *                right behind a query (the query still runs to its end),
 *                and extended-protocol COPY FROM STDIN (its ignored Sync
 *                is no reply owed): the next client gets the same server
 *                at once. A query, Terminate and close while the query
 *                waits for a server: it still runs. A server that dies
 *                with a FATAL: its client gets that error once.
 *   login        multi-host conninfo whose first host is dead, and a
 *                startup parameter name that cannot be SET.
 *   transaction  what a client SETs follows it to every server it gets;
 *                what one client set must not reach the next client of
 *                its server (SET ROLE, SET SESSION AUTHORIZATION, an
 *                unreported SET, a named prepared statement, a temporary
 *                table, a WITH HOLD cursor, a LISTEN), and a list in a
 *                startup option stays a list.
 *   cancel       a cancel connection closes only once the cancel reached
 *                PostgreSQL; a cancel for a query still waiting for a
 *                server answers it with 57014 and the query never runs.
 *
 * Each TCase shares one PostgreSQL (h_tcase_add_pg); each test starts its
 * own daemon and stops it with SIGTERM, asserting a clean exit.
 *
 * The stale_bytes tests do not rely on timing luck. PostgreSQL flushes its
 * output in 8192-byte writes, pgberth relays through a 32 KiB buffer
 * (RELAY_BUF) and its writes to a client's socket go whole or not at all.
 * With messages whose sizes divide 8192 (1024-byte notifications, 32-byte
 * rows under a 32-byte RowDescription) every read and write ends on a
 * message boundary, so what pgberth holds for a client that stopped
 * reading is a run of whole messages: exactly the case that was
 * mishandled. How much it holds is steered by reading the stream down to
 * a chosen tail, and measured (see leave_unread).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <sys/socket.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/sockios.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "relay.h"          /* RELAY_BUF */

/* ---- helpers --------------------------------------------------------- */

static const char *const appdb_kv[] = { "user", H_SUPERUSER, "database", "appdb", NULL };

/* For messages: "PGRES_TUPLES_OK, 1 row(s) [] ", "no result: <libpq's error>". */
static const char *describe(PGconn *c, const PGresult *r, char *buf, size_t len)
{
	if (r == NULL)
		snprintf(buf, len, "no result: %s", PQerrorMessage(c));
	else
		snprintf(buf, len, "%s, %d row(s) [%s] %s", PQresStatus(PQresultStatus(r)),
			 PQntuples(r), h_sqlstate(r), PQresultErrorMessage(r));
	return buf;
}

/* A simple Query message for sql; caller frees. */
static char *query_msg(const char *sql, size_t *len)
{
	size_t n = strlen(sql) + 1;
	char *buf = malloc(n + 5);

	h_assert(buf != NULL, "malloc");
	*len = h_put_msg(buf, 0, 'Q', sql, (uint32_t)n);
	return buf;
}

/* A raw-protocol client logged in through d; its server's pid in *pid. */
static int raw_client(const struct h_daemon *d, long long *pid)
{
	char out[32];
	int fd = h_raw_client(d, "appdb", NULL), rc;

	rc = h_raw_query(fd, "SELECT pg_backend_pid()", out, sizeof(out), NULL, 10000);
	h_assert(rc == 0 && out[0] != '\0', "SELECT pg_backend_pid(): rc %d", rc);
	*pid = strtoll(out, NULL, 10);
	return fd;
}

/* Polls pg_stat_activity (directly) until backend pid satisfies cond. */
static void wait_backend(PGconn *direct, long long pid, const char *cond, const char *what)
{
	char sql[256];

	snprintf(sql, sizeof(sql), "SELECT %s FROM pg_stat_activity WHERE pid = %lld", cond, pid);
	h_assert(h_poll_until(direct, sql, 10000), "server backend %lld never %s", pid, what);
}

/* Bytes waiting in fd's receive queue. */
static size_t unread_bytes(int fd)
{
	int n = 0;

	h_assert(ioctl(fd, FIONREAD, &n) == 0, "FIONREAD: %s", strerror(errno));
	return (size_t)n;
}

/* Reads and drops exactly n bytes. */
static void raw_skip(int fd, size_t n)
{
	static char scratch[65536];

	while (n > 0) {
		size_t k = n < sizeof(scratch) ? n : sizeof(scratch);
		ssize_t got = h_raw_read(fd, scratch, k, 10000);

		h_assert(got == (ssize_t)k, "reading the result: got %zd of %zu bytes", got, k);
		n -= k;
	}
}

/*
 * n libpq clients, one after another, each with its own application_name
 * (psql sets one): every login works without waiting out a deadline, and
 * every answer is the right one.
 */
static void clients_get_clean_server(const struct h_daemon *d, int round, int n)
{
	for (int i = 0; i < n; i++) {
		char name[32], extra[96], what[512];
		int64_t t0;
		PGconn *c;
		PGresult *r;

		snprintf(name, sizeof(name), "t%d_%d", round, i);
		snprintf(extra, sizeof(extra), "application_name=%s connect_timeout=5", name);
		t0 = h_now_ms();
		c = h_connect_try(d, extra);
		h_assert(PQstatus(c) == CONNECTION_OK, "round %d, client %d: login failed: %s", round,
			 i, PQerrorMessage(c));
		h_assert(h_now_ms() - t0 < 2000, "round %d, client %d: login took %lld ms", round, i,
			 (long long)(h_now_ms() - t0));
		r = h_exec_try(c, "SELECT 1", 5000);
		h_assert(r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
			 strcmp(PQgetvalue(r, 0, 0), "1") == 0,
			 "round %d, client %d: SELECT 1 gave %s", round, i,
			 describe(c, r, what, sizeof(what)));
		PQclear(r);
		r = h_exec_try(c, "SHOW application_name", 5000);
		h_assert(r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
			 strcmp(PQgetvalue(r, 0, 0), name) == 0,
			 "round %d, client %d: SHOW application_name gave %s (\"%s\"), expected \"%s\"",
			 round, i, describe(c, r, what, sizeof(what)),
			 r && PQntuples(r) == 1 ? PQgetvalue(r, 0, 0) : "", name);
		PQclear(r);
		PQfinish(c);
	}
}

/* ---- stale relay bytes after release --------------------------------- */

/*
 * Round 0 leaves the whole stream unread. The others read all but a tail
 * (cycling through these sizes) that should end up in pgberth's buffer;
 * how much really does depends on how the client's socket accounts for
 * the writes, so rounds go on until HITS of them left pgberth holding part
 * of the stream, or MAX_ROUNDS.
 */
static const int tail_sizes[] = { 4096, 12288, 20480, 28672 };
#define MAX_ROUNDS 13
#define HITS 2

static int round_tail(int round)
{
	int n = (int)(sizeof(tail_sizes) / sizeof(tail_sizes[0]));

	return round == 0 ? -1 : tail_sizes[(round - 1) % n];
}

static bool backend_is(PGconn *direct, long long pid, const char *cond)
{
	char sql[256];
	PGresult *r;
	bool yes;

	snprintf(sql, sizeof(sql), "SELECT %s FROM pg_stat_activity WHERE pid = %lld", cond, pid);
	r = h_exec_try(direct, sql, 5000);
	yes = r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
	      strcmp(PQgetvalue(r, 0, 0), "t") == 0;
	PQclear(r);
	return yes;
}

/*
 * The client on fd has stopped reading a stream of `total` bytes that its
 * server backend (pid) is sending. Waits until everything is stuck: the
 * backend blocked in ClientWrite and the client's receive queue no longer
 * growing. Then, for tail >= 0, reads all but what the client's socket
 * holds plus `tail` bytes, and waits until the backend has sent its last
 * byte. Returns how many bytes were then neither read nor queued for the
 * client: what pgberth holds for it (0 for tail < 0: not measured).
 */
static size_t leave_unread(PGconn *direct, long long pid, int fd, size_t total, int tail)
{
	int64_t deadline = h_now_ms() + 10000;
	size_t queued, skipped;

	for (;;) {
		size_t before = unread_bytes(fd);

		if (backend_is(direct, pid, "wait_event = 'ClientWrite'") && before > 0 &&
		    unread_bytes(fd) == before)
			break;
		h_assert(h_now_ms() < deadline, "server backend %lld never blocked sending to a "
			 "client that stopped reading", pid);
		h_sleep_ms(5);
	}
	if (tail < 0)
		return 0;
	queued = unread_bytes(fd);
	h_assert(queued + (size_t)tail < total, "%zu bytes queued for a client of a %zu-byte stream",
		 queued, total);
	skipped = total - queued - (size_t)tail;
	raw_skip(fd, skipped);
	wait_backend(direct, pid, "state = 'idle' AND wait_event = 'ClientRead'",
		     "finished sending to the client");
	return total - skipped - unread_bytes(fd);
}

/* Counts a round that left pgberth holding part of the stream; lists them all. */
static void note_held(int round, size_t held, int *hits, char *list, size_t len)
{
	size_t n = strlen(list);

	if (round > 0 && held > 0 && held <= RELAY_BUF)
		(*hits)++;
	snprintf(list + n, len - n, " %zu", held);
}

/*
 * A client LISTENs and stops reading; 2000 notifications fill its socket,
 * pgberth's buffer and the server's socket. The client then closes its fd
 * (abruptly, with all that unread), after reading nothing, or all but a
 * tail that pgberth holds. Whatever pgberth holds for it is the departed
 * client's: the next clients, which set application_name like psql, must
 * get clean answers on the same pool without waiting out a deadline.
 *
 * Before the fix, the bytes read for the client but never sent stayed
 * counted as "to forward" across the reset: with a full buffer the reset
 * query's answer was never read (5 s deadline, server closed), and with a
 * partly full one the next client was sent that many bytes of pgberth's
 * heap after its ReadyForQuery.
 *
 * A notification is 'A', length, pid, "ch\0", payload, '\0': a 1011-byte
 * payload makes it 1024 bytes, so 8 fill one 8192-byte flush exactly. The
 * payloads differ (PostgreSQL folds identical notifications of one
 * transaction into one).
 */
#define NOTIFY_SIZE  1024
#define NOTIFY_COUNT 2000

START_TEST(test_unread_notifications)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 1 };
	char sql[256], held[256] = "";
	PGconn *direct;
	int hits = 0;

	snprintf(sql, sizeof(sql), "SELECT pg_notify('ch', repeat('x', %d) || "
		 "lpad(g::text, 5, '0')) FROM generate_series(1, %d) g",
		 NOTIFY_SIZE - 13 - 5, NOTIFY_COUNT);
	h_daemon_start(&d, &h_shared_pg, &o);
	direct = h_pg_connect(&h_shared_pg, NULL);
	for (int round = 0; round < MAX_ROUNDS && hits < HITS; round++) {
		char sqlstate[6];
		long long pid;
		int fd = raw_client(&d, &pid), rc;

		rc = h_raw_query(fd, "LISTEN ch", NULL, 0, sqlstate, 10000);
		h_assert(rc == 0, "LISTEN: rc %d [%s]", rc, sqlstate);
		h_exec_ok(direct, sql);
		note_held(round, leave_unread(direct, pid, fd, (size_t)NOTIFY_SIZE * NOTIFY_COUNT,
					      round_tail(round)), &hits, held, sizeof(held));
		close(fd);
		clients_get_clean_server(&d, round, 20);
	}
	h_assert(hits > 0, "test precondition: no round left pgberth holding a tail (bytes held "
		 "per round:%s)", held);
	PQfinish(direct);
	h_daemon_stop_ok(&d);
}
END_TEST

/*
 * The same with a 6 MB query result, whose tail ends with CommandComplete
 * and ReadyForQuery: when pgberth holds it, no reply is owed any more.
 * When the client read nothing the server is still sending and pgberth
 * must drain it. `SELECT repeat('x', 21)` makes the RowDescription and
 * every DataRow 32 bytes.
 */
#define RESULT_ROWS 200000

START_TEST(test_unread_result)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 1 };
	char sql[128], tag[32], held[256] = "", *msg;
	size_t msglen, total;
	PGconn *direct;
	int hits = 0;

	snprintf(sql, sizeof(sql), "SELECT repeat('x', 21) FROM generate_series(1, %d)", RESULT_ROWS);
	snprintf(tag, sizeof(tag), "SELECT %d", RESULT_ROWS);
	/* RowDescription, DataRows, CommandComplete, ReadyForQuery */
	total = 32 + (size_t)RESULT_ROWS * 32 + (5 + strlen(tag) + 1) + 6;
	msg = query_msg(sql, &msglen);

	h_daemon_start(&d, &h_shared_pg, &o);
	direct = h_pg_connect(&h_shared_pg, NULL);
	for (int round = 0; round < MAX_ROUNDS && hits < HITS; round++) {
		long long pid;
		int fd = raw_client(&d, &pid);

		h_assert(h_raw_send(fd, msg, msglen) == 0, "send the query");
		note_held(round, leave_unread(direct, pid, fd, total, round_tail(round)), &hits, held,
			  sizeof(held));
		close(fd);
		clients_get_clean_server(&d, round, 20);
	}
	h_assert(hits > 0, "test precondition: no round left pgberth holding a tail (bytes held "
		 "per round:%s)", held);
	free(msg);
	PQfinish(direct);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- release: cancel, Terminate, COPY -------------------------------- */

/* PQcancel on c's connection to pgberth, bounded by a deadline. */
/*
 * Client A cancels its pg_sleep, reads the 57014 and the end of the result,
 * and leaves at once with a clean Terminate, while pgberth's own PQcancel
 * may still be running on its thread pool. Client B then gets the same
 * server and none of its queries is cancelled by anything of A's.
 *
 * A guard rather than a reproduction: PostgreSQL signals the backend
 * before it closes the cancel connection, so A's 57014 proves the cancel
 * has landed, and the old daemon (which parked the server with its
 * PQcancel still running) passed this too. B's queries sleep 0.2 s: a late
 * cancel would come within milliseconds of B's start.
 */
START_TEST(test_cancel_then_leave)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 1 };
	char sql[128], what[512];
	PGconn *direct;

	h_daemon_start(&d, &h_shared_pg, &o);
	direct = h_pg_connect(&h_shared_pg, NULL);
	for (int round = 0; round < 3; round++) {
		PGconn *a = h_connect(&d, NULL), *b;
		long long pid = h_backend_pid(a);
		PGresult *r;

		snprintf(sql, sizeof(sql), "SELECT pg_sleep(5) /* regress-cancel-%d */", round);
		h_assert(PQsendQuery(a, sql), "send: %s", PQerrorMessage(a));
		snprintf(sql, sizeof(sql), "SELECT count(*) = 1 FROM pg_stat_activity WHERE pid = %lld "
			 "AND state = 'active' AND query LIKE '%%regress-cancel-%d */'", pid, round);
		h_assert(h_poll_until(direct, sql, 10000), "round %d: pg_sleep never started", round);
		h_cancel(a);
		r = h_result_try(a, 10000);
		h_assert(r && PQresultStatus(r) == PGRES_FATAL_ERROR &&
			 strcmp(h_sqlstate(r), "57014") == 0, "round %d: cancelled query gave %s",
			 round, describe(a, r, what, sizeof(what)));
		PQclear(r);
		PQfinish(a);

		b = h_connect(&d, NULL);
		h_assert(h_backend_pid(b) == pid, "round %d: B did not get A's server", round);
		for (int i = 0; i < 10; i++) {
			r = h_exec_try(b, "SELECT pg_sleep(0.2), 1", 5000);
			h_assert(r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
				 strcmp(PQgetvalue(r, 0, 1), "1") == 0,
				 "round %d, query %d of the next client: %s", round, i,
				 describe(b, r, what, sizeof(what)));
			PQclear(r);
		}
		PQfinish(b);
	}
	PQfinish(direct);
	h_daemon_stop_ok(&d);
}
END_TEST

/*
 * A client sends one Query and a Terminate right behind it, then closes.
 * On a direct connection PostgreSQL runs the query to its end before it
 * reads the Terminate; through pgberth it must too (the INSERT after the
 * sleep happens, nothing cancels it). The pooled server is then reused.
 */
START_TEST(test_terminate_lets_query_finish)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 1 };
	static const char terminate[] = { 'X', 0, 0, 0, 4 };
	char buf[256];
	struct h_login l;
	PGconn *direct, *c;
	size_t n;
	int fd, rc;

	direct = h_pg_connect(&h_shared_pg, NULL);
	h_exec_ok(direct, "DROP TABLE IF EXISTS regress_term");
	h_exec_ok(direct, "CREATE TABLE regress_term(i int)");
	h_daemon_start(&d, &h_shared_pg, &o);

	fd = h_raw_connect(d.sockpath);
	h_assert(fd >= 0, "connect: %s", strerror(errno));
	rc = h_raw_login(fd, appdb_kv, &l, 10000);
	h_assert(rc == 0, "login: rc %d [%s] %s", rc, l.sqlstate, l.message);
	{
		static const char sql[] = "SELECT pg_sleep(0.3); INSERT INTO regress_term VALUES (42)";

		n = h_put_msg(buf, 0, 'Q', sql, sizeof(sql));
		memcpy(buf + n, terminate, sizeof(terminate));
		n += sizeof(terminate);
	}
	h_assert(h_raw_send(fd, buf, n) == 0, "send Query + Terminate");
	close(fd);

	h_assert(h_poll_until(direct, "SELECT count(*) = 1 FROM regress_term WHERE i = 42", 5000),
		 "the INSERT sent before Terminate never happened (the query was cancelled)");

	int64_t t0 = h_now_ms();
	c = h_connect(&d, "connect_timeout=5");
	h_assert_value(c, "SELECT 1", "1");
	h_assert(h_now_ms() - t0 < 2000, "the next client waited %lld ms for the server",
		 (long long)(h_now_ms() - t0));
	PQfinish(c);
	h_exec_ok(direct, "DROP TABLE regress_term");
	PQfinish(direct);
	h_daemon_stop_ok(&d);
}
END_TEST

/*
 * COPY FROM STDIN through the extended protocol (PQsendQueryParams: Parse,
 * Bind, Describe, Execute, Sync). PostgreSQL ignores that Sync in copy-in
 * mode and answers the COPY with a single ReadyForQuery after the client's
 * CopyDone and Sync. The client then leaves: pgberth must not wait for a
 * second ReadyForQuery that never comes (the 5 s drain deadline, then a
 * closed server) but hand the same server to the next client at once.
 */
START_TEST(test_extended_copy_in_then_leave)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 1 };
	char what[512], line[32];
	PGconn *direct;

	direct = h_pg_connect(&h_shared_pg, NULL);
	h_exec_ok(direct, "DROP TABLE IF EXISTS regress_copy");
	h_exec_ok(direct, "CREATE TABLE regress_copy(a int, b text)");
	h_daemon_start(&d, &h_shared_pg, &o);
	for (int round = 0; round < 3; round++) {
		PGconn *c = h_connect(&d, NULL);
		long long pid = h_backend_pid(c);
		PGresult *r;
		int64_t t0;

		h_assert(PQsendQueryParams(c, "COPY regress_copy FROM STDIN", 0, NULL, NULL, NULL,
					     NULL, 0), "send: %s", PQerrorMessage(c));
		r = h_result_try(c, 10000);
		h_assert(r && PQresultStatus(r) == PGRES_COPY_IN, "round %d: COPY gave %s", round,
			 describe(c, r, what, sizeof(what)));
		PQclear(r);
		for (int i = 1; i <= 5; i++) {
			snprintf(line, sizeof(line), "%d\trow %d\n", i, i);
			h_assert(PQputCopyData(c, line, (int)strlen(line)) == 1, "put: %s",
				 PQerrorMessage(c));
		}
		h_assert(PQputCopyEnd(c, NULL) == 1, "end: %s", PQerrorMessage(c));
		r = h_result_try(c, 10000);
		h_assert(r && PQresultStatus(r) == PGRES_COMMAND_OK && strcmp(PQcmdTuples(r), "5") == 0,
			 "round %d: COPY result %s", round, describe(c, r, what, sizeof(what)));
		PQclear(r);
		PQfinish(c);

		t0 = h_now_ms();
		c = h_connect(&d, "connect_timeout=10");
		long long pid2 = h_backend_pid(c);
		int64_t waited = h_now_ms() - t0;

		h_assert(waited < 1000, "round %d: the next client waited %lld ms for the server",
			 round, (long long)waited);
		h_assert(pid2 == pid, "round %d: server not reused: backend %lld, then %lld", round,
			 pid, pid2);
		PQfinish(c);
	}
	h_assert_value(direct, "SELECT count(*) FROM regress_copy", "15");
	h_exec_ok(direct, "DROP TABLE regress_copy");
	PQfinish(direct);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- login ----------------------------------------------------------- */

/*
 * Multi-host conninfo with a dead first host: libpq moves on to the next
 * host with a new socket (often with the same fd number), and pgberth must
 * follow it at once rather than wait out server_connect_timeout (5 s in
 * the harness). Three clients held at once, so each one is a new server
 * login. First hosts: a socket directory with nothing in it, and TCP to a
 * refused port on 127.0.0.1. The TCP one is what used to wait out the
 * deadline (its connect is in progress when pgberth first watches the
 * socket); libpq gives up on the empty directory inside
 * PQconnectStartParams, before pgberth watches anything.
 */
/*
 * A client that vanishes in the middle of COPY FROM STDIN (rows sent, no
 * CopyDone): pgberth ends the COPY itself (CopyFail, then Sync), so the
 * rows are not stored and the same server serves the next client at once.
 * _i: 0 simple protocol, 1 extended protocol.
 */
START_TEST(test_copy_in_client_vanishes)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 1 };
	char what[512], line[32];
	PGconn *direct;

	direct = h_pg_connect(&h_shared_pg, NULL);
	h_exec_ok(direct, "DROP TABLE IF EXISTS regress_vanish");
	h_exec_ok(direct, "CREATE TABLE regress_vanish(a int, b text)");
	h_daemon_start(&d, &h_shared_pg, &o);
	for (int round = 0; round < 2; round++) {
		PGconn *c = h_connect(&d, NULL);
		long long pid = h_backend_pid(c);
		PGresult *r;
		int ok = _i == 0 ? PQsendQuery(c, "COPY regress_vanish FROM STDIN")
				 : PQsendQueryParams(c, "COPY regress_vanish FROM STDIN", 0, NULL, NULL,
						     NULL, NULL, 0);

		h_assert(ok, "send: %s", PQerrorMessage(c));
		r = h_result_try(c, 10000);
		h_assert(r && PQresultStatus(r) == PGRES_COPY_IN, "COPY gave %s",
			 describe(c, r, what, sizeof(what)));
		PQclear(r);
		for (int i = 1; i <= 5; i++) {
			snprintf(line, sizeof(line), "%d\trow %d\n", i, i);
			h_assert(PQputCopyData(c, line, (int)strlen(line)) == 1, "put: %s",
				 PQerrorMessage(c));
		}
		h_assert(PQflush(c) == 0, "flush: %s", PQerrorMessage(c));
		shutdown(PQsocket(c), SHUT_RDWR);       /* vanish: no CopyDone, no Terminate */
		PQfinish(c);

		int64_t t0 = h_now_ms();
		c = h_connect(&d, "connect_timeout=10");
		long long pid2 = h_backend_pid(c);
		int64_t waited = h_now_ms() - t0;

		h_assert(waited < 1000, "round %d: the next client waited %lld ms", round,
			 (long long)waited);
		h_assert(pid2 == pid, "round %d: server not reused: backend %lld, then %lld", round,
			 pid, pid2);
		h_assert_value(c, "SELECT count(*) FROM regress_vanish", "0");
		PQfinish(c);
	}
	h_exec_ok(direct, "DROP TABLE regress_vanish");
	PQfinish(direct);
	h_daemon_stop_ok(&d);
}
END_TEST

START_TEST(test_multi_host_conninfo)
{
	static const char *const dbs[] = { "mh_unix", "mh_tcp" };
	struct h_daemon d;
	struct h_daemon_opts o = { 0 };
	char *empty = h_mkdtemp("nohost"), *extra_dbs = NULL;

	h_assert(asprintf(&extra_dbs,
			  "  mh_unix:\n"
			  "    conninfo: \"host=%s,@PGHOST@ port=1,@PGPORT@ dbname=appdb\"\n"
			  "    pool_size: 3\n"
			  "  mh_tcp:\n"
			  "    conninfo: \"host=127.0.0.1,@PGHOST@ port=1,@PGPORT@ dbname=appdb\"\n"
			  "    pool_size: 3\n", empty) > 0, "asprintf");
	o.extra_dbs = extra_dbs;
	h_daemon_start(&d, &h_shared_pg, &o);
	for (size_t i = 0; i < sizeof(dbs) / sizeof(dbs[0]); i++) {
		PGconn *held[3];
		char extra[64];

		snprintf(extra, sizeof(extra), "dbname=%s connect_timeout=10", dbs[i]);
		for (int k = 0; k < 3; k++) {
			int64_t t0 = h_now_ms();

			held[k] = h_connect_try(&d, extra);
			h_assert(PQstatus(held[k]) == CONNECTION_OK, "%s, client %d: %s", dbs[i], k,
				 PQerrorMessage(held[k]));
			h_assert(h_now_ms() - t0 < 2000, "%s, client %d: login took %lld ms", dbs[i], k,
				 (long long)(h_now_ms() - t0));
			h_assert_value(held[k], "SELECT current_database() || ':' || 6 * 7", "appdb:42");
		}
		for (int k = 0; k < 3; k++)
			PQfinish(held[k]);
	}
	h_daemon_stop_ok(&d);
	free(extra_dbs);
	free(empty);
}
END_TEST

/*
 * A startup parameter whose name cannot be a setting ("bad name!", or
 * "bad!name" in options) is refused as PostgreSQL would refuse it, naming
 * it, not as "out of memory" (53200, which tells a user to look in the
 * wrong place). The daemon goes on serving.
 */
START_TEST(test_bad_parameter_name)
{
	static const struct {
		const char *key;
		const char *value;
		const char *name;          /* what the message must mention */
	} cases[] = {
		{ "bad name!", "x", "bad name!" },
		{ "options", "-c bad!name=x", "bad!name" },
	};
	struct h_daemon d;
	PGconn *c;

	h_daemon_start(&d, &h_shared_pg, NULL);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *kv[] = { "user", H_SUPERUSER, "database", "appdb",
				     cases[i].key, cases[i].value, NULL };
		struct h_login l;
		int fd = h_raw_connect(d.sockpath), rc;

		h_assert(fd >= 0, "connect: %s", strerror(errno));
		rc = h_raw_login(fd, kv, &l, 10000);
		h_assert(rc == 1, "%s=%s: login rc %d, expected an ErrorResponse", cases[i].key,
			 cases[i].value, rc);
		h_assert(strcmp(l.sqlstate, "53200") != 0, "%s=%s: refused as out of memory: %s",
			 cases[i].key, cases[i].value, l.message);
		h_assert(strcmp(l.sqlstate, "42704") == 0 || strcmp(l.sqlstate, "08P01") == 0,
			 "%s=%s: SQLSTATE %s (%s), expected 42704 or 08P01", cases[i].key,
			 cases[i].value, l.sqlstate, l.message);
		h_assert(strstr(l.message, cases[i].name) != NULL,
			 "%s=%s: the message does not name the parameter: %s", cases[i].key,
			 cases[i].value, l.message);
		h_assert(h_raw_wait_eof(fd, 5000) == 0, "%s=%s: connection left open", cases[i].key,
			 cases[i].value);
		close(fd);
	}
	c = h_connect(&d, NULL);
	h_assert_value(c, "SELECT 'still serving'", "still serving");
	PQfinish(c);
	h_daemon_stop_ok(&d);
}
END_TEST

/*
 * Review finding: a transaction-mode client with application_name set
 * (so its first transaction applies a SET, with setup_for_client on) that
 * sends a query and hangs up at once: the server's reset then reported
 * parameters to a client that was gone, and the daemon crashed.
 */
START_TEST(test_leave_during_settings)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .workers = 1, .pool_size = 1, .pool_mode = "transaction" };
	PGconn *c;

	h_daemon_start(&d, &h_shared_pg, &o);
	c = h_connect(&d, NULL);    /* the pool learns its defaults */
	h_exec_ok(c, "SELECT 1");
	PQfinish(c);
	for (int i = 0; i < 100 && !h_daemon_exited(&d); i++) {
		c = h_connect(&d, "application_name=leaver");
		h_assert(PQsendQuery(c, "SELECT 1") == 1, "send: %s", PQerrorMessage(c));
		PQflush(c);
		shutdown(PQsocket(c), SHUT_RDWR);
		PQfinish(c);
	}
	h_assert(!h_daemon_exited(&d), "pgberth died while clients left during their settings");
	c = h_connect(&d, "application_name=stayer");
	h_assert_value(c, "SELECT current_setting('application_name')", "stayer");
	PQfinish(c);
	h_daemon_stop_ok(&d);
}
END_TEST

/*
 * Review finding: a client that sent Parse without Sync and went quiet held
 * its server with no timeout at all. It is idle in a transaction: the
 * idle_transaction_timeout closes it and the server serves the next client.
 */
START_TEST(test_unsynced_client_times_out)
{
	struct h_daemon d;
	struct h_daemon_opts o = {
		.pool_size = 1, .pool_mode = "transaction",
		.extra_top = "idle_transaction_timeout: 500ms\n",
	};
	struct h_login l;
	char buf[256];
	static const char parse[] = "\0SELECT 1\0\0\0";     /* unnamed, no parameter types */
	int fd, rc;
	size_t n;
	int64_t t0;
	PGconn *c;

	h_daemon_start(&d, &h_shared_pg, &o);
	fd = h_raw_connect(d.sockpath);
	h_assert(fd >= 0, "connect");
	rc = h_raw_login(fd, appdb_kv, &l, 10000);
	h_assert(rc == 0, "raw login: rc %d [%s] %s", rc, l.sqlstate, l.message);
	n = h_put_msg(buf, 0, 'P', parse, sizeof(parse) - 1);
	h_assert(h_raw_send(fd, buf, n) == 0, "send Parse");
	t0 = h_now_ms();
	h_assert(h_raw_wait_eof(fd, 5000) == 0, "a client idle after Parse without Sync was not closed");
	h_assert(h_now_ms() - t0 >= 400, "closed after %lld ms, before idle_transaction_timeout",
		 (long long)(h_now_ms() - t0));
	close(fd);
	c = h_connect(&d, NULL);
	h_assert_value(c, "SELECT 'served'", "served");
	PQfinish(c);
	h_daemon_stop_ok(&d);
}
END_TEST

/*
 * What a client SETs, reported by the server or not, follows it to every
 * server it gets in transaction mode, as on its own connection: JDBC's
 * setTransactionIsolation (SET SESSION CHARACTERISTICS), a
 * statement_timeout. RESET takes it back. The other client of the single
 * server never sees them (the server is reset first), nor a custom
 * setting (which pg_settings does not list, so it does not follow), as it
 * would with a pooler that only tracks reported parameters.
 */
START_TEST(test_set_follows_client)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .workers = 1, .pool_size = 1, .pool_mode = "transaction" };
	char *def = h_pg_setting("statement_timeout");
	PGconn *a, *b;

	h_daemon_start(&d, &h_shared_pg, &o);
	a = h_connect(&d, NULL);
	b = h_connect(&d, NULL);
	/* The second SET is for this transaction only: it must not be
	 * carried (set_config of it fails in the next one). */
	h_exec_ok(a, "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE; "
	          "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE");
	h_exec_ok(a, "SET statement_timeout = '1234ms'");
	h_exec_ok(a, "SET regress.tenant = 'A'");
	for (int i = 0; i < 3; i++) {
		/* b in between: the server is reset for it, and a's come back. */
		h_assert_value(b, "SHOW transaction_isolation", "read committed");
		h_assert_value(b, "SHOW statement_timeout", def);
		h_assert_value(b, "SELECT current_setting('regress.tenant', true) IS DISTINCT FROM 'A'", "t");
		h_assert_value(a, "SHOW transaction_isolation", "serializable");
		h_assert_value(a, "SHOW statement_timeout", "1234ms");
	}
	h_exec_ok(a, "RESET statement_timeout");
	h_assert_value(b, "SHOW statement_timeout", def);
	h_assert_value(a, "SHOW statement_timeout", def);
	h_assert_value(a, "SHOW transaction_isolation", "serializable");
	/* The same settings on b: a and b share the server as they are. */
	h_exec_ok(b, "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE");
	h_assert_value(a, "SHOW transaction_isolation", "serializable");
	h_assert_value(b, "SHOW transaction_isolation", "serializable");
	h_exec_ok(b, "SET statement_timeout = '4321ms'");
	h_assert_value(a, "SHOW statement_timeout", def);
	h_assert_value(b, "SHOW statement_timeout", "4321ms");
	h_assert_value(a, "SHOW transaction_isolation", "serializable");
	PQfinish(a);
	PQfinish(b);
	free(def);
	h_daemon_stop_ok(&d);
}
END_TEST

/*
 * A setting bigger than the relay buffer (a 40 KB search_path): reading
 * it back must not fail the client (the row that holds it is skipped, and
 * the setting stays with that server connection as one too long to
 * carry), and the client's next queries run.
 */
START_TEST(test_huge_setting)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .workers = 1, .pool_size = 1, .pool_mode = "transaction" };
	size_t n = 40 * 1024;
	char *sql = malloc(n + 64), *p;
	PGconn *a, *b;

	p = sql + sprintf(sql, "SET search_path = ");
	for (int i = 0; (size_t)(p - sql) < n; i++)
		p += sprintf(p, "%sregress_schema_%05d", i ? ", " : "", i);
	h_daemon_start(&d, &h_shared_pg, &o);
	a = h_connect(&d, NULL);
	b = h_connect(&d, NULL);
	h_exec_ok(a, sql);
	h_assert_value(a, "SELECT length(current_setting('search_path')) > 40000", "t");
	h_assert_value(a, "SELECT 'a after'", "a after");
	h_assert_value(b, "SELECT length(current_setting('search_path')) < 1000", "t");
	h_assert_value(a, "SELECT 'a again'", "a again");
	PQfinish(a);
	PQfinish(b);
	free(sql);
	h_daemon_stop_ok(&d);
}
END_TEST

/*
 * What the settings read back cannot see is kept from the startup packet
 * (a role given as -c role=...), and DISCARD ALL takes the client back to
 * its startup settings, as on a direct connection.
 */
START_TEST(test_read_back_keeps_startup)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .workers = 1, .pool_size = 1, .pool_mode = "transaction" };
	char *def = h_pg_setting("statement_timeout"), *wm = h_pg_setting("work_mem");
	char want[128];
	PGconn *a, *b;

	h_create_role("regress_low");
	h_pg_exec("GRANT regress_low TO " H_SUPERUSER);
	h_daemon_start(&d, &h_shared_pg, &o);
	a = h_connect(&d, "options='-c role=regress_low -c work_mem=8MB'");
	b = h_connect(&d, NULL);
	char *me = h_query_value(b, "SELECT current_user");
	h_assert_value(a, "SELECT current_user", "regress_low");
	h_exec_ok(a, "SET statement_timeout = '1234ms'");
	for (int i = 0; i < 2; i++) {
		h_assert_value(b, "SELECT current_user", me);
		h_assert_value(b, "SHOW work_mem", wm);
		h_assert_value(a, "SELECT current_user || ' ' || current_setting('work_mem') || ' ' || "
		               "current_setting('statement_timeout')", "regress_low 8MB 1234ms");
	}
	h_exec_ok(a, "DISCARD ALL");
	h_assert_value(b, "SHOW statement_timeout", def);
	snprintf(want, sizeof(want), "regress_low 8MB %s", def);
	h_assert_value(a, "SELECT current_user || ' ' || current_setting('work_mem') || ' ' || "
	               "current_setting('statement_timeout')", want);
	free(me);
	free(def);
	free(wm);
	PQfinish(a);
	PQfinish(b);
	h_daemon_stop_ok(&d);
}
END_TEST

/*
 * SET ROLE and SET SESSION AUTHORIZATION end in a "SET" tag like any SET,
 * but RESET ALL leaves both alone: the next client of that server would
 * run as the role the previous one took.
 */
START_TEST(test_role_does_not_leak)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .workers = 1, .pool_size = 1, .pool_mode = "transaction" };
	PGconn *a, *b;

	h_create_role("regress_low");
	h_daemon_start(&d, &h_shared_pg, &o);
	a = h_connect(&d, NULL);
	b = h_connect(&d, NULL);
	char *me = h_query_value(b, "SELECT current_user");
	char both[128];
	snprintf(both, sizeof(both), "%s %s", me, me);
	/* In one query: the next transaction of a does not keep it either. */
	h_assert_value(a, "SET ROLE regress_low; SELECT current_user", "regress_low");
	h_assert_value(b, "SELECT current_user", me);
	h_assert_value(a, "SET SESSION AUTHORIZATION regress_low; "
	               "SELECT session_user || ' ' || current_user", "regress_low regress_low");
	h_assert_value(b, "SELECT session_user || ' ' || current_user", both);
	PQfinish(a);
	h_assert_value(b, "SELECT current_user", me);
	free(me);
	PQfinish(b);
	h_daemon_stop_ok(&d);
}
END_TEST

static void assert_prepared(PGconn *c, const char *name, const char *want, const char *state)
{
	PGresult *r = PQexecPrepared(c, name, 0, NULL, NULL, NULL, 0);

	if (want != NULL)
		h_assert(PQresultStatus(r) == PGRES_TUPLES_OK && strcmp(PQgetvalue(r, 0, 0), want) == 0,
			 "statement %s: %s [%s] %s, expected \"%s\"", name, PQresStatus(PQresultStatus(r)),
			 h_sqlstate(r), PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0) : "",
			 want);
	else
		h_assert(strcmp(h_sqlstate(r), state) == 0, "statement %s: %s [%s], expected %s", name,
			 PQresStatus(PQresultStatus(r)), h_sqlstate(r), state);
	PQclear(r);
}

/*
 * Named prepared statements that are not tracked (SQL PREPARE, or any with
 * max_prepared_statements: 0) do not follow a client in transaction mode,
 * but one client's must never run for another client of that server:
 * drivers pick the same names (_pg3_0, __asyncpg_stmt_1__), and a Bind of
 * one would run the other client's query, with wrong results and no
 * error. It must fail as on a direct connection (26000), and the name be
 * free to prepare. (Tracked ones follow the client: check_e2e_pstmt.) The same for the
 * other session state that outlives a transaction: a temporary table, a
 * WITH HOLD cursor, a LISTEN.
 */
START_TEST(test_session_state_not_shared)
{
	struct h_daemon d;
	/* Without tracking: named statements stay on their server. */
	struct h_daemon_opts o = { .workers = 1, .pool_size = 1, .pool_mode = "transaction",
				   .extra_top = "max_prepared_statements: 0\n" };
	PGconn *a, *b;
	PGresult *r;

	h_daemon_start(&d, &h_shared_pg, &o);
	a = h_connect(&d, NULL);
	b = h_connect(&d, NULL);
	r = PQprepare(a, "s1", "SELECT 'from a'", 0, NULL);
	h_assert(PQresultStatus(r) == PGRES_COMMAND_OK, "prepare: [%s]", h_sqlstate(r));
	PQclear(r);
	assert_prepared(a, "s1", "from a", NULL);   /* its own, on the same server */
	assert_prepared(b, "s1", NULL, "26000");
	r = PQprepare(b, "s1", "SELECT 'from b'", 0, NULL);
	h_assert(PQresultStatus(r) == PGRES_COMMAND_OK, "prepare of the same name: [%s]",
		 h_sqlstate(r));
	PQclear(r);
	assert_prepared(b, "s1", "from b", NULL);
	assert_prepared(a, "s1", NULL, "26000");
	h_exec_ok(a, "PREPARE sql_a AS SELECT 'sql a'");
	h_exec_fails(b, "EXECUTE sql_a", "26000");

	h_exec_ok(a, "CREATE TEMP TABLE regress_tmp (x int)");
	h_exec_fails(b, "SELECT count(*) FROM regress_tmp", "42P01");
	h_exec_ok(a, "BEGIN; DECLARE regress_cur CURSOR WITH HOLD FOR SELECT 1; COMMIT");
	h_exec_fails(b, "FETCH regress_cur", "34000");
	h_exec_ok(a, "LISTEN regress_ch");
	h_exec_ok(b, "SELECT pg_notify('regress_ch', 'for a')");
	PGnotify *n = PQnotifies(b);
	h_assert(n == NULL, "b got a notification for the channel a listened on");
	PQfinish(a);
	PQfinish(b);
	h_daemon_stop_ok(&d);
}
END_TEST

/*
 * A list in a startup option (-c search_path=a,b) is a list on every server
 * the client gets, as it is on a direct connection, not one schema named
 * "a,b".
 */
START_TEST(test_list_startup_option)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .workers = 1, .pool_size = 1, .pool_mode = "transaction" };
	PGconn *a, *b;

	h_pg_exec("CREATE SCHEMA IF NOT EXISTS regress_s1; "
	          "CREATE TABLE IF NOT EXISTS regress_s1.only_in_s1 (x int)");
	h_daemon_start(&d, &h_shared_pg, &o);
	a = h_connect(&d, "options='-c search_path=regress_s1,public'");
	b = h_connect(&d, NULL);
	for (int i = 0; i < 3; i++) {
		h_assert_value(a, "SELECT pg_catalog.current_schemas(false)::text", "{regress_s1,public}");
		h_assert_value(a, "SELECT count(*) FROM only_in_s1", "0");
		h_exec_fails(b, "SELECT count(*) FROM only_in_s1", "42P01");
	}
	PQfinish(a);
	PQfinish(b);
	h_daemon_stop_ok(&d);
}
END_TEST

/*
 * A backend terminated under a query says why (FATAL 57P01) and closes:
 * the client gets that one error and the close, as on a direct
 * connection, not a second FATAL from pgberth after it (node-postgres
 * fires an error event for each).
 */
START_TEST(test_server_fatal_told_once)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .workers = 1, .pool_mode = "transaction" };
	struct h_msg m;
	char state[8];
	int fd, rc, errors = 0;
	PGconn *direct;

	h_daemon_start(&d, &h_shared_pg, &o);
	direct = h_pg_connect(&h_shared_pg, NULL);
	fd = h_raw_client(&d, "appdb", NULL);
	h_assert(h_raw_send_query(fd, "SELECT pg_sleep(30) /* regress told once */") == 0, "send");
	h_assert(h_poll_until(direct, "SELECT count(*) = 1 FROM pg_stat_activity WHERE state = "
			      "'active' AND query LIKE '%regress told once */'", 10000),
		 "pg_sleep never started");
	h_exec_ok(direct, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
		  "WHERE query LIKE '%regress told once */' AND pid <> pg_backend_pid()");
	while ((rc = h_raw_read_msg(fd, &m, 10000)) == 1) {
		if (m.type == 'E') {
			h_msg_field(&m, 'C', state, sizeof(state));
			h_assert(errors == 0, "a second ErrorResponse (%s) after the server's", state);
			h_assert(strcmp(state, "57P01") == 0, "the error: %s, expected 57P01", state);
			errors++;
		}
		h_msg_free(&m);
	}
	h_assert(rc == 0, "no close after the error (rc %d)", rc);
	h_assert(errors == 1, "no ErrorResponse before the close");
	close(fd);
	PQfinish(direct);
	h_assert_serves(&d);
	h_daemon_stop_ok(&d);
}
END_TEST

/* Bytes sent on fd that the daemon has not read yet (SIOCOUTQ on a Unix socket). */
static int unread_by_daemon(int fd)
{
	int n = -1;

	h_assert(ioctl(fd, SIOCOUTQ, &n) == 0, "SIOCOUTQ: %s", strerror(errno));
	return n;
}

static void wait_read_by_daemon(int fd)
{
	int64_t deadline = h_now_ms() + 10000;

	while (unread_by_daemon(fd) > 0) {
		h_assert(h_now_ms() < deadline, "pgberth did not read the query within 10 s");
		h_sleep_ms(1);
	}
}

/*
 * A cancel connection closes only once the cancel reached PostgreSQL, as
 * the postmaster closes it only after signalling the backend: libpq and
 * other drivers take the close to mean that, and one that went on earlier
 * saw the cancel hit its next query. With the postmaster stopped
 * (SIGSTOP), pgberth's own cancel cannot get through, so the client's must
 * stay open; once it is let go, the query ends with 57014.
 */
START_TEST(test_cancel_closes_when_delivered)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .workers = 2, .pool_mode = "transaction" };
	struct h_cancel_job job, job2;
	PGconn *c, *direct;
	PGresult *r;

	h_daemon_start(&d, &h_shared_pg, &o);
	c = h_connect(&d, NULL);
	direct = h_pg_connect(&h_shared_pg, NULL);
	h_send_query(c, "SELECT pg_sleep(60) /* regress cancel */");
	h_assert(h_poll_until(direct, "SELECT count(*) >= 1 FROM pg_stat_activity WHERE state = "
			      "'active' AND query LIKE '%regress cancel */' AND pid <> pg_backend_pid()",
			      10000), "pg_sleep(60) never started on the server");
	h_assert(kill(h_shared_pg.pid, SIGSTOP) == 0, "SIGSTOP: %s", strerror(errno));
	h_cancel_start(c, &job);
	bool early = h_cancel_wait(&job, 300);
	/* A second cancel (the impatient user) while the first is on its
	 * way waits for that one too. */
	h_cancel_start(c, &job2);
	bool early2 = h_cancel_wait(&job2, 300);
	kill(h_shared_pg.pid, SIGCONT);
	h_assert(!early, "the cancel connection closed before the cancel could reach PostgreSQL");
	h_assert(!early2, "the second cancel connection closed before the cancel reached PostgreSQL");
	h_assert(h_cancel_wait(&job, 10000) && h_cancel_wait(&job2, 10000),
		 "a cancel connection still open 10 s after PostgreSQL was let go");
	h_assert(job.ok == 1 && job2.ok == 1, "PQcancel: %s %s", job.err, job2.err);
	r = h_result_try(c, 10000);
	h_assert(r != NULL && strcmp(h_sqlstate(r), "57014") == 0, "the cancelled query: [%s]",
		 r ? h_sqlstate(r) : "no result");
	PQclear(r);
	while ((r = PQgetResult(c)) != NULL)
		PQclear(r);
	h_assert_value(c, "SELECT 'after'", "after");
	PQfinish(direct);
	PQfinish(c);
	h_daemon_stop_ok(&d);
}
END_TEST

/*
 * A cancel for a query still waiting for a server: the query must never
 * run, and the client gets 57014 at once, as when PostgreSQL cancels it,
 * instead of its query running whenever a server comes free.
 */
START_TEST(test_cancel_queued_query)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .workers = 2, .pool_size = 1, .pool_mode = "transaction" };
	PGconn *holder, *c;
	PGresult *r;

	h_pg_exec("DROP TABLE IF EXISTS regress_cq; CREATE TABLE regress_cq (x int)");
	h_daemon_start(&d, &h_shared_pg, &o);
	holder = h_connect(&d, NULL);
	c = h_connect(&d, NULL);
	h_exec_ok(holder, "BEGIN");
	h_exec_ok(holder, "SELECT 1");          /* holds the only server */
	h_send_query(c, "INSERT INTO regress_cq VALUES (1)");
	wait_read_by_daemon(PQsocket(c));
	h_cancel(c);
	r = h_result_try(c, 5000);
	h_assert(r != NULL, "no answer to the cancelled query while it waits");
	h_assert(strcmp(h_sqlstate(r), "57014") == 0, "the cancelled query: %s [%s]",
		 PQresStatus(PQresultStatus(r)), h_sqlstate(r));
	PQclear(r);
	h_assert(PQgetResult(c) == NULL, "more than one result");
	h_exec_ok(holder, "COMMIT");
	h_assert_value(c, "SELECT count(*) FROM regress_cq", "0");
	h_assert_value(holder, "SELECT count(*) FROM regress_cq", "0");
	PQfinish(holder);
	PQfinish(c);
	h_daemon_stop_ok(&d);
}
END_TEST

/*
 * Query, Terminate and close while the query waits for a server: it still
 * runs, as it would on a direct connection.
 */
START_TEST(test_terminate_while_waiting)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .workers = 1, .pool_size = 1, .pool_mode = "transaction" };
	static const char q[] = "INSERT INTO regress_tw VALUES (1)";
	char buf[128];
	size_t n;
	PGconn *holder, *direct;
	int fd;

	h_pg_exec("DROP TABLE IF EXISTS regress_tw; CREATE TABLE regress_tw (x int)");
	h_daemon_start(&d, &h_shared_pg, &o);
	holder = h_connect(&d, NULL);
	h_exec_ok(holder, "BEGIN");
	h_exec_ok(holder, "SELECT 1");
	fd = h_raw_client(&d, "appdb", NULL);
	n = h_put_msg(buf, 0, 'Q', q, sizeof(q));
	n = h_put_msg(buf, n, 'X', "", 0);
	h_assert(h_raw_send(fd, buf, n) == 0, "send");
	wait_read_by_daemon(fd);
	close(fd);
	/* A login after the close: the worker has seen the close by then. */
	PQfinish(h_connect(&d, NULL));
	h_exec_ok(holder, "COMMIT");
	direct = h_pg_connect(&h_shared_pg, NULL);
	h_assert(h_poll_until(direct, "SELECT count(*) = 1 FROM regress_tw", 10000),
		 "the query before Terminate never ran");
	PQfinish(direct);
	PQfinish(holder);
	h_daemon_stop_ok(&d);
}
END_TEST

static Suite *e2e_regress_suite(void)
{
	Suite *s = suite_create("e2e_regress");
	TCase *tc;

	tc = h_tcase("stale_bytes", 60);
	h_tcase_add_pg(tc);
	tcase_add_test(tc, test_unread_notifications);
	tcase_add_test(tc, test_unread_result);
	suite_add_tcase(s, tc);

	tc = h_tcase("release", 60);
	h_tcase_add_pg(tc);
	tcase_add_test(tc, test_cancel_then_leave);
	tcase_add_test(tc, test_terminate_lets_query_finish);
	tcase_add_test(tc, test_extended_copy_in_then_leave);
	tcase_add_loop_test(tc, test_copy_in_client_vanishes, 0, 2);
	tcase_add_test(tc, test_terminate_while_waiting);
	tcase_add_test(tc, test_server_fatal_told_once);
	suite_add_tcase(s, tc);

	tc = h_tcase("login", 60);
	h_tcase_add_pg(tc);
	tcase_add_test(tc, test_multi_host_conninfo);
	tcase_add_test(tc, test_bad_parameter_name);
	suite_add_tcase(s, tc);

	tc = h_tcase("transaction", 60);
	h_tcase_add_pg(tc);
	tcase_add_test(tc, test_leave_during_settings);
	tcase_add_test(tc, test_unsynced_client_times_out);
	tcase_add_test(tc, test_role_does_not_leak);
	tcase_add_test(tc, test_set_follows_client);
	tcase_add_test(tc, test_read_back_keeps_startup);
	tcase_add_test(tc, test_huge_setting);
	tcase_add_test(tc, test_list_startup_option);
	tcase_add_test(tc, test_session_state_not_shared);
	suite_add_tcase(s, tc);

	tc = h_tcase("cancel", 60);
	h_tcase_add_pg(tc);
	tcase_add_test(tc, test_cancel_closes_when_delivered);
	tcase_add_test(tc, test_cancel_queued_query);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return h_main(e2e_regress_suite());
}
