/*
 * End to end, transaction and statement pooling: a client holds a server
 * only for a transaction, and nothing of the sharing shows except the
 * backend pid. Checked against a real PostgreSQL: which backend ran each
 * transaction (pg_backend_pid), how many backends the pool's role has
 * (pg_stat_activity over a direct connection), what a transaction that
 * failed or is open holds back from other clients, the extended protocol
 * (pipelines, Flush without Sync, pgbench -M extended/prepared), COPY both
 * ways and 20 MB values, notices and notifications, settings that follow
 * their client from server to server and never leak to another client,
 * statement mode refusing transaction blocks, a per-user session override,
 * 50 threads on 3 servers, and backends terminated under the pooler.
 *
 * Steering: with pool_size 2 and two "holder" clients inside transactions
 * (struct pair), every server of the pool is known and taken; committing
 * one holder leaves exactly one server free, so the next transaction of any
 * client runs there. That is how a test puts a client on a chosen backend
 * without relying on timing.
 *
 * Pooled clients log in as roles of their own (created here directly in
 * PostgreSQL), so pg_stat_activity counts of a role are exactly the pool's
 * servers. Negative checks ("B is still waiting") look for a result that
 * must not come within 300 ms; everything else waits for an event.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define TXN "transaction"

/* A second database entry on the same PostgreSQL database, pool_size 1. */
#define ONEDB_YAML \
	"  onedb:\n" \
	"    conninfo: \"host=@PGHOST@ port=@PGPORT@ dbname=appdb\"\n" \
	"    pool_size: 1\n" \
	"    pool_mode: transaction\n"
/* And one in session mode. */
#define SESSDB_YAML \
	"  sessdb:\n" \
	"    conninfo: \"host=@PGHOST@ port=@PGPORT@ dbname=appdb\"\n" \
	"    pool_size: 4\n" \
	"    pool_mode: session\n"

#define WAIT_MS 300     /* how long a client that must wait is watched */

/* ---- helpers --------------------------------------------------------- */

/* Client backends of role in appdb, not counting the asking connection. */
static long long role_backends(PGconn *direct, const char *role)
{
	char sql[320];

	snprintf(sql, sizeof(sql), "SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
		 "'client backend' AND datname = 'appdb' AND usename = '%s' AND pid <> "
		 "pg_backend_pid()", role);
	return h_query_ll(direct, sql);
}

/* state of a backend in pg_stat_activity, "gone" if it has none; caller frees. */
static char *backend_state(PGconn *direct, long long pid)
{
	char sql[160];

	snprintf(sql, sizeof(sql), "SELECT coalesce((SELECT state FROM pg_stat_activity "
		 "WHERE pid = %lld), 'gone')", pid);
	return h_query_value(direct, sql);
}

static void assert_backend_state(PGconn *direct, long long pid, const char *want)
{
	char *st = backend_state(direct, pid);

	h_assert(st && strcmp(st, want) == 0, "backend %lld is \"%s\" in pg_stat_activity, "
		 "expected \"%s\"", pid, st ? st : "(null)", want);
	free(st);
}

struct notices {
	int n;
	char text[2048];               /* primary messages, ';'-separated */
	char sqlstate[6];              /* of the last one */
	char severity[16];
};

static void collect_notice(void *arg, const PGresult *r)
{
	struct notices *ns = arg;
	const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
	const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
	const char *sev = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
	size_t len = strlen(ns->text);

	snprintf(ns->text + len, sizeof(ns->text) - len, "%s%s", len ? ";" : "", m ? m : "");
	snprintf(ns->sqlstate, sizeof(ns->sqlstate), "%s", st ? st : "");
	snprintf(ns->severity, sizeof(ns->severity), "%s", sev ? sev : "");
	ns->n++;
}

/* Waits until the daemon closes c (libpq sees EOF). */
static bool wait_closed(PGconn *c, int ms)
{
	int64_t deadline = h_now_ms() + ms;

	while (PQstatus(c) == CONNECTION_OK) {
		struct pollfd p = { PQsocket(c), POLLIN, 0 };
		int64_t left = deadline - h_now_ms();

		if (left <= 0)
			return false;
		poll(&p, 1, (int)left);
		if (!PQconsumeInput(c))
			return true;
	}
	return true;
}

/*
 * Every result of the query c sent, up to the end or the connection's
 * loss, as "STATUS[SQLSTATE] message; ..." in out. True if one of them is
 * an error with sqlstate whose message contains text.
 */
static bool results_have_error(PGconn *c, const char *sqlstate, const char *text, char *out,
			       size_t outlen, int ms)
{
	int64_t deadline = h_now_ms() + ms;
	bool found = false;
	size_t used = 0;

	out[0] = '\0';
	for (;;) {
		PGresult *r;

		while (PQisBusy(c)) {
			struct pollfd p = { PQsocket(c), POLLIN, 0 };
			int64_t left = deadline - h_now_ms();

			if (left <= 0) {
				snprintf(out + used, outlen - used, "(no more within %d ms)", ms);
				return found;
			}
			poll(&p, 1, (int)left);
			if (!PQconsumeInput(c))
				break;
		}
		r = PQgetResult(c);
		if (!r)
			return found;
		if (PQresultStatus(r) == PGRES_FATAL_ERROR && strcmp(h_sqlstate(r), sqlstate) == 0 &&
		    strstr(PQresultErrorMessage(r), text) != NULL)
			found = true;
		snprintf(out + used, outlen - used, "%s[%s] %.120s; ", PQresStatus(PQresultStatus(r)),
			 h_sqlstate(r), PQresultErrorMessage(r));
		used = strlen(out);
		PQclear(r);
	}
}

/* ---- steering a client onto a chosen server (pool_size 2) ------------- */

struct pair {
	PGconn *h[2];
	long long pid[2];              /* backends they held at the last pair_hold */
};

static void pair_open(struct pair *p, const struct h_daemon *d, const char *extra)
{
	for (int i = 0; i < 2; i++)
		p->h[i] = h_connect(d, extra);
}

/* Both holders inside a transaction: both servers of the pool are taken. */
static void pair_hold(struct pair *p)
{
	for (int i = 0; i < 2; i++) {
		h_exec_ok(p->h[i], "BEGIN");
		p->pid[i] = h_backend_pid(p->h[i]);
	}
	h_assert(p->pid[0] != p->pid[1], "two open transactions share backend %lld", p->pid[0]);
}

static void pair_close(struct pair *p)
{
	for (int i = 0; i < 2; i++)
		PQfinish(p->h[i]);
}

/*
 * Runs "SELECT pg_backend_pid() || '|' || (expr)" on c while the holder of
 * every other server stays in its transaction, so that it runs on backend
 * target; asserts it did. Returns expr's value; caller frees.
 */
static char *value_on(struct pair *p, PGconn *c, long long target, const char *expr)
{
	char sql[512], *v, *bar, *out;
	int t;

	pair_hold(p);
	t = p->pid[0] == target ? 0 : p->pid[1] == target ? 1 : -1;
	h_assert(t >= 0, "backend %lld is not one of the pool's two (%lld, %lld)", target,
		 p->pid[0], p->pid[1]);
	h_exec_ok(p->h[t], "COMMIT");
	snprintf(sql, sizeof(sql), "SELECT pg_backend_pid()::text || '|' || (%s)::text", expr);
	v = h_query_value(c, sql);
	h_exec_ok(p->h[1 - t], "COMMIT");
	h_assert(v && (bar = strchr(v, '|')) != NULL, "steered query returned \"%s\"", v ? v : "");
	h_assert(atoll(v) == target, "steered onto backend %lld, ran on %lld (the only free one)",
		 target, atoll(v));
	out = strdup(bar + 1);
	free(v);
	return out;
}

static void assert_on(struct pair *p, PGconn *c, long long target, const char *expr,
		      const char *want, const char *who)
{
	char *v = value_on(p, c, target, expr);

	h_assert(strcmp(v, want) == 0, "%s on backend %lld: %s is \"%s\", expected \"%s\"", who,
		 target, expr, v, want);
	free(v);
}

static void assert_not_on(struct pair *p, PGconn *c, long long target, const char *expr,
			  const char *unwanted, const char *who)
{
	char *v = value_on(p, c, target, expr);

	h_assert(strcmp(v, unwanted) != 0, "%s on backend %lld: %s is \"%s\", another client's value",
		 who, target, expr, v);
	free(v);
}

/* ---- sampling a role's backends ------------------------------------------ */

/* A role's backends in appdb, sampled while the test runs (h_sampler). */
struct sampler {
	struct h_sampler h;
	const char *role;
};

static void sampler_start(struct sampler *s, const char *role)
{
	char sql[320];

	snprintf(sql, sizeof(sql), "SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
		 "'client backend' AND datname = 'appdb' AND usename = '%s'", role);
	s->role = role;
	h_sampler_start(&s->h, sql);
}

/* Stops the sampler and asserts PostgreSQL never saw more than cap backends. */
static void sampler_stop(struct sampler *s, int cap)
{
	h_sampler_stop(&s->h);
	h_assert(s->h.max <= cap, "PostgreSQL saw %d backends of %s at once (pool_size %d)",
		 s->h.max, s->role, cap);
}

/* ---- 1. autocommit clients share the pool ---------------------------- */

#define SHARE_ROLE "txn_share"
#define SHARE_CLIENTS 10
#define SHARE_QUERIES 40

struct share_client {
	PGconn *c;
	long long pids[2];             /* distinct backends it saw (at most 2 kept) */
	int npids;
	int ok;
	char error[256];
};

static void *share_main(void *arg)
{
	struct share_client *sc = arg;

	for (int i = 0; i < SHARE_QUERIES; i++) {
		PGresult *r = h_exec_try(sc->c, "SELECT pg_backend_pid(), pg_sleep(0.002)", 20000);
		long long pid;

		if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
			snprintf(sc->error, sizeof(sc->error), "query %d: %s", i,
				 r ? PQresultErrorMessage(r) : "no result within 20 s");
			PQclear(r);
			return NULL;
		}
		pid = atoll(PQgetvalue(r, 0, 0));
		PQclear(r);
		if (!(sc->npids > 0 && sc->pids[0] == pid) && !(sc->npids > 1 && sc->pids[1] == pid)) {
			if (sc->npids < 2)
				sc->pids[sc->npids] = pid;
			sc->npids++;
		}
		sc->ok++;
	}
	return NULL;
}

