/*
 * Unit tests of the configuration loader. Good files check the values and
 * defaults a running pooler would use; bad files check that the file is
 * refused and that each mistake is reported once, as file:line:column and
 * the full key path, since that is what an operator reads to fix it. Data
 * files live in tests/data/config/; the binary runs from the repo root.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "config.h"
#include "log.h"

#define DATA "tests/data/config/"

static struct config_errors errs;

static void setup(void)
{
	memset(&errs, 0, sizeof(errs));
}

static void teardown(void)
{
	config_errors_free(&errs);
}

/* Every message, one per line, for failure reports. */
static const char *all_errors(void)
{
	static char buf[8192];
	size_t n = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < errs.n && n < sizeof(buf); i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "  %s\n", errs.msgs[i]);
	return buf;
}

static bool has_error(const char *text)
{
	for (size_t i = 0; i < errs.n; i++)
		if (strstr(errs.msgs[i], text) != NULL)
			return true;
	return false;
}

static struct config *load_good(const char *file)
{
	char path[256];
	struct config *cfg;

	snprintf(path, sizeof(path), DATA "%s", file);
	cfg = config_load(path, &errs);
	ck_assert_msg(cfg != NULL, "%s refused:\n%s", path, all_errors());
	ck_assert_uint_eq(errs.n, 0);
	ck_assert_int_eq(atomic_load(&cfg->refs), 1);
	return cfg;
}

/* Loads a bad file and checks it is refused with exactly the messages in
 * want, each given without the "tests/data/config/FILE:" prefix. */
static void expect_errors(const char *file, const char *const *want, size_t nwant)
{
	char path[256], full[1024];

	snprintf(path, sizeof(path), DATA "%s", file);
	ck_assert_msg(config_load(path, &errs) == NULL, "%s was accepted", path);
	for (size_t i = 0; i < nwant; i++) {
		snprintf(full, sizeof(full), "%s:%s", path, want[i]);
		ck_assert_msg(has_error(full), "no error \"%s\"; got:\n%s", full, all_errors());
	}
	ck_assert_msg(errs.n == nwant, "%s: %zu errors, expected %zu:\n%s", path, errs.n, nwant,
	              all_errors());
}

#define EXPECT_ERRORS(file, ...) do { \
	static const char *const want_[] = {__VA_ARGS__}; \
	expect_errors(file, want_, sizeof(want_) / sizeof(want_[0])); \
} while (0)

static struct config *parse_good(const char *text)
{
	struct config *cfg = config_parse("mem", text, strlen(text), &errs);

	ck_assert_msg(cfg != NULL, "refused:\n%s\n%s", text, all_errors());
	ck_assert_uint_eq(errs.n, 0);
	return cfg;
}

/* The same as expect_errors for a text in memory, named "mem". */
static void expect_parse_errors(const char *text, const char *const *want, size_t nwant)
{
	char full[1024];

	ck_assert_msg(config_parse("mem", text, strlen(text), &errs) == NULL, "accepted:\n%s",
	              text);
	for (size_t i = 0; i < nwant; i++) {
		snprintf(full, sizeof(full), "mem:%s", want[i]);
		ck_assert_msg(has_error(full), "no error \"%s\"; got:\n%s", full, all_errors());
	}
	ck_assert_msg(errs.n == nwant, "%zu errors, expected %zu:\n%s", errs.n, nwant,
	              all_errors());
}

#define EXPECT_PARSE_ERRORS(text, ...) do { \
	static const char *const want_[] = {__VA_ARGS__}; \
	expect_parse_errors(text, want_, sizeof(want_) / sizeof(want_[0])); \
} while (0)

/* The value of a PQconnectStartParams keyword, or NULL. */
static const char *kw(const struct db_config *db, const char *key)
{
	for (size_t i = 0; db->keywords[i] != NULL; i++)
		if (strcmp(db->keywords[i], key) == 0)
			return db->values[i];
	return NULL;
}

static size_t nkw(const struct db_config *db)
{
	size_t n = 0;

	while (db->keywords[n] != NULL)
		n++;
	ck_assert_ptr_null(db->values[n]);
	return n;
}

/* ---- durations ---- */

START_TEST(duration_good)
{
	static const struct { const char *s; uint64_t ms; } cases[] = {
		{"0", 0}, {"10", 10000}, {"500ms", 500}, {"0ms", 0}, {"10s", 10000},
		{"5m", 300000}, {"1h", 3600000}, {"007s", 7000}, {"24h", 86400000},
		{"18446744073709551615ms", UINT64_MAX},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t ms = 1;

		ck_assert_msg(config_parse_duration(cases[i].s, &ms) == 0, "\"%s\" refused", cases[i].s);
		ck_assert_msg(ms == cases[i].ms, "\"%s\" is %llu ms", cases[i].s, (unsigned long long)ms);
	}
}
END_TEST

START_TEST(duration_bad)
{
	static const char *const cases[] = {
		"", "10x", "-1s", "1.5s", "ms", "s", "10 s", " 10s", "10s ", "+5s", "1h30m", "10S",
		"5 m", "0x10", "1e3",
		"18446744073709551616ms",       /* 2^64 */
		"18446744073709551616",         /* 2^64 s */
		"99999999999999999999h",
		"5124095576031h",               /* fits as a number, not in ms */
		"18446744073709552s",
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t ms = 42;

		ck_assert_msg(config_parse_duration(cases[i], &ms) == -1, "\"%s\" accepted", cases[i]);
		ck_assert_msg(ms == 42, "\"%s\" changed the output", cases[i]);
	}
}
END_TEST

/* ---- good files ---- */

