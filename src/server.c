/*
 * Server connections. Owns each PGconn, its poll handle and deadline timer,
 * and the bytes read from PostgreSQL. Life of a server:
 *
 *   CONNECTING --login ok--> INTERNAL (client's settings) --> ACTIVE (relay)
 *   ACTIVE --client leaves--> DRAIN (if replies are owed: cancel, read them)
 *          --> INTERNAL (ROLLBACK if in a transaction, then the reset query)
 *          --> IDLE: handles closed, parked in the pool or handed straight
 *              to the head waiter, possibly on another worker.
 *   any --server_close(reason)--> PQfinish after the poll handle closed.
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
	const char *kw[64];
	const char *val[64];
};

static void server_on_io(uv_poll_t *handle, int status, int events);
static void server_setup(struct server *s);
static void server_reset(struct server *s);

#define SID(s) (unsigned long long)(s)->id

static uint64_t server_step_timeout(const struct server *s)
{
	return s->rt->cfg->server_connect_timeout_ms;
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
	list_init(&s->node);
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
}

void server_close(struct server *s, const char *reason)
{
	struct client *c = s->client;
	struct pool_handoff h;

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
	struct pool *pool = s->pool;
	struct runtime *rt = s->rt;
	server_free_fields(s);
	if (pool_server_closed(&rt->pools, pool, &h))
		server_handoff(rt, pool, &h);
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
	int fd = PQsocket(s->conn);

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
	if (buf_len(&s->out) > 0 ||
	    (s->state == SERVER_ACTIVE && s->client != NULL && s->client->fwd > 0))
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
	s->state = SERVER_INTERNAL;
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

static struct connect_req *connect_req_new(const struct db_config *db, const char *user)
{
	struct connect_req *r = calloc(1, sizeof(*r));
	bool has_gss = false;
	int n = 0;

	if (r == NULL || (r->user = strdup(user)) == NULL) {
		free(r);
		return NULL;
	}
	r->req.data = r;
	for (int i = 0; db->keywords[i] != NULL && n < 60; i++, n++) {
		r->kw[n] = db->keywords[i];     /* the config outlives every worker */
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
	const struct db_config *db = pool->db;
	struct server *s = server_new(w, pool);
	struct connect_req *r = s ? connect_req_new(db, c->user) : NULL;

	if (r == NULL) {
		if (s != NULL) {
			s->client = c;
			c->server = s;
			server_fail(s, "53200", "out of memory");
			return;
		}
		struct pool_handoff h;
		if (pool_server_closed(&w->rt->pools, pool, &h))
			server_handoff(w->rt, pool, &h);
		client_fatal(c, "53200", "connect", "out of memory");
		return;
	}
	s->state = SERVER_CONNECTING;
	s->client = c;
	c->server = s;
	log_debug("s%llu/w%d: connecting for c%llu", SID(s), w->id, (unsigned long long)c->id);
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

void server_adopt(struct worker *w, struct server *s, struct client *c)
{
	if (server_is_dead(s)) {
		/* Its slot stays counted: use it for a fresh connection. */
		log_info("s%llu: idle server connection was closed by the server", SID(s));
		server_free_parked(s);
		server_connect(w, c->pool, c);
		return;
	}
	s->w = w;
	s->state = SERVER_INTERNAL;
	s->client = c;
	c->server = s;
	list_add_tail(&w->servers, &s->node);
	if (server_watch(s, 0, false) < 0) {
		server_fail(s, "53200", "cannot watch the server socket");
		return;
	}
	server_setup(s);
}

static void server_setup_done(struct server *s, bool ok)
{
	struct client *c = s->client;

	if (ok) {
		client_login_done(c);
		return;
	}
	const uint8_t *body = (const uint8_t *)s->error;
	const char *state = proto_error_field(body, s->error_len, 'C');
	const char *msg = proto_error_field(body, s->error_len, 'M');
	client_fatal(c, state ? state : "08P01", "startup parameters",
	             "%s", msg ? msg : "could not apply the startup parameters");
}

