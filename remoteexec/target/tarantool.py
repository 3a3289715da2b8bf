"""Target-side Tarantool helpers: version, probe client, NOTIFY_SOCKET, logs.

Runs inside a mitogen context on the target: standard library only, and only
plain values (None, bool, int, float, str, bytes, list, tuple, dict) cross the
functions that are called remotely. Failures a caller needs to explain come
back instead of raising, in the shape the supervisor uses::

    {"ok": False, "kind": "lua", "error": {"type": "TarantoolError",
     "message": "probe:1: boom", "kind": "lua", "socket": "...", ...}}

``error["type"]`` names the remoteexec.errors class the master should raise
(TarantoolError, TimeoutExpired, CommandNotFound, CommandFailed); ``kind`` says
what failed, the same at both levels.

The probe server these functions talk to is started by the ``init.lua`` that
``remoteexec.tarantool.config.render_init_lua`` generates: one JSON object per
line each way over a unix stream socket.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import math
import os
import re
import select
import socket
import stat
import struct
import subprocess
import time
from typing import Any, Callable, Iterable, List, Optional, Sequence

__all__ = [
    "UNIX_PATH_MAX",
    "NotifyListener",
    "box_status",
    "log_lines",
    "probe",
    "tarantool_version",
]

# sun_path holds 108 bytes including the terminating NUL.
UNIX_PATH_MAX = 107
# A reply larger than this is not a probe answer any more.
MAX_REPLY = 64 << 20

_VERSION_RE = re.compile(r"\bTarantool\b(?:\s+Enterprise)?\s+v?(\d+)\.(\d+)\.(\d+)", re.IGNORECASE)
_request_ids = itertools.count(1)


# Exception class the master raises for each kind (remoteexec.errors names).
_TYPES = {
    "lua": "TarantoolError",
    "connect": "TarantoolError",
    "protocol": "TarantoolError",
    "timeout": "TimeoutExpired",
    "missing": "CommandNotFound",
    "exec": "CommandFailed",
    "parse": "CommandFailed",
}


def _error(kind: str, message: str, **context: Any) -> dict:
    """The project's error dict, plus ``kind`` at the top for quick dispatch."""
    detail = {"type": _TYPES.get(kind, "RemoteExecError"), "message": message, "kind": kind}
    detail.update((k, v) for k, v in context.items() if v is not None)
    return {"ok": False, "kind": kind, "error": detail}


def tarantool_version(path: str = "tarantool", timeout: float = 10.0) -> dict:
    """Run ``<path> --version`` and parse its first line.

    Returns ``{"ok": True, "version": [2, 6, 0], "text": "Tarantool 2.6.0-0-g47aa4e01e",
    "path": path}`` or an error dict with ``kind`` "missing" (no such binary),
    "exec" (cannot run it, or it failed), "timeout" or "parse".
    """
    try:
        proc = subprocess.run(
            [path, "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        return _error(
            "missing", f"tarantool binary not found: {exc}", path=path, command=[path, "--version"]
        )
    except subprocess.TimeoutExpired:
        return _error(
            "timeout",
            f"{path} --version did not finish in {timeout} s",
            path=path,
            command=[path, "--version"],
        )
    except OSError as exc:
        return _error("exec", f"cannot run {path}: {exc}", path=path, command=[path, "--version"])
    out = proc.stdout.decode("utf-8", "replace")
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace")
        return _error(
            "exec",
            f"{path} --version exited with {proc.returncode}",
            path=path,
            command=[path, "--version"],
            exit_code=proc.returncode,
            output_tail=(out + err)[-2000:],
        )
    for line in out.splitlines():
        match = _VERSION_RE.search(line)
        if match:
            return {
                "ok": True,
                "version": [int(part) for part in match.groups()],
                "text": line.strip(),
                "path": path,
            }
    return _error(
        "parse",
        "no version in the output of --version",
        path=path,
        command=[path, "--version"],
        output_tail=out[-2000:],
    )


# --- probe client -----------------------------------------------------------


def _json_args(value: Any, out: List[str]) -> None:
    """JSON for Tarantool's decoder: it takes nan/inf (not NaN/Infinity)."""
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, float):
        if math.isnan(value):
            out.append("nan")
        elif math.isinf(value):
            out.append("inf" if value > 0 else "-inf")
        else:
            out.append(repr(float(value)))
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, (bytes, bytearray)):
        # Raw bytes travel inside the JSON string, see _encode_request().
        out.append(json.dumps(bytes(value).decode("utf-8", "surrogateescape"), ensure_ascii=False))
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _json_args(item, out)
        out.append("]")
    elif isinstance(value, dict):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if i:
                out.append(",")
            if isinstance(key, bytes):
                key = key.decode("utf-8", "surrogateescape")
            out.append(json.dumps(str(key), ensure_ascii=False))
            out.append(":")
            _json_args(item, out)
        out.append("}")
    else:
        raise TypeError(f"cannot pass {type(value).__name__} to Lua")


