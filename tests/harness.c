/*
 * End-to-end test harness. See harness.h for what it offers and for the
 * process and cleanup rules; this file holds the mechanics.
 *
 * State: the temporary root, the template data directory and the
 * PostgreSQL user's ids are set once by h_main() in the runner before any
 * test forks, and only read afterwards. The log registry (for h_dump_logs)
 * is per process and guarded by log_mtx, although only test threads that
 * start daemons touch it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define PG_TEST_USER   "pgberth-test"   /* runs PostgreSQL when we are root */
#define LOG_TAIL_LINES 60
#define MAX_LOGS       32

static char root_dir[H_PATH_MAX];       /* private temporary root */
static pid_t root_owner;                /* only this process removes root_dir */
static char template_dir[H_PATH_MAX];   /* template instance: data/, s/, logs */
static char template_data[H_PATH_MAX];
static bool as_root;                    /* euid 0: PostgreSQL runs as PG_TEST_USER */
static uid_t pg_uid;
static gid_t pg_gid;
static gid_t pg_groups[64];
static int pg_ngroups;

static pthread_mutex_t log_mtx = PTHREAD_MUTEX_INITIALIZER;
static char logs[MAX_LOGS][H_PATH_MAX]; /* logs to dump on failure */
static int nlogs;

struct h_pg h_shared_pg;

/* ---- small utilities ------------------------------------------------- */

int64_t h_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void h_sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static int ms_left(int64_t deadline)
{
	int64_t left = deadline - h_now_ms();

	if (left <= 0)
		return 0;
	return left > INT_MAX ? INT_MAX : (int)left;
}

/* Formats into a fresh heap string; aborts on allocation failure. */
static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		abort();
	va_end(ap);
	return s;
}

/* Growable string for building config files. */
struct sbuf {
	char *p;
	size_t len, cap;
};

static void sbuf_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;

		while (b->len + n + 1 > cap)
			cap *= 2;
		b->p = realloc(b->p, cap);
		if (!b->p)
			abort();
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void sbuf_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sbuf_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		abort();
	va_end(ap);
	sbuf_add(b, s, strlen(s));
	free(s);
}

/* Appends text with @PGHOST@ and @PGPORT@ replaced. */
static void sbuf_add_subst(struct sbuf *b, const char *text, const char *host, int port)
{
	char portstr[16];

	snprintf(portstr, sizeof(portstr), "%d", port);
	while (*text) {
		if (strncmp(text, "@PGHOST@", 8) == 0) {
			sbuf_add(b, host, strlen(host));
			text += 8;
		} else if (strncmp(text, "@PGPORT@", 8) == 0) {
			sbuf_add(b, portstr, strlen(portstr));
			text += 8;
		} else {
			sbuf_add(b, text, 1);
			text++;
		}
	}
	if (b->len && b->p[b->len - 1] != '\n')
		sbuf_add(b, "\n", 1);
}

/*
 * dst = a + b, for paths (dst holds H_PATH_MAX). Our paths are short; a
 * longer one is a harness bug, so abort rather than truncate.
 */
static void path_cat(char *dst, const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);

	if (la + lb + 1 > H_PATH_MAX)
		abort();
	memmove(dst, a, la);
	memcpy(dst + la, b, lb + 1);
}

char *h_read_file(const char *path)
{
	struct sbuf b = { 0 };
	char chunk[8192];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return NULL;
	sbuf_add(&b, "", 0);
	while ((n = read(fd, chunk, sizeof(chunk))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		sbuf_add(&b, chunk, (size_t)n);
	}
	close(fd);
	return b.p;
}

bool h_write_file(const char *path, const char *text)
{
	size_t len = strlen(text), off = 0;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0)
		return false;
	while (off < len) {
		ssize_t n = write(fd, text + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			close(fd);
			return false;
		}
		off += (size_t)n;
	}
	return close(fd) == 0;
}

bool h_path_exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

bool h_is_socket(const char *path, ino_t *ino)
{
	struct stat st;

	if (stat(path, &st) != 0 || !S_ISSOCK(st.st_mode))
		return false;
	if (ino)
		*ino = st.st_ino;
	return true;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

void h_rm_rf(const char *path)
{
	if (path && *path)
		nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Hands a directory we created to the PostgreSQL user (no-op unless root). */
static int chown_pg(const char *path)
{
	if (!as_root)
		return 0;
	return chown(path, pg_uid, pg_gid);
}

char *h_mkdtemp(const char *tag)
{
	char *path = xasprintf("%s/%s.XXXXXX", root_dir, tag);

	if (!mkdtemp(path) || chmod(path, 0711) != 0) {
		free(path);
		return NULL;
	}
	return path;
}

void h_describe_status(int status, char *buf, size_t len)
{
	if (status == -1)
		snprintf(buf, len, "unknown (not reaped)");
	else if (WIFEXITED(status))
		snprintf(buf, len, "exit status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status),
			 strsignal(WTERMSIG(status)));
	else
		snprintf(buf, len, "wait status 0x%x", status);
}

/* ---- logs ------------------------------------------------------------ */

static void log_register(const char *path)
{
	pthread_mutex_lock(&log_mtx);
	for (int i = 0; i < nlogs; i++) {
		if (strcmp(logs[i], path) == 0) {
			pthread_mutex_unlock(&log_mtx);
			return;
		}
	}
	if (nlogs == MAX_LOGS) {
		memmove(logs[0], logs[1], sizeof(logs[0]) * (MAX_LOGS - 1));
		nlogs--;
	}
	snprintf(logs[nlogs++], H_PATH_MAX, "%s", path);
	pthread_mutex_unlock(&log_mtx);
}

static void log_tail(const char *path, int lines)
{
	char *text = h_read_file(path);
	const char *start, *end;
	int seen = 0;

	if (!text)
		return;
	end = text + strlen(text);
	start = end;
	if (start > text && start[-1] == '\n')
		start--;
	while (start > text) {
		if (start[-1] == '\n' && ++seen == lines)
			break;
		start--;
	}
	fprintf(stderr, "---- last %d lines of %s ----\n%s%s---- end ----\n", lines, path,
		start, (end > text && end[-1] != '\n') ? "\n" : "");
	free(text);
}

static void log_unregister(const char *path)
{
	pthread_mutex_lock(&log_mtx);
	for (int i = 0; i < nlogs; i++) {
		if (strcmp(logs[i], path) == 0) {
			memmove(logs[i], logs[i + 1], sizeof(logs[0]) * (size_t)(nlogs - i - 1));
			nlogs--;
			break;
		}
	}
	pthread_mutex_unlock(&log_mtx);
}

void h_dump_logs(void)
{
	pthread_mutex_lock(&log_mtx);
	for (int i = 0; i < nlogs; i++)
		log_tail(logs[i], LOG_TAIL_LINES);
	pthread_mutex_unlock(&log_mtx);
	fflush(stderr);
}

/* ---- child processes ------------------------------------------------- */

/* Where the child writes its own pid into its environment (h_spawn_env). */
#define MAX_PID_SLOTS 8

struct child_env {
	char **envp;                   /* for execve; NULL: inherit (execv) */
	char *pid_slot[MAX_PID_SLOTS]; /* inside envp strings: the child's pid goes here */
	int npid;
	int listen_fd;                 /* becomes fd 3; -1: none */
};

/* Decimal pid into dst, NUL-terminated; async-signal-safe (no stdio). */
static void put_pid(char *dst, pid_t pid)
{
	char tmp[24];
	int n = 0;
	unsigned long v = (unsigned long)pid;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v && n < (int)sizeof(tmp));
	while (n > 0)
		*dst++ = tmp[--n];
	*dst = '\0';
}

/*
 * The body of h_spawn and h_spawn_env. With ce NULL the child inherits our
 * environment and keeps no fd above 2, exactly as h_spawn always did.
 */
static pid_t spawn_child(const char *const argv[], const char *out_path, bool as_pg_user,
			 const struct child_env *ce)
{
	pid_t parent = getpid();
	int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
	int out = open(out_path ? out_path : "/dev/null",
		       O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	pid_t pid;

	if (in < 0 || out < 0) {
		if (in >= 0)
			close(in);
		if (out >= 0)
			close(out);
		return -1;
	}
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid == 0) {
		/* Only async-signal-safe calls from here: the parent may have threads. */
		struct sigaction dfl;
		int keep = 3;

		if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
			_exit(126);
		if (ce && ce->listen_fd >= 0) {
			/* dup2 onto itself would keep FD_CLOEXEC. */
			if (ce->listen_fd == 3 ? fcntl(3, F_SETFD, 0) < 0 : dup2(ce->listen_fd, 3) < 0)
				_exit(126);
			keep = 4;
		}
		close_range((unsigned)keep, ~0U, 0);
		if (as_pg_user && as_root) {
			if (setgroups((size_t)pg_ngroups, pg_groups) != 0 ||
			    setgid(pg_gid) != 0 || setuid(pg_uid) != 0)
				_exit(126);
		}
		if (as_pg_user && chdir("/") != 0)
			_exit(126);
		/* Ignored signals survive exec; the tests ignore SIGPIPE. */
		memset(&dfl, 0, sizeof(dfl));
		dfl.sa_handler = SIG_DFL;
		sigaction(SIGPIPE, &dfl, NULL);
		/* After setuid, which clears it. Dies with the spawning thread. */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
			_exit(126);
		if (ce && ce->envp) {
			for (int i = 0; i < ce->npid; i++)
				put_pid(ce->pid_slot[i], getpid());
			execve(argv[0], (char *const *)argv, ce->envp);
		} else {
			execv(argv[0], (char *const *)argv);
		}
		_exit(127);
	}
	close(in);
	close(out);
	return pid;
}

pid_t h_spawn(const char *const argv[], const char *out_path, bool as_pg_user)
{
	return spawn_child(argv, out_path, as_pg_user, NULL);
}

/* Length of the KEY= part of a "KEY=VALUE" string (0 if it has no '='). */
static size_t env_key_len(const char *kv)
{
	const char *eq = strchr(kv, '=');

	return eq ? (size_t)(eq - kv) + 1 : 0;
}

/* True if kv's key is one of the keys in list (a NULL-terminated array). */
static bool env_has_key(const char *const list[], size_t nlist, const char *kv)
{
	size_t klen = env_key_len(kv);

	for (size_t i = 0; klen && i < nlist; i++) {
		if (strncmp(list[i], kv, klen) == 0)
			return true;
	}
	return false;
}

pid_t h_spawn_env(const char *const argv[], const char *out_path, const char *const env[],
		  int listen_fd)
{
	extern char **environ;
	const char *extra[64];
	size_t nextra = 0, ninherit = 0, n = 0;
	struct child_env ce = { .listen_fd = listen_fd };
	char *owned[64];
	size_t nowned = 0;
	pid_t pid;

	for (size_t i = 0; env && env[i]; i++) {
		if (nextra + 3 > sizeof(extra) / sizeof(extra[0]))
			abort();
		extra[nextra++] = env[i];
	}
	if (listen_fd >= 0) {
		extra[nextra++] = "LISTEN_FDS=1";
		extra[nextra++] = "LISTEN_PID=@PID@";
	}
	while (environ[ninherit])
		ninherit++;
	ce.envp = calloc(ninherit + nextra + 1, sizeof(char *));
	if (!ce.envp)
		abort();
	for (size_t i = 0; i < ninherit; i++) {
		if (!env_has_key(extra, nextra, environ[i]))
			ce.envp[n++] = environ[i];
	}
	for (size_t i = 0; i < nextra; i++) {
		size_t klen = env_key_len(extra[i]);

		if (klen && strcmp(extra[i] + klen, "@PID@") == 0 && ce.npid < MAX_PID_SLOTS) {
			char *s = malloc(klen + 24);

			if (!s)
				abort();
			memcpy(s, extra[i], klen);
			put_pid(s + klen, 0);
			ce.pid_slot[ce.npid++] = s + klen;
			owned[nowned++] = s;
			ce.envp[n++] = s;
		} else {
			ce.envp[n++] = (char *)extra[i];
		}
	}
	ce.envp[n] = NULL;
	pid = spawn_child(argv, out_path, false, &ce);
	for (size_t i = 0; i < nowned; i++)
		free(owned[i]);
	free(ce.envp);
	return pid;
}

int h_wait_pid(pid_t pid, int timeout_ms, int *status)
{
	int64_t start = h_now_ms(), deadline = start + timeout_ms;
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	int st = -1;

	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid) {
			if (pidfd >= 0)
				close(pidfd);
			if (status)
				*status = st;
			return (int)(h_now_ms() - start);
		}
		if (r < 0 && errno != EINTR)
			break;
		if (ms_left(deadline) == 0)
			break;
		if (pidfd >= 0) {
			struct pollfd p = { pidfd, POLLIN, 0 };
			int left = ms_left(deadline);

			poll(&p, 1, left < 200 ? left : 200);
		} else {
			h_sleep_ms(2);
		}
	}
	if (pidfd >= 0)
		close(pidfd);
	if (status)
		*status = -1;
	return -1;
}

