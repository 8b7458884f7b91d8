#!/usr/bin/env bash
# shellcheck disable=SC2317  # cleanup, on_signal and helpers run from traps
# Benchmarks pgberth against PgBouncer and against PostgreSQL itself, with the
# same pgbench workloads, interleaved in one run so that the ratios hold on a
# noisy machine, and writes what it measured to BUILD_DIR/bench/:
#   results.md   the tables (printed at the end too), with the machine and versions
#   results.csv  one row per workload and target, medians over the rounds
#   runs.csv     every single pgbench run
#   idle.csv     pooler memory per idle client
#   tps.png      TPS against clients (-S, simple protocol), log x axis
#   logs/        pgbench output of every run, pooler and PostgreSQL logs
#
# Usage: scripts/bench.sh [BUILD_DIR]   (default: build; "make bench" builds
# build/pgberth and build/bench/idle_clients first)
#
# Environment (defaults in brackets; BENCH_QUICK=1 changes the defaults to a
# smoke run of a minute or two):
#   BENCH_TIME=10 [2]           seconds per pgbench run
#   BENCH_ROUNDS=1              rounds over all points; results are medians
#   BENCH_CLIENTS="1 50 500 2000" ["1 50"]   clients for -S simple/extended
#                               (the lists may be set empty to skip those points)
#   BENCH_PREPARED_CLIENTS="1 50" ["50"]     clients for -M prepared (session pools)
#   BENCH_CONNECT_CLIENTS=20    clients for -C (a new connection per transaction)
#   BENCH_IDLE_CLIENTS=10000 [1000]          idle clients held on each pooler
#   BENCH_IDLE_TIMEOUT=120      bound on each phase of the idle-client test
#   BENCH_POOL_SIZE=20          pool_size of the transaction pools (both poolers)
#   BENCH_WORKERS=default       pgberth's workers in the main runs (default: the daemon's own default)
#   BENCH_WORKERS_COMPARE="1 2/always 2/churn"
#                               pgberth settings compared, next to PgBouncer, at
#                               -S 50 clients and on -C: a worker count, and
#                               /always or /churn for accept_spread ("" skips)
#   BENCH_FLOOR=1               also run every transaction-pool point through
#                               floor_relay (bench/floor_relay.c), a pooler cut
#                               down to what pgbench needs, as the yardstick of
#                               the least CPU a pooler can spend here (0 skips)
#   BENCH_SCALE=10 [1]          pgbench -i scale
#   BENCH_PG_MAX_CONN=<auto>    PostgreSQL max_connections (auto: enough for
#                               the largest direct run plus the poolers' servers)
#   PG_BINDIR                   PostgreSQL binaries (default: highest /usr/lib/postgresql/*/bin)
#
# Missing packages (pgbouncer, gnuplot-nox, postgresql) are installed with
# apt-get, through sudo when not root. Nothing here uses a system service:
# PostgreSQL (initdb under BUILD_DIR/bench/run) and both poolers listen only
# on Unix sockets in a private mktemp directory, and all three are stopped on
# exit, also on Ctrl-C; the cluster is removed, the results and logs stay.
# PostgreSQL and PgBouncer refuse to run as root, so as root both run as the
# user pgberth-test; pgberth and the clients run as you.
#
# What is measured, per run: pgbench's tps (without the initial connection
# time), its average latency, and the pooler's CPU time (utime + stime of all
# its threads, from /proc/PID/stat, before and after the pgbench process)
# divided by the transactions pgbench counted. The pooler CPU thus includes
# accepting the run's client connections. Each point runs against direct,
# pgberth and PgBouncer back to back, the order rotating from point to point
# and from round to round.
#
# Exit status: 0 when the benchmark ran to its end (individual points may
# still be n/a: see the notes in results.md), 1 when a step failed, 128+N on
# signal N.
set -euo pipefail

BUILD=${1:-build}
cd "$(dirname "$0")/.."
ROOT=$(pwd)
case $BUILD in
/*) ;;
*) BUILD=$ROOT/$BUILD ;;
esac
PGBERTH=$BUILD/pgberth
IDLE=$BUILD/bench/idle_clients
FLOOR=$BUILD/bench/floor_relay
OUT=$BUILD/bench
LOGS=$OUT/logs
PG_USER=pgberth-test    # runs PostgreSQL and PgBouncer when we are root
DB_USER=pgberth         # the cluster's superuser; every client logs in as it
DB=bench                # transaction pools on both poolers, and the real database
DB_SESSION=bench_session # session pools on both poolers (for -M prepared)
PG_PORT=55432
PGB_PORT=6432
BNC_PORT=6433
WORKERS_PORT_BASE=6440  # + 1, 2, ... by BENCH_WORKERS_COMPARE entry, for the workers comparison
FLOOR_PORT=6450         # floor_relay, the yardstick

# --- Settings ---------------------------------------------------------------

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
die() {
	printf 'bench: %s\n' "$*" >&2
	exit 1
}

NPROC=$(nproc)
QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
	d_time=2 d_clients="1 50" d_prepared="50" d_idle=1000 d_scale=1
else
	d_time=10 d_clients="1 50 500 2000" d_prepared="1 50" d_idle=10000 d_scale=10
fi
T=${BENCH_TIME:-$d_time}
ROUNDS=${BENCH_ROUNDS:-1}
CLIENTS=${BENCH_CLIENTS-$d_clients} # lists: set but empty skips those points
PREP_CLIENTS=${BENCH_PREPARED_CLIENTS-$d_prepared}
CONN_CLIENTS=${BENCH_CONNECT_CLIENTS-20}
IDLE_N=${BENCH_IDLE_CLIENTS:-$d_idle}
IDLE_T=${BENCH_IDLE_TIMEOUT:-120}
POOL=${BENCH_POOL_SIZE:-20}
WORKERS=${BENCH_WORKERS:-default}
WORKERS_COMPARE=${BENCH_WORKERS_COMPARE-1 2/always 2/churn}
WORKERS_CLIENTS=50
WITH_FLOOR=${BENCH_FLOOR:-1}
SCALE=${BENCH_SCALE:-$d_scale}

[ "$WORKERS" = default ] || is_uint "$WORKERS" || die "BENCH_WORKERS must be a number or 'default'"
case $WITH_FLOOR in 0 | 1) ;; *) die "BENCH_FLOOR must be 0 or 1" ;; esac
for v in T ROUNDS IDLE_N IDLE_T POOL SCALE; do
	if ! is_uint "${!v}" || [ "${!v}" -eq 0 ]; then
		die "$v must be a positive integer (got \"${!v}\")"
	fi
done
read -r -a CLIENTS_A <<<"$CLIENTS"
read -r -a PREP_A <<<"$PREP_CLIENTS"
read -r -a CONN_A <<<"$CONN_CLIENTS"
read -r -a WLIST <<<"$WORKERS_COMPARE"
for c in "${CLIENTS_A[@]}" "${PREP_A[@]}" "${CONN_A[@]}" "${WLIST[@]%/*}"; do
	if ! is_uint "$c" || [ "$c" -eq 0 ]; then
		die "client and worker counts must be positive integers (got \"$c\")"
	fi
done
for w in "${WLIST[@]}"; do
	case $w in */always | */churn | [0-9]*[0-9] | [0-9]) ;; *) die "BENCH_WORKERS_COMPARE: \"$w\" is not N, N/always or N/churn" ;; esac
