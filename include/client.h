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
#include "list.h"
#include "pool.h"
#include "proto.h"

struct worker;
struct server;

enum client_state {
	CLIENT_STARTUP,             /* worker->clients; reading the startup packet */
	CLIENT_WAITING,             /* pool->waiters; no server yet */
	CLIENT_LOGIN,               /* client->server is connecting or applying settings */
	CLIENT_ACTIVE,              /* relaying with client->server */
};

struct client {
	struct list node;           /* worker->clients */
	struct list login_node;     /* worker->logins until logged in */
	uint64_t login_deadline;    /* uv_now() ms by which it must be logged in */
	uint64_t id;                /* "c42" in logs */
	uint32_t slot;              /* worker slot, behind the BackendKeyData pid */
	int32_t cancel_key;         /* BackendKeyData secret we issued */
	struct worker *w;           /* owner */
	enum client_state state;

	int fd;                     /* owned; closed in the poll close callback */
	uv_poll_t *poll;            /* owned; freed in its close callback */
	int poll_events;            /* events the poll is started with */

	struct buf in;              /* bytes read from the client, not yet sent on */
	struct buf out;             /* messages pgberth itself owes the client */
	size_t fwd;                 /* bytes at the front of in scanned and cleared to forward */
	uint32_t msg_remain;        /* bytes of the message being scanned not yet cleared */

	char *user;                 /* from the startup packet; owned */
	char *dbname;               /* owned */
	uint8_t *startup;           /* copy of the startup packet until login is done; owned */
	struct startup *st;         /* parsed from startup, pointing into it; owned */
	struct buf setup;           /* SQL text of the client's settings, built per server */
	struct pool *pool;          /* attached pool, or NULL */
	struct pool_waiter waiter;  /* linked on pool->waiters while CLIENT_WAITING */
	struct server *server;      /* linked server from login to close, or NULL */
	bool terminated;            /* sent Terminate: its last query may finish */
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
/* The client's server finished login and setup: greet the client. */
void client_login_done(struct client *c);
/* A CancelRequest named this client. */
void client_cancel(struct client *c, int32_t key);

/* SQL that applies the client's startup parameters on its server, skipping
 * what the server already has: "" if nothing to do, NULL on out-of-memory
 * or bad options. Valid until the next call or the end of login. */
const char *client_setup_sql(struct client *c);

/* Re-arms the poll with what the client wants now: readable unless its
 * input is full, writable while output is pending. */
void client_update_poll(struct client *c);
/* Writes what is owed to the client. Returns 0, or -1 if the client is gone
 * (it has then been closed). */
int client_flush(struct client *c);

#endif
