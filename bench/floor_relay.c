/*
 * floor_relay: the least work a transaction pooler in front of PostgreSQL
 * must do, as a yardstick for scripts/bench.sh. It is a pooler stripped to
 * the bone, correct only for what pgbench sends:
 *  - at start it logs POOL_SIZE connections in to PostgreSQL (trust
 *    authentication) and keeps the first login's reply;
 *  - a client's startup packet is answered with that reply, unread;
 *  - a client's bytes go to a free server, or wait (FIFO) for one; a
 *    server's bytes are read straight into its client's output, and the
 *    server is free again as soon as what it sent ends with ReadyForQuery
 *    'I'; the outputs filled in one pass over the ready sockets are
 *    written at the end of that pass, one write each;
 *  - a Terminate closes the client.
 * One thread, one epoll loop, one recv() and one send() per chunk (the
 * socket calls: cheaper than read() and write(), which go through the VFS
 * layer first), no copy, no allocation but one buffer per client at
 * accept. Whatever CPU it spends per transaction is about what the kernel
 * alone charges for accepting a client, moving a query and its answer
 * through a pooler and closing; a real pooler cannot spend much less. It
 * checks nothing else and is no pooler to use: no cancel, no errors to
 * clients, no limits, no transactions spanning several queries, no drain
 * (SIGTERM or SIGINT ends it at once).
 *
 * Usage: floor_relay LISTEN_SOCKET SERVER_SOCKET POOL_SIZE DBNAME USER
 * Prints "READY" on stdout once it listens.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define CHUNK 32768
#define MAX_EVENTS 256
#define LOGIN_MAX 4096

enum kind { LISTENER, CLIENT, SERVER };
enum cstate { STARTUP, IDLE, WAITING, ACTIVE };

struct conn {
	enum kind kind;
	enum cstate state;      /* clients */
	int fd;
	bool dead;              /* closed in this batch of events, freed after it */
	struct conn *peer;      /* the client's server, the server's client */
	struct conn *next;      /* free servers; waiting clients; the dead */
	uint8_t tail[6];        /* servers: the last bytes sent, to spot 'Z' */
	size_t len;             /* clients: bytes held in buf */
	size_t outlen;          /* clients: bytes for it in buf + CHUNK */
	bool queued;            /* clients: on the flush list */
	uint8_t buf[];          /* clients only: CHUNK of input, then CHUNK of output */
};

static volatile sig_atomic_t stop;
static uint8_t login_reply[LOGIN_MAX];
static size_t login_len;
static struct conn *free_servers;
static struct conn *wait_head, *wait_tail;
static struct conn *graveyard;
static uint8_t chunk[CHUNK];         /* what servers send to clients gone */
static struct conn **flushes;        /* clients with output, this pass */
static size_t nflushes, maxflushes;
static int ep;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static void die(const char *what)
{
	fprintf(stderr, "floor_relay: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int unix_addr(const char *path, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa->sun_path))
		return -1;
	strcpy(sa->sun_path, path);
	return 0;
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Logs one server in, blocking; returns its fd, non-blocking from then on.
 * The first login's reply (from AuthenticationOk through ReadyForQuery)
 * is kept for the clients. */
static int server_login(const struct sockaddr_un *sa, const char *db, const char *user)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0)
		die("connect to the server");
	uint8_t pkt[512];
	size_t n = 8;
	n += (size_t)snprintf((char *)pkt + n, sizeof(pkt) - n, "user%c%s%cdatabase%c%s%c", 0, user, 0, 0, db, 0);
	if (n + 1 > sizeof(pkt))
		die("startup packet");
	pkt[n++] = 0;
	put32(pkt, (uint32_t)n);
	put32(pkt + 4, 196608);     /* protocol 3.0 */
	if (write(fd, pkt, n) != (ssize_t)n)
		die("write the startup packet");
	uint8_t reply[LOGIN_MAX];
	size_t got = 0;
	for (;;) {
		ssize_t r = read(fd, reply + got, sizeof(reply) - got);
		if (r <= 0)
			die("read the login reply");
		got += (size_t)r;
		if (reply[0] == 'E') {
			errno = EACCES;
			die("the server refused the login");
		}
		if (got >= 6 && reply[got - 6] == 'Z' && get32(reply + got - 5) == 5)
			break;
		if (got == sizeof(reply)) {
			errno = EMSGSIZE;
			die("login reply");
		}
	}
	if (login_len == 0) {
		memcpy(login_reply, reply, got);
		login_len = got;
	}
	if (fcntl(fd, F_SETFL, O_NONBLOCK) < 0)
		die("fcntl");
	return fd;
}

