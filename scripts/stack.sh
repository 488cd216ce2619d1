#!/usr/bin/env bash
# stack.sh runs the local Rooms stack as background processes of this machine:
# the embedded Kafka-protocol broker (unless KAFKA_BROKERS names a real
# cluster), two workers, two gateways and the nginx proxy in front of them
# (serving the browser app built from frontend/). The Taskfile calls it;
# everything it writes lives in .run/ (binaries, logs, pid files, broker data,
# secret, the proxy's configuration and temp files).
#
# Usage: scripts/stack.sh build|migrate|start|stop|status|logs [name...]
#
# Settings come from config/local.env, then .run/secret.env, then
# config/<name>.env; a variable set in the caller's environment wins over
# config/local.env and .run/secret.env.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="$ROOT/.run"
BIN="$RUN/bin"
LOGS="$RUN/log"
PIDS="$RUN/pid"
CONFIG="$ROOT/config"
# How long to wait for a process to become ready, and for one to stop after
# SIGTERM before it is killed (longer than SHUTDOWN_TIMEOUT's default 15s).
READY_SECONDS=${STACK_READY_SECONDS:-60}
STOP_SECONDS=${STACK_STOP_SECONDS:-25}

GATEWAYS=(gateway-1 gateway-2)
WORKERS=(worker-1 worker-2)
# The proxy's configuration, pid file, access log and temp files.
NGINX_RUN="$RUN/nginx"

say() { printf 'stack: %s\n' "$*"; }
die() {
	printf 'stack: ERROR: %s\n' "$*" >&2
	exit 1
}

# binary_of prints the binary a process name runs.
binary_of() {
	case $1 in
	devbroker) echo devbroker ;;
	gateway-*) echo gateway ;;
	worker-*) echo worker ;;
	nginx) echo nginx ;;
	*) die "unknown process name $1" ;;
	esac
}

# nginx_bin prints the nginx binary (in /usr/sbin, which a user's PATH may lack).
nginx_bin() {
	command -v nginx 2>/dev/null || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } ||
		die "nginx is not installed: run 'go tool task setup'"
}

# proxy_addr prints the proxy's listen address: PROXY_ADDR from the caller's
# environment, else from config/nginx.env.
proxy_addr() {
	if [[ -n ${PROXY_ADDR:-} ]]; then
		echo "$PROXY_ADDR"
	else
		sed -n 's/^PROXY_ADDR=//p' "$CONFIG/nginx.env"
	fi
}

# proxy_url prints the URL a browser opens (localhost for a loopback address).
proxy_url() {
	local addr
	addr=$(proxy_addr)
	echo "http://${addr/#127.0.0.1:/localhost:}"
}

# listen_addr prints the host:port a process listens on.
listen_addr() {
	case $1 in
	devbroker) echo "$DEVBROKER_ADDR" ;;
	gateway-*) sed -n 's/^HTTP_ADDR=//p' "$CONFIG/$1.env" ;;
	nginx) proxy_addr ;;
	esac
}

