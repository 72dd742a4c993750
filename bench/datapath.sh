#!/usr/bin/env bash
# The remote data path, by the CPU it costs: every transfer runs inside a cgroup of its own, so
# beside the wall time we get the CPU time of every process on the path (CLI, daemons, bridge,
# session host, the command, ssh and sshd), on both "computers" of a loopback sshd. On a
# loopback benchmark both ends share the same cores, so the throughput ratio against ssh can
# be no better than the ratio of CPU per byte; this script measures that bound (issue 20):
#   out:  tether invoke -s S 'head -c N /dev/zero' | cat    vs  ssh h 'head -c N …' | cat
#   in:   head -c N /dev/zero | tether invoke -s S 'cat >/dev/null'   vs  … | ssh h 'cat …'
#   infile: tether invoke -s S 'cat >/dev/null' <FILE          vs  ssh h 'cat …' <FILE
#   copy: tether copy FILE S:DIR                              vs  scp FILE h:DIR
# Usage: bench/datapath.sh [MiB] (default 512)   Environment: BENCH_DP_RUNS (default 3),
#   BENCH_CIPHER (default aes128-gcm@openssh.com, for every tool), BENCH_DP_AGAINST (another
#   tether binary, say an earlier build: it takes the peer's place, with homes of its own, so
#   two builds are compared interleaved), BENCH_DP_KINDS (a subset of "out in infile copy";
#   default "out in copy"). Needs
#   root for the cgroup (v2, or v1 cpuacct); without one it reports wall time only.
set -euo pipefail
mib=${1:-512}
n=$((mib * 1024 * 1024))
runs=${BENCH_DP_RUNS:-3}
cipher=${BENCH_CIPHER:-aes128-gcm@openssh.com}
for p in ssh scp ssh-keygen python3; do
  command -v "$p" >/dev/null || { echo "$p is missing (apt-get install openssh-client python3)" >&2; exit 1; }
done
source "$(dirname "$0")/common.sh"   # builds, sets T and a fresh TETHER_HOME
T=${CARGO_TARGET_DIR:-$PWD/target}/release/tether
# shellcheck source=.ci/sshd.sh
source .ci/sshd.sh

# A cgroup holding this script and so everything it starts (daemons too): its CPU counter
# is read before and after each transfer, while nothing else of ours runs.
CG= CGV=
for base in /sys/fs/cgroup /sys/fs/cgroup/unified; do
  if [ -f "$base/cgroup.controllers" ] && mkdir "$base/tether-dp.$$" 2>/dev/null; then
    CG=$base/tether-dp.$$ CGV=2; break
  fi
done
if [ -z "$CG" ] && mkdir /sys/fs/cgroup/cpuacct/tether-dp.$$ 2>/dev/null; then
  CG=/sys/fs/cgroup/cpuacct/tether-dp.$$ CGV=1
fi
if [ -n "$CG" ]; then
  case $CGV in 2) echo $BASHPID >"$CG/cgroup.procs" ;; 1) echo $BASHPID >"$CG/tasks" ;; esac
fi
cpu_ms() {   # CPU time of the cgroup so far, in ms
  case $CGV in
    2) awk '$1 == "usage_usec" { printf "%d\n", $2 / 1000 }' "$CG/cpu.stat" ;;
    1) awk '{ printf "%d\n", $1 / 1000000 }' "$CG/cpuacct.usage" ;;
    *) echo 0 ;;
  esac
}

D=$(mktemp -d /tmp/tether-bench-dp.XXXXXX)
export TETHER_REMOTE_HOME=$D/remote-home TETHER_REMOTE_EXE=$T TETHER_SSH_CONFIG=$D/sshd/ssh_config
mkdir -p "$TETHER_REMOTE_HOME" "$D/dst"
CFG=$TETHER_SSH_CONFIG
O=${BENCH_DP_AGAINST:-}
oenv="TETHER_HOME=$D/other-home TETHER_REMOTE_HOME=$D/other-remote-home TETHER_REMOTE_EXE=$O"
cleanup() {
  set +e
  "$T" remove --all >/dev/null 2>&1
  "$T" daemon stop >/dev/null 2>&1
  TETHER_HOME=$TETHER_REMOTE_HOME "$T" daemon stop >/dev/null 2>&1
  if [ -n "$O" ]; then
    env $oenv "$O" remove --all >/dev/null 2>&1
    env $oenv "$O" daemon stop >/dev/null 2>&1
    TETHER_HOME=$D/other-remote-home "$O" daemon stop >/dev/null 2>&1
  fi
  sshd_stop
  rm -rf "$D" "$TETHER_HOME"
  if [ -n "$CG" ]; then   # leave the cgroup, then remove it (empty by now)
    case $CGV in 2) echo $BASHPID >"${CG%/*}/cgroup.procs" ;; 1) echo $BASHPID >"${CG%/*}/tasks" ;; esac
    rmdir "$CG" 2>/dev/null
  fi
}
trap cleanup EXIT
trap 'exit 130' INT

