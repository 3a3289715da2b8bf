"""Version-aware Tarantool configuration and the generated ``init.lua`` (master side).

Three pieces:

* :func:`parse_version` / :class:`Features` (from :mod:`.version`, re-exported
  here): what the tarantool binary on a target supports.
* :func:`box_cfg_for`: a ``box.cfg`` dict with test-friendly defaults that fit
  that version; the user's keys win.
* :func:`render_init_lua`: the instance script. It starts the *probe server*
  (one JSON object per line over a unix socket, served inside tarantool as
  admin) before ``box.cfg`` so that a member stuck in bootstrap can still be
  inspected, then calls ``box.cfg``, creates the replication user on the
  writable member and runs the application code.

Secrets: the replication password never goes into the script. The script reads
it from an environment variable (:data:`PASSWORD_ENV`) and unsets it at once.
Tarantool 2.6 overwrites its environment block with the process title, so it is
not readable through ``/proc/PID/environ`` either, and its log masks the
password in replication URIs ("repl@host:port").
"""

from __future__ import annotations

import os
import posixpath
import re
from typing import Any, Dict, Mapping, Optional, Sequence

from remoteexec.tarantool import scripts
from remoteexec.tarantool.lua import LuaExpr, lua_string, to_lua
from remoteexec.tarantool.version import Features, Version, parse_version
from remoteexec.target.tarantool.notify import UNIX_PATH_MAX

__all__ = [
    "DEFAULT_MEMTX_MEMORY",
    "LOG_FILE",
    "PASSWORD_ENV",
    "PID_FILE",
    "UNIX_PATH_MAX",
    "URI_SAFE",
    "Features",
    "Version",
    "box_cfg_for",
    "check_credential",
    "parse_version",
    "render_init_lua",
]

DEFAULT_MEMTX_MEMORY = 64 << 20
LOG_FILE = "tarantool.log"
PID_FILE = "tarantool.pid"
PASSWORD_ENV = "TT_RX_PASSWORD"

# What Tarantool's URI parser (2.6) accepts in "user:password@host": checked
# against net.box on 2.6.0; ':', '@', '/', '#', '?', space, quotes, brackets and
# non-ASCII break the URI. No percent-decoding happens ('%40' stays literal).
URI_SAFE = re.compile(r"[A-Za-z0-9!$&'()*+,;=~._%-]+\Z")
_URI_SAFE_LUA = "^[%w!$&'()*+,;=~._%%-]+$"