START_TEST(test_autocommit_shares_servers)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 2, .pool_mode = TXN };
	static struct share_client sc[SHARE_CLIENTS];
	struct sampler sm;
	struct pair hp;
	PGconn *direct;
	long long x1, x2, z, n;

	h_create_role(SHARE_ROLE);
	h_daemon_start(&d, &h_shared_pg, &o);
	direct = h_pg_connect(&h_shared_pg, NULL);
	memset(sc, 0, sizeof(sc));
	for (int i = 0; i < SHARE_CLIENTS; i++)
		sc[i].c = h_connect(&d, "user=" SHARE_ROLE);
	n = role_backends(direct, SHARE_ROLE);
	h_assert(n >= 1 && n <= 2, "10 clients logged in; PostgreSQL has %lld backends of theirs "
		 "(pool_size 2)", n);

	/* Each client in turn, three rounds: all of it on at most two backends. */
	{
		long long seen[2] = { 0, 0 };

		for (int round = 0; round < 3; round++) {
			for (int i = 0; i < SHARE_CLIENTS; i++) {
				long long pid = h_backend_pid(sc[i].c);

				if (pid != seen[0] && pid != seen[1]) {
					h_assert(seen[1] == 0, "a third backend %lld (after %lld, %lld) "
						 "with pool_size 2", pid, seen[0], seen[1]);
					seen[seen[0] == 0 ? 0 : 1] = pid;
				}
			}
			n = role_backends(direct, SHARE_ROLE);
			h_assert(n <= 2, "round %d: %lld backends (pool_size 2)", round, n);
		}
	}

	/*
	 * Both servers held: committing holder 0 frees exactly its backend, so
	 * clients 0 and 1, both connected all along, run on that one backend;
	 * then client 0 is moved to holder 1's backend. Only a pooler does that.
	 */
	pair_open(&hp, &d, "user=" SHARE_ROLE);
	pair_hold(&hp);
	h_assert(role_backends(direct, SHARE_ROLE) == 2, "the pool is full but PostgreSQL has "
		 "%lld backends", role_backends(direct, SHARE_ROLE));
	h_exec_ok(hp.h[0], "COMMIT");
	x1 = h_backend_pid(sc[0].c);
	z = h_backend_pid(sc[1].c);
	h_assert(x1 == hp.pid[0] && z == hp.pid[0], "with only backend %lld free, clients ran on "
		 "%lld and %lld", hp.pid[0], x1, z);
	h_exec_ok(hp.h[0], "BEGIN");
	h_assert(h_backend_pid(hp.h[0]) == hp.pid[0], "holder 0 did not get its backend back");
	h_exec_ok(hp.h[1], "COMMIT");
	x2 = h_backend_pid(sc[0].c);
	h_assert(x2 == hp.pid[1], "with only backend %lld free, client 0 ran on %lld", hp.pid[1], x2);
	h_exec_ok(hp.h[0], "COMMIT");
	pair_close(&hp);

	/* Ten clients at once, each 40 queries, sampled: never a third backend. */
	{
		pthread_t th[SHARE_CLIENTS];
		int total = 0;

		sampler_start(&sm, SHARE_ROLE);
		for (int i = 0; i < SHARE_CLIENTS; i++)
			h_assert(pthread_create(&th[i], NULL, share_main, &sc[i]) == 0, "thread");
		for (int i = 0; i < SHARE_CLIENTS; i++)
			pthread_join(th[i], NULL);
		sampler_stop(&sm, 2);
		for (int i = 0; i < SHARE_CLIENTS; i++) {
			h_assert(sc[i].ok == SHARE_QUERIES, "client %d: %d of %d queries; %s", i, sc[i].ok,
				 SHARE_QUERIES, sc[i].error);
			h_assert(sc[i].npids <= 2, "client %d ran on %d backends", i, sc[i].npids);
			for (int j = 0; j < sc[i].npids; j++)
				h_assert(sc[i].pids[j] == hp.pid[0] || sc[i].pids[j] == hp.pid[1],
					 "client %d ran on backend %lld, not one of the pool's %lld, %lld",
					 i, sc[i].pids[j], hp.pid[0], hp.pid[1]);
			total += sc[i].npids;
		}
		fprintf(stderr, "e2e_txn: %d clients x %d queries on 2 servers, at most %d backends "
			"over %d samples; %d client/backend pairs\n", SHARE_CLIENTS, SHARE_QUERIES,
			sm.h.max, sm.h.samples, total);
	}
	for (int i = 0; i < SHARE_CLIENTS; i++)
		PQfinish(sc[i].c);
	PQfinish(direct);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- 2. an explicit transaction keeps its server -------------------- */

START_TEST(test_transaction_keeps_server)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 2, .pool_mode = TXN, .extra_dbs = ONEDB_YAML };
	PGconn *a, *b, *direct;
	long long pa;
	char *v;

	h_daemon_start(&d, &h_shared_pg, &o);
	direct = h_pg_connect(&h_shared_pg, NULL);

	/* pool_size 2: B keeps running meanwhile, never on A's backend. */
	a = h_connect(&d, NULL);
	b = h_connect(&d, NULL);
	h_exec_ok(a, "BEGIN");
	h_assert(PQtransactionStatus(a) == PQTRANS_INTRANS, "BEGIN: status %d", PQtransactionStatus(a));
	pa = h_backend_pid(a);
	h_exec_ok(a, "CREATE TEMP TABLE keep_t(x int) ON COMMIT DROP");
	assert_backend_state(direct, pa, "idle in transaction");
	for (int i = 0; i < 5; i++) {
		char sql[64];
		long long pb = h_backend_pid(b);

		h_assert(pb != pa, "client B ran on backend %lld inside A's open transaction", pb);
		snprintf(sql, sizeof(sql), "INSERT INTO keep_t VALUES (%d)", i);
		h_exec_ok(a, sql);
		h_assert(h_backend_pid(a) == pa,
			 "statement %d of A's transaction ran on backend %lld, the transaction began "
			 "on %lld", i, h_backend_pid(a), pa);
	}
	h_assert_value(a, "SELECT count(*) FROM keep_t", "5");
	h_exec_ok(a, "COMMIT");
	h_assert(PQtransactionStatus(a) == PQTRANS_IDLE, "COMMIT: status %d", PQtransactionStatus(a));
	PQfinish(a);
	PQfinish(b);

	/* pool_size 1: B waits for the whole of A's transaction, then gets its server. */
	a = h_connect(&d, "dbname=onedb");
	b = h_connect(&d, "dbname=onedb");
	h_exec_ok(a, "BEGIN");
	pa = h_backend_pid(a);
	h_send_query(b, "SELECT pg_backend_pid()");
	h_assert(h_still_waiting(b, WAIT_MS), "client B was served while A's transaction held the "
		 "only server");
	h_exec_ok(a, "SELECT 1");
	h_assert(h_backend_pid(a) == pa, "A changed backend inside its transaction");
	h_assert(h_still_waiting(b, 100), "client B was served while A's transaction held the "
		 "only server");
	h_exec_ok(a, "COMMIT");
	v = h_pending_value(b, "client B after A's COMMIT");
	h_assert(atoll(v) == pa, "B ran on backend %s, the only server is %lld", v, pa);
	free(v);
	/* Now A waits for nothing: B's autocommit statement is over. */
	h_assert(h_backend_pid(a) == pa,
		 "A's next transaction on another backend with pool_size 1");

	PQfinish(a);
	PQfinish(b);
	PQfinish(direct);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- 3. a failed transaction holds its server until ROLLBACK --------- */

START_TEST(test_failed_transaction_holds_server)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_mode = TXN, .extra_dbs = ONEDB_YAML };
	PGconn *a, *b, *direct;
	long long pa;
	char *v;

	h_daemon_start(&d, &h_shared_pg, &o);
	direct = h_pg_connect(&h_shared_pg, NULL);
	a = h_connect(&d, "dbname=onedb");
	b = h_connect(&d, "dbname=onedb");

	h_exec_ok(a, "BEGIN");
	pa = h_backend_pid(a);
	h_exec_fails(a, "SELECT 1/0", "22012");
	h_assert(PQtransactionStatus(a) == PQTRANS_INERROR, "after an error in a transaction: "
		 "status %d, expected PQTRANS_INERROR", PQtransactionStatus(a));
	assert_backend_state(direct, pa, "idle in transaction (aborted)");

	h_send_query(b, "SELECT pg_backend_pid()");
	h_assert(h_still_waiting(b, WAIT_MS), "client B was served while A's failed transaction "
		 "held the only server");
	h_exec_fails(a, "SELECT 1", "25P02");
	h_assert(PQtransactionStatus(a) == PQTRANS_INERROR, "status %d", PQtransactionStatus(a));
	h_assert(h_still_waiting(b, 100), "client B was served before A's ROLLBACK");

	h_exec_ok(a, "ROLLBACK");
	h_assert(PQtransactionStatus(a) == PQTRANS_IDLE, "after ROLLBACK: status %d",
		 PQtransactionStatus(a));
	v = h_pending_value(b, "client B after A's ROLLBACK");
	h_assert(atoll(v) == pa, "B ran on backend %s, the only server is %lld", v, pa);
	free(v);
	h_assert_value(a, "SELECT 'after rollback'", "after rollback");
	assert_backend_state(direct, pa, "idle");

	/* A leaves (Terminate) inside a failed transaction: B, waiting, gets the
	 * server rolled back, outside any transaction. */
	h_exec_ok(a, "BEGIN");
	h_exec_fails(a, "SELECT 1/0", "22012");
	h_send_query(b, "SELECT pg_backend_pid()::text || ':' || "
		     "(now() = statement_timestamp())::text");
	h_assert(h_still_waiting(b, WAIT_MS), "client B was served while A's failed transaction "
		 "held the only server");
	PQfinish(a);
	v = h_pending_value(b, "client B after A left inside a failed transaction");
	{
		char want[64];

		snprintf(want, sizeof(want), "%lld:true", pa);
		h_assert(strcmp(v, want) == 0, "B after A left: \"%s\", expected \"%s\" (the same "
			 "backend, not inside a transaction)", v, want);
	}
	free(v);
	h_assert(PQtransactionStatus(b) == PQTRANS_IDLE, "B: status %d", PQtransactionStatus(b));
	assert_backend_state(direct, pa, "idle");

	PQfinish(b);
	PQfinish(direct);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- 4. libpq pipeline mode ------------------------------------------ */

/* Next pipeline result (NULL marks the end of one query's results). */
static PGresult *pipe_next(PGconn *c, int64_t deadline)
{
	while (PQisBusy(c)) {
		struct pollfd p = { PQsocket(c), POLLIN, 0 };
		int64_t left = deadline - h_now_ms();

		h_assert(left > 0, "pipeline: no result within the deadline");
		poll(&p, 1, (int)left);
		h_assert(PQconsumeInput(c), "pipeline: %s", PQerrorMessage(c));
	}
	return PQgetResult(c);
}

