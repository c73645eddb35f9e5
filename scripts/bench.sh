#!/usr/bin/env bash
# bench.sh runs the load benchmark: bouncemilter serve, driven as Postfix
# drives it with go-milter's client, beside a milter that does nothing built
# with the same library (internal/loadtest/noopmilter), in the same run:
#
#   - 10,000 ordinary messages over 50 connections, as fast as they go;
#   - 10,000 authentic bounces over 50 connections, as fast as they go, each
#     naming an unverified sign-up that gets banned;
#   - the same bounces again at a steady 1,000 a second.
#
# It prints throughput, p50 and p99 latency from the end of the message (or
# the command answered early) to the milter's answer, errors, and each
# process's peak RSS, then the targets. No root and no service needed; about
# a minute. Extra arguments go to `go test` (say -cpuprofile).
#
#   scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "bench.sh: Go is needed (see README)" >&2; exit 1; }

echo "$(nproc) CPUs; the load generator shares them with the milters."
go test -count=1 -run '^$' -bench '^BenchmarkLoad$' -benchtime 1x -timeout 10m "$@" ./e2e/ |
	sed -n '/^workload/,/^PASS/p' | grep -v '^PASS'
cat <<'TARGETS'
Targets: ordinary mail within 1.1x of the do-nothing milter (noop-mail
answers at MAIL FROM as bouncemilter does); bounces at p99 under 5 ms;
peak RSS under 100 MB; zero errors.
TARGETS