done
# wname SETTING: the target's name ("2/churn" -> pgberth_w2_churn); wport SETTING: its port
wname() { echo "pgberth_w${1/\//_}"; }
wport() {
	local i
	for i in "${!WLIST[@]}"; do
		[ "$(wname "${WLIST[$i]}")" = "$1" ] && echo $((WORKERS_PORT_BASE + i + 1)) && return
	done
}
[ -n "${BENCH_PG_MAX_CONN:-}" ] && ! is_uint "$BENCH_PG_MAX_CONN" && die "BENCH_PG_MAX_CONN must be an integer"
max_of() {
	local m=0 x
	for x in "$@"; do [ "$x" -gt "$m" ] && m=$x; done
	echo "$m"
}
# -M prepared needs session pooling; its pools hold a server per client.
SPOOL=$(max_of "$POOL" "${PREP_A[@]}")
MAX_CLIENTS=$(max_of "${CLIENTS_A[@]}" "${PREP_A[@]}" "${CONN_A[@]}" "$WORKERS_CLIENTS")

# --- Helpers --------------------------------------------------------------

t_start=$SECONDS
RUN=""       # PostgreSQL's directory (data, log, pooler configs)
SOCK=""      # private directory holding every socket
pg_started=0
cur_job=""   # the bounded command we are waiting for
cleaned=0
declare -A PIDS=()   # pooler name -> pid
NOTES=()             # lines for the Notes section of results.md

say() { printf '%s\n' "$*"; }
step() { printf '\n== [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
note() {
	NOTES+=("$*")
	say "  note: $*"
}

# Runs a command as the user that owns the cluster, from its directory.
as_pg() {
	if [ "$(id -u)" -eq 0 ]; then
		(cd "$RUN" && runuser -u "$PG_USER" -- "$@")
	else
		(cd "$RUN" && "$@")
	fi
}

# Like as_pg, but execs (no PAM session, no fork), so $! is the program's pid.
as_pg_exec() {
	if [ "$(id -u)" -eq 0 ]; then
		exec setpriv --reuid="$PG_USER" --regid="$PG_USER" --init-groups -- "$@"
	else
		exec "$@"
	fi
}

# run_bounded SECONDS OUTFILE CMD...: runs CMD under timeout in the
# background and waits for it, so that a signal reaches our trap at once.
# Sets RC (124 when the time ran out).
run_bounded() {
	local limit=$1 out=$2
	shift 2
	RC=0
	timeout -k 10 "$limit" "$@" >"$out" 2>&1 &
	cur_job=$!
	wait "$cur_job" || RC=$?
	cur_job=""
}

psql_q() { # PORT DBNAME SQL
	timeout 30 "$PG_BINDIR/psql" -X -qAt -h "$SOCK" -p "$1" -U "$DB_USER" -d "$2" -c "$3"
}

cpu_ticks() { # PID: utime + stime of all its threads, in clock ticks
	local s f
	s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	s=${s##*) }
	read -r -a f <<<"$s"
	echo $((f[11] + f[12]))
}

fmt() { # VALUE PRINTF-FORMAT; "n/a" for no value
	if [ -z "$1" ]; then echo "n/a"; else awk -v v="$1" -v f="$2" 'BEGIN { printf f, v }'; fi
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }

alive() { [ -n "${PIDS[$1]:-}" ] && kill -0 "${PIDS[$1]}" 2>/dev/null; }

stop_proc() { # NAME: SIGTERM (PgBouncer: SIGINT), then SIGKILL after 15 s
	local name=$1 pid=${PIDS[$1]:-} rc=0 sig=TERM
	[ -n "$pid" ] || return 0
	# PgBouncer exits 1 on SIGTERM ("fast exit"), 0 on SIGINT once its
	# clients are gone, which they are by now.
	[ "$name" != pgbouncer ] || sig=INT
	if kill -0 "$pid" 2>/dev/null; then
		kill -"$sig" "$pid" 2>/dev/null || true
		for _ in $(seq 150); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			say "  $name (pid $pid) did not stop within 15 s; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	wait "$pid" 2>/dev/null || rc=$?
	say "  stopped $name (pid $pid, exit status $rc)"
	PIDS[$name]=""
}

stop_pg() {
	[ "$pg_started" -eq 1 ] || return 0
	as_pg "$PG_BINDIR/pg_ctl" -D "$RUN/pgdata" -m fast -w -t 60 stop >/dev/null 2>&1 ||
		as_pg "$PG_BINDIR/pg_ctl" -D "$RUN/pgdata" -m immediate -w -t 30 stop >/dev/null 2>&1 ||
		say "  pg_ctl stop failed; see $LOGS/postgresql.log"
	pg_started=0
}

cleanup() {
	[ "$cleaned" -eq 0 ] || return 0
	cleaned=1
	set +e
	trap '' INT TERM HUP
	step "cleaning up"
	[ -n "$cur_job" ] && kill -TERM "$cur_job" 2>/dev/null && wait "$cur_job" 2>/dev/null
	for name in "${!PIDS[@]}"; do
		stop_proc "$name"
	done
	if [ "$pg_started" -eq 1 ]; then
		stop_pg
		say "  stopped PostgreSQL"
	fi
	if [ -n "$RUN" ] && [ -d "$RUN" ]; then
		[ -f "$RUN/postgresql.log" ] && cp "$RUN/postgresql.log" "$LOGS/postgresql.log"
		rm -rf "$RUN"
		say "  removed $RUN (the cluster); logs are in $LOGS"
	fi
	[ -n "$SOCK" ] && rm -rf "$SOCK"
}

on_signal() {
	say ""
	say "bench: got SIG$1"
	cleanup
	exit "$2"
}

trap cleanup EXIT
trap 'on_signal INT 130' INT
trap 'on_signal TERM 143' TERM
trap 'on_signal HUP 129' HUP

# --- Packages, binaries, limits ------------------------------------------------

step "checking packages"
[ -x "$PGBERTH" ] || die "$PGBERTH not found; run \"make bench\" (or make) first"
[ -x "$IDLE" ] || die "$IDLE not found; run \"make bench\" (or make $IDLE) first"
[ "$WITH_FLOOR" -eq 0 ] || [ -x "$FLOOR" ] || die "$FLOOR not found; run \"make bench\" (or make $FLOOR) first"
pkgs=()
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || pkgs+=(pgbouncer)
command -v gnuplot >/dev/null 2>&1 || pkgs+=(gnuplot-nox)
# shellcheck disable=SC2012  # Debian's paths: no odd names
pg_bindir_guess() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true; }
if [ -z "${PG_BINDIR:-}" ] && [ -z "$(pg_bindir_guess)" ]; then
	pkgs+=(postgresql)
elif [ -z "${PG_BINDIR:-}" ] && [ ! -x "$(pg_bindir_guess)/pgbench" ]; then
	# Debian 12 ships pgbench in postgresql-15; older releases in -contrib.
	pkgs+=(postgresql-contrib)
fi
if [ "${#pkgs[@]}" -gt 0 ]; then
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO=sudo
	say "installing ${pkgs[*]}"
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
fi
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
[ -x "$PGBOUNCER" ] || die "pgbouncer is not installed"
command -v gnuplot >/dev/null 2>&1 || die "gnuplot is not installed"
PG_BINDIR=${PG_BINDIR:-$(pg_bindir_guess)}
for b in initdb pg_ctl postgres psql createdb pgbench; do
	[ -x "$PG_BINDIR/$b" ] || die "$PG_BINDIR/$b is missing (set PG_BINDIR?)"
done
if [ "$(id -u)" -eq 0 ]; then
	command -v setpriv >/dev/null 2>&1 || die "setpriv (util-linux) is missing"
	id "$PG_USER" >/dev/null 2>&1 ||
		useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER"
fi
CLK_TCK=$(getconf CLK_TCK)

# Every process started from here on inherits the limit: the poolers, pgbench
# and idle_clients each hold one fd per connection.
want_fds=65536
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want_fds" ]; then
	ulimit -Hn "$want_fds" 2>/dev/null || true
fi
ulimit -n "$want_fds" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
say "open files limit: $NOFILE"
if [ "$NOFILE" != unlimited ] && [ "$NOFILE" -lt $((IDLE_N + 200)) ]; then
	note "the open files limit is $NOFILE (hard limit; could not raise it to $want_fds), so the idle-client test holds $((NOFILE - 200)) clients instead of $IDLE_N."
	IDLE_N=$((NOFILE - 200))
fi
[ "$NOFILE" = unlimited ] || [ "$NOFILE" -ge $((MAX_CLIENTS + 200)) ] ||
	note "the open files limit ($NOFILE) is below $((MAX_CLIENTS + 200)); the largest runs may fail for lack of fds."

# --- Directories ------------------------------------------------------------

mkdir -p "$OUT"
rm -rf "$LOGS" "$OUT/results.md" "$OUT/results.csv" "$OUT/runs.csv" "$OUT/idle.csv" "$OUT/tps.png"
mkdir -p "$LOGS/runs"
# A run killed with SIGKILL may have left its cluster behind.
if [ -f "$OUT/run/pgdata/postmaster.pid" ]; then
	say "stopping the PostgreSQL a previous run left in $OUT/run"
	RUN=$OUT/run
	as_pg "$PG_BINDIR/pg_ctl" -D "$RUN/pgdata" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
fi
rm -rf "$OUT/run"
RUN=$OUT/run
mkdir -p "$RUN"
if [ "$(id -u)" -eq 0 ]; then
	chown "$PG_USER:" "$RUN"
	if ! runuser -u "$PG_USER" -- test -w "$RUN"; then
		rm -rf "$RUN"
		RUN=$(mktemp -d "${TMPDIR:-/tmp}/pgberth-bench-run.XXXXXX")
		chown "$PG_USER:" "$RUN"
		note "user $PG_USER cannot reach $OUT, so the cluster lived in $RUN."
	fi
fi
# Socket paths must stay under 108 bytes: a short private directory.
SOCK=$(mktemp -d /tmp/pgberth-bench.XXXXXX)
[ "$(id -u)" -ne 0 ] || chown "$PG_USER:" "$SOCK"
chmod 0755 "$SOCK"
for d in "$RUN" "$SOCK"; do
	case $d in
	*[!A-Za-z0-9/._-]*) die "directory \"$d\" has characters this script does not quote" ;;
	esac
