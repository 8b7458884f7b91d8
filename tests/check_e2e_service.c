/*
 * End to end, pgberth as a service: SIGHUP reloads (invalid files change
 * nothing; valid ones add and remove databases, resize pools, change
 * timeouts and conninfo in place; restart-only keys stay; fifty reloads
 * under pgbench fail no transaction), systemd's sd_notify protocol
 * (READY, RELOADING with MONOTONIC_USEC, STOPPING, STATUS, WATCHDOG) and
 * socket activation (LISTEN_FDS, a socket that outlives the daemon), the
 * graceful drain on SIGTERM in transaction and session mode, the bounds on
 * stopping (a query that never ends, a frozen PostgreSQL, a second signal),
 * and pause/resume on SIGUSR1/SIGUSR2.
 *
 * The test plays systemd's part where there is one: it binds the notify
 * socket and reads the datagrams, or creates and holds the listening
 * socket and hands it to the daemon as fd 3.
 *
 * Synchronisation: on events only. A valid reload is waited for by polling
 * until its effect shows (a database that becomes reachable, a waiting
 * client that gets served); where the effect shows only later, the reload
 * carries a marker database to poll for, which tells that the whole file
 * was applied (a reload is atomic). An invalid reload is waited for by the
 * error location it must log. A pause is waited for by a probe query that
 * stays unanswered on an otherwise free pool. Negative checks ("still
 * waiting") watch for WAIT_MS. The one paced loop is the reload storm,
 * whose assertions are not about time.
 *
 * Pooled clients log in as roles of their own (created here directly in
 * PostgreSQL), so pg_stat_activity counts of a role are exactly the pool's
 * servers.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define TXN "transaction"

#define WAIT_MS   300     /* how long a client that must wait is watched */
#define SETTLE_MS 5000    /* bound on a reload's effect showing */
#define NOTIFY_MS 5000    /* bound on a datagram the daemon owes */

/* A database entry that a reload adds: reaching it tells the file was applied. */
#define MARKER_DB(name) \
	"  " name ":\n" \
	"    conninfo: \"host=@PGHOST@ port=@PGPORT@ dbname=appdb\"\n" \
	"    pool_size: 1\n" \
	"    pool_mode: transaction\n"

/* ---- helpers --------------------------------------------------------- */

/* Client backends matching where, not counting the asking connection. */
static long long count_backends(PGconn *direct, const char *where)
{
	char sql[512];

	snprintf(sql, sizeof(sql), "SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
		 "'client backend' AND pid <> pg_backend_pid() AND %s", where);
	return h_query_ll(direct, sql);
}

/* Polls until exactly want backends match where; false at the deadline. */
static bool wait_backends(PGconn *direct, const char *where, long long want, int timeout_ms)
{
	int64_t deadline = h_now_ms() + timeout_ms;

	for (;;) {
		if (count_backends(direct, where) == want)
			return true;
		if (h_now_ms() >= deadline)
			return false;
		h_sleep_ms(10);
	}
}

static char *role_where(const char *role)
{
	static char where[128];

	snprintf(where, sizeof(where), "usename = '%s'", role);
	return where;
}

/* A raw login to db: 0 logged in, 1 refused (l->sqlstate), -1 other. */
static int raw_login_try(const struct h_daemon *d, const char *db, struct h_login *l)
{
	const char *kv[] = { "user", H_SUPERUSER, "database", db, NULL };
	int fd = h_raw_connect(d->sockpath), rc;

	memset(l, 0, sizeof(*l));
	if (fd < 0)
		return -1;
	rc = h_raw_login(fd, kv, l, 5000);
	close(fd);
	return rc;
}

static void assert_db_refused(const struct h_daemon *d, const char *db, const char *why)
{
	struct h_login l;
	int rc = raw_login_try(d, db, &l);

	h_assert(rc == 1 && strcmp(l.sqlstate, "3D000") == 0,
		 "%s: login to database \"%s\": rc %d [%s] %s, expected 3D000", why, db, rc,
		 l.sqlstate, l.message);
}

/* Polls until a login to db succeeds: a reload that adds db was applied. */
static bool wait_db(const struct h_daemon *d, const char *db, int timeout_ms)
{
	int64_t deadline = h_now_ms() + timeout_ms;

	for (;;) {
		struct h_login l;

		if (raw_login_try(d, db, &l) == 0)
			return true;
		if (h_now_ms() >= deadline)
			return false;
		h_sleep_ms(10);
	}
}

/* Asserts that the next thing on fd is FATAL 57P01 and then EOF. */
static void assert_raw_shutdown(int fd, int timeout_ms, const char *who)
{
	struct h_raw_error e;
	int rc = h_raw_wait_error(fd, timeout_ms, &e);

	h_assert(rc == 1 && strcmp(e.sqlstate, "57P01") == 0 && strcmp(e.severity, "FATAL") == 0,
		 "%s: expected FATAL 57P01, got %s (rc %d) [%s] %s", who,
		 rc == -2 ? "nothing" : rc == 0 ? "EOF" : e.severity, rc, e.sqlstate, e.message);
	h_assert(strstr(e.message, "shutting down") != NULL,
		 "%s: 57P01 says \"%s\", not that pgberth is shutting down", who, e.message);
	h_assert(h_raw_wait_eof(fd, 2000) == 0, "%s: connection still open after its 57P01", who);
}

/* text with the first from replaced by to; asserts from is there; caller frees. */
static char *replace(const char *text, const char *from, const char *to)
{
	const char *at = strstr(text, from);
	char *out;

	h_assert(at != NULL, "config text has no \"%s\"", from);
	h_assert(asprintf(&out, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from)) > 0,
		 "asprintf");
	return out;
}

/* 1-based line of the first needle in text. */
static int line_of(const char *text, const char *needle)
{
	const char *at = strstr(text, needle);
	int line = 1;

	h_assert(at != NULL, "config text has no \"%s\"", needle);
	for (const char *p = text; p < at; p++)
		line += *p == '\n';
	return line;
}

/*
 * True once the log past offset reports an error at <config>:LINE:COL:
 * (any line when line is 0), the form every config error must take.
 */
static bool wait_error_at(const struct h_daemon *d, long offset, int line, int timeout_ms)
{
	int64_t deadline = h_now_ms() + timeout_ms;
	size_t plen = strlen(d->config);

	for (;;) {
		char *text = h_read_file(d->log);
		const char *p = text && (long)strlen(text) >= offset ? text + offset : NULL;
		bool found = false;

		while (p && !found && (p = strstr(p, d->config)) != NULL) {
			int l = 0, col = 0, n = 0;

			p += plen;
			if (sscanf(p, ":%d:%d:%n", &l, &col, &n) == 2 && n > 0 && l > 0 && col > 0)
				found = line == 0 || l == line;
		}
		free(text);
		if (found)
			return true;
		if (h_now_ms() >= deadline)
			return false;
		h_sleep_ms(10);
	}
}

static void assert_running(struct h_daemon *d, const char *when)
{
	char desc[64];

	if (!h_daemon_exited(d))
		return;
	h_describe_status(d->status, desc, sizeof(desc));
	h_assert(false, "pgberth exited %s (%s)", when, desc);
}

/* ---- reload: invalid files ------------------------------------------- */

#define INV_ROLE "svc_inv"
#define NEWDB_YAML \
	"  newdb:\n" \
	"    conninfo: \"host=@PGHOST@ port=@PGPORT@ dbname=postgres\"\n" \
	"    pool_size: 2\n" \
	"    pool_mode: transaction\n"

/*
 * pool_size 2. Each broken file would also raise pool_size to 4 and add
 * newdb; after each, every error is logged as file:line:column, newdb is
 * still unknown (3D000), clients in and out of a transaction go on, and
 * at the end the cap is still 2.
 */
