/*
 * Unit tests for pstmt.c: statements, a client's map of them by name, a
 * server's cache by content with its least-recently-used choice, and the
 * reply queue that keeps what pgberth sends, drops and answers itself in
 * step with the server's replies (errors and their skip to Sync, COPY).
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pstmt.h"

static struct pstmt *stmt(const char *name, const char *query)
{
	uint8_t body[256];
	size_t n = strlen(query) + 1;

	memcpy(body, query, n);
	body[n] = body[n + 1] = 0;      /* no parameter types */
	struct pstmt *p = pstmt_new(name, strlen(name), body, n + 2, "TimeZone\0UTC", 12);
	ck_assert_ptr_nonnull(p);
	return p;
}

START_TEST(statement_names_by_content)
{
	struct pstmt *a = stmt("a", "SELECT 1"), *b = stmt("b", "SELECT 1"), *c = stmt("a", "SELECT 2");

	ck_assert_str_eq(a->name, "a");
	ck_assert_uint_eq(strlen(a->sname), PSTMT_SNAME_LEN);
	ck_assert_int_eq(strncmp(a->sname, "pgberth_", 8), 0);
	ck_assert_str_eq(a->sname, b->sname);
	ck_assert_str_ne(a->sname, c->sname);
	ck_assert(pstmt_same(a, b));
	ck_assert(!pstmt_same(a, c));
	/* The same text under other settings is another statement. */
	struct pstmt *d = pstmt_new("a", 1, a->body, a->body_len, "TimeZone\0Asia/Tokyo", 19);
	ck_assert_ptr_nonnull(d);
	ck_assert(!pstmt_same(a, d));
	ck_assert_str_ne(a->sname, d->sname);
	pstmt_unref(d);
	pstmt_unref(a);
	pstmt_unref(b);
	pstmt_unref(c);
}
END_TEST

START_TEST(map_add_get_delete)
{
	struct pstmt_map m = {0};
	struct pstmt *p[200];
	char name[16];

	ck_assert_ptr_null(pstmt_map_get(&m, "x", 1));
	for (int i = 0; i < 200; i++) {
		snprintf(name, sizeof(name), "s%d", i);
		p[i] = stmt(name, "SELECT 1");
		ck_assert_int_eq(pstmt_map_add(&m, p[i]), 0);
	}
	ck_assert_uint_eq(m.n, 200);
	size_t each = p[0]->body_len;
	ck_assert_uint_eq(m.bytes, 200 * each);
	/* Deleting every third keeps all the others reachable (backward shift). */
	for (int i = 0; i < 200; i += 3)
		pstmt_map_del(&m, p[i]);
	ck_assert_uint_eq(m.bytes, m.n * each);
	for (int i = 0; i < 200; i++) {
		snprintf(name, sizeof(name), "s%d", i);
		ck_assert_ptr_eq(pstmt_map_get(&m, name, strlen(name)), i % 3 ? p[i] : NULL);
	}
	/* Only the statement itself is deleted, not another of its name. */
	struct pstmt *other = stmt("s1", "SELECT 2");
	pstmt_map_del(&m, other);
	ck_assert_ptr_eq(pstmt_map_get(&m, "s1", 2), p[1]);
	pstmt_unref(other);
	ck_assert_uint_eq(m.bytes, m.n * each);
	/* Dropping the closing ones counts what is kept. */
	pstmt_map_mark(&m, p[1], PSTMT_CLOSING, true);
	pstmt_map_closing_all(&m, false, true);
	ck_assert_ptr_null(pstmt_map_get(&m, "s1", 2));
	ck_assert_uint_eq(m.bytes, m.n * each);
	ck_assert_ptr_null(pstmt_map_get(&m, "s", 1));  /* a prefix is not the name */
	for (int i = 0; i < 200; i++)
		pstmt_unref(p[i]);                      /* the map holds its own */
	ck_assert_str_eq(pstmt_map_get(&m, "s2", 2)->name, "s2");
	pstmt_map_clear(&m);
	ck_assert_uint_eq(m.n, 0);
	ck_assert_uint_eq(m.bytes, 0);
}
END_TEST

