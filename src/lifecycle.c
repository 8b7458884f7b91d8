/*
 * Lifecycle, on the main thread and its "control" loop. Owns the main loop,
 * the listener, the signal handles, the workers' threads, the runtime and
 * what pgberth tells systemd (sd_notify: a no-op without NOTIFY_SOCKET).
 *
 *   RUNNING --SIGTERM--> DRAINING --last client gone, or drain_timeout--> STOPPING
 *   RUNNING or DRAINING --SIGINT, SIGQUIT, 2nd SIGTERM--> STOPPING
 *
 * Draining: the listener closes (its socket file goes, so new clients fail
 * fast; under socket activation they wait in systemd's socket for the next
 * pgberth), and every worker gets MSG_DRAIN: idle clients get 57P01 now,
 * a transaction-mode client in a transaction or query at its end, and a
 * session busy at that moment when its client leaves. Stopping is
 * explicit and bounded: post STOP to every worker (clients left get 57P01,
 * servers are closed) and wait for them on the main loop, each finishing
 * worker ringing worker_done. A deadline timer (shutdown_timeout) bounds
 * that wait; if it fires, the workers still running are named in the log
 * and the process exits without them, leaving their memory to the kernel.
 * Nothing here ever waits without a deadline: a drain ends by
 * drain_timeout, so the process is gone by drain_timeout + shutdown_timeout.
 *
 * Pause (SIGUSR1) and resume (SIGUSR2) are the pool registry's: paused, no
 * client is handed a server; resuming serves the queues in FIFO order.
 *
 * Reload (SIGHUP) parses the whole file into a new snapshot. A bad file
 * changes nothing. A good one gets the running values of the restart-only
 * keys, goes to the pool registry (limits in place, conninfo generations,
 * retired databases) and then to every worker in MSG_CONFIG. The previous
 * snapshot is dropped only once every worker has acknowledged, since a
 * worker may still read a pool's old database entry until then; so reloads
 * never overlap: a SIGHUP during one is queued and runs after it. The wait
 * for acknowledgements has a deadline too; past it the old snapshot is kept
 * to the end rather than freed under a late worker.
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "config.h"
#include "lifecycle.h"
#include "listener.h"
#include "log.h"
#include "pool.h"
#include "runtime.h"
#include "server.h"
#include "worker.h"

enum life_state {
	LIFE_RUNNING,               /* serving; maybe paused */
	LIFE_DRAINING,              /* listener closed, clients leaving, drain timer set */
	LIFE_STOPPING,              /* STOP posted, deadline timer set */
};

enum { SIG_TERM, SIG_INT, SIG_QUIT, SIG_HUP, SIG_USR1, SIG_USR2, NSIGNALS };
static const int signal_numbers[NSIGNALS] = {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2};

#define STATUS_MS 2000              /* STATUS= refresh for systemctl status */
#define RELOAD_ACK_MS 5000          /* bound on the workers taking a new snapshot */

struct lifecycle {
	uv_loop_t loop;
	struct runtime rt;
	struct listener listener;
	const char *path;                   /* the config file, for reloads */
	uv_signal_t signals[NSIGNALS];
	uv_async_t worker_done;
	uv_async_t drained;
	uv_async_t reloaded;
	uv_timer_t deadline;                /* drain_timeout while draining, then shutdown_timeout */
	uv_timer_t reload_timer;            /* bound on a reload's acknowledgements */
	uv_timer_t status_timer;            /* STATUS= and WATCHDOG=1 */
	uint64_t watchdog_ms;               /* half of WATCHDOG_USEC, 0 without a watchdog */
	uint64_t last_status;               /* uv_now of the last STATUS= */
	enum life_state state;
	bool paused;
	int nstarted;                       /* workers whose thread is running */

	bool reloading;                     /* waiting for the workers' acknowledgements */
	bool reload_queued;                 /* SIGHUP came during a reload */
	unsigned reload_seq;                /* MSG_CONFIGs each worker has been sent */
	struct config *prev;                /* snapshot the reloading workers may still read */
	struct config **kept;               /* snapshots a late worker may read, freed at exit */
	size_t nkept;
};

/* Every line to systemd goes through here; sd_notify is a no-op without
 * NOTIFY_SOCKET. Failures cannot be acted on and are only logged. */
static void notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void notify(const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	int rc = sd_notify(0, msg);
	if (rc < 0)
		log_warn("sd_notify: %s", strerror(-rc));
}