START_TEST(test_reload_invalid_changes_nothing)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 2, .pool_mode = TXN };
	struct h_daemon_opts o4 = { .pool_size = 4, .pool_mode = TXN, .extra_dbs = NEWDB_YAML };
	PGconn *keeper, *idle, *h[3], *direct;
	char *good4, *texts[4];
	const char *what[4] = { "a YAML syntax error", "an unknown key", "pool_size: -1",
				"an unknown key and a bad duration" };
	int lines[4][2] = { { 0 } };

	h_create_role(INV_ROLE);
	h_daemon_start(&d, &h_shared_pg, &o);
	keeper = h_connect_db(&d, "appdb", INV_ROLE);
	h_exec_ok(keeper, "BEGIN");
	h_assert_value(keeper, "SELECT 'open'", "open");
	idle = h_connect_db(&d, "appdb", INV_ROLE);
	h_assert_value(idle, "SELECT 'idle'", "idle");

	good4 = h_daemon_config_text(&d, &h_shared_pg, &o4);
	h_assert(asprintf(&texts[0], "%slisten: [6432\n", good4) > 0, "asprintf");
	texts[1] = replace(good4, "databases:\n", "bogus_key: 1\ndatabases:\n");
	lines[1][0] = line_of(texts[1], "bogus_key");
	texts[2] = replace(good4, "pool_size: 4", "pool_size: -1");
	lines[2][0] = line_of(texts[2], "pool_size: -1");
	{
		char *t = replace(good4, "databases:\n", "bogus_key: 1\ndatabases:\n");

		texts[3] = replace(t, "shutdown_timeout: 2s", "shutdown_timeout: soon");
		free(t);
		lines[3][0] = line_of(texts[3], "bogus_key");
		lines[3][1] = line_of(texts[3], "shutdown_timeout: soon");
	}

	for (int i = 0; i < 4; i++) {
		long offset = h_daemon_log_size(&d);

		h_daemon_reload(&d, texts[i]);
		for (int k = 0; k < 2; k++) {
			if (k == 1 && lines[i][1] == 0)
				break;
			char where[16] = "<line>";

			if (lines[i][k])
				snprintf(where, sizeof(where), "%d", lines[i][k]);
			h_assert(wait_error_at(&d, offset, lines[i][k], SETTLE_MS),
				 "reload of a file with %s: no error at %s:%s:<column>: logged within "
				 "%d ms", what[i], d.config, where, SETTLE_MS);
		}
		assert_running(&d, "after a reload of a broken file");
		assert_db_refused(&d, "newdb", what[i]);
		h_assert_value(keeper, "SELECT 'in txn'", "in txn");
		h_assert_value(idle, "SELECT 'between txns'", "between txns");
		free(texts[i]);
	}
	h_assert(PQtransactionStatus(keeper) == PQTRANS_INTRANS, "keeper lost its transaction");
	h_exec_ok(keeper, "COMMIT");
	PQfinish(keeper);
	PQfinish(idle);

	/* Still pool_size 2: two transactions get servers, the third waits. */
	direct = h_pg_connect(&h_shared_pg, NULL);
	for (int i = 0; i < 2; i++) {
		h[i] = h_connect_db(&d, "appdb", INV_ROLE);
		h_exec_ok(h[i], "BEGIN");
		h_assert_value(h[i], "SELECT 1", "1");
	}
	h[2] = h_connect_db(&d, "appdb", INV_ROLE);
	h_send_query(h[2], "SELECT 'third'");
	h_assert(h_still_waiting(h[2], WAIT_MS),
		 "a third transaction got a server: pool_size 4 of a rejected file was applied");
	h_assert(count_backends(direct, role_where(INV_ROLE)) == 2,
		 "PostgreSQL sees %lld backends of the pool, pool_size is 2",
		 count_backends(direct, role_where(INV_ROLE)));
	h_exec_ok(h[0], "COMMIT");
	h_assert_pending_value(h[2], "third client after a commit", "third");
	h_exec_ok(h[1], "COMMIT");
	for (int i = 0; i < 3; i++)
		PQfinish(h[i]);
	PQfinish(direct);
	free(good4);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- reload: databases ----------------------------------------------- */

#define OLDDB_YAML \
	"  olddb:\n" \
	"    conninfo: \"host=@PGHOST@ port=@PGPORT@ dbname=appdb application_name=olddb\"\n" \
	"    pool_size: 2\n" \
	"    pool_mode: transaction\n"

/*
 * olddb out, newdb in: newdb serves (on PostgreSQL's database "postgres"),
 * new clients of olddb get 3D000, the clients olddb had go on (between and
 * inside transactions) until they leave, and then its servers close.
 */
START_TEST(test_reload_databases)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 2, .pool_mode = TXN, .extra_dbs = OLDDB_YAML };
	struct h_daemon_opts o2 = { .pool_size = 2, .pool_mode = TXN, .extra_dbs = NEWDB_YAML };
	PGconn *oldc, *oldtx, *appc, *newc, *direct;
	char *text;

	h_daemon_start(&d, &h_shared_pg, &o);
	oldc = h_connect_db(&d, "olddb", NULL);
	h_assert_value(oldc, "SELECT current_database()", "appdb");
	oldtx = h_connect_db(&d, "olddb", NULL);
	h_exec_ok(oldtx, "BEGIN");
	h_assert_value(oldtx, "SELECT 'open'", "open");
	appc = h_connect_db(&d, "appdb", NULL);
	h_assert_value(appc, "SELECT 'app'", "app");
	assert_db_refused(&d, "newdb", "before the reload");

	text = h_daemon_config_text(&d, &h_shared_pg, &o2);
	h_daemon_reload(&d, text);
	free(text);
	h_assert(wait_db(&d, "newdb", SETTLE_MS),
		 "database newdb, added by a reload, not reachable within %d ms", SETTLE_MS);
	newc = h_connect_db(&d, "newdb", NULL);
	h_assert_value(newc, "SELECT current_database()", "postgres");
	assert_db_refused(&d, "olddb", "a database removed by the reload");

	/* olddb's own clients see nothing of it. */
	for (int i = 0; i < 3; i++)
		h_assert_value(oldc, "SELECT current_database()", "appdb");
	h_assert_value(oldtx, "SELECT 'still open'", "still open");
	h_exec_ok(oldtx, "COMMIT");
	h_assert_value(oldtx, "SELECT 'next txn'", "next txn");
	h_assert_value(appc, "SELECT 'app'", "app");
	PQfinish(oldc);
	PQfinish(oldtx);

	direct = h_pg_connect(&h_shared_pg, NULL);
	h_assert(wait_backends(direct, "application_name = 'olddb'", 0, SETTLE_MS),
		 "%lld server connections of the removed database olddb still open %d ms after "
		 "its last client left", count_backends(direct, "application_name = 'olddb'"),
		 SETTLE_MS);
	PQfinish(direct);
	PQfinish(appc);
	PQfinish(newc);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- reload: pool_size ----------------------------------------------- */

#define UP_ROLE "svc_up"

/* pool_size 2 -> 4 with four clients in transactions: the two waiting are served. */
START_TEST(test_reload_pool_size_up)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 2, .pool_mode = TXN };
	struct h_daemon_opts o4 = { .pool_size = 4, .pool_mode = TXN };
	PGconn *c[4], *direct;
	char *text;

	h_create_role(UP_ROLE);
	h_daemon_start(&d, &h_shared_pg, &o);
	direct = h_pg_connect(&h_shared_pg, NULL);
	for (int i = 0; i < 4; i++)
		c[i] = h_connect_db(&d, "appdb", UP_ROLE);
	for (int i = 0; i < 2; i++) {
		h_exec_ok(c[i], "BEGIN");
		h_assert_value(c[i], "SELECT 1", "1");
	}
	for (int i = 2; i < 4; i++) {
		h_send_query(c[i], "BEGIN");
		h_assert(h_still_waiting(c[i], WAIT_MS), "client %d got a server past pool_size 2",
			 i);
	}
	h_assert(count_backends(direct, role_where(UP_ROLE)) == 2, "pool_size 2, %lld backends",
		 count_backends(direct, role_where(UP_ROLE)));

	text = h_daemon_config_text(&d, &h_shared_pg, &o4);
	h_daemon_reload(&d, text);
	free(text);
	for (int i = 2; i < 4; i++) {
		PGresult *r = h_result_try(c[i], SETTLE_MS);

		h_assert(r && PQresultStatus(r) == PGRES_COMMAND_OK,
			 "waiting client %d not served within %d ms of pool_size going 2 -> 4: %s", i,
			 SETTLE_MS, r ? PQresultErrorMessage(r) : "no result");
		PQclear(r);
	}
	h_assert(count_backends(direct, role_where(UP_ROLE)) == 4, "pool_size 4, %lld backends",
		 count_backends(direct, role_where(UP_ROLE)));
	for (int i = 0; i < 4; i++) {
		h_assert(PQtransactionStatus(c[i]) == PQTRANS_INTRANS, "client %d not in its "
			 "transaction", i);
		h_exec_ok(c[i], "COMMIT");
		PQfinish(c[i]);
	}
	PQfinish(direct);
	h_daemon_stop_ok(&d);
}
END_TEST

#define DOWN_ROLE "svc_down"

/*
 * pool_size 4 -> 2 with four servers in transactions: nothing is taken
 * from a client; as they commit, servers close until two are left, and
 * the cap is then 2.
 */
