/*
 * The listening socket <socket_dir>/.s.PGSQL.<port> and its lock file, on
 * the main thread. Each worker accepts on a dup of the listening fd. Owns
 * the listening fd, the lock fd and both file names. Under socket
 * activation (LISTEN_FDS) the socket is systemd's: pgberth neither locks
 * nor removes it, and connections wait in it while pgberth restarts.
 */
#ifndef PGBERTH_LISTENER_H
#define PGBERTH_LISTENER_H

#include <stdbool.h>
#include <sys/un.h>
#include <uv.h>

struct runtime;
struct config;

struct listener {
	struct runtime *rt;
	int fd;                     /* listening socket, -1 when closed */
	int lock_fd;                /* holds flock on lock_path, -1 when closed */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char lock_path[sizeof(((struct sockaddr_un *)0)->sun_path) + 8];
	bool open;
	bool activated;             /* the socket came from systemd (LISTEN_FDS) */
};

/* Takes the lock file, replaces a stale socket and listens. Refuses (-1,
 * logged) when a live server holds the socket. Does not accept yet. */
int listener_open(struct listener *l, uv_loop_t *loop, struct runtime *rt,
                  const struct config *cfg);
/* Gives every worker a dup of the listening fd to accept on. */
void listener_start(struct listener *l);
/* Removes the socket and lock files, so new clients fail at once, and
 * closes the main fd (workers close theirs at STOP). Safe to call twice. */
void listener_close(struct listener *l);

#endif
