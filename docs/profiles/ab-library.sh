#!/usr/bin/env bash
# A/B of the library round trip (examples/quickstart: 500 × Client::run("true") on an open
# session), interleaved: each round runs every variant once, each with its own TETHER_HOME and
# daemon. Prints per variant the median of the example's round-trip figure and the CPU time per
# round trip of the client (perf stat task-clock), the session host and its shell
# (/proc/PID/schedstat, sampled until they exit; includes their start-up).
# Usage: docs/profiles/ab-library.sh ROUNDS QUICKSTART NAME=TETHER_BINARY...
# e.g.   docs/profiles/ab-library.sh 20 target/release/examples/quickstart old=/tmp/tether.old new=target/release/tether
set -euo pipefail
rounds=$1 qs=$(realpath "$2"); shift 2
names=() exes=() homes=()
for v in "$@"; do names+=("${v%%=*}"); exes+=("$(realpath "${v#*=}")"); homes+=("$(mktemp -d /tmp/tether-ab.XXXXXX)"); done
out=$(mktemp); trap 'for i in "${!names[@]}"; do TETHER_HOME=${homes[$i]} ${exes[$i]} daemon stop >/dev/null 2>&1 || true; rm -rf "${homes[$i]}"; done; rm -f "$out" "$out".*' EXIT
for i in "${!names[@]}"; do TETHER_HOME=${homes[$i]} ${exes[$i]} daemon start --quiet; done
for _ in $(seq "$rounds"); do
  for i in "${!names[@]}"; do
    d=$(cat "${homes[$i]}/daemon.pid")
    TETHER_HOME=${homes[$i]} TETHER_EXE=${exes[$i]} perf stat -x, -e task-clock -o "$out.ts" "$qs" > "$out.qs" &
    q=$! h= s=
    while [ -z "$h" ] && kill -0 $q 2>/dev/null; do h=$(pgrep -P "$d" -n || true); done
    while [ -z "$s" ] && [ -d "/proc/$h" ]; do s=$(pgrep -P "$h" -n || true); done
    hv=0 sv=0
    while [ -d "/proc/$h" ]; do
      { read -r x _ < "/proc/$h/schedstat"; } 2>/dev/null && hv=$x || true
      { read -r x _ < "/proc/$s/schedstat"; } 2>/dev/null && sv=$x || true
      sleep 0.003
    done
    wait $q
    echo "${names[$i]} $(sed -n 's/round trip: \([0-9.]*\).*/\1/p' "$out.qs") $(awk -F, '/task-clock/{print $1}' "$out.ts") $hv $sv"
  done
done > "$out"
python3 - "$out" <<'P'
import collections, statistics as st, sys
d = collections.defaultdict(lambda: ([], [], [], []))
for l in open(sys.argv[1]):
    n, w, c, h, s = l.split(); v = d[n]
    v[0].append(float(w)); v[1].append(float(c) * 1000 / 502); v[2].append(int(h) / 1000 / 502); v[3].append(int(s) / 1000 / 502)
for n, (w, c, h, s) in d.items():
    print(f'{n:8s} round trip median {st.median(w):6.1f} us (min {min(w):6.1f}) | CPU per round trip: '
          f'client {st.median(c):5.1f}, host {st.median(h):5.1f}, shell {st.median(s):5.1f} us  (n={len(w)})')
P
