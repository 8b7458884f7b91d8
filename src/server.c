/*
 * Server connections. Owns each PGconn, its poll handle and deadline timer,
 * and the bytes read from PostgreSQL. Life of a server:
 *
 *   CONNECTING --login ok--> INTERNAL (client's settings) --> ACTIVE (relay)
 *   ACTIVE --transaction over (transaction/statement mode)--> IDLE
 *   ACTIVE --client leaves--> DRAIN (if replies are owed: cancel, read them)
 *          --> INTERNAL (ROLLBACK if in a transaction, then the reset query)
 *          --> IDLE
 *   IDLE: parked in the pool on this worker, handles kept (the poll watches
 *         for the server hanging up), or handed straight to the head waiter.
 *         A waiter on this worker adopts it as it is; one elsewhere gets it
 *         after its handles are closed here (server_detach), as does a
 *         client elsewhere that acquires it from the pool (MSG_MIGRATE).
 *   any --server_close(reason)--> PQfinish after the poll handle closed.
 *
 * A server that another worker took from the pool stays here, untouched,
 * until that worker's MSG_MIGRATE arrives: the registry, not this loop,
 * says who may use an idle server.
 *
 * Every step that waits on PostgreSQL has a deadline (server_connect_timeout
 * for login and for the pooler's own queries and drains), so a frozen
 * server costs a connection slot for a bounded time, never a hang.
 *
 * A server is never handed on dirty: it goes back to the pool only at
 * ReadyForQuery 'I' with no reply owed and the reset query done. Anything
 * else (a message cut in half, a failed rollback, a missed deadline) closes
 * it instead.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include "client.h"
#include "config.h"
#include "log.h"
#include "pool.h"
#include "proto.h"
#include "relay.h"
#include "runtime.h"
#include "server.h"
#include "worker.h"

/* Parameters PostgreSQL reports (GUC_REPORT) that libpq saw at login. */
static const char *const reported_params[] = {
	"server_version", "server_encoding", "client_encoding", "application_name",
	"DateStyle", "IntervalStyle", "TimeZone", "integer_datetimes",
	"standard_conforming_strings", "is_superuser", "session_authorization",
	"default_transaction_read_only", "in_hot_standby",
};

struct cancel_req {
	uv_work_t req;
	struct server *s;           /* NULL once the server was closed */
	PGcancel *cancel;
	uint64_t sid;
	int nfrom;                  /* connections waiting to hear it is done */
	struct cancel_from from[4];
	int ok;
	char err[256];
};

/* Connection parameters for one login: the pool's conninfo plus what
 * pgberth adds. Heap-allocated because it may cross to the thread pool. */
struct connect_req {
	uv_work_t req;
	struct server *s;           /* NULL once the server gave up waiting */
	PGconn *conn;               /* PQconnectStartParams' result */
	char *user;                 /* copy: the client may leave meanwhile */
	struct config *cfg;         /* holds the snapshot kw and val point into; or NULL */
	const char *kw[64];
	const char *val[64];
};

static void server_on_io(uv_poll_t *handle, int status, int events);
static void server_setup(struct server *s);
static void server_reset(struct server *s);

#define SID(s) (unsigned long long)(s)->id

static uint64_t server_step_timeout(const struct server *s)
{
	return s->w->cfg->server_connect_timeout_ms;
}

static struct server *server_new(struct worker *w, struct pool *pool)
{
	struct server *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return NULL;
	s->id = runtime_next_id(w->rt);
	s->rt = w->rt;
	s->w = w;
	s->pool = pool;
	s->fd = -1;
	s->txstatus = 'I';
	s->born_ms = uv_now(&w->loop);
	list_init(&s->idle_node);
	list_init(&s->node);
	list_init(&s->flush_node);
	list_add_tail(&w->servers, &s->node);
	return s;
}

static void handle_free(uv_handle_t *handle)
{
	free(handle);
}

/* PQfinish owes the fd to the poll handle until libuv let go of it. */
static void server_poll_closed(uv_handle_t *handle)
{
	PQfinish(handle->data);
	free(handle);
}

static void server_free_fields(struct server *s)
{
	buf_free(&s->in);
	buf_free(&s->out);
	free(s->error);
	free(s->moving_to);
	free(s->settings_sql);
	buf_free(&s->capture);
	pstmt_cache_clear(&s->stmts);
	pstmt_queue_clear(&s->replies);
	relay_drops_clear(s);
	for (int i = 0; i < s->nparams; i++) {
		free(s->params[i].name);
		free(s->params[i].value);
	}
	free(s);
}

void server_free_parked(void *server)
{
	struct server *s = server;
	PQfinish(s->conn);
	server_free_fields(s);
}

static void server_close_handles(struct server *s)
{
	if (s->timer != NULL) {
		uv_close((uv_handle_t *)s->timer, handle_free);
		s->timer = NULL;
	}
	list_del(&s->node);
	list_del(&s->idle_node);
	list_del(&s->flush_node);
}

/* Closes s without giving its pool slot back: the caller reuses it. */
static void server_close_keep_slot(struct server *s, const char *reason)
{
	struct client *c = s->client;

	log_info("s%llu: closing: %s", SID(s), reason);
	if (s->connecting != NULL)
		s->connecting->s = NULL;    /* its connect_work_done finishes the PGconn */
	if (s->cancel != NULL)
		s->cancel->s = NULL;
	if (c != NULL) {
		s->client = NULL;
		c->server = NULL;
		client_fatal(c, "08006", "server closed", "server connection closed: %s", reason);
	}
	server_close_handles(s);
	if (s->poll != NULL) {
		s->poll->data = s->conn;
		uv_close((uv_handle_t *)s->poll, server_poll_closed);
	} else if (s->conn != NULL) {
		PQfinish(s->conn);
	}
	server_free_fields(s);
}

void server_close(struct server *s, const char *reason)
{
	struct pool *pool = s->pool;
	struct runtime *rt = s->rt;
	struct pool_handoff h;

	server_close_keep_slot(s, reason);
	if (pool_server_closed(&rt->pools, pool, &h))
		server_handoff(rt, &h);
}

/* The server failed or was lost: its client, if any, gets an error with
 * sqlstate (unless the client is in the middle of a message from it, which
 * an error would corrupt), then the server is closed. */
