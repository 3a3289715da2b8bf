"""README claims about heartbeats, measured from outside the code under test.

- heartbeats every ``min(1, heartbeat_timeout/4)`` s: the gaps between acks
  the master receives, timed by the test;
- ``heartbeat_timeout`` defaults to 10 s, and that is what the watchdog in
  the context waits with (read from the running watchdog's frame);
- a silently partitioned host is declared lost neither too late nor too
  early, its context's watchdog ends the run no earlier than the timeout
  allows, and its logs (the run directory, on the host's private /tmp) are
  removed.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any, List

import pytest
from conftest import PY, connect_options, context_pids, run_pids, wait_until
from helpers import oracle

import remoteexec as rx

#: Scheduling slack for a poll loop on this loaded 2-core machine (other
#: suites run at the same time): an event may be seen this late.
POLL_SLACK = 0.15
#: Allowance for late threads and nft rules under load, on upper bounds only.
LOAD_MARGIN = 1.5


def _watchdog_timeout() -> float:
    """Run in a context: the timeout the running heartbeat watchdog waits with."""
    import threading

    for thread in threading.enumerate():
        if thread.name != "remoteexec-watchdog":
            continue
        frame = sys._current_frames().get(thread.ident)
        for _ in range(50):  # bounded walk up the stack
            if frame is None:
                break
            if frame.f_code.co_name == "_watchdog":
                return float(frame.f_locals["timeout"])
            frame = frame.f_back
    raise AssertionError("no running heartbeat watchdog in this context")


def _ack_gaps(host: rx.Host, count: int, timeout: float) -> List[float]:
    """Seconds between ``count + 1`` consecutive acks, timed by this test
    (it watches ``host.last_ack`` change every 5 ms)."""
    seen: List[float] = []
    last = host.last_ack
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.005) + 1):
        if len(seen) > count or time.monotonic() > deadline:
            break
        if host.last_ack != last:
            last = host.last_ack
            seen.append(time.monotonic())
        time.sleep(0.005)
    assert len(seen) > count, "only %d acks in %.1f s" % (len(seen), timeout)
    return [b - a for a, b in zip(seen, seen[1:])]


@pytest.mark.parametrize(
    ("timeout", "interval"), [(2.0, 0.5), (8.0, 1.0)], ids=["quarter", "capped"]
)
def test_heartbeat_interval_is_a_quarter_of_the_timeout_at_most_1s(
    timeout: float, interval: float
) -> None:
    with rx.Master(heartbeat_timeout=timeout) as m:
        host = m.local()
        assert m.heartbeat_interval == interval
        gaps = _ack_gaps(host, count=5, timeout=8 * interval + 3)
        median = statistics.median(gaps)
        print("\nheartbeat_timeout=%g: ack gaps %s" % (timeout, [round(g, 3) for g in gaps]))
        # The median is robust to one late beat under load.
        assert abs(median - interval) <= POLL_SLACK, (median, gaps)


def test_default_heartbeat_timeout_is_10s_in_the_watchdog() -> None:
    with rx.Master() as m:
        assert m.heartbeat_timeout == 10.0
        assert m.local().call(_watchdog_timeout) == 10.0
    with rx.Master(heartbeat_timeout=4) as m:  # and the watchdog gets what is asked
        assert m.local().call(_watchdog_timeout) == 4.0


HEARTBEAT = 3.0
INTERVAL = min(1.0, HEARTBEAT / 4)
#: Lost no earlier than this after the cut: the last ack may have arrived up
#: to one interval before the cut, and the test sees events POLL_SLACK late.
EARLIEST_LOST = HEARTBEAT - INTERVAL - POLL_SLACK
#: How late this test may notice an ack under load (it polls every 5 ms). A
#: host declared lost after half the timeout is lost 2.25 s after its last ack.
ACK_SEEN_LATE = 0.4
#: ...and no later than the timeout plus one interval (the master checks once
#: per beat), plus LOAD_MARGIN.
LATEST_LOST = HEARTBEAT + INTERVAL + LOAD_MARGIN


@pytest.mark.lab
def test_partition_lost_in_its_window_watchdog_kills_and_logs_go(lab: Any) -> None:
    index = 1
    lab_host = lab.hosts[index]
    with rx.Master(heartbeat_timeout=HEARTBEAT) as m:
        host = m.connect(lab.targets[index], **connect_options(lab))
        port = 18190
        ex = rx.TCPExecutor(
            # stdlib only: the host's /tmp is its own, so a copy of the
            # repository there (scripts/mutation_check.py) is out of its reach.
            [PY, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
            host="127.0.0.1",
            port=port,
            on=host,
            timeout=10,
        )
        ex.start()
        run_dir = host.info["run_dir"]
        on_host = lab_host.path(run_dir)
        logs = os.listdir(on_host)
        assert logs, "the executor's log is in the run directory on the host"
        assert not os.path.exists(run_dir), "the run directory is on the host, not here"
        context = oracle.identity(host.info["pid"])
        assert context is not None
        assert run_pids(m.run_id, context_pids(m)), "the service runs before the cut"
        # Acks arrive, timed by the test, right up to the cut.
        _ack_gaps(host, count=1, timeout=5)
        last_ack_seen, ack = time.monotonic(), host.last_ack
        lab.partition(lab_host)
        try:
            cut = time.monotonic()
            lost_at = gone_at = None
            deadline = cut + HEARTBEAT + 10
            for _ in range(4000):  # 5 ms steps, bounded by the deadline too
                now = time.monotonic()
                if host.last_ack != ack:  # an ack that was already on its way
                    last_ack_seen, ack = now, host.last_ack
                if lost_at is None and host.lost:
                    lost_at = now
                if gone_at is None and oracle.identity(context[0]) != context:
                    gone_at = now
                if (lost_at and gone_at) or now > deadline:
                    break
                time.sleep(0.005)
            assert lost_at is not None, "never declared lost"
            lost, exited = lost_at - cut, (gone_at or deadline) - cut
            print(
                "\nlost %.2f s after the cut (window %.2f-%.2f), %.2f s after the last ack seen;"
                " context exited after %.2f s"
                % (lost, EARLIEST_LOST, LATEST_LOST, lost_at - last_ack_seen, exited)
            )
            assert EARLIEST_LOST <= lost <= LATEST_LOST, host.lost
            # Measured from the last ack this test saw: the full timeout (the
            # test may notice that ack up to ACK_SEEN_LATE late).
            assert lost_at - last_ack_seen >= HEARTBEAT - ACK_SEEN_LATE
            assert "heartbeat" in host.lost
            # The context's watchdog: it got its last beat at most one interval
            # before the cut, and waits the full timeout after it.
            assert gone_at is not None, "the watchdog did not end the context"
            assert EARLIEST_LOST <= exited <= LATEST_LOST + LOAD_MARGIN
            assert wait_until(lambda: not run_pids(m.run_id), 5), oracle.describe(
                run_pids(m.run_id)
            )
        finally:
            lab.heal()
        # The logs went with the run: the directory is gone from the host.
        assert not os.path.exists(on_host), os.listdir(on_host)
        with pytest.raises(rx.HostLost):
            ex.running()
