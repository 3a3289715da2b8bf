"""Error replies of the Tarantool target functions: a ``kind`` and the class it maps to.

Every failure a caller needs to explain comes back in the one shape of
:func:`remoteexec.target.protocol.error`, with ``kind`` (what failed, e.g.
``"lua"``, ``"timeout"``, ``"exited"``) among its fields::

    {"ok": False, "error": {"type": "TarantoolError", "message": "probe:1: boom",
     "kind": "lua", "socket": "...", ...}}

``error["type"]`` names the remoteexec.errors class the master raises.
"""

from typing import Any, Dict

from remoteexec.target.protocol import error

__all__ = ["TYPES", "failure"]

#: Exception class the master raises for each kind (remoteexec.errors names).
TYPES = {
    "lua": "TarantoolError",
    "connect": "TarantoolError",
    "protocol": "TarantoolError",
    "timeout": "TimeoutExpired",
    "exited": "TarantoolError",
    "identity": "TarantoolError",
    "workdir": "TarantoolError",
    "missing": "CommandNotFound",
    "exec": "CommandFailed",
    "parse": "CommandFailed",
}


def failure(kind: str, message: str, **fields: Any) -> Dict[str, Any]:
    """The error reply for ``kind``: :func:`protocol.error` with the type ``kind`` maps to."""
    return error(TYPES.get(kind, "RemoteExecError"), message, kind=kind, **fields)
