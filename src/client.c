/*
 * Client connections. Owns the client's socket, its poll handle, its input
 * buffer and the messages pgberth writes to it. A client lives on one
 * worker from accept to close:
 *
 *   STARTUP --startup packet--> WAITING (pool->waiters) --grant--> LOGIN
 *   LOGIN --server ready and settings applied--> ACTIVE (relay)
 *   ACTIVE --transaction over (transaction/statement mode)--> IDLE
 *   IDLE --a message--> WAITING --grant--> LOGIN --> ACTIVE ...
 *   any --client_close(reason)--> gone
 *
 * In transaction and statement mode a client whose pool already knows what
 * a fresh server reports (pool_defaults) is greeted at once, without a
 * server: it goes straight from STARTUP to IDLE. logged_in tells a client
 * waiting for its first server from one waiting for its next.
 *
 * Settings: the client's startup parameters become set_config() calls run
 * on whatever server it gets, so servers stay shareable (they all log in
 * with the pool's own conninfo). Parameters the server reports are tracked
 * per client (view) and re-applied on a server that differs; unreported
 * ones (extra) are applied once per server, after a RESET ALL if the server
 * carries another client's (server->settings_of). A transaction in which
 * the client ran SET or RESET ends with the server's session settings read
 * back into extra (server_capture_settings), so that they follow it too.
 */
#include <errno.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "client.h"
#include "config.h"
#include "log.h"
#include "proto.h"
#include "relay.h"
#include "runtime.h"
#include "server.h"
#include "worker.h"

/* Most a queued client moves out of its block (client_wait_light): a query,
 * or a few. */
#define WAIT_SHRINK_MAX 4096

static void client_on_io(uv_poll_t *handle, int status, int events);
static void client_read(struct client *c);

/* What c->in may hold: RELAY_BUF, or more for a Parse read whole. */
static size_t client_in_max(const struct client *c)
{
	size_t want = c->in_want > 0 ? c->fwd + c->in_want : 0;
	return want > RELAY_BUF ? want : RELAY_BUF;
}
static int client_active_input(struct client *c);

void client_accept(struct worker *w, int fd)
{
	struct client *c = calloc(1, sizeof(*c));
	if (c == NULL)
		goto err;
	c->poll = malloc(sizeof(*c->poll));
	if (c->poll == NULL)
		goto err;
	if (worker_slot_alloc(w, c, &c->slot) < 0)
		goto err;
	if (uv_poll_init(&w->loop, c->poll, fd) != 0) {
		worker_slot_free(w, c->slot);
		goto err;
	}
	c->poll->data = c;
	c->id = runtime_next_id(w->rt);
	c->cancel_key = worker_cancel_key(w);
	c->w = w;
	c->fd = fd;
	c->state = CLIENT_STARTUP;
	c->accepted = uv_now(&w->loop);
	list_init(&c->waiter.node);
	list_init(&c->wait_node);
	list_init(&c->flush_node);
	list_add_tail(&w->clients, &c->node);
	atomic_fetch_add(&w->rt->nclients, 1);
	worker_login_start(w, c);
	log_debug("c%llu/w%d: accepted", (unsigned long long)c->id, w->id);
	/* A client sends its startup packet right after connect(), so it is
	 * nearly always there by now (96% of connections under pgbench -C):
	 * reading at once saves a trip through epoll_wait per connection. The
	 * poll is started first (libuv adds the fd to epoll only at its next
	 * poll, with whatever events are wanted by then): a client that goes
	 * on to wait for a server must still be watched, to notice it leave. */
	client_update_poll(c);
	client_read(c);
	return;
err:
	log_error("w%d: out of memory accepting a client", w->id);
	if (c != NULL)
		free(c->poll);
	free(c);
	close(fd);
}

/* The poll handle is closed first; the fd (carried in data) only after
 * libuv is done with it. */
static void client_poll_closed(uv_handle_t *handle)
{
	close((int)(intptr_t)handle->data);
	free(handle);
}

void client_close(struct client *c, const char *reason)
{
	struct worker *w = c->w;
	struct server *s = c->server;

	if (c->state == CLIENT_STARTUP)
		log_debug("c%llu/w%d: closing: %s", (unsigned long long)c->id, w->id, reason);
	else
		log_info("c%llu/w%d: closing: %s", (unsigned long long)c->id, w->id, reason);

	if (c->logged_in && uv_now(&w->loop) - c->accepted < CHURN_SESSION_MS)
		atomic_fetch_add_explicit(&w->rt->short_sessions, 1, memory_order_relaxed);
	if (c->state == CLIENT_WAITING)
		pool_cancel_wait(&w->rt->pools, c->pool, &c->waiter);
	if (s != NULL) {
		/* Bytes the server got only part of leave it mid-message. After
		 * a Terminate, what was cleared of the client's is whole
		 * messages: they go to the server (after what pgberth has
		 * queued for it), as a direct connection would run them. */
		bool partial = c->fwd > 0 || c->msg_remain > 0;
		if (partial && c->terminated && c->msg_remain == 0 && s->state != SERVER_CONNECTING &&
		    buf_append(&s->out, buf_head(&c->in), c->fwd) == 0) {
			buf_consume(&c->in, c->fwd);
			c->fwd = 0;
			partial = false;
		}
		c->server = NULL;
		s->client = NULL;
		if (s->state == SERVER_CONNECTING)
			server_close(s, "client left during login");
		else if (partial)
			server_close(s, "client left in the middle of a message");
		else
			server_release(s, !c->terminated);
	}
	if (c->pool != NULL)
		pool_detach(&w->rt->pools, c->pool);

	list_del(&c->node);
	worker_login_end(w, c);
	list_del(&c->wait_node);
	list_del(&c->flush_node);
	worker_slot_free(w, c->slot);
	atomic_fetch_sub(&w->rt->nclients, 1);
	c->poll->data = (void *)(intptr_t)c->fd;
	uv_close((uv_handle_t *)c->poll, client_poll_closed);
	buf_reset(&c->in);
	buf_give_block(&c->in, &w->bufs);
	buf_free(&c->out);
	free(c->user);
	free(c->dbname);
	free(c->startup);
	free(c->st);
	free(c->view);
	free(c->extra);
	free(c->extra_startup);
	free(c->extra_hidden);
	pstmt_map_clear(&c->stmts);
	free(c->stmt_key);
	free(c);
	worker_client_gone(w);
}

