#!/usr/bin/env bash
# bench-parse.sh measures "bouncemilter parse --json" over the shared corpus
# of real bounces (../shared/corpus/sisimai beside the checkout, or
# BOUNCEMILTER_CORPUS) beside Sisimai, the Perl bounce parser (Debian package
# libsisimai-perl), in the same run: the CPU time (user + system, of the
# process and its threads) each takes for all the messages, in alternating
# rounds so that both see the same machine, and messages per CPU-second.
# It also times the binary's start alone ("bouncemilter help", which only
# prints the usage), the part of each run that does not depend on the
# messages. Then it prints the corpus score. Sisimai's side is skipped, saying so,
# when Sisimai is not installed.
#
#   scripts/bench-parse.sh              5 rounds
#   ROUNDS=20 scripts/bench-parse.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "bench-parse.sh: Go is needed (see README)" >&2; exit 1; }
corpus=${BOUNCEMILTER_CORPUS:-../shared/corpus/sisimai}
[[ -f $corpus/expected.jsonl ]] || { echo "bench-parse.sh: no corpus at $corpus (set BOUNCEMILTER_CORPUS)" >&2; exit 1; }
rounds=${ROUNDS:-5}

mkdir -p .tmp
# Linked afresh every time (go build leaves an up-to-date binary alone): how
# fast a binary starts here depends on how its file came into the page
# cache, so every run measures one in the same state.
rm -f .tmp/bouncemilter
go build -o .tmp/bouncemilter ./cmd/bouncemilter
files=("$corpus"/eml/*)
n=${#files[@]}

sisimai=
if perl -MSisimai -e 1 2>/dev/null; then
	sisimai=$(perl -MSisimai -e 'print $Sisimai::VERSION')
else
	echo "Sisimai is not installed (apt-get install libsisimai-perl): measuring bouncemilter alone."
fi

# cpu runs a command and prints the CPU seconds it used, from the shell's own
# accounting of its children (the "times" builtin, read before and after in
# the same shell), so that no extra tool is needed.
cpu() {
	local t=.tmp/bench-parse.times
	times >"$t.0"
	"$@" >/dev/null
	times >"$t.1"
	awk 'FNR == 2 { split($1, u, "m"); split($2, s, "m"); v = u[1]*60 + u[2] + s[1]*60 + s[2]; if (NR == FNR) a = v; else b = v }
		END { printf "%.3f", b - a }' "$t.0" "$t.1"
}

ours=0 theirs=0 start=0
for ((i = 0; i < rounds; i++)); do
	ours=$(awk -v t="$ours" -v d="$(cpu .tmp/bouncemilter parse --json "${files[@]}")" 'BEGIN { print t + d }')
	start=$(awk -v t="$start" -v d="$(cpu .tmp/bouncemilter help)" 'BEGIN { print t + d }')
	if [[ -n $sisimai ]]; then
		d=$(cpu perl -MSisimai -e 'Sisimai->make($_, delivered => 1) for @ARGV' "${files[@]}")
		theirs=$(awk -v t="$theirs" -v d="$d" 'BEGIN { print t + d }')
	fi
done

echo "$n messages, $rounds rounds, $(nproc) CPUs"
awk -v n="$n" -v r="$rounds" -v c="$ours" 'BEGIN { printf "bouncemilter parse --json  %6.3f CPU-s a round  %8.0f messages per CPU-second\n", c / r, n * r / c }'
awk -v r="$rounds" -v c="$start" 'BEGIN { printf "  of which starting the binary (bouncemilter help): %.3f CPU-s\n", c / r }'
if [[ -n $sisimai ]]; then
	awk -v n="$n" -v r="$rounds" -v c="$theirs" -v v="$sisimai" 'BEGIN { printf "Sisimai %-18s %6.3f CPU-s a round  %8.0f messages per CPU-second\n", v " (Perl)", c / r, n * r / c }'
	awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "bouncemilter uses 1/%.1f of Sisimai'"'"'s CPU time (target: 1/20 or less)\n", b / a }'
fi
if command -v python3 >/dev/null; then
	.tmp/bouncemilter parse --json "${files[@]}" | python3 "$corpus/../score" "$corpus/expected.jsonl" | tail -1
fi
