/*
 * Client connections: the application side. A client is read from its
 * startup packet to its last byte by one worker; its state says which list
 * or queue it is on. Every close goes through client_close with a reason.
 */
#ifndef PGBERTH_CLIENT_H
#define PGBERTH_CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "config.h"
#include "list.h"
#include "pool.h"
#include "proto.h"
#include "server.h"

struct worker;
struct server;

enum client_state {
	CLIENT_STARTUP,             /* worker->clients; reading the startup packet */
	CLIENT_WAITING,             /* pool->waiters and worker->waits; no server yet */
	CLIENT_LOGIN,               /* client->server is connecting or applying settings */
	CLIENT_ACTIVE,              /* relaying with client->server */
	CLIENT_IDLE,                /* logged in, no server (transaction/statement mode);
	                               worker->idle_clients */
};

struct client {
	struct list node;           /* worker->clients */
	struct list login_node;     /* worker->logins until logged in */
	uint64_t login_deadline;    /* uv_now() ms by which it must be logged in */
	uint64_t accepted;          /* uv_now() ms of its connect, for the churn count */
	struct list wait_node;      /* worker->waits, idle_clients or idle_tx */
	struct list flush_node;     /* worker->flushes while it is on it */
	uint64_t wait_since;        /* uv_now() ms it went on that list */
	uint64_t id;                /* "c42" in logs */
	uint32_t slot;              /* worker slot, behind the BackendKeyData pid */
	int32_t cancel_key;         /* BackendKeyData secret we issued */
	struct worker *w;           /* owner */
	enum client_state state;
	enum pool_mode mode;        /* when the server goes back to the pool */
	bool logged_in;             /* greeted: AuthenticationOk ... ReadyForQuery sent */
	bool terminated;            /* sent Terminate: its last query may finish */
	bool leaving;               /* drain: 57P01 queued after its last answer; closed once out is sent */
	bool cancel_sent;           /* a CancelRequest connection, open until it was carried out */
	size_t in_want;             /* a Parse read whole: its size (client_in_max) */
	bool scan_paused;           /* input left unscanned: what was cleared is long (relay_scan_client) */
	bool write_dead;            /* a write failed: replies are dropped until its input ends */
	bool read_eof;              /* closed its end after Terminate while waiting: no more reads */
	bool track;                 /* transaction or statement mode: its named statements are
	                               kept in stmts and renamed on servers (pstmt.h) */
	bool untracked_warned;      /* logged that a Parse went through untracked */
	struct pstmt_map stmts;     /* by the client's names */
	char *stmt_key;             /* its settings as statements are keyed by; owned */
	size_t stmt_key_len;
	bool stmt_key_ok;           /* stmt_key is current (for extra of stmt_key_gen) */
	uint32_t stmt_key_gen;
	uint64_t stmt_private;      /* statements parsed under settings not yet known */

	int fd;                     /* owned; closed in the poll close callback */
	uv_poll_t *poll;            /* owned; freed in its close callback */
	int poll_events;            /* events the poll is started with */

	struct buf in;              /* bytes read from the client, not yet sent on */
	struct buf out;             /* owed to the client before anything else: pgberth's own
	                             * messages, or a server's last answer (its whole block,
	                             * handed over so that the server could go back to the pool) */
	size_t fwd;                 /* bytes at the front of in scanned and cleared to forward */
	uint32_t msg_remain;        /* bytes of the message being scanned not yet cleared */

	char *user;                 /* from the startup packet; owned */
	char *dbname;               /* owned */
	uint8_t *startup;           /* copy of the startup packet until it is parsed; owned */
	struct startup *st;         /* parsed from startup, pointing into it; owned */
	/* The client's settings, applied on every server it gets. Reported
	 * parameters (client_encoding, DateStyle, ...) the client has other
	 * than the pool's defaults, as "name\0value\0"...: its startup values
	 * and what the server reported while it was the client's. */
	char *view;                 /* owned, or NULL */
	uint32_t view_len;
	char *extra_startup;        /* extra as the startup packet made it, for DISCARD ALL; owned */
	char *extra_hidden;         /* the part of it pg_settings cannot show (role, names with
	                             * a '.'), kept when extra is read back; owned */
	uint32_t extra_gen;         /* bumped whenever extra changes */
	char *extra;                /* SET statements for startup settings the server does
	                               not report; owned, or NULL */
	const char *want[NREAPPLIED]; /* its value of each server_reapplied[], into view or defaults */
	bool want_ok;               /* want is current (cleared when view changes) */
	const char *defaults;       /* the pool's (pool_defaults), or NULL until known */
	size_t defaults_len;
	struct pool *pool;          /* attached pool, or NULL */
	struct pool_waiter waiter;  /* linked on pool->waiters while CLIENT_WAITING */
	struct server *server;      /* linked server, or NULL */
};

