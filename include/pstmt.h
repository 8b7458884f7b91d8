/*
 * Named prepared statements in transaction and statement pooling.
 *
 * A client's statement names are its own, but its next transaction may run
 * on a server that never saw its Parse, and a server's names would collide
 * with the next client's. So pgberth keeps each client's statements (its
 * name, and the Parse's query and parameter types) in a pstmt_map, and
 * names them on servers by content: "pgberth_" and 16 hex digits of a hash
 * of the Parse body. Each server remembers in a pstmt_cache which it holds,
 * at most max_prepared_statements, the least recently used closed first.
 * Before a Bind or Describe of a statement its server lacks, pgberth sends
 * the Parse itself; a client's Parse of a statement the server already
 * holds (from any client) is answered by pgberth and not sent.
 *
 * The replies must stay in step with that: every message that goes to a
 * server, the client's and pgberth's own, has an entry in the server's
 * pstmt_queue, and the relay walks the server's messages against it. The
 * replies to pgberth's own messages are dropped, and those to messages
 * pgberth answered itself are put in where the server would have sent
 * them. After an error the server skips to the next Sync, and so does the
 * queue: a statement whose Parse failed or was skipped is forgotten.
 *
 * A statement is immutable once made. The client's map and the caches of
 * the servers that hold it share it by reference, across workers, so the
 * count is atomic. Nothing here does I/O or takes a lock.
 */
#ifndef PGBERTH_PSTMT_H
#define PGBERTH_PSTMT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PSTMT_SNAME_LEN 24              /* strlen("pgberth_") + 16 */
/* Bounds on memory: a Parse up to PSTMT_PARSE_MAX is kept (it is read
 * whole first); a client's statements hold at most PSTMT_CLIENT_BYTES, a
 * server's cache PSTMT_SERVER_BYTES (the least recently used go first). */
#define PSTMT_PARSE_MAX (1024 * 1024)
#define PSTMT_CLIENT_BYTES (32 * 1024 * 1024)
#define PSTMT_SERVER_BYTES (16 * 1024 * 1024)

struct pstmt {
	atomic_uint refs;
	uint64_t hash;                      /* of body and settings; names it on servers */
	char sname[PSTMT_SNAME_LEN + 1];    /* "pgberth_<hash>" */
	uint32_t name_len;                  /* the client's name, without its NUL */
	uint32_t body_len;
	uint32_t settings_len;
	const char *name;                   /* into data */
	const uint8_t *body;                /* the Parse after the name: query, types */
	const uint8_t *settings;            /* the client's settings it was parsed under */
	uint8_t data[];
};

/* A statement the client named name (name_len bytes, no NUL) with the
 * Parse body after the name, parsed under the client's settings (an
 * opaque string: PostgreSQL reads literals at Parse time by TimeZone,
 * DateStyle, client_encoding, standard_conforming_strings ..., so only
 * clients with the same settings share a statement). One reference, or
 * NULL on out of memory. */
struct pstmt *pstmt_new(const char *name, size_t name_len, const uint8_t *body, size_t body_len,
                        const void *settings, size_t settings_len);
struct pstmt *pstmt_ref(struct pstmt *p);
void pstmt_unref(struct pstmt *p);
/* Same query, parameter types and settings. */
bool pstmt_same(const struct pstmt *a, const struct pstmt *b);

/* A client's statements by name. Holds a reference to each. */
/* Marks on a client's statement while the server has not answered yet. */
enum {
	PSTMT_PENDING = 1,                  /* its Parse is on its way (it may fail) */
	PSTMT_CLOSING = 2,                  /* a Close, DEALLOCATE or DISCARD ALL is */
};

struct pstmt_mslot {
	struct pstmt *p;                    /* NULL: empty */
	uint8_t marks;                      /* PSTMT_PENDING, PSTMT_CLOSING */
};

struct pstmt_map {
	struct pstmt_mslot *slots;          /* open addressing */
	uint32_t cap;                       /* 0 or a power of two */
	uint32_t n;
	size_t bytes;                       /* of the statements' bodies */
};

struct pstmt *pstmt_map_get(const struct pstmt_map *m, const char *name, size_t name_len);
/* Adds p (no statement of its name may be there), taking a reference.
 * 0 or -ENOMEM. */
