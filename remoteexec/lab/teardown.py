"""Teardown: remove everything a lab's record describes, in an order that cannot
strand anything, and say what is left.

Missing parts are fine, so a teardown can be retried (by :meth:`Lab.down`,
``down --stale`` or after a failed ``up()``) until nothing is left; only then is the
record removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import List, Sequence

from . import network, partitions, sshd
from .hosts import LabHost
from .processes import kill_pids
from .registry import Registry, State

__all__ = ["MAX_ENTRIES", "destroy", "remove"]

#: Entries of a caller-supplied base_dir emptied at the most.
MAX_ENTRIES = 10000


def _stop_processes(hosts: Sequence[LabHost]) -> List[str]:
    """Kill the sshds and whatever else runs in the lab's namespaces (ssh sessions
    and the services they started)."""
    pids = set()
    for h in hosts:
        pids |= sshd.pids(h)
        pids.update(network.netns_pids(h.netns))
    return [f"process {p} did not exit" for p in kill_pids(pids)]


def _empty_dir(path: str) -> None:
    """Remove what is in ``path`` but keep ``path`` itself."""
    for entry in os.listdir(path)[:MAX_ENTRIES]:
        full = os.path.join(path, entry)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(full)


def _remove_files(state: State) -> List[str]:
    """Delete ``base_dir`` if the lab made it; if it was the caller's (empty at up()),
    empty it again and keep it."""
    base = state.get("base_dir")
    if not base:
        return []
    if state.get("base_created"):
        shutil.rmtree(base, ignore_errors=True)
        if os.path.exists(base):
            return [f"directory {base} still exists"]
    elif state.get("base_used") and os.path.isdir(base):
        _empty_dir(base)
    return []


def destroy(state: State) -> List[str]:
    """Remove everything ``state`` describes; missing parts are fine.  Returns leftovers."""
    hosts = [LabHost.from_dict(h) for h in state.get("hosts", [])]
    bridge = state.get("bridge") or ""
    # 1. Processes first: nothing may hold a namespace or a file open afterwards.
    problems = _stop_processes(hosts)
    # 2. The root-namespace nftables table (forwarding rules, the master's cuts).
    if state.get("root_nft"):
        problem = partitions.delete_root_table(state["tag"], "down: nft")
        problems += [problem] if problem else []
    # 3. Links, namespaces and their /etc/netns files, then the lab's directory.
    network.remove(hosts, bridge)
    files = _remove_files(state)
    # 4. Verify.
    return problems + network.leftovers(hosts, bridge) + files


def remove(state: State, registry: Registry) -> List[str]:
    """:func:`destroy`, then drop the record if nothing is left; returns leftovers
    (the record is kept for a retry)."""
    problems = destroy(state)
    if not problems:
        registry.remove(state["name"])
    return problems
