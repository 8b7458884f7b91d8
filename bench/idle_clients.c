/*
 * idle_clients: holds many idle client connections open on a pooler, so that
 * scripts/bench.sh can read the pooler's memory per idle client, then checks
 * that every one of them is still served.
 *
 * Three phases, one thread, one poll() over all sockets:
 *  1. connect: open N connections with PQconnectStartParams/PQconnectPoll,
 *     at most -P handshakes in flight at once (a burst of 10,000 connects
 *     would overflow a listen backlog, and libpq then mistakes a refused
 *     non-blocking connect on a Unix socket for one in progress);
 *  2. wait: print "READY" and block until a line (or EOF) on stdin, while
 *     the caller measures the pooler;
 *  3. query: PQsendQuery("SELECT 1") on every connection at once and count
 *     the connections that got back exactly one row holding 1.
 * Each active phase is bounded by -t seconds. The connections are closed
 * at the end, whatever happened.
 *
 * Output, one line per phase on stdout (bench.sh parses the key=value pairs):
 *   idle_clients: connected=N requested=N failed=0 seconds=1.234
 *   READY
 *   idle_clients: served=N requested=N failed=0 seconds=0.123
 * The first few distinct error messages go to stderr.
 *
 * Exit status: 0 when all N connections were made and all N were served,
 * 1 otherwise, 2 on a usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#define MAX_ERRORS_SHOWN 5

enum conn_state {
	CONN_IDLE,        /* not started yet */
	CONN_CONNECTING,  /* handshake in flight; polled */
	CONN_READY,       /* logged in, idle */
	CONN_QUERYING,    /* SELECT 1 sent; polled until its results are read */
	CONN_DONE,        /* served; nothing more to do */
	CONN_FAILED,      /* failed in some phase; PQfinish still owed */
};

struct conn {
	PGconn *pg;             /* owned; PQfinish at exit */
	enum conn_state state;
	short events;           /* what PQconnectPoll/PQflush last asked for */
	bool got_one;           /* the query returned the single row "1" */
};

struct options {
	const char *host;
	const char *port;
	const char *dbname;
	const char *user;
	int n;
	int pending_max;
	double timeout_s;
};

static int errors_shown;
static char last_error[256];

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Reports an error message, skipping repeats and all after the first few. */
static void report_error(const char *phase, const char *msg)
{
	char line[sizeof(last_error)];
	size_t len;

	snprintf(line, sizeof(line), "%s", msg != NULL ? msg : "(no message)");
	len = strlen(line);
	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == ' '))
		line[--len] = '\0';
	if (strcmp(line, last_error) == 0 || errors_shown >= MAX_ERRORS_SHOWN)
		return;
	snprintf(last_error, sizeof(last_error), "%s", line);
	errors_shown++;
	fprintf(stderr, "idle_clients: %s: %s\n", phase, line);
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: idle_clients [-h SOCKET_DIR] [-p PORT] [-d DBNAME] [-U USER]\n"
		"                    [-n CONNECTIONS] [-P MAX_PENDING] [-t SECONDS]\n"
		"Opens CONNECTIONS (default 10000) idle connections, prints READY, waits\n"
		"for a line on stdin, then runs SELECT 1 on each. At most MAX_PENDING\n"
		"(default 100) logins are in flight at once; each phase is bounded by\n"
		"SECONDS (default 120). Unset options fall back to libpq's PG* variables.\n");
}

static bool parse_int(const char *s, int lo, int hi, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
		return false;
	*out = (int)v;
	return true;
}

static int parse_options(int argc, char **argv, struct options *o)
{
	int c, secs;

	*o = (struct options){.n = 10000, .pending_max = 100, .timeout_s = 120};
	while ((c = getopt(argc, argv, "h:p:d:U:n:P:t:")) != -1) {
		switch (c) {
		case 'h': o->host = optarg; break;
		case 'p': o->port = optarg; break;
		case 'd': o->dbname = optarg; break;
		case 'U': o->user = optarg; break;
		case 'n':
			if (!parse_int(optarg, 1, 1000000, &o->n))
				goto bad;
			break;
		case 'P':
			if (!parse_int(optarg, 1, 100000, &o->pending_max))
				goto bad;
			break;
		case 't':
			if (!parse_int(optarg, 1, 86400, &secs))
				goto bad;
			o->timeout_s = secs;
			break;
		default:
			usage(stderr);
			return -1;
		}
	}
	if (optind != argc)
		goto bad;
	return 0;
bad:
	usage(stderr);
	return -1;
}

