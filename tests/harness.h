/*
 * End-to-end test harness: a throwaway PostgreSQL, the real pgberth binary,
 * and libpq and raw-protocol clients, all bounded by deadlines.
 *
 * Every test binary calls h_main(). It makes one private temporary root,
 * runs initdb ONCE into a template data directory (database "appdb", the
 * roles below, a password-checked pg_hba line for "pwuser"), then runs the
 * suite. Each PostgreSQL instance is a `cp -a` of that template on its own
 * Unix socket (listen_addresses=''), so a start costs a fraction of a second
 * instead of an initdb. h_tcase_add_pg() gives a TCase one such instance,
 * started in the runner process (a Check unchecked fixture, so it outlives
 * the forked tests of that TCase); each test starts its own daemon.
 *
 * PostgreSQL refuses to run as root, so when euid is 0 initdb and postgres
 * run as the system user "pgberth-test" (created with useradd if missing)
 * and the directories they write are chowned to it.
 *
 * Processes and cleanup: every child the harness forks stays in the
 * caller's process group and gets PR_SET_PDEATHSIG(SIGKILL), so neither a
 * failed assertion (Check _exit()s the test child, then killpg()s its group)
 * nor a timeout leaves a daemon or postmaster behind. The runner removes the
 * whole temporary root when the suite ends.
 *
 * Assertions: helpers whose name does not end in _try assert with Check and
 * on failure print the tail of every daemon and PostgreSQL log this process
 * started (h_assert does the same for the tests' own checks). The _try
 * variants never assert; use them from threads other than the test's own and
 * from unchecked fixtures. Nothing here waits without a deadline.
 *
 * systemd's side, for the service tests: h_spawn_env starts a child with
 * extra environment and a listening socket as fd 3 (LISTEN_FDS), h_notify_*
 * is the NOTIFY_SOCKET end that reads sd_notify datagrams, and
 * h_daemon_reload rewrites a running daemon's config and sends SIGHUP.
 *
 * Names: h_ is the harness prefix; it keeps clear of the daemon's objects,
 * which are linked into every test binary.
 */
#ifndef PGBERTH_TESTS_HARNESS_H
#define PGBERTH_TESTS_HARNESS_H

#include <check.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define H_SUPERUSER      "pgberth"      /* initdb -U: the PostgreSQL superuser */
#define H_PG_PORT        5432           /* private socket dir, so never in conflict */
#define H_DAEMON_PORT    6432
#define H_PATH_MAX       256
#define H_QUERY_TIMEOUT  15000          /* ms; default deadline of one query */
#define H_START_TIMEOUT  15000          /* ms; daemon or PostgreSQL start */

/* Roles in the template (besides the superuser). */
#define H_PW_USER        "pwuser"       /* LOGIN PASSWORD 'secret', scram in pg_hba */
#define H_PW_PASSWORD    "secret"
#define H_CROWD_USER     "crowd"        /* LOGIN CONNECTION LIMIT 5 */
#define H_CROWD_LIMIT    5

/* Fails the current test after dumping the logs of everything it started. */
#define h_assert(expr, ...) \
	do { \
		if (!(expr)) { \
			h_dump_logs(); \
			ck_abort_msg(__VA_ARGS__); \
		} \
	} while (0)

/* ---- time and files -------------------------------------------------- */

int64_t h_now_ms(void);
void h_sleep_ms(int ms);
/* A new empty directory under the temporary root, mode 0711; caller frees. */
char *h_mkdtemp(const char *tag);
/* Whole file as a NUL-terminated string, or NULL; caller frees. */
char *h_read_file(const char *path);
bool h_write_file(const char *path, const char *text);
bool h_path_exists(const char *path);
/* True if path is a socket (stat, so through links); its inode in *ino unless ino is NULL. */
bool h_is_socket(const char *path, ino_t *ino);
/* Removes a directory tree; quiet about what is already gone. */
void h_rm_rf(const char *path);

/* ---- child processes ------------------------------------------------- */

