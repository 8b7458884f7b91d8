/*
 * Unit tests for buf.c: the byte buffer, the bounded block cache behind the
 * relay, and buf_move, which hands a server's block to its client whole.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

#define BLOCK 4096

START_TEST(append_consume_reserve)
{
	struct buf b = {0};

	ck_assert_int_eq(buf_append(&b, "hello", 5), 0);
	ck_assert_uint_eq(buf_len(&b), 5);
	buf_consume(&b, 2);
	ck_assert_uint_eq(buf_len(&b), 3);
	ck_assert_int_eq(memcmp(buf_head(&b), "llo", 3), 0);
	/* Room is made by moving the rest to the front before growing. */
	size_t cap = b.cap;
	ck_assert_int_eq(buf_reserve(&b, cap - 3), 0);
	ck_assert_uint_eq(b.cap, cap);
	ck_assert_int_eq(memcmp(buf_head(&b), "llo", 3), 0);
	ck_assert_int_eq(buf_reserve(&b, cap), 0);
	ck_assert_uint_ge(b.cap, cap + 3);
	ck_assert_int_eq(memcmp(buf_head(&b), "llo", 3), 0);
	buf_consume(&b, 3);
	ck_assert_uint_eq(buf_len(&b), 0);
	ck_assert_uint_eq(b.start, 0);
	buf_free(&b);
	ck_assert_ptr_null(b.data);
}
END_TEST

START_TEST(cache_is_bounded_and_lifo)
{
	struct buf_cache bc;
	struct buf b[3] = {{0}};

	ck_assert_int_eq(buf_cache_init(&bc, BLOCK, 2), 0);
	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(buf_take_block(&b[i], &bc), 0);
		ck_assert_uint_eq(b[i].cap, BLOCK);
	}
	uint8_t *last = b[2].data;
	/* A buffer with bytes in it keeps its block. */
	ck_assert_int_eq(buf_append(&b[0], "x", 1), 0);
	buf_give_block(&b[0], &bc);
	ck_assert_ptr_nonnull(b[0].data);
	ck_assert_int_eq(bc.n, 0);
	buf_consume(&b[0], 1);
	buf_give_block(&b[0], &bc);
	buf_give_block(&b[1], &bc);
	buf_give_block(&b[2], &bc);  /* beyond max: freed */
	ck_assert_int_eq(bc.n, 2);
	ck_assert_ptr_null(b[2].data);
	/* The block given back last is the one taken next. */
	uint8_t *top = bc.blocks[1];
	ck_assert_int_eq(buf_take_block(&b[2], &bc), 0);
	ck_assert_ptr_eq(b[2].data, top);
	ck_assert_ptr_ne(b[2].data, last);
	buf_give_block(&b[2], &bc);
	buf_cache_destroy(&bc);
}
END_TEST

START_TEST(move_hands_the_block_over)
{
	struct buf_cache bc;
	struct buf from = {0}, to = {0};

	ck_assert_int_eq(buf_cache_init(&bc, BLOCK, 4), 0);
	ck_assert_int_eq(buf_take_block(&from, &bc), 0);
	ck_assert_int_eq(buf_append(&from, "..answer", 8), 0);
	buf_consume(&from, 2);
	uint8_t *block = from.data;
	/* to's own memory (a small buffer, now empty) is freed, not leaked. */
	ck_assert_int_eq(buf_append(&to, "old", 3), 0);
	buf_consume(&to, 3);

	buf_move(&to, &from);
	ck_assert_ptr_eq(to.data, block);       /* no copy */
	ck_assert_uint_eq(buf_len(&to), 6);
	ck_assert_int_eq(memcmp(buf_head(&to), "answer", 6), 0);
	ck_assert_ptr_null(from.data);
	ck_assert_uint_eq(from.cap, 0);
	ck_assert_uint_eq(buf_len(&from), 0);

	/* Once sent, the moved block goes back to the cache. */
	buf_consume(&to, 6);
	buf_give_block(&to, &bc);
	ck_assert_ptr_null(to.data);
	ck_assert_int_eq(bc.n, 1);
	ck_assert_ptr_eq(bc.blocks[0], block);
	buf_cache_destroy(&bc);
}
END_TEST

