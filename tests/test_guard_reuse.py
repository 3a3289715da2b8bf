"""The guard (remoteexec/target/guard.py) against a reused session id.

A told session whose processes have all died frees its number; the kernel
may give it to an unrelated process that calls setsid, forks and exits. The
guard must not take that process's child for ours when the context dies.

The scenario runs in a pid namespace of its own (``unshare --pid --fork
--mount-proc``, as root), where ``/proc/sys/kernel/ns_last_pid`` picks the
next pid without touching the machine's pids. This file is also the script
run in it (as the namespace's pid 1, so every process left there dies with
it); it prints one ``REPORT <json>`` line.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

#: Bound on each wait of the scenario, and on the whole run (slow machine).
WAIT = 20.0
RUN_FOR = 90.0


# ------------------------------------------------- the scenario (in the namespace)


def _switches(pid: int) -> int:
    """Voluntary context switches of ``pid``: the guard blocks once per loop."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no switch count for %d" % pid)


def _until(check: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.01)


def _after_a_sweep(guard_pid: int, period: float) -> None:
    """Return once the guard has checked its sessions since this call: its
    period passed, then two more blocking waits of its loop (the pass that
    ends in the second one began after the period)."""
    until = time.monotonic() + period
    _until(lambda: time.monotonic() >= until, "the sweep period")
    switches = _switches(guard_pid)
    _until(lambda: _switches(guard_pid) >= switches + 2, "two loops of the guard")


def _session_with_orphan() -> Tuple[int, int, subprocess.Popen[bytes]]:
    """A new session whose leader (a shell) forks a sleep and exits: (sid,
    the sleep's pid, the reaped leader's Popen). The sleep is reparented to
    us, the namespace's init."""
    leader = subprocess.Popen(
        ["sh", "-c", "sleep 60 & echo $!"], start_new_session=True, stdout=subprocess.PIPE
    )
    assert leader.stdout is not None
    member = int(leader.stdout.readline())
    leader.stdout.close()
    leader.wait(WAIT)
    return leader.pid, member, leader


def _unread(fd: int) -> int:
    """Bytes waiting in the pipe of ``fd`` (either end)."""
    import array
    import fcntl
    import termios

    count = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, count)
    return count[0]


def _alive(pid: int) -> bool:
    """Whether our child ``pid`` has not exited (not reaped)."""
    return os.waitpid(pid, os.WNOHANG) == (0, 0)


def _reap(pid: int, within: float) -> Optional[int]:
    """Wait up to ``within`` s for our child ``pid``; its wait status or None."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got:
            return status
        time.sleep(0.01)
    return None


def scenario() -> Dict[str, Any]:
    """Tell the guard two sessions (leaders gone, members left); let one die
    entirely and give its number to an unrelated session; end the context.
    Report what the guard killed."""
    from remoteexec.target import guard, guardlink, procs

    assert os.getpid() == 1, "run me as a pid namespace's init"
    started: List[int] = []
    popen, fd, error = guardlink.start_guard("no-such-run-reuse")
    assert error is None and popen is not None and fd is not None, error
    started.append(popen.pid)
    try:
        told = []
        for _ in range(2):
            earliest = procs.boot_ticks()
            sid, member, _leader = _session_with_orphan()
            started.append(member)
            os.write(fd, b"+%d %d %d\n" % (sid, earliest, procs.boot_ticks()))
            told.append((sid, member))
        (ours_sid, ours), (dead_sid, dead_member) = told
        # The guard reads the lines and checks the sessions once (it keeps a
        # member of each as its witness), then the second session dies.
        _until(lambda: _unread(fd) == 0, "the guard to read its pipe")
        _after_a_sweep(popen.pid, guard.SWEEP_EVERY)
        os.kill(dead_member, signal.SIGKILL)
        assert _reap(dead_member, WAIT) is not None
        _after_a_sweep(popen.pid, guard.SWEEP_EVERY)
        # The next pid is the dead session's number: an unrelated session
        # leader takes it, forks and exits.
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(dead_sid - 1))
        reused, stranger, _leader = _session_with_orphan()
        started.append(stranger)
        assert reused == dead_sid, "pid %d, not the dead session's %d" % (reused, dead_sid)
        os.close(fd)
        guard_exit = popen.wait(guard.KILL_FOR + WAIT)
        ours_status = _reap(ours, WAIT)
        return {
            "guard_exit": guard_exit,
            "ours_killed": ours_status is not None
            and os.WIFSIGNALED(ours_status)
            and os.WTERMSIG(ours_status) == signal.SIGKILL,
            "stranger_alive": _alive(stranger),
            "sessions": [ours_sid, dead_sid],
        }
    finally:
        for pid in reversed(started):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    print("REPORT " + json.dumps(scenario()), flush=True)
    sys.exit(0)


# ---------------------------------------------------------------- the test

import pytest  # noqa: E402  (the scenario above runs without pytest)


def test_guard_spares_a_stranger_in_a_reused_session() -> None:
    """A told session that died entirely, its number reused by an unrelated
    session leader that forked and exited: the guard kills the member of our
    live session but not the stranger's child."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a pid namespace of its own")
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", sys.executable, __file__],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=RUN_FOR)
    finally:
        # SIGKILL of unshare kills its child (--kill-child), the namespace's
        # init, and with it every process in the namespace.
        proc.kill()
        proc.wait(10)
    lines = [x for x in out.decode().splitlines() if x.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, (out + err).decode()[-3000:]
    report = json.loads(lines[0][len("REPORT ") :])
    assert report["guard_exit"] == 0, report
    assert report["ours_killed"], "a member of a live told session survived: %s" % report
    assert report["stranger_alive"], "the guard killed a stranger in a reused session: %s" % report
