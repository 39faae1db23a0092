"""The soak's short version (``make soak`` is the long one): shoppers ordering for 30 s while every
kind of fault is injected, on the soak's own servers, then a clean ledger (bench/soak.py)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from embedded.silent_link import unavailable_reason

ROOT = Path(__file__).resolve().parent.parent.parent
FAULT_KINDS = {
    *("kill -9", "SIGTERM", "PostgreSQL restart", "Redis restart", "SMTP pause"),
    *("read-only database", "clock offset", "slow provider", "Redis READONLY"),
    *("Redis FLUSHALL", "Redis evicting policy"),
    # Needs root (a silent link); the soak leaves it out of its menu otherwise.
    *(() if unavailable_reason() else ("frozen connection",)),
}

pytestmark = [pytest.mark.process, pytest.mark.soak]


def test_a_short_soak_injects_every_kind_of_fault_and_keeps_the_ledger(tmp_path):
    report = tmp_path / "soak.json"
    command = [sys.executable, "bench/soak.py", "--seconds", "60", "--seed", "10", "--gap", "3", "--settle", "60"]
    # Bounded by the soak's own deadlines; the timeout only keeps a hung run from hanging the suite.
    result = subprocess.run([*command, "--report", str(report)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    ledger = json.loads(report.read_text())
    assert ledger["violations"] == []
    assert set(ledger["faults"]) == FAULT_KINDS
    assert all(count >= 1 for count in ledger["faults"].values()), ledger["faults"]
    assert ledger["figures"]["orders by status"].get("paid", 0) >= 5, ledger["figures"]
    assert ledger["settled_after"] is not None
