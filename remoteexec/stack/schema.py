"""The stack file's definitions, once: the checker and the JSON Schema both come from them.

Each key of the file is a :class:`Field` with a :class:`Type`. ``check``
walks a parsed file and returns every structural problem at once (a wrong
type, a missing key, an unknown key with a did-you-mean); ``json_schema()``
renders the same definitions as a JSON Schema (draft-07), shipped as
``stack.schema.json`` so editors validate the file as it is typed (Taplo /
Even Better TOML: put ``#:schema ./stack.schema.json`` on the first line).
Checks that need more than one key (a host that exists, a URL that parses,
a dependency cycle) are :mod:`remoteexec.stack.file`'s.

Regenerate the shipped file with ``python -m remoteexec.stack.schema > stack.schema.json``.
"""

from __future__ import annotations

import difflib
import json
import math
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

#: A key path (``("services", "api", "ready", "http")``) and what is wrong there.
Problem = Tuple[Tuple[str, ...], str]

#: Names of hosts, replica sets and services: a reference ``${name.key}`` splits at the dot.
NAME_PATTERN = "^[A-Za-z][A-Za-z0-9_-]*$"
#: An environment variable name (``password_env``).
ENV_NAME_PATTERN = "^[A-Za-z_][A-Za-z0-9_]*$"
#: What ``depends_on`` may wait for (the stack's conditions).
CONDITIONS = ("started", "healthy", "completed")
RESTART_POLICIES = ("no", "on-failure")
HOST_KEY_MODES = ("enforce", "ignore")