/*
 * Raises the soft fd limit to the hard one, and checks that the
 * connections fit: one fd each, plus stdio and a margin.
 */
static bool fds_suffice(int n)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return true;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
		(void)getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)n + 16) {
		fprintf(stderr, "idle_clients: %d connections need about %d fds, "
			"but the limit is %llu (raise ulimit -n)\n",
			n, n + 16, (unsigned long long)rl.rlim_cur);
		return false;
	}
	return true;
}

static void conn_fail(struct conn *c, const char *phase)
{
	report_error(phase, PQerrorMessage(c->pg));
	c->state = CONN_FAILED;
}

static void conn_start(struct conn *c, const struct options *o)
{
	const char *keys[] = {"host", "port", "dbname", "user",
		"application_name", NULL};
	const char *vals[] = {o->host, o->port, o->dbname, o->user,
		"idle_clients", NULL};

	c->pg = PQconnectStartParams(keys, vals, 0);
	if (c->pg == NULL) {
		report_error("connect", "out of memory");
		c->state = CONN_FAILED;
		return;
	}
	if (PQstatus(c->pg) == CONNECTION_BAD) {
		conn_fail(c, "connect");
		return;
	}
	/* Until the first PQconnectPoll, act as if it had said "writing". */
	c->state = CONN_CONNECTING;
	c->events = POLLOUT;
}

static void conn_advance(struct conn *c)
{
	switch (PQconnectPoll(c->pg)) {
	case PGRES_POLLING_OK:
		c->state = CONN_READY;
		break;
	case PGRES_POLLING_READING:
		c->events = POLLIN;
		break;
	case PGRES_POLLING_WRITING:
		c->events = POLLOUT;
		break;
	case PGRES_POLLING_FAILED:
	default:
		conn_fail(c, "connect");
		break;
	}
}

/*
 * Polls, for at most a second, every connection in state `active` for what
 * it last asked for. Returns how many it polled (fds[i] belongs to
 * conns[idx[i]]; a zero revents means not ready), or -1 if poll() failed.
 */
static int poll_active(struct conn *conns, int n, enum conn_state active,
	struct pollfd *fds, int *idx, double deadline)
{
	int nfds = 0, ms, rc;

	for (int i = 0; i < n; i++) {
		if (conns[i].state != active)
			continue;
		fds[nfds] = (struct pollfd){.fd = PQsocket(conns[i].pg),
			.events = conns[i].events};
		idx[nfds++] = i;
	}
	ms = (int)((deadline - now_s()) * 1000);
	if (ms < 0)
		ms = 0;
	if (ms > 1000)
		ms = 1000;
	rc = poll(fds, (nfds_t)nfds, ms);
	if (rc < 0 && errno != EINTR) {
		perror("idle_clients: poll");
		return -1;
	}
	return nfds;
}

static int count_state(const struct conn *conns, int n, enum conn_state s)
{
	int k = 0;

	for (int i = 0; i < n; i++)
		k += conns[i].state == s;
	return k;
}

/* Phase 1. Returns the number of connections logged in. */
static int connect_all(struct conn *conns, const struct options *o,
	struct pollfd *fds, int *idx)
{
	double deadline = now_s() + o->timeout_s;
	int next = 0, pending = 0, nfds;

	for (;;) {
		while (pending < o->pending_max && next < o->n) {
			conn_start(&conns[next], o);
			pending += conns[next].state == CONN_CONNECTING;
			next++;
		}
		if (pending == 0 && next == o->n)
			break;
		if (now_s() >= deadline) {
			report_error("connect", "timed out; giving up on the logins in flight");
			break;
		}
		nfds = poll_active(conns, next, CONN_CONNECTING, fds, idx, deadline);
		if (nfds < 0)
			break;
		for (int i = 0; i < nfds; i++) {
			struct conn *c = &conns[idx[i]];

			if (fds[i].revents == 0)
				continue;
			conn_advance(c);
			if (c->state != CONN_CONNECTING)
				pending--;
		}
	}
	for (int i = 0; i < o->n; i++)
		if (conns[i].state == CONN_CONNECTING || conns[i].state == CONN_IDLE)
			conns[i].state = CONN_FAILED;
	return count_state(conns, o->n, CONN_READY);
}

