"""Version-aware Tarantool configuration and the generated ``init.lua`` (master side).

Three pieces:

* :func:`parse_version` / :class:`Features`: what the tarantool binary on a
  target supports, from the first line of ``tarantool --version``.
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
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Tuple

from remoteexec.tarantool.lua import LuaExpr, lua_string, to_lua
from remoteexec.target.tarantool import _VERSION_RE, UNIX_PATH_MAX

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

#: (major, minor, patch)
Version = Tuple[int, int, int]

DEFAULT_MEMTX_MEMORY = 64 << 20
LOG_FILE = "tarantool.log"
PID_FILE = "tarantool.pid"
PASSWORD_ENV = "TT_RX_PASSWORD"

# What Tarantool's URI parser (2.6) accepts in "user:password@host": checked
# against net.box on 2.6.0; ':', '@', '/', '#', '?', space, quotes, brackets and
# non-ASCII break the URI. No percent-decoding happens ('%40' stays literal).
URI_SAFE = re.compile(r"[A-Za-z0-9!$&'()*+,;=~._%-]+\Z")
_URI_SAFE_LUA = "^[%w!$&'()*+,;=~._%%-]+$"


def parse_version(text: str) -> Version:
    """Parse the output of ``tarantool --version`` into ``(major, minor, patch)``.

    Accepts e.g. ``"Tarantool 2.6.0-0-g47aa4e01e"``, ``"Tarantool 3.1.0-entrypoint-…"``
    and ``"Tarantool Enterprise 2.11.1-0-g…"``; only the first matching line counts.
    Raises ValueError when no version is found.
    """
    for line in text.splitlines():
        match = _VERSION_RE.search(line)
        if match:
            major, minor, patch = (int(part) for part in match.groups())
            return (major, minor, patch)
    raise ValueError(f"no Tarantool version in {text[:200]!r}")


@dataclass(frozen=True)
class Features:
    """What a Tarantool version supports, as far as remoteexec cares.

    Build it with :meth:`for_version`. Where a release series got a feature in a
    point release (promote), the flags follow the published release notes; a
    runtime check (``box.ctl.promote ~= nil``) is the final word.
    """

    version: Version
    #: box.cfg.election_mode and box.info.election (2.6.1+).
    election_mode: bool
    #: box.ctl.promote() (2.6.3, 2.7.2, 2.8.1+; 2.6.2 called it clear_synchro_queue).
    promote: bool
    #: box.ctl.demote() (2.10+).
    demote: bool
    #: box.cfg.bootstrap_strategy (2.11+).
    bootstrap_strategy: bool
    #: replication_connect_quorum still works but logs a deprecation warning (2.11+).
    quorum_deprecated: bool
    #: box.cfg.listen may be a list of URIs (2.10+).
    multi_listen: bool
    #: the 3.x declarative YAML config exists (box.cfg still works).
    yaml_config: bool
    #: box.info.listen exists and shows the real bound port (2.4+).
    info_listen: bool

    @classmethod
    def for_version(cls, version: Sequence[int]) -> Features:
        v = tuple(int(part) for part in version)[:3]
        promote = v >= (2, 8, 1) or (2, 7, 2) <= v < (2, 8) or (2, 6, 3) <= v < (2, 7)
        return cls(
            version=v,
            election_mode=v >= (2, 6, 1),
            promote=promote,
            demote=v >= (2, 10, 0),
            bootstrap_strategy=v >= (2, 11, 0),
            quorum_deprecated=v >= (2, 11, 0),
            multi_listen=v >= (2, 10, 0),
            yaml_config=v >= (3, 0, 0),
            info_listen=v >= (2, 4, 0),
        )


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
) -> dict:
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
    cfg: dict[str, Any] = {
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


# The probe server and helpers, in Lua. Kept free of string interpolation: the
# values it needs are assigned above it as serialised Lua literals.
_PROBE_LUA = r"""
local ffi = require('ffi')
local fio = require('fio')
local fiber = require('fiber')
local json = require('json')
local socket = require('socket')

-- Our own JSON writer: the builtin one prints 14 significant digits, emits
-- bare nan/inf that no JSON parser accepts and needs options to survive
-- functions and cdata. Strings still go through json.encode for escaping.
local MAX_DEPTH = 64

local function enc_number(v)
    if v ~= v then return 'NaN' end
    if v == math.huge then return 'Infinity' end
    if v == -math.huge then return '-Infinity' end
    if v == math.floor(v) and v > -2^53 and v < 2^53 then
        if v == 0 and 1 / v < 0 then return '-0.0' end
        return string.format('%d', v)
    end
    for _, fmt in ipairs({'%.15g', '%.16g', '%.17g'}) do
        local s = string.format(fmt, v)
        if tonumber(s) == v then return s end
    end
    return string.format('%.17g', v)
end

local enc

