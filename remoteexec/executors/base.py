"""SimpleExecutor and Executor: mirakuru's lifecycle, run on any host.

The constructor arguments and defaults are mirakuru 3.1's, plus ``on`` (the
Host; None means this machine through a lazily created local context),
``wait`` (extra :mod:`remoteexec.waits` conditions), ``stop_timeout``,
``strict_stop`` and ``name``. Code written for mirakuru works unchanged:
the hooks ``pre_start_check()``/``after_start_check()`` that a subclass
overrides are called here, on the master, polled every ``sleep`` as
mirakuru does, while the built-in executors' checks run on the host.
``process`` is a Popen-like handle, ``output()``/``err_output()`` are
file-like readers of the logs on the host. Where remoteexec differs, on
purpose (the README lists them all):

- ``stdin=PIPE`` (the default) gives the process a pipe that stays open,
  ``DEVNULL``/None give /dev/null; ``stderr=PIPE`` keeps stderr apart
  (``err_output()``), anything else merges it into ``output()``. Other
  values of ``stdin``/``stdout``/``stderr`` and ``popen_kwargs`` cannot
  cross to a host and are ignored, silently.
- ``stop()`` waits ``stop_timeout`` (default: ``timeout``) after the stop
  signal, then SIGKILLs the tree; with ``strict_stop=True`` such a stop
  raises TimeoutExpired (``details["escalated"]``) instead of only logging.
- ``running(tree=True)`` is also True for a daemonizer whose main process
  exited 0 while a process it started still runs; ``stopped()`` and a
  second ``start()`` look at the whole tree.
- Readiness checked on the host is polled from 5 ms, doubling up to ``sleep``.
- Bad arguments (a NaN or non-positive time, an empty command, an
  environment value that is not a str) raise ValueError/TypeError naming
  the argument in the constructor, before anything starts.
- An executor dropped while its process runs kills it (with a
  ResourceWarning); a finished process's log is removed when the executor
  starts again or is dropped (unless ``Master(keep_logs=True)``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import warnings
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, TypeVar, Union

from .. import arguments
from ..errors import AlreadyRunning, ExecutorError, ProcessExitedWithError, TimeoutExpired
from ..host import BROKER_THREAD, REPLY_SLACK, Host
from ..target.supervisor import exited_text, timed_out_text
from ..waits import Wait, as_specs
from .process import LogReader, RemoteProcess

Command = Union[str, List[str], Sequence[str]]
Self = TypeVar("Self", bound="SimpleExecutor")
LOG = logging.getLogger(__name__)
#: How long a dropped executor waits for its process to be killed
#: (the supervisor's forget: stop signal, 2 s, SIGKILL).
DROP_WAIT = 10.0


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
        strict_stop: bool = False,
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
        if on is not None and not isinstance(on, Host):
            raise TypeError(
                "on= must be a Host from Master.connect()/local() or None, got %s"
                % arguments.bounded(repr(on), 100)
            )
        # What can cross to a host; stdout and popen_kwargs cannot (see the module doc).
        self._stdin_mode = "pipe" if stdin is subprocess.PIPE else "devnull"
        self._stderr_mode = "separate" if stderr is subprocess.PIPE else "merge"
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
        self._strict_stop = bool(strict_stop)
        self._name = name
        self._on = on
        #: on=None: this machine, with the master's cwd and environment at start().
        self._local = on is None
        self._proc: Optional[Dict[str, Any]] = None
        self._last_id: Optional[int] = None
        self._process: Optional[RemoteProcess] = None
        self._readers: Dict[str, LogReader] = {}
        self._endtime: Optional[float] = None

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
    def process(self) -> Optional[RemoteProcess]:
        """The started process as a Popen-like handle (mirakuru's
        ``executor.process``), None when not started or after stop()/kill()."""
        if self._proc is None:
            return None
        if self._process is None:
            args = self.command if self._shell else self.command_parts
            self._process = RemoteProcess(self.on, self._proc["id"], self._proc["pid"], args)
        return self._process

    @property
    def log_path(self) -> Optional[str]:
        """Path of the process log file on the host."""
        return self._proc["log_path"] if self._proc else None

    def _spec(self) -> Dict[str, Any]:
        spec = {
            "command": self.command if self._shell else self.command_parts,
            "shell": self._shell,
            "cwd": self._cwd,
            "env": self._envvars,
            "stop_signal": self._stop_signal,
            "kill_signal": self._kill_signal,
            "name": self._name,
            "stdin": self._stdin_mode,
            "stderr": self._stderr_mode,
        }
        if self._local:
            # As mirakuru: the caller's cwd and environment as they are now
            # (monkeypatch.chdir/setenv), not as the local context inherited them.
            spec["cwd"] = self._cwd or os.getcwd()
            spec["environ"] = dict(os.environ)
        return spec

    def _resolved(self, specs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """Relative pid-file and socket paths, as mirakuru sees them: from the
        caller's cwd for a local executor, else from ``cwd`` when given."""
        base = os.getcwd() if self._local else self._cwd
        if not base:
            return specs
        resolved = []
        for spec in specs:
            path = spec.get("path")
            if spec["kind"] in ("file", "unix") and path and not os.path.isabs(path):
                full = os.path.join(base, path)
                if spec["kind"] == "file" or len(os.fsencode(full)) <= arguments.UNIX_PATH_MAX:
                    spec = dict(spec, path=full)
            resolved.append(spec)
        return resolved

    def _service(self, method: str, **kwargs: Any) -> Any:
        """A supervisor call whose ExecutorError names this executor (``.executor``)."""
        try:
            return self.on.service(method, **kwargs)
        except ExecutorError as e:
            e.executor = self
            raise

    # -- lifecycle -------------------------------------------------------

    def start(self: Self) -> Self:
        """Start the process and return when it is ready (per its checks).

        Raises AlreadyRunning, ProcessExitedWithError, CommandNotFound or
        TimeoutExpired; in each case nothing of this start is left running.
        """
        if self._proc is not None and self.running(tree=True):
            return self
        self._launch(self._after_start_specs() + self._extra_wait, self._pre_start_specs())
        return self

    def _launch(self, check_specs: List[Dict[str, Any]], pre_check_specs: List[Dict[str, Any]]):
        """Spawn on the host; return when ``check_specs`` pass there."""
        check_specs = self._resolved(check_specs)
        pre_check_specs = self._resolved(pre_check_specs)
        self._refuse_impossible(check_specs + pre_check_specs)
        if self._last_id is not None:
            # The previous process has finished: drop its log and bookkeeping.
            self.on.service_nowait("forget", proc_id=self._last_id)
            self._last_id = None
        self._readers = {}
        self._process = None
        self._endtime = time.time() + self._timeout
        self._proc = self._service(
            "start",
            reply_timeout=self._timeout + REPLY_SLACK,
            spec=self._spec(),
            check_specs=check_specs,
            timeout=self._timeout,
            sleep=self._sleep,
            pre_check_specs=pre_check_specs,
        )
        self._last_id = self._proc["id"]

    def _refuse_impossible(self, specs: List[Dict[str, Any]]) -> None:
        """A ValueError, before anything starts, for checks that could never
        pass on the host (an https ca_file it cannot load). Costs a round
        trip only when a check names a file on the host."""
        if not any(spec.get("ca_file") for spec in specs):
            return
        found = self.on.invoke("remoteexec.target.checks.problems", specs)
        if found:
            raise ValueError("on host %s: %s" % (self.on.name, "; ".join(found)))

    def _probe(self, specs: List[Dict[str, Any]]) -> bool:
        """Whether ``specs`` pass on the host right now (one probe each)."""
        specs = self._resolved(specs)
        self._refuse_impossible(specs)
        return bool(self.on.service("probe", check_specs=specs)["passed"])

    def running(self, tree: bool = False) -> bool:
        """True while the process runs (mirakuru's meaning); with ``tree``,
        also while something it started (a daemon) still runs."""
        if self._proc is None:
            return False
        info = self.on.service("status", proc_id=self._proc["id"])
        if info.get("pid") is None:
            return False
        return bool(info["running"]) if tree else info.get("returncode") is None

    def check_timeout(self) -> bool:
        """True while the deadline of the current start or wait has not passed
        (mirakuru's; for subclasses that poll on their own)."""
        return self._endtime is None or time.time() <= self._endtime

    def stop(
        self: Self, stop_signal: Optional[int] = None, expected_returncode: Optional[int] = None
    ) -> Self:
        """Stop the process tree: ``stop_signal``, ``stop_timeout``, then SIGKILL.

        A stop that had to SIGKILL is logged (and raises TimeoutExpired with
        ``strict_stop=True``); an unexpected exit code raises
        ProcessFinishedWithError, as in mirakuru.
        """
        if self._proc is None:
            return self
        if expected_returncode is None:
            expected_returncode = self._expected_returncode
        try:
            self._forget_after(
                "stop",
                reply_timeout=self._stop_timeout + REPLY_SLACK,
                proc_id=self._proc["id"],
                sig=_signum(stop_signal or self._stop_signal),
                timeout=self._stop_timeout,
                expected_returncode=expected_returncode,
            )
        except TimeoutExpired as e:
            if self._strict_stop or not e.details.get("escalated"):
                raise
            LOG.warning("%s", e)
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
            self._service(method, **kwargs)
        except ExecutorError:
            self._proc = None
            raise
        self._proc = None

    def _reader(self, stream: str) -> Optional[LogReader]:
        if self._last_id is None:
            return None
        reader = self._readers.get(stream)
        if reader is None:
            start = (self._proc or {}).get("read_from", {}).get(stream, 0)
            reader = LogReader(self.on, self._last_id, stream, start)
            self._readers[stream] = reader
        return reader

    def output(self) -> Optional[LogReader]:
        """The process's output as a stream (mirakuru's ``process.stdout``):
        ``readline()``, ``read()`` and iteration block until more arrives or
        the process ends. stdout and stderr merged, unless ``stderr=PIPE``
        kept stderr apart. The same reader each call, until the next start;
        None before the first start."""
        return self._reader("out")

    def err_output(self) -> Optional[LogReader]:
        """stderr alone as a stream, when ``stderr=PIPE`` kept it apart;
        None otherwise (as mirakuru: stderr was not piped)."""
        return self._reader("err") if self._stderr_mode == "separate" else None

    def output_tail(self, lines: int = 50) -> str:
        """The last ``lines`` lines of the process's output, as text (stderr
        after stdout when kept apart)."""
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
            specs = self._resolved(condition.specs())
            self._refuse_impossible(specs)
            self._service(
                "wait",
                reply_timeout=self._timeout + REPLY_SLACK,
                proc_id=self._proc["id"],
                check_specs=specs,
                timeout=self._timeout,
                sleep=self._sleep,
            )
            return self
        self._endtime = time.time() + self._timeout
        while self.check_timeout():
            if condition():
                return self
            time.sleep(self._sleep)
        self.kill()
        raise self._timed_out("condition %s not met" % arguments.bounded(repr(condition), 200))

    def _timed_out(self, what: str) -> TimeoutExpired:
        error = TimeoutExpired(
            "%s %s: %s; the process tree was killed"
            % (self._label(), timed_out_text(self._timeout), what),
            host=self.on.name,
            command=self.command_parts,
            timeout=self._timeout,
        )
        error.executor = self
        return error

    @contextlib.contextmanager
    def stopped(self: Self) -> Iterator[Self]:
        """Stop for the duration of the block, start again after it."""
        was_running = self.running(tree=True)
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

    def _where(self) -> str:
        return self._on.name if self._on is not None else "local"

    def __repr__(self) -> str:
        return "<%s %s on %s>" % (
            type(self).__name__,
            arguments.bounded(self.command, 200),
            self._where(),
        )

    def _label(self) -> str:
        """str(self) for an error message: the command bounded."""
        return arguments.bounded(str(self), 300)

    def __str__(self) -> str:
        """The whole command (mirakuru's ``str()``); error messages bound it."""
        return '<%s: "%s" on %s>' % (type(self).__name__, self.command, self._where())

    def __del__(self) -> None:
        """A dropped executor kills what it still runs and drops its log.

        Kills before returning (as mirakuru), from a helper thread bounded by
        DROP_WAIT, so a lock the collecting thread holds can never deadlock
        it; on mitogen's broker thread or at interpreter exit it only sends
        a fire-and-forget ``forget``. Never raises. No warning once the host
        is closed or lost: its processes are gone already.
        """
        with contextlib.suppress(Exception):
            self._forget_dropped()

    def _forget_dropped(self) -> None:
        host, proc = self._on, self._proc
        proc_id = proc["id"] if proc else self._last_id
        if host is None or proc_id is None:
            return
        if proc is None:
            host.service_nowait("forget", proc_id=proc_id)
            return
        if threading.current_thread().name == BROKER_THREAD or sys.is_finalizing():
            killed = host.service_nowait("forget", proc_id=proc_id)
        else:
            outcome: Dict[str, bool] = {}
            done = threading.Event()

            def forget() -> None:
                try:
                    got = host.service("forget", reply_timeout=DROP_WAIT, proc_id=proc_id)
                    outcome["killed"] = bool(got.get("was_running"))
                except Exception:
                    outcome["killed"] = False  # a closed or lost host: nothing runs there
                finally:
                    done.set()

            threading.Thread(target=forget, name="remoteexec-forget", daemon=True).start()
            killed = outcome.get("killed", True) if done.wait(DROP_WAIT) else True
        if killed:
            warnings.warn(
                "%r was dropped while its process (pid %s) may still run: killed it;"
                " stop() it or use it as a context manager" % (self, proc["pid"]),
                ResourceWarning,
                stacklevel=3,
            )