/*
 * Forks and execs argv with stdin from /dev/null and stdout+stderr appended
 * to out_path (or /dev/null). The child closes every other fd, dies with the
 * calling thread (PR_SET_PDEATHSIG), and with as_pg_user runs as the
 * PostgreSQL user with cwd "/". Returns the pid or -1.
 */
pid_t h_spawn(const char *const argv[], const char *out_path, bool as_pg_user);
/*
 * Waits for pid to exit within timeout_ms. Returns the elapsed ms and the
 * wait status in *status, or -1 when the deadline passed (the child is left
 * running).
 */
int h_wait_pid(pid_t pid, int timeout_ms, int *status);
/* "exit status 1", "killed by signal 9 (Killed)", ... for messages. */
void h_describe_status(int status, char *buf, size_t len);
/* Sends SIGKILL and reaps; for children that missed their deadline. */
void h_kill_wait(pid_t pid);
/*
 * Runs argv to completion within timeout_ms (killed otherwise). Returns the
 * exit status (0-255), or -1 if it timed out or died by a signal.
 */
int h_run(const char *const argv[], const char *out_path, bool as_pg_user, int timeout_ms);
/*
 * h_spawn the way systemd starts a service (never as the PostgreSQL user).
 * The child's environment is ours plus env: "KEY=VALUE" strings, NULL
 * terminated (env itself may be NULL), each replacing an inherited KEY; a
 * VALUE of "@PID@" becomes the child's own pid, as WATCHDOG_PID wants.
 * listen_fd >= 0 is passed as sd_listen_fds(3) expects: as fd 3, with
 * LISTEN_FDS=1 and LISTEN_PID=<the child's pid>; our copy stays open.
 */
pid_t h_spawn_env(const char *const argv[], const char *out_path, const char *const env[],
		  int listen_fd);
/* Path of a PostgreSQL program: $PG_BINDIR, else newest /usr/lib/postgresql/N/bin. */
const char *h_pg_bin(const char *program);
/* Daemon binary: $PGBERTH_BIN (made absolute), default build/pgberth. */
const char *h_daemon_bin(void);

/* Open fds of a process (/proc/PID/fd), or -1. */
int h_proc_fd_count(pid_t pid);
/* A KiB field of /proc/PID/status ("VmRSS", "VmHWM"), or -1. */
long h_proc_status_kb(pid_t pid, const char *field);
/* Resident set size of a process in KiB (VmRSS), or -1. */
long h_proc_rss_kb(pid_t pid);

/* Under ASan, RSS says nothing about what the code keeps: shadow memory and
 * the quarantine of freed blocks dominate it. */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* ---- PostgreSQL ------------------------------------------------------ */

struct h_pg {
	pid_t pid;                     /* postmaster, our child; 0 when stopped */
	int port;
	char dir[H_PATH_MAX];          /* instance root: data/, s/, postgres.log */
	char datadir[H_PATH_MAX];
	char sockdir[H_PATH_MAX];      /* unix_socket_directories */
	char log[H_PATH_MAX];
	char error[512];               /* why h_pg_start_try failed */
};

/* Copies the template and starts it; 0, or -1 with pg->error set. */
int h_pg_start_try(struct h_pg *pg);
void h_pg_start(struct h_pg *pg);
/* Immediate shutdown (SIGQUIT, as pg_ctl stop -m immediate), then removes the copy. */
void h_pg_stop(struct h_pg *pg);

/*
 * SIGSTOP (freeze) or SIGCONT (thaw) to the postmaster and every process it
 * forked, as a PostgreSQL that hangs on a dead disk. Thawing is harmless on
 * a running instance: put h_pg_thaw in a teardown of any TCase that
 * freezes, so that a failed test does not leave PostgreSQL stopped.
 */
void h_pg_freeze(const struct h_pg *pg);
void h_pg_thaw(const struct h_pg *pg);

/* The instance h_tcase_add_pg() starts for a TCase. */
extern struct h_pg h_shared_pg;
/*
 * Gives tc the shared instance: started before its first test and stopped
 * after its last (unchecked fixture), checked to be up before each test.
 */