void client_fatal(struct client *c, const char *sqlstate, const char *reason,
                  const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* An error can go out only between messages of the server's. */
	struct server *s = c->server;
	bool between = s == NULL || c->state != CLIENT_ACTIVE || (s->fwd == 0 && s->msg_remain == 0);
	if (between && proto_put_error(&c->out, "FATAL", sqlstate, msg, NULL) == 0)
		(void)relay_write(c->fd, buf_head(&c->out), buf_len(&c->out));   /* best effort, once */
	char why[1200];
	snprintf(why, sizeof(why), "%s: %s (%s)", reason, msg, sqlstate);
	client_close(c, why);
}

int client_flush(struct client *c)
{
	ssize_t n;

	if (c->scan_paused && c->fwd == 0 && c->state == CLIENT_ACTIVE) {
		/* What it sent past RELAY_SCAN_MAX, now that the rest is sent. */
		c->scan_paused = false;
		if (client_active_input(c) < 0)
			return -1;
	}
	if (c->write_dead) {
		buf_reset(&c->out);
		buf_give_block(&c->out, &c->w->bufs);
		struct server *s = c->server;
		if (c->state == CLIENT_ACTIVE && s->fwd > 0) {
			buf_consume(&s->in, s->fwd);
			buf_give_block(&s->in, &c->w->bufs);
			s->fwd = 0;
			if (server_update_poll(s) < 0)
				return -1;
		}
		return 0;
	}

	while (buf_len(&c->out) > 0) {
		n = relay_write(c->fd, buf_head(&c->out), buf_len(&c->out));
		if (n < 0)
			goto gone;
		if (n == 0)
			goto pending;
		buf_consume(&c->out, (size_t)n);
	}
	/* pgberth's own messages are rare: keep no buffer. A server's block
	 * handed over whole goes back to the cache. */
	buf_give_block(&c->out, &c->w->bufs);
	if (c->leaving) {
		client_close(c, "shutdown: pgberth is shutting down (57P01)");
		return -1;
	}
	struct server *s = c->server;
	if (c->state == CLIENT_ACTIVE && s->fwd > 0) {
		n = relay_write(c->fd, buf_head(&s->in), s->fwd);
		if (n < 0)
			goto gone;
		buf_consume(&s->in, (size_t)n);
		buf_give_block(&s->in, &c->w->bufs);
		s->fwd -= (size_t)n;
		if (server_update_poll(s) < 0)
			return -1;      /* the server failed and took the client with it */
		if (client_maybe_done(c) < 0)
			return -1;
	}
pending:
	client_update_poll(c);
	return 0;
gone:
	if (c->state == CLIENT_ACTIVE && !c->write_dead) {
		/* It may have closed after a batch that ends in Terminate,
		 * which is still to be read or scanned: what it sent goes on,
		 * what the server answers is dropped, and the client is closed
		 * at its Terminate, or at the end of its input (client_read). */
		c->write_dead = true;
		return client_flush(c);
	}
	/* Not client_fatal: nobody is left to read the error. */
	client_close(c, n == -EPIPE || n == -ECONNRESET ? "client went away" : strerror((int)-n));
	return -1;
}

void client_flush_later(struct client *c)
{
	if (!list_linked(&c->flush_node)) {
		list_add_tail(&c->w->flushes, &c->flush_node);
		worker_flush_soon(c->w);
	}
}

void client_update_poll(struct client *c)
{
	int events = 0;

	if (buf_len(&c->in) < client_in_max(c) && !c->leaving && !c->read_eof)
		events |= UV_READABLE;
	/* A client due for a flush this iteration is written to before the
	 * poll is asked again. */
	if ((buf_len(&c->out) > 0 || (c->state == CLIENT_ACTIVE && c->server->fwd > 0)) &&
	    !list_linked(&c->flush_node))
		events |= UV_WRITABLE;
	if (events != c->poll_events) {
		c->poll_events = events;
		if (events == 0)
			uv_poll_stop(c->poll);
		else
			uv_poll_start(c->poll, events, client_on_io);
	}
}

/* Startup parameters that are about the connection, not settings. */
static bool is_protocol_param(const char *name)
{
	return strcmp(name, "user") == 0 || strcmp(name, "database") == 0 ||
	       strcmp(name, "options") == 0 || strcmp(name, "replication") == 0 ||
	       strncmp(name, "_pq_.", 5) == 0;
}

static const char *reapplied_name(const char *name)
{
	int i = server_reapplied_index(name);
	return i < 0 ? NULL : server_reapplied[i];
}

/* Looks name up in a "name\0value\0"... blob. */
static const char *blob_get(const char *blob, size_t len, const char *name)
{
	for (const char *p = blob, *end = blob + len; p != NULL && p < end;) {
		const char *v = p + strlen(p) + 1;
		if (strcmp(p, name) == 0)
			return v;
		p = v + strlen(v) + 1;
	}
	return NULL;
}

static const char *client_default(struct client *c, const char *name)
{
	if (c->defaults == NULL && c->pool != NULL)
		c->defaults = pool_defaults(&c->w->rt->pools, c->pool, &c->defaults_len);
	return c->defaults ? blob_get(c->defaults, c->defaults_len, name) : NULL;
}