static void server_fail(struct server *s, const char *sqlstate, const char *msg)
{
	struct client *c = s->client;

	log_warn("s%llu: %s", SID(s), msg);
	if (c != NULL) {
		/* Whole messages already read (a FATAL from the server, say) go
		 * to the client first, if its socket takes them now. */
		if (c->state == CLIENT_ACTIVE && s->fwd > 0 && s->msg_remain == 0 &&
		    buf_len(&c->out) == 0 && relay_write(c->fd, buf_head(&s->in), s->fwd) == (ssize_t)s->fwd) {
			buf_consume(&s->in, s->fwd);
			s->fwd = 0;
		}
		bool mid = c->state == CLIENT_ACTIVE && (s->fwd > 0 || s->msg_remain > 0);
		s->client = NULL;
		c->server = NULL;
		if (mid)
			client_close(c, "server connection lost in the middle of a message");
		else if (s->said_why)
			client_close(c, "the server closed the connection after an error");
		else
			client_fatal(c, sqlstate, "server", "%s", msg);
	}
	server_close(s, msg);
}

static void server_deadline_cb(uv_timer_t *timer)
{
	struct server *s = timer->data;
	char msg[256];

	snprintf(msg, sizeof(msg), "%s within %llu ms", s->deadline_what,
	         (unsigned long long)server_step_timeout(s));
	server_fail(s, "08006", msg);
}

static void server_deadline(struct server *s, const char *what)
{
	if (s->timer == NULL) {
		s->timer = malloc(sizeof(*s->timer));
		if (s->timer == NULL)
			return;     /* no deadline; the step can still finish */
		uv_timer_init(&s->w->loop, s->timer);
		s->timer->data = s;
	}
	s->deadline_what = what;
	uv_timer_start(s->timer, server_deadline_cb, server_step_timeout(s), 0);
}

static void server_deadline_clear(struct server *s)
{
	if (s->timer != NULL)
		uv_timer_stop(s->timer);
}

/* Points the poll handle at PQsocket(), which libpq may change between
 * connection steps (another host, a retry without SSL). The next attempt's
 * socket often reuses the closed one's fd number, which the kernel already
 * dropped from epoll: during login, force re-arms after every step. */
static int server_watch(struct server *s, int events, bool force)
{
	/* After login the socket stays put: the fast path skips the call. */
	int fd = force || s->poll == NULL ? PQsocket(s->conn) : s->fd;

	if (fd < 0)
		return -1;
	if (s->poll != NULL && fd != s->fd) {
		uv_close((uv_handle_t *)s->poll, handle_free);   /* libpq owns the old fd */
		s->poll = NULL;
	}
	if (s->poll == NULL) {
		s->poll = malloc(sizeof(*s->poll));
		if (s->poll == NULL)
			return -1;
		if (uv_poll_init(&s->w->loop, s->poll, fd) != 0) {
			free(s->poll);
			s->poll = NULL;
			return -1;
		}
		s->poll->data = s;
		s->poll_events = 0;
		s->fd = fd;
	}
	if (events != s->poll_events || force) {
		s->poll_events = events;
		if (events == 0)
			uv_poll_stop(s->poll);
		else
			uv_poll_start(s->poll, events, server_on_io);
	}
	return 0;
}

int server_update_poll(struct server *s)
{
	int events = 0;

	if (buf_len(&s->in) < RELAY_BUF)
		events |= UV_READABLE;
	/* A server due for a flush this iteration is written to before the
	 * poll is asked again. */
	if ((buf_len(&s->out) > 0 ||
	     (s->state == SERVER_ACTIVE && s->client != NULL && s->client->fwd > 0)) &&
	    !list_linked(&s->flush_node))
		events |= UV_WRITABLE;
	if (server_watch(s, events, false) == 0)
		return 0;
	server_fail(s, "53200", "cannot watch the server socket");
	return -1;
}

/*
 * libpq's message for a failed login. With PQERRORS_VERBOSE a server error
 * reads "...failed: FATAL:  28P01: password authentication failed ...":
 * the SQLSTATE and message are the server's own. Anything else (no socket,
 * refused, timeout) is 08006 with libpq's words.
 */
static void split_connect_error(const char *text, char *sqlstate, char *msg, size_t msgsize)
{
	static const char *const sevs[] = {"FATAL:  ", "ERROR:  ", "PANIC:  "};

	strcpy(sqlstate, "08006");
	snprintf(msg, msgsize, "%s", text);
	for (size_t i = 0; i < sizeof(sevs) / sizeof(sevs[0]); i++) {
		const char *p = strstr(text, sevs[i]);
		if (p == NULL)
			continue;
		p += strlen(sevs[i]);
		if (strlen(p) > 7 && p[5] == ':' && p[6] == ' ') {
			memcpy(sqlstate, p, 5);
			sqlstate[5] = '\0';
			snprintf(msg, msgsize, "%s", p + 7);
		}
		break;
	}
	char *nl = strchr(msg, '\n');
	if (nl != NULL)
		*nl = '\0';
}

/* The first login of a pool records what a fresh server reports, which is
 * what a client that logs in without a server is told. */
static void server_keep_defaults(struct server *s)
{
	size_t len = 0, n;

	if (s->gen != pool_gen(s->pool) || pool_defaults(&s->rt->pools, s->pool, &n) != NULL)
		return;
	for (int i = 0; i < s->nparams; i++)
		len += strlen(s->params[i].name) + strlen(s->params[i].value) + 2;
	char *blob = malloc(len + 1), *p = blob;
	if (blob == NULL)
		return;     /* clients keep logging in through a server */
	for (int i = 0; i < s->nparams; i++) {
		p = stpcpy(p, s->params[i].name) + 1;
		p = stpcpy(p, s->params[i].value) + 1;
	}
	pool_set_defaults(&s->rt->pools, s->pool, s->gen, blob, len);
}

static void server_connected(struct server *s)
{
	server_deadline_clear(s);
	if (PQsslInUse(s->conn)) {
		server_fail(s, "0A000", "TLS to the server is not supported yet: set sslmode=disable in conninfo");
		return;
	}
	PQsetnonblocking(s->conn, 1);
	s->fd = PQsocket(s->conn);
	for (size_t i = 0; i < sizeof(reported_params) / sizeof(reported_params[0]); i++) {
		const char *v = PQparameterStatus(s->conn, reported_params[i]);
		if (v != NULL && server_set_param(s, reported_params[i], v) < 0) {
			server_fail(s, "53200", "out of memory");
			return;
		}
	}
	log_info("s%llu/w%d: connected to %s as %s (backend pid %d)", SID(s), s->w->id,
	         PQdb(s->conn), PQuser(s->conn), PQbackendPID(s->conn));
	server_keep_defaults(s);
	s->state = SERVER_INTERNAL;
	if (s->client == NULL)
		server_done(s);     /* a spare for min_pool_size */
	else
		server_setup(s);
}

