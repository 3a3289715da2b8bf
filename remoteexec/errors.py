"""Exceptions raised on the master.

Every error names the host and the cause in its first line, carries the
details as attributes (``host``, ``command``, ``exit_code``, ``output_tail``)
and survives pickling, so it can cross process boundaries (pytest-xdist,
multiprocessing) intact. Remote code never raises these: the target side
returns the plain error replies of :mod:`remoteexec.target.protocol`, and
:func:`from_dict` turns them into the right class here, because mitogen
loses exception types on the wire.

The text of an error is bounded (each part to a few kB, with an elision
marker) however large the command, message or output: it is rendered here
for every class, including messages built on a host. The attributes keep the
full values.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Type

from remoteexec.arguments import bounded
from remoteexec.target import protocol
from remoteexec.target.protocol import Command


class RemoteExecError(Exception):
    """Base class of every remoteexec error."""

    def __init__(
        self,
        message: str,
        *,
        host: Optional[str] = None,
        command: Optional[Command] = None,
        exit_code: Optional[int] = None,
        output_tail: Optional[str] = None,
        **details: Any,
    ) -> None:
        self.message = message
        self.host = host
        self.command = command
        self.exit_code = exit_code
        self.output_tail = output_tail
        self.details = details
        super().__init__(self._render())

    def _render(self) -> str:
        where = "[%s] " % bounded(str(self.host), 200) if self.host else ""
        text = where + bounded(str(self.message))
        if self.command is not None:
            text += " (command: %s)" % self.command_text
        if self.output_tail:
            tail = str(self.output_tail).rstrip("\n")
            if tail:
                text += "\n--- output tail ---\n" + bounded(tail)
        return text

    @property
    def command_text(self) -> Optional[str]:
        """The command as one shell-quoted line, bounded, for messages
        (``.command`` keeps it whole)."""
        text = protocol.command_text(self.command)
        return None if text is None else bounded(text)

    def __reduce__(self) -> Any:
        kwargs = dict(
            host=self.host,
            command=self.command,
            exit_code=self.exit_code,
            output_tail=self.output_tail,
            **self.details,
        )
        return (_rebuild, (type(self), self.message, kwargs))


def _rebuild(cls: Type[RemoteExecError], message: str, kwargs: Dict[str, Any]) -> RemoteExecError:
    return cls(message, **kwargs)


# -- executor errors (mirakuru's names) -------------------------------------


class ExecutorError(RemoteExecError):
    """A process managed by an executor misbehaved.

    The texts keep mirakuru's words, which users grep for ("timed out after
    N seconds", "seems to be already running", "exited with a non-zero
    code: N"), with remoteexec's detail after them.
    """

    #: The executor that raised it (as mirakuru's ``.executor``), set on the
    #: master; not pickled, as the executor stays on this side.
    executor: Any = None


class TimeoutExpired(ExecutorError):
    """A start or stop did not finish within the executor's timeout."""

    @property
    def timeout(self) -> Optional[float]:
        """The timeout that expired, in seconds (mirakuru's ``.timeout``)."""
        value = self.details.get("timeout")
        return None if value is None else float(value)


class AlreadyRunning(ExecutorError):
    """The readiness check already passed before our process started.

    ``details['owner_pid']`` holds the pid that owns the port, socket or file
    when the target could see it.
    """


class ProcessExitedWithError(ExecutorError):
    """The process exited with a non-zero code while we waited for it."""


class ProcessFinishedWithError(ProcessExitedWithError):
    """The process ended with an unexpected exit code after a stop."""


class CommandNotFound(ExecutorError):
    """The program to run does not exist (or is not executable) on the host."""


class CommandFailed(RemoteExecError):
    """``Host.run(..., check=True)`` saw a non-zero exit code."""


# -- host errors -------------------------------------------------------------


class HostError(RemoteExecError):
    """Something is wrong with a host or the connection to it."""


class ConnectionFailed(HostError):
    """Could not open a context on the host.

    When raised by ``connect_all`` it lists every failed host; the individual
    errors are in ``.failures`` (a list of ConnectionFailed).
    """

    @property
    def failures(self) -> List[ConnectionFailed]:
        return list(self.details.get("failures") or [self])


class HostUnreachable(ConnectionFailed):
    """No TCP connection to the host's sshd (timeout, refused, no route, DNS)."""


class AuthenticationFailed(ConnectionFailed):
    """sshd refused the key or the user."""


class HostKeyMismatch(ConnectionFailed):
    """The host key is unknown or differs from known_hosts (checking is on)."""


class RemotePythonMissing(ConnectionFailed):
    """The interpreter given as ``python=`` does not exist on the host."""


class HostLost(HostError):
    """The host's context died or stopped answering heartbeats."""


class RemoteCallError(HostError):
    """A function called on the host raised.

    ``type_name`` is the remote exception's class name, ``remote_message``
    its message and ``remote_traceback`` the (shortened) traceback.
    """

    @property
    def type_name(self) -> str:
        return str(self.details.get("type_name", "Exception"))

    @property
    def remote_message(self) -> str:
        return str(self.details.get("remote_message", ""))

    @property
    def remote_traceback(self) -> str:
        return str(self.details.get("remote_traceback", ""))


class TarantoolError(RemoteExecError):
    """Tarantool reported an error: a Lua error from eval/call, or a failed
    instance start (the Lua or log message is in the text)."""


_BY_NAME = {
    cls.__name__: cls
    for cls in (
        RemoteExecError,
        ExecutorError,
        TimeoutExpired,
        AlreadyRunning,
        ProcessExitedWithError,
        ProcessFinishedWithError,
        CommandNotFound,
        CommandFailed,
        HostLost,
        RemoteCallError,
        TarantoolError,
    )
}


def from_remote(error: Mapping[str, Any], host: str) -> RemoteExecError:
    """Turn a target-side error detail into the matching exception class.

    The detail has at least ``type`` and ``message``; ``command``,
    ``exit_code``, ``output_tail``, ``kind`` and any other keys become
    attributes (``details``). A ``host`` key from the target (say, a probed
    address) is kept as ``details["remote_host"]``: ``host`` is the master's
    name for the host that answered.
    """
    fields = dict(error)
    kind = fields.pop("type", "RemoteExecError")
    message = fields.pop("message", "remote error")
    if "host" in fields:
        fields["remote_host"] = fields.pop("host")
    cls = _BY_NAME.get(kind, RemoteExecError) if isinstance(kind, str) else RemoteExecError
    return cls(str(message), host=host, **fields)


def from_dict(reply: Mapping[str, Any], host: str) -> RemoteExecError:
    """Turn a failed call's reply into the matching exception class.

    ``reply`` is the one error shape of :func:`remoteexec.target.protocol.error`:
    ``{"ok": False, "error": {"type", "message", "kind"?, **fields}}``.
    Anything else is a ValueError: it is a bug on one side, not an error to
    report as the host's.
    """
    error = reply.get("error") if isinstance(reply, Mapping) else None
    if (
        not isinstance(reply, Mapping)
        or reply.get("ok") is not False
        or not isinstance(error, Mapping)
    ):
        raise ValueError(
            "not an error reply ({'ok': False, 'error': {...}}): %s" % bounded(repr(reply), 200)
        )
    return from_remote(error, host)
