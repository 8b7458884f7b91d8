/*
 * The daemon's life on the main thread: start the workers and the listener,
 * run the main loop (signals, listener), and stop with a bounded join.
 */
#ifndef PGBERTH_LIFECYCLE_H
#define PGBERTH_LIFECYCLE_H

struct config;

/* Runs the daemon until a stop signal; takes over the reference to cfg,
 * which was read from path (read again on SIGHUP). Returns the process
 * exit status. */
int lifecycle_run(struct config *cfg, const char *path);

#endif