/* Takes ownership of an accepted fd. */
void client_accept(struct worker *w, int fd);
/* Logs reason once, detaches the server (which goes back to the pool or is
 * closed) and releases everything. */
void client_close(struct client *c, const char *reason);
/* Sends a FATAL ErrorResponse, then closes. */
void client_fatal(struct client *c, const char *sqlstate, const char *reason,
                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* The pool handed this client a server, or a slot to connect one (NULL). */
void client_granted(struct client *c, struct server *s);
/* The client's server finished login and setup: greet the client if that
 * is still to do, and relay. */
void client_server_ready(struct client *c);
/* Checks whether the client's server has answered everything: then, by
 * pool mode, the server goes back to the pool, or the client is idle (in a
 * transaction or not) for the timeouts. -1 if the client was closed (a
 * transaction block in statement mode). */
int client_maybe_done(struct client *c);
/* The client's bytes are all sent and its server waits for more of an
 * extended query or COPY: for the timeouts, it is idle in a transaction. */
void client_note_waiting_on_client(struct client *c);
/* The server reported a parameter while applying or running the client's
 * statements: it is the client's setting now. -1 on out-of-memory. */
int client_param_changed(struct client *c, const char *name, const char *value);
/* Drain: closes the client with 57P01 now unless it is in the middle of
 * something (a transaction, a query, a query waiting for a server). Then a
 * transaction or statement mode client is closed when that ends
 * (client_maybe_done); a busy session lasts until the client leaves.
 * Returns true if it was closed. */
bool client_drain(struct client *c);
/* Janitor: closes clients past client_idle_timeout, idle_transaction_timeout
 * and query_wait_timeout. */
void client_sweep(struct worker *w, uint64_t now);
/* Its settings read back from its server (SQL, or NULL for none) replace
 * extra, but for extra_hidden. Returns -1 on out of memory (unchanged). */
int client_settings_read_back(struct client *c, const char *sql, size_t len);
/* The client's settings as its statements are keyed by (pstmt_new): *len
 * bytes, valid until they change. NULL on out of memory. */
const char *client_stmt_settings(struct client *c, size_t *len);
/* Its server ran DISCARD ALL: extra is the startup packet's again. */
void client_settings_discarded(struct client *c);

/* A CancelRequest from the connection at from named this client. Returns
 * true if from will be told when the cancel has been carried out (see
 * server_cancel); false if there was nothing to cancel. */
bool client_cancel(struct client *c, int32_t key, const struct cancel_from *from);

/* SQL that gives server s the client's settings, skipping what s already
 * has: "" if nothing to do, NULL on out-of-memory. *reset_first is set when
 * s carries another client's unreported settings: RESET ALL must run first.
 * Valid until the worker's next use of its scratch buffer. */
const char *client_setup_sql(struct client *c, struct server *s, bool *reset_first);

/* Re-arms the poll with what the client wants now: readable unless its
 * input is full, writable while output is pending. */
void client_update_poll(struct client *c);
/* Writes what is owed to the client. Returns 0, or -1 if the client is gone
 * (it has then been closed). */
int client_flush(struct client *c);
/* client_flush, but once this loop iteration's I/O callbacks are done:
 * the answers read in one pass over the ready sockets go out back to back,
 * and a client that polls many connections finds more of them ready each
 * time it wakes. From any callback of the worker's loop
 * (worker_flush_soon keeps the poll from blocking first). */
void client_flush_later(struct client *c);

#endif
