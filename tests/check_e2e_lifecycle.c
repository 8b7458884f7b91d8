/*
 * End to end, the daemon's life: SIGTERM (drain_timeout, then
 * shutdown_timeout) and SIGINT (shutdown_timeout) stop it in time even
 * with a backend stuck in pg_sleep(600), and remove
 * the socket and lock files; a second daemon on the same socket refuses to
 * start; a stale socket file (synthetic, or left by a SIGKILLed daemon) is
 * replaced; --check, --version, --help and bad config files; socket_mode.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

/* ---- shutdown ----------------------------------------------------------- */

START_TEST(test_shutdown_with_stuck_backend)
{
	/* _i: 0 SIGTERM (drain first), 1 SIGINT (no drain). */
	int sig = _i == 0 ? SIGTERM : SIGINT;
	int bound = _i == 0 ? 4000 : 3000;
	struct h_daemon d;
	struct h_daemon_opts o = { .shutdown_timeout = "2s", .extra_top = "drain_timeout: 1s\n" };
	PGconn *c, *direct;
	PGresult *r;
	char desc[64];
	int ms;

	h_daemon_start(&d, &h_shared_pg, &o);
	c = h_connect(&d, NULL);
	direct = h_pg_connect(&h_shared_pg, NULL);
	h_assert(PQsendQuery(c, "SELECT pg_sleep(600) /* stuck */"), "send");
	h_assert(h_poll_until(direct, "SELECT count(*) >= 1 FROM pg_stat_activity WHERE state = "
			      "'active' AND query LIKE '%pg_sleep(600) /* stuck */%' AND pid <> "
			      "pg_backend_pid()", 10000), "pg_sleep(600) never started on the server");

	ms = h_daemon_stop(&d, sig, 10000);
	h_assert(ms >= 0, "pgberth still running 10 s after %s (killed)", strsignal(sig));
	h_assert(ms <= bound, "%s: pgberth took %d ms to exit, bound %d ms (drain_timeout 1 s for "
		 "SIGTERM, shutdown_timeout 2 s, 1 s slack)", strsignal(sig), ms, bound);
	h_describe_status(d.status, desc, sizeof(desc));
	h_assert(WIFEXITED(d.status), "pgberth ended by %s", desc);
	h_assert(!h_path_exists(d.sockpath), "socket file %s left behind", d.sockpath);
	h_assert(!h_path_exists(d.lockpath), "lock file %s left behind", d.lockpath);

	/* The client learns its connection is gone; it is not left hanging. */
	r = h_result_try(c, 5000);
	h_assert(r != NULL && PQresultStatus(r) == PGRES_FATAL_ERROR,
		 "client of a stopped pgberth: %s", r ? PQresStatus(PQresultStatus(r)) : "no answer");
	PQclear(r);
	PQfinish(c);
	/* Ours: PostgreSQL notices the vanished client (client_connection_check_interval). */
	h_exec_ok(direct, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query "
		  "LIKE '%pg_sleep(600) /* stuck */%' AND pid <> pg_backend_pid()");
	PQfinish(direct);
}
END_TEST

START_TEST(test_shutdown_idle)
{
	struct h_daemon d;
	PGconn *c;
	int ms;

	h_daemon_start(&d, &h_shared_pg, NULL);
	c = h_connect(&d, NULL);
	PQfinish(c);
	c = h_connect(&d, NULL);        /* one idle client, one pooled server */
	ms = h_daemon_stop(&d, SIGTERM, 10000);
	h_assert(ms >= 0 && ms <= 3000, "idle pgberth took %d ms to stop", ms);
	h_assert(WIFEXITED(d.status) && WEXITSTATUS(d.status) == 0, "exit status 0x%x", d.status);
	h_assert(!h_path_exists(d.sockpath) && !h_path_exists(d.lockpath),
		 "socket or lock file left behind");
	PQfinish(c);
}
END_TEST

