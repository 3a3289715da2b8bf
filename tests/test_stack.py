"""The Stack on real lab hosts: scheduling, failure handling, references, exits.

Every service is a real process (the tests' helper, or a real tarantool) on
a namespaced sshd host. What the stack did is read from its events (master
timestamps) and what is left from /proc through the tests' own oracle
(``run_pids``), never from the product's process table.
"""

from __future__ import annotations

import itertools
import os
import pickle
import signal
import threading
from typing import Any, Iterator, List

import pytest
from conftest import HELPER, PY, connect_options, context_pids, need_tarantool, run_pids, wait_until

import remoteexec as rx
from remoteexec.stack import Stack, StackError, StackEvent
from remoteexec.tarantool import TarantoolInstance

pytestmark = pytest.mark.lab

_ports = itertools.count(23000)


@pytest.fixture(scope="module")
def st_master(lab: Any) -> Iterator[rx.Master]:
    assert lab.targets
    with rx.Master(heartbeat_timeout=10) as m:
        yield m


@pytest.fixture(scope="module")
def hosts(lab: Any, st_master: rx.Master) -> List[rx.Host]:
    return st_master.connect_all(lab.targets, **connect_options(lab))


@pytest.fixture
def nothing_left(st_master: rx.Master) -> Iterator[None]:
    """No process of the run before the test, and none within 10 s after it."""
    ctx = context_pids(st_master)
    assert run_pids(st_master.run_id, ctx) == []
    yield
    assert wait_until(lambda: not run_pids(st_master.run_id, ctx), 10), run_pids(
        st_master.run_id, ctx
    )


class Recorder:
    """The events of a stack, as a test subscribes to them."""

    def __init__(self, stack: Stack) -> None:
        self.events: List[StackEvent] = []
        self._lock = threading.Lock()
        stack.subscribe(self._add)

    def _add(self, event: StackEvent) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, kind: str, service: str) -> StackEvent:
        found = [e for e in self.events if e.kind == kind and e.service == service]
        assert len(found) == 1, (kind, service, self.events)
        return found[0]

    def kinds(self, service: str) -> List[str]:
        return [e.kind for e in self.events if e.service == service]


def http(host: rx.Host, delay: float = 0.0, mode: str = "http", **kwargs: Any) -> rx.TCPExecutor:
    """A TCP-ready helper server on ``host``, ready ``delay`` seconds after start."""
    port = next(_ports)
    cmd = [PY, HELPER] + (["after", str(delay)] if delay else []) + [mode, "127.0.0.1", str(port)]
    kwargs.setdefault("timeout", 30)
    return rx.TCPExecutor(cmd, host="127.0.0.1", port=port, on=host, **kwargs)


def failing(host: rx.Host, code: int, text: str) -> rx.TCPExecutor:
    """A server that exits ``code`` (printing ``text``) before it is ready."""
    cmd = [PY, HELPER, "exit", str(code), text]
    return rx.TCPExecutor(cmd, host="127.0.0.1", port=next(_ports), on=host, timeout=30)


def job(host: rx.Host, code: int, text: str) -> rx.SimpleExecutor:
    return rx.SimpleExecutor(["sh", "-c", "echo %s; exit %d" % (text, code)], on=host)


# -- scheduling ----------------------------------------------------------------


@pytest.mark.usefixtures("nothing_left")
def test_independent_services_start_concurrently(hosts: List[rx.Host]) -> None:
    """Five services with no dependency between them, three on one host: each
    takes 0.8 s to become ready, and every one has started before any is ready."""
    a, b, c = hosts
    stack = Stack("wide")
    rec = Recorder(stack)
    for i, host in enumerate([a, b, c, a, a]):
        stack.add(http(host, delay=0.8), name="s%d" % i)
    assert stack.waves() == [["s0", "s1", "s2", "s3", "s4"]]
    with stack:
        starts = [rec.of("starting", "s%d" % i).time for i in range(5)]
        readies = [rec.of("ready", "s%d" % i).time for i in range(5)]
        assert max(starts) < min(readies), (starts, readies)
        assert max(readies) - min(starts) < 0.8 * 5 / 2
        rows = {row["service"]: row for row in stack.status()}
        assert {r["state"] for r in rows.values()} == {"ready"}
        assert rows["s1"]["host"] == b.name and rows["s1"]["pid"]


