"""The guard's link (remoteexec/target/guardlink.py): a
guard that stops reading its pipe (stopped, starved) costs the spawns one
bounded wait, not a second each, and says so in its status. Real lab host."""

from __future__ import annotations

import os
import signal
import time
from typing import Any, Iterator

import pytest
from conftest import connect_options, wait_until

import remoteexec as rx

pytestmark = pytest.mark.lab


#: A session id no process can have (over Linux's PID_MAX_LIMIT): the guard
#: finds no member of it, whatever it does with the lines.
NO_PID = (1 << 22) + 1


def fill_guard_pipe(limit: int) -> int:
    """In the context: tell the guard fake sessions until a tell had to wait
    (the pipe is full); how many were told."""
    from remoteexec.target.guardlink import GUARD

    for told in range(limit):
        started = time.monotonic()
        GUARD.tell(NO_PID, 0, 0)
        if time.monotonic() - started > 0.5:
            return told
    return limit


@pytest.fixture(scope="module")
def host(lab: Any) -> Iterator[rx.Host]:
    with rx.Master(heartbeat_timeout=10) as m:
        yield m.connect(lab.targets[0], **connect_options(lab))


def test_a_stalled_guard_costs_one_wait_and_is_reported(host: rx.Host) -> None:
    host.run(["true"], check=True)  # the guard starts with the first process
    status = host.invoke("remoteexec.target.guardlink.status")
    guard_pid = status["pid"]
    assert guard_pid and status["error"] is None
    os.kill(guard_pid, signal.SIGSTOP)
    try:
        told = host.call(fill_guard_pipe, 100000)
        assert 1000 < told < 100000, "a 64 KiB pipe holds thousands of lines"
        status = host.invoke("remoteexec.target.guardlink.status")
        assert status["error"] and "does not read" in status["error"], status
        started = time.monotonic()
        for _ in range(3):
            assert host.run(["true"]).returncode == 0
        spent = time.monotonic() - started
        assert spent < 1.0, "each spawn waited for the stalled guard: %.2f s for 3" % spent
    finally:
        os.kill(guard_pid, signal.SIGCONT)
    # Read again: the next spawn is told at once, and the status says what was lost.
    assert wait_until(lambda: host.run(["true"]).duration < 0.5, 15.0)
    assert host.invoke("remoteexec.target.guardlink.status")["pid"] == guard_pid
