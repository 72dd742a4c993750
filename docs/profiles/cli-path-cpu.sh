#!/usr/bin/env bash
# CPU per CLI call `tether invoke -s b true` of every process on its path: the CLI (perf stat
# task-clock over a loop, which includes the loop's own fork), and the daemon, session host and
# shell (/proc/PID/schedstat deltas; they live through the loop). Also wall time per call.
# Usage: docs/profiles/cli-path-cpu.sh N TETHER_BINARY
set -euo pipefail
n=$1 exe=$(realpath "$2")
home=$(mktemp -d /tmp/tether-cli.XXXXXX) st=$(mktemp)
trap 'TETHER_HOME=$home $exe daemon stop >/dev/null 2>&1 || true; rm -rf "$home" "$st"' EXIT
export TETHER_HOME=$home TETHER_EXE=$exe
"$exe" new --name b >/dev/null
d=$(cat "$home/daemon.pid"); h=$(pgrep -P "$d" -n); b=$(pgrep -P "$h" -n)
rt() { read -r x _ < "/proc/$1/schedstat"; echo "$x"; }
d0=$(rt "$d") h0=$(rt "$h") b0=$(rt "$b") s=$EPOCHREALTIME
perf stat -x, -e task-clock -o "$st" bash -c "for i in \$(seq $n); do $exe invoke -s b true; done"
e=$EPOCHREALTIME d1=$(rt "$d") h1=$(rt "$h") b1=$(rt "$b")
awk -v n="$n" -v w=$(( ${e/./} - ${s/./} )) -v c="$(awk -F, '/task-clock/{print $1}' "$st")" \
  -v d=$((d1 - d0)) -v h=$((h1 - h0)) -v b=$((b1 - b0)) 'BEGIN{printf "per call: wall %.0f us | CPU: CLI+fork %.0f, daemon %.0f, host %.0f, shell %.0f us\n", w/n, c*1000/n, d/1000/n, h/1000/n, b/1000/n}'
