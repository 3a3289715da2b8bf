"""Stack up/down: the example (examples/shop.toml) on 3 lab hosts vs its
critical path and a sequential start of the same services.

The stack is the shipped example itself, loaded with
``Stack.from_file(path, hosts=...)`` (its hosts a, b, c on the lab's three
hosts), every tier using the one below it: the ``storage`` replica set, the
``router`` that reads and writes it through net.box, the ``api`` whose
``/health`` asks the router. See examples/shop.toml.

Measured in the same run, rounds alternating:

- ``up``: ``Stack.up()`` until every service is ready;
- each service started alone with the same API (``service.start()``), one
  after another in dependency order, each timed: the **critical path** is
  the longest dependency path weighted by those times (what a perfect
  scheduler could reach), **sequential** the sum of them all (what starting
  the services one after another takes);
- ``by hand``: the same services started wave by wave, each wave's at once
  from threads (the best plan, known in advance, without a graph);
- ``down``: ``Stack.down()`` of the started stack.

Then the timeline (``BENCH_TIMELINE_ROUNDS`` rounds): one up and each
replica set alone, each set's start broken into phases from the master's
marks at the end of each member's step and from the members' own logs
(where wave 1 loses time against a set alone), the retries and the remote
calls; and the floor the CPUs set: what the starts that run side by side in
up() (tarantools loading their Lua runtime, the api's interpreters), measured
here, cost the CPUs beyond the critical path's.

Targets: up ≤ 1.15x the critical path and ≤ 1.15x by hand, up at least
1.8x faster than sequential (median rounds), down ≤ 0.3 s (median).

Run: ``python bench/bench_stack.py`` (needs root for the lab);
``BENCH_ROUNDS=N`` changes the number of rounds.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import shutil
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

import _common as c

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "15"))
TIMELINE_ROUNDS = int(os.environ.get("BENCH_TIMELINE_ROUNDS", "5"))
CRITICAL_FACTOR = 1.15
SEQUENTIAL_FACTOR = 1.8
DOWN_LIMIT = 0.3
EXAMPLE = os.path.join(c.REPO_ROOT, "examples", "shop.toml")


def _build(hosts: Mapping[str, Any]) -> Tuple[Any, List[List[str]]]:
    """The example's stack on ``hosts`` (file host name → Host), and its
    services in start waves (groups as their members)."""
    import remoteexec as rx

    stack = rx.Stack.from_file(EXAMPLE, hosts=hosts)
    deps = stack.dependencies()
    waves: List[List[str]] = []
    done: Set[str] = set()
    for _ in range(len(deps)):  # bounded: each wave takes at least one service
        wave = [n for n in deps if n not in done and set(deps[n]) <= done]
        if not wave:
            break
        waves.append(wave)
        done.update(wave)
    return stack, waves


def _cpu_seconds(roots: Sequence[int]) -> Dict[Tuple[int, bytes], float]:
    """CPU seconds (user + system) so far of each live process in the trees of
    ``roots``, by (pid, start time): this process and the lab's sshds (so the
    hosts' contexts, tarantools and apis), not the rest of the machine."""
    from remoteexec.target import procs

    tick = float(os.sysconf("SC_CLK_TCK"))
    stats = {pid: procs.proc_stat(pid) for pid in procs.all_pids()}
    children: Dict[int, List[int]] = {}
    for pid, fields in stats.items():
        if fields:
            children.setdefault(int(fields[1]), []).append(pid)
    out: Dict[Tuple[int, bytes], float] = {}
    todo = [r for r in roots if stats.get(r)]
    for _ in range(len(stats) + 1):  # bounded: each round takes one pid
        if not todo:
            break
        pid = todo.pop()
        fields = stats.get(pid)
        if fields and (pid, fields[19]) not in out:
            out[(pid, fields[19])] = (int(fields[11]) + int(fields[12])) / tick
            todo.extend(children.get(pid, []))
    return out


