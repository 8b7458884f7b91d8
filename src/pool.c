/*
 * Shared pool registry. Owns pools, parked idle servers and waiter queues.
 * Lock: reg->mtx. Never touches uv handles and never does I/O: a caller
 * gets back what to do and does it after the lock is released.
 *
 * Fairness: a released server or a freed slot always goes to the head of
 * the waiter queue, never to whoever asks next, so waiting clients are
 * served in arrival order whichever worker they are on.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "pool.h"

void pool_registry_init(struct pool_registry *reg)
{
	pthread_mutex_init(&reg->mtx, NULL);
	list_init(&reg->pools);
	list_init(&reg->dbs);
	reg->cfg = NULL;
	reg->paused = false;
}

static void pool_free(struct pool *pool)
{
	list_del(&pool->node);
	if (pool->dbc != NULL && --pool->dbc->npools == 0) {
		list_del(&pool->dbc->node);
		free(pool->dbc->dbname);
		free(pool->dbc);
	}
	free(pool->idle);
	free(pool->defaults);
	for (int i = 0; i < pool->nold_defaults; i++)
		free(pool->old_defaults[i]);
	free(pool->old_defaults);
	free(pool->dbname);
	free(pool->user);
	if (pool->hold != NULL)
		config_unref(pool->hold);
	free(pool);
}

/* The per-database server count shared by the database's pools. Lock held. */
static struct pool_dbcount *dbcount_get_locked(struct pool_registry *reg, const char *dbname)
{
	struct list *pos, *tmp;

	list_for_each_safe(pos, tmp, &reg->dbs) {
		struct pool_dbcount *d = list_entry(pos, struct pool_dbcount, node);
		if (strcmp(d->dbname, dbname) == 0)
			return d;
	}
	struct pool_dbcount *d = calloc(1, sizeof(*d));
	if (d == NULL || (d->dbname = strdup(dbname)) == NULL) {
		free(d);
		return NULL;
	}
	list_add_tail(&reg->dbs, &d->node);
	return d;
}

/* May the pool open one more server? Lock held. */
static bool pool_can_grow_locked(const struct pool *pool, int cap)
{
	return pool->nservers < cap && (pool->max_db == 0 || pool->dbc->nservers < pool->max_db);
}

static void pool_count_server_locked(struct pool *pool, int delta)
{
	pool->nservers += delta;
	pool->dbc->nservers += delta;
}

/* Frees the pool once nothing refers to it. Lock held. */
static void pool_maybe_free_locked(struct pool *pool)
{
	if (pool->nclients == 0 && pool->nservers == 0 && pool->nwaiters == 0)
		pool_free(pool);
}

void pool_registry_destroy(struct pool_registry *reg, void (*free_server)(void *))
{
	struct list *pos, *tmp;

	list_for_each_safe(pos, tmp, &reg->pools) {
		struct pool *pool = list_entry(pos, struct pool, node);
		for (int i = 0; i < pool->nidle; i++)
			free_server(pool->idle[i].server);
		pool_free(pool);
	}
	if (reg->cfg != NULL)
		config_unref(reg->cfg);
	reg->cfg = NULL;
	pthread_mutex_destroy(&reg->mtx);
}

static struct pool *pool_create_locked(struct pool_registry *reg,
                                       const struct db_config *db,
                                       const char *dbname, const char *user, int size)
{
	struct pool *pool = calloc(1, sizeof(*pool));
	if (pool == NULL)
		return NULL;
	pool->dbname = strdup(dbname);
	pool->user = strdup(user);
	pool->reserve = db->reserve_pool_size;
	pool->idle_cap = size + pool->reserve;
	pool->idle = calloc((size_t)pool->idle_cap, sizeof(*pool->idle));
	pool->dbc = dbcount_get_locked(reg, dbname);
	if (pool->dbname == NULL || pool->user == NULL || pool->idle == NULL || pool->dbc == NULL) {
		if (pool->dbc != NULL && pool->dbc->npools == 0) {
			list_del(&pool->dbc->node);
			free(pool->dbc->dbname);
			free(pool->dbc);
		}
		free(pool->dbname);
		free(pool->user);
		free(pool->idle);
		free(pool);
		return NULL;
	}
	pool->dbc->npools++;
	pool->db = db;
	pool->size = size;
	pool->max_db = db->max_db_connections;
	list_init(&pool->waiters);
	list_add_tail(&reg->pools, &pool->node);
	return pool;
}