START_TEST(good_minimal)
{
	struct config *cfg = load_good("good-minimal.yaml");
	const struct db_config *db;

	ck_assert_str_eq(cfg->path, DATA "good-minimal.yaml");
	ck_assert_str_eq(cfg->socket_dir, "/run/pgberth");
	ck_assert_int_eq(cfg->port, 6432);
	ck_assert_uint_eq(cfg->socket_mode, 0777);
	ck_assert_int_eq(cfg->workers, 2);
	ck_assert_int_eq(cfg->log_level, LOG_INFO);
	ck_assert_uint_eq(cfg->drain_timeout_ms, 30000);
	ck_assert_uint_eq(cfg->shutdown_timeout_ms, 10000);
	ck_assert_uint_eq(cfg->server_connect_timeout_ms, 15000);
	ck_assert_uint_eq(cfg->client_login_timeout_ms, 60000);
	ck_assert_str_eq(cfg->server_reset_query, "DISCARD ALL");
	ck_assert_uint_eq(cfg->ndbs, 1);

	db = config_find_db(cfg, "appdb");
	ck_assert_ptr_eq(db, &cfg->dbs[0]);
	ck_assert_ptr_null(config_find_db(cfg, "nosuchdb"));
	ck_assert_str_eq(db->name, "appdb");
	ck_assert_str_eq(db->conninfo, "host=/var/run/postgresql port=5432 dbname=appdb");
	ck_assert_int_eq(db->pool_size, 20);
	ck_assert_int_eq(db->pool_mode, POOL_TRANSACTION);
	ck_assert(!db->forced_user);
	ck_assert_uint_eq(nkw(db), 3);
	ck_assert_str_eq(kw(db, "host"), "/var/run/postgresql");
	ck_assert_str_eq(kw(db, "port"), "5432");
	ck_assert_str_eq(kw(db, "dbname"), "appdb");
	config_unref(cfg);
}
END_TEST

START_TEST(good_full)
{
	struct config *cfg = load_good("good-full.yaml");
	const struct db_config *db;

	ck_assert_str_eq(cfg->socket_dir, "/var/run/pgberth-test");
	ck_assert_int_eq(cfg->port, 7432);
	ck_assert_uint_eq(cfg->socket_mode, 0750);
	ck_assert_int_eq(cfg->workers, 3);
	ck_assert_int_eq(cfg->accept_spread, SPREAD_ALWAYS);
	ck_assert_int_eq(cfg->log_level, LOG_WARN);
	ck_assert_uint_eq(cfg->drain_timeout_ms, 120000);
	ck_assert_uint_eq(cfg->shutdown_timeout_ms, 1500);
	ck_assert_uint_eq(cfg->server_connect_timeout_ms, 3600000);
	ck_assert_str_eq(cfg->server_reset_query, "RESET ALL");
	ck_assert_uint_eq(cfg->ndbs, 3);

	db = config_find_db(cfg, "appdb");
	ck_assert_ptr_nonnull(db);
	ck_assert_int_eq(db->pool_size, 10000);
	ck_assert_int_eq(db->pool_mode, POOL_STATEMENT);
	ck_assert(db->forced_user);
	ck_assert_uint_eq(nkw(db), 4);
	ck_assert_str_eq(kw(db, "port"), "5433");
	ck_assert_str_eq(kw(db, "dbname"), "app_production");
	ck_assert_str_eq(kw(db, "user"), "app");

	db = config_find_db(cfg, "reports");
	ck_assert_ptr_nonnull(db);
	ck_assert_int_eq(db->pool_size, 1);
	ck_assert_int_eq(db->pool_mode, POOL_SESSION);
	ck_assert(!db->forced_user);
	ck_assert_str_eq(kw(db, "dbname"), "reports");

	db = config_find_db(cfg, "batch");
	ck_assert_ptr_nonnull(db);
	ck_assert_int_eq(db->pool_size, 20);
	ck_assert_int_eq(db->pool_mode, POOL_TRANSACTION);
	ck_assert_uint_eq(nkw(db), 2);
	ck_assert_str_eq(kw(db, "dbname"), "batch");
	config_unref(cfg);
}
END_TEST

START_TEST(good_defaults)
{
	struct config *cfg = load_good("good-defaults.yaml");
	unsigned ncpu = uv_available_parallelism();
	const struct db_config *db;

	ck_assert_str_eq(cfg->socket_dir, "/tmp");
	ck_assert_int_eq(cfg->port, 6432);
	ck_assert_uint_eq(cfg->socket_mode, 0777);
	ck_assert_int_eq(cfg->workers, ncpu > 64 ? 64 : (int)ncpu);
	ck_assert_int_ge(cfg->workers, 1);
	ck_assert_int_eq(cfg->accept_spread, ncpu <= 2 ? SPREAD_CHURN : SPREAD_ALWAYS);
	ck_assert_int_eq(cfg->log_level, LOG_INFO);
	ck_assert_uint_eq(cfg->drain_timeout_ms, 30000);
	ck_assert_uint_eq(cfg->shutdown_timeout_ms, 10000);
	ck_assert_uint_eq(cfg->server_connect_timeout_ms, 15000);
	ck_assert_uint_eq(cfg->client_login_timeout_ms, 60000);
	ck_assert_str_eq(cfg->server_reset_query, "DISCARD ALL");
	ck_assert_int_eq(cfg->max_client_conn, 10000);
	ck_assert_int_eq(cfg->max_prepared_statements, 200);
	ck_assert_int_eq(cfg->max_client_prepared_statements, 1000);
	ck_assert_uint_eq(cfg->client_idle_timeout_ms, 0);
	ck_assert_uint_eq(cfg->query_wait_timeout_ms, 120000);
	ck_assert_uint_eq(cfg->idle_transaction_timeout_ms, 0);
	ck_assert_uint_eq(cfg->server_idle_timeout_ms, 600000);
	ck_assert_uint_eq(cfg->server_lifetime_ms, 3600000);
	ck_assert_str_eq(cfg->server_check_query, "SELECT 1");
	ck_assert_uint_eq(cfg->server_check_delay_ms, 30000);
	ck_assert_uint_eq(cfg->reserve_pool_timeout_ms, 5000);
	ck_assert_uint_eq(cfg->ndbs, 1);

	db = &cfg->dbs[0];
	ck_assert_int_eq(db->pool_size, 20);
	ck_assert_int_eq(db->pool_mode, POOL_SESSION);
	ck_assert_int_eq(db->min_pool_size, 0);
	ck_assert_int_eq(db->reserve_pool_size, 0);
	ck_assert_int_eq(db->max_db_connections, 0);
	ck_assert_ptr_null(db->users);
	ck_assert_uint_eq(db->nusers, 0);
	ck_assert_ptr_null(config_find_user(db, "alice"));
	ck_assert_int_eq(config_pool_mode(db, "alice"), POOL_SESSION);
	ck_assert_int_eq(config_pool_size(db, "alice"), 20);
	ck_assert(!db->forced_user);
	ck_assert_uint_eq(nkw(db), 2);
	ck_assert_str_eq(kw(db, "host"), "/var/run/postgresql");
	ck_assert_str_eq(kw(db, "dbname"), "appdb");   /* defaulted to the key */
	config_unref(cfg);
}
END_TEST