def _encode_request(req_id: int, lua: str, args: Sequence[Any]) -> bytes:
    out = ['{"id":', str(req_id), ',"lua":', json.dumps(lua, ensure_ascii=False), ',"args":']
    _json_args(list(args), out)
    out.append("}\n")
    # surrogateescape turns bytes smuggled into str back into the raw bytes.
    return "".join(out).encode("utf-8", "surrogateescape")


def probe(socket_path: str, lua: str, args: Sequence[Any] = (), timeout: float = 5.0) -> dict:
    """Run Lua source inside a Tarantool instance through its probe socket.

    ``lua`` is a chunk; ``args`` arrive as ``...``. Returns
    ``{"ok": True, "result": [every return value]}`` (nil and box.NULL as None,
    int64 exact, tuples as lists, non-finite floats as float) or an error dict
    (see the module doc) whose ``kind`` is "lua" (the chunk failed or did not
    compile; ``error`` adds ``error_type`` and ``error_code`` for box errors
    and the Lua ``traceback``), "connect" (nobody listens), "timeout" (no
    answer within ``timeout`` seconds; the chunk may still be running) or
    "protocol". ``error["message"]`` is the Lua error message as is.

    Strings are decoded as UTF-8; bytes that are not UTF-8 are kept as
    surrogate escapes (``s.encode("utf-8", "surrogateescape")`` gives them
    back). ``bytes`` arguments arrive in Lua as the same bytes.
    """
    deadline = time.monotonic() + timeout
    req_id = next(_request_ids)
    try:
        request = _encode_request(req_id, lua, args)
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        return _error("protocol", f"cannot encode the request: {exc}", socket=socket_path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.settimeout(max(timeout, 0.001))
            sock.connect(socket_path)
        except socket.timeout:
            return _error("timeout", f"connect timed out after {timeout} s", socket=socket_path)
        except OSError as exc:
            return _error(
                "connect",
                f"cannot connect to the probe socket: {exc.strerror or exc}",
                socket=socket_path,
                errno=exc.errno,
            )
        chunks: List[bytes] = []
        size = 0
        try:
            sock.sendall(request)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout()
                sock.settimeout(left)
                chunk = sock.recv(1 << 16)
                if not chunk:
                    return _error(
                        "protocol",
                        "the probe server closed the connection without a reply",
                        socket=socket_path,
                    )
                chunks.append(chunk)
                size += len(chunk)
                if b"\n" in chunk:
                    break
                if size > MAX_REPLY:
                    return _error("protocol", f"reply over {MAX_REPLY} bytes", socket=socket_path)
        except socket.timeout:
            return _error("timeout", f"no reply within {timeout} s", socket=socket_path)
        except OSError as exc:
            return _error("connect", f"probe connection failed: {exc}", socket=socket_path)
    finally:
        sock.close()

    line = b"".join(chunks).split(b"\n", 1)[0]
    try:
        reply = json.loads(line.decode("utf-8", "surrogateescape"))
    except ValueError as exc:
        return _error(
            "protocol",
            f"bad reply: {exc}",
            socket=socket_path,
            reply=line[:500].decode("utf-8", "replace"),
        )
    if not isinstance(reply, dict) or reply.get("id") not in (req_id, None):
        return _error("protocol", "reply does not match the request", socket=socket_path)
    if reply.get("ok") is True:
        result = reply.get("result")
        return {"ok": True, "result": result if isinstance(result, list) else []}
    return _error(
        str(reply.get("kind") or "lua"),
        str(reply.get("error")),
        socket=socket_path,
        error_type=reply.get("error_type"),
        error_code=reply.get("error_code"),
        traceback=reply.get("traceback"),
    )


# --- box.info -----------------------------------------------------------------

_BOX_STATUS_LUA = r"""
local function get(f)
    local ok, v = pcall(f)
    if ok then return v end
    return nil
end
local function pairs_of(vclock)
    local out = {}
    for id, lsn in pairs(vclock or {}) do out[#out + 1] = {id, lsn} end
    return out
end
local pid = get(function() return require('tarantool').pid() end)
local ok_status, status = pcall(function() return box.info.status end)
if not ok_status then
    return {status = 'unconfigured', configured = false, pid = pid}
end
local info = box.info
local r = {
    -- box.cfg stays a function until the first box.cfg{} has returned.
    configured = type(box.cfg) ~= 'function',
    status = status,
    ro = get(function() return info.ro end),
    ro_reason = get(function() return info.ro_reason end),
    id = get(function() return info.id end),
    uuid = get(function() return info.uuid end),
    version = get(function() return info.version end),
    pid = get(function() return info.pid end) or pid,
    lsn = get(function() return info.lsn end),
    uptime = get(function() return info.uptime end),
    cluster_uuid = get(function() return info.cluster.uuid end),
    vclock = pairs_of(get(function() return info.vclock end)),
    read_only_cfg = get(function() return box.cfg.read_only end),
}
local listen = get(function() return info.listen end)
-- 2.6 shows 'unix/:(socket)' for unix sockets; the configured value says more.
if listen == nil or type(listen) == 'string' and listen:find('(socket)', 1, true) then
    listen = get(function() return box.cfg.listen end)
end
r.listen = listen
local election = get(function() return info.election end)
if type(election) == 'table' then
    r.election = {state = election.state, term = election.term, leader = election.leader,
                  vote = election.vote}
end
local peers = {}
for _, peer in pairs(get(function() return info.replication end) or {}) do
    local p = {id = peer.id, uuid = peer.uuid, lsn = peer.lsn}
    if peer.upstream ~= nil then
        local u = peer.upstream
        p.upstream = {status = u.status, message = u.message, lag = u.lag, idle = u.idle,
                      peer = u.peer}
    end
    if peer.downstream ~= nil then
        local d = peer.downstream
        p.downstream = {status = d.status, message = d.message, idle = d.idle, lag = d.lag,
                        vclock = pairs_of(d.vclock)}
    end
    peers[#peers + 1] = p
end
table.sort(peers, function(a, b) return (a.id or 0) < (b.id or 0) end)
r.replication = peers
return r
"""


def _vclock(pairs: Any) -> dict:
    out = {}
    for item in pairs or ():
        if isinstance(item, list) and len(item) == 2:
            try:
                out[int(item[0])] = int(item[1])
            except (TypeError, ValueError):
                continue
    return out


def box_status(socket_path: str, timeout: float = 5.0) -> dict:
    """One probe that returns ``box.info`` as plain data.

    ``{"ok": True, "configured": bool, "status": "running", "ro": False,
    "id": 1, "uuid": ..., "cluster_uuid": ..., "version": ..., "pid": ...,
    "lsn": ..., "uptime": ..., "listen": "127.0.0.1:3301", "read_only_cfg": ...,
    "vclock": {1: 5, 2: 3}, "election": {...} (2.6.1+), "ro_reason" (2.10+),
    "replication": [{"id", "uuid", "lsn", "upstream": {"status", "message",
    "lag", "idle", "peer"}, "downstream": {"status", "message", "idle", "lag",
    "vclock": {...}}}, ...]}`` sorted by id; ``upstream``/``downstream`` are
    missing where Tarantool has none (e.g. for the instance itself).
    ``configured`` is True once ``box.cfg{}`` has been called, also while it
    is still loading (``status`` 'loading', ``id`` None). Before that:
    ``{"ok": True, "configured": False, "status": "unconfigured", "pid": ...}``.
    ``listen`` is the real bound address (port 0
    resolved). Errors as in :func:`probe`.

    The configured ``replication`` URIs are never returned: they may hold the
    replication password.
    """
    reply = probe(socket_path, _BOX_STATUS_LUA, (), timeout)
    if not reply["ok"]:
        return reply
    data = reply["result"][0] if reply["result"] else None
    if not isinstance(data, dict):
        return _error("protocol", "box status probe returned no table", socket=socket_path)
    data["vclock"] = _vclock(data.get("vclock"))
    replication = data.get("replication")
    if not isinstance(replication, list):
        replication = []  # an empty Lua table arrives as a list; anything else is a bug
    for peer in replication:
        down = peer.get("downstream")
        if isinstance(down, dict):
            down["vclock"] = _vclock(down.get("vclock"))
    data["replication"] = replication
    data["ok"] = True
    return data


# --- NOTIFY_SOCKET --------------------------------------------------------------


class NotifyListener:
    """Receives sd_notify messages (``READY=1``, ``STATUS=running``) from a child.

    Binds a unix datagram socket at ``path`` (mode 0600) to be passed to the
    child as ``NOTIFY_SOCKET=<path>``. Tarantool 2.6 sends STATUS=loading,
    STATUS=running (repeatedly) and READY=1 at the end of the first box.cfg.
    ``path`` may start with '@' for a Linux abstract socket (no file); it is
    bound NUL-padded to 108 bytes, which is the address tarantool sends to.

    Not a remote-call type: create and keep it inside the target context.
    ``pid`` (settable after spawn) drops messages from other processes, such as
    a stale instance of an earlier run that still has the same socket.
    """

    def __init__(self, path: str, pid: Optional[int] = None) -> None:
        raw = os.fsencode(path)
        if len(raw) > UNIX_PATH_MAX:
            raise ValueError(
                f"notify socket path is {len(raw)} bytes, over the unix socket limit of "
                f"{UNIX_PATH_MAX}: {path!r}"
            )
        self.path = path
        self.pid = pid
        #: every accepted message: (time.monotonic(), sender pid or None, text)
        self.history: List[tuple] = []
        #: last STATUS= value, e.g. 'loading', 'running', 'orphan'
        self.state: Optional[str] = None
        #: READY=1 was received
        self.ready = False
        self._abstract = path.startswith("@")
        if self._abstract:
            # Tarantool sends to sizeof(sockaddr_un): an abstract name it reaches
            # is NUL-padded to the full 108 bytes, and those NULs are part of it.
            address: Any = b"\0" + raw[1:].ljust(UNIX_PATH_MAX, b"\0")
        else:
            address = path
        if not self._abstract:
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)
            except FileNotFoundError:
                pass
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.bind(address)
            if not self._abstract:
                os.chmod(path, 0o600)
            self._creds = hasattr(socket, "SO_PASSCRED")
            if self._creds:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise

    def fileno(self) -> int:
        return self._sock.fileno()

    @property
    def running(self) -> bool:
        """READY=1 arrived and the last status is 'running' (not orphan/loading)."""
        return self.ready and self.state == "running"

    def _receive(self) -> List[str]:
        lines: List[str] = []
        for _ in range(1000):  # bounded drain
            try:
                if self._creds:
                    data, ancdata, _flags, _addr = self._sock.recvmsg(4096, socket.CMSG_SPACE(12))
                else:
                    data, ancdata = self._sock.recv(4096), []
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    break
                raise
            sender = None
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    sender = struct.unpack("iII", payload[:12])[0]
            if self.pid is not None and sender is not None and sender != self.pid:
                continue
            now = time.monotonic()
            for line in data.decode("utf-8", "replace").splitlines():
                line = line.strip()
                if not line:
                    continue
                self.history.append((now, sender, line))
                if line == "READY=1":
                    self.ready = True
                elif line.startswith("STATUS="):
                    self.state = line[len("STATUS=") :]
                lines.append(line)
        return lines

    def poll(self, timeout: float = 0.0) -> List[str]:
        """Messages that arrived, waiting up to ``timeout`` s for the first one."""
        lines = self._receive()
        if lines or timeout <= 0:
            return lines
        ready, _, _ = select.select([self._sock], [], [], timeout)
        return self._receive() if ready else []

    def wait_ready(self, timeout: float, alive: Optional[Callable[[], bool]] = None) -> bool:
        """Wait until :attr:`running` or ``timeout``; ``alive()`` False stops early."""
        deadline = time.monotonic() + timeout
        while not self.running:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if alive is not None and not alive():
                return False
            self.poll(min(left, 0.05))
        return True

    def close(self) -> None:
        """Close the socket and remove its file."""
        self._sock.close()
        if not self._abstract:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def __enter__(self) -> NotifyListener:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --- logs -------------------------------------------------------------------------

