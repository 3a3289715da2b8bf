"""An executor's process tree from start to forget: the supervisor's calls on one tree.

``start`` spawns and waits until every readiness check passes on this host
(polling from 5 ms, then every tenth of the time waited, up to ``sleep``);
``stop``/``kill``/``forget`` end a tree; ``status``, ``output``,
``read_log`` and ``wait_exit`` look at it. Each returns a reply of
:mod:`.protocol` or its error shape.
"""

from __future__ import annotations

import contextlib
import signal
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from . import checks, procs, protocol, restarts, runstate
from .spawn import KILL_WAIT, Proc, signal_pid

#: Bound of one probe made for a hook called directly.
PROBE_WAIT = 5.0

Reply = Dict[str, Any]
Specs = Sequence[Mapping[str, Any]]


def fail_and_clean(proc: Proc, kind: str, message: str, **fields: Any) -> Reply:
    """Kill what is left of ``proc``'s tree, forget it, return an error reply."""
    proc.stopping.set()
    proc.signal_tree(signal.SIGKILL)
    proc.wait_gone(time.monotonic() + KILL_WAIT)
    runstate.retire(proc)
    proc.enter("failed")
    return protocol.error(
        kind,
        message,
        command=protocol.command_text(proc.command),
        output_tail=proc.tail(),
        pid=proc.pid,
        log_path=proc.log_path,
        **fields,
    )


def wait_ready(
    proc: Proc, built: List[checks.Check], deadline: float, sleep: float, timeout: float
) -> Union[protocol.ProcInfo, Reply]:
    """Poll ``built`` until all pass (the tree's info), the main process
    exits non-zero or ``deadline`` passes (an error reply; the tree killed)."""
    began = time.monotonic()
    detail = "no readiness check"
    while True:
        rc = proc.poll()
        if rc is not None and rc != 0:
            return fail_and_clean(
                proc,
                "ProcessExitedWithError",
                "the process %s before it was ready" % protocol.exited_text(rc),
                exit_code=rc,
            )
        now = time.monotonic()
        ok, detail = checks.probe_all(built, deadline - now)
        if ok:
            for check in built:
                if check.found_at is not None:
                    path, offset = check.found_at
                    proc.read_from["err" if path == proc.err_log_path else "out"] = offset
            proc.enter("ready", "ready")
            return proc.info()
        if rc == 0 and not proc.lingering():
            # A daemonizer may exit 0; a launcher (docker run -d) may even
            # leave nothing of ours behind: keep checking, as mirakuru does,
            # but say so if it times out.
            detail += "; the process exited 0 and nothing it started is running"
        now = time.monotonic()
        if now >= deadline:
            return fail_and_clean(
                proc,
                "TimeoutExpired",
                "start %s; not ready after %gs: %s; the process tree was killed"
                % (protocol.timed_out_text(timeout), timeout, detail),
                timeout=timeout,
            )
        time.sleep(min(checks.poll_delay(now - began, sleep), deadline - now))


def already_running(pre_check_specs: Specs, timeout: float, command_text: str) -> Optional[Reply]:
    """The AlreadyRunning reply when ``pre_check_specs`` pass before we start anything."""
    built = checks.build(pre_check_specs)
    ok, _ = checks.probe_all(built, min(1.0, timeout))
    if not ok:
        return None
    owner = next((c.owner() for c in built if c.owner() is not None), None)
    what = ", ".join(checks.describe(s) for s in pre_check_specs)
    owned = " (held by %s)" % procs.describe(owner) if owner else ""
    return protocol.error(
        "AlreadyRunning",
        "the executor seems to be already running: %s already answers before start%s;"
        " refusing to start %s" % (what, owned, command_text),
        command=command_text,
        owner_pid=owner,
    )


