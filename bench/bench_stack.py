"""Stack up/down: a 3-tier stack on 3 lab hosts vs its critical path and a sequential start.

The stack (7 services, each tier using the one below it):

- ``storage``: a 3-member replica set, one member per host (replication_timeout 0.1 s);
- ``router``: one Tarantool instance per host (a group, ``on=[a, b, c]``),
  ``listen=0.0.0.0:0``, whose app connects to the storage leader through
  net.box at start (the leader's URI reaches it through a reference);
- ``api``: one Python HTTP server per host (a group), which connects to
  every router (their URIs, picked at start, through a reference) before it
  serves ``/health``; ready when the health URL answers 200.

Measured in the same run, rounds alternating:

- ``up``: ``Stack.up()`` until every service is ready;
- each service started alone with the same API (``service.start()``), one
  after another in dependency order, each timed: the **critical path** is
  the sum over the tiers of the slowest service in the tier (what a perfect
  scheduler could reach), **sequential** the sum of them all (what starting
  the services one after another takes);
- ``down``: ``Stack.down()`` of the started stack.

- ``by hand``: the same services started tier by tier, each tier's at once
  from threads (the best plan, known in advance, without a graph).

Targets: up ≤ 1.15x the critical path and ≤ 1.15x by hand, up at least
1.8x faster than sequential (median rounds), down ≤ 0.3 s (median).

Run: ``python bench/bench_stack.py`` (needs root for the lab).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import time
from typing import Any, Dict, List, Tuple

import _common as c

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "15"))
CRITICAL_FACTOR = 1.15
SEQUENTIAL_FACTOR = 1.8
DOWN_LIMIT = 0.3
API_PORT = 8080
#: The router's app: it reads the storage leader through net.box at start.
ROUTER_LUA = """
local conn = require('net.box').connect(params.storage, {wait_connected = 10})
assert(conn:ping(), 'storage unreachable: ' .. tostring(params.storage))
rawset(_G, 'storage_conn', conn)
"""
#: The api: connects to every router, then serves /health.
API_PY = """
import http.server, socket, sys
for uri in sys.argv[1].split(','):
    host, port = uri.rsplit(':', 1)
    socket.create_connection((host, int(port)), timeout=5).close()
class Health(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):
        self.send_response(200); self.send_header('Content-Length', '0'); self.end_headers()
    do_GET = do_HEAD
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(('0.0.0.0', int(sys.argv[2])), Health).serve_forever()
"""


def _build(hosts: List[Any], port: int) -> Tuple[Any, Dict[str, List[Any]]]:
    """The stack, and its services by tier (for the alone-and-sequential runs)."""
    import remoteexec as rx
    from remoteexec.stack import Stack
    from remoteexec.tarantool import ReplicaSet, TarantoolInstance

    stack = Stack("bench%d" % port)
    storage = stack.add(
        ReplicaSet(
            "storage",
            members=[(h, port) for h in hosts],
            replication_timeout=0.1,
            box_cfg={
                "memtx_memory": 32 * 1024 * 1024,
            },
            timeout=20,
        ),
        name="storage",
    )
    router = stack.add(
        lambda h: TarantoolInstance(
            on=h,
            listen="0.0.0.0:0",
            app_lua=ROUTER_LUA,
            app_params={"storage": storage.ref("leader.uri")},
            box_cfg={"memtx_memory": 32 * 1024 * 1024},
            timeout=20,
        ),
        name="router",
        on=hosts,
    )
    api = stack.add(
        lambda h: rx.HTTPExecutor(
            [c.PY, "-c", API_PY, router.ref("uri"), str(API_PORT)],
            url="http://127.0.0.1:%d/health" % API_PORT,
            on=h,
            timeout=20,
            sleep=0.01,
        ),
        name="api",
        on=hosts,
    )
    tiers = {
        "storage": [storage.service],
        "router": [m.service for m in router.members],
        "api": [m.service for m in api.members],
    }
    return stack, tiers


def _latency(stack: Any, events: List[Any]) -> float:
    """The stack's own delay, from its events: the largest gap between the
    moment a service's last dependency was ready and its own start."""
    at = {(e.kind, e.service): e.time for e in events}
    gaps = [0.0]
    for name, deps in stack.dependencies().items():
        if deps:
            gaps.append(at[("starting", name)] - max(at[("ready", d)] for d in deps))
    return max(gaps)


def _stack_once(hosts: List[Any], port: int) -> Dict[str, float]:
    stack, _ = _build(hosts, port)
    events: List[Any] = []
    stack.subscribe(events.append)
    t0 = time.perf_counter()
    try:
        stack.up()
        up = time.perf_counter() - t0
    except BaseException:
        with contextlib.suppress(Exception):
            stack.down()
        raise
    t0 = time.perf_counter()
    stack.down()
    return {"up": up, "down": time.perf_counter() - t0, "latency": _latency(stack, events)}


