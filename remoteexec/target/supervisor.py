"""The target-side supervisor: owns every process a run starts on this host.

One supervisor lives in each context (one per host per Master). The master
calls :func:`install` once, right after connecting; from then on:

- every process is spawned in its own session, with ``REMOTEEXEC_RUN`` set to
  ``<run_id>.<context>.<proc_id>`` (matched exactly, never as a substring), stdin from
  /dev/null (or, for executors, as in mirakuru, a pipe whose write end the
  supervisor holds open) and stdout+stderr appended to a 0600 log file in the
  run's 0700 directory (stderr to a second one when asked to keep it apart).
  No output is piped, so a chatty child can never block on a full pipe; the
  output is read back from the files.
- the context is a child subreaper, so daemons that double-fork stay in its
  tree and are reaped here.
- stop = killpg(stop_signal) plus the same signal to every marked process,
  a bounded wait, then SIGKILL for all of them. A stop that had to escalate
  reports it as a timeout instead of hiding it.
- when the master goes away (clean exit, crash, SIGKILL, ssh dying: mitogen's
  broker ``shutdown``; or a silent partition: heartbeats stop), every process
  tree of the run is killed and the context exits.
- when the context itself dies without a word (SIGKILL, the OOM killer), the
  guard process started at install (:mod:`.guard`) kills what it left.

Functions return ``{"ok": True, ...}`` or ``{"ok": False, "error": {...}}``;
the error dict has ``type`` (a remoteexec exception class name) and
``message``, plus ``command``, ``exit_code``, ``output_tail`` where known.
"""

import contextlib
import ctypes
import errno
import logging
import os
import select
import shlex
import signal
import socket
import stat as stat_mod
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import mitogen.core
import mitogen.service

from . import checks, guard, procs

LOG = logging.getLogger("remoteexec.target")

MARKER = procs.MARKER
PR_SET_CHILD_SUBREAPER = 36
TAIL_LINES = 50
TAIL_BYTES = 64 * 1024
KILL_WAIT = 5.0
FINISHED_KEPT = 256
#: Bound of one probe made for a hook called directly.
PROBE_WAIT = 5.0
#: What one read of a log returns at most, and how long it waits for data:
#: a blocked reader on the master asks again, so no pool thread is held long.
READ_CHUNK = 256 * 1024
READ_WAIT = 1.0


class _State:
    def __init__(self):
        self.lock = threading.RLock()
        self.run_id = None
        self.prefix = None
        self.run_dir = None
        self.procs = {}
        self.finished = {}
        self.seq = 0
        self.subreaper = False
        self.heartbeat_handle = None
        self.keep_logs = False
        # The guard (see guard.py): its Popen, and the write end of its pipe.
        self.guard = None
        self.guard_fd = None
        self.guard_error = None


STATE = _State()


def _error(kind, message, **fields):
    fields = {k: v for k, v in fields.items() if v is not None}
    return {"ok": False, "error": dict(type=kind, message=message, **fields)}


def _signame(sig):
    try:
        return signal.Signals(sig).name
    except ValueError:
        return "signal %d" % sig


def _exit_text(code):
    if code is None:
        return "still running"
    if code < 0:
        return "killed by %s" % _signame(-code)
    return "exit code %d" % code


def _signal(pid, sig, group=False):
    try:
        (os.killpg if group else os.kill)(pid, sig)
    except OSError as e:
        if e.errno not in (errno.ESRCH, errno.EPERM):
            raise


def _tail_of(path, lines=TAIL_LINES):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace").splitlines()
    return "\n".join(text[-lines:]) if lines else ""


