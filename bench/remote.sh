#!/usr/bin/env bash
# Other computers over ssh, beside plain OpenSSH, measured in one run against a private sshd on
# 127.0.0.1 (throw-away keys; an ssh_config with 200 aliases h1..h200 that all reach it):
#   a. warm invoke:  tether invoke -s S true   vs ssh with a warm ControlMaster   vs fresh ssh
#   b. tether new h1, cold (daemon restarted: no warm link) and warm (link up), + tether remove
#   c. fan-out of `true` to 50 and 200 aliases: tether invoke --computer … cold and warm
#      vs xargs -P 200 ssh, cold and with warm ControlMasters (one per alias)
#   d. throughput: tether invoke -s S 'head -c BYTES /dev/zero' vs ssh h1 'head -c …'
# Usage: bench/remote.sh   (needs sshd, ssh, hyperfine; run as root, or as the user to log in as)
# Environment: BENCH_RUNS (a, default 50), BENCH_NEW_RUNS (b, default 10),
#   BENCH_FANOUT_RUNS (c, default 3), BENCH_BYTES (d, default 1 GiB), BENCH_TP_RUNS (d, default 2),
#   BENCH_REAL_HOME=1 (logins keep the user's HOME and dotfiles; default: an empty HOME)
set -euo pipefail
runs=${BENCH_RUNS:-50}
new_runs=${BENCH_NEW_RUNS:-10}
fan_runs=${BENCH_FANOUT_RUNS:-3}
bytes=${BENCH_BYTES:-$((1024 * 1024 * 1024))}
tp_runs=${BENCH_TP_RUNS:-2}
aliases=200

for p in ssh ssh-keygen hyperfine python3; do
  command -v "$p" >/dev/null || { echo "$p is missing (apt-get install openssh-client hyperfine python3)" >&2; exit 1; }
done
SSHD=
for p in /usr/sbin/sshd /usr/bin/sshd; do [ -x "$p" ] && { SSHD=$p; break; }; done
[ -n "$SSHD" ] || { echo "this bench needs sshd: apt-get install openssh-server" >&2; exit 1; }
[ "$(id -u)" = 0 ] || echo "note: not root; sshd runs unprivileged and only lets $(id -un) log in" >&2

source "$(dirname "$0")/common.sh"   # builds, sets T and a fresh TETHER_HOME

D=$(mktemp -d /tmp/tether-bench-remote.XXXXXX)
export TETHER_REMOTE_HOME=$D/remote-home TETHER_REMOTE_EXE=$T TETHER_SSH_CONFIG=$D/ssh_config
mkdir -p "$TETHER_REMOTE_HOME"
CFG=$TETHER_SSH_CONFIG
CM=(-o ControlMaster=auto -o "ControlPath=$D/cm-%n" -o ControlPersist=60)
SSHD_PID=

