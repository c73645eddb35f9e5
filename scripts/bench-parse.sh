#!/usr/bin/env bash
# bench-parse.sh measures "bouncemilter parse --json" over the shared corpus
# of real bounces (../shared/corpus/sisimai beside the checkout, or
# BOUNCEMILTER_CORPUS) beside Sisimai, the Perl bounce parser (Debian package
# libsisimai-perl), in the same run: the CPU time (user + system, of the
# process and its threads) each takes for all the messages, in alternating
# rounds so that both see the same machine, and messages per CPU-second. The
# user and the system share are printed apart: on a virtual machine a page
# fault or a system call can cost many times what it costs on bare metal.
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

# cpu runs a command and prints the user and the system CPU seconds it
# used, from the shell's own accounting of its children (the "times" builtin,
# read before and after in the same shell), so that no extra tool is needed.
cpu() {
	local t=.tmp/bench-parse.times
	times >"$t.0"
	"$@" >/dev/null
	times >"$t.1"
	awk 'FNR == 2 { split($1, u, "m"); split($2, s, "m"); if (NR == FNR) { a = u[1]*60 + u[2]; b = s[1]*60 + s[2] } else { c = u[1]*60 + u[2]; d = s[1]*60 + s[2] } }
		END { printf "%.3f %.3f", c - a, d - b }' "$t.0" "$t.1"
}

# add adds the pair "user system" $2 to the pair $1.
add() {
	awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.3f %.3f", x[1] + y[1], x[2] + y[2] }'
}

ours="0 0" theirs="0 0" start="0 0"
for ((i = 0; i < rounds; i++)); do
	ours=$(add "$ours" "$(cpu .tmp/bouncemilter parse --json "${files[@]}")")
	start=$(add "$start" "$(cpu .tmp/bouncemilter help)")
	if [[ -n $sisimai ]]; then
		theirs=$(add "$theirs" "$(cpu perl -MSisimai -e 'Sisimai->make($_, delivered => 1) for @ARGV' "${files[@]}")")
	fi
done

# report prints one line: the CPU time a round (user + system, and each),
# and, unless $3 is "alone", messages per CPU-second.
report() {
	awk -v name="$1" -v t="$2" -v alone="${3:-}" -v n="$n" -v r="$rounds" 'BEGIN { split(t, c, " "); all = c[1] + c[2]
		printf "%-27s %6.3f CPU-s a round (user %.3f, system %.3f)", name, all / r, c[1] / r, c[2] / r
		if (alone == "") printf "  %6.0f messages per CPU-second", n * r / all
		printf "\n" }'
}

echo "$n messages, $rounds rounds, $(nproc) CPUs"
report "bouncemilter parse --json" "$ours"
report "  of which starting (help)" "$start" alone
if [[ -n $sisimai ]]; then
	report "Sisimai $sisimai (Perl)" "$theirs"
	awk -v a="$ours" -v b="$theirs" 'BEGIN { split(a, x, " "); split(b, y, " ")
		printf "bouncemilter uses 1/%.1f of Sisimai'"'"'s CPU time (target: 1/20 or less); in user space alone 1/%.1f\n", (y[1] + y[2]) / (x[1] + x[2]), y[1] / x[1] }'
fi
if command -v python3 >/dev/null; then
	.tmp/bouncemilter parse --json "${files[@]}" | python3 "$corpus/../score" "$corpus/expected.jsonl" | tail -1
fi