/* The value the client has for a reapplied parameter, or NULL if unknown. */
const char *client_stmt_settings(struct client *c, size_t *len)
{
	if (!c->stmt_key_ok || c->stmt_key_gen != c->extra_gen) {
		/* What PostgreSQL reads a query's text by: the reported
		 * settings the client has other than the pool's (but the
		 * application_name), then the others. */
		struct buf b = {0};
		bool ok = true;
		for (const char *p = c->view, *end = c->view + c->view_len; p != NULL && p < end && ok;) {
			const char *v = p + strlen(p) + 1, *next = v + strlen(v) + 1;
			if (strcasecmp(p, "application_name") != 0)
				ok = buf_append(&b, p, (size_t)(next - p)) == 0;
			p = next;
		}
		if (ok && c->extra != NULL)
			ok = buf_append(&b, "\1", 1) == 0 && buf_append(&b, c->extra, strlen(c->extra)) == 0;
		if (!ok) {
			buf_free(&b);
			return NULL;
		}
		free(c->stmt_key);
		c->stmt_key = (char *)b.data;
		c->stmt_key_len = buf_len(&b);
		c->stmt_key_ok = true;
		c->stmt_key_gen = c->extra_gen;
	}
	*len = c->stmt_key_len;
	return c->stmt_key != NULL ? c->stmt_key : "";
}

static const char *client_view_get(struct client *c, const char *name)
{
	const char *v = c->view ? blob_get(c->view, c->view_len, name) : NULL;
	return v ? v : client_default(c, name);
}

/* Records the client's value of a reapplied parameter (name canonical):
 * only a value other than the default is stored. */
static int client_view_set(struct client *c, const char *name, const char *value)
{
	const char *def = client_default(c, name);
	const char *cur = c->view ? blob_get(c->view, c->view_len, name) : NULL;
	bool keep = def == NULL || strcmp(def, value) != 0;

	if (cur != NULL ? keep && strcmp(cur, value) == 0 : !keep)
		return 0;
	size_t nlen = strlen(name) + 1, vlen = strlen(value) + 1;
	size_t len = keep ? nlen + vlen : 0;
	char *view = malloc(c->view_len + len + 1), *q = view;
	if (view == NULL)
		return -1;
	for (const char *p = c->view, *end = c->view + c->view_len; p != NULL && p < end;) {
		const char *v = p + strlen(p) + 1, *next = v + strlen(v) + 1;
		if (strcmp(p, name) != 0) {
			memcpy(q, p, (size_t)(next - p));
			q += next - p;
		}
		p = next;
	}
	if (keep) {
		memcpy(q, name, nlen);
		memcpy(q + nlen, value, vlen);
		q += len;
	}
	free(c->view);
	c->view_len = (uint32_t)(q - view);
	c->view = view;
	c->want_ok = false;
	c->stmt_key_ok = false;
	if (c->view_len == 0) {
		free(c->view);
		c->view = NULL;
	}
	return 0;
}

int client_param_changed(struct client *c, const char *name, const char *value)
{
	const char *canon = reapplied_name(name);
	return canon ? client_view_set(c, canon, value) : 0;
}

/* Is name a parameter the pool's servers report? Before the first login
 * of the pool, the ones PostgreSQL 15 reports. */
static bool client_reported(struct client *c, const char *canon)
{
	if (client_default(c, "server_version") != NULL)
		return client_default(c, canon) != NULL;
	return strcmp(canon, "search_path") != 0;
}

/* One startup setting: tracked if reported, else SET on every server. */
struct take_ctx {
	struct client *c;
	struct buf hidden;
};

/* Settings pg_settings does not list: the role and session user, and
 * custom placeholders (a name with a '.', though a loaded extension's
 * are listed: then the one read back comes after, and wins). */
static bool setting_hidden(const char *name)
{
	return strcasecmp(name, "role") == 0 || strcasecmp(name, "session_authorization") == 0 ||
	       strchr(name, '.') != NULL;
}

static int client_take_setting(const char *name, const char *value, void *arg)
{
	struct take_ctx *t = arg;
	struct client *c = t->c;
	const char *canon = reapplied_name(name);
	struct buf *sql = &c->w->scratch;

	if (canon != NULL && client_reported(c, canon))
		return client_view_set(c, canon, value);
	if (setting_hidden(name) &&
	    (proto_sql_set(&t->hidden, name, value) < 0 || buf_append(&t->hidden, ";", 1) < 0))
		return -1;
	if (proto_sql_set(sql, name, value) < 0)
		return -1;
	return buf_append(sql, ";", 1);
}

static char *dup_or_null(const char *s, size_t len, bool *oom)
{
	if (s == NULL || len == 0)
		return NULL;
	char *d = strndup(s, len);
	if (d == NULL)
		*oom = true;
	return d;
}

int client_settings_read_back(struct client *c, const char *sql, size_t len)
{
	size_t hl = c->extra_hidden != NULL ? strlen(c->extra_hidden) : 0;
	char *extra = NULL;

	if (hl + len > 0) {
		if ((extra = malloc(hl + len + 1)) == NULL)
			return -1;
		memcpy(extra, c->extra_hidden != NULL ? c->extra_hidden : "", hl);
		memcpy(extra + hl, sql != NULL ? sql : "", len);
		extra[hl + len] = '\0';
	}
	free(c->extra);
	c->extra = extra;
	c->extra_gen++;
	return 0;
}

void client_settings_discarded(struct client *c)
{
	bool oom = false;
	char *extra = dup_or_null(c->extra_startup, c->extra_startup ? strlen(c->extra_startup) : 0, &oom);

	if (oom)
		return;     /* what it SET then follows it on: it is still correct on this server */
	free(c->extra);
	c->extra = extra;
	c->extra_gen++;
}

/* Turns the startup packet's settings into view and extra. As in
 * PostgreSQL, options (-c name=value) come first and a parameter sent on
 * its own overrides them. */
