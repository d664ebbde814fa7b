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


# A host name as an attacker would set it: retitle the terminal (OSC), forge a history row (newline),
# rewrite the line (CR), a C1 CSI, and a bidirectional override
HOSTILE = "evil\x1b]0;pwned\x07\nRUN FORGED 0 0\r\x9b2J\u202emoc"


def run_in_pty(cmd: list[str], timeout: float = 120, **kw) -> tuple[int, bytes]:
    """Run `cmd` with its standard input, output and error on a real pseudo-terminal; (status, bytes seen)."""
    import os
    import select
    import time

    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, close_fds=True, **kw)
    finally:
        os.close(slave)
    seen = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 1 << 16)
                except OSError:  # EIO: every holder of the slave side has closed it
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=max(deadline - time.monotonic(), 1)), bytes(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def assert_terminal_clean(seen: bytes) -> None:
    """No ESC, no other C0 control than the terminal's own CR LF, no DEL, no C1 (as UTF-8 or raw)."""
    assert b"\x1b" not in seen, seen
    bad = sorted({b for b in seen if (b < 0x20 and b not in b"\r\n") or b == 0x7f})
    assert not bad, (bad, seen)
    text = seen.decode("utf-8", errors="replace")
    assert not [ch for ch in text if 0x80 <= ord(ch) <= 0x9f or ch == "\u202e"], seen
    for line in text.split("\n"):  # a lone CR would let the rest of a line overwrite its start
        assert "\r" not in line.rstrip("\r"), seen