/*
 * Reads the results of a pipeline: expect is one letter per query or
 * sync: 'C' command ok, 'T' tuples, 'E' error (SQLSTATE 22012), 'A'
 * aborted by an earlier error, 'S' the sync. Returns the first value of
 * the last 'T' result (caller frees).
 */
static char *pipe_expect(PGconn *c, const char *expect)
{
	int64_t deadline = h_now_ms() + H_QUERY_TIMEOUT;
	char *value = NULL;

	for (const char *e = expect; *e; e++) {
		PGresult *r = pipe_next(c, deadline);
		ExecStatusType st = r ? PQresultStatus(r) : PGRES_EMPTY_QUERY;
		ExecStatusType want = *e == 'C' ? PGRES_COMMAND_OK : *e == 'T' ? PGRES_TUPLES_OK :
				      *e == 'E' ? PGRES_FATAL_ERROR : *e == 'A' ? PGRES_PIPELINE_ABORTED :
				      PGRES_PIPELINE_SYNC;

		h_assert(r != NULL && st == want, "pipeline \"%s\", step %d: got %s [%s] %s, "
			 "expected %s", expect, (int)(e - expect), r ? PQresStatus(st) : "no result",
			 h_sqlstate(r), r ? PQresultErrorMessage(r) : "", PQresStatus(want));
		if (*e == 'E')
			h_assert(strcmp(h_sqlstate(r), "22012") == 0, "pipeline error [%s] %s",
				 h_sqlstate(r), PQresultErrorMessage(r));
		if (*e == 'T') {
			free(value);
			value = strdup(PQgetvalue(r, 0, 0));
		}
		PQclear(r);
		if (*e != 'S') {
			r = pipe_next(c, deadline);
			h_assert(r == NULL, "pipeline step %d: more than one result (%s)",
				 (int)(e - expect), PQresStatus(PQresultStatus(r)));
		}
	}
	return value;
}

static void pipe_send(PGconn *c, const char *sql)
{
	h_assert(PQsendQueryParams(c, sql, 0, NULL, NULL, NULL, NULL, 0),
		 "pipeline send \"%s\": %s", sql, PQerrorMessage(c));
}

START_TEST(test_libpq_pipeline)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_mode = TXN, .extra_dbs = ONEDB_YAML };
	PGconn *a, *b, *direct;
	char *v, *pid3, *pid4;

	direct = h_pg_connect(&h_shared_pg, NULL);
	h_exec_ok(direct, "CREATE TABLE pipe_t(x int)");
	h_daemon_start(&d, &h_shared_pg, &o);
	a = h_connect(&d, "dbname=onedb");
	b = h_connect(&d, "dbname=onedb");
	h_assert(PQenterPipelineMode(a), "enter pipeline mode: %s", PQerrorMessage(a));

	/* Three transactions in one write: explicit, implicit with an error
	 * in the middle (rolled back whole), implicit. */
	pipe_send(a, "BEGIN");
	pipe_send(a, "INSERT INTO pipe_t VALUES (1)");
	pipe_send(a, "INSERT INTO pipe_t VALUES (2)");
	pipe_send(a, "COMMIT");
	h_assert(PQpipelineSync(a), "sync");
	pipe_send(a, "INSERT INTO pipe_t VALUES (3)");
	pipe_send(a, "SELECT 1/0");
	pipe_send(a, "INSERT INTO pipe_t VALUES (4)");
	h_assert(PQpipelineSync(a), "sync");
	pipe_send(a, "INSERT INTO pipe_t VALUES (5)");
	pipe_send(a, "SELECT pg_backend_pid()");
	h_assert(PQpipelineSync(a), "sync");
	h_assert(PQflush(a) == 0, "flush");
	free(pipe_expect(a, "CCCCS"));
	free(pipe_expect(a, "CEAS"));
	pid3 = pipe_expect(a, "CTS");
	h_assert(PQtransactionStatus(a) == PQTRANS_IDLE, "after three pipelines: status %d",
		 PQtransactionStatus(a));

	/* An explicit transaction that fails inside a pipeline: ReadyForQuery
	 * says E, the server stays with A (B waits) until A's ROLLBACK. */
	pipe_send(a, "BEGIN");
	pipe_send(a, "INSERT INTO pipe_t VALUES (6)");
	pipe_send(a, "SELECT 1/0");
	pipe_send(a, "INSERT INTO pipe_t VALUES (7)");
	h_assert(PQpipelineSync(a), "sync");
	h_assert(PQflush(a) == 0, "flush");
	free(pipe_expect(a, "CCEAS"));
	h_assert(PQtransactionStatus(a) == PQTRANS_INERROR, "failed transaction in a pipeline: "
		 "status %d, expected PQTRANS_INERROR", PQtransactionStatus(a));
	h_send_query(b, "SELECT pg_backend_pid()");
	h_assert(h_still_waiting(b, WAIT_MS), "client B was served while A's pipelined transaction "
		 "was open (failed)");
	pipe_send(a, "ROLLBACK");
	pipe_send(a, "SELECT pg_backend_pid()");
	h_assert(PQpipelineSync(a), "sync");
	h_assert(PQflush(a) == 0, "flush");
	pid4 = pipe_expect(a, "CTS");
	h_assert(PQtransactionStatus(a) == PQTRANS_IDLE, "after ROLLBACK: status %d",
		 PQtransactionStatus(a));
	v = h_pending_value(b, "client B after A's pipelined ROLLBACK");
	h_assert(strcmp(v, pid4) == 0 && strcmp(v, pid3) == 0, "pool_size 1 but backends %s, %s, %s",
		 pid3, pid4, v);
	free(v);
	h_assert(PQexitPipelineMode(a), "exit pipeline mode: %s", PQerrorMessage(a));
	h_assert_value(a, "SELECT string_agg(x::text, ',' ORDER BY x) FROM pipe_t", "1,2,5");
	h_assert_value(direct, "SELECT string_agg(x::text, ',' ORDER BY x) FROM pipe_t", "1,2,5");

	free(pid3);
	free(pid4);
	PQfinish(a);
	PQfinish(b);
	h_exec_ok(direct, "DROP TABLE pipe_t");
	PQfinish(direct);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- pgbench ---------------------------------------------------------- */

/*
 * Runs pgbench through the daemon: -n, the socket, user, the given
 * arguments, then dbname. Asserts exit 0 and that every one of ntx
 * transactions was processed, none failed. Returns the output; caller frees.
 */
static char *run_pgbench(const struct h_daemon *d, const char *user, const char *dbname,
			 const char *const args[], int ntx)
{
	static int run;
	const char *argv[40];
	char port[16], out_path[H_PATH_MAX + 32], want[96], *out;
	int n = 0, rc;

	snprintf(port, sizeof(port), "%d", d->port);
	snprintf(out_path, sizeof(out_path), "%s/pgbench-%d.out", d->dir, run++);
	argv[n++] = h_pg_bin("pgbench");
	argv[n++] = "-n";
	argv[n++] = "-h";
	argv[n++] = d->sockdir;
	argv[n++] = "-p";
	argv[n++] = port;
	argv[n++] = "-U";
	argv[n++] = user;
	for (int i = 0; args[i] && n < 37; i++)
		argv[n++] = args[i];
	argv[n++] = dbname;
	argv[n] = NULL;
	rc = h_run(argv, out_path, false, 40000);
	out = h_read_file(out_path);
	h_assert(rc == 0, "pgbench %s %s exited %d:\n%s", args[0], args[1] ? args[1] : "", rc,
		 out ? out : "(no output)");
	snprintf(want, sizeof(want), "number of transactions actually processed: %d/%d", ntx, ntx);
	h_assert(out && strstr(out, want) != NULL, "pgbench: expected \"%s\":\n%s", want,
		 out ? out : "");
	h_assert(strstr(out, "number of failed transactions") == NULL ||
		 strstr(out, "number of failed transactions: 0 ") != NULL,
		 "pgbench reports failed transactions:\n%s", out);
	return out;
}

static char *write_script(const struct h_daemon *d, const char *name, const char *text)
{
	char *path = malloc(H_PATH_MAX + 64);

	snprintf(path, H_PATH_MAX + 64, "%s/%s", d->dir, name);
	h_assert(h_write_file(path, text), "write %s", path);
	return path;
}

#define BENCH_ROLE "txn_bench"

START_TEST(test_pgbench_pipeline)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 2, .pool_mode = TXN };
	struct sampler sm;
	char *script, *out;

	h_create_role(BENCH_ROLE);
	h_daemon_start(&d, &h_shared_pg, &o);
	script = write_script(&d, "pipeline.sql",
			      "\\set a random(1, 1000)\n"
			      "\\startpipeline\n"
			      "SELECT :a + 1;\n"
			      "SELECT pg_backend_pid();\n"
			      "\\endpipeline\n"
			      "\\startpipeline\n"
			      "BEGIN;\n"
			      "SELECT :a * 2;\n"
			      "SELECT 1 / (1 + :a % 2);\n"
			      "COMMIT;\n"
			      "\\endpipeline\n");
	{
		const char *args[] = { "-M", "extended", "-f", script, "-c", "6", "-j", "2",
				       "-t", "50", NULL };

		sampler_start(&sm, BENCH_ROLE);
		out = run_pgbench(&d, BENCH_ROLE, "appdb", args, 300);
		sampler_stop(&sm, 2);
	}
	free(out);
	free(script);
	h_daemon_stop_ok(&d);
}
END_TEST

START_TEST(test_pgbench_extended_and_prepared)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 2, .pool_mode = TXN, .extra_dbs = SESSDB_YAML };
	struct sampler sm;
	char *script, *out;

	h_create_role(BENCH_ROLE);
	h_daemon_start(&d, &h_shared_pg, &o);
	script = write_script(&d, "mix.sql",
			      "\\set a random(1, 1000)\n"
			      "SELECT :a + 1;\n"
			      "BEGIN;\n"
			      "SELECT :a * 2;\n"
			      "SELECT pg_backend_pid();\n"
			      "COMMIT;\n");
	/* Six clients on two servers: only transaction pooling lets them all run. */
	{
		const char *args[] = { "-M", "extended", "-f", script, "-c", "6", "-j", "2",
				       "-t", "100", NULL };

		sampler_start(&sm, BENCH_ROLE);
		out = run_pgbench(&d, BENCH_ROLE, "appdb", args, 600);
		sampler_stop(&sm, 2);
		free(out);
	}
	/* Named prepared statements need the same server: session mode. */
	{
		const char *args[] = { "-M", "prepared", "-f", script, "-c", "4", "-j", "2",
				       "-t", "100", NULL };

		out = run_pgbench(&d, BENCH_ROLE, "sessdb", args, 400);
		free(out);
	}
	free(script);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- 5. extended protocol ------------------------------------------- */

