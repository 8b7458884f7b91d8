/*
 * Worker threads. Each runs its own uv loop with the clients and servers
 * handed to it; the only ways in from another thread are worker_post (the
 * inbox) and the shared pool registry. A worker ends when its STOP message
 * has closed every handle on its loop; the main thread waits for that with
 * a deadline (see lifecycle.c) and never joins a worker that did not finish.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "client.h"
#include "config.h"
#include "log.h"
#include "pool.h"
#include "relay.h"
#include "runtime.h"
#include "server.h"
#include "worker.h"

#define NO_SLOT UINT32_MAX
#define MAX_SLOTS (1u << 24)        /* the slot must fit the low 24 bits of a pid */

struct msg *msg_new(enum msg_type type)
{
	struct msg *m = calloc(1, sizeof(*m));
	if (m != NULL) {
		m->type = type;
		m->fd = -1;
	}
	return m;
}

void worker_cancel_done(const struct cancel_from *from)
{
	struct msg *m = msg_new(MSG_CANCEL_DONE);

	if (m == NULL)
		return;     /* it closes at its login deadline instead */
	m->slot = from->slot;
	m->client_id = from->client_id;
	if (worker_post(&from->rt->workers[from->worker], m) < 0)
		free(m);
}

int worker_post(struct worker *w, struct msg *m)
{
	int rc = 0;

	m->next = NULL;
	uv_mutex_lock(&w->inbox_mtx);
	if (w->inbox_closed) {
		rc = -1;
	} else {
		if (w->inbox_tail != NULL)
			w->inbox_tail->next = m;
		else
			w->inbox_head = m;
		w->inbox_tail = m;
		/* Under the lock: once inbox_closed is set the doorbell may be
		 * closed, so nobody may ring it after that. */
		uv_async_send(&w->doorbell);
	}
	uv_mutex_unlock(&w->inbox_mtx);
	return rc;
}

static struct msg *inbox_take(struct worker *w, bool close)
{
	uv_mutex_lock(&w->inbox_mtx);
	struct msg *m = w->inbox_head;
	w->inbox_head = w->inbox_tail = NULL;
	if (close)
		w->inbox_closed = true;
	uv_mutex_unlock(&w->inbox_mtx);
	return m;
}

int worker_slot_alloc(struct worker *w, struct client *c, uint32_t *slot)
{
	if (w->free_slot == NO_SLOT) {
		uint32_t n = w->nslots ? w->nslots * 2 : 64;
		if (n > MAX_SLOTS)
			return -1;
		struct client **slots = realloc(w->slots, n * sizeof(*slots));
		if (slots == NULL)
			return -1;
		w->slots = slots;
		uint32_t *next = realloc(w->slot_next, n * sizeof(*next));
		if (next == NULL)
			return -1;
		w->slot_next = next;
		for (uint32_t i = w->nslots; i < n; i++) {
			w->slots[i] = NULL;
			w->slot_next[i] = i + 1 < n ? i + 1 : NO_SLOT;
		}
		w->free_slot = w->nslots;
		w->nslots = n;
	}
	*slot = w->free_slot;
	w->free_slot = w->slot_next[*slot];
	w->slots[*slot] = c;
	return 0;
}

void worker_slot_free(struct worker *w, uint32_t slot)
{
	w->slots[slot] = NULL;
	w->slot_next[slot] = w->free_slot;
	w->free_slot = slot;
}

struct client *worker_client_by_slot(struct worker *w, uint32_t slot)
{
	return slot < w->nslots ? w->slots[slot] : NULL;
}

/* Clients share one timeout, so deadlines come in accept order and one
 * timer, due at the oldest, serves them all. */
static void worker_login_expired(uv_timer_t *timer)
{
	struct worker *w = timer->data;
	uint64_t now = uv_now(&w->loop);

	while (!list_empty(&w->logins)) {
		struct client *c = list_first(&w->logins, struct client, login_node);
		if (c->login_deadline > now) {
			uv_timer_start(timer, worker_login_expired, c->login_deadline - now, 0);
			return;
		}
		if (c->state == CLIENT_WAITING)
			client_fatal(c, "53300", "login timeout",
			             "no server connection became free within client_login_timeout");
		else
			client_fatal(c, "08P01", "login timeout", "client did not log in within client_login_timeout");
	}
}

