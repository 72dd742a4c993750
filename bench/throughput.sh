#!/usr/bin/env bash
# Output throughput of one invocation on an open local session, beside a plain pipe, and the
# peak memory of every tether process meanwhile. Usage: bench/throughput.sh [GiB]
set -euo pipefail
gib=${1:-2}
source "$(dirname "$0")/common.sh"
"$T" new --name tp >/dev/null
bytes=$((gib * 1024 * 1024 * 1024))
t0=$(date +%s.%N); "$T" invoke -s tp "head -c $bytes /dev/zero" | cat >/dev/null; t1=$(date +%s.%N)
p0=$(date +%s.%N); head -c $bytes /dev/zero | cat >/dev/null; p1=$(date +%s.%N)
host=$("$T" get --name tp --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["host_pid"])')
python3 - "$t0" "$t1" "$p0" "$p1" "$bytes" <<'PY'
import sys
t0, t1, p0, p1, n = map(float, sys.argv[1:])
tt, tp = t1 - t0, p1 - p0
print(f"tether invoke: {n/tt/1e9:.2f} GB/s ({tt:.2f} s); pipe: {n/tp/1e9:.2f} GB/s ({tp:.2f} s); ratio {tp/tt:.2f}")
PY
echo "peak RSS: daemon $(grep VmHWM /proc/$(cat "$TETHER_HOME/daemon.pid")/status | awk '{print $2, $3}'), session host $(grep VmHWM /proc/$host/status | awk '{print $2, $3}')"
