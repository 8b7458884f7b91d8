/*
 * Byte buffers for socket I/O. Growth doubles. The relay's buffers hold a
 * block of the worker's cache while they have bytes and give it back once
 * empty; buf_shrink lets one that holds a few bytes for long give it back
 * early. buf_free releases whatever a buffer holds.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

int buf_reserve(struct buf *b, size_t n)
{
	if (buf_room(b) >= n)
		return 0;
	size_t len = buf_len(b);
	if (b->start > 0 && b->cap - len >= n) {
		memmove(b->data, b->data + b->start, len);
		b->start = 0;
		b->end = len;
		return 0;
	}
	size_t cap = b->cap ? b->cap : 256;
	while (cap - len < n)
		cap *= 2;
	uint8_t *p = malloc(cap);
	if (p == NULL)
		return -ENOMEM;
	if (len > 0)
		memcpy(p, b->data + b->start, len);
	free(b->data);
	b->data = p;
	b->cap = cap;
	b->start = 0;
	b->end = len;
	return 0;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
	int rc = buf_reserve(b, n);
	if (rc < 0)
		return rc;
	memcpy(b->data + b->end, p, n);
	b->end += n;
	return 0;
}

int buf_splice(struct buf *b, size_t off, size_t cut, const void *p, size_t n)
{
	if (cut == 0 && n == 0)
		return 0;
	if (n > cut && buf_reserve(b, n - cut) < 0)
		return -ENOMEM;
	uint8_t *at = buf_head(b) + off;
	memmove(at + n, at + cut, buf_len(b) - off - cut);
	if (n > 0)
		memcpy(at, p, n);
	b->end = b->end - cut + n;
	return 0;
}

void buf_consume(struct buf *b, size_t n)
{
	b->start += n;
	if (b->start >= b->end)
		b->start = b->end = 0;
}

void buf_reset(struct buf *b)
{
	b->start = b->end = 0;
}

void buf_free(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->cap = b->start = b->end = 0;
}

int buf_cache_init(struct buf_cache *bc, size_t size, int max)
{
	bc->blocks = calloc((size_t)max, sizeof(*bc->blocks));
	if (bc->blocks == NULL)
		return -ENOMEM;
	bc->n = 0;
	bc->max = max;
	bc->size = size;
	return 0;
}

void buf_cache_destroy(struct buf_cache *bc)
{
	for (int i = 0; i < bc->n; i++)
		free(bc->blocks[i]);
	free(bc->blocks);
	bc->blocks = NULL;
	bc->n = 0;
}

int buf_take_block(struct buf *b, struct buf_cache *bc)
{
	if (b->data != NULL && b->cap >= bc->size)
		return 0;
	uint8_t *p = bc->n > 0 ? bc->blocks[--bc->n] : malloc(bc->size);
	if (p == NULL)
		return -ENOMEM;
	size_t len = buf_len(b);
	if (len > 0)
		memcpy(p, buf_head(b), len);    /* what buf_shrink set aside */
	free(b->data);
	b->data = p;
	b->cap = bc->size;
	b->start = 0;
	b->end = len;
	return 0;
}

void buf_fit(struct buf *b, struct buf_cache *bc)
{
	size_t len = buf_len(b);

	if (b->cap <= bc->size || len > bc->size)
		return;
	uint8_t *p = bc->n > 0 ? bc->blocks[--bc->n] : malloc(bc->size);
	if (p == NULL)
		return;
	memcpy(p, buf_head(b), len);
	free(b->data);
	b->data = p;
	b->cap = bc->size;
	b->start = 0;
	b->end = len;
}

void buf_give_block(struct buf *b, struct buf_cache *bc)
{
	if (b->data == NULL || buf_len(b) != 0)
		return;
	if (b->cap == bc->size && bc->n < bc->max)
		bc->blocks[bc->n++] = b->data;
	else
		free(b->data);
	b->data = NULL;
	b->cap = b->start = b->end = 0;
}

void buf_shrink(struct buf *b, struct buf_cache *bc, size_t max)
{
	size_t len = buf_len(b);

	if (b->data == NULL || b->cap != bc->size || len == 0 || len > max)
		return;
	uint8_t *p = malloc(len);
	if (p == NULL)
		return;     /* it keeps the block */
	memcpy(p, buf_head(b), len);
	b->start = b->end = 0;
	buf_give_block(b, bc);
	b->data = p;
	b->cap = len;
	b->end = len;
}

void buf_move(struct buf *to, struct buf *from)
{
	free(to->data);
	*to = *from;
	from->data = NULL;
	from->cap = from->start = from->end = 0;
}
