#!/usr/bin/env bash
# fuzz.sh runs every fuzz target for FUZZTIME (the first argument, default
# 10s) each: go test -fuzz takes one package and one target per run. New
# inputs are kept in the Go build cache ($(go env GOCACHE)/fuzz); a failing
# input is written to the package's testdata/fuzz, to be committed with its
# fix.
#
# One failure is run once more: a run that ends with nothing but "context
# deadline exceeded" and no failing input written. That is Go's own fuzz
# coordinator racing its -fuzztime deadline on a busy machine
# (https://go.dev/issue/75804, fixed in Go 1.27; this module builds with
# 1.26), not a finding. It is reported as FLAKY (on stderr and in
# .run/fuzz/flaky.txt, with the first run's output kept in
# .run/fuzz/<target>.log), as scripts/faults.sh reports its retried tests. A
# second such run, or any other failure, fails the step.
#
# Each new interesting input is minimized for at most 1 s, not Go's default
# 60 s. While a worker minimizes, it runs no new inputs: with the default, a
# 10 s run found one or two new inputs in its first seconds and spent the rest
# at "0/sec" minimizing them (https://go.dev/issue/48820), 167 040 executions
# in 10 s against 875 309 with 1 s (FuzzValidateClientMsgID). A failing input
# is still written; it may be less small.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
fuzztime=${1:-10s}
mkdir -p .run/fuzz
rm -f .run/fuzz/flaky.txt .run/fuzz/*.log
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# deadline_race tells whether the run in $log failed only by the race.
deadline_race() {
	grep -q 'context deadline exceeded' "$log" &&
		! grep -q -e 'Failing input written' -e '^panic:' -e 'fuzzing process hung' "$log"
}

for target in \
	shared/message:FuzzValidateContent \
	shared/message:FuzzContentRules \
	shared/message:FuzzValidateClientMsgID \
	gateway/internal/ws:FuzzParseLegacy \
	gateway/internal/ws:FuzzParseV2; do
	pkg=./${target%%:*} name=${target#*:}
	for try in 1 2; do
		echo "== fuzz $name ($pkg, $fuzztime)"
		if go test -run '^$' -fuzz "^$name\$" -fuzztime "$fuzztime" -fuzzminimizetime 1s "$pkg" 2>&1 | tee "$log"; then
			break
		fi
		if [[ $try == 1 ]] && deadline_race; then
			cp "$log" ".run/fuzz/$name.log"
			echo "$name" >>.run/fuzz/flaky.txt
			echo "FLAKY: fuzz $name ended on Go's fuzz-time deadline race (go.dev/issue/75804), no failing input; running it once more (first run's output in .run/fuzz/$name.log)" >&2
			continue
		fi
		exit 1
	done
done