SSHD_EXTRA_CONFIG="Subsystem sftp internal-sftp" sshd_start "$D/sshd"   # scp speaks sftp
echo "  Ciphers $cipher" >>"$CFG"
"$T" new tether-ci --name S >/dev/null
"$T" invoke -s S true
if [ -n "$O" ]; then
  mkdir -p "$D/other-home" "$D/other-remote-home"
  env $oenv "$O" new tether-ci --name S >/dev/null
  env $oenv "$O" invoke -s S true
fi
head -c "$n" /dev/urandom >"$D/big"

# One transfer: "wall_ms cpu_ms".
one() {
  local c0 c1 t0 t1
  rm -f "$D/dst/big"
  sync
  c0=$(cpu_ms); t0=$(date +%s%N)
  sh -c "$1" >/dev/null
  t1=$(date +%s%N); c1=$(cpu_ms)
  echo "$(((t1 - t0) / 1000000)) $((c1 - c0))"
}
R=$D/results   # lines: kind side wall_ms cpu_ms
kinds=${BENCH_DP_KINDS:-out in copy}
for _ in $(seq "$runs"); do   # interleaved, so both see the same machine
  for k in $kinds; do
    case $k in
      out) t="$T invoke -s S 'head -c $n /dev/zero' | cat"
           p="ssh -F $CFG tether-ci 'head -c $n /dev/zero' | cat" ;;
      in) t="head -c $n /dev/zero | $T invoke -s S 'cat >/dev/null'"
          p="head -c $n /dev/zero | ssh -F $CFG tether-ci 'cat >/dev/null'" ;;
      infile) t="$T invoke -s S 'cat >/dev/null' <$D/big"
              p="ssh -F $CFG tether-ci 'cat >/dev/null' <$D/big" ;;
      copy) t="$T copy $D/big S:$D/dst/"
            p="scp -q -F $CFG $D/big tether-ci:$D/dst/" ;;
    esac
    if [ -n "$O" ]; then   # the other build in the peer's place
      p=${t//"$T "/"env $oenv $O "}
    fi
    echo "$k tether $(one "$t")" >>"$R"
    echo "$k peer $(one "$p")" >>"$R"
  done
done

echo "machine: $(nproc) cores, $(uname -srm); $(ssh -V 2>&1 | cut -d, -f1); cipher $cipher"
echo "$mib MiB per transfer, $runs runs each, interleaved; medians; cgroup: ${CGV:-none}"
[ -n "$O" ] && echo "peer: $O (another tether build)"
python3 - "$mib" "$R" "$O" <<'PY'
import collections, statistics, sys
mib, path = int(sys.argv[1]), sys.argv[2]
w, c = collections.defaultdict(list), collections.defaultdict(list)
for line in open(path):
    kind, side, wall, cpu = line.split()
    w[kind, side].append(int(wall))
    c[kind, side].append(int(cpu))
med = statistics.median
peer = {"out": "ssh", "in": "ssh", "infile": "ssh", "copy": "scp"}
if sys.argv[3]:
    peer = {k: "other build" for k in peer}
print("| what | tether MB/s | peer MB/s | throughput tether/peer | tether CPU s/GiB | peer CPU s/GiB | CPU tether/peer |")
print("|---|---:|---:|---:|---:|---:|---:|")
for k in [k for k in ("out", "in", "infile", "copy") if (k, "tether") in w]:
    wt, wp = med(w[k, "tether"]), med(w[k, "peer"])
    ct, cp = med(c[k, "tether"]), med(c[k, "peer"])
    mb = mib * 1048576 / 1e6
    per_gib = 1024 / mib / 1000
    cpu = f"{ct * per_gib:.2f} | {cp * per_gib:.2f} | {ct / cp:.2f}" if cp else "n/a | n/a | n/a"
    print(f"| {k} (vs {peer[k]}) | {mb / wt * 1000:.0f} | {mb / wp * 1000:.0f} | {wp / wt:.2f} | {cpu} |")
PY