START_TEST(cache_by_content_and_lru)
{
	struct pstmt_cache c = {0};
	struct pstmt *p[40];
	uint64_t added[40];
	char q[32];

	for (int i = 0; i < 40; i++) {
		snprintf(q, sizeof(q), "SELECT %d", i);
		p[i] = stmt("n", q);
		ck_assert(!pstmt_cache_has(&c, p[i]));
		ck_assert_int_eq(pstmt_cache_add(&c, p[i], &added[i]), 0);
	}
	ck_assert_ptr_eq(pstmt_cache_lru(&c), p[0]);
	size_t all = 0;
	for (int i = 0; i < 40; i++)
		all += p[i]->body_len;
	ck_assert_uint_eq(c.bytes, all);
	/* The same content from another client is a hit, and a use; but not
	 * confirmed before the server answered the Parse. */
	struct pstmt *same = stmt("other", "SELECT 0");
	ck_assert(pstmt_cache_has(&c, same));
	ck_assert(!pstmt_cache_confirmed(&c, same));
	pstmt_cache_settle(&c, p[0], added[0], true);
	ck_assert(pstmt_cache_confirmed(&c, same));
	ck_assert_ptr_eq(pstmt_cache_lru(&c), p[1]);
	ck_assert_ptr_eq(pstmt_cache_named(&c, same), p[0]);
	pstmt_cache_del(&c, same);              /* whatever is under the name */
	ck_assert(!pstmt_cache_has(&c, p[0]));
	ck_assert_uint_eq(c.n, 39);
	ck_assert_uint_eq(c.bytes, all - p[0]->body_len);
	for (int i = 1; i < 40; i++)
		ck_assert(pstmt_cache_has(&c, p[i]));
	/* A failed Parse forgets only its own entry: not one added again
	 * later under the same name. */
	uint64_t again;
	ck_assert_int_eq(pstmt_cache_add(&c, p[5], &again), 0);    /* replaces itself */
	ck_assert_uint_eq(c.bytes, all - p[0]->body_len);
	pstmt_cache_settle(&c, p[5], added[5], false);
	ck_assert(pstmt_cache_has(&c, p[5]));
	pstmt_cache_settle(&c, p[5], again, false);
	ck_assert(!pstmt_cache_has(&c, p[5]));
	ck_assert_uint_eq(c.bytes, all - p[0]->body_len - p[5]->body_len);
	pstmt_unref(same);
	for (int i = 0; i < 40; i++)
		pstmt_unref(p[i]);
	pstmt_cache_clear(&c);
	ck_assert_ptr_null(pstmt_cache_lru(&c));
	ck_assert_uint_eq(c.bytes, 0);
}
END_TEST

/* pgberth answered a Parse (SYNTH) and sent its own Parse for a Bind
 * (OURS): the replies come out in the client's order, ours dropped, and
 * the server's ParseComplete confirms the statement. */
START_TEST(queue_keeps_replies_in_step)
{
	struct pstmt_queue q = {0};
	struct pstmt_cache c = {0};
	struct pstmt_map m = {0};
	struct pstmt *a = stmt("a", "SELECT 1"), *b = stmt("b", "SELECT 2");
	uint64_t tick_b;

	ck_assert_int_eq(pstmt_map_add(&m, a), 0);
	ck_assert_int_eq(pstmt_map_add(&m, b), 0);
	ck_assert_int_eq(pstmt_cache_add(&c, b, &tick_b), 0);
	/* Bind x, Execute, then Parse a (answered by pgberth), then our
	 * Parse b and Bind b, Execute, Sync. */
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_BIND, NULL, 0), 0);
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_EXECUTE, NULL, 0), 0);
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_PARSE | PSTMT_SYNTH | PSTMT_REF, a, 0), 0);
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_PARSE | PSTMT_OURS | PSTMT_REF, b, tick_b), 0);
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_BIND, NULL, 0), 0);
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_EXECUTE, NULL, 0), 0);
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_SYNC, NULL, 0), 0);

	ck_assert_int_eq(pstmt_queue_synth(&q, &c, &m, 'I'), 0);        /* the server's turn */
	ck_assert_int_eq(pstmt_queue_reply(&q, '2', 0, &c, &m), PSTMT_RELAY);
	ck_assert_int_eq(pstmt_queue_reply(&q, 'D', 0, &c, &m), PSTMT_RELAY);   /* a row */
	ck_assert_int_eq(pstmt_queue_reply(&q, 'N', 0, &c, &m), PSTMT_RELAY);   /* a notice */
	ck_assert_int_eq(pstmt_queue_reply(&q, 'C', 0, &c, &m), PSTMT_RELAY);
	ck_assert_int_eq(pstmt_queue_synth(&q, &c, &m, 'I'), '1');      /* ParseComplete for a */
	ck_assert_int_eq(pstmt_queue_synth(&q, &c, &m, 'I'), 0);
	ck_assert(!pstmt_cache_confirmed(&c, b));
	ck_assert_int_eq(pstmt_queue_reply(&q, '1', 0, &c, &m), PSTMT_DROP);    /* our Parse's */
	ck_assert(pstmt_cache_confirmed(&c, b));
	ck_assert_int_eq(pstmt_queue_reply(&q, '2', 0, &c, &m), PSTMT_RELAY);
	ck_assert_int_eq(pstmt_queue_reply(&q, 'C', 0, &c, &m), PSTMT_RELAY);
	ck_assert_int_eq(pstmt_queue_reply(&q, 'Z', 0, &c, &m), PSTMT_RELAY);
	ck_assert(pstmt_queue_empty(&q));
	ck_assert_ptr_eq(pstmt_map_get(&m, "a", 1), a);
	pstmt_unref(a);
	pstmt_unref(b);
	pstmt_queue_clear(&q);
	pstmt_cache_clear(&c);
	pstmt_map_clear(&m);
}
END_TEST

