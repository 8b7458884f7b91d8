/*
 * Prepared statement bookkeeping (see pstmt.h): statements, a client's map
 * of them by name, a server's cache of them by content, and the server's
 * reply queue. Pure data structures, unit-tested in check_pstmt.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pstmt.h"

static uint64_t hash_bytes(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint64_t h = 14695981039346656037ull;     /* FNV-1a */

	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 1099511628211ull;
	}
	return h ^ (h >> 29);
}

struct pstmt *pstmt_new(const char *name, size_t name_len, const uint8_t *body, size_t body_len,
                        const void *settings, size_t settings_len)
{
	struct pstmt *p = malloc(sizeof(*p) + name_len + 1 + body_len + settings_len);

	if (p == NULL)
		return NULL;
	atomic_init(&p->refs, 1);
	uint64_t hs = hash_bytes(settings, settings_len);
	p->hash = hash_bytes(body, body_len) ^ (hs * 0x9e3779b97f4a7c15ull);
	snprintf(p->sname, sizeof(p->sname), "pgberth_%016" PRIx64, p->hash);
	p->name_len = (uint32_t)name_len;
	p->body_len = (uint32_t)body_len;
	p->settings_len = (uint32_t)settings_len;
	memcpy(p->data, name, name_len);
	p->data[name_len] = '\0';
	memcpy(p->data + name_len + 1, body, body_len);
	if (settings_len > 0)
		memcpy(p->data + name_len + 1 + body_len, settings, settings_len);
	p->name = (const char *)p->data;
	p->body = p->data + name_len + 1;
	p->settings = p->body + body_len;
	return p;
}

struct pstmt *pstmt_ref(struct pstmt *p)
{
	atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
	return p;
}

void pstmt_unref(struct pstmt *p)
{
	if (p != NULL && atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1)
		free(p);
}

bool pstmt_same(const struct pstmt *a, const struct pstmt *b)
{
	return a == b || (a->hash == b->hash && a->body_len == b->body_len &&
	                  a->settings_len == b->settings_len &&
	                  memcmp(a->body, b->body, a->body_len) == 0 &&
	                  memcmp(a->settings, b->settings, a->settings_len) == 0);
}

/* --- the client's map, by name: linear probing, backward-shift delete --- */

static uint32_t map_home(const struct pstmt_map *m, const char *name, size_t len)
{
	return (uint32_t)hash_bytes(name, len) & (m->cap - 1);
}

static bool map_is(const struct pstmt *p, const char *name, size_t len)
{
	return p->name_len == len && memcmp(p->name, name, len) == 0;
}

/* The slot of name, or of where it would go. */
static uint32_t map_find(const struct pstmt_map *m, const char *name, size_t len)
{
	uint32_t i = map_home(m, name, len);

	while (m->slots[i].p != NULL && !map_is(m->slots[i].p, name, len))
		i = (i + 1) & (m->cap - 1);
	return i;
}

struct pstmt *pstmt_map_get(const struct pstmt_map *m, const char *name, size_t name_len)
{
	return m->n == 0 ? NULL : m->slots[map_find(m, name, name_len)].p;
}

uint8_t pstmt_map_marks(const struct pstmt_map *m, const struct pstmt *p)
{
	if (m->n == 0)
		return 0;
	const struct pstmt_mslot *slot = &m->slots[map_find(m, p->name, p->name_len)];
	return slot->p == p ? slot->marks : 0;
}

void pstmt_map_mark(struct pstmt_map *m, const struct pstmt *p, uint8_t marks, bool on)
{
	if (m->n == 0)
		return;
	struct pstmt_mslot *slot = &m->slots[map_find(m, p->name, p->name_len)];
	if (slot->p == p)
		slot->marks = on ? slot->marks | marks : slot->marks & ~marks;
}

