/*
 * Configuration loader: one YAML file in, one immutable, reference counted
 * struct config out.
 *
 * libyaml's document API builds the whole node tree first, so a YAML syntax
 * error ends the parse (there is no tree to check). Once the tree exists,
 * every mapping is checked against a table of keys (struct key: type,
 * bounds, whether a reload may change it), and every problem is recorded as
 * "file:line:column: key.path: text" before moving on, so an operator sees
 * all the mistakes of a file in one run. Any error makes the whole file
 * invalid: a partial snapshot never escapes, which is what lets a reload
 * with a bad file change nothing. databases: and each database's users: are
 * mappings of names the operator chooses; each entry is checked against
 * db_keys or user_keys. The one check across keys (min_pool_size against
 * pool_size) runs after a database's keys all parsed cleanly.
 *
 * Values are read from the scalar's text, whatever its YAML style: "20" and
 * 20 are the same integer, and 0777, "0777" and 777 are the same octal
 * socket mode. A plain empty scalar (or ~, null) is null: a section that is
 * null counts as empty, a setting that is null is an error.
 *
 * Each key's table entry also says whether a reload may change it. The
 * listening socket and the worker threads are made once at start, so
 * listen.* and workers are restart-only; config_reload_changes() lists the
 * ones a new file changes and leaves the policy to the caller.
 *
 * Ownership: a snapshot owns every string and array in it and is freed by
 * config_unref when its last reference goes. A snapshot is private to the
 * thread that parses it until config_parse returns and never changes
 * afterwards, so readers need no lock; refs is the only shared, mutable
 * field.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <uv.h>
#include <yaml.h>

#include "config.h"
#include "log.h"

#define IDENT_MAX     63                /* PostgreSQL's NAMEDATALEN - 1 */
#define WORKERS_MAX   64
#define FILE_MAX      (16u << 20)       /* a config bigger than this is a mistake */
#define KEY_PATH_MAX  256               /* key paths in messages; longer ones are cut */
#define GOT_MAX       60                /* bytes of a bad value quoted in a message */
#define MS_PER_HOUR   (3600u * 1000u)

/* The socket file is <socket_dir>/.s.PGSQL.<port>; it must fit in sun_path. */
#define SOCKET_SUFFIX_MAX  (sizeof("/.s.PGSQL.65535") - 1)
#define SOCKET_DIR_MAX     (sizeof(((struct sockaddr_un *)0)->sun_path) - 1 - SOCKET_SUFFIX_MAX)

enum key_type {
	KEY_INT,        /* int, decimal */
	KEY_MODE,       /* unsigned, octal digits */
	KEY_DURATION,   /* uint64_t milliseconds, see duration_parse() */
	KEY_STRING,     /* char *, any text */
	KEY_PATH,       /* char *, an absolute path short enough for a socket */
	KEY_LOG_LEVEL,  /* int holding an enum log_level */
	KEY_POOL_MODE,  /* enum pool_mode */
	KEY_SPREAD,     /* enum accept_spread */
	KEY_CONNINFO,   /* struct db_config: conninfo, keywords, values, forced_user */
	KEY_LISTEN,     /* nested mapping of listen_keys, stored in struct config */
	KEY_DATABASES,  /* mapping of database name -> db_keys */
	KEY_USERS,      /* mapping of user name -> user_keys, in struct db_config */
};

struct key {
	const char *name;
	enum key_type type;
	size_t off;             /* the field, in struct config, db_config or user_config */
	int64_t min, max;       /* inclusive bounds of KEY_INT, KEY_MODE, KEY_DURATION */
	bool required;
	bool reload;            /* a reload may change it; otherwise only a restart */
};

#define CFG(f) offsetof(struct config, f)
#define DB(f)  offsetof(struct db_config, f)
#define USER(f) offsetof(struct user_config, f)

static const struct key top_keys[] = {
	{"listen", KEY_LISTEN, 0, 0, 0, false, false},
	{"workers", KEY_INT, CFG(workers), 1, WORKERS_MAX, false, false},
	{"accept_spread", KEY_SPREAD, CFG(accept_spread), 0, 0, false, true},
	{"log_level", KEY_LOG_LEVEL, CFG(log_level), 0, 0, false, true},
	{"drain_timeout", KEY_DURATION, CFG(drain_timeout_ms), 0, 24 * MS_PER_HOUR, false, true},
	{"shutdown_timeout", KEY_DURATION, CFG(shutdown_timeout_ms), 100, MS_PER_HOUR, false, true},
	{"server_connect_timeout", KEY_DURATION, CFG(server_connect_timeout_ms), 100, MS_PER_HOUR,
	 false, true},
	{"client_login_timeout", KEY_DURATION, CFG(client_login_timeout_ms), 100, MS_PER_HOUR,
	 false, true},
	{"server_reset_query", KEY_STRING, CFG(server_reset_query), 0, 0, false, true},
	{"max_client_conn", KEY_INT, CFG(max_client_conn), 1, 1000000, false, true},
	{"max_prepared_statements", KEY_INT, CFG(max_prepared_statements), 0, 100000, false, true},
	{"max_client_prepared_statements", KEY_INT, CFG(max_client_prepared_statements), 1, 1000000,
	 false, true},
	{"client_idle_timeout", KEY_DURATION, CFG(client_idle_timeout_ms), 0, 24 * MS_PER_HOUR,
	 false, true},
	{"query_wait_timeout", KEY_DURATION, CFG(query_wait_timeout_ms), 0, 24 * MS_PER_HOUR,
	 false, true},
	{"idle_transaction_timeout", KEY_DURATION, CFG(idle_transaction_timeout_ms), 0,
	 24 * MS_PER_HOUR, false, true},
	{"server_idle_timeout", KEY_DURATION, CFG(server_idle_timeout_ms), 0, 24 * MS_PER_HOUR,
	 false, true},
	{"server_lifetime", KEY_DURATION, CFG(server_lifetime_ms), 0, 24 * MS_PER_HOUR, false, true},
	{"server_check_query", KEY_STRING, CFG(server_check_query), 0, 0, false, true},
	{"server_check_delay", KEY_DURATION, CFG(server_check_delay_ms), 0, 24 * MS_PER_HOUR,
	 false, true},
	{"reserve_pool_timeout", KEY_DURATION, CFG(reserve_pool_timeout_ms), 0, 24 * MS_PER_HOUR,
	 false, true},
	{"databases", KEY_DATABASES, 0, 0, 0, false, true},
};

