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


@pytest.mark.lab
def test_run_options_anywhere_before_the_command(lab) -> None:
    """Options after TARGET used to be swallowed into the command, and the
    missing known_hosts file then looked like an unknown host key."""
    from conftest import PY

    target, address = lab.targets[1], lab.hosts[1].address
    key = ["-i", lab.identity_file]
    known = ["--known-hosts-file", lab.known_hosts_file, "--python", PY]
    command = ["--", "ip", "-o", "-4", "addr"]
    for args in (
        [target, *key, *known],
        [*key, target, *known],
        [*key, *known, target],
    ):
        r = _cli("run", *args, *command)
        assert r.returncode == 0, (args, r.stderr)
        assert address in r.stdout, "it ran on the lab host"
    # Options of the command itself stay the command's.
    r = _cli("run", target, *key, *known, "--timeout", "20", "--", "sh", "-c", "echo $0", "-i")
    assert (r.returncode, r.stdout) == (0, "-i\n"), r.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["local", "--bogus", "--", "true"], "unrecognized arguments: --bogus"),
        (["local", "uname", "-n"], "unrecognized arguments: -n"),
        (["local", "echo", "--", "x"], "the command goes after --"),
        (["local", "--"], "no command given"),
        (["local", "--timeout", "-1", "--", "true"], "--timeout must be more than zero"),
    ],
)
def test_run_usage_errors_exit_2(args: list, message: str) -> None:
    r = _cli("run", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr and "usage: remoteexec run" in r.stderr
    assert r.stdout == ""


def test_run_without_separator_still_takes_plain_words() -> None:
    r = _cli("run", "local", "echo", "hi")
    assert (r.returncode, r.stdout) == (0, "hi\n"), r.stderr