int pstmt_map_add(struct pstmt_map *m, struct pstmt *p);
/* Drops the statement of p's name if it is p itself. */
void pstmt_map_del(struct pstmt_map *m, const struct pstmt *p);
/* The marks of p in the map (0 if p is not there), and setting them. A
 * statement being closed is still there for what the client sent before
 * the answer; its name, and that of one whose Parse may still fail, is
 * free for a new Parse. */
uint8_t pstmt_map_marks(const struct pstmt_map *m, const struct pstmt *p);
void pstmt_map_mark(struct pstmt_map *m, const struct pstmt *p, uint8_t marks, bool on);
/* Every statement: marked closing (on), or, closing ones, dropped (on
 * false, drop) or kept (unmarked). */
void pstmt_map_closing_all(struct pstmt_map *m, bool on, bool drop);
void pstmt_map_clear(struct pstmt_map *m);

/* The statements a server holds, by content. Holds a reference to each. */
struct pstmt_slot {
	struct pstmt *p;
	uint64_t used;                      /* tick of its last use */
	uint64_t added;                     /* tick it was added at: names this Parse */
	bool confirmed;                     /* the server answered its Parse */
};

struct pstmt_cache {
	struct pstmt_slot *slots;           /* open addressing on p->hash */
	uint32_t cap;
	uint32_t n;
	uint64_t tick;
	size_t bytes;                       /* of the statements' bodies */
};

/* Whether the server holds p's statement (under p->sname), or will once
 * the Parse on its way is done; a hit counts as a use. */
bool pstmt_cache_has(struct pstmt_cache *c, const struct pstmt *p);
/* The same, only once the server said ParseComplete for it. */
bool pstmt_cache_confirmed(struct pstmt_cache *c, const struct pstmt *p);
/* The statement the server holds under p->sname, whatever its content, or
 * NULL. */
struct pstmt *pstmt_cache_named(const struct pstmt_cache *c, const struct pstmt *p);
/* The least recently used statement, to close before adding one to a full
 * cache; NULL if empty. */
struct pstmt *pstmt_cache_lru(const struct pstmt_cache *c);
/* Records that a Parse of p is on its way to the server (replacing
 * whatever was under its name). Its tick in *added, for
 * pstmt_cache_settle. 0 or -ENOMEM. */
int pstmt_cache_add(struct pstmt_cache *c, struct pstmt *p, uint64_t *added);
/* The Parse of tick added was answered: confirmed (ok), or forgotten. A
 * later Parse of the same name is left alone. */
void pstmt_cache_settle(struct pstmt_cache *c, const struct pstmt *p, uint64_t added, bool ok);
/* Forgets whatever the server holds under p->sname. */
void pstmt_cache_del(struct pstmt_cache *c, const struct pstmt *p);
void pstmt_cache_clear(struct pstmt_cache *c);

/*
 * The server's reply queue: one entry per message sent to it that gets a
 * reply, in order. An entry is a kind and flags:
 *   PSTMT_OURS   pgberth sent it: its reply is dropped (an error is not);
 *   PSTMT_SYNTH  not sent: pgberth gives the reply when its turn comes;
 *   PSTMT_REF    it carries a statement, in refs (same order): a Parse's,
 *                which the server's answer confirms in the cache or (an
 *                error, a skip) forgets, in the cache and, for the
 *                client's own, in its map; or a Close or DEALLOCATE
 *                pgberth answers, whose statement leaves the map when it is
 *                answered (it stays if the Close is skipped, or fails).
 */
enum {
	PSTMT_PARSE = 1,
	PSTMT_BIND,
	PSTMT_DESCRIBE_STMT,                /* ParameterDescription, then RowDescription or NoData */
	PSTMT_DESCRIBE_PORTAL,
	PSTMT_EXECUTE,
	PSTMT_CLOSE,
	PSTMT_SYNC,
	PSTMT_SIMPLE,                       /* Query or FunctionCall: up to ReadyForQuery */
	PSTMT_COPY_END,                     /* CopyDone or CopyFail: no reply, a mark */
	PSTMT_FENCE,                        /* pgberth's Sync, Close, Sync after a CopyDone */
	PSTMT_KIND = 0x0f,
	PSTMT_OURS = 0x10,
	PSTMT_SYNTH = 0x20,
	PSTMT_REF = 0x40,
	PSTMT_DROPS = 0x80,                 /* a SIMPLE DEALLOCATE ALL or DISCARD ALL */
};