/* The listening socket is made once at start, so none of these reload. */
static const struct key listen_keys[] = {
	{"socket_dir", KEY_PATH, CFG(socket_dir), 0, 0, false, false},
	{"port", KEY_INT, CFG(port), 1, 65535, false, false},
	{"socket_mode", KEY_MODE, CFG(socket_mode), 0, 0777, false, false},
};

static const struct key db_keys[] = {
	{"conninfo", KEY_CONNINFO, 0, 0, 0, true, true},
	{"pool_size", KEY_INT, DB(pool_size), 1, 10000, false, true},
	{"pool_mode", KEY_POOL_MODE, DB(pool_mode), 0, 0, false, true},
	{"min_pool_size", KEY_INT, DB(min_pool_size), 0, 10000, false, true},
	{"reserve_pool_size", KEY_INT, DB(reserve_pool_size), 0, 10000, false, true},
	{"max_db_connections", KEY_INT, DB(max_db_connections), 0, 100000, false, true},
	{"users", KEY_USERS, 0, 0, 0, false, true},
};

/* Per-user overrides of a database's pool; parse_users() sets has_pool_mode. */
static const struct key user_keys[] = {
	{"pool_mode", KEY_POOL_MODE, USER(pool_mode), 0, 0, false, true},
	{"pool_size", KEY_INT, USER(pool_size), 1, 10000, false, true},
};

#define NKEYS(t) (sizeof(t) / sizeof((t)[0]))
#define KEYS_MAX  32              /* the most keys in one table, see parse_mapping() */

_Static_assert(NKEYS(top_keys) <= KEYS_MAX, "top_keys too long");
_Static_assert(NKEYS(listen_keys) <= KEYS_MAX, "listen_keys too long");
_Static_assert(NKEYS(db_keys) <= KEYS_MAX, "db_keys too long");
_Static_assert(NKEYS(user_keys) <= KEYS_MAX, "user_keys too long");

/* State of one config_parse call. */
struct parse {
	const char *file;               /* name used in messages */
	yaml_document_t *doc;
	struct config_errors *errs;     /* may be NULL: then errors are only counted */
	size_t nerr;
};

static void errs_push(struct config_errors *errs, char *msg)
{
	char **v;

	if (errs == NULL || msg == NULL) {
		free(msg);
		return;
	}
	v = realloc(errs->msgs, (errs->n + 1) * sizeof(*v));
	if (v == NULL) {
		free(msg);
		return;
	}
	errs->msgs = v;
	errs->msgs[errs->n++] = msg;
}

__attribute__((format(printf, 2, 3)))
static void errs_add(struct config_errors *errs, const char *fmt, ...)
{
	char *msg = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	errs_push(errs, msg);
}

/* Records "file:line:column: text"; mark is libyaml's, counted from 0. */
__attribute__((format(printf, 3, 4)))
static void error_at(struct parse *p, const yaml_mark_t *mark, const char *fmt, ...)
{
	char *text = NULL;
	va_list ap;

	p->nerr++;
	va_start(ap, fmt);
	if (vasprintf(&text, fmt, ap) < 0)
		text = NULL;
	va_end(ap);
	errs_add(p->errs, "%s:%zu:%zu: %s", p->file, mark->line + 1, mark->column + 1,
	         text ? text : "out of memory");
	free(text);
}

static void error_oom(struct parse *p)
{
	p->nerr++;
	errs_add(p->errs, "%s: out of memory", p->file);
}

/* Parses [-]digits in base 10, or digits in base 8. Returns 0, -EINVAL when
 * s is not of that form, or -ERANGE when it does not fit in an int64_t. */
static int int_parse(const char *s, unsigned base, int64_t *out)
{
	const char *d = s;
	uint64_t v = 0;
	bool neg = false;

	if (base == 10 && *d == '-') {
		neg = true;
		d++;
	}
	if (*d == '\0' || strspn(d, base == 8 ? "01234567" : "0123456789") != strlen(d))
		return -EINVAL;
	for (; *d != '\0'; d++) {
		v = v * base + (uint64_t)(*d - '0');
		if (v > (uint64_t)INT64_MAX)
			return -ERANGE;
	}
	*out = neg ? -(int64_t)v : (int64_t)v;
	return 0;
}

/* Digits, then an optional unit: ms, s, m or h; no unit means seconds.
 * Returns 0, -EINVAL for any other form, or -ERANGE on overflow. */