void worker_login_start(struct worker *w, struct client *c)
{
	c->login_deadline = uv_now(&w->loop) + w->cfg->client_login_timeout_ms;
	list_add_tail(&w->logins, &c->login_node);
	if (!uv_is_active((uv_handle_t *)&w->login_timer))
		uv_timer_start(&w->login_timer, worker_login_expired,
		               w->cfg->client_login_timeout_ms, 0);
}

void worker_login_end(struct worker *w, struct client *c)
{
	list_del(&c->login_node);
	if (list_empty(&w->logins))
		uv_timer_stop(&w->login_timer);
}

/* A grant whose client is gone, or came to a stopping worker: pass the
 * server or the slot on to the next waiter. */
static void worker_grant_refused(struct worker *w, struct msg *m)
{
	struct pool_handoff h;
	bool handed;

	if (m->server == NULL) {
		handed = pool_server_closed(&w->rt->pools, m->pool, &h);
	} else if (w->stopping) {
		server_free_parked(m->server);
		handed = pool_server_closed(&w->rt->pools, m->pool, &h);
	} else {
		/* Adopted here with no client, it parks on this loop. */
		struct server *s = m->server;
		s->w = w;
		list_add_tail(&w->servers, &s->node);
		server_done(s);
		return;
	}
	if (handed)
		server_handoff(w->rt, &h);
}

/* Closes every server on this loop. One that another worker took from the
 * pool is left (unless all) for its MSG_MIGRATE, which will close it. */
static void worker_close_servers(struct worker *w, bool all)
{
	struct list *pos, *tmp;

	list_for_each_safe(pos, tmp, &w->servers) {
		struct server *s = list_entry(pos, struct server, node);
		if (s->state == SERVER_IDLE && !pool_take_idle(&w->rt->pools, s->pool, s))
			s->state = SERVER_MOVING;
		if (s->state != SERVER_MOVING || all)
			server_close(s, "shutdown");
	}
}

static void worker_on_accept(uv_poll_t *handle, int status, int events);

/* Worker 0, every tick (ticks periods, after a stall): are clients coming
 * and going quickly? Hysteresis (on at CHURN_ON_TICK short sessions a
 * period, off below CHURN_OFF_TICK) keeps a rate near the line from
 * flapping. */
static void worker_measure_churn(struct worker *w, uint64_t ticks)
{
	struct runtime *rt = w->rt;
	uint64_t n = atomic_exchange_explicit(&rt->short_sessions, 0, memory_order_relaxed);
	uint64_t rate = n / (ticks > 0 ? ticks : 1);
	bool was = atomic_load_explicit(&rt->churning, memory_order_relaxed);
	bool now = rate >= CHURN_ON_TICK || (was && rate >= CHURN_OFF_TICK);

	if (now == was)
		return;
	atomic_store_explicit(&rt->churning, now, memory_order_relaxed);
	if (w->cfg->accept_spread == SPREAD_CHURN)
		log_debug("w%d: %llu sessions under %d ms in %llu ms: churn %s", w->id, (unsigned long long)n,
		          CHURN_SESSION_MS, (unsigned long long)(ticks * JANITOR_MS),
		          now ? "began" : "is over");
}

/* The acceptor (worker 0, unless it did not get the listening socket)
 * always accepts; with accept_spread churn the others only while there is
 * churn, or when there is no acceptor. Persistent clients then all share
 * one busy thread, which on two CPUs costs less per transaction than two,
 * while clients that connect for each transaction are logged in by every
 * worker. */
static bool worker_accepts(const struct worker *w)
{
	int acceptor = atomic_load_explicit(&w->rt->acceptor, memory_order_relaxed);

	return acceptor == 0 || acceptor == w->id + 1 || w->cfg->accept_spread == SPREAD_ALWAYS ||
	       atomic_load_explicit(&w->rt->churning, memory_order_relaxed);
}

/* Polls the listening socket or stops, as worker_accepts says, unless an
 * accept backoff holds it stopped or the poll failed for good. */
