"""Detached stacks on lab hosts: ``up -d`` (or ``up(detach=True)``), then
``status``, ``logs``, ``restart`` and ``down`` from later processes.

The stack is small (a Tarantool instance, an HTTP server that waits for it,
a ticker that prints its URI) so the module stays quick. The master's state
goes to a temporary ``XDG_STATE_HOME``; the hosts' to their own homes (a lab
host's home is private to it). Every test's project has a fresh name, and
its fixture takes it down, then kills whatever still carries its marker, so
a failing test leaves nothing behind either.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
import uuid
from typing import Any, Dict, Iterator, List

import pytest
from conftest import PY, REPO, connect_options, need_tarantool, wait_until

from remoteexec.target import procs

pytestmark = pytest.mark.lab

TICK = (
    "import sys, time\nfor i in range(10**6):\n"
    " print('tick', i, sys.argv[1], flush=True)\n time.sleep(0.2)"
)
#: Bound of one CLI call under the load of other suites.
CALL = 120.0
HOST_ROOT = "/root/.local/state"
HOLDER = textwrap.dedent(
    """\
    import sys
    import remoteexec as rx
    from remoteexec.stack import Stack
    from remoteexec.stack import file as stackfile
    from remoteexec.stack.project import Detaching

    path, project, what = sys.argv[1:4]
    with rx.Master() as m:
        stack = Stack.from_file(path, master=m)
        if what == "up":
            stack.up(detach=True, project=project)
            print("UP", flush=True)
            sys.stdin.read()
        else:
            hosts = stackfile.connect(stackfile.read(path), m)
            with Detaching(project, hosts, host_state_dir=None, source_file=path,
                           log_cap=1 << 20, log_keep=1):
                print("LOCKED", flush=True)
                sys.stdin.read()
    """
)


@pytest.fixture(scope="module")
def stack_file(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    need_tarantool()
    d = tmp_path_factory.mktemp("detach")
    path = d / "small.toml"
    path.write_text(
        textwrap.dedent(
            """\
            [defaults]
            identity_file = "%s"
            known_hosts_file = "%s"
            python = "%s"
            connect_timeout = 30

            [hosts]
            a = { target = "%s" }
            b = { target = "%s" }
            c = { target = "%s" }

            [tarantool.db]
            on = "a"
            listen = 3311

            [services.web]
            on = "b"
            command = ["%s", "-u", "-m", "http.server", "18081", "--bind", "127.0.0.1"]
            ready = { http = "http://127.0.0.1:18081/" }
            depends_on = { db = "healthy" }

            [services.ticker]
            on = "c"
            command = ["%s", "-u", "-c", %s, "${db.uri}"]
            depends_on = { db = "healthy" }
            restart = "on-failure"
            max_restarts = 2
            restart_backoff = 0.1
            """
        )
        % (lab.identity_file, lab.known_hosts_file, PY, *lab.targets, PY, PY, json.dumps(TICK))
    )
    return str(path)


@pytest.fixture(scope="module")
def state_home(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("state"))


@pytest.fixture(scope="module")
def here(stack_file: str, state_home: str) -> Iterator[Dict[str, Any]]:
    """This process, set up as a later process is: the master's state in
    ``state_home``, the file's hosts connected (for in-process looks)."""
    import remoteexec as rx
    from remoteexec.stack import file as stackfile

    before = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = state_home
    try:
        with rx.Master() as m:
            yield {"master": m, "hosts": stackfile.connect(stackfile.read(stack_file), m)}
    finally:
        if before is None:
            os.environ.pop("XDG_STATE_HOME", None)
        else:
            os.environ["XDG_STATE_HOME"] = before


def looked(here: Dict[str, Any], name: str) -> Dict[str, Dict[str, Any]]:
    """status() of project ``name`` from this process, by service."""
    from remoteexec.stack.project import attach

    with attach(name, here["master"]) as detached:
        return by_service(detached.status())


def env_for(state_home: str) -> Dict[str, str]:
    return dict(os.environ, XDG_STATE_HOME=state_home, PYTHONUNBUFFERED="1")


def cli(state_home: str, *args: str, timeout: float = CALL) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "remoteexec", *args],
        capture_output=True,
        text=True,
        env=env_for(state_home),
        timeout=timeout,
        cwd=REPO,
    )


