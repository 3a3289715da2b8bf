"""remoteexec.target.procs: the one /proc/PID/stat parser and exit status."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from remoteexec.target import procs


def test_proc_stat_of_this_process() -> None:
    fields = procs.proc_stat(os.getpid())
    assert fields is not None
    assert fields[0] in (b"R", b"S")
    assert int(fields[1]) == os.getppid()
    _, ppid, session, started = procs.stat_fields(os.getpid())
    assert ppid == os.getppid() and session == os.getsid(0) and started > 0


def test_proc_stat_survives_a_name_with_spaces_and_parentheses(tmp_path) -> None:
    odd = tmp_path / "a) b (c"
    os.symlink(sys.executable, odd)
    child = subprocess.Popen([str(odd), "-c", "import time; time.sleep(30)"])
    try:
        fields = procs.proc_stat(child.pid)
        assert fields is not None and int(fields[1]) == os.getpid()
    finally:
        child.kill()
        child.wait()


def test_exit_status_of_a_zombie_child_then_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(7)"])
    for _ in range(500):
        exited, code = procs.exit_status(child.pid)
        if exited:
            break
        time.sleep(0.01)
    assert (exited, code) == (True, 7)
    child.wait()
    assert procs.exit_status(child.pid) == (True, None)
    assert procs.exit_status(os.getpid()) == (False, None)
