/*
 * Unit tests of the shared pool registry (src/pool.c). The registry is pure
 * logic, so the tests drive it directly: servers are dummy pointers (the
 * addresses of static chars), databases are struct db_config values with
 * only a name. What is asserted is what a user of the pooler would notice:
 * how many server connections a (database, user) gets, which client is
 * served next, which server it gets, and that nothing is left behind once
 * every client is gone. A randomized run (TCase "model") checks the same
 * against a model over thousands of steps, first without a registry config,
 * then through reloads and pauses; build with ASan/LSan (make check-asan) to
 * prove that freed pools and destroyed registries leak nothing. Reloads and
 * pauses (TCases "reload", "pause", and the model run) use real config
 * snapshots parsed from YAML, so ASan also sees who holds each snapshot.
 */
#include <check.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "list.h"
#include "pool.h"

static struct pool_registry reg;
static struct db_config db_app = { .name = "app" };
static struct db_config db_other = { .name = "other" };

/* Dummy servers: only their addresses matter. */
static char srv[64];

static void setup(void)
{
	pool_registry_init(&reg);
}

/* Dummy servers need no freeing. */
static void free_nothing(void *server)
{
	(void)server;
}

static void teardown(void)
{
	pool_registry_destroy(&reg, free_nothing);
}

static size_t npools(void)
{
	struct list *pos, *tmp;
	size_t n = 0;

	list_for_each_safe(pos, tmp, &reg.pools)
		n++;
	return n;
}

static bool pool_listed(const struct pool *pool)
{
	struct list *pos, *tmp;

	list_for_each_safe(pos, tmp, &reg.pools)
		if (list_entry(pos, struct pool, node) == pool)
			return true;
	return false;
}

static void expect_counts(struct pool *pool, int nservers, int nidle, int nwaiters)
{
	int s, i, w;

	pool_counts(&reg, pool, &s, &i, &w);
	ck_assert_int_eq(s, nservers);
	ck_assert_int_eq(i, nidle);
	ck_assert_int_eq(w, nwaiters);
}

static void waiter_init(struct pool_waiter *w, int worker, uint32_t slot, uint64_t id)
{
	memset(w, 0, sizeof(*w));
	list_init(&w->node);
	w->worker = worker;
	w->slot = slot;
	w->client_id = id;
}

static void expect_handoff(const struct pool_handoff *h, const struct pool_waiter *w,
                           const void *server)
{
	ck_assert_int_eq(h->worker, w->worker);
	ck_assert_uint_eq(h->slot, w->slot);
	ck_assert_uint_eq(h->client_id, w->client_id);
	ck_assert_ptr_eq(h->server, server);
}

/* Reserves n connection slots, all of which must be granted; the test then
 * stands for the clients that hold them. */
static void take_slots(struct pool *pool, int n)
{
	struct pool_waiter w;
	void *server = NULL;

	for (int i = 0; i < n; i++) {
		waiter_init(&w, 0, (uint32_t)i, (uint64_t)i);
		ck_assert_int_eq(pool_acquire(&reg, pool, &w, &server), POOL_MAY_CONNECT);
	}
}

START_TEST(attach_same_and_different)
{
	struct db_config app_again = { .name = "app" };
	char user[16];
	struct pool *a, *b, *c, *d, *e;

	/* The user name is copied: the caller's buffer may change or go away. */
	strcpy(user, "alice");
	a = pool_attach(&reg, &db_app, user, 4);
	strcpy(user, "zzzzz");
	b = pool_attach(&reg, &db_app, "alice", 4);
	c = pool_attach(&reg, &db_app, "bob", 4);
	d = pool_attach(&reg, &db_other, "alice", 4);
	/* Databases are matched by name, not by the config object. */
	e = pool_attach(&reg, &app_again, "alice", 4);

	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_eq(a, b);
	ck_assert_ptr_eq(a, e);
	ck_assert_ptr_ne(a, c);
	ck_assert_ptr_ne(a, d);
	ck_assert_ptr_ne(c, d);
	ck_assert_str_eq(a->user, "alice");
	ck_assert_str_eq(a->dbname, "app");
	ck_assert_int_eq(a->nclients, 3);
	ck_assert_uint_eq(npools(), 3);

	pool_detach(&reg, a);
	pool_detach(&reg, b);
	ck_assert_uint_eq(npools(), 3);
	pool_detach(&reg, e);
	ck_assert_uint_eq(npools(), 2);
	pool_detach(&reg, c);
	pool_detach(&reg, d);
	ck_assert(list_empty(&reg.pools));
}
END_TEST

START_TEST(acquire_up_to_size_then_wait)
{
	struct pool *pool = pool_attach(&reg, &db_app, "alice", 3);
	struct pool_waiter w[5];
	void *server = NULL;

	for (int i = 0; i < 3; i++) {
		waiter_init(&w[i], 0, (uint32_t)i, (uint64_t)i + 1);
		ck_assert_int_eq(pool_acquire(&reg, pool, &w[i], &server), POOL_MAY_CONNECT);
		expect_counts(pool, i + 1, 0, 0);
	}
	for (int i = 3; i < 5; i++) {
		waiter_init(&w[i], 0, (uint32_t)i, (uint64_t)i + 1);
		ck_assert_int_eq(pool_acquire(&reg, pool, &w[i], &server), POOL_MUST_WAIT);
		expect_counts(pool, 3, 0, i - 2);
	}
	/* Another user on the same database has its own cap. */
	struct pool *other = pool_attach(&reg, &db_app, "bob", 1);
	struct pool_waiter ow;
	waiter_init(&ow, 1, 0, 99);
	ck_assert_int_eq(pool_acquire(&reg, other, &ow, &server), POOL_MAY_CONNECT);
	expect_counts(other, 1, 0, 0);
	expect_counts(pool, 3, 0, 2);

	ck_assert(pool_cancel_wait(&reg, pool, &w[3]));
	ck_assert(pool_cancel_wait(&reg, pool, &w[4]));
	struct pool_handoff h;
	for (int i = 0; i < 3; i++)
		ck_assert(!pool_server_closed(&reg, pool, &h));
	ck_assert(!pool_server_closed(&reg, other, &h));
	pool_detach(&reg, other);
	pool_detach(&reg, pool);
	ck_assert(list_empty(&reg.pools));
}
END_TEST

START_TEST(release_parks_most_recent_first)
{
	struct pool *pool = pool_attach(&reg, &db_app, "alice", 3);
	struct pool_waiter w;
	struct pool_handoff h;
	void *server = NULL;

	take_slots(pool, 3);
	for (int i = 0; i < 3; i++) {
		ck_assert(!pool_release(&reg, pool, &srv[i], 0, &h));
		expect_counts(pool, 3, i + 1, 0);
	}
	for (int i = 2; i >= 0; i--) {
		server = NULL;
		waiter_init(&w, 0, 0, 1);
		ck_assert_int_eq(pool_acquire(&reg, pool, &w, &server), POOL_GOT_IDLE);
		ck_assert_ptr_eq(server, &srv[i]);
		ck_assert(!list_linked(&w.node));
		expect_counts(pool, 3, i, 0);
	}
	/* All three are in use again: the next one waits, it does not connect. */
	waiter_init(&w, 0, 0, 1);
	ck_assert_int_eq(pool_acquire(&reg, pool, &w, &server), POOL_MUST_WAIT);
	ck_assert(pool_cancel_wait(&reg, pool, &w));

	/* A server parked again is the one handed out next. */
	ck_assert(!pool_release(&reg, pool, &srv[1], 0, &h));
	ck_assert(!pool_release(&reg, pool, &srv[0], 0, &h));
	ck_assert_int_eq(pool_acquire(&reg, pool, &w, &server), POOL_GOT_IDLE);
	ck_assert_ptr_eq(server, &srv[0]);
	ck_assert(!pool_release(&reg, pool, &srv[0], 0, &h));
	expect_counts(pool, 3, 2, 0);

	pool_detach(&reg, pool);
}
END_TEST

START_TEST(release_hands_to_head_waiter_fifo)
{
	struct pool *pool = pool_attach(&reg, &db_app, "alice", 1);
	struct pool_waiter first, w[4];
	struct pool_handoff h;
	void *server = NULL;

	waiter_init(&first, 0, 0, 1);
	ck_assert_int_eq(pool_acquire(&reg, pool, &first, &server), POOL_MAY_CONNECT);
	/* Waiters on different workers, queued in this order. */
	for (int i = 0; i < 4; i++) {
		waiter_init(&w[i], 3 - i, 100u + (uint32_t)i, 1000u + (uint64_t)i);
		ck_assert_int_eq(pool_acquire(&reg, pool, &w[i], &server), POOL_MUST_WAIT);
	}
	expect_counts(pool, 1, 0, 4);

	memset(&h, 0xa5, sizeof(h));
	ck_assert(pool_release(&reg, pool, &srv[7], 0, &h));
	expect_handoff(&h, &w[0], &srv[7]);
	expect_counts(pool, 1, 0, 3);
	/* Once popped, a waiter cannot be cancelled: the handoff is on its way. */
	ck_assert(!pool_cancel_wait(&reg, pool, &w[0]));

	/* The same server goes round, always to the head, never parked. */
	ck_assert(pool_release(&reg, pool, &srv[7], 0, &h));
	expect_handoff(&h, &w[1], &srv[7]);
	ck_assert(pool_release(&reg, pool, &srv[7], 0, &h));
	expect_handoff(&h, &w[2], &srv[7]);
	ck_assert(pool_release(&reg, pool, &srv[7], 0, &h));
	expect_handoff(&h, &w[3], &srv[7]);
	expect_counts(pool, 1, 0, 0);

	/* No one left waiting: now it parks. */
	ck_assert(!pool_release(&reg, pool, &srv[7], 0, &h));
	expect_counts(pool, 1, 1, 0);
	pool_detach(&reg, pool);
}
END_TEST

START_TEST(server_closed_hands_slot_to_head_waiter)
{
	struct pool *pool = pool_attach(&reg, &db_app, "alice", 2);
	struct pool_waiter w[3];
	struct pool_handoff h;
	void *server = NULL;

	take_slots(pool, 2);
	for (int i = 0; i < 3; i++) {
		waiter_init(&w[i], i, 10u + (uint32_t)i, 500u + (uint64_t)i);
		ck_assert_int_eq(pool_acquire(&reg, pool, &w[i], &server), POOL_MUST_WAIT);
	}

	memset(&h, 0xa5, sizeof(h));
	ck_assert(pool_server_closed(&reg, pool, &h));
	expect_handoff(&h, &w[0], NULL);
	expect_counts(pool, 2, 0, 2);

	ck_assert(pool_server_closed(&reg, pool, &h));
	expect_handoff(&h, &w[1], NULL);
	expect_counts(pool, 2, 0, 1);

	/* A released server still goes to the head after slots were handed. */
	ck_assert(pool_release(&reg, pool, &srv[3], 0, &h));
	expect_handoff(&h, &w[2], &srv[3]);
	expect_counts(pool, 2, 0, 0);

	/* Without waiters a close just frees the slot. */
	ck_assert(!pool_server_closed(&reg, pool, &h));
	expect_counts(pool, 1, 0, 0);
	ck_assert(!pool_server_closed(&reg, pool, &h));
	expect_counts(pool, 0, 0, 0);
	/* The client is still attached, so the pool stays. */
	ck_assert(pool_listed(pool));
	pool_detach(&reg, pool);
	ck_assert(list_empty(&reg.pools));
}
END_TEST

/*
 * server_idle_timeout with min_pool_size 1 and three idle servers, as two
 * workers' janitors see it: a spare taken for closing still counts until it
 * is closed, so takes made meanwhile (the other worker's) stop at the
 * minimum, and the one kept stays idle and can be acquired.
 */
START_TEST(idle_spares_stop_at_min_pool_size)
{
	struct pool *pool = pool_attach(&reg, &db_app, "alice", 3);
	struct pool_waiter w;
	struct pool_handoff h;
	void *server = NULL;

	take_slots(pool, 3);
	for (int i = 0; i < 3; i++)
		ck_assert(!pool_release(&reg, pool, &srv[i], 0, &h));
	ck_assert_int_eq(pool_take_idle_spare(&reg, pool, &srv[0], 1), POOL_SPARE_TAKEN);
	ck_assert_int_eq(pool_take_idle_spare(&reg, pool, &srv[1], 1), POOL_SPARE_TAKEN);
	/* Neither is closed yet: the third is the one min_pool_size keeps. */
	ck_assert_int_eq(pool_take_idle_spare(&reg, pool, &srv[2], 1), POOL_SPARE_KEPT);
	expect_counts(pool, 3, 1, 0);
	/* One taken already is no longer idle. */
	ck_assert_int_eq(pool_take_idle_spare(&reg, pool, &srv[0], 0), POOL_SPARE_GONE);
	ck_assert(!pool_spare_closed(&reg, pool, &h));
	ck_assert(!pool_spare_closed(&reg, pool, &h));
	expect_counts(pool, 1, 1, 0);
	ck_assert_int_eq(pool_take_idle_spare(&reg, pool, &srv[2], 1), POOL_SPARE_KEPT);
	waiter_init(&w, 0, 0, 1);
	ck_assert_int_eq(pool_acquire(&reg, pool, &w, &server), POOL_GOT_IDLE);
	ck_assert_ptr_eq(server, &srv[2]);
	ck_assert(!pool_server_closed(&reg, pool, &h));
	pool_detach(&reg, pool);
	ck_assert(list_empty(&reg.pools));
}
END_TEST

/*
 * A spare's slot, given up once it is closed, goes to the head waiter.
 */
START_TEST(closed_spare_hands_slot_to_waiter)
{
	struct pool *pool = pool_attach(&reg, &db_app, "alice", 1);
	struct pool_waiter w;
	struct pool_handoff h;
	void *server = NULL;

	take_slots(pool, 1);
	ck_assert(!pool_release(&reg, pool, &srv[0], 0, &h));
	ck_assert_int_eq(pool_take_idle_spare(&reg, pool, &srv[0], 0), POOL_SPARE_TAKEN);
	/* Still counted while it closes: a newcomer waits. */
	waiter_init(&w, 1, 7, 42);
	ck_assert_int_eq(pool_acquire(&reg, pool, &w, &server), POOL_MUST_WAIT);
	ck_assert(pool_spare_closed(&reg, pool, &h));
	expect_handoff(&h, &w, NULL);
	expect_counts(pool, 1, 0, 0);
	ck_assert(!pool_server_closed(&reg, pool, &h));
	pool_detach(&reg, pool);
	ck_assert(list_empty(&reg.pools));
}
END_TEST

START_TEST(server_closed_frees_slot_for_next_acquire)
{
	struct pool *pool = pool_attach(&reg, &db_app, "alice", 2);
	struct pool_waiter w;
	struct pool_handoff h;
	void *server = NULL;

	take_slots(pool, 2);
	waiter_init(&w, 0, 0, 1);
	ck_assert_int_eq(pool_acquire(&reg, pool, &w, &server), POOL_MUST_WAIT);
	ck_assert(pool_cancel_wait(&reg, pool, &w));
	ck_assert(!pool_server_closed(&reg, pool, &h));
	expect_counts(pool, 1, 0, 0);
	waiter_init(&w, 0, 0, 1);
	ck_assert_int_eq(pool_acquire(&reg, pool, &w, &server), POOL_MAY_CONNECT);
	expect_counts(pool, 2, 0, 0);
	ck_assert(!pool_server_closed(&reg, pool, &h));
	ck_assert(!pool_server_closed(&reg, pool, &h));
	pool_detach(&reg, pool);
	ck_assert(list_empty(&reg.pools));
}
END_TEST