static void watch(struct conn *c)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
	if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
		die("epoll_ctl");
}

/* All or nothing: the answers and queries pgbench moves are small. */
static bool send_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		p += w;
		n -= (size_t)w;
	}
	return true;
}

static void bury(struct conn *c)
{
	c->dead = true;
	close(c->fd);
	c->next = graveyard;
	graveyard = c;
}

static void client_close(struct conn *c)
{
	if (c->state == WAITING) {
		struct conn **pp = &wait_head, *prev = NULL;
		while (*pp != c) {
			prev = *pp;
			pp = &(*pp)->next;
		}
		*pp = c->next;
		if (wait_tail == c)
			wait_tail = prev;
	}
	if (c->peer != NULL)
		c->peer->peer = NULL;   /* the server finishes the answer for nobody */
	bury(c);
}

/* Sends a client's query to server s. */
static void bind_pair(struct conn *c, struct conn *s)
{
	c->peer = s;
	s->peer = c;
	c->state = ACTIVE;
	memset(s->tail, 0, sizeof(s->tail));
	bool ok = send_all(s->fd, c->buf, c->len);
	c->len = 0;
	if (!ok) {
		fprintf(stderr, "floor_relay: a server went away\n");
		exit(1);
	}
}

static void server_free(struct conn *s)
{
	s->peer = NULL;
	if (wait_head != NULL) {
		struct conn *c = wait_head;
		wait_head = c->next;
		if (wait_head == NULL)
			wait_tail = NULL;
		bind_pair(c, s);
		return;
	}
	s->next = free_servers;
	free_servers = s;
}

static void client_dispatch(struct conn *c);

static void on_client(struct conn *c)
{
	if (c->len == CHUNK) {
		client_close(c);    /* more than pgbench ever sends */
		return;
	}
	ssize_t n = recv(c->fd, c->buf + c->len, CHUNK - c->len, 0);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		client_close(c);
		return;
	}
	c->len += (size_t)n;
	if (c->state == STARTUP) {
		if (c->len < 4 || c->len < get32(c->buf))
			return;
		c->len = 0;
		c->state = IDLE;
		if (!send_all(c->fd, login_reply, login_len))
			client_close(c);
		return;
	}
	if (c->state == ACTIVE) {
		/* More of what its server is working on. */
		bool ok = send_all(c->peer->fd, c->buf, c->len);
		c->len = 0;
		if (!ok)
			client_close(c);
		return;
	}
	client_dispatch(c);
}

/* An idle client with bytes: a Terminate, or a query for a server. */
static void client_dispatch(struct conn *c)
{
	if (c->state != IDLE || c->len == 0)
		return;
	if (c->buf[0] == 'X') {
		client_close(c);
		return;
	}
	if (free_servers != NULL) {
		struct conn *s = free_servers;
		free_servers = s->next;
		bind_pair(c, s);
		return;
	}
	c->state = WAITING;
	c->next = NULL;
	if (wait_tail != NULL)
		wait_tail->next = c;
	else
		wait_head = c;
	wait_tail = c;
}

static void client_write_out(struct conn *c)
{
	bool ok = send_all(c->fd, c->buf + CHUNK, c->outlen);
	c->outlen = 0;
	if (!ok)
		client_close(c);
}