void h_kill_wait(pid_t pid)
{
	if (pid <= 0)
		return;
	kill(pid, SIGKILL);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
}

int h_run(const char *const argv[], const char *out_path, bool as_pg_user, int timeout_ms)
{
	int status;
	pid_t pid = h_spawn(argv, out_path, as_pg_user);

	if (pid < 0)
		return -1;
	if (h_wait_pid(pid, timeout_ms, &status) < 0) {
		h_kill_wait(pid);
		return -1;
	}
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

const char *h_pg_bin(const char *program)
{
	static char bindir[H_PATH_MAX];
	static __thread char paths[4][H_PATH_MAX];     /* a few may be live at once */
	static __thread unsigned next;
	char *path = paths[next++ % 4];

	if (!bindir[0]) {
		const char *env = getenv("PG_BINDIR");
		glob_t g;

		if (env && *env) {
			snprintf(bindir, sizeof(bindir), "%s", env);
		} else if (glob("/usr/lib/postgresql/*/bin", 0, NULL, &g) == 0) {
			long best = -1;

			for (size_t i = 0; i < g.gl_pathc; i++) {
				long v = strtol(g.gl_pathv[i] + strlen("/usr/lib/postgresql/"), NULL, 10);

				if (v > best) {
					best = v;
					snprintf(bindir, sizeof(bindir), "%s", g.gl_pathv[i]);
				}
			}
			globfree(&g);
		}
		if (!bindir[0])
			snprintf(bindir, sizeof(bindir), "/usr/lib/postgresql/15/bin");
	}
	path_cat(path, bindir, "/");
	path_cat(path, path, program);
	return path;
}

const char *h_daemon_bin(void)
{
	static char bin[PATH_MAX];

	if (!bin[0]) {
		const char *env = getenv("PGBERTH_BIN");

		if (!env || !*env)
			env = "build/pgberth";
		if (!realpath(env, bin))
			snprintf(bin, sizeof(bin), "%s", env);
	}
	return bin;
}

int h_proc_fd_count(pid_t pid)
{
	char path[64];
	struct dirent *e;
	int n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	if (!d)
		return -1;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] != '.')
			n++;
	}
	closedir(d);
	return n;
}