static void worker_accept_update(struct worker *w)
{
	if (w->accept_poll == NULL || w->accept_broken ||
	    uv_is_active((uv_handle_t *)&w->accept_backoff))
		return;
	bool want = worker_accepts(w);
	if (want == (uv_is_active((uv_handle_t *)w->accept_poll) != 0))
		return;
	if (want)
		uv_poll_start(w->accept_poll, UV_READABLE, worker_on_accept);
	else
		uv_poll_stop(w->accept_poll);
	if (want != w->accepting)
		log_debug("w%d: %s accepting new connections", w->id, want ? "starts" : "stops");
	w->accepting = want;
}

/* Every JANITOR_MS: client and server timeouts on this loop, and whether it
 * accepts (worker_accept_update); worker 0 also measures churn, grants
 * reserve slots and opens min_pool_size spares for every pool. */
static void worker_janitor(uv_poll_t *poll, int status, int events)
{
	struct worker *w = poll->data;
	struct runtime *rt = w->rt;
	uint64_t ticks;

	(void)events;
	if (status < 0 || read(w->janitor_fd, &ticks, sizeof(ticks)) != (ssize_t)sizeof(ticks))
		return;     /* nothing due yet; the next tick comes anyway */
	uint64_t now = uv_now(&w->loop);

	client_sweep(w, now);
	server_sweep_idle(w, now);
	if (w->id == 0)
		worker_measure_churn(w, ticks);
	worker_accept_update(w);
	if (w->id != 0)
		return;
	struct pool_handoff h[16];
	uint64_t timeout = w->cfg->reserve_pool_timeout_ms;
	int n = pool_reserve_sweep(&rt->pools, now > timeout ? now - timeout : 0, h, 16);
	for (int i = 0; i < n; i++) {
		log_info("w%d: reserve pool: a connection for c%llu after %llu ms", w->id,
		         (unsigned long long)h[i].client_id, (unsigned long long)timeout);
		server_handoff(rt, &h[i]);
	}
	struct pool *pool;
	for (int i = 0; i < 16 && !w->draining && (pool = pool_spare_needed(&rt->pools)) != NULL; i++)
		server_connect(w, pool, NULL);
}

static void worker_accept_closed(uv_handle_t *handle);

static void worker_stop_accepting(struct worker *w)
{
	if (w->accept_poll != NULL) {
		w->accept_poll->data = (void *)(intptr_t)w->accept_fd;
		uv_close((uv_handle_t *)w->accept_poll, worker_accept_closed);
		w->accept_poll = NULL;
	}
	uv_timer_stop(&w->accept_backoff);
}

void worker_client_gone(struct worker *w)
{
	if (w->draining && !w->stopping && list_empty(&w->clients))
		uv_async_send(w->rt->drained);
}

/* MSG_DRAIN: the listener is closed; idle clients go now, the others when
 * their work ends (client_drain). */
static void worker_drain(struct worker *w)
{
	struct drain_ref {
		uint32_t slot;
		uint64_t id;
	} *refs = NULL;
	size_t n = 0, cap = 0;
	struct list *pos, *tmp;

	w->draining = true;
	worker_stop_accepting(w);
	/* Closing one client can free others on the way (its server goes to a
	 * waiter here, whose socket turns out to be gone), so the walk goes by
	 * id, never by a saved list link. */
	list_for_each_safe(pos, tmp, &w->clients)
		cap++;
	if (cap > 0 && (refs = malloc(cap * sizeof(*refs))) == NULL)
		log_error("w%d: out of memory starting the drain; idle clients wait for drain_timeout",
		          w->id);
	list_for_each_safe(pos, tmp, &w->clients) {
		if (refs == NULL)
			break;
		struct client *c = list_entry(pos, struct client, node);
		refs[n].slot = c->slot;
		refs[n++].id = c->id;
	}
	for (size_t i = 0; i < n; i++) {
		struct client *c = worker_client_by_slot(w, refs[i].slot);
		if (c != NULL && c->id == refs[i].id)
			client_drain(c);
	}
	free(refs);
	worker_client_gone(w);
}

/*
 * The janitor's tick is a periodic timerfd, not a uv_timer. With a uv_timer
 * due, libuv gives epoll_wait a timeout, and the kernel arms and cancels an
 * hrtimer on every sleep: under KVM about 0.5 us each time, twice per
 * transaction at one client. The timerfd is armed once; with no uv_timer
 * active (login_timer and the server deadlines run only now and then) the
 * loop sleeps without a timeout.
 */
