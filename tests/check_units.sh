#!/bin/sh
# The systemd units, the sysusers.d file and "make install". Installs into a
# temporary DESTDIR the way a package build does (PREFIX=/usr), checks what
# landed there, and runs systemd-analyze verify with that DESTDIR as its
# root, so ExecStart= must name the binary that was installed. It ends with
# Check's summary line, which scripts/run-tests.sh counts like a C suite's.
#
# make links it as BUILD/tests/check_units. PGBERTH_BIN (set by
# scripts/run-tests.sh) names the built binary; its directory is the BUILD
# that is installed, and nothing is built here. Never touches the system:
# no user is created and systemd is not asked anything.
set -u

repo=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd) || exit 2
cd "$repo" || exit 2
bin=${PGBERTH_BIN:-$repo/build/pgberth}
build=$(cd "$(dirname "$bin")" && pwd) || exit 2

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pgberth-units.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT
trap 'exit 2' INT TERM
dest=$tmp/dest
units=$dest/usr/lib/systemd/system
conf=$dest/etc/pgberth/pgberth.yaml

checks=0
failures=0

# check NAME COMMAND...: runs COMMAND as one check; on failure prints NAME
# and what COMMAND printed.
check() {
	name=$1
	shift
	checks=$((checks + 1))
	if ! out=$("$@" 2>&1); then
		failures=$((failures + 1))
		echo "check_units.sh:$name: failed"
		[ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/    /'
	fi
}

# make TARGET into $dest, with none of the caller's make variables: the
# outer make's command line (MAKEFLAGS) or environment would change the paths.
# -o: install the binary already built, never rebuild it here.
make_dest() {
	env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u BINDIR -u SYSCONFDIR \
		-u DOCDIR -u UNITDIR -u SYSUSERSDIR \
		make -s --no-print-directory -C "$repo" -o "$build/pgberth" \
		BUILD="$build" DESTDIR="$dest" PREFIX=/usr "$1"
}

installed_files() {
	ok=0
	[ -x "$dest/usr/bin/pgberth" ] || { echo "missing executable usr/bin/pgberth"; ok=1; }
	for f in usr/lib/systemd/system/pgberth.service \
		usr/lib/systemd/system/pgberth.socket \
		usr/lib/sysusers.d/pgberth.conf \
		etc/pgberth/pgberth.yaml \
		usr/share/doc/pgberth/README.md \
		usr/share/doc/pgberth/pgberth.yaml; do
		[ -f "$dest/$f" ] || { echo "missing $f"; ok=1; }
	done
	cmp conf/pgberth.yaml "$conf" || ok=1
	return $ok
}

no_placeholders() {
	! grep -n '@[A-Z_][A-Z_]*@' "$units/pgberth.service" "$units/pgberth.socket"
}

installed_paths() {
	grep -qx 'ExecStart=/usr/bin/pgberth -c /etc/pgberth/pgberth.yaml' "$units/pgberth.service" &&
		grep -qx 'ExecStartPre=/usr/bin/pgberth --check -c /etc/pgberth/pgberth.yaml' "$units/pgberth.service" &&
		grep -qx 'Documentation=file:///usr/share/doc/pgberth/README.md' "$units/pgberth.service"
}

# verify ROOT: systemd-analyze verify of both units as installed under ROOT.
# It exits 0 on many mistakes (an unknown key, a bad value: "..., ignoring"),
# so anything it prints is a failure too. --recursive-errors=no: ROOT has no
# sysinit.target and the rest of a system for it to check.
verify() {
	command -v systemd-analyze >/dev/null ||
		{ echo "systemd-analyze not found (scripts/deps.sh installs systemd)"; return 1; }
	# ExecReload= runs /bin/kill, which the base system provides; verify only
	# checks that it is executable.
	mkdir -p "$1/bin" && printf '#!/bin/sh\n' >"$1/bin/kill" && chmod 755 "$1/bin/kill" || return 1
	vout=$(systemd-analyze verify --recursive-errors=no --root="$1" \
		pgberth.service pgberth.socket 2>&1)
	vrc=$?
	[ -z "$vout" ] || printf '%s\n' "$vout"
	[ "$vrc" -eq 0 ] && [ -z "$vout" ]
}

# The check above must be able to fail: a copy of the units with one typo
# each must not pass verify.
verify_catches() {
	ok=0
	for typo in 's/^Type=notify$/Type=notfy/' \
		's/^ProtectSystem=strict$/ProtectSytem=strict/' \
		's|^ExecStart=/usr/bin/pgberth |ExecStart=/usr/bin/pgbert |' \
		's/^Service=pgberth.service$/Service=pgberth.srvice/'; do
		rm -rf "$tmp/broken" && cp -a "$dest" "$tmp/broken" || return 1
		sed -i "$typo" "$tmp/broken/usr/lib/systemd/system/pgberth.service" \
			"$tmp/broken/usr/lib/systemd/system/pgberth.socket"
		if cmp -s "$units/pgberth.service" "$tmp/broken/usr/lib/systemd/system/pgberth.service" &&
			cmp -s "$units/pgberth.socket" "$tmp/broken/usr/lib/systemd/system/pgberth.socket"; then
			echo "typo $typo matched nothing"
			ok=1
		elif verify "$tmp/broken" >/dev/null; then
			echo "verify passed with typo $typo"
			ok=1
		fi
	done
	return $ok
}

# pgberth.socket must listen where the installed config says pgberth's
# socket is: <listen.socket_dir>/.s.PGSQL.<listen.port>.
socket_matches_config() {
	dir=$(sed -n 's/^  socket_dir: *\([^ #]*\).*/\1/p' "$conf")
	port=$(sed -n 's/^  port: *\([0-9]*\).*/\1/p' "$conf")
	want="ListenStream=$dir/.s.PGSQL.$port"
	grep -qx "$want" "$units/pgberth.socket" || { echo "pgberth.socket lacks $want"; return 1; }
}

config_valid() {
	"$dest/usr/bin/pgberth" --check -c "$conf"
}

# systemd-sysusers in a scratch root: the line parses and makes the user.
sysusers_creates_user() {
	mkdir -p "$tmp/sysroot/etc" &&
		systemd-sysusers --root="$tmp/sysroot" "$dest/usr/lib/sysusers.d/pgberth.conf" &&
		grep -qx 'pgberth:x:[0-9]*:[0-9]*:pgberth connection pooler:/nonexistent:/usr/sbin/nologin' \
			"$tmp/sysroot/etc/passwd" &&
		grep -q '^pgberth:x:[0-9]*:$' "$tmp/sysroot/etc/group"
}

# A second install keeps an edited config and puts the example beside it.
config_kept() {
	echo "# edited by the administrator" >>"$conf" &&
		make_dest install >/dev/null &&
		tail -n 1 "$conf" | grep -qx '# edited by the administrator' &&
		cmp conf/pgberth.yaml "$conf.new"
}

# Uninstall leaves the config and nothing else (but verify's /bin/kill).
uninstalled() {
	make_dest uninstall >/dev/null || return 1
	left=$(cd "$dest" && find . -type f ! -path ./bin/kill | sort)
	want=$(printf './etc/pgberth/pgberth.yaml\n./etc/pgberth/pgberth.yaml.new')
	[ "$left" = "$want" ] || { printf 'left after uninstall:\n%s\n' "$left"; return 1; }
}

echo "Running suite(s): units"
check install make_dest install
check installed_files installed_files
check no_placeholders no_placeholders
check installed_paths installed_paths
check verify verify "$dest"
check verify_catches verify_catches
check socket_matches_config socket_matches_config
check config_valid config_valid
check sysusers_creates_user sysusers_creates_user
check config_kept config_kept
check uninstalled uninstalled
echo "$(((checks - failures) * 100 / checks))%: Checks: $checks, Failures: $failures, Errors: 0"
[ "$failures" -eq 0 ]
