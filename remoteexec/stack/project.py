"""Detached stacks: a project's state on the master, its locks, and attaching to it.

``stack.up(detach=True)`` (``remoteexec up -d``) leaves the services running
after the master exits. The project's state is kept in two places:

- on each host, by :mod:`remoteexec.target.project` (pids, start times,
  markers, logs; the host's lock);
- on the master, a 0600 ``master.json`` in the 0700 directory
  ``$XDG_STATE_HOME/remoteexec/<project>/`` (default ``~/.local/state``):
  the stack file and its hash, the services in start order with their
  hosts and dependencies, and how to reach each host (target, identity
  file, known_hosts file, python; never a secret).

:meth:`remoteexec.stack.Stack.attach` (``remoteexec status|logs|restart|down``)
reads the master's state, connects the hosts and returns a
:class:`DetachedStack`. Concurrent ``up``/``down`` of one project are
serialised by ``fcntl.flock`` locks, on the master (``master.lock``) and on
each host; a lock dies with its holder, so a killed ``up`` never leaves a
stale one.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import re
import threading
import time
from functools import partial
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
)

from remoteexec.stack import graph
from remoteexec.stack.error import StackError
from remoteexec.supervisor_client import dotted
from remoteexec.target import files
from remoteexec.target import project as target

if TYPE_CHECKING:
    from remoteexec.host import Host
    from remoteexec.master import Master

__all__ = [
    "LOCK_WAIT",
    "DetachedStack",
    "Detaching",
    "HostProject",
    "attach",
    "check_name",
    "file_hash",
    "load",
    "names",
    "project_dir",
    "state_home",
]

#: How long an up or down waits for another one of the same project.
LOCK_WAIT = 120.0
#: The bound of each service's stop in a detached down.
STOP_TIMEOUT = 10.0
MASTER_FILE = "master.json"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def state_home() -> str:
    """The master's state directory: ``$XDG_STATE_HOME`` or ``~/.local/state``."""
    return target.default_root()


def check_name(name: Any) -> str:
    """``name`` if it can name a project (letters, digits, ``_ . -``); ValueError otherwise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > 100:
        raise ValueError(
            "project name %r: use letters, digits, '_', '.' and '-' (not starting with '.' or '-')"
            % (name,)
        )
    return name


def project_dir(name: str) -> str:
    """The master's 0700 directory of project ``name``."""
    return os.path.join(state_home(), "remoteexec", check_name(name))


def file_hash(path: Optional[str]) -> str:
    """sha256 of the stack file (empty for a stack built in Python)."""
    if not path:
        return ""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def names() -> List[str]:
    """The projects known on this master (those with a state file)."""
    root = os.path.join(state_home(), "remoteexec")
    try:
        found = sorted(os.listdir(root))
    except OSError:
        return []
    return [n for n in found if os.path.isfile(os.path.join(root, n, MASTER_FILE))]


