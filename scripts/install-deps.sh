#!/usr/bin/env bash
# Install the system packages vmaudit and its test suite need on Debian/Ubuntu (run as root).
#   scripts/install-deps.sh          runtime only: libvirt client library + build deps for libvirt-python
#   scripts/install-deps.sh --test   also a real libvirtd with QEMU, OpenSSH server, Chromium, systemd tools,
#                                    PostgreSQL (the fleet store's tests start their own cluster), libpq,
#                                    and the users and devices libvirt's QEMU driver expects
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
pkgs=(libvirt-dev pkg-config gcc python3-dev python3-venv)
if [ "${1:-}" = "--test" ]; then
  pkgs+=(libvirt-daemon libvirt-daemon-driver-qemu qemu-system-x86 qemu-utils libvirt-clients
         openssh-server sudo passwd chromium iproute2 systemd python3-libvirt postgresql libpq5
         # RHEL/Fedora fixtures: rpmbuild makes tiny rpms, rpm installs them into a fixture rpmdb and is the
         # reference for rpmvercmp, createrepo_c/modifyrepo_c write the dnf cache's repodata
         rpm createrepo-c)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ "${1:-}" = "--test" ]; then
  # what libvirt-daemon-system's postinst would create (it is not installed: no system daemon is needed)
  getent group kvm >/dev/null || groupadd -r kvm
  getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
  getent group libvirt >/dev/null || groupadd -r libvirt
  id libvirt-qemu >/dev/null 2>&1 || useradd -r -g libvirt-qemu -G kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
  # Some machine images come up with /dev/null as a plain file; libvirt then bind-mounts that file into
  # each guest's private /dev and the start fails ("Unable to move ... mount to /dev/null").
  if [ ! -c /dev/null ]; then rm -f /dev/null; mknod -m 0666 /dev/null c 1 3; fi
  if [ -e /dev/kvm ]; then chown root:kvm /dev/kvm; chmod 0660 /dev/kvm; fi
fi
