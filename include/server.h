/*
 * Server connections: libpq connections to PostgreSQL, opened without
 * blocking (PQconnectStartParams + PQconnectPoll on a uv_poll_t), then used
 * as a raw protocol socket. A server is owned by one worker while it has uv
 * handles, and by its pool while parked idle (no handles, only the PGconn).
 */
#ifndef PGBERTH_SERVER_H
#define PGBERTH_SERVER_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "list.h"
#include "pstmt.h"

struct runtime;
struct server;
struct worker;
struct client;
struct cancel_req;
struct connect_req;
struct pool;
struct pool_handoff;
struct cancel_from;

enum server_state {
	SERVER_CONNECTING,          /* worker->servers; libpq login running */
	SERVER_INTERNAL,            /* worker->servers; a query of pgberth's own */
	SERVER_ACTIVE,              /* worker->servers; relaying for server->client */
	SERVER_DRAIN,               /* worker->servers; client gone, reading until ReadyForQuery */
	SERVER_IDLE,                /* pool->idle and worker->idle_servers, poll watching for EOF;
	                               or in transit between workers (w NULL, no handles) */
	SERVER_MOVING,              /* taken from pool->idle by another worker; waits for its MSG_MIGRATE */
};

#define SERVER_MAX_PARAMS 32
#define FENCE_AT_BOUNDARY 1
#define FENCE_AFTER_SYNC 2
#define SETTINGS_UNKNOWN UINT64_MAX

/* Session state a client can leave on a server connection beyond its
 * transaction (seen by the relay: a named Parse, command tags). Another
 * client must not see it: server_setup drops it first. */
enum {
	LEFT_STATEMENTS = 1,        /* named prepared statements: DEALLOCATE ALL */
	LEFT_LISTEN = 2,            /* LISTEN: UNLISTEN * */
	LEFT_CURSORS = 4,           /* WITH HOLD cursors (DECLARE): CLOSE ALL */
	LEFT_TEMP = 8,              /* CREATE [TEMP] TABLE: DISCARD TEMP */
};
/* s now carries the unreported settings of client of (its extra of
 * generation gen), which are sql (NULL: not known), or none (of 0), or
 * ones nobody knows (SETTINGS_UNKNOWN). */
void server_settings_are(struct server *s, uint64_t of, uint32_t gen, const char *sql);
/* At the end of a transaction in which the client ran SET or RESET: reads
 * the server's session settings back into client->extra, so that they
 * follow the client to its next server; then client_server_ready. The
 * query goes out at the end of this loop iteration. Returns false if it
 * could not be queued (out of memory): nothing changed. */
bool server_capture_settings(struct server *s);

/* Notes that s's client (id) left state of kind what on it. */
void server_left(struct server *s, uint64_t id, unsigned what);

/* Reported parameters a client may set, which pgberth re-applies when the
 * client moves to another server. The others a server reports
 * (server_version, is_superuser, ...) cannot differ between its servers. */
#define NREAPPLIED 8
extern const char *const server_reapplied[NREAPPLIED];

struct server_param {
	char *name;                 /* owned */
	char *value;                /* owned */
};

typedef void (*server_done_fn)(struct server *s, bool ok);

struct server {
	struct list node;           /* worker->servers while it has handles */
	struct list idle_node;      /* worker->idle_servers while SERVER_IDLE on a loop */
	struct list flush_node;     /* worker->server_flushes while it is on it */
	uint64_t id;                /* "s7" in logs */
	struct runtime *rt;
	struct worker *w;           /* owning worker, NULL while parked */
	struct pool *pool;          /* the pool that counts it */
	struct client *client;      /* linked client, or NULL */
	enum server_state state;

	PGconn *conn;               /* owned; PQfinish after the poll handle closed */
	struct connect_req *connecting; /* login starting on the thread pool (DNS), or NULL */
	struct cancel_req *cancel;  /* PQcancel running on the thread pool, or NULL */
	int fd;                     /* PQsocket(conn), or -1 */
	uv_poll_t *poll;            /* owned while on a worker; freed in its close callback */
	int poll_events;
	uv_timer_t *timer;          /* deadline of the current step; owned, or NULL */

