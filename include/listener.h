/*
 * The listening socket <socket_dir>/.s.PGSQL.<port> and its lock file, on
 * the main loop. Accepted connections are handed to workers round-robin as
 * raw fds. Owns the listening fd, the lock fd and both file names.
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
	uv_poll_t poll;             /* readable = connections to accept */
	uv_timer_t backoff;         /* pauses accepting after EMFILE */
	int fd;                     /* listening socket, -1 when closed */
	int lock_fd;                /* holds flock on lock_path, -1 when closed */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char lock_path[sizeof(((struct sockaddr_un *)0)->sun_path) + 8];
	unsigned next_worker;
	bool open;
};

/* Takes the lock file, replaces a stale socket and listens. Refuses (-1,
 * logged) when a live server holds the socket. Does not accept yet. */
int listener_open(struct listener *l, uv_loop_t *loop, struct runtime *rt,
                  const struct config *cfg);
/* Starts accepting and handing connections to workers. */
void listener_start(struct listener *l);
/* Stops accepting; removes the socket and lock files. Safe to call twice. */
void listener_close(struct listener *l);

#endif