START_TEST(test_extended_unnamed)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 2, .pool_mode = TXN };
	PGconn *c[3];
	PGresult *r;
	long long in_tx;

	h_daemon_start(&d, &h_shared_pg, &o);
	for (int i = 0; i < 3; i++)
		c[i] = h_connect(&d, NULL);
	/* Three clients, two servers, interleaved unnamed statements and portals. */
	for (int round = 0; round < 5; round++) {
		for (int i = 0; i < 3; i++) {
			char p1[16], want[32];
			const char *params[2] = { p1, "x" };

			snprintf(p1, sizeof(p1), "%d", round * 10 + i);
			snprintf(want, sizeof(want), "%dx", 2 * (round * 10 + i));
			r = PQexecParams(c[i], "SELECT ($1::int * 2)::text || $2::text", 2, NULL, params,
					 NULL, NULL, 0);
			h_assert(PQresultStatus(r) == PGRES_TUPLES_OK &&
				 strcmp(PQgetvalue(r, 0, 0), want) == 0,
				 "client %d round %d: %s [%s] %s", i, round, PQresStatus(PQresultStatus(r)),
				 h_sqlstate(r), PQntuples(r) ? PQgetvalue(r, 0, 0) : PQresultErrorMessage(r));
			PQclear(r);
		}
	}
	/* An error in an extended query, then the connection is in sync. */
	{
		const char *zero[1] = { "0" };

		r = PQexecParams(c[0], "SELECT 1 / $1::int", 1, NULL, zero, NULL, NULL, 0);
		h_assert(strcmp(h_sqlstate(r), "22012") == 0, "extended error: [%s] %s", h_sqlstate(r),
			 PQresultErrorMessage(r));
		PQclear(r);
		h_assert_value(c[0], "SELECT 'in sync'", "in sync");
	}
	/* Inside BEGIN ... COMMIT, every extended query runs on one backend. */
	h_exec_ok(c[1], "BEGIN");
	in_tx = h_backend_pid(c[1]);
	for (int i = 0; i < 5; i++) {
		r = PQexecParams(c[1], "SELECT pg_backend_pid()", 0, NULL, NULL, NULL, NULL, 0);
		h_assert(PQresultStatus(r) == PGRES_TUPLES_OK && atoll(PQgetvalue(r, 0, 0)) == in_tx,
			 "extended query %d in a transaction: %s %s", i, PQresultErrorMessage(r),
			 PQntuples(r) ? PQgetvalue(r, 0, 0) : "");
		PQclear(r);
		h_assert(h_backend_pid(c[2]) != in_tx,
			 "client 2 ran inside client 1's transaction");
	}
	h_exec_ok(c[1], "COMMIT");
	for (int i = 0; i < 3; i++)
		PQfinish(c[i]);
	h_daemon_stop_ok(&d);
}
END_TEST

static size_t put_parse(char *buf, size_t at, const char *sql)
{
	char body[256];
	size_t n = 0, len = strlen(sql) + 1;

	body[n++] = '\0';                      /* unnamed statement */
	memcpy(body + n, sql, len);
	n += len;
	body[n++] = 0;                         /* no parameter types */
	body[n++] = 0;
	return h_put_msg(buf, at, 'P', body, (uint32_t)n);
}

/* Bind of the unnamed portal to the unnamed statement, one text parameter or none. */
static size_t put_bind(char *buf, size_t at, const char *param)
{
	char body[128];
	size_t n = 0;

	body[n++] = '\0';
	body[n++] = '\0';
	body[n++] = 0;                         /* no parameter formats */
	body[n++] = 0;
	body[n++] = 0;
	body[n++] = param ? 1 : 0;
	if (param) {
		uint32_t len = (uint32_t)strlen(param), be = htonl(len);

		memcpy(body + n, &be, 4);
		n += 4;
		memcpy(body + n, param, len);
		n += len;
	}
	body[n++] = 0;                         /* no result formats */
	body[n++] = 0;
	return h_put_msg(buf, at, 'B', body, (uint32_t)n);
}

static size_t put_execute(char *buf, size_t at, uint32_t max_rows)
{
	char body[5] = { 0 };
	uint32_t be = htonl(max_rows);

	memcpy(body + 1, &be, 4);
	return h_put_msg(buf, at, 'E', body, sizeof(body));
}

/*
 * Reads messages until one of type stop; returns their types as a string
 * (and the first column of the DataRows, comma-separated, in rows).
 */
static void read_until(int fd, char stop, char *types, size_t tlen, char *rows, size_t rlen)
{
	size_t nt = 0;

	types[0] = '\0';
	if (rows)
		rows[0] = '\0';
	for (;;) {
		struct h_msg m;
		int rc = h_raw_read_msg(fd, &m, H_QUERY_TIMEOUT);

		h_assert(rc == 1, "raw read after \"%s\": rc %d (0 EOF, -2 timeout)", types, rc);
		if (nt + 1 < tlen) {
			types[nt++] = m.type;
			types[nt] = '\0';
		}
		if (m.type == 'D' && rows && m.len >= 6) {
			uint32_t vlen;
			size_t used = strlen(rows);

			memcpy(&vlen, m.body + 2, 4);
			vlen = ntohl(vlen);

			snprintf(rows + used, rlen - used, "%s%.*s", used ? "," : "", (int)vlen, m.body + 6);
		}
		if (m.type == 'E')
			h_assert(stop == 'E', "unexpected ErrorResponse after \"%s\": %s", types,
				 m.body + 6);
		h_msg_free(&m);
		if (types[nt - 1] == stop)
			return;
	}
}

START_TEST(test_extended_flush_without_sync)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_mode = TXN, .extra_dbs = ONEDB_YAML };
	const char *kv[] = { "user", H_SUPERUSER, "database", "onedb", NULL };
	char buf[1024], types[64], rows[256], raw_pid[32], *v;
	struct h_login l;
	struct h_msg m;
	PGconn *b;
	size_t n;
	int fd, rc;

	h_daemon_start(&d, &h_shared_pg, &o);
	b = h_connect(&d, "dbname=onedb");
	fd = h_raw_connect(d.sockpath);
	h_assert(fd >= 0 && h_raw_login(fd, kv, &l, 10000) == 0, "raw login: [%s] %s", l.sqlstate,
		 l.message);

	/* Parse/Bind/Execute/Flush: the results come before any Sync. */
	n = put_parse(buf, 0, "SELECT ($1::int + 1)::text || ':' || pg_backend_pid()");
	n = put_bind(buf, n, "41");
	n = put_execute(buf, n, 0);
	n = h_put_msg(buf, n, 'H', "", 0);
	h_assert(h_raw_send(fd, buf, n) == 0, "send");
	read_until(fd, 'C', types, sizeof(types), rows, sizeof(rows));
	h_assert(strcmp(types, "12DC") == 0, "Parse/Bind/Execute/Flush answered with \"%s\", "
		 "expected ParseComplete BindComplete DataRow CommandComplete", types);
	h_assert(strncmp(rows, "42:", 3) == 0, "row \"%s\"", rows);
	snprintf(raw_pid, sizeof(raw_pid), "%.30s", rows + 3);

	/* No Sync yet: the extended query is open, the server stays with it. */
	h_send_query(b, "SELECT pg_backend_pid()");
	h_assert(h_still_waiting(b, WAIT_MS), "client B was served between a Flush and its Sync");

	/* A portal run in two parts, still before the Sync. */
	n = put_parse(buf, 0, "SELECT g FROM generate_series(1, 5) g");
	n = put_bind(buf, n, NULL);
	n = put_execute(buf, n, 2);
	n = h_put_msg(buf, n, 'H', "", 0);
	h_assert(h_raw_send(fd, buf, n) == 0, "send");
	read_until(fd, 's', types, sizeof(types), rows, sizeof(rows));
	h_assert(strcmp(types, "12DDs") == 0 && strcmp(rows, "1,2") == 0,
		 "portal with a row limit: \"%s\" rows %s, expected 12DDs rows 1,2", types, rows);
	n = put_execute(buf, 0, 0);
	n = h_put_msg(buf, n, 'H', "", 0);
	h_assert(h_raw_send(fd, buf, n) == 0, "send");
	read_until(fd, 'C', types, sizeof(types), rows, sizeof(rows));
	h_assert(strcmp(types, "DDDC") == 0 && strcmp(rows, "3,4,5") == 0,
		 "rest of the portal: \"%s\" rows %s", types, rows);
	h_assert(h_still_waiting(b, 100), "client B was served between a Flush and its Sync");

	/* Sync: ReadyForQuery, idle; the server goes on to B. */
	n = h_put_msg(buf, 0, 'S', "", 0);
	h_assert(h_raw_send(fd, buf, n) == 0, "send");
	rc = h_raw_read_msg(fd, &m, H_QUERY_TIMEOUT);
	h_assert(rc == 1 && m.type == 'Z' && m.len == 1 && m.body[0] == 'I',
		 "Sync: rc %d type %c status %c", rc, rc == 1 ? m.type : '-',
		 rc == 1 && m.len ? m.body[0] : '-');
	h_msg_free(&m);
	v = h_pending_value(b, "client B after the Sync");
	h_assert(strcmp(v, raw_pid) == 0, "pool_size 1, but B ran on backend %s and the raw "
		 "client on %s", v, raw_pid);
	free(v);

	/* The raw client goes on: a simple query now waits for nothing. */
	rc = h_raw_query(fd, "SELECT 'raw again'", rows, sizeof(rows), NULL, 10000);
	h_assert(rc == 0 && strcmp(rows, "raw again") == 0, "simple query after Sync: rc %d %s", rc,
		 rows);
	close(fd);
	PQfinish(b);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- 6. COPY ---------------------------------------------------------- */

/* Reads a COPY OUT to its end: lines, bytes, and the sum of the leading integers. */
static void copy_out(PGconn *c, long long *lines, long long *bytes, long long *sum,
		     long long *longest)
{
	int64_t deadline = h_now_ms() + H_QUERY_TIMEOUT;
	PGresult *r;
	char *row;
	int n;

	*lines = *bytes = *sum = *longest = 0;
	for (;;) {
		n = PQgetCopyData(c, &row, 1);
		if (n > 0) {
			(*lines)++;
			*bytes += n;
			*sum += atoll(row);
			if (n > *longest)
				*longest = n;
			PQfreemem(row);
			continue;
		}
		if (n < 0)
			break;
		{
			struct pollfd p = { PQsocket(c), POLLIN, 0 };

			h_assert(h_now_ms() < deadline, "COPY TO STDOUT stalled after %lld lines", *lines);
			poll(&p, 1, 100);
			h_assert(PQconsumeInput(c), "COPY TO: %s", PQerrorMessage(c));
		}
	}
	h_assert(n == -1, "COPY TO failed: %s", PQerrorMessage(c));
	r = h_result_try(c, H_QUERY_TIMEOUT);
	h_assert(r && PQresultStatus(r) == PGRES_COMMAND_OK, "COPY TO result: %s",
		 r ? PQresultErrorMessage(r) : "timeout");
	PQclear(r);
}