static void server_connect_step(struct server *s)
{
	char sqlstate[6], msg[1024];

	switch (PQconnectPoll(s->conn)) {
	case PGRES_POLLING_OK:
		server_connected(s);
		return;
	case PGRES_POLLING_READING:
		if (server_watch(s, UV_READABLE, true) == 0)
			return;
		break;
	case PGRES_POLLING_WRITING:
		if (server_watch(s, UV_WRITABLE, true) == 0)
			return;
		break;
	default:
		break;
	}
	split_connect_error(PQerrorMessage(s->conn), sqlstate, msg, sizeof(msg));
	server_fail(s, sqlstate, msg);
}

/* True if a host in conninfo is a name that getaddrinfo must look up (not a
 * socket directory, not an IP literal) and no hostaddr saves the lookup. */
static bool needs_dns(const struct db_config *db)
{
	const char *host = NULL;

	for (int i = 0; db->keywords[i] != NULL; i++) {
		if (strcmp(db->keywords[i], "hostaddr") == 0)
			return false;
		if (strcmp(db->keywords[i], "host") == 0)
			host = db->values[i];
	}
	for (const char *h = host; h != NULL && *h != '\0'; h += strcspn(h, ",") + (h[strcspn(h, ",")] == ',')) {
		char name[256];
		unsigned char addr[sizeof(struct in6_addr)];
		size_t len = strcspn(h, ",");
		if (len == 0 || h[0] == '/' || h[0] == '@')
			continue;
		snprintf(name, sizeof(name), "%.*s", (int)len, h);
		if (inet_pton(AF_INET, name, addr) != 1 && inet_pton(AF_INET6, name, addr) != 1)
			return true;
	}
	return false;
}

/* Takes over the reference cfg (the snapshot db is in): a reload may drop
 * every other one while the request waits on the thread pool. */
static struct connect_req *connect_req_new(const struct db_config *db, struct config *cfg,
                                           const char *user)
{
	struct connect_req *r = calloc(1, sizeof(*r));
	bool has_gss = false;
	int n = 0;

	if (r == NULL || (r->user = strdup(user)) == NULL) {
		free(r);
		if (cfg != NULL)
			config_unref(cfg);
		return NULL;
	}
	r->req.data = r;
	r->cfg = cfg;
	for (int i = 0; db->keywords[i] != NULL && n < 60; i++, n++) {
		r->kw[n] = db->keywords[i];
		r->val[n] = db->values[i];
		has_gss |= strcmp(r->kw[n], "gssencmode") == 0;
	}
	if (!db->forced_user) {
		r->kw[n] = "user";
		r->val[n++] = r->user;
	}
	r->kw[n] = "fallback_application_name";
	r->val[n++] = "pgberth";
	if (!has_gss) {
		/* A GSS-encrypted stream cannot be relayed as raw bytes. */
		r->kw[n] = "gssencmode";
		r->val[n++] = "disable";
	}
	r->kw[n] = r->val[n] = NULL;
	return r;
}

static void connect_req_free(struct connect_req *r)
{
	if (r->cfg != NULL)
		config_unref(r->cfg);
	free(r->user);
	free(r);
}

/* PQconnectStartParams has run: drive the rest from the loop. */
static void server_connect_started(struct server *s, PGconn *conn)
{
	s->conn = conn;
	if (conn == NULL) {
		server_fail(s, "53200", "out of memory");
		return;
	}
	PQsetErrorVerbosity(conn, PQERRORS_VERBOSE);
	if (PQstatus(conn) == CONNECTION_BAD) {
		char sqlstate[6], msg[1024];
		split_connect_error(PQerrorMessage(conn), sqlstate, msg, sizeof(msg));
		server_fail(s, sqlstate, msg);
		return;
	}
	if (server_watch(s, UV_WRITABLE, true) < 0)
		server_fail(s, "08006", "cannot watch the server socket");
}

/* libpq resolves the first host inside PQconnectStartParams, which would
 * stall every client of the worker for as long as DNS takes. */
static void connect_work(uv_work_t *req)
{
	struct connect_req *r = req->data;
	r->conn = PQconnectStartParams(r->kw, r->val, 0);
}

static void connect_work_done(uv_work_t *req, int status)
{
	struct connect_req *r = req->data;
	struct server *s = r->s;

	(void)status;
	if (s == NULL) {
		PQfinish(r->conn);      /* the server was closed meanwhile */
	} else {
		s->connecting = NULL;
		server_connect_started(s, r->conn);
	}
	connect_req_free(r);
}

void server_connect(struct worker *w, struct pool *pool, struct client *c)
{
	unsigned gen;
	struct config *ref;
	const struct db_config *db = pool_db(&w->rt->pools, pool, &gen, &ref);
	struct server *s = server_new(w, pool);
	struct connect_req *r = NULL;

	if (s != NULL)
		r = connect_req_new(db, ref, c ? c->user : pool->user);
	else if (ref != NULL)
		config_unref(ref);

	if (r == NULL) {
		if (s != NULL) {
			s->client = c;
			if (c != NULL)
				c->server = s;
			server_fail(s, "53200", "out of memory");
			return;
		}
		struct pool_handoff h;
		if (pool_server_closed(&w->rt->pools, pool, &h))
			server_handoff(w->rt, &h);
		if (c != NULL)
			client_fatal(c, "53200", "connect", "out of memory");
		return;
	}
	s->state = SERVER_CONNECTING;
	s->gen = gen;
	s->client = c;
	if (c != NULL)
		c->server = s;
	log_debug("s%llu/w%d: connecting for c%llu", SID(s), w->id, c ? (unsigned long long)c->id : 0ULL);
	server_deadline(s, "could not log in to the server");
	if (needs_dns(db)) {
		r->s = s;
		s->connecting = r;
		if (uv_queue_work(&w->loop, &r->req, connect_work, connect_work_done) == 0)
			return;
		s->connecting = NULL;
	}
	server_connect_started(s, PQconnectStartParams(r->kw, r->val, 0));
	connect_req_free(r);
}

/* A parked server whose peer hung up (PostgreSQL restarted, the backend was
 * terminated) reads EOF or an unsolicited FATAL: it is not worth adopting. */
