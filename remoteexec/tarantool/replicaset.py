"""ReplicaSet: tarantool members on several hosts, started at once, kept in full mesh."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import threading
import time
import uuid
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
    Union,
)

from remoteexec.arguments import seconds
from remoteexec.errors import HostLost, RemoteExecError, TarantoolError, TimeoutExpired
from remoteexec.services import ServiceStatus, host_names
from remoteexec.tarantool.config import check_credential
from remoteexec.tarantool.instance import LAYERS, TarantoolInstance, checked_env
from remoteexec.tarantool.shared import (
    SLACK,
    bound_seconds,
    check_listen,
    renamed,
    reworded,
    secret,
    split_listen,
    stop_on_exit,
)
from remoteexec.target.files import write_private

if TYPE_CHECKING:
    from remoteexec.host import Host

__all__ = ["ReplicaSet"]

MemberSpec = Union[TarantoolInstance, Sequence[Any]]
# collect_artifacts' box.info call: its reply comes within this plus SLACK.
COLLECT_INFO_TIMEOUT = 1.0
# How often a fan-out looks at its members' hosts while their calls run: a
# lost host is acted on within this of the master declaring it lost.
LOSS_POLL = 0.05
# replication_timeout while a set starts: tarantool retries a refused connect or
# a JOIN/SUBSCRIBE to a peer still bootstrapping (ER_LOADING) after one
# replication_timeout, so a 0.1 s set bootstraps in steps of 0.1 s (two or
# three of them, measured from the members' logs); at 0.02 s the same retries
# cost a few ms each. Not lower: a peer silent for 4 of them is dropped.
# start() gives every member the configured value once all are ready
# (TarantoolInstance.end_bootstrap). With fast retries, replicas would JOIN
# the leader while its app_lua writes, at different LSNs, and could not
# subscribe to each other (XlogGapError): so the leader's init.lua holds its
# app until every peer follows it (see render_init_lua).
BOOT_INTERVAL = 0.02
# Marks a fan-out result that has not arrived (None is a valid result).
_PENDING = object()


def _each(fn: Callable[[Any], Any], items: Sequence[Any]) -> List[Any]:
    """``fn`` on every item in parallel threads; results in order, exceptions as values."""
    if len(items) <= 1:
        out: List[Any] = []
        for item in items:
            try:
                out.append(fn(item))
            except Exception as e:
                out.append(e)
        return out
    with concurrent.futures.ThreadPoolExecutor(len(items), "remoteexec-rs") as pool:
        futures = [pool.submit(fn, item) for item in items]
        return [f.exception() or f.result() for f in futures]


def _gather(
    fn: Callable[[TarantoolInstance], Any],
    members: Sequence[TarantoolInstance],
    watch: Sequence[TarantoolInstance],
    limit: float,
    on_result: Optional[Callable[[Any], None]] = None,
) -> Tuple[List[Any], Optional[TarantoolInstance]]:
    """``fn`` on every member in parallel; ``(results, None)`` once all are done.

    Results come in order, exceptions as values; ``on_result`` sees each one
    as it arrives, on the calling thread. As soon as the host of a member of
    ``members`` or ``watch`` is lost (declared by the heartbeats, or a call
    raised HostLost) it returns ``(results so far, that member)`` without
    waiting for the other calls: they may sit in long remote waits, which
    end by themselves (each is bounded, and ends at once when its process is
    killed). The threads are daemons, so an abandoned call never holds up
    the interpreter's exit. Past ``limit`` seconds (the calls' own bounds
    plus slack: a safety net), the calls still out are TimeoutExpired.
    """
    if not members:
        return [], next((m for m in watch if m.on.lost), None)
    results: List[Any] = [_PENDING] * len(members)
    arrived = threading.Condition()

    def run(i: int, member: TarantoolInstance) -> None:
        try:
            value = fn(member)
        except BaseException as e:  # handed to the caller, who raises or explains it
            value = e
        with arrived:
            results[i] = value
            arrived.notify_all()

    for i, member in enumerate(members):
        threading.Thread(
            target=run, args=(i, member), name="remoteexec-rs-" + member.name, daemon=True
        ).start()
    watched = list(members) + [m for m in watch if all(m is not x for x in members)]
    seen = [False] * len(members)
    give_up = time.monotonic() + limit
    # Each round waits LOSS_POLL or takes at least one result: bounded by count too.
    for _ in range(int(limit / LOSS_POLL) * 2 + len(members) + 10):
        with arrived:
            fresh = [i for i, r in enumerate(results) if r is not _PENDING and not seen[i]]
            if not fresh:
                arrived.wait(max(0.0, min(LOSS_POLL, give_up - time.monotonic())))
                fresh = [i for i, r in enumerate(results) if r is not _PENDING and not seen[i]]
        for i in fresh:
            seen[i] = True
            if isinstance(results[i], HostLost):
                return results, members[i]
            if on_result is not None:
                on_result(results[i])
        lost = next((m for m in watched if m.on.lost), None)
        if lost is not None:
            return results, lost
        if all(seen) or time.monotonic() >= give_up:
            break
    for i, member in enumerate(members):
        if results[i] is _PENDING:
            results[i] = TimeoutExpired(
                "%s: no answer within %.1fs" % (member.name, limit), host=member.on.name
            )
    return results, None


def _layer(error: BaseException) -> Optional[str]:
    return error.details.get("layer") if isinstance(error, RemoteExecError) else None


def _raise_first(results: Sequence[Any]) -> None:
    for result in results:
        if isinstance(result, BaseException):
            raise result


class ReplicaSet:
    """A Tarantool replica set whose members run on (possibly) different hosts.

    :param name: the set's name; members are called ``<name>-1``, ``<name>-2``...
    :param members: ``(host, port)`` pairs (the member listens on the address
        the master reached ``host`` on, so peers on other hosts reach it; a
        ``(host, "10.0.0.5:3301")`` pair picks the address), or
        TarantoolInstance objects that were not started yet (a started one is
        a ValueError).
    :param leader: index of the writable member; the others start read_only.
    :param replication_timeout: Tarantool's heartbeat period; 0.1 suits tests
        (full mesh in a few hundred ms, a dead peer seen in ~0.4 s).
    :param box_cfg: extra ``box.cfg`` keys for every member.
    :param user: the replication user (default guest, granted 'replication').
    :param password: its password (a :class:`mitogen.core.Secret` from here on).
    :param env: extra environment variables for every member's process.
    :param timeout: seconds for start, restarts, switchover and waits.

    Bad arguments (a port outside 1-65535, a time that is not a finite
    positive number, an env value that is not a str) raise ValueError or
    TypeError here, naming the argument, before anything starts.

    When the host of a member is lost (see :class:`~remoteexec.HostLost`)
    during :meth:`start`, :meth:`wait_synced`, :meth:`switchover`,
    :meth:`restart` or :meth:`resume`, the call raises HostLost naming that
    member and its host as soon as the master declares the host lost, and
    does not wait for the other members' waits. The lost member counts as
    stopped from then on (its host's supervisor kills it when the heartbeats
    stop); :meth:`start` kills every other member as well, :meth:`restart`
    the member it was restarting.
    """

    def __init__(
        self,
        name: str,
        members: Sequence[MemberSpec],
        *,
        leader: int = 0,
        replication_timeout: Optional[float] = 0.1,
        box_cfg: Optional[Mapping[str, Any]] = None,
        user: Optional[str] = None,
        password: Optional[str] = None,
        env: Optional[Mapping[str, Any]] = None,
        timeout: float = 30,
    ) -> None:
        if not members:
            raise ValueError("a replica set needs at least one member")
        if not 0 <= leader < len(members):
            raise ValueError("leader=%r: there are %d members" % (leader, len(members)))
        if user is not None:
            check_credential(user, "user name")
        timeout = bound_seconds("timeout", timeout)
        self.replication_timeout = seconds(
            "replication_timeout", replication_timeout, allow_none=True
        )
        env = checked_env("env", env)
        password_secret = secret(user, password)
        self.name = name
        self.timeout = timeout
        self.uuid = str(uuid.uuid4())
        self._user = user or "guest"
        self._leader = leader
        self._configured = False
        self._members: List[TarantoolInstance] = []
        for i, spec in enumerate(members):
            label = "members[%d]" % i
            if isinstance(spec, TarantoolInstance):
                if spec.pid is not None:
                    raise ValueError(
                        "%r is already started: a replica set member must be configured by "
                        "the set before its first start" % (spec,)
                    )
                member = spec
                member.box_cfg = {**dict(box_cfg or {}), **member.box_cfg}
                member.env = {**env, **member.env}
            else:
                if isinstance(spec, str) or not isinstance(spec, Sequence) or len(spec) != 2:
                    raise ValueError(
                        "%s must be a (host, port) pair or a TarantoolInstance, got %r"
                        % (label, spec)
                    )
                host, listen = spec
                check_listen(label + " port", listen, allow_zero=False)
                member = TarantoolInstance(
                    on=host, listen=listen, box_cfg=box_cfg, env=env, timeout=timeout
                )
            if not split_listen(member.listen)[1]:
                raise ValueError(
                    "%s: listen=%r: a replica set member needs a fixed TCP port"
                    % (label, member.listen)
                )
            if password_secret is not None:
                member.password = password_secret
            self._members.append(member)

    def __repr__(self) -> str:
        return "<ReplicaSet %s members=%d leader=%s>" % (
            self.name,
            len(self._members),
            self.leader.name,
        )

    # -- accessors ---------------------------------------------------------

    @property
    def members(self) -> List[TarantoolInstance]:
        """Every member, in the order given."""
        return list(self._members)

    @property
    def leader(self) -> TarantoolInstance:
        """The writable member."""
        return self._members[self._leader]

    @property
    def replicas(self) -> List[TarantoolInstance]:
        """The read-only members, in order."""
        return [m for i, m in enumerate(self._members) if i != self._leader]

    def _index(self, member: TarantoolInstance) -> int:
        for i, m in enumerate(self._members):
            if m is member:
                return i
        raise ValueError("%r is not a member of replica set %s" % (member, self.name))

    def _member(self, member: TarantoolInstance) -> TarantoolInstance:
        return self._members[self._index(member)]

    # -- start -------------------------------------------------------------

    def _configure(self, deadline: float) -> None:
        """Fix every member's address, replication URIs, peers and role (once)."""
        if self._configured:
            return
        # Facts (version, address) of every host, in parallel: one call each.
        _raise_first(
            self._fan_out(
                "start", lambda m: m.host_facts(deadline), self._members, self._members, deadline
            )
        )
        for member in self._members:
            address, _ = split_listen(member.listen)
            if address is None:
                # A bare port: listen on the address peers reach the host on.
                member.listen = member.uri
        uris = [m.uri for m in self._members]
        names = ["%s-%d" % (self.name, i + 1) for i in range(len(self._members))]
        for i, member in enumerate(self._members):
            member.join_replicaset(
                name=names[i],
                replication=uris,
                peers=[
                    [m.instance_uuid, names[j], uris[j]]
                    for j, m in enumerate(self._members)
                    if j != i
                ],
                read_only=i != self._leader,
                replication_timeout=self.replication_timeout,
                replicaset_uuid=self.uuid,
                user=self._user,
            )
        self._configured = True

    def start(self) -> Dict[str, float]:
        """Start every member at once and return when the whole set is healthy.

        Layers, all within ``timeout``: every process alive, running, with the
        intended ``box.info.ro``, and every upstream and downstream between
        members 'follow'. Returns the duration of each phase in seconds:
        ``{"spawn", "running", "full_mesh", "total"}``. On failure every member
        is killed (nothing is left running anywhere) and the error names the
        member and, for replication, the link with ``upstream.message``.

        While the members bootstrap, their ``replication_timeout`` (also
        Tarantool's retry interval) is 0.02 s (``BOOT_INTERVAL``); every member
        runs the configured one again before this returns.

        Like :meth:`TarantoolInstance.start`, starting a set that already runs
        does nothing: when every member runs it returns ``{}``. When only some
        run, it raises TarantoolError and touches no member (use
        :meth:`restart` for the stopped ones, or :meth:`stop` first).
        """
        up = [m for m in self._members if m.pid is not None]
        if up and len(up) == len(self._members):
            return {}
        if up:
            down = [m.name for m in self._members if m.pid is None]
            raise TarantoolError(
                "replica set %s is partly running (%s stopped): restart() those members "
                "or stop() the set before start()" % (self.name, ", ".join(down)),
                host=up[0].on.name,
            )
        started = time.monotonic()
        deadline = started + self.timeout
        # Set when start gives up: a spawn still on its way kills its process.
        abort = threading.Event()
        # Files first, then the processes in one burst, replicas before the
        # leader. Bootstrap time is made of replication_timeout retries: a
        # leader that connects before its peers listen is refused and waits a
        # whole period before it bootstraps, and the replicas' JOIN attempts
        # meanwhile fail with ER_LOADING and wait too. Measured over 30 starts:
        # leader last 0-6 slow (+100 ms) starts, at once 17, leader first 24.
        try:
            self._configure(deadline)
            every = self._members
            for member in every:
                member.boot_interval = BOOT_INTERVAL
            spawned = self._fan_out("start", lambda m: m.prepare(deadline), every, every, deadline)
            for group in (self.replicas, [self.leader]):
                if not any(isinstance(r, BaseException) for r in spawned):
                    spawned = self._fan_out(
                        "start", lambda m: m.launch(deadline, abort), group, every, deadline
                    )
            spawn_done = time.monotonic()
            _raise_first(spawned)
            timings = self._wait_all(every, deadline, "start", with_notify=True, starting=True)
            if any(m.booting for m in every):
                left = max(0.05, deadline - time.monotonic())
                _raise_first(
                    self._fan_out(
                        "start", lambda m: m.end_bootstrap(timeout=left), every, every, deadline
                    )
                )
        except BaseException:
            # A lost host, Ctrl-C or any other failure must not leave members
            # running: kill them through the supervisors' pools (not queued
            # behind the waits still out, which then end by themselves).
            abort.set()
            self._kill_all()
            raise
        finally:
            for member in self._members:
                member.boot_interval = None
        running = max(t.get("running", 0.0) for t in timings)
        mesh = max(t.get("mesh", 0.0) for t in timings)
        return {
            "spawn": spawn_done - started,
            "running": running,
            "full_mesh": max(0.0, mesh - running),
            "total": time.monotonic() - started,
        }

    def _wait_all(
        self,
        members: Sequence[TarantoolInstance],
        deadline: float,
        what: str,
        with_notify: bool = False,
        starting: bool = False,
        watch: Optional[Sequence[TarantoolInstance]] = None,
    ) -> List[Dict[str, float]]:
        """Readiness of ``members`` in parallel; raise one error that explains a failure.

        ``starting``: a member that exits kills the whole set at once, so the
        others' waits return now (their process is gone) instead of each
        sitting out the timeout (the caller kills whatever is left). A lost
        host among ``members`` and ``watch`` raises HostLost at once.
        """
        errors: List[BaseException] = []

        def arrived(result: Any) -> None:
            if isinstance(result, BaseException):
                if starting and not errors and _layer(result) == "alive":
                    self._kill_all()
                errors.append(result)

        results = self._fan_out(
            what,
            lambda m: m.wait_ready(deadline, with_notify),
            members,
            members if watch is None else watch,
            deadline,
            arrived,
        )
        if errors:
            raise self._explain(errors)
        return results

    def _fan_out(
        self,
        what: str,
        fn: Callable[[TarantoolInstance], Any],
        members: Sequence[TarantoolInstance],
        watch: Sequence[TarantoolInstance],
        deadline: float,
        on_result: Optional[Callable[[Any], None]] = None,
    ) -> List[Any]:
        """``fn`` on every member in parallel (see :func:`_gather`); results in
        order, exceptions as values. A lost host of a member of ``members`` or
        ``watch`` raises HostLost at once, naming the member and the host,
        after forgetting that member: the calls still out are not waited for.
        """
        limit = max(0.0, deadline - time.monotonic()) + 2 * SLACK
        results, lost = _gather(fn, members, watch, limit, on_result)
        if lost is None:
            return results
        reason = lost.on.lost or "the host was closed"
        # Its host's supervisor kills it when the heartbeats stop: count it as stopped.
        lost.forget(kill=True)
        raise HostLost(
            "replica set %s: member %s lost with its host during %s: %s"
            % (self.name, lost.name, what, reason),
            host=lost.on.name,
            member=lost.name,
        )

    def _kill_all(self) -> None:
        _each(lambda m: m.forget(kill=True), self._members)

    def _explain(self, errors: Sequence[BaseException]) -> BaseException:
        """One error for a failed wait, naming the member to blame and its links.

        The first error is the cause when a member exited (its F> lines say
        why; the others exited because we killed them). Otherwise a member
        that every other member reports a broken link to is unreachable, and
        the message leads with those links.
        """
        first = errors[0]
        if not isinstance(first, RemoteExecError) or _layer(first) == "alive" or len(errors) == 1:
            return first
        remote = [e for e in errors if isinstance(e, RemoteExecError)]
        names = [m.name for m in self._members]
        # blamed[peer][reporter]: the links the reporter sees broken to the peer.
        blamed: Dict[str, Dict[str, List[str]]] = {n: {} for n in names}
        for error in remote:
            reporter = str(error.details.get("member"))
            for part in str(error.details.get("detail") or "").split("; "):
                for name in names:
                    if " %s:" % name in part and name != reporter:
                        blamed[name].setdefault(reporter, []).append(part)
        reporters = {str(e.details.get("member")) for e in remote}
        lost = [n for n in names if blamed[n] and set(blamed[n]) >= reporters - {n}]
        headline = "replica set %s is not healthy" % self.name
        host = first.host
        if lost:
            links = "; ".join(
                "%s: %s" % (reporter, part)
                for n in lost
                for reporter, parts in blamed[n].items()
                for part in parts
            )
            headline += ": %s unreachable (%s)" % (" and ".join(lost), links)
            host = self._members[names.index(lost[0])].on.name
        body = "\n".join("  " + e.message for e in remote)
        return type(first)(
            "%s\n%s" % (headline, body),
            host=host,
            members=[e.message for e in remote],
            unreachable=lost,
        )

    # -- waits -------------------------------------------------------------

    def wait_synced(self, timeout: Optional[float] = None) -> Dict[int, int]:
        """Wait until every running replica's vclock has caught up with the leader's.

        Component 0 (local-only rows) is ignored. Returns the leader's vclock.
        Stopped and paused replicas are skipped (they cannot catch up; a
        paused one does after :meth:`resume`, so wait again then). A stopped
        or paused leader is a TarantoolError at once.
        """
        wait = self.timeout if timeout is None else bound_seconds("timeout", timeout)
        leader = self.leader
        if leader.pid is None or leader.paused:
            raise TarantoolError(
                "replica set %s: cannot wait for sync: the leader %s is %s"
                % (self.name, leader.name, "paused" if leader.pid else "stopped"),
                host=leader.on.name,
                member=leader.name,
            )
        followers = [m for m in self.replicas if m.pid is not None and not m.paused]
        watch = [leader, *followers]
        deadline = time.monotonic() + wait
        info = self._fan_out(
            "wait_synced", lambda m: m.info(timeout=wait), [leader], watch, deadline
        )
        _raise_first(info)
        target: Dict[int, int] = info[0]["vclock"]
        waits = self._fan_out(
            "wait_synced",
            lambda m: self._wait_vclock(m, target, wait),
            followers,
            watch,
            deadline,
        )
        _raise_first(waits)
        return target

    def _wait_vclock(self, member: TarantoolInstance, target: Dict[int, int], wait: float) -> None:
        try:
            member.wait_vclock(target, wait)
        except RemoteExecError as e:
            raise renamed(e, "%s (leader %s)" % (member.name, self.leader.name)) from None

    # -- status ------------------------------------------------------------

    def member_rows(self) -> List[Dict[str, Any]]:
        """One row per member: its :meth:`TarantoolInstance.status` plus member, host,
        uri, pid, id, ro, status, upstream and downstream per peer (status,
        message, lag, idle), lag (the largest upstream lag) and vclock. Never
        a secret. A member that is stopped, paused or does not answer has
        ``status`` 'stopped', 'paused' or 'unreachable'.
        """
        by_uuid = {m.instance_uuid: m.name for m in self._members}

        def row(member: TarantoolInstance) -> Dict[str, Any]:
            base: Dict[str, Any] = dict(member.status())
            base.update(
                member=member.name,
                host=member.on.name,
                uri=member.uri,
                pid=member.pid,
                id=None,
                ro=None,
                upstream={},
                downstream={},
                lag=None,
            )
            if member.pid is None:
                return dict(base, status="stopped")
            if member.paused:
                return dict(base, status="paused")
            try:
                info = member.info(timeout=min(self.timeout, 1.0))
            except RemoteExecError as e:
                return dict(base, status="unreachable", error=e.message)
            base.update(id=info.get("id"), ro=info.get("ro"), status=info.get("status"))
            base["vclock"] = info.get("vclock")
            lags = []
            for peer in info.get("replication") or ():
                name = by_uuid.get(peer.get("uuid"), peer.get("uuid"))
                if peer.get("uuid") == member.instance_uuid:
                    continue
                for way in ("upstream", "downstream"):
                    link = peer.get(way)
                    if link is not None:
                        base[way][name] = {
                            k: link.get(k) for k in ("status", "message", "lag", "idle")
                        }
                lag = (peer.get("upstream") or {}).get("lag")
                if isinstance(lag, (int, float)):
                    lags.append(lag)
            base["lag"] = max(lags) if lags else None
            return base

        rows = _each(row, self._members)
        _raise_first(rows)
        return rows

    def status(self) -> ServiceStatus:
        """The set's state and every member's (``members``: see :meth:`member_rows`).

        ``state`` is ``ready`` when every member is, ``stopped`` when none
        runs, ``failed``/``exited`` when a member is, else ``running`` (some
        members down or paused, or a start under way); ``readiness`` is the
        lowest layer the members reached.
        """
        rows = self.member_rows()
        states = [r["state"] for r in rows]
        if all(st == "ready" for st in states):
            state = "ready"
        elif all(st == "stopped" for st in states):
            state = "stopped"
        elif "failed" in states:
            state = "failed"
        elif "exited" in states:
            state = "exited"
        elif "starting" in states:
            state = "starting"
        else:
            state = "running"
        layers = [r.get("readiness") for r in rows]
        readiness = (
            None
            if None in layers
            else min(layers, key=lambda x: LAYERS.index(x) if x in LAYERS else -1)
        )
        since = [r["since"] for r in rows if r.get("since") is not None]
        return {
            "name": self.name,
            "hosts": host_names(self.hosts),
            "state": state,
            "readiness": readiness,
            "pids": [r["pid"] for r in rows if r["pid"] is not None],
            "since": max(since) if since else None,
            "exit_code": next((r["exit_code"] for r in rows if r.get("exit_code")), None),
            "endpoints": self.endpoints,
            "members": rows,  # type: ignore[typeddict-item]
        }

    # -- the rest of the Service interface --------------------------------------

    @property
    def hosts(self) -> List[Host]:
        """The members' hosts, each once, in member order."""
        seen: List[Host] = []
        for member in self._members:
            if all(member.on is not h for h in seen):
                seen.append(member.on)
        return seen

    def member_names(self) -> List[str]:
        """The members' names, ``<set>-<n>``, fixed at construction."""
        return ["%s-%d" % (self.name, i + 1) for i in range(len(self._members))]

    @property
    def endpoints(self) -> Dict[str, Optional[str]]:
        """``leader.uri``, ``leader.host``, ``leader.port``, ``uris`` (every member,
        comma-separated) and ``<member name>.uri`` per member, as other hosts see them."""
        leader = self.leader.endpoints
        out: Dict[str, Optional[str]] = {
            "leader.uri": leader["uri"],
            "leader.host": leader["host"],
            "leader.port": leader["port"],
        }
        uris = [m.endpoints["uri"] for m in self._members]
        out["uris"] = None if None in uris else ",".join(str(u) for u in uris)
        for name, uri in zip(self.member_names(), uris):
            out[name + ".uri"] = uri
        return out

    def inputs(self) -> List[Any]:
        """Every member's inputs (env, box_cfg, app_params): they may hold Deferred values."""
        return [value for m in self._members for value in m.inputs()]

    def running(self) -> bool:
        """Whether every member's process runs now."""
        return all(_each(lambda m: m.running(), self._members))

    def log_tail(self, lines: int = 50) -> str:
        """The last ``lines`` lines of every member's log, each under a ``== member (host) ==``."""
        tails = _each(lambda m: m.log_tail(lines), self._members)
        return "\n".join(
            "== %s (%s) ==\n%s" % (m.name, m.on.name, t if isinstance(t, str) else repr(t))
            for m, t in zip(self._members, tails)
        )

    # -- faults --------------------------------------------------------------

    def kill(self, member: Optional[TarantoolInstance] = None) -> None:
        """SIGKILL ``member`` (a crash: no clean shutdown; its data stays); with
        no member, every member at once."""
        if member is None:
            _raise_first(_each(lambda m: m.kill(), self._members))
            return
        self._member(member).kill()

    def restart(self, member: TarantoolInstance) -> None:
        """Start ``member`` again (stopping it first if it runs) on its data, and
        wait until it runs with its role and follows every peer again.

        Peers that are down (stopped, killed or paused) are not waited for. On
        tarantool < 2.11 ``replication_connect_quorum`` defaults to every
        peer, so a member restarted while a peer is down would stay 'orphan';
        for this start the quorum is set to the members that run (unless
        ``box_cfg`` sets it). With your own quorum that counts a down peer, or
        on 2.11+ where tarantool's quorum is a majority, the member can stay
        'orphan' and this raises TimeoutExpired saying which peers are down.
        """
        member = self._member(member)
        if member.pid is not None:
            member.stop()
        with self._skipping_down_peers(member) as down:
            what = "restart of %s" % member.name
            abort = threading.Event()
            deadline = time.monotonic() + member.timeout
            try:
                started = self._fan_out(
                    what, lambda m: m.start(abort), [member], self._up(down), deadline
                )
            except BaseException:
                # A peer's host was lost (or Ctrl-C): kill the restarted member.
                abort.set()
                member.forget(kill=True)
                raise
            try:
                _raise_first(started)
            except RemoteExecError as e:
                if not down or e.details.get("layer") != "running":
                    raise
                note = (
                    "%s down while restarting %s; a member stays 'orphan' until "
                    "replication_connect_quorum peers connect (on tarantool < 2.11 "
                    "every peer by default)" % (", ".join(m.name for m in down), member.name)
                )
                raise reworded(e, "%s\n(%s)" % (e.message, note)) from None

    @contextlib.contextmanager
    def _skipping_down_peers(self, member: TarantoolInstance) -> Iterator[List[TarantoolInstance]]:
        """While inside, ``member``'s readiness waits skip the peers that are
        down: stopped, killed or paused (they cannot answer); yields them.

        The rule :meth:`restart` and :meth:`resume` share.
        """
        down = [m for m in self._members if m is not member and (m.pid is None or m.paused)]
        member.down_peers = frozenset(m.instance_uuid for m in down)
        try:
            yield down
        finally:
            member.down_peers = frozenset()

    def _up(self, down: Sequence[TarantoolInstance]) -> List[TarantoolInstance]:
        """The members not in ``down``: the ones a restart or resume waits for."""
        return [m for m in self._members if all(m is not d for d in down)]

    def pause(self, member: TarantoolInstance) -> None:
        """SIGSTOP ``member``: it stays connected but answers nothing (a hung host)."""
        self._member(member).signal(signal.SIGSTOP)

    def resume(self, member: TarantoolInstance) -> None:
        """SIGCONT ``member`` and wait until it follows every peer again.

        Like :meth:`restart`, peers that are down (stopped, killed or paused)
        are not waited for.
        """
        member = self._member(member)
        member.signal(signal.SIGCONT)
        with self._skipping_down_peers(member) as down:
            deadline = time.monotonic() + self.timeout
            what = "resume of %s" % member.name
            self._wait_all([member], deadline, what, watch=self._up(down))

    # -- roles ---------------------------------------------------------------

    def switchover(self, member: TarantoolInstance) -> None:
        """Make ``member`` the writable one and wait until the whole set agrees.

        With ``election_mode`` set in ``box_cfg`` and a tarantool that has
        ``box.ctl.promote`` (2.6.3+, 2.7.2+, 2.8.1+), by promote: ``member``
        drops read_only and wins an election, the old leader is set read_only
        for its restarts. (That path cannot run on the 2.6.0 here: untested.)
        Otherwise by read_only flips: the old leader turns read-only,
        ``member`` catches up with its vclock and turns writable. Then every
        running member that is not paused must have its new role and follow
        every peer.

        Both ``member`` and the old leader must run and not be paused, else
        TarantoolError naming the one that is not, before anything changes.
        Every step is bounded by ``timeout`` together. If a read_only flip
        fails after the old leader turned read-only, the old leader is made
        writable again (best effort, within 2 s more) and the error is raised:
        the set is never left without a writable member by a failed switchover.
        """
        new = self._index(member)
        if new == self._leader:
            return
        old = self.leader
        target = self._members[new]
        for m, role in ((target, "the new leader"), (old, "the current leader")):
            if m.pid is None or m.paused:
                raise TarantoolError(
                    "replica set %s: cannot switch over to %s: %s %s is %s"
                    % (self.name, target.name, role, m.name, "paused" if m.pid else "stopped"),
                    host=m.on.name,
                    member=m.name,
                )
        deadline = time.monotonic() + self.timeout

        def left() -> float:
            return max(0.05, deadline - time.monotonic())

        mode = target.box_cfg.get("election_mode")
        # The release notes say which versions have promote; the runtime check decides.
        if (
            mode not in (None, "off")
            and target.features.promote
            and target.eval("return box.ctl.promote ~= nil", timeout=left())
        ):
            target.eval("box.cfg{read_only = false} box.ctl.promote()", timeout=left())
            old.eval("box.cfg{read_only = true}", timeout=left())
        else:
            old.eval("box.cfg{read_only = true}", timeout=left())
            try:
                vclock = old.info(timeout=left())["vclock"]
                self._wait_vclock(target, vclock, left())
                target.eval("box.cfg{read_only = false}", timeout=left())
            except BaseException:
                # Never leave the set without a writable member.
                with contextlib.suppress(Exception):
                    old.eval("box.cfg{read_only = false}", timeout=min(2.0, self.timeout))
                raise
        old.read_only, target.read_only = True, False
        self._leader = new
        running = [m for m in self._members if m.pid is not None and not m.paused]
        self._wait_all(running, deadline, "switchover to %s" % target.name)

    # -- stop ----------------------------------------------------------------

    def stop(self) -> float:
        """Stop every member at once (SIGTERM, SIGKILL after the stop timeout).

        Returns the seconds it took. Raises the first member's error, if any,
        after every member was stopped.
        """
        started = time.monotonic()
        results = _each(lambda m: m.stop(), self._members)
        took = time.monotonic() - started
        _raise_first(results)
        return took

    def __enter__(self) -> ReplicaSet:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        stop_on_exit(self.stop, exc[0])

    # -- artifacts -------------------------------------------------------------

    def artifacts(self, dest: str) -> List[str]:
        """Copy every member's logs, init.lua and a ``box.info`` dump to ``dest``.

        Files go to ``dest/<member>/`` with mode 0600 (directories 0700), see
        :meth:`TarantoolInstance.artifacts`. Works on stopped and failed
        members too (the files stay on the hosts until the master closes). A
        file that cannot be read (the host is lost, say) is skipped and its
        error recorded under ``"errors"`` in that member's ``box_info.json``;
        one member's trouble never stops the others' collection. Returns the
        paths written.
        """
        os.makedirs(dest, 0o700, exist_ok=True)

        def failed(member: TarantoolInstance, error: BaseException) -> List[str]:
            dump = {"member": member.name, "errors": {"collect": repr(error)}}
            text = json.dumps(dump, indent=2, sort_keys=True, default=str).encode()
            try:
                out_dir = os.path.join(dest, member.name)
                os.makedirs(out_dir, 0o700, exist_ok=True)
                return [write_private(os.path.join(out_dir, "box_info.json"), text)]
            except OSError:
                return []

        results = _each(lambda m: m.artifacts(os.path.join(dest, m.name)), self._members)
        return [
            path
            for member, paths in zip(self._members, results)
            for path in (failed(member, paths) if isinstance(paths, BaseException) else paths)
        ]

    def collect_artifacts(self, dest_dir: str) -> List[str]:
        """The same as :meth:`artifacts` (its earlier name)."""
        return self.artifacts(dest_dir)
