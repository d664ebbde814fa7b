#!/usr/bin/env bash
# Start a real libvirtd (with virtlogd) on a machine where PID 1 is not systemd, as root.
# Idempotent: returns at once when qemu:///system already answers.
set -euo pipefail
uri=qemu:///system
if virsh -c "$uri" version >/dev/null 2>&1; then exit 0; fi
getent group kvm >/dev/null || groupadd -r kvm
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
getent group libvirt >/dev/null || groupadd -r libvirt
id libvirt-qemu >/dev/null 2>&1 || useradd -r -g libvirt-qemu -G kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
# Some machine images come up with /dev/null as a plain file; libvirt then bind-mounts that file into
# each guest's private /dev and the start fails ("Unable to move ... mount to /dev/null").
if [ ! -c /dev/null ]; then rm -f /dev/null; mknod -m 0666 /dev/null c 1 3; fi
mkdir -p /var/log/libvirt/qemu /var/lib/libvirt/images /var/lib/libvirt/qemu /var/cache/libvirt /run/libvirt
if [ -e /dev/kvm ]; then chown root:kvm /dev/kvm; chmod 0660 /dev/kvm; fi
pgrep -x virtlogd >/dev/null || virtlogd -d
pgrep -x libvirtd >/dev/null || libvirtd -d
# the first start probes QEMU's capabilities: seconds usually, over a minute on a slow machine
for _ in $(seq 1 360); do
  if virsh -c "$uri" version >/dev/null 2>&1; then exit 0; fi
  sleep 0.5
done
echo "start-libvirtd: libvirtd did not answer on $uri within 180 s" >&2
exit 1
