#!/usr/bin/env bash
# Links for big fleets (issue 20 point 3), measured on the CLIENT side only, on loopback:
#   1. memory and CPU per warm link at each count N (default 200 1000 2000): N aliases a1..aN
#      of one private sshd, warmed with `tether invoke --computer a1,…,aN true`; then the client
#      daemon's PSS plus that of every process under it (the ssh children of the ssh transport),
#      per link, against the daemon alone before; CPU (utime+stime of the same processes, and
#      of those that ended meanwhile, such as `ssh -G`) to open the links and while they sit
#      idle (keepalives);
#   2. cold fan-out of `true` to FLEET_COLD aliases (default 500), throttle 32, beside
#      `xargs -P 32 ssh` in the same run (and beside xargs with the classical key exchange a
#      native client negotiates with this OpenSSH, so the kex's share is visible).
# Far-side costs (sshd and a bridge per link) are not counted; total memory is watched and a
# count whose estimate does not fit MemAvailable is skipped, saying so.
# Usage: bench/fleet.sh [COUNT...]   (run as root, or as the user who logs in; needs sshd, ssh)
#   `bench/fleet.sh -` measures only the cold fan-out.
# Environment: FLEET_TRANSPORTS (default "ssh"; "ssh native" measures both), FLEET_COLD (500; 0
#   skips the fan-out), FLEET_WARM_THROTTLE (64), FLEET_IDLE_S (30: the idle CPU window),
#   FLEET_OUT (where the results table goes; default a temp file, printed at the end).
set -euo pipefail
counts=${*:-200 1000 2000}
[ "$counts" = - ] && counts=
transports=${FLEET_TRANSPORTS:-ssh}
cold=${FLEET_COLD:-500}
warm_throttle=${FLEET_WARM_THROTTLE:-64}
idle_s=${FLEET_IDLE_S:-30}
for p in ssh ssh-keygen python3; do
  command -v "$p" >/dev/null || { echo "$p is missing (apt-get install openssh-client python3)" >&2; exit 1; }
done
max=$cold
for n in $counts; do [ "$n" -gt "$max" ] && max=$n; done
# Every link holds descriptors in the daemon (and the far daemon); the daemons inherit this.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true

# shellcheck source=bench/common.sh
source "$(dirname "$0")/common.sh"   # builds; sets T and a fresh TETHER_HOME (removed on exit)
# shellcheck source=.ci/sshd.sh
source .ci/sshd.sh
D=$(mktemp -d /tmp/tether-fleet.XXXXXX)
RH=$D/remote-home
CFG=$D/ssh_config
OUT=${FLEET_OUT:-$D/fleet.md}
started_s=$SECONDS
say() { echo "[fleet $((SECONDS - started_s))s] $*" >&2; }

cleanup() {
  set +e
  "$T" daemon stop >/dev/null 2>&1
  TETHER_HOME=$RH "$T" remove --all >/dev/null 2>&1
  TETHER_HOME=$RH "$T" daemon stop >/dev/null 2>&1
  sshd_stop
  [ -z "${FLEET_OUT:-}" ] && [ -f "$OUT" ] && cp "$OUT" /tmp/tether-fleet-last.md
  rm -rf "$D" "$TETHER_HOME"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$D/login-home" "$RH"
say "private sshd, $max aliases…"
# One sshd plays every computer: let it take every login at once.
SSHD_EXTRA_CONFIG="MaxStartups $((max + 100))
MaxSessions 10
SetEnv HOME=$D/login-home" sshd_start "$D/sshd"
# One block per computer, as a fleet's config has, and the shared settings under `Host *`. (One
# `Host` line naming all 2,000 aliases instead costs every ssh process ~11 MB of heap with
# OpenSSH 9.2: that measures the config, not the link.)
{
  for ((i = 1; i <= max; i++)); do printf 'Host a%d\n  HostName 127.0.0.1\n' "$i"; done
  echo "Host *"
  grep -v -e '^Host ' -e 'HostName' "$D/sshd/ssh_config"
} >"$CFG"
export TETHER_SSH_CONFIG=$CFG TETHER_REMOTE_HOME=$RH TETHER_REMOTE_EXE=$T
ssh -F "$CFG" a1 true

hosts() { seq -f 'a%g' 1 "$1"; }
list() { hosts "$1" | paste -sd,; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
daemon_pid() { "$T" daemon status --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["pid"])'; }
links() { "$T" daemon status --json | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["links"]))'; }
mem_avail_kb() { awk '/MemAvailable/ {print $2}' /proc/meminfo; }
tflag() { [ "$1" = ssh ] || echo "--transport $1"; }

# PSS and RSS (kB), CPU ticks, and the count of the given process and all its descendants.
tree() {
  python3 - "$1" <<'PY'
import os, sys
def field(p, name):
    try:
        for line in open(f"/proc/{p}/smaps_rollup"):
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
def ticks(p, reaped=False):
    # utime + stime; for the root also cutime + cstime: children that ended (ssh -G) count.
    try:
        f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if reaped else 0)
    except (OSError, IndexError, ValueError):
        return 0
def kids(p):
    out = []
    try:
        for t in os.listdir(f"/proc/{p}/task"):
            out += [int(x) for x in open(f"/proc/{p}/task/{t}/children").read().split()]
    except OSError:
        pass
    return out
seen, todo = set(), [int(sys.argv[1])]
pss = rss = cpu = 0
own = field(int(sys.argv[1]), "Pss")
while todo:
    p = todo.pop()
    if p in seen:
        continue
    seen.add(p)
    pss += field(p, "Pss"); rss += field(p, "Rss"); cpu += ticks(p, p == int(sys.argv[1]))
    todo += kids(p)
print(pss, rss, cpu, len(seen), own)
PY
}