class Executor(SimpleExecutor):
    """An executor with a pre-start check (AlreadyRunning) and readiness.

    ``pre_start_check()``/``after_start_check()`` are mirakuru's hooks. The
    built-in executors' own checks run on the host, polled there; a
    subclass (or a test) that overrides a hook gets it called here, on the
    master, polled every ``sleep`` until ``timeout`` as in mirakuru.
    """

    def _pre_start_specs(self) -> List[Dict[str, Any]]:
        return self._after_start_specs()

    def pre_start_check(self) -> bool:
        """True if something already answers as this service would (then
        start() raises AlreadyRunning). Checked once, on the host."""
        specs = self._pre_start_specs()
        if not specs:
            raise NotImplementedError(
                "%s has no pre-start check: override pre_start_check()" % type(self).__name__
            )
        return self._probe(specs)

    def after_start_check(self) -> bool:
        """True once the started service is ready. Checked once, on the host."""
        specs = self._after_start_specs()
        if not specs:
            raise NotImplementedError(
                "%s has no readiness check: override after_start_check()" % type(self).__name__
            )
        return self._probe(specs)

    def _hook_specs(self, name: str, specs: Callable[[], List[Dict[str, Any]]]):
        """The host-side specs of hook ``name``, or None when it was
        overridden (in a subclass or on the instance) and runs here."""
        hook = getattr(self, name)
        if getattr(hook, "__func__", None) is getattr(Executor, name):
            return specs()
        return None

    def start(self: Self) -> Self:
        if self._proc is not None and self.running(tree=True):
            return self
        pre = self._hook_specs("pre_start_check", self._pre_start_specs)
        after = self._hook_specs("after_start_check", self._after_start_specs)
        if pre is None and self.pre_start_check():
            error = AlreadyRunning(
                "%s seems to be already running: its pre_start_check() is true before start;"
                " refusing to start it" % self._label(),
                host=self.on.name,
                command=self.command_parts,
            )
            error.executor = self
            raise error
        self._launch((after or []) + self._extra_wait, pre or [])
        if after is None:
            while self.check_timeout():
                if self.check_subprocess():
                    return self
                time.sleep(self._sleep)
            self.kill()
            raise self._timed_out("after_start_check() still false")
        return self

    def check_subprocess(self) -> bool:
        """mirakuru's step of the start loop: ProcessExitedWithError (the tree
        killed) if the process exited non-zero, else ``after_start_check()``."""
        process = self.process
        if process is None:
            return False
        code = process.poll()
        if code is not None and code != 0:
            tail = self.output_tail()
            self.kill(sig=self._kill_signal)
            error = ProcessExitedWithError(
                "the process %s before it was ready" % exited_text(code),
                host=self.on.name,
                command=self.command_parts,
                exit_code=code,
                output_tail=tail,
            )
            error.executor = self
            raise error
        return self.after_start_check()