#define BIG_BYTES (20 * 1024 * 1024)
/* Bound on pgberth's peak RSS growth while 20 MB messages pass: a few
 * 32 KiB blocks are in flight, a whole message would be 20 MiB. */
#define STREAM_HWM_KB 4096

START_TEST(test_copy)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_mode = TXN, .extra_dbs = ONEDB_YAML };
	PGconn *a, *b, *direct;
	PGresult *r;
	long long lines, bytes, sum, longest;
	long hwm_base, hwm;
	char line[32], *v;

	direct = h_pg_connect(&h_shared_pg, NULL);
	h_exec_ok(direct, "CREATE TABLE copy_t(a int, b text)");
	h_daemon_start(&d, &h_shared_pg, &o);
	a = h_connect(&d, "dbname=onedb");
	b = h_connect(&d, "dbname=onedb");

	/* COPY FROM STDIN holds the only server until its end; B waits. */
	r = h_exec(a, "COPY copy_t FROM STDIN");
	h_assert(PQresultStatus(r) == PGRES_COPY_IN, "COPY FROM: %s %s",
		 PQresStatus(PQresultStatus(r)), PQresultErrorMessage(r));
	PQclear(r);
	PQsetnonblocking(a, 0);
	for (int i = 1; i <= 500; i++) {
		snprintf(line, sizeof(line), "%d\trow %d\n", i, i);
		h_assert(PQputCopyData(a, line, (int)strlen(line)) == 1, "put: %s", PQerrorMessage(a));
	}
	h_assert(PQflush(a) == 0, "flush");
	h_send_query(b, "SELECT count(*) FROM copy_t");
	h_assert(h_still_waiting(b, WAIT_MS), "client B was served in the middle of A's COPY FROM");
	for (int i = 501; i <= 1000; i++) {
		snprintf(line, sizeof(line), "%d\trow %d\n", i, i);
		h_assert(PQputCopyData(a, line, (int)strlen(line)) == 1, "put: %s", PQerrorMessage(a));
	}
	h_assert(PQputCopyEnd(a, NULL) == 1, "end: %s", PQerrorMessage(a));
	r = h_result_try(a, H_QUERY_TIMEOUT);
	h_assert(r && PQresultStatus(r) == PGRES_COMMAND_OK && strcmp(PQcmdTuples(r), "1000") == 0,
		 "COPY FROM result: %s", r ? PQresultErrorMessage(r) : "timeout");
	PQclear(r);
	v = h_pending_value(b, "client B after the COPY");
	h_assert(strcmp(v, "1000") == 0, "B counted %s rows after the COPY", v);
	free(v);
	h_assert_value(direct, "SELECT count(*) || ':' || sum(a) FROM copy_t", "1000:500500");

	/* A COPY FROM that fails on bad data: error, then the server serves again. */
	r = h_exec(a, "COPY copy_t FROM STDIN");
	h_assert(PQresultStatus(r) == PGRES_COPY_IN, "COPY FROM: %s", PQresultErrorMessage(r));
	PQclear(r);
	PQsetnonblocking(a, 0);
	h_assert(PQputCopyData(a, "1\tok\nnot-a-number\tbad\n", 22) == 1, "put");
	h_assert(PQputCopyEnd(a, NULL) == 1, "end");
	r = h_result_try(a, H_QUERY_TIMEOUT);
	h_assert(r && strcmp(h_sqlstate(r), "22P02") == 0, "bad COPY data: [%s] %s", h_sqlstate(r),
		 r ? PQresultErrorMessage(r) : "timeout");
	PQclear(r);
	h_assert_value(b, "SELECT count(*) FROM copy_t", "1000");
	h_assert_value(a, "SELECT 'after failed copy'", "after failed copy");

	/* 100k rows out. */
	r = h_exec(a, "COPY (SELECT g FROM generate_series(1, 100000) g) TO STDOUT");
	h_assert(PQresultStatus(r) == PGRES_COPY_OUT, "COPY TO: %s", PQresultErrorMessage(r));
	PQclear(r);
	copy_out(a, &lines, &bytes, &sum, &longest);
	h_assert(lines == 100000 && sum == 5000050000LL, "COPY TO STDOUT: %lld lines, sum %lld",
		 lines, sum);
	PQsetnonblocking(a, 0);
	h_assert_value(b, "SELECT 'b between'", "b between");

	/* One 20 MB row through COPY, one 20 MB value through a query and one
	 * 20 MB parameter in: streamed, so pgberth's peak RSS hardly moves. */
	hwm_base = h_proc_status_kb(d.pid, "VmHWM");
	h_assert(hwm_base > 0, "cannot read VmHWM of %d", (int)d.pid);
	r = h_exec(a, "COPY (SELECT repeat('y', 20 * 1024 * 1024)) TO STDOUT");
	h_assert(PQresultStatus(r) == PGRES_COPY_OUT, "COPY TO: %s", PQresultErrorMessage(r));
	PQclear(r);
	copy_out(a, &lines, &bytes, &sum, &longest);
	h_assert(lines == 1 && longest == BIG_BYTES + 1, "20 MB COPY row: %lld lines, "
		 "longest %lld bytes", lines, longest);
	PQsetnonblocking(a, 0);
	r = h_exec(a, "SELECT repeat('x', 20 * 1024 * 1024)");
	h_assert(PQresultStatus(r) == PGRES_TUPLES_OK && PQgetlength(r, 0, 0) == BIG_BYTES,
		 "20 MB value: %s, %d bytes", PQresStatus(PQresultStatus(r)),
		 PQntuples(r) ? PQgetlength(r, 0, 0) : -1);
	{
		const char *p = PQgetvalue(r, 0, 0);

		for (int i = 0; i < BIG_BYTES; i += 4099)
			h_assert(p[i] == 'x', "20 MB value: byte %d is 0x%02x", i, (unsigned char)p[i]);
		h_assert(p[BIG_BYTES - 1] == 'x', "20 MB value: last byte");
	}
	PQclear(r);
	{
		char *big = malloc(BIG_BYTES + 1);
		const char *param[1] = { big };

		h_assert(big != NULL, "out of memory");
		memset(big, 'z', BIG_BYTES);
		big[BIG_BYTES] = '\0';
		r = PQexecParams(a, "SELECT length($1)", 1, NULL, param, NULL, NULL, 0);
		free(big);
		h_assert(PQresultStatus(r) == PGRES_TUPLES_OK &&
			 strcmp(PQgetvalue(r, 0, 0), "20971520") == 0,
			 "20 MB parameter: %s %s", PQresStatus(PQresultStatus(r)),
			 PQresultErrorMessage(r));
		PQclear(r);
	}
	hwm = h_proc_status_kb(d.pid, "VmHWM");
	fprintf(stderr, "e2e_txn: pgberth VmHWM %ld -> %ld KiB over 60 MB of large messages%s\n",
		hwm_base, hwm, UNDER_ASAN ? " (ASan: bound not applied)" : "");
	if (!UNDER_ASAN)
		h_assert(hwm - hwm_base < STREAM_HWM_KB, "pgberth's peak RSS grew by %ld KiB "
			 "relaying 20 MB messages: buffered, not streamed?", hwm - hwm_base);
	h_assert_value(b, "SELECT 'b after'", "b after");
	h_assert_value(a, "SELECT 'a after'", "a after");

	PQfinish(a);
	PQfinish(b);
	h_exec_ok(direct, "DROP TABLE copy_t");
	PQfinish(direct);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- 7. notices and notifications ------------------------------------ */

/* Waits for a notification on c. */
static PGnotify *wait_notify(PGconn *c, int ms)
{
	int64_t deadline = h_now_ms() + ms;
	PGnotify *n;

	for (;;) {
		struct pollfd p = { PQsocket(c), POLLIN, 0 };
		int64_t left;

		h_assert(PQconsumeInput(c), "waiting for a notification: %s", PQerrorMessage(c));
		if ((n = PQnotifies(c)) != NULL)
			return n;
		left = deadline - h_now_ms();
		if (left <= 0)
			return NULL;
		poll(&p, 1, (int)left);
	}
}

START_TEST(test_notice_and_notify)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 2, .pool_mode = TXN,
				   .extra_dbs = ONEDB_YAML SESSDB_YAML };
	struct notices ns = { 0 };
	PGconn *a, *one, *s, *direct;
	PGnotify *n;
	long long pid;

	h_daemon_start(&d, &h_shared_pg, &o);
	a = h_connect(&d, NULL);
	PQsetNoticeReceiver(a, collect_notice, &ns);
	h_exec_ok(a, "DO $$ BEGIN RAISE NOTICE 'berth-autocommit'; END $$");
	h_assert(ns.n == 1 && strcmp(ns.text, "berth-autocommit") == 0 &&
		 strcmp(ns.severity, "NOTICE") == 0, "notices: %d \"%s\" (%s)", ns.n, ns.text,
		 ns.severity);
	h_exec_ok(a, "BEGIN");
	h_exec_ok(a, "DO $$ BEGIN RAISE NOTICE 'berth-in-tx'; RAISE WARNING 'berth-warn'; END $$");
	h_exec_ok(a, "COMMIT");
	h_assert(ns.n == 3 && strcmp(ns.text, "berth-autocommit;berth-in-tx;berth-warn") == 0,
		 "notices: %d \"%s\"", ns.n, ns.text);

	/* Transaction mode: a notification to oneself, delivered with the
	 * statement that committed it (pool_size 1: UNLISTEN on the same server). */
	one = h_connect(&d, "dbname=onedb");
	pid = h_backend_pid(one);
	h_exec_ok(one, "LISTEN berth_self; NOTIFY berth_self, 'to-myself'");
	n = wait_notify(one, 5000);
	h_assert(n != NULL, "no notification to oneself in transaction mode");
	h_assert(strcmp(n->relname, "berth_self") == 0 && strcmp(n->extra, "to-myself") == 0 &&
		 n->be_pid == pid, "notification %s/%s from %d, expected berth_self/to-myself from %lld",
		 n->relname, n->extra, n->be_pid, pid);
	PQfreemem(n);
	h_exec_ok(one, "UNLISTEN *");
	h_assert_value(one, "SELECT count(*) FROM pg_listening_channels()", "0");

	/* Session mode: another connection's NOTIFY reaches the idle client. */
	s = h_connect(&d, "dbname=sessdb");
	h_exec_ok(s, "LISTEN berth_chan");
	direct = h_pg_connect(&h_shared_pg, NULL);
	pid = h_backend_pid(direct);
	h_exec_ok(direct, "NOTIFY berth_chan, 'from-direct'");
	n = wait_notify(s, 5000);
	h_assert(n != NULL, "session mode: no notification within 5 s of the NOTIFY");
	h_assert(strcmp(n->relname, "berth_chan") == 0 && strcmp(n->extra, "from-direct") == 0 &&
		 n->be_pid == pid, "notification %s/%s from %d, expected berth_chan/from-direct "
		 "from %lld", n->relname, n->extra, n->be_pid, pid);
	PQfreemem(n);
	h_assert_value(s, "SELECT 'still listening'", "still listening");
	h_exec_ok(direct, "NOTIFY berth_chan, 'second'");
	n = wait_notify(s, 5000);
	h_assert(n != NULL && strcmp(n->extra, "second") == 0, "second notification: %s",
		 n ? n->extra : "none");
	PQfreemem(n);

	PQfinish(direct);
	PQfinish(s);
	PQfinish(one);
	PQfinish(a);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- 8. settings follow their client, and only it ---------------------- */