#: Process classes of the CPU profile, in report order: (name, test on cmdline).
CLASSES: Tuple[Tuple[str, Callable[[str], bool]], ...] = (
    ("tarantools", lambda cmd: "tarantool" in cmd),
    ("api processes", lambda cmd: "api.py" in cmd),
    ("hosts' contexts", lambda cmd: "mitogen:" in cmd),
)


def _class_of(pid: int) -> str:
    """The class of ``pid`` for the CPU profile (see CLASSES)."""
    if pid == os.getpid():
        return "master"
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return "other"
    return next((name for name, test in CLASSES if test(cmd)), "other (sshd, ssh, supervisors)")


def _cpu_used(before: Mapping[Tuple[int, bytes], float], roots: Sequence[int]) -> Dict[str, float]:
    """CPU seconds the trees of ``roots`` used since ``before``, by process class
    and in all ("total"); processes that ended in between are not counted (up
    ends nothing)."""
    out: Dict[str, float] = {"total": 0.0}
    for key, cpu in _cpu_seconds(roots).items():
        used = cpu - before.get(key, 0.0)
        out["total"] += used
        name = _class_of(key[0])
        out[name] = out.get(name, 0.0) + used
    return out


def _critical(deps: Mapping[str, Mapping[str, str]], took: Mapping[str, float]) -> float:
    """The longest dependency path, each service weighted by ``took``."""
    finish: Dict[str, float] = {}
    for _ in range(len(deps) + 1):  # bounded: each pass settles at least one service
        for name, needs in deps.items():
            if name not in finish and all(d in finish for d in needs):
                finish[name] = took[name] + max((finish[d] for d in needs), default=0.0)
        if len(finish) == len(deps):
            break
    return max(finish.values())


def _latency(stack: Any, events: List[Any]) -> float:
    """The stack's own delay, from its events: the largest gap between the
    moment a service's last dependency was ready and its own start."""
    at = {(e.kind, e.service): e.time for e in events}
    gaps = [0.0]
    for name, deps in stack.dependencies().items():
        if deps:
            gaps.append(at[("starting", name)] - max(at[("ready", d)] for d in deps))
    return max(gaps)


def _stack_once(hosts: Mapping[str, Any], roots: Sequence[int] = ()) -> Dict[str, float]:
    stack, _ = _build(hosts)
    events: List[Any] = []
    stack.subscribe(events.append)
    before = _cpu_seconds(roots)
    t0 = time.perf_counter()
    try:
        stack.up()
        up = time.perf_counter() - t0
        cpu = _cpu_used(before, roots)
        retries = _retries(stack)
    except BaseException:
        with contextlib.suppress(Exception):
            stack.down()
        raise
    t0 = time.perf_counter()
    stack.down()
    return {
        "up": up,
        "down": time.perf_counter() - t0,
        "latency": _latency(stack, events),
        "retries": retries,
        **{"cpu " + name: seconds for name, seconds in cpu.items()},
    }


def _retries(stack: Any) -> float:
    """The replication retries of the replica sets' bootstrap, per set: the
    members' "will retry every" log lines (a refused connect, a JOIN or
    SUBSCRIBE to a peer still loading), each one retry interval of waiting."""
    sets = [stack[n].service for n in stack.services if hasattr(stack[n].service, "members")]
    logs = [m.log_tail(400) for rs in sets for m in rs.members]
    return sum(log.count("will retry every") for log in logs) / max(1, len(sets))


# -- timeline: where wave 1 loses time against a replica set alone -----------