static int client_take_settings(struct client *c)
{
	const struct startup *st = c->st;
	struct buf *sql = &c->w->scratch;
	struct take_ctx t = { .c = c };
	const char *err;
	bool oom = false;

	buf_reset(sql);
	for (int i = 0; i < st->nparams; i++) {
		if (strcmp(st->params[i].name, "options") != 0)
			continue;
		char *scratch = malloc(strlen(st->params[i].value) + 1);
		if (scratch == NULL)
			return -1;
		int rc = proto_parse_options(st->params[i].value, scratch, client_take_setting, &t, &err);
		free(scratch);
		if (rc != 0)
			goto fail;
	}
	for (int i = 0; i < st->nparams; i++) {
		const char *name = st->params[i].name;
		if (is_protocol_param(name))
			continue;
		if (client_take_setting(name, st->params[i].value, &t) < 0)
			goto fail;
	}
	c->extra = dup_or_null((const char *)buf_head(sql), buf_len(sql), &oom);
	c->extra_startup = dup_or_null((const char *)buf_head(sql), buf_len(sql), &oom);
	c->extra_hidden = dup_or_null((const char *)buf_head(&t.hidden), buf_len(&t.hidden), &oom);
	buf_free(&t.hidden);
	return oom ? -1 : 0;
fail:
	buf_free(&t.hidden);
	return -1;
}

const char *client_setup_sql(struct client *c, struct server *s, bool *reset_first)
{
	struct buf *sql = &c->w->scratch;

	bool mine = s->settings_of == c->id && s->settings_gen == c->extra_gen;

	s->setup_extra = false;
	/* Another client's settings that are the same as this one's (drivers
	 * set the same few) are as good as its own. settings_sql is known
	 * only for a server pgberth set up clean, with nothing since. */
	if (!mine && s->settings_of != 0 && s->settings_sql != NULL && c->extra != NULL &&
	    strcmp(s->settings_sql, c->extra) == 0) {
		s->settings_of = c->id;
		s->settings_gen = c->extra_gen;
		mine = true;
	}
	*reset_first = s->settings_of != 0 && !mine;
	if (*reset_first)
		return "";
	if (!s->params_checked) {
		/* A value equal to the pool's default points at the default
		 * itself, so that for the usual client, which SET nothing, the
		 * check below is a pointer compare. The defaults live as long as
		 * the pool, which outlives its servers. */
		for (int i = 0; i < NREAPPLIED; i++) {
			const char *have = server_param(s, server_reapplied[i]);
			const char *def = client_default(c, server_reapplied[i]);
			s->reval[i] = def != NULL && have != NULL && strcmp(def, have) == 0 ? def : have;
		}
		s->params_checked = true;
	}
	if (!c->want_ok) {
		for (int i = 0; i < NREAPPLIED; i++)
			c->want[i] = client_view_get(c, server_reapplied[i]);
		c->want_ok = c->defaults != NULL;
	}
	buf_reset(sql);
	for (int i = 0; i < NREAPPLIED; i++) {
		const char *want = c->want[i], *have = s->reval[i];
		if (want == NULL || have == NULL || want == have || strcmp(want, have) == 0)
			continue;
		if (proto_sql_set(sql, server_reapplied[i], want) < 0 || buf_append(sql, ";", 1) < 0)
			return NULL;
	}
	s->setup_extra = c->extra != NULL && !mine;     /* s is clean here */
	if (s->setup_extra && buf_append(sql, c->extra, strlen(c->extra)) < 0)
		return NULL;
	if (buf_len(sql) == 0)
		return "";
	if (buf_append(sql, "", 1) < 0)
		return NULL;
	return (const char *)buf_head(sql);
}

/* For the options walk at startup: remembers the first bad name. */
static int check_setting_name(const char *name, const char *value, void *arg)
{
	const char **bad = arg;
	(void)value;
	if (proto_sql_name_ok(name))
		return 0;
	*bad = name;
	return 1;
}

/* Checks everything about the startup packet that does not need a server,
 * so that a bad one is refused before it costs a connection. */
static bool client_check_startup(struct client *c, const struct db_config **db)
{
	struct startup *st = c->st;
	const char *err;

	if (st->code >> 16 != 3) {
		client_fatal(c, "0A000", "startup", "unsupported frontend protocol %u.%u: pgberth supports 3.0",
		             st->code >> 16, st->code & 0xffff);
		return false;
	}
	if (st->user == NULL || st->user[0] == '\0') {
		client_fatal(c, "28000", "startup", "no PostgreSQL user name specified in startup packet");
		return false;
	}
	for (int i = 0; i < st->nparams; i++) {
		const char *name = st->params[i].name, *value = st->params[i].value;
		if (strcmp(name, "replication") == 0 && strcasecmp(value, "false") != 0 &&
		    strcasecmp(value, "off") != 0 && strcmp(value, "0") != 0 && strcasecmp(value, "no") != 0) {
			client_fatal(c, "0A000", "startup", "replication connections are not supported by pgberth");
			return false;
		}
		if (!is_protocol_param(name) && !proto_sql_name_ok(name)) {
			client_fatal(c, "42704", "startup", "unrecognized configuration parameter \"%s\"", name);
			return false;
		}
		if (strcmp(name, "options") == 0) {
			const char *bad = NULL;
			char *scratch = malloc(strlen(value) + 1);
			int rc = scratch ? proto_parse_options(value, scratch, check_setting_name, &bad, &err) : -1;
			if (rc == 1)
				client_fatal(c, "42704", "startup", "unrecognized configuration parameter \"%s\"", bad);
			else if (rc != 0)
				client_fatal(c, scratch ? "42601" : "53200", "startup",
				             "invalid options in startup packet: %s", scratch ? err : "out of memory");
			free(scratch);
			if (rc != 0)
				return false;
		}
	}
	const char *dbname = st->database && st->database[0] ? st->database : st->user;
	*db = config_find_db(c->w->cfg, dbname);
	if (*db == NULL) {
		client_fatal(c, "3D000", "startup", "database \"%s\" is not configured in pgberth", dbname);
		return false;
	}
	c->user = strdup(st->user);
	c->dbname = strdup(dbname);
	if (c->user == NULL || c->dbname == NULL) {
		client_fatal(c, "53200", "startup", "out of memory");
		return false;
	}
	return true;
}

/* NegotiateProtocolVersion for a 3.x newer than 3.0 or _pq_ options: we
 * speak 3.0 and none of the options, as PostgreSQL would say. */