	struct buf in;              /* bytes read from the server, not yet sent on */
	struct buf out;             /* queries pgberth itself sends */
	size_t fwd;                 /* bytes at the front of in scanned and cleared to forward */
	uint32_t msg_remain;        /* bytes of the message being scanned not yet cleared */
	char txstatus;              /* status of the last ReadyForQuery: I, T or E */
	uint32_t replies_owed;      /* Query/Sync/FunctionCall sent minus ReadyForQuery seen */
	bool unsynced;              /* extended-query messages sent since the last Sync */
	bool copy_in;               /* in COPY FROM STDIN: Syncs are ignored by PostgreSQL */
	uint8_t fence_wanted;       /* a fence (pstmt.h) goes in: FENCE_AT_BOUNDARY of the
	                               client's messages, or FENCE_AFTER_SYNC of its */
	char last_run;              /* the client's last Execute, Query or FunctionCall */
	bool last_sync;             /* the client's last message sent was a Sync */
	unsigned gen;               /* pool gen at connect: an older one is never reused */
	uint64_t born_ms;           /* uv_now at connect, for server_lifetime */
	uint64_t idle_since_ms;     /* uv_now when it last went idle */
	uint64_t settings_of;       /* client whose non-reported settings it carries, 0 if none,
	                               SETTINGS_UNKNOWN after a client's own SET or RESET */
	uint32_t settings_gen;      /* settings_of's extra_gen they are */
	char *settings_sql;         /* those settings as client->extra has them, if known; owned */
	bool setup_extra;           /* the running setup applies the client's extra */
	bool settings_dirty;        /* its client ran SET or RESET: read them back at release */
	bool capture_private;       /* the read back has a setting it cannot carry (too long) */
	struct buf capture;         /* the settings read back so far, as set_config SQL */
	struct pstmt_cache stmts;   /* the statements it holds, as pgberth_<hash> */
	struct pstmt_queue replies; /* an entry for each message sent that is owed a reply */
	/* The unnamed statement, and the unnamed portal, when they are a
	 * client's DEALLOCATE or DISCARD ALL in an extended query (relay.c):
	 * the statement it drops (a reference), or NULL for all of them. */
	bool drop_stmt_set, drop_portal_set;
	struct pstmt *drop_stmt, *drop_portal;
	bool last_fatal;            /* the last message relayed was a FATAL ErrorResponse */
	bool said_why;              /* closed right after relaying an ErrorResponse (a FATAL) */
	uint64_t left_by;           /* client whose session state (left) it holds */
	unsigned left;              /* LEFT_* of that client's, dropped before another's use */
	bool setup_for_client;      /* the running internal query applies the client's settings */
	bool params_checked;        /* reval is current (cleared by server_set_param) */
	const char *reval[NREAPPLIED]; /* values of server_reapplied[] in params, or NULL */
	struct pool_handoff *moving_to; /* where it goes once its handles are closed; owned */

	const char *deadline_what;  /* what the timer's expiry means, for the log */
	server_done_fn done;        /* continuation of the running internal query */
	char *error;                /* first ErrorResponse body of an internal query; owned */
	size_t error_len;

	struct server_param params[SERVER_MAX_PARAMS];
	int nparams;                /* reported parameters, kept current */
};

/* Opens a new server for client c (state CLIENT_LOGIN) on w, or a spare one
 * for the pool when c is NULL (min_pool_size). The pool slot was reserved
 * by the caller. */
void server_connect(struct worker *w, struct pool *pool, struct client *c);
/* Adopts a server for client c on w and starts its setup: one idle on w
 * itself, or one that arrived from another worker without handles. */
void server_adopt(struct worker *w, struct server *s, struct client *c);
/* The client's transaction is over and s is clean: back to the pool (idle
 * here, or straight to the head waiter). s is unlinked from its client. */
void server_done(struct server *s);
/* MSG_MIGRATE: s, idle on w, was acquired for a client elsewhere (h). */
void server_migrate(struct worker *w, struct server *s, const struct pool_handoff *h);
/* Janitor: closes idle servers past server_idle_timeout or server_lifetime. */
void server_sweep_idle(struct worker *w, uint64_t now);
/* Runs sql as a simple Query; done(s, ok) is called at ReadyForQuery. */
void server_query(struct server *s, const char *sql, server_done_fn done);
/* The client is leaving: make the server clean (drain, rollback, reset) and
 * give it back to the pool, or close it if that cannot be done safely.
 * cancel: a query of the client's still running is cancelled (a client that
 * vanished); without it (the client said Terminate) it runs to its end, as
 * it would on a direct connection. */
void server_release(struct server *s, bool cancel);
/* Closes and frees, giving the slot back to the pool. Logs reason. */
void server_close(struct server *s, const char *reason);
/* Frees a parked server (no handles) without touching its pool. */
void server_free_parked(void *server);
/* Delivers a pool handoff, falling through to the next waiter when the
 * target worker no longer takes messages. */
void server_handoff(struct runtime *rt, struct pool_handoff *h);
/* Runs PQcancel for the server's current query on the thread pool. from,
 * if not NULL, is the connection that asked for it: it is told once
 * PQcancel has returned, and the call returns true. It returns false when
 * from was not taken (no cancel could start, or the one already on its
 * way has four requesters waiting), and the caller tells from itself. */
bool server_cancel(struct server *s, const struct cancel_from *from);

const char *server_param(const struct server *s, const char *name);
/* Index of name (any case) in server_reapplied, or -1. */
int server_reapplied_index(const char *name);
/* Records a ParameterStatus; returns -1 on out-of-memory. */
int server_set_param(struct server *s, const char *name, const char *value);

/* Re-arms the poll: readable unless input is full, writable while output
 * (its own or the client's) is pending. -1 if that failed (s and its
 * client were then closed). */
int server_update_poll(struct server *s);
/* Writes what is owed to the server. 0, or -1 if it failed (server closed). */
int server_flush(struct server *s);
/* server_flush, but once this loop iteration's I/O callbacks are done, with
 * the other queries of the iteration: PostgreSQL's backends are woken in
 * one burst, and the pooler is not preempted by each of them in turn. */
void server_flush_later(struct server *s);

#endif