#: The steps of ReplicaSet.start per member, as TarantoolInstance methods (each
#: one remote call): their end is marked on the master's clock.
STEPS = ("prepare", "launch", "wait_ready", "end_bootstrap")
#: Milestones in a member's tarantool log: (name, text of the line). The log
#: opens in box.cfg, so its first line is the moment the Lua runtime has loaded
#: and init.lua reached box.cfg.
LOG_MARKS = (
    ("box.cfg", "Tarantool "),
    ("peers connected", "connected to "),
    ("bootstrapped", "ready to accept requests"),
    ("synced", "leaving orphan mode"),
)
_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \[\d+\] \S+ [A-Z]> (.*)$")
#: Phases of a replica set's start, in order, from its start() call (ms):
#: (label, how it is read from one member's marks, over which members).
PHASES = (
    ("files written (prepare, all members)", "prepare", "all"),
    ("spawned (launch returned, all members; the leader last)", "launch", "all"),
    ("leader's box.cfg begins (its Lua runtime loaded)", "box.cfg", "leader"),
    ("last member's box.cfg begins", "box.cfg", "all"),
    ("leader connected to every peer", "peers connected", "leader"),
    ("leader bootstrapped (writable)", "bootstrapped", "leader"),
    ("replicas joined (ready to accept requests)", "bootstrapped", "replicas"),
    ("full mesh seen by the readiness waits", "wait_ready", "all"),
    ("ready: start() returned (after end_bootstrap)", "done", "set"),
)


class _Recorder:
    """While active, marks the end of each start step of every TarantoolInstance
    (wall clock, as the members' logs), and counts the master's remote calls.

    Bench-only instrumentation: it wraps the methods of the classes for the
    duration of a timeline round and puts them back after."""

    def __init__(self) -> None:
        self.marks: Dict[str, Dict[str, float]] = {}
        self.calls = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def active(self) -> Iterator[_Recorder]:
        from remoteexec.host import Host
        from remoteexec.tarantool.instance import TarantoolInstance

        saved: List[Tuple[Any, str, Any]] = []

        def wrap(cls: Any, name: str, mark: Optional[str]) -> None:
            original = getattr(cls, name)

            def wrapped(obj: Any, *args: Any, **kwargs: Any) -> Any:
                try:
                    return original(obj, *args, **kwargs)
                finally:
                    with self._lock:
                        if mark is None:
                            self.calls += 1
                        else:
                            self.marks.setdefault(obj.name, {})[mark] = time.time()

            saved.append((cls, name, original))
            setattr(cls, name, wrapped)

        for step in STEPS:
            wrap(TarantoolInstance, step, step)
        for name in ("send_service", "send_call"):
            wrap(Host, name, None)
        try:
            yield self
        finally:
            for cls, name, original in saved:
                setattr(cls, name, original)


def _log_marks(log: str) -> Dict[str, float]:
    """The first time (epoch seconds) of each LOG_MARKS line in a member's log,
    and "retries": its "will retry every" lines."""
    out: Dict[str, float] = {"retries": float(log.count("will retry every"))}
    for line in log.splitlines():
        m = _LOG_LINE.match(line)
        if not m:
            continue
        for name, text in LOG_MARKS:
            if name not in out and m.group(2).startswith(text):
                stamp = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f")
                out[name] = stamp.timestamp()
    return out


def _set_phases(rs: Any, started: float, done: float, marks: Mapping[str, Any]) -> Dict[str, float]:
    """The phases of one replica set's start (ms since ``started``), and its
    retries (all members' "will retry every" lines)."""
    members = {m.name: {**marks.get(m.name, {}), **_log_marks(m.log_tail(400))} for m in rs.members}
    groups = {
        "all": list(members),
        "leader": [rs.leader.name],
        "replicas": [m.name for m in rs.replicas],
    }
    out: Dict[str, float] = {}
    for label, key, which in PHASES:
        if which == "set":
            out[label] = (done - started) * 1000
            continue
        seen = [members[n][key] for n in groups[which] if key in members[n]]
        if seen:
            out[label] = (max(seen) - started) * 1000
    out["retries"] = sum(m["retries"] for m in members.values())
    out["members"] = float(len(members))
    return out