static int worker_janitor_open(struct worker *w)
{
	const struct itimerspec every = {
		.it_interval = {.tv_sec = JANITOR_MS / 1000, .tv_nsec = JANITOR_MS % 1000 * 1000000L},
		.it_value = {.tv_sec = JANITOR_MS / 1000, .tv_nsec = JANITOR_MS % 1000 * 1000000L},
	};
	int rc;

	w->janitor_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (w->janitor_fd < 0)
		return -errno;
	if (timerfd_settime(w->janitor_fd, 0, &every, NULL) < 0) {
		rc = -errno;
		goto err;
	}
	if ((rc = uv_poll_init(&w->loop, &w->janitor, w->janitor_fd)) != 0)
		goto err;
	w->janitor.data = w;
	uv_poll_start(&w->janitor, UV_READABLE, worker_janitor);
	return 0;
err:
	close(w->janitor_fd);
	w->janitor_fd = -1;
	return rc;
}

static void worker_janitor_closed(uv_handle_t *handle)
{
	struct worker *w = handle->data;

	close(w->janitor_fd);
	w->janitor_fd = -1;
}

static void worker_stop(struct worker *w)
{
	struct list *pos, *tmp;

	w->stopping = true;
	list_for_each_safe(pos, tmp, &w->clients) {
		struct client *c = list_entry(pos, struct client, node);
		if (w->draining)
			log_warn("c%llu/w%d: drain over: giving up on %s@%s (%s)", (unsigned long long)c->id,
			         w->id, c->user ? c->user : "?", c->dbname ? c->dbname : "?",
			         c->server != NULL && c->server->txstatus != 'I' ? "in a transaction"
			         : c->server != NULL                             ? "query or session running"
			                                                         : "waiting for a server");
		client_fatal(c, "57P01", "shutdown", "pgberth is shutting down");
	}
	worker_close_servers(w, false);
	worker_stop_accepting(w);
	uv_close((uv_handle_t *)&w->accept_backoff, NULL);
	uv_close((uv_handle_t *)&w->doorbell, NULL);
	uv_close((uv_handle_t *)&w->login_timer, NULL);
	uv_close((uv_handle_t *)&w->janitor, worker_janitor_closed);
	uv_close((uv_handle_t *)&w->flush_check, NULL);
	uv_close((uv_handle_t *)&w->flush_idle, NULL);
}

/* The queries and answers of this iteration, now all at once
 * (server_flush_later, client_flush_later), queries first. Sending an
 * answer can release a server to a waiting client, whose query is then
 * queued in turn: the loop runs until both lists are empty. */
static void worker_flush(uv_check_t *check)
{
	struct worker *w = check->data;

	while (!list_empty(&w->server_flushes) || !list_empty(&w->flushes)) {
		while (!list_empty(&w->server_flushes)) {
			struct server *s = list_first(&w->server_flushes, struct server, flush_node);
			list_del(&s->flush_node);
			server_flush(s);
		}
		if (!list_empty(&w->flushes)) {
			struct client *c = list_first(&w->flushes, struct client, flush_node);
			list_del(&c->flush_node);
			client_flush(c);
		}
	}
	uv_idle_stop(&w->flush_idle);
}

static void worker_flush_idle(uv_idle_t *idle)
{
	(void)idle;     /* being active is its job: a zero poll timeout */
}

void worker_flush_soon(struct worker *w)
{
	if (!uv_is_active((uv_handle_t *)&w->flush_idle))
		uv_idle_start(&w->flush_idle, worker_flush_idle);
}

#define ACCEPT_BACKOFF_MS 100
#define ACCEPT_BATCH 64             /* then other ready sockets get a turn */

static void worker_accept_resume(uv_timer_t *timer)
{
	worker_accept_update(timer->data);
}

/* Every worker that accepts (worker_accepts) polls the listening socket;
 * whichever accepts a connection serves it. Out of fds (EMFILE) pauses
 * accepting for a moment instead of spinning on a listener that stays
 * readable. */