static void notify_status(struct lifecycle *lc, const char *ready)
{
	int nservers, nidle, nwaiting;
	static const char *const states[] = {"running", "draining", "stopping"};

	pool_totals(&lc->rt.pools, &nservers, &nidle, &nwaiting);
	notify("%sSTATUS=%s%s: clients: %d, waiting: %d, servers: %d (%d idle)", ready,
	       states[lc->state], lc->paused ? ", paused" : "", atomic_load(&lc->rt.nclients), nwaiting,
	       nservers, nidle);
	lc->last_status = uv_now(&lc->loop);
}

static void on_status_timer(uv_timer_t *timer)
{
	struct lifecycle *lc = timer->data;

	if (lc->watchdog_ms > 0)
		notify("WATCHDOG=1");
	if (uv_now(&lc->loop) - lc->last_status >= STATUS_MS)
		notify_status(lc, "");
}

static void walk_report(uv_handle_t *h, void *arg)
{
	(void)arg;
	log_error("main: handle still open at exit: %s", uv_handle_type_name(uv_handle_get_type(h)));
}

static void close_main_handles(struct lifecycle *lc)
{
	for (size_t i = 0; i < NSIGNALS; i++)
		uv_close((uv_handle_t *)&lc->signals[i], NULL);
	uv_close((uv_handle_t *)&lc->worker_done, NULL);
	uv_close((uv_handle_t *)&lc->drained, NULL);
	uv_close((uv_handle_t *)&lc->reloaded, NULL);
	uv_close((uv_handle_t *)&lc->deadline, NULL);
	uv_close((uv_handle_t *)&lc->reload_timer, NULL);
	uv_close((uv_handle_t *)&lc->status_timer, NULL);
}

static void on_worker_done(uv_async_t *handle)
{
	struct lifecycle *lc = handle->data;
	int finished;

	uv_mutex_lock(&lc->rt.life_mtx);
	finished = lc->rt.nfinished;
	uv_mutex_unlock(&lc->rt.life_mtx);
	if (lc->state == LIFE_STOPPING && finished == lc->nstarted)
		close_main_handles(lc);
}

static void on_stop_deadline(uv_timer_t *timer)
{
	struct lifecycle *lc = timer->data;

	uv_mutex_lock(&lc->rt.life_mtx);
	for (int i = 0; i < lc->nstarted; i++)
		if (!lc->rt.workers[i].finished)
			log_error("w%d did not stop within shutdown_timeout (%llu ms); exiting without it",
			          i, (unsigned long long)lc->rt.cfg->shutdown_timeout_ms);
	uv_mutex_unlock(&lc->rt.life_mtx);
	/* The late workers may still use the runtime: do not free it. The
	 * status says something was abandoned. */
	_exit(EXIT_FAILURE);
}

static void post_all(struct lifecycle *lc, enum msg_type type)
{
	for (int i = 0; i < lc->nstarted; i++) {
		struct msg *m = msg_new(type);
		if (m != NULL && worker_post(&lc->rt.workers[i], m) < 0)
			free(m);
	}
}

static void lifecycle_stop(struct lifecycle *lc, const char *why)
{
	if (lc->state == LIFE_STOPPING)
		return;
	if (lc->state == LIFE_RUNNING)
		notify("STOPPING=1");
	lc->state = LIFE_STOPPING;
	log_info("%s: shutting down (bounded by shutdown_timeout %llu ms)", why,
	         (unsigned long long)lc->rt.cfg->shutdown_timeout_ms);
	listener_close(&lc->listener);
	uv_timer_start(&lc->deadline, on_stop_deadline, lc->rt.cfg->shutdown_timeout_ms, 0);
	post_all(lc, MSG_STOP);
	on_worker_done(&lc->worker_done);    /* with no worker at all, done now */
}

static void on_drain_deadline(uv_timer_t *timer)
{
	struct lifecycle *lc = timer->data;

	log_warn("drain_timeout (%llu ms) reached with %d clients left; closing them",
	         (unsigned long long)lc->rt.cfg->drain_timeout_ms, atomic_load(&lc->rt.nclients));
	lifecycle_stop(lc, "drain_timeout");
}

/* A draining worker's last client left: stop once every worker's has. */
static void on_drained(uv_async_t *handle)
{
	struct lifecycle *lc = handle->data;

	if (lc->state == LIFE_DRAINING && atomic_load(&lc->rt.nclients) == 0)
		lifecycle_stop(lc, "drained");
}

