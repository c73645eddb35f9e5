#!/usr/bin/env bash
# test.sh runs every test of bouncemilter: unit tests, the tests against real
# SQLite, PostgreSQL, fail2ban and Postfix, the end-to-end pipeline, the DSN
# corpus score (when ../shared/corpus is there), and each fuzz target briefly.
#
# Run as root on Debian 12 it installs and starts what the tests need
# (scripts/services.sh). Run as anyone else, the tests that need a service or
# root skip, and the summary at the end says which and why. With CI=true
# nothing may skip: such a test fails instead.
#
#   scripts/test.sh                 everything
#   FUZZTIME=1m scripts/test.sh     fuzz longer (default 10s per target)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "test.sh: Go 1.25 or newer is needed (see README)" >&2; exit 1; }

if [[ $(id -u) -eq 0 ]]; then
	eval "$(scripts/services.sh)"
else
	echo "test.sh: not root: Postfix, fail2ban, nftables and PostgreSQL tests will skip" >&2
	scripts/services.sh >/dev/null || true
fi
if [[ ${CI:-} == true && -z ${BOUNCEMILTER_TEST_PG:-} ]]; then
	echo "test.sh: CI=true but PostgreSQL could not be prepared; refusing to skip its tests" >&2
	exit 1
fi

mkdir -p .tmp
log=.tmp/test.log
status=0

echo "== go vet"
go vet ./... || status=1

echo "== go test"
# -v to a log, so that skips and their reasons can be listed; the console gets
# the package results and whatever failed.
set +e
go test -count=1 -timeout 12m -v ./... >"$log" 2>&1
test_status=$?
set -e
grep -E '^(ok|FAIL|\?)\s' "$log" || true
if ((test_status != 0)); then
	status=1
	echo "-- failures:"
	grep -E -B2 -A25 -- '--- FAIL' "$log" | head -400 || true
	grep -E -A30 '^panic:' "$log" | head -100 || true
fi

echo "== go test -race (concurrent packages)"
go test -count=1 -race ./internal/registry/ ./internal/filter/ ./internal/worker/ ./internal/returnpath/ ./internal/app/ ./internal/metrics/ || status=1

echo "== fuzz (${FUZZTIME:-10s} per target)"
for pkgdir in $(go list -f '{{.Dir}}' ./internal/...); do
	pkg=./${pkgdir#"$PWD"/}
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$pkgdir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
		echo "-- $pkg $target"
		if go test -run '^$' -fuzz "^${target}\$" -fuzztime "${FUZZTIME:-10s}" "$pkg" >.tmp/fuzz.log 2>&1; then
			continue
		fi
		# Go 1.26's fuzz coordinator can fail a target with a bare
		# "context deadline exceeded" when -fuzztime ends while a worker
		# is mid-call on a busy machine (golang/go#75804, fixed in Go
		# 1.27). That is no finding: a real one writes its failing input.
		# Such a run is said and tried once more; anything else fails.
		if grep -q 'context deadline exceeded' .tmp/fuzz.log && ! grep -q 'Failing input written to' .tmp/fuzz.log; then
			echo "   fuzz coordinator stopped at the deadline without a finding (golang/go#75804); once more"
			go test -run '^$' -fuzz "^${target}\$" -fuzztime "${FUZZTIME:-10s}" "$pkg" >.tmp/fuzz.log 2>&1 && continue
			if grep -q 'context deadline exceeded' .tmp/fuzz.log && ! grep -q 'Failing input written to' .tmp/fuzz.log; then
				echo "   again without a finding; not counted as a failure"
				continue
			fi
		fi
		status=1
		tail -30 .tmp/fuzz.log
	done
done

passed=$(grep -cE '^\s*--- PASS' "$log" || true)
failed=$(grep -cE '^\s*--- FAIL' "$log" || true)
skipped=$(grep -cE '^\s*--- SKIP' "$log" || true)
if ((skipped > 0)); then
	echo "== skipped tests and why:"
	# go test -v streams what a test logs under its "=== RUN NAME" (or
	# CONT, NAME) line; the last line a skipped test logged is its reason.
	awk '
		/^=== (RUN|CONT|NAME) / { current = $3; next }
		/^[ \t]+[^ \t]+\.go:[0-9]+: / && current != "" { said[current] = $0 }
		/^[ \t]*--- SKIP: / { skipped[++n] = $3 }
		END {
			for (i = 1; i <= n; i++) {
				r = said[skipped[i]]
				sub(/^[ \t]+/, "", r)
				printf "  %s: %s\n", skipped[i], (r == "" ? "(no reason logged)" : r)
			}
		}
	' "$log"
fi
echo "test: $passed passed, $failed failed, $skipped skipped"
exit $status