START_TEST(test_reload_pool_size_down)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 4, .pool_mode = TXN };
	struct h_daemon_opts o2 = { .pool_size = 2, .pool_mode = TXN,
				    .extra_dbs = MARKER_DB("mark_down") };
	PGconn *c[4], *direct;
	char *text;

	h_create_role(DOWN_ROLE);
	h_daemon_start(&d, &h_shared_pg, &o);
	direct = h_pg_connect(&h_shared_pg, NULL);
	for (int i = 0; i < 4; i++) {
		c[i] = h_connect_db(&d, "appdb", DOWN_ROLE);
		h_exec_ok(c[i], "BEGIN");
		h_assert_value(c[i], "SELECT 1", "1");
	}
	h_assert(count_backends(direct, role_where(DOWN_ROLE)) == 4, "pool_size 4, %lld backends",
		 count_backends(direct, role_where(DOWN_ROLE)));

	text = h_daemon_config_text(&d, &h_shared_pg, &o2);
	h_daemon_reload(&d, text);
	free(text);
	h_assert(wait_db(&d, "mark_down", SETTLE_MS), "reload not applied within %d ms", SETTLE_MS);
	for (int i = 0; i < 4; i++)
		h_assert_value(c[i], "SELECT 'kept'", "kept");

	for (int i = 0; i < 4; i++) {
		long long want = i < 2 ? 3 - i : 2;

		h_exec_ok(c[i], "COMMIT");
		h_assert(wait_backends(direct, role_where(DOWN_ROLE), want, SETTLE_MS),
			 "after %d of 4 commits with pool_size lowered to 2: %lld backends, expected "
			 "%lld", i + 1, count_backends(direct, role_where(DOWN_ROLE)), want);
	}
	/* The cap is 2 now. */
	for (int i = 0; i < 2; i++) {
		h_exec_ok(c[i], "BEGIN");
		h_assert_value(c[i], "SELECT 1", "1");
	}
	h_send_query(c[2], "SELECT 'third'");
	h_assert(h_still_waiting(c[2], WAIT_MS),
		 "a third transaction got a server, pool_size is 2");
	h_assert(count_backends(direct, role_where(DOWN_ROLE)) == 2, "pool_size 2, %lld backends",
		 count_backends(direct, role_where(DOWN_ROLE)));
	h_exec_ok(c[0], "COMMIT");
	h_assert_pending_value(c[2], "third client", "third");
	h_exec_ok(c[1], "COMMIT");
	for (int i = 0; i < 4; i++)
		PQfinish(c[i]);
	PQfinish(direct);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- reload: timeouts ------------------------------------------------ */

/*
 * client_idle_timeout and query_wait_timeout, both off or long at start,
 * set to 500 ms by a reload: a client idle since before the reload is
 * closed (57P05), a client waiting for the only server gets 57014 after
 * 500 ms; the client holding the server in its transaction is untouched.
 */
START_TEST(test_reload_timeouts)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 1, .pool_mode = TXN };
	struct h_daemon_opts o2 = {
		.pool_size = 1, .pool_mode = TXN,
		.extra_top = "client_idle_timeout: 500ms\nquery_wait_timeout: 500ms\n",
	};
	struct h_raw_error e;
	struct h_outcome out;
	struct h_msg m;
	PGconn *holder, *waiter;
	char *text;
	int idle, rc;
	int64_t t0;

	h_daemon_start(&d, &h_shared_pg, &o);
	holder = h_connect(&d, NULL);
	h_exec_ok(holder, "BEGIN");
	h_assert_value(holder, "SELECT 'holding'", "holding");
	idle = h_raw_client(&d, "appdb", NULL);
	rc = h_raw_read_msg(idle, &m, 700);
	if (rc == 1)
		h_msg_free(&m);
	h_assert(rc == -2, "an idle client heard from pgberth (rc %d) with client_idle_timeout off",
		 rc);

	text = h_daemon_config_text(&d, &h_shared_pg, &o2);
	t0 = h_now_ms();
	h_daemon_reload(&d, text);
	free(text);
	rc = h_raw_wait_error(idle, SETTLE_MS, &e);
	h_assert(rc == 1 && strcmp(e.sqlstate, "57P05") == 0,
		 "client idle since before a reload to client_idle_timeout 500ms: rc %d [%s] %s "
		 "within %d ms", rc, e.sqlstate, e.message, SETTLE_MS);
	h_assert(h_now_ms() - t0 <= 2000, "idle client closed %lld ms after the reload",
		 (long long)(h_now_ms() - t0));
	close(idle);

	waiter = h_connect(&d, NULL);
	h_run_query(waiter, "SELECT 'waited'", 5000, &out);
	h_assert(out.answered && !out.ok && strcmp(out.sqlstate, "57014") == 0,
		 "waiting for the only server after a reload to query_wait_timeout 500ms: %s [%s] %s",
		 out.answered ? (out.ok ? "succeeded" : "failed") : "no answer", out.sqlstate,
		 out.message);
	h_assert(out.ms >= 450 && out.ms <= 1500, "57014 after %d ms, query_wait_timeout is 500 ms",
		 out.ms);
	PQfinish(waiter);

	h_assert_value(holder, "SELECT 'still holding'", "still holding");
	h_exec_ok(holder, "COMMIT");
	PQfinish(holder);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- reload: conninfo ------------------------------------------------ */

#define CONN_ROLE "svc_conn"

/*
 * appdb's conninfo moves from dbname=appdb to dbname=postgres. A server
 * under an open transaction is kept until COMMIT, then retired; every new
 * transaction after the reload runs on the new database, and no backend
 * of the old conninfo is left.
 */
START_TEST(test_reload_conninfo)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 2, .pool_mode = TXN };
	PGconn *h, *p, *direct;
	char *text, *moved, where[128];
	long long p1;
	bool moved_seen = false;
	int64_t deadline;

	h_create_role(CONN_ROLE);
	h_daemon_start(&d, &h_shared_pg, &o);
	direct = h_pg_connect(&h_shared_pg, NULL);
	h = h_connect_db(&d, "appdb", CONN_ROLE);
	h_exec_ok(h, "BEGIN");
	h_assert_value(h, "SELECT current_database()", "appdb");
	p1 = h_query_ll(h, "SELECT pg_backend_pid()");
	p = h_connect_db(&d, "appdb", CONN_ROLE);
	h_assert_value(p, "SELECT current_database()", "appdb");

	text = h_daemon_config_text(&d, &h_shared_pg, &o);
	moved = replace(text, "dbname=appdb\"", "dbname=postgres\"");
	h_daemon_reload(&d, moved);
	free(moved);
	free(text);
	deadline = h_now_ms() + SETTLE_MS;
	while (!moved_seen && h_now_ms() < deadline) {
		char *db = h_query_value(p, "SELECT current_database()");

		moved_seen = db && strcmp(db, "postgres") == 0;
		free(db);
		if (!moved_seen)
			h_sleep_ms(10);
	}
	h_assert(moved_seen, "transactions still run on dbname=appdb %d ms after a reload moved "
		 "the conninfo to dbname=postgres", SETTLE_MS);

	/* The open transaction kept its server. */
	h_assert_value(h, "SELECT current_database()", "appdb");
	h_assert(h_query_ll(h, "SELECT pg_backend_pid()") == p1,
		 "the server under an open transaction was replaced");
	h_exec_ok(h, "COMMIT");
	snprintf(where, sizeof(where), "pid = %lld", p1);
	h_assert(wait_backends(direct, where, 0, SETTLE_MS),
		 "the old server %lld was not retired after its transaction ended", p1);
	for (int i = 0; i < 5; i++) {
		h_assert_value(h, "SELECT current_database()", "postgres");
		h_assert_value(p, "SELECT current_database()", "postgres");
	}
	h_assert(wait_backends(direct, "usename = '" CONN_ROLE "' AND datname = 'appdb'", 0,
			       SETTLE_MS),
		 "%lld backends of the old conninfo (dbname=appdb) still open",
		 count_backends(direct, "usename = '" CONN_ROLE "' AND datname = 'appdb'"));
	PQfinish(h);
	PQfinish(p);
	PQfinish(direct);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- reload: keys that need a restart ---------------------------------- */

/*
 * A reload that changes listen.socket_dir, listen.port, listen.socket_mode
 * and workers (and adds a marker database, to know it was read): each of
 * those is reported, and left alone: the socket keeps working at its old
 * path with its old mode, and nothing appears at the new paths.
 */