/*
 * PostgreSQL frozen (SIGSTOP): a client's cancel makes pgberth run PQcancel,
 * which blocks on the stopped postmaster inside libuv's thread pool, so the
 * worker cannot finish. SIGTERM must still end the daemon within
 * drain_timeout + shutdown_timeout (+1 s), and leave no socket or lock file.
 * The client's own PQcancel waits, as it would on the frozen postmaster,
 * until pgberth closes the cancel connection as it stops.
 */
START_TEST(test_shutdown_with_frozen_postgres)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .shutdown_timeout = "1s", .extra_top = "drain_timeout: 1s\n",
				   .log_level = "debug" };
	struct h_cancel_job job;
	PGconn *c, *direct;
	int ms, backend;
	long off;

	h_daemon_start(&d, &h_shared_pg, &o);
	c = h_connect(&d, NULL);
	direct = h_pg_connect(&h_shared_pg, NULL);
	h_assert(PQsendQuery(c, "SELECT pg_sleep(600) /* frozen */"), "send");
	h_assert(h_poll_until(direct, "SELECT count(*) >= 1 FROM pg_stat_activity WHERE state = "
			      "'active' AND query LIKE '%pg_sleep(600) /* frozen */%' AND pid <> "
			      "pg_backend_pid()", 10000), "pg_sleep(600) never started on the server");
	backend = (int)h_query_ll(direct, "SELECT pid FROM pg_stat_activity WHERE query LIKE "
				  "'%pg_sleep(600) /* frozen */%' AND pid <> pg_backend_pid()");
	PQfinish(direct);

	h_assert(kill(h_shared_pg.pid, SIGSTOP) == 0 && kill(backend, SIGSTOP) == 0, "SIGSTOP: %s",
		 strerror(errno));
	off = h_daemon_log_size(&d);
	h_cancel_start(c, &job);
	bool sent = h_daemon_wait_log(&d, off, "sending cancel", 10000);

	ms = h_daemon_stop(&d, SIGTERM, 10000);
	bool closed = h_cancel_wait(&job, 10000);
	kill(backend, SIGCONT);
	kill(h_shared_pg.pid, SIGCONT);
	h_assert(sent, "pgberth never forwarded the cancel");
	h_assert(closed, "the cancel connection was still open 10 s after pgberth stopped");
	h_assert(ms >= 0, "pgberth still running 10 s after SIGTERM with PostgreSQL frozen (killed)");
	h_assert(ms <= 3000, "pgberth took %d ms to exit with PostgreSQL frozen; drain_timeout and "
		 "shutdown_timeout are 1 s each (+1 s slack)", ms);
	h_assert(WIFEXITED(d.status), "pgberth did not exit normally (status 0x%x)", d.status);
	h_assert(!h_path_exists(d.sockpath), "socket file %s left behind", d.sockpath);
	h_assert(!h_path_exists(d.lockpath), "lock file %s left behind", d.lockpath);
	PQfinish(c);
	direct = h_pg_connect(&h_shared_pg, NULL);
	h_exec_ok(direct, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query "
		  "LIKE '%pg_sleep(600) /* frozen */%' AND pid <> pg_backend_pid()");
	PQfinish(direct);
}
END_TEST

/*
 * A "server" that accepts connections (the kernel's backlog) but never
 * answers: the login must fail with 08006 within server_connect_timeout,
 * and the slot must be free again for the next client.
 */