static int client_negotiate(struct client *c)
{
	const struct startup *st = c->st;
	const char *opts[PROTO_MAX_PARAMS];
	int nopts = 0;

	for (int i = 0; i < st->nparams; i++)
		if (strncmp(st->params[i].name, "_pq_.", 5) == 0)
			opts[nopts++] = st->params[i].name;
	if ((st->code & 0xffff) == 0 && nopts == 0)
		return 0;
	return proto_put_negotiate(&c->out, 0, opts, nopts);
}

static const char *db_forced_user(const struct db_config *db)
{
	for (int i = 0; db->keywords[i] != NULL; i++)
		if (strcmp(db->keywords[i], "user") == 0)
			return db->values[i];
	return NULL;
}

/* Hands the client a server idle on another worker: that worker closes the
 * server's handles and sends it on in a MSG_GRANT. */
static void client_migrate(struct client *c, struct server *s)
{
	struct worker *w = c->w;
	struct msg *m = msg_new(MSG_MIGRATE);

	if (m != NULL) {
		m->server = s;
		m->pool = c->pool;
		m->slot = c->slot;
		m->client_id = c->id;
		m->worker = w->id;
		if (worker_post(&w->rt->workers[c->waiter.idle_owner], m) == 0)
			return;
		free(m);
		/* Its worker stopped: it closes the server itself. */
		client_fatal(c, "57P01", "shutdown", "pgberth is shutting down");
		return;
	}
	client_fatal(c, "53200", "acquire", "out of memory");
}

/* Waiting only because the database is at max_db_connections: an idle
 * server of another of its pools is closed to make room. */
static void client_evict_for(struct client *c)
{
	struct worker *w = c->w;
	int owner;
	struct server *s = pool_evict_idle(&w->rt->pools, c->pool, &owner);

	if (s == NULL)
		return;
	if (owner == w->id) {
		server_close(s, "max_db_connections: room for another pool of the database");
		return;
	}
	struct msg *m = msg_new(MSG_EVICT);
	if (m == NULL)
		return;     /* out of memory: its owner keeps it, out of the pool, until shutdown */
	m->server = s;
	if (worker_post(&w->rt->workers[owner], m) < 0)
		free(m);    /* that worker stopped: it closes its servers itself */
}

/* A queued client may wait long, holding only its query. Once the worker's
 * cache has no block to spare, that query moves to a buffer of its own size
 * and the 32 KiB block goes back: ten thousand clients queued at once then
 * hold a few hundred kilobytes instead of a page of a block each, and the
 * heap does not keep that high-water mark after they are served. With a
 * block to spare the client keeps its own: no allocation per transaction. */
static void client_wait_light(struct client *c)
{
	if (c->w->bufs.n == 0)
		buf_shrink(&c->in, &c->w->bufs, WAIT_SHRINK_MAX);
}

/* Asks the pool for a server: now, or as a waiter (worker->waits). */
static void client_acquire(struct client *c)
{
	struct worker *w = c->w;
	void *server = NULL;

	list_del(&c->wait_node);
	c->state = CLIENT_WAITING;
	c->wait_since = uv_now(&w->loop);
	c->waiter.since_ms = c->wait_since;   /* loop time: every worker's follows the same clock */
	list_add_tail(&w->waits, &c->wait_node);
	switch (pool_acquire(&w->rt->pools, c->pool, &c->waiter, &server)) {
	case POOL_GOT_IDLE:
		if (c->waiter.idle_owner == w->id)
			client_granted(c, server);
		else
			client_migrate(c, server);
		break;
	case POOL_MAY_CONNECT:
		client_granted(c, NULL);
		break;
	case POOL_MUST_WAIT:
		log_debug("c%llu/w%d: waiting for a server", (unsigned long long)c->id, w->id);
		client_wait_light(c);
		client_evict_for(c);
		break;
	}
}

/* AuthenticationOk, the parameters, BackendKeyData and ReadyForQuery: what
 * the server's own login ends with. Without a server (s NULL) the pool's
 * defaults stand in, with the client's own settings over them. */
static int client_greet(struct client *c, struct server *s)
{
	struct worker *w = c->w;
	int32_t pid = (int32_t)(((uint32_t)w->id + 1) << 24 | c->slot);
	int rc = proto_put_auth_ok(&c->out);

	if (s != NULL) {
		for (int i = 0; i < s->nparams && rc == 0; i++) {
			rc = proto_put_param_status(&c->out, s->params[i].name, s->params[i].value);
			if (rc == 0)
				rc = client_param_changed(c, s->params[i].name, s->params[i].value);
		}
	} else {
		/* One pass over the defaults: the client's own value, if any,
		 * stands in for the one at hand. */
		for (const char *p = c->defaults, *end = c->defaults + c->defaults_len; p < end && rc == 0;) {
			const char *v = p + strlen(p) + 1;
			const char *own = c->view ? blob_get(c->view, c->view_len, p) : NULL;
			rc = proto_put_param_status(&c->out, p, own ? own : v);
			p = v + strlen(v) + 1;
		}
	}
	if (rc == 0)
		rc = proto_put_backend_key(&c->out, pid, c->cancel_key);
	if (rc == 0)
		rc = proto_put_ready(&c->out, s ? s->txstatus : 'I');
	if (rc < 0)
		return -1;
	c->logged_in = true;
	worker_login_end(w, c);
	log_info("c%llu/w%d: %s@%s logged in (%s mode)", (unsigned long long)c->id, w->id,
	         c->user, c->dbname, pool_mode_name(c->mode));
	return 0;
}

/* Idle without a server: waits for its next message. */
static void client_go_idle(struct client *c)
{
	struct worker *w = c->w;

	c->state = CLIENT_IDLE;
	list_del(&c->wait_node);
	c->wait_since = uv_now(&w->loop);
	list_add_tail(&w->idle_clients, &c->wait_node);
}

/* Can the client be greeted from the pool's defaults? Only if they are
 * known and the client set nothing the server might spell differently in
 * its ParameterStatus (DateStyle=german is reported as "German, DMY");
 * application_name comes back as sent. Other clients log in through a
 * server, which reports their values. */
