"""The run's state on this host, and the watchdog that ends it.

One run state lives in each context (one per host per Master): the run id,
the marker prefix, the 0700 run directory, the process trees that run and
the last :data:`FINISHED_KEPT` finished ones. When the master goes away
(clean exit, crash, SIGKILL, ssh dying: mitogen's broker ``shutdown``; or a
silent partition: heartbeats stop, seen by :func:`watchdog`), every process
tree of the run is killed (:func:`finish_run`) and the context exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from typing import Any, Dict, Mapping, Optional, Tuple

import mitogen.core

from . import files, procs, protocol
from .guardlink import GUARD
from .spawn import MARKER, Proc, argv_of, safe_name, signal_pid

LOG = logging.getLogger("remoteexec.target")

PR_SET_CHILD_SUBREAPER = 36
FINISHED_KEPT = 256


class RunState:
    """What this context knows about its run."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.run_id: Optional[str] = None
        self.prefix: Optional[str] = None
        self.run_dir: Optional[str] = None
        self.procs: Dict[int, Proc] = {}
        self.finished: Dict[int, Proc] = {}
        self.seq = 0
        self.subreaper = False
        self.heartbeat_handle: Optional[int] = None
        self.keep_logs = False
        #: Set while a detached ``up`` runs in this context (:func:`.project.begin`):
        #: what every spawn then gets as ``spec["detach"]``.
        self.detach: Optional[Dict[str, Any]] = None


STATE = RunState()


def require_installed() -> None:
    if STATE.run_id is None:
        raise RuntimeError("remoteexec supervisor not installed in this context")


def get(proc_id: int) -> Optional[Proc]:
    """The tree ``proc_id``, running or finished, or None."""
    with STATE.lock:
        return STATE.procs.get(proc_id) or STATE.finished.get(proc_id)


def next_id() -> int:
    with STATE.lock:
        STATE.seq += 1
        return STATE.seq


def drop_log(proc: Proc) -> None:
    """Delete ``proc``'s logs unless the master asked to keep logs (a
    detached service's belong to its project)."""
    if not STATE.keep_logs and proc.detach is None:
        for path in proc.log_paths():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def retire(proc: Proc) -> None:
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
        drop_log(old)


def drop(proc: Proc) -> None:
    """Forget ``proc`` entirely: tables and log."""
    proc.close_stdin()
    with STATE.lock:
        STATE.procs.pop(proc.id, None)
        STATE.finished.pop(proc.id, None)
    drop_log(proc)


def spawn_tree(spec: Mapping[str, Any]) -> Tuple[Optional[Proc], Optional[Dict[str, Any]]]:
    """Start a process tree of this run; return (Proc, None) or (None, error reply)."""
    require_installed()
    assert STATE.run_dir is not None
    proc_id = next_id()
    argv = argv_of(spec["command"], bool(spec.get("shell")))
    program = argv if isinstance(argv, str) else os.path.basename(argv[0])
    name = spec.get("name") or program.split()[0]
    detach = spec.get("detach") or STATE.detach
    if detach is not None:
        # A detached service: its log in the project's directory (one file,
        # the keeper merges stderr), its marker outside this run's prefix,
        # so neither the guard nor kill_all ever matches it.
        spec = dict(spec, detach=detach, stdin=None, stderr=None)
        base = os.path.join(detach["logs"], "%s-%s-%d" % (safe_name(name), detach["tag"], proc_id))
        marker = "%s.%d" % (detach["marker"], proc_id)
    else:
        base = os.path.join(STATE.run_dir, "%s-%d" % (safe_name(name), proc_id))
        marker = "%s.%d" % (STATE.prefix, proc_id)
    err_log_path = base + ".err.log" if spec.get("stderr") == "separate" else None
    proc = Proc(proc_id, dict(spec, name=name), marker, base + ".log", err_log_path)
    err = proc.launch()
    if err:
        return None, err
    with STATE.lock:
        STATE.procs[proc_id] = proc
    return proc, None


