"""Network namespaces, the bridge and veths of a lab, and their /etc/netns files.

Topology: a bridge in the root namespace holds the gateway address; each host is a
namespace whose ``eth0`` is the far end of a veth on that bridge.  IPv6 is not
configured (``addrgenmode none``: no link-local addresses), so partitions cannot be
bypassed over it.  Each host gets ``/etc/netns/<netns>/hosts`` and an empty
``resolv.conf``, which ``ip netns exec`` binds over /etc for everything run there.

Nothing here talks to the network except :func:`tcp_ready` (to an address the caller
made) and :func:`free_port` (binds a loopback socket and closes it).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import socket
import time
from typing import Dict, List, Sequence

from .commands import ip_batch
from .errors import LabError
from .hosts import LabHost

__all__ = [
    "ETC_NETNS",
    "NETNS_DIR",
    "RESOLV_CONF",
    "SYS_NET",
    "create",
    "free_port",
    "hosts_file",
    "leftovers",
    "link_exists",
    "list_links",
    "list_netns",
    "netns_exists",
    "netns_pids",
    "remove",
    "remove_etc_netns",
    "tcp_ready",
    "write_etc_netns",
]

NETNS_DIR = "/run/netns"
SYS_NET = "/sys/class/net"
ETC_NETNS = "/etc/netns"

#: No DNS inside: with no nameserver line glibc asks 127.0.0.1, which refuses at
#: once (instead of a 10 s timeout on the machine's unreachable resolver).
RESOLV_CONF = (
    "# remoteexec.lab: no DNS inside lab hosts; names are in /etc/hosts\n"
    "options timeout:1 attempts:1\n"
)


def _exists(directory: str, name: str) -> bool:
    return os.path.exists(os.path.join(directory, name))


def _entries(directory: str) -> List[str]:
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def netns_exists(name: str) -> bool:
    return _exists(NETNS_DIR, name)


def list_netns() -> List[str]:
    return _entries(NETNS_DIR)


def link_exists(name: str) -> bool:
    """Whether a link of this name exists in *our* (the root) network namespace."""
    return _exists(SYS_NET, name)


def list_links() -> List[str]:
    return _entries(SYS_NET)


def netns_pids(name: str, *, limit: int = 100000) -> List[int]:
    """Pids of processes whose network namespace is ``/run/netns/<name>``."""
    try:
        st = os.stat(os.path.join(NETNS_DIR, name))
    except OSError:
        return []
    key = (st.st_dev, st.st_ino)
    pids = []
    for entry in _entries("/proc")[:limit]:
        if not entry.isdigit():
            continue
        try:
            nst = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (nst.st_dev, nst.st_ino) == key:
            pids.append(int(entry))
    return pids


def hosts_file(lab: str, gateway: str, hosts: Sequence[LabHost], machine: str) -> str:
    """The hosts' /etc/hosts: every lab host by hostname and name (``h2``), the
    gateway as ``<lab>-gw`` and ``machine`` (this machine's hostname) on 127.0.1.1."""
    text = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    text += f"127.0.1.1\t{machine}\n"
    text += f"{gateway}\t{lab}-gw\n"
    return text + "".join(f"{h.address}\t{h.hostname} {h.name}\n" for h in hosts)


def write_etc_netns(netns: str, files: Dict[str, str], attempts: int = 5) -> None:
    """Write /etc/netns/<netns>/<file> (bind-mounted over /etc/<file> by ip netns exec).

    Retried a few times: another lab's teardown may remove an empty /etc/netns at the
    same moment (see :func:`remove_etc_netns`)."""
    d = os.path.join(ETC_NETNS, netns)
    for attempt in range(attempts):
        try:
            os.makedirs(d, mode=0o755, exist_ok=True)
            for fname, text in files.items():
                with open(os.path.join(d, fname), "w", encoding="ascii") as f:
                    f.write(text)
            return
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.01)


def remove_etc_netns(netns: str) -> None:
    shutil.rmtree(os.path.join(ETC_NETNS, netns), ignore_errors=True)
    with contextlib.suppress(OSError):  # only if empty: leave others' entries alone
        os.rmdir(ETC_NETNS)


def create(lab: str, subnet: str, gateway: str, bridge: str, hosts: Sequence[LabHost]) -> None:
    """Make the namespaces, the bridge with ``gateway`` on it and a veth a host, then
    configure each host (lo, eth0, default route) and write its /etc/netns files."""
    prefix = ipaddress.IPv4Network(subnet).prefixlen
    cmds = [f"netns add {h.netns}" for h in hosts]
    cmds += [
        f"link add {bridge} type bridge",
        f"link set {bridge} addrgenmode none",
        f"addr add {gateway}/{prefix} dev {bridge}",
        f"link set {bridge} up",
    ]
    for h in hosts:
        cmds.append(f"link add {h.veth} type veth peer name eth0 netns {h.netns}")
        cmds.append(f"link set {h.veth} addrgenmode none master {bridge} up")
    ip_batch("create namespaces and bridge", cmds)
    for h in hosts:
        ip_batch(
            f"configure {h.name} network",
            [
                "link set lo up",
                "link set eth0 addrgenmode none",
                f"addr add {h.address}/{prefix} dev eth0",
                "link set eth0 up",
                f"route add default via {gateway}",
            ],
            netns=h.netns,
        )
    etc_hosts = hosts_file(lab, gateway, hosts, socket.gethostname())
    for h in hosts:
        write_etc_netns(h.netns, {"hosts": etc_hosts, "resolv.conf": RESOLV_CONF})


def remove(hosts: Sequence[LabHost], bridge: str) -> None:
    """Delete the hosts' veths and namespaces, the bridge and the /etc/netns files;
    missing parts are fine.  Deleting the root end of a veth removes both ends; a
    namespace's own teardown in the kernel is asynchronous."""
    cmds = [f"link del {h.veth}" for h in hosts if link_exists(h.veth)]
    cmds += [f"netns del {h.netns}" for h in hosts if netns_exists(h.netns)]
    if bridge and link_exists(bridge):
        cmds.append(f"link del {bridge}")
    if cmds:
        with contextlib.suppress(LabError):
            ip_batch("down: links and namespaces", cmds, force=True)
    for h in hosts:
        remove_etc_netns(h.netns)


def leftovers(hosts: Sequence[LabHost], bridge: str) -> List[str]:
    """What of the hosts' namespaces and links, and of the bridge, still exists."""
    problems = []
    for h in hosts:
        if netns_exists(h.netns):
            problems.append(f"netns {h.netns} still exists")
        if link_exists(h.veth):
            problems.append(f"link {h.veth} still exists")
    if bridge and link_exists(bridge):
        problems.append(f"bridge {bridge} still exists")
    return problems


def tcp_ready(address: str, port: int, *, timeout: float = 0.25) -> bool:
    """Whether something accepts TCP connections on ``address:port`` right now."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port on ``address`` (of the root namespace: the master's machine) that
    is free right now.  For services run locally next to lab hosts; on a lab host
    every port is free, since each host is a network namespace of its own."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port