void pstmt_map_closing_all(struct pstmt_map *m, bool on, bool drop)
{
	for (uint32_t i = 0; i < m->cap; i++) {
		if (m->slots[i].p == NULL)
			continue;
		if (on)
			m->slots[i].marks |= PSTMT_CLOSING;
		else if (!drop)
			m->slots[i].marks &= ~PSTMT_CLOSING;
	}
	if (on || !drop)
		return;
	/* Dropping: the others go into a table of their own. */
	struct pstmt_map keep = {0};
	for (uint32_t i = 0; i < m->cap; i++) {
		struct pstmt_mslot *slot = &m->slots[i];
		if (slot->p != NULL && !(slot->marks & PSTMT_CLOSING) && pstmt_map_add(&keep, slot->p) == 0)
			pstmt_map_mark(&keep, slot->p, slot->marks, true);
	}
	pstmt_map_clear(m);
	*m = keep;
}

int pstmt_map_add(struct pstmt_map *m, struct pstmt *p)
{
	if ((m->n + 1) * 4 > m->cap * 3) {
		uint32_t cap = m->cap ? m->cap * 2 : 16, ocap = m->cap;
		struct pstmt_mslot *old = m->slots, *slots = calloc(cap, sizeof(*slots));
		if (slots == NULL)
			return -ENOMEM;
		m->slots = slots;
		m->cap = cap;
		for (uint32_t i = 0; i < ocap; i++)
			if (old[i].p != NULL)
				m->slots[map_find(m, old[i].p->name, old[i].p->name_len)] = old[i];
		free(old);
	}
	struct pstmt_mslot *slot = &m->slots[map_find(m, p->name, p->name_len)];
	slot->p = pstmt_ref(p);
	slot->marks = 0;
	m->n++;
	m->bytes += p->body_len;
	return 0;
}

void pstmt_map_del(struct pstmt_map *m, const struct pstmt *p)
{
	if (m->n == 0)
		return;
	uint32_t mask = m->cap - 1, i = map_find(m, p->name, p->name_len);
	if (m->slots[i].p != p)
		return;
	m->bytes -= p->body_len;
	pstmt_unref(m->slots[i].p);
	m->slots[i].p = NULL;
	m->n--;
	/* Pull back what probed past the hole. */
	for (uint32_t j = (i + 1) & mask; m->slots[j].p != NULL; j = (j + 1) & mask) {
		uint32_t home = map_home(m, m->slots[j].p->name, m->slots[j].p->name_len);
		if (((j - home) & mask) >= ((j - i) & mask)) {
			m->slots[i] = m->slots[j];
			m->slots[j].p = NULL;
			i = j;
		}
	}
}

void pstmt_map_clear(struct pstmt_map *m)
{
	for (uint32_t i = 0; i < m->cap; i++)
		pstmt_unref(m->slots[i].p);
	free(m->slots);
	m->slots = NULL;
	m->cap = m->n = 0;
	m->bytes = 0;
}

/* --- the server's cache, by content hash --- */

static uint32_t cache_find(const struct pstmt_cache *c, uint64_t hash)
{
	uint32_t mask = c->cap - 1;

	for (uint32_t i = (uint32_t)hash & mask;; i = (i + 1) & mask)
		if (c->slots[i].p == NULL || c->slots[i].p->hash == hash)
			return i;
}

struct pstmt *pstmt_cache_named(const struct pstmt_cache *c, const struct pstmt *p)
{
	return c->n == 0 ? NULL : c->slots[cache_find(c, p->hash)].p;
}

static struct pstmt_slot *cache_slot(struct pstmt_cache *c, const struct pstmt *p)
{
	if (c->n == 0)
		return NULL;
	struct pstmt_slot *slot = &c->slots[cache_find(c, p->hash)];
	if (slot->p == NULL || !pstmt_same(slot->p, p))
		return NULL;
	slot->used = ++c->tick;
	return slot;
}

bool pstmt_cache_has(struct pstmt_cache *c, const struct pstmt *p)
{
	return cache_slot(c, p) != NULL;
}

bool pstmt_cache_confirmed(struct pstmt_cache *c, const struct pstmt *p)
{
	struct pstmt_slot *slot = cache_slot(c, p);
	return slot != NULL && slot->confirmed;
}

struct pstmt *pstmt_cache_lru(const struct pstmt_cache *c)
{
	const struct pstmt_slot *best = NULL;

