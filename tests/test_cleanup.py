"""Nothing is left behind when the master goes away, however it goes."""

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


def _kill_script(proc) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_master_sigkill_local(master: rx.Master) -> None:
    proc, info = spawn_master_script(None, "local")
    try:
        assert len(run_pids(info["run_id"])) >= 6
        os.kill(proc.pid, signal.SIGKILL)
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
        assert all(_marked_on(h, run_id) for h in checkers), "every host runs processes"
        os.kill(proc.pid, signal.SIGKILL)
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
        assert len(run_pids(m.run_id)) == 3
        os.kill(host.transport_pid, signal.SIGKILL)
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
        assert run_pids(m.run_id)
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
        assert run_pids(info["run_id"])
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert "CLOSED lost=None" in out, out
        assert proc.returncode == 0
        assert not run_pids(info["run_id"])
    finally:
        _kill_script(proc)