class Proc:
    """One process tree started by the supervisor."""

    def __init__(self, proc_id, spec, marker, log_path, popen, err_log_path=None, stdin_fd=None):
        self.id = proc_id
        self.name = spec.get("name") or ""
        self.command = spec["command"]
        self.stop_signal = int(spec.get("stop_signal") or signal.SIGTERM)
        self.kill_signal = int(spec.get("kill_signal") or signal.SIGKILL)
        self.marker = marker
        self.log_path = log_path
        self.err_log_path = err_log_path
        self.popen = popen
        self.pid = popen.pid
        self.started = time.time()
        #: The write end of the process's stdin pipe, held open so that a
        #: process reading stdin waits, as under mirakuru (None: /dev/null).
        self.stdin_fd = stdin_fd
        #: Where a reader of each log starts: past the banner line that
        #: made an OutputExecutor ready, as mirakuru consumed it.
        self.read_from = {"out": 0, "err": 0}

    def log_paths(self):
        return [p for p in (self.log_path, self.err_log_path) if p]

    def close_stdin(self):
        fd, self.stdin_fd = self.stdin_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def poll(self):
        rc = self.popen.poll()
        if rc is not None:
            procs.release_waited(self.popen)
        return rc

    def marked(self):
        """Live processes carrying this tree's marker (the main one included)."""
        return [p for p in procs.pids_with_marker(MARKER, self.marker) if procs.is_alive(p)]

    def signal_tree(self, sig):
        """``sig`` to the process group, and to marked pids that left it.

        Each process gets the signal once: a second SIGTERM would cut short a
        graceful shutdown that the first one started.
        """
        group_alive = self.poll() is None
        if group_alive:
            _signal(self.pid, sig, group=True)
        for pid in self.marked():
            try:
                in_group = group_alive and os.getpgid(pid) == self.pid
            except OSError:
                continue
            if not in_group:
                _signal(pid, sig)

    def alive(self):
        """True while the main process or any marked descendant lives."""
        procs.reap_orphans()
        if self.poll() is None or self.marked():
            return True
        procs.reap_orphans()  # one may have died between the first reap and the scan
        return False

    def wait_gone(self, deadline):
        delay = 0.002
        while self.alive():
            now = time.monotonic()
            if now >= deadline:
                return False
            time.sleep(min(delay, deadline - now))
            delay = min(delay * 2, 0.05)
        return True

    def running(self):
        rc = self.poll()
        if rc is None:
            return True
        return rc == 0 and bool(self.marked())

    def tail(self, lines=TAIL_LINES):
        out = _tail_of(self.log_path, lines)
        err = _tail_of(self.err_log_path, lines) if self.err_log_path else ""
        if not err:
            return out
        return "%s\n--- stderr ---\n%s" % (out, err) if out else err

    def info(self):
        return {
            "ok": True,
            "id": self.id,
            "pid": self.pid,
            "marker": self.marker,
            "log_path": self.log_path,
            "err_log_path": self.err_log_path,
            "read_from": dict(self.read_from),
            "running": self.running(),
            "returncode": self.poll(),
        }


def _require_installed():
    if STATE.run_id is None:
        raise RuntimeError("remoteexec supervisor not installed in this context")


def _get(proc_id):
    with STATE.lock:
        return STATE.procs.get(proc_id) or STATE.finished.get(proc_id)


def _drop_log(proc):
    """Delete ``proc``'s logs unless the master asked to keep logs."""
    if not STATE.keep_logs:
        for path in proc.log_paths():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def _retire(proc):
    """Move a finished tree to ``STATE.finished``; the oldest beyond
    FINISHED_KEPT is evicted with its log, so a long-lived master's run
    directory stays bounded."""
    evicted = []
    proc.close_stdin()
    with STATE.lock:
        STATE.procs.pop(proc.id, None)
        STATE.finished[proc.id] = proc
        while len(STATE.finished) > FINISHED_KEPT:
            evicted.append(STATE.finished.pop(next(iter(STATE.finished))))
    for old in evicted:
        _drop_log(old)


def _argv(command, shell):
    if shell:
        if isinstance(command, str):
            return command
        return " ".join(shlex.quote(str(c)) for c in command)
    if isinstance(command, str):
        return shlex.split(command)
    return [str(c) for c in command]


def _command_text(command):
    if isinstance(command, str):
        return command
    return " ".join(shlex.quote(str(c)) for c in command)


def _safe_name(text):
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
    return keep[:40] or "proc"


