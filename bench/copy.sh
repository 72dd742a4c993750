#!/usr/bin/env bash
# tether copy beside scp (and rsync -e ssh, when installed), measured in one run against a
# private sshd on 127.0.0.1 with the same cipher for every tool (issue 20):
#   a. one file of BENCH_COPY_BYTES (default 1 GiB), to the other computer
#   b. a tree of BENCH_COPY_FILES small files (default 20,000 of 1 KiB), to the other computer
# BENCH_COPY_DIR (default /tmp) holds the data and destinations; BENCH_COPY_RUNS rounds;
# BENCH_COPY_AGAINST another tether binary, compared in the same rounds.
# tether copies into a warm session (its link is up); scp and rsync pay their ssh handshake.
# Usage: bench/copy.sh   (needs sshd, ssh, scp; run as root, or as the user to log in as)
set -euo pipefail
bytes=${BENCH_COPY_BYTES:-$((1024 * 1024 * 1024))}
files=${BENCH_COPY_FILES:-20000}
cipher=${BENCH_CIPHER:-aes128-gcm@openssh.com}

for p in ssh scp ssh-keygen python3; do
  command -v "$p" >/dev/null || { echo "$p is missing (apt-get install openssh-client python3)" >&2; exit 1; }
done
source "$(dirname "$0")/common.sh"   # builds, sets T and a fresh TETHER_HOME
T=${CARGO_TARGET_DIR:-$PWD/target}/release/tether   # where cargo built it
# shellcheck source=.ci/sshd.sh
source .ci/sshd.sh                   # sshd_start DIR: alias tether-ci in DIR/ssh_config

# BENCH_COPY_DIR: where the data and both destinations live (a tmpfs such as /dev/shm
# separates the protocols from the file system's cost of creating files).
D=$(mktemp -d "${BENCH_COPY_DIR:-/tmp}/tether-bench-copy.XXXXXX")
export TETHER_REMOTE_HOME=$D/remote-home TETHER_REMOTE_EXE=$T TETHER_SSH_CONFIG=$D/sshd/ssh_config
mkdir -p "$TETHER_REMOTE_HOME"
CFG=$TETHER_SSH_CONFIG
cleanup() {
  set +e
  "$T" remove --all >/dev/null 2>&1
  "$T" daemon stop >/dev/null 2>&1
  TETHER_HOME=$TETHER_REMOTE_HOME "$T" daemon stop >/dev/null 2>&1
  if [ -n "${O:-}" ]; then
    old remove --all >/dev/null 2>&1
    old daemon stop >/dev/null 2>&1
    TETHER_HOME=$D/old-remote-home "$O" daemon stop >/dev/null 2>&1
  fi
  sshd_stop
  rm -rf "$D" "$TETHER_HOME"
}
trap cleanup EXIT
trap 'exit 130' INT

SSHD_EXTRA_CONFIG="Subsystem sftp internal-sftp" sshd_start "$D/sshd"   # scp speaks sftp
echo "  Ciphers $cipher" >>"$CFG"

# The data: one big file, and a tree of small ones.
mkdir -p "$D/src/tree" "$D/dst"
head -c "$bytes" /dev/urandom >"$D/src/big"
python3 - "$D/src/tree" "$files" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i // 500}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i}"), "wb") as f:
        f.write(os.urandom(1024))
PY

"$T" new tether-ci --name S --json >/dev/null
"$T" invoke -s S true
# BENCH_COPY_AGAINST: another tether binary (an earlier build), run as one more tool with homes
# of its own on both sides, so two builds are compared in the same rounds.
O=${BENCH_COPY_AGAINST:-}
old() { TETHER_HOME=$D/old-home TETHER_REMOTE_HOME=$D/old-remote-home TETHER_REMOTE_EXE=$O "$O" "$@"; }
if [ -n "$O" ]; then
  mkdir -p "$D/old-home" "$D/old-remote-home"
  old new tether-ci --name S --json >/dev/null
  old invoke -s S true
fi
secs() { python3 -c "import sys; print(f'{(int(sys.argv[2]) - int(sys.argv[1])) / 1e9:.2f}')" "$1" "$2"; }
run() {   # label, command…; prints seconds
  local t0 t1
  rm -rf "$D/dst"; mkdir -p "$D/dst"
  sync
  t0=$(date +%s%N); "${@:2}" >/dev/null; t1=$(date +%s%N)
  echo "$1 $(secs "$t0" "$t1")"
}

echo "machine: $(nproc) cores, $(uname -srm); $(ssh -V 2>&1 | cut -d, -f1); cipher $cipher"
# BENCH_COPY_RUNS rounds (default 1), each tool once per round, the order rotated round by
# round: on ext4 a copy that follows the removal of another's 20,000 files is slowed by the
# inode allocator, so whoever goes first would otherwise win. Each line is one run; the
# "median" lines give each tool's median and its ratio to tether's.
runs=${BENCH_COPY_RUNS:-1}
tools=(tether-copy scp)
command -v rsync >/dev/null && tools+=(rsync)
[ -n "$O" ] && tools+=(tether-old)
declare -A cmd
measure() {   # title, then the three commands as strings
  local title=$1 r i k n tool
  cmd[tether-copy]=$2 cmd[scp]=$3 cmd[rsync]=$4 cmd[tether-old]=${2//\"\$T\"/old}
  echo "$title"
  local -A all=()
  n=${#tools[@]}
  for ((r = 0; r < runs; r++)); do
    for ((i = 0; i < n; i++)); do
      tool=${tools[$(((i + r) % n))]}
      k=$(eval "run $tool ${cmd[$tool]}" | cut -d' ' -f2)
      echo "$tool $k"
      all[$tool]="${all[$tool]:-} $k"
    done
  done
  if ((runs > 1)); then
    python3 - "${all[tether-copy]}" "${all[scp]}" "${all[rsync]:-}" "${all[tether-old]:-}" <<'PY'
import statistics, sys
names = ["tether-copy", "scp", "rsync", "tether-old"]
med = {n: statistics.median(map(float, v.split())) for n, v in zip(names, sys.argv[1:]) if v.strip()}
for n, m in med.items():
    print(f"median {n} {m:.2f} s ({m / med['tether-copy']:.2f}x tether's time)")
PY
  fi
}
measure "a. one file of $bytes bytes" \
  '"$T" copy "$D/src/big" "S:$D/dst/"' \
  'scp -q -F "$CFG" "$D/src/big" "tether-ci:$D/dst/"' \
  'rsync -a -e "ssh -F $CFG" "$D/src/big" "tether-ci:$D/dst/"'
measure "b. a tree of $files files of 1 KiB" \
  '"$T" copy -r "$D/src/tree" "S:$D/dst/"' \
  'scp -q -r -F "$CFG" "$D/src/tree" "tether-ci:$D/dst/"' \
  'rsync -a -e "ssh -F $CFG" "$D/src/tree" "tether-ci:$D/dst/"'
