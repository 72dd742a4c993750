#!/usr/bin/env bash
# The shell's share alone: bash sourcing the exact per-invocation files (`w`, `s`) in a loop,
# with FIFOs held open by readers as the host holds them, timed with EPOCHREALTIME. No pipe
# reading here (the host's trigger lines are read one byte per read(2) on top of this).
# Usage: docs/profiles/wrapper-bench.sh [N]
set -euo pipefail
n=${1:-2000} dir=$(mktemp -d /tmp/tether-wb.XXXXXX)
trap 'kill $holder 2>/dev/null || true; rm -rf "$dir"' EXIT
mkfifo "$dir/o" "$dir/e" "$dir/st"
(exec 3<>"$dir/o" 4<>"$dir/e" 5<>"$dir/st"; cat <&5 >/dev/null) & holder=$!
printf '%s\n' '\builtin set --' "{ \\builtin eval ' true'" "} </dev/null >'$dir/o' 2>'$dir/e'" > "$dir/w"
printf '%s\n' "\\builtin printf '7 %d\\n' \"\$?\" >|'$dir/st'" > "$dir/s"
bash --noprofile --norc -s <<EOS
set -m; trap 'break 1000 2>/dev/null' INT; shopt -s expand_aliases
readonly __tether_w='$dir/w' __tether_s='$dir/s'
n=$n
us() { echo "\$1: \$(( (\${3/./} - \${2/./}) / n )) us"; }
t0=\$EPOCHREALTIME; for ((i=0;i<n;i++)); do . "\$__tether_w"; . "\$__tether_s"; done
t1=\$EPOCHREALTIME; for ((i=0;i<n;i++)); do . "\$__tether_w"; done
t2=\$EPOCHREALTIME; for ((i=0;i<n;i++)); do . "\$__tether_s"; done
t3=\$EPOCHREALTIME; for ((i=0;i<n;i++)); do { builtin eval ' true'; } </dev/null >'$dir/o' 2>'$dir/e'; done
t4=\$EPOCHREALTIME; for ((i=0;i<n;i++)); do builtin eval ' true'; done
t5=\$EPOCHREALTIME; for ((i=0;i<n;i++)); do :; done
t6=\$EPOCHREALTIME
us '. w; . s (one invocation)' \$t0 \$t1; us '. w' \$t1 \$t2; us '. s' \$t2 \$t3
us 'group + 3 redirections' \$t3 \$t4; us 'eval true' \$t4 \$t5; us 'empty loop turn' \$t5 \$t6
EOS
