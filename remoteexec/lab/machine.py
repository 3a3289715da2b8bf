"""Machine-wide view of labs: status of every recorded lab, which are stale, and
their removal along with unrecorded leftovers.

A lab is stale when the process that created it is gone (crashed, killed, exited
without ``down()``, or detached on purpose as ``python -m remoteexec.lab up`` does).
Leftovers with no record (a crash between creating something and recording it
cannot happen, but a record can be deleted by hand) are found by name: namespaces
``rxl-<name>-<n>``, bridges/veths ``rxb<tag>``/``rxv<tag>…``, ``/etc/netns`` entries
and directories under ``/tmp/remoteexec-lab``.  Deciding what is stale or orphaned
is pure (:func:`orphans`, :func:`stale_names`); the rest reads or changes the system.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Set, Tuple

from . import naming, network, partitions, sshd, teardown
from .commands import run
from .errors import LabError
from .hosts import LabHost
from .processes import kill_pids, proc_start_time, read_pid_file
from .registry import REGISTRY, Registry, State

__all__ = [
    "Debris",
    "down_stale",
    "orphans",
    "owner_alive",
    "scan_debris",
    "stale",
    "stale_names",
    "status",
]


@dataclass
class Debris:
    """Lab-made things on the machine, by kind (names only)."""

    netns: List[str] = field(default_factory=list)
    links: List[str] = field(default_factory=list)
    etc: List[str] = field(default_factory=list)
    base: List[str] = field(default_factory=list)

    def names(self) -> List[str]:
        """How they are reported: namespaces and /etc/netns entries by their lab's
        name, links and base directories by their own; each once, in order."""
        out: List[str] = []
        for ns in self.netns + self.etc:
            lab = naming.lab_of_netns(ns)
            if lab is not None and lab not in out:
                out.append(lab)
        for extra in self.links + self.base:
            if extra not in out:
                out.append(extra)
        return out


def owner_alive(state: State) -> bool:
    """Whether the process that created the lab still runs (same pid *and* start time)."""
    pid = state.get("owner_pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    return proc_start_time(pid) == state.get("owner_start")


def scan_debris(base_root: str = naming.DEFAULT_BASE) -> Debris:
    """Lab-made things in the system, by kind (not matched to records)."""
    is_ns = naming.lab_of_netns
    try:
        etc = [n for n in os.listdir(network.ETC_NETNS) if is_ns(n) is not None]
    except OSError:
        etc = []
    try:
        bases = sorted(os.listdir(base_root))
    except OSError:
        bases = []
    return Debris(
        netns=[n for n in network.list_netns() if is_ns(n) is not None],
        links=[n for n in network.list_links() if naming.is_lab_link(n)],
        etc=etc,
        base=bases,
    )


def _known(states: Mapping[str, State], base_root: str) -> Tuple[Set[str], Set[str], Set[str]]:
    """(namespaces, links, base directory names) the records account for."""
    netns: Set[str] = set()
    links: Set[str] = set()
    base: Set[str] = set()
    for name, st in states.items():
        links.add(st.get("bridge", ""))
        base_dir = st.get("base_dir") or ""
        if os.path.dirname(base_dir) == base_root:
            base.add(os.path.basename(base_dir))
        base.add(name)
        for h in st.get("hosts", []):
            netns.add(h.get("netns", ""))
            links.add(h.get("veth", ""))
    return netns, links, base


def orphans(
    debris: Debris, states: Mapping[str, State], base_root: str = naming.DEFAULT_BASE
) -> Debris:
    """The part of ``debris`` no record in ``states`` accounts for."""
    netns, links, base = _known(states, base_root)
    return Debris(
        netns=[n for n in debris.netns if n not in netns],
        links=[n for n in debris.links if n not in links],
        etc=[n for n in debris.etc if n not in netns],
        base=[n for n in debris.base if n not in base],
    )


def stale_names(
    states: Mapping[str, State], orphaned: Debris, alive: Callable[[State], bool]
) -> List[str]:
    """Recorded labs whose owner is not ``alive``, then what ``orphaned`` names."""
    names = [n for n, st in sorted(states.items()) if not alive(st)]
    return names + [n for n in orphaned.names() if n not in names]


def _host_status(h: Dict[str, Any]) -> Dict[str, Any]:
    lh = LabHost.from_dict(h)
    pid = read_pid_file(lh.pid_file)
    running = pid is not None and sshd.is_ours(pid, lh)
    return {**lh.to_dict(), "sshd_running": running}


def status(registry: Registry = REGISTRY) -> List[Dict[str, Any]]:
    """Every lab recorded on the machine, with liveness: ``owner_alive``, ``stale``,
    and per host whether its sshd is running."""
    out = []
    for name, st in sorted(registry.load_all().items()):
        alive = owner_alive(st)
        hosts = [_host_status(h) for h in st.get("hosts", [])]
        base_dir = st.get("base_dir", "")
        out.append(
            {
                "name": name,
                "status": st.get("status"),
                "subnet": st.get("subnet"),
                "bridge": st.get("bridge"),
                "base_dir": st.get("base_dir"),
                "owner_pid": st.get("owner_pid"),
                "owner_alive": alive,
                "detached": st.get("detached", False),
                "stale": not alive,
                "created": st.get("created"),
                "cuts": st.get("cuts", []),
                "identity_file": os.path.join(base_dir, "id_ed25519"),
                "known_hosts_file": os.path.join(base_dir, "known_hosts"),
                "targets": [h["target"] for h in hosts],
                "hosts": hosts,
            }
        )
    return out


def stale(registry: Registry = REGISTRY) -> List[str]:
    """Names of stale labs and of unrecorded leftovers (see the module's docstring)."""
    debris = scan_debris()  # scan first: a lab records itself before creating things
    states = registry.load_all()
    return stale_names(states, orphans(debris, states), owner_alive)


def _remove_orphans(orphaned: Debris) -> List[str]:
    """Kill what runs in orphaned namespaces and delete them, their /etc/netns
    entries, orphaned links and base directories; returns what is left."""
    problems = []
    for ns in orphaned.netns:
        problems += [f"{ns}: process {p} did not exit" for p in kill_pids(network.netns_pids(ns))]
        run("down_stale", ["ip", "netns", "del", ns], check=False)
    for ns in orphaned.etc:
        network.remove_etc_netns(ns)
    for link in orphaned.links:
        run("down_stale", ["ip", "link", "del", link], check=False)
    for d in orphaned.base:
        shutil.rmtree(os.path.join(naming.DEFAULT_BASE, d), ignore_errors=True)
    problems += [f"netns {ns} still exists" for ns in orphaned.netns if network.netns_exists(ns)]
    problems += [f"link {n} still exists" for n in orphaned.links if network.link_exists(n)]
    return problems


def _remove_orphan_tables(registry: Registry) -> None:
    """Delete root-namespace tables of labs that no longer have a record."""
    live = {st.get("tag") for st in registry.load_all().values()}
    for tag in partitions.list_root_tables("down_stale"):
        if tag not in live:
            partitions.delete_root_table(tag, "down_stale")


def down_stale(all: bool = False, registry: Registry = REGISTRY) -> List[str]:
    """Remove stale labs and unrecorded leftovers; with ``all=True`` *every* lab,
    including those whose creating process still runs.  Returns the names removed;
    :class:`LabError` if something could not be removed (after trying everything)."""
    debris = scan_debris()
    states = registry.load_all()
    removed: List[str] = []
    problems: List[str] = []
    for name, st in sorted(states.items()):
        if not all and owner_alive(st):
            continue
        problems += [f"{name}: {p}" for p in teardown.remove(st, registry)]
        removed.append(name)
    orphaned = orphans(debris, states)
    leftovers = _remove_orphans(orphaned)
    removed += [n for n in orphaned.names() if n not in removed]
    _remove_orphan_tables(registry)
    problems += leftovers
    if problems:
        raise LabError("; ".join(problems), step="down_stale")
    return removed