/* db is compared by name, not identity: a pool is about the database the
 * clients asked for. */
struct pool *pool_attach(struct pool_registry *reg, const struct db_config *db,
                         const char *user, int size)
{
	const char *dbname = db->name;
	struct list *pos, *tmp;
	struct pool *found = NULL;

	pthread_mutex_lock(&reg->mtx);
	if (reg->cfg != NULL) {
		db = config_find_db(reg->cfg, dbname);
		if (db == NULL) {
			pthread_mutex_unlock(&reg->mtx);
			errno = ENOENT;
			return NULL;
		}
		size = config_pool_size(db, user);
	}
	list_for_each_safe(pos, tmp, &reg->pools) {
		struct pool *pool = list_entry(pos, struct pool, node);
		if (!pool->retired && strcmp(pool->dbname, dbname) == 0 && strcmp(pool->user, user) == 0) {
			found = pool;
			break;
		}
	}
	if (found == NULL)
		found = pool_create_locked(reg, db, dbname, user, size);
	if (found != NULL)
		found->nclients++;
	pthread_mutex_unlock(&reg->mtx);
	if (found == NULL)
		errno = ENOMEM;
	return found;
}

void pool_detach(struct pool_registry *reg, struct pool *pool)
{
	pthread_mutex_lock(&reg->mtx);
	pool->nclients--;
	pool_maybe_free_locked(pool);
	pthread_mutex_unlock(&reg->mtx);
}

enum pool_result pool_acquire(struct pool_registry *reg, struct pool *pool,
                              struct pool_waiter *waiter, void **server)
{
	enum pool_result res;

	pthread_mutex_lock(&reg->mtx);
	if (reg->paused) {
		list_add_tail(&pool->waiters, &waiter->node);
		pool->nwaiters++;
		res = POOL_MUST_WAIT;
	} else if (pool->nidle > 0 && pool->nwaiters == 0) {
		/* The asking worker's own idle server if it has one: it is reused
		 * without leaving its loop. Else the most recently parked. */
		int i = pool->nidle - 1;
		while (i > 0 && pool->idle[i].worker != waiter->worker)
			i--;
		if (pool->idle[i].worker != waiter->worker)
			i = pool->nidle - 1;
		*server = pool->idle[i].server;
		waiter->idle_owner = pool->idle[i].worker;
		memmove(&pool->idle[i], &pool->idle[i + 1], (size_t)(pool->nidle - 1 - i) * sizeof(*pool->idle));
		pool->nidle--;
		res = POOL_GOT_IDLE;
	} else if (pool->nwaiters == 0 && pool_can_grow_locked(pool, pool->size)) {
		pool_count_server_locked(pool, 1);
		res = POOL_MAY_CONNECT;
	} else {
		list_add_tail(&pool->waiters, &waiter->node);
		pool->nwaiters++;
		res = POOL_MUST_WAIT;
	}
	pthread_mutex_unlock(&reg->mtx);
	return res;
}

bool pool_cancel_wait(struct pool_registry *reg, struct pool *pool,
                      struct pool_waiter *waiter)
{
	bool was_queued;

	pthread_mutex_lock(&reg->mtx);
	was_queued = list_linked(&waiter->node);
	if (was_queued) {
		list_del(&waiter->node);
		pool->nwaiters--;
	}
	pthread_mutex_unlock(&reg->mtx);
	return was_queued;
}