static bool client_greet_without_server(struct client *c)
{
	if (client_default(c, "server_version") == NULL)
		return false;
	for (const char *p = c->view, *end = c->view + c->view_len; p != NULL && p < end;) {
		const char *v = p + strlen(p) + 1;
		if (strcmp(p, "application_name") != 0)
			return false;
		p = v + strlen(v) + 1;
	}
	return true;
}

/* A v3 startup packet is in c->st: find the pool, then greet the client at
 * once or ask the pool for a server. */
static void client_login(struct client *c)
{
	struct worker *w = c->w;
	const struct config *cfg = w->cfg;
	const struct db_config *db;

	if (!client_check_startup(c, &db))
		return;
	if (atomic_load(&w->rt->nclients) > cfg->max_client_conn) {
		client_fatal(c, "53300", "max_client_conn", "no more connections allowed (max_client_conn %d)",
		             cfg->max_client_conn);
		return;
	}
	if (client_negotiate(c) < 0) {
		client_fatal(c, "53200", "startup", "out of memory");
		return;
	}
	const char *pool_user = db->forced_user ? db_forced_user(db) : c->user;
	c->mode = config_pool_mode(db, c->user);
	c->track = c->mode != POOL_SESSION && cfg->max_prepared_statements > 0;
	c->pool = pool_attach(&w->rt->pools, db, pool_user, config_pool_size(db, pool_user));
	if (c->pool == NULL && errno == ENOENT) {
		client_fatal(c, "3D000", "startup", "database \"%s\" is not configured in pgberth", c->dbname);
		return;
	}
	if (c->pool == NULL || client_take_settings(c) < 0) {
		client_fatal(c, "53200", "startup", "out of memory");
		return;
	}
	free(c->startup);
	free(c->st);
	c->startup = NULL;
	c->st = NULL;
	c->waiter.worker = w->id;
	c->waiter.slot = c->slot;
	c->waiter.client_id = c->id;
	log_debug("c%llu/w%d: login %s@%s", (unsigned long long)c->id, w->id, c->user, c->dbname);
	if (c->mode == POOL_SESSION || !client_greet_without_server(c)) {
		client_acquire(c);  /* greeted once its server is ready */
		return;
	}
	if (client_greet(c, NULL) < 0) {
		client_fatal(c, "53200", "login", "out of memory");
		return;
	}
	client_go_idle(c);
	buf_give_block(&c->in, &w->bufs);
	if (client_flush(c) == 0 && buf_len(&c->in) > 0)
		client_acquire(c);  /* the first query came with the startup packet */
}

/* Routes a CancelRequest to the worker that owns its key. Returns true if
 * it went: c then stays open until that worker says the cancel was
 * carried out, as the postmaster closes a cancel connection only once it
 * has signalled the backend. libpq and other drivers wait for that close,
 * and a client that went on earlier could see the cancel hit its next
 * query. The login deadline bounds the wait. */
static bool client_post_cancel(struct client *c, const struct startup *st)
{
	struct runtime *rt = c->w->rt;
	int target = (int)((uint32_t)st->cancel_pid >> 24) - 1;

	if (target < 0 || target >= rt->nworkers)
		return false;
	struct msg *m = msg_new(MSG_CANCEL);
	if (m == NULL)
		return false;
	m->pid = st->cancel_pid;
	m->key = st->cancel_key;
	m->worker = c->w->id;
	m->slot = c->slot;
	m->client_id = c->id;
	if (worker_post(&rt->workers[target], m) < 0) {
		free(m);
		return false;
	}
	return true;
}

/* Startup-phase input: SSL and GSS requests are declined with 'N', a
 * CancelRequest is routed to the worker that owns the key, and a startup
 * packet starts the login. Returns -1 if the client was closed. */
static int client_startup_input(struct client *c)
{
	if (c->cancel_sent) {
		buf_consume(&c->in, buf_len(&c->in));   /* nothing more is expected */
		return 0;
	}
	for (;;) {
		long n = proto_startup_frame(buf_head(&c->in), buf_len(&c->in));
		if (n == PROTO_NEED_MORE || (n > 0 && (size_t)n > buf_len(&c->in)))
			return 0;
		if (n == PROTO_BAD) {
			client_fatal(c, "08P01", "startup", "invalid length of startup packet");
			return -1;
		}
		c->startup = malloc((size_t)n);
		c->st = malloc(sizeof(*c->st));
		const char *err = "out of memory";
		if (c->startup == NULL || c->st == NULL)
			goto bad;
		memcpy(c->startup, buf_head(&c->in), (size_t)n);
		buf_consume(&c->in, (size_t)n);
		if (proto_parse_startup(c->startup, (size_t)n, c->st, &err) < 0)
			goto bad;
		switch (c->st->code) {
		case PROTO_SSL_REQUEST:
		case PROTO_GSSENC_REQUEST:
			if (buf_append(&c->out, "N", 1) < 0 || client_flush(c) < 0)
				return -1;
			free(c->startup);
			free(c->st);
			c->startup = NULL;
			c->st = NULL;
			continue;
		case PROTO_CANCEL_REQUEST:
			if (client_post_cancel(c, c->st)) {
				c->cancel_sent = true;
				buf_consume(&c->in, buf_len(&c->in));
				return 0;
			}
			client_close(c, "cancel request");
			return -1;
		default:
			client_login(c);
			return -1;  /* c may be gone; nothing more to do here */
		}
bad:
		client_fatal(c, "08P01", "startup", "%s", err);
		return -1;
	}
}

