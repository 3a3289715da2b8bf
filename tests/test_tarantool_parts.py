"""Tarantool building blocks against the real tarantool binary, no mocks.

Covers remoteexec.tarantool.lua (serialiser, round-tripped through tarantool),
remoteexec.tarantool.config (versions, box.cfg defaults, the generated
init.lua with its probe server) and remoteexec.target.tarantool (probe client,
NOTIFY_SOCKET listener, log reader, box.info status). Every tarantool started
here is killed by pid in a finalizer; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
from conftest import TARANTOOL, need_tarantool

from remoteexec.lab import free_port
from remoteexec.tarantool.config import (
    DEFAULT_MEMTX_MEMORY,
    PASSWORD_ENV,
    Features,
    box_cfg_for,
    check_credential,
    parse_version,
    render_init_lua,
)
from remoteexec.tarantool.lua import LuaExpr, call_source, lua_string, to_lua
from remoteexec.tarantool.scripts import box_status_lua
from remoteexec.target import tarantool as tt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The box status Lua the master sends with every box_status call.
BOX_STATUS = box_status_lua()
#: A tarantool version as tarantool_version() reports it: (major, minor, patch...).
Version = Tuple[int, ...]


#: Time asserts compare against the bound a call is configured with, plus this
#: allowance for a loaded 2-core machine (other suites run at the same time).
LOAD_MARGIN = 1.0


def wait_for(predicate: Callable[[], Any], timeout: float, step: float = 0.01) -> Any:
    """Poll ``predicate`` until truthy; bounded by time and by count."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / step) + 2):
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)
    return predicate()


# --- the serialiser, round-tripped through tarantool ----------------------------

# Prints a canonical text of a Lua value; canon() below computes the same text
# for the Python value it came from.
_CANON_LUA = r"""
local ffi = require('ffi')
local function hex(s)
    return (s:gsub('.', function(c) return string.format('%02x', c:byte()) end))
end
local canon
canon = function(v)
    local t = type(v)
    if v == nil then return 'nil' end
    if t == 'boolean' then return tostring(v) end
    if t == 'number' then
        if v ~= v then return 'n:nan' end
        if v == math.huge then return 'n:inf' end
        if v == -math.huge then return 'n:-inf' end
        return 'n:' .. string.format('%.17g', v)
    end
    if t == 'string' then return 's:' .. hex(v) end
    if t == 'cdata' and (ffi.istype('int64_t', v) or ffi.istype('uint64_t', v)) then
        return 'i:' .. tostring(v):gsub('U?LL$', '')
    end
    if t == 'table' then
        local items = {}
        for k, item in pairs(v) do items[#items + 1] = canon(k) .. '=' .. canon(item) end
        table.sort(items)
        return '{' .. table.concat(items, ',') .. '}'
    end
    return '?' .. t
end
"""


