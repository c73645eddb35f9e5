#!/usr/bin/env bash
# install.sh installs bouncemilter beside a MediaGoblin instance and its
# Postfix, on Debian 12: the very commands of the README's "Installing it for
# real", in the same order, so that the guide cannot drift from what works
# (the end-to-end test e2e/mediagoblin_test.go runs this script).
#
#   1. build the binary into /usr/local/bin
#   2. the service user bouncemilter, its state and log directories, and what
#      it may touch of MediaGoblin (read its settings; on SQLite the group
#      write SQLite needs; on PostgreSQL a role with only the grants below)
#   3. Postfix: contrib/postfix/main.cf, appending bouncemilter to milter
#      lists already there (an OpenDKIM entry stays); running it again adds
#      nothing twice
#   4. /etc/bouncemilter/bouncemilter.conf (unless it exists) and the systemd
#      units, then systemctl enable --now
#   5. fail2ban's filter, action (nftables, sets that hold networks) and
#      jail, then a reload of this jail alone, or its restart when it is
#      not running yet or its actions or their files change
#   6. nginx's sign-up log format, then a reload
#
# Usage: contrib/install.sh [options]    (as root; --dry-run prints only)
#
#   --dry-run                 print each command instead of running it
#   --steps LIST              only these steps, comma-separated, of: build,
#                             user, postfix, units, fail2ban, nginx (default all)
#   --mediagoblin-config PATH MediaGoblin's mediagoblin.ini
#                             (default /srv/mediagoblin.example.org/mediagoblin/mediagoblin.ini)
#   --mediagoblin-user USER   the user MediaGoblin runs as (default mediagoblin);
#                             on SQLite bouncemilter joins its group
#   --access-log PATH         nginx's combined log (default /var/log/nginx/access.log)
#   --signup-log PATH         the sign-up log of contrib/nginx (default
#                             /var/log/nginx/mediagoblin-signup.log)
#   --binary PATH             install this binary instead of building one
#   --root DIR                install every file under DIR (tests); the user,
#                             the PostgreSQL role and the Postfix settings are
#                             still the system's, and no service is started
#   --postfix-config DIR      Postfix's configuration directory (postconf -c)
#   --milter SPEC             the milter socket (default: what
#                             contrib/postfix/main.cf says, under --root)
#   --pg-admin URL            on PostgreSQL: connect as an admin of
#                             MediaGoblin's database with this URL (default:
#                             runuser -u postgres -- psql -d DBNAME)
#   --pg-role NAME            the role to create and grant (default bouncemilter)
#   --mediagoblin-db URL      how bouncemilter connects to MediaGoblin's
#                             database (default on PostgreSQL:
#                             postgresql:///DBNAME, the local socket with peer
#                             authentication as the bouncemilter role)
set -euo pipefail
cd "$(dirname "$0")/.."

dry=false
root=
mgconfig=/srv/mediagoblin.example.org/mediagoblin/mediagoblin.ini
mguser=mediagoblin
access_log=/var/log/nginx/access.log
signup_log=/var/log/nginx/mediagoblin-signup.log
binary=
postfix_dir=
milter=
pg_admin=
pg_role=bouncemilter
mgdb=
user=bouncemilter
steps=build,user,postfix,units,fail2ban,nginx

die() {
	echo "install.sh: $*" >&2
	exit 1
}
while (($#)); do
	case $1 in
	--dry-run) dry=true ;;
	--steps) steps=${2:?}; shift ;;
	--root) root=${2:?}; shift ;;
	--mediagoblin-config) mgconfig=${2:?}; shift ;;
	--mediagoblin-user) mguser=${2:?}; shift ;;
	--access-log) access_log=${2:?}; shift ;;
	--signup-log) signup_log=${2:?}; shift ;;
	--binary) binary=${2:?}; shift ;;
	--postfix-config) postfix_dir=${2:?}; shift ;;
	--milter) milter=${2:?}; shift ;;
	--pg-admin) pg_admin=${2:?}; shift ;;
	--pg-role) pg_role=${2:?}; shift ;;
	--mediagoblin-db) mgdb=${2:?}; shift ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown option $1 (see --help)" ;;
	esac
	shift
done
[[ -n $root ]] && root=$(realpath -m "$root")
if ! $dry && [[ $(id -u) -ne 0 ]]; then
	die "run as root (or with --dry-run)"
fi

# run prints a command and, unless --dry-run, runs it.
run() {
	show "$@"
	$dry || "$@"
}
# show prints a command as a shell would read it back.
show() {
	local out=+ a
	for a in "$@"; do
		if [[ $a =~ ^[-A-Za-z0-9_./:=,+@%]+$ ]]; then
			out+=" $a"
		else
			out+=" '${a//\'/\'\\\'\'}'"
		fi
	done
	printf '%s\n' "$out"
}
# step prints a step's title and reports whether it is to be done.
step() {
	[[ ,$steps, == *,$1,* ]] || return 1
	printf '\n# %s\n' "$2"
}