def _popen_error(e, argv, cwd, command):
    text = _command_text(command)
    if cwd and not os.path.isdir(cwd):
        return _error("ExecutorError", "working directory %s does not exist" % cwd, command=text)
    program = argv[0] if isinstance(argv, list) else argv
    if isinstance(e, FileNotFoundError):
        return _error(
            "CommandNotFound",
            "command not found: %s (PATH=%s)" % (program, os.environ.get("PATH", "")[:200]),
            command=text,
        )
    if isinstance(e, PermissionError):
        return _error("CommandNotFound", "not executable: %s (%s)" % (program, e), command=text)
    return _error("ExecutorError", "cannot start %s: %s" % (program, e), command=text)


def _next_id():
    with STATE.lock:
        STATE.seq += 1
        return STATE.seq


def _popen(command, shell, cwd, env, marker, environ=None, **stdio):
    """Start one child in its own session, carrying ``marker`` in its
    environment; return (Popen, None) or (None, error dict).

    ``environ`` replaces this context's environment (the master's own, for
    a local executor: mirakuru takes ``os.environ`` at start); ``env`` is
    added on top."""
    argv = _argv(command, shell)
    full_env = dict(os.environ if environ is None else environ)
    full_env.update({str(k): str(v) for k, v in (env or {}).items()})
    full_env[MARKER] = marker
    try:
        popen = procs.spawn_waited(
            lambda: subprocess.Popen(
                argv,
                shell=bool(shell),
                cwd=cwd or None,
                env=full_env,
                close_fds=True,
                start_new_session=True,
                **stdio,
            )
        )
    except OSError as e:
        return None, _popen_error(e, argv if not shell else [argv], cwd, command)
    # Not yet reaped (registered above), so its /proc entry is there to read.
    tell_guard(popen.pid)
    return popen, None


def _spawn(spec):
    """Start a process tree; return (Proc, None) or (None, error dict)."""
    _require_installed()
    proc_id = _next_id()
    command = spec["command"]
    shell = bool(spec.get("shell"))
    marker = "%s.%d" % (STATE.prefix, proc_id)
    argv = _argv(command, shell)
    program = argv if isinstance(argv, str) else os.path.basename(argv[0])
    name = spec.get("name") or program.split()[0]
    log_path = os.path.join(STATE.run_dir, "%s-%d.log" % (_safe_name(name), proc_id))
    err_log_path = None
    if spec.get("stderr") == "separate":
        err_log_path = os.path.join(STATE.run_dir, "%s-%d.err.log" % (_safe_name(name), proc_id))
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    opened = []
    try:
        log_fd = os.open(log_path, flags, 0o600)
        opened.append(log_fd)
        err_fd = log_fd
        if err_log_path:
            err_fd = os.open(err_log_path, flags, 0o600)
            opened.append(err_fd)
        stdin, stdin_fd = subprocess.DEVNULL, None
        if spec.get("stdin") == "pipe":
            stdin, stdin_fd = os.pipe2(os.O_CLOEXEC)
            opened.append(stdin)
        popen, err = _popen(
            command,
            shell,
            spec.get("cwd"),
            spec.get("env"),
            marker,
            environ=spec.get("environ"),
            stdin=stdin,
            stdout=log_fd,
            stderr=err_fd,
        )
    finally:
        for fd in opened:
            os.close(fd)
    if err:
        if stdin_fd is not None:
            os.close(stdin_fd)
        return None, err
    proc = Proc(proc_id, dict(spec, name=name), marker, log_path, popen, err_log_path, stdin_fd)
    with STATE.lock:
        STATE.procs[proc_id] = proc
    return proc, None


def _fail_and_clean(proc, kind, message, **fields):
    """Kill what is left of ``proc``'s tree, forget it, return an error dict."""
    proc.signal_tree(signal.SIGKILL)
    proc.wait_gone(time.monotonic() + KILL_WAIT)
    _retire(proc)
    return _error(
        kind,
        message,
        command=_command_text(proc.command),
        output_tail=proc.tail(),
        pid=proc.pid,
        log_path=proc.log_path,
        **fields,
    )


def exited_text(rc):
    """mirakuru's words for a non-zero exit (users grep for them), and ours."""
    return "exited with a non-zero code: %d (%s)" % (rc, _exit_text(rc))