@pytest.mark.usefixtures("nothing_left")
def test_dependents_wait_for_their_condition(hosts: List[rx.Host]) -> None:
    """'healthy' waits for readiness, 'completed' for a job's exit 0, in that order."""
    a, b, c = hosts
    stack = Stack("tiers")
    rec = Recorder(stack)
    base = stack.add(http(a, delay=0.5), name="base")
    seed = stack.add(job(b, 0, "seeded"), name="seed", depends_on=[base], job=True)
    top = stack.add(http(c), name="top", depends_on={base: "healthy", seed: "completed"})
    assert stack.waves() == [["base"], ["seed"], ["top"]]
    assert stack.dependencies()["top"] == {"base": "healthy", "seed": "completed"}
    timings = stack.up()
    try:
        assert set(timings) == {"base", "seed", "top"}
        assert rec.of("ready", "base").time <= rec.of("starting", "seed").time
        done = rec.of("exited", "seed")
        assert done.exit_code == 0 and done.final and done.job
        assert done.time <= rec.of("starting", top.name).time
        assert "seeded" in stack.logs("seed")
        rows = {row["service"]: row for row in stack.status()}
        assert rows["seed"]["state"] == "exited" and rows["seed"]["exit_code"] == 0
    finally:
        stack.down()


# -- failures ------------------------------------------------------------------


@pytest.mark.usefixtures("nothing_left")
def test_middle_tier_failure_stops_started_in_reverse_order(
    hosts: List[rx.Host], st_master: rx.Master
) -> None:
    a, b, c = hosts
    stack = Stack("shop")
    rec = Recorder(stack)
    base = stack.add(http(a), name="base")
    slow = stack.add(http(b, delay=1.0), name="slow", depends_on=[base])
    bad = stack.add(failing(c, 3, "mid tier broke"), name="bad", depends_on=[base])
    stack.add(http(a), name="top", depends_on=[slow, bad])
    with pytest.raises(StackError) as caught:
        stack.up()
    error = caught.value
    assert error.service == "bad" and error.host == c.name
    assert error.exit_code == 3
    assert "mid tier broke" in (error.output_tail or "")
    assert "service bad failed" in str(error) and "mid tier broke" in str(error)
    assert sorted(error.started) == ["base", "slow"]
    assert sorted(error.stopped) == ["bad", "base", "slow"]
    assert error.never_started == ["top"]
    assert "top" not in [e.service for e in rec.events]
    # The start under way (slow) was waited for, then stopped before base.
    assert rec.kinds("slow") == ["starting", "ready", "stopping", "stopped"]
    assert rec.of("stopped", "slow").time <= rec.of("stopping", "base").time
    assert rec.kinds("bad")[:2] == ["starting", "failed"]
    assert rec.of("failed", "bad").exit_code == 3
    assert run_pids(st_master.run_id, context_pids(st_master)) == []
    # down() after a partial failure: nothing left to stop, and again.
    assert stack.down() == {}
    assert stack.down() == {}
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is StackError and clone.never_started == ["top"] and str(clone) == str(error)


@pytest.mark.usefixtures("nothing_left")
def test_failing_job_fails_up_with_its_output(hosts: List[rx.Host]) -> None:
    a, b, _ = hosts
    stack = Stack("jobs")
    base = stack.add(http(a), name="base")
    seed = stack.add(job(b, 1, "seed-went-wrong"), name="seed", depends_on=[base], job=True)
    stack.add(http(a), name="api", depends_on=[seed])
    with pytest.raises(StackError) as caught:
        stack.up()
    assert caught.value.service == "seed" and caught.value.exit_code == 1
    assert "seed-went-wrong" in (caught.value.output_tail or "")
    assert caught.value.never_started == ["api"] and caught.value.started == ["base"]


