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
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time
from typing import Any, Callable, Iterable, List, Optional, Sequence

try:
    from . import procs
except ImportError:  # loaded as a lone file: no supervisor, so no reaper to race with
    procs = None

__all__ = [
    "UNIX_PATH_MAX",
    "NotifyListener",
    "box_status",
    "host_facts",
    "log_lines",
    "prepare_instance",
    "probe",
    "read_file",
    "tarantool_version",
    "wait_instance",
    "wait_vclock",
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
    "exited": "TarantoolError",
    "identity": "TarantoolError",
    "workdir": "TarantoolError",
    "missing": "CommandNotFound",
    "exec": "CommandFailed",
    "parse": "CommandFailed",
}


def _error(kind: str, message: str, **context: Any) -> dict:
    """The project's error dict, plus ``kind`` at the top for quick dispatch."""
    detail = {"type": _TYPES.get(kind, "RemoteExecError"), "message": message, "kind": kind}
    detail.update((k, v) for k, v in context.items() if v is not None)
    return {"ok": False, "kind": kind, "error": detail}


# What a short command's output may fill before it is cut.
_MAX_OUTPUT = 1 << 20


def _run_bounded(command: List[str], timeout: float) -> tuple:
    """(returncode, stdout, stderr) of ``command``, all within ``timeout``.

    Output goes to temporary files, not pipes: a child the command leaves
    behind holding them cannot keep this waiting. The command runs in a new
    session; once it exits or ``timeout`` is up (subprocess.TimeoutExpired),
    its whole process group is SIGKILLed, so nothing it started stays.

    The child is registered with :func:`procs.spawn_waited` (in a session of
    its own it looks like an orphan to the supervisor's reaper, which would
    otherwise reap it under our waitid: ECHILD), and released once reaped.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:

        def start() -> subprocess.Popen:
            return subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True
            )

        proc = procs.spawn_waited(start) if procs else start()
        try:
            deadline = time.monotonic() + timeout
            step = 0.001
            # Wait without reaping: while it is a zombie its pid (the group's
            # id) cannot be reused, so killing the group below is safe.
            while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                if time.monotonic() >= deadline:
                    raise subprocess.TimeoutExpired(command, timeout)
                time.sleep(step)
                step = min(step * 2, 0.02)
        finally:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            if procs:
                procs.release_waited(proc)
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read(_MAX_OUTPUT), err.read(_MAX_OUTPUT)


def tarantool_version(path: str = "tarantool", timeout: float = 10.0) -> dict:
    """Run ``<path> --version`` and parse its first line.

    Returns ``{"ok": True, "version": [2, 6, 0], "text": "Tarantool 2.6.0-0-g47aa4e01e",
    "path": path}`` or an error dict with ``kind`` "missing" (no such binary),
    "exec" (cannot run it, or it failed), "timeout" or "parse".
    """
    command = [path, "--version"]
    try:
        returncode, stdout, stderr = _run_bounded(command, timeout)
    except FileNotFoundError as exc:
        return _error("missing", f"tarantool binary not found: {exc}", path=path, command=command)
    except subprocess.TimeoutExpired:
        return _error(
            "timeout", f"{path} --version did not finish in {timeout} s", path=path, command=command
        )
    except OSError as exc:
        return _error("exec", f"cannot run {path}: {exc}", path=path, command=command)
    out = stdout.decode("utf-8", "replace")
    if returncode != 0:
        err = stderr.decode("utf-8", "replace")
        return _error(
            "exec",
            f"{path} --version exited with {returncode}",
            path=path,
            command=command,
            exit_code=returncode,
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
        command=command,
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
    args = list(args)
    out = ['{"id":', str(req_id), ',"n":', str(len(args)), ',"lua":']
    out += [json.dumps(lua, ensure_ascii=False), ',"args":']
    _json_args(args, out)
    out.append("}\n")
    # surrogateescape turns bytes smuggled into str back into the raw bytes.
    return "".join(out).encode("utf-8", "surrogateescape")


def probe(socket_path: str, lua: str, args: Sequence[Any] = (), timeout: float = 5.0) -> dict:
    """Run Lua source inside a Tarantool instance through its probe socket.

    ``lua`` is a chunk; ``args`` arrive as ``...`` (a None argument as nil,
    count kept; a None inside a list or dict as box.NULL). Returns
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
    -- Set by remoteexec's init.lua once app_lua has returned.
    app_done = rawget(_G, 'rx_app_done') == true,
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