# "2026-11-21 12:28:11.665 [5202] main/103/init.lua load_cfg.lua:458 E> message"
_LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \[(?P<pid>\d+)\] \S+(?: \S+:\d+)? (?P<level>[A-Z!])> "
)
# What Tarantool writes to stderr before its log is open.
_STDERR_ERROR = re.compile(
    r"(?:\bER_[A-Z_]+:|Error\b|error:|fatal|can't|cannot|failed|Incorrect|not found)", re.IGNORECASE
)


def log_lines(
    log_path: str,
    levels: Iterable[str] = ("F", "E"),
    max_lines: int = 20,
    pid: Optional[int] = None,
    tail_bytes: int = 256 << 10,
) -> List[str]:
    """The last ``max_lines`` fatal/error lines of a Tarantool log or stderr file.

    Log lines (``... [pid] main/103/init.lua F> ...``) are kept when their level
    letter is in ``levels`` ("F" fatal, "E" error, "!" system error such as
    "Connection refused" retries, "C" critical, "W" warning, "I" info) and,
    with ``pid``, when they come from that process (a log file outlives
    restarts). Lines in no log format are what tarantool prints to stderr
    before its log is open (``ER_CFG: Incorrect value for option ...``,
    ``LuajitError: ...``); those that look like errors are kept too. Only the
    last ``tail_bytes`` of the file are read. A missing file gives [].
    """
    wanted = set(levels)
    try:
        with open(log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - tail_bytes))
            data = f.read(tail_bytes)
    except OSError:
        return []
    text = data.decode("utf-8", "replace")
    rows = text.splitlines()
    if size > tail_bytes and rows:
        rows = rows[1:]  # the first one is cut
    picked: List[str] = []
    for row in rows:
        row = row.rstrip()
        if not row:
            continue
        match = _LOG_LINE.match(row)
        if match:
            if match.group("level") not in wanted:
                continue
            if pid is not None and int(match.group("pid")) != pid:
                continue
            picked.append(row)
        elif (
            not row[0].isspace()
            and not row.startswith("stack traceback")
            and _STDERR_ERROR.search(row)
        ):
            picked.append(row)
    return picked[-max_lines:] if max_lines > 0 else []