local function enc_table(v, out, depth, seen)
    if seen[v] then error('cannot encode result: circular reference', 0) end
    if depth > MAX_DEPTH then error('cannot encode result: nested too deep', 0) end
    local mt = getmetatable(v)
    local mode = type(mt) == 'table' and rawget(mt, '__serialize') or nil
    if type(mode) == 'function' then
        return enc(mode(v), out, depth + 1, seen)
    end
    seen[v] = true
    local count, max, positive = 0, 0, true
    for k in pairs(v) do
        count = count + 1
        if type(k) == 'number' and k >= 1 and k == math.floor(k) then
            if k > max then max = k end
        else
            positive = false
        end
    end
    local as_array
    if mode == 'array' or mode == 'seq' or mode == 'sequence' then
        as_array = true
    elseif mode == 'map' or mode == 'mapping' then
        as_array = false
    else
        -- The same rule as Tarantool's serializers: dense enough keys 1..n.
        as_array = positive and (max <= 10 or max <= 2 * count)
    end
    if as_array then
        out[#out + 1] = '['
        for i = 1, max do
            if i > 1 then out[#out + 1] = ',' end
            enc(v[i], out, depth + 1, seen)
        end
        out[#out + 1] = ']'
    else
        out[#out + 1] = '{'
        local first = true
        for k, item in pairs(v) do
            if not first then out[#out + 1] = ',' end
            first = false
            local key = type(k) == 'number' and enc_number(k) or tostring(k)
            out[#out + 1] = json.encode(key)
            out[#out + 1] = ':'
            enc(item, out, depth + 1, seen)
        end
        out[#out + 1] = '}'
    end
    seen[v] = nil
end

enc = function(v, out, depth, seen)
    local t = type(v)
    if v == nil then  -- also box.NULL: a NULL cdata equals nil
        out[#out + 1] = 'null'
    elseif t == 'boolean' then
        out[#out + 1] = v and 'true' or 'false'
    elseif t == 'number' then
        out[#out + 1] = enc_number(v)
    elseif t == 'string' then
        out[#out + 1] = json.encode(v)
    elseif t == 'table' then
        enc_table(v, out, depth, seen)
    elseif t == 'cdata' and (ffi.istype('int64_t', v) or ffi.istype('uint64_t', v)) then
        out[#out + 1] = (tostring(v):gsub('U?LL$', ''))
    elseif t == 'cdata' and box.tuple ~= nil and box.tuple.is ~= nil and box.tuple.is(v) then
        enc(v:totable(), out, depth + 1, seen)
    else
        -- decimal, uuid, functions, fibers...: their text form.
        out[#out + 1] = json.encode(tostring(v))
    end
end

local function encode_values(values, n)
    local out = {'['}
    for i = 1, n do
        if i > 1 then out[#out + 1] = ',' end
        enc(values[i], out, 0, {})
    end
    out[#out + 1] = ']'
    return table.concat(out)
end

local function pack(...)
    return {n = select('#', ...), ...}
end

local function on_error(err)
    -- Keep the user's frames only: cut where the probe machinery begins.
    local trace = debug.traceback('', 2):gsub('^\n', '')
    local cut = trace:find('\n%s*%[C%]: in function \'xpcall\'')
    local info = {traceback = cut and trace:sub(1, cut - 1) or trace}
    if type(err) == 'cdata' and box.error ~= nil and err.type ~= nil then
        info.message = tostring(err.message)
        info.type = tostring(err.type)
        info.code = tonumber(err.code)
    elseif type(err) == 'table' then
        local ok, text = pcall(json.encode, err)
        info.message = ok and text or tostring(err)
    else
        info.message = tostring(err)
    end
    return info
end

local function reply_error(id, kind, message, extra)
    local r = {id = id, ok = false, kind = kind, error = message}
    for k, v in pairs(extra or {}) do r[k] = v end
    local out = {}
    enc(r, out, 0, {})
    return table.concat(out)
end

local function handle(line)
    local ok, req = pcall(json.decode, line)
    if not ok or type(req) ~= 'table' then
        return reply_error(nil, 'protocol', 'bad request: ' .. tostring(req))
    end
    local id = req.id
    if type(req.lua) ~= 'string' then
        return reply_error(id, 'protocol', 'bad request: "lua" must be a string')
    end
    local args = req.args
    if args == nil then args = {} end
    if type(args) ~= 'table' then
        return reply_error(id, 'protocol', 'bad request: "args" must be an array')
    end
    -- Mode 't': Lua source only, never bytecode.
    local fn, err = load(req.lua, '=probe', 't')
    if fn == nil then
        return reply_error(id, 'lua', tostring(err))
    end
    -- JSON null decodes to box.NULL, which is truthy: a top-level null
    -- argument is Lua's nil. "n" keeps the count (trailing nils too).
    local n = tonumber(req.n) or #args
    for i = 1, n do
        if args[i] == nil then args[i] = nil end
    end
    local r = pack(xpcall(fn, on_error, unpack(args, 1, n)))
    if not r[1] then
        local info = r[2]
        return reply_error(id, 'lua', info.message, {
            error_type = info.type, error_code = info.code, traceback = info.traceback,
        })
    end
    local values = {}
    for i = 2, r.n do values[i - 1] = r[i] end
    local okenc, result = pcall(encode_values, values, r.n - 1)
    if not okenc then
        return reply_error(id, 'lua', tostring(result))
    end
    local head = {}
    enc(id, head, 0, {})
    return '{"id":' .. table.concat(head) .. ',"ok":true,"result":' .. result .. '}'
end

local function serve(s)
    pcall(function() fiber.self():name('rx_probe') end)
    while true do
        local line = s:read('\n')
        if line == nil or line == '' then break end
        local ok, reply = pcall(handle, line)
        if not ok then
            reply = reply_error(nil, 'protocol', 'probe failure: ' .. tostring(reply))
        end
        if not s:write(reply .. '\n') then break end
    end
    -- socket.tcp_server closes the connection when this handler returns.
end

local function start_probe(path)
    -- Refuse a socket another live process still serves: that is someone else's
    -- instance, never ours. A stale file (nobody listening) is replaced.
    if fio.path.lexists(path) then
        local peer = socket.tcp_connect('unix/', path, 0.5)
        if peer ~= nil then
            peer:close()
            error('remoteexec: probe socket ' .. path .. ' is served by another process', 0)
        end
        fio.unlink(path)
    end
    local old = fio.umask(tonumber('077', 8))
    local server, err = socket.tcp_server('unix/', path, serve)
    fio.umask(old)
    if server == nil then
        error('remoteexec: cannot listen on probe socket ' .. path .. ': ' .. tostring(err), 0)
    end
    -- The umask already kept others out (0700); 0600 is the conventional mode.
    fio.chmod(path, tonumber('600', 8))
    return server
end

local function log_fatal(log_path, message)
    -- box.cfg may fail before the log is open; write the reason there anyway
    -- (in Tarantool's own line format) so one file tells the whole story.
    if type(log_path) ~= 'string' or log_path:find('^%a+:') then return end
    local f = io.open(log_path, 'a')
    if f == nil then return end
    local now = fiber.time()
    local stamp = os.date('%Y-%m-%d %H:%M:%S', math.floor(now))
    f:write(string.format('%s.%03d [%d] main/init.lua F> %s\n', stamp,
        math.floor((now % 1) * 1000), tonumber(ffi.C.getpid()), message))
    f:close()
end
pcall(ffi.cdef, 'int getpid(void);')
"""


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
) -> str:
    """Render the instance's ``init.lua``.

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
       this to know the app's schema and functions exist.

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

    parts = [
        "-- Generated by remoteexec: regenerated on every start, do not edit.",
        "-- State files and logs 0600: tarantool creates them 0644 and 0640.",
        "do local ffi = require('ffi'); pcall(ffi.cdef, 'unsigned int umask(unsigned int);');"
        " ffi.C.umask(63) end",
        "local rx_probe_path = " + lua_string(probe_socket),
        "local rx_app_source = " + lua_string(app_lua),
        "local rx_repl_user = " + to_lua(replication_user),
    ]
    if with_password:
        parts += [
            "local rx_password_env = " + lua_string(password_env),
            "local rx_password = os.getenv(rx_password_env)",
            "os.setenv(rx_password_env, nil)",
            "if rx_password == nil then",
            "    error('remoteexec: the replication password was not passed in $' .."
            " rx_password_env, 0)",
            "end",
            f"if not rx_password:find({lua_string(_URI_SAFE_LUA)}) then",
            "    error('remoteexec: the replication password has characters a URI cannot"
            " carry; use letters, digits and !$&()*+,;=~._%-', 0)",
            "end",
        ]
    else:
        parts.append("local rx_password = nil")
    parts += [
        _PROBE_LUA.strip("\n"),
        "",
        "local rx_probe = start_probe(rx_probe_path)",
        "pcall(box.ctl.on_shutdown, function() pcall(fio.unlink, rx_probe_path) end)",
        "",
        "local rx_box_cfg = " + to_lua(cfg, name="box_cfg", indent=4),
        "local rx_ok, rx_err = pcall(box.cfg, rx_box_cfg)",
        "if not rx_ok then",
        "    log_fatal(rx_box_cfg.log, 'box.cfg failed: ' .. tostring(rx_err))",
        "    pcall(fio.unlink, rx_probe_path)",
        "    error(rx_err, 0)",
        "end",
        "",
        "if rx_repl_user ~= nil and not box.info.ro then",
        "    box.once('remoteexec:replication-user:' .. rx_repl_user, function()",
        "        if rx_repl_user == 'admin' then",
        "            if rx_password ~= nil then box.schema.user.passwd('admin', rx_password) end",
        "            return",
        "        end",
        "        if rx_password ~= nil then",
        "            box.schema.user.create(rx_repl_user,"
        " {password = rx_password, if_not_exists = true})",
        "        else",
        "            box.schema.user.create(rx_repl_user, {if_not_exists = true})",
        "        end",
        "        box.schema.user.grant(rx_repl_user, 'replication', nil, nil,"
        " {if_not_exists = true})",
        "    end)",
        "end",
        "rx_password = nil",
        "",
        "local rx_app = assert(load(rx_app_source, '=app.lua', 't'))",
        "rx_app()",
        "-- The readiness wait knows the app finished from this (READY=1 may not come).",
        "rawset(_G, 'rx_app_done', true)",
        "",
    ]
    return "\n".join(parts)
