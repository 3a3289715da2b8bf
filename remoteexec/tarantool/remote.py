"""Typed master-side stubs of the target's Tarantool functions.

Each stub calls its :mod:`remoteexec.target.tarantool` function on the
host's thread pool (``Host.invoke``, so a wait never queues behind another
call) with keyword arguments, names the function by the function object
itself (never a string typed by hand), and adds what the target cannot read
itself: the Lua of :mod:`remoteexec.tarantool.scripts`. An error reply
raises the exception it names (:func:`remoteexec.errors.from_remote`).
``reply_timeout`` bounds the wait for the answer on the master.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

from remoteexec.supervisor_client import dotted
from remoteexec.tarantool import scripts
from remoteexec.target.tarantool import boxinfo, files, instance, vclock, version
from remoteexec.target.tarantool.probe import probe

if TYPE_CHECKING:
    from remoteexec.host import Host

__all__ = [
    "box_status",
    "eval_lua",
    "host_facts",
    "prepare_instance",
    "read_file",
    "tail_lines",
    "wait_instance",
    "wait_vclock",
]


def _invoke(host: Host, fn: Callable[..., Any], reply_timeout: float, **kwargs: Any) -> Any:
    return host.invoke(dotted(fn), reply_timeout=reply_timeout, **kwargs)


def host_facts(host: Host, *, path: str, timeout: float, reply_timeout: float) -> Dict[str, Any]:
    """``{"version": [2, 6, 0], "text", "path", "address"}`` of the tarantool at ``path``."""
    reply: Dict[str, Any] = _invoke(
        host, version.host_facts, reply_timeout, path=path, timeout=timeout
    )
    return reply


def prepare_instance(
    host: Host,
    *,
    ctl_dir: str,
    work_dir: str,
    init_lua: str,
    notify_socket: str,
    reply_timeout: float,
) -> Dict[str, Any]:
    """Make the instance's directories, write its init.lua, bind its notify socket."""
    reply: Dict[str, Any] = _invoke(
        host,
        instance.prepare_instance,
        reply_timeout,
        ctl_dir=ctl_dir,
        work_dir=work_dir,
        init_lua=init_lua,
        notify_socket=notify_socket,
    )
    return reply


def wait_instance(
    host: Host,
    *,
    probe_socket: str,
    pid: int,
    timeout: float,
    notify_socket: Optional[str],
    read_only: Optional[bool],
    instance_uuid: Optional[str],
    peers: Sequence[Sequence[str]],
    log_paths: Sequence[str],
    reply_timeout: float,
) -> Dict[str, Any]:
    """Wait for every readiness layer; ``{"timings", "status"}`` (see the target's doc)."""
    reply: Dict[str, Any] = _invoke(
        host,
        instance.wait_instance,
        reply_timeout,
        probe_socket=probe_socket,
        pid=pid,
        timeout=timeout,
        notify_socket=notify_socket,
        read_only=read_only,
        instance_uuid=instance_uuid,
        peers=[list(p) for p in peers],
        log_paths=list(log_paths),
        status_lua=scripts.box_status_lua(),
    )
    return reply


def eval_lua(
    host: Host,
    *,
    socket_path: str,
    lua: str,
    args: Sequence[Any],
    timeout: float,
    reply_timeout: float,
) -> List[Any]:
    """Every value the Lua chunk ``lua`` returned, run through the probe socket."""
    reply = _invoke(
        host,
        probe,
        reply_timeout,
        socket_path=socket_path,
        lua=lua,
        args=list(args),
        timeout=timeout,
    )
    result: List[Any] = reply["result"]
    return result


def box_status(
    host: Host, *, socket_path: str, timeout: float, reply_timeout: float
) -> Dict[str, Any]:
    """``box.info`` as plain data (see :func:`remoteexec.target.tarantool.box_status`)."""
    reply: Dict[str, Any] = _invoke(
        host,
        boxinfo.box_status,
        reply_timeout,
        socket_path=socket_path,
        lua=scripts.box_status_lua(),
        timeout=timeout,
    )
    return reply


def wait_vclock(
    host: Host,
    *,
    probe_socket: str,
    target: Dict[int, int],
    timeout: float,
    reply_timeout: float,
) -> Dict[str, Any]:
    """Wait until the instance's vclock has every component of ``target`` (but 0)."""
    reply: Dict[str, Any] = _invoke(
        host,
        vclock.wait_vclock,
        reply_timeout,
        probe_socket=probe_socket,
        target=target,
        timeout=timeout,
        status_lua=scripts.box_status_lua(),
    )
    return reply


def read_file(host: Host, *, path: str, reply_timeout: float) -> Optional[bytes]:
    """The file's content (its last 16 MiB), None when it does not exist."""
    data: Optional[bytes] = _invoke(host, files.read_file, reply_timeout, path=path)["data"]
    return data


def tail_lines(host: Host, *, path: str, lines: int, reply_timeout: float) -> str:
    """The last ``lines`` lines of a file on the host ("" when it cannot be read)."""
    return str(_invoke(host, files.tail_lines, reply_timeout, path=path, lines=lines))
