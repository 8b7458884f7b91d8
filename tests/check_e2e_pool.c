/*
 * End to end, many clients: pool_size is a hard cap on what PostgreSQL
 * sees, waiting clients are served in arrival order when a server frees up,
 * and pgbench runs through pgberth.
 *
 * The cap is checked twice over: a sampler counts the role's backends in
 * pg_stat_activity during the run, and the role ("crowd") has CONNECTION
 * LIMIT 5 in the template, so a sixth concurrent server login would be
 * refused by PostgreSQL itself and fail a client.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define NCLIENTS 100

/* ---- 100 concurrent clients, pool_size 5 ----------------------------- */

struct crowd {
	const struct h_daemon *d;
	atomic_int ok;
	atomic_int failed;
	pthread_mutex_t mtx;
	char first_error[512];         /* under mtx */
	long long pids[NCLIENTS];      /* backend pid each client saw */
};

static void crowd_fail(struct crowd *cr, const char *what, const char *msg)
{
	atomic_fetch_add(&cr->failed, 1);
	pthread_mutex_lock(&cr->mtx);
	if (!cr->first_error[0])
		snprintf(cr->first_error, sizeof(cr->first_error), "%s: %s", what, msg);
	pthread_mutex_unlock(&cr->mtx);
}

struct client_arg {
	struct crowd *cr;
	int index;
};

static void *crowd_client(void *arg)
{
	struct client_arg *a = arg;
	struct crowd *cr = a->cr;
	PGconn *c = h_connect_try(cr->d, "user=" H_CROWD_USER " connect_timeout=60");
	PGresult *r;

	if (PQstatus(c) != CONNECTION_OK) {
		crowd_fail(cr, "connect", PQerrorMessage(c));
		PQfinish(c);
		return NULL;
	}
	/* Hold the server a little, so that clients really overlap. */
	r = h_exec_try(c, "SELECT pg_backend_pid(), pg_sleep(0.02)", 60000);
	if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
		crowd_fail(cr, "query", r ? PQresultErrorMessage(r) : "no result within 60 s");
	} else {
		cr->pids[a->index] = atoll(PQgetvalue(r, 0, 0));
		atomic_fetch_add(&cr->ok, 1);
	}
	PQclear(r);
	PQfinish(c);
	return NULL;
}

START_TEST(test_hundred_clients_pool_of_five)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = H_CROWD_LIMIT };
	static struct crowd cr;
	struct h_sampler sm;            /* crowd backends */
	struct client_arg args[NCLIENTS];
	pthread_t th[NCLIENTS];
	pthread_attr_t attr;
	PGconn *direct;
	int64_t t0;

	memset(&cr, 0, sizeof(cr));
	pthread_mutex_init(&cr.mtx, NULL);
	h_daemon_start(&d, &h_shared_pg, &o);
	cr.d = &d;
	h_sampler_start(&sm, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
			"'client backend' AND pid <> pg_backend_pid() AND usename = '"
			H_CROWD_USER "'");

	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	t0 = h_now_ms();
	for (int i = 0; i < NCLIENTS; i++) {
		args[i].cr = &cr;
		args[i].index = i;
		h_assert(pthread_create(&th[i], &attr, crowd_client, &args[i]) == 0,
			 "pthread_create %d", i);
	}
	for (int i = 0; i < NCLIENTS; i++)
		pthread_join(th[i], NULL);
	pthread_attr_destroy(&attr);
	h_sampler_stop(&sm);

	fprintf(stderr, "e2e_pool: %d clients in %lld ms, at most %d crowd backends over %d samples\n",
		NCLIENTS, (long long)(h_now_ms() - t0), sm.max, sm.samples);
	h_assert(atomic_load(&cr.ok) == NCLIENTS, "%d of %d clients succeeded; first error: %s",
		 atomic_load(&cr.ok), NCLIENTS, cr.first_error);
	h_assert(sm.max >= 1, "the sampler never saw a server connection");
	h_assert(sm.max <= H_CROWD_LIMIT, "PostgreSQL saw %d connections from pgberth (pool_size %d)",
		 sm.max, H_CROWD_LIMIT);
	/* After the run, what is left is idle pooled servers: still within the cap. */
	direct = h_pg_connect(&h_shared_pg, NULL);
	{
		long long left = h_query_ll(direct, "SELECT count(*) FROM pg_stat_activity WHERE "
					    "usename = '" H_CROWD_USER "'");

		h_assert(left <= H_CROWD_LIMIT, "%lld crowd backends after the run", left);
	}
	PQfinish(direct);
	pthread_mutex_destroy(&cr.mtx);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- waiting clients ---------------------------------------------------- */

