"""Stack: services started in dependency order, health-gated, stopped in reverse.

See :mod:`remoteexec.stack` for the API as users see it. Each start and
each stop runs on its own thread; one scheduler loop (the caller's thread)
launches whatever has its dependencies met and collects the outcomes, so
independent services start at once, on one host or across hosts.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    Collection,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

from remoteexec import arguments
from remoteexec.errors import RemoteExecError
from remoteexec.services import deferred_in
from remoteexec.stack import adapt, graph
from remoteexec.stack.error import StackError
from remoteexec.stack.events import Callback, StackEvent, Subscribers
from remoteexec.stack.refs import Ref, refs_in

#: How often the scheduler, the stop loop and the exit watcher look again.
POLL = 0.2
#: How often a job's exit, or a start's "started" state, is looked at (doubling up to POLL).
FIRST_POLL = 0.01
#: A job waits this long to complete unless ``add(timeout=)`` says otherwise.
JOB_TIMEOUT = 3600.0
#: How long a kill() after a stop that overran its bound may take.
KILL_TIMEOUT = 10.0
#: How much output a failure message carries.
TAIL_LINES = 50
RESTART_POLICIES = ("no", "on-failure")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")

#: What satisfies a condition, by the state the dependency is in.
_MEETS = {
    "started": ("started", "ready", "completed"),
    "healthy": ("ready", "completed"),
    "completed": ("completed",),
}
#: States of a service that has (had) processes the stack must stop.
_LIVE = ("starting", "started", "ready", "completed", "failed", "exited")


class Handle:
    """What :meth:`Stack.add` returns: a service (or a group of them) in a stack.

    Use it in ``depends_on`` and for references: ``handle.ref("uri")``.
    A group (``add(factory, on=[a, b, c])``) has ``members``; a reference
    to a group's endpoint resolves to the members' values joined by commas.
    """

    def __init__(
        self, stack: Stack, name: str, service: Any = None, members: Sequence[Handle] = ()
    ) -> None:
        self.stack = stack
        self.name = name
        #: The service (None for a group).
        self.service = service
        #: The group's members, named ``<name>.1``, ``<name>.2``... (empty for one service).
        self.members: List[Handle] = list(members)
        #: Endpoints an earlier detached ``up`` recorded, for a service it
        #: left running (this process never started it, so it cannot know
        #: a port that was picked at its start).
        self.recorded: Dict[str, str] = {}

    def __repr__(self) -> str:
        if self.members:
            return "<Handle %s: group of %d in stack %s>" % (
                self.name,
                len(self.members),
                self.stack.name,
            )
        return "<Handle %s in stack %s>" % (self.name, self.stack.name)

    def ref(self, key: str) -> Ref:
        """``${name.key}``: the endpoint ``key`` of this service, resolved at start.

        ValueError now if the service has no such endpoint.
        """
        if not isinstance(key, str) or not key:
            raise ValueError("ref() needs an endpoint name, got %r" % (key,))
        return Ref("%s.%s" % (self.name, key), self.stack, target=self)

    def endpoint_names(self) -> Collection[str]:
        """The names ``ref()`` accepts: the service's endpoints (a group: its members')."""
        if self.members:
            return self.members[0].endpoint_names()
        return list(self.service.endpoints)

    def endpoint(self, key: str) -> Optional[str]:
        """The endpoint's value now (a group: the members' values joined by commas);
        None until known."""
        if self.members:
            values = [m.endpoint(key) for m in self.members]
            return None if any(v is None for v in values) else ",".join(map(str, values))
        if key in self.recorded:
            return self.recorded[key]
        value = self.service.endpoints.get(key)
        return None if value is None else str(value)

    def endpoint_values(self) -> Dict[str, str]:
        """Every endpoint known now, by name (what a detached up records)."""
        values = {k: self.endpoint(k) for k in self.endpoint_names()}
        return {k: v for k, v in values.items() if v is not None}

    @property
    def hosts(self) -> List[str]:
        """The names of the hosts it runs on."""
        if self.members:
            return [h for m in self.members for h in m.hosts]
        return [h.name for h in self.service.hosts]


def _came_up(thread: threading.Thread, within: float = 1.0) -> bool:
    """Whether ``thread`` runs (or ran), after a start() that was interrupted."""
    deadline = time.monotonic() + within
    while thread.ident is None and time.monotonic() < deadline:
        time.sleep(0.005)
    return thread.ident is not None


#: What the stack reads of a service: the :class:`~remoteexec.services.Service` interface.
SERVICE_INTERFACE = (
    "name",
    "hosts",
    "start",
    "stop",
    "kill",
    "running",
    "status",
    "log_tail",
    "endpoints",
    "inputs",
    "artifacts",
)


@dataclass
class _Entry:
    """One service of the stack and what the stack knows of it."""

    handle: Handle
    declared: Dict[str, Optional[str]]
    job: bool
    restart: str
    max_restarts: int
    backoff: float
    timeout: float
    group: Optional[str] = None
    state: str = "pending"
    since: float = 0.0
    restarts: int = 0
    supervised: bool = False
    exit_code: Optional[int] = None
    t0: float = 0.0
    stop_deadline: float = 0.0
    ended: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return self.handle.name

    @property
    def service(self) -> Any:
        return self.handle.service

    @property
    def host(self) -> str:
        return ",".join(self.handle.hosts)


@dataclass
class _Run:
    """The state of one start (up or restart) or one stop pass."""

    inflight: Set[str] = field(default_factory=set)
    timings: Dict[str, float] = field(default_factory=dict)
    failure: List[Tuple[str, BaseException]] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    stopped: List[str] = field(default_factory=list)
    #: A KeyboardInterrupt (or other BaseException) that came while waiting.
    interrupted: Optional[BaseException] = None


class Stack:
    """Services (executors, Tarantool instances, replica sets) started as one.

    :param name: the stack's name, for messages.
    :param stop_timeout: the bound of each service's stop in ``down()`` and
        rollbacks: past it the service is killed and the overrun reported.
    :param poll: how often exits of running services are looked for.
    """

    def __init__(self, name: str, *, stop_timeout: float = 60.0, poll: float = POLL) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError("a stack needs a name, got %r" % (name,))
        self.name = name
        self.stop_timeout = float(arguments.seconds("stop_timeout", stop_timeout))
        self.poll = float(arguments.seconds("poll", poll))
        self._entries: Dict[str, _Entry] = {}
        self._handles: Dict[str, Handle] = {}
        self._events = Subscribers()
        self._cond = threading.Condition(threading.RLock())
        self._up = False
        self._starting = False
        self._watcher: Optional[threading.Thread] = None
        self._unwatched = threading.Event()
        self._exits: List[Tuple[str, BaseException]] = []
        #: The stack file it was loaded from (``from_file``), for detached projects.
        self.source_file: Optional[str] = None
        #: The detached project ``up(detach=True)`` made (``down()`` takes it down).
        self.project: Optional[str] = None

    def __repr__(self) -> str:
        return "<Stack %s: %d services, %s>" % (
            self.name,
            len(self._entries),
            "up" if self._up else "down",
        )

    # -- building ---------------------------------------------------------

    def add(
        self,
        service: Any,
        name: Optional[str] = None,
        depends_on: Union[Sequence[Any], Mapping[Any, str], None] = None,
        job: bool = False,
        restart: str = "no",
        max_restarts: int = 3,
        restart_backoff: float = 1.0,
        *,
        on: Any = None,
        timeout: Optional[float] = None,
    ) -> Handle:
        """Add a service; returns its handle (for ``depends_on`` and ``ref()``).

        ``depends_on``: handles or names (each waited for ``"healthy"``, a
        job ``"completed"``), or a dict handle/name → ``"started"``,
        ``"healthy"`` or ``"completed"``. References in the service's
        inputs are dependencies too (``"healthy"``) unless declared.
        ``job=True``: a one-shot command that must exit 0 (within
        ``timeout``, default an hour). ``restart="on-failure"`` restarts a
        service that exits non-zero after it was ready, at most
        ``max_restarts`` times: an executor's host supervisor does it, next to
        the process, ``restart_backoff`` seconds after the first exit and
        doubling (up to 30 s); a service without ``set_restart`` is restarted
        by the stack, ``restart_backoff`` seconds apart.
        ``on=[a, b, c]`` with ``service`` a callable(host) → service: one
        instance per host, named ``<name>.1``...; the handle is the group
        (``on=host``, not a list: the one service it makes).
        Bad arguments are a ValueError/TypeError naming them, now.
        """
        if self._up:
            raise ValueError("stack %s is up: add services before up()" % self.name)
        if restart not in RESTART_POLICIES:
            raise ValueError(
                "restart must be one of %s, got %r" % (", ".join(RESTART_POLICIES), restart)
            )
        if job and restart != "no":
            raise ValueError("a job runs once: restart=%r needs job=False" % restart)
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise ValueError("max_restarts must be a whole number >= 0, got %r" % (max_restarts,))
        backoff = arguments.seconds("restart_backoff", restart_backoff, allow_zero=True)
        limit = arguments.seconds("timeout", JOB_TIMEOUT if timeout is None else timeout)
        declared = self._declared(depends_on)
        options = dict(
            declared=declared,
            job=bool(job),
            restart=restart,
            max_restarts=max_restarts,
            backoff=float(backoff),
            timeout=float(limit),
        )
        if on is None:
            handle = Handle(self, self._new_name(name, service), self._checked(service, name))
            self._register(handle, options)
            return handle
        return self._add_group(service, name, on, options)

    def _add_group(self, factory: Any, name: Optional[str], on: Any, options: Any) -> Handle:
        if not callable(factory) or hasattr(factory, "start"):
            raise TypeError(
                "with on=, the service must be a callable(host) -> service (a factory),"
                " got %r" % (factory,)
            )
        if not isinstance(on, (list, tuple)):  # one host: one service, no group
            built = factory(on)
            handle = Handle(self, self._new_name(name, built), self._checked(built, name))
            self._register(handle, options)
            return handle
        hosts = list(on)
        if not hosts:
            raise ValueError("on= must name at least one host")
        if name is None:
            raise ValueError("a service on several hosts (on=[...]) needs name=")
        group = self._new_name(name, None)
        members = []
        for i, host in enumerate(hosts, 1):
            member_name = "%s.%d" % (group, i)
            service = self._checked(factory(host), member_name)
            members.append(Handle(self, member_name, service))
        for member in members:
            self._register(member, options, group=group)
        handle = Handle(self, group, None, members)
        self._handles[group] = handle
        return handle

    def _new_name(self, name: Optional[str], service: Any) -> str:
        if name is None:
            name = getattr(service, "name", None)
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise ValueError(
                    "%r has no usable name (%r): give add() a name= (letters, digits, _ and -)"
                    % (service, name)
                )
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(
                "service name %r: use letters, digits, '_' and '-' (no dots: 'api.1' names"
                " the members of a group)" % (name,)
            )
        if name in self._handles:
            raise ValueError("stack %s already has a service named %r" % (self.name, name))
        return name

    def _checked(self, service: Any, name: Optional[str]) -> Any:
        has = set(dir(service))  # dir(): no property is evaluated
        missing = [m for m in SERVICE_INTERFACE if m not in has]
        if missing:
            raise TypeError(
                "service %s: %r is not a Service (remoteexec.services): it has no %s"
                % (name, service, ", ".join(missing))
            )
        if any(e.service is service for e in self._entries.values()):
            raise ValueError("%r is in stack %s already" % (service, self.name))
        return service

    def _declared(self, depends_on: Any) -> Dict[str, Optional[str]]:
        if depends_on is None:
            return {}
        if isinstance(depends_on, (str, Handle)):
            depends_on = [depends_on]
        if isinstance(depends_on, Mapping):
            items = list(depends_on.items())
        elif isinstance(depends_on, (list, tuple)):
            items = [(d, None) for d in depends_on]
        else:
            raise TypeError(
                "depends_on must be a list of handles/names or a dict of them to conditions,"
                " got %s" % type(depends_on).__name__
            )
        out: Dict[str, Optional[str]] = {}
        for dep, condition in items:
            if isinstance(dep, Handle):
                if dep.stack is not self:
                    raise ValueError("depends_on: %r belongs to another stack" % (dep,))
                dep = dep.name
            if not isinstance(dep, str):
                raise TypeError("depends_on: %r is neither a handle nor a name" % (dep,))
            if condition is not None and condition not in graph.CONDITIONS:
                raise ValueError(
                    "depends_on %s: condition %r is not one of %s"
                    % (dep, condition, ", ".join(graph.CONDITIONS))
                )
            out[dep] = condition
        return out

    def _register(self, handle: Handle, options: Any, group: Optional[str] = None) -> None:
        # References by name are checked by up() (or validate()): the service
        # they name may be added later.
        entry = _Entry(handle=handle, group=group, **options)
        self._entries[handle.name] = entry
        self._handles[handle.name] = handle

    # -- names and the graph ----------------------------------------------

    def get(self, name: str) -> Optional[Handle]:
        """The handle of service or group ``name``, None if there is none."""
        return self._handles.get(name)

    def __getitem__(self, name: str) -> Handle:
        handle = self._handles.get(name)
        if handle is None:
            raise KeyError("stack %s has no service %r" % (self.name, name))
        return handle

    def __contains__(self, name: object) -> bool:
        return name in self._handles

    @property
    def services(self) -> List[str]:
        """The names of the services, in the order added (groups as their members)."""
        return list(self._entries)

    def ref(self, path: str) -> Ref:
        """A reference by name, ``"router.uri"``; checked when the stack is."""
        return Ref(path, self)

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        """Call ``callback(event)`` for each :class:`StackEvent`; returns the unsubscribe."""
        return self._events.subscribe(callback)

    def _expand(self, name: str, where: str) -> List[str]:
        handle = self._handles.get(name)
        if handle is None:
            raise ValueError(
                "%s: no service named %r in stack %s (services: %s)"
                % (where, name, self.name, ", ".join(self._handles) or "none")
            )
        return [m.name for m in handle.members] if handle.members else [name]

    def dependencies(self) -> Dict[str, Dict[str, str]]:
        """Service → {dependency: condition}, declared and implied by references,
        groups expanded to their members; ValueError if the stack cannot start
        (unknown dependency or reference, a cycle, ``completed`` on a non-job)."""
        out: Dict[str, Dict[str, str]] = {}
        for name, entry in self._entries.items():
            deps: Dict[str, str] = {}
            for dep, condition in entry.declared.items():
                for member in self._expand(dep, "service %r depends_on" % name):
                    deps[member] = condition or self._default(member)
            for ref in refs_in(deferred_in(list(entry.service.inputs()))):
                target = ref.bind()[0].name
                for member in self._expand(target, "service %r: %r" % (name, ref)):
                    if member == name or self._entries[member].group == name:
                        raise ValueError("service %r refers to its own endpoint: %r" % (name, ref))
                    deps.setdefault(member, self._default(member))
            out[name] = deps
        graph.check(out, [n for n, e in self._entries.items() if e.job])
        return out

    def _default(self, name: str) -> str:
        return "completed" if self._entries[name].job else "healthy"

    def validate(self) -> None:
        """Every check ``up()`` makes before anything starts; ValueError naming the problem."""
        self.dependencies()

    def waves(self) -> List[List[str]]:
        """The start order in waves (what ``config`` prints)."""
        return graph.waves(self.dependencies())

    # -- events -----------------------------------------------------------

    def _emit(self, kind: str, entry: _Entry, **fields: Any) -> None:
        self._events.emit(
            StackEvent(
                kind=kind,
                service=entry.name,
                host=entry.host,
                time=time.time(),
                job=entry.job,
                **fields,
            )
        )

    def _set(self, entry: _Entry, state: str) -> None:
        with self._cond:
            entry.state = state
            entry.since = time.time()
            self._cond.notify_all()

    # -- up ---------------------------------------------------------------

    def up(
        self,
        detach: bool = False,
        *,
        project: Optional[str] = None,
        host_state_dir: Optional[str] = None,
        log_cap: int = 10 * 1024 * 1024,
        log_keep: int = 3,
        only: Optional[Sequence[str]] = None,
    ) -> Dict[str, float]:
        """Start every service, each once its dependencies are met; return
        {service: seconds from its start to ready (a job: to its exit)}.

        ValueError before anything starts if the stack cannot start. On the
        first failure nothing new starts, what started is stopped in
        reverse dependency order, and StackError says which service failed,
        where, how far it got, and what was started, stopped, never started.

        ``detach=True``: the services outlive this process (see
        :mod:`remoteexec.stack.project`) as project ``project`` (default:
        the stack's name); services of the project that run already are left
        alone, the others started. ``host_state_dir`` replaces the hosts'
        ``$XDG_STATE_HOME``; each service's log is rotated at ``log_cap``
        bytes, ``log_keep`` old ones kept; ``only`` limits the start to
        those services (``restart``).
        """
        if detach:
            return self._up_detached(project or self.name, host_state_dir, log_cap, log_keep, only)
        deps = self.dependencies()
        with self._cond:
            if self._up or self._starting:
                raise StackError(
                    "stack %s is up already: down() first" % self.name, stack=self.name
                )
            self._starting = True
            for entry in self._entries.values():
                entry.state, entry.restarts, entry.exit_code = "pending", 0, None
            self._exits = []
        try:
            self._hand_restart_policies()
            self._start_watcher()
            timings = self._start(deps, list(deps))
            with self._cond:
                self._up = True
            return timings
        except BaseException:
            self._stop_watcher()
            raise
        finally:
            with self._cond:
                self._starting = False

    def _hand_restart_policies(self) -> None:
        """Give each service its restart policy, for its host to apply."""
        for entry in self._entries.values():
            if entry.restart != "no":
                entry.supervised = adapt.restart_policy(
                    entry.service, entry.restart, entry.max_restarts, entry.backoff
                )

    def _up_detached(
        self,
        project: str,
        host_state_dir: Optional[str],
        log_cap: int,
        log_keep: int,
        only: Optional[Sequence[str]],
    ) -> Dict[str, float]:
        """up(detach=True): under the project's locks, start what does not run yet."""
        from remoteexec.stack.project import Detaching

        deps = self.dependencies()
        placement = {n: e.handle.hosts for n, e in self._entries.items()}
        hosts = {h.name: h for e in self._entries.values() for h in e.service.hosts}
        jobs = [n for n, e in self._entries.items() if e.job]
        with Detaching(
            project,
            hosts,
            host_state_dir=host_state_dir,
            source_file=self.source_file,
            log_cap=log_cap,
            log_keep=log_keep,
        ) as detaching:
            healthy, partial = detaching.running(placement, jobs)
            missing = [n for n in graph.order(deps) if n not in healthy]
            if only is not None:
                missing = [n for n in missing if n in only]
            detaching.clear([n for n in missing if n in partial], placement)
            recorded = detaching.endpoints()
            for name, entry in self._entries.items():
                entry.handle.recorded = dict(recorded.get(name, {})) if name in healthy else {}
            with self._cond:
                for name, entry in self._entries.items():
                    entry.state = "completed" if name in healthy and entry.job else "pending"
                    if name in healthy and not entry.job:
                        entry.state = "ready"
                self._exits = []
            detaching.begin()
            # Executors' policies go to their keepers, which restart them
            # for as long as they live, with or without a master.
            self._hand_restart_policies()
            for name in missing:
                detaching.place(name, self._entries[name].service)
            timings = self._start(deps, missing)
            pids = {n: self._pids_of(self._entries[n]) for n in missing}
            endpoints = {n: self._entries[n].handle.endpoint_values() for n in missing}
            detaching.record(pids, placement, deps, endpoints)
        self.project = project
        return timings

    @staticmethod
    def _pids_of(entry: _Entry) -> List[int]:
        """The service's pids now; a finished job's, by its ``pid`` (it runs no more)."""
        pids = adapt.pids(entry.service.status())
        pid = getattr(entry.service, "pid", None)
        return pids or ([int(pid)] if entry.job and isinstance(pid, int) else [])

    def _start(self, deps: Mapping[str, Mapping[str, str]], names: List[str]) -> Dict[str, float]:
        """Start ``names`` (dependencies outside them are taken as met); roll back on failure."""
        part = graph.subgraph(deps, names)
        waiting_started = {d for n in part for d, c in part[n].items() if c == "started"}
        run = _Run()
        bound = sum(self._entries[n].timeout for n in part) + 60.0
        give_up = time.monotonic() + bound
        with self._cond:
            for _ in range(int(bound / self.poll) + 4 * len(part) + 10):
                try:
                    if not run.failure and self._exits:
                        run.failure.append(self._exits[0])
                    if run.interrupted is not None and not run.failure:
                        run.failure.append(("", run.interrupted))
                    if not run.failure:
                        for name in graph.order(part):
                            entry = self._entries[name]
                            if entry.state == "pending" and self._met(part[name]):
                                self._launch(entry, run, name in waiting_started)
                    pending = [n for n in part if self._entries[n].state == "pending"]
                    if not run.inflight and (run.failure or not pending):
                        break
                    if time.monotonic() > give_up:
                        error = RemoteExecError("the start took over %gs" % bound)
                        run.failure.append(("", error))
                        break
                except BaseException as e:  # Ctrl-C between two waits: as in _wait()
                    if run.interrupted is None:
                        run.interrupted = e
                    continue
                self._wait(run)
        if run.interrupted is not None and run.failure[0][1] is not run.interrupted:
            run.failure.insert(0, ("", run.interrupted))
        if run.failure:
            self._fail(part, run)
        return run.timings

    def _met(self, deps: Mapping[str, str]) -> bool:
        return all(self._entries[d].state in _MEETS[c] for d, c in deps.items())

    def _launch(self, entry: _Entry, run: _Run, probe_started: bool) -> None:
        entry.state, entry.since, entry.t0 = "starting", time.time(), time.monotonic()
        run.inflight.add(entry.name)
        thread = threading.Thread(
            target=self._start_one,
            args=(entry, run, probe_started),
            name="stack-start-%s" % entry.name,
            daemon=True,
        )
        try:
            thread.start()
        except BaseException:
            # Ctrl-C inside start(): the start runs (and ends) if the thread
            # came up; if it never did, nothing started.
            if not _came_up(thread):
                run.inflight.discard(entry.name)
                entry.state = "pending"
            raise

    def _start_one(self, entry: _Entry, run: _Run, probe_started: bool) -> None:
        self._emit("starting", entry)
        try:
            if probe_started:
                self._start_probing(entry)
            else:
                entry.service.start()
            # Each event is emitted before the state it announces is set, so
            # a dependent's "starting" always comes after it.
            if entry.job:
                self._set(entry, "ready")
                self._wait_job(entry)
                seconds = time.monotonic() - entry.t0
                self._emit("exited", entry, seconds=seconds, exit_code=0, final=True)
                self._set(entry, "completed")
            else:
                seconds = time.monotonic() - entry.t0
                self._emit("ready", entry, seconds=seconds)
                self._set(entry, "ready")
            with self._cond:
                run.timings[entry.name] = seconds
        except BaseException as e:
            with self._cond:
                run.failure.append((entry.name, e))  # from now on, nothing new starts
            self._emit(
                "failed",
                entry,
                seconds=time.monotonic() - entry.t0,
                layer=adapt.layer(entry.service, e),
                message=arguments.bounded(str(getattr(e, "message", e)), 2000),
                output_tail=self._tail(entry, e) or None,
                exit_code=getattr(e, "exit_code", None),
            )
            self._set(entry, "failed")
        finally:
            with self._cond:
                run.inflight.discard(entry.name)
                self._cond.notify_all()

    def _start_probing(self, entry: _Entry) -> None:
        """start(), marking the service "started" as soon as its process runs
        (for dependents that wait for "started" only)."""
        done = threading.Event()
        outcome: List[BaseException] = []

        def start() -> None:
            try:
                entry.service.start()
            except BaseException as e:
                outcome.append(e)
            finally:
                done.set()

        threading.Thread(target=start, name="stack-probe-%s" % entry.name, daemon=True).start()
        wait = FIRST_POLL
        for _ in range(int(entry.timeout / FIRST_POLL) + 10):
            if done.wait(wait):
                break
            wait = min(wait * 2, self.poll)
            if entry.state == "starting":
                try:
                    got = entry.service.status()
                except RemoteExecError:
                    continue
                if adapt.process_runs(got):
                    self._set(entry, "started")
        done.wait()
        if outcome:
            raise outcome[0]

    def _wait_job(self, entry: _Entry) -> None:
        deadline = entry.t0 + entry.timeout
        wait = FIRST_POLL
        for _ in range(int(entry.timeout / FIRST_POLL) + 10):
            info = adapt.exit_info(entry.service)
            if not info["running"]:
                entry.exit_code = info["exit_code"]
                if entry.exit_code not in (0, None):
                    raise RemoteExecError(
                        "job %s exited with code %s" % (entry.name, entry.exit_code),
                        host=entry.host,
                        exit_code=entry.exit_code,
                        output_tail=adapt.log_tail(entry.service, TAIL_LINES),
                    )
                return
            if time.monotonic() > deadline:
                break
            time.sleep(wait)
            wait = min(wait * 2, self.poll)
        entry.service.kill()
        raise RemoteExecError(
            "job %s did not complete within %gs; killed" % (entry.name, entry.timeout),
            host=entry.host,
            output_tail=adapt.log_tail(entry.service, TAIL_LINES),
        )

    def _tail(self, entry: _Entry, error: Optional[BaseException]) -> str:
        if isinstance(error, RemoteExecError) and error.output_tail:
            return str(error.output_tail)
        return adapt.log_tail(entry.service, TAIL_LINES)

    def _fail(self, part: Mapping[str, Mapping[str, str]], run: _Run) -> None:
        """Roll back a failed start: stop what started, then raise StackError."""
        name, error = run.failure[0]
        started = [n for n in graph.order(part) if self._entries[n].state in _LIVE]
        stop = self._stop(part, started)
        if not isinstance(error, Exception):
            raise error  # Ctrl-C: what started is stopped, the interrupt goes on
        never = [n for n in graph.order(part) if self._entries[n].state == "pending"]
        entry = self._entries.get(name)
        if entry is None:
            raise StackError(
                "stack %s: %s" % (self.name, error), stack=self.name, errors=stop.errors
            ) from error
        ok = [n for n in started if n != name]
        layer = adapt.layer(entry.service, error)
        message = (
            "stack %s: service %s failed%s: %s\nstarted: %s; stopped: %s; never started: %s"
            % (
                self.name,
                name,
                " (readiness reached: %s)" % layer if layer != adapt.NO_LAYER else "",
                arguments.bounded(str(getattr(error, "message", error)), 2000),
                ", ".join(ok) or "none",
                ", ".join(stop.stopped) or "none",
                ", ".join(never) or "none",
            )
        )
        if stop.errors:
            message += "\nstop errors: " + "; ".join(stop.errors)
        raise StackError(
            message,
            host=entry.host,
            output_tail=self._tail(entry, error) or None,
            exit_code=getattr(error, "exit_code", None),
            stack=self.name,
            service=name,
            layer=layer,
            started=ok,
            stopped=stop.stopped,
            never_started=never,
            errors=stop.errors,
        ) from error

    # -- down -------------------------------------------------------------

    def down(self) -> Dict[str, float]:
        """Stop every service, dependents first, independent ones in parallel;
        each stop bounded (``stop_timeout``, then kill). Every failure is
        collected and raised together as one StackError, after all were
        tried. Idempotent: {} when nothing runs. Returns {service: seconds}.

        After ``up(detach=True)``: the detached project is taken down
        (:meth:`DetachedStack.down <remoteexec.stack.project.DetachedStack.down>`).
        """
        if self.project is not None:
            return self._down_detached(self.project)
        self._stop_watcher()
        deps = self.dependencies()
        live = [n for n in graph.order(deps) if self._entries[n].state in _LIVE]
        with self._cond:
            self._up = False
        if not live:
            return {}
        run = self._stop(deps, live)
        if run.interrupted is not None:
            raise run.interrupted
        if run.errors:
            raise StackError(
                "stack %s: down: %d of %d services failed to stop:\n%s"
                % (self.name, len(run.errors), len(live), "\n".join(run.errors)),
                stack=self.name,
                stopped=run.stopped,
                errors=run.errors,
            )
        return run.timings

    def _down_detached(self, project: str) -> Dict[str, float]:
        from remoteexec.stack.project import attach

        t0 = time.monotonic()
        hosts = [h for e in self._entries.values() for h in e.service.hosts]
        with attach(project, hosts[0].master if hosts else None) as detached:
            detached.down()
        with self._cond:
            for entry in self._entries.values():
                entry.state = "stopped"
        self.project = None
        return {project: time.monotonic() - t0}

    def _stop(self, deps: Mapping[str, Mapping[str, str]], names: List[str]) -> _Run:
        """Stop ``names``: each once its dependents among them have stopped."""
        above = graph.dependents(graph.subgraph(deps, names))
        remaining = [n for n in reversed(graph.order(deps)) if n in names]
        run = _Run()
        bound = (self.stop_timeout + KILL_TIMEOUT) * (len(names) + 1)
        give_up = time.monotonic() + bound
        with self._cond:
            for _ in range(int(bound / self.poll) + 4 * len(names) + 10):
                busy = set(remaining) | run.inflight
                for name in list(remaining):
                    if not any(d in busy for d in above.get(name, [])):
                        remaining.remove(name)
                        self._launch_stop(self._entries[name], run)
                for entry, event in self._overran(run):
                    self._emit("stopped", entry, **event)
                if not remaining and not run.inflight:
                    break
                if time.monotonic() > give_up:
                    run.errors.append("stop gave up after %gs: %s" % (bound, ", ".join(busy)))
                    break
                self._wait(run)
        return run

    def _wait(self, run: _Run) -> None:
        """Wait for news from the start or stop threads (the lock held).

        Ctrl-C here is kept, not raised: the loop then starts nothing new
        and waits for what is under way (each bounded), so that what was
        started can be stopped; the caller raises it after that.
        """
        try:
            self._cond.wait(self.poll)
        except BaseException as e:
            if run.interrupted is None:
                run.interrupted = e

    def _launch_stop(self, entry: _Entry, run: _Run) -> None:
        # What has exited already (and was reported) is only cleaned up:
        # kill() reaps what it may have left and drops it, without the exit
        # code check of a stop.
        entry.ended = entry.state in ("completed", "exited", "failed")
        entry.state, entry.since = "stopping", time.time()
        entry.t0, entry.stop_deadline = time.monotonic(), time.monotonic() + self.stop_timeout
        run.inflight.add(entry.name)
        threading.Thread(
            target=self._stop_one, args=(entry, run), name="stack-stop-%s" % entry.name, daemon=True
        ).start()

    def _stop_one(self, entry: _Entry, run: _Run) -> None:
        self._emit("stopping", entry)
        error: Optional[BaseException] = None
        try:
            with entry.lock:  # after a restart from the master under way
                if entry.ended:
                    entry.service.kill()
                else:
                    entry.service.stop()
        except BaseException as e:
            error = e
        with self._cond:
            if entry.name not in run.inflight:
                return  # overran: _overran killed it and reported it
            event = self._finish_stop(entry, run, error, done=False)
        # Emitted before the stop counts as done: the caller of down() has
        # seen every event when it returns.
        self._emit("stopped", entry, **event)
        with self._cond:
            run.inflight.discard(entry.name)
            self._cond.notify_all()

    def _finish_stop(
        self, entry: _Entry, run: _Run, error: Optional[BaseException], done: bool = True
    ) -> Dict[str, Any]:
        """Book a finished stop (the caller holds the lock); the stopped event's
        fields. With ``done=False`` it stays in flight (out of _overran's reach)
        until the caller has emitted the event."""
        seconds = time.monotonic() - entry.t0
        entry.stop_deadline = float("inf")
        if done:
            run.inflight.discard(entry.name)
        if error is not None:
            first = (str(error).splitlines() or [type(error).__name__])[0]
            run.errors.append("%s on %s: %s" % (entry.name, entry.host, first[:500]))
        else:
            run.stopped.append(entry.name)
        run.timings[entry.name] = seconds
        entry.state, entry.since = "stopped", time.time()
        self._cond.notify_all()
        message = None if error is None else arguments.bounded(str(error), 2000)
        return {"seconds": seconds, "message": message}

    def _overran(self, run: _Run) -> List[Tuple[_Entry, Dict[str, Any]]]:
        """Kill (in the background) each stop that outlived ``stop_timeout``;
        book it as failed. Returns the stopped events to emit."""
        now = time.monotonic()
        out = []
        for name in list(run.inflight):
            entry = self._entries[name]
            if now > entry.stop_deadline:
                threading.Thread(
                    target=_quietly,
                    args=(entry.service.kill,),
                    name="stack-kill-%s" % name,
                    daemon=True,
                ).start()
                error = RemoteExecError(
                    "did not stop within %gs (stop_timeout); killed" % self.stop_timeout
                )
                out.append((entry, self._finish_stop(entry, run, error)))
        return out

    # -- watching services that run -----------------------------------------

    def _start_watcher(self) -> None:
        self._unwatched.clear()
        self._watcher = threading.Thread(
            target=self._watch, name="stack-watch-%s" % self.name, daemon=True
        )
        self._watcher.start()

    def _stop_watcher(self) -> None:
        self._unwatched.set()
        watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(self.poll * 10 + 5)

    def _watch(self) -> None:
        """Report a service that exits after it was ready, within ``poll``."""
        # Bounded by count: a stack up for a year at most, then it stops watching.
        for _ in range(int(365 * 86400 / self.poll)):
            with self._cond:
                watched = [
                    e
                    for e in self._entries.values()
                    if not e.job
                    and (e.state == "ready" or (e.supervised and e.state == "restarting"))
                ]
            for entry in watched:
                if self._unwatched.is_set():
                    return
                try:
                    self._look(entry)
                except RemoteExecError:
                    continue  # a lost host: its own errors say so
            if self._unwatched.wait(self.poll):
                return

    def _look(self, entry: _Entry) -> None:
        """One look at a ready service: cheap (``running()``) unless it is down."""
        if not entry.supervised:
            if entry.service.running() or entry.state != "ready":
                return
            got: Dict[str, Any] = dict(entry.service.status())
            if not adapt.restarted_by_host(got, entry.restarts):
                self._exited(entry, got, self._again(entry, got))
                return
            # Its host restarts it (a policy given to the service itself): follow that.
            entry.supervised = True
        self._follow_supervised(entry)

    def _follow_supervised(self, entry: _Entry) -> None:
        """Follow a service its host's supervisor restarts: exits, restarts
        (a restart due, or the count in its status going up), ready again,
        and the final exit (the supervisor gave up)."""
        got: Dict[str, Any] = dict(entry.service.status())
        state, restarts = got.get("state"), int(got.get("restarts") or 0)
        if entry.state == "ready" and adapt.restarted_by_host(got, entry.restarts):
            self._emit("exited", entry, exit_code=got.get("last_exit"), final=False)
            with self._cond:
                entry.state, entry.since = "restarting", time.time()
                entry.restarts = max(restarts, entry.restarts + 1)
            self._emit("restarting", entry, message="restart %d" % entry.restarts)
        elif entry.state == "restarting" and restarts > entry.restarts:
            entry.restarts = restarts  # restarted again before it was ready
            self._emit("restarting", entry, message="restart %d" % restarts)
        if entry.state == "restarting" and state == "ready":
            self._emit("ready", entry)
            self._set(entry, "ready")
        elif state in ("exited", "failed"):
            self._exited(entry, got, again=False)  # the supervisor is done with it

    def _again(self, entry: _Entry, got: Mapping[str, Any]) -> bool:
        """Whether the stack restarts it (its policy, from the master)."""
        return (
            entry.restart == "on-failure"
            and got.get("exit_code") != 0
            and entry.restarts < entry.max_restarts
            and got.get("state") != "failed"
        )

    def _exited(self, entry: _Entry, got: Mapping[str, Any], again: bool) -> None:
        """Report an exit after ready; with ``again``, restart it from here."""
        code = got.get("exit_code")
        tail = adapt.log_tail(entry.service, TAIL_LINES)
        with self._cond:
            if entry.state not in ("ready", "restarting"):
                return  # being stopped or restarted by the stack
            entry.exit_code = code
            entry.state, entry.since = ("restarting" if again else "exited"), time.time()
            if not again and self._starting:
                error = RemoteExecError(
                    "exited with code %s after it was ready" % code,
                    host=entry.host,
                    exit_code=code,
                    output_tail=tail,
                )
                self._exits.append((entry.name, error))
            self._cond.notify_all()
        self._emit("exited", entry, exit_code=code, final=not again, output_tail=tail or None)
        if again:
            threading.Thread(
                target=self._restart_after_exit,
                args=(entry,),
                name="stack-restart-" + entry.name,
                daemon=True,
            ).start()

    def _restart_after_exit(self, entry: _Entry) -> None:
        """The master's restart of a service whose host cannot restart it."""
        entry.restarts += 1
        what = "restart %d of %d" % (entry.restarts, entry.max_restarts)
        self._emit("restarting", entry, message=what)
        if not _sleep_unless(
            entry.backoff, lambda: entry.state != "restarting" or self._unwatched.is_set()
        ):
            return
        t0 = time.monotonic()
        with entry.lock:  # a stop waits for this start, then stops what it started
            if entry.state != "restarting":
                return
            try:
                with contextlib.suppress(RemoteExecError):
                    entry.service.kill()  # drop what is left of the exited one
                entry.service.start()
            except BaseException as e:
                self._set(entry, "exited")
                self._emit("failed", entry, message=arguments.bounded(str(e), 2000))
                return
            with self._cond:
                entry.state, entry.since = "ready", time.time()
        self._emit("ready", entry, seconds=time.monotonic() - t0)

    # -- while up -----------------------------------------------------------

    def status(self) -> List[Dict[str, Any]]:
        """One row per service: service, host, pid, pids, state, readiness,
        since, endpoints, exit_code, job, restarts (and members for a
        replica set). A service the stack never started is "stopped"."""
        entries = list(self._entries.values())
        found = _each([e.service.status for e in entries])
        rows = []
        for entry, got in zip(entries, found):
            if isinstance(got, BaseException):
                got = {"state": "unknown", "readiness": None}
            state = got.get("state") or "unknown"
            if entry.state in ("pending", "stopped"):
                state = "stopped"
            elif entry.state in ("exited", "failed", "completed"):
                state = "exited" if entry.state == "completed" else entry.state
            pids = adapt.pids(got)
            row: Dict[str, Any] = {
                "service": entry.name,
                "host": ",".join(got.get("hosts") or []) or entry.host,
                "pid": pids[0] if pids else None,
                "pids": pids,
                "state": state,
                "readiness": got.get("readiness"),
                "since": got.get("since") or entry.since or None,
                "endpoints": dict(got.get("endpoints") or entry.service.endpoints),
                "exit_code": entry.exit_code
                if entry.exit_code is not None
                else got.get("exit_code"),
                "job": entry.job,
                "restarts": entry.restarts,
            }
            if got.get("members"):
                row["members"] = got["members"]
            rows.append(row)
        return rows

    def logs(self, name: str, lines: int = 50) -> str:
        """The last ``lines`` lines of service ``name``'s output (a group's
        members one after another, each under its name)."""
        if isinstance(lines, bool) or not isinstance(lines, int) or lines < 0:
            raise ValueError("lines must be a whole number >= 0, got %r" % (lines,))
        names = self._expand(name, "logs()")
        if len(names) == 1:
            return adapt.log_tail(self._entries[names[0]].service, lines)
        return "".join(
            "== %s ==\n%s" % (n, adapt.log_tail(self._entries[n].service, lines)) for n in names
        )

    # -- faults, for tests ----------------------------------------------------

    #: The services :meth:`pause` stopped and :meth:`resume` has not continued.
    _paused: frozenset[str] = frozenset()

    def kill(self, name: str) -> None:
        """SIGKILL service ``name`` (a group: every member) at once: a crash,
        made on purpose by a test. It is booked as stopped, not as an exit
        (a ``stopped`` event says "killed"), so it is no unexpected exit;
        ``restart(name)`` brings it back, ``down()`` does not wait for it."""
        if not self._up:
            raise StackError("stack %s is not up: up() first" % self.name, stack=self.name)
        entries = [self._entries[n] for n in self._expand(name, "kill()")]
        with self._cond:
            for entry in entries:
                entry.state, entry.since, entry.t0 = "stopping", time.time(), time.monotonic()
        for entry in entries:
            self._emit("stopping", entry, message="kill()")
        outcomes = _each([e.service.kill for e in entries])
        for entry, outcome in zip(entries, outcomes):
            with self._cond:
                # -9: killed by SIGKILL, as Popen reports it.
                entry.exit_code = None if isinstance(outcome, BaseException) else -9
                self._paused = self._paused - {entry.name}
            self._set(entry, "stopped")
            message = "killed" if not isinstance(outcome, BaseException) else str(outcome)
            seconds = time.monotonic() - entry.t0
            self._emit("stopped", entry, seconds=seconds, message=message)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    def pause(self, name: str) -> None:
        """SIGSTOP service ``name``'s process (a group or a replica set: every
        member's) on its host: it hangs, holding its sockets, as on a frozen
        host, until :meth:`resume`. An executor's main process is stopped,
        not what it started. A stop continues it right after the stop
        signal (as systemd does), so ``down()`` of a paused service is quick."""
        if not self._up:
            raise StackError("stack %s is not up: up() first" % self.name, stack=self.name)
        names = self._expand(name, "pause()")
        for n in names:
            self._signal_service(self._entries[n], pause=True)
            with self._cond:
                self._paused = self._paused | {n}

    def resume(self, name: Optional[str] = None) -> None:
        """SIGCONT what :meth:`pause` stopped: service ``name``, or every paused
        one (a replica set member: until it follows its peers again)."""
        names = sorted(self._paused) if name is None else self._expand(name, "resume()")
        for n in names:
            if n in self._paused:
                self._signal_service(self._entries[n], pause=False)
                with self._cond:
                    self._paused = self._paused - {n}

    @property
    def paused(self) -> List[str]:
        """The services paused now (:meth:`pause`, not yet resumed)."""
        return sorted(self._paused)

    def _signal_service(self, entry: _Entry, pause: bool) -> None:
        """SIGSTOP/SIGCONT by what the service offers: a replica set pauses its
        members, an instance takes a signal, an executor signals its process."""
        import signal

        service, sig = entry.service, signal.SIGSTOP if pause else signal.SIGCONT
        members = getattr(service, "members", None)
        if members is not None and callable(getattr(service, "pause", None)):
            for member in members:
                (service.pause if pause else service.resume)(member)
        elif callable(getattr(service, "signal", None)):
            service.signal(sig)
        elif getattr(service, "process", None) is not None:
            service.process.send_signal(sig)
        else:
            raise StackError(
                "stack %s: %s on %s cannot be %s: it has no process running"
                % (self.name, entry.name, entry.host, "paused" if pause else "resumed"),
                stack=self.name,
                service=entry.name,
                host=entry.host,
            )

    def restart(self, name: str, restart_dependents: bool = False) -> Dict[str, float]:
        """Stop service ``name`` and start it again (its references resolved
        anew); with ``restart_dependents``, the services that depend on it
        too (stopped before it, started after). Returns {service: seconds}."""
        if not self._up:
            raise StackError("stack %s is not up: up() first" % self.name, stack=self.name)
        deps = self.dependencies()
        names = self._expand(name, "restart()")
        if restart_dependents:
            names = graph.closure(deps, names)
        for n in names:
            self._emit("restarting", self._entries[n])
        run = self._stop(deps, names)
        if run.errors:
            raise StackError(
                "stack %s: restart %s: stop failed: %s" % (self.name, name, "; ".join(run.errors)),
                stack=self.name,
                errors=run.errors,
            )
        with self._cond:
            for n in names:
                self._entries[n].state = "pending"
        return self._start(deps, names)

    def __enter__(self) -> Stack:
        self.up()
        return self

    def __exit__(self, exc_type: Optional[type], *exc: Any) -> None:
        if exc_type is None:
            self.down()
            return
        # An error on its way out must not be replaced by down()'s.
        with contextlib.suppress(Exception):
            self.down()

    @classmethod
    def from_file(cls, path: str, master: Any = None, hosts: Any = None) -> Stack:
        """The stack a topology file describes (:mod:`remoteexec.stack.file`)."""
        import importlib

        load = importlib.import_module("remoteexec.stack.file").load
        stack: Stack = load(path, master=master, hosts=hosts)
        stack.source_file = os.path.abspath(path)
        return stack

    @classmethod
    def attach(cls, name: str, master: Any = None) -> Any:
        """The detached project ``name`` (``up(detach=True)``), from any later
        process: a :class:`~remoteexec.stack.project.DetachedStack` with
        status(), logs(), follow(), restart() and down(). Its hosts are
        connected through ``master`` (default: one of its own, closed by
        ``close()``/``with``)."""
        from remoteexec.stack.project import attach

        return attach(name, master)


def _quietly(fn: Callable[[], Any]) -> None:
    """``fn()``, its error dropped (the caller reports the overrun it is)."""
    with contextlib.suppress(Exception):
        fn()


def _sleep_unless(seconds: float, cancelled: Callable[[], bool]) -> bool:
    """Sleep ``seconds`` in steps; False as soon as ``cancelled()``."""
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds / 0.05) + 2):
        if cancelled():
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(0.05, left))
    return not cancelled()


def _each(calls: List[Callable[[], Any]]) -> List[Any]:
    """Every call in parallel threads; results in order, exceptions as values."""
    results: List[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except BaseException as e:
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


__all__ = ["Handle", "Stack"]
