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
 *
 * An idle server stays on the worker that parked it, with its poll handle
 * (so a worker reuses its own idle servers without touching epoll); the
 * registry records which worker that is. A client on another worker that
 * gets it must ask that worker to hand it over (MSG_MIGRATE).
 *
 * Limits: pool_size per pool, plus reserve_pool_size for a client that has
 * waited reserve_pool_timeout (pool_reserve_sweep), and max_db_connections
 * over all pools of one database. A freed slot goes to its own pool's head
 * waiter first, else (under the database cap) to the pool of that database
 * whose head waiter has waited longest.
 *
 * min_pool_size keeps a pool's spare servers open, and so the pool alive,
 * after its last client left, as PgBouncer keeps its pools.
 */
#ifndef PGBERTH_POOL_H
#define PGBERTH_POOL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "list.h"

struct config;
struct db_config;

/* A client waiting for a server. Embedded in the client; linked only under
 * the registry lock. */
struct pool_waiter {
	struct list node;           /* pool->waiters while waiting */
	int worker;                 /* index of the worker that owns the client */
	uint32_t slot;              /* the client's slot on that worker */
	uint64_t client_id;         /* checked against the slot's client */
	uint64_t since_ms;          /* when it started waiting (the loop time, uv_now, of its worker) */
	int idle_owner;             /* out: worker holding the idle server acquired */
};

/* What a caller must deliver: a server (or, when server is NULL, the right
 * to open a new connection) for client_id on worker. */
struct pool_handoff {
	struct pool *pool;          /* the pool the server or slot counts in */
	int worker;
	uint32_t slot;
	uint64_t client_id;
	void *server;
	int idle_owner;             /* with server, from pool_serve_waiters: whose loop has it */
};

struct pool_idle {
	void *server;
	int worker;                 /* whose loop holds the server's handles */
};

struct pool_dbcount {
	struct list node;           /* registry->dbs */
	char *dbname;
	int nservers;               /* over all pools of the database */
	int npools;                 /* pools pointing here; freed at 0 */
};

struct pool {
	struct list node;           /* registry->pools */
	char *dbname;
	char *user;
	const struct db_config *db; /* in reg->cfg, or in hold once retired; read with pool_db */
	struct config *hold;        /* retired: the snapshot db points into; one reference */
	bool retired;               /* its database left the config: takes no new clients */
	atomic_uint gen;            /* bumped when a reload changes the conninfo */
	int size;                   /* cap on nservers */
	int reserve;                /* more servers allowed for long waiters */
	int max_db;                 /* cap on dbc->nservers, 0 for none */
	struct pool_dbcount *dbc;
	int nservers;               /* connecting + in use + idle + draining */
	int retiring;               /* of nservers: taken by pool_take_idle_spare, not yet closed */
	struct pool_idle *idle;     /* parked servers, most recent last; idle_cap long */
	int idle_cap;
	int nidle;
	char *defaults;             /* server parameters at login, "name\0value\0"...; set once
	                               per gen */
	size_t defaults_len;
	char **old_defaults;        /* those of older gens: clients may still point into them */
	int nold_defaults;
	struct list waiters;        /* struct pool_waiter, FIFO */
	int nwaiters;
	int nclients;               /* clients attached */
};

struct pool_registry {
	pthread_mutex_t mtx;
	struct list pools;
	struct list dbs;            /* struct pool_dbcount */
	struct config *cfg;         /* the snapshot pools follow; one reference, or NULL */
	bool paused;                /* SIGUSR1: no server or slot goes to a client */
};

enum pool_result {
	POOL_GOT_IDLE,              /* *server is yours; it is on waiter->idle_owner's loop */
	POOL_MAY_CONNECT,           /* a slot is reserved: open a new server */
	POOL_MUST_WAIT,             /* waiter is queued; a handoff will come */
};

void pool_registry_init(struct pool_registry *reg);
/* Frees every pool; free_server is called for each parked server. Only when
 * no thread uses the registry any more. */
void pool_registry_destroy(struct pool_registry *reg, void (*free_server)(void *));

/* Finds or creates the pool for (db, user) and counts the client in it.
 * With a registry config, db is looked up again in it by name (the
 * caller's snapshot may be a reload behind) and size follows it. Returns
 * NULL on out-of-memory (errno ENOMEM) or when the database is not in the
 * registry's config any more (ENOENT). */
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

enum pool_release_result {
	POOL_PARKED = 0,            /* idle in the pool, on the releasing worker */
	POOL_HANDED = 1,            /* *out: give it to that waiter */
	POOL_SURPLUS = 2,           /* over pool_size (a reserve server): close it */
};

/* A clean server comes back from worker. */
enum pool_release_result pool_release(struct pool_registry *reg, struct pool *pool, void *server,
                                      int worker, struct pool_handoff *out);
/* For a pool whose waiters are held back by max_db_connections: takes an
 * idle server of another pool of the same database out of its pool, to be
 * closed by its owner worker (*owner), which frees a slot for the waiters.
 * NULL if there is none. */
