#!/usr/bin/env bash
# Install everything the test suite needs and run it (as root, on Debian/Ubuntu):
# system packages (libvirtd + QEMU, OpenSSH server, Chromium), a virtualenv in .venv with vmaudit and
# its test extras; then lint and pytest. Extra arguments go to pytest.
# The suite starts its own private libvirtd, OpenSSH servers on 127.0.6.x, a PostgreSQL cluster in a temporary
# directory and Chromium, and removes what
# it created when it ends; it never changes the host's own libvirtd (a session hook compares its guests,
# snapshots, networks and pools before and after and fails the run if anything differs).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then echo "test.sh: run as root (the tests start libvirtd and sshd)" >&2; exit 1; fi
scripts/install-deps.sh --test
[ -x .venv/bin/python ] || /usr/bin/python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[test,plan]'
.venv/bin/ruff check .
exec .venv/bin/pytest "$@"