def timed_out_text(timeout):
    """mirakuru's words for a timeout (users grep for them)."""
    return "timed out after %g seconds" % timeout


def _wait_ready(proc, built, deadline, sleep, timeout):
    delay = 0.005
    detail = "no readiness check"
    while True:
        rc = proc.poll()
        if rc is not None and rc != 0:
            return _fail_and_clean(
                proc,
                "ProcessExitedWithError",
                "the process %s before it was ready" % exited_text(rc),
                exit_code=rc,
            )
        now = time.monotonic()
        ok, detail = checks.probe_all(built, deadline - now)
        if ok:
            for check in built:
                found = getattr(check, "found_at", None)
                if found is not None:
                    path, offset = found
                    proc.read_from["err" if path == proc.err_log_path else "out"] = offset
            return proc.info()
        if rc == 0 and not proc.marked():
            # A daemonizer may exit 0; a launcher (docker run -d) may even
            # leave nothing of ours behind: keep checking, as mirakuru does,
            # but say so if it times out.
            detail += "; the process exited 0 and nothing it started is running"
        now = time.monotonic()
        if now >= deadline:
            return _fail_and_clean(
                proc,
                "TimeoutExpired",
                "start %s; not ready after %gs: %s; the process tree was killed"
                % (timed_out_text(timeout), timeout, detail),
                timeout=timeout,
            )
        time.sleep(min(delay, sleep, deadline - now))
        delay *= 2


def start(spec, check_specs=(), timeout=3600.0, sleep=0.1, pre_check_specs=()):
    """Spawn ``spec['command']`` and wait until every check passes.

    ``pre_check_specs``: fail with AlreadyRunning if these checks already
    pass before we start anything (someone else owns the port/socket/file).
    Polling starts at 5 ms and doubles up to ``sleep``, so a fast service is
    seen as ready quickly without busy-looping on a slow one.
    """
    deadline = time.monotonic() + float(timeout)
    command_text = _command_text(spec["command"])
    if pre_check_specs:
        built = checks.build(pre_check_specs)
        ok, _ = checks.probe_all(built, min(1.0, float(timeout)))
        if ok:
            owner = next((c.owner() for c in built if c.owner() is not None), None)
            what = ", ".join(_describe_check(s) for s in pre_check_specs)
            owned = " (held by %s)" % procs.describe(owner) if owner else ""
            return _error(
                "AlreadyRunning",
                "the executor seems to be already running: %s already answers before start%s;"
                " refusing to start %s" % (what, owned, command_text),
                command=command_text,
                owner_pid=owner,
            )
    proc, err = _spawn(spec)
    if err:
        return err
    if not check_specs:
        # Nothing to wait for (a SimpleExecutor): started, whatever its exit
        # code, as in mirakuru; stop() checks the code.
        return proc.info()
    built = checks.build(check_specs, log_paths=proc.log_paths())
    return _wait_ready(proc, built, deadline, float(sleep), float(timeout))


def _describe_check(spec):
    kind = spec["kind"]
    if kind == "tcp":
        return "tcp %s:%s" % (spec["host"], spec["port"])
    if kind == "http":
        return "http %s" % spec["url"]
    if kind in ("unix", "file"):
        return "%s %s" % (kind, spec["path"])
    return kind


def wait(proc_id, check_specs, timeout, sleep=0.1):
    """Wait until the checks pass for an already started process."""
    proc = _get(proc_id)
    if proc is None:
        return _error("ExecutorError", "no such process id %s" % proc_id)
    built = checks.build(check_specs, log_paths=proc.log_paths())
    return _wait_ready(proc, built, time.monotonic() + timeout, sleep, timeout)


def probe(check_specs, timeout=PROBE_WAIT):
    """Whether every check passes right now (one probe each, bounded by
    ``timeout``): an executor's ``pre_start_check()``/``after_start_check()``
    called directly."""
    ok, _ = checks.probe_all(checks.build(check_specs), float(timeout))
    return {"ok": True, "passed": ok}


