"""Host.run's pipes on the host (remoteexec/target/run.py: bare pipes read
with one poll loop), on the lane and through mitogen alike. Real lab hosts;
one master for the module."""

from __future__ import annotations

import time
from typing import Any

import pytest
from helpers import lane_values

import remoteexec as rx

pytestmark = pytest.mark.lab


pytest_plugins = ["helpers.fixtures"]


@pytest.fixture(scope="module")
def host(lane_host: rx.Host) -> rx.Host:
    return lane_host


def _both(host: rx.Host, command: Any, **kwargs: Any) -> Any:
    """``host.run(command, **kwargs)`` on the lane, then through mitogen."""
    if not host.lane.is_open:
        assert host.open_lane()
    runs = host.lane.stats["runs"]
    on_lane = host.run(command, **kwargs)
    assert host.lane.stats["runs"] == runs + 1, "on the lane"
    pending = host.send_run(command, **kwargs)
    on_mitogen = pending.finish(host.unpickle(pending.receiver.get, pending.what, pending.timeout))
    return on_lane, on_mitogen


def test_input_the_command_never_reads_is_no_error(host: rx.Host) -> None:
    """2 MiB of input to a command that exits without reading it: the pipe
    breaks under the writer, which stops writing, as communicate did."""
    for result in _both(
        host, ["sh", "-c", "echo read-none; exit 4"], input=lane_values.BIG, timeout=10
    ):
        assert (result.returncode, result.stdout, result.stderr) == (4, "read-none\n", "")


def test_stdin_is_dev_null_without_input_and_empty_input_is_eof(host: rx.Host) -> None:
    for result in _both(host, ["sh", "-c", "cat; echo eof"], timeout=10):
        assert (result.returncode, result.stdout) == (0, "eof\n")
    for result in _both(host, ["sh", "-c", "cat; echo eof"], input=b"", timeout=10):
        assert (result.returncode, result.stdout) == (0, "eof\n")
    for result in _both(host, ["cat"], input="some input", timeout=10):
        assert result.stdout == "some input"


def test_a_command_that_closes_its_output_still_times_out(host: rx.Host) -> None:
    """Output closed early, the command still running: the timeout bounds the
    wait for its exit too, and kills it, on both paths."""
    command = ["sh", "-c", "exec >&- 2>&-; sleep 12"]
    if not host.lane.is_open:
        assert host.open_lane()

    def through_mitogen() -> Any:
        pending = host.send_run(command, timeout=1)
        return pending.finish(host.unpickle(pending.receiver.get, pending.what, pending.timeout))

    for run in (lambda: host.run(command, timeout=1), through_mitogen):
        started = time.monotonic()
        with pytest.raises(rx.TimeoutExpired):
            run()
        assert time.monotonic() - started < 10, "bounded by the timeout, not the sleep"