/* An error skips to the Sync: a Parse that failed or was skipped made no
 * statement (forgotten in cache and map), a reply pgberth owed for a
 * skipped message is never given, a Close it answered and that was
 * skipped gives the statement back, a skipped Query is counted, and a
 * Sync's own error ends nothing. */
START_TEST(queue_error_skips_to_sync)
{
	struct pstmt_queue q = {0};
	struct pstmt_cache c = {0};
	struct pstmt_map m = {0};
	struct pstmt *bad = stmt("bad", "SELEC 1"), *next = stmt("next", "SELECT 3"),
		     *held = stmt("held", "SELECT 4"), *closed = stmt("closed", "SELECT 5");
	uint64_t tick_bad, tick_next, tick_held;

	ck_assert_int_eq(pstmt_map_add(&m, bad), 0);
	ck_assert_int_eq(pstmt_map_add(&m, next), 0);
	ck_assert_int_eq(pstmt_map_add(&m, held), 0);
	ck_assert_int_eq(pstmt_cache_add(&c, bad, &tick_bad), 0);
	ck_assert_int_eq(pstmt_cache_add(&c, next, &tick_next), 0);
	ck_assert_int_eq(pstmt_cache_add(&c, held, &tick_held), 0);
	pstmt_cache_settle(&c, held, tick_held, true);
	ck_assert_int_eq(pstmt_map_add(&m, closed), 0);
	pstmt_map_mark(&m, closed, PSTMT_CLOSING, true);
	ck_assert_int_eq(pstmt_map_marks(&m, closed), PSTMT_CLOSING);
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_PARSE | PSTMT_REF, bad, tick_bad), 0);
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_PARSE | PSTMT_REF, next, tick_next), 0);
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_PARSE | PSTMT_SYNTH | PSTMT_REF, held, 0), 0);
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_CLOSE | PSTMT_SYNTH | PSTMT_REF, closed, 0), 0);
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_SIMPLE, NULL, 0), 0);
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_SYNC, NULL, 0), 0);
	ck_assert_int_eq(pstmt_queue_synth(&q, &c, &m, 'I'), 0);
	ck_assert_int_eq(pstmt_queue_reply(&q, 'E', 0, &c, &m), PSTMT_RELAY);
	ck_assert_int_eq(pstmt_queue_synth(&q, &c, &m, 'I'), 0);        /* skipped, not answered */
	ck_assert_uint_eq(q.n, 1);
	ck_assert_uint_eq(q.unanswered, 1);
	ck_assert_int_eq(pstmt_queue_reply(&q, 'Z', 0, &c, &m), PSTMT_RELAY);
	ck_assert(pstmt_queue_empty(&q));
	ck_assert(!q.skipping);
	ck_assert_ptr_null(pstmt_map_get(&m, "bad", 3));
	ck_assert_ptr_null(pstmt_map_get(&m, "next", 4));
	ck_assert_ptr_null(pstmt_map_get(&m, "held", 4));
	ck_assert_ptr_eq(pstmt_map_get(&m, "closed", 6), closed);
	ck_assert_int_eq(pstmt_map_marks(&m, closed), 0);
	ck_assert(!pstmt_cache_has(&c, bad));
	ck_assert(!pstmt_cache_has(&c, next));
	ck_assert(pstmt_cache_confirmed(&c, held));    /* another client's Parse made it */

	/* Entries pushed after the error was seen are skipped too, up to the Sync. */
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_EXECUTE, NULL, 0), 0);
	ck_assert_int_eq(pstmt_queue_reply(&q, 'E', 0, &c, &m), PSTMT_RELAY);
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_CLOSE | PSTMT_SYNTH, NULL, 0), 0);
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_SYNC, NULL, 0), 0);
	ck_assert_int_eq(pstmt_queue_synth(&q, &c, &m, 'I'), 0);
	/* A Sync's COMMIT fails: the error, then its ReadyForQuery. */
	ck_assert_int_eq(pstmt_queue_reply(&q, 'E', 0, &c, &m), PSTMT_RELAY);
	ck_assert_uint_eq(q.n, 1);
	ck_assert_int_eq(pstmt_queue_reply(&q, 'Z', 0, &c, &m), PSTMT_RELAY);
	ck_assert(pstmt_queue_empty(&q));
	/* A simple query's error ends nothing either, and skips nothing. */
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_SIMPLE, NULL, 0), 0);
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_CLOSE | PSTMT_SYNTH, NULL, 0), 0);
	ck_assert_int_eq(pstmt_queue_reply(&q, 'E', 0, &c, &m), PSTMT_RELAY);
	ck_assert_int_eq(pstmt_queue_reply(&q, 'Z', 0, &c, &m), PSTMT_RELAY);
	ck_assert_int_eq(pstmt_queue_synth(&q, &c, &m, 'I'), '3');
	ck_assert(pstmt_queue_empty(&q));
	/* A DEALLOCATE pgberth answers: by the transaction status in its
	 * turn; refused in a failed transaction, and the name comes back. */
	pstmt_map_mark(&m, closed, PSTMT_CLOSING, true);
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_SIMPLE | PSTMT_SYNTH | PSTMT_REF, closed, 0), 0);
	ck_assert_int_eq(pstmt_queue_synth(&q, &c, &m, 'E'), 'q');
	ck_assert_ptr_eq(pstmt_map_get(&m, "closed", 6), closed);
	ck_assert_int_eq(pstmt_map_marks(&m, closed), 0);
	pstmt_map_mark(&m, closed, PSTMT_CLOSING, true);
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_SIMPLE | PSTMT_SYNTH | PSTMT_REF, closed, 0), 0);
	ck_assert_int_eq(pstmt_queue_synth(&q, &c, &m, 'T'), 'Q');
	ck_assert_ptr_null(pstmt_map_get(&m, "closed", 6));
	ck_assert_uint_eq(q.unanswered, 1);     /* only the Query the server skipped */
	pstmt_unref(bad);
	pstmt_unref(next);
	pstmt_unref(held);
	pstmt_unref(closed);
	pstmt_queue_clear(&q);
	pstmt_cache_clear(&c);
	pstmt_map_clear(&m);
}
END_TEST

