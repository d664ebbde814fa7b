"""`vmaudit agent` in a subprocess: several cycles on a short interval, one failing, stopped by SIGTERM
or SIGINT; same state and history as `vmaudit run --state-dir`."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
from statehelp import FIXTURE, KILLPOINT, VMAUDIT, rows, vmaudit


class Agent:
    """A running `vmaudit agent`, its log lines collected as they come."""

    def __init__(self, *args: str, prefix: tuple = (VMAUDIT,)) -> None:
        self.proc = subprocess.Popen([*prefix, "agent", *FIXTURE, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._q: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def expect(self, fragment: str, count: int = 1, timeout: float = 60) -> list[str]:
        """Wait until `count` log lines contain `fragment`; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            hits = [ln for ln in self.lines if fragment in ln]
            if len(hits) >= count:
                return hits
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {count} x {fragment!r} in agent log:\n" + "\n".join(self.lines))
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"agent exited ({self.proc.wait()}) before {fragment!r}:\n"
                                     + "\n".join(self.lines))
            self.lines.append(line)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=60)
        self.expect("agent: stopped")
        return rc


@pytest.fixture
def policy(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text('[agent]\ninterval = "1"\nhistory_days = 30\n')
    return path


def test_agent_cycles_survives_a_failing_audit_and_stops_on_sigterm(tmp_path, policy):
    state = tmp_path / "state"
    good = policy.read_text()
    agent = Agent("--policy", str(policy), "--state-dir", str(state))
    try:
        agent.expect("agent: auditing every 1 s into " + str(state))
        agent.expect(": exit status ", count=2)
        policy.write_text(good + "[agent]\n")  # an operator's bad edit: a duplicate table
        failed = agent.expect("audit failed: ")
        assert str(policy) in failed[0] and "invalid TOML" in failed[0]
        policy.write_text(good)
        ok_before = len(agent.expect(": exit status "))
        agent.expect(": exit status ", count=ok_before + 1)  # and it goes on
        rc = agent.stop(signal.SIGTERM)
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()
    assert rc == 0
    runs = [ln for ln in agent.lines if ": exit status " in ln]
    # one line per run with its summary, each run recorded
    assert all(" pass, " in ln and " waived in " in ln and "reports in " in ln for ln in runs)
    assert [r[0] for r in rows(state)] == list(range(1, len(runs) + 1))
    assert "SIGTERM: stopping" in "\n".join(agent.lines)
    failures = [ln for ln in agent.lines if "audit failed: " in ln]
    # the real outcomes: the fixture host has failures, so every audit that ran exited 1
    assert all(": exit status 1: " in ln for ln in runs)
    assert agent.lines[-1].endswith(f"agent: stopped: {len(runs) + len(failures)} audit(s): {len(runs)} found "
                                    f"failures (exit 1), {len(failures)} could not run")
    hist = vmaudit("history", "--state-dir", str(state))
    assert hist.returncode == 0 and len(hist.stdout.splitlines()) == len(runs) + 1


def test_agent_stops_on_sigint_and_interval_flag_wins(tmp_path, policy):
    state = tmp_path / "state"
    agent = Agent("--policy", str(policy), "--state-dir", str(state), "--interval", "1h")
    try:
        agent.expect("agent: auditing every 3600 s")
        agent.expect(": exit status ")  # the first audit runs at start
        assert agent.stop(signal.SIGINT) == 0
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()
    assert len(rows(state)) == 1


def test_agent_state_dir_from_policy_and_bad_interval(tmp_path):
    state = tmp_path / "from-policy"
    pol = tmp_path / "p.toml"
    pol.write_text(f'[agent]\nstate_dir = "{state}"\ninterval = "1h"\n')
    agent = Agent("--policy", str(pol))
    try:
        agent.expect(f"into {state}")
        agent.expect(": exit status ")
        assert agent.stop() == 0
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()
    assert (state / "latest.json").exists()
    bad = vmaudit("agent", *FIXTURE, "--state-dir", str(tmp_path / "s"), "--interval", "soon")
    assert bad.returncode == 2 and "--interval: 'soon' is not an interval" in bad.stderr


def test_sigterm_during_an_audit_finishes_it_first(tmp_path, policy):
    state = tmp_path / "state"
    agent = Agent("--policy", str(policy), "--state-dir", str(state),
                  prefix=(sys.executable, str(KILLPOINT), "slow-collect"))
    try:
        agent.expect("vmaudit-test: collecting")  # the first audit is under way
        agent.proc.send_signal(signal.SIGTERM)
        agent.expect("SIGTERM: stopping after the current audit")
        assert agent.proc.wait(timeout=60) == 0
        agent.expect("agent: stopped: 1 audit(s): 1 found failures (exit 1)")
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()
    assert [ln for ln in agent.lines if " run 1 of " in ln]
    assert len(rows(state)) == 1 and (state / "latest.json").exists()


def test_second_signal_stops_at_once_leaving_the_state_intact(tmp_path, policy):
    state = tmp_path / "state"
    agent = Agent("--policy", str(policy), "--state-dir", str(state),
                  prefix=(sys.executable, str(KILLPOINT), "slow-collect"))
    try:
        agent.expect("vmaudit-test: collecting")
        agent.proc.send_signal(signal.SIGTERM)
        agent.expect("stopping after the current audit")
        agent.proc.send_signal(signal.SIGINT)
        assert agent.proc.wait(timeout=60) == 130
        agent.expect("vmaudit agent: interrupted")
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()
    assert not [ln for ln in agent.lines if " run 1 of " in ln]
    assert vmaudit("run", *FIXTURE, "--state-dir", str(state), "--wait", "0").returncode in (0, 1, 3)
    assert [r[0] for r in rows(state)] == [1]