static int duration_parse(const char *s, uint64_t *ms)
{
	const char *u = s;
	uint64_t v = 0, unit;
	bool overflow = false;

	if (*u < '0' || *u > '9')
		return -EINVAL;
	for (; *u >= '0' && *u <= '9'; u++) {
		unsigned d = (unsigned)(*u - '0');

		if (v > (UINT64_MAX - d) / 10)
			overflow = true;
		else
			v = v * 10 + d;
	}
	if (*u == '\0' || strcmp(u, "s") == 0)
		unit = 1000;
	else if (strcmp(u, "ms") == 0)
		unit = 1;
	else if (strcmp(u, "m") == 0)
		unit = 60 * 1000;
	else if (strcmp(u, "h") == 0)
		unit = MS_PER_HOUR;
	else
		return -EINVAL;
	if (overflow || v > UINT64_MAX / unit)
		return -ERANGE;
	*ms = v * unit;
	return 0;
}

int config_parse_duration(const char *s, uint64_t *ms)
{
	return duration_parse(s, ms) == 0 ? 0 : -1;
}

/* Writes a duration the way an operator would: the largest exact unit. */
static const char *duration_str(uint64_t ms, char *buf, size_t len)
{
	if (ms == 0)
		snprintf(buf, len, "0");
	else if (ms % MS_PER_HOUR == 0)
		snprintf(buf, len, "%" PRIu64 "h", ms / MS_PER_HOUR);
	else if (ms % 60000 == 0)
		snprintf(buf, len, "%" PRIu64 "m", ms / 60000);
	else if (ms % 1000 == 0)
		snprintf(buf, len, "%" PRIu64 "s", ms / 1000);
	else
		snprintf(buf, len, "%" PRIu64 "ms", ms);
	return buf;
}

const char *pool_mode_name(enum pool_mode mode)
{
	switch (mode) {
	case POOL_SESSION:
		return "session";
	case POOL_TRANSACTION:
		return "transaction";
	case POOL_STATEMENT:
		return "statement";
	}
	return "unknown";
}

static int pool_mode_parse(const char *s)
{
	for (int m = POOL_SESSION; m <= POOL_STATEMENT; m++)
		if (strcmp(s, pool_mode_name((enum pool_mode)m)) == 0)
			return m;
	return -1;
}

/* ---- snapshot memory ---- */

static void db_config_clear(struct db_config *db)
{
	free(db->name);
	free(db->conninfo);
	for (size_t i = 0; db->keywords != NULL && db->keywords[i] != NULL; i++) {
		free(db->keywords[i]);
		free(db->values[i]);
	}
	free(db->keywords);
	free(db->values);
	for (size_t i = 0; i < db->nusers; i++)
		free(db->users[i].name);
	free(db->users);
	memset(db, 0, sizeof(*db));
}

static void config_free(struct config *cfg)
{
	if (cfg == NULL)
		return;
	for (size_t i = 0; i < cfg->ndbs; i++)
		db_config_clear(&cfg->dbs[i]);
	free(cfg->dbs);
	free(cfg->path);
	free(cfg->socket_dir);
	free(cfg->server_reset_query);
	free(cfg->server_check_query);
	free(cfg);
}

int config_default_workers(unsigned ncpu)
{
	if (ncpu < 1)
		return 1;
	return ncpu > WORKERS_MAX ? WORKERS_MAX : (int)ncpu;
}

enum accept_spread config_default_spread(unsigned ncpu)
{
	/* On two CPUs PostgreSQL and the clients need the other one: make bench
	 * measured one busy worker at 1.2-1.3x the TPS and 0.6x the CPU per
	 * transaction of two (pgbench -S, 50 clients, transaction mode), but
	 * two at up to 1.3x the TPS of one when every transaction connects
	 * anew (pgbench -C). Churn gives each workload its better one. */
	return ncpu <= 2 ? SPREAD_CHURN : SPREAD_ALWAYS;
}

/* A snapshot holding every default, or NULL when memory runs out. */
static struct config *config_new(const char *path)
{
	struct config *cfg = calloc(1, sizeof(*cfg));
	unsigned ncpu = uv_available_parallelism();

	if (cfg == NULL)
		return NULL;
	atomic_init(&cfg->refs, 1);
	cfg->path = strdup(path);
	cfg->socket_dir = strdup("/tmp");
	cfg->port = 6432;
	cfg->socket_mode = 0777;
	cfg->workers = config_default_workers(ncpu);
	cfg->accept_spread = config_default_spread(ncpu);
	cfg->log_level = LOG_INFO;
	cfg->drain_timeout_ms = 30 * 1000;
	cfg->shutdown_timeout_ms = 10 * 1000;
	cfg->server_connect_timeout_ms = 15 * 1000;
	cfg->client_login_timeout_ms = 60 * 1000;
	cfg->server_reset_query = strdup("DISCARD ALL");
	cfg->max_client_conn = 10000;
	cfg->max_prepared_statements = 200;
	cfg->max_client_prepared_statements = 1000;
	cfg->client_idle_timeout_ms = 0;
	cfg->query_wait_timeout_ms = 120 * 1000;
	cfg->idle_transaction_timeout_ms = 0;
	cfg->server_idle_timeout_ms = 600 * 1000;
	cfg->server_lifetime_ms = 3600 * 1000;
	cfg->server_check_query = strdup("SELECT 1");
	cfg->server_check_delay_ms = 30 * 1000;
	cfg->reserve_pool_timeout_ms = 5 * 1000;
	if (cfg->path == NULL || cfg->socket_dir == NULL || cfg->server_reset_query == NULL ||
	    cfg->server_check_query == NULL) {
		config_free(cfg);
		return NULL;
	}
	return cfg;
}

