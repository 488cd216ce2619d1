#!/usr/bin/env bash
# setup.sh makes the machine ready to run and test Rooms. It is idempotent and
# runs before `task up` and `task test`:
#   1. installs PostgreSQL and Redis from the Debian packages when missing;
#   2. starts them on 127.0.0.1 when they do not answer (a running server is
#      left alone: it is never stopped or restarted);
#   3. creates the role `rooms` (password `rooms`, CREATEDB) and the database
#      `rooms` when missing;
#   4. installs the npm tools of package.json (dbmate, newman) when
#      node_modules is missing or older than the lock file, and the browser
#      app's packages (frontend/) the same way;
#   5. installs nginx (the local proxy; the OS's own nginx service is not
#      used) and chromium (the browser tests) from the Debian packages when
#      missing.
# It fails with a clear message when something cannot be made to work.
#
# Environment: SETUP_PG_PORT (default 5432) and SETUP_REDIS_PORT (default
# 6379) choose the local ports checked and started; SETUP_WAIT_SECONDS (default
# 60) how long to wait for a started server to answer.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_HOST=127.0.0.1
PG_PORT=${SETUP_PG_PORT:-5432}
REDIS_HOST=127.0.0.1
REDIS_PORT=${SETUP_REDIS_PORT:-6379}
WAIT_SECONDS=${SETUP_WAIT_SECONDS:-60}

say() { printf 'setup: %s\n' "$*"; }
die() {
	printf 'setup: ERROR: %s\n' "$*" >&2
	exit 1
}

