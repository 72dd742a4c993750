#!/usr/bin/env bash
# Syscalls and sleeps (switches away in state S) per round trip of the quickstart client, its
# session host and its shell, from tracepoints (perf record -a; no strace, whose slowdown would
# change what the host does, e.g. the 1 ms Started delay).
# Usage: docs/profiles/syscalls.sh QUICKSTART TETHER_BINARY
set -euo pipefail
qs=$(realpath "$1") exe=$(realpath "$2")
home=$(mktemp -d /tmp/tether-sc.XXXXXX) data=$(mktemp)
trap 'TETHER_HOME=$home $exe daemon stop >/dev/null 2>&1 || true; rm -rf "$home" "$data"' EXIT
export TETHER_HOME=$home TETHER_EXE=$exe
"$exe" daemon start --quiet
perf record -q -a -e raw_syscalls:sys_enter,sched:sched_switch -o "$data" -- "$qs" | grep 'round trip'
perf script -i "$data" -F comm,pid,event,trace 2>/dev/null | python3 -c "
import sys, collections
c = collections.Counter(); sw = collections.Counter(); comm = {}
for l in sys.stdin:
    p = l.split()
    if len(p) < 3: continue
    comm[p[1]] = p[0]
    if p[2].startswith('raw_syscalls'): c[p[1]] += 1
    elif 'prev_state=S' in l: sw[p[1]] += 1
for pid, n in sorted(c.items(), key=lambda x: -x[1]):
    if comm[pid].startswith(('quickstart', 'tether', 'bash')) and n > 400:
        print(f'{comm[pid]:16s} {pid:>7s} syscalls per round trip {n/502:6.1f}, sleeps {sw[pid]/502:5.2f}')
"