void h_tcase_add_pg(TCase *tc);

/* Superuser connection straight to PostgreSQL (database appdb unless extra says). */
PGconn *h_pg_connect(const struct h_pg *pg, const char *extra);
/* Runs sql straight on the shared instance, as the superuser; asserts it succeeded. */
void h_pg_exec(const char *sql);
/* A LOGIN role in the shared instance; roles outlive a test, so a role that exists is fine. */
void h_create_role(const char *role);

/* A thread that counts something in PostgreSQL over and over (what a pool holds at once). */
struct h_sampler {
	PGconn *direct;                /* its own connection to the shared instance */
	char sql[512];                 /* one count */
	pthread_t th;
	atomic_bool stop;
	int max;                       /* largest count seen */
	int samples;
	char error[256];               /* why sampling ended early, "" if it did not */
};
/* Starts s running sql every millisecond on a direct connection to the shared instance. */
void h_sampler_start(struct h_sampler *s, const char *sql);
/* Stops s; asserts it took a sample and met no error. The caller asserts on s->max. */
void h_sampler_stop(struct h_sampler *s);

/* ---- the daemon ------------------------------------------------------ */

struct h_daemon_opts {
	int workers;                   /* 0: 2 */
	const char *accept_spread;     /* NULL: always, so that clients land on every worker */
	int pool_size;                 /* appdb pool_size; 0: 5 */
	const char *pool_mode;         /* NULL: session */
	const char *shutdown_timeout;  /* NULL: 2s */
	const char *server_connect_timeout; /* NULL: 5s */
	const char *log_level;         /* NULL: info */
	const char *socket_mode;       /* NULL: "0777" */
	const char *sockdir;           /* listen on this dir (a second daemon); NULL: new */
	/*
	 * Raw YAML. extra_top is added at top level; extra_dbs under
	 * "databases:" after appdb (indent entries by two spaces). In both,
	 * @PGHOST@ and @PGPORT@ become the PostgreSQL socket dir and port.
	 */
	const char *extra_top;
	const char *extra_dbs;
	/*
	 * Raw YAML added inside the appdb entry, after its pool_mode (indent
	 * keys by four spaces), e.g. "    users:\n      bob: {pool_mode: session}\n".
	 * Same substitutions as above.
	 */
	const char *extra_appdb;
};

struct h_daemon {
	pid_t pid;                     /* our child; 0 once reaped */
	int status;                    /* wait status once reaped */
	int port;
	char dir[H_PATH_MAX];          /* config and log */
	char sockdir[H_PATH_MAX];
	char sockpath[H_PATH_MAX];     /* <sockdir>/.s.PGSQL.<port> */
	char lockpath[H_PATH_MAX];     /* <sockpath>.lock */
	char config[H_PATH_MAX];
	char log[H_PATH_MAX];
};

/* Fills d's paths and writes its config file; does not start anything. */
void h_daemon_prepare(struct h_daemon *d, const struct h_pg *pg,
		      const struct h_daemon_opts *opts);
/* Forks `pgberth -c config`, stderr to d->log. Returns the pid or -1. */
pid_t h_daemon_spawn(struct h_daemon *d);
/* The same through h_spawn_env: extra environment and an inherited socket. */
pid_t h_daemon_spawn_env(struct h_daemon *d, const char *const env[], int listen_fd);
/*
 * The config file h_daemon_prepare writes for opts, for d's socket dir and
 * port (opts->sockdir is not looked at); caller frees. For a reload, or to
 * edit before writing.
 */
char *h_daemon_config_text(const struct h_daemon *d, const struct h_pg *pg,
			   const struct h_daemon_opts *opts);
/*
 * Replaces d's config file with yaml (by rename, so the daemon never reads
 * half a file) and sends SIGHUP. Asserts that both worked.
 */
void h_daemon_reload(struct h_daemon *d, const char *yaml);
/* Size of d's log so far: where to start looking with h_daemon_wait_log. */
long h_daemon_log_size(const struct h_daemon *d);
/* True once d's log, past offset, contains needle; false at the deadline. */
bool h_daemon_wait_log(const struct h_daemon *d, long offset, const char *needle,
		       int timeout_ms);