/* Relay input from an active client to its server. -1 if c may be gone. */
static int client_active_input(struct client *c)
{
	struct server *s = c->server;
	int rc = relay_scan_client(c, s);

	if (rc == RELAY_NOMEM) {
		client_fatal(c, "53200", "prepared statements",
		             "out of memory, or more than %u replies owed", PSTMT_QUEUE_MAX);
		return -1;
	}
	if (rc < 0) {
		client_fatal(c, "08P01", "protocol", "invalid message from client");
		return -1;
	}
	if (s->fwd > 0)
		client_flush_later(c);      /* replies pgberth gave itself */
	if (c->in_want > 0)
		client_update_poll(c);      /* the Parse may not fit what it read up to */
	if (c->fwd > 0 && rc != RELAY_TERMINATE) {
		server_flush_later(s);
		return 0;
	}
	if (c->fwd > 0 && server_flush(s) < 0)
		return -1;
	if (rc == RELAY_TERMINATE) {
		/* What it sent before is cleared; the server gets the rest of
		 * it once the client is gone (client_close). */
		c->terminated = true;
		client_close(c, "client sent Terminate");
		return -1;
	}
	return 0;
}

/* Walks the complete messages of c->in from offset off. Returns the
 * length up to and including the first one whose type is in stop, 0 if
 * none of them is. */
static size_t client_scan_in(const struct client *c, size_t off, const char *stop)
{
	const uint8_t *p = buf_head(&c->in);
	size_t len = buf_len(&c->in);
	char type;
	uint32_t mlen;

	while (proto_msg_header(p + off, len - off, PROTO_MAX_MESSAGE, &type, &mlen) > 0 &&
	       len - off >= (size_t)mlen + 1) {
		off += (size_t)mlen + 1;
		if (type != 0 && strchr(stop, type) != NULL)
			return off;
	}
	return 0;
}

/* An idle client whose next message is Terminate needs no server for it. */
static bool client_sent_terminate(const struct client *c)
{
	char type;
	uint32_t len;

	return proto_msg_header(buf_head(&c->in), buf_len(&c->in), PROTO_MAX_MESSAGE, &type, &len) > 0 &&
	       type == 'X';
}

static void client_read(struct client *c)
{
	if (c->leaving)
		return;     /* it gets nothing more done: its poll no longer reads */
	ssize_t n = relay_read(c->fd, &c->in, &c->w->bufs, client_in_max(c));

	if (n == -EAGAIN) {
		if (c->state == CLIENT_WAITING)
			client_wait_light(c);   /* the block was taken for nothing */
		buf_give_block(&c->in, &c->w->bufs);
		return client_update_poll(c);
	}
	if (n == 0) {
		/* Query, Terminate, close, all while waiting for a server (or
		 * for its settings): the query still runs, as it would on a
		 * direct connection. */
		if ((c->state == CLIENT_WAITING || c->state == CLIENT_LOGIN) && c->logged_in && !c->read_eof &&
		    buf_len(&c->in) > 0 && client_scan_in(c, 0, "X") == buf_len(&c->in)) {
			c->read_eof = true;
			client_update_poll(c);
			return;
		}
		/* Active, and what is not scanned yet (a batch held back by
		 * RELAY_SCAN_MAX) ends with Terminate: the scan gets to it. */
		if (c->state == CLIENT_ACTIVE && c->scan_paused && !c->read_eof && c->msg_remain == 0 &&
		    client_scan_in(c, c->fwd, "X") == buf_len(&c->in)) {
			c->read_eof = true;
			client_update_poll(c);
			return;
		}
		client_close(c, "client closed the connection");
		return;
	}
	if (n < 0) {
		client_close(c, strerror((int)-n));
		return;
	}
	switch (c->state) {
	case CLIENT_STARTUP:
		if (client_startup_input(c) < 0)
			return;
		break;
	case CLIENT_ACTIVE:
		list_del(&c->wait_node);    /* not idle any more */
		client_active_input(c);
		return;
	case CLIENT_IDLE:
		if (client_sent_terminate(c)) {
			client_close(c, "client sent Terminate");
			return;
		}
		client_acquire(c);
		return;
	/* Both keep what they read until the server is ready; reading stops
	 * when the buffer is full. */
	case CLIENT_WAITING:
		client_wait_light(c);
		break;
	case CLIENT_LOGIN:
		break;
	}
	buf_give_block(&c->in, &c->w->bufs);    /* if it is empty */
	client_update_poll(c);
}

static void client_on_io(uv_poll_t *handle, int status, int events)
{
	struct client *c = handle->data;

	if (status < 0) {
		client_close(c, relay_socket_error(c->fd, status));
		return;
	}
	if ((events & UV_WRITABLE) && client_flush(c) < 0)
		return;
	if (events & UV_READABLE)
		client_read(c);
}

void client_granted(struct client *c, struct server *s)
{
	list_del(&c->wait_node);
	c->state = CLIENT_LOGIN;
	if (s != NULL)
		server_adopt(c->w, s, c);
	else
		server_connect(c->w, c->pool, c);
}

void client_server_ready(struct client *c)
{
	struct server *s = c->server;

	if (!c->logged_in && client_greet(c, s) < 0) {
		client_fatal(c, "53200", "login", "out of memory");
		return;
	}
	c->state = CLIENT_ACTIVE;
	s->state = SERVER_ACTIVE;
	log_debug("c%llu/w%d: on s%llu", (unsigned long long)c->id, c->w->id, (unsigned long long)s->id);
	if (buf_len(&c->in) > 0) {
		if (buf_len(&c->out) > 0 && client_flush(c) < 0)
			return;
		client_active_input(c);
		return;
	}
	if (client_flush(c) < 0 || client_maybe_done(c) < 0)
		return;
	if (c->state == CLIENT_ACTIVE)
		server_update_poll(c->server);
}

/* A client leaving at a drain boundary gets 57P01 after the answer it may
 * still have in out, never instead of part of it: then it is closed once
 * out is sent (or at drain_timeout). Returns true if it is closed now. */
static bool client_leave(struct client *c)
{
	if (buf_len(&c->out) == 0) {
		client_fatal(c, "57P01", "shutdown", "pgberth is shutting down");
		return true;
	}
	if (!c->leaving) {
		if (proto_put_error(&c->out, "FATAL", "57P01", "pgberth is shutting down", NULL) < 0) {
			client_close(c, "shutdown: out of memory");
			return true;
		}
		c->leaving = true;
		client_update_poll(c);
	}
	return false;
}