struct config *config_ref(struct config *cfg)
{
	atomic_fetch_add_explicit(&cfg->refs, 1, memory_order_relaxed);
	return cfg;
}

void config_unref(struct config *cfg)
{
	if (cfg != NULL && atomic_fetch_sub_explicit(&cfg->refs, 1, memory_order_acq_rel) == 1)
		config_free(cfg);
}

void config_errors_free(struct config_errors *errs)
{
	for (size_t i = 0; i < errs->n; i++)
		free(errs->msgs[i]);
	free(errs->msgs);
	errs->msgs = NULL;
	errs->n = 0;
}

const struct db_config *config_find_db(const struct config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->ndbs; i++)
		if (strcmp(cfg->dbs[i].name, name) == 0)
			return &cfg->dbs[i];
	return NULL;
}

const struct user_config *config_find_user(const struct db_config *db, const char *user)
{
	for (size_t i = 0; user != NULL && i < db->nusers; i++)
		if (strcmp(db->users[i].name, user) == 0)
			return &db->users[i];
	return NULL;
}

enum pool_mode config_pool_mode(const struct db_config *db, const char *user)
{
	const struct user_config *u = config_find_user(db, user);

	return u != NULL && u->has_pool_mode ? u->pool_mode : db->pool_mode;
}

int config_pool_size(const struct db_config *db, const char *user)
{
	const struct user_config *u = config_find_user(db, user);

	return u != NULL && u->pool_size > 0 ? u->pool_size : db->pool_size;
}

/* ---- YAML nodes ---- */