/* At most this many replies owed by one server: a client that pipelines
 * more without reading is refused. */
#define PSTMT_QUEUE_MAX (1u << 20)

struct pstmt_ref {
	struct pstmt *p;
	uint64_t added;                     /* a Parse's tick in the cache */
};

struct pstmt_queue {
	uint8_t *ring;
	uint32_t cap, head, n;              /* cap a power of two */
	struct pstmt_ref *refs;             /* of PSTMT_REF entries */
	uint32_t rcap, rhead, rn;
	bool skipping;                      /* after an error: to the next Sync */
	uint8_t fence;                      /* of the FENCE at the head: replies of it seen */
	bool copy_end_sent;                 /* at the last CopyInResponse, its CopyDone was queued */
	uint32_t uncertain;                 /* Syncs of a COPY not counted (taken off at its
	                                       CopyInResponse, or sent in copy-in mode): a fence
	                                       must settle them; the caller resets it */
	bool simple_failed;                 /* the head, a Query, had an error */
	uint8_t last;                       /* kind of the last entry pushed */
	uint32_t runs;                      /* Executes and Queries queued: settings may change */
	uint32_t unanswered;                /* ReadyForQuery that will not come, for the caller
	                                       to take off what it counts (and reset): Queries
	                                       skipped after an error, Syncs ignored in copy-in */
};

/* Appends an entry; p (a reference is taken) and its cache tick with
 * PSTMT_REF. 0, -ENOMEM, or -E2BIG past PSTMT_QUEUE_MAX. */
int pstmt_queue_push(struct pstmt_queue *q, uint8_t entry, struct pstmt *p, uint64_t added);
static inline bool pstmt_queue_empty(const struct pstmt_queue *q) { return q->n == 0; }
/* Whether the next reply is pgberth's to give: then returns what it is
 * and the entry is done; else 0. '1' ParseComplete, '3' CloseComplete;
 * for a DEALLOCATE pgberth answers (a SIMPLE entry), 'Q' for its
 * CommandComplete and ReadyForQuery, or 'q' for the error of a failed
 * transaction (txstatus, that of the server's last ReadyForQuery, is 'E':
 * its statement goes back in the map). Entries skipped after an error go
 * first (forgetting their statements in cache and map; map may be NULL). */
char pstmt_queue_synth(struct pstmt_queue *q, struct pstmt_cache *cache, struct pstmt_map *map,
                       char txstatus);

enum pstmt_reply {
	PSTMT_RELAY,                        /* send it on to the client */
	PSTMT_DROP,                         /* a reply to pgberth's own message */
	PSTMT_EXTRA,                        /* send it on: a ReadyForQuery not counted as owed
	                                       (a Sync the server might have ignored) */
};
/*
 * A message of type t from the server, walked against the queue. Call once
 * per message, after pstmt_queue_synth returned 0. next is the type of the
 * message after it, or 0 if not read yet: pstmt_queue_needs_next says when
 * it is needed.
 *
 * COPY FROM STDIN: the server ignores a Sync it reads in copy-in mode, and
 * when it leaves that mode (at an error, or at CopyDone) depends on how far
 * it had read. So which of the Syncs sent between the COPY and its
 * CopyDone get a ReadyForQuery cannot be known; they are not counted (the
 * CopyInResponse takes them off), and pgberth puts a fence after the
 * CopyDone: Sync, Close of a statement that does not exist, Sync. Every
 * ReadyForQuery before the one followed by the fence's CloseComplete is
 * the client's (PSTMT_EXTRA); the fence's three replies are dropped.
 */
enum pstmt_reply pstmt_queue_reply(struct pstmt_queue *q, char t, char next,
                                   struct pstmt_cache *cache, struct pstmt_map *map);
bool pstmt_queue_needs_next(const struct pstmt_queue *q, char t);
void pstmt_queue_clear(struct pstmt_queue *q);

#endif
