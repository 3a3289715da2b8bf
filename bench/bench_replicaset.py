"""Replica set start: 3 members on 3 lab hosts (remoteexec) vs 3 local tarantools.

- cold: ``Master()`` + ``connect_all`` to 3 lab hosts + ``ReplicaSet.start()``
  until full mesh (a new master each run: ssh, interpreter bootstrap and the
  tarantool version check are all counted);
- warm: ``ReplicaSet.start()`` until full mesh on hosts already connected;
- baseline: the same three instances (same init.lua, same ``box.cfg``) started
  on this machine by plain ``subprocess.Popen``, waiting in-process on the same
  conditions (READY=1 with STATUS=running on NOTIFY_SOCKET, then ``box.info``
  running with the intended ro and every upstream and downstream 'follow'),
  polled every 2 ms: the physical limit. Both sides launch the replicas first
  and the leader last (see ReplicaSet.start: it avoids a retry period);
- stop: ``ReplicaSet.stop()`` (all members in parallel, SIGTERM, waited for)
  vs SIGTERM + wait in the baseline.

What ``start()``/``stop()`` return is not taken on trust: each is also
measured from outside, by a client on this machine. "usable" is the time
from the start call until asynctnt can insert a row on the leader and read
it back on every replica (the leader's ``app_lua`` grants guest read/write
and creates the space, on both sides); "gone" is the time from the stop call
until no member's port accepts a TCP connection and no member's pid is
alive per /proc (same pid and start time). Both sides are measured the
same way.

Warm and baseline rounds alternate, in one run. replication_timeout 0.1 s.

Run: ``python bench/bench_replicaset.py`` (needs root for the lab).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import _common as c

ROUNDS = 15
COLD_ROUNDS = 3
REPLICATION_TIMEOUT = 0.1
FACTOR = 1.3
COLD_LIMIT = 1.5
STOP_LIMIT = 0.5
PHASES = ("connect", "spawn", "running", "full_mesh", "total", "usable", "stop", "gone")
OUTSIDE_TIMEOUT = 10.0  # bound of each outside check
POLL = 0.002
#: The leader's app: what a client needs to write (replicated to the replicas).
SCHEMA = """
box.schema.user.grant('guest', 'read,write', 'universe', nil, {if_not_exists = true})
box.schema.space.create('bench', {if_not_exists = true})
box.space.bench:create_index('pk', {if_not_exists = true})
"""


# -- outside checks: a client and /proc on this machine -----------------------


def _split(uri: str) -> Tuple[str, int]:
    host, port = uri.rsplit(":", 1)
    return host.strip("[]"), int(port)


async def _request(uri: str, fn: Any, deadline: float) -> Any:
    """``fn(conn)`` on a fresh connection to ``uri``, retried until it succeeds."""
    import asynctnt

    host, port = _split(uri)
    last: Optional[BaseException] = None
    for _ in range(int(OUTSIDE_TIMEOUT / POLL) + 2):
        if time.monotonic() >= deadline:
            break
        conn = asynctnt.Connection(
            host=host, port=port, connect_timeout=1, request_timeout=1, reconnect_timeout=0
        )
        try:
            await conn.connect()
            result = await fn(conn)
            if result is not None:
                return result
        except (OSError, asyncio.TimeoutError, asynctnt.exceptions.TarantoolError) as e:
            last = e
        finally:
            with contextlib.suppress(Exception):
                await conn.disconnect()
        await asyncio.sleep(POLL)
    raise RuntimeError("%s: no usable answer within %gs (last: %r)" % (uri, OUTSIDE_TIMEOUT, last))


def _wait_usable(leader: str, replicas: Sequence[str], key: int) -> None:
    """Until a row inserted on ``leader`` can be read on every replica."""

    async def insert(conn: Any) -> Any:
        return await conn.replace("bench", [key, "x"])

    async def select(conn: Any) -> Any:
        rows = list(await conn.select("bench", [key]))
        return rows or None

    async def go() -> None:
        deadline = time.monotonic() + OUTSIDE_TIMEOUT
        await _request(leader, insert, deadline)
        await asyncio.gather(*[_request(uri, select, deadline) for uri in replicas])

    asyncio.run(go())


def _closed(uri: str) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        try:
            sock.connect(_split(uri))
        except OSError:
            return True
    return False


def _wait_gone(uris: Sequence[str], pids: Sequence[Tuple[int, int]]) -> None:
    """Until no port in ``uris`` accepts and no (pid, start time) is alive."""
    from tests.helpers import oracle

    deadline = time.monotonic() + OUTSIDE_TIMEOUT
    for _ in range(int(OUTSIDE_TIMEOUT / POLL) + 2):
        alive = [ident for ident in pids if oracle.identity(ident[0]) == ident]
        if not alive and all(_closed(uri) for uri in uris):
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL)
    raise RuntimeError("still there %gs after stop: %s %s" % (OUTSIDE_TIMEOUT, uris, pids))


def _identities(pids: Sequence[Optional[int]]) -> List[Tuple[int, int]]:
    from tests.helpers import oracle

    found = [ident for ident in (oracle.identity(pid) for pid in pids if pid) if ident]
    if len(found) != len(pids):
        raise RuntimeError("member pids not alive before stop: %s" % (pids,))
    return found


# -- baseline: plain subprocess on this machine -------------------------------


def _baseline_once(version: Tuple[int, ...], root: str) -> Dict[str, float]:
    from remoteexec.tarantool.config import box_cfg_for, render_init_lua
    from remoteexec.target import tarantool as tt

    uris = ["127.0.0.1:%d" % c.free_port() for _ in range(3)]
    set_uuid = str(uuid.uuid4())
    members: List[Dict[str, Any]] = []
    for i, uri in enumerate(uris):
        work = tempfile.mkdtemp(prefix="m%d-" % i, dir=root)
        member: Dict[str, Any] = {"dir": work, "uuid": str(uuid.uuid4()), "ro": i != 0}
        cfg = box_cfg_for(
            version,
            listen=uri,
            work_dir=work,
            replication=uris,
            read_only=member["ro"],
            replication_timeout=REPLICATION_TIMEOUT,
            instance_uuid=member["uuid"],
            replicaset_uuid=set_uuid,
        )
        init = render_init_lua(
            box_cfg=cfg,
            probe_socket=work + "/probe.sock",
            app_lua=SCHEMA if i == 0 else "",
            replication_user="guest",
        )
        with open(work + "/init.lua", "w", encoding="utf-8") as f:
            f.write(init)
        members.append(member)
    for i, member in enumerate(members):
        member["peers"] = [[m["uuid"], str(j), uris[j]] for j, m in enumerate(members) if j != i]

    t0 = time.perf_counter()
    try:
        # Replicas first, the leader last: the order ReplicaSet.start() uses.
        for member in members[1:] + members[:1]:
            member["notify"] = tt.NotifyListener(member["dir"] + "/notify.sock")
            with open(member["dir"] + "/output.log", "ab") as out:
                member["proc"] = subprocess.Popen(
                    ["tarantool", member["dir"] + "/init.lua"],
                    cwd=member["dir"],
                    env=dict(os.environ, NOTIFY_SOCKET=member["notify"].path),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            member["notify"].pid = member["proc"].pid
        t_spawn = time.perf_counter()
        for member in members:
            alive = member["proc"].poll
            if not member["notify"].wait_ready(10, alive=lambda alive=alive: alive() is None):
                raise RuntimeError("baseline member did not start: %s" % member["dir"])
        t_running = time.perf_counter()
        mesh_deadline = time.monotonic() + 10.0
        while not all(_healthy(tt, m) for m in members):
            if time.monotonic() > mesh_deadline:
                raise RuntimeError("baseline set not in full mesh within 10 s")
            time.sleep(0.002)
        t_mesh = time.perf_counter()
        _wait_usable(uris[0], uris[1:], 1)
        t_usable = time.perf_counter()
        pids = _identities([m["proc"].pid for m in members])
        t_stop0 = time.perf_counter()
        for member in members:
            member["proc"].terminate()
        for member in members:
            member["proc"].wait(10)
        t_stop = time.perf_counter()
        _wait_gone(uris, pids)
        t_gone = time.perf_counter()
    finally:
        for member in members:
            if "proc" in member and member["proc"].poll() is None:
                member["proc"].kill()
                member["proc"].wait(10)
            if "notify" in member:
                member["notify"].close()
    return {
        "spawn": t_spawn - t0,
        "running": t_running - t_spawn,
        "full_mesh": t_mesh - t_running,
        "total": t_mesh - t0,
        "usable": t_usable - t0,
        "stop": t_stop - t_stop0,
        "gone": t_gone - t_stop0,
    }


def _healthy(tt: Any, member: Dict[str, Any]) -> bool:
    """The conditions ``wait_instance`` checks: running, role, every link 'follow'."""
    from remoteexec.tarantool.scripts import box_status_lua

    status = tt.box_status(member["dir"] + "/probe.sock", box_status_lua(), 1.0)
    return (
        status.get("ok") is True
        and status["status"] == "running"
        and status["ro"] == member["ro"]
        and not tt.link_problems(status, member["peers"])
    )


# -- remoteexec on the lab ----------------------------------------------------


def _remote_once(hosts: List[Any], port: int) -> Dict[str, float]:
    """One start→usable→stop→gone of a set on ``hosts``; the set's own timings
    plus the outside ones (seconds from the start/stop call)."""
    from remoteexec.tarantool import ReplicaSet, TarantoolInstance

    members = [
        TarantoolInstance(on=h, listen=port, app_lua=SCHEMA if i == 0 else "", timeout=20)
        for i, h in enumerate(hosts)
    ]
    rs = ReplicaSet(
        "bench%d" % port, members=members, replication_timeout=REPLICATION_TIMEOUT, timeout=20
    )
    try:
        t0 = time.perf_counter()
        timings = rs.start()
        _wait_usable(rs.leader.uri, [m.uri for m in rs.replicas], 1)
        timings["usable"] = time.perf_counter() - t0
        pids = _identities([m.pid for m in rs.members])
        uris = [m.uri for m in rs.members]
        t0 = time.perf_counter()
        timings["stop"] = rs.stop()
        _wait_gone(uris, pids)
        timings["gone"] = time.perf_counter() - t0
    except BaseException:
        with contextlib.suppress(Exception):
            rs.stop()
        raise
    return timings


def _connect(master: Any, lab: Any) -> List[Any]:
    """Every lab host, in parallel, with strict host key checking (as the tests)."""
    hosts: List[Any] = master.connect_all(lab.targets, **c.connect_options(lab))
    return hosts


def _cold_once(lab: Any, port: int) -> Dict[str, float]:
    import remoteexec as rx

    t0 = time.perf_counter()
    with rx.Master(heartbeat_timeout=10) as master:
        hosts = _connect(master, lab)
        connected = time.perf_counter() - t0
        timings = _remote_once(hosts, port)
    timings["connect"] = connected
    timings["total"] += connected
    timings["usable"] += connected
    return timings


def _median(rounds: List[Dict[str, float]], phase: str) -> float:
    return c.Stats.of([r.get(phase, 0.0) for r in rounds]).median


def _against_baseline(
    report: c.Report,
    label: str,
    warm: List[Dict[str, float]],
    base: List[Dict[str, float]],
    phase: str,
) -> None:
    """The target: the median warm ``phase`` within FACTOR of the baseline's."""
    w, b = _median(warm, phase), _median(base, phase)
    report.target(
        "%s / baseline (median)" % label,
        "%.2fx (%s vs %s ms)" % (w / b, c.ms(w), c.ms(b)),
        "≤ %gx" % FACTOR,
        w <= FACTOR * b,
    )