@pytest.mark.usefixtures("nothing_left")
def test_bad_stacks_are_refused_before_anything_starts(
    hosts: List[rx.Host], st_master: rx.Master
) -> None:
    a = hosts[0]

    def refused(stack: Stack, match: str) -> None:
        rec = Recorder(stack)
        with pytest.raises(ValueError, match=match):
            stack.up()
        assert rec.events == []
        assert run_pids(st_master.run_id, context_pids(st_master)) == []

    cyc = Stack("cycle")
    cyc.add(http(a), name="x", depends_on=["z"])
    cyc.add(http(a), name="y", depends_on=["x"])
    cyc.add(http(a), name="z", depends_on=["y"])
    refused(cyc, r"dependency cycle: x -> z -> y -> x")

    unknown = Stack("unknown")
    unknown.add(http(a), name="x", depends_on=["ghost"])
    refused(unknown, "'x' depends_on: no service named 'ghost'")

    dup = Stack("dup")
    dup.add(http(a), name="x")
    with pytest.raises(ValueError, match="already has a service named 'x'"):
        dup.add(http(a), name="x")

    not_job = Stack("notjob")
    base = not_job.add(http(a), name="base")
    not_job.add(http(a), name="x", depends_on={base: "completed"})
    refused(not_job, "'base' is not a job")

    need_tarantool()
    db = TarantoolInstance(on=a, listen="0.0.0.0:0")
    refs = Stack("refs")
    handle = refs.add(db, name="db")
    with pytest.raises(ValueError, match=r"service 'db' has no endpoint 'url' \(it has: host"):
        handle.ref("url")
    late = Stack("late")
    late.add(TarantoolInstance(on=a, listen=0, app_params={"x": late.ref("ghost.uri")}), name="t")
    refused(late, "no service named 'ghost'")


@pytest.mark.usefixtures("nothing_left")
def test_a_service_that_exits_after_ready_is_reported(hosts: List[rx.Host]) -> None:
    _, b, _ = hosts
    stack = Stack("exits", poll=0.1)
    rec = Recorder(stack)
    stack.add(http(b), name="web")
    with stack:
        pid = stack.status()[0]["pid"]
        os.kill(pid, signal.SIGKILL)  # the test's own process (lab hosts share the pid space)
        assert wait_until(lambda: "exited" in rec.kinds("web"), 5)
        event = rec.of("exited", "web")
        assert event.final and event.host == b.name and event.exit_code is not None
        row = stack.status()[0]
        assert row["state"] == "exited" and row["exit_code"] == event.exit_code


# -- down and restart ------------------------------------------------------------


@pytest.mark.usefixtures("nothing_left")
def test_down_stops_dependents_first_and_independent_ones_in_parallel(hosts: List[rx.Host]) -> None:
    """x and y ignore SIGTERM (each stop takes its 1 s stop_timeout, then SIGKILL):
    both stops overlap, and base stops only after both."""
    a, b, c = hosts
    stack = Stack("down")
    rec = Recorder(stack)
    base = stack.add(http(a), name="base")
    stack.add(http(b, mode="stubborn", stop_timeout=1), name="x", depends_on=[base])
    stack.add(http(c, mode="stubborn", stop_timeout=1), name="y", depends_on=[base])
    stack.up()
    timings = stack.down()
    assert set(timings) == {"base", "x", "y"}
    x0, x1 = rec.of("stopping", "x").time, rec.of("stopped", "x").time
    y0, y1 = rec.of("stopping", "y").time, rec.of("stopped", "y").time
    assert x0 < y1 and y0 < x1, "x and y were not stopped in parallel"
    assert max(x1, y1) <= rec.of("stopping", "base").time
    assert stack.down() == {}


@pytest.mark.usefixtures("nothing_left")
def test_restart_with_dependents(hosts: List[rx.Host]) -> None:
    a, b, _ = hosts
    stack = Stack("restart")
    rec = Recorder(stack)
    base = stack.add(http(a), name="base")
    stack.add(http(b), name="web", depends_on=[base])
    with stack:
        pids = {row["service"]: row["pid"] for row in stack.status()}
        assert set(stack.restart("base", restart_dependents=True)) == {"base", "web"}
        again = {row["service"]: row["pid"] for row in stack.status()}
        assert all(again[n] != pids[n] for n in pids), (pids, again)
        stopping = [e.service for e in rec.events if e.kind == "stopping"]
        starting = [e.service for e in rec.events if e.kind == "starting"][2:]
        assert stopping == ["web", "base"] and starting == ["base", "web"]
        assert set(stack.restart("web")) == {"web"}