cleanup() {
  set +e
  "$T" remove --all >/dev/null 2>&1
  "$T" daemon stop >/dev/null 2>&1                                  # closes tether's ssh links
  TETHER_HOME=$TETHER_REMOTE_HOME "$T" daemon stop >/dev/null 2>&1  # the "far side" daemon
  for s in "$D"/cm-*; do                                            # our ControlMasters only
    [ -S "$s" ] && ssh -F "$CFG" -o "ControlPath=$s" -O exit "${s##*/cm-}" >/dev/null 2>&1
  done
  if [ -n "$SSHD_PID" ]; then kill "$SSHD_PID" 2>/dev/null; wait "$SSHD_PID" 2>/dev/null; fi
  rm -rf "$D" "$TETHER_HOME"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- a private sshd -----------------------------------------------------------------------------
for key in host_key client_key; do ssh-keygen -q -t ed25519 -N "" -f "$D/$key"; done
cp "$D/client_key.pub" "$D/authorized_keys"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$D/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $D/host_key
AuthorizedKeysFile $D/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PidFile $D/sshd.pid
LogLevel ERROR
MaxStartups 1000
MaxSessions 1000
EOF
# Logins get an empty HOME, so every ssh command (and tether's bootstrap `sh -c`) measures ssh,
# not the login shell's dotfiles (a ~/.bashrc running `pyenv init` made each login 100s of ms
# here, and 200 at once queued on its lock). BENCH_REAL_HOME=1 keeps the user's own HOME.
if [ -z "${BENCH_REAL_HOME:-}" ]; then mkdir "$D/home"; echo "SetEnv HOME=$D/home" >>"$D/sshd_config"; fi
{
  echo "Host $(seq -f 'h%g' -s ' ' 1 $aliases)"
  printf '  %s\n' "HostName 127.0.0.1" "Port $port" "User $(id -un)" "IdentityFile $D/client_key" \
    "IdentitiesOnly yes" "StrictHostKeyChecking no" "UserKnownHostsFile /dev/null" \
    "BatchMode yes" "LogLevel ERROR"
} >"$CFG"
mkdir -p /run/sshd 2>/dev/null || true   # sshd's privilege-separation directory
"$SSHD" -D -f "$D/sshd_config" -E "$D/sshd.log" &
SSHD_PID=$!
for _ in $(seq 200); do
  kill -0 "$SSHD_PID" 2>/dev/null || { echo "sshd exited: $(cat "$D/sshd.log")" >&2; exit 1; }
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
ssh -F "$CFG" h1 true || { echo "cannot log in to the private sshd: $(cat "$D/sshd.log")" >&2; exit 1; }

echo "machine: $(nproc) cores, $(uname -srm); $(ssh -V 2>&1 | cut -d, -f1); sshd on 127.0.0.1:$port"
R=$D/results
now() { date +%s%N; }
put() { echo "$1 $2" >>"$R"; }   # key, nanoseconds (or bytes per second)
hosts() { seq -f 'h%g' 1 "$1"; }   # one a line
# A fresh local daemon: no warm link. The far side's daemon stays up, as on a real computer.
# $1: seconds to let the old links' ssh, sshd and bridge processes wind down.
restart_daemon() { "$T" daemon stop >/dev/null; sleep "${1:-0}"; "$T" daemon start --quiet; }

# --- a. warm invoke round trip ------------------------------------------------------------------
echo "a. warm invoke round trip…" >&2
"$T" new h1 --name S --json >/dev/null
"$T" invoke -s S true
ssh -F "$CFG" "${CM[@]}" h1 true </dev/null >/dev/null 2>&1   # the master, up before timing
hyperfine -N --warmup 3 --runs "$runs" --export-json "$D/a.json" \
  "$T invoke -s S true" \
  "ssh -F $CFG ${CM[*]} h1 true" \
  "ssh -F $CFG h1 true" >/dev/null 2>&1
python3 - "$D/a.json" >>"$R" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
for k, x in zip(["a_tether", "a_cm", "a_fresh"], r):
    print(k, int(x["mean"] * 1e9))
    print(k + "_sd", int(x["stddev"] * 1e9))
PY

# --- d. throughput (on the same warm session) ---------------------------------------------------
echo "d. throughput…" >&2
best_t=0 best_s=0
for _ in $(seq "$tp_runs"); do
  s=$(now); "$T" invoke -s S "head -c $bytes /dev/zero" >/dev/null; e=$(now)
  r=$((bytes * 1000000000 / (e - s))); [ "$r" -gt "$best_t" ] && best_t=$r
  s=$(now); ssh -F "$CFG" h1 "head -c $bytes /dev/zero" >/dev/null; e=$(now)
  r=$((bytes * 1000000000 / (e - s))); [ "$r" -gt "$best_s" ] && best_s=$r
done
put d_tether "$best_t"; put d_ssh "$best_s"
"$T" remove S

# --- b. tether new h1, cold and warm ------------------------------------------------------------
echo "b. tether new h1, cold and warm…" >&2
cold=0 warm=0 rm=0
for i in $(seq "$new_runs"); do
  restart_daemon
  s=$(now); "$T" new h1 --name "c$i" --json >/dev/null; e=$(now); cold=$((cold + e - s))
  s=$(now); "$T" remove "c$i"; e=$(now); rm=$((rm + e - s))
done
"$T" new h1 --name w0 --json >/dev/null; "$T" remove w0   # the link is up
for i in $(seq "$new_runs"); do
  s=$(now); "$T" new h1 --name "w$i" --json >/dev/null; e=$(now); warm=$((warm + e - s))
  "$T" remove "w$i"
done
put b_cold $((cold / new_runs)); put b_warm $((warm / new_runs)); put b_remove $((rm / new_runs))

# --- c. fan-out ---------------------------------------------------------------------------------
echo "c. fan-out…" >&2
for n in 50 $aliases; do
  list=$(hosts "$n" | paste -sd,)
  tc=0 tw=0 xc=0 xw=0
  for _ in $(seq "$fan_runs"); do
    restart_daemon 1
    s=$(now); "$T" invoke --computer "$list" --throttle-limit 200 true; e=$(now); tc=$((tc + e - s))
    s=$(now); "$T" invoke --computer "$list" --throttle-limit 200 true; e=$(now); tw=$((tw + e - s))
    s=$(now); hosts "$n" | xargs -P 200 -I{} ssh -F "$CFG" {} true; e=$(now); xc=$((xc + e - s))
  done
  links=$("$T" daemon status --json | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["links"]))')
  echo "after the warm fan-out to $n: $links warm links in tether's daemon"
  # One master per alias (ControlPath cm-%n: %C would hash 127.0.0.1:port and let every alias
  # share one master, unlike tether's one link per computer).
  hosts "$n" | xargs -P 200 -I{} ssh -F "$CFG" "${CM[@]}" {} true >/dev/null 2>&1
  for _ in $(seq "$fan_runs"); do
    s=$(now); hosts "$n" | xargs -P 200 -I{} ssh -F "$CFG" "${CM[@]}" {} true; e=$(now); xw=$((xw + e - s))
  done
  put "c${n}_tether_cold" $((tc / fan_runs)); put "c${n}_tether_warm" $((tw / fan_runs))
  put "c${n}_ssh_cold" $((xc / fan_runs)); put "c${n}_ssh_cm" $((xw / fan_runs))