def _timeline_once(hosts: Mapping[str, Any], roots: Sequence[int]) -> Dict[str, Dict[str, float]]:
    """One up and each replica set alone, with their phases; wave 2 and 3 from
    the stack's events; the master's remote calls of up."""
    out: Dict[str, Dict[str, float]] = {}
    stack, _ = _build(hosts)
    sets = [n for n in stack.services if hasattr(stack[n].service, "members")]
    events: List[Any] = []
    stack.subscribe(events.append)
    recorder = _Recorder()
    t0 = time.time()
    try:
        with recorder.active():
            stack.up()
        waves = {"calls": float(recorder.calls), "up": (time.time() - t0) * 1000}
        at = {(e.kind, e.service): e.time for e in events}
        for name in sets:
            out[name + " in up"] = _set_phases(
                stack[name].service, t0, at[("ready", name)], recorder.marks
            )
        for name in stack.services:
            if name not in sets:
                waves[name] = (at[("ready", name)] - at[("starting", name)]) * 1000
        waves["gap"] = _latency(stack, events) * 1000
        out["up"] = waves
    finally:
        stack.down()
    for name in sets:
        alone, _ = _build(hosts)
        service = alone[name].service
        recorder = _Recorder()
        before = _cpu_seconds(roots)
        t0 = time.time()
        try:
            with recorder.active():
                service.start()
            done = time.time()
            cpu = _cpu_used(before, roots)
            out[name + " alone"] = _set_phases(service, t0, done, recorder.marks)
            out[name + " alone"]["calls"] = float(recorder.calls)
            out[name + " alone"].update({"cpu " + k: v * 1000 for k, v in cpu.items()})
        finally:
            service.stop()
    return out


def _timeline(hosts: Mapping[str, Any], roots: Sequence[int]) -> Dict[str, Dict[str, float]]:
    """Medians over TIMELINE_ROUNDS of :func:`_timeline_once`."""
    rounds = [_timeline_once(hosts, roots) for _ in range(TIMELINE_ROUNDS)]
    out: Dict[str, Dict[str, float]] = {}
    for column in rounds[0]:
        keys = {k for r in rounds for k in r.get(column, {})}
        out[column] = {
            k: c.Stats.of([r[column][k] for r in rounds if k in r.get(column, {})]).median
            for k in keys
        }
    return out


def _alone_once(hosts: Mapping[str, Any]) -> Dict[str, float]:
    """Each service started alone, one after another; critical path and sequential."""
    stack, waves = _build(hosts)
    started: List[Any] = []
    took: Dict[str, float] = {}
    try:
        for wave in waves:
            for name in wave:
                service = stack[name].service
                t0 = time.perf_counter()
                service.start()
                took[name] = time.perf_counter() - t0
                started.append(service)
    finally:
        for service in reversed(started):
            with contextlib.suppress(Exception):
                service.stop()
    out = {"critical": _critical(stack.dependencies(), took), "sequential": sum(took.values())}
    for name, seconds in took.items():
        out["alone " + name] = seconds
    return out


def _by_hand_once(hosts: Mapping[str, Any]) -> Dict[str, float]:
    """The same services started by hand with the best plan known in advance:
    each wave's services at once (a thread each), the next wave when all are
    ready. What the stack's scheduling adds is the difference."""
    stack, waves = _build(hosts)
    started: List[Any] = []
    errors: List[BaseException] = []

    def start(service: Any) -> None:
        try:
            service.start()
            started.append(service)
        except BaseException as e:
            errors.append(e)

    t0 = time.perf_counter()
    try:
        for wave in waves:
            threads = [threading.Thread(target=start, args=(stack[n].service,)) for n in wave]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            if errors:
                raise errors[0]
        return {"by_hand": time.perf_counter() - t0}
    finally:
        for service in reversed(started):
            with contextlib.suppress(Exception):
                service.stop()


def _median(rounds: List[Dict[str, float]], key: str) -> float:
    return c.Stats.of([r[key] for r in rounds]).median