START_TEST(good_empty_sections)
{
	struct config *cfg = load_good("good-empty-sections.yaml");

	ck_assert_str_eq(cfg->socket_dir, "/tmp");
	ck_assert_int_eq(cfg->port, 6432);
	ck_assert_uint_eq(cfg->ndbs, 0);
	ck_assert_ptr_null(config_find_db(cfg, "appdb"));
	ck_assert_str_eq(cfg->server_reset_query, "");
	config_unref(cfg);
}
END_TEST

START_TEST(good_uri)
{
	struct config *cfg = load_good("good-uri.yaml");
	const struct db_config *db = config_find_db(cfg, "appdb");

	ck_assert_ptr_nonnull(db);
	ck_assert(db->forced_user);
	ck_assert_str_eq(kw(db, "user"), "app");
	ck_assert_str_eq(kw(db, "host"), "/var/run/postgresql");
	ck_assert_str_eq(kw(db, "port"), "5433");
	ck_assert_str_eq(kw(db, "dbname"), "app_main");
	ck_assert_str_eq(kw(db, "application_name"), "pgberth");
	ck_assert_uint_eq(nkw(db), 5);

	db = config_find_db(cfg, "nodb");
	ck_assert_ptr_nonnull(db);
	ck_assert(!db->forced_user);
	ck_assert_str_eq(kw(db, "host"), "/tmp");
	ck_assert_str_eq(kw(db, "dbname"), "nodb");
	ck_assert_uint_eq(nkw(db), 2);
	config_unref(cfg);
}
END_TEST

START_TEST(good_quoted)
{
	struct config *cfg = load_good("good-quoted.yaml");

	ck_assert_int_eq(cfg->port, 6433);
	ck_assert_uint_eq(cfg->socket_mode, 0770);
	ck_assert_int_eq(cfg->workers, 4);
	ck_assert_uint_eq(cfg->drain_timeout_ms, 0);
	ck_assert_int_eq(config_find_db(cfg, "appdb")->pool_size, 7);
	config_unref(cfg);
}
END_TEST

/* The example an operator copies must itself be valid. */
START_TEST(example_config)
{
	struct config *cfg = config_load("conf/pgberth.yaml", &errs);

	ck_assert_msg(cfg != NULL, "conf/pgberth.yaml refused:\n%s", all_errors());
	ck_assert_str_eq(cfg->socket_dir, "/run/pgberth");
	ck_assert_int_eq(cfg->port, 6432);
	ck_assert_str_eq(kw(config_find_db(cfg, "appdb"), "host"), "/var/run/postgresql");
	ck_assert_int_eq(cfg->max_client_conn, 10000);
	ck_assert_uint_eq(cfg->query_wait_timeout_ms, 120000);
	ck_assert_uint_eq(cfg->server_idle_timeout_ms, 600000);
	ck_assert_uint_eq(cfg->server_lifetime_ms, 3600000);
	ck_assert_str_eq(cfg->server_check_query, "SELECT 1");
	ck_assert_uint_eq(config_find_db(cfg, "appdb")->nusers, 0);   /* the example is commented */
	config_unref(cfg);
}
END_TEST

/* 0777, "0777" and 777 are all the octal mode 0777. */
START_TEST(socket_mode_octal)
{
	static const char *const texts[] = {
		"listen: {socket_mode: 0777}", "listen: {socket_mode: \"0777\"}",
		"listen: {socket_mode: 777}", "listen: {socket_mode: '777'}",
	};

	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		struct config *cfg = config_parse("mem", texts[i], strlen(texts[i]), &errs);

		ck_assert_msg(cfg != NULL, "%s refused:\n%s", texts[i], all_errors());
		ck_assert_uint_eq(cfg->socket_mode, 0777);
		config_unref(cfg);
	}
	const char *zero = "listen: {socket_mode: 0}";
	struct config *cfg = config_parse("mem", zero, strlen(zero), &errs);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_uint_eq(cfg->socket_mode, 0);
	config_unref(cfg);

	const char *bad = "listen: {socket_mode: 0o777}\nworkers: 1\n";
	ck_assert_ptr_null(config_parse("mem", bad, strlen(bad), &errs));
	ck_assert_uint_eq(errs.n, 1);
	ck_assert_str_eq(errs.msgs[0], "mem:1:23: listen.socket_mode: expected an octal file mode "
	                 "(like 0770), got \"0o777\"");
}
END_TEST

START_TEST(log_level_names)
{
	static const struct { const char *text; int level; } cases[] = {
		{"log_level: debug", LOG_DEBUG}, {"log_level: info", LOG_INFO},
		{"log_level: warning", LOG_WARN}, {"log_level: warn", LOG_WARN},
		{"log_level: error", LOG_ERROR},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct config *cfg = config_parse("mem", cases[i].text, strlen(cases[i].text), &errs);

		ck_assert_msg(cfg != NULL, "%s refused:\n%s", cases[i].text, all_errors());
		ck_assert_int_eq(cfg->log_level, cases[i].level);
		config_unref(cfg);
	}
}
END_TEST

START_TEST(refcount)
{
	struct config *cfg = load_good("good-minimal.yaml");

	ck_assert_ptr_eq(config_ref(cfg), cfg);
	ck_assert_int_eq(atomic_load(&cfg->refs), 2);
	config_unref(cfg);
	ck_assert_int_eq(atomic_load(&cfg->refs), 1);
	ck_assert_str_eq(cfg->dbs[0].name, "appdb");   /* still alive */
	config_unref(cfg);                             /* freed: LSan would see a leak */
	config_unref(NULL);
}
END_TEST

START_TEST(pool_mode_names)
{
	ck_assert_str_eq(pool_mode_name(POOL_SESSION), "session");
	ck_assert_str_eq(pool_mode_name(POOL_TRANSACTION), "transaction");
	ck_assert_str_eq(pool_mode_name(POOL_STATEMENT), "statement");
}
END_TEST

/* A caller that only wants a yes or no may pass no error list. */
START_TEST(null_errors)
{
	const char *bad = "workers: 0\nport: 1\n";
	const char *good = "workers: 1\n";
	struct config *cfg;

	ck_assert_ptr_null(config_parse("mem", bad, strlen(bad), NULL));
	ck_assert_ptr_null(config_load(DATA "no-such-file.yaml", NULL));
	cfg = config_parse("mem", good, strlen(good), NULL);
	ck_assert_ptr_nonnull(cfg);
	config_unref(cfg);
}
END_TEST