void *pool_evict_idle(struct pool_registry *reg, struct pool *pool, int *owner);
/* Takes a particular idle server out of the pool (to close or check it).
 * False if it is not idle any more: another worker acquired it (a
 * MSG_MIGRATE for it is on its way to the owner) or evicted it (MSG_EVICT). */
bool pool_take_idle(struct pool_registry *reg, struct pool *pool, void *server);

/* For server_idle_timeout: takes an idle server out of the pool to be
 * closed, only if the pool has more than keep (min_pool_size) servers
 * besides those already being closed this way. The check and the take are
 * one step under the lock, so that janitors on two workers cannot both
 * close the servers that min_pool_size keeps. After closing it (without
 * giving the slot back), the caller calls pool_spare_closed, which gives
 * the slot up and may hand it on, as pool_server_closed does. */
enum pool_spare {
	POOL_SPARE_TAKEN,           /* out of the pool; counted in retiring until closed */
	POOL_SPARE_KEPT,            /* still idle: the pool is at keep */
	POOL_SPARE_GONE,            /* not idle any more (as pool_take_idle's false) */
};
enum pool_spare pool_take_idle_spare(struct pool_registry *reg, struct pool *pool, void *server,
                                     int keep);
bool pool_spare_closed(struct pool_registry *reg, struct pool *pool, struct pool_handoff *out);

/* Server parameters of a fresh login, for clients that log in without a
 * server. The first call for the pool's current gen stores blob (taking
 * ownership), later ones free it; pool_defaults returns NULL until then. A
 * blob is freed only with the pool: a reload that changes the conninfo
 * starts a new one, as the new servers may report other values. */
void pool_set_defaults(struct pool_registry *reg, struct pool *pool, unsigned gen, char *blob,
                       size_t len);
const char *pool_defaults(struct pool_registry *reg, struct pool *pool, size_t *len);

/* Grants reserve slots to head waiters that started waiting before cutoff.
 * Fills up to max handoffs (server NULL) and returns how many. */
int pool_reserve_sweep(struct pool_registry *reg, uint64_t cutoff_ms,
                       struct pool_handoff *out, int max);
/* For min_pool_size: reserves a slot in some pool below its minimum and
 * returns that pool, or NULL. */
struct pool *pool_spare_needed(struct pool_registry *reg);
/* A server (or a reserved slot) is gone. Returns true with *out filled
 * (server NULL) when the freed slot goes to the head waiter. */
bool pool_server_closed(struct pool_registry *reg, struct pool *pool,
                        struct pool_handoff *out);

/*
 * Reload. The registry follows cfg from now on: every pool whose database
 * is still there takes the new limits in place (and a new gen if its
 * conninfo changed: servers of an older gen are closed, never reused);
 * a pool whose database is gone is retired. Takes a reference to cfg.
 * Waiters that the new limits let in are served by pool_serve_waiters.
 * Returns -1 on out-of-memory (nothing changed).
 */
int pool_registry_set_config(struct pool_registry *reg, struct config *cfg);
/* The pool's database entry and gen, read under the lock. The entry stays
 * valid until the caller's worker has applied the next reload; for longer
 * (work queued on the thread pool), ask for *ref: a reference to the
 * snapshot holding it, for config_unref (NULL without a registry config). */
const struct db_config *pool_db(struct pool_registry *reg, struct pool *pool, unsigned *gen,
                                struct config **ref);
static inline unsigned pool_gen(struct pool *pool) { return atomic_load(&pool->gen); }
/* Should an idle server of gen be closed rather than kept: an older gen, a
 * retired pool with no clients left, or more servers than pool_size? */
bool pool_idle_unwanted(struct pool_registry *reg, struct pool *pool, unsigned gen);

/* Pause (SIGUSR1): clients queue and nothing is handed out, not even a
 * released server; resuming leaves the queues to pool_serve_waiters. */
void pool_set_paused(struct pool_registry *reg, bool paused);
/* Serves waiters that may go now, longest waiting first across pools:
 * each gets an idle server (server set, on idle_owner's loop) or a slot to
 * connect (server NULL). Fills up to max handoffs and returns how many;
 * call again while it returns max. */
int pool_serve_waiters(struct pool_registry *reg, struct pool_handoff *out, int max);

/* For waiters held back only by max_db_connections when nothing was
 * evicted for them (they queued while paused, or a reload lowered the
 * cap): takes one idle server of a sibling pool out for each such pool,
 * to be closed by its owner. Fills up to max and returns how many. */
int pool_evict_for_waiters(struct pool_registry *reg, struct pool_idle *out, int max);

/* Totals over every pool, for the service status line. */
void pool_totals(struct pool_registry *reg, int *nservers, int *nidle, int *nwaiters);

/* Counts for tests and status lines. */
void pool_counts(struct pool_registry *reg, struct pool *pool,
                 int *nservers, int *nidle, int *nwaiters);

#endif