def kind_of(value: Any) -> str:
    """The TOML name of ``value``'s type, for messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a %s" % type(value).__name__


def did_you_mean(word: str, known: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known``, or ``""``."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return " (did you mean %r?)" % close[0] if close else ""


class Type:
    """A value's type: checks a parsed value, renders its JSON Schema."""

    #: What a message says is expected (``"a string"``).
    label = "a value"

    @property
    def expected(self) -> str:
        return self.label

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` has this type's shape (picks the branch of a :class:`OneOf`)."""
        raise NotImplementedError

    def check(self, value: Any, path: Tuple[str, ...], out: List[Problem]) -> None:
        """Append to ``out`` what is wrong with ``value`` at ``path``."""
        if not self.accepts(value):
            out.append((path, "expected %s, got %s" % (self.expected, kind_of(value))))

    def schema(self) -> Dict[str, Any]:
        raise NotImplementedError


@dataclass
class Str(Type):
    pattern: Optional[str] = None
    #: What the pattern means, for the message.
    pattern_doc: str = ""
    label = "a string"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str)

    def check(self, value: Any, path: Tuple[str, ...], out: List[Problem]) -> None:
        import re

        if not self.accepts(value):
            super().check(value, path, out)
        elif not value:
            out.append((path, "must not be empty"))
        elif self.pattern and not re.match(self.pattern, value):
            out.append((path, "%r is not %s" % (value, self.pattern_doc or self.pattern)))

    def schema(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"type": "string", "minLength": 1}
        if self.pattern:
            out["pattern"] = self.pattern
        return out


@dataclass
class Int(Type):
    minimum: Optional[int] = None
    maximum: Optional[int] = None
    label = "an integer"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    def check(self, value: Any, path: Tuple[str, ...], out: List[Problem]) -> None:
        if not self.accepts(value):
            super().check(value, path, out)
        elif (self.minimum is not None and value < self.minimum) or (
            self.maximum is not None and value > self.maximum
        ):
            low = "" if self.minimum is None else str(self.minimum)
            high = "" if self.maximum is None else str(self.maximum)
            out.append((path, "%d is out of range %s..%s" % (value, low, high)))

    def schema(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"type": "integer"}
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return out


@dataclass
class Seconds(Type):
    """A finite number of seconds, more than zero."""

    label = "a number of seconds"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    def check(self, value: Any, path: Tuple[str, ...], out: List[Problem]) -> None:
        if not self.accepts(value):
            super().check(value, path, out)
        elif math.isnan(value) or math.isinf(value) or value <= 0:
            out.append((path, "must be a finite number of seconds more than zero, got %r" % value))

    def schema(self) -> Dict[str, Any]:
        return {"type": "number", "exclusiveMinimum": 0}


@dataclass
class Bool(Type):
    label = "true or false"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)

    def schema(self) -> Dict[str, Any]:
        return {"type": "boolean"}


@dataclass
class Enum(Type):
    values: Tuple[str, ...] = ()

    @property
    def expected(self) -> str:
        return "one of %s" % ", ".join(repr(v) for v in self.values)

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str)

    def check(self, value: Any, path: Tuple[str, ...], out: List[Problem]) -> None:
        if not self.accepts(value) or value not in self.values:
            shown = repr(value) if isinstance(value, str) else kind_of(value)
            hint = did_you_mean(value, self.values) if isinstance(value, str) else ""
            out.append((path, "expected %s, got %s%s" % (self.expected, shown, hint)))

    def schema(self) -> Dict[str, Any]:
        return {"enum": list(self.values)}


@dataclass
class AnyValue(Type):
    """Anything TOML holds (``box_cfg`` values: Tarantool checks them)."""

    def accepts(self, value: Any) -> bool:
        del value  # any value has this shape
        return True

    def schema(self) -> Dict[str, Any]:
        return {}


@dataclass
class ListOf(Type):
    item: Type = field(default_factory=Str)
    min_items: int = 1

    @property
    def expected(self) -> str:
        return "an array of %s" % self.item.expected.split(" ", 1)[-1] + "s"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, list)

    def check(self, value: Any, path: Tuple[str, ...], out: List[Problem]) -> None:
        if not self.accepts(value):
            super().check(value, path, out)
            return
        if len(value) < self.min_items:
            out.append((path, "needs at least %d item(s)" % self.min_items))
        for i, item in enumerate(value):
            self.item.check(item, (*path, str(i)), out)

    def schema(self) -> Dict[str, Any]:
        return {"type": "array", "items": self.item.schema(), "minItems": self.min_items}


@dataclass
class MapOf(Type):
    """A table whose keys the user names (hosts, services, env variables)."""

    value: Type = field(default_factory=Str)
    key_pattern: Optional[str] = None
    key_doc: str = "a name"
    label = "a table"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, dict)

    def check(self, value: Any, path: Tuple[str, ...], out: List[Problem]) -> None:
        import re

        if not self.accepts(value):
            super().check(value, path, out)
            return
        for key, item in value.items():
            if self.key_pattern and not re.match(self.key_pattern, key):
                out.append(((*path, key), "%r is not %s" % (key, self.key_doc)))
            self.value.check(item, (*path, key), out)

    def schema(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"type": "object"}
        if self.key_pattern:
            out["propertyNames"] = {"pattern": self.key_pattern}
        value = self.value.schema()
        out["additionalProperties"] = value if value else True
        return out


@dataclass
class Field:
    """One key of a fixed table: its type, whether it must be there, what it means."""

    type: Type
    doc: str
    required: bool = False


@dataclass
class Table(Type):
    """A table with fixed keys: an unknown key is a problem, with a did-you-mean."""

    fields: Mapping[str, Field] = field(default_factory=dict)
    label = "a table"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, dict)

    def check(self, value: Any, path: Tuple[str, ...], out: List[Problem]) -> None:
        if not self.accepts(value):
            super().check(value, path, out)
            return
        for key, item in value.items():
            known = self.fields.get(key)
            if known is None:
                hint = did_you_mean(key, list(self.fields))
                out.append(((*path, key), "unknown key%s" % hint))
            else:
                known.type.check(item, (*path, key), out)
        for key, known in self.fields.items():
            if known.required and key not in value:
                out.append(((*path, key), "missing: %s" % known.doc))

    def schema(self) -> Dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                key: {**f.type.schema(), "description": f.doc} for key, f in self.fields.items()
            },
            "required": [key for key, f in self.fields.items() if f.required],
            "additionalProperties": False,
        }


@dataclass
class OneOf(Type):
    """One of several shapes (``on = "a"`` or ``on = ["a", "b"]``)."""

    options: Tuple[Type, ...] = ()

    @property
    def expected(self) -> str:
        return " or ".join(o.expected for o in self.options)

    def accepts(self, value: Any) -> bool:
        return any(o.accepts(value) for o in self.options)

    def check(self, value: Any, path: Tuple[str, ...], out: List[Problem]) -> None:
        for option in self.options:
            if option.accepts(value):
                option.check(value, path, out)
                return
        super().check(value, path, out)

    def schema(self) -> Dict[str, Any]:
        return {"anyOf": [o.schema() for o in self.options]}


# -- the definitions -----------------------------------------------------

NAME = Str(NAME_PATTERN, "a name (a letter, then letters, digits, '_' or '-')")
ENV = MapOf(Str(), "^[^=\\x00]+$", "an environment variable name")
#: ``host:port`` (a replica set member, a ``ready.tcp``).
HOST_PORT = Str(
    "^[A-Za-z0-9_.-]+:[0-9]+$|^\\[[0-9A-Fa-f:.]+\\]:[0-9]+$", "'host:port' (e.g. 'a:3301')"
)
PORT = Int(1, 65535)

#: Connection options: in ``[defaults]`` for every host, or per host.
HOST_OPTIONS: Dict[str, Field] = {
    "identity_file": Field(Str(), "the SSH private key (~ and paths relative to this file work)"),
    "known_hosts_file": Field(Str(), "the known_hosts file that holds the hosts' keys"),
    "python": Field(Str(), "the Python interpreter on the host (default python3)"),
    "port": Field(PORT, "the SSH port (default 22, or the one in target)"),
    "connect_timeout": Field(Seconds(), "seconds to wait for the SSH connection"),
    "check_host_keys": Field(
        Enum(values=HOST_KEY_MODES), "'enforce' (default) or 'ignore' (throwaway hosts only)"
    ),
    "ssh_args": Field(ListOf(Str(), 0), "extra arguments for the ssh client"),
}

HOST = Table(
    {
        "target": Field(Str(), "'[user@]host[:port]', or 'local' for this machine", True),
        "via": Field(NAME, "another host of this file to hop through"),
        **HOST_OPTIONS,
    }
)

DEPENDS_ON = OneOf(
    (
        ListOf(NAME, 0),
        MapOf(Enum(values=CONDITIONS), NAME_PATTERN, "a service name"),
    )
)

#: Keys every service kind has: how it relates to the others and restarts.
COMMON: Dict[str, Field] = {
    "depends_on": Field(
        DEPENDS_ON,
        "services to wait for: a list (each 'healthy'), or a table name = 'started',"
        " 'healthy' or 'completed'",
    ),
    "restart": Field(Enum(values=RESTART_POLICIES), "'no' (default) or 'on-failure'"),
    "max_restarts": Field(Int(0), "restarts allowed with restart = 'on-failure'"),
    "restart_backoff": Field(Seconds(), "seconds to the first restart (then doubling, to 30 s)"),
    "timeout": Field(Seconds(), "seconds the start may take until ready"),
    "env": Field(ENV, "extra environment variables (values may hold ${service.key})"),
}

TARANTOOL = Table(
    {
        "members": Field(
            ListOf(HOST_PORT), "a replica set: its members as 'host:port', the leader first"
        ),
        "on": Field(NAME, "a single instance: the host it runs on"),
        "listen": Field(
            OneOf((Str(), Int(0, 65535))),
            "a single instance: 'address:port' or a port (0 picks a free one)",
        ),
        "leader": Field(Int(0), "index of the writable member (default 0)"),
        "replication_timeout": Field(Seconds(), "Tarantool's replication_timeout (default 0.1)"),
        "box_cfg": Field(MapOf(AnyValue()), "extra box.cfg keys"),
        "app_lua": Field(Str(), "a Lua file run after box.cfg (relative to this file)"),
        "user": Field(Str(), "the replication user (default guest)"),
        "password_env": Field(
            Str(ENV_NAME_PATTERN, "an environment variable name"),
            "the environment variable that holds the user's password (never the file)",
        ),
        "tarantool": Field(Str(), "the tarantool binary on the hosts"),
        **COMMON,
    }
)

READY = Table(
    {
        "tcp": Field(OneOf((HOST_PORT, PORT)), "'host:port' (or a port on 127.0.0.1) accepts"),
        "unix": Field(Str(), "a unix socket path accepts"),
        "http": Field(Str(), "an http(s) URL answers 2xx"),
        "banner": Field(Str(), "a regex that a line of the output matches"),
        "pidfile": Field(Str(), "a file that exists (a pid file)"),
    }
)

SERVICE = Table(
    {
        "on": Field(OneOf((NAME, ListOf(NAME))), "the host, or hosts (one instance each)", True),
        "command": Field(
            OneOf((ListOf(Str()), Str())),
            "the command as an argument list (a string only with shell = true)",
            True,
        ),
        "shell": Field(Bool(), "run command through /bin/sh (default false)"),
        "cwd": Field(Str(), "working directory on the host (relative: from this file's)"),
        "ready": Field(READY, "readiness checks; every one given must pass"),
        "job": Field(Bool(), "a one-shot job: done when it exits 0"),
        "stop_timeout": Field(Seconds(), "seconds a stop waits before SIGKILL"),
        **COMMON,
    }
)

TOP = Table(
    {
        "name": Field(NAME, "the stack's name (default: the file's name)"),
        "defaults": Field(Table(HOST_OPTIONS), "connection options for every host"),
        "hosts": Field(MapOf(HOST, NAME_PATTERN, NAME.pattern_doc), "the hosts, by name", True),
        "tarantool": Field(
            MapOf(TARANTOOL, NAME_PATTERN, NAME.pattern_doc),
            "Tarantool replica sets (members) and single instances (on, listen)",
        ),
        "services": Field(
            MapOf(SERVICE, NAME_PATTERN, NAME.pattern_doc), "processes, health-checked"
        ),
    }
)


def check(document: Mapping[str, Any]) -> List[Problem]:
    """Every structural problem of a parsed stack file, in file order."""
    out: List[Problem] = []
    TOP.check(dict(document), (), out)
    return out


def json_schema() -> Dict[str, Any]:
    """The JSON Schema (draft-07) of a stack file, from the definitions above."""
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": "https://remoteexec.invalid/stack.schema.json",
        "title": "remoteexec stack file",
        "description": "Hosts, Tarantool replica sets and services, started in dependency order.",
        **TOP.schema(),
    }


def render() -> str:
    """The shipped ``stack.schema.json`` text."""
    return json.dumps(json_schema(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
