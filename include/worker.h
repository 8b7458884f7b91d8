/*
 * Worker threads. Each worker owns a uv loop and every client and server
 * handle on it; nothing outside the thread touches them. Other threads talk
 * to a worker only through its inbox: a mutex-guarded FIFO of messages and
 * a uv_async_t doorbell. uv_async_send coalesces, so the doorbell callback
 * empties the whole queue. Messages carry ids, not pointers to the
 * receiver's objects, and the receiver expects the object may be gone.
 */
#ifndef PGBERTH_WORKER_H
#define PGBERTH_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "list.h"

struct config;
struct runtime;
struct server;
struct client;
struct pool;

enum msg_type {
	MSG_LISTEN,                 /* fd: a dup of the listening socket, to accept on */
	MSG_GRANT,                  /* pool handoff: server (or NULL = may connect) for client_id */
	MSG_MIGRATE,                /* a client elsewhere acquired server, idle on this loop: hand it over */
	MSG_EVICT,                  /* server, idle on this loop, was taken out of its pool: close it */
	MSG_CANCEL,                 /* CancelRequest for the client with pid/key, from the
	                             * connection at worker/slot/client_id */
	MSG_CANCEL_DONE,            /* the cancel from slot/client_id was carried out: close it */
	MSG_CONFIG,                 /* cfg: the reloaded snapshot (one reference) */
	MSG_DRAIN,                  /* stop accepting; close clients at their next boundary */
	MSG_STOP,                   /* close everything and end the loop */
};

struct msg {
	struct msg *next;
	enum msg_type type;
	int fd;
	uint32_t slot;              /* with client_id (and, for MIGRATE, worker): who it is for */
	uint64_t client_id;
	int worker;                 /* MIGRATE: the acquiring client's worker; CANCEL: the
	                             * requesting connection's */
	struct server *server;
	struct pool *pool;          /* the pool a grant's server or slot counts in */
	int32_t pid;                /* CANCEL: the key pair from the CancelRequest */
	int32_t key;
	struct config *cfg;         /* CONFIG */
};

struct worker {
	int id;
	struct runtime *rt;
	struct config *cfg;         /* the snapshot this loop runs on; one reference */
	atomic_uint reloads;        /* MSG_CONFIGs applied, read by the main thread */
	uv_thread_t thread;
	uv_loop_t loop;
	uv_async_t doorbell;

	uv_mutex_t inbox_mtx;       /* guards the three fields below */
	struct msg *inbox_head;
	struct msg *inbox_tail;
	bool inbox_closed;          /* STOP seen: posts are refused */

	/* Loop-owned state: touched only by this worker's thread. */
	struct list clients;        /* every struct client of this worker */
	struct list servers;        /* every struct server with handles on this loop */
	struct list logins;         /* clients not logged in yet, oldest (first deadline) first */
	uv_timer_t login_timer;     /* due at the first deadline in logins */
	struct list waits;          /* CLIENT_WAITING clients, by wait_since */
	struct list idle_clients;   /* clients with nothing to do, by wait_since (client_idle_timeout) */
	struct list idle_tx;        /* clients idle inside a transaction, by wait_since */
	struct list idle_servers;   /* SERVER_IDLE servers on this loop, least recently used first */
	struct list server_flushes; /* servers whose client's query goes out at the end of this iteration */
	struct list flushes;        /* clients whose server's answer goes out at the end of this iteration */
	uv_check_t flush_check;     /* runs right after the I/O callbacks: sends those, queries first */
	uv_idle_t flush_idle;       /* active while they wait: the poll must not block before the check */
	uv_poll_t *accept_poll;     /* on the dup of the listening fd; owned, or NULL */
	int accept_fd;              /* that dup; closed with the poll */
	uv_timer_t accept_backoff;  /* pauses accepting after EMFILE */
	bool accepting;             /* accept_poll is wanted on (worker_accept_update) */
	bool accept_broken;         /* the poll failed: libuv stopped it for good */
	int32_t keys[64];           /* random cancel keys, taken from the end */
	int nkeys;
	uv_poll_t janitor;          /* every JANITOR_MS: the timeouts above, reserve and min pool */
	int janitor_fd;             /* the timerfd that ticks it; closed in the poll's close callback */
	uint64_t last_sweep;        /* uv_now of the last walk over every idle server */
	struct buf_cache bufs;      /* relay blocks for this worker's connections */
	struct buf scratch;         /* SQL being built for a server; used within one call */
	struct client **slots;      /* client by slot, for cancel keys and grants */
	uint32_t nslots;
	uint32_t free_slot;         /* head of the free slot chain, UINT32_MAX if none */
	uint32_t *slot_next;        /* free chain links */
	bool draining;              /* MSG_DRAIN seen: no accepting, clients leave at boundaries */
	bool stopping;

	bool finished;              /* thread is done; guarded by rt->life_mtx */
	int loop_close_rc;          /* uv_loop_close result, for the exit report */
};

int worker_start(struct worker *w, struct runtime *rt, int id);
/*
 * Queues m for w and rings its doorbell. Takes ownership of m on success.
 * Returns -1 once w has stopped taking messages; m is still the caller's.
 */
int worker_post(struct worker *w, struct msg *m);
/* Allocates a message; NULL on out-of-memory. */
struct msg *msg_new(enum msg_type type);

/* Who sent a CancelRequest: the connection to close once it is done. */
struct cancel_from {
	struct runtime *rt;
	int worker;
	uint32_t slot;
	uint64_t client_id;
};

/* Tells the connection that sent a CancelRequest that it was carried out
 * (or that there was nothing to cancel), so that it closes: a client takes
 * that close to mean its cancel has reached the server. */
void worker_cancel_done(const struct cancel_from *from);

/* A random cancel key (getrandom, in batches). */
int32_t worker_cancel_key(struct worker *w);

/* A client of a draining worker left: tells the main loop once the last
 * one has. */
void worker_client_gone(struct worker *w);

/* Starts the login deadline of a newly accepted client; worker_login_end
 * drops it (logged in or gone), and stops the timer once no login is
 * left, so that an idle loop has no timer due. */
void worker_login_start(struct worker *w, struct client *c);
void worker_login_end(struct worker *w, struct client *c);

/* Something was put on server_flushes or flushes: they are sent at the end
 * of this loop iteration, even if it was queued outside the I/O phase. */
void worker_flush_soon(struct worker *w);

/* Janitor period: the granularity of every timeout but the login one. */
#define JANITOR_MS 100
/* Churn, for accept_spread churn: sessions shorter than CHURN_SESSION_MS
 * ending at CHURN_ON_TICK or more per janitor tick (500 a second) let every
 * worker accept; fewer than CHURN_OFF_TICK in a tick ends it. */
#define CHURN_SESSION_MS 1000
#define CHURN_ON_TICK 50
#define CHURN_OFF_TICK 20

/* Client slot table. A slot is the worker-local index behind the pid a
 * client is given in BackendKeyData. */
int worker_slot_alloc(struct worker *w, struct client *c, uint32_t *slot);
void worker_slot_free(struct worker *w, uint32_t slot);
struct client *worker_client_by_slot(struct worker *w, uint32_t slot);

#endif
