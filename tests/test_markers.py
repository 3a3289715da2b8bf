"""Markers are matched exactly: stopping one executor never touches a sibling.

Every process the supervisor spawns carries ``REMOTEEXEC_RUN=<run>.<context>.<n>``.
With a dozen executors in one context, executor 1's marker is a prefix
(and a substring) of the markers of 10, 11 and 12; a stop or kill that
matched markers loosely would take those down too. What runs is read from
/proc by the tests' own oracle, not asked of the product.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import pytest
from conftest import PY, Place, context_pids, left_nothing, wait_until
from helpers import oracle

import remoteexec as rx

#: Executors started at once in one context: enough for n.1 to prefix n.10, n.11, n.12.
COUNT = 12
MAX_COUNT = 30


def _start_until_prefixed(place: Place) -> Tuple[List[rx.SimpleExecutor], Dict[int, str]]:
    """Start executors until one marker is a prefix of at least 3 others.

    In a fresh context that takes COUNT (ids 1..12); if ids started higher,
    keep going, bounded by MAX_COUNT.
    """
    started: List[rx.SimpleExecutor] = []
    markers: Dict[int, str] = {}
    while len(started) < MAX_COUNT:
        ex = rx.SimpleExecutor(["sleep", "600"], on=place.host, name="m%d" % len(started))
        started.append(ex.start())
        # Right after exec the kernel may not show the new environment yet.
        wait_until(lambda pid=ex.pid: oracle.marker(pid) is not None, 5, interval=0.005)
        markers[ex.pid] = oracle.marker(ex.pid) or ""
        if len(started) >= COUNT and max(_prefixed(markers).values()) >= 3:
            break
    return started, markers


def _prefixed(markers: Dict[int, str]) -> Dict[int, int]:
    """{pid: how many other markers start with this one}."""
    return {
        pid: sum(1 for other in markers.values() if other != m and other.startswith(m))
        for pid, m in markers.items()
    }


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_stopping_one_of_many_leaves_the_rest(place: Place, how: str) -> None:
    run_id = place.host.master.run_id
    execs, markers = _start_until_prefixed(place)
    try:
        assert len(set(markers.values())) == len(execs), markers
        assert all(m.startswith(run_id + ".") for m in markers.values()), markers
        counts = _prefixed(markers)
        victim_pid = max(counts, key=counts.get)
        assert counts[victim_pid] >= 3, "no marker prefixes 3 others: %s" % markers
        victim = next(ex for ex in execs if ex.pid == victim_pid)
        others = [ex for ex in execs if ex is not victim]
        shadowed = [
            ex.pid
            for ex in others
            if markers[ex.pid].startswith(markers[victim_pid]) and ex.pid != victim_pid
        ]
        alive = {ex.pid: oracle.identity(ex.pid) for ex in others}
        assert all(alive.values()), alive

        getattr(victim, how)()

        assert wait_until(lambda: oracle.identity(victim_pid) is None, 5), "victim still runs"
        gone = [pid for pid, ident in alive.items() if oracle.identity(pid) != ident]
        assert not gone, "stopping %s (%s) also ended %s; its marker prefixes %s" % (
            victim_pid,
            markers[victim_pid],
            oracle.describe(gone) + " " + str([markers[p] for p in gone]),
            [markers[p] for p in shadowed],
        )
        running = set(oracle.run_processes(run_id, context_pids(place.host.master)))
        assert running == set(alive), "the run's processes: %s" % oracle.describe(running)
        assert all(ex.running() for ex in others)
        assert not victim.running()
    finally:
        with left_nothing(run_id, context_pids(place.host.master), at_least=0):
            for ex in execs:
                ex.stop()


def _comm(pid: int) -> str:
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""


def test_the_oracle_finds_a_process_without_the_marker(place: Place) -> None:
    """A process that dropped REMOTEEXEC_RUN is still the run's: it descends
    from the context. The leftover check sees it; a marker-only one would not."""
    run_id = place.host.master.run_id
    contexts = context_pids(place.host.master)
    ex = rx.SimpleExecutor(["env", "-u", "REMOTEEXEC_RUN", "sleep", "600"], on=place.host)
    ex.start()
    try:
        assert wait_until(lambda: _comm(ex.pid) == "sleep", 5), "env exec'd sleep"
        assert oracle.marker(ex.pid) is None
        assert ex.pid not in oracle.run_processes(run_id), "no marker, no context: not seen"
        found = oracle.run_processes(run_id, contexts)
        assert found.get(ex.pid, "").startswith("descends from context"), found
    finally:
        with left_nothing(run_id, contexts, at_least=1):
            ex.stop()


def test_closing_the_master_leaves_none_of_many() -> None:
    """A dozen trees in one context, then close(): every process and the
    context itself are gone, per /proc."""
    with rx.Master(heartbeat_timeout=5) as m:
        host = m.local()
        tree = [PY, "-c", "import os,time; os.fork(); print('up', flush=True); time.sleep(600)"]
        # Kept: a dropped executor is killed at once (__del__), as in mirakuru.
        kept = [rx.OutputExecutor(tree, banner="up", on=host, timeout=10) for _ in range(COUNT)]
        for ex in kept:
            ex.start()
        with left_nothing(m.run_id, context_pids(m), at_least=2 * COUNT, contexts_exit=True):
            m.close()