/* Reads what has arrived; moves the connection on once its results end. */
static void query_read(struct conn *c)
{
	PGresult *res;

	if (!PQconsumeInput(c->pg)) {
		conn_fail(c, "query");
		return;
	}
	while (!PQisBusy(c->pg)) {
		res = PQgetResult(c->pg);
		if (res == NULL) {
			c->state = c->got_one ? CONN_DONE : CONN_FAILED;
			return;
		}
		if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
			strcmp(PQgetvalue(res, 0, 0), "1") == 0)
			c->got_one = true;
		else
			report_error("query", PQresultErrorMessage(res));
		PQclear(res);
	}
}

static void query_flush(struct conn *c)
{
	int rc = PQflush(c->pg);

	if (rc < 0)
		conn_fail(c, "query");
	else
		c->events = rc == 1 ? POLLIN | POLLOUT : POLLIN;
}

/* Phase 3. Returns the number of connections served. */
static int query_all(struct conn *conns, const struct options *o,
	struct pollfd *fds, int *idx)
{
	double deadline = now_s() + o->timeout_s;
	int nfds;

	for (int i = 0; i < o->n; i++) {
		struct conn *c = &conns[i];

		if (c->state != CONN_READY)
			continue;
		if (PQsetnonblocking(c->pg, 1) != 0 || !PQsendQuery(c->pg, "SELECT 1")) {
			conn_fail(c, "query");
			continue;
		}
		c->state = CONN_QUERYING;
		query_flush(c);
	}
	while (count_state(conns, o->n, CONN_QUERYING) > 0) {
		if (now_s() >= deadline) {
			report_error("query", "timed out waiting for results");
			break;
		}
		nfds = poll_active(conns, o->n, CONN_QUERYING, fds, idx, deadline);
		if (nfds < 0)
			break;
		for (int i = 0; i < nfds; i++) {
			struct conn *c = &conns[idx[i]];

			if (fds[i].revents & POLLOUT)
				query_flush(c);
			if (c->state == CONN_QUERYING &&
				(fds[i].revents & (POLLIN | POLLERR | POLLHUP)))
				query_read(c);
		}
	}
	return count_state(conns, o->n, CONN_DONE);
}

/* Phase 2: a line, or EOF, on stdin releases us. */
static void wait_for_go(void)
{
	char ch;
	ssize_t r;

	printf("READY\n");
	fflush(stdout);
	do
		r = read(STDIN_FILENO, &ch, 1);
	while ((r == 1 && ch != '\n') || (r < 0 && errno == EINTR));
}

int main(int argc, char **argv)
{
	struct options o;
	struct conn *conns;
	struct pollfd *fds;
	int *idx, connected, served = 0;
	double t0;

	if (parse_options(argc, argv, &o) != 0)
		return 2;
	if (!fds_suffice(o.n))
		return 1;
	conns = calloc((size_t)o.n, sizeof(*conns));
	fds = calloc((size_t)o.n, sizeof(*fds));
	idx = calloc((size_t)o.n, sizeof(*idx));
	if (conns == NULL || fds == NULL || idx == NULL) {
		fprintf(stderr, "idle_clients: out of memory\n");
		return 1;
	}

	t0 = now_s();
	connected = connect_all(conns, &o, fds, idx);
	printf("idle_clients: connected=%d requested=%d failed=%d seconds=%.3f\n",
		connected, o.n, o.n - connected, now_s() - t0);
	fflush(stdout);

	if (connected > 0) {
		wait_for_go();
		t0 = now_s();
		served = query_all(conns, &o, fds, idx);
		printf("idle_clients: served=%d requested=%d failed=%d seconds=%.3f\n",
			served, o.n, o.n - served, now_s() - t0);
		fflush(stdout);
	}

	for (int i = 0; i < o.n; i++)
		if (conns[i].pg != NULL)
			PQfinish(conns[i].pg);
	free(idx);
	free(fds);
	free(conns);
	return served == o.n ? 0 : 1;
}
