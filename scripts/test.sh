#!/usr/bin/env bash
# test.sh runs every check of every Go module of the workspace (go.work):
# go vet, staticcheck, govulncheck and go test -race. It expects the services
# of scripts/setup.sh to run (`go tool task test` runs setup first). A missing
# service makes the tests fail; nothing is skipped.
#
# Environment:
#   GOVULNDB      vulnerability database for govulncheck (default https://vuln.go.dev)
#   TEST_TIMEOUT  go test -timeout (default 20m)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

step() { printf '\n== %s\n' "$*"; }

# The workspace's modules, as folders relative to the root (shared, gateway, ...).
mapfile -t modules < <(go list -m -f '{{.Dir}}' | sed "s#^$ROOT/##")
patterns=()
for m in "${modules[@]}"; do patterns+=("./$m/..."); done

step "go vet ${patterns[*]}"
go vet "${patterns[@]}"

step "staticcheck ${patterns[*]}"
go tool staticcheck "${patterns[@]}"

# govulncheck works on one module at a time.
for m in "${modules[@]}"; do
	step "govulncheck ./$m/..."
	if ! go tool govulncheck -db "${GOVULNDB:-https://vuln.go.dev}" -C "$m" ./...; then
		printf 'test: govulncheck failed for %s (a known vulnerability, or the database at %s is unreachable: set GOVULNDB to a reachable mirror)\n' "$m" "${GOVULNDB:-https://vuln.go.dev}" >&2
		exit 1
	fi
done

step "go test -race ${patterns[*]}"
go test -race -count=1 -timeout "${TEST_TIMEOUT:-20m}" "${patterns[@]}"

printf '\ntest: all checks passed\n'