int client_maybe_done(struct client *c)
{
	struct server *s = c->server;
	struct worker *w = c->w;

	if (c->state != CLIENT_ACTIVE || s->replies_owed > 0 ||
	    s->fwd > 0 || s->msg_remain > 0 || buf_len(&s->in) > 0 || s->cancel != NULL ||
	    buf_len(&c->in) > 0 || c->msg_remain > 0)
		return 0;
	if (s->unsynced || s->copy_in) {
		client_note_waiting_on_client(c);   /* the server waits for the rest */
		return 0;
	}
	if (s->txstatus != 'I') {
		if (c->mode == POOL_STATEMENT) {
			client_fatal(c, "0A000", "statement mode",
			             "transaction blocks are not allowed in statement pooling mode");
			return -1;
		}
		list_del(&c->wait_node);
		c->wait_since = uv_now(&w->loop);
		list_add_tail(&w->idle_tx, &c->wait_node);
		return 0;
	}
	if (c->mode == POOL_SESSION) {
		list_del(&c->wait_node);
		c->wait_since = uv_now(&w->loop);
		list_add_tail(&w->idle_clients, &c->wait_node);
		return 0;
	}
	if (s->settings_dirty) {
		/* Its SETs follow it; back here once they are read. */
		if (server_capture_settings(s))
			return 0;
		s->settings_dirty = false;  /* they stay on this server only */
	}
	client_go_idle(c);
	server_done(s);     /* unlinks c; may hand s to a client waiting here */
	if (w->draining)
		return client_leave(c) ? -1 : 0;
	client_update_poll(c);
	return 0;
}

bool client_drain(struct client *c)
{
	bool busy;

	switch (c->state) {
	case CLIENT_ACTIVE: {
		/* A session idle between transactions is on idle_clients; one on
		 * idle_tx is in a transaction or mid extended query or COPY. A
		 * session busy now is let finish: it keeps its server until it
		 * disconnects (or drain_timeout), as its work may span several
		 * transactions. */
		const struct server *s = c->server;
		busy = !list_linked(&c->wait_node) || s->txstatus != 'I' || s->unsynced || s->copy_in;
		break;
	}
	case CLIENT_WAITING:
	case CLIENT_LOGIN:
		busy = c->logged_in;    /* a query waits for its server */
		break;
	default:
		busy = false;
		break;
	}
	if (busy)
		return false;
	return client_leave(c);
}

void client_note_waiting_on_client(struct client *c)
{
	struct server *s = c->server;

	/* Parse without Sync, or COPY data still to come: the server waits on
	 * the client, which is idle inside a transaction as far as timeouts go. */
	if (c->state == CLIENT_ACTIVE && buf_len(&c->in) == 0 && c->msg_remain == 0 &&
	    s->replies_owed == 0 && (s->unsynced || s->copy_in) && !list_linked(&c->wait_node)) {
		c->wait_since = uv_now(&c->w->loop);
		list_add_tail(&c->w->idle_tx, &c->wait_node);
	}
}

/* Lists are in wait_since order, so only their heads can have expired. */
static void client_sweep_list(struct list *l, uint64_t now, uint64_t timeout, const char *sqlstate,
                              const char *what)
{
	while (timeout > 0 && !list_empty(l)) {
		struct client *c = list_first(l, struct client, wait_node);
		if (now - c->wait_since < timeout)
			break;
		client_fatal(c, sqlstate, what, "terminating connection due to %s (%llu ms)", what,
		             (unsigned long long)timeout);
	}
}

void client_sweep(struct worker *w, uint64_t now)
{
	const struct config *cfg = w->cfg;

	client_sweep_list(&w->waits, now, cfg->query_wait_timeout_ms, "57014", "query_wait_timeout");
	client_sweep_list(&w->idle_clients, now, cfg->client_idle_timeout_ms, "57P05", "client_idle_timeout");
	client_sweep_list(&w->idle_tx, now, cfg->idle_transaction_timeout_ms, "25P03",
	                  "idle_transaction_timeout");
}

/* A cancel for a query still waiting for a server, or for the server's
 * settings (CLIENT_LOGIN): it never reaches one. The client gets what
 * PostgreSQL would answer (57014, then ReadyForQuery) for its first query,
 * a simple one or extended messages up to their Sync; what it sent after
 * that stays queued. Does nothing if there is no whole query there. */
static void client_cancel_queued(struct client *c)
{
	size_t n = client_scan_in(c, 0, "QFS");

	if (n == 0)
		return;
	log_info("c%llu/w%d: cancel request: its query was still waiting for a server",
	         (unsigned long long)c->id, c->w->id);
	buf_consume(&c->in, n);
	if (proto_put_error(&c->out, "ERROR", "57014", "canceling statement due to user request",
	                    NULL) < 0 || proto_put_ready(&c->out, 'I') < 0) {
		client_fatal(c, "53200", "cancel", "out of memory");
		return;
	}
	/* Still waiting with nothing left to send: out of the queue. A grant
	 * on its way (pool_cancel_wait false) finds it waiting, and the
	 * server goes back to the pool once its settings are done. */
	if (c->state == CLIENT_WAITING && buf_len(&c->in) == 0 &&
	    pool_cancel_wait(&c->w->rt->pools, c->pool, &c->waiter))
		client_go_idle(c);
	if (client_flush(c) < 0 || c->state != CLIENT_IDLE)
		return;
	if (c->w->draining)
		(void)client_leave(c);
	else if (client_sent_terminate(c) || c->read_eof)
		client_close(c, "client sent Terminate");
}

bool client_cancel(struct client *c, int32_t key, const struct cancel_from *from)
{
	if (key != c->cancel_key) {
		log_warn("c%llu/w%d: cancel request with a wrong key ignored",
		         (unsigned long long)c->id, c->w->id);
		return false;
	}
	if (c->state == CLIENT_ACTIVE && c->server->replies_owed > 0)
		return server_cancel(c->server, from);
	if ((c->state == CLIENT_WAITING || c->state == CLIENT_LOGIN) && c->logged_in)
		client_cancel_queued(c);
	return false;
}
