"""The master↔target protocol: the shapes of replies, imported by both sides.

Stdlib only: the host's Python imports it. Every target function that can
fail returns either ``{"ok": True, ...}`` or the one error shape built by
:func:`error`; the master turns an error dict back into the typed exception
named by ``type`` (:func:`remoteexec.errors.from_dict`). The TypedDicts below
are the successful replies of the supervisor's calls
(:class:`remoteexec.target.supervisor.Supervisor`); the master's typed stubs
(:mod:`remoteexec.supervisor_client`) return them.

The texts users grep for (mirakuru's words for an exit or a timeout) live
here too, so both sides word them alike.
"""

import shlex
import signal
import traceback
from typing import Any, Dict, List, Optional, Sequence, TypedDict, Union

#: A command as the supervisor takes it: an argument list, or one string
#: (split with shlex, or given to the shell with ``shell``).
Command = Union[str, Sequence[str]]

#: What one read of a log returns at most, and how long it waits for data:
#: a blocked reader on the master asks again, so no pool thread is held long.
READ_CHUNK = 256 * 1024
READ_WAIT = 1.0
#: Lines of output an error carries by default.
TAIL_LINES = 50

#: Restart policies of a process tree (``spec["restart"]``).
RESTART_POLICIES = ("no", "on-failure")


class ErrorDetail(TypedDict, total=False):
    """An error as it crosses from the target: the exception type's name and its fields.

    ``kind`` is a short machine-readable cause (``"timeout"``, ``"exited"``,
    ``"lua"``...) for callers that branch on it; every other key becomes a
    field of the exception (host, command, exit_code, output_tail...).
    """

    type: str
    message: str
    kind: str


class ErrorReply(TypedDict):
    """A failed call's reply."""

    ok: bool
    error: ErrorDetail


class ProcInfo(TypedDict):
    """One process tree as the supervisor knows it (start, wait, status).

    ``pid`` is None for an id the supervisor does not know (never started,
    or forgotten). ``state`` is one of starting/running/ready/exited;
    ``readiness`` the last readiness layer reached (``"process"``, then
    ``"ready"`` once every check passed); ``since`` the host's epoch time
    the state was entered. ``restarts`` counts the restarts the restart
    policy made, ``last_exit`` is the exit code of the last exit seen.
    """

    ok: bool
    id: int
    pid: Optional[int]
    marker: Optional[str]
    log_path: Optional[str]
    err_log_path: Optional[str]
    read_from: Dict[str, int]
    running: bool
    returncode: Optional[int]
    state: str
    readiness: Optional[str]
    since: Optional[float]
    restarts: int
    last_exit: Optional[int]


class StopReply(TypedDict):
    """``stop``: the exit code, and whether SIGKILL was needed."""

    ok: bool
    returncode: Optional[int]
    escalated: bool


class KillReply(TypedDict):
    """``kill``: the exit code once known."""

    ok: bool
    returncode: Optional[int]


class ForgetReply(TypedDict):
    """``forget``: whether something of the tree was still running."""

    ok: bool
    was_running: bool


class OutputReply(TypedDict):
    """``output``: the last lines of the logs, as text."""

    ok: bool
    output: str


class ReadReply(TypedDict):
    """``read``: bytes of a log from an offset; ``eof`` once all is read."""

    ok: bool
    data: bytes
    eof: bool


class WaitExitReply(TypedDict):
    """``wait_exit``: the exit code (None while running); ``known`` False for
    an id the supervisor forgot."""

    ok: bool
    returncode: Optional[int]
    known: bool


class ProbeReply(TypedDict):
    """``probe``: whether every check passed."""

    ok: bool
    passed: bool


class RunReply(TypedDict):
    """``run``: a command run to completion."""

    ok: bool
    returncode: int
    stdout: bytes
    stderr: bytes
    duration: float


class KillAllReply(TypedDict):
    """``kill_all``: the main pids of the trees that were stopped."""

    ok: bool
    killed: List[int]


class OkReply(TypedDict):
    """A reply that says only that the call worked."""

    ok: bool


class PingReply(TypedDict):
    """``ping``: the context's pid and clock."""

    ok: bool
    pid: int
    time: float


class CallReply(TypedDict):
    """``call_function``: what the function returned."""

    ok: bool
    result: Any


class InstallReply(TypedDict):
    """``install``: facts about the target.

    ``address`` is the address the master reached the host on (the server
    side of ``$SSH_CONNECTION``), which other hosts of the same network can
    use; None for a context without ssh.
    """

    pid: int
    hostname: str
    address: Optional[str]
    run_dir: str
    heartbeat_handle: int
    psutil: bool
    subreaper: bool
    guard_pid: Optional[int]
    guard_error: Optional[str]
    python: str
    uid: int
    #: The handle of the quick-call handler (:mod:`.quick`), on the broker thread.
    quick_handle: int
    #: The handle of the supervisor's request handler (``supervisor.Requests``).
    request_handle: int


def error(type_name: str, message: str, /, **fields: Any) -> Dict[str, Any]:
    """The one error reply: ``{"ok": False, "error": {"type", "message", **fields}}``.

    Fields that are None are left out, so a reply stays small.
    """
    detail: Dict[str, Any] = {"type": type_name, "message": message}
    detail.update((k, v) for k, v in fields.items() if v is not None)
    return {"ok": False, "error": detail}


def raised(what: str, e: BaseException) -> Dict[str, Any]:
    """The error reply for exception ``e`` raised in ``what``, with the remote
    type name and traceback (bounded: mitogen refuses a CallError over 9999
    characters and loses its type). Call it in the ``except`` block."""
    message = str(e)[:2000]
    return error(
        "RemoteCallError",
        "%s raised %s: %s" % (what, type(e).__name__, message),
        type_name=type(e).__name__,
        remote_message=message,
        remote_traceback=traceback.format_exc()[-4000:],
    )


def command_text(command: Optional[Command]) -> Optional[str]:
    """``command`` as one line for messages: a string as is, a list shell-quoted."""
    if command is None or isinstance(command, str):
        return command
    return " ".join(shlex.quote(str(part)) for part in command)


def signame(sig: int) -> str:
    """``SIGTERM`` for 15; ``signal 99`` for a number with no name."""
    try:
        return signal.Signals(sig).name
    except ValueError:
        return "signal %d" % sig


def exit_text(code: Optional[int]) -> str:
    """An exit code in words: ``exit code 3``, ``killed by SIGKILL``."""
    if code is None:
        return "still running"
    if code < 0:
        return "killed by %s" % signame(-code)
    return "exit code %d" % code


def exited_text(rc: int) -> str:
    """mirakuru's words for a non-zero exit (users grep for them), and ours."""
    return "exited with a non-zero code: %d (%s)" % (rc, exit_text(rc))


def timed_out_text(timeout: float) -> str:
    """mirakuru's words for a timeout (users grep for them)."""
    return "timed out after %g seconds" % timeout
