# shellcheck shell=bash
# Command strings in single quotes are meant: time_loop evals them later.
# shellcheck disable=SC2016,SC2034,SC2153
# The measurements of bench/run (sourced by it; uses its T, CFG, D, RH, sizes and helpers).
# Each one records medians under a key: µs for times, B/s for `tp_*` rates, kB for `mem_*`.
# Order matters: the early ones share the sessions `bench` (local) and `R` (on h1); session
# creation and memory then remove everything; the fan-out, the heaviest, comes last.

# Summed PSS (kB) of the given processes and all their descendants (each counted once).
pss_trees() {
  python3 - "$@" <<'PY'
import os, sys
def pss(p):
    try:
        for line in open(f"/proc/{p}/smaps_rollup"):
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
def kids(p):
    out = []
    try:
        for t in os.listdir(f"/proc/{p}/task"):
            out += [int(x) for x in open(f"/proc/{p}/task/{t}/children").read().split()]
    except OSError:
        pass
    return out
seen, todo, total = set(), [int(a) for a in sys.argv[1:]], 0
while todo:
    p = todo.pop()
    if p not in seen:
        seen.add(p)
        total += pss(p)
        todo += kids(p)
print(total)
PY
}
host_pids() { "$T" get --json | python3 -c 'import json, sys; print(" ".join(str(s["host_pid"]) for s in json.load(sys.stdin)))'; }
daemon_stop() { "$T" daemon stop >/dev/null 2>&1 || true; }
# A fresh local daemon with no link; the far side's daemon stays up, as on a real computer.
# $1: seconds to let the old links' ssh, sshd and bridge processes wind down.
daemon_restart() { daemon_stop; sleep "${1:-0}"; "$T" daemon start --quiet; }

measure_invoke_local() {
  say "invoke round trip, local (library, CLI, bash -c true)…"
  "$T" daemon start --quiet
  "$T" new --name bench >/dev/null
  "$T" invoke -s bench true
  local lib
  lib=$(TETHER_EXE=$T "$QS" | awk '/^round trip:/ {print $3}')
  record lib_invoke "$(printf '%.0f' "$lib")" 500
  time_cmd cli_invoke "$INV_RUNS" 20 "$T invoke -s bench true"
  time_cmd bash_true "$INV_RUNS" 20 "bash -c true"
}

measure_invoke_remote() {
  say "invoke round trip over loopback ssh (tether, ControlMaster, fresh ssh)…"
  "$T" new h1 --name R >/dev/null
  "$T" invoke -s R true
  open_masters 1
  time_cmd rem_invoke "$REM_RUNS" 5 "$T invoke -s R true"
  time_cmd ssh_cm "$REM_RUNS" 5 "ssh -F $CFG -o ControlMaster=no -o ControlPath=$D/cm/%n h1 true"
  time_cmd ssh_fresh "$FRESH_RUNS" 1 "ssh -F $CFG h1 true"
  close_masters
}

measure_throughput() {
  say "output throughput, $TP_BYTES bytes, local and remote…"
  local b=$TP_BYTES k
  time_loop tp_local "$TP_RUNS" "" '"$T" invoke -s bench "head -c $b /dev/zero" | cat >/dev/null'
  time_loop tp_pipe "$TP_RUNS" "" 'head -c "$b" /dev/zero | cat >/dev/null'
  time_loop tp_remote "$TP_RUNS" "" '"$T" invoke -s R "head -c $b /dev/zero" >/dev/null'
  time_loop tp_ssh "$TP_RUNS" "" 'ssh -F "$CFG" h1 "head -c $b /dev/zero" >/dev/null'
  # shellcheck disable=SC2004
  for k in tp_local tp_pipe tp_remote tp_ssh; do R[$k]=$((b * 1000000 / R[$k])); done
}

