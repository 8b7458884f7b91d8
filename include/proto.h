/*
 * PostgreSQL frontend/backend protocol 3.0: framing and the few messages the
 * pooler writes or reads itself. Pure functions over byte arrays, no I/O:
 * everything here is unit-tested without a socket.
 *
 * A regular message is a type byte, then an int32 length that counts itself
 * and the body but not the type byte. The startup-phase packets (StartupMessage,
 * SSLRequest, GSSENCRequest, CancelRequest) have no type byte: an int32
 * length that counts itself, then an int32 code. All integers big-endian.
 */
#ifndef PGBERTH_PROTO_H
#define PGBERTH_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define PROTO_V3               196608u    /* 3 << 16 */
#define PROTO_CANCEL_REQUEST   80877102u
#define PROTO_SSL_REQUEST      80877103u
#define PROTO_GSSENC_REQUEST   80877104u
#define PROTO_MAX_STARTUP      10000u     /* as PostgreSQL's MAX_STARTUP_PACKET_LENGTH */
#define PROTO_MAX_MESSAGE      (1u << 30) /* as PostgreSQL's MaxAllocSize bound */
#define PROTO_MAX_PARAMS       64         /* startup parameters we accept */

/* Results of the framing functions. */
#define PROTO_NEED_MORE   0       /* not enough bytes yet; nothing consumed */
#define PROTO_BAD        (-1)     /* the peer is not speaking the protocol */

static inline uint32_t proto_get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void proto_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/*
 * Startup-phase packet in p[0..n). Returns PROTO_NEED_MORE, PROTO_BAD (length
 * below 8 or above PROTO_MAX_STARTUP), or the whole packet's length (> 0),
 * which may exceed n: the caller waits for that many bytes.
 */
long proto_startup_frame(const uint8_t *p, size_t n);

struct startup_param {
	const char *name;           /* points into the packet */
	const char *value;
};

/* A parsed startup-phase packet. Pointers refer into the caller's bytes. */
struct startup {
	uint32_t code;              /* PROTO_V3 (or another version), or a request code */
	/* StartupMessage: the name/value pairs in order, user and database among them */
	struct startup_param params[PROTO_MAX_PARAMS];
	int nparams;
	const char *user;           /* NULL if absent */
	const char *database;       /* NULL if absent (PostgreSQL then uses user) */
	/* CancelRequest */
	int32_t cancel_pid;
	int32_t cancel_key;
};

/*
 * Parses a whole startup-phase packet of exactly len bytes (as framed by
 * proto_startup_frame). Returns 0, or -1 with *err set to a message fit for
 * an ErrorResponse: pairs not NUL terminated, missing final NUL, more than
 * PROTO_MAX_PARAMS pairs, a CancelRequest whose length is not 16, or
 * SSL/GSSENC requests whose length is not 8. A protocol version other than
 * 3.x is returned as parsed (code set); the caller decides.
 */
int proto_parse_startup(const uint8_t *p, size_t len, struct startup *out, const char **err);

/*
 * Regular message header in p[0..n). Returns PROTO_NEED_MORE (n < 5),
 * PROTO_BAD (length field < 4 or > max_len), or 1 with *type and *len (the
 * length field: body length + 4) filled.
 */
int proto_msg_header(const uint8_t *p, size_t n, uint32_t max_len, char *type, uint32_t *len);

/* Builders: append one complete message to b. Return 0 or -ENOMEM. */
int proto_put_auth_ok(struct buf *b);
int proto_put_param_status(struct buf *b, const char *name, const char *value);
int proto_put_backend_key(struct buf *b, int32_t pid, int32_t key);
int proto_put_ready(struct buf *b, char status);
int proto_put_query(struct buf *b, const char *sql);
int proto_put_terminate(struct buf *b);
/* NegotiateProtocolVersion: newest minor we support, and unrecognized options. */
int proto_put_negotiate(struct buf *b, uint32_t minor, const char *const *opts, int nopts);
/*
 * ErrorResponse with fields S, V (both severity), C (sqlstate), M (message)
 * and, when detail is not NULL, D. severity is "ERROR", "FATAL" ...
 */
int proto_put_error(struct buf *b, const char *severity, const char *sqlstate,
                    const char *message, const char *detail);

/*
 * Finds field code (e.g. 'C' for SQLSTATE, 'M' for message) in the body of an
 * ErrorResponse or NoticeResponse (the bytes after the length). Returns a
 * pointer to the NUL-terminated value inside body, or NULL if absent or the
 * body is malformed.
 */
const char *proto_error_field(const uint8_t *body, size_t len, char code);

/*
 * Body of a ParameterStatus message: two NUL-terminated strings. Returns 0
 * with *name and *value pointing into body, or -1 if malformed.
 */
int proto_parse_param_status(const uint8_t *body, size_t len, const char **name, const char **value);

/*
 * Splits the startup "options" parameter the way PostgreSQL does: words
 * separated by unescaped white space, backslash escapes the next character.
 * Accepts "-c name=value", "-cname=value" and "--name=value" (dashes in the
 * name become underscores). Calls fn(name, value, arg) for each setting;
 * a nonzero return from fn stops the walk and is returned. Returns -1 with
 * *err set for anything else (other switches, a missing '=').
 * scratch must hold at least strlen(options) + 1 bytes.
 */
int proto_parse_options(const char *options, char *scratch,
                        int (*fn)(const char *name, const char *value, void *arg),
                        void *arg, const char **err);

/* A parameter name proto_sql_set accepts: letters, digits, '_' and '.'. */
bool proto_sql_name_ok(const char *name);

/*
 * Appends "SELECT pg_catalog.set_config('name', 'value', false)" to b as SQL
 * text (no message framing, no NUL), quoting value as a literal that means
 * the same whatever standard_conforming_strings is (E'' with escapes when it
 * has a backslash). set_config, not SET: it reads value as a startup option
 * or a ParameterStatus gives it, so "s1,public" is two schemas of a
 * search_path, not one named "s1,public". name must be made of letters,
 * digits, '_' and '.'; returns -EINVAL if not.
 */
int proto_sql_set(struct buf *b, const char *name, const char *value);

#endif