	for (uint32_t i = 0; i < c->cap; i++)
		if (c->slots[i].p != NULL && (best == NULL || c->slots[i].used < best->used))
			best = &c->slots[i];
	return best != NULL ? best->p : NULL;
}

int pstmt_cache_add(struct pstmt_cache *c, struct pstmt *p, uint64_t *added)
{
	if ((c->n + 1) * 4 > c->cap * 3) {
		uint32_t cap = c->cap ? c->cap * 2 : 16, ocap = c->cap;
		struct pstmt_slot *old = c->slots, *slots = calloc(cap, sizeof(*slots));
		if (slots == NULL)
			return -ENOMEM;
		c->slots = slots;
		c->cap = cap;
		for (uint32_t i = 0; i < ocap; i++)
			if (old[i].p != NULL)
				c->slots[cache_find(c, old[i].p->hash)] = old[i];
		free(old);
	}
	struct pstmt_slot *slot = &c->slots[cache_find(c, p->hash)];
	if (slot->p != NULL) {
		c->bytes -= slot->p->body_len;
		pstmt_unref(slot->p);
		c->n--;
	}
	c->bytes += p->body_len;
	slot->p = pstmt_ref(p);
	slot->used = slot->added = ++c->tick;
	slot->confirmed = false;
	c->n++;
	*added = slot->added;
	return 0;
}

static void cache_del_at(struct pstmt_cache *c, uint32_t i)
{
	uint32_t mask = c->cap - 1;

	c->bytes -= c->slots[i].p->body_len;
	pstmt_unref(c->slots[i].p);
	c->slots[i].p = NULL;
	c->n--;
	for (uint32_t j = (i + 1) & mask; c->slots[j].p != NULL; j = (j + 1) & mask) {
		uint32_t home = (uint32_t)c->slots[j].p->hash & mask;
		if (((j - home) & mask) >= ((j - i) & mask)) {
			c->slots[i] = c->slots[j];
			c->slots[j].p = NULL;
			i = j;
		}
	}
}

void pstmt_cache_settle(struct pstmt_cache *c, const struct pstmt *p, uint64_t added, bool ok)
{
	if (c->n == 0)
		return;
	uint32_t i = cache_find(c, p->hash);
	if (c->slots[i].p == NULL || c->slots[i].added != added)
		return;
	if (ok)
		c->slots[i].confirmed = true;
	else
		cache_del_at(c, i);
}

void pstmt_cache_del(struct pstmt_cache *c, const struct pstmt *p)
{
	if (c->n == 0)
		return;
	uint32_t i = cache_find(c, p->hash);
	if (c->slots[i].p != NULL)
		cache_del_at(c, i);
}

void pstmt_cache_clear(struct pstmt_cache *c)
{
	for (uint32_t i = 0; i < c->cap; i++)
		pstmt_unref(c->slots[i].p);
	free(c->slots);
	c->slots = NULL;
	c->cap = c->n = 0;
	c->bytes = 0;
}

/* --- the reply queue --- */

static int grow(void **ring, uint32_t *cap, uint32_t head, uint32_t n, size_t size)
{
	uint32_t ncap = *cap ? *cap * 2 : 64;
	uint8_t *to = malloc((size_t)ncap * size), *from = *ring;

	if (to == NULL)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++)
		memcpy(to + (size_t)i * size, from + (size_t)((head + i) & (*cap - 1)) * size, size);
	free(*ring);
	*ring = to;
	*cap = ncap;
	return 0;
}

int pstmt_queue_push(struct pstmt_queue *q, uint8_t entry, struct pstmt *p, uint64_t added)
{
	if (q->n >= PSTMT_QUEUE_MAX)
		return -E2BIG;
	if (q->n == q->cap) {
		if (grow((void **)&q->ring, &q->cap, q->head, q->n, 1) < 0)
			return -ENOMEM;
		q->head = 0;
	}
	if (entry & PSTMT_REF) {
		if (q->rn == q->rcap) {
			if (grow((void **)&q->refs, &q->rcap, q->rhead, q->rn, sizeof(*q->refs)) < 0)
				return -ENOMEM;
			q->rhead = 0;
		}
		struct pstmt_ref *r = &q->refs[(q->rhead + q->rn++) & (q->rcap - 1)];
		r->p = pstmt_ref(p);
		r->added = added;
	}
	q->ring[(q->head + q->n++) & (q->cap - 1)] = entry;
	q->last = entry & PSTMT_KIND;
	if ((q->last == PSTMT_EXECUTE || q->last == PSTMT_SIMPLE) && !(entry & PSTMT_SYNTH))
		q->runs++;
	return 0;
}

