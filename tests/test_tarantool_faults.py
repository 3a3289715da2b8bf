"""Tarantool replica sets when a member's host is lost, and bad arguments.

The host-loss tests partition a real lab host (nftables drops its packets,
silently, as on a real partition) while a multi-host wait runs, and check
that the wait gives up as soon as the master declares the host lost, with an
error that names the member and its host, and that nothing of the run is
left running: with the test's own oracle, which reads /proc on this machine
(lab hosts share its pid space) and tells the hosts apart by their network
namespace. Each such test has its own Master with a short heartbeat and
heals the lab in a finally.

The argument tests need no host at all, or a local context.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest
from conftest import connect_options, wait_until
from test_tarantool import netns_inode, run_tarantool_netns

import remoteexec as rx
from remoteexec.lab import MASTER
from remoteexec.tarantool import ReplicaSet, TarantoolError, TarantoolInstance

HEARTBEAT = 3.0
#: The master declares a host lost within heartbeat_timeout plus one
#: heartbeat period (0.75 s here); the set's waits must end within 1 s of the
#: heartbeat timeout. Allowance on top for this 2-core machine, which runs
#: other suites at the same time: nft rules applied, threads scheduled late.
LOAD_MARGIN = 1.0
ABORT_BOUND = HEARTBEAT + 1.0 + LOAD_MARGIN
#: A lost host's supervisor kills its processes heartbeat_timeout after the
#: last beat it got; this bounds that cleanup, seen from the test.
CLEANUP_BOUND = HEARTBEAT + 5.0
#: Every wait in these tests; without the fix a set waits this long.
SET_TIMEOUT = 10.0
SCHEMA = """
box.schema.space.create('test', {if_not_exists = true})
box.space.test:create_index('pk', {if_not_exists = true})
"""
_ports = itertools.count(3400)


@pytest.fixture
def fault_master(lab: Any) -> Iterator[rx.Master]:
    """A master of its own: a lost host stays lost for the master that lost it."""
    with rx.Master(heartbeat_timeout=HEARTBEAT) as m:
        try:
            yield m
        finally:
            lab.heal()


@pytest.fixture
def fault_hosts(lab: Any, fault_master: rx.Master) -> List[rx.Host]:
    connected: List[rx.Host] = fault_master.connect_all(lab.targets, **connect_options(lab))
    return connected


def make_set(hosts: List[rx.Host]) -> ReplicaSet:
    port = next(_ports)
    return ReplicaSet(
        "rs%d" % port,
        members=[(h, port) for h in hosts],
        replication_timeout=0.1,
        timeout=SET_TIMEOUT,
    )


def left_on(run_id: str, lab_host: Any) -> List[int]:
    """The run's tarantools on ``lab_host``."""
    inode = netns_inode(lab_host)
    return sorted(p for p, ns in run_tarantool_netns(run_id).items() if ns == inode)


def left_elsewhere(run_id: str, lab_host: Any) -> List[int]:
    """The run's tarantools on every host but ``lab_host``."""
    inode = netns_inode(lab_host)
    return sorted(p for p, ns in run_tarantool_netns(run_id).items() if ns != inode)


def check_lost(error: BaseException, member: TarantoolInstance, took: float) -> None:
    """HostLost whose first line names the member and its host, in time."""
    assert isinstance(error, rx.HostLost), repr(error)
    first = str(error).splitlines()[0]
    assert member.name in first and member.on.name in first, first
    assert error.details["member"] == member.name and error.host == member.on.name
    assert took <= ABORT_BOUND, "%.2f s from partition to the error (bound %.1f s)" % (
        took,
        ABORT_BOUND,
    )