START_TEST(shrink_gives_the_block_back)
{
	struct buf_cache bc;
	struct buf b = {0};

	ck_assert_int_eq(buf_cache_init(&bc, BLOCK, 4), 0);
	ck_assert_int_eq(buf_take_block(&b, &bc), 0);
	ck_assert_int_eq(buf_append(&b, "..query", 7), 0);
	buf_consume(&b, 2);
	uint8_t *block = b.data;

	/* Over max: kept as it is. */
	buf_shrink(&b, &bc, 4);
	ck_assert_ptr_eq(b.data, block);
	ck_assert_int_eq(bc.n, 0);

	buf_shrink(&b, &bc, 64);
	ck_assert_ptr_ne(b.data, block);
	ck_assert_uint_eq(b.cap, 5);
	ck_assert_uint_eq(buf_len(&b), 5);
	ck_assert_int_eq(memcmp(buf_head(&b), "query", 5), 0);
	ck_assert_int_eq(bc.n, 1);
	ck_assert_ptr_eq(bc.blocks[0], block);

	/* Reading again takes a block and carries the bytes left into it. */
	buf_consume(&b, 1);
	ck_assert_int_eq(buf_take_block(&b, &bc), 0);
	ck_assert_ptr_eq(b.data, block);
	ck_assert_uint_eq(b.cap, BLOCK);
	ck_assert_uint_eq(buf_len(&b), 4);
	ck_assert_int_eq(memcmp(buf_head(&b), "uery", 4), 0);
	ck_assert_int_eq(bc.n, 0);

	/* Empty, or not a block: nothing to do. */
	buf_consume(&b, 4);
	buf_shrink(&b, &bc, 64);
	ck_assert_ptr_eq(b.data, block);
	buf_give_block(&b, &bc);
	ck_assert_int_eq(bc.n, 1);
	ck_assert_int_eq(buf_append(&b, "abc", 3), 0);
	uint8_t *small = b.data;
	buf_shrink(&b, &bc, 64);
	ck_assert_ptr_eq(b.data, small);
	ck_assert_int_eq(bc.n, 1);
	buf_free(&b);
	buf_cache_destroy(&bc);
}
END_TEST

START_TEST(fit_gives_a_big_buffer_up)
{
	struct buf_cache bc;
	struct buf b = {0};
	uint8_t big[3 * BLOCK];

	memset(big, 'x', sizeof(big));
	ck_assert_int_eq(buf_cache_init(&bc, BLOCK, 4), 0);
	ck_assert_int_eq(buf_append(&b, big, sizeof(big)), 0);
	ck_assert_uint_gt(b.cap, BLOCK);
	/* Still more than a block: kept. */
	buf_consume(&b, BLOCK);
	buf_fit(&b, &bc);
	ck_assert_uint_gt(b.cap, BLOCK);
	/* A few bytes left: into a block of the cache's size. */
	buf_consume(&b, 2 * BLOCK - 3);
	buf_fit(&b, &bc);
	ck_assert_uint_eq(b.cap, BLOCK);
	ck_assert_uint_eq(buf_len(&b), 3);
	ck_assert_int_eq(memcmp(buf_head(&b), "xxx", 3), 0);
	/* A block-sized one is left alone. */
	uint8_t *block = b.data;
	buf_fit(&b, &bc);
	ck_assert_ptr_eq(b.data, block);
	buf_free(&b);
	buf_cache_destroy(&bc);
}
END_TEST

START_TEST(move_from_empty)
{
	struct buf from = {0}, to = {0};

	buf_move(&to, &from);
	ck_assert_ptr_null(to.data);
	ck_assert_uint_eq(buf_len(&to), 0);
	ck_assert_int_eq(buf_append(&to, "x", 1), 0);
	buf_free(&to);
}
END_TEST

START_TEST(splice_replaces_in_the_middle)
{
	struct buf b = {0};

	ck_assert_int_eq(buf_splice(&b, 0, 0, NULL, 0), 0);   /* nothing, no block */
	ck_assert_ptr_null(b.data);
	ck_assert_int_eq(buf_append(&b, "xxabcdef", 8), 0);
	buf_consume(&b, 2);
	ck_assert_int_eq(buf_splice(&b, 2, 2, "12345", 5), 0);    /* grow */
	ck_assert_uint_eq(buf_len(&b), 9);
	ck_assert_int_eq(memcmp(buf_head(&b), "ab12345ef", 9), 0);
	ck_assert_int_eq(buf_splice(&b, 1, 6, "-", 1), 0);        /* shrink */
	ck_assert_int_eq(memcmp(buf_head(&b), "a-ef", 4), 0);
	ck_assert_int_eq(buf_splice(&b, 4, 0, "!", 1), 0);        /* at the end */
	ck_assert_int_eq(buf_splice(&b, 0, 1, NULL, 0), 0);       /* cut the head */
	ck_assert_uint_eq(buf_len(&b), 4);
	ck_assert_int_eq(memcmp(buf_head(&b), "-ef!", 4), 0);
	/* Past the block: it grows, what was there stays. */
	char big[1000];
	memset(big, 'z', sizeof(big));
	ck_assert_int_eq(buf_splice(&b, 1, 0, big, sizeof(big)), 0);
	ck_assert_uint_eq(buf_len(&b), 1004);
	ck_assert_int_eq(buf_head(&b)[0], '-');
	ck_assert_int_eq(memcmp(buf_head(&b) + 1001, "ef!", 3), 0);
	buf_free(&b);
}
END_TEST

static Suite *buf_suite(void)
{
	Suite *s = suite_create("buf");
	TCase *tc = tcase_create("buf");
	tcase_add_test(tc, append_consume_reserve);
	tcase_add_test(tc, cache_is_bounded_and_lifo);
	tcase_add_test(tc, move_hands_the_block_over);
	tcase_add_test(tc, move_from_empty);
	tcase_add_test(tc, shrink_gives_the_block_back);
	tcase_add_test(tc, fit_gives_a_big_buffer_up);
	tcase_add_test(tc, splice_replaces_in_the_middle);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(buf_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
