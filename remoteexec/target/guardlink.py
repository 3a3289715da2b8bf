"""The supervisor's end of the guard (:mod:`.guard`): start it, tell it each session.

The guard is a separate small process that kills this context's process
trees when the context itself is killed. Install only arms it (records the
run's marker prefix); this module starts it right before the context's
first guarded process is spawned (:meth:`GuardLink.ensure`, called by
:func:`.spawn.popen`), so a context that never starts a process (one used
only for ``Host.call``) never pays for a second interpreter, and every
process it does start has a guard before it exists. It then writes the guard
every session the supervisor creates.
"""

from __future__ import annotations

import logging
import os
import select
import sys
import threading
import time
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

from . import guard, procs

if TYPE_CHECKING:  # imported when the guard starts: install does not need it
    import subprocess

LOG = logging.getLogger("remoteexec.target")

#: How long install waits for the guard's "ready" line.
GUARD_READY_WAIT = 5.0
#: How long a failed guard gets to die after SIGKILL.
KILL_WAIT = 5.0


class GuardLink:
    """This context's guard: its Popen, the write end of its pipe, or why there is none."""

    def __init__(self) -> None:
        self.popen: Optional[subprocess.Popen[bytes]] = None
        self.fd: Optional[int] = None
        self.error: Optional[str] = None
        #: The run's marker prefix, once armed; the guard starts on first need.
        self.prefix: Optional[str] = None
        self.started = False
        #: The guard let its pipe fill up (stopped, starved): tells do not
        #: wait for it until one goes through again.
        self.stalled = False
        #: Sessions the guard was never told (its pipe was full).
        self.missed = 0
        self._first: Optional[Callable[[], None]] = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> Optional[int]:
        return self.popen.pid if self.popen else None

    def arm(self, prefix: str, first: Optional[Callable[[], None]] = None) -> None:
        """Guard marker prefix ``prefix`` from the first spawn on (once, at
        install); ``first`` runs right before the guard starts."""
        self._first = first
        self.prefix = prefix

    def ensure(self) -> None:
        """Start the guard unless it was started (or tried) already: called
        before every guarded spawn, so no process of ours exists unguarded.
        Concurrent spawns wait for the one start; a failed start is reported
        once (``error``) and not retried, as the spawn goes on without it."""
        if self.started or self.prefix is None:
            return
        with self._lock:
            if not self.started:
                if self._first is not None:
                    self._first()
                self.start(self.prefix)

    def start(self, prefix: str) -> None:
        """Start the guard for marker prefix ``prefix`` now (once)."""
        self.popen, self.fd, self.error = start_guard(prefix)
        self.started = True
        if self.error:
            LOG.error("%s; processes may outlive a killed context", self.error)

    def tell(self, pid: int, earliest: int, latest: int) -> None:
        """Tell the guard that ``pid`` leads a new session of ours, forked
        between ``earliest`` and ``latest`` (:func:`.procs.boot_ticks`), so a
        later process that reuses the pid is not taken for it.

        Needed because a process may rewrite its environment (Tarantool does)
        and lose the marker. The write is one line, under PIPE_BUF so atomic
        across threads; it never blocks for more than a second on a stalled
        guard, and then not again until the guard reads (each spawn would
        wait its second); a dead guard is reported once, not on every spawn.
        """
        fd = self.fd
        if fd is None:
            return
        line = b"+%d %d %d\n" % (pid, earliest, latest)
        deadline = time.monotonic() + (0.0 if self.stalled else 1.0)
        while True:
            try:
                os.write(fd, line)
                if self.stalled:
                    self.stalled = False
                    LOG.warning("the guard reads its pipe again")
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self._missed(pid)
                    return
                time.sleep(0.001)
            except OSError as e:
                # Never close the fd here: another thread may be writing to it,
                # and a reused fd number would send its line to some other file.
                LOG.error("the guard is gone (%s): the run is not guarded any more", e)
                self.fd = None
                self.error = "the guard exited: %s" % e
                return

    def _missed(self, pid: int) -> None:
        """Session ``pid`` could not be told: say so (in :func:`status` too)."""
        self.missed += 1
        self.error = (
            "the guard does not read its pipe: %d session(s) not registered, the last %d"
            " (their processes are still found by their marker)" % (self.missed, pid)
        )
        if not self.stalled:
            self.stalled = True
            LOG.error("%s; not waiting for it until it reads again", self.error)


#: The one guard link of this context.
GUARD = GuardLink()


def status() -> Dict[str, Any]:
    """Whether this context's guard was started, its pid and why it failed
    (``Host.invoke("remoteexec.target.guardlink.status")``): it starts with
    the first process, after install has answered."""
    return {"started": GUARD.started, "pid": GUARD.pid, "error": GUARD.error}


def module_source(module: ModuleType) -> str:
    """The source text of one of our modules, imported from disk or
    through mitogen's importer (both loaders implement get_source)."""
    loader = getattr(getattr(module, "__spec__", None), "loader", None)
    # pytest's assertion rewriter (our package is a pytest plugin) has none.
    get_source = getattr(loader, "get_source", None)
    source = get_source(module.__name__) if get_source is not None else None
    if source is None:
        import inspect

        source = inspect.getsource(module)
    return str(source)


def _await_ready(popen: subprocess.Popen[bytes]) -> bytes:
    """What the guard answered within GUARD_READY_WAIT (b"ready\\n" when well)."""
    assert popen.stdout is not None
    ready = b""
    deadline = time.monotonic() + GUARD_READY_WAIT
    while not ready.endswith(b"\n") and time.monotonic() < deadline:
        readable, _, _ = select.select([popen.stdout], [], [], deadline - time.monotonic())
        chunk = os.read(popen.stdout.fileno(), 64) if readable else b""
        if not chunk:
            break
        ready += chunk
    return ready


def start_guard(
    prefix: str,
) -> Tuple[Optional[subprocess.Popen[bytes]], Optional[int], Optional[str]]:
    """Start this context's guard (see guard.py); return (Popen, write fd,
    None) or (None, None, error text).

    The pipe is made O_CLOEXEC: only the guard (through pass_fds) gets the
    read end, and no process spawned later inherits the write end, so the
    guard reads EOF exactly when this context is gone.
    """
    import subprocess

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
    assert popen.stdin is not None and popen.stdout is not None and popen.stderr is not None
    payload = guard.stdin_payload(module_source(procs), module_source(guard))
    ready = b""
    try:
        popen.stdin.write(payload)  # ~15 KB: fits the pipe, never blocks
        popen.stdin.close()
        ready = _await_ready(popen)
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
