"""Atexit ownership: the process that made a lab tears it down when it exits.

Only the process that called ``up()`` owns the lab: a forked child inherits the
parent's list but must leave its parent's labs alone, so each lab is kept with its
owner's pid and the exit hook is registered once per process (again after a fork).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from typing import Dict, Optional, Protocol

__all__ = ["OWNERS", "Owned", "Owners"]


class Owned(Protocol):
    """What can be owned: something with a ``down()`` (a :class:`Lab`)."""

    def down(self) -> None: ...


class Owners:
    """The labs this process tears down at exit, with the pid that owns each."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owned: Dict[Owned, int] = {}
        self._hooked_pid: Optional[int] = None

    def adopt(self, lab: Owned) -> None:
        """This process owns ``lab``: ``lab.down()`` runs when it exits."""
        with self._lock:
            self._owned[lab] = os.getpid()
            if self._hooked_pid != os.getpid():  # once per process (also after a fork)
                atexit.register(self.down_all)
                self._hooked_pid = os.getpid()

    def release(self, lab: Owned) -> None:
        """No teardown at exit for ``lab`` (it was torn down, or detached)."""
        with self._lock:
            self._owned.pop(lab, None)

    def owns(self, lab: Owned) -> bool:
        """Whether this very process tears ``lab`` down at exit."""
        with self._lock:
            return self._owned.get(lab) == os.getpid()

    def down_all(self) -> None:
        """Tear down every lab this process owns (errors are swallowed: exit goes on)."""
        with self._lock:
            mine = [lab for lab, pid in self._owned.items() if pid == os.getpid()]
        for lab in mine:  # a forked child leaves its parent's labs alone
            with contextlib.suppress(Exception):
                lab.down()


#: This process's owner of labs.
OWNERS = Owners()