# -- references ------------------------------------------------------------------

#: Lets the client ask who it reached.
GRANT_LUA = "box.schema.user.grant('guest', 'execute', 'universe', nil, {if_not_exists = true})"
#: Connects to the reference it was given, at start: the app fails if it cannot.
CLIENT_LUA = """
local conn = require('net.box').connect(params.upstream, {wait_connected = 5})
assert(conn:ping(), 'cannot reach ' .. tostring(params.upstream))
rawset(_G, 'upstream_peer', conn:eval('return box.info.uuid'))
conn:close()
"""


@pytest.mark.usefixtures("nothing_left")
def test_a_port_picked_at_start_reaches_its_dependent(hosts: List[rx.Host]) -> None:
    """db listens on port 0 (the port is known only once it runs); the client,
    on another host, gets it through a reference in app_params and connects
    to it: an implicit dependency, since nothing declares it."""
    need_tarantool()
    a, b, _ = hosts
    stack = Stack("refs")
    db = stack.add(
        TarantoolInstance(on=a, listen="0.0.0.0:0", app_lua=GRANT_LUA, timeout=20), name="db"
    )
    client = TarantoolInstance(
        on=b, listen=0, app_lua=CLIENT_LUA, app_params={"upstream": db.ref("uri")}, timeout=20
    )
    stack.add(client, name="client")
    assert stack.waves() == [["db"], ["client"]]
    with stack:
        uri = db.service.endpoints["uri"]
        assert uri and not uri.endswith(":0")
        assert client.eval("return params.upstream") == uri
        assert client.eval("return upstream_peer") == db.service.eval("return box.info.uuid")


@pytest.mark.usefixtures("nothing_left")
def test_one_definition_on_several_hosts(hosts: List[rx.Host]) -> None:
    """on=[a, b, c]: api.1..api.3 from one factory; the group is a dependency
    (all members) and a reference (their URIs joined)."""
    need_tarantool()
    stack = Stack("group")
    rec = Recorder(stack)
    api = stack.add(
        lambda host: TarantoolInstance(on=host, listen="0.0.0.0:0", timeout=20),
        name="api",
        on=hosts,
    )
    assert [m.name for m in api.members] == ["api.1", "api.2", "api.3"]
    watcher = TarantoolInstance(on=hosts[0], listen=0, app_params={"apis": api.ref("uri")})
    stack.add(watcher, name="watcher")
    assert stack.waves() == [["api.1", "api.2", "api.3"], ["watcher"]]
    with stack:
        uris = [m.service.endpoints["uri"] for m in api.members]
        assert watcher.eval("return params.apis") == ",".join(uris)
        assert {rec.of("ready", "api.%d" % i).host for i in (1, 2, 3)} == {h.name for h in hosts}
        assert "== api.2 ==" in stack.logs("api")


FETCH = "import sys, urllib.request; print('got', urllib.request.urlopen(sys.argv[1]).status)"


@pytest.mark.usefixtures("nothing_left")
def test_an_executor_port_picked_at_start_reaches_a_job_on_another_host(
    hosts: List[rx.Host],
) -> None:
    """port=0: the port is picked on a at start; the server learns it through
    OwnPort, the job on b through the stack's reference to web's uri."""
    a, b, _ = hosts
    web = rx.TCPExecutor(
        [PY, HELPER, "http", "0.0.0.0", rx.OwnPort()], host="0.0.0.0", port=0, on=a, timeout=30
    )
    stack = Stack("ports")
    handle = stack.add(web, name="web")
    fetch = rx.SimpleExecutor([PY, "-c", FETCH, "http://" + handle.ref("uri") + "/"], on=b)
    stack.add(fetch, name="fetch", job=True)
    assert stack.dependencies()["fetch"] == {"web": "healthy"}
    with stack:
        uri = web.endpoints["uri"]
        assert uri and uri.split(":")[0] not in ("0.0.0.0", "127.0.0.1")
        assert "got 200" in stack.logs("fetch")
        assert uri in fetch.command


