"""The Lua that remoteexec runs inside tarantool, read from this package's ``lua/`` folder.

Real ``.lua`` files (package data), so an editor, a linter and a reader see
Lua, not Python strings. mitogen ships only ``.py`` modules to a host, never
package data: the master reads the files here and passes their text in its
calls (the box status probe) or inlines it into ``init.lua``.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from typing import Mapping

__all__ = ["box_status_lua", "init_template", "probe_lua", "read", "render"]

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@functools.cache
def read(name: str) -> str:
    """The text of ``lua/<name>`` (read once, then cached)."""
    return (resources.files("remoteexec.tarantool") / "lua" / name).read_text(encoding="utf-8")


def probe_lua() -> str:
    """The probe server and its helpers (``start_probe``, ``log_fatal``), inlined into init.lua."""
    return read("probe.lua")


def box_status_lua() -> str:
    """The chunk that returns ``box.info`` as plain data (sent by every box status call)."""
    return read("box_status.lua")


def init_template() -> str:
    """The ``init.lua`` template; :func:`render` fills its ``{{name}}`` placeholders."""
    return read("init.lua")


def render(template: str, values: Mapping[str, str]) -> str:
    """``template`` with every ``{{name}}`` replaced by ``values[name]`` (Lua source text).

    A placeholder without a value, or a value without a placeholder, is a
    ValueError: a template and its caller that drifted apart fail loudly.
    """
    names = set(_PLACEHOLDER.findall(template))
    missing, unused = names - set(values), set(values) - names
    if missing or unused:
        raise ValueError(
            "init.lua template and values differ: missing %s, unused %s"
            % (sorted(missing), sorted(unused))
        )
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
