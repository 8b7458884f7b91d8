/*
 * PostgreSQL protocol 3.0 framing, parsing and message building. Everything
 * here reads bytes that an untrusted client or server sent, so every parser
 * takes an explicit length, never reads past it, and finds the end of each
 * string with memchr inside that length instead of trusting a terminator.
 * Errors are fixed static strings phrased like PostgreSQL's, so a caller can
 * put them straight into an ErrorResponse without worrying about lifetime.
 *
 * Builders compute the whole message size first and reserve it once, so on
 * -ENOMEM nothing has been appended and the buffer still holds whole
 * messages only. Owns no memory; no locks; no I/O.
 */
#include <errno.h>
#include <string.h>

#include "proto.h"

long proto_startup_frame(const uint8_t *p, size_t n)
{
	if (n < 4)
		return PROTO_NEED_MORE;
	uint32_t len = proto_get32(p);
	if (len < 8 || len > PROTO_MAX_STARTUP)
		return PROTO_BAD;
	return (long)len;
}

/*
 * The name/value pairs of a StartupMessage, from offset 8 to the final NUL,
 * which must be the packet's last byte. A name of "" is the terminator, as in
 * PostgreSQL's ProcessStartupPacket.
 */
static int parse_pairs(const uint8_t *p, size_t len, struct startup *out, const char **err)
{
	size_t off = 8;

	for (;;) {
		if (off >= len) {
			*err = "invalid startup packet layout: expected terminator as last byte";
			return -1;
		}
		if (p[off] == '\0')
			break;
		const uint8_t *name_end = memchr(p + off, '\0', len - off);
		if (name_end == NULL) {
			*err = "invalid startup packet layout: parameter name not terminated";
			return -1;
		}
		size_t voff = (size_t)(name_end - p) + 1;
		const uint8_t *val_end = voff < len ? memchr(p + voff, '\0', len - voff) : NULL;
		if (val_end == NULL) {
			*err = "invalid startup packet layout: parameter value not terminated";
			return -1;
		}
		if (out->nparams == PROTO_MAX_PARAMS) {
			*err = "invalid startup packet layout: too many parameters";
			return -1;
		}
		const char *name = (const char *)p + off;
		const char *value = (const char *)p + voff;
		out->params[out->nparams].name = name;
		out->params[out->nparams].value = value;
		out->nparams++;
		/* Later pairs win, as in PostgreSQL. */
		if (strcmp(name, "user") == 0)
			out->user = value;
		else if (strcmp(name, "database") == 0)
			out->database = value;
		off = (size_t)(val_end - p) + 1;
	}
	if (off != len - 1) {
		*err = "invalid startup packet layout: expected terminator as last byte";
		return -1;
	}
	return 0;
}

int proto_parse_startup(const uint8_t *p, size_t len, struct startup *out, const char **err)
{
	memset(out, 0, sizeof(*out));
	if (len < 8 || len > PROTO_MAX_STARTUP || proto_get32(p) != len) {
		*err = "invalid length of startup packet";
		return -1;
	}
	out->code = proto_get32(p + 4);

	switch (out->code) {
	case PROTO_CANCEL_REQUEST:
		if (len != 16) {
			*err = "invalid length of cancel request packet";
			return -1;
		}
		out->cancel_pid = (int32_t)proto_get32(p + 8);
		out->cancel_key = (int32_t)proto_get32(p + 12);
		return 0;
	case PROTO_SSL_REQUEST:
		if (len != 8) {
			*err = "invalid length of SSL negotiation packet";
			return -1;
		}
		return 0;
	case PROTO_GSSENC_REQUEST:
		if (len != 8) {
			*err = "invalid length of GSSAPI encryption request packet";
			return -1;
		}
		return 0;
	default:
		break;
	}
	/* Only 3.x has a layout we know; the caller rejects other versions. */
	if (out->code >> 16 != 3)
		return 0;
	return parse_pairs(p, len, out, err);
}

int proto_msg_header(const uint8_t *p, size_t n, uint32_t max_len, char *type, uint32_t *len)
{
	if (n < 5)
		return PROTO_NEED_MORE;
	uint32_t l = proto_get32(p + 1);
	if (l < 4 || l > max_len)
		return PROTO_BAD;
	*type = (char)p[0];
	*len = l;
	return 1;
}

/*
 * Starts a message of body_len bytes at the end of b: reserves the whole
 * message, writes the type and length, and returns where the body goes (the
 * caller must fill exactly body_len bytes), or NULL when out of memory.
 */
static uint8_t *msg_begin(struct buf *b, char type, size_t body_len)
{
	if (body_len > PROTO_MAX_MESSAGE - 4)
		return NULL;
	if (buf_reserve(b, 5 + body_len) < 0)
		return NULL;
	uint8_t *m = b->data + b->end;
	m[0] = (uint8_t)type;
	proto_put32(m + 1, (uint32_t)(body_len + 4));
	b->end += 5 + body_len;
	return m + 5;
}