static void worker_on_accept(uv_poll_t *handle, int status, int events)
{
	struct worker *w = handle->data;
	(void)events;

	if (status < 0) {
		/* libuv has stopped the poll; it stays stopped. */
		log_error("w%d: listener: %s", w->id, uv_strerror(status));
		w->accept_broken = true;
		return;
	}
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		int fd = accept4(w->accept_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			client_accept(w, fd);
			continue;
		}
		switch (errno) {
		case EINTR:
		case ECONNABORTED:
			continue;
		case EAGAIN:
			return;
		case EMFILE:
		case ENFILE:
		case ENOBUFS:
		case ENOMEM:
			log_warn("w%d: accept: %s; pausing new connections for %d ms", w->id,
			         strerror(errno), ACCEPT_BACKOFF_MS);
			uv_poll_stop(handle);
			uv_timer_start(&w->accept_backoff, worker_accept_resume, ACCEPT_BACKOFF_MS, 0);
			return;
		default:
			log_error("w%d: accept: %s", w->id, strerror(errno));
			return;
		}
	}
}

static void worker_accept_closed(uv_handle_t *handle)
{
	close((int)(intptr_t)handle->data);
	free(handle);
}

static void worker_listen(struct worker *w, int fd)
{
	if (w->stopping || w->draining || w->accept_poll != NULL) {
		close(fd);
		return;
	}
	w->accept_poll = malloc(sizeof(*w->accept_poll));
	if (w->accept_poll == NULL || uv_poll_init(&w->loop, w->accept_poll, fd) != 0) {
		int me = w->id + 1;
		/* Without the acceptor, every worker accepts. */
		atomic_compare_exchange_strong(&w->rt->acceptor, &me, 0);
		log_error("w%d: cannot watch the listening socket", w->id);
		free(w->accept_poll);
		w->accept_poll = NULL;
		close(fd);
		return;
	}
	w->accept_poll->data = w;
	w->accept_fd = fd;
	worker_accept_update(w);
}

int32_t worker_cancel_key(struct worker *w)
{
	if (w->nkeys == 0) {
		if (getrandom(w->keys, sizeof(w->keys), 0) == (ssize_t)sizeof(w->keys)) {
			w->nkeys = (int)(sizeof(w->keys) / sizeof(w->keys[0]));
		} else {
			log_warn("w%d: getrandom: %s", w->id, strerror(errno));
			return (int32_t)random();
		}
	}
	return w->keys[--w->nkeys];
}

static void worker_handle(struct worker *w, struct msg *m)
{
	struct client *c;

	switch (m->type) {
	case MSG_LISTEN:
		worker_listen(w, m->fd);
		break;
	case MSG_GRANT:
		c = worker_client_by_slot(w, m->slot);
		if (!w->stopping && c != NULL && c->id == m->client_id && c->state == CLIENT_WAITING)
			client_granted(c, m->server);
		else
			worker_grant_refused(w, m);
		break;
	case MSG_MIGRATE: {
		struct pool_handoff h = {
			.pool = m->pool, .worker = m->worker, .slot = m->slot, .client_id = m->client_id,
			.server = m->server,
		};
		server_migrate(w, m->server, &h);
		break;
	}
	case MSG_EVICT:
		server_close(m->server, "max_db_connections: room for another pool of the database");
		break;
	case MSG_CANCEL: {
		struct cancel_from from = {
			.rt = w->rt, .worker = m->worker, .slot = m->slot, .client_id = m->client_id,
		};
		c = worker_client_by_slot(w, (uint32_t)m->pid & (MAX_SLOTS - 1));
		if (c == NULL || !client_cancel(c, m->key, &from))
			worker_cancel_done(&from);
		break;
	}
	case MSG_CANCEL_DONE:
		c = worker_client_by_slot(w, m->slot);
		if (c != NULL && c->id == m->client_id && c->cancel_sent)
			client_close(c, "cancel request carried out");
		break;
	case MSG_CONFIG:
		config_unref(w->cfg);
		w->cfg = m->cfg;
		atomic_fetch_add(&w->reloads, 1);
		uv_async_send(w->rt->reloaded);
		break;
	case MSG_DRAIN:
		if (!w->draining && !w->stopping)
			worker_drain(w);
		break;
	case MSG_STOP:
		if (!w->stopping)
			worker_stop(w);
		break;
	}
	free(m);
}