/* Extended COPY FROM STDIN: the Syncs sent behind the Execute reach a
 * server in copy-in mode, which ignores them; the Execute ends at
 * CommandComplete, after the copy data. */
START_TEST(queue_copy_in)
{
	struct pstmt_queue q = {0};

	/* Extended COPY: Execute, Sync, data, Sync, CopyDone, then the
	 * fence, a Sync and more. The Syncs up to the CopyDone are not
	 * counted; the fence's replies are dropped. */
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_BIND, NULL, 0), 0);
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_EXECUTE, NULL, 0), 0);
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_SYNC, NULL, 0), 0);
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_SYNC, NULL, 0), 0);
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_COPY_END, NULL, 0), 0);
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_FENCE, NULL, 0), 0);
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_SYNC, NULL, 0), 0);
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_PARSE, NULL, 0), 0);
	ck_assert_uint_eq(q.runs, 1);
	ck_assert_int_eq(pstmt_queue_reply(&q, '2', 0, NULL, NULL), PSTMT_RELAY);
	ck_assert_int_eq(pstmt_queue_reply(&q, 'G', 0, NULL, NULL), PSTMT_RELAY);
	ck_assert_uint_eq(q.unanswered, 2);
	ck_assert(q.copy_end_sent);
	ck_assert_int_eq(pstmt_queue_reply(&q, 'C', 0, NULL, NULL), PSTMT_RELAY);
	ck_assert_uint_eq(q.runs, 0);
	ck_assert_int_eq(pstmt_queue_synth(&q, NULL, NULL, 'I'), 0);   /* the marks go */
	ck_assert(pstmt_queue_needs_next(&q, 'Z'));
	ck_assert_int_eq(pstmt_queue_reply(&q, 'Z', '3', NULL, NULL), PSTMT_DROP);
	ck_assert_int_eq(pstmt_queue_reply(&q, '3', 0, NULL, NULL), PSTMT_DROP);
	ck_assert_int_eq(pstmt_queue_reply(&q, 'Z', 0, NULL, NULL), PSTMT_DROP);
	ck_assert_uint_eq(q.unanswered, 3);
	ck_assert_int_eq(pstmt_queue_reply(&q, 'Z', 0, NULL, NULL), PSTMT_RELAY);
	ck_assert_int_eq(pstmt_queue_reply(&q, '1', 0, NULL, NULL), PSTMT_RELAY);
	ck_assert(pstmt_queue_empty(&q));

	/* It fails on its data: the server answers the Syncs it had not read
	 * in copy-in mode; those are the client's, before the fence's. */
	q.unanswered = 0;
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_EXECUTE, NULL, 0), 0);
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_SYNC, NULL, 0), 0);
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_COPY_END, NULL, 0), 0);
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_FENCE, NULL, 0), 0);
	ck_assert_int_eq(pstmt_queue_reply(&q, 'G', 0, NULL, NULL), PSTMT_RELAY);
	ck_assert_int_eq(pstmt_queue_reply(&q, 'E', 0, NULL, NULL), PSTMT_RELAY);
	ck_assert_int_eq(pstmt_queue_synth(&q, NULL, NULL, 'I'), 0);
	ck_assert_int_eq(pstmt_queue_reply(&q, 'Z', 'Z', NULL, NULL), PSTMT_EXTRA);
	ck_assert_int_eq(pstmt_queue_reply(&q, 'Z', '3', NULL, NULL), PSTMT_DROP);
	ck_assert_int_eq(pstmt_queue_reply(&q, '3', 0, NULL, NULL), PSTMT_DROP);
	ck_assert_int_eq(pstmt_queue_reply(&q, 'Z', 0, NULL, NULL), PSTMT_DROP);
	ck_assert(pstmt_queue_empty(&q));
	ck_assert_uint_eq(q.unanswered, 2);
	pstmt_queue_clear(&q);
}
END_TEST

