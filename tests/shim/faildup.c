/*
 * LD_PRELOAD shim for check_e2e_pool: the process's first
 * fcntl(F_DUPFD_CLOEXEC) fails with EMFILE, as if it were out of fds. In
 * pgberth that is the dup of the listening socket for worker 0.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>

int fcntl(int fd, int cmd, ...);

static atomic_int dups;

int fcntl(int fd, int cmd, ...)
{
	static int (*real)(int, int, ...);
	va_list ap;
	long arg;

	va_start(ap, cmd);
	arg = va_arg(ap, long);
	va_end(ap);
	if (real == NULL)
		real = (int (*)(int, int, ...))dlsym(RTLD_NEXT, "fcntl");
	if (cmd == F_DUPFD_CLOEXEC && atomic_fetch_add(&dups, 1) == 0) {
		errno = EMFILE;
		return -1;
	}
	return real(fd, cmd, arg);
}
