#!/usr/bin/env bash
# Makes a Docker Engine available: installs Debian's docker.io if missing and
# starts dockerd if nothing answers on /var/run/docker.sock.
#
#   dockerd.sh            ensure it runs; prints "started PID" or "running"
#   dockerd.sh stop PID   stop a dockerd this script started (by its pid)
#
# The daemon is kept out of the host's way: no bridge, no iptables rules, no
# IP forwarding or masquerading changes; containers use --network none (or
# host, for builds that fetch packages). Its log: /tmp/sixbed4-dockerd.log.
# Its containers' namespaces go with them (a shared /run/docker/netns, below).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

if [[ "${1:-}" == stop ]]; then
  pid="${2:?usage: dockerd.sh stop PID}"
  [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]] || exit 0
  kill -TERM "$pid"
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
  log "dockerd $pid still running after 15 s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  exit 0
fi

apt_ensure docker.io

# Tests run in parallel: only one of them may start the daemon; the others wait and find it running.
exec 9>/tmp/sixbed4-dockerd.lock
flock 9
if "$DOCKER" info >/dev/null 2>&1; then echo running; exit 0; fi
[[ $(id -u) -eq 0 ]] || die "dockerd is not running and starting it needs root"

# Docker bind-mounts each container's network namespace under /run/docker/netns. Under systemd, / is a shared mount
# and so is that one; on a machine without systemd (a CI container, a VM booted without it) it is private, and every
# process that starts in a new mount namespace while a container runs (each `ip netns exec` of the lab: routers,
# peers, agents of other test files) keeps its own copy of that bind mount, and with it the container's network
# namespace and veths, after `docker rm` until it exits. Shared, the unmount reaches those copies too (as iproute2
# makes /run/netns shared, and the CNI plugins /var/run/netns).
netns_dir=/run/docker/netns
mkdir -p "$netns_dir"
if [[ "$(findmnt -n -o PROPAGATION --mountpoint "$netns_dir" 2>/dev/null)" != shared* ]]; then
  mountpoint -q "$netns_dir" || mount --bind "$netns_dir" "$netns_dir"
  mount --make-shared "$netns_dir"
fi

LOG=/tmp/sixbed4-dockerd.log
log "starting dockerd (log: $LOG)"
# setsid: its own session, so it survives the caller and holds none of its pipes.
setsid dockerd --host unix:///var/run/docker.sock \
  --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
  --userland-proxy=false >"$LOG" 2>&1 </dev/null 9>&- &
pid=$!
for _ in $(seq 1 300); do
  if "$DOCKER" info >/dev/null 2>&1; then echo "started $pid"; exit 0; fi
  kill -0 "$pid" 2>/dev/null || { tail -n 30 "$LOG" >&2; die "dockerd exited"; }
  sleep 0.1
done
tail -n 30 "$LOG" >&2
kill -TERM "$pid" 2>/dev/null || true
die "dockerd did not answer within 30 s"