/* Copies s and its NUL to w; returns the byte after. */
static uint8_t *put_str(uint8_t *w, const char *s, size_t slen)
{
	memcpy(w, s, slen + 1);
	return w + slen + 1;
}

int proto_put_auth_ok(struct buf *b)
{
	uint8_t *w = msg_begin(b, 'R', 4);
	if (w == NULL)
		return -ENOMEM;
	proto_put32(w, 0);
	return 0;
}

int proto_put_param_status(struct buf *b, const char *name, const char *value)
{
	size_t nl = strlen(name), vl = strlen(value);
	uint8_t *w = msg_begin(b, 'S', nl + 1 + vl + 1);
	if (w == NULL)
		return -ENOMEM;
	w = put_str(w, name, nl);
	put_str(w, value, vl);
	return 0;
}

int proto_put_backend_key(struct buf *b, int32_t pid, int32_t key)
{
	uint8_t *w = msg_begin(b, 'K', 8);
	if (w == NULL)
		return -ENOMEM;
	proto_put32(w, (uint32_t)pid);
	proto_put32(w + 4, (uint32_t)key);
	return 0;
}

int proto_put_ready(struct buf *b, char status)
{
	uint8_t *w = msg_begin(b, 'Z', 1);
	if (w == NULL)
		return -ENOMEM;
	w[0] = (uint8_t)status;
	return 0;
}

int proto_put_query(struct buf *b, const char *sql)
{
	size_t l = strlen(sql);
	uint8_t *w = msg_begin(b, 'Q', l + 1);
	if (w == NULL)
		return -ENOMEM;
	put_str(w, sql, l);
	return 0;
}

int proto_put_terminate(struct buf *b)
{
	return msg_begin(b, 'X', 0) == NULL ? -ENOMEM : 0;
}

int proto_put_negotiate(struct buf *b, uint32_t minor, const char *const *opts, int nopts)
{
	size_t body = 8;
	for (int i = 0; i < nopts; i++)
		body += strlen(opts[i]) + 1;
	uint8_t *w = msg_begin(b, 'v', body);
	if (w == NULL)
		return -ENOMEM;
	proto_put32(w, minor);
	proto_put32(w + 4, (uint32_t)(nopts > 0 ? nopts : 0));
	w += 8;
	for (int i = 0; i < nopts; i++)
		w = put_str(w, opts[i], strlen(opts[i]));
	return 0;
}

/* Writes one ErrorResponse field: its code byte and NUL-terminated value. */
static uint8_t *put_field(uint8_t *w, char code, const char *s, size_t slen)
{
	*w++ = (uint8_t)code;
	return put_str(w, s, slen);
}

int proto_put_error(struct buf *b, const char *severity, const char *sqlstate,
                    const char *message, const char *detail)
{
	size_t sl = strlen(severity), cl = strlen(sqlstate), ml = strlen(message);
	size_t dl = detail != NULL ? strlen(detail) : 0;
	size_t body = 2 * (sl + 2) + (cl + 2) + (ml + 2) + (detail != NULL ? dl + 2 : 0) + 1;
	uint8_t *w = msg_begin(b, 'E', body);
	if (w == NULL)
		return -ENOMEM;
	w = put_field(w, 'S', severity, sl);
	w = put_field(w, 'V', severity, sl);
	w = put_field(w, 'C', sqlstate, cl);
	w = put_field(w, 'M', message, ml);
	if (detail != NULL)
		w = put_field(w, 'D', detail, dl);
	*w = 0;
	return 0;
}

const char *proto_error_field(const uint8_t *body, size_t len, char code)
{
	const char *found = NULL;
	size_t off = 0;

	/* Walk the whole body so that a malformed one is rejected even when
	 * the wanted field comes before the damage. */
	while (off < len && body[off] != 0) {
		const uint8_t *end = memchr(body + off + 1, '\0', len - off - 1);
		if (end == NULL)
			return NULL;
		if (found == NULL && body[off] == (uint8_t)code)
			found = (const char *)body + off + 1;
		off = (size_t)(end - body) + 1;
	}
	if (len == 0 || off != len - 1)
		return NULL;
	return found;
}

int proto_parse_param_status(const uint8_t *body, size_t len, const char **name, const char **value)
{
	const uint8_t *end = memchr(body, '\0', len);
	if (end == NULL)
		return -1;
	size_t voff = (size_t)(end - body) + 1;
	const uint8_t *vend = voff < len ? memchr(body + voff, '\0', len - voff) : NULL;
	if (vend == NULL || (size_t)(vend - body) != len - 1)
		return -1;
	*name = (const char *)body;
	*value = (const char *)body + voff;
	return 0;
}

/* White space as isspace() in the C locale, whatever locale we run in. */
static bool opt_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/*
 * pg_split_opts: copies the words of s into scratch, each NUL terminated, one
 * after another. Returns the number of words. A word never takes more bytes
 * than the source it came from plus the separator after it, so scratch needs
 * strlen(s) + 1 bytes.
 */