# Waits (bounded) until the far side has let go of the last run's connections.
far_quiet() {
  local i
  for ((i = 0; i < 120; i++)); do
    [ "$(pgrep -c -P "$SSHD_PID" || true)" -eq 0 ] && return 0
    sleep 1
  done
  say "note: $(pgrep -c -P "$SSHD_PID" || true) sshd connections still open"
}

declare -A R=()
per_link_mb=0
measure_links() {
  local tr=$1 n=$2 pid base s e after idle_after need avail got
  if [ "$per_link_mb" -gt 0 ]; then
    need=$((per_link_mb * n * 1024 * 6 / 5 + 2 * 1024 * 1024))
    avail=$(mem_avail_kb)
    if [ "$avail" -lt "$need" ]; then
      say "skipping $n links over $tr: ~$((need / 1024)) MB needed, $((avail / 1024)) MB available"
      R[$tr.$n.skipped]=1
      return 0
    fi
  fi
  say "$tr: warming $n links (throttle $warm_throttle)…"
  "$T" daemon stop >/dev/null 2>&1 || true
  far_quiet
  TETHER_CONNECTION_IDLE=2h "$T" daemon start --quiet
  pid=$(daemon_pid)
  read -r -a base < <(tree "$pid")
  local avail0
  avail0=$(mem_avail_kb)
  s=$(now_ms)
  # shellcheck disable=SC2046
  "$T" $(tflag "$tr") invoke --computer "$(list "$n")" --throttle-limit "$warm_throttle" \
    --hide-computer-name true >/dev/null || say "note: some targets failed"
  e=$(now_ms)
  got=$(links)
  read -r -a after < <(tree "$pid")
  read -r -a far < <(tree "$SSHD_PID")
  sleep "$idle_s"
  read -r -a idle_after < <(tree "$pid")
  R[$tr.$n.links]=$got
  R[$tr.$n.warm_ms]=$((e - s))
  R[$tr.$n.base_pss]=${base[0]}
  R[$tr.$n.pss]=${after[0]}
  R[$tr.$n.rss]=${after[1]}
  R[$tr.$n.procs]=${after[3]}
  R[$tr.$n.cpu_open]=$((after[2] - base[2]))
  R[$tr.$n.cpu_idle]=$((idle_after[2] - after[2]))
  R[$tr.$n.machine_mb]=$(((avail0 - $(mem_avail_kb)) / 1024))
  R[$tr.$n.far_pss]=${far[0]}
  R[$tr.$n.own]=$(((after[4] - base[4]) / (got > 0 ? got : 1)))
  per_link=$(((after[0] - base[0]) / (got > 0 ? got : 1)))
  say "$tr, $n: $got links, client PSS $((after[0] / 1024)) MB ($per_link kB per link), far side (sshd, bridges) $((far[0] / 1024)) MB, ${R[$tr.$n.warm_ms]} ms"
  # Both sides' PSS per link (the far daemon and its spare hosts aside) sizes the next count.
  local m=$(((after[0] + far[0]) / 1024 / (got > 0 ? got : 1) + 1))
  [ "$m" -gt "$per_link_mb" ] && per_link_mb=$m
  "$T" daemon stop >/dev/null 2>&1 || true
}

