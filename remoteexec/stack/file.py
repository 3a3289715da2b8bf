"""The stack file (TOML): load, validate, and build a Stack from it.

``load(path)`` parses and validates without touching a host and returns a
:class:`Topology`; ``from_file(path, master=None, hosts=None)`` then
connects the hosts (or takes them from ``hosts=``, a Lab's say) and adds
every service to a :class:`~remoteexec.stack.Stack` in dependency order.

Validation reports every problem at once, each as ``FILE:LINE: key.path:
message``. The TOML parser gives a line only for syntax errors; for the
rest the line is found by scanning the text for the table header and key
(:func:`key_lines`). The structure (types, required and unknown keys) is
checked from the definitions in :mod:`remoteexec.stack.schema`, the ones
the JSON Schema comes from; this module checks what needs several keys.

Secrets come from the environment only (``password_env``): the file names
the variable, a missing one is a validation error naming it, and the value
is read when the stack is built, never printed.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from remoteexec import arguments
from remoteexec.stack import schema
from remoteexec.stack.schema import Problem, did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.9/3.10 only
    # tomli is installed on 3.9/3.10 only; mypy checks this branch everywhere.
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

if TYPE_CHECKING:
    from remoteexec.host import Host
    from remoteexec.master import Master
    from remoteexec.stack import Stack

#: The order readiness kinds pick the executor class in; the rest become ``wait=``.
READY_KINDS = ("http", "tcp", "unix", "pidfile", "banner")
_LINE = re.compile(r"at line (\d+)(?:, column (\d+))?")


@dataclass(frozen=True)
class FileProblem:
    """One problem of a stack file: where (file, line, key path) and what."""

    file: str
    line: Optional[int]
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else "%s:%d" % (self.file, self.line)
        return (
            "%s: %s: %s" % (where, self.path, self.message)
            if self.path
            else ("%s: %s" % (where, self.message))
        )


class StackFileError(ValueError):
    """A stack file that cannot run; ``problems`` lists every one found, in file order."""

    def __init__(self, problems: List[FileProblem]) -> None:
        self.problems = problems
        head = "%d problem%s in %s" % (
            len(problems),
            "" if len(problems) == 1 else "s",
            problems[0].file if problems else "?",
        )
        super().__init__("\n".join([head] + ["  %s" % p for p in problems]))


# -- where a key is ------------------------------------------------------


def _keys(text: str) -> Tuple[List[str], str]:
    """A dotted TOML key at the start of ``text``: its parts and the rest."""
    parts: List[str] = []
    rest = text.lstrip()
    for _ in range(len(text) + 1):  # bounded: each round eats at least one character
        if rest[:1] in ('"', "'"):
            quote = rest[0]
            end = 1
            while end < len(rest) and rest[end] != quote:
                end += 2 if quote == '"' and rest[end] == "\\" else 1
            parts.append(rest[1:end])
            rest = rest[end + 1 :]
        else:
            bare = re.match(r"[A-Za-z0-9_-]+", rest)
            if bare is None:
                break
            parts.append(bare.group(0))
            rest = rest[bare.end() :]
        rest = rest.lstrip()
        if not rest.startswith("."):
            break
        rest = rest[1:].lstrip()
    return parts, rest


def key_lines(text: str) -> Dict[Tuple[str, ...], int]:
    """Key path → the line it is defined on (tables by their header, inline keys too)."""
    found: Dict[Tuple[str, ...], int] = {}
    table: Tuple[str, ...] = ()
    multiline: Optional[str] = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if multiline is not None:
            if line.count(multiline) % 2 == 1:
                multiline = None
            continue
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            keys, _ = _keys(line.lstrip("["))
            table = tuple(keys)
            found.setdefault(table, number)
            continue
        keys, rest = _keys(line)
        if not keys or not rest.startswith("="):
            continue
        path = (*table, *keys)
        found.setdefault(path, number)
        value = rest[1:].strip()
        for quote in ('"""', "'''"):
            if value.count(quote) % 2 == 1:
                multiline = quote
        if value.startswith("{"):
            # One level of an inline table: ``ready = { http = "...", tcp = 80 }``.
            for inner in re.finditer(r"[{,]\s*([A-Za-z0-9_-]+|\"[^\"]*\")\s*=", value):
                found.setdefault((*path, inner.group(1).strip('"')), number)
    return found