START_TEST(test_waiters_fifo)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 1 };
	PostgresPollingStatusType sb, sc;
	PGconn *a, *b, *c;
	long long pid;
	int rc;

	h_daemon_start(&d, &h_shared_pg, &o);
	a = h_connect(&d, NULL);
	pid = h_query_ll(a, "SELECT pg_backend_pid()");

	/* B, then C, ask for the only server; neither may log in while A holds it. */
	b = h_connect_start(&d, NULL, false, &sb);
	rc = h_drive_connect(b, &sb, h_now_ms() + 300);
	h_assert(rc == -1, "client B finished its login (%s) while A held the only server",
		 rc == PGRES_POLLING_OK ? "ok" : PQerrorMessage(b));
	c = h_connect_start(&d, NULL, false, &sc);
	rc = h_drive_connect(c, &sc, h_now_ms() + 300);
	h_assert(rc == -1, "client C finished its login (%s) while A held the only server",
		 rc == PGRES_POLLING_OK ? "ok" : PQerrorMessage(c));

	/* A leaves: B, first in line, gets A's server; C keeps waiting. */
	PQfinish(a);
	rc = h_drive_connect(b, &sb, h_now_ms() + 10000);
	h_assert(rc == PGRES_POLLING_OK, "client B: %s",
		 rc == -1 ? "still waiting 10 s after the server was released" : PQerrorMessage(b));
	h_assert(h_query_ll(b, "SELECT pg_backend_pid()") == pid, "B got a different server");
	rc = h_drive_connect(c, &sc, h_now_ms() + 300);
	h_assert(rc == -1, "client C logged in (%s) although B, ahead of it, holds the server",
		 rc == PGRES_POLLING_OK ? "ok" : PQerrorMessage(c));

	PQfinish(b);
	rc = h_drive_connect(c, &sc, h_now_ms() + 10000);
	h_assert(rc == PGRES_POLLING_OK, "client C: %s",
		 rc == -1 ? "still waiting 10 s after the server was released" : PQerrorMessage(c));
	h_assert(h_query_ll(c, "SELECT pg_backend_pid()") == pid, "C got a different server");
	PQfinish(c);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- which workers accept ------------------------------------------------ */

#define HELD 16
#define CHURNERS 4

/* The worker a client is on: pgberth's BackendKeyData pid carries it,
 * plus one, in its top byte. */
static int client_worker(PGconn *c)
{
	return (int)((unsigned)PQbackendPID(c) >> 24) - 1;
}

/* Connects HELD clients one after another and keeps them open; returns how
 * many landed on worker 1. */
static int hold_clients(const struct h_daemon *d, PGconn **held)
{
	int on_w1 = 0;

	for (int i = 0; i < HELD; i++) {
		held[i] = h_connect(d, NULL);
		h_assert_value(held[i], "SELECT 1", "1");
		on_w1 += client_worker(held[i]) == 1;
	}
	return on_w1;
}

static void release_clients(PGconn **held)
{
	for (int i = 0; i < HELD; i++)
		PQfinish(held[i]);
}

struct churn {
	const struct h_daemon *d;
	atomic_bool stop;
	atomic_int sessions;
	atomic_int on_w1;
	atomic_int failed;
};