START_TEST(reload_changes)
{
	const char *a = "listen: {socket_dir: /run/a, port: 6432}\nworkers: 2\nlog_level: info\n"
	                "databases: {x: {conninfo: host=/tmp}}\n";
	const char *b = "listen: {socket_dir: /run/b, port: 6433}\nworkers: 2\nlog_level: debug\n"
	                "databases: {}\n";
	struct config *ca = config_parse("a.yaml", a, strlen(a), &errs);
	struct config *cb = config_parse("b.yaml", b, strlen(b), &errs);

	ck_assert_ptr_nonnull(ca);
	ck_assert_ptr_nonnull(cb);
	ck_assert_uint_eq(config_reload_changes(ca, ca, &errs), 0);
	ck_assert_uint_eq(errs.n, 0);
	ck_assert_uint_eq(config_reload_changes(ca, cb, &errs), 2);
	ck_assert_uint_eq(errs.n, 2);
	ck_assert_msg(has_error("b.yaml: listen.socket_dir: changed from \"/run/a\" to \"/run/b\""),
	              "%s", all_errors());
	ck_assert_msg(has_error("b.yaml: listen.port: changed from 6432 to 6433"), "%s", all_errors());
	config_unref(ca);
	config_unref(cb);
}
END_TEST

/* ---- pool and timeout keys ---- */

START_TEST(pool_keys_parsed)
{
	const char *text =
		"max_client_conn: 500\n"
		"client_idle_timeout: 10m\n"
		"query_wait_timeout: 0\n"
		"idle_transaction_timeout: 30s\n"
		"server_idle_timeout: 1500ms\n"
		"server_lifetime: 0\n"
		"server_check_query: \"SELECT 2\"\n"
		"server_check_delay: 0\n"
		"reserve_pool_timeout: 24h\n"
		"databases:\n"
		"  appdb:\n"
		"    conninfo: host=/tmp\n"
		"    pool_size: 10\n"
		"    min_pool_size: 10\n"
		"    reserve_pool_size: 3\n"
		"    max_db_connections: 100000\n";
	struct config *cfg = parse_good(text);
	const struct db_config *db = config_find_db(cfg, "appdb");

	ck_assert_int_eq(cfg->max_client_conn, 500);
	ck_assert_uint_eq(cfg->client_idle_timeout_ms, 600000);
	ck_assert_uint_eq(cfg->query_wait_timeout_ms, 0);
	ck_assert_uint_eq(cfg->idle_transaction_timeout_ms, 30000);
	ck_assert_uint_eq(cfg->server_idle_timeout_ms, 1500);
	ck_assert_uint_eq(cfg->server_lifetime_ms, 0);
	ck_assert_str_eq(cfg->server_check_query, "SELECT 2");
	ck_assert_uint_eq(cfg->server_check_delay_ms, 0);
	ck_assert_uint_eq(cfg->reserve_pool_timeout_ms, 86400000);
	ck_assert_ptr_nonnull(db);
	ck_assert_int_eq(db->pool_size, 10);
	ck_assert_int_eq(db->min_pool_size, 10);       /* equal to pool_size is allowed */
	ck_assert_int_eq(db->reserve_pool_size, 3);
	ck_assert_int_eq(db->max_db_connections, 100000);
	config_unref(cfg);
}
END_TEST

/* The other ends of the ranges, and "" turning the check query off. */
START_TEST(pool_keys_bounds_good)
{
	const char *text =
		"max_client_conn: 1\n"
		"client_idle_timeout: 24h\n"
		"query_wait_timeout: 24h\n"
		"idle_transaction_timeout: 24h\n"
		"server_idle_timeout: 24h\n"
		"server_lifetime: 24h\n"
		"server_check_query: \"\"\n"
		"server_check_delay: 24h\n"
		"reserve_pool_timeout: 0\n"
		"databases:\n"
		"  appdb: {conninfo: host=/tmp, pool_size: 10000, min_pool_size: 10000,\n"
		"          reserve_pool_size: 10000, max_db_connections: 0}\n";
	struct config *cfg = parse_good(text);
	const struct db_config *db = &cfg->dbs[0];

	ck_assert_int_eq(cfg->max_client_conn, 1);
	ck_assert_uint_eq(cfg->client_idle_timeout_ms, 86400000);
	ck_assert_uint_eq(cfg->query_wait_timeout_ms, 86400000);
	ck_assert_uint_eq(cfg->idle_transaction_timeout_ms, 86400000);
	ck_assert_uint_eq(cfg->server_idle_timeout_ms, 86400000);
	ck_assert_uint_eq(cfg->server_lifetime_ms, 86400000);
	ck_assert_str_eq(cfg->server_check_query, "");
	ck_assert_uint_eq(cfg->server_check_delay_ms, 86400000);
	ck_assert_uint_eq(cfg->reserve_pool_timeout_ms, 0);
	ck_assert_int_eq(db->min_pool_size, 10000);
	ck_assert_int_eq(db->reserve_pool_size, 10000);
	ck_assert_int_eq(db->max_db_connections, 0);
	config_unref(cfg);

	cfg = parse_good("max_client_conn: 1000000\n");
	ck_assert_int_eq(cfg->max_client_conn, 1000000);
	config_unref(cfg);

	/* 0 turns the tracking of named statements off. */
	cfg = parse_good("max_prepared_statements: 0\nmax_client_prepared_statements: 1\n");
	ck_assert_int_eq(cfg->max_prepared_statements, 0);
	ck_assert_int_eq(cfg->max_client_prepared_statements, 1);
	config_unref(cfg);
	cfg = parse_good("max_prepared_statements: 100000\nmax_client_prepared_statements: 1000000\n");
	ck_assert_int_eq(cfg->max_prepared_statements, 100000);
	ck_assert_int_eq(cfg->max_client_prepared_statements, 1000000);
	config_unref(cfg);
}
END_TEST

START_TEST(statement_keys_range)
{
	EXPECT_PARSE_ERRORS(
		"max_prepared_statements: 100001\n"
		"max_client_prepared_statements: 0\n",
		"1:26: max_prepared_statements: 100001 is out of range (0..100000)",
		"2:33: max_client_prepared_statements: 0 is out of range (1..1000000)");
}
END_TEST

