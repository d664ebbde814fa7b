#!/usr/bin/env bash
# Install the system packages vmaudit and its test suite need on Debian/Ubuntu (run as root).
#   scripts/install-deps.sh          runtime only: libvirt client library + build deps for libvirt-python
#   scripts/install-deps.sh --test   also a real libvirtd with QEMU, OpenSSH server, Chromium, systemd tools
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
pkgs=(libvirt-dev pkg-config gcc python3-dev python3-venv)
if [ "${1:-}" = "--test" ]; then
  pkgs+=(libvirt-daemon libvirt-daemon-driver-qemu qemu-system-x86 qemu-utils libvirt-clients
         openssh-server sudo passwd chromium iproute2 systemd python3-libvirt
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
