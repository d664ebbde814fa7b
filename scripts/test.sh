#!/usr/bin/env bash
# Install everything the test suite needs and run it (as root, on Debian/Ubuntu):
# system packages (libvirtd + QEMU, OpenSSH server, Chromium), a virtualenv in .venv with vmaudit and
# its test extras, a running libvirtd; then lint and pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then echo "test.sh: run as root (the tests start libvirtd and sshd)" >&2; exit 1; fi
scripts/install-deps.sh --test
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[test,plan]'
scripts/start-libvirtd.sh
.venv/bin/ruff check .
exec .venv/bin/pytest "$@"
