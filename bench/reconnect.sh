#!/usr/bin/env bash
# Reconnection time after the ssh transport under a streaming remote command is killed: from the
# kill to the first output line arriving afterwards (the client notices, starts a new ssh
# connection, resumes the stream from the last byte it had). Also checks every line arrived once.
# Usage: bench/reconnect.sh [ROUNDS]   (needs sshd and ssh; root or the user who logs in)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-10}
cargo build --release --quiet
T=$PWD/target/release/tether
source .ci/sshd.sh
D=$(mktemp -d /tmp/tether-reconnect.XXXXXX)
cleanup() {
  TETHER_HOME=$D/client "$T" daemon stop >/dev/null 2>&1 || true
  TETHER_HOME=$D/remote "$T" daemon stop >/dev/null 2>&1 || true
  sshd_stop; rm -rf "$D"
}
trap cleanup EXIT
sshd_start "$D/sshd"
export TETHER_HOME=$D/client TETHER_REMOTE_HOME=$D/remote TETHER_REMOTE_EXE=$T
export TETHER_SSH_CONFIG=$D/sshd/ssh_config
"$T" new tether-ci --name r >/dev/null
python3 - "$T" "$rounds" <<'PY'
import json, os, signal, statistics, subprocess, sys, time
T, rounds = sys.argv[1], int(sys.argv[2])
n = 600
script = f"i=1; while [ $i -le {n} ]; do echo line $i; i=$((i+1)); sleep 0.01; done"
gaps = []
for r in range(rounds):
    p = subprocess.Popen([T, "invoke", "-s", "r", script], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    lines, killed_at, first_after = [], None, None
    for line in p.stdout:
        now = time.monotonic()
        lines.append(line)
        if killed_at is not None and first_after is None:
            first_after = now
        if len(lines) == 100 and killed_at is None:
            st = json.loads(subprocess.check_output([T, "daemon", "status", "--json"]))
            os.kill(st["links"][0]["pid"], signal.SIGKILL)
            killed_at = time.monotonic()
    p.wait()
    ok = lines == [f"line {i}\n" for i in range(1, n + 1)]
    gaps.append((first_after - killed_at) * 1000)
    print(f"round {r + 1}: output again {gaps[-1]:.0f} ms after the kill; "
          f"{'all lines once' if ok else 'LINES LOST OR REPEATED'}; exit {p.returncode}")
cfg = os.environ["TETHER_SSH_CONFIG"]
logins = []
for _ in range(5):
    t = time.monotonic()
    subprocess.run(["ssh", "-F", cfg, "tether-ci", "true"], check=True)
    logins.append((time.monotonic() - t) * 1000)
med = statistics.median(gaps)
print(f"reconnection: median {med:.0f} ms, max {max(gaps):.0f} ms over {rounds} rounds; "
      f"a fresh 'ssh tether-ci true' in the same run: median {statistics.median(logins):.0f} ms "
      f"(reconnection / login = {med / statistics.median(logins):.2f})")
PY
