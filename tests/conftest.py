"""Shared fixtures: masters, a real 3-host lab, and the places tests run on.

Lab tests need root, iproute2 and openssh-server; Tarantool tests need
``tarantool``. Without them they skip, except in CI (``CI`` set to anything
but empty, 0, false or no: GitHub's ``true``, GitLab's ``true``, others'
``1``), where a skip is a failure: CI must never go green without having
exercised real sshd hosts and a real tarantool. The rule is the plugin's
(``remoteexec.pytest.plugin.in_ci`` and ``skip_or_fail``), which
``need_lab()`` and ``need_tarantool()`` apply.

Leftover checks (``run_pids``, ``left_nothing``) read /proc through
``helpers/oracle.py``, never through the product's own process table.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import pytest
from helpers import oracle

import remoteexec as rx
from remoteexec.lab import free_port
from remoteexec.pytest.plugin import skip_or_fail

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers", "proc.py")
#: The interpreter for test processes: Debian's, present locally and on lab hosts.
PY = "/usr/bin/python3"
#: The tarantool on this machine's PATH (lab hosts share the filesystem), or None.
TARANTOOL = shutil.which("tarantool")


def need_lab() -> None:
    """Skip (fail in CI) unless lab hosts can be built here."""
    from remoteexec.lab import Lab

    ok, why = Lab.available()
    if not ok:
        skip_or_fail("lab unavailable: %s" % why)


def need_tarantool() -> str:
    """The tarantool binary; skip (fail in CI) when there is none."""
    if TARANTOOL is None:
        skip_or_fail("tarantool is not installed")
    return TARANTOOL


@pytest.fixture(scope="session")
def lab() -> Iterator[object]:
    need_lab()
    from remoteexec.lab import Lab

    # The hosts run the tests' helper scripts from this checkout, which may
    # lie under /tmp (a CI clone): share it with them.
    with Lab(hosts=3, share=[REPO]) as the_lab:
        yield the_lab


def connect_options(lab: Any) -> Dict[str, Any]:
    """How the tests connect to lab hosts: the lab's key and known_hosts (strict
    host key checking), Debian's python, a 15 s connect timeout: a bound, not a
    claim (tests of connection errors assert their own), wide enough for a
    connect while another copy of the suite loads both cores."""
    return lab.connect_options(python=PY, connect_timeout=15)


@pytest.fixture
def master() -> Iterator[rx.Master]:
    with rx.Master(heartbeat_timeout=5) as m:
        yield m


@dataclass
class Place:
    """Where an executor test runs: a host plus the addresses to use there."""

    kind: str
    host: rx.Host
    address: str
    #: A fresh directory ON THE HOST (a lab host's /tmp is its own).
    scratch: str
    #: The lab host behind ``host`` (None for the local context).
    lab_host: Optional[object] = None

    def seen_from_master(self, path: object) -> str:
        """``path`` on the host, as the master reaches it (a lab host's own
        /tmp through its mount namespace)."""
        path = os.fspath(path)
        return self.lab_host.path(path) if self.lab_host is not None else path

    def leftovers(self) -> List[int]:
        """Live processes of this place's run, by the tests' own oracle."""
        return run_pids(self.host.master.run_id, context_pids(self.host.master))

    def put(self, name: str, data: bytes) -> str:
        """Write ``data`` to ``name`` in the scratch directory ON THE HOST."""
        path = os.path.join(self.scratch, name)
        self.host.run(["sh", "-c", 'cat > "$1"', "sh", path], input=data, check=True)
        return path

    def free_port(self) -> int:
        if self.kind == "lab":
            # Each lab host is its own network namespace: ports never collide.
            Place._next = getattr(Place, "_next", 20000) + 1
            return Place._next
        return free_port()

    def cmd(self, *args: object) -> List[str]:
        return [PY, HELPER, *[str(a) for a in args]]

    def tcp(self, mode: str, *extra: object, **kwargs: object) -> rx.TCPExecutor:
        """A TCPExecutor for helper ``mode`` listening on a fresh port."""
        port = self.free_port()
        kwargs.setdefault("timeout", 10)
        command = self.cmd(mode, "127.0.0.1", port, *extra)
        return rx.TCPExecutor(command, host="127.0.0.1", port=port, on=self.host, **kwargs)


@pytest.fixture(params=["local", "lab"])
def place(request: pytest.FixtureRequest, master: rx.Master, tmp_path) -> Place:
    if request.param == "local":
        return Place("local", master.local(), "127.0.0.1", str(tmp_path))
    the_lab = request.getfixturevalue("lab")
    host = master.connect(the_lab.targets[0], **connect_options(the_lab))
    # The host's /tmp is not the master's: make the scratch directory there.
    scratch = host.run(["mktemp", "-d", "/tmp/rxtest-XXXXXX"], check=True).stdout.strip()
    place = Place("lab", host, "127.0.0.1", scratch, the_lab.hosts[0])
    assert not os.path.exists(scratch), "lab hosts must not share the master's /tmp"
    return place


def run_pids(run_id: str, contexts: Iterable[int] = ()) -> List[int]:
    """Live pids of a run, seen from this machine by the tests' own /proc
    oracle (helpers/oracle.py): marked, descending from ``contexts``
    (``Host.info["pid"]``), or in their sessions.

    Lab hosts share this machine's pid space, so /proc here sees them all.
    """
    return sorted(oracle.run_processes(run_id, contexts))


def context_pids(master: rx.Master) -> List[int]:
    """Pids of the master's open contexts (local and lab ones are on this
    machine): they belong to the run's machinery, not to its services, so
    only their descendants count as the run's processes (their guards, which
    start with their first process, are machinery too: the oracle knows them)."""
    return [host.info["pid"] for host in master.hosts]


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until true; bounded in time and in count."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):
        if predicate():
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    return bool(predicate())


@contextlib.contextmanager
def left_nothing(
    run_id: str,
    contexts: Iterable[int] = (),
    at_least: int = 1,
    timeout: float = 5.0,
    contexts_exit: bool = False,
) -> Iterator[Dict[int, str]]:
    """Assert the run's processes are there, run the block, then assert they
    are gone within ``timeout``.

    Before the block at least ``at_least`` processes of the run must be alive
    (so a check that sees nothing proves something); it yields them as
    {pid: why}. After it, none of them (same pid and start time) nor any
    other process of the run may be alive; with ``contexts_exit`` the
    contexts themselves must have exited too.
    """
    contexts = [oracle.identity(pid) for pid in contexts]
    contexts = [ident for ident in contexts if ident is not None]
    before = oracle.run_processes(run_id, [pid for pid, _start in contexts])
    assert len(before) >= at_least, "expected at least %d processes of run %s, found %s" % (
        at_least,
        run_id,
        oracle.describe(before),
    )
    watched = {oracle.identity(pid) for pid in before}
    if contexts_exit:
        watched |= set(contexts)
        watched |= {oracle.identity(pid) for pid in oracle.guards(pid for pid, _ in contexts)}
    watched.discard(None)
    yield before

    def same_contexts() -> List[int]:
        # A context's pid counts only while it still names that context.
        return [pid for pid, start in contexts if oracle.identity(pid) == (pid, start)]

    assert_gone(run_id, same_contexts, watched, timeout)


def assert_gone(
    run_id: str,
    contexts: Callable[[], List[int]],
    watched: Iterable[Tuple[int, int]],
    timeout: float,
) -> None:
    """Assert that within ``timeout`` no process of the run (seen from the pids
    ``contexts()`` gives) and none of the ``watched`` (pid, start time) is alive."""
    watched = list(watched)

    def still() -> List[int]:
        left = set(oracle.run_processes(run_id, contexts()))
        left |= {pid for pid, start in watched if oracle.identity(pid) == (pid, start)}
        return sorted(left)

    assert wait_until(lambda: not still(), timeout, interval=0.02), "left behind: %s" % (
        oracle.describe(still())
    )


def spawn_master_script(
    lab: Optional[object],
    mode: Optional[str],
    extra: Optional[List[str]] = None,
    script: str = "master_script.py",
) -> tuple:
    """Start a master script from tests/helpers; return (Popen, READY info dict)."""
    import json
    import subprocess

    args = [sys.executable, os.path.join(os.path.dirname(HELPER), script)]
    args += [mode] if mode else []
    if lab is not None:
        args += [json.dumps(connect_options(lab)), json.dumps(lab.targets)]
    args += extra or []
    import tempfile

    errors = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - lives as long as the script
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=errors, text=True, start_new_session=True
    )
    line = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line or line.startswith("READY "):
            break
    if not line.startswith("READY "):
        proc.kill()
        proc.wait(10)
        errors.seek(0)
        raise AssertionError(
            "master script did not get ready: %r\n%s" % (line, errors.read()[-3000:])
        )
    return proc, json.loads(line[len("READY ") :])


@contextlib.contextmanager
def seen_then_gone(
    run_id: str,
    contexts: Iterable[int] = (),
    at_least: int = 1,
    timeout: float = 5.0,
    interval: float = 0.01,
) -> Iterator[Dict[int, str]]:
    """For processes that live only inside the block (a start that times
    out): sample the run's processes by the oracle while the block runs,
    assert at least ``at_least`` were seen, then that none of them, nor any
    other process of the run, is alive within ``timeout`` after it.

    Yields the {pid: why} dict it fills while sampling.
    """
    import threading

    contexts = list(contexts)
    seen: Dict[int, str] = {}
    idents: set = set()
    done = threading.Event()

    def sample() -> None:
        for _ in range(100000):  # bounded: 1000 s of samples at most
            for pid, why in oracle.run_processes(run_id, contexts).items():
                ident = oracle.identity(pid)
                if ident is not None:
                    seen.setdefault(pid, why)
                    idents.add(ident)
            if done.wait(interval):
                return

    sampler = threading.Thread(target=sample, name="seen-then-gone", daemon=True)
    sampler.start()
    try:
        yield seen
    finally:
        done.set()
        sampler.join(30)
    assert len(seen) >= at_least, "expected at least %d processes of run %s during the block" % (
        at_least,
        run_id,
    )
    assert_gone(run_id, lambda: contexts, idents, timeout)