@pytest.mark.usefixtures("nothing_left")
def test_on_failure_restarts_up_to_max_restarts(hosts: List[rx.Host]) -> None:
    """A service killed after it was ready is started again (once: max_restarts=1),
    by its host's supervisor; killed again, its exit is final, in the events and
    in status()."""
    _, _, c = hosts
    stack = Stack("flaky", poll=0.1)
    rec = Recorder(stack)
    web = http(c)
    stack.add(web, name="web", restart="on-failure", max_restarts=1, restart_backoff=0.1)
    with stack:
        first = stack.status()[0]["pid"]
        os.kill(first, signal.SIGKILL)
        assert wait_until(lambda: rec.kinds("web").count("ready") == 2, 15), rec.events
        assert rec.kinds("web") == ["starting", "ready", "exited", "restarting", "ready"]
        assert rec.events[2].final is False and rec.events[2].exit_code != 0
        row = stack.status()[0]
        assert row["state"] == "ready" and row["pid"] not in (None, first)
        assert row["restarts"] == 1
        # An executor takes the policy (set_restart): its host's supervisor
        # restarted it, under the same start, not the stack from the master.
        assert web.status()["restarts"] == 1
        os.kill(row["pid"], signal.SIGKILL)
        assert wait_until(lambda: rec.kinds("web")[-1] == "exited", 5), rec.events
        assert rec.events[-1].final is True
        assert stack.status()[0]["state"] == "exited"


@pytest.mark.usefixtures("nothing_left")
def test_started_condition_does_not_wait_for_readiness(hosts: List[rx.Host]) -> None:
    """web waits only for slow's process ("started"), not for its app (1.5 s)."""
    need_tarantool()
    a, b, _ = hosts
    stack = Stack("started")
    rec = Recorder(stack)
    slow = stack.add(
        TarantoolInstance(on=a, listen=0, app_lua="require('fiber').sleep(1.5)", timeout=20),
        name="slow",
    )
    stack.add(http(b), name="web", depends_on={slow: "started"})
    with stack:
        assert rec.of("ready", "web").time < rec.of("ready", "slow").time
        assert rec.of("starting", "slow").time < rec.of("starting", "web").time


CTRL_C_SCRIPT = """
import json, sys
import remoteexec as rx
from remoteexec.stack import Stack

py, helper = sys.argv[1], sys.argv[2]
options, targets = json.loads(sys.argv[3]), json.loads(sys.argv[4])
with rx.Master(heartbeat_timeout=10) as master:
    a, b = master.connect_all(targets, **options)[:2]
    stack = Stack("ctrl-c")

    def told(event):
        print("EVENT", event.kind, event.service, flush=True)
        if event.kind == "ready" and event.service == "fast":
            print("READY", master.run_id, flush=True)

    stack.subscribe(told)

    def server(host, port, *before):
        command = [py, helper, *before, "http", "127.0.0.1", str(port)]
        return rx.TCPExecutor(command, host="127.0.0.1", port=port, on=host, timeout=30)

    fast = stack.add(server(a, 23901), name="fast")
    slow = stack.add(server(b, 23902, "after", "2"), name="slow", depends_on=[fast])
    stack.add(server(a, 23903), name="never", depends_on=[slow])
    try:
        stack.up()
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)
        sys.exit(130)
    print("NOT INTERRUPTED", flush=True)
"""


def test_ctrl_c_during_up_stops_what_started(lab: Any) -> None:
    """SIGINT while a start is under way: nothing new starts, the start under
    way ends, both started services are stopped (dependent first), then the
    KeyboardInterrupt goes on; nothing of the run is left."""
    import json
    import subprocess
    import sys

    from helpers import oracle

    args = [PY, HELPER, json.dumps(connect_options(lab)), json.dumps(lab.targets)]
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_SCRIPT, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: List[str] = []
    try:
        for _ in range(200):
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            lines.append(line.strip())
            if line.startswith("READY "):
                run_id = line.split()[1]
            if line.strip() == "EVENT starting slow":
                proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    events = [line for line in lines if line.startswith("EVENT ")]
    assert "INTERRUPTED" in lines and code == 130, lines
    assert "EVENT starting never" not in events
    assert "EVENT ready slow" in events  # the start under way was waited for
    assert events.index("EVENT stopped slow") < events.index("EVENT stopping fast"), events
    assert events[-1] == "EVENT stopped fast", events
    assert wait_until(lambda: not oracle.run_processes(run_id, []), 10)


