/*
 * Unit tests for proto.c: startup packet framing and parsing against
 * well-formed and hostile input, message headers, builder/parser round
 * trips, the "options" startup parameter and SET statement quoting.
 */
#include <check.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

/* Room for any packet a test builds, including oversized ones. */
static uint8_t pkt[PROTO_MAX_STARTUP + 64];

/*
 * Builds a startup packet with the given code and NULL-terminated list of
 * strings (name, value, name, value ...), each copied with its NUL, then
 * the final NUL. Returns its length, which is also written in the header.
 */
static size_t build_startup(uint32_t code, ...)
{
	va_list ap;
	size_t n = 8;

	proto_put32(pkt + 4, code);
	va_start(ap, code);
	for (const char *s = va_arg(ap, const char *); s != NULL; s = va_arg(ap, const char *)) {
		size_t l = strlen(s) + 1;
		memcpy(pkt + n, s, l);
		n += l;
	}
	va_end(ap);
	pkt[n++] = '\0';
	proto_put32(pkt, (uint32_t)n);
	return n;
}

/* Writes raw bytes after a header that claims length len and the v3 code. */
static size_t build_raw(uint32_t len, const void *body, size_t body_len)
{
	proto_put32(pkt, len);
	proto_put32(pkt + 4, PROTO_V3);
	memcpy(pkt + 8, body, body_len);
	return 8 + body_len;
}

/* --- startup framing --- */

START_TEST(frame_need_more)
{
	size_t n = build_startup(PROTO_V3, "user", "alice", NULL);
	for (size_t i = 0; i < 4; i++)
		ck_assert_int_eq(proto_startup_frame(pkt, i), PROTO_NEED_MORE);
	/* Partial packets report the full length so the caller can wait. */
	ck_assert_int_eq(proto_startup_frame(pkt, 4), (long)n);
	ck_assert_int_eq(proto_startup_frame(pkt, n - 1), (long)n);
	ck_assert_int_eq(proto_startup_frame(pkt, n), (long)n);
}
END_TEST

START_TEST(frame_bad_lengths)
{
	uint32_t bad[] = {0, 4, 7, PROTO_MAX_STARTUP + 1, 0x7fffffffu, 0xffffffffu};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		proto_put32(pkt, bad[i]);
		ck_assert_int_eq(proto_startup_frame(pkt, 8), PROTO_BAD);
	}
	proto_put32(pkt, 8);
	ck_assert_int_eq(proto_startup_frame(pkt, 8), 8);
	proto_put32(pkt, PROTO_MAX_STARTUP);
	ck_assert_int_eq(proto_startup_frame(pkt, 8), (long)PROTO_MAX_STARTUP);
}
END_TEST

/* --- startup parsing --- */

START_TEST(startup_v3_full)
{
	struct startup st;
	const char *err = NULL;
	size_t n = build_startup(PROTO_V3, "user", "alice", "database", "shop",
	                         "application_name", "psql", "options", "-c work_mem=64MB", NULL);
	ck_assert_int_eq(proto_parse_startup(pkt, n, &st, &err), 0);
	ck_assert_uint_eq(st.code, PROTO_V3);
	ck_assert_int_eq(st.nparams, 4);
	ck_assert_str_eq(st.user, "alice");
	ck_assert_str_eq(st.database, "shop");
	ck_assert_str_eq(st.params[2].name, "application_name");
	ck_assert_str_eq(st.params[2].value, "psql");
	ck_assert_str_eq(st.params[3].name, "options");
	ck_assert_str_eq(st.params[3].value, "-c work_mem=64MB");
	/* Pointers refer into the packet. */
	ck_assert(st.user > (const char *)pkt && st.user < (const char *)pkt + n);
}
END_TEST

START_TEST(startup_v3_no_database)
{
	struct startup st;
	const char *err = NULL;
	size_t n = build_startup(PROTO_V3, "user", "bob", NULL);
	ck_assert_int_eq(proto_parse_startup(pkt, n, &st, &err), 0);
	ck_assert_str_eq(st.user, "bob");
	ck_assert_ptr_null(st.database);
	ck_assert_int_eq(st.nparams, 1);
}
END_TEST