def load(name: str) -> Dict[str, Any]:
    """Project ``name``'s master state; StackError if there is none."""
    path = os.path.join(project_dir(name), MASTER_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            state: Dict[str, Any] = json.load(f)
    except FileNotFoundError:
        known = ", ".join(names()) or "none"
        raise StackError(
            "no detached project %r on this machine (%s missing; projects: %s)"
            % (name, path, known),
            stack=name,
        ) from None
    except (OSError, ValueError) as e:
        raise StackError("project %s: cannot read %s: %s" % (name, path, e), stack=name) from None
    return state


def save(name: str, state: Mapping[str, Any]) -> str:
    """Write the master state (0600 in a 0700 directory); its path."""
    d = project_dir(name)
    target.private_dirs(os.path.dirname(d), d)
    return files.write_private(os.path.join(d, MASTER_FILE), json.dumps(state, indent=1))


def forget(name: str) -> None:
    """Remove the master state (the lock file stays: a waiter may hold it open)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(project_dir(name), MASTER_FILE))


@contextlib.contextmanager
def master_lock(name: str, timeout: float = LOCK_WAIT) -> Iterator[None]:
    """Hold project ``name``'s lock on this master (flock: released if we die)."""
    d = project_dir(name)
    target.private_dirs(os.path.dirname(d), d)
    fd = target.flock_within(os.path.join(d, "master.lock"), timeout)
    if fd is None:
        raise StackError(
            "project %s: another up or down of it runs on this machine"
            " (waited %gs for %s/master.lock)" % (name, timeout, d),
            stack=name,
        )
    try:
        yield
    finally:
        os.close(fd)


def reach(host: Host) -> Dict[str, Any]:
    """How to connect ``host`` again: target and connect options, never a secret."""
    connector = host.connector
    if connector.kind == "local":
        return {
            "target": "local",
            "via": None,
            "options": {"python": getattr(connector, "python", None)},
        }
    ssh: Dict[str, Any] = dict(getattr(connector, "options", {}))
    args = [str(a) for a in ssh.get("ssh_args") or []]
    known = next((a.split("=", 1)[1] for a in args if a.startswith("UserKnownHostsFile=")), None)
    options = {
        "identity_file": ssh.get("identity_file"),
        "known_hosts_file": known,
        "python": ssh.get("python_path"),
        "check_host_keys": ssh.get("check_host_keys"),
        "connect_timeout": ssh.get("connect_timeout"),
    }
    return {
        "target": str(getattr(connector, "target", host.name)),
        "via": None,
        "options": {k: v for k, v in options.items() if v is not None},
    }


def connect(
    master: Master, hosts: Mapping[str, Mapping[str, Any]]
) -> Tuple[Dict[str, Host], Dict[str, str]]:
    """Connect every recorded host (hops first); (hosts, {name: why not})."""
    opened: Dict[str, Host] = {}
    failed: Dict[str, str] = {}

    def open_one(name: str) -> Host:
        spec = hosts[name]
        options = dict(spec.get("options") or {})
        if spec["target"] == "local":
            return master.local(name=name, python=options.get("python"))
        via = opened[spec["via"]] if spec.get("via") else None
        return master.connect(spec["target"], via=via, name=name, **options)

    todo = list(hosts)
    for _ in range(len(todo) + 1):
        ready = [n for n in todo if not hosts[n].get("via") or hosts[n]["via"] in opened]
        blocked = [n for n in todo if hosts[n].get("via") in failed]
        for n in blocked:
            failed[n] = "its hop %s is unreachable" % hosts[n]["via"]
        todo = [n for n in todo if n not in ready and n not in blocked]
        if not ready:
            break
        with concurrent.futures.ThreadPoolExecutor(min(16, len(ready))) as pool:
            futures = {pool.submit(open_one, n): n for n in ready}
            for future in concurrent.futures.as_completed(futures):
                try:
                    opened[futures[future]] = future.result()
                except Exception as e:
                    failed[futures[future]] = str(e).splitlines()[0] if str(e) else repr(e)
    for n in todo:
        failed.setdefault(n, "not connected")
    return opened, failed


def each(calls: Mapping[str, Callable[[], Any]]) -> Dict[str, Any]:
    """Run the calls in parallel; {key: result or the exception it raised}."""
    if not calls:
        return {}
    out: Dict[str, Any] = {}
    with concurrent.futures.ThreadPoolExecutor(min(16, len(calls))) as pool:
        futures = {pool.submit(fn): key for key, fn in calls.items()}
        for future in concurrent.futures.as_completed(futures):
            try:
                out[futures[future]] = future.result()
            except Exception as e:
                out[futures[future]] = e
    return out


class HostProject:
    """A project's state on one host: typed calls of :mod:`remoteexec.target.project`."""

    def __init__(self, host: Host, project: str, root: Optional[str]) -> None:
        self.host = host
        self.project = project
        self.root = root

    def _call(self, function: Callable[..., Any], *args: Any, waits: float = 0.0) -> Any:
        return self.host.invoke(
            dotted(function), self.root, self.project, self.host.name, *args,
            reply_timeout=30.0 + waits,
        )  # fmt: skip

    def lock(self, timeout: float = LOCK_WAIT) -> None:
        self._call(target.lock, timeout, waits=timeout)

    def unlock(self) -> None:
        self._call(target.unlock)

    def begin(self, log_cap: int, log_keep: int) -> Dict[str, Any]:
        return dict(self._call(target.begin, log_cap, log_keep))

    def end(self) -> None:
        self.host.invoke(dotted(target.end))

    def record(self, services: Mapping[str, Sequence[int]], hash_: str) -> List[str]:
        got = self._call(target.record, {k: list(v) for k, v in services.items()}, hash_)
        return [str(n) for n in got["recorded"]]

    def status(self, lines: int = 20) -> Dict[str, List[Dict[str, Any]]]:
        got = self._call(target.status, lines, waits=10.0)
        return dict(got["services"])

    def stop(self, services: Optional[Sequence[str]], timeout: float) -> Dict[str, Any]:
        wanted = None if services is None else list(services)
        bound = (timeout + 10.0) * max(1, len(wanted or [1]))
        return dict(self._call(target.stop, wanted, timeout, waits=bound))

    def read_logs(
        self, service: Optional[str], offsets: Mapping[str, int], lines: int
    ) -> Dict[str, Any]:
        return dict(self._call(target.read_logs, service, dict(offsets), lines))


def lock_in_order(remote: Mapping[str, HostProject], wait: float) -> Dict[str, BaseException]:
    """Take the hosts' locks one by one in name order (two masters locking
    the same hosts never hold one each and wait for the other); stops at
    the first failure. {host: why} for the one that failed."""
    for name in sorted(remote):
        try:
            remote[name].lock(wait)
        except Exception as e:
            return {name: e}
    return {}


class Detaching:
    """One detached ``up``: the locks held, the hosts' state read, services
    started detached, then recorded. Used by :meth:`Stack.up` with ``detach=True``."""

    def __init__(
        self,
        project: str,
        hosts: Mapping[str, Host],
        *,
        host_state_dir: Optional[str],
        source_file: Optional[str],
        log_cap: int,
        log_keep: int,
        lock_wait: float = LOCK_WAIT,
    ) -> None:
        self.project = check_name(project)
        self.hosts = dict(hosts)
        self.root = host_state_dir
        self.source_file = os.path.abspath(source_file) if source_file else None
        self.log_cap = whole("log_cap", log_cap, 1024)
        self.log_keep = whole("log_keep", log_keep, 0)
        self.lock_wait = lock_wait
        self.remote = {n: HostProject(h, self.project, self.root) for n, h in self.hosts.items()}
        self.data: Dict[str, str] = {}
        self._exit = contextlib.ExitStack()

    def __enter__(self) -> Detaching:
        try:
            self._exit.enter_context(master_lock(self.project, self.lock_wait))
            self._exit.callback(self._unlock_hosts)
            failed = lock_in_order(self.remote, self.lock_wait)
            if failed:
                raise StackError(
                    "project %s: cannot lock it on %s"
                    % (self.project, "; ".join("%s: %s" % (n, e) for n, e in failed.items())),
                    stack=self.project,
                )
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._exit.close()

    def _unlock_hosts(self) -> None:
        each({n: r.unlock for n, r in self.remote.items()})

    def running(
        self, placement: Mapping[str, Sequence[str]], jobs: Sequence[str] = ()
    ) -> Tuple[List[str], List[str]]:
        """(healthy, partial): services whose every recorded process runs on
        every host of ``placement`` (service -> host names; a job: exited 0),
        and those of which something is recorded but not all of it is well.
        A running service is left alone even when its readiness fails now
        (``status`` shows that): ``up -d`` again never kills a live service."""
        found = each({n: r.status for n, r in self.remote.items()})
        healthy, partial = [], []
        for service, hosts in placement.items():
            rows = []
            for h in hosts:
                got = found.get(h)
                if isinstance(got, BaseException):
                    raise StackError(
                        "project %s: cannot read its state on %s: %s" % (self.project, h, got),
                        stack=self.project,
                        host=h,
                    )
                rows.append((got or {}).get(service) or [])
            ok = all(r and all(_well(x, service in jobs) for x in r) for r in rows)
            if ok:
                healthy.append(service)
            elif any(rows):
                partial.append(service)
        return healthy, partial

    def endpoints(self) -> Dict[str, Dict[str, str]]:
        """The endpoints recorded by earlier ups, by service ({} for a new project)."""
        try:
            return dict(load(self.project).get("endpoints") or {})
        except StackError:
            return {}

    def clear(self, services: Sequence[str], placement: Mapping[str, Sequence[str]]) -> None:
        """Stop what is left of ``services`` (identity checked) before they start again."""
        per_host: Dict[str, List[str]] = {}
        for s in services:
            for h in placement[s]:
                per_host.setdefault(h, []).append(s)
        each({h: partial(self.remote[h].stop, s, STOP_TIMEOUT) for h, s in per_host.items()})

    def begin(self) -> None:
        """Every spawn on the hosts is detached from now on (until the end)."""
        self._exit.callback(lambda: each({n: r.end for n, r in self.remote.items()}))
        got = each(
            {n: partial(r.begin, self.log_cap, self.log_keep) for n, r in self.remote.items()}
        )
        for n, reply in got.items():
            if isinstance(reply, BaseException):
                raise reply
            self.data[n] = str(reply["data"])

    def place(self, name: str, service: Any) -> None:
        """A Tarantool service keeps its data in the project (not in the run
        directory, which goes with the master) and logs to its keeper
        (bounded) instead of an ever-growing log file."""
        instances = list(getattr(service, "members", None) or [service])
        for inst in instances:
            if not hasattr(inst, "instance_uuid") or not hasattr(inst, "box_cfg"):
                continue
            host = inst.on.name
            if getattr(inst, "work_dir", None) is None and host in self.data:
                inst.work_dir = "%s/%s-%s" % (self.data[host], name, inst.instance_uuid[:8])
            inst.box_cfg.setdefault("log", None)

    def reaches(self) -> Dict[str, Dict[str, Any]]:
        """How to reach each host again: as the stack file says (hops
        included) when there is one, else from the connections."""
        out = {n: reach(h) for n, h in self.hosts.items()}
        self._hops(out)
        if self.source_file:
            from remoteexec.stack import file as stackfile

            with contextlib.suppress(Exception):  # the file changed since: connections stand
                for name, spec in stackfile.read(self.source_file).hosts.items():
                    if name in out:
                        out[name] = {
                            "target": spec.target,
                            "via": spec.via,
                            "options": spec.options,
                        }
        return out

    def _hops(self, out: Dict[str, Dict[str, Any]]) -> None:
        """Name each connection's hop in ``out`` (``via``), adding the hops
        that are not hosts of the stack (a bastion) under their own names."""
        hosts = dict(self.hosts)
        names = {id(h.context): n for n, h in hosts.items()}
        todo = list(hosts)
        for _ in range(2 * len(hosts) + 16):  # hops of hops, bounded
            if not todo:
                return
            name = todo.pop()
            hop = getattr(hosts[name].context, "via", None)
            if hop is None:
                continue
            if id(hop) not in names:
                host = next((h for h in hosts[name].master.hosts if h.context is hop), None)
                if host is None:
                    continue  # closed since: nothing to record
                alias = host.name if host.name not in out else "hop-%s" % host.name
                hosts[alias], names[id(hop)], out[alias] = host, alias, reach(host)
                todo.append(alias)
            out[name]["via"] = names[id(hop)]

    def record(
        self,
        pids: Mapping[str, Sequence[int]],
        placement: Mapping[str, Sequence[str]],
        deps: Mapping[str, Mapping[str, str]],
        endpoints: Optional[Mapping[str, Mapping[str, str]]] = None,
    ) -> None:
        """Write each host's state (the services started now) and the
        master's, with the started services' ``endpoints``."""
        hash_ = file_hash(self.source_file)
        per_host: Dict[str, Dict[str, Sequence[int]]] = {}
        for s, hosts in placement.items():
            if s in pids:
                for h in hosts:
                    per_host.setdefault(h, {})[s] = pids[s]
        got = each({h: partial(self.remote[h].record, m, hash_) for h, m in per_host.items()})
        bad = {h: e for h, e in got.items() if isinstance(e, BaseException)}
        old: Dict[str, Any] = {}
        with contextlib.suppress(StackError):
            old = load(self.project)
        state = {
            "project": self.project,
            "file": self.source_file,
            "file_hash": hash_,
            "host_state_dir": self.root,
            "hosts": {**old.get("hosts", {}), **self.reaches()},
            "services": {**old.get("services", {}), **{s: list(h) for s, h in placement.items()}},
            "order": graph.order(dict(deps)),
            "deps": {k: dict(v) for k, v in deps.items()},
            "endpoints": {
                **old.get("endpoints", {}),
                **{k: dict(v) for k, v in (endpoints or {}).items()},
            },
            "created": old.get("created") or time.time(),
            "updated": time.time(),
        }
        save(self.project, state)
        if bad:
            raise StackError(
                "project %s: started, but the state could not be written on %s"
                % (self.project, "; ".join("%s: %s" % (h, e) for h, e in bad.items())),
                stack=self.project,
            )


def whole(name: str, value: Any, least: int) -> int:
    """``value`` if it is a whole number >= ``least``; ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError("%s must be a whole number >= %d, got %r" % (name, least, value))
    return value


def _well(row: Mapping[str, Any], job: bool) -> bool:
    if job:
        return row.get("state") == "exited" and row.get("exit_code") == 0
    return row.get("state") == "running"


class DetachedStack:
    """A detached project, attached from any later process
    (:meth:`remoteexec.stack.Stack.attach`): status, logs, restart, down.

    Hosts that cannot be reached are in :attr:`unreachable` (name -> why);
    the calls work on the others and report the rest.
    """

    def __init__(self, name: str, master: Optional[Master] = None) -> None:
        from remoteexec.master import Master as MasterClass

        self.name = check_name(name)
        self.state = load(name)
        self._own_master = master is None
        self.master = MasterClass() if master is None else master
        try:
            self.hosts, self.unreachable = connect(self.master, self.state["hosts"])
        except BaseException:
            self.close()
            raise
        root = self.state.get("host_state_dir")
        self.remote = {n: HostProject(h, name, root) for n, h in self.hosts.items()}

    def __repr__(self) -> str:
        return "<DetachedStack %s: %d hosts>" % (self.name, len(self.state["hosts"]))

    def __enter__(self) -> DetachedStack:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections (the master too, if attach made it); the services run on."""
        if self._own_master:
            self.master.close()

    @property
    def services(self) -> List[str]:
        """The recorded services in start order."""
        order = [s for s in self.state.get("order", []) if s in self.state["services"]]
        return order + [s for s in self.state["services"] if s not in order]

    def _hosts_of(self, names: Sequence[str]) -> Dict[str, List[str]]:
        per_host: Dict[str, List[str]] = {}
        for s in names:
            for h in self.state["services"].get(s, []):
                per_host.setdefault(h, []).append(s)
        return per_host

    def _expand(self, service: str) -> List[str]:
        found = [s for s in self.services if s == service or s.rsplit(".", 1)[0] == service]
        if not found:
            raise ValueError(
                "project %s has no service %r (services: %s)"
                % (self.name, service, ", ".join(self.services) or "none")
            )
        return found

    def status(self, lines: int = 20) -> List[Dict[str, Any]]:
        """One row per service and host: service, host, pid (the service's
        main process), keeper_pid (the keeper that leads its session and
        writes its log), state (running, restarting, exited, lost, unreachable,
        missing), exit_code, restarts (by its keeper), readiness (re-checked),
        uptime, command, log (its path on
        the host), and output_tail, the log's end, for what does not run;
        ``message`` says why a host is unreachable."""
        found = each({n: partial(r.status, lines) for n, r in self.remote.items()})
        rows = []
        for service in self.services:
            for host in self.state["services"][service]:
                base = {"service": service, "host": host}
                got = found.get(host)
                if host in self.unreachable or isinstance(got, BaseException) or got is None:
                    why = self.unreachable.get(host) or str(got)
                    rows.append({**base, "state": "unreachable", "message": why})
                    continue
                procs = got.get(service) or []
                if not procs:
                    rows.append({**base, "state": "missing", "pid": None})
                for p in procs:
                    rows.append({**base, **p})
        return rows

    def logs(self, service: Optional[str] = None, lines: int = 50) -> List[Tuple[str, str, str]]:
        """The last ``lines`` lines of each log: [(service, host, text)]."""
        if service is not None:
            self._expand(service)
        found = each({n: partial(r.read_logs, service, {}, lines) for n, r in self.remote.items()})
        out = []
        for host, got in found.items():
            if isinstance(got, BaseException):
                continue
            out += [(str(c[0]), host, str(c[2])) for c in got["chunks"]]
        return out

    def follow(
        self,
        on_line: Callable[[str, str, str], None],
        service: Optional[str] = None,
        lines: int = 10,
        stop: Optional[threading.Event] = None,
        poll: float = 0.3,
    ) -> None:
        """Call ``on_line(service, host, line)`` for the last ``lines`` lines
        and every new one, on every host, until ``stop`` is set."""
        if service is not None:
            self._expand(service)
        stop = stop or threading.Event()
        offsets: Dict[str, Dict[str, int]] = {n: {} for n in self.remote}
        # Until stopped (Ctrl-C); bounded all the same (years of polls).
        for _ in range(10**9):
            if stop.is_set():
                return
            found = each(
                {
                    n: partial(r.read_logs, service, offsets[n], lines)
                    for n, r in self.remote.items()
                }
            )
            for host, got in found.items():
                if isinstance(got, BaseException):
                    continue
                offsets[host] = dict(got["offsets"])
                for name, _, text in got["chunks"]:
                    for line in str(text).splitlines():
                        on_line(str(name), host, line)
            stop.wait(poll)

    def restart(self, service: str) -> Dict[str, float]:
        """Stop ``service`` (identity checked) and start it again from the stack file."""
        names = self._expand(service)
        if not self.state.get("file"):
            raise StackError(
                "project %s was not started from a stack file: restart needs one" % self.name,
                stack=self.name,
            )
        self._need_all(self._hosts_of(names))
        with master_lock(self.name):
            each(
                {
                    h: partial(self.remote[h].stop, s, STOP_TIMEOUT)
                    for h, s in self._hosts_of(names).items()
                }
            )
        from remoteexec.stack.runner import Stack

        stack = Stack.from_file(self.state["file"], hosts=self.hosts)
        return stack.up(
            detach=True,
            project=self.name,
            host_state_dir=self.state.get("host_state_dir"),
            only=names,
        )

    def _need_all(self, per_host: Mapping[str, Any]) -> None:
        missing = [h for h in per_host if h not in self.remote]
        if missing:
            raise StackError(
                "project %s: host(s) unreachable: %s"
                % (self.name, "; ".join("%s: %s" % (h, self.unreachable.get(h)) for h in missing)),
                stack=self.name,
            )

    def down(self, force: bool = False, timeout: float = STOP_TIMEOUT) -> Dict[str, Any]:
        """Stop every service, dependents first (each wave's services in
        parallel, each stop bounded by ``timeout``), then remove the state.

        Idempotent. Unreachable hosts are reported (StackError, the state of
        the others removed); with ``force`` they are forgotten. Returns
        ``{"stopped", "escalated", "not_ours", "unreachable"}``.
        """
        report: Dict[str, Any] = {
            "stopped": [],
            "escalated": [],
            "not_ours": [],
            "unreachable": dict(self.unreachable),
        }
        deps = {s: dict(self.state.get("deps", {}).get(s, {})) for s in self.services}
        deps = {s: {d: c for d, c in v.items() if d in deps} for s, v in deps.items()}
        with master_lock(self.name):
            busy = lock_in_order(self.remote, LOCK_WAIT)
            try:
                if busy:
                    raise StackError(
                        "project %s: down: cannot lock it on %s"
                        % (self.name, "; ".join("%s: %s" % item for item in busy.items())),
                        stack=self.name,
                    )
                for wave in reversed(graph.waves(deps)):
                    self._stop_wave(wave, timeout, report)
                each({n: partial(r.stop, None, timeout) for n, r in self.remote.items()})
            finally:
                each({n: r.unlock for n, r in self.remote.items()})
            if self.unreachable and not force:
                self.state["hosts"] = {
                    h: v for h, v in self.state["hosts"].items() if h in self.unreachable
                }
                self.state["services"] = {
                    s: [h for h in hs if h in self.unreachable]
                    for s, hs in self.state["services"].items()
                    if any(h in self.unreachable for h in hs)
                }
                save(self.name, self.state)
                raise StackError(
                    "project %s: down: unreachable host(s), their services may still run: %s"
                    " (down --force forgets them)"
                    % (
                        self.name,
                        "; ".join("%s: %s" % (h, w) for h, w in self.unreachable.items()),
                    ),
                    stack=self.name,
                    stopped=report["stopped"],
                )
            forget(self.name)
        return report

    def _stop_wave(self, wave: Sequence[str], timeout: float, report: Dict[str, Any]) -> None:
        per_host = {h: s for h, s in self._hosts_of(wave).items() if h in self.remote}
        got = each({h: partial(self.remote[h].stop, s, timeout) for h, s in per_host.items()})
        for host, reply in sorted(got.items()):
            if isinstance(reply, BaseException):
                report["unreachable"][host] = str(reply)
                continue
            report["stopped"] += ["%s@%s" % (s, host) for s in reply["stopped"]]
            report["escalated"] += ["%s@%s" % (s, host) for s in reply["escalated"]]
            report["not_ours"] += ["%s@%s" % (s, host) for s in reply["not_ours"]]


def attach(name: str, master: Optional[Master] = None) -> DetachedStack:
    """Project ``name``, as :meth:`remoteexec.stack.Stack.attach` returns it."""
    return DetachedStack(name, master)