START_TEST(test_reload_restart_keys)
{
	struct h_daemon d, moved;
	struct h_daemon_opts o = { 0 };
	struct h_daemon_opts o2 = { .workers = 3, .socket_mode = "0700",
				    .extra_dbs = MARKER_DB("mark_restart") };
	const char *keys[] = { "listen.socket_dir", "listen.port", "listen.socket_mode", "workers" };
	char *newdir = h_mkdtemp("newsock"), *text, *log, path[H_PATH_MAX + 32];
	struct stat st;
	PGconn *c;
	long offset;

	h_daemon_start(&d, &h_shared_pg, &o);
	c = h_connect(&d, NULL);
	moved = d;
	snprintf(moved.sockdir, sizeof(moved.sockdir), "%s", newdir);
	moved.port = H_DAEMON_PORT + 1;
	text = h_daemon_config_text(&moved, &h_shared_pg, &o2);
	offset = h_daemon_log_size(&d);
	h_daemon_reload(&d, text);
	free(text);
	h_assert(wait_db(&d, "mark_restart", SETTLE_MS), "reload not applied within %d ms",
		 SETTLE_MS);

	h_assert(stat(d.sockpath, &st) == 0 && S_ISSOCK(st.st_mode),
		 "the socket %s is gone after a reload that changed listen.*", d.sockpath);
	h_assert((st.st_mode & 0777) == 0777, "socket mode changed to %o by a reload",
		 st.st_mode & 0777);
	snprintf(path, sizeof(path), "%s/.s.PGSQL.%d", newdir, moved.port);
	h_assert(!h_path_exists(path), "a reload created %s", path);
	snprintf(path, sizeof(path), "%s/.s.PGSQL.%d", newdir, d.port);
	h_assert(!h_path_exists(path), "a reload created %s", path);
	snprintf(path, sizeof(path), "%s/.s.PGSQL.%d", d.sockdir, moved.port);
	h_assert(!h_path_exists(path), "a reload created %s", path);
	h_assert_serves(&d);
	h_assert_value(c, "SELECT 'across'", "across");

	log = h_read_file(d.log);
	h_assert(log && (long)strlen(log) >= offset, "cannot read %s", d.log);
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		h_assert(strstr(log + offset, keys[i]) != NULL,
			 "a reload that changed %s did not report it in the log", keys[i]);
	free(log);
	PQfinish(c);
	h_daemon_stop_ok(&d);
	h_assert(!h_path_exists(d.sockpath), "socket file left behind");
	h_rm_rf(newdir);
	free(newdir);
}
END_TEST

/* ---- reload: fifty under pgbench ------------------------------------- */

#define STORM_ROLE "svc_storm"
#define STORM_RELOADS 50

/*
 * pgbench (8 clients, transaction mode) runs while 50 reloads alternate a
 * valid file (pool_size 3 or 5, server_idle_timeout 300s or 600s) and a
 * broken one (three kinds). No transaction fails; afterwards the last
 * valid pool_size (3) holds: with 5 clients in transactions PostgreSQL
 * sees exactly 3 backends.
 */
START_TEST(test_reload_storm_under_pgbench)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 4, .pool_mode = TXN };
	char port[16], out_path[H_PATH_MAX + 32], script[H_PATH_MAX + 32], *out;
	PGconn *c[5], *direct;
	pid_t bench;
	int status, ms, last_size = 0;

	h_create_role(STORM_ROLE);
	h_daemon_start(&d, &h_shared_pg, &o);
	direct = h_pg_connect(&h_shared_pg, NULL);
	snprintf(script, sizeof(script), "%s/storm.sql", d.dir);
	h_assert(h_write_file(script, "\\set a random(1, 1000)\n"
			      "SELECT :a;\n"
			      "BEGIN;\n"
			      "SELECT :a + 1;\n"
			      "SELECT pg_backend_pid();\n"
			      "COMMIT;\n"), "write %s", script);
	snprintf(port, sizeof(port), "%d", d.port);
	snprintf(out_path, sizeof(out_path), "%s/pgbench.out", d.dir);
	{
		const char *argv[] = { h_pg_bin("pgbench"), "-n", "-f", script, "-c", "8", "-j", "2",
				       "-T", "5", "-h", d.sockdir, "-p", port, "-U", STORM_ROLE,
				       "appdb", NULL };

		bench = h_spawn(argv, out_path, false);
	}
	h_assert(bench > 0, "cannot start pgbench");
	h_assert(h_poll_until(direct, "SELECT count(*) > 0 FROM pg_stat_activity WHERE usename = '"
			      STORM_ROLE "'", 10000), "pgbench never reached PostgreSQL");

	for (int i = 0; i < STORM_RELOADS; i++) {
		struct h_daemon_opts v = o;
		char *text, *bad;

		v.pool_size = (i / 2) % 2 ? 5 : 3;
		v.extra_top = (i / 2) % 2 ? "server_idle_timeout: 300s\n" : "server_idle_timeout: 600s\n";
		text = h_daemon_config_text(&d, &h_shared_pg, &v);
		if (i % 2 == 0) {
			last_size = v.pool_size;
			h_daemon_reload(&d, text);
		} else {
			char num[32];

			snprintf(num, sizeof(num), "pool_size: %d", v.pool_size);
			switch ((i / 2) % 3) {
			case 0:
				h_assert(asprintf(&bad, "%sdatabases: [\n", text) > 0, "asprintf");
				break;
			case 1:
				bad = replace(text, num, "pool_size: -1");
				break;
			default:
				bad = replace(text, "databases:\n", "no_such_key: 1\ndatabases:\n");
				break;
			}
			h_daemon_reload(&d, bad);
			free(bad);
		}
		free(text);
		h_sleep_ms(50);                 /* pacing only; nothing below depends on it */
		assert_running(&d, "during the reload storm");
		if (h_wait_pid(bench, 0, &status) >= 0) {
			out = h_read_file(out_path);
			h_assert(false, "pgbench ended after only %d of %d reloads:\n%s", i + 1,
				 STORM_RELOADS, out ? out : "");
		}
	}

	ms = h_wait_pid(bench, 20000, &status);
	if (ms < 0)
		h_kill_wait(bench);
	out = h_read_file(out_path);
	h_assert(ms >= 0, "pgbench still running 20 s after its 5 s:\n%s", out ? out : "");
	h_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		 "pgbench through 50 reloads exited with status 0x%x:\n%s", status, out ? out : "");
	h_assert(out && strstr(out, "number of transactions actually processed: ") != NULL,
		 "pgbench output:\n%s", out ? out : "");
	h_assert(strstr(out, "number of failed transactions") == NULL ||
		 strstr(out, "number of failed transactions: 0 ") != NULL,
		 "pgbench reports failed transactions:\n%s", out);
	h_assert(strstr(out, "error") == NULL && strstr(out, "aborted") == NULL,
		 "pgbench reports errors:\n%s", out);
	free(out);
	assert_running(&d, "after the reload storm");

	/* The last valid pool_size holds. */
	h_assert(last_size == 3, "test bug: last valid pool_size %d", last_size);
	for (int i = 0; i < 5; i++)
		c[i] = h_connect_db(&d, "appdb", STORM_ROLE);
	for (int i = 0; i < 3; i++) {
		h_exec_ok(c[i], "BEGIN");
		h_assert_value(c[i], "SELECT 1", "1");
	}
	for (int i = 3; i < 5; i++) {
		h_send_query(c[i], "BEGIN");
		h_assert(h_still_waiting(c[i], WAIT_MS),
			 "client %d got a server past the last valid pool_size 3", i);
	}
	h_assert(wait_backends(direct, role_where(STORM_ROLE), 3, SETTLE_MS),
		 "last valid pool_size 3, 5 clients in transactions: PostgreSQL sees %lld backends",
		 count_backends(direct, role_where(STORM_ROLE)));
	for (int i = 0; i < 3; i++)
		h_exec_ok(c[i], "COMMIT");
	for (int i = 3; i < 5; i++) {
		PGresult *r = h_result_try(c[i], H_QUERY_TIMEOUT);

		h_assert(r && PQresultStatus(r) == PGRES_COMMAND_OK, "waiting client %d: %s", i,
			 r ? PQresultErrorMessage(r) : "no result");
		PQclear(r);
		h_exec_ok(c[i], "COMMIT");
	}
	for (int i = 0; i < 5; i++)
		PQfinish(c[i]);
	PQfinish(direct);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- sd_notify ------------------------------------------------------- */

#define MAX_DGRAMS 256

/* Every datagram received, in order. */
struct dgrams {
	int n;
	char text[MAX_DGRAMS][512];
};

static int64_t monotonic_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/*
 * Receives into g until a datagram has KEY=value; returns its index, or
 * -1 if timeout_ms passed first.
 */
static int notify_until(struct h_notify *nt, struct dgrams *g, const char *key, const char *value,
			int timeout_ms)
{
	int64_t deadline = h_now_ms() + timeout_ms;

	for (;;) {
		char buf[512], v[256];
		int64_t left = deadline - h_now_ms();
		int rc;

		if (left <= 0)
			return -1;
		rc = h_notify_recv(nt, buf, sizeof(buf), (int)left);
		if (rc < 0)
			return -1;
		h_assert(g->n < MAX_DGRAMS, "more than %d notify datagrams", MAX_DGRAMS);
		snprintf(g->text[g->n], sizeof(g->text[0]), "%s", buf);
		g->n++;
		if (h_notify_value(buf, key, v, sizeof(v)) && strcmp(v, value) == 0)
			return g->n - 1;
	}
}

