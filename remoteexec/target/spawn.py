"""Spawning and signalling process trees.

Every process is spawned in its own session, with ``REMOTEEXEC_RUN`` set to
its marker (``<run_id>.<context>.<n>``, matched exactly, never as a
substring), stdin from /dev/null (or, for executors, as in mirakuru, a pipe
whose write end the supervisor holds open) and stdout+stderr appended to a
0600 log file in the run's directory (stderr to a second one when asked to
keep it apart). No output is piped, so a chatty child can never block on a
full pipe; the output is read back from the files.

A stop is killpg(stop_signal) plus the same signal to every marked process
that left the group (each process gets it once), a bounded wait, then
SIGKILL for all of them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple, Union

from . import files, procs, protocol
from .guardlink import GUARD

if TYPE_CHECKING:  # imported where used: a context that never spawns does not pay for it
    import subprocess

MARKER = procs.MARKER
#: How long a SIGKILLed tree gets to disappear.
KILL_WAIT = 5.0

Argv = Union[str, List[str]]
#: What a spawn returns: the process, or the error reply saying why not.
Spawned = Tuple[Optional["subprocess.Popen[bytes]"], Optional[Dict[str, Any]]]


def signal_pid(pid: int, sig: int, group: bool = False) -> None:
    """``sig`` to ``pid`` (or its process group); a pid that is gone or not
    ours is no error."""
    try:
        (os.killpg if group else os.kill)(pid, sig)
    except OSError as e:
        if e.errno not in (errno.ESRCH, errno.EPERM):
            raise


def argv_of(command: protocol.Command, shell: bool) -> Argv:
    """What Popen takes: a string for the shell, an argument list otherwise."""
    if shell:
        if isinstance(command, str):
            return command
        return " ".join(shlex.quote(str(c)) for c in command)
    if isinstance(command, str):
        return shlex.split(command)
    return [str(c) for c in command]


def safe_name(text: str) -> str:
    """``text`` reduced to a short file-name-safe word."""
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
    return keep[:40] or "proc"


def popen_error(
    e: OSError, program: str, cwd: Optional[str], command: protocol.Command
) -> Dict[str, Any]:
    """The error reply for a spawn that failed with ``e``."""
    text = protocol.command_text(command)
    if cwd and not os.path.isdir(cwd):
        return protocol.error(
            "ExecutorError", "working directory %s does not exist" % cwd, command=text
        )
    if isinstance(e, FileNotFoundError):
        return protocol.error(
            "CommandNotFound",
            "command not found: %s (PATH=%s)" % (program, os.environ.get("PATH", "")[:200]),
            command=text,
        )
    if isinstance(e, PermissionError):
        return protocol.error(
            "CommandNotFound", "not executable: %s (%s)" % (program, e), command=text
        )
    return protocol.error("ExecutorError", "cannot start %s: %s" % (program, e), command=text)


def popen(
    command: protocol.Command,
    shell: bool,
    cwd: Optional[str],
    env: Optional[Mapping[str, Any]],
    marker: str,
    environ: Optional[Mapping[str, str]] = None,
    guard: bool = True,
    **stdio: Any,
) -> Spawned:
    """Start one child in its own session, carrying ``marker`` in its
    environment; return (Popen, None) or (None, error reply).

    ``environ`` replaces this context's environment (the master's own, for
    a local executor: mirakuru takes ``os.environ`` at start); ``env`` is
    added on top. The child is registered with the guard unless ``guard``
    is false (a detached service: it must outlive this context).
    """
    import subprocess

    argv = argv_of(command, shell)
    full_env = dict(os.environ if environ is None else environ)
    full_env.update({str(k): str(v) for k, v in (env or {}).items()})
    full_env[MARKER] = marker
    if guard:
        GUARD.ensure()  # the guard exists before the first process it guards
    earliest = procs.boot_ticks()
    try:
        child = procs.spawn_waited(
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
        program = argv if isinstance(argv, str) else argv[0]
        return None, popen_error(e, program, cwd, command)
    if guard:
        GUARD.tell(child.pid, earliest, procs.boot_ticks())
    return child, None


def stop_file(exit_path: str) -> None:
    """Tell a keeper that its service is being stopped, before any signal: it
    must not restart it, even if the service's end reaches it first."""
    with contextlib.suppress(OSError):
        os.close(os.open(exit_path + ".stop", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))


def restart_args(spec: Mapping[str, Any]) -> List[str]:
    """The keeper's RESTARTS and BACKOFF for ``spec``'s restart policy: a
    detached service's restarts are the keeper's, for as long as it lives."""
    if (spec.get("restart") or "no") != "on-failure" or not spec.get("max_restarts"):
        return []
    return [str(int(spec["max_restarts"])), repr(float(spec.get("restart_backoff", 1.0)))]