def _alone_once(hosts: List[Any], port: int) -> Dict[str, float]:
    """Each service started alone, one after another; critical path and sequential."""
    stack, tiers = _build(hosts, port)
    stack.validate()
    started: List[Any] = []
    per_tier: Dict[str, List[float]] = {}
    try:
        for tier, services in tiers.items():
            for service in services:
                t0 = time.perf_counter()
                service.start()
                per_tier.setdefault(tier, []).append(time.perf_counter() - t0)
                started.append(service)
    finally:
        for service in reversed(started):
            with contextlib.suppress(Exception):
                service.stop()
    out = {"critical": sum(max(v) for v in per_tier.values())}
    out["sequential"] = sum(sum(v) for v in per_tier.values())
    for tier, values in per_tier.items():
        out["alone " + tier] = max(values)
    return out


def _by_hand_once(hosts: List[Any], port: int) -> Dict[str, float]:
    """The same services started by hand with the best plan known in advance:
    each tier's services at once (a thread each), the next tier when all are
    ready. What the stack's scheduling adds is the difference."""
    import threading

    stack, tiers = _build(hosts, port)
    stack.validate()
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
        for services in tiers.values():
            threads = [threading.Thread(target=start, args=(s,)) for s in services]
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


def run() -> c.Report:
    report = c.lab_report("Stack: 3 tiers, 7 services on 3 lab hosts")
    if report.skipped:
        return report
    if shutil.which("tarantool") is None:
        report.skipped = "tarantool is not installed"
        return report
    import remoteexec as rx
    from remoteexec.lab import Lab

    ports = itertools.count(3501)
    stacked: List[Dict[str, float]] = []
    alone: List[Dict[str, float]] = []
    by_hand: List[Dict[str, float]] = []
    with Lab(hosts=3) as lab:
        c.progress("lab %s up: %s" % (lab.name, ", ".join(lab.targets)))
        with rx.Master(heartbeat_timeout=10) as master:
            hosts = master.connect_all(lab.targets, **c.connect_options(lab))
            _stack_once(hosts, next(ports))  # warm-up: facts cached, code imported
            for i in range(ROUNDS):
                steps = [
                    lambda: stacked.append(_stack_once(hosts, next(ports))),
                    lambda: alone.append(_alone_once(hosts, next(ports))),
                    lambda: by_hand.append(_by_hand_once(hosts, next(ports))),
                ]
                for step in steps[i % 3 :] + steps[: i % 3]:
                    step()
                c.progress(
                    "round %d: up %.3fs, by hand %.3fs, critical %.3fs, sequential %.3fs,"
                    " down %.3fs"
                    % (
                        i + 1,
                        stacked[-1]["up"],
                        by_hand[-1]["by_hand"],
                        alone[-1]["critical"],
                        alone[-1]["sequential"],
                        stacked[-1]["down"],
                    )
                )
    up, critical = _median(stacked, "up"), _median(alone, "critical")
    sequential, down = _median(alone, "sequential"), _median(stacked, "down")
    hand = _median(by_hand, "by_hand")
    latency = max(r["latency"] for r in stacked)
    report.text(
        "storage: a 3-member replica set (one member per host); router: a Tarantool "
        "instance per host on port 0, whose app reaches the storage leader through "
        "net.box (a reference carries the URI); api: a Python HTTP server per host "
        "that connects to every router (their ports, picked at start, by reference) "
        "before it serves /health. Medians of %d rounds of each, alternating. "
        "Critical path and sequential come from the same runs: each service started "
        "alone with `start()`, one after another in dependency order; critical = the "
        "slowest of each tier, summed; sequential = all of them, summed. By hand: the "
        "same services, each tier's started at once from threads, tier after tier: "
        "the best plan known in advance, with no graph; up / by hand is what the "
        "stack's scheduling adds. The 3 lab hosts share this machine's %s CPUs, so "
        "services started together contend for them: a tier started at once takes "
        "longer than its slowest service alone, which the critical path does not "
        "count. The scheduling delay is read from the stack's own events: the worst "
        "gap, over all rounds, between a service's last dependency being ready and its "
        "start. Bootstrap of the replica set moves in steps of replication_timeout "
        "(0.1 s), so single rounds vary by that much. No scheduler can make "
        "sequential / up exceed sequential / critical path (the ceiling row): the "
        "replica set, one tier on its own, is most of the critical path." % (ROUNDS, os.cpu_count())
    )
    rows = [
        ("stack up()", c.ms(up)),
        ("by hand, tier by tier in parallel", c.ms(hand)),
        ("critical path", c.ms(critical)),
        ("sequential", c.ms(sequential)),
        ("ceiling of sequential / up: sequential / critical path", c.ratio(sequential, critical)),
        ("stack down()", c.ms(down)),
        ("scheduling delay: dependency ready → dependent starting (worst)", c.ms(latency)),
    ]
    rows += [
        ("alone: slowest " + tier, c.ms(_median(alone, "alone " + tier)))
        for tier in ("storage", "router", "api")
    ]
    report.table(["phase", "median ms"], rows)
    report.target(
        "up / critical path (median)",
        "%.2fx (%s vs %s ms)" % (up / critical, c.ms(up), c.ms(critical)),
        "≤ %gx" % CRITICAL_FACTOR,
        up <= CRITICAL_FACTOR * critical,
    )
    report.target(
        "up / by hand, tiers in parallel (median): what the graph adds",
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


def main() -> int:
    return c.bench_main(run)


if __name__ == "__main__":
    raise SystemExit(main())
