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


def _wait_for(predicate, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.01)
    raise AssertionError("not within %.0f s: %s" % (timeout, what))


def test_descendants_lists_grandchildren_and_zombies() -> None:
    if not procs.CHILDREN_LISTS:
        return  # the kernel lists no children: callers scan /proc instead
    # A shell whose child sleeps: the grandchild is found through the shell.
    shell = subprocess.Popen(["sh", "-c", "sleep 30 & echo $!; wait"], stdout=subprocess.PIPE)
    zombie = subprocess.Popen(["true"])
    try:
        assert shell.stdout is not None
        grandchild = int(shell.stdout.readline())
        _wait_for(lambda: procs.state(zombie.pid) == "Z", "the exited child a zombie")
        found = procs.descendants(os.getpid())
        assert found is not None
        assert {shell.pid, grandchild, zombie.pid} <= set(found)
        assert os.getpid() not in found
        assert procs.children(shell.pid) == [grandchild]
        assert procs.descendants(2**22 + 7) == []  # no such pid: nothing, no error
    finally:
        shell.kill()
        shell.wait()
        zombie.wait()
    os.kill(grandchild, 9)


def test_marker_search_within_a_subtree_misses_what_left_it() -> None:
    """within= looks only under the given pid; without it, everywhere: the
    stop loop's cheap walk cannot replace the final scan of every process."""
    value = "procs-test-%d-%d" % (os.getpid(), time.monotonic_ns())
    env = dict(os.environ, RX_PROCS_TEST=value)
    inside = subprocess.Popen(["sleep", "30"], env=env)
    # Double fork: the sleep is orphaned, reparented out of this process's tree.
    out = subprocess.run(
        ["sh", "-c", "sleep 30 </dev/null >/dev/null 2>&1 & echo $!"],
        env=env,
        capture_output=True,
        check=True,
    )
    outside = int(out.stdout)
    try:
        everywhere = _wait_for(
            lambda: (lambda f: f if {inside.pid, outside} <= set(f) else None)(
                procs.pids_with_marker("RX_PROCS_TEST", value)
            ),
            "both marked sleeps found by the full scan",
        )
        assert set(everywhere) == {inside.pid, outside}
        nearby = procs.pids_with_marker("RX_PROCS_TEST", value, within=os.getpid())
        if procs.CHILDREN_LISTS:
            assert nearby == [inside.pid]
        else:
            assert set(nearby) == {inside.pid, outside}
    finally:
        inside.kill()
        inside.wait()
        os.kill(outside, 9)


def test_boot_ticks_bound_a_child_start_time() -> None:
    """The guard trusts this: a process forked between two readings of
    boot_ticks has its /proc start time between them."""
    for _ in range(20):
        earliest = procs.boot_ticks()
        child = subprocess.Popen(["sleep", "30"])
        latest = procs.boot_ticks()
        try:
            fields = procs.stat_fields(child.pid)
            assert fields is not None
            assert earliest <= fields[3] <= latest, (earliest, fields[3], latest)
        finally:
            child.kill()
            child.wait(10)
    # It follows the clock: a tick later, it has moved on.
    before = procs.boot_ticks()
    deadline = time.monotonic() + 5.0
    while procs.boot_ticks() == before and time.monotonic() < deadline:
        time.sleep(1.0 / procs.TICKS_PER_SECOND)
    assert procs.boot_ticks() > before