/* All datagrams so far, for messages. */
static const char *dgrams_dump(const struct dgrams *g)
{
	static char out[8192];
	size_t used = 0;

	out[0] = '\0';
	for (int i = 0; i < g->n && used < sizeof(out) - 1; i++) {
		int n = snprintf(out + used, sizeof(out) - used, "  [%d] %s\n", i, g->text[i]);

		used += n > 0 ? (size_t)n : 0;
	}
	return out;
}

static bool has_digit(const char *s)
{
	for (; *s; s++)
		if (*s >= '0' && *s <= '9')
			return true;
	return false;
}

/*
 * READY=1 when the socket serves (a connection works right away), on a
 * valid SIGHUP RELOADING=1 with MONOTONIC_USEC of the reload's start, then
 * READY=1; the same for a broken file (the daemon keeps serving); STOPPING=1
 * on SIGTERM. STATUS= lines, skipped by the order check, name clients and
 * servers with counts.
 */
START_TEST(test_notify_sequence)
{
	struct h_daemon d;
	struct h_daemon_opts o = { 0 }, o6 = { .pool_size = 6 };
	struct h_notify nt;
	static struct dgrams g;
	char events[64] = "", v[256], *text, *bad;
	size_t ne = 0;
	const char *env[2];
	PGconn *c;
	int at, status, nstatus = 0;
	int64_t t0, t1;
	unsigned long long usec;

	h_notify_open(&nt);
	env[0] = nt.env;
	env[1] = NULL;
	h_daemon_prepare(&d, &h_shared_pg, &o);
	h_assert(h_daemon_spawn_env(&d, env, -1) > 0, "spawn");
	at = notify_until(&nt, &g, "READY", "1", NOTIFY_MS);
	h_assert(at >= 0, "no READY=1 within %d ms of start (pgberth %s); got:\n%s", NOTIFY_MS,
		 h_daemon_exited(&d) ? "exited" : "running", dgrams_dump(&g));
	c = h_connect(&d, NULL);
	h_assert_value(c, "SELECT 'ready'", "ready");

	/* A valid reload. */
	text = h_daemon_config_text(&d, &h_shared_pg, &o6);
	t0 = monotonic_us();
	h_daemon_reload(&d, text);
	at = notify_until(&nt, &g, "RELOADING", "1", NOTIFY_MS);
	t1 = monotonic_us();
	h_assert(at >= 0, "no RELOADING=1 within %d ms of SIGHUP; got:\n%s", NOTIFY_MS,
		 dgrams_dump(&g));
	h_assert(h_notify_value(g.text[at], "MONOTONIC_USEC", v, sizeof(v)),
		 "RELOADING=1 without MONOTONIC_USEC: \"%s\"", g.text[at]);
	usec = strtoull(v, NULL, 10);
	h_assert(v[0] >= '0' && v[0] <= '9' && (int64_t)usec >= t0 - 1000 &&
		 (int64_t)usec <= t1 + 1000,
		 "MONOTONIC_USEC=%s is not CLOCK_MONOTONIC at the reload (between %" PRId64 " and %"
		 PRId64 ")", v, t0, t1);
	h_assert(notify_until(&nt, &g, "READY", "1", NOTIFY_MS) >= 0,
		 "no READY=1 after a valid reload; got:\n%s", dgrams_dump(&g));
	h_assert_value(c, "SELECT 'after reload'", "after reload");

	/* A broken file: the daemon says it is reloading, then ready again, and serves. */
	bad = replace(text, "databases:\n", "bogus_key: 1\ndatabases:\n");
	h_daemon_reload(&d, bad);
	free(bad);
	free(text);
	h_assert(notify_until(&nt, &g, "RELOADING", "1", NOTIFY_MS) >= 0,
		 "no RELOADING=1 after SIGHUP with a broken file; got:\n%s", dgrams_dump(&g));
	h_assert(notify_until(&nt, &g, "READY", "1", NOTIFY_MS) >= 0,
		 "no READY=1 after a broken reload; got:\n%s", dgrams_dump(&g));
	assert_running(&d, "after a broken reload");
	h_assert_value(c, "SELECT 'after broken reload'", "after broken reload");
	h_assert_serves(&d);
	PQfinish(c);

	h_assert(kill(d.pid, SIGTERM) == 0, "SIGTERM: %s", strerror(errno));
	h_assert(notify_until(&nt, &g, "STOPPING", "1", NOTIFY_MS) >= 0,
		 "no STOPPING=1 after SIGTERM; got:\n%s", dgrams_dump(&g));
	h_assert(h_wait_pid(d.pid, 10000, &status) >= 0, "pgberth did not exit after SIGTERM");
	d.pid = 0;
	d.status = status;
	h_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status 0x%x", status);
	/* Whatever it sent before exiting. */
	while (g.n < MAX_DGRAMS) {
		char buf[512];

		if (h_notify_recv(&nt, buf, sizeof(buf), 0) < 0)
			break;
		snprintf(g.text[g.n++], sizeof(g.text[0]), "%s", buf);
	}

	for (int i = 0; i < g.n; i++) {
		if (h_notify_value(g.text[i], "STATUS", v, sizeof(v))) {
			nstatus++;
			h_assert(strstr(v, "clients") && strstr(v, "servers") && has_digit(v),
				 "STATUS=%s does not give counts of clients and servers", v);
		}
		if (ne + 1 >= sizeof(events))
			continue;
		if (h_notify_value(g.text[i], "READY", v, sizeof(v)))
			events[ne++] = 'R';
		else if (h_notify_value(g.text[i], "RELOADING", v, sizeof(v)))
			events[ne++] = 'L';
		else if (h_notify_value(g.text[i], "STOPPING", v, sizeof(v)))
			events[ne++] = 'S';
		events[ne] = '\0';
	}
	h_assert(strcmp(events, "RLRLRS") == 0,
		 "notify order (R READY, L RELOADING, S STOPPING) was %s, expected RLRLRS:\n%s",
		 events, dgrams_dump(&g));
	fprintf(stderr, "e2e_service: %d notify datagrams, %d with STATUS\n", g.n, nstatus);
	h_notify_close(&nt);
}
END_TEST

/* WATCHDOG_USEC=200000: at least three WATCHDOG=1 within a second. _i: 1 without WATCHDOG_PID. */
START_TEST(test_notify_watchdog)
{
	struct h_daemon d;
	struct h_notify nt;
	static struct dgrams g;
	const char *env[4];
	int n = 0, pings = 0;
	int64_t deadline;

	h_notify_open(&nt);
	unsetenv("WATCHDOG_PID");
	env[n++] = nt.env;
	env[n++] = "WATCHDOG_USEC=200000";
	if (_i == 0)
		env[n++] = "WATCHDOG_PID=@PID@";
	env[n] = NULL;
	h_daemon_prepare(&d, &h_shared_pg, NULL);
	h_assert(h_daemon_spawn_env(&d, env, -1) > 0, "spawn");
	h_assert(notify_until(&nt, &g, "READY", "1", NOTIFY_MS) >= 0,
		 "no READY=1 within %d ms of start; got:\n%s", NOTIFY_MS, dgrams_dump(&g));
	deadline = h_now_ms() + 1000;
	while (h_now_ms() < deadline) {
		char buf[512], v[16];

		if (h_notify_recv(&nt, buf, sizeof(buf), (int)(deadline - h_now_ms())) < 0)
			break;
		if (h_notify_value(buf, "WATCHDOG", v, sizeof(v)) && strcmp(v, "1") == 0)
			pings++;
	}
	h_assert(pings >= 3, "%d WATCHDOG=1 in 1 s with WATCHDOG_USEC=200000%s", pings,
		 _i == 0 ? " and WATCHDOG_PID=<its pid>" : " (WATCHDOG_PID unset)");
	h_assert_serves(&d);
	h_daemon_stop_ok(&d);
	h_notify_close(&nt);
}
END_TEST

/* ---- socket activation ----------------------------------------------- */

static void spawn_activated(struct h_daemon *d, const char *dir, int lfd)
{
	struct h_daemon_opts o = { .sockdir = dir };
	char desc[64];

	h_daemon_prepare(d, &h_shared_pg, &o);
	h_assert(h_daemon_spawn_env(d, NULL, lfd) > 0, "spawn");
	if (!h_daemon_wait_login(d, H_START_TIMEOUT)) {
		if (d->pid > 0)
			snprintf(desc, sizeof(desc), "still running");
		else
			h_describe_status(d->status, desc, sizeof(desc));
		h_assert(false, "pgberth given a listening socket as fd 3 (LISTEN_FDS=1) did not serve "
			 "on it within %d ms: %s", H_START_TIMEOUT, desc);
	}
}

/*
 * The test holds the listening socket, as systemd does. Two daemons in
 * turn serve on it; a client that connects while neither runs waits in
 * the backlog (not refused) and is served by the second. pgberth never
 * removes or replaces the socket file, and makes no lock file.
 */
