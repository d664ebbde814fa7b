"""Helpers of the hardening tests (issue 12): the CLI in a child process with its peak memory."""

from __future__ import annotations

import json
import subprocess
import sys

# Runs the command under an address-space limit (an unbounded read fails there instead of taking the
# machine) and reports the child's peak resident set: RUSAGE_CHILDREN of this wrapper covers it alone.
_WRAPPER = r"""
import json, resource, subprocess, sys
limit = 1536 << 20
def cap():
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
p = subprocess.run(json.loads(sys.argv[1]), capture_output=True, preexec_fn=cap, timeout=120)
print(json.dumps({"rc": p.returncode, "out": p.stdout.decode(errors="replace"),
                  "err": p.stderr.decode(errors="replace"),
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def vmaudit_measured(*args: str) -> dict:
    """{rc, out, err, maxrss_kib} of `python -m vmaudit ARGS`."""
    cmd = [sys.executable, "-m", "vmaudit", *args]
    done = subprocess.run([sys.executable, "-c", _WRAPPER, json.dumps(cmd)], capture_output=True, text=True,
                          timeout=180, check=True)
    return json.loads(done.stdout)


def vmaudit(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vmaudit", *args], capture_output=True, text=True,
                          timeout=300, **kw)