# as_root runs a command as root: directly when we are root, else with sudo.
as_root() {
	if [[ $(id -u) -eq 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		die "need root to run '$*' (run as root or install sudo)"
	fi
}

# as_postgres runs a command as the postgres OS user.
as_postgres() {
	if [[ $(id -u) -eq 0 ]]; then
		runuser -u postgres -- "$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo -u postgres -- "$@"
	else
		die "need root or sudo to run '$*' as the postgres user"
	fi
}

apt_updated=0
apt_install() {
	command -v apt-get >/dev/null 2>&1 || die "$* missing and apt-get not found: install $* yourself (Debian/Ubuntu expected)"
	if [[ $apt_updated -eq 0 ]]; then
		say "apt-get update"
		as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "apt-get update failed"
		apt_updated=1
	fi
	say "installing $*"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" || die "apt-get install $* failed"
}

# wait_for runs the command until it succeeds or WAIT_SECONDS pass.
wait_for() {
	local what=$1
	shift
	local i
	for ((i = 0; i < WAIT_SECONDS * 4; i++)); do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.25
	done
	die "$what did not answer within ${WAIT_SECONDS}s"
}

pg_server_installed() {
	compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null && command -v psql >/dev/null 2>&1 && command -v pg_ctlcluster >/dev/null 2>&1
}

pg_answers() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }

redis_answers() { [[ $(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

setup_postgres() {
	pg_server_installed || apt_install postgresql postgresql-client
	if pg_answers; then
		say "PostgreSQL answers on $PG_HOST:$PG_PORT"
	else
		local version
		version=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -V | tail -1)
		if [[ -z $version ]]; then
			version=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -V | tail -1)
			say "creating PostgreSQL $version cluster main"
			as_root pg_createcluster "$version" main || die "pg_createcluster $version main failed"
		fi
		say "starting PostgreSQL $version/main"
		as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
			die "could not start PostgreSQL $version/main (see /var/log/postgresql/)"
		wait_for "PostgreSQL on $PG_HOST:$PG_PORT" pg_answers
	fi
	setup_database
}

# rooms_ready is true when the role rooms can log in to the database rooms
# with its password and may create databases (tests create one each).
rooms_ready() {
	[[ $(PGPASSWORD=rooms PGCONNECT_TIMEOUT=5 psql -X -qtA -h "$PG_HOST" -p "$PG_PORT" -U rooms -d rooms \
		-c "SELECT rolcreatedb FROM pg_roles WHERE rolname = current_user" 2>/dev/null) == t ]]
}

# admin_psql runs psql as a superuser: through TCP when local auth trusts
# postgres, else as the postgres OS user over the Unix socket.
admin_psql() {
	if PGCONNECT_TIMEOUT=5 psql -X -qtA -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -w -c 'SELECT 1' >/dev/null 2>&1; then
		psql -X -qtA -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -w "$@"
	else
		as_postgres psql -X -qtA -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres "$@"
	fi
}

setup_database() {
	if rooms_ready; then
		say "role and database rooms ready"
		return
	fi
	say "creating role and database rooms"
	admin_psql -c "DO \$\$ BEGIN
		IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rooms') THEN
			CREATE ROLE rooms LOGIN CREATEDB PASSWORD 'rooms';
		ELSE
			ALTER ROLE rooms LOGIN CREATEDB PASSWORD 'rooms';
		END IF;
	END \$\$;" || die "could not create the role rooms"
	if [[ $(admin_psql -c "SELECT 1 FROM pg_database WHERE datname = 'rooms'") != 1 ]]; then
		admin_psql -c "CREATE DATABASE rooms OWNER rooms" || die "could not create the database rooms"
	fi
	rooms_ready || die "role rooms cannot log in to database rooms with password auth on $PG_HOST:$PG_PORT (check pg_hba.conf)"
	say "role and database rooms ready"
}

setup_redis() {
	if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
		apt_install redis-server redis-tools
	fi
	if redis_answers; then
		say "Redis answers on $REDIS_HOST:$REDIS_PORT"
		return
	fi
	say "starting Redis on $REDIS_HOST:$REDIS_PORT"
	redis-server --daemonize yes --bind "$REDIS_HOST" --port "$REDIS_PORT" --save "" --appendonly no ||
		die "could not start redis-server"
	wait_for "Redis on $REDIS_HOST:$REDIS_PORT" redis_answers
}

setup_node_tools() {
	if ! command -v npm >/dev/null 2>&1; then
		apt_install nodejs npm
	fi
	cd "$ROOT"
	local stamp=node_modules/.package-lock.json
	if [[ -f $stamp && ! package.json -nt $stamp && ! (-f package-lock.json && package-lock.json -nt $stamp) ]]; then
		say "npm tools up to date"
		return
	fi
	if [[ -f package-lock.json ]]; then
		say "npm ci"
		local out
		if ! out=$(npm ci --no-audit --no-fund 2>&1); then
			# npm ci refuses a lock file that lacks some optional per-platform
			# packages (dbmate ships one per OS/CPU; a registry mirror may hold
			# only some). npm install --no-save installs the same pinned
			# versions from the lock file and leaves it untouched.
			say "npm ci refused the lock file; npm install --no-save"
			npm install --no-save --no-audit --no-fund || die "npm install failed after npm ci failed with: $out"
		fi
	else
		say "npm install"
		npm install --no-audit --no-fund || die "npm install failed"
	fi
	[[ -x node_modules/.bin/dbmate ]] || die "dbmate missing from node_modules after npm install"
}

# setup_frontend installs the browser app's npm packages (frontend/) when its
# node_modules is missing or older than its package files.
setup_frontend() {
	local app="$ROOT/frontend"
	if [[ ! -f $app/package.json ]]; then
		say "frontend/ not there yet: no browser app packages to install"
		return
	fi
	local stamp=$app/node_modules/.package-lock.json
	if [[ -f $stamp && ! $app/package.json -nt $stamp && ! (-f $app/package-lock.json && $app/package-lock.json -nt $stamp) ]]; then
		say "frontend npm packages up to date"
		return
	fi
	if [[ -f $app/package-lock.json ]]; then
		say "npm ci (frontend)"
		npm --prefix "$app" ci --no-audit --no-fund || die "npm ci in frontend/ failed"
	else
		say "npm install (frontend)"
		npm --prefix "$app" install --no-audit --no-fund || die "npm install in frontend/ failed"
	fi
}

# setup_proxy_and_browser installs nginx, which the stack runs as its own
# process on its own port (the Debian service, if the package starts one on
# port 80, is neither needed nor touched), and chromium for the browser tests.
setup_proxy_and_browser() {
	local missing=()
	command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
	command -v chromium >/dev/null 2>&1 || missing+=(chromium)
	if [[ ${#missing[@]} -gt 0 ]]; then
		apt_install "${missing[@]}"
	fi
	say "nginx and chromium installed"
}

command -v go >/dev/null 2>&1 || die "Go is not installed (see README.md: Requirements)"
setup_postgres
setup_redis
setup_node_tools
setup_frontend
setup_proxy_and_browser
say "ready"
