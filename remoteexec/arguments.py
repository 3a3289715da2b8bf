"""Checks for user-supplied arguments, run on the master before anything starts.

Every public entry point passes its time, port, path, environment and
command arguments through these, so bad input fails at once with a
``ValueError``/``TypeError`` that names the argument, instead of hanging for
a whole timeout on the host or being silently converted there.
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, Union, overload

#: Longest AF_UNIX path in bytes (sun_path is 108 bytes with the NUL).
UNIX_PATH_MAX = 107
#: Longest rendering of a command or message in an error text.
TEXT_LIMIT = 2000


@overload
def seconds(
    name: str,
    value: Any,
    *,
    allow_none: Literal[False] = False,
    allow_zero: bool = False,
    allow_inf: bool = False,
) -> float: ...


@overload
def seconds(
    name: str,
    value: Any,
    *,
    allow_none: bool,
    allow_zero: bool = False,
    allow_inf: bool = False,
) -> Optional[float]: ...


def seconds(
    name: str,
    value: Any,
    *,
    allow_none: bool = False,
    allow_zero: bool = False,
    allow_inf: bool = False,
) -> Optional[float]:
    """``value`` as a float number of seconds, or a ValueError naming ``name``.

    NaN is always refused (every comparison with it is false, so a deadline
    of NaN never expires); infinity only where ``allow_inf``; zero only where
    ``allow_zero``; negative values never.
    """
    if value is None:
        if allow_none:
            return None
        raise ValueError("%s must be a number of seconds, got None" % name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = type(value).__name__
        raise TypeError("%s must be a number of seconds, got %s %s" % (name, kind, _shown(value)))
    number = float(value)
    if math.isnan(number):
        raise ValueError("%s must be a number of seconds, got NaN" % name)
    if math.isinf(number) and not (allow_inf and number > 0):
        raise ValueError("%s must be a finite number of seconds, got %r" % (name, value))
    if number < 0 or (number == 0 and not allow_zero):
        want = "zero or more" if allow_zero else "more than zero"
        raise ValueError("%s must be %s seconds, got %r" % (name, want, value))
    return number


def port(name: str, value: Any, *, allow_zero: bool = False) -> int:
    """``value`` as a TCP port (1-65535; 0 where it means "pick a free one")."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(
            "%s must be a port number, got %s %s" % (name, type(value).__name__, _shown(value))
        )
    try:
        number = int(value)
    except ValueError:
        raise ValueError("%s must be a port number, got %s" % (name, _shown(value))) from None
    low = 0 if allow_zero else 1
    if not low <= number <= 65535:
        raise ValueError("%s must be a port in %d-65535, got %r" % (name, low, value))
    return number


def unix_path(name: str, value: Any) -> str:
    """``value`` as a unix socket path that fits in ``sun_path``."""
    path = os.fspath(value)
    if not isinstance(path, str) or not path:
        raise ValueError("%s must be a non-empty path, got %s" % (name, _shown(value)))
    size = len(os.fsencode(path))
    if size > UNIX_PATH_MAX:
        raise ValueError(
            "%s is %d bytes, over the AF_UNIX limit of %d: use a shorter path (%s)"
            % (name, size, UNIX_PATH_MAX, bounded(path, 200))
        )
    return path


def environment(name: str, env: Optional[Mapping[Any, Any]]) -> Dict[str, str]:
    """``env`` as a str→str dict; a value that is not str or PathLike is a
    TypeError naming the variable (never silently passed through ``str()``)."""
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise TypeError("%s must be a mapping of names to strings, got %s" % (name, _shown(env)))
    result: Dict[str, str] = {}
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise TypeError("%s: invalid variable name %s" % (name, _shown(key)))
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str):
            raise TypeError(
                "%s[%s] must be a str (or os.PathLike), got %s %s"
                % (name, _shown(key), type(value).__name__, _shown(value))
            )
        if "\0" in value:
            raise ValueError("%s[%s] contains a NUL byte" % (name, _shown(key)))
        result[key] = value
    return result


def command(value: Any) -> Union[str, List[str]]:
    """``value`` as a non-empty command: a str, or a list of str arguments.
    A NUL byte is refused here, naming the argument: the host's exec would
    refuse it with a bare "embedded null byte"."""
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("command is empty")
        no_nul("command", value)
        return value
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        parts = [os.fspath(part) if isinstance(part, os.PathLike) else part for part in value]
        if not parts:
            raise ValueError("command is empty")
        for i, part in enumerate(parts):
            if not isinstance(part, (str, int, float)) or isinstance(part, bool):
                raise TypeError(
                    "command[%d] must be a str, got %s %s" % (i, type(part).__name__, _shown(part))
                )
            no_nul("command[%d]" % i, str(part))
        return [str(part) for part in parts]
    raise TypeError("command must be a list of arguments or a string, got %s" % _shown(value))


def no_nul(name: str, text: str) -> str:
    """``text``, unless it holds a NUL byte (no path or argument may): a
    ValueError naming ``name``."""
    if "\0" in text:
        raise ValueError("%s contains a NUL byte: %s" % (name, _shown(text)))
    return text


def bounded(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text`` cut to about ``limit`` characters, keeping both ends."""
    if len(text) <= limit:
        return text
    keep = max(limit - 40, 20)
    head, tail = keep * 2 // 3, keep // 3
    return "%s…[%d characters elided]…%s" % (text[:head], len(text) - head - tail, text[-tail:])


def _shown(value: Any) -> str:
    """``repr(value)`` for an error message, bounded: the value may be huge."""
    return bounded(repr(value), 100)


__all__ = [
    "TEXT_LIMIT",
    "UNIX_PATH_MAX",
    "bounded",
    "command",
    "environment",
    "no_nul",
    "port",
    "seconds",
    "unix_path",
]