START_TEST(test_server_connect_timeout)
{
	struct h_daemon d;
	struct h_daemon_opts o = { 0 };
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	char *mute = h_mkdtemp("mute");
	char *dbs = NULL;
	const char *kv[] = { "user", H_SUPERUSER, "database", "mutedb", NULL };
	struct h_login l;
	int lfd, fd, rc;

	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/.s.PGSQL.5999", mute);
	lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	h_assert(lfd >= 0 && bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) == 0 &&
		 listen(lfd, 16) == 0, "mute server: %s", strerror(errno));
	h_assert(asprintf(&dbs, "  mutedb:\n"
			  "    conninfo: \"host=%s port=5999 dbname=appdb\"\n"
			  "    pool_size: 1\n", mute) > 0, "asprintf");
	o.extra_dbs = dbs;
	o.server_connect_timeout = "700ms";
	h_daemon_start(&d, &h_shared_pg, &o);
	for (int attempt = 0; attempt < 2; attempt++) {
		int64_t t0 = h_now_ms();

		fd = h_raw_connect(d.sockpath);
		h_assert(fd >= 0, "connect: %s", strerror(errno));
		rc = h_raw_login(fd, kv, &l, 10000);
		h_assert(rc == 1 && strcmp(l.sqlstate, "08006") == 0,
			 "attempt %d: login to a mute server: rc %d [%s] %s", attempt, rc, l.sqlstate,
			 l.message);
		h_assert(h_now_ms() - t0 >= 600 && h_now_ms() - t0 < 3000,
			 "attempt %d: refusal after %lld ms, server_connect_timeout is 700 ms", attempt,
			 (long long)(h_now_ms() - t0));
		close(fd);
	}
	h_assert_serves(&d);
	h_daemon_stop_ok(&d);
	close(lfd);
	free(dbs);
	h_rm_rf(mute);
	free(mute);
}
END_TEST

/* ---- one daemon per socket ---------------------------------------------- */

START_TEST(test_second_daemon_refuses)
{
	struct h_daemon first, second;
	struct h_daemon_opts o = { 0 };
	char desc[64], *errtext;
	int status, ms;

	h_daemon_start(&first, &h_shared_pg, NULL);
	o.sockdir = first.sockdir;
	h_daemon_prepare(&second, &h_shared_pg, &o);
	h_assert(h_daemon_spawn(&second) > 0, "spawn");
	ms = h_wait_pid(second.pid, 10000, &status);
	if (ms < 0)
		h_daemon_stop(&second, SIGKILL, 1000);
	h_assert(ms >= 0, "a second pgberth on the same socket is still running after 10 s");
	second.pid = 0;
	h_describe_status(status, desc, sizeof(desc));
	h_assert(WIFEXITED(status) && WEXITSTATUS(status) != 0,
		 "second pgberth on the same socket ended with %s, expected a nonzero exit", desc);
	errtext = h_read_file(second.log);
	h_assert(errtext && *errtext, "the second pgberth refused without a message");
	free(errtext);

	/* The first is untouched: its socket and lock are there and it serves. */
	h_assert(!h_daemon_exited(&first), "the first pgberth exited");
	h_assert(h_is_socket(first.sockpath, NULL),
		 "the refused daemon removed the live socket file");
	h_assert(h_path_exists(first.lockpath), "the refused daemon removed the live lock file");
	h_assert_serves(&first);
	h_daemon_stop_ok(&first);
}
END_TEST

