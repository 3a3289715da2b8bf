"""Shared fixtures: masters, a real 3-host lab, and the places tests run on.

Lab tests need root, iproute2 and openssh-server. Without them they skip,
except under CI=true, where a skipped lab test is a failure: CI must never
go green without having exercised real sshd hosts.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from dataclasses import dataclass
from typing import Iterator, List, Optional

import pytest

import remoteexec as rx
from remoteexec.target import procs

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers", "proc.py")
#: The interpreter for test processes: Debian's, present locally and on lab hosts.
PY = "/usr/bin/python3"
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def need_lab() -> None:
    from remoteexec.lab import Lab

    ok, why = Lab.available()
    if not ok:
        if IN_CI:
            pytest.fail("lab tests cannot run under CI=true: %s" % why)
        pytest.skip("lab unavailable: %s" % why)


@pytest.fixture(scope="session")
def lab() -> Iterator[object]:
    need_lab()
    from remoteexec.lab import Lab

    with Lab(hosts=3) as the_lab:
        yield the_lab


def connect_options(lab: object) -> dict:
    return dict(
        identity_file=lab.identity_file,
        known_hosts_file=lab.known_hosts_file,
        python=PY,
        connect_timeout=5,
    )


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
    scratch: str

    def free_port(self) -> int:
        if self.kind == "lab":
            # Each lab host is its own network namespace: ports never collide.
            Place._next = getattr(Place, "_next", 20000) + 1
            return Place._next
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

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
    return Place("lab", host, "127.0.0.1", str(tmp_path))


def run_pids(run_id: str) -> List[int]:
    """Live pids of a run, seen from this machine.

    Lab hosts share this machine's pid space, so /proc here sees them all.
    """
    return [
        p for p in procs.pids_with_marker("REMOTEEXEC_RUN", run_prefix=run_id) if procs.is_alive(p)
    ]


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


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