long h_proc_status_kb(pid_t pid, const char *field)
{
	char path[64], line[256];
	size_t n = strlen(field);
	long kb = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, field, n) == 0 && line[n] == ':') {
			kb = strtol(line + n + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return kb;
}

long h_proc_rss_kb(pid_t pid)
{
	return h_proc_status_kb(pid, "VmRSS");
}

/* ---- PostgreSQL ------------------------------------------------------ */

static void pg_conninfo(const struct h_pg *pg, const char *db, char *buf, size_t len)
{
	snprintf(buf, len, "host=%s port=%d dbname=%s user=" H_SUPERUSER " connect_timeout=5",
		 pg->sockdir, pg->port, db);
}

/* Tail of a log file into err, for messages from fixtures that cannot print. */
static void err_with_log(char *err, size_t errlen, const char *what, const char *logpath)
{
	char *text = h_read_file(logpath);
	size_t len = text ? strlen(text) : 0;
	const char *tail = text ? text + (len > 300 ? len - 300 : 0) : "";

	snprintf(err, errlen, "%s (log %s: ...%s)", what, logpath, tail);
	free(text);
}

/* Starts postgres on pg->datadir/sockdir and waits until it answers. */
static int pg_boot(struct h_pg *pg)
{
	char sockopt[H_PATH_MAX + 32], portstr[16], conninfo[H_PATH_MAX + 128];
	const char *argv[40];
	int64_t deadline;
	int i = 0, status;

	snprintf(sockopt, sizeof(sockopt), "unix_socket_directories=%s", pg->sockdir);
	snprintf(portstr, sizeof(portstr), "%d", pg->port);
	argv[i++] = h_pg_bin("postgres");
	argv[i++] = "-D";
	argv[i++] = pg->datadir;
	argv[i++] = "-p";
	argv[i++] = portstr;
	argv[i++] = "-c";
	argv[i++] = "listen_addresses=";
	argv[i++] = "-c";
	argv[i++] = sockopt;
	argv[i++] = "-c";
	argv[i++] = "fsync=off";
	argv[i++] = "-c";
	argv[i++] = "synchronous_commit=off";
	argv[i++] = "-c";
	argv[i++] = "full_page_writes=off";
	argv[i++] = "-c";
	argv[i++] = "max_connections=200";
	argv[i++] = "-c";
	argv[i++] = "shared_buffers=16MB";
	argv[i++] = "-c";
	argv[i++] = "autovacuum=off";
	argv[i++] = "-c";
	argv[i++] = "dynamic_shared_memory_type=mmap";
	argv[i++] = "-c";
	argv[i++] = "max_parallel_workers_per_gather=0";
	/* Backends notice a vanished client (e.g. a killed daemon) within a second. */
	argv[i++] = "-c";
	argv[i++] = "client_connection_check_interval=1s";
	argv[i++] = "-c";
	argv[i++] = "logging_collector=off";
	argv[i] = NULL;

	log_register(pg->log);
	pg->pid = h_spawn(argv, pg->log, true);
	if (pg->pid < 0) {
		snprintf(pg->error, sizeof(pg->error), "cannot fork postgres: %s", strerror(errno));
		pg->pid = 0;
		return -1;
	}
	pg_conninfo(pg, "postgres", conninfo, sizeof(conninfo));
	deadline = h_now_ms() + 30000;
	for (;;) {
		if (waitpid(pg->pid, &status, WNOHANG) == pg->pid) {
			char desc[64];

			h_describe_status(status, desc, sizeof(desc));
			pg->pid = 0;
			err_with_log(pg->error, sizeof(pg->error), desc, pg->log);
			return -1;
		}
		if (PQping(conninfo) == PQPING_OK)
			return 0;
		if (ms_left(deadline) == 0)
			break;
		h_sleep_ms(10);
	}
	err_with_log(pg->error, sizeof(pg->error), "postgres not ready within 30 s", pg->log);
	h_kill_wait(pg->pid);
	pg->pid = 0;
	return -1;
}

/* Signals the postmaster and reaps it; SIGKILL if it outlives 15 s. */
static void pg_halt(struct h_pg *pg, int sig)
{
	if (pg->pid <= 0)
		return;
	kill(pg->pid, sig);
	if (h_wait_pid(pg->pid, 15000, NULL) < 0)
		h_kill_wait(pg->pid);
	pg->pid = 0;
}

int h_pg_start_try(struct h_pg *pg)
{
	char *dir;
	const char *cp[] = { "/bin/cp", "-a", template_data, NULL, NULL };

	memset(pg, 0, sizeof(*pg));
	pg->port = H_PG_PORT;
	dir = h_mkdtemp("pg");
	if (!dir) {
		snprintf(pg->error, sizeof(pg->error), "mkdtemp: %s", strerror(errno));
		return -1;
	}
	snprintf(pg->dir, sizeof(pg->dir), "%s", dir);
	free(dir);
	path_cat(pg->datadir, pg->dir, "/data");
	path_cat(pg->sockdir, pg->dir, "/s");
	path_cat(pg->log, pg->dir, "/postgres.log");
	cp[3] = pg->datadir;
	if (h_run(cp, pg->log, false, 60000) != 0) {
		err_with_log(pg->error, sizeof(pg->error), "cp -a of the template failed", pg->log);
		return -1;
	}
	if (mkdir(pg->sockdir, 0755) != 0 || chown_pg(pg->sockdir) != 0 ||
	    (as_root && chown(pg->log, pg_uid, pg_gid) != 0)) {
		snprintf(pg->error, sizeof(pg->error), "socket dir %s: %s", pg->sockdir, strerror(errno));
		return -1;
	}
	return pg_boot(pg);
}

void h_pg_start(struct h_pg *pg)
{
	if (h_pg_start_try(pg) != 0) {
		h_dump_logs();
		ck_abort_msg("PostgreSQL did not start: %s", pg->error);
	}
}

void h_pg_stop(struct h_pg *pg)
{
	pg_halt(pg, SIGQUIT);
	log_unregister(pg->log);
	h_rm_rf(pg->dir);
	pg->dir[0] = '\0';
}

/*
 * Signals the postmaster and then every process whose parent it is (found
 * in /proc): stopped first, it forks no new child meanwhile.
 */
static void pg_signal_tree(const struct h_pg *pg, int sig)
{
	DIR *proc;
	struct dirent *e;

	if (pg->pid <= 0)
		return;
	if (sig == SIGSTOP)
		kill(pg->pid, sig);
	proc = opendir("/proc");
	while (proc && (e = readdir(proc)) != NULL) {
		char path[64], buf[512], *close_paren;
		long pid = atol(e->d_name), ppid = 0;
		int fd;
		ssize_t n;

		if (pid <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n <= 0)
			continue;
		buf[n] = '\0';
		/* "pid (comm) state ppid ...": comm may hold anything, even ')'. */
		close_paren = strrchr(buf, ')');
		if (close_paren && sscanf(close_paren + 1, " %*c %ld", &ppid) == 1 && ppid == pg->pid)
			kill((pid_t)pid, sig);
	}
	if (proc)
		closedir(proc);
	if (sig != SIGSTOP)
		kill(pg->pid, sig);
}

void h_pg_freeze(const struct h_pg *pg)
{
	pg_signal_tree(pg, SIGSTOP);
}

void h_pg_thaw(const struct h_pg *pg)
{
	pg_signal_tree(pg, SIGCONT);
}

static void shared_pg_setup(void)
{
	/* Runs in the runner (unchecked fixture): report, never assert. */
	if (h_pg_start_try(&h_shared_pg) != 0)
		fprintf(stderr, "harness: PostgreSQL did not start: %s\n", h_shared_pg.error);
}

static void shared_pg_teardown(void)
{
	h_pg_stop(&h_shared_pg);
}

static void shared_pg_check(void)
{
	ck_assert_msg(h_shared_pg.pid > 0, "PostgreSQL did not start: %s", h_shared_pg.error);
}

void h_tcase_add_pg(TCase *tc)
{
	tcase_add_unchecked_fixture(tc, shared_pg_setup, shared_pg_teardown);
	tcase_add_checked_fixture(tc, shared_pg_check, NULL);
}

PGconn *h_pg_connect(const struct h_pg *pg, const char *extra)
{
	char base[H_PATH_MAX + 128];
	char *conninfo;
	PGconn *c;

	pg_conninfo(pg, "appdb", base, sizeof(base));
	conninfo = xasprintf("%s %s", base, extra ? extra : "");
	c = PQconnectdb(conninfo);
	free(conninfo);
	if (PQstatus(c) != CONNECTION_OK) {
		char msg[512];

		snprintf(msg, sizeof(msg), "%s", PQerrorMessage(c));
		PQfinish(c);
		h_dump_logs();
		ck_abort_msg("direct connection to PostgreSQL failed: %s", msg);
	}
	return c;
}

void h_pg_exec(const char *sql)
{
	PGconn *direct = h_pg_connect(&h_shared_pg, NULL);

	h_exec_ok(direct, sql);
	PQfinish(direct);
}

void h_create_role(const char *role)
{
	char sql[256];

	snprintf(sql, sizeof(sql), "DO $$ BEGIN CREATE ROLE %s LOGIN; "
		 "EXCEPTION WHEN duplicate_object THEN NULL; END $$", role);
	h_pg_exec(sql);
}

static void *sampler_main(void *arg)
{
	struct h_sampler *s = arg;

	while (!atomic_load(&s->stop)) {
		PGresult *r = h_exec_try(s->direct, s->sql, 5000);
		int n;

		if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
			snprintf(s->error, sizeof(s->error), "%s",
				 r ? PQresultErrorMessage(r) : "sample timed out");
			PQclear(r);
			break;
		}
		n = atoi(PQgetvalue(r, 0, 0));
		if (n > s->max)
			s->max = n;
		s->samples++;
		PQclear(r);
		h_sleep_ms(1);
	}
	return NULL;
}

void h_sampler_start(struct h_sampler *s, const char *sql)
{
	memset(s, 0, sizeof(*s));
	h_assert(strlen(sql) < sizeof(s->sql), "sampler query too long: %s", sql);
	snprintf(s->sql, sizeof(s->sql), "%s", sql);
	s->direct = h_pg_connect(&h_shared_pg, NULL);
	h_assert(pthread_create(&s->th, NULL, sampler_main, s) == 0, "sampler thread");
}