def lost_during(
    lab: Any, lost: int, call: Callable[[], Any], delay: float = 0.0
) -> Tuple[BaseException, float]:
    """Run ``call``; cut lab host ``lost`` from the master ``delay`` s into it
    (at once: before). Returns (the error, seconds from the cut to the error)."""
    cut: Dict[str, float] = {}

    def partition() -> None:
        cut["at"] = time.monotonic()
        lab.partition(lab.hosts[lost], MASTER)

    timer = threading.Timer(delay, partition)
    if delay:
        timer.start()
    else:
        partition()
    try:
        with pytest.raises(rx.RemoteExecError) as info:
            call()
        raised = time.monotonic()
    finally:
        timer.cancel()
        if delay:
            timer.join()
    assert "at" in cut, "the call ended before the partition: %r" % info.value
    return info.value, raised - cut["at"]


def cut_from_peers(lab: Any, lost: int) -> None:
    """Cut lab host ``lost`` from the other hosts (the master still reaches it)."""
    for other in range(len(lab.hosts)):
        if other != lost:
            lab.partition(lost, other)


def isolate(lab: Any, rs: ReplicaSet, lost: int) -> None:
    """Cut lab host ``lost`` from the other hosts and wait until the other
    members see their links to its member broken both ways."""
    cut_from_peers(lab, lost)
    assert wait_until(lambda: links_down(rs, rs.members[lost]), 5), rs.status()["members"]


def aborts_on_loss(
    lab: Any, rs: ReplicaSet, what: str, call: Callable[[], Any], delay: float = 0.0
) -> None:
    """``call`` raises HostLost naming the last member, in time, when its lab
    host is cut from the master ``delay`` s into it."""
    lost = len(rs.members) - 1
    error, took = lost_during(lab, lost, call, delay=delay)
    print("\n%s, host %s lost: %.2f s" % (what, lab.hosts[lost].name, took))
    check_lost(error, rs.members[lost], took)


def links_down(rs: ReplicaSet, lost: TarantoolInstance) -> bool:
    """Every other member sees its links to ``lost`` broken both ways."""
    rows = [r for r in rs.member_rows() if r["member"] != lost.name]
    return all(
        r["upstream"].get(lost.name, {}).get("status") != "follow"
        and r["downstream"].get(lost.name, {}).get("status") != "follow"
        for r in rows
    )


# --- a member's host lost during a multi-host wait ---------------------------------


@pytest.mark.lab
@pytest.mark.parametrize(
    ("lost", "when"),
    [(0, "early"), (2, "early"), (0, "spawned"), (2, "spawned")],
    ids=["leader-50ms", "replica-50ms", "leader-spawned", "replica-spawned"],
)
def test_start_aborts_when_a_members_host_is_lost(
    lab: Any, fault_master: rx.Master, fault_hosts: List[rx.Host], lost: int, when: str
) -> None:
    rs = make_set(fault_hosts)
    for m in rs.members:
        # The app keeps start() in its readiness wait for a while after spawn.
        m.app_lua = "require('fiber').sleep(1)"
    member = rs.members[lost]
    run_id = fault_master.run_id
    cut: Dict[str, float] = {}

    def partition() -> None:
        # "early": 50 ms into start(), while it checks the hosts or spawns;
        # "spawned": once every member's process exists, while start() waits.
        if when == "spawned":
            wait_until(lambda: len(run_tarantool_netns(run_id)) == 3, SET_TIMEOUT, 0.02)
        cut["at"] = time.monotonic()
        lab.partition(lab.hosts[lost])

    timer = threading.Timer(0.05, partition)
    timer.start()
    try:
        with pytest.raises(rx.HostLost) as info:
            rs.start()
        took = time.monotonic() - cut["at"]
    finally:
        timer.cancel()
        timer.join()
    first = str(info.value).splitlines()[0]
    print("\nstart, %s's host lost: HostLost %.2f s after the cut\n%s" % (member.name, took, first))
    check_lost(info.value, member, took)
    assert "start" in first
    assert all(m.pid is None for m in rs.members)
    # Killed on the live hosts by the time start() raised...
    assert left_elsewhere(run_id, lab.hosts[lost]) == []
    # ...and on the lost one by its own supervisor, once the heartbeats stopped.
    assert wait_until(lambda: not left_on(run_id, lab.hosts[lost]), CLEANUP_BOUND)
    rs.stop()  # nothing left to stop: no error