done

# --- Machine and versions -----------------------------------------------------

CPU_MODEL=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
[ -n "$CPU_MODEL" ] || CPU_MODEL=$(lscpu 2>/dev/null | awk -F': *' '/^Model name/ { print $2; exit }')
MEM_GB=$(awk '/^MemTotal:/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
if COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); then
	# GIT_OPTIONAL_LOCKS=0: never write the index of a tree others work in.
	if [ -n "$(GIT_OPTIONAL_LOCKS=0 git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
		COMMIT="$COMMIT (worktree has uncommitted changes)"
	fi
else
	COMMIT=unknown
fi
PGBERTH_VERSION=$("$PGBERTH" --version 2>&1 | head -n 1)
PGBERTH_BUILT=$(date -u -r "$PGBERTH" '+%Y-%m-%d %H:%M UTC')
BNC_VERSION=$("$PGBOUNCER" --version 2>&1 | head -n 1)
PG_VERSION=$("$PG_BINDIR/postgres" --version)
say "$CPU_MODEL, $NPROC CPUs, $MEM_GB GiB; $PGBERTH_VERSION at $COMMIT; $BNC_VERSION; $PG_VERSION"

# --- PostgreSQL ------------------------------------------------------------

# Server connections the poolers keep open while the direct runs go on.
RESERVE=$((3 * POOL + 2 * SPOOL + ${#WLIST[@]} * POOL + 10))
SUPERUSER_RESERVED=3
write_pg_conf() { # MAX_CONNECTIONS
	cat >"$RUN/pgdata/bench.conf" <<EOF
# written by scripts/bench.sh: Unix socket only, in a private directory; throwaway data.
listen_addresses = ''
unix_socket_directories = '$SOCK'
port = $PG_PORT
max_connections = $1
superuser_reserved_connections = $SUPERUSER_RESERVED
shared_buffers = 256MB
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
}
start_pg() { # MAX_CONNECTIONS; 0 if it started
	write_pg_conf "$1"
	pg_started=1
	if as_pg "$PG_BINDIR/pg_ctl" -D "$RUN/pgdata" -l "$RUN/postgresql.log" -w -t 120 start >/dev/null 2>&1; then
		return 0
	fi
	as_pg "$PG_BINDIR/pg_ctl" -D "$RUN/pgdata" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
	pg_started=0
	return 1
}

step "PostgreSQL: initdb in $RUN/pgdata, socket $SOCK/.s.PGSQL.$PG_PORT"
as_pg "$PG_BINDIR/initdb" -D "$RUN/pgdata" -U "$DB_USER" --auth=trust -N >"$LOGS/initdb.log" 2>&1 || {
	cat "$LOGS/initdb.log" >&2
	die "initdb failed"
}
echo "include = 'bench.conf'" >>"$RUN/pgdata/postgresql.conf"
PG_MAX_CONN=${BENCH_PG_MAX_CONN:-$((MAX_CLIENTS + RESERVE + SUPERUSER_RESERVED))}
if ! start_pg "$PG_MAX_CONN"; then
	why=$(grep -E 'FATAL|PANIC|could not' "$RUN/postgresql.log" | tail -n 1 || true)
	# Fall back to what all but the largest direct run needs.
	smaller=$(for c in "${CLIENTS_A[@]}" "${PREP_A[@]}" "${CONN_A[@]}" "$WORKERS_CLIENTS"; do
		[ "$c" -lt "$MAX_CLIENTS" ] && echo "$c"; done | sort -n | tail -n 1)
	fallback=$((${smaller:-1} + RESERVE + SUPERUSER_RESERVED))
	note "PostgreSQL did not start with max_connections = $PG_MAX_CONN (${why:-see logs/postgresql.log}); it ran with $fallback."
	PG_MAX_CONN=$fallback
	start_pg "$PG_MAX_CONN" || {
		tail -n 20 "$RUN/postgresql.log" >&2
		die "PostgreSQL did not start"
	}
fi
DIRECT_CAP=$((PG_MAX_CONN - SUPERUSER_RESERVED - RESERVE))
say "PostgreSQL is up: max_connections $PG_MAX_CONN ($DIRECT_CAP left for direct clients while the poolers hold theirs)"
"$PG_BINDIR/createdb" -h "$SOCK" -p "$PG_PORT" -U "$DB_USER" "$DB"
step "pgbench -i -s $SCALE"
run_bounded 1800 "$LOGS/pgbench-init.log" "$PG_BINDIR/pgbench" -i -q -s "$SCALE" -h "$SOCK" -p "$PG_PORT" -U "$DB_USER" "$DB"
[ "$RC" -eq 0 ] || {
	cat "$LOGS/pgbench-init.log" >&2
	die "pgbench -i failed"
}
tail -n 1 "$LOGS/pgbench-init.log"

# --- Poolers ------------------------------------------------------------------

wait_ready() { # NAME PORT: the pooler answers SELECT 1 within 20 s
	local name=$1 port=$2 deadline=$((SECONDS + 20))
	until [ -S "$SOCK/.s.PGSQL.$port" ] && psql_q "$port" "$DB" "select 1" >/dev/null 2>&1; do
		alive "$name" || {
			say "  $name exited at start; its log:"
			tail -n 20 "$LOGS/$name.log" | sed 's/^/  | /'
			PIDS[$name]=""
			return 1
		}
		[ "$SECONDS" -lt "$deadline" ] || {
			say "  $name did not answer on port $port within 20 s"
			return 1
		}
		sleep 0.1
	done
}

start_pgberth() { # NAME PORT WORKERS[/SPREAD] WITH_SESSION_DB
	local name=$1 port=$2 workers=${3%/*} spread="" conf=$RUN/$1.yaml
	[ "$3" = "${3%/*}" ] || spread=${3#*/}
	{
		cat <<EOF
listen:
  socket_dir: $SOCK
  port: $port
$([ "$workers" = default ] || echo "workers: $workers")
$([ -z "$spread" ] || echo "accept_spread: $spread")
log_level: warning
databases:
  $DB:
    conninfo: "host=$SOCK port=$PG_PORT dbname=$DB"
    pool_size: $POOL
    pool_mode: transaction
EOF
		[ "$4" -eq 0 ] || cat <<EOF
  $DB_SESSION:
    conninfo: "host=$SOCK port=$PG_PORT dbname=$DB"
    pool_size: $SPOOL
    pool_mode: session
EOF
	} >"$conf"
	"$PGBERTH" --check -c "$conf" >>"$LOGS/$name.log" 2>&1 || {
		cat "$LOGS/$name.log" >&2
		die "pgberth refuses $conf"
	}
	# Its own session: a Ctrl-C reaches this script, which then stops it.
	setsid "$PGBERTH" -c "$conf" </dev/null 2>>"$LOGS/$name.log" &
	PIDS[$name]=$!
	wait_ready "$name" "$port"
}

start_pgbouncer() {
	local conf=$RUN/pgbouncer.ini
	printf '"%s" ""\n' "$DB_USER" >"$RUN/userlist.txt"
	cat >"$conf" <<EOF
; written by scripts/bench.sh: the same pools as pgberth's, Unix socket only.
[databases]
$DB = host=$SOCK port=$PG_PORT dbname=$DB pool_size=$POOL pool_mode=transaction
$DB_SESSION = host=$SOCK port=$PG_PORT dbname=$DB pool_size=$SPOOL pool_mode=session

[pgbouncer]
listen_addr =
listen_port = $BNC_PORT
unix_socket_dir = $SOCK
unix_socket_mode = 0777
listen_backlog = 4096
auth_type = trust
auth_file = $RUN/userlist.txt
pool_mode = transaction
default_pool_size = $POOL
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = $(max_of 12000 $((IDLE_N + MAX_CLIENTS + 100)))
max_db_connections = 0
server_reset_query = DISCARD ALL
ignore_startup_parameters = extra_float_digits
syslog = 0
log_connections = 0
log_disconnections = 0
log_pooler_errors = 1
log_stats = 0
verbose = 0
EOF
	# No logfile: it logs to stderr, which goes to logs/pgbouncer.log.
	(as_pg_exec setsid "$PGBOUNCER" "$conf") </dev/null 2>>"$LOGS/pgbouncer.log" >&2 &
	PIDS[pgbouncer]=$!
	wait_ready pgbouncer "$BNC_PORT"
}

start_target() { # NAME
	case $1 in
	pgberth) start_pgberth pgberth "$PGB_PORT" "$WORKERS" 1 ;;
	pgbouncer) start_pgbouncer ;;
	pgberth_w*)
		local w
		for w in "${WLIST[@]}"; do
			if [ "$(wname "$w")" = "$1" ]; then
				start_pgberth "$1" "$(wport "$1")" "$w" 0
				return
			fi
		done
		return 1
		;;
	floor)
		setsid "$FLOOR" "$SOCK/.s.PGSQL.$FLOOR_PORT" "$SOCK/.s.PGSQL.$PG_PORT" "$POOL" "$DB" "$DB_USER" \
			</dev/null >/dev/null 2>>"$LOGS/floor.log" &
		PIDS[floor]=$!
		wait_ready floor "$FLOOR_PORT"
		;;
	esac
}