@pytest.mark.usefixtures("nothing_left")
def test_an_exit_after_ready_during_up_fails_up(hosts: List[rx.Host]) -> None:
    """quick is killed right after it is ready, while slow still starts: up()
    fails naming quick's exit, and slow is stopped once its start ends."""
    a, b, _ = hosts
    stack = Stack("exit-during-up", poll=0.1)
    rec = Recorder(stack)
    quick = http(a)
    stack.add(quick, name="quick")
    stack.add(http(b, delay=2), name="slow")

    def kill_quick(event: StackEvent) -> None:
        if event.kind == "ready" and event.service == "quick":
            os.kill(quick.pid, signal.SIGKILL)  # type: ignore[arg-type]

    stack.subscribe(kill_quick)
    with pytest.raises(StackError, match=r"exited with code .* after it was ready") as caught:
        stack.up()
    assert caught.value.service == "quick" and caught.value.host == a.name
    assert rec.kinds("slow") == ["starting", "ready", "stopping", "stopped"]
    assert rec.of("exited", "quick").final is True
    assert stack.down() == {}


@pytest.mark.usefixtures("nothing_left")
def test_down_reports_every_failed_stop_together(hosts: List[rx.Host]) -> None:
    """Two services whose stop raises (SIGTERM ignored, strict_stop): down()
    still stops everything (base last) and raises one StackError naming both."""
    a, b, c = hosts
    stack = Stack("bad-stops")
    rec = Recorder(stack)
    base = stack.add(http(a), name="base")
    for name, host in (("x", b), ("y", c)):
        stubborn = http(host, mode="stubborn", stop_timeout=0.5, strict_stop=True)
        stack.add(stubborn, name=name, depends_on=[base])
    stack.up()
    with pytest.raises(StackError) as caught:
        stack.down()
    error = caught.value
    assert "2 of 3 services failed to stop" in str(error)
    assert sorted(line.split()[0] for line in error.errors) == ["x", "y"]
    assert error.stopped == ["base"]
    assert rec.of("stopped", "x").message and rec.of("stopped", "y").message
    assert max(rec.of("stopped", n).time for n in "xy") <= rec.of("stopping", "base").time
    assert stack.down() == {}


@pytest.mark.usefixtures("nothing_left")
def test_every_stop_is_bounded_by_the_stacks_stop_timeout(hosts: List[rx.Host]) -> None:
    """The service's own stop would wait 20 s for SIGTERM to work; the stack
    gives it 0.5 s, then kills it and says so."""
    import time

    stack = Stack("slow-stop", stop_timeout=0.5)
    stack.add(http(hosts[1], mode="stubborn", stop_timeout=20), name="stubborn")
    stack.up()
    t0 = time.monotonic()
    with pytest.raises(StackError, match=r"did not stop within 0\.5s \(stop_timeout\); killed"):
        stack.down()
    assert time.monotonic() - t0 < 5


@pytest.mark.usefixtures("nothing_left")
def test_restarts_by_the_hosts_supervisor_are_followed(hosts: List[rx.Host]) -> None:
    """An executor with its own restart policy is restarted by its host's
    supervisor; the stack reports the exit (not final), the restart and the
    ready again, then the final exit once the supervisor gives up."""
    _, b, _ = hosts
    stack = Stack("supervised", poll=0.05)
    rec = Recorder(stack)
    web = http(b, restart="on-failure", max_restarts=1, restart_backoff=0.5)
    stack.add(web, name="web")
    with stack:
        first = web.pid
        os.kill(first, signal.SIGKILL)  # type: ignore[arg-type]
        assert wait_until(lambda: rec.kinds("web").count("ready") == 2, 15), rec.events
        assert rec.kinds("web") == ["starting", "ready", "exited", "restarting", "ready"]
        assert rec.events[2].final is False
        row = stack.status()[0]
        assert row["state"] == "ready" and row["restarts"] == 1 and row["pid"] != first
        os.kill(row["pid"], signal.SIGKILL)
        assert wait_until(lambda: rec.kinds("web")[-1] == "exited", 10), rec.events
        assert rec.events[-1].final is True
        assert stack.status()[0]["state"] == "exited"