static uint8_t queue_head(const struct pstmt_queue *q)
{
	return q->ring[q->head];
}

/* Done with the head entry; failed: the server did not do it (an error,
 * or skipped after one). */
static void queue_pop(struct pstmt_queue *q, bool failed, struct pstmt_cache *cache, struct pstmt_map *map)
{
	uint8_t e = queue_head(q);
	int kind = e & PSTMT_KIND;

	q->head = (q->head + 1) & (q->cap - 1);
	q->n--;
	if ((kind == PSTMT_EXECUTE || kind == PSTMT_SIMPLE) && !(e & PSTMT_SYNTH))
		q->runs--;
	if (failed && kind == PSTMT_SIMPLE && !(e & PSTMT_SYNTH))
		q->unanswered++;    /* skipped: no ReadyForQuery */
	if ((e & PSTMT_DROPS) && map != NULL)
		pstmt_map_closing_all(map, false, !failed);
	if (!(e & PSTMT_REF))
		return;
	struct pstmt_ref r = q->refs[q->rhead];
	q->rhead = (q->rhead + 1) & (q->rcap - 1);
	q->rn--;
	if (kind == PSTMT_CLOSE || kind == PSTMT_SIMPLE || kind == PSTMT_EXECUTE) {
		/* A Close or DEALLOCATE pgberth answered, or a DEALLOCATE in an
		 * extended query: the statement goes now, or (skipped, failed)
		 * stays. */
		if (map != NULL && failed)
			pstmt_map_mark(map, r.p, PSTMT_CLOSING, false);
		else if (map != NULL)
			pstmt_map_del(map, r.p);
	} else {
		/* A Parse pgberth answered (SYNTH) leaves the server as it was;
		 * the client's statement is what did (not) come to be. */
		if (!(e & PSTMT_SYNTH))
			pstmt_cache_settle(cache, r.p, r.added, !failed);
		if (map != NULL && !(e & PSTMT_OURS)) {
			if (failed)
				pstmt_map_del(map, r.p);
			else
				pstmt_map_mark(map, r.p, PSTMT_PENDING, false);
		}
	}
	pstmt_unref(r.p);
}

/* Drops the Syncs after the head up to the COPY's end mark, and that mark
 * (a second COPY of the same Query has its own); tells whether it was
 * there (the CopyDone was sent already). */
static bool queue_drop_syncs(struct pstmt_queue *q)
{
	uint32_t mask = q->cap - 1, to = 1, from = 1;
	bool ended = false;

	for (; from < q->n; from++) {
		uint8_t e = q->ring[(q->head + from) & mask];
		if ((e & PSTMT_KIND) == PSTMT_COPY_END) {
			ended = true;
			from++;
			break;
		}
		if ((e & PSTMT_KIND) == PSTMT_SYNC) {
			q->unanswered++;
			q->uncertain++;
			continue;
		}
		q->ring[(q->head + to++) & mask] = e;
	}
	for (; from < q->n; from++)
		q->ring[(q->head + to++) & mask] = q->ring[(q->head + from) & mask];
	q->n = to;
	return ended;
}

