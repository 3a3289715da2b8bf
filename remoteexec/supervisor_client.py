"""Typed stubs for the supervisor's calls: what the master calls on a host's supervisor.

Each method of :class:`SupervisorClient` names one call of
:class:`remoteexec.target.supervisor.Supervisor` (or one target function
run through its ``invoke``) with its real signature and reply type
(:mod:`remoteexec.target.protocol`), so no caller spells a method name as a
string or reaches a target function by its dotted name. An error reply
raises the exception it names (:meth:`remoteexec.host.Host.service`).
"""

from __future__ import annotations

import signal
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, cast

from remoteexec.host import REPLY_SLACK, Host
from remoteexec.target import checks, files, protocol

Spec = Mapping[str, Any]


def dotted(function: Callable[..., Any]) -> str:
    """The dotted name ``invoke`` takes for a target function."""
    return "%s.%s" % (function.__module__, function.__qualname__)


class SupervisorClient:
    """One host's supervisor, as the master calls it."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def __repr__(self) -> str:
        return "<SupervisorClient of %s>" % self.host.name

    def _call(self, method: str, waits: Optional[float] = None, **kwargs: Any) -> Any:
        """Supervisor call ``method``; its reply may take ``waits`` seconds
        (the operation's own bound) plus the usual slack."""
        slack = REPLY_SLACK if waits is None else waits + REPLY_SLACK
        return self.host.service(method, reply_timeout=slack, **kwargs)

    # -- one process tree ------------------------------------------------

    def start(
        self,
        spec: Spec,
        check_specs: Sequence[Spec] = (),
        timeout: float = 3600.0,
        sleep: float = 0.1,
        pre_check_specs: Sequence[Spec] = (),
    ) -> protocol.ProcInfo:
        """Spawn ``spec`` and wait (on the host) until every check passes."""
        reply = self._call(
            "start",
            timeout,
            spec=dict(spec),
            check_specs=[dict(s) for s in check_specs],
            timeout=timeout,
            sleep=sleep,
            pre_check_specs=[dict(s) for s in pre_check_specs],
        )
        return cast(protocol.ProcInfo, reply)

    def wait(
        self, proc_id: int, check_specs: Sequence[Spec], timeout: float, sleep: float = 0.1
    ) -> protocol.ProcInfo:
        """Wait until ``check_specs`` pass for a started tree."""
        specs = [dict(s) for s in check_specs]
        reply = self._call(
            "wait", timeout, proc_id=proc_id, check_specs=specs, timeout=timeout, sleep=sleep
        )
        return cast(protocol.ProcInfo, reply)

    def status(self, proc_id: int) -> protocol.ProcInfo:
        """The tree's state (``pid`` None when the supervisor does not know it)."""
        return cast(protocol.ProcInfo, self.host.service("status", proc_id=proc_id))

    def stop(
        self,
        proc_id: int,
        sig: int,
        timeout: float,
        expected_returncode: Optional[int] = None,
    ) -> protocol.StopReply:
        """``sig``, ``timeout`` seconds, then SIGKILL; raises on escalation or a bad exit code."""
        reply = self._call(
            "stop",
            timeout,
            proc_id=proc_id,
            sig=sig,
            timeout=timeout,
            expected_returncode=expected_returncode,
        )
        return cast(protocol.StopReply, reply)

    def kill(
        self, proc_id: int, sig: int = signal.SIGKILL, wait: bool = True
    ) -> protocol.KillReply:
        """``sig`` to the whole tree; with ``wait``, until it is gone."""
        return cast(
            protocol.KillReply,
            self.host.service("kill", proc_id=proc_id, sig=int(sig), wait=wait),
        )

    def signal(self, proc_id: int, sig: int) -> None:
        """``sig`` to the main process only."""
        self.host.service("signal", proc_id=proc_id, sig=int(sig))

    def forget(self, proc_id: int, reply_timeout: float = REPLY_SLACK) -> protocol.ForgetReply:
        """Stop what is left of the tree, drop it and its log."""
        return cast(
            protocol.ForgetReply,
            self.host.service("forget", reply_timeout=reply_timeout, proc_id=proc_id),
        )

    def forget_nowait(self, proc_id: int) -> bool:
        """:meth:`forget` without waiting (any thread, never raises); whether it was sent."""
        return self.host.service_nowait("forget", proc_id=proc_id)

    def output(self, proc_id: int, lines: int = protocol.TAIL_LINES) -> str:
        """The last ``lines`` lines of the tree's output."""
        reply = cast(
            protocol.OutputReply, self.host.service("output", proc_id=proc_id, lines=lines)
        )
        return str(reply["output"])

    def read(
        self,
        proc_id: int,
        stream: str,
        offset: int,
        size: int = protocol.READ_CHUNK,
        wait: float = protocol.READ_WAIT,
        line: bool = False,
    ) -> protocol.ReadReply:
        """Bytes of a log from ``offset``, waiting up to ``wait`` for them."""
        reply = self._call(
            "read",
            wait,
            proc_id=proc_id,
            stream=stream,
            offset=offset,
            size=size,
            wait=wait,
            line=line,
        )
        return cast(protocol.ReadReply, reply)

    def wait_exit(
        self, proc_id: int, timeout: float = protocol.READ_WAIT
    ) -> protocol.WaitExitReply:
        """The main process's exit code, waiting up to ``timeout``."""
        reply = self._call("wait_exit", timeout, proc_id=proc_id, timeout=timeout)
        return cast(protocol.WaitExitReply, reply)

    # -- checks and files ------------------------------------------------

    def probe(self, check_specs: Sequence[Spec]) -> bool:
        """Whether every check passes on the host right now."""
        reply = cast(
            protocol.ProbeReply,
            self.host.service("probe", check_specs=[dict(s) for s in check_specs]),
        )
        return bool(reply["passed"])

    def check_problems(self, check_specs: Sequence[Spec]) -> List[str]:
        """Why some checks could never pass on the host (an unloadable ca_file)."""
        found = self.host.invoke(dotted(checks.problems), [dict(s) for s in check_specs])
        return [str(p) for p in found]

    def tail(self, path: str, lines: int = protocol.TAIL_LINES) -> str:
        """The last ``lines`` lines of a text file on the host ("" if unreadable)."""
        return str(self.host.invoke(dotted(files.tail), path, lines))

    def read_file(self, path: str) -> bytes:
        """A whole file on the host (for artifacts); OSError as a RemoteCallError."""
        return bytes(self.host.invoke(dotted(files.read_bytes), path))

    def free_port(self, address: str = "") -> int:
        """A TCP port free on the host now, for a service told to pick one (port 0)."""
        return int(self.host.invoke(dotted(checks.free_port), address))

    # -- the whole run ---------------------------------------------------

    def ping(self, reply_timeout: float = REPLY_SLACK) -> protocol.PingReply:
        return cast(protocol.PingReply, self.host.service("ping", reply_timeout=reply_timeout))

    def finish(self, reply_timeout: float = REPLY_SLACK) -> None:
        """Kill the run on the host and drop its logs (unless keep_logs)."""
        self.host.service("finish", reply_timeout=reply_timeout)

    def info(self) -> Dict[str, Any]:
        """What install said about the host (:class:`~remoteexec.target.protocol.InstallReply`)."""
        return dict(self.host.info)


__all__ = ["SupervisorClient", "dotted"]
