/*
 * The relay's per-message rules, shared by both directions. The scanners
 * advance a "cleared" mark (fwd) over the input buffer: everything before it
 * may be written to the other side as it is. A message body is cleared as
 * it streams in, so rows of any size pass through a fixed buffer; only the
 * small messages the pooler must read (ReadyForQuery, ParameterStatus,
 * CommandComplete) are
 * held until whole.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <uv.h>
#include <unistd.h>

#include "client.h"
#include "proto.h"
#include "relay.h"
#include "server.h"

/* Clears the rest of a message already being streamed. Returns true if the
 * scan may go on to the next header. */
static bool scan_body(size_t *fwd, uint32_t *remain, size_t len)
{
	size_t take = len - *fwd;
	if (take > *remain)
		take = *remain;
	*fwd += take;
	*remain -= (uint32_t)take;
	return *remain == 0;
}

int relay_scan_client(struct client *c, struct server *s)
{
	const uint8_t *p = buf_head(&c->in);
	size_t len = buf_len(&c->in);

	while (c->fwd < len) {
		char type;
		uint32_t mlen;

		if (c->msg_remain > 0 && !scan_body(&c->fwd, &c->msg_remain, len))
			break;
		if (c->fwd >= len)
			break;
		int rc = proto_msg_header(p + c->fwd, len - c->fwd, PROTO_MAX_MESSAGE, &type, &mlen);
		if (rc == PROTO_NEED_MORE)
			break;
		if (rc == PROTO_BAD)
			return -1;
		if (type == 'X')
			return RELAY_TERMINATE;
		/* A named statement outlives the transaction: the next client
		 * of this server must not run it (server_setup). The name is the
		 * first byte of the body, if it is here yet. */
		if (type == 'P' && (len - c->fwd < 6 || p[c->fwd + 5] != '\0'))
			server_left(s, c->id, LEFT_STATEMENTS);
		/* Each of these is answered by exactly one ReadyForQuery, but for
		 * a Sync that arrives in copy-in mode: PostgreSQL ignores it. */
		if (type == 'Q' || type == 'F' || (type == 'S' && !s->copy_in))
			s->replies_owed++;
		if (type == 'S' && !s->copy_in)
			s->syncs_since_execute++;
		else if (type == 'E' || type == 'Q')
			s->syncs_since_execute = 0;
		else if (type == 'c' || type == 'f')
			s->copy_in = false;     /* CopyDone, CopyFail */
		/* Extended-query messages not yet closed by a Sync. */
		if (type == 'P' || type == 'B' || type == 'E' || type == 'D' || type == 'C' || type == 'H')
			s->unsynced = true;
		else if (type == 'S')
			s->unsynced = false;
		c->msg_remain = mlen + 1;
	}
	return 0;
}

/* CommandComplete tags of statements that leave session state behind. A
 * temporary table made by CREATE TABLE AS or SELECT INTO ("SELECT n") is
 * not seen. */
static void scan_left_state(struct server *s, const char *tag, size_t len)
{
	/* Every query's tag comes here: the length (with its NUL) first. */
#define TAG(t, what) { t, sizeof(t), what }
	static const struct { const char *tag; size_t len; unsigned what; } tags[] = {
		TAG("PREPARE", LEFT_STATEMENTS),
		TAG("LISTEN", LEFT_LISTEN),
		TAG("DECLARE CURSOR", LEFT_CURSORS),
		TAG("CREATE TABLE", LEFT_TEMP),
	};
#undef TAG
	for (size_t i = 0; i < sizeof(tags) / sizeof(tags[0]); i++) {
		if (len == tags[i].len && memcmp(tag, tags[i].tag, len) == 0) {
			server_left(s, s->client != NULL ? s->client->id : SETTINGS_UNKNOWN, tags[i].what);
			return;
		}
	}
}

/* A message the scanner reads: ReadyForQuery, ParameterStatus or
 * CommandComplete. */
