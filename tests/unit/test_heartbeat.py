"""remoteexec.heartbeat: the monitor beats every watched member each
interval with the master's timeout, and stops cleanly. (A Heartbeat on a real
context, its acks and a host found lost: tests/test_claims_heartbeat.py.)"""

from __future__ import annotations

import threading
import time
from typing import Iterator, List, Tuple

import pytest

from remoteexec.heartbeat import HeartbeatMonitor

#: Bound on waits for a few beats at INTERVAL on a loaded machine.
WAIT = 5.0
INTERVAL = 0.05


class Counter:
    """A member that records its beats."""

    def __init__(self) -> None:
        self.beats: List[Tuple[float, float]] = []
        self.enough = threading.Event()

    def beat(self, now: float, timeout: float) -> None:
        self.beats.append((now, timeout))
        if len(self.beats) >= 3:
            self.enough.set()


@pytest.fixture
def monitor() -> Iterator[HeartbeatMonitor]:
    made = HeartbeatMonitor(2.0, INTERVAL, name="test-heartbeat")
    try:
        yield made
    finally:
        made.stop()


def test_every_member_is_beaten_with_the_timeout(monitor: HeartbeatMonitor) -> None:
    a, b = Counter(), Counter()
    monitor.watch(a)
    monitor.watch(b)
    monitor.watch(a)  # once only
    assert monitor.members == [a, b]
    started = time.monotonic()
    assert a.enough.wait(WAIT) and b.enough.wait(WAIT)
    assert all(timeout == 2.0 for _, timeout in a.beats + b.beats)
    assert all(started - 1 < now <= time.monotonic() for now, _ in a.beats), "monotonic time"
    gaps = [y[0] - x[0] for x, y in zip(a.beats, a.beats[1:])]
    assert min(gaps) >= INTERVAL * 0.9, gaps  # not faster than the interval


def test_an_unwatched_member_is_beaten_no_more(monitor: HeartbeatMonitor) -> None:
    gone, stays = Counter(), Counter()
    monitor.watch(gone)
    monitor.watch(stays)
    assert gone.enough.wait(WAIT)
    monitor.unwatch(gone)
    monitor.unwatch(gone)  # a no-op the second time
    seen = len(gone.beats)
    stays.beats.clear()
    stays.enough.clear()
    assert stays.enough.wait(WAIT), "the round goes on for the others"
    # One beat may have been under way when unwatch() returned.
    assert len(gone.beats) <= seen + 1
    assert monitor.members == [stays]


def test_stop_ends_the_thread_and_the_beats() -> None:
    made = HeartbeatMonitor(1.0, INTERVAL, name="test-heartbeat-stop")
    member = Counter()
    made.watch(member)
    assert member.enough.wait(WAIT)
    assert any(t.name == "test-heartbeat-stop" for t in threading.enumerate())
    made.stop()
    assert not made.running
    assert not any(t.name == "test-heartbeat-stop" for t in threading.enumerate())
    seen = len(member.beats)
    made.beat_all(time.monotonic())  # a round by hand still works, the thread is gone
    assert len(member.beats) == seen + 1
    made.stop()  # twice is fine
