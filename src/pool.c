/*
 * Shared pool registry. Owns pools, parked idle servers and waiter queues.
 * Lock: reg->mtx. Never touches uv handles and never does I/O: a caller
 * gets back what to do and does it after the lock is released.
 *
 * Fairness: a released server or a freed slot always goes to the head of
 * the waiter queue, never to whoever asks next, so waiting clients are
 * served in arrival order whichever worker they are on.
 */
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "pool.h"

void pool_registry_init(struct pool_registry *reg)
{
	pthread_mutex_init(&reg->mtx, NULL);
	list_init(&reg->pools);
}

static void pool_free(struct pool *pool)
{
	list_del(&pool->node);
	free(pool->idle);
	free(pool->dbname);
	free(pool->user);
	free(pool);
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
			free_server(pool->idle[i]);
		pool_free(pool);
	}
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
	pool->idle = calloc((size_t)size, sizeof(void *));
	if (pool->dbname == NULL || pool->user == NULL || pool->idle == NULL) {
		free(pool->dbname);
		free(pool->user);
		free(pool->idle);
		free(pool);
		return NULL;
	}
	pool->db = db;
	pool->size = size;
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
	list_for_each_safe(pos, tmp, &reg->pools) {
		struct pool *pool = list_entry(pos, struct pool, node);
		if (strcmp(pool->dbname, dbname) == 0 && strcmp(pool->user, user) == 0) {
			found = pool;
			break;
		}
	}
	if (found == NULL)
		found = pool_create_locked(reg, db, dbname, user, size);
	if (found != NULL)
		found->nclients++;
	pthread_mutex_unlock(&reg->mtx);
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
	if (pool->nidle > 0 && pool->nwaiters == 0) {
		*server = pool->idle[--pool->nidle];
		res = POOL_GOT_IDLE;
	} else if (pool->nservers < pool->size && pool->nwaiters == 0) {
		pool->nservers++;
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
	out->worker = w->worker;
	out->slot = w->slot;
	out->client_id = w->client_id;
	out->server = server;
	return true;
}

bool pool_release(struct pool_registry *reg, struct pool *pool, void *server,
                  struct pool_handoff *out)
{
	bool handed;

	pthread_mutex_lock(&reg->mtx);
	handed = pool_pop_waiter_locked(pool, server, out);
	if (!handed)
		pool->idle[pool->nidle++] = server;
	pthread_mutex_unlock(&reg->mtx);
	return handed;
}

bool pool_server_closed(struct pool_registry *reg, struct pool *pool,
                        struct pool_handoff *out)
{
	bool handed;

	pthread_mutex_lock(&reg->mtx);
	pool->nservers--;
	handed = pool->nservers < pool->size && pool_pop_waiter_locked(pool, NULL, out);
	if (handed)
		pool->nservers++;
	else
		pool_maybe_free_locked(pool);
	pthread_mutex_unlock(&reg->mtx);
	return handed;
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
