"""The command line, run as a user would run it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import need_lab


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "remoteexec", *args], capture_output=True, text=True, timeout=timeout
    )


def test_run_local_command() -> None:
    r = _cli("run", "local", "--", "sh", "-c", "echo out; echo err >&2; exit 4")
    assert (r.returncode, r.stdout, r.stderr) == (4, "out\n", "err\n")


def test_run_reports_a_missing_command_in_one_line() -> None:
    r = _cli("run", "local", "--", "no-such-command-xyz")
    assert r.returncode == 1
    assert r.stderr.startswith("remoteexec: [local] command not found: no-such-command-xyz")
    assert "Traceback" not in r.stderr


@pytest.mark.lab
def test_demo_on_a_lab_leaves_nothing() -> None:
    need_lab()
    r = _cli("demo")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "http status 200, echo 'ping'" in r.stdout
    assert "torn down: 0 processes of this run left" in r.stdout
