"""What the plugin knows of a fixture's services: their exits, their repair, their evidence.

Every factory fixture runs its services in a :class:`~remoteexec.stack.Stack`
(one service for :func:`~remoteexec.pytest.executor_fixture` and
:func:`~remoteexec.pytest.replicaset_fixture`), so crash checks, restores
and artifacts read one interface: the stack's events and ``status()``.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Set, Tuple

from remoteexec.errors import RemoteExecError
from remoteexec.stack import Stack, StackError, StackEvent
from remoteexec.target.files import write_private

#: How many lines of a service's output a report shows.
REPORT_LINES = 20
#: States a service that should be up may be in without being broken.
GOOD_STATES = ("ready",)


@dataclass(frozen=True)
class Crash:
    """A service that exited while a test ran, without the test asking for it."""

    fixture: str
    service: str
    host: str
    exit_code: Optional[int]
    tail: str

    def __str__(self) -> str:
        return "%s: service %s on %s exited unexpectedly (exit code %s)\n%s" % (
            self.fixture,
            self.service,
            self.host,
            self.exit_code,
            indent(self.tail or "(no output)"),
        )


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip("\n").splitlines())


def node_dir(nodeid: str) -> str:
    """A directory name for a test's node id (``tests/test_a.py::test_x[1]``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_.")[:200] or "test"


class Tracked:
    """One factory fixture's stack, watched while the tests that use it run.

    ``value`` is what the tests get (the stack, the executor, the replica set).
    A fault a test makes on purpose (``stack.kill()``, ``executor.kill()``,
    ``ReplicaSet.kill(member)``) leaves the service ``stopped``, which is no
    crash; an exit by itself leaves it ``exited`` with its exit code.
    """

    def __init__(self, fixture: str, stack: Stack, value: Any) -> None:
        self.fixture = fixture
        self.stack = stack
        self.value = value
        #: The StackError of a start that failed (the fixture's setup).
        self.setup_error: Optional[BaseException] = None
        self._exits: List[StackEvent] = []
        #: The stack's jobs (their exit is no crash), read once it runs.
        self._jobs: Optional[Set[str]] = None
        self._lock = threading.Lock()
        self._unsubscribe = stack.subscribe(self._seen)

    def __repr__(self) -> str:
        return "<Tracked %s: %r>" % (self.fixture, self.stack)

    def _seen(self, event: StackEvent) -> None:
        if event.kind == "exited" and not event.job and event.exit_code is not None:
            with self._lock:
                self._exits.append(event)

    def close(self) -> None:
        self._unsubscribe()

    # -- around a test ----------------------------------------------------------

    def begin(self) -> None:
        """A test starts: forget the exits seen before it."""
        with self._lock:
            self._exits = []

    def crashes(self) -> List[Crash]:
        """The services that exited since :meth:`begin`: an exit event with an
        exit code, or ``exited``/``failed`` in the service's own status now (a
        replica set's member as ``set/member``). A service whose own status is
        ``stopped`` was stopped or killed through its API: on purpose."""
        with self._lock:
            exits = list(self._exits)
        if self._jobs is None:
            self._jobs = {r["service"] for r in self._rows() if r["job"]}
        found: Dict[str, Tuple[str, Optional[int]]] = {}
        for name in self.stack.services:
            if name in self._jobs:
                continue
            try:
                own: Dict[str, Any] = dict(self.stack[name].service.status())
            except RemoteExecError:
                continue  # a lost host: its own error says so
            if own.get("state") == "stopped":
                continue
            for event in exits:
                if event.service == name:
                    found.setdefault(name, (event.host, event.exit_code))
            if name not in found:
                found.update(_exited(name, own))
        return [
            Crash(self.fixture, name, host, code, self._tail(name.split("/")[0]))
            for name, (host, code) in found.items()
        ]

    def restore(self) -> None:
        """Bring every service back to ready: resume what is paused, restart
        (with its dependents) what is stopped, exited or failed."""
        if self.stack.paused:
            self.stack.resume()
        for _ in range(len(self.stack.services) + 1):  # one restart per pass, bounded
            broken = [r["service"] for r in self.stack.status() if not r["job"] and not _good(r)]
            if not broken:
                return
            # Killed first: an exit the stack has not noticed yet would fail restart()'s stop.
            self.stack.kill(broken[0])
            self.stack.restart(broken[0], restart_dependents=True)
        raise StackError(
            "%s: stack %s could not be restored" % (self.fixture, self.stack.name),
            stack=self.stack.name,
        )

    # -- when a test failed -------------------------------------------------------

    def save(self, dest: str) -> List[str]:
        """Artifacts into ``dest``: ``status.json`` and each service's logs (from
        every host) and, for Tarantool, its ``box.info`` dump. The paths written."""
        os.makedirs(dest, 0o700, exist_ok=True)
        rows: Any
        try:
            rows = self.stack.status()
        except RemoteExecError as e:
            rows = {"error": str(e)}
        written = [_write(os.path.join(dest, "status.json"), rows)]
        for name in self.stack.services:
            service = self.stack[name].service
            try:
                written += service.artifacts(os.path.join(dest, name))
            except (RemoteExecError, OSError) as e:
                written.append(_write(os.path.join(dest, name, "error.json"), {"error": str(e)}))
        return written

    def summary(self) -> str:
        """The report's lines for this fixture: each failed or unready service
        with its last lines (a failed start: the error and its output tail)."""
        out = []
        if self.setup_error is not None:
            error = self.setup_error
            out.append("%s: stack %s failed to start: %s" % (self.fixture, self.stack.name, error))
            tail = getattr(error, "output_tail", None)
            if tail:
                out.append(indent(tail))
            return "\n".join(out)
        try:
            rows = self.stack.status()
        except RemoteExecError as e:
            return "%s: status() failed: %s" % (self.fixture, e)
        for row in rows:
            if _good(row) or (row["job"] and row["state"] == "exited" and not row["exit_code"]):
                continue
            out.append(
                "%s: %s on %s is %s (readiness %s, exit code %s)\n%s"
                % (
                    self.fixture,
                    row["service"],
                    row["host"],
                    row["state"],
                    row.get("readiness"),
                    row.get("exit_code"),
                    indent(self._tail(row["service"]) or "(no output)"),
                )
            )
        return "\n".join(out)

    def _rows(self) -> List[Dict[str, Any]]:
        try:
            return self.stack.status()
        except RemoteExecError:
            return []

    def _tail(self, name: str) -> str:
        try:
            return self.stack.logs(name, lines=REPORT_LINES)
        except (RemoteExecError, ValueError, OSError) as e:
            return "(no output: %s)" % e


def _good(row: Dict[str, Any]) -> bool:
    return row["state"] in GOOD_STATES


def _exited(name: str, own: Dict[str, Any]) -> Dict[str, Tuple[str, Optional[int]]]:
    """What a service's own status shows exited by itself: the service, or a
    replica set's members (``set/member``), each as name → (host, exit code)."""
    members = own.get("members") or []
    if members:
        return {
            "%s/%s" % (name, m.get("member")): (str(m.get("host")), m.get("exit_code"))
            for m in members
            if m.get("state") in ("exited", "failed")
        }
    if own.get("state") in ("exited", "failed"):
        return {name: (",".join(own.get("hosts") or []), own.get("exit_code"))}
    return {}


def _write(path: str, data: Any) -> str:
    os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
    text = json.dumps(data, indent=2, sort_keys=True, default=str).encode()
    return str(write_private(path, text))


__all__ = ["REPORT_LINES", "Crash", "Tracked", "node_dir"]