void h_sampler_stop(struct h_sampler *s)
{
	atomic_store(&s->stop, true);
	pthread_join(s->th, NULL);
	PQfinish(s->direct);
	s->direct = NULL;
	h_assert(s->error[0] == '\0', "sampler: %s", s->error);
	h_assert(s->samples > 0, "the sampler took no sample");
}

/* ---- the template cluster -------------------------------------------- */

static int pg_user_init(char *err, size_t errlen)
{
	struct passwd *pw;
	int n = (int)(sizeof(pg_groups) / sizeof(pg_groups[0]));

	as_root = geteuid() == 0;
	if (!as_root)
		return 0;
	pw = getpwnam(PG_TEST_USER);
	if (!pw) {
		/* scripts/deps.sh normally creates it. */
		const char *argv[] = { "/usr/sbin/useradd", "--system", "--no-create-home",
				       "--shell", "/usr/sbin/nologin", PG_TEST_USER, NULL };

		h_run(argv, NULL, false, 30000);
		pw = getpwnam(PG_TEST_USER);
	}
	if (!pw) {
		snprintf(err, errlen, "running as root and user %s does not exist "
			 "(useradd failed; run scripts/deps.sh)", PG_TEST_USER);
		return -1;
	}
	pg_uid = pw->pw_uid;
	pg_gid = pw->pw_gid;
	if (getgrouplist(PG_TEST_USER, pg_gid, pg_groups, &n) < 0)
		n = 0;
	if (n == 0)
		pg_groups[n++] = pg_gid;
	pg_ngroups = n;
	return 0;
}

static int root_init(char *err, size_t errlen)
{
	const char *tmp = getenv("TMPDIR");

	/* Socket paths must fit in sun_path (108 bytes). */
	if (!tmp || !*tmp || strlen(tmp) > 40)
		tmp = "/tmp";
	snprintf(root_dir, sizeof(root_dir), "%s/pgberth-test.XXXXXX", tmp);
	if (!mkdtemp(root_dir) || chmod(root_dir, 0711) != 0) {
		snprintf(err, errlen, "mkdtemp %s: %s", root_dir, strerror(errno));
		root_dir[0] = '\0';
		return -1;
	}
	root_owner = getpid();
	return 0;
}

static int exec_setup_sql(const struct h_pg *pg, const char *db, const char *sql,
			  char *err, size_t errlen)
{
	char conninfo[H_PATH_MAX + 128];
	PGconn *c;
	PGresult *r;
	int rc = 0;

	pg_conninfo(pg, db, conninfo, sizeof(conninfo));
	c = PQconnectdb(conninfo);
	if (PQstatus(c) != CONNECTION_OK) {
		snprintf(err, errlen, "template: connect %s: %s", db, PQerrorMessage(c));
		PQfinish(c);
		return -1;
	}
	r = h_exec_try(c, sql, 60000);
	if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
		snprintf(err, errlen, "template: %s: %s", sql,
			 r ? PQresultErrorMessage(r) : "timed out");
		rc = -1;
	}
	PQclear(r);
	PQfinish(c);
	return rc;
}

