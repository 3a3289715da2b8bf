"""The supervisor's own guarantees: the guard, the reaper, forget.

Liveness is judged by a small /proc reader in this file (an oracle that does
not share code with remoteexec.target.procs): a process is the same one only
while its pid shows the start time recorded before the test acted.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, Iterator, List, Tuple

import pytest
from conftest import HELPER, PY, connect_options, wait_until
from helpers import oracle

import remoteexec as rx
from remoteexec.target import guard

#: Services must be gone this soon after their context is SIGKILLed ...
DIE_WITHIN = 2.0
#: ... plus this margin, for a 2-core machine that runs other suites too.
LOAD_MARGIN = 1.0


# -- the oracle ------------------------------------------------------------


def _descendants(root: int) -> Dict[int, int]:
    """Live descendants of ``root``: pid -> start time (the tests' /proc oracle)."""
    table = oracle.table()
    found: Dict[int, int] = {}
    todo = [root]
    for _ in range(len(table) + 1):  # bounded: a tree is no larger than the table
        if not todo:
            break
        parent = todo.pop()
        for st in table.values():
            if st.ppid == parent and st.pid not in found and st.alive:
                found[st.pid] = st.start
                todo.append(st.pid)
    return found


def _alive(pid: int, started: int) -> bool:
    return oracle.identity(pid) == (pid, started)


def _survivors(snapshot: Dict[int, int]) -> List[int]:
    return [pid for pid, started in snapshot.items() if _alive(pid, started)]


def _end(snapshot: Dict[int, int]) -> None:
    """SIGKILL what is left of ``snapshot``, each only while it is the same
    process (its start time): what a failed assertion would leave behind."""
    for pid in _survivors(snapshot):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _environ(pid: int) -> bytes:
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _cmdline(pid: int) -> str:
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


# -- places ----------------------------------------------------------------


@pytest.fixture(params=["local", pytest.param("lab", marks=pytest.mark.lab)])
def fresh_host(request: pytest.FixtureRequest) -> Iterator[rx.Host]:
    """A host on a master of its own (these tests kill its context)."""
    options = {}
    if request.param == "lab":
        the_lab = request.getfixturevalue("lab")
        options = connect_options(the_lab)
    with rx.Master(heartbeat_timeout=5) as m:
        if request.param == "lab":
            yield m.connect(the_lab.targets[0], **options)
        else:
            yield m.local()


def _start_services(host: rx.Host) -> Dict[str, rx.SimpleExecutor]:
    """A plain process, a double-forking daemon, a tree, a tarantool, started.

    The caller keeps the executors: a dropped one is killed (``__del__``).
    """
    # A lab host's /tmp is its own: make the scratch directory there.
    scratch = host.run(["mktemp", "-d", "/tmp/rxguard-XXXXXX"], check=True).stdout.strip()
    port = 18600
    if host.kind == "local":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    lua = os.path.join(scratch, "guarded.lua")
    source = "box.cfg{work_dir=%r, log=%r}\nrequire('fiber').sleep(600)\n" % (
        scratch,
        os.path.join(scratch, "tarantool.log"),
    )
    host.run(["sh", "-c", 'cat > "$1"', "sh", lua], input=source, check=True)
    executors = {
        "plain": rx.SimpleExecutor(["sleep", "600"], on=host),
        "daemon": rx.TCPExecutor(
            [PY, HELPER, "daemon", "127.0.0.1", str(port)],
            host="127.0.0.1",
            port=port,
            on=host,
            timeout=20,
        ),
        "tree": rx.OutputExecutor(
            [PY, HELPER, "children", "3"], banner="tree ready", on=host, timeout=20
        ),
        "tarantool": rx.SimpleExecutor(["tarantool", lua], on=host),
    }
    for ex in executors.values():
        ex.start()
    return executors


# -- 1. the guard -----------------------------------------------------------


def test_context_sigkill_kills_its_services(fresh_host: rx.Host) -> None:
    host = fresh_host
    context = host.info["pid"]
    executors = _start_services(host)
    guard = host.invoke("remoteexec.target.guardlink.status")  # started with the first service
    guard_pid = guard["pid"]
    assert guard_pid and guard["error"] is None
    assert os.getsid(guard_pid) == guard_pid, "the guard leads its own session"
    pids = {kind: ex.pid for kind, ex in executors.items()}
    tarantool_pid = pids["tarantool"]
    # Tarantool rewrites its environment at box.cfg: only the session the
    # supervisor told the guard about still finds it.
    assert wait_until(lambda: b"REMOTEEXEC_RUN=" not in _environ(tarantool_pid), 20.0)
    assert wait_until(lambda: len(_descendants(context)) >= 8, 10.0), _descendants(context)
    snapshot = _descendants(context)
    services = {p: s for p, s in snapshot.items() if p != guard_pid}
    assert pids["plain"] in services and pids["tarantool"] in services
    assert len([p for p in services if oracle.stat(p).ppid == pids["tree"]]) == 3, "tree of 4"
    assert any("daemon" in _cmdline(p) for p in services), "the daemonized child runs"

    os.kill(context, signal.SIGKILL)
    killed = time.monotonic()
    try:
        assert wait_until(lambda: not _survivors(snapshot), DIE_WITHIN + LOAD_MARGIN, 0.005), [
            (p, _cmdline(p)) for p in _survivors(snapshot)
        ]
    finally:
        _end(snapshot)  # a red run leaves nothing either
    took = time.monotonic() - killed
    print(
        "\n%s: %d processes gone %.3f s after the context's SIGKILL"
        % (host.kind, len(snapshot), took)
    )
    assert wait_until(lambda: host.lost is not None, 10.0)


def test_guard_leaves_nothing_on_clean_close(fresh_host: rx.Host) -> None:
    host = fresh_host
    context = host.info["pid"]
    kept = rx.SimpleExecutor(["sleep", "600"], on=host).start()
    guard_pid = host.invoke("remoteexec.target.guardlink.status")["pid"]
    snapshot = _descendants(context)
    assert kept.pid in snapshot
    snapshot[context] = oracle.stat(context).start
    assert guard_pid in snapshot and len(snapshot) >= 3
    host.master.close()
    del kept
    try:
        assert wait_until(lambda: not _survivors(snapshot), 5.0), [
            (p, _cmdline(p)) for p in _survivors(snapshot)
        ]
    finally:
        _end(snapshot)


def _switches(pid: int) -> int:
    """How often ``pid`` went to sleep (voluntary context switches)."""
    status = oracle.proc_file(pid, "status") or b""
    for line in status.splitlines():
        if line.startswith(b"voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches for pid %d" % pid)


def test_spawns_do_not_wake_the_guard(fresh_host: rx.Host) -> None:
    """Each spawn tells the guard its session, but the guard reads those
    lines only every DRAIN_EVERY: a Host.run does not wake it."""
    host = fresh_host
    host.run(["true"], check=True)  # the guard starts with the first process
    guard_pid = host.invoke("remoteexec.target.guardlink.status")["pid"]
    assert guard_pid
    runs = 200
    before, started = _switches(guard_pid), time.monotonic()
    for _ in range(runs):
        host.run(["true"], check=True)
    took = time.monotonic() - started
    woke = _switches(guard_pid) - before
    # Its timer: one wake-up each DRAIN_EVERY, with a margin for a slow run.
    allowed = 5 + 1.5 * took / guard.DRAIN_EVERY
    assert allowed < runs, "too slow to tell (%.1f s for %d runs)" % (took, runs)
    assert woke <= allowed, "the guard woke %d times in %d runs (%.2f s)" % (woke, runs, took)


def test_guard_reads_sessions_told_right_before_the_context_ends() -> None:
    """A session told just before the context's end closes (before any of
    the guard's reads) is still killed: the guard reads the pipe at EOF."""
    from remoteexec.target import guardlink

    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    popen, fd, error = guardlink.start_guard("no-such-run-%d" % os.getpid())
    try:
        assert error is None and popen is not None and fd is not None
        started = oracle.stat(proc.pid).start
        os.write(fd, b"+%d %d %d\n" % (proc.pid, started, started))
        os.close(fd)
        assert popen.wait(guard.KILL_FOR + LOAD_MARGIN) == 0
        assert proc.wait(LOAD_MARGIN) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait(10)
        if popen is not None:
            popen.kill()
            popen.wait(10)


def test_guard_checks_session_leader_start_time() -> None:
    """A registered session whose leader pid now has another start time is
    another session: the guard leaves it alone (pid reuse)."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        started = oracle.stat(proc.pid).start
        found = guard.run_pids
        assert proc.pid in found("no-such-run", {proc.pid: (started, started)})
        assert proc.pid in found("no-such-run", {proc.pid: (started - 1, started + 1)})
        assert proc.pid not in found("no-such-run", {proc.pid: (started - 2, started - 1)})
        assert proc.pid not in found("no-such-run", {proc.pid: (started + 1, started + 2)})
        assert proc.pid not in found("no-such-run", {})
    finally:
        proc.kill()
        proc.wait(10)


def test_guard_prunes_sessions_with_nothing_left() -> None:
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    gone = subprocess.Popen(["true"], start_new_session=True)
    gone.wait(10)
    try:
        started = oracle.stat(proc.pid).start
        sessions = {proc.pid: (started, started), gone.pid: (1, 1)}
        guard.prune(sessions)
        assert list(sessions) == [proc.pid]
    finally:
        proc.kill()
        proc.wait(10)


def test_guard_parses_partial_lines() -> None:
    sessions: Dict[int, Tuple[int, int]] = {}
    rest = guard.parse(b"+10 5 6\n+11 7 7\n+1", sessions)
    assert sessions == {10: (5, 6), 11: (7, 7)} and rest == b"+1"
    assert guard.parse(rest + b"2 9 10\ngarbage\n+13 1\n", sessions) == b""
    assert sessions == {10: (5, 6), 11: (7, 7), 12: (9, 10)}


# -- 2. the reaper never takes a child someone waits for --------------------


def test_version_check_survives_a_busy_reaper() -> None:
    """The reaper in a tight loop (as a very fast heartbeat would run it)
    while tarantool --version runs again and again: no ECHILD."""
    stress = os.path.join(os.path.dirname(HELPER), "reaper_stress.py")
    out = subprocess.run(
        [sys.executable, stress, "100"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["reaps"] > 100, result
    assert result["failures"] == 0, result


# -- 3. forget --------------------------------------------------------------


def _start_raw(host: rx.Host, command: List[str], **spec: object) -> dict:
    return host.service("start", spec=dict(command=command, **spec), timeout=10)


def test_forget_kills_a_running_tree_and_drops_its_log(fresh_host: rx.Host) -> None:
    host = fresh_host
    info = _start_raw(host, [PY, HELPER, "children", "2"])
    assert wait_until(lambda: len(_descendants(info["pid"])) == 2, 10.0)
    tree = _descendants(info["pid"])
    tree[info["pid"]] = oracle.stat(info["pid"]).start
    assert host.call(os.path.exists, info["log_path"]), "checked on the host itself"
    assert host.service("forget", proc_id=info["id"]) == {"ok": True, "was_running": True}
    assert not _survivors(tree), "forget returns once the tree is gone"
    assert not host.call(os.path.exists, info["log_path"])
    assert host.service("status", proc_id=info["id"])["pid"] is None, "dropped from the tables"
    # Again, and an id never seen: already forgotten.
    assert host.service("forget", proc_id=info["id"]) == {"ok": True, "was_running": False}


def test_forget_a_finished_tree(master: rx.Master) -> None:
    host = master.local()
    info = _start_raw(host, ["sh", "-c", "echo bye"])
    assert wait_until(lambda: not host.service("status", proc_id=info["id"])["running"], 10.0)
    assert host.service("forget", proc_id=info["id"]) == {"ok": True, "was_running": False}
    assert not os.path.exists(info["log_path"])


def _log_says(path: str, text: str) -> bool:
    with open(path) as f:
        return text in f.read()


def test_forget_escalates_to_sigkill(master: rx.Master) -> None:
    """A tree that ignores its stop signal is SIGKILLed after ``timeout``."""
    host = master.local()
    info = _start_raw(host, [PY, HELPER, "stubborn", "127.0.0.1", "0"])
    assert wait_until(lambda: _log_says(info["log_path"], "stubborn ready"), 10.0)
    main = {info["pid"]: oracle.stat(info["pid"]).start}
    started = time.monotonic()
    reply = host.service("forget", proc_id=info["id"], timeout=0.3)
    assert reply == {"ok": True, "was_running": True}
    assert 0.3 <= time.monotonic() - started < 5.0, "waited the stop timeout, then SIGKILL"
    assert not _survivors(main)


def test_forget_keeps_logs_with_keep_logs() -> None:
    with rx.Master(heartbeat_timeout=5, keep_logs=True) as m:
        host = m.local()
        info = _start_raw(host, ["sleep", "600"])
        assert host.service("forget", proc_id=info["id"])["was_running"] is True
        assert os.path.exists(info["log_path"])
    os.unlink(info["log_path"])


def test_evicted_finished_trees_drop_their_logs() -> None:
    """The run directory stays bounded: beyond FINISHED_KEPT finished trees,
    the oldest is evicted with its log."""
    from remoteexec.target.supervisor import FINISHED_KEPT

    with rx.Master(heartbeat_timeout=5) as m:
        host = m.local()
        run_dir = host.info["run_dir"]
        for _ in range(FINISHED_KEPT + 20):
            info = _start_raw(host, ["true"])
            host.service("stop", proc_id=info["id"], timeout=5)
        logs = [n for n in os.listdir(run_dir) if n.endswith(".log")]
        assert len(logs) == FINISHED_KEPT, len(logs)