def _measure() -> Tuple[Any, ...]:
    """Rounds of up/down, alone and by hand, alternating, on a fresh lab; then
    the timeline rounds."""
    import remoteexec as rx
    from remoteexec.lab import Lab
    from remoteexec.stack import file as stackfile

    names = list(stackfile.read(EXAMPLE).hosts)
    stacked: List[Dict[str, float]] = []
    alone: List[Dict[str, float]] = []
    by_hand: List[Dict[str, float]] = []
    with Lab(hosts=3) as lab:
        c.progress("lab %s up: %s" % (lab.name, ", ".join(lab.targets)))
        with rx.Master(heartbeat_timeout=10) as master:
            opened = master.connect_all(lab.targets, **c.connect_options(lab))
            # File host i on lab host i mod 3, as `remoteexec up --lab 3` maps them.
            hosts = {n: opened[i % len(opened)] for i, n in enumerate(names)}
            roots = [os.getpid()] + [h.sshd_pid for h in lab.hosts if h.sshd_pid]
            _stack_once(hosts)  # warm-up: facts cached, code imported
            for i in range(ROUNDS):
                steps: List[Callable[[], None]] = [
                    lambda: stacked.append(_stack_once(hosts, roots)),
                    lambda: alone.append(_alone_once(hosts)),
                    lambda: by_hand.append(_by_hand_once(hosts)),
                ]
                for step in steps[i % 3 :] + steps[: i % 3]:
                    step()
                c.progress(
                    "round %d: up %.3fs (CPU-s: %s), by hand %.3fs, critical %.3fs,"
                    " sequential %.3fs, down %.3fs"
                    % (
                        i + 1,
                        stacked[-1]["up"],
                        ", ".join(
                            "%s %.3f" % (k[len("cpu ") :], v)
                            for k, v in stacked[-1].items()
                            if k.startswith("cpu ")
                        ),
                        by_hand[-1]["by_hand"],
                        alone[-1]["critical"],
                        alone[-1]["sequential"],
                        stacked[-1]["down"],
                    )
                )
            timeline = _timeline(hosts, roots)
    return stacked, alone, by_hand, timeline