def _read_tail(path: str, max_bytes: int) -> tuple:
    """(the last ``max_bytes`` of the file at ``path``, its size); OSError as raised."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - max_bytes))
        return f.read(max_bytes), size


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
        data, size = _read_tail(log_path, tail_bytes)
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


# --- instances: files, readiness, vclocks, artifacts ------------------------------

# NotifyListeners bound by prepare_instance() and not yet consumed by
# wait_instance(), by socket path: they must outlive the call that made them.
_LISTENERS: dict = {}
_LISTENERS_LOCK = threading.Lock()


def host_facts(path: str = "tarantool", timeout: float = 10.0) -> dict:
    """The tarantool version on this host, plus the address the master reached it on.

    ``address`` is the server side of ``$SSH_CONNECTION`` (what peers on the
    same network can use), or None for a context without ssh.
    """
    found = tarantool_version(path, timeout)
    if found["ok"]:
        parts = os.environ.get("SSH_CONNECTION", "").split()
        found["address"] = parts[2] if len(parts) == 4 else None
    return found


def _write_private(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` (mode 0600) atomically, never through a link."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _work_dir_problem(work_dir: str) -> Optional[str]:
    """Why tarantool could not keep its data and log in ``work_dir``, or None.

    Made (0700) when missing; a write is tried, since permission bits say
    nothing for root (a read-only or special file system refuses it anyway).
    """
    try:
        os.makedirs(work_dir, 0o700, exist_ok=True)
    except FileExistsError:
        return "work_dir %s is not a directory" % work_dir
    except OSError as exc:
        return "cannot create work_dir %s: %s" % (work_dir, exc.strerror or exc)
    if not os.path.isdir(work_dir):
        return "work_dir %s is not a directory" % work_dir
    try:
        fd, probe_file = tempfile.mkstemp(prefix=".rx-write-check-", dir=work_dir)
        os.close(fd)
        os.unlink(probe_file)
    except OSError as exc:
        return "work_dir %s is not writable: %s" % (work_dir, exc.strerror or exc)
    return None


def prepare_instance(ctl_dir: str, work_dir: str, init_lua: str, notify_socket: str) -> dict:
    """Make an instance's directories (0700), write its init.lua (0600), bind its notify socket.

    ``ctl_dir`` holds init.lua and the sockets (short paths); ``work_dir`` the
    data and the log (the same directory unless the user chose one). Both may
    exist already (a restart keeps the data). The notify socket stays bound in
    this context until :func:`wait_instance` consumes it. A ``work_dir`` that
    cannot be made, is not a directory or is not writable is an error dict
    (``kind`` "workdir", a TarantoolError) naming the path and the cause, and
    nothing else is touched.
    """
    problem = _work_dir_problem(work_dir)
    if problem is not None:
        return _error("workdir", problem, path=work_dir)
    os.makedirs(ctl_dir, 0o700, exist_ok=True)
    os.chmod(ctl_dir, 0o700)
    script = os.path.join(ctl_dir, "init.lua")
    _write_private(script, init_lua.encode("utf-8"))
    listener = NotifyListener(notify_socket)
    with _LISTENERS_LOCK:
        old = _LISTENERS.pop(notify_socket, None)
        _LISTENERS[notify_socket] = listener
    if old is not None:
        old.close()
    return {"ok": True, "init_lua": script}


def _exit_status(pid: int) -> tuple:
    """(exited, exit code or None) of a child that nobody here reaps.

    A zombie's status is in field 52 of /proc/PID/stat (Linux 3.5+); once the
    supervisor has reaped it the pid is simply gone.
    """
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return True, None
    if fields[0] not in (b"Z", b"X"):
        return False, None
    if len(fields) < 50:
        return True, None
    status = int(fields[49])
    return True, (status >> 8 if status & 0x7F == 0 else -(status & 0x7F))


def _exit_explanation(pid: int, log_paths: Sequence[str]) -> List[str]:
    """Why a tarantool exited: its fatal lines, else its error lines, from every log.

    The first line says it best: box.cfg's own F> line, or what went to stderr.
    """
    found: List[str] = []
    for path in log_paths:
        lines = log_lines(path, ("F",), pid=pid) or log_lines(path, ("F", "E"), pid=pid)
        found.extend(line for line in lines if line not in found)
    return found


def _link_problems(status: dict, peers: Sequence[Sequence[str]]) -> List[str]:
    """Every link between this member and ``peers`` that does not 'follow'.

    ``peers`` are [uuid, name, uri] lists; a problem reads
    ``"upstream storage-3: disconnected (timed out)"``, with upstream.message.
    """
    by_uuid = {p.get("uuid"): p for p in status.get("replication") or ()}
    problems = []
    for uuid, name, _uri in peers:
        peer = by_uuid.get(uuid) or {}
        for way in ("upstream", "downstream"):
            link = peer.get(way) or {}
            if link.get("status") == "follow":
                continue
            text = "%s %s: %s" % (way, name, link.get("status") or "not connected")
            if link.get("message"):
                text += " (%s)" % link["message"]
            problems.append(text)
    return problems


def _unreachable_peers(peers: Sequence[Sequence[str]], timeout: float) -> List[str]:
    """TCP-connect from here to every peer at once; the peers that cannot be reached.

    Before bootstrap ends, box.info.replication is empty and a silently
    dropped connect logs nothing: this names the broken link instead.
    """
    problems: List[str] = []

    def check(name: str, uri: str) -> None:
        host, _, port = uri.rpartition("@")[2].rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
        except (OSError, ValueError) as exc:
            reason = "timed out" if isinstance(exc, socket.timeout) else exc.strerror or exc
            problems.append("upstream %s: cannot connect to %s (%s)" % (name, uri, reason))

    threads = [threading.Thread(target=check, args=(name, uri)) for _, name, uri in peers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 0.5)
    return sorted(problems)


def _log_errors(log_paths: Sequence[str], pid: int) -> List[str]:
    lines: List[str] = []
    for path in log_paths:
        lines.extend(log_lines(path, ("E", "!"), max_lines=3, pid=pid))
    return [re.sub(r"^.*? [A-Z!]> ", "", line) for line in lines[-3:]]


# Kept from the timeout for the link diagnosis, so the answer still comes in time.
_DIAGNOSE_S = 0.3


def wait_instance(
    probe_socket: str,
    pid: int,
    timeout: float,
    notify_socket: Optional[str] = None,
    read_only: Optional[bool] = None,
    instance_uuid: Optional[str] = None,
    peers: Sequence[Sequence[str]] = (),
    log_paths: Sequence[str] = (),
) -> dict:
    """Wait, layer by layer, until the tarantool ``pid`` is ready; all within ``timeout``.

    1. alive: if the process exits, fail at once with its F>/E> lines
       (``kind`` "exited", ``exit_code`` when still known);
    2. running: STATUS=running with READY=1 on ``notify_socket`` (bound by
       :func:`prepare_instance`), or ``box.info.status == 'running'``; the
       instance answering the probe must be ``pid`` (and ``instance_uuid``),
       else ``kind`` "identity";
    2b. app: init.lua has finished ``app_lua`` (``box_status`` ``app_done``);
       READY=1 says so too, but a build without sd_notify never sends it;
    3. ro: ``box.info.ro == read_only`` (when given);
    4. mesh: every upstream and downstream to ``peers`` ([uuid, name, uri]) is 'follow'.

    Returns ``{"ok": True, "timings": {layer: seconds since the call}, "status":
    box_status}``; on timeout an error dict with ``kind`` "timeout" and
    ``layer`` naming the layer that was not reached, with what was seen last.
    """
    started = time.monotonic()
    deadline = started + float(timeout)
    if peers and timeout > 3 * _DIAGNOSE_S:
        deadline -= _DIAGNOSE_S
    with _LISTENERS_LOCK:
        listener = _LISTENERS.pop(notify_socket, None) if notify_socket else None
    if listener is not None:
        listener.pid = pid
    timings: dict = {}
    layer, detail, status = "running", "no answer yet", {}
    try:
        for _ in range(100000):  # bounded by count as well as by the deadline
            exited, code = _exit_status(pid)
            if exited:
                lines = _exit_explanation(pid, log_paths)
                why = re.sub(r"^.*? [A-Z!]> ", "", lines[0]) if lines else "no error logged"
                return _error(
                    "exited",
                    "tarantool (pid %d) exited while starting: %s" % (pid, why),
                    layer="alive",
                    pid=pid,
                    exit_code=code,
                    output_tail="\n".join(lines),
                )
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if layer == "running" and listener is not None and not listener.running:
                listener.poll(min(left, 0.02))
                detail = "NOTIFY_SOCKET status %r" % (listener.state or "none yet")
                # A build without sd_notify support never sends: poll box.info after 1 s.
                if not listener.running and time.monotonic() - started < 1.0:
                    continue
            status = box_status(probe_socket, min(left, 1.0))
            if not status.get("ok"):
                detail = "probe: %s" % status["error"]["message"]
            elif status.get("pid") != pid or (
                instance_uuid and status.get("uuid") != instance_uuid
            ):
                return _error(
                    "identity",
                    "the instance answering on %s is pid %s uuid %s, not ours (pid %d uuid %s)"
                    % (probe_socket, status.get("pid"), status.get("uuid"), pid, instance_uuid),
                    layer="running",
                    pid=pid,
                )
            elif status.get("status") != "running":
                layer, detail = "running", "box.info.status is %r" % status.get("status")
            elif not status.get("app_done"):
                # box.cfg has returned (STATUS=running) but init.lua is still in app_lua.
                timings.setdefault("running", time.monotonic() - started)
                layer, detail = "app", "app_lua still running"
            elif read_only is not None and status.get("ro") != read_only:
                timings.setdefault("running", time.monotonic() - started)
                layer, detail = "ro", "box.info.ro is %s, want %s" % (status.get("ro"), read_only)
            else:
                timings.setdefault("running", time.monotonic() - started)
                timings.setdefault("ro", time.monotonic() - started)
                problems = _link_problems(status, peers)
                if not problems:
                    timings["mesh"] = time.monotonic() - started
                    return {"ok": True, "timings": timings, "status": status}
                layer, detail = "mesh", "; ".join(problems)
            time.sleep(min(0.005, max(0.0, deadline - time.monotonic())))
        if layer == "running" and peers:
            problems = _unreachable_peers(peers, _DIAGNOSE_S)
            if not problems:
                problems = ["last log errors: " + " | ".join(_log_errors(log_paths, pid))]
            detail += "; " + "; ".join(problems)
        return _error(
            "timeout",
            "not ready after %gs, layer %s: %s" % (timeout, layer, detail),
            layer=layer,
            detail=detail,
            pid=pid,
            timings=timings,
            status=status if status.get("ok") else None,
        )
    finally:
        if listener is not None:
            listener.close()


def _caught_up(vclock: dict, target: dict) -> bool:
    # Component 0 counts local-only rows (vinyl, space.is_local): never replicated.
    return all(vclock.get(k, 0) >= lsn for k, lsn in target.items() if k != 0)


def wait_vclock(probe_socket: str, target: dict, timeout: float) -> dict:
    """Wait until the instance's vclock has every component of ``target`` (but 0).

    On timeout the message has the last vclock read (``vclock``) and the last
    probe error, each on its own: a probe that failed at the end does not hide
    how far the instance had got.
    """
    deadline = time.monotonic() + float(timeout)
    last_vclock: Optional[dict] = None
    last_error: Optional[str] = None
    for _ in range(100000):
        left = deadline - time.monotonic()
        status = box_status(probe_socket, max(0.05, min(left, 1.0)))
        if status.get("ok"):
            last_vclock = status["vclock"]
            if _caught_up(last_vclock, target):
                return {"ok": True, "vclock": last_vclock}
        else:
            last_error = str(status.get("error", {}).get("message"))
        if left <= 0:
            break
        time.sleep(min(0.005, max(0.0, left)))
    message = "vclock not caught up with %s after %gs: last vclock %s" % (
        target,
        timeout,
        last_vclock if last_vclock is not None else "never read",
    )
    if last_error is not None:
        message += "; last error: %s" % last_error
    return _error("timeout", message, vclock=last_vclock, last_error=last_error)


def read_file(path: str, max_bytes: int = 16 << 20) -> dict:
    """The last ``max_bytes`` of a file, for artifacts; a missing file is ``data`` None."""
    try:
        data, size = _read_tail(path, max_bytes)
    except FileNotFoundError:
        return {"ok": True, "data": None, "size": 0}
    return {"ok": True, "data": data, "size": size}
