/*
 * pgberth: PostgreSQL connection pooler. Command line and configuration
 * loading; the daemon itself runs in lifecycle.c.
 */
#include <errno.h>
#include <getopt.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "lifecycle.h"
#include "log.h"

#define PGBERTH_VERSION "0.1.0"

static void usage(FILE *out)
{
	fprintf(out,
	        "pgberth %s: PostgreSQL connection pooler\n"
	        "\n"
	        "Usage:\n"
	        "  pgberth -c FILE           run in the foreground, logging to stderr\n"
	        "  pgberth --check -c FILE   validate FILE and exit (0 valid, 1 errors)\n"
	        "  pgberth --version         print the version\n"
	        "  pgberth --help            this help\n"
	        "\n"
	        "Signals:\n"
	        "  SIGHUP    reload FILE (a broken file changes nothing)\n"
	        "  SIGTERM   drain: stop accepting, let transactions finish (drain_timeout),\n"
	        "            then stop (shutdown_timeout); a second SIGTERM stops at once\n"
	        "  SIGINT    fast shutdown: no drain, within shutdown_timeout\n"
	        "  SIGQUIT   the same, at once, also during a drain\n"
	        "  SIGUSR1   pause: clients wait for servers; SIGUSR2 resumes\n",
	        PGBERTH_VERSION);
}

/* Every client and server is an fd: the soft limit (often 1024) goes up to
 * the hard one, and a hard limit below what max_client_conn needs is
 * worth a warning at start rather than EMFILE under load. */
static void raise_fd_limit(const struct config *cfg)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			log_warn("cannot raise the open files limit: %s", strerror(errno));
	}
	rlim_t need = (rlim_t)cfg->max_client_conn + 64;
	for (size_t i = 0; i < cfg->ndbs; i++)
		need += (rlim_t)cfg->dbs[i].pool_size + (rlim_t)cfg->dbs[i].reserve_pool_size;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < need)
		log_warn("open files limit %llu is below what max_client_conn and the pools need (%llu); "
		         "raise LimitNOFILE or ulimit -n", (unsigned long long)rl.rlim_cur,
		         (unsigned long long)need);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'},
		{"check", no_argument, NULL, 't'},
		{"version", no_argument, NULL, 'V'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *path = NULL;
	int check_only = 0, opt;

	while ((opt = getopt_long(argc, argv, "c:tVh", opts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			path = optarg;
			break;
		case 't':
			check_only = 1;
			break;
		case 'V':
			printf("pgberth %s\n", PGBERTH_VERSION);
			return EXIT_SUCCESS;
		case 'h':
			usage(stdout);
			return EXIT_SUCCESS;
		default:
			usage(stderr);
			return EXIT_FAILURE;
		}
	}
	if (path == NULL || optind != argc) {
		fprintf(stderr, "pgberth: %s\n", path == NULL ? "a configuration file is required (-c FILE)"
		                                                : "unexpected argument");
		usage(stderr);
		return EXIT_FAILURE;
	}

	struct config_errors errs = {0};
	struct config *cfg = config_load(path, &errs);
	if (cfg == NULL) {
		for (size_t i = 0; i < errs.n; i++)
			fprintf(stderr, "%s\n", errs.msgs[i]);
		fprintf(stderr, "pgberth: %zu error%s in \"%s\"; not starting\n", errs.n,
		        errs.n == 1 ? "" : "s", path);
		config_errors_free(&errs);
		return EXIT_FAILURE;
	}
	if (check_only) {
		printf("pgberth: configuration file \"%s\" is valid\n", path);
		config_unref(cfg);
		return EXIT_SUCCESS;
	}
	log_set_level(cfg->log_level);
	raise_fd_limit(cfg);
	return lifecycle_run(cfg, path);
}
