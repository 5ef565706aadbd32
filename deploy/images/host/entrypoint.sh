#!/bin/sh
# A machine of its own: its Docker engine, then sshd in the foreground as PID 1.
set -eu
# Without --privileged, /sys and the cgroup hierarchies come in read-only; dockerd writes both.
mount -o remount,rw /sys
mount -o remount,rw /sys/fs/cgroup
# cgroup v1: each hierarchy is a read-only bind mount of the container's own cgroup (v2: none).
for hierarchy in /sys/fs/cgroup/*; do
  if mountpoint -q "$hierarchy"; then mount -o remount,bind,rw "$hierarchy"; fi
done
# Each host its own host key, made once: kept across restarts of the container.
[ -s /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
# The public keys allowed in (never a private key): from the test, through the environment.
if [ -n "${SSH_AUTHORIZED_KEYS:-}" ]; then
  for home in /root /home/deploy; do
    printf '%s\n' "$SSH_AUTHORIZED_KEYS" > "$home/.ssh/authorized_keys"
  done
  chown deploy:deploy /home/deploy/.ssh/authorized_keys
fi
unset SSH_AUTHORIZED_KEYS
start-dockerd || echo "the host's Docker engine did not start" >&2
exec /usr/sbin/sshd -D -e