/* Puts a password-checked line for H_PW_USER ahead of initdb's trust lines. */
static int hba_prepend(const char *datadir, char *err, size_t errlen)
{
	char path[H_PATH_MAX];
	char *old, *text;
	bool ok;

	path_cat(path, datadir, "/pg_hba.conf");
	old = h_read_file(path);
	if (!old) {
		snprintf(err, errlen, "read %s: %s", path, strerror(errno));
		return -1;
	}
	text = xasprintf("local all " H_PW_USER " scram-sha-256\n%s", old);
	/* O_TRUNC on the existing file keeps its owner and mode. */
	ok = h_write_file(path, text);
	free(old);
	free(text);
	if (!ok) {
		snprintf(err, errlen, "write %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

static int template_init(char *err, size_t errlen)
{
	struct h_pg t;
	char initdb_log[H_PATH_MAX];
	const char *initdb[] = { h_pg_bin("initdb"), "-D", template_data, "--auth=trust",
				 "-U", H_SUPERUSER, "-E", "UTF8", "--locale=C", "--no-sync",
				 "--no-instructions", NULL };
	int rc;

	path_cat(template_dir, root_dir, "/template");
	path_cat(template_data, template_dir, "/data");
	path_cat(initdb_log, template_dir, "/initdb.log");
	if (mkdir(template_dir, 0711) != 0 || chown_pg(template_dir) != 0) {
		snprintf(err, errlen, "mkdir %s: %s", template_dir, strerror(errno));
		return -1;
	}
	rc = h_run(initdb, initdb_log, true, 120000);
	if (rc != 0) {
		err_with_log(err, errlen, "initdb failed", initdb_log);
		return -1;
	}
	if (hba_prepend(template_data, err, errlen) != 0)
		return -1;

	memset(&t, 0, sizeof(t));
	t.port = H_PG_PORT;
	snprintf(t.datadir, sizeof(t.datadir), "%s", template_data);
	path_cat(t.sockdir, template_dir, "/s");
	path_cat(t.log, template_dir, "/postgres.log");
	if (mkdir(t.sockdir, 0755) != 0 || chown_pg(t.sockdir) != 0) {
		snprintf(err, errlen, "mkdir %s: %s", t.sockdir, strerror(errno));
		return -1;
	}
	if (pg_boot(&t) != 0) {
		snprintf(err, errlen, "template postgres: %s", t.error);
		return -1;
	}
	rc = exec_setup_sql(&t, "postgres", "CREATE DATABASE appdb", err, errlen);
	if (rc == 0)
		rc = exec_setup_sql(&t, "postgres",
				    "CREATE ROLE " H_PW_USER " LOGIN PASSWORD '" H_PW_PASSWORD "'",
				    err, errlen);
	if (rc == 0)
		rc = exec_setup_sql(&t, "postgres", "CREATE ROLE " H_CROWD_USER
				    " LOGIN CONNECTION LIMIT 5", err, errlen);
	if (rc == 0)
		rc = exec_setup_sql(&t, "appdb", "GRANT CREATE ON SCHEMA public TO PUBLIC",
				    err, errlen);
	/* Fast shutdown writes a checkpoint: the copies start without recovery. */
	pg_halt(&t, SIGINT);
	log_unregister(t.log);
	return rc;
}

static void cleanup_root(void)
{
	if (root_dir[0] && getpid() == root_owner) {
		h_rm_rf(root_dir);
		root_dir[0] = '\0';
	}
}

/* ---- the daemon ------------------------------------------------------ */

char *h_daemon_config_text(const struct h_daemon *d, const struct h_pg *pg,
			   const struct h_daemon_opts *opts)
{
	static const struct h_daemon_opts defaults;
	const char *pghost = pg ? pg->sockdir : "/nonexistent";
	int pgport = pg ? pg->port : H_PG_PORT;
	struct sbuf b = { 0 };

	if (!opts)
		opts = &defaults;
	sbuf_printf(&b,
		    "listen:\n"
		    "  socket_dir: %s\n"
		    "  port: %d\n"
		    "  socket_mode: \"%s\"\n"
		    "workers: %d\n"
		    "accept_spread: %s\n"
		    "log_level: %s\n"
		    "shutdown_timeout: %s\n"
		    "server_connect_timeout: %s\n"
		    "server_reset_query: DISCARD ALL\n",
		    d->sockdir, d->port, opts->socket_mode ? opts->socket_mode : "0777",
		    opts->workers ? opts->workers : 2,
		    opts->accept_spread ? opts->accept_spread : "always",
		    opts->log_level ? opts->log_level : "info",
		    opts->shutdown_timeout ? opts->shutdown_timeout : "2s",
		    opts->server_connect_timeout ? opts->server_connect_timeout : "5s");
	if (opts->extra_top)
		sbuf_add_subst(&b, opts->extra_top, pghost, pgport);
	sbuf_printf(&b,
		    "databases:\n"
		    "  appdb:\n"
		    "    conninfo: \"host=%s port=%d dbname=appdb\"\n"
		    "    pool_size: %d\n"
		    "    pool_mode: %s\n",
		    pghost, pgport, opts->pool_size ? opts->pool_size : 5,
		    opts->pool_mode ? opts->pool_mode : "session");
	if (opts->extra_appdb)
		sbuf_add_subst(&b, opts->extra_appdb, pghost, pgport);
	if (opts->extra_dbs)
		sbuf_add_subst(&b, opts->extra_dbs, pghost, pgport);
	return b.p;
}

void h_daemon_prepare(struct h_daemon *d, const struct h_pg *pg,
		      const struct h_daemon_opts *opts)
{
	char *dir, *text;

	memset(d, 0, sizeof(*d));
	d->status = -1;
	d->port = H_DAEMON_PORT;
	dir = h_mkdtemp("d");
	ck_assert_msg(dir != NULL, "mkdtemp: %s", strerror(errno));
	snprintf(d->dir, sizeof(d->dir), "%s", dir);
	free(dir);
	if (opts && opts->sockdir) {
		snprintf(d->sockdir, sizeof(d->sockdir), "%s", opts->sockdir);
	} else {
		path_cat(d->sockdir, d->dir, "/s");
		ck_assert_msg(mkdir(d->sockdir, 0755) == 0, "mkdir %s: %s", d->sockdir,
			      strerror(errno));
	}
	{
		char name[32];

		snprintf(name, sizeof(name), "/.s.PGSQL.%d", d->port);
		path_cat(d->sockpath, d->sockdir, name);
	}
	path_cat(d->lockpath, d->sockpath, ".lock");
	path_cat(d->config, d->dir, "/pgberth.yaml");
	path_cat(d->log, d->dir, "/pgberth.log");

	text = h_daemon_config_text(d, pg, opts);
	ck_assert_msg(h_write_file(d->config, text), "write %s: %s", d->config, strerror(errno));
	free(text);
	log_register(d->log);
}

void h_daemon_reload(struct h_daemon *d, const char *yaml)
{
	char tmp[H_PATH_MAX];

	path_cat(tmp, d->config, ".new");
	h_assert(h_write_file(tmp, yaml), "write %s: %s", tmp, strerror(errno));
	h_assert(rename(tmp, d->config) == 0, "rename %s: %s", tmp, strerror(errno));
	h_assert(d->pid > 0 && kill(d->pid, SIGHUP) == 0, "SIGHUP to pgberth: %s",
		 d->pid > 0 ? strerror(errno) : "it has exited");
}

long h_daemon_log_size(const struct h_daemon *d)
{
	struct stat st;

	return stat(d->log, &st) == 0 ? (long)st.st_size : 0;
}

bool h_daemon_wait_log(const struct h_daemon *d, long offset, const char *needle,
		       int timeout_ms)
{
	int64_t deadline = h_now_ms() + timeout_ms;

	for (;;) {
		char *text = h_read_file(d->log);
		bool found = text && (long)strlen(text) >= offset && strstr(text + offset, needle);

		free(text);
		if (found)
			return true;
		if (ms_left(deadline) == 0)
			return false;
		h_sleep_ms(10);
	}
}

pid_t h_daemon_spawn(struct h_daemon *d)
{
	const char *argv[] = { h_daemon_bin(), "-c", d->config, NULL };

	d->status = -1;
	d->pid = h_spawn(argv, d->log, false);
	if (d->pid < 0)
		d->pid = 0;
	return d->pid;
}

pid_t h_daemon_spawn_env(struct h_daemon *d, const char *const env[], int listen_fd)
{
	const char *argv[] = { h_daemon_bin(), "-c", d->config, NULL };

	d->status = -1;
	d->pid = h_spawn_env(argv, d->log, env, listen_fd);
	if (d->pid < 0)
		d->pid = 0;
	return d->pid;
}

bool h_daemon_wait_login(struct h_daemon *d, int timeout_ms)
{
	static const char *const kv[] = { "user", H_SUPERUSER, "database", "appdb", NULL };
	int64_t deadline = h_now_ms() + timeout_ms;

	for (;;) {
		struct h_login l;
		int fd, rc = -1;

		if (h_daemon_exited(d))
			return false;
		fd = h_raw_connect(d->sockpath);
		if (fd >= 0) {
			/* Short slices: the daemon may exit while we wait. */
			int left = ms_left(deadline);

			rc = h_raw_login(fd, kv, &l, left < 250 ? left : 250);
			close(fd);
		}
		if (rc == 0)
			return true;
		if (ms_left(deadline) == 0)
			return false;
		if (fd < 0)
			h_sleep_ms(5);
	}
}

bool h_daemon_exited(struct h_daemon *d)
{
	int status;

	if (d->pid <= 0)
		return true;
	if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
		d->status = status;
		d->pid = 0;
		return true;
	}
	return false;
}

bool h_daemon_wait_ready(struct h_daemon *d, int timeout_ms)
{
	int64_t deadline = h_now_ms() + timeout_ms;

	for (;;) {
		struct stat st;

		if (h_daemon_exited(d))
			return false;
		if (stat(d->sockpath, &st) == 0 && S_ISSOCK(st.st_mode)) {
			int fd = h_raw_connect(d->sockpath);

			if (fd >= 0) {
				close(fd);
				return true;
			}
		}
		if (ms_left(deadline) == 0)
			return false;
		h_sleep_ms(5);
	}
}

pid_t h_daemon_start(struct h_daemon *d, const struct h_pg *pg,
		     const struct h_daemon_opts *opts)
{
	h_daemon_prepare(d, pg, opts);
	if (h_daemon_spawn(d) <= 0) {
		h_dump_logs();
		ck_abort_msg("cannot start %s: %s", h_daemon_bin(), strerror(errno));
	}
	if (!h_daemon_wait_ready(d, H_START_TIMEOUT)) {
		char desc[64];

		if (d->pid > 0)
			snprintf(desc, sizeof(desc), "still running");
		else
			h_describe_status(d->status, desc, sizeof(desc));
		h_dump_logs();
		ck_abort_msg("pgberth (%s -c %s) did not accept connections on %s within %d ms: %s",
			     h_daemon_bin(), d->config, d->sockpath, H_START_TIMEOUT, desc);
	}
	return d->pid;
}

int h_daemon_stop(struct h_daemon *d, int sig, int timeout_ms)
{
	int64_t start = h_now_ms();
	int status;

	if (d->pid <= 0)
		return 0;
	kill(d->pid, sig);
	if (h_wait_pid(d->pid, timeout_ms, &status) < 0) {
		h_kill_wait(d->pid);
		d->pid = 0;
		d->status = -1;
		return -1;
	}
	d->pid = 0;
	d->status = status;
	return (int)(h_now_ms() - start);
}

void h_daemon_stop_ok(struct h_daemon *d)
{
	char desc[64];
	int ms;

	if (d->pid <= 0) {
		h_describe_status(d->status, desc, sizeof(desc));
		h_assert(false, "pgberth had already exited (%s)", desc);
	}
	ms = h_daemon_stop(d, SIGTERM, 10000);
	h_assert(ms >= 0, "pgberth did not exit within 10 s of SIGTERM (killed)");
	h_describe_status(d->status, desc, sizeof(desc));
	h_assert(WIFEXITED(d->status) && WEXITSTATUS(d->status) == 0,
		 "pgberth stopped by SIGTERM with %s, expected exit status 0", desc);
}

/* ---- libpq clients --------------------------------------------------- */

char *h_conninfo(const struct h_daemon *d, const char *extra)
{
	return xasprintf("host=%s port=%d dbname=appdb user=" H_SUPERUSER " connect_timeout=10 %s",
			 d->sockdir, d->port, extra ? extra : "");
}

PGconn *h_connect_try(const struct h_daemon *d, const char *extra)
{
	char *conninfo = h_conninfo(d, extra);
	PGconn *c = PQconnectdb(conninfo);

	free(conninfo);
	return c;
}

PGconn *h_connect(const struct h_daemon *d, const char *extra)
{
	PGconn *c = h_connect_try(d, extra);

	if (PQstatus(c) != CONNECTION_OK) {
		char msg[512];

		snprintf(msg, sizeof(msg), "%s", PQerrorMessage(c));
		PQfinish(c);
		h_dump_logs();
		ck_abort_msg("connection through pgberth (%s) failed: %s",
			     extra ? extra : "", msg);
	}
	return c;
}

PGconn *h_connect_db(const struct h_daemon *d, const char *db, const char *user)
{
	char extra[160];

	snprintf(extra, sizeof(extra), "dbname=%s%s%s", db, user ? " user=" : "", user ? user : "");
	return h_connect(d, extra);
}

PGconn *h_connect_start(const struct h_daemon *d, const char *extra, bool verbose,
			PostgresPollingStatusType *state)
{
	char *conninfo = h_conninfo(d, extra);
	PGconn *c = PQconnectStart(conninfo);

	free(conninfo);
	h_assert(c && PQstatus(c) != CONNECTION_BAD, "PQconnectStart: %s",
		 c ? PQerrorMessage(c) : "out of memory");
	if (verbose)
		PQsetErrorVerbosity(c, PQERRORS_VERBOSE);
	*state = PGRES_POLLING_WRITING;
	return c;
}

int h_drive_connect(PGconn *c, PostgresPollingStatusType *state, int64_t deadline)
{
	for (;;) {
		struct pollfd p = { PQsocket(c), 0, 0 };
		int64_t left;

		if (*state == PGRES_POLLING_OK || *state == PGRES_POLLING_FAILED)
			return (int)*state;
		p.events = *state == PGRES_POLLING_WRITING ? POLLOUT : POLLIN;
		left = deadline - h_now_ms();
		if (left <= 0)
			return -1;
		if (poll(&p, 1, (int)left) == 0)
			return -1;
		*state = PQconnectPoll(c);
	}
}

void h_assert_serves(const struct h_daemon *d)
{
	PGconn *c = h_connect(d, NULL);

	h_assert_value(c, "SELECT 'serving'", "serving");
	PQfinish(c);
}

/* Waits until c's socket is readable (or writable too); false at the deadline. */
static bool wait_socket(PGconn *c, bool want_write, int64_t deadline)
{
	struct pollfd p = { PQsocket(c), (short)(POLLIN | (want_write ? POLLOUT : 0)), 0 };
	int left = ms_left(deadline);

	if (p.fd < 0 || left == 0)
		return false;
	if (poll(&p, 1, left) < 0)
		return errno == EINTR;
	return ms_left(deadline) > 0 || p.revents != 0;
}

static bool is_copy(ExecStatusType st)
{
	return st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH;
}

PGresult *h_result_try(PGconn *c, int timeout_ms)
{
	int64_t deadline = h_now_ms() + timeout_ms;
	PGresult *last = NULL, *r;

	for (;;) {
		int f = PQflush(c);

		if (f < 0)
			break;
		if (f == 0 && !PQisBusy(c)) {
			r = PQgetResult(c);
			if (!r)
				return last;
			PQclear(last);
			last = r;
			if (is_copy(PQresultStatus(r)))
				return r;
			continue;
		}
		if (!wait_socket(c, f == 1, deadline)) {
			PQclear(last);
			return NULL;
		}
		if (!PQconsumeInput(c))
			break;
	}
	/* Connection broken: libpq turns that into an error result. */
	for (int i = 0; i < 8 && (r = PQgetResult(c)) != NULL; i++) {
		PQclear(last);
		last = r;
	}
	return last;
}

PGresult *h_exec_try(PGconn *c, const char *sql, int timeout_ms)
{
	PGresult *r;

	if (PQsetnonblocking(c, 1) != 0 || !PQsendQuery(c, sql))
		return NULL;
	r = h_result_try(c, timeout_ms);
	if (!r || !is_copy(PQresultStatus(r)))
		PQsetnonblocking(c, 0);
	return r;
}

PGresult *h_exec(PGconn *c, const char *sql)
{
	PGresult *r = h_exec_try(c, sql, H_QUERY_TIMEOUT);

	h_assert(r != NULL, "query \"%.80s\" got no result within %d ms: %s", sql,
		 H_QUERY_TIMEOUT, PQerrorMessage(c));
	return r;
}

void h_exec_ok(PGconn *c, const char *sql)
{
	PGresult *r = h_exec(c, sql);
	ExecStatusType st = PQresultStatus(r);
	char msg[512];

	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
		PQclear(r);
		return;
	}
	snprintf(msg, sizeof(msg), "%s [%s] %s", PQresStatus(st), h_sqlstate(r),
		 PQresultErrorMessage(r));
	PQclear(r);
	h_assert(false, "query \"%.80s\" failed: %s", sql, msg);
}

void h_exec_fails(PGconn *c, const char *sql, const char *sqlstate)
{
	PGresult *r = h_exec(c, sql);
	ExecStatusType st = PQresultStatus(r);
	char got[6];

	snprintf(got, sizeof(got), "%s", h_sqlstate(r));
	PQclear(r);
	h_assert(st == PGRES_FATAL_ERROR && strcmp(got, sqlstate) == 0,
		 "query \"%.80s\": expected error %s, got %s [%s]", sql, sqlstate,
		 PQresStatus(st), got);
}

char *h_query_value(PGconn *c, const char *sql)
{
	PGresult *r = h_exec(c, sql);
	char msg[512], *v;

	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) < 1 || PQnfields(r) < 1) {
		snprintf(msg, sizeof(msg), "%s, %d rows [%s] %s",
			 PQresStatus(PQresultStatus(r)), PQntuples(r), h_sqlstate(r),
			 PQresultErrorMessage(r));
		PQclear(r);
		h_assert(false, "query \"%.80s\" returned no value: %s", sql, msg);
	}
	v = PQgetisnull(r, 0, 0) ? NULL : strdup(PQgetvalue(r, 0, 0));
	PQclear(r);
	return v;
}