def read_log(proc_id, stream="out", offset=0, size=READ_CHUNK, wait=READ_WAIT, line=False):
    """Up to ``size`` bytes of a process's log from byte ``offset``.

    Waits up to ``wait`` seconds for data (for a whole line with ``line``)
    while the process tree lives: the master's reader then blocks as a pipe
    would. ``eof`` is true once the tree has ended and all is read.
    """
    proc = _get(proc_id)
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


def wait_exit(proc_id, timeout=READ_WAIT):
    """The main process's exit code, waiting up to ``timeout`` for it
    (None if it still runs): ``executor.process.wait()``."""
    proc = _get(proc_id)
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


def stop(proc_id, sig=None, timeout=10.0, expected_returncode=None):
    """Stop a process tree: ``sig`` to the group and marked pids, then SIGKILL."""
    proc = _get(proc_id)
    if proc is None:
        return {"ok": True, "returncode": None, "escalated": False}
    sig = int(sig or proc.stop_signal)
    proc.signal_tree(sig)
    escalated = not proc.wait_gone(time.monotonic() + float(timeout))
    if escalated:
        proc.signal_tree(signal.SIGKILL)
        proc.wait_gone(time.monotonic() + KILL_WAIT)
    rc = proc.poll()
    _retire(proc)
    command = _command_text(proc.command)
    if escalated:
        return _error(
            "TimeoutExpired",
            "stop %s: still running %gs after %s; killed with SIGKILL (%s)"
            % (timed_out_text(timeout), timeout, _signame(sig), _exit_text(rc)),
            command=command,
            exit_code=rc,
            output_tail=proc.tail(),
            escalated=True,
            timeout=timeout,
        )
    expected = -sig if expected_returncode is None else int(expected_returncode)
    if rc and rc != expected:
        return _error(
            "ProcessFinishedWithError",
            "the process %s after %s; expected %s"
            % (exited_text(rc), _signame(sig), _exit_text(expected)),
            command=command,
            exit_code=rc,
            output_tail=proc.tail(),
        )
    return {"ok": True, "returncode": rc, "escalated": False}


def kill(proc_id, sig=signal.SIGKILL, wait=True):
    """Send ``sig`` to the whole tree; with ``wait``, until it is gone."""
    proc = _get(proc_id)
    if proc is None:
        return {"ok": True, "returncode": None}
    proc.signal_tree(int(sig))
    if wait:
        if not proc.wait_gone(time.monotonic() + KILL_WAIT):
            return _error(
                "TimeoutExpired",
                "kill %s: the process tree is still alive %gs after %s"
                % (timed_out_text(KILL_WAIT), KILL_WAIT, _signame(sig)),
                command=_command_text(proc.command),
            )
        _retire(proc)
    return {"ok": True, "returncode": proc.poll()}


def forget(proc_id, timeout=2.0):
    """Forget a process tree the master no longer holds an executor for.

    A tree still alive gets its stop signal, ``timeout`` seconds, then
    SIGKILL (bounded by KILL_WAIT). It is then dropped from the tables and
    its log deleted (unless keep_logs), so a master that lives for hours and
    starts executors again and again does not grow the run directory.
    Returns ``{"ok": True, "was_running": bool}``; an unknown id is already
    forgotten (``was_running`` False). A tree that survives SIGKILL is kept
    (finish still tries) and reported as TimeoutExpired.
    """
    proc = _get(proc_id)
    if proc is None:
        return {"ok": True, "was_running": False}
    was_running = proc.alive()
    if was_running:
        proc.signal_tree(proc.stop_signal)
        if not proc.wait_gone(time.monotonic() + float(timeout)):
            proc.signal_tree(signal.SIGKILL)
            if not proc.wait_gone(time.monotonic() + KILL_WAIT):
                return _error(
                    "TimeoutExpired",
                    "process tree %s still alive %gs after SIGKILL" % (proc_id, KILL_WAIT),
                    command=_command_text(proc.command),
                )
    proc.poll()  # reap the main process, if not yet done
    proc.close_stdin()
    with STATE.lock:
        STATE.procs.pop(proc.id, None)
        STATE.finished.pop(proc.id, None)
    _drop_log(proc)
    return {"ok": True, "was_running": was_running}