def run() -> c.Report:
    report = c.lab_report(
        "Replica set start: 3 members on 3 lab hosts vs 3 local tarantools", ["asynctnt"]
    )
    if report.skipped:
        return report
    if shutil.which("tarantool") is None:
        report.skipped = "tarantool is not installed"
        return report
    import remoteexec as rx
    from remoteexec.lab import Lab
    from remoteexec.target import tarantool as tt

    version = tuple(tt.tarantool_version("tarantool")["version"])
    ports = iter(range(3401, 3401 + ROUNDS + COLD_ROUNDS + 10))
    warm: List[Dict[str, float]] = []
    base: List[Dict[str, float]] = []
    cold: List[Dict[str, float]] = []
    root = tempfile.mkdtemp(prefix="rxb-", dir="/tmp")  # short: unix socket paths
    try:
        with Lab(hosts=3) as lab:
            c.progress("lab %s up: %s" % (lab.name, ", ".join(lab.targets)))
            for i in range(COLD_ROUNDS):
                cold.append(_cold_once(lab, next(ports)))
                c.progress("cold %d: %.3fs" % (i + 1, cold[-1]["total"]))
            with rx.Master(heartbeat_timeout=10) as master:
                hosts = _connect(master, lab)
                _remote_once(hosts, next(ports))  # warm-up: facts cached, code imported
                _baseline_once(version, root)
                for i in range(ROUNDS):
                    pair: List[Callable[[], None]] = [
                        lambda: warm.append(_remote_once(hosts, next(ports))),
                        lambda: base.append(_baseline_once(version, root)),
                    ]
                    for step in pair if i % 2 == 0 else reversed(pair):
                        step()
                    c.progress(
                        "round %d: warm %.3fs, baseline %.3fs"
                        % (i + 1, warm[-1]["total"], base[-1]["total"])
                    )
    finally:
        shutil.rmtree(root, ignore_errors=True)

    report.text(
        "3-member replica set, replication_timeout %g s, tarantool %s. Medians in ms of "
        "%d warm and %d baseline rounds (alternating) and %d cold runs. Phases: spawn "
        "(files written, processes started), running (READY=1 + STATUS=running, ro as "
        "intended), full mesh (every upstream and downstream 'follow'), total = start to "
        "full mesh (cold: from `Master()` through `connect_all`), i.e. when `start()` "
        "returned; usable = start to a client on this machine (asynctnt) having "
        "inserted a row on the leader and read it on both replicas; stop = what "
        "`stop()` took (baseline: SIGTERM + wait); gone = stop call to every member's "
        "port refusing connections and every member's pid gone from /proc. "
        "Both launch the replicas first and the leader last. Bootstrap time moves in "
        "steps of replication_timeout (peers retry refused connections and JOINs), so "
        "rounds fall on steps of about 100 ms and medians are the fair comparison; "
        "a phase's share moves with how long spawn took (tarantool starts up meanwhile)."
        % (REPLICATION_TIMEOUT, ".".join(map(str, version)), ROUNDS, ROUNDS, COLD_ROUNDS)
    )
    rows = []
    for phase in PHASES:
        b = _median(base, phase) if phase != "connect" else None
        w = _median(warm, phase) if phase != "connect" else None
        rows.append(
            (
                phase.replace("_", " "),
                c.ms(b) if b is not None else "-",
                c.ms(w) if w is not None else "-",
                c.ratio(w, b) if b and w else "-",
                c.ms(_median(cold, phase)),
            )
        )
    rows.append(
        (
            "total (best round)",
            c.ms(min(r["total"] for r in base)),
            c.ms(min(r["total"] for r in warm)),
            c.ratio(min(r["total"] for r in warm), min(r["total"] for r in base)),
            c.ms(min(r["total"] for r in cold)),
        )
    )
    report.table(
        ["phase", "baseline: local subprocess", "remoteexec warm", "warm / baseline", "cold"],
        rows,
    )
    _against_baseline(report, "warm start→full mesh", warm, base, "total")
    cold_total = _median(cold, "total")
    report.target(
        "cold connect+start→full mesh, 3 hosts (median)",
        "%s ms" % c.ms(cold_total),
        "< %g s" % COLD_LIMIT,
        cold_total < COLD_LIMIT,
    )
    _against_baseline(report, "warm start→usable by a client", warm, base, "usable")
    gone = [r["gone"] for r in warm + cold]
    report.target(
        "stop call→ports closed and pids gone, whole set (worst of %d)" % len(gone),
        "%s ms" % c.ms(max(gone)),
        "< %g s" % STOP_LIMIT,
        max(gone) < STOP_LIMIT,
    )
    return report


def main() -> int:
    return c.bench_main(run)


if __name__ == "__main__":
    raise SystemExit(main())