#define SETTINGS "current_setting('DateStyle') || '/' || current_setting('TimeZone') || '/' || " \
		 "current_setting('application_name')"

static void assert_status(PGconn *c, const char *name, const char *want, const char *who)
{
	const char *v = PQparameterStatus(c, name);

	h_assert(v && strcmp(v, want) == 0, "%s: ParameterStatus %s is \"%s\", expected \"%s\"",
		 who, name, v ? v : "(none)", want);
}

START_TEST(test_set_follows_client)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 2, .pool_mode = TXN };
	char *def_ds = h_pg_setting("DateStyle"), *def_tz = h_pg_setting("TimeZone");
	char a_want[128], b_want[128], def_want[128], *v;
	struct pair hp;
	PGconn *a, *b;
	long long srv[2];

	h_daemon_start(&d, &h_shared_pg, &o);
	pair_open(&hp, &d, NULL);
	pair_hold(&hp);
	srv[0] = hp.pid[0];
	srv[1] = hp.pid[1];
	h_exec_ok(hp.h[0], "COMMIT");
	h_exec_ok(hp.h[1], "COMMIT");

	a = h_connect(&d, "application_name=client_a");
	b = h_connect(&d, "application_name=client_b");
	h_exec_ok(a, "SET application_name = 'a_changed'");
	assert_status(a, "application_name", "a_changed", "A after SET");
	h_exec_ok(a, "SET DateStyle = 'German'");
	assert_status(a, "DateStyle", "German, DMY", "A after SET");
	h_exec_ok(a, "SET TimeZone = 'Asia/Tokyo'");
	assert_status(a, "TimeZone", "Asia/Tokyo", "A after SET");
	snprintf(a_want, sizeof(a_want), "German, DMY/Asia/Tokyo/a_changed");
	snprintf(def_want, sizeof(def_want), "%s/%s/client_b", def_ds, def_tz);

	/* A's settings on both servers; B's defaults on both servers. */
	for (int i = 0; i < 2; i++) {
		assert_on(&hp, a, srv[i], SETTINGS, a_want, "client A");
		assert_on(&hp, b, srv[i], SETTINGS, def_want, "client B");
	}
	assert_status(b, "DateStyle", def_ds, "B");
	assert_status(b, "application_name", "client_b", "B");

	/* The other way round: B's change stays with B. */
	h_exec_ok(b, "SET DateStyle = 'SQL, DMY'");
	assert_status(b, "DateStyle", "SQL, DMY", "B after SET");
	snprintf(b_want, sizeof(b_want), "SQL, DMY/%s/client_b", def_tz);
	for (int i = 0; i < 2; i++) {
		assert_on(&hp, b, srv[i], SETTINGS, b_want, "client B");
		assert_on(&hp, a, srv[i], SETTINGS, a_want, "client A");
	}
	assert_status(a, "DateStyle", "German, DMY", "A after B's SET");

	/* Inside a transaction, a holder (no settings of its own) sees defaults. */
	pair_hold(&hp);
	for (int i = 0; i < 2; i++) {
		v = h_query_value(hp.h[i], "SELECT current_setting('DateStyle') || '/' || "
				  "current_setting('TimeZone')");
		h_assert(strncmp(v, def_ds, strlen(def_ds)) == 0 && strstr(v, def_tz) != NULL,
			 "holder %d sees \"%s\", expected the defaults %s/%s", i, v, def_ds, def_tz);
		free(v);
	}
	h_exec_ok(hp.h[0], "COMMIT");
	h_exec_ok(hp.h[1], "COMMIT");

	/* RESET brings A back to the default, on every server. */
	h_exec_ok(a, "RESET DateStyle");
	assert_status(a, "DateStyle", def_ds, "A after RESET");
	for (int i = 0; i < 2; i++)
		assert_on(&hp, a, srv[i], "current_setting('DateStyle')", def_ds, "client A after RESET");

	pair_close(&hp);
	PQfinish(a);
	PQfinish(b);
	free(def_ds);
	free(def_tz);
	h_daemon_stop_ok(&d);
}
END_TEST

START_TEST(test_startup_parameters_every_server)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 2, .pool_mode = TXN };
	char *def_ds = h_pg_setting("DateStyle"), *def_st = h_pg_setting("statement_timeout");
	struct pair hp;
	PGconn *c, *t, *e;
	long long srv[2];

	h_daemon_start(&d, &h_shared_pg, &o);
	pair_open(&hp, &d, NULL);
	pair_hold(&hp);
	srv[0] = hp.pid[0];
	srv[1] = hp.pid[1];
	h_exec_ok(hp.h[0], "COMMIT");
	h_exec_ok(hp.h[1], "COMMIT");

	/* Reported parameters from the startup packet, and one the server does not report. */
	c = h_connect(&d, "application_name=startup_app options='-c DateStyle=German "
			  "-c TimeZone=asia/tokyo'");
	t = h_connect(&d, "options='-c statement_timeout=1234'");
	e = h_connect(&d, NULL);
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < 2; i++) {
			assert_on(&hp, c, srv[i], SETTINGS, "German, DMY/Asia/Tokyo/startup_app",
				  "client with startup parameters");
			assert_on(&hp, t, srv[i], "current_setting('statement_timeout')", "1234ms",
				  "client with options statement_timeout=1234");
			assert_on(&hp, e, srv[i], "current_setting('statement_timeout')", def_st,
				  "client without options");
			assert_on(&hp, e, srv[i], "current_setting('DateStyle')", def_ds,
				  "client without options");
			assert_not_on(&hp, e, srv[i], "current_setting('application_name')",
				      "startup_app", "client without options");
			assert_on(&hp, c, srv[i], "current_setting('statement_timeout')", def_st,
				  "client with other options");
		}
	}
	/* A statement that runs over the client's own timeout is cancelled by it. */
	h_exec_fails(t, "SELECT pg_sleep(3)", "57014");
	h_assert_value(e, "SELECT pg_sleep(1.3)::text || 'slept'", "slept");

	/*
	 * What the client was told: PostgreSQL's own values, as a direct
	 * connection with the same startup packet reports them ("German, DMY",
	 * "Asia/Tokyo"), not the text the client sent.
	 */
	{
		PGconn *ref = h_pg_connect(&h_shared_pg, "application_name=startup_app "
					   "options='-c DateStyle=German -c TimeZone=asia/tokyo'");
		static const char *const names[] = { "DateStyle", "TimeZone", "application_name" };

		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
			const char *want = PQparameterStatus(ref, names[i]);
			const char *got = PQparameterStatus(c, names[i]);

			h_assert(want && got && strcmp(want, got) == 0, "client with startup "
				 "parameters: ParameterStatus %s is \"%s\", PostgreSQL reports \"%s\" "
				 "for the same startup packet", names[i], got ? got : "(none)",
				 want ? want : "(none)");
		}
		PQfinish(ref);
	}

	pair_close(&hp);
	PQfinish(c);
	PQfinish(t);
	PQfinish(e);
	free(def_ds);
	free(def_st);
	h_daemon_stop_ok(&d);
}
END_TEST

/*
 * A startup packet with a setting both in options and as a parameter of its
 * own (libpq sends PGDATESTYLE and PGTZ as parameters, PGOPTIONS as options):
 * PostgreSQL applies options first, then the parameters, so the parameter
 * wins. Through pgberth the client must end up with what PostgreSQL would
 * have given it, in ParameterStatus and in SHOW.
 */
START_TEST(test_startup_parameter_precedence)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 2, .pool_mode = TXN };
	const char *kv[] = { "user", H_SUPERUSER, "database", "appdb",
			     "options", "-c DateStyle=German -c TimeZone=UTC",
			     "datestyle", "ISO, YMD", "timezone", "Asia/Tokyo", NULL };
	char pgsock[H_PATH_MAX + 32], got[2][2][128], shown[2][2][128];
	static const char *const names[2] = { "DateStyle", "TimeZone" };
	struct h_login l;
	PGconn *first;

	h_daemon_start(&d, &h_shared_pg, &o);
	first = h_connect(&d, NULL);    /* the pool learns its defaults */
	PQfinish(first);
	snprintf(pgsock, sizeof(pgsock), "%s/.s.PGSQL.%d", h_shared_pg.sockdir, h_shared_pg.port);
	for (int via = 0; via < 2; via++) {     /* 0 PostgreSQL directly, 1 pgberth */
		int fd = h_raw_connect(via ? d.sockpath : pgsock);
		int rc;

		h_assert(fd >= 0, "connect: %s", strerror(errno));
		rc = h_raw_login(fd, kv, &l, 10000);
		h_assert(rc == 0, "%s: login rc %d [%s] %s", via ? "pgberth" : "PostgreSQL", rc,
			 l.sqlstate, l.message);
		for (int i = 0; i < 2; i++) {
			char sql[64];
			const char *ps = h_login_param(&l, names[i]);

			snprintf(got[via][i], sizeof(got[via][i]), "%s", ps ? ps : "(none)");
			snprintf(sql, sizeof(sql), "SHOW %s", names[i]);
			rc = h_raw_query(fd, sql, shown[via][i], sizeof(shown[via][i]), NULL, 10000);
			h_assert(rc == 0, "%s: %s failed", via ? "pgberth" : "PostgreSQL", sql);
		}
		close(fd);
	}
	for (int i = 0; i < 2; i++) {
		h_assert(strcmp(shown[0][i], shown[1][i]) == 0, "%s both in options and as a startup "
			 "parameter: SHOW gives \"%s\" through pgberth, \"%s\" from PostgreSQL "
			 "directly", names[i], shown[1][i], shown[0][i]);
		h_assert(strcmp(got[0][i], got[1][i]) == 0, "%s both in options and as a startup "
			 "parameter: ParameterStatus \"%s\" through pgberth, \"%s\" from PostgreSQL "
			 "directly", names[i], got[1][i], got[0][i]);
	}
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- 9. statement mode ------------------------------------------------- */