START_TEST(cancel_wait)
{
	struct pool *pool = pool_attach(&reg, &db_app, "alice", 1);
	struct pool_waiter w[3];
	struct pool_handoff h;
	void *server = NULL;

	take_slots(pool, 1);
	for (int i = 0; i < 3; i++) {
		waiter_init(&w[i], 0, (uint32_t)i, 10u + (uint64_t)i);
		ck_assert_int_eq(pool_acquire(&reg, pool, &w[i], &server), POOL_MUST_WAIT);
	}

	/* Cancelling the middle one keeps the others in order. */
	ck_assert(pool_cancel_wait(&reg, pool, &w[1]));
	expect_counts(pool, 1, 0, 2);
	ck_assert(!list_linked(&w[1].node));
	/* A second cancel is harmless and says it was not queued. */
	ck_assert(!pool_cancel_wait(&reg, pool, &w[1]));
	expect_counts(pool, 1, 0, 2);

	ck_assert(pool_release(&reg, pool, &srv[0], 0, &h));
	expect_handoff(&h, &w[0], &srv[0]);
	ck_assert(!pool_cancel_wait(&reg, pool, &w[0]));
	expect_counts(pool, 1, 0, 1);

	/* The receiver of a cancelled client passes the server on. */
	ck_assert(pool_release(&reg, pool, h.server, 0, &h));
	expect_handoff(&h, &w[2], &srv[0]);
	ck_assert(!pool_cancel_wait(&reg, pool, &w[2]));
	expect_counts(pool, 1, 0, 0);

	/* A cancelled waiter can queue again, at the tail. */
	struct pool_waiter late;
	waiter_init(&late, 2, 7, 77);
	ck_assert_int_eq(pool_acquire(&reg, pool, &late, &server), POOL_MUST_WAIT);
	ck_assert_int_eq(pool_acquire(&reg, pool, &w[1], &server), POOL_MUST_WAIT);
	ck_assert(pool_server_closed(&reg, pool, &h));
	expect_handoff(&h, &late, NULL);
	ck_assert(pool_cancel_wait(&reg, pool, &w[1]));
	ck_assert(!pool_server_closed(&reg, pool, &h));
	expect_counts(pool, 0, 0, 0);
	pool_detach(&reg, pool);
	ck_assert(list_empty(&reg.pools));
}
END_TEST

START_TEST(unused_pool_is_freed)
{
	struct pool *pool = pool_attach(&reg, &db_app, "alice", 2);
	struct pool_waiter w;
	struct pool_handoff h;
	void *server = NULL;

	ck_assert_uint_eq(npools(), 1);
	pool_detach(&reg, pool);
	ck_assert(list_empty(&reg.pools));

	/* A parked server keeps the pool (and itself) after the last client. */
	pool = pool_attach(&reg, &db_app, "alice", 2);
	expect_counts(pool, 0, 0, 0);
	ck_assert_int_eq(pool->nclients, 1);
	take_slots(pool, 2);
	ck_assert(!pool_release(&reg, pool, &srv[0], 0, &h));
	pool_detach(&reg, pool);
	ck_assert(pool_listed(pool));
	expect_counts(pool, 2, 1, 0);

	/* A new client finds the parked server. */
	struct pool *again = pool_attach(&reg, &db_app, "alice", 2);
	ck_assert_ptr_eq(again, pool);
	waiter_init(&w, 0, 0, 1);
	ck_assert_int_eq(pool_acquire(&reg, pool, &w, &server), POOL_GOT_IDLE);
	ck_assert_ptr_eq(server, &srv[0]);
	pool_detach(&reg, pool);

	/* The last server closing with no client attached frees the pool. */
	ck_assert(!pool_server_closed(&reg, pool, &h));
	ck_assert(pool_listed(pool));
	ck_assert(!pool_server_closed(&reg, pool, &h));
	ck_assert(list_empty(&reg.pools));

	/* Attaching again starts from nothing. */
	pool = pool_attach(&reg, &db_app, "alice", 2);
	expect_counts(pool, 0, 0, 0);
	ck_assert_int_eq(pool->nclients, 1);
	ck_assert_ptr_null(pool->idle[0].server);
	waiter_init(&w, 0, 0, 1);
	ck_assert_int_eq(pool_acquire(&reg, pool, &w, &server), POOL_MAY_CONNECT);
	ck_assert(!pool_server_closed(&reg, pool, &h));
	pool_detach(&reg, pool);
	ck_assert(list_empty(&reg.pools));
}
END_TEST

static int nfreed;
static char freed[64];

static void count_free(void *server)
{
	char *s = server;

	ck_assert(s >= srv && s < srv + sizeof(srv));
	freed[s - srv]++;
	nfreed++;
}

START_TEST(destroy_frees_parked_servers)
{
	struct pool *a = pool_attach(&reg, &db_app, "alice", 3);
	struct pool *b = pool_attach(&reg, &db_other, "bob", 2);
	struct pool_handoff h;

	take_slots(a, 3);
	take_slots(b, 2);
	ck_assert(!pool_release(&reg, a, &srv[1], 0, &h));
	ck_assert(!pool_release(&reg, a, &srv[2], 0, &h));
	ck_assert(!pool_release(&reg, b, &srv[5], 0, &h));
	/* a's third slot and b's second are in use: not the registry's to free. */
	pool_detach(&reg, a);
	pool_detach(&reg, b);

	nfreed = 0;
	memset(freed, 0, sizeof(freed));
	pool_registry_destroy(&reg, count_free);
	ck_assert_int_eq(nfreed, 3);
	ck_assert_int_eq(freed[1], 1);
	ck_assert_int_eq(freed[2], 1);
	ck_assert_int_eq(freed[5], 1);
	/* The fixture's teardown destroys again; start a fresh registry. */
	pool_registry_init(&reg);
}
END_TEST

/* Pools are created for any user name a client sends; they must not pile up. */
START_TEST(many_users_leave_no_pools)
{
	enum { NUSERS = 4096 };
	static struct pool *pools[NUSERS];
	char user[32];

	for (int i = 0; i < NUSERS; i++) {
		snprintf(user, sizeof(user), "user%d", i);
		pools[i] = pool_attach(&reg, i % 2 ? &db_app : &db_other, user, 2);
		ck_assert_ptr_nonnull(pools[i]);
	}
	ck_assert_uint_eq(npools(), NUSERS);
	for (int i = 0; i < NUSERS; i++)
		pool_detach(&reg, pools[i]);
	ck_assert(list_empty(&reg.pools));
}
END_TEST

/* Databases with the limits the tests below exercise. */
static struct db_config db_reserve = { .name = "reserve", .reserve_pool_size = 1 };
static struct db_config db_capped = { .name = "capped", .max_db_connections = 2 };
static struct db_config db_min = { .name = "min", .min_pool_size = 2 };

static void expect_idle(struct pool *pool, int k, const void *server, int worker)
{
	ck_assert_ptr_eq(pool->idle[k].server, server);
	ck_assert_int_eq(pool->idle[k].worker, worker);
}

/* Acquires an idle server for a client on worker and checks which one it
 * got and on whose loop it sits. */
static void expect_got_idle(struct pool *pool, int worker, const void *server, int owner)
{
	struct pool_waiter w;
	void *got = NULL;

	waiter_init(&w, worker, 0, 1);
	w.idle_owner = -1;
	ck_assert_int_eq(pool_acquire(&reg, pool, &w, &got), POOL_GOT_IDLE);
	ck_assert_ptr_eq(got, server);
	ck_assert_int_eq(w.idle_owner, owner);
	ck_assert(!list_linked(&w.node));
}

/* A client reuses an idle server of its own worker (no migration) when
 * there is one, the most recently parked of them; otherwise the most
 * recently parked of all, and it learns which worker holds it. */
START_TEST(idle_prefers_own_worker)
{
	struct pool *pool = pool_attach(&reg, &db_app, "alice", 5);
	struct pool_handoff h;

	take_slots(pool, 5);
	ck_assert_int_eq(pool_release(&reg, pool, &srv[0], 1, &h), POOL_PARKED);
	ck_assert_int_eq(pool_release(&reg, pool, &srv[1], 2, &h), POOL_PARKED);
	ck_assert_int_eq(pool_release(&reg, pool, &srv[2], 1, &h), POOL_PARKED);
	ck_assert_int_eq(pool_release(&reg, pool, &srv[3], 3, &h), POOL_PARKED);
	ck_assert_int_eq(pool_release(&reg, pool, &srv[4], 2, &h), POOL_PARKED);
	expect_counts(pool, 5, 5, 0);
	expect_idle(pool, 0, &srv[0], 1);
	expect_idle(pool, 4, &srv[4], 2);

	/* Worker 1's newest, not the newest overall (srv[4] on worker 2). */
	expect_got_idle(pool, 1, &srv[2], 1);
	expect_counts(pool, 5, 4, 0);
	/* The others keep their order: 0/w1, 1/w2, 3/w3, 4/w2. */
	expect_idle(pool, 0, &srv[0], 1);
	expect_idle(pool, 1, &srv[1], 2);
	expect_idle(pool, 2, &srv[3], 3);
	expect_idle(pool, 3, &srv[4], 2);
	/* Worker 1's last one is the oldest of all. */
	expect_got_idle(pool, 1, &srv[0], 1);
	/* Worker 1 has none left: the newest of any worker, on worker 2. */
	expect_got_idle(pool, 1, &srv[4], 2);
	/* A worker that never parked one gets the newest too. */
	expect_got_idle(pool, 7, &srv[3], 3);
	expect_got_idle(pool, 2, &srv[1], 2);
	expect_counts(pool, 5, 0, 0);

	/* Parked again on another worker, a server follows that worker. */
	ck_assert_int_eq(pool_release(&reg, pool, &srv[1], 3, &h), POOL_PARKED);
	ck_assert_int_eq(pool_release(&reg, pool, &srv[3], 0, &h), POOL_PARKED);
	expect_got_idle(pool, 3, &srv[1], 3);
	expect_got_idle(pool, 3, &srv[3], 0);
	pool_detach(&reg, pool);
}
END_TEST

START_TEST(release_results)
{
	struct pool *pool = pool_attach(&reg, &db_reserve, "alice", 1);
	struct pool *other = pool_attach(&reg, &db_app, "alice", 1);
	struct pool_waiter w[3];
	struct pool_handoff h, sweep[4];
	void *server = NULL;

	/* Nobody waits: the server parks, and no handoff is made. */
	take_slots(other, 1);
	memset(&h, 0xa5, sizeof(h));
	ck_assert_int_eq(pool_release(&reg, other, &srv[9], 4, &h), POOL_PARKED);
	expect_counts(other, 1, 1, 0);
	expect_idle(other, 0, &srv[9], 4);

	/* Waiters: the head one gets it, and the handoff names the pool. */
	take_slots(pool, 1);
	for (int i = 0; i < 3; i++) {
		waiter_init(&w[i], i, 20u + (uint32_t)i, 200u + (uint64_t)i);
		w[i].since_ms = 100 + 10 * (uint64_t)i;
		ck_assert_int_eq(pool_acquire(&reg, pool, &w[i], &server), POOL_MUST_WAIT);
	}
	memset(&h, 0xa5, sizeof(h));
	ck_assert_int_eq(pool_release(&reg, pool, &srv[0], 5, &h), POOL_HANDED);
	ck_assert_ptr_eq(h.pool, pool);
	expect_handoff(&h, &w[0], &srv[0]);
	expect_counts(pool, 1, 0, 2);

	/* w[1] has waited long enough for the reserve: a second server. */
	ck_assert_int_eq(pool_reserve_sweep(&reg, 115, sweep, 4), 1);
	ck_assert_ptr_eq(sweep[0].pool, pool);
	expect_handoff(&sweep[0], &w[1], NULL);
	expect_counts(pool, 2, 0, 1);

	/* Over pool_size, but someone waits: handed, not closed. */
	memset(&h, 0xa5, sizeof(h));
	ck_assert_int_eq(pool_release(&reg, pool, &srv[1], 0, &h), POOL_HANDED);
	ck_assert_ptr_eq(h.pool, pool);
	expect_handoff(&h, &w[2], &srv[1]);
	expect_counts(pool, 2, 0, 0);

	/* Over pool_size and nobody waits: the caller must close it. */
	ck_assert_int_eq(pool_release(&reg, pool, &srv[1], 0, &h), POOL_SURPLUS);
	expect_counts(pool, 2, 0, 0);
	ck_assert(!pool_server_closed(&reg, pool, &h));
	expect_counts(pool, 1, 0, 0);
	/* Back at pool_size, the last one parks. */
	ck_assert_int_eq(pool_release(&reg, pool, &srv[0], 0, &h), POOL_PARKED);
	expect_counts(pool, 1, 1, 0);
	/* Unrelated pools were not touched. */
	expect_counts(other, 1, 1, 0);

	pool_detach(&reg, pool);
	pool_detach(&reg, other);
}
END_TEST

START_TEST(take_idle)
{
	struct pool *pool = pool_attach(&reg, &db_app, "alice", 3);
	struct pool *other = pool_attach(&reg, &db_app, "bob", 1);
	struct pool_handoff h;

	take_slots(pool, 3);
	take_slots(other, 1);
	ck_assert_int_eq(pool_release(&reg, other, &srv[5], 0, &h), POOL_PARKED);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(pool_release(&reg, pool, &srv[i], i, &h), POOL_PARKED);

	/* Taken out of the middle: still counted, no longer handed out. */
	ck_assert(pool_take_idle(&reg, pool, &srv[1]));
	expect_counts(pool, 3, 2, 0);
	expect_idle(pool, 0, &srv[0], 0);
	expect_idle(pool, 1, &srv[2], 2);
	/* A second take finds it gone. */
	ck_assert(!pool_take_idle(&reg, pool, &srv[1]));
	/* A server parked in another pool is not this pool's. */
	ck_assert(!pool_take_idle(&reg, pool, &srv[5]));
	expect_counts(other, 1, 1, 0);

	/* Once acquired by a client it cannot be taken. */
	expect_got_idle(pool, 9, &srv[2], 2);
	ck_assert(!pool_take_idle(&reg, pool, &srv[2]));
	expect_counts(pool, 3, 1, 0);
	expect_got_idle(pool, 9, &srv[0], 0);
	expect_counts(pool, 3, 0, 0);

	/* The taken server is closed by its owner. */
	ck_assert(!pool_server_closed(&reg, pool, &h));
	expect_counts(pool, 2, 0, 0);
	pool_detach(&reg, pool);
	pool_detach(&reg, other);
}
END_TEST

static char *blob_new(const char *s, size_t len)
{
	char *b = malloc(len);

	ck_assert_ptr_nonnull(b);
	memcpy(b, s, len);
	return b;
}

/* The second blob is freed by the registry; the ASan build (LSan) fails
 * this test if it is not. */
START_TEST(defaults_set_once)
{
	static const char first[] = "TimeZone\0UTC\0DateStyle\0ISO, MDY";
	static const char second[] = "TimeZone\0Europe/Paris";
	struct pool *pool = pool_attach(&reg, &db_app, "alice", 2);
	struct pool *other = pool_attach(&reg, &db_app, "bob", 2);
	size_t len = 12345;

	ck_assert_ptr_null(pool_defaults(&reg, pool, &len));
	ck_assert_uint_eq(len, 0);

	char *b1 = blob_new(first, sizeof(first));
	pool_set_defaults(&reg, pool, 0, b1, sizeof(first));
	const char *got = pool_defaults(&reg, pool, &len);
	ck_assert_ptr_eq(got, b1);
	ck_assert_uint_eq(len, sizeof(first));
	ck_assert_mem_eq(got, first, sizeof(first));

	/* A later login's blob does not replace the first. */
	pool_set_defaults(&reg, pool, 0, blob_new(second, sizeof(second)), sizeof(second));
	got = pool_defaults(&reg, pool, &len);
	ck_assert_ptr_eq(got, b1);
	ck_assert_uint_eq(len, sizeof(first));
	ck_assert_mem_eq(got, first, sizeof(first));

	/* Each pool has its own. */
	ck_assert_ptr_null(pool_defaults(&reg, other, &len));
	pool_set_defaults(&reg, other, 0, blob_new(second, sizeof(second)), sizeof(second));
	got = pool_defaults(&reg, other, &len);
	ck_assert_uint_eq(len, sizeof(second));
	ck_assert_mem_eq(got, second, sizeof(second));

	/* Freeing the pools frees the blobs they kept (LSan again). */
	pool_detach(&reg, pool);
	pool_detach(&reg, other);
	ck_assert(list_empty(&reg.pools));
}
END_TEST

