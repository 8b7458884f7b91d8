/*
 * Listener. Owns the listening Unix socket and the lock file beside it
 * (<socket>.lock, holding our pid, under flock), on the main loop.
 *
 * Start-up order, as PostgreSQL does it: a socket something still answers
 * on belongs to a live server, and we refuse to start; otherwise the lock
 * file is taken (flock, so a crashed daemon's lock is free again), a stale
 * socket file is removed and ours is bound. On exit both files go.
 *
 * Accepting is the workers' (worker.c): each gets its own dup of the
 * listening fd and polls it on its loop (with accept_spread churn, the
 * workers after the first only while clients come and go quickly), so a new
 * connection is read by the thread that serves it, with no hop through the
 * main loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "config.h"
#include "listener.h"
#include "log.h"
#include "runtime.h"
#include "worker.h"

#define ACCEPT_BACKOFF_MS 100
#define LISTEN_BACKLOG 4096

static bool socket_is_live(const char *path)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool live;

	if (fd < 0)
		return false;
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
	live = connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0 || errno == EAGAIN;
	close(fd);
	return live;
}

static int listener_lock(struct listener *l)
{
	char pid[32] = "";

	l->lock_fd = open(l->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (l->lock_fd < 0) {
		log_error("cannot open lock file \"%s\": %s", l->lock_path, strerror(errno));
		return -1;
	}
	if (flock(l->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		ssize_t n = read(l->lock_fd, pid, sizeof(pid) - 1);
		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		log_error("lock file \"%s\" is held by another pgberth (pid %s): is it already running?",
		          l->lock_path, pid[0] ? pid : "unknown");
		close(l->lock_fd);
		l->lock_fd = -1;
		return -1;
	}
	int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(l->lock_fd, 0) < 0 || pwrite(l->lock_fd, pid, (size_t)n, 0) != n)
		log_warn("cannot write lock file \"%s\": %s", l->lock_path, strerror(errno));
	return 0;
}

static void listener_unlock(struct listener *l)
{
	if (l->lock_fd >= 0) {
		unlink(l->lock_path);
		close(l->lock_fd);
		l->lock_fd = -1;
	}
}

/* LISTEN_FDS: systemd passed the listening socket. Returns 1 when it did
 * and l now holds it, 0 when it did not, -1 when what it passed is unusable. */
static int listener_adopt(struct listener *l)
{
	int n = sd_listen_fds(1);

	if (n == 0)
		return 0;
	if (n < 0) {
		log_error("LISTEN_FDS: %s", strerror(-n));
		return -1;
	}
	if (n != 1) {
		log_error("LISTEN_FDS: systemd passed %d sockets; pgberth takes exactly one", n);
		for (int i = 0; i < n; i++)
			close(SD_LISTEN_FDS_START + i);
		return -1;
	}
	int fd = SD_LISTEN_FDS_START;
	if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0) {
		log_error("LISTEN_FDS: fd %d is not a listening Unix stream socket", fd);
		close(fd);
		return -1;
	}
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
		log_error("LISTEN_FDS: fd %d: %s", fd, strerror(errno));
		close(fd);
		return -1;
	}
	struct sockaddr_un addr;
	socklen_t len = sizeof(addr);
	memset(&addr, 0, sizeof(addr));
	if (getsockname(fd, (struct sockaddr *)&addr, &len) == 0 && addr.sun_path[0] != '\0' &&
	    strcmp(addr.sun_path, l->path) != 0)
		log_warn("the socket from systemd is \"%s\", not \"%s\" as listen.socket_dir and "
		         "listen.port say; clients must use the socket's", addr.sun_path, l->path);
	l->fd = fd;
	l->activated = true;
	l->open = true;
	return 1;
}

int listener_open(struct listener *l, uv_loop_t *loop, struct runtime *rt,
                  const struct config *cfg)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};

	l->rt = rt;
	l->fd = -1;
	l->lock_fd = -1;
	if ((size_t)snprintf(l->path, sizeof(l->path), "%s/.s.PGSQL.%d", cfg->socket_dir, cfg->port)
	    >= sizeof(l->path)) {
		log_error("socket path \"%s/.s.PGSQL.%d\" is too long", cfg->socket_dir, cfg->port);
		return -1;
	}
	int adopted = listener_adopt(l);
	if (adopted != 0)
		return adopted < 0 ? -1 : 0;
	snprintf(l->lock_path, sizeof(l->lock_path), "%s.lock", l->path);
	if (socket_is_live(l->path)) {
		log_error("another server is already listening on \"%s\"", l->path);
		return -1;
	}
	if (listener_lock(l) < 0)
		return -1;
	if (unlink(l->path) == 0)
		log_info("removed stale socket file \"%s\"", l->path);

	l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (l->fd < 0) {
		log_error("socket: %s", strerror(errno));
		goto err;
	}
	memcpy(addr.sun_path, l->path, strlen(l->path) + 1);
	if (bind(l->fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		log_error("cannot bind \"%s\": %s", l->path, strerror(errno));
		goto err;
	}
	if (chmod(l->path, cfg->socket_mode) < 0) {
		log_error("cannot chmod \"%s\": %s", l->path, strerror(errno));
		goto err_unlink;
	}
	if (listen(l->fd, LISTEN_BACKLOG) < 0) {
		log_error("listen on \"%s\": %s", l->path, strerror(errno));
		goto err_unlink;
	}
	(void)loop;
	l->open = true;
	return 0;

err_unlink:
	unlink(l->path);
err:
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
	listener_unlock(l);
	return -1;
}

void listener_start(struct listener *l)
{
	struct runtime *rt = l->rt;

	/* The first worker handed the socket is the one that always accepts
	 * (worker.c, worker_accepts), named before it can look. */
	for (int i = 0; i < rt->nworkers; i++) {
		struct msg *m = msg_new(MSG_LISTEN);
		int fd = fcntl(l->fd, F_DUPFD_CLOEXEC, 0);
		if (m == NULL || fd < 0) {
			log_error("w%d: cannot hand it the listening socket: %s", i,
			          m ? strerror(errno) : "out of memory");
			free(m);
			continue;
		}
		m->fd = fd;
		int none = 0;
		atomic_compare_exchange_strong(&rt->acceptor, &none, i + 1);
		if (worker_post(&rt->workers[i], m) < 0) {
			int me = i + 1;
			atomic_compare_exchange_strong(&rt->acceptor, &me, 0);
			close(fd);
			free(m);
		}
	}
}

void listener_close(struct listener *l)
{
	if (!l->open)
		return;
	l->open = false;
	if (!l->activated) {
		unlink(l->path);
		listener_unlock(l);
	}
	close(l->fd);
	l->fd = -1;
	log_info("stopped listening on \"%s\"%s", l->path,
	         l->activated ? " (the socket stays with systemd)" : "");
}
