"""``box.info`` as plain data, read through the probe socket. Stdlib only.

The Lua that reads it lives on the master (``remoteexec/tarantool/lua/
box_status.lua``, package data mitogen does not ship): the master passes
its text in every call, as ``lua``.
"""

from typing import Any, Dict, Optional, Sequence

from remoteexec.target.tarantool.probe import probe
from remoteexec.target.tarantool.replies import failure

__all__ = ["box_status", "vclock_of"]


def vclock_of(pairs: Any) -> Dict[int, int]:
    """A vclock from the Lua side's ``{{id, lsn}, ...}`` pairs (JSON keys cannot be ints)."""
    out = {}
    for item in pairs or ():
        if isinstance(item, list) and len(item) == 2:
            try:
                out[int(item[0])] = int(item[1])
            except (TypeError, ValueError):
                continue
    return out


def box_status(
    socket_path: str,
    lua: str,
    timeout: float = 5.0,
    hold: float = 0.0,
    since: str = "",
    read_only: Optional[bool] = None,
    peers: Sequence[str] = (),
) -> Dict[str, Any]:
    """One probe that returns ``box.info`` as plain data.

    With ``hold`` > 0 the probe first waits inside tarantool, up to ``hold``
    seconds (keep ``timeout`` above it), while the first readiness layer not
    reached is still ``since`` ("running", "app", "ro", "mesh"; ``read_only``
    and the ``peers``' uuids as :func:`~remoteexec.target.tarantool.wait_instance`
    takes them): a long poll, cheaper than probing every few milliseconds.

    ``{"ok": True, "configured": bool, "status": "running", "ro": False,
    "id": 1, "uuid": ..., "cluster_uuid": ..., "version": ..., "pid": ...,
    "lsn": ..., "uptime": ..., "listen": "127.0.0.1:3301", "read_only_cfg": ...,
    "app_done": bool (remoteexec's init.lua finished app_lua),
    "vclock": {1: 5, 2: 3}, "election": {...} (2.6.1+), "ro_reason" (2.10+),
    "replication": [{"id", "uuid", "lsn", "upstream": {"status", "message",
    "lag", "idle", "peer"}, "downstream": {"status", "message", "idle", "lag",
    "vclock": {...}}}, ...]}`` sorted by id; ``upstream``/``downstream`` are
    missing where Tarantool has none (e.g. for the instance itself).
    ``configured`` is True once ``box.cfg{}`` has been called, also while it
    is still loading (``status`` 'loading', ``id`` None). Before that:
    ``{"ok": True, "configured": False, "status": "unconfigured", "pid": ...}``.
    ``listen`` is the real bound address (port 0
    resolved). Errors as in :func:`probe`. ``lua`` is the text of box_status.lua.

    The configured ``replication`` URIs are never returned: they may hold the
    replication password.
    """
    args = (hold, since, read_only, list(peers)) if hold > 0 else ()
    reply = probe(socket_path, lua, args, timeout)
    if not reply["ok"]:
        return reply
    data = reply["result"][0] if reply["result"] else None
    if not isinstance(data, dict):
        return failure("protocol", "box status probe returned no table", socket=socket_path)
    data["vclock"] = vclock_of(data.get("vclock"))
    replication = data.get("replication")
    if not isinstance(replication, list):
        replication = []  # an empty Lua table arrives as a list; anything else is a bug
    for peer in replication:
        down = peer.get("downstream")
        if isinstance(down, dict):
            down["vclock"] = vclock_of(down.get("vclock"))
    data["replication"] = replication
    data["ok"] = True
    return data