def line_of(lines: Mapping[Tuple[str, ...], int], path: Tuple[str, ...]) -> Optional[int]:
    """The line of ``path``, or of its closest enclosing key the scan found."""
    for end in range(len(path), 0, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


# -- the topology --------------------------------------------------------


@dataclass
class HostSpec:
    """One host of the file: where it is and how to connect (defaults applied)."""

    name: str
    target: str
    via: Optional[str] = None
    options: Dict[str, Any] = field(default_factory=dict)

    @property
    def local(self) -> bool:
        return self.target == "local"


@dataclass
class ServiceSpec:
    """One ``[tarantool.NAME]`` or ``[services.NAME]`` section, checked."""

    name: str
    #: ``"replicaset"``, ``"tarantool"`` (one instance) or ``"process"``.
    kind: str
    hosts: List[str]
    depends_on: Dict[str, str]
    table: Dict[str, Any]
    job: bool = False
    #: ``app_lua`` read from its file (Tarantool kinds).
    app_source: str = ""


@dataclass
class Topology:
    """A validated stack file: hosts and services, nothing connected yet."""

    path: str
    name: str
    hosts: Dict[str, HostSpec]
    services: Dict[str, ServiceSpec]

    @property
    def directory(self) -> str:
        return os.path.dirname(os.path.abspath(self.path))

    def secrets(self) -> List[str]:
        """The environment variables the file takes passwords from (``password_env``)."""
        return [
            s.table["password_env"] for s in self.services.values() if "password_env" in s.table
        ]

    def graph(self) -> Dict[str, Dict[str, str]]:
        """``{service: {dependency: condition}}`` in file order."""
        return {name: dict(s.depends_on) for name, s in self.services.items()}

    def waves(self) -> List[List[str]]:
        """The start order in waves (see :func:`remoteexec.stack.graph.waves`)."""
        from remoteexec.stack import graph

        return graph.waves(self.graph())

    def to_dict(self) -> Dict[str, Any]:
        """Plain data for ``remoteexec config --json`` (never a secret's value)."""
        return {
            "file": self.path,
            "name": self.name,
            "hosts": {
                n: {"target": h.target, "via": h.via, **h.options} for n, h in self.hosts.items()
            },
            "services": {
                n: {
                    "kind": s.kind,
                    "hosts": s.hosts,
                    "depends_on": s.depends_on,
                    "job": s.job,
                    **{k: v for k, v in s.table.items() if k not in ("on", "depends_on", "job")},
                }
                for n, s in self.services.items()
            },
            "waves": self.waves(),
        }


def references(text: str) -> List[str]:
    """The path (``service.key``) of every ``${service.key}`` in ``text``.

    Parsed by :func:`remoteexec.stack.refs.interpolate`, the one grammar; a
    malformed placeholder is its ValueError.
    """
    from remoteexec.stack import refs

    found = refs.interpolate(text, {})
    return [r.path for r in found.refs()] if isinstance(found, (refs.Ref, refs.Template)) else []


def _strings(value: Any, path: Tuple[str, ...]) -> Iterable[Tuple[Tuple[str, ...], str]]:
    """Every string inside ``value`` with its key path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, (*path, str(i)))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*path, key))


# -- checks that need more than one key ----------------------------------


class _Checker:
    """The cross-key checks; each appends ``(key path, message)`` problems."""

    def __init__(self, doc: Dict[str, Any], base: str, environ: Mapping[str, str]) -> None:
        self.doc = doc
        self.base = base
        self.environ = environ
        self.out: List[Problem] = []
        hosts = doc.get("hosts")
        self.hosts: Dict[str, Any] = hosts if isinstance(hosts, dict) else {}
        self.sections: Dict[str, Tuple[str, Dict[str, Any]]] = {}

    def problem(self, path: Tuple[str, ...], message: str) -> None:
        self.out.append((path, message))

    def path(self, value: str) -> str:
        """``value`` with ``~`` expanded, relative to the file's directory."""
        return os.path.join(self.base, os.path.expanduser(value))

    def host_name(self, path: Tuple[str, ...], name: Any) -> None:
        if isinstance(name, str) and name not in self.hosts:
            known = ", ".join(sorted(self.hosts)) or "none"
            self.problem(
                path,
                "unknown host %r%s (hosts: %s)"
                % (name, did_you_mean(name, list(self.hosts)), known),
            )

    def check_hosts(self) -> None:
        from remoteexec.connectors.ssh import Target

        for name, host in self.hosts.items():
            if not isinstance(host, dict):
                continue
            target = host.get("target")
            if isinstance(target, str) and target and target != "local":
                try:
                    Target.parse(target)
                except ValueError as e:
                    self.problem(("hosts", name, "target"), str(e))
            via = host.get("via")
            if via is not None:
                self.host_name(("hosts", name, "via"), via)
                if via == name:
                    self.problem(("hosts", name, "via"), "a host cannot hop through itself")
                elif target == "local":
                    self.problem(("hosts", name, "via"), "a 'local' host has no hop")
        self.via_cycles()
        for where in [("defaults",)] + [("hosts", n) for n in self.hosts]:
            table = self.doc.get(where[0]) if len(where) == 1 else self.hosts.get(where[1])
            for key in ("identity_file", "known_hosts_file"):
                value = table.get(key) if isinstance(table, dict) else None
                if isinstance(value, str) and value and not os.path.exists(self.path(value)):
                    self.problem((*where, key), "no such file: %s" % self.path(value))

    def via_cycles(self) -> None:
        for start in self.hosts:
            seen = [start]
            name: Any = start
            for _ in range(len(self.hosts) + 1):
                host = self.hosts.get(name)
                name = host.get("via") if isinstance(host, dict) else None
                if name is None or name not in self.hosts:
                    break
                if name == start:
                    self.problem(
                        ("hosts", start, "via"), "hop cycle: %s" % " -> ".join([*seen, start])
                    )
                    break
                if name in seen:
                    break
                seen.append(name)

    def collect_sections(self) -> None:
        for section in ("tarantool", "services"):
            tables = self.doc.get(section)
            if not isinstance(tables, dict):
                continue
            for name, table in tables.items():
                if not isinstance(table, dict):
                    continue
                if name in self.sections:
                    other = self.sections[name][0]
                    self.problem(
                        (section, name),
                        "duplicate name: %s.%s is defined too (names are shared by all services)"
                        % (other, name),
                    )
                    continue
                self.sections[name] = (section, table)
        if not self.sections and "hosts" in self.doc:
            self.problem((), "nothing to start: add a [tarantool.NAME] or [services.NAME] section")

    def check_tarantool(self, name: str, table: Dict[str, Any]) -> None:
        at = ("tarantool", name)
        members = table.get("members")
        if members is not None and ("on" in table or "listen" in table):
            self.problem(at, "give either members (a replica set) or on and listen (one instance)")
        elif members is None and not ("on" in table and "listen" in table):
            self.problem(at, "missing: members (a replica set), or on and listen (one instance)")
        if isinstance(members, list):
            for i, member in enumerate(members):
                if isinstance(member, str) and ":" in member:
                    host, _, port = member.rpartition(":")
                    self.host_name((*at, "members", str(i)), host)
                    try:
                        arguments.port("port", port)
                    except (TypeError, ValueError) as e:
                        self.problem((*at, "members", str(i)), str(e))
            leader = table.get("leader")
            if isinstance(leader, int) and members and leader >= len(members):
                self.problem((*at, "leader"), "%d: there are %d members" % (leader, len(members)))
        if "on" in table:
            self.host_name((*at, "on"), table["on"])
        listen = table.get("listen")
        if isinstance(listen, str) and listen:
            port = listen.rpartition(":")[2]
            try:
                arguments.port("listen port", port, allow_zero=True)
            except (TypeError, ValueError) as e:
                self.problem((*at, "listen"), str(e))
        app = table.get("app_lua")
        if isinstance(app, str) and app and not os.path.isfile(self.path(app)):
            self.problem((*at, "app_lua"), "no such file: %s" % self.path(app))
        variable = table.get("password_env")
        if isinstance(variable, str) and variable and variable not in self.environ:
            self.problem(
                (*at, "password_env"),
                "the environment variable %s is not set (the password comes from it)" % variable,
            )
        if "password_env" in table and "user" not in table:
            self.problem(
                (*at, "user"), "missing: password_env needs the user it is the password of"
            )

    def check_service(self, name: str, table: Dict[str, Any]) -> None:
        at = ("services", name)
        on = table.get("on")
        for i, host in enumerate(on if isinstance(on, list) else [on]):
            self.host_name((*at, "on", str(i)) if isinstance(on, list) else (*at, "on"), host)
        command = table.get("command")
        if isinstance(command, str) and not table.get("shell"):
            self.problem(
                (*at, "command"),
                "a string command needs shell = true; otherwise give an argument list",
            )
        if isinstance(command, str) and not command.strip():
            self.problem((*at, "command"), "command is empty")
        ready = table.get("ready")
        if isinstance(ready, dict):
            if table.get("job"):
                self.problem((*at, "ready"), "a job has no readiness: it is done when it exits 0")
            self.check_ready(at, ready)

    def check_ready(self, at: Tuple[str, ...], ready: Dict[str, Any]) -> None:
        from remoteexec import waits

        checks: Dict[str, Callable[[Any], Any]] = {
            "http": waits.split_url,
            # An int port is checked by its type's range already.
            "tcp": lambda v: (
                v if isinstance(v, int) else arguments.port("port", v.rpartition(":")[2])
            ),
            "unix": lambda v: arguments.unix_path("path", v),
            "banner": lambda v: waits.regex("banner", v),
        }
        for kind, value in ready.items():
            if isinstance(value, str) and "${" in value.replace("$${", ""):
                self.problem(
                    (*at, "ready", kind),
                    "readiness is checked on the service's own host: no ${...} references here",
                )
                continue
            check = checks.get(kind)
            if check is None or not isinstance(value, (str, int)) or isinstance(value, bool):
                continue
            try:
                check(value)
            except (TypeError, ValueError) as e:
                reason = str(e)
                if kind == "http" and ("http or https" in reason or "host name" in reason):
                    reason = "not a URL: %s" % reason
                self.problem((*at, "ready", kind), reason)

    def owner(self, path: str) -> Optional[str]:
        """The service a reference path names: the longest known prefix
        (``api.1.uri`` is member 1 of group ``api``), or None."""
        parts = path.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            name = ".".join(parts[:cut])
            group = parts[0] if cut == 2 and parts[1].isdigit() else None
            if name in self.sections or (group is not None and group in self.sections):
                return parts[0]
        return None

    def check_common(self, section: str, name: str, table: Dict[str, Any]) -> Dict[str, str]:
        """Checks ``depends_on``, restarts and references; returns the
        dependencies (a reference is one, ``healthy``, unless declared)."""
        at = (section, name)
        deps = table.get("depends_on")
        declared: Dict[str, Optional[str]] = {}
        if isinstance(deps, list):
            declared = {d: None for d in deps if isinstance(d, str)}
        elif isinstance(deps, dict):
            declared = {d: c for d, c in deps.items() if c in schema.CONDITIONS}
        wanted: Dict[str, str] = {}
        for dep, condition in declared.items():
            where = (*at, "depends_on", dep)
            if dep == name:
                self.problem(where, "a service cannot depend on itself")
            elif dep not in self.sections:
                hint = did_you_mean(dep, list(self.sections))
                self.problem(where, "unknown service %r%s" % (dep, hint))
            else:
                job = bool(self.sections[dep][1].get("job"))
                if condition == "completed" and not job:
                    self.problem(where, "'completed' needs a job: set job = true on %s" % dep)
                wanted[dep] = condition or ("completed" if job else "healthy")
        if table.get("restart", "no") == "no":
            for key in ("max_restarts", "restart_backoff"):
                if key in table:
                    self.problem((*at, key), "needs restart = 'on-failure'")
        elif table.get("job"):
            self.problem((*at, "restart"), "a job runs once: it cannot restart")
        for service in self.check_references(name, table):
            wanted.setdefault(service, "healthy")
        return wanted

    def check_references(self, name: str, table: Dict[str, Any]) -> List[str]:
        """Checks every ``${service.key}`` of a section; the services named."""
        named: List[str] = []
        at = (self.sections[name][0], name)
        for path, text in _strings({k: v for k, v in table.items() if k != "ready"}, at):
            try:
                found = references(text)
            except ValueError as e:
                self.problem(path, str(e))
                continue
            for ref in found:
                service = self.owner(ref)
                if service is None:
                    first = ref.split(".")[0]
                    hint = did_you_mean(first, list(self.sections))
                    self.problem(path, "${%s}: no service named %r%s" % (ref, first, hint))
                elif service == name:
                    self.problem(path, "${%s}: a service cannot refer to itself" % ref)
                else:
                    named.append(service)
        return named

    def run(self) -> Dict[str, Dict[str, str]]:
        self.check_hosts()
        self.collect_sections()
        graph: Dict[str, Dict[str, str]] = {}
        for name, (section, table) in self.sections.items():
            if section == "tarantool":
                self.check_tarantool(name, table)
            else:
                self.check_service(name, table)
            graph[name] = self.check_common(section, name, table)
        known = {
            n: {d: c for d, c in deps.items() if d in graph and d != n} for n, deps in graph.items()
        }
        from remoteexec.stack import graph as graphs

        found = graphs.cycle(known)
        if found:
            first = found[0]
            section = self.sections[first][0]
            self.problem(
                (section, first, "depends_on"), "dependency cycle: %s" % " -> ".join(found)
            )
        return graph


# -- loading -------------------------------------------------------------


def parse(
    text: str, path: str = "<stack>", environ: Optional[Mapping[str, str]] = None
) -> Topology:
    """Validate the text of a stack file; a :class:`StackFileError` lists every problem."""
    environ = os.environ if environ is None else environ
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        where = _LINE.search(str(e))
        line = int(where.group(1)) if where else None
        message = _LINE.sub("", str(e)).replace("()", "").strip().rstrip(" (")
        raise StackFileError([FileProblem(path, line, "", "TOML syntax: %s" % message)]) from None
    lines = key_lines(text)
    problems = schema.check(doc)
    checker = _Checker(doc, os.path.dirname(os.path.abspath(path)), environ)
    graph = checker.run()
    problems += checker.out
    if problems:
        found = sorted(
            {(line_of(lines, p) or 0, ".".join(p), m): None for p, m in problems},
            key=lambda item: item[:2],
        )
        raise StackFileError(
            [FileProblem(path, line or None, key, msg) for line, key, msg in found]
        )
    return _topology(doc, path, checker, graph)


def read(path: str, environ: Optional[Mapping[str, str]] = None) -> Topology:
    """Read and validate the stack file at ``path`` (nothing is connected or started)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise StackFileError(
            [FileProblem(path, None, "", "cannot read the file: %s" % e)]
        ) from None
    return parse(text, path, environ)


def _topology(
    doc: Dict[str, Any], path: str, checker: _Checker, graph: Dict[str, Dict[str, str]]
) -> Topology:
    defaults = dict(doc.get("defaults", {}))
    hosts = {}
    for name, table in doc["hosts"].items():
        options = {**defaults, **{k: v for k, v in table.items() if k not in ("target", "via")}}
        for key in ("identity_file", "known_hosts_file"):
            if key in options:
                options[key] = checker.path(options[key])
        hosts[name] = HostSpec(name, table["target"], table.get("via"), options)
    services = {}
    for name, (section, table) in checker.sections.items():
        if section == "tarantool":
            kind = "replicaset" if "members" in table else "tarantool"
            on = (
                [m.rpartition(":")[0] for m in table["members"]]
                if "members" in table
                else [table["on"]]
            )
            source = ""
            if "app_lua" in table:
                with open(checker.path(table["app_lua"]), encoding="utf-8") as f:
                    source = f.read()
            services[name] = ServiceSpec(name, kind, on, graph[name], dict(table), False, source)
        else:
            on = table["on"] if isinstance(table["on"], list) else [table["on"]]
            services[name] = ServiceSpec(
                name, "process", list(on), graph[name], dict(table), bool(table.get("job"))
            )
    stem = os.path.splitext(os.path.basename(path))[0]
    stack_name = doc.get("name") or (re.sub(r"[^A-Za-z0-9_-]", "-", stem) or "stack")
    return Topology(path, stack_name, hosts, services)


# -- building ------------------------------------------------------------


def connect(
    topology: Topology, master: Master, names: Optional[Iterable[str]] = None
) -> Dict[str, Host]:
    """Open the hosts ``names`` (default all) and the hops they need, in parallel.

    Hops first: a host connects once the one it goes through is open. Every
    host is tried; a failure raises one ConnectionFailed listing each.
    """
    from remoteexec.errors import ConnectionFailed

    wanted = list(topology.hosts if names is None else names)
    for _ in range(len(topology.hosts)):  # add the hops, bounded by the file's hosts
        extra = [
            topology.hosts[n].via for n in wanted if topology.hosts[n].via not in (None, *wanted)
        ]
        if not extra:
            break
        wanted += [e for e in dict.fromkeys(extra) if e is not None]
    opened: Dict[str, Host] = {}
    failures: List[Exception] = []

    def open_one(spec: HostSpec) -> Host:
        if spec.local:
            return master.local(name=spec.name, python=spec.options.get("python"))
        via = opened[spec.via] if spec.via else None
        return master.connect(spec.target, via=via, name=spec.name, **spec.options)

    todo = [topology.hosts[n] for n in wanted]
    for _ in range(len(todo) + 1):
        ready = [s for s in todo if s.via is None or s.via in opened]
        if not ready:
            break
        todo = [s for s in todo if s not in ready]
        with concurrent.futures.ThreadPoolExecutor(min(16, len(ready))) as pool:
            futures = {pool.submit(open_one, s): s for s in ready}
            for future in concurrent.futures.as_completed(futures):
                try:
                    opened[futures[future].name] = future.result()
                except Exception as e:
                    failures.append(e)
        if failures:
            break
    if failures:
        raise ConnectionFailed(
            "%d host(s) of %s failed to connect: %s"
            % (len(failures), topology.path, "; ".join(str(f) for f in failures)),
            host=",".join(str(getattr(f, "host", "?")) for f in failures),
            failures=failures,
        )
    return opened


def _interpolate(value: Any, lookup: Any) -> Any:
    """``value`` with each string holding ``${name.key}`` made a reference
    (:func:`remoteexec.stack.refs.interpolate`), found through ``lookup``."""
    if isinstance(value, str):
        if "${" not in value and "$${" not in value:
            return value
        from remoteexec.stack import refs

        return refs.interpolate(value, lookup)
    if isinstance(value, list):
        return [_interpolate(v, lookup) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v, lookup) for k, v in value.items()}
    return value


def _address(value: Any) -> Tuple[str, int]:
    """``ready.tcp``: ``"host:port"`` or a port on 127.0.0.1."""
    if isinstance(value, int):
        return "127.0.0.1", value
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def _wait(kind: str, value: Any) -> Any:
    """The :mod:`remoteexec.waits` condition of one ``ready`` kind."""
    from remoteexec import waits

    if kind == "http":
        return waits.HTTP(value)
    if kind == "tcp":
        return waits.TCP(*_address(value))
    if kind == "unix":
        return waits.UnixSocket(value)
    if kind == "pidfile":
        return waits.File(value)
    return waits.Banner(value)


def executor(spec: ServiceSpec, host: Host, base: str, lookup: Any, name: str) -> Any:
    """The executor for one instance of a ``[services.NAME]`` section on ``host``.

    The first readiness kind in :data:`READY_KINDS` picks the class (an
    ``http`` check makes an HTTPExecutor); the others are added as waits,
    so kinds combine. No ``ready`` (and every job) is a SimpleExecutor.
    """
    import remoteexec as rx

    table = spec.table
    ready = dict(table.get("ready", {}))
    kwargs: Dict[str, Any] = {"on": host, "name": name, "shell": bool(table.get("shell"))}
    if "cwd" in table:
        kwargs["cwd"] = os.path.join(base, table["cwd"])
    if "env" in table:
        kwargs["envvars"] = _interpolate(table["env"], lookup)
    for key in ("timeout", "stop_timeout"):
        if key in table:
            kwargs[key] = table[key]
    command = _interpolate(table["command"], lookup)
    kinds = [k for k in READY_KINDS if k in ready]
    if kinds[1:]:
        kwargs["wait"] = [_wait(k, ready[k]) for k in kinds[1:]]
    primary = kinds[0] if kinds else None
    cls: Any = rx.SimpleExecutor
    if primary == "http":
        cls, kwargs["url"] = rx.HTTPExecutor, ready["http"]
    elif primary == "tcp":
        cls = rx.TCPExecutor
        kwargs["host"], kwargs["port"] = _address(ready["tcp"])
    elif primary == "unix":
        cls, kwargs["socket_name"] = rx.UnixSocketExecutor, ready["unix"]
    elif primary == "pidfile":
        cls, kwargs["filename"] = rx.PidExecutor, ready["pidfile"]
    elif primary == "banner":
        cls, kwargs["banner"] = rx.OutputExecutor, ready["banner"]
    return cls(command, **kwargs)


def tarantool(
    spec: ServiceSpec, hosts: Mapping[str, Host], lookup: Any, environ: Mapping[str, str]
) -> Any:
    """The ReplicaSet or TarantoolInstance of a ``[tarantool.NAME]`` section.

    The password is read from ``password_env`` here, and goes only into
    the service (a :class:`mitogen.core.Secret` there), never into a message.
    """
    from remoteexec.tarantool import ReplicaSet, TarantoolInstance

    table = spec.table
    password = environ.get(table["password_env"]) if "password_env" in table else None
    common: Dict[str, Any] = {k: table[k] for k in ("timeout",) if k in table}
    box_cfg = _interpolate(table.get("box_cfg", {}), lookup)
    env = _interpolate(table.get("env", {}), lookup)
    if "tarantool" in table:
        common["tarantool"] = table["tarantool"]
    if spec.kind == "tarantool":
        return TarantoolInstance(
            on=hosts[table["on"]],
            listen=table["listen"],
            box_cfg=box_cfg,
            app_lua=spec.app_source,
            user=table.get("user"),
            password=password,
            env=env,
            **common,
        )
    members = []
    for member in table["members"]:
        host, _, port = member.rpartition(":")
        members.append(
            TarantoolInstance(on=hosts[host], listen=int(port), app_lua=spec.app_source, **common)
        )
    common.pop("tarantool", None)
    return ReplicaSet(
        spec.name,
        members,
        leader=table.get("leader", 0),
        replication_timeout=table.get("replication_timeout", 0.1),
        box_cfg=box_cfg,
        user=table.get("user"),
        password=password,
        env=env,
        **common,
    )


def build(
    topology: Topology,
    hosts: Mapping[str, Host],
    environ: Optional[Mapping[str, str]] = None,
) -> Stack:
    """A Stack with every service of ``topology`` added, on ``hosts`` (file name → Host).

    A service on several hosts is a group (``NAME.1`` ...; see
    :meth:`remoteexec.stack.Stack.add`'s ``on=``).
    """
    from remoteexec.stack import Stack

    environ = os.environ if environ is None else environ
    missing = [n for n in topology.hosts if n not in hosts]
    if missing:
        raise ValueError(
            "hosts= has no Host for %s (the file's hosts: %s)"
            % (", ".join(missing), ", ".join(topology.hosts))
        )
    stack = Stack(topology.name)
    for name, spec in topology.services.items():
        table = spec.table
        options: Dict[str, Any] = {"job": spec.job}
        if "depends_on" in table:
            options["depends_on"] = table["depends_on"]
        for key in ("restart", "max_restarts", "restart_backoff"):
            if key in table:
                options[key] = table[key]
        if spec.job and "timeout" in table:
            options["timeout"] = table["timeout"]
        if spec.kind != "process":
            stack.add(tarantool(spec, hosts, stack, environ), name=name, **options)
        elif len(spec.hosts) == 1:
            service = executor(spec, hosts[spec.hosts[0]], topology.directory, stack, name)
            stack.add(service, name=name, **options)
        else:

            def factory(host: Host, spec: ServiceSpec = spec) -> Any:
                label = "%s@%s" % (spec.name, host.name)
                return executor(spec, host, topology.directory, stack, label)

            on = [hosts[h] for h in spec.hosts]
            stack.add(factory, name=name, on=on, **options)
    return stack


def from_file(
    path: str,
    master: Optional[Master] = None,
    hosts: Optional[Mapping[str, Host]] = None,
) -> Stack:
    """Load ``path``, connect its hosts (unless ``hosts=`` maps them) and build its Stack.

    ``hosts=`` maps the file's host names to Hosts (a Lab's, say), so the
    same file runs on a lab or on real machines. Without it the hosts are
    connected through ``master`` (default: the process's default master).
    A file problem raises :class:`StackFileError` before anything connects.
    """
    topology = read(path)
    if hosts is None:
        if master is None:
            from remoteexec.master import default_master

            master = default_master()
        hosts = connect(topology, master)
    return build(topology, hosts)


#: The name :meth:`remoteexec.stack.Stack.from_file` calls.
load = from_file


__all__ = [
    "FileProblem",
    "HostSpec",
    "ServiceSpec",
    "StackFileError",
    "Topology",
    "build",
    "connect",
    "executor",
    "from_file",
    "key_lines",
    "line_of",
    "load",
    "parse",
    "read",
    "references",
    "tarantool",
]