START_TEST(startup_v3_empty_value_and_no_params)
{
	struct startup st;
	const char *err = NULL;
	size_t n = build_startup(PROTO_V3, "user", "", NULL);
	ck_assert_int_eq(proto_parse_startup(pkt, n, &st, &err), 0);
	ck_assert_str_eq(st.user, "");

	n = build_startup(PROTO_V3, NULL);
	ck_assert_uint_eq(n, 9);
	ck_assert_int_eq(proto_parse_startup(pkt, n, &st, &err), 0);
	ck_assert_int_eq(st.nparams, 0);
	ck_assert_ptr_null(st.user);
}
END_TEST

START_TEST(startup_other_minor_and_version)
{
	struct startup st;
	const char *err = NULL;
	size_t n = build_startup(PROTO_V3 | 2, "user", "carol", "_pq_.x", "1", NULL);
	ck_assert_int_eq(proto_parse_startup(pkt, n, &st, &err), 0);
	ck_assert_uint_eq(st.code, PROTO_V3 | 2);
	ck_assert_str_eq(st.user, "carol");
	ck_assert_int_eq(st.nparams, 2);

	/* Version 2: returned as parsed, the caller rejects it. */
	n = build_startup(2u << 16, "user", "dave", NULL);
	ck_assert_int_eq(proto_parse_startup(pkt, n, &st, &err), 0);
	ck_assert_uint_eq(st.code, 2u << 16);
	ck_assert_ptr_null(st.user);
}
END_TEST

START_TEST(startup_special_requests)
{
	struct startup st;
	const char *err = NULL;

	proto_put32(pkt, 8);
	proto_put32(pkt + 4, PROTO_SSL_REQUEST);
	ck_assert_int_eq(proto_startup_frame(pkt, 8), 8);
	ck_assert_int_eq(proto_parse_startup(pkt, 8, &st, &err), 0);
	ck_assert_uint_eq(st.code, PROTO_SSL_REQUEST);

	proto_put32(pkt + 4, PROTO_GSSENC_REQUEST);
	ck_assert_int_eq(proto_parse_startup(pkt, 8, &st, &err), 0);
	ck_assert_uint_eq(st.code, PROTO_GSSENC_REQUEST);

	proto_put32(pkt, 16);
	proto_put32(pkt + 4, PROTO_CANCEL_REQUEST);
	proto_put32(pkt + 8, 4242);
	proto_put32(pkt + 12, 0xdeadbeefu);
	ck_assert_int_eq(proto_parse_startup(pkt, 16, &st, &err), 0);
	ck_assert_uint_eq(st.code, PROTO_CANCEL_REQUEST);
	ck_assert_int_eq(st.cancel_pid, 4242);
	ck_assert_int_eq(st.cancel_key, (int32_t)0xdeadbeefu);
}
END_TEST

START_TEST(startup_special_wrong_length)
{
	struct startup st;
	const char *err = NULL;

	memset(pkt, 0, 32);
	proto_put32(pkt + 4, PROTO_CANCEL_REQUEST);
	size_t lens[] = {8, 12, 15, 17, 20};
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		err = NULL;
		proto_put32(pkt, (uint32_t)lens[i]);
		ck_assert_int_eq(proto_parse_startup(pkt, lens[i], &st, &err), -1);
		ck_assert_ptr_nonnull(err);
	}
	proto_put32(pkt, 12);
	proto_put32(pkt + 4, PROTO_SSL_REQUEST);
	err = NULL;
	ck_assert_int_eq(proto_parse_startup(pkt, 12, &st, &err), -1);
	ck_assert_ptr_nonnull(err);
	proto_put32(pkt + 4, PROTO_GSSENC_REQUEST);
	err = NULL;
	ck_assert_int_eq(proto_parse_startup(pkt, 12, &st, &err), -1);
	ck_assert_ptr_nonnull(err);
}
END_TEST