def signal_proc(proc_id, sig):
    """Send ``sig`` to the main process only (SIGSTOP/SIGCONT and friends)."""
    proc = _get(proc_id)
    if proc is None or proc.poll() is not None:
        return _error("ExecutorError", "process %s is not running" % proc_id)
    _signal(proc.pid, int(sig))
    return {"ok": True}


def status(proc_id):
    proc = _get(proc_id)
    if proc is None:
        return {"ok": True, "running": False, "returncode": None, "pid": None}
    return proc.info()


def output(proc_id, lines=TAIL_LINES):
    proc = _get(proc_id)
    return {"ok": True, "output": proc.tail(lines) if proc else ""}


def run(command, shell=False, cwd=None, env=None, timeout=None, input=None):
    """Run a command to completion and capture its output (``Host.run``).

    The child carries the run's marker, so it dies with the run even if the
    master crashes mid-call.
    """
    _require_installed()
    marker = "%s.run%d" % (STATE.prefix, _next_id())
    started = time.monotonic()
    popen, error = _popen(
        command,
        shell,
        cwd,
        env,
        marker,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    if error:
        return error
    try:
        out, err = popen.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _signal(popen.pid, signal.SIGKILL, group=True)
        # Descendants that left the group may still hold the pipes.
        for pid in procs.pids_with_marker(MARKER, marker):
            _signal(pid, signal.SIGKILL)
        try:
            out, err = popen.communicate(timeout=KILL_WAIT)
        except subprocess.TimeoutExpired:
            popen.kill()
            for pipe in (popen.stdout, popen.stderr):
                pipe.close()
            popen.wait(KILL_WAIT)
            out, err = b"", b""
        procs.release_waited(popen)
        return _error(
            "TimeoutExpired",
            "command %s; killed" % timed_out_text(timeout),
            command=_command_text(command),
            output_tail=(out + err).decode("utf-8", "replace")[-4000:],
            timeout=timeout,
        )
    procs.release_waited(popen)
    return {
        "ok": True,
        "returncode": popen.returncode,
        "stdout": out,
        "stderr": err,
        "duration": time.monotonic() - started,
    }


def kill_all(grace=0.5):
    """Stop every process tree of this run: stop signals, ``grace``, SIGKILL."""
    with STATE.lock:
        items = list(STATE.procs.values())
        prefix = STATE.prefix
    for proc in items:
        proc.signal_tree(proc.stop_signal)
    deadline = time.monotonic() + grace
    for proc in items:
        proc.wait_gone(deadline)
    for proc in items:
        proc.signal_tree(signal.SIGKILL)
    if prefix:
        # Only this context's: other contexts of the run may share the machine.
        for pid in procs.pids_with_marker(MARKER, run_prefix=prefix):
            _signal(pid, signal.SIGKILL)
    for proc in items:
        proc.wait_gone(time.monotonic() + 1.0)
        _retire(proc)
    return {"ok": True, "killed": [p.pid for p in items]}


def remove_run_dir():
    """Delete the run directory (logs) after a clean close."""
    import shutil

    if STATE.run_dir:
        shutil.rmtree(STATE.run_dir, ignore_errors=True)
    return {"ok": True}


def finish_run():
    """The master closed, died or went silent: kill the run, drop its logs
    unless the master asked to keep them."""
    kill_all()
    if not STATE.keep_logs:
        remove_run_dir()


def _own_dir(path):
    """``path`` as a 0700 directory owned by us, or a fresh private one.

    /tmp is shared: never follow a symlink or use a directory someone else
    made there.
    """
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if stat_mod.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
        os.chmod(path, 0o700)
        return path
    return tempfile.mkdtemp(prefix="remoteexec-")


def _set_subreaper():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _module_source(module):
    """The source text of one of our modules, imported from disk or
    through mitogen's importer (both loaders implement get_source)."""
    loader = getattr(getattr(module, "__spec__", None), "loader", None)
    source = loader.get_source(module.__name__) if loader is not None else None
    if source is None:
        import inspect

        source = inspect.getsource(module)
    return source


GUARD_READY_WAIT = 5.0


def _start_guard(prefix):
    """Start this context's guard (see guard.py); return (Popen, write fd,
    None) or (None, None, error text).

    The pipe is made O_CLOEXEC: only the guard (through pass_fds) gets the
    read end, and no process spawned later inherits the write end, so the
    guard reads EOF exactly when this context is gone.
    """
    if not sys.executable:
        return None, None, "no python executable known (sys.executable is empty)"
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    try:
        popen = procs.spawn_waited(
            lambda: subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", guard.BOOTSTRAP, prefix, str(read_fd)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(read_fd,),
                close_fds=True,
                start_new_session=True,
                cwd="/",
            )
        )
    except OSError as e:
        os.close(write_fd)
        return None, None, "cannot start the guard with %s: %s" % (sys.executable, e)
    finally:
        os.close(read_fd)
    payload = guard.stdin_payload(_module_source(procs), _module_source(guard))
    ready = b""
    try:
        popen.stdin.write(payload)  # ~15 KB: fits the pipe, never blocks
        popen.stdin.close()
        deadline = time.monotonic() + GUARD_READY_WAIT
        while not ready.endswith(b"\n") and time.monotonic() < deadline:
            readable, _, _ = select.select([popen.stdout], [], [], deadline - time.monotonic())
            chunk = os.read(popen.stdout.fileno(), 64) if readable else b""
            if not chunk:
                break
            ready += chunk
    except OSError:
        pass
    if ready != b"ready\n":
        popen.kill()
        popen.wait(KILL_WAIT)
        procs.release_waited(popen)
        why = popen.stderr.read()[-2000:].decode("utf-8", "replace").strip()
        popen.stdout.close()
        popen.stderr.close()
        os.close(write_fd)
        return None, None, "the guard did not start: %s" % (why or "no answer")
    popen.stdout.close()
    popen.stderr.close()
    os.set_blocking(write_fd, False)
    return popen, write_fd, None


