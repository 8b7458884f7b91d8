#!/usr/bin/env bash
# shellcheck disable=SC2317  # cleanup and on_signal run from traps
# Shows pgberth working: starts a throwaway PostgreSQL and pgberth in front
# of it, runs psql and pgbench through pgberth, then keeps both running for
# you to try until Ctrl-C (or SIGINT/SIGTERM/SIGHUP when stdin is not a
# terminal), and then stops both and removes every file it made.
#
# Usage: scripts/demo.sh [BUILD_DIR]      (default: build; "make demo" builds first)
# Environment: PG_BINDIR picks the PostgreSQL binaries (default: the highest
# /usr/lib/postgresql/*/bin); TMPDIR where the temporary directory goes.
#
# Everything lives in one mktemp directory: the database cluster, both Unix
# sockets (PostgreSQL's .s.PGSQL.55432 and pgberth's .s.PGSQL.6432), the
# config and the logs. Nothing listens on TCP, and since the socket files are
# in a private directory, the two port numbers cannot collide with anything.
# PostgreSQL refuses to run as root, so as root it runs as the user
# pgberth-test (made by scripts/deps.sh); pgberth and the clients run as you.
#
# Exit status: 0 when the demo ran and was then stopped by a signal, 1 when a
# step failed, 128+N when signal N stopped it before it got that far.
set -euo pipefail