START_TEST(startup_length_mismatch)
{
	struct startup st;
	const char *err = NULL;
	size_t n = build_startup(PROTO_V3, "user", "alice", NULL);
	/* The header says one thing, the caller's length another. */
	ck_assert_int_eq(proto_parse_startup(pkt, n - 1, &st, &err), -1);
	ck_assert_ptr_nonnull(err);
	ck_assert_int_eq(proto_parse_startup(pkt, 7, &st, &err), -1);
}
END_TEST

START_TEST(startup_lying_lengths)
{
	struct startup st;
	const char *err;
	size_t n;

	/* Says 22 but the value runs off the end: "user\0alice" with no NULs after. */
	static const char unterminated_value[] = {'u', 's', 'e', 'r', 0, 'a', 'l', 'i', 'c', 'e', 'x', 'y', 'z', 'w'};
	n = build_raw(22, unterminated_value, sizeof(unterminated_value));
	ck_assert_uint_eq(n, 22);
	err = NULL;
	ck_assert_int_eq(proto_parse_startup(pkt, n, &st, &err), -1);
	ck_assert_ptr_nonnull(err);

	/* Name runs off the end. */
	static const char unterminated_name[] = {'u', 's', 'e', 'r'};
	n = build_raw(12, unterminated_name, sizeof(unterminated_name));
	err = NULL;
	ck_assert_int_eq(proto_parse_startup(pkt, n, &st, &err), -1);
	ck_assert_ptr_nonnull(err);

	/* Pairs complete but no final terminator. */
	static const char no_term[] = "user\0alice";  /* 11 bytes with the implicit NUL */
	n = build_raw(19, no_term, sizeof(no_term));
	err = NULL;
	ck_assert_int_eq(proto_parse_startup(pkt, n, &st, &err), -1);
	ck_assert_str_eq(err, "invalid startup packet layout: expected terminator as last byte");

	/* Name with no value at all. */
	static const char name_only[] = "user";
	n = build_raw(13, name_only, sizeof(name_only));
	err = NULL;
	ck_assert_int_eq(proto_parse_startup(pkt, n, &st, &err), -1);
	ck_assert_ptr_nonnull(err);

	/* Terminator early, then trailing garbage. */
	static const char trailing[] = "user\0alice\0\0junk";
	n = build_raw(8 + sizeof(trailing), trailing, sizeof(trailing));
	err = NULL;
	ck_assert_int_eq(proto_parse_startup(pkt, n, &st, &err), -1);
	ck_assert_str_eq(err, "invalid startup packet layout: expected terminator as last byte");

	/* Just the header: no terminator at all. */
	n = build_raw(8, "", 0);
	err = NULL;
	ck_assert_int_eq(proto_parse_startup(pkt, n, &st, &err), -1);
	ck_assert_ptr_nonnull(err);

	/* Says 40 but only the pairs fill 20: parse only what len covers, with
	 * the rest of a larger buffer full of non-NUL bytes. */
	memset(pkt, 'A', 64);
	static const char short_pairs[] = "user\0al";
	build_raw(40, short_pairs, sizeof(short_pairs) - 1);
	ck_assert_int_eq(proto_startup_frame(pkt, 15), 40);
	err = NULL;
	ck_assert_int_eq(proto_parse_startup(pkt, 40, &st, &err), -1);
	ck_assert_ptr_nonnull(err);
}
END_TEST

START_TEST(startup_lying_length_asan)
{
	/* The packet lives in an exactly sized heap block, so ASan reports any
	 * read past len. */
	static const char body[] = {'u', 's', 'e', 'r', 0, 'a', 'l', 'i', 'c', 'e'};
	size_t len = 8 + sizeof(body);
	uint8_t *p = malloc(len);
	ck_assert_ptr_nonnull(p);
	proto_put32(p, (uint32_t)len);
	proto_put32(p + 4, PROTO_V3);
	memcpy(p + 8, body, sizeof(body));
	struct startup st;
	const char *err = NULL;
	ck_assert_int_eq(proto_parse_startup(p, len, &st, &err), -1);
	ck_assert_ptr_nonnull(err);
	free(p);
}
END_TEST