/* Pops the head waiter into *out. Lock held. */
static bool pool_pop_waiter_locked(struct pool *pool, void *server, struct pool_handoff *out)
{
	if (pool->nwaiters == 0)
		return false;
	struct pool_waiter *w = list_first(&pool->waiters, struct pool_waiter, node);
	list_del(&w->node);
	pool->nwaiters--;
	out->pool = pool;
	out->worker = w->worker;
	out->slot = w->slot;
	out->client_id = w->client_id;
	out->server = server;
	return true;
}

/* Is the database at its cap while another of its pools has a waiter that
 * a closed server of this pool would let in? Lock held. */
static bool pool_db_wanted_locked(struct pool_registry *reg, const struct pool *pool)
{
	struct list *pos, *tmp;

	if (pool->max_db == 0 || pool->dbc->nservers < pool->max_db)
		return false;
	list_for_each_safe(pos, tmp, &reg->pools) {
		struct pool *p = list_entry(pos, struct pool, node);
		if (p != pool && p->dbc == pool->dbc && p->nwaiters > 0 && p->nservers < p->size)
			return true;
	}
	return false;
}

void *pool_evict_idle(struct pool_registry *reg, struct pool *pool, int *owner)
{
	struct list *pos, *tmp;
	void *server = NULL;

	pthread_mutex_lock(&reg->mtx);
	if (reg->paused || pool->max_db == 0 || pool->nwaiters == 0 || pool->dbc->nservers < pool->max_db ||
	    pool->nservers >= pool->size)
		goto out;
	list_for_each_safe(pos, tmp, &reg->pools) {
		struct pool *p = list_entry(pos, struct pool, node);
		if (p == pool || p->dbc != pool->dbc || p->nidle == 0)
			continue;
		server = p->idle[0].server;     /* the least recently parked */
		*owner = p->idle[0].worker;
		memmove(&p->idle[0], &p->idle[1], (size_t)(p->nidle - 1) * sizeof(*p->idle));
		p->nidle--;
		break;
	}
out:
	pthread_mutex_unlock(&reg->mtx);
	return server;
}

enum pool_release_result pool_release(struct pool_registry *reg, struct pool *pool, void *server,
                                      int worker, struct pool_handoff *out)
{
	enum pool_release_result res = POOL_HANDED;

	pthread_mutex_lock(&reg->mtx);
	/* Over size + reserve (a reload made the pool smaller): closed even
	 * with clients waiting, so the pool comes down to its new size. */
	if (reg->paused || pool->nservers > pool->size + pool->reserve ||
	    !pool_pop_waiter_locked(pool, server, out)) {
		if (pool->nservers > pool->size || pool->nidle >= pool->size + pool->reserve ||
		    pool_db_wanted_locked(reg, pool)) {
			res = POOL_SURPLUS;
		} else {
			pool->idle[pool->nidle].server = server;
			pool->idle[pool->nidle].worker = worker;
			pool->nidle++;
			res = POOL_PARKED;
		}
	}
	pthread_mutex_unlock(&reg->mtx);
	return res;
}

/* Where server is parked in pool->idle, or -1. Lock held. */
static int pool_idle_index_locked(const struct pool *pool, const void *server)
{
	for (int i = 0; i < pool->nidle; i++)
		if (pool->idle[i].server == server)
			return i;
	return -1;
}

static void pool_idle_remove_locked(struct pool *pool, int i)
{
	memmove(&pool->idle[i], &pool->idle[i + 1], (size_t)(pool->nidle - 1 - i) * sizeof(*pool->idle));
	pool->nidle--;
}

bool pool_take_idle(struct pool_registry *reg, struct pool *pool, void *server)
{
	pthread_mutex_lock(&reg->mtx);
	int i = pool_idle_index_locked(pool, server);
	if (i >= 0)
		pool_idle_remove_locked(pool, i);
	pthread_mutex_unlock(&reg->mtx);
	return i >= 0;
}

/* A slot freed in a database at its max_db_connections cap goes to the
 * pool of that database whose head waiter has waited longest. Lock held. */