# load_env exports config/local.env and .run/secret.env, keeping the values of
# variables the caller had already set.
load_env() {
	local file name
	local -A keep=()
	for file in "$CONFIG/local.env" "$RUN/secret.env"; do
		[[ -f $file ]] || continue
		while IFS= read -r name; do
			if [[ -v $name ]]; then keep[$name]=${!name}; fi
		done < <(sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p' "$file")
	done
	set -a
	# shellcheck source=/dev/null
	. "$CONFIG/local.env"
	# shellcheck source=/dev/null
	if [[ -f $RUN/secret.env ]]; then . "$RUN/secret.env"; fi
	set +a
	for name in "${!keep[@]}"; do export "$name=${keep[$name]}"; done
	# The stack runs five Go processes (two gateways, two workers, the
	# broker) beside PostgreSQL, Redis and nginx on one machine. Go sizes each
	# one for every core, and on a small machine their idle threads spinning
	# for work cost more than they give (about a tenth of the stack's CPU on
	# two cores, docs/performance.md). Unless GOMAXPROCS is set, each process
	# gets a quarter of the cores (at least one).
	if [[ -z ${GOMAXPROCS:-} ]]; then
		export GOMAXPROCS=$(( $(nproc) / 4 > 0 ? $(nproc) / 4 : 1 ))
	fi
	# Relative data paths are relative to the repository, wherever we run from.
	if [[ ${DEVBROKER_DATA_DIR:-} != /* ]]; then
		export DEVBROKER_DATA_DIR="$ROOT/${DEVBROKER_DATA_DIR:-.run/kafka}"
	fi
}

# ensure_secret generates the gateways' shared JWT secret once.
ensure_secret() {
	[[ -s $RUN/secret.env ]] && return
	mkdir -p "$RUN"
	local secret
	secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
	(
		umask 077
		printf '# Generated once by scripts/stack.sh; not committed. Delete it to rotate.\nJWT_SECRET=%s\n' "$secret" >"$RUN/secret.env"
	)
	say "generated JWT secret in .run/secret.env"
}

pid_of() {
	local file="$PIDS/$1.pid"
	[[ -f $file ]] && cat "$file"
}

# is_running is true when the pid file of name points to a live process
# running that name's binary (a stale pid reused by another program is not
# ours, and an exited process not yet reaped by its parent is not live).
is_running() {
	local pid stat comm
	pid=$(pid_of "$1") || return 1
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	read -r stat comm < <(ps -o stat=,comm= -p "$pid" 2>/dev/null) || return 1
	[[ $stat != Z* && $comm == "$(binary_of "$1")" ]]
}

# tail_log shows the end of a process's log after a failure.
tail_log() {
	printf -- '--- last lines of .run/log/%s.log ---\n' "$1" >&2
	tail -n 20 "$LOGS/$1.log" >&2 || true
}

# start_process starts name in the background with its own settings, unless it
# already runs. The process gets its own session, so closing the terminal or
# pressing Ctrl-C in it later does not stop the stack.
start_process() {
	local name=$1 bin addr args=()
	bin="$BIN/$(binary_of "$name")"
	if [[ $name == nginx ]]; then
		bin=$(nginx_bin)
		args=(-p "$NGINX_RUN/" -c "$NGINX_RUN/nginx.conf" -e stderr -g 'daemon off;')
	fi
	if is_running "$name"; then
		say "$name already running (pid $(pid_of "$name"); go tool task restart runs a new build)"
		return
	fi
	[[ -x $bin ]] || die "$bin missing: run 'go tool task build'"
	# Another program on our port would answer in our place (or make our
	# process exit): refuse to start rather than test or use the wrong one.
	addr=$(listen_addr "$name")
	if [[ -n $addr ]] && port_open "$addr"; then
		die "$addr, where $name listens, is already in use by another program (not this stack's $name; see 'ss -ltnp')"
	fi
	mkdir -p "$LOGS" "$PIDS"
	(
		if [[ -f $CONFIG/$name.env ]]; then
			set -a
			# shellcheck source=/dev/null
			. "$CONFIG/$name.env"
			set +a
		fi
		cd "$ROOT"
		exec setsid "$bin" "${args[@]}" </dev/null >>"$LOGS/$name.log" 2>&1
	) &
	local pid=$! i comm
	echo "$pid" >"$PIDS/$name.pid"
	# Until the subshell has exec'd the binary the pid still shows as bash or
	# setsid; wait for that so later checks see the real program.
	for ((i = 0; i < 40; i++)); do
		comm=$(ps -o comm= -p "$pid" 2>/dev/null) || break
		[[ $comm == bash || $comm == setsid ]] || break
		sleep 0.05
	done
	say "started $name (pid $pid), log .run/log/$name.log"
}

# wait_ready waits until check succeeds while name keeps running.
wait_ready() {
	local name=$1 i
	shift
	for ((i = 0; i < READY_SECONDS * 4; i++)); do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		if ! is_running "$name"; then
			tail_log "$name"
			die "$name exited during start"
		fi
		sleep 0.25
	done
	tail_log "$name"
	die "$name not ready within ${READY_SECONDS}s"
}

port_open() {
	local host=${1%:*} port=${1##*:}
	(exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

http_ok() { curl -fsS -o /dev/null --max-time 2 "$1"; }

gateway_url() {
	local addr
	addr=$(sed -n 's/^HTTP_ADDR=//p' "$CONFIG/$1.env")
	echo "http://$addr"
}

# build_frontend builds the browser app into frontend/dist when its sources
# are newer than the last build (or there is none).
build_frontend() {
	local app="$ROOT/frontend" changed
	if [[ ! -f $app/package.json ]]; then
		say "skipping the browser app: frontend/package.json not there yet"
		return
	fi
	if [[ -f $app/dist/index.html ]]; then
		changed=$(find "$app/src" "$app/public" "$app/index.html" "$app"/package*.json "$app"/vite.config.* \
			"$app"/tsconfig*.json -newer "$app/dist/index.html" -type f -print -quit 2>/dev/null || true)
		if [[ -z $changed ]]; then
			say "browser app up to date (frontend/dist)"
			return
		fi
	fi
	[[ -d $app/node_modules ]] || die "frontend/node_modules missing: run 'go tool task setup'"
	say "npm --prefix frontend run build"
	npm --prefix "$app" run build || die "building the browser app (frontend/) failed"
}

# render_proxy writes the proxy's nginx configuration for this stack's
# gateways and checks it. A running nginx whose configuration changed (a new
# template, other gateways) reloads it, keeping open connections.
render_proxy() {
	local gateways=() name conf="$NGINX_RUN/nginx.conf"
	for name in "${GATEWAYS[@]}"; do gateways+=("$(listen_addr "$name")"); done
	PROXY_ADDR=$(proxy_addr) PROXY_GATEWAYS="${gateways[*]}" PROXY_ROOT="$ROOT/frontend/dist" \
		PROXY_RUN_DIR="$NGINX_RUN" "$ROOT/proxy/render.sh" "$conf.next"
	"$(nginx_bin)" -t -q -p "$NGINX_RUN/" -c "$conf.next" -e stderr || die "nginx refuses the configuration rendered into $conf.next"
	if cmp -s "$conf.next" "$conf"; then
		rm -f "$conf.next"
		return
	fi
	mv "$conf.next" "$conf"
	if is_running nginx; then
		say "proxy configuration changed: reloading nginx"
		kill -HUP "$(pid_of nginx)"
	fi
}

cmd_build() {
	mkdir -p "$BIN"
	cd "$ROOT"
	local pkg
	for pkg in shared/cmd/devbroker gateway/cmd/gateway worker/cmd/worker; do
		if compgen -G "$pkg/*.go" >/dev/null; then
			say "go build ./$pkg"
			go build -o "$BIN/" "./$pkg"
		else
			say "skipping ./$pkg (not there yet)"
		fi
	done
	build_frontend
}

cmd_migrate() {
	local dbmate="$ROOT/node_modules/.bin/dbmate"
	[[ -x $dbmate ]] || die "dbmate missing: run 'go tool task setup'"
	say "dbmate up ($(sed -E 's#//([^:/]+):[^@]*@#//\1:xxxxx@#' <<<"$DATABASE_URL"))"
	"$dbmate" --url "$DATABASE_URL" --migrations-dir "$ROOT/db/migrations" --no-dump-schema --wait up
}

cmd_start() {
	ensure_secret
	load_env
	if [[ -z ${KAFKA_BROKERS:-} ]]; then
		start_process devbroker
		wait_ready devbroker port_open "$DEVBROKER_ADDR"
		export KAFKA_BROKERS=$DEVBROKER_ADDR
	else
		say "using Kafka at $KAFKA_BROKERS (embedded broker not started)"
	fi
	local name started=()
	for name in "${WORKERS[@]}" "${GATEWAYS[@]}"; do
		if [[ -x $BIN/$(binary_of "$name") ]]; then
			start_process "$name"
			started+=("$name")
		else
			say "skipping $name: binary $(binary_of "$name") not built"
		fi
	done
	for name in "${started[@]}"; do
		case $name in
		gateway-*) wait_ready "$name" http_ok "$(gateway_url "$name")/readyz" ;;
		*) if ! is_running "$name"; then
			tail_log "$name"
			die "$name exited during start"
		fi ;;
		esac
	done
	# The proxy last, in front of the ready gateways.
	build_frontend
	nginx_bin >/dev/null
	render_proxy
	start_process nginx
	wait_ready nginx http_ok "http://$(proxy_addr)/healthz"
	[[ -f $ROOT/frontend/dist/index.html ]] || say "note: frontend/dist is not built yet: $(proxy_url) serves only /api"
	echo
	say "Rooms is up: $(proxy_url)"
	for name in "${GATEWAYS[@]}"; do
		if is_running "$name"; then say "  $name: $(gateway_url "$name")  (API under /api, WebSocket /api/chat/rooms/{id})"; fi
	done
	say "  Kafka: $KAFKA_BROKERS  PostgreSQL: ${DATABASE_URL%%\?*}  Redis: $REDIS_ADDR" | sed -E 's#//([^:/]+):[^@]*@#//\1:xxxxx@#'
	say "  logs: go tool task logs   status: go tool task status   stop: go tool task down"
}

# stop_process sends SIGTERM, waits up to STOP_SECONDS, then SIGKILL.
stop_process() {
	local name=$1 pid i
	if ! is_running "$name"; then
		rm -f "$PIDS/$name.pid"
		return
	fi
	pid=$(pid_of "$name")
	say "stopping $name (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < STOP_SECONDS * 4; i++)); do
		is_running "$name" || break
		sleep 0.25
	done
	if is_running "$name"; then
		say "$name did not stop within ${STOP_SECONDS}s: killing it"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$PIDS/$name.pid"
}

cmd_stop() {
	local name pids=()
	# Gateways first (they stop accepting and flush their producers), then the
	# workers (they finish their batch), then the broker they both use. Each
	# group stops in parallel.
	for group in nginx "${GATEWAYS[*]}" "${WORKERS[*]}" devbroker; do
		pids=()
		for name in $group; do
			stop_process "$name" &
			pids+=($!)
		done
		for pid in "${pids[@]}"; do wait "$pid"; done
	done
	say "stopped"
}

cmd_status() {
	local name state
	for name in devbroker "${GATEWAYS[@]}" "${WORKERS[@]}" nginx; do
		if is_running "$name"; then
			state="running (pid $(pid_of "$name"))"
			if [[ $name == gateway-* ]]; then
				if http_ok "$(gateway_url "$name")/readyz"; then
					state+=", ready at $(gateway_url "$name")"
				else
					state+=", NOT ready at $(gateway_url "$name")"
				fi
			fi
			if [[ $name == nginx ]]; then
				if http_ok "http://$(proxy_addr)/healthz"; then
					state+=", serving $(proxy_url)"
				else
					state+=", NOT answering at $(proxy_url)"
				fi
			fi
		else
			state=stopped
		fi
		printf '%-10s %s\n' "$name" "$state"
	done
}

cmd_logs() {
	local files=() name
	if [[ $# -eq 0 ]]; then
		set -- devbroker "${GATEWAYS[@]}" "${WORKERS[@]}" nginx
	fi
	for name in "$@"; do
		binary_of "$name" >/dev/null
		[[ -f $LOGS/$name.log ]] && files+=("$LOGS/$name.log")
	done
	[[ ${#files[@]} -gt 0 ]] || die "no logs yet in .run/log"
	exec tail -n "${LOG_LINES:-40}" -F "${files[@]}"
}

case ${1:-} in
build) cmd_build ;;
migrate)
	load_env
	cmd_migrate
	;;
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
logs)
	shift
	cmd_logs "$@"
	;;
*) die "usage: $0 build|migrate|start|stop|status|logs [name...]" ;;
esac
