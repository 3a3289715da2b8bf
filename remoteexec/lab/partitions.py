"""Network partitions between lab hosts (and the master), with nftables.

Partitions are silent: ``drop`` rules on the *input* hook of the receiving side
(never reject, never local-output drops, which would give the sender EPERM, and never
blackhole routes, which make ``connect()`` fail at once with EINVAL).  So a new TCP
connection times out, an established one (ssh, mitogen) just stalls, and once healed
the same connection carries on when TCP retransmits.

A cut is an unordered pair of node names (host names, or :data:`MASTER` for the root
namespace, where the master runs).  Which cuts a partition or heal leaves, and the
nftables scripts that enforce them, are pure functions; :class:`Firewall` loads them.
The lab's table in the root namespace also keeps the lab from routing to the outside.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import Collection, Dict, FrozenSet, Iterable, List, Optional, Sequence, Set

from . import naming
from .commands import nft_apply, run
from .errors import LabError
from .hosts import LabHost

__all__ = [
    "MASTER",
    "Cut",
    "Firewall",
    "affected",
    "cut",
    "delete_root_table",
    "heal",
    "host_rules",
    "lab_table_tags",
    "list_root_tables",
    "nft_script",
    "peers",
    "root_script",
]

#: Pseudo host name for the root namespace (where the master runs) in partition()/heal().
MASTER = "master"

#: One cut: the two node names whose traffic is dropped both ways.
Cut = FrozenSet[str]


def cut(cuts: Set[Cut], nodes: Sequence[str], a: str, b: Optional[str]) -> Set[Cut]:
    """``cuts`` plus the cut between ``a`` and ``b``; ``b=None`` cuts ``a`` from every
    other node in ``nodes`` and from the master.  ``a`` must be a host, not ``b``."""
    if a == MASTER:
        raise LabError("partition(a, b): a must be a host", step="partition")
    if b is None:
        others = [n for n in nodes if n != a] + [MASTER]
    elif b == a:
        raise LabError(f"cannot partition {a} from itself", step="partition")
    else:
        others = [b]
    return cuts | {frozenset((a, p)) for p in others}


def heal(cuts: Set[Cut], a: Optional[str] = None, b: Optional[str] = None) -> Set[Cut]:
    """The cuts left after healing all (no node), those of ``a``, or ``a``-``b``."""
    if a is None:
        return set()
    if b is None:
        return {c for c in cuts if a not in c}
    return {c for c in cuts if c != frozenset((a, b))}


def affected(old: Set[Cut], new: Set[Cut]) -> Set[str]:
    """The nodes whose rules differ between ``old`` and ``new``."""
    return {n for c in old ^ new for n in c}


def peers(node: str, cuts: Iterable[Cut]) -> List[str]:
    """The nodes cut from ``node``, sorted."""
    return sorted(p for c in cuts if node in c for p in c if p != node)


def nft_script(table: str, chains: Dict[str, List[str]]) -> str:
    """nft script that atomically replaces ``inet <table>`` with filter chains hooked at
    the chain's name (``input``/``forward``), or just removes the table if no chains."""
    script = f"table inet {table}\ndelete table inet {table}\n"
    if chains:
        script += f"table inet {table} {{\n"
        for hook, rules in chains.items():
            body = "".join(f"    {r}\n" for r in rules)
            script += (
                f"  chain {hook} {{\n"
                f"    type filter hook {hook} priority -50; policy accept;\n{body}  }}\n"
            )
        script += "}\n"
    return script


def root_script(tag: str, bridge: str, cut_addrs: Sequence[str]) -> str:
    """The lab's table in the root namespace: no routing between the lab and the
    outside (matters where ip_forward=1; bridged host-to-host traffic has the bridge
    as both in- and out-interface and passes), plus the master's side of cuts."""
    forward = [
        f'iifname "{bridge}" oifname != "{bridge}" reject with icmpx type admin-prohibited',
        f'oifname "{bridge}" iifname != "{bridge}" drop',
    ]
    chains = {"forward": forward}
    if cut_addrs:
        chains["input"] = [f"ip saddr {{ {', '.join(cut_addrs)} }} drop"]
    return nft_script(naming.root_table(tag), chains)


def host_rules(
    cut_from: Collection[str], addresses: Dict[str, str], subnet: str, gateway: str
) -> List[str]:
    """A host's input rules dropping what comes from the nodes in ``cut_from``
    (``addresses`` maps host names to addresses; the master is everything outside
    ``subnet`` plus the ``gateway``).  [] when nothing is cut."""
    rules = []
    if MASTER in cut_from:
        rules.append(f"ip saddr != {subnet} drop")
        rules.append(f"ip saddr {gateway} drop")
    addrs = [addresses[p] for p in cut_from if p != MASTER]
    if addrs:
        rules.append(f"ip saddr {{ {', '.join(addrs)} }} drop")
    return ['iifname "lo" accept', *rules] if rules else []


@dataclass
class Firewall:
    """The nftables tables of one lab: its own in the root namespace (when ``root_nft``)
    and one in each host's namespace."""

    tag: str
    bridge: str
    subnet: str
    gateway: str
    hosts: Sequence[LabHost]
    root_nft: bool

    def install(self) -> None:
        """The root table with no cuts (keeps the lab from routing outside)."""
        if self.root_nft:
            nft_apply("nft table in the root namespace", root_script(self.tag, self.bridge, []))

    def apply(self, old: Set[Cut], new: Set[Cut], force: bool = False) -> bool:
        """Go from cuts ``old`` to ``new``, reloading only the nodes that change, or
        every node with ``force`` (also where we think nothing is cut); False if there
        was nothing to do."""
        nodes = affected(old, new)
        if force:
            nodes = {h.name for h in self.hosts}
            if self.root_nft:
                nodes.add(MASTER)
        if not nodes:
            return False
        if shutil.which("nft") is None:
            raise LabError("nft not found; partitions need nftables", step="partition")
        by_name = {h.name: h for h in self.hosts}
        addresses = {h.name: h.address for h in self.hosts}
        for node in sorted(nodes):
            cut_from = peers(node, new)
            if node == MASTER:
                addrs = [addresses[p] for p in cut_from]
                script = root_script(self.tag, self.bridge, addrs)
                nft_apply("partition: nft in the root namespace", script)
                continue
            rules = host_rules(cut_from, addresses, self.subnet, self.gateway)
            h = by_name[node]
            nft_apply(
                f"partition: nft in {h.name} ({h.netns})",
                nft_script(naming.NFT_HOST_TABLE, {"input": rules} if rules else {}),
                netns=h.netns,
            )
        return True


def delete_root_table(tag: str, step: str) -> Optional[str]:
    """Delete lab ``tag``'s root-namespace table; what went wrong, or None (also when
    there was no such table)."""
    table = naming.root_table(tag)
    res = run(step, ["nft", "delete", "table", "inet", table], check=False, timeout=10)
    if res.returncode != 0 and "No such file" not in res.stderr:
        return f"nft table inet {table}: {res.stderr.strip()}"
    return None


def lab_table_tags(listing: str) -> List[str]:
    """The tags of the labs' root tables in ``nft list tables`` output."""
    tags = []
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "table" and parts[1] == "inet":
            tag = naming.tag_of_root_table(parts[2])
            if tag is not None:
                tags.append(tag)
    return tags


def list_root_tables(step: str) -> List[str]:
    """Tags of every lab's table in the root namespace ([] without nft)."""
    if shutil.which("nft") is None:
        return []
    return lab_table_tags(run(step, ["nft", "list", "tables"], check=False).stdout)