done

# --- the table ----------------------------------------------------------------------------------
python3 - "$R" "$runs" "$new_runs" "$fan_runs" "$bytes" "$tp_runs" <<'PY'
import sys
r = {k: int(v) for k, v in (l.split() for l in open(sys.argv[1]))}
runs, new_runs, fan_runs, nbytes, tp_runs = sys.argv[2:]
ms = lambda k: f"{r[k] / 1e6:.1f} ms"
s = lambda k: f"{r[k] / 1e9:.2f} s"
x = lambda a, b: f"{r[a] / r[b]:.2f}×"
print()
print("peer / tether above 1: tether is faster; for throughput, tether / ssh above 1: tether is faster.")
print()
print(f"| what | tether | peer, same run | peer / tether |")
print(f"|---|---:|---:|---:|")
print(f"| a. warm `invoke -s S true` vs ssh + warm ControlMaster (mean of {runs}) | {ms('a_tether')} ± {r['a_tether_sd']/1e6:.1f} | {ms('a_cm')} ± {r['a_cm_sd']/1e6:.1f} | **{x('a_cm', 'a_tether')}** |")
print(f"| a. warm `invoke -s S true` vs fresh `ssh h1 true` | {ms('a_tether')} | {ms('a_fresh')} ± {r['a_fresh_sd']/1e6:.1f} | {x('a_fresh', 'a_tether')} |")
print(f"| b. `tether new h1`, cold: daemon restarted, no link (mean of {new_runs}) | {ms('b_cold')} | fresh `ssh h1 true` {ms('a_fresh')} | {x('a_fresh', 'b_cold')} |")
print(f"| b. `tether new h1`, warm link (mean of {new_runs}) | {ms('b_warm')} | — | — |")
print(f"| b. `tether remove` of a remote session | {ms('b_remove')} | — | — |")
for n in (50, 200):
    print(f"| c. fan-out `true` to {n} aliases, cold (mean of {fan_runs}) | {s(f'c{n}_tether_cold')} | `xargs -P 200 ssh` {s(f'c{n}_ssh_cold')} | {x(f'c{n}_ssh_cold', f'c{n}_tether_cold')} |")
    print(f"| c. fan-out `true` to {n} aliases, warm | {s(f'c{n}_tether_warm')} | `xargs -P 200 ssh`, warm ControlMasters {s(f'c{n}_ssh_cm')} | {x(f'c{n}_ssh_cm', f'c{n}_tether_warm')} |")
mb = lambda k: f"{r[k] / 1e6:.0f} MB/s"
print(f"| d. throughput `head -c {nbytes}` (best of {tp_runs}) | {mb('d_tether')} | `ssh h1 'head -c …'` {mb('d_ssh')} | tether / ssh **{r['d_tether'] / r['d_ssh']:.2f}** |")
print()
ok = lambda c: "met" if c else "NOT met"
print(f"goal: warm invoke ≥ 3× faster than ControlMaster: {r['a_cm'] / r['a_tether']:.2f}× — {ok(r['a_cm'] >= 3 * r['a_tether'])}")
print(f"goal: warm fan-out to 200 aliases < 0.5 s: {r['c200_tether_warm'] / 1e9:.2f} s — {ok(r['c200_tether_warm'] < 5e8)}")
print(f"goal: throughput ≥ 90% of plain ssh: {100 * r['d_tether'] / r['d_ssh']:.0f}% — {ok(r['d_tether'] >= 0.9 * r['d_ssh'])}")
PY