START_TEST(startup_too_many_params)
{
	struct startup st;
	const char *err = NULL;
	size_t n = 8;

	proto_put32(pkt + 4, PROTO_V3);
	for (int i = 0; i < PROTO_MAX_PARAMS + 1; i++) {
		n += (size_t)sprintf((char *)pkt + n, "p%d", i) + 1;
		n += (size_t)sprintf((char *)pkt + n, "v") + 1;
	}
	pkt[n++] = 0;
	proto_put32(pkt, (uint32_t)n);
	ck_assert_int_eq(proto_parse_startup(pkt, n, &st, &err), -1);
	ck_assert_ptr_nonnull(err);

	/* Exactly the maximum is fine. */
	n = 8;
	for (int i = 0; i < PROTO_MAX_PARAMS; i++) {
		n += (size_t)sprintf((char *)pkt + n, "p%d", i) + 1;
		n += (size_t)sprintf((char *)pkt + n, "v") + 1;
	}
	pkt[n++] = 0;
	proto_put32(pkt, (uint32_t)n);
	ck_assert_int_eq(proto_parse_startup(pkt, n, &st, &err), 0);
	ck_assert_int_eq(st.nparams, PROTO_MAX_PARAMS);
	ck_assert_str_eq(st.params[PROTO_MAX_PARAMS - 1].name, "p63");
}
END_TEST

START_TEST(startup_empty_name_ends_list)
{
	struct startup st;
	const char *err = NULL;
	/* An empty name is the terminator, so "\0value\0" after it is garbage. */
	static const char body[] = "user\0alice\0\0x\0";
	size_t n = build_raw(8 + sizeof(body), body, sizeof(body));
	ck_assert_int_eq(proto_parse_startup(pkt, n, &st, &err), -1);
}
END_TEST

/* --- message headers --- */

START_TEST(msg_header_cases)
{
	uint8_t m[8] = {'Q', 0, 0, 0, 9, 'x'};
	char type = 0;
	uint32_t len = 0;

	for (size_t i = 0; i < 5; i++)
		ck_assert_int_eq(proto_msg_header(m, i, 8192, &type, &len), PROTO_NEED_MORE);
	ck_assert_int_eq(proto_msg_header(m, 5, 8192, &type, &len), 1);
	ck_assert_int_eq(type, 'Q');
	ck_assert_uint_eq(len, 9);

	proto_put32(m + 1, 4);
	ck_assert_int_eq(proto_msg_header(m, 5, 8192, &type, &len), 1);
	ck_assert_uint_eq(len, 4);

	proto_put32(m + 1, 3);
	ck_assert_int_eq(proto_msg_header(m, 5, 8192, &type, &len), PROTO_BAD);
	proto_put32(m + 1, 0);
	ck_assert_int_eq(proto_msg_header(m, 5, 8192, &type, &len), PROTO_BAD);
	proto_put32(m + 1, 8193);
	ck_assert_int_eq(proto_msg_header(m, 5, 8192, &type, &len), PROTO_BAD);
	proto_put32(m + 1, 8192);
	ck_assert_int_eq(proto_msg_header(m, 5, 8192, &type, &len), 1);
	proto_put32(m + 1, 0xffffffffu);
	ck_assert_int_eq(proto_msg_header(m, 5, PROTO_MAX_MESSAGE, &type, &len), PROTO_BAD);
}
END_TEST

/* --- builders and round trips --- */