def tell_guard(pid):
    """Tell the guard that ``pid`` leads a new session of ours, with its
    start time (so a reused pid is not taken for it).

    Needed because a process may rewrite its environment (Tarantool does)
    and lose the marker. The write is one line, under PIPE_BUF so atomic
    across threads; it never blocks for more than a second on a stalled
    guard, and a dead guard is reported once, not on every spawn.
    """
    fd = STATE.guard_fd
    fields = procs.stat_fields(pid) if fd is not None else None
    if fields is None:
        return
    line = b"+%d %d\n" % (pid, fields[3])
    deadline = time.monotonic() + 1.0
    while True:
        try:
            os.write(fd, line)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                LOG.error("the guard does not read its pipe: session %d not registered", pid)
                return
            time.sleep(0.001)
        except OSError as e:
            # Never close the fd here: another thread may be writing to it,
            # and a reused fd number would send its line to some other file.
            LOG.error("the guard is gone (%s): the run is not guarded any more", e)
            STATE.guard_fd = None
            STATE.guard_error = "the guard exited: %s" % e
            return


def _watchdog(recv, timeout):
    """Kill everything and exit when the master's heartbeats stop."""
    while True:
        try:
            msg = recv.get(timeout=timeout)
        except mitogen.core.TimeoutError:
            LOG.error("no heartbeat from the master for %ss: killing the run", timeout)
            try:
                finish_run()
            finally:
                os._exit(70)
        except mitogen.core.ChannelError:
            return
        if msg.is_dead:
            return
        if msg.reply_to:
            msg.reply(time.time())
        # Daemons of ours that died on their own would stay zombies.
        procs.reap_orphans()


