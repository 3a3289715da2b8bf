"""Nothing is left behind when the master goes away, however it goes.

Every wait here is on the condition itself, bounded; a signal meant for one
phase (everything running, a call in flight) is sent only once that phase is
seen, and the test checks it landed there (the process died of it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any, List

import pytest
from conftest import (
    HELPER,
    PY,
    connect_options,
    context_pids,
    run_pids,
    spawn_master_script,
    wait_until,
)
from helpers import oracle

import remoteexec as rx


def _netns(pid: int) -> str:
    """The network namespace of ``pid`` ('' once it is gone): which lab host
    a process runs on, as lab hosts share this machine's pid space."""
    try:
        return os.readlink("/proc/%d/ns/net" % pid)
    except OSError:
        return ""


def _on_host(run_id: str, contexts: List[int], context_pid: int) -> List[int]:
    """Live pids of ``run_id`` (by the tests' /proc oracle) on the host whose
    context is ``context_pid``: in its network namespace."""
    where = _netns(context_pid)
    return [p for p in run_pids(run_id, contexts) if where and _netns(p) == where]


def _alive(pid: int) -> bool:
    return oracle.identity(pid) is not None


#: Processes each host of master_script.py runs: an http server, a
#: daemonized child, a tree of 4, and a Host.run in flight.
SCRIPT_PIDS_PER_HOST = 7
#: Bound for things that take milliseconds when the machine is idle.
SETTLE = 15.0
#: "At once" for a call to a host already known lost: milliseconds when
#: idle, against the heartbeat_timeout (5 s here) it would otherwise wait.
AT_ONCE = 2.0


def _kill_script(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def _sigkill_master(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the master script and check it died of it, not before."""
    assert proc.poll() is None, "the master script exited before it was killed"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL


@pytest.mark.parametrize("kind", ["local", pytest.param("lab", marks=pytest.mark.lab)])
def test_master_sigkill(request: pytest.FixtureRequest, kind: str) -> None:
    lab = request.getfixturevalue("lab") if kind == "lab" else None
    proc, info = spawn_master_script(lab, kind)
    try:
        run_id, contexts = info["run_id"], info["context_pids"]
        hosts = len(lab.targets) if lab is not None else 1
        assert len({_netns(c) for c in contexts}) == hosts, "one context per host"
        assert wait_until(
            lambda: all(
                len(_on_host(run_id, contexts, c)) >= SCRIPT_PIDS_PER_HOST for c in contexts
            ),
            SETTLE,
        ), "every host runs all its processes: %s" % oracle.describe(run_pids(run_id, contexts))
        _sigkill_master(proc)
        assert wait_until(lambda: not run_pids(run_id, contexts), SETTLE), oracle.describe(
            run_pids(run_id, contexts)
        )
        assert wait_until(lambda: not any(_alive(p) for p in contexts), SETTLE)
    finally:
        _kill_script(proc)


@pytest.mark.lab
def test_ssh_client_killed(lab: Any) -> None:
    with rx.Master(heartbeat_timeout=5) as m:
        host = m.connect(lab.targets[1], **connect_options(lab))
        ex = rx.OutputExecutor(
            [PY, HELPER, "children", "2"], banner="tree ready", on=host, timeout=10
        )
        ex.start()
        contexts = context_pids(m)
        assert wait_until(lambda: len(run_pids(m.run_id, contexts)) == 3, SETTLE), run_pids(
            m.run_id, contexts
        )
        assert host.lost is None
        transport = host.transport_pid
        os.kill(transport, signal.SIGKILL)
        assert wait_until(lambda: not _alive(transport), SETTLE), "the ssh client died of it"
        assert wait_until(lambda: not run_pids(m.run_id, contexts), SETTLE), oracle.describe(
            run_pids(m.run_id, contexts)
        )
        assert wait_until(lambda: host.lost is not None, SETTLE)
        started = time.monotonic()
        with pytest.raises(rx.HostLost) as info:
            host.run(["true"])
        assert time.monotonic() - started < AT_ONCE, "a lost host fails at once"
        assert host.name in str(info.value)


@pytest.mark.lab
def test_silent_partition(lab: Any) -> None:
    heartbeat = 3.0
    with rx.Master(heartbeat_timeout=heartbeat) as m:
        host = m.connect(lab.targets[2], **connect_options(lab))
        ex = rx.TCPExecutor(
            [PY, HELPER, "daemon", "127.0.0.1", "18090"],
            host="127.0.0.1",
            port=18090,
            on=host,
            timeout=10,
        )
        ex.start()
        context_pid = host.info["pid"]
        contexts = context_pids(m)
        assert wait_until(lambda: run_pids(m.run_id, contexts), SETTLE)
        assert host.lost is None, "not lost before the partition"
        lab.partition(lab.hosts[2])
        try:
            cut = time.monotonic()
            # A call in flight when the link goes silent ends with HostLost too.
            with pytest.raises(rx.HostLost) as info:
                host.call(time.sleep, 30)
            assert time.monotonic() - cut < heartbeat + 3
            assert "heartbeat" in str(info.value)
            # Seen from this machine (lab hosts share its pid space).
            assert wait_until(
                lambda: not run_pids(m.run_id, contexts), heartbeat + 3 - (time.monotonic() - cut)
            ), oracle.describe(run_pids(m.run_id, contexts))
            assert wait_until(lambda: not _alive(context_pid), 2.0), "the context exits too"
        finally:
            lab.heal()
        with pytest.raises(rx.HostLost):
            ex.running()


@pytest.mark.lab
def test_ctrl_c_unwinds_and_cleans_up(lab: Any) -> None:
    """SIGINT to the script's process group: the ssh clients are in their
    own group, so Master.__exit__ still reaches the host and cleans up."""
    proc, info = spawn_master_script(lab, None, script="interrupted_master.py")
    try:
        run_id = info["run_id"]
        # The phase: the script sleeps inside ``with Master()``, its sleep runs.
        assert wait_until(lambda: run_pids(run_id) or proc.poll() is not None, SETTLE)
        assert proc.poll() is None, "the script exited before the SIGINT"
        assert run_pids(run_id), "its process runs on the host"
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        # It landed there: KeyboardInterrupt unwound through __exit__ while
        # the host was still reachable.
        assert "CLOSED lost=None" in out, out
        assert proc.returncode == 0
        assert wait_until(lambda: not run_pids(run_id), SETTLE), run_pids(run_id)
    finally:
        _kill_script(proc)