/* Checks that b holds one message of type t at its head; returns its body. */
static const uint8_t *one_msg(const struct buf *b, char t, uint32_t *body_len)
{
	char type;
	uint32_t len;
	ck_assert_int_eq(proto_msg_header(buf_head(b), buf_len(b), PROTO_MAX_MESSAGE, &type, &len), 1);
	ck_assert_int_eq(type, t);
	ck_assert_uint_eq(buf_len(b), (size_t)len + 1);
	*body_len = len - 4;
	return buf_head(b) + 5;
}

START_TEST(build_simple_messages)
{
	struct buf b = {0};
	uint32_t bl;
	const uint8_t *body;

	ck_assert_int_eq(proto_put_auth_ok(&b), 0);
	static const uint8_t auth_ok[] = {'R', 0, 0, 0, 8, 0, 0, 0, 0};
	ck_assert_uint_eq(buf_len(&b), sizeof(auth_ok));
	ck_assert_mem_eq(buf_head(&b), auth_ok, sizeof(auth_ok));
	buf_reset(&b);

	ck_assert_int_eq(proto_put_backend_key(&b, 1234, -5), 0);
	body = one_msg(&b, 'K', &bl);
	ck_assert_uint_eq(bl, 8);
	ck_assert_int_eq((int32_t)proto_get32(body), 1234);
	ck_assert_int_eq((int32_t)proto_get32(body + 4), -5);
	buf_reset(&b);

	ck_assert_int_eq(proto_put_ready(&b, 'I'), 0);
	static const uint8_t ready[] = {'Z', 0, 0, 0, 5, 'I'};
	ck_assert_mem_eq(buf_head(&b), ready, sizeof(ready));
	ck_assert_uint_eq(buf_len(&b), sizeof(ready));
	buf_reset(&b);

	ck_assert_int_eq(proto_put_query(&b, "SELECT 1"), 0);
	body = one_msg(&b, 'Q', &bl);
	ck_assert_uint_eq(bl, 9);
	ck_assert_str_eq((const char *)body, "SELECT 1");
	buf_reset(&b);

	ck_assert_int_eq(proto_put_terminate(&b), 0);
	static const uint8_t term[] = {'X', 0, 0, 0, 4};
	ck_assert_uint_eq(buf_len(&b), sizeof(term));
	ck_assert_mem_eq(buf_head(&b), term, sizeof(term));
	buf_free(&b);
}
END_TEST

START_TEST(build_param_status_round_trip)
{
	struct buf b = {0};
	uint32_t bl;
	const char *name, *value;

	ck_assert_int_eq(proto_put_param_status(&b, "server_version", "16.2"), 0);
	const uint8_t *body = one_msg(&b, 'S', &bl);
	ck_assert_int_eq(proto_parse_param_status(body, bl, &name, &value), 0);
	ck_assert_str_eq(name, "server_version");
	ck_assert_str_eq(value, "16.2");
	buf_reset(&b);

	ck_assert_int_eq(proto_put_param_status(&b, "application_name", ""), 0);
	body = one_msg(&b, 'S', &bl);
	ck_assert_int_eq(proto_parse_param_status(body, bl, &name, &value), 0);
	ck_assert_str_eq(value, "");
	buf_free(&b);
}
END_TEST

START_TEST(param_status_malformed)
{
	const char *name, *value;
	static const uint8_t no_value[] = {'a', 0, 'b'};
	static const uint8_t no_nul[] = {'a', 'b'};
	static const uint8_t extra[] = {'a', 0, 'b', 0, 'c', 0};
	static const uint8_t name_only[] = {'a', 0};
	ck_assert_int_eq(proto_parse_param_status(no_value, sizeof(no_value), &name, &value), -1);
	ck_assert_int_eq(proto_parse_param_status(no_nul, sizeof(no_nul), &name, &value), -1);
	ck_assert_int_eq(proto_parse_param_status(extra, sizeof(extra), &name, &value), -1);
	ck_assert_int_eq(proto_parse_param_status(name_only, sizeof(name_only), &name, &value), -1);
	ck_assert_int_eq(proto_parse_param_status(no_nul, 0, &name, &value), -1);
}
END_TEST