static bool pool_pass_db_slot_locked(struct pool_registry *reg, struct pool *from,
                                     struct pool_handoff *out)
{
	struct list *pos, *tmp;
	struct pool *best = NULL;
	uint64_t since = UINT64_MAX;

	list_for_each_safe(pos, tmp, &reg->pools) {
		struct pool *p = list_entry(pos, struct pool, node);
		if (p == from || p->dbc != from->dbc || p->nwaiters == 0 || !pool_can_grow_locked(p, p->size))
			continue;
		struct pool_waiter *w = list_first(&p->waiters, struct pool_waiter, node);
		if (w->since_ms < since) {
			since = w->since_ms;
			best = p;
		}
	}
	if (best == NULL || !pool_pop_waiter_locked(best, NULL, out))
		return false;
	pool_count_server_locked(best, 1);
	return true;
}

/* A server slot of pool was given up: it goes to the head waiter, or to
 * another pool of the database at its max_db_connections cap. Lock held. */
static bool pool_slot_freed_locked(struct pool_registry *reg, struct pool *pool,
                                   struct pool_handoff *out)
{
	bool handed = !reg->paused && pool_can_grow_locked(pool, pool->size) &&
	              pool_pop_waiter_locked(pool, NULL, out);
	if (handed)
		pool_count_server_locked(pool, 1);
	else if (pool->max_db > 0 && !reg->paused)
		handed = pool_pass_db_slot_locked(reg, pool, out);
	pool_maybe_free_locked(pool);
	return handed;
}

bool pool_server_closed(struct pool_registry *reg, struct pool *pool,
                        struct pool_handoff *out)
{
	bool handed;

	pthread_mutex_lock(&reg->mtx);
	pool_count_server_locked(pool, -1);
	handed = pool_slot_freed_locked(reg, pool, out);
	pthread_mutex_unlock(&reg->mtx);
	return handed;
}

enum pool_spare pool_take_idle_spare(struct pool_registry *reg, struct pool *pool, void *server,
                                     int keep)
{
	enum pool_spare res = POOL_SPARE_GONE;

	pthread_mutex_lock(&reg->mtx);
	int i = pool_idle_index_locked(pool, server);
	if (i >= 0 && pool->nservers - pool->retiring <= keep) {
		res = POOL_SPARE_KEPT;
	} else if (i >= 0) {
		pool_idle_remove_locked(pool, i);
		pool->retiring++;   /* still counted, so that the pool stays */
		res = POOL_SPARE_TAKEN;
	}
	pthread_mutex_unlock(&reg->mtx);
	return res;
}

bool pool_spare_closed(struct pool_registry *reg, struct pool *pool, struct pool_handoff *out)
{
	bool handed;

	pthread_mutex_lock(&reg->mtx);
	pool->retiring--;
	pool_count_server_locked(pool, -1);
	handed = pool_slot_freed_locked(reg, pool, out);
	pthread_mutex_unlock(&reg->mtx);
	return handed;
}

void pool_set_defaults(struct pool_registry *reg, struct pool *pool, unsigned gen, char *blob,
                       size_t len)
{
	pthread_mutex_lock(&reg->mtx);
	if (pool->defaults == NULL && gen == atomic_load(&pool->gen)) {
		pool->defaults = blob;
		pool->defaults_len = len;
		blob = NULL;
	}
	pthread_mutex_unlock(&reg->mtx);
	free(blob);
}

const char *pool_defaults(struct pool_registry *reg, struct pool *pool, size_t *len)
{
	pthread_mutex_lock(&reg->mtx);
	const char *blob = pool->defaults;
	*len = pool->defaults_len;
	pthread_mutex_unlock(&reg->mtx);
	return blob;
}

int pool_reserve_sweep(struct pool_registry *reg, uint64_t cutoff_ms,
                       struct pool_handoff *out, int max)
{
	struct list *pos, *tmp;
	int n = 0;

