"""Nothing is left behind when the master goes away, however it goes.

Every wait here is on the condition itself, bounded; a signal meant for one
phase (everything running, a call in flight) is sent only once that phase is
seen, and the test checks it landed there (the process died of it).
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from conftest import HELPER, PY, connect_options, run_pids, spawn_master_script, wait_until

import remoteexec as rx
from remoteexec.target import procs


def _marked_on(host: rx.Host, run_id: str) -> list:
    """Pids of ``run_id`` as seen from ``host`` (another master's context)."""
    return host.call(procs.pids_with_marker, "REMOTEEXEC_RUN", None, run_id)


#: Processes each host of master_script.py runs: an http server, a
#: daemonized child, a tree of 4, and a Host.run in flight.
SCRIPT_PIDS_PER_HOST = 7
#: Bound for things that take milliseconds when the machine is idle.
SETTLE = 15.0


def _kill_script(proc) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def _sigkill_master(proc) -> None:
    """SIGKILL the master script and check it died of it, not before."""
    assert proc.poll() is None, "the master script exited before it was killed"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL


def test_master_sigkill_local(master: rx.Master) -> None:
    proc, info = spawn_master_script(None, "local")
    try:
        run_id = info["run_id"]
        assert wait_until(lambda: len(run_pids(run_id)) >= SCRIPT_PIDS_PER_HOST, SETTLE), run_pids(
            run_id
        )
        _sigkill_master(proc)
        checker = master.local()
        assert wait_until(lambda: not _marked_on(checker, info["run_id"]), 3.0), run_pids(
            info["run_id"]
        )
    finally:
        _kill_script(proc)


@pytest.mark.lab
def test_master_sigkill_lab(lab, master: rx.Master) -> None:
    proc, info = spawn_master_script(lab, "lab")
    try:
        run_id = info["run_id"]
        checkers = master.connect_all(lab.targets, **connect_options(lab))
        assert wait_until(
            lambda: all(len(_marked_on(h, run_id)) >= SCRIPT_PIDS_PER_HOST for h in checkers),
            SETTLE,
        ), "every host runs all its processes"
        _sigkill_master(proc)
        for host in checkers:
            assert wait_until(lambda h=host: not _marked_on(h, run_id), 3.0), host.name
        assert wait_until(lambda: not any(procs.is_alive(p) for p in info["context_pids"]), 3.0)
    finally:
        _kill_script(proc)


@pytest.mark.lab
def test_ssh_client_killed(lab) -> None:
    with rx.Master(heartbeat_timeout=5) as m:
        host = m.connect(lab.targets[1], **connect_options(lab))
        ex = rx.OutputExecutor(
            [PY, HELPER, "children", "2"], banner="tree ready", on=host, timeout=10
        )
        ex.start()
        assert wait_until(lambda: len(run_pids(m.run_id)) == 3, SETTLE), run_pids(m.run_id)
        assert host.lost is None
        transport = host.transport_pid
        os.kill(transport, signal.SIGKILL)
        assert wait_until(lambda: not procs.is_alive(transport), 3.0), "the ssh client died of it"
        assert wait_until(lambda: not run_pids(m.run_id), 3.0), run_pids(m.run_id)
        assert wait_until(lambda: host.lost is not None, 3.0)
        started = time.monotonic()
        with pytest.raises(rx.HostLost) as info:
            host.run(["true"])
        assert time.monotonic() - started < 0.5, "a lost host fails at once"
        assert host.name in str(info.value)


@pytest.mark.lab
def test_silent_partition(lab) -> None:
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
        assert wait_until(lambda: run_pids(m.run_id), SETTLE)
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
                lambda: not run_pids(m.run_id), heartbeat + 3 - (time.monotonic() - cut)
            )
            assert wait_until(lambda: not procs.is_alive(context_pid), 2.0), "the context exits too"
        finally:
            lab.heal()
        with pytest.raises(rx.HostLost):
            ex.running()


@pytest.mark.lab
def test_ctrl_c_unwinds_and_cleans_up(lab) -> None:
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
