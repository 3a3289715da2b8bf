"""The machine-wide record of labs: one JSON file a lab, under a flock.

A lab is recorded *before* anything of it is created and its record is removed
last, so a crash at any point leaves a record (or named debris) that
:mod:`remoteexec.lab.machine` can find.  Records and the lock file are 0600 in a
0700 directory: they name keys and the processes that own labs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from typing import Any, Dict, Iterator

from remoteexec.target.files import write_private

from .errors import LabError

__all__ = [
    "REGISTRY",
    "STATE_DIR",
    "STATE_VERSION",
    "Registry",
    "State",
    "ensure_private_dir",
]

STATE_DIR = "/run/remoteexec-lab"
STATE_VERSION = 1
#: How many entries of the state directory are read at the most.
MAX_RECORDS = 10000

#: A lab's record, as stored (JSON object): name, tag, subnet, hosts, owner, cuts...
State = Dict[str, Any]


def ensure_private_dir(path: str) -> None:
    """Make ``path`` (and parents) and set it to 0700, even if it existed."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)


def _flock(fd: int, timeout: float, interval: float) -> bool:
    """Take an exclusive flock on ``fd`` within ``timeout`` seconds (polled)."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(interval)
    return False


class Registry:
    """The lab records in ``directory`` (default ``/run/remoteexec-lab``)."""

    def __init__(self, directory: str = STATE_DIR) -> None:
        self.directory = directory

    def path(self, name: str) -> str:
        """The record file of lab ``name``."""
        return os.path.join(self.directory, f"{name}.json")

    @contextlib.contextmanager
    def lock(self, timeout: float = 30.0, interval: float = 0.02) -> Iterator[None]:
        """Machine-wide lock (flock) serialising name/subnet allocation between
        processes; :class:`LabError` if not had within ``timeout`` seconds."""
        ensure_private_dir(self.directory)
        lock_file = os.path.join(self.directory, ".lock")
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if not _flock(fd, timeout, interval):
                raise LabError(f"could not lock {lock_file} in {timeout:g} s", step="lock")
            yield
        finally:
            os.close(fd)

    def save(self, state: State) -> None:
        """Write ``state`` as the record of ``state["name"]`` (atomically, 0600)."""
        ensure_private_dir(self.directory)
        text = json.dumps(state, indent=1, sort_keys=True)
        write_private(self.path(state["name"]), text)

    def exists(self, name: str) -> bool:
        return os.path.exists(self.path(name))

    def load(self, name: str) -> State:
        """The record of lab ``name``; OSError if there is none, ValueError if it is
        not a JSON object."""
        with open(self.path(name), encoding="utf-8") as f:
            state = json.load(f)
        if not isinstance(state, dict):
            raise ValueError(f"{self.path(name)} does not hold a JSON object")
        return state

    def load_all(self) -> Dict[str, State]:
        """Every readable record, by lab name (unreadable or misnamed files skipped)."""
        states: Dict[str, State] = {}
        try:
            entries = os.listdir(self.directory)
        except OSError:
            return states
        for entry in sorted(entries)[:MAX_RECORDS]:
            if not entry.endswith(".json"):
                continue
            name = entry[: -len(".json")]
            try:
                state = self.load(name)
            except (OSError, ValueError):
                continue
            if state.get("name") == name:
                states[name] = state
        return states

    def remove(self, name: str) -> None:
        """Delete the record of ``name`` (fine if there is none)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(name))


#: The machine's registry.
REGISTRY = Registry()
