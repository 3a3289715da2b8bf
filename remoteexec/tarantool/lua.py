"""Serialise Python values into Lua source literals for Tarantool (LuaJIT).

The output is a Lua *expression* that evaluates to the same value, so a config
dict becomes a real Lua table instead of something built by string mangling.

Mapping:

==================  ==========================================================
Python              Lua
==================  ==========================================================
None                ``nil``
bool                ``true`` / ``false``
int                 decimal; beyond 2**53 ``123LL`` / ``123ULL`` (LuaJIT int64
                    cdata, exact); beyond uint64 a double (Lua has nothing wider)
float               shortest round-trip repr; ``1/0``, ``-1/0``, ``0/0``
str                 ``"..."``; UTF-8 passes through, control and non-printable
                    characters become ``\\ddd`` escapes of their UTF-8 bytes
bytes, bytearray    ``"..."`` with every non-printable/non-ASCII byte escaped
list, tuple         sequence table ``{a, b}``
dict (Mapping)      ``{name = v, ["not an ident"] = v, [3] = v}``
LuaExpr             inserted verbatim (raw Lua expression)
==================  ==========================================================
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Optional

__all__ = ["LUA_KEYWORDS", "LuaExpr", "call_source", "is_identifier", "lua_string", "to_lua"]

LUA_KEYWORDS = frozenset(
    [
        "and",
        "break",
        "do",
        "else",
        "elseif",
        "end",
        "false",
        "for",
        "function",
        "goto",
        "if",
        "in",
        "local",
        "nil",
        "not",
        "or",
        "repeat",
        "return",
        "then",
        "true",
        "until",
        "while",
    ]
)

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SAFE_INT = 2**53
_INT64_MIN = -(2**63)
_UINT64_END = 2**64

# Short escapes Lua understands; everything else unprintable goes out as \ddd.
_SHORT_ESCAPES = {0x22: '\\"', 0x5C: "\\\\", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}


class LuaExpr(str):
    """A raw Lua expression that :func:`to_lua` inserts verbatim.

    Use it for values only Lua can express, e.g. ``LuaExpr("box.NULL")`` or
    ``LuaExpr('"repl:" .. password .. "@host:3301"')``. The caller is responsible
    for the expression being valid Lua.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"LuaExpr({str.__repr__(self)})"


def is_identifier(name: str) -> bool:
    """True when ``name`` can be written as a bare Lua table key / variable name."""
    return bool(_IDENT.match(name)) and name not in LUA_KEYWORDS


def _escape_byte(b: int) -> str:
    short = _SHORT_ESCAPES.get(b)
    if short is not None:
        return short
    # Always three digits: a following digit can then never extend the escape.
    return f"\\{b:03d}"


def _quote_bytes(data: bytes) -> str:
    out = []
    for b in data:
        if b in _SHORT_ESCAPES or b < 0x20 or b >= 0x7F:
            out.append(_escape_byte(b))
        else:
            out.append(chr(b))
    return '"' + "".join(out) + '"'


def _quote_str(text: str) -> str:
    out = []
    for ch in text:
        code = ord(ch)
        if code < 0x80:
            if code in _SHORT_ESCAPES or code < 0x20 or code == 0x7F:
                out.append(_escape_byte(code))
            else:
                out.append(ch)
        elif 0xDC80 <= code <= 0xDCFF:
            # A byte smuggled in by errors="surrogateescape": emit the raw byte.
            out.append(_escape_byte(code - 0xDC00))
        elif 0xD800 <= code <= 0xDFFF:
            raise ValueError(f"lone surrogate U+{code:04X} cannot be encoded as UTF-8")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.extend(_escape_byte(b) for b in ch.encode("utf-8"))
    return '"' + "".join(out) + '"'


def lua_string(s: str | bytes | bytearray) -> str:
    """Return a double-quoted Lua string literal for ``s``.

    ``str`` is encoded as UTF-8 (printable non-ASCII characters pass through);
    ``bytes`` are emitted byte for byte, so the result is pure ASCII.
    """
    if isinstance(s, (bytes, bytearray)):
        return _quote_bytes(bytes(s))
    if isinstance(s, str):
        return _quote_str(s)
    raise TypeError(f"lua_string() needs str or bytes, not {type(s).__name__}")