bin=$root/usr/local/bin/bouncemilter
state=$root/var/lib/bouncemilter
logs=$root/var/log/bouncemilter
postconf=(postconf)
[[ -n $postfix_dir ]] && postconf+=(-c "$postfix_dir")

# MediaGoblin's database, from sql_engine (MediaGoblin's default: SQLite
# beside the ini). The milter itself reads the ini the same way.
[[ -r $mgconfig ]] || $dry || [[ ,$steps, != *,user,* ]] || die "cannot read $mgconfig (--mediagoblin-config)"
here=$(dirname "$(realpath -m "$mgconfig")")
engine=
[[ -r $mgconfig ]] && engine=$(sed -n 's/^[[:space:]]*sql_engine[[:space:]]*=[[:space:]]*//p' "$mgconfig" | tail -n 1)
engine=${engine:-sqlite:///%(here)s/mediagoblin.db}
engine=${engine//%(here)s/$here}
case $engine in
postgresql* | postgres*)
	backend=postgresql
	dbname=${engine##*/}
	dbname=${dbname%%\?*}
	mgdb=${mgdb:-postgresql:///$dbname}
	;;
sqlite*)
	backend=sqlite
	dbfile=${engine#*:///}
	[[ $dbfile == /* ]] || dbfile=$here/$dbfile
	;;
*) die "unsupported sql_engine $engine" ;;
esac

# The milter socket: contrib/postfix/main.cf's, a unix socket moved under --root.
if [[ -z $milter ]]; then
	milter=$(sed -n 's/^smtpd_milters[[:space:]]*=[[:space:]]*//p' contrib/postfix/main.cf)
	[[ $milter == unix:/* && -n $root ]] && milter=unix:$root${milter#unix:}
fi
# Postfix resolves a relative unix: milter path against its queue_directory;
# serve needs the full path.
listen=$milter
if [[ $milter == unix:* && $milter != unix:/* ]]; then
	queue=$("${postconf[@]}" -h queue_directory 2>/dev/null || echo /var/spool/postfix)
	# Postfix's settings are the system's (or --postfix-config's) even
	# under --root: so is its queue directory.
	listen=unix:$queue/${milter#unix:}
fi

if step build "1. Build (Go >= 1.25 and gcc: the SQLite driver is cgo)"; then
	if [[ -n $binary ]]; then
		run install -D -m 0755 "$binary" "$bin"
	else
		run go build -o "$bin" ./cmd/bouncemilter
	fi
fi

mggroup=$(id -gn "$mguser" 2>/dev/null || echo "$mguser")
if step user "2. The service user, its directories, and what it may touch of MediaGoblin"; then
if ! getent passwd "$user" >/dev/null; then
	run useradd --system --user-group --home-dir /var/lib/bouncemilter --no-create-home --shell /usr/sbin/nologin "$user"
fi
# Debian's web server logs are group adm.
run usermod -a -G adm "$user"
run install -d -m 0750 -o "$user" -g "$user" "$state" "$logs"
if [[ ! -e $logs/bans.log ]]; then
	# fail2ban needs the file when it starts; the milter appends to it.
	run install -m 0640 -o "$user" -g "$user" /dev/null "$logs/bans.log"
fi
case $backend in
sqlite)
	# Reading MediaGoblin's settings and writing core__user_bans: the group
	# of MediaGoblin's user, with group write on the database and on its
	# directory, where SQLite writes its journal beside the database. Keep
	# the database in a directory of its own: group write beside
	# mediagoblin.ini would let the group create a mediagoblin_local.ini.
	if [[ $(dirname "$dbfile") == "$here" ]]; then
		echo "  note: $dbfile sits beside mediagoblin.ini; move it to a directory of its own (see README)"
	fi
	run usermod -a -G "$mggroup" "$user"
	run chgrp "$mggroup" "$mgconfig" "$dbfile" "$(dirname "$dbfile")"
	run chmod g+r "$mgconfig"
	run chmod g+rw "$dbfile"
	run chmod g+rwx "$(dirname "$dbfile")"
	;;
postgresql)
	# mediagoblin.ini is read for email_sender_address; the database is
	# reached as a role of bouncemilter's own, with these grants only.
	grants="DO \$\$ BEGIN
	IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$pg_role') THEN CREATE ROLE \"$pg_role\" LOGIN; END IF;
END \$\$;
GRANT CONNECT ON DATABASE \"$dbname\" TO \"$pg_role\";
GRANT USAGE ON SCHEMA public TO \"$pg_role\";
GRANT SELECT ON core__users, core__local_users, core__privileges, core__privileges_users TO \"$pg_role\";
-- SELECT too: a DELETE ... WHERE user_id = ? reads the column it filters on.
GRANT SELECT, INSERT, DELETE ON core__user_bans TO \"$pg_role\";"
	if [[ -n $pg_admin ]]; then
		psql=(psql -X -q -v ON_ERROR_STOP=1 -d "$pg_admin")
	else
		psql=(runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d "$dbname")
	fi
	printf '%s\n' "$grants" | sed 's/^/    /'
	if ! $dry; then
		printf '%s\n' "$grants" | run "${psql[@]}"
	else
		run "${psql[@]}"
	fi
	run chgrp "$mggroup" "$mgconfig"
	run chmod g+r "$mgconfig"
	run usermod -a -G "$mggroup" "$user"
	;;
esac
fi

if step postfix "3. Postfix: contrib/postfix/main.cf, appended to the milters already there"; then
# append NAME VALUE adds VALUE to a comma/space separated list unless it is
# in it already.
append() {
	local cur
	cur=$("${postconf[@]}" -hx "$1" 2>/dev/null || true)
	if [[ -z $cur ]]; then
		run "${postconf[@]}" -e "$1 = $2"
	elif ! tr ', ' '\n\n' <<<"$cur" | grep -qxF -- "$2"; then
		run "${postconf[@]}" -e "$1 = $cur, $2"
	else
		echo "  $1 already holds $2"
	fi
}
grep -v '^[[:space:]]*#' contrib/postfix/main.cf | grep . | while IFS= read -r line; do
	name=${line%%=*}
	name=${name%"${name##*[![:space:]]}"}
	value=${line#*=}
	value=${value#"${value%%[![:space:]]*}"}
	case $name in
	smtpd_milters | non_smtpd_milters) append "$name" "$milter" ;;
	internal_mail_filter_classes) append "$name" "$value" ;;
	recipient_delimiter)
		cur=$("${postconf[@]}" -h recipient_delimiter 2>/dev/null || true)
		if [[ -z $cur ]]; then
			run "${postconf[@]}" -e "$name = $value"
		elif [[ $cur != *"$value"* ]]; then
			echo "  recipient_delimiter is '$cur': give bouncemilter serve --recipient-delimiter one of its characters"
		fi
		;;
	*) run "${postconf[@]}" -e "$name = $value" ;;
	esac
done
postfix=(postfix)
[[ -n $postfix_dir ]] && postfix+=(-c "$postfix_dir")
if "${postfix[@]}" status >/dev/null 2>&1 || $dry; then
	run "${postfix[@]}" reload
else
	echo "  Postfix is not running: the settings apply when it starts"
fi
fi

# install_edited installs file as dest with the replacements given as
# "FROM|TO" pairs (FROM a sed expression), those that change something.
install_edited() {
	local src=$1 dest=$2 pair sedargs=()
	shift 2
	for pair in "$@"; do
		[[ ${pair%%|*} == "${pair#*|}" ]] || sedargs+=(-e "s|$pair|g")
	done
	if ((${#sedargs[@]} == 0)); then
		run install -m 0644 "$src" "$dest"
		return
	fi
	show sed "${sedargs[@]}" "$src" ">" "$dest"
	$dry || sed "${sedargs[@]}" "$src" >"$dest"
}

if step units "4. The configuration file and the systemd units"; then
# serve, sync and doctor read their settings from one file; an existing one
# is the admin's and stays as it is.
conf=$root/etc/bouncemilter/bouncemilter.conf
if [[ -e $conf ]]; then
	echo "  $conf exists: keeping it (compare with contrib/bouncemilter.conf)"
else
	run install -d -m 0755 "$(dirname "$conf")"
	edits=("/srv/mediagoblin.example.org/mediagoblin/mediagoblin.ini|$mgconfig"
		"/var/lib/bouncemilter|$state" "/var/log/bouncemilter|$logs"
		"/var/log/nginx/access.log|$access_log"
		"/var/log/nginx/mediagoblin-signup.log|$signup_log"
	)
	[[ $listen == unix:/var/spool/postfix/bouncemilter/milter.sock ]] || edits+=("^listen = .*|listen = $listen")
	if [[ $listen != unix:* ]]; then
		# Not a unix socket: no socket group.
		edits+=("^socket-group = .*|# socket-group =")
	fi
	if [[ -n $mgdb ]]; then
		edits+=("^# mediagoblin-db = .*|mediagoblin-db = $mgdb")
	fi
	install_edited contrib/bouncemilter.conf "$conf" "${edits[@]}"
	# It may hold MediaGoblin's database password: root's, readable by the
	# service's group.
	run chmod 0640 "$conf"
	if [[ -z $root ]] || id -u "$user" >/dev/null 2>&1; then
		run chgrp "$user" "$conf"
	fi
fi
units=$root/etc/systemd/system
run install -d "$units"
for unit in bouncemilter.service bouncemilter-sync.service; do
	# The shipped units: their settings are in the configuration file,
	# which they name when it is not the default one (--root).
	edits=("/usr/local/bin/bouncemilter|$bin")
	if [[ $listen == unix:/* ]]; then
		sockdir=$(dirname "${listen#unix:}")
		[[ $sockdir == /var/spool/postfix/bouncemilter ]] || edits+=("0750 /var/spool/postfix/bouncemilter$|0750 $sockdir")
	else
		# Not a unix socket: no socket directory.
		edits+=("^ExecStartPre=.*install -d .*$|")
	fi
	if [[ -n $root ]]; then
		edits+=("^\(ExecStart=[^ ]* [a-z]*\)|\1 --config $conf")
	fi
	install_edited "contrib/systemd/$unit" "$units/$unit" "${edits[@]}"
done
if [[ -z $root ]]; then
	run systemctl daemon-reload
	run systemctl enable --now bouncemilter.service bouncemilter-sync.service
else
	echo "  (--root: not starting them; their ExecStart lines are in $units)"
fi
fi

if step fail2ban "5. fail2ban: the filter, the action and the jail (banaction bouncemilter-nftables)"; then
# Whether this run changes the action or jail files fail2ban has (compared
# before they are replaced; a missing one counts as changed): a reload
# would keep running the actions' old commands.
changed=false jail_edit="/var/log/bouncemilter|$logs"
for f in bouncemilter-nftables.conf bouncemilter-nftables-allports.conf; do
	cmp -s "contrib/fail2ban/action.d/$f" "$root/etc/fail2ban/action.d/$f" || changed=true
done
sed -e "s|$jail_edit|g" contrib/fail2ban/jail.d/bouncemilter.conf |
	cmp -s - "$root/etc/fail2ban/jail.d/bouncemilter.conf" || changed=true
run install -D -m 0644 contrib/fail2ban/filter.d/bouncemilter.conf "$root/etc/fail2ban/filter.d/bouncemilter.conf"
run install -D -m 0644 -t "$root/etc/fail2ban/action.d" contrib/fail2ban/action.d/bouncemilter-nftables.conf contrib/fail2ban/action.d/bouncemilter-nftables-allports.conf
run install -d "$root/etc/fail2ban/jail.d"
install_edited contrib/fail2ban/jail.d/bouncemilter.conf "$root/etc/fail2ban/jail.d/bouncemilter.conf" "$jail_edit"
if [[ -z $root ]]; then
	# Only this jail is (re)loaded: a plain `fail2ban-client reload` would
	# re-read every jail, sshd's half-edited one included. A jail that
	# runs the actions its configuration names, from files this run left
	# as they were, is reloaded, which keeps its nft sets. Otherwise it
	# is restarted, which also adds it when it is not running yet: a
	# reload that changes a jail's action (an upgrade from
	# nftables-multiport, a switch to the allports action) leaves it with
	# none at all, one after an action file changed (an upgrade of
	# bouncemilter) keeps the sets and commands the old file made, and
	# the restart puts the bans fail2ban keeps back into the new sets.
	running= configured=
	if ! $dry; then
		running=$(fail2ban-client get bouncemilter actions 2>/dev/null | sed 1d | tr -s ', ' '\n\n' | sort) || running=
		configured=$(fail2ban-client -d 2>/dev/null | sed -n "s/^\['set', 'bouncemilter', 'addaction', '\([^']*\)'\]$/\1/p" | sort) || configured=
	fi
	if ! $changed && [[ -n $running && $running == "$configured" ]]; then
		run fail2ban-client reload bouncemilter
	else
		run fail2ban-client reload --restart --if-exists bouncemilter
	fi
	if $dry; then
		echo "  (a re-run that changes no action or jail, on a jail that runs them: fail2ban-client reload bouncemilter)"
	fi
fi
fi

if step nginx "6. nginx: the sign-up log format"; then
run install -D -m 0644 contrib/nginx/bouncemilter.conf "$root/etc/nginx/conf.d/bouncemilter.conf"
echo "  Add to the server block that serves MediaGoblin, beside its access_log:"
echo "      access_log $signup_log bouncemilter_signup if=\$bouncemilter_signup;"
if [[ -z $root ]]; then
	run nginx -t
	run nginx -s reload
fi
fi