BUILD=${1:-build}
cd "$(dirname "$0")/.."
case $BUILD in
/*) ;;
*) BUILD=$(pwd)/$BUILD ;;
esac
PGBERTH=$BUILD/pgberth
PG_PORT=55432
PGB_PORT=6432
PG_USER=pgberth-test     # runs PostgreSQL when we are root

tmp=""
pg_started=0
pgb_pid=""
sleeper=""
waiting=0
cleaned=0

say() { printf '%s\n' "$*"; }
step() { printf '\n== %s\n' "$*"; }
die() {
	printf 'demo: %s\n' "$*" >&2
	exit 1
}
indent() { sed 's/^/  | /'; }

# Runs a command as the user that owns the PostgreSQL cluster, from the
# temporary directory (the caller's directory may be closed to that user).
as_pg() {
	if [ "$(id -u)" -eq 0 ]; then
		(cd "$tmp" && runuser -u "$PG_USER" -- "$@")
	else
		(cd "$tmp" && "$@")
	fi
}

show_cmd() { printf '\n$ %s\n' "$*"; }

cleanup() {
	[ "$cleaned" -eq 0 ] || return 0
	cleaned=1
	set +e
	trap '' INT TERM HUP
	[ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null
	if [ -n "$pgb_pid" ] && kill -0 "$pgb_pid" 2>/dev/null; then
		step "stopping pgberth (SIGTERM to pid $pgb_pid)"
		kill -TERM "$pgb_pid"
		# shutdown_timeout is 10s; give it that and a little more.
		for _ in $(seq 150); do
			kill -0 "$pgb_pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pgb_pid" 2>/dev/null; then
			say "pgberth did not stop within 15s; killing it"
			kill -KILL "$pgb_pid"
		fi
		wait "$pgb_pid" 2>/dev/null
		say "pgberth exited with status $?; its last log lines:"
		tail -n 4 "$tmp/pgberth.log" | indent
	fi
	if [ "$pg_started" -eq 1 ]; then
		step "stopping PostgreSQL"
		as_pg "$PG_BINDIR/pg_ctl" -D "$tmp/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
			as_pg "$PG_BINDIR/pg_ctl" -D "$tmp/data" -m immediate -w -t 30 stop >/dev/null 2>&1 ||
			say "pg_ctl stop failed; see $tmp/postgresql.log"
		say "PostgreSQL stopped"
	fi
	if [ -n "$tmp" ] && [ -d "$tmp" ]; then
		rm -rf "$tmp"
		say "removed $tmp"
	fi
}

on_signal() {
	local sig=$1 code=$2
	say ""
	say "demo: got SIG$sig"
	cleanup
	if [ "$waiting" -eq 1 ]; then
		exit 0
	fi
	exit "$code"
}

trap cleanup EXIT
trap 'on_signal INT 130' INT
trap 'on_signal TERM 143' TERM
trap 'on_signal HUP 129' HUP

# --- Preconditions -------------------------------------------------------

[ -x "$PGBERTH" ] || die "$PGBERTH not found; run \"make demo\" (or make) first"
if [ -z "${PG_BINDIR:-}" ]; then
	# shellcheck disable=SC2012  # the paths are Debian's: no odd names
	PG_BINDIR=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
fi
if [ -z "$PG_BINDIR" ] || [ ! -x "$PG_BINDIR/initdb" ]; then
	die "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin; run scripts/deps.sh"
fi
for b in pg_ctl psql createdb pgbench; do
	[ -x "$PG_BINDIR/$b" ] || die "$PG_BINDIR/$b is missing"
done
if [ "$(id -u)" -eq 0 ] && ! id "$PG_USER" >/dev/null 2>&1; then
	useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pgberth-demo.XXXXXX")
case $tmp in
*[!A-Za-z0-9/._-]*) die "temporary directory \"$tmp\" has characters this script does not quote; set TMPDIR" ;;
esac
if [ "$(id -u)" -eq 0 ]; then
	chown "$PG_USER:" "$tmp"
	runuser -u "$PG_USER" -- test -w "$tmp" ||
		die "user $PG_USER cannot write to $tmp (is ${TMPDIR:-/tmp} closed to other users?); set TMPDIR=/tmp"
	pg_owner=$PG_USER
else
	pg_owner=$(id -un)
fi

say "pgberth demo in $tmp"
say "PostgreSQL binaries: $PG_BINDIR (cluster runs as $pg_owner)"

# --- PostgreSQL -----------------------------------------------------------

step "starting a throwaway PostgreSQL on $tmp/.s.PGSQL.$PG_PORT (no TCP)"
as_pg "$PG_BINDIR/initdb" -D "$tmp/data" -U pgberth --auth=trust -N >"$tmp/initdb.log" 2>&1 || {
	cat "$tmp/initdb.log" >&2
	die "initdb failed"
}
cat >>"$tmp/data/postgresql.conf" <<EOF

# pgberth demo: Unix socket only, in the demo directory; throwaway data.
listen_addresses = ''
unix_socket_directories = '$tmp'
port = $PG_PORT
fsync = off
EOF
pg_started=1
as_pg "$PG_BINDIR/pg_ctl" -D "$tmp/data" -l "$tmp/postgresql.log" -w -t 60 start >/dev/null || {
	cat "$tmp/postgresql.log" >&2
	die "PostgreSQL did not start"
}
"$PG_BINDIR/createdb" -h "$tmp" -p "$PG_PORT" -U pgberth appdb
say "PostgreSQL is up; database appdb created"

# --- pgberth --------------------------------------------------------------

step "pgberth configuration ($tmp/pgberth.yaml)"
cat >"$tmp/pgberth.yaml" <<EOF
listen:
  socket_dir: $tmp
  port: $PGB_PORT
log_level: info
databases:
  appdb:
    conninfo: "host=$tmp port=$PG_PORT dbname=appdb"
    pool_size: 5
    pool_mode: transaction
EOF
indent <"$tmp/pgberth.yaml"
show_cmd "$PGBERTH --check -c $tmp/pgberth.yaml"
"$PGBERTH" --check -c "$tmp/pgberth.yaml"

step "starting pgberth"
# Its own session, so a Ctrl-C reaches this script only, which then stops
# pgberth with SIGTERM, in order, after PostgreSQL's clients are gone.
setsid "$PGBERTH" -c "$tmp/pgberth.yaml" </dev/null 2>"$tmp/pgberth.log" &
pgb_pid=$!
sock=$tmp/.s.PGSQL.$PGB_PORT
deadline=$((SECONDS + 10))
until [ -S "$sock" ]; do
	if ! kill -0 "$pgb_pid" 2>/dev/null; then
		cat "$tmp/pgberth.log" >&2
		die "pgberth exited before it opened $sock"
	fi
	[ "$SECONDS" -lt "$deadline" ] || {
		cat "$tmp/pgberth.log" >&2
		die "pgberth did not open $sock within 10s"
	}
	sleep 0.05
done
say "pgberth (pid $pgb_pid) is listening on $sock"

# --- psql through pgberth -------------------------------------------------

conn="host=$tmp port=$PGB_PORT dbname=appdb user=pgberth"
query="select version(), pg_backend_pid()"
pids=()
for _ in 1 2; do
	show_cmd "psql -X \"$conn\" -c \"$query\""
	out=$("$PG_BINDIR/psql" -X "$conn" -c "$query")
	say "$out"
	pids+=("$(printf '%s\n' "$out" | awk -F'|' 'NR == 3 { gsub(/ /, "", $2); print $2 }')")
	# In transaction mode the server goes back to the pool as soon as the
	# query's ReadyForQuery has been relayed.
	sleep 0.2
done
if [ "${pids[0]}" = "${pids[1]}" ]; then
	say ""
	say "Same backend pid (${pids[0]}) both times: the second client got the first one's server connection from the pool."
else
	say ""
	say "Backend pids ${pids[0]} and ${pids[1]} differ: the first server connection was not back in the pool yet."
fi

# --- pgbench ----------------------------------------------------------------

step "pgbench: initialise directly on PostgreSQL (port $PG_PORT), then read-only load through pgberth (port $PGB_PORT)"
show_cmd "pgbench -i -q -h $tmp -p $PG_PORT -U pgberth appdb"
"$PG_BINDIR/pgbench" -i -q -h "$tmp" -p "$PG_PORT" -U pgberth appdb 2>&1
# Transaction pooling: 50 clients share pool_size (5) server connections,
# each holding one only for the length of a transaction.
show_cmd "pgbench -n -c 50 -j 2 -T 5 -S -h $tmp -p $PGB_PORT -U pgberth appdb"
"$PG_BINDIR/pgbench" -n -c 50 -j 2 -T 5 -S -h "$tmp" -p "$PGB_PORT" -U pgberth appdb 2>&1

nserv=$("$PG_BINDIR/psql" -X -At -h "$tmp" -p "$PG_PORT" -U pgberth -d appdb -c \
	"select count(*) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()")
say ""
say "PostgreSQL now has $nserv connections from pgberth for 50 pgbench clients, kept idle in the pool (pool_size 5)."

step "pgberth's log so far"
indent <"$tmp/pgberth.log"

# --- Wait -----------------------------------------------------------------

step "pgberth is running; try it yourself"
say "  psql \"$conn\""
say "  pgberth's log: tail -f $tmp/pgberth.log"
if [ -t 0 ]; then
	say "Press Ctrl-C to stop pgberth and PostgreSQL and remove $tmp."
else
	say "stdin is not a terminal: send SIGINT or SIGTERM to pid $$ to stop pgberth and PostgreSQL and remove $tmp."
fi
waiting=1
# A signal interrupts "wait" at once and runs its trap; the one-second
# sleeps only serve to notice pgberth dying on its own.
while kill -0 "$pgb_pid" 2>/dev/null; do
	sleep 1 &
	sleeper=$!
	wait "$sleeper" || true
	sleeper=""
done
waiting=0
wait "$pgb_pid" && rc=0 || rc=$?
say ""
say "pgberth exited on its own (status $rc); its log:"
indent <"$tmp/pgberth.log"
pgb_pid=""
exit 1
