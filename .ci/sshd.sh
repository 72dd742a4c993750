#!/usr/bin/env bash
# Starts a private sshd on a free 127.0.0.1 port with throw-away keys, for running the contract
# smoke test against "another computer". Usage: source .ci/sshd.sh; sshd_start DIR
# Sets SSHD_PID and writes DIR/ssh_config with the alias `tether-ci`. sshd_stop ends it (by pid).
# SSHD_EXTRA_CONFIG (optional): more sshd_config lines, e.g. `MaxStartups 1000` (bench/run).
sshd_start() {
  local d=$1 sshd
  sshd=$(command -v sshd || echo /usr/sbin/sshd)
  [ -x "$sshd" ] || { echo "sshd not found: apt-get install openssh-server" >&2; return 1; }
  mkdir -p "$d" /run/sshd
  ssh-keygen -q -t ed25519 -N '' -f "$d/host_key"
  ssh-keygen -q -t ed25519 -N '' -f "$d/client_key"
  cp "$d/client_key.pub" "$d/authorized_keys"
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat >"$d/sshd_config" <<CFG
Port $port
ListenAddress 127.0.0.1
HostKey $d/host_key
AuthorizedKeysFile $d/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
LogLevel ERROR
CFG
  if [ -n "${SSHD_EXTRA_CONFIG:-}" ]; then printf '%s\n' "$SSHD_EXTRA_CONFIG" >>"$d/sshd_config"; fi
  cat >"$d/ssh_config" <<CFG
Host tether-ci
  HostName 127.0.0.1
  Port $port
  User $(id -un)
  IdentityFile $d/client_key
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
  BatchMode yes
CFG
  "$sshd" -D -f "$d/sshd_config" -E "$d/sshd.log" &
  SSHD_PID=$!
  local _
  for _ in $(seq 1 100); do
    if ssh -F "$d/ssh_config" tether-ci true 2>/dev/null; then return 0; fi
    kill -0 "$SSHD_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "sshd did not come up: $(cat "$d/sshd.log" 2>/dev/null)" >&2
  return 1
}

sshd_stop() {
  [ -n "${SSHD_PID:-}" ] && kill "$SSHD_PID" 2>/dev/null && wait "$SSHD_PID" 2>/dev/null
  return 0
}
