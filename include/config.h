/*
 * Configuration: a YAML file parsed (libyaml) into an immutable, reference
 * counted snapshot. Readers take a reference and never see it change; a
 * reload builds a new snapshot and swaps it in. Every error names
 * file:line:column and the key, and one bad key makes the whole file invalid.
 */
#ifndef PGBERTH_CONFIG_H
#define PGBERTH_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum pool_mode {
	POOL_SESSION,
	POOL_TRANSACTION,
	POOL_STATEMENT,
};

/* Which workers accept new connections (accept_spread). */
enum accept_spread {
	SPREAD_ALWAYS,              /* every worker, all the time */
	SPREAD_CHURN,               /* the first; the others while clients come and go
	                               quickly (worker.c, worker_measure_churn) */
};

/* Overrides for one user of a database, from databases.NAME.users. */
struct user_config {
	char *name;                 /* key under users: */
	bool has_pool_mode;         /* pool_mode given; else the database's */
	enum pool_mode pool_mode;
	int pool_size;              /* 0: the database's */
};

struct db_config {
	char *name;                 /* key under databases: */
	char *conninfo;             /* as written by the operator */
	/* conninfo as PQconnectStartParams arrays, NULL terminated; always has
	 * dbname (the database key when conninfo has none). */
	char **keywords;
	char **values;
	bool forced_user;           /* conninfo names a user: all clients use it */
	int pool_size;              /* hard cap on server connections, all workers */
	enum pool_mode pool_mode;
	int min_pool_size;          /* server connections each pool keeps open */
	int reserve_pool_size;      /* extra connections after reserve_pool_timeout */
	int max_db_connections;     /* cap over all this database's pools; 0: none */
	struct user_config *users;  /* per-user overrides, in file order */
	size_t nusers;
};

struct config {
	atomic_int refs;
	char *path;                 /* file it was read from, for messages */

	char *socket_dir;           /* listen.socket_dir */
	int port;                   /* listen.port */
	unsigned socket_mode;       /* listen.socket_mode, octal in the file */

	int workers;
	enum accept_spread accept_spread;
	int log_level;              /* enum log_level */
	uint64_t drain_timeout_ms;
	uint64_t shutdown_timeout_ms;
	uint64_t server_connect_timeout_ms;
	uint64_t client_login_timeout_ms;   /* accept to logged in, waiting included */
	char *server_reset_query;   /* "" disables the reset */
	int max_client_conn;        /* client connections, whole daemon */
	/* Named prepared statements in transaction and statement modes
	 * (pstmt.h): held per server connection, 0 turns the tracking off;
	 * and per client, beyond which its Parses go through untracked. */
	int max_prepared_statements;
	int max_client_prepared_statements;
	/* Timeouts below: 0 turns each one off, except server_check_delay_ms
	 * (0: check before every reuse) and reserve_pool_timeout_ms (0: the
	 * reserve is used at once). */
	uint64_t client_idle_timeout_ms;        /* no server, nothing pending */
	uint64_t query_wait_timeout_ms;         /* waiting for a server */
	uint64_t idle_transaction_timeout_ms;   /* idle inside a transaction */
	uint64_t server_idle_timeout_ms;        /* idle server connections closed */
	uint64_t server_lifetime_ms;            /* older servers closed on release */
	char *server_check_query;   /* "" disables the check */
	uint64_t server_check_delay_ms;         /* idle longer than this: check first */
	uint64_t reserve_pool_timeout_ms;       /* client wait before the reserve opens */

	struct db_config *dbs;
	size_t ndbs;
};

/* Error messages collected while parsing, each "file:line:column: text". */
struct config_errors {
	char **msgs;
	size_t n;
};

/* Reads and validates a file. Returns a snapshot with one reference, or NULL
 * with at least one message in errs. */
struct config *config_load(const char *path, struct config_errors *errs);
/* The same from memory; name stands for the file in messages. */
struct config *config_parse(const char *name, const char *text, size_t len,
                            struct config_errors *errs);
void config_errors_free(struct config_errors *errs);

struct config *config_ref(struct config *cfg);
void config_unref(struct config *cfg);

/* For a reload: appends a message to errs (when not NULL) for each setting
 * that differs between cur and next but takes effect only at start
 * (listen.*, workers), and returns how many there are. The caller decides
 * whether to refuse the reload or to warn and keep running with the old
 * values of those settings. */
size_t config_reload_changes(const struct config *cur, const struct config *next,
                             struct config_errors *errs);

/* For a reload that goes ahead: gives next the running values of the
 * restart-only settings, so the snapshot says what is in force. Only
 * before next is shared. 0, or -1 on out-of-memory. */
int config_keep_restart_keys(struct config *next, const struct config *cur);

/* Default worker count for ncpu CPUs: ncpu, at most 64. */
int config_default_workers(unsigned ncpu);
/* Default accept_spread for ncpu CPUs: churn on one or two, else always. */
enum accept_spread config_default_spread(unsigned ncpu);

const struct db_config *config_find_db(const struct config *cfg, const char *name);
/* A database's overrides for a user name (exact match), or NULL. The pool
 * of (db, user) uses config_pool_mode() and config_pool_size(): the user's
 * override when there is one, else the database's setting. */
const struct user_config *config_find_user(const struct db_config *db, const char *user);
enum pool_mode config_pool_mode(const struct db_config *db, const char *user);
int config_pool_size(const struct db_config *db, const char *user);

/* "500ms", "10s", "5m", "1h", or a bare number of seconds. Returns 0 or -1. */
int config_parse_duration(const char *s, uint64_t *ms);
const char *pool_mode_name(enum pool_mode mode);

#endif