@pytest.fixture
def running(lab: Any, fault_master: rx.Master, fault_hosts: List[rx.Host]) -> Iterator[ReplicaSet]:
    """A started set of three; after the test: heal, stop what is left (no
    error), and check that no tarantool of the run is."""
    rs = make_set(fault_hosts)
    rs.start()
    rs.leader.eval(SCHEMA)
    yield rs
    lab.heal()
    rs.stop()
    run_id = fault_master.run_id
    gone = wait_until(lambda: not run_tarantool_netns(run_id), CLEANUP_BOUND)
    assert gone, run_tarantool_netns(run_id)


@pytest.mark.lab
def test_wait_synced_aborts_when_a_members_host_is_lost(lab: Any, running: ReplicaSet) -> None:
    rs = running
    leader, behind, lost = rs.members
    # Neither replica can catch up: both waits would last the whole timeout.
    lab.partition(1, 0)
    lab.partition(2, 0)
    leader.eval("box.space.test:insert{1, 'x'}")
    aborts_on_loss(lab, rs, "wait_synced", lambda: rs.wait_synced(timeout=SET_TIMEOUT))
    assert lost.pid is None and leader.pid and behind.pid


@pytest.mark.lab
def test_switchover_aborts_when_a_members_host_is_lost(lab: Any, running: ReplicaSet) -> None:
    rs = running
    old, new, lost = rs.members
    # The new roles can never reach full mesh with `lost`: the final wait blocks.
    isolate(lab, rs, 2)
    aborts_on_loss(lab, rs, "switchover", lambda: rs.switchover(new))
    assert rs.leader is new and new.eval("return box.info.ro") is False
    assert lost.pid is None and old.pid and new.pid


@pytest.mark.lab
def test_restart_aborts_when_a_peers_host_is_lost(
    lab: Any, fault_master: rx.Master, running: ReplicaSet
) -> None:
    rs = running
    leader, restarted, lost = rs.members
    rs.kill(restarted)
    cut_from_peers(lab, 2)  # `restarted` waits for full mesh with `lost`: never comes
    aborts_on_loss(lab, rs, "restart, a peer's", lambda: rs.restart(restarted), delay=0.05)
    assert restarted.pid is None and lost.pid is None and leader.pid
    # The member being restarted was killed, not left waiting.
    assert left_on(fault_master.run_id, lab.hosts[1]) == []


@pytest.mark.lab
def test_resume_aborts_when_a_peers_host_is_lost(lab: Any, running: ReplicaSet) -> None:
    rs = running
    leader, resumed, lost = rs.members
    # Paused once it saw its links to `lost` break: resumed, it waits for them.
    isolate(lab, rs, 2)
    rs.pause(resumed)
    aborts_on_loss(lab, rs, "resume, a peer's", lambda: rs.resume(resumed), delay=0.05)
    assert not resumed.paused and resumed.pid and leader.pid and lost.pid is None


# --- work_dir ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_dir", "cause"),
    [
        (lambda tmp: str(tmp / "a-file"), "is not a directory"),
        (lambda tmp: str(tmp / "a-file" / "below"), "cannot create work_dir"),
        # Even root cannot create files in sysfs: a directory that is not writable.
        (lambda _tmp: "/sys", "is not writable"),
    ],
    ids=["file", "under-a-file", "not-writable"],
)
def test_bad_work_dir_is_a_tarantool_error_before_anything_starts(
    master: rx.Master, tmp_path: Any, make_dir: Callable[[Any], str], cause: str
) -> None:
    (tmp_path / "a-file").write_text("not a directory\n")
    work_dir = make_dir(tmp_path)
    one = TarantoolInstance(
        on=master.local(), listen="127.0.0.1:0", work_dir=work_dir, timeout=SET_TIMEOUT
    )
    with pytest.raises(TarantoolError) as info:
        one.start()
    first = str(info.value).splitlines()[0]
    print("\n" + first)
    assert work_dir in first and cause in first and one.name in first, first
    assert one.pid is None
    assert sorted(os.listdir(tmp_path)) == ["a-file"]  # nothing made next to it


