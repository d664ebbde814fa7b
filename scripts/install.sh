#!/usr/bin/env bash
# Install vmaudit on this Debian/Ubuntu host (as root): system libraries, a private virtualenv in
# $VMAUDIT_PREFIX (default /opt/vmaudit) built with the distribution's /usr/bin/python3, the command
# in $VMAUDIT_BINDIR (default /usr/local/bin) and, when there is none, the example policy in
# $VMAUDIT_CONFDIR (default /etc/vmaudit). Any user can run the result. Safe to run again to upgrade;
# an existing policy is never overwritten.
set -euo pipefail
umask 022   # everything installed is readable by the users who run vmaudit, whatever root's umask
here=$(cd "$(dirname "$0")/.." && pwd)
prefix=${VMAUDIT_PREFIX:-/opt/vmaudit}
bindir=${VMAUDIT_BINDIR:-/usr/local/bin}
confdir=${VMAUDIT_CONFDIR:-/etc/vmaudit}
python=/usr/bin/python3   # never a pyenv or venv Python under /root: other users could not run it
if [ "$(id -u)" -ne 0 ]; then echo "install.sh: run as root (sudo)" >&2; exit 1; fi
if [ -d "$prefix" ] && [ ! -f "$prefix/pyvenv.cfg" ] && [ -n "$(ls -A "$prefix")" ]; then
  echo "install.sh: $prefix exists and is not a virtualenv: choose another VMAUDIT_PREFIX" >&2; exit 1
fi
step() { printf 'install.sh: [%s/5] %s\n' "$1" "$2"; }

step 1 "system packages (apt): libvirt client library, compiler, python3-venv"
"$here/scripts/install-deps.sh"

if [ -f "$prefix/pyvenv.cfg" ] && ! grep -qx 'home = /usr/bin' "$prefix/pyvenv.cfg"; then
  step 2 "virtualenv $prefix: rebuilt with $python (it was made with another Python)"
  "$python" -m venv --clear "$prefix"
elif [ -x "$prefix/bin/python" ]; then
  step 2 "virtualenv $prefix: kept ($("$prefix/bin/python" --version))"
else
  step 2 "virtualenv $prefix with $python ($("$python" --version))"
  "$python" -m venv "$prefix"
fi

step 3 "vmaudit and its Python packages into $prefix (pip; a minute the first time: libvirt-python compiles)"
"$prefix/bin/pip" install -q --disable-pip-version-check --upgrade pip >/dev/null
"$prefix/bin/pip" install -q --disable-pip-version-check "$here"
chmod -R a+rX,go-w "$prefix"
chmod 0755 "$prefix"

step 4 "command: $bindir/vmaudit -> $prefix/bin/vmaudit"
mkdir -p "$bindir"
ln -sfn "$prefix/bin/vmaudit" "$bindir/vmaudit"

if [ -e "$confdir/policy.toml" ]; then
  step 5 "policy: $confdir/policy.toml kept as it is"
else
  step 5 "policy: example installed as $confdir/policy.toml (every setting commented out: the defaults)"
  install -d -m 0755 "$confdir"
  install -m 0644 "$here/etc/vmaudit/policy.toml" "$confdir/policy.toml"
fi

version=$("$bindir/vmaudit" --version)
echo "install.sh: $version installed in $prefix ($("$prefix/bin/python" --version))."
echo "Next: vmaudit run     (as root for every fact; 'vmaudit --help' for the rest)"