@mitogen.core.takes_econtext
def install(
    run_id,
    context_token="c0",
    heartbeat_timeout=10.0,
    base_dir=None,
    pool_size=16,
    keep_logs=False,
    econtext=None,
):
    """Set this context up as the run's supervisor; call once after connect.

    Creates the 0700 run directory, becomes a child subreaper, starts the
    service pool (so status calls never wait behind a long call on the main
    thread), hooks :func:`kill_all` to the broker's shutdown, and starts the
    heartbeat watchdog. Returns facts about the target.
    """
    with STATE.lock:
        if STATE.run_id is None:
            root = base_dir or os.path.join(tempfile.gettempdir(), "remoteexec-%d" % os.getuid())
            prefix = "%s.%s" % (run_id, context_token)
            run_dir = os.path.join(_own_dir(root), "%s-%s" % (run_id, context_token))
            os.makedirs(run_dir, 0o700, exist_ok=True)
            os.chmod(run_dir, 0o700)
            STATE.run_id = run_id
            STATE.prefix = prefix
            STATE.run_dir = run_dir
            STATE.subreaper = _set_subreaper()
            STATE.guard, STATE.guard_fd, STATE.guard_error = _start_guard(prefix)
            if STATE.guard_error:
                LOG.error("%s; processes may outlive a killed context", STATE.guard_error)
            # Before the pool: shutdown listeners run in order, and the pool's
            # joins its threads, which may be waiting on our processes.
            STATE.keep_logs = bool(keep_logs)
            mitogen.core.listen(econtext.broker, "shutdown", finish_run)
            mitogen.service.get_or_create_pool(size=pool_size, router=econtext.router)
            recv = mitogen.core.Receiver(econtext.router)
            threading.Thread(
                target=_watchdog,
                args=(recv, float(heartbeat_timeout)),
                name="remoteexec-watchdog",
                daemon=True,
            ).start()
            STATE.heartbeat_handle = recv.handle
    return {
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "run_dir": STATE.run_dir,
        "heartbeat_handle": STATE.heartbeat_handle,
        "psutil": procs.HAVE_PSUTIL,
        "subreaper": STATE.subreaper,
        "guard_pid": STATE.guard.pid if STATE.guard else None,
        "guard_error": STATE.guard_error,
        "python": sys.version.split()[0],
        "uid": os.getuid(),
    }


def _resolve(module, qualname):
    import importlib

    target = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def _raised(what, e):
    """The error dict for exception ``e`` raised in ``what`` (bounded, as
    mitogen refuses a CallError over 9999 characters and loses its type)."""
    message = str(e)[:2000]
    return _error(
        "RemoteCallError",
        "%s raised %s: %s" % (what, type(e).__name__, message),
        type_name=type(e).__name__,
        remote_message=message,
        remote_traceback=traceback.format_exc()[-4000:],
    )


def call_function(module, qualname, args, kwargs):
    """Run ``module.qualname(*args, **kwargs)`` for ``Host.call``."""
    try:
        return {"ok": True, "result": _resolve(module, qualname)(*args, **kwargs)}
    except Exception as e:
        return _raised("call %s()" % qualname, e)


def _guarded(fn):
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            return _raised(fn.__name__, e)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


_ALLOW = mitogen.service.AllowParents()


def _method(fn):
    guarded = _guarded(fn)

    def method(self, **kwargs):
        return guarded(**kwargs)

    method.__name__ = fn.__name__
    method.__doc__ = fn.__doc__
    return mitogen.service.expose(_ALLOW)(method)


def invoke(function, args=(), kwargs=None):
    """Call a target-side function by dotted name, on a pool thread.

    Only functions under ``remoteexec.target`` may be named: the pool must
    not become a way around mitogen's own call policy.
    """
    module_name, _, attr = function.rpartition(".")
    if not module_name.startswith("remoteexec.target"):
        raise ValueError("only remoteexec.target functions may be invoked, not %s" % function)
    return _resolve(module_name, attr)(*args, **(kwargs or {}))


class Supervisor(mitogen.service.Service):
    """The supervisor's calls, served by the context's thread pool.

    Served from the pool rather than the main thread, so ``running()``,
    ``output()`` and stops never queue behind a long ``Host.call``.
    """

    start = _method(start)
    wait = _method(wait)
    stop = _method(stop)
    kill = _method(kill)
    signal = _method(signal_proc)
    forget = _method(forget)
    status = _method(status)
    output = _method(output)
    read = _method(read_log)
    wait_exit = _method(wait_exit)
    probe = _method(probe)
    run = _method(run)
    finish = _method(finish_run)
    invoke = _method(invoke)

    @mitogen.service.expose(_ALLOW)
    def ping(self):
        return {"ok": True, "pid": os.getpid(), "time": time.time()}