static int scan_server_message(struct server *s, char type, const uint8_t *body, size_t blen)
{
	if (type == 'C') {
		/* A client's own SET or RESET changed settings pgberth cannot see
		 * (the unreported ones): they are read back when the transaction
		 * ends (server_capture_settings), and until then the server is
		 * reset before anyone else uses it. DISCARD ALL leaves it clean. */
		if ((blen == 4 && memcmp(body, "SET", 4) == 0) || (blen == 6 && memcmp(body, "RESET", 6) == 0)) {
			server_settings_are(s, SETTINGS_UNKNOWN, 0, NULL);
			s->settings_dirty = s->client != NULL;
		} else if (blen == 12 && memcmp(body, "DISCARD ALL", 12) == 0) {
			server_settings_are(s, 0, 0, NULL);
			s->left = 0;
			if (s->client != NULL)
				client_settings_discarded(s->client);
		} else {
			scan_left_state(s, (const char *)body, blen);
		}
		return 0;
	}
	if (type == 'Z') {
		if (blen != 1)
			return -1;
		s->txstatus = (char)body[0];
		s->copy_in = false;     /* whatever the client does, copy mode is over */
		if (s->replies_owed > 0)
			s->replies_owed--;
		return 0;
	}
	const char *name, *value;
	if (proto_parse_param_status(body, blen, &name, &value) < 0)
		return -1;
	if (s->client != NULL && client_param_changed(s->client, name, value) < 0)
		return -1;
	return server_set_param(s, name, value);
}

int relay_scan_server(struct server *s)
{
	const uint8_t *p = buf_head(&s->in);
	size_t len = buf_len(&s->in);

	while (s->fwd < len) {
		char type;
		uint32_t mlen;

		if (s->msg_remain > 0 && !scan_body(&s->fwd, &s->msg_remain, len))
			break;
		if (s->fwd >= len)
			break;
		int rc = proto_msg_header(p + s->fwd, len - s->fwd, PROTO_MAX_MESSAGE, &type, &mlen);
		if (rc == PROTO_NEED_MORE)
			break;
		if (rc == PROTO_BAD)
			return -1;
		/* A FATAL (or PANIC) is what PostgreSQL says before it closes;
		 * its severity is the first field, if here yet. */
		s->last_fatal = type == 'E' && len - s->fwd >= 11 &&
		                (memcmp(p + s->fwd + 5, "SFATAL", 6) == 0 || memcmp(p + s->fwd + 5, "SPANIC", 6) == 0);
		if (type == 'G') {
			/* CopyInResponse: the Syncs the client sent after the Execute
			 * that started this COPY reach PostgreSQL in copy-in mode and
			 * are ignored, so no ReadyForQuery will answer them. */
			s->copy_in = true;
			uint32_t ignored = s->syncs_since_execute;
			if (ignored > s->replies_owed)
				ignored = s->replies_owed;
			s->replies_owed -= ignored;
			s->syncs_since_execute = 0;
		}
		if (type == 'Z' || type == 'S' || (type == 'C' && mlen <= 64)) {
			if ((size_t)mlen + 1 > RELAY_BUF)
				return -1;
			if (len - s->fwd < (size_t)mlen + 1)
				break;  /* wait for the whole message */
			if (scan_server_message(s, type, p + s->fwd + 5, mlen - 4) < 0)
				return -1;
			if (type == 'Z' && s->txstatus != 'I' && s->replies_owed == 0 && s->client != NULL &&
			    s->client->mode == POOL_STATEMENT && s->state == SERVER_ACTIVE)
				return RELAY_STMT_BLOCK;    /* this ReadyForQuery is not cleared */
		}
		s->msg_remain = mlen + 1;
	}
	return 0;
}

/*
 * Every relayed byte moves through these two. They use recv(2) and send(2),
 * not read(2) and write(2): both ends are always sockets, and the socket
 * calls skip the VFS layer (its checks and fsnotify hooks). On the
 * development box that is about 150 ns less per send and receive, some 4%
 * of the pooler's CPU per transaction. MSG_NOSIGNAL makes a vanished peer
 * an EPIPE even where SIGPIPE is not ignored.
 *
 * They go through syscall(2): in a threaded process glibc wraps send and
 * recv, cancellation points, in two atomic updates of the thread's
 * cancellation state, and pgberth never cancels a thread.
 */
ssize_t relay_read(int fd, struct buf *b, struct buf_cache *bc)
{
	size_t len = buf_len(b);
	if (len >= RELAY_BUF)
		return -EAGAIN;
	if (buf_take_block(b, bc) < 0 || buf_reserve(b, RELAY_BUF - len) < 0)
		return -ENOMEM;
	for (;;) {
		ssize_t n = syscall(SYS_recvfrom, fd, b->data + b->end, RELAY_BUF - len, MSG_DONTWAIT, NULL, NULL);
		if (n >= 0) {
			b->end += (size_t)n;
			return n;
		}
		if (errno != EINTR)
			return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	}
}

const char *relay_socket_error(int fd, int status)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0)
		return strerror(err);
	return uv_strerror(status);
}

ssize_t relay_write(int fd, const uint8_t *p, size_t n)
{
	for (;;) {
		ssize_t w = syscall(SYS_sendto, fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL, NULL, 0);
		if (w >= 0)
			return w;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		if (errno != EINTR)
			return -errno;
	}
}