START_TEST(pool_keys_range_high)
{
	EXPECT_PARSE_ERRORS(
		"max_client_conn: 1000001\n"
		"client_idle_timeout: 25h\n"
		"query_wait_timeout: 86400001ms\n"
		"idle_transaction_timeout: 1441m\n"
		"server_idle_timeout: 86401\n"
		"server_lifetime: 25h\n"
		"server_check_delay: 25h\n"
		"reserve_pool_timeout: 25h\n"
		"databases:\n"
		"  appdb:\n"
		"    conninfo: host=/tmp\n"
		"    min_pool_size: 10001\n"
		"    reserve_pool_size: 10001\n"
		"    max_db_connections: 100001\n"
		"    users:\n"
		"      alice: {pool_size: 10001}\n",
		"1:18: max_client_conn: 1000001 is out of range (1..1000000)",
		"2:22: client_idle_timeout: 25h is out of range (0..24h)",
		"3:21: query_wait_timeout: 86400001ms is out of range (0..24h)",
		"4:27: idle_transaction_timeout: 1441m is out of range (0..24h)",
		"5:22: server_idle_timeout: 86401 is out of range (0..24h)",
		"6:18: server_lifetime: 25h is out of range (0..24h)",
		"7:21: server_check_delay: 25h is out of range (0..24h)",
		"8:23: reserve_pool_timeout: 25h is out of range (0..24h)",
		"12:20: databases.appdb.min_pool_size: 10001 is out of range (0..10000)",
		"13:24: databases.appdb.reserve_pool_size: 10001 is out of range (0..10000)",
		"14:25: databases.appdb.max_db_connections: 100001 is out of range (0..100000)",
		"16:26: databases.appdb.users.alice.pool_size: 10001 is out of range (1..10000)");
}
END_TEST

START_TEST(pool_keys_range_low)
{
	EXPECT_PARSE_ERRORS(
		"max_client_conn: 0\n"
		"query_wait_timeout: -1s\n"
		"databases:\n"
		"  appdb:\n"
		"    conninfo: host=/tmp\n"
		"    min_pool_size: -1\n"
		"    reserve_pool_size: -1\n"
		"    max_db_connections: -1\n"
		"    users:\n"
		"      alice: {pool_size: 0}\n",
		"1:18: max_client_conn: 0 is out of range (1..1000000)",
		"2:21: query_wait_timeout: expected a duration (like 500ms, 10s, 5m or 1h), got \"-1s\"",
		"6:20: databases.appdb.min_pool_size: -1 is out of range (0..10000)",
		"7:24: databases.appdb.reserve_pool_size: -1 is out of range (0..10000)",
		"8:25: databases.appdb.max_db_connections: -1 is out of range (0..100000)",
		"10:26: databases.appdb.users.alice.pool_size: 0 is out of range (1..10000)");
}
END_TEST

START_TEST(pool_keys_types)
{
	EXPECT_PARSE_ERRORS(
		"max_client_conn: many\n"
		"server_check_query: ~\n"
		"server_lifetime: [1h]\n"
		"databases:\n"
		"  appdb:\n"
		"    conninfo: host=/tmp\n"
		"    reserve_pool_size: 1.5\n",
		"1:18: max_client_conn: expected an integer, got \"many\"",
		"2:21: server_check_query: expected a string, got null",
		"3:18: server_lifetime: expected a duration (like 500ms, 10s, 5m or 1h), got a sequence",
		"7:24: databases.appdb.reserve_pool_size: expected an integer, got \"1.5\"");
}
END_TEST

/* One worker per CPU; on one or two CPUs the workers after the first
 * accept only under churn, elsewhere all of them always. */
START_TEST(worker_defaults)
{
	ck_assert_int_eq(config_default_workers(0), 1);
	ck_assert_int_eq(config_default_workers(1), 1);
	ck_assert_int_eq(config_default_workers(2), 2);
	ck_assert_int_eq(config_default_workers(8), 8);
	ck_assert_int_eq(config_default_workers(200), 64);
	ck_assert_int_eq(config_default_spread(1), SPREAD_CHURN);
	ck_assert_int_eq(config_default_spread(2), SPREAD_CHURN);
	ck_assert_int_eq(config_default_spread(3), SPREAD_ALWAYS);
}
END_TEST

START_TEST(accept_spread_values)
{
	struct config *cfg = parse_good("accept_spread: churn\n");

	ck_assert_int_eq(cfg->accept_spread, SPREAD_CHURN);
	config_unref(cfg);
	cfg = parse_good("accept_spread: always\n");
	ck_assert_int_eq(cfg->accept_spread, SPREAD_ALWAYS);
	config_unref(cfg);
	EXPECT_PARSE_ERRORS("accept_spread: sometimes\n",
		"1:16: accept_spread: expected always or churn, got \"sometimes\"");
}
END_TEST

/* Reported at the database's name, once, and not when pool_size itself was
 * refused (the default it keeps would make a second, false message). */
START_TEST(min_pool_size_above_pool_size)
{
	EXPECT_PARSE_ERRORS(
		"databases:\n"
		"  appdb:\n"
		"    conninfo: host=/tmp\n"
		"    pool_size: 5\n"
		"    min_pool_size: 6\n"
		"  other: {conninfo: host=/tmp, min_pool_size: 21}\n"
		"  bad: {conninfo: host=/tmp, pool_size: 0, min_pool_size: 30}\n",
		"2:3: databases.appdb: min_pool_size 6 is greater than pool_size 5",
		"6:3: databases.other: min_pool_size 21 is greater than pool_size 20",
		"7:41: databases.bad.pool_size: 0 is out of range (1..10000)");
}
END_TEST

/* ---- per-user overrides ---- */