static void on_server(struct conn *s)
{
	struct conn *c = s->peer;
	uint8_t *p = chunk;
	size_t room = CHUNK;
	if (c != NULL) {
		if (c->outlen == CHUNK)
			client_write_out(c);    /* a big answer: no more room */
		if (!c->dead) {
			p = c->buf + CHUNK + c->outlen;
			room = CHUNK - c->outlen;
		}
	}
	ssize_t n = recv(s->fd, p, room, 0);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		fprintf(stderr, "floor_relay: a server went away\n");
		exit(1);
	}
	c = s->peer;
	if (c != NULL && !c->dead) {
		c->outlen += (size_t)n;
		if (!c->queued) {
			if (nflushes == maxflushes) {
				maxflushes = maxflushes ? 2 * maxflushes : 1024;
				flushes = realloc(flushes, maxflushes * sizeof(*flushes));
				if (flushes == NULL)
					die("realloc");
			}
			c->queued = true;
			flushes[nflushes++] = c;
		}
	}
	/* The last six bytes read: ReadyForQuery 'I' ends the transaction. */
	size_t k = (size_t)n;
	if (k >= sizeof(s->tail)) {
		memcpy(s->tail, p + k - sizeof(s->tail), sizeof(s->tail));
	} else {
		memmove(s->tail, s->tail + k, sizeof(s->tail) - k);
		memcpy(s->tail + sizeof(s->tail) - k, p, k);
	}
	if (s->tail[0] == 'Z' && get32(s->tail + 1) == 5 && s->tail[5] == 'I') {
		c = s->peer;
		if (c != NULL)
			c->peer = NULL;
		server_free(s);
		if (c != NULL) {
			c->state = IDLE;
			client_dispatch(c);
		}
	}
}

static void on_accept(int lfd)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		struct conn *c = calloc(1, sizeof(*c) + 2 * CHUNK);
		if (c == NULL) {
			close(fd);
			continue;
		}
		c->kind = CLIENT;
		c->state = STARTUP;
		c->fd = fd;
		watch(c);
		on_client(c);   /* the startup packet is usually there already */
	}
}

int main(int argc, char **argv)
{
	struct sockaddr_un listen_at, server;
	long pool = argc == 6 ? strtol(argv[3], NULL, 10) : 0;

	if (argc != 6 || pool < 1 || pool > 10000 || unix_addr(argv[1], &listen_at) < 0 ||
	    unix_addr(argv[2], &server) < 0) {
		fprintf(stderr, "usage: floor_relay LISTEN_SOCKET SERVER_SOCKET POOL_SIZE DBNAME USER\n");
		return 2;
	}
	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		die("epoll_create1");
	for (long i = 0; i < pool; i++) {
		struct conn *s = calloc(1, sizeof(*s));
		if (s == NULL)
			die("calloc");
		s->kind = SERVER;
		s->fd = server_login(&server, argv[4], argv[5]);
		watch(s);
		server_free(s);
	}
	struct conn listener = { .kind = LISTENER };
	listener.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	unlink(argv[1]);
	if (listener.fd < 0 || bind(listener.fd, (const struct sockaddr *)&listen_at, sizeof(listen_at)) < 0 ||
	    listen(listener.fd, 4096) < 0)
		die("listen");
	watch(&listener);
	printf("READY\n");
	fflush(stdout);

	struct epoll_event evs[MAX_EVENTS];
	while (!stop) {
		int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			if (c->dead)
				continue;
			if (c->kind == LISTENER)
				on_accept(c->fd);
			else if (c->kind == CLIENT)
				on_client(c);
			else
				on_server(c);
		}
		/* The answers of this pass, back to back. */
		for (size_t i = 0; i < nflushes; i++) {
			struct conn *c = flushes[i];
			c->queued = false;
			if (!c->dead && c->outlen > 0)
				client_write_out(c);
		}
		nflushes = 0;
		while (graveyard != NULL) {
			struct conn *c = graveyard;
			graveyard = c->next;
			free(c);
		}
	}
	unlink(argv[1]);
	return 0;
}