/*
 * Waits until the socket file exists and accepts a connection. Returns
 * true, or false if the deadline passed or the daemon exited (then reaped,
 * d->status set).
 */
bool h_daemon_wait_ready(struct h_daemon *d, int timeout_ms);
/*
 * Waits until a login (user pgberth, database appdb) through d->sockpath
 * gets ReadyForQuery: readiness when the socket is not the daemon's own
 * (socket activation: it accepts connections before the daemon runs).
 * False if the deadline passed or the daemon exited (then reaped).
 */
bool h_daemon_wait_login(struct h_daemon *d, int timeout_ms);
/* prepare + spawn + wait_ready, asserting; returns the pid. */
pid_t h_daemon_start(struct h_daemon *d, const struct h_pg *pg,
		     const struct h_daemon_opts *opts);
/*
 * Sends sig and waits up to timeout_ms. Returns how long the exit took in
 * ms, or -1 if it did not exit in time (then it is SIGKILLed and reaped).
 */
int h_daemon_stop(struct h_daemon *d, int sig, int timeout_ms);
/* SIGTERM; asserts exit within 10 s with status 0 (ASan/LSan reports fail it). */
void h_daemon_stop_ok(struct h_daemon *d);
/* True (and d reaped) if the daemon has exited. */
bool h_daemon_exited(struct h_daemon *d);
/* Prints the last lines of every daemon and PostgreSQL log this process started. */
void h_dump_logs(void);

/* ---- libpq clients --------------------------------------------------- */

/*
 * Conninfo for the daemon: host, port, dbname=appdb, user=pgberth and a
 * connect_timeout; extra is appended (later keywords win). Caller frees.
 */
char *h_conninfo(const struct h_daemon *d, const char *extra);
/* Connects through the daemon; asserts CONNECTION_OK. */
PGconn *h_connect(const struct h_daemon *d, const char *extra);
/* Never asserts; the caller checks PQstatus and PQfinishes. */
PGconn *h_connect_try(const struct h_daemon *d, const char *extra);
/* h_connect to database db as user (NULL: the superuser). */
PGconn *h_connect_db(const struct h_daemon *d, const char *db, const char *user);
/*
 * PQconnectStart through the daemon (conninfo as h_conninfo), for a client
 * that must wait or be refused while the test goes on; drive it with
 * h_drive_connect. verbose puts the server's SQLSTATE into PQerrorMessage
 * ("FATAL:  53300: ..."), the only place libpq tells it for a failed login.
 */
PGconn *h_connect_start(const struct h_daemon *d, const char *extra, bool verbose,
			PostgresPollingStatusType *state);
/* PGRES_POLLING_OK or PGRES_POLLING_FAILED, or -1 if still going at the deadline. */
int h_drive_connect(PGconn *c, PostgresPollingStatusType *state, int64_t deadline);
/* Asserts that a query through d is answered: the daemon serves. */
void h_assert_serves(const struct h_daemon *d);

/*
 * Waits for the result of a query already sent (PQsend*). Returns the
 * last result (or the first COPY result), NULL if timeout_ms passed first
 * or the connection broke without one. Never asserts.
 */
PGresult *h_result_try(PGconn *c, int timeout_ms);
/* PQsendQuery + h_result_try, in non-blocking mode. Never asserts. */
PGresult *h_exec_try(PGconn *c, const char *sql, int timeout_ms);
/* Asserts a result arrived within H_QUERY_TIMEOUT; caller PQclears. */
PGresult *h_exec(PGconn *c, const char *sql);
/* Asserts the query succeeded (COMMAND_OK or TUPLES_OK). */
void h_exec_ok(PGconn *c, const char *sql);
/* Asserts the query failed with this SQLSTATE. */
void h_exec_fails(PGconn *c, const char *sql, const char *sqlstate);
/* First column of the first row, asserting success and a row; caller frees. NULL for SQL NULL. */
char *h_query_value(PGconn *c, const char *sql);
/* Asserts that sql's first value is want. */
void h_assert_value(PGconn *c, const char *sql, const char *want);
/* A setting's value on a fresh direct connection to the shared instance
 * (SHOW, not through pgberth); caller frees. */