long long h_query_ll(PGconn *c, const char *sql)
{
	char *v = h_query_value(c, sql);
	long long n;

	h_assert(v != NULL, "query \"%.80s\" returned NULL", sql);
	n = strtoll(v, NULL, 10);
	free(v);
	return n;
}

const char *h_sqlstate(const PGresult *r)
{
	const char *s = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;

	return s ? s : "";
}

long long h_backend_pid(PGconn *c)
{
	return h_query_ll(c, "SELECT pg_backend_pid()");
}

bool h_poll_until(PGconn *c, const char *sql, int timeout_ms)
{
	int64_t deadline = h_now_ms() + timeout_ms;

	for (;;) {
		PGresult *r = h_exec_try(c, sql, ms_left(deadline) + 1);
		bool yes = r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 &&
			   strcmp(PQgetvalue(r, 0, 0), "t") == 0;

		PQclear(r);
		if (yes)
			return true;
		if (ms_left(deadline) == 0)
			return false;
		h_sleep_ms(10);
	}
}

void h_send_query(PGconn *c, const char *sql)
{
	h_assert(PQsendQuery(c, sql), "send \"%s\": %s", sql, PQerrorMessage(c));
}

bool h_still_waiting(PGconn *c, int ms)
{
	int64_t deadline = h_now_ms() + ms;

	for (;;) {
		struct pollfd p = { PQsocket(c), POLLIN, 0 };
		int64_t left;

		if (!PQconsumeInput(c) || !PQisBusy(c))
			return false;
		left = deadline - h_now_ms();
		if (left <= 0)
			return true;
		poll(&p, 1, (int)left);
	}
}

char *h_pending_value(PGconn *c, const char *what)
{
	PGresult *r = h_result_try(c, H_QUERY_TIMEOUT);
	char *v;

	h_assert(r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0,
		 "%s: %s", what, r ? PQresultErrorMessage(r) : "no result within the deadline");
	v = strdup(PQgetvalue(r, 0, 0));
	PQclear(r);
	return v;
}

void h_assert_pending_value(PGconn *c, const char *what, const char *want)
{
	char *v = h_pending_value(c, what);

	h_assert(strcmp(v, want) == 0, "%s: got \"%s\", expected \"%s\"", what, v, want);
	free(v);
}

/* Keeps r's error in o unless o has one already: the first error is the one that counts. */
static void outcome_error(struct h_outcome *o, const PGresult *r)
{
	const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);

	o->ok = false;
	if (o->sqlstate[0] || o->message[0])
		return;
	snprintf(o->sqlstate, sizeof(o->sqlstate), "%s", st ? st : "");
	snprintf(o->message, sizeof(o->message), "%s", PQresultErrorMessage(r));
}

void h_collect_results(PGconn *c, int64_t t0, int timeout_ms, struct h_outcome *o)
{
	int64_t deadline = h_now_ms() + timeout_ms;
	bool have_row = false;
	PGresult *r;

	memset(o, 0, sizeof(*o));
	o->ok = true;
	for (;;) {
		struct pollfd p = { PQsocket(c), POLLIN, 0 };
		int64_t left;

		while (!PQisBusy(c)) {
			r = PQgetResult(c);
			if (r == NULL) {
				o->answered = true;
				o->ms = (int)(h_now_ms() - t0);
				return;
			}
			if (PQresultStatus(r) == PGRES_FATAL_ERROR) {
				outcome_error(o, r);
			} else if (PQresultStatus(r) == PGRES_TUPLES_OK && !have_row &&
				   PQntuples(r) > 0) {
				have_row = true;
				o->value = atoll(PQgetvalue(r, 0, 0));
			}
			PQclear(r);
		}
		left = deadline - h_now_ms();
		if (left <= 0 || p.fd < 0) {
			o->answered = p.fd < 0;
			o->ms = (int)(h_now_ms() - t0);
			return;
		}
		poll(&p, 1, (int)left);
		if (!PQconsumeInput(c)) {
			/* Broken: libpq hands out what it has, then its own error. */
			for (int i = 0; i < 8 && (r = PQgetResult(c)) != NULL; i++) {
				if (PQresultStatus(r) == PGRES_FATAL_ERROR)
					outcome_error(o, r);
				PQclear(r);
			}
			o->ok = false;
			if (!o->message[0])
				snprintf(o->message, sizeof(o->message), "%s", PQerrorMessage(c));
			o->answered = true;
			o->ms = (int)(h_now_ms() - t0);
			return;
		}
	}
}