/* Applies the client's startup parameters, then lets it in. */
static void server_setup(struct server *s)
{
	struct client *c = s->client;
	const char *sql = client_setup_sql(c);

	if (sql == NULL)
		client_fatal(c, "53200", "startup parameters", "out of memory");
	else if (*sql == '\0')
		client_login_done(c);
	else
		server_query(s, sql, server_setup_done);
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

		int rc = proto_msg_header(p, len, RELAY_BUF - 1, &type, &mlen);
		if (rc == PROTO_NEED_MORE || (rc > 0 && len < (size_t)mlen + 1))
			break;
		if (rc == PROTO_BAD) {
			server_fail(s, "08P01", "invalid message from the server");
			return;
		}
		const uint8_t *body = p + 5;
		size_t blen = mlen - 4;
		const char *name, *value;
		switch (type) {
		case 'E':
			if (s->error == NULL && (s->error = malloc(blen)) != NULL) {
				memcpy(s->error, body, blen);
				s->error_len = blen;
			}
			break;
		case 'S':
			if (proto_parse_param_status(body, blen, &name, &value) == 0 &&
			    server_set_param(s, name, value) < 0) {
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
static void server_drain_input(struct server *s)
{
	if (relay_scan_server(s) < 0) {
		server_close(s, "invalid message from the server while draining");
		return;
	}
	buf_consume(&s->in, s->fwd);
	s->fwd = 0;
	/* A cancel still on its way could hit the next client's query: the
	 * server stays here until PQcancel has returned. */
	if (s->replies_owed == 0 && s->msg_remain == 0 && buf_len(&s->in) == 0 && s->cancel == NULL) {
		server_deadline_clear(s);
		server_reset(s);
		return;
	}
	server_update_poll(s);
}

static void server_read(struct server *s)
{
	ssize_t n = relay_read(s->fd, &s->in);

	if (n == -EAGAIN) {
		server_update_poll(s);
		return;
	}
	if (n <= 0) {
		server_fail(s, "08006", n == 0 ? "server closed the connection unexpectedly"
		                               : strerror((int)-n));
		return;
	}
	switch (s->state) {
	case SERVER_ACTIVE:
		if (relay_scan_server(s) < 0) {
			server_fail(s, "08P01", "invalid message from the server");
			return;
		}
		client_flush(s->client);   /* may close the client and release s */
		return;
	case SERVER_INTERNAL:
		server_internal_input(s);
		return;
	case SERVER_DRAIN:
		server_drain_input(s);
		return;
	case SERVER_CONNECTING:
	case SERVER_IDLE:
		break;
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
		c->fwd -= (size_t)n;
		client_update_poll(c);
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
	if (status < 0) {
		server_fail(s, "08006", relay_socket_error(s->fd, status));
		return;
	}
	if ((events & UV_WRITABLE) && server_flush(s) < 0)
		return;
	if (events & UV_READABLE)
		server_read(s);
}

/* Handles closed: the server belongs to the pool again, or goes straight
 * to the head waiter. */
static void server_parked(uv_handle_t *handle)
{
	struct server *s = handle->data;
	struct pool_handoff h;

	free(handle);
	if (pool_release(&s->rt->pools, s->pool, s, &h))
		server_handoff(s->rt, s->pool, &h);
}

static void server_park(struct server *s)
{
	log_debug("s%llu: back to the pool", SID(s));
	if (s->fwd != 0 || s->msg_remain != 0 || s->replies_owed != 0 || s->cancel != NULL ||
	    buf_len(&s->in) != 0 || s->unsynced) {
		/* Cannot happen; if it does, a dirty server must not be shared. */
		log_error("s%llu: not clean at park (fwd %zu, remain %u, owed %u); closing", SID(s),
		          s->fwd, s->msg_remain, s->replies_owed);
		server_close(s, "not clean");
		return;
	}
	server_close_handles(s);
	buf_free(&s->in);
	buf_free(&s->out);
	s->state = SERVER_IDLE;
	s->w = NULL;
	s->poll->data = s;
	uv_poll_t *poll = s->poll;
	s->poll = NULL;
	s->poll_events = 0;
	uv_close((uv_handle_t *)poll, server_parked);
}

static void server_reset_done(struct server *s, bool ok)
{
	if (!ok)
		server_close(s, "the reset query failed");
	else
		server_park(s);
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
	const char *reset = s->rt->cfg->server_reset_query;

	if (s->txstatus != 'I')
		server_query(s, "ROLLBACK", server_rollback_done);
	else if (reset[0] != '\0')
		server_query(s, reset, server_reset_done);
	else
		server_park(s);
}

void server_release(struct server *s, bool cancel)
{
	if (s->w->stopping) {
		server_close(s, "shutdown");
		return;
	}
	s->done = NULL;
	/* What was read for the client and not sent is nobody's now. */
	buf_consume(&s->in, s->fwd);
	s->fwd = 0;
	bool busy = s->replies_owed > 0;    /* the client's own query still runs */
	if (s->copy_in) {
		/* The client left in the middle of COPY FROM STDIN: end it with a
		 * CopyFail (its error and, in simple protocol, the ReadyForQuery
		 * are already owed); the Sync below ends an extended-protocol COPY. */
		static const char why[] = "client disconnected";
		uint8_t hdr[5] = {'f'};
		proto_put32(hdr + 1, 4 + sizeof(why));
		if (buf_append(&s->out, hdr, sizeof(hdr)) < 0 || buf_append(&s->out, why, sizeof(why)) < 0) {
			server_close(s, "out of memory");
			return;
		}
		s->copy_in = false;
		s->unsynced = true;
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
	}
	if (s->replies_owed > 0 || s->msg_remain > 0 || s->cancel != NULL) {
		if (cancel && busy && s->state == SERVER_ACTIVE)
			server_cancel(s);
		s->state = SERVER_DRAIN;
		server_deadline(s, "the query of a departed client did not finish");
		server_drain_input(s);
		return;
	}
	server_reset(s);
}

void server_handoff(struct runtime *rt, struct pool *pool, struct pool_handoff *h)
{
	for (;;) {
		struct msg *m = msg_new(MSG_GRANT);
		if (m != NULL) {
			m->slot = h->slot;
			m->client_id = h->client_id;
			m->server = h->server;
			m->pool = pool;
			if (worker_post(&rt->workers[h->worker], m) == 0)
				return;
			free(m);
		}
		/* The waiter's worker has stopped: the slot goes to the next one. */
		if (h->server != NULL)
			server_free_parked(h->server);
		if (!pool_server_closed(&rt->pools, pool, h))
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
	struct server *s = r->s;
	free(r);
	if (s != NULL) {
		s->cancel = NULL;
		if (s->state == SERVER_DRAIN)
			server_drain_input(s);
	}
}

/* PQcancel blocks (libpq 15 has no non-blocking cancel), so it runs on
 * libuv's thread pool with its own copy of the cancel key. */
void server_cancel(struct server *s)
{
	if (s->cancel != NULL)
		return;     /* one is on its way already */
	struct cancel_req *r = calloc(1, sizeof(*r));
	if (r == NULL || (r->cancel = PQgetCancel(s->conn)) == NULL) {
		free(r);
		return;
	}
	r->req.data = r;
	r->s = s;
	r->sid = s->id;
	log_debug("s%llu: sending cancel", SID(s));
	if (uv_queue_work(&s->w->loop, &r->req, cancel_work, cancel_done) != 0) {
		PQfreeCancel(r->cancel);
		free(r);
		return;
	}
	s->cancel = r;
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
