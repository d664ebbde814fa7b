#!/usr/bin/env bash
# Start the host's own libvirtd (with virtlogd) on a machine where PID 1 is not systemd, as root: for
# bench/bench_run.py --real and manual trials. The test suite does not need it (it starts a private one).
# Idempotent: returns at once when qemu:///system already answers.
set -euo pipefail
uri=qemu:///system
if virsh -c "$uri" version >/dev/null 2>&1; then exit 0; fi
"$(dirname "$0")/install-deps.sh" --test   # packages, libvirt-qemu user, /dev/null and /dev/kvm
mkdir -p /var/log/libvirt/qemu /var/lib/libvirt/images /var/lib/libvirt/qemu /var/cache/libvirt /run/libvirt
pgrep -x virtlogd >/dev/null || virtlogd -d
pgrep -x libvirtd >/dev/null || libvirtd -d
# the first start probes QEMU's capabilities: seconds usually, over a minute on a slow machine
for _ in $(seq 1 360); do
  if virsh -c "$uri" version >/dev/null 2>&1; then exit 0; fi
  sleep 0.5
done
echo "start-libvirtd: libvirtd did not answer on $uri within 180 s" >&2
exit 1