char pstmt_queue_synth(struct pstmt_queue *q, struct pstmt_cache *cache, struct pstmt_map *map,
                       char txstatus)
{
	while (q->n > 0) {
		uint8_t e = queue_head(q);
		if ((e & PSTMT_KIND) == PSTMT_COPY_END) {
			queue_pop(q, false, cache, map);
			continue;
		}
		if (q->skipping && (e & PSTMT_KIND) != PSTMT_SYNC && (e & PSTMT_KIND) != PSTMT_FENCE) {
			queue_pop(q, true, cache, map);
			continue;
		}
		if (!(e & PSTMT_SYNTH))
			return 0;
		if ((e & PSTMT_KIND) == PSTMT_SIMPLE) {
			queue_pop(q, txstatus == 'E', cache, map);
			return txstatus == 'E' ? 'q' : 'Q';
		}
		queue_pop(q, false, cache, map);
		return (e & PSTMT_KIND) == PSTMT_PARSE ? '1' : '3';
	}
	return 0;
}

bool pstmt_queue_needs_next(const struct pstmt_queue *q, char t)
{
	return t == 'Z' && q->n > 0 && (queue_head(q) & PSTMT_KIND) == PSTMT_FENCE && q->fence == 0;
}

enum pstmt_reply pstmt_queue_reply(struct pstmt_queue *q, char t, char next,
                                   struct pstmt_cache *cache, struct pstmt_map *map)
{
	/* Sent at any time: notices, notifications, parameter changes. */
	if (t == 'N' || t == 'A' || t == 'S' || q->n == 0)
		return PSTMT_RELAY;
	uint8_t e = queue_head(q);
	int kind = e & PSTMT_KIND;
	bool done;

	if (kind == PSTMT_FENCE) {
		/* Z 3 Z: ours. A ReadyForQuery before them is a client's. */
		if (q->fence == 0 && t == 'Z' && next != '3')
			return PSTMT_EXTRA;
		if ((q->fence == 0 && t == 'Z') || (q->fence == 1 && t == '3')) {
			q->fence++;
			return PSTMT_DROP;
		}
		if (q->fence == 2 && t == 'Z') {
			q->fence = 0;
			q->skipping = false;
			queue_pop(q, false, cache, map);
			q->unanswered++;    /* counted as owed when it was sent */
			return PSTMT_DROP;
		}
		return PSTMT_RELAY;     /* the end of the COPY's own replies */
	}
	switch (t) {
	case 'G':
		/* CopyInResponse: the Syncs up to the CopyDone are not counted
		 * (see the fence, pstmt.h). */
		q->copy_end_sent = (kind == PSTMT_EXECUTE || kind == PSTMT_SIMPLE) && queue_drop_syncs(q);
		return PSTMT_RELAY;
	case 'E':
		if (kind == PSTMT_SYNC || kind == PSTMT_SIMPLE) {
			q->simple_failed |= kind == PSTMT_SIMPLE;
			return PSTMT_RELAY;     /* ReadyForQuery follows */
		}
		queue_pop(q, true, cache, map);
		q->skipping = true;
		return PSTMT_RELAY;
	case 'Z': {
		done = kind == PSTMT_SYNC || kind == PSTMT_SIMPLE;
		q->skipping = false;
		bool failed = q->simple_failed;
		q->simple_failed = false;
		if (done && failed) {
			queue_pop(q, true, cache, map);
			q->unanswered--;    /* this one is answered */
			return PSTMT_RELAY;
		}
		break;
	}
	case '1':
		done = kind == PSTMT_PARSE;
		break;
	case '2':
		done = kind == PSTMT_BIND;
		break;
	case '3':
		done = kind == PSTMT_CLOSE;
		break;
	case 'T':
	case 'n':
		done = kind == PSTMT_DESCRIBE_STMT || kind == PSTMT_DESCRIBE_PORTAL;
		break;
	case 'C':
	case 'I':
	case 's':
		done = kind == PSTMT_EXECUTE;
		break;
	default:
		return PSTMT_RELAY;         /* rows, copy data, ParameterDescription */
	}
	if (!done)
		return PSTMT_RELAY;
	queue_pop(q, false, cache, map);
	return (e & PSTMT_OURS) ? PSTMT_DROP : PSTMT_RELAY;
}

void pstmt_queue_clear(struct pstmt_queue *q)
{
	for (uint32_t i = 0; i < q->rn; i++)
		pstmt_unref(q->refs[(q->rhead + i) & (q->rcap - 1)].p);
	free(q->ring);
	free(q->refs);
	memset(q, 0, sizeof(*q));
}
