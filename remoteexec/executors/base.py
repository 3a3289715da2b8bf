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
- Readiness checked on the host is polled from 5 ms, then every tenth of
  the time waited, up to ``sleep``.
- Bad arguments (a NaN or non-positive time, an empty command, an
  environment value that is not a str) raise ValueError/TypeError naming
  the argument in the constructor, before anything starts.
- An executor dropped while its process runs kills it (with a
  ResourceWarning); a finished process's log is removed when the executor
  starts again or is dropped (unless ``Master(keep_logs=True)``).
- ``restart="on-failure"`` (with ``max_restarts`` and ``restart_backoff``)
  has the host's supervisor restart a process that exits non-zero after
  start, next to it, with no round trip to the master.

Executors implement the Service interface (:mod:`remoteexec.services`):
``status()``, ``log_tail()``, ``endpoints``, ``inputs()``, ``artifacts()``.
Command arguments and environment values may hold
:class:`~remoteexec.services.Deferred` values, resolved (and checked) at
``start()``.
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
from typing import (
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Tuple,
    TypeVar,
    Union,
)

from remoteexec import arguments, services
from remoteexec.errors import (
    AlreadyRunning,
    ExecutorError,
    ProcessExitedWithError,
    TimeoutExpired,
)
from remoteexec.host import BROKER_THREAD, Host
from remoteexec.supervisor_client import SupervisorClient
from remoteexec.target import files
from remoteexec.target.protocol import (
    RESTART_POLICIES,
    TAIL_LINES,
    Command,
    ProcInfo,
    exited_text,
    timed_out_text,
)
from remoteexec.waits import Wait, as_specs

from .process import LogReader, RemoteProcess

Self = TypeVar("Self", bound="SimpleExecutor")
ESelf = TypeVar("ESelf", bound="Executor")


class ExecutorStatus(services.ServiceStatus, total=False):
    """An executor's :class:`~remoteexec.services.ServiceStatus`, plus its
    restart count and the exit code of its last exit."""

    restarts: int
    last_exit: Optional[int]


LOG = logging.getLogger(__name__)
#: How long a dropped executor waits for its process to be killed
#: (the supervisor's forget: stop signal, 2 s, SIGKILL).
DROP_WAIT = 10.0


def _signum(sig: Any) -> int:
    try:
        return int(sig)
    except (TypeError, ValueError):
        raise TypeError("a signal must be an int or signal.Signals, got %r" % (sig,)) from None


def _placeholders(value: Any) -> Any:
    """``value`` with each Deferred replaced by a placeholder string, so the
    constructor can check everything else before the real values are known."""
    if not services.deferred_in(value):
        return value
    if isinstance(value, services.Deferred) and not isinstance(value, (str, bytes)):
        return "<%s>" % arguments.bounded(repr(value), 60)
    if isinstance(value, (list, tuple)):
        return [_placeholders(v) for v in value]
    if isinstance(value, dict):
        return {k: _placeholders(v) for k, v in value.items()}
    return value


def _program(parts: List[str]) -> str:
    return os.path.basename(parts[0]) if parts else "process"


def _restart_policy(restart: Any, max_restarts: Any, backoff: Any) -> Dict[str, Any]:
    """The restart settings as the supervisor takes them, checked here."""
    if restart not in RESTART_POLICIES:
        raise ValueError(
            "restart must be one of %s, got %s"
            % (", ".join(repr(p) for p in RESTART_POLICIES), arguments.bounded(repr(restart), 100))
        )
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int):
        raise TypeError("max_restarts must be an int, got %r" % (max_restarts,))
    if max_restarts < 0:
        raise ValueError("max_restarts must be >= 0, got %d" % max_restarts)
    seconds = arguments.seconds("restart_backoff", backoff, allow_zero=True)
    return {"restart": restart, "max_restarts": max_restarts, "restart_backoff": seconds}