START_TEST(reserve_sweep)
{
	struct pool *pool = pool_attach(&reg, &db_reserve, "alice", 1);
	struct pool *plain = pool_attach(&reg, &db_app, "alice", 1);
	struct pool_waiter old, young, pw;
	struct pool_handoff h[4];
	void *server = NULL;

	take_slots(pool, 1);
	take_slots(plain, 1);
	waiter_init(&old, 1, 11, 111);
	old.since_ms = 1000;
	waiter_init(&young, 2, 22, 222);
	young.since_ms = 5000;
	waiter_init(&pw, 3, 33, 333);
	pw.since_ms = 10;
	ck_assert_int_eq(pool_acquire(&reg, pool, &old, &server), POOL_MUST_WAIT);
	ck_assert_int_eq(pool_acquire(&reg, pool, &young, &server), POOL_MUST_WAIT);
	ck_assert_int_eq(pool_acquire(&reg, plain, &pw, &server), POOL_MUST_WAIT);

	/* Nobody has waited long enough yet. */
	ck_assert_int_eq(pool_reserve_sweep(&reg, 999, h, 4), 0);
	expect_counts(pool, 1, 0, 2);

	/* The old waiter gets a connection of its own; the young one does
	 * not, and a pool without a reserve grants nothing. */
	memset(h, 0xa5, sizeof(h));
	ck_assert_int_eq(pool_reserve_sweep(&reg, 4000, h, 4), 1);
	ck_assert_ptr_eq(h[0].pool, pool);
	expect_handoff(&h[0], &old, NULL);
	ck_assert(!list_linked(&old.node));
	expect_counts(pool, 2, 0, 1);
	expect_counts(plain, 1, 0, 1);

	/* Later the young one has waited long too, but size + reserve are
	 * all in use. */
	ck_assert_int_eq(pool_reserve_sweep(&reg, 9000, h, 4), 0);
	expect_counts(pool, 2, 0, 1);
	/* A new client still waits: the reserve is not a bigger pool. */
	struct pool_waiter late;
	waiter_init(&late, 0, 44, 444);
	late.since_ms = 9500;
	ck_assert_int_eq(pool_acquire(&reg, pool, &late, &server), POOL_MUST_WAIT);
	expect_counts(pool, 2, 0, 2);

	/* The reserve server's connect failed: the slot is free again, but
	 * only for a waiter the sweep finds old enough. */
	ck_assert(!pool_server_closed(&reg, pool, &h[0]));
	expect_counts(pool, 1, 0, 2);
	ck_assert_int_eq(pool_reserve_sweep(&reg, 4000, h, 4), 0);
	expect_counts(pool, 1, 0, 2);
	memset(h, 0xa5, sizeof(h));
	ck_assert_int_eq(pool_reserve_sweep(&reg, 9000, h, 4), 1);
	expect_handoff(&h[0], &young, NULL);
	expect_counts(pool, 2, 0, 1);

	ck_assert(pool_cancel_wait(&reg, pool, &late));
	ck_assert(pool_cancel_wait(&reg, plain, &pw));
	pool_detach(&reg, pool);
	pool_detach(&reg, plain);
}
END_TEST

/* Several pools with old waiters: the sweep hands out at most max. */
START_TEST(reserve_sweep_max)
{
	struct pool *a = pool_attach(&reg, &db_reserve, "alice", 1);
	struct pool *b = pool_attach(&reg, &db_reserve, "bob", 1);
	struct pool_waiter wa, wb;
	struct pool_handoff h[2];
	void *server = NULL;

	take_slots(a, 1);
	take_slots(b, 1);
	waiter_init(&wa, 0, 1, 1);
	waiter_init(&wb, 0, 2, 2);
	ck_assert_int_eq(pool_acquire(&reg, a, &wa, &server), POOL_MUST_WAIT);
	ck_assert_int_eq(pool_acquire(&reg, b, &wb, &server), POOL_MUST_WAIT);
	memset(h, 0xa5, sizeof(h));
	ck_assert_int_eq(pool_reserve_sweep(&reg, 100, h, 1), 1);
	ck_assert_uint_eq(h[1].client_id, 0xa5a5a5a5a5a5a5a5ULL);
	ck_assert_int_eq(pool_reserve_sweep(&reg, 100, h, 1), 1);
	expect_counts(a, 2, 0, 0);
	expect_counts(b, 2, 0, 0);
	ck_assert_int_eq(pool_reserve_sweep(&reg, 100, h, 2), 0);
	pool_detach(&reg, a);
	pool_detach(&reg, b);
}
END_TEST

/* max_db_connections caps the servers of all pools of a database. */
START_TEST(max_db_caps_database)
{
	struct pool *a = pool_attach(&reg, &db_capped, "alice", 2);
	struct pool *b = pool_attach(&reg, &db_capped, "bob", 2);
	struct pool *o = pool_attach(&reg, &db_app, "bob", 2);
	struct pool_waiter w[2];
	struct pool_handoff h;
	void *server = NULL;

	take_slots(a, 2);
	/* b has room of its own, but the database is full. */
	waiter_init(&w[0], 1, 10, 100);
	waiter_init(&w[1], 2, 11, 101);
	ck_assert_int_eq(pool_acquire(&reg, b, &w[0], &server), POOL_MUST_WAIT);
	ck_assert_int_eq(pool_acquire(&reg, b, &w[1], &server), POOL_MUST_WAIT);
	expect_counts(b, 0, 0, 2);
	/* Another database is not affected. */
	take_slots(o, 2);

	/* a's server is closed and a has no waiter: b's head gets the slot. */
	memset(&h, 0xa5, sizeof(h));
	ck_assert(pool_server_closed(&reg, a, &h));
	ck_assert_ptr_eq(h.pool, b);
	expect_handoff(&h, &w[0], NULL);
	expect_counts(a, 1, 0, 0);
	expect_counts(b, 1, 0, 1);

	/* a's other server comes back while b waits: closing it lets b in,
	 * so it is surplus rather than parked. */
	ck_assert_int_eq(pool_release(&reg, a, &srv[0], 0, &h), POOL_SURPLUS);
	expect_counts(a, 1, 0, 0);
	memset(&h, 0xa5, sizeof(h));
	ck_assert(pool_server_closed(&reg, a, &h));
	ck_assert_ptr_eq(h.pool, b);
	expect_handoff(&h, &w[1], NULL);
	expect_counts(a, 0, 0, 0);
	expect_counts(b, 2, 0, 0);

	/* a is now the one kept out. */
	struct pool_waiter aw;
	waiter_init(&aw, 3, 12, 102);
	ck_assert_int_eq(pool_acquire(&reg, a, &aw, &server), POOL_MUST_WAIT);
	/* b's server comes back while a waits (b itself has no waiter):
	 * closing it lets a in, so it is surplus. */
	ck_assert_int_eq(pool_release(&reg, b, &srv[1], 0, &h), POOL_SURPLUS);
	ck_assert(pool_server_closed(&reg, b, &h));
	ck_assert_ptr_eq(h.pool, a);
	expect_handoff(&h, &aw, NULL);
	expect_counts(a, 1, 0, 0);
	expect_counts(b, 1, 0, 0);
	/* Nobody waits: servers park even with the database at its cap. */
	ck_assert_int_eq(pool_release(&reg, b, &srv[2], 0, &h), POOL_PARKED);
	ck_assert_int_eq(pool_release(&reg, a, &srv[3], 0, &h), POOL_PARKED);
	expect_counts(a, 1, 1, 0);
	expect_counts(b, 1, 1, 0);

	pool_detach(&reg, a);
	pool_detach(&reg, b);
	pool_detach(&reg, o);
}
END_TEST

/* The freed slot goes to the pool whose head waiter waited longest, not
 * to the first pool found. */
START_TEST(max_db_longest_waiter_first)
{
	struct pool *a = pool_attach(&reg, &db_capped, "alice", 2);
	struct pool *b = pool_attach(&reg, &db_capped, "bob", 2);
	struct pool *c = pool_attach(&reg, &db_capped, "carol", 2);
	struct pool_waiter wb, wc, wc2;
	struct pool_handoff h;
	void *server = NULL;

	take_slots(a, 2);
	waiter_init(&wb, 1, 1, 1);
	wb.since_ms = 200;
	waiter_init(&wc, 2, 2, 2);
	wc.since_ms = 100;
	waiter_init(&wc2, 2, 3, 3);
	wc2.since_ms = 300;
	ck_assert_int_eq(pool_acquire(&reg, b, &wb, &server), POOL_MUST_WAIT);
	ck_assert_int_eq(pool_acquire(&reg, c, &wc, &server), POOL_MUST_WAIT);
	ck_assert_int_eq(pool_acquire(&reg, c, &wc2, &server), POOL_MUST_WAIT);

	ck_assert(pool_server_closed(&reg, a, &h));
	ck_assert_ptr_eq(h.pool, c);
	expect_handoff(&h, &wc, NULL);
	/* Now c's head has waited since 300: b's (200) is older. */
	ck_assert(pool_server_closed(&reg, a, &h));
	ck_assert_ptr_eq(h.pool, b);
	expect_handoff(&h, &wb, NULL);
	expect_counts(a, 0, 0, 0);
	expect_counts(b, 1, 0, 0);
	expect_counts(c, 1, 0, 1);

	/* b's server goes: c's remaining waiter is the only one. */
	ck_assert(pool_server_closed(&reg, b, &h));
	ck_assert_ptr_eq(h.pool, c);
	expect_handoff(&h, &wc2, NULL);
	expect_counts(b, 0, 0, 0);
	expect_counts(c, 2, 0, 0);
	/* Nobody waits: a close just frees the slot. */
	ck_assert(!pool_server_closed(&reg, c, &h));
	expect_counts(c, 1, 0, 0);

	pool_detach(&reg, a);
	pool_detach(&reg, b);
	pool_detach(&reg, c);
}
END_TEST

/* A pool full on its own is not helped by another pool closing servers. */
START_TEST(max_db_full_pool_not_wanted)
{
	struct pool *a = pool_attach(&reg, &db_capped, "alice", 2);
	struct pool *b = pool_attach(&reg, &db_capped, "bob", 1);
	struct pool_waiter wb;
	struct pool_handoff h;
	void *server = NULL;
	int owner = -1;

	take_slots(a, 1);
	take_slots(b, 1);
	waiter_init(&wb, 1, 1, 1);
	ck_assert_int_eq(pool_acquire(&reg, b, &wb, &server), POOL_MUST_WAIT);
	/* The database is at its cap, but b waits for its own pool_size. */
	ck_assert_int_eq(pool_release(&reg, a, &srv[0], 0, &h), POOL_PARKED);
	expect_counts(a, 1, 1, 0);
	ck_assert_ptr_null(pool_evict_idle(&reg, b, &owner));
	ck_assert_int_eq(owner, -1);
	expect_counts(a, 1, 1, 0);
	/* a's idle server closing does not go to b either. */
	ck_assert(pool_take_idle(&reg, a, &srv[0]));
	ck_assert(!pool_server_closed(&reg, a, &h));
	expect_counts(a, 0, 0, 0);
	expect_counts(b, 1, 0, 1);
	/* b's own server does. */
	ck_assert_int_eq(pool_release(&reg, b, &srv[1], 4, &h), POOL_HANDED);
	ck_assert_ptr_eq(h.pool, b);
	expect_handoff(&h, &wb, &srv[1]);

	pool_detach(&reg, a);
	pool_detach(&reg, b);
}
END_TEST

START_TEST(max_db_evict_idle)
{
	struct pool *a = pool_attach(&reg, &db_capped, "alice", 2);
	struct pool *b = pool_attach(&reg, &db_capped, "bob", 2);
	struct pool *o = pool_attach(&reg, &db_other, "bob", 2);
	struct pool_waiter wb, wb2;
	struct pool_handoff h;
	void *server = NULL;
	int owner = -1;

	/* Another database's idle servers are never candidates. */
	take_slots(o, 1);
	ck_assert_int_eq(pool_release(&reg, o, &srv[9], 9, &h), POOL_PARKED);

	take_slots(a, 2);
	ck_assert_int_eq(pool_release(&reg, a, &srv[0], 1, &h), POOL_PARKED);
	ck_assert_int_eq(pool_release(&reg, a, &srv[1], 2, &h), POOL_PARKED);

	/* b has no waiter: nothing to make room for. a neither. */
	ck_assert_ptr_null(pool_evict_idle(&reg, b, &owner));
	ck_assert_ptr_null(pool_evict_idle(&reg, a, &owner));
	ck_assert_int_eq(owner, -1);

	/* b's client waits only because of the database cap: a's oldest idle
	 * server is given up, to be closed by worker 1. */
	waiter_init(&wb, 3, 1, 1);
	ck_assert_int_eq(pool_acquire(&reg, b, &wb, &server), POOL_MUST_WAIT);
	ck_assert_ptr_eq(pool_evict_idle(&reg, b, &owner), &srv[0]);
	ck_assert_int_eq(owner, 1);
	/* Still counted until closed, no longer idle. */
	expect_counts(a, 2, 1, 0);
	expect_idle(a, 0, &srv[1], 2);
	ck_assert(!pool_take_idle(&reg, a, &srv[0]));
	expect_counts(o, 1, 1, 0);

	/* Worker 1 closes it: the slot goes to b's waiter. */
	ck_assert(pool_server_closed(&reg, a, &h));
	ck_assert_ptr_eq(h.pool, b);
	expect_handoff(&h, &wb, NULL);
	expect_counts(a, 1, 1, 0);
	expect_counts(b, 1, 0, 0);

	/* b has no waiter any more. */
	owner = -1;
	ck_assert_ptr_null(pool_evict_idle(&reg, b, &owner));
	ck_assert_int_eq(owner, -1);

	/* A second client of b waits too (cap again): srv[1] goes. */
	waiter_init(&wb2, 3, 2, 2);
	ck_assert_int_eq(pool_acquire(&reg, b, &wb2, &server), POOL_MUST_WAIT);
	ck_assert_ptr_eq(pool_evict_idle(&reg, b, &owner), &srv[1]);
	ck_assert_int_eq(owner, 2);
	expect_counts(a, 1, 0, 0);
	/* a has nothing idle left to give. */
	owner = -1;
	ck_assert_ptr_null(pool_evict_idle(&reg, b, &owner));
	ck_assert_int_eq(owner, -1);
	ck_assert(pool_server_closed(&reg, a, &h));
	expect_handoff(&h, &wb2, NULL);
	expect_counts(a, 0, 0, 0);
	expect_counts(b, 2, 0, 0);

	/* The other way round: a's client is kept out, b has one idle. */
	ck_assert_int_eq(pool_release(&reg, b, &srv[2], 5, &h), POOL_PARKED);
	struct pool_waiter wa;
	waiter_init(&wa, 4, 3, 3);
	ck_assert_int_eq(pool_acquire(&reg, a, &wa, &server), POOL_MUST_WAIT);
	owner = -1;
	ck_assert_ptr_eq(pool_evict_idle(&reg, a, &owner), &srv[2]);
	ck_assert_int_eq(owner, 5);
	expect_counts(b, 2, 0, 0);
	ck_assert(pool_server_closed(&reg, b, &h));
	ck_assert_ptr_eq(h.pool, a);
	expect_handoff(&h, &wa, NULL);
	expect_counts(a, 1, 0, 0);
	expect_counts(b, 1, 0, 0);
	/* The other database's idle server was never touched. */
	expect_counts(o, 1, 1, 0);
	expect_idle(o, 0, &srv[9], 9);

	pool_detach(&reg, a);
	pool_detach(&reg, b);
	pool_detach(&reg, o);
}
END_TEST

