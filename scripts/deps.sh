#!/bin/sh
# Installs the Debian packages pgberth builds and tests with, if any is
# missing, and the unprivileged user that runs the test PostgreSQL when the
# tests run as root (postgres refuses to run as root).
set -e
PKGS="gcc make pkg-config libpq-dev libuv1-dev libyaml-dev check libssl-dev
      postgresql postgresql-client pgbouncer procps libsystemd-dev systemd"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [ -n "$missing" ]; then
	echo "deps: installing$missing"
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	# shellcheck disable=SC2086 # $missing is a list of package names
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi
if [ "$(id -u)" -eq 0 ] && ! id pgberth-test >/dev/null 2>&1; then
	useradd --system --no-create-home --shell /usr/sbin/nologin pgberth-test
fi
exit 0