START_TEST(test_stale_socket_replaced)
{
	struct h_daemon d;
	struct sockaddr_un sa;
	int fd;

	h_daemon_prepare(&d, &h_shared_pg, NULL);
	/* A socket file nobody listens on, as a crashed run leaves. */
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	h_assert(strlen(d.sockpath) < sizeof(sa.sun_path), "socket path too long");
	memcpy(sa.sun_path, d.sockpath, strlen(d.sockpath) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	h_assert(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "bind: %s",
		 strerror(errno));
	close(fd);
	unlink(d.lockpath);
	h_assert(h_is_socket(d.sockpath, NULL) && h_raw_connect(d.sockpath) < 0,
		 "could not fake a stale socket");

	h_assert(h_daemon_spawn(&d) > 0, "spawn");
	h_assert(h_daemon_wait_ready(&d, H_START_TIMEOUT),
		 "pgberth did not start over a stale socket file (%s)",
		 d.pid ? "still not listening" : "it exited");
	h_assert_serves(&d);
	h_daemon_stop_ok(&d);
	h_assert(!h_path_exists(d.sockpath), "socket file left behind");
}
END_TEST

START_TEST(test_restart_after_crash)
{
	struct h_daemon crashed, next;
	struct h_daemon_opts o = { 0 };

	h_daemon_start(&crashed, &h_shared_pg, NULL);
	h_assert_serves(&crashed);
	h_assert(h_daemon_stop(&crashed, SIGKILL, 5000) >= 0, "SIGKILL did not stop pgberth");

	o.sockdir = crashed.sockdir;
	h_daemon_start(&next, &h_shared_pg, &o);
	h_assert_serves(&next);
	h_daemon_stop_ok(&next);
}
END_TEST

START_TEST(test_socket_mode)
{
	struct h_daemon d;
	struct h_daemon_opts o = { .socket_mode = "0700" };
	struct stat st;

	h_daemon_start(&d, &h_shared_pg, &o);
	h_assert(stat(d.sockpath, &st) == 0, "stat %s: %s", d.sockpath, strerror(errno));
	h_assert((st.st_mode & 0777) == 0700, "socket_mode 0700 gave mode %o", st.st_mode & 0777);
	h_daemon_stop_ok(&d);

	o.socket_mode = "0777";
	h_daemon_start(&d, &h_shared_pg, &o);
	h_assert(stat(d.sockpath, &st) == 0, "stat %s: %s", d.sockpath, strerror(errno));
	h_assert((st.st_mode & 0777) == 0777, "socket_mode 0777 gave mode %o", st.st_mode & 0777);
	h_daemon_stop_ok(&d);
}
END_TEST

/* ---- command line and config files ---------------------------------------- */

/* Runs `pgberth ARGS` and returns its exit status; output into *out (caller frees). */
static int run_daemon_cmd(const char *dir, const char *a1, const char *a2, const char *a3,
			  char **out)
{
	char path[H_PATH_MAX];
	const char *argv[] = { h_daemon_bin(), a1, a2, a3, NULL };
	int rc;

	snprintf(path, sizeof(path), "%s/cmd.out", dir);
	unlink(path);
	rc = h_run(argv, path, false, 10000);
	*out = h_read_file(path);
	if (!*out)
		*out = strdup("");
	return rc;
}

struct bad_config {
	const char *what;
	const char *yaml;              /* %s: socket dir */
	int line;                      /* line the error is on; 0: do not check */
};

#define GOOD_DBS "databases:\n  appdb:\n    conninfo: \"dbname=appdb\"\n" \
		 "    pool_size: 5\n    pool_mode: session\n"

static const struct bad_config bad_configs[] = {
	{ "unknown key",
	  "listen:\n  socket_dir: %s\n  port: 6432\nworkers: 2\nbogus_key: 1\n" GOOD_DBS, 5 },
	{ "wrong type",
	  "listen:\n  socket_dir: %s\n  port: 6432\nworkers: many\n" GOOD_DBS, 4 },
	{ "port out of range",
	  "listen:\n  socket_dir: %s\n  port: 70000\nworkers: 2\n" GOOD_DBS, 3 },
	{ "bad duration",
	  "listen:\n  socket_dir: %s\n  port: 6432\nworkers: 2\nshutdown_timeout: soon\n"
	  GOOD_DBS, 5 },
	{ "bad pool_mode",
	  "listen:\n  socket_dir: %s\n  port: 6432\nworkers: 2\n"
	  "databases:\n  appdb:\n    conninfo: \"dbname=appdb\"\n    pool_size: 5\n"
	  "    pool_mode: sometimes\n", 9 },
	{ "negative pool_size",
	  "listen:\n  socket_dir: %s\n  port: 6432\nworkers: 2\n"
	  "databases:\n  appdb:\n    conninfo: \"dbname=appdb\"\n    pool_size: -1\n"
	  "    pool_mode: session\n", 8 },
	{ "YAML syntax error",
	  "listen:\n  socket_dir: %s\n  port: [6432\nworkers: 2\n", 0 },
};

START_TEST(test_check_flag)
{
	struct h_daemon d;
	char *out, path[H_PATH_MAX + 32], needle[H_PATH_MAX + 64];
	int rc;

	/* The config every other test runs with is valid. */
	h_daemon_prepare(&d, &h_shared_pg, NULL);
	rc = run_daemon_cmd(d.dir, "--check", "-c", d.config, &out);
	h_assert(rc == 0, "--check of a good config exited %d:\n%s", rc, out);
	free(out);
	h_assert(!h_path_exists(d.sockpath), "--check created the socket");

	for (size_t i = 0; i < sizeof(bad_configs) / sizeof(bad_configs[0]); i++) {
		const struct bad_config *b = &bad_configs[i];
		char *yaml = NULL;

		snprintf(path, sizeof(path), "%s/bad%zu.yaml", d.dir, i);
		h_assert(asprintf(&yaml, b->yaml, d.sockdir) > 0, "asprintf");
		h_assert(h_write_file(path, yaml), "write %s", path);
		free(yaml);
		rc = run_daemon_cmd(d.dir, "--check", "-c", path, &out);
		h_assert(rc == 1, "--check of a config with %s exited %d, expected 1:\n%s", b->what,
			 rc, out);
		if (b->line) {
			snprintf(needle, sizeof(needle), "%s:%d:", path, b->line);
			h_assert(strstr(out, needle) != NULL,
				 "--check of a config with %s does not report %s<col>:\n%s", b->what,
				 needle, out);
		}
		free(out);

		/* And the daemon proper refuses to start on it. */
		rc = run_daemon_cmd(d.dir, "-c", path, NULL, &out);
		h_assert(rc == 1, "pgberth -c (config with %s) exited %d, expected 1:\n%s", b->what,
			 rc, out);
		free(out);
		h_assert(!h_path_exists(d.sockpath), "a refused config created the socket");
	}

	snprintf(path, sizeof(path), "%s/missing.yaml", d.dir);
	rc = run_daemon_cmd(d.dir, "--check", "-c", path, &out);
	h_assert(rc == 1, "--check of a missing file exited %d:\n%s", rc, out);
	free(out);
}
END_TEST

START_TEST(test_version_and_help)
{
	char *dir = h_mkdtemp("cmd"), *out;
	int rc;

	rc = run_daemon_cmd(dir, "--version", NULL, NULL, &out);
	h_assert(rc == 0 && *out, "--version exited %d with output \"%s\"", rc, out);
	free(out);
	rc = run_daemon_cmd(dir, "--help", NULL, NULL, &out);
	h_assert(rc == 0 && *out, "--help exited %d with output \"%s\"", rc, out);
	free(out);
	rc = run_daemon_cmd(dir, "--no-such-option", NULL, NULL, &out);
	h_assert(rc != 0, "an unknown option exited 0");
	free(out);
	free(dir);
}
END_TEST

static Suite *e2e_lifecycle_suite(void)
{
	Suite *s = suite_create("e2e_lifecycle");
	TCase *tc;

	tc = h_tcase("shutdown", 60);
	h_tcase_add_pg(tc);
	tcase_add_loop_test(tc, test_shutdown_with_stuck_backend, 0, 2);
	tcase_add_test(tc, test_shutdown_idle);
	tcase_add_test(tc, test_server_connect_timeout);
	suite_add_tcase(s, tc);

	/* Its own PostgreSQL: this one is frozen for a while. */
	tc = h_tcase("frozen", 60);
	h_tcase_add_pg(tc);
	tcase_add_test(tc, test_shutdown_with_frozen_postgres);
	suite_add_tcase(s, tc);

	tc = h_tcase("socket", 60);
	h_tcase_add_pg(tc);
	tcase_add_test(tc, test_second_daemon_refuses);
	tcase_add_test(tc, test_stale_socket_replaced);
	tcase_add_test(tc, test_restart_after_crash);
	tcase_add_test(tc, test_socket_mode);
	suite_add_tcase(s, tc);

	tc = h_tcase("config", 60);
	h_tcase_add_pg(tc);
	tcase_add_test(tc, test_check_flag);
	tcase_add_test(tc, test_version_and_help);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return h_main(e2e_lifecycle_suite());
}