#define STMT_ROLE "txn_stmt"

START_TEST(test_statement_mode)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 1, .pool_mode = "statement" };
	struct notices ns = { 0 };
	PGconn *a, *other, *late, *direct;
	char what[900], results[600];
	bool closed, refused;

	h_create_role(STMT_ROLE);
	h_daemon_start(&d, &h_shared_pg, &o);
	direct = h_pg_connect(&h_shared_pg, NULL);
	a = h_connect(&d, "user=" STMT_ROLE);
	other = h_connect(&d, "user=" STMT_ROLE);

	/* Autocommit statements from both clients share the one server. */
	for (int i = 0; i < 3; i++) {
		h_assert_value(a, "SELECT 'a ok'", "a ok");
		h_assert_value(other, "SELECT 'other ok'", "other ok");
	}
	h_assert(h_backend_pid(a) == h_backend_pid(other), "pool_size 1, yet two backends");
	h_assert_value(a, "SELECT 1; SELECT 2", "2");

	/*
	 * BEGIN: the client is told why, with 0A000, and disconnected. On the
	 * wire that is BEGIN's CommandComplete, the FATAL, then EOF (no
	 * ReadyForQuery); libpq makes a result of each, so all are read.
	 */
	PQsetNoticeReceiver(a, collect_notice, &ns);
	h_send_query(a, "BEGIN");
	refused = results_have_error(a, "0A000", "transaction block", results, sizeof(results), 5000);
	closed = wait_closed(a, 5000);
	snprintf(what, sizeof(what), "BEGIN's results: %.400s then %s; notices: %d \"%.200s\" [%s]",
		 results, closed ? "the connection was closed" : "it stayed open", ns.n, ns.text,
		 ns.sqlstate);

	/* Nobody else noticed (the daemon is still there), and the server was
	 * not left in a transaction. */
	{
		PGresult *o_r = h_exec_try(other, "SELECT now() = statement_timestamp()", 10000);
		char desc[64] = "running";

		int st;

		/* If the other client lost its connection, was it a crash? */
		if ((!o_r || PQresultStatus(o_r) != PGRES_TUPLES_OK) &&
		    h_wait_pid(d.pid, 1000, &st) >= 0) {
			d.pid = 0;
			d.status = st;
		}
		if (h_daemon_exited(&d))
			h_describe_status(d.status, desc, sizeof(desc));
		h_assert(d.pid > 0, "pgberth died after refusing a transaction block in statement mode "
			 "(%s); %s", desc, what);
		h_assert(o_r && PQresultStatus(o_r) == PGRES_TUPLES_OK &&
			 strcmp(PQgetvalue(o_r, 0, 0), "t") == 0, "the other client, after the refused "
			 "BEGIN: %s %s", o_r ? PQresStatus(PQresultStatus(o_r)) : "no result",
			 o_r ? PQresultErrorMessage(o_r) : PQerrorMessage(other));
		PQclear(o_r);
	}
	h_assert(PQtransactionStatus(other) == PQTRANS_IDLE, "other client: status %d",
		 PQtransactionStatus(other));
	h_assert(refused, "statement mode: expected BEGIN to fail with 0A000 about transaction "
		 "blocks; %s", what);
	h_assert(closed, "statement mode: the connection stayed open after BEGIN was refused");
	PQfinish(a);

	late = h_connect(&d, "user=" STMT_ROLE);
	h_assert_value(late, "SELECT 'late ok'", "late ok");
	h_assert(h_poll_until(direct, "SELECT count(*) = 0 FROM pg_stat_activity WHERE usename = '"
			      STMT_ROLE "' AND state LIKE 'idle in transaction%'", 5000),
		 "a backend of the statement-mode pool is left idle in transaction");
	h_assert(role_backends(direct, STMT_ROLE) <= 1, "statement mode, pool_size 1: %lld backends",
		 role_backends(direct, STMT_ROLE));

	PQfinish(late);
	PQfinish(other);
	PQfinish(direct);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- 10. a per-user session override ------------------------------------ */

#define SESS_ROLE "txn_sessuser"
#define POOLED_ROLE "txn_pooled"

START_TEST(test_per_user_session_override)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 2, .pool_mode = TXN,
				   .extra_appdb = "    users:\n"
						  "      " SESS_ROLE ": {pool_mode: session}\n" };
	PGconn *s1, *s2, *t[4], *direct;
	struct pair hp;
	long long p1, p2, x1, x2;

	h_create_role(SESS_ROLE);
	h_create_role(POOLED_ROLE);
	h_daemon_start(&d, &h_shared_pg, &o);
	direct = h_pg_connect(&h_shared_pg, NULL);

	/* The session user: one backend each for the whole session. */
	s1 = h_connect(&d, "user=" SESS_ROLE);
	s2 = h_connect(&d, "user=" SESS_ROLE);
	p1 = h_backend_pid(s1);
	p2 = h_backend_pid(s2);
	h_assert(p1 != p2, "two session-mode clients share backend %lld", p1);
	h_exec_ok(s1, "CREATE TEMP TABLE sess_t(x int)");
	for (int i = 0; i < 4; i++)
		t[i] = h_connect(&d, "user=" POOLED_ROLE);
	for (int round = 0; round < 5; round++) {
		char sql[64];

		snprintf(sql, sizeof(sql), "INSERT INTO sess_t VALUES (%d)", round);
		h_exec_ok(s1, sql);
		for (int i = 0; i < 4; i++)
			h_exec_ok(t[i], "SELECT 1");
		h_assert(h_backend_pid(s1) == p1 && h_backend_pid(s2) == p2,
			 "round %d: a session-mode client changed backend", round);
	}
	h_assert_value(s1, "SELECT count(*) FROM sess_t", "5");
	h_assert(role_backends(direct, SESS_ROLE) == 2, "two idle session clients, %lld backends",
		 role_backends(direct, SESS_ROLE));
	h_assert(role_backends(direct, POOLED_ROLE) <= 2, "four transaction clients, %lld backends "
		 "(pool_size 2)", role_backends(direct, POOLED_ROLE));

	/* The other user is pooled per transaction: steered from one backend to the other. */
	pair_open(&hp, &d, "user=" POOLED_ROLE);
	pair_hold(&hp);
	h_exec_ok(hp.h[0], "COMMIT");
	x1 = h_backend_pid(t[0]);
	h_exec_ok(hp.h[0], "BEGIN");
	h_exec_ok(hp.h[1], "COMMIT");
	x2 = h_backend_pid(t[0]);
	h_exec_ok(hp.h[0], "COMMIT");
	h_assert(x1 == hp.pid[0] && x2 == hp.pid[1], "transaction-mode client ran on %lld then %lld, "
		 "expected %lld then %lld", x1, x2, hp.pid[0], hp.pid[1]);
	h_assert(h_backend_pid(s1) == p1, "the session client changed backend");
	pair_close(&hp);

	for (int i = 0; i < 4; i++)
		PQfinish(t[i]);
	PQfinish(s1);
	PQfinish(s2);
	PQfinish(direct);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- 11. stress: 50 threads, 3 servers --------------------------------- */

#define STRESS_ROLE "txn_stress"
#define STRESS_THREADS 50
#define STRESS_TX 200
#define STRESS_DEADLINE_MS 40000

struct stress_thread {
	const char *conninfo;
	pthread_barrier_t *start;
	int index;
	int done;                      /* transactions completed */
	int64_t took_ms;
	char error[256];
};

static bool stress_step(struct stress_thread *t, PGconn *c, const char *sql, ExecStatusType want,
			long long *value)
{
	PGresult *r = h_exec_try(c, sql, 20000);

	if (!r || PQresultStatus(r) != want) {
		snprintf(t->error, sizeof(t->error), "tx %d, \"%.40s\": %s", t->done, sql,
			 r ? PQresultErrorMessage(r) : "no result within 20 s");
		PQclear(r);
		return false;
	}
	if (value)
		*value = atoll(PQgetvalue(r, 0, 0));
	PQclear(r);
	return true;
}

static void *stress_main(void *arg)
{
	struct stress_thread *t = arg;
	PGconn *c = PQconnectdb(t->conninfo);
	char update[128];
	int64_t t0;

	snprintf(update, sizeof(update), "UPDATE stress_t SET n = n + 1 WHERE id = %d "
		 "RETURNING pg_backend_pid()", t->index);
	pthread_barrier_wait(t->start);
	t0 = h_now_ms();
	if (PQstatus(c) != CONNECTION_OK) {
		snprintf(t->error, sizeof(t->error), "connect: %s", PQerrorMessage(c));
		PQfinish(c);
		return NULL;
	}
	for (int i = 0; i < STRESS_TX; i++) {
		long long p1, p2;

		if (i % 2 == 0) {
			if (!stress_step(t, c, update, PGRES_TUPLES_OK, NULL))
				break;
		} else {
			if (!stress_step(t, c, "BEGIN", PGRES_COMMAND_OK, NULL) ||
			    !stress_step(t, c, update, PGRES_TUPLES_OK, &p1) ||
			    !stress_step(t, c, "SELECT pg_backend_pid()", PGRES_TUPLES_OK, &p2) ||
			    !stress_step(t, c, "COMMIT", PGRES_COMMAND_OK, NULL))
				break;
			if (p1 != p2) {
				snprintf(t->error, sizeof(t->error), "tx %d: one transaction on backends "
					 "%lld and %lld", i, p1, p2);
				break;
			}
		}
		t->done++;
	}
	t->took_ms = h_now_ms() - t0;
	PQfinish(c);
	return NULL;
}

