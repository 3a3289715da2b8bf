"""Tarantool instances and replica sets on real lab hosts, asynctnt as the client.

Every member runs on its own namespaced sshd host; the master (this process)
reaches the members' lab addresses over the bridge, as a client would. The
lab and the masters clean up after every test, also on failure; tarantool
rewrites its process title and environment, so leftovers are found by their
executable and working directory (inside the run's directory), never by
command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any, Dict, Iterator, List, cast

import asynctnt
import pytest
from conftest import connect_options, wait_until

import remoteexec as rx
from remoteexec.lab import free_port
from remoteexec.tarantool import ReplicaSet, TarantoolError, TarantoolInstance

pytestmark = pytest.mark.lab
pytest_plugins = ["helpers.fixtures"]

SCHEMA = """
box.schema.user.grant('guest', 'read,write', 'universe', nil, {if_not_exists = true})
box.schema.space.create('test', {if_not_exists = true})
box.space.test:create_index('pk', {if_not_exists = true})
"""
PASSWORD = "S3cr3t-pa55word!"
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers", "tarantool_master.py")
_ports = itertools.count(3310)
#: Time asserts compare against the bound the call is configured with, plus
#: this allowance for a loaded 2-core machine (other suites run at the same
#: time): threads and processes scheduled late, ssh round trips slowed.
LOAD_MARGIN = 1.5
#: The README: calls to a hung host end within their own timeout plus 2 s.
CALL_SLACK = 2.0
#: collect_artifacts reads each file with this reply timeout, then skips the
#: rest of a silent member's files.
ARTIFACT_READ_TIMEOUT = 5.0


def run_tarantools(run_id: str) -> List[int]:
    """Live tarantool pids of a run: lab hosts share this machine's /proc.

    Identified by executable and by working directory (the run's directory),
    since tarantool overwrites its title and environment block.
    """
    return sorted(run_tarantool_netns(run_id))


def run_tarantool_netns(run_id: str) -> Dict[int, str]:
    """Live tarantool pids of a run -> the inode of their network namespace,
    which says on which lab host each runs (see :func:`netns_inode`)."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            exe = os.readlink("/proc/%s/exe" % name)
            cwd = os.readlink("/proc/%s/cwd" % name)
            netns = os.readlink("/proc/%s/ns/net" % name)
        except OSError:
            continue
        if os.path.basename(exe).startswith("tarantool") and "/%s-" % run_id in cwd:
            found[int(name)] = netns
    return found


def netns_inode(lab_host: Any) -> str:
    """What /proc/PID/ns/net reads for a process on ``lab_host``."""
    return "net:[%d]" % os.stat("/run/netns/%s" % lab_host.netns).st_ino


def client(uri: str, request: str, *args: Any) -> List[List[Any]]:
    """One asynctnt request (``select``, ``insert``, ``eval``...) from the master."""

    async def go() -> List[List[Any]]:
        host, port = uri.rsplit(":", 1)
        conn = asynctnt.Connection(host=host, port=int(port), connect_timeout=3, request_timeout=5)
        await conn.connect()
        try:
            response = await getattr(conn, request)(*args)
            return [list(row) if hasattr(row, "__iter__") else row for row in response]
        finally:
            await conn.disconnect()

    return asyncio.run(go())


def status_rows(rs: ReplicaSet) -> List[Dict[str, Any]]:
    """``rs.status()["members"]``: services.py types them as ServiceStatus, but
    each row holds a member's fields (member, ro, upstream, downstream...)."""
    return cast(List[Dict[str, Any]], rs.status()["members"])


def pid_of(member: TarantoolInstance) -> int:
    """The pid of a member that runs (a test error if it does not)."""
    assert member.pid is not None, "%s does not run" % member.name
    return member.pid


def follows(row: Dict[str, Any], peers: int) -> bool:
    links = list(row["upstream"].values()) + list(row["downstream"].values())
    return len(links) == 2 * peers and all(link["status"] == "follow" for link in links)


def stop_cleanly(rs: ReplicaSet, run_id: str) -> None:
    """``rs.stop()`` raises nothing, and this test's own /proc oracle finds no
    tarantool of the run left on any host (the tests that use a set run one
    at a time, and single instances are stopped by their own tests)."""
    rs.stop()
    assert all(m.pid is None for m in rs.members), rs.members
    assert run_tarantools(run_id) == [], "left running after stop(): %s" % run_tarantools(run_id)


@pytest.fixture
def make_set(hosts: List[rx.Host], tt_master: rx.Master) -> Iterator[Any]:
    made: List[ReplicaSet] = []

    def make(as_instances: bool = False, app_lua: str = "", **kwargs: Any) -> ReplicaSet:
        port = next(_ports)
        kwargs.setdefault("replication_timeout", 0.1)
        kwargs.setdefault("timeout", 10)
        members: List[Any] = [(h, port) for h in hosts]
        if as_instances:
            members = [
                TarantoolInstance(on=h, listen=port, timeout=10, app_lua=app_lua) for h in hosts
            ]
        rs = ReplicaSet("rs%d" % port, members=members, **kwargs)
        made.append(rs)
        return rs

    yield make
    # After the test, passed or failed: every set it made is stopped and this
    # test's own oracle checks that nothing is left (stop_cleanly); an error
    # here is the test's error, never swallowed.
    for rs in made:
        stop_cleanly(rs, tt_master.run_id)


@contextlib.contextmanager
def paused(rs: ReplicaSet, member: TarantoolInstance) -> Iterator[float]:
    """``member`` paused through the set for the block (yields when), resumed after."""
    rs.pause(member)
    at = time.monotonic()
    try:
        yield at
    finally:
        rs.resume(member)


@pytest.fixture
def running_set(make_set: Any) -> ReplicaSet:
    rs: ReplicaSet = make_set()
    rs.start()
    rs.leader.eval(SCHEMA)
    return rs


# 1
def test_full_mesh_across_three_hosts(make_set: Any, lab: Any) -> None:
    rs = make_set()
    timings = rs.start()
    assert set(timings) >= {"spawn", "running", "full_mesh"}
    # Speed is measured by bench/bench_replicaset.py; here: within its bound.
    print("\nfull mesh: %s" % {k: round(v, 3) for k, v in timings.items()})
    assert timings["total"] <= rs.timeout, timings
    assert [m.uri.rsplit(":", 1)[0] for m in rs.members] == [h.address for h in lab.hosts]
    assert rs.leader is rs.members[0] and rs.replicas == rs.members[1:]
    rows = status_rows(rs)
    assert [r["ro"] for r in rows] == [False, True, True]
    assert sorted(r["id"] for r in rows) == [1, 2, 3]
    assert all(r["status"] == "running" and follows(r, 2) for r in rows), rows
    assert rs.leader.version >= (2, 0, 0)
    assert len({m.pid for m in rs.members}) == 3


# 2
def test_insert_on_leader_read_on_replicas_with_asynctnt(running_set: ReplicaSet) -> None:
    rs = running_set
    assert client(rs.leader.uri, "insert", "test", [1, "x"]) == [[1, "x"]]
    rs.wait_synced(timeout=5)
    for replica in rs.replicas:
        assert client(replica.uri, "select", "test", [1]) == [[1, "x"]], replica.name


# 3
def test_killed_replica_restarts_and_catches_up(running_set: ReplicaSet) -> None:
    rs = running_set
    victim = rs.replicas[0]
    old_pid = victim.pid
    rs.kill(victim)
    assert victim.pid is None
    rs.leader.eval("for i = 1, 100 do box.space.test:insert{i, 'row'} end")
    rs.restart(victim)
    assert pid_of(victim) != old_pid
    rs.wait_synced(timeout=5)
    assert len(client(victim.uri, "select", "test", [])) == 100
    row = next(r for r in status_rows(rs) if r["member"] == victim.name)
    assert row["ro"] is True and follows(row, 2), row


# 4
def test_paused_replica_shows_in_status_and_recovers(running_set: ReplicaSet) -> None:
    rs = running_set
    leader, victim = rs.leader, rs.replicas[1]

    def leader_sees_it() -> bool:
        row = next(r for r in status_rows(rs) if r["member"] == leader.name)
        return bool(row["downstream"].get(victim.name, {}).get("status") != "follow")

    with paused(rs, victim) as since:
        assert wait_until(leader_sees_it, 1.0, interval=0.02), status_rows(rs)
        print(
            "\nleader's downstream left 'follow' %.0f ms after SIGSTOP"
            % ((time.monotonic() - since) * 1000)
        )
        assert next(r for r in status_rows(rs) if r["member"] == victim.name)["status"] == "paused"
    rows = status_rows(rs)
    assert all(follows(r, 2) for r in rows), rows
    leader.eval("box.space.test:insert{7, 'after'}")
    rs.wait_synced(timeout=5)
    assert client(victim.uri, "select", "test", [7]) == [[7, "after"]]


# 5
def test_switchover(running_set: ReplicaSet) -> None:
    rs = running_set
    old, new = rs.leader, rs.replicas[0]
    rs.switchover(new)
    assert rs.leader is new and old in rs.replicas
    assert old.eval("return box.info.ro") is True
    assert new.eval("return box.info.ro") is False
    with pytest.raises(asynctnt.exceptions.TarantoolDatabaseError, match="read-only"):
        client(old.uri, "insert", "test", [1, "old"])
    assert client(new.uri, "insert", "test", [1, "new"]) == [[1, "new"]]
    rs.wait_synced(timeout=5)
    for replica in rs.replicas:
        assert client(replica.uri, "select", "test", [1]) == [[1, "new"]], replica.name
    rows = status_rows(rs)
    assert [r["ro"] for r in rows] == [m is not new for m in rs.members]
    assert all(follows(r, 2) for r in rows), rows


# 6
def test_bad_box_cfg_key_fails_fast_with_tarantools_message(
    hosts: List[rx.Host], lab: Any, tt_master: rx.Master, make_set: Any
) -> None:
    message = "Incorrect value for option 'no_such_option': unexpected option"
    bad = TarantoolInstance(
        on=hosts[0],
        listen="%s:%d" % (lab.hosts[0].address, next(_ports)),
        box_cfg={"no_such_option": 1},
        timeout=10,
    )
    started = time.monotonic()
    with pytest.raises(TarantoolError) as info:
        bad.start()
    took = time.monotonic() - started
    print("\nbad box.cfg key: error after %.0f ms" % (took * 1000))
    # An early exit fails at once, not at the timeout: well under half of it.
    assert took < bad.timeout / 2, took
    assert message in str(info.value) and info.value.exit_code == 1
    assert info.value.details["layer"] == "alive" and bad.pid is None
    rs = make_set(box_cfg={"no_such_option": 1})
    started = time.monotonic()
    with pytest.raises(TarantoolError, match=message) as info:
        rs.start()
    assert time.monotonic() - started < rs.timeout / 2 and info.value.message.startswith(rs.name)
    assert run_tarantools(tt_master.run_id) == []


# 7
def test_busy_port_raises_already_running(hosts: List[rx.Host], lab: Any) -> None:
    listen = "%s:%d" % (lab.hosts[1].address, next(_ports))
    first = TarantoolInstance(on=hosts[1], listen=listen, app_lua=SCHEMA, timeout=10)
    second = TarantoolInstance(on=hosts[1], listen=listen, timeout=10)
    with first:
        with pytest.raises(rx.AlreadyRunning) as info:
            second.start()
        assert info.value.details.get("owner_pid") == first.pid
        assert second.pid is None
        assert first.eval("return box.info.status") == "running"


def test_single_instance_api(hosts: List[rx.Host], lab: Any) -> None:
    one = TarantoolInstance(
        on=hosts[2],
        listen="%s:0" % lab.hosts[2].address,
        app_lua=SCHEMA,
        box_cfg={"memtx_memory": 32 << 20},
        timeout=10,
    )
    one.start()
    try:
        host, port = one.uri.rsplit(":", 1)
        assert host == lab.hosts[2].address and int(port) > 0
        assert one.eval("return box.info.pid") == one.pid
        assert one.eval("return ...", 1, "two", [3]) == (1, "two", [3])
        assert one.eval("return") is None
        assert one.call("box.space.test:insert", [1, "x"]) == [1, "x"]
        assert one.call("box.space.test:select", [1]) == [[1, "x"]]
        assert one.eval("return box.cfg.memtx_memory") == 32 << 20
        with pytest.raises(TarantoolError) as info:
            one.eval("error('boom')")
        assert info.value.details["lua_message"] == "probe:1: boom"
        assert "ready to accept requests" in one.log_tail(100)
        pid, uri = one.pid, one.uri
        one.restart()
        assert one.pid != pid and one.call("box.space.test:get", [1]) == [1, "x"]
        assert one.uri == uri  # port 0 was resolved once: a restart keeps the port
        one.kill()
        one.start()
        assert one.uri == uri
    finally:
        one.stop()
    assert one.pid is None


# 8
def test_unreachable_member_fails_in_time_and_leaves_nothing(
    make_set: Any, lab: Any, tt_master: rx.Master
) -> None:
    rs = make_set(timeout=3)
    lost = rs.members[2]
    lab.partition(2, 0)
    lab.partition(2, 1)
    try:
        started = time.monotonic()
        with pytest.raises(rx.TimeoutExpired) as info:
            rs.start()
        took = time.monotonic() - started
    finally:
        lab.heal()
    print("\nunreachable member: %.2f s\n%s" % (took, info.value))
    assert took < rs.timeout + LOAD_MARGIN, took
    text = str(info.value)
    assert "%s unreachable" % lost.name in text
    assert "upstream %s: cannot connect to %s" % (lost.name, lost.uri) in text
    assert info.value.details["unreachable"] == [lost.name]
    assert all(m.pid is None for m in rs.members)
    assert run_tarantools(tt_master.run_id) == []


# 9
def test_master_sigkill_leaves_no_tarantool(lab: Any) -> None:
    args = [SCRIPT, json.dumps(connect_options(lab)), json.dumps(lab.targets), str(next(_ports))]
    proc = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out = proc.stdout
        assert out is not None
        ready, _, _ = select.select([out], [], [], 30)
        line = out.readline() if ready else ""
        assert line.startswith("READY "), line
        info = json.loads(line[len("READY ") :])
        assert sorted(run_tarantools(info["run_id"])) == sorted(info["pids"])
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        assert wait_until(lambda: not run_tarantools(info["run_id"]), 5.0), run_tarantools(
            info["run_id"]
        )
        print("\nmaster SIGKILL: every tarantool gone after %.2f s" % (time.monotonic() - killed))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


# 10
def test_collect_artifacts(make_set: Any, tmp_path: Any) -> None:
    rs = make_set(as_instances=True, user="repl", password=PASSWORD)
    rs.start()
    rs.leader.eval(SCHEMA + "box.space.test:insert{1, 'x'}")
    rs.wait_synced(timeout=5)
    dest = str(tmp_path / "artifacts")
    written = rs.collect_artifacts(dest)
    for member in rs.members:
        files = sorted(os.listdir(os.path.join(dest, member.name)))
        assert files == ["box_info.json", "init.lua", "output.log", "tarantool.log"], files
        with open(os.path.join(dest, member.name, "box_info.json")) as f:
            dump = json.load(f)
        assert dump["box_info"]["uuid"] == member.instance_uuid
        with open(os.path.join(dest, member.name, "tarantool.log")) as f:
            assert "ready to accept requests" in f.read()
    for path in written:
        assert os.stat(path).st_mode & 0o777 == 0o600, path
        with open(path, "rb") as f:
            assert PASSWORD.encode() not in f.read(), path
    assert PASSWORD not in repr(rs) + repr(rs.members) + repr(rs.status())
    assert repr(rs.leader.password) == "[secret]"


def test_start_waits_for_a_slow_app_lua(hosts: List[rx.Host], lab: Any) -> None:
    # box.cfg ends (STATUS=running) long before READY=1: start() must wait for the app.
    slow = TarantoolInstance(
        on=hosts[0],
        listen="%s:%d" % (lab.hosts[0].address, next(_ports)),
        app_lua="require('fiber').sleep(1.5)\n" + SCHEMA,
        timeout=10,
    )
    started = time.monotonic()
    slow.start()
    try:
        assert time.monotonic() - started >= 1.5
        assert slow.call("box.space.test:select", []) == []
    finally:
        slow.stop()


@pytest.mark.usefixtures("hosts")
def test_second_start_leaves_the_running_set_alone(running_set: ReplicaSet) -> None:
    rs = running_set
    pids = [m.pid for m in rs.members]
    assert rs.start() == {}  # every member runs: nothing to do, as TarantoolInstance.start()
    assert [m.pid for m in rs.members] == pids
    rs.leader.eval("box.space.test:insert{1, 'still here'}")
    rs.kill(rs.replicas[1])
    with pytest.raises(TarantoolError, match="partly running.*%s" % rs.replicas[1].name):
        rs.start()
    assert [m.pid for m in rs.members[:2]] == pids[:2]
    assert rs.leader.call("box.space.test:get", [1]) == [1, "still here"]
    rs.restart(rs.replicas[1])
    with pytest.raises(ValueError, match="already started"):
        ReplicaSet("again", members=rs.members)


def test_failed_switchover_keeps_the_old_leader_writable(running_set: ReplicaSet) -> None:
    rs = running_set
    old, target = rs.leader, rs.replicas[0]
    with paused(rs, target) as started:
        with pytest.raises(TarantoolError, match="%s.*paused" % target.name):
            rs.switchover(target)
        # Checked before anything changes: refused at once, far from the timeout.
        assert time.monotonic() - started < rs.timeout / 2
    assert rs.leader is old and old.eval("return box.info.ro") is False
    # A failure after the old leader turned read-only: the target hangs unnoticed.
    rs.timeout = 2.0
    os.kill(pid_of(target), signal.SIGSTOP)  # behind the set's back: not marked paused
    try:
        started = time.monotonic()
        with pytest.raises(rx.RemoteExecError, match=target.name):
            rs.switchover(target)
        took = time.monotonic() - started
    finally:
        os.kill(pid_of(target), signal.SIGCONT)
    print("\nfailed switchover: %.2f s" % took)
    assert took < rs.timeout + LOAD_MARGIN, took
    assert rs.leader is old and old.eval("return box.info.ro") is False
    assert old.call("box.space.test:insert", [1, "x"]) == [1, "x"]


def test_wait_synced_skips_a_paused_replica(running_set: ReplicaSet) -> None:
    rs = running_set
    hung, other = rs.replicas[1], rs.replicas[0]
    with paused(rs, hung):
        rs.leader.eval("box.space.test:insert{1, 'x'}")
        started = time.monotonic()
        rs.wait_synced(timeout=3)
        # Waiting for the paused one would take the whole 3 s timeout.
        assert time.monotonic() - started < 3 / 2
        assert other.call("box.space.test:get", [1]) == [1, "x"]
    rs.wait_synced(timeout=3)
    assert hung.call("box.space.test:get", [1]) == [1, "x"]
    with (
        paused(rs, rs.leader),
        pytest.raises(TarantoolError, match="%s is paused" % rs.leader.name),
    ):
        rs.wait_synced(timeout=3)


def test_stop_reports_a_member_that_had_to_be_killed(
    running_set: ReplicaSet, tt_master: rx.Master
) -> None:
    rs = running_set
    hung = rs.replicas[0]
    hung.timeout = 1.0  # its stop timeout: SIGKILL after 1 s
    # Deaf to SIGTERM behind the set's back (a stop continues a paused
    # process, so SIGSTOP would not do): only the SIGKILL ends it.
    hung.eval(
        "local ffi = require('ffi')"
        " ffi.cdef('void (*signal(int, void (*)(int)))(int);')"
        " ffi.C.signal(15, ffi.cast('void (*)(int)', 1))"
    )
    started = time.monotonic()
    with pytest.raises(rx.TimeoutExpired) as info:
        rs.stop()
    took = time.monotonic() - started
    print("\nescalated stop: %.2f s\n%s" % (took, info.value))
    assert hung.name in str(info.value).splitlines()[0] and info.value.details["escalated"]
    assert took < hung.timeout + 2
    # Every member was stopped all the same: the others cleanly, the hung one killed.
    assert all(m.pid is None for m in rs.members)
    assert run_tarantools(tt_master.run_id) == []


def test_start_is_bounded_even_by_a_hanging_binary(master: rx.Master, tmp_path: Any) -> None:
    # `tarantool --version` that never answers: the version check must fit the timeout.
    hang = tmp_path / "tarantool"
    hang.write_text("#!/bin/sh\nexec sleep 30\n")
    hang.chmod(0o755)
    one = TarantoolInstance(
        on=master.local(), listen="127.0.0.1:%d" % free_port(), tarantool=str(hang), timeout=1
    )
    started = time.monotonic()
    with pytest.raises(rx.RemoteExecError):
        one.start()
    took = time.monotonic() - started
    print("\nhanging --version: start() failed after %.2f s" % took)
    assert took < one.timeout + CALL_SLACK + LOAD_MARGIN and one.pid is None, took


def test_collect_artifacts_survives_a_member_that_fails(master: rx.Master, tmp_path: Any) -> None:
    rs = ReplicaSet("arts", members=[(master.local(), free_port())], timeout=10)
    rs.start()
    member = rs.members[0]
    rs.stop()
    # Its log is now a directory: reading it fails on the host.
    log = member.artifact_paths()["tarantool.log"]
    os.rename(log, log + ".old")
    os.mkdir(log)
    dest = str(tmp_path / "artifacts")
    written = rs.collect_artifacts(dest)
    files = sorted(os.listdir(os.path.join(dest, member.name)))
    assert files == ["box_info.json", "init.lua", "output.log"], files
    with open(os.path.join(dest, member.name, "box_info.json")) as f:
        dump = json.load(f)
    assert list(dump["errors"]) == ["tarantool.log"] and dump["errors"]["tarantool.log"]
    assert len(written) == 3


def test_ctrl_c_during_start_kills_the_set(hosts: List[rx.Host], tt_master: rx.Master) -> None:
    import threading

    port = next(_ports)
    members = [
        TarantoolInstance(on=h, listen=port, app_lua="require('fiber').sleep(2)", timeout=10)
        for h in hosts
    ]
    rs = ReplicaSet("rs%d" % port, members=members, timeout=10)
    # SIGINT while start() waits for the (slow) apps: the wait phase.
    timer = threading.Timer(0.7, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            rs.start()
    finally:
        timer.cancel()
        timer.join()
    assert all(m.pid is None for m in rs.members)
    assert wait_until(lambda: run_tarantools(tt_master.run_id) == [], 2.0), run_tarantools(
        tt_master.run_id
    )


def test_ipv6_listen_gives_a_bracketed_uri(master: rx.Master) -> None:
    one = TarantoolInstance(on=master.local(), listen="[::1]:0", timeout=10)
    with one:
        host, port = one.uri.rsplit(":", 1)
        assert host == "[::1]" and int(port) > 0, one.uri
        assert one.eval("return box.info.status") == "running"
        uri = one.uri
        one.restart()
        assert one.uri == uri


def test_exit_with_an_exception_keeps_it(make_set: Any) -> None:
    rs = make_set()

    def fail_inside() -> None:
        with rs:
            # Stop will fail for this member (it dies outside our control)...
            os.kill(pid_of(rs.replicas[0]), signal.SIGKILL)
            assert wait_until(lambda: status_rows(rs)[1]["status"] == "unreachable", 3)
            # ...and must not replace the error that is already on its way.
            raise ValueError("the test's own error")

    with pytest.raises(ValueError, match="the test's own error"):
        fail_inside()
    assert all(m.pid is None for m in rs.members)


def test_restart_while_another_member_is_down(running_set: ReplicaSet) -> None:
    rs = running_set
    first, second = rs.replicas
    rs.kill(second)
    rs.leader.eval("box.space.test:insert{1, 'x'}")
    started = time.monotonic()
    rs.restart(first)  # its peer `second` is down: it must not wait for it
    print("\nrestart with a peer down: %.2f s" % (time.monotonic() - started))
    assert first.eval("return box.info.status") == "running"
    rs.wait_synced(timeout=5)
    assert first.call("box.space.test:get", [1]) == [1, "x"]
    rs.restart(second)
    # restart() waits for the member's own links; a peer's upstream to it may
    # still be 'sync' (catching up) for a moment: bounded wait for the rest.
    assert wait_until(lambda: all(follows(r, 2) for r in status_rows(rs)), 2), status_rows(rs)


def test_restart_with_a_quorum_that_counts_a_down_peer_says_so(make_set: Any) -> None:
    rs = make_set(box_cfg={"replication_connect_quorum": 3})
    rs.start()
    first, second = rs.replicas
    rs.kill(second)
    first.timeout = 2
    with pytest.raises(rx.TimeoutExpired) as info:
        rs.restart(first)
    text = str(info.value)
    assert "%s down while restarting %s" % (second.name, first.name) in text, text
    assert "orphan" in text and first.pid is None


def test_resume_while_another_member_is_down(running_set: ReplicaSet) -> None:
    rs = running_set
    hung, dead = rs.replicas
    rs.timeout = 3
    rs.kill(dead)
    rs.pause(hung)
    started = time.monotonic()
    rs.resume(hung)  # its peer `dead` is down: it must not wait for it
    took = time.monotonic() - started
    print("\nresume with a peer down: %.2f s" % took)
    # Waiting for the dead peer would last the whole timeout.
    assert took < rs.timeout, took
    assert not hung.paused and hung.eval("return box.info.status") == "running"
    rs.pause(hung)
    with paused(rs, rs.leader):
        rs.resume(hung)  # a paused peer is not waited for either
    rs.restart(dead)
    # restart() waits for the member's own links; a peer's upstream to it may
    # still be 'sync' (catching up) for a moment: bounded wait for the rest.
    assert wait_until(lambda: all(follows(r, 2) for r in status_rows(rs)), 2), status_rows(rs)


@contextlib.contextmanager
def _hung(host: rx.Host) -> Iterator[None]:
    """The host's context stops answering (SIGSTOP), as on a hung host."""
    pid = host.transport_pid
    assert pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_calls_to_a_hung_host_are_bounded_by_their_timeout(tmp_path: Any) -> None:
    # A heartbeat far longer than the test: the host is hung, never declared lost.
    with rx.Master(heartbeat_timeout=120) as m:
        rs = ReplicaSet("hung", members=[(m.local(), free_port())], timeout=10)
        rs.start()
        one = rs.members[0]
        with _hung(one.on):
            took = {}
            for name, call in (
                ("info", lambda: one.info(timeout=1)),
                ("eval", lambda: one.eval("return 1", timeout=1)),
                ("wait_synced", lambda: rs.wait_synced(timeout=1)),
                ("collect_artifacts", lambda: rs.collect_artifacts(str(tmp_path / "a"))),
            ):
                started = time.monotonic()
                with contextlib.suppress(rx.RemoteExecError):
                    call()
                took[name] = time.monotonic() - started
            print("\ncalls to a hung host: %s" % {k: round(v, 2) for k, v in took.items()})
            bound = 1 + CALL_SLACK + LOAD_MARGIN
            assert all(took[k] < bound for k in ("info", "eval", "wait_synced")), took
            assert took["collect_artifacts"] < ARTIFACT_READ_TIMEOUT + LOAD_MARGIN, took
            with open(tmp_path / "a" / one.name / "box_info.json") as f:
                dump = json.load(f)
            assert dump["errors"], dump
            one.timeout = 1
            started = time.monotonic()
            with pytest.raises(rx.RemoteExecError):
                one.stop()
            took["stop"] = time.monotonic() - started
            assert took["stop"] < one.timeout + CALL_SLACK + LOAD_MARGIN, took


def _timeouts_set(log: str) -> List[str]:
    """The values tarantool logged for ``replication_timeout``, in order."""
    key = "set 'replication_timeout' configuration option to "
    return [line.split(key, 1)[1].strip() for line in log.splitlines() if key in line]


def test_bootstrap_retries_fast_then_runs_the_configured_timeout(make_set: Any) -> None:
    """A set bootstraps with the short retry interval (its members' logs say
    so), the leader's app runs once both replicas follow it, and every member
    runs the configured replication_timeout once start()
    returns; a later restart starts with the configured one, and so does a
    restart on the data with the very init.lua of the first start (what a
    supervisor's restart runs)."""
    # The leader's app runs once both replicas follow it (they joined at one LSN).
    count = (
        "local n = 0 for _, p in pairs(box.info.replication) do "
        "if p.downstream ~= nil and p.downstream.status == 'follow' then n = n + 1 end end "
        "rawset(_G, 'followers_at_app', n)"
    )
    rs = make_set(as_instances=True, app_lua=count, replication_timeout=0.5)
    rs.start()
    assert rs.leader.eval("return followers_at_app") == 2
    for member in rs.members:
        assert member.eval("return box.cfg.replication_timeout") == 0.5, member.name
        logged = _timeouts_set(member.log_tail(400))
        assert logged[:1] == ["0.02"] and logged[-1] == "0.5", (member.name, logged)
    replica = rs.replicas[0]
    rs.restart(replica)
    assert replica.eval("return box.cfg.replication_timeout") == 0.5
    assert _timeouts_set(replica.log_tail(400))[-2:] == ["0.5", "0.5"]
    replica.boot_interval = 0.02  # its init.lua as start() wrote it
    try:
        rs.restart(replica)
    finally:
        replica.boot_interval = None
    assert _timeouts_set(replica.log_tail(400))[-3:] == ["0.5", "0.5", "0.5"]
    assert all(follows(row, 2) for row in status_rows(rs))