def marked(project: str) -> List[int]:
    """Live pids carrying the project's marker (the keepers and what kept its environment)."""
    prefix = "detached.%s." % project
    found = []
    for pid in procs.all_pids():
        env = procs.read_environ(pid) or {}
        if env.get(procs.MARKER, "").startswith(prefix) and procs.is_alive(pid):
            found.append(pid)
    return found


def sessions_of(pids: List[int]) -> List[int]:
    """Every live process in the sessions of ``pids``."""
    sids = {f[2] for f in map(procs.stat_fields, pids) if f}
    return [
        p
        for p in procs.all_pids()
        if (f := procs.stat_fields(p)) and f[2] in sids and f[0] not in ("Z", "X")
    ]


@pytest.fixture
def project(here: Dict[str, Any]) -> Iterator[str]:
    """A fresh project name; afterwards ``down(force=True)`` if it is still
    known, then SIGKILL for whatever still carries its marker (and the
    sessions its keepers lead)."""
    from remoteexec.stack import project as projects

    name = "t%s" % uuid.uuid4().hex[:10]
    yield name
    if name in projects.names():
        with contextlib.suppress(Exception), projects.attach(name, here["master"]) as left_over:
            left_over.down(force=True)
    left = sessions_of(marked(name))
    for pid in left:
        os.kill(pid, signal.SIGKILL)


def status(state_home: str, name: str) -> List[Dict[str, Any]]:
    r = cli(state_home, "status", "-p", name, "--json")
    assert r.stderr == "" or "remoteexec:" not in r.stderr, r.stderr
    rows: List[Dict[str, Any]] = json.loads(r.stdout)["services"]
    return rows