step "starting pgberth (workers $WORKERS) and PgBouncer: pool_size $POOL, transaction; session pool $SPOOL"
start_target pgberth || die "pgberth did not start"
start_target pgbouncer || die "PgBouncer did not start"
say "pgberth pid ${PIDS[pgberth]} on port $PGB_PORT, PgBouncer pid ${PIDS[pgbouncer]} on port $BNC_PORT"
if [ "$WITH_FLOOR" -eq 1 ]; then
	start_target floor || die "floor_relay did not start; see $LOGS/floor.log"
	say "floor_relay pid ${PIDS[floor]} on port $FLOOR_PORT (pool $POOL)"
fi

# --- Runs -----------------------------------------------------------------

echo "round,point,workload,clients,target,tps,latency_ms,transactions,pooler_cpu_ticks,pooler_cpu_us_per_txn,pgbench_T,initial_connection_s,status,note" >"$OUT/runs.csv"
declare -A TPS=() LAT=() CPU=() STATUS=()  # "round|point|target" -> value

target_port() {
	case $1 in
	direct) echo "$PG_PORT" ;;
	pgberth) echo "$PGB_PORT" ;;
	pgbouncer) echo "$BNC_PORT" ;;
	pgberth_w*) wport "$1" ;;
	floor) echo "$FLOOR_PORT" ;;
	esac
}

# Backends left by a large direct run take a moment to exit; wait (at most
# 30 s) so that they do not weigh on the next run.
settle_pg() {
	local n deadline=$((SECONDS + 30))
	while [ "$SECONDS" -lt "$deadline" ]; do
		n=$(psql_q "$PG_PORT" "$DB" "select count(*) from pg_stat_activity where backend_type = 'client backend'" 2>/dev/null) || n=""
		[ -n "$n" ] && [ "$n" -le $((RESERVE + 1)) ] && return 0
		sleep 0.5
	done
}