static void lifecycle_drain(struct lifecycle *lc)
{
	lc->state = LIFE_DRAINING;
	notify("STOPPING=1");
	log_info("SIGTERM: draining: no new clients; the %d connected finish their transactions "
	         "(bounded by drain_timeout %llu ms)", atomic_load(&lc->rt.nclients),
	         (unsigned long long)lc->rt.cfg->drain_timeout_ms);
	listener_close(&lc->listener);
	uv_timer_start(&lc->deadline, on_drain_deadline, lc->rt.cfg->drain_timeout_ms, 0);
	post_all(lc, MSG_DRAIN);
	on_drained(&lc->drained);           /* nobody connected: stop now */
}

/* Gives a handoff from pool_serve_waiters to its client: an idle server
 * goes through the worker whose loop holds it (MSG_MIGRATE), a slot
 * straight to the client's worker. */
static void deliver(struct runtime *rt, struct pool_handoff *h)
{
	if (h->server == NULL) {
		server_handoff(rt, h);
		return;
	}
	struct msg *m = msg_new(MSG_MIGRATE);
	if (m != NULL) {
		m->server = h->server;
		m->pool = h->pool;
		m->slot = h->slot;
		m->client_id = h->client_id;
		m->worker = h->worker;
		if (worker_post(&rt->workers[h->idle_owner], m) == 0)
			return;
		free(m);
	}
	/* Its owner is stopping and closes the server with the rest; the
	 * waiter's worker is stopping too. */
}

/* After a resume or a reload: whoever may have a server now gets one, and
 * waiters held back by max_db_connections get an idle server of another
 * pool of their database closed for them, as they would have at the time
 * they queued had the pool not been paused. */
static void serve_waiters(struct lifecycle *lc)
{
	struct pool_handoff h[16];
	struct pool_idle evict[16];
	int n;

	do {
		n = pool_serve_waiters(&lc->rt.pools, h, 16);
		for (int i = 0; i < n; i++)
			deliver(&lc->rt, &h[i]);
	} while (n == 16);
	n = pool_evict_for_waiters(&lc->rt.pools, evict, 16);
	for (int i = 0; i < n; i++) {
		struct msg *m = msg_new(MSG_EVICT);
		if (m == NULL)
			continue;   /* out of memory: its owner keeps it, out of the pool, until shutdown */
		m->server = evict[i].server;
		if (worker_post(&lc->rt.workers[evict[i].worker], m) < 0)
			free(m);    /* that worker stopped: it closes its servers itself */
	}
}

static void lifecycle_pause(struct lifecycle *lc, bool pause)
{
	if (lc->paused == pause) {
		log_info("%s: already %s", pause ? "SIGUSR1" : "SIGUSR2", pause ? "paused" : "running");
		return;
	}
	lc->paused = pause;
	pool_set_paused(&lc->rt.pools, pause);
	if (pause) {
		log_info("SIGUSR1: paused: clients wait for a server until SIGUSR2; "
		         "transactions under way go on");
	} else {
		log_info("SIGUSR2: resumed");
		serve_waiters(lc);
	}
	notify_status(lc, "");
}

static void reload_start(struct lifecycle *lc);

static void reload_finish(struct lifecycle *lc)
{
	uv_timer_stop(&lc->reload_timer);
	lc->reloading = false;
	if (lc->prev != NULL)
		config_unref(lc->prev);
	lc->prev = NULL;
	if (lc->state != LIFE_RUNNING)
		return;     /* shutting down: no READY=1, and a queued reload is moot */
	notify_status(lc, "READY=1\n");
	if (lc->reload_queued) {
		lc->reload_queued = false;
		reload_start(lc);
	}
}

static void on_reloaded(uv_async_t *handle)
{
	struct lifecycle *lc = handle->data;

	if (!lc->reloading)
		return;
	for (int i = 0; i < lc->nstarted; i++)
		if (atomic_load(&lc->rt.workers[i].reloads) != lc->reload_seq)
			return;
	log_info("reload: every worker runs on the new configuration");
	reload_finish(lc);
}

static void on_reload_deadline(uv_timer_t *timer)
{
	struct lifecycle *lc = timer->data;

	for (int i = 0; i < lc->nstarted; i++)
		if (atomic_load(&lc->rt.workers[i].reloads) != lc->reload_seq)
			log_error("reload: w%d has not taken the new configuration within %d ms",
			          i, RELOAD_ACK_MS);
	/* A late worker may still read the old snapshot: keep it to the end. */
	struct config **kept = realloc(lc->kept, (lc->nkept + 1) * sizeof(*kept));
	if (kept != NULL) {
		lc->kept = kept;
		lc->kept[lc->nkept++] = lc->prev;
		lc->prev = NULL;
	}
	reload_finish(lc);
}