START_TEST(test_socket_activation)
{
	struct h_daemon d1, d2;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char *dir = h_mkdtemp("act");
	PostgresPollingStatusType state = PGRES_POLLING_WRITING;
	ino_t ino0 = 0, ino;
	PGconn *c, *waiting;
	int lfd, rc;

	h_assert(dir != NULL, "mkdtemp");
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/.s.PGSQL.%d", dir, H_DAEMON_PORT);
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	h_assert(lfd >= 0 && bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
		 chmod(sa.sun_path, 0777) == 0 && listen(lfd, 64) == 0, "listening socket %s: %s",
		 sa.sun_path, strerror(errno));
	h_assert(h_is_socket(sa.sun_path, &ino0), "no socket at %s", sa.sun_path);

	spawn_activated(&d1, dir, lfd);
	h_assert(strcmp(d1.sockpath, sa.sun_path) == 0, "test bug: %s", d1.sockpath);
	c = h_connect(&d1, NULL);
	h_assert_value(c, "SELECT 'activated'", "activated");
	PQfinish(c);
	h_assert(!h_path_exists(d1.lockpath), "pgberth made a lock file %s for a socket it was "
		 "handed", d1.lockpath);
	h_daemon_stop_ok(&d1);
	h_assert(h_is_socket(sa.sun_path, &ino) && ino == ino0,
		 "the socket file pgberth was handed is %s after it exited",
		 h_path_exists(sa.sun_path) ? "replaced" : "gone");

	/* No daemon now: a client is queued, not refused. */
	waiting = h_connect_start(&d1, NULL, false, &state);
	rc = h_drive_connect(waiting, &state, h_now_ms() + WAIT_MS);
	h_assert(rc == -1, "a client connecting between two daemons was %s: %s",
		 rc == PGRES_POLLING_FAILED ? "refused" : "answered", PQerrorMessage(waiting));

	spawn_activated(&d2, dir, lfd);
	rc = h_drive_connect(waiting, &state, h_now_ms() + H_START_TIMEOUT);
	h_assert(rc == PGRES_POLLING_OK, "the client queued between two daemons: %s",
		 rc == -1 ? "no answer" : PQerrorMessage(waiting));
	h_assert_value(waiting, "SELECT 'queued then served'", "queued then served");
	PQfinish(waiting);
	h_assert_serves(&d2);
	h_daemon_stop_ok(&d2);
	h_assert(h_is_socket(sa.sun_path, &ino) && ino == ino0,
		 "the socket file pgberth was handed is %s after the second daemon exited",
		 h_path_exists(sa.sun_path) ? "replaced" : "gone");
	h_assert(!h_path_exists(d2.lockpath), "lock file %s left", d2.lockpath);
	close(lfd);
	h_rm_rf(dir);
	free(dir);
}
END_TEST

/* ---- drain ----------------------------------------------------------- */

#define SLEEP2_SQL "BEGIN; SELECT pg_sleep(2) /* svc drain */; COMMIT"
#define SLEEP2_ACTIVE \
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE " \
	"'%pg_sleep(2) /* svc drain */%' AND pid <> pg_backend_pid()"

/*
 * Transaction mode, drain_timeout 5s. On SIGTERM an idle client gets FATAL
 * 57P01 at once; a new client is refused at once; the 2 s transaction in
 * flight completes, and only then does its client get 57P01; with every
 * client gone the daemon exits 0, well before drain_timeout.
 */
START_TEST(test_drain_transaction_mode)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_mode = TXN, .shutdown_timeout = "2s",
				   .extra_top = "drain_timeout: 5s\n" };
	char value[64], sqlstate[6];
	PGconn *direct, *late;
	int busy, idle, rc, status, ms;
	int64_t sent, t0, t;

	h_daemon_start(&d, &h_shared_pg, &o);
	busy = h_raw_client(&d, "appdb", NULL);
	idle = h_raw_client(&d, "appdb", NULL);
	direct = h_pg_connect(&h_shared_pg, NULL);
	sent = h_now_ms();
	h_assert(h_raw_send_query(busy, SLEEP2_SQL) == 0, "send");
	h_assert(h_poll_until(direct, SLEEP2_ACTIVE, 5000), "pg_sleep(2) never started");
	PQfinish(direct);

	t0 = h_now_ms();
	h_assert(kill(d.pid, SIGTERM) == 0, "SIGTERM: %s", strerror(errno));
	assert_raw_shutdown(idle, 1500, "idle client at SIGTERM");
	t = h_now_ms();
	h_assert(t - t0 <= 1000 && t - sent < 1900,
		 "the idle client got 57P01 %lld ms after SIGTERM, %lld ms into the 2 s transaction",
		 (long long)(t - t0), (long long)(t - sent));
	close(idle);

	t = h_now_ms();
	late = h_connect_try(&d, NULL);
	h_assert(PQstatus(late) == CONNECTION_BAD, "a new client got in during the drain");
	h_assert(h_now_ms() - t < 1000, "a new client during the drain was refused after %lld ms",
		 (long long)(h_now_ms() - t));
	PQfinish(late);

	rc = h_raw_query_result(busy, value, sizeof(value), sqlstate, 5000);
	h_assert(rc == 0, "the transaction in flight at SIGTERM: rc %d [%s]", rc, sqlstate);
	h_assert(h_now_ms() - sent >= 1900, "the 2 s transaction ended after %lld ms",
		 (long long)(h_now_ms() - sent));

	/* Its client is told after its transaction (its next query fails). */
	h_raw_send_query(busy, "SELECT 'after'");
	{
		struct h_raw_error e;

		rc = h_raw_wait_error(busy, 2000, &e);
		h_assert(rc == 1 && strcmp(e.sqlstate, "57P01") == 0,
			 "after its transaction: expected 57P01, got %s (rc %d) [%s] %s",
			 rc == -2 ? "nothing" : rc == 0 ? "EOF" : "a message", rc, e.sqlstate,
			 e.message);
		h_assert(h_raw_wait_eof(busy, 2000) == 0, "connection open after its 57P01");
	}
	close(busy);

	ms = h_wait_pid(d.pid, 6000, &status);
	h_assert(ms >= 0, "pgberth still running 6 s after its last client left");
	d.pid = 0;
	d.status = status;
	h_assert(h_now_ms() - t0 <= 3500, "pgberth exited %lld ms after SIGTERM; its last "
		 "transaction ended at about 2000 ms, drain_timeout is 5 s",
		 (long long)(h_now_ms() - t0));
	h_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status 0x%x", status);
	h_assert(!h_path_exists(d.sockpath) && !h_path_exists(d.lockpath),
		 "socket or lock file left behind");
}
END_TEST

/*
 * Waits (2 s at most) until new clients are refused, as they are once the
 * drain began; each refusal must be fast. A client let in before that is
 * closed again.
 */
static void wait_refused(struct h_daemon *d)
{
	int64_t deadline = h_now_ms() + 2000;

	for (;;) {
		int64_t t = h_now_ms();
		PGconn *c = h_connect_try(d, NULL);
		bool refused = PQstatus(c) == CONNECTION_BAD;

		PQfinish(c);
		if (refused) {
			h_assert(h_now_ms() - t < 1000, "refused after %lld ms, not at once",
				 (long long)(h_now_ms() - t));
			return;
		}
		h_assert(h_now_ms() < deadline, "new clients still accepted 2 s after SIGTERM");
		h_sleep_ms(10);
	}
}

/*
 * Session mode: the client inside a transaction at SIGTERM finishes it and
 * goes on with more queries; the daemon waits for it, and exits 0 as soon
 * as it disconnects. One worker, and an idle client whose 57P01 shows that
 * the worker has begun the drain while the session was in its transaction.
 */
START_TEST(test_drain_session_client_leaves)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .workers = 1, .extra_top = "drain_timeout: 5s\n" };
	PGconn *s;
	int idle, status, ms;
	int64_t t;

	h_daemon_start(&d, &h_shared_pg, &o);
	s = h_connect(&d, NULL);
	idle = h_raw_client(&d, "appdb", NULL);
	h_exec_ok(s, "BEGIN");
	h_assert_value(s, "SELECT 'open'", "open");
	h_assert(kill(d.pid, SIGTERM) == 0, "SIGTERM: %s", strerror(errno));
	assert_raw_shutdown(idle, 2000, "idle session client at SIGTERM");
	close(idle);
	wait_refused(&d);
	h_assert_value(s, "SELECT 'in txn'", "in txn");
	h_exec_ok(s, "COMMIT");
	for (int i = 0; i < 3; i++)
		h_assert_value(s, "SELECT 'more'", "more");
	h_exec_ok(s, "BEGIN");
	h_assert_value(s, "SELECT 'another txn'", "another txn");
	h_exec_ok(s, "COMMIT");
	assert_running(&d, "while its session client was still working");

	t = h_now_ms();
	PQfinish(s);
	ms = h_wait_pid(d.pid, 5000, &status);
	h_assert(ms >= 0, "pgberth still running 5 s after its last session client left");
	d.pid = 0;
	d.status = status;
	h_assert(h_now_ms() - t <= 1500, "pgberth exited %lld ms after its last client left",
		 (long long)(h_now_ms() - t));
	h_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status 0x%x", status);
}
END_TEST