# --- arguments -------------------------------------------------------------------------

BAD_TIMES = [
    (float("nan"), ValueError, "NaN"),
    (math.inf, ValueError, "finite"),
    (0, ValueError, "more than zero"),
    (-1, ValueError, "more than zero"),
    ("5", TypeError, "number of seconds"),
]


@pytest.mark.parametrize(("value", "kind", "words"), BAD_TIMES)
def test_times_are_checked_before_anything_starts(value: Any, kind: type, words: str) -> None:
    # No host is made (on=None would start a local context only when used).
    with pytest.raises(kind, match="timeout.*%s" % words):
        TarantoolInstance(listen=3301, timeout=value)
    with pytest.raises(kind, match="timeout.*%s" % words):
        ReplicaSet("rs", members=[(None, 3301)], timeout=value)
    with pytest.raises(kind, match="replication_timeout.*%s" % words):
        ReplicaSet("rs", members=[(None, 3301)], replication_timeout=value)
    # Calls: refused before the "not started" check, so before any host is asked.
    one = TarantoolInstance(listen=3301)
    for call in (
        lambda: one.eval("return 1", timeout=value),
        lambda: one.call("box.info", timeout=value),
        lambda: one.info(timeout=value),
        lambda: ReplicaSet("rs", members=[(None, 3301)]).wait_synced(timeout=value),
    ):
        with pytest.raises(kind, match="timeout.*%s" % words):
            call()


def test_none_times_keep_their_defaults() -> None:
    rs = ReplicaSet("rs", members=[(None, 3301)], replication_timeout=None, timeout=5)
    assert rs.replication_timeout is None and rs.timeout == 5.0
    assert rs.members[0].timeout == 5.0


@pytest.mark.parametrize("listen", [65536, -1, "127.0.0.1:70000", "127.0.0.1:-5", "host:x"])
def test_ports_out_of_range_are_refused(listen: Any) -> None:
    with pytest.raises(ValueError, match=r"listen.*port"):
        TarantoolInstance(listen=listen)
    with pytest.raises(ValueError, match=r"members\[0\] port.*port"):
        ReplicaSet("rs", members=[(None, listen)])


def test_port_zero_means_any_free_port_only_for_a_single_instance() -> None:
    assert TarantoolInstance(listen=0).listen == 0
    assert TarantoolInstance(listen="127.0.0.1:0").listen == "127.0.0.1:0"
    with pytest.raises(ValueError, match=r"members\[1\] port.*1-65535"):
        ReplicaSet("rs", members=[(None, 3301), (None, 0)])
    with pytest.raises(ValueError, match=r"members\[0\].*fixed TCP port"):
        ReplicaSet("rs", members=[TarantoolInstance(listen="127.0.0.1:0")])
    with pytest.raises(ValueError, match=r"members\[0\].*fixed TCP port"):
        ReplicaSet("rs", members=[TarantoolInstance(listen="/tmp/rx-tt.sock")])
    with pytest.raises(ValueError, match=r"members\[0\] must be a \(host, port\) pair"):
        ReplicaSet("rs", members=[(None, 3301, "extra")])


@pytest.mark.parametrize("value", [1, None, b"bytes", 2.5])
def test_env_values_must_be_strings(value: Any) -> None:
    with pytest.raises(TypeError, match=r"env\['TZ'\] must be a str"):
        TarantoolInstance(listen=3301, env={"TZ": value})
    with pytest.raises(TypeError, match=r"env\['TZ'\] must be a str"):
        ReplicaSet("rs", members=[(None, 3301)], env={"TZ": value})


def test_env_reaches_the_process(master: rx.Master) -> None:
    one = TarantoolInstance(
        on=master.local(), listen="127.0.0.1:0", env={"RX_TEST_VALUE": "42"}, timeout=SET_TIMEOUT
    )
    with one:
        assert one.eval("return os.getenv('RX_TEST_VALUE')") == "42"