def start(
    spec: Mapping[str, Any],
    check_specs: Specs = (),
    timeout: float = 3600.0,
    sleep: float = 0.1,
    pre_check_specs: Specs = (),
) -> Union[protocol.ProcInfo, Reply]:
    """Spawn ``spec['command']`` and wait until every check passes.

    ``pre_check_specs``: fail with AlreadyRunning if these checks already
    pass before we start anything (someone else owns the port/socket/file).
    Polling starts at 5 ms, then pauses a tenth of the time waited so far,
    up to ``sleep`` (:func:`.checks.poll_delay`): a service is seen ready
    within ~10% of its start time, without busy-looping on a slow one. With
    ``spec["restart"] == "on-failure"`` the tree is restarted here, on the
    host, when it exits non-zero after start (:mod:`.restarts`).
    """
    deadline = time.monotonic() + float(timeout)
    command_text = protocol.command_text(spec["command"]) or ""
    problem = restarts.policy_problem(spec)
    if problem:
        return protocol.error("ExecutorError", problem, command=command_text)
    if pre_check_specs:
        refused = already_running(pre_check_specs, float(timeout), command_text)
        if refused:
            return refused
    proc, err = runstate.spawn_tree(spec)
    if err or proc is None:
        return err or protocol.error("ExecutorError", "not started", command=command_text)
    proc.checks = [dict(c) for c in (check_specs or pre_check_specs)]
    if not check_specs:
        # Nothing to wait for (a SimpleExecutor): started, whatever its exit
        # code, as in mirakuru; stop() checks the code.
        proc.enter("running", "process")
        restarts.watch(proc, [])
        return proc.info()
    built = checks.build(check_specs, log_paths=proc.log_paths())
    proc.enter("starting", "process")
    reply = wait_ready(proc, built, deadline, float(sleep), float(timeout))
    if reply.get("ok"):
        restarts.watch(proc, list(check_specs))
    return reply


def wait(
    proc_id: int, check_specs: Specs, timeout: float, sleep: float = 0.1
) -> Union[protocol.ProcInfo, Reply]:
    """Wait until the checks pass for an already started process."""
    proc = runstate.get(proc_id)
    if proc is None:
        return protocol.error("ExecutorError", "no such process id %s" % proc_id)
    built = checks.build(check_specs, log_paths=proc.log_paths())
    return wait_ready(proc, built, time.monotonic() + timeout, sleep, timeout)


def probe(check_specs: Specs, timeout: float = PROBE_WAIT) -> protocol.ProbeReply:
    """Whether every check passes right now (one probe each, bounded by
    ``timeout``): an executor's ``pre_start_check()``/``after_start_check()``
    called directly."""
    ok, _ = checks.probe_all(checks.build(check_specs), float(timeout))
    return {"ok": True, "passed": ok}


def read_log(
    proc_id: int,
    stream: str = "out",
    offset: int = 0,
    size: int = protocol.READ_CHUNK,
    wait: float = protocol.READ_WAIT,
    line: bool = False,
) -> protocol.ReadReply:
    """Up to ``size`` bytes of a process's log from byte ``offset``.

    Waits up to ``wait`` seconds for data (for a whole line with ``line``)
    while the process tree lives: the master's reader then blocks as a pipe
    would. ``eof`` is true once the tree has ended and all is read.
    """
    proc = runstate.get(proc_id)
    path = None
    if proc is not None:
        path = proc.err_log_path if stream == "err" else proc.log_path
    deadline = time.monotonic() + float(wait)
    delay = 0.002
    while True:
        alive = proc is not None and proc.alive()
        data = b""
        if path:
            with contextlib.suppress(OSError), open(path, "rb") as f:
                f.seek(int(offset))
                data = f.read(int(size))
        complete = bool(data) and (not line or b"\n" in data or len(data) >= int(size))
        now = time.monotonic()
        if complete or not alive or now >= deadline:
            return {"ok": True, "data": data, "eof": not alive and not data}
        time.sleep(min(delay, deadline - now))
        delay = min(delay * 2, 0.05)


def wait_exit(proc_id: int, timeout: float = protocol.READ_WAIT) -> protocol.WaitExitReply:
    """The main process's exit code, waiting up to ``timeout`` for it
    (None if it still runs): ``executor.process.wait()``."""
    proc = runstate.get(proc_id)
    if proc is None:
        return {"ok": True, "returncode": None, "known": False}
    deadline = time.monotonic() + float(timeout)
    delay = 0.002
    while True:
        rc = proc.poll()
        now = time.monotonic()
        if rc is not None or now >= deadline:
            return {"ok": True, "returncode": rc, "known": True}
        time.sleep(min(delay, deadline - now))
        delay = min(delay * 2, 0.05)


