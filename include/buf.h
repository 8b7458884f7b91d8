/*
 * Byte buffer for socket I/O: data lives in [start, end) of a heap block of
 * cap bytes. The owner of the struct owns the block; buf_free releases it.
 * A buffer that has never been written has no block at all (data == NULL),
 * so an idle connection costs no buffer memory.
 */
#ifndef PGBERTH_BUF_H
#define PGBERTH_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf {
	uint8_t *data;
	size_t cap;
	size_t start;               /* first unconsumed byte */
	size_t end;                 /* one past the last byte */
};

static inline size_t buf_len(const struct buf *b) { return b->end - b->start; }
static inline uint8_t *buf_head(const struct buf *b) { return b->data + b->start; }
static inline size_t buf_room(const struct buf *b) { return b->cap - b->end; }

/* Makes room for n more bytes at the end (moving or growing). 0 or -ENOMEM. */
int buf_reserve(struct buf *b, size_t n);
int buf_append(struct buf *b, const void *p, size_t n);
/* Drops n bytes from the front; an emptied buffer restarts at offset 0. */
void buf_consume(struct buf *b, size_t n);
/* Replaces the cut bytes at offset off (from the head) with n bytes of p
 * (p may be NULL when n is 0). 0 or -ENOMEM, b then as it was. */
int buf_splice(struct buf *b, size_t off, size_t cut, const void *p, size_t n);
void buf_reset(struct buf *b);
void buf_free(struct buf *b);

/*
 * A bounded stack of equal-sized blocks, one per worker, so that the relay
 * does not allocate per message and an idle connection holds no buffer:
 * a connection takes a block when it reads and gives it back once it has
 * sent everything on. Blocks beyond max are freed.
 */
struct buf_cache {
	uint8_t **blocks;
	int n;
	int max;
	size_t size;                /* every block is this big */
};

int buf_cache_init(struct buf_cache *bc, size_t size, int max);
void buf_cache_destroy(struct buf_cache *bc);
/* Gives a buffer without a block a cached one (or a new one) of bc->size
 * bytes; what a smaller buffer (see buf_shrink) holds moves into it.
 * 0 or -ENOMEM, the buffer then as it was. */
int buf_take_block(struct buf *b, struct buf_cache *bc);
/* A block holding at most max bytes gives them to a buffer of their own
 * size and goes back to bc: for a connection that may hold a few bytes for
 * long. Left as it is if that cannot be allocated. */
void buf_shrink(struct buf *b, struct buf_cache *bc, size_t max);
/* A buffer grown past bc's block size (a long message read whole) whose
 * bytes fit a block again moves them into one, and frees the big one.
 * Left as it is if no block can be had. */
void buf_fit(struct buf *b, struct buf_cache *bc);
/* An empty buffer gives its block back (or frees it); a non-empty one is
 * left alone. */
void buf_give_block(struct buf *b, struct buf_cache *bc);
/* Hands what from holds, memory and all, to the empty buffer to (whose own
 * memory is freed); from is left empty, holding nothing. No byte is copied. */
void buf_move(struct buf *to, struct buf *from);

#endif
