"""SimpleExecutor and Executor: mirakuru's lifecycle, run on any host.

The constructor arguments and defaults are mirakuru 3.1's, plus ``on`` (the
Host; None means this machine through a lazily created local context),
``wait`` (extra :mod:`remoteexec.waits` conditions), ``stop_timeout`` and
``name``. Differences from mirakuru, on purpose:

- ``stdin``/``stdout``/``stderr``/``popen_kwargs`` are accepted for
  compatibility but ignored: output always goes to a log file on the host
  (never an undrained pipe); read it with :meth:`SimpleExecutor.output`.
- ``stop()`` waits ``stop_timeout`` (default: ``timeout``, as mirakuru)
  after the stop signal, then SIGKILLs the tree and raises TimeoutExpired:
  a stop that had to escalate is reported, not swallowed.
- ``running()`` is also True for a daemonizer whose main process exited 0
  while a process it started still runs.
- ``stopped()`` on a stopped executor just yields.
- Readiness is polled from 5 ms, doubling up to ``sleep``.
- Bad arguments (a NaN or non-positive time, an empty command, an
  environment value that is not a str) raise ValueError/TypeError naming
  the argument in the constructor, before anything starts.
- An executor dropped while its process runs kills it (with a
  ResourceWarning, as mirakuru); a finished process's log is removed when
  the executor starts again or is dropped (unless ``Master(keep_logs=True)``).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
import warnings
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, TypeVar, Union

from .. import arguments
from ..errors import ExecutorError, TimeoutExpired
from ..host import REPLY_SLACK, Host
from ..waits import Wait, as_specs

Command = Union[str, List[str], Sequence[str]]
Self = TypeVar("Self", bound="SimpleExecutor")


def _signum(sig: Any) -> int:
    try:
        return int(sig)
    except (TypeError, ValueError):
        raise TypeError("a signal must be an int or signal.Signals, got %r" % (sig,)) from None


class SimpleExecutor:
    """Start and stop a process on a host, no readiness check."""

    #: Checks that must NOT pass before start (AlreadyRunning otherwise).
    def _pre_start_specs(self) -> List[Dict[str, Any]]:
        return []

    #: Checks that must pass for the process to count as started.
    def _after_start_specs(self) -> List[Dict[str, Any]]:
        return []

    def __init__(
        self,
        command: Command,
        cwd: Optional[str] = None,
        shell: bool = False,
        timeout: float = 3600,
        sleep: float = 0.1,
        stop_signal: int = signal.SIGTERM,
        kill_signal: int = signal.SIGKILL,
        expected_returncode: Optional[int] = None,
        envvars: Optional[Mapping[str, str]] = None,
        stdin: Any = subprocess.PIPE,
        stdout: Any = subprocess.PIPE,
        stderr: Any = None,
        popen_kwargs: Optional[Dict[str, Any]] = None,
        *,
        on: Optional[Host] = None,
        wait: Union[Wait, List[Wait], None] = None,
        stop_timeout: Optional[float] = None,
        name: Optional[str] = None,
    ) -> None:
        checked = arguments.command(command)
        if isinstance(checked, str):
            self.command = checked
            try:
                self.command_parts: List[str] = shlex.split(checked)
            except ValueError as e:
                raise ValueError("command %s: %s" % (arguments.bounded(checked, 200), e)) from None
        else:
            self.command = " ".join(shlex.quote(c) for c in checked)
            self.command_parts = checked
        if popen_kwargs or stdin is not subprocess.PIPE or stdout is not subprocess.PIPE or stderr:
            warnings.warn(
                "stdin/stdout/stderr/popen_kwargs are ignored by remoteexec: the process reads"
                " /dev/null and its output goes to a log file on the host (see output())",
                stacklevel=2,
            )
        if on is not None and not isinstance(on, Host):
            raise TypeError(
                "on= must be a Host from Master.connect()/local() or None, got %s"
                % arguments.bounded(repr(on), 100)
            )
        self._cwd = os.fspath(cwd) if cwd is not None else None
        self._shell = shell
        self._timeout = float(arguments.seconds("timeout", timeout))  # type: ignore[arg-type]
        self._sleep = float(arguments.seconds("sleep", sleep))  # type: ignore[arg-type]
        self._stop_signal = _signum(stop_signal)
        self._kill_signal = _signum(kill_signal)
        self._expected_returncode = expected_returncode
        self._envvars = arguments.environment("envvars", envvars)
        self._extra_wait = as_specs(wait)
        self._stop_timeout = (
            arguments.seconds("stop_timeout", stop_timeout, allow_none=True) or self._timeout
        )
        self._name = name
        self._on = on
        self._proc: Optional[Dict[str, Any]] = None
        self._last_id: Optional[int] = None

    # -- where it runs ---------------------------------------------------

    @property
    def on(self) -> Host:
        """The Host this executor runs on (the local default if none given)."""
        if self._on is None:
            from ..master import default_host

            self._on = default_host()
        return self._on

    @property
    def pid(self) -> Optional[int]:
        """The main process's pid on the host, while started."""
        return self._proc["pid"] if self._proc else None

    @property
    def log_path(self) -> Optional[str]:
        """Path of the process log file on the host."""
        return self._proc["log_path"] if self._proc else None

    def _spec(self) -> Dict[str, Any]:
        return {
            "command": self.command if self._shell else self.command_parts,
            "shell": self._shell,
            "cwd": self._cwd,
            "env": self._envvars,
            "stop_signal": self._stop_signal,
            "kill_signal": self._kill_signal,
            "name": self._name,
        }

    # -- lifecycle -------------------------------------------------------

    def start(self: Self) -> Self:
        """Start the process and return when it is ready (per its checks).

        Raises AlreadyRunning, ProcessExitedWithError, CommandNotFound or
        TimeoutExpired; in each case nothing of this start is left running.
        """
        if self._proc is not None and self.running():
            return self
        check_specs = self._after_start_specs() + self._extra_wait
        pre_check_specs = self._pre_start_specs()
        self._refuse_impossible(check_specs + pre_check_specs)
        if self._last_id is not None:
            # The previous process has finished: drop its log and bookkeeping.
            self.on.service_nowait("forget", proc_id=self._last_id)
            self._last_id = None
        self._proc = self.on.service(
            "start",
            reply_timeout=self._timeout + REPLY_SLACK,
            spec=self._spec(),
            check_specs=check_specs,
            timeout=self._timeout,
            sleep=self._sleep,
            pre_check_specs=pre_check_specs,
        )
        self._last_id = self._proc["id"]
        return self

    def _refuse_impossible(self, specs: List[Dict[str, Any]]) -> None:
        """A ValueError, before anything starts, for checks that could never
        pass on the host (an https ca_file it cannot load). Costs a round
        trip only when a check names a file on the host."""
        if not any(spec.get("ca_file") for spec in specs):
            return
        found = self.on.invoke("remoteexec.target.checks.problems", specs)
        if found:
            raise ValueError("on host %s: %s" % (self.on.name, "; ".join(found)))

    def running(self) -> bool:
        """True while the process (or what it daemonized into) runs."""
        if self._proc is None:
            return False
        return bool(self.on.service("status", proc_id=self._proc["id"])["running"])

    def stop(
        self: Self, stop_signal: Optional[int] = None, expected_returncode: Optional[int] = None
    ) -> Self:
        """Stop the process tree; see the module doc for the escalation rule."""
        if self._proc is None:
            return self
        if expected_returncode is None:
            expected_returncode = self._expected_returncode
        self._forget_after(
            "stop",
            reply_timeout=self._stop_timeout + REPLY_SLACK,
            proc_id=self._proc["id"],
            sig=_signum(stop_signal or self._stop_signal),
            timeout=self._stop_timeout,
            expected_returncode=expected_returncode,
        )
        return self

    def kill(self: Self, wait: bool = True, sig: Optional[int] = None) -> Self:
        """Send ``sig`` (default kill_signal) to the whole process tree."""
        if self._proc is None:
            return self
        self._forget_after(
            "kill", proc_id=self._proc["id"], sig=_signum(sig or self._kill_signal), wait=wait
        )
        return self

    def _forget_after(self, method: str, **kwargs: Any) -> None:
        """Call the supervisor, then forget the process if it acted.

        An ExecutorError comes from the supervisor after it stopped the tree
        (escalated, unexpected exit code); any other error leaves the
        process ours, so a later stop() can still reach it.
        """
        try:
            self.on.service(method, **kwargs)
        except ExecutorError:
            self._proc = None
            raise
        self._proc = None

    def output(self, lines: int = 50) -> str:
        """The last ``lines`` lines of the process's output (stdout+stderr)."""
        if isinstance(lines, bool) or not isinstance(lines, int) or lines < 0:
            raise ValueError("lines must be a whole number >= 0, got %r" % (lines,))
        if self._last_id is None:
            return ""
        return str(self.on.service("output", proc_id=self._last_id, lines=lines)["output"])

    def wait_for(self: Self, condition: Union[Wait, Callable[[], bool]]) -> Self:
        """Wait until ``condition`` holds, within the executor's timeout.

        A :class:`~remoteexec.waits.Wait` is checked on the host; a callable
        is called here, on the master. On timeout the process is killed and
        TimeoutExpired raised (as in mirakuru).
        """
        if isinstance(condition, Wait):
            if self._proc is None:
                raise TimeoutExpired(
                    "wait_for() on an executor that is not started", host=self.on.name
                )
            self._refuse_impossible(condition.specs())
            self.on.service(
                "wait",
                reply_timeout=self._timeout + REPLY_SLACK,
                proc_id=self._proc["id"],
                check_specs=condition.specs(),
                timeout=self._timeout,
                sleep=self._sleep,
            )
            return self
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if condition():
                return self
            time.sleep(self._sleep)
        self.kill()
        raise TimeoutExpired(
            "condition %s not met within %gs"
            % (arguments.bounded(repr(condition), 200), self._timeout),
            host=self.on.name,
            command=self.command_parts,
        )

    @contextlib.contextmanager
    def stopped(self: Self) -> Iterator[Self]:
        """Stop for the duration of the block, start again after it."""
        was_running = self.running()
        if was_running:
            self.stop()
        try:
            yield self
        finally:
            if was_running:
                self.start()

    def __enter__(self: Self) -> Self:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self._on.name if self._on is not None else "local"
        return "<%s %s on %s>" % (type(self).__name__, arguments.bounded(self.command, 200), where)

    def __del__(self) -> None:
        """A dropped executor kills what it still runs and drops its log.

        May run on any thread (mitogen's broker included), at interpreter
        exit or after the host is gone: it only sends a fire-and-forget
        ``forget`` and never blocks or raises. No warning once the host is
        closed or lost: its processes are gone already.
        """
        with contextlib.suppress(Exception):
            self._forget_dropped()

    def _forget_dropped(self) -> None:
        host, proc = self._on, self._proc
        proc_id = proc["id"] if proc else self._last_id
        if host is None or proc_id is None:
            return
        # Nothing is sent to a closed or lost host: its processes died with it.
        if host.service_nowait("forget", proc_id=proc_id) and proc is not None:
            warnings.warn(
                "%r was dropped while its process (pid %s) may still run: killed it;"
                " stop() it or use it as a context manager" % (self, proc["pid"]),
                ResourceWarning,
                stacklevel=3,
            )


class Executor(SimpleExecutor):
    """An executor with a pre-start check (AlreadyRunning) and readiness."""

    def _pre_start_specs(self) -> List[Dict[str, Any]]:
        return self._after_start_specs()