/* Connect, one query, disconnect, as fast as it goes, until told to stop. */
static void *churn_client(void *arg)
{
	struct churn *ch = arg;

	while (!atomic_load(&ch->stop)) {
		PGconn *c = h_connect_try(ch->d, NULL);
		PGresult *r = PQstatus(c) == CONNECTION_OK ? h_exec_try(c, "SELECT 1", 10000) : NULL;

		if (r == NULL || PQresultStatus(r) != PGRES_TUPLES_OK)
			atomic_fetch_add(&ch->failed, 1);
		else if (client_worker(c) == 1)
			atomic_fetch_add(&ch->on_w1, 1);
		atomic_fetch_add(&ch->sessions, 1);
		PQclear(r);
		PQfinish(c);
	}
	return NULL;
}

/* accept_spread churn: clients that stay all land on worker 0; while
 * clients come and go quickly worker 1 takes some; once that is over,
 * worker 0 alone again. A reload to always lets worker 1 take clients that
 * stay. */
START_TEST(test_accept_spread)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 5, .pool_mode = "transaction",
				   .accept_spread = "churn", .log_level = "debug" };
	struct churn ch = { .d = &d };
	pthread_t th[CHURNERS];
	PGconn *held[HELD];
	int n;

	h_daemon_start(&d, &h_shared_pg, &o);
	n = hold_clients(&d, held);
	h_assert(n == 0, "%d of %d clients that stay landed on worker 1 before any churn", n, HELD);
	release_clients(held);

	long off = h_daemon_log_size(&d);
	int64_t t0 = h_now_ms();
	for (int i = 0; i < CHURNERS; i++)
		h_assert(pthread_create(&th[i], NULL, churn_client, &ch) == 0, "pthread_create");
	while (atomic_load(&ch.on_w1) == 0 && h_now_ms() - t0 < 20000)
		h_sleep_ms(10);
	atomic_store(&ch.stop, true);
	for (int i = 0; i < CHURNERS; i++)
		pthread_join(th[i], NULL);
	fprintf(stderr, "e2e_pool: churn: %d sessions in %lld ms, %d on worker 1\n",
		atomic_load(&ch.sessions), (long long)(h_now_ms() - t0), atomic_load(&ch.on_w1));
	h_assert(atomic_load(&ch.failed) == 0, "%d of %d short sessions failed", atomic_load(&ch.failed),
		 atomic_load(&ch.sessions));
	h_assert(atomic_load(&ch.on_w1) > 0, "in %d short sessions over 20 s, none landed on worker 1",
		 atomic_load(&ch.sessions));

	/* The churn is over: worker 1 stops accepting within a few ticks. */
	h_assert(h_daemon_wait_log(&d, off, "w1: stops accepting new connections", 5000),
		 "worker 1 still accepts 5 s after the churn ended");
	n = hold_clients(&d, held);
	h_assert(n == 0, "%d of %d clients that stay landed on worker 1 after the churn", n, HELD);
	release_clients(held);

	/* Reload to always: worker 1 takes clients that stay too. */
	o.accept_spread = "always";
	off = h_daemon_log_size(&d);
	char *yaml = h_daemon_config_text(&d, &h_shared_pg, &o);
	h_daemon_reload(&d, yaml);
	free(yaml);
	h_assert(h_daemon_wait_log(&d, off, "w1: starts accepting new connections", 5000),
		 "worker 1 did not start accepting after the reload to always");
	n = 0;
	PGconn *more[HELD * 4];
	int nmore = 0;
	while (n == 0 && nmore < HELD * 4) {
		more[nmore] = h_connect(&d, NULL);
		h_assert_value(more[nmore], "SELECT 1", "1");
		n += client_worker(more[nmore++]) == 1;
	}
	h_assert(n > 0, "none of %d clients that stay landed on worker 1 with always", nmore);
	for (int i = 0; i < nmore; i++)
		PQfinish(more[i]);
	h_daemon_stop_ok(&d);
}
END_TEST

/* Worker 0 does not get the listening socket (its dup fails, through the
 * faildup.so shim beside this binary): under churn the first worker that
 * got it, worker 1, accepts every client instead, and nobody is left
 * waiting on a socket that no worker watches. */