/*
 * Session mode, drain_timeout 1s: a client that stays in its transaction
 * keeps working until drain_timeout, then gets 57P01, and the daemon exits 0.
 */
START_TEST(test_drain_session_timeout)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .shutdown_timeout = "1s", .extra_top = "drain_timeout: 1s\n" };
	char value[64], sqlstate[6];
	int s, rc, status, ms;
	int64_t t0, t;

	h_daemon_start(&d, &h_shared_pg, &o);
	s = h_raw_client(&d, "appdb", NULL);
	rc = h_raw_query(s, "BEGIN", NULL, 0, sqlstate, 5000);
	h_assert(rc == 0, "BEGIN: rc %d [%s]", rc, sqlstate);
	t0 = h_now_ms();
	h_assert(kill(d.pid, SIGTERM) == 0, "SIGTERM: %s", strerror(errno));
	rc = h_raw_query(s, "SELECT 'during'", value, sizeof(value), sqlstate, 5000);
	h_assert(rc == 0 && strcmp(value, "during") == 0, "query during the drain: rc %d [%s] %s",
		 rc, sqlstate, value);
	assert_raw_shutdown(s, 3000, "session client at drain_timeout");
	t = h_now_ms() - t0;
	h_assert(t >= 800 && t <= 2000, "57P01 came %lld ms after SIGTERM, drain_timeout is 1 s",
		 (long long)t);
	close(s);
	ms = h_wait_pid(d.pid, 5000, &status);
	h_assert(ms >= 0, "pgberth still running 5 s after drain_timeout");
	d.pid = 0;
	d.status = status;
	h_assert(h_now_ms() - t0 <= 3000, "pgberth exited %lld ms after SIGTERM (drain_timeout 1 s, "
		 "shutdown_timeout 1 s)", (long long)(h_now_ms() - t0));
	h_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status 0x%x", status);
}
END_TEST

/* ---- bounds on stopping ---------------------------------------------- */

/* The backends running the pg_sleep(600) tagged %s, not counting the asking one. */
#define STUCK_WHERE \
	"query LIKE '%%pg_sleep(600) /* %s */%%' AND pid <> pg_backend_pid()"

/*
 * Starts d with o and, through a client of it, a pg_sleep(600) tagged tag;
 * returns the client once PostgreSQL runs the query. end_stuck() ends it.
 */
static PGconn *start_stuck(struct h_daemon *d, const struct h_daemon_opts *o, const char *tag)
{
	char sql[256];
	PGconn *c, *direct;

	h_daemon_start(d, &h_shared_pg, o);
	c = h_connect(d, NULL);
	direct = h_pg_connect(&h_shared_pg, NULL);
	snprintf(sql, sizeof(sql), "SELECT pg_sleep(600) /* %s */", tag);
	h_send_query(c, sql);
	snprintf(sql, sizeof(sql), "SELECT count(*) >= 1 FROM pg_stat_activity WHERE state = "
		 "'active' AND " STUCK_WHERE, tag);
	h_assert(h_poll_until(direct, sql, 10000), "pg_sleep(600) never started");
	PQfinish(direct);
	return c;
}

/* Terminates start_stuck's query, which PostgreSQL would run on after pgberth is gone. */
static void end_stuck(const char *tag)
{
	char sql[256];

	snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
		 "WHERE " STUCK_WHERE, tag);
	h_pg_exec(sql);
}

static void assert_stopped_clean(struct h_daemon *d, int ms, int bound, const char *what)
{
	char desc[64];

	h_describe_status(d->status, desc, sizeof(desc));
	h_assert(ms >= 0, "%s: pgberth still running 10 s later (killed)", what);
	h_assert(ms <= bound, "%s: pgberth took %d ms to exit, the bound is %d ms", what, ms, bound);
	h_assert(WIFEXITED(d->status), "%s: pgberth ended by %s", what, desc);
	h_assert(!h_path_exists(d->sockpath), "%s: socket file %s left behind", what, d->sockpath);
	h_assert(!h_path_exists(d->lockpath), "%s: lock file %s left behind", what, d->lockpath);
}

/*
 * The stop on sig, which took ms, of a daemon with a query in flight,
 * drain_timeout 2s and shutdown_timeout 1s: SIGTERM drains for the whole
 * drain_timeout and ends within 2 + 1 + 1 s; SIGINT does not drain and
 * ends within 1 + 1 s.
 */
static void assert_stuck_stop(struct h_daemon *d, int sig, int ms)
{
	assert_stopped_clean(d, ms, sig == SIGTERM ? 4000 : 2000, strsignal(sig));
	if (sig == SIGTERM)
		h_assert(ms >= 1800, "SIGTERM with a query in flight: exit after %d ms, before "
			 "drain_timeout (2 s)", ms);
}

/*
 * pg_sleep(600) in flight, drain_timeout 2s, shutdown_timeout 1s. _i 0:
 * SIGTERM drains for drain_timeout and ends within 2 + 1 + 1 s; _i 1:
 * SIGINT does not drain and ends within 1 + 1 s.
 */
START_TEST(test_bounds_stuck_query)
{
	int sig = _i == 0 ? SIGTERM : SIGINT;
	struct h_daemon d;
	struct h_daemon_opts o = { .shutdown_timeout = "1s", .extra_top = "drain_timeout: 2s\n" };
	PGconn *c;
	PGresult *r;
	int ms;

	c = start_stuck(&d, &o, "svc stuck");
	ms = h_daemon_stop(&d, sig, 10000);
	assert_stuck_stop(&d, sig, ms);
	r = h_result_try(c, 5000);
	h_assert(r != NULL && PQresultStatus(r) == PGRES_FATAL_ERROR,
		 "client of a stopped pgberth: %s", r ? PQresStatus(PQresultStatus(r)) : "no answer");
	PQclear(r);
	PQfinish(c);
	end_stuck("svc stuck");
}
END_TEST

/*
 * The same with PostgreSQL frozen (SIGSTOP on the postmaster and every
 * backend) and a cancel of the stuck query on its way (pgberth's PQcancel
 * blocks on the frozen postmaster). Transaction mode.
 */
START_TEST(test_bounds_frozen_postgres)
{
	int sig = _i == 0 ? SIGTERM : SIGINT;
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_mode = TXN, .shutdown_timeout = "1s",
				   .extra_top = "drain_timeout: 2s\n", .log_level = "debug" };
	struct h_cancel_job job;
	PGconn *c;
	int ms;
	long off;

	c = start_stuck(&d, &o, "svc frozen");
	h_pg_freeze(&h_shared_pg);
	off = h_daemon_log_size(&d);
	h_cancel_start(c, &job);   /* answered only as pgberth stops, as PostgreSQL is frozen */
	bool sent = h_daemon_wait_log(&d, off, "sending cancel", 10000);
	ms = h_daemon_stop(&d, sig, 10000);
	bool closed = h_cancel_wait(&job, 10000);
	h_pg_thaw(&h_shared_pg);
	h_assert(sent, "pgberth never forwarded the cancel");
	h_assert(closed, "the cancel connection was still open 10 s after pgberth stopped");
	assert_stuck_stop(&d, sig, ms);
	PQfinish(c);
	end_stuck("svc frozen");
}
END_TEST

/*
 * A drain that would last 30 s (a query in flight) ends at once on a
 * second signal: _i 0 SIGTERM again, _i 1 SIGQUIT; within
 * shutdown_timeout (1 s) + 1 s of it. The second signal comes 1.5 s after
 * the first, once the daemon has shown it drains rather than stops.
 */
START_TEST(test_bounds_second_signal)
{
	int sig = _i == 0 ? SIGTERM : SIGQUIT;
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_mode = TXN, .shutdown_timeout = "1s",
				   .extra_top = "drain_timeout: 30s\n" };
	PGconn *c;
	int idle, ms, left, status;
	int64_t t0;

	c = start_stuck(&d, &o, "svc second");
	idle = h_raw_client(&d, "appdb", NULL);
	t0 = h_now_ms();
	h_assert(kill(d.pid, SIGTERM) == 0, "SIGTERM: %s", strerror(errno));
	/* The idle client's 57P01 says the drain has begun... */
	assert_raw_shutdown(idle, 2000, "idle client at SIGTERM");
	close(idle);
	/* ...and a daemon still there past shutdown_timeout is draining, not stopping. */
	left = (int)(t0 + 1500 - h_now_ms());
	if (left > 0 && h_wait_pid(d.pid, left, &status) >= 0) {
		d.pid = 0;
		d.status = status;
		h_assert(false, "pgberth exited %lld ms after SIGTERM with a query in flight: it "
			 "stopped instead of draining (drain_timeout 30 s)", (long long)(h_now_ms() - t0));
	}
	assert_running(&d, "on SIGTERM with a query in flight and drain_timeout 30 s");

	ms = h_daemon_stop(&d, sig, 10000);
	assert_stopped_clean(&d, ms, 2000, sig == SIGTERM ? "a second SIGTERM during the drain"
			     : "SIGQUIT during the drain");
	PQfinish(c);
	end_stuck("svc second");
}
END_TEST

