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
};

struct config {
	atomic_int refs;
	char *path;                 /* file it was read from, for messages */

	char *socket_dir;           /* listen.socket_dir */
	int port;                   /* listen.port */
	unsigned socket_mode;       /* listen.socket_mode, octal in the file */

	int workers;
	int log_level;              /* enum log_level */
	uint64_t drain_timeout_ms;
	uint64_t shutdown_timeout_ms;
	uint64_t server_connect_timeout_ms;
	uint64_t client_login_timeout_ms;   /* accept to logged in, waiting included */
	char *server_reset_query;   /* "" disables the reset */

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

const struct db_config *config_find_db(const struct config *cfg, const char *name);

/* "500ms", "10s", "5m", "1h", or a bare number of seconds. Returns 0 or -1. */
int config_parse_duration(const char *s, uint64_t *ms);
const char *pool_mode_name(enum pool_mode mode);

#endif
