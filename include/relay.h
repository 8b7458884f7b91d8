/*
 * The relay's per-message rules. Bytes go from one socket's input buffer
 * to the other socket without being copied; the scanners only walk message
 * headers to learn what the pooler must know: where a transaction ends
 * (ReadyForQuery), what the server reports (ParameterStatus), how many
 * replies are still owed, and when the client says Terminate.
 */
#ifndef PGBERTH_RELAY_H
#define PGBERTH_RELAY_H

#include <stdint.h>
#include <sys/types.h>

#include "buf.h"

struct client;
struct server;

/* Per-direction input bound: reading stops while this much is unsent. A
 * message the scanners must see whole (ReadyForQuery, ParameterStatus, a short CommandComplete, and
 * every reply to the pooler's own queries) must fit. */
#define RELAY_BUF (32 * 1024)
/* What the client scan clears for the server before it stops until that is
 * sent: pgberth's own Parses can make a short batch long. */
#define RELAY_SCAN_MAX (2 * RELAY_BUF)

#define RELAY_TERMINATE 1
#define RELAY_STMT_BLOCK 2
#define RELAY_NOMEM (-2)

/* Sync, Close of a statement that does not exist, Sync: what pgberth puts
 * after a CopyDone or CopyFail (pstmt_queue_reply tells why). */
#define RELAY_FENCE_LEN 30
extern const uint8_t relay_fence[RELAY_FENCE_LEN];

/* Clears the client's bytes for sending to s. Returns 0, RELAY_TERMINATE
 * when the client sent Terminate (not cleared), -1 on a malformed stream,
 * or RELAY_NOMEM when its named statements could not be tracked (out of
 * memory, or PSTMT_QUEUE_MAX replies owed). Every message owed a reply
 * gets its entry in s->replies; with c->track, the client's named
 * statements are renamed for s (pstmt.h), and the replies pgberth gives
 * itself are put in s->in, cleared. */
int relay_scan_client(struct client *c, struct server *s);
/* Forgets what the unnamed statement and portal drop (server.h). */
void relay_drops_clear(struct server *s);
/* Puts in s->in, at the cleared mark, the replies pgberth owes the client
 * now (pstmt_queue_synth). 0, or -1 on out of memory. */
int relay_emit_replies(struct server *s);
/* Clears the server's bytes, tracking transaction status and parameters.
 * Returns 0, or -1 on a malformed stream or out-of-memory, or
 * RELAY_STMT_BLOCK when a statement-mode client's statement left a
 * transaction open: everything before that ReadyForQuery is cleared, the
 * ReadyForQuery is not. */
int relay_scan_server(struct server *s);

/* Reads what fits under max (RELAY_BUF, more for a Parse read whole) from
 * fd into b, which takes a block from bc if it has none. Returns bytes
 * read, 0 at EOF, -EAGAIN when nothing is there, or another negative
 * errno. */
ssize_t relay_read(int fd, struct buf *b, struct buf_cache *bc, size_t max);
/* Writes p[0..n) to fd. Returns bytes written (maybe 0 on EAGAIN), or a
 * negative errno. */
ssize_t relay_write(int fd, const uint8_t *p, size_t n);

/* Why a poll reported an error: the socket's pending error (libuv reports
 * POLLERR as EBADF, which would blame the wrong party). */
const char *relay_socket_error(int fd, int status);

#endif