measure_cold() {
  local tr=$1 s e
  say "$tr: cold fan-out to $cold aliases, throttle 32…"
  "$T" daemon stop >/dev/null 2>&1 || true
  far_quiet
  "$T" daemon start --quiet
  s=$(now_ms)
  # shellcheck disable=SC2046
  "$T" $(tflag "$tr") invoke --computer "$(list "$cold")" --throttle-limit 32 \
    --hide-computer-name true >/dev/null || say "note: some targets failed"
  e=$(now_ms)
  R[$tr.cold]=$((e - s))
  "$T" daemon stop >/dev/null 2>&1 || true
}

measure_xargs() {
  local key=$1 s e
  shift
  say "cold fan-out to $cold aliases: xargs -P 32 ssh $*…"
  far_quiet
  s=$(now_ms)
  hosts "$cold" | xargs -P 32 -I{} ssh -F "$CFG" "$@" {} true || say "note: some ssh failed"
  e=$(now_ms)
  R[$key]=$((e - s))
}

say "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo); load $(cut -d' ' -f1-3 /proc/loadavg); $(ssh -V 2>&1 | cut -d, -f1)"
for tr in $transports; do
  per_link_mb=0
  for n in $counts; do measure_links "$tr" "$n"; done
done
if [ "$cold" -gt 0 ]; then
  measure_xargs xargs
  for tr in $transports; do measure_cold "$tr"; done
  measure_xargs xargs_classic -o KexAlgorithms=curve25519-sha256
fi

{
  echo "Run of $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores, $(uname -r); load after: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  [ -n "$counts" ] && echo "| transport | links | client PSS per link | of which the daemon's own | client RSS, summed | processes | CPU to open, per link | idle CPU per link per minute | warm-up time | far side PSS per link (not counted) |"
  [ -n "$counts" ] && echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for tr in $transports; do
    for n in $counts; do
      if [ -n "${R[$tr.$n.skipped]:-}" ]; then echo "| $tr | $n | skipped: not enough memory | | | | | | | |"; continue; fi
      got=${R[$tr.$n.links]}
      [ "$got" -gt 0 ] || got=1
      echo "| $tr | ${R[$tr.$n.links]} of $n | $(((R[$tr.$n.pss] - R[$tr.$n.base_pss]) / got)) kB | ${R[$tr.$n.own]} kB | $((R[$tr.$n.rss] / 1024)) MB | ${R[$tr.$n.procs]} | $((R[$tr.$n.cpu_open] * 1000 / got / 100)).$(printf %02d $((R[$tr.$n.cpu_open] * 1000 / got % 100))) ms | $((R[$tr.$n.cpu_idle] * 10 * 60 * 1000 / idle_s / got)) µs | $((R[$tr.$n.warm_ms] / 1000)).$(printf %02d $((R[$tr.$n.warm_ms] % 1000 / 10))) s | $((R[$tr.$n.far_pss] / got)) kB |"
    done
  done
  if [ "$cold" -gt 0 ]; then
    echo
    echo "| cold fan-out of \`true\` to $cold aliases, throttle 32 | time | xargs -P 32 ssh / this |"
    echo "|---|---:|---:|"
    echo "| \`xargs -P 32 ssh\` | $((R[xargs] / 1000)).$(printf %02d $((R[xargs] % 1000 / 10))) s | 1.00 |"
    echo "| \`xargs -P 32 ssh -o KexAlgorithms=curve25519-sha256\` | $((R[xargs_classic] / 1000)).$(printf %02d $((R[xargs_classic] % 1000 / 10))) s | $(python3 -c "print(f'{${R[xargs]} / ${R[xargs_classic]}:.2f}')") |"
    for tr in $transports; do
      echo "| tether, $tr transport | $((R[$tr.cold] / 1000)).$(printf %02d $((R[$tr.cold] % 1000 / 10))) s | **$(python3 -c "print(f'{${R[xargs]} / ${R[$tr.cold]}:.2f}')")** |"
    done
  fi
} >"$OUT"
cat "$OUT"