def kill_all(grace: float = 0.5) -> protocol.KillAllReply:
    """Stop every process tree of this run: stop signals, ``grace``, SIGKILL."""
    with STATE.lock:
        # A detached service outlives the context by design.
        items = [p for p in STATE.procs.values() if p.detach is None]
        prefix = STATE.prefix
    for proc in items:
        proc.stopping.set()
        proc.signal_tree(proc.stop_signal)
    deadline = time.monotonic() + grace
    for proc in items:
        proc.wait_gone(deadline)
    for proc in items:
        proc.signal_tree(signal.SIGKILL)
    if prefix:
        # Only this context's: other contexts of the run may share the machine.
        for pid in procs.pids_with_marker(MARKER, run_prefix=prefix):
            signal_pid(pid, signal.SIGKILL)
    for proc in items:
        proc.wait_gone(time.monotonic() + 1.0)
        retire(proc)
    return {"ok": True, "killed": [p.pid for p in items]}


def remove_run_dir() -> protocol.OkReply:
    """Delete the run directory (logs) after a clean close."""
    if STATE.run_dir:
        import shutil  # here: ~2.5 ms (bz2, lzma) that install does not need

        shutil.rmtree(STATE.run_dir, ignore_errors=True)
    return {"ok": True}


def finish_run() -> None:
    """The master closed, died or went silent: kill the run, drop its logs
    unless the master asked to keep them."""
    kill_all()
    if not STATE.keep_logs:
        remove_run_dir()


def start_watchdog(router: mitogen.core.Router, timeout: float) -> int:
    """Start the heartbeat watchdog thread; the handle the master's heartbeats go to.
    Only a parent may send there: another context's beats would keep a run whose
    master is gone alive, and its dead message would end the watchdog."""
    recv = mitogen.core.Receiver(router, policy=mitogen.core.has_parent_authority)
    threading.Thread(
        target=_watchdog,
        args=(recv, float(timeout)),
        name="remoteexec-watchdog",
        daemon=True,
    ).start()
    return int(recv.handle)


def _watchdog(recv: mitogen.core.Receiver, timeout: float) -> None:
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


def set_subreaper() -> bool:
    """Become a child subreaper (orphans of our trees become our children)."""
    import ctypes  # here: ~1 MB and ~3 ms that a context with no process never pays

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def become_subreaper() -> None:
    """Become a child subreaper, before the first process is spawned."""
    STATE.subreaper = set_subreaper()


#: Where :func:`temp_root` looks, after $TMPDIR, $TEMP and $TMP (tempfile's order).
TEMP_DIRS = ("/tmp", "/var/tmp", "/usr/tmp")


def temp_root() -> str:
    """The directory the run directories go under: the first of $TMPDIR,
    $TEMP, $TMP and :data:`TEMP_DIRS` that is a directory this user may write
    to; else the working directory. ``tempfile.gettempdir()`` says much the
    same, but importing tempfile (with shutil and random) costs install ~3 ms
    of CPU per context."""
    named = [os.environ.get(name) for name in ("TMPDIR", "TEMP", "TMP")]
    for path in [p for p in named if p] + list(TEMP_DIRS):
        if os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK):
            return os.path.abspath(path)
    return os.getcwd()


def set_up(run_id: str, context_token: str, base_dir: Optional[str], keep_logs: bool) -> bool:
    """Make the run's state (once per context); whether this call made it.

    Creates the 0700 run directory and arms the guard: right before the
    first process is spawned, the context becomes a child subreaper and the
    guard starts (a context that never spawns pays for neither).
    """
    with STATE.lock:
        if STATE.run_id is not None:
            return False
        root = base_dir or os.path.join(temp_root(), "remoteexec-%d" % os.getuid())
        prefix = "%s.%s" % (run_id, context_token)
        run_dir = os.path.join(files.own_dir(root), "%s-%s" % (run_id, context_token))
        os.makedirs(run_dir, 0o700, exist_ok=True)
        os.chmod(run_dir, 0o700)
        STATE.run_id = run_id
        STATE.prefix = prefix
        STATE.run_dir = run_dir
        GUARD.arm(prefix, become_subreaper)
        STATE.keep_logs = bool(keep_logs)
        return True