char *h_pg_setting(const char *setting);
long long h_query_ll(PGconn *c, const char *sql);
/* The result's SQLSTATE, or "" if it has none. */
const char *h_sqlstate(const PGresult *r);
/* pg_backend_pid() of c's session (through pgberth: of the server it runs on now). */
long long h_backend_pid(PGconn *c);
/*
 * Runs sql (returning one boolean) every few ms until it returns true.
 * False if timeout_ms passed first.
 */
bool h_poll_until(PGconn *c, const char *sql, int timeout_ms);

/* PQsendQuery, asserting that it was sent. */
void h_send_query(PGconn *c, const char *sql);
/* True if the query c sent has still no result ms from now. */
bool h_still_waiting(PGconn *c, int ms);
/* First value of the result of a query sent earlier, asserting success; caller frees. */
char *h_pending_value(PGconn *c, const char *what);
/* Asserts that the first value of the result of a query sent earlier is want. */
void h_assert_pending_value(PGconn *c, const char *what, const char *want);

/* What one query came to: every result read, the first error kept. */
struct h_outcome {
	bool answered;                 /* the query ended (results or a broken connection) */
	bool ok;                       /* no error result */
	char sqlstate[6];              /* of the first error, "" if none or without one */
	char message[256];
	long long value;               /* first column of the first row, if numeric */
	int ms;                        /* from t0 (h_run_query: the send) to the end */
};
/*
 * Reads every result of the query c sent until libpq has none left or the
 * connection broke, within timeout_ms. Unlike h_result_try it keeps the
 * FIRST error, the one pgberth or PostgreSQL sent; a broken connection adds
 * libpq's own after it. Never asserts.
 */
void h_collect_results(PGconn *c, int64_t t0, int timeout_ms, struct h_outcome *o);
/* Sends sql and h_collect_results; a send that fails is an answered error. Never asserts. */
void h_run_query(PGconn *c, const char *sql, int timeout_ms, struct h_outcome *o);

/* ---- systemd's side of sd_notify -------------------------------------- */

struct h_notify {
	int fd;                        /* AF_UNIX datagram socket bound at path */
	char path[H_PATH_MAX];
	char env[H_PATH_MAX + 16];     /* "NOTIFY_SOCKET=<path>", for h_spawn_env */
};

/* Binds a datagram socket in a new temporary directory; asserts. */
void h_notify_open(struct h_notify *n);
void h_notify_close(struct h_notify *n);
/*
 * The next datagram (newline-separated KEY=VALUE lines), NUL-terminated
 * in buf: its length, -2 if timeout_ms passed first, -1 on error.
 */
int h_notify_recv(struct h_notify *n, char *buf, size_t len, int timeout_ms);
/* The value of the line KEY=... of a datagram into val; false if it has none. */
bool h_notify_value(const char *dgram, const char *key, char *val, size_t len);

/* ---- raw protocol ---------------------------------------------------- */

/* Connected AF_UNIX stream socket, or -1. */
int h_raw_connect(const char *sockpath);
/* A raw client logged in to db through d as user (NULL: the superuser); asserts. */
int h_raw_client(const struct h_daemon *d, const char *db, const char *user);
/* Writes everything (MSG_NOSIGNAL); 0, or -1 if the peer is gone. */
int h_raw_send(int fd, const void *buf, size_t len);
/* Reads exactly len bytes: len, 0 on EOF first, -1 on error, -2 on timeout. */
ssize_t h_raw_read(int fd, void *buf, size_t len, int timeout_ms);
/*
 * Reads and discards until the peer closes. 0 on EOF (or reset), -2 if
 * timeout_ms passed with the connection still open.
 */
int h_raw_wait_eof(int fd, int timeout_ms);