START_TEST(spare_up_to_min)
{
	struct pool *plain = pool_attach(&reg, &db_app, "alice", 3);
	struct pool_handoff h;

	/* No min_pool_size: no spares. */
	ck_assert_ptr_null(pool_spare_needed(&reg));

	struct pool *pool = pool_attach(&reg, &db_min, "alice", 3);
	ck_assert_ptr_eq(pool_spare_needed(&reg), pool);
	expect_counts(pool, 1, 0, 0);
	ck_assert_ptr_eq(pool_spare_needed(&reg), pool);
	expect_counts(pool, 2, 0, 0);
	ck_assert_ptr_null(pool_spare_needed(&reg));
	expect_counts(pool, 2, 0, 0);
	expect_counts(plain, 0, 0, 0);

	/* The spares park; clients use them and they count to the minimum. */
	ck_assert_int_eq(pool_release(&reg, pool, &srv[0], 0, &h), POOL_PARKED);
	ck_assert_int_eq(pool_release(&reg, pool, &srv[1], 1, &h), POOL_PARKED);
	expect_got_idle(pool, 1, &srv[1], 1);
	ck_assert_ptr_null(pool_spare_needed(&reg));

	/* One closes: it is replaced. */
	ck_assert(pool_take_idle(&reg, pool, &srv[0]));
	ck_assert(!pool_server_closed(&reg, pool, &h));
	expect_counts(pool, 1, 0, 0);
	ck_assert_ptr_eq(pool_spare_needed(&reg), pool);
	expect_counts(pool, 2, 0, 0);
	ck_assert_ptr_null(pool_spare_needed(&reg));

	/* The last client leaves: the servers keep the pool until they close. */
	pool_detach(&reg, pool);
	ck_assert(pool_listed(pool));
	ck_assert(!pool_server_closed(&reg, pool, &h));
	ck_assert(pool_listed(pool));
	ck_assert(!pool_server_closed(&reg, pool, &h));
	ck_assert(!pool_listed(pool));
	ck_assert_uint_eq(npools(), 1);
	ck_assert_ptr_null(pool_spare_needed(&reg));

	pool_detach(&reg, plain);
	ck_assert(list_empty(&reg.pools));
}
END_TEST

/* min_pool_size above pool_size: pool_size wins. */
START_TEST(spare_capped_at_size)
{
	struct db_config big = { .name = "big", .min_pool_size = 5 };
	struct pool *pool = pool_attach(&reg, &big, "alice", 2);
	struct pool_handoff h;

	ck_assert_ptr_eq(pool_spare_needed(&reg), pool);
	ck_assert_ptr_eq(pool_spare_needed(&reg), pool);
	ck_assert_ptr_null(pool_spare_needed(&reg));
	expect_counts(pool, 2, 0, 0);
	ck_assert(!pool_server_closed(&reg, pool, &h));
	ck_assert(!pool_server_closed(&reg, pool, &h));
	pool_detach(&reg, pool);
	ck_assert(list_empty(&reg.pools));
}
END_TEST

/*
 * Reload and pause. The registry follows config snapshots parsed from YAML
 * as the daemon's are, so pool_size, the reserve, per-user overrides and
 * conninfo come from the same code path as in production. A test drops its
 * own reference right after pool_registry_set_config wherever it can: the
 * ASan build then catches a registry that reads a snapshot it does not hold.
 */

/* A snapshot whose databases: section is fmt; the caller owns the one
 * reference. */