# pgbench_once PORT DB CLIENTS DURATION PID LOG ARGS...: one pgbench run;
# sets P_RC, P_TPS, P_LAT, P_TXNS, P_CONN (initial connection time, s),
# P_WALL (s) and P_TICKS (the pooler's CPU ticks over the run, if PID).
pgbench_once() {
	local port=$1 db=$2 clients=$3 duration=$4 pid=$5 log=$6 t0="" t1="" w0=$SECONDS
	shift 6
	P_TICKS=""
	[ -z "$pid" ] || t0=$(cpu_ticks "$pid") || t0=""
	run_bounded $((duration * 3 + 120 + clients / 10)) "$log" \
		"$PG_BINDIR/pgbench" -n -h "$SOCK" -p "$port" -U "$DB_USER" \
		-c "$clients" -j $((clients < 2 ? clients : 2)) -T "$duration" "$@" "$db"
	[ -z "$pid" ] || t1=$(cpu_ticks "$pid") || t1=""
	P_RC=$RC P_WALL=$((SECONDS - w0))
	[ -z "$t0" ] || [ -z "$t1" ] || P_TICKS=$((t1 - t0))
	P_TPS=$(sed -nE 's/^tps = ([0-9.]+).*/\1/p' "$log" | head -n 1)
	P_LAT=$(sed -nE 's/^latency average = ([0-9.]+) ms.*/\1/p' "$log" | head -n 1)
	P_TXNS=$(sed -nE 's/^number of transactions actually processed: ([0-9]+).*/\1/p' "$log" | head -n 1)
	P_CONN=$(sed -nE 's/^initial connection time = ([0-9.]+) ms.*/\1/p' "$log" | head -n 1)
	[ -z "$P_CONN" ] || P_CONN=$(awk -v ms="$P_CONN" 'BEGIN { printf "%.1f", ms / 1000 }')
}