measure_reconnect() {
  say "reconnection after the transport is killed ($RECON_ROUNDS rounds)…"
  local out
  out=$(python3 - "$T" "$RECON_ROUNDS" <<'PY'
import json, os, signal, statistics, subprocess, sys, time
T, rounds = sys.argv[1], int(sys.argv[2])
n, kill_at = 200, 50
script = f"i=1; while [ $i -le {n} ]; do echo line $i; i=$((i+1)); sleep 0.01; done"
gaps, bad = [], 0
for r in range(rounds):
    p = subprocess.Popen([T, "invoke", "-s", "R", script], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)   # its "reconnecting…" notices
    lines, killed_at, first_after = [], None, None
    for line in p.stdout:
        now = time.monotonic()
        lines.append(line)
        if killed_at is not None and first_after is None:
            first_after = now
        if len(lines) == kill_at and killed_at is None:
            st = json.loads(subprocess.check_output([T, "daemon", "status", "--json"]))
            pid = [l["pid"] for l in st["links"] if l["computer"] == "h1"][0]
            os.kill(pid, signal.SIGKILL)   # the path is back at once: the kill is its return
            killed_at = time.monotonic()
    p.wait()
    bad += lines != [f"line {i}\n" for i in range(1, n + 1)] or p.returncode != 0
    gaps.append((first_after - killed_at) * 1e6)
print(int(statistics.median(gaps)), bad)
PY
)
  record recon "${out% *}" "$RECON_ROUNDS"
  R["recon_bad"]=${out#* }
}

measure_new() {
  say "session creation, local and remote, cold and warm…"
  "$T" remove --all >/dev/null
  time_loop new_local_cold "$NEW_RUNS" '"$T" remove --all >/dev/null 2>&1 || true; daemon_stop' '"$T" new >/dev/null'
  time_loop new_local_warm "$NEW_RUNS" '"$T" remove --all >/dev/null' '"$T" new >/dev/null'
  time_loop new_remote_cold "$NEW_REMOTE_RUNS" '"$T" remove --all >/dev/null 2>&1 || true; daemon_stop' '"$T" new h1 >/dev/null'
  time_loop new_remote_warm "$NEW_RUNS" '"$T" remove --all >/dev/null' '"$T" new h1 >/dev/null'
  "$T" remove --all >/dev/null
  if command -v tmux >/dev/null; then
    local tm=(env -u TMUX tmux -S "$TMUX_SOCK" -f /dev/null)
    time_loop tmux_new_cold "$NEW_RUNS" 'tmux_stop' \
      '"${tm[@]}" new-session -d "bash --noprofile --norc"'
    time_loop tmux_new_warm "$NEW_RUNS" '' '"${tm[@]}" new-session -d "bash --noprofile --norc"'
    tmux_stop
  fi
}
# Stops the private tmux server and waits (up to 5 s) until it has gone: a client that reaches a
# server still on its way out fails with "server exited unexpectedly".
tmux_stop() {
  local pid _
  pid=$(env -u TMUX tmux -S "$TMUX_SOCK" display -p '#{pid}' 2>/dev/null) || return 0
  env -u TMUX tmux -S "$TMUX_SOCK" kill-server 2>/dev/null || true
  for _ in $(seq 250); do kill -0 "$pid" 2>/dev/null || break; sleep 0.02; done
  rm -f "$TMUX_SOCK"
}

measure_memory() {
  say "memory: idle sessions ($MEM_COUNTS), sshd per connection, tmux per pane…"
  "$T" remove --all >/dev/null
  daemon_restart
  local have=0 n deadline=$((SECONDS + MEM_DEADLINE_S)) dpid
  for n in $MEM_COUNTS; do
    while [ "$have" -lt "$n" ] && [ "$SECONDS" -lt "$deadline" ]; do
      "$T" new >/dev/null
      have=$((have + 1))
    done
    [ "$have" -ge "$n" ] || say "stopped at $have of $n sessions after ${MEM_DEADLINE_S}s"
    sleep 0.5
    # shellcheck disable=SC2046
    record "mem_session_$n" $(($(pss_trees $(host_pids)) / have)) "$have"
    dpid=$(cat "$TETHER_HOME/daemon.pid")
    record "mem_daemon_$n" "$(awk '/^VmRSS:/ {print $2}' "/proc/$dpid/status")" "$have"
  done
  say "removing $have sessions…"
  "$T" remove --all >/dev/null
  daemon_stop

  # sshd: the per-connection processes (children of the listener) of one idle `ssh -N`.
  local before after new i p
  before=$(children_of "$SSHD_PID")
  ssh -F "$CFG" -N h1 </dev/null &
  SSH_N_PID=$!
  new=
  for i in $(seq 100); do   # up to 10 s for the login to complete
    after=$(children_of "$SSHD_PID")
    new=$(comm -13 <(echo "$before") <(echo "$after") | paste -sd' ')
    if [ -n "$new" ]; then
      for p in $new; do
        # Logged in: the title loses its bracket ("sshd: USER", "sshd: USER@notty").
        if grep -Eq '^sshd: [^[ ]+ *$|@notty' <(pstree_cmdlines "$p"); then break 2; fi
      done
    fi
    [ "$i" -lt 100 ] && sleep 0.1
  done
  sleep 0.3
  # shellcheck disable=SC2086
  [ -n "$new" ] && record mem_sshd_conn "$(pss_trees $new)" 1
  kill "$SSH_N_PID" 2>/dev/null || true
  wait "$SSH_N_PID" 2>/dev/null || true
  SSH_N_PID=

  # tmux: the server's growth per pane, plus each pane's shell.
  if command -v tmux >/dev/null; then
    local tm=(env -u TMUX tmux -S "$TMUX_SOCK" -f /dev/null) s1 sk shells
    "${tm[@]}" new-session -d "bash --noprofile --norc"
    sleep 0.3
    s1=$(pss_of "$("${tm[@]}" display -p '#{pid}')")
    for ((i = 1; i < TMUX_PANES; i++)); do "${tm[@]}" new-window -d "bash --noprofile --norc"; done
    sleep 0.5
    sk=$(pss_of "$("${tm[@]}" display -p '#{pid}')")
    # shellcheck disable=SC2046
    shells=$(pss_trees $("${tm[@]}" list-panes -a -F '#{pane_pid}'))
    record mem_tmux_pane $(((sk - s1) / (TMUX_PANES - 1) + shells / TMUX_PANES)) "$TMUX_PANES"
    tmux_stop
  fi
}
pss_of() { awk '/^Pss:/ {print $2; exit}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
children_of() { cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | grep . | sort || true; }
pstree_cmdlines() {   # the command lines of a process and its descendants, one a line
  local p
  tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null && echo
  # shellcheck disable=SC2013
  for p in $(cat /proc/"$1"/task/*/children 2>/dev/null); do pstree_cmdlines "$p"; done
}

# A fan-out where some target failed is still timed (and the failure reported), not fatal.
FAILURES=()
failed() { FAILURES+=("$1"); say "FAILED: $1"; }

measure_fanout() {
  local n list cmd k runs
  # shellcheck disable=SC2016
  local tether_fan='"$T" invoke --computer "$list" --throttle-limit 32 "$cmd" >/dev/null || failed "tether, $cmd, $n"'
  "$T" remove --all >/dev/null 2>&1 || true
  for n in $FANOUT; do
    list=$(hosts "$n" | paste -sd,)
    runs=1; [ "$n" -lt 200 ] && runs=3
    for cmd in true 'uname -a'; do
      k=${cmd%% *}
      # A cold fan-out costs the logins, whatever the command: at 500 and more, only `true` is
      # measured cold (10 minutes on 2 cores); `uname -a` then runs on the warm links.
      if [ "$k" = true ] || [ "$n" -lt 500 ]; then
        say "fan-out of '$cmd' to $n aliases: tether cold and warm, xargs -P 32 ssh…"
        daemon_restart 1
        time_loop "fan_${k}_${n}_cold" 1 '' "$tether_fan"
      else
        say "fan-out of '$cmd' to $n aliases: tether warm…"
      fi
      time_loop "fan_${k}_${n}_warm" "$runs" '' "$tether_fan"
      if [ "$k" = true ] || [ "$n" -lt 500 ]; then
        time_loop "sshfan_${k}_${n}_cold" 1 '' \
          'hosts "$n" | xargs -P 32 -I{} ssh -F "$CFG" {} "$cmd" >/dev/null || failed "xargs ssh, $cmd, $n"'
      fi
    done
    daemon_stop   # its links go before the masters come (memory)
    say "fan-out to $n aliases over ControlMasters (opening $n masters)…"
    open_masters "$n"
    for cmd in true 'uname -a'; do
      k=${cmd%% *}
      time_loop "sshfan_${k}_${n}_cm" "$runs" '' \
        'hosts "$n" | xargs -P 32 -I{} ssh -F "$CFG" "${MASTER_OPTS[@]}" {} "$cmd" >/dev/null || failed "xargs ssh over ControlMasters, $cmd, $n"'
    done
    close_masters
  done
}

# Every part, or only those named in BENCH_ONLY (e.g. "fanout throughput"), in this order. The
# sessions the early parts make (`bench` here, `R` on h1) are made first when those parts are
# left out.
measure_all() {
  local part
  if [ -n "${BENCH_ONLY:-}" ]; then
    "$T" get --name bench --json 2>/dev/null | grep -q bench || "$T" new --name bench >/dev/null
    "$T" get --name R --json 2>/dev/null | grep -q '"R"' || "$T" new h1 --name R >/dev/null
  fi
  for part in invoke_local invoke_remote throughput reconnect new memory fanout; do
    case " ${BENCH_ONLY:-$part} " in *" $part "*) "measure_$part" ;; esac
  done
}