def by_service(rows: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    return {r["service"]: r for r in rows}


def host_path(lab: Any, i: int, *parts: str) -> str:
    return lab.hosts[i].path(os.path.join(HOST_ROOT, "remoteexec", *parts))


def read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def start_holder(
    stack_file: str, project: str, action: str, state_home: str
) -> subprocess.Popen[str]:
    """A process running HOLDER's ``action``, once it said it has done it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, stack_file, project, action],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env_for(state_home),
    )
    assert holder.stdout is not None
    said = holder.stdout.readline().strip()
    if said != {"up": "UP", "lock": "LOCKED"}[action]:
        holder.kill()
        holder.wait(10)
        raise AssertionError("the %s holder said %r" % (action, said))
    return holder


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_survives_sigkill_then_status_logs_down_from_new_processes(
    lab: Any, stack_file: str, state_home: str, here: Dict[str, Any], project: str
) -> None:
    """up(detach=True), SIGKILL of that master: every service still runs, as
    ``status`` from a new process says; ``logs -f`` sees new lines; ``down``
    from a third process stops them all, pids gone, state removed; again: ok."""
    t0 = time.monotonic()
    holder = start_holder(stack_file, project, "up", state_home)
    try:
        took_up = time.monotonic() - t0
        holder.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        holder.wait(10)
    finally:
        holder.kill()
        holder.wait(10)
    now = looked(here, project)
    seen_here = time.monotonic() - killed
    assert all(r["state"] == "running" for r in now.values()), now
    rows = by_service(status(state_home, project))
    seen_running = time.monotonic() - killed
    assert set(rows) == {"db", "web", "ticker"}, rows
    for name, row in rows.items():
        assert row["state"] == "running", (name, row)
    assert rows["web"]["readiness"] == "ready", rows["web"]
    assert rows["db"]["readiness"] == "ready", rows["db"]
    pids = [int(r["pid"]) for r in rows.values()]

    # Modes: master state 0600 in 0700; the hosts' too.
    master_dir = os.path.join(state_home, "remoteexec", project)
    assert mode(master_dir) == 0o700
    assert mode(os.path.join(master_dir, "master.json")) == 0o600
    assert mode(host_path(lab, 0, project)) == 0o700
    assert mode(host_path(lab, 0, project, "host-a.json")) == 0o600
    assert mode(host_path(lab, 2, project, "logs", "c")) == 0o700
    assert "identity_file" in read(os.path.join(master_dir, "master.json"))

    # logs -f: new ticks arrive (numbers beyond the first ones shown).
    follow = subprocess.Popen(
        [sys.executable, "-m", "remoteexec", "logs", "ticker", "-f", "-n", "1", "-p", project],
        stdout=subprocess.PIPE,
        text=True,
        env=env_for(state_home),
    )
    ticks: List[int] = []
    try:
        assert follow.stdout is not None
        for _ in range(200):
            line = follow.stdout.readline()
            assert line.startswith("ticker@c | tick "), line
            ticks.append(int(line.split()[3]))
            if len(ticks) >= 4:
                break
        follow.send_signal(signal.SIGINT)
        assert follow.wait(20) == 0
    finally:
        follow.kill()
        follow.wait(10)
    assert ticks == sorted(ticks) and ticks[-1] >= ticks[0] + 3, ticks

    t1 = time.monotonic()
    r = cli(state_home, "down", "-p", project)
    took_down = time.monotonic() - t1
    assert r.returncode == 0, r.stdout + r.stderr
    assert "stopped ticker@c, web@b, db@a" in r.stdout or "stopped web@b, ticker@c, db@a" in (
        r.stdout
    ), r.stdout
    assert wait_until(lambda: not any(procs.is_alive(p) for p in pids), 10)
    assert sessions_of(pids) == [] and marked(project) == []
    assert not os.path.exists(os.path.join(master_dir, "master.json"))
    assert not os.path.exists(host_path(lab, 0, project, "host-a.json"))
    again = cli(state_home, "down", "-p", project)
    assert again.returncode == 0 and "nothing to bring down" in again.stdout, again
    print(
        "\nfigures: up(detach) %.2fs; SIGKILL -> all running: in-process %.2fs,"
        " status CLI %.2fs; down CLI %.2fs" % (took_up, seen_here, seen_running, took_down)
    )


def test_killed_from_outside_and_an_unrelated_pid(
    lab: Any, stack_file: str, state_home: str, here: Dict[str, Any], project: str
) -> None:
    """Processes killed from outside (as at a reboot): status says lost (keeper
    gone too) or exited with the code (the service alone), with the log tail;
    ``restart`` brings one back; a state entry pointing at an unrelated live
    pid: down does not signal it (and still stops the recorded session)."""
    t0 = time.monotonic()
    r = cli(state_home, "up", "-d", stack_file, "-p", project)
    took_up = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    rows = by_service(status(state_home, project))
    ticker, web = int(rows["ticker"]["pid"]), int(rows["web"]["pid"])
    for pid in sessions_of([ticker]):  # the keeper and the ticker: gone, no exit code
        os.kill(pid, signal.SIGKILL)
    os.kill(web, signal.SIGTERM)  # the service alone: its keeper records -15

    def settled() -> bool:
        now = looked(here, project)
        return now["ticker"]["state"] == "lost" and now["web"]["state"] == "exited"

    assert wait_until(settled, 30, 0.3)
    rows = looked(here, project)
    assert "tick" in rows["ticker"]["output_tail"], rows["ticker"]
    assert rows["web"]["exit_code"] == -15, rows["web"]
    assert "Serving HTTP" in rows["web"]["output_tail"], rows["web"]
    assert cli(state_home, "status", "-p", project).returncode == 1

    r = cli(state_home, "restart", "web", "-p", project)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = looked(here, project)
    assert rows["web"]["state"] == "running" and rows["web"]["readiness"] == "ready", rows
    assert rows["ticker"]["state"] == "lost"  # restart touches only what it names

    # db's entry now points at an unrelated live process.
    unrelated = subprocess.Popen(["sleep", "300"])
    try:
        db_pid = int(rows["db"]["pid"])
        db_tree = sessions_of([db_pid])
        path = host_path(lab, 0, project, "host-a.json")
        state = json.loads(read(path))
        state["services"]["db"][0]["pid"] = unrelated.pid
        with open(path, "w") as f:
            f.write(json.dumps(state))
        r = cli(state_home, "down", "-p", project)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "not ours: db@a" in r.stdout, r.stdout
        assert unrelated.poll() is None, "the unrelated process was signalled"
        assert wait_until(lambda: not any(procs.is_alive(p) for p in db_tree), 10), db_tree
    finally:
        unrelated.kill()
        unrelated.wait(10)
    assert marked(project) == []
    print("\nfigures: up -d (CLI, 3 hosts) %.2fs" % took_up)


def test_a_crash_is_restarted_after_up_returned(
    stack_file: str, state_home: str, here: Dict[str, Any], project: str
) -> None:
    """restart = "on-failure" outlives `up -d`: the keeper restarts a crashed
    service with no master running; status shows the new pid and the count;
    down then stops it for good."""
    r = cli(state_home, "up", "-d", stack_file, "-p", project)
    assert r.returncode == 0, r.stdout + r.stderr  # and that process has ended
    first = looked(here, project)["ticker"]
    assert first["restarts"] == 0 and first["pid"] != first["keeper_pid"], first
    os.kill(int(first["pid"]), signal.SIGKILL)  # the service alone: a crash

    def restarted() -> bool:
        now = looked(here, project)["ticker"]
        return now["state"] == "running" and now["restarts"] == 1 and now["pid"] != first["pid"]

    assert wait_until(restarted, 30, 0.2)
    again = looked(here, project)["ticker"]
    assert again["keeper_pid"] == first["keeper_pid"]
    assert wait_until(lambda: procs.is_alive(int(again["pid"])), 5)
    logs = cli(state_home, "logs", "ticker", "-p", project, "-n", "200").stdout
    assert "restarting in 0.2s (1 of 2)" in logs, logs
    r = cli(state_home, "down", "-p", project)
    assert r.returncode == 0, r.stdout + r.stderr
    pids = [int(first["keeper_pid"]), int(again["pid"])]
    assert wait_until(lambda: not any(procs.is_alive(p) for p in pids), 10)
    assert marked(project) == []


def test_a_python_built_stack_records_its_hops(lab: Any, state_home: str, project: str) -> None:
    """A stack built in Python on a host reached through another (a bastion
    that runs nothing): master.json records the hop, and a later attach
    (a new Master) reaches the host through it; down works the same way."""
    import remoteexec as rx
    from remoteexec.stack.project import attach

    with rx.Master() as m:
        gate = m.connect(lab.targets[0], name="gate", **connect_options(lab))
        inner = m.connect(lab.targets[2], via=gate, name="inner", **connect_options(lab))
        stack = rx.Stack("hops")
        stack.add(rx.SimpleExecutor(["sleep", "120"], on=inner), name="sleeper")
        stack.up(detach=True, project=project)
    with open(os.path.join(state_home, "remoteexec", project, "master.json")) as f:
        hosts = json.load(f)["hosts"]
    assert sorted(hosts) == ["gate", "inner"], hosts
    assert hosts["inner"]["via"] == "gate" and hosts["gate"]["via"] is None, hosts
    with rx.Master() as later, attach(project, later) as detached:
        assert detached.unreachable == {}
        (row,) = detached.status()
        assert (row["service"], row["host"], row["state"]) == ("sleeper", "inner", "running")
        pid = int(row["pid"])
        report = detached.down()
    assert report["stopped"], report
    assert wait_until(lambda: not procs.is_alive(pid), 10)


def test_a_port_picked_at_start_reaches_a_service_started_by_a_later_up(
    stack_file: str, tmp_path: Any, project: str
) -> None:
    """A Tarantool instance listening on a port picked at start, and a
    service that references it. The service is lost; a second ``up -d``
    (a new master, the instance left running) starts it with the port the
    first up recorded, not port 0."""
    import remoteexec as rx
    from remoteexec.stack import Stack
    from remoteexec.stack.project import attach

    with open(stack_file) as f:
        head = f.read().split("[tarantool.db]")[0]
    path = tmp_path / "picked.toml"
    path.write_text(
        head
        + textwrap.dedent(
            """            [tarantool.db]
            on = "a"
            listen = "127.0.0.1:0"

            [services.user]
            on = "a"
            command = ["%s", "-u", "-c", %s, "${db.uri}"]
            depends_on = { db = "healthy" }
            """
        )
        % (PY, json.dumps("import sys, time\nprint('uri', sys.argv[1])\ntime.sleep(600)"))
    )

    def user_said(detached: Any) -> str:
        (text,) = [t for s, _h, t in detached.logs("user") if s == "user"]
        return text

    with rx.Master() as m:
        Stack.from_file(str(path), master=m).up(detach=True, project=project)
    with rx.Master() as m, attach(project, m) as detached:
        assert wait_until(lambda: "uri" in user_said(detached), 20)
        first = user_said(detached).split()[-1]
        assert first.startswith("127.0.0.1:") and not first.endswith(":0"), first
        rows = by_service(detached.status())
    for pid in sessions_of([int(rows["user"]["pid"])]):  # lost, keeper and all
        os.kill(pid, signal.SIGKILL)
    with rx.Master() as m:
        again = Stack.from_file(str(path), master=m)
        timings = again.up(detach=True, project=project)
        assert sorted(timings) == ["user"], timings  # db left running
    with rx.Master() as m, attach(project, m) as detached:
        assert wait_until(lambda: "uri" in user_said(detached), 20)
        assert user_said(detached).split()[-1] == first
        detached.down()


def test_stale_lock_is_recovered_and_a_live_one_holds(
    stack_file: str, state_home: str, here: Dict[str, Any], project: str
) -> None:
    """A process holding the project's locks (master and hosts) makes another
    up wait; once it is SIGKILLed the locks are free at once."""
    holder = start_holder(stack_file, project, "lock", state_home)
    try:
        from remoteexec.stack.error import StackError
        from remoteexec.stack.project import Detaching

        def take(wait: float) -> None:
            with Detaching(
                project,
                here["hosts"],
                host_state_dir=None,
                source_file=None,
                log_cap=1 << 20,
                log_keep=1,
                lock_wait=wait,
            ):
                pass

        with pytest.raises(StackError, match="another up or down"):
            take(0.5)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        t0 = time.monotonic()
        take(30)
        assert time.monotonic() - t0 < 25
    finally:
        holder.kill()
        holder.wait(10)


def test_two_concurrent_ups_make_one_copy_of_each_service(
    stack_file: str, state_home: str, here: Dict[str, Any], project: str
) -> None:
    """Two ``up -d`` of one project at once: both succeed, one copy of each service."""
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "remoteexec", "up", "-d", stack_file, "-p", project],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env_for(state_home),
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=CALL) for p in runs]
    assert [p.returncode for p in runs] == [0, 0], outs
    assert any("nothing to start" in o for o, _ in outs), outs
    rows = looked(here, project)
    assert sorted(rows) == ["db", "ticker", "web"], rows
    assert all(r["state"] == "running" for r in rows.values()), rows
    keepers = [p for p in marked(project) if "keeper.py" in read("/proc/%d/cmdline" % p)]
    assert len(keepers) == 3, keepers


def test_down_reports_an_unreachable_host_and_force_forgets_it(
    lab: Any, stack_file: str, state_home: str, here: Dict[str, Any], project: str
) -> None:
    """down with host c cut off: a and b are stopped, c is reported (exit 1)
    and kept in the state; ``down --force`` forgets it. (Last in the module:
    the cut may cost this process its own connection to c.)"""
    from remoteexec.lab import MASTER

    r = cli(state_home, "up", "-d", stack_file, "-p", project)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = looked(here, project)
    db_tree = sessions_of([int(rows["db"]["pid"])])
    ticker_tree = sessions_of([int(rows["ticker"]["pid"])])
    path = os.path.join(state_home, "remoteexec", project, "master.json")
    state = json.loads(read(path))
    state["hosts"]["c"]["options"]["connect_timeout"] = 3  # the cut host fails fast
    with open(path, "w") as f:
        f.write(json.dumps(state))
    lab.partition(2, MASTER)
    try:
        r = cli(state_home, "down", "-p", project)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "unreachable host(s)" in r.stderr and "c:" in r.stderr, r.stderr
        assert wait_until(lambda: not any(procs.is_alive(p) for p in db_tree), 10)
        kept = json.loads(read(path))
        assert list(kept["hosts"]) == ["c"] and kept["services"] == {"ticker": ["c"]}, kept
        r = cli(state_home, "down", "-p", project, "--force")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "forgotten (unreachable): c" in r.stdout, r.stdout
        assert not os.path.exists(path)
    finally:
        lab.heal()
    # Forgotten, not stopped: the ticker on c runs on (the fixture kills it).
    assert any(procs.is_alive(p) for p in ticker_tree)
