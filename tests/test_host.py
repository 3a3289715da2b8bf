"""Host on real local contexts: how the master waits for replies, how a host
is opened through its connector, closed and dropped. (The parts that need no
context: tests/unit/test_host.py.)"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from typing import Any, List, Tuple

import mitogen.core
import pytest
from conftest import wait_until
from helpers import oracle

import remoteexec as rx
from remoteexec import connectors
from remoteexec.connectors import LocalConnector, register


def test_waits_never_sleep_in_a_latch_with_a_timeout(master: rx.Master) -> None:
    """mitogen's Latch.get(timeout=...) races put(): the wake-up byte of a
    put that loses the race lands in a socketpair already back in mitogen's
    pool, and a later wait elsewhere fails with "AssertionError: Cookie
    incorrect" (seen in our suite). Replies are awaited without it: record
    every blocking Latch.get made by this thread during calls that outlive
    several of the 0.25 s lost-host polls."""
    host = master.local()
    me = threading.get_ident()
    seen: List[Tuple[Any, bool]] = []
    original = mitogen.core.Latch.get

    def recording(self: Any, timeout: Any = None, block: bool = True) -> Any:
        if threading.get_ident() == me:
            seen.append((timeout, block))
        return original(self, timeout=timeout, block=block)

    mitogen.core.Latch.get = recording  # type: ignore[method-assign]
    try:
        assert host.run(["sleep", "0.6"], timeout=5).ok
        assert host.service("ping")["ok"]
    finally:
        mitogen.core.Latch.get = original  # type: ignore[method-assign]
    assert seen, "the calls were awaited through the latch"
    timed = [(timeout, block) for timeout, block in seen if block and timeout is not None]
    assert not timed, "blocking Latch.get with a timeout: %r" % timed


# -- how hosts are opened, found and let go of ---------------------------------


def test_a_local_host_says_so(master: rx.Master) -> None:
    host = master.local()
    assert host.is_local and host.kind == "local"
    assert isinstance(host.connector, LocalConnector)
    assert host.connector.name == host.name == "local"


def test_the_connector_is_chosen_by_the_target_scheme(master: rx.Master) -> None:
    """A connector module that registers a new scheme is all the master
    needs: connect() opens through it, and caches by its key."""
    kind = "test%s" % uuid.uuid4().hex[:8]

    # What a module with "@register class Named(LocalConnector): kind = ..." does.
    Named = register(type("Named", (LocalConnector,), {"kind": kind}))
    host = master.connect("%s://box" % kind)
    assert type(host.connector) is Named and host.kind == kind and host.name == "box"
    assert host.is_local
    assert host.run(["echo", "hi"]).stdout == "hi\n"
    assert master.connect("%s://box" % kind) is host
    assert master.open(Named.from_target("box")) is host
    assert connectors.lookup("local") is LocalConnector, "the built-in scheme is untouched"
    assert master.connect("%s://other" % kind) is not host


def test_close_forgets_the_host_and_stops_its_heartbeat(master: rx.Master) -> None:
    host = master.local(name="short-lived")
    heartbeat = host.heartbeat
    assert heartbeat is not None and heartbeat in master.heartbeats.members
    assert host in master.hosts
    host.close()
    assert host.closed and heartbeat.stopped
    assert host not in master.hosts
    assert heartbeat not in master.heartbeats.members
    with pytest.raises(rx.HostLost, match="host was closed"):
        host.run(["true"])
    again = master.local(name="short-lived")
    assert again is not host and again.token != host.token
    assert again.run(["true"]).ok


def test_a_dropped_host_is_lost_at_once(master: rx.Master) -> None:
    """drop() cuts the connection without a word to the context, which
    then ends the run by itself; calls raise HostLost, they do not wait."""
    host = master.local(name="dropped")
    pid = host.info["pid"]
    host.drop()
    assert wait_until(lambda: host.lost is not None, 10), "never declared lost"
    started = time.monotonic()
    with pytest.raises(rx.HostLost):
        host.run(["true"])
    assert time.monotonic() - started < 2.0
    assert wait_until(lambda: oracle.identity(pid) is None, 15), "the context lives on"


def test_run_pipes_megabytes_both_ways_and_keeps_streams_apart(master: rx.Master) -> None:
    """Input larger than a pipe's buffer while the command fills both output
    pipes: nothing lost, nothing mixed, no deadlock."""
    host = master.local()
    data = bytes(range(256)) * 8192  # 2 MiB
    script = "import sys; d = sys.stdin.buffer.read(); sys.stdout.buffer.write(d); "
    script += "sys.stderr.write('e' * 300000)"
    result = host.run([sys.executable, "-c", script], input=data, text=False, timeout=60)
    assert result.returncode == 0
    assert result.stdout == data
    assert result.stderr == b"e" * 300000


def test_a_timed_out_run_kills_what_left_its_group_and_keeps_the_tail(
    master: rx.Master,
) -> None:
    """A timeout kills the group and the marked process that left it (and
    holds the pipes); the reply carries what they printed."""
    host = master.local()
    left = "setsid sleep 60 & echo started; echo on-stderr >&2; sleep 60"
    started = time.monotonic()
    with pytest.raises(rx.TimeoutExpired) as info:
        host.run(left, shell=True, timeout=0.5)
    assert time.monotonic() - started < 10, "the kill did not wait on the pipes"
    tail = info.value.output_tail or ""
    assert "started" in tail and "on-stderr" in tail, tail
    assert host.run(["true"]).ok, "the context serves on"
