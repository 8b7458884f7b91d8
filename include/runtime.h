/*
 * The daemon's shared context: the config snapshot, the pool registry and
 * the workers. Created by the main thread before any worker starts and
 * freed after every worker has finished; if a worker does not finish within
 * shutdown_timeout the process exits without freeing it (see lifecycle.c).
 */
#ifndef PGBERTH_RUNTIME_H
#define PGBERTH_RUNTIME_H

#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "pool.h"

struct config;
struct worker;

struct runtime {
	struct config *cfg;         /* main thread's current snapshot; one reference held.
	                               Workers use their own (worker->cfg). */
	struct pool_registry pools;
	struct worker *workers;
	int nworkers;
	atomic_uint_fast64_t next_id;   /* ids for clients and servers in logs */
	atomic_int nclients;        /* client connections open, for max_client_conn */
	atomic_uint short_sessions; /* logged-in clients gone within CHURN_SESSION_MS of their
	                               connect, since worker 0's last janitor tick */
	atomic_bool churning;       /* worker 0 saw churn: accept_spread churn spreads */
	atomic_int acceptor;        /* 1 + id of the worker that always accepts (listener_start);
	                               0: none, every worker accepts */

	uv_mutex_t life_mtx;        /* guards worker->finished and nfinished */
	int nfinished;
	uv_async_t *worker_done;    /* main loop's doorbell, rung by a finishing worker */
	uv_async_t *drained;        /* rung by a draining worker whose last client left */
	uv_async_t *reloaded;       /* rung by a worker that applied a MSG_CONFIG */
};

static inline uint64_t runtime_next_id(struct runtime *rt)
{
	return atomic_fetch_add(&rt->next_id, 1) + 1;
}

#endif