def service_of(keeper: int, wait: float = 2.0) -> int:
    """The pid of the service a keeper forked (the keeper's own if it has
    none within ``wait`` seconds: it failed, its log says why)."""
    deadline = time.monotonic() + wait
    path = "/proc/%d/task/%d/children" % (keeper, keeper)
    while True:
        try:
            with open(path, encoding="ascii") as f:
                children = f.read().split()
        except OSError:
            children = []
        if children:
            return int(children[0])
        if time.monotonic() >= deadline or not procs.is_alive(keeper):
            return keeper
        time.sleep(0.002)


class Proc:
    """One process tree started by the supervisor.

    The tree keeps its id, marker and logs across restarts (the restart
    policy, :mod:`.restarts`); ``popen`` and ``pid`` are the current main
    process.
    """

    def __init__(
        self,
        proc_id: int,
        spec: Mapping[str, Any],
        marker: str,
        log_path: str,
        err_log_path: Optional[str] = None,
    ) -> None:
        self.id = proc_id
        self.spec = dict(spec)
        self.name: str = spec.get("name") or ""
        self.command: protocol.Command = spec["command"]
        self.stop_signal = int(spec.get("stop_signal") or signal.SIGTERM)
        self.kill_signal = int(spec.get("kill_signal") or signal.SIGKILL)
        self.marker = marker
        self.log_path = log_path
        self.err_log_path = err_log_path
        #: Set for a detached service (:mod:`.project`): run under its keeper,
        #: not guarded, left running when this context ends.
        self.detach: Optional[Dict[str, Any]] = spec.get("detach")
        #: The readiness checks of its start (a detached service's ``status`` re-runs them).
        self.checks: List[Dict[str, Any]] = []
        self.popen: Optional[subprocess.Popen[bytes]] = None
        self.pid = 0
        self.started = time.time()
        #: The write end of the process's stdin pipe, held open so that a
        #: process reading stdin waits, as under mirakuru (None: /dev/null).
        self.stdin_fd: Optional[int] = None
        #: Where a reader of each log starts: past the banner line that
        #: made an OutputExecutor ready, as mirakuru consumed it.
        self.read_from = {"out": 0, "err": 0}
        #: The last readiness layer reached ("process", "ready"), and since when.
        self.readiness: Optional[str] = None
        self.state = "starting"
        self.since = time.time()
        #: Restarts made by the restart policy, and the exit code that caused the last.
        self.restarts = 0
        self.last_exit: Optional[int] = None
        #: Set once a stop, kill or forget began: no restart after that.
        self.stopping = threading.Event()
        #: Held while the main process is replaced by a restart.
        self.lock = threading.Lock()

    def enter(self, state: str, readiness: Optional[str] = None) -> None:
        """Record a new state (and readiness layer) as of now, on the host's clock."""
        self.state, self.since = state, time.time()
        if readiness is not None:
            self.readiness = readiness

    def launch(self) -> Optional[Dict[str, Any]]:
        """Spawn (or spawn again) the main process into this tree's logs;
        None, or the error reply."""
        import subprocess

        spec = self.spec
        if self.detach is not None:
            return self.launch_detached(self.detach)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        opened: List[int] = []
        stdin_fd: Optional[int] = None
        try:
            log_fd = os.open(self.log_path, flags, 0o600)
            opened.append(log_fd)
            err_fd = log_fd
            if self.err_log_path:
                err_fd = os.open(self.err_log_path, flags, 0o600)
                opened.append(err_fd)
            stdin: int = subprocess.DEVNULL
            if spec.get("stdin") == "pipe":
                stdin, stdin_fd = os.pipe2(os.O_CLOEXEC)
                opened.append(stdin)
            child, err = popen(
                self.command,
                bool(spec.get("shell")),
                spec.get("cwd"),
                spec.get("env"),
                self.marker,
                environ=spec.get("environ"),
                stdin=stdin,
                stdout=log_fd,
                stderr=err_fd,
            )
        except BaseException:  # not only OSError: Popen refuses a NUL byte with ValueError
            if stdin_fd is not None:
                os.close(stdin_fd)
            raise
        finally:
            for fd in opened:
                os.close(fd)
        if err or child is None:
            if stdin_fd is not None:
                os.close(stdin_fd)
            return err
        self.close_stdin()
        self.popen, self.pid, self.stdin_fd = child, child.pid, stdin_fd
        return None

    def launch_detached(self, detach: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        """Spawn the main process under its keeper (:mod:`.keeper`): the
        keeper leads the session, writes the bounded log and the exit code;
        no pipe or file of this context is passed on, and the guard is not told."""
        import shutil
        import subprocess

        spec = self.spec
        argv = argv_of(self.command, bool(spec.get("shell")))
        command = ["/bin/sh", "-c", argv] if isinstance(argv, str) else argv
        env = dict(os.environ if spec.get("environ") is None else spec["environ"])
        env.update({str(k): str(v) for k, v in (spec.get("env") or {}).items()})
        cwd = spec.get("cwd")
        program = command[0]
        if os.sep not in program and not shutil.which(program, path=env.get("PATH")):
            return popen_error(FileNotFoundError(program), program, cwd, self.command)
        keeper = [
            sys.executable,
            "-I",
            "-S",
            str(detach["keeper"]),
            self.log_path,
            str(int(detach["log_cap"])),
            str(int(detach["log_keep"])),
            self.log_path + ".exit",
            *restart_args(spec),
            "--",
            *command,
        ]
        child, err = popen(
            keeper,
            False,
            cwd,
            spec.get("env"),
            self.marker,
            environ=spec.get("environ"),
            guard=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if err or child is None:
            return err
        self.popen, self.pid = child, service_of(child.pid)
        return None

    def log_paths(self) -> List[str]:
        return [p for p in (self.log_path, self.err_log_path) if p]

    def close_stdin(self) -> None:
        fd, self.stdin_fd = self.stdin_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def poll(self) -> Optional[int]:
        """The main process's exit code, None while it runs (reaps it)."""
        child = self.popen
        if child is None:
            return None
        rc = child.poll()
        if rc is not None:
            procs.release_waited(child)
        return rc

    def marked(self, within: Optional[int] = None) -> List[int]:
        """Live processes carrying this tree's marker (the main one included);
        with ``within``, only among that pid's descendants."""
        found = procs.pids_with_marker(MARKER, self.marker, within=within)
        return [p for p in found if procs.is_alive(p)]

    def signal_tree(self, sig: int) -> None:
        """``sig`` to the process group, and to marked pids that left it.

        Each process gets the signal once: a second SIGTERM would cut short a
        graceful shutdown that the first one started.
        """
        group_alive = self.poll() is None
        if group_alive:
            signal_pid(self.pid, sig, group=True)
        for pid in self.marked():
            try:
                in_group = group_alive and os.getpgid(pid) == self.pid
            except OSError:
                continue
            if not in_group:
                signal_pid(pid, sig)

    def lingering(self) -> bool:
        """Whether a marked process of the tree lives.

        This context is the trees' subreaper, so their processes stay under
        it: a walk of its subtree is cheap enough for a wait loop. Only when
        that finds none does a scan of every process confirm it.
        """
        return bool(self.marked(within=os.getpid()) or self.marked())

    def alive(self) -> bool:
        """True while the main process or any marked descendant lives."""
        procs.reap_orphans()
        if self.poll() is None or self.lingering():
            return True
        procs.reap_orphans()  # one may have died between the first reap and the scan
        return False

    def wait_gone(self, deadline: float) -> bool:
        """Wait until the tree is gone or ``deadline`` (monotonic); whether it is gone."""
        delay = 0.002
        while self.alive():
            now = time.monotonic()
            if now >= deadline:
                return False
            time.sleep(min(delay, deadline - now))
            delay = min(delay * 2, 0.05)
        return True

    def halt(self, sig: int, timeout: float) -> bool:
        """``sig`` to the tree, ``timeout`` seconds, then SIGKILL (bounded by
        KILL_WAIT); no restart after it. Whether it had to escalate."""
        self.stopping.set()
        with self.lock:
            if self.detach is not None:
                stop_file(self.log_path + ".exit")
            self.signal_tree(sig)
            if sig not in (signal.SIGKILL, signal.SIGCONT):
                # As systemd does: a stopped (paused) process sees the stop
                # signal only once continued; otherwise it waits out ``timeout``.
                self.signal_tree(signal.SIGCONT)
        escalated = not self.wait_gone(time.monotonic() + timeout)
        if escalated:
            self.signal_tree(signal.SIGKILL)
            self.wait_gone(time.monotonic() + KILL_WAIT)
        return escalated

    def restart_due(self, rc: int) -> bool:
        """Whether the restart policy restarts the tree after exit code ``rc``:
        a non-zero exit (or a signal no stop of ours sent), restarts left."""
        if self.spec.get("restart") != "on-failure" or self.stopping.is_set():
            return False
        return rc != 0 and self.restarts < int(self.spec.get("max_restarts") or 0)

    def running(self) -> bool:
        rc = self.poll()
        if rc is None:
            return True
        return rc == 0 and self.lingering()

    def tail(self, lines: int = protocol.TAIL_LINES) -> str:
        out = files.tail(self.log_path, lines)
        err = files.tail(self.err_log_path, lines)
        if not err:
            return out
        return "%s\n--- stderr ---\n%s" % (out, err) if out else err

    def info(self) -> protocol.ProcInfo:
        rc = self.poll()
        running = self.running()
        if rc is not None and not running and self.state in ("running", "ready"):
            # A restart pending: starting again, not exited (the watcher acts).
            self.enter("starting" if self.restart_due(rc) else "exited")
        return {
            "ok": True,
            "id": self.id,
            "pid": self.pid,
            "marker": self.marker,
            "log_path": self.log_path,
            "err_log_path": self.err_log_path,
            "read_from": dict(self.read_from),
            "running": running,
            "returncode": rc,
            "state": self.state,
            "readiness": self.readiness,
            "since": self.since,
            "restarts": self.restarts,
            "last_exit": self.last_exit if rc is None else rc,
        }