START_TEST(users_parsed)
{
	const char *text =
		"databases:\n"
		"  appdb:\n"
		"    conninfo: host=/tmp\n"
		"    pool_size: 20\n"
		"    pool_mode: transaction\n"
		"    users:\n"
		"      alice: {pool_mode: session, pool_size: 5}\n"
		"      bob:\n"
		"        pool_size: 2\n"
		"      carol:\n"
		"        pool_mode: statement\n"
		"      dave: {}\n"
		"      erin:\n"
		"      \"Alice\": ~\n"
		"  other:\n"
		"    conninfo: host=/tmp\n"
		"    users:\n";
	struct config *cfg = parse_good(text);
	const struct db_config *db = config_find_db(cfg, "appdb");
	const struct user_config *u;

	ck_assert_ptr_nonnull(db);
	ck_assert_uint_eq(db->nusers, 6);

	u = config_find_user(db, "alice");
	ck_assert_ptr_eq(u, &db->users[0]);
	ck_assert_str_eq(u->name, "alice");
	ck_assert(u->has_pool_mode);
	ck_assert_int_eq(u->pool_mode, POOL_SESSION);
	ck_assert_int_eq(u->pool_size, 5);
	ck_assert_int_eq(config_pool_mode(db, "alice"), POOL_SESSION);
	ck_assert_int_eq(config_pool_size(db, "alice"), 5);

	u = config_find_user(db, "bob");
	ck_assert_ptr_nonnull(u);
	ck_assert(!u->has_pool_mode);
	ck_assert_int_eq(u->pool_size, 2);
	ck_assert_int_eq(config_pool_mode(db, "bob"), POOL_TRANSACTION);
	ck_assert_int_eq(config_pool_size(db, "bob"), 2);

	u = config_find_user(db, "carol");
	ck_assert_ptr_nonnull(u);
	ck_assert(u->has_pool_mode);
	ck_assert_int_eq(u->pool_size, 0);
	ck_assert_int_eq(config_pool_mode(db, "carol"), POOL_STATEMENT);
	ck_assert_int_eq(config_pool_size(db, "carol"), 20);

	/* {} and null: listed, no override. */
	static const char *const plain[] = {"dave", "erin", "Alice"};
	for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
		u = config_find_user(db, plain[i]);
		ck_assert_ptr_nonnull(u);
		ck_assert_str_eq(u->name, plain[i]);
		ck_assert(!u->has_pool_mode);
		ck_assert_int_eq(u->pool_size, 0);
		ck_assert_int_eq(config_pool_mode(db, plain[i]), POOL_TRANSACTION);
		ck_assert_int_eq(config_pool_size(db, plain[i]), 20);
	}
	ck_assert_ptr_eq(config_find_user(db, "Alice"), &db->users[5]);

	/* Exact, case-sensitive names; anyone else gets the database's. */
	ck_assert_ptr_null(config_find_user(db, "ALICE"));
	ck_assert_ptr_null(config_find_user(db, "alic"));
	ck_assert_ptr_null(config_find_user(db, "alice "));
	ck_assert_ptr_null(config_find_user(db, ""));
	ck_assert_ptr_null(config_find_user(db, NULL));
	ck_assert_int_eq(config_pool_mode(db, "zed"), POOL_TRANSACTION);
	ck_assert_int_eq(config_pool_size(db, "zed"), 20);
	ck_assert_int_eq(config_pool_mode(db, NULL), POOL_TRANSACTION);
	ck_assert_int_eq(config_pool_size(db, NULL), 20);

	db = config_find_db(cfg, "other");              /* users: null */
	ck_assert_ptr_nonnull(db);
	ck_assert_uint_eq(db->nusers, 0);
	ck_assert_ptr_null(config_find_user(db, "alice"));
	config_unref(cfg);
}
END_TEST

START_TEST(users_bad)
{
	EXPECT_PARSE_ERRORS(
		"databases:\n"
		"  appdb:\n"
		"    conninfo: host=/tmp\n"
		"    users:\n"
		"      alice: {pool_mode: transactions}\n"
		"      bob: {poolsize: 5}\n"
		"      carol: {pool_size: five}\n"
		"      dave: transaction\n"
		"      erin: [1]\n"
		"      alice: {}\n"
		"      \"\": {}\n"
		"      frank: {pool_mode: session, pool_mode: statement}\n"
		"      a_user_name_that_is_much_longer_than_postgres_allows_01234567890:\n"
		"  other:\n"
		"    conninfo: host=/tmp\n"
		"    users: [alice]\n",
		"5:26: databases.appdb.users.alice.pool_mode: expected session, transaction or "
		"statement, got \"transactions\"",
		"6:13: databases.appdb.users.bob.poolsize: unknown key",
		"7:26: databases.appdb.users.carol.pool_size: expected an integer, got \"five\"",
		"8:13: databases.appdb.users.dave: expected a mapping, got \"transaction\"",
		"9:13: databases.appdb.users.erin: expected a mapping, got a sequence",
		"10:7: databases.appdb.users.alice: duplicate key (first at line 5)",
		"11:7: databases.appdb.users.\"\": user name is empty",
		"12:35: databases.appdb.users.frank.pool_mode: duplicate key (first at line 12)",
		"13:7: databases.appdb.users.a_user_name_that_is_much_longer_than_postgres_allows_"
		"01234567890: user name is longer than 63 bytes",
		"16:12: databases.other.users: expected a mapping, got a sequence");
}
END_TEST

START_TEST(users_unknown_in_db)
{
	/* users is only a database key. */
	EXPECT_PARSE_ERRORS("users: {alice: {}}\n", "1:1: users: unknown key");
}
END_TEST

/* Every new key may change on reload: none is reported as restart-only. */
START_TEST(reload_pool_keys)
{
	const char *a = "databases: {x: {conninfo: host=/tmp}}\n";
	const char *b =
		"max_client_conn: 5\nclient_idle_timeout: 1s\nquery_wait_timeout: 2s\n"
		"idle_transaction_timeout: 3s\nserver_idle_timeout: 4s\nserver_lifetime: 5s\n"
		"server_check_query: \"SELECT 3\"\nserver_check_delay: 6s\n"
		"reserve_pool_timeout: 7s\n"
		"databases:\n"
		"  x:\n"
		"    conninfo: host=/tmp\n"
		"    min_pool_size: 1\n"
		"    reserve_pool_size: 2\n"
		"    max_db_connections: 3\n"
		"    users: {alice: {pool_mode: statement, pool_size: 4}}\n";
	struct config *ca = parse_good(a);
	struct config *cb = parse_good(b);

	ck_assert_uint_eq(config_reload_changes(ca, cb, &errs), 0);
	ck_assert_uint_eq(config_reload_changes(cb, ca, &errs), 0);
	ck_assert_msg(errs.n == 0, "%s", all_errors());
	config_unref(ca);
	config_unref(cb);
}
END_TEST

