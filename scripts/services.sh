#!/usr/bin/env bash
# services.sh prepares the services that bouncemilter's tests use, on Debian 12:
#
#   - installs postfix, fail2ban, postgresql, swaks, nftables, sqlite3, nginx-light,
#     apache2, minisign, iproute2, curl and the Debian packages GNU MediaGoblin 0.15.0 runs
#     on (for the end-to-end test with a real MediaGoblin) when missing (Postfix
#     preseeded to "No configuration", so nothing asks), and disables at boot
#     the daemons it installed (nginx and apache2 would fight for port 80; the
#     tests start private instances of their own);
#   - stops the system Postfix and fail2ban that the installation started: the
#     tests run private instances of their own;
#   - starts PostgreSQL without systemd and creates the role bouncemilter
#     (password bouncemilter, CREATEDB, CREATEROLE, pg_signal_backend), which the tests use
#     to create and drop a database of their own each, and a role with only the grants
#     contrib/install.sh gives bouncemilter. This role stays, with its known password.
#
# It is idempotent. Its only output on stdout is the line that points the tests
# at PostgreSQL, so a caller can run
#
#   eval "$(scripts/services.sh)"
#
# Everything else goes to stderr. Run as anyone else than root, it says what it
# could not do and exports nothing: the tests that need a service then skip
# (or fail, under CI=true).
set -euo pipefail

# Keep stdout for the export line alone.
exec 3>&1 1>&2

log() { printf 'services.sh: %s\n' "$*" >&2; }

# nginx-light and apache2: the tests of contrib/nginx and contrib/apache run them.
packages=(postfix fail2ban postgresql swaks nftables sqlite3 nginx-light apache2 minisign iproute2 curl)
# GNU MediaGoblin 0.15.0's dependencies, as Debian 12 packages them (the
# MediaGoblin tarball beside the checkout lists them in apt-packages.txt).
packages+=(python3-alembic python3-babel python3-celery python3-configobj python3-email-validator
	python3-exifread python3-feedgenerator python3-itsdangerous python3-jinja2 python3-jsonschema
	python3-markdown python3-oauthlib python3-pastescript python3-paste python3-pastedeploy
	python3-bcrypt python3-bleach python3-pyld python3-dateutil python3-requests python3-soundfile
	python3-sqlalchemy python3-unidecode python3-waitress python3-werkzeug python3-wtforms
	python3-pil python3-aiosmtpd python3-psycopg2)
role=bouncemilter
password=bouncemilter

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

if [[ $(id -u) -ne 0 ]]; then
	missing=()
	for p in "${packages[@]}"; do
		installed "$p" || missing+=("$p")
	done
	if ((${#missing[@]})); then
		log "not root: cannot install ${missing[*]}"
	fi
	log "not root: cannot start PostgreSQL or create the role $role; BOUNCEMILTER_TEST_PG not exported"
	log "tests that need PostgreSQL, fail2ban, Postfix or nftables will skip (fail under CI=true)"
	exit 0
fi

# Install what is missing, without starting the daemons: a policy-rc.d that
# answers 101 tells invoke-rc.d not to start services during installation.
missing=()
for p in "${packages[@]}"; do
	installed "$p" || missing+=("$p")
done
started_by_us=()
if ((${#missing[@]})); then
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	debconf-set-selections <<-'EOF'
		postfix postfix/main_mailer_type select No configuration
		postfix postfix/mailname string localhost
	EOF
	policy=/usr/sbin/policy-rc.d
	own_policy=false
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 0755 "$policy"
		own_policy=true
		trap '[[ $own_policy == true ]] && rm -f "$policy"' EXIT
	fi
	# Wait for another apt-get or dpkg rather than fail.
	apt=(apt-get -o DPkg::Lock::Timeout=300)
	"${apt[@]}" update -qq
	"${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}"
	if [[ $own_policy == true ]]; then
		rm -f "$policy"
		own_policy=false
	fi
	started_by_us=("${missing[@]}")
fi

# Nothing this script installed starts at boot: on a real server nginx and
# apache2 would fight for port 80, and the tests start their own instances.
for p in "${started_by_us[@]}"; do
	case $p in
	nginx-light) unit=nginx ;;
	postfix | fail2ban | apache2 | postgresql) unit=$p ;;
	*) continue ;;
	esac
	log "disabling $unit at boot"
	if command -v deb-systemd-helper >/dev/null; then
		deb-systemd-helper disable "$unit.service" >/dev/null 2>&1 || true
	fi
	if [[ -e /etc/init.d/$unit ]]; then
		update-rc.d "$unit" disable >/dev/null 2>&1 || true
	fi
done

# Stop the system instances the installation may have started anyway (a
# policy-rc.d of someone else's may allow it). Only those we installed: a
# machine's own running Postfix or fail2ban is not ours to stop.
for p in "${started_by_us[@]}"; do
	case $p in
	postfix)
		if postfix status >/dev/null 2>&1; then
			log "stopping the system Postfix"
			postfix stop || true
		fi
		;;
	fail2ban)
		if fail2ban-client ping >/dev/null 2>&1; then
			log "stopping the system fail2ban"
			fail2ban-client stop || true
		fi
		;;
	esac
done

# PostgreSQL: the newest installed major version, its cluster "main".
version=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
if [[ -z $version ]]; then
	log "no PostgreSQL server found under /usr/lib/postgresql"
	exit 1
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" { found = 1 } END { exit !found }'; then
	log "creating PostgreSQL $version cluster main"
	pg_createcluster "$version" main
fi
port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" { print $3 }')
status=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" { print $4 }')
if [[ $status != online ]]; then
	log "starting PostgreSQL $version main on port $port"
	# Without systemd: containers and CI machines have none. The server must
	# inherit no descriptor but the standard ones: holding our stdout (fd 3),
	# or any pipe of the caller's, would make "$(services.sh)" wait for it.
	(
		for fd in /proc/self/fd/*; do
			fd=${fd##*/}
			((fd > 2)) && eval "exec $fd>&-"
		done
		exec pg_ctlcluster --skip-systemctl-redirect "$version" main start </dev/null
	)
else
	log "PostgreSQL $version main already running on port $port"
fi
for _ in $(seq 1 60); do
	pg_isready -q -h 127.0.0.1 -p "$port" && break
	sleep 0.5
done
pg_isready -h 127.0.0.1 -p "$port" >&2

# The role. ALTER on every run keeps the password right if it was changed.
(cd / && runuser -u postgres -- psql -q -X -v ON_ERROR_STOP=1 -p "$port" -d postgres) <<EOF
DO \$\$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$role') THEN
		CREATE ROLE $role LOGIN CREATEDB CREATEROLE PASSWORD '$password';
	ELSE
		ALTER ROLE $role LOGIN CREATEDB CREATEROLE PASSWORD '$password';
	END IF;
END
\$\$;
-- Lets DROP DATABASE ... WITH (FORCE) end the autovacuum worker that a
-- benchmark's large database keeps busy.
GRANT pg_signal_backend TO $role;
EOF

url="postgres://$role:$password@127.0.0.1:$port/postgres"
if ! PGCONNECT_TIMEOUT=5 psql -q -X -d "$url" -tAc 'SELECT 1' >/dev/null; then
	log "cannot connect as $role to $url"
	exit 1
fi
log "PostgreSQL ready for the tests as $role"

printf 'export BOUNCEMILTER_TEST_PG=%s\n' "$url" >&3