static bool server_is_dead(const struct server *s)
{
	char b;
	ssize_t n = recv(s->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	return n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
}

static void server_check_done(struct server *s, bool ok)
{
	if (!ok) {
		/* Its slot stays with the client: connect a fresh one. */
		struct client *c = s->client;
		struct pool *pool = s->pool;
		struct worker *w = s->w;
		s->client = NULL;
		c->server = NULL;
		server_close_keep_slot(s, "server_check_query failed");
		server_connect(w, pool, c);
		return;
	}
	server_setup(s);
}

void server_adopt(struct worker *w, struct server *s, struct client *c)
{
	if (s->gen != pool_gen(s->pool)) {
		/* Parked before a reload changed the conninfo: its slot goes to
		 * a connection made the new way. */
		if (s->w == w) {
			list_del(&s->idle_node);
			server_close_keep_slot(s, "conninfo changed by a reload");
		} else {
			log_info("s%llu: closing: conninfo changed by a reload", SID(s));
			server_free_parked(s);
		}
		server_connect(w, c->pool, c);
		return;
	}
	if (s->w == w) {
		list_del(&s->idle_node);    /* idle on this loop: handles and all */
	} else {
		if (server_is_dead(s)) {
			/* Its slot stays counted: use it for a fresh connection. */
			log_info("s%llu: idle server connection was closed by the server", SID(s));
			server_free_parked(s);
			server_connect(w, c->pool, c);
			return;
		}
		s->w = w;
		list_add_tail(&w->servers, &s->node);
		if (server_watch(s, 0, false) < 0) {
			s->state = SERVER_INTERNAL;
			s->client = c;
			c->server = s;
			server_fail(s, "53200", "cannot watch the server socket");
			return;
		}
	}
	s->state = SERVER_INTERNAL;
	s->client = c;
	c->server = s;
	const struct config *cfg = s->w->cfg;
	if (cfg->server_check_query[0] != '\0' &&
	    uv_now(&w->loop) - s->idle_since_ms >= cfg->server_check_delay_ms) {
		server_query(s, cfg->server_check_query, server_check_done);
		return;
	}
	server_setup(s);
}

static void server_setup_done(struct server *s, bool ok)
{
	struct client *c = s->client;

	s->setup_for_client = false;
	if (ok) {
		/* Applied on a clean server: it has exactly these. */
		if (s->setup_extra)
			server_settings_are(s, c->id, c->extra_gen, c->extra);
		s->setup_extra = false;
		client_server_ready(c);
		return;
	}
	s->setup_extra = false;
	const uint8_t *body = (const uint8_t *)s->error;
	const char *state = proto_error_field(body, s->error_len, 'C');
	const char *msg = proto_error_field(body, s->error_len, 'M');
	client_fatal(c, state ? state : "08P01", "startup parameters",
	             "%s", msg ? msg : "could not apply the startup parameters");
}

void server_settings_are(struct server *s, uint64_t of, uint32_t gen, const char *sql)
{
	s->settings_of = of;
	s->settings_gen = gen;
	if (of == 0 || of == SETTINGS_UNKNOWN)
		s->settings_dirty = false;
	free(s->settings_sql);
	s->settings_sql = sql != NULL ? strdup(sql) : NULL;     /* NULL too if out of memory */
}

/* The session settings the client has now: everything a SET or
 * set_config() gave it (source "session") but what the server reports
 * (those follow the client through ParameterStatus). pg_settings lists no
 * custom placeholders (app.tenant), nor the role: those do not follow. */
static void server_capture_row(struct server *s, const uint8_t *body, size_t blen)
{
	char col[2][1024];
	size_t at = 2;

	if (blen < 2 || ((body[0] << 8) | body[1]) != 2)
		return;
	for (int i = 0; i < 2; i++) {
		if (blen - at < 4)
			return;
		uint32_t n = ((uint32_t)body[at] << 24) | ((uint32_t)body[at + 1] << 16) |
		             ((uint32_t)body[at + 2] << 8) | body[at + 3];
		at += 4;
		if (n == UINT32_MAX || n > blen - at || n >= sizeof(col[i])) {
			s->capture_private = true;  /* cannot carry it: it stays on this server */
			return;
		}
		memcpy(col[i], body + at, n);
		col[i][n] = '\0';
		at += n;
	}
	if (server_param(s, col[0]) != NULL)
		return;
	if (proto_sql_set(&s->capture, col[0], col[1]) < 0 || buf_append(&s->capture, ";", 1) < 0)
		s->capture_private = true;
}

static void server_capture_done(struct server *s, bool ok)
{
	struct client *c = s->client;

	s->settings_dirty = false;
	if (ok && !s->capture_private)
		(void)client_settings_read_back(c, (const char *)buf_head(&s->capture), buf_len(&s->capture));
	/* What pg_settings does not show stays on the server, as the
	 * client's: anyone else gets it reset first (its settings are not
	 * known, so never taken for the same as theirs). */
	server_settings_are(s, c->id, c->extra_gen, NULL);
	buf_free(&s->capture);
	s->capture_private = false;
	client_server_ready(c);
}

bool server_capture_settings(struct server *s)
{
	static const char sql[] =
		"SELECT name, pg_catalog.current_setting(name) FROM pg_catalog.pg_settings "
		"WHERE source = 'session' AND name NOT IN "
		"('transaction_isolation', 'transaction_read_only', 'transaction_deferrable')";

	if (proto_put_query(&s->out, sql) < 0)
		return false;
	buf_reset(&s->capture);
	s->capture_private = false;
	free(s->error);
	s->error = NULL;
	s->state = SERVER_INTERNAL;
	s->done = server_capture_done;
	s->replies_owed++;
	server_deadline(s, "no answer to a query of pgberth's own");
	s->client->state = CLIENT_LOGIN;    /* what it sends meanwhile waits */
	/* Sent at the end of this iteration: a failure then cannot close
	 * the client under the caller. */
	server_flush_later(s);
	return true;
}

void server_left(struct server *s, uint64_t id, unsigned what)
{
	s->left_by = id;
	s->left |= what;
}

static void server_forget_done(struct server *s, bool ok)
{
	if (!ok) {
		server_fail(s, "08P01", "could not drop the session state of the previous client");
		return;
	}
	if (s->left & LEFT_STATEMENTS)
		pstmt_cache_clear(&s->stmts);   /* DEALLOCATE ALL took pgberth's too */
	s->left = 0;
	server_setup(s);
}

/* Drops what a previous client left (see LEFT_*). */
static void server_forget(struct server *s)
{
	char sql[64] = "";

	if (s->left & LEFT_STATEMENTS)
		strcat(sql, "DEALLOCATE ALL;");
	if (s->left & LEFT_LISTEN)
		strcat(sql, "UNLISTEN *;");
	if (s->left & LEFT_CURSORS)
		strcat(sql, "CLOSE ALL;");
	if (s->left & LEFT_TEMP)
		strcat(sql, "DISCARD TEMP;");
	server_query(s, sql, server_forget_done);
}

static void server_reset_all_done(struct server *s, bool ok)
{
	if (!ok) {
		server_fail(s, "08P01", "RESET SESSION AUTHORIZATION, ROLE, ALL failed");
		return;
	}
	server_settings_are(s, 0, 0, NULL);
	server_setup(s);
}

/* Brings the server's settings to what the client has (its startup
 * parameters and what it SET since), then lets the client in. */
static void server_setup(struct server *s)
{
	struct client *c = s->client;
	bool reset_first = false;
	const char *sql = client_setup_sql(c, s, &reset_first);

	if (sql == NULL) {
		client_fatal(c, "53200", "startup parameters", "out of memory");
	} else if (reset_first) {
		/* RESET ALL leaves the role and the session user alone. First,
		 * so that what follows does not run under the last client's
		 * statement_timeout. */
		server_query(s, "RESET SESSION AUTHORIZATION;RESET ROLE;RESET ALL", server_reset_all_done);
	} else if (s->left != 0 && s->left_by != c->id) {
		/* Another client's: a Bind of its statement's name would run
		 * its query, with wrong results and no error; its temporary
		 * tables, cursors and notifications are its own. */
		server_forget(s);
	} else if (*sql == '\0') {
		client_server_ready(c);
	} else {
		s->setup_for_client = true;
		server_query(s, sql, server_setup_done);
	}
}

void server_query(struct server *s, const char *sql, server_done_fn done)
{
	free(s->error);
	s->error = NULL;
	if (proto_put_query(&s->out, sql) < 0) {
		server_fail(s, "53200", "out of memory");
		return;
	}
	s->state = SERVER_INTERNAL;
	s->done = done;
	s->replies_owed++;
	server_deadline(s, "no answer to a query of pgberth's own");
	server_flush(s);
}

/* Replies to one of the pooler's own queries: record the first error and
 * reported parameters; at ReadyForQuery the continuation runs (and may
 * free s, so nothing touches s after it). */
static void server_internal_input(struct server *s)
{
	for (;;) {
		const uint8_t *p = buf_head(&s->in);
		size_t len = buf_len(&s->in);
		char type;
		uint32_t mlen;

		if (s->msg_remain > 0) {
			/* The rest of a big row, skipped as it comes. */
			size_t take = len < s->msg_remain ? len : s->msg_remain;
			buf_consume(&s->in, take);
			s->msg_remain -= (uint32_t)take;
			if (s->msg_remain > 0)
				break;
			continue;
		}
		int rc = proto_msg_header(p, len, PROTO_MAX_MESSAGE, &type, &mlen);
		if (rc == PROTO_BAD) {
			server_fail(s, "08P01", "invalid message from the server");
			return;
		}
		if (rc > 0 && (size_t)mlen + 1 > RELAY_BUF && type != 'E' && type != 'S' && type != 'Z') {
			/* set_config() answers with the value it set, which may be
			 * bigger than a buffer: a row (or notice) nothing is read from,
			 * but a setting too long to carry. */
			if (type == 'D' && s->done == server_capture_done)
				s->capture_private = true;
			s->msg_remain = mlen + 1;
			continue;
		}
		if (rc == PROTO_NEED_MORE || len < (size_t)mlen + 1) {
			if (rc > 0 && (size_t)mlen + 1 > RELAY_BUF) {
				server_fail(s, "08P01", "message from the server too long");
				return;
			}
			break;
		}
		const uint8_t *body = p + 5;
		size_t blen = mlen - 4;
		const char *name, *value;
		switch (type) {
		case 'D':
			if (s->done == server_capture_done)
				server_capture_row(s, body, blen);
			break;
		case 'E':
			if (s->error == NULL && (s->error = malloc(blen)) != NULL) {
				memcpy(s->error, body, blen);
				s->error_len = blen;
			}
			break;
		case 'S':
			if (proto_parse_param_status(body, blen, &name, &value) < 0)
				break;
			if (server_set_param(s, name, value) < 0 ||
			    (s->setup_for_client && s->client != NULL &&
			     client_param_changed(s->client, name, value) < 0)) {
				server_fail(s, "53200", "out of memory");
				return;
			}
			break;
		case 'Z':
			if (blen != 1) {
				server_fail(s, "08P01", "invalid ReadyForQuery from the server");
				return;
			}
			s->txstatus = (char)body[0];
			s->replies_owed--;
			buf_consume(&s->in, (size_t)mlen + 1);
			server_deadline_clear(s);
			server_done_fn done = s->done;
			s->done = NULL;
			done(s, s->error == NULL);
			return;
		default:
			break;      /* CommandComplete, notices, rows: nothing to keep */
		}
		buf_consume(&s->in, (size_t)mlen + 1);
	}
	server_update_poll(s);
}

/* Client gone with replies still owed: read and drop them. */
/* A COPY FROM STDIN whose client has left (before or after the server
 * started it): end it with a CopyFail (its error and, in simple protocol,
 * the ReadyForQuery are already owed; in an extended query the fence's Sync
 * ends it). Then the fence, as after a client's CopyDone (pstmt.h): it
 * settles the Syncs sent during the COPY. 0 or -1 (out of memory). */
static int server_abort_copy(struct server *s)
{
	static const char why[] = "client disconnected";
	uint8_t hdr[5] = {'f'};

	log_debug("s%llu: ending the COPY of a departed client", SID(s));
	proto_put32(hdr + 1, 4 + sizeof(why));
	if (buf_append(&s->out, hdr, sizeof(hdr)) < 0 || buf_append(&s->out, why, sizeof(why)) < 0 ||
	    buf_append(&s->out, relay_fence, sizeof(relay_fence)) < 0 ||
	    pstmt_queue_push(&s->replies, PSTMT_COPY_END, NULL, 0) < 0 ||
	    pstmt_queue_push(&s->replies, PSTMT_FENCE, NULL, 0) < 0)
		return -1;
	s->replies_owed++;
	s->copy_in = false;
	s->unsynced = false;
	return 0;
}

static void server_drain_input(struct server *s)
{
	if (relay_scan_server(s) < 0) {
		server_close(s, "invalid message from the server while draining");
		return;
	}
	buf_consume(&s->in, s->fwd);
	s->fwd = 0;
	/* A COPY FROM STDIN that started after its client left (a cancel sent
	 * before it started is lost, and a client that said Terminate is not
	 * cancelled): nobody will end it but pgberth. */
	if (s->copy_in && server_abort_copy(s) < 0) {
		server_close(s, "out of memory");
		return;
	}
	/* A cancel still on its way could hit the next client's query: the
	 * server stays here until PQcancel has returned. */
	if (s->replies_owed == 0 && s->msg_remain == 0 && buf_len(&s->in) == 0 && s->cancel == NULL) {
		server_deadline_clear(s);
		server_reset(s);
		return;
	}
	server_update_poll(s);
}

/* Statement mode and the statement opened a transaction: the client gets
 * what came before the ReadyForQuery, then an error in its place (libpq
 * turns the statement's result into that error), and is disconnected; the
 * server is rolled back on its way to the pool. */
static void server_stmt_block(struct server *s)
{
	struct client *c = s->client;

	if (buf_len(&c->out) == 0 && relay_write(c->fd, buf_head(&s->in), s->fwd) == (ssize_t)s->fwd) {
		buf_consume(&s->in, s->fwd);
		s->fwd = 0;
		buf_reset(&s->in);      /* the ReadyForQuery, the last thing owed */
		client_fatal(c, "0A000", "statement mode",
		             "transaction blocks are not allowed in statement pooling mode");
		return;
	}
	/* Nothing of it will be sent: drop it with the unscanned ReadyForQuery,
	 * which the rollback's reply must not be confused with. */
	buf_reset(&s->in);
	s->fwd = 0;
	client_close(c, "statement mode: a transaction block (the client's socket was full)");
}

/* What the server sent is scanned and cleared for its client. When it is
 * all of what the server owes (its block holds whole messages, and a
 * ReadyForQuery ended them) the block moves to the client's output as it
 * is: the server is clean at once and goes back to the pool now, before
 * the bytes reach the client. Either way the bytes go out at the end of
 * this loop iteration, with the other answers read in it. */
static void server_answer_read(struct server *s)
{
	struct client *c = s->client;

	if (s->replies_owed == 0 && s->msg_remain == 0 && s->fwd == buf_len(&s->in) &&
	    buf_len(&c->out) == 0 && s->cancel == NULL) {
		buf_move(&c->out, &s->in);
		s->fwd = 0;
		client_flush_later(c);
		client_maybe_done(c);   /* may close c */
		return;
	}
	client_flush_later(c);
}

static void server_read(struct server *s)
{
	ssize_t n = relay_read(s->fd, &s->in, &s->w->bufs, RELAY_BUF);

	if (n == -EAGAIN) {
		server_update_poll(s);
		return;
	}
	if (n <= 0) {
		/* PostgreSQL says why it closes (57P01 after pg_terminate_backend,
		 * say) in a FATAL ErrorResponse, relayed as the last message: the
		 * client is told once, as on a direct connection. */
		s->said_why = n == 0 && s->state == SERVER_ACTIVE && s->last_fatal;
		server_fail(s, "08006", n == 0 ? "server closed the connection unexpectedly"
		                               : strerror((int)-n));
		return;
	}
	switch (s->state) {
	case SERVER_ACTIVE:
		switch (relay_scan_server(s)) {
		case -1:
			server_fail(s, "08P01", "invalid message from the server");
			return;
		case RELAY_STMT_BLOCK:
			server_stmt_block(s);
			return;
		}
		server_answer_read(s);
		return;
	case SERVER_INTERNAL:
		server_internal_input(s);
		return;
	case SERVER_DRAIN:
		server_drain_input(s);
		return;
	case SERVER_CONNECTING:
	case SERVER_IDLE:
	case SERVER_MOVING:
		break;
	}
}

/* An idle server has something to say: PostgreSQL hung up on it (a
 * terminated backend, a restart), or a notification for a LISTEN that a
 * client left behind. Either way it is not worth keeping. */
static void server_idle_event(struct server *s)
{
	if (!pool_take_idle(&s->rt->pools, s->pool, s)) {
		/* Acquired by another worker: it decides, once it has it. */
		s->state = SERVER_MOVING;
		server_watch(s, 0, false);
		return;
	}
	server_close(s, "the server sent data while idle (closed by the server?)");
}

void server_flush_later(struct server *s)
{
	if (!list_linked(&s->flush_node)) {
		list_add_tail(&s->w->server_flushes, &s->flush_node);
		worker_flush_soon(s->w);
	}
}

int server_flush(struct server *s)
{
	ssize_t n;

	while (buf_len(&s->out) > 0) {
		n = relay_write(s->fd, buf_head(&s->out), buf_len(&s->out));
		if (n < 0)
			goto lost;
		if (n == 0)
			goto pending;
		buf_consume(&s->out, (size_t)n);
	}
	struct client *c = s->client;
	if (s->state == SERVER_ACTIVE && c != NULL && c->fwd > 0) {
		n = relay_write(s->fd, buf_head(&c->in), c->fwd);
		if (n < 0)
			goto lost;
		buf_consume(&c->in, (size_t)n);
		buf_give_block(&c->in, &c->w->bufs);
		/* Grown by pgberth's long Parses: back to a block once the
		 * batch is through (not between its parts, which grow it again). */
		if (c->in.cap > c->w->bufs.size && c->in_want == 0 && !c->scan_paused)
			buf_fit(&c->in, &c->w->bufs);
		c->fwd -= (size_t)n;
		client_note_waiting_on_client(c);
		client_update_poll(c);
		if (c->fwd == 0 && c->scan_paused)
			client_flush_later(c);      /* which scans the rest */
	}
pending:
	return server_update_poll(s);
lost:
	server_fail(s, "08006", strerror((int)-n));
	return -1;
}

static void server_on_io(uv_poll_t *handle, int status, int events)
{
	struct server *s = handle->data;

	if (s->state == SERVER_CONNECTING) {
		server_connect_step(s);
		return;
	}
	if (s->state == SERVER_IDLE) {
		server_idle_event(s);
		return;
	}
	if (status < 0) {
		server_fail(s, "08006", relay_socket_error(s->fd, status));
		return;
	}
	if ((events & UV_WRITABLE) && server_flush(s) < 0)
		return;
	if (events & UV_READABLE)
		server_read(s);
}

/* Handles closed: the server goes to the worker of s->moving_to. */
static void server_detached(uv_handle_t *handle)
{
	struct server *s = handle->data;
	struct pool_handoff h = *s->moving_to;

	free(handle);
	free(s->moving_to);
	s->moving_to = NULL;
	server_handoff(s->rt, &h);
}

/* Leaves this loop for another worker's: every handle is closed here and
 * the server crosses over in a MSG_GRANT, as a plain PGconn. */
static void server_detach(struct server *s, const struct pool_handoff *h)
{
	s->moving_to = malloc(sizeof(*s->moving_to));
	if (s->moving_to == NULL) {
		server_close(s, "out of memory");
		return;
	}
	*s->moving_to = *h;
	s->moving_to->server = s;
	server_close_handles(s);
	struct worker *w = s->w;
	buf_give_block(&s->in, &w->bufs);
	buf_free(&s->out);
	s->state = SERVER_IDLE;
	s->w = NULL;
	if (s->poll == NULL) {
		/* It arrived from another worker and never got a handle here. */
		struct pool_handoff to = *s->moving_to;
		free(s->moving_to);
		s->moving_to = NULL;
		server_handoff(s->rt, &to);
		return;
	}
	s->poll->data = s;
	uv_poll_t *poll = s->poll;
	s->poll = NULL;
	s->poll_events = 0;
	uv_close((uv_handle_t *)poll, server_detached);
}

/* Idle on this loop: in the pool, watched for the server hanging up. */
static void server_idle_here(struct server *s)
{
	struct worker *w = s->w;

	s->state = SERVER_IDLE;
	buf_give_block(&s->in, &w->bufs);
	buf_free(&s->out);
	server_deadline_clear(s);
	list_add_tail(&w->idle_servers, &s->idle_node);
	if (server_watch(s, UV_READABLE, false) < 0) {
		if (pool_take_idle(&s->rt->pools, s->pool, s))
			server_close(s, "cannot watch the server socket");
		else
			s->state = SERVER_MOVING;
	}
}

void server_done(struct server *s)
{
	struct worker *w = s->w;
	struct runtime *rt = s->rt;
	struct pool_handoff h;
	uint64_t lifetime = w->cfg->server_lifetime_ms;

	if (s->client != NULL) {
		s->client->server = NULL;
		s->client = NULL;
	}
	/* Nothing is owed: what the last client's stream had pending is over. */
	relay_drops_clear(s);
	s->fence_wanted = 0;
	s->replies.uncertain = 0;
	s->last_run = 0;
	s->last_sync = false;
	if (s->fwd != 0 || s->msg_remain != 0 || s->replies_owed != 0 || s->cancel != NULL ||
	    buf_len(&s->in) != 0 || s->unsynced || s->copy_in || s->txstatus != 'I' ||
	    !pstmt_queue_empty(&s->replies)) {
		/* Cannot happen; if it does, a dirty server must not be shared. */
		log_error("s%llu: not clean at release (fwd %zu, remain %u, owed %u, status %c); closing",
		          SID(s), s->fwd, s->msg_remain, s->replies_owed, s->txstatus);
		server_close(s, "not clean");
		return;
	}
	if (w->stopping) {
		server_close(s, "shutdown");
		return;
	}
	if (lifetime > 0 && uv_now(&w->loop) - s->born_ms >= lifetime) {
		server_close(s, "server_lifetime reached");
		return;
	}
	if (s->gen != pool_gen(s->pool)) {
		server_close(s, "conninfo changed by a reload");
		return;
	}
	s->state = SERVER_IDLE;
	s->idle_since_ms = uv_now(&w->loop);
	switch (pool_release(&rt->pools, s->pool, s, w->id, &h)) {
	case POOL_PARKED:
		server_idle_here(s);
		return;
	case POOL_SURPLUS:
		server_close(s, "more servers than pool_size, none waited for");
		return;
	case POOL_HANDED:
		break;
	}
	if (h.worker != w->id) {
		server_detach(s, &h);
		return;
	}
	/* A waiter on this loop: it adopts the server as it is. */
	struct client *c = worker_client_by_slot(w, h.slot);
	if (c != NULL && c->id == h.client_id && c->state == CLIENT_WAITING) {
		client_granted(c, s);
		return;
	}
	/* The waiter left: on to the next one, or back to the pool. */
	server_done(s);
}

void server_migrate(struct worker *w, struct server *s, const struct pool_handoff *h)
{
	if (w->stopping) {
		server_close(s, "shutdown");
		return;
	}
	list_del(&s->idle_node);
	server_detach(s, h);
}

/* After pool_take_idle_spare: closes a spare idle server past
 * server_idle_timeout; or (taken false, also after pool_take_idle) lets go
 * of one that another worker has acquired. */
static void server_sweep_took(struct server *s, bool taken)
{
	struct pool *pool = s->pool;
	struct runtime *rt = s->rt;
	struct pool_handoff h;

	if (!taken) {
		list_del(&s->idle_node);
		s->state = SERVER_MOVING;
		server_watch(s, 0, false);
		return;
	}
	server_close_keep_slot(s, "server_idle_timeout reached");
	if (pool_spare_closed(&rt->pools, pool, &h))
		server_handoff(rt, &h);
}

/* The least recently used idle servers come first: stop at the first one
 * that may stay, but walk them all once a second for server_lifetime. */
void server_sweep_idle(struct worker *w, uint64_t now)
{
	const struct config *cfg = w->cfg;
	uint64_t idle_to = cfg->server_idle_timeout_ms, life = cfg->server_lifetime_ms;
	bool full = now - w->last_sweep >= 1000;
	struct list *pos, *tmp;

	if (full)
		w->last_sweep = now;
	list_for_each_safe(pos, tmp, &w->idle_servers) {
		struct server *s = list_entry(pos, struct server, idle_node);
		const char *why = NULL;
		if (idle_to > 0 && now - s->idle_since_ms >= idle_to) {
			int keep = pool_db(&w->rt->pools, s->pool, NULL, NULL)->min_pool_size;
			enum pool_spare took = pool_take_idle_spare(&w->rt->pools, s->pool, s, keep);
			if (took != POOL_SPARE_KEPT) {
				server_sweep_took(s, took == POOL_SPARE_TAKEN);
				continue;
			}
		} else if (!full) {
			break;
		}
		if (why == NULL && life > 0 && now - s->born_ms >= life)
			why = "server_lifetime reached";
		if (why == NULL && pool_idle_unwanted(&w->rt->pools, s->pool, s->gen))
			why = "not wanted after a reload (conninfo, pool_size or database changed)";
		if (why == NULL)
			continue;
		if (pool_take_idle(&w->rt->pools, s->pool, s))
			server_close(s, why);
		else
			server_sweep_took(s, false);
	}
}

static bool reset_clears_settings(const char *q)
{
	return strcasecmp(q, "DISCARD ALL") == 0;  /* RESET ALL leaves the role */
}

static void server_reset_done(struct server *s, bool ok)
{
	if (!ok) {
		server_close(s, "the reset query failed");
		return;
	}
	if (reset_clears_settings(s->w->cfg->server_reset_query))
		server_settings_are(s, 0, 0, NULL);
	if (strcasecmp(s->w->cfg->server_reset_query, "DISCARD ALL") == 0)
		s->left = 0;
	if (strcasestr(s->w->cfg->server_reset_query, "DISCARD ALL") != NULL ||
	    strcasestr(s->w->cfg->server_reset_query, "DEALLOCATE") != NULL)
		pstmt_cache_clear(&s->stmts);
	server_done(s);
}

static void server_rollback_done(struct server *s, bool ok)
{
	if (!ok || s->txstatus != 'I')
		server_close(s, "ROLLBACK failed");
	else
		server_reset(s);
}

/* The server is between messages with nothing owed: roll back, reset, park. */
static void server_reset(struct server *s)
{
	const char *reset = s->w->cfg->server_reset_query;

	if (s->txstatus != 'I')
		server_query(s, "ROLLBACK", server_rollback_done);
	else if (reset[0] != '\0')
		server_query(s, reset, server_reset_done);
	else
		server_done(s);
}

void server_release(struct server *s, bool cancel)
{
	if (s->w->stopping) {
		server_close(s, "shutdown");
		return;
	}
	s->done = NULL;
	s->setup_for_client = false;    /* nobody's settings are being applied now */
	s->setup_extra = false;
	s->settings_dirty = false;      /* nobody to read them back for */
	/* What was read for the client and not sent is nobody's now. */
	buf_consume(&s->in, s->fwd);
	s->fwd = 0;
	bool busy = s->replies_owed > 0;    /* the client's own query still runs */
	if (s->copy_in && server_abort_copy(s) < 0) {
		server_close(s, "out of memory");
		return;
	}
	if (s->unsynced && (s->fence_wanted != 0 || s->replies.uncertain > 0)) {
		/* Syncs of a COPY in doubt: the fence, which ends with a Sync. */
		if (buf_append(&s->out, relay_fence, sizeof(relay_fence)) < 0 ||
		    pstmt_queue_push(&s->replies, PSTMT_FENCE, NULL, 0) < 0) {
			server_close(s, "out of memory");
			return;
		}
		s->replies_owed++;
		s->unsynced = false;
		s->fence_wanted = 0;
		s->replies.uncertain = 0;
	}
	if (s->unsynced) {
		/* Until a Sync the server may be skipping messages after an error,
		 * our reset query among them: close the extended query first. A
		 * Sync is always answered with ReadyForQuery. */
		static const uint8_t sync[5] = {'S', 0, 0, 0, 4};
		if (buf_append(&s->out, sync, sizeof(sync)) < 0) {
			server_close(s, "out of memory");
			return;
		}
		s->unsynced = false;
		s->replies_owed++;
		if (pstmt_queue_push(&s->replies, PSTMT_SYNC, NULL, 0) < 0) {
			server_close(s, "out of memory");
			return;
		}
	}
	if (s->replies_owed > 0 || s->msg_remain > 0 || s->cancel != NULL) {
		if (cancel && busy && s->state == SERVER_ACTIVE)
			server_cancel(s, NULL);
		s->state = SERVER_DRAIN;
		server_deadline(s, "the query of a departed client did not finish");
		server_drain_input(s);
		return;
	}
	server_reset(s);
}

void server_handoff(struct runtime *rt, struct pool_handoff *h)
{
	for (;;) {
		struct msg *m = msg_new(MSG_GRANT);
		if (m != NULL) {
			m->slot = h->slot;
			m->client_id = h->client_id;
			m->server = h->server;
			m->pool = h->pool;
			if (worker_post(&rt->workers[h->worker], m) == 0)
				return;
			free(m);
		}
		/* The waiter's worker has stopped: the slot goes to the next one. */
		if (h->server != NULL)
			server_free_parked(h->server);
		if (!pool_server_closed(&rt->pools, h->pool, h))
			return;
	}
}


static void cancel_work(uv_work_t *req)
{
	struct cancel_req *r = req->data;
	r->ok = PQcancel(r->cancel, r->err, sizeof(r->err));
}

static void cancel_done(uv_work_t *req, int status)
{
	struct cancel_req *r = req->data;

	if (status == 0 && !r->ok)
		log_warn("s%llu: cancel failed: %s", (unsigned long long)r->sid, r->err);
	PQfreeCancel(r->cancel);
	for (int i = 0; i < r->nfrom; i++)
		worker_cancel_done(&r->from[i]);
	struct server *s = r->s;
	free(r);
	if (s != NULL) {
		s->cancel = NULL;
		if (s->state == SERVER_DRAIN)
			server_drain_input(s);
		else if (s->state == SERVER_ACTIVE && s->client != NULL)
			client_maybe_done(s->client);
	}
}

/* PQcancel blocks (libpq 15 has no non-blocking cancel), so it runs on
 * libuv's thread pool with its own copy of the cancel key. */
bool server_cancel(struct server *s, const struct cancel_from *from)
{
	struct cancel_req *r = s->cancel;

	if (r != NULL) {        /* one is on its way already: told when it is done */
		if (from == NULL || r->nfrom == (int)(sizeof(r->from) / sizeof(r->from[0])))
			return false;
		r->from[r->nfrom++] = *from;
		return true;
	}
	r = calloc(1, sizeof(*r));
	if (r == NULL || (r->cancel = PQgetCancel(s->conn)) == NULL) {
		free(r);
		return false;
	}
	r->req.data = r;
	r->s = s;
	r->sid = s->id;
	if (from != NULL)
		r->from[r->nfrom++] = *from;
	log_debug("s%llu: sending cancel", SID(s));
	if (uv_queue_work(&s->w->loop, &r->req, cancel_work, cancel_done) != 0) {
		PQfreeCancel(r->cancel);
		free(r);
		return false;
	}
	s->cancel = r;
	return from != NULL;
}

const char *const server_reapplied[NREAPPLIED] = {
	"client_encoding", "DateStyle", "IntervalStyle", "TimeZone", "application_name",
	"standard_conforming_strings", "search_path", "default_transaction_read_only",
};

int server_reapplied_index(const char *name)
{
	for (int i = 0; i < NREAPPLIED; i++)
		if (strcasecmp(server_reapplied[i], name) == 0)
			return i;
	return -1;
}

const char *server_param(const struct server *s, const char *name)
{
	for (int i = 0; i < s->nparams; i++)
		if (strcasecmp(s->params[i].name, name) == 0)
			return s->params[i].value;
	return NULL;
}

int server_set_param(struct server *s, const char *name, const char *value)
{
	int i;

	for (i = 0; i < s->nparams; i++)
		if (strcmp(s->params[i].name, name) == 0)
			break;
	if (i == SERVER_MAX_PARAMS)
		return 0;   /* more than we track: the client still gets it relayed */
	if (i < s->nparams && strcmp(s->params[i].value, value) == 0)
		return 0;
	s->params_checked = false;
	char *v = strdup(value);
	if (v == NULL)
		return -1;
	if (i == s->nparams) {
		if ((s->params[i].name = strdup(name)) == NULL) {
			free(v);
			return -1;
		}
		s->nparams++;
	} else {
		free(s->params[i].value);
	}
	s->params[i].value = v;
	return 0;
}