/* ---- bad files ---- */

START_TEST(bad_unknown_top)
{
	EXPECT_ERRORS("bad-unknown-top.yaml", "3:1: wrokers: unknown key");
}
END_TEST

START_TEST(bad_unknown_nested)
{
	EXPECT_ERRORS("bad-unknown-nested.yaml",
	              "3:3: listen.sokcet_dir: unknown key",
	              "7:5: databases.appdb.poolsize: unknown key");
}
END_TEST

START_TEST(bad_type)
{
	EXPECT_ERRORS("bad-type.yaml",
	              "3:5: listen.port: expected an integer, got a mapping",
	              "4:15: listen.socket_dir: expected an absolute path, got a sequence",
	              "5:10: workers: expected an integer, got \"two\"",
	              "7:3: databases: expected a mapping, got a sequence");
}
END_TEST

START_TEST(bad_range_low)
{
	EXPECT_ERRORS("bad-range-low.yaml",
	              "2:9: listen.port: 0 is out of range (1..65535)",
	              "3:10: workers: 0 is out of range (1..64)",
	              "4:19: shutdown_timeout: 99ms is out of range (100ms..1h)",
	              "5:25: server_connect_timeout: 0 is out of range (100ms..1h)",
	              "9:16: databases.appdb.pool_size: 0 is out of range (1..10000)");
}
END_TEST

START_TEST(bad_range_high)
{
	EXPECT_ERRORS("bad-range-high.yaml",
	              "2:9: listen.port: 65536 is out of range (1..65535)",
	              "3:16: listen.socket_mode: 1000 is out of range (0..0777)",
	              "4:10: workers: 65 is out of range (1..64)",
	              "5:16: drain_timeout: 25h is out of range (0..24h)",
	              "6:19: shutdown_timeout: 61m is out of range (100ms..1h)",
	              "7:25: server_connect_timeout: 3601s is out of range (100ms..1h)",
	              "11:16: databases.appdb.pool_size: 10001 is out of range (1..10000)",
	              "14:16: databases.huge.pool_size: 99999999999999999999 is out of range (1..10000)");
}
END_TEST

START_TEST(bad_duration)
{
	EXPECT_ERRORS("bad-duration.yaml",
	              "1:16: drain_timeout: expected a duration (like 500ms, 10s, 5m or 1h), got \"10x\"",
	              "2:19: shutdown_timeout: expected a duration (like 500ms, 10s, 5m or 1h), "
	              "got \"-1s\"",
	              "3:25: server_connect_timeout: expected a duration (like 500ms, 10s, 5m or 1h), "
	              "got \"1.5s\"");
}
END_TEST

START_TEST(bad_duration2)
{
	EXPECT_ERRORS("bad-duration2.yaml",
	              "1:16: drain_timeout: expected a duration (like 500ms, 10s, 5m or 1h), got \"ms\"",
	              "2:19: shutdown_timeout: 99999999999999999999h is out of range (100ms..1h)",
	              "3:25: server_connect_timeout: expected a duration (like 500ms, 10s, 5m or 1h), "
	              "got \"10 s\"");
}
END_TEST

START_TEST(bad_pool_mode)
{
	EXPECT_ERRORS("bad-pool-mode.yaml",
	              "4:16: databases.appdb.pool_mode: expected session, transaction or statement, "
	              "got \"transactions\"");
}
END_TEST

START_TEST(bad_log_level)
{
	EXPECT_ERRORS("bad-log-level.yaml",
	              "1:12: log_level: expected debug, info, warning or error, got \"verbose\"");
}
END_TEST

/* libpq's own message follows; only its stable part is checked. */
START_TEST(bad_conninfo)
{
	EXPECT_ERRORS("bad-conninfo.yaml",
	              "3:15: databases.appdb.conninfo: invalid connection string: "
	              "invalid connection option \"nosuchkey\"",
	              "5:15: databases.urldb.conninfo: invalid connection string: ",
	              "7:15: databases.quotes.conninfo: invalid connection string: ");
	ck_assert(has_error("nosuchparam"));
}
END_TEST

START_TEST(bad_missing_conninfo)
{
	EXPECT_ERRORS("bad-missing-conninfo.yaml",
	              "5:5: databases.appdb.conninfo: missing required key",
	              "7:10: databases.nulldb.conninfo: missing required key");
}
END_TEST

START_TEST(bad_duplicate)
{
	EXPECT_ERRORS("bad-duplicate.yaml",
	              "3:3: listen.port: duplicate key (first at line 2)",
	              "8:3: databases.appdb: duplicate key (first at line 6)",
	              "10:1: workers: duplicate key (first at line 4)");
}
END_TEST

START_TEST(bad_syntax)
{
	EXPECT_ERRORS("bad-syntax.yaml",
	              "4:19: YAML syntax error: mapping values are not allowed in this context");
}
END_TEST

START_TEST(bad_syntax_indent)
{
	EXPECT_ERRORS("bad-syntax-indent.yaml",
	              "3:2: YAML syntax error: did not find expected key");
}
END_TEST

START_TEST(bad_empty)
{
	EXPECT_ERRORS("bad-empty.yaml",
	              "1:1: the file is empty or only comments (expected a mapping of settings)");
}
END_TEST

START_TEST(bad_comments_only)
{
	EXPECT_ERRORS("bad-comments-only.yaml",
	              "1:1: the file is empty or only comments (expected a mapping of settings)");
}
END_TEST

START_TEST(bad_sequence)
{
	EXPECT_ERRORS("bad-sequence.yaml",
	              "1:1: top level: expected a mapping of settings, got a sequence");
}
END_TEST

START_TEST(bad_scalar)
{
	EXPECT_ERRORS("bad-scalar.yaml",
	              "1:1: top level: expected a mapping of settings, got \"workers\"");
}
END_TEST

START_TEST(bad_dbname)
{
	EXPECT_ERRORS("bad-dbname.yaml",
	              "2:3: databases.\"\": database name is empty",
	              "4:3: databases.a_database_name_that_is_much_longer_than_postgres_allows_0123456: "
	              "database name is longer than 63 bytes",
	              "6:5: databases: expected a key name, got a sequence");
}
END_TEST

START_TEST(bad_socket_dir)
{
	EXPECT_ERRORS("bad-socket-dir.yaml",
	              "2:15: listen.socket_dir: expected an absolute path, got \"run/pgberth\"",
	              "3:16: listen.socket_mode: expected an octal file mode (like 0770), got \"u+rw\"");
}
END_TEST