def run() -> c.Report:
    from remoteexec.stack import file as stackfile

    topology = stackfile.read(EXAMPLE)
    count = sum(len(s.hosts) if s.kind == "process" else 1 for s in topology.services.values())
    report = c.lab_report(
        "Stack: the example (%s, %d services) on 3 lab hosts"
        % (os.path.relpath(EXAMPLE, c.REPO_ROOT), count)
    )
    if report.skipped:
        return report
    if shutil.which("tarantool") is None:
        report.skipped = "tarantool is not installed"
        return report
    load_before = os.getloadavg()[0]
    start_cpu = _start_cpu()
    stacked, alone, by_hand, timeline = _measure()
    load_after = os.getloadavg()[0]
    up, critical = _median(stacked, "up"), _median(alone, "critical")
    cpu = _median(stacked, "cpu total")
    cores = os.cpu_count() or 1
    sequential, down = _median(alone, "sequential"), _median(stacked, "down")
    hand = _median(by_hand, "by_hand")
    latency = max(r["latency"] for r in stacked)
    services = [k[len("alone ") :] for k in alone[0] if k.startswith("alone ")]
    report.text(
        "The example itself, `%s` loaded with `Stack.from_file(path, hosts=...)`, its "
        "hosts a, b, c on the lab's three: start waves %s. Medians of %d rounds of each, "
        "alternating. Critical path and sequential come from the same runs: each service "
        "started alone with `start()`, one after another in dependency order; critical = "
        "the longest dependency path weighted by those times; sequential = all of them, "
        "summed. By hand: the same services, each wave's started at once from threads, "
        "wave after wave: the best plan known in advance, with no graph; up / by hand is "
        "what the stack's scheduling adds. The 3 lab hosts share this machine's %s CPUs, "
        "so services started together contend for them, which the critical path does not "
        "count. The scheduling delay is read from the stack's own events: the worst gap, "
        "over all rounds, between a service's last dependency being ready and its start. "
        "A replica set's bootstrap waits one retry interval for each refused connect and "
        "each JOIN or SUBSCRIBE to a peer still loading (the retries row counts them from "
        "the members' logs); ReplicaSet.start() retries every 0.02 s while the set starts "
        "(then restores replication_timeout, 0.1 s here), where each retry used to cost "
        "0.1 s. No scheduler can make sequential / up exceed "
        "sequential / critical path (the ceiling row). CPU of up: user + system seconds "
        "of this process and of every process under the lab's sshds (the hosts' "
        "contexts, the tarantools, the apis) from up() until ready, in all and by process "
        "class (its cmdline); up can only keep "
        "within 1.15x of the critical path if the CPUs can give it that much within "
        "it (next row: all of them, for the critical path), and the other processes of "
        "the machine take their share: its load average was %.1f before the run and "
        "%.1f after."
        % (
            os.path.relpath(EXAMPLE, c.REPO_ROOT),
            " → ".join("[%s]" % ", ".join(w) for w in topology.waves()),
            ROUNDS,
            os.cpu_count(),
            load_before,
            load_after,
        )
    )
    rows = [
        ("stack up()", c.ms(up)),
        ("by hand, wave by wave in parallel", c.ms(hand)),
        ("critical path", c.ms(critical)),
        ("sequential", c.ms(sequential)),
        ("ceiling of sequential / up: sequential / critical path", c.ratio(sequential, critical)),
        ("stack down()", c.ms(down)),
        (
            "replication retries per replica set in up (members' logs)",
            "%.1f" % _median(stacked, "retries"),
        ),
        ("scheduling delay: dependency ready → dependent starting (worst)", c.ms(latency)),
        ("CPU of up: master + lab hosts' processes (CPU-ms)", c.ms(cpu)),
        ("%d CPUs x critical path (CPU-ms)" % cores, c.ms(cores * critical)),
    ]
    names = [n for n, _ in CLASSES] + ["master", "other (sshd, ssh, supervisors)"]
    rows += [
        (
            "CPU of up: " + name,
            c.ms(c.Stats.of([r.get("cpu " + name, 0.0) for r in stacked]).median),
        )
        for name in names
    ]
    rows += [("alone: " + name, c.ms(_median(alone, "alone " + name))) for name in services]
    report.table(["phase", "median ms"], rows)
    _timeline_report(report, timeline)
    groups = {
        name: len(service.hosts)
        for name, service in topology.services.items()
        if service.kind == "process" and len(service.hosts) > 1
    }
    _floor_report(report, timeline, critical, sequential, start_cpu, groups)
    report.target(
        "up / critical path (median)",
        "%.2fx (%s vs %s ms)" % (up / critical, c.ms(up), c.ms(critical)),
        "≤ %gx" % CRITICAL_FACTOR,
        up <= CRITICAL_FACTOR * critical,
    )
    report.target(
        "up / by hand, waves in parallel (median): what the graph adds",
        "%.2fx (%s vs %s ms)" % (up / hand, c.ms(up), c.ms(hand)),
        "≤ %gx" % CRITICAL_FACTOR,
        up <= CRITICAL_FACTOR * hand,
    )
    report.target(
        "sequential / up (median)",
        "%.2fx (%s vs %s ms)" % (sequential / up, c.ms(sequential), c.ms(up)),
        "≥ %gx" % SEQUENTIAL_FACTOR,
        sequential >= SEQUENTIAL_FACTOR * up,
    )
    report.target(
        "down of the whole stack (median)",
        "%s ms" % c.ms(down),
        "≤ %g s" % DOWN_LIMIT,
        down <= DOWN_LIMIT,
    )
    return report


