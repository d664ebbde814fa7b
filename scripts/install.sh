#!/usr/bin/env bash
# Install vmaudit on this Debian/Ubuntu host (as root): system libraries, a private virtualenv in
# $VMAUDIT_PREFIX (default /opt/vmaudit), and /usr/local/bin/vmaudit. Safe to run again to upgrade.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
prefix=${VMAUDIT_PREFIX:-/opt/vmaudit}
if [ "$(id -u)" -ne 0 ]; then echo "install.sh: run as root (sudo)" >&2; exit 1; fi
"$here/scripts/install-deps.sh"
[ -x "$prefix/bin/python" ] || python3 -m venv "$prefix"
"$prefix/bin/pip" install -q --upgrade pip >/dev/null
"$prefix/bin/pip" install -q "$here"
ln -sf "$prefix/bin/vmaudit" /usr/local/bin/vmaudit
echo "vmaudit $("$prefix/bin/vmaudit" --version | cut -d' ' -f2) installed in $prefix; run: vmaudit run"
