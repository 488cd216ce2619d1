#!/usr/bin/env bash
# render.sh writes the Rooms proxy's nginx configuration from
# proxy/nginx.conf.template, filling in only what differs per run:
#
#   PROXY_ADDR          listen address (default 127.0.0.1:8080)
#   PROXY_GATEWAYS      gateway addresses host:port, comma- or space-separated (required)
#   PROXY_ROOT          folder of the built browser app (required; may not exist yet)
#   PROXY_RUN_DIR       folder of the pid file, access log and temp files (required;
#                       created with its tmp/ folder)
#   PROXY_READ_TIMEOUT  longest silence on a gateway connection, WebSockets
#                       included (default 180s; the server pings every 25 s)
#
# Usage: PROXY_GATEWAYS=127.0.0.1:8081,127.0.0.1:8082 PROXY_ROOT=... PROXY_RUN_DIR=... \
#          proxy/render.sh <output file>
# Then: nginx -p <PROXY_RUN_DIR>/ -c <output file> -e stderr [-g 'daemon off;']
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
die() {
	printf 'render: ERROR: %s\n' "$*" >&2
	exit 1
}

[[ $# -eq 1 ]] || die "usage: $0 <output file>"
out=$1
: "${PROXY_GATEWAYS:?PROXY_GATEWAYS (gateway host:port list) is required}"
: "${PROXY_ROOT:?PROXY_ROOT (built app folder) is required}"
: "${PROXY_RUN_DIR:?PROXY_RUN_DIR (run folder) is required}"
export PROXY_ADDR=${PROXY_ADDR:-127.0.0.1:8080}
export PROXY_READ_TIMEOUT=${PROXY_READ_TIMEOUT:-180s}
[[ $PROXY_ROOT == /* && $PROXY_RUN_DIR == /* ]] || die "PROXY_ROOT and PROXY_RUN_DIR must be absolute paths"
hostport='^[][A-Za-z0-9.:-]+:[0-9]+$'
[[ $PROXY_ADDR =~ $hostport ]] || die "PROXY_ADDR $PROXY_ADDR is not host:port"
[[ $PROXY_READ_TIMEOUT =~ ^[0-9]+(ms|s|m)?$ ]] || die "PROXY_READ_TIMEOUT $PROXY_READ_TIMEOUT is not an nginx time (180s, 2m)"

upstreams=
for gw in ${PROXY_GATEWAYS//,/ }; do
	[[ $gw =~ $hostport ]] || die "gateway address $gw is not host:port"
	# A gateway that fails is left out for 5 s, then tried again.
	upstreams+=$(printf '\t\tserver %s max_fails=1 fail_timeout=5s;' "$gw")$'\n'
done
[[ -n $upstreams ]] || die "PROXY_GATEWAYS names no gateway"
export PROXY_UPSTREAMS=${upstreams%$'\n'}

# A master process started by root switches its workers to a user; make it
# the owner of the app's files, so they can read them and the temp folders
# (nginx hands them to that user). Otherwise the user directive is left out.
PROXY_USER=
if [[ $(id -u) -eq 0 ]]; then
	owned=$PROXY_ROOT
	[[ -e $owned ]] || owned=$PROXY_RUN_DIR
	[[ -e $owned ]] || owned=$HERE
	PROXY_USER="user $(stat -c '%U %G' "$owned");"
fi
export PROXY_USER PROXY_ROOT PROXY_RUN_DIR

mkdir -p "$PROXY_RUN_DIR/tmp" "$(dirname "$out")"
# Only our variables are replaced; nginx's own ($host, ...) stay.
# shellcheck disable=SC2016 # the list names variables for envsubst
envsubst '${PROXY_USER} ${PROXY_ADDR} ${PROXY_UPSTREAMS} ${PROXY_ROOT} ${PROXY_RUN_DIR} ${PROXY_READ_TIMEOUT}' \
	<"$HERE/nginx.conf.template" >"$out.tmp"
mv "$out.tmp" "$out"
