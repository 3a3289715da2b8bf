"""Subnet allocation: which IPv4 network a lab gets, and its addresses in it.

A lab needs a network no address or route of the machine and no other lab
overlaps, or its hosts would shadow (or be shadowed by) real ones.  The choice is
pure (:func:`pick_subnet` given what is in use); :func:`used_networks` reads
what the machine uses.
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
from typing import Any, Dict, Iterable, List, Optional

from .commands import run
from .errors import LabError

__all__ = [
    "AUTO_SECOND_OCTETS",
    "FIRST_HOST",
    "gateway",
    "host_address",
    "networks_in_addresses",
    "networks_in_routes",
    "pick_subnet",
    "recorded_networks",
    "used_networks",
]

#: Second octets of auto-picked ``10.X.Y.0/24`` networks.
AUTO_SECOND_OCTETS = (200, 250)
#: Host ``i`` (0-based) has the network's ``FIRST_HOST + i``-th address (``.11`` on).
FIRST_HOST = 11

_ROUTE_TYPES = frozenset(
    [
        "unicast",
        "local",
        "broadcast",
        "multicast",
        "anycast",
        "blackhole",
        "unreachable",
        "prohibit",
        "throw",
        "nat",
    ]
)


def gateway(net: ipaddress.IPv4Network) -> str:
    """The root namespace's address on the lab's bridge: the network's first address."""
    return str(net.network_address + 1)


def host_address(net: ipaddress.IPv4Network, index: int) -> str:
    """Host ``index``'s (0-based) address."""
    return str(net.network_address + FIRST_HOST + index)


def pick_subnet(
    want: Optional[str],
    hosts: int,
    used: Iterable[ipaddress.IPv4Network],
    rng: Optional[random.Random] = None,
) -> ipaddress.IPv4Network:
    """The lab's network: ``want`` if given (checked: valid, large enough for the
    gateway and ``hosts`` hosts, overlapping nothing in ``used``), else a free
    ``10.X.Y.0/24`` with X in :data:`AUTO_SECOND_OCTETS`, starting at a random one so
    labs made at once rarely race for the same.  Raises :class:`LabError`."""
    used = list(used)
    if want is not None:
        try:
            net = ipaddress.IPv4Network(str(want), strict=False)
        except ValueError as exc:
            raise LabError(f"bad subnet {want!r}: {exc}", step="allocate") from exc
        if net.num_addresses < FIRST_HOST + hosts + 1:
            raise LabError(f"subnet {net} too small for {hosts} hosts", step="allocate")
        clash = [str(u) for u in used if u.overlaps(net)]
        if clash:
            raise LabError(f"subnet {net} overlaps {', '.join(clash)}", step="allocate")
        return net
    lo, hi = AUTO_SECOND_OCTETS
    candidates = (hi - lo + 1) * 256
    start = (rng or random).randrange(candidates)
    for k in range(candidates):
        n = (start + k) % candidates
        net = ipaddress.IPv4Network(f"10.{lo + n // 256}.{n % 256}.0/24")
        if not any(u.overlaps(net) for u in used):
            return net
    raise LabError("no free 10.X.Y.0/24 subnet left", step="allocate")


def recorded_networks(states: Iterable[Dict[str, Any]]) -> List[ipaddress.IPv4Network]:
    """The networks other labs' records hold (unreadable ones skipped)."""
    nets = []
    for st in states:
        with contextlib.suppress(KeyError, ValueError, TypeError):
            nets.append(ipaddress.IPv4Network(st["subnet"]))
    return nets


def networks_in_addresses(text: str) -> List[ipaddress.IPv4Network]:
    """The networks of the interface addresses in ``ip -o -4 addr show`` output."""
    nets = []
    for line in text.splitlines():
        parts = line.split()
        if "inet" in parts:
            with contextlib.suppress(ValueError, IndexError):
                iface = ipaddress.ip_interface(parts[parts.index("inet") + 1])
                if isinstance(iface, ipaddress.IPv4Interface):
                    nets.append(iface.network)
    return nets


def networks_in_routes(text: str) -> List[ipaddress.IPv4Network]:
    """The destinations of ``ip -4 route show table all`` output, default routes left out."""
    nets = []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        dst = parts[1] if parts[0] in _ROUTE_TYPES and len(parts) > 1 else parts[0]
        if dst == "default" or (len(parts) > 1 and parts[0] == "default"):
            continue
        try:
            net = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if isinstance(net, ipaddress.IPv4Network) and net.prefixlen > 0:
            nets.append(net)
    return nets


def used_networks() -> List[ipaddress.IPv4Network]:
    """IPv4 networks in use in the root namespace: interface addresses and routes."""
    addrs = run("scan addresses", ["ip", "-o", "-4", "addr", "show"]).stdout
    routes = run("scan routes", ["ip", "-4", "route", "show", "table", "all"]).stdout
    return networks_in_addresses(addrs) + networks_in_routes(routes)
