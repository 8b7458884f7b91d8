/*
 * Shared pool registry: the only state the worker threads share. One pool
 * per (database, user) holds the server count, the parked idle servers and
 * the FIFO of waiting clients. Lock: registry mtx, held only inside this
 * module; no I/O and no libuv call happens under it. The functions return
 * what the caller must do next (a handoff to post to a worker) instead of
 * doing it, which keeps this module free of threads' business and lets the
 * unit tests drive it directly.
 *
 * Servers are opaque here (void *): the registry only stores and hands them
 * on. A server counted in a pool keeps that pool alive; so does a client
 * attached to it. A pool with neither is freed, so pools created for
 * arbitrary user names do not accumulate.
 */
#ifndef PGBERTH_POOL_H
#define PGBERTH_POOL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "list.h"

struct db_config;

/* A client waiting for a server. Embedded in the client; linked only under
 * the registry lock. */
struct pool_waiter {
	struct list node;           /* pool->waiters while waiting */
	int worker;                 /* index of the worker that owns the client */
	uint32_t slot;              /* the client's slot on that worker */
	uint64_t client_id;         /* checked against the slot's client */
};

/* What a caller must deliver: a server (or, when server is NULL, the right
 * to open a new connection) for client_id on worker. */
struct pool_handoff {
	int worker;
	uint32_t slot;
	uint64_t client_id;
	void *server;
};

struct pool {
	struct list node;           /* registry->pools */
	char *dbname;
	char *user;
	const struct db_config *db;
	int size;                   /* cap on nservers */
	int nservers;               /* connecting + in use + idle + draining */
	void **idle;                /* parked servers, most recent last */
	int nidle;
	struct list waiters;        /* struct pool_waiter, FIFO */
	int nwaiters;
	int nclients;               /* clients attached */
};

struct pool_registry {
	pthread_mutex_t mtx;
	struct list pools;
};

enum pool_result {
	POOL_GOT_IDLE,              /* *server is yours */
	POOL_MAY_CONNECT,           /* a slot is reserved: open a new server */
	POOL_MUST_WAIT,             /* waiter is queued; a handoff will come */
};

void pool_registry_init(struct pool_registry *reg);
/* Frees every pool; free_server is called for each parked server. Only when
 * no thread uses the registry any more. */
void pool_registry_destroy(struct pool_registry *reg, void (*free_server)(void *));

/* Finds or creates the pool for (db, user) and counts the client in it.
 * Returns NULL on out-of-memory. */
struct pool *pool_attach(struct pool_registry *reg, const struct db_config *db,
                         const char *user, int size);
/* Uncounts a client; the caller must have cancelled its wait first. */
void pool_detach(struct pool_registry *reg, struct pool *pool);

enum pool_result pool_acquire(struct pool_registry *reg, struct pool *pool,
                              struct pool_waiter *waiter, void **server);
/* Takes a waiter off the queue. Returns false if it was not queued any more:
 * a handoff for it is then on its way and the receiver must pass it on. */
bool pool_cancel_wait(struct pool_registry *reg, struct pool *pool,
                      struct pool_waiter *waiter);

/* A clean server comes back. Returns true with *out filled when it goes to
 * the head waiter, false when it was parked idle. */
bool pool_release(struct pool_registry *reg, struct pool *pool, void *server,
                  struct pool_handoff *out);
/* A server (or a reserved slot) is gone. Returns true with *out filled
 * (server NULL) when the freed slot goes to the head waiter. */
bool pool_server_closed(struct pool_registry *reg, struct pool *pool,
                        struct pool_handoff *out);

/* Counts for tests and status lines. */
void pool_counts(struct pool_registry *reg, struct pool *pool,
                 int *nservers, int *nidle, int *nwaiters);

#endif