START_TEST(test_stress)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 3, .pool_mode = TXN };
	static struct stress_thread st[STRESS_THREADS];
	pthread_t th[STRESS_THREADS];
	pthread_barrier_t start;
	pthread_attr_t attr;
	struct sampler sm;
	struct timespec until;
	char *conninfo;
	PGconn *direct;
	int64_t t0, slowest = 0;

	h_create_role(STRESS_ROLE);
	direct = h_pg_connect(&h_shared_pg, NULL);
	h_exec_ok(direct, "CREATE TABLE stress_t(id int PRIMARY KEY, n int NOT NULL)");
	h_exec_ok(direct, "INSERT INTO stress_t SELECT g, 0 FROM generate_series(0, 49) g");
	h_exec_ok(direct, "GRANT ALL ON stress_t TO " STRESS_ROLE);
	h_daemon_start(&d, &h_shared_pg, &o);
	conninfo = h_conninfo(&d, "user=" STRESS_ROLE " connect_timeout=30");

	memset(st, 0, sizeof(st));
	pthread_barrier_init(&start, NULL, STRESS_THREADS + 1);
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	for (int i = 0; i < STRESS_THREADS; i++) {
		st[i].conninfo = conninfo;
		st[i].start = &start;
		st[i].index = i;
		h_assert(pthread_create(&th[i], &attr, stress_main, &st[i]) == 0, "thread %d", i);
	}
	pthread_attr_destroy(&attr);
	sampler_start(&sm, STRESS_ROLE);
	pthread_barrier_wait(&start);
	t0 = h_now_ms();
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += STRESS_DEADLINE_MS / 1000;
	for (int i = 0; i < STRESS_THREADS; i++) {
		int rc = pthread_timedjoin_np(th[i], NULL, &until);

		h_assert(rc == 0, "thread %d had not finished %d s after the start (%d of %d "
			 "transactions done): starved or hung", i, STRESS_DEADLINE_MS / 1000,
			 st[i].done, STRESS_TX);
	}
	sampler_stop(&sm, 3);
	for (int i = 0; i < STRESS_THREADS; i++) {
		h_assert(st[i].done == STRESS_TX, "thread %d: %d of %d transactions; %s", i,
			 st[i].done, STRESS_TX, st[i].error);
		if (st[i].took_ms > slowest)
			slowest = st[i].took_ms;
	}
	fprintf(stderr, "e2e_txn: %d threads x %d transactions on 3 servers in %lld ms "
		"(slowest thread %lld ms), at most %d backends over %d samples\n", STRESS_THREADS,
		STRESS_TX, (long long)(h_now_ms() - t0), (long long)slowest, sm.h.max,
		sm.h.samples);
	/* Every transaction committed exactly once. */
	h_assert_value(direct, "SELECT count(*) || ':' || min(n) || ':' || max(n) FROM stress_t",
		     "50:200:200");
	pthread_barrier_destroy(&start);
	free(conninfo);
	h_exec_ok(direct, "DROP TABLE stress_t");
	PQfinish(direct);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- 12. servers that die --------------------------------------------- */

static void terminate_backend(PGconn *direct, long long pid)
{
	char sql[160];

	snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%lld)", pid);
	h_assert_value(direct, sql, "t");
	snprintf(sql, sizeof(sql), "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE "
		 "pid = %lld)", pid);
	h_assert(h_poll_until(direct, sql, 10000), "backend %lld still there 10 s after "
		 "pg_terminate_backend", pid);
}

START_TEST(test_server_terminated)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 2, .pool_mode = TXN, .extra_dbs = ONEDB_YAML };
	PGconn *a, *other, *c, *direct;
	PGresult *r;
	long long pa, p;
	int64_t t0;

	h_daemon_start(&d, &h_shared_pg, &o);
	direct = h_pg_connect(&h_shared_pg, NULL);
	other = h_connect(&d, NULL);
	h_exec_ok(other, "SELECT 1");

	/* Killed while its client is idle inside a transaction. */
	a = h_connect(&d, NULL);
	h_exec_ok(a, "BEGIN");
	pa = h_backend_pid(a);
	terminate_backend(direct, pa);
	t0 = h_now_ms();
	r = h_exec_try(a, "SELECT 1", 10000);
	h_assert(r != NULL, "the client of a terminated backend got nothing within 10 s: %s",
		 PQerrorMessage(a));
	h_assert(PQresultStatus(r) == PGRES_FATAL_ERROR, "query in a transaction whose backend was "
		 "terminated: %s", PQresStatus(PQresultStatus(r)));
	PQclear(r);
	h_assert(h_now_ms() - t0 < 5000, "error took %lld ms", (long long)(h_now_ms() - t0));
	PQfinish(a);
	h_assert_value(other, "SELECT 'other unaffected'", "other unaffected");
	c = h_connect(&d, NULL);
	p = h_backend_pid(c);
	h_assert(p != pa, "a new client ran on the terminated backend %lld", pa);
	PQfinish(c);

	/* Killed in the middle of its client's query. */
	a = h_connect(&d, NULL);
	h_exec_ok(a, "BEGIN");
	pa = h_backend_pid(a);
	h_send_query(a, "SELECT pg_sleep(30) /* berth-doomed */");
	{
		char sql[160];

		snprintf(sql, sizeof(sql), "SELECT state = 'active' FROM pg_stat_activity WHERE pid "
			 "= %lld", pa);
		h_assert(h_poll_until(direct, sql, 10000), "the pg_sleep never started");
	}
	terminate_backend(direct, pa);
	r = h_result_try(a, 10000);
	h_assert(r != NULL && PQresultStatus(r) == PGRES_FATAL_ERROR, "query on a terminated backend: "
		 "%s %s", r ? PQresStatus(PQresultStatus(r)) : "no result within 10 s",
		 r ? PQresultErrorMessage(r) : PQerrorMessage(a));
	PQclear(r);
	PQfinish(a);
	h_assert_value(other, "SELECT 'other still unaffected'", "other still unaffected");

	/* An idle pooled backend killed: the next transaction gets a fresh one
	 * (pool_size 1, so the dead one is the only one there was). Alternately
	 * the same client and a new one, which may be on another worker. */
	c = h_connect(&d, "dbname=onedb");
	for (int i = 0; i < 6; i++) {
		PGconn *next = i % 2 ? h_connect(&d, "dbname=onedb") : c;
		long long fresh;

		p = h_backend_pid(c);
		terminate_backend(direct, p);
		r = h_exec_try(next, "SELECT pg_backend_pid()", 10000);
		h_assert(r != NULL && PQresultStatus(r) == PGRES_TUPLES_OK, "round %d: the transaction "
			 "after its idle server was terminated: %s", i,
			 r ? PQresultErrorMessage(r) : "no result within 10 s");
		fresh = atoll(PQgetvalue(r, 0, 0));
		PQclear(r);
		h_assert(fresh != p, "round %d: ran on the terminated backend %lld", i, p);
		if (next != c)
			PQfinish(next);
	}
	h_assert(role_backends(direct, H_SUPERUSER) <= 1 + 2, "backends left: %lld",
		 role_backends(direct, H_SUPERUSER));
	PQfinish(c);
	PQfinish(other);
	PQfinish(direct);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- 13. psql ------------------------------------------------------------ */

START_TEST(test_psql_script)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 2, .pool_mode = TXN };
	char *conninfo, *script, *out, *csv, path[H_PATH_MAX + 32], text[2048];
	PGconn *holder;
	int rc;

	h_daemon_start(&d, &h_shared_pg, &o);
	/* Another client holds one of the two servers all along. */
	holder = h_connect(&d, NULL);
	h_exec_ok(holder, "BEGIN");
	h_exec_ok(holder, "SELECT 1");

	snprintf(path, sizeof(path), "%s/in.csv", d.dir);
	h_assert(h_write_file(path, "6,six\n7,seven\n"), "write in.csv");
	snprintf(text, sizeof(text),
		 "\\set ON_ERROR_STOP on\n"
		 "\\set n 5\n"
		 "CREATE TABLE psql_t(a int, b text);\n"
		 "BEGIN;\n"
		 "INSERT INTO psql_t SELECT g, 'row ' || g FROM generate_series(1, :n) g;\n"
		 "SELECT 'in-tx:' || count(*) FROM psql_t;\n"
		 "COMMIT;\n"
		 "\\copy psql_t FROM '%s/in.csv' WITH (FORMAT csv)\n"
		 "\\copy (SELECT a, b FROM psql_t ORDER BY a) TO '%s/out.csv' WITH (FORMAT csv)\n"
		 "SELECT 'total:' || count(*) || ':' || sum(a) FROM psql_t;\n"
		 "\\set v 42\n"
		 "SELECT 'var:' || :v;\n", d.dir, d.dir);
	script = write_script(&d, "script.sql", text);
	conninfo = h_conninfo(&d, NULL);
	snprintf(path, sizeof(path), "%s/psql.out", d.dir);
	{
		const char *argv[] = { h_pg_bin("psql"), "-X", "-A", "-t", "-q", "-d", conninfo,
				       "-f", script, NULL };

		rc = h_run(argv, path, false, 30000);
	}
	out = h_read_file(path);
	h_assert(rc == 0 && out && strcmp(out, "in-tx:5\ntotal:7:28\nvar:42\n") == 0,
		 "psql exited %d with output:\n%s", rc, out ? out : "(none)");
	snprintf(path, sizeof(path), "%s/out.csv", d.dir);
	csv = h_read_file(path);
	h_assert(csv && strcmp(csv, "1,row 1\n2,row 2\n3,row 3\n4,row 4\n5,row 5\n6,six\n7,seven\n")
		 == 0, "\\copy TO wrote:\n%s", csv ? csv : "(nothing)");
	h_exec_ok(holder, "COMMIT");
	h_assert_value(holder, "SELECT count(*) FROM psql_t", "7");
	h_exec_ok(holder, "DROP TABLE psql_t");

	free(csv);
	free(out);
	free(conninfo);
	free(script);
	PQfinish(holder);
	h_daemon_stop_ok(&d);
}
END_TEST

static Suite *e2e_txn_suite(void)
{
	Suite *s = suite_create("e2e_txn");
	TCase *tc;

	tc = h_tcase("txn", 60);
	h_tcase_add_pg(tc);
	tcase_add_test(tc, test_autocommit_shares_servers);
	tcase_add_test(tc, test_transaction_keeps_server);
	tcase_add_test(tc, test_failed_transaction_holds_server);
	tcase_add_test(tc, test_libpq_pipeline);
	tcase_add_test(tc, test_extended_unnamed);
	tcase_add_test(tc, test_extended_flush_without_sync);
	tcase_add_test(tc, test_copy);
	tcase_add_test(tc, test_notice_and_notify);
	tcase_add_test(tc, test_server_terminated);
	suite_add_tcase(s, tc);

	tc = h_tcase("settings", 60);
	h_tcase_add_pg(tc);
	tcase_add_test(tc, test_set_follows_client);
	tcase_add_test(tc, test_startup_parameters_every_server);
	tcase_add_test(tc, test_startup_parameter_precedence);
	tcase_add_test(tc, test_statement_mode);
	tcase_add_test(tc, test_per_user_session_override);
	suite_add_tcase(s, tc);

	tc = h_tcase("tools", 90);
	h_tcase_add_pg(tc);
	tcase_add_test(tc, test_pgbench_pipeline);
	tcase_add_test(tc, test_pgbench_extended_and_prepared);
	tcase_add_test(tc, test_psql_script);
	suite_add_tcase(s, tc);

	tc = h_tcase("stress", 90);
	h_tcase_add_pg(tc);
	tcase_add_test(tc, test_stress);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return h_main(e2e_txn_suite());
}