void h_run_query(PGconn *c, const char *sql, int timeout_ms, struct h_outcome *o)
{
	int64_t t0 = h_now_ms();

	if (!PQsendQuery(c, sql)) {
		memset(o, 0, sizeof(*o));
		o->answered = true;
		snprintf(o->message, sizeof(o->message), "send: %s", PQerrorMessage(c));
		return;
	}
	h_collect_results(c, t0, timeout_ms, o);
}

/* ---- raw protocol ---------------------------------------------------- */

int h_raw_connect(const char *sockpath)
{
	struct sockaddr_un sa;
	int fd;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if (strlen(sockpath) >= sizeof(sa.sun_path))
		return -1;
	strcpy(sa.sun_path, sockpath);
	/* Non-blocking: a full backlog must not hang us in connect(). */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

int h_raw_client(const struct h_daemon *d, const char *db, const char *user)
{
	const char *kv[] = { "user", user ? user : H_SUPERUSER, "database", db, NULL };
	struct h_login l;
	int fd = h_raw_connect(d->sockpath), rc;

	h_assert(fd >= 0, "connect %s: %s", d->sockpath, strerror(errno));
	rc = h_raw_login(fd, kv, &l, 10000);
	h_assert(rc == 0, "raw login to %s: rc %d [%s] %s", db, rc, l.sqlstate, l.message);
	return fd;
}

int h_raw_send(int fd, const void *buf, size_t len)
{
	int64_t deadline = h_now_ms() + 5000;
	const char *p = buf;

	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			struct pollfd pf = { fd, POLLOUT, 0 };

			if (ms_left(deadline) == 0)
				return -1;
			poll(&pf, 1, ms_left(deadline));
			continue;
		}
		return -1;
	}
	return 0;
}

ssize_t h_raw_read(int fd, void *buf, size_t len, int timeout_ms)
{
	int64_t deadline = h_now_ms() + timeout_ms;
	size_t got = 0;

	while (got < len) {
		ssize_t n = recv(fd, (char *)buf + got, len - got, 0);

		if (n > 0) {
			got += (size_t)n;
			continue;
		}
		if (n == 0 || (n < 0 && (errno == ECONNRESET || errno == EPIPE)))
			return 0;
		if (errno == EAGAIN || errno == EINTR) {
			struct pollfd pf = { fd, POLLIN, 0 };

			if (ms_left(deadline) == 0)
				return -2;
			poll(&pf, 1, ms_left(deadline));
			continue;
		}
		return -1;
	}
	return (ssize_t)got;
}

int h_raw_wait_eof(int fd, int timeout_ms)
{
	int64_t deadline = h_now_ms() + timeout_ms;
	char scratch[4096];

	for (;;) {
		ssize_t n = recv(fd, scratch, sizeof(scratch), 0);

		if (n == 0 || (n < 0 && (errno == ECONNRESET || errno == EPIPE)))
			return 0;
		if (n > 0)
			continue;
		if (errno == EAGAIN || errno == EINTR) {
			struct pollfd pf = { fd, POLLIN, 0 };

			if (ms_left(deadline) == 0)
				return -2;
			poll(&pf, 1, ms_left(deadline));
			continue;
		}
		return 0;
	}
}