START_TEST(build_negotiate)
{
	struct buf b = {0};
	uint32_t bl;
	const char *const opts[] = {"_pq_.foo", "_pq_.bar"};

	ck_assert_int_eq(proto_put_negotiate(&b, 0, opts, 2), 0);
	const uint8_t *body = one_msg(&b, 'v', &bl);
	ck_assert_uint_eq(proto_get32(body), 0);
	ck_assert_uint_eq(proto_get32(body + 4), 2);
	ck_assert_str_eq((const char *)body + 8, "_pq_.foo");
	ck_assert_str_eq((const char *)body + 17, "_pq_.bar");
	ck_assert_uint_eq(bl, 8 + 9 + 9);
	buf_reset(&b);

	ck_assert_int_eq(proto_put_negotiate(&b, 0, NULL, 0), 0);
	body = one_msg(&b, 'v', &bl);
	ck_assert_uint_eq(bl, 8);
	ck_assert_uint_eq(proto_get32(body + 4), 0);
	buf_free(&b);
}
END_TEST

START_TEST(build_error_round_trip)
{
	struct buf b = {0};
	uint32_t bl;

	ck_assert_int_eq(proto_put_error(&b, "FATAL", "3D000", "database \"x\" is not configured",
	                                 "check pgberth.yaml"), 0);
	const uint8_t *body = one_msg(&b, 'E', &bl);
	ck_assert_str_eq(proto_error_field(body, bl, 'S'), "FATAL");
	ck_assert_str_eq(proto_error_field(body, bl, 'V'), "FATAL");
	ck_assert_str_eq(proto_error_field(body, bl, 'C'), "3D000");
	ck_assert_str_eq(proto_error_field(body, bl, 'M'), "database \"x\" is not configured");
	ck_assert_str_eq(proto_error_field(body, bl, 'D'), "check pgberth.yaml");
	ck_assert_ptr_null(proto_error_field(body, bl, 'H'));
	buf_reset(&b);

	ck_assert_int_eq(proto_put_error(&b, "ERROR", "08P01", "bad", NULL), 0);
	body = one_msg(&b, 'E', &bl);
	ck_assert_str_eq(proto_error_field(body, bl, 'C'), "08P01");
	ck_assert_ptr_null(proto_error_field(body, bl, 'D'));
	buf_reset(&b);

	/* Several messages append one after another. */
	ck_assert_int_eq(proto_put_ready(&b, 'I'), 0);
	ck_assert_int_eq(proto_put_error(&b, "ERROR", "42601", "syntax", NULL), 0);
	ck_assert_uint_eq(buf_len(&b), 6 + 1 + 4 + 7 + 7 + 7 + 8 + 1);
	buf_free(&b);
}
END_TEST

START_TEST(error_body_malformed)
{
	static const uint8_t no_term[] = {'S', 'E', 'R', 'R', 'O', 'R', 0, 'C', '4', '2', 0};
	static const uint8_t unterminated[] = {'S', 'E', 'R', 'R', 'O', 'R', 0, 'C', '4', '2'};
	static const uint8_t code_only[] = {'S', 'E', 'R', 'R', 'O', 'R', 0, 'C'};
	static const uint8_t trailing[] = {'C', '4', 0, 0, 'x'};
	static const uint8_t empty_ok[] = {0};
	ck_assert_ptr_null(proto_error_field(no_term, sizeof(no_term), 'S'));
	ck_assert_ptr_null(proto_error_field(no_term, sizeof(no_term), 'C'));
	ck_assert_ptr_null(proto_error_field(unterminated, sizeof(unterminated), 'S'));
	ck_assert_ptr_null(proto_error_field(code_only, sizeof(code_only), 'S'));
	ck_assert_ptr_null(proto_error_field(trailing, sizeof(trailing), 'C'));
	ck_assert_ptr_null(proto_error_field(empty_ok, 0, 'C'));
	ck_assert_ptr_null(proto_error_field(empty_ok, sizeof(empty_ok), 'C'));
}
END_TEST

