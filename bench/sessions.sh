#!/usr/bin/env bash
# Cost of idle sessions: creates N (default 200) sessions, then reports the time per `new`,
# `get` over all of them, a fan-out of `true` to all, and PSS per idle session (host + shell)
# and the daemon's RSS. Usage: bench/sessions.sh [N]
set -euo pipefail
n=${1:-200}
source "$(dirname "$0")/common.sh"
"$T" daemon start --quiet
s=$(date +%s%N); for _ in $(seq "$n"); do "$T" new >/dev/null; done; e=$(date +%s%N)
echo "new: $(( (e - s) / n / 1000 )) µs per session ($n sessions)"
s=$(date +%s%N); "$T" get >/dev/null; e=$(date +%s%N); echo "get over $n sessions: $(( (e - s) / 1000000 )) ms"
s=$(date +%s%N); "$T" invoke -s "$(seq -s, 1 "$n")" true; e=$(date +%s%N); echo "invoke -s 1..$n true (fan-out, throttle 32): $(( (e - s) / 1000000 )) ms"
"$T" get --json | python3 -c '
import json, sys, os
pss = lambda pid: int([l.split()[1] for l in open(f"/proc/{pid}/smaps_rollup") if l.startswith("Pss:")][0])
hosts = [s["host_pid"] for s in json.load(sys.stdin)]
kids = lambda pid: [int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()]
total = sum(pss(h) + sum(pss(k) for k in kids(h)) for h in hosts)
print(f"PSS per idle session (host + shell): {total / len(hosts):.0f} kB over {len(hosts)} sessions")
'
echo "daemon RSS: $(grep VmRSS /proc/$(cat "$TETHER_HOME/daemon.pid")/status | awk '{print $2, $3}')"