def _number(value: int | float, path: str) -> str:
    if isinstance(value, int):
        value = int(value)  # IntEnum & co. would print their names
        if -_SAFE_INT <= value <= _SAFE_INT:
            return str(value)
        # Lua numbers are doubles: keep 64-bit integers exact as LuaJIT cdata.
        if _INT64_MIN <= value < 0 or 0 < value < 2**63:
            return f"{value}LL"
        if 0 < value < _UINT64_END:
            return f"{value}ULL"
        try:
            value = float(value)
        except OverflowError:
            raise ValueError(f"{path}: integer {value} is too large for a Lua number") from None
    if math.isnan(value):
        return "0/0"
    if math.isinf(value):
        return "1/0" if value > 0 else "-1/0"
    return repr(float(value))


def _key(key: Any, path: str) -> tuple[str, str]:
    """Return (lua key syntax, path element) for a table key."""
    if isinstance(key, str):
        if is_identifier(key):
            return key, f".{key}"
        return f"[{_quote_str(key)}]", f"[{key!r}]"
    if isinstance(key, bool):
        return f"[{'true' if key else 'false'}]", f"[{key!r}]"
    if isinstance(key, int) or (isinstance(key, float) and math.isfinite(key)):
        return f"[{_number(key, path)}]", f"[{key!r}]"
    raise TypeError(f"{path}: unsupported table key {key!r} of type {type(key).__name__}")


def _encode(value: Any, path: str, indent: Optional[int], level: int, active: set[int]) -> str:
    if value is None:
        return "nil"
    if isinstance(value, LuaExpr):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _number(value, path)
    if isinstance(value, str):
        try:
            return _quote_str(value)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _quote_bytes(bytes(value))

    if isinstance(value, (list, tuple)):
        items: list[str] = []
        marker = id(value)
        if marker in active:
            raise ValueError(f"{path}: circular reference")
        active.add(marker)
        for i, item in enumerate(value):
            items.append(_encode(item, f"{path}[{i}]", indent, level + 1, active))
        active.discard(marker)
        return _table(items, indent, level)
    if isinstance(value, Mapping):
        marker = id(value)
        if marker in active:
            raise ValueError(f"{path}: circular reference")
        active.add(marker)
        items = []
        for k, v in value.items():
            lua_key, element = _key(k, path)
            items.append(f"{lua_key} = {_encode(v, path + element, indent, level + 1, active)}")
        active.discard(marker)
        return _table(items, indent, level)
    raise TypeError(f"{path}: cannot serialise {type(value).__name__} to Lua ({value!r:.80})")


def _table(items: list[str], indent: Optional[int], level: int) -> str:
    if not items:
        return "{}"
    if indent is None:
        return "{" + ", ".join(items) + "}"
    pad = " " * (indent * (level + 1))
    end = " " * (indent * level)
    return "{\n" + "".join(f"{pad}{item},\n" for item in items) + end + "}"


def to_lua(value: Any, *, name: str = "value", indent: Optional[int] = None) -> str:
    """Serialise ``value`` into a Lua expression.

    ``name`` is the root of the path used in error messages, e.g. with
    ``name="box_cfg"`` an unsupported value is reported as
    ``box_cfg.replication[2]``. ``indent`` switches to one table item per line.

    Raises TypeError for values or table keys of unsupported types and
    ValueError for circular references, lone surrogates and integers beyond the
    range of a double.
    """
    return _encode(value, name, indent, 0, set())


_CALLABLE = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*(?::[A-Za-z_][A-Za-z0-9_]*)?\Z"
)


def call_source(function: str) -> str:
    """Lua source that calls ``function`` with the chunk's arguments (``...``).

    ``function`` is a dotted global name with an optional method part, such as
    ``"box.space.test:select"`` or ``"myapp.handler"``. The result returns every
    value the function returns.
    """
    if not _CALLABLE.match(function):
        raise ValueError(f"not a Lua function name: {function!r}")
    parts = function.split(":")
    for part in parts[0].split(".") + parts[1:]:
        if part in LUA_KEYWORDS:
            raise ValueError(f"not a Lua function name: {function!r} ({part!r} is a keyword)")
    if len(parts) == 2:
        obj, method = parts
        return f"local obj = {obj}\nreturn obj[{_quote_str(method)}](obj, ...)"
    return f"return {function}(...)"