def canon(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, LuaExpr):
        raise TypeError("no canonical form for raw Lua")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if abs(value) <= 2**53:
            return "n:%.17g" % float(value)
        if -(2**63) <= value < 2**64:
            return f"i:{value}"
        return "n:%.17g" % float(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "n:nan"
        if math.isinf(value):
            return "n:inf" if value > 0 else "n:-inf"
        return "n:%.17g" % value
    if isinstance(value, str):
        return "s:" + value.encode("utf-8", "surrogateescape").hex()
    if isinstance(value, (bytes, bytearray)):
        return "s:" + bytes(value).hex()
    if isinstance(value, (list, tuple)):
        value = {i + 1: item for i, item in enumerate(value)}
    if isinstance(value, dict):
        items = sorted(canon(k) + "=" + canon(v) for k, v in value.items() if v is not None)
        return "{" + ",".join(items) + "}"
    raise TypeError(type(value))


ALL_BYTES = bytes(range(256))

ROUND_TRIP_CASES: Dict[str, Any] = {
    "nil": None,
    "true": True,
    "false": False,
    "zero": 0,
    "negative": -17,
    "int53": 2**53,
    "int53_plus_1": 2**53 + 1,
    "int63_max": 2**63 - 1,
    "int64_min": -(2**63),
    "uint64_max": 2**64 - 1,
    "beyond_uint64": 2**70,
    "float": 0.1,
    "third": 1 / 3,
    "tiny": 5e-324,
    "huge": 1.7976931348623157e308,
    "negative_zero": -0.0,
    "float_integral": 3.0,
    "inf": math.inf,
    "neg_inf": -math.inf,
    "nan": math.nan,
    "empty_string": "",
    "quotes_and_backslashes": "a\"b'c\\d\\\\",
    "newlines": "line1\nline2\r\nline3\r",
    "nul_then_digits": "\x00123\x001",
    "controls": "".join(chr(i) for i in range(32)) + "\x7f",
    "long_bracket_lookalike": "]]\n[[ ]=] --[[",
    "utf8": "Привет, 世界 🚀 é",
    "non_printable_unicode": "a\u2028b\u0085c\ufeffd\u200be",
    "surrogateescape": b"\xff\xfe ok \x80".decode("utf-8", "surrogateescape"),
    "all_bytes": ALL_BYTES,
    "bytearray": bytearray(b"\x00\x01abc"),
    "empty_list": [],
    "list": [1, "two", 3.5, True],
    "list_with_nil": [1, None, 3],
    "tuple": (1, (2, (3,))),
    "dict": {
        "plain": 1,
        "end": "keyword",
        "goto": "luajit keyword",
        "with space": 2,
        "1abc": 3,
        "_ok_": 4,
        "ключ": 5,
        "": "empty key",
        7: "int key",
        -1: "negative key",
        2**60: "int64 key",
        1.5: "float key",
        True: "bool key",
        "nested": {"list": [{"a": [1, {"b": None}]}], "deep": {"x": {"y": {"z": "w"}}}},
    },
    "box_cfg_like": {
        "listen": "127.0.0.1:3301",
        "replication": ["127.0.0.1:3301", "127.0.0.1:3302"],
        "memtx_memory": 64 << 20,
        "read_only": False,
        "replication_timeout": 0.1,
    },
}


def run_lua(script: str, timeout: float = 20.0) -> subprocess.CompletedProcess[bytes]:
    binary = need_tarantool()
    with tempfile.TemporaryDirectory(prefix="rx-lua-") as tmp:
        path = os.path.join(tmp, "script.lua")
        with open(path, "w", encoding="utf-8") as f:
            f.write(script)
        return subprocess.run(
            [binary, path], capture_output=True, timeout=timeout, cwd=tmp, check=False
        )


def test_to_lua_round_trips_through_tarantool() -> None:
    names = list(ROUND_TRIP_CASES)
    lines = [_CANON_LUA, "local cases = {}"]
    for name in names:
        lines.append(
            f"cases[{lua_string(name)}] = function() return {to_lua(ROUND_TRIP_CASES[name])} end"
        )
        lines.append(
            f"cases[{lua_string(name + '/indented')}] = function() return "
            f"{to_lua(ROUND_TRIP_CASES[name], indent=2)} end"
        )
    lines.append(
        "local names = {} for k in pairs(cases) do names[#names + 1] = k end table.sort(names)\n"
        "for _, k in ipairs(names) do io.write(k, '\\t', canon(cases[k]()), '\\n') end\n"
        "os.exit(0)"
    )
    proc = run_lua("\n".join(lines))
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    got = dict(line.split("\t", 1) for line in proc.stdout.decode().splitlines())
    for name in names:
        want = canon(ROUND_TRIP_CASES[name])
        assert got[name] == want, (name, to_lua(ROUND_TRIP_CASES[name]))
        assert got[name + "/indented"] == want, name


def test_to_lua_literal_forms() -> None:
    assert to_lua(None) == "nil"
    assert to_lua(True) == "true"
    assert to_lua(2**53) == str(2**53)
    assert to_lua(2**53 + 1) == f"{2**53 + 1}LL"
    assert to_lua(2**64 - 1) == f"{2**64 - 1}ULL"
    assert to_lua(math.inf) == "1/0"
    assert to_lua(-math.inf) == "-1/0"
    assert to_lua(math.nan) == "0/0"
    assert to_lua("a\x00b\x07\n") == r'"a\000b\007\n"'
    assert to_lua("é") == '"é"'
    assert to_lua(b"\xc3\xa9") == r'"\195\169"'
    assert to_lua({"end": 1, "ok": 2, 3: 4}) == '{["end"] = 1, ok = 2, [3] = 4}'
    assert to_lua([1, [2]], indent=2) == "{\n  1,\n  {\n    2,\n  },\n}"
    assert to_lua({"x": LuaExpr("box.NULL")}) == "{x = box.NULL}"
    assert lua_string("q\"'\\") == r'"q\"' + "'" + r'\\"'


def test_to_lua_errors_name_the_path() -> None:
    with pytest.raises(TypeError, match=r"box_cfg\.replication\[2\]: cannot serialise set"):
        to_lua({"replication": ["a", "b", {1, 2}]}, name="box_cfg")
    with pytest.raises(TypeError, match=r"value\['odd key'\]\.x: cannot serialise object"):
        to_lua({"odd key": {"x": object()}})
    with pytest.raises(TypeError, match=r"unsupported table key \(1, 2\)"):
        to_lua({(1, 2): 1})
    with pytest.raises(TypeError, match="unsupported table key nan"):
        to_lua({math.nan: 1})
    loop: List[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="circular"):
        to_lua(loop)
    with pytest.raises(ValueError, match="too large"):
        to_lua(10**400)
    with pytest.raises(ValueError, match="surrogate"):
        to_lua("\ud800")
    with pytest.raises(TypeError):
        lua_string(1)  # type: ignore[arg-type]


def test_call_source() -> None:
    assert call_source("math.max") == "return math.max(...)"
    assert 'obj["select"](obj, ...)' in call_source("box.space.test:select")
    for bad in ("os.execute('x')", "a:b:c", "end.x", "", "a..b"):
        with pytest.raises(ValueError, match="function name"):
            call_source(bad)


# --- versions and box.cfg -------------------------------------------------------


def test_parse_version_and_features() -> None:
    assert parse_version("Tarantool 2.6.0-0-g47aa4e01e\nTarget: Linux") == (2, 6, 0)
    assert parse_version("Tarantool 2.11.1-0-g96877bd\n") == (2, 11, 1)
    assert parse_version("Tarantool 3.1.0-entrypoint-83-gcb0264c3c") == (3, 1, 0)
    assert parse_version("Tarantool Enterprise 2.11.2-0-g1a2b3c-r609\n") == (2, 11, 2)
    assert parse_version("banner\nTarantool 1.10.15-0-g1234") == (1, 10, 15)
    with pytest.raises(ValueError, match="no Tarantool version"):
        parse_version("tt 2.0.0")

    old = Features.for_version((2, 6, 0))
    assert not (old.election_mode or old.promote or old.bootstrap_strategy or old.yaml_config)
    assert old.info_listen
    assert Features.for_version((2, 6, 1)).election_mode
    assert not Features.for_version((2, 6, 2)).promote  # only clear_synchro_queue there
    assert Features.for_version((2, 6, 3)).promote
    assert not Features.for_version((2, 7, 1)).promote
    assert Features.for_version((2, 8, 1)).promote
    new = Features.for_version((2, 11, 0))
    assert new.bootstrap_strategy and new.quorum_deprecated and not new.yaml_config
    assert Features.for_version((3, 1, 0)).yaml_config


def _alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_tarantool_version_is_bounded_when_a_child_holds_its_output(tmp_path: Any) -> None:
    # The binary answers and exits, but leaves a child holding stdout/stderr.
    pids = tmp_path / "pids"
    fake = tmp_path / "tarantool"
    fake.write_text("#!/bin/sh\necho 'Tarantool 2.6.0-0-gfake'\nsleep 30 &\necho $! >> %s\n" % pids)
    fake.chmod(0o755)
    started = time.monotonic()
    result = tt.tarantool_version(str(fake), timeout=3)
    took = time.monotonic() - started
    assert result["ok"] and result["version"] == [2, 6, 0], result
    # The answer came at once; the child holding the output must not keep it
    # waiting for the whole timeout (3 s).
    assert took < 3 / 2, took
    # It hangs, and so does a child holding the output: both go, in time.
    fake.write_text("#!/bin/sh\nsleep 30 &\necho $! >> %s\nexec sleep 30\n" % pids)
    started = time.monotonic()
    result = tt.tarantool_version(str(fake), timeout=1)
    took = time.monotonic() - started
    assert result["error"]["kind"] == "timeout", result
    assert took < 1 + LOAD_MARGIN, took
    children = [int(p) for p in pids.read_text().split()]
    assert len(children) == 2
    assert wait_for(lambda: not any(_alive(p) for p in children), 2), children
    for pid in children:  # only if the assertion above failed
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def test_box_cfg_defaults_and_overrides(tmp_path: Any) -> None:
    cfg = box_cfg_for((2, 6, 0), listen="127.0.0.1:3301", work_dir=str(tmp_path))
    assert cfg["wal_mode"] == "write"
    assert cfg["memtx_memory"] == DEFAULT_MEMTX_MEMORY
    assert "slab_alloc_arena" not in cfg
    assert cfg["log"] == os.path.join(str(tmp_path), "tarantool.log")
    assert cfg["pid_file"].startswith(str(tmp_path))
    assert "replication" not in cfg and "bootstrap_strategy" not in cfg
    # Builds without the feedback daemon reject the key: no default for it.
    assert "feedback_enabled" not in cfg

    rs = box_cfg_for(
        (2, 6, 0),
        listen=3301,
        work_dir=str(tmp_path),
        replication=["a:1", "b:2"],
        read_only=True,
        replication_timeout=0.1,
        user_box_cfg={"memtx_memory": 128 << 20, "pid_file": None, "net_msg_max": 1024},
    )
    assert rs["replication"] == ["a:1", "b:2"] and rs["read_only"] is True
    assert rs["replication_connect_timeout"] == 10.0
    assert rs["memtx_memory"] == 128 << 20 and rs["net_msg_max"] == 1024
    assert "pid_file" not in rs  # None removes a default
    with pytest.raises(ValueError, match="absolute"):
        box_cfg_for((2, 6, 0), listen=3301, work_dir="relative/dir")
    new = box_cfg_for((2, 11, 1), listen=3301, work_dir=str(tmp_path), replication=["a:1"])
    assert new["bootstrap_strategy"] == "auto"
    assert "replication_connect_quorum" not in new


def test_render_init_lua_keeps_secrets_out(tmp_path: Any) -> None:
    cfg = box_cfg_for((2, 6, 0), listen=3301, work_dir=str(tmp_path), replication=["h:1"])
    src = render_init_lua(
        box_cfg=cfg,
        probe_socket=str(tmp_path / "p.sock"),
        replication_user="repl",
        password_env=PASSWORD_ENV,
    )
    assert '"repl:" .. rx_password .. "@h:1"' in src
    assert "os.setenv(rx_password_env, nil)" in src
    with pytest.raises(ValueError, match="unix socket"):
        render_init_lua(box_cfg=cfg, probe_socket="/tmp/" + "x" * 120)
    with pytest.raises(ValueError, match="guest"):
        render_init_lua(
            box_cfg=cfg, probe_socket="/tmp/p", replication_user="guest", password_env="X"
        )


# --- target helpers without an instance -------------------------------------------


def test_target_module_is_stdlib_only() -> None:
    """Import the target package on Debian's python, as a target would (without the
    master side's remoteexec/__init__), and use it there."""
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    code = (
        "import json, sys, types\n"
        "pkg = types.ModuleType('remoteexec')\n"
        f"pkg.__path__ = [{os.path.join(REPO, 'remoteexec')!r}]\n"
        "sys.modules['remoteexec'] = pkg\n"
        "import remoteexec.target.tarantool as m\n"
        "bad = sorted(n for n in sys.modules if n.startswith(('mitogen', 'psutil'))\n"
        "             or n.startswith('remoteexec.') and not n.startswith('remoteexec.target'))\n"
        "found = m.tarantool_version('tarantool')\n"
        "print(json.dumps([bad, found, m.tarantool_version('/no/tt')]))\n"
    )
    proc = subprocess.run([python, "-c", code], capture_output=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    bad, found, missing = json.loads(proc.stdout)
    assert bad == []
    if TARANTOOL:
        assert found["ok"] and found["version"][:2] >= [1, 10], found
    assert missing["ok"] is False and missing["error"]["kind"] == "missing"
    assert missing["error"]["type"] == "CommandNotFound"
    assert "/no/tt" in missing["error"]["message"]


def test_log_lines_filters(tmp_path: Any) -> None:
    log = tmp_path / "t.log"
    log.write_text(
        "2026-01-01 10:00:00.000 [11] main/103/init.lua C> Tarantool 2.6.0-0-g47aa4e01e\n"
        "2026-01-01 10:00:00.001 [11] main/103/init.lua I> info\n"
        "2026-01-01 10:00:00.002 [11] main/111/applier/127.0.0.1:3399 coio.cc:108 !> "
        "SystemError connect: Connection refused\n"
        "2026-01-01 10:00:00.003 [11] main load_cfg.lua:458 E> ER_CFG: old run\n"
        "2026-01-01 10:00:01.000 [22] main utils.c:1005 E> LuajitError: init.lua:2: boom\n"
        "stack traceback:\n"
        "\tinit.lua:2: in main chunk\n"
        "ER_CFG: Incorrect value for option 'x': unexpected option\n"
        "just output\n"
        "2026-01-01 10:00:01.001 [22] main F> fatal error, exiting the event loop\n"
    )
    assert tt.log_lines(str(log)) == [
        "2026-01-01 10:00:00.003 [11] main load_cfg.lua:458 E> ER_CFG: old run",
        "2026-01-01 10:00:01.000 [22] main utils.c:1005 E> LuajitError: init.lua:2: boom",
        "ER_CFG: Incorrect value for option 'x': unexpected option",
        "2026-01-01 10:00:01.001 [22] main F> fatal error, exiting the event loop",
    ]
    assert len(tt.log_lines(str(log), pid=22)) == 3
    assert tt.log_lines(str(log), levels=("!",))[0].endswith("Connection refused")
    assert len(tt.log_lines(str(log), max_lines=1)) == 1
    assert tt.log_lines(str(log), tail_bytes=80) == [
        "2026-01-01 10:00:01.001 [22] main F> fatal error, exiting the event loop"
    ]
    assert tt.log_lines(str(tmp_path / "missing.log")) == []


def test_probe_connect_error(tmp_path: Any) -> None:
    reply = tt.probe(str(tmp_path / "nobody.sock"), "return 1")
    assert reply["ok"] is False and reply["error"]["kind"] == "connect"
    assert reply["error"]["type"] == "TarantoolError"
    assert reply["error"]["socket"].endswith("nobody.sock")


def test_notify_listener_basics(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="limit"):
        tt.NotifyListener("/tmp/" + "n" * 110)
    path = str(tmp_path / "n.sock")
    with tt.NotifyListener(path) as nl:
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sender.sendto(b"STATUS=loading", path)
        sender.sendto(b"STATUS=running\nREADY=1", path)
        sender.close()
        got = nl.poll(1.0) + nl.poll(0.0)
        assert got == ["STATUS=loading", "STATUS=running", "READY=1"]
        assert nl.ready and nl.state == "running" and nl.running
        assert nl.history[0][1] == os.getpid()  # SCM_CREDENTIALS sender pid
        nl.pid = os.getpid() + 1_000_000  # someone else's messages are dropped
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sender.sendto(b"STATUS=stopping", path)
        sender.close()
        assert nl.poll(0.2) == [] and nl.state == "running"
        assert nl.poll(0.05) == []
    assert not os.path.exists(path)


# --- real instances ---------------------------------------------------------------------


class Instance:
    """A tarantool started from a rendered init.lua, the way a target would."""

    def __init__(self, root: str, name: str) -> None:
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir)
        self.probe_socket = os.path.join(self.dir, "p.sock")
        self.log = os.path.join(self.dir, "tarantool.log")
        self.out = os.path.join(self.dir, "out.log")
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.notify: Optional[tt.NotifyListener] = None
        self.started_at = 0.0

    def render(self, **kwargs: Any) -> str:
        src = render_init_lua(probe_socket=self.probe_socket, **kwargs)
        path = os.path.join(self.dir, "init.lua")
        with open(path, "w", encoding="utf-8") as f:
            f.write(src)
        os.chmod(path, 0o600)
        return src

    def spawn(self, env: Optional[Dict[str, str]] = None) -> None:
        self.notify = tt.NotifyListener(os.path.join(self.dir, "n.sock"))
        full_env = dict(os.environ, NOTIFY_SOCKET=self.notify.path, **(env or {}))
        with open(self.out, "ab") as out:
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(
                [need_tarantool(), os.path.join(self.dir, "init.lua")],
                cwd=self.dir,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.notify.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float) -> float:
        assert self.notify is not None
        ok = self.notify.wait_ready(timeout, alive=self.alive)
        assert ok, (self.notify.history, tt.log_lines(self.log), tt.log_lines(self.out))
        return self.notify.history[-1][0] - self.started_at

    def probe(self, lua: str, *args: Any, timeout: float = 5.0) -> Dict[str, Any]:
        reply: Dict[str, Any] = tt.probe(self.probe_socket, lua, args, timeout)
        return reply

    def eval(self, lua: str, *args: Any) -> List[Any]:
        reply = self.probe(lua, *args)
        assert reply["ok"], reply
        result: List[Any] = reply["result"]
        return result

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if self.notify is not None:
            self.notify.close()


@pytest.fixture
def instances() -> Any:
    """Make Instance objects in a short directory (unix socket paths are limited)."""
    root = tempfile.mkdtemp(prefix="rxt-", dir="/tmp")
    made: List[Instance] = []

    def make(name: str) -> Instance:
        need_tarantool()
        inst = Instance(root, name)
        made.append(inst)
        return inst

    yield make
    for inst in made:
        inst.kill()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def version() -> Version:
    found = tt.tarantool_version(need_tarantool())
    assert found["ok"], found
    return tuple(found["version"])


def test_single_instance(instances: Any, version: Version) -> None:
    one = instances("one")
    cfg = box_cfg_for(version, listen="127.0.0.1:0", work_dir=one.dir, proc_title="rx-one")
    one.render(
        box_cfg=cfg,
        app_lua="box.schema.space.create('test', {if_not_exists = true})\n"
        "box.space.test:create_index('pk', {if_not_exists = true})\n"
        "function add(a, b) return a + b, 'sum' end\n"
        "return 'app done'",
    )
    one.spawn()
    ready_after = one.wait_ready(10)
    print(f"\nsingle instance: READY=1 {ready_after * 1000:.0f} ms after spawn")
    assert [m for _, _, m in one.notify.history][:1] == ["STATUS=loading"]
    assert ready_after < 5
    assert oct(os.stat(one.probe_socket).st_mode & 0o777) == "0o600"

    # Values of every kind, several of them, nils kept in place.
    result = one.eval(
        "return 1, nil, box.NULL, 'x', {a = 1, b = {1, 2, 3}}, {}, "
        "18446744073709551615ULL, -9223372036854775808LL, 0/0, 1/0, -1/0, 0.1, 1/3, "
        "'\\0\\255é', box.tuple.new({1, 'x', {y = 2}}), require('decimal').new('1.25'), nil"
    )
    assert len(result) == 17
    assert result[:7] == [1, None, None, "x", {"a": 1, "b": [1, 2, 3]}, [], 2**64 - 1]
    assert result[7] == -(2**63)
    assert math.isnan(result[8]) and result[9] == math.inf and result[10] == -math.inf
    assert result[11] == 0.1 and result[12] == 1 / 3
    assert (
        result[13] == "\x00\udcffé"
        and result[13].encode("utf-8", "surrogateescape") == b"\x00\xff\xc3\xa9"
    )
    assert result[14] == [1, "x", {"y": 2}] and result[15] == "1.25" and result[16] is None
    assert one.eval("return") == []
    # Arguments arrive as ..., bytes and non-finite floats intact.
    assert one.eval(
        "local a, b, c, d, e = ... return a + 1, b, #c, c:byte(1), d, e ~= e, select('#', ...)",
        41,
        "s",
        b"\xff\x00",
        {"k": [1, None]},
        math.nan,
    ) == [42, "s", 2, 255, {"k": [1, None]}, True, 5]
    # Functions through call_source, and the writes they do.
    assert one.eval(call_source("add"), 2, 3) == [5, "sum"]
    assert one.eval(call_source("box.space.test:insert"), [1, "one"]) == [[1, "one"]]
    assert one.eval(call_source("box.space.test:select"), [1]) == [[[1, "one"]]]

    # Errors come back with Tarantool's message.
    err = one.probe("error('boom')")
    assert err["ok"] is False and err["error"]["kind"] == "lua"
    assert err["error"]["message"] == "probe:1: boom"
    assert "probe:1" in err["error"]["traceback"] and "xpcall" not in err["error"]["traceback"]
    err = one.probe("box.space.test:insert{1, 'again'}")
    assert (
        err["error"]["error_type"] == "ClientError" and "Duplicate key" in err["error"]["message"]
    )
    err = one.probe("return (")
    assert err["error"]["kind"] == "lua" and "unexpected symbol" in err["error"]["message"]
    err = one.probe("local t = {} t.t = t return t")
    assert err["error"]["kind"] == "lua" and "circular" in err["error"]["message"]
    started = time.monotonic()
    err = one.probe("require('fiber').sleep(5)", timeout=0.2)
    assert err["error"]["kind"] == "timeout" and time.monotonic() - started < 0.2 + LOAD_MARGIN
    # Bytecode is refused: the probe runs source only.
    err = one.probe("return load(string.dump(function() return 1 end), 'x', 't')")
    assert err["ok"] and err["result"][0] is None
    err = one.probe("\x1bLJ\x02")
    assert err["error"]["kind"] == "lua"

    # box.info as plain data; port 0 is resolved to the real port.
    status = tt.box_status(one.probe_socket, BOX_STATUS)
    assert status["ok"] and status["configured"] and status["status"] == "running"
    assert status["ro"] is False and status["id"] == 1 and status["pid"] == one.proc.pid
    assert status["vclock"] == {1: status["lsn"]} and status["lsn"] >= 2
    host, port = status["listen"].rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    assert one.eval("return box.cfg.listen") == ["127.0.0.1:0"]
    with socket.create_connection((host, int(port)), timeout=2) as conn:
        assert conn.recv(9) == b"Tarantool"  # the iproto greeting
    assert status["replication"][0]["uuid"] == status["uuid"]

    # SIGTERM: clean exit, and the probe socket goes away with the instance.
    one.proc.send_signal(signal.SIGTERM)
    assert one.proc.wait(10) == 0
    assert not os.path.exists(one.probe_socket)
    assert tt.probe(one.probe_socket, "return 1")["error"]["kind"] == "connect"


def test_bad_box_cfg_key_fails_fast_with_tarantools_message(
    instances: Any, version: Version
) -> None:
    bad = instances("bad")
    cfg = box_cfg_for(
        version, listen="127.0.0.1:0", work_dir=bad.dir, user_box_cfg={"no_such_option": 1}
    )
    bad.render(box_cfg=cfg)
    bad.spawn()
    returncode = bad.proc.wait(10)
    took = time.monotonic() - bad.started_at
    print(f"\nbad box.cfg key: exit {returncode} after {took * 1000:.0f} ms")
    # An exit at once: nothing waits for a timeout here (the wait above is 10 s).
    assert returncode != 0 and took < 10 / 2, took
    message = "Incorrect value for option 'no_such_option': unexpected option"
    lines = tt.log_lines(bad.log)
    assert any(message in line and "F> box.cfg failed" in line for line in lines), lines
    assert any(message in line for line in tt.log_lines(bad.out)), tt.log_lines(bad.out)
    assert not os.path.exists(bad.probe_socket)
    assert bad.notify is not None and not bad.notify.ready


def test_probe_answers_while_box_cfg_hangs(instances: Any, version: Version) -> None:
    """Peers that never answer: box.cfg waits, the probe still works, then exit."""
    lonely = instances("lonely")
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    cfg = box_cfg_for(
        version,
        listen="127.0.0.1:0",
        work_dir=lonely.dir,
        replication=dead,
        replication_timeout=0.1,
        replication_connect_timeout=1.0,
    )
    lonely.render(box_cfg=cfg, replication_user="guest")
    lonely.spawn()
    status = wait_for(
        lambda: tt.box_status(lonely.probe_socket, BOX_STATUS, 1.0).get("status") == "loading", 3
    )
    assert status, tt.box_status(lonely.probe_socket, BOX_STATUS)
    status = tt.box_status(lonely.probe_socket, BOX_STATUS)
    assert status["configured"] and status["id"] is None and status["pid"] == lonely.proc.pid
    lonely.notify.poll(0.05)
    assert lonely.notify.state == "loading" and not lonely.notify.ready
    returncode = lonely.proc.wait(10)
    took = time.monotonic() - lonely.started_at
    print(f"\nunreachable peers: exit {returncode} after {took:.2f} s (connect timeout 1 s)")
    # replication_connect_timeout (1 s) bounds box.cfg: its exit comes soon after.
    assert returncode != 0 and took < 1.0 + 2 + LOAD_MARGIN, took
    lines = tt.log_lines(lonely.log)
    assert any("failed to connect to one or more replicas" in line for line in lines), lines


def test_notify_socket_abstract_name(instances: Any, version: Version) -> None:
    """Tarantool also talks to '@name' (abstract) sockets, NUL-padded to 108 bytes."""
    inst = instances("abstract")
    inst.render(
        box_cfg=box_cfg_for(version, listen=None, work_dir=inst.dir, user_box_cfg={"listen": None})
    )
    inst.notify = tt.NotifyListener(f"@rx-test-{os.getpid()}-{time.monotonic_ns()}")
    with open(inst.out, "ab") as out:
        inst.started_at = time.monotonic()
        inst.proc = subprocess.Popen(
            [need_tarantool(), os.path.join(inst.dir, "init.lua")],
            cwd=inst.dir,
            env=dict(os.environ, NOTIFY_SOCKET=inst.notify.path),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    inst.notify.pid = inst.proc.pid
    inst.wait_ready(10)
    assert inst.eval("return box.info.listen, box.cfg.listen") == [None, None]


def _mesh_cfgs(version: Version, members: List[Any], **extra: Any) -> List[Dict[str, Any]]:
    """box.cfg of each member of a loopback set; the first one is writable."""
    uris = [f"127.0.0.1:{free_port()}" for _ in members]
    return [
        box_cfg_for(
            version,
            listen=uris[i],
            work_dir=member.dir,
            replication=uris,
            read_only=i != 0,
            replication_timeout=0.1,
            **extra,
        )
        for i, member in enumerate(members)
    ]


def test_replica_set_full_mesh(instances: Any, version: Version) -> None:
    password = "S3cr3t-pa55word!"
    members = [instances(f"m{i}") for i in range(3)]
    cfgs = _mesh_cfgs(version, members)
    uris = [cfg["listen"] for cfg in cfgs]
    for member, cfg in zip(members, cfgs):
        src = member.render(box_cfg=cfg, replication_user="repl", password_env=PASSWORD_ENV)
        assert password not in src
    started = time.monotonic()
    for member in members:
        member.spawn(env={PASSWORD_ENV: password})
    ready = [member.wait_ready(10) for member in members]

    def full_mesh() -> Optional[List[Dict[str, Any]]]:
        statuses = [tt.box_status(m.probe_socket, BOX_STATUS, 1.0) for m in members]
        for st in statuses:
            if not st.get("ok") or st["status"] != "running":
                return None
            peers = [p for p in st["replication"] if p["uuid"] != st["uuid"]]
            if len(peers) != 2:
                return None
            for peer in peers:
                if (peer.get("upstream") or {}).get("status") != "follow":
                    return None
                if (peer.get("downstream") or {}).get("status") != "follow":
                    return None
        return statuses

    statuses = wait_for(full_mesh, 10, step=0.005)
    mesh_after = time.monotonic() - started
    print(
        "\n3-member set, replication_timeout=0.1: READY=1 at "
        + ", ".join(f"{r * 1000:.0f}" for r in ready)
        + f" ms; full mesh (all upstreams and downstreams 'follow') at {mesh_after * 1000:.0f} ms"
    )
    assert statuses, [tt.box_status(m.probe_socket, BOX_STATUS) for m in members]
    assert [st["ro"] for st in statuses] == [False, True, True]
    assert len({st["cluster_uuid"] for st in statuses}) == 1
    assert sorted(st["id"] for st in statuses) == [1, 2, 3]
    assert mesh_after < 5

    # A write on the leader reaches both replicas.
    leader, replicas = members[0], members[1:]
    leader.eval("box.schema.space.create('t'):create_index('pk') return box.space.t:insert{1, 'x'}")
    target = leader.eval("return box.info.lsn")[0]
    leader_id = statuses[0]["id"]
    for replica in replicas:

        def caught_up(r: Any = replica) -> bool:
            vclock = tt.box_status(r.probe_socket, BOX_STATUS)["vclock"]
            return bool(vclock.get(leader_id, 0) >= target)

        assert wait_for(caught_up, 5)
        assert replica.eval("return box.space.t:get{1}") == [[1, "x"]]
        err = replica.probe("return box.space.t:insert{2}")
        assert err["ok"] is False and "read-only" in err["error"]["message"]

    # The password is in none of the logs, outputs or statuses.
    for member in members:
        for path in (member.log, member.out):
            with open(path, "rb") as f:
                assert password.encode() not in f.read()
        assert password not in repr(tt.box_status(member.probe_socket, BOX_STATUS))
        assert member.eval("return os.getenv(...)", PASSWORD_ENV) == [None]
    peers = tt.box_status(members[1].probe_socket, BOX_STATUS)["replication"]
    assert {p["upstream"]["peer"] for p in peers if "upstream" in p} == {
        f"repl@{u}" for u in uris if u != uris[1]
    }


def test_init_lua_refusals(instances: Any, version: Version) -> None:
    """App errors, a probe socket someone else serves and an unusable password."""
    app = instances("app")
    app.render(
        box_cfg=box_cfg_for(version, listen=None, work_dir=app.dir, user_box_cfg={"listen": None}),
        app_lua="local x = 1\nerror('app exploded')",
    )
    app.spawn()
    assert app.proc.wait(10) != 0
    assert any("app.lua:2: app exploded" in line for line in tt.log_lines(app.log))

    taken = instances("taken")
    taken.render(box_cfg=box_cfg_for(version, listen=None, work_dir=taken.dir))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(taken.probe_socket)
        other.listen(1)
        taken.spawn()
        assert taken.proc.wait(10) != 0
    lines = tt.log_lines(taken.out)
    assert any("is served by another process" in line for line in lines), lines

    with pytest.raises(ValueError, match="password"):
        check_credential("p@ss")
    check_credential("a!b$c&d;e=f~g-_.h%40")
    password = "has@sign"
    weird = instances("weird")
    weird.render(
        box_cfg=box_cfg_for(version, listen=None, work_dir=weird.dir, replication=["127.0.0.1:1"]),
        replication_user="repl",
        password_env=PASSWORD_ENV,
    )
    weird.spawn(env={PASSWORD_ENV: password})
    assert weird.proc.wait(10) != 0
    with open(weird.out, encoding="utf-8", errors="replace") as f:
        out = f.read()
    assert "characters a URI cannot carry" in out and password not in out


def test_orphan_sends_ready_but_is_not_running(instances: Any, version: Version) -> None:
    """A member restarted while its peer is down: READY=1 comes with STATUS=orphan."""
    members = [instances("o0"), instances("o1")]
    for member, cfg in zip(members, _mesh_cfgs(version, members, replication_connect_timeout=0.5)):
        member.render(box_cfg=cfg, replication_user="guest")
    for member in members:
        member.spawn()
    for member in members:
        member.wait_ready(10)
    for member in members:
        member.kill()

    replica = members[1]
    replica.spawn()
    assert wait_for(lambda: replica.notify.poll(0.05) is not None and replica.notify.ready, 5)
    states = [m for _, _, m in replica.notify.history]
    assert states[-3:] == ["STATUS=running", "STATUS=orphan", "READY=1"], states
    assert replica.notify.ready and not replica.notify.running
    assert tt.box_status(replica.probe_socket, BOX_STATUS)["status"] == "orphan"

    members[0].spawn()
    assert replica.notify.wait_ready(5)  # STATUS=running again once the peer is back
    assert tt.box_status(replica.probe_socket, BOX_STATUS)["status"] == "running"


def test_wait_vclock_reports_last_vclock_and_last_error_apart(
    instances: Any, version: Version
) -> None:
    one = instances("vc")
    one.render(box_cfg=box_cfg_for(version, listen="127.0.0.1:0", work_dir=one.dir))
    one.spawn()
    one.wait_ready(10)
    assert one.proc is not None
    # Unreachable target; the instance hangs half-way, so the last probe fails.
    timer = threading.Timer(0.3, os.kill, (one.proc.pid, signal.SIGSTOP))
    timer.start()
    try:
        reply = tt.wait_vclock(one.probe_socket, {1: 10**9}, 1.0, BOX_STATUS)
    finally:
        timer.join()
        os.kill(one.proc.pid, signal.SIGCONT)
    assert not reply["ok"]
    message = reply["error"]["message"]
    assert "last vclock {" in message and "last error: no reply within" in message, message
    assert isinstance(reply["error"]["vclock"], dict)


def test_none_arguments_arrive_as_nil(instances: Any, version: Version) -> None:
    one = instances("nil")
    one.render(box_cfg=box_cfg_for(version, listen="127.0.0.1:0", work_dir=one.dir))
    one.spawn()
    one.wait_ready(10)
    # box.NULL would be truthy and of type cdata; a Python None is Lua's nil.
    assert one.eval("local x = ... if x then return 'truthy' end return type(x)", None) == ["nil"]
    assert one.eval("return select('#', ...), type(select(2, ...))", 1, None, None) == [3, "nil"]
    assert one.eval("return ...", None, 1, None) == [None, 1, None]
    # Inside a table a null stays box.NULL: a Lua table cannot hold nil.
    assert one.eval("local t = ... return t[1] == box.NULL, #t", [None, 2]) == [True, 2]
    assert one.eval("return select('#', ...)") == [0]