def stop(
    proc_id: int,
    sig: Optional[int] = None,
    timeout: float = 10.0,
    expected_returncode: Optional[int] = None,
) -> Union[protocol.StopReply, Reply]:
    """Stop a process tree: ``sig`` to the group and marked pids, then SIGKILL."""
    proc = runstate.get(proc_id)
    if proc is None:
        return {"ok": True, "returncode": None, "escalated": False}
    sig = int(sig or proc.stop_signal)
    escalated = proc.halt(sig, float(timeout))
    rc = proc.poll()
    runstate.retire(proc)
    command = protocol.command_text(proc.command)
    if escalated:
        return protocol.error(
            "TimeoutExpired",
            "stop %s: still running %gs after %s; killed with SIGKILL (%s)"
            % (
                protocol.timed_out_text(timeout),
                timeout,
                protocol.signame(sig),
                protocol.exit_text(rc),
            ),
            command=command,
            exit_code=rc,
            output_tail=proc.tail(),
            escalated=True,
            timeout=timeout,
        )
    expected = -sig if expected_returncode is None else int(expected_returncode)
    if rc and rc != expected:
        return protocol.error(
            "ProcessFinishedWithError",
            "the process %s after %s; expected %s"
            % (protocol.exited_text(rc), protocol.signame(sig), protocol.exit_text(expected)),
            command=command,
            exit_code=rc,
            output_tail=proc.tail(),
        )
    return {"ok": True, "returncode": rc, "escalated": False}


def kill(
    proc_id: int, sig: int = signal.SIGKILL, wait: bool = True
) -> Union[protocol.KillReply, Reply]:
    """Send ``sig`` to the whole tree; with ``wait``, until it is gone."""
    proc = runstate.get(proc_id)
    if proc is None:
        return {"ok": True, "returncode": None}
    proc.stopping.set()
    with proc.lock:
        proc.signal_tree(int(sig))
    if wait:
        if not proc.wait_gone(time.monotonic() + KILL_WAIT):
            return protocol.error(
                "TimeoutExpired",
                "kill %s: the process tree is still alive %gs after %s"
                % (protocol.timed_out_text(KILL_WAIT), KILL_WAIT, protocol.signame(sig)),
                command=protocol.command_text(proc.command),
            )
        runstate.retire(proc)
    return {"ok": True, "returncode": proc.poll()}


def forget(proc_id: int, timeout: float = 2.0) -> Union[protocol.ForgetReply, Reply]:
    """Forget a process tree the master no longer holds an executor for.

    A tree still alive gets its stop signal, ``timeout`` seconds, then
    SIGKILL (bounded by KILL_WAIT). It is then dropped from the tables and
    its log deleted (unless keep_logs), so a master that lives for hours and
    starts executors again and again does not grow the run directory.
    Returns ``{"ok": True, "was_running": bool}``; an unknown id is already
    forgotten (``was_running`` False). A tree that survives SIGKILL is kept
    (finish still tries) and reported as TimeoutExpired.
    """
    proc = runstate.get(proc_id)
    if proc is None:
        return {"ok": True, "was_running": False}
    if proc.detach is not None:
        # Detached: the master let go of it, the service runs on.
        runstate.drop(proc)
        return {"ok": True, "was_running": False}
    proc.stopping.set()
    was_running = proc.alive()
    if was_running:
        proc.halt(proc.stop_signal, float(timeout))
        if not proc.wait_gone(time.monotonic()):
            return protocol.error(
                "TimeoutExpired",
                "process tree %s still alive %gs after SIGKILL" % (proc_id, KILL_WAIT),
                command=protocol.command_text(proc.command),
            )
    proc.poll()  # reap the main process, if not yet done
    runstate.drop(proc)
    return {"ok": True, "was_running": was_running}


def signal_proc(proc_id: int, sig: int) -> Reply:
    """Send ``sig`` to the main process only (SIGSTOP/SIGCONT and friends)."""
    proc = runstate.get(proc_id)
    if proc is None or proc.poll() is not None:
        return protocol.error("ExecutorError", "process %s is not running" % proc_id)
    signal_pid(proc.pid, int(sig))
    return {"ok": True}


def status(proc_id: int) -> Union[protocol.ProcInfo, Reply]:
    """The tree's info; ``pid`` None for an id not known (never started or forgotten)."""
    proc = runstate.get(proc_id)
    if proc is None:
        return {"ok": True, "running": False, "returncode": None, "pid": None}
    return proc.info()


def output(proc_id: int, lines: int = protocol.TAIL_LINES) -> protocol.OutputReply:
    """The last ``lines`` lines of the tree's output ("" for an unknown id)."""
    proc = runstate.get(proc_id)
    return {"ok": True, "output": proc.tail(lines) if proc else ""}