def _timeline_report(report: c.Report, timeline: Mapping[str, Mapping[str, float]]) -> None:
    """The per-phase breakdown of wave 1 (each replica set in up vs alone) and
    of waves 2 and 3."""
    sets = [k[: -len(" alone")] for k in timeline if k.endswith(" alone")]
    columns = [s + where for s in sets for where in (" alone", " in up")]
    report.text(
        "Timeline (medians of %d more rounds, each: one up, then each replica set "
        "alone): milestones of each replica set's start, in ms from its start() call, "
        "read from the master's clock at the end of each member's step (prepare, "
        "launch, wait_ready, end_bootstrap: one remote call each) and from the "
        "members' own logs (tarantool's log opens in box.cfg, once its Lua runtime has "
        "loaded; a replica is ready to accept requests once it has joined). Retries: "
        'the members\' "will retry every" lines (refused connects, JOIN/SUBSCRIBE to a '
        "peer still loading), each one step of 0.02 s. Remote calls: the master's "
        "send_service and send_call." % TIMELINE_ROUNDS
    )

    def cell(column: str, key: str) -> str:
        value = timeline.get(column, {}).get(key)
        return "-" if value is None else "%.0f" % value

    rows = [[label] + [cell(col, label) for col in columns] for label, _, _ in PHASES]
    rows.append(["replication retries (all members)"] + [cell(col, "retries") for col in columns])
    rows.append(
        ["remote calls"] + [cell(col, "calls") if col.endswith("alone") else "" for col in columns]
    )
    report.table(["phase (ms from start())", *columns], rows)
    up = timeline.get("up", {})
    rows = [
        ("up() in the timeline rounds", "%.0f" % up.get("up", 0.0)),
        ("remote calls of up()", "%.0f" % up.get("calls", 0.0)),
        ("worst gap: dependencies ready → dependent starting", "%.1f" % up.get("gap", 0.0)),
    ]
    rows += [
        ("%s: starting → ready in up" % name, "%.0f" % value)
        for name, value in sorted(up.items())
        if name not in ("up", "calls", "gap")
    ]
    report.table(["waves 2 and 3", "ms"], rows)


#: The api's command as the example runs it, without arguments: the
#: interpreter starts, imports what api.py needs and exits 2 (a usage error).
API_START = [
    "/usr/bin/python3",
    "-I",
    "-S",
    os.path.join(c.REPO_ROOT, "examples", "shop", "api.py"),
]


def _start_cpu(samples: int = 9) -> Dict[str, float]:
    """CPU seconds (user + system, medians) of the starts that run side by side
    in up() on this machine (it runs the lab hosts): "runtime", a tarantool
    that loads its Lua runtime and exits (what every member spends before its
    box.cfg listens); "bootstrap", one that also bootstraps a fresh directory
    with the members' defaults; "api", the api's interpreter and imports."""
    import resource
    import subprocess
    import tempfile

    from remoteexec.tarantool.config import box_cfg_for
    from remoteexec.tarantool.lua import to_lua

    used: Dict[str, List[float]] = {"runtime": [], "bootstrap": [], "api": []}
    for _ in range(samples):
        for kind in used:
            with tempfile.TemporaryDirectory(prefix="bench-tt-") as work:
                cfg = box_cfg_for((2, 6, 0), listen="127.0.0.1:0", work_dir=work)
                lua = "box.cfg(%s) " % to_lua(cfg) if kind == "bootstrap" else ""
                command = API_START if kind == "api" else ["tarantool", "-e", lua + "os.exit(0)"]
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                subprocess.run(
                    command, cwd=work, timeout=30, stderr=subprocess.DEVNULL, check=kind != "api"
                )
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
            used[kind].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return {kind: c.Stats.of(values).median for kind, values in used.items()}


def _crowding(together: int, alone: int, cpu: float, cores: int) -> float:
    """How much longer ``together`` single-threaded starts of ``cpu`` seconds
    each take at the least on ``cores`` CPUs than ``alone`` of them."""
    return max(together * cpu / cores, cpu) - max(alone * cpu / cores, cpu)


