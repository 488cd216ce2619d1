#!/usr/bin/env bash
# bench.sh runs the load generator (loadtest/cmd/roomsbench) against the
# running local stack (`go tool task up`; the Taskfile starts it first).
#
# Usage: loadtest/bench.sh full|quick [roomsbench flags...]
#
#   full   the benchmark of docs/performance.md: chat, fanout, connect and
#          resume; result in loadtest/results/bench-<date>.json
#   quick  a smoke run under a minute (small chat with two steps and a short
#          resume); fails only if a message is lost, duplicated or reordered
#          or a seq is skipped, never on timing; result in
#          loadtest/results/quick-<date>.json (not committed)
#
# Users are created once and their credentials cached in .run/bench-users.json.
# Their REST calls come from 127.0.0.2-127.0.0.254, so the per-IP limit on
# login and register (AUTH_RATE_LIMIT_IP) applies per simulated client address
# as it would for real clients, and the stack runs with its normal settings.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export GOTOOLCHAIN=${GOTOOLCHAIN:-auto}

mode=${1:-}
shift || true

mkdir -p .run/bin
go build -o .run/bin/roomsbench ./loadtest/cmd/roomsbench
go build -o .run/bin/wirecost ./loadtest/cmd/wirecost

# The gateways the clients are spread over, from the stack's config, and
# their admin servers (metrics, pprof), for the Go memory of idle connections.
targets=()
admins=()
for f in config/gateway-*.env; do
	targets+=("http://$(sed -n 's/^HTTP_ADDR=//p' "$f")")
	a=$(sed -n 's/^ADMIN_ADDR=//p' "$f")
	if [ -n "$a" ]; then admins+=("http://$a"); fi
done
target_list=$(IFS=,; echo "${targets[*]}")
admin_list=$(IFS=,; echo "${admins[*]}")
# Every server's admin server, for the latency histograms by stage.
stage_admins=("${admins[@]}")
for f in config/worker-*.env; do
	a=$(sed -n 's/^ADMIN_ADDR=//p' "$f")
	if [ -n "$a" ]; then stage_admins+=("http://$a"); fi
done
stage_list=$(IFS=,; echo "${stage_admins[*]}")

case $mode in
full)
	# What one loopback write costs on this machine (the floor under a
	# delivery; machines of the same kind differ by 50 % in it), measured
	# on the idle stack and stored with the result.
	wire=$(GOMAXPROCS=1 .run/bin/wirecost -conns 1000 -rate 20000 -size 160 -duration 3s |
		sed -n 's/^writer CPU: .* = \([0-9.]*\) µs per write$/\1/p' || true)
	echo "bench: one loopback write costs ${wire:-?} CPU-µs here (loadtest/cmd/wirecost)"
	# What one process waking another and being woken back costs, on one
	# CPU and across two: every message crosses five processes, and on
	# machines L and M (docs/performance.md) a round trip across CPUs cost
	# two to four times one on a single CPU. 6-10 s.
	wake=$(.run/bin/wirecost -wakeups 100000 || true)
	wake_same=$(echo "$wake" | sed -n 's/^wake-up round trip, same CPU: .* (CPU \([0-9.]*\) µs)$/\1/p')
	wake_across=$(echo "$wake" | sed -n 's/^wake-up round trip, across CPUs: .* (CPU \([0-9.]*\) µs)$/\1/p')
	echo "bench: a wake-up round trip between two processes costs ${wake_same:-?} CPU-µs on one CPU, ${wake_across:-?} across two"
	exec .run/bin/roomsbench -targets "$target_list" -admin-targets "$admin_list" -name bench \
		-stage-targets "$stage_list" -loopback-write-us "${wire:-0}" \
		-wakeup-same-cpu-us "${wake_same:-0}" -wakeup-across-cpus-us "${wake_across:-0}" "$@"
	;;
quick)
	exec .run/bin/roomsbench -targets "$target_list" -admin-targets "$admin_list" -name quick \
		-stage-targets "$stage_list" \
		-workloads chat,resume -rooms 10 -clients 5 -steps 100,200 -step 10s -warmup 2s -drain 5s \
		-resume-rooms 5 -resume-senders 2 -resume-clients 10 -resume-rate 50 -resume-drop 3s -resume-after 2s \
		"$@"
	;;
*)
	echo "usage: $0 full|quick [roomsbench flags...]" >&2
	exit 2
	;;
esac