class SimpleExecutor:
    """Start and stop a process on a host, no readiness check."""

    #: The names of :attr:`endpoints` (fixed per class; values known at start).
    ENDPOINTS: Tuple[str, ...] = ()

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
        stdout: Any = subprocess.PIPE,  # noqa: ARG002 - mirakuru's; cannot cross to a host
        stderr: Any = None,
        popen_kwargs: Optional[Dict[str, Any]] = None,  # noqa: ARG002 - as stdout
        *,
        on: Optional[Host] = None,
        wait: Union[Wait, List[Wait], None] = None,
        stop_timeout: Optional[float] = None,
        strict_stop: bool = False,
        name: Optional[str] = None,
        restart: str = "no",
        max_restarts: int = 3,
        restart_backoff: float = 1.0,
    ) -> None:
        #: As given: may hold Deferred values, resolved at each start().
        self._raw_command: Any = command
        self._raw_envvars: Optional[Mapping[str, Any]] = envvars
        self._set_command(_placeholders(command))
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
        self._timeout = float(arguments.seconds("timeout", timeout))
        self._sleep = float(arguments.seconds("sleep", sleep))
        self._stop_signal = _signum(stop_signal)
        self._kill_signal = _signum(kill_signal)
        self._expected_returncode = expected_returncode
        self._envvars = arguments.environment("envvars", _placeholders(envvars))
        self._extra_wait = as_specs(wait)
        self._stop_timeout = (
            arguments.seconds("stop_timeout", stop_timeout, allow_none=True) or self._timeout
        )
        self._strict_stop = bool(strict_stop)
        self._restart = _restart_policy(restart, max_restarts, restart_backoff)
        self._name = name
        #: The service's name (Service interface): ``name=``, else the program's.
        self.name = name or _program(self.command_parts)
        self._on = on
        #: on=None: this machine, with the master's cwd and environment at start().
        self._local = on is None
        self._proc: Optional[ProcInfo] = None
        self._last_id: Optional[int] = None
        self._last_logs: List[str] = []
        self._failed_since: Optional[float] = None
        self._process: Optional[RemoteProcess] = None
        self._readers: Dict[str, LogReader] = {}
        self._endtime: Optional[float] = None

    def set_restart(
        self, restart: str = "no", max_restarts: int = 3, restart_backoff: float = 1.0
    ) -> None:
        """Set the restart policy (as the constructor's arguments), from the
        next start(): the host's supervisor restarts a process that exits
        non-zero after start, with no round trip to the master (a stack
        hands its ``restart=`` here)."""
        self._restart = _restart_policy(restart, max_restarts, restart_backoff)

    def _set_command(self, command: Any) -> None:
        """Check ``command`` and set ``command`` (str) and ``command_parts``."""
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

    def _prepare(self) -> None:
        """Resolve the Deferred inputs (at start(), once what they refer to
        runs) and check them as the constructor checks plain ones."""
        if services.deferred_in(self._raw_command):
            self._set_command(services.resolve(self._raw_command))
        if services.deferred_in(self._raw_envvars):
            self._envvars = arguments.environment("envvars", services.resolve(self._raw_envvars))

    # -- where it runs ---------------------------------------------------

    @property
    def on(self) -> Host:
        """The Host this executor runs on (the local default if none given)."""
        from remoteexec.master import host_or_default

        self._on = host_or_default(self._on)
        return self._on

    @property
    def supervisor(self) -> SupervisorClient:
        """The supervisor of this executor's host, through its typed stubs."""
        return SupervisorClient(self.on)

    @property
    def hosts(self) -> List[Host]:
        """The host this executor runs on (Service interface)."""
        return [self.on]

    @property
    def pid(self) -> Optional[int]:
        """The main process's pid on the host, while started (the current one,
        asked on the host, when the restart policy may have replaced it)."""
        if self._proc is None:
            return None
        if self._restart["restart"] != "no":
            return self.supervisor.status(self._proc["id"]).get("pid")
        return self._proc["pid"]

    @property
    def process(self) -> Optional[RemoteProcess]:
        """The started process as a Popen-like handle (mirakuru's
        ``executor.process``), None when not started or after stop()/kill()."""
        if self._proc is None:
            return None
        if self._process is None:
            args = self.command if self._shell else self.command_parts
            self._process = RemoteProcess(self.on, self._proc["id"], self._proc["pid"] or 0, args)
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
            **self._restart,
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

    @contextlib.contextmanager
    def _named(self) -> Iterator[None]:
        """An ExecutorError raised inside names this executor (``.executor``)."""
        try:
            yield
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
        self._prepare()
        self._launch(self._after_start_specs() + self._extra_wait, self._pre_start_specs())
        return self

    def _launch(
        self, check_specs: List[Dict[str, Any]], pre_check_specs: List[Dict[str, Any]]
    ) -> None:
        """Spawn on the host; return when ``check_specs`` pass there."""
        check_specs = self._resolved(check_specs)
        pre_check_specs = self._resolved(pre_check_specs)
        self._refuse_impossible(check_specs + pre_check_specs)
        if self._last_id is not None:
            # The previous process has finished: drop its log and bookkeeping.
            self.supervisor.forget_nowait(self._last_id)
            self._last_id = None
            self._last_logs = []
        self._readers = {}
        self._process = None
        self._endtime = time.time() + self._timeout
        self._failed_since = None
        try:
            with self._named():
                self._proc = self.supervisor.start(
                    self._spec(),
                    check_specs,
                    timeout=self._timeout,
                    sleep=self._sleep,
                    pre_check_specs=pre_check_specs,
                )
        except ExecutorError:
            self._failed_since = time.time()
            raise
        self._last_id = self._proc["id"]
        self._last_logs = [p for p in (self._proc["log_path"], self._proc["err_log_path"]) if p]

    def _refuse_impossible(self, specs: List[Dict[str, Any]]) -> None:
        """A ValueError, before anything starts, for checks that could never
        pass on the host (an https ca_file it cannot load). Costs a round
        trip only when a check names a file on the host."""
        if not any(spec.get("ca_file") for spec in specs):
            return
        found = self.supervisor.check_problems(specs)
        if found:
            raise ValueError("on host %s: %s" % (self.on.name, "; ".join(found)))

    def _probe(self, specs: List[Dict[str, Any]]) -> bool:
        """Whether ``specs`` pass on the host right now (one probe each)."""
        specs = self._resolved(specs)
        self._refuse_impossible(specs)
        return self.supervisor.probe(specs)

    def running(self, tree: bool = False) -> bool:
        """True while the process runs (mirakuru's meaning); with ``tree``,
        also while something it started (a daemon) still runs."""
        if self._proc is None:
            return False
        info = self.supervisor.status(self._proc["id"])
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
        proc_id = self._proc["id"]
        try:
            self._forget_after(
                lambda: self.supervisor.stop(
                    proc_id,
                    _signum(stop_signal or self._stop_signal),
                    self._stop_timeout,
                    expected_returncode=expected_returncode,
                )
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
        proc_id = self._proc["id"]
        signum = _signum(sig or self._kill_signal)
        self._forget_after(lambda: self.supervisor.kill(proc_id, signum, wait=wait))
        return self

    def _forget_after(self, call: Callable[[], Any]) -> None:
        """Call the supervisor, then forget the process if it acted.

        An ExecutorError comes from the supervisor after it stopped the tree
        (escalated, unexpected exit code); any other error leaves the
        process ours, so a later stop() can still reach it.
        """
        try:
            with self._named():
                call()
        except ExecutorError:
            self._proc = None
            raise
        self._proc = None

    def _reader(self, stream: str) -> Optional[LogReader]:
        if self._last_id is None:
            return None
        reader = self._readers.get(stream)
        if reader is None:
            start = self._proc["read_from"].get(stream, 0) if self._proc else 0
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
        return self.supervisor.output(self._last_id, lines)

    # -- the Service interface -------------------------------------------

    def log_tail(self, lines: int = TAIL_LINES) -> str:
        """The last ``lines`` lines of output (Service interface; as :meth:`output_tail`)."""
        return self.output_tail(lines)

    @property
    def endpoints(self) -> Dict[str, Optional[str]]:
        """Name → address as other hosts see it; names fixed per class
        (:attr:`ENDPOINTS`), values None until known."""
        known = self._endpoint_values()
        return {name: known.get(name) for name in self.ENDPOINTS}

    def _endpoint_values(self) -> Dict[str, Optional[str]]:
        return {}

    def _visible_address(self, address: str) -> Optional[str]:
        """``address`` as other hosts reach it: a wildcard becomes the host's
        own address (None until the host is known)."""
        if address not in ("", "0.0.0.0", "::", "[::]"):
            return address
        if self._on is None:
            return None
        info = self._on.info
        return info.get("address") or info.get("hostname")

    def inputs(self) -> List[Any]:
        """The values that may hold Deferred references: command, environment."""
        return [self._raw_command, self._raw_envvars]

    def status(self) -> ExecutorStatus:
        """State, readiness reached, pid, since when (host clock), exit code,
        endpoints, restarts (Service interface)."""
        row: ExecutorStatus = {
            "name": self.name,
            "hosts": [self._where()],
            "state": "stopped",
            "readiness": None,
            "pids": [],
            "since": None,
            "exit_code": None,
            "endpoints": self.endpoints,
            "restarts": 0,
            "last_exit": None,
        }
        if self._failed_since is not None:
            row["state"], row["since"] = "failed", self._failed_since
        if self._proc is None:
            return row
        info = self.supervisor.status(self._proc["id"])
        pid = info.get("pid")
        if pid is None:
            return row
        row["state"] = info["state"]
        row["readiness"] = info["readiness"]
        row["pids"] = [pid] if info["running"] else []
        row["since"] = info["since"]
        row["exit_code"] = info["returncode"] if info["state"] == "exited" else None
        row["restarts"] = info["restarts"]
        row["last_exit"] = info["last_exit"]
        return row

    def artifacts(self, dest: str) -> List[str]:
        """Copy the process's logs from the host into directory ``dest`` here
        (made 0700 if missing); the paths written."""
        if not self._last_logs:
            return []
        os.makedirs(dest, 0o700, exist_ok=True)
        written = []
        for path in self._last_logs:
            target = os.path.join(
                dest, "%s@%s-%s" % (self.name, self._where(), os.path.basename(path))
            )
            written.append(files.write_private(target, self.supervisor.read_file(path)))
        return written

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
            with self._named():
                self.supervisor.wait(self._proc["id"], specs, self._timeout, self._sleep)
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
        supervisor = SupervisorClient(host)
        if proc is None:
            supervisor.forget_nowait(proc_id)
            return
        if threading.current_thread().name == BROKER_THREAD or sys.is_finalizing():
            killed = supervisor.forget_nowait(proc_id)
        else:
            outcome: Dict[str, bool] = {}
            done = threading.Event()

            def forget() -> None:
                try:
                    got = supervisor.forget(proc_id, reply_timeout=DROP_WAIT)
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

    def _hook_specs(
        self, name: str, specs: Callable[[], List[Dict[str, Any]]]
    ) -> Optional[List[Dict[str, Any]]]:
        """The host-side specs of hook ``name``, or None when it was
        overridden (in a subclass or on the instance) and runs here."""
        hook = getattr(self, name)
        if getattr(hook, "__func__", None) is getattr(Executor, name):
            return specs()
        return None

    def start(self: ESelf) -> ESelf:
        if self._proc is not None and self.running(tree=True):
            return self
        self._prepare()
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