/* A directory whose socket path would not fit in sockaddr_un.sun_path. */
START_TEST(bad_socket_dir_long)
{
	char text[256];

	snprintf(text, sizeof(text), "listen:\n  socket_dir: /%0100d\n", 0);
	ck_assert_ptr_null(config_parse("mem", text, strlen(text), &errs));
	ck_assert_uint_eq(errs.n, 1);
	ck_assert_msg(strncmp(errs.msgs[0], "mem:2:15: listen.socket_dir: longer than ", 41) == 0,
	              "%s", all_errors());
}
END_TEST

START_TEST(bad_null)
{
	EXPECT_ERRORS("bad-null.yaml",
	              "1:9: workers: expected an integer, got null",
	              "2:12: log_level: expected debug, info, warning or error, got null",
	              "3:20: server_reset_query: expected a string, got null");
}
END_TEST

START_TEST(bad_nul_byte)
{
	EXPECT_ERRORS("bad-nul.yaml", "1:21: server_reset_query: contains a NUL byte");
}
END_TEST

START_TEST(bad_two_docs)
{
	EXPECT_ERRORS("bad-two-docs.yaml", "3:1: a second YAML document; the file must hold one");
}
END_TEST

START_TEST(bad_encoding)
{
	const char text[] = "workers: 2\nlog_level: \xff\n";

	ck_assert_ptr_null(config_parse("mem", text, sizeof(text) - 1, &errs));
	ck_assert_uint_eq(errs.n, 1);
	ck_assert_msg(strncmp(errs.msgs[0], "mem:2:12: YAML syntax error: ", 29) == 0, "%s",
	              all_errors());
}
END_TEST

START_TEST(bad_missing_file)
{
	ck_assert_ptr_null(config_load(DATA "no-such-file.yaml", &errs));
	ck_assert_uint_eq(errs.n, 1);
	ck_assert_str_eq(errs.msgs[0],
	                 DATA "no-such-file.yaml: cannot read: No such file or directory");
}
END_TEST

START_TEST(bad_directory)
{
	ck_assert_ptr_null(config_load(DATA, &errs));
	ck_assert_uint_eq(errs.n, 1);
	ck_assert_str_eq(errs.msgs[0], DATA ": cannot read: Is a directory");
}
END_TEST

/* Messages accumulate across calls until config_errors_free. */
START_TEST(errors_accumulate)
{
	const char *bad = "workers: 0\n";

	ck_assert_ptr_null(config_parse("one", bad, strlen(bad), &errs));
	ck_assert_ptr_null(config_parse("two", bad, strlen(bad), &errs));
	ck_assert_uint_eq(errs.n, 2);
	ck_assert_str_eq(errs.msgs[1], "two:1:10: workers: 0 is out of range (1..64)");
	config_errors_free(&errs);
	ck_assert_uint_eq(errs.n, 0);
	ck_assert_ptr_null(errs.msgs);
}
END_TEST

static Suite *config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *unit = tcase_create("unit");
	TCase *good = tcase_create("good");
	TCase *bad = tcase_create("bad");

	tcase_add_checked_fixture(unit, setup, teardown);
	tcase_add_test(unit, duration_good);
	tcase_add_test(unit, duration_bad);
	tcase_add_test(unit, socket_mode_octal);
	tcase_add_test(unit, log_level_names);
	tcase_add_test(unit, refcount);
	tcase_add_test(unit, pool_mode_names);
	tcase_add_test(unit, null_errors);
	tcase_add_test(unit, reload_changes);
	tcase_add_test(unit, errors_accumulate);
	tcase_add_test(unit, reload_pool_keys);
	suite_add_tcase(s, unit);

	tcase_add_checked_fixture(good, setup, teardown);
	tcase_add_test(good, good_minimal);
	tcase_add_test(good, good_full);
	tcase_add_test(good, good_defaults);
	tcase_add_test(good, good_empty_sections);
	tcase_add_test(good, good_uri);
	tcase_add_test(good, good_quoted);
	tcase_add_test(good, example_config);
	tcase_add_test(good, pool_keys_parsed);
	tcase_add_test(good, pool_keys_bounds_good);
	tcase_add_test(good, users_parsed);
	suite_add_tcase(s, good);

	tcase_add_checked_fixture(bad, setup, teardown);
	tcase_add_test(bad, bad_unknown_top);
	tcase_add_test(bad, bad_unknown_nested);
	tcase_add_test(bad, bad_type);
	tcase_add_test(bad, bad_range_low);
	tcase_add_test(bad, bad_range_high);
	tcase_add_test(bad, bad_duration);
	tcase_add_test(bad, bad_duration2);
	tcase_add_test(bad, bad_pool_mode);
	tcase_add_test(bad, bad_log_level);
	tcase_add_test(bad, bad_conninfo);
	tcase_add_test(bad, bad_missing_conninfo);
	tcase_add_test(bad, bad_duplicate);
	tcase_add_test(bad, bad_syntax);
	tcase_add_test(bad, bad_syntax_indent);
	tcase_add_test(bad, bad_empty);
	tcase_add_test(bad, bad_comments_only);
	tcase_add_test(bad, bad_sequence);
	tcase_add_test(bad, bad_scalar);
	tcase_add_test(bad, bad_dbname);
	tcase_add_test(bad, bad_socket_dir);
	tcase_add_test(bad, bad_socket_dir_long);
	tcase_add_test(bad, bad_null);
	tcase_add_test(bad, bad_nul_byte);
	tcase_add_test(bad, bad_two_docs);
	tcase_add_test(bad, bad_encoding);
	tcase_add_test(bad, bad_missing_file);
	tcase_add_test(bad, bad_directory);
	tcase_add_test(bad, pool_keys_range_high);
	tcase_add_test(bad, statement_keys_range);
	tcase_add_test(bad, pool_keys_range_low);
	tcase_add_test(bad, pool_keys_types);
	tcase_add_test(bad, accept_spread_values);
	tcase_add_test(bad, worker_defaults);
	tcase_add_test(bad, min_pool_size_above_pool_size);
	tcase_add_test(bad, users_bad);
	tcase_add_test(bad, users_unknown_in_db);
	suite_add_tcase(s, bad);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(config_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
