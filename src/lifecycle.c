/*
 * Lifecycle, on the main thread and its "control" loop. Owns the main loop,
 * the listener, the signal handles, the workers' threads and the runtime.
 *
 *   RUNNING  --SIGTERM/SIGINT/SIGQUIT-->  STOPPING
 *
 * Stopping is explicit and bounded: close the listener (socket and lock
 * files go at once, so new clients fail fast), post STOP to every worker,
 * and wait for them on the main loop: each finishing worker rings
 * worker_done. A deadline timer (shutdown_timeout) bounds that wait; if it
 * fires, the workers still running are named in the log and the process
 * exits without them, leaving their memory to the kernel. Nothing here
 * ever waits without a deadline.
 *
 * SIGHUP (reload) and graceful drain come with the service issue; until
 * then SIGHUP is logged and ignored rather than killing the daemon.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "lifecycle.h"
#include "listener.h"
#include "log.h"
#include "pool.h"
#include "runtime.h"
#include "server.h"
#include "worker.h"

enum life_state {
	LIFE_RUNNING,
	LIFE_STOPPING,
};

static const int stop_signals[] = {SIGTERM, SIGINT, SIGQUIT};
#define NSIGNALS (sizeof(stop_signals) / sizeof(stop_signals[0]) + 1)

struct lifecycle {
	uv_loop_t loop;
	struct runtime rt;
	struct listener listener;
	uv_signal_t signals[NSIGNALS];     /* the stop signals, then SIGHUP */
	uv_async_t worker_done;
	uv_timer_t deadline;
	enum life_state state;
	int nstarted;                       /* workers whose thread is running */
};

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
	uv_close((uv_handle_t *)&lc->deadline, NULL);
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

static void on_deadline(uv_timer_t *timer)
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

static void lifecycle_stop(struct lifecycle *lc, const char *why)
{
	if (lc->state == LIFE_STOPPING)
		return;
	lc->state = LIFE_STOPPING;
	log_info("%s: shutting down (bounded by shutdown_timeout %llu ms)", why,
	         (unsigned long long)lc->rt.cfg->shutdown_timeout_ms);
	listener_close(&lc->listener);
	uv_timer_start(&lc->deadline, on_deadline, lc->rt.cfg->shutdown_timeout_ms, 0);
	for (int i = 0; i < lc->nstarted; i++) {
		struct msg *m = msg_new(MSG_STOP);
		if (m != NULL && worker_post(&lc->rt.workers[i], m) < 0)
			free(m);
	}
	on_worker_done(&lc->worker_done);    /* with no worker at all, done now */
}

static void on_signal(uv_signal_t *handle, int signum)
{
	struct lifecycle *lc = handle->data;

	if (signum == SIGHUP) {
		log_warn("SIGHUP: configuration reload is not implemented yet; ignored");
		return;
	}
	lifecycle_stop(lc, strsignal(signum));
}

static int lifecycle_init(struct lifecycle *lc, struct config *cfg)
{
	memset(lc, 0, sizeof(*lc));
	lc->rt.cfg = cfg;
	pool_registry_init(&lc->rt.pools);
	uv_mutex_init(&lc->rt.life_mtx);
	if (uv_loop_init(&lc->loop) != 0)
		return -1;
	uv_async_init(&lc->loop, &lc->worker_done, on_worker_done);
	lc->worker_done.data = lc;
	lc->rt.worker_done = &lc->worker_done;
	uv_timer_init(&lc->loop, &lc->deadline);
	lc->deadline.data = lc;
	for (size_t i = 0; i < NSIGNALS; i++) {
		uv_signal_init(&lc->loop, &lc->signals[i]);
		lc->signals[i].data = lc;
		uv_signal_start(&lc->signals[i], on_signal, i < NSIGNALS - 1 ? stop_signals[i] : SIGHUP);
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
	config_unref(lc->rt.cfg);
	return leaked ? -1 : 0;
}

int lifecycle_run(struct config *cfg)
{
	static struct lifecycle lc;     /* one per process; outlives late workers */
	int status = EXIT_SUCCESS;

	signal(SIGPIPE, SIG_IGN);       /* a gone peer is an EPIPE, not a death */
	if (lifecycle_init(&lc, cfg) < 0) {
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
			log_info("pgberth listening on \"%s\" with %d workers", lc.listener.path, lc.nstarted);
		}
	}
	uv_run(&lc.loop, UV_RUN_DEFAULT);
	if (lifecycle_free(&lc) < 0)
		status = EXIT_FAILURE;
	log_info("pgberth stopped");
	return status;
}
