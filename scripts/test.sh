#!/usr/bin/env bash
# test.sh runs every check of every Go module of the workspace (go.work):
# go vet, staticcheck, govulncheck and go test -race. It expects the services
# of scripts/setup.sh to run (`go tool task test` runs setup first). A missing
# service makes the tests fail; nothing is skipped.
#
# Environment:
#   GOVULNDB      vulnerability database for govulncheck, e.g. https://vuln.go.dev
#                 (default: built offline by scripts/vulndb.sh into .run/vulndb)
#   TEST_TIMEOUT  go test -timeout (default 20m)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

step() { printf '\n== %s\n' "$*"; }

# The workspace's modules, as folders relative to the root (shared, gateway, ...).
mapfile -t modules < <(go list -m -f '{{.Dir}}' | sed "s#^$ROOT/##")
patterns=()
for m in "${modules[@]}"; do patterns+=("./$m/..."); done

failed=()
# check runs one step and records its failure, so one failing step does not
# hide the results of the others; the script fails at the end if any failed.
check() {
	local name=$1
	shift
	step "$name"
	if ! "$@"; then
		printf 'test: FAILED: %s\n' "$name" >&2
		failed+=("$name")
	fi
}

check "go vet ${patterns[*]}" go vet "${patterns[@]}"
check "staticcheck ${patterns[*]}" go tool staticcheck "${patterns[@]}"
check "go test -race ${patterns[*]}" go test -race -count=1 -timeout "${TEST_TIMEOUT:-20m}" "${patterns[@]}"
# govulncheck works on one module at a time. It needs its vulnerability
# database: by default the one scripts/vulndb.sh builds offline from the
# golang.org/x/vulndb module (fetched through the Go module proxy), or the one
# GOVULNDB names. A database that cannot be built or read is a failure.
vulndb=
find_vulndb() { vulndb=${GOVULNDB:-$(scripts/vulndb.sh)}; }
check "vulnerability database" find_vulndb
for m in "${modules[@]}"; do
	check "govulncheck ./$m/... (db ${vulndb:-missing})" \
		go tool govulncheck -db "$vulndb" -C "$m" ./...
done
# A short run of every fuzz target (FUZZTIME each, default 10s).
check "fuzz targets (go tool task test:fuzz)" go tool task test:fuzz

if [[ ${#failed[@]} -gt 0 ]]; then
	printf '\ntest: %d step(s) failed:\n' "${#failed[@]}" >&2
	printf '  %s\n' "${failed[@]}" >&2
	exit 1
fi
printf '\ntest: all checks passed\n'