static int split_words(const char *s, char *scratch)
{
	char *w = scratch;
	int n = 0;

	for (;;) {
		while (opt_space(*s))
			s++;
		if (*s == '\0')
			break;
		bool escaped = false;
		for (; *s != '\0'; s++) {
			if (opt_space(*s) && !escaped)
				break;
			if (!escaped && *s == '\\') {
				escaped = true;
			} else {
				escaped = false;
				*w++ = *s;
			}
		}
		*w++ = '\0';
		n++;
	}
	return n;
}

static const char *next_word(const char *w)
{
	return w + strlen(w) + 1;
}

/*
 * Finds the setting in word w (after the switch): "name=value" with a
 * non-empty name. Returns the '=' or NULL with *err set.
 */
static char *setting_eq(char *w, bool long_form, const char **err)
{
	char *eq = strchr(w, '=');
	if (eq == NULL) {
		*err = long_form ? "invalid \"options\": --name requires a value"
		                 : "invalid \"options\": -c name requires a value";
		return NULL;
	}
	if (eq == w) {
		*err = "invalid \"options\": empty parameter name";
		return NULL;
	}
	return eq;
}

/*
 * Returns the word holding the "name=value" of the setting that starts at
 * word i (skipping a separate "-c" word) and sets *skip to the number of
 * words it takes, or NULL with *err set.
 */
static char *setting_word(char *w, int i, int nwords, int *skip, const char **err)
{
	if (w[0] == '-' && w[1] == 'c') {
		if (w[2] != '\0') {
			*skip = 1;
			return w + 2;
		}
		if (i + 1 >= nwords) {
			*err = "invalid \"options\": -c requires an argument";
			return NULL;
		}
		*skip = 2;
		return (char *)next_word(w);
	}
	if (w[0] == '-' && w[1] == '-') {
		*skip = 1;
		return w + 2;
	}
	*err = "invalid \"options\": only -c name=value and --name=value are supported";
	return NULL;
}

int proto_parse_options(const char *options, char *scratch,
                        int (*fn)(const char *name, const char *value, void *arg),
                        void *arg, const char **err)
{
	int nwords = split_words(options, scratch);
	int skip;
	char *w;

	/* Validate everything before the first callback, so a bad string
	 * applies no setting at all. */
	w = scratch;
	for (int i = 0; i < nwords; i += skip) {
		char *set = setting_word(w, i, nwords, &skip, err);
		if (set == NULL || setting_eq(set, w[1] == '-', err) == NULL)
			return -1;
		for (int k = 0; k < skip; k++)
			w = (char *)next_word(w);
	}

	w = scratch;
	for (int i = 0; i < nwords; i += skip) {
		char *set = setting_word(w, i, nwords, &skip, err);
		/* Step past before the setting is cut in two below. */
		for (int k = 0; k < skip; k++)
			w = (char *)next_word(w);
		char *eq = setting_eq(set, false, err);
		*eq = '\0';
		for (char *c = set; c < eq; c++) {
			if (*c == '-')
				*c = '_';
		}
		int rc = fn(set, eq + 1, arg);
		if (rc != 0)
			return rc;
	}
	return 0;
}

bool proto_sql_name_ok(const char *name)
{
	if (*name == '\0')
		return false;
	for (const char *c = name; *c != '\0'; c++) {
		bool ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		          (*c >= '0' && *c <= '9') || *c == '_' || *c == '.';
		if (!ok)
			return false;
	}
	return true;
}

/* Appends value as a string literal: doubled quotes, and E'' with doubled
 * backslashes when it has one, so that standard_conforming_strings does
 * not matter. */
static char *sql_literal(char *w, const char *value)
{
	bool esc = strchr(value, '\\') != NULL;

	if (esc)
		*w++ = 'E';
	*w++ = '\'';
	for (const char *c = value; *c != '\0'; c++) {
		if (*c == '\'' || (esc && *c == '\\'))
			*w++ = *c;
		*w++ = *c;
	}
	*w++ = '\'';
	return w;
}

int proto_sql_set(struct buf *b, const char *name, const char *value)
{
	static const char head[] = "SELECT pg_catalog.set_config(";
	static const char tail[] = ", false)";

	if (!proto_sql_name_ok(name))
		return -EINVAL;
	size_t nl = strlen(name), vl = strlen(value);
	/* head 'name', [E]'value-doubled' tail */
	int rc = buf_reserve(b, sizeof(head) - 1 + nl + 2 + 2 + 3 + 2 * vl + sizeof(tail) - 1);
	if (rc < 0)
		return rc;
	char *w = (char *)b->data + b->end;
	memcpy(w, head, sizeof(head) - 1);
	w = sql_literal(w + sizeof(head) - 1, name);
	*w++ = ',';
	*w++ = ' ';
	w = sql_literal(w, value);
	memcpy(w, tail, sizeof(tail) - 1);
	w += sizeof(tail) - 1;
	b->end = (size_t)((uint8_t *)w - b->data);
	return 0;
}