def box_cfg_for(
    version: Sequence[int],
    *,
    listen: Any,
    work_dir: str,
    replication: Sequence[str] = (),
    read_only: bool = False,
    replication_timeout: Optional[float] = None,
    replication_connect_timeout: Optional[float] = None,
    memtx_memory: int = DEFAULT_MEMTX_MEMORY,
    instance_uuid: Optional[str] = None,
    replicaset_uuid: Optional[str] = None,
    proc_title: Optional[str] = None,
    user_box_cfg: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """Return the ``box.cfg`` table for one instance as a plain dict.

    ``work_dir`` is an absolute path on the target. Defaults suit tests:
    ``wal_mode='write'`` (replication needs it), ``memtx_memory`` (never the
    deprecated ``slab_alloc_arena``), the log and pid file inside ``work_dir``
    (absolute paths, since ``box.cfg`` chdirs into ``work_dir``), and a
    ``replication_connect_timeout`` of ``max(10, 40 * replication_timeout)``
    seconds when replication is set, so a member that
    cannot reach its peers fails in seconds, not after the default 30.

    ``user_box_cfg`` is applied last: its keys replace the defaults, and a key
    set to None removes the default entirely. ``feedback_enabled`` is left
    to the user: builds without the feedback daemon reject the key. Nothing
    is validated here;
    tarantool rejects bad keys and values itself with a precise message.
    """
    features = Features.for_version(version)
    # A path on the target: the master's cwd means nothing there.
    if not posixpath.isabs(work_dir):
        raise ValueError(f"work_dir must be an absolute path on the target, not {work_dir!r}")
    work_dir = posixpath.normpath(work_dir)
    cfg: Dict[str, Any] = {
        "listen": listen,
        "work_dir": work_dir,
        "wal_mode": "write",
        "memtx_memory": memtx_memory,
        "log": posixpath.join(work_dir, LOG_FILE),
        "pid_file": posixpath.join(work_dir, PID_FILE),
        "background": False,
        "read_only": read_only,
    }
    if proc_title:
        cfg["custom_proc_title"] = proc_title
    if instance_uuid:
        cfg["instance_uuid"] = instance_uuid
    if replicaset_uuid:
        cfg["replicaset_uuid"] = replicaset_uuid
    if replication_timeout is not None:
        cfg["replication_timeout"] = replication_timeout
    if replication:
        cfg["replication"] = list(replication)
        if replication_connect_timeout is None:
            replication_connect_timeout = max(10.0, 40 * (replication_timeout or 1.0))
        cfg["replication_connect_timeout"] = replication_connect_timeout
        if features.bootstrap_strategy:
            # 'auto' (the default) is what we want; naming it documents the choice.
            cfg["bootstrap_strategy"] = "auto"
    elif replication_connect_timeout is not None:
        cfg["replication_connect_timeout"] = replication_connect_timeout
    for key, value in (user_box_cfg or {}).items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    return cfg


def check_credential(value: str, what: str = "password") -> None:
    """Raise ValueError when ``value`` cannot travel in a replication URI.

    Tarantool 2.x takes credentials only inside ``user:password@host:port``;
    characters outside :data:`URI_SAFE` make the URI unparseable.
    """
    if not URI_SAFE.match(value or ""):
        raise ValueError(
            f"the replication {what} must be non-empty and use only letters, digits and "
            "!$&'()*+,;=~._%- (Tarantool's URI parser rejects the rest)"
        )


def _replication_uri(uri: str, user: Optional[str], with_password: bool) -> Any:
    if not user or user == "guest" or "@" in uri:
        return uri
    if not with_password:
        return f"{user}@{uri}"
    # The password is only ever a Lua variable, never literal text.
    return LuaExpr(f"{lua_string(user + ':')} .. rx_password .. {lua_string('@' + uri)}")


def render_init_lua(
    *,
    box_cfg: Mapping[str, Any],
    probe_socket: str,
    app_lua: str = "",
    replication_user: Optional[str] = None,
    password_env: Optional[str] = None,
    app_params: Optional[Mapping[str, Any]] = None,
    boot_interval: Optional[float] = None,
) -> str:
    """Render the instance's ``init.lua`` from the template ``lua/init.lua``.

    The script, in order:

    1. starts the probe server on the unix socket ``probe_socket`` (mode 0600);
       request ``{"id": .., "lua": "<source>", "args": [..], "n": <count>}``
       (a null argument is passed as nil), reply
       ``{"id": .., "ok": true, "result": [all return values]}`` or
       ``{"id": .., "ok": false, "kind": "lua"|"protocol", "error": "<message>",
       "error_type", "error_code", "traceback"}``. The source is loaded as text
       (never bytecode) and called with ``args`` as ``...`` under xpcall;
    2. calls ``box.cfg`` with ``box_cfg``. String entries of ``replication``
       without credentials get ``replication_user`` (and the password) added.
       If ``box.cfg`` fails, its message is appended to the log as an ``F>``
       line and the error is re-raised, so tarantool exits with status 1;
    3. if ``replication_user`` is set and the instance is writable, creates the
       user (with the password, if any) and grants it 'replication', once per
       replica set (``box.once``). A replica set needs this: without a grant,
       replicas log ``ER_ACCESS_DENIED ... for user 'guest'`` and retry
       forever. ``replication_user="guest"`` grants it to guest and leaves the
       URIs alone (no password);
    4. runs ``app_lua`` (as a chunk named ``app.lua``; it may ``return``),
       then sets the global ``rx_app_done`` to true: box.info.status is
       'running' as soon as box.cfg returns, so the readiness wait needs
       this to know the app's schema and functions exist. ``app_params``
       (plain values) is the global table ``params`` the app reads, set
       before anything else runs (an empty table when not given).

    ``boot_interval``: the ``replication_timeout`` of a first bootstrap (the
    work directory has no snapshot yet) instead of ``box_cfg``'s: Tarantool
    retries refused peers and JOINs at that interval. The writable member
    then runs ``app_lua`` only once every peer follows it (bounded by
    ``replication_connect_timeout``), so that every replica joins at the
    same LSN. The script defines the global ``rx_end_bootstrap()``, which
    sets ``box_cfg``'s ``replication_timeout``; whoever starts the instance
    calls it once the replica set is ready (see :meth:`ReplicaSet.start
    <remoteexec.tarantool.ReplicaSet.start>`). Restarts on the data run
    ``box_cfg``'s value throughout.

    ``password_env`` names the environment variable that carries the password
    (usually :data:`PASSWORD_ENV`); the script reads it and unsets it before
    anything else runs. The password never appears in the script. Check it
    with :func:`check_credential` on the master first: the script refuses a
    password the URI parser would choke on, without printing it.
    """
    if len(os.fsencode(probe_socket)) > UNIX_PATH_MAX:
        raise ValueError(
            f"probe socket path is {len(os.fsencode(probe_socket))} bytes, the limit for a unix "
            f"socket is {UNIX_PATH_MAX}: use a shorter work_dir ({probe_socket!r})"
        )
    cfg = dict(box_cfg)
    with_password = bool(password_env)
    if replication_user == "guest" and with_password:
        raise ValueError("the guest user cannot have a password")
    if replication_user:
        check_credential(replication_user, "user name")
    if replication_user and cfg.get("replication") is not None:
        replication = cfg["replication"]
        if isinstance(replication, str):
            replication = [replication]
        cfg["replication"] = [
            _replication_uri(uri, replication_user, with_password) if isinstance(uri, str) else uri
            for uri in replication
        ]

    values = {
        "probe_path": lua_string(probe_socket),
        "app_source": lua_string(app_lua),
        "repl_user": to_lua(replication_user),
        "app_params": to_lua(dict(app_params or {}), name="app_params", indent=4),
        "password_env": lua_string(password_env) if password_env else "nil",
        "password_pattern": lua_string(_URI_SAFE_LUA),
        "probe_lua": scripts.probe_lua().rstrip("\n"),
        "box_cfg": to_lua(cfg, name="box_cfg", indent=4),
        "boot_interval": to_lua(boot_interval, name="boot_interval"),
    }
    return scripts.render(scripts.init_template(), values)
