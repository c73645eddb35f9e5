#!/usr/bin/env bash
# serve.sh builds bouncemilter and runs the milter in the foreground, with its
# registry in an embedded SQLite database:
#
#   as root:   /var/lib/bouncemilter/registry.db, ban log /var/log/bouncemilter/bans.log
#   otherwise: .tmp/state/registry.db,           ban log .tmp/log/bans.log
#
# MEDIAGOBLIN_CONFIG names MediaGoblin's mediagoblin.ini (default: the path
# MediaGoblin's deployment guide uses). When it is not set and that default
# does not exist, the milter runs in its first-run mode without MediaGoblin
# (--mediagoblin-config none): it says so, and account bans wait in the
# queue. A MEDIAGOBLIN_CONFIG that does not exist is an error. Extra arguments go to
# `bouncemilter serve` (see `bin/bouncemilter serve --help`). It does not
# touch Postfix: apply contrib/postfix/main.cf as the README says.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

root=false
[[ $(id -u) -eq 0 ]] && root=true
if ! command -v go >/dev/null; then
	echo "serve.sh: Go 1.25 or newer is needed to build bouncemilter (see README: Building)" >&2
	exit 1
fi
if ! command -v gcc >/dev/null; then
	# The SQLite driver is cgo.
	if $root; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev >&2
	else
		echo "serve.sh: gcc is needed (apt-get install gcc)" >&2
		exit 1
	fi
fi
mkdir -p bin
go build -o bin/bouncemilter ./cmd/bouncemilter

if $root; then
	state=/var/lib/bouncemilter
	logs=/var/log/bouncemilter
else
	state=$PWD/.tmp/state
	logs=$PWD/.tmp/log
fi
mkdir -p "$state" "$logs"
mgconfig=${MEDIAGOBLIN_CONFIG:-/srv/mediagoblin.example.org/mediagoblin/mediagoblin.ini}
if [[ -z ${MEDIAGOBLIN_CONFIG:-} && ! -e $mgconfig ]]; then
	echo "serve.sh: no MediaGoblin at $mgconfig: first-run mode (--mediagoblin-config none); set MEDIAGOBLIN_CONFIG" >&2
	mgconfig=none
fi
echo "serve.sh: milter on inet:127.0.0.1:8891; for a first try point Postfix's smtpd_milters and non_smtpd_milters there, with the other lines of contrib/postfix/main.cf (which names the unix socket the installed service listens on)" >&2
exec bin/bouncemilter serve \
	--registry "$state/registry.db" \
	--ban-log "$logs/bans.log" \
	--mediagoblin-config "$mgconfig" \
	"$@"