struct h_msg {
	char type;
	uint32_t len;                  /* body length (the length field minus 4) */
	char *body;                    /* malloc'd, NUL-terminated for convenience */
};
/* One backend message: 1 on success, 0 on EOF, -1 error/garbage, -2 timeout. */
int h_raw_read_msg(int fd, struct h_msg *m, int timeout_ms);
void h_msg_free(struct h_msg *m);
/* One field of an ErrorResponse or NoticeResponse body into out ("" if absent). */
void h_msg_field(const struct h_msg *m, char field, char *out, size_t len);

struct h_raw_error {
	char sqlstate[6];
	char severity[16];             /* the non-localized 'V' field */
	char message[256];
};
/*
 * Waits for an unsolicited message on an idle raw client. Returns 1 with
 * the ErrorResponse's fields, 0 on EOF first, -2 at the deadline, -1 if
 * something else came (its type in e->message).
 */
int h_raw_wait_error(int fd, int timeout_ms, struct h_raw_error *e);

/*
 * Builds a v3.0 StartupMessage from NULL-terminated key/value pairs into
 * buf; returns its length, or 0 if it does not fit.
 */
size_t h_startup_packet(char *buf, size_t cap, const char *const kv[]);

struct h_login {
	bool auth_ok;                  /* AuthenticationOk seen */
	bool key_data;                 /* BackendKeyData seen */
	bool ready;                    /* ReadyForQuery seen */
	char sqlstate[6];              /* from an ErrorResponse */
	char message[512];
	int nparams;
	char param_name[40][64];       /* ParameterStatus pairs */
	char param_value[40][128];
};
/*
 * Sends a StartupMessage built from kv and reads until ReadyForQuery
 * (returns 0) or ErrorResponse (returns 1, sqlstate/message set); -1 on EOF,
 * timeout or garbage.
 */
int h_raw_login(int fd, const char *const kv[], struct h_login *out, int timeout_ms);
/* A ParameterStatus value from a login, or NULL. */
const char *h_login_param(const struct h_login *l, const char *name);
/*
 * Simple Query; copies the first column of the first DataRow into out.
 * 0 on ReadyForQuery without error, 1 after an ErrorResponse (sqlstate
 * set when non-NULL), -1 on EOF/timeout/garbage.
 */
int h_raw_query(int fd, const char *sql, char *out, size_t outlen,
		char sqlstate[6], int timeout_ms);
/*
 * h_raw_query in two halves, for a query that runs while the test does
 * something else: send (0, or -1 if the peer is gone), then read its
 * replies (same returns as h_raw_query).
 */
int h_raw_send_query(int fd, const char *sql);
int h_raw_query_result(int fd, char *out, size_t outlen, char sqlstate[6], int timeout_ms);

/* ---- the runner ------------------------------------------------------ */

/* A TCase with a timeout in seconds (a hang backstop; tests use their own deadlines). */
TCase *h_tcase(const char *name, double timeout_s);
/*
 * Prepares the temporary root and the template cluster, runs s, prints
 * Check's summary, removes everything. Returns the process exit code.
 */
/* Appends one regular message (type, length, body) at buf + at; returns
 * the new end. buf must have room for len + 5 more bytes. */
size_t h_put_msg(char *buf, size_t at, char type, const void *body, uint32_t len);
/* PQcancel for c's running query (through pgberth), in a thread so that a
 * cancel connection pgberth never closes fails the test after 10 s instead
 * of hanging it. Asserts that PQcancel succeeded. */
void h_cancel(PGconn *c);

/* The same in two halves, for a cancel that pgberth holds open while the
 * test does something else. h_cancel_wait returns false if PQcancel is
 * still waiting for the cancel connection to close after timeout_ms; once
 * it returned true, ok and err are PQcancel's. */
struct h_cancel_job {
	PGcancel *cancel;
	pthread_t thread;
	int ok;
	char err[256];
};
void h_cancel_start(PGconn *c, struct h_cancel_job *j);
bool h_cancel_wait(struct h_cancel_job *j, int timeout_ms);

int h_main(Suite *s);

#endif