static void worker_doorbell(uv_async_t *handle)
{
	struct worker *w = handle->data;
	bool was_stopping = w->stopping;

	for (struct msg *m = inbox_take(w, false), *next; m != NULL; m = next) {
		next = m->next;
		worker_handle(w, m);
	}
	/* The first STOP closes the inbox; what got in before that is handled
	 * here, in stopping mode, so no fd or server is left in a queue. */
	if (w->stopping && !was_stopping) {
		for (struct msg *m = inbox_take(w, true), *next; m != NULL; m = next) {
			next = m->next;
			worker_handle(w, m);
		}
		/* No MSG_MIGRATE can come any more. */
		worker_close_servers(w, true);
	}
}

static void worker_walk_report(uv_handle_t *h, void *arg)
{
	struct worker *w = arg;
	log_error("w%d: handle still open at exit: %s%s", w->id,
	          uv_handle_type_name(uv_handle_get_type(h)),
	          uv_is_closing(h) ? " (closing)" : "");
}

static void worker_main(void *arg)
{
	struct worker *w = arg;
	struct runtime *rt = w->rt;

	uv_run(&w->loop, UV_RUN_DEFAULT);
	w->loop_close_rc = uv_loop_close(&w->loop);
	if (w->loop_close_rc != 0) {
		uv_walk(&w->loop, worker_walk_report, w);
		log_error("w%d: uv_loop_close: %s", w->id, uv_strerror(w->loop_close_rc));
	}
	free(w->slots);
	free(w->slot_next);
	buf_cache_destroy(&w->bufs);
	buf_free(&w->scratch);
	config_unref(w->cfg);
	w->cfg = NULL;
	w->slots = NULL;
	w->slot_next = NULL;
	log_debug("w%d: finished", w->id);

	uv_mutex_lock(&rt->life_mtx);
	w->finished = true;
	rt->nfinished++;
	uv_async_send(rt->worker_done);
	uv_mutex_unlock(&rt->life_mtx);
}

int worker_start(struct worker *w, struct runtime *rt, int id)
{
	int rc;

	w->id = id;
	w->rt = rt;
	w->free_slot = NO_SLOT;
	list_init(&w->clients);
	list_init(&w->servers);
	list_init(&w->logins);
	list_init(&w->waits);
	list_init(&w->idle_clients);
	list_init(&w->idle_tx);
	list_init(&w->idle_servers);
	list_init(&w->flushes);
	list_init(&w->server_flushes);
	if ((rc = buf_cache_init(&w->bufs, RELAY_BUF, 64)) != 0)
		return rc;
	w->cfg = config_ref(rt->cfg);
	if ((rc = uv_loop_init(&w->loop)) != 0)
		goto err_cache;
	if ((rc = uv_mutex_init(&w->inbox_mtx)) != 0)
		goto err_loop;
	if ((rc = uv_async_init(&w->loop, &w->doorbell, worker_doorbell)) != 0)
		goto err_mtx;
	w->doorbell.data = w;
	uv_timer_init(&w->loop, &w->login_timer);
	w->login_timer.data = w;
	uv_timer_init(&w->loop, &w->accept_backoff);
	w->accept_backoff.data = w;
	if ((rc = worker_janitor_open(w)) != 0)
		goto err_timers;
	uv_check_init(&w->loop, &w->flush_check);
	w->flush_check.data = w;
	uv_check_start(&w->flush_check, worker_flush);
	uv_idle_init(&w->loop, &w->flush_idle);
	w->flush_idle.data = w;
	if ((rc = uv_thread_create(&w->thread, worker_main, w)) != 0)
		goto err_async;
	return 0;

err_async:
	uv_close((uv_handle_t *)&w->janitor, worker_janitor_closed);
	uv_close((uv_handle_t *)&w->flush_check, NULL);
	uv_close((uv_handle_t *)&w->flush_idle, NULL);
err_timers:
	uv_close((uv_handle_t *)&w->doorbell, NULL);
	uv_close((uv_handle_t *)&w->login_timer, NULL);
	uv_close((uv_handle_t *)&w->accept_backoff, NULL);
	uv_run(&w->loop, UV_RUN_NOWAIT);
err_mtx:
	uv_mutex_destroy(&w->inbox_mtx);
err_loop:
	uv_loop_close(&w->loop);
err_cache:
	buf_cache_destroy(&w->bufs);
	config_unref(w->cfg);
	w->cfg = NULL;
	return rc;
}
