#!/usr/bin/env bash
# vulndb.sh builds the Go vulnerability database govulncheck reads, without
# reaching vuln.go.dev: it fetches the golang.org/x/vulndb module (its
# data/osv folder holds every report as an OSV entry) through the Go module
# proxy into the module cache, indexes it with shared/cmd/vulndbindex into
# .run/vulndb and prints the database's URL for `govulncheck -db`:
#
#   go tool govulncheck -db "$(scripts/vulndb.sh)" ./...
#
# It is idempotent: the module cache keeps the download, and the database is
# rebuilt only when VULNDB_VERSION or the indexer changes. Any failure (proxy
# unreachable, no entries) is an error; progress goes to stderr.
#
# To update the data, set VULNDB_VERSION to a newer (pseudo-)version of the
# module (it has no tags); the newest one the proxy serves is printed by
#   GOWORK=off go list -m golang.org/x/vulndb@latest
# Then run the checks (`go tool task test`): new findings may appear.
set -euo pipefail

VULNDB_VERSION=v0.0.0-20261105234957-e22db6528018

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

out=.run/vulndb
indexer=shared/cmd/vulndbindex
stamp="golang.org/x/vulndb@$VULNDB_VERSION indexer:$(sha256sum <"$indexer/main.go" | cut -d' ' -f1)"

if [[ ! -f $out/STAMP || "$(cat "$out/STAMP")" != "$stamp" ]]; then
	# Outside the workspace (GOWORK=off, no go.mod at the root) the download
	# touches no go.mod, go.sum or go.work.sum. On failure, the JSON output
	# says why (field Error).
	if ! download=$(GOWORK=off go mod download -json "golang.org/x/vulndb@$VULNDB_VERSION"); then
		printf 'vulndb: download golang.org/x/vulndb@%s:\n%s\n' "$VULNDB_VERSION" "$download" >&2
		exit 1
	fi
	field() { sed -n "s/^[[:space:]]*\"$1\": \"\(.*\)\",\{0,1\}\$/\1/p" <<<"$download"; }
	dir=$(field Dir)
	info=$(field Info)
	if [[ -z $dir || -z $info ]]; then
		printf 'vulndb: unexpected output of go mod download:\n%s\n' "$download" >&2
		exit 1
	fi
	# The entries' modified time is zero in the module; use the commit time of
	# the module version, so govulncheck reports when the data was published.
	modified=$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$info")

	mkdir -p .run
	tmp=$(mktemp -d .run/vulndb.XXXXXX)
	trap 'rm -rf "$tmp"' EXIT
	go run "./$indexer" -osv "$dir/data/osv" -out "$tmp" -modified "$modified" >&2
	printf '%s\n' "$stamp" >"$tmp/STAMP"
	rm -rf "$out"
	mv "$tmp" "$out"
fi

printf 'file://%s/%s\n' "$ROOT" "$out"