START_TEST(test_acceptor_without_worker0)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 5, .pool_mode = "transaction",
				   .accept_spread = "churn" };
	char exe[H_PATH_MAX], preload[H_PATH_MAX + 32];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	PGconn *held[HELD];

	h_assert(n > 0, "readlink /proc/self/exe: %s", strerror(errno));
	exe[n] = '\0';
	*strrchr(exe, '/') = '\0';
	snprintf(preload, sizeof(preload), "LD_PRELOAD=%s/faildup.so", exe);
	h_assert(access(preload + strlen("LD_PRELOAD="), R_OK) == 0, "%s: %s",
		 preload + strlen("LD_PRELOAD="), strerror(errno));
	/* An ASan build's runtime would otherwise refuse to come second. */
	const char *env[] = { preload, "ASAN_OPTIONS=verify_asan_link_order=0", NULL };

	h_daemon_prepare(&d, &h_shared_pg, &o);
	long off = h_daemon_log_size(&d);
	h_assert(h_daemon_spawn_env(&d, env, -1) > 0, "spawn");
	h_assert(h_daemon_wait_ready(&d, 10000), "pgberth did not come up");
	h_assert(h_daemon_wait_log(&d, off, "w0: cannot hand it the listening socket", 5000),
		 "the shim did not fail worker 0's dup of the listening socket");
	h_assert(hold_clients(&d, held) == HELD, "not every client landed on worker 1");
	release_clients(held);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- pgbench ------------------------------------------------------------- */

START_TEST(test_pgbench)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .pool_size = 10 };
	char port[16], *out, *outpath, *tps;
	double rate;
	int rc;

	/* Initialise directly on PostgreSQL... */
	snprintf(port, sizeof(port), "%d", h_shared_pg.port);
	h_daemon_start(&d, &h_shared_pg, &o);
	outpath = malloc(strlen(d.dir) + 32);
	sprintf(outpath, "%s/pgbench-init.out", d.dir);
	{
		const char *argv[] = { h_pg_bin("pgbench"), "-i", "-q", "-s", "1", "-h",
				       h_shared_pg.sockdir, "-p", port, "-U", H_SUPERUSER, "appdb",
				       NULL };

		rc = h_run(argv, outpath, false, 60000);
	}
	out = h_read_file(outpath);
	h_assert(rc == 0, "pgbench -i exited %d:\n%s", rc, out ? out : "");
	free(out);

	/* ...then select-only load through pgberth. */
	sprintf(outpath, "%s/pgbench.out", d.dir);
	snprintf(port, sizeof(port), "%d", d.port);
	{
		const char *argv[] = { h_pg_bin("pgbench"), "-n", "-S", "-c", "8", "-j", "2",
				       "-T", "3", "-h", d.sockdir, "-p", port, "-U", H_SUPERUSER,
				       "appdb", NULL };

		rc = h_run(argv, outpath, false, 40000);
	}
	out = h_read_file(outpath);
	h_assert(rc == 0, "pgbench through pgberth exited %d:\n%s", rc, out ? out : "");
	tps = out ? strstr(out, "tps = ") : NULL;
	h_assert(tps != NULL, "no tps in pgbench output:\n%s", out ? out : "");
	rate = strtod(tps + 6, NULL);
	fprintf(stderr, "e2e_pool: pgbench -S -c 8 through pgberth: %.0f tps\n", rate);
	h_assert(rate > 0, "pgbench reported %f tps:\n%s", rate, out);
	free(out);
	free(outpath);
	h_daemon_stop_ok(&d);
}
END_TEST

static Suite *e2e_pool_suite(void)
{
	Suite *s = suite_create("e2e_pool");
	TCase *tc;

	tc = h_tcase("cap", 90);
	h_tcase_add_pg(tc);
	tcase_add_test(tc, test_hundred_clients_pool_of_five);
	tcase_add_test(tc, test_waiters_fifo);
	suite_add_tcase(s, tc);

	tc = h_tcase("spread", 90);
	h_tcase_add_pg(tc);
	tcase_add_test(tc, test_accept_spread);
	tcase_add_test(tc, test_acceptor_without_worker0);
	suite_add_tcase(s, tc);

	tc = h_tcase("pgbench", 120);
	h_tcase_add_pg(tc);
	tcase_add_test(tc, test_pgbench);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return h_main(e2e_pool_suite());
}