/* Describe of a statement ends at RowDescription or NoData, after its
 * ParameterDescription; the queue grows and wraps; past the bound it
 * refuses. */
START_TEST(queue_describe_wrap_and_bound)
{
	struct pstmt_queue q = {0};

	for (int round = 0; round < 100; round++) {
		for (int i = 0; i < 50; i++)
			ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_DESCRIBE_STMT, NULL, 0), 0);
		for (int i = 0; i < 50; i++) {
			ck_assert_int_eq(pstmt_queue_reply(&q, 't', 0, NULL, NULL), PSTMT_RELAY);
			ck_assert_uint_eq(q.n, 50 - i);
			ck_assert_int_eq(pstmt_queue_reply(&q, i % 2 ? 'T' : 'n', 0, NULL, NULL), PSTMT_RELAY);
		}
		ck_assert(pstmt_queue_empty(&q));
	}
	for (uint32_t i = 0; i < PSTMT_QUEUE_MAX; i++)
		ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_SYNC, NULL, 0), 0);
	ck_assert_int_eq(pstmt_queue_push(&q, PSTMT_SYNC, NULL, 0), -E2BIG);
	pstmt_queue_clear(&q);
}
END_TEST

static Suite *pstmt_suite(void)
{
	Suite *s = suite_create("pstmt");
	TCase *tc = tcase_create("pstmt");

	tcase_add_test(tc, statement_names_by_content);
	tcase_add_test(tc, map_add_get_delete);
	tcase_add_test(tc, cache_by_content_and_lru);
	tcase_add_test(tc, queue_keeps_replies_in_step);
	tcase_add_test(tc, queue_error_skips_to_sync);
	tcase_add_test(tc, queue_copy_in);
	tcase_add_test(tc, queue_describe_wrap_and_bound);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(pstmt_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