/* ---- pause and resume ------------------------------------------------ */

#define PROBEDB_YAML \
	"  probedb:\n" \
	"    conninfo: \"host=@PGHOST@ port=@PGPORT@ dbname=appdb\"\n" \
	"    pool_size: 1\n" \
	"    pool_mode: transaction\n"

/*
 * After SIGUSR1, waits until a query of p (a client of an otherwise idle
 * pool that has a server) stays unanswered: the pause is in effect. The
 * query is left pending. Asserts within 2 s.
 */
static void wait_paused(struct h_daemon *d, PGconn *p, int64_t *sent)
{
	int64_t deadline = h_now_ms() + 2000;

	for (;;) {
		PGresult *r;

		*sent = h_now_ms();
		h_send_query(p, "SELECT 'probe'");
		if (h_still_waiting(p, WAIT_MS))
			return;
		/* Answered: the pause was not in effect yet. */
		r = h_result_try(p, H_QUERY_TIMEOUT);
		h_assert(r && PQresultStatus(r) == PGRES_TUPLES_OK, "probe before the pause: %s",
			 r ? PQresultErrorMessage(r) : "no result");
		PQclear(r);
		h_assert(PQgetResult(p) == NULL, "probe: more results");
		assert_running(d, "on SIGUSR1");
		h_assert(h_now_ms() < deadline, "queries still answered 2 s after SIGUSR1");
	}
}

/*
 * Transaction mode. SIGUSR1: a transaction open at the pause runs to its
 * COMMIT; new queries wait without an error, even with the server free;
 * new clients still log in. SIGUSR2: the waiting queries run in arrival
 * order (one server, so nextval() numbers them).
 */
START_TEST(test_pause_resume)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 1, .pool_mode = TXN, .extra_dbs = PROBEDB_YAML };
	PGconn *x, *p, *w[3], *n;
	int64_t sent, t;
	const char *names[3] = { "first", "second", "third" };

	h_pg_exec("DROP SEQUENCE IF EXISTS svc_pause_seq; CREATE SEQUENCE svc_pause_seq");
	h_daemon_start(&d, &h_shared_pg, &o);
	x = h_connect(&d, NULL);
	h_exec_ok(x, "BEGIN");
	h_assert_value(x, "SELECT 'x'", "x");
	p = h_connect_db(&d, "probedb", NULL);
	h_assert_value(p, "SELECT 'warm'", "warm");
	for (int i = 0; i < 3; i++)
		w[i] = h_connect(&d, NULL);

	h_assert(kill(d.pid, SIGUSR1) == 0, "SIGUSR1: %s", strerror(errno));
	wait_paused(&d, p, &sent);

	/* The transaction open at the pause goes on to its end. */
	h_assert_value(x, "SELECT 'inside the paused txn'", "inside the paused txn");
	h_exec_ok(x, "COMMIT");

	/* The server is free now, but new transactions wait, in order. */
	for (int i = 0; i < 3; i++) {
		h_send_query(w[i], "SELECT nextval('svc_pause_seq')");
		h_assert(h_still_waiting(w[i], i == 0 ? WAIT_MS : 100),
			 "the %s query sent while paused was answered", names[i]);
	}
	t = h_now_ms();
	n = h_connect_try(&d, NULL);
	h_assert(PQstatus(n) == CONNECTION_OK, "a new client while paused: %s", PQerrorMessage(n));
	h_assert(h_now_ms() - t < 2000, "a new client's login took %lld ms while paused",
		 (long long)(h_now_ms() - t));
	h_assert(h_still_waiting(w[0], 50) && h_still_waiting(p, 50),
		 "a query was answered while paused");

	h_assert(kill(d.pid, SIGUSR2) == 0, "SIGUSR2: %s", strerror(errno));
	for (int i = 0; i < 3; i++) {
		char want[16], what[64];

		snprintf(want, sizeof(want), "%d", i + 1);
		snprintf(what, sizeof(what), "the %s query after SIGUSR2", names[i]);
		h_assert_pending_value(w[i], what, want);
	}
	h_assert_pending_value(p, "the probe after SIGUSR2", "probe");
	h_assert_value(n, "SELECT 'resumed'", "resumed");
	PQfinish(x);
	PQfinish(p);
	PQfinish(n);
	for (int i = 0; i < 3; i++)
		PQfinish(w[i]);
	h_daemon_stop_ok(&d);
}
END_TEST

/* While paused, query_wait_timeout (500 ms) still ends a wait with 57014. */
START_TEST(test_pause_query_wait_timeout)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 2, .pool_mode = TXN,
				   .extra_top = "query_wait_timeout: 500ms\n" };
	struct h_outcome out;
	PGconn *c;
	int64_t sent;

	h_daemon_start(&d, &h_shared_pg, &o);
	c = h_connect(&d, NULL);
	h_assert_value(c, "SELECT 'warm'", "warm");
	h_assert(kill(d.pid, SIGUSR1) == 0, "SIGUSR1: %s", strerror(errno));
	wait_paused(&d, c, &sent);
	h_collect_results(c, sent, 5000, &out);
	h_assert(out.answered && !out.ok && strcmp(out.sqlstate, "57014") == 0,
		 "a query waiting while paused, query_wait_timeout 500ms: %s [%s] %s",
		 out.answered ? (out.ok ? "succeeded" : "failed") : "no answer within 5 s",
		 out.sqlstate, out.message);
	h_assert(out.ms >= 450 && out.ms <= 1500, "57014 after %d ms, query_wait_timeout is 500 ms",
		 out.ms);
	PQfinish(c);
	h_assert(kill(d.pid, SIGUSR2) == 0, "SIGUSR2: %s", strerror(errno));
	h_assert_serves(&d);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- the suite ------------------------------------------------------- */

/* Checked setup and unchecked teardown of the frozen TCase: never leave PostgreSQL stopped. */
static void thaw_shared_pg(void)
{
	h_pg_thaw(&h_shared_pg);
}

static Suite *e2e_service_suite(void)
{
	Suite *s = suite_create("e2e_service");
	TCase *tc;

	tc = h_tcase("reload", 60);
	h_tcase_add_pg(tc);
	tcase_add_test(tc, test_reload_invalid_changes_nothing);
	tcase_add_test(tc, test_reload_databases);
	tcase_add_test(tc, test_reload_pool_size_up);
	tcase_add_test(tc, test_reload_pool_size_down);
	tcase_add_test(tc, test_reload_timeouts);
	tcase_add_test(tc, test_reload_conninfo);
	tcase_add_test(tc, test_reload_restart_keys);
	tcase_add_test(tc, test_reload_storm_under_pgbench);
	suite_add_tcase(s, tc);

	tc = h_tcase("notify", 60);
	h_tcase_add_pg(tc);
	tcase_add_test(tc, test_notify_sequence);
	tcase_add_loop_test(tc, test_notify_watchdog, 0, 2);
	tcase_add_test(tc, test_socket_activation);
	suite_add_tcase(s, tc);

	tc = h_tcase("drain", 60);
	h_tcase_add_pg(tc);
	tcase_add_test(tc, test_drain_transaction_mode);
	tcase_add_test(tc, test_drain_session_client_leaves);
	tcase_add_test(tc, test_drain_session_timeout);
	tcase_add_loop_test(tc, test_bounds_stuck_query, 0, 2);
	tcase_add_loop_test(tc, test_bounds_second_signal, 0, 2);
	suite_add_tcase(s, tc);

	/* Its own PostgreSQL: this one is frozen for a while. Added after the
	 * instance, so its teardown runs first (Check runs them in reverse). */
	tc = h_tcase("frozen", 60);
	h_tcase_add_pg(tc);
	tcase_add_checked_fixture(tc, thaw_shared_pg, NULL);
	tcase_add_unchecked_fixture(tc, NULL, thaw_shared_pg);
	tcase_add_loop_test(tc, test_bounds_frozen_postgres, 0, 2);
	suite_add_tcase(s, tc);

	tc = h_tcase("pause", 60);
	h_tcase_add_pg(tc);
	tcase_add_test(tc, test_pause_resume);
	tcase_add_test(tc, test_pause_query_wait_timeout);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return h_main(e2e_service_suite());
}