static void log_errors(struct config_errors *errs, enum log_level level)
{
	for (size_t i = 0; i < errs->n; i++) {
		if (level == LOG_ERROR)
			log_error("%s", errs->msgs[i]);
		else
			log_warn("%s", errs->msgs[i]);
	}
	config_errors_free(errs);
}

static void reload_start(struct lifecycle *lc)
{
	struct config_errors errs = {0};
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	notify("RELOADING=1\nMONOTONIC_USEC=%llu",
	       (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
	log_info("SIGHUP: reloading \"%s\"", lc->path);
	struct config *next = config_load(lc->path, &errs);
	if (next == NULL) {
		size_t n = errs.n;
		log_errors(&errs, LOG_ERROR);
		log_error("reload: %zu error%s in \"%s\"; keeping the running configuration", n,
		          n == 1 ? "" : "s", lc->path);
		notify_status(lc, "READY=1\n");
		return;
	}
	struct config *cur = lc->rt.cfg;
	if (config_reload_changes(cur, next, &errs) > 0)
		log_errors(&errs, LOG_WARN);
	else
		config_errors_free(&errs);
	if (config_keep_restart_keys(next, cur) < 0 || pool_registry_set_config(&lc->rt.pools, next) < 0) {
		log_error("reload: out of memory; keeping the running configuration");
		config_unref(next);
		notify_status(lc, "READY=1\n");
		return;
	}
	log_set_level(next->log_level);
	lc->prev = cur;
	lc->rt.cfg = next;
	lc->reloading = true;
	lc->reload_seq++;
	for (int i = 0; i < lc->nstarted; i++) {
		struct msg *m = msg_new(MSG_CONFIG);
		if (m == NULL) {
			log_error("reload: out of memory telling w%d", i);
			continue;   /* the deadline below keeps the old snapshot for it */
		}
		m->cfg = config_ref(next);
		if (worker_post(&lc->rt.workers[i], m) < 0) {
			config_unref(m->cfg);
			free(m);
		}
	}
	log_info("reload: \"%s\" applied (%zu databases)", lc->path, next->ndbs);
	serve_waiters(lc);      /* a larger pool_size lets waiters in now */
	uv_timer_start(&lc->reload_timer, on_reload_deadline, RELOAD_ACK_MS, 0);
	on_reloaded(&lc->reloaded);
}

static void on_signal(uv_signal_t *handle, int signum)
{
	struct lifecycle *lc = handle->data;

	if (lc->state == LIFE_STOPPING)
		return;
	switch (signum) {
	case SIGHUP:
		if (lc->state != LIFE_RUNNING)
			log_info("SIGHUP: ignored while shutting down");
		else if (lc->reloading)
			lc->reload_queued = true;
		else
			reload_start(lc);
		break;
	case SIGUSR1:
	case SIGUSR2:
		lifecycle_pause(lc, signum == SIGUSR1);
		break;
	case SIGTERM:
		if (lc->state == LIFE_RUNNING)
			lifecycle_drain(lc);
		else
			lifecycle_stop(lc, "SIGTERM again: fast shutdown");
		break;
	default:
		lifecycle_stop(lc, signum == SIGINT ? "SIGINT: fast shutdown" : "SIGQUIT: immediate shutdown");
		break;
	}
}

static void async_init(struct lifecycle *lc, uv_async_t *a, uv_async_cb cb)
{
	uv_async_init(&lc->loop, a, cb);
	a->data = lc;
}

static void timer_init(struct lifecycle *lc, uv_timer_t *t)
{
	uv_timer_init(&lc->loop, t);
	t->data = lc;
}

static int lifecycle_init(struct lifecycle *lc, struct config *cfg, const char *path)
{
	uint64_t usec = 0;

	memset(lc, 0, sizeof(*lc));
	lc->path = path;
	lc->rt.cfg = cfg;
	pool_registry_init(&lc->rt.pools);
	pool_registry_set_config(&lc->rt.pools, cfg);   /* no pools yet: cannot fail */
	uv_mutex_init(&lc->rt.life_mtx);
	if (uv_loop_init(&lc->loop) != 0)
		return -1;
	async_init(lc, &lc->worker_done, on_worker_done);
	async_init(lc, &lc->drained, on_drained);
	async_init(lc, &lc->reloaded, on_reloaded);
	lc->rt.worker_done = &lc->worker_done;
	lc->rt.drained = &lc->drained;
	lc->rt.reloaded = &lc->reloaded;
	timer_init(lc, &lc->deadline);
	timer_init(lc, &lc->reload_timer);
	timer_init(lc, &lc->status_timer);
	if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0)
		lc->watchdog_ms = usec / 2000 > 0 ? usec / 2000 : 1;
	for (size_t i = 0; i < NSIGNALS; i++) {
		uv_signal_init(&lc->loop, &lc->signals[i]);
		lc->signals[i].data = lc;
		uv_signal_start(&lc->signals[i], on_signal, signal_numbers[i]);
	}
	lc->rt.workers = calloc((size_t)cfg->workers, sizeof(struct worker));
	if (lc->rt.workers == NULL)
		return -1;
	lc->rt.nworkers = cfg->workers;
	return 0;
}

/* Joins the (finished) workers and frees everything. Returns -1 if any
 * loop still had a handle open: a leak the exit status must not hide. */
static int lifecycle_free(struct lifecycle *lc)
{
	int leaked = 0;

	for (int i = 0; i < lc->nstarted; i++) {
		uv_thread_join(&lc->rt.workers[i].thread);
		uv_mutex_destroy(&lc->rt.workers[i].inbox_mtx);
		leaked |= lc->rt.workers[i].loop_close_rc != 0;
	}
	pool_registry_destroy(&lc->rt.pools, server_free_parked);
	free(lc->rt.workers);
	uv_mutex_destroy(&lc->rt.life_mtx);
	int rc = uv_loop_close(&lc->loop);
	if (rc != 0) {
		uv_walk(&lc->loop, walk_report, NULL);
		log_error("main: uv_loop_close: %s", uv_strerror(rc));
		leaked = 1;
	}
	if (lc->prev != NULL)
		config_unref(lc->prev);
	for (size_t i = 0; i < lc->nkept; i++)
		config_unref(lc->kept[i]);
	free(lc->kept);
	config_unref(lc->rt.cfg);
	return leaked ? -1 : 0;
}

int lifecycle_run(struct config *cfg, const char *path)
{
	static struct lifecycle lc;     /* one per process; outlives late workers */
	int status = EXIT_SUCCESS;

	signal(SIGPIPE, SIG_IGN);       /* a gone peer is an EPIPE, not a death */
	if (lifecycle_init(&lc, cfg, path) < 0) {
		log_error("cannot initialise the main loop");
		status = EXIT_FAILURE;
		lc.state = LIFE_STOPPING;
		close_main_handles(&lc);
	} else if (listener_open(&lc.listener, &lc.loop, &lc.rt, cfg) < 0) {
		status = EXIT_FAILURE;
		lc.state = LIFE_STOPPING;
		close_main_handles(&lc);
	} else {
		for (int i = 0; i < cfg->workers; i++) {
			int rc = worker_start(&lc.rt.workers[i], &lc.rt, i);
			if (rc != 0) {
				log_error("cannot start worker %d: %s", i, uv_strerror(rc));
				status = EXIT_FAILURE;
				lifecycle_stop(&lc, "start-up failed");
				break;
			}
			lc.nstarted++;
		}
		if (lc.state == LIFE_RUNNING) {
			listener_start(&lc.listener);
			log_info("pgberth listening on \"%s\"%s with %d workers%s", lc.listener.path,
			         lc.listener.activated ? " (socket from systemd)" : "", lc.nstarted,
			         lc.nstarted > 1 && cfg->accept_spread == SPREAD_CHURN
			                 ? " (accept_spread churn: one accepts, all do while clients churn)" : "");
			notify_status(&lc, "READY=1\n");
			uint64_t period = lc.watchdog_ms > 0 && lc.watchdog_ms < STATUS_MS ? lc.watchdog_ms
			                                                                   : STATUS_MS;
			if (getenv("NOTIFY_SOCKET") != NULL)    /* nobody to tell otherwise */
				uv_timer_start(&lc.status_timer, on_status_timer, period, period);
		}
	}
	uv_run(&lc.loop, UV_RUN_DEFAULT);
	if (lifecycle_free(&lc) < 0)
		status = EXIT_FAILURE;
	log_info("pgberth stopped");
	return status;
}