static uint32_t get_u32(const char *p)
{
	const unsigned char *u = (const unsigned char *)p;

	return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

static void put_u32(char *p, uint32_t v)
{
	p[0] = (char)(v >> 24);
	p[1] = (char)(v >> 16);
	p[2] = (char)(v >> 8);
	p[3] = (char)v;
}

int h_raw_read_msg(int fd, struct h_msg *m, int timeout_ms)
{
	int64_t deadline = h_now_ms() + timeout_ms;
	char hdr[5];
	uint32_t len;
	ssize_t n;

	memset(m, 0, sizeof(*m));
	n = h_raw_read(fd, hdr, sizeof(hdr), timeout_ms);
	if (n <= 0)
		return n == 0 ? 0 : (int)n;
	len = get_u32(hdr + 1);
	if (len < 4 || len > (64u << 20))
		return -1;
	m->type = hdr[0];
	m->len = len - 4;
	m->body = malloc(m->len + 1);
	if (!m->body)
		return -1;
	m->body[m->len] = '\0';
	n = h_raw_read(fd, m->body, m->len, ms_left(deadline));
	if (m->len > 0 && n != (ssize_t)m->len) {
		h_msg_free(m);
		return n == 0 ? 0 : (n == -2 ? -2 : -1);
	}
	return 1;
}

void h_msg_free(struct h_msg *m)
{
	free(m->body);
	m->body = NULL;
}

void h_msg_field(const struct h_msg *m, char field, char *out, size_t len)
{
	const char *p = m->body, *end = m->body + m->len;

	out[0] = '\0';
	while (p < end && *p) {
		char f = *p++;
		size_t n = strnlen(p, (size_t)(end - p));

		if (f == field)
			snprintf(out, len, "%.*s", (int)n, p);
		p += n + 1;
	}
}

int h_raw_wait_error(int fd, int timeout_ms, struct h_raw_error *e)
{
	struct h_msg m;
	int rc = h_raw_read_msg(fd, &m, timeout_ms);

	memset(e, 0, sizeof(*e));
	if (rc <= 0)
		return rc;
	if (m.type != 'E') {
		snprintf(e->message, sizeof(e->message), "message '%c'", m.type);
		h_msg_free(&m);
		return -1;
	}
	h_msg_field(&m, 'C', e->sqlstate, sizeof(e->sqlstate));
	h_msg_field(&m, 'V', e->severity, sizeof(e->severity));
	h_msg_field(&m, 'M', e->message, sizeof(e->message));
	h_msg_free(&m);
	return 1;
}

size_t h_startup_packet(char *buf, size_t cap, const char *const kv[])
{
	size_t len = 8;

	if (cap < 9)
		return 0;
	put_u32(buf + 4, 196608);       /* protocol 3.0 */
	for (int i = 0; kv && kv[i]; i++) {
		size_t n = strlen(kv[i]) + 1;

		if (len + n + 1 > cap)
			return 0;
		memcpy(buf + len, kv[i], n);
		len += n;
	}
	buf[len++] = '\0';
	put_u32(buf, (uint32_t)len);
	return len;
}

/* Copies the SQLSTATE ('C') and message ('M') fields of an ErrorResponse. */
static void parse_error(const struct h_msg *m, char sqlstate[6], char *message, size_t msglen)
{
	if (sqlstate)
		h_msg_field(m, 'C', sqlstate, 6);
	if (message && msglen)
		h_msg_field(m, 'M', message, msglen);
}

int h_raw_login(int fd, const char *const kv[], struct h_login *out, int timeout_ms)
{
	int64_t deadline = h_now_ms() + timeout_ms;
	char pkt[4096];
	size_t len = h_startup_packet(pkt, sizeof(pkt), kv);

	memset(out, 0, sizeof(*out));
	if (len == 0 || h_raw_send(fd, pkt, len) != 0)
		return -1;
	for (;;) {
		struct h_msg m;
		int rc = h_raw_read_msg(fd, &m, ms_left(deadline));

		if (rc <= 0)
			return -1;
		switch (m.type) {
		case 'R':
			if (m.len >= 4 && get_u32(m.body) == 0) {
				out->auth_ok = true;
			} else {
				/* Trust only: a password request means the wrong setup. */
				snprintf(out->message, sizeof(out->message),
					 "unexpected authentication request %u",
					 m.len >= 4 ? get_u32(m.body) : 0);
				h_msg_free(&m);
				return -1;
			}
			break;
		case 'S':
			if (out->nparams < 40) {
				snprintf(out->param_name[out->nparams], 64, "%s", m.body);
				snprintf(out->param_value[out->nparams], 128, "%s",
					 m.body + strnlen(m.body, m.len) + (strnlen(m.body, m.len) < m.len));
				out->nparams++;
			}
			break;
		case 'K':
			out->key_data = true;
			break;
		case 'Z':
			out->ready = true;
			h_msg_free(&m);
			return 0;
		case 'E':
			parse_error(&m, out->sqlstate, out->message, sizeof(out->message));
			h_msg_free(&m);
			return 1;
		default:
			break;
		}
		h_msg_free(&m);
	}
}

const char *h_login_param(const struct h_login *l, const char *name)
{
	for (int i = 0; i < l->nparams; i++) {
		if (strcmp(l->param_name[i], name) == 0)
			return l->param_value[i];
	}
	return NULL;
}

int h_raw_send_query(int fd, const char *sql)
{
	size_t sqllen = strlen(sql) + 1;
	char *pkt = malloc(sqllen + 5);
	int rc;

	if (!pkt)
		return -1;
	pkt[0] = 'Q';
	put_u32(pkt + 1, (uint32_t)(sqllen + 4));
	memcpy(pkt + 5, sql, sqllen);
	rc = h_raw_send(fd, pkt, sqllen + 5);
	free(pkt);
	return rc;
}

int h_raw_query_result(int fd, char *out, size_t outlen, char sqlstate[6], int timeout_ms)
{
	int64_t deadline = h_now_ms() + timeout_ms;
	bool failed = false, have_row = false;
	int rc;

	if (out && outlen)
		out[0] = '\0';
	if (sqlstate)
		sqlstate[0] = '\0';
	for (;;) {
		struct h_msg m;

		rc = h_raw_read_msg(fd, &m, ms_left(deadline));
		if (rc <= 0)
			return -1;
		if (m.type == 'D' && !have_row && m.len >= 6) {
			uint32_t vlen = get_u32(m.body + 2);

			have_row = true;
			if (out && outlen && vlen != 0xffffffffu && 6 + vlen <= m.len)
				snprintf(out, outlen, "%.*s", (int)vlen, m.body + 6);
		} else if (m.type == 'E') {
			failed = true;
			parse_error(&m, sqlstate, NULL, 0);
		} else if (m.type == 'Z') {
			h_msg_free(&m);
			return failed ? 1 : 0;
		}
		h_msg_free(&m);
	}
}

int h_raw_query(int fd, const char *sql, char *out, size_t outlen,
		char sqlstate[6], int timeout_ms)
{
	if (out && outlen)
		out[0] = '\0';
	if (sqlstate)
		sqlstate[0] = '\0';
	if (h_raw_send_query(fd, sql) != 0)
		return -1;
	return h_raw_query_result(fd, out, outlen, sqlstate, timeout_ms);
}

/* ---- systemd's side of sd_notify -------------------------------------- */

void h_notify_open(struct h_notify *n)
{
	struct sockaddr_un sa;
	char *dir = h_mkdtemp("notify");

	memset(n, 0, sizeof(*n));
	n->fd = -1;
	ck_assert_msg(dir != NULL, "mkdtemp: %s", strerror(errno));
	snprintf(n->path, sizeof(n->path), "%s/notify", dir);
	free(dir);
	snprintf(n->env, sizeof(n->env), "NOTIFY_SOCKET=%s", n->path);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	ck_assert_msg(strlen(n->path) < sizeof(sa.sun_path), "notify path too long: %s", n->path);
	memcpy(sa.sun_path, n->path, strlen(n->path) + 1);
	n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	ck_assert_msg(n->fd >= 0 && bind(n->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0,
		      "notify socket %s: %s", n->path, strerror(errno));
}

void h_notify_close(struct h_notify *n)
{
	if (n->fd >= 0)
		close(n->fd);
	n->fd = -1;
	if (n->path[0])
		unlink(n->path);
}

int h_notify_recv(struct h_notify *n, char *buf, size_t len, int timeout_ms)
{
	int64_t deadline = h_now_ms() + timeout_ms;

	for (;;) {
		ssize_t got = recv(n->fd, buf, len - 1, MSG_DONTWAIT);
		struct pollfd pf = { n->fd, POLLIN, 0 };

		if (got >= 0) {
			buf[got] = '\0';
			return (int)got;
		}
		if (errno != EAGAIN && errno != EINTR)
			return -1;
		if (ms_left(deadline) == 0)
			return -2;
		poll(&pf, 1, ms_left(deadline));
	}
}

bool h_notify_value(const char *dgram, const char *key, char *val, size_t len)
{
	size_t klen = strlen(key);
	const char *line = dgram;

	while (line && *line) {
		const char *end = strchr(line, '\n');
		size_t n = end ? (size_t)(end - line) : strlen(line);

		if (n > klen && strncmp(line, key, klen) == 0 && line[klen] == '=') {
			if (val && len)
				snprintf(val, len, "%.*s", (int)(n - klen - 1), line + klen + 1);
			return true;
		}
		line = end ? end + 1 : NULL;
	}
	return false;
}

/* ---- the runner ------------------------------------------------------ */

TCase *h_tcase(const char *name, double timeout_s)
{
	TCase *tc = tcase_create(name);

	tcase_set_timeout(tc, timeout_s);
	return tc;
}

int h_main(Suite *s)
{
	static const char *const pgenv[] = {
		"PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD",
		"PGPASSFILE", "PGSERVICE", "PGSERVICEFILE", "PGOPTIONS", "PGAPPNAME",
		"PGSSLMODE", "PGGSSENCMODE", "PGCONNECT_TIMEOUT", "PGCLIENTENCODING",
		"PGDATESTYLE", "PGTZ", "PGTARGETSESSIONATTRS", "PGREQUIRESSL",
		/* Run under a service manager, the daemons must not talk to it. */
		"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
		"LISTEN_FDNAMES", NULL,
	};
	char err[1024] = "";
	SRunner *sr;
	int failed;

	signal(SIGPIPE, SIG_IGN);
	for (int i = 0; pgenv[i]; i++)
		unsetenv(pgenv[i]);
	setvbuf(stdout, NULL, _IOLBF, 0);
	atexit(cleanup_root);
	if (pg_user_init(err, sizeof(err)) != 0 || root_init(err, sizeof(err)) != 0 ||
	    template_init(err, sizeof(err)) != 0) {
		fprintf(stderr, "harness: cannot prepare PostgreSQL: %s\n", err);
		srunner_free(srunner_create(s));
		cleanup_root();
		return EXIT_FAILURE;
	}
	sr = srunner_create(s);
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	cleanup_root();
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

size_t h_put_msg(char *buf, size_t at, char type, const void *body, uint32_t len)
{
	uint32_t be = htonl(len + 4);

	buf[at] = type;
	memcpy(buf + at + 1, &be, 4);
	memcpy(buf + at + 5, body, len);
	return at + 5 + len;
}

static void *cancel_thread(void *arg)
{
	struct h_cancel_job *j = arg;

	j->ok = PQcancel(j->cancel, j->err, sizeof(j->err));
	return NULL;
}

void h_cancel_start(PGconn *c, struct h_cancel_job *j)
{
	memset(j, 0, sizeof(*j));
	j->cancel = PQgetCancel(c);
	h_assert(j->cancel != NULL, "PQgetCancel: no cancel key from pgberth");
	h_assert(pthread_create(&j->thread, NULL, cancel_thread, j) == 0, "pthread_create");
}

bool h_cancel_wait(struct h_cancel_job *j, int timeout_ms)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	if (pthread_timedjoin_np(j->thread, NULL, &until) != 0)
		return false;
	PQfreeCancel(j->cancel);
	j->cancel = NULL;
	return true;
}

void h_cancel(PGconn *c)
{
	struct h_cancel_job job;

	h_cancel_start(c, &job);
	h_assert(h_cancel_wait(&job, 10000),
		 "PQcancel did not return within 10 s (cancel connection never closed)");
	h_assert(job.ok == 1, "PQcancel failed: %s", job.err);
}

void h_assert_value(PGconn *c, const char *sql, const char *want)
{
	char *v = h_query_value(c, sql);

	h_assert(v && strcmp(v, want) == 0, "\"%s\" returned \"%s\", expected \"%s\"", sql,
		 v ? v : "(null)", want);
	free(v);
}

char *h_pg_setting(const char *setting)
{
	PGconn *direct = h_pg_connect(&h_shared_pg, NULL);
	char sql[128], *v;

	snprintf(sql, sizeof(sql), "SHOW %s", setting);
	v = h_query_value(direct, sql);
	PQfinish(direct);
	return v;
}