static struct config *cfg_new(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static struct config *cfg_new(const char *fmt, ...)
{
	static const char head[] = "listen:\n  socket_dir: /tmp\n  port: 6432\ndatabases:\n";
	struct config_errors errs = {0};
	char text[4096];
	va_list ap;
	int n;

	memcpy(text, head, sizeof(head));
	va_start(ap, fmt);
	n = vsnprintf(text + sizeof(head) - 1, sizeof(text) - sizeof(head) + 1, fmt, ap);
	va_end(ap);
	ck_assert(n >= 0 && (size_t)n < sizeof(text) - sizeof(head) + 1);
	struct config *cfg = config_parse("test.yaml", text, strlen(text), &errs);
	ck_assert_msg(cfg != NULL, "refused:\n%s\n%s", text, errs.n > 0 ? errs.msgs[0] : "");
	config_errors_free(&errs);
	return cfg;
}

/* app (with pool_size and reserve_pool_size) and a fixed other. */
static struct config *cfg_app(int size, int reserve)
{
	return cfg_new("  app:\n    conninfo: \"host=/tmp dbname=app\"\n"
	               "    pool_size: %d\n    reserve_pool_size: %d\n"
	               "  other:\n    conninfo: \"host=/tmp dbname=other\"\n    pool_size: 1\n",
	               size, reserve);
}

/* Only other: app has left the config. */
static struct config *cfg_other_only(void)
{
	return cfg_new("  other:\n    conninfo: \"host=/tmp dbname=other\"\n    pool_size: 1\n");
}

/* The registry follows cfg and holds its own reference: the test's goes. */
static void reload(struct config *cfg)
{
	ck_assert_int_eq(pool_registry_set_config(&reg, cfg), 0);
	ck_assert_ptr_eq(reg.cfg, cfg);
	config_unref(cfg);
}

static void queue_waiter(struct pool *pool, struct pool_waiter *w, int worker, uint32_t slot,
                         uint64_t id)
{
	void *server = NULL;

	waiter_init(w, worker, slot, id);
	ck_assert_int_eq(pool_acquire(&reg, pool, w, &server), POOL_MUST_WAIT);
	ck_assert(list_linked(&w->node));
}

/* Closes n servers (or slots) of a pool nobody waits for. */
static void close_servers(struct pool *pool, int n)
{
	struct pool_handoff h;

	for (int i = 0; i < n; i++)
		ck_assert(!pool_server_closed(&reg, pool, &h));
}

/* A larger pool_size takes effect in place; the reload hands nothing out
 * itself, and pool_serve_waiters then grants exactly the new slots, to the
 * head waiters of each pool in order, max at a time. */
START_TEST(reload_grow_serves_waiters_fifo)
{
	struct config *cfg1 = cfg_app(1, 0);
	const struct db_config *stale = config_find_db(cfg1, "app");
	struct pool_waiter a[3], b[2], late;
	struct pool_handoff h[8];

	ck_assert_int_eq(pool_registry_set_config(&reg, cfg1), 0);
	/* The size a caller passes is ignored: the registry's config decides. */
	struct pool *pa = pool_attach(&reg, stale, "alice", 50);
	struct pool *pb = pool_attach(&reg, stale, "bob", 50);
	take_slots(pa, 1);
	take_slots(pb, 1);
	for (int i = 0; i < 3; i++)
		queue_waiter(pa, &a[i], 2 - i, 10u + (uint32_t)i, 100u + (uint64_t)i);
	for (int i = 0; i < 2; i++)
		queue_waiter(pb, &b[i], i, 20u + (uint32_t)i, 200u + (uint64_t)i);

	reload(cfg_app(3, 0));
	expect_counts(pa, 1, 0, 3);
	expect_counts(pb, 1, 0, 2);
	ck_assert_ptr_eq(pool_db(&reg, pa, NULL, NULL), config_find_db(reg.cfg, "app"));
	ck_assert_ptr_eq(pool_db(&reg, pb, NULL, NULL), config_find_db(reg.cfg, "app"));

	/* Two new slots in each pool: four grants, three then one. */
	memset(h, 0xa5, sizeof(h));
	ck_assert_int_eq(pool_serve_waiters(&reg, h, 3), 3);
	ck_assert_uint_eq(h[3].client_id, 0xa5a5a5a5a5a5a5a5ULL);
	ck_assert_int_eq(pool_serve_waiters(&reg, h + 3, 3), 1);
	ck_assert_uint_eq(h[4].client_id, 0xa5a5a5a5a5a5a5a5ULL);
	ck_assert_int_eq(pool_serve_waiters(&reg, h + 4, 3), 0);
	ck_assert_uint_eq(h[4].client_id, 0xa5a5a5a5a5a5a5a5ULL);
	int na = 0, nb = 0;
	for (int i = 0; i < 4; i++) {
		if (h[i].pool == pa) {
			expect_handoff(&h[i], &a[na++], NULL);
		} else {
			ck_assert_ptr_eq(h[i].pool, pb);
			expect_handoff(&h[i], &b[nb++], NULL);
		}
	}
	ck_assert_int_eq(na, 2);
	ck_assert_int_eq(nb, 2);
	expect_counts(pa, 3, 0, 1);
	expect_counts(pb, 3, 0, 0);
	ck_assert(list_linked(&a[2].node));

	/* The pool is full again: a newcomer queues behind a[2]. */
	queue_waiter(pa, &late, 0, 30, 300);
	ck_assert_int_eq(pool_release(&reg, pa, &srv[0], 0, &h[0]), POOL_HANDED);
	expect_handoff(&h[0], &a[2], &srv[0]);
	ck_assert_int_eq(pool_release(&reg, pa, &srv[0], 0, &h[0]), POOL_HANDED);
	expect_handoff(&h[0], &late, &srv[0]);

	/* A client attaching with the old snapshot's entry gets the new size. */
	struct pool *pc = pool_attach(&reg, stale, "carol", 1);
	ck_assert_ptr_eq(pool_db(&reg, pc, NULL, NULL), config_find_db(reg.cfg, "app"));
	take_slots(pc, 3);
	queue_waiter(pc, &late, 0, 31, 301);
	ck_assert(pool_cancel_wait(&reg, pc, &late));

	close_servers(pa, 3);
	close_servers(pb, 3);
	close_servers(pc, 3);
	pool_detach(&reg, pa);
	pool_detach(&reg, pb);
	pool_detach(&reg, pc);
	ck_assert(list_empty(&reg.pools));
	config_unref(cfg1);
}
END_TEST

/* A smaller pool_size (and a reserve, new with the reload): released
 * servers are closed, waiters or not, until the pool is down to size +
 * reserve; from there they go to the waiters again, and once nobody waits
 * the servers above pool_size go too. */
START_TEST(reload_shrink_closes_surplus)
{
	struct pool_waiter w[2];
	struct pool_handoff h;

	reload(cfg_app(4, 0));
	struct pool *pool = pool_attach(&reg, &db_app, "alice", 1);
	take_slots(pool, 4);
	queue_waiter(pool, &w[0], 1, 1, 11);
	queue_waiter(pool, &w[1], 2, 2, 22);

	reload(cfg_app(1, 1));
	expect_counts(pool, 4, 0, 2);
	ck_assert_int_eq(pool_serve_waiters(&reg, &h, 1), 0);

	/* Four servers, one plus one reserve allowed: two must go. */
	ck_assert_int_eq(pool_release(&reg, pool, &srv[0], 0, &h), POOL_SURPLUS);
	expect_counts(pool, 4, 0, 2);
	ck_assert(!pool_server_closed(&reg, pool, &h));
	expect_counts(pool, 3, 0, 2);
	ck_assert_int_eq(pool_release(&reg, pool, &srv[1], 0, &h), POOL_SURPLUS);
	ck_assert(!pool_server_closed(&reg, pool, &h));
	expect_counts(pool, 2, 0, 2);
	ck_assert_int_eq(pool_serve_waiters(&reg, &h, 1), 0);

	/* At size + reserve the waiters are served again, in order. */
	ck_assert_int_eq(pool_release(&reg, pool, &srv[2], 3, &h), POOL_HANDED);
	expect_handoff(&h, &w[0], &srv[2]);
	ck_assert_int_eq(pool_release(&reg, pool, &srv[3], 3, &h), POOL_HANDED);
	expect_handoff(&h, &w[1], &srv[3]);
	expect_counts(pool, 2, 0, 0);

	/* Nobody waits and the pool is above pool_size: one more goes. */
	ck_assert_int_eq(pool_release(&reg, pool, &srv[2], 1, &h), POOL_SURPLUS);
	ck_assert(!pool_server_closed(&reg, pool, &h));
	ck_assert_int_eq(pool_release(&reg, pool, &srv[3], 2, &h), POOL_PARKED);
	expect_counts(pool, 1, 1, 0);
	pool_detach(&reg, pool);
}
END_TEST

/* After a grow, the idle array holds as many servers as the new size
 * allows, also for a user whose size is an override (ASan catches a write
 * past the old array). */
START_TEST(reload_grow_idle_fits)
{
	static const char fmt[] =
		"  app:\n    conninfo: \"host=/tmp dbname=app\"\n    pool_size: %d\n"
		"    users:\n      bob:\n        pool_size: %d\n";
	struct pool_waiter w;
	struct pool_handoff h;
	void *server = NULL;

	reload(cfg_new(fmt, 2, 1));
	struct pool *a = pool_attach(&reg, &db_app, "alice", 1);
	struct pool *b = pool_attach(&reg, &db_app, "bob", 1);
	take_slots(a, 2);
	ck_assert_int_eq(pool_release(&reg, a, &srv[0], 0, &h), POOL_PARKED);
	ck_assert_int_eq(pool_release(&reg, a, &srv[1], 1, &h), POOL_PARKED);
	take_slots(b, 1);
	ck_assert_int_eq(pool_release(&reg, b, &srv[10], 0, &h), POOL_PARKED);

	/* alice grows to 4; bob's override to 6, beyond the database's size. */
	reload(cfg_new(fmt, 4, 6));
	expect_got_idle(a, 5, &srv[1], 1);
	expect_got_idle(a, 5, &srv[0], 0);
	take_slots(a, 2);
	queue_waiter(a, &w, 0, 0, 1);
	ck_assert(pool_cancel_wait(&reg, a, &w));
	for (int k = 0; k < 4; k++)
		ck_assert_int_eq(pool_release(&reg, a, &srv[k], k % 3, &h), POOL_PARKED);
	expect_counts(a, 4, 4, 0);
	ck_assert_int_ge(a->idle_cap, 4);

	expect_got_idle(b, 5, &srv[10], 0);
	take_slots(b, 5);
	waiter_init(&w, 0, 0, 1);
	ck_assert_int_eq(pool_acquire(&reg, b, &w, &server), POOL_MUST_WAIT);
	ck_assert(pool_cancel_wait(&reg, b, &w));
	for (int k = 10; k < 16; k++)
		ck_assert_int_eq(pool_release(&reg, b, &srv[k], k % 2, &h), POOL_PARKED);
	expect_counts(b, 6, 6, 0);
	ck_assert_int_ge(b->idle_cap, 6);

	/* Every parked server is intact and comes back, most recent first. */
	for (int k = 0; k < 4; k++)
		expect_idle(a, k, &srv[k], k % 3);
	for (int k = 3; k >= 0; k--)
		expect_got_idle(a, 9, &srv[k], k % 3);
	for (int k = 15; k >= 10; k--)
		expect_got_idle(b, 9, &srv[k], k % 2);
	close_servers(a, 4);
	close_servers(b, 6);
	pool_detach(&reg, a);
	pool_detach(&reg, b);
	ck_assert(list_empty(&reg.pools));
}
END_TEST

static struct config *cfg_conninfo(const char *conninfo, int size)
{
	return cfg_new("  app:\n    conninfo: \"%s\"\n    pool_size: %d\n"
	               "  other:\n    conninfo: \"host=/tmp dbname=other\"\n    pool_size: 1\n",
	               conninfo, size);
}

/* A changed conninfo bumps the pool's gen (its servers are not reused);
 * other changes and other databases' pools keep theirs. */
START_TEST(reload_conninfo_bumps_gen)
{
	unsigned g = 12345;

	reload(cfg_conninfo("host=/tmp dbname=app", 2));
	struct pool *a = pool_attach(&reg, &db_app, "alice", 1);
	struct pool *o = pool_attach(&reg, &db_other, "alice", 1);
	const unsigned g0 = pool_gen(a), go = pool_gen(o);
	ck_assert_ptr_eq(pool_db(&reg, a, &g, NULL), config_find_db(reg.cfg, "app"));
	ck_assert_uint_eq(g, g0);
	ck_assert(!pool_idle_unwanted(&reg, a, g0));

	/* Another pool_size, the same conninfo: the servers are still good. */
	reload(cfg_conninfo("host=/tmp dbname=app", 5));
	ck_assert_uint_eq(pool_gen(a), g0);
	ck_assert(!pool_idle_unwanted(&reg, a, g0));

	reload(cfg_conninfo("host=/tmp port=5433 dbname=app", 5));
	ck_assert_uint_eq(pool_gen(a), g0 + 1);
	ck_assert_str_eq(pool_db(&reg, a, &g, NULL)->conninfo, "host=/tmp port=5433 dbname=app");
	ck_assert_uint_eq(g, g0 + 1);
	ck_assert(pool_idle_unwanted(&reg, a, g0));
	ck_assert(!pool_idle_unwanted(&reg, a, g0 + 1));
	ck_assert_uint_eq(pool_gen(o), go);
	ck_assert(!pool_idle_unwanted(&reg, o, go));

	/* Unchanged since the last reload: no bump. */
	reload(cfg_conninfo("host=/tmp port=5433 dbname=app", 3));
	ck_assert_uint_eq(pool_gen(a), g0 + 1);

	/* Back to the first one is a change too. */
	reload(cfg_conninfo("host=/tmp dbname=app", 3));
	ck_assert_uint_eq(pool_gen(a), g0 + 2);
	ck_assert(pool_idle_unwanted(&reg, a, g0 + 1));
	ck_assert_uint_eq(pool_gen(o), go);
	pool_detach(&reg, a);
	pool_detach(&reg, o);
}
END_TEST

/* An idle server of the right gen is unwanted when the pool has more
 * servers than pool_size, or once its pool is retired and has no client. */
START_TEST(reload_idle_unwanted)
{
	struct pool_handoff h;

	reload(cfg_app(2, 1));
	struct pool *pool = pool_attach(&reg, &db_app, "alice", 1);
	const unsigned g = pool_gen(pool);
	take_slots(pool, 2);
	ck_assert_int_eq(pool_release(&reg, pool, &srv[0], 0, &h), POOL_PARKED);
	ck_assert(!pool_idle_unwanted(&reg, pool, g));

	/* Above pool_size, though within the reserve: unwanted. */
	reload(cfg_app(1, 1));
	ck_assert(pool_idle_unwanted(&reg, pool, g));
	ck_assert(pool_take_idle(&reg, pool, &srv[0]));
	ck_assert(!pool_server_closed(&reg, pool, &h));
	ck_assert(!pool_idle_unwanted(&reg, pool, g));
	ck_assert_int_eq(pool_release(&reg, pool, &srv[1], 0, &h), POOL_PARKED);
	expect_counts(pool, 1, 1, 0);

	/* Retired, it still serves the client attached... */
	reload(cfg_other_only());
	ck_assert(pool->retired);
	ck_assert_uint_eq(pool_gen(pool), g);
	ck_assert(!pool_idle_unwanted(&reg, pool, g));
	/* ...until that one leaves: then its idle server is closed. */
	pool_detach(&reg, pool);
	ck_assert(pool_listed(pool));
	ck_assert(pool_idle_unwanted(&reg, pool, g));
	ck_assert(pool_take_idle(&reg, pool, &srv[1]));
	ck_assert(!pool_server_closed(&reg, pool, &h));
	ck_assert(list_empty(&reg.pools));
}
END_TEST

/* A database removed by a reload: its pool is retired, keeps the entry
 * (and the snapshot it lives in) for the clients still attached, and takes
 * no new ones; when the database comes back, clients get a new pool. */
START_TEST(reload_retire_and_readd)
{
	struct config *cfg1 = cfg_app(2, 0);
	struct pool_waiter w;
	struct pool_handoff h;

	ck_assert_int_eq(pool_registry_set_config(&reg, cfg1), 0);
	ck_assert_int_eq(atomic_load(&cfg1->refs), 2);
	struct pool *old = pool_attach(&reg, &db_app, "alice", 1);
	struct pool *keep = pool_attach(&reg, &db_other, "alice", 1);
	take_slots(old, 2);
	queue_waiter(old, &w, 3, 30, 300);

	reload(cfg_other_only());
	ck_assert(old->retired);
	ck_assert(!keep->retired);
	ck_assert_ptr_eq(pool_db(&reg, keep, NULL, NULL), config_find_db(reg.cfg, "other"));
	/* The registry let go of cfg1, the retired pool holds it. */
	ck_assert_int_eq(atomic_load(&cfg1->refs), 2);
	config_unref(cfg1);
	const struct db_config *db = pool_db(&reg, old, NULL, NULL);
	ck_assert_str_eq(db->name, "app");
	ck_assert_str_eq(db->conninfo, "host=/tmp dbname=app");
	ck_assert_int_eq(db->pool_size, 2);

	/* New clients are refused, whatever entry they bring. */
	errno = 0;
	ck_assert_ptr_null(pool_attach(&reg, &db_app, "alice", 2));
	ck_assert_int_eq(errno, ENOENT);
	errno = 0;
	ck_assert_ptr_null(pool_attach(&reg, &db_app, "bob", 2));
	ck_assert_int_eq(errno, ENOENT);
	ck_assert_uint_eq(npools(), 2);

	/* The clients attached go on as before: handoff, parking, reuse. */
	ck_assert_int_eq(pool_release(&reg, old, &srv[0], 0, &h), POOL_HANDED);
	ck_assert_ptr_eq(h.pool, old);
	expect_handoff(&h, &w, &srv[0]);
	ck_assert_int_eq(pool_release(&reg, old, &srv[1], 1, &h), POOL_PARKED);
	expect_got_idle(old, 1, &srv[1], 1);
	expect_counts(old, 2, 0, 0);

	/* app is back: a new pool with the new size; the retired one stays. */
	reload(cfg_app(3, 0));
	struct pool *fresh = pool_attach(&reg, &db_app, "alice", 1);
	ck_assert_ptr_nonnull(fresh);
	ck_assert_ptr_ne(fresh, old);
	ck_assert(!fresh->retired);
	ck_assert(old->retired);
	ck_assert_ptr_eq(pool_db(&reg, fresh, NULL, NULL), config_find_db(reg.cfg, "app"));
	ck_assert_ptr_eq(pool_db(&reg, old, NULL, NULL), db);
	ck_assert_str_eq(db->conninfo, "host=/tmp dbname=app");
	ck_assert_uint_eq(npools(), 3);
	take_slots(fresh, 3);
	expect_counts(fresh, 3, 0, 0);
	expect_counts(old, 2, 0, 0);
	ck_assert_ptr_eq(pool_attach(&reg, &db_app, "alice", 1), fresh);
	pool_detach(&reg, fresh);

	/* The retired pool goes with its last server, and cfg1 with it (LSan). */
	pool_detach(&reg, old);
	ck_assert(pool_listed(old));
	ck_assert(!pool_server_closed(&reg, old, &h));
	ck_assert(pool_listed(old));
	ck_assert(!pool_server_closed(&reg, old, &h));
	ck_assert(!pool_listed(old));
	ck_assert_uint_eq(npools(), 2);

	close_servers(fresh, 3);
	pool_detach(&reg, fresh);
	pool_detach(&reg, keep);
	ck_assert(list_empty(&reg.pools));
}
END_TEST

/* A retired pool still holding a server when the registry is destroyed
 * gives its snapshot back then (LSan). */
START_TEST(reload_destroy_frees_retired)
{
	struct pool_handoff h;

	reload(cfg_app(2, 0));
	struct pool *pool = pool_attach(&reg, &db_app, "alice", 1);
	take_slots(pool, 1);
	ck_assert_int_eq(pool_release(&reg, pool, &srv[4], 0, &h), POOL_PARKED);
	pool_detach(&reg, pool);
	reload(cfg_other_only());
	ck_assert(pool->retired);
	nfreed = 0;
	memset(freed, 0, sizeof(freed));
	pool_registry_destroy(&reg, count_free);
	ck_assert_int_eq(nfreed, 1);
	ck_assert_int_eq(freed[4], 1);
	pool_registry_init(&reg);
}
END_TEST

/* A registry made again, after a destroy or in memory that held anything,
 * starts running and follows no config until it is given one. */
START_TEST(registry_init_starts_afresh)
{
	struct pool_waiter w;
	void *server = NULL;

	reload(cfg_app(1, 0));
	pool_set_paused(&reg, true);
	pool_registry_destroy(&reg, free_nothing);
	memset(&reg, 1, sizeof(reg));
	pool_registry_init(&reg);
	struct config *cfg = reg.cfg;
	bool paused = reg.paused;
	/* Cleared before asserting, so that the teardown cannot crash on them. */
	reg.cfg = NULL;
	reg.paused = false;
	ck_assert_msg(cfg == NULL && !paused, "pool_registry_init left cfg %p, paused %d",
	              (void *)cfg, paused);
	/* Not paused: a client gets a slot at once. No config: any database. */
	struct pool *pool = pool_attach(&reg, &db_reserve, "alice", 1);
	ck_assert_ptr_nonnull(pool);
	waiter_init(&w, 0, 0, 1);
	ck_assert_int_eq(pool_acquire(&reg, pool, &w, &server), POOL_MAY_CONNECT);
	close_servers(pool, 1);
	pool_detach(&reg, pool);
}
END_TEST

/* pool_serve_waiters stays under max_db_connections. */
START_TEST(reload_serve_respects_max_db)
{
	static const char fmt[] =
		"  app:\n    conninfo: \"host=/tmp dbname=app\"\n    pool_size: %d\n"
		"    max_db_connections: %d\n";
	struct pool_waiter a[2], b[2];
	struct pool_handoff h[4];

	reload(cfg_new(fmt, 1, 3));
	struct pool *pa = pool_attach(&reg, &db_app, "alice", 1);
	struct pool *pb = pool_attach(&reg, &db_app, "bob", 1);
	take_slots(pa, 1);
	take_slots(pb, 1);
	queue_waiter(pa, &a[0], 0, 1, 1);
	queue_waiter(pa, &a[1], 0, 2, 2);
	queue_waiter(pb, &b[0], 0, 3, 3);
	queue_waiter(pb, &b[1], 0, 4, 4);

	/* Each pool may grow by two, the database by one. */
	reload(cfg_new(fmt, 3, 3));
	ck_assert_int_eq(pool_serve_waiters(&reg, h, 4), 1);
	expect_handoff(&h[0], h[0].pool == pa ? &a[0] : &b[0], NULL);
	ck_assert_int_eq(pool_serve_waiters(&reg, h, 4), 0);
	int s, i, w;
	pool_totals(&reg, &s, &i, &w);
	ck_assert_int_eq(s, 3);
	ck_assert_int_eq(w, 3);

	/* The cap lifted: the other three go, each pool in its order. */
	reload(cfg_new(fmt, 3, 0));
	ck_assert_int_eq(pool_serve_waiters(&reg, h, 4), 3);
	ck_assert_int_eq(pool_serve_waiters(&reg, h + 3, 1), 0);
	struct pool_waiter *next_b = &b[0];
	for (int k = 0; k < 3; k++) {
		if (h[k].pool == pa)
			expect_handoff(&h[k], &a[1], NULL);
		else
			expect_handoff(&h[k], next_b++, NULL);
	}
	ck_assert_ptr_eq(next_b, &b[2]);
	expect_counts(pa, 3, 0, 0);
	expect_counts(pb, 3, 0, 0);
	ck_assert(!list_linked(&a[1].node) && !list_linked(&b[1].node));
	close_servers(pa, 3);
	close_servers(pb, 3);
	pool_detach(&reg, pa);
	pool_detach(&reg, pb);
}
END_TEST

/* Paused, nothing goes to a client: acquire queues though servers are
 * idle, a released server parks, a closed one frees its slot for no one,
 * and neither the reserve nor pool_serve_waiters hands anything out.
 * Resumed, pool_serve_waiters gives the idle servers to the head waiters,
 * then slots, in order. */
START_TEST(pause_holds_servers_and_slots)
{
	struct pool *pool = pool_attach(&reg, &db_reserve, "alice", 3);
	struct pool_waiter w[4];
	struct pool_handoff h[8];

	take_slots(pool, 3);
	ck_assert_int_eq(pool_release(&reg, pool, &srv[0], 1, &h[0]), POOL_PARKED);
	ck_assert_int_eq(pool_release(&reg, pool, &srv[1], 2, &h[0]), POOL_PARKED);

	pool_set_paused(&reg, true);
	/* Worker 2 has its own idle server, worker 1 too: still they wait. */
	queue_waiter(pool, &w[0], 2, 10, 100);
	queue_waiter(pool, &w[1], 1, 11, 101);
	queue_waiter(pool, &w[2], 0, 12, 102);
	queue_waiter(pool, &w[3], 3, 13, 103);
	expect_counts(pool, 3, 2, 4);

	memset(h, 0xa5, sizeof(h));
	ck_assert_int_eq(pool_release(&reg, pool, &srv[2], 3, &h[0]), POOL_PARKED);
	ck_assert_uint_eq(h[0].client_id, 0xa5a5a5a5a5a5a5a5ULL);
	expect_counts(pool, 3, 3, 4);
	ck_assert(pool_take_idle(&reg, pool, &srv[0]));
	ck_assert(!pool_server_closed(&reg, pool, &h[0]));
	ck_assert_uint_eq(h[0].client_id, 0xa5a5a5a5a5a5a5a5ULL);
	expect_counts(pool, 2, 2, 4);
	ck_assert_int_eq(pool_reserve_sweep(&reg, UINT64_MAX, h, 8), 0);
	ck_assert_int_eq(pool_serve_waiters(&reg, h, 8), 0);
	expect_counts(pool, 2, 2, 4);

	/* Resuming alone hands nothing out. */
	pool_set_paused(&reg, false);
	expect_counts(pool, 2, 2, 4);
	memset(h, 0xa5, sizeof(h));
	ck_assert_int_eq(pool_serve_waiters(&reg, h, 8), 3);
	ck_assert_uint_eq(h[3].client_id, 0xa5a5a5a5a5a5a5a5ULL);
	for (int i = 0; i < 3; i++)
		ck_assert_ptr_eq(h[i].pool, pool);
	/* The idle servers first, each on the loop that parked it. */
	ck_assert(h[0].server != h[1].server);
	for (int i = 0; i < 2; i++) {
		expect_handoff(&h[i], &w[i], h[i].server);
		ck_assert(h[i].server == &srv[1] || h[i].server == &srv[2]);
		ck_assert_int_eq(h[i].idle_owner, h[i].server == &srv[1] ? 2 : 3);
	}
	/* Then the slot srv[0] left. */
	expect_handoff(&h[2], &w[2], NULL);
	expect_counts(pool, 3, 0, 1);
	ck_assert_int_eq(pool_serve_waiters(&reg, h, 8), 0);
	ck_assert(list_linked(&w[3].node));

	/* Running again: the reserve sweep and handoffs work as ever. */
	ck_assert_int_eq(pool_reserve_sweep(&reg, UINT64_MAX, h, 8), 1);
	expect_handoff(&h[0], &w[3], NULL);
	expect_counts(pool, 4, 0, 0);
	close_servers(pool, 4);
	pool_detach(&reg, pool);
	ck_assert(list_empty(&reg.pools));
}
END_TEST

/* Paused, a pool held back by max_db_connections evicts nothing and a
 * closed server of another pool passes no slot; after resume both work. */
START_TEST(pause_no_evict_no_db_slot)
{
	struct pool *a = pool_attach(&reg, &db_capped, "alice", 2);
	struct pool *b = pool_attach(&reg, &db_capped, "bob", 2);
	struct pool_waiter wb, wb2;
	struct pool_handoff h[4];
	int owner = -1;

	take_slots(a, 2);
	ck_assert_int_eq(pool_release(&reg, a, &srv[0], 1, &h[0]), POOL_PARKED);
	ck_assert_int_eq(pool_release(&reg, a, &srv[1], 2, &h[0]), POOL_PARKED);
	queue_waiter(b, &wb, 3, 1, 1);

	pool_set_paused(&reg, true);
	ck_assert_ptr_null(pool_evict_idle(&reg, b, &owner));
	ck_assert_int_eq(owner, -1);
	expect_counts(a, 2, 2, 0);
	ck_assert(pool_take_idle(&reg, a, &srv[0]));
	ck_assert(!pool_server_closed(&reg, a, &h[0]));
	expect_counts(a, 1, 1, 0);
	expect_counts(b, 0, 0, 1);

	pool_set_paused(&reg, false);
	ck_assert_int_eq(pool_serve_waiters(&reg, h, 4), 1);
	ck_assert_ptr_eq(h[0].pool, b);
	expect_handoff(&h[0], &wb, NULL);
	expect_counts(b, 1, 0, 0);
	queue_waiter(b, &wb2, 3, 2, 2);
	ck_assert_ptr_eq(pool_evict_idle(&reg, b, &owner), &srv[1]);
	ck_assert_int_eq(owner, 2);
	ck_assert(pool_server_closed(&reg, a, &h[0]));
	expect_handoff(&h[0], &wb2, NULL);
	close_servers(b, 2);
	pool_detach(&reg, a);
	pool_detach(&reg, b);
	ck_assert(list_empty(&reg.pools));
}
END_TEST

/* After a pause the longest waiter of a database at max_db_connections
 * gets the freed slot, whichever of its pools it waits in, as a slot freed
 * while running does. */
START_TEST(serve_longest_waiter_across_pools)
{
	struct pool *a = pool_attach(&reg, &db_capped, "alice", 2);
	struct pool *b = pool_attach(&reg, &db_capped, "bob", 2);
	struct pool *c = pool_attach(&reg, &db_capped, "carol", 2);
	struct pool_waiter wa, wb;
	struct pool_handoff h[4];
	void *server = NULL;

	take_slots(c, 2);                       /* the database is at its cap */
	waiter_init(&wa, 1, 1, 1);
	wa.since_ms = 200;
	ck_assert_int_eq(pool_acquire(&reg, a, &wa, &server), POOL_MUST_WAIT);
	waiter_init(&wb, 2, 2, 2);
	wb.since_ms = 100;                      /* waited longer, queued later */
	ck_assert_int_eq(pool_acquire(&reg, b, &wb, &server), POOL_MUST_WAIT);

	pool_set_paused(&reg, true);
	ck_assert(!pool_server_closed(&reg, c, &h[0]));
	pool_set_paused(&reg, false);
	ck_assert_int_eq(pool_serve_waiters(&reg, h, 4), 1);
	ck_assert_ptr_eq(h[0].pool, b);
	expect_handoff(&h[0], &wb, NULL);
	expect_counts(a, 0, 0, 1);

	ck_assert(pool_server_closed(&reg, c, &h[0]));
	expect_handoff(&h[0], &wa, NULL);
	close_servers(a, 1);
	close_servers(b, 1);
	close_servers(c, 0);
	pool_detach(&reg, a);
	pool_detach(&reg, b);
	pool_detach(&reg, c);
	ck_assert(list_empty(&reg.pools));
}
END_TEST

/* A conninfo change starts the login defaults afresh (the new servers may
 * report other values); a login of the old gen cannot set them; the old
 * blob stays readable for the clients that point into it. */
START_TEST(reload_conninfo_new_defaults)
{
	static const char first[] = "server_version\0" "15.1\0";
	static const char second[] = "server_version\0" "16.2\0";
	size_t len = 0;

	reload(cfg_conninfo("host=/tmp dbname=app", 2));
	struct pool *a = pool_attach(&reg, &db_app, "alice", 1);
	unsigned g0 = pool_gen(a);
	pool_set_defaults(&reg, a, g0, blob_new(first, sizeof(first)), sizeof(first));
	const char *old = pool_defaults(&reg, a, &len);
	ck_assert_ptr_nonnull(old);

	reload(cfg_conninfo("host=/tmp port=5433 dbname=app", 2));
	ck_assert_ptr_null(pool_defaults(&reg, a, &len));
	pool_set_defaults(&reg, a, g0, blob_new(first, sizeof(first)), sizeof(first));
	ck_assert_ptr_null(pool_defaults(&reg, a, &len));  /* a late login of the old gen */
	pool_set_defaults(&reg, a, g0 + 1, blob_new(second, sizeof(second)), sizeof(second));
	const char *now = pool_defaults(&reg, a, &len);
	ck_assert_ptr_nonnull(now);
	ck_assert_uint_eq(len, sizeof(second));
	ck_assert_mem_eq(now, second, sizeof(second));
	ck_assert_mem_eq(old, first, sizeof(first));       /* still there (ASan) */
	pool_detach(&reg, a);
}
END_TEST

/* A waiter held back only by max_db_connections that queued while paused
 * had nothing evicted for it: after resume, one idle server of a sibling
 * pool is taken out for it, and its close hands the waiter the slot. */
START_TEST(resume_evicts_for_db_capped_waiters)
{
	struct pool *a = pool_attach(&reg, &db_capped, "alice", 2);
	struct pool *b = pool_attach(&reg, &db_capped, "bob", 2);
	struct pool_waiter wb;
	struct pool_handoff h[4];
	struct pool_idle ev[4];

	take_slots(a, 2);
	ck_assert_int_eq(pool_release(&reg, a, &srv[0], 1, &h[0]), POOL_PARKED);
	ck_assert_int_eq(pool_release(&reg, a, &srv[1], 2, &h[0]), POOL_PARKED);
	pool_set_paused(&reg, true);
	queue_waiter(b, &wb, 3, 1, 1);
	ck_assert_int_eq(pool_evict_for_waiters(&reg, ev, 4), 0);   /* not while paused */
	pool_set_paused(&reg, false);
	ck_assert_int_eq(pool_serve_waiters(&reg, h, 4), 0);
	ck_assert_int_eq(pool_evict_for_waiters(&reg, ev, 4), 1);
	ck_assert_ptr_eq(ev[0].server, &srv[0]);
	ck_assert_int_eq(ev[0].worker, 1);
	expect_counts(a, 2, 1, 0);
	/* Each call takes one per held-back pool, until its owner closed it. */
	ck_assert_int_eq(pool_evict_for_waiters(&reg, ev, 4), 1);
	ck_assert_ptr_eq(ev[0].server, &srv[1]);
	ck_assert(pool_server_closed(&reg, a, &h[0]));
	expect_handoff(&h[0], &wb, NULL);
	ck_assert(!pool_server_closed(&reg, a, &h[0]));
	ck_assert_int_eq(pool_evict_for_waiters(&reg, ev, 4), 0);
	close_servers(b, 1);
	pool_detach(&reg, a);
	pool_detach(&reg, b);
	ck_assert(list_empty(&reg.pools));
}
END_TEST

/* The status line's totals are the sums over every pool. */
START_TEST(totals_sum_pools)
{
	struct pool_waiter wb[2], wo;
	struct pool_handoff h;
	int s = -1, i = -1, w = -1;

	pool_totals(&reg, &s, &i, &w);
	ck_assert_int_eq(s, 0);
	ck_assert_int_eq(i, 0);
	ck_assert_int_eq(w, 0);

	struct pool *a = pool_attach(&reg, &db_app, "alice", 3);
	struct pool *b = pool_attach(&reg, &db_app, "bob", 2);
	struct pool *o = pool_attach(&reg, &db_other, "alice", 1);
	take_slots(a, 3);
	ck_assert_int_eq(pool_release(&reg, a, &srv[0], 0, &h), POOL_PARKED);
	ck_assert_int_eq(pool_release(&reg, a, &srv[1], 0, &h), POOL_PARKED);
	take_slots(b, 2);
	queue_waiter(b, &wb[0], 0, 1, 1);
	queue_waiter(b, &wb[1], 0, 2, 2);
	take_slots(o, 1);
	ck_assert_int_eq(pool_release(&reg, o, &srv[2], 0, &h), POOL_PARKED);
	expect_got_idle(o, 0, &srv[2], 0);
	queue_waiter(o, &wo, 0, 3, 3);

	pool_totals(&reg, &s, &i, &w);
	ck_assert_int_eq(s, 6);
	ck_assert_int_eq(i, 2);
	ck_assert_int_eq(w, 3);

	ck_assert(pool_cancel_wait(&reg, b, &wb[0]));
	ck_assert(pool_server_closed(&reg, b, &h));
	expect_handoff(&h, &wb[1], NULL);
	ck_assert(pool_cancel_wait(&reg, o, &wo));
	ck_assert(pool_take_idle(&reg, a, &srv[0]));
	ck_assert(!pool_server_closed(&reg, a, &h));
	pool_totals(&reg, &s, &i, &w);
	ck_assert_int_eq(s, 5);
	ck_assert_int_eq(i, 1);
	ck_assert_int_eq(w, 0);
	ck_assert(pool_take_idle(&reg, a, &srv[1]));
	close_servers(a, 2);
	close_servers(b, 2);
	close_servers(o, 1);
	pool_detach(&reg, a);
	pool_detach(&reg, b);
	pool_detach(&reg, o);
	pool_totals(&reg, &s, &i, &w);
	ck_assert_int_eq(s + i + w, 0);
}
END_TEST

/*
 * Randomized run against a model. Clients of three (database, user) pools
 * move between the states below; the model predicts every result of the
 * registry, which client each handoff goes to and which server it carries,
 * which idle server a client gets (its own worker's first) and on whose
 * loop, and the counts after each step. Servers are released by the
 * client's worker; idle ones are sometimes taken out and closed, as the
 * idle timeout does.
 *
 * The run starts without a registry config, pools sized by the caller as
 * in the unit tests, then follows snapshots parsed from YAML whose
 * pool_size, reserve, per-user override and conninfo change, and from
 * which "other" sometimes disappears (its pool retires; a later client gets
 * a new one), while the registry is paused and resumed. Workers are
 * modelled as the daemon's: they close a server of an old gen instead of
 * releasing it, and close the idle servers pool_idle_unwanted names. After
 * each step the model also checks what a reload and a pause promise: a
 * pool never has more servers than max(size + reserve, what it had when a
 * reload shrank it) and only comes down from there; parked servers fit the
 * idle array; after a resume or a reload nobody waits who could have a
 * server or a slot; the per-database server count is the sum of its pools'.
 */
enum mstate {
	M_DETACHED,                 /* no pool */
	M_ATTACHED,                 /* attached, holds nothing */
	M_WAITING,                  /* rpool->queue */
	M_INFLIGHT,                 /* popped; handoff not yet delivered */
	M_CONNECTING,               /* holds a slot, no server yet */
	M_ACTIVE,                   /* holds a server */
};

enum {
	RCLIENTS = 16, RKEYS = 3, RPOOLS = 24, RTOKENS = 96, RSERVE = 2,
	RNOCFG_STEPS = 6000,        /* steps without a registry config, then a reload */
	RSTEPS = 16000,
};

struct rclient {
	enum mstate state;
	int rp;                     /* index in rpools while attached */
	struct pool_waiter w;
	void *server;               /* M_ACTIVE, or M_INFLIGHT (may be NULL) */
	bool cancelled;             /* M_INFLIGHT: pass the handoff on */
	unsigned gen;               /* M_CONNECTING: the pool's gen when it began */
};

struct rpool {
	struct pool *pool;          /* NULL: the registry has freed it; slot free */
	int key;                    /* index in rkeys */
	bool retired;
	int size, reserve;
	int bound;                  /* most servers allowed now */
	unsigned gen;
	char conninfo[64];          /* what pool_db must say */
	int queue[RCLIENTS];        /* client indexes, FIFO */
	int qlen;
	void *idle[RTOKENS];        /* most recent last */
	int idle_worker[RTOKENS];
	int nidle;
	int nservers;
	int nclients;
};

/* The caller's entries while the registry has no config: their conninfo is
 * the first snapshot's, as rs starts out. */
static struct db_config rdb_app = { .name = "app", .conninfo = "host=/tmp port=5432 dbname=app" };
static struct db_config rdb_other = { .name = "other", .conninfo = "host=/tmp dbname=other" };

static const struct { struct db_config *db; const char *user; } rkeys[RKEYS] = {
	{ &rdb_app, "alice" }, { &rdb_app, "bob" }, { &rdb_other, "alice" },
};

/* What the registry's current snapshot says; before the first reload, what
 * the caller's entries and sizes say. */
static struct {
	int app_size;
	int bob_size;               /* override for bob; 0: none */
	int app_reserve;
	int app_port;               /* part of app's conninfo */
	int other_size;
	bool other;                 /* is "other" configured */
} rs;

static struct rclient rc[RCLIENTS];
static uint64_t rng;
static unsigned long step;
static struct rpool rpools[RPOOLS];
static int rcur[RKEYS];         /* rpools index of the key's unretired pool, or -1 */
static bool rpaused;
static char rtoken[RTOKENS];
static bool rtoken_used[RTOKENS];
static unsigned rtoken_gen[RTOKENS];
/* What the run exercised, so that it cannot pass by doing nothing. */
static struct {
	unsigned long waits, handoffs, reloads, retired, refused, served_idle, served_slot;
	unsigned long surplus_waiting, unwanted_closed, paused_parks, shrunk_over, timed_out;
} rstat;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void *rtoken_get(unsigned gen)
{
	for (int i = 0; i < RTOKENS; i++) {
		if (!rtoken_used[i]) {
			rtoken_used[i] = true;
			rtoken_gen[i] = gen;
			return &rtoken[i];
		}
	}
	ck_abort_msg("step %lu: more live servers than the model allows", step);
	return NULL;
}

static int rtoken_index(const void *server)
{
	int i = (int)((const char *)server - rtoken);

	ck_assert_msg(i >= 0 && i < RTOKENS && rtoken_used[i], "step %lu: bad server %p",
	              step, server);
	return i;
}

static void rtoken_put(void *server)
{
	rtoken_used[rtoken_index(server)] = false;
}

static void rtoken_free(void *server)
{
	rtoken_put(server);
	nfreed++;
}

static bool rkey_configured(int key)
{
	return key != 2 || rs.other;
}

static int rkey_size(int key)
{
	if (key == 2)
		return rs.other_size;
	return key == 1 && rs.bob_size > 0 ? rs.bob_size : rs.app_size;
}

static void rkey_conninfo(int key, char *buf, size_t len)
{
	if (key == 2)
		snprintf(buf, len, "host=/tmp dbname=other");
	else
		snprintf(buf, len, "host=/tmp port=%d dbname=app", rs.app_port);
}

static int max_int(int a, int b)
{
	return a > b ? a : b;
}

/* The snapshot for rs; the caller owns its reference. */
static struct config *rs_config(void)
{
	char users[128] = "", other[128] = "";

	if (rs.bob_size > 0)
		snprintf(users, sizeof(users), "    users:\n      bob:\n        pool_size: %d\n",
		         rs.bob_size);
	if (rs.other)
		snprintf(other, sizeof(other),
		         "  other:\n    conninfo: \"host=/tmp dbname=other\"\n    pool_size: %d\n",
		         rs.other_size);
	return cfg_new("  app:\n    conninfo: \"host=/tmp port=%d dbname=app\"\n"
	               "    pool_size: %d\n    reserve_pool_size: %d\n%s%s",
	               rs.app_port, rs.app_size, rs.app_reserve, users, other);
}

static int rpool_find(const struct pool *pool)
{
	for (int p = 0; p < RPOOLS; p++)
		if (rpools[p].pool != NULL && rpools[p].pool == pool)
			return p;
	ck_abort_msg("step %lu: handoff names a pool the model does not know", step);
	return -1;
}

/* The registry frees a pool with no client and no server. */
static void rpool_maybe_gone(int p)
{
	struct rpool *m = &rpools[p];

	if (m->nclients == 0 && m->nservers == 0) {
		ck_assert_int_eq(m->qlen, 0);
		m->pool = NULL;
		if (rcur[m->key] == p)
			rcur[m->key] = -1;
	}
}

static void rpool_unpark(struct rpool *m, int i)
{
	memmove(&m->idle[i], &m->idle[i + 1], sizeof(m->idle[0]) * (size_t)(m->nidle - 1 - i));
	memmove(&m->idle_worker[i], &m->idle_worker[i + 1],
	        sizeof(m->idle_worker[0]) * (size_t)(m->nidle - 1 - i));
	m->nidle--;
}

/* A handoff must be for the head waiter and carry the expected server. */
static void r_handoff(int p, const struct pool_handoff *h, void *server)
{
	struct rpool *m = &rpools[p];

	ck_assert_msg(m->qlen > 0, "step %lu: handoff with no waiter", step);
	ck_assert_msg(h->pool == m->pool, "step %lu: handoff names another pool", step);
	struct rclient *c = &rc[m->queue[0]];
	ck_assert_msg(h->worker == c->w.worker && h->slot == c->w.slot &&
	              h->client_id == c->w.client_id,
	              "step %lu: handoff to client %llu, head is %llu (FIFO broken)", step,
	              (unsigned long long)h->client_id, (unsigned long long)c->w.client_id);
	ck_assert_msg(h->server == server, "step %lu: handoff carries %p, expected %p",
	              step, h->server, server);
	memmove(m->queue, m->queue + 1, sizeof(int) * (size_t)(m->qlen - 1));
	m->qlen--;
	rstat.handoffs++;
	c->state = M_INFLIGHT;
	c->server = server;
	c->cancelled = false;
	c->gen = m->gen;
}

static void r_closed(int p)
{
	struct rpool *m = &rpools[p];
	struct pool_handoff h;
	bool want = !rpaused && m->nservers - 1 < m->size && m->qlen > 0;
	bool handed = pool_server_closed(&reg, m->pool, &h);

	ck_assert_msg(handed == want, "step %lu: closed handed=%d, %d waiting, %d/%d servers%s",
	              step, handed, m->qlen, m->nservers, m->size, rpaused ? ", paused" : "");
	if (handed) {
		r_handoff(p, &h, NULL);
	} else {
		m->nservers--;
		rpool_maybe_gone(p);
	}
}

static void r_release(int p, void *server, int worker)
{
	struct rpool *m = &rpools[p];
	struct pool_handoff h;
	enum pool_release_result want;

	if (!rpaused && m->nservers <= m->size + m->reserve && m->qlen > 0)
		want = POOL_HANDED;
	else if (m->nservers > m->size || m->nidle >= m->size + m->reserve)
		want = POOL_SURPLUS;
	else
		want = POOL_PARKED;
	enum pool_release_result res = pool_release(&reg, m->pool, server, worker, &h);
	ck_assert_msg(res == want, "step %lu: release gave %d, expected %d (%d/%d+%d servers, "
	              "%d idle, %d waiting%s)", step, res, want, m->nservers, m->size, m->reserve,
	              m->nidle, m->qlen, rpaused ? ", paused" : "");
	if (res == POOL_HANDED) {
		r_handoff(p, &h, server);
	} else if (res == POOL_PARKED) {
		if (rpaused && m->qlen > 0)
			rstat.paused_parks++;
		m->idle_worker[m->nidle] = worker;
		m->idle[m->nidle++] = server;
	} else {
		if (m->qlen > 0)
			rstat.surplus_waiting++;
		rtoken_put(server);
		r_closed(p);
	}
}

/* pool_serve_waiters until it returns less than max: exactly the waiters
 * that can go get something, idle servers before slots, each pool in order. */
static void r_serve_all(void)
{
	struct pool_handoff h[RSERVE + 1];
	int want = 0, got = 0, n;

	for (int p = 0; p < RPOOLS && !rpaused; p++) {
		struct rpool *m = &rpools[p];
		if (m->pool != NULL)
			want += m->qlen < m->nidle + max_int(0, m->size - m->nservers) ?
			        m->qlen : m->nidle + max_int(0, m->size - m->nservers);
	}
	do {
		memset(h, 0xa5, sizeof(h));
		n = pool_serve_waiters(&reg, h, RSERVE);
		ck_assert_msg(n >= 0 && n <= RSERVE && h[RSERVE].client_id == 0xa5a5a5a5a5a5a5a5ULL,
		              "step %lu: serve_waiters gave %d of %d", step, n, RSERVE);
		for (int i = 0; i < n; i++) {
			int p = rpool_find(h[i].pool);
			struct rpool *m = &rpools[p];
			if (h[i].server != NULL) {
				int k = m->nidle - 1;
				while (k >= 0 && m->idle[k] != h[i].server)
					k--;
				ck_assert_msg(k >= 0, "step %lu: served %p, not idle in its pool", step,
				              h[i].server);
				ck_assert_msg(h[i].idle_owner == m->idle_worker[k],
				              "step %lu: served idle server of w%d as w%d's", step,
				              m->idle_worker[k], h[i].idle_owner);
				rpool_unpark(m, k);
				r_handoff(p, &h[i], h[i].server);
				rstat.served_idle++;
			} else {
				ck_assert_msg(m->nidle == 0, "step %lu: slot served with %d idle", step,
				              m->nidle);
				ck_assert_msg(m->nservers < m->size, "step %lu: slot served at %d/%d",
				              step, m->nservers, m->size);
				m->nservers++;
				r_handoff(p, &h[i], NULL);
				rstat.served_slot++;
			}
		}
		got += n;
	} while (n == RSERVE);
	ck_assert_msg(got == want, "step %lu: serve_waiters served %d, model expected %d", step,
	              got, want);
	for (int p = 0; p < RPOOLS && !rpaused; p++) {
		struct rpool *m = &rpools[p];
		ck_assert_msg(m->pool == NULL || m->qlen == 0 || (m->nidle == 0 && m->nservers >= m->size),
		              "step %lu pool %d: %d still waiting with %d idle, %d/%d servers",
		              step, p, m->qlen, m->nidle, m->nservers, m->size);
	}
}

static void r_reload(void)
{
	rs.app_size = 1 + (int)(rnd() % 4);
	rs.bob_size = (int)(rnd() % 6);
	rs.app_reserve = (int)(rnd() % 2);
	if (rnd() % 4 == 0)
		rs.app_port = rs.app_port == 5432 ? 5433 : 5432;
	rs.other_size = 1 + (int)(rnd() % 3);
	rs.other = rnd() % 4 != 0;
	reload(rs_config());
	rstat.reloads++;
	for (int p = 0; p < RPOOLS; p++) {
		struct rpool *m = &rpools[p];
		char conninfo[64];
		if (m->pool == NULL || m->retired)
			continue;
		if (!rkey_configured(m->key)) {
			m->retired = true;
			rcur[m->key] = -1;
			rstat.retired++;
			continue;
		}
		rkey_conninfo(m->key, conninfo, sizeof(conninfo));
		if (strcmp(conninfo, m->conninfo) != 0) {
			m->gen++;
			strcpy(m->conninfo, conninfo);
		}
		m->size = rkey_size(m->key);
		m->reserve = m->key == 2 ? 0 : rs.app_reserve;
		m->bound = max_int(m->size + m->reserve, m->nservers);
		if (m->nservers > m->size + m->reserve)
			rstat.shrunk_over++;
	}
	r_serve_all();
}

static void r_pause(void)
{
	rpaused = !rpaused;
	pool_set_paused(&reg, rpaused);
	if (!rpaused)
		r_serve_all();
}

static void r_reserve_sweep(void)
{
	struct pool_handoff h[RCLIENTS + 1];
	int want = 0;

	for (int p = 0; p < RPOOLS && !rpaused; p++) {
		struct rpool *m = &rpools[p];
		int room = m->size + m->reserve - m->nservers;
		if (m->pool != NULL && m->reserve > 0 && room > 0)
			want += m->qlen < room ? m->qlen : room;
	}
	int n = pool_reserve_sweep(&reg, UINT64_MAX, h, RCLIENTS + 1);
	ck_assert_msg(n == want, "step %lu: reserve sweep granted %d, expected %d", step, n, want);
	for (int i = 0; i < n; i++) {
		int p = rpool_find(h[i].pool);
		ck_assert_msg(rpools[p].nservers < rpools[p].size + rpools[p].reserve,
		              "step %lu: reserve granted past size + reserve", step);
		rpools[p].nservers++;
		r_handoff(p, &h[i], NULL);
	}
}

/* A worker's idle sweep: closes what pool_idle_unwanted names, which must
 * be what the model expects. */
static void r_idle_sweep(int p)
{
	struct rpool *m = &rpools[p];

	for (int k = m->nidle - 1; k >= 0 && m->pool != NULL; k--) {
		void *server = m->idle[k];
		unsigned gen = rtoken_gen[rtoken_index(server)];
		bool want = gen != m->gen || (m->retired && m->nclients == 0) ||
		            m->nservers > m->size;
		ck_assert_msg(pool_idle_unwanted(&reg, m->pool, gen) == want,
		              "step %lu pool %d: unwanted should be %d (gen %u/%u, retired %d, "
		              "%d clients, %d/%d servers)", step, p, want, gen, m->gen, m->retired,
		              m->nclients, m->nservers, m->size);
		if (!want)
			continue;
		ck_assert(pool_take_idle(&reg, m->pool, server));
		rpool_unpark(m, k);
		rtoken_put(server);
		rstat.unwanted_closed++;
		r_closed(p);
	}
}

/* An idle server times out: its worker takes it out and closes it. */
static void r_idle_timeout(int p)
{
	struct rpool *m = &rpools[p];
	int i = (int)(rnd() % (uint64_t)m->nidle);
	void *server = m->idle[i];

	ck_assert_msg(pool_take_idle(&reg, m->pool, server), "step %lu: idle server not taken",
	              step);
	ck_assert_msg(!pool_take_idle(&reg, m->pool, server), "step %lu: idle server taken twice",
	              step);
	rpool_unpark(m, i);
	rtoken_put(server);
	rstat.timed_out++;
	r_closed(p);
}

static void r_attach(struct rclient *c)
{
	int key = (int)(rnd() % RKEYS);
	struct pool *pool;

	errno = 0;
	/* The size passed is nonsense on purpose where it must not count: the
	 * config's wins, and an existing pool keeps its own. Without a config a
	 * new pool takes the caller's. */
	pool = pool_attach(&reg, rkeys[key].db, rkeys[key].user,
	                   reg.cfg == NULL && rcur[key] < 0 ? rkey_size(key) : 1000);
	if (!rkey_configured(key)) {
		ck_assert_msg(pool == NULL && errno == ENOENT,
		              "step %lu: attach to a removed database gave %p, errno %d",
		              step, (void *)pool, errno);
		rstat.refused++;
		return;
	}
	ck_assert_ptr_nonnull(pool);
	if (rcur[key] >= 0) {
		ck_assert_msg(pool == rpools[rcur[key]].pool, "step %lu: attach found another pool",
		              step);
	} else {
		int p = 0;
		while (p < RPOOLS && rpools[p].pool != NULL) {
			ck_assert_msg(rpools[p].pool != pool, "step %lu: attach gave a live pool "
			              "(retired %d) instead of a new one", step, rpools[p].retired);
			p++;
		}
		ck_assert_msg(p < RPOOLS, "step %lu: more pools than the model holds", step);
		ck_assert_msg(pool->nservers == 0 && pool->nidle == 0 && pool->nwaiters == 0 &&
		              pool->nclients == 1 && !pool->retired,
		              "step %lu: new pool is not fresh", step);
		struct rpool *m = &rpools[p];
		memset(m, 0, sizeof(*m));
		m->pool = pool;
		m->key = key;
		m->size = rkey_size(key);
		m->reserve = key == 2 ? 0 : rs.app_reserve;
		m->bound = m->size + m->reserve;
		m->gen = pool_gen(pool);
		rkey_conninfo(key, m->conninfo, sizeof(m->conninfo));
		rcur[key] = p;
	}
	rpools[rcur[key]].nclients++;
	c->rp = rcur[key];
	c->state = M_ATTACHED;
}

static void r_acquire(int k)
{
	struct rclient *c = &rc[k];
	struct rpool *m = &rpools[c->rp];
	void *server = NULL;

	c->w.idle_owner = -1;
	enum pool_result res = pool_acquire(&reg, m->pool, &c->w, &server);
	if (!rpaused && m->qlen == 0 && m->nidle > 0) {
		int i = m->nidle - 1;
		while (i > 0 && m->idle_worker[i] != c->w.worker)
			i--;
		if (m->idle_worker[i] != c->w.worker)
			i = m->nidle - 1;
		ck_assert_msg(res == POOL_GOT_IDLE, "step %lu: got %d, expected idle", step, res);
		ck_assert_msg(server == m->idle[i] && c->w.idle_owner == m->idle_worker[i],
		              "step %lu: got idle %p on w%d, expected %p on w%d", step,
		              server, c->w.idle_owner, m->idle[i], m->idle_worker[i]);
		rpool_unpark(m, i);
		c->server = server;
		c->state = M_ACTIVE;
	} else if (!rpaused && m->qlen == 0 && m->nservers < m->size) {
		ck_assert_msg(res == POOL_MAY_CONNECT, "step %lu: got %d, expected connect", step, res);
		m->nservers++;
		c->gen = m->gen;
		c->state = M_CONNECTING;
	} else {
		ck_assert_msg(res == POOL_MUST_WAIT, "step %lu: got %d, expected wait%s", step, res,
		              rpaused ? " (paused)" : "");
		m->queue[m->qlen++] = k;
		c->state = M_WAITING;
		rstat.waits++;
	}
}

static void r_unqueue(struct rpool *m, int k)
{
	for (int q = 0; q < m->qlen; q++) {
		if (m->queue[q] == k) {
			memmove(m->queue + q, m->queue + q + 1, sizeof(int) * (size_t)(m->qlen - q - 1));
			m->qlen--;
			return;
		}
	}
	ck_abort_msg("step %lu: client %d not in the model's queue", step, k);
}

static void r_detach(struct rclient *c)
{
	struct rpool *m = &rpools[c->rp];

	pool_detach(&reg, m->pool);
	m->nclients--;
	rpool_maybe_gone(c->rp);
	c->state = M_DETACHED;
}

static void r_step(int k)
{
	struct rclient *c = &rc[k];
	struct rpool *m = &rpools[c->rp];
	void *server;

	switch (c->state) {
	case M_DETACHED:
		r_attach(c);
		break;
	case M_ATTACHED:
		if (rnd() % 4 == 0)
			r_detach(c);
		else if (m->nidle > 0 && rnd() % 8 == 0)
			r_idle_timeout(c->rp);
		else
			r_acquire(k);
		break;
	case M_WAITING:
		if (rnd() % 3 != 0)
			break;
		ck_assert_msg(pool_cancel_wait(&reg, m->pool, &c->w),
		              "step %lu: queued waiter not cancelled", step);
		r_unqueue(m, k);
		c->state = M_ATTACHED;
		break;
	case M_INFLIGHT:
		if (!c->cancelled && rnd() % 4 == 0) {
			ck_assert_msg(!pool_cancel_wait(&reg, m->pool, &c->w),
			              "step %lu: popped waiter cancelled", step);
			c->cancelled = true;
			break;
		}
		if (c->cancelled) {
			c->state = M_ATTACHED;
			if (c->server != NULL)
				r_release(c->rp, c->server, c->w.worker);
			else
				r_closed(c->rp);
		} else {
			c->state = c->server != NULL ? M_ACTIVE : M_CONNECTING;
		}
		break;
	case M_CONNECTING:
		c->state = M_ATTACHED;
		if (rnd() % 5 == 0) {
			r_closed(c->rp);            /* the connect failed */
		} else {
			c->server = rtoken_get(c->gen);
			c->state = M_ACTIVE;
		}
		break;
	case M_ACTIVE:
		server = c->server;
		c->server = NULL;
		c->state = M_ATTACHED;
		/* A worker closes a server of an old gen instead of giving it back. */
		if (rnd() % 6 == 0 || rtoken_gen[rtoken_index(server)] != m->gen) {
			rtoken_put(server);
			r_closed(c->rp);
		} else {
			r_release(c->rp, server, c->w.worker);
		}
		break;
	}
}

static void r_check(void)
{
	size_t live = 0;
	int ts = 0, ti = 0, tw = 0, s, i, w;
	int dbservers[RKEYS] = {0}, dbpools[RKEYS] = {0};

	/* Per database (by its first key): what its pools count, retired or not. */
	for (int p = 0; p < RPOOLS; p++) {
		if (rpools[p].pool == NULL)
			continue;
		int d = rpools[p].key == 2 ? 2 : 0;
		dbservers[d] += rpools[p].nservers;
		dbpools[d]++;
	}
	for (int p = 0; p < RPOOLS; p++) {
		struct rpool *m = &rpools[p];
		int held = 0;
		unsigned gen = ~0u;

		if (m->pool == NULL)
			continue;
		live++;
		ck_assert_msg(pool_listed(m->pool), "step %lu: pool %d freed too early", step, p);
		pool_counts(&reg, m->pool, &s, &i, &w);
		ts += s;
		ti += i;
		tw += w;
		ck_assert_msg(s == m->nservers && i == m->nidle && w == m->qlen &&
		              m->pool->nclients == m->nclients,
		              "step %lu pool %d: servers %d/%d idle %d/%d waiters %d/%d "
		              "clients %d/%d (registry/model)", step, p, s, m->nservers,
		              i, m->nidle, w, m->qlen, m->pool->nclients, m->nclients);
		ck_assert_msg(m->pool->retired == m->retired && m->pool->size == m->size,
		              "step %lu pool %d: retired %d/%d size %d/%d", step, p,
		              m->pool->retired, m->retired, m->pool->size, m->size);
		ck_assert_msg(i <= m->pool->idle_cap, "step %lu pool %d: %d idle in an array of %d",
		              step, p, i, m->pool->idle_cap);
		/* Above size + reserve only after a shrink, and only coming down. */
		ck_assert_msg(s <= m->bound, "step %lu pool %d: %d servers, at most %d allowed "
		              "(size %d + reserve %d)", step, p, s, m->bound, m->size, m->reserve);
		m->bound = max_int(m->size + m->reserve, s);
		ck_assert_msg(rpaused || w == 0 || (i == 0 && s >= m->size),
		              "step %lu pool %d: %d waiting with %d idle, %d/%d servers",
		              step, p, w, i, s, m->size);
		for (int k = 0; k < i; k++)
			ck_assert_msg(m->pool->idle[k].server == m->idle[k] &&
			              m->pool->idle[k].worker == m->idle_worker[k],
			              "step %lu pool %d: idle[%d] differs", step, p, k);
		for (int k = 0; k < RCLIENTS; k++)
			if (rc[k].rp == p && (rc[k].state == M_INFLIGHT || rc[k].state == M_CONNECTING ||
			                      rc[k].state == M_ACTIVE))
				held++;
		ck_assert_msg(s == held + i, "step %lu pool %d: %d servers counted, %d held + %d idle",
		              step, p, s, held, i);
		/* The entry is readable (ASan: its snapshot is held) and current. */
		const struct db_config *db = pool_db(&reg, m->pool, &gen, NULL);
		ck_assert_msg(gen == m->gen && pool_gen(m->pool) == m->gen,
		              "step %lu pool %d: gen %u, model %u", step, p, gen, m->gen);
		ck_assert_msg(strcmp(db->name, rkeys[m->key].db->name) == 0 &&
		              strcmp(db->conninfo, m->conninfo) == 0,
		              "step %lu pool %d: entry %s \"%s\", model \"%s\"", step, p, db->name,
		              db->conninfo, m->conninfo);
		if (reg.cfg == NULL)
			ck_assert_msg(db == rkeys[m->key].db,
			              "step %lu pool %d: entry not the caller's (no config)", step, p);
		else if (!m->retired)
			ck_assert_msg(db == config_find_db(reg.cfg, db->name),
			              "step %lu pool %d: entry not from the current snapshot", step, p);
		/* max_db_connections counts over the database's pools. */
		int d = m->key == 2 ? 2 : 0;
		ck_assert_msg(strcmp(m->pool->dbc->dbname, db->name) == 0 &&
		              m->pool->dbc->nservers == dbservers[d] &&
		              m->pool->dbc->npools == dbpools[d],
		              "step %lu pool %d: database %s counts %d servers in %d pools, model "
		              "%d in %d", step, p, m->pool->dbc->dbname, m->pool->dbc->nservers,
		              m->pool->dbc->npools, dbservers[d], dbpools[d]);
		ck_assert_msg(pool_idle_unwanted(&reg, m->pool, m->gen) ==
		              ((m->retired && m->nclients == 0) || s > m->size),
		              "step %lu pool %d: pool_idle_unwanted for the current gen", step, p);
	}
	ck_assert_msg(npools() == live, "step %lu: %zu pools listed, model has %zu",
	              step, npools(), live);
	size_t ndbs = 0;
	struct list *pos, *tmp;
	list_for_each_safe(pos, tmp, &reg.dbs)
		ndbs++;
	ck_assert_msg(ndbs == (size_t)(dbpools[0] > 0) + (size_t)(dbpools[2] > 0),
	              "step %lu: %zu database counts listed, model has pools in %d", step, ndbs,
	              (dbpools[0] > 0) + (dbpools[2] > 0));
	pool_totals(&reg, &s, &i, &w);
	ck_assert_msg(s == ts && i == ti && w == tw, "step %lu: totals %d/%d/%d, pools %d/%d/%d",
	              step, s, i, w, ts, ti, tw);
}

START_TEST(random_against_model)
{
	const char *env = getenv("PGBERTH_POOL_SEED");
	uint64_t seed = env != NULL ? strtoull(env, NULL, 0) : 0x2545f4914f6cdd1dULL;
	int parked = 0;

	rng = seed != 0 ? seed : 1;
	memset(rc, 0, sizeof(rc));
	memset(rpools, 0, sizeof(rpools));
	memset(rtoken_used, 0, sizeof(rtoken_used));
	memset(&rstat, 0, sizeof(rstat));
	for (int key = 0; key < RKEYS; key++)
		rcur[key] = -1;
	rpaused = false;
	/* What the caller's entries say until the first reload: app/alice 3,
	 * app/bob 1, other/alice 4, no reserve. */
	rs.app_size = 3;
	rs.bob_size = 1;
	rs.app_reserve = rdb_app.reserve_pool_size;
	rs.app_port = 5432;
	rs.other_size = 4;
	rs.other = true;
	ck_assert_ptr_null(reg.cfg);
	for (int k = 0; k < RCLIENTS; k++)
		waiter_init(&rc[k].w, k % 4, (uint32_t)k, 1000u + (uint64_t)k);

	for (step = 0; step < RSTEPS; step++) {
		unsigned r = (unsigned)(rnd() % 100);
		if (step == RNOCFG_STEPS) {
			/* Without a config the run must have exercised queueing and
			 * handoffs on its own. */
			ck_assert_msg(rstat.waits > 100 && rstat.handoffs > 100 && rstat.timed_out > 10,
			              "seed %llu, no config: %lu waits, %lu handoffs, %lu timed out",
			              (unsigned long long)seed, rstat.waits, rstat.handoffs,
			              rstat.timed_out);
			r_reload();
		} else if (r < 6 && reg.cfg == NULL) {
			r_step((int)(rnd() % RCLIENTS));    /* no reload nor pause yet */
		} else if (r < 3) {
			r_reload();
		} else if (r < 6) {
			r_pause();
		} else if (r < 8) {
			r_reserve_sweep();
		} else if (r < 11) {
			int p = (int)(rnd() % RPOOLS);
			if (rpools[p].pool != NULL)
				r_idle_sweep(p);
		} else {
			r_step((int)(rnd() % RCLIENTS));
		}
		r_check();
	}
	ck_assert_msg(rstat.waits > 300 && rstat.handoffs > 200 && rstat.reloads > 50 &&
	              rstat.retired > 3 && rstat.refused > 3 && rstat.served_idle > 10 &&
	              rstat.served_slot > 10 && rstat.surplus_waiting > 3 &&
	              rstat.unwanted_closed > 3 && rstat.paused_parks > 10 &&
	              rstat.shrunk_over > 3 && rstat.timed_out > 30,
	              "seed %llu exercised too little: %lu waits, %lu handoffs, %lu reloads, "
	              "%lu retired, %lu refused, %lu+%lu served, %lu surplus with waiters, "
	              "%lu unwanted closed, %lu parked while paused, %lu shrunk below servers, "
	              "%lu timed out",
	              (unsigned long long)seed, rstat.waits, rstat.handoffs, rstat.reloads,
	              rstat.retired, rstat.refused, rstat.served_idle, rstat.served_slot,
	              rstat.surplus_waiting, rstat.unwanted_closed, rstat.paused_parks,
	              rstat.shrunk_over, rstat.timed_out);

	/* Drain in index order, running: every client gives up what it has and
	 * detaches. A handoff can only go to a client still waiting, which
	 * comes later in the order. */
	if (rpaused)
		r_pause();
	for (int k = 0; k < RCLIENTS; k++) {
		struct rclient *c = &rc[k];
		while (c->state != M_DETACHED) {
			struct rpool *m = &rpools[c->rp];
			if (c->state == M_WAITING) {
				ck_assert(pool_cancel_wait(&reg, m->pool, &c->w));
				r_unqueue(m, k);
				c->state = M_ATTACHED;
			} else if (c->state == M_ATTACHED) {
				r_detach(c);
			} else {
				if (c->state == M_INFLIGHT && !c->cancelled) {
					ck_assert(!pool_cancel_wait(&reg, m->pool, &c->w));
					c->cancelled = true;
				}
				r_step(k);
			}
			r_check();
		}
	}
	/* The idle servers of "other" time out: its pools go, and with them
	 * its database count. App's parked servers go with the registry. */
	for (int p = 0; p < RPOOLS; p++) {
		while (rpools[p].pool != NULL && rpools[p].key == 2) {
			ck_assert_int_eq(rpools[p].nclients, 0);
			ck_assert_int_eq(rpools[p].nservers, rpools[p].nidle);
			r_idle_timeout(p);
			r_check();
		}
	}
	for (int p = 0; p < RPOOLS; p++) {
		if (rpools[p].pool == NULL)
			continue;
		ck_assert_int_eq(rpools[p].qlen, 0);
		ck_assert_int_eq(rpools[p].nservers, rpools[p].nidle);
		parked += rpools[p].nidle;
	}
	/* Parked servers, and retired pools' snapshots (LSan), go with the
	 * registry. */
	nfreed = 0;
	pool_registry_destroy(&reg, rtoken_free);
	ck_assert_int_eq(nfreed, parked);
	for (int i = 0; i < RTOKENS; i++)
		ck_assert_msg(!rtoken_used[i], "server %d neither parked nor closed", i);
	pool_registry_init(&reg);
}
END_TEST

static Suite *pool_suite(void)
{
	Suite *s = suite_create("pool");
	TCase *unit = tcase_create("unit");
	TCase *model = tcase_create("model");
	TCase *reload_tc = tcase_create("reload");
	TCase *pause_tc = tcase_create("pause");

	tcase_add_checked_fixture(unit, setup, teardown);
	tcase_add_test(unit, attach_same_and_different);
	tcase_add_test(unit, acquire_up_to_size_then_wait);
	tcase_add_test(unit, release_parks_most_recent_first);
	tcase_add_test(unit, release_hands_to_head_waiter_fifo);
	tcase_add_test(unit, server_closed_hands_slot_to_head_waiter);
	tcase_add_test(unit, server_closed_frees_slot_for_next_acquire);
	tcase_add_test(unit, idle_spares_stop_at_min_pool_size);
	tcase_add_test(unit, closed_spare_hands_slot_to_waiter);
	tcase_add_test(unit, cancel_wait);
	tcase_add_test(unit, unused_pool_is_freed);
	tcase_add_test(unit, destroy_frees_parked_servers);
	tcase_add_test(unit, many_users_leave_no_pools);
	tcase_add_test(unit, idle_prefers_own_worker);
	tcase_add_test(unit, release_results);
	tcase_add_test(unit, take_idle);
	tcase_add_test(unit, defaults_set_once);
	tcase_add_test(unit, reserve_sweep);
	tcase_add_test(unit, reserve_sweep_max);
	tcase_add_test(unit, max_db_caps_database);
	tcase_add_test(unit, max_db_longest_waiter_first);
	tcase_add_test(unit, max_db_full_pool_not_wanted);
	tcase_add_test(unit, max_db_evict_idle);
	tcase_add_test(unit, spare_up_to_min);
	tcase_add_test(unit, spare_capped_at_size);
	tcase_add_test(unit, totals_sum_pools);
	suite_add_tcase(s, unit);

	tcase_add_checked_fixture(reload_tc, setup, teardown);
	tcase_add_test(reload_tc, reload_grow_serves_waiters_fifo);
	tcase_add_test(reload_tc, reload_shrink_closes_surplus);
	tcase_add_test(reload_tc, reload_grow_idle_fits);
	tcase_add_test(reload_tc, reload_conninfo_bumps_gen);
	tcase_add_test(reload_tc, reload_conninfo_new_defaults);
	tcase_add_test(reload_tc, reload_idle_unwanted);
	tcase_add_test(reload_tc, reload_retire_and_readd);
	tcase_add_test(reload_tc, reload_destroy_frees_retired);
	tcase_add_test(reload_tc, reload_serve_respects_max_db);
	tcase_add_test(reload_tc, registry_init_starts_afresh);
	suite_add_tcase(s, reload_tc);

	tcase_add_checked_fixture(pause_tc, setup, teardown);
	tcase_add_test(pause_tc, pause_holds_servers_and_slots);
	tcase_add_test(pause_tc, pause_no_evict_no_db_slot);
	tcase_add_test(pause_tc, serve_longest_waiter_across_pools);
	tcase_add_test(pause_tc, resume_evicts_for_db_capped_waiters);
	suite_add_tcase(s, pause_tc);

	tcase_add_checked_fixture(model, setup, teardown);
	tcase_add_test(model, random_against_model);
	suite_add_tcase(s, model);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(pool_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