# run_point ROUND POINT WORKLOAD CLIENTS TARGET DBKIND ARGS...: one point
# on one target. pgbench counts the time its clients take to connect as part
# of -T; when that ate more than a quarter of the run (2000 backends forking
# on a small box take many seconds), the run is made again with -T extended
# by that time, so that about BENCH_TIME seconds of transactions are measured.
run_point() {
	local round=$1 point=$2 workload=$3 clients=$4 target=$5 dbkind=$6
	shift 6
	local key="$round|$point|$target" log="$LOGS/runs/r$round-$point-$target.log"
	local port db pid="" duration=$T tps="" lat="" cpu="" status why="" est
	P_TXNS="" P_TICKS="" P_CONN=""
	port=$(target_port "$target")
	db=$DB
	[ "$dbkind" = session ] && [ "$target" != direct ] && db=$DB_SESSION
	if [ "$target" = direct ] && [ "$clients" -gt "$DIRECT_CAP" ]; then
		status=n/a
		why="$clients direct clients need more than the $PG_MAX_CONN max_connections PostgreSQL could start with"
	else
		if [ "$target" != direct ] && ! alive "$target"; then
			local dead=${PIDS[$target]:-} rc=0
			[ -z "$dead" ] || wait "$dead" 2>/dev/null || rc=$?
			note "$target${dead:+ (pid $dead)} had exited (status $rc) before $point, round $round; restarted it. See logs/$target.log"
			start_target "$target" || true
		fi
		if [ "$target" != direct ] && ! alive "$target"; then
			status=n/a
			why="$target is not running"
		else
			[ "$target" = direct ] || pid=${PIDS[$target]}
			pgbench_once "$port" "$db" "$clients" "$duration" "$pid" "$log" "$@"
			est=${P_CONN:-}
			[ "$P_RC" -ne 0 ] || [ "${P_TXNS:-0}" -gt 0 ] || est=$P_WALL
			if [ "$P_RC" -eq 0 ] && [ -n "$est" ] && awk -v c="$est" -v t="$T" 'BEGIN { exit !(c > t / 4) }'; then
				duration=$(awk -v c="$est" -v t="$T" 'BEGIN { printf "%d", t + c * 1.5 + 2 }')
				mv "$log" "${log%.log}.short.log"
				[ "$target" != direct ] || [ "$clients" -le 100 ] || settle_pg
				say "  r$round $point $target: connecting took ${est} s of the $T s run; again with -T $duration"
				pgbench_once "$port" "$db" "$clients" "$duration" "$pid" "$log" "$@"
				note "$workload, $clients clients, $target (round $round): connecting took $est s of the $T s run, so it ran again with -T $duration (initial connection time then ${P_CONN:-n/a} s)."
			fi
			if [ "$P_RC" -eq 0 ] && [ -n "$P_TPS" ] && [ "${P_TXNS:-0}" -gt 0 ]; then
				status=ok tps=$P_TPS lat=$P_LAT
				[ -z "$P_TICKS" ] || cpu=$(awk -v k="$P_TICKS" -v hz="$CLK_TCK" -v n="$P_TXNS" 'BEGIN { printf "%.2f", k * 1e6 / hz / n }')
			elif [ "$P_RC" -eq 124 ] || [ "$P_RC" -eq 137 ]; then
				status=timeout
				why="pgbench -T $duration did not finish within $((duration * 3 + 120 + clients / 10)) s"
			elif [ "$P_RC" -eq 0 ]; then
				status=error
				why="no transaction completed in pgbench -T $duration (${P_WALL} s wall clock): connecting the clients took all of it"
			else
				status=error
				why="pgbench exit status $P_RC: $(grep -m 1 -iE 'error|fatal|abort' "$log" | cut -c 1-160 || true)"
			fi
		fi
	fi
	TPS[$key]=$tps LAT[$key]=$lat CPU[$key]=$cpu STATUS[$key]=$status
	[ -z "$why" ] || STATUS[$key]="$status: $why"
	why=${why//\"/\'}
	printf '%s,%s,"%s",%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,"%s"\n' "$round" "$point" "$workload" "$clients" "$target" \
		"$tps" "$lat" "$P_TXNS" "$P_TICKS" "$cpu" "$duration" "$P_CONN" "$status" "$why" >>"$OUT/runs.csv"
	printf '  r%s %-16s %-10s %8s tps %8s ms %7s us/txn  %s\n' "$round" "$point" "$target" \
		"$(fmt "$tps" %.0f)" "$(fmt "$lat" %.3f)" "$(fmt "$cpu" %.1f)" "$([ "$status" = ok ] || echo "$status: $why")"
	[ "$target" != direct ] || [ "$clients" -le 100 ] || settle_pg
}

# The points: ID|WORKLOAD|DBKIND|CLIENTS|PGBENCH ARGS
POINTS=()
for c in "${CLIENTS_A[@]}"; do POINTS+=("S_simple_c$c|-S simple|txn|$c|-S -M simple"); done
for c in "${CLIENTS_A[@]}"; do POINTS+=("S_extended_c$c|-S extended|txn|$c|-S -M extended"); done
for c in "${PREP_A[@]}"; do POINTS+=("S_prepared_c$c|-S prepared (session pools)|session|$c|-S -M prepared"); done
for c in "${CONN_A[@]}"; do POINTS+=("S_connect_c$c|-S -C simple (connection per txn)|txn|$c|-S -C -M simple"); done
TARGETS=(direct pgberth pgbouncer)
[ "$WITH_FLOOR" -eq 0 ] || TARGETS+=(floor)
NT=${#TARGETS[@]}

# --- Warm-up and idle clients -------------------------------------------------------

step "warm-up: pgbench -S, $POOL clients, 2 s through each target (not recorded)"
for target in "${TARGETS[@]}"; do
	[ "$target" != floor ] || continue
	run_bounded 120 "$LOGS/warmup-$target.log" "$PG_BINDIR/pgbench" -n -S -h "$SOCK" \
		-p "$(target_port "$target")" -U "$DB_USER" -c "$POOL" -j 2 -T 2 "$DB"
	say "  $target: $(grep -m 1 '^tps' "$LOGS/warmup-$target.log" || echo "failed (logs/warmup-$target.log)")"
done

echo "pooler,idle_clients_requested,connected,rss_before_kib,rss_idle_kib,kib_per_idle_client,select1_served,select1_seconds,connect_seconds,status" >"$OUT/idle.csv"
declare -A IDLE_ROW=()
idle_test() { # NAME: hold IDLE_N idle clients on the pooler NAME
	local name=$1 port pid fifo out rss0 rss1="" connected="" served="" csecs="" qsecs="" per="" status ipid deadline
	port=$(target_port "$name")
	pid=${PIDS[$name]:-}
	fifo=$RUN/idle-$name.fifo
	out=$LOGS/idle-$name.out
	if ! alive "$name"; then
		IDLE_ROW[$name]="|||||||$name is not running"
		return 0
	fi
	rm -f "$fifo"
	mkfifo "$fifo"
	: >"$out"
	rss0=$(rss_kib "$pid")
	# Read-write, so opening never blocks; the tool reads "go" from it.
	exec 3<>"$fifo"
	timeout -k 5 $((2 * IDLE_T + 120)) "$IDLE" -h "$SOCK" -p "$port" -d "$DB" -U "$DB_USER" \
		-n "$IDLE_N" -t "$IDLE_T" <"$fifo" >"$out" 2>"$LOGS/idle-$name.err" 3>&- &
	ipid=$!
	cur_job=$ipid
	deadline=$((SECONDS + IDLE_T + 30))
	while ! grep -q '^READY' "$out" && kill -0 "$ipid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
		sleep 0.2
	done
	if grep -q '^READY' "$out"; then
		sleep 1 # let the pooler finish its bookkeeping
		rss1=$(rss_kib "$pid")
	fi
	echo go >&3
	exec 3>&-
	status=0
	wait "$ipid" || status=$?
	cur_job=""
	rm -f "$fifo"
	connected=$(sed -nE 's/.*connected=([0-9]+).*/\1/p' "$out")
	csecs=$(sed -nE 's/.*connected=.* seconds=([0-9.]+).*/\1/p' "$out")
	served=$(sed -nE 's/.*served=([0-9]+).*/\1/p' "$out")
	qsecs=$(sed -nE 's/.*served=.* seconds=([0-9.]+).*/\1/p' "$out")
	if [ -n "$rss1" ] && [ -n "$connected" ] && [ "$connected" -gt 0 ]; then
		per=$(awk -v a="$rss0" -v b="$rss1" -v n="$connected" 'BEGIN { printf "%.2f", (b - a) / n }')
	fi
	if [ "$status" -eq 0 ]; then
		status=ok
	else
		status="failed (exit $status): $(head -n 1 "$LOGS/idle-$name.err" | cut -c 1-160)"
		status=${status//\"/\'}
	fi
	IDLE_ROW[$name]="$rss0|$rss1|$connected|$per|$served|$qsecs|$csecs|$status"
	printf '%s,%s,%s,%s,%s,%s,%s,%s,%s,"%s"\n' "$name" "$IDLE_N" "$connected" "$rss0" "$rss1" "$per" \
		"$served" "$qsecs" "$csecs" "$status" >>"$OUT/idle.csv"
	say "  $name: connected ${connected:-0}/$IDLE_N in ${csecs:-?} s; RSS $rss0 -> ${rss1:-?} KiB (${per:-?} KiB per client); SELECT 1 served ${served:-0}/$IDLE_N in ${qsecs:-?} s; $status"
}
step "idle clients: $IDLE_N on each pooler"
for name in pgberth pgbouncer; do
	idle_test "$name"
done

# --- Interleaved rounds -----------------------------------------------------------

step "${#POINTS[@]} points x $NT targets x $ROUNDS round(s), $T s each"
for ((r = 1; r <= ROUNDS; r++)); do
	for i in "${!POINTS[@]}"; do
		IFS='|' read -r point workload dbkind clients args <<<"${POINTS[$i]}"
		rot=$(((i + r) % NT))
		for ((k = 0; k < NT; k++)); do
			target=${TARGETS[$(((k + rot) % NT))]}
			# floor_relay has transaction pools only.
			[ "$target" != floor ] || [ "$dbkind" = txn ] || continue
			# shellcheck disable=SC2086  # args are words on purpose
			run_point "$r" "$point" "$workload" "$clients" "$target" "$dbkind" $args
			sleep 0.5
		done
	done
done

# --- Workers comparison ----------------------------------------------------------

# -S at WORKERS_CLIENTS and every -C point, on each workers setting and on
# PgBouncer, interleaved round by round: which setting suits which workload.
WPOINTS=("workers|-S simple|$WORKERS_CLIENTS|-S -M simple")
for c in "${CONN_A[@]}"; do WPOINTS+=("workersC$c|-S -C simple|$c|-S -C -M simple"); done
if [ "${#WLIST[@]}" -gt 0 ]; then
	WTARGETS=()
	for w in "${WLIST[@]}"; do WTARGETS+=("$(wname "$w")"); done
	WTARGETS+=(pgbouncer)
	step "pgberth workers ${WLIST[*]} and PgBouncer: -S simple at $WORKERS_CLIENTS clients, -C at ${CONN_A[*]}; $ROUNDS round(s)"
	for w in "${WLIST[@]}"; do
		start_target "$(wname "$w")" || note "pgberth with workers $w did not start"
	done
	for ((r = 1; r <= ROUNDS; r++)); do
		for i in "${!WPOINTS[@]}"; do
			IFS='|' read -r point workload clients args <<<"${WPOINTS[$i]}"
			rot=$(((i + r) % ${#WTARGETS[@]}))
			for ((k = 0; k < ${#WTARGETS[@]}; k++)); do
				target=${WTARGETS[$(((k + rot) % ${#WTARGETS[@]}))]}
				# shellcheck disable=SC2086  # args are words on purpose
				run_point "$r" "$point" "$workload, ${target/pgberth_w/pgberth workers }" "$clients" "$target" txn $args
				sleep 0.5
			done
		done
	done
	for w in "${WLIST[@]}"; do
		stop_proc "$(wname "$w")"
	done
fi

# --- Results ---------------------------------------------------------------

median() { # values on stdin, one a line
	sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# agg POINT TARGET: sets A_TPS A_LAT A_CPU A_OK A_NOTE over the rounds
agg() {
	local r key tv="" lv="" cv=""
	A_OK=0 A_NOTE=""
	for ((r = 1; r <= ROUNDS; r++)); do
		key="$r|$1|$2"
		if [ "${STATUS[$key]:-}" = ok ]; then
			A_OK=$((A_OK + 1))
			tv+="${TPS[$key]}"$'\n'
			lv+="${LAT[$key]}"$'\n'
			[ -z "${CPU[$key]}" ] || cv+="${CPU[$key]}"$'\n'
		elif [ -n "${STATUS[$key]:-}" ]; then
			A_NOTE="${STATUS[$key]}"
		fi
	done
	A_TPS=$(printf '%s' "$tv" | median)
	A_LAT=$(printf '%s' "$lv" | median)
	A_CPU=$(printf '%s' "$cv" | median)
}
ratio() { # A B: A / B
	if [ -z "$1" ] || [ -z "$2" ]; then echo ""; else awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b }'; fi
}

step "writing $OUT/results.md, results.csv, tps.png"
csv=$OUT/results.csv
echo "point,workload,clients,target,tps,latency_ms,pooler_cpu_us_per_txn,rounds_ok,rounds,tps_ratio_pgberth_pgbouncer,cpu_ratio_pgberth_pgbouncer,tps_ratio_floor_pgbouncer,cpu_ratio_floor_pgbouncer,note" >"$csv"
rows="" frows=""
declare -A PLOT=() RT=() RL=() RU=() ROK=() RWHY=()
for entry in "${POINTS[@]}"; do
	IFS='|' read -r point workload dbkind clients args <<<"$entry"
	RT=() RL=() RU=() ROK=() RWHY=()
	for target in "${TARGETS[@]}"; do
		agg "$point" "$target"
		RT[$target]=$A_TPS RL[$target]=$A_LAT RU[$target]=$A_CPU ROK[$target]=$A_OK RWHY[$target]=${A_NOTE#*: }
		[ -z "$A_NOTE" ] || [ "$A_OK" -gt 0 ] || NOTES+=("$workload, $clients clients, $target: n/a: ${A_NOTE#*: }")
		[ -z "$A_NOTE" ] || [ "$A_OK" -eq 0 ] || NOTES+=("$workload, $clients clients, $target: $((ROUNDS - A_OK)) of $ROUNDS rounds failed (${A_NOTE#*: }); the median is over the others")
	done
	tr=$(ratio "${RT[pgberth]}" "${RT[pgbouncer]}")
	cr=$(ratio "${RU[pgberth]}" "${RU[pgbouncer]}")
	ftr="" fcr=""
	if [ "$WITH_FLOOR" -eq 1 ] && [ "$dbkind" = txn ]; then
		ftr=$(ratio "${RT[floor]}" "${RT[pgbouncer]}")
		fcr=$(ratio "${RU[floor]}" "${RU[pgbouncer]}")
		frows+="| $workload | $clients | $(fmt "${RT[floor]}" %.0f) | $(fmt "${RL[floor]}" %.3f) | $(fmt "${RU[floor]}" %.1f) "
		frows+="| $(fmt "$tr" %.2f) | $(fmt "$ftr" %.2f) | $(fmt "$cr" %.2f) | $(fmt "$fcr" %.2f) |"$'\n'
	fi
	for target in "${TARGETS[@]}"; do
		[ "$target" != floor ] || [ "$dbkind" = txn ] || continue
		printf '%s,"%s",%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,"%s"\n' "$point" "$workload" "$clients" "$target" \
			"${RT[$target]}" "${RL[$target]}" "${RU[$target]}" "${ROK[$target]}" "$ROUNDS" "$tr" "$cr" "$ftr" "$fcr" \
			"${RWHY[$target]//\"/\'}" >>"$csv"
	done
	rows+="| $workload | $clients | $(fmt "${RT[direct]}" %.0f) | $(fmt "${RT[pgberth]}" %.0f) | $(fmt "${RT[pgbouncer]}" %.0f) "
	rows+="| $(fmt "${RL[direct]}" %.3f) | $(fmt "${RL[pgberth]}" %.3f) | $(fmt "${RL[pgbouncer]}" %.3f) "
	rows+="| $(fmt "${RU[pgberth]}" %.1f) | $(fmt "${RU[pgbouncer]}" %.1f) | $(fmt "$tr" %.2f) | $(fmt "$cr" %.2f) |"$'\n'
	if [ "${point%_c*}" = S_simple ]; then
		PLOT[$clients]="$clients ${RT[direct]:-NaN} ${RT[pgberth]:-NaN} ${RT[pgbouncer]:-NaN} ${RT[floor]:-NaN}"
	fi
done

wrows="" wbest=()
for wp in "${WPOINTS[@]}"; do
	[ "${#WLIST[@]}" -gt 0 ] || break
	IFS='|' read -r point workload clients _ <<<"$wp"
	agg "$point" pgbouncer
	btps=$A_TPS blat=$A_LAT bcpu=$A_CPU
	printf '%s,"%s",%s,%s,%s,%s,%s,%s,%s,,,,,"%s"\n' "$point" "$workload, PgBouncer" "$clients" \
		pgbouncer "$A_TPS" "$A_LAT" "$A_CPU" "$A_OK" "$ROUNDS" "${A_NOTE//\"/\'}" >>"$csv"
	best="" best_tps=""
	for w in "${WLIST[@]}"; do
		agg "$point" "$(wname "$w")"
		printf '%s,"%s",%s,%s,%s,%s,%s,%s,%s,,,,,"%s"\n' "$point" "$workload, pgberth workers $w" "$clients" \
			"$(wname "$w")" "$A_TPS" "$A_LAT" "$A_CPU" "$A_OK" "$ROUNDS" "${A_NOTE//\"/\'}" >>"$csv"
		[ "$A_OK" -gt 0 ] || NOTES+=("$workload, pgberth workers $w: n/a: ${A_NOTE#*: }")
		wrows+="| $workload | $clients | $w | $(fmt "$A_TPS" %.0f) | $(fmt "$A_LAT" %.3f) | $(fmt "$A_CPU" %.1f) "
		wrows+="| $(fmt "$(ratio "$A_TPS" "$btps")" %.2f) | $(fmt "$(ratio "$A_CPU" "$bcpu")" %.2f) |"$'\n'
		if [ -n "$A_TPS" ] && { [ -z "$best_tps" ] || awk -v a="$A_TPS" -v b="$best_tps" 'BEGIN { exit !(a > b) }'; }; then
			best=$w best_tps=$A_TPS
		fi
	done
	wrows+="| $workload | $clients | PgBouncer | $(fmt "$btps" %.0f) | $(fmt "$blat" %.3f) | $(fmt "$bcpu" %.1f) | | |"$'\n'
	wbest+=("$workload, $clients clients: ${best:-none}")
done

# The plot: TPS against clients, -S simple.
dat=$LOGS/tps_simple.dat
echo "# clients direct pgberth pgbouncer floor" >"$dat"
for c in $(printf '%s\n' "${!PLOT[@]}" | sort -n); do
	echo "${PLOT[$c]}" >>"$dat"
done
cmin=$(printf '%s\n' "${!PLOT[@]}" | sort -n | head -n 1)
cmax=$(printf '%s\n' "${!PLOT[@]}" | sort -n | tail -n 1)
term="png size 900,560"
gnuplot -e 'set terminal pngcairo' >/dev/null 2>&1 && term="pngcairo size 900,560 font ',10'"
floor_plot=""
[ "$WITH_FLOOR" -eq 0 ] || floor_plot=", '' using 1:5 with linespoints lw 1 dt 2 pt 1 title 'floor (floor_relay)'"
if [ -z "$cmin" ]; then
	note "no -S simple point was run, so there is no plot"
elif gnuplot >"$LOGS/gnuplot.log" 2>&1 <<EOF; then
set terminal $term
set output '$OUT/tps.png'
set title "pgbench -S -M simple, ${T} s per run: TPS by clients (pool_size $POOL, transaction pooling)"
set xlabel 'clients'
set ylabel 'TPS'
set logscale x
set xrange [$cmin / 1.5 : $cmax * 1.5]
set yrange [0:*]
set grid
set termoption noenhanced
set key top left
set datafile missing 'NaN'
set xtics ($(for c in $(printf '%s\n' "${!PLOT[@]}" | sort -n); do printf '"%s" %s,' "$c" "$c"; done | sed 's/,$//'))
plot '$dat' using 1:2 with linespoints lw 2 pt 7 title 'PostgreSQL direct', \
     ''     using 1:3 with linespoints lw 2 pt 5 title 'pgberth', \
     ''     using 1:4 with linespoints lw 2 pt 9 title 'PgBouncer'$floor_plot
EOF
	say "  wrote $OUT/tps.png"
else
	note "gnuplot failed; see logs/gnuplot.log"
fi

# What the poolers complained about, so that nobody reads numbers measured
# under a fallback (such as a pool mode that is not implemented) as the real thing.
for f in "$LOGS"/pgberth*.log "$LOGS/pgbouncer.log"; do
	[ -f "$f" ] || continue
	name=$(basename "$f" .log)
	total=$(grep -cE 'WARNING|ERROR|FATAL|PANIC' "$f" || true)
	[ "$total" -gt 0 ] || continue
	while IFS= read -r line; do
		NOTES+=("$name logged: \`$line\`")
	done < <(grep -E 'WARNING|ERROR|FATAL|PANIC' "$f" |
		sed -E 's/^[0-9-]+ [0-9:.]+ [A-Z]+ //; s/^\[[0-9]+\] //' | cut -c 1-200 | awk '!seen[$0]++' | head -n 3)
	[ "$total" -le 3 ] || NOTES+=("$name logged $total warnings and errors in all; see logs/$name.log")
done

elapsed=$((SECONDS - t_start))
{
	echo "# pgberth benchmark"
	echo
	echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); total run time $((elapsed / 60)) min $((elapsed % 60)) s"
	echo "- Machine: $CPU_MODEL, nproc $NPROC, $MEM_GB GiB RAM, $(uname -sr)"
	echo "- pgberth: $PGBERTH_VERSION, commit $COMMIT, binary built $PGBERTH_BUILT; workers $WORKERS"
	echo "- PgBouncer: $BNC_VERSION"
	echo "- PostgreSQL: $PG_VERSION; max_connections $PG_MAX_CONN, fsync off, shared_buffers 256MB, pgbench scale $SCALE"
	echo "- BENCH_TIME=$T s per run; BENCH_ROUNDS=$ROUNDS (values are medians over the rounds); pgbench -j 2 (-j 1 at 1 client); open files limit $NOFILE"
	echo "- Pools, the same on both poolers: database \`$DB\` pool_size $POOL, transaction; \`$DB_SESSION\` pool_size $SPOOL, session (for -M prepared). Everything over Unix sockets."
	echo
	echo "## pgbench"
	echo
	echo "TPS excludes the initial connection time (with -C it includes the reconnections). Pooler CPU is"
	echo "utime + stime of the pooler's process, over the whole pgbench run, divided by the transactions."
	echo "Ratios are pgberth / PgBouncer: TPS above 1 means pgberth is faster, CPU below 1 that it is cheaper."
	echo
	echo "| Workload | Clients | Direct TPS | pgberth TPS | PgBouncer TPS | Direct lat ms | pgberth lat ms | PgBouncer lat ms | pgberth CPU µs/txn | PgBouncer CPU µs/txn | TPS ratio | CPU ratio |"
	echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
	printf '%s' "$rows"
	echo
	echo "![TPS by clients](tps.png)"
	if [ -n "$frows" ]; then
		echo
		echo "## The floor: a pooler cut down to what pgbench needs"
		echo
		echo "floor_relay (bench/floor_relay.c) is a transaction pooler with the same pool_size and nothing"
		echo "else: it answers the login with a canned reply, reads a server's answer straight into its client's"
		echo "output, frees the server as soon as that answer ends with ReadyForQuery 'I', and writes the answers"
		echo "of each pass over the ready sockets at its end. It parses no message, checks nothing, keeps no"
		echo "client state. Its CPU per transaction is about what the kernel alone charges a pooler for the"
		echo "same work on this machine, so a ratio to PgBouncer that floor_relay itself does not reach is out"
		echo "of reach for any pooler here. It ran in the same rounds, interleaved with the others."
		echo
		echo "| Workload | Clients | floor TPS | floor lat ms | floor CPU µs/txn | pgberth / PgBouncer TPS | floor / PgBouncer TPS | pgberth / PgBouncer CPU | floor / PgBouncer CPU |"
		echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|"
		printf '%s' "$frows"
	fi
	if [ -n "$wrows" ]; then
		echo
		echo "## pgberth workers"
		echo
		echo "Each workers setting and PgBouncer in the same rounds; the ratios are against that PgBouncer."
		echo
		echo "| Workload | Clients | workers | TPS | lat ms | CPU µs/txn | TPS / PgBouncer | CPU / PgBouncer |"
		echo "|---|--:|--:|--:|--:|--:|--:|--:|"
		printf '%s' "$wrows"
		echo
		echo "Best TPS on this machine (nproc $NPROC), by workload:"
		echo
		printf -- '- %s\n' "${wbest[@]}"
	fi
	echo
	echo "## Idle clients"
	echo
	echo "$IDLE_N clients log in and stay idle; RSS is the pooler's VmRSS before and with them;"
	echo "then every client runs SELECT 1 at once."
	echo
	echo "| Pooler | Connected | RSS before KiB | RSS with clients KiB | KiB per idle client | SELECT 1 served | in s | Status |"
	echo "|---|--:|--:|--:|--:|--:|--:|---|"
	for name in pgberth pgbouncer; do
		IFS='|' read -r rss0 rss1 connected per served qsecs csecs status <<<"${IDLE_ROW[$name]:-|||||||not run}"
		echo "| $name | ${connected:-0}/$IDLE_N | ${rss0:-n/a} | ${rss1:-n/a} | ${per:-n/a} | ${served:-0}/$IDLE_N | ${qsecs:-n/a} | $status |"
	done
	echo
	echo "## Notes"
	echo
	if [ "${#NOTES[@]}" -eq 0 ]; then
		echo "- None: every run completed."
	else
		printf -- '- %s\n' "${NOTES[@]}"
	fi
	echo "- Every run's pgbench output is in logs/runs/, every single run in runs.csv."
} >"$OUT/results.md"

step "results ($OUT/results.md)"
cat "$OUT/results.md"
say ""
say "bench: done in $((elapsed / 60)) min $((elapsed % 60)) s; results in $OUT"