def _floor_report(
    report: c.Report,
    timeline: Mapping[str, Mapping[str, float]],
    critical: float,
    sequential: float,
    start_cpu: Mapping[str, float],
    groups: Mapping[str, int],
) -> None:
    """The lowest up() the CPUs allow, from this run's figures (see the text).

    ``groups``: the size of each group of services started at once from one
    definition (the api's instances), by name."""
    cores = os.cpu_count() or 1
    sets = [k[: -len(" alone")] for k in timeline if k.endswith(" alone")]
    sizes = {s: timeline[s + " alone"]["members"] for s in sets}
    # Every member of wave 1 loads its runtime before its set can bootstrap;
    # alone, the slowest set had the CPUs to itself for its own members.
    members = int(sum(sizes.values()) - max(sizes.values()))
    apis = max(groups.values(), default=1)
    runtime, api = start_cpu["runtime"], start_cpu["api"]
    wave1 = _crowding(int(sum(sizes.values())), int(max(sizes.values())), runtime, cores)
    wave3 = _crowding(apis, 1, api, cores)
    floor = critical + wave1 + wave3
    report.text(
        "The floor the CPUs set. Every member first loads tarantool's Lua runtime "
        "(%s CPU-ms here: `tarantool -e 'os.exit(0)'`, median of 9; a member that "
        "also bootstraps a fresh directory with the members' defaults: %s CPU-ms; "
        "tarantool's options do not change that: memtx_memory 32-256 MiB, "
        "readahead, net_msg_max, log_level, feedback_enabled, GC and JIT off during "
        "box.cfg all measured equal, memtx_memory under 32 MiB is refused). That is "
        "pure CPU, and a set cannot bootstrap before all its members listen; the rest "
        "of its start (bootstrap, join, full mesh) is mostly waiting: retries and "
        "round trips. So wave 1 ends at the earliest when the CPUs have loaded the "
        "runtime of every member of both sets: the %d members of the other set add "
        "at least %d x %s / %d CPUs = %s ms to the slowest set alone. Likewise the "
        "last wave starts the api on every host at once, and each instance's "
        "interpreter and imports take %s CPU-ms (`%s` without arguments, one "
        "process: one CPU at a time): %d of them at once take at least %s ms more "
        "than one alone. up() "
        "takes at least the critical path plus both, with nothing else on the "
        "machine. Other load on the machine stretches the critical path measured "
        "here more than these CPU figures, so the two ratios below are a quiet "
        "machine's bounds only when the load average was low."
        % (
            c.ms(runtime),
            c.ms(start_cpu["bootstrap"]),
            members,
            members,
            c.ms(runtime),
            cores,
            c.ms(wave1),
            c.ms(api),
            "python3 -I -S api.py",
            apis,
            c.ms(wave3),
        )
    )
    classes = ["total", "tarantools", "hosts' contexts", "master"]
    rows = [
        (
            "%s alone: CPU, %s (CPU-ms)" % (s, "all processes" if k == "total" else k),
            c.ms(timeline[s + " alone"].get("cpu " + k, 0.0) / 1000),
        )
        for s in sets
        for k in classes
    ]
    rows += [
        ("a member's Lua runtime (CPU-ms)", c.ms(runtime)),
        ("a member's start with its bootstrap (CPU-ms)", c.ms(start_cpu["bootstrap"])),
        ("an api's interpreter and imports (CPU-ms)", c.ms(api)),
        ("wave 1: the other set's members' runtimes, on %d CPUs" % cores, c.ms(wave1)),
        ("wave 3: %d api starts at once vs one alone, on %d CPUs" % (apis, cores), c.ms(wave3)),
        ("lowest up(): critical path + both", c.ms(floor)),
        ("best up / critical path possible here", "%.2fx" % (floor / critical)),
        ("best sequential / up possible here", "%.2fx" % (sequential / floor)),
    ]
    report.table(["floor", "ms"], rows)


def main() -> int:
    return c.bench_main(run)


if __name__ == "__main__":
    raise SystemExit(main())