/* --- options --- */

struct opts_seen {
	int n;
	char names[8][64];
	char values[8][64];
	int stop_at;                /* return 7 from this call (1-based); 0 never */
};

static int collect(const char *name, const char *value, void *arg)
{
	struct opts_seen *s = arg;
	ck_assert_int_lt(s->n, 8);
	snprintf(s->names[s->n], sizeof(s->names[0]), "%s", name);
	snprintf(s->values[s->n], sizeof(s->values[0]), "%s", value);
	s->n++;
	return s->n == s->stop_at ? 7 : 0;
}

static int parse_opts(const char *opts, struct opts_seen *s, const char **err)
{
	char *scratch = malloc(strlen(opts) + 1);     /* exactly the documented size */
	ck_assert_ptr_nonnull(scratch);
	int rc = proto_parse_options(opts, scratch, collect, s, err);
	free(scratch);
	return rc;
}

START_TEST(options_forms)
{
	struct opts_seen s = {0};
	const char *err = NULL;
	ck_assert_int_eq(parse_opts("  -c work_mem=64MB\t-cstatement_timeout=5s --search-path=a,b  ", &s, &err), 0);
	ck_assert_int_eq(s.n, 3);
	ck_assert_str_eq(s.names[0], "work_mem");
	ck_assert_str_eq(s.values[0], "64MB");
	ck_assert_str_eq(s.names[1], "statement_timeout");
	ck_assert_str_eq(s.values[1], "5s");
	ck_assert_str_eq(s.names[2], "search_path");
	ck_assert_str_eq(s.values[2], "a,b");
}
END_TEST

START_TEST(options_escapes)
{
	struct opts_seen s = {0};
	const char *err = NULL;
	ck_assert_int_eq(parse_opts("-c application_name=my\\ app -c x.y=back\\\\slash\\", &s, &err), 0);
	ck_assert_int_eq(s.n, 2);
	ck_assert_str_eq(s.names[0], "application_name");
	ck_assert_str_eq(s.values[0], "my app");
	ck_assert_str_eq(s.names[1], "x.y");
	ck_assert_str_eq(s.values[1], "back\\slash");

	/* Values may hold '=' and be empty; the first '=' splits. */
	memset(&s, 0, sizeof(s));
	ck_assert_int_eq(parse_opts("--a-b-c=x=y -c e=", &s, &err), 0);
	ck_assert_int_eq(s.n, 2);
	ck_assert_str_eq(s.names[0], "a_b_c");
	ck_assert_str_eq(s.values[0], "x=y");
	ck_assert_str_eq(s.names[1], "e");
	ck_assert_str_eq(s.values[1], "");

	/* Dashes in the value stay. */
	memset(&s, 0, sizeof(s));
	ck_assert_int_eq(parse_opts("--name-with-dashes=x-y", &s, &err), 0);
	ck_assert_str_eq(s.names[0], "name_with_dashes");
	ck_assert_str_eq(s.values[0], "x-y");

	memset(&s, 0, sizeof(s));
	ck_assert_int_eq(parse_opts("", &s, &err), 0);
	ck_assert_int_eq(parse_opts("   ", &s, &err), 0);
	ck_assert_int_eq(s.n, 0);
}
END_TEST

START_TEST(options_errors)
{
	static const char *const bad[] = {
		"-d 5",                 /* other switch */
		"-c work_mem=1 -d 5",   /* bad switch after a good one */
		"-c work_mem",          /* missing '=' */
		"--work_mem",           /* missing '=' */
		"-c",                   /* missing argument */
		"-c =x",                /* empty name */
		"--=x",
		"work_mem=1",           /* not a switch */
		"-",
		"--",
		"-c a=1 \\",            /* trailing backslash makes an empty word */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct opts_seen s = {0};
		const char *err = NULL;
		ck_assert_msg(parse_opts(bad[i], &s, &err) == -1, "accepted \"%s\"", bad[i]);
		ck_assert_ptr_nonnull(err);
		/* Nothing applied when any part is bad. */
		ck_assert_int_eq(s.n, 0);
	}
}
END_TEST