static const char *scalar(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

static bool is_null(const yaml_node_t *n)
{
	const char *s;

	if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	s = scalar(n);
	return *s == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
	       strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

/* What a node is, for "expected X, got Y". */
static const char *describe(const yaml_node_t *n, char *buf, size_t len)
{
	if (n->type == YAML_MAPPING_NODE)
		return "a mapping";
	if (n->type == YAML_SEQUENCE_NODE)
		return "a sequence";
	if (is_null(n))
		return "null";
	if (n->data.scalar.length > GOT_MAX)
		snprintf(buf, len, "\"%.*s...\"", GOT_MAX, scalar(n));
	else
		snprintf(buf, len, "\"%s\"", scalar(n));
	return buf;
}

static void error_kind(struct parse *p, const yaml_node_t *n, const char *path, const char *want)
{
	char buf[GOT_MAX + 8];

	error_at(p, &n->start_mark, "%s: expected %s, got %s", path, want, describe(n, buf, sizeof(buf)));
}

/* Writes "path.name" into out (KEY_PATH_MAX bytes); an absurdly long key is
 * cut, which only shortens a message. */
static void key_join(char *out, const char *path, const char *name)
{
	int n;

	if (name[0] == '\0')
		name = "\"\"";
	if (path[0] == '\0')
		n = snprintf(out, KEY_PATH_MAX, "%s", name);
	else
		n = snprintf(out, KEY_PATH_MAX, "%s.%s", path, name);
	if (n >= KEY_PATH_MAX)
		memcpy(out + KEY_PATH_MAX - 4, "...", 4);
}

/* A scalar's text, or NULL after reporting why it cannot be one. */
static const char *scalar_text(struct parse *p, const yaml_node_t *n, const char *path,
                               const char *want)
{
	if (n->type != YAML_SCALAR_NODE || is_null(n)) {
		error_kind(p, n, path, want);
		return NULL;
	}
	if (strlen(scalar(n)) != n->data.scalar.length) {
		error_at(p, &n->start_mark, "%s: contains a NUL byte", path);
		return NULL;
	}
	return scalar(n);
}

static const char *key_want(enum key_type type)
{
	switch (type) {
	case KEY_INT:
		return "an integer";
	case KEY_MODE:
		return "an octal file mode (like 0770)";
	case KEY_DURATION:
		return "a duration (like 500ms, 10s, 5m or 1h)";
	case KEY_STRING:
	case KEY_CONNINFO:
		return "a string";
	case KEY_PATH:
		return "an absolute path";
	case KEY_LOG_LEVEL:
		return "debug, info, warning or error";
	case KEY_POOL_MODE:
		return "session, transaction or statement";
	case KEY_SPREAD:
		return "always or churn";
	case KEY_LISTEN:
	case KEY_DATABASES:
	case KEY_USERS:
		break;
	}
	return "a mapping";
}

/* ---- values ---- */

static void set_string(struct parse *p, char **field, const char *text)
{
	char *s = strdup(text);

	if (s == NULL) {
		error_oom(p);
		return;
	}
	free(*field);
	*field = s;
}

static void parse_int_key(struct parse *p, const struct key *k, const yaml_node_t *v,
                          const char *path, const char *text, void *field)
{
	unsigned base = k->type == KEY_MODE ? 8 : 10;
	int64_t n;
	int rc = int_parse(text, base, &n);

	if (rc == -EINVAL) {
		error_kind(p, v, path, key_want(k->type));
		return;
	}
	if (rc == -ERANGE || n < k->min || n > k->max) {
		if (base == 8)
			error_at(p, &v->start_mark, "%s: %s is out of range (%#" PRIo64 "..%#" PRIo64 ")",
			         path, text, (uint64_t)k->min, (uint64_t)k->max);
		else
			error_at(p, &v->start_mark, "%s: %s is out of range (%" PRId64 "..%" PRId64 ")",
			         path, text, k->min, k->max);
		return;
	}
	if (base == 8)
		*(unsigned *)field = (unsigned)n;
	else
		*(int *)field = (int)n;
}

static void parse_duration_key(struct parse *p, const struct key *k, const yaml_node_t *v,
                               const char *path, const char *text, uint64_t *field)
{
	char lo[32], hi[32];
	uint64_t ms;
	int rc = duration_parse(text, &ms);

	if (rc == -EINVAL) {
		error_kind(p, v, path, key_want(k->type));
		return;
	}
	if (rc == -ERANGE || ms < (uint64_t)k->min || ms > (uint64_t)k->max) {
		error_at(p, &v->start_mark, "%s: %s is out of range (%s..%s)", path, text,
		         duration_str((uint64_t)k->min, lo, sizeof(lo)),
		         duration_str((uint64_t)k->max, hi, sizeof(hi)));
		return;
	}
	*field = ms;
}

static void parse_path_key(struct parse *p, const yaml_node_t *v, const char *path,
                           const char *text, char **field)
{
	if (text[0] != '/') {
		error_kind(p, v, path, key_want(KEY_PATH));
		return;
	}
	if (strlen(text) > SOCKET_DIR_MAX) {
		error_at(p, &v->start_mark, "%s: longer than %zu bytes, too long for a Unix socket path",
		         path, (size_t)SOCKET_DIR_MAX);
		return;
	}
	set_string(p, field, text);
}

/* Sets one keyword/value pair, or neither when memory runs out, so that the
 * arrays stay NULL terminated and db_config_clear frees them whole. */
static bool conninfo_push(struct db_config *db, size_t i, const char *key, const char *val)
{
	char *k = strdup(key), *v = strdup(val);

	if (k == NULL || v == NULL) {
		free(k);
		free(v);
		return false;
	}
	db->keywords[i] = k;
	db->values[i] = v;
	return true;
}

/* Turns PQconninfoParse's options into the NULL terminated keyword/value
 * arrays of PQconnectStartParams, adding dbname = the database's name when
 * the conninfo has none. Returns false when memory runs out. */
static bool conninfo_arrays(struct db_config *db, const PQconninfoOption *opts)
{
	size_t n = 0, i = 0;
	bool has_dbname = false;

	for (const PQconninfoOption *o = opts; o->keyword != NULL; o++)
		if (o->val != NULL && o->val[0] != '\0')
			n++;
	db->keywords = calloc(n + 2, sizeof(char *));
	db->values = calloc(n + 2, sizeof(char *));
	if (db->keywords == NULL || db->values == NULL)
		return false;
	for (const PQconninfoOption *o = opts; o->keyword != NULL; o++) {
		if (o->val == NULL || o->val[0] == '\0')
			continue;
		if (strcmp(o->keyword, "dbname") == 0)
			has_dbname = true;
		if (strcmp(o->keyword, "user") == 0)
			db->forced_user = true;
		if (!conninfo_push(db, i++, o->keyword, o->val))
			return false;
	}
	return has_dbname || conninfo_push(db, i, "dbname", db->name);
}

static void parse_conninfo_key(struct parse *p, struct db_config *db, const yaml_node_t *v,
                               const char *path, const char *text)
{
	char *err = NULL;
	PQconninfoOption *opts = PQconninfoParse(text, &err);

	if (opts == NULL) {
		if (err == NULL) {
			error_oom(p);
			return;
		}
		err[strcspn(err, "\n")] = '\0';
		error_at(p, &v->start_mark, "%s: invalid connection string: %s", path, err);
		PQfreemem(err);
		return;
	}
	set_string(p, &db->conninfo, text);
	if (!conninfo_arrays(db, opts))
		error_oom(p);
	PQconninfoFree(opts);
}

static void parse_mapping(struct parse *p, const yaml_node_t *map, const char *path,
                          const struct key *keys, size_t nkeys, void *base);
static void parse_databases(struct parse *p, struct config *cfg, const yaml_node_t *map,
                            const char *path);
static void parse_users(struct parse *p, struct db_config *db, const yaml_node_t *map,
                        const char *path);

/* Checks one value against its key's type and bounds and stores it into
 * base; a value that fails leaves the default in place. */
static void parse_value(struct parse *p, const struct key *k, const yaml_node_t *v,
                        const char *path, void *base)
{
	void *field = (char *)base + k->off;
	const char *text;
	int n;

	if (k->type == KEY_LISTEN) {
		parse_mapping(p, v, path, listen_keys, NKEYS(listen_keys), base);
		return;
	}
	if (k->type == KEY_DATABASES) {
		parse_databases(p, base, v, path);
		return;
	}
	if (k->type == KEY_USERS) {
		parse_users(p, base, v, path);
		return;
	}
	text = scalar_text(p, v, path, key_want(k->type));
	if (text == NULL)
		return;
	switch (k->type) {
	case KEY_INT:
	case KEY_MODE:
		parse_int_key(p, k, v, path, text, field);
		break;
	case KEY_DURATION:
		parse_duration_key(p, k, v, path, text, field);
		break;
	case KEY_STRING:
		set_string(p, field, text);
		break;
	case KEY_PATH:
		parse_path_key(p, v, path, text, field);
		break;
	case KEY_LOG_LEVEL:
		if ((n = log_level_parse(text)) < 0)
			error_kind(p, v, path, key_want(k->type));
		else
			*(int *)field = n;
		break;
	case KEY_POOL_MODE:
		if ((n = pool_mode_parse(text)) < 0)
			error_kind(p, v, path, key_want(k->type));
		else
			*(enum pool_mode *)field = (enum pool_mode)n;
		break;
	case KEY_SPREAD:
		if (strcmp(text, "always") == 0)
			*(enum accept_spread *)field = SPREAD_ALWAYS;
		else if (strcmp(text, "churn") == 0)
			*(enum accept_spread *)field = SPREAD_CHURN;
		else
			error_kind(p, v, path, key_want(k->type));
		break;
	case KEY_CONNINFO:
		parse_conninfo_key(p, base, v, path, text);
		break;
	case KEY_LISTEN:
	case KEY_DATABASES:
	case KEY_USERS:
		break;
	}
}

static const yaml_node_t *node(struct parse *p, int id)
{
	return yaml_document_get_node(p->doc, id);
}

/* The key of a mapping pair as text, or NULL after reporting why not. */
static const char *key_text(struct parse *p, const yaml_node_t *k, const char *path)
{
	char buf[GOT_MAX + 8];

	if (k->type != YAML_SCALAR_NODE) {
		error_at(p, &k->start_mark, "%s: expected a key name, got %s",
		         path[0] != '\0' ? path : "(top level)", describe(k, buf, sizeof(buf)));
		return NULL;
	}
	if (strlen(scalar(k)) != k->data.scalar.length) {
		error_at(p, &k->start_mark, "%s: key contains a NUL byte",
		         path[0] != '\0' ? path : "(top level)");
		return NULL;
	}
	return scalar(k);
}

/* True when map holds pairs to walk; null counts as an empty mapping. */
static bool want_mapping(struct parse *p, const yaml_node_t *map, const char *path)
{
	if (map->type == YAML_MAPPING_NODE || is_null(map))
		return true;
	error_kind(p, map, path, "a mapping");
	return false;
}

static size_t map_len(const yaml_node_t *map)
{
	if (map->type != YAML_MAPPING_NODE)
		return 0;
	return (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
}

static const yaml_node_pair_t *map_pair(const yaml_node_t *map, size_t i)
{
	return &map->data.mapping.pairs.start[i];
}

/* Checks a mapping against a key table, storing values into base (a struct
 * config or struct db_config). Unknown keys, duplicates and wrong kinds are
 * errors; a required key that never appears is reported at the mapping. */
static void parse_mapping(struct parse *p, const yaml_node_t *map, const char *path,
                          const struct key *keys, size_t nkeys, void *base)
{
	const yaml_node_t *seen[KEYS_MAX] = {NULL};    /* first key node of each entry */
	char kpath[KEY_PATH_MAX];

	if (!want_mapping(p, map, path))
		return;
	for (size_t i = 0; i < map_len(map); i++) {
		const yaml_node_t *k = node(p, map_pair(map, i)->key);
		const yaml_node_t *v = node(p, map_pair(map, i)->value);
		const char *name = key_text(p, k, path);
		size_t j;

		if (name == NULL)
			continue;
		key_join(kpath, path, name);
		for (j = 0; j < nkeys && strcmp(keys[j].name, name) != 0; j++)
			;
		if (j == nkeys) {
			error_at(p, &k->start_mark, "%s: unknown key", kpath);
		} else if (seen[j] != NULL) {
			error_at(p, &k->start_mark, "%s: duplicate key (first at line %zu)", kpath,
			         seen[j]->start_mark.line + 1);
		} else {
			seen[j] = k;
			parse_value(p, &keys[j], v, kpath, base);
		}
	}
	for (size_t j = 0; j < nkeys; j++) {
		if (keys[j].required && seen[j] == NULL) {
			key_join(kpath, path, keys[j].name);
			error_at(p, &map->start_mark, "%s: missing required key", kpath);
		}
	}
}

/* Database and user names are what PostgreSQL clients send in their startup
 * packet, so they follow PostgreSQL's limit on identifiers. what is
 * "database" or "user". */
static void check_name(struct parse *p, const yaml_node_t *k, const char *path,
                       const char *what, const char *name)
{
	if (name[0] == '\0')
		error_at(p, &k->start_mark, "%s: %s name is empty", path, what);
	else if (strlen(name) > IDENT_MAX)
		error_at(p, &k->start_mark, "%s: %s name is longer than %d bytes", path, what,
		         IDENT_MAX);
}

/* Index of a pair among the first n of map whose key is name, or -1. */
static long key_index(struct parse *p, const yaml_node_t *map, size_t n, const char *name)
{
	for (size_t j = 0; j < n && j < map_len(map); j++) {
		const yaml_node_t *k = node(p, map_pair(map, j)->key);

		if (k->type == YAML_SCALAR_NODE && strcmp(scalar(k), name) == 0)
			return (long)j;
	}
	return -1;
}

/* The name of pair i of a mapping of named entries (databases:, users:),
 * with its key path in kpath, or NULL after reporting why it cannot be
 * used. The names are the operator's, not a key table's, so duplicates are
 * found here rather than by parse_mapping(). */
static const char *entry_name(struct parse *p, const yaml_node_t *map, size_t i,
                              const char *path, const char *what, char *kpath)
{
	const yaml_node_t *k = node(p, map_pair(map, i)->key);
	const char *name = key_text(p, k, path);
	long first;

	if (name == NULL)
		return NULL;
	key_join(kpath, path, name);
	if ((first = key_index(p, map, i, name)) >= 0) {
		error_at(p, &k->start_mark, "%s: duplicate key (first at line %zu)", kpath,
		         node(p, map_pair(map, (size_t)first)->key)->start_mark.line + 1);
		return NULL;
	}
	check_name(p, k, kpath, what, name);
	return name;
}

/* A pool keeps min_pool_size connections open, so that cannot exceed the
 * pool's cap. Checked only when the database's own keys were all valid, so
 * that a value refused earlier (and left at its default) does not add a
 * second, misleading message. Reported at the database's name. */
static void check_db(struct parse *p, const struct db_config *db, const yaml_node_t *k,
                     const char *path)
{
	if (db->min_pool_size > db->pool_size)
		error_at(p, &k->start_mark, "%s: min_pool_size %d is greater than pool_size %d", path,
		         db->min_pool_size, db->pool_size);
}

static void parse_databases(struct parse *p, struct config *cfg, const yaml_node_t *map,
                            const char *path)
{
	char kpath[KEY_PATH_MAX];
	size_t n = map_len(map);

	if (!want_mapping(p, map, path) || n == 0)
		return;
	cfg->dbs = calloc(n, sizeof(*cfg->dbs));
	if (cfg->dbs == NULL) {
		error_oom(p);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const yaml_node_t *k = node(p, map_pair(map, i)->key);
		const yaml_node_t *v = node(p, map_pair(map, i)->value);
		const char *name = entry_name(p, map, i, path, "database", kpath);
		struct db_config *db;
		size_t nerr;

		if (name == NULL)
			continue;
		db = &cfg->dbs[cfg->ndbs++];
		db->pool_size = 20;
		db->pool_mode = POOL_SESSION;
		db->min_pool_size = 0;
		db->reserve_pool_size = 0;
		db->max_db_connections = 0;
		if ((db->name = strdup(name)) == NULL) {
			error_oom(p);
			continue;
		}
		nerr = p->nerr;
		parse_mapping(p, v, kpath, db_keys, NKEYS(db_keys), db);
		if (p->nerr == nerr)
			check_db(p, db, k, kpath);
	}
}

/* databases.NAME.users: user name -> overrides of the database's pool. A
 * null entry ("alice:" or "alice: {}") is a user with no override. */
static void parse_users(struct parse *p, struct db_config *db, const yaml_node_t *map,
                        const char *path)
{
	char kpath[KEY_PATH_MAX];
	size_t n = map_len(map);

	if (!want_mapping(p, map, path) || n == 0)
		return;
	db->users = calloc(n, sizeof(*db->users));
	if (db->users == NULL) {
		error_oom(p);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const yaml_node_t *v = node(p, map_pair(map, i)->value);
		const char *name = entry_name(p, map, i, path, "user", kpath);
		struct user_config *u;

		if (name == NULL)
			continue;
		u = &db->users[db->nusers++];
		if ((u->name = strdup(name)) == NULL) {
			error_oom(p);
			continue;
		}
		parse_mapping(p, v, kpath, user_keys, NKEYS(user_keys), u);
		u->has_pool_mode = key_index(p, v, map_len(v), "pool_mode") >= 0;
	}
}

/* ---- whole file ---- */

/* libyaml reports reader errors (bad encoding) as a byte offset only. */
static void offset_mark(const char *text, size_t len, size_t offset, yaml_mark_t *mark)
{
	memset(mark, 0, sizeof(*mark));
	for (size_t i = 0; i < offset && i < len; i++) {
		if (text[i] == '\n') {
			mark->line++;
			mark->column = 0;
		} else {
			mark->column++;
		}
	}
}

static void syntax_error(struct parse *p, const yaml_parser_t *parser, const char *text,
                         size_t len)
{
	const char *problem = parser->problem ? parser->problem : "unknown error";
	yaml_mark_t mark = parser->problem_mark;

	switch (parser->error) {
	case YAML_MEMORY_ERROR:
		error_oom(p);
		return;
	case YAML_READER_ERROR:
		offset_mark(text, len, parser->problem_offset, &mark);
		error_at(p, &mark, "YAML syntax error: %s", problem);
		return;
	default:
		break;
	}
	if (parser->context != NULL)
		error_at(p, &mark, "YAML syntax error: %s (%s at line %zu, column %zu)", problem,
		         parser->context, parser->context_mark.line + 1,
		         parser->context_mark.column + 1);
	else
		error_at(p, &mark, "YAML syntax error: %s", problem);
}

/* A second document in the file ("---") is refused rather than ignored. */
static void check_one_document(struct parse *p, yaml_parser_t *parser, const char *text,
                               size_t len)
{
	yaml_document_t doc;
	const yaml_node_t *root;

	if (!yaml_parser_load(parser, &doc)) {
		syntax_error(p, parser, text, len);
		return;
	}
	root = yaml_document_get_root_node(&doc);
	if (root != NULL)
		error_at(p, &root->start_mark, "a second YAML document; the file must hold one");
	yaml_document_delete(&doc);
}

static void parse_root(struct parse *p, struct config *cfg)
{
	const yaml_node_t *root = yaml_document_get_root_node(p->doc);
	yaml_mark_t start = {0, 0, 0};

	if (root == NULL) {
		error_at(p, &start, "the file is empty or only comments (expected a mapping of settings)");
		return;
	}
	if (root->type != YAML_MAPPING_NODE) {
		error_kind(p, root, "top level", "a mapping of settings");
		return;
	}
	parse_mapping(p, root, "", top_keys, NKEYS(top_keys), cfg);
}

struct config *config_parse(const char *name, const char *text, size_t len,
                            struct config_errors *errs)
{
	struct parse p = {.file = name, .errs = errs};
	yaml_parser_t parser;
	yaml_document_t doc;
	struct config *cfg;

	if (!yaml_parser_initialize(&parser)) {
		error_oom(&p);
		return NULL;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	if (!yaml_parser_load(&parser, &doc)) {
		syntax_error(&p, &parser, text, len);
		yaml_parser_delete(&parser);
		return NULL;
	}
	p.doc = &doc;
	cfg = config_new(name);
	if (cfg == NULL)
		error_oom(&p);
	else
		parse_root(&p, cfg);
	if (p.nerr == 0)
		check_one_document(&p, &parser, text, len);
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	if (p.nerr > 0) {
		config_free(cfg);
		return NULL;
	}
	return cfg;
}

/* Reads a whole file; returns NULL with errno set. */
static char *read_all(const char *path, size_t *len)
{
	size_t cap = 4096, n = 0;
	char *buf = NULL, *nb;
	ssize_t r;
	int fd = open(path, O_RDONLY | O_CLOEXEC), saved;

	if (fd < 0)
		return NULL;
	for (;;) {
		if (n == cap || buf == NULL) {
			cap = buf == NULL ? cap : cap * 2;
			if (cap > FILE_MAX) {
				errno = EFBIG;
				goto err;
			}
			if ((nb = realloc(buf, cap)) == NULL)
				goto err;
			buf = nb;
		}
		r = read(fd, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			goto err;
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	*len = n;
	return buf;
err:
	saved = errno;
	free(buf);
	close(fd);
	errno = saved;
	return NULL;
}

struct config *config_load(const char *path, struct config_errors *errs)
{
	struct config *cfg;
	size_t len = 0;
	char *text = read_all(path, &len);

	if (text == NULL) {
		errs_add(errs, "%s: cannot read: %s", path, strerror(errno));
		return NULL;
	}
	cfg = config_parse(path, text, len, errs);
	free(text);
	return cfg;
}

/* ---- reload ---- */

/* Writes a setting's value for a message about a change. */
static void key_value_str(const struct key *k, const struct config *cfg, char *buf, size_t len)
{
	const void *field = (const char *)cfg + k->off;

	switch (k->type) {
	case KEY_INT:
		snprintf(buf, len, "%d", *(const int *)field);
		break;
	case KEY_MODE:
		snprintf(buf, len, "0%o", *(const unsigned *)field);
		break;
	case KEY_PATH:
	case KEY_STRING:
		snprintf(buf, len, "\"%s\"", *(char *const *)field);
		break;
	default:
		snprintf(buf, len, "?");
		break;
	}
}

static bool key_equal(const struct key *k, const struct config *a, const struct config *b)
{
	const void *fa = (const char *)a + k->off, *fb = (const char *)b + k->off;

	switch (k->type) {
	case KEY_INT:
		return *(const int *)fa == *(const int *)fb;
	case KEY_MODE:
		return *(const unsigned *)fa == *(const unsigned *)fb;
	case KEY_PATH:
	case KEY_STRING:
		return strcmp(*(char *const *)fa, *(char *const *)fb) == 0;
	default:
		return true;    /* no such key is restart-only */
	}
}

static size_t reload_diff(const struct key *keys, size_t nkeys, const char *path,
                          const struct config *cur, const struct config *next,
                          struct config_errors *errs)
{
	char kpath[KEY_PATH_MAX], was[KEY_PATH_MAX], now[KEY_PATH_MAX];
	size_t n = 0;

	for (size_t i = 0; i < nkeys; i++) {
		const struct key *k = &keys[i];

		if (k->type == KEY_LISTEN) {
			n += reload_diff(listen_keys, NKEYS(listen_keys), "listen", cur, next, errs);
			continue;
		}
		if (k->reload)
			continue;
		if (key_equal(k, cur, next))
			continue;
		key_value_str(k, cur, was, sizeof(was));
		key_value_str(k, next, now, sizeof(now));
		key_join(kpath, path, k->name);
		errs_add(errs, "%s: %s: changed from %s to %s, but only a restart applies it",
		         next->path, kpath, was, now);
		n++;
	}
	return n;
}

size_t config_reload_changes(const struct config *cur, const struct config *next,
                             struct config_errors *errs)
{
	return reload_diff(top_keys, NKEYS(top_keys), "", cur, next, errs);
}

static int keep_restart(const struct key *keys, size_t nkeys, struct config *next,
                        const struct config *cur)
{
	for (size_t i = 0; i < nkeys; i++) {
		const struct key *k = &keys[i];
		if (k->type == KEY_LISTEN) {
			if (keep_restart(listen_keys, NKEYS(listen_keys), next, cur) < 0)
				return -1;
			continue;
		}
		if (k->reload || key_equal(k, cur, next))
			continue;
		void *to = (char *)next + k->off;
		const void *from = (const char *)cur + k->off;
		switch (k->type) {
		case KEY_INT:
			*(int *)to = *(const int *)from;
			break;
		case KEY_MODE:
			*(unsigned *)to = *(const unsigned *)from;
			break;
		case KEY_PATH:
		case KEY_STRING: {
			char *s = strdup(*(char *const *)from);
			if (s == NULL)
				return -1;
			free(*(char **)to);
			*(char **)to = s;
			break;
		}
		default:
			break;
		}
	}
	return 0;
}

int config_keep_restart_keys(struct config *next, const struct config *cur)
{
	return keep_restart(top_keys, NKEYS(top_keys), next, cur);
}