	pthread_mutex_lock(&reg->mtx);
	list_for_each_safe(pos, tmp, &reg->pools) {
		struct pool *p = list_entry(pos, struct pool, node);
		while (!reg->paused && n < max && p->nwaiters > 0 && p->reserve > 0 &&
		       pool_can_grow_locked(p, p->size + p->reserve)) {
			struct pool_waiter *w = list_first(&p->waiters, struct pool_waiter, node);
			if (w->since_ms > cutoff_ms)
				break;
			pool_pop_waiter_locked(p, NULL, &out[n++]);
			pool_count_server_locked(p, 1);
		}
	}
	pthread_mutex_unlock(&reg->mtx);
	return n;
}

struct pool *pool_spare_needed(struct pool_registry *reg)
{
	struct list *pos, *tmp;
	struct pool *found = NULL;

	pthread_mutex_lock(&reg->mtx);
	list_for_each_safe(pos, tmp, &reg->pools) {
		struct pool *p = list_entry(pos, struct pool, node);
		int min = p->db->min_pool_size < p->size ? p->db->min_pool_size : p->size;
		if (!p->retired && p->nservers < min && pool_can_grow_locked(p, p->size)) {
			pool_count_server_locked(p, 1);
			found = p;
			break;
		}
	}
	pthread_mutex_unlock(&reg->mtx);
	return found;
}

void pool_counts(struct pool_registry *reg, struct pool *pool,
                 int *nservers, int *nidle, int *nwaiters)
{
	pthread_mutex_lock(&reg->mtx);
	*nservers = pool->nservers;
	*nidle = pool->nidle;
	*nwaiters = pool->nwaiters;
	pthread_mutex_unlock(&reg->mtx);
}

int pool_registry_set_config(struct pool_registry *reg, struct config *cfg)
{
	struct list *pos, *tmp;
	struct config *old;
	int rc = 0;

	pthread_mutex_lock(&reg->mtx);
	/* Room first, so that nothing below can fail half-way. */
	list_for_each_safe(pos, tmp, &reg->pools) {
		struct pool *p = list_entry(pos, struct pool, node);
		const struct db_config *db = p->retired ? NULL : config_find_db(cfg, p->dbname);
		if (db == NULL)
			continue;
		if (p->defaults != NULL && strcmp(db->conninfo, p->db->conninfo) != 0) {
			char **grown = realloc(p->old_defaults,
			                       (size_t)(p->nold_defaults + 1) * sizeof(*grown));
			if (grown == NULL) {
				rc = -1;
				goto out;
			}
			p->old_defaults = grown;
		}
		int cap = config_pool_size(db, p->user) + db->reserve_pool_size;
		if (cap <= p->idle_cap)
			continue;
		struct pool_idle *idle = realloc(p->idle, (size_t)cap * sizeof(*idle));
		if (idle == NULL) {
			rc = -1;
			goto out;
		}
		p->idle = idle;
		p->idle_cap = cap;
	}
	old = reg->cfg;
	list_for_each_safe(pos, tmp, &reg->pools) {
		struct pool *p = list_entry(pos, struct pool, node);
		if (p->retired)
			continue;
		const struct db_config *db = config_find_db(cfg, p->dbname);
		if (db == NULL) {
			p->retired = true;
			p->hold = old != NULL ? config_ref(old) : NULL;
			continue;
		}
		if (strcmp(db->conninfo, p->db->conninfo) != 0) {
			atomic_fetch_add(&p->gen, 1);
			if (p->defaults != NULL)
				p->old_defaults[p->nold_defaults++] = p->defaults;
			p->defaults = NULL;     /* the next login of the new gen tells */
		}
		p->db = db;
		p->size = config_pool_size(db, p->user);
		p->reserve = db->reserve_pool_size;
		p->max_db = db->max_db_connections;
	}
	reg->cfg = config_ref(cfg);
	if (old != NULL)
		config_unref(old);  /* the caller still holds it */
out:
	pthread_mutex_unlock(&reg->mtx);
	return rc;
}