START_TEST(options_stop)
{
	struct opts_seen s = {.stop_at = 2};
	const char *err = NULL;
	ck_assert_int_eq(parse_opts("-c a=1 -c b=2 -c c=3", &s, &err), 7);
	ck_assert_int_eq(s.n, 2);
}
END_TEST

/* --- set_config quoting --- */

static void check_set(const char *name, const char *value, const char *want)
{
	struct buf b = {0};
	ck_assert_int_eq(proto_sql_set(&b, name, value), 0);
	ck_assert_uint_eq(buf_len(&b), strlen(want));
	ck_assert_mem_eq(buf_head(&b), want, strlen(want));
	buf_free(&b);
}

START_TEST(sql_set_quoting)
{
	check_set("work_mem", "64MB", "SELECT pg_catalog.set_config('work_mem', '64MB', false)");
	check_set("application_name", "it's",
	          "SELECT pg_catalog.set_config('application_name', 'it''s', false)");
	check_set("x.y", "a\\b", "SELECT pg_catalog.set_config('x.y', E'a\\\\b', false)");
	check_set("x", "'\\'", "SELECT pg_catalog.set_config('x', E'''\\\\''', false)");
	check_set("Search_Path", "", "SELECT pg_catalog.set_config('Search_Path', '', false)");
	check_set("search_path", "s1,\"$user\", public",
	          "SELECT pg_catalog.set_config('search_path', 's1,\"$user\", public', false)");
	check_set("a", "'; DROP TABLE t; --",
	          "SELECT pg_catalog.set_config('a', '''; DROP TABLE t; --', false)");
}
END_TEST

START_TEST(sql_set_bad_name)
{
	static const char *const bad[] = {"", "a b", "a;b", "a'b", "a-b", "a\"b", "é"};
	struct buf b = {0};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_int_eq(proto_sql_set(&b, bad[i], "v"), -EINVAL);
	ck_assert_uint_eq(buf_len(&b), 0);
	buf_free(&b);
}
END_TEST

static Suite *proto_suite(void)
{
	Suite *s = suite_create("proto");
	TCase *tc;

	tc = tcase_create("startup");
	tcase_add_test(tc, frame_need_more);
	tcase_add_test(tc, frame_bad_lengths);
	tcase_add_test(tc, startup_v3_full);
	tcase_add_test(tc, startup_v3_no_database);
	tcase_add_test(tc, startup_v3_empty_value_and_no_params);
	tcase_add_test(tc, startup_other_minor_and_version);
	tcase_add_test(tc, startup_special_requests);
	tcase_add_test(tc, startup_special_wrong_length);
	tcase_add_test(tc, startup_length_mismatch);
	tcase_add_test(tc, startup_lying_lengths);
	tcase_add_test(tc, startup_lying_length_asan);
	tcase_add_test(tc, startup_too_many_params);
	tcase_add_test(tc, startup_empty_name_ends_list);
	suite_add_tcase(s, tc);

	tc = tcase_create("messages");
	tcase_add_test(tc, msg_header_cases);
	tcase_add_test(tc, build_simple_messages);
	tcase_add_test(tc, build_param_status_round_trip);
	tcase_add_test(tc, param_status_malformed);
	tcase_add_test(tc, build_negotiate);
	tcase_add_test(tc, build_error_round_trip);
	tcase_add_test(tc, error_body_malformed);
	suite_add_tcase(s, tc);

	tc = tcase_create("options");
	tcase_add_test(tc, options_forms);
	tcase_add_test(tc, options_escapes);
	tcase_add_test(tc, options_errors);
	tcase_add_test(tc, options_stop);
	tcase_add_test(tc, sql_set_quoting);
	tcase_add_test(tc, sql_set_bad_name);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(proto_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
