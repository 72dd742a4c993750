#!/usr/bin/env bash
# Memory against the size of the data (issue 20: "host, daemon and CLI RSS unchanged from 1 MiB
# to 10 GiB"). For each size, a fresh TETHER_HOME and session moves SIZE bytes through
# `invoke -s` three ways: output into a pipe (the lent, spliced path), output into a file (the
# framed path, acknowledged and kept until written), and input from a pipe. Prints the peak
# RSS (VmHWM, KiB) of the CLI, the session's host and the daemon after each.
#
#   bench/memory.sh [SIZES...]        default: 1M 1G 10G
set -euo pipefail
cd "$(dirname "$0")/.."
T=${TETHER:-$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/tether}
[ -x "$T" ] || { echo "build first: cargo build --release ($T)" >&2; exit 1; }
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1M 1G 10G)
hwm() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
printf '%-6s %-22s %10s %10s %10s %8s\n' size path cli_kib host_kib daemon_kib secs
for size in "${sizes[@]}"; do
  for path in "out|pipe" "out>file" "in|pipe"; do
    home=$(mktemp -d /tmp/tether-mem.XXXXXX)
    export TETHER_HOME=$home
    "$T" new --name m >/dev/null
    host=$("$T" get --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["host_pid"])')
    daemon=$(cat "$home/daemon.pid")
    start=$(date +%s.%N)
    case $path in
      "out|pipe") cli=$( { /usr/bin/time -f %M "$T" invoke -s m "head -c $size /dev/zero" | cat >/dev/null; } 2>&1 ) ;;
      "out>file") cli=$( { /usr/bin/time -f %M "$T" invoke -s m "head -c $size /dev/zero" >/dev/null; } 2>&1 ) ;;
      "in|pipe") cli=$( { head -c "$size" /dev/zero | /usr/bin/time -f %M "$T" invoke -s m 'cat >/dev/null'; } 2>&1 ) ;;
    esac
    secs=$(echo "$(date +%s.%N) - $start" | bc)
    printf '%-6s %-22s %10s %10s %10s %8.2f\n' "$size" "$path" "$cli" "$(hwm "$host")" "$(hwm "$daemon")" "$secs"
    "$T" daemon stop >/dev/null 2>&1 || true
    rm -rf "$home"
  done
done