const struct db_config *pool_db(struct pool_registry *reg, struct pool *pool, unsigned *gen,
                                struct config **ref)
{
	pthread_mutex_lock(&reg->mtx);
	const struct db_config *db = pool->db;
	if (gen != NULL)
		*gen = atomic_load(&pool->gen);
	if (ref != NULL) {
		struct config *holder = pool->retired ? pool->hold : reg->cfg;
		*ref = holder != NULL ? config_ref(holder) : NULL;
	}
	pthread_mutex_unlock(&reg->mtx);
	return db;
}

bool pool_idle_unwanted(struct pool_registry *reg, struct pool *pool, unsigned gen)
{
	pthread_mutex_lock(&reg->mtx);
	bool unwanted = gen != atomic_load(&pool->gen) || (pool->retired && pool->nclients == 0) ||
	                pool->nservers > pool->size;
	pthread_mutex_unlock(&reg->mtx);
	return unwanted;
}

void pool_set_paused(struct pool_registry *reg, bool paused)
{
	pthread_mutex_lock(&reg->mtx);
	reg->paused = paused;
	pthread_mutex_unlock(&reg->mtx);
}

int pool_serve_waiters(struct pool_registry *reg, struct pool_handoff *out, int max)
{
	struct list *pos, *tmp;
	int n = 0;

	pthread_mutex_lock(&reg->mtx);
	/* The longest waiter that can go goes first, whichever pool it is in:
	 * pools of one database compete for max_db_connections. */
	while (!reg->paused && n < max) {
		struct pool *best = NULL;
		uint64_t since = UINT64_MAX;
		list_for_each_safe(pos, tmp, &reg->pools) {
			struct pool *p = list_entry(pos, struct pool, node);
			if (p->nwaiters == 0 || (p->nidle == 0 && !pool_can_grow_locked(p, p->size)))
				continue;
			struct pool_waiter *w = list_first(&p->waiters, struct pool_waiter, node);
			if (w->since_ms < since) {
				since = w->since_ms;
				best = p;
			}
		}
		if (best == NULL)
			break;
		if (best->nidle > 0) {
			struct pool_idle idle = best->idle[--best->nidle];
			pool_pop_waiter_locked(best, idle.server, &out[n]);
			out[n++].idle_owner = idle.worker;
		} else {
			pool_pop_waiter_locked(best, NULL, &out[n++]);
			pool_count_server_locked(best, 1);
		}
	}
	pthread_mutex_unlock(&reg->mtx);
	return n;
}

int pool_evict_for_waiters(struct pool_registry *reg, struct pool_idle *out, int max)
{
	struct list *pos, *tmp, *pos2, *tmp2;
	int n = 0;

	pthread_mutex_lock(&reg->mtx);
	list_for_each_safe(pos, tmp, &reg->pools) {
		struct pool *p = list_entry(pos, struct pool, node);
		if (reg->paused || n >= max)
			break;
		if (p->nwaiters == 0 || p->nidle > 0 || p->max_db == 0 || p->nservers >= p->size ||
		    p->dbc->nservers < p->max_db)
			continue;
		list_for_each_safe(pos2, tmp2, &reg->pools) {
			struct pool *q = list_entry(pos2, struct pool, node);
			if (q == p || q->dbc != p->dbc || q->nidle == 0)
				continue;
			out[n++] = q->idle[0];      /* the least recently parked */
			memmove(&q->idle[0], &q->idle[1], (size_t)(q->nidle - 1) * sizeof(*q->idle));
			q->nidle--;
			break;
		}
	}
	pthread_mutex_unlock(&reg->mtx);
	return n;
}

void pool_totals(struct pool_registry *reg, int *nservers, int *nidle, int *nwaiters)
{
	struct list *pos, *tmp;

	*nservers = *nidle = *nwaiters = 0;
	pthread_mutex_lock(&reg->mtx);
	list_for_each_safe(pos, tmp, &reg->pools) {
		struct pool *p = list_entry(pos, struct pool, node);
		*nservers += p->nservers;
		*nidle += p->nidle;
		*nwaiters += p->nwaiters;
	}
	pthread_mutex_unlock(&reg->mtx);
}
